//! Synthetic SIP traffic for tests, property tests, fuzz seeds and the
//! benchmark: realistic messages for scripted calls, and the frames that
//! carry them (Ethernet, IPv4/IPv6, UDP, fragments, TCP segments).
//!
//! Nothing here is used by the engine itself.

use crate::time::{Micros, Timestamp, MILLISECOND};
use std::net::{IpAddr, SocketAddr};

/// What happens to a scripted call, times in milliseconds from the INVITE.
#[derive(Clone, Debug, PartialEq)]
pub enum Script {
    /// 100, 180 at `ring`, 200 at `answer`, BYE at `answer + talk` by the
    /// caller (or the callee).
    Answered { ring: u32, answer: u32, talk: u32, caller_hangs_up: bool },
    /// 100, optional 180, then a final error.
    Rejected { ring: Option<u32>, at: u32, code: u16 },
    /// 180 at `ring`, CANCEL at `cancel`, 487.
    Cancelled { ring: u32, cancel: u32 },
    /// 407 at 20 ms, ACK, INVITE again with CSeq+1, then answered.
    ChallengedThenAnswered { answer: u32, talk: u32 },
    /// INVITE (retransmitted per Timer A) and nothing back.
    NoResponse,
    /// Answered, but no BYE is ever sent.
    AnsweredNoBye { answer: u32 },
}

#[derive(Clone, Debug)]
pub struct Call {
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub caller: String,
    pub callee: String,
    pub a: SocketAddr,
    pub b: SocketAddr,
    pub start: Timestamp,
    pub script: Script,
    /// Prefix of the Via branches (a proxy forwarding an INVITE uses its own).
    pub branch: String,
    /// Further header lines (without CRLF) of the caller's requests, such as
    /// `Session-ID: ...` or `Diversion: ...`.
    pub extra: Vec<String>,
    /// Where the caller's SDP offer sends its audio (default 192.0.2.10:40000
    /// for every call).
    pub media: Option<SocketAddr>,
}

/// One message on the wire.
#[derive(Clone, Debug)]
pub struct Msg {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

const SDP: &str = "v=0\r\no=- 3849271 3849271 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

impl Call {
    /// A call with identifiers derived from `n`.
    pub fn numbered(n: u64, a: SocketAddr, b: SocketAddr, start: Timestamp, script: Script) -> Call {
        Call {
            call_id: format!("{n:08x}-synth@{}", a.ip()),
            from_tag: format!("f{n:x}"),
            to_tag: format!("t{n:x}"),
            caller: format!("07700{:06}", n % 1_000_000),
            callee: "01632960123".into(),
            a,
            b,
            start,
            script,
            branch: format!("f{n:x}"),
            extra: Vec::new(),
            media: None,
        }
    }

    fn request(&self, method: &str, cseq: u32, branch: &str, to_tag: bool, body: bool) -> Vec<u8> {
        let to = if to_tag {
            format!("<sip:{}@{}>;tag={}", self.callee, self.b.ip(), self.to_tag)
        } else {
            format!("<sip:{}@{}>", self.callee, self.b.ip())
        };
        let offer;
        let body = match (body, self.media) {
            (false, _) => "",
            (true, None) => SDP,
            (true, Some(m)) => {
                offer = SDP.replace("c=IN IP4 192.0.2.10", &format!("c=IN IP4 {}", m.ip())).replace("m=audio 40000", &format!("m=audio {}", m.port()));
                &offer
            }
        };
        let extra: String = self.extra.iter().map(|h| format!("{h}\r\n")).collect();
        format!(
            "{method} sip:{callee}@{bhost} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: \"Caller\" <sip:{caller}@{ahost}>;tag={ft}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {cm}\r\n\
             Contact: <sip:{caller}@{a}>\r\n\
             User-Agent: cbt-synth/1.0\r\n\
             Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n\
             {extra}\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            callee = self.callee,
            bhost = self.b.ip(),
            a = self.a,
            ahost = self.a.ip(),
            caller = self.caller,
            ft = self.from_tag,
            cid = self.call_id,
            cm = if method == "ACK" && cseq > 0 { "ACK" } else { method },
            len = body.len(),
        )
        .into_bytes()
    }

    fn response(&self, code: u16, reason: &str, cseq: u32, method: &str, branch: &str, body: bool) -> Vec<u8> {
        let to_tag = if code == 100 { String::new() } else { format!(";tag={}", self.to_tag) };
        let body = if body { SDP } else { "" };
        format!(
            "SIP/2.0 {code} {reason}\r\n\
             Via: SIP/2.0/UDP {a};branch=z9hG4bK{branch}\r\n\
             From: \"Caller\" <sip:{caller}@{ahost}>;tag={ft}\r\n\
             To: <sip:{callee}@{bhost}>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{callee}@{b}>\r\n\
             Server: cbt-synth/1.0\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            a = self.a,
            ahost = self.a.ip(),
            b = self.b,
            bhost = self.b.ip(),
            caller = self.caller,
            callee = self.callee,
            ft = self.from_tag,
            cid = self.call_id,
            len = body.len(),
        )
        .into_bytes()
    }

    /// The messages of the call, in time order.
    pub fn messages(&self) -> Vec<Msg> {
        let mut out = Vec::new();
        let at = |ms: u32| self.start.add(ms as Micros * MILLISECOND);
        let fwd = |ms: u32, bytes: Vec<u8>| Msg {
            ts: at(ms),
            src: self.a,
            dst: self.b,
            bytes,
        };
        let back = |ms: u32, bytes: Vec<u8>| Msg {
            ts: at(ms),
            src: self.b,
            dst: self.a,
            bytes,
        };
        let br = format!("{}-1", self.branch);
        let invite = self.request("INVITE", 1, &br, false, true);
        out.push(fwd(0, invite.clone()));
        match &self.script {
            Script::Answered {
                ring,
                answer,
                talk,
                caller_hangs_up,
            } => {
                out.push(back(5.min(*ring), self.response(100, "Trying", 1, "INVITE", &br, false)));
                out.push(back(*ring, self.response(180, "Ringing", 1, "INVITE", &br, false)));
                out.push(back(*answer, self.response(200, "OK", 1, "INVITE", &br, true)));
                out.push(fwd(answer + 2, self.request("ACK", 1, &format!("{}-ack", self.branch), true, false)));
                let end = answer + talk;
                if *caller_hangs_up {
                    let bb = format!("{}-bye", self.branch);
                    out.push(fwd(end, self.request("BYE", 2, &bb, true, false)));
                    out.push(back(end + 3, self.response(200, "OK", 2, "BYE", &bb, false)));
                } else {
                    let bye = self.callee_bye();
                    out.push(back(end, bye));
                    out.push(fwd(end + 3, self.callee_bye_ok()));
                }
            }
            Script::Rejected { ring, at: when, code } => {
                out.push(back(2, self.response(100, "Trying", 1, "INVITE", &br, false)));
                if let Some(r) = ring {
                    out.push(back(*r, self.response(180, "Ringing", 1, "INVITE", &br, false)));
                }
                out.push(back(*when, self.response(*code, "Error", 1, "INVITE", &br, false)));
                out.push(fwd(when + 2, self.request("ACK", 1, &br, true, false)));
            }
            Script::Cancelled { ring, cancel } => {
                out.push(back(2, self.response(100, "Trying", 1, "INVITE", &br, false)));
                out.push(back(*ring, self.response(180, "Ringing", 1, "INVITE", &br, false)));
                out.push(fwd(*cancel, self.request("CANCEL", 1, &br, false, false)));
                out.push(back(cancel + 2, self.response(200, "OK", 1, "CANCEL", &br, false)));
                out.push(back(cancel + 3, self.response(487, "Request Terminated", 1, "INVITE", &br, false)));
                out.push(fwd(cancel + 5, self.request("ACK", 1, &br, true, false)));
            }
            Script::ChallengedThenAnswered { answer, talk } => {
                out.push(back(20, self.response(407, "Proxy Authentication Required", 1, "INVITE", &br, false)));
                out.push(fwd(22, self.request("ACK", 1, &br, true, false)));
                let br2 = format!("{}-2", self.branch);
                out.push(fwd(30, self.request("INVITE", 2, &br2, false, true)));
                out.push(back(35, self.response(100, "Trying", 2, "INVITE", &br2, false)));
                out.push(back(*answer, self.response(200, "OK", 2, "INVITE", &br2, true)));
                out.push(fwd(answer + 2, self.request("ACK", 2, &format!("{}-ack", self.branch), true, false)));
                let bb = format!("{}-bye", self.branch);
                out.push(fwd(answer + talk, self.request("BYE", 3, &bb, true, false)));
                out.push(back(answer + talk + 3, self.response(200, "OK", 3, "BYE", &bb, false)));
            }
            Script::NoResponse => {
                // Timer A retransmissions: 0.5, 1.5, 3.5, 7.5, 15.5 s
                for t in [500, 1500, 3500, 7500, 15500] {
                    out.push(fwd(t, invite.clone()));
                }
            }
            Script::AnsweredNoBye { answer } => {
                out.push(back(answer / 2, self.response(180, "Ringing", 1, "INVITE", &br, false)));
                out.push(back(*answer, self.response(200, "OK", 1, "INVITE", &br, true)));
                out.push(fwd(answer + 2, self.request("ACK", 1, &format!("{}-ack", self.branch), true, false)));
            }
        }
        out.sort_by_key(|m| m.ts);
        out
    }

    fn callee_bye(&self) -> Vec<u8> {
        format!(
            "BYE sip:{caller}@{a} SIP/2.0\r\nVia: SIP/2.0/UDP {b};branch=z9hG4bK{tt}-bye\r\nMax-Forwards: 70\r\nFrom: <sip:{callee}@{bhost}>;tag={tt}\r\nTo: \"Caller\" <sip:{caller}@{ahost}>;tag={ft}\r\nCall-ID: {cid}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            caller = self.caller,
            callee = self.callee,
            a = self.a,
            ahost = self.a.ip(),
            b = self.b,
            bhost = self.b.ip(),
            tt = self.to_tag,
            ft = self.from_tag,
            cid = self.call_id,
        )
        .into_bytes()
    }

    fn callee_bye_ok(&self) -> Vec<u8> {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {b};branch=z9hG4bK{tt}-bye\r\nFrom: <sip:{callee}@{bhost}>;tag={tt}\r\nTo: \"Caller\" <sip:{caller}@{ahost}>;tag={ft}\r\nCall-ID: {cid}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            caller = self.caller,
            callee = self.callee,
            ahost = self.a.ip(),
            b = self.b,
            bhost = self.b.ip(),
            tt = self.to_tag,
            ft = self.from_tag,
            cid = self.call_id,
        )
        .into_bytes()
    }
}

/// A SIP scanner's probe, as sipvicious and its kin send them: one
/// request to a guessed user (an extension, a number), no SDP, the tool's
/// User-Agent; and the response a phone system gives it.
#[derive(Clone, Debug)]
pub struct Probe {
    pub method: &'static str,
    pub n: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub user: String,
    pub agent: String,
    pub at: Timestamp,
}

impl Probe {
    pub fn new(method: &'static str, n: u64, src: SocketAddr, dst: SocketAddr, user: &str, at: Timestamp) -> Probe {
        Probe {
            method,
            n,
            src,
            dst,
            user: user.to_string(),
            agent: "friendly-scanner".into(),
            at,
        }
    }

    fn headers(&self, to_tag: &str) -> String {
        format!(
            "Via: SIP/2.0/UDP {src};branch=z9hG4bK-scan-{n}\r\n\
             From: \"{user}\" <sip:{user}@{dst}>;tag=scan{n}\r\n\
             To: \"{user}\" <sip:{user}@{dst}>{to_tag}\r\n\
             Call-ID: {n}-scan@{src_ip}\r\n\
             CSeq: 1 {method}\r\n",
            src = self.src,
            src_ip = self.src.ip(),
            dst = self.dst.ip(),
            user = self.user,
            n = self.n,
            method = self.method,
        )
    }

    pub fn request(&self) -> Msg {
        let text = format!(
            "{method} sip:{user}@{dst} SIP/2.0\r\n{h}Contact: <sip:{user}@{src}>\r\nMax-Forwards: 70\r\nUser-Agent: {agent}\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n",
            method = self.method,
            user = self.user,
            dst = self.dst.ip(),
            src = self.src,
            agent = self.agent,
            h = self.headers(""),
        );
        Msg {
            ts: self.at,
            src: self.src,
            dst: self.dst,
            bytes: text.into_bytes(),
        }
    }

    /// The phone system's response `code`, `after` microseconds later.
    pub fn response(&self, code: u16, reason: &str, after: Micros) -> Msg {
        let tag = if code == 100 { String::new() } else { format!(";tag=pbx{}", self.n) };
        let text = format!("SIP/2.0 {code} {reason}\r\n{}Content-Length: 0\r\n\r\n", self.headers(&tag));
        Msg {
            ts: self.at.add(after),
            src: self.dst,
            dst: self.src,
            bytes: text.into_bytes(),
        }
    }
}

/// Link-layer frame builders (Ethernet II). Checksums are left zero: the
/// engine, like most capture tools, does not verify them.
pub mod frames {
    use super::*;

    const ETH_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const ETH_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    /// An Ethernet II frame around `payload`.
    pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&ETH_DST);
        f.extend_from_slice(&ETH_SRC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag_off: u16, more: bool, len: usize) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        let flags = ((more as u16) << 13) | (frag_off / 8);
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h
    }

    /// An IP packet (v4 or v6 by the addresses) carrying `l4` of protocol `proto`.
    pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut p = ipv4_header(s.octets(), d.octets(), proto, id, 0, false, l4.len()).to_vec();
                p.extend_from_slice(l4);
                p
            }
            (s, d) => {
                let v6 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                let mut p = vec![0x60, 0, 0, 0];
                p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                p.push(proto);
                p.push(64);
                p.extend_from_slice(&v6(s).octets());
                p.extend_from_slice(&v6(d).octets());
                p.extend_from_slice(l4);
                p
            }
        }
    }

    pub fn udp_segment(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::with_capacity(8 + payload.len());
        u.extend_from_slice(&src.port().to_be_bytes());
        u.extend_from_slice(&dst.port().to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// Ethernet + IP + UDP.
    pub fn udp(src: SocketAddr, dst: SocketAddr, id: u16, payload: &[u8]) -> Vec<u8> {
        let ethertype = if src.is_ipv4() && dst.is_ipv4() { 0x0800 } else { 0x86DD };
        ethernet(ethertype, &ip(src.ip(), dst.ip(), 17, id, &udp_segment(src, dst, payload)))
    }

    /// Ethernet + IPv4 fragments of one UDP datagram, each carrying at most
    /// `chunk` bytes of IP payload (rounded down to a multiple of 8).
    pub fn udp_fragments_v4(src: SocketAddr, dst: SocketAddr, id: u16, payload: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            panic!("IPv4 addresses expected");
        };
        fragments(&udp_segment(src, dst, payload), chunk, |off, more, piece| {
            let mut p = ipv4_header(s.octets(), d.octets(), 17, id, off as u16, more, piece.len()).to_vec();
            p.extend_from_slice(piece);
            ethernet(0x0800, &p)
        })
    }

    /// Ethernet + IPv6 fragments (a Fragment extension header in each) of
    /// one UDP datagram, each carrying at most `chunk` bytes of it (rounded
    /// down to a multiple of 8).
    pub fn udp_fragments_v6(src: SocketAddr, dst: SocketAddr, id: u32, payload: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (src.ip(), dst.ip()) else {
            panic!("IPv6 addresses expected");
        };
        fragments(&udp_segment(src, dst, payload), chunk, |off, more, piece| {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&((piece.len() + 8) as u16).to_be_bytes());
            p.push(44); // next header: Fragment
            p.push(64);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.push(17);
            p.push(0);
            p.extend_from_slice(&((off as u16) | more as u16).to_be_bytes());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(piece);
            ethernet(0x86DD, &p)
        })
    }

    /// Cuts `l4` into pieces of `chunk` bytes (a multiple of 8) and frames
    /// each with `frame(offset, more_fragments, piece)`.
    fn fragments(l4: &[u8], chunk: usize, frame: impl Fn(usize, bool, &[u8]) -> Vec<u8>) -> Vec<Vec<u8>> {
        let chunk = (chunk / 8).max(1) * 8;
        l4.chunks(chunk).enumerate().map(|(i, piece)| frame(i * chunk, (i + 1) * chunk < l4.len(), piece)).collect()
    }

    /// Ethernet + IP + one TCP segment (flags: PSH|ACK, plus SYN/FIN if asked).
    pub fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, syn: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::with_capacity(20 + payload.len());
        t.extend_from_slice(&src.port().to_be_bytes());
        t.extend_from_slice(&dst.port().to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&1u32.to_be_bytes());
        let mut flags = 0x18u8; // PSH ACK
        if syn {
            flags = 0x02;
        }
        if fin {
            flags |= 0x01;
        }
        t.push(5 << 4);
        t.push(flags);
        t.extend_from_slice(&65535u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(payload);
        let ethertype = if src.is_ipv4() && dst.is_ipv4() { 0x0800 } else { 0x86DD };
        ethernet(ethertype, &ip(src.ip(), dst.ip(), 6, 0, &t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_messages_frame_and_parse() {
        let c = Call::numbered(
            1,
            "192.0.2.1:5060".parse().unwrap(),
            "10.0.0.5:5060".parse().unwrap(),
            Timestamp(0),
            Script::Answered {
                ring: 100,
                answer: 2000,
                talk: 30_000,
                caller_hangs_up: false,
            },
        );
        let msgs = c.messages();
        assert_eq!(msgs.len(), 7);
        let mut p = crate::sip::Parser::default();
        for m in &msgs {
            match crate::sip::find(&m.bytes) {
                crate::sip::Framing::Message { head_end, .. } => {
                    match p.parse(&m.bytes[..head_end]) {
                        Ok(crate::sip::Parsed::Message { rsip_rejected: None, .. }) => {}
                        // the 200 to the BYE matters to no leg
                        Ok(crate::sip::Parsed::Ignored(crate::sip::Method::Bye)) => {}
                        other => panic!("{other:?}"),
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
