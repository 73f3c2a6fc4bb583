//! The binary's own one-off HTTP GETs: `wxpush healthcheck` (a container's HEALTHCHECK in an
//! image without curl) and, when a process that calls WeChat starts with a plain `http://`
//! `WXPUSH_WECHAT_API_BASE`, the look at whether that base is the fake WeChat.
//!
//! This module owns those two checks and nothing else. It must not hold role logic, must not
//! delay a role's start (the WeChat-base look runs beside it), and must never log a secret: a
//! URL is logged through `redact_url` and an answer's body never.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use wxpush_domain::config::{http_addr, redact_url, HttpAddr};
use wxpush_domain::RawConfig;

/// How long either check waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// The URL to GET (default: /healthz on the port of WXPUSH_HTTP_ADDR, over loopback when
    /// that address is 0.0.0.0 or [::])
    #[arg(long)]
    url: Option<String>,
}

/// `wxpush healthcheck`: GETs the role's `/healthz` (or `--url`); Ok on a 2xx answer within
/// the timeout, else one readable error (exit 1).
pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let url = match args.url {
        Some(url) => url,
        None => healthz_url(RawConfig::from_env().http_addr)?,
    };
    let shown = redact_url(&url);
    match get(&url).await {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, _)) => anyhow::bail!("unhealthy: {shown} answered HTTP {status}"),
        Err(e) => anyhow::bail!("unhealthy: no answer from {shown}: {}", reason(&e)),
    }
}

/// `http://<addr>/healthz` for `WXPUSH_HTTP_ADDR` as given: the unspecified address becomes
/// the loopback one of its family. (A role that found its default port taken serves on
/// another, which this cannot know: the check is for a container's one role, as in
/// `deploy/Dockerfile`; elsewhere pass `--url`.)
fn healthz_url(given: Option<String>) -> anyhow::Result<String> {
    let Some(HttpAddr { addr, .. }) = http_addr(given)? else {
        anyhow::bail!("WXPUSH_HTTP_ADDR is off: this process serves no /healthz to check");
    };
    if addr.port() == 0 {
        anyhow::bail!(
            "WXPUSH_HTTP_ADDR has port 0 (a free port picked at start): pass --url with the \
             port the role logged"
        );
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "http://{}/healthz",
        SocketAddr::new(ip, addr.port())
    ))
}

/// Logs, once, what a plain-http WeChat base is: the fake WeChat (info: a dry run) or
/// anything else (a warning: the app secret and access tokens would cross the network
/// unencrypted). An `https://` base is not looked at.
pub async fn check_wechat_base(base: String) {
    if !base.starts_with("http://") {
        return;
    }
    let shown = redact_url(&base);
    let url = format!("{}/fake/health", base.trim_end_matches('/'));
    let is_fake = match get(&url).await {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|v| v.get("ok") == Some(&serde_json::Value::Bool(true))),
        _ => false,
    };
    if is_fake {
        tracing::info!(
            wechat_api_base = %shown,
            "WXPUSH_WECHAT_API_BASE is the fake WeChat: a dry run, no message reaches a user"
        );
    } else {
        tracing::warn!(
            wechat_api_base = %shown,
            "WXPUSH_WECHAT_API_BASE is plain http:// and not the fake WeChat: the app secret \
             and access tokens cross the network unencrypted (WeChat's API is \
             https://api.weixin.qq.com)"
        );
    }
}

/// One GET: the status and the body.
async fn get(url: &str) -> Result<(u16, String), reqwest::Error> {
    // reqwest is built without a crypto provider of its own: ring, as in wxpush-wechat.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let answer = client.get(url).send().await?;
    let status = answer.status().as_u16();
    Ok((status, answer.text().await.unwrap_or_default()))
}

/// A reqwest error's kind in a few words (its `Display` may repeat the URL).
fn reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_builder() {
        "not a usable URL"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::healthz_url;

    #[test]
    fn the_healthz_url_follows_wxpush_http_addr() {
        let url = |v: Option<&str>| healthz_url(v.map(str::to_owned)).map_err(|e| e.to_string());
        assert_eq!(url(None).unwrap(), "http://127.0.0.1:9464/healthz");
        assert_eq!(
            url(Some("0.0.0.0:9000")).unwrap(),
            "http://127.0.0.1:9000/healthz"
        );
        assert_eq!(url(Some("[::]:9000")).unwrap(), "http://[::1]:9000/healthz");
        assert_eq!(
            url(Some("10.0.0.7:9464")).unwrap(),
            "http://10.0.0.7:9464/healthz"
        );
        assert!(url(Some("off"))
            .unwrap_err()
            .contains("WXPUSH_HTTP_ADDR is off"));
        assert!(url(Some("127.0.0.1:0")).unwrap_err().contains("port 0"));
        assert!(url(Some("nowhere"))
            .unwrap_err()
            .contains("WXPUSH_HTTP_ADDR is invalid"));
    }
}
