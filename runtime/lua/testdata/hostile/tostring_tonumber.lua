-- expect: ok
-- Conversions at their edges: none may panic or hang.
function evaluate()
  local big = string.rep("9", 2^20 - 10)
  local cases = {big, "0x" .. big, "1e999999", "-0", "0x", "", " ", "nan", "inf", "1e", "0x1p4", "\0", "1" .. big}
  for _, s in ipairs(cases) do tonumber(s) end
  for base = 2, 36 do tonumber(big, base) end
  assert(pcall(tonumber, "1", 1) ~= nil and pcall(tonumber, "1", 99) ~= nil)
  for _, n in ipairs({1/0, -1/0, 0/0, 2^63, -2^63, 1e308, 5e-324, -0.0}) do
    tostring(n)
    string.format("%d %x %c %e %g %5.2f %q", n, n, 65, n, n, n, tostring(n))
  end
  tostring(setmetatable({}, {__tostring = function() return string.rep("y", 1000) end}))
  assert(not pcall(tostring))
end
