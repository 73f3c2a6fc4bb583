//! Access token rules: appid/secret checks, lifetime, the 5-minute grace of the previous
//! token, stable tokens, fetch counting, the token outage switch.

use std::time::Duration;

use wxpush_domain::{AppId, Secret};
use wxpush_fake_wechat::Endpoint;
use wxpush_wechat::{Outcome, TokenError};

use crate::common::*;

#[tokio::test]
async fn token_is_issued_with_lifetime_and_counted_per_app() {
    let h = start(config()).await;
    let c = client(&h);
    let t = token(&c).await;
    assert_eq!(t.expires_in_secs, 7200);
    assert_eq!(t.token.len(), 64);
    let t2 = c
        .fetch_token(&AppId::new(APP2).expect("appid"), &Secret::new(SECRET2))
        .await
        .expect("second app");
    assert_ne!(t.token, t2.token);
    assert_eq!(h.token_fetches(APP), 1);
    assert_eq!(h.token_fetches(APP2), 1);
    let r = h.requests();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].endpoint, Endpoint::Token);
    assert_eq!(r[0].app_id.as_deref(), Some(APP));
    assert_eq!(r[0].errcode, Some(0));
}

#[tokio::test]
async fn bad_appid_and_bad_secret_are_typed() {
    let h = start(config()).await;
    let c = client(&h);
    let e = c
        .fetch_token(&AppId::new("wxnotanapp000000").expect("appid"), &secret())
        .await
        .expect_err("unknown appid");
    assert_eq!(e, TokenError::BadAppId);
    let e = c
        .fetch_token(&app(), &Secret::new("wrong"))
        .await
        .expect_err("wrong secret");
    assert_eq!(e, TokenError::BadSecret { code: 40125 });
    // A secret of another app is wrong too.
    let e = c
        .fetch_stable_token(&app(), &Secret::new(SECRET2), false)
        .await
        .expect_err("other app's secret");
    assert_eq!(e, TokenError::BadSecret { code: 40125 });
    assert!(!e.is_transient());
    assert_eq!(h.token_fetches(APP), 0);
}

#[tokio::test]
async fn wrong_grant_type_answers_40002() {
    let h = start(config()).await;
    let (status, body) = get_json(
        &h,
        &format!("/cgi-bin/token?grant_type=password&appid={APP}&secret={SECRET}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["errcode"], 40002);
    assert_eq!(h.token_fetches(APP), 0);
}

#[tokio::test]
async fn previous_token_works_for_the_grace_then_is_not_latest() {
    let mut cfg = config();
    cfg.token_grace_ms = 400;
    let h = start(cfg).await;
    let c = client(&h);
    let old = token(&c).await;
    let new = token(&c).await;
    assert_ne!(old.token, new.token);
    assert_eq!(h.token_fetches(APP), 2);

    let f = h.issue_form_ids(None, "oUser1", 3, None).expect("issue");
    let out = c
        .send_template(&old.token, &template("oUser1", &f[0]))
        .await;
    assert_eq!(out, Outcome::Sent { msgid: None }, "old token within grace");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = c
        .send_template(&old.token, &template("oUser1", &f[1]))
        .await;
    assert_eq!(
        out,
        Outcome::BadToken { code: 40001 },
        "old token after grace: WeChat's 'invalid or not latest'"
    );
    assert_eq!(h.form_id_uses(&f[1]), Some(0), "nothing spent");
    let out = c
        .send_template(&new.token, &template("oUser1", &f[1]))
        .await;
    assert!(out.is_sent(), "{out:?}");
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime_and_unknown_ones_are_40001() {
    let mut cfg = config();
    cfg.token_lifetime_ms = 1_000;
    let h = start(cfg).await;
    let c = client(&h);
    let t = token(&c).await;
    assert_eq!(t.expires_in_secs, 1);
    let f = h.issue_form_ids(None, "oUser1", 2, None).expect("issue");

    let out = c
        .send_template("NOT-A-TOKEN", &template("oUser1", &f[0]))
        .await;
    assert_eq!(out, Outcome::BadToken { code: 40001 });

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let out = c.send_template(&t.token, &template("oUser1", &f[0])).await;
    assert_eq!(out, Outcome::BadToken { code: 42001 });
    assert_eq!(h.sends_to("oUser1"), 0);
}

#[tokio::test]
async fn expire_tokens_control_makes_42001() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    assert_eq!(h.expire_tokens(None), Ok(1));
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert_eq!(out, Outcome::BadToken { code: 42001 });
}

#[tokio::test]
async fn stable_token_is_the_same_while_valid_and_separate_from_token() {
    let h = start(config()).await;
    let c = client(&h);
    let s1 = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    let s2 = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable again");
    assert_eq!(s1.token, s2.token);
    assert!(s2.expires_in_secs <= 7200 && s2.expires_in_secs > 7000);
    let plain = token(&c).await;
    assert_ne!(plain.token, s1.token);
    let s3 = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable after a /cgi-bin/token fetch");
    assert_eq!(s3.token, s1.token, "/cgi-bin/token does not touch it");
    let forced = c
        .fetch_stable_token(&app(), &secret(), true)
        .await
        .expect("forced");
    assert_ne!(forced.token, s1.token);
    let st = h.stats();
    assert_eq!(st.stable_token_fetches.get(APP), Some(&4));
    assert_eq!(st.token_fetches.get(APP), Some(&1));

    // Both kinds of token send.
    let f = h.issue_form_ids(None, "oUser1", 2, None).expect("issue");
    assert!(c
        .send_template(&forced.token, &template("oUser1", &f[0]))
        .await
        .is_sent());
    assert!(c
        .send_template(&plain.token, &template("oUser1", &f[1]))
        .await
        .is_sent());
}

#[tokio::test]
async fn stable_token_renews_near_expiry() {
    let mut cfg = config();
    cfg.token_lifetime_ms = 1_000;
    cfg.token_grace_ms = 300_000;
    let h = start(cfg).await;
    let c = client(&h);
    let s1 = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    // Renewed once less than min(grace, lifetime / 2) = 500 ms is left.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s2 = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    assert_ne!(s1.token, s2.token);
    let f = form_id(&h, "oUser1");
    assert!(
        c.send_template(&s1.token, &template("oUser1", &f))
            .await
            .is_sent(),
        "the old stable token still works until its own expiry"
    );
}

#[tokio::test]
async fn token_outage_answers_busy_then_recovers() {
    let h = start(config()).await;
    let c = client(&h);
    h.token_outage(Duration::from_millis(300));
    let e = c.fetch_token(&app(), &secret()).await.expect_err("outage");
    assert!(e.is_transient());
    assert!(
        matches!(e, TokenError::Transient { code: Some(-1), .. }),
        "{e:?}"
    );
    let e = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect_err("outage");
    assert!(e.is_transient());
    assert_eq!(h.token_fetches(APP), 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(c.fetch_token(&app(), &secret()).await.is_ok());
    assert_eq!(h.token_fetches(APP), 1);
}

#[tokio::test]
async fn another_callers_classic_fetches_end_classic_tokens_after_the_grace_never_stable_ones() {
    let mut cfg = config();
    cfg.token_grace_ms = 100;
    let h = start(cfg).await;
    let ours = client(&h);
    let stable = ours
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    let classic = token(&ours).await;
    // Someone else's server fetches classic tokens for the same appid, again and again.
    let theirs = client(&h);
    for _ in 0..5 {
        token(&theirs).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let f = h.issue_form_ids(None, "oUser1", 2, None).expect("issue");
    let out = ours
        .send_template(&classic.token, &template("oUser1", &f[0]))
        .await;
    assert_eq!(out, Outcome::BadToken { code: 40001 }, "our classic token");
    let out = ours
        .send_template(&stable.token, &template("oUser1", &f[0]))
        .await;
    assert!(out.is_sent(), "our stable token: {out:?}");
    let again = ours
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    assert_eq!(again.token, stable.token);
}

#[tokio::test]
async fn force_refresh_is_limited_to_20_a_day_and_refreshes_at_most_every_30_s() {
    let h = start(config()).await;
    let c = client(&h);
    let first = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    let forced = c
        .fetch_stable_token(&app(), &secret(), true)
        .await
        .expect("forced");
    assert_ne!(forced.token, first.token, "the first forced call refreshes");
    // Within 30 s of that refresh, forced calls count but do not refresh.
    for n in 2..=20 {
        let again = c
            .fetch_stable_token(&app(), &secret(), true)
            .await
            .unwrap_or_else(|e| panic!("forced call {n}: {e}"));
        assert_eq!(again.token, forced.token, "forced call {n} within 30 s");
    }
    let e = c
        .fetch_stable_token(&app(), &secret(), true)
        .await
        .expect_err("the 21st forced call of the day");
    assert_eq!(
        e,
        TokenError::Other {
            code: 45009,
            errmsg: "reach max api daily quota limit".into()
        }
    );
    // Without force_refresh the current token is still answered.
    let plain = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    assert_eq!(plain.token, forced.token);
    let st = h.stats();
    assert_eq!(st.stable_token_forced.get(APP), Some(&20));
    let forced_records = h.requests().iter().filter(|r| r.forced).count();
    assert_eq!(
        forced_records, 21,
        "every forced call is recorded as forced"
    );
}

#[tokio::test]
async fn a_revoked_stable_token_is_answered_until_force_refresh_replaces_it() {
    let h = start(config()).await;
    let c = client(&h);
    let t = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    assert_eq!(h.revoke_tokens(None), Ok(1));
    let f = h.issue_form_ids(None, "oUser1", 1, None).expect("issue");
    let out = c.send_template(&t.token, &template("oUser1", &f[0])).await;
    assert_eq!(out, Outcome::BadToken { code: 40001 });
    let same = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable");
    assert_eq!(same.token, t.token, "stable_token does not know");
    let new = c
        .fetch_stable_token(&app(), &secret(), true)
        .await
        .expect("forced");
    assert_ne!(new.token, t.token);
    assert!(c
        .send_template(&new.token, &template("oUser1", &f[0]))
        .await
        .is_sent());
}

#[tokio::test]
async fn token_latency_issues_the_token_only_when_answering_and_a_caller_that_gave_up_gets_nothing()
{
    let (h, c, t) = ready().await;
    let f = h.issue_form_ids(None, "oUser1", 2, None).expect("issue");
    // Mid-campaign: every token revoked, and the next fetch is slow.
    assert_eq!(h.revoke_tokens(None), Ok(1));
    let out = c.send_template(&t.token, &template("oUser1", &f[0])).await;
    assert_eq!(out, Outcome::BadToken { code: 40001 });
    let (status, body) = send_json(&h, "PUT", "/fake/faults", r#"{"tokenLatencyMs": 2000}"#).await;
    assert_eq!(status, 200, "{body}");

    let impatient = client_with_timeout(&h, Duration::from_millis(200));
    let e = impatient
        .fetch_token(&app(), &secret())
        .await
        .expect_err("gave up waiting");
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(
        h.token_fetches(APP),
        1,
        "not issued while the caller waited"
    );
    assert_eq!(h.requests().len(), 2, "not judged yet");

    // WeChat's side issues it when the delay is over, though nobody is listening.
    assert!(eventually(Duration::from_secs(10), || h.token_fetches(APP) == 2).await);
    let r = h.requests().pop().expect("the slow fetch's record");
    assert_eq!((r.endpoint, r.errcode), (Endpoint::Token, Some(0)));
    assert!(
        r.at_ms >= r.received_at_ms + 2_000,
        "judged after the delay: {r:?}"
    );

    // A patient caller gets its token after the delay, and it sends.
    h.update_faults(|x| x.token_latency_ms = 300)
        .expect("faults");
    let started = std::time::Instant::now();
    let s = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable token after the delay");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = h.requests().pop().expect("record");
    assert_eq!(r.endpoint, Endpoint::StableToken);
    assert!(r.at_ms >= r.received_at_ms + 300, "{r:?}");
    let out = c.send_template(&s.token, &template("oUser1", &f[1])).await;
    assert!(out.is_sent(), "{out:?}");
}

#[tokio::test]
async fn a_token_request_has_its_own_longer_timeout() {
    let h = start(config()).await;
    h.update_faults(|f| f.token_latency_ms = 600)
        .expect("faults");
    let mut cfg = wxpush_wechat::ClientConfig::with_base_url(h.base_url());
    cfg.request_timeout = Duration::from_millis(200);
    cfg.token_timeout = Duration::from_secs(3);
    let c = wxpush_wechat::Client::new(&cfg).expect("client builds");
    // Slower than a send may take, within the token timeout: the token comes.
    let t = c.fetch_token(&app(), &secret()).await.expect("token");
    assert!(!t.token.is_empty());
    let t = c
        .fetch_stable_token(&app(), &secret(), false)
        .await
        .expect("stable token");
    assert!(!t.token.is_empty());
    // A hung endpoint is given up after the token timeout, not waited for.
    h.update_faults(|f| f.token_latency_ms = 10_000)
        .expect("faults");
    let started = std::time::Instant::now();
    let e = c.fetch_token(&app(), &secret()).await.expect_err("gave up");
    assert!(e.is_transient(), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
