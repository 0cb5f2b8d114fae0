-- expect: error convert_result.lua:3: result of evaluate: value exceeds
-- The same shared tree returned to Go.
function evaluate()
  local t = {leaf = "x"}
  for i = 1, 23 do t = {l = t, r = t} end
  return t
end
