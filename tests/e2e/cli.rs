//! The command line as an operator meets it: help, configuration errors and unreachable
//! dependencies, each one readable line and a non-zero exit, secrets never printed;
//! `wxpush healthcheck`, and what a sender says at start about a plain-http WeChat base.

use std::time::Duration;

use wxpush_testkit::{eventually, free_addr, http_get, terminate, CapturedStderr, TestEnv};

fn run(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let out = env.command(args).output().expect("run wxpush");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_failure(code: i32, stderr: &str, expect: &str) {
    assert_ne!(code, 0);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("wxpush: "), "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

/// Several broker nodes, none answering: one line naming each node (never a password) with
/// its reason, and a non-zero exit.
#[test]
fn no_listed_broker_node_answering_is_one_line_naming_each() {
    let mut env = TestEnv::new("cli_amqp_nodes");
    env.set(
        "WXPUSH_AMQP_URL",
        "amqp://guest:s3cr%2Fet@127.0.0.1:1/%2f,amqp://guest:s3cr%2Fet@127.0.0.1:2/%2f",
    );
    let (code, stderr) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &stderr,
        "cannot reach RabbitMQ at amqp://127.0.0.1:1/%2f,amqp://127.0.0.1:2/%2f: no node answered (amqp://127.0.0.1:1/%2f: ",
    );
    assert!(stderr.contains("; amqp://127.0.0.1:2/%2f: "), "{stderr}");
    assert!(!stderr.contains("s3cr"), "{stderr}");
}

/// Several Redis URLs are a Redis Cluster's seed nodes: when none answers, one line names
/// them (passwords masked) and the role exits 1; a socket among them is refused as such.
#[test]
fn several_redis_urls_are_cluster_seeds_and_failing_ones_are_one_line() {
    let mut env = TestEnv::new("cli_redis_nodes");
    env.set(
        "WXPUSH_REDIS_URL",
        "redis://:pw@127.0.0.1:1/0,redis://:pw@127.0.0.1:2/0",
    );
    let (code, stderr) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &stderr,
        "cannot reach Redis at redis://127.0.0.1:1/0,redis://127.0.0.1:2/0: ",
    );
    assert!(!stderr.contains("pw"), "{stderr}");

    env.set(
        "WXPUSH_REDIS_URL",
        "redis://127.0.0.1:7000/0,unix:///tmp/redis.sock",
    );
    let (code, stderr) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &stderr,
        "redis:// or rediss:// addresses, not sockets",
    );
}

#[test]
fn help_lists_every_role_of_the_contract() {
    let env = TestEnv::new("cli_help");
    let out = env.command(&["--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "ingest",
        "dispatch",
        "send",
        "all",
        "campaign",
        "mock-wechat",
        "demo",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn a_missing_or_bad_variable_is_one_readable_line() {
    let mut env = TestEnv::new("cli_config");
    env.set("WXPUSH_APP_ID", "");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(code, &err, "WXPUSH_APP_ID is not set");

    let mut env = TestEnv::new("cli_config2");
    env.set("WXPUSH_USER_CAP", "lots");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        "WXPUSH_USER_CAP is invalid: 'lots' is not a whole number",
    );

    let mut env = TestEnv::new("cli_config3");
    env.set("WXPUSH_NAMESPACE", "bad:name");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(code, &err, "WXPUSH_NAMESPACE is invalid");
}

#[test]
fn unreachable_dependencies_are_named_without_their_passwords() {
    let mut env = TestEnv::new("cli_deps");
    env.set("WXPUSH_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(code, &err, "cannot reach Redis at redis://127.0.0.1:1/0");
    assert!(!err.contains("hunter2"));

    let mut env = TestEnv::new("cli_deps2");
    env.set("WXPUSH_AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        "cannot reach RabbitMQ at amqp://127.0.0.1:1/%2f",
    );
    assert!(!err.contains("hunter2"));
}

#[test]
fn a_bad_apps_file_or_a_missing_secret_is_one_readable_line() {
    let mut env = TestEnv::new("cli_apps");
    let file = std::env::temp_dir().join(format!("{}.toml", env.ns));
    let path = file.to_string_lossy().into_owned();
    env.set("WXPUSH_CONFIG", &path);
    // Nothing is reachable: the configuration is what must be reported.
    env.set("WXPUSH_REDIS_URL", "redis://127.0.0.1:1/0");
    env.set("WXPUSH_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");

    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        &format!("WXPUSH_CONFIG is invalid: cannot read {path}"),
    );

    std::fs::write(
        &file,
        "[[apps]]\nappid = \"wxa\"\nsecret = \"s3cr3t-a\"\nsned_rate = 5\n",
    )
    .unwrap();
    let (code, err) = run(&env, &["dispatch"]);
    assert_one_line_failure(
        code,
        &err,
        "line 4, key sned_rate: unknown field `sned_rate`",
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    // A value of the wrong type is not quoted back: it may be the secret itself.
    std::fs::write(
        &file,
        "[[apps]]\nappid = \"wxa\"\nsecret = 98765432109876\n",
    )
    .unwrap();
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        "line 3, key secret: invalid type: integer, expected a string",
    );
    assert!(!err.contains("98765432109876"), "{err}");

    // The variables' app (the default) has its secret; the file's second app has none.
    env.set("WXPUSH_APP_SECRET", "s3cr3t-default");
    std::fs::write(&file, "[[apps]]\nappid = \"wxfedcba0987654321\"\n").unwrap();
    let (code, err) = run(&env, &["send"]);
    assert_one_line_failure(code, &err, "no secret for app wxfedcba0987654321");
    assert!(!err.contains("s3cr3t"), "{err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn an_endpoint_address_given_and_taken_is_an_error_not_a_fallback() {
    // Only the default address gives way to a free port (several roles on one host); an
    // address the operator chose is theirs, and a clash is theirs to resolve.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut env = TestEnv::new("cli_http_taken");
    env.set("WXPUSH_HTTP_ADDR", &addr);
    let (code, err) = run(&env, &["ingest"]);
    assert_eq!(code, 1, "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "wxpush: cannot listen on {addr} (WXPUSH_HTTP_ADDR): "
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn healthcheck_exits_0_while_the_role_serves_healthz_and_1_otherwise() {
    let mut env = TestEnv::new("cli_healthcheck");
    let addr = free_addr();
    env.set("WXPUSH_HTTP_ADDR", &addr.to_string());
    let (code, err) = run(&env, &["healthcheck"]);
    assert_one_line_failure(
        code,
        &err,
        &format!("unhealthy: no answer from http://{addr}/healthz"),
    );

    let mut role = env.spawn(&["ingest"]);
    let serving = eventually(Duration::from_secs(60), || async {
        http_get(addr, "/healthz")
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert!(serving, "ingest never served /healthz on {addr}");
    let (code, err) = run(&env, &["healthcheck"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "a healthy check prints nothing");
    let (code, err) = run(
        &env,
        &["healthcheck", "--url", &format!("http://{addr}/nope")],
    );
    assert_one_line_failure(code, &err, &format!("http://{addr}/nope answered HTTP 404"));
    terminate(&role);
    let _ = role.wait();

    env.set("WXPUSH_HTTP_ADDR", "off");
    let (code, err) = run(&env, &["healthcheck"]);
    assert_one_line_failure(code, &err, "WXPUSH_HTTP_ADDR is off");
}

/// Starts `wxpush send` with `base` as its WeChat API and returns its stderr once `line` is
/// in it (the process is stopped then).
async fn sender_output_until(name: &str, base: &str, line: &str) -> String {
    let mut env = TestEnv::new(name);
    env.set("WXPUSH_APP_SECRET", "s3cr3t-app-secret");
    env.set("WXPUSH_WECHAT_API_BASE", base);
    let mut child = env.spawn(&["send"]);
    let stderr = CapturedStderr::take(&mut child);
    let seen = eventually(Duration::from_secs(60), || async {
        stderr.text().contains(line)
    })
    .await;
    terminate(&child);
    let _ = child.wait();
    let text = stderr.text();
    assert!(seen, "no {line:?} from the sender:\n{text}");
    assert!(
        !text.contains("s3cr3t") && !text.contains("hunter2"),
        "{text}"
    );
    text
}

const PLAIN_HTTP_WARNING: &str = "WXPUSH_WECHAT_API_BASE is plain http:// and not the fake WeChat";

#[tokio::test]
async fn a_sender_warns_once_when_its_plain_http_wechat_base_is_not_the_fake() {
    // Nothing listens there.
    let nobody = free_addr();
    let text = sender_output_until(
        "cli_http_nobody",
        &format!("http://wx:hunter2@{nobody}"),
        PLAIN_HTTP_WARNING,
    )
    .await;
    assert_eq!(text.matches(PLAIN_HTTP_WARNING).count(), 1, "{text}");
    assert!(text.contains(&format!("http://{nobody}")), "{text}");

    // Something answers HTTP 200, but it is not the fake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .await;
        }
    });
    let text = sender_output_until(
        "cli_http_other",
        &format!("http://{other}"),
        PLAIN_HTTP_WARNING,
    )
    .await;
    assert_eq!(text.matches(PLAIN_HTTP_WARNING).count(), 1, "{text}");
    server.abort();
}

#[tokio::test]
async fn a_sender_pointed_at_the_fake_says_dry_run_and_does_not_warn() {
    use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeWeChat};
    let fake = FakeWeChat::start(FakeConfig::with_apps(vec![FakeApp::new(
        wxpush_testkit::TEST_APP,
        "s3cr3t-app-secret",
    )]))
    .await
    .expect("fake starts");
    let text = sender_output_until(
        "cli_http_fake",
        &fake.base_url(),
        "WXPUSH_WECHAT_API_BASE is the fake WeChat: a dry run",
    )
    .await;
    assert!(!text.contains(PLAIN_HTTP_WARNING), "{text}");
}

#[test]
fn a_sender_whose_tokens_come_from_a_token_service_needs_no_secret() {
    // The install's central token service holds the secret (contract 8.6): wxpush hosts
    // need none. Nothing is reachable here, so what is reported is past the secret check.
    let mut env = TestEnv::new("cli_service_no_secret");
    env.set("WXPUSH_TOKEN_SOURCE", "https://tokens.example.com/wx");
    env.set("WXPUSH_REDIS_URL", "redis://127.0.0.1:1/0");
    let (code, err) = run(&env, &["send"]);
    assert_one_line_failure(code, &err, "cannot reach Redis at redis://127.0.0.1:1/0");
    // Without a token service, the secret is still required.
    env.set("WXPUSH_TOKEN_SOURCE", "stable");
    let (code, err) = run(&env, &["send"]);
    assert_one_line_failure(code, &err, "no secret for app");
}
