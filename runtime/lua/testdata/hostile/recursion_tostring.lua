-- expect: error stack overflow
-- __tostring that calls tostring on itself.
local o = setmetatable({}, {__tostring = function(self) return tostring(self) end})
function evaluate() return tostring(o) end
