//! What the fake remembers for tests to assert on: one compact record per WeChat API request,
//! and the counters summarised in [`Stats`].
//!
//! This module owns the record and stats shapes (camelCase JSON for `GET /fake/requests` and
//! `GET /fake/stats`). It must not decide answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which WeChat API a request called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    /// `GET /cgi-bin/token`
    Token,
    /// `POST /cgi-bin/stable_token`
    StableToken,
    /// `POST /cgi-bin/message/wxopen/template/send`
    TemplateSend,
    /// `POST /cgi-bin/message/subscribe/send`
    SubscribeSend,
}

/// One request to the WeChat API and the fake's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// When it was answered (before any injected latency), ms since the Unix epoch.
    pub at_ms: u64,
    pub endpoint: Endpoint,
    /// The app: the `appid` asked for (token calls) or the owner of the access token (sends);
    /// `None` when the token was unknown.
    pub app_id: Option<String>,
    pub touser: Option<String>,
    pub template_id: Option<String>,
    pub form_id: Option<String>,
    /// The `data` of a send, exactly as it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The errcode answered; `None` for an injected HTTP 500.
    pub errcode: Option<i64>,
    pub http_status: u16,
    /// A `stable_token` request with `force_refresh: true`.
    #[serde(default)]
    pub forced: bool,
}

/// Counters since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// WeChat API requests answered (all endpoints).
    pub requests: u64,
    /// Requests kept in the record list, and requests not kept because it was full.
    pub recorded: usize,
    pub dropped_records: u64,
    /// Sends (both kinds) answered errcode 0.
    pub sends_accepted: u64,
    /// Accepted sends per openId.
    pub sends_by_open_id: BTreeMap<String, u64>,
    /// Answers per errcode (0 included; HTTP 500s are under `http500s`).
    pub answers_by_errcode: BTreeMap<i64, u64>,
    pub http500s: u64,
    /// Tokens issued by `/cgi-bin/token`, per app.
    pub token_fetches: BTreeMap<String, u64>,
    /// Successful `/cgi-bin/stable_token` answers, per app.
    pub stable_token_fetches: BTreeMap<String, u64>,
    /// `/cgi-bin/stable_token` calls with `force_refresh: true` answered with a token (those
    /// within 30 s of the last forced refresh included: WeChat counts them, but does not
    /// refresh), per app.
    #[serde(default)]
    pub stable_token_forced: BTreeMap<String, u64>,
    /// Uses of each formId / prepay_id used at least once.
    pub form_id_uses: BTreeMap<String, u32>,
    /// Subscribe messages' ids handed out so far.
    pub msgids_issued: u64,
}
