-- expect: error exceeds the limit
-- An infinite count.
function evaluate() return #string.rep("x", 1/0) end
