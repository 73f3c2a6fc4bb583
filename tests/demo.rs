//! `wxpush demo` end to end: the real binary runs ingest, dispatch and two senders as child
//! processes against a fake WeChat, sends a formId campaign and a subscribe campaign to 300
//! generated users, reports both, and must pass every one of its checks and leave its
//! namespace empty.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use wxpush_testkit::{keys_with_ttl, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_its_checks_and_cleans_up() {
    let env = TestEnv::new("demo");
    let mut child = env
        .command(&["demo", "--users", "300", "--senders", "2"])
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
    let guard = Duration::from_secs(120);
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
    assert!(
        status.success(),
        "exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
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
        "roles stopped cleanly",
    ] {
        assert!(stdout.contains(check), "{check:?} missing:\n{stdout}");
    }
    assert_eq!(
        stdout.matches("✓ outcomes add up").count(),
        2,
        "both campaigns' outcomes add up:\n{stdout}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");
    // Without --keep the demo deletes its namespace.
    let left = keys_with_ttl(&env).await;
    assert!(left.is_empty(), "keys left behind: {left:?}");
}
