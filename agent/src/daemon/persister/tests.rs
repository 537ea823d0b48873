//! The persister in-process, with a store in a temporary directory and a
//! clock moved by hand.

use super::*;
use crate::daemon::ManualClock;
use cbt_proto::synth::{frames, Call, Script};
use cbt_proto::time::SECOND;
use cbt_proto::{EngineConfig, LinkType};
use std::sync::Mutex;

/// The practice the test engine serves.
pub(in crate::daemon) fn site() -> cbt_proto::site::Site {
    cbt_proto::site::Site::single("B82005", &["441632960123"], &cbt_proto::number::Hasher::new([2; 32], "44"))
}

pub(in crate::daemon) fn engine() -> Engine {
    Engine::new(EngineConfig { site: Some(site()), journal: true, emit_legs: false, hash_key: [2; 32], ..EngineConfig::default() })
}

pub(in crate::daemon) const T0: i64 = 1_793_610_000 * SECOND;

/// Feeds `n` answered calls, `first` numbering them.
pub(in crate::daemon) fn calls(e: &mut Engine, first: u64, n: u64) {
    for k in first..first + n {
        let c = Call::numbered(k, "192.0.2.7:5060".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), Timestamp(T0 + k as i64 * SECOND), Script::Answered { ring: 100, answer: 500, talk: 1000, caller_hangs_up: true });
        for (i, m) in c.messages().iter().enumerate() {
            e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        }
    }
    e.tick(Timestamp(T0 + (first + n) as i64 * SECOND + 30 * SECOND));
}

pub(in crate::daemon) fn persister(dir: PathBuf, memory_calls: usize, clock: Arc<ManualClock>) -> (Persister, Arc<Mutex<Option<bool>>>) {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let p = Persister::new(dir, 1 << 20, memory_calls, 30 * SECOND, clock, Box::new(move |st| *s.lock().unwrap() = Some(st.is_some())));
    (p, seen)
}

/// A persister on `dir/store`, opened with a fresh engine.
pub(in crate::daemon) fn opened(dir: &std::path::Path, clock: &Arc<ManualClock>) -> (Persister, Engine) {
    let (mut p, _) = persister(dir.join("store"), 100, clock.clone());
    let mut e = engine();
    p.open(&mut e);
    (p, e)
}

/// A first process on `dir/store`: its engine saved at the start (as the
/// daemon's is), then `n` calls stored and acknowledged, then killed (its
/// journal still holds the calls' messages).
pub(in crate::daemon) fn stored_then_killed(dir: &std::path::Path, clock: &Arc<ManualClock>, n: u64) {
    let (mut p, mut e) = opened(dir, clock);
    p.snapshot(&e);
    calls(&mut e, 1, n);
    p.persist(&mut e);
    clock.advance(FLUSH_EVERY);
    assert_eq!(p.persist(&mut e).len(), n as usize, "stored and acknowledged");
}

#[test]
fn calls_are_durable_before_they_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp(T0)));
    let (mut p, published) = persister(dir.path().join("store"), 100, clock.clone());
    let mut e = engine();
    p.open(&mut e);
    assert_eq!(*published.lock().unwrap(), Some(true), "the store was published");
    calls(&mut e, 1, 3);
    // written, but not acknowledged before the flush that is due
    // FLUSH_EVERY after the last (one flush for every call meanwhile)
    assert!(p.persist(&mut e).is_empty());
    calls(&mut e, 4, 2);
    assert!(p.persist(&mut e).is_empty());
    clock.advance(FLUSH_EVERY);
    let acked = p.persist(&mut e);
    assert_eq!(acked.len(), 5);
    assert!(p.persist(&mut e).is_empty(), "acknowledged once");
    // acknowledged means on disk: a second process sees them
    drop(p);
    let store = Store::open(&dir.path().join("store"), 1 << 20).unwrap();
    assert_eq!(store.call_count(), 5);
}

#[test]
fn a_store_that_fails_holds_calls_in_memory_and_writes_them_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // a file where the store's directory should be: the store cannot open
    std::fs::write(&path, b"not a directory").unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp(T0)));
    let (mut p, published) = persister(path.clone(), 4, clock.clone());
    let mut e = engine();
    p.open(&mut e);
    assert!(p.store().is_none());
    assert!(matches!(p.error(), Some(StoreError::Io { .. })), "{:?}", p.error());
    assert_eq!(*published.lock().unwrap(), Some(false));
    calls(&mut e, 1, 6);
    assert!(p.persist(&mut e).is_empty(), "nothing is acknowledged without a store");
    assert_eq!((p.held_in_memory(), p.lost_in_memory()), (4, 2), "held within the bound, the oldest dropped and counted");
    // too early to retry
    std::fs::remove_file(&path).unwrap();
    clock.advance(STORE_RETRY / 2);
    p.retry(&mut e);
    assert!(p.store().is_none());
    // the retry time has come: the store opens, the held calls are written
    clock.advance(STORE_RETRY);
    p.retry(&mut e);
    assert!(p.store().is_some());
    let acked = p.persist(&mut e);
    assert_eq!(acked.len(), 4);
    assert_eq!(p.held_in_memory(), 0);
    assert_eq!(p.store().unwrap().call_count(), 4);
    // the journal was off: a snapshot is due at once
    p.snapshot_if_due(&e);
    assert_eq!(p.last_snapshot(), Some(clock.now()));
}

#[test]
fn a_restart_restores_calls_in_progress_and_records_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::at(Timestamp(T0)));
    {
        let (mut p, _) = persister(path.clone(), 100, clock.clone());
        let mut e = engine();
        p.open(&mut e);
        // one call answered, not yet ended
        let c = Call::numbered(9, "192.0.2.7:5060".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), Timestamp(T0), Script::AnsweredNoBye { answer: 500 });
        for (i, m) in c.messages().iter().enumerate() {
            e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        }
        p.snapshot(&e);
        p.persist(&mut e);
        assert_eq!(e.open_calls(), 1);
        // killed here: nothing more happens
    }
    clock.advance(60 * SECOND);
    let (mut p, _) = persister(path, 100, clock.clone());
    let mut e = engine();
    p.open(&mut e);
    assert_eq!(e.open_calls(), 1, "the call in progress came back");
    assert!(p.recovered().is_some_and(|r| r.contains("1 calls in progress")), "{:?}", p.recovered());
    assert_eq!(p.gaps().last().map(|g| g.reason.as_str()), Some("agent stopped"));
    let gap = p.gaps().last().cloned().unwrap();
    assert_eq!(gap.to, Timestamp(T0 + 60 * SECOND), "until capture began, the gap ends at the process start");
    // capture began 3 s later (the store took that long to recover): the
    // gap really ended then, in memory, in the store and for the engine
    let since = Timestamp(T0 + 63 * SECOND);
    p.capture_began(&mut e, since);
    assert_eq!(p.gaps().last().map(|g| (g.from, g.to)), Some((gap.from, since)));
    p.capture_began(&mut e, Timestamp(T0 + 99 * SECOND));
    assert_eq!(p.gaps().last().map(|g| g.to), Some(since), "only the restart's own gap, once");
    drop(p);
    let store = Store::open(&dir.path().join("store"), 1 << 20).unwrap();
    assert_eq!(store.gaps().unwrap().last().map(|g| (g.from, g.to)), Some((gap.from, since)));
}

#[test]
fn write_errors_are_told_apart_by_type() {
    let dir = std::path::Path::new("/var/lib/cbt-agent");
    let full = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::StorageFull)).context("appending to the journal");
    assert_eq!(StoreError::classify(dir, &full), StoreError::DiskFull { dir: dir.into() });
    let sled_full = anyhow::Error::from(sled::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)));
    assert_eq!(StoreError::classify(dir, &sled_full), StoreError::DiskFull { dir: dir.into() });
    let corrupt = anyhow::Error::from(sled::Error::Corruption { at: None, bt: () });
    assert!(matches!(StoreError::classify(dir, &corrupt), StoreError::Corrupt { .. }));
    let denied = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    assert!(matches!(StoreError::classify(dir, &denied), StoreError::Io { .. }));
    // a message that merely says "No space left" is not a full disk
    assert!(matches!(StoreError::classify(dir, &anyhow::anyhow!("No space left on device")), StoreError::Io { .. }));
}

#[test]
fn calls_synced_before_a_failed_flush_are_acknowledged_when_the_store_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::at(Timestamp(T0)));
    let (mut p, _) = persister(path.clone(), 100, clock.clone());
    let mut e = engine();
    p.open(&mut e);
    // one call on 2 Nov (UTC), one on 3 Nov
    calls(&mut e, 1, 1);
    calls(&mut e, 60_000, 1);
    assert!(p.persist(&mut e).is_empty());
    // 3 Nov's file cannot be written (as a full disk): 2 Nov's is synced first
    let blocker = path.join("calls/2026-11-03.calls");
    std::fs::create_dir(&blocker).unwrap();
    clock.advance(FLUSH_EVERY);
    assert!(p.persist(&mut e).is_empty());
    assert!(p.store().is_none(), "the flush failed");
    std::fs::remove_dir(&blocker).unwrap();
    clock.advance(STORE_RETRY);
    p.retry(&mut e);
    assert!(p.store().is_some());
    clock.advance(FLUSH_EVERY);
    let acked = p.persist(&mut e);
    assert_eq!(p.store().unwrap().call_count(), 2);
    assert_eq!(acked.len(), 2, "both calls are durable now; each must be acknowledged (counted) once");
}

#[test]
fn a_lost_snapshot_does_not_store_twice_the_calls_stored_before_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp(T0)));
    stored_then_killed(dir.path(), &clock, 3);
    std::fs::write(dir.path().join("store/snapshot.json"), b"{ damaged").unwrap();
    let (p, _e) = opened(dir.path(), &clock);
    let store = p.store().unwrap();
    assert_eq!(store.call_count(), 3, "the journal's calls found stored, not stored again under new numbers");
    assert!(store.problems().iter().any(|p| p.contains("snapshot")), "{:?}", store.problems());
}
