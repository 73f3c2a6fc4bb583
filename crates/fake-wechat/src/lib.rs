//! A fake WeChat server API for wxpush's tests and benchmarks, modelling the rules wxpush
//! depends on (see `/work/shared/WECHAT.md`) so that tests against it prove something.
//!
//! This crate owns the fake's server, state and control API. It must not be used by production
//! code paths, must not reach the network beyond its own listener and the message push URLs a
//! control call names (`POST /fake/push`, [`push_event`]), and must not log per request
//! above debug level (it has to keep up with ≥ 10,000 sends/s on 2 cores).
//!
//! # Running it
//!
//! In-process (tests): [`FakeWeChat::start`] binds `127.0.0.1:0` and returns a [`FakeHandle`]
//! (`handle.base_url()` is `http://127.0.0.1:PORT`; it derefs to [`FakeWeChat`] for setup and
//! assertions; dropping it or `handle.shutdown().await` stops the server gracefully).
//!
//! As a process (`wxpush mock-wechat --listen 127.0.0.1:PORT`): build the state with
//! [`FakeWeChat::new`] from a [`FakeConfig`] (which deserialises from camelCase JSON, see
//! below), bind a `tokio::net::TcpListener`, and run [`serve`] (or [`serve_with_shutdown`], or
//! [`serve_with_control`] to set a control token). [`FakeWeChat::router`] gives the
//! `axum::Router` to embed elsewhere.
//!
//! # WeChat rules modelled
//!
//! * Apps: appid → secret from [`FakeConfig::apps`] (the first app is the default for control
//!   calls without `appId`). `/cgi-bin/token` and `/cgi-bin/stable_token` answer `40002` for a
//!   grant_type other than `client_credential`, `40013` for an unknown appid and `40125` for a
//!   wrong secret (the code WECHAT.md lists for a bad secret; the client also accepts `40001`).
//! * Tokens live [`FakeConfig::token_lifetime_ms`] (default 7200 s). A new `/cgi-bin/token`
//!   token, whoever fetched it, leaves the previous one valid for
//!   [`FakeConfig::token_grace_ms`] (default 5 min); after that it answers `40001` ("not
//!   latest"), as WeChat does.
//!   `stable_token` answers the same token while it has more than
//!   `min(grace, lifetime / 2)` left, whoever asks, and is untouched by `/cgi-bin/token`
//!   fetches; `force_refresh: true` issues a new one at once (the old one works for the grace
//!   period), at most 20 calls a day (China's day, UTC+8; the 21st answers `45009`), and a call
//!   within 30 s of the last forced refresh counts but does not refresh (WeChat's rules).
//!   Unknown token → `40001`, expired → `42001`, missing → `41001`; a revoked one
//!   ([`FakeWeChat::revoke_tokens`]) → `40001`.
//! * formIds (1 use) and prepay_ids (3 uses) are issued to one openId of one app with an expiry
//!   (default 7 days). A template send with a form_id that is unknown, another user's or app's,
//!   or expired → `41028`; used up → `41029`.
//! * An openId the fake never issued anything to nor registered (per app) → `40003`. A
//!   template_id not configured for the app → `40037`. If the app has a page list, a page
//!   whose path (before `?`) is not on it → `41030`. Unparseable body → `47001`.
//! * Subscribe: `miniprogram_state` / `lang` outside WeChat's values → `47003`; each data value
//!   must satisfy its key type's limit (see the table in the `limits` module, e.g. `thing` ≤ 20
//!   characters, `phrase` ≤ 5 Chinese characters) or → `47003` with errmsg
//!   `argument invalid! data.phrase3.value invalid`; then one consent for (app, openId,
//!   template) is spent, none left → `43101`. Success answers `{"errcode":0,"errmsg":"ok",
//!   "msgid":N}`; a template send answers `{"errcode":0,"errmsg":"ok"}`.
//! * Check order for a send: outage (`outageStatus`), injected HTTP 500, injected `-1`, access
//!   token, per-second quota (`45009`), minute quota (`45011`), body, openId, template, page,
//!   then the credential (template) or data and consent (subscribe). Nothing is spent unless
//!   WeChat's decision is `0`; then the message counts as delivered, whether or not the caller
//!   gets the answer (`lostReplyProbability`).
//!
//! # Fault knobs ([`Faults`], at start or at runtime)
//!
//! Set in [`FakeConfig::faults`] (JSON `"faults": {..}`) or at run time with `PUT /fake/faults`
//! (a missing field is its default, so a `PUT` replaces every knob) or
//! [`FakeWeChat::update_faults`]. All are off by default. Each models something real senders
//! meet; the JSON names are stable.
//!
//! | knob (JSON) | default | what it does | what it models, and why |
//! |---|---|---|---|
//! | `busyProbability` | `0` | a send answers `{"errcode":-1}`, nothing spent | WeChat "system busy": retry with backoff |
//! | `http500Probability` | `0` | a send answers HTTP 500 (text body), nothing spent | WeChat failing before it acted |
//! | `latencyMs` | `0` | every WeChat API answer waits this long *after* the request was judged | a slow reply: a client that times out leaves the credential spent, as a real timeout may |
//! | `latencyJitterMs` | `0` | adds a random `[0, jitter]` ms (seeded RNG) to `latencyMs`, per answer | varied reply times for soaks |
//! | `sendQuotaPerSec` | `null` | sends per app beyond this many in a second answer `45009` | WeChat's quota answer |
//! | `minuteQuota` | `null` | sends per app beyond this many in a minute answer `45011` | WeChat's minute quota |
//! | `refuseSubscribeData` | `false` | every subscribe send answers `47003` | WeChat's content checks beyond the documented limits |
//! | `lostReplyProbability` | `0` | a send WeChat *accepted* is delivered (credential or consent spent, counted to the user, msgid issued), then its reply is lost as `lostReplyMode` says; refused sends and token calls are answered as usual | a reply lost after WeChat acted: the case where a resend gives the user a second message, or answers `41029` for a spent formId |
//! | `lostReplyMode` | `"status"` | `"status"`: HTTP `lostReplyStatus` with a gateway's HTML page (after `latencyMs`); `"reset"`: the TCP connection is reset without an answer (after `latencyMs`); `"hang"`: nothing for `lostReplyHangMs`, then `lostReplyStatus` | `"status"`: a gateway 504 after WeChat delivered, the common case of a lost reply; `"reset"`: a connection broken by the network or a proxy after the request went out; `"hang"`: a black-holed reply, which the caller only sees as its own timeout |
//! | `lostReplyStatus` | `504` | the gateway status of a lost reply (`200..=599`) | 504 (gateway timeout), 502 (bad gateway), ... |
//! | `lostReplyHangMs` | `60000` | how long a `"hang"` holds the answer | longer than any client timeout (nginx's default `proxy_read_timeout`) |
//! | `outageStatus` | `null` | while set, every send answers this HTTP status (`200..=599`) with a gateway's HTML page *before anything is judged*: nothing processed, spent or counted toward quotas | an outage in front of WeChat (e.g. 503), on and off from the control API |
//! | `outageTokens` | `false` | the outage also answers `/cgi-bin/token` and `/cgi-bin/stable_token` (no token issued) | the whole API down, tokens included |
//! | `outageUntilMs` | `null` | the outage ends by itself at this time (ms since the Unix epoch, the clock of `atMs`); `null`: until `outageStatus` is cleared | an outage of known length without a second control call |
//! | `tokenLatencyMs` | `0` | the token endpoints wait this long, *then* judge (issue the token) and answer (plus `latencyMs`); the wait runs on even if the caller leaves, so the token is issued all the same | a slow token service: with `POST /fake/tokens/revoke` (or `expire`) mid-campaign, the next fetch is slow, and a caller that gives up gets nothing while WeChat's side issued a token (a `/cgi-bin/token` one ends the previous token's life after the grace period) |
//!
//! Besides: a token outage (`POST /fake/token-outage`, [`FakeWeChat::token_outage`]) answers
//! `-1` on both token endpoints for a while; a secret reset (`POST /fake/secret`,
//! [`FakeWeChat::set_secret`]) makes both answer `40125` to the old secret (a rotated secret
//! the senders do not have yet) until it is set back; [`FakeConfig::seed`] makes ids and fault rolls
//! (busy, 500, lost reply, jitter) deterministic. `"reset"` needs the fake served by
//! [`serve`] / [`FakeWeChat::start`] (their listener can cut a connection); a router from
//! [`FakeWeChat::router`] served elsewhere answers HTTP 502 instead.
//!
//! # What is recorded ([`RequestRecord`], `GET /fake/requests`; [`Stats`], `GET /fake/stats`)
//!
//! Each WeChat API request gets a record saying both sides:
//!
//! * WeChat's side: `delivered` (the send was accepted, so the message reached the user,
//!   whatever the caller got; `false` for token calls), `msgid` (a delivered subscribe send's
//!   id, also when the caller never saw it), `outage` (answered by the outage, nothing judged).
//! * What the caller got: `httpStatus` (`null` when the connection was reset), `errcode`
//!   (`null` when the answer was not WeChat's: an injected 500, an outage, a lost reply),
//!   `lostReply` (`"status"`, `"reset"`, `"hang"` or `null`), `latencyMs` (the injected wait
//!   before the answer; for `"hang"`, `lostReplyHangMs`: a caller with a shorter timeout got
//!   nothing).
//! * When: `receivedAtMs`, when the request had arrived (read whole); `atMs`, when WeChat's side
//!   judged it, under the fake's lock (records are in `atMs` order, and the fake's own quotas
//!   count on this clock). **Rate checks use `atMs`**: for a send it is the arrival plus at most
//!   a lock wait; the two differ by `tokenLatencyMs` for a token call. Both in ms since the
//!   Unix epoch; `latencyMs` is waited after both.
//!
//! In [`Stats`], `sendsAccepted` and `sendsByOpenId` count *deliveries* (WeChat accepted the
//! send), whatever the caller got, so "nobody got two messages" is
//! `sendsByOpenId` having no value over 1 ([`FakeWeChat::users_sent_more_than`]`(1)` empty).
//! `answersByErrcode` counts the WeChat answers callers received; lost replies are counted in
//! `lostReplies`, outage answers in `outageAnswers`, injected 500s in `http500s`.
//!
//! # Control API (JSON bodies and answers, camelCase; `appId` optional = default app)
//!
//! Who may call it ([`ControlAccess`]): on a loopback listener, anyone (this machine only), as
//! in the tests and the demo. On any other address (`0.0.0.0` included) only requests with
//! `Authorization: Bearer <token>` when a control token is set ([`serve_with_control`];
//! `wxpush mock-wechat` reads `WXPUSH_MOCK_CONTROL_TOKEN`), else nobody: every control route
//! answers 403 with a one-line reason. A set token is required on loopback too; a missing or
//! wrong one answers 401. `GET /fake/health` and the WeChat API routes are never guarded.
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `GET /fake/health` | | `{"ok":true}` |
//! | `POST /fake/formids` | `{"appId"?, "openId", "count"? (1), "ttlSecs"? \| "ttlMs"?}` | `{"formIds":[..], "expiresAt":ms}` |
//! | `POST /fake/prepayids` | same | `{"prepayIds":[..], "expiresAt":ms}` |
//! | `GET /fake/formids/{id}` | | `{"uses":n}` (400 if unknown) |
//! | `POST /fake/users` | `{"appId"?, "openId"}` | `{}` |
//! | `POST /fake/templates` | `{"appId"?, "templateId"}` | `{}` |
//! | `POST /fake/consents` | `{"appId"?, "openId", "templateId", "count"}` | `{"left":n}` |
//! | `GET /fake/consents` | `?appId=&openId=&templateId=` | `{"left":n}` |
//! | `GET /fake/faults` | | [`Faults`] |
//! | `PUT /fake/faults` | [`Faults`] (missing fields = off) | the faults set |
//! | `POST /fake/token-outage` | `{"forMs"}` | `{}` |
//! | `POST /fake/tokens/expire` | `{"appId"?}` or empty | `{"expired":n}` |
//! | `POST /fake/tokens/revoke` | `{"appId"?}` or empty | `{"revoked":n}` |
//! | `POST /fake/secret` | `{"appId"?, "secret"}` | `{}` |
//! | `GET /fake/requests` | `?since=N` (index of the first record wanted) | `[`[`RequestRecord`]`, ..]` |
//! | `GET /fake/stats` | | [`Stats`] |
//! | `POST /fake/reset` | | `{}` (back to the start config) |
//! | `POST /fake/push` | [`PushSpec`]: `{"url", "appId", "token", "encodingAesKey"?, "format"? (`json` \| `xml`), "kind" (`popup` \| `change` \| `sent`), "openId", "items": [{"templateId", "status"?, "msgId"?, "errorCode"?}], "createTime"?, "listAsArray"?, "times"? (1), "sameNonce"?, "timestampOffsetSecs"?, "signWith"?}` | [`PushReport`]: `{"statuses":[..], "bodies":[..]}`, one per attempt |
//!
//! Errors answer 400 (404 for an unknown app) with `{"error": "..."}`.
//!
//! A [`FakeConfig`] as JSON: `{"apps": [{"appId": "wx..", "secret": "..", "templates": ["TPL"],
//! "pages": null}], "tokenLifetimeMs": 7200000, "tokenGraceMs": 300000, "credentialTtlMs":
//! 604800000, "faults": {..}, "seed": null, "maxRecordedRequests": 200000}` (all optional).

mod access;
mod config;
mod conn;
mod control;
mod http;
mod ids;
pub mod limits;
pub mod push;
mod record;
mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use access::ControlAccess;
pub use config::{FakeApp, FakeConfig, Faults, LostReplyMode, DEFAULT_APP_ID, DEFAULT_SECRET};
pub use push::{push_event, PushFormat, PushItem, PushKind, PushReport, PushSpec};
pub use record::{Endpoint, RequestRecord, Stats};
pub use state::FakeError;

use ids::now_ms;
use state::State;

/// The fake's shared state. Clones share it; all methods are short and synchronous.
#[derive(Clone)]
pub struct FakeWeChat {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeWeChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWeChat").finish_non_exhaustive()
    }
}

impl FakeWeChat {
    /// The state, not yet serving. Fails when `config` has no app.
    pub fn new(config: FakeConfig) -> Result<Self, FakeError> {
        Ok(Self {
            state: Arc::new(Mutex::new(State::new(config)?)),
        })
    }

    /// Starts a fake on a free port of 127.0.0.1 in the current tokio runtime.
    pub async fn start(config: FakeConfig) -> Result<FakeHandle, FakeError> {
        let fake = Self::new(config)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| FakeError::Io(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| FakeError::Io(e.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_shutdown(listener, fake.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(FakeHandle {
            fake,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The WeChat API and control API routes, with this state; `access` guards the control
    /// routes (see [`ControlAccess::for_listener`]).
    pub fn router(&self, access: ControlAccess) -> axum::Router {
        http::routes()
            .merge(control::routes(access))
            .with_state(self.clone())
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Issues `count` formIds (one use each) to `open_id`, registering the user. `ttl` defaults
    /// to the configured credential lifetime; `Duration::ZERO` gives already-expired ones.
    pub fn issue_form_ids(
        &self,
        app_id: Option<&str>,
        open_id: &str,
        count: usize,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, FakeError> {
        Ok(self.issue_with_expiry(app_id, open_id, count, ttl, 1)?.0)
    }

    /// Issues `count` prepay_ids (three uses each) to `open_id`, like [`Self::issue_form_ids`].
    pub fn issue_prepay_ids(
        &self,
        app_id: Option<&str>,
        open_id: &str,
        count: usize,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, FakeError> {
        Ok(self.issue_with_expiry(app_id, open_id, count, ttl, 3)?.0)
    }

    pub(crate) fn issue_with_expiry(
        &self,
        app_id: Option<&str>,
        open_id: &str,
        count: usize,
        ttl: Option<Duration>,
        max_uses: u32,
    ) -> Result<(Vec<String>, u64), FakeError> {
        let ttl_ms = ttl.map(|d| d.as_millis() as u64);
        self.with(|s| s.issue(app_id, open_id, count, ttl_ms, max_uses, now_ms()))
    }

    /// Makes `open_id` known to the app (else sends to it answer 40003).
    pub fn register_user(&self, app_id: Option<&str>, open_id: &str) -> Result<(), FakeError> {
        self.with(|s| s.register_user(app_id, open_id))
    }

    /// Adds a template id the app accepts.
    pub fn add_template(&self, app_id: Option<&str>, template_id: &str) -> Result<(), FakeError> {
        self.with(|s| s.add_template(app_id, template_id))
    }

    /// Adds `count` subscribe consents; returns how many are now left.
    pub fn grant_consents(
        &self,
        app_id: Option<&str>,
        open_id: &str,
        template_id: &str,
        count: u32,
    ) -> Result<u32, FakeError> {
        self.with(|s| s.grant_consents(app_id, open_id, template_id, count))
    }

    pub fn consents_left(
        &self,
        app_id: Option<&str>,
        open_id: &str,
        template_id: &str,
    ) -> Result<u32, FakeError> {
        self.with(|s| s.consents_left(app_id, open_id, template_id))
    }

    /// How many times a formId / prepay_id was accepted (`None` if the fake never issued it).
    pub fn form_id_uses(&self, form_id: &str) -> Option<u32> {
        self.with(|s| s.form_id_uses(form_id))
    }

    pub fn faults(&self) -> Faults {
        self.with(|s| s.faults())
    }

    /// Replaces the fault knobs (probabilities must be within 0..=1).
    pub fn set_faults(&self, faults: Faults) -> Result<(), FakeError> {
        self.with(|s| s.set_faults(faults))
    }

    /// Changes some fault knobs.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) -> Result<(), FakeError> {
        let mut f = self.faults();
        change(&mut f);
        self.set_faults(f)
    }

    /// Both token endpoints answer -1 for this long from now.
    pub fn token_outage(&self, duration: Duration) {
        let ms = duration.as_millis() as u64;
        self.with(|s| s.token_outage(ms, now_ms()));
    }

    /// Gives the app (default app when `None`) a new secret, as resetting it in the mini
    /// program's console does: token calls with the old one answer `40125` ("invalid
    /// appsecret") from now on; tokens already issued are untouched (revoke them as well to
    /// model a leaked secret). Setting the old secret back ends the refusals.
    pub fn set_secret(&self, app_id: Option<&str>, secret: &str) -> Result<(), FakeError> {
        self.with(|s| s.set_secret(app_id, secret))
    }

    /// Every access token issued so far (tests check none of them reached a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.with(|s| s.issued_tokens())
    }

    /// Expires every token of the app now (sends with them then answer 42001).
    pub fn expire_tokens(&self, app_id: Option<&str>) -> Result<usize, FakeError> {
        self.with(|s| s.expire_tokens(app_id, now_ms()))
    }

    /// Makes the send APIs refuse the app's unexpired tokens (`40001`) while `stable_token`
    /// without `force_refresh` keeps answering its current one: a token WeChat stopped
    /// accepting early, which only `force_refresh: true` replaces.
    pub fn revoke_tokens(&self, app_id: Option<&str>) -> Result<usize, FakeError> {
        self.with(|s| s.revoke_tokens(app_id, now_ms()))
    }

    /// Every recorded request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests_since(0)
    }

    /// Recorded requests from index `since` on.
    pub fn requests_since(&self, since: usize) -> Vec<RequestRecord> {
        self.with(|s| s.requests(since))
    }

    pub fn stats(&self) -> Stats {
        self.with(|s| s.stats())
    }

    /// Messages delivered to `open_id` (sends WeChat accepted, whatever their callers got).
    pub fn sends_to(&self, open_id: &str) -> u64 {
        self.with(|s| s.sends_to(open_id))
    }

    /// The users who were delivered more than `limit` messages, with their counts: empty when
    /// nobody got more than `limit` (`users_sent_more_than(1)`: nobody got two).
    pub fn users_sent_more_than(&self, limit: u64) -> BTreeMap<String, u64> {
        self.with(|s| s.users_sent_more_than(limit))
    }

    /// Tokens `/cgi-bin/token` issued for the app.
    pub fn token_fetches(&self, app_id: &str) -> u64 {
        self.stats().token_fetches.get(app_id).copied().unwrap_or(0)
    }

    /// Tokens `/cgi-bin/stable_token` answered for the app (the same token answered twice
    /// counts twice).
    pub fn stable_token_fetches(&self, app_id: &str) -> u64 {
        self.stats()
            .stable_token_fetches
            .get(app_id)
            .copied()
            .unwrap_or(0)
    }

    /// Token answers of both endpoints for the app.
    pub fn all_token_fetches(&self, app_id: &str) -> u64 {
        self.token_fetches(app_id) + self.stable_token_fetches(app_id)
    }

    /// Back to the start configuration (see `POST /fake/reset`).
    pub fn reset(&self) {
        self.with(State::reset);
    }
}

/// Serves the WeChat API and control API on `listener` until the process ends, without a
/// control token (the control API is open on loopback and refused elsewhere).
pub async fn serve(listener: TcpListener, fake: FakeWeChat) -> std::io::Result<()> {
    serve_with_control(listener, fake, None, std::future::pending()).await
}

/// Serves until `shutdown` completes, then stops accepting and finishes open requests; no
/// control token, as [`serve`].
pub async fn serve_with_shutdown(
    listener: TcpListener,
    fake: FakeWeChat,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_control(listener, fake, None, shutdown).await
}

/// Serves like [`serve_with_shutdown`], the control API guarded by the rule of
/// [`ControlAccess::for_listener`] for this listener's address and `control_token`.
pub async fn serve_with_control(
    listener: TcpListener,
    fake: FakeWeChat,
    control_token: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access = ControlAccess::for_listener(listener.local_addr()?, control_token);
    // The listener lets a handler cut its connection (`lostReplyMode: "reset"`).
    let service = fake
        .router(access)
        .into_make_service_with_connect_info::<conn::Cut>();
    axum::serve(conn::CutListener(listener), service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A running in-process fake. Derefs to [`FakeWeChat`]. Dropping it stops the server.
pub struct FakeHandle {
    fake: FakeWeChat,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl FakeHandle {
    /// `http://127.0.0.1:PORT`, the base URL for the client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn fake(&self) -> &FakeWeChat {
        &self.fake
    }

    /// Stops accepting, lets open requests finish (at most 5 s), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Deref for FakeHandle {
    type Target = FakeWeChat;
    fn deref(&self) -> &FakeWeChat {
        &self.fake
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
