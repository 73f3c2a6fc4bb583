//! The names and declarations of every exchange and queue of one namespace.
//!
//! Public (contract section 3): `<ns>.formids` and `<ns>.campaigns`, durable topic exchanges
//! that upstream systems publish to. Internal: the durable queue each role consumes, and
//! `<ns>.dead` (a durable direct exchange) with one dead-letter queue per source,
//! `<ns>.dead.<source>`. Declaring is idempotent; every role declares what it needs on start.
//! This module must not consume or publish.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};
use wxpush_domain::Namespace;

use crate::BrokerError;

/// Names of one namespace's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: Namespace,
}

impl Topology {
    pub fn new(ns: Namespace) -> Self {
        Self { ns }
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
        ]
    }

    /// Every queue this version declares (for tests and clean-up tools).
    pub fn all_queues(&self) -> Vec<String> {
        vec![self.ingest_queue(), self.dead_queue("ingest")]
    }

    /// Declares what the ingest role needs: the uploads exchange, its queue, dead letters.
    pub async fn declare_ingest(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.uploads_exchange(), ExchangeKind::Topic)
            .await?;
        self.declare_queue(ch, &self.ingest_queue()).await?;
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

    /// Declares the campaigns exchange (the dispatcher's queue comes with that role).
    pub async fn declare_campaigns(&self, ch: &Channel) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.campaigns_exchange(), ExchangeKind::Topic)
            .await
    }

    /// Declares the dead-letter exchange and the dead-letter queue of `source`.
    pub async fn declare_dead_letters(
        &self,
        ch: &Channel,
        source: &str,
    ) -> Result<(), BrokerError> {
        self.declare_exchange(ch, &self.dead_exchange(), ExchangeKind::Direct)
            .await?;
        let q = self.dead_queue(source);
        self.declare_queue(ch, &q).await?;
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

    async fn declare_queue(&self, ch: &Channel, name: &str) -> Result<(), BrokerError> {
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }
}
