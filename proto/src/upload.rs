//! The day document: what an agent sends its supplier's collector for one
//! practice and one local date. Versioned, and shared by both sides, so that
//! the collector's NHS files are made from exactly what the agent counted
//! (`to_day` gives back the agent's [`Day`] and both call the same CSV
//! writer, [`crate::metrics::export`]).
//!
//! It holds aggregates only: counts by band and bucket, the waits and call
//! lengths (seconds) that the nine DPN metrics' means and medians need, and
//! the day's data quality. Never a number, a name, a hash of a number or a
//! Call-ID. See docs/upload-format.md and docs/upload-format.schema.json.

use crate::metrics::{Buckets, Day, CORE_CATEGORIES, TIME_CATEGORIES};
use crate::metrics::Indicator;
use crate::site::{OrgCodes, UNASSIGNED};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `schema` member of every day document.
pub const SCHEMA: &str = "cbt-agent/day";
/// The version this build writes (and the only one it reads).
pub const VERSION: u32 = 1;

/// Who sent a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// The agent's name (`upload.agent_id`, by default the host name).
    pub id: String,
    /// The agent's release.
    pub version: String,
}

/// Organisation codes published with NHS files (optional per practice).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgCodesDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icb_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_icb_location_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcn_code: Option<String>,
}

impl OrgCodesDoc {
    pub fn is_empty(&self) -> bool {
        *self == OrgCodesDoc::default()
    }
}

impl From<&OrgCodes> for OrgCodesDoc {
    fn from(c: &OrgCodes) -> Self {
        OrgCodesDoc {
            region_code: c.region.clone(),
            icb_code: c.icb.clone(),
            sub_icb_location_code: c.sub_icb.clone(),
            pcn_code: c.pcn.clone(),
        }
    }
}

impl From<&OrgCodesDoc> for OrgCodes {
    fn from(c: &OrgCodesDoc) -> Self {
        OrgCodes {
            region: c.region_code.clone(),
            icb: c.icb_code.clone(),
            sub_icb: c.sub_icb_location_code.clone(),
            pcn: c.pcn_code.clone(),
        }
    }
}

/// Upper edges (seconds) of the wait and duration buckets the counts use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketEdges {
    pub wait: Vec<u32>,
    pub duration: Vec<u32>,
}

/// Inputs of the DPN metrics that counts cannot give: every wait and call
/// length of the day (seconds, to the microsecond), so that a month's means
/// and medians can be computed exactly from its days.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpnInputs {
    /// Waits of answered calls (CBT003).
    pub answered_waits_s: Vec<f64>,
    /// Waits of calls abandoned while waiting for a person.
    pub abandoned_waits_s: Vec<f64>,
    /// Conversation lengths of answered calls (CBT007).
    pub durations_s: Vec<f64>,
    /// Missed calls the caller abandoned while waiting for a person.
    pub abandoned_waiting: u64,
    /// Calls ended in the IVR by the caller hanging up.
    pub abandoned_in_ivr: u64,
}

/// A stretch of the day the agent did not see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapDoc {
    /// RFC 3339, UTC.
    pub from: String,
    pub to: String,
    /// Minutes of this day inside the gap.
    pub minutes: f64,
    pub reason: String,
}

/// How much of the day the figures rest on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    /// The agent kept an hourly record of its capture this day. False for
    /// days closed by an agent older than 0.2.0: the hour lists below are
    /// then empty and say nothing.
    pub activity_recorded: bool,
    /// Calls part of which was not seen (a restart or drop during the call,
    /// an end never seen).
    pub partial_calls: u64,
    pub capture_gaps: Vec<GapDoc>,
    /// Minutes of the day inside capture gaps.
    pub gap_minutes: f64,
    /// Packets lost before the engine (kernel, interface, queue).
    pub packets_dropped: u64,
    /// Local hours (0-23) in which the agent was not capturing at all.
    pub hours_without_capture: Vec<u8>,
    /// Local hours in which the agent saw only the handsets' side (a hosted
    /// PBX): calls that end before ringing a handset are not seen.
    pub partial_view_hours: Vec<u8>,
    pub sip_messages: u64,
    pub parse_errors: u64,
    /// `parse_errors / sip_messages` (0 when no message).
    pub parse_error_share: f64,
    /// Legs that could have belonged to more than one call (the choice
    /// made is documented in docs/cbt-indicators.md).
    pub b2bua_ambiguous: u64,
}

/// One practice's figures for one local date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayDocument {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Always [`VERSION`] for this shape.
    pub version: u32,
    pub agent: AgentInfo,
    /// ODS code, or `Unassigned` (calls on a shared system to numbers of no
    /// configured practice).
    pub practice: String,
    #[serde(default, skip_serializing_if = "OrgCodesDoc::is_empty")]
    pub org_codes: OrgCodesDoc,
    /// Local date (`timezone`), YYYY-MM-DD.
    pub date: NaiveDate,
    /// IANA name; every count is by local time there.
    pub timezone: String,
    /// Starts at 1 per practice and date; a changed document for the same
    /// day always has a higher one.
    pub revision: u64,
    /// The day is over and settled: this revision is what the agent will
    /// report unless a late call changes it (a higher revision, also final).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// When the agent made it (RFC 3339, UTC).
    pub generated_at: String,
    pub buckets: BucketEdges,
    /// CBT001-CBT006 by `Time_Category`.
    pub by_time: BTreeMap<String, BTreeMap<String, u64>>,
    /// CBT003 by `Core_Category` then `Wait_Time` bucket.
    pub cbt003_by_wait: BTreeMap<String, BTreeMap<String, u64>>,
    /// CBT007 by `Duration` bucket.
    pub cbt007_by_duration: BTreeMap<String, u64>,
    pub dpn: DpnInputs,
    pub quality: Quality,
}

/// Why a document was refused (the text goes back to the agent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("not a day document: {0}")]
    Syntax(String),
    #[error("`schema` is {0:?}, not \"cbt-agent/day\"")]
    Schema(String),
    #[error("document version {found} is not one this collector reads (it reads version {supported}); upgrade the collector")]
    Version { found: u32, supported: u32 },
    #[error("{0}")]
    Invalid(String),
}

impl DayDocument {
    /// A document for `day` (as the agent's aggregator counted it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent: AgentInfo,
        practice: &str,
        codes: &OrgCodes,
        date: NaiveDate,
        timezone: &str,
        wait: &Buckets,
        duration: &Buckets,
        day: &Day,
        quality: Quality,
    ) -> DayDocument {
        let by_time = Indicator::BY_TIME
            .iter()
            .map(|i| {
                let row = TIME_CATEGORIES
                    .iter()
                    .enumerate()
                    .map(|(b, l)| (l.to_string(), day.band(*i, b)))
                    .collect();
                (i.code().to_string(), row)
            })
            .collect();
        let cbt003_by_wait = CORE_CATEGORIES
            .iter()
            .enumerate()
            .map(|(c, core)| {
                let row = wait.labels().iter().zip(&day.answered_by_wait).map(|(l, n)| (l.clone(), n[c])).collect();
                (core.to_string(), row)
            })
            .collect();
        DayDocument {
            schema: SCHEMA.into(),
            version: VERSION,
            agent,
            practice: practice.to_string(),
            org_codes: codes.into(),
            date,
            timezone: timezone.to_string(),
            revision: 0,
            is_final: false,
            generated_at: String::new(),
            buckets: BucketEdges {
                wait: wait.edges().to_vec(),
                duration: duration.edges().to_vec(),
            },
            by_time,
            cbt003_by_wait,
            cbt007_by_duration: duration.labels().iter().zip(&day.answered_by_duration).map(|(l, n)| (l.clone(), *n)).collect(),
            dpn: DpnInputs {
                answered_waits_s: day.answered_waits.clone(),
                abandoned_waits_s: day.abandoned_waits.clone(),
                durations_s: day.durations.clone(),
                abandoned_waiting: day.abandoned_missed,
                abandoned_in_ivr: day.abandoned_in_ivr,
            },
            quality: Quality {
                partial_calls: day.partial,
                ..quality
            },
        }
    }

    /// Reads and checks a document: its schema, version, structure (every
    /// band, bucket and category present, no other), values and practice
    /// code. Counts that do not reconcile are not an error here (see
    /// [`DayDocument::reconciles`]): they are reported, not refused.
    pub fn parse(bytes: &[u8]) -> Result<DayDocument, DocError> {
        #[derive(Deserialize)]
        struct Head {
            schema: Option<serde_json::Value>,
            version: Option<serde_json::Value>,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| DocError::Syntax(e.to_string()))?;
        match head.schema.as_ref().and_then(|s| s.as_str()) {
            Some(SCHEMA) => {}
            other => return Err(DocError::Schema(other.map_or_else(|| "missing".to_string(), str::to_string))),
        }
        match head.version.as_ref().and_then(|v| v.as_u64()) {
            Some(v) if v == VERSION as u64 => {}
            Some(v) => return Err(DocError::Version { found: v.min(u32::MAX as u64) as u32, supported: VERSION }),
            None => return Err(DocError::Invalid("`version` is missing or not a number".into())),
        }
        let doc: DayDocument = serde_json::from_slice(bytes).map_err(|e| DocError::Syntax(e.to_string()))?;
        doc.check()?;
        Ok(doc)
    }

    fn check(&self) -> Result<(), DocError> {
        let bad = |m: String| Err(DocError::Invalid(m));
        if self.practice != UNASSIGNED && !is_ods(&self.practice) {
            return bad(format!("`practice` {:?} is not an ODS practice code (a letter and five digits) nor \"Unassigned\"", self.practice));
        }
        if self.revision == 0 {
            return bad("`revision` starts at 1".into());
        }
        if self.agent.id.trim().is_empty() || self.agent.id.len() > 128 {
            return bad("`agent.id` must be 1 to 128 characters".into());
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!("`timezone` {:?} is not an IANA time zone", self.timezone));
        }
        if chrono::DateTime::parse_from_rfc3339(&self.generated_at).is_err() {
            return bad(format!("`generated_at` {:?} is not an RFC 3339 time", self.generated_at));
        }
        let wait = Buckets::new(&self.buckets.wait).map_err(|e| DocError::Invalid(format!("`buckets.wait`: {e}")))?;
        let duration = Buckets::new(&self.buckets.duration).map_err(|e| DocError::Invalid(format!("`buckets.duration`: {e}")))?;
        let keys = |m: &BTreeMap<String, u64>, want: &[String], what: &str| -> Result<(), DocError> {
            let mut got: Vec<&String> = m.keys().collect();
            let mut w: Vec<&String> = want.iter().collect();
            got.sort();
            w.sort();
            if got != w {
                return Err(DocError::Invalid(format!("{what} must have exactly the keys {want:?}, has {:?}", m.keys().collect::<Vec<_>>())));
            }
            Ok(())
        };
        let bands: Vec<String> = TIME_CATEGORIES.iter().map(|s| s.to_string()).collect();
        let codes: Vec<String> = Indicator::BY_TIME.iter().map(|i| i.code().to_string()).collect();
        if self.by_time.keys().collect::<Vec<_>>() != codes.iter().collect::<Vec<_>>() {
            return bad(format!("`by_time` must have exactly the indicators {codes:?}"));
        }
        for (i, row) in &self.by_time {
            keys(row, &bands, &format!("`by_time.{i}`"))?;
        }
        let cores: Vec<String> = CORE_CATEGORIES.iter().map(|s| s.to_string()).collect();
        if self.cbt003_by_wait.len() != cores.len() || !cores.iter().all(|c| self.cbt003_by_wait.contains_key(c)) {
            return bad(format!("`cbt003_by_wait` must have exactly the categories {cores:?}"));
        }
        for (c, row) in &self.cbt003_by_wait {
            keys(row, wait.labels(), &format!("`cbt003_by_wait.{c}`"))?;
        }
        keys(&self.cbt007_by_duration, duration.labels(), "`cbt007_by_duration`")?;
        let d = &self.dpn;
        for (name, list) in [("answered_waits_s", &d.answered_waits_s), ("abandoned_waits_s", &d.abandoned_waits_s), ("durations_s", &d.durations_s)] {
            if list.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return bad(format!("`dpn.{name}` holds a negative or non-finite number"));
            }
        }
        let q = &self.quality;
        if !q.gap_minutes.is_finite() || q.gap_minutes < 0.0 || !(0.0..=1.0).contains(&q.parse_error_share) {
            return bad("`quality.gap_minutes` or `quality.parse_error_share` is out of range".into());
        }
        if q.hours_without_capture.iter().chain(&q.partial_view_hours).any(|h| *h > 23) {
            return bad("hours in `quality` are 0 to 23".into());
        }
        Ok(())
    }

    /// The figures as the agent's aggregator keeps them.
    pub fn to_day(&self) -> Day {
        let wait = Buckets::new(&self.buckets.wait).expect("checked");
        let duration = Buckets::new(&self.buckets.duration).expect("checked");
        let mut day = Day::new(&wait, &duration);
        for i in Indicator::BY_TIME {
            for (b, label) in TIME_CATEGORIES.iter().enumerate() {
                *day.band_mut(i, b) = self.by_time.get(i.code()).and_then(|r| r.get(*label)).copied().unwrap_or(0);
            }
        }
        for (c, core) in CORE_CATEGORIES.iter().enumerate() {
            for (w, label) in wait.labels().iter().enumerate() {
                day.answered_by_wait[w][c] = self.cbt003_by_wait.get(*core).and_then(|r| r.get(label)).copied().unwrap_or(0);
            }
        }
        for (w, label) in duration.labels().iter().enumerate() {
            day.answered_by_duration[w] = self.cbt007_by_duration.get(label).copied().unwrap_or(0);
        }
        day.answered_waits = self.dpn.answered_waits_s.clone();
        day.abandoned_waits = self.dpn.abandoned_waits_s.clone();
        day.durations = self.dpn.durations_s.clone();
        day.abandoned_missed = self.dpn.abandoned_waiting;
        day.abandoned_in_ivr = self.dpn.abandoned_in_ivr;
        day.partial = self.quality.partial_calls;
        day
    }

    /// NHS England's check: CBT001 = CBT002 + CBT003 + CBT004 + CBT005, and
    /// CBT003 = CBT007. `Err` says what does not add up.
    pub fn reconciles(&self) -> Result<(), String> {
        self.to_day().reconciles()
    }

    /// The document's content without what changes at every send (its
    /// revision, finality and time of making): equal for equal figures.
    pub fn content_key(&self) -> Vec<u8> {
        let mut d = self.clone();
        d.revision = 0;
        d.is_final = false;
        d.generated_at = String::new();
        serde_json::to_vec(&d).expect("a document serialises")
    }
}

/// The NHS files' figures made from day documents: several agents'
/// documents of one practice-day are summed (a supplier may split one
/// practice's feed), practices are in code order with `Unassigned` last.
pub struct DocFigures {
    pub practices: Vec<(String, OrgCodes)>,
    pub days: BTreeMap<(String, NaiveDate), Day>,
    pub wait: Buckets,
    pub duration: Buckets,
}

impl DocFigures {
    /// `Err` when the documents count waits or durations in different
    /// buckets (their rows could not share the files).
    pub fn from_documents<'a>(docs: impl IntoIterator<Item = &'a DayDocument>) -> Result<DocFigures, String> {
        let mut edges: Option<&BucketEdges> = None;
        let mut days: BTreeMap<(String, NaiveDate), Day> = BTreeMap::new();
        let mut codes: BTreeMap<String, OrgCodes> = BTreeMap::new();
        for d in docs {
            match edges {
                None => edges = Some(&d.buckets),
                Some(e) if *e != d.buckets => {
                    return Err(format!(
                        "documents use different buckets ({:?} and {:?}, e.g. {} {}): make the agents' [buckets] the same",
                        e, d.buckets, d.practice, d.date
                    ))
                }
                Some(_) => {}
            }
            let day = d.to_day();
            match days.get_mut(&(d.practice.clone(), d.date)) {
                Some(sum) => sum.merge(&day),
                None => {
                    days.insert((d.practice.clone(), d.date), day);
                }
            }
            let c = codes.entry(d.practice.clone()).or_default();
            if *c == OrgCodes::default() {
                *c = (&d.org_codes).into();
            }
        }
        let default_edges = crate::site::DEFAULT_EDGES.to_vec();
        let (w, du) = edges.map_or((default_edges.clone(), default_edges), |e| (e.wait.clone(), e.duration.clone()));
        let mut practices: Vec<(String, OrgCodes)> = codes.into_iter().filter(|(p, _)| p != UNASSIGNED).collect();
        if days.keys().any(|(p, _)| p == UNASSIGNED) {
            practices.push((UNASSIGNED.to_string(), OrgCodes::default()));
        }
        Ok(DocFigures {
            practices,
            days,
            wait: Buckets::new(&w).map_err(|e| format!("wait buckets: {e}"))?,
            duration: Buckets::new(&du).map_err(|e| format!("duration buckets: {e}"))?,
        })
    }

    /// What [`crate::metrics::export::files`] writes from.
    pub fn figures(&self) -> crate::metrics::export::Figures<'_> {
        crate::metrics::export::Figures {
            practices: self.practices.clone(),
            days: &self.days,
            wait: &self.wait,
            duration: &self.duration,
        }
    }

    /// The dates with figures, as a span.
    pub fn span(&self) -> Option<(NaiveDate, NaiveDate)> {
        Some((self.days.keys().map(|(_, d)| *d).min()?, self.days.keys().map(|(_, d)| *d).max()?))
    }
}

/// ODS practice codes: a letter and five digits.
pub fn is_ods(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests;
