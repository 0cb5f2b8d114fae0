-- expect: ok
-- A linear substitution over 50 000 characters finishes well within the deadline.
function evaluate()
  local s, n = string.gsub(string.rep("a", 50000), "a", "b")
  assert(n == 50000 and s == string.rep("b", 50000))
end
