//! wxpush's end-to-end tests, one module per concern, in one test binary (one link instead of
//! one per file on a 2-core machine). Each drives the real Redis and RabbitMQ (or the clusters
//! `WXPUSH_REDIS_URL` and `WXPUSH_AMQP_URL` point at) and, most of them, the real `wxpush`
//! binary, through the test kit (`crates/testkit`). Run one module with
//! `cargo test --test e2e <module>::`.

mod apps;
mod bank;
mod campaign;
mod campaign_status;
mod cap;
mod cli;
mod cluster_script;
mod consent_buckets;
mod consent_caps;
mod control;
mod dashboard;
mod demo;
mod deploy_manifests;
mod docs;
mod events;
mod faults;
mod hostile;
mod ingest;
mod kinds;
mod memory;
mod personal;
mod quiet;
mod rate;
mod reach;
mod receipts;
mod record;
mod redis_cluster;
mod redis_durability;
mod schedule;
mod secrets;
mod send;
mod single;
mod subscribe;
mod subscribe_limits;
mod tls;
mod token_source;
mod token_trouble;
