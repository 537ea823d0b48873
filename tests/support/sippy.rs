//! A real B2BUA on loopback for the end-to-end B2BUA test: sippy (PyPI
//! package `sippy`, its `b2bua` program) between a sipp caller and a sipp
//! handset.
//!
//! The pieces, in the order `tests/b2bua_sippy.rs` uses them:
//! - [`find_b2bua`] / [`tools_or_skip`]: sippy's `b2bua` (installed by
//!   `scripts/setup-deps` into `target/venv-sippy`), sipp and a capture tool;
//! - [`PlannedCall`] / [`write_injection`]: the calls, as the injection file
//!   of `tests/sipp/b2bua-caller.xml`;
//! - [`B2bua`]: one sippy process routing every call to one handset, on a
//!   leg of its own with a new Call-ID;
//! - [`legs_by_token`]: the two sipp logs joined per call (the legs have
//!   different Call-IDs; a token carried in `X-Cbt-Call` links them);
//! - [`wire_messages`]: the SIP messages of a capture file, read without the
//!   engine, to see which Call-IDs went where;
//! - [`replay_calls`]: the capture through the engine with a site
//!   configuration, as `cbt-agent replay --output calls` does.
//!
//! Every child process is owned by a [`ChildGuard`] that kills it when
//! dropped.

use crate::sipp::{self, ChildGuard, Dir, LogEvent};
use cbt_proto::call::{CallRecord, CallStats};
use cbt_proto::Timestamp;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sippy version `scripts/setup-deps` installs (for messages).
pub const SIPPY_VERSION: &str = "2.5.0";

/// Where `scripts/setup-deps` puts sippy's virtualenv.
pub fn venv_dir() -> PathBuf {
    crate::workspace_root().join("target/venv-sippy")
}

/// sippy's full B2BUA program: `$CBT_SIPPY_B2BUA`, else the virtualenv of
/// `scripts/setup-deps`, else `b2bua` in `PATH`.
pub fn find_b2bua() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CBT_SIPPY_B2BUA") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("CBT_SIPPY_B2BUA={} is not a file", p.display()))
        };
    }
    let venv = venv_dir().join("bin/b2bua");
    if venv.is_file() {
        return Ok(venv);
    }
    sipp::find_program("b2bua").ok_or_else(|| {
        format!(
            "sippy's b2bua is not installed (looked for $CBT_SIPPY_B2BUA, {} and b2bua in PATH; \
             scripts/setup-deps installs sippy {SIPPY_VERSION} there)",
            venv.display()
        )
    })
}

#[derive(Clone, Debug)]
pub struct Tools {
    pub sipp: sipp::Tools,
    pub b2bua: PathBuf,
}

/// sipp, a capture tool and sippy, or `None` after printing `SKIP: ...`
/// when one is missing outside CI. Under CI a missing tool is a failure.
pub fn tools_or_skip(test: &str) -> Option<Tools> {
    let sipp = sipp::find_tools();
    let b2bua = find_b2bua();
    let missing: Vec<String> = [sipp.as_ref().err(), b2bua.as_ref().err()]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    match (sipp, b2bua) {
        (Ok(sipp), Ok(b2bua)) => Some(Tools { sipp, b2bua }),
        _ if crate::in_ci() => panic!("{test}: {}; CI must have them", missing.join("; ")),
        _ => {
            eprintln!("SKIP: {test}: {}", missing.join("; "));
            None
        }
    }
}

/// A TCP port free on `ip` right now (the system picks it).
pub fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    let l = TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a TCP socket on {ip}: {e}"));
    l.local_addr().expect("local address").port()
}

/// What the handset does with a call (`X-Cbt-Kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Rings, answers; the caller hangs up after talking.
    Answer,
    /// Rings; the caller gives up (CANCEL).
    Cancel,
    /// 486 Busy Here, no ringing.
    Busy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Answer => "answer",
            Kind::Cancel => "cancel",
            Kind::Busy => "busy",
        }
    }
}

/// One call of `b2bua-caller.xml` (see that file for the fields).
#[derive(Clone, Debug)]
pub struct PlannedCall {
    /// Names the call in both logs; letters, digits, `-` and `_`.
    pub token: &'static str,
    pub kind: Kind,
    pub caller: &'static str,
    pub callee: &'static str,
    /// Delay before the INVITE, after sipp started the call.
    pub start_ms: u32,
    /// Handset: INVITE to 180.
    pub ring_ms: u32,
    /// Handset: 180 to 200 (busy: INVITE to 486).
    pub answer_ms: u32,
    /// Caller: 200 to BYE (answer), 180 to CANCEL (cancel).
    pub caller_ms: u32,
}

/// Writes the injection file of `b2bua-caller.xml` (calls in order).
pub fn write_injection(path: &Path, calls: &[PlannedCall]) {
    let mut s = String::from(
        "SEQUENTIAL\n# kind;caller;callee;token;start_ms;ring_ms;answer_ms;caller_ms\n",
    );
    for c in calls {
        let _ = writeln!(
            s,
            "{};{};{};{};{};{};{};{}",
            c.kind.name(),
            c.caller,
            c.callee,
            c.token,
            c.start_ms,
            c.ring_ms,
            c.answer_ms,
            c.caller_ms
        );
    }
    std::fs::write(path, s).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// How sippy is to run.
#[derive(Clone, Debug)]
pub struct B2buaSpec {
    /// The SIP address it listens on (UDP).
    pub listen: SocketAddrV4,
    /// Where every call goes: `user@address` of the handset
    /// (the static route; the user becomes the outgoing Request-URI's).
    pub route_user: String,
    pub route: SocketAddrV4,
    /// The only address INVITEs are accepted from (the carrier).
    pub accept_from: Ipv4Addr,
    /// Header names copied from the incoming INVITE to the outgoing one.
    pub pass_headers: Vec<String>,
    /// Make the outgoing Call-ID a hash of the incoming one, not the incoming
    /// one with a suffix (`-H`).
    pub hide_call_id: bool,
    /// sippy's command socket (TCP, on loopback).
    pub command_port: u16,
}

/// A running sippy `b2bua`.
pub struct B2bua {
    pub proc: ChildGuard,
    pub spec: B2buaSpec,
    pub log: PathBuf,
}

impl B2bua {
    /// Starts sippy in the foreground, its log (every message it sent and
    /// received) in `dir/sippy.log`. No RADIUS: authentication and
    /// accounting off, the route static.
    pub fn start(program: &Path, spec: &B2buaSpec, dir: &Path) -> Result<B2bua, String> {
        let log = dir.join("sippy.log");
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(program);
        cmd.args([
            "-f",
            "-l",
            &spec.listen.ip().to_string(),
            "-p",
            &spec.listen.port().to_string(),
        ]);
        cmd.arg("-s")
            .arg(format!("{}@{}", spec.route_user, spec.route));
        // -u: no RADIUS authentication; -A 0: no accounting
        cmd.args(["-u", "-A", "0", "-a", &spec.accept_from.to_string()]);
        if spec.hide_call_id {
            cmd.arg("-H");
        }
        if !spec.pass_headers.is_empty() {
            // sippy compares header names in lower case
            cmd.arg("-h").arg(
                spec.pass_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        cmd.arg("-c")
            .arg(format!("tcp:{}:{}", spec.listen.ip(), spec.command_port));
        cmd.current_dir(dir)
            .env("PYTHONUNBUFFERED", "1")
            .env("SIPLOG_BEND", "stderr")
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Also gone if the test is killed before its guards run (a signal
        // does not unwind).
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        Ok(B2bua {
            proc: ChildGuard::new("sippy b2bua", child),
            spec: spec.clone(),
            log,
        })
    }

    /// The end of sippy's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let text = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "--- sippy log (end; all of it in {}) ---\n{tail}",
            self.log.display()
        )
    }

    /// Waits until sippy's SIP socket is bound (Python takes a second or so
    /// to start).
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if sipp::udp_bound(self.spec.listen) {
                return Ok(());
            }
            if let Some(st) = self.proc.try_wait() {
                return Err(format!(
                    "sippy exited ({st}) before listening\n{}",
                    self.diagnostics()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sippy is not listening on {} after {timeout:?}\n{}",
                    self.spec.listen,
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether sippy is still running (it never exits by itself).
    pub fn running(&mut self) -> bool {
        self.proc.try_wait().is_none()
    }
}

/// Both legs of one call as the two sipp logs tell them.
#[derive(Clone, Debug, Default)]
pub struct CallLegs {
    pub token: String,
    /// As the caller logged it.
    pub kind: String,
    /// The carrier leg's Call-ID (caller side) and the handset leg's.
    pub caller_call_id: Option<String>,
    pub handset_call_ids: Vec<String>,
    pub events: Vec<LogEvent>,
}

impl CallLegs {
    /// When `side` first sent or received `what`.
    pub fn at(&self, side: &str, dir: Dir, what: &str) -> Option<Timestamp> {
        self.events
            .iter()
            .filter(|e| e.side == side && e.dir == dir && e.what == what)
            .map(|e| e.at)
            .min()
    }
}

/// Joins log events by the token of their `KIND/TOKEN` field.
pub fn legs_by_token(events: &[LogEvent]) -> Result<BTreeMap<String, CallLegs>, String> {
    let mut out: BTreeMap<String, CallLegs> = BTreeMap::new();
    for e in events {
        let (kind, token) = e
            .kind
            .split_once('/')
            .filter(|(k, t)| !k.is_empty() && !t.is_empty())
            .ok_or_else(|| format!("log line of {} has no KIND/TOKEN: {:?}", e.call_id, e.kind))?;
        let c = out.entry(token.to_string()).or_insert_with(|| CallLegs {
            token: token.to_string(),
            ..CallLegs::default()
        });
        match e.side.as_str() {
            "caller" => {
                c.kind = kind.to_string();
                match &c.caller_call_id {
                    None => c.caller_call_id = Some(e.call_id.clone()),
                    Some(id) if *id == e.call_id => {}
                    Some(id) => {
                        return Err(format!(
                            "token {token}: two caller Call-IDs, {id} and {}",
                            e.call_id
                        ))
                    }
                }
            }
            "handset" => {
                if !c.handset_call_ids.contains(&e.call_id) {
                    c.handset_call_ids.push(e.call_id.clone());
                }
            }
            other => return Err(format!("unknown side {other:?} in the logs")),
        }
        c.events.push(e.clone());
    }
    Ok(out)
}

/// One SIP message found in a capture file.
#[derive(Clone, Debug)]
pub struct WireMsg {
    pub at: Timestamp,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The request or status line.
    pub first_line: String,
    pub call_id: Option<String>,
}

fn u16_be(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// The IPv4 packet of a frame, by link type (those the capture tools write
/// for `lo`, and a few others).
fn ipv4_of(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    let (off, proto) = match linktype {
        // Ethernet
        1 => (14, u16_be(frame, 12)? as u32),
        // BSD loopback: host-order address family
        0 => (
            4,
            if frame.get(..4)? == 2u32.to_ne_bytes() {
                0x0800
            } else {
                0
            },
        ),
        // Linux cooked v1 and v2
        113 => (16, u16_be(frame, 14)? as u32),
        276 => (20, u16_be(frame, 0)? as u32),
        // raw IP
        101 | 228 => (0, 0x0800),
        _ => return None,
    };
    (proto == 0x0800).then(|| frame.get(off..)).flatten()
}

/// Source, destination and payload of an unfragmented UDP datagram (fragments
/// are not expected on `lo`).
fn udp_of(ip: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, &[u8])> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 || u16_be(ip, 6)? & 0x3fff != 0 {
        return None;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = (u16_be(ip, 2)? as usize).min(ip.len());
    let udp = ip.get(ihl..total)?;
    let src = SocketAddrV4::new(
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        u16_be(udp, 0)?,
    );
    let dst = SocketAddrV4::new(
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        u16_be(udp, 2)?,
    );
    Some((src, dst, udp.get(8..)?))
}

/// The first value of a SIP header (long or compact name) in `text`.
fn header<'a>(text: &'a str, long: &str, compact: &str) -> Option<&'a str> {
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(compact) {
                return Some(value.trim());
            }
        }
    }
    None
}

/// The SIP messages (UDP over IPv4, unfragmented) of a classic pcap file,
/// read without the engine.
pub fn wire_messages(pcap: &Path) -> Result<Vec<WireMsg>, String> {
    let data = std::fs::read(pcap).map_err(|e| format!("{}: {e}", pcap.display()))?;
    let bad = |what: &str| format!("{}: {what}", pcap.display());
    let magic = data
        .get(..4)
        .ok_or_else(|| bad("shorter than a pcap header"))?;
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err(bad("not a classic pcap file")),
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(i..i + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let linktype = u32_at(20).ok_or_else(|| bad("truncated header"))? & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut pos = 24;
    while pos < data.len() {
        let (Some(sec), Some(frac), Some(incl)) = (u32_at(pos), u32_at(pos + 4), u32_at(pos + 8))
        else {
            return Err(bad("truncated record header"));
        };
        let start = pos + 16;
        let frame = data
            .get(start..start + incl as usize)
            .ok_or_else(|| bad("truncated record"))?;
        pos = start + incl as usize;
        let micros = if nanos { frac / 1000 } else { frac };
        let at = Timestamp::from_secs_micros(sec as i64, micros as i64);
        let Some((src, dst, payload)) = ipv4_of(linktype, frame).and_then(udp_of) else {
            continue;
        };
        let text = String::from_utf8_lossy(payload);
        let first_line = text.split("\r\n").next().unwrap_or("").to_string();
        let is_sip = first_line.starts_with("SIP/2.0 ") || first_line.ends_with(" SIP/2.0");
        if !is_sip {
            continue;
        }
        out.push(WireMsg {
            at,
            src,
            dst,
            call_id: header(&text, "Call-ID", "i").map(str::to_string),
            first_line,
        });
    }
    Ok(out)
}

/// What replaying a capture through the engine gave.
pub struct Replayed {
    /// Finished inbound calls in order of their start.
    pub calls: Vec<CallRecord>,
    pub stats: CallStats,
    pub errors: Vec<String>,
}

/// Replays capture files through the engine with the site configuration
/// in `config` (TOML, as `cbt-agent replay --config`), a fixed hashing key,
/// and returns the calls it found.
pub fn replay_calls(files: &[PathBuf], config: &Path) -> Result<Replayed, String> {
    use cbt_agent::book::CallBook;
    use cbt_agent::config::Config;
    use cbt_proto::number::Hasher;
    use cbt_proto::{Engine, EngineConfig, LinkType};
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let key = [7u8; 32];
    let site = cfg.site(&Hasher::new(key, &cfg.site.country_code));
    let mut engine = Engine::new(EngineConfig {
        hash_key: key,
        country_code: cfg.site.country_code.clone(),
        site: Some(site),
        emit_legs: false,
        ..EngineConfig::default()
    });
    let mut book = CallBook::default();
    let drain = |engine: &mut Engine, book: &mut CallBook| {
        while let Some(ev) = engine.poll_call() {
            book.apply(ev);
        }
    };
    let mut inputs = cbt_agent::capture::Merged::open(files);
    inputs.for_each(|p| {
        if let Some(l) = LinkType::from_linktype(p.linktype) {
            engine.ingest(p.ts, l, &p.data);
        }
        drain(&mut engine, &mut book);
    });
    engine.finish();
    drain(&mut engine, &mut book);
    let stats = engine.stats().calls.unwrap_or_default();
    Ok(Replayed {
        calls: book.records().into_iter().cloned().collect(),
        stats,
        errors: inputs.errors.iter().map(|e| e.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_headers_long_and_compact() {
        let m = "INVITE sip:1@h SIP/2.0\r\nVia: x\r\ni: abc@h\r\n\r\nCall-ID: body";
        assert_eq!(header(m, "Call-ID", "i"), Some("abc@h"));
        let m = "SIP/2.0 200 OK\r\ncall-id:  x1 \r\n\r\n";
        assert_eq!(header(m, "Call-ID", "i"), Some("x1"));
        assert_eq!(header("SIP/2.0 200 OK\r\n\r\n", "Call-ID", "i"), None);
    }

    #[test]
    fn joins_logs_by_token() {
        let ev = |side: &str, cid: &str, kind: &str, what: &str, us: i64| LogEvent {
            side: side.into(),
            call_id: cid.into(),
            kind: kind.into(),
            dir: Dir::Sent,
            what: what.into(),
            at: Timestamp(us),
        };
        let legs = legs_by_token(&[
            ev("caller", "a@1", "answer/c1", "INVITE", 1),
            ev("handset", "h1", "answer/c1", "200/INVITE", 5),
            ev("caller", "b@1", "busy/c2", "INVITE", 2),
        ])
        .unwrap();
        assert_eq!(legs.len(), 2);
        assert_eq!(legs["c1"].caller_call_id.as_deref(), Some("a@1"));
        assert_eq!(legs["c1"].handset_call_ids, vec!["h1".to_string()]);
        assert_eq!(
            legs["c1"].at("handset", Dir::Sent, "200/INVITE"),
            Some(Timestamp(5))
        );
        assert_eq!(legs["c2"].kind, "busy");
        assert!(legs_by_token(&[ev("caller", "a@1", "answer", "INVITE", 1)]).is_err());
    }
}
