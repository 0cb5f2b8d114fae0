-- expect: error stack overflow
-- __concat that concatenates again.
local mt = {}
mt.__concat = function(a, b) return a .. b end
local x = setmetatable({}, mt)
function evaluate() return x .. "y" end
