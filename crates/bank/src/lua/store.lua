-- Store credentials for one user (wxpush-bank, store.lua).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard (same hash slot).
-- ARGV[1] safety margin (s), ARGV[2] per-user cap, ARGV[3] openId (index member),
-- ARGV[4] longest lifetime (s): no expiry is kept later than Redis's now + that (a client's
-- clock, or the ingest host's, is never trusted further), ARGV[5..] pairs of (expiry in Unix
-- seconds, encoded member).
-- Scores: expiry > 0 for a usable credential; -expiry for a spent one, kept as a tombstone
-- until it expires so that a re-sent old upload cannot store it again.
-- Returns {added, already known (stored or spent), expired, dropped by the cap}.
-- Kept lean (ingest calls it once per user per batch): expired entries are removed here only
-- when the user is over the cap; claim.lua removes them otherwise. Measured costs (Redis 7.0,
-- redis-benchmark, 10 formIds): each redis.call is ~1.5 us, and a Lua number passed to one is
-- formatted back into a string (~0.3 us each), so the usual case (every expiry usable and
-- under the ceiling) hands ARGV to ZADD as it came, and expiries are passed on as strings.
local now = tonumber(redis.call('TIME')[1])
local limit = now + tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local k, idx, who = KEYS[1], KEYS[2], ARGV[3]
local ceiling = now + tonumber(ARGV[4])

-- One pass: what is offered, what is expired, the last expiry, and whether ARGV can go to ZADD
-- as it is (nothing expired, nothing past the ceiling).
local offered, expired, top, top_s = 0, 0, 0, '0'
local clean = true
for i = 5, #ARGV, 2 do
  local exp = tonumber(ARGV[i])
  if exp > ceiling then
    exp = ceiling
    clean = false
  end
  if exp <= limit then
    expired = expired + 1
    clean = false
  else
    offered = offered + 1
    if exp > top then
      top, top_s = exp, ARGV[i]
    end
  end
end
if top == ceiling then
  top_s = tostring(ceiling)
end

-- ZADD at most 200 pairs a call (Lua's unpack has a stack limit).
local added = 0
if clean then
  for s = 5, #ARGV, 400 do
    added = added + redis.call('ZADD', k, 'NX', unpack(ARGV, s, math.min(s + 399, #ARGV)))
  end
else
  local batch = {}
  for i = 5, #ARGV, 2 do
    -- Judged after the clamp, as in the first pass (a margin as long as the lifetime makes
    -- every clamped expiry an expired one).
    local exp = math.min(tonumber(ARGV[i]), ceiling)
    if exp > limit then
      batch[#batch + 1] = (exp == ceiling) and ceiling or ARGV[i]
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
  top, top_s = 0, '0'
  if #last > 0 then
    top, top_s = tonumber(last[2]), last[2]
  end
end

-- The key lives until its last credential expires (never shortened: tombstones must
-- outlive their use; a credential is refused from `limit` on, well before its expiry). The
-- index holds the user with the expiry of their last usable credential (GT: only raised here;
-- claim.lua removes the user when none is left), and lives as long as its last user.
if card == added then
  redis.call('EXPIREAT', k, top_s)
else
  redis.call('EXPIREAT', k, top_s, 'GT')
end
if top > 0 and redis.call('ZADD', idx, 'GT', 'CH', top_s, who) == 1 then
  -- -1: no expiry yet (a new index shard).
  if redis.call('EXPIRETIME', idx) < top then
    redis.call('EXPIREAT', idx, top_s)
  end
end
return {added, offered - added, expired, capped}
