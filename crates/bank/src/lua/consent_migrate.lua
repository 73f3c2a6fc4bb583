-- Move one user's consents from the layout before buckets into their bucket (wxpush-bank,
-- consent_migrate.lua; consent_lib.lua comes first). The bank runs it when a consent script
-- answers 'migrate', then runs that script again.
-- KEYS[1] the user's old consent hash (templateId -> count), KEYS[2] the user's consent
-- bucket, KEYS[3] the shard's template dictionary, KEYS[4] the shard's consent holders,
-- KEYS[5..] the old index set of each template of ARGV[3..], in that order (one hash slot).
-- ARGV[1] openId, ARGV[2] TTL (s), ARGV[3..] the templates the caller read in the old hash.
-- The totals are the same in both layouts and do not change; the user leaves each old index
-- set and is counted in the holders instead, in the same call, so holders read as the old
-- sets' sizes plus the holders hash stay exact throughout.
-- Returns 1 when moved (or nothing was left to move), 0 (nothing changed) when the old hash
-- names a template the caller did not list (written meanwhile): read it again and retry.
local old, bucket, dict, th, who, ttl = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2]
local sets = {}
for i = 3, #ARGV do
  sets[ARGV[i]] = KEYS[i + 2]
end
local pairs_old = redis.call('HGETALL', old)
for i = 1, #pairs_old, 2 do
  if not sets[pairs_old[i]] then
    return 0
  end
end
local held = c_decode(redis.call('HGET', bucket, who))
local moved = false
for i = 1, #pairs_old, 2 do
  local template, n = pairs_old[i], tonumber(pairs_old[i + 1]) or 0
  redis.call('SREM', sets[template], who)
  if n > 0 then
    local num = c_number(dict, template, true)
    local had = held[num] or 0
    if had == 0 then
      redis.call('HINCRBY', th, template, 1)
    end
    held[num] = had + n
    moved = true
  end
end
if moved then
  c_save(bucket, who, held)
  redis.call('EXPIRE', bucket, ttl)
  redis.call('EXPIRE', dict, ttl)
  redis.call('EXPIRE', th, ttl)
end
redis.call('DEL', old)
return 1
