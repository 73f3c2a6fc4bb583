//! `wxpush`: the one binary, a subcommand per role (contract section 1).
//!
//! This file owns the command line, logging set-up, signals and exit codes: configuration
//! errors and unreachable dependencies end as one line on stderr and a non-zero exit, never a
//! panic or a backtrace. It must not hold role logic (that is `wxpush-roles`).

use std::process::ExitCode;

mod control;
mod dashboard;
mod demo;
mod message;
mod ops;
mod probe;
mod reach;
mod retry;
mod status;

use clap::{Args, Parser, Subcommand};
use wxpush_bank::record::Control;
use wxpush_broker::Topology;
use wxpush_domain::{AppId, Config, RawConfig, SecretUrl};
use wxpush_roles::dispatch::{self, DispatchSettings};
use wxpush_roles::events::{self, EventsSettings};
use wxpush_roles::ingest::{self, IngestSettings};
use wxpush_roles::send::{self, SendParts, SendSettings, SendStats};
use wxpush_roles::{Deps, Health, ShutdownTrigger};

/// Reach WeChat mini-program users when it matters: a credential bank, ingest, dispatch and
/// send roles. Every option can also be set by the environment variable shown.
#[derive(Parser)]
#[command(name = "wxpush", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// RabbitMQ URL
    #[arg(long, global = true, env = "WXPUSH_AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// Redis URL
    #[arg(long, global = true, env = "WXPUSH_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of every Redis key, exchange and queue of this install
    #[arg(long, global = true, env = "WXPUSH_NAMESPACE")]
    namespace: Option<String>,
    /// The mini program's appid
    #[arg(long, global = true, env = "WXPUSH_APP_ID")]
    app_id: Option<String>,
    /// Where WeChat's API is
    #[arg(long, global = true, env = "WXPUSH_WECHAT_API_BASE")]
    wechat_api_base: Option<String>,
    /// Fleet-wide WeChat send calls per second
    #[arg(long, global = true, env = "WXPUSH_SEND_RATE")]
    send_rate: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume credential uploads from RabbitMQ into the Redis credential bank
    Ingest,
    /// Consume campaigns and fan each out into one send job per recipient
    Dispatch,
    /// Sender worker: claim a credential, call WeChat, record the outcome
    Send,
    /// WeChat's message push (consent and delivery events) on WXPUSH_EVENTS_ADDR,
    /// /wechat/<appid> for each app with a push_token
    Events,
    /// All roles in one process (small installs, development); events too when an app has a
    /// push_token
    All,
    /// Campaign progress and outcome counts
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// What became of a single message (contract 8.2)
    Message {
        #[command(subcommand)]
        command: MessageCommand,
    },
    /// Reach forecast: users reachable now and on each of the next 7 days, consents per template
    Reach(reach::ReachArgs),
    /// The operators' dashboard (web page and JSON API) on WXPUSH_DASHBOARD_ADDR (default
    /// 127.0.0.1:8088); read-only unless WXPUSH_DASHBOARD_TOKEN is set
    Dashboard,
    /// The fake WeChat API server, for development and tests
    MockWechat(MockArgs),
    /// The one-command showcase against the fake WeChat
    Demo(demo::DemoArgs),
    /// Exit 0 if this container's role answers GET /healthz (for a Dockerfile HEALTHCHECK)
    Healthcheck(probe::HealthcheckArgs),
}

#[derive(Args)]
struct MockArgs {
    /// Address to listen on (port 0 picks a free one; the address is logged)
    #[arg(long, default_value = "127.0.0.1:8089", env = "WXPUSH_MOCK_LISTEN")]
    listen: String,
    /// The fake's configuration as JSON (apps, token lifetime, faults; see the
    /// wxpush-fake-wechat crate). Without it: one app, WXPUSH_APP_ID with WXPUSH_APP_SECRET.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// A template id the default app knows (repeatable; more via POST /fake/templates)
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Access token lifetime, in seconds
    #[arg(long)]
    token_lifetime_secs: Option<u64>,
    /// Bearer token the control API (/fake/...) requires. Without it the control API is open
    /// on a loopback --listen address and refused (403) on any other
    #[arg(long, env = "WXPUSH_MOCK_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
}

#[derive(Subcommand)]
enum MessageCommand {
    /// Print a single message's outcome, from its receipts (kept 9 days)
    Status {
        /// The message's id (its messageId)
        id: String,
        /// The message's app (default: whichever configured app has a message of that id)
        #[arg(long = "app")]
        app: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CampaignCommand {
    /// Print a campaign's progress and outcome counts
    Status {
        /// The campaign's id
        id: String,
        /// The campaign's app (default: whichever configured app has a campaign of that id)
        #[arg(long = "app")]
        app: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Show a live progress bar with rate and ETA until the campaign ends
        #[arg(long)]
        watch: bool,
    },
    /// Pause the campaign fleet-wide: its jobs are parked, spending nothing, until `resume`
    Pause {
        /// The campaign's id
        id: String,
        /// The campaign's app (default: whichever configured app has a campaign of that id)
        #[arg(long = "app")]
        app: Option<String>,
    },
    /// Resume a paused campaign
    Resume {
        /// The campaign's id
        id: String,
        /// The campaign's app (default: whichever configured app has a campaign of that id)
        #[arg(long = "app")]
        app: Option<String>,
    },
    /// Cancel the campaign: its recipients not yet sent are recorded `cancelled`, nothing spent
    Cancel {
        /// The campaign's id
        id: String,
        /// The campaign's app (default: whichever configured app has a campaign of that id)
        #[arg(long = "app")]
        app: Option<String>,
    },
    /// Send the campaign again to its dead-lettered recipients (an outage outlasted
    /// WXPUSH_SEND_RETRY_FOR), and to nobody else
    Retry {
        /// The campaign's id
        id: String,
        /// The campaign's app (default: whichever configured app has a campaign of that id)
        #[arg(long = "app")]
        app: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before anything is printed: every secret the configuration holds, valid or not.
    ops::scrubber().add_all(&raw_config(&cli.common).secrets());
    if let Err(e) = init_logging() {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints the error chain as one line, secrets scrubbed, and returns the failure exit code.
fn fail(e: &anyhow::Error) -> ExitCode {
    let line = ops::scrubber().scrub(&format!("{e:#}").replace('\n', " "));
    eprintln!("wxpush: {line}");
    ExitCode::FAILURE
}

/// Logs to stderr, secrets scrubbed: human-readable by default, one JSON object per line with
/// `WXPUSH_LOG_FORMAT=json`; the level and targets from `WXPUSH_LOG` (default `info`), other
/// crates than wxpush's own never above INFO ([`ops::log_layer`]). By default the Redis
/// Cluster client's own warnings are left out (`redis::cluster_handling=error`): it warns once
/// per node it cannot reach, which says again, in several lines, what the role reports itself
/// (a start-up failure stays one line; a Redis error at work is logged by the role). So are
/// lapin's own lines for a channel the broker closed (`lapin::channel=off`): the call on it
/// returns that error to the role, which handles or reports it; a passive declare of a queue
/// that does not exist yet (the demo's and the dashboard's looks) is no error at all.
fn init_logging() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WXPUSH_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,redis::cluster_handling=error,lapin::channel=off")
    });
    let json = match std::env::var("WXPUSH_LOG_FORMAT")
        .unwrap_or_default()
        .as_str()
    {
        "" | "human" | "text" => false,
        "json" => true,
        other => anyhow::bail!("WXPUSH_LOG_FORMAT is invalid: '{other}' is not human or json"),
    };
    let writer = ops::ScrubbedStderr::new(ops::scrubber());
    tracing_subscriber::registry()
        .with(ops::log_layer(filter, json, writer))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The apps of the install, for messages that say what was looked for and what there is:
/// `configured: wx1, wx2`.
fn configured_apps(config: &Config) -> String {
    let ids: Vec<&str> = config.apps.iter().map(|a| a.id.as_str()).collect();
    format!("configured: {}", ids.join(", "))
}

/// Of the configured apps found holding campaign `id` (in configuration order), the one meant
/// by a command given no `--app`: its index in `found`, or an error saying none holds it or
/// asking for `--app` when several do.
fn the_app_holding(config: &Config, id: &str, found: &[&AppId]) -> anyhow::Result<usize> {
    match found.len() {
        0 => Err(anyhow::anyhow!(
            "no campaign {id} in namespace {} for any of the {} apps ({})",
            config.namespace,
            config.apps.len(),
            configured_apps(config)
        )),
        1 => Ok(0),
        _ => Err(anyhow::anyhow!(
            "campaign {id} exists for several apps ({}): pass --app",
            found
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn config(common: &Common) -> anyhow::Result<Config> {
    validated(raw_config(common))
}

/// `raw` validated; its secrets go to the scrubber (they are there already, read from the
/// same variables and file before validation, unless a command changed `raw` since).
fn validated(raw: RawConfig) -> anyhow::Result<Config> {
    let config = raw.validate()?;
    ops::scrubber().add_all(&config.secrets());
    Ok(config)
}

/// The environment's configuration with the command-line flags over it, not yet validated.
fn raw_config(common: &Common) -> RawConfig {
    let mut raw = RawConfig::from_env();
    // An empty variable counts as unset, as in RawConfig::from_env.
    let given = |flag: &Option<String>| flag.clone().filter(|v| !v.is_empty());
    raw.amqp_url = given(&common.amqp_url).map(SecretUrl::new).or(raw.amqp_url);
    raw.redis_url = given(&common.redis_url)
        .map(SecretUrl::new)
        .or(raw.redis_url);
    raw.namespace = given(&common.namespace).or(raw.namespace);
    raw.app_id = given(&common.app_id).or(raw.app_id);
    raw.wechat_api_base = given(&common.wechat_api_base).or(raw.wechat_api_base);
    raw.send_rate = given(&common.send_rate).or(raw.send_rate);
    raw
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ingest => run_roles(&config(&cli.common)?, Roles::INGEST).await,
        Command::Dispatch => run_roles(&config(&cli.common)?, Roles::DISPATCH).await,
        Command::Send => run_roles(&config(&cli.common)?, Roles::SEND).await,
        Command::Events => run_roles(&config(&cli.common)?, Roles::EVENTS).await,
        Command::All => {
            let config = config(&cli.common)?;
            let roles = Roles {
                events: EventsSettings::any(&config),
                ..Roles::ALL
            };
            run_roles(&config, roles).await
        }
        Command::Campaign {
            command: CampaignCommand::Pause { id, app },
        } => control::run(&config(&cli.common)?, &id, app.as_deref(), Control::Pause).await,
        Command::Campaign {
            command: CampaignCommand::Resume { id, app },
        } => control::run(&config(&cli.common)?, &id, app.as_deref(), Control::Resume).await,
        Command::Campaign {
            command: CampaignCommand::Cancel { id, app },
        } => control::run(&config(&cli.common)?, &id, app.as_deref(), Control::Cancel).await,
        Command::Message {
            command: MessageCommand::Status { id, app, json },
        } => message::status(&config(&cli.common)?, &id, app.as_deref(), json).await,
        Command::Campaign {
            command:
                CampaignCommand::Status {
                    id,
                    app,
                    json,
                    watch,
                },
        } => {
            let config = config(&cli.common)?;
            status::run(&config, &id, app.as_deref(), json, watch).await
        }
        Command::Campaign {
            command: CampaignCommand::Retry { id, app, json },
        } => retry::run(&config(&cli.common)?, &id, app.as_deref(), json).await,
        Command::Reach(args) => reach::run(&cli.common, args).await,
        Command::Dashboard => {
            let settings = dashboard::Settings::from_env()?;
            ops::scrubber().add_all(
                &settings
                    .secrets()
                    .into_iter()
                    .map(wxpush_domain::Secret::new)
                    .collect::<Vec<_>>(),
            );
            dashboard::run(&config(&cli.common)?, settings).await
        }
        Command::MockWechat(args) => run_mock(&cli.common, args).await,
        Command::Demo(args) => demo::run(&cli.common, args).await,
        Command::Healthcheck(args) => probe::healthcheck(args).await,
    }
}

/// Which roles a process runs.
#[derive(Clone, Copy)]
struct Roles {
    ingest: bool,
    dispatch: bool,
    send: bool,
    events: bool,
    name: &'static str,
}

impl Roles {
    const INGEST: Roles = Roles {
        ingest: true,
        dispatch: false,
        send: false,
        events: false,
        name: "wxpush ingest",
    };
    const DISPATCH: Roles = Roles {
        ingest: false,
        dispatch: true,
        send: false,
        events: false,
        name: "wxpush dispatch",
    };
    const SEND: Roles = Roles {
        ingest: false,
        dispatch: false,
        send: true,
        events: false,
        name: "wxpush send",
    };
    const ALL: Roles = Roles {
        ingest: true,
        dispatch: true,
        send: true,
        events: false,
        name: "wxpush all",
    };
    const EVENTS: Roles = Roles {
        ingest: false,
        dispatch: false,
        send: false,
        events: true,
        name: "wxpush events",
    };
}

/// Runs the chosen roles in this process until SIGTERM/SIGINT, then stops them gracefully:
/// they stop consuming and finish or hand back what they hold; whatever is still unfinished
/// after `WXPUSH_SHUTDOWN_SECS` goes back to the queue when the connection closes, and the
/// process exits 0 all the same.
async fn run_roles(config: &Config, roles: Roles) -> anyhow::Result<()> {
    if roles.send {
        SendParts::check(config)?;
    }
    let events_settings = if roles.events {
        Some(EventsSettings::from_config(config)?)
    } else {
        None
    };
    let metrics = ops::install_metrics()?;
    let deps = Deps::connect(config, roles.name).await?;
    let parts = if roles.send {
        Some(SendParts::connect(config, &deps, wxpush_wechat::DEFAULT_REQUEST_TIMEOUT).await?)
    } else {
        None
    };
    let topology = Topology::for_config(config);
    let (trigger, shutdown) = ShutdownTrigger::new();
    let trigger = std::sync::Arc::new(trigger);
    let on_signal = trigger.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested: finishing the work in hand");
        on_signal.trigger();
    });
    let health = Health::new();
    wxpush_roles::durability::check(&deps.bank, config.redis_allow_eviction, &health).await?;
    if let Some(addr) = config.http_addr {
        ops::serve(addr, health.clone(), metrics, shutdown.clone()).await?;
    }
    ops::spawn_redis_probe(deps.bank.clone(), health.clone(), shutdown.clone());
    // A role that fails stops the others too, so the process exits with its error.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let stop_all = |r: Result<(), wxpush_roles::RoleError>| {
        if r.is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
            trigger.trigger();
        }
        r
    };
    tracing::info!(namespace = %config.namespace, role = roles.name, "starting");
    if roles.send {
        tokio::spawn(probe::check_wechat_base(config.wechat_api_base.clone()));
    }
    let ingest_role = async {
        if !roles.ingest {
            return Ok(());
        }
        let settings = IngestSettings::from_config(config);
        ingest::run(&deps, &topology, &settings, &health, shutdown.clone())
            .await
            .map(|_| ())
    };
    let dispatch_role = async {
        if !roles.dispatch {
            return Ok(());
        }
        let settings = DispatchSettings::from_config(config);
        dispatch::run(&deps, &topology, &settings, &health, shutdown.clone())
            .await
            .map(|stats| {
                tracing::info!(
                    campaigns = stats.campaigns,
                    jobs = stats.jobs_published,
                    "dispatch stopped"
                );
            })
    };
    let send_role = async {
        let Some(parts) = parts else {
            return Ok(());
        };
        let settings = SendSettings::from_config(config);
        send::run(
            &deps,
            parts,
            &topology,
            &settings,
            &health,
            shutdown.clone(),
        )
        .await
        .map(|stats| {
            tracing::info!(
                sent = SendStats::get(&stats.sent),
                jobs = SendStats::get(&stats.jobs),
                "send stopped"
            );
        })
    };
    let events_task = match events_settings {
        Some(settings) => {
            // Delivery events become receipts, published by this process's own drainer.
            let apps = config.apps.iter().map(|a| a.id.clone()).collect();
            let (outbox, drainer) = wxpush_roles::receipts::outbox(&deps.bank, &topology, apps);
            tokio::spawn(wxpush_roles::receipts::publish_until(
                deps.clone(),
                drainer,
                shutdown.clone(),
            ));
            let sent = std::sync::Arc::new(wxpush_roles::receipts::ReceiptSentEvents {
                bank: deps.bank.clone(),
                outbox,
            });
            let (_, task) =
                events::run(deps.bank.clone(), settings, sent, &health, shutdown.clone()).await?;
            Some(task)
        }
        None => None,
    };
    let events_role = async {
        if let Some(task) = events_task {
            // The server ends with the shutdown; a panic in it is not a role error to restart.
            let _ = task.await;
        }
        Ok::<(), wxpush_roles::RoleError>(())
    };
    let all = async {
        tokio::join!(
            async { stop_all(ingest_role.await) },
            async { stop_all(dispatch_role.await) },
            async { stop_all(send_role.await) },
            async { stop_all(events_role.await) }
        )
    };
    let mut stopping = shutdown.clone();
    let grace = config.shutdown_grace;
    let deadline = async move {
        stopping.wait().await;
        tokio::time::sleep(grace).await;
    };
    let (a, b, c, d) = tokio::select! {
        r = all => r,
        () = deadline => {
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("a role failed and the others did not stop within WXPUSH_SHUTDOWN_SECS");
            }
            tracing::warn!(
                grace_s = grace.as_secs(),
                "WXPUSH_SHUTDOWN_SECS passed: exiting; unfinished work goes back to the queue"
            );
            return Ok(());
        }
    };
    deps.broker.close().await;
    a?;
    b?;
    c?;
    d?;
    Ok(())
}

async fn run_mock(common: &Common, args: MockArgs) -> anyhow::Result<()> {
    use wxpush_fake_wechat::{serve_with_control, ControlAccess, FakeApp, FakeConfig, FakeWeChat};
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str::<FakeConfig>(&text).map_err(|e| {
                anyhow::anyhow!("{} is not a fake WeChat configuration: {e}", path.display())
            })?
        }
        None => {
            // The install's apps (WXPUSH_APP_ID and WXPUSH_APP_SECRET, or WXPUSH_CONFIG),
            // each with its secret; the default app first.
            let apps = validated(raw_config(common))
                .map_err(|e| anyhow::anyhow!("{e} (or pass --config)"))?
                .apps;
            let mut fake_apps = Vec::with_capacity(apps.len());
            for app in apps.iter() {
                let secret = app.secret.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no secret for app {}: the fake checks it (WXPUSH_APP_SECRET, `secret` \
                         in WXPUSH_CONFIG, or pass --config)",
                        app.id
                    )
                })?;
                fake_apps.push(FakeApp::new(app.id.as_str(), secret.expose()));
            }
            FakeConfig::with_apps(fake_apps)
        }
    };
    if let Some(app) = config.apps.first_mut() {
        app.templates.extend(args.templates.iter().cloned());
    }
    if let Some(secs) = args.token_lifetime_secs {
        config.token_lifetime_ms = secs.saturating_mul(1000);
    }
    let fake = FakeWeChat::new(config).map_err(|e| anyhow::anyhow!("fake WeChat: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let token = args.control_token.as_deref();
    let access = ControlAccess::for_listener(addr, token);
    tracing::info!(%addr, "fake WeChat listening: point WXPUSH_WECHAT_API_BASE at http://{addr}");
    tracing::info!("{}", access.describe());
    serve_with_control(listener, fake, token, wait_for_signal()).await?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
