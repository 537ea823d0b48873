//! Live capture: one OS thread per interface (libpcap through the `pcap`
//! crate, immediate mode, short read timeout) and one for the HEP listener,
//! all feeding the engine's bounded queue. A full queue drops the packet and
//! counts it: capture never blocks on the engine.

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

fn open(iface: &str, cfg: &AgentConfig) -> Result<pcap::Capture<pcap::Active>, String> {
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
pub fn spawn(iface: String, cfg: AgentConfig, tx: SyncSender<Input>, stats: Arc<SourceStats>, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name(format!("capture-{iface}"))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match open(&iface, &cfg) {
                    Ok(cap) => {
                        if let Err(e) = run(cap, &cfg, &tx, &stats, &stop) {
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
                let input = Input::Frame {
                    ts,
                    linktype: dl.0,
                    data: p.data.to_vec(),
                };
                match tx.try_send(input) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
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

/// Receives HEPv3 on UDP.
pub fn spawn_hep(socket: UdpSocket, tx: SyncSender<Input>, stats: Arc<SourceStats>, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("hep".into())
        .spawn(move || {
            let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
            stats.running.store(true, Ordering::Relaxed);
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        stats.packets.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        match tx.try_send(Input::Hep {
                            ts: now(),
                            data: buf[..n].to_vec(),
                        }) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
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
    use super::Wrapping;

    #[test]
    fn u32_counters_wrap() {
        let mut w = Wrapping::default();
        assert_eq!(w.delta(10), 10);
        assert_eq!(w.delta(15), 5);
        assert_eq!(w.delta(u32::MAX - 1), (u32::MAX - 16) as u64);
        assert_eq!(w.delta(3), 5, "wrapped past u32::MAX");
    }
}
