//! Calls: legs correlated into patient calls, and each call's outcome.
//!
//! One inbound trunk leg (carrier side to the site) is one call. Staff legs
//! (to handsets) and automated legs (IVR, queue, voicemail, callback
//! servers) are attached to it by, in order: the same Call-ID (proxy
//! topology), a configured correlation header carrying the trunk Call-ID, or
//! the B2BUA heuristic (same caller identity, starting while the trunk leg is
//! up; ambiguity resolved earliest-unanswered-first and counted). The call
//! ends with its trunk leg; after a short settle time for its other legs it
//! is finalised and its outcome decided by the rules of
//! `docs/cbt-indicators.md` (the table of `cbt-metrics.md`).
//!
//! Callbacks: a call whose caller asked for a callback waits for an
//! outbound call to the same number (matched by keyed hash) within the
//! configured window; one request counts at most one callback made.

use crate::guard::{self, Bursts, Evidence, Why};
use crate::leg::{EndReason, Leg, LegEvent, LegId, Side};
use crate::number::NumHash;
use crate::site::{Endpoint, Site};
use crate::time::{Micros, OptTime, Timestamp, HOUR};
use ahash::HashMap;
use chrono::{Duration, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

/// The one outcome of an inbound call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A person in the practice answered (CBT003, CBT007).
    Answered,
    /// Ended during automated routing, never offered to staff (CBT002).
    EndedInIvr,
    /// Expected a person, nobody answered; voicemail counts here (CBT004).
    Missed,
    /// The caller asked for a callback and no staff answered (CBT005).
    CallbackRequested,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Answered,
        Outcome::EndedInIvr,
        Outcome::Missed,
        Outcome::CallbackRequested,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::EndedInIvr => "ended_in_ivr",
            Outcome::Missed => "missed",
            Outcome::CallbackRequested => "callback_requested",
        }
    }
}

/// Who ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Caller,
    Practice,
    /// The end was never seen (lost BYE, capture gap, restart): closed by a
    /// timer or the end of input.
    Inferred,
}

impl EndedBy {
    pub fn name(self) -> &'static str {
        match self {
            EndedBy::Caller => "caller",
            EndedBy::Practice => "practice",
            EndedBy::Inferred => "inferred",
        }
    }
}

/// How the call's other legs were tied to its trunk leg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    pub same_call_id: u16,
    pub header: u16,
    pub b2bua: u16,
}

/// A finished inbound call. No caller number is printed from it; `caller`
/// is a keyed hash kept for callback matching only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Sequence number, unique per engine (and per store, for the daemon).
    pub seq: u64,
    /// The trunk leg's Call-ID: kept for troubleshooting and tests, never
    /// printed with the call.
    #[serde(default)]
    pub call_id: String,
    pub practice: String,
    pub started: Timestamp,
    pub queue_joined: Option<Timestamp>,
    pub first_ring: Option<Timestamp>,
    pub answered: Option<Timestamp>,
    pub ended: Timestamp,
    pub ended_by: EndedBy,
    pub outcome: Outcome,
    /// Seconds waited for a person (answered and missed calls).
    pub wait_s: Option<f64>,
    /// Seconds of conversation (answered calls).
    pub duration_s: Option<f64>,
    pub abandoned: bool,
    /// When the call moved to voicemail, if it did.
    pub voicemail: Option<Timestamp>,
    /// When the callback was requested, if it was.
    pub callback_requested: Option<Timestamp>,
    /// When the callback was made (set later, by a `CallbackMade` event).
    pub callback_made: Option<Timestamp>,
    /// A staff leg was attempted.
    pub offered_to_staff: bool,
    /// Legs that made up the call (trunk included).
    pub legs: u32,
    pub correlation: Correlation,
    /// Part of the call was not seen (a leg marked partial, or its end inferred).
    pub partial: bool,
    /// Keyed hash of the caller's number. Never printed or uploaded.
    pub caller: Option<String>,
}

/// What the call layer reports.
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    Finished(Box<CallRecord>),
    /// An outbound call made the callback a finished call asked for.
    CallbackMade {
        seq: u64,
        practice: String,
        requested: Timestamp,
        at: Timestamp,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auto {
    Ivr,
    Queue,
    Voicemail,
    Callback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    TrunkIn,
    TrunkOut,
    Staff,
    Automated(Auto),
    Other,
    /// The caller's new leg after a transfer (see [`Transfer`]).
    Continued,
    /// From an unexpected sender (with `network.carrier` set): not a call.
    Unexpected,
    /// A handset dialling a pickup code (`network.pickup_codes`): the call
    /// it picks up is known when the PBX answers it.
    Pickup,
}

/// A leg dialling a pickup code that the PBX has not answered yet.
#[derive(Clone, Debug)]
struct PendingPickup {
    info: LegInfo,
    call_id: Arc<str>,
}

/// Pickup legs awaiting their answer, at most (a handset redialling a code
/// is a handful; beyond this they are counted as other legs).
const PENDING_PICKUPS_MAX: usize = 256;

/// What the call layer keeps of a leg.
#[derive(Clone, Debug)]
pub(crate) struct LegInfo {
    pub(crate) id: LegId,
    /// Where the leg's INVITE went (tells ring-group legs apart).
    pub(crate) dst: std::net::SocketAddr,
    pub(crate) started: Timestamp,
    /// 8 bytes each, not 16 ([`OptTime`]): a call keeps one of these per leg.
    pub(crate) ringing: OptTime,
    pub(crate) answered: OptTime,
    pub(crate) ended: OptTime,
    pub(crate) end: Option<EndReason>,
    pub(crate) ended_by: Option<Side>,
    pub(crate) partial: bool,
    /// A callback request header was on this leg.
    pub(crate) callback_header: bool,
    /// The final response to its INVITE (once it ended).
    pub(crate) final_status: Option<u16>,
    /// What it dialled when that is short (an extension, a pickup code:
    /// `201`, `**201`), for a directed pickup. In memory only.
    pub(crate) dialled: Option<Box<str>>,
}

/// Longest dialled string a [`LegInfo`] keeps (extensions and codes, never
/// a phone number).
const SHORT_DIALLED: usize = 8;

impl LegInfo {
    fn new(leg: &Leg, callback_header: bool) -> LegInfo {
        LegInfo {
            id: leg.id,
            dst: leg.dst,
            started: leg.started,
            ringing: leg.ringing,
            answered: leg.answered,
            ended: leg.ended,
            end: leg.end,
            ended_by: leg.ended_by,
            partial: leg.partial,
            callback_header,
            final_status: leg.final_status,
            dialled: CallTracker::dialled_user(leg)
                .filter(|u| u.len() <= SHORT_DIALLED)
                .map(Into::into),
        }
    }

    fn update(&mut self, leg: &Leg) {
        self.ringing = leg.ringing;
        self.answered = leg.answered;
        self.ended = leg.ended;
        self.end = leg.end;
        self.ended_by = leg.ended_by;
        self.partial = leg.partial;
        self.final_status = leg.final_status;
    }
}

#[derive(Clone, Debug)]
pub(crate) struct OpenCall {
    pub(crate) seq: u64,
    pub(crate) practice: compact_str::CompactString,
    pub(crate) caller: Option<NumHash>,
    pub(crate) trunk_call_id: Arc<str>,
    pub(crate) trunk: LegInfo,
    /// The trunk leg went straight to a staff endpoint (a direct call).
    pub(crate) direct_staff: bool,
    /// The trunk leg went straight to an automated endpoint.
    pub(crate) direct_auto: Option<Auto>,
    pub(crate) staff: Vec<LegInfo>,
    pub(crate) auto: Vec<(Auto, LegInfo)>,
    pub(crate) correlation: Correlation,
    /// Set when the trunk leg finished: finalise by then at the latest.
    pub(crate) settle_until: OptTime,
    /// What the scanner rule needs (in memory only).
    pub(crate) guard: CallGuard,
    /// What the trunk leg carried that other legs of the call may repeat.
    pub(crate) signals: CallSignals,
    /// The caller's later legs that carry this call after a transfer.
    pub(crate) transfer: MaybeTransfer,
}

/// A call transferred in a proxy topology: the caller, told by a REFER,
/// places a new INVITE (with `Referred-By`, a new Call-ID) to the target.
/// That leg and its hops are this call's, not a new call. In the snapshot
/// since version 2 (`persist::v2`): a restart in the middle of a transfer
/// keeps it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Transfer {
    /// The caller's new trunk legs, in order.
    pub(crate) legs: Vec<LegInfo>,
    /// Their Call-IDs (indexed like the trunk's, for their further hops).
    pub(crate) call_ids: Vec<Arc<str>>,
    /// A REFER was seen on one of the call's legs: when its legs are done
    /// it still waits out the settle time, for the caller's new INVITE.
    pub(crate) referred: bool,
    /// Of `legs`, those a handset placed towards the caller to pick the
    /// call up (INVITE with Replaces): the caller is their callee.
    pub(crate) picked: Vec<LegId>,
}

static NO_TRANSFER: Transfer = Transfer {
    legs: Vec::new(),
    call_ids: Vec::new(),
    referred: false,
    picked: Vec::new(),
};

/// A call's [`Transfer`], held only once there is one: most calls are
/// never transferred, and the empty lists cost 80 bytes a call. Reads see
/// an empty transfer; the first write makes it.
#[derive(Clone, Debug, Default)]
pub(crate) struct MaybeTransfer(Option<Box<Transfer>>);

impl MaybeTransfer {
    pub(crate) fn new(t: Transfer) -> MaybeTransfer {
        let empty =
            t.legs.is_empty() && t.call_ids.is_empty() && !t.referred && t.picked.is_empty();
        MaybeTransfer((!empty).then(|| Box::new(t)))
    }

    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |t| {
            std::mem::size_of::<Transfer>()
                + t.legs.capacity() * std::mem::size_of::<LegInfo>()
                + t.call_ids.capacity() * std::mem::size_of::<Arc<str>>()
                + t.picked.capacity() * std::mem::size_of::<LegId>()
        })
    }
}

impl std::ops::Deref for MaybeTransfer {
    type Target = Transfer;
    fn deref(&self) -> &Transfer {
        self.0.as_deref().unwrap_or(&NO_TRANSFER)
    }
}

impl std::ops::DerefMut for MaybeTransfer {
    fn deref_mut(&mut self) -> &mut Transfer {
        self.0.get_or_insert_with(Default::default)
    }
}

/// Headers the call layer reads besides the core ones (kept by the parser
/// whatever the configuration).
pub(crate) const SIGNAL_HEADERS: &[&str] = &[
    "Session-ID",
    "Referred-By",
    "Replaces",
    "Diversion",
    "History-Info",
    "P-Called-Party-ID",
];

/// Headers in which a PBX's legs name the number the call was for (the
/// dialled DDI): RFC 5806 `Diversion`, RFC 7044 `History-Info` (its first
/// entry, the original target) and RFC 3455 `P-Called-Party-ID`. Their
/// values are replaced by the keyed hash of that number as soon as a
/// message is parsed (see [`hash_called`]), so no leg, journal or log holds it.
pub(crate) const CALLED_HEADERS: &[&str] = &["Diversion", "History-Info", "P-Called-Party-ID"];

/// Headers kept for what they say of a call whose values name a party:
/// the called-number headers and `Referred-By` (the transferring party;
/// only its presence is read).
const HASHED_HEADERS: &[&str] = &[
    "Diversion",
    "History-Info",
    "P-Called-Party-ID",
    "Referred-By",
];

/// Replaces the user part in each of a message's [`HASHED_HEADERS`] by
/// `#` and its keyed hash (`#` alone when it names no user).
pub(crate) fn hash_called(headers: &mut [(String, String)], hasher: &crate::number::Hasher) {
    for (n, v) in headers.iter_mut() {
        if !HASHED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(n)) || v.starts_with('#') {
            continue;
        }
        *v = match crate::sip::uri_user(v) {
            Some(user) => format!("#{}", hasher.hash(&user)),
            None => "#".to_string(),
        };
    }
}

/// The hashed numbers a leg says it was placed for: its called-number
/// headers, its Request-URI and its To.
fn called_of(leg: &Leg) -> Vec<&str> {
    let mut out: Vec<&str> = leg
        .headers()
        .iter()
        .filter(|(n, _)| CALLED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(n)))
        .filter_map(|(_, v)| v.strip_prefix('#'))
        .filter(|h| !h.is_empty())
        .collect();
    out.extend(
        [&leg.ruri, &leg.to]
            .into_iter()
            .filter_map(|p| p.hash_str()),
    );
    out
}

/// What ties a call's other legs to it besides Call-ID and configured
/// headers: values the trunk leg's INVITE carried that a B2BUA passes on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallSignals {
    /// The caller's UUID of an RFC 7989 `Session-ID` (lower case hex),
    /// which a compliant B2BUA passes unchanged on every leg it makes.
    pub(crate) session: Option<String>,
    /// The hashed number the caller dialled (Request-URI, else To): a
    /// PBX's legs may repeat it in `Diversion`, `History-Info`,
    /// `P-Called-Party-ID` or `To`, which tells apart two calls from one
    /// withheld number to different DDIs.
    pub(crate) dialled: Option<NumHash>,
    /// Where the caller's SDP offer sent its audio: a PBX that does not
    /// anchor media offers the same address and port on the legs it makes
    /// for the call (in memory only, like the leg's).
    pub(crate) media: Option<std::num::NonZeroU64>,
}

/// The caller's UUID of a leg's RFC 7989 `Session-ID` header (or of the
/// older draft's bare UUID), if it has a usable one: 32 hex digits, not the
/// null UUID a UAS answers with before it knows its own.
pub(crate) fn session_of(leg: &Leg) -> Option<String> {
    let v = leg
        .headers()
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Session-ID"))?
        .1
        .as_str();
    let local = v.split(';').next()?.trim();
    let ok = local.len() == 32
        && local.bytes().all(|b| b.is_ascii_hexdigit())
        && local.bytes().any(|b| b != b'0');
    ok.then(|| local.to_ascii_lowercase())
}

/// What the scanner rule and the memory budget keep of a call (not
/// persisted: a restored call has none of it and is never set aside).
#[derive(Clone, Debug, Default)]
pub(crate) struct CallGuard {
    /// Where the trunk INVITE came from (None for a restored call).
    pub(crate) source: Option<IpAddr>,
    /// Its sender was in a burst of new calls when it started.
    pub(crate) burst: bool,
    /// Whether it was for a practice's number (None: unknown).
    pub(crate) for_practice: Option<bool>,
    /// Held after it ended until the burst window passed.
    pub(crate) held: bool,
    /// Bytes counted against the memory budget.
    pub(crate) acct: usize,
}

impl OpenCall {
    fn all_legs_done(&self) -> bool {
        self.trunk.ended.is_some()
            && self.transfer.legs.iter().all(|l| l.ended.is_some())
            && self.staff.iter().all(|l| l.ended.is_some())
            && self.auto.iter().all(|(_, l)| l.ended.is_some())
    }

    fn staff_answered(&self) -> bool {
        self.staff.iter().any(|l| l.answered.is_some())
            || (self.direct_staff && self.trunk.answered.is_some())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CallbackRequest {
    pub(crate) seq: u64,
    pub(crate) practice: String,
    pub(crate) caller: String,
    pub(crate) requested: Timestamp,
    pub(crate) until: Timestamp,
}

#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    pub(crate) at: Timestamp,
    pub(crate) callee: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    pub calls: u64,
    pub by_outcome: BTreeMap<String, u64>,
    pub open_calls: u64,
    /// Staff or automated legs that matched no inbound call (internal calls,
    /// or calls whose trunk leg was not seen).
    pub uncorrelated_legs: u64,
    pub outbound_legs: u64,
    pub other_legs: u64,
    /// B2BUA matches where more than one call could have owned the leg.
    pub b2bua_ambiguous: u64,
    pub callbacks_made: u64,
    pub partial_calls: u64,
    /// Inbound calls whose trunk leg came from a configured carrier address.
    pub from_configured_carrier: u64,
    /// Inbound calls whose trunk leg went straight to a handset.
    pub direct_to_staff: u64,
    /// New inbound legs (with `Referred-By`) tied to the call they continue.
    #[serde(default)]
    pub transfers: u64,
    /// Outbound legs that forwarded a ringing inbound call to an outside
    /// number (counted as that call's staff legs, not as outbound calls).
    #[serde(default)]
    pub forwarded_out: u64,
    /// Legs from the site that picked up a ringing call: replacing its
    /// dialog, or dialling a pickup code the PBX answered.
    #[serde(default)]
    pub pickups: u64,
    /// Inbound legs to numbers no practice lists, with `calls.unlisted =
    /// "ignore"`: another agent's calls.
    #[serde(default)]
    pub not_ours: u64,
}

/// The state of the call layer that must survive a restart. Written to
/// disk only through [`crate::persist`], which has its own versioned shape.
#[derive(Clone, Debug)]
pub struct CallSnapshot {
    pub(crate) next_seq: u64,
    pub(crate) open: Vec<OpenCall>,
    pub(crate) requests: Vec<CallbackRequest>,
    pub(crate) outbound: Vec<Outbound>,
    pub(crate) stats: CallStats,
}

/// A borrowed [`CallSnapshot`], for writing a large state without copying it.
pub struct CallSnapshotRef<'a> {
    pub(crate) next_seq: u64,
    pub(crate) open: Vec<&'a OpenCall>,
    pub(crate) requests: &'a [CallbackRequest],
    pub(crate) outbound: &'a VecDeque<Outbound>,
    pub(crate) stats: &'a CallStats,
}

impl CallSnapshot {
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }
}

/// What the engine must do to legs after a call-layer decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegAction {
    /// The leg's sender is in a burst of new calls: shed it first while it
    /// has no response.
    Suspect(LegId),
    /// Not a patient's call: forget these legs, absorb the rest of the
    /// dialog, and put the sender in the book.
    SetAside {
        legs: Vec<LegId>,
        call_id: String,
        source: IpAddr,
        at: Timestamp,
        why: Why,
    },
}

/// Calls kept out of the figures (not persisted: counters since start).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallGuardStats {
    /// Legs from unexpected senders, which never became calls.
    pub unexpected_legs: u64,
    /// Calls set aside by the scanner rule when they ended.
    pub scanner_calls: u64,
    /// Calls in progress whose trunk leg (with no response) was shed for memory.
    pub calls_shed: u64,
}

pub(crate) struct CallTracker {
    site: Site,
    bursts: Bursts,
    actions: Vec<LegAction>,
    /// Bytes held by open calls and their indexes.
    bytes: usize,
    pub guard: CallGuardStats,
    next_seq: u64,
    /// Boxed: a B-tree node then holds pointers, not calls.
    open: BTreeMap<u64, Box<OpenCall>>,
    by_trunk_call_id: HashMap<Arc<str>, u64>,
    /// Open calls by their trunk leg's Session-ID UUID.
    by_session: HashMap<String, u64>,
    /// Legs attached to open calls: leg -> (call, role).
    leg_call: HashMap<LegId, (u64, Role)>,
    requests: Vec<CallbackRequest>,
    outbound: VecDeque<Outbound>,
    events: VecDeque<CallEvent>,
    /// Calls whose trunk leg ended, by when they settle (their
    /// `settle_until`), earliest first: `tick` finalises from the front
    /// instead of scanning every open call. Entries of calls finalised
    /// earlier are skipped.
    settling: BTreeSet<(Timestamp, u64)>,
    /// Open calls in which a REFER was seen: the only ones a new inbound
    /// leg without `Referred-By` can continue (so that a flood of INVITEs
    /// does not search every call in progress).
    referred: BTreeSet<u64>,
    /// Legs dialling a pickup code, until the PBX answers them (then tied to
    /// the call they picked up) or they end unanswered. In memory only.
    pickups: HashMap<LegId, PendingPickup>,
    pub stats: CallStats,
}

/// How long unmatched outbound calls are remembered, for callback requests
/// finalised after the callback began.
const OUTBOUND_MEMORY: Micros = 6 * HOUR;
const OUTBOUND_MAX: usize = 10_000;

impl CallTracker {
    pub fn with_guard(site: Site, g: &guard::GuardConfig) -> CallTracker {
        CallTracker {
            site,
            bursts: Bursts::new(g.burst, g.burst_window),
            actions: Vec::new(),
            bytes: 0,
            guard: CallGuardStats::default(),
            next_seq: 1,
            open: BTreeMap::new(),
            by_trunk_call_id: HashMap::default(),
            by_session: HashMap::default(),
            leg_call: HashMap::default(),
            requests: Vec::new(),
            outbound: VecDeque::new(),
            events: VecDeque::new(),
            settling: BTreeSet::new(),
            referred: BTreeSet::new(),
            pickups: HashMap::default(),
            stats: CallStats::default(),
        }
    }

    /// Replaces the site rules (configuration reload). Calls in progress keep
    /// the roles their legs were given.
    pub fn set_site(&mut self, site: Site) {
        self.site = site;
    }

    pub fn pop_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// What the engine must do to legs after the last events (drained).
    pub fn take_actions(&mut self) -> Vec<LegAction> {
        std::mem::take(&mut self.actions)
    }

    /// Bytes held by open calls, their indexes (with the maps' spare
    /// capacity) and the burst tracker.
    pub fn bytes(&self) -> usize {
        self.bytes
            + self.bursts.bytes()
            + self.by_trunk_call_id.capacity() * (std::mem::size_of::<(Arc<str>, u64)>() + 1)
            + self.by_session.capacity() * (std::mem::size_of::<(Arc<str>, u64)>() + 1)
            + self.leg_call.capacity() * (std::mem::size_of::<(LegId, (u64, Role))>() + 1)
            + self.pickups.capacity() * (std::mem::size_of::<(LegId, PendingPickup)>() + 64)
    }

    /// Whether the memory budget may shed this leg (with no response): a
    /// leg of no call, or the trunk leg of a call with no other legs.
    pub fn may_shed(&self, id: LegId) -> bool {
        match self.leg_call.get(&id) {
            None => true,
            Some((seq, Role::TrunkIn)) => self
                .open
                .get(seq)
                .is_none_or(|c| c.staff.is_empty() && c.auto.is_empty()),
            Some(_) => false,
        }
    }

    /// The budget shed this leg: the call it started is forgotten, never counted.
    pub fn leg_shed(&mut self, id: LegId) {
        self.pickups.remove(&id);
        let Some(&(seq, role)) = self.leg_call.get(&id) else {
            return;
        };
        if role != Role::TrunkIn {
            return;
        }
        if let Some(call) = self.open.remove(&seq) {
            self.forget_call(&call);
            self.guard.calls_shed += 1;
        }
    }

    /// Removes a call's index entries and its bytes (the call itself is
    /// already out of `open`).
    fn forget_call(&mut self, call: &OpenCall) {
        self.referred.remove(&call.seq);
        self.by_trunk_call_id.remove(&call.trunk_call_id);
        for id in &call.transfer.call_ids {
            if self.by_trunk_call_id.get(id) == Some(&call.seq) {
                self.by_trunk_call_id.remove(id);
            }
        }
        if let Some(s) = &call.signals.session {
            if self.by_session.get(s) == Some(&call.seq) {
                self.by_session.remove(s);
            }
        }
        for l in call
            .staff
            .iter()
            .chain(call.auto.iter().map(|(_, l)| l))
            .chain([&call.trunk])
            .chain(&call.transfer.legs)
        {
            self.leg_call.remove(&l.id);
        }
        self.bytes -= call.guard.acct;
    }

    /// Re-counts a call's bytes after it changed.
    fn account(&mut self, seq: u64) {
        if let Some(c) = self.open.get_mut(&seq) {
            let b = call_bytes(c);
            self.bytes = self.bytes + b - c.guard.acct;
            c.guard.acct = b;
        }
    }

    fn dialled_user(leg: &Leg) -> Option<&str> {
        leg.ruri.user().or(leg.to.user())
    }

    fn endpoint_hit(&self, list: &[Endpoint], leg: &Leg) -> bool {
        list.iter().any(|e| match e {
            Endpoint::Addr(m) => m.matches(leg.dst),
            Endpoint::User(u) => {
                u.matches(leg.ruri.user(), leg.ruri.hash_str())
                    || u.matches(leg.to.user(), leg.to.hash_str())
            }
        })
    }

    fn automated_kind(&self, leg: &Leg) -> Option<Auto> {
        if self.endpoint_hit(&self.site.callback_request, leg) {
            Some(Auto::Callback)
        } else if self.endpoint_hit(&self.site.voicemail, leg) {
            Some(Auto::Voicemail)
        } else if self.endpoint_hit(&self.site.queue, leg) {
            Some(Auto::Queue)
        } else if self.endpoint_hit(&self.site.automated, leg) {
            Some(Auto::Ivr)
        } else {
            None
        }
    }

    fn is_staff(&self, leg: &Leg) -> bool {
        self.site.staff.iter().any(|m| m.matches(leg.dst))
            || Self::dialled_user(leg)
                .is_some_and(|u| self.site.staff_extensions.iter().any(|p| p.matches(u)))
    }

    fn classify(&self, leg: &Leg) -> Role {
        // (from the site only: from outside, a leg is the carrier's or unexpected)
        if !self.site.pickup_codes.is_empty()
            && !self.site.is_carrier(leg.src)
            && Self::dialled_user(leg)
                .is_some_and(|u| self.site.pickup_codes.iter().any(|p| p.matches(u)))
        {
            return Role::Pickup;
        }
        if !self.site.has_network() {
            // nothing configured: a new Call-ID is a caller reaching the
            // site, further hops of it are the site ringing someone
            if self.by_trunk_call_id.contains_key(&leg.call_id) {
                return match self.automated_kind(leg) {
                    Some(k) => Role::Automated(k),
                    None => Role::Staff,
                };
            }
            return Role::TrunkIn;
        }
        let src_out = self.site.is_carrier(leg.src);
        let dst_out = self.site.is_carrier(leg.dst);
        if src_out {
            return if dst_out {
                Role::Other
            } else if self.site.unexpected_source(leg.src, leg.dst) {
                Role::Unexpected
            } else {
                Role::TrunkIn
            };
        }
        // from the site: what it dials decides before where it goes (a
        // callback server or a remote worker's softphone can sit outside the
        // site network)
        if let Some(k) = self.automated_kind(leg) {
            Role::Automated(k)
        } else if self.is_staff(leg) {
            Role::Staff
        } else if dst_out
            || self
                .site
                .callback_originators
                .iter()
                .any(|m| m.matches(leg.src))
        {
            Role::TrunkOut
        } else {
            Role::Other
        }
    }

    fn caller_of(leg: &Leg) -> Option<NumHash> {
        leg.asserted.hash.or(leg.from.hash)
    }

    fn callback_header(&self, leg: &Leg) -> bool {
        self.site
            .callback_header
            .as_deref()
            .is_some_and(|h| leg.headers().iter().any(|(n, _)| n.eq_ignore_ascii_case(h)))
    }

    /// Feeds one leg event.
    pub fn on_leg(&mut self, ev: &LegEvent) {
        match ev {
            LegEvent::Started(leg) => self.leg_started(leg),
            LegEvent::Ringing { id, at } => {
                if let Some(info) = self.info_mut(*id) {
                    info.ringing.or_set(*at);
                } else if let Some(p) = self.pickups.get_mut(id) {
                    p.info.ringing.or_set(*at);
                }
            }
            LegEvent::Answered { id, at } => {
                if let Some(info) = self.info_mut(*id) {
                    info.answered.or_set(*at);
                } else if self.pickups.contains_key(id) {
                    self.pickup_answered(*id, *at);
                }
            }
            LegEvent::Referred { id, .. } => {
                if let Some(call) = self
                    .leg_call
                    .get(id)
                    .and_then(|(seq, _)| self.open.get_mut(seq))
                {
                    call.transfer.referred = true;
                    self.referred.insert(call.seq);
                }
            }
            LegEvent::Finished(leg) => {
                // a pickup the PBX refused (nothing ringing): no call's
                if self.pickups.remove(&leg.id).is_some() {
                    self.stats.other_legs += 1;
                }
                self.leg_finished(leg)
            }
        }
    }

    fn info_mut(&mut self, id: LegId) -> Option<&mut LegInfo> {
        let (seq, role) = *self.leg_call.get(&id)?;
        let call = self.open.get_mut(&seq)?;
        match role {
            Role::TrunkIn => Some(&mut call.trunk),
            Role::Continued => call.transfer.legs.iter_mut().find(|l| l.id == id),
            Role::Staff => call.staff.iter_mut().find(|l| l.id == id),
            Role::Automated(_) => call.auto.iter_mut().map(|(_, l)| l).find(|l| l.id == id),
            _ => None,
        }
    }

    fn leg_started(&mut self, leg: &Leg) {
        let role = self.classify(leg);
        if !matches!(role, Role::TrunkIn | Role::Unexpected) {
            if let Some(seq) = self.picked_call(leg) {
                // a handset picking up a ringing call: its INVITE with
                // Replaces goes to the caller, and the call goes on in
                // that new dialog
                self.continue_call(seq, leg, true);
                self.stats.pickups += 1;
                return;
            }
        }
        match role {
            Role::TrunkIn => {
                if self.by_trunk_call_id.contains_key(&leg.call_id) {
                    // another INVITE of the same call from the carrier side (a
                    // retry to a second address): not a second call
                    self.stats.other_legs += 1;
                    return;
                }
                if let Some(seq) = self.transferred_call(leg) {
                    self.continue_call(seq, leg, false);
                    self.stats.transfers += 1;
                    return;
                }
                if self.site.ignore_unlisted
                    && self
                        .site
                        .is_practice_number(&[leg.ruri.hash_str(), leg.to.hash_str()])
                        == Some(false)
                {
                    // another agent's practice (a shared HEP feed); a transfer's
                    // new INVITE (to an extension) was tied above
                    self.stats.not_ours += 1;
                    return;
                }
                let direct_auto = self.automated_kind(leg);
                let direct_staff = direct_auto.is_none() && self.is_staff(leg);
                // (not for a sender in a burst: a flood would make every
                // INVITE search every call in progress)
                if direct_staff
                    && self.site.b2bua
                    && !self.bursts.flagged(leg.src.ip(), leg.started)
                {
                    // handsets-only view: a ring group rings each handset with
                    // its own INVITE; one caller ringing several is one call
                    if let Some(seq) = self.ring_group_match(leg) {
                        let call = self.open.get_mut(&seq).expect("open call");
                        call.staff.push(LegInfo::new(leg, false));
                        self.leg_call.insert(leg.id, (seq, Role::Staff));
                        self.account(seq);
                        return;
                    }
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                let practice = self
                    .site
                    .practice_for(&[leg.ruri.hash_str(), leg.to.hash_str()]);
                if self.site.carrier.iter().any(|m| m.matches(leg.src)) {
                    self.stats.from_configured_carrier += 1;
                }
                if direct_staff {
                    self.stats.direct_to_staff += 1;
                }
                // without a carrier list, who may call is unknown: note
                // what the scanner rule needs (see `finalize`)
                let burst =
                    self.site.carrier.is_empty() && self.bursts.hit(leg.src.ip(), leg.started);
                if burst {
                    self.actions.push(LegAction::Suspect(leg.id));
                }
                let call = OpenCall {
                    seq,
                    practice: practice.into(),
                    caller: Self::caller_of(leg),
                    trunk_call_id: leg.call_id.clone(),
                    trunk: LegInfo::new(leg, self.callback_header(leg)),
                    direct_staff,
                    direct_auto,
                    staff: Vec::new(),
                    auto: Vec::new(),
                    correlation: Correlation::default(),
                    settle_until: OptTime::NONE,
                    signals: CallSignals {
                        session: session_of(leg),
                        dialled: leg.ruri.hash.or(leg.to.hash),
                        media: leg.media,
                    },
                    transfer: MaybeTransfer::default(),
                    guard: CallGuard {
                        source: Some(leg.src.ip()),
                        burst,
                        for_practice: self
                            .site
                            .is_practice_number(&[leg.ruri.hash_str(), leg.to.hash_str()]),
                        held: false,
                        acct: 0,
                    },
                };
                self.by_trunk_call_id.insert(leg.call_id.clone(), seq);
                if let Some(s) = &call.signals.session {
                    self.by_session.insert(s.clone(), seq);
                }
                self.leg_call.insert(leg.id, (seq, Role::TrunkIn));
                self.open.insert(seq, Box::new(call));
                self.account(seq);
            }
            Role::Staff | Role::Automated(_) => match self.correlate(leg) {
                Some(seq) => {
                    let cb = self.callback_header(leg);
                    let call = self.open.get_mut(&seq).expect("open call");
                    match role {
                        Role::Automated(k) => call.auto.push((k, LegInfo::new(leg, cb))),
                        _ => call.staff.push(LegInfo::new(leg, cb)),
                    }
                    self.leg_call.insert(leg.id, (seq, role));
                    self.account(seq);
                }
                None => self.stats.uncorrelated_legs += 1,
            },

            Role::TrunkOut => {
                if let Some(seq) = self.overflow_match(leg) {
                    // the site forwarding a call it is ringing to an
                    // outside number (a hunt group's last member, a
                    // mobile): that person answering is the call answered
                    let call = self.open.get_mut(&seq).expect("open call");
                    call.staff.push(LegInfo::new(leg, false));
                    self.leg_call.insert(leg.id, (seq, Role::Staff));
                    self.stats.forwarded_out += 1;
                    self.account(seq);
                    return;
                }
                self.stats.outbound_legs += 1;
                let callee = leg.ruri.hash.or(leg.to.hash);
                if let Some(callee) = callee {
                    self.outbound_call(leg.started, callee.to_string());
                }
            }
            Role::Pickup if self.pickups.len() < PENDING_PICKUPS_MAX => {
                self.pickups.insert(
                    leg.id,
                    PendingPickup {
                        info: LegInfo::new(leg, false),
                        call_id: Arc::clone(&leg.call_id),
                    },
                );
            }
            Role::Other | Role::Continued | Role::Pickup => self.stats.other_legs += 1,
            Role::Unexpected => {
                self.guard.unexpected_legs += 1;
                self.actions.push(LegAction::SetAside {
                    legs: vec![leg.id],
                    call_id: leg.call_id.to_string(),
                    source: leg.src.ip(),
                    at: leg.started,
                    why: Why::UnexpectedSource,
                });
            }
        }
    }

    /// Ties a leg that carries the caller on (a transfer's new INVITE, or a
    /// pickup's, `picked`, whose callee is the caller) to call `seq`: its
    /// Call-ID is indexed like the trunk's (for its further hops), and the
    /// call settles only once it ends too.
    fn continue_call(&mut self, seq: u64, leg: &Leg, picked: bool) {
        self.continue_with(seq, LegInfo::new(leg, false), leg.call_id.clone(), picked);
    }

    fn continue_with(&mut self, seq: u64, info: LegInfo, call_id: Arc<str>, picked: bool) {
        let call = self.open.get_mut(&seq).expect("open call");
        let id = info.id;
        call.transfer.legs.push(info);
        if picked {
            call.transfer.picked.push(id);
        }
        call.transfer.call_ids.push(call_id.clone());
        call.settle_until = OptTime::NONE;
        self.by_trunk_call_id.insert(call_id, seq);
        self.leg_call.insert(id, (seq, Role::Continued));
        self.account(seq);
    }

    /// The PBX answered a handset's pickup code (`*8`): the call it picked
    /// up is one ringing someone then (a staff leg not answered, in
    /// progress or given up by the PBX within 2 s before, as it cancels the
    /// others at the pickup), no person having answered it. A directed
    /// pickup (`**201`) takes the calls ringing the extension its code
    /// ends with. Several: the one ringing longest (what group pickup
    /// takes), counted as ambiguous.
    /// The pickup's leg then carries the caller, as a Replaces pickup's does.
    fn pickup_answered(&mut self, id: LegId, at: Timestamp) {
        let Some(mut p) = self.pickups.remove(&id) else {
            return;
        };
        p.info.answered.or_set(at);
        // another hop of a pickup already tied (a proxy in front of the PBX)
        if let Some(&seq) = self.by_trunk_call_id.get(&p.call_id) {
            if self.open.contains_key(&seq) {
                self.continue_with(seq, p.info, p.call_id, true);
                return;
            }
        }
        let window = 2 * crate::time::SECOND;
        let ringing_since = |c: &OpenCall| -> Option<Timestamp> {
            if c.staff_answered()
                || !c.transfer.picked.is_empty()
                || c.trunk.ended.get().is_some_and(|e| e < at)
                || c.trunk.started > at
            {
                return None;
            }
            let rung = c
                .staff
                .iter()
                .filter(|l| {
                    l.answered.is_none()
                        && l.started <= at
                        && l.ended.get().is_none_or(|e| e.add(window) >= at)
                })
                .map(|l| l.started)
                .min();
            rung.or((c.direct_staff && c.trunk.answered.is_none()).then_some(c.trunk.started))
        };
        let candidates: Vec<(Timestamp, u64)> = self
            .open
            .values()
            .filter_map(|c| ringing_since(c).map(|t| (t, c.seq)))
            .collect();
        // a directed pickup (`**201`): the calls ringing the extension it ends with
        let named = |c: &OpenCall| {
            let code = p.info.dialled.as_deref().unwrap_or("");
            c.staff
                .iter()
                .filter(|l| l.answered.is_none())
                .filter_map(|l| l.dialled.as_deref())
                .any(|d| d.len() >= 2 && code.len() > d.len() && code.ends_with(d))
        };
        let candidates = narrow(candidates, |(_, s)| named(&self.open[s]));
        if candidates.len() > 1 {
            self.stats.b2bua_ambiguous += 1;
        }
        let Some(&(_, seq)) = candidates.iter().min() else {
            self.stats.other_legs += 1;
            return;
        };
        self.continue_with(seq, p.info, p.call_id, true);
        self.stats.pickups += 1;
    }

    /// The call a new inbound leg continues: it comes from the caller of a
    /// call a person answered, in progress or just ended (still settling),
    /// and either carries `Referred-By` (the caller was told to call the
    /// transfer target by a REFER) or follows a REFER seen in that call
    /// (phones such as baresip send no `Referred-By`). The latest such call.
    fn transferred_call(&self, leg: &Leg) -> Option<u64> {
        let referred_by = leg
            .headers()
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Referred-By"));
        if !referred_by && self.referred.is_empty() {
            return None;
        }
        let caller = Self::caller_of(leg)?;
        let fits = |c: &OpenCall| {
            c.caller == Some(caller) && c.trunk.started <= leg.started && c.staff_answered()
        };
        if referred_by {
            self.open.values().rev().find(|c| fits(c)).map(|c| c.seq)
        } else {
            self.referred
                .iter()
                .rev()
                .filter_map(|s| self.open.get(s))
                .find(|c| fits(c))
                .map(|c| c.seq)
        }
    }

    /// The call a leg from the site replaces (RFC 3891 `Replaces` naming
    /// the call's trunk dialog, as a handset's directed pickup does), if
    /// no person has answered it yet.
    fn picked_call(&self, leg: &Leg) -> Option<u64> {
        let v = leg
            .headers()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Replaces"))?
            .1
            .as_str();
        let call_id = v.split(';').next()?.trim();
        let seq = *self.by_trunk_call_id.get(call_id)?;
        let c = self.open.get(&seq)?;
        // the first pickup of a call nobody answered, or a further hop of it
        let ok = c.transfer.call_ids.iter().any(|id| id == &leg.call_id)
            || (!c.staff_answered() && c.transfer.picked.is_empty());
        ok.then_some(seq)
    }

    /// The inbound call an outbound leg forwards: a hop of its own dialog
    /// (a proxy forwarding the INVITE out: same Call-ID), or, at a B2BUA,
    /// a leg from the caller of a call still ringing (its trunk leg up, no
    /// person has answered), which the PBX passes on as the caller's
    /// identity. A callback comes from the practice's number, later.
    fn overflow_match(&mut self, leg: &Leg) -> Option<u64> {
        if let Some(&seq) = self.by_trunk_call_id.get(&leg.call_id) {
            let c = self.open.get_mut(&seq)?;
            c.correlation.same_call_id += 1;
            return Some(seq);
        }
        if !self.site.b2bua {
            return None;
        }
        let caller = Self::caller_of(leg)?;
        let seq = self
            .open
            .values()
            .filter(|c| {
                c.caller == Some(caller)
                    && c.trunk.ended.is_none()
                    && c.trunk.started <= leg.started
                    && !c.staff_answered()
            })
            .map(|c| c.seq)
            .next()?;
        self.open.get_mut(&seq)?.correlation.b2bua += 1;
        Some(seq)
    }

    /// Finds the open call a staff or automated leg belongs to.
    fn correlate(&mut self, leg: &Leg) -> Option<u64> {
        if let Some(&seq) = self.by_trunk_call_id.get(&leg.call_id) {
            if let Some(c) = self.open.get_mut(&seq) {
                c.correlation.same_call_id += 1;
                return Some(seq);
            }
        }
        for h in &self.site.correlation_headers {
            let v = leg
                .headers()
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(h))
                .map(|(_, v)| v.trim());
            if let Some(&seq) = v.and_then(|v| self.by_trunk_call_id.get(v)) {
                if let Some(c) = self.open.get_mut(&seq) {
                    c.correlation.header += 1;
                    return Some(seq);
                }
            }
        }
        // RFC 7989: a B2BUA that supports it passes the caller's Session-ID
        // UUID on to every leg it makes for the call
        if let Some(&seq) = session_of(leg).and_then(|s| self.by_session.get(&s)) {
            if let Some(c) = self.open.get_mut(&seq) {
                c.correlation.header += 1;
                return Some(seq);
            }
        }
        if !self.site.b2bua {
            return None;
        }
        self.b2bua_match(leg)
    }

    /// Handsets-only view: an open call from the same caller that rings
    /// another handset, having started a leg there within 500 ms (a ring
    /// group) or ended one unanswered within 2 s (a hunt group). Calls from
    /// one number to the same handset are separate calls.
    fn ring_group_match(&mut self, leg: &Leg) -> Option<u64> {
        let caller = Self::caller_of(leg)?;
        let at = leg.started;
        let seq = self.open.values().find(|c| {
            c.caller == Some(caller)
                && c.trunk.ended.is_none()
                && c.staff.iter().chain([&c.trunk]).any(|l| {
                    l.dst != leg.dst
                        && (at.since(l.started) <= 500 * crate::time::MILLISECOND
                            || (l.answered.is_none()
                                && l.ended.get().is_some_and(|e| {
                                    e <= at && at.since(e) <= 2 * crate::time::SECOND
                                })))
                })
        })?;
        let seq = seq.seq;
        self.open
            .get_mut(&seq)
            .expect("open call")
            .correlation
            .b2bua += 1;
        Some(seq)
    }

    /// B2BUA heuristic: an open call from the same caller whose trunk leg is
    /// up when this leg starts. Several candidates (two calls from one
    /// withheld number) are narrowed first by what the wire says: the
    /// number each call was for, named in this leg's headers, then the
    /// caller's media address offered again on this leg. Still several, they
    /// are told apart by what a PBX does (counted):
    /// 1. a call that started another leg within 100 ms (a ring group rings
    ///    its handsets at once);
    /// 2. a call whose previous leg ended within 2 s, the latest (a hunt
    ///    group moving on, or the IVR handing the caller to the queue);
    /// 3. the earliest call not yet offered to anyone (still in the IVR or
    ///    the queue);
    /// 4. the earliest call not answered by staff; else the earliest.
    fn b2bua_match(&mut self, leg: &Leg) -> Option<u64> {
        let caller = Self::caller_of(leg)?;
        let candidates: Vec<u64> = self
            .open
            .values()
            .filter(|c| {
                c.caller == Some(caller)
                    && c.trunk.started <= leg.started
                    && c.trunk.ended.get().is_none_or(|e| e >= leg.started)
            })
            .map(|c| c.seq)
            .collect();
        // several: the number each call was for, when this leg names one of them
        let called = if candidates.len() > 1 {
            called_of(leg)
        } else {
            Vec::new()
        };
        let candidates = narrow(candidates, |s| {
            self.open[s]
                .signals
                .dialled
                .as_ref()
                .is_some_and(|d| called.contains(&d.as_str()))
        });
        // still several: the caller's own media address, when the PBX
        // offers it on this leg (it does not anchor the media)
        let candidates = narrow(candidates, |s| {
            leg.media.is_some() && self.open[s].signals.media == leg.media
        });
        let pick = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            _ => {
                self.stats.b2bua_ambiguous += 1;
                let at = leg.started;
                let legs = |c: &OpenCall| {
                    c.staff
                        .iter()
                        .chain(c.auto.iter().map(|(_, l)| l))
                        .cloned()
                        .collect::<Vec<LegInfo>>()
                };
                let ring_group = candidates
                    .iter()
                    .copied()
                    .filter(|s| {
                        legs(&self.open[s])
                            .iter()
                            .any(|l| at.since(l.started) <= 100 * crate::time::MILLISECOND)
                    })
                    .max_by_key(|s| legs(&self.open[s]).iter().map(|l| l.started).max());
                // the call whose previous leg ended last, within 2 s: a hunt
                // group moving on, or the IVR handing the caller to the
                // queue or voicemail (a PBX does that at once)
                let hunting = || {
                    candidates
                        .iter()
                        .copied()
                        .filter_map(|s| {
                            let c = &self.open[&s];
                            let last = legs(c)
                                .iter()
                                .filter_map(|l| l.ended.get())
                                .filter(|e| *e <= at && at.since(*e) <= 2 * crate::time::SECOND)
                                .max();
                            last.filter(|_| !c.staff_answered()).map(|e| (e, s))
                        })
                        .max()
                        .map(|(_, s)| s)
                };
                let unoffered = || {
                    candidates
                        .iter()
                        .copied()
                        .find(|s| legs(&self.open[s]).is_empty())
                };
                let unanswered = || {
                    candidates
                        .iter()
                        .copied()
                        .find(|s| !self.open[s].staff_answered())
                };
                ring_group
                    .or_else(hunting)
                    .or_else(unoffered)
                    .or_else(unanswered)
                    .unwrap_or(candidates[0])
            }
        };
        if let Some(c) = self.open.get_mut(&pick) {
            c.correlation.b2bua += 1;
        }
        Some(pick)
    }

    fn leg_finished(&mut self, leg: &Leg) {
        let Some((seq, role)) = self.leg_call.remove(&leg.id) else {
            return;
        };
        let settle = self.site.settle;
        let hold = self.hold_for_bursts();
        if leg.referred && self.open.contains_key(&seq) {
            self.referred.insert(seq);
        }
        let Some(call) = self.open.get_mut(&seq) else {
            return;
        };
        let is_trunk = role == Role::TrunkIn && call.trunk.id == leg.id;
        let is_continued = role == Role::Continued;
        if leg.referred {
            call.transfer.referred = true;
        }
        if is_continued {
            if let Some(info) = call.transfer.legs.iter_mut().find(|l| l.id == leg.id) {
                info.update(leg);
            }
        }
        let carried = call.trunk.ended.is_some() || is_trunk;
        let carrying_done = call.transfer.legs.iter().all(|l| l.ended.is_some());
        if is_continued && carried && carrying_done {
            // the last leg carrying the caller ended
            call.settle_until = OptTime::some(call_end(call).add(settle));
            self.settling.insert((call.settle_until.get().expect("set"), seq));
        }
        if is_trunk {
            call.trunk.update(leg);
            let end = leg.ended.get().unwrap_or(leg.started);
            // (while a transferred leg carries the caller, it is not over)
            call.settle_until = carrying_done.then(|| end.add(settle)).into();
            if let Some(window) =
                hold.filter(|_| call.guard.source.is_some() && !guard::engaged(&evidence(call)))
            {
                // it may be part of a burst that is still building up: the
                // scanner rule decides once the burst window has passed
                call.settle_until = OptTime::some(end.add(settle.max(window)));
                call.guard.held = true;
            }
        } else if let Some(info) = call
            .staff
            .iter_mut()
            .chain(call.auto.iter_mut().map(|(_, l)| l))
            .find(|l| l.id == leg.id)
        {
            info.update(leg);
        }
        let finish_now = call.settle_until.is_some()
            && call.all_legs_done()
            && !call.guard.held
            && !call.transfer.referred;
        if let (true, Some(t)) = (is_trunk && carrying_done, call.settle_until.get()) {
            self.settling.insert((t, seq));
        }
        if finish_now {
            self.finalize(seq);
        }
    }

    /// Without a carrier list, calls the phone system did not engage with
    /// are held this long after they end before the scanner rule decides.
    fn hold_for_bursts(&self) -> Option<Micros> {
        self.site.carrier.is_empty().then(|| self.bursts.window())
    }

    /// Finalises calls whose settle time has passed; forgets old outbound
    /// calls and expired callback requests.
    pub fn tick(&mut self, now: Timestamp) {
        crate::leg::shrink(&mut self.by_trunk_call_id);
        crate::leg::shrink(&mut self.by_session);
        crate::leg::shrink(&mut self.leg_call);
        let mut due = Vec::new();
        while let Some(&(t, seq)) = self.settling.first() {
            if t > now {
                break;
            }
            self.settling.pop_first();
            if self
                .open
                .get(&seq)
                .is_some_and(|c| c.settle_until.get() == Some(t))
            {
                due.push(seq);
            }
        }
        // in the order of the calls, as a scan of the open calls gave them
        due.sort_unstable();
        for seq in due {
            self.finalize(seq);
        }
        self.requests.retain(|r| r.until >= now);
        while self
            .outbound
            .front()
            .is_some_and(|o| now.since(o.at) > OUTBOUND_MEMORY)
        {
            self.outbound.pop_front();
        }
    }

    /// The earliest time `tick` has something to do: a call settling, a
    /// callback request's window closing, an outbound call forgotten.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let settle = self.settling.first().map(|(t, _)| *t);
        let request = self.requests.iter().map(|r| r.until.add(1)).min();
        let outbound = self.outbound.front().map(|o| o.at.add(OUTBOUND_MEMORY + 1));
        [settle, request, outbound].into_iter().flatten().min()
    }

    /// End of input: finalises every call still open, with what is known.
    pub fn finish_all(&mut self) {
        let seqs: Vec<u64> = self.open.keys().copied().collect();
        for seq in seqs {
            self.finalize(seq);
        }
    }

    fn finalize(&mut self, seq: u64) {
        let Some(call) = self.open.remove(&seq) else {
            return;
        };
        self.forget_call(&call);
        if let (true, Some(source)) = (self.scanner(&call), call.guard.source) {
            self.guard.scanner_calls += 1;
            self.actions.push(LegAction::SetAside {
                legs: call
                    .staff
                    .iter()
                    .chain(call.auto.iter().map(|(_, l)| l))
                    .chain([&call.trunk])
                    .map(|l| l.id)
                    .collect(),
                call_id: call.trunk_call_id.to_string(),
                source,
                at: call.trunk.ended.get().unwrap_or(call.trunk.started),
                why: Why::ScannerBehaviour,
            });
            return;
        }
        let rec = decide(&call);
        self.stats.calls += 1;
        *self
            .stats
            .by_outcome
            .entry(rec.outcome.name().to_string())
            .or_default() += 1;
        if rec.partial {
            self.stats.partial_calls += 1;
        }
        if let (Outcome::CallbackRequested, Some(caller), Some(requested)) =
            (rec.outcome, rec.caller.clone(), rec.callback_requested)
        {
            let req = CallbackRequest {
                seq,
                practice: rec.practice.clone(),
                caller,
                requested,
                until: self.window_end(requested),
            };
            self.events.push_back(CallEvent::Finished(Box::new(rec)));
            self.callback_request(req);
        } else {
            self.events.push_back(CallEvent::Finished(Box::new(rec)));
        }
    }

    /// The scanner rule (`guard::looks_like_scanner`), for sites without a
    /// carrier list: with one, the carrier's calls are all real and
    /// everything else never became a call.
    fn scanner(&self, call: &OpenCall) -> bool {
        let Some(source) = call.guard.source else {
            return false;
        };
        if !self.site.carrier.is_empty() {
            return false;
        }
        let end = call.trunk.ended.get().unwrap_or(call.trunk.started);
        let e = Evidence {
            burst: call.guard.burst || self.bursts.flagged(source, end),
            ..evidence(call)
        };
        guard::looks_like_scanner(&e)
    }

    fn window_end(&self, requested: Timestamp) -> Timestamp {
        match self.site.callback_window {
            crate::site::CallbackWindow::Within(d) => requested.add(d),
            crate::site::CallbackWindow::SameDay => {
                let tz = self.site.timezone;
                let Some(dt) = requested.to_datetime() else {
                    return requested;
                };
                let local = dt.with_timezone(&tz).date_naive() + Duration::days(1);
                let midnight = local.and_time(NaiveTime::MIN);
                match tz.from_local_datetime(&midnight).earliest() {
                    Some(m) => Timestamp(m.timestamp_micros() - 1),
                    None => requested.add(24 * HOUR),
                }
            }
        }
    }

    fn callback_request(&mut self, req: CallbackRequest) {
        // an outbound call to the caller may already have begun
        if let Some(i) = self
            .outbound
            .iter()
            .position(|o| o.callee == req.caller && o.at >= req.requested && o.at <= req.until)
        {
            let o = self.outbound.remove(i).expect("index");
            self.callback_made(&req, o.at);
            return;
        }
        self.requests.push(req);
    }

    fn outbound_call(&mut self, at: Timestamp, callee: String) {
        // earliest request first; one callback per request
        if let Some(i) = self
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.caller == callee && r.requested <= at && at <= r.until)
            .min_by_key(|(_, r)| (r.requested, r.seq))
            .map(|(i, _)| i)
        {
            let req = self.requests.remove(i);
            self.callback_made(&req, at);
            return;
        }
        self.outbound.push_back(Outbound { at, callee });
        if self.outbound.len() > OUTBOUND_MAX {
            self.outbound.pop_front();
        }
    }

    fn callback_made(&mut self, req: &CallbackRequest, at: Timestamp) {
        self.stats.callbacks_made += 1;
        self.events.push_back(CallEvent::CallbackMade {
            seq: req.seq,
            practice: req.practice.clone(),
            requested: req.requested,
            at,
        });
    }

    pub fn snapshot(&self) -> CallSnapshot {
        CallSnapshot {
            next_seq: self.next_seq,
            open: self.open.values().map(|c| (**c).clone()).collect(),
            requests: self.requests.clone(),
            outbound: self.outbound.iter().cloned().collect(),
            stats: self.stats.clone(),
        }
    }

    /// The same as [`snapshot`](Self::snapshot), borrowing.
    pub fn snapshot_ref(&self) -> CallSnapshotRef<'_> {
        CallSnapshotRef {
            next_seq: self.next_seq,
            open: self.open.values().map(|c| &**c).collect(),
            requests: &self.requests,
            outbound: &self.outbound,
            stats: &self.stats,
        }
    }

    pub fn restore(&mut self, snap: CallSnapshot) {
        self.next_seq = snap.next_seq;
        self.open.clear();
        self.by_trunk_call_id.clear();
        self.by_session.clear();
        self.leg_call.clear();
        self.settling.clear();
        self.referred.clear();
        self.bytes = 0;
        for c in snap.open {
            self.by_trunk_call_id.insert(c.trunk_call_id.clone(), c.seq);
            if let Some(s) = &c.signals.session {
                self.by_session.insert(s.clone(), c.seq);
            }
            if c.trunk.ended.is_none() {
                self.leg_call.insert(c.trunk.id, (c.seq, Role::TrunkIn));
            }
            for l in c.staff.iter().filter(|l| l.ended.is_none()) {
                self.leg_call.insert(l.id, (c.seq, Role::Staff));
            }
            for (k, l) in c.auto.iter().filter(|(_, l)| l.ended.is_none()) {
                self.leg_call.insert(l.id, (c.seq, Role::Automated(*k)));
            }
            // a transfer's or a pickup's legs (snapshots of version 2)
            for l in c.transfer.legs.iter().filter(|l| l.ended.is_none()) {
                self.leg_call.insert(l.id, (c.seq, Role::Continued));
            }
            for id in &c.transfer.call_ids {
                self.by_trunk_call_id.insert(id.clone(), c.seq);
            }
            if c.transfer.referred {
                self.referred.insert(c.seq);
            }
            let seq = c.seq;
            if let Some(t) = c.settle_until.get() {
                self.settling.insert((t, seq));
            }
            self.open.insert(seq, Box::new(c));
            self.account(seq);
        }
        self.requests = snap.requests;
        self.outbound = snap.outbound.into();
        self.stats = snap.stats;
    }

    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }
}

/// Of several candidate calls, those `keep` holds for; all of them when it
/// holds for none (or there is only one): a signal narrows, never empties.
fn narrow<T: Copy>(candidates: Vec<T>, keep: impl Fn(&T) -> bool) -> Vec<T> {
    if candidates.len() < 2 {
        return candidates;
    }
    let kept: Vec<T> = candidates.iter().copied().filter(|c| keep(c)).collect();
    if kept.is_empty() {
        candidates
    } else {
        kept
    }
}

/// What a call showed, for the scanner rule.
fn evidence(call: &OpenCall) -> Evidence {
    let t = &call.trunk;
    Evidence {
        rang: t.ringing.is_some(),
        answered: t.answered.is_some(),
        offered: !call.staff.is_empty() || !call.auto.is_empty(),
        final_status: t.final_status,
        burst: call.guard.burst,
        for_practice: call.guard.for_practice,
    }
}

/// Bytes an open call holds: the struct, its strings and leg lists, and
/// its index entries (by trunk Call-ID, leg to call).
fn call_bytes(c: &OpenCall) -> usize {
    std::mem::size_of::<OpenCall>()
        + crate::mem::str_heap(&c.practice)
        + c.trunk_call_id.len()
        + 16
        + 2 * c.signals.session.as_ref().map_or(0, |s| s.capacity())
        + c.staff.capacity() * std::mem::size_of::<LegInfo>()
        + c.auto.capacity() * std::mem::size_of::<(Auto, LegInfo)>()
        + c.transfer.bytes()
        + (1 + c.staff.len() + c.auto.len() + c.transfer.legs.len()) * 64
        + 96
}

/// When the last leg carrying the caller ended (the trunk leg, or a leg a
/// transfer made).
fn call_end(call: &OpenCall) -> Timestamp {
    let t = &call.trunk;
    call.transfer
        .legs
        .iter()
        .filter_map(|l| l.ended.get())
        .fold(t.ended.get().unwrap_or(t.started), Timestamp::max)
}

/// The outcome rules. Pure: a function of the call's legs.
fn decide(call: &OpenCall) -> CallRecord {
    let t = &call.trunk;
    // the caller's last leg: the trunk leg, or the leg a transfer made
    let last = call
        .transfer
        .legs
        .iter()
        .filter(|l| l.ended.is_some())
        .max_by_key(|l| l.ended)
        .filter(|l| l.ended > t.ended)
        .unwrap_or(t);
    let trunk_end = call_end(call);
    let staff = &call.staff;
    let auto_of = |k: Auto| {
        call.auto
            .iter()
            .filter(move |(a, _)| *a == k)
            .map(|(_, l)| l)
    };

    // a person answered while the trunk leg was up
    // a person answered while the caller was on the line: a staff leg, or
    // a leg that carried the caller on (a transfer's, a pickup's)
    let mut staff_answer = staff
        .iter()
        .chain(&call.transfer.legs)
        .filter_map(|l| l.answered.get())
        .filter(|a| *a <= trunk_end)
        .min();
    if call.direct_staff {
        staff_answer = staff_answer.into_iter().chain(t.answered.get()).min();
    }
    let first_staff = staff
        .iter()
        .map(|l| l.started)
        .min()
        .or(call.direct_staff.then_some(t.started));
    let queue_start = auto_of(Auto::Queue)
        .map(|l| l.started)
        .min()
        .or((call.direct_auto == Some(Auto::Queue)).then_some(t.started));
    let voicemail = auto_of(Auto::Voicemail)
        .map(|l| l.started)
        .filter(|v| *v <= trunk_end)
        .min()
        .or((call.direct_auto == Some(Auto::Voicemail)).then_some(t.started));
    let callback = auto_of(Auto::Callback)
        .map(|l| l.started)
        .chain(
            call.staff
                .iter()
                .chain(call.auto.iter().map(|(_, l)| l))
                .chain([t])
                .filter(|l| l.callback_header)
                .map(|l| l.started),
        )
        .min()
        .or((call.direct_auto == Some(Auto::Callback)).then_some(t.started));
    let queue_joined = match (first_staff, queue_start) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let first_ring = staff
        .iter()
        .filter_map(|l| l.ringing.get())
        .min()
        .or(if call.direct_staff { t.ringing.get() } else { None });

    let answered_by_anything =
        t.answered.is_some() || call.auto.iter().any(|(_, l)| l.answered.is_some());
    let outcome = if staff_answer.is_some() {
        Outcome::Answered
    } else if callback.is_some() {
        Outcome::CallbackRequested
    } else if queue_joined.is_some() || voicemail.is_some() || !answered_by_anything {
        Outcome::Missed
    } else {
        Outcome::EndedInIvr
    };

    // on a pickup's leg the caller is the callee
    let by = match last.ended_by {
        Some(Side::Callee) if call.transfer.picked.contains(&last.id) => Some(Side::Caller),
        Some(Side::Caller) if call.transfer.picked.contains(&last.id) => Some(Side::Callee),
        other => other,
    };
    let ended_by = match (last.end, by) {
        (Some(EndReason::Bye), Some(Side::Caller)) | (Some(EndReason::Cancel), _) => {
            EndedBy::Caller
        }
        (Some(EndReason::Bye), _) | (Some(EndReason::Rejected), _) => EndedBy::Practice,
        _ => EndedBy::Inferred,
    };
    let secs = |a: Timestamp, b: Timestamp| (b.since(a).max(0) as f64) / 1e6;
    let (answered, wait_s, duration_s) = match outcome {
        Outcome::Answered => {
            let a = staff_answer.expect("answered");
            let from = queue_joined.unwrap_or(t.started).min(a);
            (
                Some(a),
                Some(secs(from, a)),
                Some(secs(a, trunk_end.max(a))),
            )
        }
        Outcome::Missed => {
            let stop = match voicemail {
                Some(v) => v.min(trunk_end),
                None => trunk_end,
            };
            // a call nothing ever answered waited from its INVITE (the line
            // rang from the start, even while a B2BUA was still dialling out)
            let from = if answered_by_anything {
                queue_joined.unwrap_or(t.started)
            } else {
                t.started
            };
            (None, Some(secs(from.min(stop), stop)), None)
        }
        Outcome::EndedInIvr | Outcome::CallbackRequested => (None, None, None),
    };
    let abandoned = ended_by == EndedBy::Caller
        && matches!(outcome, Outcome::Missed | Outcome::EndedInIvr)
        && voicemail.is_none();
    let legs = 1 + staff.len() as u32 + call.auto.len() as u32 + call.transfer.legs.len() as u32;
    let partial = t.partial
        || last.end == Some(EndReason::Inferred)
        || call.transfer.legs.iter().any(|l| l.partial)
        || staff
            .iter()
            .chain(call.auto.iter().map(|(_, l)| l))
            .any(|l| l.partial);
    CallRecord {
        seq: call.seq,
        call_id: call.trunk_call_id.to_string(),
        practice: call.practice.to_string(),
        started: t.started,
        queue_joined,
        first_ring,
        answered,
        ended: trunk_end,
        ended_by,
        outcome,
        wait_s,
        duration_s,
        abandoned,
        voicemail,
        callback_requested: callback,
        callback_made: None,
        offered_to_staff: first_staff.is_some(),
        legs,
        correlation: call.correlation,
        partial,
        caller: call.caller.map(|h| h.to_string()),
    }
}

#[cfg(test)]
mod tests;
