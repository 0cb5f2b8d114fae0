-- expect: ok
-- Assignments far past the end of an array: gopher-lua fills the gap with
-- nils in that one instruction (a gigabyte for its highest array index),
-- so the sandbox keeps the array part under 2^18 and these go to the hash.
function evaluate()
  local t, u, w = {}, {}, {}
  t[2^25] = 1
  table.insert(u, 2^26 - 1, 2)
  rawset(u, 2^24, 3)
  w[2^18 - 1] = 4 -- the largest gap: 4 MiB of nils
  assert(t[2^25] == 1 and u[2^26 - 1] == 2 and u[2^24] == 3 and #w == 2^18 - 1)
end
