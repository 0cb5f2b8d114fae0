package policies

import (
	"context"
	"testing"
	"time"

	"perigee/units"
)

// libRig runs script once per step of a simulated clock that advances by
// 0.5 to 2 s; the script checks its own results with assert.
func libRig(t *testing.T, script string, steps int) {
	t.Helper()
	now := time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	e, err := NewEngine(EngineConfig{
		// A long deadline: these scripts do much more than a policy, and
		// run under the race detector on a shared machine.
		Policies: []Spec{{Name: "lib", Script: "lib.lua", Source: script, Interval: units.Duration(time.Minute), Timeout: units.Duration(time.Minute)}},
		Source:   &fixedSource{},
		Now:      func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Reload() })
	for i := range steps {
		now = now.Add(time.Duration(500+(i*7919)%1500) * time.Millisecond)
		if err := e.Evaluate(context.Background(), "lib"); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

// lcg is a deterministic pseudo-random source for the scripts.
const lcg = `
local seed = 42
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n
end
`

func TestRingMatchesAList(t *testing.T) {
	libRig(t, lcg+`
local ring = require("ring")
local r, list = ring.new(2), {}
function evaluate(m)
  for _ = 1, 5 do
    local op = rand(4)
    if op < 2 or #list < 3 then
      local v = rand(1000)
      ring.push(r, v, -v)
      list[#list + 1] = v
    elseif op == 2 then
      assert(ring.shift(r) == table.remove(list, 1), "shift")
    else
      assert(ring.pop(r) == table.remove(list), "pop")
    end
  end
  assert(r.n == #list, "count")
  for i, v in ipairs(list) do
    local t, nv = ring.get(r, i)
    assert(t == v and nv == -v, "get " .. i)
  end
  assert(ring.first(r) == list[1] and ring.last(r) == list[#list], "ends")
end`, 200)
}

func TestWindowMatchesDirectComputation(t *testing.T) {
	libRig(t, lcg+`
local window = require("window")
local kept = {}
local function close(a, b) return math.abs(a - b) <= 1e-6 * math.max(1, math.abs(b)) end
function evaluate(m)
  local t, v = now(), rand(5000) / 10
  window.push("k", v, 60)
  kept[#kept + 1] = {t = t, v = v}
  while kept[1].t < t - 60 do table.remove(kept, 1) end
  local n, sum, lo, hi = #kept, 0, math.huge, -math.huge
  local st, sv, stt, stv = 0, 0, 0, 0
  for _, s in ipairs(kept) do
    sum, lo, hi = sum + s.v, math.min(lo, s.v), math.max(hi, s.v)
    local x = s.t - kept[1].t
    st, sv, stt, stv = st + x, sv + s.v, stt + x * x, stv + x * s.v
  end
  local slope = 0
  if n > 1 then slope = (n * stv - st * sv) / (n * stt - st * st) end
  assert(window.count("k") == n, "count")
  assert(window.min("k") == lo and window.max("k") == hi, "min/max")
  assert(close(window.avg("k"), sum / n), "avg")
  assert(close(window.slope("k"), slope), string.format("slope %g, want %g", window.slope("k"), slope))
end`, 400)
}

// hpa.desired must give what the straightforward version that keeps every
// recommendation gave, for any metric, window and change limits.
func TestHPAMatchesReference(t *testing.T) {
	libRig(t, lcg+refHPA+`
local hpa = require("hpa")
local cases = {
  {},
  {tolerance = 0.15, down_window = 60, up = {pods = 4, percent = 100, period = 5}, down = {pods = 1, period = 10}},
  {up_window = 20, down_window = 30, up = {percent = 200, period = 5}},
  {up_window = 5, down_window = 0, min = 2, max = 40},
}
local cur = {}
function evaluate(m)
  for i, o in ipairs(cases) do
    local c = cur[i] or 3
    local metric = 80 * (0.3 + rand(300) / 100)
    local opts = {key = "c" .. i}
    for k, v in pairs(o) do opts[k] = v end
    local got = hpa.desired(c, metric, 80, opts)
    local want = ref.desired(c, metric, 80, opts)
    assert(got == want, string.format("case %d: %d replicas, want %d (current %d, metric %.0f)", i, got, want, c, metric))
    cur[i] = got
  end
end`, 500)
}

// refHPA is the library's first hpa.desired, which kept the full history
// of recommendations in a list and copied it on every prune.
const refHPA = `
local ref = {}

local function history(key)
  state._ref = state._ref or {}
  local h = state._ref[key]
  if h == nil then
    h = {recs = {}, events = {}}
    state._ref[key] = h
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

function ref.desired(current, metric, target, opts)
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
`

// The helpers' histories are plain data, so they survive a reload that
// carries state over.
func TestHelperHistoriesSurviveReload(t *testing.T) {
	src := `persist_state = true
local window = require("window")
local hpa = require("hpa")
function evaluate(m)
  if state.check then
    assert(window.count("k") == state.check.count, "count")
    assert(math.abs(window.slope("k") - state.check.slope) < 1e-9, "slope")
    state.check = nil
  end
  window.push("k", now() % 97, 30)
  hpa.desired(3, 200, 80)
  state.check = {count = window.count("k"), slope = window.slope("k")}
end`
	now := time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	spec := Spec{Name: "lib", Script: "lib.lua", Source: src, Interval: units.Duration(time.Minute), Timeout: units.Duration(time.Minute)}
	e, err := NewEngine(EngineConfig{Policies: []Spec{spec}, Source: &fixedSource{}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Reload() })
	for i := range 100 {
		now = now.Add(time.Second)
		if i == 50 {
			if err := e.Reload(spec); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Evaluate(context.Background(), "lib"); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}
