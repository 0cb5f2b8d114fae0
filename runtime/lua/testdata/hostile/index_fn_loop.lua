-- expect: error stack overflow
-- __index that indexes itself.
local t = setmetatable({}, {__index = function(t, k) return t[k] end})
function evaluate() return t.x end
