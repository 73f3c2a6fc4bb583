-- Stop a campaign (wxpush-bank, record_stop.lua; the prelude built by record.rs comes first:
-- F, the field names). Its time and reason are written together, once: the first stop wins.
-- A record created here (jobs published before any dispatcher recorded the campaign) gets the
-- record's lifetime, so it does not stay forever.
-- KEYS[1] the record. ARGV[1] reason, ARGV[2] the record's lifetime (s).
-- Returns 1 when this call stopped the campaign, 0 when it was stopped already.
local key = KEYS[1]
if redis.call('HEXISTS', key, F.stopped_at_ms) == 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', key, F.stopped_at_ms, now, F.stopped_reason, ARGV[1])
if redis.call('TTL', key) < 0 then
  redis.call('EXPIRE', key, tonumber(ARGV[2]))
end
return 1
