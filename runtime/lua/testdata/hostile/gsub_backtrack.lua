-- expect: timeout
-- Exponential backtracking in string.gsub.
function evaluate() return string.gsub(string.rep("a", 60), ".-.-.-.-.-b", "") end
