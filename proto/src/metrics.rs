//! The NHS "Cloud Based Telephony" indicators (CBT001-CBT007) and the nine
//! Data Provision Notice metrics, from finished calls.
//!
//! Every call is counted on the local date (Europe/London by default) and in
//! the time band of its start. Waits and durations go into whole-second
//! buckets (truncated: 59.999 s is 59 s). Core hours are Monday to Friday,
//! 08:00-18:30 local, not on bank holidays. The CSV column names of the
//! published files live in [`export`], and nowhere else.

use crate::call::{CallRecord, Outcome};
use crate::site::{OrgCodes, Site, UNASSIGNED};
use crate::time::Timestamp;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// `Time_Category` labels, in order.
pub const TIME_CATEGORIES: [&str; 9] = [
    "00:00-05:59",
    "06:00-07:59",
    "08:00-09:59",
    "10:00-11:59",
    "12:00-13:59",
    "14:00-15:59",
    "16:00-17:59",
    "18:00-18:29",
    "18:30-23:59",
];

/// The band of a local time of day.
pub fn time_category(t: NaiveDateTime) -> usize {
    let m = t.hour() * 60 + t.minute();
    match m {
        0..=359 => 0,
        360..=479 => 1,
        480..=599 => 2,
        600..=719 => 3,
        720..=839 => 4,
        840..=959 => 5,
        960..=1079 => 6,
        1080..=1109 => 7,
        _ => 8,
    }
}

/// `Core_Category` labels, in order.
pub const CORE_CATEGORIES: [&str; 3] = ["Core_8_10", "Core_10_1830", "Non-Core"];

/// Core hours: Monday to Friday, not a bank holiday, 08:00-10:00 and
/// 10:00-18:30 local.
pub fn core_category(t: NaiveDateTime, holidays: &BTreeSet<NaiveDate>) -> usize {
    let weekday = !matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
    if !weekday || holidays.contains(&t.date()) {
        return 2;
    }
    let m = t.hour() * 60 + t.minute();
    match m {
        480..=599 => 0,
        600..=1109 => 1,
        _ => 2,
    }
}

/// Wait or duration buckets from their upper edges in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    edges: Vec<u32>,
    labels: Vec<String>,
}

impl Buckets {
    /// `[0, 30, 60]` gives `0`, `1_30`, `31_60`, `>60`. Edges must increase.
    pub fn new(edges: &[u32]) -> Result<Buckets, String> {
        if edges.is_empty() {
            return Err("at least one edge is needed".into());
        }
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("edges must increase: {edges:?}"));
        }
        let mut labels = Vec::with_capacity(edges.len() + 1);
        for (i, e) in edges.iter().enumerate() {
            let lo = if i == 0 { 0 } else { edges[i - 1] + 1 };
            labels.push(if lo == *e { e.to_string() } else { format!("{lo}_{e}") });
        }
        labels.push(format!(">{}", edges[edges.len() - 1]));
        Ok(Buckets {
            edges: edges.to_vec(),
            labels,
        })
    }

    /// The bucket of a span in seconds (whole seconds, truncated).
    pub fn index(&self, secs: f64) -> usize {
        let whole = if secs.is_finite() && secs > 0.0 { secs.floor() as u64 } else { 0 };
        self.edges
            .iter()
            .position(|e| whole <= *e as u64)
            .unwrap_or(self.edges.len())
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The upper edges the buckets were made from.
    pub fn edges(&self) -> &[u32] {
        &self.edges
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The published indicators. Adding one is a new variant here; the
/// compiler then points at every place that must say what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Indicator {
    /// Inbound calls.
    Cbt001,
    /// Ended in IVR.
    Cbt002,
    /// Answered, by wait.
    Cbt003,
    /// Missed.
    Cbt004,
    /// Callback requested.
    Cbt005,
    /// Callback made.
    Cbt006,
    /// Answered, by duration.
    Cbt007,
}

impl Indicator {
    pub const ALL: [Indicator; 7] = [
        Indicator::Cbt001,
        Indicator::Cbt002,
        Indicator::Cbt003,
        Indicator::Cbt004,
        Indicator::Cbt005,
        Indicator::Cbt006,
        Indicator::Cbt007,
    ];

    /// The indicators counted by `Time_Category` (the By Day and Time file).
    pub const BY_TIME: [Indicator; 6] = [
        Indicator::Cbt001,
        Indicator::Cbt002,
        Indicator::Cbt003,
        Indicator::Cbt004,
        Indicator::Cbt005,
        Indicator::Cbt006,
    ];

    /// The code in NHS England's files.
    pub fn code(self) -> &'static str {
        match self {
            Indicator::Cbt001 => "CBT001",
            Indicator::Cbt002 => "CBT002",
            Indicator::Cbt003 => "CBT003",
            Indicator::Cbt004 => "CBT004",
            Indicator::Cbt005 => "CBT005",
            Indicator::Cbt006 => "CBT006",
            Indicator::Cbt007 => "CBT007",
        }
    }

    /// NHS England's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Indicator::Cbt001 => "Inbound calls",
            Indicator::Cbt002 => "Ended in IVR",
            Indicator::Cbt003 => "Answered",
            Indicator::Cbt004 => "Missed",
            Indicator::Cbt005 => "Callback requested",
            Indicator::Cbt006 => "Callback made",
            Indicator::Cbt007 => "Answered (by duration)",
        }
    }

    /// The indicator a call with this outcome is counted in (besides CBT001).
    pub fn of(o: Outcome) -> Indicator {
        match o {
            Outcome::EndedInIvr => Indicator::Cbt002,
            Outcome::Answered => Indicator::Cbt003,
            Outcome::Missed => Indicator::Cbt004,
            Outcome::CallbackRequested => Indicator::Cbt005,
        }
    }

    /// Its row in [`Day`]'s counts by band (CBT007 has none: it is CBT003
    /// by duration).
    fn row(self) -> Option<usize> {
        match self {
            Indicator::Cbt001 => Some(0),
            Indicator::Cbt002 => Some(1),
            Indicator::Cbt003 => Some(2),
            Indicator::Cbt004 => Some(3),
            Indicator::Cbt005 => Some(4),
            Indicator::Cbt006 => Some(5),
            Indicator::Cbt007 => None,
        }
    }
}

/// One practice's figures for one local date.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct Day {
    /// Counts by time band of the indicators in [`Indicator::BY_TIME`], by
    /// their row (use [`Day::band`]).
    pub(crate) bands: [[u64; 9]; 6],
    /// CBT003 by wait bucket and core category.
    pub answered_by_wait: Vec<[u64; 3]>,
    /// CBT007 by duration bucket.
    pub answered_by_duration: Vec<u64>,
    pub answered_waits: Vec<f64>,
    pub abandoned_waits: Vec<f64>,
    pub durations: Vec<f64>,
    pub abandoned_missed: u64,
    pub abandoned_in_ivr: u64,
    pub partial: u64,
}

impl Day {
    /// No calls, with room for these buckets.
    pub fn new(wait: &Buckets, duration: &Buckets) -> Day {
        Day {
            answered_by_wait: vec![[0; 3]; wait.len()],
            answered_by_duration: vec![0; duration.len()],
            ..Day::default()
        }
    }

    /// The day's total of an indicator.
    pub fn total(&self, i: Indicator) -> u64 {
        match i.row() {
            Some(r) => self.bands[r].iter().sum(),
            None => self.answered_by_duration.iter().sum(),
        }
    }

    /// An indicator's count in time band `band` (index into
    /// [`TIME_CATEGORIES`]); CBT007 is not counted by band (0).
    pub fn band(&self, i: Indicator, band: usize) -> u64 {
        i.row().map_or(0, |r| self.bands[r][band])
    }

    /// The count of an indicator in a band, to set it. Panics for CBT007,
    /// which is not counted by band.
    pub fn band_mut(&mut self, i: Indicator, band: usize) -> &mut u64 {
        &mut self.bands[i.row().expect("an indicator counted by band")][band]
    }

    /// Adds another day's figures of the same buckets (several agents, or
    /// a period).
    pub fn merge(&mut self, other: &Day) {
        merge(self, other);
    }

    /// NHS England's checks: CBT001 = CBT002 + CBT003 + CBT004 + CBT005 in
    /// every band, and CBT003 = CBT007 (= CBT003 by wait).
    pub fn reconciles(&self) -> Result<(), String> {
        use Indicator::*;
        for (b, label) in TIME_CATEGORIES.iter().enumerate() {
            let parts = self.band(Cbt002, b) + self.band(Cbt003, b) + self.band(Cbt004, b) + self.band(Cbt005, b);
            if self.band(Cbt001, b) != parts {
                return Err(format!("{label}: CBT001 is {} but CBT002+CBT003+CBT004+CBT005 is {parts}", self.band(Cbt001, b)));
            }
        }
        let by_wait: u64 = self.answered_by_wait.iter().flatten().sum();
        if self.total(Cbt003) != self.total(Cbt007) || by_wait != self.total(Cbt003) {
            return Err(format!(
                "CBT003 is {} by band and {by_wait} by wait, CBT007 is {}",
                self.total(Cbt003),
                self.total(Cbt007)
            ));
        }
        Ok(())
    }
}

/// Accumulates calls into per-practice, per-date figures.
#[derive(Clone, Debug)]
pub struct Aggregator {
    tz: chrono_tz::Tz,
    holidays: BTreeSet<NaiveDate>,
    wait: Buckets,
    duration: Buckets,
    practices: Vec<(String, OrgCodes)>,
    days: BTreeMap<(String, NaiveDate), Day>,
}

fn local(tz: chrono_tz::Tz, t: Timestamp) -> NaiveDateTime {
    t.to_datetime()
        .map(|d| d.with_timezone(&tz).naive_local())
        .unwrap_or_default()
}

impl Aggregator {
    pub fn new(site: &Site) -> Aggregator {
        Aggregator {
            tz: site.timezone,
            holidays: site.bank_holidays.clone(),
            wait: Buckets::new(&site.wait_edges).unwrap_or_else(|_| Buckets::new(&crate::site::DEFAULT_EDGES).expect("default edges")),
            duration: Buckets::new(&site.duration_edges)
                .unwrap_or_else(|_| Buckets::new(&crate::site::DEFAULT_EDGES).expect("default edges")),
            practices: site.practices.iter().map(|p| (p.ods.clone(), p.codes.clone())).collect(),
            days: BTreeMap::new(),
        }
    }

    pub fn wait_buckets(&self) -> &Buckets {
        &self.wait
    }

    pub fn duration_buckets(&self) -> &Buckets {
        &self.duration
    }

    fn day(&mut self, practice: &str, date: NaiveDate) -> &mut Day {
        let (w, d) = (&self.wait, &self.duration);
        self.days
            .entry((practice.to_string(), date))
            .or_insert_with(|| Day::new(w, d))
    }

    /// Counts one finished inbound call.
    pub fn add_call(&mut self, c: &CallRecord) {
        let at = local(self.tz, c.started);
        let band = time_category(at);
        let core = core_category(at, &self.holidays);
        let wait_b = c.wait_s.map(|w| self.wait.index(w));
        let dur_b = c.duration_s.map(|d| self.duration.index(d));
        let day = self.day(&c.practice, at.date());
        *day.band_mut(Indicator::Cbt001, band) += 1;
        *day.band_mut(Indicator::of(c.outcome), band) += 1;
        if c.partial {
            day.partial += 1;
        }
        match c.outcome {
            Outcome::EndedInIvr => {
                if c.abandoned {
                    day.abandoned_in_ivr += 1;
                }
            }
            Outcome::Answered => {
                if let Some(b) = wait_b {
                    day.answered_by_wait[b][core] += 1;
                }
                if let Some(b) = dur_b {
                    day.answered_by_duration[b] += 1;
                }
                day.answered_waits.extend(c.wait_s);
                day.durations.extend(c.duration_s);
            }
            Outcome::Missed => {
                if c.abandoned {
                    day.abandoned_missed += 1;
                    day.abandoned_waits.extend(c.wait_s);
                }
            }
            Outcome::CallbackRequested => {}
        }
    }

    /// Counts a callback made (CBT006), on the date and in the band it was made.
    pub fn add_callback(&mut self, practice: &str, at: Timestamp) {
        let t = local(self.tz, at);
        let band = time_category(t);
        *self.day(practice, t.date()).band_mut(Indicator::Cbt006, band) += 1;
    }

    pub fn days(&self) -> &BTreeMap<(String, NaiveDate), Day> {
        &self.days
    }

    /// Adds a day's figures kept elsewhere (the daemon's store, for days
    /// whose call records retention has pruned).
    pub fn add_day(&mut self, practice: &str, date: NaiveDate, day: &Day) {
        merge(self.day(practice, date), day);
    }

    /// The local date of a timestamp in the site's timezone.
    pub fn local_date(&self, t: Timestamp) -> NaiveDate {
        local(self.tz, t).date()
    }

    /// Practices to report: every configured one, plus `Unassigned` if it
    /// has calls, in configuration order.
    pub fn practice_list(&self) -> Vec<(String, OrgCodes)> {
        let mut out = self.practices.clone();
        if self.days.keys().any(|(p, _)| p == UNASSIGNED) && !out.iter().any(|(p, _)| p == UNASSIGNED) {
            out.push((UNASSIGNED.to_string(), OrgCodes::default()));
        }
        for (p, _) in self.days.keys() {
            if !out.iter().any(|(q, _)| q == p) {
                out.push((p.clone(), OrgCodes::default()));
            }
        }
        out
    }

    /// What the NHS files of these figures are made from.
    pub fn figures(&self) -> export::Figures<'_> {
        export::Figures {
            practices: self.practice_list(),
            days: &self.days,
            wait: &self.wait,
            duration: &self.duration,
        }
    }

    /// The dates with any figures, as a span.
    pub fn span(&self) -> Option<(NaiveDate, NaiveDate)> {
        let min = self.days.keys().map(|(_, d)| *d).min()?;
        let max = self.days.keys().map(|(_, d)| *d).max()?;
        Some((min, max))
    }

    /// Builds the report for `from..=to` (default: the span of the data).
    pub fn report(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Report {
        let span = self.span();
        let from = from.or(span.map(|s| s.0));
        let to = to.or(span.map(|s| s.1));
        let mut practices = Vec::new();
        for (ods, codes) in self.practice_list() {
            let mut total = Day::new(&self.wait, &self.duration);
            let mut months: BTreeMap<String, Day> = BTreeMap::new();
            for ((p, date), day) in &self.days {
                if *p != ods || from.is_some_and(|f| *date < f) || to.is_some_and(|t| *date > t) {
                    continue;
                }
                merge(&mut total, day);
                let m = months
                    .entry(format!("{:04}-{:02}", date.year(), date.month()))
                    .or_insert_with(|| Day::new(&self.wait, &self.duration));
                merge(m, day);
            }
            practices.push(PracticeReport {
                practice: ods.clone(),
                region_code: codes.region.clone(),
                icb_code: codes.icb.clone(),
                sub_icb_location_code: codes.sub_icb.clone(),
                pcn_code: codes.pcn.clone(),
                totals: Indicator::ALL.iter().map(|i| (i.code().to_string(), total.total(*i))).collect(),
                by_time_category: Indicator::BY_TIME
                    .iter()
                    .map(|i| {
                        (
                            i.code().to_string(),
                            TIME_CATEGORIES
                                .iter()
                                .enumerate()
                                .map(|(b, l)| (l.to_string(), total.band(*i, b)))
                                .collect(),
                        )
                    })
                    .collect(),
                cbt003_by_wait: self
                    .wait
                    .labels()
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        (
                            l.clone(),
                            CORE_CATEGORIES
                                .iter()
                                .enumerate()
                                .map(|(c, n)| (n.to_string(), total.answered_by_wait[i][c]))
                                .collect(),
                        )
                    })
                    .collect(),
                cbt007_by_duration: self
                    .duration
                    .labels()
                    .iter()
                    .zip(&total.answered_by_duration)
                    .map(|(l, n)| (l.clone(), *n))
                    .collect(),
                months: months
                    .iter()
                    .map(|(m, d)| MonthReport {
                        month: m.clone(),
                        dpn: Dpn::of(d),
                    })
                    .collect(),
                dpn: Dpn::of(&total),
                partial_calls: total.partial,
            });
        }
        Report {
            timezone: self.tz.name().to_string(),
            from,
            to,
            wait_buckets: self.wait.labels().to_vec(),
            duration_buckets: self.duration.labels().to_vec(),
            practices,
        }
    }
}

fn merge(into: &mut Day, d: &Day) {
    for i in 0..6 {
        for b in 0..9 {
            into.bands[i][b] += d.bands[i][b];
        }
    }
    for (a, b) in into.answered_by_wait.iter_mut().zip(&d.answered_by_wait) {
        for c in 0..3 {
            a[c] += b[c];
        }
    }
    for (a, b) in into.answered_by_duration.iter_mut().zip(&d.answered_by_duration) {
        *a += b;
    }
    into.answered_waits.extend(&d.answered_waits);
    into.abandoned_waits.extend(&d.abandoned_waits);
    into.durations.extend(&d.durations);
    into.abandoned_missed += d.abandoned_missed;
    into.abandoned_in_ivr += d.abandoned_in_ivr;
    into.partial += d.partial;
}

/// The nine Data Provision Notice metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dpn {
    /// 1. Call volume (CBT001).
    pub call_volume: u64,
    /// 2. Calls abandoned: the caller hung up before a person answered,
    /// before voicemail, without a callback request.
    pub calls_abandoned: u64,
    /// ... of which while waiting for a person (part of CBT004).
    pub calls_abandoned_waiting: u64,
    /// ... of which during the automated stage (part of CBT002).
    pub calls_abandoned_in_ivr: u64,
    /// 3. Time to answer (CBT003 waits), seconds.
    pub mean_wait_to_answer_s: Option<f64>,
    pub median_wait_to_answer_s: Option<f64>,
    /// 4. Missed calls (CBT004).
    pub missed_calls: u64,
    /// 5. Wait before abandonment (abandoned while waiting), seconds.
    pub mean_wait_before_abandonment_s: Option<f64>,
    pub median_wait_before_abandonment_s: Option<f64>,
    /// 6. Callbacks requested (CBT005).
    pub callbacks_requested: u64,
    /// 7. Callbacks made (CBT006).
    pub callbacks_made: u64,
    /// 8. Call length (CBT007 durations), seconds.
    pub mean_call_length_s: Option<f64>,
    pub median_call_length_s: Option<f64>,
    /// 9. Inbound calls answered (CBT003 = CBT007).
    pub answered_calls: u64,
}

impl Dpn {
    /// The nine metrics of a day's (or a period's merged) figures.
    pub fn of(d: &Day) -> Dpn {
        use Indicator::*;
        Dpn {
            call_volume: d.total(Cbt001),
            calls_abandoned: d.abandoned_missed + d.abandoned_in_ivr,
            calls_abandoned_waiting: d.abandoned_missed,
            calls_abandoned_in_ivr: d.abandoned_in_ivr,
            mean_wait_to_answer_s: mean(&d.answered_waits),
            median_wait_to_answer_s: median(&d.answered_waits),
            missed_calls: d.total(Cbt004),
            mean_wait_before_abandonment_s: mean(&d.abandoned_waits),
            median_wait_before_abandonment_s: median(&d.abandoned_waits),
            callbacks_requested: d.total(Cbt005),
            callbacks_made: d.total(Cbt006),
            mean_call_length_s: mean(&d.durations),
            median_call_length_s: median(&d.durations),
            answered_calls: d.total(Cbt003),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| round3(v.iter().sum::<f64>() / v.len() as f64))
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(round3(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }))
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub timezone: String,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub wait_buckets: Vec<String>,
    pub duration_buckets: Vec<String>,
    pub practices: Vec<PracticeReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PracticeReport {
    pub practice: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icb_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_icb_location_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcn_code: Option<String>,
    pub totals: BTreeMap<String, u64>,
    pub by_time_category: BTreeMap<String, BTreeMap<String, u64>>,
    pub cbt003_by_wait: Vec<(String, BTreeMap<String, u64>)>,
    pub cbt007_by_duration: Vec<(String, u64)>,
    pub dpn: Dpn,
    pub months: Vec<MonthReport>,
    /// Calls of which part was not seen (a leg partial, an inferred end).
    pub partial_calls: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MonthReport {
    pub month: String,
    pub dpn: Dpn,
}

/// The three published file shapes. Column names live here and only here.
pub mod export {
    use super::*;

    pub const DATE: &str = "Date";
    pub const ORG_CODES: [&str; 4] = ["REGION_CODE", "ICB_CODE", "SUB_ICB_LOCATION_CODE", "PCN_CODE"];
    pub const PRACTICE: &str = "PRACTICE_CODE";
    pub const INDICATOR: &str = "Indicator";
    pub const TIME_CATEGORY: &str = "Time_Category";
    pub const DURATION: &str = "Duration";
    pub const WAIT_TIME: &str = "Wait_Time";
    pub const CORE_CATEGORY: &str = "Core_Category";
    pub const VALUE: &str = "Value";
    pub const TOTAL: &str = "TOTAL";

    pub const BY_DAY_AND_TIME_FILE: &str = "by_day_and_time.csv";
    pub const BY_DURATIONS_FILE: &str = "by_durations.csv";
    pub const CALLS_ANSWERED_FILE: &str = "calls_answered_metric.csv";

    /// RFC 4180 field quoting.
    pub fn field(s: &str) -> String {
        if s.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }

    /// Appends a field with RFC 4180 quoting (as [`field`]).
    fn push_field(out: &mut String, s: &str) {
        if s.contains([',', '"', '\r', '\n']) {
            out.push_str(&field(s));
        } else {
            out.push_str(s);
        }
    }

    fn line(fields: &[String]) -> String {
        let mut l = fields.iter().map(|f| field(f)).collect::<Vec<_>>().join(",");
        l.push_str("\r\n");
        l
    }

    /// What the three files are made from: the agent's aggregator
    /// ([`Aggregator::figures`]) or the collector's documents, through this
    /// one writer, so both always write the same rows for the same calls.
    pub struct Figures<'a> {
        /// Practices in the order of the rows, with their organisation codes.
        pub practices: Vec<(String, OrgCodes)>,
        /// Figures by (practice, local date); a missing day has zeros.
        pub days: &'a BTreeMap<(String, NaiveDate), Day>,
        pub wait: &'a Buckets,
        pub duration: &'a Buckets,
    }

    /// The three files, as (file name, CSV text). Every listed practice
    /// gets a row for every date from `from` to `to`, zeros included.
    pub fn files(fig: &Figures<'_>, from: NaiveDate, to: NaiveDate) -> Vec<(&'static str, String)> {
        let practices = &fig.practices;
        let with_codes = practices.iter().any(|(_, c)| *c != OrgCodes::default());
        let head = |rest: &[&str]| {
            let mut h = vec![DATE.to_string()];
            if with_codes {
                h.extend(ORG_CODES.iter().map(|s| s.to_string()));
            }
            h.push(PRACTICE.to_string());
            h.extend(rest.iter().map(|s| s.to_string()));
            line(&h)
        };
        // The fields every row starts with (date, codes, practice), quoted,
        // each followed by its comma: made once per practice and date.
        let lead = |date: &str, ods: &str, codes: &OrgCodes| {
            let mut l = String::with_capacity(32);
            push_field(&mut l, date);
            l.push(',');
            if with_codes {
                for c in [&codes.region, &codes.icb, &codes.sub_icb, &codes.pcn] {
                    push_field(&mut l, c.as_deref().unwrap_or(""));
                    l.push(',');
                }
            }
            push_field(&mut l, ods);
            l.push(',');
            l
        };
        // A row: the lead, then the fields joined by commas, then CRLF (the
        // same bytes as `line` of all the fields, without its allocations).
        let row = |out: &mut String, lead: &str, rest: &[&str], value: u64| {
            use std::fmt::Write as _;
            out.push_str(lead);
            for f in rest {
                push_field(out, f);
                out.push(',');
            }
            let _ = write!(out, "{value}");
            out.push_str("\r\n");
        };
        let mut by_time = head(&[INDICATOR, TIME_CATEGORY, VALUE]);
        let mut by_duration = head(&[INDICATOR, DURATION, VALUE]);
        let mut answered = head(&[INDICATOR, WAIT_TIME, CORE_CATEGORY, VALUE]);
        let empty = Day::new(fig.wait, fig.duration);
        let cbt003 = Indicator::Cbt003.code();
        let cbt007 = Indicator::Cbt007.code();
        let mut key = (String::new(), from);
        let mut date = from;
        while date <= to {
            let date_s = date.format("%Y-%m-%d").to_string();
            key.1 = date;
            for (ods, codes) in practices {
                key.0.clear();
                key.0.push_str(ods);
                let day = fig.days.get(&key).unwrap_or(&empty);
                let lead = lead(&date_s, ods, codes);
                for ind in Indicator::BY_TIME {
                    for (b, cat) in TIME_CATEGORIES.iter().enumerate() {
                        row(&mut by_time, &lead, &[ind.code(), cat], day.band(ind, b));
                    }
                }
                let labels = fig.duration.labels();
                for (label, n) in labels.iter().zip(&day.answered_by_duration) {
                    row(&mut by_duration, &lead, &[cbt007, label], *n);
                }
                row(&mut by_duration, &lead, &[cbt007, TOTAL], day.total(Indicator::Cbt007));
                for (c, core) in CORE_CATEGORIES.iter().enumerate() {
                    for (label, counts) in fig.wait.labels().iter().zip(&day.answered_by_wait) {
                        row(&mut answered, &lead, &[cbt003, label, core], counts[c]);
                    }
                    let total: u64 = day.answered_by_wait.iter().map(|x| x[c]).sum();
                    row(&mut answered, &lead, &[cbt003, TOTAL, core], total);
                }
            }
            date = match date.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        vec![
            (BY_DAY_AND_TIME_FILE, by_time),
            (BY_DURATIONS_FILE, by_duration),
            (CALLS_ANSWERED_FILE, answered),
        ]
    }
}

#[cfg(test)]
mod tests;
