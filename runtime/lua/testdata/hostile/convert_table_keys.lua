-- expect: error sink: value exceeds
-- A table of a thousand keys that are tables, which Go cannot name, passed
-- to Go in twenty thousand places: each place was free, and converting it
-- walked the thousand keys and made a map sized for them.
function evaluate()
  local t, list = {}, {}
  for i = 1, 1000 do t[{}] = true end
  for i = 1, 20000 do list[i] = t end
  sink(list)
end
