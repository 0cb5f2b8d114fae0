-- expect: timeout
-- Exponential backtracking in string.find.
function evaluate() return string.find(string.rep("a", 60), ".-.-.-.-.-b") end
