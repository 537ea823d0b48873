//! Floods on loopback for the hostile-traffic tests and `scripts/bench-floods`:
//! what an exposed SIP port receives from the internet, sent from a
//! "scanner" address in 127.0.0.0/8 (never any other) at a fixed packet rate.
//!
//! | kind | what |
//! |---|---|
//! | `invite` | UDP INVITEs to the practice's number, a new Call-ID each, nothing answers |
//! | `register`, `options`, `subscribe` | UDP requests to guessed extensions, `friendly-scanner` |
//! | `garbage` | UDP datagrams of random bytes on the SIP port |
//! | `tcp-syn` | TCP SYNs from new ports, never completed (raw socket) |
//! | `tcp-stream` | endless TCP streams to a listener: a head that never ends, or an endless body |
//! | `fragments` | first IP fragments of datagrams whose rest never comes (raw socket) |
//! | `hep` | HEP datagrams forging carrier calls, from a sender not allowed to send HEP |
//!
//! The raw-socket kinds need root (or CAP_NET_RAW).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invite,
    Register,
    Options,
    Subscribe,
    Garbage,
    TcpSyn,
    TcpStream,
    Fragments,
    Hep,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Invite,
        Kind::Register,
        Kind::Options,
        Kind::Subscribe,
        Kind::Garbage,
        Kind::TcpSyn,
        Kind::TcpStream,
        Kind::Fragments,
        Kind::Hep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Invite => "invite",
            Kind::Register => "register",
            Kind::Options => "options",
            Kind::Subscribe => "subscribe",
            Kind::Garbage => "garbage",
            Kind::TcpSyn => "tcp-syn",
            Kind::TcpStream => "tcp-stream",
            Kind::Fragments => "fragments",
            Kind::Hep => "hep",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Where a flood comes from and goes to.
#[derive(Clone, Debug)]
pub struct Target {
    /// The scanner's address (127.0.0.0/8).
    pub scanner: Ipv4Addr,
    /// The PBX's SIP address, where nothing answers (UDP and TCP SYNs).
    pub pbx: SocketAddrV4,
    /// Where the endless TCP streams go (a listener the flood opens).
    pub stream: SocketAddrV4,
    /// The agent's HEP port.
    pub hep: SocketAddrV4,
    /// The "carrier" the forged HEP calls claim to come from.
    pub carrier: SocketAddrV4,
    /// The practice's number (INVITEs are for it: the worst case).
    pub ddi: String,
}

/// Sends `kind` at `rate` packets a second for `dur` (or until `stop`).
/// Returns the packets (or stream segments) sent.
pub fn run(kind: Kind, t: &Target, rate: u32, dur: Duration, stop: &AtomicBool) -> std::io::Result<u64> {
    let mut sender = Sender::new(kind, t)?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < dur && !stop.load(Ordering::Relaxed) {
        let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sender.send(sent)?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    sender.finish();
    Ok(sent)
}

struct Sender {
    kind: Kind,
    t: Target,
    udp: Option<UdpSocket>,
    raw: Option<RawSocket>,
    streams: Vec<TcpStream>,
    listener_stop: Option<Arc<AtomicBool>>,
    rng: u64,
    id: u32,
}

impl Sender {
    fn new(kind: Kind, t: &Target) -> std::io::Result<Sender> {
        let mut s = Sender {
            kind,
            t: t.clone(),
            udp: None,
            raw: None,
            streams: Vec::new(),
            listener_stop: None,
            rng: 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64,
            id: 1,
        };
        match kind {
            Kind::TcpSyn | Kind::Fragments => s.raw = Some(RawSocket::new()?),
            Kind::TcpStream => {
                // a listener that takes every byte and answers nothing
                let l = TcpListener::bind(t.stream)?;
                l.set_nonblocking(true)?;
                let stop = Arc::new(AtomicBool::new(false));
                let st = stop.clone();
                std::thread::spawn(move || {
                    let mut conns: Vec<TcpStream> = Vec::new();
                    let mut buf = vec![0u8; 1 << 16];
                    while !st.load(Ordering::Relaxed) {
                        while let Ok((c, _)) = l.accept() {
                            let _ = c.set_nonblocking(true);
                            conns.push(c);
                        }
                        let mut idle = true;
                        for c in &mut conns {
                            use std::io::Read;
                            while let Ok(n) = c.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                idle = false;
                            }
                        }
                        if idle {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                });
                s.listener_stop = Some(stop);
                for i in 0..20 {
                    let local = SocketAddr::new(t.scanner.into(), 0);
                    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    sock.bind(&local.into())?;
                    sock.connect(&SocketAddr::V4(t.stream).into())?;
                    let mut c: TcpStream = sock.into();
                    c.set_nodelay(true)?;
                    // half the streams: a head that never ends; the others:
                    // a head announcing an endless body
                    let head = if i % 2 == 0 {
                        format!("INVITE sip:{}@{} SIP/2.0\r\nVia: SIP/2.0/TCP {}\r\nX-Pad: ", t.ddi, t.stream.ip(), t.scanner)
                    } else {
                        format!(
                            "MESSAGE sip:{}@{} SIP/2.0\r\nVia: SIP/2.0/TCP {}\r\nCall-ID: stream{i}\r\nFrom: <sip:x@{}>;tag=1\r\nTo: <sip:{}@{}>\r\nCSeq: 1 MESSAGE\r\nContent-Length: 16000000\r\n\r\n",
                            t.ddi,
                            t.stream.ip(),
                            t.scanner,
                            t.scanner,
                            t.ddi,
                            t.stream.ip()
                        )
                    };
                    c.write_all(head.as_bytes())?;
                    s.streams.push(c);
                }
            }
            _ => s.udp = Some(UdpSocket::bind((t.scanner, 0))?),
        }
        Ok(s)
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn request(&self, method: &str, n: u64, user: &str, agent: &str) -> String {
        let local = self.udp.as_ref().and_then(|u| u.local_addr().ok()).unwrap_or(SocketAddr::new(self.t.scanner.into(), 5060));
        let body = if method == "INVITE" {
            "v=0\r\no=- 1 1 IN IP4 127.0.0.66\r\ns=-\r\nc=IN IP4 127.0.0.66\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        } else {
            ""
        };
        format!(
            "{method} sip:{user}@{pbx} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-flood-{n}\r\n\
             From: \"{user}\" <sip:{user}@{pbx}>;tag=fl{n}\r\n\
             To: \"{user}\" <sip:{user}@{pbx}>\r\n\
             Call-ID: flood-{n}-{pid}@{scanner}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: {agent}\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            pbx = self.t.pbx.ip(),
            scanner = self.t.scanner,
            pid = std::process::id(),
            extra = if method == "INVITE" { "Content-Type: application/sdp\r\n" } else if method == "SUBSCRIBE" { "Event: presence\r\nExpires: 3600\r\n" } else { "" },
            len = body.len(),
        )
    }

    fn send(&mut self, n: u64) -> std::io::Result<()> {
        let ext = format!("{}", 100 + n % 900);
        match self.kind {
            Kind::Invite => {
                // not a scanner's User-Agent: the address (or the behaviour) must tell
                let m = self.request("INVITE", n, &self.t.ddi.clone(), "Z 5.6.2 rv2.10.20.2");
                self.udp().send_to(m.as_bytes(), self.t.pbx)?;
            }
            Kind::Register | Kind::Options | Kind::Subscribe => {
                let method = match self.kind {
                    Kind::Register => "REGISTER",
                    Kind::Options => "OPTIONS",
                    _ => "SUBSCRIBE",
                };
                let m = self.request(method, n, &ext, "friendly-scanner");
                self.udp().send_to(m.as_bytes(), self.t.pbx)?;
            }
            Kind::Garbage => {
                let len = 100 + (self.rand() % 1300) as usize;
                let mut b = Vec::with_capacity(len);
                while b.len() < len {
                    b.extend_from_slice(&self.rand().to_le_bytes());
                }
                b.truncate(len);
                self.udp().send_to(&b, self.t.pbx)?;
            }
            Kind::TcpSyn => {
                let port = 1024 + (n % 64_000) as u16;
                let seq = self.rand() as u32;
                let tcp = tcp_syn(self.t.scanner, port, *self.t.pbx.ip(), self.t.pbx.port(), seq);
                let id = self.next_id();
                let pkt = ipv4(self.t.scanner, *self.t.pbx.ip(), 6, id, 0, false, &tcp);
                self.raw.as_ref().expect("raw socket").send(&pkt, *self.t.pbx.ip())?;
            }
            Kind::Fragments => {
                // the first 1480 bytes of a 3000-byte UDP datagram: the rest never comes
                let m = self.request("INVITE", n, &self.t.ddi.clone(), "Z 5.6.2");
                let mut payload = m.into_bytes();
                payload.resize(2992, b' ');
                let mut udp = Vec::with_capacity(3000);
                udp.extend_from_slice(&40000u16.to_be_bytes());
                udp.extend_from_slice(&self.t.pbx.port().to_be_bytes());
                udp.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
                udp.extend_from_slice(&[0, 0]);
                udp.extend_from_slice(&payload);
                let id = self.next_id();
                let pkt = ipv4(self.t.scanner, *self.t.pbx.ip(), 17, id, 0, true, &udp[..1480]);
                self.raw.as_ref().expect("raw socket").send(&pkt, *self.t.pbx.ip())?;
            }
            Kind::TcpStream => {
                let i = (n % self.streams.len() as u64) as usize;
                let chunk = [b'a'; 1400];
                // a stream the listener cannot take is skipped, not waited for
                let _ = self.streams[i].write(&chunk);
            }
            Kind::Hep => {
                // a call "from the carrier" as a HEP agent would mirror it
                let m = self.request("INVITE", n, &self.t.ddi.clone(), "Z 5.6.2");
                let pkt = cbt_proto::wire::encode_hep(&cbt_proto::wire::HepPacket {
                    ts: None,
                    src: SocketAddr::V4(self.t.carrier),
                    dst: SocketAddr::V4(self.t.pbx),
                    ip_proto: 17,
                    proto_type: 1,
                    capture_id: Some(1),
                    correlation_id: None,
                    payload: m.as_bytes(),
                });
                self.udp().send_to(&pkt, self.t.hep)?;
            }
        }
        Ok(())
    }

    fn udp(&self) -> &UdpSocket {
        self.udp.as_ref().expect("udp socket")
    }

    fn next_id(&mut self) -> u16 {
        self.id = self.id.wrapping_add(1);
        (self.id & 0xffff) as u16
    }

    fn finish(&mut self) {
        for s in &self.streams {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.streams.clear();
        if let Some(s) = &self.listener_stop {
            s.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A raw IPv4 socket that sends whole packets (IP_HDRINCL).
struct RawSocket(std::os::fd::OwnedFd);

impl RawSocket {
    fn new() -> std::io::Result<RawSocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket(2) returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor we own.
        Ok(RawSocket(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, pkt: &[u8], dst: Ipv4Addr) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid descriptor, a buffer of the length given and a
        // sockaddr_in of the size given.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (the kernel fills in the header checksum).
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, offset8: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(20 + payload.len());
    p.push(0x45);
    p.push(0);
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    let frag = offset8 | if more { 0x2000 } else { 0 };
    p.extend_from_slice(&frag.to_be_bytes());
    p.push(64);
    p.push(proto);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// A TCP SYN with a correct checksum.
fn tcp_syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(5 << 4);
    t.push(0x02);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    let mut sum = 0u32;
    for c in pseudo.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    let c = checksum(&t, sum);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// Resident memory (bytes) and CPU time (seconds) of a process.
pub fn rss_and_cpu(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name (which may hold spaces)
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((rss_kib * 1024, ticks as f64 / hz))
}
