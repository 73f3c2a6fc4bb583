//! `wxpush demo`: the one-command showcase (contract sections 1 and 7).
//!
//! It runs the whole fleet on this machine against an in-process fake WeChat: `ingest`,
//! `dispatch`, K `send` processes and `events` (children of this same binary), uploads a
//! generated population of users (formIds, and answers to a subscribe prompt) through the
//! real upload path (`<ns>.formids`), then publishes two campaigns to `<ns>.campaigns`, one
//! after the other: a formId campaign to every user, and a subscribe campaign to every user
//! holding a consent. Its third act ships orders for a second app whose consents come from
//! WeChat's events (`consent_source = "events"`, secure mode, in a `WXPUSH_CONFIG` file the
//! demo writes; the first app stays `client`, so acts one and two keep their uploads): popup
//! events pushed by the fake to `wxpush events`, one single message per order (`<ns>.messages`)
//! with the user's own order number, delivery events, and the receipts counted from a queue
//! of the demo's own on `<ns>.receipts`. It shows the progress and ends with a report of the
//! campaigns side by side, the orders, and the delivery checks (nobody messaged twice, no
//! formId accepted twice, no consent spent beyond one per user, everyone reachable messaged
//! once, the counts add up; each order sent at most once with its own number, every message
//! with its receipt, the delivered receipts WeChat's deliveries).
//!
//! This module owns the demo's orchestration and its configuration (the second app's file,
//! deleted at the end); its parts are `population` (the users and their uploads), `fleet`
//! (the role processes), `campaign` (the campaign messages and following them), `orders`
//! (act three), `checks`, `report` and `namespace` (claiming and cleaning up). It uses its own
//! namespace (`wxpush-demo` unless one is given) and deletes that namespace's keys, queues
//! and exchanges at the start and at the end (unless `--keep`). It must not touch anything
//! outside that namespace: it refuses a namespace that holds data it did not create (for
//! instance a production `wxpush`), and it must not hold role logic (the roles run as the
//! real `wxpush` subcommands, unchanged).

mod campaign;
mod checks;
mod fleet;
mod namespace;
mod orders;
mod population;
mod report;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use wxpush_broker::{Publisher, Topology};
use wxpush_domain::config::SecretUrl;
use wxpush_domain::{AppId, Config, RawConfig};
use wxpush_fake_wechat::{Endpoint, FakeApp, FakeConfig, FakeWeChat};
use wxpush_roles::Deps;

use campaign::{Plan, Progress};
use checks::{ConsentsLeft, Deliveries};
use fleet::Fleet;
use namespace::{claim_namespace, marker_key, queue_depth, wipe_namespace};
use population::Population;
use report::{Report, Shown};

/// The demo's namespace when none is given.
const DEFAULT_NAMESPACE: &str = "wxpush-demo";
/// The demo's appid when none is given.
const DEFAULT_APP_ID: &str = "wxdemo0000000000";
/// The template the fake knows and the formId campaign uses.
const TEMPLATE: &str = "TPL_DEMO";
/// The subscribe template users are asked about, the fake knows, and the subscribe campaign
/// uses.
const SUB_TEMPLATE: &str = "TPL_ORDER_SHIPPED";
/// The demo's second app, for the third act (its consents come from WeChat's events).
const ORDERS_APP_ID: &str = "wxdemoorders0000";
/// Another subscribe template, sometimes asked about beside [`SUB_TEMPLATE`] and always
/// declined (so no consent for it is ever stored).
const OTHER_SUB_TEMPLATE: &str = "TPL_SIGNIN_REMINDER";
/// The seed's comma-separated keywords.
const KEYWORDS: &str = "Daily check-in,Tap to keep your streak";
/// A campaign larger than this lists no openIds (the dispatcher's limit is 1 MiB): it goes
/// to every reachable user instead (`{"all": true}`).
const MAX_LIST_CAMPAIGN_BYTES: usize = 900 * 1024;
/// How long roles get to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Run everything locally (ingest, dispatch, senders, events, a fake WeChat), send a formId
/// campaign and a subscribe campaign to a generated population, ship orders as single
/// messages to users whose consents came from WeChat's events, and check that nobody got two
/// messages and every message has its receipt.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Users to generate (about 50% with several formIds, 25% with one, 15% with only expired
    /// ones, 10% with none; independently, 60% accept the subscribe prompt once, 20% twice,
    /// 10% decline it, 10% are never asked)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    users: u32,
    /// Sender processes to run
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    senders: u32,
    /// Keep the demo's keys, queues and exchanges at the end (to look at them), and its
    /// dashboard up until Ctrl-C
    #[arg(long)]
    keep: bool,
    /// Fleet-wide sends per second (default: --send-rate / WXPUSH_SEND_RATE if set, else
    /// 100000, that is unlimited in practice)
    #[arg(long)]
    rate: Option<u32>,
}

pub async fn run(common: &crate::Common, args: DemoArgs) -> anyhow::Result<()> {
    let setup = Setup::new(common, &args)?;
    let deps = Deps::connect(&setup.config, "wxpush-demo")
        .await
        .map_err(|e| {
            anyhow!(
                "{e}; run scripts/demo.sh (it starts Redis and RabbitMQ, then the demo) or \
                 scripts/services.sh"
            )
        })?;
    let topology = Topology::for_config(&setup.config);
    let ns = setup.config.namespace.to_string();
    let mut redis = deps.bank.connection();
    claim_namespace(&deps, &topology, &mut redis, &ns).await?;
    wipe_namespace(&deps, &topology, &mut redis, &ns).await?;
    redis::cmd("SET")
        .arg(marker_key(&ns))
        .arg("wxpush demo")
        .query_async::<()>(&mut redis)
        .await
        .context("Redis")?;

    // The dashboard first, so that the campaigns can be watched from their start.
    let (dashboard_stop, dashboard_shutdown) = wxpush_roles::ShutdownTrigger::new();
    let dashboard = start_dashboard(&setup.config, &deps, dashboard_shutdown).await?;
    println!("The dashboard is at http://{dashboard}/ (read-only; it stays up after the demo with --keep)");
    let result = tokio::select! {
        r = demo(&setup, &args, &deps, &topology) => r,
        () = stop_requested() => Err(anyhow!("interrupted")),
    };
    if args.keep && result.is_ok() {
        eprintln!("demo: the dashboard stays up at http://{dashboard}/ until Ctrl-C");
        stop_requested().await;
    }
    dashboard_stop.trigger();
    // The roles are stopped by now (their guard is dropped): nothing re-declares queues.
    if args.keep {
        eprintln!("demo: kept namespace {ns} (delete it by running the demo again)");
    } else if let Err(e) = wipe_namespace(&deps, &topology, &mut redis, &ns).await {
        let e = crate::ops::scrubber().scrub(&format!("{e:#}"));
        eprintln!("demo: could not delete namespace {ns}: {e}");
    }
    deps.broker.close().await;
    result
}

/// Starts the dashboard (read-only: the demo sets no token) on `WXPUSH_DASHBOARD_ADDR`, or by
/// default on 127.0.0.1:8088, or on a free loopback port when that one is taken (another demo).
async fn start_dashboard(
    config: &Config,
    deps: &Deps,
    shutdown: wxpush_roles::Shutdown,
) -> anyhow::Result<std::net::SocketAddr> {
    let mut settings = crate::dashboard::Settings::from_env()?;
    settings.token = None;
    let given = std::env::var("WXPUSH_DASHBOARD_ADDR").is_ok_and(|v| !v.is_empty());
    if !given && std::net::TcpListener::bind(settings.addr).is_err() {
        settings.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    }
    crate::dashboard::start(config, deps.clone(), settings, shutdown).await
}

/// The demo's configuration: the install's (flags, environment) with the demo's defaults.
struct Setup {
    config: Config,
    secret: String,
    rate: u32,
    orders: OrdersApp,
}

impl Setup {
    fn new(common: &crate::Common, args: &DemoArgs) -> anyhow::Result<Self> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let mut raw = RawConfig::from_env();
        raw.amqp_url = given(&common.amqp_url).map(SecretUrl::new).or(raw.amqp_url);
        raw.redis_url = given(&common.redis_url)
            .map(SecretUrl::new)
            .or(raw.redis_url);
        raw.namespace = Some(given(&common.namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.into()));
        raw.app_id = Some(given(&common.app_id).unwrap_or_else(|| DEFAULT_APP_ID.into()));
        // The demo runs apps of its own: an install's WXPUSH_CONFIG is not its business. Its
        // second app (act three) is in a file the demo writes.
        let orders = OrdersApp::new(raw.app_id.as_deref())?;
        raw.config_file = Some(orders.file.display().to_string());
        // The first app's consents come from uploads (acts one and two); whatever message push
        // an install set up is not the demo's.
        raw.push_token = None;
        raw.encoding_aes_key = None;
        raw.consent_source = None;
        // Senders call the in-process fake; whatever WeChat is configured is not used.
        raw.wechat_api_base = None;
        let rate = match args.rate {
            Some(r) => r.to_string(),
            None => given(&common.send_rate).unwrap_or_else(|| "100000".into()),
        };
        raw.send_rate = Some(rate);
        let config = crate::validated(raw)?;
        let rate = config.send_rate;
        Ok(Self {
            config,
            secret: format!("demo{:016x}{:012x}", random_u64(), random_u64() >> 16),
            rate,
            orders,
        })
    }
}

/// The demo's second app (act three): consents from WeChat's events (`consent_source =
/// "events"`), message push in secure mode. It lives in a `WXPUSH_CONFIG` file the demo
/// writes (owner-only) into a directory of its own, deleted when this is dropped; the first
/// app stays the variables' (`WXPUSH_APP_ID`, the default, `consent_source = "client"`).
struct OrdersApp {
    id: AppId,
    secret: String,
    push_token: String,
    aes_key: String,
    dir: std::path::PathBuf,
    file: std::path::PathBuf,
}

impl OrdersApp {
    fn new(first_app: Option<&str>) -> anyhow::Result<Self> {
        if first_app == Some(ORDERS_APP_ID) {
            bail!("the demo's second app is {ORDERS_APP_ID}: choose another --app-id");
        }
        let id = AppId::new(ORDERS_APP_ID)?;
        let secret = format!("orders{:016x}", random_u64());
        let push_token = format!("demo{:016x}", random_u64());
        // 43 letters and digits.
        let aes_key: String = format!(
            "{:016x}{:016x}{:016x}",
            random_u64(),
            random_u64(),
            random_u64()
        )[..43]
            .to_owned();
        let dir = std::env::temp_dir().join(format!(
            "wxpush-demo-config-{}-{:08x}",
            std::process::id(),
            random_u64() as u32
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join("apps.toml");
        let text = format!(
            "# Written by wxpush demo for its third act; deleted when it ends.\n\
             [[apps]]\nappid = \"{id}\"\nsecret = \"{secret}\"\n\
             templates = [\"{SUB_TEMPLATE}\"]\npush_token = \"{push_token}\"\n\
             encoding_aes_key = \"{aes_key}\"\nconsent_source = \"events\"\n"
        );
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options
            .open(&file)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        let app = Self {
            id,
            secret,
            push_token,
            aes_key,
            dir,
            file,
        };
        written.with_context(|| format!("cannot write {}", app.file.display()))?;
        Ok(app)
    }
}

impl Drop for OrdersApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn demo(
    setup: &Setup,
    args: &DemoArgs,
    deps: &Deps,
    topology: &Topology,
) -> anyhow::Result<()> {
    let ns = setup.config.namespace.to_string();
    let app = setup.config.apps.default_id().clone();
    let users = args.users as usize;
    let mut fake_config = FakeConfig::with_apps(vec![
        FakeApp::new(app.as_str(), setup.secret.clone()).with_templates([TEMPLATE, SUB_TEMPLATE]),
        FakeApp::new(setup.orders.id.as_str(), setup.orders.secret.clone())
            .with_templates([SUB_TEMPLATE]),
    ]);
    fake_config.max_recorded_requests = fake_config.max_recorded_requests.max(users * 4);
    let fake = FakeWeChat::start(fake_config)
        .await
        .map_err(|e| anyhow!("cannot start the fake WeChat: {e}"))?;
    eprintln!(
        "demo: namespace {ns}, app {app}, fake WeChat at {}, send rate {}/s",
        fake.base_url(),
        setup.rate
    );

    // Declared here too (as the roles do on start), so nothing published before a role is up
    // is lost.
    let ch = deps.broker.channel().await?;
    topology.declare_ingest(&ch).await?;
    topology.declare_campaigns(&ch).await?;
    let _ = ch.close(200, "ok".into()).await;

    let logs = std::env::temp_dir().join(format!("wxpush-demo-{}-{ns}", std::process::id()));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut fleet = Fleet::new(logs.clone());
    let events_addr = free_port()?;
    let env = role_env(setup, &fake.base_url(), events_addr);
    fleet.spawn("ingest", &["ingest"], &env)?;
    fleet.spawn("dispatch", &["dispatch"], &env)?;
    for k in 1..=args.senders {
        fleet.spawn(&format!("send-{k}"), &["send"], &env)?;
    }
    fleet.spawn("events", &["events"], &env)?;
    eprintln!(
        "demo: started ingest, dispatch, {} sender{} and events on {events_addr} (logs in {})",
        args.senders,
        if args.senders == 1 { "" } else { "s" },
        logs.display()
    );

    // The population, uploaded through the real upload path.
    let population = Population::generate(&fake, &app, users)?;
    let (published_in, ingested_in) =
        upload(deps, topology, &app, &population, &mut fleet, &logs).await?;

    // The campaigns, one after the other, so each one's figures are its own.
    let stamp = unix_ms() / 1000;
    let form_id_plan = Plan::form_id(&population, stamp)?;
    let subscribe_plan = Plan::subscribe(&population, stamp)?;
    let form_id_progress = campaign::send(deps, setup, topology, &form_id_plan, &mut fleet).await?;
    let subscribe_progress =
        campaign::send(deps, setup, topology, &subscribe_plan, &mut fleet).await?;

    // Act three: orders ship to the second app's users, whose consents came from WeChat.
    let orders = orders::run(
        deps,
        topology,
        &setup.orders,
        &fake,
        events_addr,
        users,
        &mut fleet,
    )
    .await?;

    // Stop the fleet, then judge what WeChat saw and what the bank and WeChat hold.
    let exits = fleet.stop_all();
    let requests = fake.requests();
    let token_fetches = fake.all_token_fetches(app.as_str());
    let wechat = population.wechat_consents_left(&fake, &app)?;
    fake.shutdown().await;
    let left = ConsentsLeft {
        bank: population.bank_consents_left(deps, &app).await?,
        wechat,
    };
    let form_id_wechat = Deliveries::of(&requests, app.as_str(), Endpoint::TemplateSend, TEMPLATE);
    let subscribe_wechat = Deliveries::of(
        &requests,
        app.as_str(),
        Endpoint::SubscribeSend,
        SUB_TEMPLATE,
    );
    let checks = vec![
        (
            format!("formId campaign ({TEMPLATE})"),
            checks::form_id(
                &population,
                &form_id_plan,
                &form_id_progress,
                &form_id_wechat,
            ),
        ),
        (
            format!("subscribe campaign ({SUB_TEMPLATE})"),
            checks::subscribe(
                &population,
                &subscribe_plan,
                &subscribe_progress,
                &subscribe_wechat,
                &left,
            ),
        ),
        (
            format!(
                "orders shipped ({SUB_TEMPLATE}, single messages, app {})",
                orders.app
            ),
            checks::orders(&orders),
        ),
        ("fleet".to_owned(), vec![checks::fleet(&exits, &logs)]),
    ];

    let text = Report {
        ns: &ns,
        senders: args.senders,
        rate: setup.rate,
        population: &population,
        published_in,
        ingested_in,
        campaigns: [
            shown(&form_id_plan, &form_id_progress, &form_id_wechat),
            shown(&subscribe_plan, &subscribe_progress, &subscribe_wechat),
        ],
        token_fetches,
        orders: &orders,
        checks: &checks,
    }
    .render();
    print!("{text}");
    let _ = std::io::stdout().flush();
    let failures: Vec<&str> = checks
        .iter()
        .flat_map(|(_, c)| c)
        .filter(|c| !c.ok)
        .map(|c| c.text.as_str())
        .collect();
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&logs);
        Ok(())
    } else {
        bail!(
            "demo checks failed: {} (role logs in {})",
            failures.join("; "),
            logs.display()
        )
    }
}

/// Publishes the population's uploads to `<ns>.formids` and waits until ingest has stored
/// every formId and consent and dead-lettered every upload it should. Returns how long
/// publishing took, and how long until ingest was done (both from the first upload).
async fn upload(
    deps: &Deps,
    topology: &Topology,
    app: &AppId,
    population: &Population,
    fleet: &mut Fleet,
    logs: &Path,
) -> anyhow::Result<(Duration, Duration)> {
    let upload_started = Instant::now();
    let publisher = Publisher::open(&deps.broker, topology.clone()).await?;
    for chunk in population.uploads.chunks(1000) {
        publisher
            .publish_all(
                &topology.uploads_exchange(),
                chunk.iter().map(|b| ("client.upload", b.as_slice())),
            )
            .await?;
    }
    publisher.close().await;
    let published_in = upload_started.elapsed();
    eprintln!(
        "demo: published {} uploads ({} formIds, {} subscribe answers) in {}",
        fmt_n(population.uploads.len() as u64),
        fmt_n(population.form_ids_uploaded as u64),
        fmt_n(population.with_subscriptions as u64),
        fmt_secs(published_in)
    );
    let redis = deps.bank.connection();
    let guard =
        Duration::from_secs(120) + Duration::from_millis(population.users.len() as u64 * 10);
    loop {
        fleet.check_running()?;
        // Counting what the bank holds takes a round trip per user: only once ingest has
        // taken every upload from its queue (it holds at most its prefetch then), or to say
        // how far it got.
        let queued = queue_depth(deps, &topology.ingest_queue()).await?;
        let late = upload_started.elapsed() > guard;
        if queued == 0 || late {
            let stored = population.stored(deps, app, &redis).await?;
            let consents = population.consents_stored(deps, app).await?;
            let dead = queue_depth(deps, &topology.dead_queue("ingest")).await?;
            if stored >= population.expected_stored
                && consents >= population.expected_consents
                && dead >= population.unusable_uploads as u64
            {
                break;
            }
            if late {
                bail!(
                    "ingest stored {stored} of {} formIds and {consents} of {} consents, and \
                     dead-lettered {dead} of {} uploads with only expired formIds, within {} \
                     ({queued} uploads still queued); see {}",
                    population.expected_stored,
                    population.expected_consents,
                    population.unusable_uploads,
                    fmt_secs(guard),
                    logs.join("ingest.log").display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingested_in = upload_started.elapsed();
    eprintln!(
        "demo: ingest stored {} formIds and {} consents in {} ({} uploads with only expired \
         formIds dead-lettered, as they should be)",
        fmt_n(population.expected_stored),
        fmt_n(population.expected_consents),
        fmt_secs(ingested_in),
        fmt_n(population.unusable_uploads as u64)
    );
    Ok((published_in, ingested_in))
}

fn shown<'a>(plan: &'a Plan, progress: &'a Progress, wechat: &'a Deliveries) -> Shown<'a> {
    Shown {
        plan,
        progress,
        wechat,
    }
}

/// The environment of the role processes.
fn role_env(
    setup: &Setup,
    api_base: &str,
    events_addr: std::net::SocketAddr,
) -> Vec<(&'static str, String)> {
    let c = &setup.config;
    vec![
        ("WXPUSH_NAMESPACE", c.namespace.to_string()),
        ("WXPUSH_APP_ID", c.apps.default_id().to_string()),
        // The second app (act three); the first is the variables'.
        ("WXPUSH_CONFIG", setup.orders.file.display().to_string()),
        ("WXPUSH_APP_SECRET", setup.secret.clone()),
        ("WXPUSH_WECHAT_API_BASE", api_base.to_owned()),
        ("WXPUSH_REDIS_URL", c.redis_url.expose().to_owned()),
        ("WXPUSH_AMQP_URL", c.amqp_url.expose().to_owned()),
        ("WXPUSH_SEND_RATE", setup.rate.to_string()),
        ("WXPUSH_PUSH_TOKEN", String::new()),
        ("WXPUSH_ENCODING_AES_KEY", String::new()),
        ("WXPUSH_CONSENT_SOURCE", String::new()),
        ("WXPUSH_EVENTS_ADDR", events_addr.to_string()),
        ("WXPUSH_LOG", "warn".into()),
        ("WXPUSH_LOG_FORMAT", String::new()),
        ("WXPUSH_HTTP_ADDR", "127.0.0.1:0".into()),
    ]
}

// ---------------------------------------------------------------------------------------
// Small helpers

async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A free port on loopback (for `wxpush events`).
fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port for wxpush events")?;
    Ok(listener.local_addr()?)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A random number from the standard library's randomly keyed hasher.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A small PRNG (splitmix64) for the population: no cryptography needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn per_sec(n: u64, d: Duration) -> u64 {
    (n as f64 / d.as_secs_f64().max(0.001)) as u64
}

/// 12345 → "12,345".
fn fmt_n(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_n(0), "0");
        assert_eq!(fmt_n(999), "999");
        assert_eq!(fmt_n(1000), "1,000");
        assert_eq!(fmt_n(1_234_567), "1,234,567");
    }

    #[test]
    fn the_rng_stays_in_range() {
        let mut r = Rng(42);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
