//! Real SIP phones: baresip (1.0.x, Debian package `baresip-core`) run
//! headless on a loopback address and driven over its `ctrl_tcp` socket.
//!
//! A [`Phone`] is one baresip process with one account, its own generated
//! configuration directory (`DIR/NAME/config`, `accounts`) and its log
//! (`DIR/NAME.log`, with a SIP trace). The test tells it what to do
//! ([`Phone::dial`], [`Phone::accept`], [`Phone::hangup`], [`Phone::hold`],
//! [`Phone::resume`], [`Phone::transfer`]) and reads back what it did:
//! every `ctrl_tcp` event (`CALL_INCOMING`, `CALL_RINGING`,
//! `CALL_ESTABLISHED`, `CALL_CLOSED`, `TRANSFER`...) and every command's
//! response, each stamped with the time it was read ([`PhoneEvent`], also
//! written as it comes to `DIR/NAME.events.txt`).
//!
//! Those times come from the same clock as the capture's, and each trails
//! the packet it is about: baresip sends (or has received) the SIP message
//! before it writes the event or the command's response to the socket,
//! and the test reads it a little later still. So a time taken here is an
//! upper bound of its packet's time, as a sipp log line is (see
//! `cbt_tests::kamailio::LAG_US`):
//!
//! - `dial`'s response: after the INVITE was sent;
//! - `CALL_INCOMING` (callee): after the INVITE arrived and the 180 was
//!   sent (manual answer mode);
//! - `accept`'s response: after the 200 OK was sent;
//! - `hangup`'s response: after the BYE (or CANCEL, while ringing) was
//!   sent;
//! - `CALL_CLOSED`: after the BYE or CANCEL arrived (or was sent).
//!
//! baresip stops a call's audio (joining its source and player threads)
//! before it reports `CALL_CLOSED` and answers `hangup`, and starts it
//! before it answers `accept`: those reports can trail their packet by a
//! few tens of milliseconds even on an idle machine (seen: 27 ms for a
//! `hangup` answered after the CANCEL). The other party's report of the
//! same message (`CALL_CLOSED`, `CALL_ESTABLISHED`) is then often the
//! tighter bound: take the earliest of both.
//!
//! Media: no sound card. The source is `ausine` (a tone, so RTP flows),
//! the player `aubridge` (a null sink); SDP offers the phone's own
//! loopback address (`net_interface`), so RTP stays on 127.0.0.0/8 too.
//! baresip is started with `PR_SET_PDEATHSIG` ([`crate::die_with_test`])
//! and killed when the [`Phone`] is dropped.

use crate::sipp::{self, ChildGuard};
use cbt_proto::Timestamp;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cbt_agent::daemon::capture::now;

/// The baresip binary, if installed.
pub fn find_baresip() -> Option<PathBuf> {
    sipp::find_program("baresip")
}

/// The modules a [`Phone`] loads (all in `baresip-core`).
pub const MODULES: [&str; 6] = [
    "g711.so",
    "ausine.so",
    "aubridge.so",
    "account.so",
    "menu.so",
    "ctrl_tcp.so",
];

/// baresip's module directory, if it holds every module of [`MODULES`].
pub fn module_dir() -> Option<PathBuf> {
    [
        "/usr/lib/baresip/modules",
        "/usr/lib/x86_64-linux-gnu/baresip/modules",
        "/usr/local/lib/baresip/modules",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| MODULES.iter().all(|m| d.join(m).exists()))
}

/// The baresip binary and its module directory; `None` after printing
/// `SKIP: ...` when missing outside CI. Under CI missing is a failure.
pub fn baresip_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (find_baresip(), module_dir()) {
        (Some(b), Some(m)) => Some((b, m)),
        _ => {
            let msg = format!(
                "not installed: baresip with the modules {} (Debian package baresip-core; scripts/setup-deps installs it)",
                MODULES.join(", ")
            );
            if crate::in_ci() {
                panic!("{test}: {msg}; CI must have it");
            }
            eprintln!("SKIP: {test}: {msg}");
            None
        }
    }
}

/// One phone: who it is and where.
#[derive(Clone, Debug)]
pub struct PhoneSpec {
    /// Names its files in the work directory (`h1`, `caller`...).
    pub name: String,
    /// Where it listens for SIP (UDP).
    pub sip: SocketAddrV4,
    /// The account line's address: what goes in From, e.g.
    /// `<sip:211@127.0.0.10:5070>` or
    /// `"Anonymous" <sip:anonymous@anonymous.invalid>`.
    pub aor: String,
    /// Registers every `regint` seconds to the account's domain (a
    /// handset registering to the PBX); `None`: never registers.
    pub register_every_s: Option<u32>,
}

/// Something the phone reported: a `ctrl_tcp` event, or the response to
/// one of our commands (`kind` = `response:COMMAND`).
#[derive(Clone, Debug)]
pub struct PhoneEvent {
    /// When the test read it (see the module documentation).
    pub at: Timestamp,
    /// `CALL_INCOMING`, `CALL_ESTABLISHED`... or `response:accept`...
    pub kind: String,
    /// The SIP Call-ID of the call (events about a call only).
    pub call_id: String,
    /// The other party's URI.
    pub peer: String,
    /// The event's parameter (a URI, the reason a call closed...).
    pub param: String,
    /// The line as received.
    pub raw: String,
}

#[derive(Default)]
struct Inbox {
    events: Vec<PhoneEvent>,
    responses: VecDeque<PhoneEvent>,
    closed: bool,
}

/// A running baresip driven over `ctrl_tcp`. Killed when dropped.
pub struct Phone {
    pub spec: PhoneSpec,
    proc: ChildGuard,
    ctrl: TcpStream,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    token: u64,
    /// Its log (stdout and stderr, with the SIP trace).
    pub log: PathBuf,
    /// Every event, one line each, as read.
    pub events_file: PathBuf,
}

/// The nice value asked for baresip and for the thread that reads its
/// events, as for Kamailio and sipp in `kamailio_e2e`: on a busy machine
/// a phone's event otherwise waits for a CPU and trails its packet by tens
/// of milliseconds (seen: 57 ms, at nice 10 under a load of 3 on 2 cores).
/// Only root may raise a priority; otherwise they run at the normal one.
const PRIORITY: libc::c_int = -10;

/// A TCP port free on `ip` right now.
fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    let l = TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a TCP socket on {ip}: {e}"));
    l.local_addr().expect("local address").port()
}

fn netstring(json: &str) -> Vec<u8> {
    format!("{}:{json},", json.len()).into_bytes()
}

fn json_str(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

impl Phone {
    /// Writes the phone's configuration into `dir/NAME/`, starts baresip
    /// (`bin`, its modules in `modules`) and connects to its control
    /// socket. Returns once the control socket answers.
    pub fn start(
        bin: &Path,
        modules: &Path,
        spec: &PhoneSpec,
        dir: &Path,
    ) -> Result<Phone, String> {
        let conf = dir.join(&spec.name);
        std::fs::create_dir_all(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        let ip = *spec.sip.ip();
        let ctrl_addr = SocketAddrV4::new(ip, free_tcp_port(ip));
        let config = format!(
            "# generated by tests/support/baresip.rs for {name}
poll_method\t\tepoll
sip_listen\t\t{sip}
# SDP (and RTP) on this phone's own loopback address, not the host's
net_interface\t\t{ip}
# never a DNS query off the machine (every URI is an address anyway)
dns_server\t\t127.0.0.1:53
call_local_timeout\t120
call_max_calls\t\t4
# no sound card: a tone as the microphone, a null sink as the speaker
audio_player\t\taubridge,{name}
audio_alert\t\taubridge,{name}
audio_source\t\tausine,440
ausrc_srate\t\t48000
ausrc_channels\t\t2
rtp_stats\t\tno
module_path\t\t{modules}
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taubridge.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t{ctrl_addr}
",
            name = spec.name,
            sip = spec.sip,
            modules = modules.display(),
        );
        std::fs::write(conf.join("config"), config).map_err(|e| e.to_string())?;
        // answermode=manual: 180 Ringing, then wait for `accept`
        let account = format!(
            "{};answermode=manual;audio_codecs=PCMU,PCMA;regint={};mwi=no;call_transfer=yes\n",
            spec.aor,
            spec.register_every_s.unwrap_or(0)
        );
        std::fs::write(conf.join("accounts"), account).map_err(|e| e.to_string())?;
        std::fs::write(conf.join("contacts"), "").map_err(|e| e.to_string())?;

        let log = dir.join(format!("{}.log", spec.name));
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        // -s: SIP trace in the log
        cmd.arg("-s").arg("-f").arg(&conf);
        cmd.current_dir(&conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        crate::die_with_test(&mut cmd);
        // SAFETY: setpriority(2) is async-signal-safe; failing (not root) is fine.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, PRIORITY);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut proc = ChildGuard::new(format!("baresip {}", spec.name), child);
        let tail = |log: &Path| {
            let t = std::fs::read(log).unwrap_or_default();
            let t = String::from_utf8_lossy(&t).into_owned();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(ctrl_addr) {
                break s;
            }
            if let Some(st) = proc.try_wait() {
                return Err(format!(
                    "baresip {} exited ({st}) before opening its control socket {ctrl_addr}:\n{}",
                    spec.name,
                    tail(&log)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "baresip {}: no control socket at {ctrl_addr} after 15 s:\n{}",
                    spec.name,
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = ctrl.set_nodelay(true);
        let events_file = dir.join(format!("{}.events.txt", spec.name));
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        {
            let inbox = Arc::clone(&inbox);
            let mut reader = ctrl.try_clone().map_err(|e| e.to_string())?;
            let mut file = File::create(&events_file).map_err(|e| e.to_string())?;
            let name = spec.name.clone();
            std::thread::Builder::new()
                .name(format!("baresip-{name}"))
                .spawn(move || {
                    // the times are taken here: this thread should not
                    // wait for a CPU behind the builds (best effort)
                    // SAFETY: setpriority(2) on this thread (its tid).
                    unsafe {
                        libc::setpriority(
                            libc::PRIO_PROCESS,
                            libc::gettid() as libc::id_t,
                            PRIORITY,
                        );
                    }
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let n = match reader.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let at = now();
                        buf.extend_from_slice(&chunk[..n]);
                        // netstrings: LEN:JSON,
                        while let Some(colon) = buf.iter().position(|&b| b == b':') {
                            let Some(len) = std::str::from_utf8(&buf[..colon])
                                .ok()
                                .and_then(|s| s.trim().parse::<usize>().ok())
                            else {
                                buf.clear();
                                break;
                            };
                            if buf.len() < colon + 1 + len + 1 {
                                break;
                            }
                            let raw = String::from_utf8_lossy(&buf[colon + 1..colon + 1 + len])
                                .into_owned();
                            buf.drain(..colon + 1 + len + 1);
                            let v: serde_json::Value =
                                serde_json::from_str(&raw).unwrap_or_default();
                            let is_response = v["response"].as_bool() == Some(true);
                            let e = PhoneEvent {
                                at,
                                kind: if is_response {
                                    format!("response:{}", json_str(&v, "token"))
                                } else {
                                    json_str(&v, "type")
                                },
                                call_id: json_str(&v, "id"),
                                peer: json_str(&v, "peeruri"),
                                param: if is_response {
                                    json_str(&v, "data")
                                } else {
                                    json_str(&v, "param")
                                },
                                raw,
                            };
                            let _ = writeln!(
                                file,
                                "{} {name} {} call={} peer={} param={:?}",
                                e.at,
                                e.kind,
                                e.call_id,
                                e.peer,
                                e.param.trim_end()
                            );
                            let (m, cv) = &*inbox;
                            let mut ib = m.lock().unwrap_or_else(|p| p.into_inner());
                            if is_response {
                                ib.responses.push_back(e.clone());
                            }
                            ib.events.push(e);
                            cv.notify_all();
                        }
                    }
                    let (m, cv) = &*inbox;
                    m.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
                    cv.notify_all();
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(Phone {
            spec: spec.clone(),
            proc,
            ctrl,
            inbox,
            token: 0,
            log,
            events_file,
        })
    }

    /// Sends a command and waits for its response (5 s at most); returns
    /// the response, stamped when read.
    pub fn command(&mut self, command: &str, params: &str) -> Result<PhoneEvent, String> {
        self.token += 1;
        let token = format!("{command}{}", self.token);
        let json = serde_json::json!({"command": command, "params": params, "token": token});
        self.ctrl
            .write_all(&netstring(&json.to_string()))
            .map_err(|e| format!("{}: cannot send {command}: {e}", self.spec.name))?;
        let want = format!("response:{token}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let (m, cv) = &*self.inbox;
        let mut ib = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = ib.responses.iter().position(|r| r.kind == want) {
                let r = ib.responses.remove(i).expect("found");
                let v: serde_json::Value = serde_json::from_str(&r.raw).unwrap_or_default();
                if v["ok"].as_bool() != Some(true) {
                    return Err(format!("{}: {command} {params}: {}", self.spec.name, r.raw));
                }
                return Ok(r);
            }
            if ib.closed {
                return Err(format!(
                    "{}: control socket closed before the response to {command}",
                    self.spec.name
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{}: no response to {command} within 5 s",
                    self.spec.name
                ));
            }
            ib = cv
                .wait_timeout(ib, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Calls `uri` (a full SIP URI: `sip:01632960100@127.0.0.10:5070`).
    /// The response comes once the INVITE is sent.
    pub fn dial(&mut self, uri: &str) -> Result<PhoneEvent, String> {
        self.command("dial", uri)
    }

    /// Answers the ringing call (200 OK).
    pub fn accept(&mut self) -> Result<PhoneEvent, String> {
        self.command("accept", "")
    }

    /// Hangs up the current call: BYE, or CANCEL while it rings.
    pub fn hangup(&mut self) -> Result<PhoneEvent, String> {
        self.command("hangup", "")
    }

    /// Puts the current call on hold (re-INVITE, `a=sendonly`).
    pub fn hold(&mut self) -> Result<PhoneEvent, String> {
        self.command("hold", "")
    }

    /// Takes the current call off hold (re-INVITE, `a=sendrecv`).
    pub fn resume(&mut self) -> Result<PhoneEvent, String> {
        self.command("resume", "")
    }

    /// Blind transfer of the current call to `uri` (REFER; the other
    /// party calls `uri`; this phone hangs up once the NOTIFY says the
    /// new call is answered).
    pub fn transfer(&mut self, uri: &str) -> Result<PhoneEvent, String> {
        self.command("transfer", uri)
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<PhoneEvent> {
        let (m, _) = &*self.inbox;
        m.lock().unwrap_or_else(|p| p.into_inner()).events.clone()
    }

    /// Waits (at most `timeout`) for the `n`-th event (from 1) of `kind`
    /// and returns it.
    pub fn wait_for_nth(
        &self,
        kind: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<PhoneEvent, String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inbox;
        let mut ib = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = ib.events.iter().filter(|e| e.kind == kind).nth(n - 1) {
                return Ok(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || ib.closed {
                let seen: Vec<String> = ib.events.iter().map(|e| e.kind.clone()).collect();
                return Err(format!(
                    "{}: no {kind} (#{n}) within {timeout:?}; events so far: {}; log {}",
                    self.spec.name,
                    seen.join(" "),
                    self.log.display()
                ));
            }
            ib = cv
                .wait_timeout(ib, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits (at most `timeout`) for the first event of `kind`.
    pub fn wait_for(&self, kind: &str, timeout: Duration) -> Result<PhoneEvent, String> {
        self.wait_for_nth(kind, 1, timeout)
    }

    /// Asks baresip to quit, then kills it if it has not within 2 s.
    pub fn quit(mut self) {
        let _ = self.ctrl.write_all(&netstring(
            r#"{"command":"quit","params":"","token":"quit"}"#,
        ));
        let _ = self.proc.wait_timeout(Duration::from_secs(2));
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        // ChildGuard kills it unless it already exited
        let _ = self.ctrl.shutdown(std::net::Shutdown::Both);
    }
}
