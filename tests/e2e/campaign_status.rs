//! `wxpush campaign status` against the real Redis: the test writes a campaign's two hashes as
//! the dispatcher and the senders would (`<ns>:camp:{<app>.<n>}:<id>`, `<ns>:cs:{<app>.<shard>}:<id>`), runs the binary,
//! and checks the table, the JSON, `--watch` until completion or Ctrl-C, counters without a
//! dispatch record, unknown campaigns and junk values.

use std::collections::HashMap;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wxpush_bank::record::{self, field};
use wxpush_testkit::{now_ms, run, stderr, stdout, TestEnv};

/// How long a `--watch` run may take before the test calls it hung.
const GUARD: Duration = Duration::from_secs(8);

fn conn() -> Box<dyn redis::ConnectionLike> {
    wxpush_testkit::redis_nodes::sync_conn()
}

fn key(env: &TestEnv, hash: &str, id: &str) -> String {
    match hash {
        // The counters live in one hash per shard; the status sums them, so shard 0 will do.
        "cs" => wxpush_bank::Keys::new(env.ns.clone()).campaign_counters(&env.app, 0, id),
        _ => record::record_key(&env.ns, &env.app, id),
    }
}

/// HSET of the given fields into the record (`camp`) or the counters (`cs`) of campaign `id`.
fn hset(env: &TestEnv, hash: &str, id: &str, fields: &[(&str, String)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key(env, hash, id));
    for (f, v) in fields {
        cmd.arg(*f).arg(v);
    }
    let _: i64 = cmd.query(&mut *conn()).expect("HSET");
}

/// The dispatcher's record: dispatched, `targeted` jobs, started a minute ago.
fn record(env: &TestEnv, id: &str, state: &str, targeted: u64) {
    let now = now_ms();
    hset(
        env,
        "camp",
        id,
        &[
            (field::APP, env.app.to_string()),
            (field::KIND, "template".into()),
            (field::TEMPLATE_ID, "TPL_SIGNIN".into()),
            (field::AUDIENCE, "all".into()),
            (field::STATE, state.into()),
            (field::TARGETED, targeted.to_string()),
            (field::STARTED_AT_MS, (now - 60_000).to_string()),
            (field::DISPATCHED_AT_MS, (now - 59_000).to_string()),
            (field::CURSOR, "0".into()),
        ],
    );
}

/// Counters of 9 final outcomes out of 10: one job still pending.
fn counters_nine_of_ten(env: &TestEnv, id: &str) {
    hset(
        env,
        "cs",
        id,
        &[
            ("sent", "6".into()),
            ("sent_unconfirmed", "1".into()),
            ("no_credential", "1".into()),
            ("failed:40037", "1".into()),
            ("retried", "3".into()),
            ("last_at_ms", (now_ms() - 1000).to_string()),
        ],
    );
}

fn status_json(env: &TestEnv, id: &str) -> Value {
    let out = run(env, &["campaign", "status", id, "--json"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one JSON object: {text}"
    );
    serde_json::from_str(&text).expect("--json prints JSON")
}

/// The human table as label → value (columns are separated by two spaces or more).
fn table(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once("  ")?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Waits for a child with a guard against hanging; kills it and fails past the guard.
fn wait_guarded(mut child: Child, guard: Duration) -> (Output, Duration) {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if start.elapsed() > guard {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "wxpush did not end within {guard:?}; stdout: {} stderr: {}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let took = start.elapsed();
    (child.wait_with_output().expect("output"), took)
}

fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    env.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wxpush")
}

#[test]
fn the_table_shows_the_counts_and_what_is_pending() {
    let env = TestEnv::new("status_table");
    record(&env, "signin-1", "dispatched", 10);
    counters_nine_of_ten(&env, "signin-1");
    let out = run(&env, &["campaign", "status", "signin-1"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let t = table(&text);
    let want = [
        ("campaign", "signin-1"),
        ("app", env.app.as_str()),
        ("template", "TPL_SIGNIN"),
        ("state", "dispatched"),
        ("targeted", "10"),
        ("recipients", "10"),
        ("sent", "6"),
        ("sent (unconfirmed)", "1"),
        ("no credential", "1"),
        ("failed", "1"),
        ("40037 (bad template)", "1"),
        ("dead-lettered", "0"),
        ("duplicates skipped", "0"),
        ("retried", "3"),
        ("pending", "1"),
        ("finished", "-"),
    ];
    for (k, v) in want {
        assert_eq!(t.get(k).map(String::as_str), Some(v), "{k} in:\n{text}");
    }
    assert!(t["started"].ends_with(" UTC"), "{text}");
    assert!(t["elapsed"].starts_with("1m "), "{text}");
    assert!(t["rate"].ends_with("sent/s"), "{text}");
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn json_has_the_numbers_under_stable_keys() {
    let env = TestEnv::new("status_json");
    record(&env, "signin-2", "dispatched", 10);
    counters_nine_of_ten(&env, "signin-2");
    let j = status_json(&env, "signin-2");
    assert_eq!(j["campaign_id"], "signin-2");
    assert_eq!(j["app"], env.app.as_str());
    assert_eq!(j["template_id"], "TPL_SIGNIN");
    assert_eq!(j["state"], "dispatched");
    assert_eq!(j["targeted"], 10);
    assert_eq!(j["recipients"], 10);
    assert_eq!(j["sent"], 6);
    assert_eq!(j["sent_unconfirmed"], 1);
    assert_eq!(j["no_credential"], 1);
    assert_eq!(j["failed"]["total"], 1);
    assert_eq!(j["failed"]["by_code"]["40037"], 1);
    assert_eq!(j["dead_lettered"], 0);
    assert_eq!(j["duplicate"], 0);
    assert_eq!(j["retried"], 3);
    assert_eq!(j["pending"], 1);
    assert_eq!(j["complete"], false);
    assert!(j["started_at_ms"].is_i64());
    assert!(j["dispatched_at_ms"].is_i64());
    assert!(j["finished_at_ms"].is_null());
    assert!(j["sent_per_sec"].is_f64());
}

#[test]
fn a_complete_campaign_says_so() {
    let env = TestEnv::new("status_complete");
    // Nine recipients, all settled; one duplicate job on top is not a recipient.
    record(&env, "done-1", "dispatched", 9);
    counters_nine_of_ten(&env, "done-1");
    hset(&env, "cs", "done-1", &[("duplicate", "1".into())]);
    let j = status_json(&env, "done-1");
    assert_eq!(j["complete"], true);
    assert_eq!(j["state"], "complete");
    assert_eq!(j["pending"], 0);
    assert_eq!(j["recipients"], 9);
    assert!(j["finished_at_ms"].is_i64(), "{j}");
    assert!(
        j["elapsed_ms"].as_i64().is_some_and(|ms| ms >= 58_000),
        "{j}"
    );

    let out = run(&env, &["campaign", "status", "done-1"]);
    let t = table(&stdout(&out));
    assert_eq!(t["state"], "complete");
    assert_eq!(t["duplicates skipped"], "1");
    assert!(t["finished"].ends_with(" UTC"));

    // Every job published but outcomes still coming: not complete while dispatching either.
    record(&env, "disp-1", "dispatching", 9);
    counters_nine_of_ten(&env, "disp-1");
    let j = status_json(&env, "disp-1");
    assert_eq!(j["pending"], 0);
    assert_eq!(j["complete"], false);
    assert_eq!(j["state"], "dispatching");
}

#[test]
fn an_unknown_campaign_is_one_line_and_a_failure() {
    let env = TestEnv::new("status_unknown");
    for args in [
        &["campaign", "status", "nope"][..],
        &["campaign", "status", "nope", "--json"][..],
        &["campaign", "status", "nope", "--watch"][..],
    ] {
        let out = run(&env, args);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "wxpush: no campaign nope of app {} in namespace {}",
                env.app, env.ns
            )
        );
        assert!(stdout(&out).is_empty());
    }
    // An app that is not configured: what was looked for, and what is configured.
    let out = run(&env, &["campaign", "status", "nope", "--app", "wxpush"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        format!(
            "wxpush: no campaign nope of app wxpush in namespace {} (configured: {})",
            env.ns, env.app
        )
    );
}

#[test]
fn counters_without_a_dispatch_record_still_show() {
    let env = TestEnv::new("status_norecord");
    hset(
        &env,
        "cs",
        "direct-1",
        &[("sent", "4".into()), ("failed:40003", "2".into())],
    );
    let j = status_json(&env, "direct-1");
    assert_eq!(j["state"], "unknown");
    assert_eq!(j["has_dispatch_record"], false);
    assert!(j["targeted"].is_null());
    assert!(j["pending"].is_null());
    assert_eq!(j["sent"], 4);
    assert_eq!(j["failed"]["by_code"]["40003"], 2);
    assert_eq!(j["complete"], false);

    let out = run(&env, &["campaign", "status", "direct-1"]);
    assert!(out.status.success());
    let t = table(&stdout(&out));
    assert_eq!(t["state"], "unknown (no dispatch record)");
    assert_eq!(t["targeted"], "unknown");
    assert_eq!(t["pending"], "unknown");
    assert_eq!(t["40003 (bad openId)"], "2");
}

#[test]
fn junk_in_a_counter_is_a_warning_not_a_crash() {
    let env = TestEnv::new("status_junk");
    record(&env, "junk-1", "dispatched", 10);
    hset(
        &env,
        "cs",
        "junk-1",
        &[("sent", "six".into()), ("no_credential", "2".into())],
    );
    let out = run(&env, &["campaign", "status", "junk-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("warning: cs field sent is not a count"),
        "{text}"
    );
    assert_eq!(table(&text)["pending"], "8");
    let j = status_json(&env, "junk-1");
    assert_eq!(j["sent"], 0);
    assert_eq!(j["warnings"].as_array().map(Vec::len), Some(1));
}

#[test]
fn watch_ends_when_the_campaign_completes() {
    let env = TestEnv::new("status_watch");
    record(&env, "live-1", "dispatched", 10);
    counters_nine_of_ten(&env, "live-1");
    let child = spawn(&env, &["campaign", "status", "live-1", "--watch"]);
    // The last outcome arrives about a second later, as a sender would record it.
    std::thread::sleep(Duration::from_millis(1000));
    let _: i64 = redis::cmd("HINCRBY")
        .arg(key(&env, "cs", "live-1"))
        .arg("sent")
        .arg(1)
        .query(&mut *conn())
        .unwrap();
    let (out, _) = wait_guarded(child, GUARD);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let bar = stderr(&out);
    assert!(
        bar.contains('\r'),
        "a progress line redrawn in place: {bar:?}"
    );
    assert!(bar.contains(" 90% 9/10"), "{bar:?}");
    assert!(bar.contains("pending 1"), "{bar:?}");
    let t = table(&stdout(&out));
    assert_eq!(t["state"], "complete");
    assert_eq!(t["sent"], "7");
    assert_eq!(t["pending"], "0");

    // Already complete: the final table at once.
    let child = spawn(&env, &["campaign", "status", "live-1", "--watch"]);
    let (out, took) = wait_guarded(child, GUARD);
    assert!(out.status.success());
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(table(&stdout(&out))["state"], "complete");
}

#[test]
fn json_watch_prints_a_line_per_refresh_until_complete() {
    let env = TestEnv::new("status_watch_json");
    record(&env, "live-2", "dispatching", 5);
    counters_nine_of_ten(&env, "live-2");
    let child = spawn(&env, &["campaign", "status", "live-2", "--watch", "--json"]);
    std::thread::sleep(Duration::from_millis(1200));
    hset(
        &env,
        "camp",
        "live-2",
        &[
            (field::STATE, record::DISPATCHED.into()),
            (field::TARGETED, "9".into()),
        ],
    );
    let (out, _) = wait_guarded(child, GUARD);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert_eq!(lines[0]["state"], "dispatching");
    assert_eq!(lines[0]["complete"], false);
    let last = lines.last().unwrap();
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(last["targeted"], 9);
    assert_eq!(last["pending"], 0);
    assert!(lines.iter().all(|l| l["sent"] == 6));
}

#[cfg(unix)]
#[test]
fn watch_stops_cleanly_on_ctrl_c_or_sigterm() {
    use std::io::Read;
    let env = TestEnv::new("status_watch_int");
    record(&env, "live-3", "dispatched", 10);
    counters_nine_of_ten(&env, "live-3");
    for sig in ["-INT", "-TERM"] {
        let mut child = spawn(&env, &["campaign", "status", "live-3", "--watch"]);
        // Read stderr as it comes, to signal only once the progress line is drawn.
        let mut pipe = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
                let _ = tx.send(());
            }
            String::from_utf8_lossy(&all).into_owned()
        });
        assert!(
            rx.recv_timeout(GUARD).is_ok(),
            "{sig}: no progress line drawn"
        );
        let killed = std::process::Command::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(killed.success());
        let (out, _) = wait_guarded(child, GUARD);
        let err = reader.join().expect("stderr reader");
        assert!(out.status.success(), "{sig}: stderr: {err}");
        assert!(err.contains("pending 1"), "{err:?}");
        assert!(err.ends_with('\n'), "the progress line is ended: {err:?}");
        assert!(stdout(&out).is_empty(), "no final table when stopped");
    }
}

#[test]
fn an_unreachable_redis_is_one_line_without_the_password() {
    let mut env = TestEnv::new("status_noredis");
    env.set("WXPUSH_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0");
    let out = run(&env, &["campaign", "status", "x"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("wxpush: cannot connect to Redis at redis://127.0.0.1:1/0"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_campaign_is_found_in_whichever_app_holds_it_and_two_apps_need_app() {
    const B: &str = "wxfedcba0987654321";
    let mut env = TestEnv::new("status_apps");
    let file = std::env::temp_dir().join(format!("{}.toml", env.ns));
    std::fs::write(
        &file,
        format!(
            "[[apps]]\nappid = \"{}\"\n[[apps]]\nappid = \"{B}\"\n",
            env.app
        ),
    )
    .unwrap();
    env.set("WXPUSH_CONFIG", &file.to_string_lossy());
    let b = wxpush_domain::AppId::new(B).unwrap();
    // B's records, written as the dispatcher and senders of app B would.
    let in_b = |id: &str, targeted: &str| {
        let record = record::record_key(&env.ns, &b, id);
        let counters = wxpush_bank::Keys::new(env.ns.clone()).campaign_counters(&b, 0, id);
        let _: () = redis::pipe()
            .hset_multiple(
                &record,
                &[
                    (field::APP, B),
                    (field::STATE, record::DISPATCHED),
                    (field::TARGETED, targeted),
                    (field::KIND, "subscribe"),
                ],
            )
            .hset(&counters, "sent", targeted)
            .query(&mut *conn())
            .unwrap();
    };
    in_b("only-b", "3");
    in_b("shared-1", "5");
    record(&env, "shared-1", "dispatched", 10);
    counters_nine_of_ten(&env, "shared-1");

    let j = status_json(&env, "only-b");
    assert_eq!(
        (j["app"].as_str(), j["sent"].as_u64()),
        (Some(B), Some(3)),
        "{j}"
    );
    let out = run(&env, &["campaign", "status", "shared-1"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "wxpush: campaign shared-1 exists for several apps ({}, {B}): pass --app",
            env.app
        )
    );
    for (app, targeted) in [(B, 5), (env.app.as_str(), 10)] {
        let out = run(
            &env,
            &["campaign", "status", "shared-1", "--app", app, "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let j: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(j["app"].as_str(), Some(app), "{j}");
        assert_eq!(j["targeted"].as_u64(), Some(targeted), "{j}");
    }
    let _ = std::fs::remove_file(&file);
}
