//! A campaign fleet for end-to-end tests: the real `wxpush` role binaries, the real Redis and
//! RabbitMQ, the fake WeChat in the test's process, and the checks every campaign test ends
//! with (nobody got two messages, every reachable user got one, the counts add up). Shared by
//! the campaign and fault tests; not part of the product.

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::time::Duration;

use serde_json::json;
use wxpush_bank::record::RecordSnapshot;
use wxpush_broker::Publisher;
use wxpush_domain::{Credential, OpenId};
use wxpush_fake_wechat::{Endpoint, FakeApp, FakeConfig, FakeHandle, FakeWeChat, RequestRecord};
use wxpush_roles::Deps;

use crate::{eventually, now_ms, TestEnv, TEST_APP};

pub const SECRET: &str = "campaign-test-secret";
pub const TPL: &str = "TPL_SIGNIN";

pub struct Fleet {
    pub env: TestEnv,
    pub fake: FakeHandle,
    pub deps: Deps,
    pub children: Vec<Child>,
}

impl Fleet {
    pub async fn new(name: &str, rate: u32, page: usize) -> Self {
        Self::with_fake(name, rate, page, fake_config()).await
    }

    /// A fleet whose fake WeChat starts from `config` (see [`fake_config`]).
    pub async fn with_fake(name: &str, rate: u32, page: usize, config: FakeConfig) -> Self {
        let mut env = TestEnv::new(name);
        let fake = FakeWeChat::start(config).await.unwrap();
        env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
        env.set("WXPUSH_APP_SECRET", SECRET);
        env.set("WXPUSH_SEND_RATE", &rate.to_string());
        env.set("WXPUSH_DISPATCH_PAGE_SIZE", &page.to_string());
        env.set("WXPUSH_LOG", "warn");
        let deps = env.deps().await;
        Self {
            env,
            fake,
            deps,
            children: Vec::new(),
        }
    }

    pub fn start(&mut self, role: &str) -> usize {
        self.children.push(self.env.spawn(&[role]));
        self.children.len() - 1
    }

    /// Starts a role with some variables changed (a proxy's URL, a log level).
    pub fn start_with(&mut self, role: &str, vars: &[(&str, &str)]) -> usize {
        self.children.push(self.env.spawn_with(&[role], vars));
        self.children.len() - 1
    }

    /// SIGTERMs child `i` and waits for it: its exit code and how long it took.
    pub fn terminate(&mut self, i: usize) -> (Option<i32>, Duration) {
        let started = std::time::Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.children[i].id().to_string()])
            .status();
        let status = self.children[i].wait().ok().and_then(|s| s.code());
        (status, started.elapsed())
    }

    /// Child `i` has not exited.
    pub fn running(&mut self, i: usize) -> bool {
        matches!(self.children[i].try_wait(), Ok(None))
    }

    /// Sends child `i` a signal (`"STOP"`, `"CONT"`, ...).
    pub fn signal(&self, i: usize, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.children[i].id().to_string()])
            .status();
    }

    /// Consumers of `queue` now (0 when it does not exist).
    pub async fn consumers(&self, queue: &str) -> u32 {
        let counts = self.deps.broker.queue_counts(queue).await.unwrap();
        counts.map_or(0, |(_, consumers)| consumers)
    }

    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// `n` users, each with `per` formIds issued by the fake and stored in the bank.
    pub async fn users(&self, from: usize, n: usize, per: usize) -> Vec<String> {
        let now = now_ms() / 1000;
        let mut out = Vec::new();
        for u in from..from + n {
            let who = format!("oCamp{u:06}xxxxxxxxxxxxxxxxx");
            let ids = self.fake.issue_form_ids(None, &who, per, None).unwrap();
            let creds: Vec<Credential> = ids
                .into_iter()
                .enumerate()
                .map(|(i, f)| Credential::form_id(f, now + 3600 + i as i64))
                .collect();
            self.deps
                .bank
                .store(&self.env.app, &OpenId::new(&who).unwrap(), &creds)
                .await
                .unwrap();
            out.push(who);
        }
        out
    }

    /// `n` users, each with `per` prepayIds (three uses each) issued by the fake and stored in
    /// the bank as an upload would: `oPrep<from..>`.
    pub async fn prepay_users(&self, from: usize, n: usize, per: usize) -> Vec<String> {
        let expiry = now_ms() / 1000 + 3600;
        let mut out = Vec::new();
        for u in from..from + n {
            let who = format!("oPrep{u:06}xxxxxxxxxxxxxxxxx");
            let ids = self
                .fake
                .issue_prepay_ids(None, &who, per, Some(Duration::from_secs(3600)))
                .unwrap();
            let uses: Vec<Credential> = ids
                .iter()
                .flat_map(|id| Credential::prepay_uses(id, expiry))
                .collect();
            self.deps
                .bank
                .store(&self.env.app, &OpenId::new(&who).unwrap(), &uses)
                .await
                .unwrap();
            out.push(who);
        }
        out
    }

    /// `n` users who each accepted `template` `per` times: the fake grants the consents and
    /// the bank holds them, as an upload would leave them: `oCons<from..>`.
    pub async fn consent_users(
        &self,
        from: usize,
        n: usize,
        template: &str,
        per: u32,
    ) -> Vec<String> {
        let fake = self.fake.fake();
        fake.add_template(None, template).unwrap();
        let mut out = Vec::new();
        for u in from..from + n {
            let who = format!("oCons{u:06}xxxxxxxxxxxxxxxxx");
            fake.register_user(None, &who).unwrap();
            fake.grant_consents(None, &who, template, per).unwrap();
            let consents: Vec<Credential> =
                (0..per).map(|_| Credential::consent(template)).collect();
            self.deps
                .bank
                .store(&self.env.app, &OpenId::new(&who).unwrap(), &consents)
                .await
                .unwrap();
            out.push(who);
        }
        out
    }

    pub async fn publish_campaign(&self, campaign: serde_json::Value) {
        let ch = self.deps.broker.channel().await.unwrap();
        self.env.topology().declare_dispatch(&ch).await.unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let p = Publisher::open(&self.deps.broker, self.env.topology())
            .await
            .unwrap();
        p.publish(
            &self.env.topology().campaigns_exchange(),
            "campaign",
            campaign.to_string().as_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
        p.close().await;
    }

    /// Publishes single messages (contract 8.2) to `<ns>.messages`, confirmed, declaring the
    /// send topology first (the senders' queue is bound to the exchange).
    pub async fn publish_messages(&self, messages: &[serde_json::Value]) {
        let ch = self.deps.broker.channel().await.unwrap();
        self.env.topology().declare_send(&ch).await.unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let p = Publisher::open(&self.deps.broker, self.env.topology())
            .await
            .unwrap();
        for m in messages {
            p.publish(
                &self.env.topology().messages_exchange(),
                "message",
                m.to_string().as_bytes(),
                Default::default(),
            )
            .await
            .unwrap();
        }
        p.close().await;
    }

    /// A queue of this test's own bound to `<ns>.receipts` (every routing key), gone with the
    /// tap's channel: what the receipts' consumers would see.
    pub async fn tap_receipts(&self) -> ReceiptTap {
        use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
        let ch = self.deps.broker.channel().await.unwrap();
        let exchange = self.env.topology().receipts_exchange();
        ch.exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
        let queue = format!("{}.test.receipts", self.env.ns);
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
        ReceiptTap { ch, queue }
    }

    pub async fn hash(&self, key: String) -> BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.deps.bank.connection())
            .await
            .unwrap()
    }

    /// The campaign's record ([`wxpush_bank::record`]; empty when there is none).
    pub async fn snapshot(&self, id: &str) -> RecordSnapshot {
        self.deps
            .bank
            .record(&self.env.app, id)
            .snapshot()
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// The record's fields as stored (empty when there is none).
    pub async fn record(&self, id: &str) -> BTreeMap<String, String> {
        self.snapshot(id).await.fields
    }

    /// How many usable credentials `who` holds in the bank.
    pub async fn usable(&self, who: &str) -> u64 {
        self.deps
            .bank
            .usable_count(&self.env.app, &OpenId::new(who).unwrap())
            .await
            .unwrap()
    }

    /// Checks that every one of `users` the fake WeChat accepted no message for still holds
    /// `left` usable credentials (nothing of theirs spent); returns how many such users.
    pub async fn unsent_keep(&self, users: &[String], left: u64) -> u64 {
        let accepted = self.accepted_per_user();
        let mut kept = 0;
        for who in users.iter().filter(|u| !accepted.contains_key(*u)) {
            assert_eq!(
                self.usable(who).await,
                left,
                "{who}'s credentials untouched"
            );
            kept += 1;
        }
        kept
    }

    /// Template send calls the fake WeChat received.
    pub fn template_sends(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.endpoint == Endpoint::TemplateSend)
            .count()
    }

    /// Leaves `who` as an attempt at `campaign` does that let its lease go holding a formId (a
    /// retry scheduled, when `retry`; a fence; a sender that died after): claimed fresh under
    /// the owner `gone`, released without doubt, the formId held (none usable left).
    pub async fn leave_held(&self, campaign: &str, who: &OpenId, retry: bool) {
        use wxpush_bank::{CampaignClaim, ClaimMode, Settle};
        let bank = &self.deps.bank;
        let lease = Duration::from_secs(10);
        let claim = bank
            .campaign_claim(&self.env.app, who, campaign, "gone", lease, ClaimMode::Take)
            .await
            .unwrap();
        assert!(matches!(claim, CampaignClaim::Fresh(_)), "{claim:?}");
        let release = Settle::Release {
            in_doubt: false,
            retry,
        };
        assert!(bank
            .campaign_settle(&self.env.app, who, campaign, "", "gone", release)
            .await
            .unwrap());
        assert_eq!(self.usable(who.as_str()).await, 0, "held");
    }

    /// Publishes a send job straight to the app's send queue (declared first), as a copy of
    /// a job coming back (a retry, a redelivery).
    pub async fn publish_job(&self, job: &wxpush_domain::SendJob) {
        let topology = self.env.topology();
        let ch = self.deps.broker.channel().await.unwrap();
        topology.declare_send(&ch).await.unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let p = Publisher::open(&self.deps.broker, topology.clone())
            .await
            .unwrap();
        p.publish(
            "",
            &topology.send_queue(),
            &job.to_json(),
            Default::default(),
        )
        .await
        .unwrap();
        p.close().await;
    }

    pub async fn counts(&self, id: &str) -> BTreeMap<String, u64> {
        crate::campaign_counts(&self.deps.bank, &self.env.app, id).await
    }

    /// Recipients with an outcome (retries and duplicate jobs are not outcomes).
    pub async fn finished(&self, id: &str) -> u64 {
        self.counts(id)
            .await
            .iter()
            // Not outcomes: attempts scheduled again, duplicate jobs, recipients queued
            // again by `campaign retry` (whose new outcome is still to come), and recipients
            // held for quiet hours (`deferred`: their outcome comes when they go out).
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "retried" | "duplicate" | "requeued" | "deferred"
                )
            })
            .map(|(_, v)| v)
            .sum()
    }

    pub async fn complete(&self, id: &str) -> bool {
        let r = self.snapshot(id).await;
        r.is_dispatched() && self.finished(id).await >= r.targeted().unwrap_or(0)
    }

    pub async fn wait_complete(&self, id: &str, guard: Duration) {
        let done = eventually(guard, || self.complete(id)).await;
        assert!(
            done,
            "campaign {id} did not complete: {:?} {:?}",
            self.record(id).await,
            self.counts(id).await
        );
    }

    /// Sends WeChat accepted, per user (token requests, which answer errcode 0 too, are not
    /// sends).
    pub fn accepted_per_user(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for r in self.fake.requests() {
            if let (Some(0), Some(who)) = (r.errcode, r.touser) {
                *m.entry(who).or_default() += 1;
            }
        }
        m
    }

    /// Messages that reached each user, as WeChat's side (the fake) counted them: a send it
    /// carried out is a delivery whatever the caller heard back (a lost reply included).
    pub fn delivered_per_user(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for r in self.fake.requests() {
            if let (true, Some(who)) = (r.delivered, r.touser) {
                *m.entry(who).or_default() += 1;
            }
        }
        m
    }

    /// The end-of-test checks, `targeted` included: it counts each recipient exactly once,
    /// even when a dispatcher was killed mid-page (see docs/campaigns.md).
    pub async fn check(&self, id: &str, reachable: &[String], audience: usize) {
        let per_user = self.accepted_per_user();
        assert!(
            per_user.values().all(|&n| n == 1),
            "a user got two messages: {:?}",
            per_user.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
        for who in reachable {
            assert_eq!(per_user.get(who), Some(&1), "{who} got no message");
        }
        let c = self.counts(id).await;
        let r = self.snapshot(id).await;
        let targeted = r.targeted().unwrap();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        let failed: u64 = c
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, v)| v)
            .sum();
        let per_recipient = get("sent")
            + get("sent_unconfirmed")
            + get("no_credential")
            + failed
            + get("dead_lettered");
        assert_eq!(
            per_recipient, audience as u64,
            "outcomes add up to the audience: {c:?}"
        );
        assert_eq!(
            targeted, audience as u64,
            "targeted counts each recipient once: {r:?} {c:?}"
        );
        assert_eq!(
            get("sent") + get("sent_unconfirmed"),
            reachable.len() as u64
        );
    }

    pub fn stop_all(&mut self) {
        for c in &self.children {
            // A child killed by the test is gone already: no "No such process" in the output.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        for c in self.children.drain(..) {
            let out = c.wait_with_output().unwrap();
            let code = out.status.code();
            // Killed ones were already reaped; the rest stop cleanly.
            assert!(
                code == Some(0) || code.is_none(),
                "exit {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fake WeChat's configuration for a fleet: the test app with its secret and template.
/// Successful token calls the fake answered (`errcode` 0, classic or stable), by `atMs`.
pub fn tokens_issued(records: &[RequestRecord]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| matches!(r.endpoint, Endpoint::Token | Endpoint::StableToken))
        .filter(|r| r.errcode == Some(0))
        .map(|r| r.at_ms)
        .collect()
}

pub fn fake_config() -> FakeConfig {
    FakeConfig::with_apps(vec![FakeApp::new(TEST_APP, SECRET).with_templates([TPL])])
}

pub fn campaign(id: &str, audience: serde_json::Value) -> serde_json::Value {
    json!({"campaignId": id, "templateId": TPL, "page": "pages/signin/index?from=push",
           "keywords": "Daily check-in,Tap to keep your streak",
           "emphasisKeyword": "keyword1.DATA", "audience": audience})
}

/// Receipts as a consumer sees them ([`Fleet::tap_receipts`]).
pub struct ReceiptTap {
    ch: lapin::Channel,
    queue: String,
}

impl ReceiptTap {
    /// Every receipt waiting: (routing key, receipt).
    pub async fn take(&self) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(
                self.queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let body: serde_json::Value =
                serde_json::from_slice(&m.delivery.data).expect("a receipt is JSON");
            out.push((m.delivery.routing_key.to_string(), body));
        }
        out
    }
}
