-- expect: alloc
-- calls: 200
-- Each call is within budget, but keeps 8 MiB in a global.
kept = {}
function evaluate()
  for i = 1, 8 do kept[#kept + 1] = string.rep(string.char(65 + #kept % 26), 2^20) end
end
