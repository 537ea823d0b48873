//! Leg behaviour, driven through the whole engine with synthetic frames.

use super::*;
use crate::engine::{Engine, EngineConfig};
use crate::synth::{frames, Call, Msg, Script};
use crate::wire::LinkType;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const A: &str = "192.0.2.1:5060";
const B: &str = "10.20.0.5:5060";

fn ms(n: i64) -> Timestamp {
    Timestamp(n * MILLISECOND)
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

fn feed(e: &mut Engine, msgs: &[Msg]) {
    for (i, m) in msgs.iter().enumerate() {
        e.ingest(
            m.ts,
            LinkType::Ethernet,
            &frames::udp(m.src, m.dst, i as u16, &m.bytes),
        );
    }
}

fn drain(e: &mut Engine) -> Vec<Leg> {
    std::iter::from_fn(|| e.poll_leg()).collect()
}

/// Feeds the messages, advances packet time to `until`, closes the rest.
fn run(msgs: &[Msg], until: Timestamp) -> Vec<Leg> {
    let mut e = engine();
    feed(&mut e, msgs);
    e.tick(until);
    e.finish();
    drain(&mut e)
}

fn call(script: Script) -> Call {
    Call::numbered(1, addr(A), addr(B), ms(0), script)
}

fn msg(ts: i64, src: &str, dst: &str, text: &str) -> Msg {
    Msg {
        ts: ms(ts),
        src: addr(src),
        dst: addr(dst),
        bytes: text.replace('\n', "\r\n").into_bytes(),
    }
}

#[test]
fn answered_call_has_packet_times() {
    let legs = run(
        &call(Script::Answered {
            ring: 100,
            answer: 2000,
            talk: 30_000,
            caller_hangs_up: false,
        })
        .messages(),
        ms(60_000),
    );
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert_eq!(
        (l.started, l.ringing.get(), l.answered.get(), l.ended.get()),
        (ms(0), Some(ms(100)), Some(ms(2000)), Some(ms(32_000)))
    );
    assert_eq!(
        (l.final_status, l.end, l.ended_by),
        (Some(200), Some(EndReason::Bye), Some(Side::Callee))
    );
    assert_eq!(l.to_tag.as_deref(), Some("t1"));
    assert_eq!((l.src, l.dst), (addr(A), addr(B)));
}

#[test]
fn retransmissions_never_make_a_second_leg_and_silence_times_out() {
    let legs = run(&call(Script::NoResponse).messages(), ms(120_000));
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert_eq!(l.retransmissions, 5);
    assert_eq!(l.end, Some(EndReason::Timeout));
    assert_eq!(l.final_status, None);
    // Timer B: 64*T1 after the first INVITE
    assert_eq!(l.ended.get(), Some(ms(32_000)));
}

#[test]
fn a_finished_leg_lingers_as_a_tomb_that_absorbs_its_retransmissions_and_little_memory() {
    let many = 2000u64;
    let calls: Vec<Call> = (0..many)
        .map(|n| {
            Call::numbered(
                n,
                addr(A),
                addr(B),
                ms(n as i64),
                Script::Answered {
                    ring: 100,
                    answer: 1000,
                    talk: 20_000,
                    caller_hangs_up: true,
                },
            )
        })
        .collect();
    let mut e = engine();
    for c in &calls {
        let msgs = c.messages();
        feed(&mut e, &msgs[..msgs.len() - 2]); // all but the BYE and its 200
    }
    let open_bytes = e.guard_stats().memory.legs_bytes;
    assert_eq!(e.stats().open_legs, many as usize);
    for c in &calls {
        let msgs = c.messages();
        feed(&mut e, &msgs[msgs.len() - 2..]);
    }
    e.tick(ms(25_000)); // every call ended by 23 s; within the 32 s linger
    assert_eq!(drain(&mut e).len(), many as usize);
    let tomb_bytes = e.guard_stats().memory.legs_bytes;
    eprintln!(
        "{many} legs: {} bytes each open, {} bytes each as a tomb",
        open_bytes / many,
        tomb_bytes / many
    );
    // a tomb: its hashes, its place in two indexes (about 140 bytes),
    // against about 1 KiB for the whole leg
    assert!(
        tomb_bytes / many <= 160 && tomb_bytes * 6 < open_bytes,
        "{many} finished legs hold {tomb_bytes} bytes (open: {open_bytes})"
    );
    // every message of the first call again: absorbed, no new leg
    let first = calls[0].messages();
    let before = e.stats().legs;
    for m in &first {
        e.ingest(
            ms(26_000),
            LinkType::Ethernet,
            &frames::udp(m.src, m.dst, 1, &m.bytes),
        );
    }
    let after = e.stats().legs;
    assert_eq!(
        after.retransmissions,
        before.retransmissions + 1,
        "the INVITE"
    );
    assert_eq!(
        after.late_responses,
        before.late_responses + 1,
        "the INVITE's 200"
    );
    assert_eq!(e.stats().open_legs, 0);
    // a new INVITE reusing the Call-ID (another branch) is a new leg
    let mut again = Call::numbered(
        0,
        addr(A),
        addr(B),
        ms(27_000),
        Script::Answered {
            ring: 100,
            answer: 1000,
            talk: 2000,
            caller_hangs_up: true,
        },
    );
    again.branch = "another".into();
    feed(&mut e, &again.messages());
    e.tick(ms(40_000));
    let legs = drain(&mut e);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].started, ms(27_000));
    // after the linger the tombs go
    e.tick(ms(120_000));
    assert!(e.guard_stats().memory.legs_bytes < tomb_bytes);
}

#[test]
fn challenge_then_retry_is_one_leg() {
    let legs = run(
        &call(Script::ChallengedThenAnswered {
            answer: 1000,
            talk: 5000,
        })
        .messages(),
        ms(60_000),
    );
    assert_eq!(legs.len(), 1, "{legs:#?}");
    let l = &legs[0];
    assert_eq!(l.challenges, 1);
    assert_eq!((l.started, l.answered.get()), (ms(0), Some(ms(1000))));
    assert_eq!((l.final_status, l.end), (Some(200), Some(EndReason::Bye)));
}

#[test]
fn challenge_without_retry_ends_rejected_at_the_challenge() {
    let mut msgs = call(Script::ChallengedThenAnswered {
        answer: 1000,
        talk: 5000,
    })
    .messages();
    msgs.truncate(2); // INVITE, 407
    let legs = run(&msgs, ms(60_000));
    assert_eq!(legs.len(), 1);
    assert_eq!(
        (legs[0].final_status, legs[0].end, legs[0].ended.get()),
        (Some(407), Some(EndReason::Rejected), Some(ms(20)))
    );
}

#[test]
fn cancel_ends_at_the_cancel_with_487() {
    let legs = run(
        &call(Script::Cancelled {
            ring: 100,
            cancel: 9000,
        })
        .messages(),
        ms(60_000),
    );
    let l = &legs[0];
    assert_eq!(
        (l.end, l.ended.get(), l.final_status),
        (Some(EndReason::Cancel), Some(ms(9000)), Some(487))
    );
    assert_eq!(l.ended_by, Some(Side::Caller));
    assert_eq!(l.answered.get(), None);
}

#[test]
fn rejected_busy() {
    let legs = run(
        &call(Script::Rejected {
            ring: None,
            at: 200,
            code: 486,
        })
        .messages(),
        ms(60_000),
    );
    let l = &legs[0];
    assert_eq!(
        (l.end, l.ended.get(), l.final_status, l.ended_by),
        (
            Some(EndReason::Rejected),
            Some(ms(200)),
            Some(486),
            Some(Side::Callee)
        )
    );
}

const INVITE: &str = "INVITE sip:201@10.20.0.5 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv
From: <sip:07700900001@192.0.2.1>;tag=ft
To: <sip:201@10.20.0.5>
Call-ID: race
CSeq: 1 INVITE
Content-Length: 0

";

fn resp(code: &str, cseq: &str, to_tag: &str, branch: &str) -> String {
    format!(
        "SIP/2.0 {code}
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}
From: <sip:07700900001@192.0.2.1>;tag=ft
To: <sip:201@10.20.0.5>;tag={to_tag}
Call-ID: race
CSeq: {cseq}
Content-Length: 0

"
    )
}

fn req(method: &str, cseq: &str, from_tag: &str, to_tag: &str, branch: &str) -> String {
    format!(
        "{method} sip:x@10.20.0.5 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}
From: <sip:07700900001@192.0.2.1>;tag={from_tag}
To: <sip:201@10.20.0.5>;tag={to_tag}
Call-ID: race
CSeq: {cseq}
Content-Length: 0

"
    )
}

#[test]
fn cancel_racing_the_200_means_answered() {
    let cancel = INVITE
        .replace("INVITE sip", "CANCEL sip")
        .replace("1 INVITE", "1 CANCEL");
    let msgs = vec![
        msg(0, A, B, INVITE),
        msg(
            100,
            B,
            A,
            &resp("180 Ringing", "1 INVITE", "x", "z9hG4bKinv"),
        ),
        msg(5000, A, B, &cancel),
        msg(5001, B, A, &resp("200 OK", "1 INVITE", "x", "z9hG4bKinv")),
        msg(5002, B, A, &resp("200 OK", "1 CANCEL", "x", "z9hG4bKinv")),
        msg(5003, A, B, &req("ACK", "1 ACK", "ft", "x", "z9hG4bKack")),
        msg(20_000, A, B, &req("BYE", "2 BYE", "ft", "x", "z9hG4bKbye")),
    ];
    let legs = run(&msgs, ms(60_000));
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert_eq!(
        (l.answered.get(), l.end, l.ended_by),
        (Some(ms(5001)), Some(EndReason::Bye), Some(Side::Caller))
    );
}

#[test]
fn forked_early_dialogs_stay_one_leg_with_the_answering_tag() {
    let msgs = vec![
        msg(0, A, B, INVITE),
        msg(
            100,
            B,
            A,
            &resp("180 Ringing", "1 INVITE", "h1", "z9hG4bKinv"),
        ),
        msg(
            120,
            B,
            A,
            &resp("180 Ringing", "1 INVITE", "h2", "z9hG4bKinv"),
        ),
        msg(4000, B, A, &resp("200 OK", "1 INVITE", "h2", "z9hG4bKinv")),
        msg(
            64_000,
            B,
            A,
            "BYE sip:07700900001@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 10.20.0.5:5060;branch=z9hG4bKbye2
From: <sip:201@10.20.0.5>;tag=h2
To: <sip:07700900001@192.0.2.1>;tag=ft
Call-ID: race
CSeq: 9 BYE
Content-Length: 0

",
        ),
    ];
    let legs = run(&msgs, ms(90_000));
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert_eq!(l.forks.as_slice(), ["h1", "h2"]);
    assert_eq!(l.to_tag.as_deref(), Some("h2"));
    assert_eq!(
        (l.ringing.get(), l.answered.get(), l.ended.get()),
        (Some(ms(100)), Some(ms(4000)), Some(ms(64_000)))
    );
    assert_eq!(l.ended_by, Some(Side::Callee));
}

#[test]
fn proxy_hops_are_separate_legs_and_sibling_487_is_its_own_leg() {
    // carrier -> proxy, proxy -> handset 1 and handset 2 (same Call-ID and From-tag)
    const P: &str = "10.20.0.5:5060";
    const H1: &str = "10.20.1.11:5060";
    const H2: &str = "10.20.1.12:5060";
    let inv_p = |branch: &str| {
        INVITE
            .replace("z9hG4bKinv", branch)
            .replace("192.0.2.1:5060;branch", "10.20.0.5:5060;branch")
    };
    let r = |code: &str, tag: &str, branch: &str| {
        resp(code, "1 INVITE", tag, branch)
            .replace("192.0.2.1:5060;branch", "10.20.0.5:5060;branch")
    };
    let msgs = vec![
        msg(0, A, P, INVITE),
        msg(10, P, H1, &inv_p("z9hG4bKp1")),
        msg(11, P, H2, &inv_p("z9hG4bKp2")),
        msg(100, H1, P, &r("180 Ringing", "h1", "z9hG4bKp1")),
        msg(
            101,
            P,
            A,
            &resp("180 Ringing", "1 INVITE", "h1", "z9hG4bKinv"),
        ),
        msg(120, H2, P, &r("180 Ringing", "h2", "z9hG4bKp2")),
        msg(4000, H1, P, &r("200 OK", "h1", "z9hG4bKp1")),
        msg(4001, P, A, &resp("200 OK", "1 INVITE", "h1", "z9hG4bKinv")),
        msg(
            4002,
            P,
            H2,
            &INVITE
                .replace("INVITE sip", "CANCEL sip")
                .replace("1 INVITE", "1 CANCEL")
                .replace("z9hG4bKinv", "z9hG4bKp2"),
        ),
        msg(4010, H2, P, &r("487 Request Terminated", "h2", "z9hG4bKp2")),
    ];
    let mut legs = run(&msgs, ms(10_000));
    legs.sort_by_key(|l| l.dst.to_string());
    assert_eq!(legs.len(), 3, "{legs:#?}");
    let by_dst = |d: &str| legs.iter().find(|l| l.dst == addr(d)).unwrap();
    assert_eq!(by_dst(P).answered.get(), Some(ms(4001)));
    assert_eq!(by_dst(H1).answered.get(), Some(ms(4000)));
    let sib = by_dst(H2);
    assert_eq!(
        (sib.end, sib.final_status, sib.ended.get()),
        (Some(EndReason::Cancel), Some(487), Some(ms(4002)))
    );
}

#[test]
fn reinvite_and_update_make_no_new_leg_and_keep_the_final_status() {
    let msgs = vec![
        msg(0, A, B, INVITE),
        msg(2000, B, A, &resp("200 OK", "1 INVITE", "x", "z9hG4bKinv")),
        msg(2001, A, B, &req("ACK", "1 ACK", "ft", "x", "z9hG4bKa")),
        msg(
            10_000,
            A,
            B,
            &req("INVITE", "2 INVITE", "ft", "x", "z9hG4bKre"),
        ),
        msg(
            10_010,
            B,
            A,
            &resp("488 Not Acceptable Here", "2 INVITE", "x", "z9hG4bKre"),
        ),
        msg(
            12_000,
            A,
            B,
            &req("UPDATE", "3 UPDATE", "ft", "x", "z9hG4bKup"),
        ),
        msg(12_010, B, A, &resp("200 OK", "3 UPDATE", "x", "z9hG4bKup")),
        msg(30_000, A, B, &req("BYE", "4 BYE", "ft", "x", "z9hG4bKbye")),
    ];
    let legs = run(&msgs, ms(60_000));
    assert_eq!(legs.len(), 1);
    assert_eq!(
        (legs[0].final_status, legs[0].end, legs[0].ended.get()),
        (Some(200), Some(EndReason::Bye), Some(ms(30_000)))
    );
}

#[test]
fn no_bye_ends_inferred_by_session_timer_or_maximum() {
    // Session-Expires: 90 s, refreshed once by a re-INVITE at 60 s
    let with_se = INVITE.replace(
        "Content-Length: 0",
        "Session-Expires: 90\nContent-Length: 0",
    );
    let msgs = vec![
        msg(0, A, B, &with_se),
        msg(1000, B, A, &resp("200 OK", "1 INVITE", "x", "z9hG4bKinv")),
        msg(
            60_000,
            A,
            B,
            &req("INVITE", "2 INVITE", "ft", "x", "z9hG4bKre"),
        ),
        msg(60_010, B, A, &resp("200 OK", "2 INVITE", "x", "z9hG4bKre")),
    ];
    let mut e = engine();
    feed(&mut e, &msgs);
    e.tick(ms(100_000));
    assert!(
        drain(&mut e).is_empty(),
        "closed before the refreshed session expired"
    );
    e.tick(ms(160_000));
    let legs = drain(&mut e);
    assert_eq!(legs.len(), 1);
    assert_eq!(
        (legs[0].end, legs[0].ended.get()),
        (Some(EndReason::Inferred), Some(ms(150_010)))
    );

    // no session timer: the configured maximum (here 10 minutes)
    let mut e = Engine::new(EngineConfig {
        legs: LegConfig {
            max_call: 10 * MINUTE,
            ..LegConfig::default()
        },
        ..EngineConfig::default()
    });
    feed(
        &mut e,
        &call(Script::AnsweredNoBye { answer: 3000 }).messages(),
    );
    e.tick(ms(3000 + 10 * 60_000 - 1));
    assert!(drain(&mut e).is_empty());
    e.tick(ms(3000 + 10 * 60_000 + 1000));
    let legs = drain(&mut e);
    assert_eq!(
        (legs[0].end, legs[0].ended.get()),
        (Some(EndReason::Inferred), Some(ms(3000 + 10 * 60_000)))
    );
}

#[test]
fn open_legs_at_end_of_input_close_at_the_last_packet() {
    let msgs = call(Script::AnsweredNoBye { answer: 3000 }).messages();
    let mut e = engine();
    feed(&mut e, &msgs);
    e.finish();
    let legs = drain(&mut e);
    assert_eq!(
        (legs[0].end, legs[0].ended.get()),
        (Some(EndReason::Inferred), Some(msgs.last().unwrap().ts))
    );
}

#[test]
fn bye_in_either_direction_and_call_id_reuse() {
    let first = vec![
        msg(0, A, B, INVITE),
        msg(1000, B, A, &resp("200 OK", "1 INVITE", "x", "z9hG4bKinv")),
        msg(5000, A, B, &req("BYE", "2 BYE", "ft", "x", "z9hG4bKbye")),
        msg(5001, A, B, &req("BYE", "2 BYE", "ft", "x", "z9hG4bKbye")), // retransmitted
    ];
    // the same device reuses the Call-ID with a new From-tag
    let second_invite = INVITE
        .replace("tag=ft", "tag=ft2")
        .replace("z9hG4bKinv", "z9hG4bKinv2");
    let mut msgs = first;
    msgs.push(msg(6000, A, B, &second_invite));
    msgs.push(msg(
        6100,
        B,
        A,
        &resp("486 Busy Here", "1 INVITE", "y", "z9hG4bKinv2").replace("tag=ft", "tag=ft2"),
    ));
    let legs = run(&msgs, ms(60_000));
    assert_eq!(legs.len(), 2, "{legs:#?}");
    assert_eq!(
        (legs[0].end, legs[0].ended_by),
        (Some(EndReason::Bye), Some(Side::Caller))
    );
    assert_eq!(
        (legs[1].from_tag.as_str(), legs[1].final_status),
        ("ft2", Some(486))
    );
}

#[test]
fn bye_without_the_200_marks_the_leg_partial() {
    let msgs = vec![
        msg(0, A, B, INVITE),
        msg(9000, A, B, &req("BYE", "2 BYE", "ft", "x", "z9hG4bKbye")),
    ];
    let legs = run(&msgs, ms(60_000));
    assert!(legs[0].partial);
    assert_eq!(legs[0].end, Some(EndReason::Bye));
}

#[test]
fn tcp_and_ipv6_give_the_same_legs_as_udp_v4() {
    let script = Script::Answered {
        ring: 100,
        answer: 2000,
        talk: 3000,
        caller_hangs_up: true,
    };
    let udp = run(&call(script.clone()).messages(), ms(60_000));
    // IPv6 over UDP
    let c6 = Call::numbered(
        1,
        addr("[2001:db8::1]:5060"),
        addr("[2001:db8::5]:5060"),
        ms(0),
        script.clone(),
    );
    let v6 = run(&c6.messages(), ms(60_000));
    // TCP: one stream per direction, all messages of a direction back to back
    let c = call(script);
    let mut e = engine();
    let mut seq: std::collections::HashMap<(SocketAddr, SocketAddr), u32> = Default::default();
    for m in c.messages() {
        let s = seq.entry((m.src, m.dst)).or_insert(1000);
        e.ingest(
            m.ts,
            LinkType::Ethernet,
            &frames::tcp(m.src, m.dst, *s, false, false, &m.bytes),
        );
        *s += m.bytes.len() as u32;
    }
    e.tick(ms(60_000));
    e.finish();
    let tcp = drain(&mut e);
    for (name, other) in [("v6", &v6), ("tcp", &tcp)] {
        assert_eq!(other.len(), 1, "{name}");
        let (a, b) = (&udp[0], &other[0]);
        assert_eq!(
            (
                a.started,
                a.ringing.get(),
                a.answered.get(),
                a.ended.get(),
                a.final_status,
                a.end
            ),
            (
                b.started,
                b.ringing.get(),
                b.answered.get(),
                b.ended.get(),
                b.final_status,
                b.end
            ),
            "{name}"
        );
    }
    assert_eq!(tcp[0].transport, Transport::Tcp);
}

#[test]
fn fragmented_invite_is_reassembled() {
    let c = call(Script::Rejected {
        ring: Some(50),
        at: 100,
        code: 603,
    });
    let msgs = c.messages();
    let mut e = engine();
    for (i, m) in msgs.iter().enumerate() {
        for f in frames::udp_fragments_v4(m.src, m.dst, i as u16, &m.bytes, 200) {
            e.ingest(m.ts, LinkType::Ethernet, &f);
        }
    }
    e.finish();
    let legs = drain(&mut e);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].final_status, Some(603));
    assert!(e.stats().wire.datagrams_reassembled >= msgs.len() as u64);
}

#[test]
fn snapshot_restores_a_call_in_progress() {
    let msgs = call(Script::Answered {
        ring: 100,
        answer: 2000,
        talk: 30_000,
        caller_hangs_up: true,
    })
    .messages();
    let (before, after) = msgs.split_at(4); // INVITE, 100, 180, 200
    let mut e = engine();
    feed(&mut e, before);
    let mut snap = Vec::new();
    crate::persist::write_snapshot(&mut snap, 1, &e.snapshot_ref()).unwrap();
    let snap = String::from_utf8(snap).unwrap();
    assert!(!snap.contains("07700"), "raw numbers in the snapshot");
    let mut e2 = engine();
    e2.restore(crate::persist::read_snapshot(snap.as_bytes()).unwrap().1);
    feed(&mut e2, after);
    e2.finish();
    let legs = drain(&mut e2);
    assert_eq!(legs.len(), 1);
    assert_eq!(
        (legs[0].answered.get(), legs[0].ended.get(), legs[0].end),
        (Some(ms(2000)), Some(ms(32_000)), Some(EndReason::Bye))
    );
}

#[test]
fn a_response_to_an_unseen_invite_adopts_a_partial_leg_when_asked() {
    let msgs = call(Script::Answered {
        ring: 100,
        answer: 2000,
        talk: 30_000,
        caller_hangs_up: true,
    })
    .messages();
    // the INVITE and the 100 were lost (a restart)
    let strict = run(&msgs[2..], ms(60_000));
    assert!(strict.is_empty(), "replays report only what they saw");
    let mut e = Engine::new(EngineConfig {
        legs: LegConfig {
            adopt_orphans: true,
            ..LegConfig::default()
        },
        ..EngineConfig::default()
    });
    feed(&mut e, &msgs[2..]);
    e.finish();
    let legs = drain(&mut e);
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert!(l.partial);
    assert_eq!(
        (l.src, l.dst),
        (addr(A), addr(B)),
        "the INVITE went the other way"
    );
    assert_eq!(
        (l.started, l.ringing.get(), l.answered.get(), l.end),
        (ms(100), Some(ms(100)), Some(ms(2000)), Some(EndReason::Bye))
    );
}

#[test]
fn tracked_legs_are_bounded() {
    let mut e = Engine::new(EngineConfig {
        legs: LegConfig {
            max_legs: 10,
            ..LegConfig::default()
        },
        ..EngineConfig::default()
    });
    for n in 0..50u64 {
        let c = Call::numbered(
            n,
            addr(A),
            addr(B),
            ms(n as i64),
            Script::AnsweredNoBye { answer: 1 },
        );
        feed(&mut e, &c.messages());
        assert!(e.stats().open_legs <= 10);
    }
    assert_eq!(e.stats().legs.legs_evicted, 40);
}

#[test]
fn timer_b_follows_the_senders_t1() {
    // a sender whose T1 is 1 s retransmits at 1, 3, 7, 15, 31 s: its
    // transaction is over at 64 s, not 32 s
    let c = call(Script::NoResponse);
    let invite = c.messages()[0].clone();
    let mut msgs = vec![invite.clone()];
    for t in [1000, 3000, 7000, 15_000, 31_000] {
        msgs.push(Msg {
            ts: ms(t),
            ..invite.clone()
        });
    }
    let legs = run(&msgs, ms(200_000));
    assert_eq!(
        (legs[0].end, legs[0].ended.get()),
        (Some(EndReason::Timeout), Some(ms(64_000)))
    );
    // the same packet seen twice at once (two capture points) says nothing
    // of T1; the bounds hold a slow sender to 2 s (128 s)
    let mut msgs = vec![
        invite.clone(),
        Msg {
            ts: ms(1),
            ..invite.clone()
        },
    ];
    let legs = run(&msgs, ms(200_000));
    assert_eq!(legs[0].ended.get(), Some(ms(32_000)));
    msgs[1].ts = ms(10_000);
    let legs = run(&msgs, ms(300_000));
    assert_eq!(legs[0].ended.get(), Some(ms(128_000)));
}

#[test]
fn only_100_trying_ends_at_timer_c_and_ringing_at_the_ring_timeout() {
    let c = call(Script::NoResponse);
    let m = c.messages();
    let trying = msg(
        20,
        B,
        A,
        &format!(
            "SIP/2.0 100 Trying\nVia: SIP/2.0/UDP {A};branch=z9hG4bK{}-1\nFrom: \"Caller\" <sip:{}@192.0.2.1>;tag={}\nTo: <sip:{}@10.20.0.5>\nCall-ID: {}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
            c.branch, c.caller, c.from_tag, c.callee, c.call_id
        ),
    );
    let legs = run(&[m[0].clone(), trying.clone()], ms(3 * 3600 * 1000));
    // nothing rang: the 30-minute ring timeout does not apply, Timer C does
    assert_eq!(
        (legs[0].end, legs[0].ended.get(), legs[0].ringing.get()),
        (Some(EndReason::Timeout), Some(ms(20)), None)
    );
    let mut e = engine();
    feed(&mut e, &[m[0].clone(), trying.clone()]);
    e.tick(ms(20 + TIMER_C / MILLISECOND - 1));
    assert!(drain(&mut e).is_empty(), "over before Timer C");
    e.tick(ms(20 + TIMER_C / MILLISECOND));
    assert_eq!(drain(&mut e).len(), 1, "over at Timer C");
    // a 180 makes it a ringing call: the ring timeout (30 min) applies
    let ringing = msg(
        40,
        B,
        A,
        &String::from_utf8(trying.bytes.clone())
            .unwrap()
            .replace("100 Trying", "180 Ringing")
            .replace(
                "To: <sip:01632960123@10.20.0.5>",
                "To: <sip:01632960123@10.20.0.5>;tag=x",
            )
            .replace('\r', ""),
    );
    let mut e = engine();
    feed(&mut e, &[m[0].clone(), trying, ringing]);
    e.tick(ms(40 + 30 * 60 * 1000 - 1));
    assert!(drain(&mut e).is_empty(), "over before the ring timeout");
    e.tick(ms(40 + 30 * 60 * 1000));
    let legs = drain(&mut e);
    assert_eq!(
        (legs[0].end, legs[0].ringing.get()),
        (Some(EndReason::Timeout), Some(ms(40)))
    );
}

#[test]
fn shedding_removes_unanswered_legs_oldest_and_suspects_first() {
    let mut t = LegTracker::new(
        LegConfig::default(),
        crate::number::Hasher::new([1; 32], "44"),
    );
    let mut ids = Vec::new();
    for n in 0..10u64 {
        let c = Call::numbered(n, addr(A), addr(B), ms(n as i64 * 10), Script::NoResponse);
        let m = &c.messages()[0];
        let mut p = crate::sip::Parser::new(vec![]);
        let crate::sip::Parsed::Message { msg, .. } = p.parse(&m.bytes).unwrap() else {
            panic!()
        };
        let hop = Hop {
            src: m.src,
            dst: m.dst,
            transport: crate::wire::Transport::Udp,
            source: crate::wire::Source::Capture,
        };
        t.on_message(m.ts, hop, &msg);
        while let Some(ev) = t.pop_event() {
            if let LegEvent::Started(l) = ev {
                ids.push(l.id);
            }
        }
    }
    let per_leg = t.bytes / 10;
    assert_eq!(t.bytes, t.legs.values().map(|l| l.acct).sum::<usize>());
    assert!(t.bytes() > t.bytes, "with the maps' room");
    assert!(per_leg > 500 && per_leg < 4096, "{per_leg} bytes a leg");
    t.mark_suspect(ids[7]);
    // one leg's worth: the suspect goes first, even though it is younger
    let gone = t.shed(1, |_| true);
    assert_eq!(gone.iter().map(|g| g.id).collect::<Vec<_>>(), vec![ids[7]]);
    // then the oldest, unless vetoed
    let gone = t.shed(2 * per_leg, |id| id != ids[0]);
    assert_eq!(
        gone.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![ids[1], ids[2]]
    );
    assert_eq!((t.open_legs(), t.removed.shed), (7, 3));
    assert_eq!(t.bytes, t.legs.values().map(|l| l.acct).sum::<usize>());
    t.finish_all(ms(1000));
    while t.pop_event().is_some() {}
    t.tick(ms(100_000));
    assert_eq!(t.bytes, 0, "every byte counted comes back");
}

/// An engine as the daemon runs it: dialogs a gap hid are adopted.
fn daemon_engine() -> Engine {
    Engine::new(EngineConfig {
        legs: LegConfig {
            adopt_orphans: true,
            ..LegConfig::default()
        },
        ..EngineConfig::default()
    })
}

/// Feeds what a capture saw around a gap `from..to` (ms): the messages
/// before it, the gap, the messages after it; then time runs to `until`.
fn across_gap(e: &mut Engine, msgs: &[Msg], from: i64, to: i64, until: i64) -> Vec<Leg> {
    let before: Vec<Msg> = msgs.iter().filter(|m| m.ts < ms(from)).cloned().collect();
    let after: Vec<Msg> = msgs.iter().filter(|m| m.ts > ms(to)).cloned().collect();
    feed(e, &before);
    e.mark_gap(ms(from), ms(to));
    feed(e, &after);
    e.tick(ms(until));
    drain(e)
}

#[test]
fn a_ringing_leg_whose_end_fell_in_a_gap_closes_gap_timeout_after_it_ending_at_its_start() {
    let msgs = call(Script::Cancelled {
        ring: 1000,
        cancel: 20_000,
    })
    .messages();
    let mut e = engine();
    // the CANCEL and the 487 fell in the gap; capture resumed at 30 s
    assert!(
        across_gap(&mut e, &msgs, 5_000, 30_000, 30_000 + 119_000).is_empty(),
        "still open within gap_timeout"
    );
    e.tick(ms(30_000 + 121_000));
    let legs = drain(&mut e);
    assert_eq!(
        legs.len(),
        1,
        "closed 2 min after the gap, not at the 30-min ring timeout"
    );
    let l = &legs[0];
    assert_eq!(
        (l.end, l.ended.get(), l.answered.get()),
        (Some(EndReason::Timeout), Some(ms(5_000)), None)
    );
    assert!(l.partial);
}

#[test]
fn a_leg_that_rings_on_after_the_gap_keeps_ringing() {
    // a 180 retransmitted (100rel) after the gap shows the call still rings
    let mut msgs = call(Script::Cancelled {
        ring: 1000,
        cancel: 200_000,
    })
    .messages();
    let mut again = msgs[2].clone();
    again.ts = ms(40_000);
    msgs.insert(3, again);
    let legs = across_gap(&mut engine(), &msgs, 5_000, 30_000, 210_000);
    let l = &legs[0];
    assert_eq!(
        (l.end, l.ended.get()),
        (Some(EndReason::Cancel), Some(ms(200_000))),
        "its own CANCEL ends it, 170 s after the gap"
    );
}

#[test]
fn a_cancel_after_a_gap_adopts_the_call_from_the_gap_start() {
    let msgs = call(Script::Cancelled {
        ring: 1000,
        cancel: 20_000,
    })
    .messages();
    // the INVITE, 100 and 180 fell in the gap (the agent restarted)
    let legs = across_gap(&mut daemon_engine(), &msgs, -100, 15_000, 60_000);
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert_eq!(
        (l.src, l.dst),
        (addr(A), addr(B)),
        "a CANCEL goes the INVITE's way"
    );
    assert_eq!(
        (l.started, l.end, l.ended.get(), l.answered.get()),
        (ms(-100), Some(EndReason::Cancel), Some(ms(20_000)), None)
    );
    assert!(l.partial);
    // a replay reports only what it saw
    assert!(across_gap(&mut engine(), &msgs, -100, 15_000, 60_000).is_empty());
}

#[test]
fn an_answer_that_fell_in_a_gap_is_put_at_the_gaps_end() {
    let msgs = call(Script::Answered {
        ring: 100,
        answer: 3_000,
        talk: 30_000,
        caller_hangs_up: true,
    })
    .messages();
    // the 200 and its ACK fell in the gap; the BYE shows the call was answered
    let legs = across_gap(&mut engine(), &msgs, 1_000, 5_000, 60_000);
    let l = &legs[0];
    assert_eq!(
        (l.started, l.answered.get(), l.end, l.ended.get()),
        (
            ms(0),
            Some(ms(5_000)),
            Some(EndReason::Bye),
            Some(ms(33_000))
        )
    );
    assert!(l.partial);
}

#[test]
fn an_ack_after_a_gap_adopts_the_answered_call() {
    let msgs = call(Script::Answered {
        ring: 100,
        answer: 3_000,
        talk: 30_000,
        caller_hangs_up: true,
    })
    .messages();
    // all but the ACK and the BYE fell in the gap
    let legs = across_gap(&mut daemon_engine(), &msgs, -100, 3_001, 60_000);
    assert_eq!(legs.len(), 1);
    let l = &legs[0];
    assert_eq!((l.src, l.dst), (addr(A), addr(B)));
    assert_eq!(
        (l.started, l.answered.get(), l.end, l.ended.get()),
        (
            ms(-100),
            Some(ms(3_001)),
            Some(EndReason::Bye),
            Some(ms(33_000))
        )
    );
}

#[test]
fn an_ack_of_an_error_that_fell_in_a_gap_ends_the_leg_at_the_gap() {
    let msgs = call(Script::Rejected {
        ring: Some(100),
        at: 3_000,
        code: 486,
    })
    .messages();
    let legs = across_gap(&mut engine(), &msgs, 1_000, 3_001, 10_000);
    let l = &legs[0];
    assert_eq!(
        (l.end, l.ended.get(), l.answered.get()),
        (Some(EndReason::Rejected), Some(ms(1_000)), None),
        "not answered: the ACK is the INVITE's own"
    );
}

#[test]
fn an_answered_call_whose_bye_fell_in_a_gap_never_lasts_past_the_gap() {
    let msgs = call(Script::AnsweredNoBye { answer: 2_000 }).messages();
    let mut e = engine();
    // silence after the gap is normal in a conversation: not closed at gap_timeout
    assert!(across_gap(&mut e, &msgs, 10_000, 12_000, 600_000).is_empty());
    // closed at the longest call, its end put at the gap's start, not 4 h on
    e.tick(ms(5 * 3_600_000));
    let l = &drain(&mut e)[0];
    assert_eq!(
        (l.end, l.answered.get(), l.ended.get()),
        (Some(EndReason::Inferred), Some(ms(2_000)), Some(ms(10_000)))
    );
}

/// The structs a call in progress is made of stay as small as they were
/// made (issue 13's goal 1: 12,000 legs in progress in 32 MiB): a field
/// added carelessly (an `Option<Timestamp>` is 16 bytes, an `OptTime` 8)
/// shows here first. On 64-bit targets.
#[test]
fn a_leg_and_a_call_in_progress_stay_small() {
    use std::mem::size_of;
    if size_of::<usize>() != 8 {
        return;
    }
    assert!(size_of::<Leg>() <= 560, "Leg is {} bytes", size_of::<Leg>());
    assert!(size_of::<crate::call::LegInfo>() <= 96, "LegInfo is {} bytes", size_of::<crate::call::LegInfo>());
    assert!(size_of::<crate::call::OpenCall>() <= 328, "OpenCall is {} bytes", size_of::<crate::call::OpenCall>());
}

/// The timer heap never takes an entry out in place: after every message
/// its earliest entry is still the earliest leg's due time (what the daemon
/// sleeps until), and the stale entries it keeps stay within twice the legs.
#[test]
fn timers_give_the_earliest_leg_and_stay_within_twice_the_legs() {
    let mut e = engine();
    let scripts = [
        Script::Answered { ring: 100, answer: 2000, talk: 30_000, caller_hangs_up: true },
        Script::Rejected { ring: Some(200), at: 4000, code: 486 },
        Script::Cancelled { ring: 100, cancel: 9000 },
        Script::ChallengedThenAnswered { answer: 3000, talk: 60_000 },
        Script::NoResponse,
        Script::AnsweredNoBye { answer: 1500 },
    ];
    let mut msgs: Vec<Msg> = (0..1200u64)
        .flat_map(|i| Call::numbered(i, addr(A), addr(B), ms(i as i64 * 40), scripts[i as usize % 6].clone()).messages())
        .collect();
    msgs.sort_by_key(|m| m.ts);
    let (mut stale_seen, mut most) = (0, 0);
    for (i, m) in msgs.iter().enumerate() {
        e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes));
        let t = e.leg_tracker();
        let earliest = t.legs.values().filter_map(|l| l.timer.get()).min();
        assert_eq!(t.next_deadline(), earliest, "after message {i}");
        assert!(t.timers.len() <= 2 * t.legs.len() + 64, "after message {i}: {} entries, {} legs", t.timers.len(), t.legs.len());
        stale_seen += usize::from(t.timers.len() > t.legs.len());
        most = most.max(t.legs.len());
    }
    let t = e.leg_tracker();
    assert!(stale_seen > 0 && t.timers.rebuilds > 0, "the test should make stale entries and rebuild: {stale_seen}, {}", t.timers.rebuilds);
    assert!(most > 100, "legs at once: {most}");
    // every leg still ends, each once
    e.tick(ms(24 * 3600 * 1000));
    e.finish();
    let legs = drain(&mut e);
    assert_eq!(legs.len(), 1200);
    assert_eq!(e.leg_tracker().next_deadline(), None);
}

/// A snapshot taken in memory (the leg's due time still set in it) and
/// restored arms the legs' timers again: the restored engine is due when
/// the first was.
#[test]
fn a_restored_snapshot_arms_the_legs_timers() {
    let mut e = engine();
    feed(&mut e, &call(Script::NoResponse).messages()[..1]);
    let due = e.leg_tracker().next_deadline();
    assert!(due.is_some());
    let mut again = engine();
    again.restore(e.snapshot());
    assert_eq!(again.leg_tracker().next_deadline(), due);
    // and the leg ends at its timer there too
    again.tick(ms(10 * 60 * 1000));
    let legs = drain(&mut again);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].end, Some(EndReason::Timeout));
}
