-- Add subscribe consents for one user (wxpush-bank, store_consents.lua).
-- KEYS[1] the user's consent hash (templateId -> consents left), KEYS[2] the shard's consent
-- totals (templateId -> consents held by the shard's users), KEYS[3..] the consent index shard
-- of each template, in the order of the pairs below (all in the user's hash slot).
-- ARGV[1] openId (index member), ARGV[2] TTL (s), ARGV[3..] pairs of (templateId, count >= 1).
-- Consents do not expire in WeChat: the TTL, refreshed on every call, only reclaims the keys of
-- users (and templates, and shards) nobody has uploaded for in that long.
-- Also gives back a consent WeChat did not use (one pair, count 1): Bank::release_consent.
-- The hash, the index and the totals change together, so the index holds exactly the users
-- with a count >= 1 and the totals are exactly the sum of the shard's counts.
-- Not idempotent: calling it twice adds twice (consents accumulate; see docs/bank.md).
-- Returns the number of consents added.
local s, tc, who, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local added, k = 0, 3
for i = 3, #ARGV, 2 do
  local template, n = ARGV[i], tonumber(ARGV[i + 1])
  local idx = KEYS[k]
  k = k + 1
  redis.call('HINCRBY', s, template, n)
  redis.call('HINCRBY', tc, template, n)
  redis.call('SADD', idx, who)
  redis.call('EXPIRE', idx, ttl)
  added = added + n
end
if added > 0 then
  redis.call('EXPIRE', s, ttl)
  redis.call('EXPIRE', tc, ttl)
end
return added
