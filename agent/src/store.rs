//! The store. This module owns everything on disk; no other code touches
//! sled or the store's files.
//!
//! In the state directory:
//!
//! | what | where | format |
//! |---|---|---|
//! | finished calls | files `calls/YYYY-MM-DD.calls`, one per UTC day of the calls' start, appended to (callbacks made later as amendment records) | `persist::calls` file format 1, calls as `persist::v1::CallV1` JSON (no caller hash) |
//! | closed days | sled tree `days`: `YYYY-MM-DD` ++ 0x00 ++ practice | `persist::v1::DayV1` JSON |
//! | upload outbox | sled tree `outbox`: `YYYY-MM-DD` ++ 0x00 ++ practice | `persist::v1::OutboxItemV1` JSON (the document to send) |
//! | upload states | sled tree `uploads`: `YYYY-MM-DD` ++ 0x00 ++ practice | `persist::v1::UploadStateV1` JSON (revisions given, delivered) |
//! | activity | sled tree `activity`: `YYYY-MM-DD` | `persist::v1::ActivityV1` JSON (capture by local hour) |
//! | kept aside | sled tree `quarantine`: the original key (a layout-4 call: started (i64 as u64 + 2^63) ++ seq (u64), big-endian) | the original value, unreadable |
//! | gaps, marks | sled tree `meta`: `schema`, `call_totals`, `gaps`, `pruned_before`, `days_pruned_before`, `closed_through`, `dirty_days` | JSON |
//! | engine snapshot | file `snapshot.json` (written to a temporary file, synced, renamed) | `{"journal": N, "snapshot": persist::v2::SnapshotV2}` (version 1 read) |
//! | journal | files `journal-N.log`: the messages since snapshot N | `persist::journal` framing 2 (0.1.0: framing 1), records `JournalRecordV1` |
//! | damaged bytes | directory `aside/` | what could not be read, as it was (of a call file: `calls-DATE-at-OFFSET.bin`, a call that does not decode `calls-DATE-call-N.json`) |
//!
//! Every value has a version ([`cbt_proto::persist`]); the store's layout
//! has the `schema` mark: 2 was 0.1.0's, 3 the first uploader's, 4 kept
//! calls in sled (tree `calls`, one key per call), 5 this one's. An older
//! store is migrated when it is opened; a newer one is refused, untouched.
//!
//! Every key starts with its date and calls are in a file per day, so a
//! read of some days reads those days, whatever the store holds; nothing is
//! counted by iterating a tree (sled's `len` does): the number of calls and
//! the highest call number are kept in memory, written to `meta`
//! (`call_totals`) when the store is closed and taken out when it is
//! opened, so opening a store closed cleanly reads no call (after a crash,
//! one pass over the call files counts them). Call records are kept for `store.call_retention`, day
//! figures, upload states and the activity record for `store.retention`;
//! neither is pruned on a day not closed, not delivered, or marked dirty.
//!
//! Why two kinds of storage: sled is the design card's store and holds the
//! records that are a few a day (day figures, the outbox, upload states,
//! activity, marks); the write-ahead journal, the snapshot and the calls
//! are streams and a blob that sled handled badly (measured: a JSON
//! snapshot of 12,000 legs written into sled every 30 s and one key per
//! journaled message took the daemon's memory to hundreds of MiB; one key
//! per call made its memory grow by about 25 bytes a call kept, whatever
//! its cache, `bench/examples/sled_keys.rs`). Plain append-only files with
//! a checksum per record, synced at the same points as sled, do that job
//! ([`files`] for the calls).
//!
//! Durability: callers write, then `flush()` (journal file synced, call
//! files written and synced, then sled flushed) at the points that promise durability; the daemon flushes
//! before it counts a call anywhere. A call is written only if its sequence
//! number is not stored yet, so replaying the journal after a crash never
//! counts a call twice. Day figures are computed from the calls when the
//! day is over, and kept longer than the calls (`store.retention`).

use anyhow::{anyhow, Context, Result};
use cbt_proto::call::CallRecord;
use cbt_proto::engine::{EngineSnapshot, EngineSnapshotRef, JournalEntry};
use cbt_proto::metrics::{Aggregator, Day};
use cbt_proto::persist::v1::{ActivityV1, HourV1, OutboxItemV1, UploadStateV1};
use cbt_proto::persist::{self, journal as framing, FormatError};
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use chrono::{Duration, NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why the store cannot be used, by kind: what the daemon and the commands
/// tell apart (a full disk clears by itself; a newer or damaged store needs
/// a person; another agent holds it). Classified from the error's types,
/// never its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The disk holding the store is full.
    DiskFull { dir: PathBuf },
    /// Another cbt-agent process has the store open.
    Locked { dir: PathBuf, pid: Option<u32> },
    /// Written by a newer cbt-agent: refused, left untouched.
    Newer { dir: PathBuf, detail: String },
    /// It cannot be read: damaged.
    Corrupt { dir: PathBuf, detail: String },
    /// Any other failure to read or write (rights, a missing directory).
    Io { dir: PathBuf, detail: String },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::DiskFull { dir } => write!(f, "the disk holding {} is full (free some space: writing resumes by itself)", dir.display()),
            StoreError::Locked { dir, pid } => write!(
                f,
                "another cbt-agent is using {}{}: stop it first (`sudo systemctl stop cbt-agent`), or give this one another store.dir",
                dir.display(),
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            StoreError::Newer { detail, .. } => write!(f, "{detail}"),
            StoreError::Corrupt { dir, detail } => write!(
                f,
                "the store in {} cannot be read ({detail}): it may be damaged; stop the service, move the directory aside and start again (a new store is made; keep the old one for recovery)",
                dir.display()
            ),
            StoreError::Io { dir, detail } => write!(f, "cannot use the store in {}: {detail}", dir.display()),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// What kind of failure `e` is, from the types in its chain.
    pub fn classify(dir: &Path, e: &anyhow::Error) -> StoreError {
        let dir = dir.to_path_buf();
        for c in e.chain() {
            if let Some(s) = c.downcast_ref::<StoreError>() {
                return s.clone();
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::StorageFull {
                    return StoreError::DiskFull { dir };
                }
            }
            match c.downcast_ref::<sled::Error>() {
                Some(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull => {
                    return StoreError::DiskFull { dir }
                }
                Some(sled::Error::Corruption { .. }) | Some(sled::Error::ReportableBug(_)) => {
                    return StoreError::Corrupt {
                        dir,
                        detail: format!("{c}"),
                    }
                }
                _ => {}
            }
            if let Some(FormatError::Newer { .. }) = c.downcast_ref::<FormatError>() {
                return StoreError::Newer {
                    dir,
                    detail: format!("{c}"),
                };
            }
        }
        StoreError::Io {
            dir,
            detail: format!("{e:#}"),
        }
    }

    /// Clears by itself once the cause goes (space freed): worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull { .. } | StoreError::Io { .. } | StoreError::Locked { .. }
        )
    }
}

/// A sled transaction's failure, keeping sled's error (and its I/O kind).
fn tx_error(e: TransactionError<()>) -> anyhow::Error {
    match e {
        TransactionError::Storage(s) => s.into(),
        TransactionError::Abort(()) => anyhow!("the store's transaction was aborted"),
    }
}

/// The store layout this build writes. 2: cbt-agent 0.1.0 (outbox of day
/// figures); 3: the outbox holds upload documents; 4: one key per call (no
/// `seqs` index), days and upload states keyed by date first; 5: calls in
/// files of a day (`files`), not in sled.
pub const SCHEMA: u32 = 5;

mod files;
use files::CallFiles;

/// How long before a day's start a call whose callback is made that day
/// may have started: the callback window after the request, and a day for
/// the call in which it was requested (two days in all for a same-day
/// window, as it always was; a window of "72h" reaches back four).
pub fn callback_lookback(site: &Site) -> cbt_proto::time::Micros {
    use files::DAY;
    match site.callback_window {
        cbt_proto::site::CallbackWindow::SameDay => 2 * DAY,
        cbt_proto::site::CallbackWindow::Within(d) => d.saturating_add(DAY).max(2 * DAY),
    }
}

/// Calls and callbacks (by call number) written to the store whose writer
/// has not acknowledged them yet (see [`Store::figures_on_except`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unacknowledged {
    pub calls: std::collections::HashSet<u64>,
    pub callbacks: std::collections::HashSet<u64>,
}

pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    calls: CallFiles,
    /// How many calls `calls` holds, and the highest sequence number
    /// stored (sled counts a tree by reading all of it): kept up to date
    /// here, and in `meta` (`call_totals`) only while the store is closed.
    call_count: AtomicUsize,
    max_seq: AtomicU64,
    /// The two above are known (the store opened): written when it closes.
    counted: bool,
    /// The store was closed cleanly last time (its totals were there): every
    /// call in it was written whole by an agent that read it back since or
    /// wrote it itself, so the start need not read them all again.
    closed_cleanly: bool,
    /// Stored records read (calls, days, upload states, activity) since
    /// the store was opened: what a read costs, whatever the store holds.
    reads: AtomicUsize,
    days: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
    uploads: sled::Tree,
    activity: sled::Tree,
    quarantine: sled::Tree,
    journal: Mutex<Journal>,
    /// What could not be read, since the store was opened (for status,
    /// the log and `report`'s exit status).
    problems: Mutex<Vec<String>>,
    /// Held while the store is open: one process at a time.
    _lock: File,
}

struct Journal {
    generation: u64,
    /// Opened at the first append: a store opened to read (`report`)
    /// leaves no file behind.
    file: Option<BufWriter<File>>,
    bytes: u64,
}

/// What recovery found: the state to restore and the messages to replay.
pub struct Recovery {
    pub snapshot: Option<EngineSnapshot>,
    pub entries: Vec<JournalEntry>,
    /// Journal files read, and bytes of a torn last record (a kill while
    /// appending: expected, not damage).
    pub files: usize,
    pub torn_bytes: usize,
}

/// A stretch of time whose packets were not seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from: Timestamp,
    pub to: Timestamp,
    pub reason: String,
}

/// A call's key in layout 4's `calls` tree (and in `quarantine`): its
/// start then its number. Layout 5 reads it (the migration, `key_seq`);
/// the tests write it.
#[cfg(test)]
fn call_key(started: Timestamp, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&((started.micros() as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number in a `calls` key.
fn key_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(8..16)?.try_into().ok()?))
}

/// When the call of a `calls` key started (the inverse of the sign flip
/// that orders negative times first).
fn key_started(k: &[u8]) -> Option<Timestamp> {
    Some(Timestamp((u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64))
}

/// The key of a practice-day (`days`, `uploads`, `outbox`): the date
/// first, so that the days of a period are one range.
fn day_key(date: NaiveDate, practice: &str) -> Vec<u8> {
    let mut k = date.format("%Y-%m-%d").to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(practice.as_bytes());
    k
}

/// The date and practice of a `day_key`.
fn parse_day_key(k: &[u8]) -> Option<(NaiveDate, String)> {
    if k.get(10) != Some(&0) {
        return None;
    }
    let date = NaiveDate::parse_from_str(std::str::from_utf8(&k[..10]).ok()?, "%Y-%m-%d").ok()?;
    Some((date, String::from_utf8_lossy(&k[11..]).to_string()))
}

/// The date and practice of a layout 2-3 key of `days` and `uploads`
/// (practice ++ 0x00 ++ date).
fn parse_old_day_key(k: &[u8]) -> Option<(NaiveDate, String)> {
    let sep = k.iter().position(|b| *b == 0)?;
    let date =
        NaiveDate::parse_from_str(std::str::from_utf8(&k[sep + 1..]).ok()?, "%Y-%m-%d").ok()?;
    Some((date, String::from_utf8_lossy(&k[..sep]).to_string()))
}

/// The keys of dates `from..=to` (open ends: all) in a date-first tree.
fn date_range(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let at = |d: NaiveDate| d.format("%Y-%m-%d").to_string().into_bytes();
    (
        from.map_or(Bound::Unbounded, |d| Bound::Included(at(d))),
        to.and_then(|d| d.succ_opt())
            .map_or(Bound::Unbounded, |d| Bound::Excluded(at(d))),
    )
}

/// A key as text, bytes that are not printable ASCII escaped.
fn escaped(key: &[u8]) -> String {
    String::from_utf8_lossy(&key.iter().flat_map(|b| std::ascii::escape_default(*b)).collect::<Vec<u8>>()).to_string()
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialisable")
}

fn gap_v1(g: &Gap) -> persist::v1::GapV1 {
    persist::v1::GapV1 {
        from: g.from,
        to: g.to,
        reason: g.reason.clone(),
    }
}

fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}.log"))
}

/// Generations of the journal files present, in order.
fn journal_generations(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("journal-")
            .and_then(|r| r.strip_suffix(".log"))
        {
            if let Ok(g) = n.parse() {
                out.push(g);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Takes the store's lock file (`lock`, holding the pid of the process
/// using it), so that a second agent on the same store gets a plain
/// sentence instead of sled's error.
fn lock_store(dir: &Path) -> Result<File> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (run with sudo: the store belongs to the service's user, cbt-agent)"
            } else {
                ""
            };
            anyhow!("cannot open {}: {e}{hint}", path.display())
        })?;
    // SAFETY: flock(2) on a descriptor we own; released when the file closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        return Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            pid,
        }
        .into());
    }
    f.set_len(0)?;
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

/// Opens sled under our own lock. sled takes a lock of its own on its
/// files, and a store closed by this process a moment ago can still hold
/// it (sled's flusher thread lets go of the database up to a flush
/// interval later). Holding `lock` means no other agent has the store, so
/// a busy sled lock is our own lingering one: wait for it, a few seconds
/// at most.
fn open_sled(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .mode(sled::Mode::LowSpace)
            .open();
        match r {
            Err(sled::Error::Io(io))
                if sled_lock_busy(&io) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// sled 0.34 reports a busy lock as an `Other` error whose text carries
/// the flock's `WouldBlock` (config.rs: "could not acquire lock on ..."),
/// so the kind alone never matches.
fn sled_lock_busy(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().starts_with("could not acquire lock on")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The UTC span of local dates `from..=to` (open ends: all).
pub fn local_span(
    site: &Site,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> (Timestamp, Timestamp) {
    (
        from.map_or(Timestamp::MIN, |d| local_day_span(site, d).0),
        to.map_or(Timestamp::MAX, |d| local_day_span(site, d).1),
    )
}

/// The UTC span of a local date.
fn local_day_span(site: &Site, date: NaiveDate) -> (Timestamp, Timestamp) {
    let at = |d: NaiveDate| {
        site.timezone
            .from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map_or(Timestamp(0), |t| Timestamp(t.timestamp_micros()))
    };
    (at(date), at(date + Duration::days(1)))
}

/// The `meta` key of [`CallTotals`].
const TOTALS: &str = "call_totals";

/// How many calls are stored and the highest sequence number stored (or
/// ever stored: pruning leaves it), in `meta` while the store is closed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct CallTotals {
    count: u64,
    max_seq: u64,
}

impl Drop for Store {
    /// Closing: the totals are kept for the next open (none after a crash).
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        if let Err(e) = self.calls.flush() {
            // calls held in memory not written: counted afresh next time
            tracing::error!("closing the store: {e:#}");
            return;
        }
        let t = CallTotals {
            count: self.call_count.load(Ordering::Relaxed) as u64,
            max_seq: self.max_seq.load(Ordering::Relaxed),
        };
        if self.meta.insert(TOTALS, json(&t)).is_ok() {
            let _ = self.db.flush();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with sled's page cache
    /// capped at `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Self::open_inner(dir, cache_bytes).map_err(|e| StoreError::classify(dir, &e))
    }

    fn open_inner(dir: &Path, cache_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (run with sudo: the store belongs to the service's user, cbt-agent)"
            } else {
                ""
            };
            anyhow!(
                "cannot create the store directory {}: {e}{hint}",
                dir.display()
            )
        })?;
        let lock = lock_store(dir)?;
        let db = open_sled(dir, cache_bytes).map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::DiskFull {
                    dir: dir.to_path_buf(),
                }
            }
            sled::Error::Io(io) => StoreError::Io {
                dir: dir.to_path_buf(),
                detail: format!("cannot open it: {io}"),
            },
            other => StoreError::Corrupt {
                dir: dir.to_path_buf(),
                detail: other.to_string(),
            },
        })?;
        let t = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("cannot open the store's {name} tree"))
        };
        let meta = t("meta")?;
        let found: Option<u32> = match meta.get("schema")? {
            None => None,
            Some(v) => {
                Some(serde_json::from_slice(&v).context("the store's schema mark is unreadable")?)
            }
        };
        match found {
            Some(n) if n > SCHEMA => {
                return Err(StoreError::Newer {
                    dir: dir.to_path_buf(),
                    detail: format!(
                        "the store in {} was written by a newer cbt-agent (store layout {n}; this one reads up to {SCHEMA}): install that version again, or move the directory aside to start a new store",
                        dir.display()
                    ),
                }
                .into())
            }
            Some(n) if n < 2 => return Err(anyhow!("the store in {} has an unknown layout ({n}): move the directory aside", dir.display())),
            _ => {}
        }
        // continue after the newest journal generation (or the snapshot's)
        let snap_gen = match std::fs::read(dir.join("snapshot.json")) {
            Ok(b) => persist::snapshot_journal(&b).ok(),
            Err(_) => None,
        };
        let generation = journal_generations(dir)?
            .last()
            .copied()
            .unwrap_or(0)
            .max(snap_gen.unwrap_or(0))
            + 1;
        let mut store = Store {
            calls: CallFiles::open(&dir.join("calls"), &dir.join("aside"))?,
            call_count: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            counted: false,
            closed_cleanly: false,
            reads: AtomicUsize::new(0),
            days: t("days")?,
            outbox: t("outbox")?,
            uploads: t("uploads")?,
            activity: t("activity")?,
            quarantine: t("quarantine")?,
            meta,
            db,
            dir: dir.to_path_buf(),
            journal: Mutex::new(Journal {
                generation,
                file: None,
                bytes: 0,
            }),
            problems: Mutex::new(Vec::new()),
            _lock: lock,
        };
        match found {
            None => {
                store.meta.insert("schema", json(&SCHEMA))?;
            }
            Some(2) => {
                store.migrate_from_2()?;
                store.migrate_from_3(2)?;
                store.migrate_from_4(2)?;
            }
            Some(3) => {
                store.migrate_from_3(3)?;
                store.migrate_from_4(3)?;
            }
            Some(4) => store.migrate_from_4(4)?,
            _ => {}
        }
        // a migration cut short after its mark leaves the old trees behind
        for old in ["seqs", "calls"] {
            if store.db.tree_names().iter().any(|n| n.as_ref() == old.as_bytes()) {
                store.db.drop_tree(old)?;
            }
        }
        // the totals written when the store was closed, taken out while it
        // is open: a store left by a crash (or of an older layout) has none,
        // and one pass over the keys counts its calls
        let totals = match store
            .meta
            .remove(TOTALS)?
            .and_then(|v| serde_json::from_slice::<CallTotals>(&v).ok())
        {
            Some(t) => {
                store.db.flush()?;
                store.closed_cleanly = true;
                t
            }
            None => {
                let (count, max_seq) = store.calls.count()?;
                CallTotals { count: count as u64, max_seq }
            }
        };
        store
            .call_count
            .store(totals.count as usize, Ordering::Relaxed);
        store.max_seq.store(totals.max_seq, Ordering::Relaxed);
        store.counted = true;
        Ok(store)
    }

    /// 0.1.0 (layout 2) queued closed days' figures in `outbox` for an
    /// uploader it did not have; the figures are in `days`, from which the
    /// uploader makes its documents. Values are read as version 1 as they
    /// are (no rewrite needed).
    fn migrate_from_2(&self) -> Result<()> {
        let old = self.outbox.len();
        self.outbox.clear()?;
        self.db.flush()?;
        tracing::info!(dir = %self.dir.display(), queued_days = old, "store migrating from layout 2 (cbt-agent 0.1.0): the old outbox of day figures emptied");
        Ok(())
    }

    /// Layout 3 (and 2) kept `days` and `uploads` by practice first, and a
    /// second key per call (`seqs`, sequence number to call key). Each tree
    /// is rewritten by date first in one atomic batch (a tree already
    /// rewritten by a migration cut short is left as it is); calls keep
    /// their keys, so none can be lost; the index goes once the mark says 4.
    fn migrate_from_3(&self, from: u32) -> Result<()> {
        let mut moved = 0;
        for tree in [&self.days, &self.uploads] {
            let mut batch = sled::Batch::default();
            for r in tree.iter() {
                let (k, v) = r?;
                if parse_day_key(&k).is_some() {
                    continue;
                }
                if let Some((date, practice)) = parse_old_day_key(&k) {
                    batch.remove(k);
                    batch.insert(day_key(date, &practice), v);
                    moved += 1;
                }
            }
            tree.apply_batch(batch)?;
        }
        // call records an earlier release stored are kept as it would have
        // (see `AgentConfig::call_cut`)
        if self.meta.get("upgraded_at")?.is_none() {
            self.meta
                .insert("upgraded_at", json(&crate::daemon::capture::now()))?;
        }
        self.meta.insert("schema", json(&4u32))?;
        self.db.flush()?;
        tracing::info!(dir = %self.dir.display(), moved, "store migrated from layout {from} to 4: day figures and upload states keyed by date, one key per call");
        Ok(())
    }

    /// Layout 4 (and before) kept calls in sled's `calls` tree. Each is
    /// written to its day's file (once: a migration cut short and run
    /// again finds the calls it wrote), the files synced, then the mark
    /// set to 5, and only then the tree dropped (`open_inner` drops one a
    /// migration cut short after its mark left behind). One that cannot
    /// be read is kept aside, as a read would.
    fn migrate_from_4(&self, from: u32) -> Result<()> {
        let old = self.db.open_tree("calls")?;
        let (mut moved, mut bad) = (0, 0);
        for r in old.iter() {
            let (k, v) = r?;
            match (key_started(&k), key_seq(&k), persist::decode_call(&v)) {
                (Some(started), Some(seq), Ok(c)) => {
                    self.calls.put(seq, started, &v, c.callback_made)?;
                    moved += 1;
                }
                (_, _, Err(e @ FormatError::Newer { .. })) => return Err(e.into()),
                (_, _, e) => {
                    let why = e.err().map_or("its key is not a call's".to_string(), |e| e.to_string());
                    if self.quarantine.insert(&k, &v).is_ok() {
                        self.problem(format!("stored call {}: {why}; kept aside in the store's quarantine", escaped(&k)));
                    }
                    bad += 1;
                }
            }
        }
        self.calls.flush()?;
        // counted again from the files (and every call read once: `verify`)
        self.meta.remove(TOTALS)?;
        self.meta.insert("schema", json(&SCHEMA))?;
        self.db.flush()?;
        drop(old);
        self.db.drop_tree("calls")?;
        tracing::info!(dir = %self.dir.display(), moved, unreadable = bad, "store migrated from layout {from} to {SCHEMA}: calls in files of a day (calls/), out of sled");
        Ok(())
    }

    fn problem(&self, msg: String) {
        tracing::error!("{msg}");
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    /// What could not be read since the store was opened (each with what
    /// was done with it).
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records kept aside in the store (unreadable values), and files in
    /// `aside/` (damaged journal bytes, an unreadable snapshot).
    pub fn kept_aside(&self) -> (usize, usize) {
        let files = std::fs::read_dir(self.dir.join("aside"))
            .map(|d| d.count())
            .unwrap_or(0);
        (self.quarantine.len(), files)
    }

    /// Keeps bytes that could not be read in `aside/NAME`.
    fn keep_aside(&self, name: &str, bytes: &[u8]) -> String {
        let dir = self.dir.join("aside");
        let path = dir.join(name);
        match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, bytes)) {
            Ok(()) => format!("kept in {}", path.display()),
            Err(e) => format!("could not be kept aside ({e})"),
        }
    }

    /// Reports what `calls` found unreadable, kept aside (in `aside/`)
    /// and took out of its files; a call among it is no longer counted.
    /// Returns how many.
    fn take_bad(&self) -> usize {
        let bad = self.calls.take_bad();
        for b in &bad {
            match b.call {
                Some((started, seq)) => {
                    let _ = self
                        .call_count
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
                    self.problem(format!("stored call {seq} (started {started}, calls/{}): {}; {}", b.file, b.why, b.kept));
                }
                None => self.problem(format!("calls/{}: {} at byte {}; {}; the records after them are read", b.file, b.why, b.offset, b.kept)),
            }
        }
        bad.len()
    }

    /// `r`, once what the call files found unreadable meanwhile is kept
    /// aside and reported.
    fn reported<T>(&self, r: Result<T>) -> Result<T> {
        self.take_bad();
        r
    }

    /// Moves an unreadable stored value to the `quarantine` tree (a call:
    /// `quarantine_call`).
    fn quarantine(&self, tree: &sled::Tree, what: &str, key: &[u8], value: &[u8], e: &FormatError) {
        let kept = self.quarantine.insert(key, value).is_ok() && tree.remove(key).is_ok();
        self.problem(format!(
            "{what} {}: {e}; {}",
            escaped(key),
            if kept {
                "kept aside in the store's quarantine"
            } else {
                "left in place"
            }
        ));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything written so far durable: the journal file synced,
    /// the call files written and synced, then sled flushed.
    pub fn flush(&self) -> Result<()> {
        {
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = j.file.as_mut() {
                f.flush().map_err(|e| self.write_error(e.into()))?;
                f.get_ref()
                    .sync_data()
                    .map_err(|e| self.write_error(e.into()))?;
            }
        }
        self.calls.flush().map_err(|e| self.write_error(e))?;
        self.db.flush().map_err(|e| self.write_error(e.into()))?;
        Ok(())
    }

    /// What kind of failure a write error is (a full disk, damage, I/O).
    pub fn write_error(&self, e: anyhow::Error) -> StoreError {
        StoreError::classify(&self.dir, &e)
    }

    pub fn size_on_disk(&self) -> u64 {
        let files: u64 = [self.dir.clone(), self.dir.join("calls")]
            .iter()
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten())
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        self.db.size_on_disk().unwrap_or(0) + files
    }

    /// Checks every stored call can be read (on start); unreadable ones are
    /// kept aside (the `quarantine` tree) and reported. Only after a crash,
    /// a migration or on a new store: after a clean close the calls are not
    /// read again (that pass is what made a large store's start take memory
    /// in proportion to it); a damaged record is still kept aside and
    /// reported when something reads it.
    pub fn verify(&self) -> Result<StoreCounts> {
        let mut bad = 0;
        if !self.closed_cleanly {
            // every call decoded, a chunk of a file at a time
            let reads = AtomicUsize::new(0);
            let r = self.calls.for_each(Timestamp::MIN, Timestamp::MAX, &reads, |_| true, drop);
            bad += self.take_bad();
            r?;
        }
        Ok(StoreCounts {
            calls: self.call_count(),
            days: self.days.len(),
            journal_bytes: self.journal.lock().unwrap_or_else(|e| e.into_inner()).bytes,
            outbox: self.outbox.len(),
            unreadable: bad,
        })
    }

    /// The last snapshot and the journal records written after it, in
    /// order. A torn record at the end of a file (a kill while appending)
    /// ends that file quietly. Anything else that cannot be read (damaged
    /// bytes, a record of unknown version, an unreadable snapshot) is kept
    /// in `aside/`, reported, and the records after it are still replayed.
    /// A snapshot or record written by a newer agent is an error: nothing
    /// is replayed and nothing is touched.
    pub fn recovery(&self) -> Result<Recovery> {
        let path = self.dir.join("snapshot.json");
        let (snapshot, from_gen) = match std::fs::read(&path) {
            Ok(b) => match persist::read_snapshot(&b) {
                Ok((g, snap)) => (Some(snap), g),
                Err(e @ FormatError::Newer { .. }) => return Err(e.into()),
                Err(e) => {
                    let kept = self.keep_aside(&format!("snapshot-{}.json", unix_now()), &b);
                    let _ = std::fs::remove_file(&path);
                    self.problem(format!(
                        "{e}; {kept}. The calls in progress when it was taken are lost; every journal file present is replayed"
                    ));
                    (None, 0)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(e) => return Err(e.into()),
        };
        let mut out = Recovery {
            snapshot,
            entries: Vec::new(),
            files: 0,
            torn_bytes: 0,
        };
        for g in journal_generations(&self.dir)?
            .into_iter()
            .filter(|g| *g >= from_gen)
        {
            let name = format!("journal-{g}.log");
            let bytes = std::fs::read(self.dir.join(&name))
                .with_context(|| format!("cannot read {name}"))?;
            let scan = framing::scan(&bytes);
            out.files += 1;
            out.torn_bytes += scan.torn_tail;
            for d in &scan.damaged {
                let kept = self.keep_aside(
                    &format!("journal-{g}-at-{}.bin", d.offset),
                    &bytes[d.offset..d.offset + d.len],
                );
                self.problem(format!("{name}: {} bytes at {} are damaged ({}); {kept}; the records after them are replayed", d.len, d.offset, d.reason));
            }
            for f in scan.frames {
                match persist::decode_journal_record(f.version, f.body) {
                    Ok(e) => out.entries.push(e),
                    Err(e @ FormatError::Newer { .. }) => {
                        return Err(anyhow::Error::new(e).context(name))
                    }
                    Err(e) => {
                        let kept =
                            self.keep_aside(&format!("journal-{g}-at-{}.bin", f.offset), f.body);
                        self.problem(format!(
                            "{name}: the record at byte {}: {e}; {kept}",
                            f.offset
                        ));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Appends journal entries (durable at the next `flush`).
    pub fn append_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if j.file.is_none() {
            j.file = Some(self.new_journal_file(j.generation)?);
            j.bytes = framing::FILE_HEADER.len() as u64;
        }
        let mut buf = Vec::with_capacity(512 * entries.len());
        for e in entries {
            let (version, body) = persist::encode_journal_record(e);
            framing::frame(version, &body, &mut buf);
        }
        j.file.as_mut().expect("opened above").write_all(&buf)?;
        j.bytes += buf.len() as u64;
        Ok(())
    }

    fn new_journal_file(&self, generation: u64) -> Result<BufWriter<File>> {
        let path = journal_path(&self.dir, generation);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        w.write_all(&framing::FILE_HEADER)?;
        Ok(w)
    }

    /// Saves the engine state: the calls and records written so far made
    /// durable, the journal moves to a new generation, the snapshot (naming
    /// that generation) replaces the old one atomically, and the older
    /// journals go.
    pub fn save_snapshot(&self, snap: &EngineSnapshotRef<'_>) -> Result<()> {
        // the journal before the snapshot goes: the calls finished from its
        // messages (still in the call files' buffers if no flush came
        // since) must be on disk first
        self.calls.flush()?;
        self.db.flush()?;
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = j.file.as_mut() {
            f.flush()?;
            f.get_ref().sync_data()?;
        }
        let next = j.generation + 1;
        let file = self.new_journal_file(next)?;
        let tmp = self.dir.join("snapshot.json.tmp");
        {
            let mut w = BufWriter::new(File::create(&tmp)?);
            persist::write_snapshot(&mut w, next, snap)?;
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("snapshot.json"))?;
        sync_dir(&self.dir);
        *j = Journal {
            generation: next,
            file: Some(file),
            bytes: framing::FILE_HEADER.len() as u64,
        };
        for g in journal_generations(&self.dir)?
            .into_iter()
            .filter(|g| *g < next)
        {
            let _ = std::fs::remove_file(journal_path(&self.dir, g));
        }
        Ok(())
    }

    /// Stores a finished call unless it is stored already (its key, start
    /// and sequence number, is there: the same call replayed from the
    /// journal, or held in memory and written again). Returns whether it
    /// was new. One key per call, written only if absent (compare and
    /// swap): no transaction, no index.
    pub fn put_call(&self, rec: &CallRecord) -> Result<bool> {
        let new = self.reported(self.calls.put(rec.seq, rec.started, &persist::encode_call(rec), rec.callback_made))?;
        if new {
            self.call_count.fetch_add(1, Ordering::Relaxed);
            self.max_seq.fetch_max(rec.seq, Ordering::Relaxed);
        }
        Ok(new)
    }

    /// Records that a stored call's callback was made. Returns false if it
    /// was recorded already or the call is unknown.
    /// The call is searched for in the files of the day of `requested`
    /// (and the hour after), then of the days before, latest first.
    pub fn callback_made(&self, seq: u64, requested: Timestamp, at: Timestamp) -> Result<bool> {
        self.reported(self.calls.callback(seq, requested, at))
    }

    /// Calls that started in `[from, to)`, in start order. One that cannot
    /// be read (damaged since the store was opened) is kept aside and
    /// reported, not returned.
    pub fn calls_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CallRecord>> {
        self.reported(self.calls.between(from, to, &self.reads))
    }

    /// The calls of a local date (in the site's timezone).
    pub fn calls_on(&self, site: &Site, date: NaiveDate) -> Result<Vec<CallRecord>> {
        let (from, to) = local_day_span(site, date);
        self.calls_between(from, to)
    }

    /// Whether a call started on a local date (one read at most).
    pub fn any_call_on(&self, site: &Site, date: NaiveDate) -> Result<bool> {
        let (from, to) = local_day_span(site, date);
        self.reported(self.calls.any_between(from, to))
    }

    /// Stored records read since the store was opened.
    pub fn records_read(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// How many calls are stored (kept in memory: no read of the store).
    pub fn call_count(&self) -> usize {
        self.call_count.load(Ordering::Relaxed)
    }

    /// Every stored day: ((practice, date), day), by date.
    pub fn days(&self) -> Result<Vec<((String, NaiveDate), Day)>> {
        self.days_between(None, None)
    }

    /// The stored days of dates `from..=to` (open ends: all), by date: a
    /// range of the store, whatever it holds besides.
    pub fn days_between(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<((String, NaiveDate), Day)>> {
        let mut out = Vec::new();
        for r in self.days.range(date_range(from, to)) {
            let (k, v) = r?;
            self.reads.fetch_add(1, Ordering::Relaxed);
            let Some((date, practice)) = parse_day_key(&k) else {
                continue;
            };
            match persist::decode_day(&v) {
                Ok(day) => out.push(((practice, date), day)),
                Err(e) => {
                    self.quarantine(&self.days, "stored day", &k, &v, &e);
                }
            }
        }
        Ok(out)
    }

    /// The figures of a local date from its stored calls: the calls that
    /// started that day, and the callbacks made that day (of calls that
    /// started up to [`callback_lookback`] before it).
    pub fn figures_on(&self, site: &Site, date: NaiveDate) -> Result<Aggregator> {
        self.figures_on_except(site, date, &Unacknowledged::default())
    }

    /// [`Store::figures_on`] leaving out calls and callbacks written but not
    /// yet acknowledged to their writer, which counts them when they are.
    pub fn figures_on_except(&self, site: &Site, date: NaiveDate, except: &Unacknowledged) -> Result<Aggregator> {
        let mut agg = Aggregator::new(site);
        let (from, to) = local_day_span(site, date);
        // streamed: a day's calls are not all held at once
        self.reported(self.calls.for_each(from, to, &self.reads, |_| true, |r| {
            if !except.calls.contains(&r.seq) {
                agg.add_call(&r)
            }
        }))?;
        let made_then = |t: Option<Timestamp>| t.is_some_and(|t| t >= from && t < to);
        self.reported(self.calls.for_each(from.add(-callback_lookback(site)), to, &self.reads, made_then, |r| {
            if let Some(at) = r.callback_made.filter(|t| made_then(Some(*t)) && !except.callbacks.contains(&r.seq)) {
                agg.add_callback(&r.practice, at);
            }
        }))?;
        Ok(agg)
    }

    /// Computes and keeps the figures of every day before `today` not
    /// closed yet: every configured practice (zeros included) on a day the
    /// agent was running or has calls for, and any other practice with
    /// calls (`Unassigned`). A call finishing later on a closed day marks it
    /// dirty (`mark_dirty`); `recompute_day` then updates it. Returns the
    /// dates closed.
    pub fn close_days(&self, site: &Site, today: NaiveDate) -> Result<Vec<NaiveDate>> {
        let first = match self.closed_through()? {
            Some(d) => d + Duration::days(1),
            None => {
                let first_call = self
                    .first_call_start()?
                    .map(|started| Aggregator::new(site).local_date(started));
                let first_activity = self.activity.first()?.and_then(|(k, _)| {
                    NaiveDate::parse_from_str(&String::from_utf8_lossy(&k), "%Y-%m-%d").ok()
                });
                match (first_call, first_activity) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => return Ok(Vec::new()),
                }
            }
        };
        let mut closed = Vec::new();
        let mut date = first;
        while date < today {
            if self.write_day(site, date)? {
                closed.push(date);
            }
            self.meta.insert("closed_through", json(&date))?;
            date += Duration::days(1);
        }
        Ok(closed)
    }

    /// Computes a date's figures from its calls and keeps them. Returns
    /// false for a date with neither calls nor activity (nothing is kept).
    fn write_day(&self, site: &Site, date: NaiveDate) -> Result<bool> {
        let agg = self.figures_on(site, date)?;
        let active = self
            .activity_on(date)?
            .is_some_and(|a| a.hours.iter().any(|h| h.up_s > 0));
        if !active && agg.days().is_empty() {
            return Ok(false);
        }
        let empty = Day::new(agg.wait_buckets(), agg.duration_buckets());
        for (practice, _) in agg.practice_list() {
            let day = agg.days().get(&(practice.clone(), date)).unwrap_or(&empty);
            self.days
                .insert(day_key(date, &practice), persist::encode_day(day))?;
        }
        Ok(true)
    }

    /// The last local date whose figures are closed.
    pub fn closed_through(&self) -> Result<Option<NaiveDate>> {
        Ok(match self.meta.get("closed_through")? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// A call on an already closed date was stored: its figures must be
    /// computed again (and sent again, as a higher revision).
    pub fn mark_dirty(&self, date: NaiveDate) -> Result<()> {
        let mut dirty = self.dirty_days()?;
        if dirty.insert(date) {
            self.meta.insert("dirty_days", json(&dirty))?;
        }
        Ok(())
    }

    pub fn dirty_days(&self) -> Result<BTreeSet<NaiveDate>> {
        Ok(match self.meta.get("dirty_days")? {
            Some(v) => serde_json::from_slice(&v)?,
            None => BTreeSet::new(),
        })
    }

    /// Recomputes a dirty closed date from its calls (if they are still
    /// kept) and clears its mark.
    pub fn recompute_day(&self, site: &Site, date: NaiveDate) -> Result<()> {
        let pruned = self
            .pruned_before()?
            .is_some_and(|p| local_day_span(site, date).0 < p);
        if !pruned {
            self.write_day(site, date)?;
        }
        let mut dirty = self.dirty_days()?;
        dirty.remove(&date);
        self.meta.insert("dirty_days", json(&dirty))?;
        Ok(())
    }

    /// The kept figures of one date, by practice.
    pub fn days_on(&self, date: NaiveDate) -> Result<Vec<(String, Day)>> {
        Ok(self
            .days_between(Some(date), Some(date))?
            .into_iter()
            .map(|((p, _), day)| (p, day))
            .collect())
    }

    // ------------------------------------------------------------ activity

    /// Adds to the activity of local hours of dates.
    pub fn add_activity(
        &self,
        deltas: &std::collections::BTreeMap<(NaiveDate, u8), HourV1>,
    ) -> Result<()> {
        let mut by_date: std::collections::BTreeMap<NaiveDate, Vec<(u8, HourV1)>> =
            Default::default();
        for ((d, h), v) in deltas {
            by_date.entry(*d).or_default().push((*h, *v));
        }
        for (date, hours) in by_date {
            let mut a = self.activity_on(date)?.unwrap_or_default();
            for (h, v) in hours {
                if let Some(slot) = a.hours.get_mut(h as usize) {
                    slot.add(&v);
                }
            }
            self.activity
                .insert(date.format("%Y-%m-%d").to_string(), persist::encode(&a))?;
        }
        Ok(())
    }

    pub fn activity_on(&self, date: NaiveDate) -> Result<Option<ActivityV1>> {
        let key = date.format("%Y-%m-%d").to_string();
        let Some(v) = self.activity.get(&key)? else {
            return Ok(None);
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        match persist::decode_activity(&v) {
            Ok(a) => Ok(Some(a)),
            Err(e) => {
                self.quarantine(&self.activity, "activity record", key.as_bytes(), &v, &e);
                Ok(None)
            }
        }
    }

    // -------------------------------------------------------------- upload

    /// Offers a document for a practice-day. Unless the same content was
    /// offered already (as final, when this one is final), it gets the next
    /// revision, `make(revision)` builds its body, and it replaces any
    /// undelivered older revision in the outbox. Returns the revision
    /// given, if any. Revisions are never reused, across restarts too.
    pub fn offer_document(
        &self,
        practice: &str,
        date: NaiveDate,
        content: &str,
        is_final: bool,
        now: Timestamp,
        make: impl Fn(u64) -> String,
    ) -> Result<Option<u64>> {
        let key = day_key(date, practice);
        let (skey, okey) = (&key, &key);
        let r = (&self.uploads, &self.outbox).transaction(|(uploads, outbox)| {
            let mut st = match uploads.get(&skey)? {
                Some(v) => persist::decode_upload_state(&v).unwrap_or_default(),
                None => UploadStateV1::default(),
            };
            if st.content == content && (st.is_final || !is_final) {
                return Ok(None);
            }
            st.v = 1;
            st.revision += 1;
            st.content = content.to_string();
            st.is_final = is_final;
            let item = OutboxItemV1 {
                v: 1,
                practice: practice.to_string(),
                date,
                revision: st.revision,
                is_final,
                body: make(st.revision),
                enqueued_at: now,
                attempts: 0,
                next_attempt: now,
                last_error: None,
                parked: None,
            };
            outbox.insert(okey.clone(), persist::encode(&item))?;
            uploads.insert(skey.clone(), persist::encode(&st))?;
            Ok(Some(st.revision))
        });
        r.map_err(tx_error)
    }

    /// Items to send now (not parked, due), oldest day first.
    pub fn due_items(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxItemV1>> {
        Ok(self
            .outbox_items()?
            .into_iter()
            .filter(|i| i.parked.is_none() && i.next_attempt <= now)
            .take(limit)
            .collect())
    }

    /// Everything in the outbox, oldest day first.
    pub fn outbox_items(&self) -> Result<Vec<OutboxItemV1>> {
        let mut out = Vec::new();
        for r in self.outbox.iter() {
            let (k, v) = r?;
            match persist::decode_outbox_item(&v) {
                Ok(i) => out.push(i),
                Err(e) => {
                    self.quarantine(&self.outbox, "outbox item", &k, &v, &e);
                }
            }
        }
        Ok(out)
    }

    /// The collector took `revision` of this practice-day: it leaves the
    /// outbox (unless a newer revision replaced it meanwhile).
    pub fn delivered(
        &self,
        practice: &str,
        date: NaiveDate,
        revision: u64,
        at: Timestamp,
    ) -> Result<()> {
        let key = day_key(date, practice);
        let (skey, okey) = (&key, &key);
        (&self.uploads, &self.outbox)
            .transaction(|(uploads, outbox)| {
                if let Some(v) = outbox.get(&okey)? {
                    if persist::decode_outbox_item(&v).is_ok_and(|i| i.revision == revision) {
                        outbox.remove(okey.clone())?;
                    }
                }
                if let Some(v) = uploads.get(&skey)? {
                    let mut st = persist::decode_upload_state(&v).unwrap_or_default();
                    if revision > st.delivered_revision {
                        st.delivered_revision = revision;
                        st.delivered_at = Some(at);
                        uploads.insert(skey.clone(), persist::encode(&st))?;
                    }
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    /// Updates an item in place (attempts, next attempt, error, parking)
    /// if it still holds `revision`.
    pub fn update_item(
        &self,
        practice: &str,
        date: NaiveDate,
        revision: u64,
        f: impl Fn(&mut OutboxItemV1),
    ) -> Result<()> {
        let okey = day_key(date, practice);
        self.outbox.fetch_and_update(&okey, |old| {
            let old = old?;
            match persist::decode_outbox_item(old) {
                Ok(mut i) if i.revision == revision => {
                    f(&mut i);
                    Some(persist::encode(&i))
                }
                _ => Some(old.to_vec()),
            }
        })?;
        Ok(())
    }

    /// Sends parked items again (after a configuration reload). Returns how many.
    pub fn unpark_all(&self, now: Timestamp) -> Result<usize> {
        let mut n = 0;
        for i in self
            .outbox_items()?
            .into_iter()
            .filter(|i| i.parked.is_some())
        {
            self.update_item(&i.practice, i.date, i.revision, |x| {
                x.parked = None;
                x.attempts = 0;
                x.next_attempt = now;
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// Dates whose documents are not all delivered: their calls are kept.
    pub fn undelivered_dates(&self) -> Result<BTreeSet<NaiveDate>> {
        Ok(self.outbox_items()?.into_iter().map(|i| i.date).collect())
    }

    /// The upload state of every practice-day.
    pub fn upload_states(&self) -> Result<Vec<((String, NaiveDate), UploadStateV1)>> {
        self.upload_states_between(None, None)
    }

    /// The upload states of the practice-days of `from..=to` (open ends: all).
    pub fn upload_states_between(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<((String, NaiveDate), UploadStateV1)>> {
        let mut out = Vec::new();
        for r in self.uploads.range(date_range(from, to)) {
            let (k, v) = r?;
            self.reads.fetch_add(1, Ordering::Relaxed);
            let Some((date, practice)) = parse_day_key(&k) else {
                continue;
            };
            if let Ok(st) = persist::decode_upload_state(&v) {
                out.push(((practice, date), st));
            }
        }
        Ok(out)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The first date that must keep everything: the day after the last
    /// closed one, and any day whose documents are not all delivered or
    /// whose figures are to be recomputed (dirty). `None`: no day closed.
    fn first_kept_date(&self) -> Result<Option<NaiveDate>> {
        let Some(closed) = self.closed_through()? else {
            return Ok(None);
        };
        let open = closed.succ_opt().unwrap_or(closed);
        Ok(Some(
            self.undelivered_dates()?
                .into_iter()
                .chain(self.dirty_days()?)
                .chain([open])
                .min()
                .unwrap_or(open),
        ))
    }

    /// Deletes the call records of the local dates before the one holding
    /// `before` (whole days: a day's figures come from its calls or from
    /// its stored figures, never from part of each), only on days already
    /// closed (their figures stay) and before the first day whose documents
    /// are not all delivered or that is dirty. Returns how many were
    /// deleted. The calls before the cut are one range of the store.
    ///
    /// The `pruned_before` mark is written (and flushed) before the calls
    /// go: a prune cut short leaves calls that readers already ignore
    /// (figures of those days come from `days`) and that the next prune
    /// deletes, never a day with neither calls nor figures.
    pub fn prune_calls(&self, site: &Site, before: Timestamp) -> Result<usize> {
        let Some(first_kept) = self.first_kept_date()? else {
            return Ok(0);
        };
        let kept_from = local_day_span(site, first_kept).0;
        let limit = if before >= kept_from {
            kept_from
        } else {
            local_day_span(site, Aggregator::new(site).local_date(before)).0
        };
        // (not `first_call_start`: that reads a whole day's file, this at
        // most the cut's own day, and only if no earlier day has a file)
        if !self.reported(self.calls.any_before(limit))? {
            return Ok(0);
        }
        if self.pruned_before()?.is_none_or(|p| p < limit) {
            self.meta.insert("pruned_before", json(&limit))?;
            self.db.flush()?;
        }
        // counted down as each day goes (a prune cut short by an error
        // leaves the count right)
        let gone = |n: usize| {
            let _ = self
                .call_count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_sub(n)));
        };
        self.reported(self.calls.prune_before(limit, gone))
    }

    /// Deletes the day figures, upload states and activity records of dates
    /// before `before`, never of a date not closed, not delivered or dirty
    /// (nor after one): date ranges of those trees. Returns how many
    /// records were deleted.
    pub fn prune_days(&self, before: NaiveDate) -> Result<usize> {
        let Some(first_kept) = self.first_kept_date()? else {
            return Ok(0);
        };
        let limit = before.min(first_kept);
        let Some(last_pruned) = limit.pred_opt() else {
            return Ok(0);
        };
        let mut n = 0;
        for tree in [&self.days, &self.uploads, &self.activity] {
            let mut batch = sled::Batch::default();
            for r in tree.range(date_range(None, Some(last_pruned))).keys() {
                batch.remove(r?);
                n += 1;
            }
            tree.apply_batch(batch)?;
        }
        if n > 0 && self.days_pruned_before()?.is_none_or(|p| p < limit) {
            self.meta.insert("days_pruned_before", json(&limit))?;
        }
        Ok(n)
    }

    /// Day figures of dates before this one were pruned (`store.retention`).
    pub fn days_pruned_before(&self) -> Result<Option<NaiveDate>> {
        Ok(match self.meta.get("days_pruned_before")? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// When this store was upgraded from an earlier layout (2 or 3), if it was.
    pub fn upgraded_at(&self) -> Result<Option<Timestamp>> {
        Ok(match self.meta.get("upgraded_at")? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Calls before this time were pruned: their figures come from `days`.
    pub fn pruned_before(&self) -> Result<Option<Timestamp>> {
        Ok(match self.meta.get("pruned_before")? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    pub fn gaps(&self) -> Result<Vec<Gap>> {
        let Some(v) = self.meta.get("gaps")? else {
            return Ok(Vec::new());
        };
        match persist::decode_gaps(&v) {
            Ok(list) => Ok(list
                .into_iter()
                .map(|g| Gap {
                    from: g.from,
                    to: g.to,
                    reason: g.reason,
                })
                .collect()),
            Err(e) => {
                self.quarantine(&self.meta, "the list of gaps", b"gaps", &v, &e);
                Ok(Vec::new())
            }
        }
    }

    /// Moves the end of the recorded gap that began at `from` to `to`.
    pub fn extend_gap(&self, from: Timestamp, to: Timestamp) -> Result<()> {
        let mut gaps = self.gaps()?;
        let Some(g) = gaps.iter_mut().rev().find(|g| g.from == from) else {
            return Ok(());
        };
        g.to = g.to.max(to);
        let list: Vec<_> = gaps.iter().map(gap_v1).collect();
        self.meta.insert("gaps", persist::encode_gaps(&list))?;
        Ok(())
    }

    /// Records a gap (the last 100 are kept).
    pub fn add_gap(&self, gap: Gap) -> Result<()> {
        let mut gaps = self.gaps()?;
        gaps.push(gap);
        let keep = gaps.len().saturating_sub(100);
        let list: Vec<_> = gaps[keep..].iter().map(gap_v1).collect();
        self.meta.insert("gaps", persist::encode_gaps(&list))?;
        Ok(())
    }

    /// The highest call sequence number stored (or ever stored since the
    /// store was opened), so numbering continues.
    pub fn max_seq(&self) -> Result<u64> {
        Ok(self.max_seq.load(Ordering::Relaxed))
    }

    /// When the earliest stored call started (`None`: no calls): where the
    /// data begins, for the staffing window.
    pub fn first_call_start(&self) -> Result<Option<Timestamp>> {
        self.reported(self.calls.first_start())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    pub calls: usize,
    pub days: usize,
    pub journal_bytes: u64,
    pub outbox: usize,
    pub unreadable: usize,
}

#[cfg(test)]
mod tests;
