-- Spends one force_refresh from an app's fleet-wide budget if it allows one now: at most
-- ARGV[1] in any ARGV[3] ms (a rolling day), and at least ARGV[2] ms after the last one.
-- KEYS[1] sorted set of the forced refreshes' times (Redis ms)
-- ARGV[1] most per window, ARGV[2] least spacing (ms), ARGV[3] window (ms), ARGV[4] caller id
-- Returns {1, used (this one included), 0} or {0, used, ms until one may be allowed}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local wait = 0
if used >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = tonumber(oldest[2]) + window - now
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  wait = math.max(wait, tonumber(last[2]) + tonumber(ARGV[2]) - now)
end
if wait > 0 then
  return {0, used, wait}
end
redis.call('ZADD', KEYS[1], now, string.format('%d-%s', now, ARGV[4]))
redis.call('PEXPIRE', KEYS[1], window)
return {1, used + 1, 0}
