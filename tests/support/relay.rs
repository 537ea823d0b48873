//! A misbehaving network between an agent and its collector, for the
//! upload fault tests: a TCP relay on loopback that forwards to a target
//! (transparently, or as an HTTP CONNECT proxy, the way `upload.proxy`
//! reaches the collector), and on demand resets connections part-way
//! through the request, delays responses, or refuses connections.
//!
//! It sees only TLS bytes: "part-way through the request" means after a
//! number of bytes from the client, past the handshake and into the body.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does to the next connections.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Reset each connection once the client has sent this many bytes.
    pub reset_after_client_bytes: Option<u64>,
    /// Only every n-th connection is reset (0 or 1: every one).
    pub reset_every: u64,
    /// Hold every chunk from the server this long before passing it on...
    pub delay_response: Duration,
    /// ...once the client has sent this many bytes (past the TLS handshake:
    /// answers arrive late, but the requests got through).
    pub delay_after_client_bytes: u64,
    /// Accept and close at once.
    pub refuse: bool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub tunnels: AtomicU64,
}

pub struct Relay {
    pub addr: SocketAddr,
    pub faults: Arc<Mutex<Faults>>,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// Open client connections (closed when the faults change, so that a
    /// client's pooled connection does not outlive the old settings).
    live: Arc<Mutex<Vec<TcpStream>>>,
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Both);
}

impl Relay {
    /// Listens on a free port of 127.0.0.1, forwarding to `target` (or, for
    /// a CONNECT request, to the loopback address it names).
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (f, c, s, l) = (faults.clone(), counters.clone(), stop.clone(), live.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(k) = client.try_clone() {
                            l.lock().unwrap().push(k);
                        }
                        let n = c.connections.fetch_add(1, Ordering::Relaxed) + 1;
                        let faults = f.lock().unwrap().clone();
                        let c = c.clone();
                        std::thread::spawn(move || serve(client, target, faults, n, c));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => return,
                }
            }
        });
        Relay { addr, faults, counters, stop, live }
    }

    /// New faults, for new connections; open ones are closed (a client
    /// reconnects, and gets the new behaviour).
    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(client: TcpStream, target: SocketAddr, faults: Faults, n: u64, counters: Arc<Counters>) {
    if faults.refuse {
        reset(&client);
        return;
    }
    let mut client = client;
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    // an HTTP CONNECT proxy, or a transparent relay
    let mut first = [0u8; 8];
    let Ok(k) = client.peek(&mut first) else { return };
    let mut to = target;
    if &first[..k] == b"CONNECT " {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match client.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
        let Some(dest) = line.split_whitespace().nth(1).and_then(|h| h.parse::<SocketAddr>().ok()) else {
            let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            return;
        };
        // loopback only: tests never send anywhere else
        assert!(dest.ip().is_loopback(), "CONNECT to {dest}: the test relay only reaches loopback");
        to = dest;
        counters.tunnels.fetch_add(1, Ordering::Relaxed);
        if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        reset(&client);
        return;
    };
    let reset_this = faults.reset_after_client_bytes.filter(|_| faults.reset_every <= 1 || n % faults.reset_every == 0);
    let client_bytes = Arc::new(AtomicU64::new(0));
    let up_bytes = client_bytes.clone();
    let (mut c_read, mut s_write) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let (mut s_read, mut c_write) = (server, client);
    let up = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut sent = 0u64;
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(limit) = reset_this {
                if sent + n as u64 > limit {
                    let part = (limit - sent) as usize;
                    let _ = s_write.write_all(&buf[..part]);
                    counters.resets.fetch_add(1, Ordering::Relaxed);
                    reset(&c_read);
                    reset(&s_write);
                    return;
                }
            }
            sent += n as u64;
            up_bytes.store(sent, Ordering::Relaxed);
            if s_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 4096];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !faults.delay_response.is_zero() && client_bytes.load(Ordering::Relaxed) > faults.delay_after_client_bytes {
            std::thread::sleep(faults.delay_response);
        }
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
}
