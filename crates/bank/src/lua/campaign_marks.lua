-- Campaign marks: what the campaign claim and settle scripts share (wxpush-bank,
-- campaign_marks.lua). Not a script of its own: it is put in front of campaign_claim.lua,
-- campaign_claim_consent.lua and campaign_settle.lua when they are loaded (scripts.rs), so
-- every one of them reads and writes the marks the same way.
--
-- A user's marks (one hash, in the user's hash slot) hold, for each campaign C being sent to
-- or sent to recently (a space cannot occur in a campaign id, so fields cannot collide):
--   'C'    state: 'L' while an attempt holds a credential for it, the final outcome as
--          '=<outcome>@<day>' ('=sent@20432', '=failed:40037@20432'; day: Unix days, Redis time),
--          or 'Q' for a dead-lettered recipient queued again by `campaign retry` (claimed like
--          no mark)
--   'C o'  the lease's owner: the attempt's fencing token, checked by every later step
--   'C u'  lease end (ms, Redis time)
--   'C e'  expiry of the held credential (Unix s; 0 for a consent, which does not expire)
--   'C m'  the held credential's member
--   'C d'  '1' while a call with it may have delivered a message (set when a claim is
--          handed out: the caller calls right after), '0' once it is known not to have
--   '~ p'  the day of the oldest final outcome kept (with a space, so no campaign's state:
--          earlier versions named it '~p', which a campaign id may be; prune drops that field)
--   '~ f'  the frequency cap's count (contract 8.5; only for an app with a cap): the messages
--          that may have reached the user in the last 24 hours, '<unix s> <C>' pairs joined
--          by spaces (no campaign id or mark holds one), see cap_take()
-- Final outcomes are kept KEEP_DAYS days: long enough for any copy of a job to come back
-- (redeliveries, retries within WXPUSH_SEND_RETRY_FOR, parked jobs, a replayed dead letter of
-- the last week), then pruned by the next claim of a new campaign, so an active user holds
-- one field per campaign of the last KEEP_DAYS days, not one per campaign ever. The hash
-- expires MARKS_TTL seconds after its last write.

local KEEP_DAYS = 8
local MARKS_TTL = 777600 -- 9 days
local COUNTERS_TTL = 2592000 -- 30 days

local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local today = math.floor(now / 86400)

-- The campaign's sends by time of the user's shard ({ns}:cw:..., a hash in the counters'
-- slot), set by the script that settles sends (campaign_settle.lua): nil elsewhere.
local rates = nil
local RATES_TTL = 604800 -- 7 days

-- Counts an outcome in the campaign's counters of the user's shard. A campaign's sends are
-- also counted by the 10 s of Redis time they happened in ('r:<unix s / 10>' in `rates`, apart
-- from the counters, which status reads whole), for the dashboard's sends-per-second chart
-- (single messages, whose mark is not ASCII, are not).
local function count(counters, field)
  redis.call('HINCRBY', counters, field, 1)
  if rates and (field == 'sent' or field == 'sent_unconfirmed')
      and string.byte(counters, -1) < 128 then
    redis.call('HINCRBY', rates, 'r:' .. math.floor(now / 10), 1)
    redis.call('EXPIRE', rates, RATES_TTL)
  end
  redis.call('HSET', counters, 'last_at_ms', now_ms)
  redis.call('EXPIRE', counters, COUNTERS_TTL)
end

-- The final outcome in a state, or nil while in progress.
local function final_of(state)
  if not state or string.sub(state, 1, 1) ~= '=' then
    return nil
  end
  local outcome = string.match(state, '^=(.*)@%d+$')
  return outcome or string.sub(state, 2)
end

-- The prune marker '~ p' as this script last read or wrote it: its value, false when the
-- field is absent, nil when not read yet (finish() then sets it only if absent, with HSETNX).
-- Read in the same call as C's state, so a claim or settle spends no call of its own on it.
local marker = nil

-- Drops the final outcomes older than KEEP_DAYS (also those written before days were kept).
local function prune(marks)
  if marker == nil then
    marker = redis.call('HGET', marks, '~ p')
  end
  local p = tonumber(marker or '')
  if p then
    if p >= today - KEEP_DAYS then
      return
    end
  elseif redis.call('HLEN', marks) <= 8 then
    return
  end
  local all = redis.call('HGETALL', marks)
  local oldest = nil
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    if f == '~p' and tonumber(v) then
      -- The marker's old name (a number is no campaign's state).
      redis.call('HDEL', marks, f)
    elseif not string.find(f, ' ', 1, true) and string.sub(v, 1, 1) == '=' then
      local d = tonumber(string.match(v, '@(%d+)$') or '0')
      if d < today - KEEP_DAYS then
        redis.call('HDEL', marks, f)
      elseif not oldest or d < oldest then
        oldest = d
      end
    end
  end
  if oldest then
    marker = tostring(oldest)
    redis.call('HSET', marks, '~ p', marker)
  else
    marker = false
    redis.call('HDEL', marks, '~ p')
  end
end

-- Receipts (contract 8.3): set by receipt_args() when the job asks for one, so that finish()
-- writes the outcome's receipt into the shard's outbox in the same step that settles it.
local receipt = nil

-- Reads a script's receipt arguments: KEYS[k] the shard's receipt outbox (a zset, Redis time
-- in ms → receipt JSON), KEYS[k + 1] the shard's msgid map of the day (msgid → the receipt's
-- fields, for WeChat's delivery events); ARGV[a] the receipt's fields as JSON text without its
-- closing brace ('' when no receipt is wanted), ARGV[a + 1] the msgid WeChat gave ('' if none).
local function receipt_args(k, a)
  if ARGV[a] and ARGV[a] ~= '' then
    receipt = {outbox = KEYS[k], msgids = KEYS[k + 1], base = ARGV[a], msgid = ARGV[a + 1] or ''}
  end
end

-- The receipt of an outcome: `failed:<code>` is `failed` with that errcode, `dead_lettered`
-- (transient failures past the retry budget) `failed` without one, `sent` has errcode 0 and
-- the msgid WeChat gave; the others have no errcode (WeChat did not answer one).
local function write_receipt(outcome)
  local name, code, msgid = outcome, 'null', 'null'
  local failed = string.match(outcome, '^failed:(%-?%d+)$')
  if failed then
    name, code = 'failed', failed
  elseif outcome == 'dead_lettered' then
    name = 'failed'
  elseif outcome == 'sent' then
    code = '0'
    if string.match(receipt.msgid, '^%d+$') then
      msgid = receipt.msgid
    end
  end
  redis.call('ZADD', receipt.outbox, now_ms, receipt.base .. ',"outcome":"' .. name ..
    '","errcode":' .. code .. ',"msgid":' .. msgid .. ',"at":' .. now_ms .. '}')
  if msgid ~= 'null' then
    redis.call('HSET', receipt.msgids, msgid, receipt.base)
    redis.call('EXPIRE', receipt.msgids, 259200)
  end
end

-- The frequency cap (contract 8.5). A message counts from its claim: a claim of a new campaign
-- for the user adds '<now> C' to '~ f' (so two campaigns claiming at once are counted both,
-- in the order the user's slot runs them, never raced), and the final outcome takes it out
-- again unless the message may have reached the user (REACHED), so a user capped today is
-- one whom N messages may really have reached, or are being sent to now. Entries older than
-- CAP_WINDOW fall out at the next claim (a rolling 24 hours).
local CAP_WINDOW = 86400
local REACHED = {sent = true, sent_unconfirmed = true, unknown = true}

-- '~ f' as a list of its pairs still in the window (each '<s> <C>'), and whether C is in it.
local function cap_entries(marks, c)
  local kept, mine = {}, false
  for ts, m in string.gmatch(redis.call('HGET', marks, '~ f') or '', '(%d+) (%S+)') do
    if tonumber(ts) > now - CAP_WINDOW then
      kept[#kept + 1] = ts .. ' ' .. m
      if m == c then
        mine = true
      end
    end
  end
  return kept, mine
end

local function cap_save(marks, kept)
  if #kept == 0 then
    redis.call('HDEL', marks, '~ f')
  else
    redis.call('HSET', marks, '~ f', table.concat(kept, ' '))
  end
end

-- Takes C out of the count (its outcome cannot have reached the user).
local function cap_forget(marks, c)
  local v = redis.call('HGET', marks, '~ f')
  if not v or not string.find(v, ' ' .. c, 1, true) then
    return
  end
  local kept = {}
  for ts, m in string.gmatch(v, '(%d+) (%S+)') do
    if m ~= c then
      kept[#kept + 1] = ts .. ' ' .. m
    end
  end
  cap_save(marks, kept)
end

-- Records C's final outcome (the held credential forgotten) and counts it.
local function finish(marks, counters, c, outcome)
  local final = '=' .. outcome .. '@' .. today
  if marker == false then
    marker = tostring(today)
    redis.call('HSET', marks, c, final, '~ p', marker)
  else
    redis.call('HSET', marks, c, final)
    if marker == nil then
      redis.call('HSETNX', marks, '~ p', today)
    end
  end
  redis.call('HDEL', marks, c .. ' o', c .. ' u', c .. ' e', c .. ' m', c .. ' d')
  if not REACHED[outcome] then
    cap_forget(marks, c)
  end
  redis.call('EXPIRE', marks, MARKS_TTL)
  count(counters, outcome)
  if receipt then
    write_receipt(outcome)
  end
end

-- The lease part of a claim, common to both kinds. mode: 'take' (start, or resume a held
-- credential; another attempt's lease must have run out), 'renew' (the same attempt calls
-- again with its credential) or 'next' (the same attempt's credential was refused: another).
-- Returns a reply for the caller to return, or nil to claim a new credential; on a resume it
-- returns {'held', member, expiry, prior doubt, expired 0/1, taken over 0/1} and the lease is
-- the caller's (taken over: another attempt's lease ran out unreleased).
local function lease(marks, counters, c, owner, lease_ms, mode, margin)
  local got = redis.call('HMGET', marks, c, '~ p')
  local state = got[1]
  marker = got[2]
  local done = final_of(state)
  if done and mode ~= 'take' then
    -- Settled by another attempt, which took this one's lease over.
    return {'superseded'}
  end
  if done then
    count(counters, 'duplicate')
    return {'done', done}
  end
  if state ~= 'L' then
    if mode ~= 'take' then
      return {'superseded'}
    end
    prune(marks)
    return nil
  end
  local lease_now = redis.call('HMGET', marks, c .. ' o', c .. ' u', c .. ' m', c .. ' d', c .. ' e')
  local holder = lease_now[1]
  if mode ~= 'take' and holder ~= owner then
    return {'superseded'}
  end
  local till = tonumber(lease_now[2] or '0')
  if holder ~= owner and till > now_ms then
    return {'busy', till - now_ms}
  end
  local held = lease_now[3]
  if mode == 'next' or not held then
    return nil
  end
  local doubt = lease_now[4] or '1'
  local exp = tonumber(lease_now[5] or '0')
  local expired = (exp ~= 0 and exp <= now + margin) and '1' or '0'
  -- Taken over: another attempt's lease ran out without being released (its process stalled
  -- or died); a released lease has 'C u' 0.
  local taken = (holder ~= owner and till > 0) and '1' or '0'
  redis.call('HSET', marks, c .. ' o', owner, c .. ' u', now_ms + lease_ms, c .. ' d', '1')
  redis.call('EXPIRE', marks, MARKS_TTL)
  return {'held', held, tostring(exp), doubt, expired, taken}
end

-- Holds a new credential (member, expiry) for C under the caller's lease.
local function hold(marks, c, owner, lease_ms, member, exp)
  redis.call('HSET', marks, c, 'L', c .. ' o', owner, c .. ' u', now_ms + lease_ms,
    c .. ' e', exp, c .. ' m', member, c .. ' d', '1')
  redis.call('EXPIRE', marks, MARKS_TTL)
end

-- The cap's check at a claim that takes a new credential (mode 'take', after lease()): `cap`
-- is the app's messages per user per 24 hours for this message ('' or 0: it does not count).
-- C counted already (an earlier attempt's claim) passes; else a user at the cap is settled
-- 'capped' (nothing claimed, nothing spent) and true is returned; else C is counted.
local function cap_take(marks, counters, c, cap)
  cap = tonumber(cap or '') or 0
  if cap < 1 then
    return false
  end
  local kept, mine = cap_entries(marks, c)
  if not mine then
    if #kept >= cap then
      cap_save(marks, kept)
      finish(marks, counters, c, 'capped')
      return true
    end
    kept[#kept + 1] = now .. ' ' .. c
  end
  cap_save(marks, kept)
  return false
end
