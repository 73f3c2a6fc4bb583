//! wxpush's client for the WeChat server API (`api.weixin.qq.com`).
//!
//! This crate owns the HTTP conversation with WeChat: fetching access tokens
//! ([`Client::fetch_token`], [`Client::fetch_stable_token`]), sending template messages
//! ([`Client::send_template`]) and subscribe messages ([`Client::send_subscribe`]), and the one
//! table that classifies every outcome of a send ([`Outcome`], [`classify_errcode`]).
//!
//! It must not decide policy: no retries, no token caching or sharing, no rate limiting, no
//! Redis or RabbitMQ. Callers act on the [`Outcome`] class. It must never let an app secret or an
//! access token reach an error message, a `Debug` print or a log line.
//!
//! Build one [`Client`] per process and share it (it holds the keep-alive pool). The base URL
//! comes from the caller, normally `wxpush_domain::Config::wechat_api_base`, which is read from
//! `WXPUSH_WECHAT_API_BASE` (default [`DEFAULT_API_BASE`]); tests point it at the fake WeChat
//! (`wxpush-fake-wechat`) over plain http.

mod client;
mod config;
mod message;
mod outcome;
pub mod push_crypto;
pub mod push_event;
mod redact;
mod token;
#[cfg(test)]
mod wire_tests;

pub use client::{
    BuildError, Client, MAX_ANSWER_BYTES, MAX_TOKEN_LIFETIME_SECS, MIN_TOKEN_LIFETIME_SECS,
};
pub use config::{
    ClientConfig, DEFAULT_API_BASE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TOKEN_TIMEOUT,
};
pub use message::{Lang, MiniprogramState, SubscribeMessage, TemplateMessage, UnknownValue};
pub use outcome::{classify_errcode, Outcome};
pub use token::{AccessToken, TokenError};
