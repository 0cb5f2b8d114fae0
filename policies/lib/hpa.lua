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
local hpa = {}

local function history(key)
  state._hpa = state._hpa or {}
  local h = state._hpa[key]
  if h == nil then
    h = {recs = {}, events = {}}
    state._hpa[key] = h
  end
  return h
end

-- prune keeps entries of list newer than seconds.
local function prune(list, t, seconds)
  local kept = {}
  for _, e in ipairs(list) do
    if e.t >= t - seconds then kept[#kept + 1] = e end
  end
  return kept
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
  for _, e in ipairs(h.events) do
    if e.t >= t - p.period and e.d * sign > 0 then moved = moved + e.d end
  end
  local bound = reach(current - moved, p, sign)
  if sign > 0 then return math.max(current, math.min(desired, bound)) end
  return math.min(current, math.max(desired, bound))
end

function hpa.desired(current, metric, target, opts)
  opts = opts or {}
  local tolerance = opts.tolerance or 0.1
  local up = opts.up or {pods = 4, percent = 100, period = 15}
  local down = opts.down or {percent = 100, period = 15}
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
  h.recs[#h.recs + 1] = {t = t, r = raw}
  h.recs = prune(h.recs, t, math.max(opts.up_window or 0, opts.down_window or 300))
  local upTo, downTo = raw, raw
  for _, e in ipairs(h.recs) do
    if e.t >= t - (opts.up_window or 0) then upTo = math.min(upTo, e.r) end
    if e.t >= t - (opts.down_window or 300) then downTo = math.max(downTo, e.r) end
  end
  local stable = current
  if upTo > current then stable = upTo elseif downTo < current then stable = downTo end

  local out = limit(h, t, current, stable, up, down)
  h.events = prune(h.events, t, math.max(up.period, down.period))
  if out ~= current then h.events[#h.events + 1] = {t = t, d = out - current} end
  return out
end

return hpa
