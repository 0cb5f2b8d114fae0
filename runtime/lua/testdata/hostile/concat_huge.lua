-- expect: error exceeds the limit
-- table.concat of 1024 references to one megabyte: a gigabyte in one step.
function evaluate()
  local mb, t = string.rep("x", 2^20), {}
  for i = 1, 1024 do t[i] = mb end
  return #table.concat(t)
end
