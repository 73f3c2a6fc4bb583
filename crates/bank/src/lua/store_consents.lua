-- Add subscribe consents for one user, within the caps (wxpush-bank, store_consents.lua;
-- consent_lib.lua comes first).
-- KEYS[1] the user's consent bucket, KEYS[2] the shard's template dictionary, KEYS[3] the
-- shard's consent totals (templateId -> consents held by the shard's users), KEYS[4] the
-- shard's consent holders (templateId -> users holding >= 1), KEYS[5] the user's consent hash
-- of the layout before buckets (all in the user's hash slot).
-- ARGV[1] openId (the bucket's field), ARGV[2] TTL (s), ARGV[3] most consents per template
-- (WXPUSH_CONSENTS_PER_TEMPLATE), ARGV[4] most templates per user (WXPUSH_TEMPLATES_PER_USER),
-- ARGV[5..] pairs of (templateId, count >= 1), each template once.
-- Caps: a template gets min(count, per-template cap - consents held), never fewer than none;
-- a template the user holds no consent for is refused whole once the user holds consents for
-- as many templates as the cap (taken in the pairs' order). What is refused is counted, never
-- stored, so a replayed upload cannot grow a count past the cap nor a value past it.
-- Consents do not expire in WeChat: the TTL, refreshed on the bucket, the dictionary, the
-- totals and the holders by every call that leaves the user a consent for a template it
-- names, only reclaims buckets (and shards' bookkeeping) nobody has uploaded for in that long.
-- Also gives back a consent WeChat did not use (one pair, count 1), under the same caps:
-- Bank::release_consent.
-- The bucket, the totals and the holders change together, so the totals are exactly the sum
-- of the shard's counts and the holders exactly the users with a count >= 1.
-- Not idempotent: calling it twice adds twice, up to the cap (see docs/bank.md).
-- Returns {consents added, consents refused by the caps}, or 'migrate' (nothing changed)
-- while the user's consents are still in the layout before buckets.
local bucket, dict, tc, th = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', KEYS[5]) == 1 then
  return 'migrate'
end
local who, ttl = ARGV[1], ARGV[2]
local per_template, per_user = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = c_decode(redis.call('HGET', bucket, who))
local templates = 0
for _ in pairs(held) do
  templates = templates + 1
end
local added, refused, touched, changed = 0, 0, false, false
for i = 5, #ARGV, 2 do
  local template, n = ARGV[i], tonumber(ARGV[i + 1])
  local num = c_number(dict, template, false)
  local had = (num and held[num]) or 0
  local take = math.max(0, math.min(n, per_template - had))
  if had == 0 and take > 0 then
    if templates >= per_user then
      take = 0
    else
      templates = templates + 1
    end
  end
  refused = refused + n - take
  if take > 0 then
    num = num or c_number(dict, template, true)
    held[num] = had + take
    redis.call('HINCRBY', tc, template, take)
    if had == 0 then
      redis.call('HINCRBY', th, template, 1)
    end
    added = added + take
    changed = true
  end
  if had + take > 0 then
    touched = true
  end
end
if changed then
  c_save(bucket, who, held)
end
if touched then
  redis.call('EXPIRE', bucket, ttl)
  redis.call('EXPIRE', dict, ttl)
  redis.call('EXPIRE', tc, ttl)
  redis.call('EXPIRE', th, ttl)
end
return {added, refused}
