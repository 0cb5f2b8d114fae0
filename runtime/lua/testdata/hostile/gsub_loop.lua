-- expect: limit
-- Substitutions without end, with a Lua replacement function: the deadline or the budget stops them.
function evaluate()
  local s = string.rep("ab", 5000)
  while true do s = string.gsub(s, "(a)(b)", function(a, b) return b .. a end) end
end
