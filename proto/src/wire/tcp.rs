//! TCP stream reassembly per direction of a flow.
//!
//! Delivers each direction's bytes in order to a consumer buffer
//! (`Flow::buf`), handling retransmitted and overlapping segments, holding
//! out-of-order segments within a window, and giving up on a hole (counted as
//! a gap, the partial data before it discarded) when the window, the byte cap
//! or the gap timeout is exceeded. Streams picked up mid-connection start at
//! the first segment seen. Bounded in flows, in bytes per flow and in bytes
//! over all flows (capacity counted, buffers shrunk once drained); flows
//! that never carried a byte (a SYN flood, half-open connections) are
//! bounded apart and forgotten sooner.

use super::WireStats;
use crate::time::{Micros, Timestamp, SECOND};
use ahash::HashMap;
use std::collections::VecDeque;
use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub struct TcpLimits {
    /// Directional flows tracked at once; the least recently active is dropped.
    pub max_flows: usize,
    /// Out-of-order bytes held per flow.
    pub max_ooo_bytes: usize,
    /// Out-of-order segments held per flow.
    pub max_ooo_segments: usize,
    /// How far ahead of the next expected byte a segment may start and still be held.
    pub ooo_window: u32,
    /// A hole not filled within this much packet time is skipped.
    pub gap_timeout: Micros,
    /// A flow with no segment for this long is forgotten.
    pub idle_timeout: Micros,
    /// Bytes held over all flows (buffers by capacity, and per-flow
    /// overhead); beyond, the flows holding most are dropped.
    pub max_bytes: usize,
    /// Flows that never carried a byte (SYN only) tracked at most, and how
    /// long one is kept without data.
    pub max_half_open: usize,
    pub half_open_timeout: Micros,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_flows: 16_384,
            max_ooo_bytes: 256 << 10,
            max_ooo_segments: 64,
            ooo_window: 1 << 20,
            gap_timeout: 5 * SECOND,
            idle_timeout: 3600 * SECOND,
            max_bytes: 16 << 20,
            max_half_open: 4096,
            half_open_timeout: 30 * SECOND,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowKey {
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
        }
    }
}

#[derive(Debug, Default)]
pub struct Flow {
    next_seq: Option<u32>,
    /// In-order bytes not yet consumed. The consumer drains from the front.
    buf: Vec<u8>,
    /// Bytes the consumer wants discarded as they arrive (message bodies it
    /// does not need), so they are never buffered.
    skip: u64,
    /// Bytes at the front of `buf` the consumer has searched for the end of
    /// an unfinished message head (reset whenever `buf` is replaced).
    scanned: usize,
    ooo: Vec<(u32, Vec<u8>)>,
    ooo_bytes: usize,
    fin_seq: Option<u32>,
    last_seen: Timestamp,
    /// Since when the oldest unfilled hole has waited (segments are held).
    hole_since: Option<Timestamp>,
    /// Bytes were lost before `buf`'s current content: the consumer should
    /// resynchronise. Cleared by the consumer.
    gap: bool,
    /// A segment with payload was seen (else the flow is half-open).
    got_data: bool,
    /// Bytes counted for this flow in `TcpTable::bytes`.
    acct: usize,
}

/// Bytes a flow holds: the entry and its buffers by capacity.
fn footprint(f: &Flow) -> usize {
    std::mem::size_of::<(FlowKey, Flow)>()
        + 32
        + f.buf.capacity()
        + f.ooo.capacity() * std::mem::size_of::<(u32, Vec<u8>)>()
        + f.ooo.iter().map(|(_, d)| d.capacity()).sum::<usize>()
}

impl Flow {
    /// The in-order bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// How far the consumer already searched an unfinished message head at
    /// the front of [`pending`](Self::pending).
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Whether bytes were lost before the pending ones (the consumer
    /// resynchronises); clears the mark.
    pub fn take_gap(&mut self) -> bool {
        std::mem::take(&mut self.gap)
    }

    /// The consumer is done with the first `n` pending bytes; `scanned`:
    /// how far it searched the unfinished head now at the front (0: none).
    pub fn consume(&mut self, n: usize, scanned: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.scanned = scanned.min(self.buf.len());
    }

    /// The next `n` bytes to arrive are not wanted (a message body): they
    /// are discarded as they come, never buffered.
    pub fn skip_next(&mut self, n: u64) {
        self.skip = n;
    }

    /// All data up to the FIN has been delivered.
    pub fn finished(&self) -> bool {
        matches!((self.fin_seq, self.next_seq), (Some(f), Some(n)) if f == n)
    }

    /// Applies an in-order or overlapping segment. Returns bytes newly delivered.
    fn apply(&mut self, seq: u32, payload: &[u8], stats: &mut WireStats) -> usize {
        let next = match self.next_seq {
            Some(n) => n,
            None => return 0,
        };
        let delta = seq.wrapping_sub(next) as i32;
        debug_assert!(delta <= 0);
        let already = delta.unsigned_abs() as usize;
        if already >= payload.len() {
            if !payload.is_empty() {
                stats.tcp_retransmitted += 1;
            }
            return 0;
        }
        if already > 0 {
            stats.tcp_overlapping += 1;
        }
        let fresh = &payload[already..];
        // advance next_seq by the whole fresh length even if part is skipped
        let skip = (self.skip.min(fresh.len() as u64)) as usize;
        self.skip -= skip as u64;
        self.buf.extend_from_slice(&fresh[skip..]);
        self.next_seq = Some(next.wrapping_add(fresh.len() as u32));
        fresh.len()
    }

    /// Moves held segments that have become in-order into `buf`.
    fn drain_ooo(&mut self, stats: &mut WireStats) {
        loop {
            let next = match self.next_seq {
                Some(n) => n,
                None => return,
            };
            let pos = self
                .ooo
                .iter()
                .position(|(s, _)| (s.wrapping_sub(next) as i32) <= 0);
            match pos {
                Some(i) => {
                    let (s, d) = self.ooo.swap_remove(i);
                    self.ooo_bytes -= d.len();
                    self.apply(s, &d, stats);
                }
                None => return,
            }
        }
    }

    /// Gives up on the hole before the earliest held segment.
    fn skip_gap(&mut self, stats: &mut WireStats) {
        let next = match self.next_seq {
            Some(n) => n,
            None => return,
        };
        let earliest = self
            .ooo
            .iter()
            .map(|(s, _)| *s)
            .min_by_key(|s| s.wrapping_sub(next));
        if let Some(s) = earliest {
            stats.tcp_gaps += 1;
            stats.tcp_gap_bytes += s.wrapping_sub(next) as u64;
            stats.tcp_bytes_discarded += self.buf.len() as u64;
            self.buf.clear();
            self.skip = 0;
            self.scanned = 0;
            self.gap = true;
            self.next_seq = Some(s);
            self.drain_ooo(stats);
        }
    }
}

#[derive(Debug, Default)]
pub struct TcpTable {
    limits: TcpLimits,
    flows: HashMap<FlowKey, Flow>,
    /// Sum of the flows' `acct`.
    bytes: usize,
    /// Flows opened by a SYN, oldest first (some may have carried data or
    /// gone since: checked when popped).
    half_open: VecDeque<FlowKey>,
}

/// TCP header bits the reassembler looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

impl TcpTable {
    pub fn new(limits: TcpLimits) -> Self {
        TcpTable {
            limits,
            flows: HashMap::default(),
            bytes: 0,
            half_open: VecDeque::new(),
        }
    }

    /// Bytes held over all flows, as counted against `max_bytes`.
    pub fn state_bytes(&self) -> usize {
        self.bytes + self.half_open.capacity() * std::mem::size_of::<FlowKey>()
    }

    fn take(&mut self, key: &FlowKey) -> Option<Flow> {
        let f = self.flows.remove(key)?;
        self.bytes -= f.acct;
        Some(f)
    }

    /// Brings a flow's byte count up to date after it changed (shrinking a
    /// drained buffer), then holds the table to `max_bytes` by dropping
    /// the flows that hold most (counted as evicted; a dropped flow that
    /// goes on is picked up again mid-stream).
    pub fn account(&mut self, key: &FlowKey, stats: &mut WireStats) {
        if let Some(f) = self.flows.get_mut(key) {
            if f.buf.capacity() > 16 << 10 && f.buf.len() * 4 < f.buf.capacity() {
                f.buf.shrink_to((f.buf.len() * 2).max(4 << 10));
            }
            let b = footprint(f);
            self.bytes = self.bytes + b - f.acct;
            f.acct = b;
        }
        while self.bytes > self.limits.max_bytes && self.flows.len() > 1 {
            let victim = self
                .flows
                .iter()
                .filter(|(k, _)| *k != key)
                .max_by_key(|(k, f)| (f.acct, **k))
                .map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    self.take(&k);
                    stats.tcp_flows_evicted += 1;
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.flows.values().map(|f| f.buf.len() + f.ooo_bytes).sum()
    }

    pub fn flow_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.flows.get_mut(key)
    }

    pub fn remove(&mut self, key: &FlowKey) {
        self.take(key);
    }

    /// Feeds one segment. Returns true when new in-order bytes reached the
    /// flow's `buf` (or a gap was declared), i.e. the consumer should look.
    pub fn segment(
        &mut self,
        ts: Timestamp,
        key: FlowKey,
        seq: u32,
        flags: TcpFlags,
        payload: &[u8],
        stats: &mut WireStats,
    ) -> bool {
        stats.tcp_segments += 1;
        if flags.rst {
            if self.take(&key).is_some() {
                stats.tcp_flows_closed += 1;
            }
            self.take(&key.reverse());
            return false;
        }
        if payload.is_empty() && !flags.syn && !flags.fin {
            // pure ACK: only keeps the flow alive
            if let Some(f) = self.flows.get_mut(&key) {
                f.last_seen = ts;
            }
            return false;
        }
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.limits.max_flows {
                self.evict_idlest();
                stats.tcp_flows_evicted += 1;
            }
            if payload.is_empty() {
                // a SYN (or FIN) alone: half-open, bounded apart
                while self.half_open.len() >= self.limits.max_half_open {
                    if self.evict_half_open() {
                        stats.tcp_flows_evicted += 1;
                    }
                }
                self.half_open.push_back(key);
            }
            let f = Flow {
                last_seen: ts,
                ..Flow::default()
            };
            let acct = footprint(&f);
            self.bytes += acct;
            self.flows.insert(key, Flow { acct, ..f });
            stats.tcp_flows_opened += 1;
        }
        let limits = &self.limits;
        let flow = match self.flows.get_mut(&key) {
            Some(f) => f,
            None => return false,
        };
        flow.last_seen = ts;
        let mut seq = seq;
        if flags.syn {
            seq = seq.wrapping_add(1);
            if flow.next_seq.is_none() || flow.buf.is_empty() && flow.ooo.is_empty() {
                flow.next_seq = Some(seq);
            }
        } else if flow.next_seq.is_none() {
            // picked up mid-stream: start here, the consumer resynchronises
            flow.next_seq = Some(seq);
            flow.gap = true;
        }
        if flags.fin {
            flow.fin_seq = Some(seq.wrapping_add(payload.len() as u32));
        }
        if !payload.is_empty() {
            flow.got_data = true;
        }
        let next = flow.next_seq.unwrap_or(seq);
        let delta = seq.wrapping_sub(next) as i32;
        let mut progressed = false;
        if delta <= 0 {
            if flow.apply(seq, payload, stats) > 0 {
                progressed = true;
                flow.drain_ooo(stats);
            }
        } else if !payload.is_empty() {
            stats.tcp_out_of_order += 1;
            let fits = (delta as u32) <= limits.ooo_window
                && flow.ooo_bytes + payload.len() <= limits.max_ooo_bytes
                && flow.ooo.len() < limits.max_ooo_segments;
            if !flow.ooo.iter().any(|(s, d)| *s == seq && d.len() >= payload.len()) {
                flow.ooo.push((seq, payload.to_vec()));
                flow.ooo_bytes += payload.len();
            }
            if !fits {
                flow.skip_gap(stats);
                progressed = true;
            }
        }
        // the gap timer runs from when the current hole appeared
        if flow.ooo.is_empty() {
            flow.hole_since = None;
        } else if progressed || flow.hole_since.is_none() {
            flow.hole_since = Some(ts);
        }
        progressed || flow.finished()
    }

    /// Skips holes older than the gap timeout and forgets idle flows.
    /// Calls `on_gap` for each flow whose hole was skipped so the consumer can
    /// process the bytes that became available.
    pub fn expire(&mut self, now: Timestamp, stats: &mut WireStats, mut on_gap: impl FnMut(FlowKey, &mut Flow)) {
        let idle = self.limits.idle_timeout;
        let half_open = self.limits.half_open_timeout;
        let gap_timeout = self.limits.gap_timeout;
        let before = self.flows.len();
        let mut freed = 0;
        self.flows.retain(|_, f| {
            let keep = now.since(f.last_seen) <= if f.got_data { idle } else { half_open };
            if !keep {
                freed += f.acct;
            }
            keep
        });
        self.bytes -= freed;
        stats.tcp_flows_expired += (before - self.flows.len()) as u64;
        let flows = &self.flows;
        self.half_open.retain(|k| flows.get(k).is_some_and(|f| !f.got_data));
        let mut stuck: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.hole_since.is_some_and(|h| now.since(h) > gap_timeout))
            .map(|(k, _)| *k)
            .collect();
        stuck.sort_unstable();
        for k in stuck {
            if let Some(f) = self.flows.get_mut(&k) {
                f.skip_gap(stats);
                f.hole_since = if f.ooo.is_empty() { None } else { Some(now) };
                on_gap(k, f);
            }
            self.account(&k, stats);
        }
    }

    fn evict_idlest(&mut self) {
        // a half-open flow first (cheap: the oldest of the queue)
        while !self.half_open.is_empty() {
            if self.evict_half_open() {
                return;
            }
        }
        let victim = self
            .flows
            .iter()
            .min_by_key(|(k, f)| (f.last_seen, **k))
            .map(|(k, _)| *k);
        if let Some(k) = victim {
            self.take(&k);
        }
    }

    /// Drops the oldest flow of the half-open queue if it is still
    /// half-open. Returns whether a flow was dropped.
    fn evict_half_open(&mut self) -> bool {
        let Some(k) = self.half_open.pop_front() else { return false };
        if self.flows.get(&k).is_some_and(|f| !f.got_data) {
            self.take(&k);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey {
            src: "10.0.0.1:5060".parse().unwrap(),
            dst: "10.0.0.2:5060".parse().unwrap(),
        }
    }

    const NONE: TcpFlags = TcpFlags {
        syn: false,
        fin: false,
        rst: false,
    };

    fn feed(t: &mut TcpTable, st: &mut WireStats, seq: u32, data: &[u8]) {
        t.segment(Timestamp(0), key(), seq, NONE, data, st);
    }

    fn take(t: &mut TcpTable) -> Vec<u8> {
        std::mem::take(&mut t.flow_mut(&key()).unwrap().buf)
    }

    #[test]
    fn in_order_retransmit_overlap_and_reorder() {
        let mut st = WireStats::default();
        let mut t = TcpTable::new(TcpLimits::default());
        let isn = u32::MAX - 3; // wraps inside the stream
        t.segment(Timestamp(0), key(), isn, TcpFlags { syn: true, ..NONE }, b"", &mut st);
        let base = isn.wrapping_add(1);
        feed(&mut t, &mut st, base, b"hello ");
        feed(&mut t, &mut st, base, b"hello "); // retransmission
        feed(&mut t, &mut st, base.wrapping_add(11), b"!!"); // out of order
        feed(&mut t, &mut st, base.wrapping_add(3), b"lo world"); // overlap filling the hole
        assert_eq!(take(&mut t), b"hello world!!");
        assert_eq!(st.tcp_retransmitted, 1);
        assert_eq!(st.tcp_overlapping, 1);
        assert_eq!(st.tcp_out_of_order, 1);
    }

    #[test]
    fn skip_discards_bodies_without_buffering() {
        let mut st = WireStats::default();
        let mut t = TcpTable::new(TcpLimits::default());
        feed(&mut t, &mut st, 100, b"HEAD");
        take(&mut t);
        t.flow_mut(&key()).unwrap().skip = 4; // "body"
        feed(&mut t, &mut st, 106, b"dy|NEXT"); // out of order, part of the body
        feed(&mut t, &mut st, 104, b"bo");
        assert_eq!(take(&mut t), b"|NEXT");
    }

    #[test]
    fn hole_is_skipped_after_timeout_and_flagged() {
        let mut st = WireStats::default();
        let mut t = TcpTable::new(TcpLimits::default());
        feed(&mut t, &mut st, 0, b"partial-message");
        feed(&mut t, &mut st, 100, b"INVITE after hole");
        let mut seen = Vec::new();
        t.expire(Timestamp(10 * SECOND), &mut st, |_, f| {
            seen = std::mem::take(&mut f.buf);
            assert!(f.gap);
        });
        assert_eq!(seen, b"INVITE after hole");
        assert_eq!(st.tcp_gaps, 1);
        assert_eq!(st.tcp_gap_bytes, 85);
    }

    #[test]
    fn gap_timer_starts_when_the_hole_appears_not_at_the_last_progress() {
        let mut st = WireStats::default();
        let mut t = TcpTable::new(TcpLimits::default());
        feed(&mut t, &mut st, 0, b"first");
        // ten idle seconds later a segment arrives out of order: a new hole
        t.segment(Timestamp(10 * SECOND), key(), 10, NONE, b"later", &mut st);
        t.expire(Timestamp(11 * SECOND), &mut st, |_, _| panic!("hole skipped after 1 s"));
        assert_eq!(st.tcp_gaps, 0);
        let mut skipped = false;
        t.expire(Timestamp(16 * SECOND), &mut st, |_, _| skipped = true);
        assert!(skipped);
    }

    #[test]
    fn fin_and_rst_close_and_caps_hold() {
        let mut st = WireStats::default();
        let limits = TcpLimits {
            max_flows: 2,
            max_ooo_segments: 2,
            ..TcpLimits::default()
        };
        let mut t = TcpTable::new(limits);
        assert!(t.segment(Timestamp(0), key(), 0, TcpFlags { fin: true, ..NONE }, b"x", &mut st));
        assert!(t.flow_mut(&key()).unwrap().finished());
        t.segment(Timestamp(0), key(), 1, TcpFlags { rst: true, ..NONE }, b"", &mut st);
        assert!(t.len() == 0);
        for port in 0..5u16 {
            let k = FlowKey {
                src: format!("10.0.0.9:{}", 1000 + port).parse().unwrap(),
                dst: "10.0.0.2:5060".parse().unwrap(),
            };
            t.segment(Timestamp(port as i64), k, 0, NONE, b"x", &mut st);
            assert!(t.len() <= 2);
        }
        assert_eq!(st.tcp_flows_evicted, 3);
        // out-of-order segment cap forces a gap
        feed(&mut t, &mut st, 0, b"a");
        feed(&mut t, &mut st, 10, b"b");
        feed(&mut t, &mut st, 20, b"c");
        feed(&mut t, &mut st, 30, b"d");
        assert!(st.tcp_gaps >= 1);
    }
}
