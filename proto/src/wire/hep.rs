//! HEPv3 (Homer Encapsulation Protocol) decoding.
//!
//! PBXs that encrypt their SIP (TLS) can still mirror it in clear over HEP:
//! Asterisk `res_hep`, FreeSWITCH, Kamailio `siptrace`, OpenSIPS. A HEPv3
//! packet is `"HEP3"`, a 16-bit total length, then chunks of
//! (vendor u16, type u16, length u16 including this 6-byte header, value).

use crate::time::Timestamp;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepPacket<'a> {
    /// Capture time carried in the packet, if both time chunks were present.
    pub ts: Option<Timestamp>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IP protocol number of the original packet (17 UDP, 6 TCP, 132 SCTP).
    pub ip_proto: u8,
    /// HEP payload type: 1 is SIP.
    pub proto_type: u8,
    pub capture_id: Option<u32>,
    pub correlation_id: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    #[error("not HEPv3 (no HEP3 magic)")]
    NotHep,
    #[error("HEP packet truncated")]
    Truncated,
    #[error("HEP chunk length is invalid")]
    BadChunk,
    #[error("HEP packet lacks the {0} chunk")]
    Missing(&'static str),
    #[error("HEP payload is compressed (unsupported; disable compression on the sender)")]
    Compressed,
}

pub const MAGIC: &[u8; 4] = b"HEP3";

pub fn is_hep(buf: &[u8]) -> bool {
    buf.len() >= 6 && &buf[..4] == MAGIC
}

pub fn decode(buf: &[u8]) -> Result<HepPacket<'_>, HepError> {
    if !is_hep(buf) {
        return Err(HepError::NotHep);
    }
    let total = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    if total < 6 || total > buf.len() {
        return Err(HepError::Truncated);
    }
    let mut rest = &buf[6..total];
    let mut family = None;
    let mut ip_proto = None;
    let (mut src4, mut dst4, mut src6, mut dst6) = (None, None, None, None);
    let (mut sport, mut dport) = (None, None);
    let (mut secs, mut usecs) = (None, None);
    let mut proto_type = None;
    let mut capture_id = None;
    let mut correlation_id = None;
    let mut payload = None;
    while !rest.is_empty() {
        if rest.len() < 6 {
            return Err(HepError::Truncated);
        }
        let vendor = u16::from_be_bytes([rest[0], rest[1]]);
        let kind = u16::from_be_bytes([rest[2], rest[3]]);
        let len = u16::from_be_bytes([rest[4], rest[5]]) as usize;
        if len < 6 {
            return Err(HepError::BadChunk);
        }
        if len > rest.len() {
            return Err(HepError::Truncated);
        }
        let v = &rest[6..len];
        rest = &rest[len..];
        if vendor != 0 {
            continue; // vendor-specific chunks are skipped
        }
        match kind {
            1 => family = v.first().copied(),
            2 => ip_proto = v.first().copied(),
            3 => src4 = arr::<4>(v).map(Ipv4Addr::from),
            4 => dst4 = arr::<4>(v).map(Ipv4Addr::from),
            5 => src6 = arr::<16>(v).map(Ipv6Addr::from),
            6 => dst6 = arr::<16>(v).map(Ipv6Addr::from),
            7 => sport = arr::<2>(v).map(u16::from_be_bytes),
            8 => dport = arr::<2>(v).map(u16::from_be_bytes),
            9 => secs = arr::<4>(v).map(u32::from_be_bytes),
            10 => usecs = arr::<4>(v).map(u32::from_be_bytes),
            11 => proto_type = v.first().copied(),
            12 => capture_id = arr::<4>(v).map(u32::from_be_bytes),
            15 => payload = Some(v),
            16 => return Err(HepError::Compressed),
            17 => correlation_id = Some(v),
            _ => {}
        }
    }
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match family {
        Some(10) => (
            src6.ok_or(HepError::Missing("IPv6 source"))?.into(),
            dst6.ok_or(HepError::Missing("IPv6 destination"))?.into(),
        ),
        _ => (
            src4.ok_or(HepError::Missing("IPv4 source"))?.into(),
            dst4.ok_or(HepError::Missing("IPv4 destination"))?.into(),
        ),
    };
    let ts = match (secs, usecs) {
        (Some(s), Some(u)) => Some(Timestamp::from_secs_micros(s as i64, u as i64)),
        (Some(s), None) => Some(Timestamp::from_secs_micros(s as i64, 0)),
        _ => None,
    };
    Ok(HepPacket {
        ts,
        src: SocketAddr::new(src_ip, sport.unwrap_or(0)),
        dst: SocketAddr::new(dst_ip, dport.unwrap_or(0)),
        ip_proto: ip_proto.unwrap_or(17),
        proto_type: proto_type.unwrap_or(1),
        capture_id,
        correlation_id,
        payload: payload.ok_or(HepError::Missing("payload"))?,
    })
}

fn arr<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    v.try_into().ok()
}

/// Builds a HEPv3 packet; used by tests, benchmarks and fuzz seeds.
pub fn encode(p: &HepPacket<'_>) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: u16, v: &[u8]) {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&((v.len() + 6) as u16).to_be_bytes());
        out.extend_from_slice(v);
    }
    let mut out = Vec::with_capacity(p.payload.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0, 0]);
    match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(&mut out, 1, &[2]);
            chunk(&mut out, 3, &s.octets());
            chunk(&mut out, 4, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            chunk(&mut out, 1, &[10]);
            chunk(&mut out, 5, &v6(s).octets());
            chunk(&mut out, 6, &v6(d).octets());
        }
    }
    chunk(&mut out, 2, &[p.ip_proto]);
    chunk(&mut out, 7, &p.src.port().to_be_bytes());
    chunk(&mut out, 8, &p.dst.port().to_be_bytes());
    if let Some(ts) = p.ts {
        let us = ts.micros();
        chunk(&mut out, 9, &(us.div_euclid(1_000_000) as u32).to_be_bytes());
        chunk(&mut out, 10, &(us.rem_euclid(1_000_000) as u32).to_be_bytes());
    }
    chunk(&mut out, 11, &[p.proto_type]);
    if let Some(id) = p.capture_id {
        chunk(&mut out, 12, &id.to_be_bytes());
    }
    if let Some(c) = p.correlation_id {
        chunk(&mut out, 17, c);
    }
    chunk(&mut out, 15, p.payload);
    let total = out.len() as u16;
    out[4..6].copy_from_slice(&total.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HepPacket<'static> {
        HepPacket {
            ts: Some(Timestamp::from_secs_micros(1_700_000_000, 250_000)),
            src: "192.0.2.1:5060".parse().unwrap(),
            dst: "[2001:db8::5]:5080".parse().unwrap(),
            ip_proto: 17,
            proto_type: 1,
            capture_id: Some(2001),
            correlation_id: Some(b"abc"),
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        }
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let mut p = sample();
        let bytes = encode(&p);
        let back = decode(&bytes).unwrap();
        // a v4/v6 mix is sent as v6 (v4-mapped)
        assert_eq!(back.payload, p.payload);
        assert_eq!(back.dst, p.dst);
        assert_eq!(back.ts, p.ts);
        assert_eq!(back.capture_id, Some(2001));
        p.dst = "198.51.100.7:5060".parse().unwrap();
        assert_eq!(decode(&encode(&p)).unwrap(), p);
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(b"HEP2xxxxxx"), Err(HepError::NotHep));
        let mut bad = bytes.clone();
        bad[10] = 0;
        bad[11] = 2; // chunk length 2 < 6
        assert_eq!(decode(&bad), Err(HepError::BadChunk));
    }
}
