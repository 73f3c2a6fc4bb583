//! The dashboard's HTML: the layout, each page's `<main>` drawn from the API's JSON, and the
//! charts as hand-written SVG (no library, no inline script or style: the CSP allows neither).
//!
//! Every text that comes from outside (ids, errors, counter names) goes through [`esc`] or
//! [`url_part`]. This module must not read anything itself, and must not render a token:
//! the only secret-like value it writes is the session's own CSRF token, into that session's
//! forms.

use std::fmt::Write as _;

use serde_json::Value;
use wxpush_domain::Config;

use super::auth::Who;
use super::ListQuery;
use super::LookupQuery;

/// HTML-escapes text (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one part of a URL path or query.
pub fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time_ms(v: &Value) -> String {
    v.as_i64()
        .map_or_else(|| "-".to_owned(), crate::status::format_utc)
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The page around a `<main>`: the navigation and who is looking.
pub fn layout(title: &str, nav: &str, who: &Who, config: &Config, main: &str) -> String {
    let mut links = String::new();
    for (key, href, label) in [
        ("campaigns", "/campaigns", "Campaigns"),
        ("messages", "/messages", "Messages"),
        ("reach", "/reach", "Reach"),
        ("fleet", "/fleet", "Fleet"),
    ] {
        let class = if key == nav { " class=\"active\"" } else { "" };
        let _ = write!(links, "<a href=\"{href}\"{class}>{label}</a>");
    }
    let session = if who.read_only {
        "<span class=\"badge\" id=\"mode\">read-only (WXPUSH_DASHBOARD_TOKEN not set)</span>"
            .to_owned()
    } else if let Some(csrf) = &who.csrf {
        format!(
            "<form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><span class=\"badge ok\" id=\"mode\">operator</span> <button type=\"submit\">Log out</button></form>",
            esc(csrf)
        )
    } else {
        "<span class=\"badge\" id=\"mode\">viewer</span> <a href=\"/login\" id=\"login-link\">Log in</a>".to_owned()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · wxpush</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <header><strong>wxpush</strong> <span class=\"ns\">{ns}</span><nav>{links}</nav>\
         <div class=\"session\">{session}</div></header>\
         <main id=\"live\">{main}</main>\
         <footer>refreshes every 2 s · <span id=\"refreshed\"></span></footer></body></html>\n",
        title = esc(title),
        ns = esc(&config.namespace.to_string()),
    )
}

pub fn error(message: &str) -> String {
    format!(
        "<h1>Refused</h1><p class=\"error\" id=\"error\">{}</p>",
        esc(message)
    )
}

pub fn login(who: &Who, failure: Option<&str>) -> String {
    let mut out = String::from("<h1>Log in</h1>");
    if who.read_only {
        out.push_str("<p>This dashboard is read-only: WXPUSH_DASHBOARD_TOKEN is not set where it runs, so nobody can act from it.</p>");
        return out;
    }
    if who.csrf.is_some() {
        out.push_str("<p>You are logged in.</p>");
    }
    if let Some(f) = failure {
        let _ = write!(out, "<p class=\"error\" id=\"error\">{}</p>", esc(f));
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\" class=\"login\" data-static>\
         <label>Dashboard token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\"></label> \
         <button type=\"submit\" id=\"login\">Log in</button></form>\
         <p class=\"hint\">The token is WXPUSH_DASHBOARD_TOKEN. It is kept in an HttpOnly cookie for this browser's session, never shown.</p>",
    );
    out
}

/// A progress bar: final outcomes over targeted.
fn progress(c: &Value) -> String {
    let done = c["done"].as_u64().unwrap_or(0);
    match c["targeted"].as_u64() {
        Some(t) if t > 0 => {
            let shown = done.min(t);
            format!(
                "<progress value=\"{shown}\" max=\"{t}\"></progress> <span class=\"pct\">{}% · {done}/{t}</span>",
                shown * 100 / t
            )
        }
        _ => format!("<span class=\"pct\">{done} done</span>"),
    }
}

fn rate_eta(c: &Value) -> (String, String) {
    let rate = c["moving_rate_per_sec"]
        .as_f64()
        .or(c["sent_per_sec"].as_f64())
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}/s"));
    let eta = if c["complete"].as_bool() == Some(true) {
        "done".to_owned()
    } else if c["state"] == "paused" {
        "paused".to_owned()
    } else {
        c["eta_secs"]
            .as_f64()
            .map_or_else(|| "?".to_owned(), duration)
    };
    (rate, eta)
}

fn campaign_href(c: &Value) -> String {
    format!(
        "/campaigns/{}/{}",
        url_part(c["app"].as_str().unwrap_or("")),
        url_part(c["campaign_id"].as_str().unwrap_or(""))
    )
}

pub fn campaigns(list: &[Value], q: &ListQuery, config: &Config) -> String {
    let mut out = String::from(
        "<h1>Campaigns</h1><form method=\"get\" action=\"/campaigns\" class=\"filters\">",
    );
    out.push_str("<label>App <select name=\"app\"><option value=\"\">all</option>");
    for app in config.apps.iter() {
        let sel = if q.app.as_deref() == Some(app.id.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{sel}>{}</option>", esc(app.id.as_str()));
    }
    out.push_str(
        "</select></label> <label>State <select name=\"state\"><option value=\"\">any</option>",
    );
    for s in [
        "scheduled",
        "dispatching",
        "dispatched",
        "paused",
        "cancelled",
        "stopped",
        "complete",
    ] {
        let sel = if q.state.as_deref() == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{sel}>{s}</option>");
    }
    out.push_str("</select></label> <button type=\"submit\">Filter</button></form>");
    if list.is_empty() {
        out.push_str("<p id=\"no-campaigns\">No campaign yet (campaigns are listed from the index their records write when they open).</p>");
        return out;
    }
    out.push_str("<table id=\"campaigns\"><thead><tr><th>Campaign</th><th>App</th><th>State</th><th>Progress</th><th>Sent</th><th>Rate</th><th>ETA</th><th>Started</th></tr></thead><tbody>");
    for c in list {
        let (rate, eta) = rate_eta(c);
        let id = c["campaign_id"].as_str().unwrap_or("");
        let _ = write!(
            out,
            "<tr data-campaign=\"{id}\"><td><a href=\"{href}\">{id}</a></td><td>{app}</td><td class=\"state {state}\">{state}</td><td class=\"progress\">{bar}</td><td class=\"sent\">{sent}</td><td>{rate}</td><td>{eta}</td><td>{started}</td></tr>",
            id = esc(id),
            href = esc(&campaign_href(c)),
            app = esc(&text(&c["app"])),
            state = esc(&text(&c["state"])),
            bar = progress(c),
            sent = c["sent"].as_u64().unwrap_or(0) + c["sent_unconfirmed"].as_u64().unwrap_or(0),
            started = time_ms(&c["started_at_ms"]),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// What a counter's name means, for the breakdown.
fn outcome_label(name: &str) -> String {
    if let Some(code) = name.strip_prefix("failed:") {
        let meaning = code
            .parse::<i64>()
            .ok()
            .and_then(crate::status::code_meaning)
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        return format!("failed {code}{meaning}");
    }
    match name {
        "sent" => "sent".into(),
        "sent_unconfirmed" => "sent (unconfirmed)".into(),
        "no_credential" => "no credential".into(),
        "dead_lettered" => "dead-lettered (retry can send again)".into(),
        "unknown" => "unknown (subscribe, not resent)".into(),
        "invalid_data" => "invalid data (not sent)".into(),
        other => other.replace('_', " "),
    }
}

pub fn campaign(c: &Value, who: &Who, done: Option<&str>) -> String {
    let id = c["campaign_id"].as_str().unwrap_or("");
    let (rate, eta) = rate_eta(c);
    let mut out = format!(
        "<h1>Campaign <span id=\"campaign-id\">{}</span></h1>",
        esc(id)
    );
    if let Some(done) = done.filter(|d| {
        [
            "paused",
            "resumed",
            "cancelled",
            "retried",
            "unchanged",
            "nothing-to-retry",
        ]
        .contains(d)
    }) {
        let _ = write!(
            out,
            "<p class=\"flash\" id=\"flash\">{}</p>",
            done.replace('-', " ")
        );
    }
    let _ = write!(
        out,
        "<section class=\"summary\"><div><span class=\"label\">state</span> <span class=\"state {s}\" id=\"state\">{s}</span></div>\
         <div class=\"wide\">{bar}</div><div><span class=\"label\">rate</span> {rate}</div><div><span class=\"label\">ETA</span> {eta}</div>\
         <div><span class=\"label\">app</span> {app}</div><div><span class=\"label\">template</span> {tpl}</div>\
         <div><span class=\"label\">kind</span> {kind}</div><div><span class=\"label\">audience</span> {aud}</div>\
         <div><span class=\"label\">targeted</span> {targeted}</div><div><span class=\"label\">pending</span> <span id=\"pending\">{pending}</span></div></section>",
        s = esc(&text(&c["state"])),
        bar = progress(c),
        app = esc(&text(&c["app"])),
        tpl = esc(&text(&c["template_id"])),
        kind = esc(&text(&c["kind"])),
        aud = esc(&text(&c["audience"])),
        targeted = text(&c["targeted"]),
        pending = text(&c["pending"]),
    );
    // Actions.
    out.push_str("<section class=\"actions\" id=\"actions\">");
    let href = campaign_href(c);
    for action in ["pause", "resume", "cancel", "retry"] {
        let (disabled, csrf) = if who.read_only {
            (
                " disabled title=\"read-only: WXPUSH_DASHBOARD_TOKEN is not set\"",
                String::new(),
            )
        } else {
            ("", who.csrf.clone().unwrap_or_default())
        };
        let confirm = if action == "cancel" {
            " data-confirm=\"Cancel this campaign? Its recipients not yet sent are recorded cancelled.\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<form method=\"post\" action=\"{href}/{action}\" class=\"inline\"{confirm}><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"action-{action}\"{disabled}>{label}</button></form> ",
            href = esc(&href),
            csrf = esc(&csrf),
            label = {
                let mut l = action.to_owned();
                l[..1].make_ascii_uppercase();
                l
            },
        );
    }
    if who.read_only {
        out.push_str(
            "<span class=\"hint\">read-only: set WXPUSH_DASHBOARD_TOKEN to act from here</span>",
        );
    } else if who.csrf.is_none() {
        out.push_str("<span class=\"hint\"><a href=\"/login\">log in</a> to act</span>");
    }
    out.push_str("</section>");
    // Outcomes.
    out.push_str("<section><h2>Outcomes</h2><table id=\"outcomes\"><tbody>");
    let outcomes = c["outcomes"].as_array().cloned().unwrap_or_default();
    let total: u64 = outcomes.iter().filter_map(|o| o["count"].as_u64()).sum();
    for o in &outcomes {
        let name = o["outcome"].as_str().unwrap_or("");
        let n = o["count"].as_u64().unwrap_or(0);
        let _ = write!(
            out,
            "<tr data-outcome=\"{name}\"><td>{label}</td><td class=\"num\">{n}</td><td>{bar}</td></tr>",
            name = esc(name),
            label = esc(&outcome_label(name)),
            bar = if total > 0 {
                format!("<progress value=\"{n}\" max=\"{total}\"></progress>")
            } else {
                String::new()
            }
        );
    }
    if outcomes.is_empty() {
        out.push_str("<tr><td>no outcome yet</td></tr>");
    }
    out.push_str("</tbody></table>");
    if let Some(b) = c["bookkeeping"].as_object().filter(|b| !b.is_empty()) {
        out.push_str("<p class=\"hint\">");
        for (k, v) in b {
            let _ = write!(out, "{}: {} · ", esc(&k.replace('_', " ")), text(v));
        }
        out.push_str("not outcomes</p>");
    }
    out.push_str("</section>");
    // Chart.
    out.push_str("<section><h2>Sends per second</h2>");
    out.push_str(&rate_chart(
        c["sends_per_sec"].as_array().map_or(&[][..], |v| v),
    ));
    out.push_str("</section>");
    // Schedule.
    out.push_str("<section><h2>Schedule</h2><table id=\"schedule\"><tbody>");
    if let Some(times) = c["times"].as_object() {
        let mut times: Vec<(&String, &Value)> = times.iter().collect();
        times.sort_by_key(|(_, v)| v.as_i64());
        for (k, v) in times {
            let label = k.trim_end_matches("_at_ms").replace('_', " ");
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&label),
                time_ms(v)
            );
        }
    }
    let _ = write!(
        out,
        "<tr><td>last outcome</td><td>{}</td></tr><tr><td>finished</td><td>{}</td></tr></tbody></table></section>",
        time_ms(&c["last_at_ms"]),
        time_ms(&c["finished_at_ms"])
    );
    if let Some(w) = c["warnings"].as_array().filter(|w| !w.is_empty()) {
        out.push_str("<section><h2>Warnings</h2><ul>");
        for x in w {
            let _ = write!(out, "<li>{}</li>", esc(&text(x)));
        }
        out.push_str("</ul></section>");
    }
    out
}

/// Bars of sends per second by 10 s, gaps as zero, with the peak and the time span labelled.
fn rate_chart(points: &[Value]) -> String {
    let pts: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|p| Some((p["at"].as_i64()?, p["per_sec"].as_f64()?)))
        .collect();
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return "<p class=\"hint\" id=\"rate-chart\">no send yet</p>".into();
    };
    let step = wxpush_bank::RATE_BUCKET_SECS;
    let n = ((last.0 - first.0) / step + 1).clamp(1, 2000) as usize;
    let mut series = vec![0.0f64; n];
    for (t, r) in &pts {
        let i = ((t - first.0) / step) as usize;
        if i < n {
            series[i] = *r;
        }
    }
    let peak = series.iter().cloned().fold(0.0f64, f64::max).max(1.0);
    let (w, h, left, bottom) = (640.0, 160.0, 48.0, 20.0);
    let bw = ((w - left) / n as f64).min(24.0);
    let mut svg = format!(
        "<svg id=\"rate-chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"sends per second\">\
         <line x1=\"{left}\" y1=\"0\" x2=\"{left}\" y2=\"{y0}\" class=\"axis\"/>\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{w}\" y2=\"{y0}\" class=\"axis\"/>\
         <text x=\"{lx}\" y=\"12\" class=\"tick\" text-anchor=\"end\">{peak:.0}/s</text>\
         <text x=\"{lx}\" y=\"{y0}\" class=\"tick\" text-anchor=\"end\">0</text>",
        y0 = h - bottom,
        lx = left - 4.0,
    );
    for (i, r) in series.iter().enumerate() {
        let bh = (h - bottom - 4.0) * r / peak;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" class=\"bar\"><title>{:.1}/s</title></rect>",
            left + i as f64 * bw + 0.5,
            h - bottom - bh,
            (bw - 1.0).max(0.5),
            bh,
            r
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{h}\" class=\"tick\">{}</text><text x=\"{w}\" y=\"{h}\" class=\"tick\" text-anchor=\"end\">{}</text></svg>\
         <p class=\"hint\">each bar: sends (sent and sent unconfirmed) per second over 10 s</p>",
        crate::status::format_utc(first.0 * 1000),
        crate::status::format_utc((last.0 + step) * 1000),
    );
    svg
}

pub fn messages(q: &LookupQuery, found: Option<&Value>) -> String {
    let mut out = format!(
        "<h1>Messages</h1><form method=\"get\" action=\"/messages\" class=\"filters\" data-static>\
         <label>messageId or openId <input type=\"search\" name=\"q\" id=\"lookup\" value=\"{}\" size=\"40\"></label> \
         <button type=\"submit\" id=\"lookup-go\">Look up</button></form>",
        esc(q.q.as_deref().unwrap_or(""))
    );
    let Some(found) = found else {
        out.push_str("<p class=\"hint\">A single message's receipts trail by its messageId; what a user holds (credentials by expiry, consents per template) and which campaigns and messages reached them, by openId.</p>");
        return out;
    };
    let messages = found["messages"].as_array().cloned().unwrap_or_default();
    let users = found["users"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() && users.is_empty() {
        let _ = write!(
            out,
            "<p id=\"not-found\">Nothing found for {}: no message of that id in the last 9 days, and no user of that openId holding anything.</p>",
            esc(found["query"].as_str().unwrap_or(""))
        );
        return out;
    }
    for m in &messages {
        let delivery = &m["delivery"];
        let _ = write!(
            out,
            "<section class=\"receipt\"><h2>Message {id}</h2><table class=\"receipt-trail\"><tbody>\
             <tr><td>app</td><td>{app}</td></tr><tr><td>user</td><td>{user}</td></tr>\
             <tr><td>template</td><td>{tpl}</td></tr><tr><td>outcome</td><td class=\"outcome\">{outcome}</td></tr>\
             <tr><td>errcode</td><td>{err}</td></tr><tr><td>msgid</td><td>{msgid}</td></tr>\
             <tr><td>at</td><td>{at}</td></tr><tr><td>delivered event</td><td>{dv}</td></tr>\
             <tr><td>delivered at</td><td>{dat}</td></tr></tbody></table></section>",
            id = esc(&text(&m["messageId"])),
            app = esc(&text(&m["appId"])),
            user = esc(&text(&m["openId"])),
            tpl = esc(&text(&m["templateId"])),
            outcome = esc(&text(&m["outcome"])),
            err = esc(&text(&m["errcode"])),
            msgid = esc(&text(&m["msgid"])),
            at = time_ms(&m["at"]),
            dv = esc(&text(&delivery["outcome"])),
            dat = time_ms(&delivery["at"]),
        );
    }
    for u in &users {
        let _ = write!(
            out,
            "<section class=\"user\"><h2>User {} <span class=\"hint\">app {}</span></h2>",
            esc(&text(&u["openId"])),
            esc(&text(&u["appId"]))
        );
        out.push_str(
            "<h3>Credentials (soonest to expire first)</h3><table class=\"credentials\"><tbody>",
        );
        let creds = u["credentials"].as_array().cloned().unwrap_or_default();
        for c in &creds {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>expires {}</td></tr>",
                esc(&text(&c["kind"])),
                time_ms(&c["expires_at"].as_i64().map(|s| s * 1000).into())
            );
        }
        if creds.is_empty() {
            out.push_str("<tr><td>none usable</td></tr>");
        }
        out.push_str(
            "</tbody></table><h3>Consents per template</h3><table class=\"consents\"><tbody>",
        );
        match u["consents"].as_object().filter(|c| !c.is_empty()) {
            Some(cs) => {
                for (t, n) in cs {
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                        esc(t),
                        text(n)
                    );
                }
            }
            None => out.push_str("<tr><td>none</td></tr>"),
        }
        out.push_str("</tbody></table><h3>Campaigns and messages that reached them (last 8 days)</h3><table class=\"marks\"><tbody>");
        let marks = u["marks"].as_array().cloned().unwrap_or_default();
        for m in &marks {
            let what = match m["message_id"].as_str() {
                Some(id) => format!(
                    "message <a href=\"/messages?q={}\">{}</a>",
                    url_part(id),
                    esc(id)
                ),
                None => {
                    let id = m["campaign_id"].as_str().unwrap_or("");
                    format!(
                        "campaign <a href=\"/campaigns/{}/{}\">{}</a>",
                        url_part(u["appId"].as_str().unwrap_or("")),
                        url_part(id),
                        esc(id)
                    )
                }
            };
            let _ = write!(
                out,
                "<tr><td>{what}</td><td>{}</td></tr>",
                esc(&text(&m["state"]))
            );
        }
        if marks.is_empty() {
            out.push_str("<tr><td>none</td></tr>");
        }
        out.push_str("</tbody></table></section>");
    }
    out
}

pub fn reach(apps: &[Value]) -> String {
    let mut out = String::from("<h1>Reach</h1>");
    for r in apps {
        let _ = write!(
            out,
            "<section class=\"reach\" data-app=\"{app}\"><h2>App {app}</h2><p>reachable now: <strong class=\"reachable-now\">{now}</strong> users · messages sendable now: {msgs}</p>",
            app = esc(&text(&r["app"])),
            now = text(&r["reachable_now"]),
            msgs = text(&r["messages_now"]),
        );
        let mut days: Vec<(String, u64)> =
            vec![("now".into(), r["reachable_now"].as_u64().unwrap_or(0))];
        for d in r["reachable_by_day"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            days.push((
                format!("day {}", text(&d["day"])),
                d["users"].as_u64().unwrap_or(0),
            ));
        }
        out.push_str(&bar_chart(&days, "users reachable"));
        out.push_str("<h3>Consents per template</h3><table class=\"consents\"><thead><tr><th>template</th><th>consents</th><th>users</th></tr></thead><tbody>");
        let ts = r["consents"]["templates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for t in &ts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&text(&t["template_id"])),
                text(&t["consents"]),
                text(&t["users"])
            );
        }
        if ts.is_empty() {
            out.push_str("<tr><td colspan=\"3\">none</td></tr>");
        }
        out.push_str("</tbody></table></section>");
    }
    out.push_str("<p class=\"hint\">the forecast is counted again at most every 30 s</p>");
    out
}

/// Labelled vertical bars.
fn bar_chart(bars: &[(String, u64)], what: &str) -> String {
    let peak = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let (w, h, bottom) = (640.0, 170.0, 20.0);
    let bw = w / bars.len().max(1) as f64;
    let mut svg = format!(
        "<svg class=\"bars\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(what)
    );
    for (i, (label, n)) in bars.iter().enumerate() {
        let bh = (h - bottom - 16.0) * (*n as f64) / peak;
        let x = i as f64 * bw;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" class=\"bar\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{n}</text>\
             <text x=\"{:.1}\" y=\"{h}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            x + 4.0,
            h - bottom - bh,
            bw - 8.0,
            bh,
            x + bw / 2.0,
            h - bottom - bh - 3.0,
            x + bw / 2.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn fleet(f: &Value) -> String {
    let mut apps = String::from("<h2>Apps</h2><table id=\"apps\"><thead><tr><th>app</th><th>token age</th><th>token expires</th><th>quota pause</th><th>sending now</th><th>WXPUSH_SEND_RATE</th></tr></thead><tbody>",
    );
    for a in f["apps"].as_array().cloned().unwrap_or_default() {
        let pause = if a["quota_pause"]["paused"].as_bool() == Some(true) {
            format!(
                "paused, {} left",
                duration(a["quota_pause"]["left_secs"].as_f64().unwrap_or(0.0))
            )
        } else {
            "no".to_owned()
        };
        let _ = write!(
            apps,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}/s</td></tr>",
            esc(&text(&a["app"])),
            a["token"]["age_secs"]
                .as_f64()
                .map_or_else(|| "no token yet".to_owned(), duration),
            time_ms(&a["token"]["expires_at_ms"]),
            pause,
            a["sending_per_sec"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}/s")),
            text(&a["send_rate"])
        );
    }
    apps.push_str("</tbody></table><p class=\"hint\">sending now: the moving rate of the campaigns under way (recipients settled per second, each of which took a rate permit; single messages not counted)</p>");
    let mut out = format!(
        "<h1>Fleet</h1>{apps}<p class=\"hint\">RabbitMQ management API: {}</p><h2>Queues</h2>\
         <table id=\"queues\"><thead><tr><th>queue</th><th>messages</th><th>consumers</th><th>in/s</th><th>out/s</th></tr></thead><tbody>",
        esc(&text(&f["management_api"]))
    );
    let rate = |q: &Value, k: &str| {
        q["rates"][k]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
    };
    for q in f["queues"].as_array().cloned().unwrap_or_default() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&text(&q["queue"])),
            text(&q["messages"]),
            text(&q["consumers"]),
            rate(&q, "in_per_sec"),
            rate(&q, "out_per_sec")
        );
    }
    out.push_str("</tbody></table><h2>Dead letters</h2><table id=\"dead-letters\"><thead><tr><th>queue</th><th>messages</th><th>by reason</th><th>sample</th></tr></thead><tbody>");
    for q in f["dead_letters"].as_array().cloned().unwrap_or_default() {
        let r = &q["reasons"];
        let (mut by, sample) = match r["unavailable"].as_str() {
            Some(why) => (
                format!("<span class=\"hint\">{}</span>", esc(why)),
                String::new(),
            ),
            None => {
                let mut by = r["by_reason"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{}: {}", esc(k), text(v)))
                            .collect::<Vec<_>>()
                            .join("<br>")
                    })
                    .unwrap_or_default();
                if !r["since_ms"].is_null() {
                    let _ = write!(
                        by,
                        "<br><span class=\"hint\">counted since {}</span>",
                        time_ms(&r["since_ms"])
                    );
                }
                let sample = r["sample"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .map(|x| {
                                format!(
                                    "{} {}: {}",
                                    time_ms(&x["at"]),
                                    esc(&text(&x["code"])),
                                    esc(&text(&x["reason"]))
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("<br>")
                    })
                    .unwrap_or_default();
                (by, sample)
            }
        };
        match (
            q["peeked"]["unavailable"].as_str(),
            q["peeked"]["by_reason"].as_object(),
        ) {
            (Some(why), _) => {
                let _ = write!(by, "<br><span class=\"hint\">{}</span>", esc(why));
            }
            (None, Some(now)) => {
                by.push_str("<br><span class=\"hint\">in the queue now (peeked):</span>");
                for (k, v) in now {
                    let _ = write!(by, "<br>{}: {}", esc(k), text(v));
                }
            }
            _ => {}
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{by}</td><td>{sample}</td></tr>",
            esc(&text(&q["queue"])),
            text(&q["messages"])
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn who(read_only: bool, csrf: Option<&str>) -> Who {
        Who {
            csrf: csrf.map(str::to_owned),
            read_only,
        }
    }

    fn hostile() -> Value {
        json!({
            "campaign_id": "c<1>", "app": "wx\"app", "state": "paused", "done": 3, "targeted": 10,
            "outcomes": [{"outcome": "sent", "count": 2}, {"outcome": "<script>x</script>", "count": 1},
                         {"outcome": "failed:43101", "count": 1}],
            "sends_per_sec": [{"at": 1000, "per_sec": 2.0}, {"at": 1030, "per_sec": 4.0}],
            "times": {"started_at_ms": 2000, "paused_at_ms": 1000},
            "warnings": ["<b>odd</b>"],
        })
    }

    #[test]
    fn outside_text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = campaign(&hostile(), &who(false, Some("k")), Some("paused"));
        assert!(
            !page.contains("<script>") && page.contains("&lt;script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<b>odd"));
        assert!(page.contains("c&lt;1&gt;"));
        assert!(page.contains("failed 43101 (user refused)"), "{page}");
        // The flash takes known words only.
        let odd = campaign(&hostile(), &who(false, Some("k")), Some("<img src=x>"));
        assert!(!odd.contains("id=\"flash\""));
    }

    #[test]
    fn buttons_are_disabled_when_read_only_and_carry_the_sessions_csrf_token() {
        let ro = campaign(&hostile(), &who(true, None), None);
        assert_eq!(ro.matches(" disabled ").count(), 4, "{ro}");
        let op = campaign(&hostile(), &who(false, Some("csrf123")), None);
        assert_eq!(op.matches("value=\"csrf123\"").count(), 4);
        assert!(!op.contains(" disabled "));
        // Paused: no ETA guessed.
        assert!(op.contains("ETA</span> paused"), "{op}");
    }

    #[test]
    fn the_rate_chart_shows_gaps_as_zero_and_the_schedule_is_in_time_order() {
        let page = campaign(&hostile(), &who(true, None), None);
        // 1000, 1010 (gap), 1020 (gap), 1030: four bars, two of them empty.
        assert_eq!(page.matches("class=\"bar\"").count(), 4, "{page}");
        assert_eq!(page.matches("height=\"0.0\"").count(), 2, "{page}");
        let (paused, started) = (
            page.find(">paused<").unwrap(),
            page.find(">started<").unwrap(),
        );
        assert!(paused < started);
    }
}
