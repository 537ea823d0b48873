//! Live capture: one OS thread per interface (libpcap through the `pcap`
//! crate, immediate mode, short read timeout) and one for the HEP listener,
//! all feeding the engine's bounded queue. A full queue drops the packet and
//! counts it: capture never blocks on the engine.

use super::hostile::{HepGuard, QueueBudget};
use super::Input;
use crate::config::AgentConfig;
use cbt_proto::Timestamp;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    *stats.linktype.lock().unwrap_or_else(|e| e.into_inner()) = Some(link_name);
    *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    stats.since.store(now().0, Ordering::Relaxed);
    stats.running.store(true, Ordering::Relaxed);
    tracing::info!(interface = %stats.name, filter = %filter, "capturing");
    let (mut kd, mut ifd) = (Wrapping::default(), Wrapping::default());
    let mut last_stats = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match cap.next_packet() {
            Ok(p) => {
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(p.data.len() as u64, Ordering::Relaxed);
                // nanoseconds (asked for), truncated to microseconds as for files
                let ts = Timestamp::from_secs_micros(p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64 / 1000);
                let n = p.data.len();
                if !queue.reserve(n) {
                    // the queue's bytes are at their ceiling (limits.queue_memory)
                    stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let input = Input::Frame {
                    ts,
                    linktype: dl.0,
                    data: p.data.to_vec(),
                };
                match tx.try_send(input) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        queue.release(n);
                        stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
            Err(pcap::Error::TimeoutExpired) => {}
            Err(e) => return Err(format!("capture failed: {e}")),
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = std::time::Instant::now();
            if let Ok(s) = cap.stats() {
                stats.kernel_dropped.fetch_add(kd.delta(s.dropped), Ordering::Relaxed);
                stats.if_dropped.fetch_add(ifd.delta(s.if_dropped), Ordering::Relaxed);
            }
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
            let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
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
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let ts = now();
                        if !guard.admit(from.ip(), ts) {
                            continue; // anyone could forge calls in HEP: only hep.allow is read
                        }
                        stats.packets.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if !queue.reserve(n) {
                            stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        match tx.try_send(Input::Hep {
                            ts,
                            data: buf[..n].to_vec(),
                        }) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                queue.release(n);
                                stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => {
                        *stats.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        std::thread::sleep(Duration::from_millis(200));
                    }
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
