-- Make one dead-lettered recipient of a campaign sendable again, and take it off the list once
-- its job is published (wxpush-bank, campaign_requeue.lua; campaign_marks.lua comes first).
-- Used by `wxpush campaign retry`.
-- Only a recipient whose outcome is `dead_lettered` is reset: that outcome is settled only when
-- the retry budget was spent on failures that certainly delivered nothing, and its credential
-- was given back. The reset writes the state 'Q' (queued again), which a claim takes like no
-- mark at all; any other outcome (sent, sent_unconfirmed, unknown, failed, ...), a running
-- attempt, or no mark (pruned after KEEP_DAYS: nothing says any more what happened) is left
-- alone, and the recipient leaves the retryable set.
-- KEYS[1] the user's campaign marks, KEYS[2] the campaign's outcome counters for this shard,
-- KEYS[3] the campaign's retryable users of this shard (all in one hash slot).
-- ARGV[1] campaignId, ARGV[2] openId, ARGV[3] 'reset' or 'published'.
-- 'reset' returns 1 when a job for the recipient is to be published: the outcome was reset
-- now, or an earlier run reset it and may have died before publishing ('Q', still listed; a
-- second job is harmless, the marks make it a duplicate). Returns 0 otherwise.
-- 'published' (the job is confirmed by the broker) takes the recipient off the list, unless it
-- was dead-lettered again meanwhile (its new job already gave up): then it stays listed.
local marks, counters, retryable, c, who = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
local state = redis.call('HGET', marks, c)
if ARGV[3] == 'published' then
  if final_of(state) ~= 'dead_lettered' then
    redis.call('SREM', retryable, who)
  end
  return 0
end
if redis.call('SISMEMBER', retryable, who) == 0 then
  return 0
end
if final_of(state) == 'dead_lettered' then
  redis.call('HSET', marks, c, 'Q')
  redis.call('EXPIRE', marks, MARKS_TTL)
  redis.call('HINCRBY', counters, 'dead_lettered', -1)
  count(counters, 'requeued')
  return 1
end
if state == 'Q' then
  return 1
end
redis.call('SREM', retryable, who)
return 0
