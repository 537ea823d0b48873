//! Writes a large synthetic SIP capture (pcap, Ethernet) for benchmarks.
//!
//! `cbt-gen-capture OUT.pcap [CALLS] [CALLS_PER_SECOND]`: CALLS calls (default
//! 100000) starting CALLS_PER_SECOND apart (default 30/s), from 200 carrier
//! addresses to one PBX, with a realistic mix of outcomes: 60% answered, 12%
//! busy/unavailable, 15% cancelled while ringing, 5% challenged then
//! answered, 5% answered without BYE, 3% no response. Deterministic.
//!
//! `KEEPALIVES` (fourth argument, default 0): that many messages of the
//! traffic that cannot touch a leg per call, as a PBX's signalling mostly
//! is (OPTIONS pings and their 200s, REGISTER refreshes with their 401
//! and 200, SUBSCRIBE and NOTIFY for presence), spread between the calls:
//! 63 makes a capture that is 90% such messages.

use anyhow::{Context, Result};
use cbt_proto::synth::{frames, Call, Script};
use cbt_proto::time::{Timestamp, SECOND};
use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::net::SocketAddr;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).context("usage: cbt-gen-capture OUT.pcap [CALLS] [CALLS_PER_SECOND] [KEEPALIVES]")?;
    let calls: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let rate: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let keepalives: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET)?;
    let mut save = cap.savefile(out)?;
    let pbx: SocketAddr = "10.20.0.5:5060".parse()?;
    let t0 = Timestamp::from_secs_micros(1_730_710_800, 0); // a Monday 09:00 UTC
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // messages are produced call by call and merged in time order
    let mut heap: BinaryHeap<Reverse<(Timestamp, u64, usize)>> = BinaryHeap::new();
    let mut pending: std::collections::HashMap<u64, Vec<cbt_proto::synth::Msg>> = Default::default();
    let mut written = 0u64;
    let mut ip_id = 0u16;
    let mut flush_until = |heap: &mut BinaryHeap<Reverse<(Timestamp, u64, usize)>>,
                           pending: &mut std::collections::HashMap<u64, Vec<cbt_proto::synth::Msg>>,
                           until: Timestamp,
                           save: &mut pcap::Savefile|
     -> Result<()> {
        while let Some(Reverse((ts, n, i))) = heap.peek().copied() {
            if ts > until {
                break;
            }
            heap.pop();
            let msgs = pending.get(&n).expect("pending call");
            let m = &msgs[i];
            ip_id = ip_id.wrapping_add(1);
            let frame = frames::udp(m.src, m.dst, ip_id, &m.bytes);
            let us = m.ts.micros();
            let header = pcap::PacketHeader {
                ts: libc_timeval(us),
                caplen: frame.len() as u32,
                len: frame.len() as u32,
            };
            save.write(&pcap::Packet::new(&header, &frame));
            written += 1;
            if i + 1 == msgs.len() {
                pending.remove(&n);
            }
        }
        Ok(())
    };
    for n in 0..calls {
        let start = t0.add((n as i64 * SECOND) / rate as i64 + (next() % 20_000) as i64);
        let carrier: SocketAddr = format!("192.0.2.{}:5060", 1 + next() % 200).parse()?;
        let r = next() % 100;
        let script = match r {
            0..=59 => Script::Answered {
                ring: 50 + (next() % 2000) as u32,
                answer: 2500 + (next() % 60_000) as u32,
                talk: 5_000 + (next() % 400_000) as u32,
                caller_hangs_up: next() % 2 == 0,
            },
            60..=71 => Script::Rejected {
                ring: if next() % 2 == 0 { Some(100) } else { None },
                at: 200 + (next() % 20_000) as u32,
                code: [486u16, 480, 603, 404][(next() % 4) as usize],
            },
            72..=86 => Script::Cancelled {
                ring: 100,
                cancel: 1000 + (next() % 120_000) as u32,
            },
            87..=91 => Script::ChallengedThenAnswered {
                answer: 3000 + (next() % 30_000) as u32,
                talk: 20_000 + (next() % 200_000) as u32,
            },
            92..=96 => Script::AnsweredNoBye {
                answer: 2000 + (next() % 20_000) as u32,
            },
            _ => Script::NoResponse,
        };
        let call = Call::numbered(n, carrier, pbx, start, script);
        let msgs = call.messages();
        for (i, m) in msgs.iter().enumerate() {
            heap.push(Reverse((m.ts, n, i)));
        }
        pending.insert(n, msgs);
        if keepalives > 0 {
            // spread over the time until the next call, as their own "call"
            let gap = SECOND / rate as i64;
            let ka: Vec<cbt_proto::synth::Msg> = (0..keepalives).map(|k| keepalive(n, k, start.add(gap * k as i64 / keepalives as i64), pbx)).collect();
            let key = calls + n;
            for (i, m) in ka.iter().enumerate() {
                heap.push(Reverse((m.ts, key, i)));
            }
            pending.insert(key, ka);
        }
        // everything before this call's start can be written now
        flush_until(&mut heap, &mut pending, start, &mut save)?;
    }
    flush_until(&mut heap, &mut pending, Timestamp::MAX, &mut save)?;
    save.flush()?;
    eprintln!("{out}: {calls} calls, {written} SIP messages");
    Ok(())
}

/// The `k`th message of keepalive traffic after call `n`: an OPTIONS ping
/// from the PBX to a handset and its 200, a REGISTER refresh with its 401
/// and the retried REGISTER with its 200, a presence SUBSCRIBE, a NOTIFY.
fn keepalive(n: u64, k: u64, ts: Timestamp, pbx: SocketAddr) -> cbt_proto::synth::Msg {
    let phone: SocketAddr = format!("10.20.1.{}:5060", 10 + (n + k) % 40).parse().expect("address");
    let tag = format!("{n:x}k{k:x}");
    let (src, dst, text) = match k % 8 {
        0 => (pbx, phone, format!("OPTIONS sip:{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bKo{tag}\r\nFrom: <sip:pbx@{pbx}>;tag=o{tag}\r\nTo: <sip:{phone}>\r\nCall-ID: o{tag}@pbx\r\nCSeq: 102 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: Asterisk PBX 20.5.0\r\nContent-Length: 0\r\n\r\n")),
        1 => (phone, pbx, format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bKo{tag}\r\nFrom: <sip:pbx@{pbx}>;tag=o{tag}\r\nTo: <sip:{phone}>;tag=p{tag}\r\nCall-ID: o{tag}@pbx\r\nCSeq: 102 OPTIONS\r\nAllow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS\r\nContent-Length: 0\r\n\r\n")),
        2 | 4 => (phone, pbx, format!("REGISTER sip:{pbx} SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKr{tag}\r\nFrom: <sip:2{:02}@{pbx}>;tag=r{tag}\r\nTo: <sip:2{:02}@{pbx}>\r\nCall-ID: r{n:x}@{phone}\r\nCSeq: {} REGISTER\r\nContact: <sip:2{:02}@{phone}>;expires=3600\r\nMax-Forwards: 70\r\nExpires: 3600\r\nUser-Agent: Yealink SIP-T46U 108.86.0.20\r\nContent-Length: 0\r\n\r\n", n % 40, n % 40, k, n % 40)),
        3 => (pbx, phone, format!("SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKr{tag}\r\nFrom: <sip:2{:02}@{pbx}>;tag=r{tag}\r\nTo: <sip:2{:02}@{pbx}>;tag=a{tag}\r\nCall-ID: r{n:x}@{phone}\r\nCSeq: {} REGISTER\r\nWWW-Authenticate: Digest realm=\"pbx\", nonce=\"{tag}\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n", n % 40, n % 40, k - 1)),
        5 => (pbx, phone, format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKr{tag}\r\nFrom: <sip:2{:02}@{pbx}>;tag=r{tag}\r\nTo: <sip:2{:02}@{pbx}>;tag=a{tag}\r\nCall-ID: r{n:x}@{phone}\r\nCSeq: {} REGISTER\r\nContact: <sip:2{:02}@{phone}>;expires=3600\r\nContent-Length: 0\r\n\r\n", n % 40, n % 40, k - 1, n % 40)),
        6 => (phone, pbx, format!("SUBSCRIBE sip:2{:02}@{pbx} SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKs{tag}\r\nFrom: <sip:2{:02}@{pbx}>;tag=s{tag}\r\nTo: <sip:2{:02}@{pbx}>\r\nCall-ID: s{n:x}@{phone}\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\nExpires: 1800\r\nContact: <sip:2{:02}@{phone}>\r\nContent-Length: 0\r\n\r\n", (n + 1) % 40, n % 40, (n + 1) % 40, n % 40)),
        _ => (pbx, phone, format!("NOTIFY sip:2{:02}@{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bKn{tag}\r\nFrom: <sip:2{:02}@{pbx}>;tag=n{tag}\r\nTo: <sip:2{:02}@{pbx}>;tag=s{tag}\r\nCall-ID: s{n:x}@{phone}\r\nCSeq: 2 NOTIFY\r\nEvent: dialog\r\nSubscription-State: active;expires=1800\r\nContent-Type: application/dialog-info+xml\r\nContent-Length: 0\r\n\r\n", n % 40, (n + 1) % 40, n % 40)),
    };
    cbt_proto::synth::Msg { ts, src, dst, bytes: text.into_bytes() }
}

fn libc_timeval(us: i64) -> libc::timeval {
    libc::timeval {
        tv_sec: us.div_euclid(1_000_000) as _,
        tv_usec: us.rem_euclid(1_000_000) as _,
    }
}
