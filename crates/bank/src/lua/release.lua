-- Give back a claimed credential that WeChat did not use (wxpush-bank, release.lua).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard (same hash slot).
-- ARGV[1] safety margin (s), ARGV[2] openId, ARGV[3] expiry (Unix s), ARGV[4] member.
-- Only a tombstone of exactly that credential becomes usable again, and only while it is
-- still usable: a credential is never created here, nor brought back twice.
-- Returns 1 if released, 0 if not.
local now = tonumber(redis.call('TIME')[1])
local exp = tonumber(ARGV[3])
if exp <= now + tonumber(ARGV[1]) then
  return 0
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[4])
if not score or tonumber(score) ~= -exp then
  return 0
end
redis.call('ZADD', KEYS[1], exp, ARGV[4])
if redis.call('ZADD', KEYS[2], 'GT', 'CH', exp, ARGV[2]) == 1 then
  redis.call('EXPIREAT', KEYS[2], exp + 1, 'NX')
  redis.call('EXPIREAT', KEYS[2], exp + 1, 'GT')
end
return 1
