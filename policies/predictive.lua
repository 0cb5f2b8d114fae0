-- Short-horizon prediction: fit the trend of requests/s over the last three
-- minutes and provision for where it will be one start-up time from now, so
-- new replicas are ready when the load arrives rather than after.
local window = require("window")
local cooldown = require("cooldown")

local PER_REPLICA = 80
local HISTORY = 180 -- seconds of samples for the trend
local LEAD = 30     -- seconds ahead: how long a new replica takes to help

function evaluate(m)
  for name, s in pairs(m.services) do
    local key = name .. ".rps"
    window.push(key, s.rps, HISTORY)
    local trend = window.slope(key)
    local forecast = math.max(s.rps, s.rps + trend * LEAD)
    local n = math.max(1, math.ceil(forecast / PER_REPLICA))
    local cur = s.replicas.desired
    if n > cur or (n < cur and cooldown(name .. ".down", 60)) then
      scale(name, n, string.format("%.0f rps, trend %+.1f/s, forecast %.0f", s.rps, trend, forecast))
    end
  end
end
