-- Claim a subscribe consent for one campaign's message to one user
-- (wxpush-bank, campaign_claim_consent.lua; campaign_marks.lua and consent_lib.lua come
-- first): the marks and leases of campaign_claim.lua, with a consent for the campaign's
-- template taken from the user's count instead of a credential popped from their zset.
-- KEYS[1] the user's consent bucket, KEYS[2] the shard's template dictionary, KEYS[3] the
-- shard's consent totals, KEYS[4] the shard's consent holders, KEYS[5] the user's campaign
-- marks, KEYS[6] the campaign's outcome counters for this shard, KEYS[7] the user's consent
-- hash of the layout before buckets (all seven in one hash slot).
-- ARGV[1] openId, ARGV[2] campaignId, ARGV[3] owner (fencing token), ARGV[4] lease (ms),
-- ARGV[5] templateId, ARGV[6] mode ('take', 'renew' or 'next').
-- KEYS[8], KEYS[9], ARGV[7], ARGV[8]: the receipt's (see receipt_args()).
-- ARGV[9] the frequency cap this message is held to ('' or 0: none; see cap_take()).
-- While a consent is held, 'C m' is 's' followed by the template id and 'C e' is 0. A consent
-- given back by campaign_settle.lua (a release without doubt) leaves C in state L without
-- 'C m': the next attempt takes a consent afresh.
-- Returns as campaign_claim.lua ({'fresh', member, 0}; a held consent's expiry is 0), or
-- 'migrate' (nothing changed, not even the marks) while the user's consents are in the old
-- layout.
local bucket, dict, tc, th, marks, counters = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('EXISTS', KEYS[7]) == 1 then
  return 'migrate'
end
local who, c, owner, lease_ms, template = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
receipt_args(8, 7)
local reply = lease(marks, counters, c, owner, lease_ms, ARGV[6], 0)
if reply then
  return reply
end
if ARGV[6] == 'take' and cap_take(marks, counters, c, ARGV[9]) then
  return {'capped'}
end

-- A consent afresh: one fewer in the user's count; the totals and holders follow.
local num = c_number(dict, template, false)
local held = c_decode(num and redis.call('HGET', bucket, who))
local n = (num and held[num]) or 0
if n < 1 then
  finish(marks, counters, c, 'no_credential')
  return {'none'}
end
held[num] = n - 1
c_save(bucket, who, held)
if n == 1 then
  c_add(th, template, -1)
end
c_add(tc, template, -1)
hold(marks, c, owner, lease_ms, 's' .. template, '0')
return {'fresh', 's' .. template, '0'}
