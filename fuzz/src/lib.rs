//! Fuzz target bodies for `cbt-proto`.
//!
//! Every target is a plain `pub fn(&[u8])` so that the libFuzzer entry points
//! in `fuzz_targets/` and the stable-Rust harness (`src/bin/stable_fuzz.rs`)
//! run exactly the same code. A target panics when it finds a bug: a panic
//! inside the engine, or one of the invariants checked here.
//!
//! | target | input |
//! |---|---|
//! | [`link_ip`] | link-type byte, then `(dt, len u16 LE, frame)` records ([`LinkInput`]) |
//! | [`tcp_reassembly`] | [`TcpCase`], decoded with `arbitrary` |
//! | [`sip_frame`] | raw bytes: a UDP payload or a TCP byte stream (framing, parsing, the SDP reader) |
//! | [`hep`] | one or more concatenated HEPv3 packets |

use arbitrary::{Arbitrary, Unstructured};
use cbt_proto::sip::{self, ContentLength, Framing, MAX_HEAD};
use cbt_proto::sip::Parser;
use cbt_proto::synth::{frames, Call, Script};
use cbt_proto::time::{Micros, HOUR, MILLISECOND, SECOND};
use cbt_proto::wire;
use cbt_proto::{Engine, EngineConfig, EngineStats, LinkType, Timestamp};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// A target body: panics when it finds a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the stable harness and the seed writer.
pub const TARGETS: &[(&str, Target)] = &[
    ("link_ip", link_ip),
    ("tcp_reassembly", tcp_reassembly),
    ("sip_frame", sip_frame),
    ("hep", hep),
    ("stored", stored),
];

/// Packet time every input starts at (2023-11-14T22:13:20Z).
pub const BASE: Timestamp = Timestamp(1_700_000_000 * SECOND);

// ---------------------------------------------------------------------------
// Engine set-up and the checks run at the end of every engine-driven target.

/// Default limits, or very small ones so that eviction, byte caps and
/// out-of-order limits are reached by small inputs (with the journal on).
pub fn config(tight: bool) -> EngineConfig {
    let mut cfg = EngineConfig::default();
    if tight {
        cfg.wire.frag.max_bytes = 16 << 10;
        cfg.wire.frag.max_datagrams = 4;
        cfg.wire.tcp.max_flows = 4;
        cfg.wire.tcp.max_ooo_bytes = 8 << 10;
        cfg.wire.tcp.max_ooo_segments = 4;
        cfg.wire.tcp.ooo_window = 64 << 10;
        cfg.wire.tcp.idle_timeout = 120 * SECOND;
        cfg.legs.max_legs = 4;
        // also seal every message for the daemon's journal (drained at the end)
        cfg.journal = true;
    }
    cfg
}

/// Upper bound on what the engine may hold for reassembly with `cfg`: the
/// fragment budget plus one maximal datagram, and per TCP flow one pending
/// SIP head, the out-of-order budget and one maximal segment.
fn buffer_bound(cfg: &EngineConfig) -> usize {
    let frag = cfg.wire.frag.max_bytes + 65_536;
    let per_flow = MAX_HEAD + cfg.wire.tcp.max_ooo_bytes + 65_536;
    frag.saturating_add(cfg.wire.tcp.max_flows.saturating_mul(per_flow))
}

/// Checked after every packet.
fn check_bounded(e: &Engine, bound: usize) {
    let held = e.buffered_bytes();
    assert!(
        held <= bound,
        "engine holds {held} bytes for reassembly (bound {bound})"
    );
}

/// Runs the timers out, closes everything and checks the books balance.
/// `long` also advances packet time by hours so that every leg timer, the
/// TCP idle timeout and the fragment timeout fire before `finish`.
fn finish(mut e: Engine, now: Timestamp, long: bool) -> EngineStats {
    e.tick(now.add(10 * SECOND)); // TCP gap timeout
    if long {
        e.tick(now.add(5 * HOUR));
        assert_eq!(
            e.buffered_bytes(),
            0,
            "reassembly state survived every timeout"
        );
    }
    e.finish();
    while e.poll_journal().is_some() {}
    let mut polled = 0u64;
    while let Some(leg) = e.poll_leg() {
        polled += 1;
        let ended = leg.ended.get().expect("finished leg has an end time");
        assert!(ended >= leg.started, "leg ends before it starts: {leg:?}");
        assert!(
            leg.end.is_some() && !leg.is_open(),
            "finished leg still open: {leg:?}"
        );
    }
    let s = e.stats();
    assert_eq!(s.open_legs, 0, "legs left open after finish()");
    assert_eq!(
        e.open_legs().count(),
        0,
        "open_iter disagrees with finish()"
    );
    assert_eq!(
        s.legs.legs_started, s.legs.legs_finished,
        "legs started vs finished"
    );
    assert_eq!(polled, s.legs.legs_finished, "legs polled vs finished");
    s
}

// ---------------------------------------------------------------------------
// link_ip

/// Time step of a record: `0..=0xEF` are multiples of 10 ms (up to 2.39 s),
/// `0xF0..=0xFE` multiples of 15 s (15 s to 3 min 45 s: fragment, TCP gap and
/// leg timers fire), `0xFF` steps back one second (merged interfaces).
pub fn dt_micros(code: u8) -> Micros {
    match code {
        0..=0xEF => code as Micros * 10 * MILLISECOND,
        0xF0..=0xFE => (code as Micros - 0xEF) * 15 * SECOND,
        0xFF => -SECOND,
    }
}

/// The code whose step is closest to `d` without exceeding it (for seeds).
pub fn dt_code(d: Micros) -> u8 {
    if d < 0 {
        0xFF
    } else if d < 0xF0 * 10 * MILLISECOND {
        (d / (10 * MILLISECOND)) as u8
    } else {
        let n = (d / (15 * SECOND)).clamp(1, 15) as u8;
        0xEF + n
    }
}

/// Builder for `link_ip` inputs.
///
/// Byte 0: bits 0-6 pick `LinkType::ALL[(b & 0x7f) % 11]`; bit 7 selects the
/// tight limits of [`config`]. Then records of `dt` ([`dt_micros`]),
/// length (u16 little-endian, clamped to what is left) and the frame. If any
/// record's `dt` is 0xFE, timers are run for hours at the end (see [`finish`]).
#[derive(Clone, Debug, Default)]
pub struct LinkInput {
    pub bytes: Vec<u8>,
}

impl LinkInput {
    pub fn new(link: LinkType, tight: bool) -> LinkInput {
        let idx = LinkType::ALL
            .iter()
            .position(|l| *l == link)
            .expect("known link type") as u8;
        LinkInput {
            bytes: vec![idx | if tight { 0x80 } else { 0 }],
        }
    }

    pub fn frame(&mut self, dt: u8, frame: &[u8]) -> &mut Self {
        let len = frame.len().min(u16::MAX as usize);
        self.bytes.push(dt);
        self.bytes.extend_from_slice(&(len as u16).to_le_bytes());
        self.bytes.extend_from_slice(&frame[..len]);
        self
    }
}

/// Frames of one link type through `Engine::ingest`: link layer, IPv4/IPv6,
/// fragment reassembly, tunnels, UDP, HEP-in-UDP, TCP and SIP above them.
pub fn link_ip(data: &[u8]) {
    link_ip_stats(data);
}

/// [`link_ip`], returning the engine's counters (to see what a corpus reaches).
pub fn link_ip_stats(data: &[u8]) -> Option<EngineStats> {
    let (&sel, mut rest) = data.split_first()?;
    let link = LinkType::ALL[(sel & 0x7f) as usize % LinkType::ALL.len()];
    let cfg = config(sel & 0x80 != 0);
    let bound = buffer_bound(&cfg);
    let mut e = Engine::new(cfg);
    let mut now = BASE;
    let mut long = false;
    while rest.len() >= 3 {
        let dt = rest[0];
        let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let frame = &rest[3..3 + len];
        rest = &rest[3 + len..];
        now = now.add(dt_micros(dt));
        long |= dt == 0xFE;
        e.ingest(now, link, frame);
        check_bounded(&e, bound);
    }
    Some(finish(e, now, long))
}

// ---------------------------------------------------------------------------
// SIP text the structured targets draw from.

/// One call for every [`Script`] variant (and then some).
pub fn scripts() -> Vec<Script> {
    vec![
        Script::Answered {
            ring: 100,
            answer: 2000,
            talk: 30_000,
            caller_hangs_up: true,
        },
        Script::Answered {
            ring: 400,
            answer: 900,
            talk: 5_000,
            caller_hangs_up: false,
        },
        Script::Rejected {
            ring: Some(100),
            at: 3000,
            code: 486,
        },
        Script::Rejected {
            ring: None,
            at: 50,
            code: 403,
        },
        Script::Cancelled {
            ring: 100,
            cancel: 5000,
        },
        Script::ChallengedThenAnswered {
            answer: 1000,
            talk: 20_000,
        },
        Script::NoResponse,
        Script::AnsweredNoBye { answer: 1500 },
    ]
}

/// The scripted calls, between IPv4 hosts (`v6 == false`) or IPv6 hosts.
pub fn calls(v6: bool) -> Vec<Call> {
    let (a, b): (SocketAddr, SocketAddr) = if v6 {
        (
            "[2001:db8::1]:5060".parse().unwrap(),
            "[2001:db8::5]:5060".parse().unwrap(),
        )
    } else {
        (
            "192.0.2.1:5060".parse().unwrap(),
            "10.0.0.5:5060".parse().unwrap(),
        )
    };
    scripts()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Call::numbered(i as u64 + 1, a, b, BASE, s))
        .collect()
}

/// Hand-written messages in the forms the normaliser repairs: compact
/// headers, folded lines, bare LF, space before colon, no Content-Length.
pub const ODD_MESSAGES: &[&str] = &[
    "INVITE sip:+441632960123@gw.example.net;user=phone SIP/2.0\r\nv: SIP/2.0/TCP 198.51.100.2:5060;branch=z9hG4bKodd1\r\nf: <sip:07700900123@pbx.example.net>;tag=odd1\r\nt: <sip:01632960123@gw.example.net>\r\ni: odd-1@pbx\r\nCSeq: 1 INVITE\r\nm: <sip:07700900123@198.51.100.2>\r\nP-Asserted-Identity: \"Reception\" <tel:+441632960999>\r\nSession-Expires: 1800;refresher=uac\r\nl: 0\r\n\r\n",
    "SIP/2.0 183 Session Progress\nVia: SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bKodd1\nFrom: <sip:07700900123@pbx.example.net>;tag=odd1\nTo: <sip:01632960123@gw.example.net>;tag=gw9\nCall-ID: odd-1@pbx\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    "BYE sip:07700900123@198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKbye\r\nFrom: <sip:01632960123@gw.example.net>\r\n ;tag=gw9\r\nTo : <sip:07700900123@pbx.example.net>;tag=odd1\r\nCall-ID: odd-1@pbx\r\nCSeq: 7 BYE\r\nReason: Q.850;cause=16;text=\"Normal call clearing\"\r\n\r\n",
    "CANCEL sip:1000@[2001:db8::9] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKc\r\nFrom: \"A\" <sips:2000@example.org>;tag=c1\r\nTo: <sip:1000@example.org>\r\nCall-ID: cancel@2001:db8::1\r\nCSeq: 3 CANCEL\r\nThis line has no colon\r\nContent-Length: 0\r\n\r\n",
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.org>;tag=2\r\nCall-ID: opt@x\r\nCSeq: 9 OPTIONS\r\nContent-Length: 5\r\n\r\nhello",
    "REFER sip:b@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKr\r\nFrom: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.org>;tag=2\r\nCall-ID: refer@x\r\nCSeq: 4 REFER\r\nRefer-To: <sip:c@example.org>\r\nReferred-By: <sip:a@example.org>\r\nContent-Length: 0\r\n\r\n",
];

/// Every scripted message (IPv4 and IPv6 calls) and the odd ones.
pub fn message_library() -> &'static [Vec<u8>] {
    static LIB: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    LIB.get_or_init(|| {
        let mut v: Vec<Vec<u8>> = Vec::new();
        for v6 in [false, true] {
            for c in calls(v6) {
                v.extend(c.messages().into_iter().map(|m| m.bytes));
            }
        }
        v.extend(ODD_MESSAGES.iter().map(|m| m.as_bytes().to_vec()));
        v
    })
}

fn lib_msg(i: u8) -> &'static [u8] {
    let lib = message_library();
    &lib[i as usize % lib.len()]
}

// ---------------------------------------------------------------------------
// tcp_reassembly

/// A TCP scenario: up to six directional streams (three address pairs, both
/// directions) made of SIP messages and bytes, cut into segments either in
/// order with a few perturbations ([`Chunked`]) or one by one ([`Seg`]).
#[derive(Arbitrary, Debug)]
pub struct TcpCase {
    pub tight: bool,
    /// Run timers for hours at the end.
    pub long: bool,
    pub base: Base,
    pub pieces: Vec<Piece>,
    pub chunked: Option<Chunked>,
    pub segments: Vec<Seg>,
}

/// Initial sequence number of stream 0 (the others are offset from it).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Base {
    Zero,
    /// `u32::MAX - n`: the stream wraps after `n` bytes.
    NearWrap(u16),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
pub struct Piece {
    /// Which directional stream (mod 6) this is appended to.
    pub dir: u8,
    pub what: PieceKind,
}

#[derive(Arbitrary, Debug)]
pub enum PieceKind {
    /// A message from [`message_library`].
    Msg(u8),
    /// A library message cut after `at` bytes (mod its length).
    Cut {
        msg: u8,
        at: u16,
    },
    /// Keep-alive.
    Crlf,
    Bytes(Vec<u8>),
    /// A head declaring a body of `len` bytes, followed by `sent` of them.
    Body {
        msg: u8,
        len: u32,
        sent: u16,
    },
    /// `n % 4096` header lines of 25 bytes: with a start line before and no
    /// empty line, a head that outgrows `MAX_HEAD`.
    Pad(u16),
}

#[derive(Arbitrary, Debug)]
pub struct Chunked {
    /// Bit d: stream d is sent.
    pub dirs: u8,
    /// Segment size is `chunk % 2048 + 1`.
    pub chunk: u16,
    pub syn: bool,
    pub fin: bool,
    /// Swap segment `i % n` with the next one.
    pub swaps: Vec<u8>,
    pub drop: Option<u8>,
    pub dup: Option<u8>,
    /// Time step between segments ([`dt_micros`]).
    pub dt: u8,
}

#[derive(Arbitrary, Debug)]
pub struct Seg {
    pub dir: u8,
    pub pos: Pos,
    pub len: u16,
    /// 1 SYN, 2 FIN, 4 RST, 8 no payload, 16 `tick()` after.
    pub flags: u8,
    pub dt: u8,
    /// Payload instead of the stream's bytes.
    pub bytes: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Pos {
    /// Stream offset (sequence number ISN + 1 + offset).
    Off(u16),
    /// Before the first data byte.
    Back(u16),
    /// Any sequence number.
    Abs(u32),
}

const PAIRS: usize = 3;
const STREAMS: usize = 2 * PAIRS;
/// Bounds on the work one input may ask for.
const MAX_STREAM: usize = 256 << 10;
const MAX_SEGMENTS: usize = 4096;
const MAX_PAYLOAD: usize = 65_000;

fn endpoints(dir: usize) -> (SocketAddr, SocketAddr) {
    // same hosts with two port pairs, and an IPv6 pair
    let pairs: [(&str, &str); PAIRS] = [
        ("192.0.2.1:5060", "10.0.0.5:5060"),
        ("192.0.2.1:40001", "10.0.0.5:5060"),
        ("[2001:db8::1]:5061", "[2001:db8::5]:5060"),
    ];
    let (a, b) = pairs[dir % PAIRS];
    let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
    if (dir / PAIRS).is_multiple_of(2) {
        (a, b)
    } else {
        (b, a)
    }
}

/// Sets RST in a frame built by `synth::frames::tcp`.
fn set_rst(frame: &mut [u8]) {
    let ip_len = if frame[12..14] == [0x08, 0x00] {
        20
    } else {
        40
    };
    frame[14 + ip_len + 13] |= 0x04;
}

impl TcpCase {
    fn streams(&self) -> Vec<Vec<u8>> {
        let mut s: Vec<Vec<u8>> = vec![Vec::new(); STREAMS];
        for p in &self.pieces {
            let out = &mut s[p.dir as usize % STREAMS];
            if out.len() >= MAX_STREAM {
                continue;
            }
            match &p.what {
                PieceKind::Msg(i) => out.extend_from_slice(lib_msg(*i)),
                PieceKind::Cut { msg, at } => {
                    let m = lib_msg(*msg);
                    out.extend_from_slice(&m[..*at as usize % m.len()]);
                }
                PieceKind::Crlf => out.extend_from_slice(b"\r\n"),
                PieceKind::Bytes(b) => out.extend_from_slice(b),
                PieceKind::Body { msg, len, sent } => {
                    let m = lib_msg(*msg);
                    let head_end = match sip::find(m) {
                        Framing::Message { head_end, .. } => head_end,
                        _ => m.len(),
                    };
                    // replace the Content-Length line with the declared one
                    let head = String::from_utf8_lossy(&m[..head_end]);
                    let mut h: String = head
                        .split_inclusive('\n')
                        .filter(|l| {
                            !l.to_ascii_lowercase().starts_with("content-length")
                                && !l.starts_with("l:")
                        })
                        .collect();
                    if h.ends_with("\r\n\r\n") {
                        h.truncate(h.len() - 2);
                    } else if h.ends_with("\n\n") {
                        h.truncate(h.len() - 1);
                    }
                    h.push_str(&format!("Content-Length: {len}\r\n\r\n"));
                    out.extend_from_slice(h.as_bytes());
                    let n = (*sent as usize).min(*len as usize);
                    out.extend(std::iter::repeat_n(b'x', n));
                }
                PieceKind::Pad(n) => {
                    for _ in 0..*n % 4096 {
                        out.extend_from_slice(b"X-Pad: 0123456789abcdef\r\n");
                    }
                }
            }
        }
        for v in &mut s {
            v.truncate(MAX_STREAM);
        }
        s
    }
}

struct SegOut {
    dir: usize,
    seq: u32,
    syn: bool,
    fin: bool,
    rst: bool,
    tick: bool,
    dt: u8,
    payload: Vec<u8>,
}

/// Structured TCP input (see [`TcpCase`]) through `Engine::ingest`.
pub fn tcp_reassembly(data: &[u8]) {
    tcp_reassembly_stats(data);
}

/// [`tcp_reassembly`], returning the engine's counters.
pub fn tcp_reassembly_stats(data: &[u8]) -> Option<EngineStats> {
    let case = TcpCase::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    Some(run_tcp_case(&case))
}

pub fn run_tcp_case(case: &TcpCase) -> EngineStats {
    let streams = case.streams();
    let base = match case.base {
        Base::Zero => 0,
        Base::NearWrap(n) => u32::MAX - n as u32,
        Base::Any(x) => x,
    };
    let isn = |d: usize| base.wrapping_add(d as u32 * 7919);
    let mut segs: Vec<SegOut> = Vec::new();

    if let Some(c) = &case.chunked {
        let size = c.chunk as usize % 2048 + 1;
        let mut per_dir: Vec<Vec<SegOut>> = Vec::new();
        for (d, stream) in streams.iter().enumerate() {
            if c.dirs & (1 << d) == 0 {
                continue;
            }
            let mut v = Vec::new();
            if c.syn {
                v.push(SegOut {
                    dir: d,
                    seq: isn(d),
                    syn: true,
                    fin: false,
                    rst: false,
                    tick: false,
                    dt: c.dt,
                    payload: Vec::new(),
                });
            }
            for (i, chunk) in stream.chunks(size).enumerate() {
                let seq = isn(d).wrapping_add(1).wrapping_add((i * size) as u32);
                v.push(SegOut {
                    dir: d,
                    seq,
                    syn: false,
                    fin: false,
                    rst: false,
                    tick: false,
                    dt: c.dt,
                    payload: chunk.to_vec(),
                });
            }
            if c.fin {
                match v.last_mut() {
                    Some(last) if !last.syn => last.fin = true,
                    _ => {}
                }
            }
            let n = v.len();
            if n > 1 {
                for &s in &c.swaps {
                    let i = s as usize % (n - 1);
                    v.swap(i, i + 1);
                }
            }
            if let Some(i) = c.dup {
                if n > 0 {
                    let s = &v[i as usize % n];
                    let copy = SegOut {
                        payload: s.payload.clone(),
                        ..*s
                    };
                    v.push(copy);
                }
            }
            if let Some(i) = c.drop {
                if n > 0 {
                    v.remove(i as usize % n);
                }
            }
            per_dir.push(v);
        }
        // interleave the directions round-robin
        let mut iters: Vec<_> = per_dir.into_iter().map(|v| v.into_iter()).collect();
        loop {
            let mut any = false;
            for it in &mut iters {
                if let Some(s) = it.next() {
                    segs.push(s);
                    any = true;
                }
            }
            if !any || segs.len() > MAX_SEGMENTS {
                break;
            }
        }
    }

    for s in &case.segments {
        let d = s.dir as usize % STREAMS;
        let stream = &streams[d];
        let (seq, from) = match s.pos {
            Pos::Off(o) => (isn(d).wrapping_add(1).wrapping_add(o as u32), o as usize),
            Pos::Back(b) => (isn(d).wrapping_add(1).wrapping_sub(b as u32), 0),
            Pos::Abs(a) => (a, a.wrapping_sub(isn(d).wrapping_add(1)) as usize),
        };
        let syn = s.flags & 1 != 0;
        let payload = if s.flags & 8 != 0 {
            Vec::new()
        } else if let Some(b) = &s.bytes {
            b.clone()
        } else {
            let from = from.min(stream.len());
            let to = from.saturating_add(s.len as usize).min(stream.len());
            stream[from..to].to_vec()
        };
        segs.push(SegOut {
            dir: d,
            seq: if syn { seq.wrapping_sub(1) } else { seq },
            syn,
            fin: s.flags & 2 != 0,
            rst: s.flags & 4 != 0,
            tick: s.flags & 16 != 0,
            dt: s.dt,
            payload,
        });
    }
    segs.truncate(MAX_SEGMENTS);

    let cfg = config(case.tight);
    let bound = buffer_bound(&cfg);
    let mut e = Engine::new(cfg);
    let mut now = BASE;
    for s in &segs {
        let (src, dst) = endpoints(s.dir);
        let payload = &s.payload[..s.payload.len().min(MAX_PAYLOAD)];
        let mut f = frames::tcp(src, dst, s.seq, s.syn, s.fin, payload);
        if s.rst {
            set_rst(&mut f);
        }
        now = now.add(dt_micros(s.dt));
        e.ingest(now, LinkType::Ethernet, &f);
        check_bounded(&e, bound);
        if s.tick {
            now = now.add(SECOND);
            e.tick(now);
            check_bounded(&e, bound);
        }
    }
    finish(e, now, case.long)
}

// ---------------------------------------------------------------------------
// sip_frame

fn check_framing(buf: &[u8], f: Framing) {
    match f {
        Framing::Message {
            start,
            head_end,
            garbage,
            ..
        } => {
            assert!(
                start < head_end && head_end <= buf.len(),
                "{f:?} in {} bytes",
                buf.len()
            );
            assert!(garbage <= start, "{f:?}");
            let line_end = buf[start..]
                .iter()
                .position(|c| *c == b'\n')
                .map(|i| start + i);
            let line_end = line_end.expect("framed message has a start line");
            assert!(
                sip::is_start_line(&buf[start..line_end]),
                "{f:?}: not a start line"
            );
            let head = &buf[..head_end];
            assert!(
                head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
                "{f:?}: head does not end with an empty line"
            );
        }
        Framing::Partial { start, garbage } => {
            assert!(start < buf.len(), "{f:?} in {} bytes", buf.len());
            assert!(garbage <= start, "{f:?}");
        }
        Framing::Garbage { discard, garbage } => {
            assert!(discard <= buf.len(), "{f:?} in {} bytes", buf.len());
            assert!(garbage <= discard, "{f:?}");
        }
    }
}

/// Parses `head` with the long-lived parser, then with a fresh one: the
/// scratch space reused across messages must not change the result.
fn parse_checked(parser: &mut Parser, head: &[u8]) {
    let reused = format!("{:?}", parser.parse(head));
    let fresh = format!("{:?}", Parser::default().parse(head));
    assert_eq!(reused, fresh, "parser result depends on earlier messages");
}

/// `sip::find` over a whole buffer the way the engine walks a datagram.
fn datagram_walk(buf: &[u8], parser: &mut Parser) {
    let mut off = 0;
    let mut rounds = 0;
    while off < buf.len() {
        rounds += 1;
        assert!(rounds <= buf.len() + 1, "datagram walk does not advance");
        let f = sip::find(&buf[off..]);
        check_framing(&buf[off..], f);
        // the engine's framing, which records the head's newlines for the
        // parser: the same answer, every newline, the same parse
        let mut nl = Vec::new();
        assert_eq!(sip::find_lines(&buf[off..], &mut nl), f);
        let head = match f {
            Framing::Message { start, head_end, .. } => Some(&buf[off + start..off + head_end]),
            Framing::Partial { start, .. } => Some(&buf[off + start..]),
            Framing::Garbage { .. } => None,
        };
        if let Some(head) = head {
            let all: Vec<u32> = head.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i as u32).collect();
            assert_eq!(nl, all);
            let by_lines = format!("{:?}", parser.parse_head(sip::Head::new(head, &nl)));
            assert_eq!(by_lines, format!("{:?}", Parser::default().parse(head)));
        }
        match f {
            Framing::Message {
                start,
                head_end,
                content_length,
                ..
            } => {
                parse_checked(parser, &buf[off + start..off + head_end]);
                let rest = buf.len() - off - head_end;
                let body = match content_length {
                    ContentLength::Declared(n) => n.min(rest),
                    _ => rest,
                };
                off += head_end + body;
            }
            Framing::Partial { start, .. } => {
                parse_checked(parser, &buf[off + start..]);
                break;
            }
            Framing::Garbage { .. } => break,
        }
    }
}

/// The engine's stream consumer, replayed on `buf` arriving in chunks:
/// framing must make progress and never make the stream hold more than one
/// head's worth of bytes.
fn stream_walk(data: &[u8], mut chunk_len: impl FnMut() -> usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut skip = 0usize;
    let mut pos = 0;
    while pos < data.len() {
        let n = chunk_len().min(data.len() - pos);
        let mut chunk = &data[pos..pos + n];
        pos += n;
        let s = skip.min(chunk.len());
        skip -= s;
        chunk = &chunk[s..];
        buf.extend_from_slice(chunk);
        let mut off = 0;
        loop {
            let f = sip::find(&buf[off..]);
            check_framing(&buf[off..], f);
            match f {
                Framing::Message {
                    head_end,
                    content_length,
                    ..
                } => {
                    let body = match content_length {
                        ContentLength::Declared(n) => n,
                        _ => 0,
                    };
                    let avail = buf.len() - off - head_end;
                    if body <= avail {
                        off += head_end + body;
                    } else {
                        skip = body - avail;
                        off = buf.len();
                        break;
                    }
                }
                Framing::Partial { start, .. } => {
                    off += start;
                    break;
                }
                Framing::Garbage { discard, .. } => {
                    if discard == 0 {
                        break;
                    }
                    off += discard;
                }
            }
        }
        buf.drain(..off);
        assert!(
            buf.len() <= MAX_HEAD,
            "stream holds {} unframed bytes",
            buf.len()
        );
    }
}

/// Tiny deterministic generator for chunk sizes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Raw bytes as SIP: framing and parsing of every head found, as a datagram
/// and as a stream arriving in pieces; then the same bytes as a UDP datagram
/// and as a TCP stream through the engine.
pub fn sip_frame(data: &[u8]) {
    let mut parser = Parser::default();
    datagram_walk(data, &mut parser);
    // the body reader (an INVITE's SDP offer), on the raw input and on
    // whatever follows the first head
    let _ = sip::media_key(data);
    if let Framing::Message { head_end, .. } = sip::find(data) {
        let _ = sip::media_key(&data[head_end..]);
    }

    // chunk sizes follow the input, so every mutation changes them too
    let seed = data.iter().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01B3)
    }) | 1;
    let mut rng = XorShift(seed);
    stream_walk(data, || 1 + (rng.next() % 1500) as usize);
    stream_walk(data, || data.len().max(1));

    let cfg = config(false);
    let mut e = Engine::new(cfg);
    let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let b: SocketAddr = "10.0.0.5:5060".parse().unwrap();
    let udp_len = data.len().min(MAX_PAYLOAD);
    e.ingest(
        BASE,
        LinkType::Ethernet,
        &frames::udp(a, b, 1, &data[..udp_len]),
    );

    // one TCP flow, in order, in the same pieces as above
    let mut rng = XorShift(seed);
    let mut seq = 1000u32;
    let mut now = BASE;
    e.ingest(
        now,
        LinkType::Ethernet,
        &frames::tcp(a, b, seq - 1, true, false, b""),
    );
    let mut pos = 0;
    while pos < data.len() {
        let n = (1 + (rng.next() % 1500) as usize).min(data.len() - pos);
        now = now.add(MILLISECOND);
        e.ingest(
            now,
            LinkType::Ethernet,
            &frames::tcp(a, b, seq, false, false, &data[pos..pos + n]),
        );
        // one in-order flow: no out-of-order bytes, at most one pending head
        assert!(
            e.buffered_bytes() <= MAX_HEAD,
            "TCP flow holds {} bytes",
            e.buffered_bytes()
        );
        seq = seq.wrapping_add(n as u32);
        pos += n;
    }
    e.ingest(
        now,
        LinkType::Ethernet,
        &frames::tcp(a, b, seq, false, true, b""),
    );
    finish(e, now, false);
}

// ---------------------------------------------------------------------------
// hep

/// `decode(encode(p)) == p`, within what HEPv3 can carry. Two packets that
/// `decode` accepts cannot be re-encoded as they are (known limits of
/// `wire::encode_hep`, a test helper, reported rather than changed):
/// - a time whose seconds no longer fit the u32 chunk once the microseconds
///   chunk (which `decode` accepts above 999 999) is carried into them:
///   `encode` truncates the seconds, so only the other fields are compared;
/// - a packet near 64 KiB whose re-encoding, with the default chunks
///   `encode` always writes, exceeds the u16 total length: not compared.
fn hep_round_trip(pkt: &wire::HepPacket<'_>) {
    let enc = wire::encode_hep(pkt);
    if enc.len() > u16::MAX as usize {
        return;
    }
    let back = match wire::decode_hep(&enc) {
        Ok(b) => b,
        Err(err) => panic!("re-encoded HEP packet does not decode: {err}; packet {pkt:?}"),
    };
    let ts_fits = pkt
        .ts
        .is_none_or(|t| t.micros().div_euclid(SECOND) <= u32::MAX as i64);
    if ts_fits {
        assert_eq!(&back, pkt, "HEP round trip changed the packet");
    } else {
        let (b, p) = (
            wire::HepPacket { ts: None, ..back },
            wire::HepPacket {
                ts: None,
                ..pkt.clone()
            },
        );
        assert_eq!(b, p, "HEP round trip changed the packet");
    }
}

/// HEPv3: `decode` on every packet of the input (concatenated packets are
/// split by their length field), the `encode`/`decode` round trip, and the
/// packets through `Engine::ingest_hep` and as HEP-in-UDP frames.
pub fn hep(data: &[u8]) {
    let mut packets: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = if wire::is_hep(rest) {
            let total = u16::from_be_bytes([rest[4], rest[5]]) as usize;
            if (6..=rest.len()).contains(&total) {
                total
            } else {
                rest.len()
            }
        } else {
            rest.len()
        };
        packets.push(&rest[..n]);
        rest = &rest[n..];
    }
    if packets.is_empty() {
        packets.push(data);
    }

    for p in &packets {
        if let Ok(pkt) = wire::decode_hep(p) {
            hep_round_trip(&pkt);
        }
    }

    let cfg = config(false);
    let mut e = Engine::new(cfg);
    let mut now = BASE;
    for p in &packets {
        now = now.add(MILLISECOND);
        e.ingest_hep(now, p);
    }
    let a: SocketAddr = "192.0.2.99:47000".parse().unwrap();
    let b: SocketAddr = "192.0.2.100:9060".parse().unwrap();
    for (i, p) in packets.iter().enumerate() {
        now = now.add(MILLISECOND);
        let p = &p[..p.len().min(MAX_PAYLOAD)];
        e.ingest(now, LinkType::Ethernet, &frames::udp(a, b, i as u16, p));
    }
    finish(e, now, false);
}

/// The store's own files read back: a journal file and a call file (the
/// input as it is, and after a call file's header), every record in them
/// decoded. Damage is reported as spans of the input, never a panic, and
/// every span is inside the input.
pub fn stored(data: &[u8]) {
    use cbt_proto::persist::{self, calls, journal};
    let scan = journal::scan(data);
    for f in &scan.frames {
        assert!(f.offset + 12 + f.body.len() <= data.len());
        let _ = persist::decode_journal_record(f.version, f.body);
    }
    for d in &scan.damaged {
        assert!(d.offset + d.len <= data.len());
    }
    assert!(scan.torn_tail <= data.len());
    let mut with_header = calls::FILE_HEADER.to_vec();
    with_header.extend_from_slice(data);
    for bytes in [data, &with_header[..]] {
        let Ok(file) = calls::read(bytes) else { continue };
        for r in &file.records {
            assert!(r.offset + r.len <= bytes.len());
            if let calls::Kind::Call { json, .. } = r.kind {
                let _ = persist::decode_call(json);
            }
        }
        for d in &file.damaged {
            assert!(d.offset + d.len <= bytes.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dt_codes_round_trip_roughly() {
        assert_eq!(dt_micros(dt_code(0)), 0);
        assert_eq!(dt_micros(dt_code(25 * MILLISECOND)), 20 * MILLISECOND);
        assert_eq!(dt_micros(dt_code(40 * SECOND)), 30 * SECOND);
        assert_eq!(dt_micros(dt_code(10 * HOUR)), 225 * SECOND);
        assert_eq!(dt_micros(dt_code(-5)), -SECOND);
    }

    #[test]
    fn targets_accept_trivial_inputs() {
        for (_, f) in TARGETS {
            f(b"");
            f(b"\x00");
            f(&[0xff; 64]);
        }
    }

    #[test]
    fn hep_round_trip_skips_what_hep_cannot_carry() {
        let p = wire::HepPacket {
            ts: None,
            src: "192.0.2.1:5060".parse().unwrap(),
            dst: "192.0.2.2:5060".parse().unwrap(),
            ip_proto: 17,
            proto_type: 1,
            capture_id: None,
            correlation_id: None,
            payload: b"x",
        };
        // seconds u32::MAX plus 4294 s carried in from the microseconds chunk
        let mut b = wire::encode_hep(&p);
        for (kind, v) in [(9u16, u32::MAX), (10, u32::MAX)] {
            b.extend_from_slice(&0u16.to_be_bytes());
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&10u16.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        let total = b.len() as u16;
        b[4..6].copy_from_slice(&total.to_be_bytes());
        assert!(wire::decode_hep(&b).unwrap().ts.unwrap().micros() > u32::MAX as i64 * SECOND);
        hep(&b);
    }

    #[test]
    fn scripted_call_over_every_target() {
        for c in calls(false) {
            let mut li = LinkInput::new(LinkType::Ethernet, false);
            let mut stream = Vec::new();
            let mut hep_in = Vec::new();
            let mut last = c.start;
            for (i, m) in c.messages().iter().enumerate() {
                li.frame(
                    dt_code(m.ts.since(last)),
                    &frames::udp(m.src, m.dst, i as u16, &m.bytes),
                );
                last = m.ts;
                stream.extend_from_slice(&m.bytes);
                hep_in.extend(wire::encode_hep(&wire::HepPacket {
                    ts: Some(m.ts),
                    src: m.src,
                    dst: m.dst,
                    ip_proto: 17,
                    proto_type: 1,
                    capture_id: None,
                    correlation_id: None,
                    payload: &m.bytes,
                }));
            }
            link_ip(&li.bytes);
            sip_frame(&stream);
            hep(&hep_in);
        }
    }
}
