-- The fleet's send-rate token bucket, on one key, on Redis's clock (microseconds).
-- Refills ARGV[1] permits a second up to ARGV[2]; grants up to ARGV[3] at once, but only when
-- at least ARGV[4] are there (fewer, larger grants: fewer round trips).
-- KEYS[1] bucket hash {k = permits left (may be fractional), ts = last update (µs)}
-- Returns {granted, wait_us}: how long until ARGV[4] permits are there again (0: now).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local least = tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'k', 'ts')
local k, ts = tonumber(h[1]), tonumber(h[2])
if k == nil or ts == nil then
  k, ts = cap, now
end
if now > ts then
  k = k + (now - ts) * rate / 1000000
  ts = now
end
-- (a clock that stepped back, e.g. after a failover, refills nothing until it catches up)
if k > cap then
  k = cap
end
local grant = 0
if k >= least then
  grant = math.min(want, math.floor(k))
end
k = k - grant
redis.call('HSET', KEYS[1], 'k', k, 'ts', ts)
redis.call('PEXPIRE', KEYS[1], math.ceil(cap * 1000 / rate) + 1000)
local wait = 0
if k < least then
  wait = math.ceil((least - k) * 1000000 / rate)
end
return {grant, wait}
