-- expect: error exceeds the limit
-- Each substitution doubles a megabyte string.
function evaluate() return (string.gsub(string.rep("a", 1e6), "a", "aa")) end
