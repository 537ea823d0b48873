//! Between the engine and the disk: the store (or its absence), the
//! write-ahead journal, finished calls held in memory while the store
//! cannot take them, flushes, snapshots and the recovery at start.
//!
//! Durability: every message the engine journals is appended; finished
//! calls are written (idempotently) and the store flushed before a call is
//! acknowledged (counted anywhere), and at least every `FLUSH_EVERY` while
//! messages arrive. When the store fails, calls wait in memory (bounded by
//! `store.memory_calls`) and the journal is off until the store is back;
//! then a snapshot is taken at once.
//!
//! No clock is read here directly: time comes from the [`Clock`] given
//! (tests drive it by hand).

use super::Clock;
use crate::store::{Gap, Store, StoreError, Unacknowledged};
use anyhow::Result;
use cbt_proto::call::CallEvent;
use cbt_proto::time::Micros;
use cbt_proto::{Engine, Timestamp};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

/// Journaled messages are flushed at most this long after they arrive.
pub const FLUSH_EVERY: Micros = 50_000;
/// A store that failed is tried again this often.
pub const STORE_RETRY: Micros = 10_000_000;

pub struct Persister {
    dir: PathBuf,
    cache_bytes: u64,
    /// Finished calls kept in memory at most while the store is away.
    memory_calls: usize,
    snapshot_every: Micros,
    clock: Arc<dyn Clock>,
    /// Told when the store appears or goes (the HTTP side reads it).
    publish: Box<dyn Fn(Option<Arc<Store>>) + Send>,
    store: Option<Arc<Store>>,
    error: Option<StoreError>,
    /// Finished call events the store could not take yet (bounded), each
    /// with whether an earlier write of it changed the store (a flush that
    /// failed after part of it was on disk: the store then finds it stored
    /// when it is written again, and it is still to be acknowledged).
    pending: VecDeque<(CallEvent, bool)>,
    lost_in_memory: u64,
    /// The journal was off for a while (store down): snapshot as soon as
    /// the store is back.
    journal_off: bool,
    /// Written but not yet flushed.
    dirty: bool,
    /// Calls written since the last flush (held again if the store fails
    /// before it), each with whether it changed the store: those that did
    /// are acknowledged at the flush.
    unflushed: Vec<(CallEvent, bool)>,
    /// Calls a recovery without its snapshot found stored under another
    /// number: a callback made for one later goes to its stored number.
    renumbered: std::collections::HashMap<u64, u64>,
    last_flush: Timestamp,
    last_snapshot: Option<Timestamp>,
    last_retry: Timestamp,
    gaps: Vec<Gap>,
    /// The gap this start recorded, until capture began (its true end).
    restart_gap: Option<Timestamp>,
    /// What the recovery at start did, for the status.
    recovered: Option<String>,
    started: Timestamp,
}

impl Persister {
    pub fn new(
        dir: PathBuf,
        cache_bytes: u64,
        memory_calls: usize,
        snapshot_every: Micros,
        clock: Arc<dyn Clock>,
        publish: Box<dyn Fn(Option<Arc<Store>>) + Send>,
    ) -> Persister {
        let t = clock.now();
        Persister {
            dir,
            cache_bytes,
            memory_calls,
            snapshot_every,
            clock,
            publish,
            store: None,
            error: None,
            pending: VecDeque::new(),
            lost_in_memory: 0,
            journal_off: false,
            dirty: false,
            unflushed: Vec::new(),
            renumbered: Default::default(),
            last_flush: t,
            last_snapshot: None,
            last_retry: t,
            gaps: Vec::new(),
            restart_gap: None,
            recovered: None,
            started: t,
        }
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    pub fn error(&self) -> Option<&StoreError> {
        self.error.as_ref()
    }

    pub fn held_in_memory(&self) -> usize {
        self.pending.len()
    }

    pub fn lost_in_memory(&self) -> u64 {
        self.lost_in_memory
    }

    pub fn last_snapshot(&self) -> Option<Timestamp> {
        self.last_snapshot
    }

    pub fn recovered(&self) -> Option<&str> {
        self.recovered.as_deref()
    }

    /// The recent gaps (packets not seen), oldest first.
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// The calls and callbacks this persister wrote into the store (a read
    /// of the store sees them) but has not yet acknowledged: each will be
    /// in a later `persist`'s answer. By call number.
    pub fn unacknowledged(&self) -> Unacknowledged {
        let mut out = Unacknowledged::default();
        for (ev, _) in self.unflushed.iter().chain(self.pending.iter()).filter(|(_, changed)| *changed) {
            match ev {
                CallEvent::Finished(r) => out.calls.insert(r.seq),
                CallEvent::CallbackMade { seq, .. } => out.callbacks.insert(*seq),
            };
        }
        out
    }

    pub fn set_memory_calls(&mut self, n: usize) {
        self.memory_calls = n;
    }

    pub fn set_snapshot_every(&mut self, d: Micros) {
        self.snapshot_every = d;
    }

    /// Opens the store; at the first opening, restores the engine from it.
    pub fn open(&mut self, engine: &mut Engine) {
        match Store::open(&self.dir, self.cache_bytes) {
            Ok(store) => {
                let store = Arc::new(store);
                if let Err(e) = self.recover(engine, &store) {
                    let e = StoreError::classify(&self.dir, &e);
                    self.failed(e);
                    return;
                }
                tracing::info!(dir = %self.dir.display(), calls = store.call_count(), "store open");
                (self.publish)(Some(store.clone()));
                self.store = Some(store);
                self.error = None;
            }
            Err(e) => self.failed(e),
        }
    }

    /// Tries the store again if it failed and the retry time has come.
    pub fn retry(&mut self, engine: &mut Engine) {
        let t = self.clock.now();
        if self.store.is_some() || t.since(self.last_retry) < STORE_RETRY {
            return;
        }
        self.last_retry = t;
        self.open(engine);
        if self.store.is_some() {
            tracing::info!("store available again; writing {} calls held in memory", self.pending.len());
        }
    }

    fn failed(&mut self, e: StoreError) {
        if self.error.as_ref() != Some(&e) {
            tracing::error!("store unavailable, keeping finished calls in memory: {e}");
        }
        self.store = None;
        (self.publish)(None);
        self.error = Some(e);
        self.journal_off = true;
        // calls written since the last flush may not be on disk: held again
        let held = std::mem::take(&mut self.unflushed);
        self.hold(held);
    }

    /// Restores the snapshot, replays the journal, writes what it finishes.
    fn recover(&mut self, engine: &mut Engine, store: &Arc<Store>) -> Result<()> {
        let counts = store.verify()?;
        self.gaps = store.gaps()?;
        if engine.last_packet().is_some() {
            // the store came back while running: keep the live engine
            return Ok(());
        }
        let rec = store.recovery()?;
        let (snap, journal) = (rec.snapshot, rec.entries);
        let had_snapshot = snap.is_some();
        let (mut legs, mut calls) = (0, 0);
        if let Some(snap) = snap {
            legs = snap.legs.legs.iter().filter(|l| l.is_open()).count();
            calls = snap.calls.as_ref().map_or(0, |c| c.open_calls());
            engine.restore(snap);
        }
        // the gaps the restored legs may have straddled (their ends are
        // put no later than a gap's start)
        for g in &self.gaps {
            engine.note_gap(g.from, g.to);
        }
        if !had_snapshot {
            // no snapshot (first start, or it was lost): continue the numbering
            // of the stored calls. With a snapshot its own counter is right:
            // replaying the journal must give calls the numbers they had.
            engine.continue_numbering(store.max_seq()? + 1);
        }
        for e in &journal {
            engine.replay_journal(e);
        }
        while engine.poll_journal().is_some() {}
        let mut finished = Vec::new();
        while let Some(ev) = engine.poll_call() {
            finished.push(ev);
        }
        // without the snapshot the numbering went on after the stored
        // calls: a call the journal finishes again that was stored before
        // the stop would be stored twice, under a new number
        let again = if had_snapshot { Default::default() } else { stored_again(store, &finished)? };
        if !again.is_empty() {
            tracing::info!("{} calls the journal finished again were stored before the stop (found by Call-ID and start): not stored twice", again.len());
        }
        self.renumbered = again;
        let mut written = 0;
        for mut ev in finished {
            if matches!(&ev, CallEvent::Finished(r) if self.renumbered.contains_key(&r.seq)) {
                continue;
            }
            renumber(&self.renumbered, &mut ev);
            if write_event(store, &ev)? {
                written += 1;
            }
        }
        if had_snapshot || !journal.is_empty() {
            let from = engine.last_packet().unwrap_or(self.started);
            let partial = engine.mark_gap(from, self.started);
            let gap = Gap {
                from,
                to: self.started,
                reason: "agent stopped".into(),
            };
            store.add_gap(gap.clone())?;
            self.restart_gap = Some(gap.from);
            self.gaps.push(gap);
            store.flush()?;
            let problems = store.problems().len();
            let msg = format!(
                "restored {legs} legs and {calls} calls in progress, replayed {} journal entries from {} files ({written} calls finished and stored), {} calls stored in all; {partial} legs in progress across the gap since {} are marked partial{}{}",
                journal.len(),
                rec.files,
                counts.calls + written,
                from,
                if rec.torn_bytes > 0 { format!("; a record cut short by the stop ({} bytes) was dropped", rec.torn_bytes) } else { String::new() },
                if problems > 0 { format!("; {problems} problems reading the store (see store.problems)") } else { String::new() },
            );
            tracing::info!("{msg}");
            self.recovered = Some(msg);
        }
        Ok(())
    }

    fn hold(&mut self, events: Vec<(CallEvent, bool)>) {
        for ev in events {
            if self.pending.len() >= self.memory_calls {
                self.pending.pop_front();
                self.lost_in_memory += 1;
            }
            self.pending.push_back(ev);
        }
    }

    /// Journals the engine's messages and stores its finished calls;
    /// flushes when due (at most every `FLUSH_EVERY`: one flush covers every
    /// call finished meanwhile). Returns the events now durable (to be
    /// counted): those written since the last flush, once it is done.
    pub fn persist(&mut self, engine: &mut Engine) -> Vec<CallEvent> {
        self.write(engine, false)
    }

    fn write(&mut self, engine: &mut Engine, flush_now: bool) -> Vec<CallEvent> {
        let mut journal = Vec::new();
        while let Some(j) = engine.poll_journal() {
            journal.push(j);
        }
        let mut events: Vec<CallEvent> = Vec::new();
        while let Some(ev) = engine.poll_call() {
            events.push(ev);
        }
        let Some(store) = self.store.clone() else {
            // no store: hold finished calls in memory, within the bound
            self.hold(events.into_iter().map(|ev| (ev, false)).collect());
            return Vec::new();
        };
        // calls held while the store was away go first
        let first = self.unflushed.len();
        let held: Vec<(CallEvent, bool)> = self.pending.drain(..).collect();
        self.unflushed.extend(held.into_iter().chain(events.into_iter().map(|ev| (ev, false))));
        let now = self.clock.now();
        let mut flushed = false;
        let result = (|| -> Result<()> {
            store.append_journal(&journal)?;
            if !journal.is_empty() {
                self.dirty = true;
            }
            for (ev, changed) in &mut self.unflushed[first..] {
                renumber(&self.renumbered, ev);
                *changed |= write_event(&store, ev)?;
                self.dirty = true;
            }
            if self.dirty && (flush_now || now.since(self.last_flush) >= FLUSH_EVERY) {
                store.flush()?;
                self.dirty = false;
                self.last_flush = now;
                flushed = true;
            }
            Ok(())
        })();
        match result {
            // written, not yet on disk: kept until the flush
            Ok(()) if !flushed => Vec::new(),
            Ok(()) => self.unflushed.drain(..).filter_map(|(ev, changed)| changed.then_some(ev)).collect(),
            Err(e) => {
                let e = store.write_error(e);
                // nothing since the last flush is known to be on disk: keep
                // every call (the store ignores a call it already has when
                // it comes back)
                self.failed(e);
                Vec::new()
            }
        }
    }

    /// How long the daemon may wait for input before a flush is due.
    pub fn wait(&self) -> std::time::Duration {
        let max = std::time::Duration::from_millis(100);
        if !self.dirty {
            return max;
        }
        let left = FLUSH_EVERY - self.clock.now().since(self.last_flush);
        std::time::Duration::from_micros(left.clamp(1_000, 100_000) as u64).min(max)
    }

    /// Saves the engine state if it is due (every `snapshot_every`, and at
    /// once after the journal was off).
    pub fn snapshot_if_due(&mut self, engine: &Engine) {
        let t = self.clock.now();
        let due = self.last_snapshot.is_none_or(|l| t.since(l) >= self.snapshot_every) || self.journal_off;
        if due && self.store.is_some() {
            self.snapshot(engine);
        }
    }

    pub fn snapshot(&mut self, engine: &Engine) {
        let Some(store) = self.store.clone() else { return };
        match store.save_snapshot(&engine.snapshot_ref()) {
            Ok(()) => {
                self.last_snapshot = Some(self.clock.now());
                self.journal_off = false;
            }
            Err(e) => {
                let e = store.write_error(e);
                self.failed(e);
            }
        }
    }

    /// Capture began at `since`: the gap this start recorded (from the last
    /// packet kept to the process start) really ended then, after the store
    /// was recovered. Extends it, in the store, in memory and in the engine.
    pub fn capture_began(&mut self, engine: &mut Engine, since: Timestamp) {
        let Some(from) = self.restart_gap.take() else { return };
        let Some(gap) = self.gaps.iter_mut().rev().find(|g| g.from == from) else { return };
        if since <= gap.to {
            return;
        }
        gap.to = since;
        engine.note_gap(from, since);
        if let Some(store) = &self.store {
            if let Err(e) = store.extend_gap(from, since) {
                tracing::warn!("cannot record when capture began again: {e:#}");
            }
        }
    }

    /// Records a gap in the store (if it is there) and in memory (the last 100).
    pub fn add_gap(&mut self, gap: Gap) {
        if let Some(store) = &self.store {
            let _ = store.add_gap(gap.clone());
        }
        self.gaps.push(gap);
        if self.gaps.len() > 100 {
            self.gaps.remove(0);
        }
    }

    /// A clean stop: everything written, the state saved.
    pub fn shutdown(&mut self, engine: &mut Engine) -> Vec<CallEvent> {
        let acked = self.write(engine, true);
        if let Some(store) = self.store.clone() {
            self.snapshot(engine);
            let _ = store.flush();
            tracing::info!(held_in_memory = self.pending.len(), "stopped; engine state saved");
        } else if !self.pending.is_empty() {
            tracing::error!(
                "stopping with {} finished calls that could not be stored: {}",
                self.pending.len(),
                self.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
            );
        }
        acked
    }
}

/// The calls among `finished` that the store already holds under another
/// number (the same Call-ID, started at the same time): their number here,
/// and the stored one.
fn stored_again(store: &Store, finished: &[CallEvent]) -> Result<std::collections::HashMap<u64, u64>> {
    let calls: Vec<&cbt_proto::call::CallRecord> = finished
        .iter()
        .filter_map(|ev| match ev {
            CallEvent::Finished(r) => Some(&**r),
            CallEvent::CallbackMade { .. } => None,
        })
        .collect();
    let (Some(lo), Some(hi)) = (calls.iter().map(|r| r.started).min(), calls.iter().map(|r| r.started).max()) else {
        return Ok(Default::default());
    };
    let known: std::collections::HashMap<(String, Timestamp), u64> =
        store.calls_between(lo, hi.add(1))?.into_iter().map(|c| ((c.call_id, c.started), c.seq)).collect();
    Ok(calls
        .iter()
        .filter_map(|r| known.get(&(r.call_id.clone(), r.started)).filter(|s| **s != r.seq).map(|s| (r.seq, *s)))
        .collect())
}

/// A callback of a call stored under another number (`renumbered`), for
/// that number.
fn renumber(renumbered: &std::collections::HashMap<u64, u64>, ev: &mut CallEvent) {
    if let CallEvent::CallbackMade { seq, .. } = ev {
        if let Some(stored) = renumbered.get(seq) {
            *seq = *stored;
        }
    }
}

/// Writes one call event. Returns whether it changed the store.
fn write_event(store: &Store, ev: &CallEvent) -> Result<bool> {
    match ev {
        CallEvent::Finished(r) => store.put_call(r),
        CallEvent::CallbackMade { seq, requested, at, .. } => store.callback_made(*seq, *requested, *at),
    }
}

#[cfg(test)]
pub(super) mod tests;
