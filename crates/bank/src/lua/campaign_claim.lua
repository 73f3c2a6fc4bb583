-- Claim a credential for one campaign's message to one user (wxpush-bank, campaign_claim.lua).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard, KEYS[3] the user's
-- campaign marks (a hash), KEYS[4] the campaign's outcome counters for this shard (all four in
-- one hash slot, so outcomes are counted in the same step that settles them).
-- ARGV[1] safety margin (s), ARGV[2] openId, ARGV[3] campaignId, ARGV[4] owner (this attempt),
-- ARGV[5] lease (ms), ARGV[6] mode: 'take' (start or resume) or 'next' (the held credential
-- was refused by WeChat: claim another one).
--
-- Marks of campaign C (a space cannot occur in a campaign id, so fields cannot collide):
--   'C'    state: L (a credential is held for it), or '=' followed by the final outcome
--          ('=sent', '=sent_unconfirmed', '=no_credential', '=failed:40037', ...)
--   'C o'  owner of the lease, 'C u' lease end (ms), 'C e' expiry and 'C m' member of the
--   held credential, 'C d' 1 while the outcome of an attempt with it is unknown
-- Counts: 'duplicate' when the campaign is already settled for the user, 'no_credential' when
-- the user has none. Returns {'done', final outcome} | {'busy', ms left} | {'none'} |
--         {'fresh', member, expiry} | {'held', member, expiry, in doubt 0/1}
local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local k, idx, marks = KEYS[1], KEYS[2], KEYS[3]
local c, owner, lease = ARGV[3], ARGV[4], tonumber(ARGV[5])
local counters = KEYS[4]
local function count(field)
  redis.call('HINCRBY', counters, field, 1)
  redis.call('HSET', counters, 'last_at_ms', now_ms)
  redis.call('EXPIRE', counters, 2592000)
end

local state = redis.call('HGET', marks, c)
if state and state ~= 'L' then
  count('duplicate')
  return {'done', string.sub(state, 2)}
end
if state == 'L' then
  local holder = redis.call('HGET', marks, c .. ' o')
  local till = tonumber(redis.call('HGET', marks, c .. ' u') or '0')
  if holder ~= owner and till > now_ms then
    return {'busy', till - now_ms}
  end
  if ARGV[6] == 'take' then
    local doubt = redis.call('HGET', marks, c .. ' d') or '1'
    redis.call('HSET', marks, c .. ' o', owner, c .. ' u', now_ms + lease, c .. ' d', '1')
    return {'held', redis.call('HGET', marks, c .. ' m'), redis.call('HGET', marks, c .. ' e'), doubt}
  end
end

-- A new credential: the soonest-expiring usable one, as claim.lua takes it.
local limit = now + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', k, 0, limit)
redis.call('ZREMRANGEBYSCORE', k, -now, '(0')
local first = redis.call('ZRANGE', k, '(0', '+inf', 'BYSCORE', 'LIMIT', 0, 2, 'WITHSCORES')
if #first == 0 then
  redis.call('ZREM', idx, ARGV[2])
  redis.call('HSET', marks, c, '=no_credential')
  count('no_credential')
  redis.call('HDEL', marks, c .. ' o', c .. ' u', c .. ' e', c .. ' m', c .. ' d')
  redis.call('EXPIRE', marks, 691200)
  return {'none'}
end
redis.call('ZADD', k, -tonumber(first[2]), first[1])
if #first < 3 then
  redis.call('ZREM', idx, ARGV[2])
end
redis.call('HSET', marks, c, 'L', c .. ' o', owner, c .. ' u', now_ms + lease,
  c .. ' e', first[2], c .. ' m', first[1], c .. ' d', '1')
-- Marks outlive any credential they may hold (7 days) by a day.
redis.call('EXPIRE', marks, 691200)
return {'fresh', first[1], first[2]}
