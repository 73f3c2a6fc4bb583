//! `wxpush campaign retry ID`: sends a campaign again to the recipients it dead-lettered, and
//! to nobody else.
//!
//! A recipient is settled `dead_lettered` only after the senders' retry budget
//! (`WXPUSH_SEND_RETRY_FOR`) was spent on failures that certainly delivered nothing (WeChat
//! down, the token endpoint refusing, `-1`), with the credential given back. For each shard
//! of the campaign's users this command asks the bank which listed recipients are still
//! `dead_lettered` (their outcome is reset in the same script, [`wxpush_bank::RequeuePage`]),
//! publishes a fresh job for each, made from the job template the campaign record keeps, to
//! the app's send queue with publisher confirms, and only then takes them off the list. A run
//! that dies in between lists them again, and the next run publishes them again: a job that
//! finds its recipient already settled is a duplicate, never a second message.
//!
//! This module owns the command's walk and output; it must not decide who may be sent to
//! again (the bank's requeue script does) nor send anything itself (the senders do).

use anyhow::{anyhow, bail, Context};
use wxpush_broker::publish::{batches_by_bytes, CONFIRM_BATCH_BYTES};
use wxpush_broker::topology::Needs;
use wxpush_broker::{Publisher, Topology};
use wxpush_domain::{AppId, Config, SendJob};
use wxpush_roles::Deps;

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetryCounts {
    /// Recipients whose job was published again.
    pub requeued: u64,
    /// Listed recipients left alone: their outcome was no longer `dead_lettered` (a copy of
    /// their job got through since).
    pub skipped: u64,
}

pub async fn run(config: &Config, id: &str, app: Option<&str>, json: bool) -> anyhow::Result<()> {
    wxpush_domain::job::check_campaign_id(id).map_err(|e| anyhow!("campaign id: {e}"))?;
    let deps = Deps::connect(config, "wxpush campaign retry").await?;
    let app = match app.filter(|a| !a.is_empty()) {
        Some(a) => AppId::new(a).map_err(|e| anyhow!("--app: {e}"))?,
        None => find_app(config, &deps, id).await?,
    };
    let counts = retry(config, &deps, &app, id).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "campaignId": id,
                "appId": app.as_str(),
                "requeued": counts.requeued,
                "skipped": counts.skipped,
            })
        );
    } else if counts.requeued == 0 {
        println!(
            "campaign {id} (app {app}): no dead-lettered recipient to send again{}",
            if counts.skipped > 0 {
                format!(" ({} listed were sent since)", counts.skipped)
            } else {
                String::new()
            }
        );
    } else {
        println!(
            "campaign {id} (app {app}): {} recipients queued again{}; follow them with `wxpush campaign status {id}`",
            counts.requeued,
            if counts.skipped > 0 {
                format!(", {} listed were sent since", counts.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Re-queues the dead-lettered recipients of campaign `id` of `app`.
pub async fn retry(
    config: &Config,
    deps: &Deps,
    app: &AppId,
    id: &str,
) -> anyhow::Result<RetryCounts> {
    let template = job_template(config, deps, app, id).await?;
    let topology = Topology::for_config(config);
    // The send queues exist before anything is published to them (a message routed to no
    // queue would be confirmed and lost).
    topology.declare(&deps.broker, Needs::Dispatch).await?;
    let queue = topology.send_queue_for(app);
    let publisher = Publisher::open(&deps.broker, topology).await?;
    let mut counts = RetryCounts::default();
    for shard in 0..wxpush_bank::SHARDS {
        let mut cursor = 0;
        loop {
            let page = deps
                .bank
                .campaign_requeue_page(app, shard, id, cursor)
                .await
                .with_context(|| format!("cannot read campaign {id}'s dead-lettered recipients"))?;
            // A job may carry up to 256 KiB of data: a page of 1,000 is published a few MiB
            // at a time.
            // Collected before each await: a future holding these iterators' closures would
            // not be `Send` for every lifetime, which the dashboard's handlers need.
            let jobs: Vec<Vec<u8>> = page
                .users
                .iter()
                .map(|u| template.for_recipient(u).to_json())
                .collect();
            for batch in batches_by_bytes(jobs.into_iter(), CONFIRM_BATCH_BYTES) {
                let items: Vec<(&str, &[u8])> = batch
                    .iter()
                    .map(|b| (queue.as_str(), b.as_slice()))
                    .collect();
                publisher
                    .publish_all("", items)
                    .await
                    .context("cannot publish the jobs")?;
            }
            deps.bank
                .campaign_requeued(app, shard, id, &page.users)
                .await
                .context("cannot record the jobs published")?;
            counts.requeued += page.users.len() as u64;
            counts.skipped += page.skipped;
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    publisher.close().await;
    if counts.requeued > 0 {
        tracing::info!(
            campaign = id,
            app = %app,
            requeued = counts.requeued,
            skipped = counts.skipped,
            "dead-lettered recipients queued again"
        );
    }
    Ok(counts)
}

/// The campaign's job template from its record; an error a user can act on when there is no
/// record, when its recipients carried data of their own (contract 8.1: the template lacks
/// it, and a job made from it would send the campaign's data alone), when the campaign was stopped (its data refused by WeChat: sending again would be
/// refused again), or when it was dispatched by a version that kept no template.
async fn job_template(
    config: &Config,
    deps: &Deps,
    app: &AppId,
    id: &str,
) -> anyhow::Result<SendJob> {
    let record = deps
        .bank
        .record(app, id)
        .snapshot()
        .await
        .with_context(|| format!("cannot read campaign {id}'s record"))?;
    let Some(record) = record else {
        bail!(
            "no campaign {id} of app {app} in namespace {} ({})",
            config.namespace,
            crate::configured_apps(config)
        );
    };
    if record.text(wxpush_bank::record::field::AUDIENCE) == Some("recipients") {
        bail!("campaign {id} carries data of each recipient's own, which its record does not keep: it cannot be retried from the record; publish the dead-lettered recipients again in a campaign under a new id");
    }
    if let Some(reason) = record.stopped_reason() {
        bail!("campaign {id} was stopped ({reason}): its message would be refused again; publish a corrected campaign under a new id");
    }
    match record.job_template() {
        Ok(Some(template)) => Ok(template),
        Ok(None) => bail!("campaign {id} was dispatched by a wxpush that kept no job template in its record: it cannot be retried"),
        Err(e) => Err(anyhow!("campaign {id}'s record holds an unreadable job template ({e})")),
    }
}

/// The configured app that has a campaign `id` (the only app of a one-app install).
async fn find_app(config: &Config, deps: &Deps, id: &str) -> anyhow::Result<AppId> {
    if config.apps.len() == 1 {
        return Ok(config.apps.default_id().clone());
    }
    let mut found = Vec::new();
    for app in config.apps.iter() {
        let record = deps
            .bank
            .record(&app.id, id)
            .snapshot()
            .await
            .with_context(|| format!("cannot read campaign {id}'s record"))?;
        if record.is_some() {
            found.push(&app.id);
        }
    }
    let i = crate::the_app_holding(config, id, &found)?;
    Ok(found[i].clone())
}
