-- expect: error nesting deeper
-- Twenty thousand nested parentheses in a small chunk.
function evaluate()
  local f, err = loadstring("return " .. string.rep("(", 2e4) .. "1" .. string.rep(")", 2e4))
  error(err)
end
