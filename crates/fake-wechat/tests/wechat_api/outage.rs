//! An outage in front of WeChat (`outageStatus`, `outageTokens`, `outageUntilMs`): every send
//! (and token call, if asked) answers a gateway's status; nothing is judged or spent, for as
//! long as it is set.

use std::time::Duration;

use serde_json::json;
use wxpush_fake_wechat::{Endpoint, Faults};
use wxpush_wechat::Outcome;

use crate::common::*;

#[tokio::test]
async fn an_outage_answers_its_status_and_spends_nothing_until_cleared() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    h.grant_consents(None, "oUser1", SUB_TPL, 1).expect("grant");
    let (status, body) = send_json(
        &h,
        "PUT",
        "/fake/faults",
        r#"{"outageStatus": 503, "minuteQuota": 1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    for _ in 0..3 {
        let got = raw_template_send(&h, &t.token, "oUser1", &f)
            .await
            .expect("an answer");
        assert_eq!(got.status, 503, "{got:?}");
        assert!(got.text.contains("503 Service Unavailable"), "{got:?}");
        assert!(got.content_type.starts_with("text/html"), "{got:?}");
    }
    let out = c
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    // Nothing judged: no credential, consent or quota spent, nobody counted.
    assert_eq!(h.form_id_uses(&f), Some(0));
    assert_eq!(h.consents_left(None, "oUser1", SUB_TPL), Ok(1));
    let st = h.stats();
    assert_eq!((st.sends_accepted, st.outage_answers), (0, 4));
    assert!(st.sends_by_open_id.is_empty());
    let sends: Vec<_> = h
        .requests()
        .into_iter()
        .filter(|r| r.endpoint != Endpoint::Token)
        .collect();
    assert_eq!(sends.len(), 4);
    for r in &sends {
        assert!(r.outage && !r.delivered, "{r:?}");
        assert_eq!((r.http_status, r.errcode), (Some(503), None));
    }
    // Token calls are not in the outage unless asked.
    assert!(c.fetch_token(&app(), &secret()).await.is_ok());

    // Cleared: the same formId sends (the minute quota of 1 was not used by the outage).
    let (status, _) = send_json(&h, "PUT", "/fake/faults", r#"{"minuteQuota": 1}"#).await;
    assert_eq!(status, 200);
    let t = token(&c).await;
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert!(out.is_sent(), "{out:?}");
}

#[tokio::test]
async fn an_outage_with_outage_tokens_refuses_token_calls_too() {
    let h = start(config()).await;
    let c = client(&h);
    h.update_faults(|x| {
        x.outage_status = Some(502);
        x.outage_tokens = true;
    })
    .expect("faults");
    let e = c.fetch_token(&app(), &secret()).await.expect_err("outage");
    assert!(e.is_transient(), "{e:?}");
    let e = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect_err("outage");
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(h.all_token_fetches(APP), 0, "no token issued");
    assert!(h.issued_tokens().is_empty());
    let r = h.requests();
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|r| r.outage && r.http_status == Some(502) && r.errcode.is_none()));
    h.set_faults(Faults::default()).expect("faults");
    assert!(c.fetch_token(&app(), &secret()).await.is_ok());
}

#[tokio::test]
async fn an_outage_with_a_deadline_ends_by_itself() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let until = now + 1_000;
    let (status, body) = send_json(
        &h,
        "PUT",
        "/fake/faults",
        &json!({"outageStatus": 503, "outageUntilMs": until}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut outcomes = Vec::new();
    loop {
        let out = c.send_template(&t.token, &template("oUser1", &f)).await;
        let sent = out.is_sent();
        outcomes.push(out);
        if sent || outcomes.len() > 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        outcomes.last().is_some_and(Outcome::is_sent),
        "{outcomes:?}"
    );
    assert_eq!(h.sends_to("oUser1"), 1);
    let records: Vec<_> = h.requests().into_iter().skip(1).collect();
    let (last, before) = records.split_last().expect("records");
    for r in before {
        assert!(r.outage && r.at_ms < until, "{r:?}");
    }
    assert!(last.at_ms >= until && last.delivered, "{last:?}");
    assert_eq!(h.faults().outage_status, Some(503), "the knob stays as set");
}

#[tokio::test]
async fn an_outage_status_outside_http_is_refused() {
    let h = start(config()).await;
    for bad in [r#"{"outageStatus": 99}"#, r#"{"outageStatus": 600}"#] {
        let (status, body) = send_json(&h, "PUT", "/fake/faults", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("outageStatus")),
            "{body}"
        );
    }
    let mut cfg = config();
    cfg.faults.outage_status = Some(42);
    assert!(wxpush_fake_wechat::FakeWeChat::new(cfg).is_err());
}
