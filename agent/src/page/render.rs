//! The pages, as maud templates. Every number shown is also in a table
//! cell with a `data-` attribute naming it (the tests read those; so can a
//! screen reader's table navigation). No script anywhere.

use super::charts;
use super::{book_between, load_national, Ctx, Period, PeriodQuery, StaffingQuery};
use anyhow::Result;
use cbt_proto::metrics::Dpn;
use cbt_proto::national::{compare, Comparison, Setup};
use cbt_proto::period::{period, PeriodFigures, OUTCOMES};
use cbt_proto::staffing::{slot_start, weekday_name, StaffingParams, WEEKDAYS};
use chrono::NaiveDate;
use maud::{html, Markup, PreEscaped, DOCTYPE};

const CSS: &str = r#"
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1a1a1a;background:#f4f6f8}
header{background:#005eb8;color:#fff;padding:.5rem 1rem}
header a{color:#fff}
header .site{font-weight:600;margin-right:1rem}
nav{margin:.3rem 0}
nav a{display:inline-block;margin:.1rem .8rem .1rem 0}
nav a.on{font-weight:700;text-decoration:none;border-bottom:2px solid currentColor}
main{max-width:62rem;margin:0 auto;padding:.5rem 1rem 2rem}
h1{font-size:1.4rem;margin:.8rem 0 .2rem}
h2{font-size:1.1rem;margin:0 0 .5rem}
.dates{color:#444;margin:0 0 .6rem}
section{background:#fff;border:1px solid #dde2e6;border-radius:6px;padding:.7rem 1rem;margin:.9rem 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.5rem;margin:.6rem 0}
.tile{background:#fff;border:1px solid #dde2e6;border-radius:6px;padding:.45rem .6rem}
.tile b{display:block;font-size:1.45rem;line-height:1.2}
.tile span{color:#555;font-size:.85rem}
.chart{width:100%;height:auto;max-width:640px;display:block;margin:.3rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.88rem;margin:.3rem 0}
td,th{padding:2px 7px;text-align:right;border-bottom:1px solid #eceff1;white-space:nowrap}
th:first-child,td:first-child,.name{text-align:left;white-space:normal}
thead th{border-bottom:2px solid #cfd8dc;white-space:normal;vertical-align:bottom}
td .also{color:#555;font-size:.85em;margin-left:.4em}
details summary{cursor:pointer;color:#005eb8}
.note{color:#444;font-size:.9rem}
.notes li{margin:.25rem 0}
.warn{color:#8a5300}.error{color:#b00020}
form label{margin-right:.8rem;display:inline-block}
form input{width:5rem}
.grid2{display:grid;grid-template-columns:1fr;gap:0 1rem}
@media (min-width:56rem){.grid2{grid-template-columns:1fr 1fr}}
footer{max-width:62rem;margin:0 auto;padding:0 1rem 2rem;color:#555;font-size:.85rem}
@media print{
 @page{size:A4;margin:10mm}
 html{font-size:8.5pt}
 body{background:#fff;font-size:1rem;line-height:1.25}
 h1{font-size:1.5rem;margin:0 0 .1rem}
 h2{font-size:1.1rem;margin:0 0 .2rem}
 .tiles{grid-template-columns:repeat(4,1fr);gap:.3rem;margin:.3rem 0}
 .tile{padding:.2rem .4rem}
 .tile b{font-size:1.3rem}
 .notes li{margin:.1rem 0}
 header{background:none;color:#000;padding:0;border-bottom:2px solid #005eb8}
 header a{color:#000;text-decoration:none}
 nav,.noprint,form,footer{display:none}
 main{max-width:none;padding:0}
 section{border:none;padding:0;margin:.35rem 0;break-inside:avoid}
 .grid2{grid-template-columns:1fr 1fr}
 .chart{max-width:100%;max-height:48mm;width:auto}
 .note,.notes{font-size:.92rem}
 table{font-size:.95rem;margin:.1rem 0}
 td,th{padding:1px 5px}
 details{display:none}
}
"#;

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.1}%", x * 100.0))
}

fn pct_raw(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.1}%"))
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(s) if s < 60.0 => format!("{s:.0} s"),
        Some(s) => {
            let s = s.round() as u64;
            format!("{} min {:02} s", s / 60, s % 60)
        }
    }
}

fn raw(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x}"))
}

fn day(d: NaiveDate) -> String {
    d.format("%a %-d %b %Y").to_string()
}

fn dates(from: NaiveDate, to: NaiveDate) -> String {
    if from == to {
        day(from)
    } else {
        format!("{} to {}", day(from), day(to))
    }
}

fn q(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", v.replace('&', "%26").replace(' ', "+"))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Which top-level page is showing.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Tab {
    Calls,
    Staffing,
    Report,
}

fn practice_label(c: &Ctx, ods: &str) -> String {
    c.practices()
        .into_iter()
        .find(|(p, _)| p == ods)
        .and_then(|(_, n)| n)
        .map_or(ods.to_string(), |n| format!("{n} ({ods})"))
}

fn layout(c: &Ctx, title: &str, tab: Tab, practice: &str, date: Option<NaiveDate>, refresh: Option<u32>, body: Markup) -> Markup {
    let d = date.map(|d| d.to_string());
    let practices = c.practices();
    let link = |t: Tab, p: &str| -> String {
        let pq = Some(p.to_string());
        match t {
            Tab::Calls => format!("/{}", q(&[("practice", pq), ("date", d.clone())])),
            Tab::Staffing => format!("/staffing{}", q(&[("practice", pq)])),
            Tab::Report => format!("/report{}", q(&[("practice", pq)])),
        }
    };
    html! {
        (DOCTYPE)
        html lang="en-GB" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                @if let Some(r) = refresh { meta http-equiv="refresh" content=(r); }
                title { (title) " · cbt-agent" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    span.site { "Practice phones" }
                    span { (practice_label(c, practice)) }
                    nav aria-label="pages" {
                        a class=[(tab == Tab::Calls).then_some("on")] href=(link(Tab::Calls, practice)) { "Calls" }
                        a class=[(tab == Tab::Staffing).then_some("on")] href=(link(Tab::Staffing, practice)) { "Staffing" }
                        a class=[(tab == Tab::Report).then_some("on")] href=(link(Tab::Report, practice)) { "Monthly report" }
                    }
                    @if practices.len() > 1 {
                        nav aria-label="practices" {
                            @for (p, name) in &practices {
                                a class=[(p == practice).then_some("on")] href=(link(tab, p)) { (name.clone().unwrap_or_else(|| p.clone())) }
                            }
                        }
                    }
                }
                main { (body) }
                footer {
                    "cbt-agent " (env!("CARGO_PKG_VERSION")) " · figures from this practice's own phone signalling, computed on this machine; nothing here leaves it · "
                    a href="/status" { "status" } " · " a href="/metrics" { "metrics" }
                }
            }
        }
    }
}

fn tile(label: &str, value: String, sub: Option<String>, metric: &str, raw_value: String) -> Markup {
    html! {
        div.tile data-metric=(metric) data-value=(raw_value) {
            span { (label) }
            b { (value) }
            @if let Some(s) = sub { span { (s) } }
        }
    }
}

fn tiles(f: &PeriodFigures) -> Markup {
    let d = &f.dpn;
    html! {
        div.tiles {
            (tile("Calls", d.call_volume.to_string(), None, "call_volume", d.call_volume.to_string()))
            (tile("Answered", pct(f.answered_share), Some(format!("{} calls", d.answered_calls)), "answered_share", raw(f.answered_share)))
            (tile("Answered within 2 min", pct(f.answered_within_2_min_share), Some("of answered calls".into()), "answered_within_2_min_share", raw(f.answered_within_2_min_share)))
            (tile("Gave up", pct(f.abandonment_share), Some(format!("{} calls abandoned", d.calls_abandoned)), "abandonment_share", raw(f.abandonment_share)))
            (tile("Median wait", secs(d.median_wait_to_answer_s), Some("of answered calls".into()), "median_wait_s", raw(d.median_wait_to_answer_s)))
            (tile("90th percentile wait", secs(f.p90_wait_s), Some("9 in 10 answered within".into()), "p90_wait_s", raw(f.p90_wait_s)))
            (tile("Median call length", secs(d.median_call_length_s), None, "median_call_length_s", raw(d.median_call_length_s)))
            (tile("Callbacks", format!("{} / {}", d.callbacks_requested, d.callbacks_made), Some("requested / made".into()), "callbacks", format!("{}/{}", d.callbacks_requested, d.callbacks_made)))
        }
    }
}

/// The nine Data Provision Notice metrics, with the report's field names.
fn dpn_table(d: &Dpn, title: &str) -> Markup {
    let n = |k: &str, v: u64| html! { td data-metric=(k) data-value=(v) { (v) } };
    let s = |k: &str, v: Option<f64>| html! { td data-metric=(k) data-value=(raw(v)) { (secs(v)) } };
    html! {
        section #dpn {
            h2 { (title) }
            div.scroll {
                table data-table="dpn" {
                    thead { tr { th { "#" } th.name { "Data Provision Notice metric" } th { "value" } th { "" } } }
                    tbody {
                        tr { td { "1" } td.name { "Call volume (inbound calls)" } (n("call_volume", d.call_volume)) td {} }
                        tr {
                            td { "2" } td.name { "Calls abandoned" } (n("calls_abandoned", d.calls_abandoned))
                            td {
                                span.also data-metric="calls_abandoned_waiting" data-value=(d.calls_abandoned_waiting) { (d.calls_abandoned_waiting) " waiting" }
                                span.also data-metric="calls_abandoned_in_ivr" data-value=(d.calls_abandoned_in_ivr) { (d.calls_abandoned_in_ivr) " in the IVR" }
                            }
                        }
                        tr { td { "3" } td.name { "Time to answer: mean, median" } (s("mean_wait_to_answer_s", d.mean_wait_to_answer_s)) (s("median_wait_to_answer_s", d.median_wait_to_answer_s)) }
                        tr { td { "4" } td.name { "Missed calls" } (n("missed_calls", d.missed_calls)) td {} }
                        tr { td { "5" } td.name { "Wait before abandoning: mean, median" } (s("mean_wait_before_abandonment_s", d.mean_wait_before_abandonment_s)) (s("median_wait_before_abandonment_s", d.median_wait_before_abandonment_s)) }
                        tr { td { "6" } td.name { "Callbacks requested" } (n("callbacks_requested", d.callbacks_requested)) td {} }
                        tr { td { "7" } td.name { "Callbacks made" } (n("callbacks_made", d.callbacks_made)) td {} }
                        tr { td { "8" } td.name { "Call length: mean, median" } (s("mean_call_length_s", d.mean_call_length_s)) (s("median_call_length_s", d.median_call_length_s)) }
                        tr { td { "9" } td.name { "Inbound calls answered" } (n("answered_calls", d.answered_calls)) td {} }
                    }
                }
            }
        }
    }
}

fn counts_table(kind: &str, rows: &[cbt_proto::period::Counts]) -> Markup {
    html! {
        details {
            summary { "The numbers" }
            div.scroll {
                table data-table=(kind) {
                    thead { tr { th { "" } @for o in charts::OUTCOME_NAMES { th { (o) } } th { "all" } th { "callbacks made" } } }
                    tbody {
                        @for r in rows {
                            tr data-row=(r.label) {
                                td { (r.label) @if let Some(d) = r.days { " (" (d) (if d == 1 { " day" } else { " days" }) ")" } }
                                @for (k, o) in OUTCOMES.iter().enumerate() { td data-outcome=(o) { (r.outcomes[k]) } }
                                td data-outcome="inbound" { (r.inbound()) }
                                td data-outcome="callbacks_made" { (r.callbacks_made) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn wait_section(f: &PeriodFigures) -> Markup {
    let a = &f.answered_by_wait;
    html! {
        section #waits {
            h2 { "How long callers waited" }
            p.note { "Answered calls by their wait for a person, and callers who gave up while waiting, by when they gave up (NHS wait bands, seconds). "
                "Median wait " (secs(f.median_wait_s)) ", 90% answered within " (secs(f.p90_wait_s)) "." }
            (charts::wait_histogram("chart-waits", "Answered and abandoned calls by wait", &a.labels, &a.counts, &f.abandoned_by_wait.counts))
            details {
                summary { "The numbers" }
                div.scroll {
                    table data-table="waits" {
                        thead { tr { th { "wait (s)" } th { "answered" } th { "gave up waiting" } } }
                        tbody {
                            @for (i, l) in a.labels.iter().enumerate() {
                                tr data-row=(l) { td { (l.replace('_', "-")) } td data-series="answered" { (a.counts[i]) } td data-series="abandoned" { (f.abandoned_by_wait.counts.get(i).copied().unwrap_or(0)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn national_section(cmp: &Result<(Comparison, String), String>, f: &PeriodFigures) -> Markup {
    html! { (england_section(cmp, f)) (setup_notes(cmp)) }
}

fn setup_notes(cmp: &Result<(Comparison, String), String>) -> Markup {
    let Ok((c, from)) = cmp else { return html! {} };
    html! {
        section #setup {
            h2 { "Where your set-up changes the picture" }
            ul.notes { @for n in &c.notes { li { (n) } } }
            p.note { "England: " (c.source) @if let Some(u) = &c.url { " (" (u) ")" } "; read from " (from) "." }
        }
    }
}

fn england_section(cmp: &Result<(Comparison, String), String>, f: &PeriodFigures) -> Markup {
    html! {
        section #england {
            h2 { "Compared with England" }
            @match cmp {
                Err(e) => { p.warn { "National figures unavailable: " (e) } }
                Ok((c, _)) => {
                    @let mix = |share: [Option<f64>; 4]| share.map(|s| s.unwrap_or(0.0) * 100.0);
                    @let rows = vec![
                        ("This practice".to_string(), mix([f.answered_share, f.missed_share, f.ended_in_ivr_share, f.callback_requested_share])),
                        (format!("England {}", c.month), [c.rows[0].england.unwrap_or(0.0), c.rows[3].england.unwrap_or(0.0), c.rows[1].england.unwrap_or(0.0), c.rows[2].england.unwrap_or(0.0)]),
                    ];
                    @if f.dpn.call_volume > 0 {
                        (charts::mix_bars("chart-england", "Outcome of calls: this practice and England", &rows))
                    }
                    div.scroll {
                        table data-table="england" {
                            thead { tr { th { "" } th { "this practice" } th { "England" } } }
                            tbody {
                                @for r in &c.rows {
                                    tr data-measure=(r.measure) { td { (r.measure) } td data-who="practice" data-value=(raw(r.practice)) { (pct_raw(r.practice)) } td data-who="england" data-value=(raw(r.england)) { (pct_raw(r.england)) } }
                                }
                                @for (label, p, e) in &c.call_length {
                                    tr data-measure=(format!("Call length {label}")) { td { "Call length " (label) } td data-who="practice" { (pct_raw(*p)) } td data-who="england" { (pct_raw(Some(*e))) } }
                                }
                            }
                        }
                    }
                    @if c.call_length.is_empty() {
                        p.note { "The national figures file holds no call length distribution, so none is compared." }
                    }
                }
            }
        }
    }
}

fn agent_section(c: &Ctx) -> Markup {
    let Some(s) = &c.status else { return html! {} };
    let u = &s.upload;
    html! {
        section #agent .noprint {
            h2 { "The agent" }
            ul {
                li { (s.engine.calls_in_progress) " calls in progress now (counted when they end)." }
                @if s.view == "partial" { li.warn { "Only the handsets' side is visible: calls that end before a handset rings are not seen, so these figures are partial." } }
                @if u.enabled {
                    li { "Figures sent to the supplier: " (u.outbox) " days waiting"
                        @if let Some(d) = &u.oldest_undelivered { " (oldest " (d) ")" }
                        ", last sent " (u.last_success.as_ref().map_or("never".to_string(), |d| d.at.clone())) "." }
                } @else {
                    li { "Figures are kept on this machine (no upload configured)." }
                }
                @let k = &s.hostile.kept_out;
                @let shed = s.hostile.memory.engine.legs_shed;
                @if k.invites + k.screen.other_requests + k.hep_rejected > 0 || shed > 0 {
                    li { "Not counted as calls since the agent started: " (k.invites) " attempts and " (k.screen.other_requests)
                        " other requests from internet scanners or unexpected addresses"
                        @if !k.sources.is_empty() { " (" (k.sources.iter().take(5).map(|x| x.address.as_str()).collect::<Vec<_>>().join(", ")) ")" }
                        "."
                        @if shed > 0 { " " (shed) " unanswered attempts were dropped to protect the agent's memory." } }
                }
                @if s.diagnostics.is_empty() { li { "No problems detected." } }
                @for d in &s.diagnostics { li class=(if d.severity == "error" { "error" } else { "warn" }) { (d.message) } }
                @if let Some(e) = super::access::lan_problem() { li.error { "The LAN listener is not running: " (e) } }
            }
        }
    }
}

fn period_nav(practice: &str, date: Option<NaiveDate>, on: Period) -> Markup {
    let d = date.map(|d| d.to_string());
    html! {
        nav.periods aria-label="periods" {
            @for p in Period::ALL {
                a class=[(p == on).then_some("on")] href=(format!("/{}", q(&[("period", Some(p.slug().into())), ("practice", Some(practice.into())), ("date", d.clone())]))) { (p.name()) }
            }
        }
    }
}

/// A practice's figures over `from..=to` (what the period page and the
/// month report draw): the figures, beside England's (or why not), and the
/// outcomes by time band and by weekday.
#[allow(clippy::type_complexity)]
fn period_view(
    c: &Ctx,
    practice: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(PeriodFigures, std::result::Result<(Comparison, String), String>, Vec<(String, [u64; 4])>, Vec<(String, [u64; 4])>)> {
    let book = book_between(&c.store, &c.site, from, to)?;
    let agg = book.aggregate(&c.site);
    let f = period(&agg, practice, from, to);
    let durations: Vec<f64> = agg
        .days()
        .iter()
        .filter(|((p, d), _)| p == practice && *d >= from && *d <= to)
        .flat_map(|(_, day)| day.durations.iter().copied())
        .collect();
    let cmp = load_national(&c.config.national).map(|(n, src)| (compare(&f, &n, Setup::of(&c.site), &durations), src));
    let bands = f.by_band.iter().map(|b| (b.label.clone(), b.outcomes)).collect();
    let weekdays = f.by_weekday.iter().map(|b| (b.label[..3].to_string(), b.outcomes)).collect();
    Ok((f, cmp, bands, weekdays))
}

/// `/`: one practice over one period.
pub fn period_page(c: &Ctx, pq: &PeriodQuery) -> Result<Markup> {
    let real_today = c.today();
    let today = pq.date.unwrap_or(real_today);
    let live = today == real_today;
    let per = pq.period.as_deref().and_then(Period::parse).unwrap_or(Period::Today);
    let practice = c.practice_or_first(pq.practice.as_deref());
    let (from, to) = per.span(today);
    let (f, cmp, bands, weekdays) = period_view(c, &practice, from, to)?;
    let dated: Vec<(String, [u64; 4])> = f.by_date.iter().map(|b| (b.label[8..].trim_start_matches('0').to_string(), b.outcomes)).collect();
    let month_like = matches!(per, Period::Month | Period::LastMonth);
    let title = format!("{}: {}", per.name(), dates(from, to));
    let refresh = (live && to == real_today).then_some(60);
    let body = html! {
        (period_nav(&practice, pq.date, per))
        h1 { (per.name()) }
        p.dates { (dates(from, to)) @if refresh.is_some() { " · live, refreshed every minute" } }
        @if f.partial_calls > 0 { p.warn { (f.partial_calls) " calls were only partly seen (a capture gap or a restart): they are counted, with what was seen." } }
        (tiles(&f))
        section #bands {
            h2 { "Calls by time of day" }
            (charts::stacked_bars("chart-bands", "Calls by time band and outcome", &bands))
            (counts_table("bands", &f.by_band))
        }
        @if from != to {
            section #weekdays {
                h2 { "Calls by day of the week" }
                (charts::stacked_bars("chart-weekdays", "Calls by day of the week and outcome", &weekdays))
                (counts_table("weekdays", &f.by_weekday))
            }
            @if f.by_date.len() > 7 || month_like {
                section #days {
                    h2 { "Calls by date" }
                    (charts::stacked_bars("chart-dates", "Calls by date and outcome", &dated))
                    (counts_table("dates", &f.by_date))
                }
            }
        }
        (wait_section(&f))
        (national_section(&cmp, &f))
        (dpn_table(&f.dpn, &if month_like { format!("The nine DPN metrics for {}", from.format("%B %Y")) } else { "The nine DPN metrics for these dates".to_string() }))
        @if live { (agent_section(c)) }
    };
    Ok(layout(c, &title, Tab::Calls, &practice, pq.date, refresh, body))
}

fn weekday_index(s: Option<&str>) -> usize {
    s.and_then(|s| WEEKDAYS.iter().position(|w| weekday_name(*w).eq_ignore_ascii_case(s) || weekday_name(*w)[..3].eq_ignore_ascii_case(s)))
        .unwrap_or(0)
}

fn share_input(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `/staffing`: people needed by weekday and half-hour.
pub fn staffing_page(c: &Ctx, sq: &StaffingQuery, p: &StaffingParams) -> Result<Markup> {
    let st = c.staffing(p, sq.to)?;
    let practice = c.practice_or_first(sq.practice.as_deref());
    let wd = weekday_index(sq.weekday.as_deref());
    let empty = cbt_proto::staffing::PracticeStaffing {
        practice: practice.clone(),
        mean_handle_s: None,
        patience_s: None,
        abandoned_waiting: 0,
        slots: Vec::new(),
    };
    let ps = st.practice(&practice).unwrap_or(&empty);
    let slot = |d: usize, s: usize| ps.slots.get(d * 48 + s);
    let mut heat = [[0.0f64; 48]; 7];
    for (d, row) in heat.iter_mut().enumerate() {
        for (s, v) in row.iter_mut().enumerate() {
            *v = slot(d, s).map_or(0.0, |r| r.arrivals_per_hour);
        }
    }
    let names: [&str; 7] = WEEKDAYS.map(weekday_name);
    let curve: Vec<charts::CurvePoint> = (0..48)
        .filter_map(|s| slot(wd, s))
        .map(|r| (r.start.clone(), r.arrivals_per_hour, r.staff_erlang_c, r.staff_erlang_a))
        .collect();
    let busy: Vec<usize> = (0..48).filter(|s| (0..7).any(|d| slot(d, *s).is_some_and(|r| r.calls > 0))).collect();
    let day_rows: Vec<_> = (0..48).filter_map(|s| slot(wd, s)).filter(|r| r.calls > 0).collect();
    let target = format!("{:.0}% answered within {}", p.target_share * 100.0, secs(Some(p.target_s)));
    let body = html! {
        h1 { "How many people the phones need" }
        p.dates { "Learnt from " (dates(st.from, st.to)) " (" (p.weeks) (if p.weeks == 1 { " week" } else { " weeks" }) " asked for; bank holidays left out) · target: " (target) }
        form method="get" action="/staffing" {
            input type="hidden" name="practice" value=(practice);
            label { "Weeks " input type="number" name="weeks" min="1" max="52" value=(p.weeks); }
            label { "Answer within (s) " input type="number" name="target_s" min="1" max="3600" value=(p.target_s); }
            label { "For this share " input type="number" name="target_share" min="0.05" max="0.99" step="0.01" value=(share_input(p.target_share)); }
            label { "Wrap-up after each call (s) " input type="number" name="wrap_up_s" min="0" max="3600" value=(p.wrap_up_s); }
            label { "Day " select name="weekday" { @for (i, n) in names.iter().enumerate() { option value=(n) selected[i == wd] { (n) } } } }
            button type="submit" { "Show" }
        }
        section #heatmap {
            h2 { "When the calls come: calls an hour wanting a person" }
            (charts::heatmap("chart-heatmap", "Calls an hour by weekday and half-hour", &names, &heat))
        }
        section #curve {
            h2 { (names[wd]) ": people needed through the day" }
            (charts::staffing_curve("chart-staffing", &format!("{}: calls an hour and people needed", names[wd]), &curve))
            div.scroll {
                table data-table="staffing" data-weekday=(names[wd]) {
                    thead { tr {
                        th { "from" } th { "calls/h" } th { "handling" } th { "erlangs" }
                        th { "people (Erlang C)" } th { "answered in time" } th { "one fewer" } th { "one more" } th { "mean wait" }
                        th { "people (Erlang A)" } th { "answered in time (A)" } th { "give up (A)" }
                    } }
                    tbody {
                        @for r in &day_rows {
                            tr data-start=(r.start) {
                                td { (r.start) }
                                td data-field="arrivals_per_hour" { (format!("{:.1}", r.arrivals_per_hour)) }
                                td data-field="mean_handle_s" title=(format!("from {}", r.handle_from.replace('_', " "))) { (secs(r.mean_handle_s)) }
                                td data-field="traffic_erlangs" { (format!("{:.2}", r.traffic_erlangs)) }
                                td data-field="staff_erlang_c" { b { (r.staff_erlang_c) } }
                                td data-field="service_level_at_staff" { (pct(r.service_level_at_staff)) }
                                td data-field="service_level_one_fewer" { (pct(r.service_level_one_fewer)) }
                                td data-field="service_level_one_more" { (pct(r.service_level_one_more)) }
                                td data-field="mean_wait_s" { (secs(r.mean_wait_s)) }
                                td data-field="staff_erlang_a" { (r.staff_erlang_a.map_or("–".to_string(), |n| n.to_string())) }
                                td data-field="service_level_erlang_a" { (pct(r.service_level_erlang_a)) }
                                td data-field="abandon_share_erlang_a" { (pct(r.abandon_share_erlang_a)) }
                            }
                        }
                        @if day_rows.is_empty() { tr { td colspan="12" { "No calls on " (names[wd]) "s in these weeks." } } }
                    }
                }
            }
        }
        section #week {
            h2 { "The week at a glance: people needed (Erlang C)" }
            @if busy.is_empty() {
                p { "No calls in these weeks yet." }
            } @else {
                div.scroll {
                    table data-table="week" {
                        thead { tr { th { "from" } @for n in &names { th { (&n[..3]) } } } }
                        tbody {
                            @for s in busy.first().copied().unwrap_or(0)..=busy.last().copied().unwrap_or(0) {
                                tr data-start=(slot_start(s)) {
                                    td { (slot_start(s)) }
                                    @for d in 0..7 {
                                        @let r = slot(d, s);
                                        td data-weekday=(names[d]) title=(r.map_or(String::new(), |r| format!("{:.1} calls/h", r.arrivals_per_hour))) {
                                            (r.map_or(0, |r| r.staff_erlang_c))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #how {
            h2 { "How these are worked out" }
            ul.notes {
                li { "Calls an hour: the calls in each half-hour that wanted a person (all but those that ended in the IVR), averaged over the "
                    (names[wd]) "s (and other days) of these weeks, doubled to an hourly rate." }
                li { "Handling time: the answered calls' mean length in that half-hour plus " (secs(Some(p.wrap_up_s))) " wrap-up; a half-hour with fewer than "
                    (p.min_answered) " answered calls takes the practice's mean (" (secs(ps.mean_handle_s)) ")." }
                li { "Erlang C: the fewest people on the phones for " (target) " if every caller waited as long as it takes, with the service level one person fewer and one more." }
                li { "Erlang A: the same when callers give up, as yours do: "
                    @if let Some(pt) = ps.patience_s { "their patience is estimated from " (ps.abandoned_waiting) " abandoned calls at " (secs(Some(pt))) " on average. Callers who give up count as not answered in time: with impatient callers Erlang A can need more people than Erlang C, with patient ones fewer. It is the more realistic of the two." }
                    @else { "not enough abandoned calls (" (ps.abandoned_waiting) ", at least " (p.min_abandoned) " needed) to estimate callers' patience yet." } }
                li { "Both assume calls arrive at random within the half-hour and each person takes one call at a time. Redials after an engaged or unanswered call count as new calls." }
                li { "The same figures as JSON: " a href=(format!("/api/staffing?practice={practice}&weeks={}&target_s={}&target_share={}", p.weeks, p.target_s, share_input(p.target_share))) { "/api/staffing" } "." }
            }
        }
    };
    Ok(layout(c, "Staffing", Tab::Staffing, &practice, None, None, body))
}

/// `/report`: the month on one printable page.
pub fn month_report(c: &Ctx, practice: Option<&str>, from: NaiveDate, to: NaiveDate) -> Result<Markup> {
    let practice = c.practice_or_first(practice);
    let (f, cmp, bands, weekdays) = period_view(c, &practice, from, to)?;
    let month = from.format("%B %Y").to_string();
    let prev = (from - chrono::Duration::days(1)).format("%Y-%m").to_string();
    let next = (to + chrono::Duration::days(1)).format("%Y-%m").to_string();
    let body = html! {
        nav.noprint aria-label="months" {
            a href=(format!("/report{}", q(&[("practice", Some(practice.clone())), ("month", Some(prev))]))) { "← previous month" }
            a href=(format!("/report{}", q(&[("practice", Some(practice.clone())), ("month", Some(next))]))) { "next month →" }
        }
        h1 { "Telephone access: " (month) }
        p.dates { (practice_label(c, &practice)) " · " (dates(from, to)) " · printed from cbt-agent" }
        (tiles(&f))
        div.grid2 {
            (dpn_table(&f.dpn, &format!("The nine DPN metrics for {month}")))
            (england_section(&cmp, &f))
        }
        div.grid2 {
            section #bands {
                h2 { "Calls by time of day" }
                (charts::stacked_bars("chart-bands", "Calls by time band and outcome", &bands))
            }
            section #weekdays {
                h2 { "Calls by day of the week" }
                (charts::stacked_bars("chart-weekdays", "Calls by day of the week and outcome", &weekdays))
            }
        }
        div.grid2 {
            (wait_section(&f))
            (setup_notes(&cmp))
        }
    };
    Ok(layout(c, &format!("Monthly report {month}"), Tab::Report, &practice, None, None, body))
}
