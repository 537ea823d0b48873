//! The outcome rules, driven through the whole engine: the worked examples
//! of the requirements (cbt-metrics.md), topology by topology.

use super::*;
use crate::engine::{Engine, EngineConfig};
use crate::number::Hasher;
use crate::site::{AddrMatch, CallbackWindow, Endpoint, ExtPattern, OrgCodes, Practice, UserMatch};
use crate::synth::{frames, Call, Msg, Script};
use crate::time::{MILLISECOND, SECOND};
use crate::wire::LinkType;
use std::net::SocketAddr;

const KEY: [u8; 32] = [9; 32];
const CARRIER: &str = "192.0.2.1:5060";
const PBX: &str = "10.20.0.5:5060";
const H1: &str = "10.20.1.11:5060";
const H2: &str = "10.20.1.12:5060";
const IVR: &str = "10.20.0.6:5060";
const VM: &str = "10.20.0.9:5060";
const CB: &str = "10.20.0.7:5060";
const CALLER: &str = "07700900123";
const DDI: &str = "01632960123";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hasher() -> Hasher {
    Hasher::new(KEY, "44")
}

pub(crate) fn test_site() -> Site {
    let h = hasher();
    let mut s = Site::single("B82005", &["01632 960123", "01632 960124"], &h);
    s.practices.push(Practice {
        ods: "B82099".into(),
        name: None,
        number_hashes: vec![h.hash("+44 1632 960777")],
        codes: OrgCodes::default(),
    });
    s.carrier = vec![AddrMatch::parse("192.0.2.0/24").unwrap()];
    s.pbx = vec![AddrMatch::parse("10.20.0.5").unwrap()];
    s.staff = vec![AddrMatch::parse("10.20.1.0/24").unwrap()];
    s.automated = vec![Endpoint::parse("10.20.0.6", &h)];
    s.voicemail = vec![Endpoint::parse("10.20.0.9", &h)];
    s.callback_request = vec![Endpoint::User(UserMatch::new("callback", &h))];
    s.callback_window = CallbackWindow::SameDay;
    s
}

/// A leg: `from` -> `to`, starting `start_ms` after 09:00 UTC on a Monday.
fn leg(id: &str, from: &str, to: &str, caller: &str, callee: &str, start_ms: i64, script: Script) -> Call {
    let mut c = Call::numbered(0, a(from), a(to), t0().add(start_ms * MILLISECOND), script);
    c.call_id = format!("{id}@test");
    c.from_tag = format!("ft-{id}");
    c.to_tag = format!("tt-{id}-{}", to.replace(['.', ':'], ""));
    c.branch = format!("br-{id}-{}", from.replace(['.', ':'], ""));
    c.caller = caller.into();
    c.callee = callee.into();
    c
}

/// Another hop of the same dialog (a proxy forwarding the INVITE).
fn hop(of: &Call, from: &str, to: &str, start_ms: i64, script: Script) -> Call {
    let mut c = of.clone();
    c.a = a(from);
    c.b = a(to);
    c.start = t0().add(start_ms * MILLISECOND);
    c.script = script;
    c.to_tag = format!("tt-{}", to.replace(['.', ':'], ""));
    c.branch = format!("br-{}-{}", from.replace(['.', ':'], ""), to.replace(['.', ':'], ""));
    c
}

fn t0() -> Timestamp {
    Timestamp::from_secs_micros(1_730_710_800, 0) // Mon 4 Nov 2024 09:00 UTC (09:00 GMT)
}

/// Runs the legs through an engine with the test site; returns the calls
/// (callback-made events applied).
fn run(legs: &[Call]) -> Vec<CallRecord> {
    run_with(test_site(), legs)
}

fn run_with(site: Site, legs: &[Call]) -> Vec<CallRecord> {
    run_counted(site, legs).0
}

/// The calls, in order, and the call layer's counters after them.
fn run_counted(site: Site, legs: &[Call]) -> (Vec<CallRecord>, CallStats) {
    let mut msgs: Vec<Msg> = legs.iter().flat_map(|c| c.messages()).collect();
    msgs.sort_by_key(|m| m.ts);
    let mut e = Engine::new(EngineConfig {
        hash_key: KEY,
        site: Some(site),
        ..EngineConfig::default()
    });
    for (i, m) in msgs.iter().enumerate() {
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
    }
    let last = msgs.last().map(|m| m.ts).unwrap_or(t0());
    e.tick(last.add(6 * HOUR));
    e.finish();
    let stats = e.stats().calls.expect("a site");
    let mut calls: BTreeMap<u64, CallRecord> = BTreeMap::new();
    while let Some(ev) = e.poll_call() {
        match ev {
            CallEvent::Finished(r) => {
                calls.insert(r.seq, *r);
            }
            CallEvent::CallbackMade { seq, at, .. } => calls.get_mut(&seq).unwrap().callback_made = Some(at),
        }
    }
    (calls.into_values().collect(), stats)
}

fn secs(ms: i64) -> Option<f64> {
    Some(ms as f64 / 1000.0)
}

fn close(x: Option<f64>, want: Option<f64>) -> bool {
    match (x, want) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (None, None) => true,
        _ => false,
    }
}

macro_rules! assert_call {
    ($c:expr, $outcome:expr, wait $w:expr, duration $d:expr, abandoned $ab:expr) => {{
        let c = &$c;
        assert_eq!(c.outcome, $outcome, "{c:#?}");
        let (w, d): (Option<f64>, Option<f64>) = ($w, $d);
        assert!(close(c.wait_s, w), "wait {:?} want {:?}: {c:#?}", c.wait_s, w);
        assert!(close(c.duration_s, d), "duration {:?} want {:?}: {c:#?}", c.duration_s, d);
        assert_eq!(c.abandoned, $ab, "{c:#?}");
    }};
}

fn answered(ring: u32, answer: u32, talk: u32, caller_hangs_up: bool) -> Script {
    Script::Answered {
        ring,
        answer,
        talk,
        caller_hangs_up,
    }
}

#[test]
fn example_1_forked_ring_group_answered() {
    let trunk = leg("x1", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4000, 60_000, true));
    let calls = run(&[
        trunk.clone(),
        hop(&trunk, PBX, H1, 0, answered(100, 4000, 60_000, true)),
        hop(&trunk, PBX, H2, 0, Script::Cancelled { ring: 100, cancel: 4002 }),
    ]);
    assert_eq!(calls.len(), 1);
    assert_call!(calls[0], Outcome::Answered, wait secs(4000), duration secs(60_000), abandoned false);
    assert_eq!(calls[0].practice, "B82005");
    assert_eq!(calls[0].correlation.same_call_id, 2);
    assert_eq!(calls[0].ended_by, EndedBy::Caller);
    assert_eq!(calls[0].first_ring, Some(t0().add(100 * MILLISECOND)));
}

#[test]
fn example_2_caller_cancels_while_both_ring() {
    let trunk = leg("x2", CARRIER, PBX, CALLER, DDI, 0, Script::Cancelled { ring: 100, cancel: 9000 });
    let calls = run(&[
        trunk.clone(),
        hop(&trunk, PBX, H1, 0, Script::Cancelled { ring: 100, cancel: 9001 }),
        hop(&trunk, PBX, H2, 0, Script::Cancelled { ring: 100, cancel: 9001 }),
    ]);
    assert_call!(calls[0], Outcome::Missed, wait secs(9000), duration None, abandoned true);
    assert!(calls[0].offered_to_staff);
}

#[test]
fn example_3_busy() {
    let calls = run(&[leg("x3", CARRIER, PBX, CALLER, DDI, 0, Script::Rejected { ring: None, at: 200, code: 486 })]);
    assert_call!(calls[0], Outcome::Missed, wait secs(200), duration None, abandoned false);
    assert_eq!(calls[0].ended_by, EndedBy::Practice);
}

#[test]
fn example_4_ivr_message_then_caller_hangs_up() {
    let calls = run(&[leg("x4", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 11_900, true))]);
    assert_call!(calls[0], Outcome::EndedInIvr, wait None, duration None, abandoned true);
}

#[test]
fn example_5_b2bua_handset_answers() {
    let calls = run(&[
        leg("x5", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 94_900, true)),
        leg("x5h", PBX, H1, CALLER, "201", 20_000, answered(100, 15_000, 60_000, true)),
    ]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(15_000), duration secs(60_000), abandoned false);
    assert_eq!(calls[0].correlation.b2bua, 1);
    assert_eq!(calls[0].queue_joined, Some(t0().add(20 * SECOND)));
}

#[test]
fn example_6_b2bua_handset_never_answers() {
    let calls = run(&[
        leg("x6", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 49_900, true)),
        leg("x6h", PBX, H1, CALLER, "201", 20_000, Script::Cancelled { ring: 100, cancel: 30_001 }),
    ]);
    assert_call!(calls[0], Outcome::Missed, wait secs(30_000), duration None, abandoned true);
}

#[test]
fn example_7_voicemail_is_missed_not_abandoned() {
    let calls = run(&[
        leg("x7", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 69_900, true)),
        leg("x7h", PBX, H1, CALLER, "201", 20_000, Script::Cancelled { ring: 100, cancel: 20_000 }),
        leg("x7v", PBX, VM, CALLER, "vm", 40_000, answered(10, 50, 29_000, false)),
    ]);
    assert_call!(calls[0], Outcome::Missed, wait secs(20_000), duration None, abandoned false);
    assert_eq!(calls[0].voicemail, Some(t0().add(40 * SECOND)));
}

#[test]
fn example_8_callback_requested_then_made() {
    let calls = run(&[
        leg("x8", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 24_900, false)),
        leg("x8c", PBX, CB, CALLER, "callback", 20_000, answered(10, 100, 4_800, false)),
        // the callback: out through the carrier to the caller, written another way
        leg("x8o", PBX, CARRIER, DDI, "+447700900123", 400_000, answered(500, 5_000, 60_000, true)),
    ]);
    assert_eq!(calls.len(), 1, "outbound calls are not inbound calls: {calls:#?}");
    assert_call!(calls[0], Outcome::CallbackRequested, wait None, duration None, abandoned false);
    assert_eq!(calls[0].callback_requested, Some(t0().add(20 * SECOND)));
    assert_eq!(calls[0].callback_made, Some(t0().add(400 * SECOND)));
}

#[test]
fn example_9_internal_and_outbound_calls_do_not_count() {
    let calls = run(&[
        leg("x9i", H1, H2, "201", "202", 0, answered(100, 2000, 10_000, true)),
        leg("x9o", H1, PBX, "201", "901632960555", 0, answered(100, 2000, 10_000, true)),
        leg("x9t", PBX, CARRIER, DDI, "01632960555", 10, answered(100, 2000, 10_000, true)),
    ]);
    assert!(calls.is_empty(), "{calls:#?}");
}

#[test]
fn one_callback_per_request_and_only_within_the_window() {
    let calls = run(&[
        leg("r1", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 24_900, false)),
        leg("r1c", PBX, CB, CALLER, "callback", 20_000, answered(10, 100, 4_800, false)),
        leg("o1", PBX, CARRIER, DDI, CALLER, 100_000, answered(100, 2000, 1000, true)),
        leg("o2", PBX, CARRIER, DDI, CALLER, 200_000, answered(100, 2000, 1000, true)),
    ]);
    assert_eq!(calls[0].callback_made, Some(t0().add(100 * SECOND)));
    // requested at 09:00:20 UTC = 09:00:20 local; the same day ends at midnight
    let late = run(&[
        leg("r2", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 24_900, false)),
        leg("r2c", PBX, CB, CALLER, "callback", 20_000, answered(10, 100, 4_800, false)),
        leg("o3", PBX, CARRIER, DDI, CALLER, 15 * 3600 * 1000, answered(100, 2000, 1000, true)),
    ]);
    assert_eq!(late[0].callback_made, None, "15:00 later is the next day");
}

#[test]
fn practices_by_number_and_unassigned() {
    let calls = run(&[
        leg("p1", CARRIER, PBX, CALLER, "+441632960124", 0, Script::Rejected { ring: None, at: 100, code: 486 }),
        leg("p2", CARRIER, PBX, "07700900999", "441632960777", 10, Script::Rejected { ring: None, at: 100, code: 486 }),
        leg("p3", CARRIER, PBX, "07700900888", "01632960555", 20, Script::Rejected { ring: None, at: 100, code: 486 }),
    ]);
    let p: Vec<&str> = calls.iter().map(|c| c.practice.as_str()).collect();
    assert_eq!(p, ["B82005", "B82099", crate::site::UNASSIGNED]);
}

#[test]
fn automated_only_is_ended_in_ivr_and_direct_staff_is_answered() {
    let calls = run(&[
        // the carrier reaches an IVR server that answers; the caller hangs up
        leg("d1", CARRIER, IVR, CALLER, DDI, 0, answered(10, 200, 15_000, true)),
        // a direct call to a handset: waits from the INVITE
        leg("d2", CARRIER, H1, "07700900456", DDI, 10, answered(300, 7000, 20_000, false)),
    ]);
    assert_call!(calls[0], Outcome::EndedInIvr, wait None, duration None, abandoned true);
    assert_call!(calls[1], Outcome::Answered, wait secs(7000), duration secs(20_000), abandoned false);
    assert_eq!(calls[1].ended_by, EndedBy::Practice);
}

#[test]
fn b2bua_ambiguity_goes_to_the_earliest_unanswered_call() {
    // two concurrent calls from the same withheld caller: the first handset
    // leg goes to the first call; once that is answered, the next to the second
    let calls = run(&[
        leg("w1", CARRIER, PBX, "anonymous", DDI, 0, answered(50, 100, 60_000, true)),
        leg("w2", CARRIER, PBX, "anonymous", DDI, 1_000, answered(50, 100, 60_000, true)),
        leg("w1h", PBX, H1, "anonymous", "201", 5_000, answered(100, 500, 30_000, true)),
        leg("w2h", PBX, H2, "anonymous", "202", 6_000, answered(100, 3_000, 30_000, true)),
    ]);
    assert_call!(calls[0], Outcome::Answered, wait secs(500), duration secs(54_600), abandoned false);
    assert_call!(calls[1], Outcome::Answered, wait secs(3_000), duration secs(52_100), abandoned false);
}

/// The leg with its caller's requests carrying `header`.
fn with(mut c: Call, header: &str) -> Call {
    c.extra.push(header.to_string());
    c
}

#[test]
fn a_b2bua_passing_session_id_ties_each_leg_to_its_own_call() {
    // two withheld callers at once; the PBX rings the second caller's
    // handset first. The heuristic alone would give that leg to the first
    // call (the earliest not yet offered); the RFC 7989 Session-ID the
    // PBX passes on says whose it is.
    let s1 = "Session-ID: ab30317f1a784dc48ff824d0d3715d86;remote=00000000000000000000000000000000";
    let s2 = "Session-ID: 47755A9DE7794BA387653F2099600EF2";
    let calls = run(&[
        with(leg("s1", CARRIER, PBX, "anonymous", DDI, 0, answered(50, 100, 60_000, true)), s1),
        with(leg("s2", CARRIER, PBX, "anonymous", DDI, 1_000, answered(50, 100, 60_000, true)), s2),
        with(leg("s2h", PBX, H2, "anonymous", "202", 5_000, answered(100, 500, 30_000, true)), s2),
        with(leg("s1h", PBX, H1, "anonymous", "201", 6_000, answered(100, 3_000, 30_000, true)), s1),
    ]);
    assert_eq!(calls.len(), 2);
    assert_call!(calls[0], Outcome::Answered, wait secs(3_000), duration secs(51_100), abandoned false);
    assert_call!(calls[1], Outcome::Answered, wait secs(500), duration secs(55_600), abandoned false);
    assert_eq!((calls[0].correlation.header, calls[0].correlation.b2bua), (1, 0));
    // a null UUID or a malformed one says nothing: the heuristic decides
    let calls = run(&[
        with(leg("n1", CARRIER, PBX, "anonymous", DDI, 0, answered(50, 100, 60_000, true)), "Session-ID: 00000000000000000000000000000000"),
        with(leg("n1h", PBX, H1, "anonymous", "201", 5_000, answered(100, 500, 30_000, true)), "Session-ID: 00000000000000000000000000000000"),
        with(leg("n2", CARRIER, PBX, "anonymous", DDI, 100_000, answered(50, 100, 60_000, true)), "Session-ID: not-a-uuid"),
        with(leg("n2h", PBX, H1, "anonymous", "201", 105_000, answered(100, 500, 30_000, true)), "Session-ID: not-a-uuid"),
    ]);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.correlation.header == 0 && c.correlation.b2bua == 1), "{calls:#?}");
}

#[test]
fn a_b2bua_naming_the_dialled_number_ties_each_leg_to_its_own_call() {
    // two withheld callers at once to two of the practice's numbers; the
    // PBX rings the second caller's handset first, straight from its queue
    // (no leg ends before: the hand-over rule cannot help). The heuristic
    // alone gives that leg to the first call; the number the PBX's legs say
    // they were for (Diversion, History-Info, P-Called-Party-ID) tells.
    let ddi2 = "01632960124";
    let scenario = |h2: &str, h1: &str| {
        run(&[
            leg("d1", CARRIER, PBX, "anonymous", DDI, 0, answered(50, 100, 14_900, true)),
            leg("d2", CARRIER, PBX, "anonymous", ddi2, 1_000, answered(50, 100, 60_000, true)),
            with(leg("d2h", PBX, H2, "anonymous", "202", 5_000, answered(100, 500, 30_000, true)), h2),
            with(leg("d1h", PBX, H1, "anonymous", "201", 6_000, Script::Cancelled { ring: 100, cancel: 9_000 }), h1),
        ])
    };
    for (h2, h1) in [
        ("Diversion: <sip:+441632960124@pbx.example;user=phone>;reason=unconditional;counter=1", "Diversion: \"Surgery\" <sip:01632960123@pbx.example>;reason=no-answer"),
        ("History-Info: <sip:01632960124@carrier.example>;index=1, <sip:202@pbx.example>;index=1.1", "History-Info: <sip:01632960123@carrier.example>;index=1"),
        ("P-Called-Party-ID: <tel:+44-1632-960124>", "P-Called-Party-ID: <sip:01632960123@pbx.example>"),
    ] {
        let calls = scenario(h2, h1);
        assert_eq!(calls.len(), 2);
        // the wait runs from the first offer to a person: d1 rang H1 from
        // 6 s until the caller gave up at 15 s; d2 rang H2 from 5 s, answered
        // at 5.5 s, and the caller stayed on the PBX to 61.1 s
        assert_call!(calls[0], Outcome::Missed, wait secs(9_000), duration None, abandoned true);
        assert_call!(calls[1], Outcome::Answered, wait secs(500), duration secs(55_600), abandoned false);
    }
    // without them the same traffic swaps the two calls' handset legs
    // (the practice's counts stay right; each call's outcome does not)
    let calls = scenario("Subject: nothing", "Subject: nothing");
    assert_eq!((calls[0].outcome, calls[1].outcome), (Outcome::Answered, Outcome::Missed), "{calls:#?}");
}

fn media(mut c: Call, at: &str) -> Call {
    c.media = Some(a(at));
    c
}

#[test]
fn a_b2bua_passing_the_callers_media_on_ties_each_leg_to_its_own_call() {
    // two withheld callers at once to the same number (the dialled number
    // cannot tell them apart); the PBX rings the second caller's handset
    // first, straight from its queue. A PBX that does not anchor the media
    // offers each handset its caller's own SDP: the address and port say
    // whose leg it is.
    let scenario = |h2: &str, h1: &str| {
        run(&[
            media(leg("m1", CARRIER, PBX, "anonymous", DDI, 0, answered(50, 100, 14_900, true)), "198.51.100.7:31000"),
            media(leg("m2", CARRIER, PBX, "anonymous", DDI, 1_000, answered(50, 100, 60_000, true)), "198.51.100.7:31002"),
            media(leg("m2h", PBX, H2, "anonymous", "202", 5_000, answered(100, 500, 30_000, true)), h2),
            media(leg("m1h", PBX, H1, "anonymous", "201", 6_000, Script::Cancelled { ring: 100, cancel: 9_000 }), h1),
        ])
    };
    let calls = scenario("198.51.100.7:31002", "198.51.100.7:31000");
    assert_eq!(calls.len(), 2);
    assert_call!(calls[0], Outcome::Missed, wait secs(9_000), duration None, abandoned true);
    assert_call!(calls[1], Outcome::Answered, wait secs(500), duration secs(55_600), abandoned false);
    assert!(calls.iter().all(|c| c.correlation.b2bua == 1), "{calls:#?}");
    // a PBX that anchors the media offers its own address on every leg: the
    // timing rules decide, and give the first handset leg to the first call
    let calls = scenario("10.20.0.5:20002", "10.20.0.5:20000");
    assert_eq!((calls[0].outcome, calls[1].outcome), (Outcome::Answered, Outcome::Missed), "{calls:#?}");
}

#[test]
fn a_pickup_code_answers_the_call_ringing_another_handset() {
    // a B2BUA rings H1 for the caller; H2 dials *8 (group pickup) and the
    // PBX bridges the call itself: it answers H2's leg at 7.8 s, answers
    // the trunk leg then and cancels H1's leg. H2 hangs up at 27.8 s.
    let traffic = [
        leg("k1", CARRIER, PBX, CALLER, DDI, 0, answered(50, 7_850, 20_000, false)),
        leg("k1h", PBX, H1, CALLER, "201", 200, Script::Cancelled { ring: 100, cancel: 7_700 }),
        leg("k2p", H2, PBX, "202", "*8", 7_500, answered(0, 300, 20_000, true)),
    ];
    let mut site = test_site();
    site.pickup_codes = vec![ExtPattern::parse("*8").unwrap(), ExtPattern::parse("**2XX").unwrap()];
    let calls = run_with(site.clone(), &traffic);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    // answered at the pickup, 7.6 s after H1 began ringing; until the PBX
    // ended the trunk leg after H2's hang-up
    assert_call!(calls[0], Outcome::Answered, wait secs(7_600), duration secs(20_050), abandoned false);
    assert_eq!(calls[0].ended_by, EndedBy::Practice, "{calls:#?}");
    // a directed pickup (**201) reads the same; nothing ringing: no call's
    let mut directed = traffic.clone();
    directed[2].callee = "**201".into();
    let calls = run_with(site.clone(), &directed);
    assert_call!(calls[0], Outcome::Answered, wait secs(7_600), duration secs(20_050), abandoned false);
    let mut late = traffic.clone();
    late[2] = leg("k2p", H2, PBX, "202", "*8", 40_000, answered(0, 300, 2_000, true));
    let calls = run_with(site.clone(), &late);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].outcome, Outcome::Missed, "{calls:#?}");
    // without the code configured, the pickup is invisible: missed
    let calls = run(&traffic);
    assert_eq!(calls[0].outcome, Outcome::Missed, "{calls:#?}");
}

#[test]
fn two_calls_ringing_at_a_pickup_give_it_to_the_longest_ringing_and_count_the_doubt() {
    // the pickup passes a proxy in front of the PBX (10.20.0.8): two hops
    // of one dialog, both answered, pick up one call, not one call each
    let pickup = leg("q3p", H2, PBX, "202", "*8", 7_500, answered(0, 300, 20_000, true));
    let traffic = [
        leg("q1", CARRIER, PBX, CALLER, DDI, 0, answered(50, 7_850, 20_000, false)),
        leg("q1h", PBX, H1, CALLER, "201", 200, Script::Cancelled { ring: 100, cancel: 7_700 }),
        leg("q2", CARRIER, PBX, "07700900456", DDI, 3_000, Script::Cancelled { ring: 50, cancel: 12_000 }),
        leg("q2h", PBX, H1, "07700900456", "201", 3_100, Script::Cancelled { ring: 100, cancel: 11_900 }),
        hop(&pickup, PBX, "10.20.0.8:5060", 7_500, answered(0, 290, 20_010, true)),
        pickup,
    ];
    let mut site = test_site();
    site.pickup_codes = vec![ExtPattern::parse("*8").unwrap()];
    let (calls, stats) = run_counted(site, &traffic);
    assert_eq!((stats.pickups, stats.b2bua_ambiguous), (1, 1), "{stats:#?}");
    // q1 has rung since 0.2 s, q2 since 3.1 s: q1 is picked up
    assert_eq!((calls[0].outcome, calls[1].outcome), (Outcome::Answered, Outcome::Missed), "{calls:#?}");
    assert_eq!(calls[0].call_id, "q1@test");
}

#[test]
fn a_directed_pickup_code_picks_the_call_ringing_the_extension_it_names() {
    // A rings 201 from 0.2 s, B rings 202 from 3.1 s; H3 dials **202 at
    // 7.5 s: B is picked up (not A, which has rung longer)
    let traffic = [
        leg("r1", CARRIER, PBX, CALLER, DDI, 0, Script::Cancelled { ring: 50, cancel: 12_000 }),
        leg("r1h", PBX, H1, CALLER, "201", 200, Script::Cancelled { ring: 100, cancel: 11_700 }),
        leg("r2", CARRIER, PBX, "07700900456", DDI, 3_000, answered(50, 4_850, 20_000, false)),
        leg("r2h", PBX, H2, "07700900456", "202", 3_100, Script::Cancelled { ring: 100, cancel: 4_600 }),
        leg("r3p", "10.20.1.13:5060", PBX, "203", "**202", 7_500, answered(0, 300, 20_000, true)),
    ];
    let mut site = test_site();
    site.pickup_codes = vec![ExtPattern::parse("**2XX").unwrap()];
    let (calls, stats) = run_counted(site, &traffic);
    assert_eq!((stats.pickups, stats.b2bua_ambiguous), (1, 0), "{stats:#?}");
    assert_eq!((calls[0].outcome, calls[1].outcome), (Outcome::Missed, Outcome::Answered), "{calls:#?}");
    // answered at the pickup, 4.7 s after 202 began ringing
    assert_call!(calls[1], Outcome::Answered, wait secs(4_700), duration secs(20_050), abandoned false);
}

/// The dialled number in a PBX leg's headers is hashed before anything
/// holds it: legs, the journal (what is written to disk) and its replay.
#[test]
fn called_number_headers_are_hashed_before_the_journal() {
    let mut e = Engine::new(EngineConfig { hash_key: KEY, site: Some(test_site()), journal: true, ..EngineConfig::default() });
    let l = with(
        with(leg("j1", PBX, H1, "anonymous", "201", 0, answered(50, 100, 1_000, true)), "Diversion: <sip:01632960124@pbx.example>;reason=unconditional"),
        "Referred-By: <sip:07700900555@carrier.example>",
    );
    for (i, m) in l.messages().iter().enumerate() {
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
    }
    let journal: Vec<_> = std::iter::from_fn(|| e.poll_journal()).collect();
    let invite = journal.iter().find(|j| j.msg.header("Diversion").is_some()).expect("the INVITE is journaled");
    let v = invite.msg.header("Diversion").unwrap();
    assert!(v.starts_with('#') && !v.contains("960124"), "{v}");
    // the transferring party too: only the header's presence is read
    assert!(invite.msg.header("Referred-By").is_some_and(|v| v.starts_with('#')));
    let text = format!("{journal:?}");
    assert!(!text.contains("1632960124") && !text.contains("7700900555"), "a number reached the journal");
}

#[test]
fn b2bua_ambiguity_ring_groups_hunt_groups_and_a_second_caller() {
    // a second call from the same number arrives while the first one's
    // handset rings: its own handset leg is its own
    let calls = run(&[
        leg("c4", CARRIER, PBX, "anonymous", DDI, 0, Script::Answered { ring: 10, answer: 1_610, talk: 1_008, caller_hangs_up: true }),
        leg("c4h", PBX, H1, "anonymous", "201", 100, answered(50, 1_510, 1_008, true)),
        leg("c5", CARRIER, PBX, "anonymous", DDI, 300, Script::Answered { ring: 10, answer: 1_010, talk: 1_205, caller_hangs_up: true }),
        leg("c5h", PBX, H2, "anonymous", "202", 310, answered(50, 1_000, 1_205, true)),
    ]);
    assert_eq!(calls.len(), 2);
    assert_call!(calls[0], Outcome::Answered, wait secs(1_510), duration secs(1_008), abandoned false);
    assert_call!(calls[1], Outcome::Answered, wait secs(1_000), duration secs(1_205), abandoned false);
    // a ring group: both handsets of the first call ring at once, though a
    // second call from the same number waits in the queue
    let calls = run(&[
        leg("g1", CARRIER, PBX, "anonymous", DDI, 0, answered(10, 100, 60_000, true)),
        leg("g2", CARRIER, PBX, "anonymous", DDI, 1_000, answered(10, 100, 60_000, true)),
        leg("g1a", PBX, H1, "anonymous", "201", 5_000, answered(50, 2_000, 30_000, true)),
        leg("g1b", PBX, H2, "anonymous", "202", 5_003, Script::Cancelled { ring: 50, cancel: 2_000 }),
    ]);
    assert_eq!((calls[0].legs, calls[1].legs), (3, 1), "{calls:#?}");
    // a hunt group: the next handset right after the first gave up
    let calls = run(&[
        leg("h1", CARRIER, PBX, "anonymous", DDI, 0, answered(10, 100, 60_000, true)),
        leg("h2", CARRIER, PBX, "anonymous", DDI, 1_000, answered(10, 100, 60_000, true)),
        leg("h1a", PBX, H1, "anonymous", "201", 2_000, Script::Cancelled { ring: 50, cancel: 15_000 }),
        leg("h1b", PBX, H2, "anonymous", "202", 17_100, answered(50, 2_000, 30_000, true)),
    ]);
    assert_eq!((calls[0].legs, calls[1].legs), (3, 1), "{calls:#?}");
    assert_eq!(calls[0].outcome, Outcome::Answered);
}

#[test]
fn handsets_only_view_ring_group_is_one_call_but_repeat_callers_are_not() {
    // a hosted PBX rings two handsets with their own INVITEs: one call
    let calls = run(&[
        leg("hg1", CARRIER, H1, CALLER, "201", 0, answered(100, 3_000, 20_000, true)),
        leg("hg2", CARRIER, H2, CALLER, "202", 20, Script::Cancelled { ring: 100, cancel: 2_990 }),
    ]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].legs, 2);
    // one number calling the same handset twice in quick succession: two calls
    let calls = run(&[
        leg("rp1", CARRIER, H1, "anonymous", "201", 0, answered(100, 3_000, 20_000, true)),
        leg("rp2", CARRIER, H1, "anonymous", "201", 5, answered(100, 3_000, 20_000, true)),
    ]);
    assert_eq!(calls.len(), 2, "{calls:#?}");
}

#[test]
fn a_call_nothing_answered_waits_from_its_invite() {
    // a B2BUA relaying: the carrier leg is never answered; the handset leg
    // starts 30 ms later and the caller gives up while it rings
    let calls = run(&[
        leg("r1", CARRIER, PBX, CALLER, DDI, 0, Script::Cancelled { ring: 40, cancel: 5_000 }),
        leg("r1h", PBX, H1, CALLER, "201", 30, Script::Cancelled { ring: 10, cancel: 4_971 }),
    ]);
    assert_call!(calls[0], Outcome::Missed, wait secs(5_000), duration None, abandoned true);
}

#[test]
fn lost_bye_is_inferred_and_counted() {
    let calls = run(&[leg("n1", CARRIER, PBX, CALLER, DDI, 0, Script::AnsweredNoBye { answer: 100 })]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].ended_by, EndedBy::Inferred);
    assert!(calls[0].partial);
}

#[test]
fn records_never_serialise_a_raw_number() {
    let calls = run(&[leg("s1", CARRIER, PBX, CALLER, DDI, 0, answered(100, 200, 1000, true))]);
    let json = serde_json::to_string(&calls).unwrap();
    assert!(!json.contains("7700900123") && !json.contains("1632960123"), "{json}");
}

#[test]
fn snapshot_plus_journal_gives_the_same_calls_and_stores_no_number() {
    let legs = [
        leg("j1", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 94_900, true)),
        leg("j1h", PBX, H1, CALLER, "201", 20_000, answered(100, 15_000, 60_000, true)),
        leg("j2", CARRIER, PBX, "07700900999", DDI, 5_000, Script::Cancelled { ring: 100, cancel: 9_000 }),
    ];
    let mut msgs: Vec<Msg> = legs.iter().flat_map(|c| c.messages()).collect();
    msgs.sort_by_key(|m| m.ts);
    let engine = || {
        Engine::new(EngineConfig {
            hash_key: KEY,
            site: Some(test_site()),
            journal: true,
            ..EngineConfig::default()
        })
    };
    let frame = |i: usize, m: &Msg| frames::udp(m.src, m.dst, i as u16, &m.bytes);
    let drain = |e: &mut Engine| {
        let mut out = Vec::new();
        while let Some(CallEvent::Finished(r)) = e.poll_call() {
            out.push(*r);
        }
        out
    };
    // uninterrupted
    let mut a = engine();
    for (i, m) in msgs.iter().enumerate() {
        a.ingest(m.ts, LinkType::Ethernet, &frame(i, m));
    }
    a.finish();
    let want = drain(&mut a);
    // snapshot half way, then journal the rest
    let mut b = engine();
    let half = msgs.len() / 2;
    for (i, m) in msgs[..half].iter().enumerate() {
        b.ingest(m.ts, LinkType::Ethernet, &frame(i, m));
    }
    let done_before = drain(&mut b);
    while b.poll_journal().is_some() {}
    let mut snap = Vec::new();
    crate::persist::write_snapshot(&mut snap, 1, &b.snapshot_ref()).unwrap();
    let snap = String::from_utf8(snap).unwrap();
    let (_, read_back) = crate::persist::read_snapshot(snap.as_bytes()).unwrap();
    let stored = |legs: &[crate::leg::Leg]| legs.iter().map(crate::persist::v1::LegV1::from).collect::<Vec<_>>();
    assert_eq!(stored(&read_back.legs.legs), stored(&b.snapshot().legs.legs), "the borrowed snapshot writes the owned state");
    let mut journal = Vec::new();
    for (i, m) in msgs[half..].iter().enumerate() {
        b.ingest(m.ts, LinkType::Ethernet, &frame(half + i, m));
        while let Some(j) = b.poll_journal() {
            journal.push(String::from_utf8(crate::persist::encode_journal_record(&j).1).unwrap());
        }
    }
    let stored = format!("{snap}{}", journal.concat());
    for n in ["7700900123", "7700900999"] {
        assert!(!stored.contains(n), "{n} stored");
    }
    // restart: restore and replay
    let mut c = engine();
    c.restore(crate::persist::read_snapshot(snap.as_bytes()).unwrap().1);
    for j in &journal {
        c.replay_journal(&crate::persist::decode_journal_record(1, j.as_bytes()).unwrap());
    }
    c.finish();
    let mut got = done_before;
    got.extend(drain(&mut c));
    assert_eq!(got, want);
    assert_eq!(got.len(), 2);
}

/// A REFER from the site to the caller in `trunk`'s dialog, at `at_ms`.
fn refer(trunk: &Call, at_ms: i64, target: &str) -> Msg {
    let text = format!(
        "REFER sip:{caller}@{chost} SIP/2.0\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bKrefer{at_ms}\nMax-Forwards: 70\nFrom: <sip:{callee}@{phost}>;tag={tt}\nTo: \"Caller\" <sip:{caller}@{chost}>;tag={ft}\nCall-ID: {cid}\nCSeq: 7 REFER\nRefer-To: <sip:{target}@{phost}>\nReferred-By: <sip:201@{phost}>\nContent-Length: 0\n\n",
        caller = trunk.caller,
        chost = trunk.a.ip(),
        pbx = trunk.b,
        callee = trunk.callee,
        phost = trunk.b.ip(),
        tt = trunk.to_tag,
        ft = trunk.from_tag,
        cid = trunk.call_id,
    );
    Msg {
        ts: t0().add(at_ms * MILLISECOND),
        src: trunk.b,
        dst: trunk.a,
        bytes: text.replace('\n', "\r\n").into_bytes(),
    }
}

fn run_msgs(site: Site, legs: &[Call], more: &[Msg]) -> Vec<CallRecord> {
    let mut msgs: Vec<Msg> = legs.iter().flat_map(|c| c.messages()).chain(more.iter().cloned()).collect();
    msgs.sort_by_key(|m| m.ts);
    let mut e = Engine::new(EngineConfig {
        hash_key: KEY,
        site: Some(site),
        ..EngineConfig::default()
    });
    for (i, m) in msgs.iter().enumerate() {
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
    }
    e.tick(msgs.last().map_or(t0(), |m| m.ts).add(6 * HOUR));
    e.finish();
    std::iter::from_fn(|| e.poll_call())
        .filter_map(|ev| match ev {
            CallEvent::Finished(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// A blind transfer through a proxy: the handset that answered (H1) sends
/// a REFER to the caller, who calls the target (H2) with a new Call-ID and
/// `Referred-By`; H1's dialog ends by its BYE, before or after the new
/// INVITE. One call, answered by H1, lasting to the caller's hang-up on H2.
#[test]
fn a_blind_transfer_through_a_proxy_stays_one_call_to_the_end_of_the_last_leg() {
    // (baresip, for one, sends no Referred-By: the REFER seen in the call ties the new INVITE)
    for (bye_first, referred_by) in [(false, true), (true, true), (false, false), (true, false)] {
        // X: answered by H1 at 4 s; H1 hangs up at 24 s (or 20.5 s, before the new INVITE)
        let talk = if bye_first { 16_500 } else { 20_000 };
        let x = leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4_000, talk, false));
        let x1 = hop(&x, PBX, H1, 0, answered(100, 4_000, talk, false));
        // Y: the caller's new INVITE to 202 at 21 s; H2 answers 5 s later; the caller hangs up at 88 s
        let mut y = leg("y", CARRIER, PBX, CALLER, "202", 21_000, answered(100, 5_000, 62_000, true));
        if referred_by {
            y = with(y, "Referred-By: <sip:201@10.20.0.5>");
        }
        let y2 = hop(&y, PBX, H2, 21_000, answered(100, 5_000, 62_000, true));
        let calls = run_msgs(test_site(), &[x, x1, y, y2], &[refer(&leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4_000, talk, false)), 20_000, "202")]);
        assert_eq!(calls.len(), 1, "bye_first {bye_first} referred_by {referred_by}: {calls:#?}");
        assert_call!(calls[0], Outcome::Answered, wait secs(4_000), duration secs(84_000), abandoned false);
        assert_eq!((calls[0].ended_by, calls[0].practice.as_str(), calls[0].legs), (EndedBy::Caller, "B82005", 4));
        assert_eq!(calls[0].ended, t0().add(88_000 * MILLISECOND));
    }
}

/// A transfer to voicemail after the answer, and to an external number
/// (a mobile), in both topologies (docs/cbt-indicators.md, "Transfers").
#[test]
fn transfers_to_voicemail_and_to_a_mobile_keep_the_call_answered() {
    // B2BUA: H1 answers at 3.1 s and hands the caller to voicemail at 10 s;
    // the caller leaves a message and hangs up at 30.1 s. Still answered
    // (the voicemail rule is for calls nobody answered), to the end.
    let calls = run(&[
        leg("v", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 30_000, true)),
        leg("vh", PBX, H1, CALLER, "201", 1_000, answered(100, 2_100, 6_900, false)),
        leg("vv", PBX, VM, CALLER, "vm", 10_000, answered(10, 50, 20_050, false)),
    ]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(2_100), duration secs(27_000), abandoned false);
    assert_eq!((calls[0].ended_by, calls[0].legs), (EndedBy::Caller, 3));

    // B2BUA to a mobile: the PBX's new leg to the carrier (after a person
    // answered) is an outbound leg, not the call's; the trunk leg carries
    // the caller to the end, when the mobile hangs up (the PBX's BYE)
    let calls = run(&[
        leg("m", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 60_000, false)),
        leg("mh", PBX, H1, CALLER, "201", 1_000, answered(100, 2_100, 6_900, false)),
        leg("mm", PBX, CARRIER, CALLER, "07700900999", 10_000, answered(100, 4_000, 46_000, false)),
    ]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(2_100), duration secs(57_000), abandoned false);
    assert_eq!((calls[0].ended_by, calls[0].legs), (EndedBy::Practice, 2));

    // proxy to voicemail: the caller's new INVITE (Referred-By) goes to the
    // voicemail server; the call stays answered by H1 and lasts until the
    // caller hangs up on voicemail
    let x = leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4_000, 16_500, false));
    let x1 = hop(&x, PBX, H1, 0, answered(100, 4_000, 16_500, false));
    let y = with(leg("y", CARRIER, PBX, CALLER, "vm", 21_000, answered(10, 50, 30_000, true)), "Referred-By: <sip:201@10.20.0.5>");
    let y2 = hop(&y, PBX, VM, 21_000, answered(10, 50, 30_000, true));
    let calls = run_msgs(test_site(), &[x.clone(), x1, y, y2], &[refer(&x, 20_000, "vm")]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(4_000), duration secs(47_050), abandoned false);
    assert_eq!(calls[0].ended_by, EndedBy::Caller);

    // proxy to a mobile: the caller's phone calls the mobile through its
    // own carrier, which the site never sees; the call ends with the
    // caller's leg at the site, H1's BYE after the transfer
    let calls = run_msgs(test_site(), &[x.clone(), hop(&x, PBX, H1, 0, answered(100, 4_000, 16_500, false))], &[refer(&x, 20_000, "07700900999")]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(4_000), duration secs(16_500), abandoned false);
    assert_eq!(calls[0].ended_by, EndedBy::Practice);
}

/// The blind transfer above, with the agent restarting while the caller
/// talks to the transfer target: the engine state goes through the
/// snapshot (`persist::write_snapshot`, read back into a new engine) and
/// the rest of the traffic comes after. Version 2 of the snapshot keeps the
/// transfer: one call, answered by H1, to the caller's hang-up on H2.
#[test]
fn a_transfer_in_progress_across_a_restart_stays_one_call() {
    let x = leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4_000, 20_000, false));
    let x1 = hop(&x, PBX, H1, 0, answered(100, 4_000, 20_000, false));
    let y = with(leg("y", CARRIER, PBX, CALLER, "202", 21_000, answered(100, 5_000, 62_000, true)), "Referred-By: <sip:201@10.20.0.5>");
    let y2 = hop(&y, PBX, H2, 21_000, answered(100, 5_000, 62_000, true));
    let mut msgs: Vec<Msg> = [x.clone(), x1, y, y2].iter().flat_map(|c| c.messages()).chain([refer(&x, 20_000, "202")]).collect();
    msgs.sort_by_key(|m| m.ts);
    let restart = t0().add(55 * SECOND);
    // `as_version`: the snapshot's version mark as written, or 1 (what a
    // 0.1 agent would have read, without the transfer)
    let run = |as_version: Option<u32>| {
        let cfg = || EngineConfig { hash_key: KEY, site: Some(test_site()), ..EngineConfig::default() };
        let mut before = Engine::new(cfg());
        for (i, m) in msgs.iter().enumerate().filter(|(_, m)| m.ts < restart) {
            before.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        }
        before.tick(restart);
        assert!(before.poll_call().is_none(), "the call is still in progress at the restart");
        let mut bytes = Vec::new();
        crate::persist::write_snapshot(&mut bytes, 1, &before.snapshot_ref()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"version\":2"), "{text}");
        let text = match as_version {
            Some(v) => text.replacen("\"version\":2", &format!("\"version\":{v}"), 1),
            None => text,
        };
        let (_, snap) = crate::persist::read_snapshot(text.as_bytes()).unwrap();
        let mut after = Engine::new(cfg());
        after.restore(snap);
        for (i, m) in msgs.iter().enumerate().filter(|(_, m)| m.ts >= restart) {
            after.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        }
        after.tick(restart.add(6 * HOUR));
        after.finish();
        std::iter::from_fn(|| after.poll_call())
            .filter_map(|ev| match ev {
                CallEvent::Finished(r) => Some(*r),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let calls = run(None);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(4_000), duration secs(84_000), abandoned false);
    assert_eq!((calls[0].ended_by, calls[0].legs), (EndedBy::Caller, 4));
    // read as version 1, the same state loses the transfer: the call is
    // cut short at its first leg's end
    let calls = run(Some(1));
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!((calls[0].outcome, calls[0].duration_s, calls[0].ended_by), (Outcome::Answered, Some(20.0), EndedBy::Practice), "{calls:#?}");
}

#[test]
fn a_new_call_from_the_same_caller_without_referred_by_is_a_new_call() {
    let x = leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4_000, 20_000, false));
    let x1 = hop(&x, PBX, H1, 0, answered(100, 4_000, 20_000, false));
    let y = leg("y", CARRIER, PBX, CALLER, DDI, 21_000, answered(100, 5_000, 62_000, true));
    let y2 = hop(&y, PBX, H2, 21_000, answered(100, 5_000, 62_000, true));
    let calls = run(&[x, x1, y, y2]);
    assert_eq!(calls.len(), 2);
    assert_call!(calls[0], Outcome::Answered, wait secs(4_000), duration secs(20_000), abandoned false);
    assert_call!(calls[1], Outcome::Answered, wait secs(5_000), duration secs(62_000), abandoned false);
}

/// A hunt group whose last member is a mobile: the PBX rings a handset,
/// then forwards the call out through the carrier; the mobile answering is
/// the call answered, and the forward is not an outbound call.
#[test]
fn a_call_forwarded_out_to_a_mobile_is_answered_when_the_mobile_answers() {
    // through a B2BUA: a new leg to the carrier, from the caller's identity
    let calls = run(&[
        leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(50, 100, 60_000, true)),
        leg("h", PBX, H1, CALLER, "201", 1_000, Script::Cancelled { ring: 100, cancel: 14_000 }),
        leg("m", PBX, CARRIER, CALLER, "07700900999", 15_500, answered(200, 5_000, 40_000, true)),
    ]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(19_500), duration secs(39_600), abandoned false);
    assert_eq!(calls[0].legs, 3);
    // through a proxy: the same dialog forwarded out
    let x = leg("y", CARRIER, PBX, CALLER, DDI, 0, answered(100, 12_000, 30_000, true));
    let calls = run(&[
        x.clone(),
        hop(&x, PBX, H1, 0, Script::Cancelled { ring: 100, cancel: 8_000 }),
        hop(&x, PBX, CARRIER, 8_010, answered(100, 12_000 - 8_010, 30_000, true)),
    ]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(12_000), duration secs(30_000), abandoned false);
    // a callback later, from the practice's number, stays an outbound call
    let calls = run(&[
        leg("z", CARRIER, PBX, CALLER, DDI, 0, Script::Cancelled { ring: 100, cancel: 9_000 }),
        leg("cb", PBX, CARRIER, DDI, CALLER, 60_000, answered(200, 5_000, 40_000, true)),
    ]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].outcome, Outcome::Missed);
}

/// Four callers with the same withheld identity ring four numbers at once
/// through a B2BUA that answers with its IVR, then hands each caller on:
/// one hangs up in the IVR, one is answered in the queue, one gives up in
/// the queue, one leaves a voicemail. Nothing on the PBX's legs names the
/// call; the IVR's hand-over (its leg ends as the next one starts) does.
#[test]
fn four_withheld_callers_at_once_each_get_their_own_legs() {
    let anon = "anonymous";
    let ivr = |id: &str, start: i64, len: u32| leg(id, PBX, IVR, anon, "ivr", start, answered(20, 50, len, false));
    let calls = run(&[
        // c1: 01632 960123, hangs up in the IVR at 10 s
        leg("c1", CARRIER, PBX, anon, DDI, 0, answered(20, 50, 10_000, true)),
        ivr("c1i", 60, 9_900),
        // c2: 01632 960124, IVR to 5 s, then H1 rings and answers at 8 s; hangs up at 30 s
        leg("c2", CARRIER, PBX, anon, "01632960124", 500, answered(20, 50, 29_450, true)),
        ivr("c2i", 560, 4_390),
        leg("c2h", PBX, H1, anon, "201", 5_000, answered(100, 3_000, 22_000, false)),
        // c3: 01632 960777 (B82099), IVR to 5.5 s, then H2 rings; gives up at 12 s
        leg("c3", CARRIER, PBX, anon, "01632960777", 1_000, answered(20, 50, 10_950, true)),
        ivr("c3i", 1_060, 4_390),
        leg("c3h", PBX, H2, anon, "202", 5_500, Script::Cancelled { ring: 100, cancel: 6_500 }),
        // c4: 01632 960123 again, IVR to 6 s, then voicemail; hangs up at 20 s
        leg("c4", CARRIER, PBX, anon, DDI, 1_500, answered(20, 50, 18_450, true)),
        ivr("c4i", 1_560, 4_390),
        leg("c4v", PBX, VM, anon, "vm", 6_000, answered(20, 50, 13_900, false)),
    ]);
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!((calls[0].outcome, calls[0].abandoned), (Outcome::EndedInIvr, true), "{:#?}", calls[0]);
    assert_call!(calls[1], Outcome::Answered, wait secs(3_000), duration secs(22_000), abandoned false);
    assert_eq!(calls[1].practice, "B82005");
    assert_call!(calls[2], Outcome::Missed, wait secs(6_500), duration None, abandoned true);
    assert_eq!(calls[2].practice, "B82099");
    assert_eq!((calls[3].outcome, calls[3].abandoned, calls[3].voicemail.is_some()), (Outcome::Missed, false, true), "{:#?}", calls[3]);
    assert!(calls.iter().all(|c| c.legs == 2 || c.legs == 3));
}

/// An attended transfer through a proxy: H1 answers, puts the caller on
/// hold and consults H2 (an internal call), then sends the caller a REFER
/// whose Refer-To carries `Replaces`; the caller's new INVITE replaces the
/// consultation and H2 answers it at once. The consultation is no call;
/// the caller's call stays one, answered by H1, to its last leg's end.
#[test]
fn an_attended_transfer_through_a_proxy_stays_one_call() {
    let x = leg("x", CARRIER, PBX, CALLER, DDI, 0, answered(100, 4_000, 16_500, false));
    let x1 = hop(&x, PBX, H1, 0, answered(100, 4_000, 16_500, false));
    // the consultation: 201 calls 202 through the proxy, ended when replaced
    let z = leg("z", H1, PBX, "201", "202", 10_000, answered(100, 3_000, 7_100, false));
    let z2 = hop(&z, PBX, H2, 10_000, answered(100, 3_000, 7_100, false));
    let y = with(
        leg("y", CARRIER, PBX, CALLER, "202", 20_000, answered(10, 50, 60_000, true)),
        "Replaces: z@test;to-tag=tt-1020112;from-tag=ft-z",
    );
    let y2 = hop(&y, PBX, H2, 20_000, answered(10, 50, 60_000, true));
    let calls = run_msgs(test_site(), &[x.clone(), x1, z, z2, y, y2], &[refer(&x, 19_900, "202%3FReplaces%3Dz%2540test")]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(4_000), duration secs(76_050), abandoned false);
    assert_eq!((calls[0].ended_by, calls[0].legs), (EndedBy::Caller, 4));
}

/// A directed pickup through a proxy: H1 rings; H2 picks the call up with an
/// INVITE carrying `Replaces` (naming the ringing dialog), which the proxy
/// takes to the caller; the caller accepts it and cancels its first INVITE.
/// Answered at the pickup, lasting until the conversation on the new dialog
/// ends, ended by the caller.
#[test]
fn a_directed_pickup_is_answered_at_the_pickup() {
    let x = leg("x", CARRIER, PBX, CALLER, DDI, 0, Script::Cancelled { ring: 100, cancel: 5_100 });
    let x1 = hop(&x, PBX, H1, 0, Script::Cancelled { ring: 100, cancel: 5_100 });
    let p = with(
        leg("p", H2, PBX, "202", CALLER, 4_000, answered(10, 1_000, 30_000, false)),
        "Replaces: x@test;to-tag=tt-1020111;from-tag=ft-x;early-only",
    );
    let p2 = hop(&p, PBX, CARRIER, 4_000, answered(10, 1_000, 30_000, false));
    let calls = run(&[x, x1, p, p2]);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_call!(calls[0], Outcome::Answered, wait secs(5_000), duration secs(30_000), abandoned false);
    assert_eq!((calls[0].ended_by, calls[0].legs), (EndedBy::Caller, 4));
}
