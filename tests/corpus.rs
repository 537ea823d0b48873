//! The engine against the public capture corpus and tshark's view of it.
//!
//! For each capture with a `.expected.json` (tshark 4.0: per Call-ID with an
//! INVITE, whether any INVITE got a 2xx and else the last final status), the
//! engine's legs are folded per Call-ID the same way and must agree, except
//! where a disagreement has been investigated: those are listed in
//! `DISAGREEMENTS` with the reason, and the engine's own answer is asserted.

use cbt_tests::{corpus_dir, replay_legs};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Expect {
    answered: bool,
    final_status: Option<u16>,
}

/// Per Call-ID: answered if any leg was; final status of an answered call is
/// its 2xx, else the final status of the leg whose final came last.
fn fold(legs: &[cbt_proto::Leg]) -> BTreeMap<String, Expect> {
    let mut out: BTreeMap<String, (Expect, Option<cbt_proto::Timestamp>)> = BTreeMap::new();
    for l in legs {
        let e = out.entry(l.call_id.to_string()).or_insert((
            Expect {
                answered: false,
                final_status: None,
            },
            None,
        ));
        if l.answered.is_some() {
            if !e.0.answered {
                e.0.final_status = l.final_status;
            }
            e.0.answered = true;
        } else if !e.0.answered && l.final_status.is_some() && l.final_at.get() >= e.1 {
            e.0.final_status = l.final_status;
            e.1 = l.final_at.get();
        }
    }
    out.into_iter().map(|(k, (e, _))| (k, e)).collect()
}

/// Investigated disagreements: (capture, Call-ID, the engine's answer, why).
const DISAGREEMENTS: &[(&str, &str, Expect, &str)] = &[(
    "snort3_demo__digium.pcap",
    "2e48d1153c4ad9145ace323d4fb6eb55@172.16.8.103",
    Expect { answered: true, final_status: Some(200) },
    "The 180 and 200 from Zoiper (frames 6, 8) end their Call-ID line with CR CR LF, \
     after which tshark cannot read their CSeq, so it cannot tie the 200 to the INVITE. \
     The engine reads the CSeq (102 INVITE), and the 200 carries the INVITE's Via branch \
     z9hG4bK259f991c (RFC 3261 17.1.3 transaction match) and is ACKed (frame 9) with its \
     To-tag: the leg was answered. (The demo capture also altered the From-tag in the \
     responses, so the engine matches INVITE responses by branch before From-tag.)",
)];

#[test]
fn engine_agrees_with_tshark_on_every_capture() {
    let Some(dir) = corpus_dir() else { return };
    let mut report = Vec::new();
    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for exp_path in files {
        let cap = PathBuf::from(exp_path.to_string_lossy().trim_end_matches(".expected.json"));
        let name = cap.file_name().unwrap().to_string_lossy().to_string();
        let expected: BTreeMap<String, Expect> =
            serde_json::from_str(&std::fs::read_to_string(&exp_path).unwrap()).unwrap();
        let (legs, _, errors) = replay_legs(&[cap.clone()]);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let got = fold(&legs);
        for (cid, want) in &expected {
            checked += 1;
            let have = got.get(cid);
            if let Some((_, _, ours, _)) = DISAGREEMENTS.iter().find(|(f, c, _, _)| *f == name && c == cid) {
                assert_eq!(have, Some(ours), "{name}: {cid}: the investigated answer changed");
                continue;
            }
            if have != Some(want) {
                report.push(format!("{name}: {cid}: tshark {want:?}, engine {have:?}"));
            }
        }
        for cid in got.keys() {
            if !expected.contains_key(cid) {
                report.push(format!("{name}: {cid}: engine has a leg tshark does not list: {:?}", got[cid]));
            }
        }
    }
    for r in &report {
        eprintln!("{r}");
    }
    eprintln!("checked {checked} Call-IDs, {} disagreements", report.len());
    assert!(report.is_empty());
}

/// rsip reads the messages that can start a leg (requests outside a
/// dialog); the engine's own reader of the same canonical text settles
/// responses and in-dialog requests. On every UDP message of the corpus
/// the two must give the same message, field for field (but the
/// Request-URI of an in-dialog request, which the engine does not read and
/// our reader leaves out).
#[test]
fn rsip_and_our_reader_agree_on_every_message_of_the_corpus() {
    use cbt_proto::sip::{Parsed, Parser};
    use cbt_proto::wire::{Datagram, Decoder, Flow, FlowKey, Sink, WireConfig};
    let Some(dir) = corpus_dir() else { return };
    struct Heads(Vec<Vec<u8>>);
    impl Sink for Heads {
        fn datagram(&mut self, d: Datagram<'_>) {
            if let cbt_proto::sip::Framing::Message { start, head_end, .. } = cbt_proto::sip::find(d.payload) {
                self.0.push(d.payload[start..head_end].to_vec());
            }
        }
        fn stream(&mut self, _: cbt_proto::Timestamp, _: FlowKey, _: &mut Flow) {}
    }
    let mut caps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap"))
        .collect();
    caps.sort();
    let (mut ours, mut rsip_only, mut same, mut typed_on_initial) = (0, 0, 0, 0);
    // configured headers too, rsip-typed ones among them (rsip reads them
    // into its own types; the engine's reader, by name)
    let extras: Vec<String> = ["X-CID", "Alert-Info", "User-Agent", "Server", "Supported", "Allow", "Content-Type"]
        .map(String::from)
        .to_vec();
    let (mut split, mut full) = (Parser::new(extras.clone()), Parser::new(extras));
    for cap in &caps {
        let mut decoder = Decoder::new(WireConfig::default());
        let mut heads = Heads(Vec::new());
        let mut inputs = cbt_agent::capture::Merged::open(std::slice::from_ref(cap));
        inputs.for_each(|p| {
            if let Some(l) = cbt_proto::LinkType::from_linktype(p.linktype) {
                decoder.frame(p.ts, l, &p.data, &mut heads);
            }
        });
        for head in &heads.0 {
            let a = split.parse(head);
            let b = full.parse_with_rsip(head);
            match (&a, &b) {
                (Ok(Parsed::Message { msg: x, rsip_rejected: None, repairs: rx }), Ok(Parsed::Message { msg: y, rsip_rejected: r, repairs: ry })) => {
                    assert_eq!(rx, ry, "{}: {}", cap.display(), String::from_utf8_lossy(head));
                    let mut y = y.clone();
                    if y.method().is_some() && y.to.tag.is_some() {
                        y.ruri_user = None;
                    }
                    assert_eq!(**x, *y, "{}: {}", cap.display(), String::from_utf8_lossy(head));
                    same += 1;
                    if x.method().is_some() && x.to.tag.is_none() && x.headers.iter().any(|(n, _)| n != "X-CID") {
                        typed_on_initial += 1;
                    }
                    if r.is_none() && x.method().is_none_or(|_| x.to.tag.is_some()) {
                        ours += 1;
                    }
                }
                (Ok(Parsed::Message { .. }), _) => rsip_only += 1,
                _ => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}: {}", cap.display(), String::from_utf8_lossy(head)),
            }
        }
    }
    eprintln!(
        "{same} messages read by our reader and by rsip from the whole text, the same ({ours} responses and in-dialog requests, {} requests outside a dialog, whose start line alone rsip reads in the engine, {typed_on_initial} of them with rsip-typed configured headers); {rsip_only} rejected by rsip",
        same - ours
    );
    assert!(ours > 1000, "the corpus should exercise the reader: {ours}");
    // rsip-typed configured headers on requests outside a dialog, read both ways
    assert!(typed_on_initial > 100, "requests outside a dialog with rsip-typed configured headers: {typed_on_initial}");
}
