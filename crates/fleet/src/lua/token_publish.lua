-- Stores a freshly fetched access token and releases the refresh lock if the caller still
-- holds it. A caller whose lease ran out stores only over an older token (or none).
-- Times are Redis's: fetched = now - (time since the fetch was sent), so they err early.
-- KEYS[1] token hash, KEYS[2] refresh lock, KEYS[3] remembered refresh failure
-- ARGV[1] owner id, ARGV[2] token, ARGV[3] lifetime (ms), ARGV[4] ms since the fetch was sent,
-- ARGV[5] refresh-ahead margin (ms)
-- Returns {now_ms, fetched_ms, due_ms, expires_ms, stored (0 or 1)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fetched = now - tonumber(ARGV[4])
local expires = fetched + tonumber(ARGV[3])
local due = expires - tonumber(ARGV[5])
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
local store = mine
if not mine then
  local f = tonumber(redis.call('HGET', KEYS[1], 'f'))
  store = (f == nil) or (f < fetched)
end
if expires <= now then
  store = false
end
if store then
  redis.call('HSET', KEYS[1], 't', ARGV[2], 'f', fetched, 'd', due, 'e', expires)
  redis.call('PEXPIRE', KEYS[1], expires - now)
  redis.call('DEL', KEYS[3])
end
if mine then
  redis.call('DEL', KEYS[2])
end
return {now, fetched, due, expires, store and 1 or 0}
