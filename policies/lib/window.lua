-- window: moving time windows of samples kept in `state`.
--
--   local window = require("window")
--   window.push("api.rps", s.rps, 180)         -- keep the last 3 minutes
--   local trend = window.slope("api.rps")      -- change per second
local window = {}

local function samples(key)
  state._window = state._window or {}
  local w = state._window[key]
  if w == nil then
    w = {}
    state._window[key] = w
  end
  return w
end

-- push adds value at the current time and drops samples older than seconds.
function window.push(key, value, seconds)
  local w = samples(key)
  local t = now()
  w[#w + 1] = {t = t, v = value}
  local first = 1
  while first <= #w and w[first].t < t - seconds do first = first + 1 end
  if first > 1 then
    local kept = {}
    for i = first, #w do kept[#kept + 1] = w[i] end
    state._window[key] = kept
  end
end

function window.count(key) return #samples(key) end

-- reduce folds f over the values, starting from init.
local function reduce(key, init, f)
  local acc = init
  for _, s in ipairs(samples(key)) do acc = f(acc, s.v) end
  return acc
end

function window.max(key) return reduce(key, nil, function(a, v) return (a == nil or v > a) and v or a end) end
function window.min(key) return reduce(key, nil, function(a, v) return (a == nil or v < a) and v or a end) end

function window.avg(key)
  local n = window.count(key)
  if n == 0 then return nil end
  return reduce(key, 0, function(a, v) return a + v end) / n
end

-- slope is the least-squares trend of the window in units per second, or 0
-- with fewer than two samples.
function window.slope(key)
  local w = samples(key)
  local n = #w
  if n < 2 then return 0 end
  local st, sv, stt, stv = 0, 0, 0, 0
  local t0 = w[1].t
  for _, s in ipairs(w) do
    local t = s.t - t0
    st, sv, stt, stv = st + t, sv + s.v, stt + t * t, stv + t * s.v
  end
  local den = n * stt - st * st
  if den == 0 then return 0 end
  return (n * stv - st * sv) / den
end

return window
