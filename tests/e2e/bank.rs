//! The credential bank against the real Redis: claim order, concurrency across tasks and
//! processes, dedup, cap, spent credentials, expiry, the reachable-user index and key TTLs.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use wxpush_bank::{Bank, BankSettings, ReachableCursor};
use wxpush_domain::{Credential, OpenId};
use wxpush_testkit::{form_id, keys_with_ttl, now_ms, reachable_users, redis_url, TestEnv};

async fn bank(env: &TestEnv, settings: BankSettings) -> Bank {
    Bank::connect(&redis_url(), env.ns.clone(), settings)
        .await
        .expect("Redis is reachable")
}

fn now_s() -> i64 {
    now_ms() / 1000
}

fn user(n: usize) -> OpenId {
    OpenId::new(&format!("oUser{n:06}xxxxxxxxxxxxxxxxxxx")).unwrap()
}

async fn claim_all(bank: &Bank, env: &TestEnv, who: &OpenId) -> Vec<Credential> {
    let mut out = Vec::new();
    while let Some(c) = bank.claim(&env.app, who).await.unwrap() {
        out.push(c.credential);
    }
    out
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Claims come out soonest-to-expire first, never return a credential that is expired or
    /// inside the safety margin, and return every usable credential exactly once.
    #[test]
    fn claims_come_out_in_expiry_order_and_never_expired(
        offsets in proptest::collection::vec(
            prop_oneof![-600i64..50, 70i64..7 * 86_400], 0..60),
        hex in proptest::bool::ANY,
    ) {
        runtime().block_on(async {
            let env = TestEnv::new("claim_order");
            let bank = bank(&env, BankSettings::default()).await;
            let who = user(1);
            let now = now_s();
            let creds: Vec<Credential> = offsets
                .iter()
                .enumerate()
                .map(|(i, off)| {
                    let v = if hex { form_id(7, i as u64) } else { format!("F-{i}") };
                    Credential::form_id(v, now + off)
                })
                .collect();
            let report = bank.store(&env.app, &who, &creds).await.unwrap();
            let usable: HashSet<String> = creds
                .iter()
                .filter(|c| c.expires_at > now + 60)
                .map(|c| c.value.clone())
                .collect();
            prop_assert_eq!(report.added as usize, usable.len());
            prop_assert_eq!(report.expired as usize, creds.len() - usable.len());

            let claimed = claim_all(&bank, &env, &who).await;
            let after = now_s();
            for pair in claimed.windows(2) {
                prop_assert!(pair[0].expires_at <= pair[1].expires_at, "out of order: {:?}", pair);
            }
            for c in &claimed {
                prop_assert!(c.expires_at > after + 60 - 2, "claimed inside the margin: {:?}", c);
            }
            let got: HashSet<String> = claimed.iter().map(|c| c.value.clone()).collect();
            prop_assert_eq!(got.len(), claimed.len(), "a credential came out twice");
            prop_assert_eq!(got, usable);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_credential() {
    let env = TestEnv::new("concurrent_tasks");
    let bank = bank(&env, BankSettings::default()).await;
    let users: Vec<OpenId> = (0..20).map(user).collect();
    let now = now_s();
    let mut stored = 0;
    for (u, who) in users.iter().enumerate() {
        let creds: Vec<Credential> = (0..50)
            .map(|i| Credential::form_id(form_id(u as u64, i), now + 3600 + (i as i64 % 7)))
            .collect();
        stored += bank.store(&env.app, who, &creds).await.unwrap().added;
    }
    assert_eq!(stored, 1000);

    let mut tasks = Vec::new();
    for t in 0..32 {
        let (bank, users, app) = (bank.clone(), users.clone(), env.app.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut empty = HashSet::new();
            let mut i = t;
            while empty.len() < users.len() {
                let who = &users[i % users.len()];
                match bank.claim(&app, who).await.unwrap() {
                    Some(c) => mine.push(c.credential.value),
                    None => {
                        empty.insert(i % users.len());
                    }
                }
                i += 1;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a credential was claimed twice");
    assert_eq!(all.len(), 1000, "a credential was lost");
}

/// Run by `concurrent_claimers_in_several_processes` in child processes; does nothing
/// when run directly.
#[tokio::test]
#[ignore = "child process of concurrent_claimers_in_several_processes"]
async fn claim_worker_child() {
    let (Ok(ns), Ok(n)) = (
        std::env::var("WXPUSH_TEST_CHILD_NS"),
        std::env::var("WXPUSH_TEST_CHILD_USERS"),
    ) else {
        return;
    };
    let n: usize = n.parse().unwrap();
    let bank = Bank::connect(
        &redis_url(),
        wxpush_domain::Namespace::new(&ns).unwrap(),
        BankSettings::default(),
    )
    .await
    .unwrap();
    let app = wxpush_domain::AppId::new(wxpush_testkit::TEST_APP).unwrap();
    let mut out = String::new();
    let mut empty = HashSet::new();
    let mut i = std::process::id() as usize;
    while empty.len() < n {
        match bank.claim(&app, &user(i % n)).await.unwrap() {
            Some(c) => {
                out.push_str("CLAIMED ");
                out.push_str(&c.credential.value);
                out.push('\n');
            }
            None => {
                empty.insert(i % n);
            }
        }
        i += 1;
    }
    print!("{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_in_several_processes() {
    let env = TestEnv::new("concurrent_procs");
    let bank = bank(&env, BankSettings::default()).await;
    let n_users = 30;
    let now = now_s();
    for u in 0..n_users {
        let creds: Vec<Credential> = (0..100)
            .map(|i| Credential::form_id(form_id(u as u64, i), now + 3600 + i as i64))
            .collect();
        bank.store(&env.app, &user(u), &creds).await.unwrap();
    }
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "claim_worker_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("WXPUSH_TEST_CHILD_NS", env.ns.as_str())
                .env("WXPUSH_TEST_CHILD_USERS", n_users.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // This process claims too, at the same time.
    let mut all: Vec<String> = Vec::new();
    let mut empty = HashSet::new();
    let mut i = 0;
    while empty.len() < n_users {
        match bank.claim(&env.app, &user(i % n_users)).await.unwrap() {
            Some(c) => all.push(c.credential.value),
            None => {
                empty.insert(i % n_users);
            }
        }
        i += 1;
    }
    let mut per_process = vec![all.len()];
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mine: Vec<String> = text
            .lines()
            // libtest may print its own "test ... " prefix on the first line.
            .filter_map(|l| l.split_once("CLAIMED ").map(|(_, v)| v))
            .map(str::to_owned)
            .collect();
        per_process.push(mine.len());
        all.extend(mine);
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a credential was claimed twice");
    assert_eq!(
        all.len(),
        n_users * 100,
        "a credential was lost: {per_process:?}"
    );
}

#[tokio::test]
async fn identical_form_ids_are_stored_once_and_spent_ones_never_again() {
    let env = TestEnv::new("dedup");
    let bank = bank(&env, BankSettings::default()).await;
    let who = user(1);
    let now = now_s();
    let creds = vec![
        Credential::form_id(form_id(1, 1), now + 1000),
        Credential::form_id(form_id(1, 2), now + 2000),
        Credential::form_id("not-hex-ID", now + 3000),
        Credential::form_id(form_id(1, 1), now + 5000), // the same formId again
    ];
    let r = bank.store(&env.app, &who, &creds).await.unwrap();
    assert_eq!((r.added, r.known), (3, 1));
    let r = bank.store(&env.app, &who, &creds).await.unwrap();
    assert_eq!((r.added, r.known), (0, 4));

    let first = bank.claim(&env.app, &who).await.unwrap().unwrap();
    assert_eq!(first.credential, creds[0]);
    // A client re-sending its old upload cannot bring the spent formId back.
    let r = bank.store(&env.app, &who, &creds[..1]).await.unwrap();
    assert_eq!((r.added, r.known), (0, 1));
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 2);
    let rest = claim_all(&bank, &env, &who).await;
    assert_eq!(rest, vec![creds[1].clone(), creds[2].clone()]);
}

#[tokio::test]
async fn the_cap_keeps_the_credentials_that_expire_last() {
    let env = TestEnv::new("cap");
    let settings = BankSettings {
        user_cap: 5,
        ..BankSettings::default()
    };
    let bank = bank(&env, settings).await;
    let who = user(2);
    let now = now_s();
    let creds: Vec<Credential> = (0..8)
        .map(|i| Credential::form_id(form_id(2, i), now + 1000 + i as i64 * 10))
        .collect();
    let r = bank.store(&env.app, &who, &creds).await.unwrap();
    assert_eq!((r.added, r.capped), (8, 3));
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 5);
    // A later upload of earlier-expiring ones does not push out the later ones.
    let early = Credential::form_id(form_id(2, 99), now + 500);
    let r = bank.store(&env.app, &who, &[early]).await.unwrap();
    assert_eq!(r.capped, 1);
    assert_eq!(claim_all(&bank, &env, &who).await, creds[3..].to_vec());
}

#[tokio::test]
async fn credentials_inside_the_safety_margin_count_as_expired() {
    let env = TestEnv::new("margin");
    let bank = bank(&env, BankSettings::default()).await;
    let who = user(3);
    let now = now_s();
    let r = bank
        .store(
            &env.app,
            &who,
            &[
                Credential::form_id("past", now - 10),
                Credential::form_id("soon", now + 30),
                Credential::form_id("later", now + 600),
            ],
        )
        .await
        .unwrap();
    assert_eq!((r.added, r.expired), (1, 2));
    let c = bank.claim(&env.app, &who).await.unwrap().unwrap();
    assert_eq!(c.credential.value, "later");
    assert!(bank.claim(&env.app, &who).await.unwrap().is_none());
}

/// A margin as long as the 7-day lifetime (a mistake, but one the configuration allows):
/// every expiry is clamped to now + 7 days, which is inside the margin, so nothing is stored
/// and every credential is reported expired, never stored with an expired score.
#[tokio::test]
async fn a_margin_past_the_lifetime_stores_nothing_and_says_so() {
    let env = TestEnv::new("margin_lifetime");
    let settings = BankSettings {
        claim_margin_secs: 700_000,
        ..BankSettings::default()
    };
    let bank = bank(&env, settings).await;
    let who = user(4);
    let far = now_s() + 10_000_000;
    let r = bank
        .store(
            &env.app,
            &who,
            &[
                Credential::form_id("far", far),
                Credential::form_id("past", now_s() - 10),
            ],
        )
        .await
        .unwrap();
    assert_eq!((r.added, r.known, r.expired), (0, 0, 2), "{r:?}");
    assert!(keys_with_ttl(&env).await.is_empty(), "no key written");
}

#[tokio::test]
async fn a_credential_expiring_while_stored_is_dropped_on_claim() {
    let env = TestEnv::new("expire_lazy");
    let settings = BankSettings {
        claim_margin_secs: 0,
        ..BankSettings::default()
    };
    let bank = bank(&env, settings).await;
    let (a, b) = (user(4), user(5));
    let now = now_s();
    bank.store(&env.app, &a, &[Credential::form_id("short", now + 1)])
        .await
        .unwrap();
    bank.store(&env.app, &b, &[Credential::form_id("long", now + 600)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The index forgets the expired user, the bank returns nothing for them.
    let users = reachable_users(&bank, &env.app, 100).await;
    assert_eq!(users, vec![b.clone()]);
    assert!(bank.claim(&env.app, &a).await.unwrap().is_none());
}

#[tokio::test]
async fn the_index_streams_every_reachable_user_in_pages() {
    let env = TestEnv::new("index");
    let bank = bank(&env, BankSettings::default()).await;
    let now = now_s();
    let users: Vec<OpenId> = (0..700).map(user).collect();
    for chunk in users.chunks(100) {
        let creds: Vec<Vec<Credential>> = chunk
            .iter()
            .enumerate()
            .map(|(i, _)| vec![Credential::form_id(form_id(9, i as u64), now + 3600)])
            .collect();
        let reqs: Vec<wxpush_bank::StoreRequest<'_>> = chunk
            .iter()
            .zip(&creds)
            .map(|(who, c)| wxpush_bank::StoreRequest {
                app: &env.app,
                open_id: who,
                credentials: c,
            })
            .collect();
        bank.store_batch(&reqs).await.unwrap();
    }
    // Users whose last credential is claimed leave the index.
    for who in &users[..200] {
        assert!(bank.claim(&env.app, who).await.unwrap().is_some());
    }
    let mut seen: HashMap<OpenId, usize> = HashMap::new();
    let mut cursor = Some(ReachableCursor::default());
    let mut pages = 0;
    while let Some(c) = cursor {
        let page = bank.reachable_page(&env.app, c, 64).await.unwrap();
        assert!(page.users.len() <= 64 + 1000, "a page is bounded");
        for u in page.users {
            *seen.entry(u).or_default() += 1;
        }
        cursor = page.next;
        pages += 1;
    }
    assert!(pages > 5, "streamed in pages, not at once ({pages})");
    let expect: HashSet<OpenId> = users[200..].iter().cloned().collect();
    let got: HashSet<OpenId> = seen.keys().cloned().collect();
    assert_eq!(got, expect);
}

#[tokio::test]
async fn every_key_expires_by_itself() {
    let env = TestEnv::new("ttl");
    let bank = bank(&env, BankSettings::default()).await;
    let now = now_s();
    for u in 0..10 {
        bank.store(
            &env.app,
            &user(u),
            &[Credential::form_id(
                form_id(u as u64, 0),
                now + 3600 + u as i64,
            )],
        )
        .await
        .unwrap();
    }
    bank.claim(&env.app, &user(0)).await.unwrap();
    let keys = keys_with_ttl(&env).await;
    assert!(keys.len() >= 11, "{keys:?}");
    for (k, ttl) in keys {
        assert!(ttl > 3500 && ttl <= 3612, "{k} has TTL {ttl}");
    }
}

/// The seed's `getValidFormId` reads the list, then trims it in a second call. Two workers
/// interleaving those calls both get the same formId. The bank's claim is one script, so
/// the interleaving cannot happen; `concurrent_claimers_*` check the outcome.
#[tokio::test]
async fn the_seed_read_then_trim_hands_one_form_id_to_two_workers() {
    let env = TestEnv::new("seed_race");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:seed:mina:openid:o1", env.ns);
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("fid-1")
        .arg("fid-2")
        .query_async(&mut conn)
        .await
        .unwrap();
    let read = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        let key = key.clone();
        async move {
            let l: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut c)
                .await
                .unwrap();
            l[0].clone()
        }
    };
    let a = read(&mut conn).await; // worker A reads
    let b = read(&mut conn).await; // worker B reads before A trims
    for _ in 0..2 {
        let _: () = redis::cmd("LTRIM")
            .arg(&key)
            .arg(1)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(a, b, "both workers send with the same formId");

    let bank = bank(&env, BankSettings::default()).await;
    let who = user(1);
    let now = now_s();
    bank.store(
        &env.app,
        &who,
        &[
            Credential::form_id("fid-1", now + 600),
            Credential::form_id("fid-2", now + 700),
        ],
    )
    .await
    .unwrap();
    let (x, y) = tokio::join!(bank.claim(&env.app, &who), bank.claim(&env.app, &who));
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    assert_ne!(x.credential.value, y.credential.value);
}

#[tokio::test]
async fn a_released_credential_is_claimable_again_but_only_once() {
    let env = TestEnv::new("release");
    let bank = bank(&env, BankSettings::default()).await;
    let who = user(6);
    let now = now_s();
    let a = Credential::form_id(form_id(6, 1), now + 600);
    let b = Credential::form_id(form_id(6, 2), now + 900);
    bank.store(&env.app, &who, &[a.clone(), b.clone()])
        .await
        .unwrap();
    let first = bank
        .claim(&env.app, &who)
        .await
        .unwrap()
        .unwrap()
        .credential;
    assert_eq!(first, a);
    // Never stored, or not claimed: nothing to give back.
    assert!(!bank
        .release(&env.app, &who, &Credential::form_id("other", now + 600))
        .await
        .unwrap());
    assert!(!bank.release(&env.app, &who, &b).await.unwrap());
    assert!(bank.release(&env.app, &who, &a).await.unwrap());
    assert!(
        !bank.release(&env.app, &who, &a).await.unwrap(),
        "given back twice"
    );
    assert_eq!(claim_all(&bank, &env, &who).await, vec![a, b]);
    // The last claim emptied the user; a release puts them back in the index.
    bank.release(
        &env.app,
        &who,
        &Credential::form_id(form_id(6, 2), now + 900),
    )
    .await
    .unwrap();
    let users = reachable_users(&bank, &env.app, 2000).await;
    assert_eq!(users, vec![who]);
}

/// The store script judges expiry by Redis's clock alone (no host clock is involved): an
/// expiry past Redis's now + 7 days is clamped to it, one Redis says is past is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_clamped_and_judged_by_redis_time() {
    let env = TestEnv::new("bank_redis_clock");
    let bank = bank(&env, BankSettings::default()).await;
    let who = user(11);
    let redis_now = bank.now_ms().await.unwrap() / 1000;
    let week = wxpush_bank::CREDENTIAL_LIFETIME_SECS;
    assert_eq!(week, 7 * 86_400);
    let creds = [
        Credential::form_id("far", redis_now + 30 * 86_400),
        Credential::form_id("week", redis_now + week - 100),
        Credential::form_id("past", redis_now - 5),
    ];
    let r = bank.store(&env.app, &who, &creds).await.unwrap();
    assert_eq!((r.added, r.expired), (2, 1), "{r:?}");
    let key = bank.keys().credentials(&env.app, &who);
    let mut conn = bank.connection();
    let far: f64 = redis::cmd("ZSCORE")
        .arg(&key)
        .arg(wxpush_bank::member::encode(&creds[0]))
        .query_async(&mut conn)
        .await
        .unwrap();
    let after = bank.now_ms().await.unwrap() / 1000;
    assert!(
        (redis_now + week..=after + week).contains(&(far as i64)),
        "clamped to Redis's now + 7 days: {far} vs {redis_now}"
    );
    let week_score: f64 = redis::cmd("ZSCORE")
        .arg(&key)
        .arg(wxpush_bank::member::encode(&creds[1]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        week_score as i64,
        redis_now + week - 100,
        "within the week: kept as given"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl <= week + 1,
        "the key lives no longer than the clamp: {ttl}"
    );
}
