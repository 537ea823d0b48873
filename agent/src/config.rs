//! The site configuration: one TOML file, validated with errors that name the
//! file, the line, the key, and what to write instead.
//!
//! ```toml
//! timezone = "Europe/London"        # default
//! [[practice]]
//! ods = "B82005"
//! numbers = ["01632 960123", "01632 960124"]
//! [network]
//! carrier = ["192.0.2.1", "192.0.2.8/29"]
//! pbx = ["10.20.0.5"]
//! staff = ["10.20.1.0/24", "10.20.2.10-10.20.2.40"]
//! automated = ["10.20.0.6"]
//! ```
//!
//! See `docs/configuration.md` for every key.

use cbt_proto::number::{self, Hasher};
use cbt_proto::site::{self, AddrMatch, CallbackWindow, ExtPattern, OrgCodes, PracticeSpec, Site, SiteSpec};
use cbt_proto::time::{Micros, Timestamp, MINUTE, SECOND};
use chrono::NaiveDate;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

mod guard;
pub use guard::GuardSettings;

type S<T> = Spanned<T>;

mod page;
pub use page::{LanConfig, PageConfig, StaffingConfig, DEFAULT_NATIONAL};

#[derive(Deserialize, Default)]
struct Raw {
    timezone: Option<S<String>>,
    country_code: Option<S<String>>,
    #[serde(default)]
    practice: Vec<RawPractice>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    automated: RawAutomated,
    #[serde(default)]
    callbacks: RawCallbacks,
    #[serde(default)]
    correlation: RawCorrelation,
    #[serde(default)]
    calendar: RawCalendar,
    #[serde(default)]
    buckets: RawBuckets,
    #[serde(default)]
    privacy: RawPrivacy,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    hep: RawHep,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    diagnostics: RawDiagnostics,
    #[serde(default)]
    calls: RawCalls,
    upload: Option<RawUpload>,
    #[serde(default)]
    page: page::RawPage,
    #[serde(default)]
    staffing: page::RawStaffing,
    #[serde(default)]
    scanners: guard::RawScanners,
    #[serde(default)]
    limits: guard::RawLimits,
    /// The line of the `[network]` header, for messages about the section.
    #[serde(skip)]
    network_line: Option<usize>,
}

#[derive(Deserialize, Default)]
struct RawUpload {
    url: Option<S<String>>,
    token_file: Option<S<String>>,
    ca_file: Option<S<String>>,
    client_cert: Option<S<String>>,
    client_key: Option<S<String>>,
    proxy: Option<S<String>>,
    interval: Option<S<String>>,
    max_backoff: Option<S<String>>,
    timeout: Option<S<String>>,
    agent_id: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawCalls {
    max_duration: Option<S<String>>,
    ring_timeout: Option<S<String>>,
    gap_timeout: Option<S<String>>,
    unlisted: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawCapture {
    #[serde(default)]
    interfaces: Vec<S<String>>,
    filter: Option<S<String>>,
    sip_ports: Option<S<Vec<u16>>>,
    snaplen: Option<S<i64>>,
    buffer_size: Option<S<String>>,
    immediate: Option<bool>,
    read_timeout: Option<S<String>>,
    queue: Option<S<i64>>,
}

#[derive(Deserialize, Default)]
struct RawHep {
    listen: Option<S<String>>,
    receive_buffer: Option<S<String>>,
    #[serde(default)]
    allow: Vec<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawStore {
    dir: Option<S<String>>,
    retention: Option<S<String>>,
    call_retention: Option<S<String>>,
    cache: Option<S<String>>,
    memory_calls: Option<S<i64>>,
    snapshot_every: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawStatus {
    listen: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawLog {
    level: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawDiagnostics {
    quiet: Option<S<String>>,
}

#[derive(Deserialize)]
struct RawPractice {
    ods: S<String>,
    name: Option<String>,
    #[serde(default)]
    numbers: Vec<S<String>>,
    region_code: Option<S<String>>,
    icb_code: Option<S<String>>,
    sub_icb_location_code: Option<S<String>>,
    pcn_code: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawNetwork {
    #[serde(default)]
    carrier: Vec<S<String>>,
    #[serde(default)]
    pbx: Vec<S<String>>,
    #[serde(default)]
    staff: Vec<S<String>>,
    #[serde(default)]
    automated: Vec<S<String>>,
    #[serde(default)]
    staff_extensions: Vec<S<String>>,
    #[serde(default)]
    pickup_codes: Vec<S<String>>,
    #[serde(default)]
    automated_users: Vec<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawAutomated {
    #[serde(default)]
    voicemail: Vec<S<String>>,
    #[serde(default)]
    queue: Vec<S<String>>,
    #[serde(default)]
    ivr: Vec<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawCallbacks {
    #[serde(default)]
    request: Vec<S<String>>,
    header: Option<S<String>>,
    window: Option<S<String>>,
    #[serde(default)]
    originators: Vec<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawCorrelation {
    #[serde(default)]
    headers: Vec<S<String>>,
    b2bua: Option<bool>,
    settle: Option<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawCalendar {
    bank_holidays: Option<Vec<S<String>>>,
    #[serde(default)]
    extra_bank_holidays: Vec<S<String>>,
}

#[derive(Deserialize, Default)]
struct RawBuckets {
    wait: Option<S<Vec<u32>>>,
    duration: Option<S<Vec<u32>>>,
}

#[derive(Deserialize, Default)]
struct RawPrivacy {
    secret_file: Option<S<String>>,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub key: String,
    pub message: String,
    pub fix: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}: {}", self.path.display(), p.line, p.key, p.message)?;
            if !p.fix.is_empty() {
                write!(f, "; fix: {}", p.fix)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The site: practices, network roles, rules (the engine's own type:
    /// `Config::site` hashes it into the engine's `Site`).
    pub site: SiteSpec,
    pub secret_file: Option<PathBuf>,
    pub agent: AgentConfig,
    /// Timers of legs never seen to end.
    pub legs: cbt_proto::LegConfig,
    /// Sending day documents to the supplier's collector (`[upload]`).
    pub upload: Option<UploadConfig>,
    /// The practice manager's page and staffing (`[page]`, `[staffing]`).
    pub page: PageConfig,
    /// Hostile traffic: HEP senders, scanners, memory ceilings.
    pub guard: GuardSettings,
    /// Things that are allowed but probably not meant (a placeholder ODS
    /// code, no network roles, a number given to two practices).
    pub warnings: Vec<Problem>,
}

/// `[upload]`: where and how day documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    /// The collector's base URL; documents go to `{url}/v1/days`.
    pub url: String,
    /// File holding the bearer token (never in this file, never logged).
    pub token_file: PathBuf,
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// HTTP(S) proxy URL; without it the usual environment variables apply.
    pub proxy: Option<String>,
    /// Today's documents are sent again this often.
    pub interval: Micros,
    /// Retries back off up to this.
    pub max_backoff: Micros,
    /// One request's limit (connection and answer).
    pub timeout: Micros,
    /// This agent's name at the collector (default: the host name).
    pub agent_id: String,
}

impl UploadConfig {
    /// Where documents are POSTed.
    pub fn days_url(&self) -> String {
        format!("{}/v1/days", self.url.trim_end_matches('/'))
    }

    pub fn ping_url(&self) -> String {
        format!("{}/v1/ping", self.url.trim_end_matches('/'))
    }
}

/// Where the local status API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The daemon's own settings (sections capture, hep, store, status, log,
/// diagnostics). Everything has a default.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub interfaces: Vec<String>,
    /// The configured BPF filter; `None`: the default (see `default_filter`).
    pub filter: Option<String>,
    pub sip_ports: Vec<u16>,
    pub snaplen: i32,
    pub buffer_bytes: i32,
    pub immediate: bool,
    pub read_timeout_ms: i32,
    /// Packets queued between capture threads and the engine.
    pub queue: usize,
    pub hep_listen: Option<std::net::SocketAddr>,
    /// SO_RCVBUF asked for on the HEP socket (forced with CAP_NET_ADMIN,
    /// otherwise capped by net.core.rmem_max).
    pub hep_receive_buffer: usize,
    pub store_dir: PathBuf,
    /// How long day figures (and upload states, activity) are kept.
    pub retention: Micros,
    /// How long call records are kept (at most `retention`).
    pub call_retention: Micros,
    /// What an earlier release (store layout 2 or 3) kept call records for
    /// under this file: `store.retention` if set (it was the calls' then),
    /// else 0.1.0's 400 days. Applies to a store upgraded from it while
    /// calls it stored may still be within it, unless `store.call_retention`
    /// is set (see [`AgentConfig::call_cut`]).
    pub legacy_call_retention: Option<Micros>,
    pub cache_bytes: u64,
    /// Finished calls kept in memory while the store cannot take them.
    pub memory_calls: usize,
    pub snapshot_every: Micros,
    pub status_listen: Listen,
    pub log_level: String,
    /// No INVITE for this long during core hours is reported.
    pub quiet: Micros,
}

impl AgentConfig {
    /// Call records that started before the returned time are pruned. An
    /// upgrade never deletes what the release before it would have kept: on
    /// a store upgraded (at `upgraded_at`) from an earlier layout, while
    /// calls that release stored may still be within its retention, that
    /// retention applies (unless `store.call_retention` is set).
    pub fn call_cut(&self, now: Timestamp, upgraded_at: Option<Timestamp>) -> Timestamp {
        let keep = match (self.legacy_call_retention, upgraded_at) {
            (Some(legacy), Some(u)) if now.add(-legacy) < u => self.call_retention.max(legacy),
            _ => self.call_retention,
        };
        now.add(-keep)
    }
}

impl AgentConfig {
    /// The filter for a capture of this link type.
    pub fn filter_for(&self, ethernet: bool) -> String {
        match &self.filter {
            Some(f) => f.clone(),
            None => default_filter(&self.sip_ports, self.hep_listen.map(|a| a.port()), ethernet),
        }
    }
}

pub const DEFAULT_SIP_PORTS: [u16; 4] = [5060, 5061, 5062, 5080];
pub const DEFAULT_STATUS: &str = "127.0.0.1:9465";
pub const DEFAULT_CONFIG: &str = "/etc/cbt-agent/cbt-agent.toml";
pub const DEFAULT_STORE: &str = "/var/lib/cbt-agent";

/// The default capture filter: SIP ports over UDP or TCP, and every IP
/// fragment (non-first fragments carry no ports), also under a VLAN tag
/// when `vlan` (Ethernet links only: libpcap has no `vlan` for Linux
/// cooked captures); minus the HEP listener's own port.
pub fn default_filter(ports: &[u16], hep_port: Option<u16>, vlan: bool) -> String {
    let ports = ports.iter().map(|p| format!("port {p}")).collect::<Vec<_>>().join(" or ");
    let sip = format!("((udp or tcp) and ({ports}))");
    let frag = "((ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6] == 44))";
    let base = format!("{sip} or {frag}");
    let f = if vlan { format!("{base} or (vlan and ({base}))") } else { base };
    match hep_port {
        Some(p) => format!("({f}) and not (udp dst port {p})"),
        None => f,
    }
}

/// `16MiB`, `512KiB`, `2GB`, `1048576`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A practice as configured (the engine's type).
pub type PracticeConfig = PracticeSpec;

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())].matches('\n').count() + 1
    }

    fn bad<T>(&mut self, v: &S<T>, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        let line = self.line(v.span());
        self.problems.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn addrs(&mut self, key: &str, list: &[S<String>]) -> Vec<AddrMatch> {
        let mut out = Vec::new();
        for v in list {
            match AddrMatch::parse(v.get_ref()) {
                Ok(a) => out.push(a),
                Err(e) => self.bad(
                    v,
                    key,
                    e,
                    "write an address (10.20.0.5), address:port (10.20.0.5:5060), CIDR block (10.20.1.0/24) or range (10.20.2.10-10.20.2.40)",
                ),
            }
        }
        out
    }

    /// Endpoint specs: an address form or a SIP user part.
    fn endpoints(&mut self, key: &str, list: &[S<String>]) -> Vec<String> {
        let mut out = Vec::new();
        for v in list {
            let s = v.get_ref().trim();
            if s.is_empty() {
                self.bad(v, key, "an empty entry", "remove it, or write an address or a SIP user part (like \"voicemail\")");
                continue;
            }
            let looks_addr = s.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '[') && (s.contains('.') || s.contains(':'));
            if looks_addr {
                if let Err(e) = AddrMatch::parse(s) {
                    self.bad(v, key, e, "write an address, CIDR block or range; or a SIP user part like \"voicemail\"");
                    continue;
                }
            }
            out.push(s.to_string());
        }
        out
    }

    fn duration(&mut self, v: &S<String>, key: &str) -> Option<Micros> {
        match parse_duration(v.get_ref()) {
            Some(d) => Some(d),
            None => {
                self.bad(v, key, format!("`{}` is not a duration", v.get_ref()), "write a number with a unit: 100ms, 30s, 10m, 2h, 1d (or 1h30m)");
                None
            }
        }
    }

    fn dates(&mut self, key: &str, list: &[S<String>]) -> Vec<NaiveDate> {
        let mut out = Vec::new();
        for v in list {
            match NaiveDate::parse_from_str(v.get_ref().trim(), "%Y-%m-%d") {
                Ok(d) => out.push(d),
                Err(_) => self.bad(v, key, format!("`{}` is not a date", v.get_ref()), "write dates as YYYY-MM-DD, like \"2025-12-25\""),
            }
        }
        out
    }

    fn edges(&mut self, v: &Option<S<Vec<u32>>>, key: &str) -> Vec<u32> {
        match v {
            None => site::DEFAULT_EDGES.to_vec(),
            Some(e) => match cbt_proto::metrics::Buckets::new(e.get_ref()) {
                Ok(_) => e.get_ref().clone(),
                Err(msg) => {
                    self.bad(e, key, msg, "list increasing upper edges in seconds, like [0, 30, 60, 120, 180, 240, 300]");
                    site::DEFAULT_EDGES.to_vec()
                }
            },
        }
    }
}

/// The sections and keys of the file, for suggesting a key when an unknown
/// one is met (finding unknown keys does not depend on this list).
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("", &["timezone", "country_code", "practice", "network", "automated", "callbacks", "correlation", "calendar", "buckets", "privacy", "capture", "hep", "store", "status", "log", "diagnostics", "calls", "upload", "page", "staffing"]),
    ("practice", &["ods", "name", "numbers", "region_code", "icb_code", "sub_icb_location_code", "pcn_code"]),
    ("network", &["carrier", "pbx", "staff", "automated", "staff_extensions", "pickup_codes", "automated_users"]),
    ("automated", &["voicemail", "queue", "ivr"]),
    ("callbacks", &["request", "header", "window", "originators"]),
    ("correlation", &["headers", "b2bua", "settle"]),
    ("calendar", &["bank_holidays", "extra_bank_holidays"]),
    ("buckets", &["wait", "duration"]),
    ("privacy", &["secret_file"]),
    ("capture", &["interfaces", "filter", "sip_ports", "snaplen", "buffer_size", "immediate", "read_timeout", "queue"]),
    ("hep", &["listen", "receive_buffer"]),
    ("store", &["dir", "retention", "call_retention", "cache", "memory_calls", "snapshot_every"]),
    ("status", &["listen"]),
    ("log", &["level"]),
    ("diagnostics", &["quiet"]),
    ("calls", &["max_duration", "ring_timeout", "gap_timeout", "unlisted"]),
    ("upload", &["url", "token_file", "ca_file", "client_cert", "client_key", "proxy", "interval", "max_backoff", "timeout", "agent_id"]),
    ("page", &["national", "lan"]),
    ("page.lan", &["listen", "password_hash", "token_file", "cert", "key", "api"]),
    ("staffing", &["weeks", "target_wait", "target_share", "wrap_up"]),
];

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Where every key of the document is: (path as messages name it, key
/// span, value span). `practice[2].ods` for arrays of tables.
fn layout(t: &toml::de::DeTable<'_>, prefix: &str, out: &mut Vec<(String, std::ops::Range<usize>, std::ops::Range<usize>)>) {
    use toml::de::DeValue;
    for (k, v) in t.iter() {
        let path = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
        out.push((path.clone(), k.span(), v.span()));
        match v.get_ref() {
            DeValue::Table(inner) => layout(inner, &path, out),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        layout(inner, &format!("{path}[{}]", i + 1), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The closest known key of the same section, if one is close.
fn suggestion(path: &str) -> Option<String> {
    let (section, key) = match path.rsplit_once('.') {
        Some((s, k)) => (s.split('[').next().unwrap_or(s), k),
        None => ("", path),
    };
    let known = KNOWN_KEYS.iter().find(|(s, _)| *s == section)?.1;
    let dist = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut prev = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let cur = row[j];
                row[j] = (row[j] + 1).min(row[j - 1] + 1).min(prev + usize::from(a[i - 1] != b[j - 1]));
                prev = cur;
            }
        }
        row[b.len()]
    };
    known.iter().map(|k| (dist(key, k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 3)).min().map(|(_, k)| k.to_string())
}

/// The fix for a TOML syntax error, from what the parser said.
fn syntax_fix(message: &str) -> String {
    let m = message.to_ascii_lowercase();
    let fix = if m.contains("duplicate key") || m.contains("duplicate") {
        "the key (or section) appears twice: keep one"
    } else if m.contains("string") && (m.contains("unclosed") || m.contains("unterminated") || m.contains("closing")) {
        "close the text with the same quote it opened with: key = \"value\""
    } else if m.contains("table header") || m.contains("array of tables") || m.contains("`]`") {
        "write a section as [name] (or [[practice]] for each practice), alone on its line"
    } else if m.contains("string values must be quoted") || m.contains("unquoted") || m.contains("invalid string") {
        "put text in double quotes: key = \"value\"; lists as [\"a\", \"b\"]"
    } else if m.contains("`=`") || m.contains("key") {
        "write each setting as key = value on its own line"
    } else {
        "correct the TOML on this line: key = value, text in double quotes, lists in [ ], sections as [name]"
    };
    fix.to_string()
}

/// The section a line is in (the last `[...]` header above it).
fn section_at(text: &str, line: usize) -> String {
    text.lines()
        .take(line.saturating_sub(1))
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")).or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        })
        .last()
        .map_or_else(|| "(top)".to_string(), |s| format!("[{}]", s.trim()))
}

/// Reads the TOML into the raw sections: every syntax error, every unknown
/// key (with a suggestion) and a value of the wrong type are problems,
/// named by their line and key.
fn read_toml(text: &str) -> Result<Raw, Vec<Problem>> {
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|e| {
                let line = e.span().map_or(0, |s| line_of(text, s.start));
                let message = e.message().trim().replace('\n', " ");
                Problem {
                    line,
                    key: format!("{} (syntax)", section_at(text, line)),
                    fix: syntax_fix(&message),
                    message,
                }
            })
            .collect());
    }
    let mut places = Vec::new();
    layout(doc.get_ref(), "", &mut places);
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    let de = toml::de::Deserializer::from(doc);
    let raw: Option<Raw> = match serde_ignored::deserialize(de, |p| unknown.push(p.to_string())) {
        Ok(r) => Some(r),
        Err(e) => {
            let span = e.span();
            // the innermost key whose value holds the error
            let place = span.as_ref().and_then(|s| {
                places.iter().filter(|(_, _, v)| v.start <= s.start && s.end <= v.end).min_by_key(|(_, _, v)| v.end - v.start)
            });
            let message = e.message().trim().replace('\n', " ");
            let fix = if message.contains("invalid type") {
                "check the value's type: text in double quotes, lists in [ ], numbers and true/false bare (see docs/configuration.md)"
            } else if message.contains("missing field") {
                "add the key"
            } else {
                "correct the value (see docs/configuration.md)"
            };
            problems.push(Problem {
                line: span.map_or(0, |s| line_of(text, s.start)),
                key: place.map_or_else(|| "(value)".to_string(), |(p, _, _)| p.clone()),
                message,
                fix: fix.into(),
            });
            None
        }
    };
    for path in unknown {
        // serde_ignored: `practice.0.odss`; messages: `practice[1].odss`
        let mut shown = String::new();
        // (`?` stands for the `Some` of an optional section like [upload])
        for part in path.split('.').filter(|p| *p != "?") {
            match part.parse::<usize>() {
                Ok(i) => shown.push_str(&format!("[{}]", i + 1)),
                Err(_) => {
                    if !shown.is_empty() {
                        shown.push('.');
                    }
                    shown.push_str(part);
                }
            }
        }
        let line = places.iter().find(|(p, _, _)| *p == shown).map_or(0, |(_, k, _)| line_of(text, k.start));
        let fix = match suggestion(&shown) {
            Some(k) => format!("did you mean `{k}`? (the keys of each section are in docs/configuration.md)"),
            None => "remove it, or move it to the section it belongs to (the keys of each section are in docs/configuration.md)".into(),
        };
        problems.push(Problem {
            line,
            key: shown,
            message: "unknown key".into(),
            fix,
        });
    }
    match raw {
        Some(mut r) if problems.is_empty() => {
            r.network_line = places.iter().find(|(p, _, _)| p == "network").map(|(_, k, _)| line_of(text, k.start));
            Ok(r)
        }
        _ => {
            problems.sort_by_key(|p| p.line);
            Err(problems)
        }
    }
}

/// A duration as configuration writes them: `90s`, `10m`, `4h`, `2d`, `1h30m`.
pub fn format_duration(d: Micros) -> String {
    let s = d / SECOND;
    if s == 0 {
        return format!("{} ms", d / 1000);
    }
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (n, u) in [(days, "d"), (h, "h"), (m, "m"), (sec, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{u}"));
        }
    }
    out
}

/// `30s`, `10m`, `2h`, `1d`, `1h30m`, `100ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Micros> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n as i64 * SECOND);
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_alphabetic()).len();
        let unit = match &rest[..letters] {
            "ms" => 1_000,
            "s" => SECOND,
            "m" => MINUTE,
            "h" => 60 * MINUTE,
            "d" => 24 * 60 * MINUTE,
            _ => return None,
        };
        rest = &rest[letters..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total).filter(|t| *t > 0)
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read the file: {e}"),
                fix: match e.kind() {
                    std::io::ErrorKind::PermissionDenied => format!(
                        "run the command with sudo, or as a member of the cbt-agent group (the file is mode 0640, owner root, group cbt-agent: `sudo adduser {} cbt-agent`, then log in again)",
                        std::env::var("USER").unwrap_or_else(|_| "YOU".into())
                    ),
                    std::io::ErrorKind::NotFound => format!("check the path (the service reads {DEFAULT_CONFIG}; the package installs an example there)"),
                    _ => "check the path, and that this user may read the file".into(),
                },
            }],
        })?;
        Config::parse(&text, path)
    }

    /// Validates configuration text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let raw = read_toml(text).map_err(err)?;
        let mut c = Checker {
            text,
            problems: Vec::new(),
        };
        let timezone = match &raw.timezone {
            None => chrono_tz::Europe::London,
            Some(v) => match v.get_ref().parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    c.bad(v, "timezone", format!("`{}` is not a timezone", v.get_ref()), "use an IANA name like \"Europe/London\"");
                    chrono_tz::Europe::London
                }
            },
        };
        let country_code = match &raw.country_code {
            None => "44".to_string(),
            Some(v) => {
                let s = v.get_ref().trim().trim_start_matches('+').to_string();
                if s.is_empty() || s.len() > 3 || !s.chars().all(|ch| ch.is_ascii_digit()) {
                    c.bad(v, "country_code", format!("`{}` is not a country calling code", v.get_ref()), "write digits only, like \"44\"");
                }
                s
            }
        };
        if raw.practice.is_empty() {
            c.problems.push(Problem {
                line: 1,
                key: "practice".into(),
                message: "no practice is configured".into(),
                fix: "add a [[practice]] table with ods = \"B82005\" and numbers = [\"01632 960123\"]".into(),
            });
        }
        let mut practices = Vec::new();
        let mut warnings: Vec<Problem> = Vec::new();
        let mut seen_numbers: Vec<(String, String)> = Vec::new();
        for (i, p) in raw.practice.iter().enumerate() {
            let key = |k: &str| format!("practice[{}].{k}", i + 1);
            let ods = p.ods.get_ref().trim().to_string();
            if !is_ods(&ods) {
                c.bad(&p.ods, &key("ods"), format!("`{ods}` is not an ODS practice code"), "write a letter and five digits, like \"B82005\"");
            } else if PLACEHOLDER_ODS.contains(&ods.as_str()) {
                warnings.push(Problem {
                    line: c.line(p.ods.span()),
                    key: key("ods"),
                    message: format!("`{ods}` is the example code of the shipped configuration, not a practice"),
                    fix: "write the practice's ODS code (NHS ODS Portal, or the practice's CQRS record)".into(),
                });
            }
            if practices.iter().any(|q: &PracticeConfig| q.ods == ods) {
                c.bad(&p.ods, &key("ods"), format!("practice {ods} is configured twice"), "merge the two [[practice]] tables");
            }
            let mut numbers = Vec::new();
            for n in &p.numbers {
                match number::normalize(n.get_ref(), &country_code) {
                    Some(e164) => {
                        if let Some((other, _)) = seen_numbers.iter().find(|(_, e)| *e == e164) {
                            warnings.push(Problem {
                                line: c.line(n.span()),
                                key: key("numbers"),
                                message: format!("{} is also a number of {other}: its calls are counted for {other} only", n.get_ref()),
                                fix: "give each number to one practice (a number the practices share belongs to none: leave it out and its calls are Unassigned)".into(),
                            });
                        }
                        seen_numbers.push((ods.clone(), e164.clone()));
                        numbers.push(e164);
                    }
                    None => c.bad(
                        n,
                        &key("numbers"),
                        format!("`{}` is not a phone number", n.get_ref()),
                        "write the practice's number in any UK form: \"01632 960123\", \"+44 1632 960123\" or \"441632960123\"",
                    ),
                }
            }
            let code = |c: &mut Checker, v: &Option<S<String>>, k: &str| -> Option<String> {
                let v = v.as_ref()?;
                let s = v.get_ref().trim().to_string();
                if s.is_empty() || s.len() > 12 || !s.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                    c.bad(v, &key(k), format!("`{s}` is not an organisation code"), "write the code as published by NHS England (letters and digits)");
                }
                Some(s)
            };
            let codes = OrgCodes {
                region: code(&mut c, &p.region_code, "region_code"),
                icb: code(&mut c, &p.icb_code, "icb_code"),
                sub_icb: code(&mut c, &p.sub_icb_location_code, "sub_icb_location_code"),
                pcn: code(&mut c, &p.pcn_code, "pcn_code"),
            };
            practices.push(PracticeConfig {
                ods,
                name: p.name.clone(),
                numbers,
                codes,
            });
        }
        if practices.len() > 1 {
            for (i, p) in raw.practice.iter().enumerate() {
                if p.numbers.is_empty() {
                    c.bad(
                        &p.ods,
                        &format!("practice[{}].numbers", i + 1),
                        "with several practices each needs its numbers (DDIs) to tell their calls apart",
                        "add numbers = [\"...\"] to this practice",
                    );
                }
            }
        }
        let n = &raw.network;
        if [&n.carrier, &n.pbx, &n.staff, &n.automated, &n.staff_extensions, &n.automated_users].iter().all(|l| l.is_empty()) {
            warnings.push(Problem {
                line: raw.network_line.unwrap_or(1),
                key: "network".into(),
                message: "no network role is set: every new Call-ID counts as an inbound call and nothing tells handsets, IVR and carrier apart".into(),
                fix: "set at least network.pbx and network.staff (and network.carrier for a full view); see docs/operations.md, \"Worked configurations\"".into(),
            });
        }
        let carrier = c.addrs("network.carrier", &n.carrier);
        let pbx = c.addrs("network.pbx", &n.pbx);
        let staff = c.addrs("network.staff", &n.staff);
        let mut automated = Vec::new();
        for v in &n.automated {
            if AddrMatch::parse(v.get_ref()).is_err() {
                c.bad(v, "network.automated", format!("`{}` is not an address", v.get_ref()), "write addresses here; put SIP user parts like \"ivr\" in network.automated_users");
            } else {
                automated.push(v.get_ref().trim().to_string());
            }
        }
        let mut staff_extensions = Vec::new();
        for v in &n.staff_extensions {
            match ExtPattern::parse(v.get_ref()) {
                Ok(p) => staff_extensions.push(p),
                Err(e) => c.bad(v, "network.staff_extensions", e, "write patterns like \"2XX\" (200-299) or \"3[0-4]X\""),
            }
        }
        let mut pickup_codes = Vec::new();
        for v in &n.pickup_codes {
            match ExtPattern::parse(v.get_ref()) {
                Ok(p) => pickup_codes.push(p),
                Err(e) => c.bad(v, "network.pickup_codes", e, "write what a handset dials to pick up a call, like \"*8\" or \"**2XX\""),
            }
        }
        automated.extend(c.endpoints("network.automated_users", &n.automated_users));
        automated.extend(c.endpoints("automated.ivr", &raw.automated.ivr));
        let voicemail = c.endpoints("automated.voicemail", &raw.automated.voicemail);
        let queue = c.endpoints("automated.queue", &raw.automated.queue);
        let callback_request = c.endpoints("callbacks.request", &raw.callbacks.request);
        let callback_window = match &raw.callbacks.window {
            None => CallbackWindow::SameDay,
            Some(v) if matches!(v.get_ref().trim(), "same-day" | "same_day" | "day") => CallbackWindow::SameDay,
            Some(v) => match parse_duration(v.get_ref()) {
                Some(d) => CallbackWindow::Within(d),
                None => {
                    c.bad(v, "callbacks.window", format!("`{}` is not a window", v.get_ref()), "write \"same-day\" or a duration like \"4h\"");
                    CallbackWindow::SameDay
                }
            },
        };
        let callback_originators = c.addrs("callbacks.originators", &raw.callbacks.originators);
        let callback_header = raw.callbacks.header.as_ref().map(|h| h.get_ref().trim().to_string());
        if let Some(h) = &raw.callbacks.header {
            check_header_name(&mut c, h, "callbacks.header");
        }
        let mut correlation_headers = Vec::new();
        for h in &raw.correlation.headers {
            check_header_name(&mut c, h, "correlation.headers");
            correlation_headers.push(h.get_ref().trim().to_string());
        }
        let settle = match &raw.correlation.settle {
            None => 10 * SECOND,
            Some(v) => c.duration(v, "correlation.settle").unwrap_or(10 * SECOND),
        };
        let mut bank_holidays = match &raw.calendar.bank_holidays {
            None => site::default_bank_holidays(),
            Some(list) => c.dates("calendar.bank_holidays", list).into_iter().collect(),
        };
        bank_holidays.extend(c.dates("calendar.extra_bank_holidays", &raw.calendar.extra_bank_holidays));
        let wait_edges = c.edges(&raw.buckets.wait, "buckets.wait");
        let duration_edges = c.edges(&raw.buckets.duration, "buckets.duration");
        let secret_file = raw.privacy.secret_file.as_ref().map(|v| PathBuf::from(v.get_ref()));
        let agent = agent_config(&mut c, &raw);
        let guard = guard::settings(&mut c, &raw.hep.allow, &raw.scanners, &raw.limits);
        let mut legs = cbt_proto::LegConfig::default();
        if let Some(v) = &raw.calls.max_duration {
            legs.max_call = c.duration(v, "calls.max_duration").unwrap_or(legs.max_call);
        }
        if let Some(v) = &raw.calls.ring_timeout {
            legs.ring_timeout = c.duration(v, "calls.ring_timeout").unwrap_or(legs.ring_timeout);
        }
        if let Some(v) = &raw.calls.gap_timeout {
            legs.gap_timeout = c.duration(v, "calls.gap_timeout").unwrap_or(legs.gap_timeout);
        }
        let ignore_unlisted = match &raw.calls.unlisted {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "unassigned" => false,
                "ignore" => true,
                other => {
                    c.bad(v, "calls.unlisted", format!("`{other}` is not a choice"), "write \"unassigned\" (the default: calls to numbers no practice lists are Unassigned's) or \"ignore\" (another agent owns them)");
                    false
                }
            },
        };
        if ignore_unlisted && practices.iter().all(|p| p.numbers.is_empty()) {
            if let Some(v) = &raw.calls.unlisted {
                c.bad(v, "calls.unlisted", "\"ignore\" with no practice numbers listed would ignore every call".to_string(), "list each practice's numbers (`numbers = [...]`) or remove calls.unlisted");
            }
        }
        let upload = raw.upload.as_ref().and_then(|u| upload_config(&mut c, u));
        let page_settings = page::page_config(&mut c, &raw.page, &raw.staffing, &agent.status_listen);
        if !c.problems.is_empty() {
            c.problems.sort_by_key(|p| p.line);
            return Err(err(c.problems));
        }
        Ok(Config {
            path: path.to_path_buf(),
            site: SiteSpec {
                practices,
                timezone,
                country_code,
                carrier,
                pbx,
                staff,
                staff_extensions,
                pickup_codes,
                automated,
                voicemail,
                queue,
                callback_request,
                callback_header,
                callback_window,
                callback_originators,
                correlation_headers,
                b2bua: raw.correlation.b2bua.unwrap_or(true),
                bank_holidays,
                wait_edges,
                duration_edges,
                settle,
                ignore_unlisted,
            },
            secret_file,
            agent,
            legs,
            upload,
            page: page_settings,
            warnings,
            guard,
        })
    }

    /// The engine's site rules, with numbers hashed by `hasher`.
    pub fn site(&self, hasher: &Hasher) -> Site {
        Site::new(self.site.clone(), hasher)
    }
}

fn agent_config(c: &mut Checker, raw: &Raw) -> AgentConfig {
    let cap = &raw.capture;
    let mut interfaces = Vec::new();
    for v in &cap.interfaces {
        let s = v.get_ref().trim();
        if s.is_empty() || s.len() > 64 || s.contains(char::is_whitespace) {
            c.bad(v, "capture.interfaces", format!("`{s}` is not an interface name"), "use names from `ip link`, or \"any\"");
        } else {
            interfaces.push(s.to_string());
        }
    }
    let hep_listen = raw.hep.listen.as_ref().and_then(|v| match v.get_ref().trim().parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.bad(v, "hep.listen", format!("`{}` is not address:port", v.get_ref()), "write it like \"0.0.0.0:9060\"");
            None
        }
    });
    let ports = match &cap.sip_ports {
        None => DEFAULT_SIP_PORTS.to_vec(),
        Some(p) if p.get_ref().is_empty() || p.get_ref().contains(&0) => {
            c.bad(p, "capture.sip_ports", "the list is empty or holds port 0", "list the SIP ports, like [5060, 5061]");
            DEFAULT_SIP_PORTS.to_vec()
        }
        Some(p) => p.get_ref().clone(),
    };
    let filter = cap.filter.as_ref().map(|f| f.get_ref().trim().to_string());
    let int = |c: &mut Checker, v: &Option<S<i64>>, key: &str, lo: i64, hi: i64, default: i64| -> i64 {
        match v {
            None => default,
            Some(n) if (lo..=hi).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                c.bad(n, key, format!("{} is out of range", n.get_ref()), format!("use a value from {lo} to {hi}"));
                default
            }
        }
    };
    let snaplen = int(c, &cap.snaplen, "capture.snaplen", 1500, 262_144, 65_535) as i32;
    let queue = int(c, &cap.queue, "capture.queue", 1_000, 10_000_000, 20_000) as usize;
    let size = |c: &mut Checker, v: &Option<S<String>>, key: &str, default: u64| -> u64 {
        match v {
            None => default,
            Some(s) => match parse_size(s.get_ref()) {
                Some(n) if n > 0 => n,
                _ => {
                    c.bad(s, key, format!("`{}` is not a size", s.get_ref()), "write a number with a unit: 16MiB, 512KiB");
                    default
                }
            },
        }
    };
    // the kernel ring is mapped into the process (twice its size in RSS):
    // 4 MiB holds seconds of SIP at hundreds of calls a second
    let buffer_bytes = size(c, &cap.buffer_size, "capture.buffer_size", 4 << 20).min(i32::MAX as u64) as i32;
    // HEP arrives in bursts from several agents; the socket's queue is the
    // only buffer between them and the engine
    let hep_receive_buffer = size(c, &raw.hep.receive_buffer, "hep.receive_buffer", 8 << 20).min(1 << 30) as usize;
    // without immediate mode, how long the kernel holds a block of packets
    // before it wakes the capture: a batch per wake-up (docs/configuration.md)
    let read_timeout_ms = match &cap.read_timeout {
        None => 20,
        Some(v) => (c.duration(v, "capture.read_timeout").unwrap_or(20_000) / 1000).clamp(1, 10_000) as i32,
    };
    let st = &raw.store;
    let store_dir = st.dir.as_ref().map_or(PathBuf::from(DEFAULT_STORE), |v| PathBuf::from(v.get_ref()));
    const DAY: Micros = 24 * 3600 * SECOND;
    let retention = match &st.retention {
        None => 800 * DAY,
        Some(v) => match c.duration(v, "store.retention") {
            Some(d) if d < DAY => {
                c.bad(v, "store.retention", format!("`{}` is less than a day: day figures would go before they are sent", v.get_ref()), "write at least \"1d\" (the default is \"800d\")");
                800 * DAY
            }
            Some(d) => d,
            None => 800 * DAY,
        },
    };
    let call_retention = match &st.call_retention {
        // an old file's short `retention` (it was the calls' then) still bounds them
        None => retention.min(62 * DAY),
        Some(v) => match c.duration(v, "store.call_retention") {
            Some(d) if d < DAY => {
                c.bad(v, "store.call_retention", format!("`{}` is less than a day", v.get_ref()), "write at least \"1d\" (the default is \"62d\": a month's submission plus corrections)");
                retention.min(62 * DAY)
            }
            Some(d) if d > retention => {
                c.bad(
                    v,
                    "store.call_retention",
                    format!("`{}` is longer than store.retention: call records cannot outlive their day figures", v.get_ref()),
                    "make store.call_retention at most store.retention (defaults: \"62d\" and \"800d\")",
                );
                retention
            }
            Some(d) => d,
            None => retention.min(62 * DAY),
        },
    };
    let legacy_call_retention = st.call_retention.is_none().then(|| if st.retention.is_some() { retention } else { 400 * DAY });
    let cache_bytes = size(c, &st.cache, "store.cache", 8 << 20);
    let memory_calls = int(c, &st.memory_calls, "store.memory_calls", 100, 10_000_000, 200_000) as usize;
    let snapshot_every = match &st.snapshot_every {
        None => 30 * SECOND,
        Some(v) => c.duration(v, "store.snapshot_every").unwrap_or(30 * SECOND),
    };
    let status_listen = match &raw.status.listen {
        None => Listen::Tcp(DEFAULT_STATUS.parse().expect("default address")),
        Some(v) => {
            let s = v.get_ref().trim();
            if let Some(p) = s.strip_prefix("unix:") {
                Listen::Unix(PathBuf::from(p))
            } else {
                match s.parse() {
                    Ok(a) => Listen::Tcp(a),
                    Err(_) => {
                        c.bad(v, "status.listen", format!("`{s}` is not address:port or unix:PATH"), "write \"127.0.0.1:9465\" or \"unix:/run/cbt-agent/status.sock\"");
                        Listen::Tcp(DEFAULT_STATUS.parse().expect("default address"))
                    }
                }
            }
        }
    };
    let log_level = match &raw.log.level {
        None => "info".to_string(),
        Some(v) => {
            let l = v.get_ref().trim().to_ascii_lowercase();
            if !["error", "warn", "info", "debug", "trace"].contains(&l.as_str()) {
                c.bad(v, "log.level", format!("`{l}` is not a log level"), "use error, warn, info, debug or trace");
            }
            l
        }
    };
    let quiet = match &raw.diagnostics.quiet {
        None => 30 * MINUTE,
        Some(v) => c.duration(v, "diagnostics.quiet").unwrap_or(30 * MINUTE),
    };
    AgentConfig {
        interfaces,
        filter,
        sip_ports: ports,
        snaplen,
        buffer_bytes,
        immediate: cap.immediate.unwrap_or(false),
        read_timeout_ms,
        queue,
        hep_listen,
        hep_receive_buffer,
        store_dir,
        retention,
        call_retention,
        legacy_call_retention,
        cache_bytes,
        memory_calls,
        snapshot_every,
        status_listen,
        log_level,
        quiet,
    }
}

fn upload_config(c: &mut Checker, u: &RawUpload) -> Option<UploadConfig> {
    let url = match &u.url {
        None => {
            c.problems.push(Problem {
                line: u.token_file.as_ref().map_or(1, |t| c.line(t.span())),
                key: "upload.url".into(),
                message: "[upload] has no url".into(),
                fix: "add url = \"https://collector.example.net\" (the collector's address), or remove [upload] to keep figures on this machine".into(),
            });
            None
        }
        Some(v) => {
            let s = v.get_ref().trim().trim_end_matches('/').to_string();
            let lower = s.to_ascii_lowercase();
            let local_http = ["http://127.", "http://localhost", "http://[::1]"].iter().any(|p| lower.starts_with(p));
            if !(lower.starts_with("https://") || local_http) || s.contains(char::is_whitespace) || s.len() < 10 {
                c.bad(v, "upload.url", format!("`{s}` is not an https:// URL"), "write the collector's address, like \"https://collector.example.net\" (plain http only to this machine)");
                None
            } else {
                Some(s)
            }
        }
    };
    let path = |c: &mut Checker, v: &Option<S<String>>, key: &str| -> Option<PathBuf> {
        let v = v.as_ref()?;
        let s = v.get_ref().trim();
        if s.is_empty() || !s.starts_with('/') {
            c.bad(v, key, format!("`{s}` is not an absolute path"), "write the file's full path, like \"/etc/cbt-agent/upload-token\"");
            return None;
        }
        Some(PathBuf::from(s))
    };
    let token_file = path(c, &u.token_file, "upload.token_file");
    if u.token_file.is_none() {
        c.problems.push(Problem {
            line: u.url.as_ref().map_or(1, |t| c.line(t.span())),
            key: "upload.token_file".into(),
            message: "[upload] has no token_file".into(),
            fix: "add token_file = \"/etc/cbt-agent/upload-token\" and put the token `cbt-collector token add` printed in that file (mode 0640, root:cbt-agent)".into(),
        });
    }
    let ca_file = path(c, &u.ca_file, "upload.ca_file");
    let client_cert = path(c, &u.client_cert, "upload.client_cert");
    let client_key = path(c, &u.client_key, "upload.client_key");
    if client_cert.is_some() != client_key.is_some() {
        let v = u.client_cert.as_ref().or(u.client_key.as_ref()).expect("one is set");
        c.bad(v, "upload.client_cert", "client_cert and client_key go together", "set both (PEM files), or neither");
    }
    let proxy = u.proxy.as_ref().and_then(|v| {
        let s = v.get_ref().trim().to_string();
        if ["http://", "https://", "socks5://"].iter().any(|p| s.to_ascii_lowercase().starts_with(p)) {
            Some(s)
        } else {
            c.bad(v, "upload.proxy", format!("`{s}` is not a proxy URL"), "write it like \"http://proxy.example.nhs.uk:8080\"");
            None
        }
    });
    let dur = |c: &mut Checker, v: &Option<S<String>>, key: &str, default: Micros, min: Micros| -> Micros {
        match v {
            None => default,
            Some(v) => match c.duration(v, key) {
                Some(d) if d >= min => d,
                Some(_) => {
                    c.bad(v, key, format!("`{}` is too short", v.get_ref()), format!("use at least {} s", min / SECOND));
                    default
                }
                None => default,
            },
        }
    };
    let interval = dur(c, &u.interval, "upload.interval", 15 * MINUTE, 10 * SECOND);
    let max_backoff = dur(c, &u.max_backoff, "upload.max_backoff", 30 * MINUTE, SECOND);
    let timeout = dur(c, &u.timeout, "upload.timeout", 30 * SECOND, SECOND);
    let agent_id = match &u.agent_id {
        Some(v) => {
            let s = v.get_ref().trim().to_string();
            if s.is_empty() || s.len() > 128 || !s.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)) {
                c.bad(v, "upload.agent_id", format!("`{s}` is not a usable name"), "use letters, digits, '-', '_' and '.', at most 128");
            }
            s
        }
        None => hostname::get().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty()).unwrap_or_else(|| "cbt-agent".into()),
    };
    Some(UploadConfig {
        url: url?,
        token_file: token_file?,
        ca_file,
        client_cert,
        client_key,
        proxy,
        interval,
        max_backoff,
        timeout,
        agent_id,
    })
}

fn check_header_name(c: &mut Checker, h: &S<String>, key: &str) {
    let s = h.get_ref().trim();
    if s.is_empty() || !s.bytes().all(cbt_proto::sip::is_token_char) {
        c.bad(h, key, format!("`{s}` is not a SIP header name"), "write the header's name without a colon, like \"X-CID\"");
    }
}

/// Codes that are examples, not practices (the shipped configuration's).
pub const PLACEHOLDER_ODS: [&str; 2] = ["A00000", "X00000"];

/// ODS practice codes: a letter and five digits.
pub fn is_ods(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests;
