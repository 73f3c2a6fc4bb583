-- Store credentials for one user (wxpush-bank, store.lua).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard (same hash slot).
-- ARGV[1] safety margin (s), ARGV[2] per-user cap, ARGV[3] openId (index member),
-- ARGV[4] longest lifetime (s): no expiry is kept later than Redis's now + that (a client's
-- clock, or the ingest host's, is never trusted further), ARGV[5..] pairs of (expiry in Unix
-- seconds, encoded member).
-- Scores: expiry > 0 for a usable credential; -expiry for a spent one, kept as a tombstone
-- until it expires so that a re-sent old upload cannot store it again.
-- Returns {added, already known (stored or spent), expired, dropped by the cap}.
-- Kept lean (ingest calls it once per user per batch; each redis.call costs ~2 us): expired
-- entries are removed here only when the user is over the cap; claim.lua removes them otherwise.
local now = tonumber(redis.call('TIME')[1])
local limit = now + tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local k, idx, who = KEYS[1], KEYS[2], ARGV[3]
local ceiling = now + tonumber(ARGV[4])

local added, offered, expired, top = 0, 0, 0, 0
local batch = {}
for i = 5, #ARGV, 2 do
  local exp = tonumber(ARGV[i])
  if exp > ceiling then
    exp = ceiling
  end
  if exp <= limit then
    expired = expired + 1
  else
    offered = offered + 1
    if exp > top then top = exp end
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
if added == 0 then
  return {0, offered, expired, 0}
end

local card = redis.call('ZCARD', k)
local capped = 0
if card > cap then
  redis.call('ZREMRANGEBYSCORE', k, 0, limit)
  redis.call('ZREMRANGEBYSCORE', k, -now, '(0')
  local spent = redis.call('ZCOUNT', k, '-inf', '(0')
  local usable = redis.call('ZCARD', k) - spent
  if usable > cap then
    capped = usable - cap
    redis.call('ZREMRANGEBYRANK', k, spent, spent + capped - 1)
  end
end
if added < offered or capped > 0 then
  -- Some offered credentials were known (maybe spent) or capped: read the real last one.
  local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  top = (#last > 0) and tonumber(last[2]) or 0
end

-- The key lives until its last credential expires (never shortened: tombstones must
-- outlive their use). The index holds the user with the expiry of their last usable
-- credential (GT: only raised here; claim.lua removes the user when none is left).
if card == added then
  redis.call('EXPIREAT', k, top + 1)
else
  redis.call('EXPIREAT', k, top + 1, 'GT')
end
if top > 0 and redis.call('ZADD', idx, 'GT', 'CH', top, who) == 1 then
  redis.call('EXPIREAT', idx, top + 1, 'NX')
  redis.call('EXPIREAT', idx, top + 1, 'GT')
end
return {added, offered - added, expired, capped}
