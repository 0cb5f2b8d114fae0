-- expect: error source exceeds the limit
-- Three million nested parentheses, read by load in pieces.
function evaluate()
  local n, piece = 0, string.rep("(", 1e6)
  local f, err = load(function() n = n + 1; if n <= 3 then return piece end end)
  error(err)
end
