//! WeChat's message push, the fake's side (contract §8.4; WECHAT.md "Message push"): builds a
//! subscribe popup, change or sent event as WeChat does (JSON or XML, `List` one object or an
//! array), signs it (`signature`; `msg_signature` and the AES envelope in secure mode, with
//! the EncodingAESKey given) and POSTs it to the URL given, as many times as asked, each
//! retry with the same body, as WeChat's retries are. `POST /fake/push` and
//! [`push_event`].
//!
//! This module owns only building and sending a push. It must not keep state of the fake's
//! WeChat API, and speaks plain `http://` only (the role under test listens on loopback).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wxpush_wechat::push_crypto::{signature, PushCipher};

use crate::state::FakeError;

/// The event pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PushKind {
    /// `subscribe_msg_popup_event`: items' `status` `accept` or `reject`.
    Popup,
    /// `subscribe_msg_change_event`: items' `status` (usually `reject`).
    Change,
    /// `subscribe_msg_sent_event`: items with `msgId`, `errorCode`.
    Sent,
}

/// The body's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PushFormat {
    #[default]
    Json,
    Xml,
}

/// One item of the event's `List`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushItem {
    pub template_id: String,
    /// `accept` or `reject` (popup, change).
    #[serde(default)]
    pub status: Option<String>,
    /// The message's msgid (sent).
    #[serde(default)]
    pub msg_id: Option<String>,
    /// 0: delivered (sent).
    #[serde(default)]
    pub error_code: Option<i64>,
}

/// What to push, where (the control call's body, camelCase).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSpec {
    /// `http://host:port/path` of the message push server (`.../wechat/<appid>`).
    pub url: String,
    /// The app the push is for (inside the secure-mode envelope).
    pub app_id: String,
    /// The app's message push Token.
    pub token: String,
    /// The app's EncodingAESKey: secure mode when given.
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    #[serde(default)]
    pub format: PushFormat,
    pub kind: PushKind,
    pub open_id: String,
    pub items: Vec<PushItem>,
    /// Unix seconds; now when absent.
    #[serde(default)]
    pub create_time: Option<i64>,
    /// `List` as an array even for one item (WeChat sends one item as an object).
    #[serde(default)]
    pub list_as_array: bool,
    /// How many times the same push is sent (WeChat retries a push it got no answer for):
    /// each time with a fresh nonce and timestamp, the same event. At least 1.
    #[serde(default = "one")]
    pub times: u32,
    /// Sends each time with the very same query string (nonce, timestamp, signatures), as a
    /// replay of a captured request would be.
    #[serde(default)]
    pub same_nonce: bool,
    /// The request's timestamp is off by this many seconds (a replay of an old request).
    #[serde(default)]
    pub timestamp_offset_secs: i64,
    /// Signs with this token instead (a forger's).
    #[serde(default)]
    pub sign_with: Option<String>,
}

fn one() -> u32 {
    1
}

/// The HTTP status and body of each attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub statuses: Vec<u16>,
    pub bodies: Vec<String>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn event_name(kind: PushKind) -> &'static str {
    match kind {
        PushKind::Popup => "subscribe_msg_popup_event",
        PushKind::Change => "subscribe_msg_change_event",
        PushKind::Sent => "subscribe_msg_sent_event",
    }
}

fn wrapper_name(kind: PushKind) -> &'static str {
    match kind {
        PushKind::Popup => "SubscribeMsgPopupEvent",
        PushKind::Change => "SubscribeMsgChangeEvent",
        PushKind::Sent => "SubscribeMsgSentEvent",
    }
}

fn item_json(kind: PushKind, item: &PushItem) -> Value {
    match kind {
        PushKind::Popup => json!({"TemplateId": item.template_id,
            "SubscribeStatusString": item.status.as_deref().unwrap_or("accept"),
            "PopupScene": "0"}),
        PushKind::Change => json!({"TemplateId": item.template_id,
            "SubscribeStatusString": item.status.as_deref().unwrap_or("reject")}),
        PushKind::Sent => {
            let code = item.error_code.unwrap_or(0);
            json!({"TemplateId": item.template_id,
                "MsgID": item.msg_id.as_deref().unwrap_or("0"),
                "ErrorCode": code,
                "ErrorStatus": if code == 0 { "success" } else { "fail" }})
        }
    }
}

fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// The plain event body, as WeChat writes it.
pub fn event_body(spec: &PushSpec, create_time: i64) -> String {
    let items: Vec<Value> = spec.items.iter().map(|i| item_json(spec.kind, i)).collect();
    match spec.format {
        PushFormat::Json => {
            let list = match items.as_slice() {
                [one] if !spec.list_as_array => one.clone(),
                _ => Value::Array(items),
            };
            json!({"ToUserName": "gh_fake0000000", "FromUserName": spec.open_id,
                "CreateTime": create_time, "MsgType": "event", "Event": event_name(spec.kind),
                "List": list})
            .to_string()
        }
        PushFormat::Xml => {
            let mut lists = String::new();
            for item in &items {
                lists.push_str("<List>");
                if let Some(map) = item.as_object() {
                    for (k, v) in map {
                        let text = match v {
                            Value::String(s) => cdata(s),
                            other => other.to_string(),
                        };
                        lists.push_str(&format!("<{k}>{text}</{k}>"));
                    }
                }
                lists.push_str("</List>");
            }
            let wrapper = wrapper_name(spec.kind);
            format!(
                "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
                 <CreateTime>{create_time}</CreateTime><MsgType>{}</MsgType>\
                 <Event>{}</Event><{wrapper}>{lists}</{wrapper}></xml>",
                cdata("gh_fake0000000"),
                cdata(&spec.open_id),
                cdata("event"),
                cdata(event_name(spec.kind)),
            )
        }
    }
}

fn nonce() -> String {
    fastrand::u64(1_000_000_000..u64::MAX).to_string()
}

/// The query string and body of one attempt.
fn signed_request(spec: &PushSpec, plain: &str, cipher: Option<&PushCipher>) -> (String, String) {
    let token = spec.sign_with.as_deref().unwrap_or(&spec.token);
    let timestamp = now_secs()
        .saturating_add(spec.timestamp_offset_secs)
        .to_string();
    let nonce = nonce();
    let sig = signature(&[token, &timestamp, &nonce]);
    let mut query = format!(
        "signature={sig}&timestamp={timestamp}&nonce={nonce}&openid={}",
        spec.open_id
    );
    let body = match cipher {
        None => plain.to_owned(),
        Some(cipher) => {
            let mut random = [0u8; 16];
            random.iter_mut().for_each(|b| *b = fastrand::u8(..));
            let encrypt = cipher.seal(plain.as_bytes(), &spec.app_id, random);
            let msg_sig = signature(&[token, &timestamp, &nonce, &encrypt]);
            query.push_str(&format!("&encrypt_type=aes&msg_signature={msg_sig}"));
            match spec.format {
                PushFormat::Json => {
                    json!({"ToUserName": "gh_fake0000000", "Encrypt": encrypt}).to_string()
                }
                PushFormat::Xml => format!(
                    "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt></xml>",
                    cdata("gh_fake0000000"),
                    cdata(&encrypt)
                ),
            }
        }
    };
    (query, body)
}

/// Sends `spec`'s push `spec.times` times; the status and body of each answer.
pub async fn push_event(spec: &PushSpec) -> Result<PushReport, FakeError> {
    let cipher = spec
        .encoding_aes_key
        .as_deref()
        .map(PushCipher::new)
        .transpose()
        .map_err(|e| FakeError::BadRequest(e.to_string()))?;
    let create_time = spec.create_time.unwrap_or_else(now_secs);
    let plain = event_body(spec, create_time);
    let content_type = match spec.format {
        PushFormat::Json => "application/json",
        PushFormat::Xml => "text/xml",
    };
    let mut report = PushReport::default();
    let mut fixed: Option<(String, String)> = None;
    for _ in 0..spec.times.max(1) {
        let (query, body) = match &fixed {
            Some(f) if spec.same_nonce => f.clone(),
            _ => {
                let r = signed_request(spec, &plain, cipher.as_ref());
                fixed = Some(r.clone());
                r
            }
        };
        let (status, answer) = post(&spec.url, &query, content_type, body.as_bytes()).await?;
        report.statuses.push(status);
        report.bodies.push(answer);
    }
    Ok(report)
}

/// A plain HTTP/1.1 POST to `url` (`http://host:port/path`) with `query` appended.
async fn post(
    url: &str,
    query: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String), FakeError> {
    let bad = |why: &str| FakeError::BadRequest(format!("push url: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is pushed to"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(host),
    )
    .await
    .map_err(|_| bad("connect timed out"))?
    .map_err(|e| bad(&e.to_string()))?;
    let head = format!(
        "POST {path}{sep}{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let io = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), io)
        .await
        .map_err(|_| bad("no answer within 10 s"))?
        .map_err(|e| bad(&e.to_string()))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("the answer is not HTTP"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: PushFormat, items: usize) -> PushSpec {
        PushSpec {
            url: "http://127.0.0.1:1/wechat/wx1".into(),
            app_id: "wx1".into(),
            token: "tok3n".into(),
            encoding_aes_key: None,
            format,
            kind: PushKind::Popup,
            open_id: "oA".into(),
            items: (0..items)
                .map(|i| PushItem {
                    template_id: format!("TPL_{i}"),
                    status: Some("accept".into()),
                    ..PushItem::default()
                })
                .collect(),
            create_time: None,
            list_as_array: false,
            times: 1,
            same_nonce: false,
            timestamp_offset_secs: 0,
            sign_with: None,
        }
    }

    #[test]
    fn the_bodies_read_back_as_the_event_in_either_format() {
        use wxpush_wechat::push_event::{parse_json, parse_xml, PushEventKind};
        for n in [1, 3] {
            let json = event_body(&spec(PushFormat::Json, n), 7);
            let xml = event_body(&spec(PushFormat::Xml, n), 7);
            assert_eq!(json.contains("\"List\":{"), n == 1, "{json}");
            for e in [
                parse_json(json.as_bytes()).unwrap(),
                parse_xml(xml.as_bytes()).unwrap(),
            ] {
                assert_eq!(e.create_time, 7);
                let PushEventKind::Popup(items) = e.kind else {
                    panic!("a popup");
                };
                assert_eq!(items.len(), n);
                assert!(items.iter().all(|i| i.accepted));
            }
        }
    }
}
