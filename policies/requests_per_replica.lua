-- HPA in three lines: requests per replica against a target, with HPA's own
-- defaults (10% tolerance, 5-minute scale-down window, 15 s change limits).
-- Change the options to do better than HPA.
local hpa = require("hpa")

local PER_REPLICA = 80

function evaluate(m)
  for name, s in pairs(m.services) do
    local cur = math.max(s.replicas.desired, 1)
    local n = hpa.desired(cur, s.rps / cur, PER_REPLICA, {key = name})
    if n ~= s.replicas.desired then
      scale(name, n, string.format("%.0f rps per replica vs %d", s.rps / cur, PER_REPLICA))
    end
  end
end
