-- Pauses sending for ARGV[1] ms from now, unless a pause already lasts at least that long
-- (GT semantics: a shorter pause never shortens a longer one).
-- KEYS[1] pause key (value: the end, Unix ms on Redis's clock; PX the remaining time)
-- Returns {the pause's remaining ms, 1 if this call set it (0: a longer one was running)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur and cur - now >= want then
  return {cur - now, 0}
end
redis.call('SET', KEYS[1], now + want, 'PX', want)
return {want, 1}
