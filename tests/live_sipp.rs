//! Live: sipp UAC and UAS on loopback, captured, replayed: legs and times
//! match what sipp did.
//!
//! A sipp UAS (127.0.0.3) and UAC (127.0.0.2) run the scenarios of
//! `tests/sipp` on free ports: the calls of `calls.csv`, answered and ended
//! by the caller, answered and ended by the callee, busy (486), and
//! cancelled while ringing (CANCEL, 487), with random delays. dumpcap (or
//! tcpdump) captures them on `lo`; the capture is replayed through the
//! engine. Both sipp processes log when they sent or received each message;
//! every call must come out as exactly one leg on the UAC-to-UAS hop, ended
//! the scripted way, with its times matching sipp's logs.
//!
//! Needs sipp and dumpcap or tcpdump, and the right to capture on `lo`
//! (root, or dumpcap with its capabilities). Without them the test prints
//! `SKIP: ...`, except under CI where it fails. The work directory (sipp's
//! logs and messages, the capture) is kept in `target/tmp/live_sipp` for
//! inspection.
//!
//! The same checks run on the committed fixture `tests/fixtures/sipp-basic.pcap`
//! against the sipp logs recorded with it (`sipp-basic.events`), both made
//! by `scripts/make-fixtures`; that test needs neither sipp nor a capture.

use cbt_proto::{EndReason, Leg, Side, Timestamp};
use cbt_tests::sipp::{self, CallLog, CaptureError, Dir, LogEvent, Traffic};
use cbt_tests::{in_ci, replay_legs};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

const TEST: &str = "live_sipp";

/// How close leg times must be to sipp's logs of the same messages.
///
/// Capture stamps and sipp's `[timestamp]` read the same realtime clock,
/// and sipp is single-threaded, so for a message sent by one side and
/// received by the other:
///
///   sender's previous log line < packet time <= sender's "sent" line
///                                 packet time <= receiver's "recv" line
///
/// (the packet is stamped while sendto() runs; the receiver logs after
/// reading it). These bounds are checked exactly: they are what tells apart
/// messages that follow each other closely (a CANCEL, its 200 and the 487
/// within ~1 ms; a 486 and its ACK within ~50 us).
///
/// How far the nearer of the two logs trails the packet depends on how soon
/// the kernel runs sipp again: measured over 40 runs of 20 calls on a 2-core
/// machine that was also compiling (load 2-3.5; some runs with 3 extra busy
/// loops), the median 30-150 us, the largest 5.5 ms (both sipp processes
/// waiting for a CPU at once). Hence two bounds: every message within
/// [`TOLERANCE_US`], twice the worst seen, and the median of all within
/// [`MEDIAN_TOLERANCE_US`], which a systematic shift of the leg times
/// (which could stay inside the exact bounds) would exceed.
const TOLERANCE_US: i64 = 10_000;
const MEDIAN_TOLERANCE_US: i64 = 1_000;

/// How a call of a kind must come out, and which message gives each time:
/// (side that sent it, what it logged).
struct Expect {
    final_status: u16,
    end: EndReason,
    ended_by: Side,
    ringing: Option<(&'static str, &'static str)>,
    answered: Option<(&'static str, &'static str)>,
    ended: (&'static str, &'static str),
    final_at: (&'static str, &'static str),
}

fn expect(kind: &str) -> Option<Expect> {
    Some(match kind {
        "answer" => Expect {
            final_status: 200,
            end: EndReason::Bye,
            ended_by: Side::Caller,
            ringing: Some(("uas", "180/INVITE")),
            answered: Some(("uas", "200/INVITE")),
            ended: ("uac", "BYE"),
            final_at: ("uas", "200/INVITE"),
        },
        "calleebye" => Expect {
            final_status: 200,
            end: EndReason::Bye,
            ended_by: Side::Callee,
            ringing: Some(("uas", "180/INVITE")),
            answered: Some(("uas", "200/INVITE")),
            ended: ("uas", "BYE"),
            final_at: ("uas", "200/INVITE"),
        },
        "busy" => Expect {
            final_status: 486,
            end: EndReason::Rejected,
            ended_by: Side::Callee,
            ringing: None,
            answered: None,
            ended: ("uas", "486/INVITE"),
            final_at: ("uas", "486/INVITE"),
        },
        // A cancelled leg ends when the CANCEL was sent; its final status
        // is the 487 that followed.
        "cancel" => Expect {
            final_status: 487,
            end: EndReason::Cancel,
            ended_by: Side::Caller,
            ringing: Some(("uas", "180/INVITE")),
            answered: None,
            ended: ("uac", "CANCEL"),
            final_at: ("uas", "487/INVITE"),
        },
        _ => return None,
    })
}

fn other_side(side: &str) -> &'static str {
    if side == "uac" {
        "uas"
    } else {
        "uac"
    }
}

/// Differences (log minus leg time, microseconds) by time field and logging
/// direction, for the report.
#[derive(Default)]
struct Measured {
    rows: BTreeMap<(String, &'static str), Vec<i64>>,
}

impl Measured {
    fn add(&mut self, field: &str, dir: &'static str, d: i64) {
        self.rows
            .entry((field.to_string(), dir))
            .or_default()
            .push(d);
    }

    /// The median over all fields of one direction.
    fn median(&self, dir: &str) -> Option<i64> {
        let mut all: Vec<i64> = self
            .rows
            .iter()
            .filter(|((_, d), _)| *d == dir)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        all.sort_unstable();
        all.get(all.len() / 2).copied()
    }

    fn print(&self) {
        eprintln!("sipp's log time minus the leg time, microseconds (sender: after sendto; receiver: after reading; nearer: the smaller):");
        for ((field, dir), v) in &self.rows {
            let mut v = v.clone();
            v.sort_unstable();
            let median = v[v.len() / 2];
            eprintln!(
                "  {field:<9} {dir:<8} n={:<3} min={:<6} median={:<6} max={}",
                v.len(),
                v[0],
                median,
                v[v.len() - 1]
            );
        }
        for dir in ["sender", "receiver", "nearer"] {
            let all = self
                .rows
                .iter()
                .filter(|((_, d), _)| *d == dir)
                .flat_map(|(_, v)| v.iter().copied());
            if let (Some(min), Some(max), Some(median)) =
                (all.clone().min(), all.max(), self.median(dir))
            {
                eprintln!("  all       {dir:<8} min={min:<6} median={median:<6} max={max}");
            }
        }
    }
}

/// Checks one leg time against the logs of the message it must come from:
/// the sender's (after sending) and the receiver's (after receiving). Both
/// must be at or after it, the nearer within [`TOLERANCE_US`], and it must
/// be after the sender's previous log line.
fn check_time(
    report: &mut String,
    measured: &mut Measured,
    call: &CallLog,
    field: &str,
    got: Option<Timestamp>,
    want: Option<(&str, &str)>,
) {
    let cid = &call.call_id;
    let (got, (sender, what)) = match (got, want) {
        (None, None) => return,
        (Some(g), None) => {
            let _ = writeln!(
                report,
                "{cid} ({}): {field} is {g}, expected none",
                call.kind
            );
            return;
        }
        (None, Some(w)) => {
            let _ = writeln!(
                report,
                "{cid} ({}): {field} is missing, expected {} from the {}",
                call.kind, w.1, w.0
            );
            return;
        }
        (Some(g), Some(w)) => (g, w),
    };
    let mut nearest: Option<i64> = None;
    for (side, dir, label) in [
        (sender, Dir::Sent, "sent"),
        (other_side(sender), Dir::Recv, "received"),
    ] {
        let Some(log) = call.at(side, dir, what) else {
            let _ = writeln!(
                report,
                "{cid} ({}): the {side} did not log that it {label} {what}",
                call.kind
            );
            return;
        };
        let d = log.since(got);
        measured.add(
            field,
            if dir == Dir::Sent {
                "sender"
            } else {
                "receiver"
            },
            d,
        );
        if d < 0 {
            let _ = writeln!(
                report,
                "{cid} ({}): {field} is {got}, after the {side} {label} {what} at {log} ({} us before): \
                 the leg time comes from a later packet",
                call.kind, -d
            );
        }
        nearest = Some(nearest.map_or(d, |n: i64| n.min(d)));
    }
    // The sender wrote its previous log line before it sent this message.
    if let Some(sent) = call.at(sender, Dir::Sent, what) {
        if let Some(prev) = call.last_before(sender, sent) {
            if got < prev.at {
                let did = if prev.dir == Dir::Sent {
                    "sent"
                } else {
                    "received"
                };
                let _ = writeln!(
                    report,
                    "{cid} ({}): {field} is {got}, before the {sender} logged that it {did} {} \
                     at {} (its step before sending {what}): the time comes from an earlier packet",
                    call.kind, prev.what, prev.at
                );
            }
        }
    }
    let n = nearest.expect("two logs");
    measured.add(field, "nearer", n);
    if n > TOLERANCE_US {
        let _ = writeln!(
            report,
            "{cid} ({}): {field} is {got}, but sipp's logs of {what} are {n} us or more after it (tolerance {TOLERANCE_US} us)",
            call.kind
        );
    }
}

fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live_sipp");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The calls in sipp's logs, checked for sense.
fn calls_of(events: &[LogEvent], n: usize, here: &str) -> BTreeMap<String, CallLog> {
    let calls = sipp::calls(events);
    assert_eq!(calls.len(), n, "calls in sipp's logs {here}");
    for c in calls.values() {
        assert!(
            expect(&c.kind).is_some(),
            "{}: unknown kind {:?} {here}",
            c.call_id,
            c.kind
        );
        assert!(
            c.at("uac", Dir::Sent, "INVITE").is_some(),
            "{}: no INVITE logged {here}",
            c.call_id
        );
    }
    calls
}

/// Replays `pcap` and compares the legs with the calls: exactly one leg per
/// call on the UAC-to-UAS hop, ended as scripted, at sipp's times, and no
/// other leg. `non_sip` bounds the non-SIP datagrams (capture markers).
/// Panics with every difference found.
fn check_capture(
    pcap: &Path,
    calls: &BTreeMap<String, CallLog>,
    uac: SocketAddr,
    uas: SocketAddr,
    non_sip: RangeInclusive<u64>,
    here: &str,
) {
    let (legs, stats, errors) = replay_legs(&[pcap.to_path_buf()]);
    assert!(errors.is_empty(), "replay errors: {errors:?} {here}");

    let mut report = String::new();
    let mut measured = Measured::default();
    for call in calls.values() {
        let want = expect(&call.kind).expect("known kind");
        let mine: Vec<&Leg> = legs
            .iter()
            .filter(|l| *l.call_id == *call.call_id && l.src == uac && l.dst == uas)
            .collect();
        if mine.len() != 1 {
            let _ = writeln!(
                report,
                "{} ({}): {} legs on {uac} -> {uas}, expected 1",
                call.call_id,
                call.kind,
                mine.len()
            );
            continue;
        }
        let leg = mine[0];
        let k = format!("{} ({})", call.call_id, call.kind);
        if leg.final_status != Some(want.final_status) {
            let _ = writeln!(
                report,
                "{k}: final_status {:?}, expected {}",
                leg.final_status, want.final_status
            );
        }
        if leg.end != Some(want.end) {
            let _ = writeln!(report, "{k}: end {:?}, expected {:?}", leg.end, want.end);
        }
        if leg.ended_by != Some(want.ended_by) {
            let _ = writeln!(
                report,
                "{k}: ended_by {:?}, expected {:?}",
                leg.ended_by, want.ended_by
            );
        }
        if leg.partial {
            let _ = writeln!(report, "{k}: marked partial");
        }
        if !leg.from_tag.starts_with("uac")
            || !leg.to_tag.as_deref().unwrap_or("").starts_with("uas")
        {
            let _ = writeln!(report, "{k}: tags {:?} / {:?}", leg.from_tag, leg.to_tag);
        }
        check_time(
            &mut report,
            &mut measured,
            call,
            "started",
            Some(leg.started),
            Some(("uac", "INVITE")),
        );
        check_time(
            &mut report,
            &mut measured,
            call,
            "ringing",
            leg.ringing.get(),
            want.ringing,
        );
        check_time(
            &mut report,
            &mut measured,
            call,
            "answered",
            leg.answered.get(),
            want.answered,
        );
        check_time(
            &mut report,
            &mut measured,
            call,
            "ended",
            leg.ended.get(),
            Some(want.ended),
        );
        check_time(
            &mut report,
            &mut measured,
            call,
            "final_at",
            leg.final_at.get(),
            Some(want.final_at),
        );
    }
    for l in &legs {
        if !calls.contains_key(&*l.call_id) || l.src != uac || l.dst != uas {
            let _ = writeln!(
                report,
                "extra leg: {} {} -> {} ({:?})",
                l.call_id, l.src, l.dst, l.end
            );
        }
    }
    if !stats.sip.parse_errors.is_empty() {
        let _ = writeln!(report, "parse errors: {:?}", stats.sip.parse_errors);
    }
    if stats.legs.orphans != 0 {
        let _ = writeln!(report, "{} orphan messages", stats.legs.orphans);
    }
    // every message sipp sent is in the capture (retransmissions come on top)
    let sent = calls
        .values()
        .flat_map(|c| &c.events)
        .filter(|e| e.dir == Dir::Sent)
        .count() as u64;
    if stats.sip.messages < sent {
        let _ = writeln!(
            report,
            "{} SIP messages in the capture, but sipp sent {sent}",
            stats.sip.messages
        );
    }
    if !non_sip.contains(&stats.sip.non_sip_datagrams) {
        let _ = writeln!(
            report,
            "{} non-SIP datagrams, expected {non_sip:?} (capture markers)",
            stats.sip.non_sip_datagrams
        );
    }

    if let Some(median) = measured.median("nearer") {
        if median > MEDIAN_TOLERANCE_US {
            let _ = writeln!(
                report,
                "sipp's logs trail the leg times by {median} us in the median \
                 (tolerance {MEDIAN_TOLERANCE_US} us): are the leg times shifted?"
            );
        }
    }
    measured.print();
    eprintln!(
        "{} calls, {} legs, {} SIP messages ({sent} sent by sipp), {} INVITE retransmissions {here}",
        calls.len(),
        legs.len(),
        stats.sip.messages,
        stats.legs.retransmissions,
    );
    assert!(
        report.is_empty(),
        "legs do not match what sipp did {here}:\n{report}"
    );
}

#[test]
fn sipp_calls_on_loopback_match_the_legs() {
    let Some(tools) = sipp::tools_or_skip(TEST) else {
        return;
    };
    let dir = work_dir();
    let uac_ip = Ipv4Addr::new(127, 0, 0, 2);
    let uas_ip = Ipv4Addr::new(127, 0, 0, 3);
    let traffic = Traffic {
        dir: dir.clone(),
        uac: SocketAddrV4::new(uac_ip, sipp::free_udp_port(uac_ip)),
        uas: SocketAddrV4::new(uas_ip, sipp::free_udp_port(uas_ip)),
        calls: sipp::injection_lines(&sipp::scenario_dir().join("calls.csv")),
        rate: 10,
    };
    let run = match traffic.run(&tools) {
        Ok(r) => r,
        Err(CaptureError::Permission(m)) if !in_ci() => {
            eprintln!("SKIP: {TEST}: cannot capture on lo: {m} (run as root, or give dumpcap its capabilities)");
            return;
        }
        Err(e) => panic!("{TEST}: {e}\n(work directory: {})", dir.display()),
    };
    let here = format!(
        "(capture by {}; it and sipp's logs are in {})",
        tools.capture.name(),
        dir.display()
    );
    let mut events = sipp::parse_log(&run.uac_log).unwrap();
    events.extend(sipp::parse_log(&run.uas_log).unwrap());
    let calls = calls_of(&events, traffic.calls, &here);
    // the capture markers are the only non-SIP datagrams; at least the
    // start and the stop marker are in the file
    check_capture(
        &run.pcap,
        &calls,
        SocketAddr::V4(traffic.uac),
        SocketAddr::V4(traffic.uas),
        2..=run.markers_sent as u64,
        &here,
    );
}

/// The committed fixture (`scripts/make-fixtures`) against the sipp logs
/// recorded with it: the same checks, without sipp or a capture.
#[test]
fn fixture_matches_its_sipp_logs() {
    let fixtures = cbt_tests::workspace_root().join("tests/fixtures");
    let pcap = fixtures.join("sipp-basic.pcap");
    let log = fixtures.join("sipp-basic.events");
    let here = format!("({})", pcap.display());
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    // first line: "# uac ADDR uas ADDR calls N"
    let head: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let (uac, uas, n) = match head.as_slice() {
        ["#", "uac", uac, "uas", uas, "calls", n, ..] => (
            uac.parse::<SocketAddr>().expect("uac address"),
            uas.parse::<SocketAddr>().expect("uas address"),
            n.parse::<usize>().expect("call count"),
        ),
        _ => panic!(
            "{}: the first line should be '# uac ADDR uas ADDR calls N'",
            log.display()
        ),
    };
    let events = sipp::parse_log(&log).unwrap();
    let calls = calls_of(&events, n, &here);
    check_capture(&pcap, &calls, uac, uas, 0..=0, &here);
}
