-- An operator's action on a campaign (wxpush-bank, record_control.lua; the prelude built by
-- record.rs comes first: F, the field names). Contract 8.5: `pause` sets the pause (senders
-- park its jobs without spending anything), `resume` clears it, `cancel` marks the campaign
-- cancelled (senders record its recipients not yet sent as `cancelled`, spending nothing);
-- a cancelled campaign cannot be paused or resumed. Each time is Redis's.
-- KEYS[1] the campaign's record. ARGV[1] 'pause', 'resume' or 'cancel'.
-- Returns -1 when there is no such campaign, 0 when nothing changed (already so, or
-- cancelled), 1 when changed.
local key, op = KEYS[1], ARGV[1]
if redis.call('EXISTS', key) == 0 then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if op == 'cancel' then
  return redis.call('HSETNX', key, F.cancelled_at_ms, now)
end
if redis.call('HEXISTS', key, F.cancelled_at_ms) == 1 then
  return 0
end
if op == 'pause' then
  return redis.call('HSETNX', key, F.paused_at_ms, now)
elseif op == 'resume' then
  return redis.call('HDEL', key, F.paused_at_ms)
end
return redis.error_reply('record_control: unknown operation ' .. op)
