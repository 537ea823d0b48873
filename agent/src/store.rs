//! The store. This module owns everything on disk; no other code touches
//! sled or the store's files.
//!
//! In the state directory:
//!
//! | what | where | format |
//! |---|---|---|
//! | finished calls | sled tree `calls`: started (i64 as u64 + 2^63) ++ seq (u64), big-endian | `persist::v1::CallV1` JSON (no caller hash) |
//! | seq index | sled tree `seqs`: seq (u64 BE) | the `calls` key |
//! | closed days | sled tree `days`: practice ++ 0x00 ++ `YYYY-MM-DD` | `persist::v1::DayV1` JSON |
//! | upload outbox | sled tree `outbox`: `YYYY-MM-DD` ++ 0x00 ++ practice | (schema 3: filled by the uploader) |
//! | kept aside | sled tree `quarantine`: the original key | the original value, unreadable |
//! | gaps, marks | sled tree `meta`: `schema`, `gaps`, `pruned_before`, `closed_through` | JSON |
//! | engine snapshot | file `snapshot.json` (written to a temporary file, synced, renamed) | `{"journal": N, "snapshot": persist::v1::SnapshotV1}` |
//! | journal | files `journal-N.log`: the messages since snapshot N | `persist::journal` framing 2 (0.1.0: framing 1), records `JournalRecordV1` |
//! | damaged bytes | directory `aside/` | what could not be read, as it was |
//!
//! Every value has a version ([`cbt_proto::persist`]); the store's layout
//! has the `schema` mark: 2 was 0.1.0's, 3 is this one's. An older store is
//! migrated when it is opened; a newer one is refused, untouched.
//!
//! Why two kinds of storage: sled is the design card's store and holds the
//! records; the write-ahead journal and the snapshot are a stream and a blob
//! that sled handled badly (measured: a JSON snapshot of 12,000 legs written
//! into sled every 30 s and one key per journaled message took the daemon's
//! memory to hundreds of MiB). A plain append-only file with a checksum per
//! record, synced at the same points as sled, does that job in a few lines.
//!
//! Durability: callers write, then `flush()` (journal file synced, then
//! sled flushed) at the points that promise durability; the daemon flushes
//! before it counts a call anywhere. A call is written only if its sequence
//! number is not stored yet, so replaying the journal after a crash never
//! counts a call twice. Day figures are computed from the calls when the
//! day is over, and kept for good (call records are pruned by retention).

use anyhow::{anyhow, Context, Result};
use cbt_proto::call::CallRecord;
use cbt_proto::engine::{EngineSnapshot, EngineSnapshotRef, JournalEntry};
use cbt_proto::metrics::{Aggregator, Day};
use cbt_proto::persist::{self, journal as framing, FormatError};
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use chrono::{Duration, NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The store layout this build writes. 2: cbt-agent 0.1.0 (outbox of day
/// figures); 3: the outbox holds upload documents.
pub const SCHEMA: u32 = 3;

pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    calls: sled::Tree,
    seqs: sled::Tree,
    days: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
    quarantine: sled::Tree,
    journal: Mutex<Journal>,
    /// What could not be read, since the store was opened (for status,
    /// the log and `report`'s exit status).
    problems: Mutex<Vec<String>>,
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

fn call_key(started: Timestamp, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&((started.micros() as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn day_key(practice: &str, date: NaiveDate) -> Vec<u8> {
    let mut k = practice.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(date.format("%Y-%m-%d").to_string().as_bytes());
    k
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
        if let Some(n) = name.strip_prefix("journal-").and_then(|r| r.strip_suffix(".log")) {
            if let Ok(g) = n.parse() {
                out.push(g);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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

impl Store {
    /// Opens (creating if needed) the store in `dir`, with sled's page cache
    /// capped at `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the store directory {}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                    anyhow!("the disk holding {} is full", dir.display())
                }
                sled::Error::Io(io) => anyhow!("cannot open the store in {}: {io}", dir.display()),
                other => anyhow!(
                    "the store in {} cannot be read ({other}): it may be damaged; stop the service, move the directory aside and start again (a new store is made; keep the old one for recovery)",
                    dir.display()
                ),
            })?;
        let t = |name: &str| db.open_tree(name).with_context(|| format!("cannot open the store's {name} tree"));
        let meta = t("meta")?;
        let found: Option<u32> = match meta.get("schema")? {
            None => None,
            Some(v) => Some(serde_json::from_slice(&v).context("the store's schema mark is unreadable")?),
        };
        match found {
            Some(n) if n > SCHEMA => {
                return Err(anyhow!(
                    "the store in {} was written by a newer cbt-agent (store layout {n}; this one reads up to {SCHEMA}): install that version again, or move the directory aside to start a new store",
                    dir.display()
                ))
            }
            Some(n) if n < 2 => return Err(anyhow!("the store in {} has an unknown layout ({n}): move the directory aside", dir.display())),
            _ => {}
        }
        // continue after the newest journal generation (or the snapshot's)
        let snap_gen = match std::fs::read(dir.join("snapshot.json")) {
            Ok(b) => persist::snapshot_journal(&b).ok(),
            Err(_) => None,
        };
        let generation = journal_generations(dir)?.last().copied().unwrap_or(0).max(snap_gen.unwrap_or(0)) + 1;
        let store = Store {
            calls: t("calls")?,
            seqs: t("seqs")?,
            days: t("days")?,
            outbox: t("outbox")?,
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
        };
        match found {
            None => {
                store.meta.insert("schema", json(&SCHEMA))?;
            }
            Some(2) => store.migrate_from_2()?,
            _ => {}
        }
        Ok(store)
    }

    /// 0.1.0 (layout 2) queued closed days' figures in `outbox` for an
    /// uploader it did not have; the figures are in `days`, from which the
    /// uploader makes its documents. Values are read as version 1 as they
    /// are (no rewrite needed).
    fn migrate_from_2(&self) -> Result<()> {
        let old = self.outbox.len();
        self.outbox.clear()?;
        self.meta.insert("schema", json(&SCHEMA))?;
        self.db.flush()?;
        tracing::info!(dir = %self.dir.display(), queued_days = old, "store migrated from layout 2 (cbt-agent 0.1.0) to {SCHEMA}");
        Ok(())
    }

    fn problem(&self, msg: String) {
        tracing::error!("{msg}");
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }

    /// What could not be read since the store was opened (each with what
    /// was done with it).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records kept aside in the store (unreadable values), and files in
    /// `aside/` (damaged journal bytes, an unreadable snapshot).
    pub fn kept_aside(&self) -> (usize, usize) {
        let files = std::fs::read_dir(self.dir.join("aside")).map(|d| d.count()).unwrap_or(0);
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

    /// Moves an unreadable stored value to the `quarantine` tree.
    fn quarantine(&self, tree: &sled::Tree, what: &str, key: &[u8], value: &[u8], e: &FormatError) {
        let kept = self.quarantine.insert(key, value).is_ok() && tree.remove(key).is_ok();
        self.problem(format!(
            "{what} {}: {e}; {}",
            String::from_utf8_lossy(&key.iter().flat_map(|b| std::ascii::escape_default(*b)).collect::<Vec<u8>>()),
            if kept { "kept aside in the store's quarantine" } else { "left in place" }
        ));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything written so far durable: the journal file synced,
    /// then sled flushed.
    pub fn flush(&self) -> Result<()> {
        {
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = j.file.as_mut() {
                f.flush().map_err(|e| self.write_error(e.into()))?;
                f.get_ref().sync_data().map_err(|e| self.write_error(e.into()))?;
            }
        }
        self.db.flush().map_err(|e| self.write_error(e.into()))?;
        Ok(())
    }

    /// Says "the disk is full" plainly when it is.
    pub fn write_error(&self, e: anyhow::Error) -> anyhow::Error {
        let full = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
                || c.downcast_ref::<sled::Error>().is_some_and(|s| matches!(s, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull))
                || c.to_string().contains("No space left on device")
        });
        if full {
            anyhow!("the disk holding {} is full (free some space: writing resumes by itself)", self.dir.display())
        } else {
            e.context(format!("cannot write the store in {}", self.dir.display()))
        }
    }

    pub fn size_on_disk(&self) -> u64 {
        let files: u64 = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0);
        self.db.size_on_disk().unwrap_or(0) + files
    }

    /// Checks every stored call can be read (on start); unreadable ones are
    /// kept aside (the `quarantine` tree) and reported.
    pub fn verify(&self) -> Result<StoreCounts> {
        let mut bad = 0;
        for r in self.calls.iter() {
            let (k, v) = r?;
            if let Err(e) = persist::decode_call(&v) {
                self.quarantine(&self.calls, "stored call", &k, &v, &e);
                bad += 1;
            }
        }
        Ok(StoreCounts {
            calls: self.calls.len(),
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
                Err(e @ FormatError::Newer { .. }) => return Err(anyhow!("{e}")),
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
        for g in journal_generations(&self.dir)?.into_iter().filter(|g| *g >= from_gen) {
            let name = format!("journal-{g}.log");
            let bytes = std::fs::read(self.dir.join(&name)).with_context(|| format!("cannot read {name}"))?;
            let scan = framing::scan(&bytes);
            out.files += 1;
            out.torn_bytes += scan.torn_tail;
            for d in &scan.damaged {
                let kept = self.keep_aside(&format!("journal-{g}-at-{}.bin", d.offset), &bytes[d.offset..d.offset + d.len]);
                self.problem(format!("{name}: {} bytes at {} are damaged ({}); {kept}; the records after them are replayed", d.len, d.offset, d.reason));
            }
            for f in scan.frames {
                match persist::decode_journal_record(f.version, f.body) {
                    Ok(e) => out.entries.push(e),
                    Err(e @ FormatError::Newer { .. }) => return Err(anyhow!("{name}: {e}")),
                    Err(e) => {
                        let kept = self.keep_aside(&format!("journal-{g}-at-{}.bin", f.offset), f.body);
                        self.problem(format!("{name}: the record at byte {}: {e}; {kept}", f.offset));
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

    /// Saves the engine state: the journal moves to a new generation, the
    /// snapshot (naming that generation) replaces the old one atomically,
    /// and the older journals go.
    pub fn save_snapshot(&self, snap: &EngineSnapshotRef<'_>) -> Result<()> {
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
        for g in journal_generations(&self.dir)?.into_iter().filter(|g| *g < next) {
            let _ = std::fs::remove_file(journal_path(&self.dir, g));
        }
        Ok(())
    }

    /// Stores a finished call unless one with its sequence number is
    /// stored already. Returns whether it was new.
    pub fn put_call(&self, rec: &CallRecord) -> Result<bool> {
        let key = call_key(rec.started, rec.seq);
        let seq = rec.seq.to_be_bytes();
        let value = persist::encode_call(rec);
        (&self.calls, &self.seqs)
            .transaction(|(calls, seqs)| {
                if seqs.get(seq)?.is_some() {
                    return Ok(false);
                }
                calls.insert(&key[..], value.clone())?;
                seqs.insert(&seq[..], &key[..])?;
                Ok(true)
            })
            .map_err(|e: TransactionError<()>| anyhow!("{e:?}"))
    }

    /// Records that a stored call's callback was made. Returns false if it
    /// was recorded already or the call is unknown.
    pub fn callback_made(&self, seq: u64, at: Timestamp) -> Result<bool> {
        let Some(key) = self.seqs.get(seq.to_be_bytes())? else { return Ok(false) };
        let Some(v) = self.calls.get(&key)? else { return Ok(false) };
        let mut rec = persist::decode_call(&v)?;
        if rec.callback_made.is_some() {
            return Ok(false);
        }
        rec.callback_made = Some(at);
        self.calls.insert(key, persist::encode_call(&rec))?;
        Ok(true)
    }

    /// Calls that started in `[from, to)`, in start order. One that cannot
    /// be read (damaged since the store was opened) is kept aside and
    /// reported, not returned.
    pub fn calls_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CallRecord>> {
        let mut out = Vec::new();
        for r in self.calls.range(call_key(from, 0)..call_key(to, 0)) {
            let (k, v) = r?;
            match persist::decode_call(&v) {
                Ok(c) => out.push(c),
                Err(e) => self.quarantine(&self.calls, "stored call", &k, &v, &e),
            }
        }
        Ok(out)
    }

    /// The calls of a local date (in the site's timezone).
    pub fn calls_on(&self, site: &Site, date: NaiveDate) -> Result<Vec<CallRecord>> {
        let (from, to) = local_day_span(site, date);
        self.calls_between(from, to)
    }

    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Every stored day: ((practice, date), day).
    pub fn days(&self) -> Result<Vec<((String, NaiveDate), Day)>> {
        let mut out = Vec::new();
        for r in self.days.iter() {
            let (k, v) = r?;
            let Some(sep) = k.iter().position(|b| *b == 0) else { continue };
            let practice = String::from_utf8_lossy(&k[..sep]).to_string();
            let Ok(date) = NaiveDate::parse_from_str(&String::from_utf8_lossy(&k[sep + 1..]), "%Y-%m-%d") else {
                continue;
            };
            match persist::decode_day(&v) {
                Ok(day) => out.push(((practice, date), day)),
                Err(e) => self.quarantine(&self.days, "stored day", &k, &v, &e),
            }
        }
        Ok(out)
    }

    /// Computes and keeps the figures of every day before `today` not
    /// closed yet (a call finishing later on such a day is not counted in
    /// its closed figures, only in its record), and queues them for the
    /// uploader. Returns the number of practice-days closed.
    pub fn close_days(&self, site: &Site, today: NaiveDate) -> Result<usize> {
        let first = match self.meta.get("closed_through")? {
            Some(v) => serde_json::from_slice::<NaiveDate>(&v)? + Duration::days(1),
            None => match self.calls.first()? {
                Some((k, _)) => {
                    let started = Timestamp((u64::from_be_bytes(k[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64);
                    Aggregator::new(site).local_date(started)
                }
                None => return Ok(0),
            },
        };
        let mut n = 0;
        let mut date = first;
        while date < today {
            let mut agg = Aggregator::new(site);
            for r in self.calls_on(site, date)? {
                agg.add_call(&r);
            }
            // callbacks made that day, of calls from any day up to it
            let (from, to) = local_day_span(site, date);
            for r in self.calls_between(from.add(-2 * 86_400_000_000), to)? {
                if let Some(at) = r.callback_made.filter(|t| *t >= from && *t < to) {
                    agg.add_callback(&r.practice, at);
                }
            }
            for ((practice, d), day) in agg.days() {
                if *d != date {
                    continue;
                }
                self.days.insert(day_key(practice, date), persist::encode_day(day))?;
                n += 1;
            }
            self.meta.insert("closed_through", json(&date))?;
            date += Duration::days(1);
        }
        Ok(n)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Deletes call records that started before `before`, only on days
    /// already closed (their figures stay). Returns how many were deleted.
    pub fn prune_calls(&self, site: &Site, before: Timestamp) -> Result<usize> {
        let closed: Option<NaiveDate> = match self.meta.get("closed_through")? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        };
        let Some(closed) = closed else { return Ok(0) };
        let limit = before.min(local_day_span(site, closed).1);
        let mut n = 0;
        let mut batch = sled::Batch::default();
        let mut seq_batch = sled::Batch::default();
        for r in self.calls.range(..call_key(limit, 0)) {
            let (k, _) = r?;
            seq_batch.remove(&k[8..16]);
            batch.remove(k);
            n += 1;
        }
        self.calls.apply_batch(batch)?;
        self.seqs.apply_batch(seq_batch)?;
        if n > 0 {
            self.meta.insert("pruned_before", json(&limit))?;
        }
        Ok(n)
    }

    /// Calls before this time were pruned: their figures come from `days`.
    pub fn pruned_before(&self) -> Result<Option<Timestamp>> {
        Ok(match self.meta.get("pruned_before")? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    pub fn gaps(&self) -> Result<Vec<Gap>> {
        let Some(v) = self.meta.get("gaps")? else { return Ok(Vec::new()) };
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

    /// Records a gap (the last 100 are kept).
    pub fn add_gap(&self, gap: Gap) -> Result<()> {
        let mut gaps = self.gaps()?;
        gaps.push(gap);
        let keep = gaps.len().saturating_sub(100);
        let list: Vec<_> = gaps[keep..].iter().map(gap_v1).collect();
        self.meta.insert("gaps", persist::encode_gaps(&list))?;
        Ok(())
    }

    /// The highest call sequence number stored, so numbering continues.
    pub fn max_seq(&self) -> Result<u64> {
        Ok(match self.seqs.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
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
