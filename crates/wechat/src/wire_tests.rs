//! The client against answers WeChat should never give: numbers of any size, sign and type,
//! bodies of any length, redirects. A raw TCP server in the test answers each request with a
//! canned response, so every byte on the wire is the test's choice.
//!
//! This module owns only tests; it must not be compiled outside them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wxpush_domain::{AppId, OpenId, Secret, TokenSource};

use crate::{
    Client, ClientConfig, Outcome, TemplateMessage, TokenError, MAX_ANSWER_BYTES,
    MAX_TOKEN_LIFETIME_SECS, MIN_TOKEN_LIFETIME_SECS,
};

const SECRET: &str = "S3CRET-wire-test-0123456789abcdef";
const TOKEN: &str = "TOKEN-wire-test-aaaabbbb";

/// What the canned server sends after the status line and headers.
#[derive(Clone)]
enum Body {
    /// This JSON, with its `Content-Length`.
    Json(String),
    /// A 302 to `location`, no body.
    Redirect(String),
    /// Zeros for ever, announcing `Content-Length: 1 GiB` (`announce`) or chunked.
    Endless { announce: bool },
}

/// A server answering every request with one canned response; counts requests and the body
/// bytes it managed to write.
struct Canned {
    base: String,
    hits: Arc<AtomicUsize>,
    written: Arc<AtomicU64>,
}

async fn canned(body: Body) -> Canned {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (h, w) = (hits.clone(), written.clone());
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (body, h, w) = (body.clone(), h.clone(), w.clone());
            tokio::spawn(async move {
                let _ = answer(conn, body, h, w).await;
            });
        }
    });
    Canned {
        base,
        hits,
        written,
    }
}

async fn answer(
    mut conn: TcpStream,
    body: Body,
    hits: Arc<AtomicUsize>,
    written: Arc<AtomicU64>,
) -> std::io::Result<()> {
    // Read the request head and whatever body it announces.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        let n = conn.read(&mut byte).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut byte).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    match body {
        Body::Json(text) => {
            let out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{text}",
                text.len()
            );
            conn.write_all(out.as_bytes()).await?;
        }
        Body::Redirect(location) => {
            let out = format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
                 connection: close\r\n\r\n"
            );
            conn.write_all(out.as_bytes()).await?;
        }
        Body::Endless { announce } => {
            let head = if announce {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            };
            conn.write_all(head.as_bytes()).await?;
            let piece = vec![b' '; 16 * 1024];
            let framed = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
            loop {
                if announce {
                    conn.write_all(&piece).await?;
                } else {
                    conn.write_all(&framed).await?;
                }
                written.fetch_add(piece.len() as u64, Ordering::SeqCst);
            }
        }
    }
    conn.shutdown().await
}

fn client(base: &str) -> Client {
    let mut cfg = ClientConfig::with_base_url(base);
    cfg.request_timeout = Duration::from_secs(5);
    Client::new(&cfg).expect("client")
}

fn app() -> AppId {
    AppId::new("wx1234567890abcdef").expect("appid")
}

fn message() -> TemplateMessage {
    TemplateMessage {
        touser: OpenId::new("oUser1").expect("openid"),
        template_id: "TPL".into(),
        page: None,
        form_id: "f".into(),
        data: Default::default(),
        emphasis_keyword: None,
    }
}

async fn token_answer(answer: serde_json::Value) -> Result<crate::AccessToken, TokenError> {
    let server = canned(Body::Json(answer.to_string())).await;
    client(&server.base)
        .fetch_stable_token(&app(), &Secret::new(SECRET), false)
        .await
}

#[tokio::test]
async fn expires_in_of_any_size_sign_or_type_is_bounded_never_a_panic() {
    let cases = [
        (json!(18446744073709551615u64), MAX_TOKEN_LIFETIME_SECS),
        (json!(1e300), MAX_TOKEN_LIFETIME_SECS),
        (json!(i64::MAX), MAX_TOKEN_LIFETIME_SECS),
        (json!(-5), MIN_TOKEN_LIFETIME_SECS),
        (json!(i64::MIN), MIN_TOKEN_LIFETIME_SECS),
        (json!(0), MIN_TOKEN_LIFETIME_SECS),
        (json!(7200.9), 7200),
        (json!("7200"), 7200),
        (json!(7200), 7200),
    ];
    for (expires_in, expected) in cases {
        let t = token_answer(json!({"access_token": TOKEN, "expires_in": expires_in}))
            .await
            .unwrap_or_else(|e| panic!("{expires_in}: {e}"));
        assert_eq!(t.expires_in_secs, expected, "{expires_in}");
        assert_eq!(t.token, TOKEN);
    }
    for not_a_number in [json!(null), json!({"s": 1}), json!("soon"), json!(true)] {
        let e = token_answer(json!({"access_token": TOKEN, "expires_in": not_a_number}))
            .await
            .expect_err("no lifetime");
        assert!(e.is_transient(), "{e:?}");
        assert!(!e.to_string().contains(TOKEN), "{e}");
    }
    let e = token_answer(json!({"access_token": TOKEN}))
        .await
        .expect_err("no expires_in");
    assert!(e.to_string().contains("no expires_in"), "{e}");
}

#[tokio::test]
async fn errcodes_and_msgids_of_any_size_or_type_never_panic() {
    // A float errcode that is a whole number is read; any other unreadable one makes the
    // answer unreadable (transient, outcome unknown), never a panic.
    let e = token_answer(json!({"errcode": 40013.0, "errmsg": "invalid appid"}))
        .await
        .expect_err("refused");
    assert_eq!(e, TokenError::BadAppId);
    for errcode in [
        json!(18446744073709551615u64),
        json!(1e30),
        json!(40001.5),
        json!([1]),
    ] {
        let body =
            json!({"errcode": errcode, "errmsg": "x", "access_token": TOKEN, "expires_in": 7200});
        let e = token_answer(body).await.expect_err("unreadable errcode");
        assert!(e.is_transient(), "{errcode}: {e:?}");
        assert!(
            !e.to_string().contains(TOKEN),
            "a token answer is never quoted: {e}"
        );
        let server = canned(Body::Json(
            json!({"errcode": errcode, "errmsg": "x"}).to_string(),
        ))
        .await;
        let out = client(&server.base).send_template(TOKEN, &message()).await;
        assert!(matches!(out, Outcome::Unknown { .. }), "{errcode}: {out:?}");
    }
    for (msgid, expected) in [
        (json!(1988810812324364291i64), Some(1988810812324364291)),
        (json!("42"), Some(42)),
        (json!(18446744073709551615u64), None),
        (json!(1.5), None),
        (json!({"id": 1}), None),
    ] {
        let server = canned(Body::Json(
            json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}).to_string(),
        ))
        .await;
        let out = client(&server.base).send_template(TOKEN, &message()).await;
        assert_eq!(out, Outcome::Sent { msgid: expected }, "{msgid}");
    }
}

#[tokio::test]
async fn a_send_answered_without_errcode_is_not_counted_as_sent() {
    // WeChat answers every send with an errcode (0 when sent); a 200 JSON without one came
    // from something else in front of it, and says nothing of the message.
    for body in [
        json!({}),
        json!({"code": 403, "msg": "blocked"}),
        json!({"errcode": null}),
    ] {
        let server = canned(Body::Json(body.to_string())).await;
        let out = client(&server.base).send_template(TOKEN, &message()).await;
        assert!(matches!(out, Outcome::Unknown { .. }), "{body}: {out:?}");
    }
}

#[tokio::test]
async fn an_oversized_answer_is_abandoned_not_read_whole() {
    for announce in [true, false] {
        let server = canned(Body::Endless { announce }).await;
        let c = client(&server.base);
        let out = c.send_template(TOKEN, &message()).await;
        match &out {
            Outcome::Unknown { reason } => assert_eq!(
                reason, "answer over 64 KiB, not read",
                "announce {announce}"
            ),
            other => panic!("announce {announce}: {other:?}"),
        }
        let e = c
            .fetch_token(&app(), &Secret::new(SECRET))
            .await
            .expect_err("oversized");
        assert!(e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("answer over 64 KiB"), "{e}");
        // The server could write what the sockets' buffers hold, never the gigabyte.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let written = server.written.load(Ordering::SeqCst);
        assert!(written < 64 * 1024 * 1024, "{written} bytes sent and read?");
    }
    // Exactly the limit is still read.
    let padded = format!(
        "{{\"errcode\":0,\"errmsg\":\"{}\"}}",
        "x".repeat(MAX_ANSWER_BYTES - 25)
    );
    assert_eq!(padded.len(), MAX_ANSWER_BYTES);
    let server = canned(Body::Json(padded)).await;
    let out = client(&server.base).send_template(TOKEN, &message()).await;
    assert!(out.is_sent(), "{out:?}");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = canned(Body::Json(
        json!({"errcode": 0, "errmsg": "ok"}).to_string(),
    ))
    .await;
    let server = canned(Body::Redirect(format!(
        "{}/cgi-bin/message/wxopen/template/send",
        elsewhere.base
    )))
    .await;
    let c = client(&server.base);
    let out = c.send_template(TOKEN, &message()).await;
    assert_eq!(
        out,
        Outcome::Permanent {
            code: -302,
            errmsg: "HTTP 302: a redirect, not followed".into()
        }
    );
    let e = c
        .fetch_token(&app(), &Secret::new(SECRET))
        .await
        .expect_err("a redirect is an error for a token fetch");
    assert!(matches!(e, TokenError::Other { code: -302, .. }), "{e:?}");
    assert!(!e.to_string().contains(SECRET), "{e}");
    let TokenSource::Service(url) =
        TokenSource::parse(&format!("{}/token", server.base)).expect("service URL")
    else {
        unreachable!()
    };
    let e = c.fetch_service_token(&url).await.expect_err("redirect");
    assert!(matches!(e, TokenError::Other { code: -302, .. }), "{e:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        elsewhere.hits.load(Ordering::SeqCst),
        0,
        "nothing went to the redirect's target"
    );
}

#[tokio::test]
async fn a_token_service_is_read_like_wechat_and_its_url_secrets_never_show() {
    let server = canned(Body::Json(
        json!({"access_token": TOKEN, "expires_in": 18446744073709551615u64}).to_string(),
    ))
    .await;
    let TokenSource::Service(url) =
        TokenSource::parse(&format!("{}/wx/token?key=K3Y-s3cr3t", server.base)).expect("url")
    else {
        unreachable!()
    };
    let c = client("http://127.0.0.1:1");
    let t = c.fetch_service_token(&url).await.expect("service token");
    assert_eq!(t.token, TOKEN);
    assert_eq!(t.expires_in_secs, MAX_TOKEN_LIFETIME_SECS);
    // A service that is down: the error never shows the URL's key.
    let down = TokenSource::parse("http://127.0.0.1:1/wx/token?key=K3Y-s3cr3t").expect("url");
    let TokenSource::Service(down) = down else {
        unreachable!()
    };
    let e = c.fetch_service_token(&down).await.expect_err("down");
    assert!(e.is_transient(), "{e:?}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("K3Y-s3cr3t"), "{text}");
    }
}
