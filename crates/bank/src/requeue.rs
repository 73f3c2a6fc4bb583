//! Sending a campaign again to the recipients it dead-lettered (`wxpush campaign retry`).
//!
//! A recipient is settled `dead_lettered` only when the sender's retry budget
//! (`WXPUSH_SEND_RETRY_FOR`) was spent on failures that certainly delivered nothing, with the
//! credential given back; the settle script lists them, per shard, in the campaign's retryable
//! set (`{ns}:cr:{<app>.<shard>}:<campaign>`). This module walks those sets and resets such a
//! recipient's outcome (one script per recipient, in the user's slot, `lua/campaign_requeue.lua`)
//! so that a new send job for them is sent, never a recipient with any other outcome. The
//! caller publishes the jobs and then calls [`Bank::campaign_requeued`]: a run that dies
//! between the two leaves the recipients listed, and the next run publishes them again
//! (a duplicate job is recognised by the campaign marks, never sent twice).
//!
//! This module must not publish anything or build send jobs.

use wxpush_domain::{AppId, OpenId};

use crate::{Bank, BankError, SHARDS};

/// How many listed recipients one call reads from a shard's retryable set.
pub const REQUEUE_PAGE: usize = 1000;

impl Bank {
    /// How many recipients of `campaign` are listed as retryable, over every shard (one
    /// pipelined round trip).
    pub async fn campaign_retryable_count(
        &self,
        app: &AppId,
        campaign: &str,
    ) -> Result<u64, BankError> {
        let cmds = (0..SHARDS)
            .map(|shard| {
                let mut cmd = redis::cmd("SCARD");
                cmd.arg(self.keys.campaign_retryable(app, shard, campaign));
                cmd
            })
            .collect();
        let counts: Vec<u64> = self.read_batch(cmds).await?;
        Ok(counts.iter().sum())
    }

    /// Up to [`REQUEUE_PAGE`] recipients of `campaign` listed in `shard`'s retryable set, each
    /// made sendable again if its outcome is still `dead_lettered` (one pipelined round trip
    /// for the reads, one for the scripts). Returns the recipients to publish a job for;
    /// the others left the set. An empty answer with `more` false: the shard is done.
    pub async fn campaign_requeue_page(
        &self,
        app: &AppId,
        shard: u16,
        campaign: &str,
        cursor: u64,
    ) -> Result<RequeuePage, BankError> {
        let key = self.keys.campaign_retryable(app, shard, campaign);
        let (next, listed): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(&key)
            .arg(cursor)
            .arg("COUNT")
            .arg(REQUEUE_PAGE)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut users = Vec::with_capacity(listed.len());
        let mut dropped = 0u64;
        let mut pipe = redis::pipe();
        let mut asked = Vec::with_capacity(listed.len());
        for who in listed {
            let Ok(open_id) = OpenId::new(&who) else {
                // Not written by the settle script (which lists only valid openIds).
                pipe.cmd("SREM").arg(&key).arg(&who).ignore();
                dropped += 1;
                continue;
            };
            pipe.add_command(self.requeue_call(app, shard, campaign, &open_id, "reset"));
            asked.push(open_id);
        }
        let answers: Vec<i64> = if asked.is_empty() && dropped == 0 {
            Vec::new()
        } else {
            self.scripts
                .run_pipeline(&mut self.conn.clone(), &pipe)
                .await?
        };
        for (open_id, publish) in asked.into_iter().zip(answers) {
            if publish == 1 {
                users.push(open_id);
            } else {
                dropped += 1;
            }
        }
        Ok(RequeuePage {
            users,
            skipped: dropped,
            next: (next != 0).then_some(next),
        })
    }

    /// The jobs for `users` are published (confirmed by the broker): they leave `shard`'s
    /// retryable set, except one dead-lettered again meanwhile (its new job gave up already),
    /// which stays listed for the next run (one script per recipient, pipelined).
    pub async fn campaign_requeued(
        &self,
        app: &AppId,
        shard: u16,
        campaign: &str,
        users: &[OpenId],
    ) -> Result<(), BankError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for open_id in users {
            pipe.add_command(self.requeue_call(app, shard, campaign, open_id, "published"));
        }
        let _: Vec<i64> = self
            .scripts
            .run_pipeline(&mut self.conn.clone(), &pipe)
            .await?;
        Ok(())
    }

    /// One call of `lua/campaign_requeue.lua` for `open_id`: `mode` is `reset` or `published`.
    fn requeue_call(
        &self,
        app: &AppId,
        shard: u16,
        campaign: &str,
        open_id: &OpenId,
        mode: &str,
    ) -> redis::Cmd {
        self.scripts
            .campaign_requeue
            .evalsha()
            .arg(3)
            .arg(self.keys.marks(app, open_id))
            .arg(self.keys.campaign_counters(app, shard, campaign))
            .arg(self.keys.campaign_retryable(app, shard, campaign))
            .arg(campaign)
            .arg(open_id.as_str())
            .arg(mode)
            .clone()
    }
}

/// One page of [`Bank::campaign_requeue_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequeuePage {
    /// Recipients whose job is to be published now.
    pub users: Vec<OpenId>,
    /// Listed recipients whose outcome is no longer `dead_lettered` (sent by a copy of their
    /// job meanwhile, say): left alone and taken off the list.
    pub skipped: u64,
    /// The cursor of the shard's next page, if any.
    pub next: Option<u64>,
}
