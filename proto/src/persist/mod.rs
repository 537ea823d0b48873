//! What the agent writes to disk, as versioned types of its own.
//!
//! The engine's types change freely; what is on disk does not. Every stored
//! shape lives in a version module (`v1`, later `v2`...), never changes
//! once released, and converts explicitly to and from the engine's types.
//! Reading checks the version: an older one is read and migrated, a newer
//! one (written by a newer agent) or one that cannot be decoded is a
//! [`FormatError`] that names what and why, never a silent stop.
//!
//! | what | where (agent store) | version mark |
//! |---|---|---|
//! | finished call | `calls/YYYY-MM-DD.calls` (store layout 5; sled `calls` before) | JSON member `v` (absent: 1, as 0.1.0 wrote), in a record of the call file format ([`calls`]: file header and record version) |
//! | closed day | sled `days` | JSON member `v` (absent: 1) |
//! | journal record | `journal-N.log` | record header (framing 2); framing 1 files (0.1.0) hold version-1 records |
//! | engine snapshot | `snapshot.json` | `snapshot.version` (2 since 0.2: transfers and correlation signals of calls in progress; 1 is read) |
//! | outbox item, upload state, activity | sled `outbox`, `uploads`, `activity` | JSON member `v` |
//!
//! Adding a field to a stored shape: make `v2.rs` with the new shape, a
//! `From<v1::X> for v2::X` migration, write v2, and keep reading v1 (see
//! docs/architecture.md).

pub mod v1;
pub mod v2;

use crate::call::CallRecord;
use crate::engine::{EngineSnapshot, EngineSnapshotRef, JournalEntry};
use crate::metrics::Day;
use serde::Deserialize;

/// Versions this build writes (and the highest it reads).
pub const CALL_VERSION: u32 = 1;
pub const DAY_VERSION: u32 = 1;
pub const JOURNAL_RECORD_VERSION: u16 = 1;
pub const SNAPSHOT_VERSION: u32 = 2;

/// Why something stored could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what} has format version {found}, but this cbt-agent reads versions up to {supported}: it was written by a newer cbt-agent; install that version again, or move the store aside")]
    Newer { what: &'static str, found: u32, supported: u32 },
    #[error("{what} cannot be decoded: {detail}")]
    Undecodable { what: &'static str, detail: String },
}

impl FormatError {
    fn undecodable(what: &'static str, e: impl std::fmt::Display) -> FormatError {
        FormatError::Undecodable { what, detail: e.to_string() }
    }
}

/// The `v` member of a stored JSON object (absent: 1), if it is one.
fn version_of(bytes: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Tag {
        #[serde(default)]
        v: Option<u32>,
    }
    serde_json::from_slice::<Tag>(bytes).ok().map(|t| t.v.unwrap_or(1))
}

/// Decodes a `v`-tagged JSON value whose only known version is 1 (the
/// current one). A newer version is reported as such, not as garbage.
fn decode_v1<T: for<'de> Deserialize<'de>>(what: &'static str, supported: u32, bytes: &[u8]) -> Result<T, FormatError> {
    match version_of(bytes) {
        Some(1) => serde_json::from_slice(bytes).map_err(|e| FormatError::undecodable(what, e)),
        Some(found) if found > supported => Err(FormatError::Newer { what, found, supported }),
        Some(found) => Err(FormatError::Undecodable { what, detail: format!("unknown version {found}") }),
        None => Err(FormatError::undecodable(what, "not a JSON object")),
    }
}

pub fn encode_call(r: &CallRecord) -> Vec<u8> {
    serde_json::to_vec(&v1::CallV1::from(r)).expect("a call serialises")
}

/// A stored call, migrated to the engine's [`CallRecord`] (without the
/// caller's hash, which is never stored).
pub fn decode_call(bytes: &[u8]) -> Result<CallRecord, FormatError> {
    decode_v1::<v1::CallV1>("a stored call", CALL_VERSION, bytes).map(Into::into)
}

pub fn encode_day(d: &Day) -> Vec<u8> {
    serde_json::to_vec(&v1::DayV1::from(d)).expect("a day serialises")
}

pub fn decode_day(bytes: &[u8]) -> Result<Day, FormatError> {
    decode_v1::<v1::DayV1>("a stored day", DAY_VERSION, bytes).map(Into::into)
}

/// A journal record's body, and the version to put in its header.
pub fn encode_journal_record(e: &JournalEntry) -> (u16, Vec<u8>) {
    (JOURNAL_RECORD_VERSION, serde_json::to_vec(&v1::JournalRecordV1::from(e)).expect("a record serialises"))
}

pub fn decode_journal_record(version: u16, body: &[u8]) -> Result<JournalEntry, FormatError> {
    const WHAT: &str = "a journal record";
    match version {
        1 => serde_json::from_slice::<v1::JournalRecordV1>(body)
            .map(Into::into)
            .map_err(|e| FormatError::undecodable(WHAT, e)),
        v if v > JOURNAL_RECORD_VERSION => Err(FormatError::Newer {
            what: WHAT,
            found: v as u32,
            supported: JOURNAL_RECORD_VERSION as u32,
        }),
        v => Err(FormatError::Undecodable { what: WHAT, detail: format!("unknown version {v}") }),
    }
}

/// Writes `snapshot.json`: the journal generation that continues from it,
/// and the engine state.
pub fn write_snapshot<W: std::io::Write>(w: W, journal: u64, snap: &EngineSnapshotRef<'_>) -> serde_json::Result<()> {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        journal: u64,
        snapshot: v2::SnapshotV2Writer<'a>,
    }
    serde_json::to_writer(w, &Doc { journal, snapshot: v2::SnapshotV2Writer(snap) })
}

/// The journal generation a snapshot names (read without the state).
pub fn snapshot_journal(bytes: &[u8]) -> Result<u64, FormatError> {
    #[derive(Deserialize)]
    struct Head {
        journal: u64,
    }
    serde_json::from_slice::<Head>(bytes)
        .map(|h| h.journal)
        .map_err(|e| FormatError::undecodable("the engine snapshot", e))
}

/// Reads `snapshot.json`: (journal generation, engine state).
pub fn read_snapshot(bytes: &[u8]) -> Result<(u64, EngineSnapshot), FormatError> {
    const WHAT: &str = "the engine snapshot";
    #[derive(Deserialize)]
    struct Head {
        snapshot: VersionOnly,
    }
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let version = serde_json::from_slice::<Head>(bytes).map_err(|e| FormatError::undecodable(WHAT, e))?.snapshot.version;
    // `snapshot.json` as written with state of shape `T`
    fn read<T: serde::de::DeserializeOwned + Into<EngineSnapshot>>(bytes: &[u8]) -> Result<(u64, EngineSnapshot), FormatError> {
        #[derive(Deserialize)]
        #[serde(bound = "T: serde::de::DeserializeOwned")]
        struct Doc<T> {
            journal: u64,
            snapshot: T,
        }
        let d: Doc<T> = serde_json::from_slice(bytes).map_err(|e| FormatError::undecodable(WHAT, e))?;
        Ok((d.journal, d.snapshot.into()))
    }
    match version {
        1 => read::<v1::SnapshotV1>(bytes),
        2 => read::<v2::SnapshotV2>(bytes),
        v if v > SNAPSHOT_VERSION => Err(FormatError::Newer { what: WHAT, found: v, supported: SNAPSHOT_VERSION }),
        v => Err(FormatError::Undecodable { what: WHAT, detail: format!("unknown version {v}") }),
    }
}

/// The recent gaps, as kept under the store's `gaps` mark.
pub fn encode_gaps(gaps: &[v1::GapV1]) -> Vec<u8> {
    serde_json::to_vec(&v1::GapsV1 { v: 1, gaps: gaps.to_vec() }).expect("gaps serialise")
}

pub fn decode_gaps(bytes: &[u8]) -> Result<Vec<v1::GapV1>, FormatError> {
    // 0.1.0: a bare list
    if let Ok(list) = serde_json::from_slice::<Vec<v1::GapV1>>(bytes) {
        return Ok(list);
    }
    decode_v1::<v1::GapsV1>("the list of gaps", 1, bytes).map(|g| g.gaps)
}

/// Store-level records of the uploader and the activity log: stored as
/// they are (they have no engine counterpart), tagged `v`.
pub fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("a stored record serialises")
}

pub fn decode_outbox_item(bytes: &[u8]) -> Result<v1::OutboxItemV1, FormatError> {
    decode_v1("an outbox item", 1, bytes)
}

pub fn decode_upload_state(bytes: &[u8]) -> Result<v1::UploadStateV1, FormatError> {
    decode_v1("an upload state", 1, bytes)
}

pub fn decode_activity(bytes: &[u8]) -> Result<v1::ActivityV1, FormatError> {
    decode_v1("an activity record", 1, bytes)
}

pub mod calls;
pub mod journal;

#[cfg(test)]
mod tests;
