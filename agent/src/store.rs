//! The store. This module owns everything on disk; no other code touches
//! sled or the store's files.
//!
//! In the state directory:
//!
//! | what | where | format |
//! |---|---|---|
//! | finished calls | sled tree `calls`: started (i64 as u64 + 2^63) ++ seq (u64), big-endian | `CallRecord` JSON, without the caller hash |
//! | seq index | sled tree `seqs`: seq (u64 BE) | the `calls` key |
//! | closed days | sled tree `days`: practice ++ 0x00 ++ `YYYY-MM-DD` | `metrics::Day` JSON |
//! | upload outbox | sled tree `outbox`: `YYYY-MM-DD` ++ 0x00 ++ practice | `metrics::Day` JSON |
//! | gaps, marks | sled tree `meta`: `schema`, `gaps`, `pruned_before`, `closed_through` | JSON |
//! | engine snapshot | file `snapshot.json` (written to a temporary file, synced, renamed) | `{"journal": N, "snapshot": EngineSnapshot}` |
//! | journal | files `journal-N.log`: the messages since snapshot N | records: u32 length, u32 CRC-32, `JournalEntry` JSON |
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
use cbt_proto::engine::{EngineSnapshot, JournalEntry};
use cbt_proto::metrics::{Aggregator, Day};
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use chrono::{Duration, NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const SCHEMA: u32 = 2;

pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    calls: sled::Tree,
    seqs: sled::Tree,
    days: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
    journal: Mutex<Journal>,
}

struct Journal {
    generation: u64,
    file: BufWriter<File>,
    bytes: u64,
}

/// A stretch of time whose packets were not seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from: Timestamp,
    pub to: Timestamp,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct SnapshotDoc {
    /// The journal generation that continues from this snapshot.
    journal: u64,
    snapshot: EngineSnapshot,
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
        match meta.get("schema")? {
            None => {
                meta.insert("schema", json(&SCHEMA))?;
            }
            Some(v) => {
                let found: u32 = serde_json::from_slice(&v).context("the store's schema mark is unreadable")?;
                if found != SCHEMA {
                    return Err(anyhow!(
                        "the store in {} has schema {found}, this cbt-agent reads schema {SCHEMA}: move the directory aside",
                        dir.display()
                    ));
                }
            }
        }
        // continue the newest journal generation (or the snapshot's)
        let generation = journal_generations(dir)?.last().copied().unwrap_or(1).max(Self::snapshot_generation(dir)?.unwrap_or(1));
        let path = journal_path(dir, generation);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Store {
            calls: t("calls")?,
            seqs: t("seqs")?,
            days: t("days")?,
            outbox: t("outbox")?,
            meta,
            db,
            dir: dir.to_path_buf(),
            journal: Mutex::new(Journal {
                generation,
                file: BufWriter::with_capacity(1 << 16, file),
                bytes,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot_generation(dir: &Path) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Head {
            journal: u64,
        }
        match std::fs::read(dir.join("snapshot.json")) {
            Ok(b) => {
                let doc: Head = serde_json::from_slice(&b).context("the engine snapshot is unreadable")?;
                Ok(Some(doc.journal))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes everything written so far durable: the journal file synced,
    /// then sled flushed.
    pub fn flush(&self) -> Result<()> {
        {
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            j.file.flush().map_err(|e| self.write_error(e.into()))?;
            j.file.get_ref().sync_data().map_err(|e| self.write_error(e.into()))?;
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

    /// Checks every stored call can be read (on start).
    pub fn verify(&self) -> Result<StoreCounts> {
        let mut bad = 0;
        for r in self.calls.iter() {
            let (_, v) = r?;
            if serde_json::from_slice::<CallRecord>(&v).is_err() {
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

    /// The last snapshot and the journal entries written after it, in order.
    /// A torn record at the end of the journal (a crash mid-write) ends it.
    pub fn recovery(&self) -> Result<(Option<EngineSnapshot>, Vec<JournalEntry>)> {
        let (snap, from_gen) = match std::fs::read(self.dir.join("snapshot.json")) {
            Ok(b) => {
                let doc: SnapshotDoc = serde_json::from_slice(&b).context("the engine snapshot is unreadable")?;
                (Some(doc.snapshot), doc.journal)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::new();
        for g in journal_generations(&self.dir)?.into_iter().filter(|g| *g >= from_gen) {
            let f = File::open(journal_path(&self.dir, g))?;
            let mut r = BufReader::new(f);
            loop {
                let mut head = [0u8; 8];
                if r.read_exact(&mut head).is_err() {
                    break;
                }
                let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
                let mut body = vec![0u8; len];
                if len > 64 << 20 || r.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
                    break;
                }
                match serde_json::from_slice(&body) {
                    Ok(e) => entries.push(e),
                    Err(_) => break,
                }
            }
        }
        Ok((snap, entries))
    }

    /// Appends journal entries (durable at the next `flush`).
    pub fn append_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries {
            let body = json(e);
            j.file.write_all(&(body.len() as u32).to_le_bytes())?;
            j.file.write_all(&crc32fast::hash(&body).to_le_bytes())?;
            j.file.write_all(&body)?;
            j.bytes += 8 + body.len() as u64;
        }
        Ok(())
    }

    /// Saves the engine state: the journal moves to a new generation, the
    /// snapshot (naming that generation) replaces the old one atomically,
    /// and the older journals go.
    pub fn save_snapshot<S: Serialize>(&self, snap: &S) -> Result<()> {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.file.flush()?;
        j.file.get_ref().sync_data()?;
        let next = j.generation + 1;
        let path = journal_path(&self.dir, next);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let tmp = self.dir.join("snapshot.json.tmp");
        {
            let mut w = BufWriter::new(File::create(&tmp)?);
            #[derive(Serialize)]
            struct Doc<'a, S> {
                journal: u64,
                snapshot: &'a S,
            }
            serde_json::to_writer(&mut w, &Doc { journal: next, snapshot: snap })?;
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("snapshot.json"))?;
        sync_dir(&self.dir);
        *j = Journal {
            generation: next,
            file: BufWriter::with_capacity(1 << 16, file),
            bytes: 0,
        };
        for g in journal_generations(&self.dir)?.into_iter().filter(|g| *g < next) {
            let _ = std::fs::remove_file(journal_path(&self.dir, g));
        }
        Ok(())
    }

    /// Stores a finished call unless one with its sequence number is
    /// stored already. Returns whether it was new.
    pub fn put_call(&self, rec: &CallRecord) -> Result<bool> {
        let mut rec = rec.clone();
        rec.caller = None;
        let key = call_key(rec.started, rec.seq);
        let seq = rec.seq.to_be_bytes();
        let value = json(&rec);
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
        let mut rec: CallRecord = serde_json::from_slice(&v)?;
        if rec.callback_made.is_some() {
            return Ok(false);
        }
        rec.callback_made = Some(at);
        self.calls.insert(key, json(&rec))?;
        Ok(true)
    }

    /// Calls that started in `[from, to)`, in start order.
    pub fn calls_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CallRecord>> {
        let mut out = Vec::new();
        for r in self.calls.range(call_key(from, 0)..call_key(to, 0)) {
            let (_, v) = r?;
            out.push(serde_json::from_slice(&v).context("a stored call is unreadable")?);
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
            out.push(((practice, date), serde_json::from_slice(&v)?));
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
                Some((_, v)) => {
                    let r: CallRecord = serde_json::from_slice(&v)?;
                    Aggregator::new(site).local_date(r.started)
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
                self.days.insert(day_key(practice, date), json(day))?;
                let mut k = date.format("%Y-%m-%d").to_string().into_bytes();
                k.push(0);
                k.extend_from_slice(practice.as_bytes());
                self.outbox.insert(k, json(day))?;
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
        Ok(match self.meta.get("gaps")? {
            Some(v) => serde_json::from_slice(&v)?,
            None => Vec::new(),
        })
    }

    /// Records a gap (the last 100 are kept).
    pub fn add_gap(&self, gap: Gap) -> Result<()> {
        let mut gaps = self.gaps()?;
        gaps.push(gap);
        let keep = gaps.len().saturating_sub(100);
        self.meta.insert("gaps", json(&gaps[keep..].to_vec()))?;
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
