//! No password or secret in any output, end to end (issue 11, item 5).
//!
//! A RabbitMQ user and a Redis ACL user of their own, each with a password holding `/`, `@`,
//! `+` and `%2F` (percent-encoded in the URLs, as URLs require), and two apps in a
//! `WXPUSH_CONFIG` file whose secrets hold the same characters. The real roles run at
//! `WXPUSH_LOG=trace` (dispatch at `WXPUSH_LOG=lapin=trace`): ingest stores uploads and
//! dead-letters a poison one, a campaign goes through dispatch and send to the fake WeChat,
//! `campaign status` reads it (text and `--json`), and roles given a wrong password, or a URL
//! whose password is not encoded at all (the issue's example), fail to connect.
//!
//! Then no password and no app secret may appear, raw, percent-encoded, percent-decoded, in
//! base64 (standard and URL-safe), as its bytes in decimal, or even one piece of it, in any
//! stdout or stderr, any `/metrics` page, the status output or the dead letter's headers; no
//! event of another crate than wxpush's may have been logged above INFO; and the connect error
//! lines name scheme, host, port and path only.
//!
//! The test needs `rabbitmqctl` for the broker it talks to (it runs as root here and in CI).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeWeChat};
use wxpush_testkit::fleet::{campaign, Fleet, TPL};
use wxpush_testkit::{
    amqp_url, eventually, free_addr, http_get, now_ms, redis_url, TestEnv, TEST_APP,
};

const B: &str = "wxfedcba0987654321";
const USERS: usize = 6;

/// A secret made of random lower-case pieces joined by `/`, `@`, `+` and `%2F`: each piece
/// (8 letters from g-z, never hex) is unique to this run, so finding one anywhere in the
/// output means some of the secret got out, whatever was done to the rest.
struct Hostile {
    label: &'static str,
    value: String,
    pieces: Vec<String>,
}

impl Hostile {
    fn new(label: &'static str, rng: &mut fastrand::Rng) -> Self {
        let pieces: Vec<String> = (0..5)
            .map(|_| (0..8).map(|_| rng.char('g'..='z')).collect())
            .collect();
        let value = format!(
            "{}/{}@{}+{}%2F{}",
            pieces[0], pieces[1], pieces[2], pieces[3], pieces[4]
        );
        Self {
            label,
            value,
            pieces,
        }
    }

    /// As a URL's userinfo must hold it.
    fn encoded(&self) -> String {
        utf8_percent_encode(&self.value, NON_ALPHANUMERIC).to_string()
    }

    /// Every form the secret must never take in the output, with its name.
    fn forms(&self) -> Vec<(String, String)> {
        let v = &self.value;
        let decoded = v.replace("%2F", "/");
        let bytes: Vec<String> = v.bytes().map(|b| b.to_string()).collect();
        let mut forms = vec![
            ("raw".to_owned(), v.clone()),
            ("percent-encoded".to_owned(), self.encoded()),
            (
                "percent-encoded, lower-case hex".to_owned(),
                lower_hex(&self.encoded()),
            ),
            ("percent-decoded".to_owned(), decoded),
            // Unpadded: the padded form holds it.
            (
                "base64".to_owned(),
                STANDARD.encode(v).trim_end_matches('=').to_owned(),
            ),
            (
                "base64 (URL-safe)".to_owned(),
                URL_SAFE.encode(v).trim_end_matches('=').to_owned(),
            ),
            ("bytes in decimal".to_owned(), bytes.join(", ")),
            ("bytes in decimal, no spaces".to_owned(), bytes.join(",")),
            (
                "first bytes in decimal".to_owned(),
                bytes[..self.pieces[0].len()].join(", "),
            ),
        ];
        for (i, p) in self.pieces.iter().enumerate() {
            forms.push((format!("piece {i}"), p.clone()));
        }
        forms
    }
}

/// `%2F` → `%2f` (the escapes' hex digits only).
fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut left = 0u8;
    for c in encoded.chars() {
        out.push(if left > 0 { c.to_ascii_lowercase() } else { c });
        left = if c == '%' { 2 } else { left.saturating_sub(1) };
    }
    out
}

/// A RabbitMQ user with all permissions on vhost `/`, deleted when dropped.
struct RabbitUser(String);

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect(
        "rabbitmqctl runs: this test creates a RabbitMQ user with it, on the broker \
             WXPUSH_AMQP_URL names (it must run on this machine, as root)",
    );
    assert!(
        out.status.success(),
        "rabbitmqctl {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RabbitUser {
    fn new(name: &str, password: &str) -> Self {
        rabbitmqctl(&["add_user", name, password]);
        let user = Self(name.to_owned());
        rabbitmqctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.0])
            .output();
    }
}

/// A Redis ACL user allowed everything, deleted when dropped.
struct RedisUser(String);

fn redis_conn() -> redis::Connection {
    redis::Client::open(redis_url())
        .and_then(|c| c.get_connection())
        .expect("Redis answers")
}

impl RedisUser {
    fn new(name: &str, password: &str) -> Self {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query(&mut redis_conn())
            .expect("ACL SETUSER");
        Self(name.to_owned())
    }
}

impl Drop for RedisUser {
    fn drop(&mut self) {
        let _: redis::RedisResult<i64> = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&self.0)
            .query(&mut redis_conn());
    }
}

/// The test kit's URL (whose password, if any, is an ordinary one) without its userinfo.
fn without_login(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest}")
}

/// `base` (a URL without userinfo) with `user:password` in it, the password encoded or not.
fn with_login(base: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = base.split_once("://").expect("a URL");
    format!("{scheme}://{user}:{password}@{rest}")
}

/// A child's stdout and stderr, read by threads as they are written (a role at trace level
/// must never block on a full pipe).
#[derive(Clone, Default)]
struct Captured {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    fn take(child: &mut Child) -> Self {
        let c = Self::default();
        fn pump(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.extend_from_slice(&buf[..n]);
                    }
                }
            });
        }
        if let Some(p) = child.stdout.take() {
            pump(p, c.stdout.clone());
        }
        if let Some(p) = child.stderr.take() {
            pump(p, c.stderr.clone());
        }
        c
    }

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&buf.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
    }
}

/// Without ANSI colour escapes (`ESC [ ... m`).
fn plain(text: &str) -> String {
    wxpush_testkit::without_ansi(text)
}

/// Log lines of another crate than wxpush's at DEBUG or TRACE, in human or JSON format.
fn third_party_verbose_lines(stderr: &str) -> Vec<String> {
    let ours = |target: &str| {
        let krate = target.split("::").next().unwrap_or(target);
        krate == "wxpush" || krate.starts_with("wxpush_")
    };
    plain(stderr)
        .lines()
        .filter(|line| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                let level = v["level"].as_str().unwrap_or_default();
                let target = v["target"].as_str().unwrap_or_default();
                return matches!(level, "DEBUG" | "TRACE") && !ours(target);
            }
            // `<time> <LEVEL> [span: ...] <target>: <message>`: the target is the first
            // `word:` token after the spans that is a crate path.
            let mut words = line.split_whitespace();
            let level = words.nth(1).unwrap_or_default();
            if !matches!(level, "DEBUG" | "TRACE") {
                return false;
            }
            words
                .filter_map(|w| w.strip_suffix(':'))
                .find(|w| {
                    w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                })
                .is_some_and(|target| !ours(target))
        })
        .map(str::to_owned)
        .collect()
}

/// Every header of every message in a dead-letter queue, as text, and the bodies.
async fn dead_letters(env: &TestEnv, broker: &wxpush_broker::Broker, source: &str) -> String {
    let ch = broker.channel().await.expect("channel");
    let mut out = String::new();
    while let Some(m) = ch
        .basic_get(
            env.topology().dead_queue(source).into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        out.push_str(&String::from_utf8_lossy(&m.delivery.data));
        out.push('\n');
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        for (k, v) in headers.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            out.push_str(&format!("{k}: {text}\n"));
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_secret_reaches_any_output_even_at_trace() {
    let mut rng = fastrand::Rng::with_seed(now_ms() as u64 ^ u64::from(std::process::id()));
    let amqp_pw = Hostile::new("the RabbitMQ password", &mut rng);
    let redis_pw = Hostile::new("the Redis password", &mut rng);
    let secret_a = Hostile::new("app A's secret", &mut rng);
    let secret_b = Hostile::new("app B's secret", &mut rng);
    let wrong_pw = Hostile::new("a wrong password", &mut rng);
    let raw_pw = Hostile::new("an unencoded password", &mut rng);
    let user = format!("wxpush-t-secrets-{}-{}", std::process::id(), rng.u32(..));
    let _rabbit_user = RabbitUser::new(&user, &amqp_pw.value);
    let _redis_user = RedisUser::new(&user, &redis_pw.value);

    let amqp_base = without_login(&amqp_url());
    let redis_base = without_login(&redis_url());
    let amqp = with_login(&amqp_base, &user, &amqp_pw.encoded());
    let redis = with_login(&redis_base, &user, &redis_pw.encoded());

    // Declared before the fleet: the clean-up reads the file to find every app's queues.
    let file = std::env::temp_dir().join(format!("wxpush-secrets-{}.toml", rng.u64(..)));
    let _remove = RemoveOnDrop(file.clone());
    let mut env = TestEnv::new("secrets");
    // TOML literal strings: the secrets as they are.
    std::fs::write(
        &file,
        format!(
            "[[apps]]\nappid = \"{TEST_APP}\"\nsecret = '{}'\ndefault = true\n\n\
             [[apps]]\nappid = \"{B}\"\nsecret = '{}'\n",
            secret_a.value, secret_b.value
        ),
    )
    .expect("write the apps file");
    let fake = FakeWeChat::start(FakeConfig::with_apps(vec![
        FakeApp::new(TEST_APP, &secret_a.value).with_templates([TPL]),
        FakeApp::new(B, &secret_b.value).with_templates([TPL]),
    ]))
    .await
    .expect("fake WeChat");
    env.set("WXPUSH_CONFIG", &file.to_string_lossy());
    env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
    // The test's own connections use the ordinary URLs; the roles get the hostile ones.
    let deps = env.deps().await;
    let mut f = Fleet {
        env,
        fake,
        deps,
        children: Vec::new(),
    };

    // Uploads for app A, and a poison one.
    let mut bodies = Vec::new();
    let mut users = Vec::new();
    for u in 0..USERS {
        let who = format!("oSecrets{u:06}xxxxxxxxxxxxxxx");
        let ids = f.fake.issue_form_ids(None, &who, 1, None).unwrap();
        let entries: Vec<_> = ids
            .iter()
            .map(|id| json!({"formId": id, "expire": now_ms() + 3_600_000}))
            .collect();
        bodies.push(
            json!({"openId": who, "formIds": entries})
                .to_string()
                .into_bytes(),
        );
        users.push(who);
    }
    bodies.push(b"{\"openId\": \"oPoison\", \"formIds\": not json".to_vec());
    f.env.declare_ingest(&f.deps.broker).await;
    f.env.publish_uploads(&f.deps.broker, &bodies).await;

    let mut captured: Vec<(String, Captured)> = Vec::new();
    let mut addrs = Vec::new();
    let hostile = |log: &'static str, format: &'static str, addr: &str| {
        vec![
            ("WXPUSH_AMQP_URL".to_owned(), amqp.clone()),
            ("WXPUSH_REDIS_URL".to_owned(), redis.clone()),
            ("WXPUSH_LOG".to_owned(), log.to_owned()),
            ("WXPUSH_LOG_FORMAT".to_owned(), format.to_owned()),
            ("WXPUSH_HTTP_ADDR".to_owned(), addr.to_owned()),
        ]
    };
    for (role, log, format) in [
        ("ingest", "trace", "human"),
        ("dispatch", "lapin=trace", "human"),
        ("send", "trace", "json"),
    ] {
        let addr = free_addr();
        let vars = hostile(log, format, &addr.to_string());
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let i = f.start_with(role, &vars);
        captured.push((
            format!("{role} (WXPUSH_LOG={log})"),
            Captured::take(&mut f.children[i]),
        ));
        addrs.push((role, addr));
    }

    // Ingest stores the uploads and dead-letters the poison one.
    let bank = f.deps.bank.clone();
    let app = f.env.app.clone();
    let stored = eventually(Duration::from_secs(30), || async {
        let mut n = 0;
        for who in &users {
            let who = wxpush_domain::OpenId::new(who).unwrap();
            n += bank.usable_count(&app, &who).await.unwrap_or(0);
        }
        n == USERS as u64
    })
    .await;
    assert!(stored, "ingest stored every upload");
    let dead_queue = f.env.topology().dead_queue("ingest");
    let dead = eventually(Duration::from_secs(30), || async {
        f.deps.broker.queue_ready(&dead_queue).await.ok().flatten() == Some(1)
    })
    .await;
    assert!(dead, "the poison upload was dead-lettered");

    // A campaign through dispatch and send.
    f.publish_campaign(campaign("secrets-e2e", json!({"all": true})))
        .await;
    f.wait_complete("secrets-e2e", Duration::from_secs(60))
        .await;
    f.check("secrets-e2e", &users, USERS).await;
    assert!(
        !f.fake.issued_tokens().is_empty(),
        "the sender fetched a token"
    );

    let mut pages: Vec<(String, String)> = Vec::new();
    for (role, addr) in &addrs {
        let (status, body) = http_get(*addr, "/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200, "{role} /metrics");
        pages.push((format!("{role} /metrics"), body));
    }

    // campaign status, text and JSON, at trace.
    let status_vars = hostile("trace", "", "off");
    for args in [
        vec!["campaign", "status", "secrets-e2e"],
        vec!["campaign", "status", "secrets-e2e", "--json"],
    ] {
        let out = f
            .env
            .command(&args)
            .envs(status_vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run campaign status");
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("secrets-e2e"));
        pages.push((format!("{} stdout", args.join(" ")), lossy(&out.stdout)));
        pages.push((format!("{} stderr", args.join(" ")), lossy(&out.stderr)));
    }

    // Roles that cannot connect: a wrong password for each service, and URLs whose password
    // is not percent-encoded at all (the issue's `redis://:Zm9v/YmFy+cw==@...`).
    let fails: [(&str, String, String, String); 4] = [
        (
            "RabbitMQ, wrong password",
            "WXPUSH_AMQP_URL".into(),
            with_login(&amqp_base, &user, &wrong_pw.encoded()),
            format!("wxpush: cannot reach RabbitMQ at {amqp_base}: "),
        ),
        (
            "Redis, wrong password",
            "WXPUSH_REDIS_URL".into(),
            with_login(&redis_base, &user, &wrong_pw.encoded()),
            format!("wxpush: cannot reach Redis at {redis_base}: "),
        ),
        (
            "Redis, password not encoded",
            "WXPUSH_REDIS_URL".into(),
            with_login(&redis_base, "", &raw_pw.value),
            format!("wxpush: cannot reach Redis at {redis_base}: "),
        ),
        (
            "RabbitMQ, password not encoded",
            "WXPUSH_AMQP_URL".into(),
            with_login(&amqp_base, &user, &raw_pw.value),
            format!("wxpush: cannot reach RabbitMQ at {amqp_base}: "),
        ),
    ];
    for (what, var, url, expected) in &fails {
        let mut vars = hostile("trace", "", "127.0.0.1:0");
        vars.retain(|(k, _)| k != var);
        vars.push((var.clone(), url.clone()));
        let out: Output = f
            .env
            .command(&["ingest"])
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run ingest");
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        let err = lossy(&out.stderr);
        // The error line (lapin's own threads may log after it).
        let line = plain(&err)
            .lines()
            .find(|l| l.starts_with("wxpush: "))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.starts_with(expected.as_str()),
            "{what}: the error names scheme, host, port and path only: {line:?}, \
             expected {expected:?}"
        );
        pages.push((format!("ingest ({what}) stdout"), lossy(&out.stdout)));
        pages.push((format!("ingest ({what}) stderr"), err));
    }

    f.stop_all();
    // Give the reader threads the last lines.
    std::thread::sleep(Duration::from_millis(200));
    for (name, c) in &captured {
        pages.push((format!("{name} stdout"), Captured::text(&c.stdout)));
        pages.push((format!("{name} stderr"), Captured::text(&c.stderr)));
    }
    pages.push((
        "the dead letter's headers".into(),
        dead_letters(&f.env, &f.deps.broker, "ingest").await,
    ));
    assert!(
        pages
            .last()
            .is_some_and(|(_, t)| t.contains("x-wxpush-reason")),
        "the dead letter was read: {pages:?}"
    );

    // The roles did log at trace: their own lines are there.
    let ingest_log = &pages
        .iter()
        .find(|(n, _)| n.starts_with("ingest (WXPUSH_LOG=trace) stderr"))
        .expect("ingest's stderr")
        .1;
    assert!(
        plain(ingest_log).contains("wxpush: starting"),
        "{ingest_log}"
    );

    // No other crate logged above INFO, whatever WXPUSH_LOG asked.
    let mut verbose = BTreeMap::new();
    for (name, text) in &pages {
        let lines = third_party_verbose_lines(text);
        if !lines.is_empty() {
            verbose.insert(name.clone(), lines.into_iter().take(3).collect::<Vec<_>>());
        }
    }
    assert!(
        verbose.is_empty(),
        "other crates logged at DEBUG or TRACE: {verbose:#?}"
    );

    // And no secret, in any form, anywhere.
    let mut leaks = Vec::new();
    for secret in [
        &amqp_pw, &redis_pw, &secret_a, &secret_b, &wrong_pw, &raw_pw,
    ] {
        for (form, text) in secret.forms() {
            for (name, page) in &pages {
                if page.contains(&text) {
                    leaks.push(format!(
                        "{} ({form}) in {name}: ...{}...",
                        secret.label,
                        around(page, &text)
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

/// Some text on both sides of `found` in `page`, for the failure message.
fn around<'a>(page: &'a str, found: &str) -> &'a str {
    let at = page.find(found).unwrap_or(0);
    let mut from = at.saturating_sub(160);
    while !page.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (at + found.len() + 40).min(page.len());
    while !page.is_char_boundary(to) {
        to += 1;
    }
    &page[from..to]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Removes the apps file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
