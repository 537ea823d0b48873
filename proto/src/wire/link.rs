//! Link layer: from a captured frame to the network-layer packet inside it.
//!
//! Handles the link types that SIP captures arrive with in practice (Ethernet
//! with 802.1Q/QinQ tags, Linux cooked capture v1 and v2 from the `any`
//! device, raw IP, BSD loopback/NULL in both byte orders, PPP and PPPoE) and
//! the encapsulations met on mirror ports (MPLS, GRE, ERSPAN II/III,
//! transparent Ethernet bridging). Tunnelled IP (IP-in-IP, GRE) is peeled in
//! `ip.rs`, which calls back into [`ethertype`] for GRE payloads.

use serde::{Deserialize, Serialize};

/// The capture's link type (pcap `LINKTYPE_*` / `DLT_*`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    /// BSD loopback/NULL: 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: 4-byte address family in network byte order.
    Loop,
    Ethernet,
    /// Raw IPv4 or IPv6, version taken from the first nibble.
    Raw,
    Ipv4,
    Ipv6,
    /// Linux cooked capture v1 (16-byte header).
    LinuxSll,
    /// Linux cooked capture v2 (20-byte header).
    LinuxSll2,
    /// PPP with a 2-byte protocol field (optionally preceded by FF 03).
    Ppp,
    /// PPP in HDLC-like framing.
    PppHdlc,
    /// PPPoE session header then PPP, without Ethernet.
    PppEther,
}

impl LinkType {
    pub const ALL: [LinkType; 11] = [
        LinkType::Null,
        LinkType::Loop,
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Ppp,
        LinkType::PppHdlc,
        LinkType::PppEther,
    ];

    /// Maps a pcap/pcapng link type number. `None` means unsupported.
    pub fn from_linktype(n: i32) -> Option<LinkType> {
        Some(match n {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            12 | 14 | 101 => LinkType::Raw,
            50 => LinkType::PppHdlc,
            51 => LinkType::PppEther,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LinkType::Null => "null",
            LinkType::Loop => "loop",
            LinkType::Ethernet => "ethernet",
            LinkType::Raw => "raw",
            LinkType::Ipv4 => "ipv4",
            LinkType::Ipv6 => "ipv6",
            LinkType::LinuxSll => "linux_sll",
            LinkType::LinuxSll2 => "linux_sll2",
            LinkType::Ppp => "ppp",
            LinkType::PppHdlc => "ppp_hdlc",
            LinkType::PppEther => "ppp_ether",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Ethertypes we look inside.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88A8;
    pub const QINQ_OLD: u16 = 0x9100;
    pub const PPPOE_SESSION: u16 = 0x8864;
    pub const MPLS: u16 = 0x8847;
    pub const MPLS_MC: u16 = 0x8848;
    pub const TEB: u16 = 0x6558;
    pub const ERSPAN2: u16 = 0x88BE;
    pub const ERSPAN3: u16 = 0x22EB;
    pub const PPP: u16 = 0x880B;
}

/// What the link layer found: a network packet, or a reason to skip the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum L3<'a> {
    Ipv4(&'a [u8]),
    Ipv6(&'a [u8]),
}

/// Why a frame carried no IP packet we could read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkSkip {
    /// The frame ends inside a header.
    Truncated,
    /// A protocol that cannot carry SIP (ARP, LLDP, STP, IPX...): not an error.
    NotIp,
    /// More nested encapsulations than we follow.
    TooDeep,
}

/// Nesting bound for VLAN tags, MPLS labels and tunnels together.
pub const MAX_DEPTH: u8 = 8;

/// Peels the capture's link header.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match link {
        LinkType::Ethernet => ethernet(frame, 0),
        LinkType::Raw => raw_ip(frame),
        LinkType::Ipv4 => Ok(L3::Ipv4(frame)),
        LinkType::Ipv6 => Ok(L3::Ipv6(frame)),
        LinkType::Null | LinkType::Loop => {
            let payload = frame.get(4..).ok_or(LinkSkip::Truncated)?;
            let le = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let be = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            // Address families: AF_INET is 2 everywhere; AF_INET6 is 10 (Linux),
            // 23 (Windows), 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (Darwin).
            let family = if le < 0x10000 { le } else { be };
            match family {
                2 => Ok(L3::Ipv4(payload)),
                10 | 23 | 24 | 28 | 30 => Ok(L3::Ipv6(payload)),
                _ => Err(LinkSkip::NotIp),
            }
        }
        LinkType::LinuxSll => {
            let sll = etherparse::LinuxSllSlice::from_slice(frame).map_err(|_| LinkSkip::Truncated)?;
            let proto = u16::from_be_bytes([frame[14], frame[15]]);
            // ARPHRD_NETLINK and friends carry no ethertype; everything we care
            // about has the ethertype in the protocol field.
            ethertype_payload(proto, sll.payload_slice(), 0)
        }
        LinkType::LinuxSll2 => {
            // protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
            if frame.len() < 20 {
                return Err(LinkSkip::Truncated);
            }
            let proto = u16::from_be_bytes([frame[0], frame[1]]);
            ethertype_payload(proto, &frame[20..], 0)
        }
        LinkType::Ppp => ppp(frame, 0),
        LinkType::PppHdlc => ppp(frame, 0),
        LinkType::PppEther => pppoe(frame, 0),
    }
}

fn raw_ip(frame: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match frame.first().map(|b| b >> 4) {
        Some(4) => Ok(L3::Ipv4(frame)),
        Some(6) => Ok(L3::Ipv6(frame)),
        Some(_) => Err(LinkSkip::NotIp),
        None => Err(LinkSkip::Truncated),
    }
}

/// Ethernet II (no FCS), then whatever its ethertype says.
pub fn ethernet(frame: &[u8], depth: u8) -> Result<L3<'_>, LinkSkip> {
    let eth = etherparse::Ethernet2Slice::from_slice_without_fcs(frame)
        .map_err(|_| LinkSkip::Truncated)?;
    ethertype_payload(eth.ether_type().0, eth.payload_slice(), depth)
}

/// Dispatches on an ethertype; used by Ethernet, SLL, GRE and PPP.
pub fn ethertype_payload(ethertype: u16, payload: &[u8], depth: u8) -> Result<L3<'_>, LinkSkip> {
    if depth > MAX_DEPTH {
        return Err(LinkSkip::TooDeep);
    }
    use ethertype::*;
    match ethertype {
        IPV4 => Ok(L3::Ipv4(payload)),
        IPV6 => Ok(L3::Ipv6(payload)),
        VLAN | QINQ | QINQ_OLD => {
            let vlan =
                etherparse::SingleVlanSlice::from_slice(payload).map_err(|_| LinkSkip::Truncated)?;
            ethertype_payload(vlan.ether_type().0, vlan.payload_slice(), depth + 1)
        }
        PPPOE_SESSION => pppoe(payload, depth + 1),
        MPLS | MPLS_MC => {
            let mut rest = payload;
            for _ in 0..MAX_DEPTH {
                if rest.len() < 4 {
                    return Err(LinkSkip::Truncated);
                }
                let bottom = rest[2] & 0x01 != 0;
                rest = &rest[4..];
                if bottom {
                    return raw_ip(rest);
                }
            }
            Err(LinkSkip::TooDeep)
        }
        TEB => ethernet(payload, depth + 1),
        ERSPAN2 => ethernet(payload.get(8..).ok_or(LinkSkip::Truncated)?, depth + 1),
        ERSPAN3 => {
            let hdr = payload.get(..12).ok_or(LinkSkip::Truncated)?;
            // O bit (last bit of the 12-byte header) flags an 8-byte platform subheader.
            let skip = if hdr[11] & 0x01 != 0 { 20 } else { 12 };
            ethernet(payload.get(skip..).ok_or(LinkSkip::Truncated)?, depth + 1)
        }
        PPP => ppp(payload, depth + 1),
        _ => Err(LinkSkip::NotIp),
    }
}

fn pppoe(payload: &[u8], depth: u8) -> Result<L3<'_>, LinkSkip> {
    // ver/type(1) code(1) session(2) length(2), then PPP protocol
    let rest = payload.get(6..).ok_or(LinkSkip::Truncated)?;
    ppp(rest, depth + 1)
}

/// PPP: optional FF 03 address/control, then a 1- or 2-byte protocol field.
fn ppp(payload: &[u8], depth: u8) -> Result<L3<'_>, LinkSkip> {
    if depth > MAX_DEPTH {
        return Err(LinkSkip::TooDeep);
    }
    let mut p = payload;
    if p.len() >= 2 && p[0] == 0xFF && p[1] == 0x03 {
        p = &p[2..];
    }
    let first = *p.first().ok_or(LinkSkip::Truncated)?;
    let (proto, rest) = if first & 0x01 == 1 {
        // protocol-field compression: a single odd byte
        (first as u16, &p[1..])
    } else {
        let b = p.get(..2).ok_or(LinkSkip::Truncated)?;
        (u16::from_be_bytes([b[0], b[1]]), &p[2..])
    };
    match proto {
        0x0021 => Ok(L3::Ipv4(rest)),
        0x0057 => Ok(L3::Ipv6(rest)),
        _ => Err(LinkSkip::NotIp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP4: [u8; 4] = [0x45, 0, 0, 20];

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn vlan(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x00, 0x64];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_untagged_single_and_double_tagged() {
        assert_eq!(decode(LinkType::Ethernet, &eth(0x0800, &IP4)), Ok(L3::Ipv4(&IP4)));
        let one = eth(0x8100, &vlan(0x0800, &IP4));
        assert_eq!(decode(LinkType::Ethernet, &one), Ok(L3::Ipv4(&IP4)));
        let two = eth(0x88A8, &vlan(0x8100, &vlan(0x86DD, &IP4)));
        assert_eq!(decode(LinkType::Ethernet, &two), Ok(L3::Ipv6(&IP4)));
    }

    #[test]
    fn endless_vlan_tags_are_bounded() {
        let mut p = IP4.to_vec();
        for _ in 0..100 {
            p = vlan(0x8100, &p);
        }
        assert_eq!(decode(LinkType::Ethernet, &eth(0x8100, &p)), Err(LinkSkip::TooDeep));
    }

    #[test]
    fn linux_cooked_v1_and_v2() {
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::LinuxSll, &sll), Ok(L3::Ipv4(&IP4)));
        let mut sll2 = vec![0x86, 0xDD, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        sll2.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::LinuxSll2, &sll2), Ok(L3::Ipv6(&IP4)));
        assert_eq!(decode(LinkType::LinuxSll2, &sll2[..19]), Err(LinkSkip::Truncated));
    }

    #[test]
    fn null_loopback_in_either_byte_order() {
        let mut le = 2u32.to_le_bytes().to_vec();
        le.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::Null, &le), Ok(L3::Ipv4(&IP4)));
        let mut be = 30u32.to_be_bytes().to_vec();
        be.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::Null, &be), Ok(L3::Ipv6(&IP4)));
        let mut win6 = 23u32.to_le_bytes().to_vec();
        win6.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::Null, &win6), Ok(L3::Ipv6(&IP4)));
    }

    #[test]
    fn pppoe_mpls_and_raw() {
        let mut pppoe = vec![0x11, 0, 0, 1, 0, 22, 0x00, 0x21];
        pppoe.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::Ethernet, &eth(0x8864, &pppoe)), Ok(L3::Ipv4(&IP4)));
        let mut mpls = vec![0, 0, 0x10, 64, 0, 0, 0x21, 64];
        mpls.extend_from_slice(&IP4);
        assert_eq!(decode(LinkType::Ethernet, &eth(0x8847, &mpls)), Ok(L3::Ipv4(&IP4)));
        assert_eq!(decode(LinkType::Raw, &IP4), Ok(L3::Ipv4(&IP4)));
        assert_eq!(decode(LinkType::Raw, &[]), Err(LinkSkip::Truncated));
        assert_eq!(decode(LinkType::Ethernet, &eth(0x0806, &[0; 28])), Err(LinkSkip::NotIp));
    }

    #[test]
    fn every_supported_linktype_number_round_trips_to_a_name() {
        for n in [0, 1, 9, 12, 14, 50, 51, 101, 108, 113, 228, 229, 276] {
            let l = LinkType::from_linktype(n).unwrap();
            assert!(LinkType::ALL.contains(&l), "{}", l.name());
        }
        assert_eq!(LinkType::from_linktype(147), None);
    }
}
