//! Property tests: how packets are cut up or interleaved must not change the
//! legs the engine finds.
//!
//! - any re-segmentation of a TCP stream (cuts anywhere, segments of one
//!   message delivered out of order and retransmitted);
//! - any IPv4 fragmentation of a datagram (any fragment size, fragments in
//!   any order, duplicated);
//! - any interleaving of independent concurrent calls (random start times,
//!   shared addresses).

use cbt_proto::leg::Leg;
use cbt_proto::synth::{frames, Call, Msg, Script};
use cbt_proto::time::{Timestamp, HOUR, MILLISECOND};
use cbt_proto::{Engine, EngineConfig, LinkType};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;

/// What a leg is, without engine-internal ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct View {
    call_id: String,
    from_tag: String,
    src: SocketAddr,
    started: Timestamp,
    to_tag: Option<String>,
    dst: SocketAddr,
    ringing: Option<Timestamp>,
    answered: Option<Timestamp>,
    ended: Option<Timestamp>,
    final_status: Option<u16>,
    end: Option<&'static str>,
    forks: Vec<String>,
    challenges: u32,
}

fn view(l: &Leg) -> View {
    View {
        call_id: l.call_id.to_string(),
        from_tag: l.from_tag.to_string(),
        src: l.src,
        started: l.started,
        to_tag: l.to_tag.as_ref().map(|t| t.to_string()),
        dst: l.dst,
        ringing: l.ringing.get(),
        answered: l.answered.get(),
        ended: l.ended.get(),
        final_status: l.final_status,
        end: l.end.map(|e| e.name()),
        forks: l.forks.iter().map(|t| t.to_string()).collect(),
        challenges: l.challenges,
    }
}

fn sorted(legs: Vec<Leg>) -> Vec<View> {
    let mut v: Vec<View> = legs.iter().map(view).collect();
    v.sort();
    v
}

/// Feeds frames in order, then runs every timer out and drains the legs.
fn legs_of(frames: impl IntoIterator<Item = (Timestamp, Vec<u8>)>) -> Vec<Leg> {
    let mut e = Engine::new(EngineConfig::default());
    let mut last = Timestamp(0);
    for (ts, f) in frames {
        e.ingest(ts, LinkType::Ethernet, &f);
        last = last.max(ts);
    }
    e.tick(last.add(5 * HOUR));
    e.finish();
    std::iter::from_fn(|| e.poll_leg()).collect()
}

fn udp_frames(msgs: &[Msg]) -> Vec<(Timestamp, Vec<u8>)> {
    msgs.iter()
        .enumerate()
        .map(|(i, m)| (m.ts, frames::udp(m.src, m.dst, i as u16, &m.bytes)))
        .collect()
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        (10u32..3000, 3000u32..20_000, 1000u32..60_000, any::<bool>()).prop_map(|(ring, answer, talk, c)| Script::Answered {
            ring,
            answer,
            talk,
            caller_hangs_up: c
        }),
        (proptest::option::of(5u32..500), 500u32..3000, prop::sample::select(vec![404u16, 480, 486, 503, 603])).prop_map(
            |(ring, at, code)| Script::Rejected { ring, at, code }
        ),
        (10u32..2000, 2000u32..30_000).prop_map(|(ring, cancel)| Script::Cancelled { ring, cancel }),
        (100u32..5000, 100u32..10_000).prop_map(|(answer, talk)| Script::ChallengedThenAnswered { answer: answer + 40, talk }),
        Just(Script::NoResponse),
        (50u32..5000).prop_map(|answer| Script::AnsweredNoBye { answer }),
    ]
}

fn addr_pool() -> Vec<SocketAddr> {
    ["192.0.2.1:5060", "192.0.2.9:5060", "10.20.0.5:5060", "10.20.0.5:5080", "[2001:db8::7]:5060"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

fn calls(max: usize) -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec((script(), 0u32..60_000, 0usize..5, 0usize..5), 1..max).prop_map(|specs| {
        let pool = addr_pool();
        specs
            .into_iter()
            .enumerate()
            .map(|(n, (script, start, a, b))| {
                let (a, mut b) = (pool[a], pool[b]);
                if a == b || a.is_ipv4() != b.is_ipv4() {
                    b = if a.is_ipv4() { pool[if a == pool[2] { 0 } else { 2 }] } else { "[2001:db8::9]:5060".parse().unwrap() };
                }
                Call::numbered(n as u64, a, b, Timestamp(start as i64 * MILLISECOND), script)
            })
            .collect()
    })
}

fn all_messages(calls: &[Call]) -> Vec<Msg> {
    let mut msgs: Vec<Msg> = calls.iter().flat_map(|c| c.messages()).collect();
    msgs.sort_by_key(|m| m.ts); // stable: a call's own order is kept
    msgs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn interleaving_independent_calls_changes_nothing(calls in calls(8)) {
        let alone: Vec<Leg> = calls.iter().flat_map(|c| legs_of(udp_frames(&c.messages()))).collect();
        let together = legs_of(udp_frames(&all_messages(&calls)));
        prop_assert_eq!(sorted(together), sorted(alone));
    }

    #[test]
    fn any_fragmentation_changes_nothing(
        calls in calls(4),
        chunk in 8usize..1480,
        order_seed in any::<u64>(),
        dup in any::<bool>(),
    ) {
        let msgs = all_messages(&calls);
        let baseline = legs_of(udp_frames(&msgs));
        let mut seed = order_seed | 1;
        let mut next = move || { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; seed };
        let mut fragged = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if m.src.is_ipv6() || m.dst.is_ipv6() {
                fragged.push((m.ts, frames::udp(m.src, m.dst, i as u16, &m.bytes)));
                continue;
            }
            let mut fr = frames::udp_fragments_v4(m.src, m.dst, i as u16, &m.bytes, chunk);
            // any order of a datagram's fragments, maybe one duplicated
            for j in (1..fr.len()).rev() {
                let k = (next() % (j as u64 + 1)) as usize;
                fr.swap(j, k);
            }
            if dup && fr.len() > 1 {
                let d = fr[0].clone();
                fr.insert(fr.len() / 2, d);
            }
            fragged.extend(fr.into_iter().map(|f| (m.ts, f)));
        }
        prop_assert_eq!(sorted(legs_of(fragged)), sorted(baseline));
    }

    #[test]
    fn any_tcp_segmentation_changes_nothing(
        calls in calls(4),
        cuts in prop::collection::vec(16usize..400, 0..200), // >= 16: at most 64 held segments per flow
        shuffle_seed in any::<u64>(),
        retransmit in any::<bool>(),
    ) {
        let msgs = all_messages(&calls);
        // baseline: one segment per message
        let mut seq: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
        let mut base = Vec::new();
        for m in &msgs {
            if !seq.contains_key(&(m.src, m.dst)) {
                // the connection opens during the capture (see the mid-stream test below)
                base.push((m.ts, frames::tcp(m.src, m.dst, 6_999, true, false, b"")));
            }
            let s = seq.entry((m.src, m.dst)).or_insert(7_000);
            base.push((m.ts, frames::tcp(m.src, m.dst, *s, false, false, &m.bytes)));
            *s = s.wrapping_add(m.bytes.len() as u32);
        }
        let baseline = legs_of(base);

        // cut every message at random interior points; deliver each
        // message's segments in a random order, maybe with a retransmission
        let mut seed = shuffle_seed | 1;
        let mut next = move || { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; seed };
        let mut cut_iter = cuts.iter().cycle();
        let mut seq: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
        let mut out = Vec::new();
        for m in &msgs {
            if !seq.contains_key(&(m.src, m.dst)) {
                out.push((m.ts, frames::tcp(m.src, m.dst, 6_999, true, false, b"")));
            }
            let s0 = *seq.entry((m.src, m.dst)).or_insert(7_000);
            let mut pieces = Vec::new();
            let mut off = 0;
            while off < m.bytes.len() {
                let len = if cuts.is_empty() { m.bytes.len() } else { *cut_iter.next().unwrap() };
                let end = (off + len).min(m.bytes.len());
                pieces.push((off, end));
                off = end;
            }
            for j in (1..pieces.len()).rev() {
                let k = (next() % (j as u64 + 1)) as usize;
                pieces.swap(j, k);
            }
            if retransmit {
                let p = pieces[0];
                pieces.push(p);
            }
            for (a, b) in pieces {
                out.push((m.ts, frames::tcp(m.src, m.dst, s0.wrapping_add(a as u32), false, false, &m.bytes[a..b])));
            }
            seq.insert((m.src, m.dst), s0.wrapping_add(m.bytes.len() as u32));
        }
        prop_assert_eq!(sorted(legs_of(out)), sorted(baseline));
    }
}

#[test]
fn several_messages_in_one_segment_and_one_message_across_segments() {
    let c = Call::numbered(
        1,
        "192.0.2.1:5060".parse().unwrap(),
        "10.20.0.5:5060".parse().unwrap(),
        Timestamp(0),
        Script::Cancelled { ring: 100, cancel: 100 },
    );
    let msgs = c.messages();
    // all responses (B -> A) in one segment; the requests split in two halves each
    let mut frames_out = Vec::new();
    let back: Vec<u8> = msgs.iter().filter(|m| m.src == c.b).flat_map(|m| m.bytes.clone()).collect();
    let mut s = 1u32;
    for m in msgs.iter().filter(|m| m.src == c.a) {
        let half = m.bytes.len() / 2;
        frames_out.push((m.ts, frames::tcp(c.a, c.b, s, false, false, &m.bytes[..half])));
        frames_out.push((m.ts, frames::tcp(c.a, c.b, s + half as u32, false, false, &m.bytes[half..])));
        s += m.bytes.len() as u32;
    }
    frames_out.push((Timestamp(200 * MILLISECOND), frames::tcp(c.b, c.a, 1, false, false, &back)));
    let legs = legs_of(frames_out);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].final_status, Some(487));
    assert_eq!(legs[0].end.map(|e| e.name()), Some("cancel"));
}

#[test]
fn capture_started_mid_connection_resynchronises_on_the_next_message() {
    let c = Call::numbered(
        1,
        "192.0.2.1:5060".parse().unwrap(),
        "10.20.0.5:5060".parse().unwrap(),
        Timestamp(0),
        Script::Rejected { ring: Some(10), at: 50, code: 486 },
    );
    let msgs = c.messages();
    // an earlier message's tail arrives first (its start was sent before the capture began)
    let junk = b"a=rtpmap:0 PCMU/8000\r\nContent-Length: 0\r\n\r\n".to_vec();
    let mut seq: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
    let mut out = Vec::new();
    for m in &msgs {
        let s = seq.entry((m.src, m.dst)).or_insert_with(|| {
            out.push((m.ts, frames::tcp(m.src, m.dst, 50, false, false, &junk)));
            50 + junk.len() as u32
        });
        out.push((m.ts, frames::tcp(m.src, m.dst, *s, false, false, &m.bytes)));
        *s += m.bytes.len() as u32;
    }
    let legs = legs_of(out);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].final_status, Some(486));
}
