-- expect: error stack overflow
-- Recursion through table.sort's comparator.
local t = {3, 2, 1}
local function less(a, b) table.sort(t, less) return a < b end
function evaluate() table.sort(t, less) end
