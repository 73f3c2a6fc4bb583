-- After a failed fetch: releases the refresh lock if the caller still holds it
-- (compare-and-delete) and remembers the failure for a while, so the fleet does not hammer
-- the token endpoint. Failures in a row are remembered longer each time (a streak): ARGV[3]
-- ms for the first, doubling up to ARGV[4]; a stored token (token_publish) ends the streak.
-- KEYS[1] refresh lock, KEYS[2] remembered refresh failure, "<until ms>|<streak>|<failure>",
--   kept ARGV[4] ms past its `until` so that the streak outlives the wait it set
-- ARGV[1] owner id, ARGV[2] failure (encoded), ARGV[3] ms to remember a first failure (0: not
-- at all), ARGV[4] longest ms to remember one
-- Returns the ms this failure is remembered for (0: not remembered).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local base, longest = tonumber(ARGV[3]), tonumber(ARGV[4])
if base <= 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local streak = 0
local prev = redis.call('GET', KEYS[2])
if prev then
  local until_ms, n = string.match(prev, '^(%d+)|(%d+)|')
  streak = tonumber(n) or 0
  -- Another process's failure is still being remembered: keep its wait, count no more.
  if until_ms and tonumber(until_ms) > now then
    return tonumber(until_ms) - now
  end
end
local ms = math.min(base * 2 ^ math.min(streak, 30), longest)
ms = math.max(math.floor(ms), 1)
redis.call('SET', KEYS[2], string.format('%d|%d|%s', now + ms, streak + 1, ARGV[2]),
  'PX', ms + math.max(longest, 1))
return ms
