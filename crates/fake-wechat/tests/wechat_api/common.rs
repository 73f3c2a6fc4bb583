//! Shared setup: a fake with two apps, a client pointed at it, message builders.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use wxpush_domain::{AppId, OpenId, Secret};
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeHandle, FakeWeChat};
use wxpush_wechat::{AccessToken, Client, ClientConfig, SubscribeMessage, TemplateMessage};

pub const APP: &str = "wxapp00000000001";
pub const SECRET: &str = "appsecret-one-0123456789abcdef01";
pub const APP2: &str = "wxapp00000000002";
pub const SECRET2: &str = "appsecret-two-0123456789abcdef02";
pub const TPL: &str = "TPL_ORDER_SHIPPED";
pub const SUB_TPL: &str = "TPL_SUBSCRIBE";

pub fn config() -> FakeConfig {
    let mut c = FakeConfig::with_apps(vec![
        FakeApp::new(APP, SECRET).with_templates([TPL, SUB_TPL]),
        FakeApp::new(APP2, SECRET2).with_templates([TPL]),
    ]);
    c.seed = Some(42);
    c
}

pub async fn start(config: FakeConfig) -> FakeHandle {
    FakeWeChat::start(config).await.expect("fake starts")
}

pub fn client_with_timeout(h: &FakeHandle, timeout: Duration) -> Client {
    let mut c = ClientConfig::with_base_url(h.base_url());
    // Sends and token requests alike.
    c.request_timeout = timeout;
    c.token_timeout = timeout;
    Client::new(&c).expect("client builds")
}

pub fn client(h: &FakeHandle) -> Client {
    client_with_timeout(h, Duration::from_secs(5))
}

pub fn app() -> AppId {
    AppId::new(APP).expect("appid")
}

pub fn secret() -> Secret {
    Secret::new(SECRET)
}

pub fn open_id(s: &str) -> OpenId {
    OpenId::new(s).expect("openid")
}

pub async fn token(client: &Client) -> AccessToken {
    client
        .fetch_token(&app(), &secret())
        .await
        .expect("token fetch succeeds")
}

/// A running fake, a client and a valid token for APP.
pub async fn ready() -> (FakeHandle, Client, AccessToken) {
    let h = start(config()).await;
    let c = client(&h);
    let t = token(&c).await;
    (h, c, t)
}

pub fn template(to: &str, form_id: &str) -> TemplateMessage {
    let mut data = BTreeMap::new();
    data.insert(
        "keyword1".to_owned(),
        wxpush_domain::DataItem::text("339208499"),
    );
    TemplateMessage {
        touser: open_id(to),
        template_id: TPL.to_owned(),
        page: Some("index?foo=bar".to_owned()),
        form_id: form_id.to_owned(),
        data,
        emphasis_keyword: Some("keyword1.DATA".to_owned()),
    }
}

pub fn subscribe(to: &str, data: Value) -> SubscribeMessage {
    SubscribeMessage {
        touser: open_id(to),
        template_id: SUB_TPL.to_owned(),
        page: Some("pages/order/detail?id=1".to_owned()),
        data: data.as_object().cloned().expect("data is an object"),
        miniprogram_state: None,
        lang: None,
    }
}

pub fn good_data() -> Value {
    json!({"thing1": {"value": "Your order shipped"},
           "character_string2": {"value": "SF1234567"},
           "phrase3": {"value": "已发货"}})
}

/// One formId for `to` from APP.
pub fn form_id(h: &FakeHandle, to: &str) -> String {
    h.issue_form_ids(None, to, 1, None)
        .expect("issue")
        .pop()
        .expect("one formId")
}

/// A plain HTTP client for raw calls (control API, malformed requests).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// GET `path` on the fake and parse the JSON answer.
pub async fn get_json(h: &FakeHandle, path: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}{path}", h.base_url()))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Sends `body` as JSON with `method` to `path` on the fake and parses the JSON answer.
pub async fn send_json(h: &FakeHandle, method: &str, path: &str, body: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = http()
        .request(method, format!("{}{path}", h.base_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// What a raw HTTP call got: the status, the content type and the body text.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

/// POSTs `body` to `path` on the fake with a plain HTTP client (no retries, no
/// classification) and a `timeout`: the answer, or the transport error.
pub async fn raw_post(
    h: &FakeHandle,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<RawAnswer, reqwest::Error> {
    let r = http()
        .post(format!("{}{path}", h.base_url()))
        .timeout(timeout)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await?;
    Ok(RawAnswer {
        status,
        content_type,
        text,
    })
}

/// A template send of `form_id` to `to` over raw HTTP, with a 5 s timeout.
pub async fn raw_template_send(
    h: &FakeHandle,
    token: &str,
    to: &str,
    form_id: &str,
) -> Result<RawAnswer, reqwest::Error> {
    let body = json!({"touser": to, "template_id": TPL, "form_id": form_id,
                      "data": {"keyword1": {"value": "339208499"}}});
    let path = format!("/cgi-bin/message/wxopen/template/send?access_token={token}");
    raw_post(h, &path, &body, Duration::from_secs(5)).await
}

/// Polls `check` every 20 ms until it holds or `within` has passed; whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
