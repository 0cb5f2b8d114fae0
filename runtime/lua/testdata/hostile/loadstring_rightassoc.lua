-- expect: error nested deeper
-- The longest right-associative chain that fits the source limit: the
-- parser's stack grows with it, the compiler would recurse down it.
function evaluate()
  local f, err = loadstring("return " .. string.rep("a..", 21000) .. "1")
  error(err)
end
