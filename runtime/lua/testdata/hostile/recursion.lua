-- expect: error stack overflow
-- Unbounded recursion.
function evaluate() local function r(n) return 1 + r(n + 1) end return r(1) end
