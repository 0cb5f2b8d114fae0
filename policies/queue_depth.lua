-- Keep each service's utilisation near a target with headroom, for the
-- load a minute from now, and move only when it leaves a band around it.
--
-- Capacity is learned, not configured. Behind a queue, the inverse of the
-- mean latency falls in a straight line as the work per replica rises
-- (1/latency = (1 - utilisation) / service time), and the line reaches
-- zero at a replica's capacity. So the policy fits that line to the
-- (requests per replica, 1/latency) points it sees; while requests wait in
-- a queue, what the replicas served is their capacity outright.
--
-- A backend whose latency does not grow with load (one that only waits on
-- something else) shows a flat line; for it, and until the line is known,
-- the work in progress counts instead: CONCURRENCY requests queued or in
-- flight per replica is full load. While the line is not known, that only
-- scales up: a count the policy has not yet learnt is not one to remove
-- replicas on.
--
-- Demand is the rate now plus its rising trend over the time new replicas
-- take to help, plus the backlog to drain. The count moves only when the
-- forecast utilisation leaves [LOW, HIGH], and then to TARGET, so a slow
-- change of load makes a few larger decisions, not one per tick; the
-- engine's stabiliser then holds scale-downs for its window.
local window = require("window")

local TARGET = 0.6       -- utilisation aimed at
local LOW, HIGH = 0.4, 0.75
local LEAD = 60          -- seconds ahead the forecast looks
local TREND = 300        -- seconds of rates the trend is fitted over
local DRAIN = 10         -- seconds to clear a backlog in
local CONCURRENCY = 20   -- requests in progress per replica at full load
local MEMORY = 120       -- seconds over which a point's weight in the fit falls by e,
local KEEP = 0.9         -- but it keeps at least this much per evaluation

-- fit adds a point to a service's decaying least-squares sums and returns
-- the capacity per replica where the fitted line reaches zero, math.huge
-- when the line is flat (latency moves under 5% across the load seen), or
-- nil while the points are too close together to tell.
local function fit(f, dt, x, y)
  local k = math.max(math.exp(-dt / MEMORY), KEEP)
  f.w = f.w * k + 1
  f.sx, f.sy = f.sx * k + x, f.sy * k + y
  f.sxx, f.sxy = f.sxx * k + x * x, f.sxy * k + x * y
  local mx, my = f.sx / f.w, f.sy / f.w
  local vx = f.sxx / f.w - mx * mx
  if vx <= (0.1 * mx) ^ 2 then return nil end -- too little spread in x
  local slope = (f.sxy / f.w - mx * my) / vx
  if -slope * math.sqrt(vx) * 4 < 0.05 * my then return math.huge end
  return (my - slope * mx) / -slope
end

function evaluate(m)
  state.svc = state.svc or {}
  for name, s in pairs(m.services) do
    local st = state.svc[name]
    if st == nil then
      st = {fit = {w = 0, sx = 0, sy = 0, sxx = 0, sxy = 0}}
      state.svc[name] = st
    end
    local t, ready = now(), math.max(s.replicas.current, 1)
    local per = s.rps / ready
    if s.queued > 0 and st.queued and st.t and t > st.t then
      -- Saturated: served = arrived - queue growth.
      local served = s.rps - (s.queued - st.queued) / (t - st.t)
      if served > 0 then st.cap = math.min(st.cap or math.huge, served / ready) end
    elseif s.queued == 0 and s.ewma_ms > 0 and per > 0 then
      local cap = fit(st.fit, t - (st.t or t), per, 1000 / s.ewma_ms)
      if cap and cap > per then st.cap = cap end
    end
    st.t, st.queued = t, s.queued

    window.push(name .. ".rps", s.rps, TREND)
    local demand = s.rps + math.max(0, window.slope(name .. ".rps") * LEAD) + s.queued / DRAIN
    local cur = math.max(s.replicas.desired, 1)
    -- need is in replicas at full load.
    local need, why
    if st.cap and st.cap < math.huge then
      need, why = demand / st.cap, string.format("%.0f rps forecast at %.0f per replica", demand, st.cap)
    else
      -- Work in progress grown as the rate is forecast to grow.
      local work = s.in_flight + s.queued
      need, why = work * demand / math.max(s.rps, 1) / CONCURRENCY, string.format("%.0f in progress", work)
    end
    local util = need / cur
    if util > HIGH or (util < LOW and st.cap) then
      local n = math.max(1, math.ceil(need / TARGET))
      if n ~= s.replicas.desired then
        scale(name, n, string.format("%s: %.0f%% busy on %d", why, 100 * util, cur))
      end
    end
  end
end
