//! The page from the manager's desk: an optional second listener on a LAN
//! address (`[page.lan]`), HTTPS only (rustls, the configured certificate),
//! answering nothing without the password (HTTP Basic, checked against the
//! argon2 hash in the configuration) or the read-only token (`Authorization:
//! Bearer`, or as the Basic password). It serves the pages; `/status`,
//! `/metrics` and `/api/*` only with `page.lan.api = true`. The loopback
//! listener stays as it is.
//!
//! Argon2 is slow on purpose: verifications run one at a time off the async
//! threads, and a credential that verified is remembered (as a keyed hash,
//! never in clear) for ten minutes so a browser's every request does not pay
//! again. Failed attempts are logged with the peer address.

use crate::config::LanConfig;
use anyhow::{bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REMEMBER: Duration = Duration::from_secs(600);
const REALM: &str = "Basic realm=\"cbt-agent practice page\", charset=\"UTF-8\"";

static PROBLEM: Mutex<Option<String>> = Mutex::new(None);

/// Why the LAN listener is not running, when it should be.
pub fn lan_problem() -> Option<String> {
    PROBLEM.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set_problem(p: Option<String>) {
    *PROBLEM.lock().unwrap_or_else(|e| e.into_inner()) = p;
}

/// What a request must show.
pub struct Gate {
    password_hash: Option<String>,
    token: Option<blake3::Hash>,
    api: bool,
    /// Keyed hashes of credentials that verified, and until when.
    remembered: Mutex<HashMap<blake3::Hash, Instant>>,
    key: [u8; 32],
    one_at_a_time: tokio::sync::Semaphore,
}

impl Gate {
    pub fn new(password_hash: Option<String>, token: Option<String>, api: bool) -> Gate {
        Gate {
            password_hash,
            token: token.map(|t| blake3::hash(t.as_bytes())),
            api,
            remembered: Mutex::new(HashMap::new()),
            key: rand::random(),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        }
    }

    fn token_matches(&self, presented: &str) -> bool {
        // blake3::Hash compares in constant time
        self.token.is_some_and(|t| t == blake3::hash(presented.as_bytes()))
    }

    /// Whether an `Authorization` header value lets the request in.
    pub async fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else { return false };
        let value = value.trim();
        if let Some(t) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            return self.token_matches(t.trim());
        }
        let Some(b64) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        // any user name; the password is what counts
        let password = text.split_once(':').map_or(text.as_str(), |(_, p)| p).to_string();
        if self.token_matches(&password) {
            return true;
        }
        let Some(hash) = self.password_hash.clone() else { return false };
        let memo = blake3::keyed_hash(&self.key, password.as_bytes());
        {
            let mut m = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            m.retain(|_, until| *until > now);
            if m.contains_key(&memo) {
                return true;
            }
        }
        let Ok(_permit) = self.one_at_a_time.acquire().await else { return false };
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password)).await.unwrap_or(false);
        if ok {
            let mut m = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() > 1000 {
                m.clear();
            }
            m.insert(memo, Instant::now() + REMEMBER);
        }
        ok
    }

    /// Whether a path is served on the LAN at all.
    pub fn serves(&self, path: &str) -> bool {
        self.api || super::PAGE_PATHS.contains(&path)
    }
}

/// The password's argon2id hash as a PHC string (what `page.lan.password_hash` holds).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("{e}"))?.to_string())
}

pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new read-only token: 32 random bytes, base64url.
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// `cbt-agent page-password`.
#[derive(clap::Args, Debug)]
pub struct PagePasswordArgs {
    /// Print a new random read-only token instead (for page.lan.token_file).
    #[arg(long)]
    pub token: bool,
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(prompt: &str) -> Result<String> {
    use std::io::{BufRead, Write};
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it or fails
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    let tty = unsafe { libc::tcgetattr(fd, &mut old) } == 0;
    if tty {
        let mut quiet = old;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: a termios from tcgetattr, changed in one flag
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    if tty {
        // SAFETY: restores what tcgetattr gave
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Prints the argon2id hash of a password read from the terminal (twice)
/// or the first line of standard input; or, with `--token`, a new token.
pub fn page_password(args: PagePasswordArgs) -> Result<std::process::ExitCode> {
    use std::io::IsTerminal;
    if args.token {
        println!("{}", new_token());
        eprintln!("put this line in the file page.lan.token_file names (mode 0640, root:cbt-agent); send it as `Authorization: Bearer TOKEN` or as the page password");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let interactive = std::io::stdin().is_terminal();
    let password = read_hidden(if interactive { "Password for the practice page: " } else { "" })?;
    if interactive && read_hidden("Again: ")? != password {
        bail!("the two passwords differ; nothing printed");
    }
    if password.chars().count() < 10 {
        bail!("use at least 10 characters: the page is reachable from the practice network");
    }
    println!("{}", hash_password(&password)?);
    if interactive {
        eprintln!("put this line in the configuration as [page.lan] password_hash = \"...\" and restart cbt-agent");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn guard(State(gate): State<Arc<Gate>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    if gate.allows(auth.as_deref()).await {
        if !gate.serves(req.uri().path()) {
            return (StatusCode::NOT_FOUND, "not served on this address (page.lan.api is off)\n").into_response();
        }
        return next.run(req).await;
    }
    if auth.is_some() {
        tracing::warn!(%peer, path = %req.uri().path(), "page: wrong password or token");
    }
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, REALM)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(
            "<!doctype html><html lang=\"en-GB\"><meta charset=\"utf-8\"><title>Password needed</title><p>This page needs the practice page password (or its token).</p></html>",
        ))
        .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response())
}

/// The LAN listener, bound and ready to serve.
pub struct Lan {
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    gate: Arc<Gate>,
    addr: SocketAddr,
}

fn tls_config(cfg: &LanConfig) -> Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .with_context(|| format!("cannot read the certificate {} (page.lan.cert)", cfg.cert.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("{} (page.lan.cert) is not a PEM certificate", cfg.cert.display()))?;
    if certs.is_empty() {
        bail!("{} (page.lan.cert) holds no certificate", cfg.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).with_context(|| format!("cannot read a PEM private key from {} (page.lan.key)", cfg.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("the key {} does not go with the certificate {}", cfg.key.display(), cfg.cert.display()))?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(c)
}

fn read_token(cfg: &LanConfig) -> Result<Option<String>> {
    let Some(path) = &cfg.token_file else { return Ok(None) };
    let t = std::fs::read_to_string(path).with_context(|| format!("cannot read the page token {} (page.lan.token_file)", path.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        bail!("the page token in {} is shorter than 16 characters; make one with `cbt-agent page-password --token`", path.display());
    }
    Ok(Some(t))
}

/// The certificate, key and token can be read and go together (what
/// `check-config` checks; binding is left to the service).
pub fn check_lan(cfg: &LanConfig) -> Result<()> {
    tls_config(cfg)?;
    read_token(cfg)?;
    Ok(())
}

/// Everything that can fail before serving: certificate, key, token,
/// binding.
pub fn prepare_lan(cfg: &LanConfig) -> Result<Lan> {
    let tls = tls_config(cfg)?;
    let token = read_token(cfg)?;
    let listener = std::net::TcpListener::bind(cfg.listen).with_context(|| format!("cannot listen on {} (page.lan.listen)", cfg.listen))?;
    listener.set_nonblocking(true)?;
    Ok(Lan {
        listener,
        tls: axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
        gate: Arc::new(Gate::new(cfg.password_hash.clone(), token, cfg.api)),
        addr: cfg.listen,
    })
}

/// The LAN listener of these settings, or `None` (none configured, or it
/// cannot start: logged, and shown on the loopback page; capture goes on).
pub fn bind(cfg: Option<&LanConfig>) -> Option<Lan> {
    let cfg = cfg?;
    match prepare_lan(cfg) {
        Ok(l) => {
            set_problem(None);
            Some(l)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("the practice page's LAN listener is not started: {msg}");
            set_problem(Some(msg));
            None
        }
    }
}

impl Lan {
    /// Serves `app` (the daemon's whole router) behind the gate.
    pub async fn serve(self, app: Router) {
        let app = app.layer(axum::middleware::from_fn_with_state(self.gate.clone(), guard));
        tracing::info!(listen = %self.addr, "practice page on the LAN (HTTPS, password or token)");
        let server = axum_server::from_tcp_rustls(self.listener, self.tls);
        if let Err(e) = server.serve(app.into_make_service_with_connect_info::<SocketAddr>()).await {
            set_problem(Some(e.to_string()));
            tracing::error!("the practice page's LAN listener stopped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
    }

    #[tokio::test]
    async fn password_and_token() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse") && !verify_password(&h, "wrong"));
        let g = Gate::new(Some(h), Some("a-token-of-enough-length".into()), false);
        assert!(!g.allows(None).await);
        assert!(!g.allows(Some(&basic("manager", "wrong"))).await);
        assert!(g.allows(Some(&basic("manager", "correct horse"))).await);
        assert!(g.allows(Some(&basic("", "correct horse"))).await, "remembered, and any user");
        assert!(g.allows(Some("Bearer a-token-of-enough-length")).await);
        assert!(g.allows(Some(&basic("x", "a-token-of-enough-length"))).await);
        assert!(!g.allows(Some("Bearer a-token-of-enough-lengtX")).await);
        assert!(!g.allows(Some("Basic !!!")).await);
        assert!(g.serves("/") && g.serves("/staffing") && !g.serves("/metrics") && !g.serves("/api/calls"));
        assert!(Gate::new(None, None, true).serves("/api/calls"));
        assert!(!Gate::new(None, None, true).allows(Some(&basic("a", ""))).await, "nothing configured lets nothing in");
    }
}
