-- window: moving time windows of samples kept in `state`.
--
--   local window = require("window")
--   window.push("api.rps", s.rps, 180)         -- keep the last 3 minutes
--   local trend = window.slope("api.rps")      -- change per second
--
-- push (on average), count, avg and slope cost the same however many
-- samples the window holds; max and min look at every sample.
local ring = require("ring")
local window = {}

-- A window is a ring of samples plus the sums avg and slope need. The
-- times in the sums count from t0, the oldest sample when they were last
-- recomputed, to keep them small.
local function samples(key)
  state._window = state._window or {}
  local w = state._window[key]
  if w == nil then
    w = {r = ring.new(), t0 = now(), st = 0, sv = 0, stt = 0, stv = 0, since = 0}
    state._window[key] = w
  end
  return w
end

-- rebase recomputes the sums from the oldest sample, so that rounding
-- from adding and removing does not build up and a value that was not
-- finite stops spoiling them once it has left the window.
local function rebase(w)
  local r = w.r
  local t0 = ring.first(r) or w.t0
  local st, sv, stt, stv = 0, 0, 0, 0
  for i = 1, r.n do
    local t, v = ring.get(r, i)
    t = t - t0
    st, sv, stt, stv = st + t, sv + v, stt + t * t, stv + t * v
  end
  w.t0, w.st, w.sv, w.stt, w.stv, w.since = t0, st, sv, stt, stv, 0
end

-- push adds value at the current time and drops samples older than seconds.
function window.push(key, value, seconds)
  local w = samples(key)
  local r = w.r
  local t = now()
  ring.push(r, t, value)
  local dt = t - w.t0
  local st, sv, stt, stv = w.st + dt, w.sv + value, w.stt + dt * dt, w.stv + dt * value
  while r.t[r.head] < t - seconds do
    local ot, ov = ring.shift(r)
    dt = ot - w.t0
    st, sv, stt, stv = st - dt, sv - ov, stt - dt * dt, stv - dt * ov
  end
  w.st, w.sv, w.stt, w.stv = st, sv, stt, stv
  -- After as many pushes as there are samples, so it costs O(1) a push.
  w.since = w.since + 1
  if w.since >= r.n then rebase(w) end
end

function window.count(key) return samples(key).r.n end

-- reduce folds f over the values, starting from init.
local function reduce(key, init, f)
  local r = samples(key).r
  local acc = init
  for i = 1, r.n do
    local _, v = ring.get(r, i)
    acc = f(acc, v)
  end
  return acc
end

function window.max(key) return reduce(key, nil, function(a, v) return (a == nil or v > a) and v or a end) end
function window.min(key) return reduce(key, nil, function(a, v) return (a == nil or v < a) and v or a end) end

function window.avg(key)
  local w = samples(key)
  if w.r.n == 0 then return nil end
  return w.sv / w.r.n
end

-- slope is the least-squares trend of the window in units per second, or 0
-- with fewer than two samples or all at one time.
function window.slope(key)
  local w = samples(key)
  local n = w.r.n
  if n < 2 then return 0 end
  local den = n * w.stt - w.st * w.st
  -- Relative to the terms, since rounding leaves a speck where it is 0.
  if den <= 1e-9 * n * w.stt then return 0 end
  return (n * w.stv - w.st * w.sv) / den
end

return window
