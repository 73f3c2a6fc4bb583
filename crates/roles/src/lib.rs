//! The wxpush roles: long-running components that move work between RabbitMQ, the bank and
//! (later) WeChat. Each role has the same shape: `run(deps, settings, shutdown)` declares
//! the topology it needs, consumes until [`Shutdown`] fires, settles what it holds, and
//! returns its counters.
//!
//! - [`ingest`]: credential uploads → the bank.
//! - [`dispatch`]: campaigns → one send job per recipient.
//! - [`send`]: send jobs → WeChat, one credential each; [`outcomes`] records what happened.
//! - [`deps`]: connecting to Redis and RabbitMQ with one readable error line.
//! - [`shutdown`]: the stop signal shared by a process's roles.
//!
//! This crate must not parse command lines or read the environment (the CLI's job).

pub mod deps;
pub mod dispatch;
pub mod ingest;
pub mod outcomes;
pub mod send;
pub mod shutdown;

pub use deps::{Deps, DepsError};
pub use shutdown::{Shutdown, ShutdownTrigger};

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
