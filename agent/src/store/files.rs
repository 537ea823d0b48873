//! Finished calls in append-only files, one per UTC day of the call's
//! start (`calls/YYYY-MM-DD.calls`, format in
//! [`cbt_proto::persist::calls`]). Why not sled: sled's memory follows the
//! number of keys it holds (about 25 bytes a key whatever its cache; see
//! docs/testing.md), so an agent keeping every call as a key grew with its
//! history. Here memory follows the days being written, not the calls
//! kept: the calls' numbers of the few days loaded, about one bit a call.
//!
//! - A call is written once: each loaded day keeps the set of numbers in
//!   its file (read from the file the first time the day is written), so
//!   the journal replayed after a crash finds its calls stored.
//! - A callback made later is an amendment record appended to the file of
//!   its call, never a rewrite.
//! - Records are buffered and written at `flush` (or once a day's buffer
//!   is large), then synced; a failed write cuts the file back to its last
//!   whole record and nothing more is written to it by this process (the
//!   daemon holds the calls and writes them again to a store opened anew).
//! - A record cut short at the end (a kill while appending) is cut off
//!   when the day is next loaded; damaged or undecodable records are
//!   handed to the store (kept aside, reported) and the file is rewritten
//!   without them (a new file synced and renamed over the old).
//! - Retention deletes whole files; the file holding the cut (a local
//!   midnight that is not UTC midnight) is rewritten without the calls
//!   before it.

use anyhow::{anyhow, Context, Result};
use cbt_proto::call::CallRecord;
use cbt_proto::persist::calls::{self as format, Kind, Record};
use cbt_proto::persist::{self, journal, FormatError};
use cbt_proto::Timestamp;
use chrono::NaiveDate;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Days whose numbers are kept in memory: the days being written (today,
/// and yesterday's calls still finishing) and a margin.
const LOADED_DAYS: usize = 4;
/// A day's buffer is written out (not synced) once it holds this much.
const WRITE_AT: usize = 256 << 10;
/// Bytes read at a time when a file is streamed (in tests, less than a
/// call record: every record crosses a chunk's end somewhere).
#[cfg(not(test))]
const CHUNK: usize = 4 << 20;
#[cfg(test)]
const CHUNK: usize = 333;
pub(super) const DAY: i64 = 86_400_000_000;

/// Notes when a call's callback was made, from a record of one (the
/// first such record of a call counts).
fn note_callback(called: &mut HashMap<u64, Timestamp>, rec: &Record<'_>) {
    if let Kind::CallbackMade(at) = rec.kind {
        called.entry(rec.seq).or_insert(at);
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")
}

/// The UTC date of a time (clamped to the dates chrono has).
pub(super) fn utc_date(t: Timestamp) -> NaiveDate {
    let days = t.micros().div_euclid(DAY);
    let max = chrono::Duration::days(1 << 32);
    let d = chrono::Duration::days(days).clamp(-max, max);
    epoch().checked_add_signed(d).unwrap_or(if days < 0 { NaiveDate::MIN } else { NaiveDate::MAX })
}

/// When a UTC date starts.
fn day_start(d: NaiveDate) -> Timestamp {
    Timestamp((d - epoch()).num_days().saturating_mul(DAY))
}

/// Sequence numbers, one bit each in blocks of 1,024.
#[derive(Default)]
struct SeqSet(BTreeMap<u64, [u64; 16]>);

impl SeqSet {
    fn bit(s: u64) -> (u64, usize, u64) {
        (s >> 10, ((s >> 6) & 15) as usize, 1 << (s & 63))
    }

    fn insert(&mut self, s: u64) {
        let (block, word, bit) = Self::bit(s);
        self.0.entry(block).or_insert([0; 16])[word] |= bit;
    }

    fn contains(&self, s: u64) -> bool {
        let (block, word, bit) = Self::bit(s);
        self.0.get(&block).is_some_and(|w| w[word] & bit != 0)
    }
}

/// What was found unreadable in a call file, kept aside (in `aside/`) and
/// taken out of the file: for the store to report.
pub(super) struct Bad {
    pub file: String,
    pub offset: usize,
    pub why: String,
    /// A call that could not be decoded: its start and number.
    pub call: Option<(Timestamp, u64)>,
    /// Where it was kept ("kept in PATH").
    pub kept: String,
}

/// Something unreadable found in a read, not yet kept aside.
struct Found<'a> {
    offset: usize,
    bytes: &'a [u8],
    why: String,
    call: Option<(Timestamp, u64)>,
}

/// A day being written.
struct Day {
    path: PathBuf,
    file: Option<File>,
    /// Bytes on disk: the header and whole records.
    len: u64,
    /// Records not yet written.
    pending: Vec<u8>,
    unsynced: bool,
    /// The file was made by this process: the directory is synced too.
    created: bool,
    /// A write failed: nothing more goes to this file from this process.
    failed: bool,
    calls: SeqSet,
    called: SeqSet,
}

impl Day {
    /// Notes a record read from the file.
    fn index(&mut self, rec: &Record<'_>) {
        match rec.kind {
            Kind::Call { .. } => self.calls.insert(rec.seq),
            Kind::CallbackMade(_) => self.called.insert(rec.seq),
        }
    }

    /// Writes the buffer out (not synced).
    fn write_out(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.failed {
            return Err(anyhow!("an earlier write to {} failed", self.path.display()));
        }
        if self.file.is_none() {
            self.created = self.len == 0;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("cannot open {}", self.path.display()))?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened");
        if let Err(e) = f.write_all(&self.pending) {
            // no part of a record left behind
            let _ = f.set_len(self.len);
            self.failed = true;
            return Err(anyhow::Error::new(e).context(format!("cannot write {}", self.path.display())));
        }
        self.len += self.pending.len() as u64;
        self.pending.clear();
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self, dir: &Path) -> Result<()> {
        self.write_out()?;
        if self.unsynced {
            if let Some(f) = &self.file {
                f.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
            }
            self.unsynced = false;
        }
        if self.created {
            sync_dir(dir);
            self.created = false;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

struct Inner {
    loaded: BTreeMap<NaiveDate, Day>,
    /// Dates with a file.
    present: BTreeSet<NaiveDate>,
    bad: Vec<Bad>,
    /// When the earliest stored call started, once known (`None`: to be
    /// read; forgotten when a file is rewritten or deleted).
    first: Option<Option<Timestamp>>,
}

impl Inner {
    /// The dates with a file that can hold calls started in `[from, to)`.
    fn dates_between(&self, from: Timestamp, to: Timestamp) -> Vec<NaiveDate> {
        if to <= from {
            return Vec::new();
        }
        self.present.range(utc_date(from)..=utc_date(to.add(-1))).copied().collect()
    }
}

pub(super) struct CallFiles {
    dir: PathBuf,
    /// Where what cannot be read is kept.
    aside: PathBuf,
    inner: Mutex<Inner>,
}

/// What streaming a file found.
struct Streamed {
    /// No damage.
    clean: bool,
    /// Bytes read, and bytes to the end of the last whole record (less
    /// than `total` after a kill while appending).
    total: u64,
    good: u64,
}

/// What a read found in one file.
struct Read<'a> {
    bytes: &'a [u8],
    file: format::CallFile<'a>,
}

impl CallFiles {
    /// The files in `dir` (created if missing); what cannot be read is
    /// kept in `aside`.
    pub fn open(dir: &Path, aside: &Path) -> Result<CallFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut present = BTreeSet::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some(d) = name.strip_suffix(".calls").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) {
                present.insert(d);
            } else if name.ends_with(".calls.tmp") {
                // a rewrite cut short: the file it was to replace is whole
                let _ = std::fs::remove_file(dir.join(&name));
            }
        }
        Ok(CallFiles {
            dir: dir.to_path_buf(),
            aside: aside.to_path_buf(),
            inner: Mutex::new(Inner { loaded: BTreeMap::new(), present, bad: Vec::new(), first: None }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, d: NaiveDate) -> PathBuf {
        self.dir.join(format!("{d}.calls"))
    }

    /// What was found unreadable since the last call.
    pub fn take_bad(&self) -> Vec<Bad> {
        std::mem::take(&mut self.lock().bad)
    }

    /// The whole file of a date, after writing out what is buffered for it.
    fn bytes_of(&self, inner: &mut Inner, d: NaiveDate) -> Result<Vec<u8>> {
        if let Some(day) = inner.loaded.get_mut(&d) {
            day.write_out()?;
        }
        let path = self.path(d);
        match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        }
    }

    fn parse<'a>(&self, d: NaiveDate, bytes: &'a [u8]) -> Result<Read<'a>> {
        let file = format::read(bytes).map_err(|e| anyhow::Error::new(e).context(self.path(d).display().to_string()))?;
        Ok(Read { bytes, file })
    }

    /// Replaces a date's file by its header and the records `keep`, once
    /// what is found unreadable (`found`, and the damaged spans of `r`) is
    /// kept aside, synced: a new file synced, then renamed over the old,
    /// and only then is what was kept aside handed to the store to report.
    /// A day being written is synced first, and let go once the new file
    /// is in place (it is read again when next written). If what is
    /// unreadable cannot be kept aside, the file is left as it is. Returns
    /// the file's length.
    fn repair<'a>(&self, inner: &mut Inner, d: NaiveDate, r: &Read<'a>, keep: &[&Record<'_>], mut found: Vec<Found<'a>>) -> Result<u64> {
        if let Some(day) = inner.loaded.get_mut(&d) {
            day.sync(&self.dir)?;
        }
        for dmg in &r.file.damaged {
            found.push(Found {
                offset: dmg.offset,
                bytes: &r.bytes[dmg.offset..dmg.offset + dmg.len],
                why: format!("{} bytes are damaged ({})", dmg.len, dmg.reason),
                call: None,
            });
        }
        let kept: Result<Vec<String>, String> = found
            .iter()
            .map(|f| {
                let name = match f.call {
                    Some((_, seq)) => format!("calls-{d}-call-{seq}.json"),
                    None => format!("calls-{d}-at-{}.bin", f.offset),
                };
                self.keep_aside(&name, f.bytes)
            })
            .collect();
        let Ok(kept) = kept else {
            // not kept aside (a full disk): left in the file, to be kept
            // aside and reported by a later read
            return Ok(r.bytes.len() as u64);
        };
        let path = self.path(d);
        let tmp = self.dir.join(format!("{d}.calls.tmp"));
        let mut out = format::FILE_HEADER.to_vec();
        for rec in keep {
            out.extend_from_slice(&r.bytes[rec.offset..rec.offset + rec.len]);
        }
        {
            let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            f.write_all(&out)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir);
        inner.loaded.remove(&d);
        inner.first = None;
        for (f, kept) in found.into_iter().zip(kept) {
            inner.bad.push(Bad { file: format!("{d}.calls"), offset: f.offset, why: f.why, call: f.call, kept });
        }
        Ok(out.len() as u64)
    }

    /// Keeps bytes in `aside/NAME`, synced. Says where (or why not).
    fn keep_aside(&self, name: &str, bytes: &[u8]) -> Result<String, String> {
        let path = self.aside.join(name);
        let kept = std::fs::create_dir_all(&self.aside).and_then(|_| {
            let mut f = File::create(&path)?;
            f.write_all(bytes)?;
            f.sync_all()
        });
        match kept {
            Ok(()) => {
                sync_dir(&self.aside);
                Ok(format!("kept in {}", path.display()))
            }
            Err(e) => Err(format!("could not be kept aside ({e})")),
        }
    }

    /// What `f` makes of each intact record of a date's file (until it
    /// returns false), from `S::default()`: streamed a chunk at a time, and
    /// if the file has damage (beside which a stream may miss a record)
    /// and `f` did not stop (it has its answer), made again from a whole
    /// read.
    fn fold_records<S: Default>(&self, inner: &mut Inner, d: NaiveDate, mut f: impl FnMut(&mut S, &Record<'_>) -> bool) -> Result<S> {
        let (mut state, mut stopped) = (S::default(), false);
        let clean = self
            .stream(inner, d, |r| {
                let go = f(&mut state, r);
                stopped |= !go;
                go
            })?
            .clean;
        if !clean && !stopped {
            state = S::default();
            self.each_whole(inner, d, |r| f(&mut state, r))?;
        }
        Ok(state)
    }

    /// Each intact record of a date's file to `f` (until it returns
    /// false), read whole.
    fn each_whole(&self, inner: &mut Inner, d: NaiveDate, mut f: impl FnMut(&Record<'_>) -> bool) -> Result<()> {
        let bytes = self.bytes_of(inner, d)?;
        for rec in &self.parse(d, &bytes)?.file.records {
            if !f(rec) {
                break;
            }
        }
        Ok(())
    }

    /// The day of `d`, loaded (its numbers read from its file) if it is
    /// not; the oldest loaded day is written, synced and let go to make
    /// room.
    fn load<'i>(&self, inner: &'i mut Inner, d: NaiveDate) -> Result<&'i mut Day> {
        if !inner.loaded.contains_key(&d) {
            while inner.loaded.len() >= LOADED_DAYS {
                let (&old, _) = inner.loaded.iter().next().expect("not empty");
                inner.loaded.get_mut(&old).expect("there").sync(&self.dir)?;
                inner.loaded.remove(&old);
            }
            let mut day = Day {
                path: self.path(d),
                file: None,
                len: 0,
                pending: Vec::new(),
                unsynced: false,
                created: false,
                failed: false,
                calls: SeqSet::default(),
                called: SeqSet::default(),
            };
            // read a chunk at a time; a file with damage is read again whole
            let read = self.stream(inner, d, |rec| {
                day.index(rec);
                true
            })?;
            if read.clean {
                day.len = read.good;
                if read.good < read.total {
                    // a record cut short by a kill
                    let f = OpenOptions::new().write(true).open(self.path(d))?;
                    f.set_len(read.good)?;
                    f.sync_all()?;
                }
            } else {
                let bytes = self.bytes_of(inner, d)?;
                let r = self.parse(d, &bytes)?;
                let all: Vec<&Record<'_>> = r.file.records.iter().collect();
                day.len = self.repair(inner, d, &r, &all, Vec::new())?;
                (day.calls, day.called) = (SeqSet::default(), SeqSet::default());
                for rec in &r.file.records {
                    day.index(rec);
                }
            }
            inner.loaded.insert(d, day);
        }
        Ok(inner.loaded.get_mut(&d).expect("loaded"))
    }

    /// Stores a call (its `persist::encode_call` form) unless its number is
    /// in its day's file already. Returns whether it was new. A call whose
    /// callback is made already (`called_back`, also in its JSON) gets an
    /// amendment record too, so that the day's index knows it.
    pub fn put(&self, seq: u64, started: Timestamp, json: &[u8], called_back: Option<Timestamp>) -> Result<bool> {
        let mut inner = self.lock();
        let d = utc_date(started);
        let day = self.load(&mut inner, d)?;
        if day.calls.contains(seq) {
            return Ok(false);
        }
        if day.len == 0 && day.pending.is_empty() {
            day.pending.extend_from_slice(&format::FILE_HEADER);
        }
        format::frame_call(seq, started, json, &mut day.pending);
        day.calls.insert(seq);
        if let Some(at) = called_back {
            format::frame_callback(seq, at, &mut day.pending);
            day.called.insert(seq);
        }
        let full = day.pending.len() >= WRITE_AT;
        if full {
            day.write_out()?;
        }
        inner.present.insert(d);
        if let Some(first) = &mut inner.first {
            *first = Some(first.map_or(started, |f| f.min(started)));
        }
        Ok(true)
    }

    /// Records that call `seq` (asked for a callback at `requested`) was
    /// called back at `at`: the days from `requested`'s back to the first
    /// are searched for it. False if it was recorded already or is not
    /// stored.
    pub fn callback(&self, seq: u64, requested: Timestamp, at: Timestamp) -> Result<bool> {
        let mut inner = self.lock();
        let dates: Vec<NaiveDate> = inner.present.range(..=utc_date(requested.add(3_600_000_000))).rev().copied().collect();
        for d in dates {
            let day = self.load(&mut inner, d)?;
            if !day.calls.contains(seq) {
                continue;
            }
            if day.called.contains(seq) {
                return Ok(false);
            }
            format::frame_callback(seq, at, &mut day.pending);
            day.called.insert(seq);
            return Ok(true);
        }
        Ok(false)
    }

    /// The calls that started in `[from, to)`, in start order (then
    /// number), with their callbacks; each decoded one counted in `reads`.
    /// What cannot be read is taken out of its file (see `take_bad`).
    pub fn between(&self, from: Timestamp, to: Timestamp, reads: &AtomicUsize) -> Result<Vec<CallRecord>> {
        let mut inner = self.lock();
        if to <= from {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for d in inner.dates_between(from, to) {
            out.append(&mut self.between_on(&mut inner, d, from, to, reads)?);
        }
        Ok(out)
    }

    /// `between` for the file of one date.
    fn between_on(&self, inner: &mut Inner, d: NaiveDate, from: Timestamp, to: Timestamp, reads: &AtomicUsize) -> Result<Vec<CallRecord>> {
        let bytes = self.bytes_of(inner, d)?;
        let r = self.parse(d, &bytes)?;
        let mut called: HashMap<u64, Timestamp> = HashMap::new();
        for rec in &r.file.records {
            note_callback(&mut called, rec);
        }
        let mut day = Vec::new();
        let mut undecodable = Vec::new();
        for rec in &r.file.records {
            let Kind::Call { started, json } = rec.kind else { continue };
            if started < from || started >= to {
                continue;
            }
            reads.fetch_add(1, Ordering::Relaxed);
            match persist::decode_call(json) {
                Ok(mut c) => {
                    if let Some(at) = called.get(&rec.seq) {
                        c.callback_made.get_or_insert(*at);
                    }
                    day.push(c);
                }
                Err(e @ FormatError::Newer { .. }) => return Err(anyhow::Error::new(e).context(self.path(d).display().to_string())),
                Err(e) => undecodable.push(Found { offset: rec.offset, bytes: json, why: e.to_string(), call: Some((started, rec.seq)) }),
            }
        }
        if !undecodable.is_empty() || !r.file.damaged.is_empty() {
            let out: BTreeSet<usize> = undecodable.iter().map(|f| f.offset).collect();
            let keep: Vec<&Record<'_>> = r.file.records.iter().filter(|rec| !out.contains(&rec.offset)).collect();
            self.repair(inner, d, &r, &keep, undecodable)?;
        }
        day.sort_by_key(|c| (c.started, c.seq));
        Ok(day)
    }

    /// Each call that started in `[from, to)` and that `want`s (given when
    /// its callback was made, if it was), with its callback, to `f`, in the
    /// order stored: what `between` gives, without holding it all. Each
    /// file is read twice a chunk at a time (its callbacks, then its
    /// calls), so memory is a chunk and a day's callbacks however large the
    /// day; a file with damage is read whole by `between` instead (which
    /// keeps the damage aside), as is one with a call that cannot be
    /// decoded once its other calls are given.
    pub fn for_each(
        &self,
        from: Timestamp,
        to: Timestamp,
        reads: &AtomicUsize,
        want: impl Fn(Option<Timestamp>) -> bool,
        mut f: impl FnMut(CallRecord),
    ) -> Result<()> {
        let mut inner = self.lock();
        if to <= from {
            return Ok(());
        }
        for d in inner.dates_between(from, to) {
            let mut called: HashMap<u64, Timestamp> = HashMap::new();
            let clean = self
                .stream(&mut inner, d, |r| {
                    note_callback(&mut called, r);
                    true
                })?
                .clean;
            if !clean {
                for c in self.between_on(&mut inner, d, from, to, reads)? {
                    if want(c.callback_made) {
                        f(c);
                    }
                }
                continue;
            }
            let (mut undecodable, mut newer) = (false, None);
            self.stream(&mut inner, d, |r| {
                let Kind::Call { started, json } = r.kind else { return true };
                let callback = called.get(&r.seq).copied();
                if started < from || started >= to || !want(callback) {
                    return true;
                }
                reads.fetch_add(1, Ordering::Relaxed);
                match persist::decode_call(json) {
                    Ok(mut c) => {
                        if let Some(at) = callback {
                            c.callback_made.get_or_insert(at);
                        }
                        f(c);
                        true
                    }
                    Err(e @ FormatError::Newer { .. }) => {
                        newer = Some(e);
                        false
                    }
                    Err(_) => {
                        undecodable = true;
                        true
                    }
                }
            })?;
            if let Some(e) = newer {
                return Err(anyhow::Error::new(e).context(self.path(d).display().to_string()));
            }
            if undecodable {
                // kept aside and taken out of the file; the rest was given
                self.between_on(&mut inner, d, from, to, &AtomicUsize::new(0))?;
            }
        }
        Ok(())
    }

    /// Each intact record of a date's file, in order, to `f` until it
    /// returns false, read `CHUNK` bytes at a time (what is buffered for
    /// the day written out first). Says whether the file has damage
    /// (records after it are still given) and how long it is.
    fn stream(&self, inner: &mut Inner, d: NaiveDate, mut f: impl FnMut(&Record<'_>) -> bool) -> Result<Streamed> {
        use std::io::Read;
        if let Some(day) = inner.loaded.get_mut(&d) {
            day.write_out()?;
        }
        let path = self.path(d);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Streamed { clean: true, total: 0, good: 0 }),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        };
        let context = || path.display().to_string();
        let (mut buf, mut clean, mut header, mut total) = (Vec::new(), true, true, 0u64);
        loop {
            let start = buf.len();
            buf.resize(start + CHUNK, 0);
            let mut n = 0;
            while start + n < buf.len() {
                match file.read(&mut buf[start + n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
                }
            }
            buf.truncate(start + n);
            total += n as u64;
            let eof = n < CHUNK;
            let mut at = 0;
            if header {
                format::check_header(&buf).map_err(|e| anyhow::Error::new(e).context(context()))?;
                at = format::FILE_HEADER.len().min(buf.len());
                header = false;
            }
            let scan = journal::scan_records(&buf, at);
            clean &= scan.damaged.is_empty();
            for fr in &scan.frames {
                match format::record(fr).map_err(|e| anyhow::Error::new(e).context(context()))? {
                    Some(r) => {
                        if !f(&r) {
                            return Ok(Streamed { clean, total, good: total });
                        }
                    }
                    None => clean = false,
                }
            }
            if eof {
                // a header cut short is no file yet
                let torn = if total < format::FILE_HEADER.len() as u64 { total } else { scan.torn_tail as u64 };
                return Ok(Streamed { clean, total, good: total - torn });
            }
            // a record cut by the chunk's end is read with the next chunk
            let keep = scan.torn_tail;
            buf.drain(..buf.len() - keep);
        }
    }

    /// Whether a call started in `[from, to)`.
    pub fn any_between(&self, from: Timestamp, to: Timestamp) -> Result<bool> {
        let mut inner = self.lock();
        let call_in = |r: &Record<'_>| matches!(r.kind, Kind::Call { started, .. } if started >= from && started < to);
        for d in inner.dates_between(from, to) {
            let found = self.fold_records(&mut inner, d, |found: &mut bool, r| {
                *found = call_in(r);
                !*found
            })?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How many calls the files hold and the highest number among them
    /// (one pass over every file: after a crash, or a migration).
    pub fn count(&self) -> Result<(usize, u64)> {
        let mut inner = self.lock();
        let (mut n, mut max) = (0, 0);
        fn tally(day: &mut (usize, u64), rec: &Record<'_>) -> bool {
            if let Kind::Call { .. } = rec.kind {
                day.0 += 1;
                day.1 = day.1.max(rec.seq);
            }
            true
        }
        for d in inner.present.clone() {
            let day = self.fold_records(&mut inner, d, tally)?;
            n += day.0;
            max = max.max(day.1);
        }
        Ok((n, max))
    }

    /// Whether a call started before `limit`, reading as little as it
    /// can: a file of an earlier day is taken to hold one (unread); only
    /// the file of `limit`'s own day is read, and only if no earlier one
    /// exists.
    pub fn any_before(&self, limit: Timestamp) -> Result<bool> {
        let d = utc_date(limit);
        let (earlier, same) = {
            let inner = self.lock();
            (inner.present.range(..d).next().is_some(), inner.present.contains(&d))
        };
        Ok(earlier || (same && day_start(d) < limit && self.any_between(day_start(d), limit)?))
    }

    /// When the earliest stored call started (read once, then kept up to
    /// date as calls are stored).
    pub fn first_start(&self) -> Result<Option<Timestamp>> {
        let mut inner = self.lock();
        if let Some(first) = inner.first {
            return Ok(first);
        }
        fn earliest(first: &mut Option<Timestamp>, rec: &Record<'_>) -> bool {
            if let Kind::Call { started, .. } = rec.kind {
                *first = Some(first.map_or(started, |f| f.min(started)));
            }
            true
        }
        for d in inner.present.clone() {
            let first = self.fold_records(&mut inner, d, earliest)?;
            if first.is_some() {
                inner.first = Some(first);
                return Ok(first);
            }
        }
        inner.first = Some(None);
        Ok(None)
    }

    /// Deletes the calls that started before `limit` (with their
    /// callbacks): whole files, and the file holding the limit rewritten.
    /// Returns how many calls went.
    pub fn prune_before(&self, limit: Timestamp, gone: impl Fn(usize)) -> Result<usize> {
        let mut inner = self.lock();
        let mut n = 0;
        let dates: Vec<NaiveDate> = inner.present.range(..=utc_date(limit.add(-1))).copied().collect();
        let is_call = |rec: &Record<'_>| matches!(rec.kind, Kind::Call { .. });
        for d in dates {
            if let Some(day) = inner.loaded.get_mut(&d) {
                day.sync(&self.dir)?;
                inner.loaded.remove(&d);
            }
            if day_start(d).add(DAY) <= limit {
                // the whole day goes: its calls counted, a chunk at a time
                let calls = self.fold_records(&mut inner, d, |calls: &mut usize, rec| {
                    *calls += usize::from(is_call(rec));
                    true
                })?;
                std::fs::remove_file(self.path(d)).with_context(|| format!("cannot delete {}", self.path(d).display()))?;
                inner.present.remove(&d);
                inner.first = None;
                gone(calls);
                n += calls;
                continue;
            }
            // the day holding the cut: rewritten without the calls before it
            let bytes = self.bytes_of(&mut inner, d)?;
            let r = self.parse(d, &bytes)?;
            let calls = r.file.records.iter().filter(|rec| is_call(rec)).count();
            let kept: BTreeSet<u64> = r
                .file
                .records
                .iter()
                .filter_map(|rec| match rec.kind {
                    Kind::Call { started, .. } if started >= limit => Some(rec.seq),
                    _ => None,
                })
                .collect();
            if kept.len() < calls || !r.file.damaged.is_empty() {
                let keep: Vec<&Record<'_>> = r.file.records.iter().filter(|rec| kept.contains(&rec.seq)).collect();
                self.repair(&mut inner, d, &r, &keep, Vec::new())?;
                gone(calls - kept.len());
                n += calls - kept.len();
            }
        }
        sync_dir(&self.dir);
        Ok(n)
    }

    /// Writes and syncs every day written since the last flush.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock();
        for day in inner.loaded.values_mut() {
            day.sync(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_and_their_starts() {
        let t = Timestamp::from_secs_micros(1_730_764_799, 999_999); // 4 Nov 2024 23:59:59.999999
        assert_eq!(utc_date(t), NaiveDate::from_ymd_opt(2024, 11, 4).unwrap());
        assert_eq!(utc_date(t.add(1)), NaiveDate::from_ymd_opt(2024, 11, 5).unwrap());
        assert_eq!(day_start(utc_date(t.add(1))), t.add(1));
        assert_eq!(utc_date(Timestamp(-1)), NaiveDate::from_ymd_opt(1969, 12, 31).unwrap());
        assert!(utc_date(Timestamp::MIN) < utc_date(Timestamp(0)));
        assert!(utc_date(Timestamp::MAX) > utc_date(Timestamp(0)));
    }

    #[test]
    fn a_set_of_numbers_holds_what_was_put() {
        let mut s = SeqSet::default();
        for n in [0, 1, 63, 64, 1023, 1024, 5_000_000, u64::MAX] {
            assert!(!s.contains(n));
            s.insert(n);
            assert!(s.contains(n));
        }
        assert!(!s.contains(2) && !s.contains(1025) && !s.contains(u64::MAX - 1));
    }

    fn open(dir: &Path) -> CallFiles {
        CallFiles::open(&dir.join("calls"), &dir.join("aside")).unwrap()
    }

    fn t0() -> Timestamp {
        Timestamp::from_secs_micros(1_730_710_800, 0)
    }

    #[test]
    fn a_count_read_a_chunk_at_a_time_equals_the_whole_read_whatever_byte_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let files = open(dir.path());
            for s in 1..=10u64 {
                let json = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(300 + s as usize * 7));
                files.put(s, t0().add(s as i64 * 1_000_000), json.as_bytes(), None).unwrap();
            }
            files.flush().unwrap();
        }
        let path = std::fs::read_dir(dir.path().join("calls")).unwrap().next().unwrap().unwrap().path();
        let clean = std::fs::read(&path).unwrap();
        let mut bad = vec![];
        for p in 8..clean.len() {
            let mut b = clean.clone();
            b[p] ^= 0x5A;
            std::fs::write(&path, &b).unwrap();
            let whole = format::read(&b).unwrap();
            let want = whole.records.iter().filter(|r| matches!(r.kind, Kind::Call { .. })).count();
            let want_max = whole.records.iter().map(|r| r.seq).max().unwrap_or(0);
            let got = open(dir.path()).count().unwrap();
            if got != (want, want_max) {
                bad.push((p, want, got));
            }
        }
        assert!(bad.is_empty(), "{} of {} single damaged bytes: count() differs from the whole read, e.g. {:?}", bad.len(), clean.len() - 8, &bad[..bad.len().min(5)]);
    }

    #[test]
    fn a_rewrite_that_fails_keeps_the_day_it_was_writing() {
        let dir = tempfile::tempdir().unwrap();
        let files = open(dir.path());
        let d = utc_date(t0());
        files.put(1, t0(), b"{not json", None).unwrap();
        files.flush().unwrap();
        files.put(2, t0().add(1), b"{\"v\":1}", None).unwrap(); // buffered: not synced
        std::fs::create_dir(dir.path().join(format!("calls/{d}.calls.tmp"))).unwrap(); // the rewrite's create fails
        assert!(files.between(t0(), t0().add(10), &AtomicUsize::new(0)).is_err());
        let inner = files.lock();
        assert!(inner.loaded.contains_key(&d), "call 2 was written out by the reader but the day was dropped unsynced: flush() will never sync it");
        drop(inner);
        assert!(files.take_bad().is_empty(), "nothing reported before it is out of the file");
    }

    #[test]
    fn a_call_found_before_damage_answers_without_reading_the_file_again() {
        // an intact call in range, damage, then a record of a newer format
        // that only a whole read reaches (and refuses)
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("calls")).unwrap();
        let d = utc_date(t0());
        let mut b = format::FILE_HEADER.to_vec();
        format::frame_call(1, t0(), b"{\"v\":1}", &mut b);
        b.extend_from_slice(b"some damaged bytes here");
        journal::frame(format::RECORD_VERSION + 1, b"0123456789abcdef", &mut b);
        std::fs::write(dir.path().join(format!("calls/{d}.calls")), &b).unwrap();
        let files = open(dir.path());
        assert!(files.any_between(t0(), t0().add(1_000_000)).unwrap());
    }
}
