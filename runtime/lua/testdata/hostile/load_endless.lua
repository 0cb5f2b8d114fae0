-- expect: error source exceeds the limit
-- A reader that never ends.
function evaluate()
  local f, err = load(function() return "x = 1 " end)
  error(err)
end
