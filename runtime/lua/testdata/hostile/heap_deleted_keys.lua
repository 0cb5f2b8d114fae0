-- expect: alloc
-- calls: 5000
-- Keys set and deleted: gopher-lua keeps every key a table has ever had.
t = {}
n = 0
function evaluate()
  for i = 1, 2000 do n = n + 1; t[n + 0.5] = true; t[n + 0.5] = nil end
end
