-- expect: error
-- Two tables whose __newindex is each other.
local a, b = {}, {}
setmetatable(a, {__newindex = b})
setmetatable(b, {__newindex = a})
function evaluate() a.x = 1 end
