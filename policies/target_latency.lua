-- Keep each service's p99 latency near a target: scale in proportion to
-- how far p99 is from it, add capacity at once, remove it only after a
-- minute of calm, one replica at a time.
local hpa = require("hpa")

local TARGET_MS = 200

function evaluate(m)
  for name, s in pairs(m.services) do
    local cur = math.max(s.replicas.desired, 1)
    local n = hpa.desired(cur, s.p99_ms, TARGET_MS, {
      key = name, tolerance = 0.15, down_window = 60,
      up = {pods = 4, percent = 100, period = 5},
      down = {pods = 1, period = 10},
    })
    if n ~= s.replicas.desired then
      scale(name, n, string.format("p99 %.0fms vs target %dms", s.p99_ms, TARGET_MS))
    end
  end
end
