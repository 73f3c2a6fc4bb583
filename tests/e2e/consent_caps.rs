//! Bounded subscribe consents (issue 11, item 6), against the real Redis and RabbitMQ.
//!
//! The bank: a user holds at most `WXPUSH_CONSENTS_PER_TEMPLATE` (50) consents for one
//! template and consents for at most `WXPUSH_TEMPLATES_PER_USER` (100) templates; what is over
//! is refused and reported, never stored (no key for a refused template), a give-back goes
//! through the same caps, and the user's hash, the template indexes and the shard totals stay
//! exact together. The real `wxpush ingest`: the same upload replayed 60 times holds 50, and
//! with the app's `templates` listed in `WXPUSH_CONFIG` a consent for another template is
//! dropped and counted while the rest of the upload is kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use wxpush_bank::keys::shard_of;
use wxpush_bank::{Bank, BankSettings, CampaignClaim, ClaimMode, StoreReport};
use wxpush_domain::{Credential, OpenId};
use wxpush_testkit::{
    eventually, form_id, free_addr, http_get, keys_with_ttl, now_ms, redis_url, terminate, TestEnv,
};

const A: &str = "TPL_ORDER_SHIPPED";
const B: &str = "TPL_SIGNIN";

async fn bank(env: &TestEnv, settings: BankSettings) -> Bank {
    Bank::connect(&redis_url(), env.ns.clone(), settings)
        .await
        .expect("Redis is reachable")
}

fn user(n: usize) -> OpenId {
    OpenId::new(&format!("oCaps{n:06}xxxxxxxxxxxxxxxxxxxx")).unwrap()
}

/// The `i`th of many template ids (in sorted order).
fn template(i: usize) -> String {
    format!("TPL_{i:03}")
}

async fn offer(
    bank: &Bank,
    env: &TestEnv,
    who: &OpenId,
    consents: &[(&str, usize)],
) -> StoreReport {
    let credentials: Vec<Credential> = consents
        .iter()
        .flat_map(|(t, n)| std::iter::repeat_n(Credential::consent(*t), *n))
        .collect();
    bank.store(&env.app, who, &credentials).await.unwrap()
}

/// One user's consents as the bank holds them (template → count).
async fn held(bank: &Bank, env: &TestEnv, who: &OpenId) -> BTreeMap<String, i64> {
    bank.consents_of(&env.app, who)
        .await
        .unwrap()
        .into_iter()
        .map(|(t, n)| (t, n as i64))
        .collect()
}

/// Checks that `users` are the only consent holders of the namespace and that the bank's
/// structures agree: a template's walk finds exactly the users holding ≥ 1 for it (and no
/// template nobody holds has holders), each shard's total is the sum of its users' counts, and
/// its holders the number of its users holding ≥ 1.
async fn check_exact(bank: &Bank, env: &TestEnv, users: &[OpenId]) {
    let mut conn = bank.connection();
    let mut totals: BTreeMap<(u16, String), i64> = BTreeMap::new();
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut counted: BTreeMap<(u16, String), i64> = BTreeMap::new();
    for who in users {
        for (t, n) in held(bank, env, who).await {
            assert!(n >= 1, "{who} holds {n} for {t}");
            let shard = shard_of(who);
            *totals.entry((shard, t.clone())).or_default() += n;
            *counted.entry((shard, t.clone())).or_default() += 1;
            members.entry(t).or_default().insert(who.to_string());
        }
    }
    let mut shards: Vec<u16> = users.iter().map(shard_of).collect();
    shards.sort();
    shards.dedup();
    for shard in shards {
        let (stored, holders): (BTreeMap<String, i64>, BTreeMap<String, i64>) = redis::pipe()
            .cmd("HGETALL")
            .arg(bank.keys().consent_totals(&env.app, shard))
            .cmd("HGETALL")
            .arg(bank.keys().consent_holders(&env.app, shard))
            .query_async(&mut conn)
            .await
            .unwrap();
        let of_shard = |m: &BTreeMap<(u16, String), i64>| -> BTreeMap<String, i64> {
            m.iter()
                .filter(|((s, _), _)| *s == shard)
                .map(|((_, t), n)| (t.clone(), *n))
                .collect()
        };
        assert_eq!(stored, of_shard(&totals), "totals of shard {shard}");
        assert_eq!(holders, of_shard(&counted), "holders of shard {shard}");
    }
    // Every template any shard's dictionary knows: its walk finds exactly its holders.
    let mut known: BTreeSet<String> = BTreeSet::new();
    for (k, _) in keys_with_ttl(env).await {
        if k.starts_with(&format!("{}:tn:", env.ns)) {
            let names: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            known.extend(names.into_keys().filter(|f| !f.starts_with(' ')));
        }
        assert!(
            !k.starts_with(&format!("{}:t:", env.ns)) && !k.starts_with(&format!("{}:s:", env.ns)),
            "a key of the layout before buckets: {k}"
        );
    }
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in known {
        let mut walked = BTreeSet::new();
        let mut at = Some(wxpush_bank::ReachableCursor::default());
        while let Some(c) = at {
            let page = bank.consent_page(&env.app, &t, c, 100).await.unwrap();
            walked.extend(page.users.iter().map(|u| u.to_string()));
            at = page.next;
        }
        if !walked.is_empty() {
            got.insert(t, walked);
        }
    }
    assert_eq!(got, members, "the walks of every template");
}

#[tokio::test]
async fn a_user_holds_at_most_fifty_consents_for_one_template() {
    let env = TestEnv::new("caps_per_template");
    let bank = bank(&env, BankSettings::default()).await;
    let (who, other) = (user(1), user(2));
    // 60 offered in one store: 50 added, 10 refused.
    let r = offer(&bank, &env, &who, &[(A, 60)]).await;
    assert_eq!((r.consents, r.consents_capped), (50, 10));
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 50);
    // One at a time, as replayed uploads: none more, each counted.
    for _ in 0..5 {
        let r = offer(&bank, &env, &who, &[(A, 1)]).await;
        assert_eq!((r.consents, r.consents_capped), (0, 1));
    }
    // The cap is per template and per user: another template, another user, still take.
    let r = offer(&bank, &env, &who, &[(A, 3), (B, 2)]).await;
    assert_eq!((r.consents, r.consents_capped), (2, 3));
    let r = offer(&bank, &env, &other, &[(A, 7)]).await;
    assert_eq!((r.consents, r.consents_capped), (7, 0));
    assert_eq!(
        held(&bank, &env, &who).await,
        BTreeMap::from([(A.to_owned(), 50), (B.to_owned(), 2)])
    );
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 57);
    check_exact(&bank, &env, &[who.clone(), other.clone()]).await;
    // A user below the cap gets up to it, not past it.
    let fresh = CampaignClaim::Fresh(Credential::consent(A));
    for c in ["c1", "c2", "c3"] {
        let claim = bank
            .campaign_claim_consent(
                &env.app,
                &who,
                c,
                A,
                "w",
                Duration::from_secs(30),
                ClaimMode::Take,
            )
            .await
            .unwrap();
        assert_eq!(claim, fresh);
    }
    let r = offer(&bank, &env, &who, &[(A, 5)]).await;
    assert_eq!((r.consents, r.consents_capped), (3, 2));
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 50);
    check_exact(&bank, &env, &[who, other]).await;
}

#[tokio::test]
async fn a_user_holds_consents_for_at_most_a_hundred_templates() {
    let env = TestEnv::new("caps_templates");
    let bank = bank(&env, BankSettings::default()).await;
    let who = user(3);
    // 101 templates in one store: the first 100 (in id order) are kept, the last refused.
    let names: Vec<String> = (0..101).map(template).collect();
    let offered: Vec<(&str, usize)> = names.iter().map(|t| (t.as_str(), 1)).collect();
    let r = offer(&bank, &env, &who, &offered).await;
    assert_eq!((r.consents, r.consents_capped), (100, 1));
    let holding = held(&bank, &env, &who).await;
    assert_eq!(holding.len(), 100);
    assert!(!holding.contains_key(&template(100)), "{holding:?}");
    // Again, alone: refused, and no key is made for it.
    let r = offer(&bank, &env, &who, &[(&template(100), 2)]).await;
    assert_eq!((r.consents, r.consents_capped), (0, 2));
    assert_eq!(
        bank.consent_total(&env.app, &template(100)).await.unwrap(),
        0
    );
    // A template the user already holds still takes more.
    let r = offer(&bank, &env, &who, &[(&template(0), 1), (&template(100), 1)]).await;
    assert_eq!((r.consents, r.consents_capped), (1, 1));
    assert_eq!(
        bank.consents_left(&env.app, &who, &template(0))
            .await
            .unwrap(),
        2
    );
    check_exact(&bank, &env, std::slice::from_ref(&who)).await;
    // Once one template is cleared (WeChat's 43101), a new one has room.
    assert_eq!(
        bank.clear_consents(&env.app, &who, &template(5))
            .await
            .unwrap(),
        1
    );
    let r = offer(
        &bank,
        &env,
        &who,
        &[(&template(100), 1), (&template(101), 1)],
    )
    .await;
    assert_eq!((r.consents, r.consents_capped), (1, 1));
    let holding = held(&bank, &env, &who).await;
    assert_eq!(holding.len(), 100);
    assert_eq!(holding.get(&template(100)), Some(&1));
    assert!(!holding.contains_key(&template(101)));
    check_exact(&bank, &env, &[who]).await;
}

#[tokio::test]
async fn a_give_back_goes_through_the_same_caps() {
    let env = TestEnv::new("caps_give_back");
    let settings = BankSettings {
        consents_per_template: 3,
        templates_per_user: 2,
        ..BankSettings::default()
    };
    let bank = bank(&env, settings).await;
    let who = user(4);
    let r = offer(&bank, &env, &who, &[(A, 3), (B, 1), ("TPL_THIRD", 1)]).await;
    assert_eq!(
        (r.consents, r.consents_capped),
        (4, 1),
        "the settings' caps"
    );
    // At the cap for A: a give-back is refused and changes nothing.
    assert!(!bank.release_consent(&env.app, &who, A).await.unwrap());
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 3);
    // Below it (a campaign took one): the give-back is kept.
    let claim = bank
        .campaign_claim_consent(
            &env.app,
            &who,
            "c1",
            A,
            "w",
            Duration::from_secs(30),
            ClaimMode::Take,
        )
        .await
        .unwrap();
    assert_eq!(claim, CampaignClaim::Fresh(Credential::consent(A)));
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 2);
    assert!(bank.release_consent(&env.app, &who, A).await.unwrap());
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 3);
    // A template the user holds none of, with two templates held: refused too.
    assert!(!bank
        .release_consent(&env.app, &who, "TPL_THIRD")
        .await
        .unwrap());
    assert_eq!(
        bank.consents_left(&env.app, &who, "TPL_THIRD")
            .await
            .unwrap(),
        0
    );
    check_exact(&bank, &env, &[who]).await;
}

/// Sum of the `wxpush_credentials_stored_total` series with `result="<result>"`.
fn stored_metric(metrics: &str, result: &str) -> u64 {
    let label = format!("result=\"{result}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("wxpush_credentials_stored_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Starts `wxpush ingest` with its endpoints on a known address, publishes `bodies`, and
/// waits until its metrics say all of them are stored. Returns the metrics' text.
async fn ingest(env: &TestEnv, bodies: &[Vec<u8>]) -> String {
    let deps = env.deps().await;
    let addr = free_addr();
    let child = env.spawn_with(&["ingest"], &[("WXPUSH_HTTP_ADDR", &addr.to_string())]);
    let ready = eventually(Duration::from_secs(30), || async {
        matches!(http_get(addr, "/readyz").await, Some((200, _)))
    })
    .await;
    assert!(ready, "ingest is consuming");
    env.publish_uploads(&deps.broker, bodies).await;
    let uploads = |m: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("wxpush_uploads_stored_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let metrics = || async {
        http_get(addr, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default()
    };
    // (`wxpush_uploads_stored_total` is counted after what became of the uploads' entries.)
    let stored = eventually(Duration::from_secs(30), || async {
        uploads(&metrics().await) >= bodies.len() as u64
    })
    .await;
    let metrics = metrics().await;
    assert!(stored, "every upload stored:\n{metrics}");
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = env.drain_dead_letters(&deps.broker, "ingest").await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_replayed_sixty_times_holds_fifty_consents() {
    let env = TestEnv::new("caps_replay");
    let who = user(5);
    let body = json!({"openId": who.as_str(),
                      "subscriptions": {"errMsg": "requestSubscribeMessage:ok", A: "accept"}})
    .to_string()
    .into_bytes();
    let metrics = ingest(&env, &vec![body; 60]).await;
    let bank = bank(&env, BankSettings::default()).await;
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 50);
    assert_eq!(bank.consent_total(&env.app, A).await.unwrap(), 50);
    check_exact(&bank, &env, &[who]).await;
    assert_eq!(stored_metric(&metrics, "consent"), 50, "{metrics}");
    assert_eq!(stored_metric(&metrics, "consent_capped"), 10, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_templates_listed_a_consent_for_another_is_dropped_and_counted() {
    let mut env = TestEnv::new("caps_templates_listed");
    let file = std::env::temp_dir().join(format!("{}.toml", env.ns));
    std::fs::write(
        &file,
        format!(
            "[[apps]]\nappid = \"{}\"\ntemplates = [\"{A}\", \"TPL_OTHER_LISTED\"]\n",
            env.app
        ),
    )
    .unwrap();
    env.set("WXPUSH_CONFIG", &file.to_string_lossy());
    let (who, only_unlisted) = (user(6), user(7));
    let expire = now_ms() + 86_400_000;
    let bodies = [
        // A listed and an unlisted template beside a formId: the listed one and the formId
        // are kept.
        json!({"openId": who.as_str(), "formIds": [{"formId": form_id(6, 0), "expire": expire}],
               "subscriptions": {A: "accept", B: "accept"}}),
        // Only an unlisted one: acknowledged, nothing stored, nothing dead-lettered.
        json!({"openId": only_unlisted.as_str(), "subscriptions": {B: "accept"}}),
    ]
    .map(|b| b.to_string().into_bytes());
    let metrics = ingest(&env, &bodies).await;
    let _ = std::fs::remove_file(&file);
    let bank = bank(&env, BankSettings::default()).await;
    assert_eq!(bank.consents_left(&env.app, &who, A).await.unwrap(), 1);
    assert_eq!(bank.consents_left(&env.app, &who, B).await.unwrap(), 0);
    assert_eq!(bank.consent_total(&env.app, B).await.unwrap(), 0);
    assert_eq!(
        bank.usable_count(&env.app, &who).await.unwrap(),
        1,
        "the formId"
    );
    let keys: HashMap<String, i64> = keys_with_ttl(&env).await.into_iter().collect();
    assert!(
        !keys
            .keys()
            .any(|k| k.contains(B) || k.contains(only_unlisted.as_str())),
        "no key for the unlisted template nor its only user: {keys:?}"
    );
    check_exact(&bank, &env, &[who, only_unlisted]).await;
    assert_eq!(stored_metric(&metrics, "unknown_template"), 2, "{metrics}");
    assert_eq!(stored_metric(&metrics, "consent"), 1, "{metrics}");
    assert_eq!(stored_metric(&metrics, "added"), 1, "{metrics}");
}
