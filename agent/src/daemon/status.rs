//! What the daemon says about itself: the status document served at
//! `/status`, its Prometheus rendering at `/metrics`, and the self-diagnosis
//! rules. (The page at `/` is `crate::page`.)

use crate::store::Gap;
use crate::upload::deliver::UploadStatus;
use cbt_proto::site::Site;
use cbt_proto::time::{Micros, SECOND};
use cbt_proto::{EngineStats, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub started_at: String,
    pub uptime_s: u64,
    pub config: String,
    pub sources: Vec<SourceStatus>,
    pub rates: Rates,
    pub sip: SipCounters,
    pub engine: EngineStatus,
    pub store: StoreStatus,
    pub today: Today,
    pub diagnostics: Vec<Diagnostic>,
    pub gaps: Vec<Gap>,
    /// `full`, `partial` (handsets only, no trunk side) or `unknown`.
    pub view: String,
    /// Sending day documents to the supplier's collector.
    #[serde(default)]
    pub upload: crate::upload::deliver::UploadStatus,
    /// Scanners, floods and the memory ceilings.
    #[serde(default)]
    pub hostile: super::hostile::HostileStatus,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    pub kind: String,
    pub linktype: Option<String>,
    pub running: bool,
    /// When it last started delivering packets: after a restart, the end of
    /// the gap.
    #[serde(default)]
    pub since: Option<cbt_proto::Timestamp>,
    pub packets: u64,
    pub bytes: u64,
    pub kernel_dropped: u64,
    pub if_dropped: u64,
    pub queue_dropped: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Rates {
    pub packets_per_s: f64,
    pub sip_messages_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SipCounters {
    pub frames: u64,
    pub messages: u64,
    pub parse_errors: BTreeMap<String, u64>,
    pub non_sip_datagrams: u64,
    pub garbage_bytes: u64,
    pub hep_messages: u64,
    pub tls_records: u64,
    pub invites: u64,
    pub invite_responses: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EngineStatus {
    pub legs_in_progress: u64,
    pub calls_in_progress: u64,
    pub calls_finished: u64,
    pub uncorrelated_legs: u64,
    pub b2bua_ambiguous: u64,
    /// Legs tied to a call by the transfer, pickup and forwarding rules,
    /// and inbound legs left to another agent (`calls.unlisted = "ignore"`).
    #[serde(default)]
    pub transfers: u64,
    #[serde(default)]
    pub pickups: u64,
    #[serde(default)]
    pub forwarded_out: u64,
    #[serde(default)]
    pub not_ours: u64,
    pub last_packet: Option<String>,
    pub reassembly_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoreStatus {
    pub healthy: bool,
    pub error: Option<String>,
    pub dir: String,
    pub size_bytes: u64,
    pub calls_stored: u64,
    /// Finished calls held in memory because the store could not take them.
    pub held_in_memory: u64,
    /// Finished calls dropped because the memory bound was reached.
    pub lost_in_memory: u64,
    pub snapshot_age_s: Option<u64>,
    pub outbox: u64,
    pub recovered: Option<String>,
    /// What could not be read since the service started (damaged journal
    /// bytes, unreadable records), each with where it was kept.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Unreadable values kept in the store's quarantine, and files in the
    /// store's `aside/` directory, from this run or earlier ones.
    #[serde(default)]
    pub kept_aside_records: u64,
    #[serde(default)]
    pub kept_aside_files: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Today {
    pub date: String,
    pub practices: Vec<TodayPractice>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TodayPractice {
    pub practice: String,
    pub inbound: u64,
    pub answered: u64,
    pub missed: u64,
    pub ended_in_ivr: u64,
    pub callback_requested: u64,
    pub callbacks_made: u64,
    pub abandoned: u64,
    /// Per time band: [answered, missed, ended_in_ivr, callback_requested].
    pub by_band: Vec<(String, [u64; 4])>,
}

impl TodayPractice {
    /// Today's total of an indicator.
    pub fn total(&self, i: cbt_proto::metrics::Indicator) -> u64 {
        use cbt_proto::metrics::Indicator::*;
        match i {
            Cbt001 => self.inbound,
            Cbt002 => self.ended_in_ivr,
            Cbt003 | Cbt007 => self.answered,
            Cbt004 => self.missed,
            Cbt005 => self.callback_requested,
            Cbt006 => self.callbacks_made,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub code: String,
    /// `error` or `warning`.
    pub severity: String,
    pub message: String,
}

impl Diagnostic {
    pub fn warn(code: &str, message: String) -> Diagnostic {
        Diagnostic {
            code: code.into(),
            severity: "warning".into(),
            message,
        }
    }

    pub fn error(code: &str, message: String) -> Diagnostic {
        Diagnostic {
            code: code.into(),
            severity: "error".into(),
            message,
        }
    }
}

/// Every diagnostic code, so `/metrics` reports each as 0 or 1.
pub const DIAGNOSTIC_CODES: &[&str] = &[
    "capture_error",
    "pcap_drops",
    "queue_drops",
    "one_way",
    "tls_only",
    "quiet",
    "parse_errors",
    "store_error",
    "snapshot_stale",
    "partial_view",
    "no_source",
    "store_format",
    "store_kept_aside",
    "upload_parked",
    "upload_failing",
    "scanner",
    "memory_shed",
    "hep_rejected",
];

/// A label value escaped for the Prometheus text format.
pub(crate) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric in the Prometheus text exposition format (version 0.0.4):
/// its HELP and TYPE lines, then a line per row (labels, value).
pub(crate) fn write_metric(o: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(o, "{name} {v}");
        } else {
            let _ = writeln!(o, "{name}{{{labels}}} {v}");
        }
    }
}

/// Prometheus text exposition format (version 0.0.4).
pub fn prometheus(s: &Status) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| write_metric(&mut o, name, kind, help, rows);
    let src = |f: fn(&SourceStatus) -> u64| -> Vec<(String, f64)> {
        s.sources
            .iter()
            .map(|x| (format!("source=\"{}\",kind=\"{}\"", esc(&x.name), x.kind), f(x) as f64))
            .collect()
    };
    metric("cbt_up", "gauge", "1 while the agent runs.", vec![(String::new(), 1.0)]);
    metric("cbt_uptime_seconds", "gauge", "Seconds since the agent started.", vec![(String::new(), s.uptime_s as f64)]);
    metric("cbt_source_up", "gauge", "1 if the capture source is running.", src(|x| x.running as u64));
    metric("cbt_packets_total", "counter", "Packets received by each source.", src(|x| x.packets));
    metric("cbt_kernel_dropped_total", "counter", "Packets dropped by the kernel (pcap stats).", src(|x| x.kernel_dropped));
    metric("cbt_interface_dropped_total", "counter", "Packets dropped by the interface (pcap stats).", src(|x| x.if_dropped));
    metric("cbt_queue_dropped_total", "counter", "Packets dropped because the engine queue was full.", src(|x| x.queue_dropped));
    metric("cbt_sip_messages_total", "counter", "SIP messages framed.", vec![(String::new(), s.sip.messages as f64)]);
    metric(
        "cbt_parse_errors_total",
        "counter",
        "SIP messages that could not be read, by reason.",
        s.sip.parse_errors.iter().map(|(k, v)| (format!("reason=\"{}\"", esc(k)), *v as f64)).collect(),
    );
    metric("cbt_tls_records_total", "counter", "TLS records seen on port 5061 (unreadable SIP).", vec![(String::new(), s.sip.tls_records as f64)]);
    metric("cbt_legs_in_progress", "gauge", "SIP INVITE legs in progress.", vec![(String::new(), s.engine.legs_in_progress as f64)]);
    metric("cbt_calls_in_progress", "gauge", "Inbound calls in progress.", vec![(String::new(), s.engine.calls_in_progress as f64)]);
    metric("cbt_store_healthy", "gauge", "1 if the store takes writes.", vec![(String::new(), s.store.healthy as u64 as f64)]);
    metric("cbt_store_size_bytes", "gauge", "Size of the store on disk.", vec![(String::new(), s.store.size_bytes as f64)]);
    metric("cbt_calls_held_in_memory", "gauge", "Finished calls waiting for the store.", vec![(String::new(), s.store.held_in_memory as f64)]);
    metric(
        "cbt_snapshot_age_seconds",
        "gauge",
        "Seconds since the engine state was last saved.",
        s.store.snapshot_age_s.map(|a| vec![(String::new(), a as f64)]).unwrap_or_default(),
    );
    let mut today = Vec::new();
    let mut indicators = Vec::new();
    for p in &s.today.practices {
        let l = |o: &str| format!("practice=\"{}\",outcome=\"{o}\"", esc(&p.practice));
        today.push((l("answered"), p.answered as f64));
        today.push((l("missed"), p.missed as f64));
        today.push((l("ended_in_ivr"), p.ended_in_ivr as f64));
        today.push((l("callback_requested"), p.callback_requested as f64));
        let i = |c: &str| format!("practice=\"{}\",indicator=\"{c}\"", esc(&p.practice));
        for ind in cbt_proto::metrics::Indicator::ALL {
            indicators.push((i(ind.code()), p.total(ind) as f64));
        }
    }
    metric("cbt_calls_today", "gauge", "Today's inbound calls by outcome (local date).", today);
    metric("cbt_indicator_today", "gauge", "Today's CBT indicators (local date).", indicators);
    metric(
        "cbt_diagnostic",
        "gauge",
        "1 while a diagnostic condition holds.",
        DIAGNOSTIC_CODES
            .iter()
            .map(|c| (format!("code=\"{c}\""), s.diagnostics.iter().any(|d| d.code == *c) as u64 as f64))
            .collect(),
    );
    metric("cbt_view_partial", "gauge", "1 if only part of the calls can be seen (handsets only).", vec![(String::new(), (s.view == "partial") as u64 as f64)]);
    let u = &s.upload;
    if u.enabled {
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric("cbt_upload_outbox", "gauge", "Day documents waiting to be delivered (parked included).", one(u.outbox));
        metric("cbt_upload_parked", "gauge", "Day documents the collector refused, kept until a reload.", one(u.parked.len() as u64));
        metric("cbt_upload_delivered_total", "counter", "Day documents the collector took since the agent started.", one(u.delivered));
        metric("cbt_upload_duplicates_total", "counter", "Of which the collector already had.", one(u.duplicates));
        metric("cbt_upload_retries_total", "counter", "Delivery attempts that failed and are retried.", one(u.retries));
        let age = |at: &Option<String>| {
            at.as_deref()
                .and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok())
                .map_or(-1.0, |a| (chrono::Utc::now().timestamp() - a.timestamp()) as f64)
        };
        metric(
            "cbt_upload_last_success_age_seconds",
            "gauge",
            "Seconds since the last delivery (-1: none yet).",
            vec![(String::new(), age(&u.last_success.as_ref().map(|d| d.at.clone())))],
        );
        let oldest = u
            .oldest_undelivered
            .as_deref()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .map_or(0.0, |d| (chrono::Utc::now().date_naive() - d).num_days().max(0) as f64);
        metric("cbt_upload_oldest_undelivered_days", "gauge", "Age in days of the oldest undelivered day (0: none or today).", vec![(String::new(), oldest)]);
    }
    o.push_str(&super::hostile::prometheus(&s.hostile));
    o
}


/// What the daemon gathered for one status refresh: the engine's counters,
/// the capture sources, the store, today's figures and the uploader.
pub struct Observed<'a> {
    pub now: Timestamp,
    pub config_path: &'a str,
    pub stats: &'a EngineStats,
    pub reassembly_bytes: u64,
    pub sources: Vec<SourceStatus>,
    pub store: StoreStatus,
    pub today: Today,
    pub gaps: Vec<Gap>,
    pub hostile: super::hostile::HostileStatus,
    pub upload: UploadStatus,
}

/// The settings the diagnosis rules read.
pub struct Rules<'a> {
    pub site: &'a Site,
    /// How long core hours may pass without an INVITE (`agent.quiet`).
    pub quiet: Micros,
    pub snapshot_every: Micros,
    /// At most this many finished calls wait in memory for the store.
    pub memory_calls: usize,
    pub store_retry: Micros,
}

/// Counters at one refresh, for rates and the 10-minute window.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Timestamp,
    invites: u64,
    responses: u64,
    messages: u64,
    tls: u64,
    frames: u64,
}

/// Builds the status document from what the daemon observed: rates over the
/// last refresh, the last 10 minutes for the signalling rules, the view
/// (full, partial) and every diagnostic. Holds no I/O, so its rules are
/// tested with made-up observations (see `tests` below).
pub struct StatusBuilder {
    started: Timestamp,
    last_invite_at: Timestamp,
    window: VecDeque<Sample>,
}

impl StatusBuilder {
    pub fn new(started: Timestamp) -> StatusBuilder {
        StatusBuilder {
            started,
            last_invite_at: started,
            window: VecDeque::new(),
        }
    }

    pub fn build(&mut self, o: Observed<'_>, rules: &Rules<'_>) -> Status {
        let t = o.now;
        let st = o.stats;
        let invites = st.sip.requests.get("INVITE").copied().unwrap_or(0);
        let now = Sample {
            at: t,
            invites,
            responses: st.sip.responses.values().sum(),
            messages: st.sip.messages,
            tls: st.wire.tls_records,
            frames: o.sources.iter().map(|s| s.packets).sum(),
        };
        if self.window.back().is_some_and(|w| invites > w.invites) {
            self.last_invite_at = t;
        }
        let prev = self.window.back().copied().unwrap_or(now);
        self.window.push_back(now);
        while self.window.front().is_some_and(|w| t.since(w.at) > 600 * SECOND) {
            self.window.pop_front();
        }
        let first = *self.window.front().expect("just pushed");
        let secs = (t.since(prev.at) as f64 / 1e6).max(1e-3);
        let calls = st.calls.clone().unwrap_or_default();
        let mut s = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started.to_rfc3339(),
            uptime_s: (t.since(self.started) / SECOND).max(0) as u64,
            config: o.config_path.to_string(),
            sources: o.sources,
            rates: Rates {
                packets_per_s: if prev.at == t { 0.0 } else { now.frames.saturating_sub(prev.frames) as f64 / secs },
                sip_messages_per_s: if prev.at == t { 0.0 } else { now.messages.saturating_sub(prev.messages) as f64 / secs },
            },
            sip: SipCounters {
                frames: now.frames,
                messages: st.sip.messages,
                parse_errors: st.sip.parse_errors.clone(),
                non_sip_datagrams: st.sip.non_sip_datagrams,
                garbage_bytes: st.sip.garbage_bytes,
                hep_messages: st.sip.hep_messages,
                tls_records: now.tls,
                invites,
                invite_responses: now.responses,
            },
            engine: EngineStatus {
                legs_in_progress: st.open_legs as u64,
                calls_in_progress: calls.open_calls,
                calls_finished: calls.calls,
                uncorrelated_legs: calls.uncorrelated_legs,
                b2bua_ambiguous: calls.b2bua_ambiguous,
                transfers: calls.transfers,
                pickups: calls.pickups,
                forwarded_out: calls.forwarded_out,
                not_ours: calls.not_ours,
                last_packet: st.last_packet.map(|t| t.to_rfc3339()),
                reassembly_bytes: o.reassembly_bytes,
            },
            store: o.store,
            today: o.today,
            diagnostics: Vec::new(),
            gaps: o.gaps,
            view: if calls.calls >= 5 && !rules.site.carrier.is_empty() && calls.from_configured_carrier == 0 {
                "partial".into()
            } else if calls.calls >= 5 {
                "full".into()
            } else {
                "unknown".into()
            },
            upload: o.upload,
            hostile: o.hostile,
        };
        s.diagnostics = self.diagnose(&s, &first, t, rules);
        s
    }

    fn diagnose(&self, s: &Status, first: &Sample, t: Timestamp, rules: &Rules<'_>) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        if s.sources.is_empty() {
            d.push(Diagnostic::error("no_source", "no capture interface and no HEP listener configured: nothing is observed; set capture.interfaces or hep.listen".into()));
        }
        for src in &s.sources {
            if let Some(e) = &src.error {
                d.push(Diagnostic::error("capture_error", format!("{}: {e}", src.name)));
            }
            if src.kernel_dropped + src.if_dropped > 0 {
                d.push(Diagnostic::warn(
                    "pcap_drops",
                    format!("{}: {} packets dropped by the kernel and {} by the interface; raise capture.buffer_size", src.name, src.kernel_dropped, src.if_dropped),
                ));
            }
            if src.queue_dropped > 0 {
                d.push(Diagnostic::warn("queue_drops", format!("{}: {} packets dropped because the engine fell behind", src.name, src.queue_dropped)));
            }
        }
        let (invites, responses, msgs, tls) = (s.sip.invites - first.invites, s.sip.invite_responses - first.responses, s.sip.messages - first.messages, s.sip.tls_records - first.tls);
        if invites >= 10 && responses == 0 {
            d.push(Diagnostic::warn(
                "one_way",
                format!("{invites} INVITEs and no responses in the last 10 minutes: only one direction of the signalling is seen; check the mirror port copies both directions"),
            ));
        }
        if tls > 0 && msgs == 0 {
            d.push(Diagnostic::warn(
                "tls_only",
                format!("{tls} TLS records on port 5061 and no readable SIP in the last 10 minutes: encrypted SIP cannot be read; have the PBX send HEP (hep.listen)"),
            ));
        }
        let total: u64 = s.sip.parse_errors.values().sum();
        if total > 20 && total * 10 > s.sip.messages {
            d.push(Diagnostic::warn("parse_errors", format!("{total} of {} SIP messages could not be read (see sip.parse_errors)", s.sip.messages)));
        }
        if let Some(e) = &s.store.error {
            d.push(Diagnostic::error(
                "store_error",
                format!(
                    "the store cannot take writes ({e}); {} finished calls held in memory (at most {}), retrying every {} s",
                    s.store.held_in_memory,
                    rules.memory_calls,
                    rules.store_retry / SECOND
                ),
            ));
        }
        if !s.store.problems.is_empty() {
            d.push(Diagnostic::error(
                "store_format",
                format!(
                    "{} things in the store could not be read and were kept aside in {}/aside or its quarantine (see store.problems); the rest was read and capture goes on",
                    s.store.problems.len(),
                    s.store.dir
                ),
            ));
        } else if s.store.kept_aside_records + s.store.kept_aside_files > 0 {
            d.push(Diagnostic::warn(
                "store_kept_aside",
                format!(
                    "{} unreadable records and {} files from earlier runs are kept aside in the store ({}/aside); see docs/operations.md",
                    s.store.kept_aside_records, s.store.kept_aside_files, s.store.dir
                ),
            ));
        }
        if let Some(age) = s.store.snapshot_age_s {
            if age as i64 * SECOND > 3 * rules.snapshot_every + 10 * SECOND {
                d.push(Diagnostic::warn("snapshot_stale", format!("the engine state was last saved {age} s ago")));
            }
        }
        // no INVITE for a while during core hours
        if let Some(local) = t.to_datetime().map(|x| x.with_timezone(&rules.site.timezone).naive_local()) {
            let core = cbt_proto::metrics::core_category(local, &rules.site.bank_holidays) < 2;
            if core && t.since(self.last_invite_at) >= rules.quiet && t.since(self.started) >= rules.quiet {
                d.push(Diagnostic::warn(
                    "quiet",
                    format!("no INVITE seen for {} minutes during core hours (last: {})", t.since(self.last_invite_at) / 60 / SECOND, self.last_invite_at),
                ));
            }
        }
        if s.view == "partial" {
            d.push(Diagnostic::warn(
                "partial_view",
                "no call has come from a configured carrier address: this looks like a handsets-only view (hosted PBX), so calls that end before ringing a handset are not seen and the figures are partial".into(),
            ));
        }
        d.extend(upload_diagnostics(&s.upload, t));
        d
    }
}

/// What the supplier must know about uploading.
fn upload_diagnostics(u: &UploadStatus, t: Timestamp) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    if !u.enabled {
        return d;
    }
    if !u.parked.is_empty() {
        d.push(Diagnostic::error(
            "upload_parked",
            format!(
                "{} documents refused by the collector and kept (first: {} {}: {}); fix the cause, then `systemctl reload cbt-agent` sends them again",
                u.parked.len(),
                u.parked[0].practice,
                u.parked[0].date,
                u.parked[0].reason
            ),
        ));
    }
    let since = |at: &str| chrono::DateTime::parse_from_rfc3339(at).map(|x| t.micros() / SECOND - x.timestamp()).unwrap_or(0);
    let failing = u.last_error.as_ref().is_some_and(|e| u.last_success.as_ref().is_none_or(|s| s.at < e.at));
    if failing && u.outbox > u.parked.len() as u64 {
        let e = u.last_error.as_ref().expect("failing");
        let stale = u.last_success.as_ref().map_or(i64::MAX, |s| since(&s.at));
        let msg = format!("{} documents not delivered to {} (oldest {}): {}", u.outbox, u.url, u.oldest_undelivered.clone().unwrap_or_default(), e.message);
        if stale > 24 * 3600 {
            d.push(Diagnostic::error("upload_failing", msg));
        } else {
            d.push(Diagnostic::warn("upload_failing", msg));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    //! The diagnosis rules on made-up observations: what a supplier is told
    //! and when, without a capture or a store.

    use super::*;
    use cbt_proto::call::CallStats;
    use cbt_proto::time::MINUTE;

    const SITE: &str = r#"
[[practice]]
ods = "B82005"
numbers = ["01632 960123"]
[network]
carrier = ["192.0.2.1"]
pbx = ["10.20.0.5"]
"#;

    fn site() -> Site {
        let c = crate::config::Config::parse(SITE, std::path::Path::new("site.toml")).unwrap();
        c.site(&cbt_proto::number::Hasher::new([3; 32], "44"))
    }

    /// Tuesday 2026-11-03 10:00 in London (core hours).
    fn tuesday_10am() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-03T10:00:00Z").unwrap()
    }

    struct Feed {
        site: Site,
        builder: StatusBuilder,
        stats: EngineStats,
        store: StoreStatus,
        upload: UploadStatus,
    }

    impl Feed {
        fn new(started: Timestamp) -> Feed {
            Feed {
                site: site(),
                builder: StatusBuilder::new(started),
                stats: EngineStats::default(),
                store: StoreStatus { healthy: true, dir: "/var/lib/cbt-agent".into(), ..StoreStatus::default() },
                upload: UploadStatus::default(),
            }
        }

        fn counts(&mut self, invites: u64, responses: u64, messages: u64) {
            self.stats.sip.requests.insert("INVITE".into(), invites);
            self.stats.sip.responses.insert("200".into(), responses);
            self.stats.sip.messages = messages;
        }

        fn at(&mut self, now: Timestamp) -> Status {
            let o = Observed {
                now,
                config_path: "/etc/cbt-agent/cbt-agent.toml",
                stats: &self.stats,
                reassembly_bytes: 0,
                sources: vec![SourceStatus { name: "eth1".into(), kind: "pcap".into(), running: true, ..SourceStatus::default() }],
                store: self.store.clone(),
                today: Today::default(),
                gaps: Vec::new(),
                hostile: Default::default(),
                upload: self.upload.clone(),
            };
            let rules = Rules { site: &self.site, quiet: 30 * MINUTE, snapshot_every: 30 * SECOND, memory_calls: 10_000, store_retry: 5 * SECOND };
            self.builder.build(o, &rules)
        }
    }

    fn codes(s: &Status) -> Vec<&str> {
        s.diagnostics.iter().map(|d| d.code.as_str()).collect()
    }

    #[test]
    fn rates_are_over_the_last_refresh() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.counts(0, 0, 1_000);
        let s = f.at(t);
        assert_eq!(s.rates.sip_messages_per_s, 0.0, "no rate from a single sample");
        f.counts(0, 0, 1_100);
        let s = f.at(t.add(2 * SECOND));
        assert_eq!(s.rates.sip_messages_per_s, 50.0);
        assert_eq!(s.uptime_s, 2);
    }

    #[test]
    fn invites_without_responses_for_ten_minutes_mean_one_way_capture() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.counts(0, 0, 0);
        f.at(t);
        f.counts(12, 0, 12);
        let s = f.at(t.add(MINUTE));
        assert!(codes(&s).contains(&"one_way"), "{:?}", s.diagnostics);
        assert!(s.diagnostics[0].message.starts_with("12 INVITEs"), "{}", s.diagnostics[0].message);
        // nine invites are not enough evidence
        let mut f = Feed::new(t);
        f.counts(0, 0, 0);
        f.at(t);
        f.counts(9, 0, 9);
        assert!(!codes(&f.at(t.add(MINUTE))).contains(&"one_way"));
        // with responses, both directions are seen
        let mut f = Feed::new(t);
        f.counts(0, 0, 0);
        f.at(t);
        f.counts(12, 30, 42);
        assert!(!codes(&f.at(t.add(MINUTE))).contains(&"one_way"));
    }

    #[test]
    fn the_one_way_window_forgets_what_is_older_than_ten_minutes() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.counts(0, 0, 0);
        f.at(t);
        f.counts(12, 0, 12);
        assert!(codes(&f.at(t.add(MINUTE))).contains(&"one_way"));
        // responses resume; twelve minutes later the old INVITEs have left the window
        f.counts(14, 2, 16);
        f.at(t.add(2 * MINUTE));
        f.counts(14, 2, 16);
        assert!(!codes(&f.at(t.add(13 * MINUTE))).contains(&"one_way"));
    }

    #[test]
    fn no_invite_in_core_hours_is_quiet_but_not_at_the_weekend() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.counts(3, 3, 6);
        f.at(t);
        assert!(!codes(&f.at(t.add(29 * MINUTE))).contains(&"quiet"));
        let s = f.at(t.add(31 * MINUTE));
        assert!(codes(&s).contains(&"quiet"), "{:?}", s.diagnostics);
        // an INVITE resets it
        f.counts(4, 4, 8);
        assert!(!codes(&f.at(t.add(32 * MINUTE))).contains(&"quiet"));
        // Sunday 10:00 is not core hours
        let sunday = Timestamp::parse_rfc3339("2026-11-08T10:00:00Z").unwrap();
        let mut f = Feed::new(sunday);
        f.counts(3, 3, 6);
        f.at(sunday);
        assert!(!codes(&f.at(sunday.add(3 * 60 * MINUTE))).contains(&"quiet"));
    }

    #[test]
    fn calls_never_from_the_carrier_mean_a_partial_view() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.stats.calls = Some(CallStats { calls: 4, ..CallStats::default() });
        assert_eq!(f.at(t).view, "unknown", "four calls are not enough to judge");
        f.stats.calls = Some(CallStats { calls: 5, ..CallStats::default() });
        let s = f.at(t.add(SECOND));
        assert_eq!(s.view, "partial");
        assert!(codes(&s).contains(&"partial_view"));
        f.stats.calls = Some(CallStats { calls: 6, from_configured_carrier: 1, ..CallStats::default() });
        let s = f.at(t.add(2 * SECOND));
        assert_eq!(s.view, "full");
        assert!(!codes(&s).contains(&"partial_view"));
    }

    #[test]
    fn a_failing_store_says_how_many_calls_wait_in_memory() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.store.healthy = false;
        f.store.error = Some("the disk holding /var/lib/cbt-agent is full".into());
        f.store.held_in_memory = 37;
        let s = f.at(t);
        let d = s.diagnostics.iter().find(|d| d.code == "store_error").expect("store_error");
        assert_eq!(d.severity, "error");
        assert!(d.message.contains("37 finished calls held in memory (at most 10000), retrying every 5 s"), "{}", d.message);
    }

    #[test]
    fn an_upload_failing_for_a_day_is_an_error_and_before_that_a_warning() {
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.upload = UploadStatus {
            enabled: true,
            url: "https://collector.example/v1/days".into(),
            outbox: 3,
            oldest_undelivered: Some("2026-11-01".into()),
            last_success: Some(crate::upload::deliver::Delivery { at: "2026-11-03T08:00:00Z".into(), ..Default::default() }),
            last_error: Some(crate::upload::deliver::Failure { at: "2026-11-03T09:59:00Z".into(), message: "connection refused".into() }),
            ..UploadStatus::default()
        };
        let s = f.at(t);
        let d = s.diagnostics.iter().find(|d| d.code == "upload_failing").expect("upload_failing");
        assert_eq!(d.severity, "warning");
        assert_eq!(d.message, "3 documents not delivered to https://collector.example/v1/days (oldest 2026-11-01): connection refused");
        f.upload.last_success.as_mut().unwrap().at = "2026-11-02T09:00:00Z".into();
        let s = f.at(t.add(SECOND));
        assert_eq!(s.diagnostics.iter().find(|d| d.code == "upload_failing").unwrap().severity, "error");
        // delivered since the failure: nothing to say
        f.upload.last_success.as_mut().unwrap().at = "2026-11-03T09:59:30Z".into();
        assert!(!codes(&f.at(t.add(2 * SECOND))).contains(&"upload_failing"));
    }

    #[test]
    fn every_diagnostic_code_is_listed_for_prometheus() {
        // make as many as the builder can, and check /metrics knows them
        let t = tuesday_10am();
        let mut f = Feed::new(t);
        f.store.error = Some("x".into());
        f.store.problems = vec!["journal 3: 40 bytes".into()];
        f.store.snapshot_age_s = Some(600);
        f.stats.sip.parse_errors.insert("bad start line".into(), 50);
        f.stats.calls = Some(CallStats { calls: 5, ..CallStats::default() });
        f.stats.wire.tls_records = 3;
        f.counts(0, 0, 0);
        f.at(t);
        f.counts(12, 0, 12);
        let s = f.at(t.add(5 * MINUTE));
        assert!(s.diagnostics.len() >= 6, "{:?}", s.diagnostics);
        for d in &s.diagnostics {
            assert!(DIAGNOSTIC_CODES.contains(&d.code.as_str()), "{} is not in DIAGNOSTIC_CODES", d.code);
        }
    }
}
