-- expect: error exceeds the limit
-- An empty string with a separator, repeated a billion times.
function evaluate() return #string.rep("", 1e9, "x") end
