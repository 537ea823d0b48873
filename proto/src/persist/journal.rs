//! The journal file's framing: how records are laid out, and how a file is
//! read back when part of it is damaged.
//!
//! Framing 2 (written since 0.2.0): an 8-byte file header `CBTJRNL` 0x02,
//! then records of
//!
//! ```text
//! 0xCB 0xD1 | body version u16 LE | body length u32 LE | CRC-32 u32 LE | body
//! ```
//!
//! where the CRC covers the version, the length and the body. The two sync
//! bytes let a reader find the next record after damage.
//!
//! Framing 1 (0.1.0): no header; records of `length u32 LE | CRC-32 of body
//! u32 LE | body`, bodies of version 1. A damaged record is skipped by its
//! length when that leads to a valid record, else the reader searches for
//! the next valid one byte by byte.
//!
//! A record cut short at the end of the file is a torn write (the process
//! was killed while appending): expected after `kill -9`, not damage.

pub const FILE_HEADER: [u8; 8] = *b"CBTJRNL\x02";
pub const SYNC: [u8; 2] = [0xCB, 0xD1];
const HEAD_V2: usize = 12;
const HEAD_V1: usize = 8;
/// No record is larger (a SIP message summary is a few KiB).
pub const MAX_RECORD: usize = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// 0.1.0: no file header, no record version.
    V1,
    V2,
}

/// One intact record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub offset: usize,
    pub version: u16,
    pub body: &'a [u8],
}

/// Bytes that are not an intact record (kept aside by the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub offset: usize,
    pub len: usize,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    pub framing: Framing,
    pub frames: Vec<Frame<'a>>,
    pub damaged: Vec<Damage>,
    /// Bytes of a record cut short at the end of the file.
    pub torn_tail: usize,
}

/// Appends one framing-2 record to `out`.
pub fn frame(version: u16, body: &[u8], out: &mut Vec<u8>) {
    let len = body.len() as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&version.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(body);
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(body);
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What is at `at`: a whole record (its frame and length), a record cut
/// short by the end of the file, or nothing valid.
enum At<'a> {
    Record(Frame<'a>, usize),
    Short,
    Invalid,
}

fn record_at(framing: Framing, b: &[u8], at: usize) -> At<'_> {
    let rest = b.len() - at;
    match framing {
        Framing::V2 => {
            if rest < HEAD_V2 {
                return if b[at..].iter().zip(SYNC).all(|(x, y)| *x == y) { At::Short } else { At::Invalid };
            }
            if b[at..at + 2] != SYNC {
                return At::Invalid;
            }
            let version = u16_at(b, at + 2);
            let len = u32_at(b, at + 4) as usize;
            if len > MAX_RECORD {
                return At::Invalid;
            }
            if rest < HEAD_V2 + len {
                return At::Short;
            }
            let body = &b[at + HEAD_V2..at + HEAD_V2 + len];
            let mut h = crc32fast::Hasher::new();
            h.update(&b[at + 2..at + 8]);
            h.update(body);
            if h.finalize() != u32_at(b, at + 8) {
                return At::Invalid;
            }
            At::Record(Frame { offset: at, version, body }, HEAD_V2 + len)
        }
        Framing::V1 => {
            if rest < HEAD_V1 {
                return At::Short;
            }
            let len = u32_at(b, at) as usize;
            if len > MAX_RECORD {
                return At::Invalid;
            }
            if rest < HEAD_V1 + len {
                return At::Short;
            }
            let body = &b[at + HEAD_V1..at + HEAD_V1 + len];
            if crc32fast::hash(body) != u32_at(b, at + 4) || body.first() != Some(&b'{') {
                return At::Invalid;
            }
            At::Record(Frame { offset: at, version: 1, body }, HEAD_V1 + len)
        }
    }
}

/// The next offset after `from` where an intact record starts.
fn next_valid(framing: Framing, b: &[u8], from: usize) -> Option<usize> {
    (from..b.len()).find(|&q| {
        (framing == Framing::V1 || b[q] == SYNC[0]) && matches!(record_at(framing, b, q), At::Record(..))
    })
}

/// Reads a whole journal file: its intact records in order, the damaged
/// spans between them, and a torn tail.
pub fn scan(b: &[u8]) -> Scan<'_> {
    if b.starts_with(&FILE_HEADER) {
        scan_from(Framing::V2, b, FILE_HEADER.len())
    } else {
        scan_from(Framing::V1, b, 0)
    }
}

/// Reads framing-2 records from `at` (after a file header of another
/// kind: the store's call files are framed as the journal is).
pub fn scan_records(b: &[u8], at: usize) -> Scan<'_> {
    scan_from(Framing::V2, b, at.min(b.len()))
}

fn scan_from(framing: Framing, b: &[u8], mut at: usize) -> Scan<'_> {
    let mut out = Scan {
        framing,
        frames: Vec::new(),
        damaged: Vec::new(),
        torn_tail: 0,
    };
    while at < b.len() {
        match record_at(framing, b, at) {
            At::Record(f, n) => {
                out.frames.push(f);
                at += n;
            }
            At::Short if next_valid(framing, b, at + 1).is_none() => {
                out.torn_tail = b.len() - at;
                break;
            }
            At::Short | At::Invalid => {
                // framing 1: the length may be intact and only the body damaged
                let skip = match framing {
                    Framing::V1 if b.len() - at >= HEAD_V1 => {
                        let end = at + HEAD_V1 + u32_at(b, at) as usize;
                        (end <= b.len() && (end == b.len() || matches!(record_at(framing, b, end), At::Record(..)))).then_some(end)
                    }
                    _ => None,
                };
                let next = skip.or_else(|| next_valid(framing, b, at + 1)).unwrap_or(b.len());
                out.damaged.push(Damage {
                    offset: at,
                    len: next - at,
                    reason: "checksum or length does not match",
                });
                at = next;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bodies: &[&[u8]]) -> Vec<u8> {
        let mut v = FILE_HEADER.to_vec();
        for b in bodies {
            frame(1, b, &mut v);
        }
        v
    }

    fn legacy(bodies: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for b in bodies {
            v.extend_from_slice(&(b.len() as u32).to_le_bytes());
            v.extend_from_slice(&crc32fast::hash(b).to_le_bytes());
            v.extend_from_slice(b);
        }
        v
    }

    fn bodies<'a>(s: &Scan<'a>) -> Vec<&'a [u8]> {
        s.frames.iter().map(|f| f.body).collect()
    }

    const R: [&[u8]; 4] = [b"{\"a\":1}", b"{\"b\":22}", b"{\"c\":333}", b"{\"d\":4444}"];

    #[test]
    fn intact_files_read_whole() {
        for (f, framing) in [(file(&R), Framing::V2), (legacy(&R), Framing::V1)] {
            let s = scan(&f);
            assert_eq!(s.framing, framing);
            assert_eq!(bodies(&s), R.to_vec());
            assert!(s.damaged.is_empty());
            assert_eq!(s.torn_tail, 0);
        }
        assert_eq!(scan(&FILE_HEADER).frames.len(), 0);
        assert_eq!(scan(&[]).frames.len(), 0);
    }

    #[test]
    fn a_torn_last_record_is_not_damage() {
        for f in [file(&R), legacy(&R)] {
            for cut in 1..R[3].len() + 8 {
                let s = scan(&f[..f.len() - cut]);
                assert_eq!(bodies(&s), R[..3].to_vec(), "cut {cut}");
                assert!(s.damaged.is_empty(), "cut {cut}: {:?}", s.damaged);
                assert!(s.torn_tail > 0);
            }
        }
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_skipped_and_reported() {
        for make in [file as fn(&[&[u8]]) -> Vec<u8>, legacy] {
            let clean = make(&R);
            let second = clean.windows(R[1].len()).position(|w| w == R[1]).unwrap();
            // a byte of its body
            let mut f = clean.clone();
            f[second + 3] ^= 0x55;
            let s = scan(&f);
            assert_eq!(bodies(&s), vec![R[0], R[2], R[3]]);
            assert_eq!(s.damaged.len(), 1);
            // its length field (framing 2: found again by the sync bytes;
            // framing 1: by searching for the next valid record)
            let head = if s.framing == Framing::V2 { 12 } else { 8 };
            let len_at = second - head + if s.framing == Framing::V2 { 4 } else { 0 };
            let mut f = clean.clone();
            f[len_at + 1] = 0x7F;
            let s = scan(&f);
            assert_eq!(bodies(&s), vec![R[0], R[2], R[3]], "{:?}", s.framing);
            assert_eq!(s.damaged.len(), 1);
            assert_eq!(s.damaged[0].offset, second - head);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u64;
        for n in 0..2000 {
            let mut f = if n % 2 == 0 { file(&R) } else { legacy(&R) };
            for _ in 0..(n % 7) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % f.len();
                f[i] = (seed >> 17) as u8;
            }
            let s = scan(&f);
            let covered: usize = s.frames.iter().map(|x| x.body.len()).sum::<usize>() + s.damaged.iter().map(|d| d.len).sum::<usize>();
            assert!(covered <= f.len());
        }
    }
}
