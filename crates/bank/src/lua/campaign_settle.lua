-- Settle one campaign's message to one user (wxpush-bank, campaign_settle.lua).
-- KEYS[1] the user's campaign marks, KEYS[2] the campaign's outcome counters for this shard,
-- KEYS[3] the user's consent hash, KEYS[4] the shard's consent totals, and, when known,
-- KEYS[5] the consent index shard of the template named by ARGV[7] (all in one hash slot).
-- ARGV[1] campaignId, ARGV[2] owner, ARGV[3] action:
--   '=<outcome>' (e.g. '=sent', '=failed:40037'): the campaign is done for this user (the held
--       credential is forgotten here, a held consent is consumed; the caller gives a formId back
--       to the bank if WeChat did not use it);
--   'R' release: this attempt ends without an outcome; ARGV[4] is 1 if the attempt's outcome is
--       unknown (WeChat may have sent it), ARGV[5] is 1 to count it as 'retried'. A formId (or
--       prepayId use) stays held for the next attempt, which resends it (WeChat refuses a second
--       use, so that cannot send twice). A consent (member 's' + template id) stays held only
--       in doubt; without doubt it goes back to the user's count (index and totals follow) and
--       the next attempt takes one afresh, because a consent has no identity WeChat checks.
-- ARGV[6] openId, ARGV[7] the template whose index KEYS[5] is ('' when none), ARGV[8] the
-- consent keys' TTL (s).
-- A final outcome is counted in the same step, so each recipient is counted exactly once.
-- A release by an owner whose lease was taken over does nothing. Returns 1 if applied, 0 if
-- not, or {'index', templateId} (nothing changed) when a consent must go back but KEYS[5] is
-- not that template's index: the caller calls again with it.
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
  if ARGV[4] == '0' then
    local held = redis.call('HGET', marks, c .. ' m')
    if held and string.sub(held, 1, 1) == 's' then
      local template = string.sub(held, 2)
      if template ~= ARGV[7] or not KEYS[5] then
        return {'index', template}
      end
      local s, tc, idx, ttl = KEYS[3], KEYS[4], KEYS[5], ARGV[8]
      redis.call('HINCRBY', s, template, 1)
      redis.call('HINCRBY', tc, template, 1)
      redis.call('SADD', idx, ARGV[6])
      redis.call('EXPIRE', s, ttl)
      redis.call('EXPIRE', tc, ttl)
      redis.call('EXPIRE', idx, ttl)
      redis.call('HDEL', marks, c .. ' m', c .. ' e')
    end
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
