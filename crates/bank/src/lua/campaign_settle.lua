-- Settle one campaign's message to one user (wxpush-bank, campaign_settle.lua;
-- campaign_marks.lua and consent_lib.lua come first). Every settle is fenced: it does nothing unless the caller
-- still holds the lease (its owner token is the campaign's 'C o'), so an attempt that stalled
-- past its lease and was taken over can never settle, release or give back anything.
-- KEYS[1] the user's campaign marks, KEYS[2] the campaign's outcome counters for this shard,
-- KEYS[3] the user's credential zset, KEYS[4] the user's index shard, KEYS[5] the user's
-- consent bucket, KEYS[6] the shard's consent totals, KEYS[7] the shard's template dictionary,
-- KEYS[8] the campaign's retryable users of this shard, KEYS[9] the shard's consent holders,
-- KEYS[10] the user's consent hash of the layout before buckets (all in one hash slot).
-- ARGV[1] campaignId, ARGV[2] owner, ARGV[3] action:
--   '=<outcome>' (e.g. '=sent', '=failed:40037'): the campaign is done for this user; with
--       ARGV[6] '1' the held credential goes back to the user (WeChat did not use it: a
--       formId or prepayId use back into the zset if it is still usable, a consent back into
--       the count); '=dead_lettered' also lists the user as retryable (`campaign retry`);
--   'R' release: this attempt ends without an outcome; ARGV[4] is 1 if a call may have
--       delivered it (in doubt), ARGV[5] is 1 to count it as 'retried'. A formId or prepayId use
--       stays held for the next attempt (in doubt or not). A consent stays held only in doubt;
--       without doubt it goes back to the user's count and the next attempt takes one afresh,
--       because a consent has no identity WeChat checks.
-- ARGV[7] openId, ARGV[8] safety margin (s), ARGV[9] the consent keys' TTL (s).
-- KEYS[11], KEYS[12], ARGV[10], ARGV[11]: the receipt's (see receipt_args()). KEYS[13] the
-- campaign's sends by time for this shard (see count()).
-- Returns 1 if applied, 0 if not (the lease is another attempt's, or C is settled already),
-- or 'migrate' (nothing changed) while the user's consents are in the layout before buckets.
local marks, counters, c, owner, action = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
receipt_args(11, 10)
rates = KEYS[13]
if redis.call('EXISTS', KEYS[10]) == 1 then
  return 'migrate'
end
local got = redis.call('HMGET', marks, c, c .. ' o', '~ p')
if got[1] ~= 'L' or got[2] ~= owner then
  return 0
end
marker = got[3]
local who, margin, ttl = ARGV[7], tonumber(ARGV[8]), ARGV[9]

-- The held credential back to the user (it was not used).
local function give_back()
  local held = redis.call('HGET', marks, c .. ' m')
  if not held then
    return
  end
  if string.sub(held, 1, 1) == 's' then
    local template = string.sub(held, 2)
    local num = c_number(KEYS[7], template, true)
    local counts = c_decode(redis.call('HGET', KEYS[5], who))
    local had = counts[num] or 0
    counts[num] = had + 1
    c_save(KEYS[5], who, counts)
    redis.call('HINCRBY', KEYS[6], template, 1)
    if had == 0 then
      redis.call('HINCRBY', KEYS[9], template, 1)
    end
    for k = 5, 9 do
      if k ~= 8 then
        redis.call('EXPIRE', KEYS[k], ttl)
      end
    end
  else
    -- As release.lua: only the tombstone of exactly that credential, only while usable.
    local exp = tonumber(redis.call('HGET', marks, c .. ' e') or '0')
    if exp > now + margin and tonumber(redis.call('ZSCORE', KEYS[3], held) or '0') == -exp then
      redis.call('ZADD', KEYS[3], exp, held)
      if redis.call('ZADD', KEYS[4], 'GT', 'CH', exp, who) == 1 then
        redis.call('EXPIREAT', KEYS[4], exp + 1, 'NX')
        redis.call('EXPIREAT', KEYS[4], exp + 1, 'GT')
      end
    end
  end
  redis.call('HDEL', marks, c .. ' m', c .. ' e')
end

if action == 'R' then
  if ARGV[4] == '0' and string.sub(redis.call('HGET', marks, c .. ' m') or '', 1, 1) == 's' then
    give_back()
  end
  redis.call('HSET', marks, c .. ' u', '0', c .. ' d', ARGV[4])
  redis.call('EXPIRE', marks, MARKS_TTL)
  if ARGV[5] == '1' then
    count(counters, 'retried')
  end
  return 1
end
if ARGV[6] == '1' then
  give_back()
end
local outcome = string.sub(action, 2)
-- (A single message, its id marked by a first byte over 127, is listed nowhere: `campaign
-- retry` is for campaigns.)
if outcome == 'dead_lettered' and string.byte(c, 1) < 128 then
  redis.call('SADD', KEYS[8], who)
  redis.call('EXPIRE', KEYS[8], MARKS_TTL)
end
finish(marks, counters, c, outcome)
return 1
