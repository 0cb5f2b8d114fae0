-- ewma: exponentially weighted moving averages kept in `state`, decaying
-- with time (not with the number of samples).
--
--   local ewma = require("ewma")
--   local smooth = ewma.update("api.p99", s.p99_ms, 30)  -- 30 s time constant
local ewma = {}

local function store()
  state._ewma = state._ewma or {}
  return state._ewma
end

-- update folds value into the average named key and returns the average.
-- tau is how many seconds it takes an old value to fade to 1/e (default 30).
function ewma.update(key, value, tau)
  tau = tau or 30
  local s = store()
  local t = now()
  local e = s[key]
  if e == nil then
    s[key] = {v = value, t = t}
    return value
  end
  local dt = t - e.t
  local keep = 0.5
  if dt > 0 then keep = math.exp(-dt / tau) end
  e.v = e.v * keep + value * (1 - keep)
  e.t = t
  return e.v
end

-- get returns the current average for key, or nil before the first update.
function ewma.get(key)
  local e = store()[key]
  return e and e.v
end

return ewma
