-- expect: alloc
-- calls: 10
-- Compiling cannot be interrupted, and gopher-lua's compiler reserves
-- 17 KB for every function: fifteen thousand empty ones (255 KB of
-- source) took 160 ms and allocated 300 MiB in one loadstring. A chunk
-- may have at most a thousand functions, in at most 64 KiB, and the 17 MiB
-- that a thousand hold count toward the state.
fns = {}
function evaluate()
  local f, err = loadstring(string.rep("function f() end ", 15000))
  assert(not f and err:find("source of 255000 bytes exceeds the limit of 65536"), err)
  f, err = loadstring(string.rep("function f() end ", 1001))
  assert(not f and err:find("more than 1000 functions"), err)
  fns[#fns + 1] = assert(loadstring(string.rep("function f() end ", 1000)))
end
