-- expect: error
-- An error object that is a huge table.
function evaluate()
  local t = {}
  for i = 1, 1e5 do t[i] = string.rep("e", 100) end
  error(t)
end
