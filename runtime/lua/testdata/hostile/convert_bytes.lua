-- expect: error sink: value exceeds
-- Few nodes, many bytes: sixteen references to one megabyte.
function evaluate()
  local mb, t = string.rep("x", 2^20), {}
  for i = 1, 16 do t[i] = mb end
  sink(t)
end
