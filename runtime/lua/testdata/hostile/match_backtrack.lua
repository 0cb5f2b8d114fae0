-- expect: timeout
-- Exponential backtracking in string.match, with captures.
function evaluate() return string.match(string.rep("a", 60), "(.-)(.-)(.-)(.-)(.-)b") end
