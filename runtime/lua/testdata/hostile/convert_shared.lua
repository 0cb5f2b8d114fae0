-- expect: error convert_shared.lua:7: sink: value exceeds
-- A 23-level tree whose two children are one shared table: 2^23 leaves to Go.
function evaluate()
  local t = {leaf = "x"}
  for i = 1, 23 do t = {l = t, r = t} end
  local ok = true
  sink(t)
end
