-- A write of the dispatcher owning a campaign's record (wxpush-bank, record_write.lua; the
-- prelude built by record.rs comes first: F, the field names, and S, the states).
-- Fenced: done only if ARGV[1] is the record's current lease owner (no other dispatcher took
-- the lease over since) and the campaign is still being dispatched; otherwise nothing is
-- written and 0 is returned, and the caller stops.
-- KEYS[1] the record (a part's, for a campaign sent in parts), KEYS[2] the campaign's record
-- (the same key for a campaign sent whole: then the part steps below do nothing more).
-- ARGV[1] owner token, ARGV[2] lease (ms), ARGV[3] operation:
--   'renew'                         the lease runs ARGV[2] from now;
--   'page', ARGV[4] users, ARGV[5] next  a page written ahead (and the lease renewed);
--   'checkpoint', ARGV[4] published, ARGV[5] cursor  the page counted, the checkpoint moved
--                                   past it, the page written ahead forgotten (lease renewed);
--   'finish', ARGV[4] lifetime (s)  dispatched, the lease ended;
--   'release'                       the lease ended now (the campaign goes on later).
-- Returns 1 when written, 0 when refused.
local key, main, owner, lease, op = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local is_part = key ~= main
local found = redis.call('HMGET', key, F.lease_owner, F.state)
if found[1] ~= owner or found[2] ~= S.dispatching then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if op == 'renew' then
  redis.call('HSET', key, F.lease_until_ms, now + lease)
elseif op == 'page' then
  redis.call('HSET', key, F.page, ARGV[4], F.page_next, ARGV[5], F.lease_until_ms, now + lease)
elseif op == 'checkpoint' then
  redis.call('HINCRBY', key, F.targeted, tonumber(ARGV[4]))
  if is_part then
    redis.call('HINCRBY', main, F.targeted, tonumber(ARGV[4]))
  end
  redis.call('HSET', key, F.cursor, ARGV[5], F.lease_until_ms, now + lease)
  redis.call('HDEL', key, F.page, F.page_next)
elseif op == 'finish' then
  redis.call('HSET', key, F.state, S.dispatched, F.dispatched_at_ms, now, F.lease_until_ms, 0)
  redis.call('EXPIRE', key, tonumber(ARGV[4]))
  if is_part then
    -- The campaign is dispatched once every part is.
    local done = redis.call('HINCRBY', main, F.parts_dispatched, 1)
    local parts = tonumber(redis.call('HGET', main, F.parts) or '0') or 0
    if done >= parts then
      redis.call('HSET', main, F.state, S.dispatched, F.dispatched_at_ms, now)
    end
    redis.call('EXPIRE', main, tonumber(ARGV[4]))
  end
elseif op == 'release' then
  redis.call('HSET', key, F.lease_until_ms, 0)
else
  return redis.error_reply('record_write: unknown operation ' .. op)
end
return 1
