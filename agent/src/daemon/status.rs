//! What the daemon says about itself: the status document served at
//! `/status`, its Prometheus rendering at `/metrics`, and the self-diagnosis
//! rules. (The page at `/` is `crate::page`.)

use crate::store::Gap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition format (version 0.0.4).
pub fn prometheus(s: &Status) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(o, "{name} {v}");
            } else {
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
    };
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

