//! SIP: framing, the tolerant normalising step, rsip at the edge, and the
//! small owned [`SipMessage`] summary everything past this module sees.

mod frame;
mod normalize;
mod sdp;

// the layer's public surface, in one place (framing and normalising are
// public for the benchmarks and the fuzz targets of each step)
pub use frame::{find, find_from, find_lines, is_start_line, Head, is_token_char, ContentLength, Framing, MAX_HEAD};
pub use normalize::{normalize, Repairs};
use normalize::normalize_into;
pub use sdp::media_key;
use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;
use compact_str::CompactString;
use std::borrow::Cow;
use serde::{Deserialize, Serialize};

/// SIP methods the engine distinguishes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Update,
    Prack,
    Refer,
    Info,
    Options,
    Register,
    Subscribe,
    Notify,
    Publish,
    Message,
    Other,
}

impl Method {
    pub fn from_token(t: &[u8]) -> Method {
        const TABLE: [(&[u8], Method); 14] = [
            (b"INVITE", Method::Invite),
            (b"ACK", Method::Ack),
            (b"BYE", Method::Bye),
            (b"CANCEL", Method::Cancel),
            (b"UPDATE", Method::Update),
            (b"PRACK", Method::Prack),
            (b"REFER", Method::Refer),
            (b"INFO", Method::Info),
            (b"OPTIONS", Method::Options),
            (b"REGISTER", Method::Register),
            (b"SUBSCRIBE", Method::Subscribe),
            (b"NOTIFY", Method::Notify),
            (b"PUBLISH", Method::Publish),
            (b"MESSAGE", Method::Message),
        ];
        TABLE
            .iter()
            .find(|(n, _)| t.eq_ignore_ascii_case(n))
            .map_or(Method::Other, |(_, m)| *m)
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Info => "INFO",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Other => "OTHER",
        }
    }

    /// Methods that can start, change or end an INVITE dialog. Everything
    /// else (REGISTER, OPTIONS, SUBSCRIBE/NOTIFY, PUBLISH, MESSAGE) is counted
    /// and skipped before rsip ever sees it.
    pub fn affects_legs(self) -> bool {
        matches!(
            self,
            Method::Invite
                | Method::Ack
                | Method::Bye
                | Method::Cancel
                | Method::Update
                | Method::Prack
                | Method::Refer
                | Method::Info
        )
    }

    fn from_rsip(m: &rsip::Method) -> Method {
        use rsip::Method as R;
        match m {
            R::Invite => Method::Invite,
            R::Ack => Method::Ack,
            R::Bye => Method::Bye,
            R::Cancel => Method::Cancel,
            R::Update => Method::Update,
            R::PRack => Method::Prack,
            R::Refer => Method::Refer,
            R::Info => Method::Info,
            R::Options => Method::Options,
            R::Register => Method::Register,
            R::Subscribe => Method::Subscribe,
            R::Notify => Method::Notify,
            R::Publish => Method::Publish,
            R::Message => Method::Message,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Request(Method),
    Response(u16),
}

/// From, To or P-Asserted-Identity: the URI's user part and the tag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameAddr {
    pub user: Option<CompactString>,
    pub tag: Option<CompactString>,
}

/// What the leg logic needs from one SIP message. Owned and small; no rsip
/// type escapes this module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipMessage {
    pub kind: Kind,
    pub call_id: String,
    pub from: NameAddr,
    pub to: NameAddr,
    /// Request-URI user part (requests only).
    pub ruri_user: Option<CompactString>,
    pub cseq: u32,
    pub cseq_method: Method,
    /// Branch of the top Via.
    pub via_branch: Option<CompactString>,
    /// P-Asserted-Identity (else Remote-Party-ID) user part.
    pub asserted_user: Option<CompactString>,
    pub reason: Option<String>,
    /// Session-Expires delta-seconds.
    pub session_expires: Option<u32>,
    /// Other kept headers (correlation, transfer, configured extras), as
    /// (canonical name, value).
    pub headers: Vec<(String, String)>,
    /// Where an INVITE's SDP offer sends its audio, as a key
    /// ([`media_key`]); set by the engine from the body. In memory only.
    #[serde(skip)]
    pub media: Option<std::num::NonZeroU64>,
}

impl SipMessage {
    pub fn method(&self) -> Option<Method> {
        match self.kind {
            Kind::Request(m) => Some(m),
            Kind::Response(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Response(c) => Some(c),
            Kind::Request(_) => None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a message was not turned into a [`SipMessage`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no SIP start line")]
    NoStartLine,
    #[error("missing Call-ID")]
    MissingCallId,
    #[error("missing or unreadable From")]
    BadFrom,
    #[error("missing or unreadable To")]
    BadTo,
    #[error("missing or unreadable CSeq")]
    BadCSeq,
    #[error("unknown method")]
    UnknownMethod,
    #[error("bad status code")]
    BadStatus,
}

impl ParseError {
    /// Stable key for the parse-error counters.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::NoStartLine => "no_start_line",
            ParseError::MissingCallId => "missing_call_id",
            ParseError::BadFrom => "bad_from",
            ParseError::BadTo => "bad_to",
            ParseError::BadCSeq => "bad_cseq",
            ParseError::UnknownMethod => "unknown_method",
            ParseError::BadStatus => "bad_status",
        }
    }
}

/// The result of looking at one framed message head.
#[derive(Debug)]
pub enum Parsed {
    /// A message that matters to legs.
    Message {
        msg: Box<SipMessage>,
        repairs: Repairs,
        /// rsip rejected the normalised text; fields were salvaged by our
        /// own reader (key: which rsip step failed).
        rsip_rejected: Option<&'static str>,
    },
    /// A well-formed message of a method that does not affect legs
    /// (REGISTER, OPTIONS, NOTIFY...), or a response to one.
    Ignored(Method),
}

/// Reusable scratch space for parsing, so the hot path does not allocate
/// for the normalised text.
#[derive(Default)]
pub struct Parser {
    scratch: String,
    /// The newlines of a head given without them ([`Parser::parse`]).
    nl: Vec<u32>,
    /// Extra header names to keep (configured correlation headers).
    pub extra_headers: Vec<String>,
}

impl Parser {
    pub fn new(extra_headers: Vec<String>) -> Self {
        Parser {
            scratch: String::with_capacity(1024),
            nl: Vec::with_capacity(32),
            extra_headers,
        }
    }

    /// Parses a message head (start line and headers; the body is not needed).
    pub fn parse(&mut self, head: &[u8]) -> Result<Parsed, ParseError> {
        self.scan_and_parse(head, false)
    }

    /// As [`Parser::parse`], for a head whose newlines the framing found
    /// ([`find_lines`]).
    pub fn parse_head(&mut self, head: Head<'_>) -> Result<Parsed, ParseError> {
        self.parse_as(head, false)
    }

    /// As [`Parser::parse`], but every message that matters goes through
    /// rsip, as every one did before rsip was kept for what can start a leg:
    /// for tests that hold the two paths to the same answer.
    #[doc(hidden)]
    pub fn parse_with_rsip(&mut self, head: &[u8]) -> Result<Parsed, ParseError> {
        self.scan_and_parse(head, true)
    }

    /// Finds the head's newlines (in the parser's scratch list), then
    /// parses it.
    fn scan_and_parse(&mut self, head: &[u8], all_rsip: bool) -> Result<Parsed, ParseError> {
        let mut nl = std::mem::take(&mut self.nl);
        let parsed = self.parse_as(Head::scan(head, &mut nl), all_rsip);
        self.nl = nl;
        parsed
    }

    fn parse_as(&mut self, head: Head<'_>, all_rsip: bool) -> Result<Parsed, ParseError> {
        // most of a PBX's signalling cannot touch a leg (OPTIONS pings,
        // REGISTER refreshes, presence): the start line, or a response's
        // CSeq line, says so before any rewriting
        let quick = quick_method(head);
        if let Some((request, m)) = quick {
            let matters = if request { m.affects_legs() } else { matches!(m, Method::Invite | Method::Update) };
            if !matters && m != Method::Other {
                return Ok(Parsed::Ignored(m));
            }
        }
        // rsip (the design card's parser) reads the start line of what can
        // start a leg: a request outside any dialog (an initial INVITE, its
        // CANCEL, a REFER outside a dialog), whose method and Request-URI
        // are where rsip's strict grammar says something. Every header is
        // settled by our reader, fed each kept header by the normaliser as
        // it finds it: the same names and values as the canonical text rsip
        // would read (rsip re-reading the lines the normaliser wrote told us
        // nothing, at about 1.3 us an INVITE). A message is read in one
        // pass; only a request's start line is written out as text.
        let response = matches!(quick, Some((false, _)));
        self.scratch.clear();
        let mut reader = None;
        let prelude = if all_rsip {
            normalize_into(head, &self.extra_headers, &mut self.scratch)
        } else if response {
            let mut r = HeaderReader::default();
            let p = normalize_into(head, &self.extra_headers, &mut r);
            reader = Some(r);
            p
        } else {
            let mut both = StartLineAndReader {
                text: &mut self.scratch,
                reader: HeaderReader::default(),
                headers: false,
            };
            let p = normalize_into(head, &self.extra_headers, &mut both);
            reader = Some(both.reader);
            p
        }
        .map_err(|_| ParseError::NoStartLine)?;
        // the sink was chosen by the quick look: it must agree with the
        // normaliser that this is a response (else a request would reach
        // rsip with no text)
        debug_assert!(!response || prelude.method.is_none());
        let relevant = match (prelude.method, prelude.cseq_method) {
            (Some(m), _) => m,
            (None, Some(m)) => m,
            (None, None) => return Err(ParseError::BadCSeq),
        };
        if relevant == Method::Other {
            return Err(if prelude.method.is_some() {
                ParseError::UnknownMethod
            } else {
                ParseError::BadCSeq
            });
        }
        // responses matter only to INVITE and UPDATE transactions (a 200 to
        // BYE or CANCEL changes nothing a leg records)
        let matters = match prelude.method {
            Some(_) => relevant.affects_legs(),
            None => matches!(relevant, Method::Invite | Method::Update),
        };
        if !matters {
            return Ok(Parsed::Ignored(relevant));
        }
        if prelude.method.is_none() && prelude.status.is_none() {
            return Err(ParseError::BadStatus);
        }
        if let Some(reader) = reader {
            if prelude.method.is_none() || reader.in_dialog() {
                // a Request-URI is read only where a leg starts (nothing in
                // a dialog uses it, so it is neither read nor hashed there)
                let msg = reader.finish(kind_of(prelude.method, prelude.status)?, None)?;
                return Ok(Parsed::Message {
                    msg: Box::new(msg),
                    repairs: prelude.repairs,
                    rsip_rejected: None,
                });
            }
            // a request outside a dialog: rsip reads its start line (an
            // empty line ends the head); what it refuses (an unusual URI
            // scheme...) we read ourselves
            self.scratch.push_str("\r\n");
            let (kind, ruri_user, rsip_rejected) = match rsip::Request::try_from(self.scratch.as_str()) {
                Ok(r) => (Kind::Request(Method::from_rsip(&r.method)), r.uri.user().map(CompactString::from), None),
                Err(e) => {
                    (kind_of(prelude.method, prelude.status)?, ruri_user_of(&self.scratch), Some(rsip_error_kind(&e)))
                }
            };
            return Ok(Parsed::Message {
                msg: Box::new(reader.finish(kind, ruri_user)?),
                repairs: prelude.repairs,
                rsip_rejected,
            });
        }
        let text = self.scratch.as_str();
        // parse as what the start line says it is: rsip's own
        // request-or-response alternation formats an error (of the whole
        // text) before it tries a response
        let parsed = if prelude.method.is_some() {
            rsip::Request::try_from(text).map(rsip::SipMessage::Request)
        } else {
            rsip::Response::try_from(text).map(rsip::SipMessage::Response)
        };
        let (msg, rsip_rejected) = match parsed {
            Ok(m) => {
                let (kind, ruri_user) = match &m {
                    rsip::SipMessage::Request(r) => (
                        Kind::Request(Method::from_rsip(&r.method)),
                        r.uri.user().map(CompactString::from),
                    ),
                    rsip::SipMessage::Response(r) => (Kind::Response(r.status_code.code()), None),
                };
                let headers: Vec<_> = m.headers().iter().filter_map(rsip_header).collect();
                (read_headers(kind, ruri_user, headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))?, None)
            }
            // rsip refused the canonical text (an unusual URI scheme, a
            // parameter it does not know...): read it ourselves.
            Err(e) => (own_reader(text, prelude.method, prelude.status, true)?, Some(rsip_error_kind(&e))),
        };
        Ok(Parsed::Message {
            msg: Box::new(msg),
            repairs: prelude.repairs,
            rsip_rejected,
        })
    }
}

/// Reads the canonical text the normaliser wrote (one `Name: value` per
/// line, long names) without rsip.
fn own_reader(text: &str, method: Option<Method>, status: Option<u16>, read_ruri: bool) -> Result<SipMessage, ParseError> {
    let kind = kind_of(method, status)?;
    let ruri_user = match kind {
        Kind::Request(_) if read_ruri => ruri_user_of(text),
        _ => None,
    };
    read_headers(kind, ruri_user, canonical_lines(text).skip(1).filter_map(|l| l.split_once(": ")))
}

/// The Request-URI's user part, read from the start line of a canonical
/// text (its words one space apart), without rsip.
fn ruri_user_of(text: &str) -> Option<CompactString> {
    canonical_lines(text).next()?.split(' ').nth(1).and_then(uri_user)
}

/// A request's method or a response's status, as a message's kind.
fn kind_of(method: Option<Method>, status: Option<u16>) -> Result<Kind, ParseError> {
    match (method, status) {
        (Some(m), _) => Ok(Kind::Request(m)),
        (None, Some(c)) if (100..700).contains(&c) => Ok(Kind::Response(c)),
        _ => Err(ParseError::BadStatus),
    }
}

/// The lines of the canonical text (every one ends in CRLF), without it.
fn canonical_lines(text: &str) -> impl Iterator<Item = &str> {
    // '\n' is ASCII: every span starts and ends on a character boundary
    normalize::line_spans(text.as_bytes()).map(move |r| {
        let line = &text[r];
        line.strip_suffix('\r').unwrap_or(line)
    })
}

/// What a message is, read from its start line (a request's method) or,
/// for a response, its first `CSeq` line, without normalising the head.
/// `None` when that is not plain to see (the full path then decides).
fn quick_method(head: Head<'_>) -> Option<(bool, Method)> {
    let bytes = head.bytes();
    let mut spans = head.spans();
    let first = normalize::trim(&bytes[spans.next()?]);
    let word = first.split(|c| *c == b' ' || *c == b'\t').find(|w| !w.is_empty())?;
    if !word.eq_ignore_ascii_case(b"SIP/2.0") {
        return Some((true, Method::from_token(word)));
    }
    for span in spans {
        let line = &bytes[span];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() > 4 && line[..4].eq_ignore_ascii_case(b"CSeq") {
            let rest = normalize::trim(&line[4..]).strip_prefix(b":")?;
            let mut words = rest.split(|c| *c == b' ' || *c == b'\t').filter(|w| !w.is_empty());
            let _number = words.next()?;
            return Some((false, Method::from_token(words.next()?)));
        }
    }
    None
}

fn rsip_error_kind(e: &rsip::Error) -> &'static str {
    match e {
        rsip::Error::MissingHeader(_) => "missing_header",
        rsip::Error::InvalidParam(_) => "invalid_param",
        rsip::Error::ParseError(_) => "parse",
        rsip::Error::TokenizeError(_) => "tokenize",
        rsip::Error::Utf8Error(_) => "utf8",
        rsip::Error::Unexpected(_) => "unexpected",
    }
}

/// (name, value) of an rsip header: every header of the canonical text
/// is one the summary reads (a core header or a configured one).
fn rsip_header(h: &rsip::Header) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    let (n, v) = match h {
        rsip::Header::CallId(v) => ("Call-ID", v.value()),
        rsip::Header::From(v) => ("From", v.value()),
        rsip::Header::To(v) => ("To", v.value()),
        rsip::Header::CSeq(v) => ("CSeq", v.value()),
        rsip::Header::Via(v) => ("Via", v.value()),
        rsip::Header::Contact(v) => ("Contact", v.value()),
        rsip::Header::Other(n, v) => (n.as_str(), v.as_str()),
        // a configured header rsip has a type for (Alert-Info,
        // Call-Info...): as rsip writes it, `Name: value`
        typed => {
            let line = typed.to_string();
            let (n, v) = line.split_once(": ")?;
            return Some((Cow::Owned(n.to_string()), Cow::Owned(v.to_string())));
        }
    };
    Some((Cow::Borrowed(n), Cow::Borrowed(v)))
}

/// Builds the summary from canonical (name, value) pairs: the names are
/// the long forms the normaliser writes.
fn read_headers<'a>(
    kind: Kind,
    ruri_user: Option<CompactString>,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<SipMessage, ParseError> {
    let mut reader = HeaderReader::default();
    for (name, value) in headers {
        reader.header(name, value);
    }
    reader.finish(kind, ruri_user)
}

/// The fields of a message read one canonical header at a time, as the
/// normaliser finds them ([`normalize::HeadSink`]) or from rsip's headers.
#[derive(Default)]
struct HeaderReader {
    call_id: Option<String>,
    from: Option<NameAddr>,
    to: Option<NameAddr>,
    cseq: Option<(u32, Method)>,
    via_branch: Option<CompactString>,
    asserted_user: Option<CompactString>,
    reason: Option<String>,
    session_expires: Option<u32>,
    headers: Vec<(String, String)>,
    /// Whether the first `To` has a tag (the message is in a dialog).
    first_to_tagged: Option<bool>,
    /// The first header that makes the message unreadable.
    error: Option<ParseError>,
}

impl HeaderReader {
    fn header(&mut self, name: &str, value: &str) {
        if name == "To" {
            let to = name_addr(value);
            if self.first_to_tagged.is_none() {
                // up to a CR, as the dialog test once read the canonical text
                self.first_to_tagged = Some(match memchr::memchr(b'\r', value.as_bytes()) {
                    None => to.tag.is_some(),
                    Some(cr) => tag_of(&value[..cr]).is_some(),
                });
            }
            if self.error.is_none() {
                self.to = Some(to);
            }
            return;
        }
        if self.error.is_some() {
            return;
        }
        match name {
            "Call-ID" if !value.is_empty() => self.call_id = Some(value.to_string()),
            "From" => self.from = Some(name_addr(value)),
            "CSeq" => {
                let mut it = value.split_whitespace();
                let n = it.next().and_then(|n| n.parse::<u32>().ok());
                let m = it.next().map(|m| Method::from_token(m.as_bytes()));
                match (n, m) {
                    (Some(n), Some(m)) if m != Method::Other => self.cseq = Some((n, m)),
                    _ => self.error = Some(ParseError::BadCSeq),
                }
            }
            "Via" => self.via_branch = param(value, "branch"),
            "P-Asserted-Identity" => self.asserted_user = uri_user(value),
            "Remote-Party-ID" => {
                if self.asserted_user.is_none() {
                    self.asserted_user = uri_user(value);
                }
            }
            "Reason" => self.reason = Some(value.to_string()),
            "Session-Expires" => self.session_expires = leading_number(value),
            _ => self.headers.push((name.to_string(), value.to_string())),
        }
    }

    /// The message's first `To` has a tag: it is in a dialog.
    fn in_dialog(&self) -> bool {
        self.first_to_tagged == Some(true)
    }

    fn finish(self, kind: Kind, ruri_user: Option<CompactString>) -> Result<SipMessage, ParseError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        // missing fields in the order a message is checked
        let call_id = self.call_id.ok_or(ParseError::MissingCallId)?;
        let from = self.from.ok_or(ParseError::BadFrom)?;
        let to = self.to.ok_or(ParseError::BadTo)?;
        let (cseq, cseq_method) = self.cseq.ok_or(ParseError::BadCSeq)?;
        Ok(SipMessage {
            kind,
            call_id,
            from,
            to,
            ruri_user,
            cseq,
            cseq_method,
            via_branch: self.via_branch,
            asserted_user: self.asserted_user,
            reason: self.reason,
            session_expires: self.session_expires,
            headers: self.headers,
            media: None,
        })
    }
}

impl normalize::HeadSink for HeaderReader {
    fn text(&mut self) -> Option<&mut String> {
        None
    }

    fn header(&mut self, name: &str, value: &str) {
        HeaderReader::header(self, name, value);
    }
}

/// A request's canonical start line (for rsip) and our reader's fields,
/// in one pass.
struct StartLineAndReader<'a> {
    text: &'a mut String,
    reader: HeaderReader,
    /// Past the start line: no more text.
    headers: bool,
}

impl normalize::HeadSink for StartLineAndReader<'_> {
    fn text(&mut self) -> Option<&mut String> {
        if self.headers {
            None
        } else {
            Some(self.text)
        }
    }

    fn header(&mut self, name: &str, value: &str) {
        self.reader.header(name, value);
    }

    fn start_line_written(&mut self) {
        self.headers = true;
    }
}

fn leading_number(v: &str) -> Option<u32> {
    let digits: String = v.trim().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// `"Name" <sip:user@host;p>;tag=x` or `sip:user@host;tag=x`.
fn name_addr(v: &str) -> NameAddr {
    NameAddr {
        user: uri_user(v),
        tag: tag_of(v),
    }
}

/// The `tag` parameter of a From or To value (after the URI's `>`).
fn tag_of(v: &str) -> Option<CompactString> {
    let b = v.as_bytes();
    let after_uri = match (memchr::memchr(b'<', b), memchr::memrchr(b'>', b)) {
        (Some(a), Some(z)) if z > a => &v[z + 1..],
        _ => v,
    };
    param(after_uri, "tag")
}

/// The value of `;name=value` in a parameter list: the first parameter of
/// that name (any case) with a value, up to a `,`, space or `>`.
fn param(v: &str, name: &str) -> Option<CompactString> {
    let b = v.as_bytes();
    // each `;` starts a parameter that runs to the next one
    let mut semis = memchr::memchr_iter(b';', b).peekable();
    while let Some(start) = semis.next() {
        let end = semis.peek().copied().unwrap_or(b.len());
        let p = &v[start + 1..end];
        let Some(eq) = memchr::memchr(b'=', p.as_bytes()) else { continue };
        if !p[..eq].trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let val = p[eq + 1..].trim().trim_end_matches('>');
        let cut = memchr::memchr3(b',', b' ', b'>', val.as_bytes()).unwrap_or(val.len());
        if cut > 0 {
            return Some(CompactString::from(&val[..cut]));
        }
    }
    None
}

/// User part of the first sip:, sips: or tel: URI in `v`.
pub fn uri_user(v: &str) -> Option<CompactString> {
    let bytes = v.as_bytes();
    // the first scheme (case-insensitive) and where its user part starts:
    // each colon, looked at from behind
    let (pos, skip) = memchr::memchr_iter(b':', bytes).find_map(|c| {
        ["sip:", "sips:", "tel:"].iter().find_map(|s| {
            let i = (c + 1).checked_sub(s.len())?;
            bytes[i..=c].eq_ignore_ascii_case(s.as_bytes()).then_some((i, s.len()))
        })
    })?;
    let is_tel = bytes[pos].eq_ignore_ascii_case(&b't');
    let rest = &v[pos + skip..];
    let ends = |c: char| c == '>' || c == ';' || c == '?' || c.is_whitespace() || (!is_tel && c == '@');
    // byte by byte while the text is ASCII (as a URI's user part nearly
    // always is), character by character from the first byte that is not
    let end = match rest.bytes().position(|b| !b.is_ascii() || ends(b as char)) {
        Some(i) if !rest.as_bytes()[i].is_ascii() => rest[i..].find(ends).map_or(rest.len(), |j| i + j),
        Some(i) => i,
        None => rest.len(),
    };
    if !is_tel && !rest[end..].starts_with('@') {
        return None; // sip:host has no user part
    }
    let user = &rest[..end];
    (!user.is_empty()).then(|| CompactString::from(user))
}

#[cfg(test)]
mod tests;
