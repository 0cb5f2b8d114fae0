-- Scale on work waiting: keep queued plus in-flight requests per replica
-- near a target, the signal that moves first when a backend saturates.
local hpa = require("hpa")

local PER_REPLICA = 20
local UP = {percent = 200, period = 5}

function evaluate(m)
  for name, s in pairs(m.services) do
    local cur = math.max(s.replicas.desired, 1)
    local depth = (s.queued + s.in_flight) / cur
    local n = hpa.desired(cur, depth, PER_REPLICA, {key = name, down_window = 30, up = UP})
    if n ~= s.replicas.desired then
      scale(name, n, string.format("%.1f waiting per replica vs %d", depth, PER_REPLICA))
    end
  end
end
