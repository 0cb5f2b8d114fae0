-- expect: error result of evaluate: value exceeds
-- A table whose array slots are all nil, returned twenty thousand times:
-- converting it to Go walks every slot each time it appears.
function evaluate()
  local t, list = {}, {}
  for i = 1, 2^16 do t[i] = true end
  for i = 1, 2^16 do t[i] = nil end
  for i = 1, 20000 do list[i] = t end
  return list
end
