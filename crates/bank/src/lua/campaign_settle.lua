-- Settle one campaign's message to one user (wxpush-bank, campaign_settle.lua).
-- KEYS[1] the user's campaign marks, KEYS[2] the campaign's outcome counters for this shard
-- (same hash slot). ARGV[1] campaignId, ARGV[2] owner, ARGV[3] action:
--   '=<outcome>' (e.g. '=sent', '=failed:40037'): the campaign is done for this user (the held
--       credential is forgotten here; the caller gives it back to the bank if WeChat did not
--       use it);
--   'R' release: this attempt ends without an outcome, the credential stays held for the next
--       attempt; ARGV[4] is 1 if the attempt's outcome is unknown (WeChat may have sent it),
--       ARGV[5] is 1 to count it as 'retried'.
-- A final outcome is counted in the same step, so each recipient is counted exactly once.
-- A release by an owner whose lease was taken over does nothing. Returns 1 if applied.
local marks, counters, c, owner, action = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', marks, c) ~= 'L' then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function count(field)
  redis.call('HINCRBY', counters, field, 1)
  redis.call('HSET', counters, 'last_at_ms', now_ms)
  redis.call('EXPIRE', counters, 2592000)
end
if action == 'R' then
  if redis.call('HGET', marks, c .. ' o') ~= owner then
    return 0
  end
  redis.call('HSET', marks, c .. ' u', '0', c .. ' d', ARGV[4])
  if ARGV[5] == '1' then
    count('retried')
  end
  return 1
end
redis.call('HSET', marks, c, action)
redis.call('HDEL', marks, c .. ' o', c .. ' u', c .. ' e', c .. ' m', c .. ' d')
count(string.sub(action, 2))
return 1
