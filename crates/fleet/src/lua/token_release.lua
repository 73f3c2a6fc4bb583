-- After a failed fetch: releases the refresh lock if the caller still holds it
-- (compare-and-delete) and remembers the failure for a while, so the fleet does not hammer
-- the token endpoint.
-- KEYS[1] refresh lock, KEYS[2] remembered refresh failure
-- ARGV[1] owner id, ARGV[2] failure (encoded), ARGV[3] ms to remember it (0: not at all)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
return 1
