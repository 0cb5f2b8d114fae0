-- expect: error stack overflow
-- Recursion through gsub's replacement function.
local function f(s) return (string.gsub(s .. "x", ".", f)) end
function evaluate() return f("a") end
