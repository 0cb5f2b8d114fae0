-- expect: error pattern too complex
-- A pattern of a thousand optional items, each one level of backtracking.
function evaluate() return string.find(string.rep("a", 1000), string.rep("a?", 1000)) end
