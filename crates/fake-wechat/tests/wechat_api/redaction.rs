//! Secrets and tokens never appear in an error's `Display` or `Debug`, including errors that
//! reqwest builds from URLs holding `secret=` or `access_token=`.

use std::time::Duration;

use wxpush_domain::Secret;
use wxpush_wechat::Outcome;

use crate::common::*;

fn assert_hidden(text: &str, needle: &str) {
    assert!(!text.contains(needle), "{needle:?} leaked in {text}");
}

#[tokio::test]
async fn a_wrong_secret_never_shows_in_the_error() {
    let h = start(config()).await;
    let c = client(&h);
    let wrong = "WRONG-secret-value-4242424242";
    let e = c
        .fetch_token(&app(), &Secret::new(wrong))
        .await
        .expect_err("wrong secret");
    assert_hidden(&e.to_string(), wrong);
    assert_hidden(&format!("{e:?}"), wrong);
    let e = c
        .fetch_stable_token(&app(), &Secret::new(wrong), false)
        .await
        .expect_err("wrong secret");
    assert_hidden(&e.to_string(), wrong);
    assert_hidden(&format!("{e:?}"), wrong);
}

#[tokio::test]
async fn a_token_timeout_never_shows_the_secret() {
    let h = start(config()).await;
    h.update_faults(|f| f.latency_ms = 500).expect("faults");
    let c = client_with_timeout(&h, Duration::from_millis(100));
    let e = c.fetch_token(&app(), &secret()).await.expect_err("timeout");
    assert!(e.is_transient());
    for text in [e.to_string(), format!("{e:?}")] {
        assert_hidden(&text, SECRET);
        assert_hidden(&text, "secret=");
    }
}

#[tokio::test]
async fn a_send_timeout_or_rejection_never_shows_the_token() {
    let (h, _c, t) = ready().await;
    assert_hidden(&format!("{t:?}"), &t.token);
    let f = form_id(&h, "oUser1");
    h.update_faults(|x| x.latency_ms = 500).expect("faults");
    let c = client_with_timeout(&h, Duration::from_millis(100));
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    for text in [out.to_string(), format!("{out:?}")] {
        assert_hidden(&text, &t.token);
        assert_hidden(&text, "access_token=");
    }
    h.set_faults(Default::default()).expect("faults");
    h.expire_tokens(None).expect("expire");
    let c = client(&h);
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert_eq!(out, Outcome::BadToken { code: 42001 });
    assert_hidden(&format!("{out} {out:?}"), &t.token);
}
