-- expect: ok
-- calls: 5
-- Finalizers that would never end; the host must not run them.
function evaluate()
  for i = 1, 1000 do
    setmetatable({}, {__gc = function() while true do end end})
    local p = newproxy(true)
    getmetatable(p).__gc = function() while true do end end
  end
end
