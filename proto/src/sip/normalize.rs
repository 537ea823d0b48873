//! The tolerant step in front of rsip.
//!
//! rsip 0.4 is strict where real traffic is not (see `docs/sip-parsing.md`):
//! it silently drops compact header names (`i:`, `f:`, `t:`...), rejects
//! folded lines, whitespace before the colon, bare-LF line endings and
//! non-UTF-8 bytes, and takes everything after the headers as the body. This
//! step rewrites a message head into the canonical form rsip accepts:
//!
//! * line endings become CRLF, folded continuation lines are joined;
//! * compact header names become their long form, whitespace around the
//!   colon is removed;
//! * non-UTF-8 bytes become U+FFFD (display names from Latin-1 phones);
//! * runs of spaces in the start line collapse to one;
//! * only the headers the leg logic reads are kept (first Via value only),
//!   and no body is passed: rsip does less work and cannot misframe.

use super::{Head, Method};

/// Compact form (RFC 3261 7.3.3 and later RFCs) to long form.
pub fn expand_compact(name: &[u8]) -> Option<&'static str> {
    if name.len() != 1 {
        return None;
    }
    Some(match name[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'f' => "From",
        b't' => "To",
        b'v' => "Via",
        b'm' => "Contact",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'e' => "Content-Encoding",
        b'k' => "Supported",
        b's' => "Subject",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'u' => "Allow-Events",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        b'n' => "Identity-Info",
        _ => return None,
    })
}

/// Headers the engine reads; everything else is dropped before rsip.
pub const CORE_HEADERS: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "P-Asserted-Identity",
    "Remote-Party-ID",
    "Reason",
    "Session-Expires",
];

/// Headers that may appear once in the output (the first wins).
const SINGLE: &[&str] = &["Via", "P-Asserted-Identity", "Remote-Party-ID"];

/// What the normaliser learnt on its way, before rsip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prelude {
    /// `Some` for requests.
    pub method: Option<Method>,
    /// Status code for responses.
    pub status: Option<u16>,
    /// The CSeq method, if a CSeq header was present.
    pub cseq_method: Option<Method>,
    /// Header lines seen (after unfolding).
    pub headers: usize,
    /// What the normaliser had to repair, for the diagnostics counters.
    pub repairs: Repairs,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    pub compact: bool,
    pub folded: bool,
    pub space_before_colon: bool,
    pub bare_lf: bool,
    pub non_utf8: bool,
    /// Header lines without a colon, skipped.
    pub bad_lines: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("no start line")]
    NoStartLine,
}

/// Rewrites `head` (start line and headers, with or without the final empty
/// line) into `out`. `extra` names further headers to keep (any case).
pub fn normalize(head: &[u8], extra: &[String], out: &mut String) -> Result<Prelude, NormalizeError> {
    out.clear();
    let mut nl = Vec::new();
    normalize_into(Head::scan(head, &mut nl), extra, out)
}

/// Where the normaliser's work goes: the canonical text (for rsip), each
/// kept header as it is read (for our reader), or both.
pub(crate) trait HeadSink {
    /// The canonical text, if this sink keeps it (appended to).
    fn text(&mut self) -> Option<&mut String>;
    /// One kept header, in the order of the canonical text: its long name
    /// and its value exactly as that text holds it.
    fn header(&mut self, name: &str, value: &str);
    /// The start line (and its CRLF) is written: headers follow.
    fn start_line_written(&mut self) {}
}

impl HeadSink for String {
    fn text(&mut self) -> Option<&mut String> {
        Some(self)
    }

    fn header(&mut self, _: &str, _: &str) {}
}

/// [`normalize`] into any [`HeadSink`]: the same rewriting, whether or not
/// the canonical text is written.
pub(crate) fn normalize_into(head: Head<'_>, extra: &[String], sink: &mut impl HeadSink) -> Result<Prelude, NormalizeError> {
    let mut repairs = Repairs::default();
    let bytes = head.bytes();
    let utf8 = Utf8Head::new(bytes);
    let mut lines = head.spans().map(|r| &bytes[r]);
    let first = lines.next().ok_or(NormalizeError::NoStartLine)?;
    if !first.ends_with(b"\r") && head.has_newline() {
        repairs.bare_lf = true;
    }
    let first = trim(first);
    if first.is_empty() {
        return Err(NormalizeError::NoStartLine);
    }
    // start line: collapse whitespace runs to single spaces
    let mut method = None;
    let mut status = None;
    for (i, word) in first
        .split(|c| *c == b' ' || *c == b'\t')
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let is_version = word.eq_ignore_ascii_case(b"SIP/2.0");
        if i == 0 && !is_version {
            method = Some(Method::from_token(word));
        }
        if i == 1 && method.is_none() {
            status = std::str::from_utf8(word).ok().and_then(|s| s.parse().ok());
        }
        // the version in canonical case; any other word as text (a
        // non-UTF-8 byte is a repair whether or not the text is kept)
        let word = if is_version && (i == 0 || (i == 2 && method.is_some())) {
            std::borrow::Cow::Borrowed("SIP/2.0")
        } else {
            utf8.text_of(word, &mut repairs)
        };
        if let Some(out) = sink.text() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&word);
        }
    }
    if let Some(out) = sink.text() {
        out.push_str("\r\n");
    }
    sink.start_line_written();

    // header lines, unfolded on the fly: a logical line is emitted when the
    // next physical line does not continue it (no allocation unless folded)
    let mut state = HeaderState {
        extra,
        cseq_method: None,
        seen_single: [false; SINGLE.len()],
        count: 0,
    };
    let mut pending: Option<std::borrow::Cow<'_, [u8]>> = None;
    for raw in lines {
        let has_cr = raw.ends_with(b"\r");
        let line = if has_cr { &raw[..raw.len() - 1] } else { raw };
        if line.is_empty() {
            break; // end of headers
        }
        if !has_cr {
            repairs.bare_lf = true;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(prev) = pending.as_mut() {
                repairs.folded = true;
                let owned = prev.to_mut();
                owned.push(b' ');
                owned.extend_from_slice(trim(line));
                continue;
            }
        }
        if let Some(prev) = pending.replace(std::borrow::Cow::Borrowed(line)) {
            state.header(&prev, &utf8, sink, &mut repairs);
        }
    }
    if let Some(prev) = pending {
        state.header(&prev, &utf8, sink, &mut repairs);
    }
    let (cseq_method, count) = (state.cseq_method, state.count);
    if let Some(out) = sink.text() {
        out.push_str("\r\n");
    }
    Ok(Prelude {
        method,
        status,
        cseq_method,
        headers: count,
        repairs,
    })
}

/// Where each `\n`-ended line of `b` lies (without the `\n`; a last
/// line without one too, empty if `b` ends in `\n`), found by memchr.
pub(crate) fn line_spans(b: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    memchr::memchr_iter(b'\n', b)
        .chain(std::iter::once(b.len()))
        .scan(0, |from, end| {
            let span = *from..end;
            *from = end + 1;
            Some(span)
        })
}

struct HeaderState<'e> {
    extra: &'e [String],
    cseq_method: Option<Method>,
    seen_single: [bool; SINGLE.len()],
    count: usize,
}

impl HeaderState<'_> {
    /// Writes one logical header line in canonical form, if it is kept.
    fn header<'a: 'b, 'b>(&mut self, line: &'b [u8], utf8: &Utf8Head<'a>, sink: &mut impl HeadSink, repairs: &mut Repairs) {
        self.count += 1;
        let colon = match memchr::memchr(b':', line) {
            Some(i) => i,
            None => {
                repairs.bad_lines += 1;
                return;
            }
        };
        let raw_name = &line[..colon];
        let name_trim = trim(raw_name);
        if name_trim.len() != raw_name.len() {
            repairs.space_before_colon = true;
        }
        let name = match expand_compact(name_trim) {
            Some(l) => {
                repairs.compact = true;
                l.as_bytes()
            }
            None => name_trim,
        };
        // only the kept headers (a compact `s:` Subject is dropped like a
        // long one)
        let Some(long) = canonical(name, self.extra) else { return };
        let value = trim(&line[colon + 1..]);
        if long == "CSeq" {
            if let Some(m) = value
                .split(|c| *c == b' ' || *c == b'\t')
                .filter(|w| !w.is_empty())
                .nth(1)
            {
                self.cseq_method = Some(Method::from_token(m));
            }
        }
        if let Some(i) = SINGLE.iter().position(|s| *s == long) {
            if self.seen_single[i] {
                return;
            }
            self.seen_single[i] = true;
        }
        let value = if long == "Via" {
            first_value(value)
        } else {
            value
        };
        let value = utf8.text_of(value, repairs);
        if let Some(out) = sink.text() {
            out.push_str(long);
            out.push_str(": ");
            out.push_str(&value);
            out.push_str("\r\n");
        }
        sink.header(long, &value);
    }
}

/// Matches a header name against the kept set, returning its canonical
/// spelling (the configured spelling for extra headers).
fn canonical<'e>(name: &[u8], extra: &'e [String]) -> Option<&'e str> {
    CORE_HEADERS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .find(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The first comma-separated value, outside quotes and angle brackets
/// (a backslash escapes the next byte inside quotes).
pub fn first_value(v: &[u8]) -> &[u8] {
    let mut quoted = false;
    let mut angle = 0u32;
    let mut i = 0;
    // from one byte that can change the state to the next
    while i < v.len() {
        let rest = &v[i..];
        let next = if quoted {
            memchr::memchr2(b'"', b'\\', rest)
        } else if angle > 0 {
            memchr::memchr3(b'"', b'<', b'>', rest)
        } else {
            memchr::memchr3(b',', b'"', b'<', rest)
        };
        let Some(j) = next else { break };
        i += j;
        match v[i] {
            b'\\' => i += 1, // quoted: the escaped byte is skipped
            b'"' => quoted = !quoted,
            b'<' => angle += 1,
            b'>' => angle -= 1,
            _ => return trim(&v[..i]), // a comma outside quotes and brackets
        }
        i += 1;
    }
    v
}

/// A head's bytes, and the same as text when they are all UTF-8 (as
/// nearly every head is): the head is checked once, and a part of it is
/// then taken as text without checking it again.
struct Utf8Head<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Utf8Head<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Utf8Head { bytes, text: std::str::from_utf8(bytes).ok() }
    }

    /// `part` as text (see [`text_of`]): taken from the checked head when
    /// it lies within it (cut at ASCII bytes, so at character
    /// boundaries), else checked on its own (an unfolded line is a copy).
    fn text_of<'b>(&self, part: &'b [u8], repairs: &mut Repairs) -> std::borrow::Cow<'b, str>
    where
        'a: 'b,
    {
        if let Some(text) = self.text {
            let off = (part.as_ptr() as usize).wrapping_sub(self.bytes.as_ptr() as usize);
            if let Some(t) = off.checked_add(part.len()).and_then(|end| text.get(off..end)) {
                return std::borrow::Cow::Borrowed(t);
            }
        }
        text_of(part, repairs)
    }
}

/// `bytes` as text, a byte that is not UTF-8 replaced by U+FFFD (and
/// counted as a repair).
fn text_of<'b>(bytes: &'b [u8], repairs: &mut Repairs) -> std::borrow::Cow<'b, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => {
            repairs.non_utf8 = true;
            String::from_utf8_lossy(bytes)
        }
    }
}

pub fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &[u8]) -> (String, Prelude) {
        let mut out = String::new();
        let p = normalize(s, &[], &mut out).unwrap();
        (out, p)
    }

    #[test]
    fn compact_folded_lf_and_space_before_colon() {
        let (out, p) = norm(
            b"INVITE  sip:bob@x SIP/2.0\ni : abc\nf: <sip:a@x>;tag=1\nt: <sip:bob@x>\nv: SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g\nCSeq: 1\n  INVITE\nUser-Agent: dropped\n\n",
        );
        assert_eq!(
            out,
            "INVITE sip:bob@x SIP/2.0\r\nCall-ID: abc\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n\r\n"
        );
        assert_eq!(p.method, Some(Method::Invite));
        assert_eq!(p.cseq_method, Some(Method::Invite));
        let r = p.repairs;
        assert!(r.compact && r.folded && r.space_before_colon && r.bare_lf && !r.non_utf8);
    }

    #[test]
    fn latin1_display_name_becomes_valid_utf8() {
        let (out, p) = norm(b"SIP/2.0 200 OK\r\nFrom: \"Jos\xe9\" <sip:j@x>;tag=9\r\n\r\n");
        assert!(out.contains("From: \"Jos\u{fffd}\" <sip:j@x>;tag=9\r\n"));
        assert_eq!(p.status, Some(200));
        assert!(p.repairs.non_utf8);
    }

    #[test]
    fn extras_are_kept_and_first_value_respects_quotes() {
        let mut out = String::new();
        normalize(b"BYE sip:x SIP/2.0\r\nx-cid: 77\r\nX-Other: no\r\n", &["X-CID".into()], &mut out).unwrap();
        assert_eq!(out, "BYE sip:x SIP/2.0\r\nX-CID: 77\r\n\r\n");
        assert_eq!(first_value(b"\"a, b\" <sip:x>, <sip:y>"), b"\"a, b\" <sip:x>");
        assert_eq!(first_value(b"<sip:x;a=b,c>"), b"<sip:x;a=b,c>");
    }

    #[test]
    fn header_line_without_colon_is_skipped_and_counted() {
        let (out, p) = norm(b"BYE sip:x SIP/2.0\r\nnot a header\r\nCall-ID: 1\r\n");
        assert_eq!(out, "BYE sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n");
        assert_eq!(p.repairs.bad_lines, 1);
    }
}
