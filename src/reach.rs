//! `wxpush reach [--app ID] [--template ID] [--json]`: the reach forecast, from the bank's own
//! data.
//!
//! It owns the forecast: how many users hold a usable credential now (formIds, and prepayId
//! uses once they exist: whatever lives in a user's credential zset with a positive score
//! after `now + WXPUSH_CLAIM_MARGIN_SECS`) and at the start of each of the next 7 days, how
//! many messages those credentials allow now, and how many subscribe consents are held per
//! template and by how many users. Formats: a small table, or one JSON object (`--json`,
//! keys in docs/reach.md).
//!
//! How: shard by shard (index shard `{ns}:u:{<app>.<shard>}`), with the bank's key layout
//! (`wxpush_bank::Keys`). The index scores each user with the expiry of their last usable
//! credential, so the users reachable now and on day d are `ZCOUNT`s of the index, read in
//! one pipeline with the first page of the shard's entries scored after the margin; then one
//! read-only Lua script ([`SCRIPT`], flagged `no-writes`, so Redis itself refuses any write)
//! gets that page's credential zsets **as KEYS** (a script must name every key it touches, as
//! Redis Cluster requires) and `ZCOUNT`s each: the usable credentials (messages now), and
//! entries whose zset holds none (stale, not yet cleaned up by the bank) are taken off. The
//! shard's consent totals (`{ns}:tc:{<app>.<shard>}`) and consent holders (`HGET` of the
//! holders hash `{ns}:th:{<app>.<shard>}`, plus `SCARD {ns}:t:{<app>.<shard>}:<template>` of
//! the users the bank has not yet moved out of the layout before consent buckets) are read
//! beside. Every key of a shard shares
//! its hash tag, so each pipeline and script runs in one cluster slot. A shard of more than
//! [`PAGE`] entries is walked in several pages. [`IN_FLIGHT`] shards are read at once on the
//! bank's multiplexed connection; the client keeps running totals only.
//! Every shard is counted at the same instant (Redis's `TIME`, read once), so the day
//! boundaries are the same everywhere.
//!
//! This module must not write to Redis (no repair, no expiry, no lazy clean-up: a forecast
//! changes nothing), must not decide who is messaged, and must not build key names of its
//! own: they are `wxpush_bank::Keys`'s.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use wxpush_bank::{Bank, BankSettings, SHARDS};
use wxpush_domain::campaign::MAX_TEMPLATE_ID_BYTES;
use wxpush_domain::{AppId, Config};
use wxpush_redis::Lua;

/// Days ahead the forecast covers.
pub const DAYS: usize = 7;
/// Index entries one script call walks at most; a bigger shard takes several calls.
/// A few milliseconds of Redis time: Redis serves other clients between two calls.
pub const PAGE: usize = 2000;
/// Shard scripts in flight at once on the one connection (pipelined).
pub const IN_FLIGHT: usize = 4;
/// Connecting, and the whole forecast, give up after these.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The forecast script for one page of one index shard. KEYS[1] the index shard
/// `{ns}:u:{app.shard}`, KEYS[2..] the page's users' credential zsets; ARGV[1] limit = now +
/// margin (Unix s), ARGV[2] the prefix of those keys before the openId (the index's member).
/// Returns 9 numbers: the page's usable credentials (messages now), then `stale[0..7]`: the
/// page's users whose zset holds no usable credential although the index still scores them
/// past day d's limit.
pub const SCRIPT: &str = r"#!lua flags=no-writes
local limit = tonumber(ARGV[1])
local lo = '(' .. ARGV[1]
local skip = #ARGV[2] + 1
local out = {0, 0, 0, 0, 0, 0, 0, 0, 0}
for i = 2, #KEYS do
  local n = redis.call('ZCOUNT', KEYS[i], lo, '+inf')
  if n > 0 then
    out[1] = out[1] + n
  else
    local top = tonumber(redis.call('ZSCORE', KEYS[1], string.sub(KEYS[i], skip)))
    if top and top > limit then
      for d = 0, 7 do
        if top > limit + d * 86400 then out[2 + d] = out[2 + d] + 1 end
      end
    end
  end
end
return out
";

/// `wxpush reach`'s options.
#[derive(Args, Debug)]
pub struct ReachArgs {
    /// The app to forecast (default: the configured WXPUSH_APP_ID, which is then not needed)
    #[arg(long, value_name = "ID")]
    app: Option<String>,
    /// Count the subscribe consents of this template only
    #[arg(long, value_name = "ID")]
    template: Option<String>,
    /// Machine-readable output: one JSON object
    #[arg(long)]
    json: bool,
}

pub async fn run(common: &crate::Common, args: ReachArgs) -> anyhow::Result<()> {
    let app = match args.app.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(AppId::new(a).map_err(|e| anyhow!("--app is invalid: {e}"))?),
        None => None,
    };
    let template = match args.template.as_deref() {
        Some(t) => Some(check_template(t)?),
        None => None,
    };
    let raw = crate::raw_config(common);
    let configured = raw.app_id.is_some() || raw.config_file.is_some();
    let config = config(common, app.as_ref())?;
    let app = app.unwrap_or_else(|| config.apps.default_id().clone());
    let started = Instant::now();
    let bank = connect(&config).await?;
    let url = config.redis_url.redacted();
    // A forecast of nothing at all is most likely a typo (the app or the namespace): say so
    // rather than print a table of zeros. (`--app` may name an app this install does not
    // serve: its bank is read all the same when it holds anything.)
    let stored = tokio::time::timeout(READ_TIMEOUT, anything_stored(&bank, &app))
        .await
        .map_err(|_| anyhow!("no answer from Redis at {url} within {READ_TIMEOUT:?}"))?
        .with_context(|| format!("cannot read the bank of app {app} from Redis at {url}"))?;
    if !stored {
        let known = if configured {
            crate::configured_apps(&config)
        } else {
            "no app is configured here: WXPUSH_APP_ID and WXPUSH_CONFIG are unset".to_owned()
        };
        anyhow::bail!(
            "nothing is stored for app {app} in namespace {}: no user holds a credential or a \
             consent of it ({known}); check --app and WXPUSH_NAMESPACE",
            config.namespace
        );
    }
    let forecast = tokio::time::timeout(
        READ_TIMEOUT,
        forecast(&bank, &app, config.claim_margin_secs, template.as_deref()),
    )
    .await
    .map_err(|_| anyhow!("no forecast from Redis at {url} within {READ_TIMEOUT:?}"))?
    .with_context(|| format!("cannot read the bank of app {app} from Redis at {url}"))?;
    let report = Report {
        app: app.to_string(),
        namespace: config.namespace.to_string(),
        margin_secs: config.claim_margin_secs,
        template,
        forecast,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.table())?;
    }
    out.flush()?;
    Ok(())
}

/// The forecast of `app` as `wxpush reach --json` prints it (the dashboard's Reach page).
pub(crate) async fn report_json(
    bank: &Bank,
    config: &Config,
    app: &AppId,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let forecast = tokio::time::timeout(
        READ_TIMEOUT,
        forecast(bank, app, config.claim_margin_secs, None),
    )
    .await
    .map_err(|_| anyhow!("no forecast from Redis within {READ_TIMEOUT:?}"))??;
    Ok(Report {
        app: app.to_string(),
        namespace: config.namespace.to_string(),
        margin_secs: config.claim_margin_secs,
        template: None,
        forecast,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
    .to_json())
}

/// Whether the bank holds anything of the app: a user index shard or a consent totals shard
/// (`EXISTS`, one per key, in the bank's batched reads).
async fn anything_stored(bank: &Bank, app: &AppId) -> Result<bool, wxpush_bank::BankError> {
    let keys = bank.keys();
    let cmds = (0..SHARDS)
        .flat_map(|shard| {
            [
                keys.index_shard(app, shard),
                keys.consent_totals(app, shard),
            ]
        })
        .map(|key| {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(key);
            cmd
        })
        .collect();
    let found: Vec<bool> = bank.read_batch(cmds).await?;
    Ok(found.into_iter().any(|f| f))
}

/// The configuration as every command reads it (flags over environment), except that
/// `--app`, when given to an install configured with no app at all, stands in for
/// WXPUSH_APP_ID (the forecast reads any app's bank).
fn config(common: &crate::Common, app: Option<&AppId>) -> anyhow::Result<Config> {
    let mut raw = crate::raw_config(common);
    if let Some(app) = app.filter(|_| raw.app_id.is_none() && raw.config_file.is_none()) {
        raw.app_id = Some(app.to_string());
    }
    crate::validated(raw)
}

/// A template id from the command line: printable ASCII without spaces, at most 128 bytes
/// (the campaign format's limit).
fn check_template(t: &str) -> anyhow::Result<String> {
    if t.is_empty() {
        anyhow::bail!("--template is empty");
    }
    if t.len() > MAX_TEMPLATE_ID_BYTES {
        anyhow::bail!(
            "--template is {} bytes long, over the limit of {MAX_TEMPLATE_ID_BYTES}",
            t.len()
        );
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "--template contains a character that is not allowed (printable ASCII without spaces)"
        );
    }
    Ok(t.to_owned())
}

async fn connect(config: &Config) -> anyhow::Result<Bank> {
    let url = config.redis_url.redacted();
    let ca = match &config.tls_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            anyhow!(
                "WXPUSH_TLS_CA_FILE is invalid: cannot read {}: {e}",
                path.display()
            )
        })?),
        None => None,
    };
    let settings = BankSettings::from_config(config);
    let connecting = Bank::connect_tls(
        config.redis_url.expose(),
        config.namespace.clone(),
        settings,
        ca.as_deref(),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(anyhow!(
            "cannot connect to Redis at {url}: no answer within {CONNECT_TIMEOUT:?}"
        )),
        Ok(Err(wxpush_bank::BankError::Connect(e))) => {
            Err(anyhow!("cannot connect to Redis at {url}: {e}"))
        }
        Ok(Err(e)) => Err(anyhow!("cannot connect to Redis at {url}: {e}")),
        Ok(Ok(bank)) => Ok(bank),
    }
}

// ---------------------------------------------------------------------------------------------
// Counting

/// What the forecast found, summed over the shards.
#[derive(Debug, Clone, Default, PartialEq)]
struct Forecast {
    /// Redis's clock when the forecast began (Unix s); every shard is counted against it.
    at: i64,
    /// `index[d]`: index entries scored after now + d days + margin (d = 0 is now).
    index: [u64; DAYS + 1],
    /// `stale[d]`: those of `index[d]` whose zset holds no usable credential any more.
    stale: [u64; DAYS + 1],
    /// Usable credentials now (messages that can be sent now).
    messages: u64,
    /// Index entries walked (reachable users, and stale entries not yet cleaned up).
    index_entries: u64,
    /// Template → (consents held, users holding at least one).
    consents: BTreeMap<String, (u64, u64)>,
    warnings: Vec<String>,
}

impl Forecast {
    fn reachable_now(&self) -> u64 {
        self.reachable_on_day(0)
    }

    /// Users still reachable at the start of day `d` (0 = now, up to 7).
    fn reachable_on_day(&self, d: usize) -> u64 {
        let d = d.min(DAYS);
        self.index[d].saturating_sub(self.stale[d])
    }

    fn consents_total(&self) -> u64 {
        self.consents
            .values()
            .fold(0u64, |a, (n, _)| a.saturating_add(*n))
    }
}

/// One shard's share of the forecast (the fields as in [`Forecast`]).
#[derive(Debug, Default)]
struct ShardTally {
    index: [u64; DAYS + 1],
    stale: [u64; DAYS + 1],
    messages: u64,
    index_entries: u64,
    /// (template, consents as stored, holders)
    consents: Vec<(String, String, u64)>,
}

async fn forecast(
    bank: &Bank,
    app: &AppId,
    margin_secs: u32,
    template: Option<&str>,
) -> anyhow::Result<Forecast> {
    let at = wxpush_redis::time_ms(&mut bank.connection()).await? / 1000;
    let limit = at.saturating_add(i64::from(margin_secs));
    let script = Lua::new(SCRIPT);
    wxpush_redis::load(&mut bank.connection(), &[&script]).await?;
    let mut shards = futures_util::stream::iter(0..SHARDS)
        .map(|shard| {
            let script = &script;
            async move { count_shard(bank, app, script, shard, limit, template).await }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut total = Forecast {
        at,
        ..Default::default()
    };
    let mut junk: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(tally) = shards.next().await {
        let tally = tally?;
        add(&mut total.index, &tally.index);
        add(&mut total.stale, &tally.stale);
        total.messages = total.messages.saturating_add(tally.messages);
        total.index_entries = total.index_entries.saturating_add(tally.index_entries);
        for (name, consents, holders) in tally.consents {
            let consents = match consents.trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    *junk.entry(name.clone()).or_insert(0) += 1;
                    0
                }
            };
            let slot = total.consents.entry(name).or_insert((0, 0));
            slot.0 = slot.0.saturating_add(consents);
            slot.1 = slot.1.saturating_add(holders);
        }
    }
    if let Some(t) = template {
        total.consents.entry(t.to_owned()).or_insert((0, 0));
    }
    for (name, shards) in junk {
        total.warnings.push(format!(
            "the consent total of template {} is not a count in {shards} shard(s) (counted as 0)",
            printable(&name)
        ));
    }
    Ok(total)
}

/// Counts one shard: its index counts and first page in one atomic pipeline, the script per
/// page, then its consents.
async fn count_shard(
    bank: &Bank,
    app: &AppId,
    script: &Lua,
    shard: u16,
    limit: i64,
    template: Option<&str>,
) -> anyhow::Result<ShardTally> {
    let keys = bank.keys();
    let mut conn = bank.connection();
    let index = keys.index_shard(app, shard);
    let count = |n: &i64| u64::try_from(*n).unwrap_or(0);
    let mut tally = ShardTally::default();
    let mut offset = 0usize;
    loop {
        let mut pipe = redis::pipe();
        if offset == 0 {
            pipe.atomic();
            for d in 0..=DAYS as i64 {
                pipe.cmd("ZCOUNT")
                    .arg(&index)
                    .arg(format!("({}", limit.saturating_add(d * 86_400)))
                    .arg("+inf");
            }
        }
        pipe.cmd("ZRANGE")
            .arg(&index)
            .arg(format!("({limit}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(offset)
            .arg(PAGE);
        let mut replies: Vec<redis::Value> =
            wxpush_redis::run_pipeline(&mut conn, &pipe, &[]).await?;
        let page = replies
            .pop()
            .ok_or_else(|| anyhow!("no page of the index was read"))?;
        let users: Vec<String> = redis::FromRedisValue::from_redis_value(page)?;
        if offset == 0 {
            let counts: Vec<i64> =
                redis::FromRedisValue::from_redis_value(redis::Value::Array(replies))?;
            if counts.len() != DAYS + 1 {
                anyhow::bail!("{} index counts read, not {}", counts.len(), DAYS + 1);
            }
            add(
                &mut tally.index,
                &counts.iter().map(count).collect::<Vec<_>>(),
            );
        }
        if !users.is_empty() {
            let mut cmd = script.evalsha();
            cmd.arg(1 + users.len()).arg(&index);
            for u in &users {
                cmd.arg(keys.credentials_in(app, shard, u));
            }
            // The prefix of the shard's credential keys: the script takes each openId back
            // from its key rather than receive it twice.
            cmd.arg(limit).arg(keys.credentials_in(app, shard, ""));
            let out: Vec<i64> = wxpush_redis::run(&mut conn, &cmd, &[script]).await?;
            let [messages, stale @ ..] = out.as_slice() else {
                anyhow::bail!("the forecast script returned nothing");
            };
            if stale.len() != DAYS + 1 {
                anyhow::bail!("the forecast script returned {} numbers, not 9", out.len());
            }
            tally.messages = tally.messages.saturating_add(count(messages));
            add(
                &mut tally.stale,
                &stale.iter().map(count).collect::<Vec<_>>(),
            );
        }
        tally.index_entries = tally.index_entries.saturating_add(users.len() as u64);
        if users.len() < PAGE {
            break;
        }
        offset += PAGE;
    }
    tally.consents = shard_consents(bank, app, shard, template).await?;
    Ok(tally)
}

/// One shard's consents: (template, consents as stored, holders), for every template or the
/// one asked for.
async fn shard_consents(
    bank: &Bank,
    app: &AppId,
    shard: u16,
    template: Option<&str>,
) -> anyhow::Result<Vec<(String, String, u64)>> {
    let keys = bank.keys();
    let mut conn = bank.connection();
    let totals = keys.consent_totals(app, shard);
    let held: Vec<(String, Option<String>)> = match template {
        Some(t) => vec![(t.to_owned(), None)],
        None => {
            let all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(&totals)
                .query_async(&mut conn)
                .await?;
            all.into_iter()
                .map(|(t, n)| {
                    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                    (text(t), Some(text(n)))
                })
                .collect()
        }
    };
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let holders_hash = keys.consent_holders(app, shard);
    let mut pipe = redis::pipe();
    for (t, _) in &held {
        pipe.cmd("HGET").arg(&totals).arg(t);
        pipe.cmd("HGET").arg(&holders_hash).arg(t);
        pipe.cmd("SCARD")
            .arg(keys.legacy_consent_index(app, shard, t));
    }
    let read: Vec<(Option<String>, u64)> = {
        let flat: Vec<redis::Value> = wxpush_redis::run_pipeline(&mut conn, &pipe, &[]).await?;
        flat.chunks(3)
            .map(|three| {
                let total = redis::FromRedisValue::from_redis_value(three[0].clone())?;
                let holders: Option<u64> =
                    redis::FromRedisValue::from_redis_value(three[1].clone())?;
                let old: u64 = redis::FromRedisValue::from_redis_value(three[2].clone())?;
                Ok::<_, redis::ParsingError>((total, holders.unwrap_or(0).saturating_add(old)))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(held
        .into_iter()
        .zip(read)
        .filter_map(|((t, listed), (total, holders))| {
            let total = total.or(listed);
            (total.is_some() || holders > 0)
                .then(|| (t, total.unwrap_or_else(|| "0".into()), holders))
        })
        .collect())
}

/// `sum[d] += n[d]`, saturating.
fn add(sum: &mut [u64; DAYS + 1], n: &[u64]) {
    for (s, n) in sum.iter_mut().zip(n) {
        *s = s.saturating_add(*n);
    }
}

// ---------------------------------------------------------------------------------------------
// Output

struct Report {
    app: String,
    namespace: String,
    margin_secs: u32,
    template: Option<String>,
    forecast: Forecast,
    elapsed_ms: u64,
}

impl Report {
    /// Start of day `d` (Unix s).
    fn day_start(&self, d: usize) -> i64 {
        self.forecast.at.saturating_add(d as i64 * 86_400)
    }

    fn to_json(&self) -> Value {
        let f = &self.forecast;
        let days: Vec<Value> = (1..=DAYS)
            .map(|d| json!({"day": d, "at": self.day_start(d), "users": f.reachable_on_day(d)}))
            .collect();
        let templates: Vec<Value> = f
            .consents
            .iter()
            .map(|(t, (n, users))| json!({"template_id": t, "consents": n, "users": users}))
            .collect();
        json!({
            "app": self.app,
            "namespace": self.namespace,
            "at": f.at,
            "claim_margin_secs": self.margin_secs,
            "reachable_now": f.reachable_now(),
            "messages_now": f.messages,
            "reachable_by_day": days,
            "consents": {
                "template_filter": self.template,
                "templates": templates,
                "total": f.consents_total(),
            },
            "index_entries": f.index_entries,
            "stale_index_entries": f.stale[0],
            "shards": SHARDS,
            "elapsed_ms": self.elapsed_ms,
            "warnings": f.warnings,
        })
    }

    fn table(&self) -> String {
        let f = &self.forecast;
        let mut out = String::new();
        let rows = |out: &mut String, rows: &[[String; 3]]| {
            let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
            let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
            for [a, b, c] in rows {
                let line = format!("{a:<w0$}  {b:>w1$}  {c}");
                out.push_str(line.trim_end());
                out.push('\n');
            }
        };
        out.push_str(&format!("app        {}\n", self.app));
        out.push_str(&format!("namespace  {}\n", self.namespace));
        out.push_str(&format!(
            "at         {} (Redis's clock), claim margin {}s\n\n",
            format_utc(f.at),
            self.margin_secs
        ));
        let mut reach = vec![
            [
                "reachable".to_owned(),
                "users".to_owned(),
                "from".to_owned(),
            ],
            [
                "now".to_owned(),
                f.reachable_now().to_string(),
                format_utc(f.at),
            ],
        ];
        for d in 1..=DAYS {
            reach.push([
                format!("day {d}"),
                f.reachable_on_day(d).to_string(),
                format_utc(self.day_start(d)),
            ]);
        }
        reach.push([
            "messages now".to_owned(),
            f.messages.to_string(),
            "usable credentials".to_owned(),
        ]);
        rows(&mut out, &reach);
        out.push('\n');
        if f.consents.is_empty() {
            out.push_str("consents  none\n");
        } else {
            let mut table = vec![[
                "template".to_owned(),
                "consents".to_owned(),
                "users".to_owned(),
            ]];
            for (t, (n, users)) in &f.consents {
                table.push([printable(t), n.to_string(), users.to_string()]);
            }
            if f.consents.len() > 1 {
                table.push([
                    "total".to_owned(),
                    f.consents_total().to_string(),
                    "-".to_owned(),
                ]);
            }
            // Right-align the users column too: it is the last one.
            let w2 = table
                .iter()
                .map(|r| r[2].chars().count())
                .max()
                .unwrap_or(0);
            for r in &mut table {
                r[2] = format!("{:>w2$}", r[2]);
            }
            rows(&mut out, &table);
        }
        for w in &f.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// A name read from Redis, safe to print on one line: control characters escaped.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Unix s as `2026-11-28 09:14:03 UTC` (status.rs's formatting, which takes ms).
fn format_utc(secs: i64) -> String {
    crate::status::format_utc(secs.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_entries_are_taken_off_the_index_counts() {
        let f = Forecast {
            index: [25, 20, 17, 14, 12, 11, 11, 10],
            stale: [3, 3, 1, 1, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(f.reachable_now(), 22);
        assert_eq!(f.reachable_on_day(1), 17);
        assert_eq!(f.reachable_on_day(4), 12);
        assert_eq!(f.reachable_on_day(7), 10);
        assert_eq!(f.reachable_on_day(9), 10);
        let odd = Forecast {
            stale: [1; DAYS + 1],
            ..Default::default()
        };
        assert_eq!(odd.reachable_now(), 0);
    }

    #[test]
    fn templates_are_checked() {
        assert!(check_template("TPL_1-a").is_ok());
        assert!(check_template("").is_err());
        assert!(check_template("a b").is_err());
        assert!(check_template("é").is_err());
        assert!(check_template(&"x".repeat(129)).is_err());
        assert_eq!(printable("a\nb"), "a\\nb");
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_861_443), "2026-11-28 10:24:03 UTC");
        let _ = format_utc(i64::MAX);
        let _ = format_utc(i64::MIN);
    }
}
