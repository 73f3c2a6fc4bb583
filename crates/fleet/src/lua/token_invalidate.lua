-- Deletes the shared token only if it is still the one that failed (compare-and-delete), and
-- only if it is at least the minimum refresh interval old (so a fleet cannot refresh in a loop).
-- With ARGV[3] = 1 (a stable_token source) a deleted token is also marked rejected for the
-- rest of its life: a refresh that gets it back from stable_token may then force a new one.
-- KEYS[1] token hash, KEYS[2] rejected-token mark
-- ARGV[1] the token that failed, ARGV[2] minimum refresh interval (ms), ARGV[3] mark (0 or 1)
-- Returns 1 deleted, 0 not the current token (already replaced, or gone), 2 too young to drop
local h = redis.call('HMGET', KEYS[1], 't', 'f', 'e')
if h[1] ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now - (tonumber(h[2]) or 0) < tonumber(ARGV[2]) then
  return 2
end
redis.call('DEL', KEYS[1])
local left = math.floor((tonumber(h[3]) or 0) - now)
if ARGV[3] == '1' and left >= 1 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', left)
end
return 1
