//! Running sipp and capturing loopback traffic for the live tests.
//!
//! The pieces, in the order a test uses them:
//! - [`find_tools`] / [`tools_or_skip`]: the `sipp` binary and a capture
//!   tool (`dumpcap`, else `tcpdump`);
//! - [`Capture`]: a capture on `lo` limited to given UDP endpoints, written as a
//!   pcap file. It starts with a round trip of a marker datagram (so traffic
//!   is only sent once the capture is really running) and stops with another
//!   (so every packet sent before the stop is in the file: libpcap hands
//!   packets over in blocks, and a capture stopped too early loses the last
//!   block);
//! - [`Sipp`]: one sipp process with a scenario of `tests/sipp`;
//! - [`parse_log`] / [`calls`]: what the scenarios' `<log>` actions wrote.
//!
//! Every child process is owned by a guard that kills it when dropped, so a
//! failed assertion does not leave sipp or the capture running.

use cbt_proto::Timestamp;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the sipp scenarios and the injection file.
pub fn scenario_dir() -> PathBuf {
    crate::workspace_root().join("tests/sipp")
}

/// Looks a program up in `PATH`, then in the sbin directories (which are
/// often missing from the `PATH` of ordinary users, and hold tcpdump).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A program that writes pcap files from a live interface.
#[derive(Clone, Debug)]
pub enum CaptureTool {
    Dumpcap(PathBuf),
    Tcpdump(PathBuf),
}

impl CaptureTool {
    pub fn name(&self) -> &'static str {
        match self {
            CaptureTool::Dumpcap(_) => "dumpcap",
            CaptureTool::Tcpdump(_) => "tcpdump",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tools {
    pub sipp: PathBuf,
    pub capture: CaptureTool,
}

/// sipp and a capture tool. `CBT_CAPTURE_TOOL=tcpdump` (or `dumpcap`) picks
/// one; otherwise dumpcap is preferred. `Err` names what is missing.
pub fn find_tools() -> Result<Tools, String> {
    let sipp = find_program("sipp");
    let wanted = std::env::var("CBT_CAPTURE_TOOL").unwrap_or_default();
    let capture = match wanted.as_str() {
        "dumpcap" => find_program("dumpcap").map(CaptureTool::Dumpcap),
        "tcpdump" => find_program("tcpdump").map(CaptureTool::Tcpdump),
        "" => find_program("dumpcap")
            .map(CaptureTool::Dumpcap)
            .or_else(|| find_program("tcpdump").map(CaptureTool::Tcpdump)),
        other => panic!("CBT_CAPTURE_TOOL={other}: expected dumpcap or tcpdump"),
    };
    let mut missing = Vec::new();
    if sipp.is_none() {
        missing.push("sipp (Debian package sip-tester)".to_string());
    }
    if capture.is_none() {
        missing.push(match wanted.as_str() {
            "" => "dumpcap or tcpdump (Debian packages wireshark-common, tcpdump)".to_string(),
            w => w.to_string(),
        });
    }
    match (sipp, capture) {
        (Some(sipp), Some(capture)) => Ok(Tools { sipp, capture }),
        _ => Err(format!(
            "not installed: {} (scripts/setup-deps installs them)",
            missing.join(", ")
        )),
    }
}

/// The tools, or `None` after printing `SKIP: ...` when they are missing
/// outside CI. Under CI a missing tool is a failure.
pub fn tools_or_skip(test: &str) -> Option<Tools> {
    match find_tools() {
        Ok(t) => Some(t),
        Err(e) if crate::in_ci() => panic!("{test}: {e}; CI must have them"),
        Err(e) => {
            eprintln!("SKIP: {test}: {e}");
            None
        }
    }
}

/// A UDP port free on `ip` right now (the system picks it).
pub fn free_udp_port(ip: Ipv4Addr) -> u16 {
    let s = UdpSocket::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a UDP socket on {ip}: {e}"));
    s.local_addr().expect("local address").port()
}

/// A child process killed (and reaped) when dropped unless it already
/// exited.
pub struct ChildGuard {
    pub name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        ChildGuard {
            name: name.into(),
            child,
            status: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not exit within {:?}", self.name, timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (SIGINT, SIGTERM...) to a running process.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<(), String> {
        if self.try_wait().is_some() {
            return Err(format!("{} has already exited", self.name));
        }
        let pid = self.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of our own unreaped child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!(
                "cannot signal {}: {}",
                self.name,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A running capture on one interface, into a pcap file.
pub struct Capture {
    proc: ChildGuard,
    tool: &'static str,
    pub file: PathBuf,
    stderr_file: PathBuf,
    marker: UdpSocket,
    marker_seq: u32,
    /// Marker datagrams sent (each may or may not be in the file).
    pub markers_sent: u32,
}

/// Why a capture could not start.
#[derive(Debug)]
pub enum CaptureError {
    /// The tool is not allowed to capture (not root, no capabilities).
    Permission(String),
    Other(String),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::Permission(m) | CaptureError::Other(m) => f.write_str(m),
        }
    }
}

impl Capture {
    /// Starts capturing UDP on `iface` to or from `endpoints` (and a
    /// marker socket of ours on 127.0.0.1) into `file`, and returns once a
    /// marker datagram has made it into the file.
    pub fn start(
        tool: &CaptureTool,
        iface: &str,
        endpoints: &[SocketAddrV4],
        file: &Path,
    ) -> Result<Capture, CaptureError> {
        let marker = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| CaptureError::Other(format!("cannot bind the marker socket: {e}")))?;
        let marker_addr = match marker.local_addr().expect("local address") {
            std::net::SocketAddr::V4(a) => a,
            other => unreachable!("{other} bound on 127.0.0.1"),
        };
        let filter = format!(
            "udp and ({})",
            endpoints
                .iter()
                .chain([&marker_addr])
                .map(|a| format!("(host {} and port {})", a.ip(), a.port()))
                .collect::<Vec<_>>()
                .join(" or ")
        );
        let _ = std::fs::remove_file(file);
        let stderr_file = file.with_extension("stderr");
        let stderr = File::create(&stderr_file).map_err(|e| CaptureError::Other(e.to_string()))?;
        let mut cmd = match tool {
            CaptureTool::Dumpcap(p) => {
                let mut c = Command::new(p);
                // -P: pcap, not pcapng; -q: no packet counts on stderr
                c.args(["-i", iface, "-P", "-q", "-f", &filter, "-w"])
                    .arg(file);
                c
            }
            CaptureTool::Tcpdump(p) => {
                let mut c = Command::new(p);
                // -U: write each packet at once; --immediate-mode: no kernel
                // batching; -Z root: stay root (when root) so the file is
                // writable wherever it is
                c.args([
                    "-i",
                    iface,
                    "-n",
                    "-U",
                    "--immediate-mode",
                    "-Z",
                    "root",
                    "-w",
                ])
                .arg(file)
                .arg(&filter);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        crate::die_with_test(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| CaptureError::Other(format!("cannot run {}: {e}", tool.name())))?;
        let mut cap = Capture {
            proc: ChildGuard::new(tool.name(), child),
            tool: tool.name(),
            file: file.to_path_buf(),
            stderr_file,
            marker,
            marker_seq: 0,
            markers_sent: 0,
        };
        // The tools report on stderr once the filter is set and the file open.
        let ready = match tool {
            CaptureTool::Dumpcap(_) => "File:",
            CaptureTool::Tcpdump(_) => "listening on",
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let err = read_lossy(&cap.stderr_file);
            if err.contains(ready) {
                break;
            }
            if let Some(st) = cap.proc.try_wait() {
                let msg = format!(
                    "{} exited ({st}) before capturing: {}",
                    cap.tool,
                    err.trim()
                );
                let lower = err.to_lowercase();
                return Err(
                    if lower.contains("permission")
                        || lower.contains("not permitted")
                        || lower.contains("capabilit")
                    {
                        CaptureError::Permission(msg)
                    } else {
                        CaptureError::Other(msg)
                    },
                );
            }
            if Instant::now() >= deadline {
                return Err(CaptureError::Other(format!(
                    "{} did not start capturing within 20 s: {}",
                    cap.tool,
                    err.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cap.barrier(Duration::from_secs(20))
            .map_err(CaptureError::Other)?;
        Ok(cap)
    }

    /// Sends marker datagrams until one shows up in the file: then every
    /// packet sent before this call is in the file too (the kernel queues
    /// packets to the capture in order).
    fn barrier(&mut self, timeout: Duration) -> Result<(), String> {
        self.marker_seq += 1;
        let payload = format!(
            "cbt-capture-marker {} {}",
            std::process::id(),
            self.marker_seq
        );
        let to = self.marker.local_addr().expect("local address");
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        loop {
            if Instant::now() >= next_send {
                self.marker
                    .send_to(payload.as_bytes(), to)
                    .map_err(|e| format!("cannot send a capture marker: {e}"))?;
                self.markers_sent += 1;
                next_send = Instant::now() + Duration::from_millis(250);
            }
            std::thread::sleep(Duration::from_millis(10));
            if let Ok(bytes) = std::fs::read(&self.file) {
                if bytes
                    .windows(payload.len())
                    .any(|w| w == payload.as_bytes())
                {
                    return Ok(());
                }
            }
            if let Some(st) = self.proc.try_wait() {
                return Err(format!(
                    "{} exited ({st}): {}",
                    self.tool,
                    read_lossy(&self.stderr_file).trim()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: the capture marker did not reach {} within {:?}",
                    self.tool,
                    self.file.display(),
                    timeout
                ));
            }
        }
    }

    /// Waits until everything sent so far is in the file, then stops the
    /// tool with SIGINT (it closes the file properly) and waits for it.
    /// Returns how many marker datagrams were sent in all (the file holds
    /// at least two of them, at most that many).
    pub fn stop(mut self) -> Result<u32, String> {
        self.barrier(Duration::from_secs(20))?;
        self.proc.signal(libc::SIGINT)?;
        let st = self.proc.wait_timeout(Duration::from_secs(10))?;
        // dumpcap and tcpdump exit 0 after SIGINT
        if !st.success() {
            return Err(format!(
                "{} exited with {st}: {}",
                self.tool,
                read_lossy(&self.stderr_file).trim()
            ));
        }
        Ok(self.markers_sent)
    }
}

/// What a sipp process is to do.
#[derive(Clone, Debug)]
pub struct SippSpec {
    /// Used for the names of its files in the work directory.
    pub name: String,
    /// A file of [`scenario_dir`].
    pub scenario: String,
    pub local: SocketAddrV4,
    /// The UAS to call (UAC only).
    pub remote: Option<SocketAddrV4>,
    /// Calls to make or answer before exiting (`-m`).
    pub calls: usize,
    /// Calls per second (UAC only).
    pub rate: u32,
    /// Injection file (`-inf`), UAC only.
    pub inf: Option<PathBuf>,
    /// sipp gives up after this long (`-timeout`, as a failure).
    pub timeout: Duration,
}

/// A running sipp.
pub struct Sipp {
    pub proc: ChildGuard,
    pub spec: SippSpec,
    pub dir: PathBuf,
}

impl Sipp {
    /// Starts sipp in `dir`, with its `<log>` output in `NAME.log`, messages
    /// in `NAME.messages`, errors in `NAME.errors` and its screen in
    /// `NAME.out`.
    pub fn start(sipp: &Path, spec: &SippSpec, dir: &Path) -> Result<Sipp, String> {
        Self::start_with(sipp, spec, dir, &[])
    }

    /// [`Sipp::start`] with more command-line arguments for sipp, such as
    /// `-set me h1` (a global variable of the scenario).
    pub fn start_with(
        sipp: &Path,
        spec: &SippSpec,
        dir: &Path,
        extra: &[String],
    ) -> Result<Sipp, String> {
        let f = |ext: &str| dir.join(format!("{}.{ext}", spec.name));
        let mut cmd = Command::new(sipp);
        cmd.args(extra);
        if let Some(r) = spec.remote {
            cmd.arg(r.to_string());
        }
        cmd.arg("-sf").arg(scenario_dir().join(&spec.scenario));
        cmd.args([
            "-i",
            &spec.local.ip().to_string(),
            "-p",
            &spec.local.port().to_string(),
        ]);
        cmd.args(["-bind_local", "-t", "u1", "-nostdin"]);
        cmd.args(["-m", &spec.calls.to_string()]);
        if spec.remote.is_some() {
            cmd.args(["-r", &spec.rate.to_string(), "-l", &spec.calls.to_string()]);
        }
        if let Some(inf) = &spec.inf {
            cmd.arg("-inf").arg(inf);
        }
        cmd.args([
            "-timeout",
            &format!("{}s", spec.timeout.as_secs().max(1)),
            "-timeout_error",
        ]);
        cmd.arg("-trace_logs").arg("-log_file").arg(f("log"));
        cmd.arg("-trace_msg")
            .arg("-message_file")
            .arg(f("messages"));
        cmd.arg("-trace_err").arg("-error_file").arg(f("errors"));
        let out = File::create(f("out")).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.current_dir(dir)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        crate::die_with_test(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", sipp.display()))?;
        Ok(Sipp {
            proc: ChildGuard::new(format!("sipp {}", spec.name), child),
            spec: spec.clone(),
            dir: dir.to_path_buf(),
        })
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.spec.name))
    }

    /// sipp's screen and error log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let f = |ext: &str| read_lossy(&self.dir.join(format!("{}.{ext}", self.spec.name)));
        let errors = f("errors");
        let out = f("out");
        let tail: String = out
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "--- {} errors ---\n{}\n--- {} screen (end) ---\n{}",
            self.spec.name,
            errors.trim(),
            self.spec.name,
            tail
        )
    }

    /// The cumulative "Successful call" and "Failed call" counts of the
    /// last statistics screen sipp wrote (at exit), if any. sipp stopped by
    /// a signal exits 0 when no call failed, however many were still up:
    /// these tell a finished run from an interrupted one.
    pub fn call_counts(&self) -> Option<(u64, u64)> {
        let out = read_lossy(&self.dir.join(format!("{}.out", self.spec.name)));
        let last = |label: &str| -> Option<u64> {
            out.lines()
                .rev()
                .find(|l| l.trim_start().starts_with(label))?
                .split('|')
                .nth(2)?
                .trim()
                .parse()
                .ok()
        };
        Some((last("Successful call")?, last("Failed call")?))
    }

    /// Waits until the UDP socket is bound (a UAS is ready for calls).
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if udp_bound(self.spec.local) {
                return Ok(());
            }
            if let Some(st) = self.proc.try_wait() {
                return Err(format!(
                    "{} exited ({st}) before listening\n{}",
                    self.proc.name,
                    self.diagnostics()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} is not listening on {} after {:?}",
                    self.proc.name, self.spec.local, timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for sipp to finish; `Err` (with sipp's errors) unless it
    /// exited 0 (every call went as scripted).
    pub fn wait_success(&mut self, timeout: Duration) -> Result<(), String> {
        let st = self
            .proc
            .wait_timeout(timeout)
            .map_err(|e| format!("{e}\n{}", self.diagnostics()))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!(
                "{} exited with {st}\n{}",
                self.proc.name,
                self.diagnostics()
            ))
        }
    }
}

/// Whether a UDP socket is bound to `addr` (Linux `/proc/net/udp`).
pub fn udp_bound(addr: SocketAddrV4) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return false;
    };
    let o = addr.ip().octets();
    // the address is a u32 printed in host byte order
    let le = format!(
        "{:02X}{:02X}{:02X}{:02X}:{:04X}",
        o[3],
        o[2],
        o[1],
        o[0],
        addr.port()
    );
    let be = format!(
        "{:02X}{:02X}{:02X}{:02X}:{:04X}",
        o[0],
        o[1],
        o[2],
        o[3],
        addr.port()
    );
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local == le || local == be)
}

/// Sent or received, from the logging side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    Sent,
    Recv,
}

/// One line written by a scenario's `<log>` action:
/// `cbt;SIDE;CALL-ID;KIND;sent|recv;WHAT;TIMESTAMP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// `uac` or `uas`.
    pub side: String,
    pub call_id: String,
    pub kind: String,
    pub dir: Dir,
    /// A request method (`INVITE`), or a response code and the method it
    /// answers (`180/INVITE`).
    pub what: String,
    pub at: Timestamp,
}

/// sipp's `[timestamp]`: `date<TAB>time<TAB>secs.micros` (local time and
/// Unix time), or RFC 3339 with `-rfc3339` (sipp 3.7).
pub fn parse_sipp_timestamp(s: &str) -> Option<Timestamp> {
    let last = s.trim().rsplit(['\t', ' ']).next()?;
    if let Some((secs, frac)) = last.split_once('.') {
        if frac.len() == 6
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Some(Timestamp::from_secs_micros(
                secs.parse().ok()?,
                frac.parse().ok()?,
            ));
        }
    }
    Timestamp::parse_rfc3339(last)
}

/// Reads the `<log>` output of a scenario. Lines not starting with `cbt;`
/// are ignored; malformed `cbt;` lines are errors.
pub fn parse_log(path: &Path) -> Result<Vec<LogEvent>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if !line.starts_with("cbt;") {
            continue;
        }
        let bad = || format!("{}:{}: cannot read {line:?}", path.display(), n + 1);
        let f: Vec<&str> = line.splitn(7, ';').collect();
        if f.len() != 7 {
            return Err(bad());
        }
        let dir = match f[4] {
            "sent" => Dir::Sent,
            "recv" => Dir::Recv,
            _ => return Err(bad()),
        };
        out.push(LogEvent {
            side: f[1].to_string(),
            call_id: f[2].to_string(),
            kind: f[3].to_string(),
            dir,
            what: f[5].to_string(),
            at: parse_sipp_timestamp(f[6]).ok_or_else(bad)?,
        });
    }
    Ok(out)
}

/// Everything logged about one call, by both sides.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    pub call_id: String,
    /// As the UAC logged it.
    pub kind: String,
    pub events: Vec<LogEvent>,
}

impl CallLog {
    /// When `side` first sent or received `what` (first transmissions only:
    /// sipp runs no actions for retransmissions).
    pub fn at(&self, side: &str, dir: Dir, what: &str) -> Option<Timestamp> {
        self.events
            .iter()
            .filter(|e| e.side == side && e.dir == dir && e.what == what)
            .map(|e| e.at)
            .min()
    }

    /// What `side` logged last before `t`: sipp is single-threaded, so a
    /// message it sends after that line is on the wire after that time.
    pub fn last_before(&self, side: &str, t: Timestamp) -> Option<&LogEvent> {
        self.events
            .iter()
            .filter(|e| e.side == side && e.at < t)
            .max_by_key(|e| e.at)
    }
}

/// Groups log events by Call-ID. The kind is the UAC's.
pub fn calls(events: &[LogEvent]) -> BTreeMap<String, CallLog> {
    let mut out: BTreeMap<String, CallLog> = BTreeMap::new();
    for e in events {
        let c = out.entry(e.call_id.clone()).or_insert_with(|| CallLog {
            call_id: e.call_id.clone(),
            ..CallLog::default()
        });
        if e.side == "uac" || c.kind.is_empty() {
            c.kind = e.kind.clone();
        }
        c.events.push(e.clone());
    }
    out
}

/// Number of calls in a sipp injection file (lines after the first that
/// are neither empty nor comments).
pub fn injection_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count()
}

/// The mixed traffic of `tests/sipp`: a UAS on `uas`, a UAC on `uac`
/// placing the calls of `calls.csv`, captured on `lo`.
pub struct Traffic {
    pub dir: PathBuf,
    pub uac: SocketAddrV4,
    pub uas: SocketAddrV4,
    pub calls: usize,
    pub rate: u32,
}

/// What running [`Traffic`] left behind.
pub struct TrafficRun {
    pub pcap: PathBuf,
    pub uac_log: PathBuf,
    pub uas_log: PathBuf,
    pub markers_sent: u32,
}

impl Traffic {
    /// Runs it. `Err(CaptureError::Permission)` when capturing is not
    /// allowed; any other failure is `CaptureError::Other` with details.
    pub fn run(&self, tools: &Tools) -> Result<TrafficRun, CaptureError> {
        let other = CaptureError::Other;
        let inf = scenario_dir().join("calls.csv");
        let pcap = self.dir.join("capture.pcap");
        let cap = Capture::start(&tools.capture, "lo", &[self.uac, self.uas], &pcap)?;
        // generous: the calls take a few seconds
        let timeout = Duration::from_secs(60);
        let mut uas = Sipp::start(
            &tools.sipp,
            &SippSpec {
                name: "uas".into(),
                scenario: "uas.xml".into(),
                local: self.uas,
                remote: None,
                calls: self.calls,
                rate: 0,
                inf: None,
                timeout,
            },
            &self.dir,
        )
        .map_err(other)?;
        uas.wait_listening(Duration::from_secs(10)).map_err(other)?;
        let mut uac = Sipp::start(
            &tools.sipp,
            &SippSpec {
                name: "uac".into(),
                scenario: "uac.xml".into(),
                local: self.uac,
                remote: Some(self.uas),
                calls: self.calls,
                rate: self.rate,
                inf: Some(inf),
                timeout,
            },
            &self.dir,
        )
        .map_err(other)?;
        uac.wait_success(timeout + Duration::from_secs(5))
            .map_err(other)?;
        uas.wait_success(Duration::from_secs(15)).map_err(other)?;
        let markers_sent = cap.stop().map_err(other)?;
        Ok(TrafficRun {
            pcap,
            uac_log: uac.log_file(),
            uas_log: uas.log_file(),
            markers_sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sipp_timestamps() {
        let t = Timestamp::from_secs_micros(1_795_270_745, 973_743);
        assert_eq!(
            parse_sipp_timestamp("2026-11-21\t14:19:05.973743\t1795270745.973743"),
            Some(t)
        );
        assert_eq!(parse_sipp_timestamp("2026-11-21T14:19:05.973743Z"), Some(t));
        assert_eq!(parse_sipp_timestamp("2026-11-21\t14:19:05"), None);
    }

    #[test]
    fn reads_log_lines() {
        let dir = std::env::temp_dir().join(format!("cbt-sipp-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("uas.log");
        std::fs::write(
            &f,
            "cbt;uas;1-2@127.0.0.2;cancel;sent;487/INVITE;2026-11-21\t14:19:06.593387\t1795270746.593387\n\
             something else\n",
        )
        .unwrap();
        let ev = parse_log(&f).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].side.as_str(), ev[0].dir, ev[0].what.as_str()),
            ("uas", Dir::Sent, "487/INVITE")
        );
        assert_eq!(
            ev[0].at,
            Timestamp::from_secs_micros(1_795_270_746, 593_387)
        );
        let calls = calls(&ev);
        assert_eq!(calls["1-2@127.0.0.2"].kind, "cancel");
    }
}
