//! The wxpush roles: long-running components that move work between RabbitMQ, the bank and
//! (later) WeChat. Each role has the same shape: `run(deps, settings, shutdown)` declares
//! the topology it needs, consumes until [`Shutdown`] fires, settles what it holds, and
//! returns its counters.
//!
//! - [`ingest`]: credential uploads → the bank.
//! - [`dispatch`]: campaigns → one send job per recipient.
//! - [`send`]: send jobs → WeChat, one credential each; [`outcomes`] records what happened.
//! - [`events`]: WeChat's message push (consent and delivery events) → the bank.
//! - [`redelivery`]: the limit on how often one message may come back unsettled.
//! - [`deps`]: connecting to Redis and RabbitMQ with one readable error line; [`durability`]:
//!   what Redis's own settings let it lose, checked at start.
//! - [`shutdown`]: the stop signal shared by a process's roles.
//! - [`supervise`]: sessions restarted after a RabbitMQ or Redis outage; [`health`] is what
//!   `/readyz` reports; [`metrics`] names what `/metrics` shows.
//!
//! This crate must not parse command lines or read the environment (the CLI's job).

mod dead_letters;
pub mod deps;
pub mod dispatch;
pub mod durability;
pub mod events;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod outcomes;
pub mod receipts;
pub mod redelivery;
pub mod send;
pub mod shutdown;
pub mod supervise;

pub use deps::{Deps, DepsError};
pub use health::{Health, Readiness};
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use supervise::{supervise, Session};

/// Why a role stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(transparent)]
    Broker(#[from] wxpush_broker::BrokerError),
    #[error(transparent)]
    Bank(#[from] wxpush_bank::BankError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Fleet(#[from] wxpush_fleet::FleetError),
}

impl RoleError {
    /// True when a new session may succeed once the dependencies answer again: any RabbitMQ
    /// failure (connection or channel lost, consumer cancelled, publish not confirmed), and
    /// Redis being unreachable. A Redis or script error that would recur is not.
    pub fn is_recoverable(&self) -> bool {
        match self {
            RoleError::Broker(e) => !e.is_permanent(),
            RoleError::Amqp(_) => true,
            RoleError::Bank(e) => e.is_transient(),
            RoleError::Redis(e) => wxpush_redis::is_transient(e),
            RoleError::Fleet(e) => e.is_transient(),
        }
    }
}
