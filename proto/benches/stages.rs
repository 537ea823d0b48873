//! Cost of each stage per SIP message, on the messages of scripted calls:
//! framing, the normalising step, rsip, the whole parse, and the whole engine
//! (frame in, legs out). `cargo bench -p cbt-proto` prints ns per message.

use cbt_proto::sip::{find, Framing};
use cbt_proto::sip::normalize;
use cbt_proto::sip::Parser;
use cbt_proto::synth::{frames, Call, Script};
use cbt_proto::time::Timestamp;
use cbt_proto::{Engine, EngineConfig, LinkType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn messages() -> Vec<Vec<u8>> {
    let scripts = [
        Script::Answered { ring: 100, answer: 2000, talk: 3000, caller_hangs_up: true },
        Script::Cancelled { ring: 100, cancel: 5000 },
        Script::Rejected { ring: Some(50), at: 300, code: 486 },
    ];
    scripts
        .iter()
        .enumerate()
        .flat_map(|(n, s)| {
            Call::numbered(n as u64, "192.0.2.1:5060".parse().unwrap(), "10.20.0.5:5060".parse().unwrap(), Timestamp(0), s.clone())
                .messages()
                .into_iter()
                .map(|m| m.bytes)
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let msgs = messages();
    let heads: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| match find(m) {
            Framing::Message { head_end, .. } => m[..head_end].to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    let canonical: Vec<String> = heads
        .iter()
        .map(|h| {
            let mut out = String::new();
            normalize(h, &[], &mut out).unwrap();
            out
        })
        .collect();
    let mut g = c.benchmark_group("per_message");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("frame", |b| b.iter(|| for m in &msgs { black_box(find(black_box(m))); }));
    let mut out = String::new();
    g.bench_function("normalize", |b| b.iter(|| for h in &heads { black_box(normalize(black_box(h), &[], &mut out).ok()); }));
    g.bench_function("rsip", |b| {
        b.iter(|| {
            for t in &canonical {
                if t.starts_with("SIP/") {
                    black_box(rsip::Response::try_from(t.as_str()).ok());
                } else {
                    black_box(rsip::Request::try_from(t.as_str()).ok());
                }
            }
        })
    });
    let mut p = Parser::default();
    g.bench_function("parse", |b| b.iter(|| for h in &heads { black_box(p.parse(black_box(h)).ok()); }));
    // whole engine: Ethernet/IPv4/UDP frames of many calls, legs drained
    let calls: Vec<Vec<(Timestamp, Vec<u8>)>> = (0..200u64)
        .map(|n| {
            Call::numbered(n, "192.0.2.1:5060".parse().unwrap(), "10.20.0.5:5060".parse().unwrap(), Timestamp(n as i64 * 50_000),
                Script::Answered { ring: 100, answer: 2000, talk: 3000, caller_hangs_up: n % 2 == 0 })
                .messages()
                .into_iter()
                .enumerate()
                .map(|(i, m)| (m.ts, frames::udp(m.src, m.dst, i as u16, &m.bytes)))
                .collect()
        })
        .collect();
    let mut all: Vec<(Timestamp, Vec<u8>)> = calls.into_iter().flatten().collect();
    all.sort_by_key(|f| f.0);
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("engine", |b| {
        b.iter(|| {
            let mut e = Engine::new(EngineConfig::default());
            for (ts, f) in &all {
                e.ingest(*ts, LinkType::Ethernet, f);
                while let Some(l) = e.poll_leg() {
                    black_box(l);
                }
            }
            e.finish();
        })
    });
    g.finish();
}

/// One large message head (60 KiB of headers, within MAX_HEAD) arriving over
/// TCP in 100-byte segments: the framing must not rescan the head for every
/// segment (it once did: quadratic in the head's length).
fn tcp_head_in_small_segments(c: &mut Criterion) {
    let mut head = b"INVITE sip:01632960123@10.20.0.5 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\nCall-ID: big@x\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n".to_vec();
    let mut i = 0;
    while head.len() < 60 * 1024 {
        head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(80)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let (a, b) = ("192.0.2.1:5060".parse().unwrap(), "10.20.0.5:5060".parse().unwrap());
    let mut segs = vec![frames::tcp(a, b, 0, true, false, b"")];
    for (k, chunk) in head.chunks(100).enumerate() {
        segs.push(frames::tcp(a, b, 1 + (k * 100) as u32, false, false, chunk));
    }
    let run = || {
        let mut e = Engine::new(EngineConfig::default());
        for (k, f) in segs.iter().enumerate() {
            e.ingest(Timestamp(k as i64), LinkType::Ethernet, f);
        }
        e
    };
    assert_eq!(run().open_legs().count(), 1, "the big INVITE makes a leg");
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("60KiB_head_in_100B_segments", |bch| {
        bch.iter(|| black_box(run().stats()))
    });
    g.finish();
}

criterion_group!(benches, stages, tcp_head_in_small_segments);
criterion_main!(benches);
