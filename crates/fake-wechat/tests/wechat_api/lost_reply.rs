//! Deliver, then lose the reply (`lostReplyProbability`, `lostReplyMode`): WeChat's side acts
//! on the send exactly as on a successful one, and the caller gets a gateway's status, a reset
//! connection or nothing before its timeout. Checked from both sides: what WeChat recorded and
//! counted, and what the caller received.

use std::time::{Duration, Instant};

use serde_json::json;
use wxpush_fake_wechat::{Endpoint, LostReplyMode, RequestRecord};
use wxpush_wechat::Outcome;

use crate::common::*;

fn sends(h: &wxpush_fake_wechat::FakeHandle) -> Vec<RequestRecord> {
    h.requests()
        .into_iter()
        .filter(|r| matches!(r.endpoint, Endpoint::TemplateSend | Endpoint::SubscribeSend))
        .collect()
}

/// Whether a connection reset (not a timeout, not a clean close) is somewhere in `err`'s chain.
fn is_reset(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

fn lose_every_reply(h: &wxpush_fake_wechat::FakeHandle, mode: LostReplyMode) {
    h.update_faults(|f| {
        f.lost_reply_probability = 1.0;
        f.lost_reply_mode = mode;
    })
    .expect("faults");
}

#[tokio::test]
async fn a_lost_reply_delivers_then_answers_a_gateway_504_and_a_resent_form_id_answers_41029() {
    let (h, _c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    lose_every_reply(&h, LostReplyMode::Status);

    let got = raw_template_send(&h, &t.token, "oUser1", &f)
        .await
        .expect("an answer");
    assert_eq!(got.status, 504, "{got:?}");
    assert!(got.content_type.starts_with("text/html"), "{got:?}");
    assert!(got.text.contains("504 Gateway Timeout"), "{got:?}");
    assert!(
        !got.text.contains("errcode"),
        "not WeChat's answer: {got:?}"
    );

    // WeChat's side delivered it.
    assert_eq!(h.form_id_uses(&f), Some(1));
    assert_eq!(h.sends_to("oUser1"), 1);
    let st = h.stats();
    assert_eq!(st.sends_accepted, 1);
    assert_eq!(st.lost_replies, 1);
    let r = &sends(&h)[0];
    assert!(r.delivered, "{r:?}");
    assert_eq!(r.lost_reply, Some(LostReplyMode::Status));
    assert_eq!(r.http_status, Some(504));
    assert_eq!(r.errcode, None, "the caller got no errcode");

    // The caller, not knowing, sends the same formId again: WeChat refuses it, and the refusal
    // is answered (only deliveries lose their reply).
    let got = raw_template_send(&h, &t.token, "oUser1", &f)
        .await
        .expect("an answer");
    assert_eq!(got.status, 200);
    let body: serde_json::Value = serde_json::from_str(&got.text).expect("WeChat JSON");
    assert_eq!(body["errcode"], 41029, "{body}");
    assert_eq!(h.sends_to("oUser1"), 1, "still one message");
    assert!(h.users_sent_more_than(1).is_empty());
    let r = &sends(&h)[1];
    assert!(!r.delivered);
    assert_eq!(
        (r.errcode, r.http_status, r.lost_reply),
        (Some(41029), Some(200), None)
    );
    // Errcodes count what callers received: the token's 0 and the 41029, not the lost 0.
    assert_eq!(h.stats().answers_by_errcode.get(&0), Some(&1));
    assert_eq!(h.stats().answers_by_errcode.get(&41029), Some(&1));
}

#[tokio::test]
async fn a_prepay_ids_three_uses_are_three_deliveries_when_every_reply_is_lost() {
    let (h, c, t) = ready().await;
    let p = h
        .issue_prepay_ids(None, "oUser1", 1, None)
        .expect("issue")
        .remove(0);
    lose_every_reply(&h, LostReplyMode::Status);
    for n in 1..=3 {
        let out = c.send_template(&t.token, &template("oUser1", &p)).await;
        assert!(matches!(out, Outcome::Unknown { .. }), "use {n}: {out:?}");
        assert_eq!(h.form_id_uses(&p), Some(n));
        assert_eq!(h.sends_to("oUser1"), u64::from(n));
    }
    let out = c.send_template(&t.token, &template("oUser1", &p)).await;
    assert_eq!(out, Outcome::BadCredential { code: 41029 }, "the 4th use");
    let records = sends(&h);
    assert_eq!(
        records.iter().map(|r| r.delivered).collect::<Vec<_>>(),
        [true, true, true, false]
    );
    assert_eq!(h.stats().sends_accepted, 3);
    assert_eq!(h.stats().lost_replies, 3);
    assert_eq!(
        h.users_sent_more_than(1).get("oUser1"),
        Some(&3),
        "three messages reached the user"
    );
}

#[tokio::test]
async fn a_subscribe_send_with_a_lost_reply_spends_the_consent_and_issues_the_msgid() {
    let (h, c, t) = ready().await;
    h.grant_consents(None, "oUser1", SUB_TPL, 1).expect("grant");
    lose_every_reply(&h, LostReplyMode::Status);
    h.update_faults(|f| f.lost_reply_status = 502)
        .expect("faults");
    let out = c
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert!(!out.is_sent(), "{out:?}");
    assert_eq!(h.consents_left(None, "oUser1", SUB_TPL), Ok(0));
    assert_eq!(h.stats().msgids_issued, 1);
    let r = &sends(&h)[0];
    assert!(r.delivered);
    assert!(r.msgid.is_some(), "{r:?}");
    assert_eq!(r.http_status, Some(502));
    // A resend finds no consent left, and is answered.
    let out = c
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert_eq!(out, Outcome::NoConsent);
    assert_eq!(h.sends_to("oUser1"), 1);
}

#[tokio::test]
async fn a_lost_reply_reset_closes_the_connection_without_an_answer() {
    let (h, c, t) = ready().await;
    let f = h.issue_form_ids(None, "oUser1", 3, None).expect("issue");
    lose_every_reply(&h, LostReplyMode::Reset);

    let err = raw_template_send(&h, &t.token, "oUser1", &f[0])
        .await
        .expect_err("no answer");
    assert!(!err.is_timeout() && !err.is_connect(), "{err:?}");
    assert!(err.status().is_none(), "{err:?}");
    assert!(is_reset(&err), "a TCP reset, not a close: {err:?}");

    // Through wxpush's client: the request went out, the answer never came.
    let out = c.send_template(&t.token, &template("oUser1", &f[1])).await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    assert_eq!(h.form_id_uses(&f[0]), Some(1));
    assert_eq!(h.form_id_uses(&f[1]), Some(1));
    assert_eq!(h.sends_to("oUser1"), 2);
    for r in sends(&h) {
        assert!(r.delivered, "{r:?}");
        assert_eq!(r.lost_reply, Some(LostReplyMode::Reset));
        assert_eq!(r.http_status, None, "nothing was answered");
        assert_eq!(r.errcode, None);
    }
    // Other connections are untouched: with the knob off, the next send is answered.
    h.update_faults(|x| x.lost_reply_probability = 0.0)
        .expect("faults");
    let out = c.send_template(&t.token, &template("oUser1", &f[2])).await;
    assert!(out.is_sent(), "{out:?}");
}

#[tokio::test]
async fn a_lost_reply_hang_answers_only_after_the_callers_timeout() {
    let (h, _c, t) = ready().await;
    let f = h.issue_form_ids(None, "oUser1", 2, None).expect("issue");
    lose_every_reply(&h, LostReplyMode::Hang);
    h.update_faults(|x| x.lost_reply_hang_ms = 1_500)
        .expect("faults");

    let impatient = client_with_timeout(&h, Duration::from_millis(200));
    let out = impatient
        .send_template(&t.token, &template("oUser1", &f[0]))
        .await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    assert_eq!(h.form_id_uses(&f[0]), Some(1), "delivered before the hang");

    // A caller that waits longer gets the gateway's 504, no sooner than the hang.
    h.update_faults(|x| x.lost_reply_hang_ms = 300)
        .expect("faults");
    let started = Instant::now();
    let got = raw_template_send(&h, &t.token, "oUser1", &f[1])
        .await
        .expect("an answer after the hang");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(got.status, 504, "{got:?}");
    let r = sends(&h);
    assert_eq!(r[0].lost_reply, Some(LostReplyMode::Hang));
    assert_eq!((r[0].latency_ms, r[0].http_status), (1_500, Some(504)));
    assert_eq!(r[1].latency_ms, 300);
    assert!(r.iter().all(|r| r.delivered));
    assert_eq!(h.sends_to("oUser1"), 2);
}

#[tokio::test]
async fn lost_replies_follow_the_seed_and_every_send_is_delivered() {
    async fn run() -> Vec<bool> {
        let mut cfg = config();
        cfg.seed = Some(11);
        cfg.faults.lost_reply_probability = 0.5;
        let h = start(cfg).await;
        let c = client(&h);
        let t = token(&c).await;
        let ids = h.issue_form_ids(None, "oUser1", 20, None).expect("issue");
        let mut answered = Vec::new();
        for id in &ids {
            answered.push(
                c.send_template(&t.token, &template("oUser1", id))
                    .await
                    .is_sent(),
            );
        }
        let st = h.stats();
        let answered_ok = answered.iter().filter(|a| **a).count() as u64;
        assert_eq!(st.sends_accepted, 20, "every send delivered");
        assert_eq!(st.lost_replies, 20 - answered_ok);
        // The token fetch's 0 and the sends answered 0.
        assert_eq!(st.answers_by_errcode.get(&0), Some(&(answered_ok + 1)));
        answered
    }
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(a.iter().any(|s| *s) && a.iter().any(|s| !*s), "{a:?}");
}

#[tokio::test]
async fn lost_reply_knobs_and_record_fields_by_their_json_names() {
    let (h, _c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    let (status, set) = send_json(
        &h,
        "PUT",
        "/fake/faults",
        r#"{"lostReplyProbability": 1.0, "lostReplyMode": "reset", "lostReplyStatus": 502,
            "lostReplyHangMs": 90000}"#,
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let faults = h.faults();
    assert_eq!(faults.lost_reply_probability, 1.0);
    assert_eq!(faults.lost_reply_mode, LostReplyMode::Reset);
    assert_eq!(faults.lost_reply_status, 502);
    assert_eq!(faults.lost_reply_hang_ms, 90_000);
    let _ = raw_template_send(&h, &t.token, "oUser1", &f).await;
    let (_, records) = get_json(&h, "/fake/requests?since=1").await;
    let r = &records[0];
    assert_eq!(r["delivered"], true, "{r}");
    assert_eq!(r["lostReply"], "reset", "{r}");
    assert_eq!(r["httpStatus"], json!(null), "{r}");
    assert_eq!(r["errcode"], json!(null), "{r}");
    assert_eq!(
        (&r["outage"], &r["msgid"]),
        (&json!(false), &json!(null)),
        "{r}"
    );
    assert!(r["receivedAtMs"].as_u64() <= r["atMs"].as_u64(), "{r}");
    assert!(r["receivedAtMs"].as_u64() > Some(1_600_000_000_000), "{r}");
    assert_eq!(r["latencyMs"], 0, "{r}");
    let (_, stats) = get_json(&h, "/fake/stats").await;
    assert_eq!(stats["lostReplies"], 1);
    assert_eq!(stats["sendsAccepted"], 1);
    assert_eq!(stats["sendsByOpenId"]["oUser1"], 1);

    for bad in [
        r#"{"lostReplyProbability": 1.5}"#,
        r#"{"lostReplyStatus": 99}"#,
        r#"{"lostReplyMode": "vanish"}"#,
    ] {
        let (status, body) = send_json(&h, "PUT", "/fake/faults", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(h.faults(), faults, "refused changes changed nothing");
}
