//! Live capture: one OS thread per interface (libpcap through the `pcap`
//! crate, non-blocking reads) and one for the HEP listener,
//! all feeding the engine's bounded queue. A full queue drops the packet and
//! counts it: capture never blocks on the engine.
//!
//! Packets are handed over in batches: each thread takes everything the
//! kernel holds without blocking, sends it as one [`Batch`] (one wake-up of
//! the engine), and when nothing is left waits for the descriptor to become
//! readable. libpcap's ring coalesces by itself when not in immediate mode
//! (TPACKET_V3 blocks, readable when full or `read_timeout` after their
//! first packet); the HEP socket has a deep queue, so its thread lets
//! [`COALESCE`] pass after a quiet spell so that the datagrams arriving
//! meanwhile travel together. Packet times are the kernel's (or the HEP
//! header's), so these delays change no figure.

use super::hostile::{HepGuard, QueueBudget};
use super::Input;
use crate::config::AgentConfig;
use cbt_proto::Timestamp;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a capture thread lets packets gather after a quiet spell
/// before it takes them (a bound on the delay a batch adds).
pub const COALESCE: Duration = Duration::from_millis(10);
/// Packets in one batch at most (a busier source sends several).
const BATCH_PACKETS: usize = 512;

/// Packets handed to the engine together, each with its capture time;
/// their bytes in one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    /// (time, end of its bytes in `data`)
    frames: Vec<(Timestamp, usize)>,
}

impl Batch {
    fn push(&mut self, ts: Timestamp, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.frames.push((ts, self.data.len()));
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The bytes of every packet together.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Timestamp, &[u8])> {
        let mut start = 0;
        self.frames.iter().map(move |&(ts, end)| {
            let b = &self.data[start..end];
            start = end;
            (ts, b)
        })
    }

    /// Counts a packet for its source and adds it, if the queue's ceiling
    /// allows (else counts it dropped). Returns whether the batch is full.
    fn take(&mut self, ts: Timestamp, bytes: &[u8], stats: &SourceStats, queue: &QueueBudget) -> bool {
        stats.packets.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if queue.reserve(bytes.len()) {
            self.push(ts, bytes);
        } else {
            // the queue is at its ceiling (limits.queue_memory, capture.queue)
            stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.frames.len() >= BATCH_PACKETS
    }
}

/// Sends a batch to the engine; a full queue drops it, counted. Returns
/// false when the engine has gone.
fn hand_over(batch: Batch, make: impl FnOnce(Batch) -> Input, tx: &SyncSender<Input>, stats: &SourceStats, queue: &QueueBudget) -> bool {
    let (n, bytes) = (batch.len(), batch.bytes());
    match tx.try_send(make(batch)) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            queue.release_many(n, bytes);
            stats.queue_dropped.fetch_add(n as u64, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// Waits until `fd` has something to read, at most `timeout`.
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, alive for the duration of the call.
    let rc = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    rc > 0
}

/// Counters of one capture source, shared with the status page.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub name: String,
    pub linktype: Mutex<Option<String>>,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Accumulated from pcap's u32 counters, wrap-around handled.
    pub kernel_dropped: AtomicU64,
    pub if_dropped: AtomicU64,
    /// Dropped because the engine's queue was full.
    pub queue_dropped: AtomicU64,
    pub error: Mutex<Option<String>>,
    pub running: AtomicBool,
    /// When this source last started delivering packets (Unix µs; 0: never).
    pub since: std::sync::atomic::AtomicI64,
}

/// Accumulates a wrapping u32 counter into a u64.
#[derive(Default, Clone, Copy)]
pub struct Wrapping {
    last: Option<u32>,
}

impl Wrapping {
    /// The increase since the previous reading (handles one wrap).
    pub fn delta(&mut self, now: u32) -> u64 {
        let d = match self.last {
            Some(prev) => now.wrapping_sub(prev) as u64,
            None => now as u64,
        };
        self.last = Some(now);
        d
    }
}

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_micros() as i64)
}

pub(crate) fn open(iface: &str, cfg: &AgentConfig) -> Result<pcap::Capture<pcap::Active>, String> {
    let cap = pcap::Capture::from_device(iface)
        .map_err(|e| format!("no such interface `{iface}` ({e}); list them with `ip link`"))?
        .promisc(true)
        .snaplen(cfg.snaplen)
        .buffer_size(cfg.buffer_bytes)
        .immediate_mode(cfg.immediate)
        .timeout(cfg.read_timeout_ms)
        .precision(pcap::Precision::Nano)
        .open()
        .map_err(|e| {
            let m = e.to_string();
            if m.contains("ermission") || m.contains("not permitted") {
                format!("cannot capture on `{iface}`: {m}; run as root or give the binary CAP_NET_RAW and CAP_NET_ADMIN")
            } else {
                format!("cannot capture on `{iface}`: {m}")
            }
        })?;
    Ok(cap)
}

/// Starts a capture thread. It retries opening the interface every 5 s
/// until `stop` is set.
pub fn spawn(iface: String, cfg: AgentConfig, tx: SyncSender<Input>, stats: Arc<SourceStats>, stop: Arc<AtomicBool>, queue: Arc<QueueBudget>) {
    std::thread::Builder::new()
        .name(format!("capture-{iface}"))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match open(&iface, &cfg) {
                    Ok(cap) => {
                        if let Err(e) = run(cap, &cfg, &tx, &stats, &stop, &queue) {
                            tracing::error!(interface = %iface, "capture stopped: {e}");
                            *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        }
                    }
                    Err(e) => {
                        tracing::error!(interface = %iface, "{e}");
                        *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                }
                stats.running.store(false, Ordering::Relaxed);
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .expect("spawn capture thread");
}

fn run(
    mut cap: pcap::Capture<pcap::Active>,
    cfg: &AgentConfig,
    tx: &SyncSender<Input>,
    stats: &SourceStats,
    stop: &AtomicBool,
    queue: &QueueBudget,
) -> Result<(), String> {
    let dl = cap.get_datalink();
    let ethernet = dl == pcap::Linktype::ETHERNET;
    let filter = cfg.filter_for(ethernet);
    cap.filter(&filter, true)
        .map_err(|e| format!("the capture filter does not compile: {e}: {filter}"))?;
    let link_name = cbt_proto::LinkType::from_linktype(dl.0).map_or_else(|| format!("unsupported ({})", dl.0), |l| l.name().to_string());
    if cbt_proto::LinkType::from_linktype(dl.0).is_none() {
        return Err(format!("link type {} is not supported; capture on an Ethernet interface or on `any`", dl.0));
    }
    // non-blocking reads and our own wait: see the module's note on batches
    let mut cap = cap.setnonblock().map_err(|e| format!("cannot read the capture without blocking: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&cap);
    *stats.linktype.lock().unwrap_or_else(|e| e.into_inner()) = Some(link_name);
    *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    stats.since.store(now().0, Ordering::Relaxed);
    stats.running.store(true, Ordering::Relaxed);
    tracing::info!(interface = %stats.name, filter = %filter, "capturing");
    let (mut kd, mut ifd) = (Wrapping::default(), Wrapping::default());
    let mut last_stats = std::time::Instant::now();
    let frames = |batch| Input::Frames { linktype: dl.0, batch };
    while !stop.load(Ordering::Relaxed) {
        // everything the kernel holds now, without blocking
        let mut batch = Batch::default();
        let more = loop {
            match cap.next_packet() {
                Ok(p) => {
                    // nanoseconds (asked for), truncated to microseconds as for files
                    let ts = Timestamp::from_secs_micros(p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64 / 1000);
                    if batch.take(ts, p.data, stats, queue) {
                        break true;
                    }
                }
                Err(pcap::Error::TimeoutExpired) => break false,
                Err(e) => return Err(format!("capture failed: {e}")),
            }
        };
        if !batch.is_empty() && !hand_over(batch, frames, tx, stats, queue) {
            return Ok(());
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = std::time::Instant::now();
            if let Ok(s) = cap.stats() {
                stats.kernel_dropped.fetch_add(kd.delta(s.dropped), Ordering::Relaxed);
                stats.if_dropped.fetch_add(ifd.delta(s.if_dropped), Ordering::Relaxed);
            }
        }
        if !more {
            // the kernel coalesces: without immediate mode (TPACKET_V3) the
            // descriptor becomes readable when a block fills or its
            // read_timeout passes; in immediate mode at each packet (its
            // ring has fixed slots, as few as 64 on loopback: no waiting)
            wait_readable(fd, Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Opens the HEP socket with a large receive queue: HEP arrives in bursts,
/// and the socket's queue is the only buffer before the engine's. Returns
/// the socket and the queue size the kernel granted.
pub fn bind_hep(addr: std::net::SocketAddr, want: usize) -> std::io::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // SO_RCVBUFFORCE passes net.core.rmem_max when the agent holds
    // CAP_NET_ADMIN (the packaged unit grants it); otherwise the plain
    // request, capped by the kernel. A refused size leaves the default.
    if !force_recv_buffer(&sock, want) {
        let _ = sock.set_recv_buffer_size(want);
    }
    sock.bind(&addr.into())?;
    let got = sock.recv_buffer_size().unwrap_or(0);
    Ok((sock.into(), got))
}

#[cfg(target_os = "linux")]
fn force_recv_buffer(sock: &socket2::Socket, want: usize) -> bool {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = want.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the
    // length given, which setsockopt only reads.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_: &socket2::Socket, _: usize) -> bool {
    false
}

/// Datagrams the kernel dropped on one UDP socket because its queue was
/// full: the `drops` column of /proc/net/udp{,6} for the socket's inode.
/// `None` where that is not available (not Linux, /proc not mounted).
pub fn udp_socket_drops(socket: &UdpSocket) -> Option<u32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?.ino();
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        udp_table_drops(&text, inode)
    })
}

/// Finds the drops column of the row with this inode in a /proc/net/udp table.
fn udp_table_drops(table: &str, inode: u64) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 13 && f[9].parse::<u64>().ok()? == inode {
            f[12].parse().ok()
        } else {
            None
        }
    })
}

/// Receives HEPv3 on UDP, from the senders `guard` allows only.
pub fn spawn_hep(socket: UdpSocket, tx: SyncSender<Input>, stats: Arc<SourceStats>, stop: Arc<AtomicBool>, queue: Arc<QueueBudget>, guard: Arc<HepGuard>) {
    std::thread::Builder::new()
        .name("hep".into())
        .spawn(move || {
            use std::os::fd::AsRawFd;
            if let Err(e) = socket.set_nonblocking(true) {
                *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("cannot read the HEP socket without blocking: {e}"));
                return;
            }
            stats.since.store(now().0, Ordering::Relaxed);
            stats.running.store(true, Ordering::Relaxed);
            let mut buf = vec![0u8; 65_536];
            // the socket is new: every drop it shows is ours
            let mut drops = Wrapping::default();
            let mut last_drops = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if last_drops.elapsed() >= Duration::from_secs(1) {
                    last_drops = std::time::Instant::now();
                    if let Some(n) = udp_socket_drops(&socket) {
                        stats.kernel_dropped.fetch_add(drops.delta(n), Ordering::Relaxed);
                    }
                }
                // every datagram waiting, without blocking
                let mut batch = Batch::default();
                let more = loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let ts = now();
                            if !guard.admit(from.ip(), ts) {
                                continue; // anyone could forge calls in HEP: only hep.allow is read
                            }
                            if batch.take(ts, &buf[..n], &stats, &queue) {
                                break true;
                            }
                        }
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
                        Err(e) => {
                            *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                            std::thread::sleep(Duration::from_millis(200));
                            break false;
                        }
                    }
                };
                if !batch.is_empty() && !hand_over(batch, Input::Hep, &tx, &stats, &queue) {
                    return;
                }
                if !more && wait_readable(socket.as_raw_fd(), Duration::from_millis(200)) {
                    std::thread::sleep(COALESCE);
                }
            }
        })
        .expect("spawn hep thread");
}

#[cfg(test)]
mod tests {
    use super::{udp_socket_drops, udp_table_drops, Wrapping};

    #[test]
    fn reads_the_drops_column_of_a_udp_socket() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          0: 0100007F:2384 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
          1: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   107        0 99 2 0000000000000000 0\n";
        assert_eq!(udp_table_drops(table, 4242), Some(17));
        assert_eq!(udp_table_drops(table, 99), Some(0));
        assert_eq!(udp_table_drops(table, 7), None);
    }

    #[test]
    fn counts_datagrams_the_kernel_dropped_on_a_full_socket() {
        // a tiny queue nobody reads, flooded from loopback
        let (rx, _) = super::bind_hep("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_socket_drops(&rx), Some(0));
        for _ in 0..200 {
            tx.send_to(&[0u8; 1200], to).unwrap();
        }
        let dropped = udp_socket_drops(&rx).expect("/proc/net/udp lists the socket");
        assert!(dropped > 100, "only {dropped} of 200 datagrams counted as dropped on a 4 KiB queue");
    }

    #[test]
    fn u32_counters_wrap() {
        let mut w = Wrapping::default();
        assert_eq!(w.delta(10), 10);
        assert_eq!(w.delta(15), 5);
        assert_eq!(w.delta(u32::MAX - 1), (u32::MAX - 16) as u64);
        assert_eq!(w.delta(3), 5, "wrapped past u32::MAX");
    }
}
