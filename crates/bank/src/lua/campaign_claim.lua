-- Claim a credential for one campaign's message to one user (wxpush-bank, campaign_claim.lua;
-- campaign_marks.lua comes first: the marks, the lease, pruning, counting).
-- KEYS[1] the user's credential zset, KEYS[2] the user's index shard, KEYS[3] the user's
-- campaign marks (a hash), KEYS[4] the campaign's outcome counters for this shard (all four in
-- one hash slot, so outcomes are counted in the same step that settles them).
-- ARGV[1] safety margin (s), ARGV[2] openId, ARGV[3] campaignId, ARGV[4] owner (this attempt's
-- fencing token), ARGV[5] lease (ms), ARGV[6] mode: 'take', 'renew' or 'next' (see lease()).
-- KEYS[5], KEYS[6], ARGV[7], ARGV[8]: the receipt's (see receipt_args()).
-- ARGV[9] the frequency cap this message is held to ('' or 0: none; see cap_take()).
-- Counts: 'duplicate' when the campaign is already settled for the user, 'no_credential' when
-- the user has none, 'capped' when the user is at the cap. Returns {'done', final outcome} |
--   {'busy', ms left} | {'superseded'} | {'none'} | {'capped'} | {'fresh', member, expiry} |
--   {'held', member, expiry, prior doubt, expired, taken over} (see lease())
local k, idx, marks, counters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
receipt_args(5, 7)
local margin, who, c, owner = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local reply = lease(marks, counters, c, owner, tonumber(ARGV[5]), ARGV[6], margin)
if reply then
  return reply
end
if ARGV[6] == 'take' and cap_take(marks, counters, c, ARGV[9]) then
  return {'capped'}
end

-- A new credential: the soonest-expiring usable one, as claim.lua takes it. (With 'next', the
-- held one was refused by WeChat and stays a tombstone; a refused prepayId use takes its
-- other uses with it, since WeChat refuses them for the same reason: used up or invalid.)
if ARGV[6] == 'next' then
  local held = redis.call('HGET', marks, c .. ' m')
  if held and string.sub(held, 1, 1) == 'p' then
    local id = string.sub(held, 3)
    for u = 1, 3 do
      local sibling = 'p' .. u .. id
      local score = tonumber(redis.call('ZSCORE', k, sibling) or '0')
      if score > 0 then
        redis.call('ZADD', k, -score, sibling)
      end
    end
  end
end
local limit = now + margin
local first = redis.call('ZRANGE', k, '(0', '+inf', 'BYSCORE', 'LIMIT', 0, 2, 'WITHSCORES')
if #first > 0 and tonumber(first[2]) <= limit then
  -- Expired credentials come first: removed, with the tombstones of expired ones, and the
  -- first usable one read again. (Only then: a claim with nothing expired costs one read.
  -- store.lua removes both too when the user is over the cap, which bounds what is left.)
  redis.call('ZREMRANGEBYSCORE', k, 0, limit)
  redis.call('ZREMRANGEBYSCORE', k, -now, '(0')
  first = redis.call('ZRANGE', k, '(0', '+inf', 'BYSCORE', 'LIMIT', 0, 2, 'WITHSCORES')
end
if #first == 0 then
  redis.call('ZREM', idx, who)
  finish(marks, counters, c, 'no_credential')
  return {'none'}
end
-- The tombstone's score is the expiry negated as text (a Lua number would be formatted).
redis.call('ZADD', k, '-' .. first[2], first[1])
if #first < 3 then
  redis.call('ZREM', idx, who)
end
hold(marks, c, owner, tonumber(ARGV[5]), first[1], first[2])
return {'fresh', first[1], first[2]}
