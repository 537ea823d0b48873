//! The practice manager's page: how the practice did (today live,
//! yesterday, the last 7 days, this month, last month), how it compares
//! with England, and how many people the phones need. Served by the daemon
//! on its loopback listener (and, when configured, on an HTTPS LAN
//! listener behind a password or token: [`access`]).
//!
//! Routes: `/` (a period), `/staffing`, `/report` (the printable monthly
//! page), `/api/staffing` (JSON). Everything is read from the store when
//! asked for, through the same [`CallBook`] and aggregator as `report`;
//! pages are maud templates with SVG charts, no script.

pub mod access;
mod charts;
mod render;

use crate::book::CallBook;
use crate::config::{PageConfig, DEFAULT_NATIONAL};
use crate::daemon::status::Status;
use crate::daemon::Shared;
use crate::store::Store;
use anyhow::Result;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cbt_proto::call::CallRecord;
use cbt_proto::metrics::Aggregator;
use cbt_proto::national::National;
use cbt_proto::site::Site;
use cbt_proto::staffing::{Staffing, StaffingParams};
use cbt_proto::Timestamp;
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// The periods the page offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Today,
    Yesterday,
    Week,
    Month,
    LastMonth,
}

impl Period {
    pub const ALL: [Period; 5] = [Period::Today, Period::Yesterday, Period::Week, Period::Month, Period::LastMonth];

    pub fn slug(self) -> &'static str {
        match self {
            Period::Today => "today",
            Period::Yesterday => "yesterday",
            Period::Week => "week",
            Period::Month => "month",
            Period::LastMonth => "last-month",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Today => "Today",
            Period::Yesterday => "Yesterday",
            Period::Week => "Last 7 days",
            Period::Month => "This month",
            Period::LastMonth => "Last month",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.slug() == s)
    }

    /// Its dates, when `today` is today.
    pub fn span(self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        let first_of_month = today.with_day(1).unwrap_or(today);
        match self {
            Period::Today => (today, today),
            Period::Yesterday => (today - Duration::days(1), today - Duration::days(1)),
            Period::Week => (today - Duration::days(6), today),
            Period::Month => (first_of_month, today),
            Period::LastMonth => {
                let last = first_of_month - Duration::days(1);
                (last.with_day(1).unwrap_or(last), last)
            }
        }
    }
}

/// The first and last local date of a month `YYYY-MM`.
pub fn month_span(month: &str) -> Option<(NaiveDate, NaiveDate)> {
    crate::commands::month_span(month).ok()
}

/// UTC instants of the start of `from` and the end of `to`, local dates.
pub fn local_span(site: &Site, from: NaiveDate, to: NaiveDate) -> (Timestamp, Timestamp) {
    let at = |d: NaiveDate| {
        site.timezone
            .from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map_or(Timestamp(0), |t| Timestamp(t.timestamp_micros()))
    };
    (at(from), at(to + Duration::days(1)))
}

/// The national figures file, or why there are none. A missing file at the
/// packaged default falls back to the copy built in (running from source).
pub fn load_national(path: &Path) -> std::result::Result<(National, String), String> {
    const BUILT_IN: &str = include_str!("../../../packaging/national.toml");
    let (text, from) = match std::fs::read_to_string(path) {
        Ok(t) => (t, path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_NATIONAL) => {
            (BUILT_IN.to_string(), format!("the copy built into cbt-agent {} (no file at {})", env!("CARGO_PKG_VERSION"), path.display()))
        }
        Err(e) => return Err(format!("cannot read {} (page.national): {e}", path.display())),
    };
    let n: National = toml::from_str(&text).map_err(|e| format!("{} (page.national) is not a national figures file: {}", path.display(), e.message()))?;
    n.check().map_err(|e| format!("{} (page.national): {e}", path.display()))?;
    Ok((n, from))
}

/// The calls (and, for dates whose calls retention pruned, the stored day
/// figures) of `from..=to`, with three days before for callbacks made in
/// the period.
pub fn book_between(store: &Store, site: &Site, from: NaiveDate, to: NaiveDate) -> Result<CallBook> {
    let (start, end) = local_span(site, from - Duration::days(3), to);
    let cut = store.pruned_before()?;
    // calls before the cut are being pruned (a prune cut short leaves
    // some): their days count from the stored figures, as below
    let start = cut.map_or(start, |c| start.max(c));
    let mut book = CallBook::from_records(store.calls_between(start, end.max(start))?);
    if let Some(cut) = cut {
        let first_kept = Aggregator::new(site).local_date(cut);
        if from < first_kept {
            book.add_days(store.days_between(Some(from), Some(to))?.into_iter().filter(|((_, d), _)| *d < first_kept).collect());
        }
    }
    Ok(book)
}

/// The staffing tables from call records: `weeks` ending with `to`
/// (default: the last date with calls), not before the first date with
/// calls (`first`, default: of these records).
pub fn staffing_of(records: &[&CallRecord], site: &Site, params: &StaffingParams, to: Option<NaiveDate>, first: Option<NaiveDate>) -> Option<Staffing> {
    let agg = Aggregator::new(site);
    let dates = || records.iter().map(|r| agg.local_date(r.started));
    let to = to.or_else(|| dates().max())?;
    let first = first.or_else(|| dates().min());
    let (from, to) = cbt_proto::staffing::window(params.weeks, to, first);
    let calls: Vec<CallRecord> = records.iter().map(|r| (*r).clone()).collect();
    Some(cbt_proto::staffing::staffing(&calls, site, params, from, to))
}

/// `--output staffing`: one JSON object per practice, weekday and half-hour.
pub fn write_staffing(out: &mut dyn std::io::Write, records: &[&CallRecord], site: &Site, params: &StaffingParams, to: Option<NaiveDate>) -> Result<()> {
    match staffing_of(records, site, params, to, None) {
        Some(st) => {
            for r in st.rows() {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        None => eprintln!("cbt-agent: no calls, so no staffing figures (give --to to see the empty table)"),
    }
    Ok(())
}

/// What `check-config` says about `[page]` and `[staffing]`: the national
/// figures in use, the LAN listener and whether its files can be read.
/// Their problems are warnings on standard error that leave the exit status
/// alone: the service starts without them (capture matters more), and says
/// so on the page and in its log.
pub fn check_config_lines(w: &mut dyn std::io::Write, c: &PageConfig) -> std::io::Result<()> {
    match load_national(&c.national) {
        Ok((n, from)) => writeln!(w, "Practice page: national figures of {} ({}), from {from}", n.month, n.source)?,
        Err(e) => {
            writeln!(w, "Practice page: NO national figures")?;
            eprintln!("warning: {e}; the page shows no comparison with England");
        }
    }
    match &c.lan {
        None => writeln!(w, "  on this machine only (no [page.lan])")?,
        Some(l) => {
            let how = match (&l.password_hash, &l.token_file) {
                (Some(_), Some(t)) => format!("password or token ({})", t.display()),
                (Some(_), None) => "password".to_string(),
                (None, Some(t)) => format!("token ({})", t.display()),
                (None, None) => "nothing".to_string(),
            };
            writeln!(w, "  also on https://{} behind a {how}; API and /metrics there: {}", l.listen, if l.api { "yes" } else { "no" })?;
            if let Err(e) = access::check_lan(l) {
                writeln!(w, "  LAN LISTENER WILL NOT START")?;
                eprintln!("warning: {e:#}; the page stays on this machine only");
            }
        }
    }
    let s = &c.staffing;
    writeln!(
        w,
        "Staffing: last {} weeks, {:.0}% answered within {} s, {} s wrap-up after each call",
        s.weeks,
        s.target_share * 100.0,
        s.target_s,
        s.wrap_up_s
    )
}

/// Everything a page needs besides its calls.
pub struct Ctx {
    pub site: Site,
    pub config: PageConfig,
    pub status: Option<Status>,
    pub store: Arc<Store>,
    pub now: Timestamp,
}

impl Ctx {
    /// Today's local date.
    pub fn today(&self) -> NaiveDate {
        Aggregator::new(&self.site).local_date(self.now)
    }

    /// The practices to offer: configured ones in order (and `Unassigned`
    /// when the site has several).
    pub fn practices(&self) -> Vec<(String, Option<String>)> {
        let mut v: Vec<(String, Option<String>)> = self.site.practices.iter().map(|p| (p.ods.clone(), p.name.clone())).collect();
        if v.len() > 1 {
            v.push((cbt_proto::site::UNASSIGNED.to_string(), Some("calls to other numbers".into())));
        }
        v
    }

    pub fn practice_or_first(&self, asked: Option<&str>) -> String {
        let list = self.practices();
        asked
            .and_then(|a| list.iter().find(|(p, _)| p == a).map(|(p, _)| p.clone()))
            .or_else(|| list.first().map(|(p, _)| p.clone()))
            .unwrap_or_else(|| cbt_proto::site::UNASSIGNED.to_string())
    }

    /// The staffing tables for these parameters, learning from the weeks
    /// before `to` (default: yesterday, the last whole day).
    pub fn staffing(&self, params: &StaffingParams, to: Option<NaiveDate>) -> Result<Staffing> {
        let to = to.unwrap_or_else(|| self.today() - Duration::days(1));
        let first = self.store.first_call_start()?.map(|t| Aggregator::new(&self.site).local_date(t));
        let (from, to) = cbt_proto::staffing::window(params.weeks, to, first.or(Some(to)));
        let (start, end) = local_span(&self.site, from, to);
        let calls = self.store.calls_between(start, end)?;
        Ok(cbt_proto::staffing::staffing(&calls, &self.site, params, from, to))
    }
}

/// `/`: a period of one practice.
#[derive(Debug, Default, Deserialize)]
pub struct PeriodQuery {
    pub period: Option<String>,
    pub practice: Option<String>,
    /// The day taken as today (default: today).
    pub date: Option<NaiveDate>,
}

/// `/staffing` and `/api/staffing`.
#[derive(Debug, Default, Deserialize)]
pub struct StaffingQuery {
    pub practice: Option<String>,
    pub weeks: Option<u32>,
    pub target_s: Option<f64>,
    pub target_share: Option<f64>,
    pub wrap_up_s: Option<f64>,
    /// The last date learnt from (default: yesterday).
    pub to: Option<NaiveDate>,
    /// The day drawn on the page (Monday to Sunday; default Monday).
    pub weekday: Option<String>,
}

impl StaffingQuery {
    /// The configured defaults with what was asked for, or why it cannot be.
    pub fn params(&self, config: &PageConfig) -> std::result::Result<StaffingParams, String> {
        let mut p = config.staffing.params();
        if let Some(w) = self.weeks {
            if !(1..=52).contains(&w) {
                return Err("weeks: give 1 to 52".into());
            }
            p.weeks = w;
        }
        if let Some(t) = self.target_s {
            if !(1.0..=3600.0).contains(&t) {
                return Err("target_s: give 1 to 3600 seconds".into());
            }
            p.target_s = t;
        }
        if let Some(s) = self.target_share {
            if !(s > 0.0 && s < 1.0) {
                return Err("target_share: give a share between 0 and 1, like 0.8".into());
            }
            p.target_share = s;
        }
        if let Some(w) = self.wrap_up_s {
            if !(0.0..=3600.0).contains(&w) {
                return Err("wrap_up_s: give 0 to 3600 seconds".into());
            }
            p.wrap_up_s = w;
        }
        Ok(p)
    }
}

/// `/report`: the printable month.
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    pub practice: Option<String>,
    /// `YYYY-MM` (default: last month).
    pub month: Option<String>,
}

/// The page routes (the daemon's router adds its API beside them).
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(period_page))
        .route("/staffing", get(staffing_page))
        .route("/report", get(report_page))
        .route("/api/staffing", get(staffing_api))
}

/// The paths that are pages (the LAN listener serves only these unless
/// `page.lan.api`).
pub const PAGE_PATHS: [&str; 3] = ["/", "/staffing", "/report"];

fn ctx(s: &Shared) -> std::result::Result<Ctx, Box<Response>> {
    let store = s.store.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(store) = store else {
        return Err(Box::new((StatusCode::SERVICE_UNAVAILABLE, "the store is not available; see `cbt-agent status`\n").into_response()));
    };
    Ok(Ctx {
        site: s.site.read().unwrap_or_else(|e| e.into_inner()).clone(),
        config: s.page.read().unwrap_or_else(|e| e.into_inner()).clone(),
        status: Some(s.status.read().unwrap_or_else(|e| e.into_inner()).clone()),
        store,
        now: crate::daemon::capture::now(),
    })
}

/// Runs a page's store reads and rendering off the async threads.
async fn blocking<F>(s: &Shared, f: F) -> Response
where
    F: FnOnce(Ctx) -> Result<Response> + Send + 'static,
{
    let c = match ctx(s) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || f(c)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn html(m: maud::Markup) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        m.into_string(),
    )
        .into_response()
}

async fn period_page(State(s): State<Arc<Shared>>, Query(q): Query<PeriodQuery>) -> Response {
    blocking(&s, move |c| Ok(html(render::period_page(&c, &q)?))).await
}

async fn staffing_page(State(s): State<Arc<Shared>>, Query(q): Query<StaffingQuery>) -> Response {
    blocking(&s, move |c| {
        let params = match q.params(&c.config) {
            Ok(p) => p,
            Err(e) => return Ok((StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()),
        };
        Ok(html(render::staffing_page(&c, &q, &params)?))
    })
    .await
}

async fn report_page(State(s): State<Arc<Shared>>, Query(q): Query<ReportQuery>) -> Response {
    blocking(&s, move |c| {
        let month = q.month.clone().unwrap_or_else(|| {
            let (from, _) = Period::LastMonth.span(c.today());
            from.format("%Y-%m").to_string()
        });
        let Some((from, to)) = month_span(&month) else {
            return Ok((StatusCode::BAD_REQUEST, format!("month: `{month}` is not YYYY-MM\n")).into_response());
        };
        Ok(html(render::month_report(&c, q.practice.as_deref(), from, to)?))
    })
    .await
}

/// `GET /api/staffing?weeks=4&target_s=120&target_share=0.8[&practice=][&to=]`:
/// one object per practice, weekday and half-hour.
async fn staffing_api(State(s): State<Arc<Shared>>, Query(q): Query<StaffingQuery>) -> Response {
    blocking(&s, move |c| {
        let params = match q.params(&c.config) {
            Ok(p) => p,
            Err(e) => return Ok((StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()),
        };
        let st = c.staffing(&params, q.to)?;
        let rows: Vec<_> = st.rows().filter(|r| q.practice.as_deref().is_none_or(|p| r.practice == p)).collect();
        Ok(axum::Json(rows).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let today = d(2026, 3, 2);
        assert_eq!(Period::Today.span(today), (today, today));
        assert_eq!(Period::Yesterday.span(today), (d(2026, 3, 1), d(2026, 3, 1)));
        assert_eq!(Period::Week.span(today), (d(2026, 2, 24), today));
        assert_eq!(Period::Month.span(today), (d(2026, 3, 1), today));
        assert_eq!(Period::LastMonth.span(today), (d(2026, 2, 1), d(2026, 2, 28)));
        assert_eq!(Period::LastMonth.span(d(2026, 1, 15)), (d(2025, 12, 1), d(2025, 12, 31)));
        for p in Period::ALL {
            assert_eq!(Period::parse(p.slug()), Some(p));
        }
    }

    #[test]
    fn the_shipped_national_file_is_valid() {
        let (n, _) = load_national(Path::new(DEFAULT_NATIONAL)).or_else(|_| load_national(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/national.toml"))).unwrap();
        assert_eq!(n.outcomes.answered, 57.7);
        assert!(n.check().is_ok());
    }
}
