//! From captured frames to transport payloads: link layer, IPv4/IPv6 with
//! fragment reassembly, tunnels, UDP, TCP stream reassembly and HEPv3.
//!
//! The [`Decoder`] owns all reassembly state and hands what it finds to a
//! [`Sink`]: whole UDP (or HEP) datagrams, and TCP flows whose in-order
//! buffer has grown.

mod frag;
mod hep;
mod link;
mod tcp;

use crate::time::{Timestamp, SECOND};
use link::{LinkSkip, L3};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// the layer's public surface, in one place
pub use frag::FragLimits;
pub use hep::{decode as decode_hep, encode as encode_hep, is_hep, HepError, HepPacket};
pub use link::LinkType;
pub use tcp::{Flow, FlowKey, TcpLimits};

/// Transport a SIP message travelled on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Sctp => "sctp",
        }
    }
}

/// Where a payload came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Decoded from a captured frame.
    Capture,
    /// Unwrapped from a HEPv3 packet.
    Hep,
}

/// A whole datagram's payload (UDP, or SIP unwrapped from HEP).
#[derive(Debug)]
pub struct Datagram<'a> {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub source: Source,
    pub payload: &'a [u8],
}

/// Receives what the decoder finds.
pub trait Sink {
    fn datagram(&mut self, d: Datagram<'_>);
    /// New in-order bytes are in `flow.buf` (or `flow.gap` is set). The sink
    /// consumes what it can from the front of `flow.buf`.
    fn stream(&mut self, ts: Timestamp, key: FlowKey, flow: &mut Flow);
}

#[derive(Clone, Debug)]
pub struct WireConfig {
    pub frag: FragLimits,
    pub tcp: TcpLimits,
    /// Unwrap HEPv3 found in UDP payloads (any port).
    pub decode_hep: bool,
    /// UDP port carrying VXLAN-encapsulated Ethernet (0 disables).
    pub vxlan_port: u16,
    /// Senders whose captured HEP is believed (its inner addresses say
    /// who called whom, so anyone could forge calls); `None`: any (replay
    /// of a file). HEP from anyone else is counted in `hep_rejected`.
    pub hep_from: Option<Vec<crate::site::AddrMatch>>,
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            frag: FragLimits::default(),
            tcp: TcpLimits::default(),
            decode_hep: true,
            vxlan_port: 4789,
            hep_from: None,
        }
    }
}

/// Counters of the wire layer. Every frame is accounted for once in
/// `frames`; what could not be read is counted by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStats {
    pub frames: u64,
    pub bytes: u64,
    pub frames_by_link: std::collections::BTreeMap<String, u64>,
    /// Frames that are not IP (ARP, LLDP...).
    pub not_ip: u64,
    pub truncated: u64,
    pub too_deep: u64,
    pub bad_ip: u64,
    /// IP protocols other than UDP/TCP/tunnels (ICMP, ESP...).
    pub other_protocol: u64,
    pub bad_udp: u64,
    pub bad_tcp: u64,
    pub udp_datagrams: u64,
    pub fragments: u64,
    pub fragments_invalid: u64,
    pub fragments_evicted: u64,
    pub fragments_expired: u64,
    pub datagrams_reassembled: u64,
    pub tunnels: u64,
    pub tcp_segments: u64,
    pub tcp_retransmitted: u64,
    pub tcp_overlapping: u64,
    pub tcp_out_of_order: u64,
    pub tcp_gaps: u64,
    pub tcp_gap_bytes: u64,
    pub tcp_bytes_discarded: u64,
    pub tcp_flows_opened: u64,
    pub tcp_flows_closed: u64,
    pub tcp_flows_evicted: u64,
    pub tcp_flows_expired: u64,
    pub hep_packets: u64,
    pub hep_errors: u64,
    /// HEP packets from a sender not in `WireConfig::hep_from`, ignored.
    #[serde(default)]
    pub hep_rejected: u64,
    /// TLS records seen on TCP port 5061: encrypted SIP that cannot be read.
    pub tls_records: u64,
}

pub struct Decoder {
    cfg: WireConfig,
    frags: frag::Defrag,
    tcp: tcp::TcpTable,
    pub stats: WireStats,
    link_counts: [u64; LinkType::ALL.len()],
    next_housekeeping: Option<Timestamp>,
}

const HOUSEKEEPING_EVERY: i64 = SECOND;

impl Decoder {
    pub fn new(cfg: WireConfig) -> Self {
        Decoder {
            frags: frag::Defrag::new(cfg.frag.clone()),
            tcp: tcp::TcpTable::new(cfg.tcp.clone()),
            cfg,
            stats: WireStats::default(),
            link_counts: [0; LinkType::ALL.len()],
            next_housekeeping: None,
        }
    }

    /// Decodes one captured frame.
    pub fn frame(&mut self, ts: Timestamp, link: LinkType, frame: &[u8], sink: &mut impl Sink) {
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        self.link_counts[link.index()] += 1;
        match link::decode(link, frame) {
            Ok(l3) => self.l3(ts, l3, 0, sink),
            Err(e) => self.count_skip(e),
        }
    }

    /// Decodes a HEPv3 packet received on a socket (not from a capture).
    pub fn hep(&mut self, ts: Timestamp, buf: &[u8], sink: &mut impl Sink) {
        self.stats.frames += 1;
        self.stats.bytes += buf.len() as u64;
        self.hep_payload(ts, buf, sink);
    }

    /// Raw UDP payload from a socket or test: treated as one datagram.
    pub fn udp_payload(
        &mut self,
        ts: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        sink: &mut impl Sink,
    ) {
        self.udp(ts, src, dst, payload, 0, sink);
    }

    fn count_skip(&mut self, e: LinkSkip) {
        match e {
            LinkSkip::NotIp => self.stats.not_ip += 1,
            LinkSkip::Truncated => self.stats.truncated += 1,
            LinkSkip::TooDeep => self.stats.too_deep += 1,
        }
    }

    fn l3(&mut self, ts: Timestamp, l3: L3<'_>, depth: u8, sink: &mut impl Sink) {
        if depth > link::MAX_DEPTH {
            self.stats.too_deep += 1;
            return;
        }
        match l3 {
            L3::Ipv4(b) => self.ipv4(ts, b, depth, sink),
            L3::Ipv6(b) => self.ipv6(ts, b, depth, sink),
        }
    }

    fn ipv4(&mut self, ts: Timestamp, b: &[u8], depth: u8, sink: &mut impl Sink) {
        let ip = match etherparse::Ipv4Slice::from_slice(b) {
            Ok(ip) => ip,
            Err(e) => {
                use etherparse::err::ipv4::SliceError;
                match e {
                    SliceError::Len(_) => self.stats.truncated += 1,
                    _ => self.stats.bad_ip += 1,
                }
                return;
            }
        };
        let h = ip.header();
        let src = IpAddr::V4(h.source_addr());
        let dst = IpAddr::V4(h.destination_addr());
        let proto = h.protocol().0;
        let payload = ip.payload().payload;
        if h.is_fragmenting_payload() {
            let key = frag::FragKey {
                src,
                dst,
                id: h.identification() as u32,
                proto,
            };
            let offset = h.fragments_offset().byte_offset() as u32;
            if let Some(whole) =
                self.frags
                    .insert(ts, key, offset, h.more_fragments(), payload, &mut self.stats)
            {
                self.transport(ts, proto, src, dst, &whole, depth, sink);
            }
            return;
        }
        self.transport(ts, proto, src, dst, payload, depth, sink);
    }

    fn ipv6(&mut self, ts: Timestamp, b: &[u8], depth: u8, sink: &mut impl Sink) {
        let ip = match etherparse::Ipv6Slice::from_slice(b) {
            Ok(ip) => ip,
            Err(e) => {
                use etherparse::err::ipv6::SliceError;
                match e {
                    SliceError::Len(_) => self.stats.truncated += 1,
                    _ => self.stats.bad_ip += 1,
                }
                return;
            }
        };
        let h = ip.header();
        let src = IpAddr::V6(h.source_addr());
        let dst = IpAddr::V6(h.destination_addr());
        let pl = ip.payload();
        if pl.fragmented {
            let fh = ip.extensions().clone().into_iter().find_map(|e| match e {
                etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            });
            let fh = match fh {
                Some(f) => f,
                None => {
                    self.stats.bad_ip += 1;
                    return;
                }
            };
            let key = frag::FragKey {
                src,
                dst,
                id: fh.identification(),
                proto: fh.next_header().0,
            };
            let offset = fh.fragment_offset().byte_offset() as u32;
            if let Some(whole) =
                self.frags
                    .insert(ts, key, offset, fh.more_fragments(), pl.payload, &mut self.stats)
            {
                self.transport(ts, fh.next_header().0, src, dst, &whole, depth, sink);
            }
            return;
        }
        self.transport(ts, pl.ip_number.0, src, dst, pl.payload, depth, sink);
    }

    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        ts: Timestamp,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        payload: &[u8],
        depth: u8,
        sink: &mut impl Sink,
    ) {
        match proto {
            17 => {
                let udp = match etherparse::UdpSlice::from_slice_lax(payload) {
                    Ok(u) => u,
                    Err(_) => {
                        self.stats.bad_udp += 1;
                        return;
                    }
                };
                let s = SocketAddr::new(src, udp.source_port());
                let d = SocketAddr::new(dst, udp.destination_port());
                self.udp(ts, s, d, udp.payload(), depth, sink);
            }
            6 => self.tcp_segment(ts, src, dst, payload, sink),
            4 => {
                self.stats.tunnels += 1;
                self.l3(ts, L3::Ipv4(payload), depth + 1, sink)
            }
            41 => {
                self.stats.tunnels += 1;
                self.l3(ts, L3::Ipv6(payload), depth + 1, sink)
            }
            47 => {
                self.stats.tunnels += 1;
                match gre(payload).and_then(|(et, inner)| link::ethertype_payload(et, inner, depth + 1)) {
                    Ok(l3) => self.l3(ts, l3, depth + 1, sink),
                    Err(e) => self.count_skip(e),
                }
            }
            _ => self.stats.other_protocol += 1,
        }
    }

    fn udp(
        &mut self,
        ts: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        depth: u8,
        sink: &mut impl Sink,
    ) {
        self.stats.udp_datagrams += 1;
        if self.cfg.vxlan_port != 0 && dst.port() == self.cfg.vxlan_port && payload.len() >= 8 {
            // VXLAN: I flag set, 8-byte header, then Ethernet
            if payload[0] & 0x08 != 0 {
                self.stats.tunnels += 1;
                match link::ethernet(&payload[8..], depth + 1) {
                    Ok(l3) => self.l3(ts, l3, depth + 1, sink),
                    Err(e) => self.count_skip(e),
                }
                return;
            }
        }
        if self.cfg.decode_hep && hep::is_hep(payload) {
            if let Some(allow) = &self.cfg.hep_from {
                if !allow.iter().any(|m| m.matches(src)) {
                    self.stats.hep_rejected += 1;
                    return;
                }
            }
            self.hep_payload(ts, payload, sink);
            return;
        }
        sink.datagram(Datagram {
            ts,
            src,
            dst,
            transport: Transport::Udp,
            source: Source::Capture,
            payload,
        });
        self.housekeeping(ts, sink);
    }

    fn hep_payload(&mut self, ts: Timestamp, buf: &[u8], sink: &mut impl Sink) {
        match hep::decode(buf) {
            Ok(p) => {
                self.stats.hep_packets += 1;
                if p.proto_type != 1 {
                    return; // RTCP, logs, QoS reports: not SIP
                }
                let transport = match p.ip_proto {
                    6 => Transport::Tcp,
                    132 => Transport::Sctp,
                    _ => Transport::Udp,
                };
                // HEP senders put one whole SIP message in each packet, TCP or not.
                sink.datagram(Datagram {
                    ts: p.ts.unwrap_or(ts),
                    src: p.src,
                    dst: p.dst,
                    transport,
                    source: Source::Hep,
                    payload: p.payload,
                });
                self.housekeeping(ts, sink);
            }
            Err(_) => self.stats.hep_errors += 1,
        }
    }

    fn tcp_segment(&mut self, ts: Timestamp, src: IpAddr, dst: IpAddr, payload: &[u8], sink: &mut impl Sink) {
        let tcp = match etherparse::TcpSlice::from_slice(payload) {
            Ok(t) => t,
            Err(_) => {
                self.stats.bad_tcp += 1;
                return;
            }
        };
        let key = FlowKey {
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
        };
        let payload = tcp.payload();
        if (key.src.port() == 5061 || key.dst.port() == 5061)
            && payload.len() >= 3
            && (0x14..=0x17).contains(&payload[0])
            && payload[1] == 0x03
        {
            self.stats.tls_records += 1;
        }
        let flags = tcp::TcpFlags {
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        };
        if self
            .tcp
            .segment(ts, key, tcp.sequence_number(), flags, tcp.payload(), &mut self.stats)
        {
            if let Some(flow) = self.tcp.flow_mut(&key) {
                sink.stream(ts, key, flow);
                if flow.finished() {
                    self.tcp.remove(&key);
                    self.stats.tcp_flows_closed += 1;
                }
            }
        }
        self.tcp.account(&key, &mut self.stats);
        self.housekeeping(ts, sink);
    }

    /// Expires fragments and TCP state on packet time, at most once a second.
    fn housekeeping(&mut self, now: Timestamp, sink: &mut impl Sink) {
        match self.next_housekeeping {
            Some(t) if now < t => return,
            _ => {}
        }
        self.next_housekeeping = Some(now.add(HOUSEKEEPING_EVERY));
        self.expire(now, sink);
    }

    /// When held reassembly state is next looked at for expiry (at the
    /// housekeeping pace), if any is held.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.frags.bytes() == 0 && self.tcp.len() == 0 {
            return None;
        }
        self.next_housekeeping
    }

    /// Expires reassembly state that is older than its timeout.
    pub fn expire(&mut self, now: Timestamp, sink: &mut impl Sink) {
        self.stats.fragments_expired += self.frags.expire(now);
        let stats = &mut self.stats;
        self.tcp.expire(now, stats, |k, f| sink.stream(now, k, f));
    }

    /// Frames by link type, including the counts not yet folded into `stats`.
    pub fn stats(&self) -> WireStats {
        let mut s = self.stats.clone();
        for l in LinkType::ALL {
            let n = self.link_counts[l.index()];
            if n > 0 {
                s.frames_by_link.insert(l.name().to_string(), n);
            }
        }
        s
    }

    /// Bytes held for reassembly (fragments and TCP).
    pub fn buffered_bytes(&self) -> usize {
        self.frags.bytes() + self.tcp.buffered_bytes()
    }

    /// Bytes of reassembly state as counted against the engine's memory
    /// ceiling: fragment data and per-datagram overhead, TCP flows with
    /// their buffers by capacity.
    pub fn state_bytes(&self) -> usize {
        self.frags.bytes() + self.frags.pending() * 160 + self.tcp.state_bytes()
    }

    pub fn tcp_flows(&self) -> usize {
        self.tcp.len()
    }
}

/// GRE header: returns (protocol type, payload).
fn gre(b: &[u8]) -> Result<(u16, &[u8]), LinkSkip> {
    if b.len() < 4 {
        return Err(LinkSkip::Truncated);
    }
    let flags = u16::from_be_bytes([b[0], b[1]]);
    let proto = u16::from_be_bytes([b[2], b[3]]);
    let version = flags & 0x7;
    let mut len = 4;
    if flags & 0x8000 != 0 {
        len += 4; // checksum + reserved
    }
    if flags & 0x2000 != 0 {
        len += 4; // key
    }
    if flags & 0x1000 != 0 {
        len += 4; // sequence
    }
    if version == 1 && flags & 0x0080 != 0 {
        len += 4; // enhanced GRE (PPTP) acknowledgment
    }
    let payload = b.get(len..).ok_or(LinkSkip::Truncated)?;
    Ok((proto, payload))
}

/// The unspecified address, for payloads with no network origin.
pub fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}
