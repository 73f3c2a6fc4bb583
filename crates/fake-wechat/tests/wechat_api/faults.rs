//! Fault knobs and the transient / quota outcome classes: -1, HTTP 500, latency past the
//! client's timeout (ambiguous), 45009 and 45011, deterministic seeding.

use std::time::Duration;

use wxpush_fake_wechat::Faults;
use wxpush_wechat::Outcome;

use crate::common::*;

#[tokio::test]
async fn busy_is_transient_not_ambiguous_and_spends_nothing() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    h.update_faults(|x| x.busy_probability = 1.0)
        .expect("faults");
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert!(
        matches!(out, Outcome::Transient { code: Some(-1), .. }),
        "{out:?}"
    );
    assert_eq!(h.form_id_uses(&f), Some(0));
    h.set_faults(Faults::default()).expect("faults");
    assert!(c
        .send_template(&t.token, &template("oUser1", &f))
        .await
        .is_sent());
}

#[tokio::test]
async fn http_500_is_an_unknown_outcome_though_the_fake_spent_nothing() {
    // An HTTP 5xx is not WeChat's application's answer: the caller cannot tell whether the
    // message went out (here it did not; behind a gateway that lost WeChat's reply, it did).
    let (h, c, t) = ready().await;
    h.grant_consents(None, "oUser1", SUB_TPL, 1).expect("grant");
    h.update_faults(|x| x.http500_probability = 1.0)
        .expect("faults");
    let out = c
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    assert_eq!(h.consents_left(None, "oUser1", SUB_TPL), Ok(1));
    assert_eq!(h.stats().http500s, 1);
    assert_eq!(h.requests().last().map(|r| r.http_status), Some(Some(500)));
}

#[tokio::test]
async fn a_timeout_after_sending_is_ambiguous_and_may_have_been_delivered() {
    let h = start(config()).await;
    let fast = client(&h);
    let t = token(&fast).await;
    let impatient = client_with_timeout(&h, Duration::from_millis(200));
    h.grant_consents(None, "oUser1", SUB_TPL, 1).expect("grant");
    h.update_faults(|x| x.latency_ms = 600).expect("faults");
    let out = impatient
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert!(matches!(out, Outcome::Unknown { .. }), "{out:?}");
    // WeChat (the fake) did act on it: the consent is spent and the message counted.
    assert_eq!(h.consents_left(None, "oUser1", SUB_TPL), Ok(0));
    assert_eq!(h.sends_to("oUser1"), 1);
}

#[tokio::test]
async fn latency_below_the_timeout_only_delays() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    h.update_faults(|x| x.latency_ms = 150).expect("faults");
    let started = std::time::Instant::now();
    assert!(c
        .send_template(&t.token, &template("oUser1", &f))
        .await
        .is_sent());
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn the_per_second_quota_answers_45009() {
    let (h, c, t) = ready().await;
    let f = h.issue_form_ids(None, "oUser1", 10, None).expect("issue");
    h.update_faults(|x| x.send_quota_per_sec = Some(3))
        .expect("faults");
    let started = std::time::Instant::now();
    let mut sent = 0;
    let mut refused = 0;
    for id in &f {
        match c.send_template(&t.token, &template("oUser1", id)).await {
            Outcome::Sent { .. } => sent += 1,
            Outcome::QuotaExhausted => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Ten quick sends span at most two one-second windows of 3 each (if they took < 1 s).
    if started.elapsed() < Duration::from_secs(1) {
        assert!(sent <= 6, "sent {sent}");
    }
    assert!(sent >= 3, "sent {sent}");
    assert!(refused >= 1, "refused {refused}");
    assert_eq!(h.stats().answers_by_errcode.get(&45009), Some(&refused));
}

#[tokio::test]
async fn the_minute_quota_answers_45011() {
    let (h, c, t) = ready().await;
    let f = h.issue_form_ids(None, "oUser1", 5, None).expect("issue");
    h.update_faults(|x| x.minute_quota = Some(2))
        .expect("faults");
    let mut outcomes = Vec::new();
    for id in &f {
        outcomes.push(c.send_template(&t.token, &template("oUser1", id)).await);
    }
    let sent = outcomes.iter().filter(|o| o.is_sent()).count();
    let limited = outcomes
        .iter()
        .filter(|o| **o == Outcome::MinuteQuota)
        .count();
    assert_eq!(sent + limited, 5, "{outcomes:?}");
    assert!((2..=4).contains(&sent), "{outcomes:?}");
    assert!(limited >= 1);
}

#[tokio::test]
async fn a_seed_makes_fault_rolls_and_ids_repeatable() {
    async fn run() -> (Vec<bool>, Vec<String>) {
        let mut cfg = config();
        cfg.seed = Some(7);
        cfg.faults.busy_probability = 0.5;
        let h = start(cfg).await;
        let c = client(&h);
        let t = token(&c).await;
        let ids = h.issue_form_ids(None, "oUser1", 20, None).expect("issue");
        let mut sent = Vec::new();
        for id in &ids {
            sent.push(
                c.send_template(&t.token, &template("oUser1", id))
                    .await
                    .is_sent(),
            );
        }
        (sent, ids)
    }
    let (a, ids_a) = run().await;
    let (b, ids_b) = run().await;
    assert_eq!(ids_a, ids_b);
    assert_eq!(a, b);
    assert!(a.iter().any(|s| *s) && a.iter().any(|s| !*s), "{a:?}");
}

#[tokio::test]
async fn probabilities_outside_0_1_are_refused() {
    let h = start(config()).await;
    assert!(h.update_faults(|x| x.busy_probability = 1.5).is_err());
    assert!(h.update_faults(|x| x.http500_probability = -0.1).is_err());
    assert_eq!(h.faults(), Faults::default());
}

#[tokio::test]
async fn latency_jitter_varies_each_answer_within_its_bound() {
    let (h, c, t) = ready().await;
    let ids = h.issue_form_ids(None, "oUser1", 12, None).expect("issue");
    h.update_faults(|x| {
        x.latency_ms = 20;
        x.latency_jitter_ms = 100;
    })
    .expect("faults");
    let mut elapsed = Vec::new();
    for id in &ids {
        let started = std::time::Instant::now();
        assert!(c
            .send_template(&t.token, &template("oUser1", id))
            .await
            .is_sent());
        elapsed.push(started.elapsed());
    }
    let records: Vec<_> = h.requests().into_iter().skip(1).collect();
    let delays: Vec<u64> = records.iter().map(|r| r.latency_ms).collect();
    assert!(delays.iter().all(|d| (20..=120).contains(d)), "{delays:?}");
    assert!(
        delays.iter().any(|d| *d != delays[0]),
        "jitter varies: {delays:?}"
    );
    for (d, e) in delays.iter().zip(&elapsed) {
        assert!(*e >= Duration::from_millis(*d), "answered after its delay");
    }
}

#[tokio::test]
async fn records_say_when_a_send_arrived_and_when_it_was_judged_in_order() {
    let (h, c, t) = ready().await;
    let ids = h.issue_form_ids(None, "oUser1", 5, None).expect("issue");
    for id in &ids {
        assert!(c
            .send_template(&t.token, &template("oUser1", id))
            .await
            .is_sent());
    }
    let r = h.requests();
    assert!(r
        .iter()
        .all(|r| r.received_at_ms > 1_600_000_000_000 && r.received_at_ms <= r.at_ms));
    assert!(r.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
}
