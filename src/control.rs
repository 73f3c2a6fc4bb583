//! `wxpush campaign pause|resume|cancel ID [--app APPID]` (contract 8.5): an operator's action on
//! a campaign, written to its record in one script (`lua/record_control.lua`), obeyed by every
//! sender within a second (they read the record's flags at most once a second per campaign):
//! a paused campaign's jobs are parked, spending nothing, and go on after `resume`; a cancelled
//! campaign's recipients not yet sent are recorded `cancelled`, spending nothing. The action
//! is logged and printed; the senders count what they park (`wxpush_jobs_parked_paused_total`)
//! and cancel (`wxpush_send_outcomes_total{outcome="cancelled"}`). A campaign still scheduled
//! (`sendAt` ahead) has nothing out yet: cancelled, nothing of it is ever fanned out; paused,
//! the dispatcher holds it at its time until it is resumed.
//!
//! This module must not send or settle anything itself.

use anyhow::{anyhow, Context as _};
use wxpush_bank::record::Control;
use wxpush_domain::{AppId, Config};

use crate::status::Reader;

pub async fn run(
    config: &Config,
    id: &str,
    app: Option<&str>,
    action: Control,
) -> anyhow::Result<()> {
    wxpush_domain::job::check_campaign_id(id).map_err(|e| anyhow!("campaign id: {e}"))?;
    let bank = Reader::new(config)?.connection().await?;
    let app = match app.filter(|a| !a.is_empty()) {
        Some(a) => AppId::new(a).map_err(|e| anyhow!("--app: {e}"))?,
        None => {
            let mut found = Vec::new();
            for a in config.apps.iter() {
                let record = bank
                    .record(&a.id, id)
                    .snapshot()
                    .await
                    .with_context(|| format!("cannot read campaign {id}'s record"))?;
                if record.is_some() {
                    found.push(&a.id);
                }
            }
            let i = crate::the_app_holding(config, id, &found)?;
            found[i].clone()
        }
    };
    let (verb, done) = match action {
        Control::Pause => ("pause", "paused"),
        Control::Resume => ("resume", "resumed"),
        Control::Cancel => ("cancel", "cancelled"),
    };
    let changed = bank
        .record(&app, id)
        .control(action)
        .await
        .with_context(|| format!("cannot {verb} campaign {id}"))?;
    match changed {
        None => Err(anyhow!(
            "no campaign {id} of app {app} in namespace {} ({})",
            config.namespace,
            crate::configured_apps(config)
        )),
        Some(true) => {
            tracing::info!(campaign = id, app = %app, action = verb, "campaign {done} by an operator");
            // A scheduled campaign (contract 8.5) has nothing out yet: say what happens at its time.
            let record = bank.record(&app, id).snapshot().await.ok().flatten();
            match record
                .filter(|r| r.is_scheduled())
                .and_then(|r| r.send_at_ms())
            {
                Some(at) => {
                    let then = match action {
                        Control::Cancel => "nothing will be sent",
                        Control::Pause => "held at its time until resumed",
                        Control::Resume => "dispatched at its time",
                    };
                    println!(
                        "campaign {id} (app {app}): {done}; scheduled for {}: {then}",
                        crate::status::iso_utc(at)
                    );
                }
                None => {
                    println!(
                        "campaign {id} (app {app}): {done}; every sender obeys within a second"
                    )
                }
            }
            Ok(())
        }
        Some(false) => {
            println!("campaign {id} (app {app}): nothing to do (already {done}, or cancelled)");
            Ok(())
        }
    }
}
