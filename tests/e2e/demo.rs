//! `wxpush demo` end to end: the real binary runs ingest, dispatch, two senders and events as
//! child processes against a fake WeChat, sends a formId campaign and a subscribe campaign to
//! 300 generated users, ships 100 orders as single messages to a second app's users whose
//! consents came from WeChat's events (act three), reports it all, and must pass every one of
//! its checks and leave its namespace empty (keys, queues and exchanges).

use std::io::Read;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use std::os::unix::process::CommandExt;
use wxpush_broker::Publisher;
use wxpush_domain::{AppId, OpenId};
use wxpush_testkit::{eventually, http_get, http_post_json, keys_with_ttl, TestEnv};

/// The appid the demo's closing commands set.
const TRY_APP: &str = "wxdemo0000000000";

/// Runs `wxpush demo <args>` in `env` to its end (SIGTERM after `guard`): its exit status,
/// stdout and stderr.
async fn run_demo(env: &TestEnv, args: &[&str], guard: Duration) -> (ExitStatus, String, String) {
    let mut child = env
        .command(&[&["demo"], args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wxpush demo");
    // Read both pipes on threads so a full pipe never blocks the demo.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > guard {
            // SIGTERM: the demo stops its roles and cleans up.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("demo not done in {guard:?}: {stderr}"));
    (status, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_its_checks_and_cleans_up() {
    let env = TestEnv::new("demo");
    let (status, stdout, stderr) = run_demo(
        &env,
        &["--users", "300", "--senders", "2"],
        Duration::from_secs(120),
    )
    .await;
    assert!(
        status.success(),
        "exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // It opens with where its dashboard is (up while it runs; read-only).
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("The dashboard is at http://127.0.0.1:") && first.contains("read-only"),
        "{first}"
    );
    // Both campaigns, side by side.
    for shown in [
        "formId     demo-",
        "template TPL_DEMO",
        "subscribe  demo-sub-",
        "template TPL_ORDER_SHIPPED (\"kind\": \"subscribe\"",
        "audience 300 openIds",
        "audience all users holding a consent, {\"all\": true}",
        "formId   subscribe",
        "messages/s",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing:\n{stdout}");
    }
    for check in [
        "✓ no user got two messages",
        "✓ no formId was accepted twice",
        "✓ every user with a usable formId got exactly one message",
        "✓ no user got two subscribe messages",
        "✓ every user holding a consent got exactly one subscribe message",
        "✓ no consent was spent beyond one per user, and the bank and WeChat agree",
        "✓ the consents came from WeChat's popup events",
        "✓ each order reached WeChat at most once",
        "✓ each user saw their own order number",
        "✓ every message has its receipt",
        "✓ delivered receipts match WeChat's deliveries",
        "✓ all 5 roles stopped cleanly",
    ] {
        assert!(stdout.contains(check), "{check:?} missing:\n{stdout}");
    }
    // Act three: the orders, and the receipts counted by routing key.
    for shown in [
        "Orders shipped (app wxdemoorders0000: consent_source = \"events\"",
        "  shoppers                           100",
        "messages published",
        "100 orders, 20 published twice",
        "delivery events pushed",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing:\n{stdout}");
    }
    let receipts = |key: &str| -> (u64, u64) {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} receipts line:\n{stdout}"));
        let n: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.replace(',', "").parse().ok())
            .collect();
        (n[0], n[1])
    };
    let (sent, sent_messages) = receipts("message.sent");
    let (none, none_messages) = receipts("message.no_credential");
    let (delivered, delivered_messages) = receipts("message.delivered");
    assert_eq!(sent_messages + none_messages, 100, "{stdout}");
    // Receipts are at least once: one may come twice.
    assert!(
        sent >= sent_messages && none >= none_messages && delivered >= delivered_messages,
        "{stdout}"
    );
    assert_eq!(
        delivered_messages, sent_messages,
        "one message delivered per message sent: {stdout}"
    );
    assert!(
        !stderr.contains("could not delete"),
        "the demo cleaned up: {stderr}"
    );
    assert_eq!(
        stdout.matches("✓ outcomes add up").count(),
        2,
        "both campaigns' outcomes add up:\n{stdout}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");
    // Without --keep the demo deletes its namespace: keys, and queues (act three's too).
    let left = keys_with_ttl(&env).await;
    assert!(left.is_empty(), "keys left behind: {left:?}");
    let deps = env.deps().await;
    for queue in [
        format!("{}.messages.send", env.ns),
        format!("{}.demo.receipts", env.ns),
        format!("{}.send", env.ns),
    ] {
        let counts = deps.broker.queue_counts(&queue).await.expect("RabbitMQ");
        assert!(counts.is_none(), "queue {queue} left behind: {counts:?}");
    }
    deps.broker.close().await;
}

/// The commands the demo ends with, pasted into a shell as a new user would: the fake WeChat
/// and four roles (`ingest`, `dispatch`, two `send`) as separate processes on this host, with
/// no optional variable set (`WXPUSH_HTTP_ADDR` included: each role finds its own port), then
/// a campaign through them. Two things differ from a user's shell, both because tests run in
/// parallel: the namespace (the test's own, in the environment) and the fake's port (a free
/// one instead of 8089, replaced in the pasted text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closing_advice_runs_a_fleet_on_one_host_with_the_defaults() {
    let env = TestEnv::new("demo_advice");
    let (status, stdout, stderr) = run_demo(
        &env,
        &["--users", "20", "--senders", "1"],
        Duration::from_secs(120),
    )
    .await;
    assert!(status.success(), "demo: {status:?}\n{stdout}\n{stderr}");
    let advice: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("Pasted into a shell"))
        .skip(1)
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        advice
            .iter()
            .any(|l| l.contains("wxpush send &  wxpush send &")),
        "no commands after the demo:\n{stdout}"
    );
    assert!(
        advice
            .iter()
            .any(|l| l.contains(&format!("WXPUSH_APP_ID={TRY_APP} "))),
        "{advice:?}"
    );
    let fake = wxpush_testkit::free_addr();
    let script =
        format!("{}\nwait\n", advice.join("\n")).replace("127.0.0.1:8089", &fake.to_string());

    let log = std::env::temp_dir().join(format!("{}.log", env.ns));
    let mut shell = std::process::Command::new("bash");
    shell.arg("-c").arg(&script).env_clear();
    for keep in ["PATH", "HOME", "LANG"] {
        if let Ok(v) = std::env::var(keep) {
            shell.env(keep, v);
        }
    }
    // The test's namespace; Redis and RabbitMQ only where the suite was pointed elsewhere.
    shell.env("WXPUSH_NAMESPACE", env.ns.as_str());
    for var in ["WXPUSH_REDIS_URL", "WXPUSH_AMQP_URL"] {
        if let Ok(v) = std::env::var(var) {
            shell.env(var, v);
        }
    }
    let mut shell = shell
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("bash");
    let group = shell.id();
    let stop = move || {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{group}")])
            .status();
    };
    struct Stop<F: Fn()>(F);
    impl<F: Fn()> Drop for Stop<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _stop = Stop(stop);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Four roles, each serving its endpoints on a port of its own, every one of them ready.
    let ports = |text: &str| -> Vec<u16> {
        text.lines()
            .filter(|l| l.contains("serving /healthz, /readyz and /metrics on http://"))
            .filter_map(|l| {
                l.split("on http://")
                    .nth(1)?
                    .split([' ', ')'])
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let up = eventually(Duration::from_secs(60), || async {
        let p = ports(&read_log());
        if p.len() < 4 {
            return false;
        }
        for port in p {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if !matches!(http_get(addr, "/readyz").await, Some((200, _))) {
                return false;
            }
        }
        true
    })
    .await;
    let text = read_log();
    assert!(up, "four ready roles on their own ports:\n{text}");
    let mut found = ports(&text);
    found.sort_unstable();
    found.dedup();
    assert_eq!(found.len(), 4, "{found:?}\n{text}");
    assert!(!text.contains("cannot listen"), "{text}");
    assert!(
        text.contains("the default port 9464 is taken"),
        "at least three roles fell back from 9464:\n{text}"
    );

    // Users with formIds issued by the pasted fake, uploaded through ingest; a campaign.
    let users: Vec<String> = (0..30)
        .map(|i| format!("oAdvice{i:04}xxxxxxxxxxxxxxxxx"))
        .collect();
    let mut uploads = Vec::new();
    for u in &users {
        let (code, body) = http_post_json(fake, "/fake/formids", &json!({"openId": u, "count": 2}))
            .await
            .expect("the pasted fake answers");
        assert_eq!(code, 200, "{body}");
        let issued: serde_json::Value = serde_json::from_str(&body).expect("json");
        let ids: Vec<_> = issued["formIds"]
            .as_array()
            .expect("formIds")
            .iter()
            .map(|f| json!({"formId": f}))
            .collect();
        uploads.push(
            json!({"openId": u, "formIds": ids})
                .to_string()
                .into_bytes(),
        );
    }
    let deps = env.deps().await;
    env.publish_uploads(&deps.broker, &uploads).await;
    let me = OpenId::new(&users[users.len() - 1]).expect("openId");
    let app = AppId::new(TRY_APP).expect("appid");
    let stored = eventually(Duration::from_secs(30), || async {
        deps.bank.usable_count(&app, &me).await.unwrap_or(0) == 2
    })
    .await;
    assert!(
        stored,
        "uploads stored by the pasted ingest:\n{}",
        read_log()
    );
    let campaign = json!({"campaignId": "advice-1", "templateId": "TPL_DEMO",
                          "keywords": ["a", "b"], "audience": {"all": true}});
    let publisher = Publisher::open(&deps.broker, env.topology())
        .await
        .expect("publisher");
    publisher
        .publish(
            &env.topology().campaigns_exchange(),
            "c",
            campaign.to_string().as_bytes(),
            Default::default(),
        )
        .await
        .expect("publish the campaign");
    publisher.close().await;
    let all_once = eventually(Duration::from_secs(60), || async {
        let Some((200, body)) = http_get(fake, "/fake/stats").await else {
            return false;
        };
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        stats["sendsAccepted"] == users.len()
    })
    .await;
    let (_, body) = http_get(fake, "/fake/stats").await.expect("stats");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(all_once, "every user sent to:\n{stats}\n{}", read_log());
    for u in &users {
        assert_eq!(stats["sendsByOpenId"][u], 1, "{u}: {stats}");
    }
    drop(_stop);
    let _ = shell.wait();
    let _ = std::fs::remove_file(&log);
}
