-- Open a campaign's record for dispatch (wxpush-bank, record_open.lua; the prelude built by
-- record.rs comes first: F, the field names, and S, the states).
-- One script: a record is created with all its fields, its state and its lease in one step,
-- so no crash leaves a record without a state.
-- KEYS[1] the record (a part's, for a campaign sent in parts), KEYS[2] the campaign's record
-- (the same key for a campaign sent whole). ARGV[1] lease (ms), ARGV[2] the record's lifetime
-- (s), ARGV[3] app, ARGV[4] kind, ARGV[5] template id, ARGV[6] audience, ARGV[7] rejected
-- recipients, ARGV[8] the send-job template (JSON), ARGV[9] the part (0: sent whole),
-- ARGV[10] parts, ARGV[11] sendAt (Unix ms; 0: none), ARGV[12] the campaign id. KEYS[3] the
-- app's campaign index of the campaign's shard (`{ns}:ci:{<app>.<n>}`, the record's slot): the
-- id is added when its record is created, scheduled or not (entries older than a record lives
-- are dropped then), for the dashboard's list.
-- Returns {'dispatched'} | {'held', ms left} | {'new', token} | {'conflict'} |
--   {'resume', token, cursor, page or nil, page_next or nil} |
--   {'scheduled', ms left, 1 if the record was created by this call else 0} |
--   {'cancelled'} (cancelled while scheduled) | {'paused'} (due, paused while scheduled)
-- Scheduled (contract 8.5): a campaign whose sendAt (its record's, once it has one: the first
-- message's) is still ahead on Redis's clock gets a record in state S.scheduled, without a
-- lease and without started_at_ms, kept until its time and a record's lifetime after it; its
-- message is held back by the caller. Once due it is dispatched like a new campaign.
local key, main = KEYS[1], KEYS[2]
local lease, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local part = tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Indexed by when it was created, or by when it is due if that is later (a campaign
-- scheduled weeks ahead stays listed until a record's lifetime after its time).
local function index_campaign(due)
  redis.call('ZADD', KEYS[3], 'NX', math.max(now, due), ARGV[12])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl * 1000)
  if redis.call('TTL', KEYS[3]) < ttl + math.ceil(math.max(0, due - now) / 1000) then
    redis.call('EXPIRE', KEYS[3], ttl + math.ceil(math.max(0, due - now) / 1000))
  end
end
-- A campaign is sent whole or in parts, never both under one id.
local main_state, main_parts, main_kind, main_template, main_send_at, main_cancelled,
  main_paused = unpack(redis.call('HMGET', main, F.state, F.parts, F.kind, F.template_id,
    F.send_at_ms, F.cancelled_at_ms, F.paused_at_ms))
if (part > 0 and main_state and not main_parts) or (part == 0 and main_parts) then
  return {'conflict'}
end
-- The parts of one campaign agree on its template, kind, number of parts and sendAt.
if part > 0 and main_parts and (main_parts ~= ARGV[10] or main_kind ~= ARGV[4]
    or main_template ~= ARGV[5] or (main_send_at or '0') ~= ARGV[11]) then
  return {'conflict'}
end
-- When the campaign is due: the record's sendAt once it has one (the first message's). Kept
-- as the text it came as (a Lua number would be written back in floating-point form).
local due_text = ARGV[11]
if main_state then
  due_text = main_send_at or '0'
end
local due_at = tonumber(due_text) or 0
local ahead = due_at > now
-- A scheduled record lives until its time, then a record's lifetime.
local keep = ttl
if ahead then
  keep = ttl + math.ceil((due_at - now) / 1000)
end
if part > 0 then
  -- The campaign's record: created by its first part to arrive, each part counted once.
  if not main_state then
    main_state = ahead and S.scheduled or S.dispatching
    if not ahead then
      redis.call('HSETNX', main, F.started_at_ms, now)
    end
    redis.call('HSET', main, F.app, ARGV[3], F.kind, ARGV[4], F.template_id, ARGV[5],
      F.audience, ARGV[6], F.state, main_state, F.parts, ARGV[10], F.job, ARGV[8])
    if due_at > 0 then
      redis.call('HSET', main, F.send_at_ms, due_text)
    end
    redis.call('HSETNX', main, F.targeted, 0)
    redis.call('EXPIRE', main, keep)
    index_campaign(due_at)
  end
  -- One personalised part makes the campaign's jobs not rebuildable from its template.
  if ARGV[6] == 'recipients' then
    redis.call('HSET', main, F.audience, ARGV[6])
  end
  if redis.call('HSETNX', main, 'part ' .. part, 1) == 1 then
    redis.call('HINCRBY', main, F.parts_received, 1)
    redis.call('HINCRBY', main, F.rejected_recipients, tonumber(ARGV[7]))
  end
end
local state = redis.call('HGET', key, F.state)
if state == S.dispatched then
  return {'dispatched'}
end
if due_at > 0 and (not state or state == S.scheduled) then
  -- Cancelled or paused before anything was fanned out: nothing is, and no record is made.
  if main_state == S.scheduled and main_cancelled then
    return {'cancelled'}
  end
  if ahead then
    local created = 0
    if not state then
      redis.call('HSET', key, F.app, ARGV[3], F.kind, ARGV[4], F.template_id, ARGV[5],
        F.audience, ARGV[6], F.state, S.scheduled, F.targeted, 0,
        F.rejected_recipients, ARGV[7], F.cursor, '', F.job, ARGV[8], F.lease_until_ms, 0,
        F.send_at_ms, due_text)
      redis.call('EXPIRE', key, keep)
      created = 1
      if part == 0 then
        index_campaign(due_at)
      end
    end
    return {'scheduled', due_at - now, created}
  end
  if main_state == S.scheduled and main_paused then
    -- Held while paused, however long: the records live on (they would otherwise expire a
    -- record's lifetime after the time, and the campaign go out unpaused as a new one).
    redis.call('EXPIRE', main, ttl)
    if key ~= main then
      redis.call('EXPIRE', key, ttl)
    end
    return {'paused'}
  end
  -- Its time has come: the campaign's record shows it dispatching from now on.
  if main_state == S.scheduled and key ~= main then
    redis.call('HSETNX', main, F.started_at_ms, now)
    redis.call('HSET', main, F.state, S.dispatching)
  end
  if state == S.scheduled then
    local token = redis.call('HINCRBY', key, F.lease_owner, 1)
    redis.call('HSETNX', key, F.started_at_ms, now)
    redis.call('HSET', key, F.state, S.dispatching, F.lease_until_ms, now + lease)
    return {'new', token}
  end
end
if not state then
  -- New, or a record holding only a sender's stop flag (jobs published before the campaign),
  -- or one an older version left without a state: every field now. The token counter is never
  -- reset, so no two leases of one record share a token.
  local token = redis.call('HINCRBY', key, F.lease_owner, 1)
  redis.call('HSETNX', key, F.started_at_ms, now)
  redis.call('HSET', key, F.app, ARGV[3], F.kind, ARGV[4], F.template_id, ARGV[5],
    F.audience, ARGV[6], F.state, S.dispatching, F.targeted, 0,
    F.rejected_recipients, ARGV[7], F.cursor, '', F.job, ARGV[8], F.lease_until_ms, now + lease)
  if due_at > 0 then
    redis.call('HSET', key, F.send_at_ms, due_text)
  end
  redis.call('EXPIRE', key, ttl)
  if part == 0 then
    index_campaign(due_at)
  end
  return {'new', token}
end
local until_ms = tonumber(redis.call('HGET', key, F.lease_until_ms) or '0') or 0
if until_ms > now then
  return {'held', until_ms - now}
end
-- Free (released, or its owner died or stalled past it): taken over with a new token, which
-- every later write of the old owner no longer matches.
local token = redis.call('HINCRBY', key, F.lease_owner, 1)
redis.call('HSET', key, F.lease_until_ms, now + lease)
redis.call('HSETNX', key, F.job, ARGV[8])
local r = redis.call('HMGET', key, F.cursor, F.page, F.page_next)
return {'resume', token, r[1] or '', r[2] or false, r[3] or false}
