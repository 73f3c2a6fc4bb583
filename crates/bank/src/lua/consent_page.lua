#!lua flags=no-writes
-- One step of a walk over the users of one shard holding a consent for one template
-- (wxpush-bank, consent_page.lua): read only (flagged no-writes, so Redis refuses any write).
-- KEYS[1] the shard's template dictionary, KEYS[2] the template's index set of the layout
-- before buckets, KEYS[3..] the shard's consent buckets in order (one hash slot).
-- ARGV[1] templateId, ARGV[2] phase (0: the old index set, b >= 1: bucket b), ARGV[3] that
-- phase's SSCAN/HSCAN cursor, ARGV[4] COUNT.
-- The old set comes first, so a user moved into a bucket during the walk is met there later.
-- A step reads at most one SSCAN/HSCAN batch of the old set, or buckets until one is not read
-- to its end or about COUNT users were found; a bucket in listpack encoding is read whole.
-- Returns {phase, cursor, openIds...}: where this shard's walk goes on (phase past the last
-- bucket: the shard is done).
local template, phase, cursor, count = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local buckets = #KEYS - 2
local out = {}
if phase == 0 then
  local r = redis.call('SSCAN', KEYS[2], cursor, 'COUNT', count)
  for _, m in ipairs(r[2]) do
    out[#out + 1] = m
  end
  if r[1] ~= '0' then
    table.insert(out, 1, r[1])
    table.insert(out, 1, '0')
    return out
  end
  phase, cursor = 1, '0'
end
local num = redis.call('HGET', KEYS[1], template)
if not num then
  phase = buckets + 1
end
local one, more = ',' .. tostring(num) .. ',', ',' .. tostring(num) .. '*'
while phase <= buckets do
  local r = redis.call('HSCAN', KEYS[2 + phase], cursor, 'COUNT', count)
  local kv = r[2]
  for i = 1, #kv, 2 do
    local v = ',' .. kv[i + 1] .. ','
    if string.find(v, one, 1, true) or string.find(v, more, 1, true) then
      out[#out + 1] = kv[i]
    end
  end
  if r[1] ~= '0' then
    cursor = r[1]
    break
  end
  phase, cursor = phase + 1, '0'
  if #out >= count then
    break
  end
end
table.insert(out, 1, cursor)
table.insert(out, 1, tostring(phase))
return out
