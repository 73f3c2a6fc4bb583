//! `wxpush reach` against the real Redis: credentials stored with `Bank::store` (and spent with
//! `Bank::claim`) as the roles would, consents written with plain commands in the layout
//! before consent buckets (`{ns}:t:{app.shard}:<template>` sets, `{ns}:tc:{app.shard}`
//! hashes, which docs/reach.md says are still counted) and stored through the bank into consent
//! buckets; the real binary is run and its JSON and table checked: the exact per-day histogram,
//! tombstones and the claim margin, consents summed across shards and both layouts,
//! `--template`, `--app`, shards bigger than one script page, and an unreachable Redis.

use std::collections::HashMap;

use serde_json::Value;
use wxpush_bank::keys::shard_of;
use wxpush_bank::{Bank, BankSettings, Keys};
use wxpush_domain::{AppId, Credential, OpenId};
use wxpush_testkit::{form_id, now_ms, redis_url, run, stderr, stdout, TestEnv};

const DAY: i64 = 86_400;

fn now_s() -> i64 {
    now_ms() / 1000
}

fn user(n: usize) -> OpenId {
    OpenId::new(&format!("oReach{n:06}xxxxxxxxxxxxxxxxxx")).expect("openId")
}

async fn bank(env: &TestEnv) -> Bank {
    Bank::connect(&redis_url(), env.ns.clone(), BankSettings::default())
        .await
        .expect("Redis is reachable (run scripts/services.sh)")
}

fn conn() -> Box<dyn redis::ConnectionLike> {
    wxpush_testkit::redis_nodes::sync_conn()
}

fn reach_json(env: &TestEnv, extra: &[&str]) -> Value {
    let mut args = vec!["reach", "--json"];
    args.extend_from_slice(extra);
    let out = run(env, &args);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one JSON object: {text}"
    );
    serde_json::from_str(&text).expect("--json prints JSON")
}

/// Users reachable at the start of days 1..=7.
fn days(j: &Value) -> Vec<u64> {
    let days = j["reachable_by_day"].as_array().expect("reachable_by_day");
    assert_eq!(days.len(), 7, "{j}");
    days.iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["day"], i + 1, "{j}");
            d["users"].as_u64().expect("users")
        })
        .collect()
}

/// template → (consents, users) from the JSON.
fn consents(j: &Value) -> HashMap<String, (u64, u64)> {
    j["consents"]["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| {
            (
                t["template_id"].as_str().expect("template_id").to_owned(),
                (
                    t["consents"].as_u64().expect("consents"),
                    t["users"].as_u64().expect("users"),
                ),
            )
        })
        .collect()
}

/// Consents as the subscribe layout keeps them: the user joins the template's set of its
/// shard, and the shard's total for the template grows by `n`.
fn add_consents(env: &TestEnv, app: &AppId, who: &OpenId, template: &str, n: i64) {
    let tag = format!("{{{app}.{}}}", shard_of(who));
    let mut c = conn();
    let _: () = redis::pipe()
        .cmd("SADD")
        .arg(format!("{}:t:{tag}:{template}", env.ns))
        .arg(who.as_str())
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{}:tc:{tag}", env.ns))
        .arg(template)
        .arg(n)
        .ignore()
        .query(&mut *c)
        .expect("write consents");
}

/// Stores, for every k in 0..=7, k + 1 users whose last credential lasts k more days (and an
/// hour): bucket 7 would last 7 days and an hour, but the bank clamps every expiry to Redis's
/// now + 7 days, so its users are gone by day 7 (which no stored credential reaches). Each user
/// also holds a credential expiring within the hour. Returns the credentials stored.
async fn store_by_day(env: &TestEnv, bank: &Bank) -> u64 {
    let now = now_s();
    let mut n = 0;
    let mut stored = 0;
    for k in 0..=7i64 {
        for _ in 0..=k {
            let creds = [
                Credential::form_id(form_id(1, n as u64), now + 1800),
                Credential::form_id(form_id(2, n as u64), now + k * DAY + 3600),
            ];
            stored += bank
                .store(&env.app, &user(n), &creds)
                .await
                .expect("store")
                .added;
            n += 1;
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_histogram_counts_users_still_reachable_each_day() {
    let env = TestEnv::new("reach_days");
    let bank = bank(&env).await;
    let stored = store_by_day(&env, &bank).await;
    assert_eq!(stored, 72);
    let j = reach_json(&env, &[]);
    assert_eq!(j["app"], env.app.as_str());
    assert_eq!(j["namespace"], env.ns.as_str());
    assert_eq!(j["claim_margin_secs"], 60);
    // 1 + 2 + ... + 8 users; on day d, those of buckets d..=7.
    assert_eq!(j["reachable_now"], 36);
    assert_eq!(days(&j), [35, 33, 30, 26, 21, 15, 0]);
    assert_eq!(j["messages_now"], 72);
    assert_eq!(j["index_entries"], 36);
    assert_eq!(j["stale_index_entries"], 0);
    let at = j["at"].as_i64().expect("at");
    assert!((at - now_s()).abs() <= 5, "{j}");
    assert_eq!(j["reachable_by_day"][6]["at"], at + 7 * DAY);
    assert_eq!(j["consents"]["templates"], serde_json::json!([]));
    assert_eq!(j["consents"]["total"], 0);
    assert_eq!(j["warnings"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_credentials_and_those_inside_the_margin_do_not_count() {
    let mut env = TestEnv::new("reach_spent");
    let bank = bank(&env).await;
    let now = now_s();
    // u0: two credentials, the sooner one spent (a tombstone): 1 message, reachable 2 days.
    let u0 = [
        Credential::form_id(form_id(3, 0), now + DAY + 100),
        Credential::form_id(form_id(3, 1), now + 2 * DAY + 3600),
    ];
    bank.store(&env.app, &user(0), &u0).await.expect("store");
    let spent = bank.claim(&env.app, &user(0)).await.expect("claim");
    assert_eq!(spent.map(|c| c.credential), Some(u0[0].clone()));
    // u1: its only credential spent: gone from the index, and counts for nothing.
    let u1 = [Credential::form_id(form_id(3, 2), now + 3 * DAY)];
    bank.store(&env.app, &user(1), &u1).await.expect("store");
    assert!(bank
        .claim(&env.app, &user(1))
        .await
        .expect("claim")
        .is_some());
    // u2: one credential 10 minutes away and one 5 days away.
    let u2 = [
        Credential::form_id(form_id(3, 3), now + 600),
        Credential::form_id(form_id(3, 4), now + 5 * DAY + 3600),
    ];
    bank.store(&env.app, &user(2), &u2).await.expect("store");
    // u3: only a credential 10 minutes away.
    let u3 = [Credential::form_id(form_id(3, 5), now + 600)];
    bank.store(&env.app, &user(3), &u3).await.expect("store");
    // u4: the index still lists it (not yet cleaned up) but its zset holds only a tombstone
    // and a credential inside the margin: the zset is the truth.
    let keys = Keys::new(env.ns.clone());
    let u4 = user(4);
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(keys.credentials(&env.app, &u4))
        .arg(-(now + 4 * DAY))
        .arg("fspent")
        .arg(now + 30)
        .arg("fsoon")
        .ignore()
        .cmd("ZADD")
        .arg(keys.index_of(&env.app, &u4))
        .arg(now + 4 * DAY)
        .arg(u4.as_str())
        .ignore()
        .query(&mut *conn())
        .expect("write u4");

    let j = reach_json(&env, &[]);
    assert_eq!(j["reachable_now"], 3, "{j}");
    assert_eq!(j["messages_now"], 4, "{j}");
    // u0 through day 2, u2 through day 5, u3 not tomorrow.
    assert_eq!(days(&j), [2, 2, 1, 1, 1, 0, 0], "{j}");
    // u4 is walked, found stale and taken off.
    assert_eq!(j["index_entries"], 4, "{j}");
    assert_eq!(j["stale_index_entries"], 1, "{j}");

    // With a margin of an hour, the credentials 10 minutes away are as good as expired.
    env.set("WXPUSH_CLAIM_MARGIN_SECS", "3600");
    let j = reach_json(&env, &[]);
    assert_eq!(j["claim_margin_secs"], 3600);
    assert_eq!(j["reachable_now"], 2, "{j}");
    assert_eq!(j["messages_now"], 2, "{j}");
    // u0 lasts 2 days and an hour: past the margin at day 1, not at day 2.
    assert_eq!(days(&j), [2, 1, 1, 1, 0, 0, 0], "{j}");
    assert_eq!(j["stale_index_entries"], 1, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_in_buckets_and_in_the_old_layout_are_counted_together() {
    let env = TestEnv::new("reach_buckets");
    let app = env.app.clone();
    let bank = bank(&env).await;
    // 30 users through the bank: 2 for TPL_A each, 1 for TPL_B every third; 5 more in the old
    // layout, 1 for TPL_A each; one consent for TPL_A spent by a campaign.
    let users: Vec<OpenId> = (0..35).map(user).collect();
    for (i, u) in users[..30].iter().enumerate() {
        let mut creds = vec![Credential::consent("TPL_A"), Credential::consent("TPL_A")];
        if i % 3 == 0 {
            creds.push(Credential::consent("TPL_B"));
        }
        bank.store(&app, u, &creds).await.expect("store");
    }
    for u in &users[30..] {
        add_consents(&env, &app, u, "TPL_A", 1);
    }
    let claim = bank
        .campaign_claim_consent(
            &app,
            &users[0],
            "c",
            "TPL_A",
            "w",
            std::time::Duration::from_secs(30),
            wxpush_bank::ClaimMode::Take,
        )
        .await
        .expect("claim");
    assert!(
        matches!(claim, wxpush_bank::CampaignClaim::Fresh(_)),
        "{claim:?}"
    );
    let j = reach_json(&env, &[]);
    let c = consents(&j);
    assert_eq!(c["TPL_A"], (30 * 2 + 5 - 1, 35), "{j}");
    assert_eq!(c["TPL_B"], (10, 10), "{j}");
    assert_eq!(j["consents"]["total"], 64 + 10);
    let j = reach_json(&env, &["--template", "TPL_A"]);
    assert_eq!(consents(&j)["TPL_A"], (64, 35), "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_are_summed_across_shards_and_template_filters() {
    let env = TestEnv::new("reach_consents");
    let app = env.app.clone();
    // 40 users over many shards; TPL_A: every user, 2 consents each; TPL_B: every 4th, 1 each.
    let users: Vec<OpenId> = (0..40).map(user).collect();
    let shards: std::collections::HashSet<u16> = users.iter().map(shard_of).collect();
    assert!(shards.len() > 20, "spread over shards: {}", shards.len());
    for (i, u) in users.iter().enumerate() {
        add_consents(&env, &app, u, "TPL_A", 2);
        if i % 4 == 0 {
            add_consents(&env, &app, u, "TPL_B", 1);
        }
    }
    let j = reach_json(&env, &[]);
    let c = consents(&j);
    assert_eq!(c.len(), 2, "{j}");
    assert_eq!(c["TPL_A"], (80, 40));
    assert_eq!(c["TPL_B"], (10, 10));
    assert_eq!(j["consents"]["total"], 90);
    assert!(j["consents"]["template_filter"].is_null());
    // Consents alone make nobody reachable by template message.
    assert_eq!(j["reachable_now"], 0);

    let j = reach_json(&env, &["--template", "TPL_B"]);
    assert_eq!(j["consents"]["template_filter"], "TPL_B");
    let c = consents(&j);
    assert_eq!(c.len(), 1, "{j}");
    assert_eq!(c["TPL_B"], (10, 10));
    assert_eq!(j["consents"]["total"], 10);

    // A template nobody consented to: shown, with nothing.
    let j = reach_json(&env, &["--template", "TPL_NONE"]);
    assert_eq!(consents(&j)["TPL_NONE"], (0, 0));
    assert_eq!(j["consents"]["total"], 0);

    // Junk in a total is a warning, not a crash.
    let tag = format!("{{{app}.{}}}", shard_of(&users[0]));
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{}:tc:{tag}", env.ns))
        .arg("TPL_C")
        .arg("lots")
        .query(&mut *conn())
        .expect("HSET");
    let j = reach_json(&env, &[]);
    assert_eq!(consents(&j)["TPL_C"], (0, 0));
    let warnings = j["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{j}");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("TPL_C") && w.contains("not a count")),
        "{j}"
    );

    let bad = run(&env, &["reach", "--template", "has space"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).starts_with("wxpush: --template contains"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_app_counts_nothing_of_this_one() {
    let mut env = TestEnv::new("reach_app");
    let bank = bank(&env).await;
    store_by_day(&env, &bank).await;
    add_consents(&env, &env.app.clone(), &user(0), "TPL_A", 3);
    let other = AppId::new("wxother000000002").expect("app");
    let now = now_s();
    for n in 100..103 {
        let creds = [Credential::form_id(
            form_id(9, n as u64),
            now + 2 * DAY + 3600,
        )];
        bank.store(&other, &user(n), &creds).await.expect("store");
    }
    add_consents(&env, &other, &user(100), "TPL_X", 1);

    let j = reach_json(&env, &["--app", other.as_str()]);
    assert_eq!(j["app"], other.as_str());
    assert_eq!(j["reachable_now"], 3, "{j}");
    assert_eq!(j["messages_now"], 3);
    assert_eq!(days(&j), [3, 3, 0, 0, 0, 0, 0]);
    assert_eq!(consents(&j).keys().collect::<Vec<_>>(), ["TPL_X"]);

    // An app with nothing at all: a typo most likely, said in one line (exit 1), naming what
    // was looked for and what is configured, instead of a forecast of zeros.
    let out = run(&env, &["reach", "--json", "--app", "wxnobody00000003"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "wxpush: nothing is stored for app wxnobody00000003 in namespace {}",
            env.ns
        )),
        "{err}"
    );
    assert!(err.contains(&format!("configured: {}", env.app)), "{err}");
    assert!(stdout(&out).is_empty());

    // The default app is unchanged by the other's data; --app needs no WXPUSH_APP_ID.
    let j = reach_json(&env, &[]);
    assert_eq!(j["reachable_now"], 36);
    env.set("WXPUSH_APP_ID", "");
    let j = reach_json(&env, &["--app", env.app.as_str()]);
    assert_eq!(j["reachable_now"], 36);
    assert_eq!(consents(&j)["TPL_A"], (3, 1));
    let bad = run(&env, &["reach", "--app", "wx bad"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).starts_with("wxpush: --app is invalid"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_the_numbers() {
    let env = TestEnv::new("reach_table");
    let bank = bank(&env).await;
    store_by_day(&env, &bank).await;
    add_consents(&env, &env.app.clone(), &user(0), "TPL_A", 2);
    add_consents(&env, &env.app.clone(), &user(1), "TPL_A", 1);
    add_consents(&env, &env.app.clone(), &user(2), "TPL_B", 4);
    let out = run(&env, &["reach"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    // label → the columns after it.
    let rows: HashMap<String, Vec<String>> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split("  ").map(str::trim).filter(|c| !c.is_empty());
            let label = cols.next()?.to_owned();
            Some((label, cols.map(str::to_owned).collect()))
        })
        .collect();
    let first = |label: &str| {
        rows.get(label)
            .and_then(|c| c.first())
            .cloned()
            .unwrap_or_else(|| panic!("no {label} row in:\n{text}"))
    };
    assert_eq!(first("app"), env.app.as_str());
    assert_eq!(first("namespace"), env.ns.as_str());
    assert!(first("at").contains(" UTC"), "{text}");
    assert!(first("at").contains("claim margin 60s"), "{text}");
    assert_eq!(first("now"), "36");
    for (d, want) in [35, 33, 30, 26, 21, 15, 0].iter().enumerate() {
        let label = format!("day {}", d + 1);
        assert_eq!(first(&label), want.to_string(), "{label} in:\n{text}");
        assert!(rows[&label][1].ends_with(" UTC"), "{text}");
    }
    assert_eq!(first("messages now"), "72");
    assert_eq!(rows["TPL_A"], ["3", "2"], "{text}");
    assert_eq!(rows["TPL_B"], ["4", "1"], "{text}");
    assert_eq!(rows["total"], ["7", "-"], "{text}");

    // A user with a credential and no consent: the consents row says none.
    let other = TestEnv::new("reach_table_no_consent");
    let creds = [Credential::form_id(form_id(7, 1), now_s() + 3600)];
    self::bank(&other)
        .await
        .store(&other.app, &user(1), &creds)
        .await
        .expect("store");
    let out = run(&other, &["reach"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l == "consents  none"), "{text}");
}

/// The issue's own typo: a namespace and an app that hold nothing (`WXPUSH_NAMESPACE=wxpush-demo
/// wxpush reach --app wxpush`, no app configured) is one line and exit 1, not a table of zeros.
#[test]
fn a_typo_gets_an_answer_not_a_zero() {
    let mut env = TestEnv::new("reach_typo");
    env.set("WXPUSH_APP_ID", "");
    let out = run(&env, &["reach", "--app", "wxpush"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "nothing is stored for app wxpush in namespace {}",
            env.ns
        )),
        "{err}"
    );
    assert!(
        err.contains("no app is configured here: WXPUSH_APP_ID and WXPUSH_CONFIG are unset"),
        "{err}"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

/// A shard holding more users than one script call walks (2,000, `PAGE` in src/reach.rs) is
/// read a page at a time; its consents are counted once, not once per page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_bigger_than_a_page_is_counted_whole() {
    let env = TestEnv::new("reach_page");
    let now = now_s();
    let tag = format!("{{{}.5}}", env.app);
    let index = format!("{}:u:{tag}", env.ns);
    let users = 10_001;
    let mut c = conn();
    for chunk in (0..users).collect::<Vec<usize>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &n in chunk {
            let who = format!("oPage{n:08}");
            // Every 3rd user lasts 3 days and an hour, the others an hour.
            let exp = if n % 3 == 0 {
                now + 3 * DAY + 3600
            } else {
                now + 3600
            };
            pipe.cmd("ZADD")
                .arg(format!("{}:c:{tag}:{who}", env.ns))
                .arg(exp)
                .arg("fa")
                .arg(exp - 60)
                .arg("fb")
                .ignore();
            pipe.cmd("ZADD").arg(&index).arg(exp).arg(&who).ignore();
        }
        let _: () = pipe.query(&mut *c).expect("write a page of users");
    }
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{}:tc:{tag}", env.ns))
        .arg("TPL_P")
        .arg(7)
        .ignore()
        .cmd("SADD")
        .arg(format!("{}:t:{tag}:TPL_P", env.ns))
        .arg("oPage00000001")
        .arg("oPage00000002")
        .ignore()
        .query(&mut *c)
        .expect("write consents");
    let j = reach_json(&env, &[]);
    let lasting = (0..users).filter(|n| n % 3 == 0).count() as u64;
    assert_eq!(j["index_entries"], users, "{j}");
    assert_eq!(j["reachable_now"], users, "{j}");
    assert_eq!(j["messages_now"], 2 * users as u64, "{j}");
    assert_eq!(days(&j), [lasting, lasting, lasting, 0, 0, 0, 0], "{j}");
    assert_eq!(consents(&j)["TPL_P"], (7, 2), "{j}");
}

#[test]
fn an_unreachable_redis_is_one_line_without_the_password() {
    let mut env = TestEnv::new("reach_noredis");
    env.set("WXPUSH_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0");
    for args in [&["reach"][..], &["reach", "--json"][..]] {
        let out = run(&env, args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("wxpush: cannot connect to Redis at redis://127.0.0.1:1/0"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        assert!(stdout(&out).is_empty());
    }
}
