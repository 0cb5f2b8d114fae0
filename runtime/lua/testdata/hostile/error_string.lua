-- expect: error error_string.lua:3: eeee
-- A megabyte error message: the error reported is short.
function evaluate() error(string.rep("e", 2^20)) end
