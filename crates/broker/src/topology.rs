//! The names and declarations of every exchange and queue of one namespace.
//!
//! Public (contract section 3): `<ns>.formids` and `<ns>.campaigns`, durable topic exchanges
//! that upstream systems publish to. Internal: the durable queue each role consumes, and
//! `<ns>.dead` (a durable direct exchange) with one dead-letter queue per source,
//! `<ns>.dead.<source>`. Send jobs wait for a retry in `<ns>.send.delay.<N>s` queues, one per
//! delay tier ([`DELAY_TIERS`]): a queue-wide TTL, then dead-lettered back to `<ns>.send`.
//! (Per-message TTLs in one queue would expire only at its head, holding short delays behind
//! long ones; one queue per tier keeps every queue first-in, first-out.) Scheduled campaigns
//! (`sendAt`, contract 8.5) wait the same way in `<ns>.dispatch.delay.<N>s`, the same tiers,
//! dead-lettered back to `<ns>.dispatch` ([`park_tier`] chooses the tier).
//!
//! An install serving several apps ([`Topology::with_apps`]) gives every app a send lane of its
//! own, `<ns>.send.app.<appId>` with its own `<ns>.send.app.<appId>.delay.<N>s` tiers, so one
//! app's backlog, waiting for that app's rate permits, never queues another app's jobs behind
//! it. The default app's jobs keep `<ns>.send`, so a single-app install (and the default app of
//! any install) has exactly the topology above. Senders consume `<ns>.send` and every lane.
//! Declaring is idempotent; every role declares what it needs on start.
//!
//! Every queue is a **quorum** queue by default (`WXPUSH_QUEUE_TYPE`, [`QueueType`]): replicated
//! over the broker cluster's nodes, so losing a node loses no message. The work queues (ingest,
//! dispatch, send and every lane) carry a delivery limit ([`DELIVERY_LIMIT`]) as the backstop
//! for a message that crashes its consumer every time: past it RabbitMQ dead-letters the
//! message to the source's dead-letter queue (never drops it). Messages move between queues
//! (a delay tier back to its send queue, a work queue past its limit to its dead-letter queue)
//! with at-least-once dead-lettering (`x-dead-letter-strategy: at-least-once`, which needs
//! `x-overflow: reject-publish`). A queue that exists with another type (an install from before
//! quorum queues) is not redeclared: the role stops with one line saying what to do
//! ([`BrokerError::QueueType`]). With `classic`, every queue is declared exactly as before.
//! This module must not consume or publish.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use wxpush_domain::{AppId, Apps, Config, Namespace, QueueType};

use crate::BrokerError;

/// Deliveries of one message a quorum work queue allows before RabbitMQ dead-letters it: a
/// backstop well above the roles' own limit (`REDELIVERY_LIMIT`, 20 deliveries counted in
/// Redis, past which a role dead-letters the message itself with its reason). Quorum queues
/// up to RabbitMQ 4.2 count every return (a `nack` or `reject` with requeue, a consumer's
/// channel closing with the message unacknowledged), so hand-backs at shutdown and in outages
/// count too; 4.3 counts only a `reject` with requeue (docs/operations.md#quorum-queues).
pub const DELIVERY_LIMIT: i64 = 50;

/// Delay tiers for send retries, in seconds; a wanted delay is rounded up to a tier.
pub const DELAY_TIERS: [u32; 8] = [1, 2, 5, 15, 60, 300, 900, 3600];

/// The tier (seconds) that serves a wanted delay: the smallest tier not shorter than it
/// (the longest tier for anything longer).
pub fn delay_tier(wanted: std::time::Duration) -> u32 {
    DELAY_TIERS
        .iter()
        .copied()
        .find(|t| u64::from(*t) * 1000 >= wanted.as_millis() as u64)
        .unwrap_or(DELAY_TIERS[DELAY_TIERS.len() - 1])
}

/// The tier (seconds) a scheduled campaign due in `left` is parked in: the longest tier not
/// longer than `left`, so that it never comes back late (it comes back early and is parked
/// again in a shorter tier); `None` under the shortest tier (then the dispatcher waits the
/// rest itself, under a second).
pub fn park_tier(left: std::time::Duration) -> Option<u32> {
    DELAY_TIERS
        .iter()
        .rev()
        .copied()
        .find(|t| u128::from(*t) * 1000 <= left.as_millis())
}

/// The delay queue of one tier for a send queue: `<queue>.delay.<N>s`.
fn delay_of(send_queue: &str, tier_secs: u32) -> String {
    format!("{send_queue}.delay.{tier_secs}s")
}

/// Every source of dead letters (queue `<ns>.dead.<source>`).
pub const DEAD_LETTER_SOURCES: [&str; 4] = ["ingest", "dispatch", "send", "messages"];

/// What a role needs declared before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Ingest,
    Dispatch,
    Send,
}

/// Most messages a dead-letter queue holds (also [`DEAD_LETTER_MAX_BYTES`]); past it, RabbitMQ
/// refuses new dead letters (`x-overflow: reject-publish`: the publish is nacked, the message
/// stays with the role that could not use it) instead of dropping the oldest.
pub const DEAD_LETTER_MAX_MESSAGES: i64 = 1_000_000;
/// Most bytes a dead-letter queue holds (1 GiB).
pub const DEAD_LETTER_MAX_BYTES: i64 = 1024 * 1024 * 1024;

/// Names of one namespace's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: Namespace,
    /// The default app, then every app with a send lane of its own (empty: one app).
    lanes: Vec<AppId>,
    /// Dead-letter queues declared by an older wxpush, without a length limit, are kept as
    /// they are ([`Topology::declare`]).
    keep_dead_letter_queues: bool,
    /// With [`Topology::keep_dead_letter_queues`]: the dead-letter queues that were not there
    /// (a source newer than the older wxpush), declared with this version's limits.
    missing_dead_letter_queues: Vec<String>,
    queue_type: QueueType,
}

impl Topology {
    /// The topology of a single-app install: one send queue.
    pub fn new(ns: Namespace) -> Self {
        Self {
            ns,
            lanes: Vec::new(),
            keep_dead_letter_queues: false,
            missing_dead_letter_queues: Vec::new(),
            queue_type: QueueType::default(),
        }
    }

    /// The topology a configuration describes: its namespace, apps and queue type.
    pub fn for_config(c: &Config) -> Self {
        Self::with_apps(c.namespace.clone(), &c.apps).with_queue_type(c.queue_type)
    }

    /// The same names, declared as queues of type `t`.
    pub fn with_queue_type(self, t: QueueType) -> Self {
        Self {
            queue_type: t,
            ..self
        }
    }

    /// The type of the queues this topology declares.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// The topology of an install serving `apps`: with two or more, each app has a send lane.
    pub fn with_apps(ns: Namespace, apps: &Apps) -> Self {
        let lanes = if apps.len() > 1 {
            apps.iter().map(|a| a.id.clone()).collect()
        } else {
            Vec::new()
        };
        Self {
            ns,
            lanes,
            keep_dead_letter_queues: false,
            missing_dead_letter_queues: Vec::new(),
            queue_type: QueueType::default(),
        }
    }

    /// The send queue of `app`'s jobs: its lane, or `<ns>.send` for the default app (and in a
    /// single-app install).
    pub fn send_queue_for(&self, app: &AppId) -> String {
        match self.lane_of(app) {
            Some(app) => self.lane(app),
            None => self.send_queue(),
        }
    }

    /// The delay queue of one tier for `app`'s jobs (dead-lettered back to its send queue).
    pub fn delay_queue_for(&self, app: &AppId, tier_secs: u32) -> String {
        delay_of(&self.send_queue_for(app), tier_secs)
    }

    /// Every queue senders consume: `<ns>.send`, then each app's lane. The default app's lane
    /// is consumed too, for jobs queued there while another app was the default.
    pub fn send_queues(&self) -> Vec<String> {
        let mut out = vec![self.send_queue()];
        out.extend(self.lanes.iter().map(|a| self.lane(a)));
        out
    }

    /// The name of `app`'s lane.
    fn lane(&self, app: &AppId) -> String {
        format!("{}.send.app.{app}", self.ns)
    }

    /// `app` when it has a lane for its jobs (not the default app, not a single-app install).
    fn lane_of<'a>(&self, app: &'a AppId) -> Option<&'a AppId> {
        (self.lanes.len() > 1 && *app != self.lanes[0] && self.lanes.contains(app)).then_some(app)
    }

    /// Exchange upstream services publish credential uploads to.
    pub fn uploads_exchange(&self) -> String {
        format!("{}.formids", self.ns)
    }

    /// Exchange the marketing system publishes campaigns to.
    pub fn campaigns_exchange(&self) -> String {
        format!("{}.campaigns", self.ns)
    }

    /// Queue the ingest role consumes (bound to the uploads exchange with `#`).
    pub fn ingest_queue(&self) -> String {
        format!("{}.ingest", self.ns)
    }

    /// Where single messages are published (contract 8.2; topic: bound with `#`).
    pub fn messages_exchange(&self) -> String {
        format!("{}.messages", self.ns)
    }

    /// The senders' queue of single messages (bound to [`Topology::messages_exchange`]).
    pub fn messages_queue(&self) -> String {
        format!("{}.messages.send", self.ns)
    }

    /// Where receipts are published (contract 8.3; topic, routing key
    /// `<message|campaign>.<outcome>`; consumers bind queues of their own).
    pub fn receipts_exchange(&self) -> String {
        format!("{}.receipts", self.ns)
    }

    /// Queue the dispatch role consumes (bound to the campaigns exchange with `#`).
    pub fn dispatch_queue(&self) -> String {
        format!("{}.dispatch", self.ns)
    }

    /// Where a scheduled campaign's message waits one tier (seconds) before it comes back to
    /// [`Topology::dispatch_queue`]: `<ns>.dispatch.delay.<N>s`.
    pub fn dispatch_delay_queue(&self, tier_secs: u32) -> String {
        delay_of(&self.dispatch_queue(), tier_secs)
    }

    /// Queue the send role consumes; the dispatcher publishes jobs to it (default exchange).
    pub fn send_queue(&self) -> String {
        format!("{}.send", self.ns)
    }

    /// Delay queue of one tier (seconds).
    pub fn delay_queue(&self, tier_secs: u32) -> String {
        delay_of(&self.send_queue(), tier_secs)
    }

    /// Exchange dead letters are published to, routed by their source.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// Dead-letter queue of one source (`ingest`, ...).
    pub fn dead_queue(&self, source: &str) -> String {
        format!("{}.dead.{}", self.ns, source)
    }

    /// Every exchange this version declares (for tests and clean-up tools).
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![
            self.uploads_exchange(),
            self.campaigns_exchange(),
            self.dead_exchange(),
            self.messages_exchange(),
            self.receipts_exchange(),
        ]
    }

    /// Every queue this version declares (for tests and clean-up tools).
    pub fn all_queues(&self) -> Vec<String> {
        let mut q = vec![
            self.ingest_queue(),
            self.dead_queue("ingest"),
            self.send_queue(),
            self.dead_queue("send"),
            self.dispatch_queue(),
            self.dead_queue("dispatch"),
            self.messages_queue(),
            self.dead_queue("messages"),
        ];
        q.extend(DELAY_TIERS.iter().map(|t| self.delay_queue(*t)));
        q.extend(DELAY_TIERS.iter().map(|t| self.dispatch_delay_queue(*t)));
        for lane in self.send_queues().into_iter().skip(1) {
            q.extend(DELAY_TIERS.iter().map(|t| delay_of(&lane, *t)));
            q.push(lane);
        }
        q
    }

    /// Declares what a role needs, on a channel of its own. A dead-letter queue that an older
    /// wxpush declared without a length limit makes RabbitMQ refuse the new declaration
    /// (`PRECONDITION_FAILED`, inequivalent arguments): it is then kept as it is, with one
    /// warning saying how to add the limit, rather than failing the role on every start.
    pub async fn declare(&self, broker: &crate::Broker, needs: Needs) -> Result<(), BrokerError> {
        match self.declare_once(broker, needs).await {
            Err(e) if !self.keep_dead_letter_queues && self.is_unlimited_dead_letter_queue(&e) => {
                tracing::warn!(
                    error = %e,
                    "a dead-letter queue of this namespace was declared without a length limit \
                     (an older wxpush): kept as it is; to limit it, set a RabbitMQ policy \
                     (max-length, max-length-bytes, overflow reject-publish) on {}.dead.*, or \
                     delete it once empty so that it is declared again (docs/operations.md)",
                    self.ns
                );
                let mut missing = Vec::new();
                for source in DEAD_LETTER_SOURCES {
                    if !self.queue_exists(broker, &self.dead_queue(source)).await? {
                        missing.push(source.to_owned());
                    }
                }
                let kept = Self {
                    keep_dead_letter_queues: true,
                    missing_dead_letter_queues: missing,
                    ..self.clone()
                };
                kept.declare_once(broker, needs)
                    .await
                    .map_err(|e| self.mismatch(e))
            }
            r => r.map_err(|e| self.mismatch(e)),
        }
    }

    /// Whether queue `name` exists (a passive declare, on a channel of its own: RabbitMQ closes
    /// the channel of one that fails).
    async fn queue_exists(&self, broker: &crate::Broker, name: &str) -> Result<bool, BrokerError> {
        let ch = broker.channel().await?;
        let found = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = ch.close(200, "checked".into()).await;
        match found {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("NOT_FOUND") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `e`, or, when RabbitMQ refused a queue of this namespace for arguments other than this
    /// version gives it, [`BrokerError::QueueType`]: the likely cause is the other queue type
    /// (RabbitMQ names the first argument that differs, which need not be `x-queue-type`: a
    /// classic work queue has no dead-letter exchange, a quorum one has).
    fn mismatch(&self, e: BrokerError) -> BrokerError {
        let text = e.to_string();
        let Some(arg) = inequivalent_arg(&text) else {
            return e;
        };
        if !text.contains(&format!("'{}.", self.ns)) {
            return e;
        }
        BrokerError::QueueType {
            namespace: self.ns.to_string(),
            argument: arg.to_owned(),
            wanted: self.queue_type.as_str(),
            other: self.queue_type.other().as_str(),
        }
    }

    /// Whether `e` is RabbitMQ refusing this namespace's dead-letter queue's length limit (an
    /// older wxpush's classic queue without one; with quorum queues wanted, the work queues,
    /// declared first, are refused before it).
    fn is_unlimited_dead_letter_queue(&self, e: &BrokerError) -> bool {
        let text = e.to_string();
        text.contains("PRECONDITION_FAILED")
            && text.contains(&format!("'{}.dead.", self.ns))
            && text.contains("x-max-length")
    }

    async fn declare_once(&self, broker: &crate::Broker, needs: Needs) -> Result<(), BrokerError> {
        let ch = broker.channel().await?;
        let declared = crate::within("declaring the topology", async {
            match needs {
                Needs::Ingest => self.declare_ingest(&ch).await,
                Needs::Dispatch => self.declare_dispatch(&ch).await,
                Needs::Send => self.declare_send(&ch).await,
            }
        })
        .await;
        let _ = ch.close(200, "declared".into()).await;
        declared
    }

    /// Declares what the ingest role needs: the uploads exchange, its queue, dead letters.
    pub async fn declare_ingest(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.uploads_exchange(), ExchangeKind::Topic)
            .await?;
        // Its dead-letter exchange first: a quorum work queue dead-letters to it.
        self.declare_exchange(ch, &self.dead_exchange(), ExchangeKind::Direct)
            .await?;
        self.declare_work_queue(ch, &self.ingest_queue(), "ingest")
            .await?;
        ch.queue_bind(
            self.ingest_queue().into(),
            self.uploads_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        self.declare_dead_letters(ch, "ingest").await
    }

    /// Declares what the send role needs: every send queue with its delay tiers, dead letters.
    pub async fn declare_send(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.dead_exchange(), ExchangeKind::Direct)
            .await?;
        for lane in self.send_queues() {
            self.declare_send_lane(ch, &lane).await?;
        }
        self.declare_dead_letters(ch, "send").await?;
        // Single messages (8.2), consumed by the senders directly, and their receipts (8.3).
        self.declare_exchange(ch, &self.messages_exchange(), ExchangeKind::Topic)
            .await?;
        self.declare_work_queue(ch, &self.messages_queue(), "messages")
            .await?;
        ch.queue_bind(
            self.messages_queue().into(),
            self.messages_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        self.declare_dead_letters(ch, "messages").await?;
        self.declare_exchange(ch, &self.receipts_exchange(), ExchangeKind::Topic)
            .await
    }

    /// One send queue (`<ns>.send` or a lane) and its delay tiers, `<queue>.delay.<N>s`.
    async fn declare_send_lane(&self, ch: &Channel, queue: &str) -> Result<(), BrokerError> {
        self.declare_work_queue(ch, queue, "send").await?;
        self.declare_delay_tiers(ch, queue).await
    }

    /// The delay tiers of a work queue, `<queue>.delay.<N>s`: durable, of the topology's type,
    /// each a queue-wide TTL of its tier, then dead-lettered (at least once) back to `queue`.
    async fn declare_delay_tiers(&self, ch: &Channel, queue: &str) -> Result<(), BrokerError> {
        for tier in DELAY_TIERS {
            let mut args = self.type_args();
            self.moves_at_least_once(&mut args);
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::from(tier) * 1000),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(queue.into()),
            );
            ch.queue_declare(
                delay_of(queue, tier).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        }
        Ok(())
    }

    /// Declares the receipts exchange (a role publishing receipts without the send topology:
    /// `wxpush events`).
    pub async fn declare_receipts(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.receipts_exchange(), ExchangeKind::Topic)
            .await
    }

    /// Declares the campaigns exchange (what the marketing system needs).
    pub async fn declare_campaigns(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.campaigns_exchange(), ExchangeKind::Topic)
            .await
    }

    /// Declares what the dispatch role needs: the campaigns exchange and its queue, dead
    /// letters, and the send topology its jobs go to (so none is published to a missing queue).
    pub async fn declare_dispatch(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_campaigns(ch).await?;
        self.declare_exchange(ch, &self.dead_exchange(), ExchangeKind::Direct)
            .await?;
        self.declare_work_queue(ch, &self.dispatch_queue(), "dispatch")
            .await?;
        ch.queue_bind(
            self.dispatch_queue().into(),
            self.campaigns_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        self.declare_dead_letters(ch, "dispatch").await?;
        // Where scheduled campaigns wait for their time (contract 8.5).
        self.declare_delay_tiers(ch, &self.dispatch_queue()).await?;
        self.declare_send(ch).await
    }

    /// Declares the dead-letter exchange and the dead-letter queue of `source`, bounded
    /// ([`DEAD_LETTER_MAX_MESSAGES`], [`DEAD_LETTER_MAX_BYTES`]) and refusing past the bound.
    pub async fn declare_dead_letters(
        &self,
        ch: &Channel,
        source: &str,
    ) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.dead_exchange(), ExchangeKind::Direct)
            .await?;
        let q = self.dead_queue(source);
        let mut args = self.type_args();
        let keep = self.keep_dead_letter_queues
            && !self.missing_dead_letter_queues.iter().any(|m| m == source);
        if !keep {
            args.insert(
                "x-max-length".into(),
                AMQPValue::LongLongInt(DEAD_LETTER_MAX_MESSAGES),
            );
            args.insert(
                "x-max-length-bytes".into(),
                AMQPValue::LongLongInt(DEAD_LETTER_MAX_BYTES),
            );
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
        }
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                // An older queue without the limit: only checked to be there.
                passive: keep,
                ..Default::default()
            },
            args,
        )
        .await?;
        ch.queue_bind(
            q.into(),
            self.dead_exchange().into(),
            source.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    async fn declare_exchange(
        &self,
        ch: &Channel,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), BrokerError> {
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    /// A queue a role consumes; quorum: with the delivery limit, past which RabbitMQ
    /// dead-letters a message to `<ns>.dead.<source>` (at least once).
    async fn declare_work_queue(
        &self,
        ch: &Channel,
        name: &str,
        source: &str,
    ) -> Result<(), BrokerError> {
        let mut args = self.type_args();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.dead_exchange().into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(source.into()),
            );
            self.moves_at_least_once(&mut args);
        }
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
        Ok(())
    }

    /// The arguments that make a queue of this topology's type (none for classic: declared
    /// as before quorum queues were the default).
    pub fn type_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        args
    }

    /// A quorum queue's dead-lettering made at-least-once (RabbitMQ keeps a message until the
    /// target queue confirms it; it needs `reject-publish` overflow). Classic: unchanged.
    fn moves_at_least_once(&self, args: &mut FieldTable) {
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
        }
    }
}

/// The argument RabbitMQ names when it refuses a declaration of an existing queue with other
/// arguments (`PRECONDITION_FAILED - inequivalent arg 'x-…' for queue …`).
fn inequivalent_arg(text: &str) -> Option<&str> {
    if !text.contains("PRECONDITION_FAILED") {
        return None;
    }
    let rest = &text[text.find("inequivalent arg '")? + "inequivalent arg '".len()..];
    Some(&rest[..rest.find('\'')?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn several_apps_have_a_lane_each_and_the_default_keeps_the_send_queue() {
        let ns = Namespace::new("n").unwrap();
        let (a, b) = (AppId::new("wxa").unwrap(), AppId::new("wxb").unwrap());
        let one = Topology::with_apps(ns.clone(), &Apps::single(a.clone(), None, 5));
        assert_eq!(one.send_queues(), ["n.send"]);
        assert_eq!(one.send_queue_for(&a), "n.send");
        assert_eq!(one.delay_queue_for(&a, 5), "n.send.delay.5s");
        assert_eq!(one.all_queues(), Topology::new(ns.clone()).all_queues());

        let text = "[[apps]]\nappid = \"wxa\"\ndefault = true\n[[apps]]\nappid = \"wxb\"\n";
        let apps = Apps::build(Default::default(), Some(("f", text)), 5).unwrap();
        let two = Topology::with_apps(ns, &apps);
        assert_eq!(
            two.send_queues(),
            ["n.send", "n.send.app.wxa", "n.send.app.wxb"]
        );
        assert_eq!(two.send_queue_for(&a), "n.send");
        assert_eq!(two.send_queue_for(&b), "n.send.app.wxb");
        assert_eq!(two.delay_queue_for(&a, 60), "n.send.delay.60s");
        assert_eq!(two.delay_queue_for(&b, 60), "n.send.app.wxb.delay.60s");
        let all = two.all_queues();
        for q in two.send_queues() {
            assert!(all.contains(&q), "{q}");
            for t in DELAY_TIERS {
                assert!(all.contains(&format!("{q}.delay.{t}s")), "{q} {t}");
            }
        }
        // An app the install does not serve has no lane of its own.
        let c = AppId::new("wxc").unwrap();
        assert_eq!(two.send_queue_for(&c), "n.send");
    }

    #[test]
    fn a_scheduled_campaign_parks_in_the_longest_tier_not_past_its_time() {
        let ms = Duration::from_millis;
        assert_eq!(park_tier(Duration::ZERO), None);
        assert_eq!(park_tier(ms(999)), None, "under a second: waited out");
        assert_eq!(park_tier(ms(1000)), Some(1));
        assert_eq!(park_tier(ms(1999)), Some(1));
        assert_eq!(park_tier(ms(4999)), Some(2));
        assert_eq!(park_tier(ms(5000)), Some(5));
        assert_eq!(park_tier(ms(59_999)), Some(15));
        assert_eq!(park_tier(Duration::from_secs(86_400)), Some(3600));
        // Never past the time: each hop is at most what is left, and the hops reach it.
        for left in [1_000u64, 1_500, 4_321, 17_000, 61_000, 3_599_999, 7_200_001] {
            let (mut at, mut hops) = (left, 0);
            while let Some(t) = park_tier(ms(at)) {
                assert!(
                    u64::from(t) * 1000 <= at,
                    "{left}: a {t} s hop with {at} ms left"
                );
                at -= u64::from(t) * 1000;
                hops += 1;
            }
            assert!(at < 1000, "{left}: {at} ms left");
            assert!(hops <= 20, "{left}: {hops} hops");
        }
        let ns = Namespace::new("n").unwrap();
        let t = Topology::new(ns);
        assert_eq!(t.dispatch_delay_queue(5), "n.dispatch.delay.5s");
        assert!(t
            .all_queues()
            .contains(&"n.dispatch.delay.3600s".to_owned()));
    }

    #[test]
    fn delays_round_up_to_a_tier() {
        assert_eq!(delay_tier(Duration::ZERO), 1);
        assert_eq!(delay_tier(Duration::from_millis(1001)), 2);
        assert_eq!(delay_tier(Duration::from_secs(60)), 60);
        assert_eq!(delay_tier(Duration::from_secs(86_400)), 3600);
    }
}
