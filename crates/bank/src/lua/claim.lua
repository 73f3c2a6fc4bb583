-- Claim one user's usable credential that expires soonest (wxpush-bank, claim.lua).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard (same hash slot).
-- ARGV[1] safety margin (s), ARGV[2] openId (index member).
-- The claimed member stays in the zset as a tombstone (score -expiry) until it expires.
-- Returns {dropped as expired} when nothing is usable, else {dropped, member, expiry}.
local now = tonumber(redis.call('TIME')[1])
local limit = now + tonumber(ARGV[1])
local k, idx = KEYS[1], KEYS[2]

local dropped = redis.call('ZREMRANGEBYSCORE', k, 0, limit)
redis.call('ZREMRANGEBYSCORE', k, -now, '(0')

local first = redis.call('ZRANGE', k, '(0', '+inf', 'BYSCORE', 'LIMIT', 0, 2, 'WITHSCORES')
if #first == 0 then
  redis.call('ZREM', idx, ARGV[2])
  return {dropped}
end
redis.call('ZADD', k, -tonumber(first[2]), first[1])
if #first < 3 then
  redis.call('ZREM', idx, ARGV[2])
end
return {dropped, first[1], first[2]}
