-- expect: error stack overflow
-- __lt that compares with <.
local mt = {}
mt.__lt = function(a, b) return a < b end
local x, y = setmetatable({}, mt), setmetatable({}, mt)
function evaluate() return x < y end
