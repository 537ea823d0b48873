//! The daemon's side of hostile traffic: HEP only from allowed senders, a
//! byte ceiling on the queue before the engine, and what the status, the
//! `/metrics` page and the practice manager's page say about scanners and
//! memory (the `scanner`, `memory_shed` and `hep_rejected` diagnostics).

use super::status::{esc, write_metric, Diagnostic};
use cbt_proto::guard::{GuardStats, MemoryStats, ScreenStats, SourceReport};
use cbt_proto::site::AddrMatch;
use cbt_proto::time::SECOND;
use cbt_proto::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bytes and packets waiting between the capture threads and the engine,
/// held under ceilings (`limits.queue_memory`, `capture.queue`): a flood of
/// large datagrams cannot fill memory through the queue, and packets handed
/// over in batches are still counted one by one.
#[derive(Debug, Default)]
pub struct QueueBudget {
    pub limit: usize,
    /// At most this many packets (0: no count ceiling).
    pub packet_limit: usize,
    used: AtomicUsize,
    packets: AtomicUsize,
    peak: AtomicUsize,
    /// Packets dropped because the byte ceiling was reached.
    pub dropped: AtomicU64,
}

impl QueueBudget {
    pub fn new(limit: usize, packet_limit: usize) -> QueueBudget {
        QueueBudget {
            limit,
            packet_limit,
            ..QueueBudget::default()
        }
    }

    /// Takes room for a packet of `n` bytes; false (and counted) when full.
    pub fn reserve(&self, n: usize) -> bool {
        if self.packet_limit > 0 && self.packets.fetch_add(1, Ordering::Relaxed) >= self.packet_limit {
            self.packets.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let n = n + QUEUE_ENTRY_BYTES;
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if cur + n > self.limit {
                if self.packet_limit > 0 {
                    self.packets.fetch_sub(1, Ordering::Relaxed);
                }
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.used.compare_exchange_weak(cur, cur + n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak.fetch_max(cur + n, Ordering::Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Gives back the room of `packets` packets of `bytes` bytes in all
    /// (taken by the engine, or not sent).
    pub fn release_many(&self, packets: usize, bytes: usize) {
        self.used.fetch_sub(bytes + packets * QUEUE_ENTRY_BYTES, Ordering::Relaxed);
        if self.packet_limit > 0 {
            self.packets.fetch_sub(packets, Ordering::Relaxed);
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// What a queued packet costs besides its bytes (the entry, the Vec).
const QUEUE_ENTRY_BYTES: usize = 64;

/// The HEP input's allow list and what it refused.
#[derive(Debug, Default)]
pub struct HepGuard {
    pub allow: Vec<AddrMatch>,
    pub rejected: AtomicU64,
    senders: Mutex<BTreeMap<IpAddr, (u64, Timestamp)>>,
}

/// Refused HEP senders remembered at most.
const HEP_SENDERS: usize = 64;

impl HepGuard {
    pub fn new(allow: Vec<AddrMatch>) -> HepGuard {
        HepGuard {
            allow,
            ..HepGuard::default()
        }
    }

    /// Whether a datagram from `ip` may be read as HEP; counts the rest.
    pub fn admit(&self, ip: IpAddr, at: Timestamp) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|m| m.matches(std::net::SocketAddr::new(ip, 0))) {
            return true;
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut s = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if !s.contains_key(&ip) && s.len() >= HEP_SENDERS {
            if let Some(old) = s.iter().min_by_key(|(k, v)| (v.1, **k)).map(|(k, _)| *k) {
                s.remove(&old);
            }
        }
        let e = s.entry(ip).or_insert((0, at));
        e.0 += 1;
        e.1 = at;
        false
    }

    pub fn senders(&self) -> Vec<HepSender> {
        let s = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<HepSender> = s
            .iter()
            .map(|(ip, (n, at))| HepSender {
                address: ip.to_string(),
                packets: *n,
                last_seen: *at,
            })
            .collect();
        v.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.address.cmp(&b.address)));
        v.truncate(20);
        v
    }
}

/// A sender whose HEP was refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HepSender {
    pub address: String,
    pub packets: u64,
    pub last_seen: Timestamp,
}

/// The `hostile` member of `/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostileStatus {
    pub kept_out: KeptOut,
    pub memory: MemoryStatus,
}

/// Traffic kept out of the figures since the agent started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeptOut {
    /// INVITE dialogs kept out, all reasons.
    pub invites: u64,
    #[serde(flatten)]
    pub screen: ScreenStats,
    /// HEP datagrams from senders not in `hep.allow` (socket and capture).
    pub hep_rejected: u64,
    /// Addresses whose traffic was kept out (scanner addresses are not
    /// patient data), most traffic first.
    pub sources: Vec<SourceReport>,
    pub hep_senders: Vec<HepSender>,
}

/// Memory: the engine's ceiling and the queue's, and the process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryStatus {
    #[serde(flatten)]
    pub engine: MemoryStats,
    pub queue_limit_bytes: u64,
    pub queue_bytes: u64,
    pub queue_peak_bytes: u64,
    /// Packets dropped because the queue's byte ceiling was reached.
    pub queue_dropped: u64,
    /// The process's resident memory.
    pub rss_bytes: u64,
}

impl HostileStatus {
    pub fn new(g: GuardStats, wire_hep_rejected: u64, hep: Option<&HepGuard>, queue: &QueueBudget) -> HostileStatus {
        HostileStatus {
            kept_out: KeptOut {
                invites: g.screen.invites_kept_out(),
                hep_rejected: wire_hep_rejected + hep.map_or(0, |h| h.rejected.load(Ordering::Relaxed)),
                screen: g.screen,
                sources: g.sources,
                hep_senders: hep.map(|h| h.senders()).unwrap_or_default(),
            },
            memory: MemoryStatus {
                engine: g.memory,
                queue_limit_bytes: queue.limit as u64,
                queue_bytes: queue.used() as u64,
                queue_peak_bytes: queue.peak() as u64,
                queue_dropped: queue.dropped.load(Ordering::Relaxed),
                rss_bytes: rss_bytes().unwrap_or(0),
            },
        }
    }
}

/// Resident memory of this process (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// The last 10 minutes of the counters, for the diagnostics.
#[derive(Debug, Default)]
pub struct Watch {
    /// (time, INVITEs kept out, other requests kept out, shed, HEP refused)
    window: VecDeque<(Timestamp, u64, u64, u64, u64)>,
}

impl Watch {
    pub fn diagnostics(&mut self, h: &HostileStatus, t: Timestamp) -> Vec<Diagnostic> {
        let k = &h.kept_out;
        let shed = h.memory.engine.legs_shed + h.memory.queue_dropped;
        self.window.push_back((t, k.invites, k.screen.other_requests, shed, k.hep_rejected));
        while self.window.front().is_some_and(|w| t.since(w.0) > 600 * SECOND) {
            self.window.pop_front();
        }
        let first = *self.window.front().expect("just pushed");
        let mut d = Vec::new();
        let (invites, requests) = (k.invites - first.1.min(k.invites), k.screen.other_requests - first.2.min(k.screen.other_requests));
        if invites + requests > 0 {
            let who: Vec<&str> = k.sources.iter().take(3).map(|s| s.address.as_str()).collect();
            let more = k.sources.len().saturating_sub(3);
            d.push(Diagnostic::warn(
                "scanner",
                format!(
                    "{invites} INVITEs and {requests} other requests kept out of the figures in the last 10 minutes, from {}{}: SIP scanners or unexpected senders reach the phone system; see docs/operations.md (\"Scanners and floods\")",
                    who.join(", "),
                    if more > 0 { format!(" and {more} more addresses") } else { String::new() }
                ),
            ));
        }
        if shed > first.3 {
            let m = &h.memory;
            d.push(Diagnostic::warn(
                "memory_shed",
                format!(
                    "to stay under its memory ceilings the agent set aside {} INVITEs that had no response and {} queued packets in the last 10 minutes ({} calls in progress never counted); real calls that rang or were answered are kept",
                    m.engine.legs_shed,
                    m.queue_dropped,
                    m.engine.calls_shed
                ),
            ));
        }
        if k.hep_rejected > first.4 {
            let who: Vec<&str> = k.hep_senders.iter().take(3).map(|s| s.address.as_str()).collect();
            d.push(Diagnostic::warn(
                "hep_rejected",
                format!(
                    "{} HEP packets from senders not in hep.allow were ignored in the last 10 minutes (from {}); add the PBX's address to hep.allow if it is one",
                    k.hep_rejected - first.4,
                    if who.is_empty() { "the capture".to_string() } else { who.join(", ") }
                ),
            ));
        }
        d
    }
}


/// Prometheus rows for hostile traffic and memory.
pub fn prometheus(h: &HostileStatus) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| write_metric(&mut o, name, kind, help, rows);
    let k = &h.kept_out;
    let one = |v: u64| vec![(String::new(), v as f64)];
    metric(
        "cbt_kept_out_invites_total",
        "counter",
        "INVITE dialogs kept out of the figures, by reason.",
        vec![
            ("reason=\"unexpected_source\"".into(), k.screen.unexpected_invites as f64),
            ("reason=\"scanner_user_agent\"".into(), k.screen.scanner_agent_invites as f64),
            ("reason=\"scanner_behaviour\"".into(), k.screen.scanner_calls as f64),
        ],
    );
    metric("cbt_kept_out_requests_total", "counter", "REGISTER, OPTIONS and other requests from unexpected senders and scanners.", one(k.screen.other_requests));
    metric("cbt_kept_out_messages_absorbed_total", "counter", "Later messages of set-aside dialogs absorbed before the legs.", one(k.screen.absorbed));
    metric("cbt_hep_rejected_total", "counter", "HEP datagrams from senders not in hep.allow.", one(k.hep_rejected));
    metric(
        "cbt_kept_out_source_requests",
        "gauge",
        "Requests kept out from each of the busiest addresses (scanners; not patient data).",
        k.sources.iter().map(|s| (format!("address=\"{}\",why=\"{}\"", esc(&s.address), esc(&s.why)), s.total() as f64)).collect(),
    );
    let m = &h.memory;
    metric("cbt_engine_memory_limit_bytes", "gauge", "Ceiling for engine state (limits.engine_memory).", one(m.engine.limit_bytes));
    metric(
        "cbt_engine_memory_bytes",
        "gauge",
        "Engine state counted against the ceiling, by part.",
        vec![
            ("part=\"legs\"".into(), m.engine.legs_bytes as f64),
            ("part=\"calls\"".into(), m.engine.calls_bytes as f64),
            ("part=\"reassembly\"".into(), m.engine.reassembly_bytes as f64),
            ("part=\"screen\"".into(), m.engine.screen_bytes as f64),
        ],
    );
    metric("cbt_engine_memory_peak_bytes", "gauge", "Highest engine state since start.", one(m.engine.peak_bytes));
    metric("cbt_shed_legs_total", "counter", "INVITE legs with no response shed to stay under the ceiling.", one(m.engine.legs_shed));
    metric("cbt_shed_calls_total", "counter", "Calls in progress (never answered by anything) shed with them.", one(m.engine.calls_shed));
    metric("cbt_queue_bytes", "gauge", "Bytes of packets waiting for the engine.", one(m.queue_bytes));
    metric("cbt_queue_memory_limit_bytes", "gauge", "Ceiling for the queue (limits.queue_memory).", one(m.queue_limit_bytes));
    metric("cbt_queue_byte_dropped_total", "counter", "Packets dropped because the queue's byte or packet ceiling was reached.", one(m.queue_dropped));
    metric("cbt_resident_memory_bytes", "gauge", "Resident memory of the agent process.", one(m.rss_bytes));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_its_byte_ceiling() {
        let q = QueueBudget::new(10_000, 0);
        let mut taken = 0;
        while q.reserve(1000) {
            taken += 1;
        }
        assert_eq!((taken, q.dropped.load(Ordering::Relaxed)), (9, 1));
        assert!(q.used() <= 10_000 && q.peak() == q.used());
        for _ in 0..taken {
            q.release_many(1, 1000);
        }
        assert_eq!(q.used(), 0);
        assert!(q.reserve(1000));
    }

    #[test]
    fn the_queue_holds_its_packet_ceiling_whatever_the_batches() {
        let q = QueueBudget::new(1 << 20, 3);
        assert!(q.reserve(10) && q.reserve(10) && q.reserve(10));
        assert!(!q.reserve(10), "a fourth packet is over capture.queue");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
        // a batch of two taken by the engine gives room for two more
        q.release_many(2, 20);
        assert!(q.reserve(10) && q.reserve(10) && !q.reserve(10));
        q.release_many(3, 30);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn hep_is_taken_from_allowed_senders_only() {
        let g = HepGuard::new(vec![AddrMatch::parse("127.0.0.1").unwrap(), AddrMatch::parse("10.20.0.0/24").unwrap()]);
        let t = Timestamp(0);
        assert!(g.admit("127.0.0.1".parse().unwrap(), t));
        assert!(g.admit("::ffff:10.20.0.9".parse().unwrap(), t), "IPv4 mapped on a dual-stack socket");
        assert!(!g.admit("127.0.0.66".parse().unwrap(), t));
        for i in 0..200u32 {
            assert!(!g.admit(IpAddr::from((0xCB00_7100 + i).to_be_bytes()), t));
        }
        assert_eq!(g.rejected.load(Ordering::Relaxed), 201);
        assert!(g.senders.lock().unwrap().len() <= HEP_SENDERS);
    }

    #[test]
    fn diagnostics_name_the_scanners_and_clear_after_ten_minutes() {
        let mut h = HostileStatus::default();
        let mut w = Watch::default();
        assert!(w.diagnostics(&h, Timestamp(0)).is_empty());
        h.kept_out.invites = 500;
        h.kept_out.sources.push(SourceReport { address: "203.0.113.9".into(), invites: 500, ..Default::default() });
        let d = w.diagnostics(&h, Timestamp(SECOND));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, "scanner");
        assert!(d[0].message.starts_with("500 INVITEs and 0 other requests") && d[0].message.contains("203.0.113.9"), "{}", d[0].message);
        assert!(w.diagnostics(&h, Timestamp(601 * SECOND)).is_empty());
    }
}
