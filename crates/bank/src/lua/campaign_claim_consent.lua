-- Claim a subscribe consent for one campaign's message to one user
-- (wxpush-bank, campaign_claim_consent.lua; campaign_marks.lua comes first): the marks and
-- leases of campaign_claim.lua, with a consent for the campaign's template taken from the
-- user's count instead of a credential popped from their zset.
-- KEYS[1] the user's consent hash, KEYS[2] the template's consent index shard, KEYS[3] the
-- shard's consent totals, KEYS[4] the user's campaign marks, KEYS[5] the campaign's outcome
-- counters for this shard (all five in one hash slot).
-- ARGV[1] openId, ARGV[2] campaignId, ARGV[3] owner (fencing token), ARGV[4] lease (ms),
-- ARGV[5] templateId, ARGV[6] mode ('take', 'renew' or 'next').
-- KEYS[6], KEYS[7], ARGV[7], ARGV[8]: the receipt's (see receipt_args()).
-- While a consent is held, 'C m' is 's' followed by the template id and 'C e' is 0. A consent
-- given back by campaign_settle.lua (a release without doubt) leaves C in state L without
-- 'C m': the next attempt takes a consent afresh.
-- Returns as campaign_claim.lua ({'fresh', member, 0}; a held consent's expiry is 0).
local s, idx, tc, marks, counters = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local who, c, owner, lease_ms, template = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
receipt_args(6, 7)
local reply = lease(marks, counters, c, owner, lease_ms, ARGV[6], 0)
if reply then
  return reply
end

-- A consent afresh: one fewer in the user's count; the index and totals follow.
local n = tonumber(redis.call('HGET', s, template) or '0') or 0
if n < 1 then
  -- (SREM keeps the index exact should the user's hash have expired under it.)
  redis.call('SREM', idx, who)
  finish(marks, counters, c, 'no_credential')
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
hold(marks, c, owner, lease_ms, 's' .. template, '0')
return {'fresh', 's' .. template, '0'}
