-- A circuit breaker that grows with the service: each ready replica takes
-- up to PER_REPLICA requests at once, and the service's breaker admits
-- PER_REPLICA × ready replicas. As replicas come up (an actuator's, or
-- discovery's) the limit rises as soon as they pass their health checks;
-- as they go, it falls, so the replicas left are not buried. Run it beside
-- a policy that scales: it decides nothing about replicas itself.
local PER_REPLICA = 4 -- requests in flight one replica serves within its latency target

function evaluate(m)
  for name, s in pairs(m.services) do
    local ready = 0
    for _, b in ipairs(s.backends) do
      if b.healthy then ready = ready + 1 end
    end
    -- max_requests must stay at least 1: with no replica ready, one probe
    -- request at a time finds out when one is back.
    circuit(name, {max_requests = math.max(1, PER_REPLICA * ready), max_requests_per_backend = PER_REPLICA},
      string.format("%d ready × %d", ready, PER_REPLICA))
  end
end
