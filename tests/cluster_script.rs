//! `scripts/cluster.sh` does what it says: `up` starts a 6-node Redis Cluster (3 primaries, 3
//! replicas, every slot served) and a 3-node RabbitMQ cluster on their own ports, a second `up`
//! changes nothing, `env` prints only `export WXPUSH_...=value` lines and the node line,
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
