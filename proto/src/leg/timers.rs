//! The legs' due times, earliest first: a binary heap whose entries are
//! never taken out in place. A leg's due time is its `timer` field; an
//! entry that no longer matches it (the leg moved on, or is gone) is stale
//! and is dropped when it reaches the top. Moving a leg's timer is then one
//! push, not a search to remove its old entry and another to insert (a
//! B-tree of every leg did both on nearly every message).

use super::LegId;
use crate::time::Timestamp;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Timestamp, LegId)>>,
    /// Times the heap was made again from the legs.
    pub rebuilds: u64,
}

impl Timers {
    /// The leg is due at `at` (its `timer` must say so).
    pub fn push(&mut self, at: Timestamp, id: LegId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest entry, which may be stale unless [`Timers::drop_stale`]
    /// ran since the last change.
    pub fn first(&self) -> Option<(Timestamp, LegId)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    pub fn pop(&mut self) {
        self.heap.pop();
    }

    /// Drops stale entries from the top, so that [`Timers::first`] is a
    /// leg's due time. `current(at, id)`: the leg exists and is due at `at`.
    pub fn drop_stale(&mut self, current: impl Fn(Timestamp, LegId) -> bool) {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if current(*at, *id) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Whether stale entries outnumber the `live` legs (then the heap is
    /// made again from the legs' own due times with [`Timers::rebuild`]),
    /// which keeps it within twice the legs, plus a little.
    pub fn wants_rebuild(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + 64
    }

    pub fn rebuild(&mut self, due: impl Iterator<Item = (Timestamp, LegId)>) {
        let mut v = std::mem::take(&mut self.heap).into_vec();
        v.clear();
        v.extend(due.map(Reverse));
        self.heap = BinaryHeap::from(v);
        self.rebuilds += 1;
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}
