//! What the fake remembers for tests to assert on: one compact record per WeChat API request,
//! and the counters summarised in [`Stats`].
//!
//! This module owns the record and stats shapes (camelCase JSON for `GET /fake/requests` and
//! `GET /fake/stats`). It must not decide answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::LostReplyMode;

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

/// One request to the WeChat API, what WeChat's side did with it, and what the caller got.
///
/// Two questions, two sets of fields: *did the message reach the user?* is `delivered` (WeChat's
/// side, whatever the caller got); *what did the caller get?* is `httpStatus`, `errcode` and
/// `lostReply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// When WeChat's side judged the request (credential spent, token issued, quota counted),
    /// ms since the Unix epoch: taken under the fake's lock, so records are in `atMs` order,
    /// and the clock of the fake's own quotas (45009, 45011). Rate checks use this one. For a
    /// send it is the arrival (plus at most a lock wait); for a token call it is the arrival
    /// plus `tokenLatencyMs`. Before any injected latency.
    pub at_ms: u64,
    /// When the request had arrived (read whole, before the fake's lock and any delay), ms
    /// since the Unix epoch.
    #[serde(default)]
    pub received_at_ms: u64,
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
    /// WeChat accepted the send: the message reached the user (formId / prepay_id use or
    /// consent spent, counted in `sendsAccepted` and `sendsByOpenId`), whatever the caller
    /// got. Always `false` for token calls.
    #[serde(default)]
    pub delivered: bool,
    /// The msgid a delivered subscribe send was given (also when its reply was lost).
    #[serde(default)]
    pub msgid: Option<i64>,
    /// The errcode the caller was answered; `None` when it got no WeChat answer (an injected
    /// HTTP 500, an outage, a lost reply).
    pub errcode: Option<i64>,
    /// The HTTP status answered; `None` when the connection was reset without an answer
    /// (`lostReply: "reset"`). For `lostReply: "hang"` it is the status sent after
    /// `lostReplyHangMs`, which a caller with a shorter timeout never saw.
    pub http_status: Option<u16>,
    /// Set when the send was delivered and its reply lost, and how (`"status"`, `"reset"`,
    /// `"hang"`, see [`crate::LostReplyMode`]).
    #[serde(default)]
    pub lost_reply: Option<LostReplyMode>,
    /// Answered by the outage (`outageStatus`): nothing judged, nothing spent.
    #[serde(default)]
    pub outage: bool,
    /// The injected delay between judging and answering, in ms (`latencyMs` plus its jitter,
    /// or `lostReplyHangMs` for a hang).
    #[serde(default)]
    pub latency_ms: u64,
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
    /// Sends (both kinds) WeChat accepted, i.e. delivered to the user, whatever the caller got
    /// (a delivered send whose reply was lost counts).
    pub sends_accepted: u64,
    /// Delivered sends per openId (as `sendsAccepted`): more than one for a user means the user
    /// got more than one message.
    pub sends_by_open_id: BTreeMap<String, u64>,
    /// WeChat answers per errcode the callers received (0 included). A delivered send whose
    /// reply was lost is not here (see `lostReplies`), nor are HTTP 500s (`http500s`) and
    /// outage answers (`outageAnswers`).
    pub answers_by_errcode: BTreeMap<i64, u64>,
    /// Injected HTTP 500s (`http500Probability`).
    pub http500s: u64,
    /// Delivered sends whose reply was lost (`lostReplyProbability`, any mode).
    #[serde(default)]
    pub lost_replies: u64,
    /// Requests answered by the outage (`outageStatus`).
    #[serde(default)]
    pub outage_answers: u64,
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
