-- expect: error stack overflow
-- __eq that compares with ==.
local mt = {}
mt.__eq = function(a, b) return a == b end
local x, y = setmetatable({}, mt), setmetatable({}, mt)
function evaluate() return x == y end
