//! SIP message framing: find where messages start and end in a UDP payload or
//! a reassembled TCP stream, on any port.
//!
//! A message starts at a request line (`METHOD URI SIP/2.0`) or a status line
//! (`SIP/2.0 NNN reason`) at the beginning of a line, ends its headers at the
//! first empty line (CRLF or bare LF), and carries `Content-Length` bytes of
//! body (compact form `l:` too). Keep-alive CRLFs between messages are
//! skipped silently; anything else before a start line is garbage and is
//! skipped up to the next start line (resynchronisation).

use memchr::memmem;

/// Longest start line plus headers we wait for before declaring garbage.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest start line we wait for.
const MAX_LINE: usize = 8 * 1024;
/// Largest Content-Length we believe.
pub const MAX_BODY: usize = 16 << 20;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ContentLength {
    Declared(usize),
    Missing,
    Invalid,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A complete head: start line at `start`, headers end (after the empty
    /// line) at `head_end`.
    Message {
        start: usize,
        head_end: usize,
        content_length: ContentLength,
        /// Non-keep-alive bytes skipped before `start`.
        garbage: usize,
    },
    /// A start line at `start` whose headers are not complete yet.
    Partial { start: usize, garbage: usize },
    /// No start line in reach: the first `discard` bytes can be dropped
    /// (`garbage` of them were not keep-alive whitespace).
    Garbage { discard: usize, garbage: usize },
}

/// Looks for the next message in `buf`.
pub fn find(buf: &[u8]) -> Framing {
    find_impl(buf, 0, None)
}

/// Like [`find`], and records in `nl` (cleared first) the offset from the
/// message's start of every newline of the head it returns (`Message` or
/// `Partial`): the framing walks the head's lines once to find its end and
/// its Content-Length, and the parser reads the same lines from this list
/// (a [`Head`]) instead of walking the head again.
pub fn find_lines(buf: &[u8], nl: &mut Vec<u32>) -> Framing {
    nl.clear();
    find_impl(buf, 0, Some(nl))
}

/// Like [`find`], for a stream buffer that only grew since an earlier call
/// returned `Partial { start: 0, .. }` when it held `scanned` bytes: the
/// search for the end of the headers resumes near there instead of
/// rescanning them, so a head arriving in many small segments costs linear
/// time, not quadratic.
pub fn find_from(buf: &[u8], scanned: usize) -> Framing {
    find_impl(buf, scanned, None)
}

/// A message head (start line and headers) with the offsets of its
/// newlines, as [`find_lines`] found them: every later step reads the
/// head's lines from here rather than searching for them again.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    bytes: &'a [u8],
    nl: &'a [u32],
}

impl<'a> Head<'a> {
    /// `nl` must hold the offset of every newline in `bytes`, in order
    /// ([`find_lines`] for the head it frames, or [`Head::scan`]).
    pub fn new(bytes: &'a [u8], nl: &'a [u32]) -> Self {
        debug_assert!(nl.iter().all(|&i| bytes.get(i as usize) == Some(&b'\n')));
        debug_assert_eq!(nl.len(), memchr::memchr_iter(b'\n', bytes).count());
        Head { bytes, nl }
    }

    /// Finds the newlines of `bytes` (into `nl`, cleared first).
    pub fn scan(bytes: &'a [u8], nl: &'a mut Vec<u32>) -> Self {
        nl.clear();
        each_newline(bytes, 0, |i| {
            nl.push(u32::try_from(i).unwrap_or(u32::MAX));
            true
        });
        Head { bytes, nl }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn has_newline(&self) -> bool {
        !self.nl.is_empty()
    }

    /// Where each `\n`-ended line lies (without the `\n`), and what
    /// follows the last newline (empty if the head ends with one). Every
    /// span lies within the head even if `nl` was not what [`Head::new`]
    /// asks for (then the lines are wrong, but nothing panics).
    pub fn spans(&self) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
        let len = self.bytes.len();
        self.nl
            .iter()
            .map(move |&e| (e as usize).min(len))
            .chain(std::iter::once(len))
            .scan(0, |from, end| {
                let span = (*from).min(end)..end;
                *from = end + 1;
                Some(span)
            })
    }
}

fn find_impl(buf: &[u8], scanned: usize, nl: Option<&mut Vec<u32>>) -> Framing {
    let mut p = 0;
    while p < buf.len() && (buf[p] == b'\r' || buf[p] == b'\n') {
        p += 1;
    }
    let crlf = p;
    let (start, line_end) = match start_line_at(buf, p) {
        LineCheck::Yes(line_end) => (p, line_end),
        LineCheck::NeedMore => return Framing::Garbage { discard: crlf, garbage: 0 },
        LineCheck::No => match resync(buf, p) {
            Some(found) => found,
            None => {
                // keep an unfinished last line: it may become a start line
                let discard = match memchr::memrchr(b'\n', &buf[p..]) {
                    Some(i) => p + i + 1,
                    None if buf.len() - p > MAX_LINE => buf.len(),
                    None => p,
                };
                return Framing::Garbage {
                    discard,
                    garbage: non_ws(&buf[crlf..discard]),
                };
            }
        },
    };
    let garbage = non_ws(&buf[crlf..start]);
    let end = match nl {
        Some(nl) => walk_lines(buf, start, line_end, nl),
        None => {
            // a newline at i was fully checked earlier if i + 2 < scanned
            let resume = if start == 0 && scanned > line_end + 2 {
                line_end + memchr::memrchr(b'\n', &buf[line_end..scanned.min(buf.len()) - 2]).unwrap_or(0)
            } else {
                line_end
            };
            walk_head(buf, resume, |_| {}).map(|end| (end, content_length(lines_of(&buf[line_end + 1..end]))))
        }
    };
    match end {
        Some((head_end, content_length)) => Framing::Message {
            start,
            head_end,
            content_length,
            garbage,
        },
        None if buf.len() - start > MAX_HEAD => {
            // headers that never end: skip this start line and resynchronise
            Framing::Garbage {
                discard: line_end + 1,
                garbage: non_ws(&buf[crlf..line_end + 1]),
            }
        }
        None => Framing::Partial { start, garbage },
    }
}

fn non_ws(b: &[u8]) -> usize {
    b.iter().filter(|c| !c.is_ascii_whitespace()).count()
}

/// The head's end and its Content-Length, read in one walk over its
/// lines from the start line's newline (`line_end`) on; every newline on
/// the way is pushed to `nl` (as an offset from `start`), up to and
/// including the one ending the empty line. [`walk_head`], then
/// [`content_length`] over the lines it found.
fn walk_lines(buf: &[u8], start: usize, line_end: usize, nl: &mut Vec<u32>) -> Option<(usize, ContentLength)> {
    let at = |i: usize| u32::try_from(i - start).unwrap_or(u32::MAX);
    nl.push(at(line_end));
    let end = walk_head(buf, line_end, |i| nl.push(at(i)))?;
    // only a line starting with `c` or `l` is looked at further
    let length = nl
        .windows(2)
        .filter(|w| matches!(buf.get(start + w[0] as usize + 1), Some(b'c' | b'C' | b'l' | b'L')))
        .find_map(|w| content_length_of(buf.get(start + w[0] as usize + 1..start + w[1] as usize).unwrap_or_default()));
    Some((end, length.unwrap_or(ContentLength::Missing)))
}

/// Offset just past the empty line ending the headers: the first newline
/// from `from_newline` (a newline) on that is followed by CRLF or by a
/// bare LF. `on_newline` is told of every newline after `from_newline`
/// up to and including the one ending the empty line.
fn walk_head(buf: &[u8], from_newline: usize, mut on_newline: impl FnMut(usize)) -> Option<usize> {
    let ends_at = |i: usize| match buf.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    };
    if let Some(end) = ends_at(from_newline) {
        on_newline(end - 1);
        return Some(end);
    }
    let mut found = None;
    each_newline(buf, from_newline + 1, |i| {
        on_newline(i);
        match ends_at(i) {
            Some(end) => {
                on_newline(end - 1);
                found = Some(end);
                false
            }
            None => true,
        }
    });
    found
}

/// Calls `f` with the offset of every newline in `b` from `from` on, in
/// order, until it returns false. Heads are short lines: one memchr call a
/// line costs more in calls than in bytes, so this reads sixteen bytes at a
/// time and takes every newline of the sixteen from one mask.
pub(crate) fn each_newline(b: &[u8], from: usize, mut f: impl FnMut(usize) -> bool) {
    let Some(rest) = b.get(from..) else { return };
    let mut base = from;
    let mut blocks = rest.chunks_exact(16);
    for block in &mut blocks {
        let Ok(block) = <&[u8; 16]>::try_from(block) else { return };
        let mut mask = newline_bits(block);
        while mask != 0 {
            if !f(base + mask.trailing_zeros() as usize) {
                return;
            }
            mask &= mask - 1;
        }
        base += 16;
    }
    for (k, c) in blocks.remainder().iter().enumerate() {
        if *c == b'\n' && !f(base + k) {
            return;
        }
    }
}

/// Bit `i` set where `block[i]` is a newline: one SSE2 compare. The one
/// `unsafe` of the engine: SSE2 is enabled at compile time (the `cfg`;
/// every x86-64 target has it), and the load reads exactly the sixteen
/// bytes `block` borrows, unaligned. Held to memchr on arbitrary bytes by
/// `every_newline_is_found_in_any_bytes` and the `sip_frame` fuzz target.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)]
#[inline(always)]
fn newline_bits(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: see above; no alignment is assumed
    let mask = unsafe {
        _mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_loadu_si128(block.as_ptr().cast::<__m128i>()),
            _mm_set1_epi8(b'\n' as i8),
        ))
    };
    mask as u32
}

/// Bit `i` set where `block[i]` is a newline ([`newline_bits_swar`]).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn newline_bits(block: &[u8; 16]) -> u32 {
    newline_bits_swar(block)
}

/// Bit `i` set where `block[i]` is a newline, eight bytes at a time (a
/// byte's high bit is set where it was a newline; exact: no carry crosses
/// a byte). Where there is no SSE2, and in its test.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn newline_bits_swar(block: &[u8; 16]) -> u32 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let word = |w: u64| {
        let x = w ^ (ONES * u64::from(b'\n'));
        let high = !(((x & LOW7) + LOW7) | x | LOW7);
        // the eight high bits, gathered into the low byte
        ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    };
    let v = u128::from_le_bytes(*block);
    word(v as u64) | (word((v >> 64) as u64) << 8)
}

/// The `\n`-ended lines of `b` (and what follows the last newline).
fn lines_of(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    super::normalize::line_spans(b).map(move |r| &b[r])
}

enum LineCheck {
    /// Yes: the offset of the newline ending it.
    Yes(usize),
    No,
    NeedMore,
}

/// Is there a SIP start line at `p`?
fn start_line_at(buf: &[u8], p: usize) -> LineCheck {
    let rest = &buf[p..];
    if rest.is_empty() {
        return LineCheck::NeedMore;
    }
    // cheap rejection: start lines begin with a letter (method or "SIP/")
    if !rest[0].is_ascii_alphabetic() {
        return LineCheck::No;
    }
    let line = match memchr::memchr(b'\n', rest) {
        Some(i) => &rest[..i],
        None => {
            return if rest.len() > MAX_LINE || !plausible_prefix(rest) {
                LineCheck::No
            } else {
                LineCheck::NeedMore
            }
        }
    };
    if is_start_line(line) {
        LineCheck::Yes(p + line.len())
    } else {
        LineCheck::No
    }
}

/// An incomplete first line that could still become a start line.
fn plausible_prefix(b: &[u8]) -> bool {
    b.iter()
        .take(64)
        .all(|&c| c.is_ascii_graphic() || c == b' ' || c == b'\t' || c == b'\r')
}

const VERSION: &[u8] = b"SIP/2.0";

/// `line` excludes the newline.
pub fn is_start_line(line: &[u8]) -> bool {
    let line = trim_end(line);
    if line.len() >= 11 && line[..7].eq_ignore_ascii_case(VERSION) {
        // status line: SIP/2.0 SP+ 3DIGIT (SP reason)?
        let rest = trim_start(&line[7..]);
        if rest.len() == line.len() - 7 {
            return false; // no space after the version
        }
        return rest.len() >= 3
            && rest[..3].iter().all(u8::is_ascii_digit)
            && rest.get(3).map_or(true, |c| *c == b' ' || *c == b'\t');
    }
    // request line: token SP+ uri SP+ SIP/2.0, read from both ends (the
    // version last, then the token, then a URI without blanks between)
    let Some(mid) = line.len().checked_sub(VERSION.len()).map(|n| &line[..n]) else { return false };
    if !line[mid.len()..].eq_ignore_ascii_case(VERSION) {
        return false;
    }
    let before_version = trim_end_blanks(mid);
    if before_version.len() == mid.len() {
        return false; // no blank before the version
    }
    let tok = before_version.iter().take_while(|c| is_token_char(**c)).count();
    if tok == 0 || tok > 32 || !matches!(before_version.get(tok), Some(b' ' | b'\t')) {
        return false;
    }
    let uri = trim_start(&before_version[tok..]);
    !uri.is_empty() && memchr::memchr2(b' ', b'\t', uri).is_none()
}

/// Bytes of a token (RFC 3261 25.1), looked up.
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        c += 1;
    }
    t
};

pub fn is_token_char(c: u8) -> bool {
    TOKEN[usize::from(c)]
}

/// Without trailing spaces and tabs.
fn trim_end_blanks(mut b: &[u8]) -> &[u8] {
    while let Some((b' ' | b'\t', rest)) = b.split_last() {
        b = rest;
    }
    b
}

fn trim_end(mut b: &[u8]) -> &[u8] {
    while let Some((last, rest)) = b.split_last() {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn trim_start(mut b: &[u8]) -> &[u8] {
    while let Some((first, rest)) = b.split_first() {
        if *first == b' ' || *first == b'\t' {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Finds the next start line at or after `from` (at a line start), and
/// the newline ending it.
fn resync(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let finder = memmem::Finder::new(VERSION);
    for hit in finder.find_iter(&buf[from..]) {
        let hit = from + hit;
        let ls = match memchr::memrchr(b'\n', &buf[from..hit]) {
            Some(i) => from + i + 1,
            None => from,
        };
        // only consider lines where SIP/2.0 opens (status) or closes (request) the line
        if let LineCheck::Yes(line_end) = start_line_at(buf, ls) {
            return Some((ls, line_end));
        }
    }
    None
}

/// Parses Content-Length (or compact `l`) from the header lines.
fn content_length<'b>(mut lines: impl Iterator<Item = &'b [u8]>) -> ContentLength {
    lines.find_map(content_length_of).unwrap_or(ContentLength::Missing)
}

/// The Content-Length a header line declares, if it is that header.
#[inline]
fn content_length_of(line: &[u8]) -> Option<ContentLength> {
    // only a line starting with `c` or `l` (either case) can be
    // Content-Length (a folded line starts with white space, and the name
    // is not trimmed at its start): the rest are passed over unread
    let name_len = match line.first() {
        Some(b'c' | b'C') if line.len() > 14 && line[..14].eq_ignore_ascii_case(b"content-length") => 14,
        Some(b'l' | b'L') => 1,
        _ => return None,
    };
    // the name, white space, then the line's first colon (a name cannot
    // hold one): as cutting at the first colon and trimming the name
    let after = &line[name_len..];
    let ws = after.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let v = trim_end(trim_start(after[ws..].strip_prefix(b":")?));
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return Some(ContentLength::Invalid);
    }
    let n: usize = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    Some(if n <= MAX_BODY {
        ContentLength::Declared(n)
    } else {
        ContentLength::Invalid
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes made of up to `most` of `pieces`, in any order (for the
    /// property tests below).
    fn made_of(pieces: &'static [&'static str], most: usize) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(0..pieces.len(), 0..most)
            .prop_map(move |v| v.into_iter().flat_map(|i| pieces[i].bytes()).collect())
    }

    fn msg(body: &str) -> String {
        format!(
            "INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: a\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            body
        )
    }

    #[test]
    fn start_lines() {
        assert!(is_start_line(b"INVITE sip:bob@x SIP/2.0\r"));
        assert!(is_start_line(b"INVITE  sip:bob@x\tSIP/2.0"));
        assert!(is_start_line(b"SIP/2.0 200 OK"));
        assert!(is_start_line(b"SIP/2.0 180"));
        assert!(is_start_line(b"sip/2.0 486 Busy Here"));
        assert!(!is_start_line(b"SIP/2.0 20 OK"));
        assert!(!is_start_line(b"SIP/2.0200 OK"));
        assert!(!is_start_line(b"Via: SIP/2.0/UDP host"));
        assert!(!is_start_line(b"INVITE sip:bob@x HTTP/1.1"));
        assert!(!is_start_line(b"GET / SIP/2.0 extra"));
        assert!(!is_start_line(b""));
    }

    #[test]
    fn frames_by_content_length_with_compact_form() {
        let m = "SIP/2.0 200 OK\nl: 3\n\nabcSIP/2.0 180 Ringing\r\n\r\n";
        match find(m.as_bytes()) {
            Framing::Message { start: 0, head_end, content_length: ContentLength::Declared(3), garbage: 0 } => {
                assert_eq!(&m[head_end..head_end + 3], "abc");
                assert!(matches!(find(&m.as_bytes()[head_end + 3..]), Framing::Message { start: 0, .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keepalives_are_not_garbage_and_garbage_is_counted() {
        let m = format!("\r\n\r\n{}", msg(""));
        assert!(matches!(find(m.as_bytes()), Framing::Message { start: 4, garbage: 0, .. }));
        let m = format!("\x00\x01junk line\r\nmore junk\r\n{}", msg("x"));
        match find(m.as_bytes()) {
            Framing::Message { start, garbage, .. } => {
                assert_eq!(&m[start..start + 6], "INVITE");
                assert_eq!(garbage, 18);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(find(b"\r\n\r\n"), Framing::Garbage { discard: 4, garbage: 0 });
    }

    #[test]
    fn resumed_search_agrees_with_a_full_one() {
        let crlf = msg("v=0\r\n");
        let lf = crlf.replace("\r\n", "\n");
        let mixed = crlf.replacen("\r\n", "\n", 3);
        for m in [crlf, lf, mixed] {
            let b = m.as_bytes();
            // one byte at a time, then in uneven chunks
            for step in [1, 2, 3, 7, 64] {
                let mut scanned = 0;
                let mut n = 0;
                while n < b.len() {
                    n = (n + step).min(b.len());
                    let full = find(&b[..n]);
                    assert_eq!(find_from(&b[..n], scanned), full, "at {n} of {} (step {step})", b.len());
                    scanned = if matches!(full, Framing::Partial { start: 0, .. }) { n } else { 0 };
                }
            }
        }
    }

    #[test]
    fn partial_heads_wait_and_runaway_heads_resync() {
        let m = msg("");
        for cut in 1..m.len() - 1 {
            match find(&m.as_bytes()[..cut]) {
                Framing::Partial { start: 0, .. } | Framing::Garbage { discard: 0, .. } => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        let mut runaway = b"INVITE sip:a SIP/2.0\r\n".to_vec();
        runaway.resize(MAX_HEAD + 100, b'a');
        assert!(matches!(find(&runaway), Framing::Garbage { discard: 22, .. }));
    }

    #[test]
    fn content_length_forms() {
        assert_eq!(content_length(lines_of(b"Content-Length : 12\r\n")), ContentLength::Declared(12));
        assert_eq!(content_length(lines_of(b"content-length:bad\r\n")), ContentLength::Invalid);
        assert_eq!(content_length(lines_of(b"L:\t7 \r\n")), ContentLength::Declared(7));
        assert_eq!(content_length(lines_of(b"Call-ID: l: 4\r\n")), ContentLength::Missing);
        assert_eq!(content_length(lines_of(b"Content-Length: 99999999999\r\n")), ContentLength::Invalid);
    }

    /// The memmem search for the head's end and the memchr walk for
    /// Content-Length that the one walk of `find_lines` replaced, against it
    /// on text made of what matters to framing.
    mod one_walk {
        use super::*;
        use proptest::prelude::*;

        fn old_head_end(buf: &[u8], from_newline: usize) -> Option<usize> {
            let hay = &buf[from_newline..];
            let crlf = memmem::find(hay, b"\n\r\n");
            let lf = memmem::find(&hay[..crlf.map_or(hay.len(), |j| j + 1)], b"\n\n");
            match (lf, crlf) {
                (Some(j), _) => Some(from_newline + j + 2),
                (None, Some(j)) => Some(from_newline + j + 3),
                (None, None) => None,
            }
        }

        const PIECES: &[&str] = &[
            "\r", "\n", "\r\n", "a", ":", " ", "Content-Length: 5", "content-length :x", "l:3", "L: 12 ", "c",
            "SIP/2.0 200 OK", "INVITE sip:a SIP/2.0", "Call-ID: l: 4", "xyz",
        ];

        fn text() -> impl Strategy<Value = Vec<u8>> {
            made_of(PIECES, 30)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5000))]
            #[test]
            fn agrees_with_the_searches_it_replaced(buf in text()) {
                let mut nl = Vec::new();
                let f = find_lines(&buf, &mut nl);
                prop_assert_eq!(f, find(&buf));
                let (start, end) = match f {
                    Framing::Message { start, head_end, content_length, .. } => {
                        let line_end = start + memchr::memchr(b'\n', &buf[start..]).unwrap();
                        prop_assert_eq!(Some(head_end), old_head_end(&buf, line_end));
                        let old_cl = content_length_of_block(&buf[line_end + 1..head_end]);
                        prop_assert_eq!(content_length, old_cl);
                        (start, head_end)
                    }
                    Framing::Partial { start, .. } => {
                        if let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
                            prop_assert_eq!(old_head_end(&buf, start + i), None);
                        }
                        (start, buf.len())
                    }
                    Framing::Garbage { .. } => return Ok(()),
                };
                let all: Vec<u32> = memchr::memchr_iter(b'\n', &buf[start..end]).map(|i| i as u32).collect();
                prop_assert_eq!(&nl, &all);
                let head = Head::new(&buf[start..end], &nl);
                let spans: Vec<_> = head.spans().collect();
                let old: Vec<_> = crate::sip::normalize::line_spans(&buf[start..end]).collect();
                prop_assert_eq!(spans, old);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5000))]
            #[test]
            fn every_newline_is_found_in_any_bytes(
                buf in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(0x8a_u8), Just(0x0b), Just(0x09), any::<u8>()], 0..80),
                from in 0usize..90,
                stop in 0usize..20,
            ) {
                let mut seen = Vec::new();
                each_newline(&buf, from, |i| {
                    seen.push(i);
                    seen.len() <= stop
                });
                let all: Vec<usize> = memchr::memchr_iter(b'\n', &buf).filter(|i| *i >= from).take(stop + 1).collect();
                prop_assert_eq!(seen, all);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5000))]
            #[test]
            fn both_newline_masks_mark_every_newline(
                block in proptest::array::uniform16(prop_oneof![Just(b'\n'), Just(0x8a_u8), Just(0x0b), any::<u8>()]),
            ) {
                let want = block.iter().enumerate().fold(0u32, |m, (i, c)| m | (u32::from(*c == b'\n') << i));
                prop_assert_eq!(newline_bits(&block), want);
                prop_assert_eq!(newline_bits_swar(&block), want);
            }
        }

        proptest! {
            #[test]
            fn wrong_newlines_give_wrong_lines_not_a_panic(
                buf in proptest::collection::vec(any::<u8>(), 0..40),
                nl in proptest::collection::vec(0u32..60, 0..8),
            ) {
                let head = Head { bytes: &buf, nl: &nl };
                for span in head.spans() {
                    prop_assert!(span.start <= span.end && span.end <= buf.len());
                }
                let _ = crate::sip::Parser::default().parse_head(head);
            }
        }

        /// Content-Length read from a header block split at its newlines.
        fn content_length_of_block(b: &[u8]) -> ContentLength {
            content_length(b.split(|c| *c == b'\n'))
        }
    }

    /// The start-line and Content-Length checks against the forms they
    /// replaced (a scan from the front; a colon found, the name trimmed),
    /// on lines made of what matters to them.
    mod line_checks {
        use super::*;
        use proptest::prelude::*;

        fn old_is_start_line(line: &[u8]) -> bool {
            let line = trim_end(line);
            if line.len() >= 11 && line[..7].eq_ignore_ascii_case(VERSION) {
                let rest = trim_start(&line[7..]);
                if rest.len() == line.len() - 7 {
                    return false;
                }
                return rest.len() >= 3
                    && rest[..3].iter().all(u8::is_ascii_digit)
                    && rest.get(3).map_or(true, |c| *c == b' ' || *c == b'\t');
            }
            let tok = line
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(c))
                .count();
            if tok == 0 || tok > 32 || line.len() < tok + 1 + 1 + 1 + 7 {
                return false;
            }
            let after = &line[tok..];
            if !matches!(after[0], b' ' | b'\t') {
                return false;
            }
            let after = trim_start(after);
            let uri = after.iter().take_while(|c| !matches!(c, b' ' | b'\t')).count();
            if uri == 0 {
                return false;
            }
            let ver = trim_start(&after[uri..]);
            ver.len() == 7 && ver.eq_ignore_ascii_case(VERSION) && after.len() > uri
        }

        fn old_content_length_of(line: &[u8]) -> Option<ContentLength> {
            if !line.first().is_some_and(|c| matches!(c, b'c' | b'C' | b'l' | b'L')) {
                return None;
            }
            let colon = memchr::memchr(b':', line)?;
            let name = trim_end(&line[..colon]);
            if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
                return None;
            }
            let v = trim_end(trim_start(&line[colon + 1..]));
            if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
                return Some(ContentLength::Invalid);
            }
            let n: usize = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
            Some(if n <= MAX_BODY { ContentLength::Declared(n) } else { ContentLength::Invalid })
        }

        const PIECES: &[&str] = &[
            "INVITE", "OPTIONS", "SIP/2.0", "sip/2.0", "SIP/2.1", "SIP/2.0/UDP", " ", "\t", "  ", "\r", "\x0c",
            "sip:a@b", "x", "200", "20", "2000", " OK", "Content-Length", "content-LENGTH", "l", "L", "c", ":", "::",
            "12", "0", "99999999999", "-", "~", "@", "\u{e9}", "\u{0}", "Content-Lengthy", ";",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];

        fn line() -> impl Strategy<Value = Vec<u8>> {
            made_of(PIECES, 9)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20000))]
            #[test]
            fn agree_with_the_forms_they_replaced(l in line()) {
                prop_assert_eq!(is_start_line(&l), old_is_start_line(&l), "{:?}", String::from_utf8_lossy(&l));
                prop_assert_eq!(content_length_of(&l), old_content_length_of(&l), "{:?}", String::from_utf8_lossy(&l));
            }
        }

        #[test]
        fn the_pieces_make_both_answers() {
            // the property above sees lines of every kind
            for (l, start) in [
                (&b"INVITE sip:a@b SIP/2.0"[..], true),
                (b"INVITE  sip:a@b\tSIP/2.0 \r", true),
                (b"INVITE sip:a@b x SIP/2.0", false),
                (b"INVITE sip:a@bSIP/2.0", false),
                (b"SIP/2.0 200 OK", true),
                (b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa sip:a SIP/2.0", true),
                (b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa sip:a SIP/2.0", false),
            ] {
                assert_eq!((is_start_line(l), old_is_start_line(l)), (start, start), "{:?}", String::from_utf8_lossy(l));
            }
            for l in [&b"Content-Length\r\x0c: 12 "[..], b"l :0", b"content-length:x"] {
                assert!(content_length_of(l).is_some() && content_length_of(l) == old_content_length_of(l));
            }
            assert_eq!(content_length_of(b"Content-Lengthy: 1"), None);
        }
    }
}
