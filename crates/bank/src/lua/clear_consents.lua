-- Remove every consent one user holds for one template (wxpush-bank, clear_consents.lua;
-- consent_lib.lua comes first), for WeChat's 43101 (the user refused, or holds no consent at
-- WeChat: ours are stale).
-- KEYS[1] the user's consent bucket, KEYS[2] the shard's template dictionary, KEYS[3] the
-- shard's consent totals, KEYS[4] the shard's consent holders, KEYS[5] the user's consent hash
-- of the layout before buckets (one hash slot). ARGV[1] openId, ARGV[2] templateId.
-- The bucket, the totals and the holders change together. Returns the number of consents
-- removed, or 'migrate' (nothing changed) while the user's consents are in the old layout.
local bucket, dict, tc, th, who, template = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[5]) == 1 then
  return 'migrate'
end
local num = c_number(dict, template, false)
if not num then
  return 0
end
local held = c_decode(redis.call('HGET', bucket, who))
local n = held[num] or 0
if n > 0 then
  held[num] = nil
  c_save(bucket, who, held)
  c_add(tc, template, -n)
  c_add(th, template, -1)
end
return n
