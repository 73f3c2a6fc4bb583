-- Remove every consent one user holds for one template (wxpush-bank, clear_consents.lua), for
-- WeChat's 43101 (the user refused, or holds no consent at WeChat: ours are stale).
-- KEYS[1] the user's consent hash, KEYS[2] the template's consent index shard, KEYS[3] the
-- shard's consent totals (one hash slot). ARGV[1] openId, ARGV[2] templateId.
-- The hash, the index and the totals change together. Returns the number of consents removed.
local s, idx, tc, who, template = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
local n = tonumber(redis.call('HGET', s, template) or '0') or 0
redis.call('HDEL', s, template)
redis.call('SREM', idx, who)
if n > 0 and redis.call('HINCRBY', tc, template, -n) <= 0 then
  redis.call('HDEL', tc, template)
end
return n
