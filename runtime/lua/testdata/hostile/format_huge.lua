-- expect: error exceeds the limit
-- string.format joining four megabyte strings.
function evaluate()
  local mb = string.rep("x", 2^20)
  return #string.format("%s%s%s%s", mb, mb, mb, mb)
end
