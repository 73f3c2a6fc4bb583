//! The consent buckets (crates/bank/src/consent.rs), against the real Redis: users of one
//! bucket claiming at once leave the totals and holders exact, a template's walk finds its
//! holders page by page (across shards and buckets), the keys stay in Redis's listpack
//! encoding at the server's defaults, and consents stored in the layout before buckets are
//! read, walked, counted and moved on the user's next write without losing one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use wxpush_bank::keys::{bucket_of, shard_of, SHARDS};
use wxpush_bank::{Bank, BankSettings, CampaignClaim, ClaimMode, ReachableCursor, Settle};
use wxpush_domain::{Credential, OpenId};
use wxpush_testkit::{keys_with_ttl, redis_url, TestEnv};

const A: &str = "TPL_BUCKET_A";
const B: &str = "TPL_BUCKET_B";

async fn bank(env: &TestEnv) -> Bank {
    Bank::connect(&redis_url(), env.ns.clone(), BankSettings::default())
        .await
        .expect("Redis is reachable")
}

fn user(n: usize) -> OpenId {
    OpenId::new(&format!("oBucket{n:06}xxxxxxxxxxxxxxxxxx")).unwrap()
}

/// `n` users of one shard and one bucket (the first user's).
fn users_of_one_bucket(n: usize) -> Vec<OpenId> {
    let first = user(0);
    let (shard, bucket) = (shard_of(&first), bucket_of(&first));
    (0..)
        .map(user)
        .filter(|u| shard_of(u) == shard && bucket_of(u) == bucket)
        .take(n)
        .collect()
}

async fn walk(bank: &Bank, env: &TestEnv, template: &str, page: usize) -> Vec<OpenId> {
    let mut users = Vec::new();
    let mut at = Some(ReachableCursor::default());
    let mut pages = 0;
    while let Some(c) = at {
        let p = bank
            .consent_page(&env.app, template, c, page)
            .await
            .unwrap();
        users.extend(p.users);
        at = p.next;
        pages += 1;
        assert!(pages <= usize::from(SHARDS) * 20, "the walk does not end");
    }
    users
}

/// A shard's totals and holders hashes (template → n).
async fn shard_counts(
    bank: &Bank,
    env: &TestEnv,
    shard: u16,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    redis::pipe()
        .cmd("HGETALL")
        .arg(bank.keys().consent_totals(&env.app, shard))
        .cmd("HGETALL")
        .arg(bank.keys().consent_holders(&env.app, shard))
        .query_async(&mut bank.connection())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_one_bucket_claiming_at_once_leave_exact_totals() {
    let env = TestEnv::new("buckets_concurrent");
    let bank = bank(&env).await;
    let users = users_of_one_bucket(12);
    let shard = shard_of(&users[0]);
    // User u holds 1 + u % 4 consents for A and one for B.
    for (u, who) in users.iter().enumerate() {
        let mut creds = vec![Credential::consent(A); 1 + u % 4];
        creds.push(Credential::consent(B));
        bank.store(&env.app, who, &creds).await.unwrap();
    }
    // 4 campaigns for A, each sent by 3 workers racing over every user of the bucket.
    let mut tasks = Vec::new();
    for campaign in 0..4 {
        for worker in 0..3 {
            let (bank, app, users) = (bank.clone(), env.app.clone(), users.clone());
            tasks.push(tokio::spawn(async move {
                let (c, owner) = (format!("camp-{campaign}"), format!("w{campaign}-{worker}"));
                let mut fresh = Vec::new();
                for (u, who) in users.iter().enumerate() {
                    let claim = bank
                        .campaign_claim_consent(
                            &app,
                            who,
                            &c,
                            A,
                            &owner,
                            Duration::from_secs(30),
                            ClaimMode::Take,
                        )
                        .await
                        .unwrap();
                    if let CampaignClaim::Fresh(_) = claim {
                        let done = Settle::Final {
                            outcome: "sent",
                            give_back: false,
                        };
                        assert!(bank
                            .campaign_settle(&app, who, &c, A, &owner, done)
                            .await
                            .unwrap());
                        fresh.push(u);
                    }
                }
                fresh
            }));
        }
    }
    let mut spent: BTreeMap<usize, usize> = BTreeMap::new();
    for t in tasks {
        for u in t.await.unwrap() {
            *spent.entry(u).or_default() += 1;
        }
    }
    let mut left_a = 0;
    for (u, who) in users.iter().enumerate() {
        let held = 1 + u % 4;
        let got = spent.get(&u).copied().unwrap_or(0);
        assert_eq!(
            got,
            held.min(4),
            "user {u}: one consent per campaign, while any is left"
        );
        let left = bank.consents_left(&env.app, who, A).await.unwrap() as usize;
        assert_eq!(left, held - got, "user {u}");
        assert_eq!(bank.consents_left(&env.app, who, B).await.unwrap(), 1);
        left_a += left;
    }
    let (totals, holders) = shard_counts(&bank, &env, shard).await;
    let want_a = (left_a > 0).then_some(left_a as i64);
    assert_eq!(totals.get(A).copied(), want_a, "{totals:?}");
    assert_eq!(totals.get(B).copied(), Some(users.len() as i64));
    assert_eq!(
        holders.get(A),
        None,
        "every consent for A was spent: {holders:?}"
    );
    assert_eq!(holders.get(B).copied(), Some(users.len() as i64));
    assert_eq!(
        bank.consent_total(&env.app, A).await.unwrap(),
        left_a as u64
    );
    assert!(walk(&bank, &env, A, 10).await.is_empty());
    let walked: BTreeSet<OpenId> = walk(&bank, &env, B, 5).await.into_iter().collect();
    assert_eq!(walked, users.iter().cloned().collect());
}

#[tokio::test]
async fn a_walk_finds_a_templates_holders_page_by_page_and_keys_stay_listpacks() {
    let env = TestEnv::new("buckets_walk");
    let bank = bank(&env).await;
    // 600 users over the shards and buckets: even ones hold A, every third B (twice).
    let users: Vec<OpenId> = (0..600).map(user).collect();
    for (u, who) in users.iter().enumerate() {
        let mut creds = Vec::new();
        if u % 2 == 0 {
            creds.push(Credential::consent(A));
        }
        if u % 3 == 0 {
            creds.extend([Credential::consent(B), Credential::consent(B)]);
        }
        if !creds.is_empty() {
            bank.store(&env.app, who, &creds).await.unwrap();
        }
    }
    for (template, keep) in [(A, 2), (B, 3)] {
        let want: BTreeSet<OpenId> = users
            .iter()
            .enumerate()
            .filter(|(u, _)| u % keep == 0)
            .map(|(_, w)| w.clone())
            .collect();
        for page in [1, 7, 1000] {
            let walked = walk(&bank, &env, template, page).await;
            let set: BTreeSet<OpenId> = walked.iter().cloned().collect();
            assert_eq!(set, want, "{template}, pages of {page}");
            assert_eq!(walked.len(), want.len(), "nobody twice without changes");
        }
        assert_eq!(
            bank.consent_holders(&env.app, template).await.unwrap(),
            want.len() as u64
        );
    }
    assert_eq!(bank.consent_total(&env.app, B).await.unwrap(), 2 * 200);
    assert!(walk(&bank, &env, "TPL_NOBODY", 50).await.is_empty());
    // Every consent key is a listpack at the server's defaults (no setting changed).
    let mut conn = bank.connection();
    let mut seen = 0;
    for (k, _) in keys_with_ttl(&env).await {
        if ["sb", "tn", "th", "tc"]
            .iter()
            .any(|p| k.starts_with(&format!("{}:{p}:", env.ns)))
        {
            let encoding: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(encoding, "listpack", "{k}");
            seen += 1;
        }
    }
    assert!(seen > 600, "{seen} consent keys");
}

/// Writes `who`'s consents as the layout before buckets did: their own hash, the template's
/// index set of the shard, and the shard's totals.
async fn store_the_old_way(bank: &Bank, env: &TestEnv, who: &OpenId, held: &[(&str, i64)]) {
    let shard = shard_of(who);
    let mut pipe = redis::pipe();
    for (t, n) in held {
        pipe.cmd("HINCRBY")
            .arg(bank.keys().legacy_consents(&env.app, who))
            .arg(*t)
            .arg(*n)
            .ignore();
        pipe.cmd("SADD")
            .arg(bank.keys().legacy_consent_index(&env.app, shard, t))
            .arg(who.as_str())
            .ignore();
        pipe.cmd("HINCRBY")
            .arg(bank.keys().consent_totals(&env.app, shard))
            .arg(*t)
            .arg(*n)
            .ignore();
    }
    let _: () = pipe.query_async(&mut bank.connection()).await.unwrap();
}

async fn exists(bank: &Bank, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut bank.connection())
        .await
        .unwrap()
}

#[tokio::test]
async fn consents_of_the_old_layout_are_read_and_moved_on_the_next_write() {
    let env = TestEnv::new("buckets_migrate");
    let bank = bank(&env).await;
    let (stores, claims, clears, gives, untouched, both) =
        (user(1), user(2), user(3), user(4), user(5), user(6));
    for who in [&stores, &claims, &clears, &gives, &untouched] {
        store_the_old_way(&bank, &env, who, &[(A, 2), (B, 1)]).await;
    }
    // One already holding consents in a bucket when an old writer added more (an upgrade
    // with both versions running): the counts add up.
    bank.store(&env.app, &both, &[Credential::consent(A)])
        .await
        .unwrap();
    store_the_old_way(&bank, &env, &both, &[(A, 3)]).await;

    // Read before any move: counts, walks, holders and totals.
    let everyone = [&stores, &claims, &clears, &gives, &untouched, &both];
    assert_eq!(bank.consents_left(&env.app, &stores, A).await.unwrap(), 2);
    assert_eq!(bank.consents_left(&env.app, &both, A).await.unwrap(), 4);
    let walked: BTreeSet<OpenId> = walk(&bank, &env, A, 2).await.into_iter().collect();
    assert_eq!(walked, everyone.iter().map(|u| (*u).clone()).collect());
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 5 * 2 + 4);
    assert_eq!(bank.consent_total(&env.app, B).await.unwrap(), 5);
    // (`both` is in the old set and the holders hash: counted twice until moved.)
    assert_eq!(bank.consent_holders(&env.app, B).await.unwrap(), 5);

    // A store moves the user, then adds.
    let r = bank
        .store(&env.app, &stores, &[Credential::consent(B)])
        .await
        .unwrap();
    assert_eq!((r.consents, r.consents_capped), (1, 0));
    assert!(!exists(&bank, &bank.keys().legacy_consents(&env.app, &stores)).await);
    assert_eq!(
        bank.consents_of(&env.app, &stores).await.unwrap(),
        BTreeMap::from([(A.to_owned(), 2), (B.to_owned(), 2)])
    );
    // A claim moves the user, then takes one.
    let claim = bank
        .campaign_claim_consent(
            &env.app,
            &claims,
            "camp",
            A,
            "w",
            Duration::from_secs(30),
            ClaimMode::Take,
        )
        .await
        .unwrap();
    assert!(matches!(claim, CampaignClaim::Fresh(_)), "{claim:?}");
    assert_eq!(bank.consents_left(&env.app, &claims, A).await.unwrap(), 1);
    // A clear moves the user, then clears the one template.
    assert_eq!(bank.clear_consents(&env.app, &clears, A).await.unwrap(), 2);
    assert_eq!(
        bank.consents_of(&env.app, &clears).await.unwrap(),
        BTreeMap::from([(B.to_owned(), 1)])
    );
    // A give-back moves the user, then gives one back.
    assert!(bank.release_consent(&env.app, &gives, B).await.unwrap());
    assert_eq!(bank.consents_left(&env.app, &gives, B).await.unwrap(), 2);
    // The user of both layouts: one store moves and merges.
    bank.store(&env.app, &both, &[Credential::consent(B)])
        .await
        .unwrap();
    assert_eq!(
        bank.consents_of(&env.app, &both).await.unwrap(),
        BTreeMap::from([(A.to_owned(), 4), (B.to_owned(), 1)])
    );
    // Every written user was moved; the untouched one was not. A settle giving the claimed
    // consent back adds it to the bucket.
    for who in [&stores, &claims, &clears, &gives, &both] {
        assert!(!exists(&bank, &bank.keys().legacy_consents(&env.app, who)).await);
    }
    assert!(exists(&bank, &bank.keys().legacy_consents(&env.app, &untouched)).await);
    assert!(bank
        .campaign_settle(
            &env.app,
            &claims,
            "camp",
            A,
            "w",
            Settle::Release {
                in_doubt: false,
                retry: false,
            },
        )
        .await
        .unwrap());
    assert_eq!(bank.consents_left(&env.app, &claims, A).await.unwrap(), 2);

    // Nothing lost: every count, total and holder, old layout (untouched) and new together.
    let want_a = BTreeMap::from([
        (stores.clone(), 2),
        (claims.clone(), 2),
        (gives.clone(), 2),
        (untouched.clone(), 2),
        (both.clone(), 4),
    ]);
    for (who, n) in &want_a {
        assert_eq!(bank.consents_left(&env.app, who, A).await.unwrap(), *n);
    }
    assert_eq!(
        bank.consent_total(&env.app, A).await.unwrap(),
        want_a.values().sum::<u64>()
    );
    assert_eq!(
        bank.consent_total(&env.app, B).await.unwrap(),
        2 + 1 + 2 + 1 + 1 + 1
    );
    assert_eq!(bank.consent_holders(&env.app, A).await.unwrap(), 5);
    assert_eq!(bank.consent_holders(&env.app, B).await.unwrap(), 6);
    let walked: BTreeSet<OpenId> = walk(&bank, &env, A, 3).await.into_iter().collect();
    assert_eq!(walked, want_a.keys().cloned().collect());
    // The moved users left the old index sets; the untouched one is still there.
    for who in everyone {
        let shard = shard_of(who);
        let member: bool = redis::cmd("SISMEMBER")
            .arg(bank.keys().legacy_consent_index(&env.app, shard, A))
            .arg(who.as_str())
            .query_async(&mut bank.connection())
            .await
            .unwrap();
        assert_eq!(member, *who == untouched, "{who}");
    }
}
