//! What the supplier sees: the practices page (`/`), the same as JSON
//! (`/api/practices`) and Prometheus metrics (`/metrics`). One query
//! ([`practices`]) feeds all three.

use crate::db::DbError;
use crate::http::{AppState, RETRY_AFTER_S};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Datelike, NaiveDate, Utc};
use deadpool_postgres::Pool;
use maud::{html, Markup, DOCTYPE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Dates are those of NHS England.
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Europe::London;
/// How far back the page looks for uploads.
pub const LOOKBACK_DAYS: u64 = 45;
/// An agent sends today's figures every few minutes: silence longer than
/// this is worth a look, and a day is bad.
pub const STALE_WARN_S: f64 = 2.0 * 3600.0;
pub const STALE_BAD_S: f64 = 24.0 * 3600.0;
/// A parse-error share above this is flagged.
pub const PARSE_ERROR_FLAG: f64 = 0.01;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Bad,
}

/// One practice's state this month.
#[derive(Clone, Debug, Serialize)]
pub struct PracticeStatus {
    pub practice: String,
    pub level: Level,
    pub agents: Vec<String>,
    /// RFC 3339, UTC; `None`: nothing in the last 45 days.
    pub last_upload: Option<String>,
    pub last_upload_age_s: Option<f64>,
    /// Days of this month whose every document is final.
    pub days_complete: i64,
    /// Days of this month with any document.
    pub days_with_data: i64,
    /// Days of this month before today without any document.
    pub days_missing: i64,
    pub on_participation_list: bool,
    pub has_token: bool,
    pub flags: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub month: String,
    pub today: NaiveDate,
    pub participation_list: bool,
    pub documents_this_month: i64,
    pub duplicates_this_month: i64,
    pub practices: Vec<PracticeStatus>,
}

fn month_start(d: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("a month's first day")
}

#[derive(Default)]
struct Acc {
    agents: Vec<String>,
    last_upload: Option<chrono::DateTime<Utc>>,
    days_complete: i64,
    days_with_data: i64,
    days_before_today: i64,
    not_final_old: i64,
    not_reconciled: i64,
    partial_calls: i64,
    gap_minutes: f64,
    hours_without_capture: i64,
    partial_view_hours: i64,
    parse_error_share: f64,
    packets_dropped: i64,
    b2bua_ambiguous: i64,
    listed: bool,
    token: bool,
}

/// Every practice with a token, an upload in the last 45 days, or a place
/// on this month's participation list; worst first.
pub async fn practices(pool: &Pool) -> Result<Overview, DbError> {
    let today = Utc::now().with_timezone(&TIMEZONE).date_naive();
    let first = month_start(today);
    let since = today - chrono::Days::new(LOOKBACK_DAYS);
    let client = pool.get().await?;
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let rows = client
        .query(
            "SELECT practice, array_agg(DISTINCT agent ORDER BY agent), max(received_at) FROM documents WHERE day >= $1 GROUP BY practice",
            &[&since],
        )
        .await?;
    for r in rows {
        let a = acc.entry(r.get(0)).or_default();
        a.agents = r.get(1);
        a.last_upload = r.get(2);
    }
    let rows = client
        .query(
            "WITH per_day AS (
                SELECT practice, day, bool_and(is_final) AS complete, bool_or(reconcile_error IS NOT NULL) AS bad,
                       sum(partial_calls) AS partial, sum(gap_minutes) AS gaps, max(hours_without_capture) AS dark,
                       max(partial_view_hours) AS pv, max(parse_error_share) AS pes, sum(packets_dropped) AS drops,
                       sum(b2bua_ambiguous) AS amb
                FROM documents WHERE day >= $1 GROUP BY practice, day)
             SELECT practice,
                    count(*) FILTER (WHERE complete),
                    count(*),
                    count(*) FILTER (WHERE day < $2),
                    count(*) FILTER (WHERE NOT complete AND day < $2 - 1),
                    count(*) FILTER (WHERE bad),
                    sum(partial)::bigint, sum(gaps), sum(dark)::bigint, sum(pv)::bigint, max(pes), sum(drops)::bigint, sum(amb)::bigint
             FROM per_day GROUP BY practice",
            &[&first, &today],
        )
        .await?;
    for r in rows {
        let a = acc.entry(r.get(0)).or_default();
        a.days_complete = r.get(1);
        a.days_with_data = r.get(2);
        a.days_before_today = r.get(3);
        a.not_final_old = r.get(4);
        a.not_reconciled = r.get(5);
        a.partial_calls = r.get::<_, Option<i64>>(6).unwrap_or(0);
        a.gap_minutes = r.get::<_, Option<f64>>(7).unwrap_or(0.0);
        a.hours_without_capture = r.get::<_, Option<i64>>(8).unwrap_or(0);
        a.partial_view_hours = r.get::<_, Option<i64>>(9).unwrap_or(0);
        a.parse_error_share = r.get::<_, Option<f64>>(10).unwrap_or(0.0);
        a.packets_dropped = r.get::<_, Option<i64>>(11).unwrap_or(0);
        a.b2bua_ambiguous = r.get::<_, Option<i64>>(12).unwrap_or(0);
    }
    for r in client
        .query("SELECT DISTINCT p.practice FROM token_practices p JOIN tokens t ON t.id = p.token_id WHERE t.revoked_at IS NULL", &[])
        .await?
    {
        acc.entry(r.get(0)).or_default().token = true;
    }
    let listed = client.query("SELECT practice FROM participation WHERE month = $1", &[&first]).await?;
    let participation_list = !listed.is_empty();
    for r in listed {
        acc.entry(r.get(0)).or_default().listed = true;
    }
    let totals = client
        .query_one("SELECT count(*), COALESCE(sum(duplicates), 0)::bigint FROM documents WHERE day >= $1", &[&first])
        .await?;
    let now = Utc::now();
    let days_so_far = (today - first).num_days();
    let mut out: Vec<PracticeStatus> = acc
        .into_iter()
        .map(|(practice, a)| {
            let age = a.last_upload.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
            let mut flags = Vec::new();
            let mut level = Level::Ok;
            let mut raise = |l: Level, flag: String, flags: &mut Vec<String>| {
                level = level.max(l);
                flags.push(flag);
            };
            let unassigned = practice == cbt_proto::site::UNASSIGNED;
            match age {
                None if a.listed || a.token => raise(Level::Bad, format!("no upload in the last {LOOKBACK_DAYS} days"), &mut flags),
                None => {}
                Some(s) if s > STALE_BAD_S => raise(Level::Bad, format!("last upload {} ago", human_age(s)), &mut flags),
                Some(s) if s > STALE_WARN_S => raise(Level::Warn, format!("last upload {} ago", human_age(s)), &mut flags),
                Some(_) => {}
            }
            // a practice expected to report (it has a token, is listed, or
            // has reported) misses every day of the month so far without data
            let missing = if a.last_upload.is_some() || a.listed || a.token { (days_so_far - a.days_before_today).max(0) } else { 0 };
            if missing > 0 && !unassigned {
                raise(Level::Bad, format!("{missing} day(s) of this month missing"), &mut flags);
            }
            if a.not_reconciled > 0 {
                raise(Level::Bad, format!("{} day(s) do not reconcile (CBT001 ≠ CBT002+003+004+005 or CBT003 ≠ CBT007)", a.not_reconciled), &mut flags);
            }
            if a.not_final_old > 0 {
                raise(Level::Warn, format!("{} past day(s) not final", a.not_final_old), &mut flags);
            }
            if !a.listed && participation_list && !unassigned && a.last_upload.is_some() {
                raise(Level::Warn, "not on this month's participation list (left out of the submission)".into(), &mut flags);
            }
            if a.listed && !a.token && a.last_upload.is_none() {
                raise(Level::Bad, "on the participation list but no agent has a token for it".into(), &mut flags);
            }
            if a.hours_without_capture > 0 {
                raise(Level::Warn, format!("{} hour(s) without capture", a.hours_without_capture), &mut flags);
            }
            if a.gap_minutes > 0.0 {
                raise(Level::Warn, format!("{:.0} gap minute(s)", a.gap_minutes), &mut flags);
            }
            if a.partial_calls > 0 {
                raise(Level::Warn, format!("{} partial call(s)", a.partial_calls), &mut flags);
            }
            if a.partial_view_hours > 0 {
                raise(Level::Warn, format!("{} hour(s) seeing only the handsets", a.partial_view_hours), &mut flags);
            }
            if a.parse_error_share > PARSE_ERROR_FLAG {
                raise(Level::Warn, format!("up to {:.1}% of SIP messages unreadable", a.parse_error_share * 100.0), &mut flags);
            }
            if a.packets_dropped > 0 {
                raise(Level::Warn, format!("{} packet(s) dropped", a.packets_dropped), &mut flags);
            }
            if a.b2bua_ambiguous > 0 {
                raise(Level::Warn, format!("{} ambiguous B2BUA leg(s)", a.b2bua_ambiguous), &mut flags);
            }
            PracticeStatus {
                practice,
                level,
                agents: a.agents,
                last_upload: a.last_upload.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                last_upload_age_s: age.map(|s| (s * 10.0).round() / 10.0),
                days_complete: a.days_complete,
                days_with_data: a.days_with_data,
                days_missing: missing,
                on_participation_list: a.listed,
                has_token: a.token,
                flags,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            // never heard from is worse than late
            .then(a.last_upload.is_some().cmp(&b.last_upload.is_some()))
            .then(b.days_missing.cmp(&a.days_missing))
            .then(b.flags.len().cmp(&a.flags.len()))
            .then(b.last_upload_age_s.unwrap_or(f64::INFINITY).total_cmp(&a.last_upload_age_s.unwrap_or(f64::INFINITY)))
            .then(a.practice.cmp(&b.practice))
    });
    Ok(Overview {
        month: first.format("%Y-%m").to_string(),
        today,
        participation_list,
        documents_this_month: totals.get(0),
        duplicates_this_month: totals.get(1),
        practices: out,
    })
}

fn human_age(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn unavailable(e: DbError) -> Response {
    tracing::warn!(error = %e, "status query failed");
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    r
}

pub async fn api_practices(State(st): State<Arc<AppState>>) -> Response {
    match practices(&st.pool).await {
        Ok(o) => Json(o).into_response(),
        Err(e) => unavailable(e),
    }
}

pub async fn page(State(st): State<Arc<AppState>>) -> Response {
    match practices(&st.pool).await {
        Ok(o) => render(&o).into_response(),
        Err(e) => unavailable(e),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#f3f3f3}.bad{background:#fde2e1}.warn{background:#fff4d6}.ok{background:#fff}
td.n{text-align:right;font-variant-numeric:tabular-nums}ul{margin:0;padding-left:1.1em}small{color:#555}";

fn render(o: &Overview) -> Markup {
    let bad = o.practices.iter().filter(|p| p.level == Level::Bad).count();
    let warn = o.practices.iter().filter(|p| p.level == Level::Warn).count();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "cbt-collector: practices" }
                style { (STYLE) }
            }
            body {
                h1 { "Practices, " (o.month) }
                p {
                    (o.practices.len()) " practices: " strong { (bad) " need action" } ", " (warn) " to check. "
                    (o.documents_this_month) " day documents this month, " (o.duplicates_this_month) " duplicate uploads absorbed. "
                    @if !o.participation_list {
                        strong { "No participation list for " (o.month) " yet: " }
                        "import NHS England's list with " code { "cbt-collector participation import" } "."
                    }
                }
                p { small { "Today is " (o.today) " (Europe/London). Worst first. A day is complete when every agent's document for it is final. The same data as JSON: " a href="/api/practices" { "/api/practices" } "." } }
                table {
                    thead { tr { th { "Practice" } th { "Agent(s)" } th { "Last upload (UTC)" } th { "Days complete" } th { "Days with data" } th { "Days missing" } th { "Listed" } th { "Data quality" } } }
                    tbody {
                        @for p in &o.practices {
                            tr class=(match p.level { Level::Bad => "bad", Level::Warn => "warn", Level::Ok => "ok" }) {
                                td { strong { (p.practice) } }
                                td { @if p.agents.is_empty() { "-" } @else { (p.agents.join(", ")) } }
                                td { @match (&p.last_upload, p.last_upload_age_s) {
                                    (Some(t), Some(a)) => { (t) br; small { (human_age(a)) " ago" } }
                                    _ => { "never" }
                                } }
                                td.n { (p.days_complete) }
                                td.n { (p.days_with_data) }
                                td.n { (p.days_missing) }
                                td { @if p.on_participation_list { "yes" } @else { "no" } }
                                td { @if p.flags.is_empty() { "-" } @else { ul { @for f in &p.flags { li { (f) } } } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Prometheus text format.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP cbt_collector_requests_total Requests to POST /v1/days and GET /v1/ping by result (this collector since it started).");
    let _ = writeln!(out, "# TYPE cbt_collector_requests_total counter");
    for (result, n) in st.metrics.snapshot() {
        let _ = writeln!(out, "cbt_collector_requests_total{{result=\"{result}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP cbt_collector_documents_stored_total Day documents stored (new or a higher revision) by this collector since it started.");
    let _ = writeln!(out, "# TYPE cbt_collector_documents_stored_total counter");
    let _ = writeln!(out, "cbt_collector_documents_stored_total {}", st.metrics.get("stored"));
    let _ = writeln!(out, "# HELP cbt_collector_duplicates_absorbed_total Uploads of a revision already stored, answered `duplicate` by this collector since it started.");
    let _ = writeln!(out, "# TYPE cbt_collector_duplicates_absorbed_total counter");
    let _ = writeln!(out, "cbt_collector_duplicates_absorbed_total {}", st.metrics.get("duplicate"));
    let o = match practices(&st.pool).await {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(out, "# HELP cbt_collector_database_up 1 if the database answered this scrape.");
            let _ = writeln!(out, "# TYPE cbt_collector_database_up gauge");
            let _ = writeln!(out, "cbt_collector_database_up 0");
            tracing::warn!(error = %e, "metrics: database query failed");
            return text(out);
        }
    };
    let _ = writeln!(out, "# HELP cbt_collector_database_up 1 if the database answered this scrape.");
    let _ = writeln!(out, "# TYPE cbt_collector_database_up gauge");
    let _ = writeln!(out, "cbt_collector_database_up 1");
    let _ = writeln!(out, "# HELP cbt_collector_documents_month Day documents stored for this month (all collectors).");
    let _ = writeln!(out, "# TYPE cbt_collector_documents_month gauge");
    let _ = writeln!(out, "cbt_collector_documents_month {}", o.documents_this_month);
    let _ = writeln!(out, "# HELP cbt_collector_duplicates_month Duplicate uploads absorbed for this month's documents (all collectors).");
    let _ = writeln!(out, "# TYPE cbt_collector_duplicates_month gauge");
    let _ = writeln!(out, "cbt_collector_duplicates_month {}", o.duplicates_this_month);
    let _ = writeln!(out, "# HELP cbt_collector_practice_last_upload_age_seconds Seconds since the practice's last upload (practices with one in the last 45 days).");
    let _ = writeln!(out, "# TYPE cbt_collector_practice_last_upload_age_seconds gauge");
    for p in &o.practices {
        if let Some(a) = p.last_upload_age_s {
            let _ = writeln!(out, "cbt_collector_practice_last_upload_age_seconds{{practice=\"{}\"}} {a}", p.practice);
        }
    }
    let _ = writeln!(out, "# HELP cbt_collector_practice_days_complete Days of this month whose documents are all final.");
    let _ = writeln!(out, "# TYPE cbt_collector_practice_days_complete gauge");
    for p in &o.practices {
        let _ = writeln!(out, "cbt_collector_practice_days_complete{{practice=\"{}\"}} {}", p.practice, p.days_complete);
    }
    let _ = writeln!(out, "# HELP cbt_collector_practice_days_missing Days of this month before today without any document.");
    let _ = writeln!(out, "# TYPE cbt_collector_practice_days_missing gauge");
    for p in &o.practices {
        let _ = writeln!(out, "cbt_collector_practice_days_missing{{practice=\"{}\"}} {}", p.practice, p.days_missing);
    }
    let _ = writeln!(out, "# HELP cbt_collector_practice_flags Data-quality flags raised for the practice this month.");
    let _ = writeln!(out, "# TYPE cbt_collector_practice_flags gauge");
    for p in &o.practices {
        let _ = writeln!(out, "cbt_collector_practice_flags{{practice=\"{}\"}} {}", p.practice, p.flags.len());
    }
    text(out)
}

fn text(out: String) -> Response {
    let mut r = out.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
