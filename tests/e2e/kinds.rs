//! Every kind of credential in one bank, against the real Redis: formIds and prepayId uses
//! spent as one pool, a prepayId's three uses, subscribe consents (accumulating, spent one per
//! campaign and template, given back, cleared), the consent index and totals kept exact under
//! concurrent claimers, key TTLs, and the real `wxpush ingest` storing an upload of all three.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use wxpush_bank::keys::{shard_of, SHARDS};
use wxpush_bank::{
    Bank, BankSettings, CampaignClaim, ClaimMode, ReachableCursor, Settle, CONSENT_TTL_SECS,
};
use wxpush_domain::{Credential, CredentialKind, OpenId};
use wxpush_testkit::{eventually, form_id, keys_with_ttl, now_ms, redis_url, terminate, TestEnv};

const LEASE: Duration = Duration::from_secs(30);
const A: &str = "TPL_ORDER_SHIPPED";
const B: &str = "TPL_SIGNIN";

async fn bank(env: &TestEnv) -> Bank {
    Bank::connect(&redis_url(), env.ns.clone(), BankSettings::default())
        .await
        .expect("Redis is reachable")
}

fn now_s() -> i64 {
    now_ms() / 1000
}

fn user(n: usize) -> OpenId {
    OpenId::new(&format!("oKinds{n:06}xxxxxxxxxxxxxxxxxxx")).unwrap()
}

fn prepay_id(n: u64) -> String {
    format!("wx2026112810242291fcfe0db7{n:010}")
}

async fn claim_all(bank: &Bank, env: &TestEnv, who: &OpenId) -> Vec<Credential> {
    let mut out = Vec::new();
    while let Some(c) = bank.claim(&env.app, who).await.unwrap() {
        out.push(c.credential);
    }
    out
}

/// Stores `n` consents for `template` for `who`, one store each (as `n` uploads would).
async fn give_consents(bank: &Bank, env: &TestEnv, who: &OpenId, template: &str, n: usize) {
    for _ in 0..n {
        let r = bank
            .store(&env.app, who, &[Credential::consent(template)])
            .await
            .unwrap();
        assert_eq!(r.consents, 1);
    }
}

/// Every user the consent index lists for `template`, walked in pages.
async fn index_users(bank: &Bank, env: &TestEnv, template: &str) -> BTreeSet<OpenId> {
    let mut users = BTreeSet::new();
    let mut cursor = Some(ReachableCursor::default());
    while let Some(c) = cursor {
        let page = bank.consent_page(&env.app, template, c, 50).await.unwrap();
        users.extend(page.users);
        cursor = page.next;
    }
    users
}

async fn claim_consent(
    bank: &Bank,
    env: &TestEnv,
    who: &OpenId,
    campaign: &str,
    template: &str,
    owner: &str,
) -> CampaignClaim {
    bank.campaign_claim_consent(
        &env.app,
        who,
        campaign,
        template,
        owner,
        LEASE,
        ClaimMode::Take,
    )
    .await
    .unwrap()
}

async fn settle(
    bank: &Bank,
    env: &TestEnv,
    who: &OpenId,
    campaign: &str,
    owner: &str,
    how: Settle<'_>,
) -> bool {
    // The template only matters to a subscribe campaign's consent; every test's is A.
    bank.campaign_settle(&env.app, who, campaign, A, owner, how)
        .await
        .unwrap()
}

const RELEASE: Settle<'static> = Settle::Release {
    in_doubt: false,
    retry: true,
};
const IN_DOUBT: Settle<'static> = Settle::Release {
    in_doubt: true,
    retry: true,
};

#[tokio::test]
async fn form_ids_and_prepay_uses_are_one_pool_spent_soonest_first() {
    let env = TestEnv::new("kinds_pool");
    let bank = bank(&env).await;
    let who = user(1);
    let now = now_s();
    let mut creds = vec![
        Credential::form_id(form_id(1, 1), now + 1000),
        Credential::form_id("not-hex-form-id", now + 4000),
        Credential::form_id(form_id(1, 2), now + 3000),
    ];
    creds.extend(Credential::prepay_uses(&prepay_id(1), now + 2000));
    creds.extend(Credential::prepay_uses(&prepay_id(2), now + 500));
    let r = bank.store(&env.app, &who, &creds).await.unwrap();
    assert_eq!((r.added, r.known, r.consents), (9, 0, 0));
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 9);

    let claimed = claim_all(&bank, &env, &who).await;
    let expect = vec![
        Credential::prepay_use(prepay_id(2), 1, now + 500),
        Credential::prepay_use(prepay_id(2), 2, now + 500),
        Credential::prepay_use(prepay_id(2), 3, now + 500),
        Credential::form_id(form_id(1, 1), now + 1000),
        Credential::prepay_use(prepay_id(1), 1, now + 2000),
        Credential::prepay_use(prepay_id(1), 2, now + 2000),
        Credential::prepay_use(prepay_id(1), 3, now + 2000),
        Credential::form_id(form_id(1, 2), now + 3000),
        Credential::form_id("not-hex-form-id", now + 4000),
    ];
    assert_eq!(claimed, expect);

    // A template campaign's claim takes from the same pool, soonest first.
    let who = user(2);
    let mut creds = vec![Credential::form_id(form_id(2, 1), now + 900)];
    creds.extend(Credential::prepay_uses(&prepay_id(3), now + 800));
    bank.store(&env.app, &who, &creds).await.unwrap();
    let got = bank
        .campaign_claim(&env.app, &who, "tpl-1", "me", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(
        got,
        CampaignClaim::Fresh(Credential::prepay_use(prepay_id(3), 1, now + 800))
    );
    // WeChat takes a prepayId in the template API's form_id: the value is the prepayId.
    let CampaignClaim::Fresh(c) = got else {
        unreachable!()
    };
    assert_eq!(c.value, prepay_id(3));
    assert!(
        settle(
            &bank,
            &env,
            &who,
            "tpl-1",
            "me",
            Settle::Final {
                outcome: "sent",
                give_back: false
            }
        )
        .await
    );
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 3);
}

#[tokio::test]
async fn a_prepay_id_gives_exactly_three_claims() {
    let env = TestEnv::new("kinds_prepay3");
    let bank = bank(&env).await;
    let who = user(3);
    let now = now_s();
    let uses: Vec<Credential> = Credential::prepay_uses(&prepay_id(7), now + 600).collect();
    assert_eq!(bank.store(&env.app, &who, &uses).await.unwrap().added, 3);
    for n in 1..=3u8 {
        let c = bank
            .claim(&env.app, &who)
            .await
            .unwrap()
            .unwrap()
            .credential;
        assert_eq!(c.kind, CredentialKind::PrepayId { use_no: n });
        assert_eq!(c.value, prepay_id(7));
    }
    assert!(bank.claim(&env.app, &who).await.unwrap().is_none());
    // Uploading it again brings no use back: the spent ones are tombstones.
    let r = bank.store(&env.app, &who, &uses).await.unwrap();
    assert_eq!((r.added, r.known), (0, 3));
    assert!(bank.claim(&env.app, &who).await.unwrap().is_none());
    // A use WeChat did not take goes back once, as a formId does.
    assert!(bank.release(&env.app, &who, &uses[1]).await.unwrap());
    assert!(!bank.release(&env.app, &who, &uses[1]).await.unwrap());
    assert_eq!(claim_all(&bank, &env, &who).await, vec![uses[1].clone()]);
    // A use number a prepayId does not have is refused before anything is sent.
    let bad = Credential::prepay_use(prepay_id(8), 4, now + 600);
    let e = bank.store(&env.app, &who, &[bad]).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
}

#[tokio::test]
async fn the_cap_counts_prepay_uses_like_form_ids() {
    let env = TestEnv::new("kinds_cap");
    let settings = BankSettings {
        user_cap: 4,
        ..BankSettings::default()
    };
    let bank = Bank::connect(&redis_url(), env.ns.clone(), settings)
        .await
        .unwrap();
    let who = user(4);
    let now = now_s();
    let mut creds = vec![
        Credential::form_id(form_id(4, 1), now + 100),
        Credential::form_id(form_id(4, 2), now + 3000),
    ];
    creds.extend(Credential::prepay_uses(&prepay_id(4), now + 2000));
    let r = bank.store(&env.app, &who, &creds).await.unwrap();
    assert_eq!((r.added, r.capped), (5, 1));
    let left: Vec<i64> = claim_all(&bank, &env, &who)
        .await
        .iter()
        .map(|c| c.expires_at)
        .collect();
    assert_eq!(left, vec![now + 2000, now + 2000, now + 2000, now + 3000]);
}

#[tokio::test]
async fn consents_accumulate_and_are_spent_one_per_campaign_and_template() {
    let env = TestEnv::new("kinds_consents");
    let bank = bank(&env).await;
    let who = user(5);
    give_consents(&bank, &env, &who, A, 2).await;
    give_consents(&bank, &env, &who, B, 1).await;
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 2);
    assert_eq!(bank.consents_left(&env.app, &who, B).await.unwrap(), 1);
    assert_eq!(
        bank.consents_left(&env.app, &who, "TPL_NONE")
            .await
            .unwrap(),
        0
    );
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 2);
    // A consent is not in the formId pool.
    assert!(bank.claim(&env.app, &who).await.unwrap().is_none());
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 0);

    let fresh = claim_consent(&bank, &env, &who, "sub-1", A, "w1").await;
    assert_eq!(fresh, CampaignClaim::Fresh(Credential::consent(A)));
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    assert_eq!(bank.consents_left(&env.app, &who, B).await.unwrap(), 1);
    // Another attempt waits for the lease; the same owner resumes with the same consent.
    let busy = claim_consent(&bank, &env, &who, "sub-1", A, "w2").await;
    assert!(
        matches!(busy, CampaignClaim::Busy(d) if d > Duration::from_secs(20)),
        "{busy:?}"
    );
    let held = claim_consent(&bank, &env, &who, "sub-1", A, "w1").await;
    assert_eq!(
        held,
        CampaignClaim::Held {
            credential: Credential::consent(A),
            in_doubt: true,
            expired: false,
            taken_over: false
        }
    );
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    // Final consumes it; the campaign is then done for the user.
    assert!(
        settle(
            &bank,
            &env,
            &who,
            "sub-1",
            "w1",
            Settle::Final {
                outcome: "sent",
                give_back: false
            }
        )
        .await
    );
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    let again = claim_consent(&bank, &env, &who, "sub-1", A, "w3").await;
    assert_eq!(again, CampaignClaim::Done("sent".into()));
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);

    // A second campaign spends the second consent; a third finds none.
    assert_eq!(
        claim_consent(&bank, &env, &who, "sub-2", A, "w1").await,
        CampaignClaim::Fresh(Credential::consent(A))
    );
    assert!(
        settle(
            &bank,
            &env,
            &who,
            "sub-2",
            "w1",
            Settle::Final {
                outcome: "sent",
                give_back: false
            }
        )
        .await
    );
    assert_eq!(
        claim_consent(&bank, &env, &who, "sub-3", A, "w1").await,
        CampaignClaim::NoCredential
    );
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 0);
    assert!(index_users(&bank, &env, A).await.is_empty());
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 0);
    // The other template was never touched.
    assert_eq!(bank.consents_left(&env.app, &who, B).await.unwrap(), 1);
    assert_eq!(
        index_users(&bank, &env, B).await,
        BTreeSet::from([who.clone()])
    );
    assert_eq!(bank.consent_total(&env.app, B).await.unwrap(), 1);
    let counts = bank.campaign_counters(&env.app, "sub-3").await.unwrap();
    assert_eq!(counts.get("no_credential"), Some(&1));
}

#[tokio::test]
async fn a_release_without_doubt_gives_the_consent_back_one_in_doubt_keeps_it() {
    let env = TestEnv::new("kinds_release");
    let bank = bank(&env).await;
    let who = user(6);
    give_consents(&bank, &env, &who, A, 1).await;
    let c = "sub-r";
    assert_eq!(
        claim_consent(&bank, &env, &who, c, A, "w1").await,
        CampaignClaim::Fresh(Credential::consent(A))
    );
    assert!(index_users(&bank, &env, A).await.is_empty());
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 0);
    // Another owner's release does nothing.
    assert!(!settle(&bank, &env, &who, c, "w2", RELEASE).await);
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 0);
    // Released without doubt: back to the user, the index and the totals.
    assert!(settle(&bank, &env, &who, c, "w1", RELEASE).await);
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    assert_eq!(
        index_users(&bank, &env, A).await,
        BTreeSet::from([who.clone()])
    );
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 1);
    // Released twice: the consent was already given back, nothing more comes.
    assert!(settle(&bank, &env, &who, c, "w1", RELEASE).await);
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    let counts = bank.campaign_counters(&env.app, c).await.unwrap();
    assert_eq!(counts.get("retried"), Some(&2));

    // The next attempt (any owner, the lease ended) takes a consent afresh.
    assert_eq!(
        claim_consent(&bank, &env, &who, c, A, "w2").await,
        CampaignClaim::Fresh(Credential::consent(A))
    );
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 0);
    // In doubt: the consent stays held, and the next attempt is told so.
    assert!(settle(&bank, &env, &who, c, "w2", IN_DOUBT).await);
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 0);
    assert_eq!(
        claim_consent(&bank, &env, &who, c, A, "w3").await,
        CampaignClaim::Held {
            credential: Credential::consent(A),
            in_doubt: true,
            expired: false,
            taken_over: false
        }
    );
    assert!(
        settle(
            &bank,
            &env,
            &who,
            c,
            "w3",
            Settle::Final {
                outcome: "unknown",
                give_back: false
            }
        )
        .await
    );
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 0);
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 0);

    // A consent refused by WeChat after the campaign was settled goes back explicitly.
    bank.release_consent(&env.app, &who, A).await.unwrap();
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 1);
    assert!(!bank
        .release(&env.app, &who, &Credential::consent(A))
        .await
        .unwrap());

    // A formId campaign's release keeps its formId held, as before.
    let now = now_s();
    let f = Credential::form_id(form_id(6, 1), now + 600);
    bank.store(&env.app, &who, std::slice::from_ref(&f))
        .await
        .unwrap();
    assert_eq!(
        bank.campaign_claim(&env.app, &who, "tpl-r", "w1", LEASE, ClaimMode::Take)
            .await
            .unwrap(),
        CampaignClaim::Fresh(f.clone())
    );
    assert!(settle(&bank, &env, &who, "tpl-r", "w1", RELEASE).await);
    assert_eq!(
        bank.campaign_claim(&env.app, &who, "tpl-r", "w2", LEASE, ClaimMode::Take)
            .await
            .unwrap(),
        CampaignClaim::Held {
            credential: f,
            in_doubt: false,
            expired: false,
            taken_over: false
        }
    );
}

#[tokio::test]
async fn clearing_removes_a_templates_consents_and_updates_index_and_totals() {
    let env = TestEnv::new("kinds_clear");
    let bank = bank(&env).await;
    let (u1, u2) = (user(7), user(8));
    give_consents(&bank, &env, &u1, A, 3).await;
    give_consents(&bank, &env, &u1, B, 1).await;
    give_consents(&bank, &env, &u2, A, 1).await;
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 4);
    assert_eq!(
        index_users(&bank, &env, A).await,
        BTreeSet::from([u1.clone(), u2.clone()])
    );
    assert_eq!(bank.clear_consents(&env.app, &u1, A).await.unwrap(), 3);
    assert_eq!(bank.consents_left(&env.app, &u1, A).await.unwrap(), 0);
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 1);
    assert_eq!(
        index_users(&bank, &env, A).await,
        BTreeSet::from([u2.clone()])
    );
    // Only that template; clearing again removes nothing.
    assert_eq!(bank.consents_left(&env.app, &u1, B).await.unwrap(), 1);
    assert_eq!(bank.clear_consents(&env.app, &u1, A).await.unwrap(), 0);
    assert_eq!(bank.clear_consents(&env.app, &u2, A).await.unwrap(), 1);
    assert!(index_users(&bank, &env, A).await.is_empty());
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 0);
    // The totals hash keeps no zero field.
    let shard = shard_of(&u2);
    let totals: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(bank.keys().consent_totals(&env.app, shard))
        .query_async(&mut bank.connection())
        .await
        .unwrap();
    assert!(!totals.contains_key(A), "{totals:?}");
}

/// Reads every user's consents, every shard's totals and holders hashes and the walk of
/// every template and checks they agree: the walk finds a user exactly when they hold ≥ 1
/// consent for the template, each shard's total is the sum of its users' counts and its
/// holders the number of its users holding ≥ 1, and no count is 0 or negative.
async fn check_exact(bank: &Bank, env: &TestEnv, users: &[OpenId], templates: &[&str]) {
    let mut conn = bank.connection();
    let mut expected_totals: BTreeMap<(u16, String), i64> = BTreeMap::new();
    let mut holders: BTreeMap<(u16, String), BTreeSet<OpenId>> = BTreeMap::new();
    for who in users {
        let held = bank.consents_of(&env.app, who).await.unwrap();
        for (t, n) in held {
            assert!(n >= 1, "{who} holds {n} for {t}");
            *expected_totals
                .entry((shard_of(who), t.clone()))
                .or_default() += n as i64;
            holders
                .entry((shard_of(who), t))
                .or_default()
                .insert(who.clone());
        }
    }
    for shard in 0..SHARDS {
        let (totals, counted): (BTreeMap<String, i64>, BTreeMap<String, i64>) = redis::pipe()
            .cmd("HGETALL")
            .arg(bank.keys().consent_totals(&env.app, shard))
            .cmd("HGETALL")
            .arg(bank.keys().consent_holders(&env.app, shard))
            .query_async(&mut conn)
            .await
            .unwrap();
        for t in templates {
            let want = expected_totals.get(&(shard, t.to_string())).copied();
            assert_eq!(
                totals.get(*t).copied(),
                want,
                "totals of {t} in shard {shard}"
            );
            let want = holders.get(&(shard, t.to_string())).map(|h| h.len() as i64);
            assert_eq!(
                counted.get(*t).copied(),
                want,
                "holders of {t} in shard {shard}"
            );
        }
    }
    for t in templates {
        let want: BTreeSet<OpenId> = holders
            .iter()
            .filter(|((_, name), _)| name == t)
            .flat_map(|(_, h)| h.iter().cloned())
            .collect();
        assert_eq!(index_users(bank, env, t).await, want, "the walk of {t}");
        assert_eq!(
            bank.consent_holders(&env.app, t).await.unwrap(),
            want.len() as u64,
            "holders of {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_and_totals_stay_exact_under_concurrent_claimers() {
    let env = TestEnv::new("kinds_concurrent");
    let bank = bank(&env).await;
    let users: Vec<OpenId> = (0..150).map(|n| user(100 + n)).collect();
    // User u holds 1 + u % 5 consents for A and 2 for B, stored in one batch.
    let owned: Vec<Vec<Credential>> = (0..users.len())
        .map(|u| {
            let mut c = vec![Credential::consent(A); 1 + u % 5];
            c.extend([Credential::consent(B), Credential::consent(B)]);
            c
        })
        .collect();
    let reqs: Vec<wxpush_bank::StoreRequest<'_>> = users
        .iter()
        .zip(&owned)
        .map(|(who, credentials)| wxpush_bank::StoreRequest {
            app: &env.app,
            open_id: who,
            credentials,
        })
        .collect();
    let reports = bank.store_batch(&reqs).await.unwrap();
    let stored: u64 = reports.iter().map(|r| r.consents).sum();
    assert_eq!(stored, owned.iter().map(|c| c.len() as u64).sum::<u64>());
    check_exact(&bank, &env, &users, &[A, B]).await;

    // Three campaigns on A and one on B; eight claimers work through every (campaign, user)
    // in their own order. On a first pass a claimer sometimes releases (the consent goes
    // back, someone takes it again later); otherwise it settles the message as sent.
    let campaigns = [("a-0", A), ("a-1", A), ("a-2", A), ("b-0", B)];
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (bank, users, app) = (bank.clone(), users.clone(), env.app.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("claimer-{t}");
            let mut sent: Vec<(String, usize)> = Vec::new();
            for pass in 0.. {
                let mut open = 0;
                for i in 0..users.len() * campaigns.len() {
                    let k = (i * 7 + t * 131) % (users.len() * campaigns.len());
                    let (campaign, template) = campaigns[k % campaigns.len()];
                    let u = k / campaigns.len();
                    let claim = bank
                        .campaign_claim_consent(
                            &app,
                            &users[u],
                            campaign,
                            template,
                            &owner,
                            LEASE,
                            ClaimMode::Take,
                        )
                        .await
                        .unwrap();
                    match claim {
                        CampaignClaim::Fresh(_) | CampaignClaim::Held { .. } => {
                            let how = if pass == 0 && (k + t).is_multiple_of(4) {
                                open += 1;
                                RELEASE
                            } else {
                                sent.push((campaign.to_owned(), u));
                                Settle::Final {
                                    outcome: "sent",
                                    give_back: false,
                                }
                            };
                            let ok = bank
                                .campaign_settle(&app, &users[u], campaign, template, &owner, how)
                                .await
                                .unwrap();
                            assert!(ok, "settled by its owner");
                        }
                        CampaignClaim::Busy(_) => open += 1,
                        CampaignClaim::Done(_) | CampaignClaim::NoCredential => {}
                        CampaignClaim::Capped => unreachable!("no cap is asked for"),
                        CampaignClaim::Superseded => unreachable!("a take is never superseded"),
                    }
                }
                if open == 0 {
                    break;
                }
            }
            sent
        }));
    }
    let mut sent: HashMap<(String, usize), usize> = HashMap::new();
    for t in tasks {
        for key in t.await.unwrap() {
            *sent.entry(key).or_default() += 1;
        }
    }
    assert!(sent.values().all(|&n| n == 1), "a message was sent twice");
    for (u, who) in users.iter().enumerate() {
        let a_sent = (0..3)
            .filter(|k| sent.contains_key(&(format!("a-{k}"), u)))
            .count();
        let held_a = 1 + u % 5;
        assert_eq!(a_sent, held_a.min(3), "user {u}: consents for A spent");
        let left_a = bank.consents_left(&env.app, who, A).await.unwrap();
        assert_eq!(
            left_a as usize,
            held_a - a_sent,
            "user {u}: consents for A left"
        );
        assert!(sent.contains_key(&("b-0".to_owned(), u)));
        assert_eq!(bank.consents_left(&env.app, who, B).await.unwrap(), 1);
    }
    check_exact(&bank, &env, &users, &[A, B]).await;
    let left_a: usize = (0..users.len())
        .map(|u| (1 + u % 5).saturating_sub(3))
        .sum();
    assert_eq!(
        bank.consent_total(&env.app, A).await.unwrap() as usize,
        left_a
    );
    assert_eq!(
        bank.consent_total(&env.app, B).await.unwrap() as usize,
        users.len()
    );
    let a_holders: BTreeSet<OpenId> = (0..users.len())
        .filter(|u| 1 + u % 5 > 3)
        .map(|u| users[u].clone())
        .collect();
    assert_eq!(index_users(&bank, &env, A).await, a_holders);
}

#[tokio::test]
async fn every_key_has_a_ttl() {
    let env = TestEnv::new("kinds_ttl");
    let bank = bank(&env).await;
    let now = now_s();
    for u in 0..6 {
        let who = user(200 + u);
        let mut creds = vec![Credential::form_id(form_id(u as u64, 0), now + 3600)];
        creds.extend(Credential::prepay_uses(&prepay_id(u as u64), now + 3000));
        creds.push(Credential::consent(A));
        creds.push(Credential::consent(B));
        bank.store(&env.app, &who, &creds).await.unwrap();
    }
    let (a, b) = (user(200), user(201));
    bank.claim(&env.app, &a).await.unwrap();
    claim_consent(&bank, &env, &a, "sub-t", A, "w").await;
    settle(
        &bank,
        &env,
        &a,
        "sub-t",
        "w",
        Settle::Final {
            outcome: "sent",
            give_back: false,
        },
    )
    .await;
    claim_consent(&bank, &env, &b, "sub-t", A, "w").await;
    settle(&bank, &env, &b, "sub-t", "w", RELEASE).await;
    bank.clear_consents(&env.app, &b, B).await.unwrap();
    let keys = keys_with_ttl(&env).await;
    let prefix = |p: &str| format!("{}:{p}:", env.ns);
    let mut kinds = BTreeSet::new();
    let ttl = CONSENT_TTL_SECS as i64;
    for (k, t) in &keys {
        assert!(*t > 0, "{k} has no TTL ({t})");
        for p in ["c", "u", "m", "cs", "sb", "tn", "th", "tc"] {
            if k.starts_with(&prefix(p)) {
                kinds.insert(p);
                if matches!(p, "sb" | "tn" | "th" | "tc") {
                    assert!(*t > ttl - 60 && *t <= ttl, "{k}: TTL {t}");
                }
            }
        }
    }
    assert_eq!(
        kinds.len(),
        8,
        "every kind of key was seen: {kinds:?} in {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_binary_stores_an_upload_of_all_three_kinds() {
    let env = TestEnv::new("kinds_ingest");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let child = env.spawn(&["ingest"]);
    let day = 86_400_000;
    let users: Vec<OpenId> = (0..40).map(|n| user(300 + n)).collect();
    let mut bodies = Vec::new();
    for (n, who) in users.iter().enumerate() {
        let prepay = json!([{"prepayId": prepay_id(n as u64), "expire": now_ms() + 2 * day}]);
        // Half send prepayIds as a JSON string, as the seed's client sends formIds.
        let prepay = if n % 2 == 0 {
            prepay
        } else {
            json!(prepay.to_string())
        };
        bodies.push(json!({
            "openId": who.as_str(),
            "formIds": [{"formId": form_id(n as u64, 1), "expire": now_ms() + day}],
            "prepayIds": prepay,
            "subscriptions": {"errMsg": "requestSubscribeMessage:ok", A: "accept", B: "reject",
                              "TPL_BANNED": "ban"},
        }));
        // A second upload: another consent for A, one for B, nothing else.
        bodies.push(json!({"openId": who.as_str(),
            "subscriptions": {"errMsg": "requestSubscribeMessage:ok", A: "accept", B: "accept"}}));
    }
    let bodies: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_string().into_bytes()).collect();
    env.publish_uploads(&deps.broker, &bodies).await;
    let bank = &deps.bank;
    let stored = eventually(Duration::from_secs(30), || async {
        for who in &users {
            if bank.consents_left(&env.app, who, B).await.unwrap_or(0) < 1
                || bank.consents_left(&env.app, who, A).await.unwrap_or(0) < 2
                || bank.usable_count(&env.app, who).await.unwrap_or(0) < 4
            {
                return false;
            }
        }
        true
    })
    .await;
    assert!(stored, "every upload stored");
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert_eq!(
        env.queue_ready(&deps.broker, &env.topology().ingest_queue())
            .await,
        0
    );
    assert!(env
        .drain_dead_letters(&deps.broker, "ingest")
        .await
        .is_empty());

    let now = now_s();
    for (n, who) in users.iter().enumerate() {
        assert_eq!(bank.consents_left(&env.app, who, A).await.unwrap(), 2);
        assert_eq!(bank.consents_left(&env.app, who, B).await.unwrap(), 1);
        assert_eq!(
            bank.consents_left(&env.app, who, "TPL_BANNED")
                .await
                .unwrap(),
            0
        );
        let claimed = claim_all(bank, &env, who).await;
        let kinds: Vec<CredentialKind> = claimed.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            vec![
                CredentialKind::FormId,
                CredentialKind::PrepayId { use_no: 1 },
                CredentialKind::PrepayId { use_no: 2 },
                CredentialKind::PrepayId { use_no: 3 },
            ],
            "user {n}"
        );
        assert_eq!(claimed[0].value, form_id(n as u64, 1));
        assert!(claimed[1..].iter().all(|c| c.value == prepay_id(n as u64)));
        assert!(claimed[1].expires_at > now + day / 1000);
    }
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 80);
    assert_eq!(bank.consent_total(&env.app, B).await.unwrap(), 40);
    let expect: BTreeSet<OpenId> = users.iter().cloned().collect();
    assert_eq!(index_users(bank, &env, A).await, expect);
    check_exact(bank, &env, &users, &[A, B, "TPL_BANNED"]).await;
}

/// Issue 12, case 3: fencing. An attempt whose lease ran out while it stalled (a stopped
/// process, a long wait) and was taken over must never settle, release, give back or claim the
/// next credential: every step after the claim names the attempt's token, and Redis refuses a
/// token that no longer holds the lease. Today's main let the stale attempt's settle through
/// (no owner check) and let its `next` claim another credential (a second message).
#[tokio::test]
async fn a_stale_attempt_can_neither_settle_nor_claim_the_next_credential() {
    let env = TestEnv::new("kinds_fence");
    let bank = bank(&env).await;
    let who = user(9);
    let now = now_ms() / 1000;
    let creds = [
        Credential::form_id(form_id(9, 1), now + 1000),
        Credential::form_id(form_id(9, 2), now + 2000),
    ];
    bank.store(&env.app, &who, &creds).await.unwrap();
    let claim = |owner: &'static str, lease: Duration, mode: ClaimMode| {
        let (bank, env, who) = (&bank, &env, &who);
        async move {
            bank.campaign_claim(&env.app, who, "fenced", owner, lease, mode)
                .await
                .unwrap()
        }
    };
    let short = Duration::from_millis(300);
    assert_eq!(
        claim("stale", short, ClaimMode::Take).await,
        CampaignClaim::Fresh(creds[0].clone())
    );
    // The stale attempt's lease runs out; another attempt takes the credential over, told that
    // a call with it may have delivered (the stale one may be inside its call).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        claim("fresh", LEASE, ClaimMode::Take).await,
        CampaignClaim::Held {
            credential: creds[0].clone(),
            in_doubt: true,
            expired: false,
            taken_over: true
        }
    );
    // The stale attempt wakes: nothing it does is applied.
    let sent = Settle::Final {
        outcome: "sent",
        give_back: false,
    };
    let given_back = Settle::Final {
        outcome: "failed:40037",
        give_back: true,
    };
    for how in [sent, given_back, RELEASE, IN_DOUBT] {
        assert!(
            !settle(&bank, &env, &who, "fenced", "stale", how).await,
            "{how:?}"
        );
    }
    assert_eq!(
        claim("stale", LEASE, ClaimMode::Next).await,
        CampaignClaim::Superseded
    );
    assert_eq!(
        claim("stale", LEASE, ClaimMode::Renew).await,
        CampaignClaim::Superseded
    );
    // The attempt that holds the lease settles; the user's other formId was never touched.
    let unconfirmed = Settle::Final {
        outcome: "sent_unconfirmed",
        give_back: false,
    };
    assert!(settle(&bank, &env, &who, "fenced", "fresh", unconfirmed).await);
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 1);
    let counts = bank.campaign_counters(&env.app, "fenced").await.unwrap();
    assert_eq!(counts.get("sent_unconfirmed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("sent"), None, "{counts:?}");
    // And once settled, even its own late steps are refused.
    assert!(!settle(&bank, &env, &who, "fenced", "fresh", RELEASE).await);
    assert_eq!(
        claim("fresh", LEASE, ClaimMode::Renew).await,
        CampaignClaim::Superseded
    );
}

/// Issue 12, case 4, in the bank: a held credential's expiry is compared with Redis's clock
/// and the safety margin whenever it is resumed, so the sender can refuse to send it again.
#[tokio::test]
async fn a_held_credential_says_when_it_has_expired() {
    let mut env = TestEnv::new("kinds_held_expiry");
    env.set("WXPUSH_CLAIM_MARGIN_SECS", "1");
    let bank = env.deps().await.bank;
    let who = user(10);
    let now = now_ms() / 1000;
    let x = Credential::form_id(form_id(10, 1), now + 3);
    bank.store(&env.app, &who, std::slice::from_ref(&x))
        .await
        .unwrap();
    let claimed = bank
        .campaign_claim(&env.app, &who, "exp", "a", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(claimed, CampaignClaim::Fresh(x.clone()));
    assert!(settle(&bank, &env, &who, "exp", "a", IN_DOUBT).await);
    let resumed = bank
        .campaign_claim(&env.app, &who, "exp", "b", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(
        resumed,
        CampaignClaim::Held {
            credential: x.clone(),
            in_doubt: true,
            expired: false,
            taken_over: false
        }
    );
    assert!(settle(&bank, &env, &who, "exp", "b", IN_DOUBT).await);
    // Within the margin of its expiry now.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = bank
        .campaign_claim(&env.app, &who, "exp", "c", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(
        late,
        CampaignClaim::Held {
            credential: x,
            in_doubt: true,
            expired: true,
            taken_over: false
        }
    );
}

/// `wxpush campaign retry`, in the bank: only a recipient settled `dead_lettered` (certainly
/// not delivered, credential given back) is made sendable again, with the campaign's counters
/// moved from `dead_lettered` to `requeued`; a recipient with any other outcome is never
/// listed or reset; a run that dies before publishing lists the recipient again.
#[tokio::test]
async fn only_dead_lettered_recipients_are_made_sendable_again() {
    let env = TestEnv::new("kinds_requeue");
    let bank = bank(&env).await;
    let now = now_ms() / 1000;
    let (dead, sent, listed_by_hand) = (user(20), user(21), user(22));
    for (n, who) in [(20, &dead), (21, &sent), (22, &listed_by_hand)] {
        let c = Credential::form_id(form_id(n, 1), now + 1000);
        bank.store(&env.app, who, &[c]).await.unwrap();
        let claimed = bank
            .campaign_claim(&env.app, who, "rq", "a", LEASE, ClaimMode::Take)
            .await
            .unwrap();
        assert!(matches!(claimed, CampaignClaim::Fresh(_)), "{claimed:?}");
    }
    let dead_lettered = Settle::Final {
        outcome: "dead_lettered",
        give_back: true,
    };
    let was_sent = Settle::Final {
        outcome: "sent",
        give_back: false,
    };
    assert!(settle(&bank, &env, &dead, "rq", "a", dead_lettered).await);
    assert!(settle(&bank, &env, &sent, "rq", "a", was_sent).await);
    assert!(settle(&bank, &env, &listed_by_hand, "rq", "a", was_sent).await);
    // A sent recipient listed by mistake (or by a bug elsewhere) is still never reset.
    let shard = wxpush_bank::keys::shard_of(&listed_by_hand);
    let mut conn = bank.connection();
    let _: i64 = redis::cmd("SADD")
        .arg(bank.keys().campaign_retryable(&env.app, shard, "rq"))
        .arg(listed_by_hand.as_str())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        bank.campaign_retryable_count(&env.app, "rq").await.unwrap(),
        2
    );

    let mut to_publish = Vec::new();
    let mut skipped = 0;
    for shard in 0..wxpush_bank::SHARDS {
        let page = bank
            .campaign_requeue_page(&env.app, shard, "rq", 0)
            .await
            .unwrap();
        assert_eq!(page.next, None);
        skipped += page.skipped;
        to_publish.extend(page.users.into_iter().map(|u| (shard, u)));
    }
    assert_eq!(
        to_publish,
        vec![(wxpush_bank::keys::shard_of(&dead), dead.clone())]
    );
    assert_eq!(skipped, 1, "the sent recipient is taken off the list");
    let counts = bank.campaign_counters(&env.app, "rq").await.unwrap();
    assert_eq!(counts.get("dead_lettered"), Some(&0), "{counts:?}");
    assert_eq!(counts.get("requeued"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("sent"), Some(&2), "{counts:?}");

    // The run died before publishing: the next run lists the recipient again, counting nothing
    // twice.
    let shard = wxpush_bank::keys::shard_of(&dead);
    let again = bank
        .campaign_requeue_page(&env.app, shard, "rq", 0)
        .await
        .unwrap();
    assert_eq!(again.users, vec![dead.clone()]);
    let counts = bank.campaign_counters(&env.app, "rq").await.unwrap();
    assert_eq!(counts.get("requeued"), Some(&1), "{counts:?}");
    // Published: off the list. The new job claims the credential given back, and is sent.
    bank.campaign_requeued(&env.app, shard, "rq", std::slice::from_ref(&dead))
        .await
        .unwrap();
    assert_eq!(
        bank.campaign_retryable_count(&env.app, "rq").await.unwrap(),
        0
    );
    let claimed = bank
        .campaign_claim(&env.app, &dead, "rq", "b", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(
        claimed,
        CampaignClaim::Fresh(Credential::form_id(form_id(20, 1), now + 1000))
    );
    // A sent recipient's mark is untouched: its next job is a duplicate.
    let dup = bank
        .campaign_claim(&env.app, &sent, "rq", "b", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(dup, CampaignClaim::Done("sent".into()));
}

/// `campaign retry` never sends again to a recipient whose mark was pruned (after 8 days
/// nothing says any more whether it was sent since), keeps listed one dead-lettered again while
/// its job was being published, and a campaign whose id is the old name of the marks' prune
/// marker (`~p`) keeps its outcome through a prune.
#[tokio::test]
async fn a_requeue_neither_resends_a_pruned_mark_nor_forgets_a_second_dead_letter() {
    let env = TestEnv::new("kinds_requeue_edges");
    let bank = bank(&env).await;
    let now = now_ms() / 1000;
    let dead_lettered = Settle::Final {
        outcome: "dead_lettered",
        give_back: true,
    };
    let (again, pruned) = (user(30), user(31));
    for (n, who) in [(30, &again), (31, &pruned)] {
        let creds = [
            Credential::form_id(form_id(n, 1), now + 1000),
            Credential::form_id(form_id(n, 2), now + 2000),
        ];
        bank.store(&env.app, who, &creds).await.unwrap();
        bank.campaign_claim(&env.app, who, "rq2", "a", LEASE, ClaimMode::Take)
            .await
            .unwrap();
        assert!(settle(&bank, &env, who, "rq2", "a", dead_lettered).await);
    }
    // The pruned one: its mark is gone, as a claim 8 days later would leave it.
    let mut conn = bank.connection();
    let _: i64 = redis::cmd("HDEL")
        .arg(bank.keys().marks(&env.app, &pruned))
        .arg("rq2")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut published = Vec::new();
    let mut skipped = 0;
    for shard in 0..wxpush_bank::SHARDS {
        let page = bank
            .campaign_requeue_page(&env.app, shard, "rq2", 0)
            .await
            .unwrap();
        skipped += page.skipped;
        published.extend(page.users.into_iter().map(|u| (shard, u)));
    }
    assert_eq!(
        published,
        vec![(wxpush_bank::keys::shard_of(&again), again.clone())],
        "a recipient with no mark is never published again"
    );
    assert_eq!(skipped, 1);
    // The job published for `again` gives up at once (WeChat still down) before the run takes
    // it off the list: it stays listed for the next run.
    let claimed = bank
        .campaign_claim(&env.app, &again, "rq2", "b", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert!(matches!(claimed, CampaignClaim::Fresh(_)), "{claimed:?}");
    assert!(settle(&bank, &env, &again, "rq2", "b", dead_lettered).await);
    let shard = wxpush_bank::keys::shard_of(&again);
    bank.campaign_requeued(&env.app, shard, "rq2", std::slice::from_ref(&again))
        .await
        .unwrap();
    assert_eq!(
        bank.campaign_retryable_count(&env.app, "rq2")
            .await
            .unwrap(),
        1,
        "dead-lettered again: still listed"
    );
    let counts = bank.campaign_counters(&env.app, "rq2").await.unwrap();
    assert_eq!(counts.get("dead_lettered"), Some(&2), "{counts:?}");

    // A campaign called `~p`: sent, then the user's marks are pruned; its next job is still a
    // duplicate.
    let z = user(32);
    bank.store(
        &env.app,
        &z,
        &[
            Credential::form_id(form_id(32, 1), now + 1000),
            Credential::form_id(form_id(32, 2), now + 2000),
        ],
    )
    .await
    .unwrap();
    let sent = Settle::Final {
        outcome: "sent",
        give_back: false,
    };
    bank.campaign_claim(&env.app, &z, "~p", "a", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert!(settle(&bank, &env, &z, "~p", "a", sent).await);
    // Enough other outcomes, one of them old, that the next claim of a new campaign prunes.
    let marks = bank.keys().marks(&env.app, &z);
    let today = now / 86_400;
    let mut pipe = redis::pipe();
    for n in 0..9 {
        let day = if n == 0 { today - 20 } else { today };
        pipe.hset(&marks, format!("old{n}"), format!("=sent@{day}"))
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("HDEL")
        .arg(&marks)
        .arg("~ p")
        .query_async(&mut conn)
        .await
        .unwrap();
    bank.campaign_claim(&env.app, &z, "next", "a", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    let old: Option<String> = redis::cmd("HGET")
        .arg(&marks)
        .arg("old0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(old, None, "the claim pruned the old outcome");
    let dup = bank
        .campaign_claim(&env.app, &z, "~p", "b", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(dup, CampaignClaim::Done("sent".into()));
}

/// A prepayId use refused by WeChat (`41029`: its uses spent elsewhere, or `41028`) takes the
/// prepayId's other uses with it: the next claim is the user's next credential, not the same
/// prepayId's next use, which WeChat would refuse for the same reason.
#[tokio::test]
async fn a_refused_prepay_use_takes_its_other_uses_with_it() {
    let env = TestEnv::new("kinds_prepay_refused");
    let bank = bank(&env).await;
    let now = now_s();
    let who = user(40);
    let mut creds: Vec<Credential> = Credential::prepay_uses(&prepay_id(40), now + 1000).collect();
    creds.push(Credential::form_id(form_id(40, 1), now + 2000));
    bank.store(&env.app, &who, &creds).await.unwrap();
    let first = bank
        .campaign_claim(&env.app, &who, "pr", "a", LEASE, ClaimMode::Take)
        .await
        .unwrap();
    assert_eq!(
        first,
        CampaignClaim::Fresh(Credential::prepay_use(prepay_id(40), 1, now + 1000))
    );
    let next = bank
        .campaign_claim(&env.app, &who, "pr", "a", LEASE, ClaimMode::Next)
        .await
        .unwrap();
    assert_eq!(
        next,
        CampaignClaim::Fresh(Credential::form_id(form_id(40, 1), now + 2000))
    );
    assert_eq!(bank.usable_count(&env.app, &who).await.unwrap(), 0);
}
