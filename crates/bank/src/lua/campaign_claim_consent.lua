-- Claim a subscribe consent for one campaign's message to one user
-- (wxpush-bank, campaign_claim_consent.lua): campaign_claim.lua's marks and leases, with a
-- consent for the campaign's template taken from the user's count instead of a credential
-- popped from their zset.
-- KEYS[1] the user's consent hash, KEYS[2] the template's consent index shard, KEYS[3] the
-- shard's consent totals, KEYS[4] the user's campaign marks, KEYS[5] the campaign's outcome
-- counters for this shard (all five in one hash slot).
-- ARGV[1] openId, ARGV[2] campaignId, ARGV[3] owner (this attempt), ARGV[4] lease (ms),
-- ARGV[5] templateId.
--
-- Marks of campaign C: as in campaign_claim.lua. While a consent is held, 'C m' is 's' followed
-- by the template id and 'C e' is 0 (a consent does not expire). A consent given back by
-- campaign_settle.lua (a release without doubt) leaves C in state L without 'C m': the next
-- attempt takes a consent afresh.
-- Returns {'done', final outcome} | {'busy', ms left} | {'none'} |
--         {'fresh', member, 0} | {'held', member, expiry, in doubt 0/1}
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s, idx, tc, marks, counters = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local who, c, owner, lease, template = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local function count(field)
  redis.call('HINCRBY', counters, field, 1)
  redis.call('HSET', counters, 'last_at_ms', now_ms)
  redis.call('EXPIRE', counters, 2592000)
end

local state = redis.call('HGET', marks, c)
if state and state ~= 'L' then
  count('duplicate')
  return {'done', string.sub(state, 2)}
end
if state == 'L' then
  local holder = redis.call('HGET', marks, c .. ' o')
  local till = tonumber(redis.call('HGET', marks, c .. ' u') or '0')
  if holder ~= owner and till > now_ms then
    return {'busy', till - now_ms}
  end
  local held = redis.call('HGET', marks, c .. ' m')
  if held then
    local doubt = redis.call('HGET', marks, c .. ' d') or '1'
    redis.call('HSET', marks, c .. ' o', owner, c .. ' u', now_ms + lease, c .. ' d', '1')
    return {'held', held, redis.call('HGET', marks, c .. ' e') or '0', doubt}
  end
end

-- A consent afresh: one fewer in the user's count; the index and totals follow.
local n = tonumber(redis.call('HGET', s, template) or '0') or 0
if n < 1 then
  -- (SREM keeps the index exact should the user's hash have expired under it.)
  redis.call('SREM', idx, who)
  redis.call('HSET', marks, c, '=no_credential')
  count('no_credential')
  redis.call('HDEL', marks, c .. ' o', c .. ' u', c .. ' e', c .. ' m', c .. ' d')
  redis.call('EXPIRE', marks, 691200)
  return {'none'}
end
if n == 1 then
  redis.call('HDEL', s, template)
  redis.call('SREM', idx, who)
else
  redis.call('HINCRBY', s, template, -1)
end
if redis.call('HINCRBY', tc, template, -1) <= 0 then
  redis.call('HDEL', tc, template)
end
local member = 's' .. template
redis.call('HSET', marks, c, 'L', c .. ' o', owner, c .. ' u', now_ms + lease,
  c .. ' e', '0', c .. ' m', member, c .. ' d', '1')
-- Marks outlive a held consent's attempts as they outlive a formId's (8 days).
redis.call('EXPIRE', marks, 691200)
return {'fresh', member, '0'}
