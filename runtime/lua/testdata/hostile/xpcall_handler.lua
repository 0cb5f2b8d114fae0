-- expect: timeout
-- An error handler that never returns.
function evaluate() return xpcall(function() error("x") end, function() while true do end end) end
