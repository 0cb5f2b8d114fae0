-- Scheduled scaling: a floor of replicas by hour of day (UTC), ahead of the
-- known daily peak, with a load-based ceiling on top so surprises are
-- still covered.
local cooldown = require("cooldown")

-- replicas wanted from each hour (0-23); hours not listed keep the last.
local SCHEDULE = {[0] = 2, [7] = 4, [9] = 8, [12] = 10, [14] = 8, [18] = 6, [22] = 3}
local PER_REPLICA = 100

local function floor_at(hour)
  local n = SCHEDULE[0]
  for h = 0, hour do
    if SCHEDULE[h] then n = SCHEDULE[h] end
  end
  return n
end

function evaluate(m)
  local hour = os.date("!*t", m.time).hour
  for name, s in pairs(m.services) do
    local n = math.max(floor_at(hour), math.ceil(s.rps / PER_REPLICA))
    local cur = s.replicas.desired
    -- Up at once; down no more than once every five minutes.
    if n > cur or (n < cur and cooldown(name .. ".down", 300)) then
      scale(name, n, string.format("hour %d floor %d, %.0f rps", hour, floor_at(hour), s.rps))
    end
  end
end
