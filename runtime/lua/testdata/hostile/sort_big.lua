-- expect: error a sequence holds at most 262143 elements
-- calls: 20
-- table.sort of a growing array, without a Lua comparator to check the
-- deadline, until table.insert refuses to grow it past the array part.
t = {}
function evaluate()
  for i = 1, 1e5 do table.insert(t, (#t * 7919) % 1000003) end
  table.sort(t)
end
