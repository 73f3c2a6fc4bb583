//! `wxpush dashboard` (issue 16, contract 8.7): the operators' web page and the JSON API it is
//! drawn from, on `WXPUSH_DASHBOARD_ADDR` (default `127.0.0.1:8088`).
//!
//! This module owns the server: its settings (a loopback address unless
//! `WXPUSH_DASHBOARD_ALLOW_REMOTE=1`; the `Host` header checked against it, so a rebound DNS
//! name cannot read the page), the routes, the security headers (a CSP that allows this
//! origin's own script and style only, no framing, no caching), and the actions, which go
//! through [`auth`]. What the pages show is read by [`data`] (through the same code as the
//! command line: `status.rs`, `message.rs`, `reach.rs`, `control.rs`, `retry.rs`) and drawn
//! by [`view`]; every asset is embedded in the binary (`assets/`). The pages refresh
//! themselves: the script fetches the page's `<main>` again every 2 s (polling, which needs no
//! open connection per tab and survives restarts of the dashboard).
//!
//! It must not decide anything a role decides, write to Redis but through the operator's
//! actions, or show a secret: no app secret, no credential's value, no token.

pub mod auth;
mod data;
mod fleet;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::anyhow;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use wxpush_bank::record::Control;
use wxpush_domain::{AppId, Config};
use wxpush_roles::{Deps, Shutdown};

use auth::{Auth, Refused};

/// Where the dashboard listens unless `WXPUSH_DASHBOARD_ADDR` says.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8088";

/// The dashboard's own settings (the rest is the install's [`Config`]).
#[derive(Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// `WXPUSH_DASHBOARD_TOKEN`: actions need it; without it the dashboard is read-only.
    pub token: Option<String>,
    /// `WXPUSH_DASHBOARD_ALLOW_REMOTE=1`: the address may be other than loopback.
    pub allow_remote: bool,
    /// `WXPUSH_RABBITMQ_MANAGEMENT_URL`: RabbitMQ's management API, for the fleet's rates.
    pub management_url: Option<String>,
}

impl Settings {
    /// From the environment; a bad value is one line naming the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let addr_text = var("WXPUSH_DASHBOARD_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr: SocketAddr = addr_text.parse().map_err(|_| {
            anyhow!("WXPUSH_DASHBOARD_ADDR is invalid: '{addr_text}' is not an address and port such as 127.0.0.1:8088")
        })?;
        let allow_remote = match var("WXPUSH_DASHBOARD_ALLOW_REMOTE").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(anyhow!(
                    "WXPUSH_DASHBOARD_ALLOW_REMOTE is invalid: '{other}' is not 0 or 1"
                ))
            }
        };
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(anyhow!(
                "WXPUSH_DASHBOARD_ADDR is {addr}, beyond this host: set WXPUSH_DASHBOARD_ALLOW_REMOTE=1 to serve it there (and keep it behind TLS)"
            ));
        }
        let token = var("WXPUSH_DASHBOARD_TOKEN");
        if let Some(t) = &token {
            if t.len() < auth::MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(anyhow!(
                    "WXPUSH_DASHBOARD_TOKEN is invalid: it must be at least {} printable ASCII characters without spaces",
                    auth::MIN_TOKEN_LEN
                ));
            }
        }
        let management_url = var("WXPUSH_RABBITMQ_MANAGEMENT_URL");
        if let Some(u) = &management_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(anyhow!(
                    "WXPUSH_RABBITMQ_MANAGEMENT_URL is invalid: it must be an http:// or https:// URL"
                ));
            }
        }
        Ok(Self {
            addr,
            token,
            allow_remote,
            management_url,
        })
    }

    /// Every secret of the settings (for the log scrubber).
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.token.iter().cloned().collect();
        if let Some(pass) = self
            .management_url
            .as_deref()
            .and_then(|u| u.split_once("://"))
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, pass)| pass.to_owned())
        {
            out.push(pass);
        }
        out
    }
}

/// What every request shares.
pub(crate) struct Dash {
    pub(crate) config: Config,
    pub(crate) deps: Deps,
    pub(crate) auth: Auth,
    pub(crate) data: data::Data,
    pub(crate) fleet: fleet::Fleet,
    /// The `Host` values a request may carry (`None`: any, `WXPUSH_DASHBOARD_ALLOW_REMOTE`).
    hosts: Option<Vec<String>>,
}

/// `wxpush dashboard`: serves until SIGTERM or Ctrl-C.
pub async fn run(config: &Config, settings: Settings) -> anyhow::Result<()> {
    let deps = Deps::connect(config, "wxpush dashboard").await?;
    let (trigger, shutdown) = wxpush_roles::ShutdownTrigger::new();
    let addr = start(config, deps, settings, shutdown.clone()).await?;
    tracing::info!(%addr, "the dashboard is at http://{addr}/");
    crate::wait_for_signal().await;
    trigger.trigger();
    Ok(())
}

/// Binds and serves the dashboard in the background until `shutdown`; returns the address
/// bound (port 0 picks a free one). The demo starts it this way.
pub async fn start(
    config: &Config,
    deps: Deps,
    settings: Settings,
    mut shutdown: Shutdown,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|e| {
            anyhow!(
                "cannot listen on {} (WXPUSH_DASHBOARD_ADDR): {e}",
                settings.addr
            )
        })?;
    let bound = listener.local_addr()?;
    let hosts = (!settings.allow_remote).then(|| {
        let port = bound.port();
        vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            bound.to_string(),
        ]
    });
    if settings.token.is_none() {
        tracing::info!("the dashboard is read-only: set WXPUSH_DASHBOARD_TOKEN to pause, resume, cancel and retry from it");
    }
    let dash = Arc::new(Dash {
        config: config.clone(),
        data: data::Data::new(config, deps.bank.clone())?,
        fleet: fleet::Fleet::new(config, settings.management_url.clone()),
        deps,
        auth: Auth::new(settings.token.clone()),
        hosts,
    });
    let app = router(dash);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the dashboard stopped");
        }
    });
    Ok(bound)
}

fn router(dash: Arc<Dash>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/campaigns") }))
        .route("/campaigns", get(campaigns_page))
        .route("/campaigns/{app}/{id}", get(campaign_page))
        .route("/campaigns/{app}/{id}/{action}", post(campaign_action_form))
        .route("/messages", get(messages_page))
        .route("/reach", get(reach_page))
        .route("/fleet", get(fleet_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
        .route("/api/session", get(api_session))
        .route("/api/campaigns", get(api_campaigns))
        .route("/api/campaigns/{app}/{id}", get(api_campaign))
        .route(
            "/api/campaigns/{app}/{id}/{action}",
            post(api_campaign_action),
        )
        .route("/api/messages/{id}", get(api_message))
        .route("/api/users/{open_id}", get(api_user))
        .route("/api/reach", get(api_reach))
        .route("/api/fleet", get(api_fleet))
        .layer(middleware::from_fn_with_state(dash.clone(), guard))
        .with_state(dash)
}

/// Refuses a `Host` this dashboard does not answer to, and sets the security headers.
async fn guard(
    State(dash): State<Arc<Dash>>,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    if let Some(hosts) = &dash.hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h == host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers on its loopback address only\n",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "x-frame-options", "DENY");
    set(h, "cache-control", "no-store");
    response
}

// ---------------------------------------------------------------------------------------------
// Pages

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    pub app: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
struct FlashQuery {
    done: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LookupQuery {
    pub q: Option<String>,
    pub app: Option<String>,
}

/// A page, or only its `<main>`'s content when the page's script asks (`X-Dashboard-Partial`).
fn page(headers: &HeaderMap, dash: &Dash, title: &str, nav: &str, main: String) -> Response {
    let html = if headers.contains_key("x-dashboard-partial") {
        main
    } else {
        view::layout(title, nav, &dash.auth.who(headers), &dash.config, &main)
    };
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn error_page(headers: &HeaderMap, dash: &Dash, status: StatusCode, message: &str) -> Response {
    let message = crate::ops::scrubber().scrub(message);
    let mut r = page(headers, dash, "Error", "", view::error(&message));
    *r.status_mut() = status;
    r
}

async fn campaigns_page(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    match dash.data.campaigns(&dash.config, &q).await {
        Ok(list) => page(
            &headers,
            &dash,
            "Campaigns",
            "campaigns",
            view::campaigns(&list, &q, &dash.config),
        ),
        Err(e) => error_page(&headers, &dash, StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn campaign_page(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    Query(flash): Query<FlashQuery>,
) -> Response {
    let Ok(app) = AppId::new(&app) else {
        return error_page(&headers, &dash, StatusCode::NOT_FOUND, "no such app");
    };
    match dash.data.campaign(&app, &id).await {
        Ok(Some(c)) => {
            let who = dash.auth.who(&headers);
            let main = view::campaign(&c, &who, flash.done.as_deref());
            page(
                &headers,
                &dash,
                &format!("Campaign {id}"),
                "campaigns",
                main,
            )
        }
        Ok(None) => error_page(
            &headers,
            &dash,
            StatusCode::NOT_FOUND,
            &format!("no campaign {id} of app {app}"),
        ),
        Err(e) => error_page(&headers, &dash, StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    csrf: Option<String>,
}

fn control_of(action: &str) -> Option<Option<Control>> {
    match action {
        "pause" => Some(Some(Control::Pause)),
        "resume" => Some(Some(Control::Resume)),
        "cancel" => Some(Some(Control::Cancel)),
        "retry" => Some(None),
        _ => None,
    }
}

fn refused_status(r: &Refused) -> StatusCode {
    match r {
        Refused::NotLoggedIn => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

async fn campaign_action_form(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Path((app, id, action)): Path<(String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(r) = dash.auth.may_act(&headers, form.csrf.as_deref()) {
        return error_page(&headers, &dash, refused_status(&r), &r.to_string());
    }
    match act(&dash, &app, &id, &action).await {
        Ok((status, body)) if status.is_success() => {
            let done = body["done"].as_str().unwrap_or("done").to_owned();
            Redirect::to(&format!(
                "/campaigns/{}/{}?done={done}",
                view::url_part(&app),
                view::url_part(&id)
            ))
            .into_response()
        }
        Ok((status, body)) => error_page(
            &headers,
            &dash,
            status,
            body["error"].as_str().unwrap_or("refused"),
        ),
        Err(e) => error_page(&headers, &dash, StatusCode::BAD_GATEWAY, &e),
    }
}

/// Carries out an action (already allowed): the status and the JSON answer.
async fn act(
    dash: &Dash,
    app: &str,
    id: &str,
    action: &str,
) -> Result<(StatusCode, serde_json::Value), String> {
    let Some(control) = control_of(action) else {
        return Ok((
            StatusCode::NOT_FOUND,
            json!({"error": format!("no action {action}: pause, resume, cancel or retry")}),
        ));
    };
    let Ok(app_id) = AppId::new(app) else {
        return Ok((StatusCode::NOT_FOUND, json!({"error": "no such app"})));
    };
    if wxpush_domain::job::check_campaign_id(id).is_err() {
        return Ok((StatusCode::NOT_FOUND, json!({"error": "no such campaign"})));
    }
    let scrub = |e: anyhow::Error| crate::ops::scrubber().scrub(&format!("{e:#}"));
    match control {
        Some(c) => {
            let changed = crate::control::act(&dash.deps.bank, &app_id, id, c)
                .await
                .map_err(scrub)?;
            let done = crate::control::words(c).1;
            Ok(match changed {
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("no campaign {id} of app {app}")}),
                ),
                Some(changed) => (
                    StatusCode::OK,
                    json!({"campaignId": id, "appId": app, "action": action,
                           "changed": changed, "done": if changed { done } else { "unchanged" }}),
                ),
            })
        }
        None => {
            let counts = crate::retry::retry(&dash.config, &dash.deps, &app_id, id)
                .await
                .map_err(scrub);
            Ok(match counts {
                Ok(c) => (
                    StatusCode::OK,
                    json!({"campaignId": id, "appId": app, "action": "retry",
                           "requeued": c.requeued, "skipped": c.skipped,
                           "done": if c.requeued > 0 { "retried" } else { "nothing-to-retry" }}),
                ),
                Err(e) => (StatusCode::CONFLICT, json!({"error": e})),
            })
        }
    }
}

async fn messages_page(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Query(q): Query<LookupQuery>,
) -> Response {
    let found = match q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => match dash.data.lookup(&dash.config, text, q.app.as_deref()).await {
            Ok(found) => Some(found),
            Err(e) => return error_page(&headers, &dash, StatusCode::SERVICE_UNAVAILABLE, &e),
        },
        None => None,
    };
    let main = view::messages(&q, found.as_ref());
    page(&headers, &dash, "Messages", "messages", main)
}

async fn reach_page(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    match dash.data.reach(&dash.config, q.app.as_deref()).await {
        Ok(apps) => page(&headers, &dash, "Reach", "reach", view::reach(&apps)),
        Err(e) => error_page(&headers, &dash, StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// The fleet, with each app's campaigns' moving rate (recipients settled per second, each of
/// which took a rate permit: what the app's `send_rate` is spent on), summed over the newest
/// campaigns still under way.
async fn fleet_json(dash: &Dash) -> serde_json::Value {
    let mut f = dash.fleet.read(&dash.deps, &dash.config).await;
    let recent = dash
        .data
        .campaigns(&dash.config, &ListQuery::default())
        .await
        .unwrap_or_default();
    if let Some(apps) = f["apps"].as_array_mut() {
        for a in apps {
            let rate: f64 = recent
                .iter()
                .filter(|c| c["app"] == a["app"] && c["complete"] != json!(true))
                .filter_map(|c| c["moving_rate_per_sec"].as_f64())
                .sum();
            a["sending_per_sec"] = json!(rate);
        }
    }
    f
}

async fn fleet_page(State(dash): State<Arc<Dash>>, headers: HeaderMap) -> Response {
    let f = fleet_json(&dash).await;
    page(&headers, &dash, "Fleet", "fleet", view::fleet(&f))
}

async fn login_page(State(dash): State<Arc<Dash>>, headers: HeaderMap) -> Response {
    let main = view::login(&dash.auth.who(&headers), None);
    page(&headers, &dash, "Log in", "login", main)
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    token: Option<String>,
}

async fn login(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    match dash.auth.login(form.token.as_deref().unwrap_or("")) {
        Ok(session) => {
            let mut r = Redirect::to("/campaigns").into_response();
            if let Ok(v) = HeaderValue::from_str(&auth::session_cookie(&session)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(refused) => {
            // A wrong guess costs the guesser time.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let main = view::login(&dash.auth.who(&headers), Some(&refused.to_string()));
            let mut r = page(&headers, &dash, "Log in", "login", main);
            *r.status_mut() = refused_status(&refused);
            r
        }
    }
}

async fn logout(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(r) = dash.auth.may_act(&headers, form.csrf.as_deref()) {
        return error_page(&headers, &dash, refused_status(&r), &r.to_string());
    }
    dash.auth.logout(&headers);
    let mut r = Redirect::to("/campaigns").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::expired_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The JSON API (docs/dashboard.md)

/// A JSON answer; an error's text is scrubbed of every secret the process knows, as a log
/// line is.
fn api(status: StatusCode, mut body: serde_json::Value) -> Response {
    if let Some(e) = body.get_mut("error") {
        if let Some(text) = e.as_str() {
            *e = json!(crate::ops::scrubber().scrub(text));
        }
    }
    (status, axum::Json(body)).into_response()
}

async fn api_session(State(dash): State<Arc<Dash>>, headers: HeaderMap) -> Response {
    let who = dash.auth.who(&headers);
    api(
        StatusCode::OK,
        json!({"read_only": who.read_only, "logged_in": who.csrf.is_some()}),
    )
}

async fn api_campaigns(State(dash): State<Arc<Dash>>, Query(q): Query<ListQuery>) -> Response {
    match dash.data.campaigns(&dash.config, &q).await {
        Ok(list) => api(StatusCode::OK, json!({ "campaigns": list })),
        Err(e) => api(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e })),
    }
}

async fn api_campaign(
    State(dash): State<Arc<Dash>>,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let Ok(app) = AppId::new(&app) else {
        return api(StatusCode::NOT_FOUND, json!({"error": "no such app"}));
    };
    match dash.data.campaign(&app, &id).await {
        Ok(Some(c)) => api(StatusCode::OK, c),
        Ok(None) => api(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no campaign {id} of app {app}")}),
        ),
        Err(e) => api(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e })),
    }
}

async fn api_campaign_action(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    Path((app, id, action)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = dash.auth.may_act(&headers, None) {
        return api(refused_status(&r), json!({"error": r.to_string()}));
    }
    match act(&dash, &app, &id, &action).await {
        Ok((status, body)) => api(status, body),
        Err(e) => api(StatusCode::BAD_GATEWAY, json!({ "error": e })),
    }
}

async fn api_message(
    State(dash): State<Arc<Dash>>,
    Path(id): Path<String>,
    Query(q): Query<LookupQuery>,
) -> Response {
    match dash.data.message(&dash.config, &id, q.app.as_deref()).await {
        Ok(found) => api(StatusCode::OK, json!({ "messages": found })),
        Err(e) => api(StatusCode::BAD_REQUEST, json!({ "error": e })),
    }
}

async fn api_user(
    State(dash): State<Arc<Dash>>,
    Path(open_id): Path<String>,
    Query(q): Query<LookupQuery>,
) -> Response {
    match dash
        .data
        .user(&dash.config, &open_id, q.app.as_deref())
        .await
    {
        Ok(found) => api(StatusCode::OK, json!({ "users": found })),
        Err(e) => api(StatusCode::BAD_REQUEST, json!({ "error": e })),
    }
}

async fn api_reach(State(dash): State<Arc<Dash>>, Query(q): Query<ListQuery>) -> Response {
    match dash.data.reach(&dash.config, q.app.as_deref()).await {
        Ok(apps) => api(StatusCode::OK, json!({ "apps": apps })),
        Err(e) => api(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e })),
    }
}

async fn api_fleet(State(dash): State<Arc<Dash>>) -> Response {
    let f = fleet_json(&dash).await;
    api(StatusCode::OK, f)
}
