-- expect: ok
-- Coroutines are not opened: a thread would need limits of its own.
function evaluate() assert(coroutine == nil) end
