//! Traffic that is not a patient calling, and the engine's memory budget.
//!
//! A SIP port reachable from the internet receives scanner traffic all day
//! (INVITE, OPTIONS and REGISTER sweeps by sipvicious and friends). None of
//! it is a call, and none of it may exhaust the box. The pieces:
//!
//! - [`Screen`], in front of the legs (and of the daemon's journal): drops
//!   the INVITEs that can be told apart on arrival (from an address that is
//!   neither the configured carrier nor the site; with a scanner's
//!   User-Agent), keeps a bounded book of the addresses it set aside, and
//!   absorbs the rest of a set-aside dialog (responses, retransmissions,
//!   ACKs) with bounded tombstones, so nothing of it reaches the legs.
//! - [`Bursts`], for the call layer: addresses sending many new INVITEs in
//!   a short time.
//! - [`looks_like_scanner`], the rule that sets a finished call aside when
//!   no carrier list says who may call: the phone system never engaged
//!   with it, and it came in a burst or was not for a practice number.
//! - [`MemoryStats`]: what the engine holds and what it shed to stay under
//!   its ceiling (the shedding itself lives with the state it sheds:
//!   `leg.rs`, `call.rs`, `wire/tcp.rs`).
//!
//! Every rule is documented in docs/cbt-indicators.md ("Traffic that is
//! not a call").

use crate::leg::Hop;
use crate::sip::{Kind, Method, SipMessage};
use crate::site::Site;
use crate::time::{Micros, Timestamp, MINUTE, SECOND};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

/// User-Agent fragments of SIP scanners (matched case-insensitively
/// anywhere in the header).
pub const DEFAULT_SCANNER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "pplsip",
];

/// Default ceiling for engine state (legs, calls in progress, reassembly,
/// the screen's tables): well under the packaged unit's 256 MiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// How the engine treats hostile traffic.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// Ceiling in bytes for engine state; 0: none.
    pub memory_limit: usize,
    /// User-Agent fragments of scanners (lower case).
    pub scanner_agents: Vec<String>,
    /// New calls from one address within `burst_window` that make it a
    /// burst (without a carrier list).
    pub burst: u32,
    pub burst_window: Micros,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            memory_limit: DEFAULT_MEMORY_LIMIT,
            scanner_agents: DEFAULT_SCANNER_AGENTS.iter().map(|s| s.to_string()).collect(),
            burst: 50,
            burst_window: 10 * SECOND,
        }
    }
}

/// Why traffic was kept out of the figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// `network.carrier` is set and the sender is neither the carrier nor the site.
    UnexpectedSource,
    /// A scanner's User-Agent.
    ScannerUserAgent,
    /// Behaved like a scanner (see [`looks_like_scanner`]).
    ScannerBehaviour,
}

impl Why {
    pub fn name(self) -> &'static str {
        match self {
            Why::UnexpectedSource => "unexpected_source",
            Why::ScannerUserAgent => "scanner_user_agent",
            Why::ScannerBehaviour => "scanner_behaviour",
        }
    }
}

/// What the screen and the call layer kept out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenStats {
    /// New INVITEs from an address that is neither the carrier nor the site
    /// (with `network.carrier` set): never a call.
    pub unexpected_invites: u64,
    /// New INVITEs with a scanner's User-Agent.
    pub scanner_agent_invites: u64,
    /// Calls set aside when they ended because they behaved like a scanner.
    pub scanner_calls: u64,
    /// REGISTER, OPTIONS, SUBSCRIBE and other requests from the addresses
    /// in the book (unexpected senders and scanners).
    pub other_requests: u64,
    /// Later messages of set-aside dialogs (responses, retransmissions,
    /// ACK, CANCEL, BYE) absorbed before the legs.
    pub absorbed: u64,
    /// Distinct addresses entered in the book, and those dropped from it
    /// to keep it bounded.
    pub sources_seen: u64,
    pub sources_forgotten: u64,
}

impl ScreenStats {
    /// INVITEs (dialogs) kept out of the figures, all reasons.
    pub fn invites_kept_out(&self) -> u64 {
        self.unexpected_invites + self.scanner_agent_invites + self.scanner_calls
    }
}

/// One address whose traffic was kept out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    pub address: String,
    /// The first reason it was set aside ([`Why::name`]).
    pub why: String,
    /// INVITE dialogs kept out.
    pub invites: u64,
    /// Other requests (REGISTER, OPTIONS...), by method.
    pub requests: BTreeMap<String, u64>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// As the scanner sent it (printable ASCII, at most 80 characters).
    pub user_agent: Option<String>,
}

impl SourceReport {
    pub fn total(&self) -> u64 {
        self.invites + self.requests.values().sum::<u64>()
    }
}

/// The engine's memory: the ceiling, what is held, what was shed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// 0: no ceiling.
    pub limit_bytes: u64,
    pub used_bytes: u64,
    pub peak_bytes: u64,
    pub legs_bytes: u64,
    pub calls_bytes: u64,
    pub reassembly_bytes: u64,
    pub screen_bytes: u64,
    /// INVITE legs with no response removed to stay under the ceiling.
    pub legs_shed: u64,
    /// Of those, the ones that were calls in progress (never counted).
    pub calls_shed: u64,
    /// Times the ceiling was reached.
    pub shed_rounds: u64,
    /// Times shedding everything sheddable still left the state over the
    /// ceiling (calls in progress that are answered or ringing are never shed).
    pub over_budget: u64,
    pub last_shed: Option<Timestamp>,
}

/// The screen's and the budget's counters, and the book of addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardStats {
    pub screen: ScreenStats,
    pub memory: MemoryStats,
    /// The addresses kept out, most traffic first (at most [`BOOK_SHOWN`]).
    pub sources: Vec<SourceReport>,
}

/// Addresses the book holds at most.
pub const BOOK_CAPACITY: usize = 256;
/// Addresses reported in [`GuardStats::sources`].
pub const BOOK_SHOWN: usize = 20;

#[derive(Clone, Debug)]
struct Entry {
    why: Why,
    invites: u64,
    requests: BTreeMap<Method, u64>,
    first_seen: Timestamp,
    last_seen: Timestamp,
    user_agent: Option<String>,
}

/// A bounded book of the addresses whose traffic was kept out.
#[derive(Clone, Debug, Default)]
pub struct SourceBook {
    entries: BTreeMap<IpAddr, Entry>,
}

impl SourceBook {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.entries.contains_key(&ip)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry(&mut self, ip: IpAddr, at: Timestamp, why: Why, stats: &mut ScreenStats) -> &mut Entry {
        if !self.entries.contains_key(&ip) {
            if self.entries.len() >= BOOK_CAPACITY {
                // forget the quietest of the least recently seen
                let victim = self
                    .entries
                    .iter()
                    .min_by_key(|(ip, e)| (e.last_seen, e.invites + e.requests.values().sum::<u64>(), **ip))
                    .map(|(ip, _)| *ip);
                if let Some(v) = victim {
                    self.entries.remove(&v);
                    stats.sources_forgotten += 1;
                }
            }
            stats.sources_seen += 1;
            self.entries.insert(
                ip,
                Entry {
                    why,
                    invites: 0,
                    requests: BTreeMap::new(),
                    first_seen: at,
                    last_seen: at,
                    user_agent: None,
                },
            );
        }
        let e = self.entries.get_mut(&ip).expect("just inserted");
        e.last_seen = e.last_seen.max(at);
        e
    }

    /// Records a request kept out (an INVITE dialog, or another method).
    pub fn record(&mut self, ip: IpAddr, at: Timestamp, why: Why, method: Method, agent: Option<&str>, stats: &mut ScreenStats) {
        let e = self.entry(ip, at, why, stats);
        if method == Method::Invite {
            e.invites += 1;
        } else {
            *e.requests.entry(method).or_default() += 1;
        }
        if e.user_agent.is_none() {
            e.user_agent = agent.map(printable);
        }
    }

    /// The busiest addresses, most traffic first.
    pub fn report(&self, n: usize) -> Vec<SourceReport> {
        let mut v: Vec<SourceReport> = self
            .entries
            .iter()
            .map(|(ip, e)| SourceReport {
                address: ip.to_string(),
                why: e.why.name().to_string(),
                invites: e.invites,
                requests: e.requests.iter().map(|(m, n)| (m.name().to_string(), *n)).collect(),
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                user_agent: e.user_agent.clone(),
            })
            .collect();
        v.sort_by(|a, b| b.total().cmp(&a.total()).then_with(|| a.address.cmp(&b.address)));
        v.truncate(n);
        v
    }

    fn bytes(&self) -> usize {
        // an entry: the key, the struct, a few methods, the agent string
        self.entries.len() * (std::mem::size_of::<(IpAddr, Entry)>() + 160)
    }
}

/// Printable ASCII, at most 80 characters: what may be shown of a header a
/// stranger wrote.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(80).collect()
}

/// Call-IDs of set-aside dialogs, so that the rest of each dialog is
/// absorbed before the legs. Bounded in entries and in time.
#[derive(Debug)]
pub struct Tombstones {
    hasher: ahash::RandomState,
    until: ahash::HashMap<u64, Timestamp>,
    order: VecDeque<(Timestamp, u64)>,
}

/// Tombstones kept at most, and for how long after the last message.
pub const TOMBSTONES: usize = 65_536;
pub const TOMBSTONE_LIFE: Micros = 32 * SECOND;

impl Default for Tombstones {
    fn default() -> Self {
        Tombstones {
            // fixed seeds: the same Call-ID always hashes the same
            hasher: ahash::RandomState::with_seeds(0x6362_7461, 0x6775_6172, 0x746f_6d62, 0x7374_6f6e),
            until: ahash::HashMap::default(),
            order: VecDeque::new(),
        }
    }
}

impl Tombstones {
    fn key(&self, call_id: &str) -> u64 {
        self.hasher.hash_one(call_id)
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Marks (or refreshes) a Call-ID as set aside.
    pub fn bury(&mut self, call_id: &str, at: Timestamp) {
        let k = self.key(call_id);
        let until = at.add(TOMBSTONE_LIFE);
        self.until.insert(k, until);
        self.order.push_back((until, k));
        self.expire(at);
    }

    /// Whether the Call-ID is set aside; refreshes it if so.
    pub fn hit(&mut self, call_id: &str, at: Timestamp) -> bool {
        self.expire(at);
        let k = self.key(call_id);
        match self.until.get_mut(&k) {
            Some(u) => {
                // refreshed in place; the queue entry is only a lower bound
                *u = at.add(TOMBSTONE_LIFE);
                true
            }
            None => false,
        }
    }

    fn expire(&mut self, now: Timestamp) {
        if self.until.capacity() > 1024 && self.until.len() * 4 < self.until.capacity() {
            self.until.shrink_to(self.until.len() * 2);
            self.order.shrink_to(self.order.len() * 2);
        }
        while let Some(&(t, k)) = self.order.front() {
            let over = self.order.len() > 2 * TOMBSTONES || self.until.len() > TOMBSTONES;
            if t > now && !over {
                break;
            }
            self.order.pop_front();
            match self.until.get(&k) {
                // refreshed since this entry: requeue with its real expiry
                Some(u) if *u > now && *u != t && !over => self.order.push_back((*u, k)),
                Some(_) => {
                    self.until.remove(&k);
                }
                None => {}
            }
        }
    }

    fn bytes(&self) -> usize {
        self.until.capacity() * 24 + self.order.capacity() * 16
    }
}

/// The value of a header in a raw message head (first occurrence), without
/// parsing the message: for the methods the engine does not parse.
pub fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() <= name.len() || !line[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let rest = &line[name.len()..];
        let rest = &rest[rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count()..];
        if let Some(v) = rest.strip_prefix(b":") {
            return std::str::from_utf8(v).ok().map(str::trim);
        }
    }
    None
}

/// Whether a User-Agent is a known scanner's.
pub fn is_scanner_agent(agent: &str, fragments: &[String]) -> bool {
    let a = agent.to_ascii_lowercase();
    fragments.iter().any(|f| !f.is_empty() && a.contains(f.as_str()))
}

/// In front of the legs: what can be set aside on arrival, and the rest of
/// set-aside dialogs.
#[derive(Debug)]
pub struct Screen {
    site: Option<Site>,
    agents: Vec<String>,
    tombs: Tombstones,
    book: SourceBook,
    pub stats: ScreenStats,
}

impl Screen {
    /// Without a site nothing is screened (legs-only replays).
    pub fn new(site: Option<Site>, agents: &[String]) -> Screen {
        Screen {
            site,
            agents: agents.iter().map(|a| a.to_ascii_lowercase()).collect(),
            tombs: Tombstones::default(),
            book: SourceBook::default(),
            stats: ScreenStats::default(),
        }
    }

    pub fn set_site(&mut self, site: Option<Site>) {
        self.site = site;
    }

    pub fn book(&self) -> &SourceBook {
        &self.book
    }

    /// Whether a message may reach the legs. Drops (and counts) the rest of
    /// set-aside dialogs, and new INVITEs from unexpected senders or with a
    /// scanner's User-Agent.
    pub fn admit(&mut self, ts: Timestamp, hop: &Hop, msg: &SipMessage, head: &[u8]) -> bool {
        let Some(site) = &self.site else { return true };
        if !self.tombs.is_empty() && self.tombs.hit(&msg.call_id, ts) {
            self.stats.absorbed += 1;
            return false;
        }
        if !matches!(msg.kind, Kind::Request(Method::Invite)) || msg.to.tag.is_some() {
            return true;
        }
        let agent = header_value(head, "User-Agent");
        let why = if site.unexpected_source(hop.src, hop.dst) {
            self.stats.unexpected_invites += 1;
            Why::UnexpectedSource
        } else if !site.is_configured_carrier(hop.src.ip()) && agent.is_some_and(|a| is_scanner_agent(a, &self.agents)) {
            self.stats.scanner_agent_invites += 1;
            Why::ScannerUserAgent
        } else {
            return true;
        };
        self.book.record(hop.src.ip(), ts, why, Method::Invite, agent, &mut self.stats);
        self.tombs.bury(&msg.call_id, ts);
        false
    }

    /// A request of a method that does not affect legs (REGISTER, OPTIONS,
    /// SUBSCRIBE...): counted against its sender if the sender is
    /// unexpected, a scanner, or already in the book.
    pub fn other_request(&mut self, ts: Timestamp, hop: &Hop, method: Method, head: &[u8]) {
        let Some(site) = &self.site else { return };
        let ip = hop.src.ip();
        if site.is_configured_carrier(ip) {
            return;
        }
        let agent = header_value(head, "User-Agent");
        let why = if site.unexpected_source(hop.src, hop.dst) {
            Why::UnexpectedSource
        } else if agent.is_some_and(|a| is_scanner_agent(a, &self.agents)) {
            Why::ScannerUserAgent
        } else if self.book.contains(ip) {
            Why::ScannerBehaviour
        } else {
            return;
        };
        self.stats.other_requests += 1;
        self.book.record(ip, ts, why, method, agent, &mut self.stats);
    }

    /// A dialog set aside after it reached the legs (by the call layer):
    /// its sender goes in the book, the rest of it is absorbed.
    pub fn set_aside(&mut self, ts: Timestamp, call_id: &str, source: IpAddr, why: Why) {
        self.book.record(source, ts, why, Method::Invite, None, &mut self.stats);
        self.tombs.bury(call_id, ts);
    }

    /// Absorbs the rest of a dialog whose state was shed.
    pub fn bury(&mut self, ts: Timestamp, call_id: &str) {
        self.tombs.bury(call_id, ts);
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Screen>() + self.tombs.bytes() + self.book.bytes()
    }
}

/// Addresses sending many new calls at once (a scanner's sweep). A burst
/// marks its address for [`BURST_HOLD`] after its last new call.
#[derive(Clone, Debug)]
pub struct Bursts {
    limit: u32,
    window: Micros,
    map: BTreeMap<IpAddr, Burst>,
}

#[derive(Clone, Copy, Debug)]
struct Burst {
    start: Timestamp,
    count: u32,
    flagged_until: Option<Timestamp>,
}

/// How long an address stays marked after its last new call in a burst.
pub const BURST_HOLD: Micros = 5 * MINUTE;
/// Addresses tracked at most.
pub const BURST_CAPACITY: usize = 4096;

impl Bursts {
    pub fn new(limit: u32, window: Micros) -> Bursts {
        Bursts {
            limit: limit.max(1),
            window: window.max(SECOND),
            map: BTreeMap::new(),
        }
    }

    /// Counts a new call from `ip` at `at`; returns whether `ip` is in a burst.
    pub fn hit(&mut self, ip: IpAddr, at: Timestamp) -> bool {
        if !self.map.contains_key(&ip) && self.map.len() >= BURST_CAPACITY {
            let (window, before) = (self.window, self.map.len());
            self.map.retain(|_, b| at.since(b.start) <= window || b.flagged_until.is_some_and(|f| f >= at));
            if self.map.len() == before {
                // all busy: forget the first (deterministic)
                let first = *self.map.keys().next().expect("full map");
                self.map.remove(&first);
            }
        }
        let b = self.map.entry(ip).or_insert(Burst {
            start: at,
            count: 0,
            flagged_until: None,
        });
        if at.since(b.start) > self.window {
            b.start = at;
            b.count = 0;
        }
        b.count += 1;
        if b.count > self.limit || b.flagged_until.is_some_and(|f| f >= at) {
            b.flagged_until = Some(at.add(BURST_HOLD));
        }
        b.flagged_until.is_some_and(|f| f >= at)
    }

    pub fn window(&self) -> Micros {
        self.window
    }

    /// Whether `ip` was marked as bursting at `at`.
    pub fn flagged(&self, ip: IpAddr, at: Timestamp) -> bool {
        self.map.get(&ip).and_then(|b| b.flagged_until).is_some_and(|f| f >= at)
    }

    pub fn bytes(&self) -> usize {
        self.map.len() * (std::mem::size_of::<(IpAddr, Burst)>() + 32)
    }
}

/// What a finished inbound call showed, for [`looks_like_scanner`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// A 101-199 response (ringing, early media).
    pub rang: bool,
    /// A 2xx.
    pub answered: bool,
    /// Another leg was attached (the call was offered to a handset, an IVR,
    /// voicemail...).
    pub offered: bool,
    /// The final response to the trunk INVITE.
    pub final_status: Option<u16>,
    /// Its sender was in a burst of new calls.
    pub burst: bool,
    /// Whether it was for one of the practices' numbers (None: no numbers
    /// are configured).
    pub for_practice: Option<bool>,
}

/// Final responses a phone system gives a person (busy, unavailable,
/// declined, no answer): the call was real even if nothing rang.
pub const PERSON_REFUSALS: [u16; 5] = [408, 480, 486, 600, 603];

/// Whether the phone system engaged with the call: it rang, answered,
/// offered the call to someone, or refused it as one refuses a person.
pub fn engaged(e: &Evidence) -> bool {
    e.rang || e.answered || e.offered || e.final_status.is_some_and(|s| PERSON_REFUSALS.contains(&s))
}

/// The scanner rule for calls when no carrier list says who may call: the
/// phone system did not engage with it (no response at all, only `100
/// Trying`, a 401/403/404/407 or another refusal a scanner gets, or the
/// caller gave up before anything rang), and either its sender was in a
/// burst of new calls or it was not for a practice's number. A caller
/// rejected busy or cancelling while it rang is a real missed call.
pub fn looks_like_scanner(e: &Evidence) -> bool {
    !engaged(e) && (e.burst || e.for_practice == Some(false))
}

#[cfg(test)]
mod tests;
