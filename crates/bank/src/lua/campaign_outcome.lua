-- Record an outcome for one campaign's recipient without claiming anything (wxpush-bank,
-- campaign_outcome.lua; campaign_marks.lua comes first). Used for a recipient whose own data
-- the dispatcher refused ('invalid_data', contract 8.1): nothing is spent or called, but the
-- recipient is settled and counted once, as every other outcome is.
-- KEYS[1] the user's campaign marks, KEYS[2] the campaign's outcome counters for this shard
-- (one hash slot). ARGV[1] campaignId, ARGV[2] the outcome. KEYS[3], KEYS[4], ARGV[3],
-- ARGV[4]: the receipt's (see receipt_args()).
-- Returns {'done', earlier outcome} (already settled: counted 'duplicate') |
--   {'busy', ms} (another job's attempt holds it: look again later) | {'superseded'} (another
--   job's lease on it ran out: not this job's to settle) | {'recorded'}
local marks, counters, c = KEYS[1], KEYS[2], ARGV[1]
receipt_args(3, 3)
local got = redis.call('HMGET', marks, c, '~ p', c .. ' u')
marker = got[2]
local done = final_of(got[1])
if done then
  count(counters, 'duplicate')
  return {'done', done}
end
if got[1] == 'L' then
  -- Another job for this recipient (the same user in two parts, say) holds or held a lease,
  -- maybe a credential: that job settles it (or its copy resumes it, if its attempt died).
  -- While the lease runs this one looks again; once it has run out, this one steps aside
  -- ('superseded': the holder's copy, or `campaign retry`, owns the recipient), so it can
  -- never wait forever on a lease nobody will come back to (a stopped campaign's).
  local till = tonumber(got[3] or '0')
  if till > now_ms then
    return {'busy', till - now_ms}
  end
  return {'superseded'}
end
prune(marks)
finish(marks, counters, c, ARGV[2])
return {'recorded'}
