-- Shed a route's traffic when a service fails: raise the shed share
-- while the smoothed error rate is high, lower it slowly once it is low,
-- and eject single backends that fail most of their requests. Routes are
-- assumed to be named after their service.
local ewma = require("ewma")
local cooldown = require("cooldown")

local HIGH, LOW = 0.05, 0.01
local STEP, MAX_SHED = 0.1, 0.6

function evaluate(m)
  state.shed = state.shed or {}
  for name, s in pairs(m.services) do
    local err = ewma.update(name .. ".errors", s.error_rate, 5)
    local cur = state.shed[name] or 0
    local nxt = cur
    if err > HIGH then
      nxt = math.min(MAX_SHED, cur + STEP)
    elseif err < LOW and cur > 0 and cooldown(name .. ".relax", 10) then
      nxt = math.max(0, cur - STEP)
    end
    if nxt ~= cur then
      state.shed[name] = nxt
      shed(name, nxt, string.format("error rate %.1f%%", err * 100))
    end
    for _, b in ipairs(s.backends) do
      if b.healthy and b.error_rate > 0.5 then
        eject(name, b.address, 30, string.format("backend error rate %.0f%%", b.error_rate * 100))
      end
    end
  end
end
