-- A receipt for WeChat's delivery event of a sent message (wxpush-bank, receipt_delivery.lua;
-- contract 8.3/8.4): the msgid is looked up in the user's shard's msgid maps (written by the
-- settle that recorded the message `sent` with a receipt), and a `delivered` or
-- `delivery_failed` receipt goes into the shard's outbox. The msgid is then forgotten, so a
-- push WeChat retries adds nothing.
-- KEYS[1] the shard's outbox, KEYS[2..] the shard's msgid maps to look in (today's, yesterday's).
-- ARGV[1] msgid, ARGV[2] 'delivered' or 'delivery_failed', ARGV[3] WeChat's ErrorCode (a number).
-- Returns 1 when a receipt was written, 0 when the msgid is unknown (no receipt was asked for
-- its message, or it was matched already, or it is older than the maps).
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local msgid = ARGV[1]
local errcode = ARGV[3]
if not string.match(msgid, '^%d+$') or not string.match(errcode, '^%-?%d+$') then
  return 0
end
for i = 2, #KEYS do
  local base = redis.call('HGET', KEYS[i], msgid)
  if base then
    for j = 2, #KEYS do
      redis.call('HDEL', KEYS[j], msgid)
    end
    redis.call('ZADD', KEYS[1], now_ms, base .. ',"outcome":"' .. ARGV[2] ..
      '","errcode":' .. errcode .. ',"msgid":' .. msgid .. ',"at":' .. now_ms .. '}')
    return 1
  end
end
return 0
