//! The engine: frames in, finished legs out. No I/O, no clock.
//!
//! ```text
//! ingest(ts, link, frame) ─▶ wire::Decoder ─▶ SIP framing ─▶ normalise ─▶ rsip
//!                                                                      │
//!                         poll_leg() ◀─ LegTracker ◀─ SipMessage ◀─────┘
//! ```

use crate::call::{CallEvent, CallSnapshot, CallStats, CallTracker, LegAction};
use crate::guard::{GuardConfig, GuardStats, MemoryStats, Screen, BOOK_SHOWN};
use crate::leg::{Hop, Leg, LegConfig, LegEvent, LegSnapshot, LegStats, LegTracker, UserHashes};
use crate::site::Site;
use crate::number::Hasher;
use crate::sip::{self, ContentLength, Framing};
use crate::sip::{Head, Method, Parsed, Parser, SipMessage};
use crate::time::{Timestamp, SECOND};
use crate::wire::LinkType;
use crate::wire::{Datagram, Decoder, Flow, FlowKey, Sink, Source, Transport, WireConfig, WireStats};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub wire: WireConfig,
    pub legs: LegConfig,
    /// Headers to keep from INVITEs besides the built-in correlation set.
    pub extra_headers: Vec<String>,
    /// Secret for the keyed hash of numbers (generated at install time).
    pub hash_key: [u8; 32],
    /// Country calling code for national numbers.
    pub country_code: String,
    /// The site's rules; with them the engine also correlates legs into
    /// calls (`poll_call`).
    pub site: Option<Site>,
    /// Keep finished legs for `poll_leg` (off in the daemon, which reads
    /// calls only).
    pub emit_legs: bool,
    /// Keep every message that reached the legs, without its phone
    /// numbers, for `poll_journal` (the daemon's write-ahead journal).
    pub journal: bool,
    /// Hostile traffic: scanners, floods, the memory ceiling.
    pub guard: GuardConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            wire: WireConfig::default(),
            legs: LegConfig::default(),
            extra_headers: Vec::new(),
            hash_key: [0; 32],
            country_code: "44".into(),
            site: None,
            emit_legs: true,
            journal: false,
            guard: GuardConfig::default(),
        }
    }
}

/// Counters of the SIP layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipStats {
    /// Messages framed (requests and responses).
    pub messages: u64,
    pub requests: BTreeMap<String, u64>,
    pub responses: BTreeMap<String, u64>,
    /// Messages that could not be read, by reason.
    pub parse_errors: BTreeMap<String, u64>,
    /// Messages rsip refused after normalising, salvaged by our reader, by
    /// the rsip step that failed.
    pub rsip_rejected: BTreeMap<String, u64>,
    /// Repairs made by the normalising step, by kind.
    pub repairs: BTreeMap<String, u64>,
    /// Messages of methods that do not affect legs (REGISTER, OPTIONS...).
    pub ignored: u64,
    /// UDP payloads that held no SIP (RTP, DNS...).
    pub non_sip_datagrams: u64,
    /// Bytes skipped while resynchronising (not counting keep-alives).
    pub garbage_bytes: u64,
    /// Messages whose body was cut short (UDP) or oversized heads skipped.
    pub truncated: u64,
    /// Messages seen via HEP.
    pub hep_messages: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    pub wire: WireStats,
    pub sip: SipStats,
    pub legs: LegStats,
    pub open_legs: usize,
    pub calls: Option<CallStats>,
    pub first_packet: Option<Timestamp>,
    pub last_packet: Option<Timestamp>,
    /// What was kept out of the figures, and the memory budget.
    #[serde(default)]
    pub guard: GuardStats,
}

/// The SIP side of the engine: framing, parsing, legs. It is the decoder's sink.
struct SipStage {
    parser: Parser,
    /// Keep every message that reached the legs, sealed, for `poll_journal`.
    journal: bool,
    journaled: VecDeque<JournalEntry>,
    legs: LegTracker,
    /// Sets traffic that is not a patient calling aside before the legs.
    screen: Screen,
    stats: SipStats,
    method_counts: [u64; 15],
    class_counts: [u64; 7],
    /// Scratch: the newlines of the head being read.
    nl: Vec<u32>,
}

impl SipStage {
    /// Removes phone numbers from a message that will be stored, returning
    /// their keyed hashes; drops the media key (in memory only).
    fn seal(&self, msg: &mut SipMessage) -> UserHashes {
        let h = self.legs.hasher();
        let mut out = UserHashes::default();
        for (i, user) in [&mut msg.from.user, &mut msg.to.user, &mut msg.ruri_user, &mut msg.asserted_user]
            .into_iter()
            .enumerate()
        {
            if let Some(u) = user.as_deref() {
                let (hash, is_number) = h.hash_and_is_number(u);
                out.0[i] = Some(hash);
                if is_number {
                    *user = None;
                }
            }
        }
        msg.media = None; // not journalled (see sip::media_key)
        out
    }

    fn count_error(&mut self, reason: &str) {
        crate::count_by_name(&mut self.stats.parse_errors, reason);
    }

    /// One framed message: its head, and as much of its body as is at
    /// hand (an INVITE's SDP offer is read for where its audio goes).
    fn message(&mut self, ts: Timestamp, hop: Hop, head: Head<'_>, body: &[u8]) {
        self.stats.messages += 1;
        if hop.source == Source::Hep {
            self.stats.hep_messages += 1;
        }
        let parsed = self.parser.parse_head(head);
        let head = head.bytes();
        match parsed {
            Ok(Parsed::Message {
                mut msg,
                repairs,
                rsip_rejected,
            }) => {
                match msg.kind {
                    crate::sip::Kind::Request(m) => self.method_counts[m as usize] += 1,
                    crate::sip::Kind::Response(c) => self.class_counts[(c / 100).min(6) as usize] += 1,
                }
                if let Some(step) = rsip_rejected {
                    crate::count_by_name(&mut self.stats.rsip_rejected, step);
                }
                if repairs != Default::default() {
                    for (name, hit) in [
                        ("compact_header", repairs.compact),
                        ("folded_line", repairs.folded),
                        ("space_before_colon", repairs.space_before_colon),
                        ("bare_lf", repairs.bare_lf),
                        ("non_utf8", repairs.non_utf8),
                        ("line_without_colon", repairs.bad_lines > 0),
                    ] {
                        if hit {
                            crate::count_by_name(&mut self.stats.repairs, name);
                        }
                    }
                }
                if !self.screen.admit(ts, &hop, &msg, head) {
                    return;
                }
                // the dialled number in a PBX leg's headers: hashed at once
                crate::call::hash_called(&mut msg.headers, self.legs.hasher());
                if msg.kind == crate::sip::Kind::Request(Method::Invite) && !body.is_empty() {
                    msg.media = crate::sip::media_key(body);
                }
                self.legs.on_message(ts, hop, &msg);
                if self.journal {
                    let hashes = self.seal(&mut msg);
                    self.journaled.push_back(JournalEntry {
                        ts,
                        src: hop.src,
                        dst: hop.dst,
                        transport: hop.transport,
                        source: hop.source,
                        msg: *msg,
                        hashes,
                    });
                }
            }
            Ok(Parsed::Ignored(m)) => {
                self.stats.ignored += 1;
                if head.starts_with(b"SIP/") || head.starts_with(b"sip/") {
                    let code = head.get(8..11).and_then(|c| std::str::from_utf8(c).ok()).and_then(|c| c.parse::<u16>().ok());
                    self.class_counts[code.map_or(0, |c| (c / 100).min(6) as usize)] += 1;
                } else {
                    self.method_counts[m as usize] += 1;
                    self.screen.other_request(ts, &hop, m, head);
                }
            }
            Err(e) => self.count_error(e.reason()),
        }
    }

    fn fold_counts(&self) -> SipStats {
        let mut s = self.stats.clone();
        const METHODS: [Method; 15] = [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Update,
            Method::Prack,
            Method::Refer,
            Method::Info,
            Method::Options,
            Method::Register,
            Method::Subscribe,
            Method::Notify,
            Method::Publish,
            Method::Message,
            Method::Other,
        ];
        for m in METHODS {
            let n = self.method_counts[m as usize];
            if n > 0 {
                s.requests.insert(m.name().to_string(), n);
            }
        }
        for (class, n) in self.class_counts.iter().enumerate() {
            if *n > 0 {
                let key = if class == 0 { "other".to_string() } else { format!("{class}xx") };
                s.responses.insert(key, *n);
            }
        }
        s
    }
}

impl Sink for SipStage {
    fn datagram(&mut self, d: Datagram<'_>) {
        let hop = Hop {
            src: d.src,
            dst: d.dst,
            transport: d.transport,
            source: d.source,
        };
        let buf = d.payload;
        let mut off = 0;
        let mut found = false;
        // the framing's newlines, read again by the parser
        let mut nl = std::mem::take(&mut self.nl);
        while off < buf.len() {
            match sip::find_lines(&buf[off..], &mut nl) {
                Framing::Message {
                    start,
                    head_end,
                    content_length,
                    garbage,
                } => {
                    found = true;
                    self.stats.garbage_bytes += garbage as u64;
                    let rest = buf.len() - off - head_end;
                    let (body, whole) = match content_length {
                        ContentLength::Declared(n) if n <= rest => (n, true),
                        ContentLength::Declared(_) => {
                            self.stats.truncated += 1;
                            (rest, false)
                        }
                        // no usable length in a datagram: the body is the rest
                        ContentLength::Missing | ContentLength::Invalid => (rest, true),
                    };
                    // (a body cut short is not read: its last line may be cut too)
                    let at_hand = if whole { &buf[off + head_end..off + head_end + body] } else { &[] };
                    self.message(d.ts, hop, Head::new(&buf[off + start..off + head_end], &nl), at_hand);
                    off += head_end + body;
                }
                Framing::Partial { start, garbage } => {
                    // a datagram holds whole messages: headers run to its end
                    found = true;
                    self.stats.garbage_bytes += garbage as u64;
                    self.message(d.ts, hop, Head::new(&buf[off + start..], &nl), &[]);
                    break;
                }
                Framing::Garbage { garbage, .. } => {
                    self.stats.garbage_bytes += if found { garbage as u64 } else { 0 };
                    break;
                }
            }
        }
        self.nl = nl;
        if !found {
            self.stats.non_sip_datagrams += 1;
        }
    }

    fn stream(&mut self, ts: Timestamp, key: FlowKey, flow: &mut Flow) {
        let hop = Hop {
            src: key.src,
            dst: key.dst,
            transport: Transport::Tcp,
            source: Source::Capture,
        };
        flow.take_gap();
        let mut off = 0;
        let mut partial = false;
        loop {
            let scanned = if off == 0 { flow.scanned() } else { 0 };
            match sip::find_from(&flow.pending()[off..], scanned) {
                Framing::Message {
                    start,
                    head_end,
                    content_length,
                    garbage,
                } => {
                    self.stats.garbage_bytes += garbage as u64;
                    let body = match content_length {
                        ContentLength::Declared(n) => n,
                        ContentLength::Missing | ContentLength::Invalid => 0,
                    };
                    let avail = flow.pending().len() - off - head_end;
                    let pending = flow.pending();
                    // (a body not all arrived yet is not read: its last line may be cut)
                    let at_hand = if body <= avail { &pending[off + head_end..off + head_end + body] } else { &[] };
                    let mut nl = std::mem::take(&mut self.nl);
                    self.message(ts, hop, Head::scan(&pending[off + start..off + head_end], &mut nl), at_hand);
                    self.nl = nl;
                    if body <= avail {
                        off += head_end + body;
                    } else {
                        // skip the rest of the body as it arrives, never buffering it
                        flow.skip_next((body - avail) as u64);
                        off = flow.pending().len();
                        break;
                    }
                }
                Framing::Partial { start, garbage } => {
                    self.stats.garbage_bytes += garbage as u64;
                    off += start;
                    partial = true;
                    break;
                }
                Framing::Garbage { discard, garbage } => {
                    self.stats.garbage_bytes += garbage as u64;
                    if discard == 0 {
                        break;
                    }
                    off += discard;
                }
            }
        }
        let left = flow.pending().len() - off;
        flow.consume(off, if partial { left } else { 0 });
    }
}

pub struct Engine {
    decoder: Decoder,
    sip: SipStage,
    calls: Option<CallTracker>,
    legs_out: VecDeque<Leg>,
    emit_legs: bool,
    first_ts: Option<Timestamp>,
    /// Packet time: the latest packet or tick (timers run on it).
    last_ts: Option<Timestamp>,
    /// The latest packet actually seen.
    last_frame: Option<Timestamp>,
    next_tick: Option<Timestamp>,
    memory_limit: usize,
    memory: MemoryStats,
}

/// Leg timers run at most this often in packet time.
const TICK_EVERY: i64 = SECOND;

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let hasher = Hasher::new(cfg.hash_key, &cfg.country_code);
        // the headers the site's rules read must survive the normaliser
        let mut extra_headers = cfg.extra_headers.clone();
        if let Some(site) = &cfg.site {
            extra_headers.extend(site.correlation_headers.iter().cloned());
            extra_headers.extend(site.callback_header.iter().cloned());
            extra_headers.extend(crate::call::SIGNAL_HEADERS.iter().map(|h| h.to_string()));
        }
        let screen = Screen::new(cfg.site.clone(), &cfg.guard.scanner_agents);
        Engine {
            calls: cfg.site.map(|s| CallTracker::with_guard(s, &cfg.guard)),
            legs_out: VecDeque::new(),
            emit_legs: cfg.emit_legs,
            decoder: Decoder::new(cfg.wire),
            sip: SipStage {
                parser: Parser::new(extra_headers),
                journal: cfg.journal,
                journaled: VecDeque::new(),
                legs: LegTracker::new(cfg.legs, hasher),
                screen,
                stats: SipStats::default(),
                method_counts: [0; 15],
                class_counts: [0; 7],
                nl: Vec::with_capacity(32),
            },
            first_ts: None,
            last_ts: None,
            last_frame: None,
            next_tick: None,
            memory_limit: cfg.guard.memory_limit,
            memory: MemoryStats {
                limit_bytes: cfg.guard.memory_limit as u64,
                ..MemoryStats::default()
            },
        }
    }

    /// Replaces the site rules (configuration reload): the call layer and
    /// the screen. Calls in progress keep the roles their legs were given.
    pub fn set_site(&mut self, site: Site) {
        self.sip.screen.set_site(Some(site.clone()));
        if let Some(c) = self.calls.as_mut() {
            c.set_site(site);
        }
    }

    /// Bytes of engine state counted against the ceiling: legs, calls in
    /// progress, reassembly buffers, the screen's tables.
    pub fn state_bytes(&self) -> usize {
        self.sip.legs.bytes() + self.calls.as_ref().map_or(0, |c| c.bytes()) + self.decoder.state_bytes() + self.sip.screen.bytes()
    }

    /// Keeps engine state under the ceiling: when it is over, removes open
    /// legs that got no response at all (from senders in a burst first,
    /// then the oldest), down to 90% of the ceiling, and forgets the calls
    /// they started. Legs of calls that rang, were answered or were offered
    /// to someone are never shed. Reassembly and the screen are bounded by
    /// their own caps, inside the ceiling.
    fn enforce_budget(&mut self) {
        if self.memory_limit == 0 {
            return;
        }
        let used = self.state_bytes();
        self.memory.peak_bytes = self.memory.peak_bytes.max(used as u64);
        if used <= self.memory_limit {
            return;
        }
        self.memory.shed_rounds += 1;
        self.memory.last_shed = self.last_ts;
        let target = self.memory_limit - self.memory_limit / 10;
        let calls = self.calls.as_ref();
        let shed = self.sip.legs.shed(used - target, |id| calls.is_none_or(|c| c.may_shed(id)));
        let now = self.last_ts.unwrap_or_default();
        for l in &shed {
            if let Some(c) = self.calls.as_mut() {
                c.leg_shed(l.id);
            }
            self.sip.screen.bury(now, &l.call_id);
        }
        if self.state_bytes() > self.memory_limit {
            self.memory.over_budget += 1;
        }
    }

    /// Applies the call layer's decisions to the legs and the screen.
    fn apply_actions(&mut self) {
        let Some(c) = self.calls.as_mut() else { return };
        for a in c.take_actions() {
            match a {
                LegAction::Suspect(id) => self.sip.legs.mark_suspect(id),
                LegAction::SetAside { legs, call_id, source, at, why } => {
                    for id in legs {
                        self.sip.legs.set_aside(id);
                    }
                    self.sip.screen.set_aside(at, &call_id, source, why);
                }
            }
        }
    }

    /// Feeds one captured frame.
    pub fn ingest(&mut self, ts: Timestamp, link: LinkType, frame: &[u8]) {
        self.observe(ts);
        self.decoder.frame(ts, link, frame, &mut self.sip);
        self.pump();
        self.maybe_tick();
        self.enforce_budget();
    }

    /// Feeds one HEPv3 packet received on a socket.
    pub fn ingest_hep(&mut self, ts: Timestamp, buf: &[u8]) {
        self.observe(ts);
        self.decoder.hep(ts, buf, &mut self.sip);
        self.pump();
        self.maybe_tick();
        self.enforce_budget();
    }

    fn observe(&mut self, ts: Timestamp) {
        self.first_ts.get_or_insert(ts);
        self.last_frame = Some(self.last_frame.map_or(ts, |l| l.max(ts)));
        // packet time never runs backwards for timers (merged interfaces can
        // interleave slightly out of order)
        self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
    }

    fn maybe_tick(&mut self) {
        let now = match self.last_ts {
            Some(t) => t,
            None => return,
        };
        if self.next_tick.is_some_and(|t| now < t) {
            return;
        }
        self.next_tick = Some(now.add(TICK_EVERY));
        self.sip.legs.tick(now);
        self.pump();
        if let Some(c) = self.calls.as_mut() {
            c.tick(now);
        }
        self.apply_actions();
    }

    /// Moves leg events to the call layer and finished legs to `legs_out`.
    fn pump(&mut self) {
        while let Some(ev) = self.sip.legs.pop_event() {
            if let Some(c) = self.calls.as_mut() {
                c.on_leg(&ev);
            }
            if let LegEvent::Finished(l) = ev {
                if self.emit_legs {
                    self.legs_out.push_back(*l);
                }
            }
            self.apply_actions();
        }
    }

    /// The leg tracker, for tests of its indexes.
    #[cfg(test)]
    pub(crate) fn leg_tracker(&self) -> &LegTracker {
        &self.sip.legs
    }

    /// The earliest packet time at which [`tick`](Self::tick) has work: a
    /// leg timer (a transaction timing out, a call never seen to end, a
    /// finished leg leaving), a call settling, a callback window closing,
    /// reassembly state to expire. `None`: nothing is pending. The daemon
    /// sleeps until then instead of ticking on a fixed beat.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [self.sip.legs.next_deadline(), self.calls.as_ref().and_then(|c| c.next_deadline()), self.decoder.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances timers to `now` without a packet (idle live capture).
    pub fn tick(&mut self, now: Timestamp) {
        let now = self.last_ts.map_or(now, |l| l.max(now));
        self.last_ts = Some(now);
        self.decoder.expire(now, &mut self.sip);
        self.sip.legs.tick(now);
        self.pump();
        if let Some(c) = self.calls.as_mut() {
            c.tick(now);
        }
        self.apply_actions();
        self.next_tick = Some(now.add(TICK_EVERY));
    }

    /// End of input: closes every open leg at the last packet time.
    pub fn finish(&mut self) {
        if let Some(now) = self.last_ts {
            self.sip.legs.tick(now);
            self.sip.legs.finish_all(now);
        }
        self.pump();
        if let Some(c) = self.calls.as_mut() {
            if let Some(now) = self.last_ts {
                c.tick(now);
            }
            c.finish_all();
        }
        self.apply_actions();
    }

    /// Next journal entry (with `journal` on): a message that reached the
    /// legs, sealed. Replaying entries from a snapshot restores the state.
    pub fn poll_journal(&mut self) -> Option<JournalEntry> {
        self.sip.journaled.pop_front()
    }

    /// Applies a journal entry (after `restore`, to catch up).
    pub fn replay_journal(&mut self, e: &JournalEntry) {
        self.observe(e.ts);
        let hop = Hop {
            src: e.src,
            dst: e.dst,
            transport: e.transport,
            source: e.source,
        };
        self.sip.legs.on_sealed(e.ts, hop, &e.msg, Some(&e.hashes));
        self.pump();
        self.maybe_tick();
        self.enforce_budget();
    }

    /// Packets between `from` (the last one kept) and `to` (now) were not
    /// seen: a restart, or drops. Everything in progress is marked partial;
    /// a leg not yet answered that shows nothing after the gap closes
    /// `legs.gap_timeout` after it, ending at its start; dialogs the gap
    /// hid are adopted from their later messages (with `adopt_orphans`),
    /// starting at its start. Returns how many legs were in progress.
    pub fn mark_gap(&mut self, from: Timestamp, to: Timestamp) -> usize {
        self.sip.legs.mark_gap(from, to)
    }

    /// Remembers a gap recorded before a restart (the daemon gives back
    /// its stored gaps after restoring a snapshot), without marking
    /// anything: legs restored from before it end no later than its start.
    /// A gap with the same start is extended to `to` (the daemon learns when
    /// capture began again only after it marked the gap).
    pub fn note_gap(&mut self, from: Timestamp, to: Timestamp) {
        self.sip.legs.note_gap(from, to)
    }

    /// Next finished leg, in the order legs finished.
    pub fn poll_leg(&mut self) -> Option<Leg> {
        self.legs_out.pop_front()
    }

    /// Next call event (finished call, or a callback made), when the engine
    /// has a site.
    pub fn poll_call(&mut self) -> Option<CallEvent> {
        self.calls.as_mut()?.pop_event()
    }

    /// Calls in progress (0 without a site).
    pub fn open_calls(&self) -> usize {
        self.calls.as_ref().map_or(0, |c| c.open_calls())
    }

    /// Numbers new calls from `next_seq` on, if that is higher than the
    /// engine's own counter (the daemon continues its store's numbering).
    pub fn continue_numbering(&mut self, next_seq: u64) {
        if let Some(c) = self.calls.as_mut() {
            c.set_next_seq(next_seq);
        }
    }

    pub fn open_legs(&self) -> impl Iterator<Item = &Leg> {
        self.sip.legs.open_iter()
    }

    pub fn last_packet(&self) -> Option<Timestamp> {
        self.last_ts
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            wire: self.decoder.stats(),
            sip: self.sip.fold_counts(),
            legs: self.sip.legs.stats.clone(),
            open_legs: self.sip.legs.open_legs(),
            calls: self.calls.as_ref().map(|c| {
                let mut s = c.stats.clone();
                s.open_calls = c.open_calls() as u64;
                s
            }),
            first_packet: self.first_ts,
            last_packet: self.last_frame,
            guard: self.guard_stats(),
        }
    }

    /// What was kept out of the figures, and the memory budget.
    pub fn guard_stats(&self) -> GuardStats {
        let mut screen = self.sip.screen.stats.clone();
        if let Some(c) = &self.calls {
            screen.scanner_calls = c.guard.scanner_calls;
        }
        let legs_bytes = self.sip.legs.bytes() as u64;
        let calls_bytes = self.calls.as_ref().map_or(0, |c| c.bytes()) as u64;
        let reassembly_bytes = self.decoder.state_bytes() as u64;
        let screen_bytes = self.sip.screen.bytes() as u64;
        let used = legs_bytes + calls_bytes + reassembly_bytes + screen_bytes;
        let memory = MemoryStats {
            used_bytes: used,
            peak_bytes: self.memory.peak_bytes.max(used),
            legs_bytes,
            calls_bytes,
            reassembly_bytes,
            screen_bytes,
            legs_shed: self.sip.legs.removed.shed,
            calls_shed: self.calls.as_ref().map_or(0, |c| c.guard.calls_shed),
            ..self.memory.clone()
        };
        GuardStats {
            screen,
            memory,
            sources: self.sip.screen.book().report(BOOK_SHOWN),
        }
    }

    /// Bytes held for IP and TCP reassembly.
    pub fn buffered_bytes(&self) -> usize {
        self.decoder.buffered_bytes()
    }

    /// What must survive a restart: legs in progress (and lingering ones),
    /// and packet time. Reassembly buffers are not kept: a message split
    /// across a restart is lost and counted by the wire layer.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            legs: self.sip.legs.snapshot(),
            calls: self.calls.as_ref().map(|c| c.snapshot()),
            last_packet: self.last_ts,
        }
    }

    /// The same as [`snapshot`](Self::snapshot), borrowing the state: what
    /// the daemon writes, so a large state is not held twice.
    pub fn snapshot_ref(&self) -> EngineSnapshotRef<'_> {
        EngineSnapshotRef {
            legs: self.sip.legs.snapshot_ref(),
            calls: self.calls.as_ref().map(|c| c.snapshot_ref()),
            last_packet: self.last_ts,
        }
    }

    pub fn restore(&mut self, snap: EngineSnapshot) {
        self.sip.legs.restore(snap.legs);
        if let (Some(c), Some(s)) = (self.calls.as_mut(), snap.calls) {
            c.restore(s);
        }
        self.last_ts = snap.last_packet;
        self.last_frame = snap.last_packet;
        self.first_ts = self.first_ts.or(snap.last_packet);
    }
}

/// A message as the daemon's journal keeps it: phone numbers replaced by
/// their keyed hashes. Written to disk only through [`crate::persist`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub ts: Timestamp,
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
    pub transport: Transport,
    pub source: Source,
    pub msg: SipMessage,
    pub hashes: UserHashes,
}

/// A borrowed [`EngineSnapshot`], for writing a large state without copying it.
pub struct EngineSnapshotRef<'a> {
    pub legs: crate::leg::LegSnapshotRef<'a>,
    pub calls: Option<crate::call::CallSnapshotRef<'a>>,
    pub last_packet: Option<Timestamp>,
}

/// What must survive a restart: legs and calls in progress, packet time.
/// Written to disk only through [`crate::persist`] (versioned).
#[derive(Clone, Debug)]
pub struct EngineSnapshot {
    pub legs: LegSnapshot,
    pub calls: Option<CallSnapshot>,
    pub last_packet: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{frames, Call, Script};
    use crate::time::MINUTE;

    #[test]
    fn poll_timeout_says_when_timers_are_due_and_nothing_when_idle() {
        let mut site = crate::site::Site::single("B82005", &["441632960123"], &Hasher::new([1; 32], "44"));
        site.settle = 10 * SECOND;
        let mut e = Engine::new(EngineConfig { site: Some(site), emit_legs: false, ..EngineConfig::default() });
        assert_eq!(e.poll_timeout(), None, "a new engine has nothing to do");
        let t0 = Timestamp(1_793_610_000 * SECOND);
        // ringing, never answered, never cancelled: the ring timeout (30 min
        // after the last provisional response) is the deadline
        let c = Call::numbered(1, "192.0.2.7:5060".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), t0, Script::Cancelled { ring: 100, cancel: 3_600_000 });
        for (i, m) in c.messages().iter().filter(|m| m.ts < t0.add(MINUTE)).enumerate() {
            e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        }
        let due = e.poll_timeout().expect("a timer is pending");
        assert_eq!(due, t0.add(100 * crate::time::MILLISECOND + 30 * MINUTE), "the ring timeout");
        // nothing happens before it...
        e.tick(due.add(-SECOND));
        assert_eq!(e.open_calls(), 1);
        assert!(e.poll_call().is_none());
        // ...from it on, following poll_timeout alone finishes the call
        // (the leg times out, the call settles) and then there is nothing
        let mut ticks = 0;
        while let Some(t) = e.poll_timeout() {
            assert!(t >= due && t <= due.add(MINUTE), "{t}: only the leg, its call and its linger are pending");
            e.tick(t);
            ticks += 1;
            assert!(ticks < 10);
        }
        assert!(matches!(e.poll_call(), Some(crate::call::CallEvent::Finished(_))));
        assert_eq!(e.open_calls(), 0);
    }
}
