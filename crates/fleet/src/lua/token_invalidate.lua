-- Deletes the shared token only if it is still the one that failed (compare-and-delete), and
-- only if it is at least the minimum refresh interval old (so a fleet cannot refresh in a loop).
-- KEYS[1] token hash
-- ARGV[1] the token that failed, ARGV[2] minimum refresh interval (ms)
-- Returns 1 deleted, 0 not the current token (already replaced, or gone), 2 too young to drop
local h = redis.call('HMGET', KEYS[1], 't', 'f')
if h[1] ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now - (tonumber(h[2]) or 0) < tonumber(ARGV[2]) then
  return 2
end
redis.call('DEL', KEYS[1])
return 1
