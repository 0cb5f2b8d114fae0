-- Keep each service's p99 latency near a target: scale in proportion to
-- how far p99 is from it, add capacity at once, remove it only after a
-- minute of calm, one replica at a time.
--
-- Scale-up is capped per step, as HPA caps it per period: near saturation
-- latency grows much faster than load, so p99/target overstates what is
-- missing, and the reading lags the replicas still starting. Doubling on
-- it took the flash-sale trace from 3 to 50 replicas where 36 do.
local hpa = require("hpa")

local TARGET_MS = 200
local UP = {pods = 4, percent = 75, period = 5} -- at most x1.75 (or +4) per 5 s
local DOWN = {pods = 1, period = 10}

function evaluate(m)
  for name, s in pairs(m.services) do
    local cur = math.max(s.replicas.desired, 1)
    local n = hpa.desired(cur, s.p99_ms, TARGET_MS,
      {key = name, tolerance = 0.15, down_window = 60, up = UP, down = DOWN})
    if n ~= s.replicas.desired then
      scale(name, n, string.format("p99 %.0fms vs target %dms", s.p99_ms, TARGET_MS))
    end
  end
end
