-- Consent buckets: what every consent script shares (wxpush-bank, consent_lib.lua). Not a
-- script of its own: it is put in front of the consent scripts when they are loaded
-- (scripts.rs), so every one reads and writes a user's consents the same way.
--
-- A user's consents are one field of their shard's consent bucket (field: the openId), whose
-- value lists the templates they hold consents for by the shard's template numbers (the
-- shard's template dictionary: templateId -> number, ' <number>' -> templateId, ' #' -> the
-- last number given; a space cannot occur in a template id), joined by ',': '<n>' for one
-- consent, '<n>*<count>' for more ('1,3*2': one for template 1, two for template 3). Numbers
-- are given in a shard once and never reused, so a value never names another template.
-- A user holding nothing has no field. Short values keep the bucket in Redis's listpack
-- encoding (hash-max-listpack-value 64 by default: a dozen templates and more).
--
-- The scripts keep, in the same call, the shard's totals (templateId -> consents) and holders
-- (templateId -> users holding >= 1) exact; a field reaching 0 is deleted.
-- Before buckets, a user's consents were a hash of their own ({ns}:s:..:<openId>, with the
-- per-template sets {ns}:t:..:<templateId>): every script writing a user's consents first
-- checks that key and, while it exists, changes nothing and returns 'migrate' (the bank then
-- runs consent_migrate.lua, which moves them, and calls the script again).

-- template number (text) -> count, from a bucket's value (nil: none).
local function c_decode(v)
  local held = {}
  if v then
    for e in string.gmatch(v, '[^,]+') do
      local n, c = string.match(e, '^(%d+)%*(%d+)$')
      if n then
        held[n] = tonumber(c)
      elseif string.match(e, '^%d+$') then
        held[e] = 1
      end
    end
  end
  return held
end

-- Writes `held` back as the user's field (deleted when they hold nothing).
local function c_save(bucket, who, held)
  local ns = {}
  for n, c in pairs(held) do
    if c > 0 then
      ns[#ns + 1] = tonumber(n)
    end
  end
  if #ns == 0 then
    redis.call('HDEL', bucket, who)
    return
  end
  table.sort(ns)
  local parts = {}
  for i, n in ipairs(ns) do
    local c = held[tostring(n)]
    if c == 1 then
      parts[i] = tostring(n)
    else
      parts[i] = n .. '*' .. c
    end
  end
  redis.call('HSET', bucket, who, table.concat(parts, ','))
end

-- The template's number in the shard's dictionary, given one if it has none and `give`.
local function c_number(dict, template, give)
  local n = redis.call('HGET', dict, template)
  if n or not give then
    return n
  end
  n = tostring(redis.call('HINCRBY', dict, ' #', 1))
  redis.call('HSET', dict, template, n, ' ' .. n, template)
  return n
end

-- HINCRBY that deletes the field once it is 0 or less.
local function c_add(hash, field, by)
  if redis.call('HINCRBY', hash, field, by) <= 0 then
    redis.call('HDEL', hash, field)
  end
end
