//! The local HTTP API (axum on its own tokio runtime thread): `/status`
//! (JSON), `/metrics` (Prometheus), `/healthz`, the practice manager's page
//! (`crate::page`: `/`, `/staffing`, `/report`, `/api/staffing`, and its
//! optional HTTPS LAN listener), and `/api/calls`, `/api/days` for
//! `cbt-agent report`. It also turns SIGTERM/SIGINT and SIGHUP into
//! messages for the engine thread.

use super::{Input, Shared};
use crate::config::Listen;
use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

pub fn spawn(listen: Listen, shared: Arc<Shared>, tx: SyncSender<Input>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("http")
        .build()
        .context("cannot start the HTTP runtime")?;
    // bind now, so a port in use is reported at start-up
    let listener = rt.block_on(bind(&listen))?;
    // the practice page from the manager's desk (`[page.lan]`): its problems
    // are logged and shown on the page, capture goes on
    let lan = {
        let page = shared.page.read().unwrap_or_else(|e| e.into_inner());
        let _guard = rt.enter();
        crate::page::access::bind(page.lan.as_ref())
    };
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                signals(tx);
                if let Some(lan) = lan {
                    tokio::spawn(lan.serve(router(shared.clone())));
                }
                let app = router(shared);
                let r = match listener {
                    Bound::Tcp(l) => axum::serve(l, app).await,
                    Bound::Unix(l) => axum::serve(l, app).await,
                };
                if let Err(e) = r {
                    tracing::error!("status API stopped: {e}");
                }
            })
        })
        .context("cannot start the HTTP thread")?;
    Ok(())
}

enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

async fn bind(listen: &Listen) -> Result<Bound> {
    Ok(match listen {
        Listen::Tcp(a) => Bound::Tcp(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} for the status API (status.listen): is another cbt-agent running?"))?,
        ),
        Listen::Unix(p) => {
            let _ = std::fs::remove_file(p);
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            Bound::Unix(tokio::net::UnixListener::bind(p).with_context(|| format!("cannot listen on {} for the status API", p.display()))?)
        }
    })
}

fn signals(tx: SyncSender<Input>) {
    use tokio::signal::unix::{signal, SignalKind};
    let send = |tx: SyncSender<Input>, input: fn() -> Input| {
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(input());
        });
    };
    let t = tx.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping");
        send(t, || Input::Shutdown);
    });
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            send(tx.clone(), || Input::Reload);
        }
    });
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(crate::page::routes())
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/calls", get(calls))
        .route("/api/days", get(days))
        .route("/api/documents", get(documents))
        .route("/api/upload", get(upload))
        .with_state(shared)
}

fn current(s: &Shared) -> super::status::Status {
    s.status.read().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(current(&s)).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], super::status::prometheus(&current(&s))).into_response()
}

/// 200 while the engine thread loops and the store takes writes.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let beat = s.heartbeat.load(Ordering::Relaxed) as i64;
    let now = super::capture::now().micros() / 1_000_000;
    let st = current(&s);
    if now - beat > 10 {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("engine stalled: last loop {} s ago\n", now - beat)).into_response();
    }
    if !st.store.healthy {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {}\n", st.store.error.unwrap_or_default())).into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

#[derive(serde::Deserialize)]
struct Range {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

/// Stored calls whose local start date is within `from..=to`, in the one
/// JSON shape of a call (RFC 3339 times), with their store number. Reads
/// only the days asked for.
async fn calls(State(s): State<Arc<Shared>>, Query(r): Query<Range>) -> Response {
    with_store(&s, move |store, site, _| {
        let (from, to) = crate::store::local_span(&site, r.from, r.to);
        Ok(store.calls_between(from, to)?.iter().map(|c| crate::output::CallJson::of(c, true)).collect::<Vec<_>>())
    })
    .await
}

/// Stored day figures (closed days of `from..=to`, both optional: a
/// range of the store), today's figures so far (`today`, counted from the
/// calls stored today), and the time before which call records were pruned.
async fn days(State(s): State<Arc<Shared>>, Query(r): Query<Range>) -> Response {
    with_store(&s, move |store, site, _| {
        let now = super::capture::now();
        let today_date = cbt_proto::metrics::Aggregator::new(&site).local_date(now);
        let today: Vec<_> = store.figures_on(&site, today_date)?.days().iter().map(|(k, d)| (k.clone(), d.clone())).collect();
        Ok(serde_json::json!({
            "days": store.days_between(r.from, r.to)?,
            "closed_through": store.closed_through()?,
            "today": today,
            "pruned_before": store.pruned_before()?,
            "problems": store.problems(),
        }))
    })
    .await
}

/// Runs a blocking read of the store, answering 503 without one.
async fn with_store<T: serde::Serialize + Send + 'static>(
    s: &Shared,
    f: impl FnOnce(Arc<crate::store::Store>, cbt_proto::site::Site, String) -> anyhow::Result<T> + Send + 'static,
) -> Response {
    let store = s.store.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(store) = store else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the store is not available\n").into_response();
    };
    let site = s.site.read().unwrap_or_else(|e| e.into_inner()).clone();
    let agent = s.agent_id.read().unwrap_or_else(|e| e.into_inner()).clone();
    match tokio::task::spawn_blocking(move || f(store, site, agent)).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The day documents of `from..=to` as they stand now (for `cbt-agent export`).
async fn documents(State(s): State<Arc<Shared>>, Query(r): Query<Range>) -> Response {
    let (Some(from), Some(to)) = (r.from, r.to) else {
        return (StatusCode::BAD_REQUEST, "give from=YYYY-MM-DD and to=YYYY-MM-DD\n").into_response();
    };
    with_store(&s, move |store, site, agent| crate::upload::documents_between(&store, &site, &agent, from, to, super::capture::now())).await
}

/// The outbox, and today's documents as they would be made now (for `cbt-agent upload --dry-run`).
async fn upload(State(s): State<Arc<Shared>>) -> Response {
    with_store(&s, move |store, site, agent| {
        let now = super::capture::now();
        let today = cbt_proto::metrics::Aggregator::new(&site).local_date(now);
        Ok(serde_json::json!({
            "outbox": store.outbox_items()?,
            "next": crate::upload::documents_between(&store, &site, &agent, today, today, now)?,
        }))
    })
    .await
}
