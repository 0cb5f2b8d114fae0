-- ring: a growable ring buffer of (t, v) pairs in two flat arrays, for
-- histories that grow at one end and are trimmed at either without a table
-- per entry or a copy per trim. A ring is plain data, so it can live in
-- `state` (and survive a reload).
--
--   local ring = require("ring")
--   local r = ring.new()
--   ring.push(r, now(), 42)
--   while ring.first(r) < now() - 60 do ring.shift(r) end
--
-- Code on a hot path may read the fields directly, as a call costs more
-- than the arithmetic: r.n entries, the i-th oldest at slot
-- (r.head + i - 2) % r.cap + 1 of the arrays r.t and r.v.
local ring = {}

function ring.new(cap)
  cap = cap or 8
  local r = {t = {}, v = {}, head = 1, n = 0, cap = cap}
  -- Filled, not sparse: a sparse array would not survive conversion.
  for i = 1, cap do r.t[i], r.v[i] = 0, 0 end
  return r
end

-- slot is where the i-th oldest entry lives; the functions below inline
-- it where it is hot.
local function slot(r, i) return (r.head + i - 2) % r.cap + 1 end

-- push appends (t, v) as the newest entry, doubling the ring when full.
function ring.push(r, t, v)
  local n, cap = r.n, r.cap
  if n == cap then
    local nt, nv = {}, {}
    for i = 1, n do
      local s = slot(r, i)
      nt[i], nv[i] = r.t[s], r.v[s]
    end
    for i = n + 1, 2 * cap do nt[i], nv[i] = 0, 0 end
    cap = 2 * cap
    r.t, r.v, r.head, r.cap = nt, nv, 1, cap
  end
  n = n + 1
  r.n = n
  local s = (r.head + n - 2) % cap + 1
  r.t[s], r.v[s] = t, v
end

-- get returns the i-th oldest entry (1 is the oldest), or nil.
function ring.get(r, i)
  if i < 1 or i > r.n then return nil end
  local s = (r.head + i - 2) % r.cap + 1
  return r.t[s], r.v[s]
end

-- first and last return the oldest and the newest entry, or nil.
function ring.first(r)
  if r.n == 0 then return nil end
  return r.t[r.head], r.v[r.head]
end

function ring.last(r)
  if r.n == 0 then return nil end
  local s = (r.head + r.n - 2) % r.cap + 1
  return r.t[s], r.v[s]
end

-- shift drops the oldest entry and pop the newest; both return it.
function ring.shift(r)
  if r.n == 0 then return nil end
  local s = r.head
  r.head, r.n = s % r.cap + 1, r.n - 1
  return r.t[s], r.v[s]
end

function ring.pop(r)
  if r.n == 0 then return nil end
  local s = (r.head + r.n - 2) % r.cap + 1
  r.n = r.n - 1
  return r.t[s], r.v[s]
end

return ring
