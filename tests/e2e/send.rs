//! The send role end to end: real Redis and RabbitMQ, the fake WeChat (which enforces
//! WeChat's rules: a formId belongs to one user, works once, expires; tokens expire) for
//! WeChat. Most tests run the role in process to control faults; the rate-limit test runs
//! two `wxpush send` processes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;
use wxpush_broker::Publisher;
use wxpush_domain::{Credential, OpenId, SendJob};
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeHandle, FakeWeChat, Faults, LostReplyMode};
use wxpush_roles::send::{self, SendParts, SendSettings, SendStats};
use wxpush_roles::{Deps, ShutdownTrigger};
use wxpush_testkit::fleet::Fleet;
use wxpush_testkit::{eventually, now_ms, TestEnv, TEST_APP};

const SECRET: &str = "test-secret-0123456789";
const TPL: &str = "TPL_SIGNIN";

struct Rig {
    env: TestEnv,
    fake: FakeHandle,
    deps: Deps,
}

impl Rig {
    async fn new(name: &str, fake: FakeConfig) -> Self {
        let mut env = TestEnv::new(name);
        let fake = FakeWeChat::start(fake).await.expect("fake WeChat");
        env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
        env.set("WXPUSH_APP_SECRET", SECRET);
        env.set("WXPUSH_SEND_RATE", "100000");
        let deps = env.deps().await;
        Self { env, fake, deps }
    }

    async fn default(name: &str) -> Self {
        Self::new(name, fake_config()).await
    }

    /// Has the fake issue `n` formIds to `who` (expiring after `ttl_secs`, each a second
    /// later than the one before) and stores them in the bank as an upload would.
    async fn give(&self, who: &str, n: usize, ttl_secs: u64) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let ttl = Duration::from_secs(ttl_secs + i as u64);
            ids.extend(self.fake.issue_form_ids(None, who, 1, Some(ttl)).unwrap());
        }
        let now = now_ms() / 1000;
        let creds: Vec<Credential> = ids
            .iter()
            .enumerate()
            .map(|(i, f)| Credential::form_id(f.clone(), now + (ttl_secs + i as u64) as i64))
            .collect();
        self.deps
            .bank
            .store(&self.env.app, &OpenId::new(who).unwrap(), &creds)
            .await
            .unwrap();
        ids
    }

    /// Usable credentials `who` holds now.
    async fn left(&self, who: &str) -> u64 {
        self.deps
            .bank
            .usable_count(&self.env.app, &OpenId::new(who).unwrap())
            .await
            .unwrap()
    }

    async fn publish(&self, jobs: &[SendJob]) {
        let ch = self.deps.broker.channel().await.unwrap();
        self.env.topology().declare_send(&ch).await.unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let p = Publisher::open(&self.deps.broker, self.env.topology())
            .await
            .unwrap();
        let bodies: Vec<Vec<u8>> = jobs.iter().map(SendJob::to_json).collect();
        let q = self.env.topology().send_queue();
        p.publish_all("", bodies.iter().map(|b| (q.as_str(), b.as_slice())))
            .await
            .unwrap();
        p.close().await;
    }

    async fn parts(&self) -> SendParts {
        let config = self.env.config();
        SendParts::connect(&config, &self.deps, Duration::from_millis(400))
            .await
            .unwrap()
    }

    /// Runs the role in process until `settled` jobs reached their final outcome (or the
    /// guard time passes), then stops it gracefully.
    async fn run_until(
        &self,
        settings: SendSettings,
        campaign: &str,
        finished: u64,
        guard: Duration,
    ) -> (std::sync::Arc<SendStats>, BTreeMap<String, u64>) {
        let parts = self.parts().await;
        let (trigger, shutdown) = ShutdownTrigger::new();
        let (deps, topo) = (self.deps.clone(), self.env.topology());
        let role = tokio::spawn(async move {
            send::run(
                &deps,
                parts,
                &topo,
                &settings,
                &wxpush_roles::Health::new(),
                shutdown,
            )
            .await
        });
        eventually(guard, || async {
            final_count(&self.counts(campaign).await) >= finished
        })
        .await;
        trigger.trigger();
        let stats = role.await.unwrap().unwrap();
        (stats, self.counts(campaign).await)
    }

    /// The campaign's outcome counters (without `last_at_ms`).
    async fn counts(&self, campaign: &str) -> BTreeMap<String, u64> {
        wxpush_testkit::campaign_counts(&self.deps.bank, &self.env.app, campaign).await
    }
}

fn fake_config() -> FakeConfig {
    let mut c = FakeConfig::with_apps(vec![FakeApp::new(TEST_APP, SECRET).with_templates([TPL])]);
    c.seed = Some(7);
    c
}

fn settings() -> SendSettings {
    SendSettings {
        concurrency: 16,
        retry_for: Duration::from_secs(3600),
        max_attempts: None,
        max_retry_delay: Duration::from_secs(900),
        quick_retries: 2,
        quota_cooldown: Duration::from_secs(2),
        quiet_spread: Duration::from_secs(60),
        // In doubt, a credential is resent no sooner than 15 s later in production
        // (`DOUBT_WAIT`); 3 s here, past every reply the fake delays or loses (1.5 s at most).
        doubt_wait: Duration::from_secs(3),
    }
}

fn job(campaign: &str, who: &str) -> SendJob {
    serde_json::from_value(json!({
        "campaignId": campaign, "openId": who, "templateId": TPL,
        "page": "pages/signin/index", "data": {"keyword1": "Daily check-in"}
    }))
    .unwrap()
}

fn user(n: usize) -> String {
    format!("oSend{n:05}xxxxxxxxxxxxxxxxxxx")
}

/// Jobs that reached a final outcome (`retried` is not one).
fn final_count(c: &BTreeMap<String, u64>) -> u64 {
    c.iter()
        .filter(|(k, _)| *k != "retried")
        .map(|(_, v)| v)
        .sum()
}

/// Accepted sends per user, as the fake saw them.
fn accepted_per_user(fake: &FakeHandle) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for r in fake.requests() {
        if r.errcode == Some(0) {
            if let Some(to) = &r.touser {
                *m.entry(to.clone()).or_default() += 1;
            }
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_sends_one_message_with_the_users_soonest_credential() {
    let rig = Rig::default("send_basic").await;
    let mut soonest = HashMap::new();
    for n in 0..30 {
        let ids = rig.give(&user(n), 3, 3600).await;
        soonest.insert(user(n), ids[0].clone());
    }
    let jobs: Vec<SendJob> = (0..30).map(|n| job("c1", &user(n))).collect();
    rig.publish(&jobs).await;
    let (stats, counts) = rig
        .run_until(settings(), "c1", 30, Duration::from_secs(30))
        .await;
    assert_eq!(counts.get("sent"), Some(&30), "{counts:?}");
    let per_user = accepted_per_user(&rig.fake);
    assert_eq!(per_user.len(), 30);
    assert!(per_user.values().all(|&n| n == 1));
    for r in rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.touser.is_some())
    {
        let to = r.touser.clone().unwrap();
        assert_eq!(
            r.form_id.as_deref(),
            Some(soonest[&to].as_str()),
            "soonest formId first"
        );
    }
    // Each user keeps the two later credentials.
    for n in 0..30 {
        let left = rig.left(&user(n)).await;
        assert_eq!(left, 2);
    }
    assert_eq!(SendStats::get(&stats.wechat_calls), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_credentials_gets_nothing_and_it_is_recorded() {
    let rig = Rig::default("send_nocred").await;
    rig.give(&user(1), 1, 3600).await;
    rig.publish(&[job("c2", &user(1)), job("c2", &user(2))])
        .await;
    let (_, counts) = rig
        .run_until(settings(), "c2", 2, Duration::from_secs(20))
        .await;
    assert_eq!(counts.get("sent"), Some(&1));
    assert_eq!(counts.get("no_credential"), Some(&1));
    assert!(!accepted_per_user(&rig.fake).contains_key(&user(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_are_dropped_and_the_user_still_gets_one_message() {
    let rig = Rig::default("send_revoked").await;
    let who = user(3);
    let now = now_ms() / 1000;
    // Soonest: a formId WeChat never issued (41028), then another user's (41028), then one
    // already used (41029), then a good one.
    let other = rig.fake.issue_form_ids(None, &user(4), 1, None).unwrap();
    let used = rig.give(&who, 1, 3000).await;
    rig.give(&who, 1, 3600).await;
    rig.deps
        .bank
        .store(
            &rig.env.app,
            &OpenId::new(&who).unwrap(),
            &[
                Credential::form_id("ffffffffffffffffffffffffffffffff", now + 1000),
                Credential::form_id(other[0].clone(), now + 2000),
            ],
        )
        .await
        .unwrap();
    // Spend `used` behind the bank's back, as another system might.
    let client = wxpush_wechat::Client::new(&wxpush_wechat::ClientConfig::with_base_url(
        rig.fake.base_url(),
    ))
    .unwrap();
    let app = wxpush_domain::AppId::new(TEST_APP).unwrap();
    let token = client
        .fetch_token(&app, &wxpush_domain::Secret::new(SECRET))
        .await
        .unwrap();
    let m = job("x", &who);
    let direct = wxpush_wechat::TemplateMessage {
        touser: OpenId::new(&who).unwrap(),
        template_id: TPL.into(),
        page: None,
        form_id: used[0].clone(),
        data: m.data.clone(),
        emphasis_keyword: None,
    };
    assert!(client.send_template(&token.token, &direct).await.is_sent());

    rig.publish(&[job("c3", &who)]).await;
    let (stats, counts) = rig
        .run_until(settings(), "c3", 1, Duration::from_secs(20))
        .await;
    assert_eq!(counts.get("sent"), Some(&1), "{counts:?}");
    assert_eq!(SendStats::get(&stats.credentials_dropped), 3);
    assert_eq!(
        accepted_per_user(&rig.fake)[&who],
        2,
        "the direct send and ours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_sent_and_nobody_gets_two() {
    let mut fake = fake_config();
    fake.faults = Faults {
        busy_probability: 0.3,
        http500_probability: 0.3,
        ..Faults::default()
    };
    let rig = Rig::new("send_transient", fake).await;
    for n in 0..40 {
        rig.give(&user(n), 2, 3600).await;
    }
    rig.publish(&(0..40).map(|n| job("c4", &user(n))).collect::<Vec<_>>())
        .await;
    // A call answered HTTP 500 may have delivered: its formId is resent, in doubt, no sooner
    // than `doubt_wait` later (3 s here), and a user may meet several in a row.
    let mut s = settings();
    s.max_retry_delay = Duration::from_secs(1);
    let (stats, counts) = rig.run_until(s, "c4", 40, Duration::from_secs(150)).await;
    assert_eq!(counts.get("sent"), Some(&40), "{counts:?}");
    assert!(
        SendStats::get(&stats.wechat_calls) > 40,
        "some calls failed and were retried"
    );
    let per_user = accepted_per_user(&rig.fake);
    assert_eq!(per_user.len(), 40);
    assert!(per_user.values().all(|&n| n == 1), "nobody got two");
    // No credential was wasted: every user keeps their second formId.
    for n in 0..40 {
        let left = rig.left(&user(n)).await;
        assert_eq!(left, 1, "user {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_request_left_is_resent_with_the_same_form_id_and_not_doubled() {
    let rig = Rig::default("send_ambiguous").await;
    for n in 0..5 {
        rig.give(&user(n), 2, 3600).await;
    }
    rig.publish(&(0..5).map(|n| job("c5", &user(n))).collect::<Vec<_>>())
        .await;
    let mut s = settings();
    s.quick_retries = 0;
    // The fleet's token is fetched while WeChat is fast; then sends answer after 1.5 s, past
    // the client's 400 ms timeout (the fake judges, spends the formId, then waits), and
    // WeChat turns fast again for the retries.
    let parts = rig.parts().await;
    parts.default_app().tokens.get().await.unwrap();
    rig.fake.update_faults(|f| f.latency_ms = 1500).unwrap();
    let fake = rig.fake.fake().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let _ = fake.update_faults(|f| f.latency_ms = 0);
    });
    let (_, counts) = rig.run_until(s, "c5", 5, Duration::from_secs(30)).await;
    assert_eq!(counts.get("sent_unconfirmed"), Some(&5), "{counts:?}");
    let per_user = accepted_per_user(&rig.fake);
    assert!(per_user.values().all(|&n| n == 1), "{per_user:?}");
    assert_eq!(per_user.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_once_for_the_fleet() {
    let mut fake = fake_config();
    fake.token_lifetime_ms = 2000;
    let rig = Rig::new("send_token", fake).await;
    for n in 0..150 {
        rig.give(&user(n), 1, 3600).await;
    }
    rig.publish(&(0..150).map(|n| job("c6", &user(n))).collect::<Vec<_>>())
        .await;
    let mut s = settings();
    s.concurrency = 4;
    // A slow rate makes the run outlive several token lifetimes.
    let mut rig = rig;
    rig.env.set("WXPUSH_SEND_RATE", "30");
    // Invalidate every token once in the middle of the run too.
    let fake = rig.fake.fake().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _ = fake.expire_tokens(None);
    });
    let started = std::time::Instant::now();
    let (_, counts) = rig.run_until(s, "c6", 150, Duration::from_secs(40)).await;
    let lifetimes = started.elapsed().as_millis() as u64 / 2000;
    assert_eq!(counts.get("sent"), Some(&150), "{counts:?}");
    // The default source, stable_token: classic /cgi-bin/token is never called.
    assert_eq!(rig.fake.token_fetches(TEST_APP), 0);
    let fetches = rig.fake.stable_token_fetches(TEST_APP);
    // ~5 s of sending with 2 s tokens (longer on a loaded machine): about one fetch per
    // lifetime, plus the one after the expiry and the first; never one per job or per worker.
    assert!(
        (2..=lifetimes + 2).contains(&fetches),
        "{fetches} token fetches in {lifetimes} token lifetimes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_recorded_and_the_credential_goes_back() {
    let rig = Rig::default("send_permanent").await;
    rig.give(&user(1), 1, 3600).await;
    let mut bad = job("c7", &user(1));
    bad.template_id = "TPL_UNKNOWN".into();
    rig.publish(&[bad]).await;
    let (stats, counts) = rig
        .run_until(settings(), "c7", 1, Duration::from_secs(20))
        .await;
    assert_eq!(counts.get("failed:40037"), Some(&1), "{counts:?}");
    assert_eq!(SendStats::get(&stats.credentials_released), 1);
    let left = rig.left(&user(1)).await;
    assert_eq!(left, 1, "WeChat did not use it: it is usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_pauses_the_fleet_then_every_job_is_sent() {
    let mut fake = fake_config();
    fake.faults.send_quota_per_sec = Some(5);
    let rig = Rig::new("send_quota", fake).await;
    for n in 0..12 {
        rig.give(&user(n), 1, 3600).await;
    }
    rig.publish(&(0..12).map(|n| job("c8", &user(n))).collect::<Vec<_>>())
        .await;
    let (_, counts) = rig
        .run_until(settings(), "c8", 12, Duration::from_secs(60))
        .await;
    assert_eq!(counts.get("sent"), Some(&12), "{counts:?}");
    let quota_answers = rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.errcode == Some(45009))
        .count();
    assert!(quota_answers >= 1);
    assert!(accepted_per_user(&rig.fake).values().all(|&n| n == 1));
}

/// Takes up to a minute: parked jobs wait for WeChat's next minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minute_quota_parks_jobs_until_the_next_minute_holding_their_credential() {
    let mut fake = fake_config();
    fake.faults.minute_quota = Some(3);
    let rig = Rig::new("send_minute", fake).await;
    for n in 0..5 {
        rig.give(&user(n), 1, 3600).await;
    }
    rig.publish(&(0..5).map(|n| job("c11", &user(n))).collect::<Vec<_>>())
        .await;
    let (_, counts) = rig
        .run_until(settings(), "c11", 5, Duration::from_secs(150))
        .await;
    assert_eq!(counts.get("sent"), Some(&5), "{counts:?}");
    let requests = rig.fake.requests();
    assert!(requests.iter().any(|r| r.errcode == Some(45011)));
    assert!(accepted_per_user(&rig.fake).values().all(|&n| n == 1));
    // Each user had one credential: the parked jobs kept theirs.
    let mut per_user_forms: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for r in requests.into_iter().filter(|r| r.touser.is_some()) {
        per_user_forms
            .entry(r.touser.unwrap())
            .or_default()
            .insert(r.form_id.unwrap_or_default());
    }
    assert!(per_user_forms.values().all(|f| f.len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_and_jobs_that_keep_failing_are_dead_lettered_with_a_reason() {
    let mut fake = fake_config();
    fake.faults.busy_probability = 1.0;
    let rig = Rig::new("send_dead", fake).await;
    rig.give(&user(1), 1, 3600).await;
    rig.publish(&[job("c9", &user(1))]).await;
    // A malformed job, published raw.
    let p = Publisher::open(&rig.deps.broker, rig.env.topology())
        .await
        .unwrap();
    p.publish(
        "",
        &rig.env.topology().send_queue(),
        b"{\"campaignId\": 5}",
        Default::default(),
    )
    .await
    .unwrap();
    p.close().await;
    let mut s = settings();
    s.max_attempts = Some(2);
    s.quick_retries = 0;
    let (_, counts) = rig.run_until(s, "c9", 1, Duration::from_secs(30)).await;
    assert_eq!(counts.get("dead_lettered"), Some(&1), "{counts:?}");
    let mut dead = Vec::new();
    for _ in 0..50 {
        dead.extend(rig.env.drain_dead_letters(&rig.deps.broker, "send").await);
        if dead.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut codes: Vec<&str> = dead.iter().map(|(_, c, _)| c.as_str()).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec!["gave_up", "malformed_job"]);
    // The busy answers never spent the credential: it is back in the bank.
    let left = rig.left(&user(1)).await;
    assert_eq!(left, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sender_processes_share_the_rate_limit_and_never_reuse_a_credential() {
    let mut rig = Rig::default("send_rate").await;
    let users = 120;
    for n in 0..users {
        rig.give(&user(n), 2, 3600).await;
    }
    rig.publish(&(0..users).map(|n| job("c10", &user(n))).collect::<Vec<_>>())
        .await;
    let rate = 40u32;
    rig.env.set("WXPUSH_SEND_RATE", &rate.to_string());
    let children: Vec<_> = (0..2).map(|_| rig.env.spawn(&["send"])).collect();
    let done = eventually(Duration::from_secs(30), || async {
        final_count(&rig.counts("c10").await) >= users as u64
    })
    .await;
    for c in &children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(done, "{:?}", rig.counts("c10").await);
    let sends: Vec<u64> = rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.touser.is_some())
        .map(|r| r.at_ms)
        .collect();
    assert_eq!(sends.len(), users, "one call per job");
    // The limiter's stated bound, burst included (docs/sending.md), in sliding windows of
    // the fake's clock.
    let bound = wxpush_fleet::max_calls_per_second(
        rate,
        wxpush_fleet::RateSettings::default().permit_max_age,
    ) as usize;
    for (i, start) in sends.iter().enumerate() {
        let in_window = sends[i..].iter().take_while(|t| **t < start + 1000).count();
        assert!(
            in_window <= bound,
            "{in_window} sends in one second (bound {bound})"
        );
    }
    let per_user = accepted_per_user(&rig.fake);
    assert_eq!(per_user.len(), users);
    assert!(per_user.values().all(|&n| n == 1));
    let mut uses: HashMap<String, u32> = HashMap::new();
    for r in rig.fake.requests() {
        if let Some(f) = r.form_id {
            *uses.entry(f).or_default() += 1;
        }
    }
    assert!(
        uses.values().all(|&n| n == 1),
        "a credential was sent twice"
    );
}

/// Each user's deliveries as WeChat (the fake) counted them: a send the fake carried out is a
/// delivery whatever the caller heard back.
fn delivered_per_user(fake: &FakeHandle) -> HashMap<String, u64> {
    fake.stats().sends_by_open_id.into_iter().collect()
}

impl Rig {
    /// Has the fake issue one prepayId (three uses) to `who`, stored as an upload would.
    async fn give_prepay(&self, who: &str, ttl_secs: u64) -> String {
        let id = self
            .fake
            .issue_prepay_ids(None, who, 1, Some(Duration::from_secs(ttl_secs)))
            .unwrap()
            .remove(0);
        let expiry = now_ms() / 1000 + ttl_secs as i64;
        let uses: Vec<Credential> = Credential::prepay_uses(&id, expiry).collect();
        self.deps
            .bank
            .store(&self.env.app, &OpenId::new(who).unwrap(), &uses)
            .await
            .unwrap();
        id
    }

    /// Makes every send answer after `ms` (past the sender's 400 ms timeout: the fake carries
    /// the send out, then the reply is lost) for `for_ms`, once the fleet's token is in hand.
    async fn lose_replies(&self, ms: u64, for_ms: u64) {
        self.parts().await.default_app().tokens.get().await.unwrap();
        self.fake.update_faults(|f| f.latency_ms = ms).unwrap();
        let fake = self.fake.fake().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            let _ = fake.update_faults(|f| f.latency_ms = 0);
        });
    }
}

/// Issue 12, case 1. A prepayId allows three messages: sent again after a call whose reply was
/// lost, WeChat accepts it as its second use. Today's main resent it (the quick retry, as for a
/// formId) and the user got two messages for one campaign, recorded as one `sent`. Now a
/// prepayId use whose outcome is unknown is settled `sent_unconfirmed` and never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepay_id_whose_reply_was_lost_is_never_sent_again() {
    let rig = Rig::default("send_prepay_lost").await;
    for n in 0..5 {
        rig.give_prepay(&user(n), 3600).await;
    }
    rig.publish(&(0..5).map(|n| job("c-pp", &user(n))).collect::<Vec<_>>())
        .await;
    rig.lose_replies(1500, 900).await;
    let (_, counts) = rig
        .run_until(settings(), "c-pp", 5, Duration::from_secs(30))
        .await;
    let delivered = delivered_per_user(&rig.fake);
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    assert!(
        delivered.values().all(|&n| n == 1),
        "a user got two messages for one campaign: {delivered:?}"
    );
    assert_eq!(counts.get("sent_unconfirmed"), Some(&5), "{counts:?}");
    // The other two uses stay in the bank for other campaigns.
    assert_eq!(rig.left(&user(0)).await, 2);
}

/// Issue 12, case 4. A formId held after a call whose reply was lost, and expired by the time
/// the job is tried again: WeChat may answer 41028 for it (its order of checks is not
/// documented; the fake here checks expiry first), and today's main then claimed the user's
/// next formId and sent a second message. Now an expired credential in doubt is settled
/// `sent_unconfirmed` without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_credential_in_doubt_is_settled_not_replaced() {
    let mut fake = fake_config();
    fake.faults.check_expiry_first = true;
    let mut rig = Rig::new("send_expired_doubt", fake).await;
    rig.env.set("WXPUSH_CLAIM_MARGIN_SECS", "1");
    rig.deps = rig.env.deps().await;
    let mut jobs = Vec::new();
    for n in 0..3 {
        // The soonest formId expires in 4 s (at the fake too: usable for the first call, 3 s
        // inside the margin), the next in an hour.
        rig.give(&user(n), 1, 4).await;
        rig.give(&user(n), 1, 3600).await;
        // A job on its third attempt: the next waits 4 s, past the first formId's expiry.
        let mut j = job("c-exp", &user(n));
        j.attempt = 2;
        jobs.push(j);
    }
    rig.publish(&jobs).await;
    let mut s = settings();
    s.quick_retries = 0;
    rig.lose_replies(1500, 1200).await;
    let (_, counts) = rig.run_until(s, "c-exp", 3, Duration::from_secs(30)).await;
    let delivered = delivered_per_user(&rig.fake);
    assert!(
        delivered.values().all(|&n| n == 1),
        "a user got two messages for one campaign: {delivered:?}"
    );
    assert_eq!(counts.get("sent_unconfirmed"), Some(&3), "{counts:?}");
    for n in 0..3 {
        assert_eq!(rig.left(&user(n)).await, 1, "the next formId was not spent");
    }
}

/// A WeChat outage longer than the 8 attempts today's main gave a job, then WeChat recovers:
/// with a time budget, every recipient still gets exactly one message. `-1` (busy: WeChat did
/// not carry the send out) is retried on its backoff; HTTP 500 (may have delivered) holds each
/// formId in doubt and resends it no sooner than `doubt_wait` later (15 s in production, 3 s
/// here), which WeChat refuses if the first call had gone out.
async fn outage_then_recovery(name: &str, faults: fn(&mut Faults, bool), outage: Duration) {
    let rig = Rig::default(name).await;
    for n in 0..10 {
        rig.give(&user(n), 2, 3600).await;
    }
    rig.publish(&(0..10).map(|n| job(name, &user(n))).collect::<Vec<_>>())
        .await;
    let mut s = settings();
    s.quick_retries = 0;
    s.max_retry_delay = Duration::from_secs(1);
    rig.parts().await.default_app().tokens.get().await.unwrap();
    rig.fake.update_faults(|f| faults(f, true)).unwrap();
    let fake = rig.fake.fake().clone();
    tokio::spawn(async move {
        tokio::time::sleep(outage).await;
        let _ = fake.update_faults(|f| faults(f, false));
    });
    let (_, counts) = rig.run_until(s, name, 10, Duration::from_secs(90)).await;
    assert_eq!(counts.get("sent"), Some(&10), "{counts:?}");
    let delivered = delivered_per_user(&rig.fake);
    assert_eq!(delivered.len(), 10);
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
    if name.ends_with("busy") {
        assert!(
            counts.get("retried").copied().unwrap_or(0) >= 10 * 8,
            "more attempts than today's 8 per job: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_eight_attempts_loses_nobody_busy() {
    let busy = |f: &mut Faults, on: bool| f.busy_probability = if on { 1.0 } else { 0.0 };
    outage_then_recovery("c-out-busy", busy, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_http_500s_loses_nobody_and_doubles_nobody() {
    let down = |f: &mut Faults, on: bool| f.http500_probability = if on { 1.0 } else { 0.0 };
    outage_then_recovery("c-out-500", down, Duration::from_secs(20)).await;
}

/// A send job that came back unsettled 20 times (a sender crashing on it, or a recurring
/// error) is dead-lettered unread, and its recipient still gets an outcome: settled as a spent
/// retry budget would settle it (`dead_lettered`, the credential given back, listed for
/// `campaign retry`), without a call. Only on the limit's delivery and the two after it (a
/// broker's count can step over the limit): one that comes back later still (its settling
/// crashed each time) is dead-lettered without touching Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_dead_lettered_for_redeliveries_still_settles_its_recipient() {
    let rig = Rig::default("send_redelivered").await;
    let (limit, past, plain) = (user(0), user(1), user(2));
    for who in [&limit, &past, &plain] {
        rig.give(who, 2, 3600).await;
    }
    rig.publish(&[]).await;
    let p = Publisher::open(&rig.deps.broker, rig.env.topology())
        .await
        .unwrap();
    let q = rig.env.topology().send_queue();
    for who in [&limit, &past, &plain] {
        p.publish("", &q, &job("c-red", who).to_json(), Default::default())
            .await
            .unwrap();
    }
    p.close().await;
    // Each job handed back once (redelivered from now on), then its count of deliveries so
    // far set where the role keeps it (the broker's own count is 1): the next delivery of
    // `limit` is its 20th, `past`'s its 23rd (past the deliveries that still settle the
    // recipient), `plain`'s its 2nd.
    let ch = rig.deps.broker.channel().await.unwrap();
    let mut taken = Vec::new();
    for _ in 0..3 {
        // All three taken before any goes back (a quorum queue returns one to its head).
        let m = ch
            .basic_get(q.as_str().into(), Default::default())
            .await
            .unwrap()
            .expect("a job");
        taken.push(m);
    }
    for m in taken {
        m.delivery
            .acker
            .reject(lapin::options::BasicRejectOptions { requeue: true })
            .await
            .unwrap();
    }
    let _ = ch.close(200, "ok".into()).await;
    let mut redis = rig.deps.bank.connection();
    for (who, earlier) in [(&limit, 18), (&past, 21)] {
        // (The sender counts under its role's name, `send`, whichever send queue it was.)
        let key = wxpush_roles::redelivery::counter_key(
            &rig.env.ns,
            "send",
            &job("c-red", who).to_json(),
        );
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(earlier)
            .arg("EX")
            .arg(3600)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let (_, counts) = rig
        .run_until(settings(), "c-red", 2, Duration::from_secs(30))
        .await;
    assert_eq!(counts.get("sent"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("dead_lettered"), Some(&1), "{counts:?}");
    assert_eq!(
        final_count(&counts),
        2,
        "the 23rd delivery settles nobody: {counts:?}"
    );
    assert_eq!(rig.left(&limit).await, 2, "its credential was given back");
    assert_eq!(rig.left(&past).await, 2, "untouched");
    assert_eq!(
        rig.deps
            .bank
            .campaign_retryable_count(&rig.env.app, "c-red")
            .await
            .unwrap(),
        1
    );
    let delivered = delivered_per_user(&rig.fake);
    assert_eq!(delivered.keys().collect::<Vec<_>>(), vec![&plain]);
    let mut dead = Vec::new();
    let start = std::time::Instant::now();
    while dead.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        dead.extend(rig.env.drain_dead_letters(&rig.deps.broker, "send").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter().all(|(_, code, _)| code == "redelivered"),
        "{dead:?}"
    );
}

/// The subscribe template of the lost-reply tests.
const SUB: &str = "TPL_ORDER_SHIPPED";

/// Issue 12, lost replies end to end: the real `wxpush dispatch` and two `wxpush send`
/// processes send one template campaign (100 users holding two formIds, 100 holding a
/// prepayId, i.e. three uses) and one subscribe campaign (100 users holding two consents, at
/// the fake and in the bank), while the fake WeChat delivers every send and loses the reply of
/// a quarter of them as `mode` says. Every user holds enough for a second message, so a resend
/// that should not happen shows as a second delivery.
///
/// Checked from the fake's records (`delivered`, WeChat's side): every user got exactly one
/// message; every recipient has one outcome (the counters add up to the audience); the users
/// whose reply was lost are `sent_unconfirmed` (formId: resent, refused `41029`; prepayId: not
/// resent) or `unknown` (consent: not resent), the others `sent`.
async fn lost_replies_end_to_end(name: &str, mode: LostReplyMode) {
    let mut config = wxpush_testkit::fleet::fake_config();
    config.seed = Some(12);
    let mut f = Fleet::with_fake(name, 400, 100, config).await;
    let n = 100;
    let forms = f.users(0, n, 2).await;
    let prepays = f.prepay_users(0, n, 1).await;
    let consents = f.consent_users(0, n, SUB, 2).await;
    f.fake
        .update_faults(|x| {
            x.lost_reply_probability = 0.25;
            x.lost_reply_mode = mode;
            x.lost_reply_status = 504;
            // Past the senders' 5 s request timeout.
            x.lost_reply_hang_ms = 6_500;
        })
        .unwrap();
    f.start("dispatch");
    f.start("send");
    f.start("send");
    let template_audience: Vec<&String> = forms.iter().chain(&prepays).collect();
    f.publish_campaign(wxpush_testkit::fleet::campaign(
        "lost-t",
        json!({ "openIds": template_audience }),
    ))
    .await;
    f.publish_campaign(
        json!({"campaignId": "lost-s", "kind": "subscribe", "templateId": SUB,
        "page": "pages/order/detail?id=1",
        "data": {"thing1": {"value": "Your order shipped"}},
        "audience": {"openIds": consents}}),
    )
    .await;
    f.wait_complete("lost-t", Duration::from_secs(90)).await;
    f.wait_complete("lost-s", Duration::from_secs(90)).await;

    let records = f.fake.requests();
    let delivered = f.delivered_per_user();
    let lost_of = |group: &[String]| {
        records
            .iter()
            .filter(|r| r.lost_reply.is_some())
            .filter(|r| r.touser.as_ref().is_some_and(|u| group.contains(u)))
            .count() as u64
    };
    let (lost_forms, lost_prepays, lost_consents) =
        (lost_of(&forms), lost_of(&prepays), lost_of(&consents));
    for (group, what) in [
        (&forms, "formId"),
        (&prepays, "prepayId"),
        (&consents, "consent"),
    ] {
        for who in group {
            assert_eq!(
                delivered.get(who),
                Some(&1),
                "{what} user {who}: deliveries {:?}, their calls {:?}",
                delivered.get(who),
                records
                    .iter()
                    .filter(|r| r.touser.as_deref() == Some(who.as_str()))
                    .map(|r| (r.delivered, r.errcode, r.http_status, r.lost_reply))
                    .collect::<Vec<_>>()
            );
        }
        let lost = lost_of(group);
        assert!(
            lost >= n as u64 / 10,
            "the fault hit the {what} users: {lost} lost replies"
        );
    }
    assert!(
        records
            .iter()
            .filter(|r| r.lost_reply.is_some())
            .all(|r| r.lost_reply == Some(mode)),
        "lost as {mode:?}"
    );
    let t = f.counts("lost-t").await;
    let s = f.counts("lost-s").await;
    let get = |c: &BTreeMap<String, u64>, k: &str| c.get(k).copied().unwrap_or(0);
    let outcomes = |c: &BTreeMap<String, u64>| -> u64 {
        c.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "retried" | "duplicate" | "requeued"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(outcomes(&t), 2 * n as u64, "one outcome each: {t:?}");
    assert_eq!(outcomes(&s), n as u64, "one outcome each: {s:?}");
    assert_eq!(
        get(&t, "sent_unconfirmed"),
        lost_forms + lost_prepays,
        "the lost ones, and only they, are unconfirmed: {t:?}"
    );
    assert_eq!(
        get(&t, "sent"),
        2 * n as u64 - lost_forms - lost_prepays,
        "{t:?}"
    );
    assert_eq!(get(&s, "unknown"), lost_consents, "{s:?}");
    assert_eq!(get(&s, "sent"), n as u64 - lost_consents, "{s:?}");
    for (id, c) in [("lost-t", &t), ("lost-s", &s)] {
        let targeted = f.record(id).await["targeted"].parse::<u64>().unwrap();
        assert_eq!(targeted, outcomes(c), "{id}: targeted");
    }
    // Each prepayId spent one use: the other two stay for other campaigns.
    for who in &prepays {
        assert_eq!(
            f.usable(who).await,
            2,
            "{who}: a prepayId use was spent twice or given back"
        );
    }
    println!(
        "lost replies ({mode:?}): {lost_forms} formId, {lost_prepays} prepayId, \
         {lost_consents} consent replies lost; every one of {} users got one message; \
         template {t:?}, subscribe {s:?}",
        3 * n
    );
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_of_replies_lost_as_gateway_504s_doubles_and_loses_nobody() {
    lost_replies_end_to_end("lost_504", LostReplyMode::Status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_of_replies_lost_as_connection_resets_doubles_and_loses_nobody() {
    lost_replies_end_to_end("lost_reset", LostReplyMode::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_of_replies_hanging_past_the_timeout_doubles_and_loses_nobody() {
    lost_replies_end_to_end("lost_hang", LostReplyMode::Hang).await;
}
