-- Add subscribe consents for one user, within the caps (wxpush-bank, store_consents.lua).
-- KEYS[1] the user's consent hash (templateId -> consents left), KEYS[2] the shard's consent
-- totals (templateId -> consents held by the shard's users), KEYS[3..] the consent index shard
-- of each template, in the order of the pairs below (all in the user's hash slot).
-- ARGV[1] openId (index member), ARGV[2] TTL (s), ARGV[3] most consents per template
-- (WXPUSH_CONSENTS_PER_TEMPLATE), ARGV[4] most templates per user (WXPUSH_TEMPLATES_PER_USER),
-- ARGV[5..] pairs of (templateId, count >= 1), each template once.
-- Caps: a template gets min(count, per-template cap - consents held), never fewer than none;
-- a template the user holds no consent for is refused whole once the user holds consents for
-- as many templates as the cap (taken in the pairs' order). What is refused is counted, never
-- stored, so a replayed upload cannot grow a count past the cap nor add keys past it.
-- Consents do not expire in WeChat: the TTL, refreshed by every call that leaves the user a
-- consent for a template it names, only reclaims the keys of users (and templates, and shards)
-- nobody has uploaded for in that long.
-- Also gives back a consent WeChat did not use (one pair, count 1), under the same caps:
-- Bank::release_consent.
-- The hash, the index and the totals change together, so the index holds exactly the users
-- with a count >= 1 and the totals are exactly the sum of the shard's counts.
-- Not idempotent: calling it twice adds twice, up to the cap (see docs/bank.md).
-- Returns {consents added, consents refused by the caps}.
local s, tc, who, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local per_template, per_user = tonumber(ARGV[3]), tonumber(ARGV[4])
local templates = redis.call('HLEN', s)
local added, refused, touched, k = 0, 0, false, 3
for i = 5, #ARGV, 2 do
  local template, n = ARGV[i], tonumber(ARGV[i + 1])
  local idx = KEYS[k]
  k = k + 1
  local held = tonumber(redis.call('HGET', s, template) or '0') or 0
  local take = math.max(0, math.min(n, per_template - held))
  if held == 0 and take > 0 then
    if templates >= per_user then
      take = 0
    else
      templates = templates + 1
    end
  end
  refused = refused + n - take
  if take > 0 then
    redis.call('HINCRBY', s, template, take)
    redis.call('HINCRBY', tc, template, take)
    redis.call('SADD', idx, who)
    added = added + take
  end
  if held + take > 0 then
    redis.call('EXPIRE', idx, ttl)
    touched = true
  end
end
if touched then
  redis.call('EXPIRE', s, ttl)
  redis.call('EXPIRE', tc, ttl)
end
return {added, refused}
