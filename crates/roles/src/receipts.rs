//! Receipts (contract 8.3): one per outcome of every single message, and of every recipient of
//! a campaign that asks (`"receipts": true`), published with confirms to `<ns>.receipts` with
//! the routing key `<message|campaign>.<outcome>`. At least once.
//!
//! **An outbox, not a best-effort publish.** The bank script that settles an outcome writes its
//! receipt into the user's shard's outbox (`{ns}:ob:{<app>.<shard>}`, a zset by settle time) in
//! the same step ([`wxpush_bank::Receipt`]), so a receipt exists exactly when its outcome does.
//! The [`Drainer`] publishes what an outbox holds and only then removes it:
//! - the process that settled an outcome asks at once ([`Outbox::settled`]): its receipt goes
//!   out within milliseconds;
//! - every [`SWEEP_EVERY`], one process of the fleet (a short lease in Redis) looks at every
//!   outbox of every app for receipts older than [`STALE_AFTER`] and publishes them: those of a
//!   process that died between the settle and the publish, or whose publish failed.
//!
//! A crash between the publish and the removal publishes the receipt again: consumers key on
//! (`messageId` or `campaignId`+`openId`, `outcome`). A receipt a consumer sees is settled in
//! Redis (it was written by the settle).
//!
//! This module owns the receipts' fields and their publishing. It must not decide outcomes
//! nor write the outbox but through the bank.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use wxpush_bank::Bank;
use wxpush_broker::{Publisher, Topology};
use wxpush_domain::{AppId, OpenId, SendJob};

use crate::metrics as m;
use crate::{RoleError, Shutdown};

/// How often the fleet looks at every outbox for receipts left behind.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How old a receipt must be for a sweep to publish it (younger ones are their settling
/// process's to publish).
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Receipts published per confirmation round.
const BATCH: usize = 200;
/// Outboxes drained at once (each a read, a confirmed publish and a removal).
const IN_FLIGHT: usize = 16;

/// The fields of `job`'s receipts (JSON without its closing brace, see
/// [`wxpush_bank::Receipt`]), if it asks for receipts.
pub fn fields(job: &SendJob, app: &AppId, open_id: &OpenId) -> Option<String> {
    if !job.receipts {
        return None;
    }
    let (message, campaign) = if job.single {
        (Value::String(job.campaign_id.clone()), Value::Null)
    } else {
        (Value::Null, Value::String(job.campaign_id.clone()))
    };
    let obj = serde_json::json!({
        "messageId": message,
        "campaignId": campaign,
        "appId": app.as_str(),
        "openId": open_id.as_str(),
        "templateId": job.template_id,
    });
    let mut text = obj.to_string();
    text.pop(); // the closing brace: the bank's script adds the outcome and closes it
    Some(text)
}

/// A receipt's routing key: `message.<outcome>` or `campaign.<outcome>`.
pub fn routing_key(receipt: &str) -> String {
    let head = wxpush_bank::ReceiptHead::of(receipt);
    let kind = if head.message_id.is_some() {
        "message"
    } else {
        "campaign"
    };
    format!("{kind}.{}", head.outcome)
}

/// Where a process says it settled an outcome with a receipt: its [`Drainer`] publishes that
/// shard's outbox. Cheap to clone; never blocks (a hint the drainer has no room for is left to
/// the sweep).
#[derive(Clone)]
pub struct Outbox {
    tx: tokio::sync::mpsc::Sender<(AppId, u16)>,
}

impl Outbox {
    /// A receipt of `open_id`'s (of `app`) was just written.
    pub fn settled(&self, app: &AppId, open_id: &OpenId) {
        let shard = wxpush_bank::keys::shard_of(open_id);
        let _ = self.tx.try_send((app.clone(), shard));
    }
}

/// Publishes the outboxes: what [`Outbox::settled`] names at once, and every outbox's stale
/// receipts on the fleet's sweep.
pub struct Drainer {
    bank: Bank,
    topology: Topology,
    apps: Vec<AppId>,
    rx: tokio::sync::mpsc::Receiver<(AppId, u16)>,
}

/// An outbox and the drainer that publishes it (run the drainer with [`Drainer::run`]).
pub fn outbox(bank: &Bank, topology: &Topology, apps: Vec<AppId>) -> (Outbox, Drainer) {
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    (
        Outbox { tx },
        Drainer {
            bank: bank.clone(),
            topology: topology.clone(),
            apps,
            rx,
        },
    )
}

impl Drainer {
    /// Publishes receipts with `publisher` until `shutdown` fires or the broker or Redis fails
    /// (the error ends the caller's session; what was not published stays in the outbox).
    pub async fn run(
        &mut self,
        publisher: &Publisher,
        shutdown: Shutdown,
    ) -> Result<(), RoleError> {
        let mut shutdown = shutdown;
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                hint = self.rx.recv() => {
                    let Some(first) = hint else { return Ok(()) };
                    // Every hint waiting now, each shard once.
                    let mut shards = HashSet::from([first]);
                    while let Ok(more) = self.rx.try_recv() {
                        shards.insert(more);
                    }
                    self.drain_all(publisher, shards).await?;
                }
                _ = sweep.tick() => self.sweep(publisher).await?,
            }
        }
    }

    /// Publishes one outbox until it is empty.
    pub async fn drain(
        &self,
        publisher: &Publisher,
        app: &AppId,
        shard: u16,
    ) -> Result<usize, RoleError> {
        let exchange = self.topology.receipts_exchange();
        let mut published = 0;
        loop {
            let receipts = self.bank.receipt_outbox_page(app, shard, BATCH).await?;
            if receipts.is_empty() {
                return Ok(published);
            }
            let keys: Vec<String> = receipts.iter().map(|r| routing_key(r)).collect();
            let items: Vec<(&str, &[u8])> = keys
                .iter()
                .zip(&receipts)
                .map(|(k, r)| (k.as_str(), r.as_bytes()))
                .collect();
            publisher.publish_all(&exchange, items).await?;
            self.bank
                .receipt_outbox_remove(app, shard, &receipts)
                .await?;
            published += receipts.len();
            metrics::counter!(m::RECEIPTS_PUBLISHED).increment(receipts.len() as u64);
            if receipts.len() < BATCH {
                return Ok(published);
            }
        }
    }

    /// Drains the outboxes of `shards`, [`IN_FLIGHT`] at a time; the receipts published.
    pub async fn drain_all(
        &self,
        publisher: &Publisher,
        shards: impl IntoIterator<Item = (AppId, u16)>,
    ) -> Result<usize, RoleError> {
        use futures_util::StreamExt;
        let mut drains = futures_util::stream::iter(shards)
            .map(|(app, shard)| async move { self.drain(publisher, &app, shard).await })
            .buffer_unordered(IN_FLIGHT);
        let mut published = 0;
        while let Some(n) = drains.next().await {
            published += n?;
        }
        Ok(published)
    }

    /// One process of the fleet at a time (a lease of [`SWEEP_EVERY`]): every outbox of every
    /// app holding a receipt older than [`STALE_AFTER`] is drained.
    async fn sweep(&self, publisher: &Publisher) -> Result<(), RoleError> {
        if !self.bank.take_receipt_sweep(SWEEP_EVERY).await? {
            return Ok(());
        }
        for app in &self.apps {
            let stale = self.bank.receipt_outboxes_stale(app, STALE_AFTER).await?;
            let shards = stale.len();
            let n = self
                .drain_all(publisher, stale.into_iter().map(|s| (app.clone(), s)))
                .await?;
            if n > 0 {
                tracing::info!(app = %app, shards, receipts = n, "published receipts left in outboxes");
            }
        }
        Ok(())
    }
}

/// Publishes receipts through a publisher of its own until `shutdown` fires, opening it again
/// after a broker or Redis failure (for a role without a sender session: `wxpush events`).
pub async fn publish_until(deps: crate::Deps, mut drainer: Drainer, shutdown: Shutdown) {
    let mut stop = shutdown.clone();
    loop {
        let ran = async {
            let ch = deps.broker.channel().await?;
            let declared = drainer.topology.declare_receipts(&ch).await;
            let _ = ch.close(200, "declared".into()).await;
            declared?;
            let publisher = Publisher::open(&deps.broker, drainer.topology.clone()).await?;
            let r = drainer.run(&publisher, shutdown.clone()).await;
            publisher.close().await;
            r
        };
        match ran.await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "receipts not published for now; trying again"),
        }
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// WeChat's `subscribe_msg_sent_event` ([`crate::events::SentEvents`]) as receipts: the msgid
/// is matched in the user's shard and a `delivered` or `delivery_failed` receipt written to its
/// outbox ([`Bank::delivery_receipt`]), then published. A message that asked for no receipt, or
/// a push WeChat retries (the msgid is forgotten once matched), writes nothing.
pub struct ReceiptSentEvents {
    pub bank: Bank,
    pub outbox: Outbox,
}

impl crate::events::SentEvents for ReceiptSentEvents {
    fn delivered<'a>(
        &'a self,
        app: &'a AppId,
        open_id: &'a OpenId,
        _create_time: i64,
        delivery: &'a wxpush_wechat::push_event::Delivery,
    ) -> futures_util::future::BoxFuture<'a, Result<(), wxpush_bank::BankError>> {
        Box::pin(async move {
            let delivered = delivery.error_code == 0;
            let outcome = if delivered {
                "delivered"
            } else {
                "delivery_failed"
            };
            let matched = match delivery.msg_id.trim().parse::<i64>() {
                Ok(msgid) => {
                    self.bank
                        .delivery_receipt(app, open_id, msgid, delivery.error_code)
                        .await?
                }
                Err(_) => false,
            };
            if matched {
                self.outbox.settled(app, open_id);
            }
            metrics::counter!(m::EVENT_DELIVERIES, "outcome" => outcome, "matched" => if matched { "yes" } else { "no" })
                .increment(1);
            tracing::debug!(app = %app, msg_id = %delivery.msg_id, outcome, matched, "subscribe message delivery reported by WeChat");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_close_into_the_contracts_receipt() {
        let job: SendJob = serde_json::from_value(serde_json::json!({
            "campaignId": "order-1001-shipped", "openId": "oA", "templateId": "TPL_ORDER_SHIPPED",
            "single": true, "receipts": true, "kind": "subscribe"}))
        .unwrap();
        let app = AppId::new("wx1234567890abcdef").unwrap();
        let who = OpenId::new("oA").unwrap();
        let f = fields(&job, &app, &who).unwrap();
        let full =
            format!(r#"{f},"outcome":"sent","errcode":0,"msgid":2209153400,"at":1764950400000}}"#);
        let v: Value = serde_json::from_str(&full).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"messageId": "order-1001-shipped", "campaignId": null,
                "appId": "wx1234567890abcdef", "openId": "oA", "templateId": "TPL_ORDER_SHIPPED",
                "outcome": "sent", "errcode": 0, "msgid": 2209153400_i64, "at": 1764950400000_i64})
        );
        assert_eq!(routing_key(&full), "message.sent");
        let mut campaign = job.clone();
        campaign.single = false;
        let f = fields(&campaign, &app, &who).unwrap();
        assert_eq!(
            routing_key(&format!(r#"{f},"outcome":"failed"}}"#)),
            "campaign.failed"
        );
        campaign.receipts = false;
        assert_eq!(fields(&campaign, &app, &who), None);
    }
}
