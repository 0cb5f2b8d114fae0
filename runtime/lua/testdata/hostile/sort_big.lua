-- expect: timeout
-- calls: 20
-- table.sort of the largest array part (262143 numbers), shuffled and
-- sorted again and again, without a Lua comparator to check the deadline.
t = {}
function evaluate()
  while #t < 2^18 - 1 do table.insert(t, 0) end
  while true do
    for i = 1, #t do t[i] = (i * 7919) % 1000003 end
    table.sort(t)
  end
end
