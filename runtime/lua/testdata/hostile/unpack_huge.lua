-- expect: error too many results
-- Ten million results from one call to unpack.
function evaluate() return unpack({}, 1, 1e7) end
