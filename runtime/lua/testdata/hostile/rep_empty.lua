-- expect: ok
-- Repeating the empty string a billion times costs nothing.
function evaluate()
  for i = 1, 100 do assert(string.rep("", 1e9) == "") end
  assert(string.rep("x", 0/0) == "" and string.rep("x", -1) == "")
end
