//! `scripts/cluster.sh` does what it says: `up` starts a 6-node Redis Cluster (3 primaries, 3
//! replicas, every slot served) and a 3-node RabbitMQ cluster on their own ports (on which
//! `wxpush ingest` rides out its node stopping, and a campaign the send queue's leader and the
//! roles' node stopping in turn), a second `up` changes nothing, `env` prints only `export WXPUSH_...=value` lines and the node line,
//! and `down` stops every one of them and removes their data while the machine's single-node
//! Redis and RabbitMQ go on answering.
//!
//! Ignored in a plain `cargo test`: its RabbitMQ nodes run as the `rabbitmq` user, so it needs
//! root (or passwordless sudo), and it tears down a cluster a developer may have brought up.
//! `scripts/test.sh` (the README's test command) runs it where root is at hand and says so
//! where it is not.

use std::process::Command;
use std::time::Duration;

fn cluster(arg: &str) -> String {
    let out = Command::new("scripts/cluster.sh")
        .arg(arg)
        .output()
        .expect("run scripts/cluster.sh");
    assert!(
        out.status.success(),
        "scripts/cluster.sh {arg}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        .is_ok()
}

fn redis_info(port: u16, section: &str) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
    let mut conn = client.get_connection().expect("connect to a cluster node");
    redis::cmd("CLUSTER")
        .arg(section)
        .query::<String>(&mut conn)
        .expect("CLUSTER")
}

fn process_id(port: u16) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
    let mut conn = client.get_connection().expect("connect to a cluster node");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut conn)
        .expect("INFO");
    field(&info, "process_id").to_owned()
}

fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or("")
}

#[test]
#[ignore = "needs root for its RabbitMQ nodes; run by scripts/test.sh"]
fn cluster_script_brings_both_clusters_up_and_down_beside_the_single_nodes() {
    cluster("up");
    let info = redis_info(7000, "INFO");
    assert_eq!(field(&info, "cluster_state"), "ok", "{info}");
    assert_eq!(field(&info, "cluster_known_nodes"), "6", "{info}");
    assert_eq!(field(&info, "cluster_size"), "3", "{info}");
    assert_eq!(field(&info, "cluster_slots_assigned"), "16384", "{info}");
    let nodes = redis_info(7000, "NODES");
    assert_eq!(nodes.lines().filter(|l| l.contains("master")).count(), 3);
    assert_eq!(nodes.lines().filter(|l| l.contains("slave")).count(), 3);
    for port in 5701..=5703 {
        assert!(answers(port), "RabbitMQ node on {port}");
    }

    // The node line names a node of one cluster holding all three.
    let env = cluster("env");
    let node = env
        .lines()
        .find_map(|l| l.strip_prefix("# rabbitmq node: "))
        .expect("a node line")
        .to_owned();
    let status = Command::new("rabbitmqctl")
        .args(["-q", "-n", &node, "cluster_status", "--formatter", "json"])
        .output()
        .expect("rabbitmqctl");
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("cluster_status as JSON");
    let running = status["running_nodes"].as_array().expect("running_nodes");
    assert_eq!(running.len(), 3, "{status}");
    for line in env.lines().filter(|l| !l.starts_with("# rabbitmq node: ")) {
        let (name, value) = line
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
            .unwrap_or_else(|| panic!("not an export line: {line}"));
        assert!(name.starts_with("WXPUSH_"), "{line}");
        assert!(
            !value.is_empty() && !value.contains(char::is_whitespace),
            "{line}"
        );
    }
    assert!(env.contains("export WXPUSH_REDIS_URL="));
    assert!(env.contains("export WXPUSH_AMQP_URL="));

    let amqp = env
        .lines()
        .find_map(|l| l.strip_prefix("export WXPUSH_AMQP_URL="))
        .expect("the broker nodes")
        .to_owned();
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(ingest_rides_out_its_broker_node_stopping(&amqp, &node));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(
            a_campaign_rides_out_the_send_queue_leader_and_the_roles_node_stopping(&amqp, &node),
        );

    // A second `up` finds both running and leaves them as they are (the same processes).
    let before: Vec<String> = (7000..=7005).map(process_id).collect();
    cluster("up");
    let after: Vec<String> = (7000..=7005).map(process_id).collect();
    assert_eq!(before, after, "a second up restarted Redis nodes");
    assert_eq!(field(&redis_info(7000, "INFO"), "cluster_known_nodes"), "6");

    cluster("down");
    for port in (7000..=7005).chain(5701..=5703) {
        assert!(!answers(port), "port {port} still answers after down");
    }
    assert!(
        !std::path::Path::new(
            &std::env::var("WXPUSH_CLUSTER_DIR").unwrap_or("/tmp/wxpush-cluster".into())
        )
        .exists(),
        "the clusters' data is removed"
    );
    assert!(answers(6379), "the single-node Redis still answers");
    assert!(answers(5672), "the single-node RabbitMQ still answers");
}

/// `wxpush ingest` on the broker cluster (its three nodes in `WXPUSH_AMQP_URL`, quorum queues,
/// the single-node Redis): the node it is connected to (the first listed) stops; its quorum
/// queue goes on on the other two, the role reconnects to the next node, and every upload,
/// published before and after through another node, is stored.
async fn ingest_rides_out_its_broker_node_stopping(amqp: &str, first_node: &str) {
    use wxpush_testkit::{eventually, form_id, now_ms, terminate, TestEnv};
    let urls: Vec<&str> = amqp.split(',').collect();
    assert_eq!(urls.len(), 3, "{amqp}");
    let mut env = TestEnv::new("cluster_ingest");
    env.set("WXPUSH_AMQP_URL", amqp);
    env.set(
        "WXPUSH_LOG",
        "warn,wxpush_roles=info,wxpush_roles::deps=info",
    );
    let bank = wxpush_bank::Bank::connect(
        &wxpush_testkit::redis_url(),
        env.ns.clone(),
        wxpush_bank::BankSettings::from_config(&env.config()),
    )
    .await
    .expect("the single-node Redis");
    // Uploads go in through the third node, which stays up.
    let publisher_broker =
        wxpush_broker::Broker::connect(urls[2], "cluster-test", Duration::from_secs(10))
            .await
            .expect("the third node");
    let topology = env.topology();
    let ch = publisher_broker.channel().await.expect("channel");
    topology
        .declare_ingest(&ch)
        .await
        .expect("declare on the cluster");
    let publisher = wxpush_broker::Publisher::open(&publisher_broker, topology.clone())
        .await
        .expect("publisher");
    let upload = |u: usize| {
        serde_json::json!({
            "openId": format!("oClu{u:06}xxxxxxxxxxxxxxxxxxxx"),
            "formIds": [{"formId": form_id(u as u64, 0), "expire": now_ms() + 86_400_000}],
        })
        .to_string()
        .into_bytes()
    };
    let stored = |from: usize, to: usize| {
        let bank = &bank;
        let app = env.app.clone();
        async move {
            for u in from..to {
                let who = wxpush_domain::OpenId::new(&format!("oClu{u:06}xxxxxxxxxxxxxxxxxxxx"))
                    .expect("openId");
                if bank.usable_count(&app, &who).await.unwrap_or(0) < 1 {
                    return false;
                }
            }
            true
        }
    };
    let publish = |from: usize, to: usize| {
        let bodies: Vec<Vec<u8>> = (from..to).map(upload).collect();
        let (publisher, exchange) = (&publisher, topology.uploads_exchange());
        async move {
            publisher
                .publish_all(&exchange, bodies.iter().map(|b| ("upload", b.as_slice())))
                .await
                .expect("publish uploads");
        }
    };

    let role = env.spawn(&["ingest"]);
    publish(0, 200).await;
    assert!(
        eventually(Duration::from_secs(30), || stored(0, 200)).await,
        "stored through the first node"
    );
    let stop = Command::new("rabbitmqctl")
        .args(["-q", "-n", first_node, "stop_app"])
        .status()
        .expect("rabbitmqctl stop_app");
    assert!(stop.success(), "stop_app {first_node}");
    publish(200, 400).await;
    let after = eventually(Duration::from_secs(60), || stored(200, 400)).await;
    let start = Command::new("rabbitmqctl")
        .args(["-q", "-n", first_node, "start_app"])
        .status()
        .expect("rabbitmqctl start_app");
    assert!(after, "stored after the role's node stopped");
    assert!(start.success(), "start_app {first_node}");
    terminate(&role);
    let out = role.wait_with_output().expect("the role ends");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("connected to RabbitMQ") && log.contains(":5702"),
        "the role moved to the second node: {log}"
    );
    publisher_broker.close().await;
    println!(
        "ingest on the broker cluster: 400 uploads stored, 200 of them after {first_node} (its \
         node) stopped; it reconnected to the next node"
    );
}

/// The quorum send queue's leader (`rabbitmqctl list_queues name leader`), asked of `node`.
fn leader_of(node: &str, queue: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "-n",
            node,
            "list_queues",
            "name",
            "leader",
            "--formatter",
            "json",
        ])
        .output()
        .expect("rabbitmqctl list_queues");
    let queues: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("list_queues as JSON");
    queues
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
        .and_then(|q| q["leader"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no leader for {queue}: {queues}"))
}

/// The namespace's queues as a live node of the cluster sees them (messages ready and
/// unacknowledged, consumers, leader, members online), for a failure's message.
fn queue_state(a: &str, b: &str, ns: &str) -> String {
    [a, b]
        .iter()
        .find_map(|node| {
            let out = Command::new("rabbitmqctl")
                .args(["-q", "-n", node, "list_queues", "name", "messages_ready"])
                .args(["messages_unacknowledged", "consumers", "leader", "online"])
                .output()
                .ok()?;
            out.status.success().then(|| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains(ns))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        })
        .unwrap_or_else(|| "(no node answered rabbitmqctl)".into())
}

fn rabbit_app(node: &str, action: &str) {
    let ok = Command::new("rabbitmqctl")
        .args(["-q", "-n", node, action])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "rabbitmqctl -n {node} {action}");
}

/// A campaign on the broker cluster (every role given the three nodes, the first listed
/// being the one they connect to; quorum queues; the single-node Redis): the node leading the
/// send queue stops mid-campaign, then, once it is back, the node the roles are connected to
/// (the same one if it led). The queue's leadership moves to a live node, the roles reconnect
/// to the next node listed, and the campaign completes: every user messaged once, nobody
/// twice, no formId used twice.
async fn a_campaign_rides_out_the_send_queue_leader_and_the_roles_node_stopping(
    amqp: &str,
    first_node: &str,
) {
    use wxpush_testkit::eventually;
    use wxpush_testkit::fleet::{campaign, Fleet};
    let mut f = Fleet::new("cluster_campaign", 150, 100).await;
    f.env.set("WXPUSH_AMQP_URL", amqp);
    f.deps = f.env.deps().await;
    let reachable = f.users(0, 600, 2).await;
    let vars = [(
        "WXPUSH_LOG",
        "warn,wxpush_roles::deps=info,wxpush_roles::supervise=info",
    )];
    // Every role's log is read as it is written (a chatty role never blocks on a full pipe)
    // and shown when a step fails.
    let logs: Vec<(&str, wxpush_testkit::CapturedStderr)> = ["dispatch", "send", "send"]
        .into_iter()
        .map(|role| {
            let i = f.start_with(role, &vars);
            (
                role,
                wxpush_testkit::CapturedStderr::take(&mut f.children[i]),
            )
        })
        .collect();
    let show = || {
        logs.iter()
            .map(|(role, log)| format!("--- {role}:\n{}", log.text()))
            .collect::<String>()
    };
    f.publish_campaign(campaign("leader", serde_json::json!({"all": true})))
        .await;
    let sent = |f: &Fleet| {
        let (bank, app) = (f.deps.bank.clone(), f.env.app.clone());
        async move {
            wxpush_roles::outcomes::read(&bank, &app, "leader")
                .await
                .map(|c| c.get("sent").copied().unwrap_or(0))
                .unwrap_or(0)
        }
    };
    let queue = f.env.topology().send_queue();
    let leader = leader_of(first_node, &queue);
    let mut stopped = vec![leader.clone()];
    if leader != first_node {
        stopped.push(first_node.to_owned());
    }
    let mut at = 0;
    for (i, node) in stopped.iter().enumerate() {
        at += 120;
        assert!(
            eventually(Duration::from_secs(60), || async { sent(&f).await >= at }).await,
            "{at} sent before stopping {node}"
        );
        rabbit_app(node, "stop_app");
        let during = sent(&f).await;
        let moved_on = eventually(Duration::from_secs(60), || async {
            sent(&f).await >= during + 60
        })
        .await;
        rabbit_app(node, "start_app");
        assert!(
            moved_on,
            "the campaign went on while {node} was stopped ({} of {}): {} sent before, {} \
             after 60 s\nqueues: {}\n{}",
            i + 1,
            stopped.len(),
            during,
            sent(&f).await,
            queue_state(first_node, &stopped[0], f.env.ns.as_str()),
            show()
        );
        let ask = if node == first_node {
            stopped[0].as_str()
        } else {
            first_node
        };
        println!(
            "broker node {node} stopped mid-campaign; send queue led by {} after",
            leader_of(ask, &queue)
        );
    }
    f.wait_complete("leader", Duration::from_secs(180)).await;
    f.check("leader", &reachable, 600).await;
    let mut seen = std::collections::HashSet::new();
    for r in f.fake.requests() {
        if let (Some(0), Some(id)) = (r.errcode, r.form_id) {
            assert!(seen.insert(id.clone()), "formId {id} accepted twice");
        }
    }
    f.stop_all();
}
