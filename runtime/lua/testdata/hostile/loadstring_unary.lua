-- expect: error nested deeper
-- Ten thousand unary operators.
function evaluate()
  local f, err = loadstring("return " .. string.rep("not - ", 5000) .. "1")
  error(err)
end
