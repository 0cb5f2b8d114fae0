-- expect: error exceeds the limit
-- Three thousand of the widest, most precise directives in one format.
function evaluate()
  local args = {}
  for i = 1, 3000 do args[i] = 1e308 end
  return #string.format(string.rep("%99.99f", 3000), unpack(args, 1, 3000))
end
