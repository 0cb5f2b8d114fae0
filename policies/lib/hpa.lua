-- hpa: the Kubernetes Horizontal Pod Autoscaler's replica calculation, so
-- that a policy can reproduce HPA and then improve on it:
--
--   local hpa = require("hpa")
--   function evaluate(m)
--     local s = m.services.api
--     scale("api", hpa.desired(s.replicas.desired, s.rps / math.max(s.replicas.desired, 1), 80), "hpa")
--   end
--
-- desired(current, metric, target, opts) where current is the replica count
-- already asked for (m.services.X.replicas.desired, as HPA uses the
-- Deployment's spec.replicas), metric is the per-replica
-- figure and target its goal. opts (all optional; defaults are HPA's):
--   key          name of this calculation's history in state ("hpa")
--   tolerance    no change while |metric/target - 1| <= tolerance (0.1)
--   up_window    scale-up stabilization, seconds (0)
--   down_window  scale-down stabilization, seconds (300)
--   up           change limits per period: {pods = 4, percent = 100, period = 15}
--   down         {percent = 100, period = 15}
--   min, max     replica bounds (1, none)
local ring = require("ring")
local hpa = {}

local DEFAULT_UP = {pods = 4, percent = 100, period = 15}
local DEFAULT_DOWN = {percent = 100, period = 15}

-- A key's history: per stabilization window the recommendations that can
-- still be its extreme, and the changes made within the change periods.
-- Rings, so that a tick costs the same however long the windows are.
local function history(key)
  state._hpa = state._hpa or {}
  local h = state._hpa[key]
  if h == nil then
    h = {low = ring.new(), high = ring.new(), events = ring.new()}
    state._hpa[key] = h
  end
  return h
end

-- extreme adds recommendation r at time t to q and returns the lowest
-- (sign 1) or highest (sign -1) recommendation of the last window seconds.
-- q drops every entry that r beats, since it can never be the extreme
-- again; so q stays sorted and its oldest entry is the answer. This runs
-- for every service on every tick, hence the direct use of q's fields.
local function extreme(q, t, r, window, sign)
  while q.n > 0 and sign * q.v[(q.head + q.n - 2) % q.cap + 1] >= sign * r do q.n = q.n - 1 end
  ring.push(q, t, r)
  while q.t[q.head] < t - window do ring.shift(q) end
  return q.v[q.head]
end

-- reach is the furthest count a change policy permits from start, moving
-- in direction sign; like HPA's default selectPolicy Max, the rule that
-- allows the larger change wins.
local function reach(start, p, sign)
  local best = start
  if p.pods then best = start + sign * p.pods end
  if p.percent then
    local v
    if sign > 0 then v = math.floor(start * (1 + p.percent / 100)) else v = math.ceil(start * (1 - p.percent / 100)) end
    if p.pods == nil or sign * v > sign * best then best = v end
  end
  return best
end

-- limit caps a change by what the policy allows per period, counting the
-- changes already made within that period.
local function limit(h, t, current, desired, up, down)
  if desired == current then return desired end
  local sign, p = 1, up
  if desired < current then sign, p = -1, down end
  local moved = 0
  for i = 1, h.events.n do
    local et, d = ring.get(h.events, i)
    if et >= t - p.period and d * sign > 0 then moved = moved + d end
  end
  local bound = reach(current - moved, p, sign)
  if sign > 0 then return math.max(current, math.min(desired, bound)) end
  return math.min(current, math.max(desired, bound))
end

function hpa.desired(current, metric, target, opts)
  opts = opts or {}
  local tolerance = opts.tolerance or 0.1
  local up = opts.up or DEFAULT_UP
  local down = opts.down or DEFAULT_DOWN
  local lo, hi = opts.min or 1, opts.max or math.huge
  local t = now()
  local h = history(opts.key or "hpa")

  local raw = current
  if current == 0 then
    raw = lo
  elseif target > 0 then
    local ratio = metric / target
    if math.abs(ratio - 1) > tolerance then raw = math.ceil(current * ratio) end
  end
  raw = math.min(math.max(raw, lo), hi)

  -- Stabilization: scale up only to the lowest, and down only to the
  -- highest, recommendation seen within the respective window.
  local upTo, downTo = raw, extreme(h.high, t, raw, opts.down_window or 300, -1)
  if (opts.up_window or 0) > 0 then upTo = extreme(h.low, t, raw, opts.up_window, 1) end
  local stable = current
  if upTo > current then stable = upTo elseif downTo < current then stable = downTo end

  local out = limit(h, t, current, stable, up, down)
  local keep = math.max(up.period, down.period)
  local ev = h.events
  while ev.n > 0 and ev.t[ev.head] < t - keep do ring.shift(ev) end
  if out ~= current then ring.push(ev, t, out - current) end
  return out
end

return hpa
