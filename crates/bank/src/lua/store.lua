-- Store credentials for one user (wxpush-bank, store.lua).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard (same hash slot).
-- ARGV[1] safety margin (s), ARGV[2] per-user cap, ARGV[3] openId (index member),
-- ARGV[4..] pairs of (expiry in Unix seconds, encoded member).
-- Scores: expiry > 0 for a usable credential; -expiry for a spent one, kept as a tombstone
-- until it expires so that a re-sent old upload cannot store it again.
-- Returns {added, already known (stored or spent), expired, dropped by the cap}.
local now = tonumber(redis.call('TIME')[1])
local limit = now + tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local k, idx, who = KEYS[1], KEYS[2], ARGV[3]

redis.call('ZREMRANGEBYSCORE', k, 0, limit)
redis.call('ZREMRANGEBYSCORE', k, -now, '(0')

local added, offered, expired = 0, 0, 0
local batch = {}
for i = 4, #ARGV, 2 do
  local exp = tonumber(ARGV[i])
  if exp <= limit then
    expired = expired + 1
  else
    offered = offered + 1
    batch[#batch + 1] = exp
    batch[#batch + 1] = ARGV[i + 1]
    if #batch >= 400 then
      added = added + redis.call('ZADD', k, 'NX', unpack(batch))
      batch = {}
    end
  end
end
if #batch > 0 then
  added = added + redis.call('ZADD', k, 'NX', unpack(batch))
end

local spent = redis.call('ZCOUNT', k, '-inf', '(0')
local usable = redis.call('ZCARD', k) - spent
local capped = 0
if usable > cap then
  capped = usable - cap
  redis.call('ZREMRANGEBYRANK', k, spent, spent + capped - 1)
end

-- The index holds each user with the expiry of their last usable credential.
local top = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
local expire_at = 0
if #top > 0 and tonumber(top[2]) > 0 then
  expire_at = tonumber(top[2])
  redis.call('ZADD', idx, expire_at, who)
else
  redis.call('ZREM', idx, who)
end
local low = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
if #low > 0 and -tonumber(low[2]) > expire_at then
  expire_at = -tonumber(low[2])
end
if expire_at > 0 then
  redis.call('EXPIREAT', k, expire_at + 1)
end
local itop = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if #itop > 0 then
  redis.call('EXPIREAT', idx, tonumber(itop[2]) + 1)
end
return {added, offered - added, expired, capped}
