-- expect: error
-- Two tables whose __index is each other.
local a, b = {}, {}
setmetatable(a, {__index = b})
setmetatable(b, {__index = a})
function evaluate() return a.missing end
