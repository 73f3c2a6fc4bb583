//! The campaign record (`wxpush_bank::record`) against the real Redis: created whole in one
//! step, one dispatcher's lease at a time, a stale owner's writes refused, the stop flag, and
//! the send-job template kept for `wxpush campaign retry`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use wxpush_bank::record::{field, CampaignRecord, Lease, Opened, PageInFlight, Resume, DISPATCHED};
use wxpush_bank::{Bank, ReachableCursor};
use wxpush_domain::campaign::{Campaign, CampaignLimits};
use wxpush_domain::{parse_campaign, OpenId};
use wxpush_testkit::{redis_url, TestEnv};

async fn bank(env: &TestEnv) -> Bank {
    Bank::connect(&redis_url(), env.ns.clone(), Default::default())
        .await
        .expect("Redis is reachable")
}

fn campaign(env: &TestEnv, id: &str) -> Campaign {
    let body = json!({"campaignId": id, "templateId": "TPL", "page": "p/i",
        "keywords": "a,b", "audience": {"openIds": ["oA", "oB", "bad id"]}});
    let mut c = parse_campaign(body.to_string().as_bytes(), CampaignLimits::default()).unwrap();
    c.app_id = Some(env.app.clone());
    c
}

async fn fields(bank: &Bank, r: &CampaignRecord) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(r.key())
        .query_async(&mut bank.connection())
        .await
        .unwrap()
}

async fn owned(r: &CampaignRecord, c: &Campaign, lease: Duration) -> (Lease, bool, Resume) {
    match r.open(c, lease).await.unwrap() {
        Opened::Owned {
            lease,
            created,
            resume,
        } => (lease, created, resume),
        other => panic!("expected to own the campaign: {other:?}"),
    }
}

fn user(n: usize) -> OpenId {
    OpenId::new(&format!("oRec{n:04}")).unwrap()
}

/// A new record is written whole by one script: every field, its state and the lease. (The
/// record of the old two-step creation could lose everything but `started_at_ms` in a crash.)
#[tokio::test]
async fn open_creates_the_whole_record_in_one_step() {
    let env = TestEnv::new("record_open");
    let bank = bank(&env).await;
    let c = campaign(&env, "c1");
    let r = bank.record(&env.app, "c1");
    let (lease, created, resume) = owned(&r, &c, Duration::from_secs(10)).await;
    assert!(created);
    assert_eq!(resume.cursor, "");
    assert_eq!(resume.in_flight, None);
    let f = fields(&bank, &r).await;
    for name in [
        field::APP,
        field::KIND,
        field::TEMPLATE_ID,
        field::AUDIENCE,
        field::STATE,
        field::TARGETED,
        field::REJECTED_RECIPIENTS,
        field::CURSOR,
        field::STARTED_AT_MS,
        field::JOB,
        field::LEASE_OWNER,
        field::LEASE_UNTIL_MS,
    ] {
        assert!(f.contains_key(name), "{name} missing: {f:?}");
    }
    assert_eq!(f[field::STATE], "dispatching");
    assert_eq!(f[field::AUDIENCE], "list");
    assert_eq!(f[field::REJECTED_RECIPIENTS], "1");
    assert_eq!(f[field::LEASE_OWNER], lease.token);
    let ttl: i64 = redis::cmd("TTL")
        .arg(r.key())
        .query_async(&mut bank.connection())
        .await
        .unwrap();
    assert!(ttl > 29 * 86_400, "the record expires: {ttl}");
}

/// What a dispatcher of the old two-step creation left when it died between its steps (a
/// record with only `started_at_ms`), and what a sender's stop flag alone leaves: opened as
/// new, with every field, the first start time kept.
#[tokio::test]
async fn a_record_without_a_state_is_opened_as_new() {
    let env = TestEnv::new("record_stateless");
    let bank = bank(&env).await;
    let c = campaign(&env, "half");
    let r = bank.record(&env.app, "half");
    let _: () = redis::cmd("HSET")
        .arg(r.key())
        .arg(field::STARTED_AT_MS)
        .arg(1234)
        .query_async(&mut bank.connection())
        .await
        .unwrap();
    let (_, created, _) = owned(&r, &c, Duration::from_secs(10)).await;
    assert!(created);
    let s = r.snapshot().await.unwrap().unwrap();
    assert_eq!(s.state(), Some("dispatching"), "{s:?}");
    assert_eq!(s.targeted(), Some(0));
    assert_eq!(s.started_at_ms(), Some(1234));
    assert_eq!(s.text(field::TEMPLATE_ID), Some("TPL"));

    let stopped = bank.record(&env.app, "stopped-first");
    assert!(stopped.stop("errcode 47003").await.unwrap());
    let (_, created, _) = owned(&stopped, &c, Duration::from_secs(10)).await;
    assert!(created);
    let s = stopped.snapshot().await.unwrap().unwrap();
    assert_eq!(s.state(), Some("dispatching"));
    assert_eq!(s.stopped_reason().as_deref(), Some("errcode 47003"));
}

/// Many dispatchers opening one new campaign at the same moment: exactly one owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_many_simultaneous_openers_owns_the_campaign() {
    let env = TestEnv::new("record_race");
    let bank = bank(&env).await;
    let c = campaign(&env, "race");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (r, c) = (bank.record(&env.app, "race"), c.clone());
        tasks.push(tokio::spawn(async move {
            r.open(&c, Duration::from_secs(10)).await.unwrap()
        }));
    }
    let mut owners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Opened::Owned { created, .. } => {
                assert!(created);
                owners += 1;
            }
            Opened::Held { left } => assert!(left > Duration::from_secs(9), "{left:?}"),
            other => panic!("neither dispatched, in parts nor scheduled: {other:?}"),
        }
    }
    assert_eq!(owners, 1);
}

/// The lease: held while it runs; taken over with a new token once it has run out; the stale
/// owner's writes are refused and change nothing; the new owner resumes from the page the
/// stale one wrote ahead.
#[tokio::test]
async fn a_stale_owners_writes_are_refused_after_a_takeover() {
    let env = TestEnv::new("record_fence");
    let bank = bank(&env).await;
    let c = campaign(&env, "fence");
    let r = bank.record(&env.app, "fence");
    let short = Duration::from_millis(300);
    let (old, _, _) = owned(&r, &c, short).await;
    let page = PageInFlight::new(
        vec![user(1), user(2)],
        Some(ReachableCursor { shard: 3, scan: 4 }),
    );
    assert!(r.checkpoint(&old, 5, "0:9").await.unwrap());
    assert!(r.save_page(&old, &page).await.unwrap());
    match r.open(&c, short).await.unwrap() {
        Opened::Held { left } => assert!(left <= short, "{left:?}"),
        other => panic!("the lease is running: {other:?}"),
    }
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let (new, created, resume) = owned(&r, &c, Duration::from_secs(10)).await;
    assert!(!created);
    assert_ne!(new.token, old.token);
    assert_eq!(resume.cursor, "0:9");
    assert_eq!(resume.in_flight, Some(page.clone()));

    let before = fields(&bank, &r).await;
    assert!(!r.renew(&old).await.unwrap());
    assert!(!r.checkpoint(&old, 2, "end").await.unwrap());
    assert!(!r
        .save_page(&old, &PageInFlight::new(vec![user(9)], None))
        .await
        .unwrap());
    assert!(!r.release(&old).await.unwrap());
    assert!(!r.finish(&old).await.unwrap());
    assert_eq!(
        fields(&bank, &r).await,
        before,
        "the stale owner wrote nothing"
    );

    assert!(r.renew(&new).await.unwrap());
    assert!(r.checkpoint(&new, 2, "end").await.unwrap());
    let s = r.snapshot().await.unwrap().unwrap();
    assert_eq!(s.targeted(), Some(7));
    assert_eq!(s.text(field::PAGE), None, "the checkpoint forgets the page");
    assert!(r.finish(&new).await.unwrap());
    assert_eq!(r.open(&c, short).await.unwrap(), Opened::Dispatched);
    assert!(!r.checkpoint(&new, 1, "end").await.unwrap(), "dispatched");
    let s = r.snapshot().await.unwrap().unwrap();
    assert_eq!(s.state(), Some(DISPATCHED));
    assert!(s.dispatched_at_ms().is_some());
    assert_eq!(s.targeted(), Some(7));
}

/// A released lease is taken at once; an expired one that nobody took is still its owner's.
#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let env = TestEnv::new("record_release");
    let bank = bank(&env).await;
    let c = campaign(&env, "rel");
    let r = bank.record(&env.app, "rel");
    let (first, _, _) = owned(&r, &c, Duration::from_secs(60)).await;
    assert!(matches!(
        r.open(&c, Duration::from_secs(60)).await.unwrap(),
        Opened::Held { .. }
    ));
    assert!(r.release(&first).await.unwrap());
    let (second, created, _) = owned(&r, &c, Duration::from_millis(100)).await;
    assert!(!created);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        r.checkpoint(&second, 1, "1").await.unwrap(),
        "expired, but nobody took it: no one else wrote"
    );
    assert!(!r.renew(&first).await.unwrap());
}

/// The stop flag: set once with its reason, read by every sender.
#[tokio::test]
async fn a_campaign_is_stopped_once() {
    let env = TestEnv::new("record_stop");
    let bank = bank(&env).await;
    let r = bank.record(&env.app, "stop");
    assert!(!r.stopped().await.unwrap());
    assert!(r.stop("first reason").await.unwrap());
    assert!(!r.stop("second reason").await.unwrap());
    assert!(r.stopped().await.unwrap());
    let s = r.snapshot().await.unwrap().unwrap();
    assert_eq!(s.stopped_reason().as_deref(), Some("first reason"));
    let ttl: i64 = redis::cmd("TTL")
        .arg(r.key())
        .query_async(&mut bank.connection())
        .await
        .unwrap();
    assert!(ttl > 0, "a record made by a stop expires too: {ttl}");
}

/// The send-job template kept at open is the campaign's job with an empty openId, attempt 0,
/// for `wxpush campaign retry`; absent for a record without it.
#[tokio::test]
async fn the_job_template_is_the_campaigns_job_without_a_recipient() {
    let env = TestEnv::new("record_job");
    let bank = bank(&env).await;
    let c = campaign(&env, "job");
    let r = bank.record(&env.app, "job");
    assert_eq!(r.job_template().await.unwrap(), None, "no record yet");
    owned(&r, &c, Duration::from_secs(10)).await;
    let template = r.job_template().await.unwrap().expect("kept at open");
    let mut expected = c.job_for(&user(1)).unwrap();
    expected.open_id = String::new();
    assert_eq!(template, expected);
    assert_eq!(template.attempt, 0);
    assert_eq!(template.app_id.as_deref(), Some(env.app.as_str()));
    let mut job = template.clone();
    job.open_id = user(7).as_str().to_owned();
    assert_eq!(Some(job), c.job_for(&user(7)));

    let stop_only = bank.record(&env.app, "no-job");
    stop_only.stop("x").await.unwrap();
    assert_eq!(stop_only.job_template().await.unwrap(), None);
    let _: () = redis::cmd("HSET")
        .arg(stop_only.key())
        .arg(field::JOB)
        .arg("{not json")
        .query_async(&mut bank.connection())
        .await
        .unwrap();
    assert!(stop_only.job_template().await.is_err(), "unreadable");
}

/// A record left by a version before Redis Cluster support, at `{ns}:camp:<app>:<id>` (no hash
/// tag of its own), is still the campaign's: `campaign status` reads it there, and on a single
/// node the first operation moves it to the tagged key, TTL and all, so a dispatcher resumes it
/// rather than start the campaign again and a stop flag stays. An id holding `{x}` does not
/// choose the new key's slot.
#[tokio::test]
async fn a_record_at_the_key_of_older_versions_is_moved_on_first_use() {
    let env = TestEnv::new("record_legacy");
    let bank = bank(&env).await;
    if bank.connection().is_cluster() {
        // Older versions refused to run on a cluster: there is nothing to move there.
        println!("skipped on a Redis Cluster: no record can be at the old key");
        return;
    }
    let id = "old{x}";
    let key = wxpush_bank::record::record_key(&env.ns, &env.app, id);
    let legacy = wxpush_bank::record::legacy_record_key(&env.ns, &env.app, id);
    assert_eq!(legacy, format!("{}:camp:{}:old{{x}}", env.ns, env.app));
    let tag = &key[key.find('{').unwrap()..=key.find('}').unwrap()];
    assert_eq!(
        tag,
        format!("{{{}.{}}}", env.app, wxpush_bank::keys::shard_of_text(id))
    );
    let mut conn = bank.connection();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&legacy)
        .arg(field::STATE)
        .arg(DISPATCHED)
        .arg(field::TARGETED)
        .arg(3)
        .arg(field::STOPPED_AT_MS)
        .arg(1)
        .arg(field::STOPPED_REASON)
        .arg("stopped by the old version")
        .ignore()
        .cmd("EXPIRE")
        .arg(&legacy)
        .arg(1000)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    // Status reads it where it is, and moves nothing (it is read-only).
    let (record, _) = bank.campaign_hashes(&env.app, id).await.unwrap();
    assert_eq!(
        record.get(field::TARGETED.as_bytes()).map(Vec::as_slice),
        Some(b"3".as_slice())
    );
    let exists: (bool, bool) = redis::pipe()
        .exists(&legacy)
        .exists(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, (true, false));

    // The first operation moves it: the stop flag is the old one, the TTL came along.
    let r = bank.record(&env.app, id);
    assert!(r.stopped().await.unwrap());
    let exists: (bool, bool) = redis::pipe()
        .exists(&legacy)
        .exists(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, (false, true));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((900..=1000).contains(&ttl), "{ttl}");
    assert!(
        !r.stop("again").await.unwrap(),
        "stopped once, by the old version"
    );
    let s = r.snapshot().await.unwrap().unwrap();
    assert_eq!(
        s.stopped_reason().as_deref(),
        Some("stopped by the old version")
    );
    assert!(s.is_dispatched());
}
