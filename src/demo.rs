//! `wxpush demo`: the one-command showcase (contract section 1).
//!
//! It runs the whole fleet on this machine against an in-process fake WeChat: `ingest`,
//! `dispatch` and K `send` processes (children of this same binary), uploads a generated
//! population of users through the real upload path (`<ns>.formids`), publishes one campaign
//! to `<ns>.campaigns`, shows its progress, and ends with a report and the delivery checks
//! (nobody messaged twice, no formId accepted twice, everyone reachable messaged once, the
//! counts add up).
//!
//! This module owns the demo's orchestration and report. It uses its own namespace
//! (`wxpush-demo` unless one is given) and deletes that namespace's keys, queues and
//! exchanges at the start and at the end (unless `--keep`). It must not touch anything
//! outside that namespace: it refuses a namespace that holds data it did not create (for
//! instance a production `wxpush`), and it must not hold role logic (the roles run as the
//! real `wxpush` subcommands, unchanged).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lapin::Confirmation;
use redis::aio::ConnectionManager;
use serde_json::{json, Value};
use wxpush_broker::{Publisher, Topology};
use wxpush_domain::{AppId, Config, OpenId, RawConfig};
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeHandle, FakeWeChat};
use wxpush_roles::Deps;

/// The demo's namespace when none is given.
const DEFAULT_NAMESPACE: &str = "wxpush-demo";
/// The demo's appid when none is given.
const DEFAULT_APP_ID: &str = "wxdemo0000000000";
/// The template the fake knows and the campaign uses.
const TEMPLATE: &str = "TPL_DEMO";
/// The seed's comma-separated keywords.
const KEYWORDS: &str = "Daily check-in,Tap to keep your streak";
/// A campaign larger than this lists no openIds (the dispatcher's limit is 1 MiB): it goes
/// to every reachable user instead (`{"all": true}`).
const MAX_LIST_CAMPAIGN_BYTES: usize = 900 * 1024;
/// How long roles get to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Run everything locally (ingest, dispatch, senders, a fake WeChat), send one campaign to a
/// generated population, and check that nobody got two messages.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Users to generate (about 50% with several formIds, 25% with one, 15% with only expired
    /// ones, 10% with none)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    users: u32,
    /// Sender processes to run
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    senders: u32,
    /// Keep the demo's keys, queues and exchanges at the end (to look at them)
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
    let topology = Topology::new(setup.config.namespace.clone());
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

    let result = tokio::select! {
        r = demo(&setup, &args, &deps, &topology) => r,
        () = stop_requested() => Err(anyhow!("interrupted")),
    };
    // The roles are stopped by now (their guard is dropped): nothing re-declares queues.
    if args.keep {
        eprintln!("demo: kept namespace {ns} (delete it by running the demo again)");
    } else if let Err(e) = wipe_namespace(&deps, &topology, &mut redis, &ns).await {
        eprintln!("demo: could not delete namespace {ns}: {e:#}");
    }
    deps.broker.close().await;
    result
}

/// The demo's configuration: the install's (flags, environment) with the demo's defaults.
struct Setup {
    config: Config,
    secret: String,
    rate: u32,
}

impl Setup {
    fn new(common: &crate::Common, args: &DemoArgs) -> anyhow::Result<Self> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let mut raw = RawConfig::from_env();
        raw.amqp_url = given(&common.amqp_url).or(raw.amqp_url);
        raw.redis_url = given(&common.redis_url).or(raw.redis_url);
        raw.namespace = Some(given(&common.namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.into()));
        raw.app_id = Some(given(&common.app_id).unwrap_or_else(|| DEFAULT_APP_ID.into()));
        // Senders call the in-process fake; whatever WeChat is configured is not used.
        raw.wechat_api_base = None;
        let rate = match args.rate {
            Some(r) => r.to_string(),
            None => given(&common.send_rate).unwrap_or_else(|| "100000".into()),
        };
        raw.send_rate = Some(rate);
        let config = raw.validate()?;
        let rate = config.send_rate;
        Ok(Self {
            config,
            secret: format!("demo{:016x}{:012x}", random_u64(), random_u64() >> 16),
            rate,
        })
    }
}

async fn demo(
    setup: &Setup,
    args: &DemoArgs,
    deps: &Deps,
    topology: &Topology,
) -> anyhow::Result<()> {
    let ns = setup.config.namespace.to_string();
    let app = setup.config.app_id.clone();
    let users = args.users as usize;
    let mut fake_config =
        FakeConfig::with_apps(vec![
            FakeApp::new(app.as_str(), setup.secret.clone()).with_templates([TEMPLATE])
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
    let env = role_env(setup, &fake.base_url());
    fleet.spawn("ingest", &["ingest"], &env)?;
    fleet.spawn("dispatch", &["dispatch"], &env)?;
    for k in 1..=args.senders {
        fleet.spawn(&format!("send-{k}"), &["send"], &env)?;
    }
    eprintln!(
        "demo: started ingest, dispatch and {} sender{} (logs in {})",
        args.senders,
        if args.senders == 1 { "" } else { "s" },
        logs.display()
    );

    // The population, uploaded through the real upload path.
    let population = Population::generate(&fake, &app, users)?;
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
        "demo: published {} uploads ({} formIds) in {}",
        fmt_n(population.uploads.len() as u64),
        fmt_n(population.form_ids_uploaded as u64),
        fmt_secs(published_in)
    );
    let mut redis = deps.bank.connection();
    let guard = Duration::from_secs(120) + Duration::from_millis(users as u64 * 10);
    loop {
        fleet.check_running()?;
        let stored = population.stored(deps, &app, &mut redis).await?;
        let dead = queue_depth(deps, &topology.dead_queue("ingest")).await?;
        if stored >= population.expected_stored && dead >= population.expired_uploads as u64 {
            break;
        }
        if upload_started.elapsed() > guard {
            bail!(
                "ingest stored {stored} of {} formIds and dead-lettered {dead} of {} expired \
                 uploads within {}; see {}",
                population.expected_stored,
                population.expired_uploads,
                fmt_secs(guard),
                logs.join("ingest.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingested_in = upload_started.elapsed();
    eprintln!(
        "demo: ingest stored {} formIds in {} ({} expired-only uploads dead-lettered, as they \
         should be)",
        fmt_n(population.expected_stored),
        fmt_secs(ingested_in),
        fmt_n(population.expired_uploads as u64)
    );

    // The campaign.
    let campaign_id = format!("demo-{}", unix_ms() / 1000);
    let mut campaign = json!({
        "campaignId": campaign_id,
        "templateId": TEMPLATE,
        "page": "pages/checkin/index?from=demo",
        "keywords": KEYWORDS,
        "emphasisKeyword": "keyword1.DATA",
        "audience": {"openIds": population.users.iter().map(|u| u.open_id.as_str()).collect::<Vec<_>>()},
    });
    let mut body = serde_json::to_vec(&campaign)?;
    let listed = body.len() <= MAX_LIST_CAMPAIGN_BYTES;
    if !listed {
        campaign["audience"] = json!({"all": true});
        body = serde_json::to_vec(&campaign)?;
    }
    let audience_size = if listed {
        users as u64
    } else {
        population.reachable() as u64
    };
    let published_at = Instant::now();
    publish_campaign(deps, topology, &body, &mut fleet).await?;
    eprintln!(
        "demo: published campaign {campaign_id} ({} bytes, audience {})",
        fmt_n(body.len() as u64),
        if listed {
            format!("{} openIds", fmt_n(users as u64))
        } else {
            "all reachable users".into()
        }
    );

    let progress = watch(
        deps,
        setup,
        &campaign_id,
        audience_size,
        &mut fleet,
        published_at,
    )
    .await?;

    // Stop the fleet, then judge what WeChat saw.
    let exits = fleet.stop_all();
    let requests = fake.requests();
    let stats = fake.stats();
    fake.shutdown().await;

    let report = Report {
        ns: &ns,
        args,
        rate: setup.rate,
        population: &population,
        published_in,
        ingested_in,
        campaign_id: &campaign_id,
        listed,
        audience_size,
        progress: &progress,
        requests: &requests,
        token_fetches: stats.token_fetches.get(app.as_str()).copied().unwrap_or(0),
        exits: &exits,
        logs: &logs,
    };
    let (text, failures) = report.render();
    print!("{text}");
    let _ = std::io::stdout().flush();
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

/// The environment of the role processes.
fn role_env(setup: &Setup, api_base: &str) -> Vec<(&'static str, String)> {
    let c = &setup.config;
    vec![
        ("WXPUSH_NAMESPACE", c.namespace.to_string()),
        ("WXPUSH_APP_ID", c.app_id.to_string()),
        ("WXPUSH_APP_SECRET", setup.secret.clone()),
        ("WXPUSH_WECHAT_API_BASE", api_base.to_owned()),
        ("WXPUSH_REDIS_URL", c.redis_url.clone()),
        ("WXPUSH_AMQP_URL", c.amqp_url.clone()),
        ("WXPUSH_SEND_RATE", setup.rate.to_string()),
        ("WXPUSH_LOG", "warn".into()),
        ("WXPUSH_LOG_FORMAT", String::new()),
        ("WXPUSH_HTTP_ADDR", "127.0.0.1:0".into()),
    ]
}

// ---------------------------------------------------------------------------------------
// The role processes

/// The role processes; dropping it stops them (SIGTERM, then SIGKILL after a grace period),
/// so no error path leaves one running.
struct Fleet {
    logs: PathBuf,
    children: Vec<(String, Child)>,
}

impl Fleet {
    fn new(logs: PathBuf) -> Self {
        Self {
            logs,
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, name: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the wxpush binary")?;
        let log_path = self.logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `wxpush {}`", args.join(" ")))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Fails when a role has stopped on its own, with the last line it wrote.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let last = last_line(&self.logs.join(format!("{name}.log")));
                bail!("the {name} role stopped ({status}): {last}");
            }
        }
        Ok(())
    }

    /// SIGTERM to every role, then waits for each (SIGKILL after the grace period).
    /// Returns each role's exit status (`None`: it had to be killed).
    fn stop_all(&mut self) -> Vec<(String, Option<ExitStatus>)> {
        for (_, child) in &self.children {
            terminate(child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut out = Vec::new();
        for (name, mut child) in self.children.drain(..) {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            out.push((name, status));
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.stop_all();
        }
    }
}

/// Sends SIGTERM (graceful stop) to a child.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last non-empty line of a role's log (its one-line error, when it failed).
fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(no output)".into())
}

// ---------------------------------------------------------------------------------------
// The population

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 2 to 5 usable formIds.
    Several,
    /// One usable formId.
    One,
    /// Only formIds that have expired: ingest drops them.
    Expired,
    /// Never uploaded anything.
    Nothing,
}

struct DemoUser {
    open_id: String,
    kind: Kind,
    /// Holds a usable formId once ingest is done.
    reachable: bool,
}

struct Population {
    users: Vec<DemoUser>,
    uploads: Vec<Vec<u8>>,
    form_ids_uploaded: usize,
    /// formIds uploaded a second time (a client re-sending an old upload): stored once.
    resent: usize,
    /// Uploads carrying `formIds` as a JSON string (as the seed's client sends them).
    as_string: usize,
    /// Uploads holding only expired formIds: ingest dead-letters them (`no_usable_entry`).
    expired_uploads: usize,
    /// formIds the bank should hold once ingest is done.
    expected_stored: u64,
}

impl Population {
    fn generate(fake: &FakeHandle, app: &AppId, users: usize) -> anyhow::Result<Self> {
        let mut rng = Rng(random_u64() | 1);
        let run = rng.next() & 0xffff_ffff_ffff;
        let mut p = Population {
            users: Vec::with_capacity(users),
            uploads: Vec::new(),
            form_ids_uploaded: 0,
            resent: 0,
            as_string: 0,
            expired_uploads: 0,
            expected_stored: 0,
        };
        let now = unix_ms();
        let app_id = Some(app.as_str());
        let issue = |open_id: &str, ttl: Duration| -> anyhow::Result<String> {
            fake.issue_form_ids(app_id, open_id, 1, Some(ttl))
                .map_err(|e| anyhow!("fake WeChat: {e}"))?
                .pop()
                .ok_or_else(|| anyhow!("fake WeChat issued no formId"))
        };
        for i in 0..users {
            // 28 characters, like a real openId.
            let open_id = format!(
                "oDmo{i:08}{:016x}",
                run.wrapping_mul(0x9e37_79b9) ^ i as u64
            );
            let kind = match rng.below(100) {
                0..=49 => Kind::Several,
                50..=74 => Kind::One,
                75..=89 => Kind::Expired,
                _ => Kind::Nothing,
            };
            let mut entries: Vec<Value> = Vec::new();
            match kind {
                Kind::Several | Kind::One => {
                    let n = if kind == Kind::One {
                        1
                    } else {
                        2 + rng.below(4)
                    };
                    for _ in 0..n {
                        // Between 1 hour and 6 days left.
                        let ttl = Duration::from_secs(3600 + rng.below(5 * 24 * 3600));
                        let id = issue(&open_id, ttl)?;
                        // Some clients send no expiry: the server assumes 7 days.
                        if rng.below(4) == 0 {
                            entries.push(json!({ "formId": id }));
                        } else {
                            entries.push(json!({
                                "formId": id,
                                "expire": now + ttl.as_millis() as i64,
                            }));
                        }
                    }
                    p.expected_stored += n;
                }
                Kind::Expired => {
                    for _ in 0..1 + rng.below(3) {
                        let id = issue(&open_id, Duration::ZERO)?;
                        let ago = 3_600_000 + rng.below(3 * 86_400_000) as i64;
                        entries.push(json!({ "formId": id, "expire": now - ago }));
                    }
                }
                Kind::Nothing => {}
            }
            p.form_ids_uploaded += entries.len();
            // Several formIds often come in two uploads; now and then the second one
            // repeats a formId of the first (a client re-sending).
            let mut batches = if entries.len() >= 3 && rng.below(2) == 0 {
                let second = entries.split_off(entries.len() / 2);
                vec![entries, second]
            } else if entries.is_empty() {
                vec![]
            } else {
                vec![entries]
            };
            if batches.len() == 2 && rng.below(5) == 0 {
                let again = batches[0][0].clone();
                batches[1].push(again);
                p.resent += 1;
                p.form_ids_uploaded += 1;
            }
            for batch in batches {
                let form_ids = if rng.below(3) == 0 {
                    p.as_string += 1;
                    Value::String(serde_json::to_string(&batch)?)
                } else {
                    Value::Array(batch)
                };
                if kind == Kind::Expired {
                    p.expired_uploads += 1;
                }
                p.uploads.push(serde_json::to_vec(
                    &json!({ "openId": open_id, "formIds": form_ids }),
                )?);
            }
            p.users.push(DemoUser {
                open_id,
                kind,
                reachable: matches!(kind, Kind::Several | Kind::One),
            });
        }
        Ok(p)
    }

    fn count(&self, kind: Kind) -> usize {
        self.users.iter().filter(|u| u.kind == kind).count()
    }

    /// Users holding a usable formId.
    fn reachable(&self) -> usize {
        self.users.iter().filter(|u| u.reachable).count()
    }

    /// formIds the bank holds now for the demo's users (one ZCARD per user, pipelined).
    async fn stored(
        &self,
        deps: &Deps,
        app: &AppId,
        redis: &mut ConnectionManager,
    ) -> anyhow::Result<u64> {
        let mut total = 0;
        let with_ids: Vec<&DemoUser> = self.users.iter().filter(|u| u.reachable).collect();
        for chunk in with_ids.chunks(5000) {
            let mut pipe = redis::pipe();
            for u in chunk {
                let open_id = OpenId::new(&u.open_id)?;
                pipe.cmd("ZCARD")
                    .arg(deps.bank.keys().credentials(app, &open_id));
            }
            let counts: Vec<u64> = pipe.query_async(redis).await.context("Redis")?;
            total += counts.iter().sum::<u64>();
        }
        Ok(total)
    }
}

// ---------------------------------------------------------------------------------------
// The campaign

/// Publishes the campaign with confirms, `mandatory`: until the dispatcher has bound its
/// queue to `<ns>.campaigns` the broker returns it, and it is published again.
async fn publish_campaign(
    deps: &Deps,
    topology: &Topology,
    body: &[u8],
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let ch = deps.broker.channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = topology.campaigns_exchange();
    let started = Instant::now();
    loop {
        fleet.check_running()?;
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                "demo".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => break,
            Confirmation::Nack(_) => bail!("RabbitMQ refused the campaign on {exchange}"),
            Confirmation::Ack(Some(_)) => {
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("no dispatcher queue is bound to {exchange} after 60 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// What the campaign's records said when it completed.
struct Progress {
    targeted: u64,
    counters: BTreeMap<String, u64>,
    /// First job (dispatch start) to last outcome.
    elapsed: Duration,
}

impl Progress {
    fn get(&self, field: &str) -> u64 {
        self.counters.get(field).copied().unwrap_or(0)
    }

    fn failed(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Jobs that reached their final outcome (campaign_format.md).
    fn finished(&self) -> u64 {
        self.get("sent")
            + self.get("sent_unconfirmed")
            + self.get("no_credential")
            + self.failed()
            + self.get("dead_lettered")
            + self.get("duplicate")
    }
}

/// Follows the campaign's record (`NS:camp:CID`, written by the dispatcher) and outcome
/// counters (summed over the bank's shards) until it is complete, with a progress line on
/// stderr.
async fn watch(
    deps: &Deps,
    setup: &Setup,
    campaign_id: &str,
    audience: u64,
    fleet: &mut Fleet,
    published_at: Instant,
) -> anyhow::Result<Progress> {
    let (app, ns, rate) = (&setup.config.app_id, &setup.config.namespace, setup.rate);
    let camp_key = wxpush_roles::dispatch::record_key(ns, campaign_id);
    let mut redis = deps.bank.connection();
    let tty = std::io::stderr().is_terminal();
    let guard = Duration::from_secs(600) + Duration::from_secs(2 * audience / u64::from(rate));
    let mut last_line_at = Instant::now();
    loop {
        fleet.check_running()?;
        let camp: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&camp_key)
            .query_async(&mut redis)
            .await
            .context("Redis")?;
        let mut counters: BTreeMap<String, u64> =
            wxpush_roles::outcomes::read(&deps.bank, app, campaign_id)
                .await
                .context("Redis")?
                .into_iter()
                .map(|(k, v)| (k, v.max(0) as u64))
                .collect();
        let last_at_ms = counters.remove("last_at_ms");
        let num = |m: &HashMap<String, String>, k: &str| -> Option<u64> {
            m.get(k).and_then(|v| v.parse().ok())
        };
        let targeted = num(&camp, "targeted").unwrap_or(0);
        let now_ms = unix_ms();
        let started_ms = num(&camp, "started_at_ms").map(|v| v as i64);
        let since_start = match started_ms {
            Some(s) => Duration::from_millis(now_ms.saturating_sub(s).max(0) as u64),
            None => published_at.elapsed(),
        };
        let mut p = Progress {
            targeted,
            counters,
            elapsed: since_start,
        };
        let done = p.finished();
        let dispatched = camp.get("state").is_some_and(|s| s == "dispatched");
        let complete = dispatched && targeted > 0 && done >= targeted;
        let total = targeted.max(audience).max(1);
        let secs = since_start.as_secs_f64().max(0.001);
        let per_sec = done as f64 / secs;
        let eta = if per_sec > 0.0 && done < total {
            format!(
                "ETA {}",
                fmt_secs(Duration::from_secs_f64((total - done) as f64 / per_sec))
            )
        } else {
            "ETA -".into()
        };
        let line = format!(
            "{:>3}% {}/{} · sent {} · no credential {} · failed {} · {}/s · {eta}",
            done * 100 / total,
            fmt_n(done),
            fmt_n(targeted),
            fmt_n(p.get("sent") + p.get("sent_unconfirmed")),
            fmt_n(p.get("no_credential")),
            fmt_n(p.failed() + p.get("dead_lettered")),
            fmt_n(per_sec as u64),
        );
        if tty {
            eprint!("\r\x1b[Kdemo: {line}");
        } else if complete || last_line_at.elapsed() >= Duration::from_secs(2) {
            eprintln!("demo: {line}");
            last_line_at = Instant::now();
        }
        if complete {
            if tty {
                eprintln!();
            }
            if let (Some(start), Some(last)) = (started_ms, last_at_ms) {
                p.elapsed = Duration::from_millis((last as i64 - start).max(1) as u64);
            }
            return Ok(p);
        }
        if published_at.elapsed() > guard {
            if tty {
                eprintln!();
            }
            bail!(
                "campaign {campaign_id} not complete after {} ({} of {} jobs finished, state {})",
                fmt_secs(guard),
                done,
                targeted,
                camp.get("state").map_or("none", String::as_str)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    ns: &'a str,
    args: &'a DemoArgs,
    rate: u32,
    population: &'a Population,
    published_in: Duration,
    ingested_in: Duration,
    campaign_id: &'a str,
    listed: bool,
    audience_size: u64,
    progress: &'a Progress,
    requests: &'a [wxpush_fake_wechat::RequestRecord],
    token_fetches: u64,
    exits: &'a [(String, Option<ExitStatus>)],
    logs: &'a Path,
}

impl Report<'_> {
    /// The report text and the checks that failed.
    fn render(&self) -> (String, Vec<String>) {
        let p = self.population;
        let g = self.progress;
        let mut out = String::new();
        let mut failures = Vec::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "\nwxpush demo: {} users, {} sender process{}, namespace {}, send rate {}/s\n",
            fmt_n(p.users.len() as u64),
            self.args.senders,
            if self.args.senders == 1 { "" } else { "es" },
            self.ns,
            fmt_n(u64::from(self.rate))
        );
        let _ = writeln!(w, "Users");
        for (kind, label) in [
            (Kind::Several, "several formIds (2-5)"),
            (Kind::One, "one formId"),
            (Kind::Expired, "only expired formIds"),
            (Kind::Nothing, "no formId"),
        ] {
            let _ = writeln!(w, "  {label:<24}{:>10}", fmt_n(p.count(kind) as u64));
        }
        let _ = writeln!(
            w,
            "  uploads: {} messages, {} formIds ({} sent again by a client, {} uploads with \
             formIds as a JSON string)",
            fmt_n(p.uploads.len() as u64),
            fmt_n(p.form_ids_uploaded as u64),
            fmt_n(p.resent as u64),
            fmt_n(p.as_string as u64)
        );
        let _ = writeln!(
            w,
            "  ingest: {} formIds stored and {} expired-only uploads dead-lettered {} after \
             publishing began (published in {}, {} uploads/s)",
            fmt_n(p.expected_stored),
            fmt_n(p.expired_uploads as u64),
            fmt_secs(self.ingested_in),
            fmt_secs(self.published_in),
            fmt_n(per_sec(p.uploads.len() as u64, self.ingested_in))
        );

        let sent = g.get("sent");
        let unconfirmed = g.get("sent_unconfirmed");
        let no_cred = g.get("no_credential");
        let failed = g.failed();
        let dead = g.get("dead_lettered");
        let _ = writeln!(
            w,
            "\nCampaign {} (template {TEMPLATE}, audience: {})",
            self.campaign_id,
            if self.listed {
                format!("{} openIds", fmt_n(self.audience_size))
            } else {
                format!(
                    "all reachable users ({}; the list would be over {} KiB)",
                    fmt_n(self.audience_size),
                    MAX_LIST_CAMPAIGN_BYTES / 1024
                )
            }
        );
        let mut rows: Vec<(String, u64)> = vec![
            ("targeted".into(), g.targeted),
            ("sent".into(), sent),
            ("sent, unconfirmed".into(), unconfirmed),
            ("no credential".into(), no_cred),
        ];
        rows.push(("failed".into(), failed));
        for (k, v) in g.counters.iter().filter(|(k, _)| k.starts_with("failed:")) {
            rows.push((format!("  {k}"), *v));
        }
        rows.push(("dead-lettered".into(), dead));
        rows.push(("duplicate (skipped)".into(), g.get("duplicate")));
        rows.push(("retried attempts".into(), g.get("retried")));
        for (label, v) in rows {
            let _ = writeln!(w, "  {label:<24}{:>10}", fmt_n(v));
        }
        let _ = writeln!(
            w,
            "  elapsed                 {:>10}   (first job to last outcome)",
            fmt_secs(g.elapsed)
        );
        let _ = writeln!(
            w,
            "  throughput              {:>10}   messages/s ({} jobs/s)",
            fmt_n(per_sec(sent + unconfirmed, g.elapsed)),
            fmt_n(per_sec(g.finished(), g.elapsed))
        );

        // What WeChat (the fake) accepted.
        let mut per_user: HashMap<&str, u64> = HashMap::new();
        let mut per_form_id: HashMap<&str, u64> = HashMap::new();
        let mut send_calls = 0u64;
        for r in self.requests {
            let Some(to) = r.touser.as_deref() else {
                continue;
            };
            send_calls += 1;
            if r.errcode == Some(0) {
                *per_user.entry(to).or_default() += 1;
                if let Some(f) = r.form_id.as_deref() {
                    *per_form_id.entry(f).or_default() += 1;
                }
            }
        }
        let accepted: u64 = per_user.values().sum();
        let _ = writeln!(
            w,
            "  WeChat                  {:>10}   send calls, {} accepted, {} access token fetch{}",
            fmt_n(send_calls),
            fmt_n(accepted),
            self.token_fetches,
            if self.token_fetches == 1 { "" } else { "es" }
        );

        let _ = writeln!(w, "\nChecks");
        let mut check = |ok: bool, text: String| {
            let _ = writeln!(w, "  {} {text}", if ok { "✓" } else { "✗" });
            if !ok {
                failures.push(text);
            }
        };
        let twice = per_user.values().filter(|&&n| n > 1).count();
        check(
            twice == 0,
            format!(
                "no user got two messages ({} user{} did)",
                fmt_n(twice as u64),
                if twice == 1 { "" } else { "s" }
            ),
        );
        let reused = per_form_id.values().filter(|&&n| n > 1).count();
        check(
            reused == 0,
            format!(
                "no formId was accepted twice ({} were)",
                fmt_n(reused as u64)
            ),
        );
        let reachable: HashSet<&str> = p
            .users
            .iter()
            .filter(|u| u.reachable)
            .map(|u| u.open_id.as_str())
            .collect();
        let messaged_once = reachable
            .iter()
            .filter(|u| per_user.get(*u) == Some(&1))
            .count();
        let strangers = per_user.keys().filter(|u| !reachable.contains(*u)).count();
        check(
            messaged_once == reachable.len()
                && strangers == 0
                && sent + unconfirmed == reachable.len() as u64,
            format!(
                "every user with a usable formId got exactly one message ({} of {}; sent + \
                 sent unconfirmed = {}; messages to users without one: {})",
                fmt_n(messaged_once as u64),
                fmt_n(reachable.len() as u64),
                fmt_n(sent + unconfirmed),
                strangers
            ),
        );
        let total = sent + unconfirmed + no_cred + failed + dead;
        check(
            total == self.audience_size,
            format!(
                "outcomes add up: {} sent + {} unconfirmed + {} no credential + {} failed + {} \
                 dead-lettered = {} of {} {}",
                fmt_n(sent),
                fmt_n(unconfirmed),
                fmt_n(no_cred),
                fmt_n(failed),
                fmt_n(dead),
                fmt_n(total),
                fmt_n(self.audience_size),
                if self.listed {
                    "users"
                } else {
                    "reachable users"
                }
            ),
        );
        let unclean: Vec<String> = self
            .exits
            .iter()
            .filter(|(_, s)| !s.is_some_and(|s| s.success()))
            .map(|(name, s)| match s {
                Some(s) => format!("{name} {s}"),
                None => format!("{name} killed after {}", fmt_secs(STOP_GRACE)),
            })
            .collect();
        check(
            unclean.is_empty(),
            if unclean.is_empty() {
                format!(
                    "all {} roles stopped cleanly on SIGTERM (exit 0)",
                    self.exits.len()
                )
            } else {
                format!(
                    "roles stopped cleanly on SIGTERM: {} (logs in {})",
                    unclean.join(", "),
                    self.logs.display()
                )
            },
        );

        let _ = write!(
            w,
            "\nThe same roles run as separate processes, as many of each as you like, against \
             any Redis and RabbitMQ (WXPUSH_REDIS_URL, WXPUSH_AMQP_URL):\n\
             \n  export WXPUSH_NAMESPACE=wxpush WXPUSH_APP_ID=wx... WXPUSH_APP_SECRET=...\
             \n  wxpush mock-wechat --listen 127.0.0.1:8089 --template {TEMPLATE} &   \
             # a fake WeChat; leave it out for the real one\
             \n  export WXPUSH_WECHAT_API_BASE=http://127.0.0.1:8089\
             \n  wxpush ingest &  wxpush dispatch &  wxpush send &  wxpush send &\
             \n\nthen publish uploads to the exchange wxpush.formids and a campaign to \
             wxpush.campaigns, and follow it with `wxpush campaign status <campaignId> \
             --watch`. SIGTERM stops a role gracefully. See the README.\n"
        );
        (out, failures)
    }
}

// ---------------------------------------------------------------------------------------
// The namespace

/// The key that marks a namespace as the demo's own.
fn marker_key(ns: &str) -> String {
    format!("{ns}:demo")
}

/// Refuses a namespace that holds keys or queued work the demo did not create (say, a
/// production install's), so the clean-up never deletes anything but the demo's own data.
async fn claim_namespace(
    deps: &Deps,
    topology: &Topology,
    redis: &mut ConnectionManager,
    ns: &str,
) -> anyhow::Result<()> {
    let marked: bool = redis::cmd("EXISTS")
        .arg(marker_key(ns))
        .query_async(redis)
        .await
        .context("Redis")?;
    if marked {
        return Ok(());
    }
    let refuse = |what: String| {
        anyhow!(
            "namespace {ns} holds {what} that the demo did not create; the demo deletes its \
             namespace, so it runs only in a new one or its own (the default is \
             {DEFAULT_NAMESPACE}; choose another with --namespace)"
        )
    };
    if ns == wxpush_domain::config::DEFAULT_NAMESPACE {
        bail!(
            "the demo deletes its namespace, so it does not run in {ns}, the default install's; \
             unset WXPUSH_NAMESPACE (the demo's default is {DEFAULT_NAMESPACE}) or choose \
             another with --namespace"
        );
    }
    if let Some(key) = scan_keys(redis, ns, 1).await?.first() {
        return Err(refuse(format!("keys ({key})")));
    }
    let delay: Vec<String> = wxpush_broker::topology::DELAY_TIERS
        .iter()
        .map(|t| topology.delay_queue(*t))
        .collect();
    for q in topology.all_queues().iter().filter(|q| !delay.contains(q)) {
        if let Some(what) = queue_in_use(deps, q).await? {
            return Err(refuse(format!("the queue {q} ({what})")));
        }
    }
    Ok(())
}

/// Whether a queue holds messages or has consumers. A durable queue without arguments is
/// declared as the roles declare it (a passive declare of a missing queue would close the
/// channel with an error); one declared here is deleted by the clean-up that follows.
async fn queue_in_use(deps: &Deps, queue: &str) -> anyhow::Result<Option<String>> {
    let ch = deps.broker.channel().await?;
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = ch.close(200, "ok".into()).await;
    Ok(match declared {
        Ok(q) if q.message_count() > 0 => Some(format!("{} messages", q.message_count())),
        Ok(q) if q.consumer_count() > 0 => Some(format!("{} consumers", q.consumer_count())),
        Ok(_) => None,
        Err(_) => Some("declared with other arguments".into()),
    })
}

/// Deletes the namespace's queues, exchanges and keys (the marker last).
async fn wipe_namespace(
    deps: &Deps,
    topology: &Topology,
    redis: &mut ConnectionManager,
    ns: &str,
) -> anyhow::Result<()> {
    let mut ch = deps.broker.channel().await?;
    for q in topology.all_queues() {
        if ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .is_err()
        {
            ch = deps.broker.channel().await?;
        }
    }
    for e in topology.all_exchanges() {
        if ch
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .is_err()
        {
            ch = deps.broker.channel().await?;
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    let marker = marker_key(ns);
    let keys: Vec<String> = scan_keys(redis, ns, usize::MAX)
        .await?
        .into_iter()
        .filter(|k| *k != marker)
        .collect();
    for chunk in keys.chunks(1000) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(redis)
            .await
            .context("Redis")?;
    }
    redis::cmd("UNLINK")
        .arg(&marker)
        .query_async::<()>(redis)
        .await
        .context("Redis")?;
    Ok(())
}

/// Keys of the namespace, up to `limit`. Product code otherwise never SCANs (it is O(all
/// keys)); here it walks only the demo's own namespace, once at the start and once at the end.
async fn scan_keys(
    redis: &mut ConnectionManager,
    ns: &str,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await
            .context("Redis")?;
        out.extend(keys);
        if next == 0 || out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
        cursor = next;
    }
}

/// Messages ready in a queue the demo declared (0 when it does not exist).
async fn queue_depth(deps: &Deps, queue: &str) -> anyhow::Result<u64> {
    Ok(deps.broker.queue_ready(queue).await?.map_or(0, u64::from))
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
