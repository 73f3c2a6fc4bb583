-- Stores a freshly fetched access token and releases the refresh lock if the caller still
-- holds it. A caller whose lease ran out stores only over an older token (or none).
-- Times are Redis's: fetched = now - (time since the fetch was sent), so they err early.
-- Storing a token also clears the rejected-token mark (the refresh that follows a rejection
-- has decided about it).
-- KEYS[1] token hash, KEYS[2] refresh lock, KEYS[3] remembered refresh failure,
-- KEYS[4] rejected-token mark
-- ARGV[1] owner id, ARGV[2] token, ARGV[3] lifetime (ms), ARGV[4] ms since the fetch was sent,
-- ARGV[5] refresh-ahead margin (ms), ARGV[6] longest lifetime believed (ms)
-- Returns {now_ms, fetched_ms, due_ms, expires_ms, stored (0 or 1)}
-- The token is stored only with a TTL of 1 ms .. ARGV[6]: every value is checked before the
-- write, because a script that fails after HSET leaves the key written (and without a TTL).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lifetime = math.min(tonumber(ARGV[3]) or 0, tonumber(ARGV[6]))
local fetched = now - (tonumber(ARGV[4]) or 0)
local expires = math.floor(fetched + lifetime)
local due = expires - (tonumber(ARGV[5]) or 0)
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
local store = mine
if not mine then
  local f = tonumber(redis.call('HGET', KEYS[1], 'f'))
  store = (f == nil) or (f < fetched)
end
local ttl = expires - now
if not (ttl >= 1 and ttl <= tonumber(ARGV[6])) then
  store = false
end
if store then
  redis.call('HSET', KEYS[1], 't', ARGV[2], 'f', fetched, 'd', due, 'e', expires)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('DEL', KEYS[3], KEYS[4])
end
if mine then
  redis.call('DEL', KEYS[2])
end
return {now, fetched, due, expires, store and 1 or 0}
