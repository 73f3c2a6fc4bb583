-- Reads the shared access token and, when it is due for refresh (or missing) and nobody is
-- refreshing it, takes the refresh lock, in one atomic step: taking the lock is the
-- double-check (no other process can store a fresh token between the read and the lock).
-- KEYS[1] token hash, KEYS[2] refresh lock, KEYS[3] remembered refresh failure (a streak)
-- ARGV[1] owner id, ARGV[2] lease (ms)
-- Returns {status, now_ms, token, fetched_ms, due_ms, expires_ms, error, error_pttl_ms}
--   status 'fresh' | 'busy' (someone refreshes) | 'error' (recent failure) | 'locked' (ours);
--   token is '' when there is none; error_pttl_ms: how long the failure is remembered still.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 't', 'f', 'd', 'e')
local tok = h[1] or ''
local f, d, e = tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0
local function reply(status, err, pttl)
  return {status, now, tok, f, d, e, err or '', pttl or 0}
end
if tok ~= '' and now < d then
  return reply('fresh')
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return reply('busy')
end
-- A failure remembered until some time ("<until ms>|<streak>|<failure>", token_release.lua):
-- past that time, only its streak is kept, and a refresh may go ahead.
local err = redis.call('GET', KEYS[3])
if err then
  local until_ms, failure = string.match(err, '^(%d+)|%d+|(.*)$')
  if until_ms and tonumber(until_ms) > now then
    return reply('error', failure, tonumber(until_ms) - now)
  end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return reply('locked')
