-- expect: error exceeds the limit
-- One `..` of eight operands per step multiplies a string by eight.
function evaluate()
  local s = string.rep("x", 2^20)
  while true do s = s .. s .. s .. s .. s .. s .. s .. s end
end
