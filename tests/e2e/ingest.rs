//! The ingest role end to end: the real `wxpush` binary (or the role in process where a
//! test must stop it at an exact step), the real RabbitMQ and Redis.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use serde_json::json;
use wxpush_bank::Bank;
use wxpush_domain::OpenId;
use wxpush_roles::ingest::{self, Ingest, IngestSettings, IngestStats};
use wxpush_roles::ShutdownTrigger;
use wxpush_testkit::{
    eventually, form_id, keys_with_ttl, now_ms, redis_url, terminate, TestEnv, TEST_APP,
};

const DAY_MS: i64 = 86_400_000;

fn user(n: usize) -> String {
    format!("oIngest{n:06}xxxxxxxxxxxxxxxx")
}

/// One upload of `count` formIds for user `n`.
fn upload(n: usize, count: u64) -> Vec<u8> {
    let ids: Vec<_> = (0..count)
        .map(|i| json!({"formId": form_id(n as u64, i), "expire": now_ms() + DAY_MS}))
        .collect();
    json!({"openId": user(n), "formIds": ids})
        .to_string()
        .into_bytes()
}

/// Credentials stored for each of `users` (ZCARD of their keys).
async fn stored_counts(bank: &Bank, env: &TestEnv, users: usize) -> Vec<u64> {
    let cmds = (0..users)
        .map(|n| {
            let mut cmd = redis::cmd("ZCARD");
            cmd.arg(
                bank.keys()
                    .credentials(&env.app, &OpenId::new(&user(n)).unwrap()),
            );
            cmd
        })
        .collect();
    bank.read_batch(cmds).await.unwrap()
}

/// Every key of the bank in the namespace with its members and scores (the redelivery counts,
/// `<ns>:rd:…`, which a redelivery is meant to raise, left out).
async fn snapshot(bank: &Bank, env: &TestEnv) -> BTreeMap<String, Vec<(Vec<u8>, f64)>> {
    let mut out = BTreeMap::new();
    let counts = format!("{}:rd:", env.ns);
    for (k, _) in keys_with_ttl(env).await {
        if k.starts_with(&counts) {
            continue;
        }
        let v: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
            .arg(&k)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut bank.connection())
            .await
            .unwrap();
        out.insert(k, v);
    }
    out
}

fn stderr_of(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ingests_uploads_and_stops_cleanly_on_sigterm() {
    let env = TestEnv::new("ingest_bin");
    let deps = env.deps().await;
    let child = env.spawn(&["ingest"]);
    // Every shape the contract allows: array, JSON string, appId, unknown fields.
    let mut bodies: Vec<Vec<u8>> = (0..150).map(|n| upload(n, 3)).collect();
    for n in 150..200 {
        let ids = json!([{"formId": form_id(n as u64, 0)}, {"formId": form_id(n as u64, 1)},
                         {"formId": form_id(n as u64, 2), "expire": now_ms() + DAY_MS}]);
        bodies.push(
            json!({"openId": user(n), "appId": TEST_APP, "formIds": ids.to_string(), "v": 2})
                .to_string()
                .into_bytes(),
        );
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            deps.broker.is_connected() && keys_or_queue_ready(&env, &deps).await
        })
        .await,
        "ingest declared its queue"
    );
    env.publish_uploads(&deps.broker, &bodies).await;
    let done = eventually(Duration::from_secs(30), || async {
        stored_counts(&deps.bank, &env, 200)
            .await
            .iter()
            .all(|&c| c == 3)
    })
    .await;
    assert!(
        done,
        "every upload stored: {:?}",
        stored_counts(&deps.bank, &env, 200).await
    );
    terminate(&child);
    let (status, stderr) = stderr_of(child);
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("ingest stopped"), "{stderr}");
    assert_eq!(
        env.queue_ready(&deps.broker, &env.topology().ingest_queue())
            .await,
        0
    );
}

/// True once the role has declared its topology: its dead-letter queue, declared after the
/// ingest queue is bound to the uploads exchange (an upload published to the exchange before
/// the binding exists is routed nowhere; quorum queues take long enough to declare for a test
/// to see that gap).
async fn keys_or_queue_ready(env: &TestEnv, deps: &wxpush_roles::Deps) -> bool {
    matches!(
        deps.broker
            .queue_ready(&env.topology().dead_queue("ingest"))
            .await,
        Ok(Some(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_their_reason_and_ingest_goes_on() {
    let mut env = TestEnv::new("ingest_poison");
    env.set("WXPUSH_MAX_MESSAGE_BYTES", "2048");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"\xff\xfe not utf-8".to_vec(),
        b"{not json".to_vec(),
        br#"{"formIds":[{"formId":"abc"}]}"#.to_vec(),
        br#"{"openId":"o1","formIds":[{"formId":"the formId is a mock one"}]}"#.to_vec(),
        json!({"openId": "o1", "formIds": [{"formId": "x", "expire": now_ms() - 1000}]})
            .to_string()
            .into_bytes(),
        json!({"openId": "o1", "appId": "wxsomeoneelse", "formIds": [{"formId": "abc"}]})
            .to_string()
            .into_bytes(),
        upload(0, 100), // over 2048 bytes
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()[..2000].to_vec(),
    ];
    // A message with some bad entries keeps the good ones; a good message follows the poison.
    bodies.push(
        json!({"openId": user(1), "formIds": [{"formId": ""}, {"formId": form_id(1, 0)}]})
            .to_string()
            .into_bytes(),
    );
    bodies.push(upload(2, 2));
    env.publish_uploads(&deps.broker, &bodies).await;

    let (trigger, shutdown) = ShutdownTrigger::new();
    let settings = IngestSettings::from_config(&env.config());
    let (d, t) = (deps.clone(), env.topology());
    let role = tokio::spawn(async move {
        ingest::run(&d, &t, &settings, &wxpush_roles::Health::new(), shutdown).await
    });
    let done = eventually(Duration::from_secs(20), || async {
        stored_counts(&deps.bank, &env, 3).await == vec![0, 1, 2]
    })
    .await;
    assert!(done, "good uploads stored");
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(env.drain_dead_letters(&deps.broker, "ingest").await);
        if dead.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trigger.trigger();
    let stats: IngestStats = role.await.unwrap().unwrap();
    let mut codes: Vec<&str> = dead.iter().map(|(_, code, _)| code.as_str()).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        vec![
            "missing_open_id",
            "no_usable_entry",
            "no_usable_entry",
            "not_json",
            "not_json",
            "not_utf8",
            "too_large",
            "unknown_app",
        ]
    );
    // The reason is readable and the original body is kept.
    let placeholder = dead
        .iter()
        .find(|(b, _, _)| b.starts_with(br#"{"openId":"o1","formIds":[{"formId":"the"#));
    let (_, _, reason) = placeholder.expect("placeholder message dead-lettered");
    assert!(reason.contains("devtools placeholder"), "{reason}");
    assert_eq!(stats.dead_lettered_total(), 8);
    assert_eq!(stats.rejected_entries, 1);
    assert_eq!(
        env.queue_ready(&deps.broker, &env.topology().ingest_queue())
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_redis_write_and_the_ack_changes_nothing() {
    let env = TestEnv::new("ingest_crash");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let bodies: Vec<Vec<u8>> = (0..50).map(|n| upload(n, 4)).collect();
    env.publish_uploads(&deps.broker, &bodies).await;

    // Take the uploads and store them, then "crash": close the channel without acking.
    let settings = IngestSettings::from_config(&env.config());
    let first = Ingest::start(&deps, &env.topology(), &settings)
        .await
        .unwrap();
    let mut consumer = first.consumer().await.unwrap();
    let (_trigger, mut shutdown) = ShutdownTrigger::new();
    let mut taken = 0;
    let mut stats = IngestStats::default();
    while taken < 50 {
        let batch = consumer.next_batch(500, usize::MAX).await.unwrap().unwrap();
        assert!(first
            .process(&batch, &mut stats, &mut shutdown)
            .await
            .unwrap());
        taken += batch.len();
    }
    assert_eq!(stats.store.added, 200);
    consumer.close().await;
    let before = snapshot(&deps.bank, &env).await;

    // The next ingest gets every message again; storing them again changes nothing.
    let (trigger, shutdown) = ShutdownTrigger::new();
    let (d, t, s) = (deps.clone(), env.topology(), settings.clone());
    let role = tokio::spawn(async move {
        ingest::run(&d, &t, &s, &wxpush_roles::Health::new(), shutdown).await
    });
    let drained = eventually(Duration::from_secs(20), || async {
        env.queue_ready(&deps.broker, &env.topology().ingest_queue())
            .await
            == 0
    })
    .await;
    assert!(drained);
    tokio::time::sleep(Duration::from_millis(300)).await;
    trigger.trigger();
    let again = role.await.unwrap().unwrap();
    assert_eq!(
        again.messages, 50,
        "every message was redelivered and settled"
    );
    assert_eq!((again.store.added, again.store.known), (0, 200));
    assert_eq!(snapshot(&deps.bank, &env).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_ingest_mid_stream_loses_no_upload() {
    let env = TestEnv::new("ingest_kill");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let users = 3000;
    let bodies: Vec<Vec<u8>> = (0..users).map(|n| upload(n, 2)).collect();
    env.publish_uploads(&deps.broker, &bodies).await;

    let mut child = env.spawn(&["ingest"]);
    // Kill it (SIGKILL) as soon as it has stored part of the queue.
    let started = eventually(Duration::from_secs(20), || async {
        stored_counts(&deps.bank, &env, users)
            .await
            .iter()
            .any(|&c| c > 0)
    })
    .await;
    assert!(started);
    child.kill().unwrap();
    let _ = child.wait();
    let partial: u64 = stored_counts(&deps.bank, &env, users).await.iter().sum();

    let child = env.spawn(&["ingest"]);
    let done = eventually(Duration::from_secs(60), || async {
        stored_counts(&deps.bank, &env, users)
            .await
            .iter()
            .all(|&c| c == 2)
    })
    .await;
    terminate(&child);
    let (status, stderr) = stderr_of(child);
    assert!(
        done,
        "all uploads stored after the restart (had {partial} before)"
    );
    assert!(status.success(), "{stderr}");
    let bank = Bank::connect(&redis_url(), env.ns.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        bank.usable_count(&env.app, &OpenId::new(&user(7)).unwrap())
            .await
            .unwrap(),
        2
    );
}

/// A namespace whose queues an older wxpush declared classic: a role started with the default
/// type (quorum) stops at once with one line and exit code 1 (RabbitMQ refuses a declaration
/// of another type; the role does not retry it in a loop), and with
/// `WXPUSH_QUEUE_TYPE=classic` it runs on those queues, storing what waited in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_with_classic_queues_stops_a_quorum_role_with_one_line() {
    let mut env = TestEnv::new("ingest_classic");
    env.set("WXPUSH_QUEUE_TYPE", "classic");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    env.publish_uploads(&deps.broker, &[upload(0, 2)]).await;

    let mut quorum = env.spawn_with(&["ingest"], &[("WXPUSH_QUEUE_TYPE", "quorum")]);
    let mut exited = None;
    for _ in 0..200 {
        if let Ok(Some(status)) = quorum.try_wait() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = exited else {
        let _ = quorum.kill();
        panic!("a quorum role on classic queues did not stop within 20 s");
    };
    let (_, stderr) = stderr_of(quorum);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("WXPUSH_QUEUE_TYPE"))
        .unwrap_or_else(|| panic!("no line about the queue type: {stderr}"));
    assert!(line.starts_with("wxpush: "), "{line}");
    assert!(
        line.contains("most likely they are classic queues")
            && line.contains("WXPUSH_QUEUE_TYPE=classic")
            && line.contains("docs/operations.md#quorum-queues"),
        "{line}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("retrying"),
        "{stderr}"
    );
    assert_eq!(stored_counts(&deps.bank, &env, 1).await, [0]);

    let classic = env.spawn(&["ingest"]);
    let stored = eventually(Duration::from_secs(20), || async {
        stored_counts(&deps.bank, &env, 1).await == [2]
    })
    .await;
    terminate(&classic);
    let (status, stderr) = stderr_of(classic);
    assert!(stored, "the classic role stored the upload: {stderr}");
    assert!(status.success(), "{stderr}");
}

/// Quorum queues (the default): the ingest queue is one (a classic declaration of it is
/// refused), and a message that keeps coming back unsettled past the queue's delivery limit,
/// as one that crashes its consumer every time would, goes to the dead-letter queue with
/// RabbitMQ's reason instead of being dropped or delivered for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_dead_letters_a_message_past_its_delivery_limit() {
    use lapin::options::{BasicGetOptions, BasicRejectOptions, QueueDeclareOptions};
    let env = TestEnv::new("ingest_quorum");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let queue = env.topology().ingest_queue();
    let ch = deps.broker.channel().await.unwrap();
    let classic = ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    let refused = classic.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("inequivalent arg"), "{refused}");

    let body = upload(0, 1);
    env.publish_uploads(&deps.broker, std::slice::from_ref(&body))
        .await;
    let ch = deps.broker.channel().await.unwrap();
    let mut deliveries = 0;
    loop {
        let got = ch
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        let Some(m) = got else { break };
        deliveries += 1;
        assert!(deliveries <= 60, "still delivered after 60 rejections");
        m.delivery
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .unwrap();
    }
    assert_eq!(
        i64::from(deliveries),
        wxpush_broker::topology::DELIVERY_LIMIT + 1,
        "delivered up to the limit"
    );
    let dead = env.topology().dead_queue("ingest");
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.queue_ready(&deps.broker, &dead).await == 1
        })
        .await,
        "the message is in {dead}"
    );
    let m = ch
        .basic_get(dead.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the dead letter");
    let reason = m
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-first-death-reason").cloned());
    assert!(
        matches!(&reason, Some(lapin::types::AMQPValue::LongString(r)) if r.as_bytes() == b"delivery_limit"),
        "{reason:?}"
    );
    assert_eq!(m.delivery.data, body, "the dead letter keeps the body");
}

/// A message published again with a broker delivery count in its headers (a dead letter an
/// older wxpush copied with it, replayed) is on its first delivery: stored, not dead-lettered
/// as `redelivered` unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_message_carrying_a_delivery_count_is_a_first_delivery() {
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let env = TestEnv::new("ingest_replayed");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let ch = deps.broker.channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(19));
    ch.basic_publish(
        env.topology().uploads_exchange().into(),
        "upload".into(),
        BasicPublishOptions::default(),
        &upload(0, 2),
        lapin::BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = ch.close(200, "ok".into()).await;
    let settings = IngestSettings::from_config(&env.config());
    let ingest = Ingest::start(&deps, &env.topology(), &settings)
        .await
        .unwrap();
    let (_trigger, shutdown) = ShutdownTrigger::new();
    let stats = ingest.consume(shutdown, Some(1)).await.unwrap();
    assert_eq!(stats.dead_lettered_total(), 0, "{stats:?}");
    assert_eq!(stored_counts(&deps.bank, &env, 1).await, [2]);
}
