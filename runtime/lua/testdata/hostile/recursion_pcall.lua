-- expect: error
-- Recursion through pcall, which catches each overflow and goes on.
function f() local ok, v = pcall(f) return 1 + (ok and v or 0) + f() end
function evaluate() return f() end
