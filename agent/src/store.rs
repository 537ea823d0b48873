//! The embedded store (sled). This module owns the on-disk key layout; no
//! other code touches sled.
//!
//! Trees and keys (all integers big-endian, so keys sort by value):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `calls` | started (i64 as u64 + 2^63) ++ seq (u64) | `CallRecord` JSON, without the caller hash |
//! | `seqs` | seq (u64) | the `calls` key |
//! | `days` | practice ++ 0x00 ++ `YYYY-MM-DD` | `metrics::Day` JSON |
//! | `journal` | entry number (u64) | `JournalEntry` JSON (messages since the snapshot, numbers hashed) |
//! | `meta` | `schema`, `snapshot`, `journal_next`, `gaps`, `pruned_before` | JSON |
//! | `outbox` | `YYYY-MM-DD` ++ 0x00 ++ practice | the closed day's `Day` JSON, for the uploader |
//!
//! Durability: callers write, then `flush()` at the points that promise
//! durability (the daemon flushes before it counts a call anywhere). A call
//! and its day's aggregate are written in one transaction, and only if the
//! call is not stored yet, so replaying the journal after a crash never
//! counts a call twice.

use anyhow::{anyhow, Context, Result};
use cbt_proto::call::CallRecord;
use cbt_proto::engine::{EngineSnapshot, JournalEntry};
use cbt_proto::metrics::{Aggregator, Day};
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::{Path, PathBuf};

pub const SCHEMA: u32 = 1;

pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    calls: sled::Tree,
    seqs: sled::Tree,
    days: sled::Tree,
    journal: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
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
    /// Journal entries up to and including this number are in the snapshot.
    journal_upto: u64,
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

fn abort<E: std::fmt::Display>(e: E) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

fn tx_err(e: TransactionError<String>) -> anyhow::Error {
    match e {
        TransactionError::Abort(s) => anyhow!(s),
        TransactionError::Storage(e) => anyhow!(e),
    }
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
        let store = Store {
            calls: t("calls")?,
            seqs: t("seqs")?,
            days: t("days")?,
            journal: t("journal")?,
            meta: t("meta")?,
            outbox: t("outbox")?,
            db,
            dir: dir.to_path_buf(),
        };
        match store.meta.get("schema")? {
            None => {
                store.meta.insert("schema", json(&SCHEMA))?;
            }
            Some(v) => {
                let found: u32 = serde_json::from_slice(&v).context("the store's schema mark is unreadable")?;
                if found != SCHEMA {
                    return Err(anyhow!(
                        "the store in {} has schema {found}, this cbt-agent reads schema {SCHEMA}",
                        dir.display()
                    ));
                }
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything written so far durable. Returns bytes flushed.
    pub fn flush(&self) -> Result<usize> {
        self.db.flush().map_err(|e| self.write_error(e.into()))
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
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Checks every tree can be read end to end (on start).
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
            journal: self.journal.len(),
            outbox: self.outbox.len(),
            unreadable: bad,
        })
    }

    /// The last snapshot and the journal entries after it, in order.
    pub fn recovery(&self) -> Result<(Option<EngineSnapshot>, Vec<JournalEntry>)> {
        let (snap, upto) = match self.meta.get("snapshot")? {
            Some(v) => {
                let doc: SnapshotDoc = serde_json::from_slice(&v).context("the engine snapshot is unreadable")?;
                (Some(doc.snapshot), doc.journal_upto)
            }
            None => (None, 0),
        };
        let mut entries = Vec::new();
        for r in self.journal.range((upto + 1).to_be_bytes()..) {
            let (_, v) = r?;
            match serde_json::from_slice(&v) {
                Ok(e) => entries.push(e),
                Err(_) => break, // a torn tail: stop at the last whole entry
            }
        }
        Ok((snap, entries))
    }

    /// Appends journal entries (not flushed).
    pub fn append_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut next = self.journal_next()?;
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&next.to_be_bytes(), json(e));
            next += 1;
        }
        self.journal.apply_batch(batch)?;
        self.meta.insert("journal_next", json(&next))?;
        Ok(())
    }

    fn journal_next(&self) -> Result<u64> {
        Ok(match self.meta.get("journal_next")? {
            Some(v) => serde_json::from_slice(&v)?,
            None => 1,
        })
    }

    /// Saves the engine snapshot (covering every journal entry written so
    /// far), flushes, then drops the journal entries it covers.
    pub fn save_snapshot(&self, snap: &EngineSnapshot) -> Result<()> {
        let upto = self.journal_next()?.saturating_sub(1);
        self.meta.insert(
            "snapshot",
            json(&SnapshotDoc {
                journal_upto: upto,
                snapshot: snap.clone(),
            }),
        )?;
        self.flush()?;
        let mut batch = sled::Batch::default();
        for r in self.journal.range(..=upto.to_be_bytes()) {
            let (k, _) = r?;
            batch.remove(k);
        }
        self.journal.apply_batch(batch)?;
        Ok(())
    }

    /// Stores a finished call and adds it to its day, unless a call with
    /// this sequence number is stored already. Returns whether it was new.
    pub fn put_call(&self, rec: &CallRecord, site: &Site) -> Result<bool> {
        let mut rec = rec.clone();
        rec.caller = None;
        let key = call_key(rec.started, rec.seq);
        let seq = rec.seq.to_be_bytes();
        let agg = Aggregator::new(site);
        let date = agg.local_date(rec.started);
        let dkey = day_key(&rec.practice, date);
        let value = json(&rec);
        (&self.calls, &self.seqs, &self.days)
            .transaction(|(calls, seqs, days)| {
                if seqs.get(seq)?.is_some() {
                    return Ok(false);
                }
                calls.insert(&key[..], value.clone())?;
                seqs.insert(&seq[..], &key[..])?;
                let mut day_agg = agg.clone();
                if let Some(v) = days.get(&dkey)? {
                    let d: Day = serde_json::from_slice(&v).map_err(abort)?;
                    day_agg.add_day(&rec.practice, date, &d);
                }
                day_agg.add_call(&rec);
                let d = &day_agg.days()[&(rec.practice.clone(), date)];
                days.insert(dkey.clone(), json(d))?;
                Ok(true)
            })
            .map_err(tx_err)
    }

    /// Records that a stored call's callback was made (CBT006 on the day it
    /// was made). Returns false if already recorded or the call is unknown.
    pub fn callback_made(&self, seq: u64, practice: &str, at: Timestamp, site: &Site) -> Result<bool> {
        let agg = Aggregator::new(site);
        let date = agg.local_date(at);
        let dkey = day_key(practice, date);
        let skey = seq.to_be_bytes();
        (&self.calls, &self.seqs, &self.days)
            .transaction(|(calls, seqs, days)| {
                let Some(key) = seqs.get(skey)? else { return Ok(false) };
                let Some(v) = calls.get(&key)? else { return Ok(false) };
                let mut rec: CallRecord = serde_json::from_slice(&v).map_err(abort)?;
                if rec.callback_made.is_some() {
                    return Ok(false);
                }
                rec.callback_made = Some(at);
                calls.insert(key, json(&rec))?;
                let mut day_agg = agg.clone();
                if let Some(v) = days.get(&dkey)? {
                    let d: Day = serde_json::from_slice(&v).map_err(abort)?;
                    day_agg.add_day(practice, date, &d);
                }
                day_agg.add_callback(practice, at);
                days.insert(dkey.clone(), json(&day_agg.days()[&(practice.to_string(), date)]))?;
                Ok(true)
            })
            .map_err(tx_err)
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

    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Every stored day aggregate: ((practice, date), day).
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

    /// Queues closed days (before `today`) for the uploader, once each.
    pub fn close_days(&self, today: NaiveDate) -> Result<usize> {
        let mut n = 0;
        for ((practice, date), day) in self.days()? {
            if date >= today {
                continue;
            }
            let mut k = date.format("%Y-%m-%d").to_string().into_bytes();
            k.push(0);
            k.extend_from_slice(practice.as_bytes());
            if self.outbox.get(&k)?.is_none() {
                self.outbox.insert(k, json(&day))?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Deletes call records that started before `before` (their days stay:
    /// aggregates are never pruned). Returns how many were deleted.
    pub fn prune_calls(&self, before: Timestamp) -> Result<usize> {
        let mut n = 0;
        let mut batch = sled::Batch::default();
        let mut seq_batch = sled::Batch::default();
        for r in self.calls.range(..call_key(before, 0)) {
            let (k, _) = r?;
            seq_batch.remove(&k[8..16]);
            batch.remove(k);
            n += 1;
        }
        self.calls.apply_batch(batch)?;
        self.seqs.apply_batch(seq_batch)?;
        if n > 0 {
            self.meta.insert("pruned_before", json(&before))?;
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
    pub journal: usize,
    pub outbox: usize,
    pub unreadable: usize,
}

#[cfg(test)]
mod tests;
