-- Settle one campaign's message to one user (wxpush-bank, campaign_settle.lua).
-- KEYS[1] the user's campaign marks. ARGV[1] campaignId, ARGV[2] owner, ARGV[3] action:
--   '=<outcome>' (e.g. '=sent', '=failed:40037'): the campaign is done for this user (the held
--       credential is forgotten here; the caller gives it back to the bank if WeChat did not
--       use it);
--   'R' release: this attempt ends without an outcome, the credential stays held for the next
--       attempt; ARGV[4] is 1 if the attempt's outcome is unknown (WeChat may have sent it).
-- A release by an owner whose lease was taken over does nothing. Returns 1 if applied.
local marks, c, owner, action = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', marks, c) ~= 'L' then
  return 0
end
if action == 'R' then
  if redis.call('HGET', marks, c .. ' o') ~= owner then
    return 0
  end
  redis.call('HSET', marks, c .. ' u', '0', c .. ' d', ARGV[4])
  return 1
end
redis.call('HSET', marks, c, action)
redis.call('HDEL', marks, c .. ' o', c .. ' u', c .. ' e', c .. ' m', c .. ' d')
return 1
