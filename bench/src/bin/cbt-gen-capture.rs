//! Writes a large synthetic SIP capture (pcap, Ethernet) for benchmarks.
//!
//! `cbt-gen-capture OUT.pcap [CALLS] [CALLS_PER_SECOND]`: CALLS calls (default
//! 100000) starting CALLS_PER_SECOND apart (default 30/s), from 200 carrier
//! addresses to one PBX, with a realistic mix of outcomes: 60% answered, 12%
//! busy/unavailable, 15% cancelled while ringing, 5% challenged then
//! answered, 5% answered without BYE, 3% no response. Deterministic.

use anyhow::{Context, Result};
use cbt_proto::synth::{frames, Call, Script};
use cbt_proto::time::{Timestamp, SECOND};
use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::net::SocketAddr;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).context("usage: cbt-gen-capture OUT.pcap [CALLS] [CALLS_PER_SECOND]")?;
    let calls: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let rate: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(30);
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
        // everything before this call's start can be written now
        flush_until(&mut heap, &mut pending, start, &mut save)?;
    }
    flush_until(&mut heap, &mut pending, Timestamp::MAX, &mut save)?;
    save.flush()?;
    eprintln!("{out}: {calls} calls, {written} SIP messages");
    Ok(())
}

fn libc_timeval(us: i64) -> libc::timeval {
    libc::timeval {
        tv_sec: us.div_euclid(1_000_000) as _,
        tv_usec: us.rem_euclid(1_000_000) as _,
    }
}
