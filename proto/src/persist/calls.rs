//! The store's call files: the finished calls that started on one UTC day,
//! in the order they were stored, with the callbacks made later appended.
//!
//! File format 1: an 8-byte header `CBTCALL` 0x01, then records framed as
//! the journal's framing 2 (sync bytes, record version, length, CRC-32,
//! body; see [`super::journal`]). Record versions:
//!
//! ```text
//! 1  a finished call:  seq u64 LE | started i64 LE (µs) | persist::v1::CallV1 JSON
//! 2  callback made:    seq u64 LE | at i64 LE (µs)
//! ```
//!
//! A call's sequence number and start are outside the JSON so that the
//! store can index a file (and find what a period needs) without decoding
//! calls. A callback amendment belongs to the call of its number in the
//! same file.
//! A record of a higher version was written by a newer agent: an error,
//! never skipped.

use super::journal::{self, Damage};
use super::FormatError;
use crate::time::Timestamp;

pub const FILE_HEADER: [u8; 8] = *b"CBTCALL\x01";
/// The highest record version this build reads.
pub const RECORD_VERSION: u16 = 2;
const CALL: u16 = 1;
const CALLBACK: u16 = 2;
const WHAT: &str = "a call file record";

/// One intact record of a call file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where its frame starts and how long it is (header and body).
    pub offset: usize,
    pub len: usize,
    pub seq: u64,
    pub kind: Kind<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// The call, as `persist::encode_call` wrote it (decode with
    /// `persist::decode_call`), and when it started.
    Call { started: Timestamp, json: &'a [u8] },
    CallbackMade(Timestamp),
}

/// A whole call file read back.
#[derive(Debug, Default)]
pub struct CallFile<'a> {
    pub records: Vec<Record<'a>>,
    /// Bytes that are not an intact record: damaged frames, and frames
    /// whose body is too short for its version.
    pub damaged: Vec<Damage>,
    /// Bytes of a record cut short at the end (a kill while appending):
    /// the file's good length is `len - torn_tail`.
    pub torn_tail: usize,
}

/// A call record, framed.
pub fn frame_call(seq: u64, started: Timestamp, call_json: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(16 + call_json.len());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&started.micros().to_le_bytes());
    body.extend_from_slice(call_json);
    journal::frame(CALL, &body, out);
}

/// A callback-made amendment, framed.
pub fn frame_callback(seq: u64, at: Timestamp, out: &mut Vec<u8>) {
    let mut body = [0u8; 16];
    body[..8].copy_from_slice(&seq.to_le_bytes());
    body[8..].copy_from_slice(&at.micros().to_le_bytes());
    journal::frame(CALLBACK, &body, out);
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads a call file. An empty file (created, its header not yet written)
/// reads as no records, as does a header cut short; a header of a newer
/// format is an error, as is a record of a newer version; any other header
/// is damage (its records are still read).
pub fn read(b: &[u8]) -> Result<CallFile<'_>, FormatError> {
    let intact = check_header(b)?;
    if b.len() < FILE_HEADER.len() && intact {
        // nothing, or the header itself torn
        return Ok(CallFile { torn_tail: b.len(), ..Default::default() });
    }
    let at = FILE_HEADER.len().min(b.len());
    let scan = journal::scan_records(b, at);
    let mut damaged = scan.damaged;
    if !intact {
        damaged.push(Damage { offset: 0, len: at, reason: "the file header is damaged" });
    }
    let mut out = CallFile { records: Vec::with_capacity(scan.frames.len()), damaged, torn_tail: scan.torn_tail };
    for f in &scan.frames {
        match record(f)? {
            Some(r) => out.records.push(r),
            None => out.damaged.push(Damage { offset: f.offset, len: f.body.len() + 12, reason: UNKNOWN }),
        }
    }
    out.damaged.sort_by_key(|d| d.offset);
    Ok(out)
}

const UNKNOWN: &str = "a record of an unknown version or the wrong length";

/// Whether a call file starts with an intact header (or a part of one, if
/// that is all it has: cut short while it was made); an error if the
/// header is of a newer format.
pub fn check_header(b: &[u8]) -> Result<bool, FormatError> {
    let n = b.len().min(FILE_HEADER.len());
    if b[..n] == FILE_HEADER[..n] {
        return Ok(true);
    }
    if n == FILE_HEADER.len() && b[..7] == FILE_HEADER[..7] && b[7] > FILE_HEADER[7] {
        return Err(FormatError::Newer { what: "a call file", found: b[7] as u32, supported: FILE_HEADER[7] as u32 });
    }
    Ok(false)
}

/// The record of an intact frame of a call file: `None` for a frame of an
/// older unknown version or the wrong length for its version (damage), an
/// error for a newer version.
pub fn record<'a>(f: &journal::Frame<'a>) -> Result<Option<Record<'a>>, FormatError> {
    let kind = match f.version {
        CALL if f.body.len() > 16 => Kind::Call { started: Timestamp(i64_at(f.body, 8)), json: &f.body[16..] },
        CALLBACK if f.body.len() == 16 => Kind::CallbackMade(Timestamp(i64_at(f.body, 8))),
        v if v > RECORD_VERSION => return Err(FormatError::Newer { what: WHAT, found: v as u32, supported: RECORD_VERSION as u32 }),
        _ => return Ok(None),
    };
    Ok(Some(Record {
        offset: f.offset,
        len: f.body.len() + 12,
        seq: u64::from_le_bytes(f.body[..8].try_into().expect("8 bytes")),
        kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Vec<u8> {
        let mut b = FILE_HEADER.to_vec();
        frame_call(7, Timestamp(1_000), b"{\"v\":1}", &mut b);
        frame_callback(7, Timestamp(5_000), &mut b);
        frame_call(9, Timestamp(-3), b"{}", &mut b);
        b
    }

    #[test]
    fn records_read_back_with_their_numbers_and_starts() {
        let b = file();
        let f = read(&b).unwrap();
        let got: Vec<_> = f.records.iter().map(|r| (r.seq, r.kind.clone())).collect();
        assert_eq!(
            got,
            [
                (7, Kind::Call { started: Timestamp(1_000), json: &b"{\"v\":1}"[..] }),
                (7, Kind::CallbackMade(Timestamp(5_000))),
                (9, Kind::Call { started: Timestamp(-3), json: &b"{}"[..] }),
            ]
        );
        assert_eq!(f.records.iter().map(|r| r.len).sum::<usize>() + FILE_HEADER.len(), b.len());
        assert!(f.damaged.is_empty() && f.torn_tail == 0);
    }

    #[test]
    fn a_torn_tail_and_damage_are_told_apart() {
        let b = file();
        let f = read(&b[..b.len() - 3]).unwrap();
        assert_eq!((f.records.len(), f.torn_tail), (2, b.len() - 3 - f.records[1].offset - f.records[1].len));
        let mut d = b.clone();
        let second = read(&b).unwrap().records[1].offset;
        d[second + 14] ^= 0xFF;
        let f = read(&d).unwrap();
        assert_eq!(f.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 9]);
        assert_eq!(f.damaged.len(), 1);
        assert_eq!(f.damaged[0].offset, second);
        assert!(read(&b[..5]).unwrap().records.is_empty(), "a torn header");
    }

    #[test]
    fn a_newer_file_or_record_is_refused() {
        let mut b = file();
        b[7] = 2;
        assert!(matches!(read(&b), Err(FormatError::Newer { found: 2, .. })));
        let mut b = FILE_HEADER.to_vec();
        journal::frame(3, &[0; 16], &mut b);
        assert!(matches!(read(&b), Err(FormatError::Newer { found: 3, supported: 2, .. })));
        // any other header is damage: the records after it are read
        let mut b = file();
        b[2] ^= 1;
        let f = read(&b).unwrap();
        assert_eq!((f.records.len(), f.damaged.len(), f.damaged[0].offset, f.damaged[0].len), (3, 1, 0, 8));
        assert_eq!(read(b"CBTJ").unwrap().damaged.len(), 1, "a short header that is not a call file's");
    }
}
