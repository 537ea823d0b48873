//! `cbt-collector serve`: migrate, then serve HTTPS (or plain HTTP behind a
//! TLS-terminating load balancer) until SIGTERM or SIGINT. SIGHUP reloads
//! the certificate and key from their files.

use crate::config::Config;
use crate::http::{router, AppState};
use crate::Metrics;
use anyhow::{Context, Result};
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

async fn tls_config(cfg: &crate::config::Tls) -> Result<RustlsConfig> {
    RustlsConfig::from_pem_file(&cfg.cert, &cfg.key).await.with_context(|| {
        format!(
            "cannot load the TLS certificate {} and key {} (PEM: the certificate chain, then an unencrypted PKCS#8, PKCS#1 or SEC1 key)",
            cfg.cert.display(),
            cfg.key.display()
        )
    })
}

pub async fn run(cfg: Config) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pool = crate::db::open(&cfg).await?;
    let state = Arc::new(AppState {
        pool,
        body_limit: cfg.body_limit,
        metrics: Metrics::default(),
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let handle = Handle::new();
    tokio::spawn(signals(handle.clone(), cfg.clone()));
    let tls = match &cfg.tls {
        Some(t) => Some(tls_config(t).await?),
        None => {
            tracing::warn!(
                listen = %cfg.listen,
                "no tls_cert and tls_key: serving plain HTTP; TLS must then be terminated by a load balancer or proxy in front of this collector, never expose this port to agents directly"
            );
            None
        }
    };
    {
        let handle = handle.clone();
        let tls_on = tls.is_some();
        tokio::spawn(async move {
            if let Some(addr) = handle.listening().await {
                tracing::info!(%addr, tls = tls_on, version = env!("CARGO_PKG_VERSION"), "cbt-collector listening");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        });
    }
    let served = match tls.clone() {
        Some(t) => {
            let reload = t.clone();
            if let Some(tcfg) = cfg.tls.clone() {
                tokio::spawn(reload_on_hup(reload, tcfg));
            }
            axum_server::bind_rustls(cfg.listen, t).handle(handle).serve(app).await
        }
        None => axum_server::bind(cfg.listen).handle(handle).serve(app).await,
    };
    served.with_context(|| format!("cannot serve on {} (`listen` in {}): is another process using the port?", cfg.listen, cfg.path.display()))?;
    tracing::info!("cbt-collector stopped");
    Ok(())
}

async fn signals(handle: Handle, _cfg: Config) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping: finishing requests in progress (10 s at most)");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}

async fn reload_on_hup(tls: RustlsConfig, cfg: crate::config::Tls) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload_from_pem_file(&cfg.cert, &cfg.key).await {
            Ok(()) => tracing::info!(cert = %cfg.cert.display(), "TLS certificate reloaded"),
            Err(e) => tracing::error!(error = %e, cert = %cfg.cert.display(), "cannot reload the TLS certificate; the previous one stays in use"),
        }
    }
}
