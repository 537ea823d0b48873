//! The HTTP API: agents' uploads (`POST /v1/days`), their token check
//! (`GET /v1/ping`), and the supplier's status endpoints (`/healthz`,
//! `/metrics`, `/`, `/api/practices`).

use crate::db::DbError;
use crate::store::{self, AuditEntry, Outcome};
use crate::tokens::{self, Auth, Lookup};
use crate::{status, Metrics};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cbt_proto::upload::{DayDocument, DocError};
use chrono::{NaiveDate, Utc};
use deadpool_postgres::Pool;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Seconds an agent is asked to wait when the database is unavailable.
pub const RETRY_AFTER_S: u32 = 30;

pub struct AppState {
    pub pool: Pool,
    pub body_limit: usize,
    pub metrics: Metrics,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/days", post(post_day))
        .route("/v1/ping", get(ping))
        .route("/healthz", get(healthz))
        .route("/metrics", get(status::metrics))
        .route("/api/practices", get(status::api_practices))
        .route("/", get(status::page))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "no such endpoint: agents POST /v1/days and GET /v1/ping"}))).into_response()
}

/// Replaces runs of seven or more digits (spaces, `+` and brackets between
/// them allowed) in text that goes to the log or the audit table: a reason
/// quoting a malformed document must not carry a phone number.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let is_part = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '+' | '(' | ')');
        if chars[i].is_ascii_digit() || chars[i] == '+' || chars[i] == '(' {
            let mut j = i;
            while j < chars.len() && is_part(chars[j]) {
                j += 1;
            }
            let digits = chars[i..j].iter().filter(|c| c.is_ascii_digit()).count();
            if digits >= 7 {
                out.push_str("[digits removed]");
                // keep a trailing space
                if chars[j - 1] == ' ' {
                    out.push(' ');
                }
            } else {
                out.extend(&chars[i..j]);
            }
            i = j.max(i + 1);
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A refusal: its status, what the agent reads, and the audit result name.
struct Refusal {
    status: StatusCode,
    result: &'static str,
    message: String,
    retry: bool,
}

impl Refusal {
    fn new(status: StatusCode, result: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, result, message: message.into(), retry: false }
    }

    fn unavailable(e: &DbError) -> Refusal {
        match e {
            DbError::Unavailable(_) => Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                result: "unavailable",
                message: format!("the collector's database is unavailable; nothing was stored; try again in {RETRY_AFTER_S} s"),
                retry: true,
            },
            DbError::Other(_) => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "error", "the collector failed to store the document (its log says why); nothing was stored"),
        }
    }

    fn response(&self, extra: Option<serde_json::Value>) -> Response {
        let mut body = json!({"error": self.message});
        if let (Some(serde_json::Value::Object(m)), Some(b)) = (extra, body.as_object_mut()) {
            b.extend(m);
        }
        let mut r = (self.status, Json(body)).into_response();
        if self.retry {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cbt-collector\""));
        }
        r
    }
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Err("no Authorization header: send `Authorization: Bearer <token>` with the token from `cbt-collector token add`");
    };
    let v = v.to_str().map_err(|_| "the Authorization header is not text")?;
    let (scheme, token) = v.split_once(' ').ok_or("the Authorization header is not `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("the Authorization header is not `Bearer <token>`");
    }
    Ok(token.trim())
}

/// Authenticates; `Err` is the refusal (401 or 503) with what is known.
async fn authenticate(pool: &Pool, headers: &HeaderMap, audit: &mut AuditEntry) -> Result<Auth, Refusal> {
    let token = bearer(headers).map_err(|m| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", m))?;
    if token.len() > 200 {
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token"));
    }
    match tokens::lookup(pool, token).await {
        Ok(Lookup::Valid(a)) => {
            audit.token_id = Some(a.token_id);
            audit.agent = Some(a.agent.clone());
            Ok(a)
        }
        Ok(Lookup::Revoked { token_id, agent, at }) => {
            audit.token_id = Some(token_id);
            audit.agent = Some(agent.clone());
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("this token (id {token_id}, agent {agent}) was revoked at {at}; ask your IT supplier for a new one"),
            ))
        }
        Ok(Lookup::Unknown) => Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token: check upload.token in the agent's configuration")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a token");
            Err(Refusal::unavailable(&e))
        }
    }
}

/// Bodies a little over the limit are read to their end (and thrown away)
/// so that the client, still sending, reads the 413 instead of a reset
/// connection; beyond this the connection is closed at once.
fn drain_cap(limit: usize) -> usize {
    limit.saturating_mul(16).min(64 << 20)
}

/// Time allowed to receive a body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

enum BodyError {
    TooLarge,
    Failed(String),
}

async fn read_body(mut body: Body, limit: usize, cap: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if total > limit => return Err(BodyError::TooLarge),
            Err(_) => return Err(BodyError::Failed(format!("not received within {} s", BODY_TIMEOUT.as_secs()))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Failed(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    total = total.saturating_add(data.len());
                    if total <= limit {
                        buf.extend_from_slice(&data);
                    } else if total > cap {
                        return Err(BodyError::TooLarge);
                    }
                }
            }
        }
    }
    if total > limit {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf)
    }
}

/// Practice, date and revision as an Idempotency-Key names them (for the
/// audit of documents that could not be read).
fn key_parts(key: &str) -> (Option<String>, Option<NaiveDate>, Option<i64>) {
    let mut it = key.rsplitn(4, ':');
    let rev = it.next().and_then(|r| r.parse().ok());
    let date = it.next().and_then(|d| d.parse().ok());
    let practice = it.next().map(|p| p.chars().take(16).collect());
    (practice, date, rev)
}

async fn finish(st: &AppState, audit: AuditEntry, refusal: Refusal, extra: Option<serde_json::Value>) -> Response {
    st.metrics.count(refusal.result);
    let mut audit = audit;
    audit.status = refusal.status.as_u16() as i16;
    audit.result = refusal.result.to_string();
    audit.reason = Some(redact(&refusal.message));
    tracing::info!(
        status = audit.status,
        result = refusal.result,
        remote = ?audit.remote,
        agent = audit.agent.as_deref().unwrap_or("-"),
        practice = audit.practice.as_deref().unwrap_or("-"),
        reason = audit.reason.as_deref().unwrap_or(""),
        "request refused"
    );
    if let Err(e) = store::audit(&st.pool, &audit).await {
        tracing::warn!(error = %e, result = refusal.result, "cannot write the audit row of a refused request");
    }
    refusal.response(extra)
}

async fn post_day(State(st): State<Arc<AppState>>, ConnectInfo(remote): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Body) -> Response {
    let key = headers.get("idempotency-key").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut audit = AuditEntry {
        remote: Some(remote.ip()),
        idempotency_key: key.clone(),
        ..AuditEntry::default()
    };
    if let Some(k) = &key {
        let (p, d, r) = key_parts(k);
        audit.practice = p;
        audit.day = d;
        audit.revision = r;
    }
    let auth = match authenticate(&st.pool, &headers, &mut audit).await {
        Ok(a) => a,
        Err(r) => return finish(&st, audit, r, None).await,
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        let r = Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the document with `Content-Type: application/json`");
        return finish(&st, audit, r, None).await;
    }
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than this collector accepts ({} bytes, `body_limit`)", st.body_limit),
        )
    };
    let cap = drain_cap(st.body_limit);
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if len > cap as u64 {
            return finish(&st, audit, too_large(), None).await;
        }
    }
    let bytes = match read_body(body, st.body_limit, cap).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return finish(&st, audit, too_large(), None).await,
        Err(BodyError::Failed(why)) => {
            return finish(&st, audit, Refusal::new(StatusCode::BAD_REQUEST, "bad_request", format!("the body could not be read to its end: {why}")), None).await;
        }
    };
    let doc = match DayDocument::parse(&bytes) {
        Ok(d) => d,
        Err(e) => {
            let message = match &e {
                DocError::Version { .. } | DocError::Schema(_) => e.to_string(),
                _ => format!("the document is refused: {e}"),
            };
            return finish(&st, audit, Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message), None).await;
        }
    };
    audit.practice = Some(doc.practice.clone());
    audit.day = Some(doc.date);
    audit.revision = i64::try_from(doc.revision).ok();
    let expected_key = format!("{}:{}:{}:{}", doc.agent.id, doc.practice, doc.date.format("%Y-%m-%d"), doc.revision);
    match &key {
        None => {
            let r = Refusal::new(StatusCode::BAD_REQUEST, "bad_request", format!("no Idempotency-Key header: send `Idempotency-Key: {expected_key}`"));
            return finish(&st, audit, r, None).await;
        }
        Some(k) if *k != expected_key => {
            let r = Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the Idempotency-Key `{k}` does not match the document, which is `{expected_key}` (agent.id:practice:date:revision)"),
            );
            return finish(&st, audit, r, None).await;
        }
        Some(_) => {}
    }
    if doc.agent.id != auth.agent {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token belongs to agent `{}`, the document comes from agent `{}`: set upload.agent_id = \"{}\" in the agent's configuration, or ask for a token for `{}`",
                auth.agent, doc.agent.id, auth.agent, doc.agent.id
            ),
        );
        return finish(&st, audit, r, None).await;
    }
    if !auth.may_send(&doc.practice) {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token may send practices {} (and Unassigned), not {}: ask your IT supplier to add it (`cbt-collector token add --agent {} --practice {} ...`)",
                if auth.practices.is_empty() { "none".to_string() } else { auth.practices.join(", ") },
                doc.practice,
                auth.agent,
                doc.practice
            ),
        );
        return finish(&st, audit, r, None).await;
    }
    let tz: chrono_tz::Tz = doc.timezone.parse().unwrap_or(chrono_tz::Europe::London);
    let today = Utc::now().with_timezone(&tz).date_naive();
    if doc.date > today + chrono::Days::new(1) {
        let r = Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the date {} is in the future (today is {today} in {}): check the agent's clock", doc.date, doc.timezone),
        );
        return finish(&st, audit, r, None).await;
    }
    // the document as sent: it is valid UTF-8 (it parsed as JSON)
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(_) => return finish(&st, audit, Refusal::new(StatusCode::BAD_REQUEST, "bad_request", "the body is not UTF-8"), None).await,
    };
    match store::store(&st.pool, &auth, &doc, text, audit.clone()).await {
        Ok(s) if s.outcome == Outcome::Conflict => {
            st.metrics.count("conflict");
            tracing::info!(agent = %auth.agent, practice = %doc.practice, date = %doc.date, revision = doc.revision, "conflict: the same revision with other content");
            Refusal::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "revision {} of {} {} is already stored with other figures: a changed document needs a higher revision",
                    doc.revision, doc.practice, doc.date
                ),
            )
            .response(Some(json!({"stored_revision": s.stored_revision})))
        }
        Ok(s) => {
            st.metrics.count(s.outcome.as_str());
            tracing::debug!(agent = %auth.agent, practice = %doc.practice, date = %doc.date, revision = doc.revision, result = s.outcome.as_str(), "day document");
            (
                StatusCode::OK,
                Json(json!({
                    "result": s.outcome.as_str(),
                    "practice": doc.practice,
                    "date": doc.date.format("%Y-%m-%d").to_string(),
                    "revision": doc.revision,
                    "stored_revision": s.stored_revision,
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, agent = %auth.agent, practice = %doc.practice, "cannot store a day document");
            finish(&st, audit, Refusal::unavailable(&e), None).await
        }
    }
}

async fn ping(State(st): State<Arc<AppState>>, ConnectInfo(remote): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    let mut audit = AuditEntry {
        remote: Some(remote.ip()),
        ..AuditEntry::default()
    };
    match authenticate(&st.pool, &headers, &mut audit).await {
        Ok(a) => {
            st.metrics.count("ping");
            (StatusCode::OK, Json(json!({"agent": a.agent, "practices": a.practices}))).into_response()
        }
        Err(r) => finish(&st, audit, r, None).await,
    }
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let check = async {
        let c = st.pool.get().await.map_err(DbError::from)?;
        c.query_one("SELECT 1", &[]).await.map_err(DbError::from)?;
        Ok::<(), DbError>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), check).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => {
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
            r
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the database did not answer within 5 s\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_redacted_dates_are_not() {
        assert_eq!(redact("invalid type: string \"07700 900123\", expected u64"), "invalid type: string \"[digits removed]\", expected u64");
        assert_eq!(redact("+44 7700 900123 called"), "[digits removed] called");
        assert_eq!(redact("date 2026-11-02 revision 3"), "date 2026-11-02 revision 3");
        assert_eq!(redact("at line 1 column 1234"), "at line 1 column 1234");
    }

    #[test]
    fn idempotency_keys_split_from_the_right() {
        assert_eq!(key_parts("pbx:01:B82005:2026-11-02:3"), (Some("B82005".into()), NaiveDate::from_ymd_opt(2026, 11, 2), Some(3)));
        assert_eq!(key_parts("junk"), (None, None, None));
    }

    #[test]
    fn bearer_tokens_are_read() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer cbt_abc"));
        assert_eq!(bearer(&h), Ok("cbt_abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic Zm9v"));
        assert!(bearer(&h).is_err());
    }
}
