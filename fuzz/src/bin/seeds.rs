//! Writes seed inputs for every fuzz target into `<OUT>/<target>/`
//! (default `fuzz/corpus/`, which is git-ignored).
//!
//! ```text
//! seeds [OUT_DIR] [--captures DIR]
//! ```
//!
//! Seeds: the SIP messages of `synth::Call::messages()` for every `Script`,
//! their frames (UDP, IPv4 and IPv6 fragments, TCP segments, every link type
//! and tunnel the engine decodes, HEP-in-UDP), HEPv3 packets made with
//! `wire::encode_hep`, and the frames of the public captures in
//! `$CBT_CORPUS_DIR` (default `../shared/corpus` beside the repository), read
//! here and never copied as files. Names are stable, so running this again
//! overwrites its own seeds and leaves what the fuzzers found alone.

use arbitrary::{Arbitrary, Unstructured};
use cbt_fuzz::{
    calls, dt_code, message_library, LinkInput, PieceKind, TcpCase, BASE, ODD_MESSAGES,
};
use cbt_proto::synth::{frames, Call};
use cbt_proto::wire::{self, HepPacket};
use cbt_proto::{LinkType, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

struct Out {
    dir: PathBuf,
    counts: BTreeMap<&'static str, usize>,
    names: BTreeSet<String>,
}

impl Out {
    fn put(&mut self, target: &'static str, name: &str, data: &[u8]) {
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let hash = fnv(data);
        if !self.names.insert(format!("{target}/{hash:016x}")) {
            return; // identical seed already written under another name
        }
        let file = format!("seed-{}-{hash:016x}", sanitize(name));
        let path = dir.join(file);
        std::fs::write(&path, data)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        *self.counts.entry(target).or_default() += 1;
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn script_name(c: &Call) -> String {
    let s = format!("{:?}", c.script);
    s.split([' ', '{', '('])
        .next()
        .unwrap_or("call")
        .to_lowercase()
}

fn hep_of(
    ts: Option<Timestamp>,
    src: SocketAddr,
    dst: SocketAddr,
    ip_proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    wire::encode_hep(&HepPacket {
        ts,
        src,
        dst,
        ip_proto,
        proto_type: 1,
        capture_id: Some(2001),
        correlation_id: None,
        payload,
    })
}

/// Inserts one more chunk before the payload chunk (last) and fixes the length.
fn with_chunk(pkt: &[u8], vendor: u16, kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = pkt[..6].to_vec();
    out.extend_from_slice(&vendor.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((value.len() + 6) as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(&pkt[6..]);
    let total = out.len() as u16;
    out[4..6].copy_from_slice(&total.to_be_bytes());
    out
}

// --- link-layer wrappers around an IP packet --------------------------------

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn ip_of_eth(frame: &[u8]) -> (&[u8], bool) {
    (&frame[14..], frame[12..14] == [0x86, 0xDD])
}

/// The same IP packet under each link type.
fn wrap_link(link: LinkType, ip: &[u8], v6: bool) -> Option<Vec<u8>> {
    let et: u16 = if v6 { 0x86DD } else { 0x0800 };
    let ppp: &[u8] = if v6 { &[0x00, 0x57] } else { &[0x00, 0x21] };
    Some(match link {
        LinkType::Ethernet => frames::ethernet(et, ip),
        LinkType::Null => cat(&[&(if v6 { 10u32 } else { 2 }).to_le_bytes(), ip]),
        LinkType::Loop => cat(&[&(if v6 { 24u32 } else { 2 }).to_be_bytes(), ip]),
        LinkType::Raw => ip.to_vec(),
        LinkType::Ipv4 if !v6 => ip.to_vec(),
        LinkType::Ipv6 if v6 => ip.to_vec(),
        LinkType::Ipv4 | LinkType::Ipv6 => return None,
        LinkType::LinuxSll => cat(&[
            &[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0],
            &et.to_be_bytes(),
            ip,
        ]),
        LinkType::LinuxSll2 => cat(&[
            &et.to_be_bytes(),
            &[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0],
            ip,
        ]),
        LinkType::Ppp => cat(&[ppp, ip]),
        LinkType::PppHdlc => cat(&[&[0xFF, 0x03], ppp, ip]),
        LinkType::PppEther => cat(&[
            &[0x11, 0x00, 0x12, 0x34],
            &((ip.len() + 2) as u16).to_be_bytes(),
            ppp,
            ip,
        ]),
    })
}

/// Ethernet encapsulations and tunnels around one Ethernet frame of IPv4 or
/// IPv6 (`frame`); returns (name, new Ethernet frame).
fn encapsulations(frame: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let (ip, v6) = ip_of_eth(frame);
    let et: u16 = if v6 { 0x86DD } else { 0x0800 };
    let o4s: IpAddr = "198.51.100.1".parse().unwrap();
    let o4d: IpAddr = "198.51.100.2".parse().unwrap();
    let outer = |proto: u8, l4: &[u8]| frames::ethernet(0x0800, &frames::ip(o4s, o4d, proto, 7, l4));
    let ppp: &[u8] = if v6 {
        &[0xFF, 0x03, 0x00, 0x57]
    } else {
        &[0xFF, 0x03, 0x00, 0x21]
    };
    let mut v = vec![
        (
            "vlan",
            frames::ethernet(0x8100, &cat(&[&[0x00, 0x64], &et.to_be_bytes(), ip])),
        ),
        (
            "qinq",
            frames::ethernet(
                0x88A8,
                &cat(&[&[0x00, 0x0A, 0x81, 0x00, 0x00, 0x64], &et.to_be_bytes(), ip]),
            ),
        ),
        (
            "mpls2",
            frames::ethernet(
                0x8847,
                &cat(&[&[0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40], ip]),
            ),
        ),
        (
            "pppoe",
            frames::ethernet(
                0x8864,
                &cat(&[
                    &[0x11, 0, 0x12, 0x34],
                    &((ip.len() + 2) as u16).to_be_bytes(),
                    &ppp[2..],
                    ip,
                ]),
            ),
        ),
        (
            "gre",
            outer(47, &cat(&[&[0x00, 0x00], &et.to_be_bytes(), ip])),
        ),
        (
            "gre-key-seq",
            outer(
                47,
                &cat(&[
                    &[0x30, 0x00],
                    &et.to_be_bytes(),
                    &[0, 0, 0, 9, 0, 0, 0, 1],
                    ip,
                ]),
            ),
        ),
        (
            "gre-csum",
            outer(
                47,
                &cat(&[&[0x80, 0x00], &et.to_be_bytes(), &[0, 0, 0, 0], ip]),
            ),
        ),
        ("teb", outer(47, &cat(&[&[0x00, 0x00, 0x65, 0x58], frame]))),
        (
            "erspan2",
            outer(
                47,
                &cat(&[
                    &[0x10, 0x00, 0x88, 0xBE, 0, 0, 0, 1],
                    &[0x10, 0x01, 0, 0, 0, 0, 0, 0],
                    frame,
                ]),
            ),
        ),
        (
            "erspan3",
            outer(
                47,
                &cat(&[
                    &[0x10, 0x00, 0x22, 0xEB, 0, 0, 0, 1],
                    &[0x20, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    frame,
                ]),
            ),
        ),
        (
            "erspan3-platform",
            outer(
                47,
                &cat(&[
                    &[0x10, 0x00, 0x22, 0xEB, 0, 0, 0, 1],
                    &[0x20, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    &[0; 8],
                    frame,
                ]),
            ),
        ),
        (
            "pptp-gre",
            outer(
                47,
                &cat(&[
                    &[0x30, 0x81, 0x88, 0x0B],
                    &((ip.len() + 4) as u16).to_be_bytes(),
                    &[0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
                    ppp,
                    ip,
                ]),
            ),
        ),
        ("vxlan", {
            let s: SocketAddr = "198.51.100.1:51000".parse().unwrap();
            let d: SocketAddr = "198.51.100.2:4789".parse().unwrap();
            frames::udp(s, d, 9, &cat(&[&[0x08, 0, 0, 0, 0, 0, 0x64, 0], frame]))
        }),
    ];
    v.push(if v6 {
        ("6in4", outer(41, ip))
    } else {
        ("ipip", outer(4, ip))
    });
    v
}

/// A call as TCP segments (handshake, messages cut at `mss`, FIN both ways).
fn tcp_frames(c: &Call, mss: usize) -> Vec<(Timestamp, Vec<u8>)> {
    let msgs = c.messages();
    let mut out = Vec::new();
    let (isn_a, isn_b) = (0xFFFF_FF00u32, 77_000u32); // a's stream wraps
    let mut next = BTreeMap::new();
    next.insert(c.a, isn_a.wrapping_add(1));
    next.insert(c.b, isn_b.wrapping_add(1));
    out.push((c.start, frames::tcp(c.a, c.b, isn_a, true, false, b"")));
    out.push((c.start, frames::tcp(c.b, c.a, isn_b, true, false, b"")));
    let mut last = c.start;
    for m in &msgs {
        for piece in m.bytes.chunks(mss) {
            let seq = next[&m.src];
            out.push((m.ts, frames::tcp(m.src, m.dst, seq, false, false, piece)));
            next.insert(m.src, seq.wrapping_add(piece.len() as u32));
        }
        last = m.ts;
    }
    out.push((last, frames::tcp(c.a, c.b, next[&c.a], false, true, b"")));
    out.push((last, frames::tcp(c.b, c.a, next[&c.b], false, true, b"")));
    out
}

fn link_input(link: LinkType, tight: bool, frames: &[(Timestamp, Vec<u8>)], long: bool) -> Vec<u8> {
    let mut li = LinkInput::new(link, tight);
    let mut last = frames.first().map_or(BASE, |f| f.0);
    for (ts, f) in frames {
        li.frame(dt_code(ts.since(last)), f);
        last = *ts;
    }
    if long {
        li.frame(0xFE, b"");
    }
    li.bytes
}

fn synthetic(out: &mut Out) {
    let hep_src: SocketAddr = "192.0.2.200:47000".parse().unwrap();
    let hep_dst: SocketAddr = "192.0.2.201:9060".parse().unwrap();
    for v6 in [false, true] {
        let fam = if v6 { "v6" } else { "v4" };
        for c in calls(v6) {
            let name = format!("{}-{fam}", script_name(&c));
            let msgs = c.messages();
            let long = matches!(
                name.as_str(),
                "noresponse-v4" | "answerednobye-v4" | "cancelled-v6"
            );

            // link_ip: UDP frames, fragments, TCP, HEP-in-UDP, link types
            let udp: Vec<(Timestamp, Vec<u8>)> = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| (m.ts, frames::udp(m.src, m.dst, i as u16 + 1, &m.bytes)))
                .collect();
            out.put(
                "link_ip",
                &format!("udp-{name}"),
                &link_input(LinkType::Ethernet, false, &udp, long),
            );
            out.put(
                "link_ip",
                &format!("udp-tight-{name}"),
                &link_input(LinkType::Ethernet, true, &udp, !long),
            );
            let mut frag: Vec<(Timestamp, Vec<u8>)> = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                let pieces = if v6 {
                    frames::udp_fragments_v6(m.src, m.dst, 0x1000 + i as u32, &m.bytes, 400)
                } else {
                    frames::udp_fragments_v4(m.src, m.dst, 0x1000 + i as u16, &m.bytes, 400)
                };
                if i % 2 == 1 {
                    frag.extend(pieces.into_iter().rev().map(|f| (m.ts, f)));
                } else {
                    frag.extend(pieces.into_iter().map(|f| (m.ts, f)));
                }
            }
            out.put(
                "link_ip",
                &format!("frag-{name}"),
                &link_input(LinkType::Ethernet, false, &frag, false),
            );
            let tcp = tcp_frames(&c, if v6 { 1200 } else { 300 });
            out.put(
                "link_ip",
                &format!("tcp-{name}"),
                &link_input(LinkType::Ethernet, false, &tcp, long),
            );
            let hep_frames: Vec<(Timestamp, Vec<u8>)> = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let proto = if i % 2 == 0 { 17 } else { 6 };
                    (
                        m.ts,
                        frames::udp(
                            hep_src,
                            hep_dst,
                            i as u16,
                            &hep_of(Some(m.ts), m.src, m.dst, proto, &m.bytes),
                        ),
                    )
                })
                .collect();
            out.put(
                "link_ip",
                &format!("hep-udp-{name}"),
                &link_input(LinkType::Ethernet, false, &hep_frames, false),
            );

            // every link type, for the answered calls
            if name.starts_with("answered-") {
                for link in LinkType::ALL {
                    let wrapped: Option<Vec<(Timestamp, Vec<u8>)>> = udp
                        .iter()
                        .map(|(ts, f)| {
                            let (ip, v6) = ip_of_eth(f);
                            wrap_link(link, ip, v6).map(|w| (*ts, w))
                        })
                        .collect();
                    if let Some(w) = wrapped {
                        out.put(
                            "link_ip",
                            &format!("link-{}-{name}", link.name()),
                            &link_input(link, false, &w, false),
                        );
                    }
                }
                let n_encaps = encapsulations(&udp[0].1).len();
                for k in 0..n_encaps {
                    let mut label = "";
                    let wrapped: Vec<(Timestamp, Vec<u8>)> = udp
                        .iter()
                        .map(|(ts, f)| {
                            let (l, w) = encapsulations(f).swap_remove(k);
                            label = l;
                            (*ts, w)
                        })
                        .collect();
                    out.put(
                        "link_ip",
                        &format!("encap-{label}-{name}"),
                        &link_input(LinkType::Ethernet, false, &wrapped, false),
                    );
                }
                // the TCP call inside GRE
                let tunnelled: Vec<(Timestamp, Vec<u8>)> = tcp
                    .iter()
                    .map(|(ts, f)| {
                        let gre = encapsulations(f).into_iter().find(|(l, _)| *l == "gre");
                        (*ts, gre.expect("gre encapsulation").1)
                    })
                    .collect();
                out.put(
                    "link_ip",
                    &format!("tcp-in-gre-{name}"),
                    &link_input(LinkType::Ethernet, false, &tunnelled, false),
                );
            }

            // sip_frame: each message, and the call as one stream
            let mut stream = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                out.put("sip_frame", &format!("msg-{name}-{i}"), &m.bytes);
                if i % 3 == 0 {
                    stream.extend_from_slice(b"\r\n\r\n");
                }
                stream.extend_from_slice(&m.bytes);
            }
            out.put("sip_frame", &format!("stream-{name}"), &stream);
            let mut garbage = b"\x16\x03\x01\x02\x00 not sip\r\n\x00\x01\x02".to_vec();
            garbage.extend_from_slice(&stream);
            out.put("sip_frame", &format!("garbage-stream-{name}"), &garbage);

            // hep: each message, and the call as concatenated packets
            let mut all = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                let p = hep_of(
                    if i % 3 == 2 { None } else { Some(m.ts) },
                    m.src,
                    m.dst,
                    17,
                    &m.bytes,
                );
                if i < 2 {
                    out.put("hep", &format!("pkt-{name}-{i}"), &p);
                }
                all.extend_from_slice(&p);
            }
            out.put("hep", &format!("call-{name}"), &all);
        }
    }

    // heads and lines longer than the framer waits for (MAX_HEAD, MAX_LINE)
    let ok = &message_library()[0];
    let mut runaway = b"INVITE sip:runaway@10.0.0.5 SIP/2.0\r\n".to_vec();
    while runaway.len() < 70_000 {
        runaway.extend_from_slice(b"X-Pad: 0123456789abcdef\r\n");
    }
    runaway.extend_from_slice(ok);
    out.put("sip_frame", "runaway-head", &runaway);
    let mut long_line = vec![b'a'; 9000];
    long_line.extend_from_slice(b"\r\n");
    long_line.extend_from_slice(ok);
    out.put("sip_frame", "long-line", &long_line);
    let (a, b): (SocketAddr, SocketAddr) = (
        "192.0.2.1:5060".parse().unwrap(),
        "10.0.0.5:5060".parse().unwrap(),
    );
    let mut tcp = vec![(BASE, frames::tcp(a, b, 99, true, false, b""))];
    for (i, piece) in runaway.chunks(1400).enumerate() {
        tcp.push((
            BASE,
            frames::tcp(a, b, 100 + (i * 1400) as u32, false, false, piece),
        ));
    }
    out.put(
        "link_ip",
        "tcp-runaway-head",
        &link_input(LinkType::Ethernet, false, &tcp, false),
    );

    // the store's files: a call file (calls, a callback, a damaged and a
    // torn record) and a journal file
    {
        use cbt_proto::call::{CallRecord, Correlation, EndedBy, Outcome};
        use cbt_proto::persist::{self, calls, journal};
        use cbt_proto::time::SECOND;
        let call = |seq: u64, outcome: Outcome| CallRecord {
            seq,
            call_id: format!("call-{seq}@192.0.2.1"),
            practice: "B82005".into(),
            started: BASE,
            queue_joined: Some(BASE),
            first_ring: Some(BASE.add(2 * SECOND)),
            answered: (outcome == Outcome::Answered).then_some(BASE.add(9 * SECOND)),
            ended: BASE.add(60 * SECOND),
            ended_by: EndedBy::Caller,
            outcome,
            wait_s: Some(9.0),
            duration_s: (outcome == Outcome::Answered).then_some(51.0),
            abandoned: outcome == Outcome::Missed,
            voicemail: None,
            callback_requested: (outcome == Outcome::Missed).then_some(BASE.add(30 * SECOND)),
            callback_made: None,
            offered_to_staff: true,
            legs: 2,
            correlation: Correlation::default(),
            partial: false,
            caller: None,
        };
        let mut file = calls::FILE_HEADER.to_vec();
        calls::frame_call(1, BASE, &persist::encode_call(&call(1, Outcome::Answered)), &mut file);
        calls::frame_call(2, BASE, &persist::encode_call(&call(2, Outcome::Missed)), &mut file);
        calls::frame_callback(2, BASE.add(3600 * SECOND), &mut file);
        out.put("stored", "call-file", &file);
        let mut damaged = file.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x55;
        out.put("stored", "call-file-damaged", &damaged);
        out.put("stored", "call-file-torn", &file[..file.len() - 5]);
        let mut journal_file = journal::FILE_HEADER.to_vec();
        for (i, m) in message_library().iter().take(8).enumerate() {
            journal::frame(1, m, &mut journal_file);
            journal::frame(7, &i.to_le_bytes(), &mut journal_file);
        }
        out.put("stored", "journal-file", &journal_file);
    }

    // odd messages and a few HEP shapes
    for (i, m) in ODD_MESSAGES.iter().enumerate() {
        out.put("sip_frame", &format!("odd-{i}"), m.as_bytes());
    }
    out.put("sip_frame", "odd-all", ODD_MESSAGES.concat().as_bytes());
    let lib = message_library();
    let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let b: SocketAddr = "[2001:db8::5]:5060".parse().unwrap();
    let base = hep_of(Some(BASE), a, b, 17, &lib[0]);
    out.put("hep", "mixed-family", &base);
    out.put(
        "hep",
        "vendor-chunk",
        &with_chunk(&base, 0x0025, 0x0001, b"kamailio"),
    );
    out.put("hep", "compressed", &with_chunk(&base, 0, 16, &[1]));
    out.put(
        "hep",
        "correlation",
        &wire::encode_hep(&HepPacket {
            ts: Some(BASE),
            src: a,
            dst: "198.51.100.7:5060".parse().unwrap(),
            ip_proto: 132,
            proto_type: 1,
            capture_id: None,
            correlation_id: Some(b"corr-id-1"),
            payload: &lib[1],
        }),
    );
    out.put(
        "hep",
        "rtcp",
        &wire::encode_hep(&HepPacket {
            ts: None,
            src: a,
            dst: "198.51.100.7:5061".parse().unwrap(),
            ip_proto: 17,
            proto_type: 5,
            capture_id: Some(1),
            correlation_id: Some(b"x"),
            payload: b"{\"type\":200}",
        }),
    );
}

/// Random blobs that decode (through `arbitrary`) to rich TCP cases: several
/// SIP messages, cut into segments in order with some reordering.
fn tcp_cases(out: &mut Out) {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut kept = 0;
    for attempt in 0..200_000 {
        if kept >= 48 {
            break;
        }
        let len = 256 + (next() % 3840) as usize;
        let blob: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let Ok(case) = TcpCase::arbitrary_take_rest(Unstructured::new(&blob)) else {
            continue;
        };
        let msgs = case
            .pieces
            .iter()
            .filter(|p| matches!(p.what, PieceKind::Msg(_) | PieceKind::Body { .. }))
            .count();
        let chunked = case.chunked.as_ref().is_some_and(|c| c.dirs & 0x3F != 0);
        if msgs >= 3 && (chunked || case.segments.len() >= 4) {
            out.put("tcp_reassembly", &format!("case-{attempt}"), &blob);
            kept += 1;
        }
    }
}

// --- public captures ---------------------------------------------------------

struct Capture {
    /// (pcap link type number, timestamp, frame)
    frames: Vec<(i32, Timestamp, Vec<u8>)>,
}

fn read_capture(path: &Path) -> Result<Capture, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut frames = Vec::new();
    if bytes.starts_with(&[0x0A, 0x0D, 0x0D, 0x0A]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(BufReader::new(&bytes[..]))
            .map_err(|e| e.to_string())?;
        while let Some(block) = r.next_block() {
            use pcap_file::pcapng::Block;
            let block = match block {
                Ok(b) => b,
                Err(_) => break, // keep what was read before a damaged block
            };
            let (iface, ts, data) = match &block {
                Block::EnhancedPacket(p) => (p.interface_id, Some(p.timestamp), p.data.to_vec()),
                Block::SimplePacket(p) => (0, None, p.data.to_vec()),
                Block::Packet(p) => (p.interface_id as u32, None, p.data.to_vec()),
                _ => continue,
            };
            drop(block);
            let link = r
                .interfaces()
                .get(iface as usize)
                .map(|i| u32::from(i.linktype) as i32)
                .unwrap_or(-1);
            let ts = ts.map_or(
                frames
                    .last()
                    .map_or(BASE, |f: &(i32, Timestamp, Vec<u8>)| f.1),
                |d| Timestamp::from_micros(d.as_micros() as i64),
            );
            frames.push((link, ts, data));
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(BufReader::new(&bytes[..]))
            .map_err(|e| e.to_string())?;
        let link = u32::from(r.header().datalink) as i32;
        while let Some(p) = r.next_packet() {
            let p = match p {
                Ok(p) => p,
                Err(_) => break,
            };
            frames.push((
                link,
                Timestamp::from_micros(p.timestamp.as_micros() as i64),
                p.data.to_vec(),
            ));
        }
    }
    Ok(Capture { frames })
}

/// At most about `n` items, evenly spaced.
fn pick<T>(v: Vec<T>, n: usize) -> Vec<T> {
    let step = v.len().div_ceil(n).max(1);
    v.into_iter().step_by(step).collect()
}

const START_TOKENS: &[&[u8]] = &[
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"OPTIONS ",
    b"REGISTER ",
    b"SUBSCRIBE ",
    b"NOTIFY ",
    b"PUBLISH ",
    b"MESSAGE ",
    b"INFO ",
    b"PRACK ",
    b"UPDATE ",
    b"REFER ",
    b"SIP/2.0 ",
];

/// Where SIP text starts in a frame, if it holds any.
fn sip_start(frame: &[u8]) -> Option<usize> {
    (0..frame.len()).find(|&i| START_TOKENS.iter().any(|t| frame[i..].starts_with(t)))
}

fn captures(out: &mut Out, dir: &Path) {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                (n.contains(".pcap") || n.ends_with(".cap")) && !n.ends_with(".json")
            })
            .collect(),
        Err(_) => {
            eprintln!(
                "seeds: no capture corpus at {} (set CBT_CORPUS_DIR); synthetic seeds only",
                dir.display()
            );
            return;
        }
    };
    paths.sort();
    for path in paths {
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("capture")
            .to_string();
        let cap = match read_capture(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("seeds: skipping {}: {e}", path.display());
                continue;
            }
        };
        // link_ip: chunks of consecutive frames of one link type
        let mut by_link: BTreeMap<i32, Vec<(Timestamp, &[u8])>> = BTreeMap::new();
        for (l, ts, f) in &cap.frames {
            by_link.entry(*l).or_default().push((*ts, f));
        }
        for (l, fs) in &by_link {
            let Some(link) = LinkType::from_linktype(*l) else {
                continue;
            };
            let mut chunks: Vec<&[(Timestamp, &[u8])]> = Vec::new();
            let mut start = 0;
            let mut bytes = 0;
            for (i, (_, f)) in fs.iter().enumerate() {
                if i > start && (i - start >= 48 || bytes + f.len() > 24 << 10) {
                    chunks.push(&fs[start..i]);
                    start = i;
                    bytes = 0;
                }
                bytes += f.len();
            }
            if start < fs.len() {
                chunks.push(&fs[start..]);
            }
            // chunks with SIP first; a few without (RTP, ICMP, fragments...)
            let (sip, other): (Vec<_>, Vec<_>) = chunks
                .into_iter()
                .partition(|c| c.iter().any(|(_, f)| sip_start(f).is_some()));
            for (k, c) in pick(sip, 40).into_iter().chain(pick(other, 4)).enumerate() {
                let mut li = LinkInput::new(link, false);
                let mut last = c[0].0;
                for (ts, f) in c {
                    li.frame(dt_code(ts.since(last)), f);
                    last = *ts;
                }
                out.put(
                    "link_ip",
                    &format!("cap-{stem}-{}-{k}", link.name()),
                    &li.bytes,
                );
            }
        }
        // sip_frame and hep: distinct first lines of the SIP text in frames
        let mut seen = BTreeSet::new();
        let mut n = 0;
        for (_, _, f) in &cap.frames {
            if n >= 24 {
                break;
            }
            let Some(s) = sip_start(f) else { continue };
            let text = &f[s..];
            let first = text.split(|c| *c == b'\n').next().unwrap_or(b"");
            let key: Vec<u8> = first.iter().take(12).copied().collect();
            if !seen.insert(key) {
                continue;
            }
            out.put("sip_frame", &format!("cap-{stem}-{n}"), text);
            if n < 6 {
                let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
                let b: SocketAddr = "192.0.2.2:5060".parse().unwrap();
                out.put(
                    "hep",
                    &format!("cap-{stem}-{n}"),
                    &hep_of(Some(BASE), a, b, 17, text),
                );
            }
            n += 1;
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out_dir = manifest.join("corpus");
    let mut cap_dir = std::env::var_os("CBT_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../shared/corpus"));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--captures" => {
                cap_dir = PathBuf::from(args.next().expect("--captures needs a directory"))
            }
            "-h" | "--help" => {
                println!("usage: seeds [OUT_DIR] [--captures DIR]   (default OUT_DIR: fuzz/corpus, DIR: $CBT_CORPUS_DIR or ../shared/corpus)");
                return;
            }
            _ => out_dir = PathBuf::from(a),
        }
    }
    let mut out = Out {
        dir: out_dir.clone(),
        counts: BTreeMap::new(),
        names: BTreeSet::new(),
    };
    synthetic(&mut out);
    tcp_cases(&mut out);
    captures(&mut out, &cap_dir);
    for (t, _) in cbt_fuzz::TARGETS {
        std::fs::create_dir_all(out_dir.join(t)).expect("corpus directory");
    }
    let summary: Vec<String> = out.counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
    println!(
        "seeds: wrote into {}: {}",
        out_dir.display(),
        summary.join(" ")
    );
}
