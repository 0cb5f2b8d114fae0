-- expect: error stack overflow
-- __call that calls itself.
local t = setmetatable({}, {__call = function(self) return 1 + self() end})
function evaluate() return t() end
