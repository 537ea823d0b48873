//! Every rsip pitfall from the field notes, shown twice: what rsip does with
//! the raw bytes (the failure we guard against) and what our normalising
//! step plus rsip makes of the same bytes.

use super::frame::{find, Framing};
use super::normalize::first_value;
use super::*;
use rsip::headers::ToTypedHeader;
use rsip::message::HeadersExt;

fn raw_rsip(bytes: &[u8]) -> Result<rsip::SipMessage, rsip::Error> {
    rsip::SipMessage::try_from(bytes)
}

/// What the engine gets; checked against the same bytes through rsip,
/// which must accept the normalised text and read the same fields (the
/// engine's own reader settles responses and in-dialog requests).
fn ours(bytes: &[u8]) -> SipMessage {
    let mut full = match Parser::default().parse_with_rsip(bytes).expect("parses") {
        Parsed::Message { msg, rsip_rejected, .. } => {
            assert_eq!(rsip_rejected, None, "rsip should accept the normalised text");
            *msg
        }
        other => panic!("{other:?}"),
    };
    let split = match Parser::default().parse(bytes).expect("parses") {
        Parsed::Message { msg, .. } => *msg,
        other => panic!("{other:?}"),
    };
    if full.method().is_some() && full.to.tag.is_some() {
        full.ruri_user = None; // not read in a dialog
    }
    assert_eq!(split, full, "rsip and the engine's reader differ");
    split
}

const CANONICAL: &str = "INVITE sip:+441632960123@pbx.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
From: \"Caller\" <sip:07700900123@carrier.example>;tag=abc\r\n\
To: <sip:+441632960123@pbx.example>\r\n\
Call-ID: call-1@carrier\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:07700900123@192.0.2.1>\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn canonical_message_is_read_fully() {
    let m = ours(CANONICAL.as_bytes());
    assert_eq!(m.kind, Kind::Request(Method::Invite));
    assert_eq!(m.call_id, "call-1@carrier");
    assert_eq!(m.from.tag.as_deref(), Some("abc"));
    assert_eq!(m.from.user.as_deref(), Some("07700900123"));
    assert_eq!(m.to.tag, None);
    assert_eq!(m.ruri_user.as_deref(), Some("+441632960123"));
    assert_eq!((m.cseq, m.cseq_method), (10, Method::Invite));
    assert_eq!(m.via_branch.as_deref(), Some("z9hG4bK-1"));
}

/// A configured header that rsip has a type for (Alert-Info here) is kept
/// on the INVITE that starts a leg as on its responses. (Until rsip read
/// only start lines, the INVITE's copy was dropped: rsip's typed headers
/// other than the core ones were not read back.)
#[test]
fn a_configured_header_rsip_has_a_type_for_is_kept_on_the_initial_invite() {
    let invite = "INVITE sip:+441632960123@pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Alert-Info: <urn:alert:service:call-back>\r\n\r\n";
    let ringing = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Alert-Info: <urn:alert:service:call-back>\r\n\r\n";
    let extras = vec!["Alert-Info".to_string()];
    let kept = vec![("Alert-Info".to_string(), "<urn:alert:service:call-back>".to_string())];
    for head in [invite, ringing] {
        let engine = Parser::new(extras.clone()).parse(head.as_bytes());
        let reference = Parser::new(extras.clone()).parse_with_rsip(head.as_bytes());
        match (engine, reference) {
            (Ok(Parsed::Message { msg: a, .. }), Ok(Parsed::Message { msg: b, rsip_rejected: None, .. })) => {
                assert_eq!(a.headers, kept, "{head}");
                assert_eq!(b.headers, kept, "{head}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn pitfall_compact_headers_lose_call_id_and_from_tag_in_rsip() {
    let compact = "INVITE sip:bob@x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK2\r\nf: <sip:a@x>;tag=t1\r\nt: <sip:bob@x>\r\ni: cid-2\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let r = raw_rsip(compact.as_bytes()).expect("rsip accepts it...");
    assert!(r.call_id_header().is_err(), "...but finds no Call-ID");
    assert!(r.from_header().is_err(), "...and no From (so no From-tag)");
    let m = ours(compact.as_bytes());
    assert_eq!(m.call_id, "cid-2");
    assert_eq!(m.from.tag.as_deref(), Some("t1"));
    assert_eq!(m.via_branch.as_deref(), Some("z9hG4bK2"));
}

#[test]
fn pitfall_folded_header_lines_are_rejected_by_rsip() {
    let folded = CANONICAL.replace("CSeq: 10 INVITE\r\n", "CSeq: 10\r\n INVITE\r\n");
    let folded = folded.replace("To: <sip:+441632960123@pbx.example>\r\n", "To:\r\n\t<sip:+441632960123@pbx.example>\r\n");
    let raw = raw_rsip(folded.as_bytes());
    assert!(
        raw.is_err() || raw.as_ref().unwrap().cseq_header().and_then(|c| c.typed()).is_err(),
        "rsip reads the folded CSeq: {raw:?}"
    );
    let m = ours(folded.as_bytes());
    assert_eq!((m.cseq, m.cseq_method), (10, Method::Invite));
    assert_eq!(m.to.user.as_deref(), Some("+441632960123"));
}

#[test]
fn pitfall_whitespace_before_colon_is_rejected_by_rsip() {
    let spaced = CANONICAL.replace("Call-ID: ", "Call-ID : ");
    assert!(raw_rsip(spaced.as_bytes()).map(|m| m.call_id_header().is_ok()) != Ok(true));
    assert_eq!(ours(spaced.as_bytes()).call_id, "call-1@carrier");
}

#[test]
fn pitfall_lf_only_line_endings_are_rejected_by_rsip() {
    let lf = CANONICAL.replace("\r\n", "\n");
    assert!(raw_rsip(lf.as_bytes()).is_err());
    let m = ours(lf.as_bytes());
    assert_eq!(m.call_id, "call-1@carrier");
    assert_eq!(m.from.tag.as_deref(), Some("abc"));
}

#[test]
fn pitfall_latin1_display_name_is_rejected_by_rsip() {
    let mut latin1 = CANONICAL.replace("\"Caller\"", "\"Jos\u{1}\"").into_bytes();
    let i = latin1.iter().position(|b| *b == 1).unwrap();
    latin1[i] = 0xE9; // é in Latin-1, invalid UTF-8
    assert!(raw_rsip(&latin1).is_err());
    let m = ours(&latin1);
    assert_eq!(m.from.tag.as_deref(), Some("abc"));
    assert_eq!(m.from.user.as_deref(), Some("07700900123"));
}

#[test]
fn pitfall_rsip_ignores_content_length_and_merges_two_messages() {
    let first = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK3\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c3\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let second = first.replace("180 Ringing", "200 OK");
    let both = format!("{first}{second}");
    let r = raw_rsip(both.as_bytes()).expect("rsip parses one message");
    assert!(!r.body().is_empty(), "rsip swallowed the 200 OK as a body");
    // our framer finds two messages
    let b = both.as_bytes();
    let Framing::Message { head_end, .. } = find(b) else { panic!() };
    assert_eq!(head_end, first.len());
    let Framing::Message { start: 0, .. } = find(&b[head_end..]) else { panic!() };
    assert_eq!(ours(&b[head_end..]).kind, Kind::Response(200));
}

#[test]
fn unknown_uri_scheme_is_salvaged_not_lost() {
    let odd = CANONICAL.replace(
        "From: \"Caller\" <sip:07700900123@carrier.example>;tag=abc",
        "From: <tel:+447700900123;phone-context=x>;tag=abc",
    );
    match Parser::default().parse(odd.as_bytes()).unwrap() {
        Parsed::Message { msg, .. } => {
            assert_eq!(msg.call_id, "call-1@carrier");
            assert_eq!(msg.from.tag.as_deref(), Some("abc"));
            assert_eq!(msg.from.user.as_deref(), Some("+447700900123"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_dialog_methods_are_ignored_before_rsip() {
    let reg = "REGISTER sip:x SIP/2.0\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\n\r\n";
    assert!(matches!(Parser::default().parse(reg.as_bytes()), Ok(Parsed::Ignored(Method::Register))));
    let ok = "SIP/2.0 200 OK\r\nCall-ID: r\r\nCSeq: 7 OPTIONS\r\n\r\n";
    assert!(matches!(Parser::default().parse(ok.as_bytes()), Ok(Parsed::Ignored(Method::Options))));
    let odd = "INVITE1 sip:x SIP/2.0\r\nCall-ID: r\r\nCSeq: 1 INVITE1\r\n\r\n";
    assert_eq!(Parser::default().parse(odd.as_bytes()).unwrap_err(), ParseError::UnknownMethod);
}

#[test]
fn missing_essentials_are_errors_with_reasons() {
    let no_cid = CANONICAL.replace("Call-ID: call-1@carrier\r\n", "");
    assert_eq!(Parser::default().parse(no_cid.as_bytes()).unwrap_err(), ParseError::MissingCallId);
    let no_cseq = CANONICAL.replace("CSeq: 10 INVITE\r\n", "");
    assert_eq!(Parser::default().parse(no_cseq.as_bytes()).unwrap_err(), ParseError::BadCSeq);
}

#[test]
fn pai_reason_session_expires_and_extras() {
    let m = CANONICAL.replace(
        "Content-Length: 0\r\n",
        "P-Asserted-Identity: \"X\" <sip:+447700900999@c>\r\nSession-Expires: 1800;refresher=uac\r\nReason: Q.850;cause=16\r\nX-CID: abc\r\nContent-Length: 0\r\n",
    );
    let mut p = Parser::new(vec!["x-cid".into()]);
    let Parsed::Message { msg, .. } = p.parse(m.as_bytes()).unwrap() else { panic!() };
    assert_eq!(msg.asserted_user.as_deref(), Some("+447700900999"));
    assert_eq!(msg.session_expires, Some(1800));
    assert_eq!(msg.reason.as_deref(), Some("Q.850;cause=16"));
    assert_eq!(msg.header("X-CID"), Some("abc"));
}

#[test]
fn uri_user_forms() {
    assert_eq!(uri_user("<sip:123@h>").as_deref(), Some("123"));
    assert_eq!(uri_user("\"A\" <sips:alice@h;x=y>").as_deref(), Some("alice"));
    assert_eq!(uri_user("tel:+441632960000;ext=1").as_deref(), Some("+441632960000"));
    assert_eq!(uri_user("<sip:host.example>").as_deref(), None);
}

#[test]
fn keepalives_are_set_aside_from_their_start_line_or_cseq_whatever_their_form() {
    let mut p = Parser::default();
    let ignored = |p: &mut Parser, text: &str| match p.parse(text.as_bytes()) {
        Ok(Parsed::Ignored(m)) => Some(m),
        _ => None,
    };
    // requests that cannot touch a leg, in tidy and untidy forms
    assert_eq!(ignored(&mut p, "OPTIONS sip:pbx SIP/2.0\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\r\n"), Some(Method::Options));
    assert_eq!(ignored(&mut p, "  REGISTER   sip:pbx SIP/2.0\nCall-ID: r1\nCSeq: 7 REGISTER\n\n"), Some(Method::Register));
    assert_eq!(ignored(&mut p, "NOTIFY sip:201@h SIP/2.0\r\n\r\n"), Some(Method::Notify), "no headers needed");
    // responses to them, by their CSeq line (spaces before the colon, any case)
    assert_eq!(ignored(&mut p, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\ncseq : 102 options\r\n\r\n"), Some(Method::Options));
    assert_eq!(ignored(&mut p, "SIP/2.0 401 Unauthorized\r\nCSeq:3 REGISTER\r\nCall-ID: r1\r\n\r\n"), Some(Method::Register));
    assert_eq!(ignored(&mut p, "SIP/2.0 200 OK\r\nCall-ID: b\r\nCSeq: 2 BYE\r\n\r\n"), Some(Method::Bye), "a 200 to BYE changes nothing a leg records");
    // a folded CSeq is left to the full path, which reads it the same way
    assert_eq!(ignored(&mut p, "SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq:\r\n 5 SUBSCRIBE\r\n\r\n"), Some(Method::Subscribe));
    // what can touch a leg is parsed in full
    assert!(matches!(p.parse(CANONICAL.as_bytes()), Ok(Parsed::Message { .. })));
    let ok = CANONICAL.replacen("INVITE sip:+441632960123@pbx.example SIP/2.0", "SIP/2.0 200 OK", 1);
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert!(matches!(p.parse(ok.as_bytes()), Ok(Parsed::Message { .. })));
    // and what is unknown still errs as before
    assert_eq!(p.parse(b"FOO sip:x SIP/2.0\r\nCSeq: 1 FOO\r\n\r\n").unwrap_err(), ParseError::UnknownMethod);
    assert_eq!(p.parse(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n").unwrap_err(), ParseError::BadCSeq);
}

/// The one-pass reader (the normaliser feeding [`HeaderReader`]) against
/// the two-pass path it replaced for responses and in-dialog requests (the
/// canonical text written, then read line by line), on heads built from
/// every repair the normaliser makes: the same prelude, the same text when
/// both are wanted, the same dialog test and the same message or error.
mod one_pass {
    use super::super::normalize::normalize_into;
    use super::*;
    use proptest::prelude::*;

    const STARTS: &[&[u8]] = &[
        b"SIP/2.0 200 OK",
        b"SIP/2.0  180   Ringing",
        b"sip/2.0 486 Busy Here",
        b"SIP/2.0 100 Trying",
        b"SIP/2.0 abc Broken",
        b"INVITE sip:201@pbx.example SIP/2.0",
        b"ACK   sip:201@10.0.0.1:5060 sip/2.0",
        b"BYE sip:caller@10.0.0.9 SIP/2.0",
        b"CANCEL sip:201@pbx SIP/2.0",
        b"INVITE sip:Jos\xe9@pbx SIP/2.0",
        b"SIP/2.0 99 Too Low",
        b"SIP/2.0",
        b"FOO sip:x SIP/2.0",
        b"SIP/2.0 200 \xffK",
        b"BYE sip:x SIP/2.0\n",
    ];

    // (saved proptest cases name lines by their place here: add at the end)
    const LINES: &[&[u8]] = &[
        b"Call-ID: abc@host",
        b"i: compact-id",
        b"Call-ID:",
        b"From: \"Caller\" <sip:07700900123@carrier>;tag=f1",
        b"f:<sip:anonymous@anonymous.invalid>;tag=x",
        b"From : \"Jos\xe9\" <sip:j@x>;tag=9",
        b"To: <sip:201@pbx>",
        b"To: <sip:201@pbx>;tag=t1",
        b"t: sip:201@pbx;tag=t2",
        b"To: <sip:201@pbx>\r;tag=cr",
        b"TO:   \"A, B\" <sip:a@b;x=y>  ;  TAG = t3",
        b"CSeq: 1 INVITE",
        b"CSeq: 2 BYE",
        b"cseq :  7   invite",
        b"CSeq: x INVITE",
        b"CSeq: 3 FOO",
        b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2",
        b"v: SIP/2.0/UDP h;branch=z9hG4bKc",
        b"P-Asserted-Identity: <tel:+441632960123>",
        b"Remote-Party-ID: \"X\" <sip:0123@h>;party=calling",
        b"Reason: Q.850;cause=16",
        b"Session-Expires: 1800;refresher=uac",
        b"x: 90",
        b"X-CID: kept",
        b"x-cid:  also kept  ",
        b"User-Agent: dropped",
        b"m: <sip:contact@h>",
        b"not a header line",
        b"Subject: dropped\xff",
        b" folded continuation",
        b"\tINVITE",
        b"Content-Length: 0",
        b"To: <sip:201@pbx;tag=inside>",
        b"To:",
        b"Call-ID: a\rb",
        b"t:\t<sip:201@pbx> ; tag = sp ",
        b"Reason:  x \x0b",
    ];

    fn head(start: usize, lines: &[(usize, bool)]) -> Vec<u8> {
        let mut h = STARTS[start].to_vec();
        h.extend_from_slice(b"\r\n");
        for &(i, bare_lf) in lines {
            h.extend_from_slice(LINES[i]);
            h.extend_from_slice(if bare_lf { b"\n" } else { b"\r\n" });
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    /// The reader as it was (3cc977a): the canonical text's lines, read
    /// until the first bad CSeq. The oracle for [`HeaderReader`].
    fn old_read_text(text: &str, kind: Kind) -> Result<SipMessage, ParseError> {
        let (mut call_id, mut from, mut to, mut cseq) = (None, None, None, None);
        let mut out = SipMessage {
            kind,
            call_id: String::new(),
            from: NameAddr::default(),
            to: NameAddr::default(),
            ruri_user: None,
            cseq: 0,
            cseq_method: Method::Other,
            via_branch: None,
            asserted_user: None,
            reason: None,
            session_expires: None,
            headers: Vec::new(),
            media: None,
        };
        let lines = text.split('\n').skip(1).map(|l| l.strip_suffix('\r').unwrap_or(l));
        for (name, value) in lines.filter_map(|l| l.split_once(": ")) {
            match name {
                "Call-ID" if !value.is_empty() => call_id = Some(value.to_string()),
                "From" => from = Some(name_addr(value)),
                "To" => to = Some(name_addr(value)),
                "CSeq" => {
                    let mut it = value.split_whitespace();
                    let n = it.next().and_then(|n| n.parse::<u32>().ok());
                    let m = it.next().map(|m| Method::from_token(m.as_bytes()));
                    match (n, m) {
                        (Some(n), Some(m)) if m != Method::Other => cseq = Some((n, m)),
                        _ => return Err(ParseError::BadCSeq),
                    }
                }
                "Via" => out.via_branch = param(value, "branch"),
                "P-Asserted-Identity" => out.asserted_user = uri_user(value),
                "Remote-Party-ID" => {
                    if out.asserted_user.is_none() {
                        out.asserted_user = uri_user(value);
                    }
                }
                "Reason" => out.reason = Some(value.to_string()),
                "Session-Expires" => out.session_expires = leading_number(value),
                _ => out.headers.push((name.to_string(), value.to_string())),
            }
        }
        out.call_id = call_id.ok_or(ParseError::MissingCallId)?;
        out.from = from.ok_or(ParseError::BadFrom)?;
        out.to = to.ok_or(ParseError::BadTo)?;
        let (n, m) = cseq.ok_or(ParseError::BadCSeq)?;
        out.cseq = n;
        out.cseq_method = m;
        Ok(out)
    }

    /// The dialog test as it was made on the canonical text.
    fn text_in_dialog(text: &str) -> bool {
        let Some(i) = memchr::memmem::find(text.as_bytes(), b"\r\nTo: ") else { return false };
        let v = &text[i + 6..];
        let v = &v[..memchr::memchr(b'\r', v.as_bytes()).unwrap_or(v.len())];
        tag_of(v).is_some()
    }

    fn check(h: &[u8]) {
        let extra = vec!["X-CID".to_string()];
        let mut text = String::new();
        let by_text = normalize(h, &extra, &mut text);
        let mut reader = HeaderReader::default();
        let mut nl = Vec::new();
        let head = super::super::Head::scan(h, &mut nl);
        let one_pass = normalize_into(head, &extra, &mut reader);
        let mut both = StartLineAndReader {
            text: &mut String::new(),
            reader: HeaderReader::default(),
            headers: false,
        };
        let with_text = normalize_into(head, &extra, &mut both);
        let shown = String::from_utf8_lossy(h);
        assert_eq!(by_text, one_pass, "{shown}");
        assert_eq!(by_text, with_text, "{shown}");
        let Ok(pre) = by_text else { return };
        // the start line alone, as the whole text begins
        assert_eq!(&text[..text.find("\r\n").map_or(0, |i| i + 2)], both.text, "{shown}");
        assert_eq!(text_in_dialog(&text), reader.in_dialog(), "{shown}");
        assert_eq!(text_in_dialog(&text), both.reader.in_dialog(), "{shown}");
        let old = kind_of(pre.method, pre.status).and_then(|k| old_read_text(&text, k));
        assert_eq!(old, own_reader(&text, pre.method, pre.status, false), "{shown}");
        let new = kind_of(pre.method, pre.status).and_then(|k| reader.finish(k, None));
        assert_eq!(old, new, "{shown}");
    }

    #[test]
    fn every_line_alone_and_each_start() {
        for s in 0..STARTS.len() {
            for i in 0..LINES.len() {
                check(&head(s, &[(i, false)]));
                check(&head(s, &[(3, false), (7, true), (i, false), (11, false), (0, false)]));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn agrees_with_the_text_path(
            start in 0..STARTS.len(),
            lines in proptest::collection::vec((0..LINES.len(), proptest::bool::weighted(0.2)), 0..14),
        ) {
            check(&head(start, &lines));
        }
    }
}

/// The byte-searching field readers against the character-by-character
/// forms they replaced, on text made of the characters that matter to them.
mod field_readers {
    use super::*;
    use proptest::prelude::*;

    fn old_first_value(v: &[u8]) -> &[u8] {
        let (mut quoted, mut angle, mut escaped) = (false, 0u32, false);
        for (i, &c) in v.iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle += 1,
                b'>' if !quoted => angle = angle.saturating_sub(1),
                b',' if !quoted && angle == 0 => return normalize::trim(&v[..i]),
                _ => {}
            }
        }
        v
    }

    fn old_param(v: &str, name: &str) -> Option<CompactString> {
        v.split(';').skip(1).find_map(|p| {
            let (k, val) = p.split_once('=')?;
            if k.trim().eq_ignore_ascii_case(name) {
                let val = val.trim().trim_end_matches('>');
                let val = val.split([',', ' ', '>']).next().unwrap_or("");
                (!val.is_empty()).then(|| CompactString::from(val))
            } else {
                None
            }
        })
    }

    fn old_tag_of(v: &str) -> Option<CompactString> {
        let after_uri = match (v.find('<'), v.rfind('>')) {
            (Some(a), Some(b)) if b > a => &v[b + 1..],
            _ => v,
        };
        old_param(after_uri, "tag")
    }

    /// As it was (3cc977a): the user part's end found character by
    /// character.
    fn old_uri_user(v: &str) -> Option<CompactString> {
        let bytes = v.as_bytes();
        let (pos, skip) = memchr::memchr_iter(b':', bytes).find_map(|c| {
            ["sip:", "sips:", "tel:"].iter().find_map(|s| {
                let i = (c + 1).checked_sub(s.len())?;
                bytes[i..=c].eq_ignore_ascii_case(s.as_bytes()).then_some((i, s.len()))
            })
        })?;
        let is_tel = bytes[pos].eq_ignore_ascii_case(&b't');
        let rest = &v[pos + skip..];
        let end = rest
            .find(|c: char| c == '>' || c == ';' || c == '?' || c.is_whitespace() || (!is_tel && c == '@'))
            .unwrap_or(rest.len());
        if !is_tel && !rest[end..].starts_with('@') {
            return None;
        }
        let user = &rest[..end];
        (!user.is_empty()).then(|| CompactString::from(user))
    }

    const ALPHABET: &[&str] = &[
        "sip:", "tel:", "sips:", "SIP:", "a", "0", "7", "@", ";", "=", ",", " ", "\t", "<", ">", "\"", "\\", "?", "tag", "TAG", "branch", "\u{a0}", "é", "\u{2003}", ":",
        ";tag=", ";branch=", "; TAG =", ";tag=>", "\r", "\x0b",
    ];

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(0..ALPHABET.len(), 0..40).prop_map(|v| v.into_iter().map(|i| ALPHABET[i]).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn agree_with_the_forms_they_replaced(v in text()) {
            prop_assert_eq!(first_value(v.as_bytes()), old_first_value(v.as_bytes()));
            prop_assert_eq!(param(&v, "tag"), old_param(&v, "tag"));
            prop_assert_eq!(param(&v, "branch"), old_param(&v, "branch"));
            prop_assert_eq!(tag_of(&v), old_tag_of(&v));
            prop_assert_eq!(uri_user(&v), old_uri_user(&v));
        }
    }
}
