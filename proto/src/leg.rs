//! INVITE legs: one per INVITE dialog attempt on one hop.
//!
//! A leg is identified by Call-ID and From-tag plus the hop it travels
//! (source and destination address): a proxy that forwards an INVITE keeps
//! Call-ID and From-tag, so the carrier-to-proxy and proxy-to-handset INVITEs
//! are two legs. Early dialogs created by a forking proxy (several To-tags in
//! responses on one hop) stay on one leg, recorded in `forks`.
//!
//! All times come from packets; timers run on packet time via `tick`.
//! See `docs/legs.md` for the rules and the reasons behind them.

use crate::number::{Hasher, NumHash, Party};
use crate::sip::{Kind, Method, SipMessage};
use crate::time::{Micros, OptTime, Timestamp, HOUR, MILLISECOND, MINUTE, SECOND};
use crate::wire::{Source, Transport};
use ahash::HashMap;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

mod timers;

/// The legs of one Call-ID: nearly always one or two (a proxy's hops).
type LegIds = SmallVec<[LegId; 2]>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LegId(pub u64);

/// How a leg ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// BYE after the dialog was established.
    Bye,
    /// CANCEL (or a 487 Request Terminated) before an answer.
    Cancel,
    /// A final error response (3xx-6xx other than 487).
    Rejected,
    /// No final response: no response at all within 64*T1, or ringing that
    /// never ended.
    Timeout,
    /// Established but never seen to end: closed by the session timer, the
    /// maximum call length, a bound on tracked legs, or the end of input.
    Inferred,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::Cancel => "cancel",
            EndReason::Rejected => "rejected",
            EndReason::Timeout => "timeout",
            EndReason::Inferred => "inferred",
        }
    }
}

/// Which side of the leg ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The side that sent the INVITE.
    Caller,
    /// The side the INVITE was sent to.
    Callee,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// INVITE sent, nothing back yet.
    Calling,
    /// A provisional response came back.
    Proceeding,
    /// 401/407 (or 422): waiting for the retried INVITE.
    Challenged,
    /// CANCEL sent, waiting for the final response.
    Cancelling,
    /// Answered (2xx).
    Confirmed,
    /// Finished and reported; kept briefly to absorb retransmissions.
    Ended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub id: LegId,
    /// Shared with the Call-ID indexes (the legs', the calls'): one copy.
    pub call_id: Arc<str>,
    /// Empty when the INVITE carried no From-tag (RFC 2543 devices).
    /// Tags, branches and user parts are short: held inline up to 24
    /// bytes (`CompactString`), not as one allocation each.
    pub from_tag: CompactString,
    /// To-tag of the answering fork, else of the final response, else of
    /// the last provisional response.
    pub to_tag: Option<CompactString>,
    /// Every To-tag seen in responses (forks), first ones only.
    pub forks: SmallVec<[CompactString; 1]>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub source: Source,
    pub started: Timestamp,
    pub ringing: OptTime,
    pub answered: OptTime,
    pub ended: OptTime,
    pub final_status: Option<u16>,
    /// When the final response (or the first 2xx) was seen.
    pub final_at: OptTime,
    pub end: Option<EndReason>,
    pub ended_by: Option<Side>,
    /// From user part.
    pub from: Party,
    /// To user part.
    pub to: Party,
    /// Request-URI user part of the initial INVITE (the dialled number).
    pub ruri: Party,
    /// P-Asserted-Identity (or Remote-Party-ID) user part.
    pub asserted: Party,
    pub session_expires: Option<u32>,
    /// What few legs carry (a Reason, configured headers): boxed, so
    /// that a leg without them holds a pointer, not two empty strings'
    /// worth. Read with [`Leg::reason`] and [`Leg::headers`].
    pub extra: Option<Box<LegExtra>>,
    /// A REFER was seen in this dialog (transfer).
    pub referred: bool,
    /// Something that should have been seen was not (a BYE without the 2xx,
    /// or the leg was in progress across a gap in the capture).
    pub partial: bool,
    pub retransmissions: u32,
    /// Challenges (401/407/422) answered by a retried INVITE on this leg.
    pub challenges: u32,
    pub state: State,
    /// Branches of the initial INVITE transactions (one per retry).
    pub(crate) branches: SmallVec<[CompactString; 1]>,
    pub(crate) initial_cseqs: SmallVec<[u32; 2]>,
    pub(crate) last_invite: Timestamp,
    pub(crate) last_activity: Timestamp,
    pub(crate) last_refresh: OptTime,
    pub(crate) challenged_at: OptTime,
    pub(crate) cancelled_at: OptTime,
    /// When this leg's timer is due (its entry in `LegTracker::timers`).
    #[serde(skip)]
    pub(crate) timer: OptTime,
    /// The sender's T1 as its first INVITE retransmission showed it
    /// (in memory only: a restored leg uses the configured T1).
    #[serde(skip)]
    pub(crate) t1_seen: Option<std::num::NonZeroU32>,
    /// Bytes this leg holds, as counted against the memory budget.
    #[serde(skip)]
    pub(crate) acct: usize,
    /// Its sender was in a burst of new calls: shed first.
    #[serde(skip)]
    pub(crate) suspect: bool,
    /// Where its initial INVITE's SDP offer sent the audio
    /// ([`crate::sip::media_key`]; in memory only).
    #[serde(skip)]
    pub(crate) media: Option<std::num::NonZeroU64>,
}

/// A leg's rarely present fields (see [`Leg::extra`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegExtra {
    /// Reason header of the CANCEL or BYE that ended the leg.
    pub reason: Option<String>,
    /// Correlation and configured headers of the initial INVITE.
    pub headers: Vec<(String, String)>,
}

impl LegExtra {
    /// `None` when there is nothing to keep.
    pub fn boxed(reason: Option<String>, headers: Vec<(String, String)>) -> Option<Box<LegExtra>> {
        (reason.is_some() || !headers.is_empty()).then(|| Box::new(LegExtra { reason, headers }))
    }
}

impl Leg {
    /// Reason header of the CANCEL or BYE that ended the leg.
    pub fn reason(&self) -> Option<&str> {
        self.extra.as_ref()?.reason.as_deref()
    }

    /// Correlation and configured headers of the initial INVITE.
    pub fn headers(&self) -> &[(String, String)] {
        self.extra.as_ref().map_or(&[], |e| &e.headers)
    }

    fn set_reason(&mut self, reason: Option<String>) {
        let headers = self.extra.take().map(|e| e.headers).unwrap_or_default();
        self.extra = LegExtra::boxed(reason, headers);
    }

    /// Seconds from INVITE to answer, if answered.
    pub fn answer_delay(&self) -> Option<f64> {
        self.answered.get().map(|a| a.secs_since(self.started))
    }

    pub fn is_open(&self) -> bool {
        self.state != State::Ended
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LegConfig {
    /// SIP timer T1; transactions time out after 64*T1.
    pub t1: Micros,
    /// An answered leg never seen to end is closed this long after answer.
    pub max_call: Micros,
    /// A leg that got provisional responses but no final one is closed as
    /// `timeout` this long after its last activity.
    pub ring_timeout: Micros,
    /// Ended legs are remembered this long to absorb retransmissions.
    pub linger: Micros,
    /// Open legs tracked at most; beyond, the oldest is closed as inferred.
    pub max_legs: usize,
    /// Make a (partial) leg from a response to an INVITE that was not seen,
    /// rather than ignore it: the daemon, whose gaps (restarts, drops)
    /// would otherwise lose calls, sets this. Off for replays, which report
    /// exactly what the capture holds.
    #[serde(default)]
    pub adopt_orphans: bool,
    /// A leg not yet answered that was open across a capture gap and has
    /// shown nothing since is closed this long after the gap, its end at
    /// the gap's start (its CANCEL or final response fell in the gap).
    #[serde(default = "default_gap_timeout")]
    pub gap_timeout: Micros,
}

fn default_gap_timeout() -> Micros {
    2 * MINUTE
}

/// Capture gaps the tracker remembers (the latest ones).
const GAPS_KEPT: usize = 32;

impl Default for LegConfig {
    fn default() -> Self {
        LegConfig {
            t1: 500 * MILLISECOND,
            max_call: 4 * HOUR,
            ring_timeout: 30 * MINUTE,
            linger: 32 * SECOND,
            max_legs: 200_000,
            adopt_orphans: false,
            gap_timeout: default_gap_timeout(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegStats {
    pub legs_started: u64,
    pub legs_finished: u64,
    pub retransmissions: u64,
    pub challenges: u64,
    /// Initial INVITEs with the same Call-ID/From-tag and hop folded into an
    /// open leg (a retry after a challenge, or a device that re-sends).
    pub merged_invites: u64,
    /// In-dialog requests or responses that matched no leg (mid-call
    /// capture start, or a dialog whose INVITE was missed).
    pub orphans: u64,
    /// Responses to an INVITE arriving after its leg ended.
    pub late_responses: u64,
    pub cancel_after_answer: u64,
    pub legs_evicted: u64,
    /// Partial legs made from responses to unseen INVITEs.
    pub adopted: u64,
    pub by_end: std::collections::BTreeMap<String, u64>,
}

/// Tracks legs from parsed SIP messages.
#[derive(Debug)]
pub(crate) struct LegTracker {
    cfg: LegConfig,
    hasher: Hasher,
    next_id: u64,
    /// Boxed: a map's spare capacity then costs a pointer, not a leg.
    legs: HashMap<LegId, Box<Leg>>,
    by_call_id: HashMap<Arc<str>, LegIds>,
    events: VecDeque<LegEvent>,
    /// Due times of every leg's timer (open legs: their deadline; ended
    /// legs: when they stop lingering), earliest first.
    timers: timers::Timers,
    open: usize,
    pub stats: LegStats,
    /// Hashes given with a sealed message, while it is applied.
    hashes: Option<UserHashes>,
    /// Bytes held by all legs (open and lingering) and their indexes.
    bytes: usize,
    /// Open legs with no response at all yet (`State::Calling`), by start:
    /// what the memory budget sheds, oldest first.
    calling: BTreeSet<(Timestamp, LegId)>,
    /// The subset of `calling` whose sender was in a burst: shed before the rest.
    suspects: BTreeSet<(Timestamp, LegId)>,
    /// Legs removed without finishing (not persisted).
    pub removed: Removed,
    /// Capture gaps (from, to), oldest first: packets between were not
    /// seen. Given by the daemon (`mark_gap`, `note_gap`), not persisted
    /// here (the daemon's store keeps them).
    gaps: VecDeque<(Timestamp, Timestamp)>,
    /// Finished legs alone in their Call-ID, reduced to what absorbing
    /// their retransmissions needs (in memory only).
    ended: Tombs,
}

/// What is left of a finished leg while it lingers: enough to recognise
/// the rest of its dialog (absorbed) and a retransmission of its INVITE.
/// About 70 bytes with its index entries, against 1-2 KiB for a leg.
#[derive(Debug)]
struct Tombs {
    hasher: ahash::RandomState,
    /// By the Call-ID's hash.
    map: HashMap<u64, Tomb>,
    /// (until, Call-ID hash), in the order they were made.
    order: VecDeque<(Timestamp, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Tomb {
    until: Timestamp,
    from_tag: u64,
    /// The initial INVITE's transactions: Via branches (or CSeqs).
    txs: [u64; 4],
    n: u8,
}

impl Default for Tombs {
    fn default() -> Self {
        Tombs {
            // fixed seeds: a Call-ID always hashes the same
            hasher: ahash::RandomState::with_seeds(
                0x746f_6d62,
                0x6c65_6773,
                0x6362_7461,
                0x656e_6465,
            ),
            map: HashMap::default(),
            order: VecDeque::new(),
        }
    }
}

impl Tombs {
    fn key(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// The key of an initial INVITE's transaction.
    fn tx(&self, branch: Option<&str>, cseq: u32) -> u64 {
        match branch {
            Some(b) => self.key(b),
            None => self.hasher.hash_one(cseq),
        }
    }

    fn bury(&mut self, leg: &Leg, until: Timestamp) {
        let k = self.key(&leg.call_id);
        let mut t = Tomb {
            until,
            from_tag: self.key(&leg.from_tag),
            txs: [0; 4],
            n: 0,
        };
        let txs: Vec<u64> = if leg.branches.is_empty() {
            leg.initial_cseqs
                .iter()
                .map(|c| self.tx(None, *c))
                .collect()
        } else {
            leg.branches.iter().map(|b| self.tx(Some(b), 0)).collect()
        };
        // the latest transactions (a leg retried after challenges has several)
        for tx in txs.iter().rev().take(4) {
            t.txs[t.n as usize] = *tx;
            t.n += 1;
        }
        self.map.insert(k, t);
        self.order.push_back((until, k));
    }

    fn get(&self, call_id: &str, now: Timestamp) -> Option<&Tomb> {
        self.map.get(&self.key(call_id)).filter(|t| t.until > now)
    }

    /// Forgets the tombs whose time is over.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(until, k)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            if self.map.get(&k).is_some_and(|t| t.until <= now) {
                self.map.remove(&k);
            }
        }
        shrink(&mut self.map);
        if self.order.capacity() > 64 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to_fit();
        }
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<(u64, Tomb)>() + 1)
            + self.order.capacity() * std::mem::size_of::<(Timestamp, u64)>()
    }
}

/// Legs removed without a `Finished` event: set aside by the call layer
/// (not a patient's call) or shed to stay under the memory budget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// Open legs set aside (ended ones set aside are in `legs_finished`).
    pub set_aside_open: u64,
    /// Legs set aside in all (open or lingering).
    pub set_aside: u64,
    /// Open legs with no response shed for memory.
    pub shed: u64,
}

/// What the engine needs to know of a leg it removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedLeg {
    pub id: LegId,
    pub call_id: String,
    pub src: SocketAddr,
}

/// RFC 3261 Timer C: a proxy gives up a transaction that got no
/// provisional response beyond `100 Trying` for this long.
pub const TIMER_C: Micros = 3 * MINUTE;
/// The T1 a sender's retransmissions show is believed within these bounds
/// (Timer B is 64 times it: 6.4 s to 128 s).
pub const T1_MIN: Micros = 100 * MILLISECOND;
pub const T1_MAX: Micros = 2 * SECOND;
/// Index entries per leg (by Call-ID, timers, the no-response sets).
const LEG_INDEX_BYTES: usize = 192;

/// Bytes a leg holds in memory: the struct, its strings and vectors, and
/// its entries in the tracker's indexes.
pub fn leg_bytes(l: &Leg) -> usize {
    use crate::mem::{str_heap as s, vec_heap as v};
    let p = |x: &Party| x.user.as_ref().map_or(0, s);
    std::mem::size_of::<Leg>()
        + LEG_INDEX_BYTES
        + l.call_id.len()
        + 16
        + s(&l.from_tag)
        + l.to_tag.as_ref().map_or(0, s)
        + v(&l.forks)
        + l.forks.iter().map(s).sum::<usize>()
        + p(&l.from)
        + p(&l.to)
        + p(&l.ruri)
        + p(&l.asserted)
        + l.extra.as_ref().map_or(0, |e| {
            std::mem::size_of::<LegExtra>()
                + e.reason.as_ref().map_or(0, String::capacity)
                + e.headers.capacity() * std::mem::size_of::<(String, String)>()
                + e.headers.iter().map(|(a, b)| a.capacity() + b.capacity()).sum::<usize>()
        })
        + v(&l.branches)
        + l.branches.iter().map(s).sum::<usize>()
        + v(&l.initial_cseqs)
}

/// Keyed hashes of a message's From, To, Request-URI and asserted user
/// parts, for messages stored without their phone numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserHashes(pub [Option<NumHash>; 4]);

/// What happened to a leg, in order. `Started` and `Finished` carry the
/// whole leg (with raw user parts, in memory only).
#[derive(Clone, Debug)]
pub enum LegEvent {
    Started(Box<Leg>),
    Ringing {
        id: LegId,
        at: Timestamp,
    },
    Answered {
        id: LegId,
        at: Timestamp,
    },
    /// A REFER in the leg's dialog (first one): a transfer is under way.
    Referred {
        id: LegId,
        at: Timestamp,
    },
    Finished(Box<Leg>),
}

/// Where a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub source: Source,
}

impl LegTracker {
    pub fn new(cfg: LegConfig, hasher: Hasher) -> Self {
        LegTracker {
            cfg,
            hasher,
            next_id: 1,
            legs: HashMap::default(),
            by_call_id: HashMap::default(),
            events: VecDeque::new(),
            timers: timers::Timers::default(),
            open: 0,
            stats: LegStats::default(),
            hashes: None,
            bytes: 0,
            calling: BTreeSet::new(),
            suspects: BTreeSet::new(),
            removed: Removed::default(),
            gaps: VecDeque::new(),
            ended: Tombs::default(),
        }
    }

    /// Bytes held by the legs (open and lingering) and their indexes,
    /// with the maps' spare capacity.
    pub fn bytes(&self) -> usize {
        self.bytes
            + self.legs.capacity() * (std::mem::size_of::<(LegId, Box<Leg>)>() + 1)
            + self.by_call_id.capacity() * (std::mem::size_of::<(Arc<str>, LegIds)>() + 1)
            + self.ended.bytes()
    }

    /// When the earliest leg timer is due (a transaction timing out, a
    /// call never seen to end, a finished leg leaving).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.first().map(|(t, _)| t)
    }

    /// Legs not yet finished.
    pub fn open_legs(&self) -> usize {
        self.open
    }

    /// Open legs, in id order (for status and snapshots).
    pub fn open_iter(&self) -> impl Iterator<Item = &Leg> {
        let mut v: Vec<&Leg> = self
            .legs
            .values()
            .map(|l| &**l)
            .filter(|l| l.is_open())
            .collect();
        v.sort_by_key(|l| l.id);
        v.into_iter()
    }

    /// Next leg event, in the order things happened.
    pub fn pop_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    pub fn on_message(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage) {
        self.on_sealed(ts, hop, m, None);
    }

    /// As `on_message`, for a message whose phone numbers were removed and
    /// hashed beforehand (`hashes`: From, To, Request-URI, asserted identity).
    pub fn on_sealed(
        &mut self,
        ts: Timestamp,
        hop: Hop,
        m: &SipMessage,
        hashes: Option<&UserHashes>,
    ) {
        self.hashes = hashes.cloned();
        self.apply(ts, hop, m);
        self.hashes = None;
        // re-arm the timers of every leg the message could have touched
        // (the Call-ID's legs looked up once, not once per leg)
        let ids: LegIds = self.candidates(&m.call_id).iter().copied().collect();
        for id in ids {
            self.reschedule(id);
        }
    }

    fn apply(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage) {
        if !self.ended.is_empty() && self.candidates(&m.call_id).is_empty() && self.absorbed(ts, m)
        {
            return;
        }
        match m.kind {
            Kind::Request(Method::Invite) if m.to.tag.is_none() => self.initial_invite(ts, hop, m),
            Kind::Request(Method::Invite) | Kind::Request(Method::Update) => {
                if let Some(id) = self.dialog_leg(hop, m, true) {
                    // a re-INVITE or UPDATE in a dialog: it was established
                    self.answered_in_gap(id, ts);
                    let leg = self.legs.get_mut(&id).expect("indexed leg");
                    leg.last_activity = ts;
                    leg.last_refresh = OptTime::some(ts);
                    if m.session_expires.is_some() {
                        leg.session_expires = m.session_expires;
                    }
                }
            }
            Kind::Request(Method::Cancel) => self.cancel(ts, hop, m),
            Kind::Request(Method::Bye) => self.bye(ts, hop, m),
            Kind::Request(Method::Refer) => {
                if let Some(id) = self.dialog_leg(hop, m, true) {
                    let leg = self.legs.get_mut(&id).expect("indexed leg");
                    if !leg.referred {
                        self.events.push_back(LegEvent::Referred { id, at: ts });
                    }
                    leg.referred = true;
                    leg.last_activity = ts;
                }
            }
            Kind::Request(Method::Ack) => self.ack(ts, hop, m),
            Kind::Request(Method::Prack) | Kind::Request(Method::Info) => {
                if let Some(id) = self.dialog_leg(hop, m, false) {
                    self.legs.get_mut(&id).expect("indexed leg").last_activity = ts;
                }
            }
            Kind::Request(_) => {}
            Kind::Response(code) => match m.cseq_method {
                Method::Invite => self.invite_response(ts, hop, code, m),
                Method::Update if (200..300).contains(&code) => {
                    if let Some(id) = self.dialog_leg(hop, m, false) {
                        let leg = self.legs.get_mut(&id).expect("indexed leg");
                        leg.last_refresh = OptTime::some(ts);
                        if m.session_expires.is_some() {
                            leg.session_expires = m.session_expires;
                        }
                    }
                }
                _ => {}
            },
        }
    }

    /// Whether a message belongs to a finished leg reduced to its tomb:
    /// the rest of its dialog, or a retransmission of its INVITE (counted
    /// as the whole leg would have counted them). A new INVITE reusing the
    /// Call-ID is not absorbed.
    fn absorbed(&mut self, ts: Timestamp, m: &SipMessage) -> bool {
        let Some(t) = self.ended.get(&m.call_id, ts) else {
            return false;
        };
        match m.kind {
            Kind::Request(Method::Invite) if m.to.tag.is_none() => {
                let from_tag = self.ended.key(m.from.tag.as_deref().unwrap_or_default());
                let tx = self.ended.tx(m.via_branch.as_deref(), m.cseq);
                if t.from_tag == from_tag && t.txs[..t.n as usize].contains(&tx) {
                    self.stats.retransmissions += 1;
                    true
                } else {
                    false
                }
            }
            Kind::Response(code) => {
                if m.cseq_method == Method::Invite && code >= 200 {
                    self.stats.late_responses += 1;
                }
                true
            }
            _ => true,
        }
    }

    fn party(&self, user: Option<&str>, i: usize) -> Party {
        match self.hashes.as_ref().and_then(|h| h.0[i]) {
            Some(hash) if user.is_none() => Party {
                hash: Some(hash),
                user: None,
                storable: false,
            },
            _ => self.hasher.party(user),
        }
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    fn candidates(&self, call_id: &str) -> &[LegId] {
        self.by_call_id.get(call_id).map_or(&[], |v| v.as_slice())
    }

    fn initial_invite(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage) {
        let from_tag = m.from.tag.clone().unwrap_or_default();
        let branch = m.via_branch.as_deref();
        let mut merge_into = None;
        let ids: Vec<LegId> = self.candidates(&m.call_id).to_vec();
        for id in &ids {
            let leg = &self.legs[id];
            if leg.from_tag != from_tag {
                continue;
            }
            let same_tx = match branch {
                Some(b) => leg.branches.iter().any(|x| x == b),
                None => leg.initial_cseqs.contains(&m.cseq) && same_hop(leg, &hop),
            };
            if same_tx {
                // a retransmission, or the same packet seen at a second capture point
                let leg = self.legs.get_mut(id).expect("indexed leg");
                leg.retransmissions += 1;
                self.stats.retransmissions += 1;
                // the first retransmission of the latest INVITE comes T1
                // after it (RFC 3261 Timer A); a copy seen at a second
                // capture point comes at once and says nothing
                let latest = match branch {
                    Some(b) => leg.branches.last().is_some_and(|x| x == b),
                    None => leg.initial_cseqs.last() == Some(&m.cseq),
                };
                let gap = ts.since(leg.last_invite);
                if leg.state == State::Calling && leg.t1_seen.is_none() && latest && gap >= T1_MIN {
                    leg.t1_seen = u32::try_from(gap.min(T1_MAX)).ok().and_then(std::num::NonZeroU32::new);
                }
                return;
            }
            if leg.is_open()
                && leg.src.ip() == hop.src.ip()
                && leg.dst == hop.dst
                && leg.transport == hop.transport
            {
                merge_into = Some(*id);
            }
        }
        if let Some(id) = merge_into {
            let leg = self.legs.get_mut(&id).expect("indexed leg");
            if let Some(b) = branch {
                leg.branches.push(b.into());
            }
            leg.initial_cseqs.push(m.cseq);
            leg.last_invite = ts;
            leg.last_activity = ts;
            leg.t1_seen = None;
            leg.media = leg.media.or(m.media);
            if leg.state == State::Challenged {
                leg.state = State::Calling;
                leg.final_status = None;
                leg.final_at = OptTime::NONE;
                leg.challenged_at = OptTime::NONE;
                leg.challenges += 1;
                self.stats.challenges += 1;
            } else {
                self.stats.merged_invites += 1;
            }
            return;
        }
        if self.open >= self.cfg.max_legs {
            self.evict_oldest(ts);
        }
        let id = LegId(self.next_id);
        self.next_id += 1;
        let call_id: Arc<str> = m.call_id.as_str().into();
        let leg = Leg {
            id,
            call_id: Arc::clone(&call_id),
            from_tag: from_tag.into(),
            to_tag: None,
            forks: SmallVec::new(),
            src: hop.src,
            dst: hop.dst,
            transport: hop.transport,
            source: hop.source,
            started: ts,
            ringing: OptTime::NONE,
            answered: OptTime::NONE,
            ended: OptTime::NONE,
            final_status: None,
            final_at: OptTime::NONE,
            end: None,
            ended_by: None,
            from: self.party(m.from.user.as_deref(), 0),
            to: self.party(m.to.user.as_deref(), 1),
            ruri: self.party(m.ruri_user.as_deref(), 2),
            asserted: self.party(m.asserted_user.as_deref(), 3),
            session_expires: m.session_expires,
            extra: LegExtra::boxed(None, m.headers.clone()),
            referred: false,
            partial: false,
            retransmissions: 0,
            challenges: 0,
            state: State::Calling,
            branches: branch.map(CompactString::from).into_iter().collect(),
            initial_cseqs: smallvec::smallvec![m.cseq],
            last_invite: ts,
            last_activity: ts,
            last_refresh: OptTime::NONE,
            challenged_at: OptTime::NONE,
            cancelled_at: OptTime::NONE,
            timer: OptTime::NONE,
            t1_seen: None,
            acct: 0,
            suspect: false,
            media: m.media,
        };
        self.events
            .push_back(LegEvent::Started(Box::new(leg.clone())));
        self.legs.insert(id, Box::new(leg));
        self.by_call_id.entry(call_id).or_default().push(id);
        self.open += 1;
        self.stats.legs_started += 1;
    }

    /// A leg for a response to an INVITE that was not seen (sent during a
    /// capture gap or a restart): it went the other way, it is partial, and
    /// it starts when first seen.
    /// `towards_callee`: the message went the INVITE's way (CANCEL, ACK),
    /// not back (responses). The leg starts at the start of the gap the
    /// INVITE fell in, if there was one lately, else when first seen.
    fn adopt(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage, towards_callee: bool) -> LegId {
        self.stats.adopted += 1;
        let invite = if towards_callee {
            hop
        } else {
            Hop {
                src: hop.dst,
                dst: hop.src,
                ..hop
            }
        };
        let mut as_invite = m.clone();
        as_invite.to.tag = None;
        as_invite.kind = Kind::Request(Method::Invite);
        as_invite.cseq_method = Method::Invite;
        as_invite.media = None; // not the initial offer
        let gap = self.gap_before(ts);
        let started = gap.map_or(ts, |g| g.0);
        self.initial_invite(started, invite, &as_invite);
        let id = LegId(self.next_id - 1);
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.partial = true;
            leg.last_invite = ts;
            leg.last_activity = ts;
        }
        if let Some(LegEvent::Started(l)) = self.events.back_mut() {
            if l.id == id {
                l.partial = true;
            }
        }
        id
    }

    /// The leg an INVITE response or CANCEL belongs to. The transaction
    /// (Call-ID and top Via branch, RFC 3261 17.1.3) decides; without a
    /// branch match, the From-tag must match and the hop decides.
    fn transaction_leg(&self, hop: Hop, m: &SipMessage) -> Option<LegId> {
        let from_tag = m.from.tag.as_deref().unwrap_or("");
        let mut best: Option<(u8, LegId)> = None;
        for id in self.candidates(&m.call_id) {
            let leg = &self.legs[id];
            let branch_match = match &m.via_branch {
                Some(b) => leg.branches.iter().any(|x| x == b),
                None => false,
            };
            let tag_match = leg.from_tag == from_tag;
            if !branch_match && !tag_match {
                continue;
            }
            let score = hop_score(leg, &hop)
                + if branch_match { 16 } else { 0 }
                + if tag_match { 4 } else { 0 };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// The open leg an in-dialog request belongs to. Counts an orphan when
    /// `count_orphan` and no leg of the dialog is known at all.
    fn dialog_leg(&mut self, hop: Hop, m: &SipMessage, count_orphan: bool) -> Option<LegId> {
        let ids = self.dialog_legs(hop, m);
        if ids.is_empty() && count_orphan {
            self.stats.orphans += 1;
        }
        ids.into_iter().find(|id| self.legs[id].is_open())
    }

    /// Legs of the message's dialog (tags in either direction), those with
    /// the best hop score only, in id order.
    fn dialog_legs(&self, hop: Hop, m: &SipMessage) -> Vec<LegId> {
        let ft = m.from.tag.as_deref().unwrap_or("");
        let tt = m.to.tag.as_deref();
        let mut scored: Vec<(u8, LegId)> = Vec::new();
        for id in self.candidates(&m.call_id) {
            let leg = &self.legs[id];
            // a remote tag is known if a response carried it, or if no
            // response was seen at all (we cannot tell)
            let known = |t: &str| {
                leg.to_tag.as_deref() == Some(t)
                    || leg.forks.iter().any(|f| f == t)
                    || (leg.to_tag.is_none() && leg.forks.is_empty())
            };
            let forward = leg.from_tag == ft && tt.is_none_or(known);
            let backward = tt == Some(leg.from_tag.as_str()) && known(ft);
            if forward || backward {
                scored.push((hop_score(leg, &hop), *id));
            }
        }
        let max = scored.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let mut ids: Vec<LegId> = scored
            .into_iter()
            .filter(|(s, _)| *s == max)
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn invite_response(&mut self, ts: Timestamp, hop: Hop, code: u16, m: &SipMessage) {
        let id = match self.transaction_leg(hop, m) {
            Some(id) => id,
            None if self.cfg.adopt_orphans && self.candidates(&m.call_id).is_empty() => {
                self.adopt(ts, hop, m, false)
            }
            None => {
                self.stats.orphans += 1;
                return;
            }
        };
        let leg = self.legs.get_mut(&id).expect("indexed leg");
        let initial = match &m.via_branch {
            Some(b) => leg.branches.iter().any(|x| x == b),
            None => leg.initial_cseqs.contains(&m.cseq),
        };
        if !initial {
            // a response to a re-INVITE: a refresh if successful
            if (200..300).contains(&code) && leg.is_open() {
                leg.last_refresh = OptTime::some(ts);
                if m.session_expires.is_some() {
                    leg.session_expires = m.session_expires;
                }
            }
            return;
        }
        if leg.state == State::Ended {
            if code >= 200 {
                self.stats.late_responses += 1;
            }
            return;
        }
        leg.last_activity = ts;
        if let Some(tag) = &m.to.tag {
            if leg.forks.len() < 16 && !leg.forks.iter().any(|f| f == tag) {
                leg.forks.push(tag.as_str().into());
            }
        }
        match code {
            100 => {
                if leg.state == State::Calling {
                    leg.state = State::Proceeding;
                }
            }
            101..=199 => {
                if leg.ringing.is_none() {
                    leg.ringing = OptTime::some(ts);
                    self.events.push_back(LegEvent::Ringing { id, at: ts });
                }
                if leg.answered.is_none() && m.to.tag.is_some() {
                    leg.to_tag = m.to.tag.as_deref().map(CompactString::from);
                }
                if leg.state == State::Calling {
                    leg.state = State::Proceeding;
                }
            }
            200..=299 => {
                if leg.answered.is_none() {
                    leg.answered = OptTime::some(ts);
                    self.events.push_back(LegEvent::Answered { id, at: ts });
                    leg.final_status = Some(code);
                    leg.final_at = OptTime::some(ts);
                    leg.to_tag = m.to.tag.as_deref().map(CompactString::from);
                    leg.state = State::Confirmed;
                    leg.challenged_at = OptTime::NONE;
                    if m.session_expires.is_some() {
                        leg.session_expires = m.session_expires;
                    }
                    if leg.cancelled_at.is_some() {
                        // CANCEL raced the 200: the answer wins
                        leg.cancelled_at = OptTime::NONE;
                        leg.ended_by = None;
                        self.stats.cancel_after_answer += 1;
                    }
                }
            }
            _ => {
                if leg.answered.is_some() {
                    return; // a sibling fork's error after the answer
                }
                leg.final_status = Some(code);
                leg.final_at = OptTime::some(ts);
                if m.to.tag.is_some() {
                    leg.to_tag = m.to.tag.as_deref().map(CompactString::from);
                }
                if matches!(code, 401 | 407 | 422) && leg.cancelled_at.is_none() {
                    leg.state = State::Challenged;
                    leg.challenged_at = OptTime::some(ts);
                    return;
                }
                let (end, at, by) = match leg.cancelled_at.get() {
                    Some(c) => (EndReason::Cancel, c, Side::Caller),
                    None if code == 487 => (EndReason::Cancel, ts, Side::Caller),
                    None => (EndReason::Rejected, ts, Side::Callee),
                };
                self.finish(id, end, at, Some(by));
            }
        }
    }

    fn cancel(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage) {
        let id = match self.transaction_leg(hop, m) {
            Some(id) => id,
            // its INVITE fell in a gap: the call rang, and the caller gave up
            None if self.cfg.adopt_orphans && self.candidates(&m.call_id).is_empty() => {
                let id = self.adopt(ts, hop, m, true);
                let leg = self.legs.get_mut(&id).expect("adopted leg");
                leg.state = State::Proceeding;
                id
            }
            None => {
                self.stats.orphans += 1;
                return;
            }
        };
        let leg = self.legs.get_mut(&id).expect("indexed leg");
        if !leg.is_open() {
            return;
        }
        if leg.answered.is_some() {
            self.stats.cancel_after_answer += 1;
            return;
        }
        leg.last_activity = ts;
        if leg.cancelled_at.is_none() {
            leg.cancelled_at = OptTime::some(ts);
            leg.ended_by = Some(Side::Caller);
            leg.set_reason(m.reason.clone());
        }
        leg.state = State::Cancelling;
    }

    /// An ACK: for a 2xx it shows the dialog was established; for an error
    /// (the INVITE's own branch) that the call was turned down. Either
    /// tells the outcome of a leg whose response fell in a capture gap. An
    /// ACK naming no leg, after a gap, adopts the answered dialog.
    fn ack(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage) {
        let Some(id) = self.dialog_leg(hop, m, false) else {
            if self.cfg.adopt_orphans
                && m.to.tag.is_some()
                && self.candidates(&m.call_id).is_empty()
            {
                if let Some(g) = self.gap_before(ts) {
                    let id = self.adopt(ts, hop, m, true);
                    let leg = self.legs.get_mut(&id).expect("adopted leg");
                    leg.to_tag = m.to.tag.as_deref().map(CompactString::from);
                    leg.forks
                        .extend(m.to.tag.as_deref().map(CompactString::from));
                    leg.state = State::Proceeding;
                    self.answer_in(id, g);
                }
            }
            return;
        };
        let leg = self.legs.get_mut(&id).expect("indexed leg");
        let error_ack = leg.answered.is_none()
            && m.via_branch
                .as_ref()
                .is_some_and(|b| leg.branches.iter().any(|x| x == b));
        if !error_ack {
            self.answered_in_gap(id, ts);
            self.legs.get_mut(&id).expect("indexed leg").last_activity = ts;
            return;
        }
        // the final error response was not seen: only its ACK was
        let last = leg.last_activity;
        let Some(g) = self.gap_after(last).filter(|g| g.1 <= ts) else {
            return;
        };
        let leg = self.legs.get_mut(&id).expect("indexed leg");
        leg.partial = true;
        let (end, at, by) = match leg.cancelled_at.get() {
            Some(c) => (EndReason::Cancel, c, Side::Caller),
            None => (EndReason::Rejected, g.0, Side::Callee),
        };
        self.finish(id, end, at, Some(by));
    }

    /// A message in an established dialog seen on a leg whose answer was
    /// not: the answer fell in a capture gap after the leg's last message.
    /// The leg is answered when the gap ended (at the latest), partial.
    /// Without such a gap nothing changes (the answer was missed some
    /// other way, and the leg stays as its messages show).
    fn answered_in_gap(&mut self, id: LegId, ts: Timestamp) {
        let Some(leg) = self.legs.get(&id) else {
            return;
        };
        if leg.answered.is_some() || !leg.is_open() {
            return;
        }
        if let Some(g) = self.gap_after(leg.last_activity).filter(|g| g.1 <= ts) {
            self.answer_in(id, g);
        }
    }

    /// The leg was answered during gap `g`: at its end, the latest the
    /// answer can have been.
    fn answer_in(&mut self, id: LegId, g: (Timestamp, Timestamp)) {
        let leg = self.legs.get_mut(&id).expect("leg");
        let at = g.1.max(leg.started);
        leg.answered = OptTime::some(at);
        leg.final_status = Some(200);
        leg.final_at = OptTime::some(at);
        leg.state = State::Confirmed;
        leg.partial = true;
        leg.cancelled_at = OptTime::NONE;
        leg.challenged_at = OptTime::NONE;
        self.events.push_back(LegEvent::Answered { id, at });
    }

    fn bye(&mut self, ts: Timestamp, hop: Hop, m: &SipMessage) {
        let ids = self.dialog_legs(hop, m);
        let open: Vec<LegId> = ids
            .into_iter()
            .filter(|id| self.legs[id].is_open())
            .collect();
        if open.is_empty() {
            // retransmitted BYE, or a BYE after a rejection (some UAs do that)
            if self.candidates(&m.call_id).is_empty() {
                self.stats.orphans += 1;
            }
            return;
        }
        for id in open {
            self.answered_in_gap(id, ts);
            let leg = self.legs.get_mut(&id).expect("indexed leg");
            if leg.answered.is_none() {
                // BYE implies an established dialog whose 2xx we did not see
                leg.partial = true;
            }
            let by = if m.from.tag.as_deref().unwrap_or("") == leg.from_tag {
                Side::Caller
            } else {
                Side::Callee
            };
            leg.set_reason(m.reason.clone());
            self.finish(id, EndReason::Bye, ts, Some(by));
        }
    }

    fn finish(&mut self, id: LegId, end: EndReason, at: Timestamp, by: Option<Side>) {
        let leg = match self.legs.get_mut(&id) {
            Some(l) if l.is_open() => l,
            _ => return,
        };
        leg.state = State::Ended;
        leg.end = Some(end);
        leg.ended = OptTime::some(at.max(leg.started));
        if by.is_some() {
            leg.ended_by = by;
        }
        self.open -= 1;
        self.stats.legs_finished += 1;
        crate::count_by_name(&mut self.stats.by_end, end.name());
        self.events.push_back(LegEvent::Finished(leg.clone()));
        // while it lingers the leg only absorbs retransmissions: keep what
        // matching needs, drop the rest
        for p in [&mut leg.from, &mut leg.to, &mut leg.ruri, &mut leg.asserted] {
            *p = Party::default();
        }
        leg.extra = None;
        self.reschedule(id);
    }

    /// Moves the leg's entry in `timers` to its current due time, and
    /// brings its byte count and its place in the no-response sets up to
    /// date (called after every change to a leg).
    fn reschedule(&mut self, id: LegId) {
        let Some(leg) = self.legs.get(&id) else {
            return;
        };
        let due = match leg.state {
            // at the next tick: reduced to a tomb, or left to linger whole
            State::Ended => Some(leg.ended.get().unwrap_or(leg.started)),
            _ => self.deadline(leg).map(|(at, _, _)| at),
        };
        let key = (leg.started, id);
        if leg.state == State::Calling {
            self.calling.insert(key);
            if leg.suspect {
                self.suspects.insert(key);
            }
        } else {
            self.calling.remove(&key);
            self.suspects.remove(&key);
        }
        let old = leg.timer.get();
        let leg = self.legs.get_mut(&id).expect("leg");
        let bytes = leg_bytes(leg);
        self.bytes = self.bytes + bytes - leg.acct;
        leg.acct = bytes;
        if due == old {
            return;
        }
        leg.timer = due.into();
        if let Some(t) = due {
            self.timers.push(t, id);
        }
        self.tidy_timers();
    }

    /// Keeps the earliest timer a leg's current one (the old entries of a
    /// leg whose timer moved, or that is gone, are dropped from the top),
    /// and the heap within twice the legs.
    fn tidy_timers(&mut self) {
        if self.timers.wants_rebuild(self.legs.len()) {
            self.timers.rebuild(self.legs.values().filter_map(|l| l.timer.get().map(|t| (t, l.id))));
        }
        let legs = &self.legs;
        self.timers.drop_stale(|at, id| legs.get(&id).is_some_and(|l| l.timer.get() == Some(at)));
    }

    /// When an open leg's timer fires, and what it does then. A leg open
    /// across a capture gap that has shown nothing since: not answered, it
    /// closes `gap_timeout` after the gap (if that is sooner); answered,
    /// its silence is normal and it keeps its timers, but an end it was
    /// never seen to reach is put at the gap's start, never later.
    fn deadline(&self, leg: &Leg) -> Option<(Timestamp, EndReason, Timestamp)> {
        let normal = self.timer_deadline(leg)?;
        let last = leg
            .last_activity
            .max(leg.last_refresh.get().unwrap_or(leg.last_activity));
        let Some(g) = leg.partial.then(|| self.gap_after(last)).flatten() else {
            return Some(normal);
        };
        let (at, end, ended) = normal;
        match leg.state {
            State::Calling | State::Proceeding => {
                let gap_at = g.1.add(self.cfg.gap_timeout);
                Some(if gap_at < at {
                    (gap_at, EndReason::Timeout, g.0)
                } else {
                    (at, end, ended.min(g.0))
                })
            }
            State::Confirmed => Some((at, end, ended.min(g.0))),
            _ => Some(normal),
        }
    }

    fn timer_deadline(&self, leg: &Leg) -> Option<(Timestamp, EndReason, Timestamp)> {
        let tx = 64 * self.cfg.t1;
        match leg.state {
            State::Calling => {
                // Timer B: 64 times the sender's T1 (as its retransmissions
                // showed it, else the configured one) after its last INVITE
                let at = leg.last_invite.add(64 * leg.t1_seen.map_or(self.cfg.t1, |t| Micros::from(t.get())));
                Some((at, EndReason::Timeout, at))
            }
            State::Proceeding if leg.ringing.is_none() => {
                // only `100 Trying`: the next hop has the INVITE, nothing
                // rang; a proxy gives such a transaction up at Timer C, so
                // the ring timeout applies only within it
                Some((
                    leg.last_activity.add(self.cfg.ring_timeout.min(TIMER_C)),
                    EndReason::Timeout,
                    leg.last_activity,
                ))
            }
            State::Proceeding => Some((
                leg.last_activity.add(self.cfg.ring_timeout),
                EndReason::Timeout,
                leg.last_activity,
            )),
            State::Challenged => {
                let c = leg.challenged_at.get().unwrap_or(leg.last_activity);
                Some((c.add(tx), EndReason::Rejected, c))
            }
            State::Cancelling => {
                let c = leg.cancelled_at.get().unwrap_or(leg.last_activity);
                Some((c.add(tx), EndReason::Cancel, c))
            }
            State::Confirmed => {
                let answered = leg.answered.get().unwrap_or(leg.started);
                let mut at = answered.add(self.cfg.max_call);
                if let Some(se) = leg.session_expires.filter(|s| *s > 0) {
                    let from = leg.last_refresh.get().unwrap_or(answered).max(answered);
                    at = at.min(from.add(se as i64 * SECOND));
                }
                Some((at, EndReason::Inferred, at))
            }
            State::Ended => None,
        }
    }

    /// Runs timers up to `now` (packet time), earliest first.
    pub fn tick(&mut self, now: Timestamp) {
        // tables a flood grew give their room back once mostly empty
        shrink(&mut self.legs);
        shrink(&mut self.by_call_id);
        self.ended.expire(now);
        while let Some((at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(leg) = self.legs.get_mut(&id) else {
                continue;
            };
            if leg.timer.get() != Some(at) {
                continue; // a stale entry: the leg's timer moved
            }
            leg.timer = OptTime::NONE;
            if leg.state == State::Ended {
                let until = leg.ended.get().unwrap_or(leg.started).add(self.cfg.linger);
                if until > now {
                    let leg = &self.legs[&id];
                    if self
                        .by_call_id
                        .get(&leg.call_id)
                        .is_some_and(|v| v.len() == 1)
                    {
                        // alone in its Call-ID: a tomb absorbs the rest
                        self.ended.bury(leg, until);
                    } else {
                        // another leg shares the Call-ID (a proxy's hops):
                        // lingers whole, so that its messages go to the right one
                        self.legs.get_mut(&id).expect("leg").timer = OptTime::some(until);
                        self.timers.push(until, id);
                        continue;
                    }
                }
                self.forget(id);
                continue;
            }
            match self.deadline(&self.legs[&id]) {
                Some((due, end, ended)) if due <= now => {
                    let by = match end {
                        EndReason::Cancel => Some(Side::Caller),
                        EndReason::Rejected => Some(Side::Callee),
                        _ => None,
                    };
                    self.finish(id, end, ended, by);
                }
                _ => self.reschedule(id),
            }
        }
        self.tidy_timers();
    }

    /// Closes every open leg at `now` (end of input, or shutdown without a
    /// snapshot): answered ones as `inferred`, others as `timeout`.
    pub fn finish_all(&mut self, now: Timestamp) {
        let mut ids: Vec<LegId> = self
            .legs
            .values()
            .filter(|l| l.is_open())
            .map(|l| l.id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let leg = &self.legs[&id];
            let (end, at) = match leg.state {
                State::Confirmed => (EndReason::Inferred, now),
                State::Challenged => (EndReason::Rejected, leg.challenged_at.get().unwrap_or(now)),
                State::Cancelling => (EndReason::Cancel, leg.cancelled_at.get().unwrap_or(now)),
                _ => (EndReason::Inferred, now),
            };
            let by = match end {
                EndReason::Cancel => Some(Side::Caller),
                EndReason::Rejected => Some(Side::Callee),
                _ => None,
            };
            self.finish(id, end, at, by);
        }
    }

    fn evict_oldest(&mut self, now: Timestamp) {
        let oldest = self
            .legs
            .values()
            .filter(|l| l.is_open())
            .min_by_key(|l| (l.last_activity, l.id))
            .map(|l| l.id);
        if let Some(id) = oldest {
            self.stats.legs_evicted += 1;
            self.finish(id, EndReason::Inferred, now, None);
        }
    }

    fn forget(&mut self, id: LegId) {
        self.remove_leg(id);
    }

    /// Removes a leg and its index entries, without an event.
    fn remove_leg(&mut self, id: LegId) -> Option<Leg> {
        let leg = *self.legs.remove(&id)?;
        // its timer's entry is stale now
        self.tidy_timers();
        self.calling.remove(&(leg.started, id));
        self.suspects.remove(&(leg.started, id));
        self.bytes -= leg.acct;
        if leg.is_open() {
            self.open -= 1;
        }
        if let Some(v) = self.by_call_id.get_mut(&leg.call_id) {
            v.retain(|x| *x != id);
            if v.is_empty() {
                self.by_call_id.remove(&leg.call_id);
            }
        }
        Some(leg)
    }

    /// Forgets a leg that is not a patient's call (set aside by the call
    /// layer), open or lingering, without a `Finished` event.
    pub fn set_aside(&mut self, id: LegId) -> Option<RemovedLeg> {
        let leg = self.remove_leg(id)?;
        self.removed.set_aside += 1;
        if leg.is_open() {
            self.removed.set_aside_open += 1;
        }
        Some(RemovedLeg {
            id,
            call_id: leg.call_id.to_string(),
            src: leg.src,
        })
    }

    /// Marks an open leg as coming from a sender in a burst: the first to
    /// be shed while it has no response.
    pub fn mark_suspect(&mut self, id: LegId) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.suspect = true;
            self.reschedule(id);
        }
    }

    /// Frees at least `need` bytes, if it can, by removing open legs that
    /// got no response at all: those from senders in a burst first, then
    /// the oldest. `may_shed` vetoes legs (those of calls with other legs).
    /// The legs leave without a `Finished` event: they are not counted.
    pub fn shed(
        &mut self,
        need: usize,
        mut may_shed: impl FnMut(LegId) -> bool,
    ) -> Vec<RemovedLeg> {
        let mut victims = Vec::new();
        let mut freed = 0;
        for (pass, set) in [&self.suspects, &self.calling].into_iter().enumerate() {
            for (_, id) in set.iter() {
                if freed >= need {
                    break;
                }
                let leg = &self.legs[id];
                if pass == 1 && leg.suspect {
                    continue; // considered in the first pass
                }
                if leg.state == State::Calling && may_shed(*id) {
                    freed += leg.acct;
                    victims.push(*id);
                }
            }
        }
        let mut out = Vec::with_capacity(victims.len());
        for id in victims {
            if let Some(leg) = self.remove_leg(id) {
                self.removed.shed += 1;
                out.push(RemovedLeg {
                    id,
                    call_id: leg.call_id.to_string(),
                    src: leg.src,
                });
            }
        }
        out
    }

    /// Marks every open leg as seen only in part (a gap in the capture).
    pub fn mark_gap(&mut self, from: Timestamp, to: Timestamp) -> usize {
        self.note_gap(from, to);
        let ids: Vec<LegId> = self
            .legs
            .values()
            .filter(|l| l.is_open())
            .map(|l| l.id)
            .collect();
        for id in &ids {
            self.legs.get_mut(id).expect("leg").partial = true;
            // its timer may now be the gap's
            self.reschedule(*id);
        }
        ids.len()
    }

    /// Remembers a capture gap without marking anything (gaps recorded
    /// before a restart, given back by the daemon after restoring).
    /// A gap already known (same start) is extended to `to`.
    pub fn note_gap(&mut self, from: Timestamp, to: Timestamp) {
        let gap = (from.min(to), to);
        if let Some(g) = self.gaps.iter_mut().find(|g| g.0 == gap.0) {
            g.1 = g.1.max(gap.1);
            return;
        }
        let at = self
            .gaps
            .iter()
            .position(|g| g.0 > gap.0)
            .unwrap_or(self.gaps.len());
        self.gaps.insert(at, gap);
        while self.gaps.len() > GAPS_KEPT {
            self.gaps.pop_front();
        }
    }

    /// The first capture gap that began at or after `t` and ended by
    /// `now`: for a leg whose last message was at `t`, the gap its unseen
    /// end may have fallen in.
    fn gap_after(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        self.gaps.iter().copied().find(|g| g.0 >= t)
    }

    /// The gap an unseen INVITE answered at `ts` was sent in: the latest
    /// gap that ended before `ts`, no longer ago than an INVITE
    /// transaction can ring.
    fn gap_before(&self, ts: Timestamp) -> Option<(Timestamp, Timestamp)> {
        self.gaps
            .iter()
            .rev()
            .copied()
            .find(|g| g.1 <= ts && ts.since(g.1) <= self.cfg.ring_timeout)
    }

    /// Serialisable state: open and lingering legs, the id counter, counters.
    pub fn snapshot(&self) -> LegSnapshot {
        let mut legs: Vec<Leg> = self.legs.values().map(|l| (**l).clone()).collect();
        legs.sort_by_key(|l| l.id);
        LegSnapshot {
            next_id: self.next_id,
            legs,
            stats: self.stats.clone(),
        }
    }

    /// The same as [`snapshot`](Self::snapshot), borrowing instead of
    /// copying the legs (for writing a large state without doubling memory).
    pub fn snapshot_ref(&self) -> LegSnapshotRef<'_> {
        let mut legs: Vec<&Leg> = self.legs.values().map(|l| &**l).collect();
        legs.sort_by_key(|l| l.id);
        LegSnapshotRef {
            next_id: self.next_id,
            legs,
            stats: &self.stats,
        }
    }

    /// Restores a snapshot taken by [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, snap: LegSnapshot) {
        self.legs.clear();
        self.by_call_id.clear();
        self.timers.clear();
        self.calling.clear();
        self.suspects.clear();
        self.bytes = 0;
        self.next_id = snap.next_id;
        self.stats = snap.stats;
        self.open = 0;
        for mut leg in snap.legs {
            if leg.is_open() {
                self.open += 1;
            }
            // armed and counted again below (a snapshot taken in memory
            // carries the due time and bytes it had, which would read as
            // already armed and already counted)
            leg.timer = OptTime::NONE;
            leg.acct = 0;
            let id = leg.id;
            self.by_call_id
                .entry(leg.call_id.clone())
                .or_default()
                .push(id);
            self.legs.insert(id, Box::new(leg));
            self.reschedule(id);
        }
    }
}

/// A borrowed [`LegSnapshot`], for writing a large state without copying it.
pub struct LegSnapshotRef<'a> {
    pub next_id: u64,
    pub legs: Vec<&'a Leg>,
    pub stats: &'a LegStats,
}

/// The legs that must survive a restart. Written to disk only through
/// [`crate::persist`], which has its own versioned shape.
#[derive(Clone, Debug)]
pub struct LegSnapshot {
    pub next_id: u64,
    pub legs: Vec<Leg>,
    pub stats: LegStats,
}

/// Shrinks a map that is less than a quarter full (and not small).
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 1024 && m.len() * 4 < m.capacity() {
        m.shrink_to(m.len() * 2);
    }
}

fn same_hop(leg: &Leg, hop: &Hop) -> bool {
    (leg.src == hop.src && leg.dst == hop.dst) || (leg.src == hop.dst && leg.dst == hop.src)
}

/// How well a message's addresses fit a leg's hop: 3 exact (either
/// direction), 2 same address pair (ports differ), 1 one address shared.
fn hop_score(leg: &Leg, hop: &Hop) -> u8 {
    if same_hop(leg, hop) {
        return 3;
    }
    let (a, b) = (leg.src.ip(), leg.dst.ip());
    let (x, y) = (hop.src.ip(), hop.dst.ip());
    if (a == x && b == y) || (a == y && b == x) {
        2
    } else if a == x || a == y || b == x || b == y {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
