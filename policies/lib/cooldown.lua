-- cooldown(key, seconds): true at most once per `seconds` for each key.
-- It arms the key when it returns true, so
--
--   local cooldown = require("cooldown")
--   if cooldown("api.down", 60) then scale("api", n - 1, "quiet") end
--
-- scales down at most once a minute.
return function(key, seconds)
  state._cooldown = state._cooldown or {}
  local t = now()
  local last = state._cooldown[key]
  if last ~= nil and t - last < seconds then return false end
  state._cooldown[key] = t
  return true
end
