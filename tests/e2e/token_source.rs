//! Living beside the mini program's own backend (contract §8.6): another server of the same
//! company fetches access tokens for the same appid with `GET /cgi-bin/token`, again and again,
//! while wxpush runs a campaign through real `wxpush send` processes. Each of its fetches ends
//! the previous classic token after the fake's grace period (1 s here, 5 minutes at WeChat).
//! With the default `stable` source wxpush's sends never meet `40001` and every user gets one
//! message; with `token_source = classic` they do meet it (the proof that the other server's
//! fetches bite).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wxpush_domain::{AppId, Secret};
use wxpush_fake_wechat::{Endpoint, FakeConfig, FakeWeChat};
use wxpush_testkit::fleet::{campaign, fake_config, Fleet, SECRET};
use wxpush_testkit::{eventually, TEST_APP};
use wxpush_wechat::{Client, ClientConfig};

/// The fake with a 1 s grace for a replaced classic token, so the other server's fetches end
/// wxpush's classic token within the test.
fn short_grace() -> FakeConfig {
    FakeConfig {
        token_grace_ms: 1_000,
        ..fake_config()
    }
}

/// The company's other server: fetches a classic token for the same appid in a tight loop
/// until stopped; counts its fetches.
struct OtherServer {
    stop: Arc<AtomicBool>,
    fetches: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl OtherServer {
    fn start(base_url: &str) -> Self {
        let client = Client::new(&ClientConfig::with_base_url(base_url)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            let (app, secret) = (AppId::new(TEST_APP).unwrap(), Secret::new(SECRET));
            while !s.load(Ordering::SeqCst) {
                client.fetch_token(&app, &secret).await.unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            stop,
            fetches,
            task,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Sends the fake answered with `40001`.
fn bad_token_answers(fake: &FakeWeChat) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(40001))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stable_tokens_another_servers_fetches_never_reach_wxpushs_sends() {
    // 300 users at 60 sends/s: a campaign of about 5 s, several grace periods long.
    let mut f = Fleet::with_fake("tok_stable", 60, 1000, short_grace()).await;
    let reachable = f.users(0, 300, 1).await;
    let other = OtherServer::start(&f.fake.base_url());
    // The other server is at it before wxpush starts, and all along.
    assert!(
        eventually(Duration::from_secs(5), || async {
            other.fetches.load(Ordering::SeqCst) >= 5
        })
        .await
    );
    f.start("dispatch");
    f.start("send");
    f.start("send");
    f.publish_campaign(campaign("stable-1", json!({"all": true})))
        .await;
    f.wait_complete("stable-1", Duration::from_secs(60)).await;
    let theirs = other.stop().await;
    f.stop_all();

    f.check("stable-1", &reachable, 300).await;
    assert_eq!(bad_token_answers(&f.fake), 0, "no send met 40001");
    let sends = f
        .fake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend)
        .count();
    assert!(sends >= 300, "{sends} sends");
    // wxpush took its token from stable_token, never from /cgi-bin/token: every classic fetch
    // was the other server's, and there were plenty during the campaign.
    assert_eq!(f.fake.token_fetches(TEST_APP), theirs);
    assert!(theirs > 50, "the other server fetched only {theirs} tokens");
    assert!(f.fake.stable_token_fetches(TEST_APP) >= 1);
    assert_eq!(
        f.fake.stats().stable_token_forced.values().sum::<u64>(),
        0,
        "nothing forced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_classic_tokens_another_servers_fetches_break_wxpushs_sends() {
    let mut f = Fleet::with_fake("tok_classic", 60, 1000, short_grace()).await;
    f.users(0, 300, 1).await;
    f.env.set("WXPUSH_TOKEN_SOURCE", "classic");
    // Each failed send logs a warning: keep the captured output small.
    f.env.set("WXPUSH_LOG", "error");
    let other = OtherServer::start(&f.fake.base_url());
    f.start("dispatch");
    f.start("send");
    f.start("send");
    f.publish_campaign(campaign("classic-1", json!({"all": true})))
        .await;
    let broken = eventually(Duration::from_secs(30), || async {
        bad_token_answers(&f.fake) > 0
    })
    .await;
    other.stop().await;
    f.stop_all();
    assert!(
        broken,
        "wxpush's classic token outlived the other server's fetches"
    );
    assert!(f.fake.stable_token_fetches(TEST_APP) == 0, "classic only");
}
