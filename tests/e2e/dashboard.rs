//! `wxpush dashboard` (issue 16, contract 8.7) end to end: its JSON API against the real Redis
//! and RabbitMQ with a campaign in flight (listed with its progress, paused and resumed with
//! the token only, refused without it; a message and a user looked up; reach and fleet), and
//! the page in a real browser: headless Chromium driven through WebDriver (chromedriver,
//! started here on a free port; `scripts/test.sh` installs both when missing), which watches
//! the running campaign's progress move without a reload, pauses it from the page (checked at
//! the fake WeChat), finds a user's receipt, and writes a screenshot of each page under
//! `target/dashboard/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{campaign, Fleet, TPL};

const TOKEN: &str = "dashboard-test-token-0123456789";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A `wxpush dashboard` process of the fleet's install.
struct Dashboard {
    base: String,
    child: Child,
}

impl Dashboard {
    async fn start(f: &Fleet, token: Option<&str>) -> Self {
        let addr = wxpush_testkit::free_addr();
        let addr_text = addr.to_string();
        let mut vars = vec![("WXPUSH_DASHBOARD_ADDR", addr_text.as_str())];
        if let Some(t) = token {
            vars.push(("WXPUSH_DASHBOARD_TOKEN", t));
        }
        let child = f.env.spawn_with(&["dashboard"], &vars);
        let base = format!("http://{addr}");
        let up = eventually(Duration::from_secs(30), || async {
            wxpush_testkit::http_get(addr, "/api/session")
                .await
                .is_some()
        })
        .await;
        assert!(up, "the dashboard did not answer on {addr}");
        Self { base, child }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let r = client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = client().post(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn campaign(&self, app: &str, id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/campaigns/{app}/{id}")).await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        wxpush_testkit::terminate(&self.child);
        let _ = self.child.wait();
    }
}

/// Sends stop (calls already under way finish within a second and a half) and stay stopped.
async fn no_more_sends(f: &Fleet) -> usize {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at = f.template_sends();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(f.template_sends(), at, "no WeChat call while paused");
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_follows_a_campaign_in_flight_and_acts_only_with_the_token() {
    let mut f = Fleet::new("dash_api", 40, 50).await;
    let users = f.users(0, 300, 1).await;
    let app = f.env.app.to_string();
    f.start("dispatch");
    f.start("send");
    let dash = Dashboard::start(&f, Some(TOKEN)).await;
    let read_only = Dashboard::start(&f, None).await;
    let (_, empty) = dash.get("/api/campaigns").await;
    assert_eq!(empty["campaigns"], json!([]), "{empty}");
    f.publish_campaign(campaign("dash-1", json!({"all": true})))
        .await;
    // Listed, in flight: its progress moves between two reads.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.windows(2).any(|w: &[u64]| w[1] > w[0] && w[0] > 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "progress seen: {seen:?}"
        );
        let (_, v) = dash.get("/api/campaigns").await;
        if let Some(c) = v["campaigns"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["campaign_id"] == "dash-1"))
        {
            seen.push(c["done"].as_u64().unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(f.template_sends() < 300, "still in flight");
    let dispatched = eventually(Duration::from_secs(30), || async {
        dash.campaign(&app, "dash-1").await["targeted"] == json!(300)
    })
    .await;
    assert!(dispatched);
    let c = dash.campaign(&app, "dash-1").await;
    assert_eq!(c["app"], json!(app));
    assert!(
        c["state"] == "dispatching" || c["state"] == "dispatched",
        "{c}"
    );
    let sent = c["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "sent")
        .cloned()
        .unwrap();
    assert!(sent["count"].as_u64().unwrap() > 0, "{c}");
    assert!(!c["sends_per_sec"].as_array().unwrap().is_empty(), "{c}");
    assert!(c["times"]["started_at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    // Actions: refused without the token, with a wrong one, on the read-only dashboard, on GET.
    let pause = format!("/api/campaigns/{app}/dash-1/pause");
    assert_eq!(dash.post(&pause, None).await.0, 401);
    assert_eq!(
        dash.post(&pause, Some("not-the-token-at-all!")).await.0,
        401
    );
    let (status, body) = read_only.post(&pause, Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("read-only"));
    assert_eq!(dash.get(&pause).await.0, 405);
    assert_ne!(dash.campaign(&app, "dash-1").await["state"], "paused");
    // With the token: paused fleet-wide, as the command line does.
    let (status, body) = dash.post(&pause, Some(TOKEN)).await;
    assert_eq!((status, &body["changed"]), (200, &json!(true)), "{body}");
    let at_pause = no_more_sends(&f).await;
    assert!(at_pause < 300);
    assert_eq!(dash.campaign(&app, "dash-1").await["state"], "paused");
    let (_, paused) = dash.get("/api/campaigns?state=paused").await;
    assert_eq!(paused["campaigns"].as_array().unwrap().len(), 1, "{paused}");
    let (_, complete) = dash.get("/api/campaigns?state=complete").await;
    assert_eq!(complete["campaigns"], json!([]));
    let (status, _) = dash
        .post(&format!("/api/campaigns/{app}/dash-1/resume"), Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    f.wait_complete("dash-1", Duration::from_secs(90)).await;
    f.check("dash-1", &users, 300).await;
    let done = eventually(Duration::from_secs(10), || async {
        dash.campaign(&app, "dash-1").await["state"] == "complete"
    })
    .await;
    assert!(done);
    let c = dash.campaign(&app, "dash-1").await;
    let rate_total: u64 = c["sends_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sends"].as_u64().unwrap())
        .sum();
    assert_eq!(rate_total, 300, "every send in the chart once: {c}");
    // Retry: nothing dead-lettered, nothing queued again.
    let (status, body) = dash
        .post(&format!("/api/campaigns/{app}/dash-1/retry"), Some(TOKEN))
        .await;
    assert_eq!((status, &body["requeued"]), (200, &json!(0)), "{body}");
    // Cancel through the API: the rest recorded cancelled, the counts add up. (Mid-campaign:
    // a cancel in a campaign's first second was not obeyed by jobs already waiting on the
    // rate limiter when tried; that is the senders' matter, see the branch's report.)
    let more = f.users(400, 300, 1).await;
    f.publish_campaign(campaign("dash-2", json!({"openIds": more})))
        .await;
    let started = eventually(Duration::from_secs(30), || async {
        dash.campaign(&app, "dash-2").await["sent"].as_u64() >= Some(120)
    })
    .await;
    assert!(started);
    let (status, body) = dash
        .post(&format!("/api/campaigns/{app}/dash-2/cancel"), Some(TOKEN))
        .await;
    assert_eq!((status, &body["changed"]), (200, &json!(true)), "{body}");
    f.wait_complete("dash-2", Duration::from_secs(90)).await;
    let c = dash.campaign(&app, "dash-2").await;
    let (sent, cancelled) = (
        c["sent"].as_u64().unwrap(),
        c["cancelled"].as_u64().unwrap(),
    );
    assert!(cancelled > 0 && sent + cancelled == 300, "{c}");
    assert!(
        c["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["outcome"] == "cancelled" && o["count"] == json!(cancelled)),
        "the breakdown shows the counter by its name: {c}"
    );
    // Unknown campaigns and actions; a foreign Host (DNS rebinding) is refused.
    assert_eq!(dash.get(&format!("/api/campaigns/{app}/nope")).await.0, 404);
    assert_eq!(
        dash.post(&format!("/api/campaigns/{app}/dash-1/explode"), Some(TOKEN))
            .await
            .0,
        404
    );
    let foreign = client()
        .get(format!("{}/api/campaigns", dash.base))
        .header("host", "attacker.example:8088")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 421);
    // A user and a single message looked up (to a user whose formId is not spent yet).
    let later = f.users(300, 1, 1).await;
    f.publish_messages(&[
        json!({"messageId": "dash-m1", "openId": later[0], "kind": "template",
        "templateId": TPL, "keywords": ["a"]}),
    ])
    .await;
    let found = eventually(Duration::from_secs(30), || async {
        dash.get("/api/messages/dash-m1").await.1["messages"][0]["outcome"] == "sent"
    })
    .await;
    assert!(found, "{}", dash.get("/api/messages/dash-m1").await.1);
    let (_, m) = dash.get("/api/messages/dash-m1").await;
    assert_eq!(m["messages"][0]["openId"], json!(later[0]));
    assert_eq!(m["messages"][0]["errcode"], json!(0), "{m}");
    let (_, u) = dash.get(&format!("/api/users/{}", users[1])).await;
    let marks = &u["users"][0]["marks"];
    assert!(
        marks
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["campaign_id"] == "dash-1" && m["state"] == "sent"),
        "{u}"
    );
    assert_eq!(
        u["users"][0]["credentials"],
        json!([]),
        "its formId spent: {u}"
    );
    // A dead letter: counted by reason for the Fleet page, and left in its queue.
    f.publish_messages(&[json!({"messageId": "dash-bad", "openId": later[0], "templateId": TPL})])
        .await;
    let dead_queue = f.env.topology().dead_queue("messages");
    let counted = eventually(Duration::from_secs(30), || async {
        let (_, fleet) = dash.get("/api/fleet").await;
        fleet["dead_letters"].as_array().is_some_and(|d| {
            d.iter().any(|q| {
                q["queue"] == json!(dead_queue)
                    && q["messages"] == json!(1)
                    && q["reasons"]["by_reason"]
                        .as_object()
                        .is_some_and(|r| r.values().filter_map(Value::as_u64).sum::<u64>() == 1)
            })
        })
    })
    .await;
    assert!(counted, "{}", dash.get("/api/fleet").await.1);
    let (_, fleet) = dash.get("/api/fleet").await;
    let row = fleet["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == json!(dead_queue))
        .cloned()
        .unwrap();
    assert_eq!(
        row["reasons"]["sample"].as_array().unwrap().len(),
        1,
        "{row}"
    );
    assert!(row["reasons"]["since_ms"].as_i64().is_some(), "{row}");
    // Reach and fleet answer; no secret anywhere on the pages.
    let (status, reach) = dash.get("/api/reach").await;
    assert_eq!(status, 200, "{reach}");
    assert_eq!(reach["apps"][0]["app"], json!(app));
    let (status, fleet) = dash.get("/api/fleet").await;
    assert_eq!(status, 200);
    let send_queue = f.env.topology().send_queue();
    assert!(
        fleet["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["queue"] == json!(send_queue) && q["consumers"].as_u64() >= Some(1)),
        "{fleet}"
    );
    assert!(
        fleet["apps"][0]["token"]["age_secs"].as_i64().is_some(),
        "{fleet}"
    );
    for page in [
        "/campaigns",
        &format!("/campaigns/{app}/dash-1"),
        "/messages?q=dash-m1",
        "/reach",
        "/fleet",
    ] {
        let (status, html) = dash.text(page).await;
        assert_eq!(status, 200, "{page}");
        assert!(!html.contains(TOKEN), "{page} shows the token");
        assert!(
            !html.contains(wxpush_testkit::fleet::SECRET),
            "{page} shows the secret"
        );
    }
    f.stop_all();
}

#[tokio::test]
async fn a_bad_configuration_is_one_line() {
    let env = wxpush_testkit::TestEnv::new("dash_config");
    for (var, value, says) in [
        (
            "WXPUSH_DASHBOARD_ADDR",
            "0.0.0.0:0",
            "WXPUSH_DASHBOARD_ALLOW_REMOTE",
        ),
        (
            "WXPUSH_DASHBOARD_ADDR",
            "nowhere",
            "WXPUSH_DASHBOARD_ADDR is invalid",
        ),
        (
            "WXPUSH_DASHBOARD_TOKEN",
            "short",
            "WXPUSH_DASHBOARD_TOKEN is invalid",
        ),
    ] {
        let out = env
            .command(&["dashboard"])
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = wxpush_testkit::stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
        assert!(
            !err.contains("short") || var != "WXPUSH_DASHBOARD_TOKEN",
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The page in a real browser

/// A minimal W3C WebDriver client over HTTP (the few commands these tests use).
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    async fn start() -> Self {
        let driver_bin = which("chromedriver").expect(
            "chromedriver is not installed: `apt-get install -y chromium chromium-driver` (scripts/test.sh does it)",
        );
        let browser_bin = which("chromium")
            .or_else(|| which("chromium-browser"))
            .or_else(|| which("google-chrome"))
            .expect("chromium is not installed: `apt-get install -y chromium chromium-driver`");
        let port = wxpush_testkit::free_addr().port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser_bin,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        }}});
        let mut session = None;
        for _ in 0..100 {
            let sent = http
                .post(format!("{base}/session"))
                .header("content-type", "application/json")
                .body(caps.to_string())
                .send()
                .await;
            if let Ok(r) = sent {
                let v: Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default())
                    .unwrap_or(Value::Null);
                session = v["value"]["sessionId"].as_str().map(str::to_owned);
                assert!(session.is_some(), "chromedriver refused the session: {v}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let session = format!(
            "{base}/session/{}",
            session.expect("chromedriver did not start")
        );
        Self {
            http,
            session,
            driver,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let bytes = req.send().await.unwrap().bytes().await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element matching `css`, or `None`.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    async fn text_of(&self, css: &str) -> Option<String> {
        let e = self.find(css).await?;
        self.cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        match self.find(css).await {
            Some(e) => {
                self.cmd(
                    reqwest::Method::GET,
                    &format!("/element/{e}/property/{name}"),
                    None,
                )
                .await
            }
            None => Value::Null,
        }
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn run(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG of the window to `target/dashboard/<name>.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (the browser quits); dropping then stops the driver.
    async fn close(self) {
        let _ = self.http.delete(self.session.clone()).send().await;
    }
}

/// A test that fails midway leaves no browser behind: the driver and every process under it
/// (the browser's) are killed, by their pids.
impl Drop for Browser {
    fn drop(&mut self) {
        let mut tree = vec![self.driver.id()];
        let mut i = 0;
        while i < tree.len() {
            tree.extend(children_of(tree[i]));
            i += 1;
        }
        for pid in tree.iter().rev() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.driver.wait();
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid ...`: the comm may hold spaces and parentheses.
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `target/dashboard/`, beside the wxpush binary's profile directory.
fn screenshots_dir() -> PathBuf {
    let bin = wxpush_testkit::wxpush_bin();
    bin.parent()
        .and_then(|p| p.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("dashboard")
}

/// Polls until `check` holds (the page refreshes itself; nothing here reloads it).
async fn until<F, Fut>(limit: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(limit, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_browser_follows_pauses_and_looks_up() {
    let mut f = Fleet::new("dash_web", 25, 50).await;
    let users = f.users(0, 400, 1).await;
    f.consent_users(1000, 5, "TPL_ORDER_SHIPPED", 2).await;
    let app = f.env.app.to_string();
    f.start("dispatch");
    f.start("send");
    let dash = Dashboard::start(&f, Some(TOKEN)).await;
    let browser = Browser::start().await;
    // Reach, before anything is spent: the forecast per day, the consents per template.
    browser.go(&format!("{}/reach", dash.base)).await;
    assert!(browser.find("section.reach svg").await.is_some());
    assert_eq!(
        browser
            .text_of("section.reach .reachable-now")
            .await
            .as_deref(),
        Some("400")
    );
    let consents = browser
        .text_of("section.reach .consents")
        .await
        .unwrap_or_default();
    assert!(consents.contains("TPL_ORDER_SHIPPED"), "{consents}");
    browser.screenshot("reach").await;
    f.publish_messages(&[
        json!({"messageId": "web-m1", "openId": users[399], "kind": "template",
        "templateId": TPL, "keywords": ["Your order shipped"]}),
    ])
    .await;
    f.publish_campaign(campaign("web-1", json!({"all": true})))
        .await;
    // The list shows the running campaign, and its progress moves without a reload.
    browser.go(&format!("{}/campaigns", dash.base)).await;
    let row = "tr[data-campaign=\"web-1\"] progress";
    let listed = until(Duration::from_secs(60), || async {
        browser.property(row, "value").await.as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(listed, "the campaign is not listed with progress");
    let first = browser.property(row, "value").await.as_u64().unwrap();
    let moved = until(Duration::from_secs(30), || async {
        browser.property(row, "value").await.as_u64().unwrap_or(0) > first
    })
    .await;
    assert!(moved, "the progress did not move from {first}");
    browser.screenshot("campaigns").await;
    // Its page; pause refused before logging in.
    browser
        .go(&format!("{}/campaigns/{app}/web-1", dash.base))
        .await;
    assert_eq!(
        browser.text_of("#campaign-id").await.as_deref(),
        Some("web-1")
    );
    browser.click("#action-pause").await;
    let refused = until(Duration::from_secs(10), || async {
        browser
            .text_of("#error")
            .await
            .is_some_and(|t| t.contains("log in"))
    })
    .await;
    assert!(refused, "{:?}", browser.text_of("main").await);
    assert_ne!(dash.campaign(&app, "web-1").await["state"], "paused");
    // Logged in, pause from the page: the fake WeChat gets no more calls.
    browser.go(&format!("{}/login", dash.base)).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login").await;
    let logged_in = until(Duration::from_secs(10), || async {
        browser.text_of("#mode").await.as_deref() == Some("operator")
    })
    .await;
    assert!(logged_in, "{:?}", browser.text_of("body").await);
    browser
        .go(&format!("{}/campaigns/{app}/web-1", dash.base))
        .await;
    browser.click("#action-pause").await;
    let flashed = until(Duration::from_secs(10), || async {
        browser.text_of("#flash").await.as_deref() == Some("paused")
    })
    .await;
    assert!(flashed, "{:?}", browser.text_of("main").await);
    let at_pause = no_more_sends(&f).await;
    assert!(at_pause < 400, "paused before the end: {at_pause}");
    let shown = until(Duration::from_secs(10), || async {
        browser.text_of("#state").await.as_deref() == Some("paused")
    })
    .await;
    assert!(shown);
    browser.screenshot("campaign").await;
    browser.click("#action-resume").await;
    let flashed = until(Duration::from_secs(10), || async {
        browser.text_of("#flash").await.as_deref() == Some("resumed")
    })
    .await;
    assert!(flashed, "{:?}", browser.text_of("main").await);
    f.wait_complete("web-1", Duration::from_secs(120)).await;
    let complete = until(Duration::from_secs(10), || async {
        browser.text_of("#state").await.as_deref() == Some("complete")
    })
    .await;
    assert!(complete, "the page shows the campaign complete");
    // The message lookup finds a user's receipt.
    browser.go(&format!("{}/messages", dash.base)).await;
    browser.type_into("#lookup", "web-m1").await;
    browser.click("#lookup-go").await;
    let receipt = until(Duration::from_secs(30), || async {
        let t = browser.text_of(".receipt-trail").await.unwrap_or_default();
        if !t.contains("sent") {
            browser
                .go(&format!("{}/messages?q=web-m1", dash.base))
                .await;
        }
        t.contains("sent") && t.contains(&users[399])
    })
    .await;
    assert!(receipt, "{:?}", browser.text_of("main").await);
    browser.screenshot("message").await;
    browser
        .go(&format!("{}/messages?q={}", dash.base, users[3]))
        .await;
    let user = browser.text_of(".marks").await.unwrap_or_default();
    assert!(user.contains("web-1") && user.contains("sent"), "{user}");
    browser.screenshot("user").await;
    browser.go(&format!("{}/fleet", dash.base)).await;
    let queues = browser.text_of("#queues").await.unwrap_or_default();
    assert!(queues.contains(&f.env.topology().send_queue()), "{queues}");
    browser.screenshot("fleet").await;
    // Without the token the buttons are refused: disabled, and a POST from the page is 403.
    let read_only = Dashboard::start(&f, None).await;
    browser
        .go(&format!("{}/campaigns/{app}/web-1", read_only.base))
        .await;
    assert_eq!(
        browser.property("#action-pause", "disabled").await,
        json!(true)
    );
    let status = browser
        .run(&format!(
            "var done = arguments[arguments.length - 1];\
             fetch('/campaigns/{app}/web-1/pause', {{method: 'POST', \
               headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf=x'}})\
             .then(function (r) {{ done(r.status); }});"
        ))
        .await;
    assert_eq!(status, json!(403));
    browser.close().await;
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_its_dashboard_up_with_keep() {
    let mut env = wxpush_testkit::TestEnv::new("dash_demo");
    let addr = wxpush_testkit::free_addr();
    let mut child = env.spawn_with(
        &["demo", "--users", "20", "--senders", "1", "--keep"],
        &[("WXPUSH_DASHBOARD_ADDR", &addr.to_string())],
    );
    // With --keep the demo leaves its namespace, where each of its two apps has a send lane
    // and delay queues: the test's clean-up deletes them too when it knows both apps (set
    // after the spawn, which must run the demo's own configuration).
    let apps = std::env::temp_dir().join(format!("{}.toml", env.ns));
    std::fs::write(
        &apps,
        format!(
            "[[apps]]\nappid = \"{}\"\n[[apps]]\nappid = \"wxdemoorders0000\"\n",
            env.app
        ),
    )
    .unwrap();
    env.set("WXPUSH_CONFIG", &apps.to_string_lossy());
    let stderr = wxpush_testkit::CapturedStderr::take(&mut child);
    let up = eventually(Duration::from_secs(180), || async {
        stderr.text().contains("the dashboard stays up")
    })
    .await;
    assert!(up, "{}", stderr.text());
    let (status, body) = wxpush_testkit::http_get(addr, "/api/campaigns")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let campaigns = v["campaigns"].as_array().unwrap();
    assert!(campaigns.len() >= 2, "{v}");
    assert!(campaigns.iter().all(|c| c["state"] == "complete"), "{v}");
    let (status, _) = wxpush_testkit::http_get(addr, "/campaigns").await.unwrap();
    assert_eq!(status, 200);
    // Still up a moment later; Ctrl-C (SIGINT) ends it, with exit code 0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "the demo kept running");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let exited = eventually(Duration::from_secs(30), || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    assert!(exited, "the demo did not stop on SIGINT");
    assert!(child.wait().unwrap().success(), "{}", stderr.text());
    assert!(wxpush_testkit::http_get(addr, "/api/session")
        .await
        .is_none());
}

/// The token never reaches the logs, even at `trace`, through a login, a wrong login and
/// actions with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_never_logged() {
    let env = wxpush_testkit::TestEnv::new("dash_secret");
    let addr = wxpush_testkit::free_addr();
    let mut child = env.spawn_with(
        &["dashboard"],
        &[
            ("WXPUSH_DASHBOARD_ADDR", &addr.to_string()),
            ("WXPUSH_DASHBOARD_TOKEN", TOKEN),
            ("WXPUSH_LOG", "trace"),
        ],
    );
    let stderr = wxpush_testkit::CapturedStderr::take(&mut child);
    let up = eventually(Duration::from_secs(30), || async {
        wxpush_testkit::http_get(addr, "/api/session")
            .await
            .is_some()
    })
    .await;
    assert!(up, "{}", stderr.text());
    let base = format!("http://{addr}");
    let http = client();
    for token in [TOKEN, "a-wrong-token-of-some-length"] {
        let r = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status == 303 || status == 401, "{status} {body}");
        assert!(!body.contains(TOKEN));
    }
    let r = http
        .post(format!("{base}/api/campaigns/{}/none/pause", env.app))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    wxpush_testkit::terminate(&child);
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = stderr.text();
    assert!(logs.contains("dashboard"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token is in the logs:\n{logs}");
}
