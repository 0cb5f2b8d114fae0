-- expect: error nested deeper
-- A field chain twenty thousand long: a tree the compiler would recurse down.
function evaluate()
  local f, err = loadstring("return x" .. string.rep(".y", 2e4))
  error(err)
end
