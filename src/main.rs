//! `wxpush`: the one binary, a subcommand per role (contract section 1).
//!
//! This file owns the command line, logging set-up, signals and exit codes: configuration
//! errors and unreachable dependencies end as one line on stderr and a non-zero exit, never a
//! panic or a backtrace. It must not hold role logic (that is `wxpush-roles`).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wxpush_broker::Topology;
use wxpush_domain::{Config, RawConfig};
use wxpush_roles::ingest::{self, IngestSettings};
use wxpush_roles::{Deps, ShutdownTrigger};

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
    /// All roles in one process (small installs, development)
    All,
    /// Campaign progress and outcome counts
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// The fake WeChat API server, for development and tests
    MockWechat,
    /// The one-command showcase against the fake WeChat
    Demo,
}

#[derive(Subcommand)]
enum CampaignCommand {
    /// Print a campaign's progress and outcome counts
    Status {
        /// The campaign's id
        id: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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

/// Prints the error chain as one line and returns the failure exit code.
fn fail(e: &anyhow::Error) -> ExitCode {
    let line = format!("{e:#}").replace('\n', " ");
    eprintln!("wxpush: {line}");
    ExitCode::FAILURE
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WXPUSH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("WXPUSH_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn config(common: &Common) -> anyhow::Result<Config> {
    let mut raw = RawConfig::from_env();
    let set = |slot: &mut Option<String>, flag: &Option<String>| {
        // An empty variable counts as unset, as in RawConfig::from_env.
        if flag.as_deref().is_some_and(|v| !v.is_empty()) {
            slot.clone_from(flag);
        }
    };
    set(&mut raw.amqp_url, &common.amqp_url);
    set(&mut raw.redis_url, &common.redis_url);
    set(&mut raw.namespace, &common.namespace);
    set(&mut raw.app_id, &common.app_id);
    set(&mut raw.wechat_api_base, &common.wechat_api_base);
    set(&mut raw.send_rate, &common.send_rate);
    Ok(raw.validate()?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ingest | Command::All => {
            let config = config(&cli.common)?;
            if matches!(cli.command, Command::All) {
                tracing::info!("dispatch and send are not yet available: `all` runs ingest only");
            }
            run_ingest(&config).await
        }
        Command::Dispatch => not_yet("dispatch"),
        Command::Send => not_yet("send"),
        Command::Campaign {
            command: CampaignCommand::Status { .. },
        } => not_yet("campaign status"),
        Command::MockWechat => not_yet("mock-wechat"),
        Command::Demo => not_yet("demo"),
    }
}

fn not_yet(what: &str) -> anyhow::Result<()> {
    anyhow::bail!("`{what}` is not yet available in this version")
}

async fn run_ingest(config: &Config) -> anyhow::Result<()> {
    let deps = Deps::connect(config, "wxpush ingest").await?;
    let topology = Topology::new(config.namespace.clone());
    let (trigger, shutdown) = ShutdownTrigger::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested: finishing the batch in hand");
        trigger.trigger();
    });
    tracing::info!(
        namespace = %config.namespace,
        queue = %topology.ingest_queue(),
        "ingest starting"
    );
    let settings = IngestSettings::from_config(config);
    ingest::run(&deps, &topology, &settings, shutdown).await?;
    deps.broker.close().await;
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
