-- expect: error nesting deeper
-- Eight thousand nested blocks.
function evaluate()
  local f, err = loadstring(string.rep("do ", 8000) .. string.rep("end ", 8000))
  error(err)
end
