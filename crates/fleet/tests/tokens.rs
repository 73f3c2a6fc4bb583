//! Where the fleet's token comes from and what it believes of it, against the machine's real
//! Redis and the in-process fake WeChat: a lifetime of any size never leaves the shared token
//! without a TTL; `force_refresh` is spent only on a rejected token that is still the current
//! one, within WeChat's 20 in 24 hours, 30 s apart, for the whole fleet; a token service
//! source is read instead of WeChat.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use support::*;
use wxpush_domain::{Secret, TokenSource};
use wxpush_fake_wechat::{Endpoint, FakeWeChat};
use wxpush_fleet::{
    Invalidation, Keys, Token, TokenSettings, TokenStore, TokenStoreError, FORCE_REFRESH_PER_DAY,
    FORCE_REFRESH_SPACING,
};
use wxpush_wechat::{TokenError, MAX_TOKEN_LIFETIME_SECS};

/// Serves `router` on a free port of 127.0.0.1; the base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// A "WeChat" whose token endpoints both answer `answer`.
async fn wechat_answering(answer: Value) -> String {
    let (a, b) = (answer.clone(), answer);
    serve(
        Router::new()
            .route("/cgi-bin/token", get(move || async move { Json(a) }))
            .route(
                "/cgi-bin/stable_token",
                post(move || async move { Json(b) }),
            ),
    )
    .await
}

#[tokio::test]
async fn a_token_announced_to_live_for_ever_is_shared_two_days_at_most() {
    let ns = TestNs::new("forever");
    let base = wechat_answering(
        json!({"access_token": "TOKEN-for-ever", "expires_in": 18446744073709551615u64}),
    )
    .await;
    let s = store(&ns, &base, settings()).await;
    let token = s.get().await.expect("a token, not a panic");
    assert_eq!(token.expose(), "TOKEN-for-ever");
    let keys = ns.keys_with_pttl();
    let (key, ttl) = keys
        .iter()
        .find(|(k, _)| k.starts_with(&format!("{}:token:{{", ns.ns)))
        .unwrap_or_else(|| panic!("no token key in {keys:?}"));
    assert!(
        *ttl > 0 && *ttl <= (MAX_TOKEN_LIFETIME_SECS * 1000) as i64,
        "{key} has TTL {ttl}"
    );
    let lifetime = token.expires_at_ms() - token.fetched_at_ms();
    assert_eq!(lifetime, MAX_TOKEN_LIFETIME_SECS * 1000);
    // A negative lifetime is the shortest one believed, and expires by itself too.
    let ns = TestNs::new("negative");
    let base = wechat_answering(json!({"access_token": "TOKEN-neg", "expires_in": -7200})).await;
    let s = store(&ns, &base, settings()).await;
    let token = s.get().await.expect("a token");
    assert!(token.remaining() <= Duration::from_secs(1));
    for (k, ttl) in ns.keys_with_pttl() {
        assert!(ttl > 0, "{k} has no expiry ({ttl})");
    }
}

/// Redis's clock, in ms (the budget's scores are on it).
async fn redis_now_ms() -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn().await)
        .await
        .unwrap();
    secs * 1000 + micros / 1000
}

/// Writes forced refreshes `ages` ago into the app's fleet-wide budget, as earlier refreshes
/// (of this fleet) would have left them.
async fn seed_forced(ns: &TestNs, ages: &[Duration]) {
    let key = Keys::new(ns.ns.clone()).token_force(&app());
    let now = redis_now_ms().await;
    let mut c = conn().await;
    for (i, age) in ages.iter().enumerate() {
        let at = now - age.as_millis() as u64;
        let _: i64 = redis::cmd("ZADD")
            .arg(&key)
            .arg(at)
            .arg(format!("{at}-seed{i}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(86_400_000)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// `force_refresh: true` requests the fake answered, and how many answered 45009.
fn forced_requests(fake: &FakeWeChat) -> (usize, usize) {
    let forced: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::StableToken && r.forced)
        .collect();
    let refused = forced.iter().filter(|r| r.errcode == Some(45009)).count();
    (forced.len(), refused)
}

/// WeChat stops accepting the fleet's current token; senders see it refused and invalidate it
/// once it is older than the minimum refresh interval; the next `get`.
async fn reject_current(fake: &FakeWeChat, stores: &[TokenStore]) -> (Token, Token) {
    let current = stores[0].get().await.unwrap();
    fake.revoke_tokens(None).unwrap();
    let min = stores[0].settings().min_refresh_interval;
    tokio::time::sleep(min + Duration::from_millis(50)).await;
    let mut outcomes = Vec::new();
    for s in stores {
        outcomes.push(s.invalidate(&current).await.unwrap());
    }
    assert!(
        outcomes.contains(&Invalidation::Invalidated),
        "{outcomes:?}"
    );
    let next = stores[stores.len() - 1].get().await.unwrap();
    (current, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refresh_is_spent_only_on_a_rejected_token_that_is_still_the_current_one() {
    let ns = TestNs::new("force-current");
    let fake = support::fake(7_200_000).await;
    // A minimum refresh interval long enough to see a rejection too young to act on.
    let slow = TokenSettings {
        min_refresh_interval: Duration::from_secs(1),
        ..settings()
    };
    let a = store_from(&ns, &fake.base_url(), TokenSource::Stable, slow.clone()).await;
    let b = store_from(&ns, &fake.base_url(), TokenSource::Stable, slow).await;

    // Rejected while current, and stable_token still answers it: forced once.
    let (rejected, next) = reject_current(&fake, &[a.clone(), b.clone()]).await;
    assert_ne!(next, rejected, "a new token replaced the rejected one");
    assert_eq!(forced_requests(&fake), (1, 0));
    assert_eq!(b.get().await.unwrap(), next, "the fleet shares it");

    // A rejection younger than the minimum refresh interval (1 s here) is kept: nothing
    // forced.
    assert_eq!(b.invalidate(&next).await.unwrap(), Invalidation::TooYoung);
    assert_eq!(b.get().await.unwrap(), next);
    assert_eq!(forced_requests(&fake), (1, 0));

    // A stale rejection (the token was replaced already) changes nothing.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        a.invalidate(&rejected).await.unwrap(),
        Invalidation::AlreadyReplaced
    );
    assert_eq!(a.get().await.unwrap(), next);
    assert_eq!(forced_requests(&fake), (1, 0));

    // Every key, the mark and the budget included, expires by itself.
    let keys = ns.keys_with_pttl();
    assert!(
        keys.iter().any(|(k, _)| k.contains(":token-force:{")),
        "{keys:?}"
    );
    for (k, ttl) in keys {
        assert!(ttl > 0, "{k} has no expiry ({ttl})");
    }

    // Rejected while current, but WeChat's current stable token has moved on (another server
    // forced one, then it expired): the plain fetch gives the new one, nothing is forced,
    // though the budget (a fresh fleet's) would allow it.
    let ns = TestNs::new("force-moved-on");
    let fake = support::fake(7_200_000).await;
    let a = store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await;
    let next = a.get().await.unwrap();
    let other = client(&fake.base_url())
        .fetch_stable_token(
            &app(),
            &Secret::new(wxpush_fake_wechat::DEFAULT_SECRET),
            true,
        )
        .await
        .unwrap();
    fake.expire_tokens(None).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        a.invalidate(&next).await.unwrap(),
        Invalidation::Invalidated
    );
    let after = a.get().await.unwrap();
    assert_ne!(after, next);
    assert_ne!(
        after.expose(),
        other.token,
        "expired too; WeChat issued another"
    );
    assert_eq!(forced_requests(&fake), (1, 0), "only the other server's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_force_refresh_budget_is_wechats_20_in_24_hours_30_s_apart_counted_fleet_wide() {
    assert_eq!(FORCE_REFRESH_PER_DAY, 20);
    assert_eq!(FORCE_REFRESH_SPACING, Duration::from_secs(30));
    let hours = |h: u64| Duration::from_secs(h * 3600);

    // 19 in the last 24 hours (and older ones, which no longer count): the 20th is allowed,
    // through either store; then none, however often the token is rejected.
    let ns = TestNs::new("force-budget");
    let fake = support::fake(7_200_000).await;
    let mut ages: Vec<Duration> = (1..=19).map(hours).collect();
    ages.extend([hours(25), hours(30)]);
    seed_forced(&ns, &ages).await;
    let a = store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await;
    let b = store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await;
    let (rejected, next) = reject_current(&fake, &[a.clone(), b.clone()]).await;
    assert_ne!(next, rejected);
    assert_eq!(forced_requests(&fake), (1, 0));
    for round in 0..2 {
        let stores = if round % 2 == 0 {
            [b.clone(), a.clone()]
        } else {
            [a.clone(), b.clone()]
        };
        let (rejected, kept) = reject_current(&fake, &stores).await;
        assert_eq!(
            kept, rejected,
            "round {round}: no budget, the token is kept"
        );
    }
    assert_eq!(forced_requests(&fake), (1, 0), "never a 21st");

    // The count on its own: 20 in the last 24 hours, none in the last 30 s.
    let ns = TestNs::new("force-count");
    let fake = support::fake(7_200_000).await;
    let mut ages: Vec<Duration> = (1..=20).map(hours).collect();
    ages.extend([hours(25), hours(30)]);
    seed_forced(&ns, &ages).await;
    let s = store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await;
    let (rejected, kept) = reject_current(&fake, std::slice::from_ref(&s)).await;
    assert_eq!(kept, rejected, "20 forced refreshes in the last 24 hours");
    assert_eq!(forced_requests(&fake), (0, 0));

    // The spacing on its own: one forced refresh 10 s ago holds the next back.
    let ns = TestNs::new("force-spacing");
    let fake = support::fake(7_200_000).await;
    seed_forced(&ns, &[Duration::from_secs(10)]).await;
    let s = store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await;
    let (rejected, kept) = reject_current(&fake, std::slice::from_ref(&s)).await;
    assert_eq!(kept, rejected, "10 s after the last forced refresh");
    assert_eq!(forced_requests(&fake), (0, 0));
    // ... and one 31 s ago does not.
    let ns = TestNs::new("force-spaced");
    let fake = support::fake(7_200_000).await;
    seed_forced(&ns, &[Duration::from_secs(31)]).await;
    let s = store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await;
    let (rejected, next) = reject_current(&fake, std::slice::from_ref(&s)).await;
    assert_ne!(next, rejected, "31 s after the last forced refresh");
    assert_eq!(forced_requests(&fake), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_senders_of_two_stores_rejecting_at_once_force_one_refresh() {
    let ns = TestNs::new("force-race");
    let fake = support::fake(7_200_000).await;
    let stores = [
        store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await,
        store_from(&ns, &fake.base_url(), TokenSource::Stable, settings()).await,
    ];
    let current = stores[0].get().await.unwrap();
    fake.revoke_tokens(None).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (s, failed) = (stores[i % 2].clone(), current.clone());
            tokio::spawn(async move {
                s.invalidate(&failed).await.unwrap();
                s.get().await.unwrap()
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap().expose().to_owned());
    }
    assert_eq!(seen.len(), 1, "everyone got the one new token");
    assert!(!seen.contains(current.expose()));
    assert_eq!(forced_requests(&fake), (1, 0));
}

#[tokio::test]
async fn only_a_stable_source_marks_or_forces() {
    let ns = TestNs::new("classic-no-force");
    let fake = support::fake(7_200_000).await;
    let s = store_from(&ns, &fake.base_url(), TokenSource::Classic, settings()).await;
    let (rejected, next) = reject_current(&fake, std::slice::from_ref(&s)).await;
    assert_ne!(next, rejected, "a classic fetch is always a new token");
    let stats = fake.stats();
    assert_eq!(stats.stable_token_fetches.values().sum::<u64>(), 0);
    assert_eq!(forced_requests(&fake), (0, 0));
    // A token service still answering the token WeChat rejected is read once more, no more.
    let ns = TestNs::new("service-no-force");
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/t",
        get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { Json(json!({"access_token": "svc-same", "expires_in": 7200})) }
        }),
    ))
    .await;
    let source = TokenSource::parse(&format!("{base}/t")).unwrap();
    let s = store_from(&ns, &fake.base_url(), source, settings()).await;
    let first = s.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        s.invalidate(&first).await.unwrap(),
        Invalidation::Invalidated
    );
    assert_eq!(s.get().await.unwrap().expose(), "svc-same");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        !ns.keys_with_pttl()
            .iter()
            .any(|(k, _)| k.contains(":token-force:{")),
        "nothing spent from the force_refresh budget"
    );
    assert_eq!(fake.stats().stable_token_fetches.values().sum::<u64>(), 0);
}

/// A token service: answers `{"access_token": "svc-<n>", "expires_in": 7200}`, n counting its
/// requests from 1.
async fn token_service() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/wx/token",
        get(move || {
            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Json(json!({"access_token": format!("svc-{n}"), "expires_in": 7200})) }
        }),
    ))
    .await;
    (format!("{base}/wx/token?key=SVC-K3Y"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_service_source_is_read_instead_of_wechat() {
    let (logs, _guard) = capture_logs();
    let ns = TestNs::new("service");
    let fake = support::fake(7_200_000).await;
    let (url, hits) = token_service().await;
    let source = TokenSource::parse(&url).unwrap();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(store_from(&ns, &fake.base_url(), source.clone(), settings()).await);
    }
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let s = stores[i % 3].clone();
            tokio::spawn(async move { s.get().await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().expose(), "svc-1");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one read for the fleet");

    // WeChat rejects it: the shared copy is dropped and the service read again.
    let first = stores[0].get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        stores[1].invalidate(&first).await.unwrap(),
        Invalidation::Invalidated
    );
    assert_eq!(stores[1].get().await.unwrap().expose(), "svc-2");
    // Another process learns it when WeChat refuses its copy too.
    assert_eq!(
        stores[2].invalidate(&first).await.unwrap(),
        Invalidation::AlreadyReplaced
    );
    assert_eq!(stores[2].get().await.unwrap().expose(), "svc-2");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    assert_eq!(
        fake.stats().requests,
        0,
        "WeChat's token endpoints were never called"
    );
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains("SVC-K3Y"), "{logs}");
    assert!(!format!("{:?}", stores[0]).contains("SVC-K3Y"));
}

#[tokio::test]
async fn a_token_service_that_refuses_or_is_down_is_remembered_like_wechat() {
    let ns = TestNs::new("service-down");
    let refusing = serve(Router::new().route(
        "/t",
        get(|| async { Json(json!({"errcode": 40164, "errmsg": "invalid ip 10.0.0.9"})) }),
    ))
    .await;
    let s = store_from(
        &ns,
        "http://127.0.0.1:1",
        TokenSource::parse(&format!("{refusing}/t")).unwrap(),
        settings(),
    )
    .await;
    let e = s.get().await.unwrap_err();
    assert!(
        matches!(
            e,
            TokenStoreError::Refused {
                reason: TokenError::IpNotWhitelisted { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let ns = TestNs::new("service-down2");
    let s = store_from(
        &ns,
        "http://127.0.0.1:1",
        TokenSource::parse("http://127.0.0.1:1/t").unwrap(),
        TokenSettings {
            fetch_retries: 0,
            ..settings()
        },
    )
    .await;
    let e = s.get().await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

/// The failure's remaining wait, as the error tells it.
fn retry_in(e: &TokenStoreError) -> Duration {
    e.retry_in()
        .expect("a refusal or failure says when to ask again")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_in_a_row_are_remembered_longer_each_time_fleet_wide_until_a_token_comes() {
    let ns = TestNs::new("streak");
    let fake = fake(7_200_000).await;
    let settings = TokenSettings {
        remember_refusal: Duration::from_millis(200),
        remember_max: Duration::from_millis(700),
        ..settings()
    };
    // Two processes: the streak and its wait are the fleet's, not one process's.
    let a = store(&ns, &fake.base_url(), settings.clone()).await;
    let b = store(&ns, &fake.base_url(), settings.clone()).await;
    fake.set_secret(None, "a-secret-the-fleet-does-not-have")
        .unwrap();
    let mut waits = Vec::new();
    for i in 0..4 {
        let s = if i % 2 == 0 { &a } else { &b };
        let e = s.get().await.unwrap_err();
        assert!(matches!(e, TokenStoreError::Refused { .. }), "{e:?}");
        let wait = retry_in(&e);
        waits.push(wait);
        // Asked again within the wait: the same refusal, nobody calls the endpoint.
        let other = if i % 2 == 0 { &b } else { &a };
        let again = other.get().await.unwrap_err();
        assert!(retry_in(&again) <= wait, "{again:?}");
        tokio::time::sleep(wait + Duration::from_millis(30)).await;
    }
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    // 200, 400, then the longest (700), however the fleet's processes took turns.
    assert!((150..=200).contains(&ms[0]), "{ms:?}");
    assert!((350..=400).contains(&ms[1]), "{ms:?}");
    assert!((650..=700).contains(&ms[2]), "{ms:?}");
    assert!((650..=700).contains(&ms[3]), "{ms:?}");
    let asked = fake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .count();
    assert_eq!(asked, 4, "one request per remembered refusal");

    // A token ends the streak: the next refusal is remembered for the first wait again.
    fake.set_secret(None, wxpush_fake_wechat::DEFAULT_SECRET)
        .unwrap();
    let token = a.get().await.unwrap();
    fake.set_secret(None, "a-secret-the-fleet-does-not-have")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        a.invalidate(&token).await.unwrap(),
        Invalidation::Invalidated
    );
    let e = b.get().await.unwrap_err();
    assert!((150..=200).contains(&retry_in(&e).as_millis()), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_behind_a_refresh_that_never_ends_are_answered_at_once() {
    let ns = TestNs::new("hung");
    let fake = fake(7_200_000).await;
    let lease = Duration::from_millis(500);
    let s = store(
        &ns,
        &fake.base_url(),
        TokenSettings {
            lock_lease: lease,
            ..settings()
        },
    )
    .await;
    // Another process holds the refresh lock and never publishes (hung, or gone with a
    // longer lease than ours).
    let lock = Keys::new(ns.ns.clone()).token_lock(&app());
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("someone-else")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn().await)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get().await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(e.is_transient(), "{e:?}");
    }
    // One wait of about the lease for the first task; the seven behind it get its answer.
    assert!(
        started.elapsed() < lease * 3,
        "jobs waited in turn: {:?}",
        started.elapsed()
    );
    assert_eq!(s.fetches(), 0, "nobody fetched under another's lock");
}
