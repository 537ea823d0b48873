//! Sending the outbox to the collector: one thread with its own small tokio
//! runtime and a reqwest client (rustls: the system's trust store plus
//! `upload.ca_file`; an optional client certificate; `upload.proxy` or the
//! usual proxy environment variables).
//!
//! Each item is POSTed to `{url}/v1/days` with `Authorization: Bearer`
//! (read from `upload.token_file`, never logged) and an `Idempotency-Key`
//! of agent, practice, date and revision. 2xx removes it from the outbox;
//! 408, 429, 5xx and network failures retry with exponential backoff and
//! jitter (capped at `upload.max_backoff`; `Retry-After` is honoured);
//! other 4xx park it with the collector's reason, shown in status and
//! retried after a configuration reload. The outbox is in the store, so
//! nothing is lost to a restart or `kill -9`: an item sent but not yet
//! removed is sent again, and the collector takes it once.

use super::backoff;
use crate::config::UploadConfig;
use crate::store::Store;
use cbt_proto::persist::v1::OutboxItemV1;
use cbt_proto::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the uploader says about itself (in `/status` under `upload`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UploadStatus {
    pub enabled: bool,
    pub url: String,
    pub agent_id: String,
    /// Documents waiting (parked ones included).
    pub outbox: u64,
    /// The oldest local date with a document not delivered.
    pub oldest_undelivered: Option<String>,
    pub parked: Vec<Parked>,
    pub last_success: Option<Delivery>,
    pub last_error: Option<Failure>,
    /// Documents the collector took since the agent started.
    pub delivered: u64,
    /// Of which it already had (sent again after a restart or a lost answer).
    pub duplicates: u64,
    /// Of which a higher revision was already there.
    pub superseded: u64,
    /// Attempts that failed and will be retried.
    pub retries: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Parked {
    pub practice: String,
    pub date: String,
    pub revision: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delivery {
    pub at: String,
    pub practice: String,
    pub date: String,
    pub revision: u64,
    pub result: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Failure {
    pub at: String,
    pub message: String,
}

/// Messages from the daemon.
pub enum Control {
    /// The configuration was reloaded: new settings, parked items retried.
    Reload(Option<UploadConfig>),
    Stop,
}

/// How an attempt ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 2xx, with the collector's `result` (stored, duplicate, superseded).
    Taken(String),
    /// Retry after a backoff (`Some`: the collector's Retry-After, seconds).
    Retry(String, Option<u64>),
    /// Refused for a reason a retry cannot fix.
    Park(String),
}

pub struct Uploader {
    cfg: UploadConfig,
    client: Result<(reqwest::Client, String), String>,
    rt: tokio::runtime::Runtime,
}

fn now() -> Timestamp {
    crate::daemon::capture::now()
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the service runs as user cbt-agent: make the file readable by group cbt-agent, mode 0640)"
        } else {
            ""
        };
        format!("cannot read {what} {}: {e}{hint}", path.display())
    })
}

/// The HTTP client and the token for a configuration, or why not.
pub fn client(cfg: &UploadConfig) -> Result<(reqwest::Client, String), String> {
    let token = String::from_utf8(read(&cfg.token_file, "upload.token_file")?)
        .map_err(|_| format!("{} does not hold a token (it is not text)", cfg.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!("{} does not hold a token: put the one line `cbt-collector token add` printed in it", cfg.token_file.display()));
    }
    let timeout = Duration::from_micros(cfg.timeout.max(1) as u64);
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("cbt-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout.min(Duration::from_secs(15)))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(ca) = &cfg.ca_file {
        let pem = read(ca, "upload.ca_file")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: not PEM certificates: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", ca.display()));
        }
        b = b.tls_certs_merge(certs);
    }
    if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
        let mut pem = read(cert, "upload.client_cert")?;
        pem.extend(read(key, "upload.client_key")?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("the client certificate or key is not usable PEM: {e}"))?;
        b = b.identity(id);
    }
    if let Some(p) = &cfg.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("upload.proxy `{p}`: {e}"))?);
    }
    let c = b.build().map_err(|e| format!("cannot set up HTTPS: {}", chain(&e)))?;
    Ok((c, token))
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Says what a transport failure means for the person reading status.
fn explain(e: &reqwest::Error, url: &str) -> String {
    let detail = chain(e);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("invalid peer") {
        format!("the collector's certificate is not trusted ({detail}): set upload.ca_file to the CA that signed it, or fix the collector's certificate")
    } else if e.is_timeout() {
        format!("no answer from {url} in time ({detail})")
    } else if e.is_connect() {
        format!("cannot connect to {url} ({detail})")
    } else {
        format!("sending to {url} failed ({detail})")
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s.min(86_400));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = when.timestamp() - chrono::Utc::now().timestamp();
    Some(secs.clamp(0, 86_400) as u64)
}

#[derive(Deserialize)]
struct Answer {
    result: Option<String>,
    error: Option<String>,
}

/// What to do after an answer with this status and body.
pub fn classify(status: u16, body: &str, retry_after: Option<u64>) -> Outcome {
    let parsed: Option<Answer> = serde_json::from_str(body).ok();
    let reason = || {
        let text = parsed.as_ref().and_then(|a| a.error.clone()).unwrap_or_else(|| body.trim().chars().take(300).collect());
        format!("{status}: {text}")
    };
    match status {
        200..=299 => Outcome::Taken(parsed.and_then(|a| a.result).unwrap_or_else(|| "stored".into())),
        408 | 429 | 500..=599 => Outcome::Retry(format!("the collector answered {}", reason()), retry_after),
        401 => Outcome::Park(format!("the collector does not accept the token ({}); put a valid token in upload.token_file and reload", reason())),
        403 => Outcome::Park(format!("the collector refused this practice for this token ({}); have the supplier bind the practice to the token", reason())),
        _ => Outcome::Park(format!("the collector refused the document ({})", reason())),
    }
}

impl Uploader {
    pub fn new(cfg: UploadConfig) -> std::io::Result<Uploader> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Uploader { client: client(&cfg), cfg, rt })
    }

    /// Sends one item and says how it went.
    pub fn send(&self, item: &OutboxItemV1) -> Outcome {
        let (client, token) = match &self.client {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e.clone(), Some(30)),
        };
        let url = self.cfg.days_url();
        let key = format!("{}:{}:{}:{}", self.cfg.agent_id, item.practice, item.date, item.revision);
        let req = client
            .post(&url)
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(item.body.clone());
        self.rt.block_on(async {
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ra = retry_after(resp.headers());
                    let body = resp.text().await.unwrap_or_default();
                    classify(status, &body, ra)
                }
                Err(e) => Outcome::Retry(explain(&e, &url), None),
            }
        })
    }
}

/// The uploader's thread: sends what is due, sleeps until the next item is
/// due or a message comes.
pub fn spawn(
    cfg: UploadConfig,
    store: impl Fn() -> Option<Arc<Store>> + Send + 'static,
    status: Arc<Mutex<UploadStatus>>,
    control: Receiver<Control>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("upload".into()).spawn(move || {
        let mut up = match Uploader::new(cfg) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!("the uploader cannot start: {e}");
                return;
            }
        };
        if let Err(e) = &up.client {
            tracing::error!("upload: {e}");
        }
        let mut wait = Duration::from_millis(200);
        let mut paused_until = Timestamp(0);
        loop {
            match control.recv_timeout(wait) {
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Control::Reload(new)) => {
                    let Some(cfg) = new else { return };
                    up.client = client(&cfg);
                    up.cfg = cfg;
                    if let Err(e) = &up.client {
                        tracing::error!("upload: {e}");
                    }
                    paused_until = Timestamp(0);
                    if let Some(s) = store() {
                        match s.unpark_all(now()) {
                            Ok(n) if n > 0 => tracing::info!(documents = n, "upload: parked documents will be sent again"),
                            _ => {}
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let Some(st) = store() else {
                wait = Duration::from_secs(1);
                continue;
            };
            if now() < paused_until {
                wait = Duration::from_micros(paused_until.since(now()).clamp(10_000, 1_000_000) as u64);
                continue;
            }
            let (w, pause) = round(&up, &st, &status);
            wait = w;
            if let Some(p) = pause {
                paused_until = p;
            }
        }
    })
}

fn set<F: FnOnce(&mut UploadStatus)>(status: &Mutex<UploadStatus>, f: F) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Sends every due item; returns how long to sleep, and until when to send
/// nothing after a failure (the collector or the way to it is down: the
/// other items would fail the same way).
fn round(up: &Uploader, store: &Store, status: &Mutex<UploadStatus>) -> (Duration, Option<Timestamp>) {
    let items = match store.due_items(now(), 64) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("upload: cannot read the outbox: {e:#}");
            return (Duration::from_secs(5), None);
        }
    };
    let mut pause = None;
    for item in &items {
        let t = now();
        let outcome = up.send(item);
        let r = match &outcome {
            Outcome::Taken(result) => {
                set(status, |s| {
                    s.delivered += 1;
                    s.duplicates += (result == "duplicate") as u64;
                    s.superseded += (result == "superseded") as u64;
                    s.last_success = Some(Delivery {
                        at: t.to_rfc3339(),
                        practice: item.practice.clone(),
                        date: item.date.to_string(),
                        revision: item.revision,
                        result: result.clone(),
                    });
                });
                tracing::debug!(practice = %item.practice, date = %item.date, revision = item.revision, %result, "upload: delivered");
                store.delivered(&item.practice, item.date, item.revision, t)
            }
            Outcome::Retry(msg, ra) => {
                let attempts = item.attempts + 1;
                let wait = match ra {
                    Some(s) => (*s as i64).max(1) * 1_000_000,
                    None => backoff(attempts, up.cfg.max_backoff, rand::random::<f64>()),
                };
                set(status, |s| {
                    s.retries += 1;
                    s.last_error = Some(Failure {
                        at: t.to_rfc3339(),
                        message: msg.clone(),
                    });
                });
                if attempts == 1 || attempts % 10 == 0 {
                    tracing::warn!(practice = %item.practice, date = %item.date, attempts, "upload failed, retrying in {} s: {msg}", wait / 1_000_000);
                }
                pause = Some(t.add(wait));
                let msg = msg.clone();
                store.update_item(&item.practice, item.date, item.revision, move |x| {
                    x.attempts = attempts;
                    x.next_attempt = t.add(wait);
                    x.last_error = Some(msg.clone());
                })
            }
            Outcome::Park(reason) => {
                tracing::error!(practice = %item.practice, date = %item.date, revision = item.revision, "upload refused, kept until the configuration is reloaded: {reason}");
                set(status, |s| {
                    s.last_error = Some(Failure {
                        at: t.to_rfc3339(),
                        message: reason.clone(),
                    });
                });
                let reason = reason.clone();
                store.update_item(&item.practice, item.date, item.revision, move |x| {
                    x.parked = Some(reason.clone());
                    x.last_error = Some(reason.clone());
                })
            }
        };
        if let Err(e) = r {
            tracing::warn!("upload: cannot update the outbox: {e:#}");
        }
        // the collector is down: the other items would fail the same way
        if matches!(outcome, Outcome::Retry(..)) {
            break;
        }
    }
    // sleep until the next item is due (at most a second, so new ones go soon)
    let next = store
        .outbox_items()
        .ok()
        .and_then(|all| all.iter().filter(|i| i.parked.is_none()).map(|i| i.next_attempt).min());
    let sleep = match next {
        Some(t) if t > now() => Duration::from_micros(t.since(now()).clamp(10_000, 1_000_000) as u64),
        Some(_) => Duration::from_millis(10),
        None => Duration::from_secs(1),
    };
    (sleep, pause)
}
