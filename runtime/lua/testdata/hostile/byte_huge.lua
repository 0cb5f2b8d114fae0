-- expect: error too many results
-- A million results from one call to string.byte.
function evaluate() return string.byte(string.rep("x", 1e6), 1, -1) end
