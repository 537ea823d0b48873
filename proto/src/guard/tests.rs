//! The scanner rules and the memory budget: the pure rules first, then
//! floods driven through the whole engine alongside real calls.

use super::*;
use crate::call::{CallEvent, CallRecord, Outcome};
use crate::engine::{Engine, EngineConfig};
use crate::number::Hasher;
use crate::site::AddrMatch;
use crate::synth::{frames, Call, Msg, Probe, Script};
use crate::time::{HOUR, MILLISECOND};
use crate::wire::LinkType;
use std::net::SocketAddr;

const KEY: [u8; 32] = [4; 32];
const CARRIER: &str = "192.0.2.1:5060";
const PBX: &str = "10.20.0.5:5060";
const SCANNER: &str = "203.0.113.9:5070";
const DDI: &str = "01632960123";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn t0() -> Timestamp {
    Timestamp::from_secs_micros(1_730_710_800, 0) // Mon 4 Nov 2024 09:00 UTC
}

fn ms(n: i64) -> Timestamp {
    t0().add(n * MILLISECOND)
}

/// A practice behind a PBX; with or without a carrier list.
fn site(carrier: bool) -> Site {
    let h = Hasher::new(KEY, "44");
    let mut s = Site::single("B82005", &["01632 960123"], &h);
    s.pbx = vec![AddrMatch::parse("10.20.0.5").unwrap()];
    s.staff = vec![AddrMatch::parse("10.20.1.0/24").unwrap()];
    if carrier {
        s.carrier = vec![AddrMatch::parse("192.0.2.0/24").unwrap()];
    }
    s
}

fn engine(site: Site, memory_limit: usize) -> Engine {
    Engine::new(EngineConfig {
        hash_key: KEY,
        site: Some(site),
        emit_legs: false,
        journal: true,
        guard: GuardConfig {
            memory_limit,
            ..GuardConfig::default()
        },
        ..EngineConfig::default()
    })
}

fn feed(e: &mut Engine, msgs: &mut [Msg], calls: &mut Vec<CallRecord>, mut each: impl FnMut(&Engine)) {
    msgs.sort_by_key(|m| m.ts);
    for (i, m) in msgs.iter().enumerate() {
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        while e.poll_journal().is_some() {}
        drain(e, calls);
        each(e);
    }
}

fn drain(e: &mut Engine, calls: &mut Vec<CallRecord>) {
    while let Some(ev) = e.poll_call() {
        if let CallEvent::Finished(r) = ev {
            calls.push(*r);
        }
    }
}

fn end(e: &mut Engine, calls: &mut Vec<CallRecord>, at: Timestamp) {
    e.tick(at);
    e.finish();
    drain(e, calls);
}

/// Real calls from the carrier: answered, busy (486 without ringing),
/// cancelled while ringing, and one nothing ever answered.
fn real_calls(from: &str, start_ms: i64) -> Vec<Call> {
    real_calls_n(from, start_ms, 900)
}

fn real_calls_n(from: &str, start_ms: i64, base: u64) -> Vec<Call> {
    let scripts = [
        Script::Answered { ring: 100, answer: 3000, talk: 20_000, caller_hangs_up: true },
        Script::Rejected { ring: None, at: 200, code: 486 },
        Script::Cancelled { ring: 100, cancel: 4000 },
        Script::NoResponse,
    ];
    scripts
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut c = Call::numbered(base + i as u64, a(from), a(PBX), ms(start_ms + i as i64 * 1500), s);
            c.callee = DDI.into();
            c
        })
        .collect()
}

fn check_real(calls: &[CallRecord]) {
    let mut got: Vec<(Outcome, bool)> = calls.iter().map(|c| (c.outcome, c.abandoned)).collect();
    got.sort();
    // the PBX itself answers the first: a message, then the caller hangs up
    let mut want = vec![(Outcome::EndedInIvr, true), (Outcome::Missed, false), (Outcome::Missed, true), (Outcome::Missed, false)];
    want.sort();
    assert_eq!(got, want, "{calls:#?}");
}

/// `n` INVITEs from `src` to `user`, every `gap` ms from `start`, with the
/// PBX's `reply` (None: it never answers).
fn sweep(n: u64, src: &str, user: impl Fn(u64) -> String, start: i64, gap: i64, reply: Option<u16>, agent: &str) -> Vec<Msg> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut p = Probe::new("INVITE", i, a(src), a(PBX), &user(i), ms(start + i as i64 * gap));
        p.agent = agent.into();
        out.push(p.request());
        if let Some(code) = reply {
            out.push(p.response(code, "Rejected", 3 * MILLISECOND));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// the pure rules

#[test]
fn reads_a_header_from_a_raw_head() {
    let head = b"OPTIONS sip:100@10.0.0.1 SIP/2.0\r\nVia: x\r\nuser-agent : friendly-scanner\r\n\r\nUser-Agent: body";
    assert_eq!(header_value(head, "User-Agent"), Some("friendly-scanner"));
    assert_eq!(header_value(b"OPTIONS x SIP/2.0\nUser-Agentx: no\n\nUser-Agent: body", "User-Agent"), None);
    let agents: Vec<String> = DEFAULT_SCANNER_AGENTS.iter().map(|s| s.to_string()).collect();
    assert!(is_scanner_agent("Friendly-Scanner 1.7", &agents));
    assert!(is_scanner_agent("VaxSIPUserAgent/3.1", &agents));
    assert!(!is_scanner_agent("Yealink SIP-T46S 66.86.0.15", &agents));
    assert!(!is_scanner_agent("Asterisk PBX 18.20.0", &agents));
}

#[test]
fn scanner_rule_keeps_every_kind_of_real_call() {
    let ev = |f: fn(&mut Evidence)| {
        let mut e = Evidence { burst: true, for_practice: Some(false), ..Evidence::default() };
        f(&mut e);
        e
    };
    // engaged: real even from a burst to an unknown number
    assert!(!looks_like_scanner(&ev(|e| e.rang = true)), "cancelled while ringing");
    assert!(!looks_like_scanner(&ev(|e| e.answered = true)));
    assert!(!looks_like_scanner(&ev(|e| e.offered = true)));
    for busy in PERSON_REFUSALS {
        assert!(!looks_like_scanner(&ev(|e| e.final_status = Some(486))), "{busy}");
    }
    // not engaged, and a burst or not for the practice: a scanner
    for code in [None, Some(401), Some(403), Some(404), Some(407), Some(487), Some(503)] {
        let mut e = ev(|_| {});
        e.final_status = code;
        assert!(looks_like_scanner(&e), "{code:?}");
        e.burst = false;
        assert!(looks_like_scanner(&e), "not for the practice, {code:?}");
        e.for_practice = Some(true);
        assert!(!looks_like_scanner(&e), "one caller to the practice's number, {code:?}");
        e.for_practice = None;
        assert!(!looks_like_scanner(&e), "no numbers configured, no burst, {code:?}");
    }
}

#[test]
fn bursts_need_more_than_the_limit_and_hold() {
    let mut b = Bursts::new(5, 10 * SECOND);
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    for i in 0..5 {
        assert!(!b.hit(ip, ms(i * 100)), "call {i}");
    }
    assert!(b.hit(ip, ms(600)));
    assert!(b.flagged(ip, ms(600).add(BURST_HOLD)));
    assert!(!b.flagged(ip, ms(601).add(BURST_HOLD)));
    // a steady caller is never a burst: 5 calls per window forever
    let other: IpAddr = "192.0.2.1".parse().unwrap();
    for i in 0..100 {
        assert!(!b.hit(other, ms(i * 2_100)), "steady call {i}");
    }
    // bounded
    for i in 0..(BURST_CAPACITY as u32 + 100) {
        b.hit(IpAddr::from(i.to_be_bytes()), ms(700));
    }
    assert!(b.map.len() <= BURST_CAPACITY);
}

#[test]
fn tombstones_absorb_then_expire_and_stay_bounded() {
    let mut t = Tombstones::default();
    t.bury("a@x", ms(0));
    assert!(t.hit("a@x", ms(20_000)));
    // refreshed by the hit: still there 32 s after it, gone after that
    assert!(t.hit("a@x", ms(51_000)));
    assert!(!t.hit("a@x", ms(51_000 + TOMBSTONE_LIFE / MILLISECOND + 1)));
    assert!(!t.hit("b@x", ms(0)));
    for i in 0..(TOMBSTONES + 5000) {
        t.bury(&format!("{i}@flood"), ms(100_000));
    }
    assert!(t.len() <= TOMBSTONES, "{}", t.len());
    assert!(t.order.len() <= 2 * TOMBSTONES + 1);
}

#[test]
fn the_book_is_bounded_and_reports_the_busiest() {
    let mut book = SourceBook::default();
    let mut st = ScreenStats::default();
    for i in 0..(BOOK_CAPACITY as u32 + 50) {
        book.record(IpAddr::from(i.to_be_bytes()), ms(i as i64), Why::UnexpectedSource, Method::Options, Some("x"), &mut st);
    }
    let busy: IpAddr = "203.0.113.9".parse().unwrap();
    for _ in 0..10 {
        book.record(busy, ms(10_000), Why::ScannerUserAgent, Method::Invite, Some("friendly-scanner\u{7}<b>"), &mut st);
    }
    assert!(book.len() <= BOOK_CAPACITY);
    assert_eq!(st.sources_seen, BOOK_CAPACITY as u64 + 51);
    let r = book.report(3);
    assert_eq!((r[0].address.as_str(), r[0].invites, r[0].why.as_str()), ("203.0.113.9", 10, "scanner_user_agent"));
    assert_eq!(r[0].user_agent.as_deref(), Some("friendly-scanner<b>"), "printable only");
}

// ---------------------------------------------------------------------------
// through the engine

#[test]
fn with_a_carrier_list_invites_from_elsewhere_never_reach_the_legs() {
    let mut e = engine(site(true), DEFAULT_MEMORY_LIMIT);
    let mut msgs: Vec<Msg> = sweep(2000, SCANNER, |_| DDI.into(), 0, 1, Some(404), "Z 5.6")
        .into_iter()
        .chain(real_calls(CARRIER, 100).iter().flat_map(|c| c.messages()))
        .collect();
    // the scanner also registers and pings
    for i in 0..50 {
        msgs.push(Probe::new("REGISTER", 5000 + i, a(SCANNER), a(PBX), "100", ms(i as i64)).request());
        msgs.push(Probe::new("OPTIONS", 6000 + i, a(SCANNER), a(PBX), "100", ms(i as i64)).request());
    }
    let mut calls = Vec::new();
    let mut journaled = 0;
    feed(&mut e, &mut msgs, &mut calls, |_| {});
    while e.poll_journal().is_some() {
        journaled += 1;
    }
    end(&mut e, &mut calls, ms(HOUR / MILLISECOND));
    check_real(&calls);
    let s = e.stats();
    assert_eq!(s.legs.legs_started, 4, "only the carrier's calls make legs");
    assert_eq!(journaled, 0);
    let g = &s.guard;
    assert_eq!(g.screen.unexpected_invites, 2000);
    assert_eq!(g.screen.absorbed, 2000, "the PBX's 404s");
    assert_eq!(g.screen.other_requests, 100);
    assert_eq!(s.legs.orphans, 0);
    assert_eq!(g.sources.len(), 1);
    assert_eq!((g.sources[0].address.as_str(), g.sources[0].invites), ("203.0.113.9", 2000));
    assert_eq!(g.sources[0].requests["REGISTER"], 50);
}

#[test]
fn a_response_to_an_unseen_invite_from_elsewhere_is_not_adopted_as_a_call() {
    // the daemon adopts responses to INVITEs lost in a gap: the screen
    // and the call layer must still refuse the unexpected sender
    let mut e = Engine::new(EngineConfig {
        hash_key: KEY,
        site: Some(site(true)),
        legs: crate::leg::LegConfig { adopt_orphans: true, ..Default::default() },
        ..EngineConfig::default()
    });
    let p = Probe::new("INVITE", 1, a(SCANNER), a(PBX), DDI, ms(0));
    let mut msgs = vec![p.response(180, "Ringing", 0), p.response(486, "Busy", 500_000)];
    let mut calls = Vec::new();
    feed(&mut e, &mut msgs, &mut calls, |_| {});
    end(&mut e, &mut calls, ms(60_000));
    assert!(calls.is_empty(), "{calls:#?}");
    assert_eq!(e.stats().calls.unwrap().calls, 0);
    assert_eq!(e.stats().guard.sources[0].why, "unexpected_source");
}

#[test]
fn without_a_carrier_list_a_burst_that_nothing_answered_is_not_counted() {
    for reply in [None, Some(401), Some(403), Some(404)] {
        let mut e = engine(site(false), DEFAULT_MEMORY_LIMIT);
        // to the practice's own number, 500/s, from one address
        let mut msgs: Vec<Msg> = sweep(600, SCANNER, |_| DDI.into(), 0, 2, reply, "Z 5.6")
            .into_iter()
            .chain(real_calls(CARRIER, 200).iter().flat_map(|c| c.messages()))
            .collect();
        let mut calls = Vec::new();
        feed(&mut e, &mut msgs, &mut calls, |_| {});
        end(&mut e, &mut calls, ms(HOUR / MILLISECOND));
        check_real(&calls);
        let g = e.stats().guard;
        assert_eq!(g.screen.scanner_calls, 600, "{reply:?}");
        assert_eq!(g.sources[0].why, "scanner_behaviour");
        assert_eq!(e.stats().open_legs, 0);
    }
}

#[test]
fn without_a_carrier_list_probes_of_extensions_are_not_counted_even_one_by_one() {
    // slow (no burst), to extensions that are no practice number, answered
    // 404 or not at all; and a scanner User-Agent is dropped on arrival
    let mut e = engine(site(false), DEFAULT_MEMORY_LIMIT);
    let mut msgs: Vec<Msg> = sweep(20, SCANNER, |i| format!("{}", 100 + i), 0, 5000, Some(404), "Z 5.6")
        .into_iter()
        .chain(sweep(20, "198.51.100.7:5060", |i| format!("{}", 200 + i), 0, 5000, None, "Z 5.6"))
        .chain(sweep(900, "198.51.100.8:5060", |i| format!("{}", 100 + i), 0, 3, Some(404), "friendly-scanner"))
        .chain(real_calls(CARRIER, 200).iter().flat_map(|c| c.messages()))
        .collect();
    let mut calls = Vec::new();
    feed(&mut e, &mut msgs, &mut calls, |_| {});
    end(&mut e, &mut calls, ms(2 * HOUR / MILLISECOND));
    check_real(&calls);
    let s = e.stats();
    assert_eq!(s.guard.screen.scanner_calls, 40);
    assert_eq!(s.guard.screen.scanner_agent_invites, 900);
    assert_eq!(s.legs.legs_started, 40 + 4, "the scanner User-Agent's INVITEs make no legs");
}

#[test]
fn a_slow_caller_to_the_practice_is_counted_whatever_happened() {
    // without a carrier list, one address calling the practice's number now
    // and then is a caller, even when nothing answered
    let mut e = engine(site(false), DEFAULT_MEMORY_LIMIT);
    let mut msgs: Vec<Msg> = sweep(5, SCANNER, |_| DDI.into(), 0, 60_000, None, "Z 5.6")
        .into_iter()
        .chain(sweep(5, "198.51.100.7:5060", |_| DDI.into(), 0, 60_000, Some(404), "Z 5.6"))
        .collect();
    let mut calls = Vec::new();
    feed(&mut e, &mut msgs, &mut calls, |_| {});
    end(&mut e, &mut calls, ms(2 * HOUR / MILLISECOND));
    assert_eq!(calls.len(), 10);
    assert!(calls.iter().all(|c| c.outcome == Outcome::Missed));
}

#[test]
fn the_budget_sheds_unanswered_invites_and_keeps_counting_real_calls() {
    for carrier in [false, true] {
        let limit = 4 << 20;
        let mut e = engine(site(carrier), limit);
        // 20,000 INVITEs nothing answers, at 2,000/s, from the carrier's side
        // (with a carrier list they come from the carrier itself: dead
        // transactions the screen cannot refuse), and real calls among them
        let from = if carrier { "192.0.2.77:5060" } else { SCANNER };
        let mut msgs: Vec<Msg> = sweep(20_000, from, |_| DDI.into(), 0, 0, None, "Z 5.6");
        for (i, m) in msgs.iter_mut().enumerate() {
            m.ts = ms(i as i64 / 2);
        }
        for k in 0..4 {
            msgs.extend(real_calls_n(CARRIER, 1000 + k * 2500, 900 + 10 * k as u64).iter().flat_map(|c| c.messages()));
        }
        let mut calls = Vec::new();
        let mut peak = 0;
        // after each message the state is back under the ceiling; before
        // the shedding (the engine's own peak) one message may also have
        // doubled index tables (the legs' going from 8,192 to 16,384 slots
        // is 139 KB; when a table grows depends on where its deleted
        // entries fell, so on random hash seeds)
        let transient = limit / 4;
        feed(&mut e, &mut msgs, &mut calls, |e| {
            let used = e.state_bytes();
            peak = peak.max(used);
            assert!(used <= limit + 8192, "{used} bytes over the {limit} ceiling");
        });
        end(&mut e, &mut calls, ms(2 * HOUR / MILLISECOND));
        let mut real: Vec<CallRecord> = calls.iter().filter(|c| c.call_id.contains("synth")).cloned().collect();
        real.sort_by(|x, y| x.call_id.cmp(&y.call_id));
        if carrier {
            // from the carrier itself, the real calls nothing answered are
            // dead transactions like the flood's: the oldest may be shed
            let dead = real.iter().filter(|c| c.ended.since(c.started) == 32 * SECOND).count();
            assert_eq!(real.len() - dead, 12, "{real:#?}");
        } else {
            // a burst's legs go first: every real call survives
            assert_eq!(real.len(), 16, "{real:#?}");
            for chunk in real.chunks(4) {
                check_real(chunk);
            }
        }
        let m = e.stats().guard.memory;
        assert!(m.legs_shed > 10_000, "carrier {carrier}: {m:?}");
        assert_eq!(m.calls_shed, m.legs_shed);
        assert!(
            peak > limit / 2 && m.peak_bytes as usize <= limit + transient,
            "peak {peak}, the engine's {}, limit {limit}",
            m.peak_bytes
        );
        if carrier {
            // the survivors are dead transactions from the carrier: missed
            assert_eq!(calls.len() as u64 + m.calls_shed, 20_000 + 16);
        } else {
            assert_eq!(calls.len(), 16, "the burst counts nothing");
        }
    }
}

#[test]
fn hep_from_an_unexpected_sender_is_ignored() {
    use crate::wire::{encode_hep as encode, HepPacket};
    let mut cfg = EngineConfig {
        hash_key: KEY,
        site: Some(site(true)),
        ..EngineConfig::default()
    };
    cfg.wire.hep_from = Some(vec![AddrMatch::parse("10.20.0.5").unwrap()]);
    let mut e = Engine::new(cfg);
    let call = real_calls(CARRIER, 0).remove(0);
    for (i, m) in call.messages().iter().enumerate() {
        let pkt = encode(&HepPacket {
            ts: Some(m.ts),
            src: m.src,
            dst: m.dst,
            ip_proto: 17,
            proto_type: 1,
            capture_id: None,
            correlation_id: None,
            payload: &m.bytes,
        });
        // the same packet from the PBX and from a stranger
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(a("10.20.0.5:9060"), a("10.20.0.99:9060"), i as u16, &pkt));
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(a("203.0.113.9:9060"), a("10.20.0.99:9060"), i as u16, &pkt));
    }
    let mut calls = Vec::new();
    end(&mut e, &mut calls, ms(HOUR / MILLISECOND));
    assert_eq!(calls.len(), 1);
    let n = call.messages().len() as u64;
    assert_eq!((e.stats().wire.hep_packets, e.stats().wire.hep_rejected), (n, n));
}

#[test]
fn tcp_floods_stay_bounded() {
    let mut e = engine(site(true), DEFAULT_MEMORY_LIMIT);
    let pbx = a("10.20.0.5:5060");
    // half-open connections: 50,000 SYNs from different ports
    for i in 0..50_000u32 {
        let src = SocketAddr::new("203.0.113.9".parse().unwrap(), 1024 + (i % 60_000) as u16);
        let src = if i >= 60_000 { SocketAddr::new("203.0.113.10".parse().unwrap(), src.port()) } else { src };
        e.ingest(ms(i as i64 / 2), LinkType::Ethernet, &frames::tcp(src, pbx, i, true, false, b""));
    }
    let wire = e.stats().wire;
    let limits = crate::wire::TcpLimits::default();
    assert!(e.state_bytes() < 4 << 20, "{} bytes after a SYN flood", e.state_bytes());
    assert!(wire.tcp_flows_opened - wire.tcp_flows_evicted <= limits.max_half_open as u64);
    // an endless stream: 20 MB of a head that never ends, then of garbage
    let src = a("203.0.113.9:40000");
    let mut seq = 1u32;
    e.ingest(ms(30_000), LinkType::Ethernet, &frames::tcp(src, pbx, 0, true, false, b""));
    let mut chunk = b"INVITE sip:100@10.20.0.5 SIP/2.0\r\nX-Long: ".to_vec();
    chunk.resize(1400, b'a');
    for i in 0..15_000 {
        e.ingest(ms(30_000 + i / 10), LinkType::Ethernet, &frames::tcp(src, pbx, seq, false, false, &chunk));
        seq = seq.wrapping_add(chunk.len() as u32);
        chunk.iter_mut().for_each(|b| *b = b'a');
        assert!(e.buffered_bytes() <= crate::sip::MAX_HEAD + 2 * 1400, "{} bytes buffered", e.buffered_bytes());
    }
    // many streams, each holding a long unfinished head: the table's byte cap
    for i in 0..2000u32 {
        let src = SocketAddr::new("198.51.100.7".parse().unwrap(), 2000 + i as u16);
        let mut head = b"OPTIONS sip:x SIP/2.0\r\nX: ".to_vec();
        head.resize(60_000, b'b');
        e.ingest(ms(40_000 + i as i64), LinkType::Ethernet, &frames::tcp(src, pbx, 1, false, false, &head));
        assert!(e.state_bytes() <= limits.max_bytes + (2 << 20), "{} bytes", e.state_bytes());
    }
    assert!(e.stats().wire.tcp_flows_evicted > 1000);
    // and calls still work
    let mut calls = Vec::new();
    let mut msgs: Vec<Msg> = real_calls(CARRIER, 50_000).iter().flat_map(|c| c.messages()).collect();
    feed(&mut e, &mut msgs, &mut calls, |_| {});
    end(&mut e, &mut calls, ms(2 * HOUR / MILLISECOND));
    check_real(&calls);
}

#[test]
fn fragments_that_never_complete_stay_bounded() {
    let mut e = engine(site(true), DEFAULT_MEMORY_LIMIT);
    let mut big = Probe::new("INVITE", 1, a(SCANNER), a(PBX), DDI, ms(0)).request().bytes;
    big.resize(3000, b' ');
    for i in 0..20_000u16 {
        // the first fragment only, a new datagram each time
        let f = frames::udp_fragments_v4(a(SCANNER), a(PBX), i, &big, 1480).remove(0);
        e.ingest(ms(i as i64 / 2), LinkType::Ethernet, &f);
        assert!(e.buffered_bytes() <= crate::wire::FragLimits::default().max_bytes);
    }
    let w = e.stats().wire;
    assert!(w.fragments_evicted + w.fragments_expired >= 20_000 - 1024);
    assert_eq!(e.stats().legs.legs_started, 0);
}
