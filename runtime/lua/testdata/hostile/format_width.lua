-- expect: error invalid format
-- A width of a hundred million.
function evaluate() return #string.format("%099999999d", 1) end
