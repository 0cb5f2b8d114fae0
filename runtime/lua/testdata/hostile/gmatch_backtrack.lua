-- expect: timeout
-- Exponential backtracking in string.gmatch.
function evaluate() for m in string.gmatch(string.rep("a", 60), ".*.*.*.*.*b") do end end
