-- Bind a single message's id to its user (wxpush-bank, message_bind.lua; contract 8.2): at
-- most one WeChat message per messageId and app, so a messageId published again for another
-- openId must not become a second message. The binding is a field `<id> u` in the day's message
-- status hash of the id's shard (`{ns}:ms:{<app>.<n>}:<day>`, the same keys `wxpush message
-- status` reads), kept 9 days.
-- KEYS[1..] the status hashes of the id's shard, from tomorrow's back to 8 days ago; KEYS[2] is
-- today's. ARGV[1] messageId, ARGV[2] openId, ARGV[3] the hashes' lifetime (s).
-- Returns the openId the id is bound to: ARGV[2] when it is this user's (bound now or before).
local field = ARGV[1] .. ' u'
for i = 1, #KEYS do
  local who = redis.call('HGET', KEYS[i], field)
  if who then
    return who
  end
end
redis.call('HSET', KEYS[2], field, ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return ARGV[2]
