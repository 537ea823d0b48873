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
    find_from(buf, 0)
}

/// Like [`find`], for a stream buffer that only grew since an earlier call
/// returned `Partial { start: 0, .. }` when it held `scanned` bytes: the
/// search for the end of the headers resumes near there instead of
/// rescanning them, so a head arriving in many small segments costs linear
/// time, not quadratic.
pub fn find_from(buf: &[u8], scanned: usize) -> Framing {
    let mut p = 0;
    while p < buf.len() && (buf[p] == b'\r' || buf[p] == b'\n') {
        p += 1;
    }
    let crlf = p;
    let start = match start_line_at(buf, p) {
        LineCheck::Yes => p,
        LineCheck::NeedMore => return Framing::Garbage { discard: crlf, garbage: 0 },
        LineCheck::No => match resync(buf, p) {
            Some(s) => s,
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
    let line_end = match memchr::memchr(b'\n', &buf[start..]) {
        Some(i) => start + i,
        None => return Framing::Partial { start, garbage },
    };
    // a newline at i was fully checked earlier if i + 2 < scanned
    let resume = if start == 0 && scanned > line_end + 2 {
        line_end + memchr::memrchr(b'\n', &buf[line_end..scanned.min(buf.len()) - 2]).unwrap_or(0)
    } else {
        line_end
    };
    match head_end(buf, resume) {
        Some(end) => Framing::Message {
            start,
            head_end: end,
            content_length: content_length(&buf[line_end + 1..end]),
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

/// Offset just past the empty line ending the headers, searching from the
/// newline ending the start line.
fn head_end(buf: &[u8], from_newline: usize) -> Option<usize> {
    // the first newline followed by CRLF or by a bare LF: two vectorised
    // searches instead of one per header line
    static CRLF: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    static LF: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    let hay = buf.get(from_newline..)?;
    let crlf = CRLF.get_or_init(|| memchr::memmem::Finder::new(b"\n\r\n")).find(hay);
    // a bare-LF end counts only if it comes first
    let lf = LF.get_or_init(|| memchr::memmem::Finder::new(b"\n\n")).find(&hay[..crlf.map_or(hay.len(), |j| j + 1)]);
    match (lf, crlf) {
        (Some(j), _) => Some(from_newline + j + 2),
        (None, Some(j)) => Some(from_newline + j + 3),
        (None, None) => None,
    }
}

enum LineCheck {
    Yes,
    No,
    NeedMore,
}

/// Is there a SIP start line at `p`? `Yes` carries the end of the line.
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
        LineCheck::Yes
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
    // request line: token SP+ uri SP+ SIP/2.0
    let tok = line.iter().take_while(|c| is_token_char(**c)).count();
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

pub fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
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

/// Finds the next start line at or after `from` (at a line start).
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let finder = memmem::Finder::new(VERSION);
    for hit in finder.find_iter(&buf[from..]) {
        let hit = from + hit;
        let ls = match memchr::memrchr(b'\n', &buf[from..hit]) {
            Some(i) => from + i + 1,
            None => from,
        };
        // only consider lines where SIP/2.0 opens (status) or closes (request) the line
        if let LineCheck::Yes = start_line_at(buf, ls) {
            return Some(ls);
        }
    }
    None
}

/// Parses Content-Length (or compact `l`) from the header block.
fn content_length(headers: &[u8]) -> ContentLength {
    // lines found with memchr (vectorised), not byte by byte
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', headers).chain(std::iter::once(headers.len()));
    for end in ends {
        let line = &headers[start..end];
        start = (end + 1).min(headers.len());
        // only a line starting with `c` or `l` (either case) can be
        // Content-Length (a folded line starts with white space, and the
        // name is not trimmed at its start): the rest are passed over unread
        if !line.first().is_some_and(|c| matches!(c, b'c' | b'C' | b'l' | b'L')) {
            continue;
        }
        let colon = match memchr::memchr(b':', line) {
            Some(i) => i,
            None => continue,
        };
        let name = trim_end(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = trim_end(trim_start(&line[colon + 1..]));
            if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
                return ContentLength::Invalid;
            }
            let n: usize = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
            return if n <= MAX_BODY {
                ContentLength::Declared(n)
            } else {
                ContentLength::Invalid
            };
        }
    }
    ContentLength::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(content_length(b"Content-Length : 12\r\n"), ContentLength::Declared(12));
        assert_eq!(content_length(b"content-length:bad\r\n"), ContentLength::Invalid);
        assert_eq!(content_length(b"L:\t7 \r\n"), ContentLength::Declared(7));
        assert_eq!(content_length(b"Call-ID: l: 4\r\n"), ContentLength::Missing);
        assert_eq!(content_length(b"Content-Length: 99999999999\r\n"), ContentLength::Invalid);
    }
}
