//! IPv4 and IPv6 fragment reassembly, bounded in bytes, datagrams and age.
//!
//! INVITEs with SDP often exceed the path MTU; their non-first fragments carry
//! no UDP header, so a capture tool that does not reassemble loses calls.
//! Overlapping fragments keep the bytes that arrived first (the conservative
//! choice; hostile overlaps cannot rewrite a header already seen).

use super::WireStats;
use crate::time::{Micros, Timestamp};
use ahash::HashMap;
use std::net::IpAddr;

#[derive(Clone, Debug)]
pub struct FragLimits {
    /// Bytes held across all datagrams being reassembled.
    pub max_bytes: usize,
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// A datagram not completed within this much packet time is dropped.
    pub timeout: Micros,
}

impl Default for FragLimits {
    fn default() -> Self {
        FragLimits {
            max_bytes: 4 << 20,
            max_datagrams: 1024,
            timeout: 30 * crate::time::SECOND,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
}

#[derive(Debug)]
struct Pending {
    first_seen: Timestamp,
    data: Vec<u8>,
    /// Covered byte ranges, sorted and merged.
    ranges: Vec<(u32, u32)>,
    /// Known once the last fragment (MF = 0) has arrived.
    total: Option<u32>,
}

impl Pending {
    fn complete(&self) -> bool {
        match self.total {
            Some(t) => self.ranges.len() == 1 && self.ranges[0] == (0, t),
            None => false,
        }
    }

    /// Adds `[start, end)`, copying only bytes not covered yet.
    fn add(&mut self, start: u32, payload: &[u8]) {
        let end = start + payload.len() as u32;
        if self.data.len() < end as usize {
            self.data.resize(end as usize, 0);
        }
        // copy the gaps of [start, end) not yet covered
        let mut cursor = start;
        for &(a, b) in &self.ranges {
            if b <= cursor {
                continue;
            }
            if a >= end {
                break;
            }
            if a > cursor {
                let (s, e) = (cursor as usize, a.min(end) as usize);
                self.data[s..e].copy_from_slice(&payload[s - start as usize..e - start as usize]);
            }
            cursor = cursor.max(b);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            let (s, e) = (cursor as usize, end as usize);
            self.data[s..e].copy_from_slice(&payload[s - start as usize..e - start as usize]);
        }
        // merge the range
        self.ranges.push((start, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
    }
}

#[derive(Debug, Default)]
pub struct Defrag {
    limits: FragLimits,
    pending: HashMap<FragKey, Pending>,
    bytes: usize,
}

/// Largest reassembled IP payload we accept (IPv4's limit; IPv6 jumbograms
/// are not fragmented).
const MAX_DATAGRAM: u32 = 65_535;

impl Defrag {
    pub fn new(limits: FragLimits) -> Self {
        Defrag {
            limits,
            pending: HashMap::default(),
            bytes: 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds one fragment (`offset` in bytes). Returns the whole payload once
    /// every byte has arrived.
    pub fn insert(
        &mut self,
        ts: Timestamp,
        key: FragKey,
        offset: u32,
        more: bool,
        payload: &[u8],
        stats: &mut WireStats,
    ) -> Option<Vec<u8>> {
        stats.fragments += 1;
        let end = offset.saturating_add(payload.len() as u32);
        if end > MAX_DATAGRAM || (more && payload.len() % 8 != 0) {
            stats.fragments_invalid += 1;
            return None;
        }
        if !self.pending.contains_key(&key) {
            while self.pending.len() >= self.limits.max_datagrams
                || (self.bytes + payload.len() > self.limits.max_bytes && !self.pending.is_empty())
            {
                self.evict_oldest();
                stats.fragments_evicted += 1;
            }
            if payload.len() > self.limits.max_bytes {
                stats.fragments_evicted += 1;
                return None;
            }
            self.pending.insert(
                key.clone(),
                Pending {
                    first_seen: ts,
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                },
            );
        }
        let p = self.pending.get_mut(&key)?;
        let before = p.data.len();
        if !more {
            match p.total {
                Some(t) if t != end => {
                    // two different "last" fragments: the datagram is bogus
                    let gone = self.pending.remove(&key).map(|p| p.data.len()).unwrap_or(0);
                    self.bytes -= gone;
                    stats.fragments_invalid += 1;
                    return None;
                }
                _ => p.total = Some(end),
            }
        }
        if let Some(t) = p.total {
            if end > t {
                let gone = self.pending.remove(&key).map(|p| p.data.len()).unwrap_or(0);
                self.bytes -= gone;
                stats.fragments_invalid += 1;
                return None;
            }
        }
        p.add(offset, payload);
        self.bytes += p.data.len() - before;
        if p.complete() {
            let p = self.pending.remove(&key)?;
            self.bytes -= p.data.len();
            stats.datagrams_reassembled += 1;
            return Some(p.data);
        }
        // The byte budget is global: make room by dropping the oldest others.
        while self.bytes > self.limits.max_bytes && self.pending.len() > 1 {
            self.evict_oldest_except(&key);
            stats.fragments_evicted += 1;
        }
        None
    }

    /// Drops datagrams older than the timeout. Returns how many were dropped.
    pub fn expire(&mut self, now: Timestamp) -> u64 {
        let timeout = self.limits.timeout;
        let mut dropped = 0;
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let keep = now.since(p.first_seen) <= timeout;
            if !keep {
                dropped += 1;
                freed += p.data.len();
            }
            keep
        });
        self.bytes -= freed;
        dropped
    }

    fn evict_oldest(&mut self) {
        self.evict_where(|_| true);
    }

    fn evict_oldest_except(&mut self, keep: &FragKey) {
        self.evict_where(|k| k != keep);
    }

    fn evict_where(&mut self, eligible: impl Fn(&FragKey) -> bool) {
        let oldest = self
            .pending
            .iter()
            .filter(|(k, _)| eligible(k))
            .min_by_key(|(k, p)| (p.first_seen, (*k).clone()))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            if let Some(p) = self.pending.remove(&k) {
                self.bytes -= p.data.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: Ipv4Addr::new(10, 0, 0, 1).into(),
            dst: Ipv4Addr::new(10, 0, 0, 2).into(),
            id,
            proto: 17,
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn reassembles_in_any_order_with_overlap() {
        let d = data(3000);
        let mut st = WireStats::default();
        let mut f = Defrag::new(FragLimits::default());
        let t = Timestamp(0);
        assert!(f.insert(t, key(1), 1480, true, &d[1480..2960], &mut st).is_none());
        assert!(f.insert(t, key(1), 2960, false, &d[2960..], &mut st).is_none());
        // overlapping duplicate of the middle
        assert!(f.insert(t, key(1), 1480, true, &d[1480..2960], &mut st).is_none());
        let out = f.insert(t, key(1), 0, true, &d[..1480], &mut st).unwrap();
        assert_eq!(out, d);
        assert_eq!(f.pending(), 0);
        assert_eq!(f.bytes(), 0);
        assert_eq!(st.datagrams_reassembled, 1);
    }

    #[test]
    fn overlap_keeps_first_bytes() {
        let mut st = WireStats::default();
        let mut f = Defrag::new(FragLimits::default());
        let t = Timestamp(0);
        f.insert(t, key(1), 0, true, &[1; 16], &mut st);
        let out = f.insert(t, key(1), 8, false, &[2; 16], &mut st).unwrap();
        assert_eq!(&out[..16], &[1; 16]);
        assert_eq!(&out[16..], &[2; 8]);
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let mut st = WireStats::default();
        let limits = FragLimits {
            max_bytes: 10_000,
            max_datagrams: 4,
            timeout: 1_000_000,
        };
        let mut f = Defrag::new(limits);
        for id in 0..10 {
            f.insert(Timestamp(id as i64), key(id), 0, true, &data(2000), &mut st);
            assert!(f.pending() <= 4);
            assert!(f.bytes() <= 10_000);
        }
        assert!(st.fragments_evicted >= 6);
        let held = f.pending() as u64;
        assert!(held > 0);
        assert_eq!(f.expire(Timestamp(10_000_000)), held);
        assert_eq!(f.pending(), 0);
        assert_eq!(f.bytes(), 0);
    }

    #[test]
    fn rejects_oversize_and_conflicting_last_fragments() {
        let mut st = WireStats::default();
        let mut f = Defrag::new(FragLimits::default());
        assert!(f
            .insert(Timestamp(0), key(1), 65_528, false, &[0; 16], &mut st)
            .is_none());
        f.insert(Timestamp(0), key(2), 8, false, &[0; 8], &mut st);
        f.insert(Timestamp(0), key(2), 16, false, &[0; 8], &mut st);
        assert_eq!(st.fragments_invalid, 2);
        assert_eq!(f.pending(), 0);
    }
}
