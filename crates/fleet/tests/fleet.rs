//! The fleet's guarantees against the machine's real Redis and the in-process fake WeChat:
//! one token fetch for a whole fleet (tasks, instances, processes), one refresh per burst of
//! invalidations, bounded refreshes under an invalidation loop, refusals remembered and never
//! showing the secret, the fleet-wide rate bound, and the fleet-wide pause. The token tests use
//! the classic `/cgi-bin/token` source, where each fetch is a new token (see `support::store`);
//! the ones that also hold for the default `stable` source run with both. Sources, bounds and
//! `force_refresh`: `tokens.rs`.

mod support;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use wxpush_domain::{AppId, Namespace, OpenId, Secret, TokenSource};
use wxpush_fake_wechat::{Endpoint, FakeApp, FakeConfig, FakeWeChat};
use wxpush_fleet::{
    FleetPause, Invalidation, PauseSettings, RateLimiter, RateSettings, TokenSettings, TokenStore,
    TokenStoreError,
};
use wxpush_wechat::{Outcome, TemplateMessage, TokenError};

fn fingerprint(token: &str) -> u64 {
    let mut h = DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

/// Token requests the fake answered for its default app from `source`'s endpoint.
fn fetched_from(fake: &FakeWeChat, source: &TokenSource) -> u64 {
    let stats = fake.stats();
    let per_app = match source {
        TokenSource::Stable => &stats.stable_token_fetches,
        _ => &stats.token_fetches,
    };
    per_app
        .get(wxpush_fake_wechat::DEFAULT_APP_ID)
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_across_instances_fetch_once() {
    for source in [TokenSource::Classic, TokenSource::Stable] {
        concurrent_gets_fetch_once_from(source).await;
    }
}

async fn concurrent_gets_fetch_once_from(source: TokenSource) {
    let ns = TestNs::new("gets");
    let fake = fake(7_200_000).await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(store_from(&ns, &fake.base_url(), source.clone(), settings()).await);
    }
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = stores[i % stores.len()].clone();
            tokio::spawn(async move { s.get().await.unwrap() })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap().expose().to_owned());
    }
    assert_eq!(seen.len(), 1, "every caller gets the same token ({source})");
    assert_eq!(fetched_from(&fake, &source), 1, "{source}");
    assert_eq!(fake.stats().requests, 1, "{source}: nothing else was asked");
    assert_eq!(stores.iter().map(TokenStore::fetches).sum::<u64>(), 1);
}

/// Run by `processes_share_one_fetch` in child processes; does nothing when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of processes_share_one_fetch"]
async fn token_child() {
    let (Ok(ns), Ok(base), Ok(at)) = (
        std::env::var("FLEET_TEST_CHILD_NS"),
        std::env::var("FLEET_TEST_CHILD_BASE"),
        std::env::var("FLEET_TEST_CHILD_AT"),
    ) else {
        return;
    };
    let store = TokenStore::new(
        conn().await,
        Namespace::new(&ns).unwrap(),
        client(&base),
        app(),
        Secret::new(wxpush_fake_wechat::DEFAULT_SECRET),
        TokenSource::Classic,
        settings(),
    );
    let at: u64 = at.parse().unwrap();
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.get().await.unwrap() })
        })
        .collect();
    let mut out = String::new();
    for t in tasks {
        let token = t.await.unwrap();
        out.push_str(&format!("TOKEN {}\n", fingerprint(token.expose())));
    }
    out.push_str(&format!("FETCHES {}\n", store.fetches()));
    print!("{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_one_fetch() {
    let ns = TestNs::new("procs");
    let fake = fake(7_200_000).await;
    let store = store(&ns, &fake.base_url(), settings()).await;
    // Everyone starts at the same moment, once the children are up.
    let at = now_ms() + 1_500;
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "token_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("FLEET_TEST_CHILD_NS", ns.ns.as_str())
                .env("FLEET_TEST_CHILD_BASE", fake.base_url())
                .env("FLEET_TEST_CHILD_AT", at.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
    let mut tokens = HashSet::new();
    tokens.insert(fingerprint(store.get().await.unwrap().expose()));
    let mut fetches = store.fetches();
    let mut child_tokens = 0;
    // The children's output comes through blocking pipes: read it off the runtime.
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for out in outputs {
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            if let Some((_, t)) = line.split_once("TOKEN ") {
                tokens.insert(t.parse::<u64>().unwrap());
                child_tokens += 1;
            } else if let Some((_, n)) = line.split_once("FETCHES ") {
                fetches += n.parse::<u64>().unwrap();
            }
        }
    }
    assert_eq!(child_tokens, 30, "every child task got a token");
    assert_eq!(tokens.len(), 1, "all processes share one token");
    assert_eq!(fetches, 1, "one fetch for the whole fleet");
    assert_eq!(fake.token_fetches(wxpush_fake_wechat::DEFAULT_APP_ID), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_invalidations_refreshes_once() {
    let ns = TestNs::new("burst");
    let fake = fake(7_200_000).await;
    let a = store(&ns, &fake.base_url(), settings()).await;
    let b = store(&ns, &fake.base_url(), settings()).await;
    let failed = a.get().await.unwrap();
    assert_eq!(b.get().await.unwrap(), failed);
    // Older than the minimum refresh interval (100 ms).
    tokio::time::sleep(Duration::from_millis(150)).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let failed = failed.clone();
            tokio::spawn(async move {
                let what = s.invalidate(&failed).await.unwrap();
                (what, s.get().await.unwrap())
            })
        })
        .collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut fresh = HashSet::new();
    for t in tasks {
        let (what, token) = t.await.unwrap();
        *outcomes.entry(format!("{what:?}")).or_default() += 1;
        assert_ne!(token, failed, "nobody gets the failed token back");
        fresh.insert(token.expose().to_owned());
    }
    assert_eq!(outcomes.get("Invalidated"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("AlreadyReplaced"), Some(&99), "{outcomes:?}");
    assert_eq!(fresh.len(), 1);
    assert_eq!(
        a.fetches() + b.fetches(),
        2,
        "the first fetch and one refresh"
    );

    // A stale token (already replaced) changes nothing.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        a.invalidate(&failed).await.unwrap(),
        Invalidation::AlreadyReplaced
    );
    let c = store(&ns, &fake.base_url(), settings()).await;
    assert_eq!(
        c.invalidate(&failed).await.unwrap(),
        Invalidation::AlreadyReplaced
    );
    assert!(fresh.contains(c.get().await.unwrap().expose()));
    assert_eq!(a.fetches() + b.fetches() + c.fetches(), 2);
    assert_eq!(fake.token_fetches(wxpush_fake_wechat::DEFAULT_APP_ID), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_ahead_of_expiry_during_a_run() {
    for source in [TokenSource::Classic, TokenSource::Stable] {
        refreshed_ahead_of_expiry_from(source).await;
    }
}

async fn refreshed_ahead_of_expiry_from(source: TokenSource) {
    let ns = TestNs::new("expiry");
    let fake = fake(3_000).await;
    let sender = client(&fake.base_url());
    let stores = [
        store_from(&ns, &fake.base_url(), source.clone(), settings()).await,
        store_from(&ns, &fake.base_url(), source.clone(), settings()).await,
    ];
    let msg = TemplateMessage {
        touser: OpenId::new("o-nobody").unwrap(),
        template_id: "TPL".into(),
        page: None,
        form_id: "nothing".into(),
        data: BTreeMap::new(),
        emphasis_keyword: None,
    };
    let end = Instant::now() + Duration::from_secs(8);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let s = stores[i % 2].clone();
            let (sender, msg) = (sender.clone(), msg.clone());
            tokio::spawn(async move {
                let mut calls = 0u32;
                while Instant::now() < end {
                    let token = s.get().await.unwrap();
                    assert!(
                        token.expires_at_ms() > now_ms() && !token.remaining().is_zero(),
                        "an expired token was handed out"
                    );
                    // The fake checks the token first: anything but a token error means the
                    // fake still accepts it.
                    let outcome = sender.send_template(token.expose(), &msg).await;
                    assert!(
                        !matches!(outcome, Outcome::BadToken { .. }),
                        "the fake refused a token handed out: {outcome}"
                    );
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.unwrap();
    }
    let fetches = fetched_from(&fake, &source);
    // Due 0.75 s before each 3 s lifetime ends: a fetch every ~2.25 s, 4 in 8 s. (A stable
    // token is renewed by WeChat once less than half its life is left: by then.)
    assert!(
        (3..=5).contains(&fetches),
        "{source}: {fetches} fetches in 8 s"
    );
    assert_eq!(stores.iter().map(TokenStore::fetches).sum::<u64>(), fetches);
    assert!(calls > 100, "{source}: only {calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_loop_cannot_refresh_faster_than_the_minimum_interval() {
    let ns = TestNs::new("loop");
    let fake = fake(7_200_000).await;
    let s = TokenSettings {
        min_refresh_interval: Duration::from_millis(500),
        ..settings()
    };
    let stores = [
        store(&ns, &fake.base_url(), s.clone()).await,
        store(&ns, &fake.base_url(), s.clone()).await,
    ];
    let end = Instant::now() + Duration::from_secs(2);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let s = stores[i % 2].clone();
            tokio::spawn(async move {
                let mut too_young = 0;
                while Instant::now() < end {
                    // As a broken WeChat (or a broken fleet) would: every token "fails".
                    let token = s.get().await.unwrap();
                    if s.invalidate(&token).await.unwrap() == Invalidation::TooYoung {
                        too_young += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                too_young
            })
        })
        .collect();
    let mut too_young = 0;
    for t in tasks {
        too_young += t.await.unwrap();
    }
    let fetches = fake.token_fetches(wxpush_fake_wechat::DEFAULT_APP_ID);
    // At most one refresh per 500 ms: at 0, ≥0.5, ≥1.0, ≥1.5, ≥2.0 s.
    assert!(fetches <= 5, "{fetches} fetches in 2 s");
    assert!(fetches >= 3, "invalidations did refresh: {fetches}");
    assert!(too_young > 100, "{too_young}");
}

#[tokio::test]
async fn a_refused_fetch_names_the_problem_is_remembered_and_never_shows_secrets() {
    let (logs, _guard) = capture_logs();
    let ns = TestNs::new("refused");
    let real_secret = "realsecret0000000000000000000042";
    let wrong_secret = "WRONGSECRETwrongsecret0000000099";
    let fake = FakeWeChat::start(FakeConfig::with_apps(vec![
        FakeApp::new("wxbadsecret00001", real_secret),
        FakeApp::new(
            wxpush_fake_wechat::DEFAULT_APP_ID,
            wxpush_fake_wechat::DEFAULT_SECRET,
        ),
    ]))
    .await
    .unwrap();
    let bad_app = AppId::new("wxbadsecret00001").unwrap();
    let mut bad = Vec::new();
    for _ in 0..2 {
        bad.push(TokenStore::new(
            conn().await,
            ns.ns.clone(),
            client(&fake.base_url()),
            bad_app.clone(),
            Secret::new(wrong_secret),
            TokenSource::Classic,
            settings(),
        ));
    }
    let mut texts = Vec::new();
    for i in 0..30 {
        let e = bad[i % 2].get().await.unwrap_err();
        assert!(
            matches!(
                &e,
                TokenStoreError::Refused {
                    reason: TokenError::BadSecret { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.is_transient());
        texts.push(format!("{e} / {e:?}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(texts[0].contains("wxbadsecret00001"), "{}", texts[0]);
    assert!(
        texts[0].contains("secret"),
        "names the problem: {}",
        texts[0]
    );
    let token_requests = fake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .count();
    assert_eq!(token_requests, 1, "a refusal is not retried");
    assert_eq!(bad[0].fetches() + bad[1].fetches(), 1);

    // A good app in the same namespace, to check tokens never reach logs either.
    let good = store(&ns, &fake.base_url(), settings()).await;
    let token = good.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        good.invalidate(&token).await.unwrap(),
        Invalidation::Invalidated
    );
    let second = good.get().await.unwrap();
    texts.push(format!("{token:?} {second:?} {good:?} {:?}", bad[0]));

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("refused"), "the refusal is logged: {logs}");
    for text in texts.iter().chain([&logs]) {
        for secret in [
            real_secret,
            wrong_secret,
            wxpush_fake_wechat::DEFAULT_SECRET,
            token.expose(),
            second.expose(),
        ] {
            assert!(!text.contains(secret), "a secret leaked into: {text}");
        }
    }
}

#[tokio::test]
async fn a_token_outage_is_retried_with_backoff() {
    let ns = TestNs::new("outage");
    let fake = fake(7_200_000).await;
    fake.token_outage(Duration::from_millis(250));
    let s = store(&ns, &fake.base_url(), settings()).await;
    let token = s.get().await.unwrap();
    assert!(!token.remaining().is_zero());
    assert!(s.fetches() >= 2, "{}", s.fetches());
    assert_eq!(fake.token_fetches(wxpush_fake_wechat::DEFAULT_APP_ID), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires_by_itself() {
    let ns = TestNs::new("ttl");
    let fake = fake(7_200_000).await;
    // The lock exists only while a fetch is in flight: slow the fake down to see it.
    fake.update_faults(|f| f.latency_ms = 400).unwrap();
    let s = store(&ns, &fake.base_url(), settings()).await;
    let pending = tokio::spawn({
        let s = s.clone();
        async move { s.get().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let during = ns.keys_with_pttl();
    pending.await.unwrap();
    let refused = TokenStore::new(
        conn().await,
        ns.ns.clone(),
        client(&fake.base_url()),
        AppId::new("wxunknownapp0001").unwrap(),
        Secret::new("x"),
        TokenSource::Classic,
        settings(),
    );
    assert!(matches!(
        refused.get().await,
        Err(TokenStoreError::Refused {
            reason: TokenError::BadAppId,
            ..
        })
    ));
    let limiter = RateLimiter::new(conn().await, ns.ns.clone(), app(), 100, Default::default());
    limiter.acquire().await.unwrap();
    let pause = FleetPause::new(conn().await, ns.ns.clone(), app(), Default::default());
    pause.pause_for(Duration::from_secs(5)).await.unwrap();
    let after = ns.keys_with_pttl();
    let all: Vec<_> = during.iter().chain(&after).collect();
    for kind in ["token-lock", "token", "token-err", "rate", "pause"] {
        assert!(
            all.iter()
                .any(|(k, _)| k.starts_with(&format!("{}:{kind}:{{", ns.ns))),
            "no {kind} key in {all:?}"
        );
    }
    for (k, ttl) in all {
        assert!(*ttl > 0, "{k} has no expiry ({ttl})");
    }
}

/// Acquires as fast as possible on `limiters` (several tasks each) for `run`; returns the
/// instants of every acquire.
async fn hammer(limiters: &[RateLimiter], tasks_each: usize, run: Duration) -> Vec<Instant> {
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for l in limiters {
        for _ in 0..tasks_each {
            let (l, stamps) = (l.clone(), stamps.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    l.acquire().await.unwrap();
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    stamps.lock().unwrap().push(now);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut v = stamps.lock().unwrap().clone();
    v.sort();
    v
}

/// The most acquires in any 1-second window.
fn max_in_one_second(stamps: &[Instant]) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..stamps.len() {
        while j < stamps.len() && stamps[j] < stamps[i] + Duration::from_secs(1) {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_holds_across_instances() {
    let ns = TestNs::new("rate");
    let rate = 200;
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(RateLimiter::new(
            conn().await,
            ns.ns.clone(),
            app(),
            rate,
            RateSettings::default(),
        ));
    }
    let run = Duration::from_secs(3);
    let stamps = hammer(&limiters, 3, run).await;
    let l = &limiters[0];
    let tolerance = RateSettings::default().permit_max_age.as_secs_f64();
    let total_bound =
        f64::from(rate) * run.as_secs_f64() * (1.0 + tolerance) + f64::from(l.capacity());
    let window = max_in_one_second(&stamps);
    assert!(
        (stamps.len() as f64) <= total_bound,
        "{} sends in {run:?}, bound {total_bound}",
        stamps.len()
    );
    assert!(
        window <= l.max_per_second() as usize,
        "{window} sends in one second, bound {}",
        l.max_per_second()
    );
    assert!(
        stamps.len() as f64 >= 0.8 * f64::from(rate) * run.as_secs_f64(),
        "the fleet was starved: {} sends",
        stamps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_limiter_alone_reaches_the_rate() {
    let ns = TestNs::new("rate1");
    let rate = 200;
    let limiter = RateLimiter::new(conn().await, ns.ns.clone(), app(), rate, Default::default());
    let run = Duration::from_secs(2);
    let stamps = hammer(std::slice::from_ref(&limiter), 4, run).await;
    let expected = f64::from(rate) * run.as_secs_f64();
    assert!(
        stamps.len() as f64 >= 0.8 * expected,
        "{} sends, expected about {expected}",
        stamps.len()
    );
    assert!(max_in_one_second(&stamps) <= limiter.max_per_second() as usize);
    // No polling: at most about one round trip per send (a batch is 2 at 200/s).
    assert!(
        limiter.round_trips() <= stamps.len() as u64 + 20,
        "{} round trips for {} sends",
        limiter.round_trips(),
        stamps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_is_seen_fleet_wide_never_shortened_and_ends_by_itself() {
    let ns = TestNs::new("pause");
    let settings = PauseSettings::default();
    let mut pauses = Vec::new();
    for _ in 0..4 {
        pauses.push(FleetPause::new(
            conn().await,
            ns.ns.clone(),
            app(),
            settings.clone(),
        ));
    }
    for p in &pauses {
        assert_eq!(p.paused_for().await, None);
    }
    let start = Instant::now();
    // Watchers poll as senders would: (first seen paused, first seen running again).
    let watchers: Vec<_> = pauses
        .iter()
        .map(|p| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut seen: Option<Duration> = None;
                loop {
                    let paused = p.paused_for().await.is_some();
                    let t = start.elapsed();
                    match (paused, seen) {
                        (true, None) => seen = Some(t),
                        (false, Some(s)) => return (s, t),
                        _ => {}
                    }
                    assert!(t < Duration::from_secs(3), "the pause never ended");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let set_at = start.elapsed();
    let left = pauses[1].pause_for(Duration::from_secs(1)).await.unwrap();
    assert!(left <= Duration::from_secs(1) && left > Duration::from_millis(900));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A shorter pause does not shorten the running one.
    let left = pauses[2]
        .pause_for(Duration::from_millis(200))
        .await
        .unwrap();
    assert!(left > Duration::from_millis(500), "{left:?}");
    for w in watchers {
        let (seen, ended) = w.await.unwrap();
        assert!(
            seen <= set_at + Duration::from_millis(250),
            "seen {:?} after it was set",
            seen.saturating_sub(set_at)
        );
        assert!(
            ended >= set_at + Duration::from_millis(950),
            "ended too early: {:?}",
            ended - set_at
        );
        assert!(
            ended <= set_at + Duration::from_millis(1_500),
            "ended late: {:?}",
            ended - set_at
        );
    }
    assert!(ns.keys_with_pttl().is_empty(), "the pause key expired");
}
