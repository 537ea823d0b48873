//! A real Kamailio as the practices' phone system on loopback, with sipp
//! playing everyone else: the carrier's callers, the handsets, the IVR,
//! voicemail and callback servers, and the carrier's side of outbound calls.
//!
//! The pieces, in the order a test uses them:
//! - [`tools_or_skip`]: sipp, a capture tool and kamailio;
//! - [`Topology::pick`]: who is where (fixed 127.0.0.0/8 addresses, free
//!   ports), and [`site_toml`], the site file describing it to cbt-agent;
//! - a plan: [`PlannedCall`]s saying who dials what, when, and what every
//!   endpoint does with the call (the `X-Cbt-Plan` header of
//!   `tests/sipp/pbx-uac.xml` and `pbx-uas.xml`);
//! - [`run`]: captures `lo`, starts [`Kamailio`] with
//!   `tests/kamailio/kamailio.cfg` and one sipp per endpoint, places the
//!   calls, and returns the capture and every line sipp logged;
//! - [`observe`]: what happened to each call, derived from sipp's logs only
//!   (never from cbt-agent): its outcome, wait and duration by the rules of
//!   the requirements (`cbt-metrics.md`);
//! - [`replay`]: the capture through `cbt-agent replay` (the library entry
//!   point of the command), for its calls, metrics, report and NHS CSV files.
//!
//! Every child process is owned by a guard that stops it when dropped.

use crate::sipp::{self, Capture, CaptureError, ChildGuard, Dir, LogEvent, Sipp, SippSpec, Tools};
use cbt_proto::call::Outcome;
use cbt_proto::Timestamp;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The PBX (Kamailio).
pub const PBX_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
/// The carrier's side of inbound calls: every caller.
pub const CALLER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The endpoints behind the PBX, by the name the plans use for them
/// (`X-Cbt-Plan: h1=ans/1200/0 ...`, and `-set me h1`).
pub const ENDPOINTS: [(&str, Ipv4Addr); 7] = [
    ("h1", Ipv4Addr::new(127, 0, 1, 11)),  // practice A, ext 211
    ("h2", Ipv4Addr::new(127, 0, 1, 12)),  // practice A, ext 212
    ("h3", Ipv4Addr::new(127, 0, 1, 21)),  // practice B, ext 221
    ("ivr", Ipv4Addr::new(127, 0, 0, 20)), // IVR server
    ("vm", Ipv4Addr::new(127, 0, 0, 21)),  // voicemail
    ("cb", Ipv4Addr::new(127, 0, 0, 22)),  // callback server
    ("out", Ipv4Addr::new(127, 0, 0, 3)),  // the carrier, for outbound calls
];

/// The handsets.
pub const HANDSETS: [&str; 3] = ["h1", "h2", "h3"];

/// Handsets placing calls (a second sipp on the handset's address): the
/// dialler's name and its handset.
pub const DIALLERS: [(&str, &str); 3] = [("d1", "h1"), ("d2", "h2"), ("d3", "h3")];

/// The name of the carrier's callers in plans and logs.
pub const CALLER: &str = "caller";

pub const PRACTICE_A: &str = "B82005";
pub const PRACTICE_B: &str = "B82099";
pub const UNASSIGNED: &str = "Unassigned";

/// The numbers the PBX answers (as `kamailio.cfg` routes them), national form.
pub const A_MAIN: &str = "01632960100"; // ring group h1 + h2, then voicemail
pub const A_IVR: &str = "01632960101";
pub const A_CALLBACK: &str = "01632960102";
/// A welcome message (early media from the IVR server), then the ring group.
pub const A_WELCOME: &str = "01632960103";
pub const B_MAIN: &str = "01632960200"; // h3, then voicemail
pub const B_IVR: &str = "01632960201";
pub const B_CALLBACK: &str = "01632960202";
/// A number the PBX routes (to practice A's ring group) but the site file
/// does not list: its calls are `Unassigned`.
pub const UNLISTED: &str = "01632960199";

/// The practice of a dialled number, as the site file says (any written
/// form: `+44...`, `44...`, `0...`).
pub fn practice_of(dialled: &str) -> &'static str {
    let d = dialled.trim_start_matches('+');
    let national = match d.strip_prefix("44") {
        Some(rest) => format!("0{rest}"),
        None => d.to_string(),
    };
    match national.as_str() {
        A_MAIN | A_IVR | A_CALLBACK | A_WELCOME => PRACTICE_A,
        B_MAIN | B_IVR | B_CALLBACK => PRACTICE_B,
        _ => UNASSIGNED,
    }
}

/// The site file describing the topology (addresses without ports: the
/// ports change from run to run).
pub fn site_toml() -> String {
    let ip = |n: &str| ENDPOINTS.iter().find(|(e, _)| *e == n).expect("endpoint").1;
    format!(
        r#"# Two GP practices sharing one PBX (Kamailio at {pbx}), as the tests
# of tests/kamailio_e2e.rs and tests/fixtures/morning.pcap run it.
timezone = "Europe/London"

[[practice]]
ods = "{a}"
name = "Practice A"
# reception (ring group, then voicemail), IVR, callback line, reception
# with a welcome message
numbers = ["01632 960100", "01632 960101", "01632 960102", "01632 960103"]

[[practice]]
ods = "{b}"
name = "Practice B"
numbers = ["01632 960200", "01632 960201", "01632 960202"]

[network]
# the carrier: callers, and where outbound calls go
carrier = ["{caller}", "{out}"]
pbx = ["{pbx}"]
# the handsets (extensions 211, 212, 221)
staff = ["127.0.1.0/24"]
staff_extensions = ["2XX"]
# the IVR server
automated = ["{ivr}"]

[automated]
voicemail = ["{vm}"]

[callbacks]
# calls routed to the callback server are callback requests
request = ["{cb}"]
window = "same-day"
"#,
        pbx = PBX_IP,
        a = PRACTICE_A,
        b = PRACTICE_B,
        caller = CALLER_IP,
        out = ip("out"),
        ivr = ip("ivr"),
        vm = ip("vm"),
        cb = ip("cb"),
    )
}

/// `tests/kamailio/kamailio.cfg`.
pub fn config_file() -> PathBuf {
    crate::workspace_root().join("tests/kamailio/kamailio.cfg")
}

/// The kamailio binary, if installed.
pub fn find_kamailio() -> Option<PathBuf> {
    sipp::find_program("kamailio")
}

/// sipp, a capture tool and kamailio; `None` after printing `SKIP: ...`
/// when one is missing outside CI. Under CI a missing tool is a failure.
pub fn tools_or_skip(test: &str) -> Option<(Tools, PathBuf)> {
    let tools = sipp::find_tools();
    let kamailio = find_kamailio();
    match (tools, kamailio) {
        (Ok(t), Some(k)) => Some((t, k)),
        (t, k) => {
            let mut missing = Vec::new();
            if let Err(e) = t {
                missing.push(e);
            }
            if k.is_none() {
                missing.push("not installed: kamailio (Debian package kamailio; scripts/setup-deps installs it)".into());
            }
            let msg = missing.join("; ");
            if crate::in_ci() {
                panic!("{test}: {msg}; CI must have them");
            }
            eprintln!("SKIP: {test}: {msg}");
            None
        }
    }
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A running Kamailio, in the foreground, in a process group of its own.
/// Stopped with SIGTERM (it stops its worker processes); when dropped, a
/// Kamailio still running is stopped the same way, then killed with its
/// whole group.
pub struct Kamailio {
    proc: ChildGuard,
    pub addr: SocketAddrV4,
    pub log: PathBuf,
}

impl Kamailio {
    /// Starts `tests/kamailio/kamailio.cfg` listening on `addr` (UDP), with
    /// the preprocessor `defines` (`H1` = `"127.0.1.11:40001"`, ...), its
    /// files in `dir`, its log in `dir/kamailio.log`. Returns once it
    /// listens.
    pub fn start(
        bin: &Path,
        addr: SocketAddrV4,
        defines: &[(String, String)],
        dir: &Path,
    ) -> Result<Kamailio, String> {
        let log = dir.join("kamailio.log");
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("-f").arg(config_file());
        // foreground, log to stderr, 2 workers, 64 MB shared and 16 MB
        // private memory; work, pid and runtime files in `dir`
        cmd.args(["-DD", "-E", "-n", "2", "-m", "64", "-M", "16"]);
        cmd.arg("-w")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .arg("-Y")
            .arg(dir);
        cmd.arg("-l").arg(format!("udp:{addr}"));
        for (k, v) in defines {
            cmd.arg("-A").arg(format!("{k}={v}"));
        }
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
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
        let mut k = Kamailio {
            proc: ChildGuard::new("kamailio", child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if sipp::udp_bound(addr) {
                return Ok(k);
            }
            if let Some(st) = k.proc.try_wait() {
                return Err(format!(
                    "kamailio exited ({st}) before listening on {addr}:\n{}",
                    k.log_tail(30)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kamailio is not listening on {addr} after 15 s:\n{}",
                    k.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = read_lossy(&self.log);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops it (SIGTERM) and waits for it.
    pub fn stop(mut self) -> Result<(), String> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<(), String> {
        if self.proc.try_wait().is_some() {
            return Ok(());
        }
        self.proc.signal(libc::SIGTERM)?;
        self.proc.wait_timeout(Duration::from_secs(10)).map(|_| ())
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if self.terminate().is_err() {
            // SAFETY: killpg(2) on the process group kamailio was started
            // in (process_group(0): its id is kamailio's pid).
            unsafe {
                libc::killpg(self.proc.id() as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// The nice value asked for Kamailio and the sipp processes: a busy
/// machine then takes the CPU from them less often, so that their log
/// lines trail the packets less (see [`LAG_US`]). Only root may raise a
/// priority; otherwise they run at the normal one.
const PRIORITY: libc::c_int = -10;

/// Best effort: raises the priority of a process we started.
fn raise_priority(pid: u32) {
    // SAFETY: setpriority(2) on the pid of our own child; errors ignored.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, PRIORITY);
    }
}

/// Who is where: the PBX, the callers, every endpoint and dialler.
#[derive(Clone, Debug)]
pub struct Topology {
    pub pbx: SocketAddrV4,
    /// Everyone else by name: `caller`, the [`ENDPOINTS`] and the
    /// [`DIALLERS`].
    pub at: BTreeMap<String, SocketAddrV4>,
}

impl Topology {
    /// The fixed addresses with ports free right now.
    pub fn pick() -> Topology {
        let free = |ip: Ipv4Addr| SocketAddrV4::new(ip, sipp::free_udp_port(ip));
        let mut at = BTreeMap::new();
        at.insert(CALLER.to_string(), free(CALLER_IP));
        for (name, ip) in ENDPOINTS {
            at.insert(name.to_string(), free(ip));
        }
        for (d, h) in DIALLERS {
            let ip = *at[h].ip();
            let mut a = free(ip);
            while a == at[h] {
                a = free(ip);
            }
            at.insert(d.to_string(), a);
        }
        Topology {
            pbx: free(PBX_IP),
            at,
        }
    }

    pub fn addr(&self, name: &str) -> SocketAddrV4 {
        *self
            .at
            .get(name)
            .unwrap_or_else(|| panic!("no endpoint {name}"))
    }

    /// Every address, for the capture filter.
    pub fn all(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<SocketAddrV4> = self.at.values().copied().collect();
        v.push(self.pbx);
        v
    }
}

/// What an endpoint behind the PBX does with a call (`pbx-uas.xml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 180 at once, 200 after `after_ms`; the caller hangs up.
    Answer { after_ms: u32 },
    /// 180 at once, 200 after `after_ms`, BYE `talk_ms` later.
    AnswerThenHangUp { after_ms: u32, talk_ms: u32 },
    /// 180 at once, then wait for the CANCEL.
    Ring,
    /// 486 Busy Here after `after_ms`.
    Busy { after_ms: u32 },
    /// 183 with SDP at once (an announcement as early media), 480 after
    /// `after_ms` (the announcement is over).
    Early { after_ms: u32 },
}

impl Reply {
    fn entry(&self, who: &str) -> String {
        match self {
            Reply::Answer { after_ms } => format!("{who}=ans/{after_ms}/0"),
            Reply::AnswerThenHangUp { after_ms, talk_ms } => {
                format!("{who}=bye/{after_ms}/{talk_ms}")
            }
            Reply::Ring => format!("{who}=ring/0/0"),
            Reply::Busy { after_ms } => format!("{who}=busy/{after_ms}/0"),
            Reply::Early { after_ms } => format!("{who}=early/{after_ms}/0"),
        }
    }
}

/// What the calling side does (`pbx-uac.xml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Wait for the answer, talk this long, hang up.
    Talk { ms: u32 },
    /// Wait for the answer, then for the other side to hang up.
    FarEnd,
    /// Give up (CANCEL) this long after the last 180.
    Cancel { ms: u32 },
    /// Expect 486 Busy Here.
    Busy,
}

impl Act {
    fn fields(&self) -> (&'static str, u32) {
        match self {
            Act::Talk { ms } => ("talk", *ms),
            Act::FarEnd => ("farend", 0),
            Act::Cancel { ms } => ("cancel", *ms),
            Act::Busy => ("busy", 0),
        }
    }
}

/// What a call is meant to be (checked against what sipp logged).
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// An inbound call with this outcome.
    Inbound { outcome: Outcome, abandoned: bool },
    /// An outbound or internal call: not an inbound call.
    NotInbound,
    /// The callback made for the inbound call with this label.
    CallbackFor(String),
}

/// One call of a plan.
#[derive(Clone, Debug)]
pub struct PlannedCall {
    /// Unique in the plan; travels in `X-Cbt-Call`.
    pub label: String,
    /// Who dials: [`CALLER`] (through the carrier) or a dialler (`d1`...).
    pub from: String,
    /// The caller's user part (a phone number or an extension).
    pub caller: String,
    /// The Request-URI user.
    pub dialled: String,
    /// When to dial, after the caller's sipp started.
    pub at_ms: u32,
    pub act: Act,
    /// What each endpoint the call reaches does.
    pub replies: Vec<(&'static str, Reply)>,
    pub intent: Intent,
}

impl PlannedCall {
    /// The `X-Cbt-Plan` header value.
    pub fn plan_header(&self) -> String {
        self.replies
            .iter()
            .map(|(w, r)| r.entry(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn injection_line(&self) -> String {
        let (action, ms) = self.act.fields();
        format!(
            "{};{action};{};{};{};{ms};{}",
            self.label,
            self.caller,
            self.dialled,
            self.at_ms,
            self.plan_header()
        )
    }
}

/// What [`run`] left behind.
pub struct RunOutput {
    pub dir: PathBuf,
    pub pcap: PathBuf,
    /// Every `cbt;` line of every sipp, in no particular order.
    pub events: Vec<LogEvent>,
    /// Capture markers sent (at least 2 and at most this many are in the
    /// file, as non-SIP datagrams).
    pub markers_sent: u32,
}

/// Places `calls` through Kamailio (ringing `noanswer_ms` before
/// voicemail), capturing `lo`, in `dir` (sipp and Kamailio at a raised
/// priority where allowed). `Err(CaptureError::Permission)`
/// when capturing is not allowed; any other failure (a sipp that did not
/// play its part, kamailio failing) is `CaptureError::Other` with details.
pub fn run(
    tools: &Tools,
    kamailio: &Path,
    topo: &Topology,
    calls: &[PlannedCall],
    noanswer_ms: u32,
    dir: &Path,
) -> Result<RunOutput, CaptureError> {
    let other = CaptureError::Other;
    std::fs::create_dir_all(dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
    let mut labels = std::collections::BTreeSet::new();
    for c in calls {
        if !labels.insert(c.label.as_str()) {
            return Err(other(format!("the label {} is used twice", c.label)));
        }
    }
    // calls per calling side, INVITEs per endpoint
    let mut by_uac: BTreeMap<&str, Vec<&PlannedCall>> = BTreeMap::new();
    let mut invites: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls {
        by_uac.entry(c.from.as_str()).or_default().push(c);
        for (w, _) in &c.replies {
            *invites.entry(w).or_default() += 1;
        }
    }
    let last_at = calls.iter().map(|c| c.at_ms).max().unwrap_or(0);
    let timeout = Duration::from_millis(last_at as u64) + Duration::from_secs(60);

    let pcap = dir.join("capture.pcap");
    let cap = Capture::start(&tools.capture, "lo", &topo.all(), &pcap)?;
    let mut defines = vec![("NOANSWER_MS".to_string(), noanswer_ms.to_string())];
    for (k, name) in [
        ("H1", "h1"),
        ("H2", "h2"),
        ("H3", "h3"),
        ("IVR", "ivr"),
        ("VM", "vm"),
        ("CB", "cb"),
        ("OUT", "out"),
    ] {
        defines.push((k.to_string(), format!("\"{}\"", topo.addr(name))));
    }
    let kam = Kamailio::start(kamailio, topo.pbx, &defines, dir).map_err(other)?;

    let mut servers = Vec::new();
    for (name, n) in &invites {
        let spec = SippSpec {
            name: name.to_string(),
            scenario: "pbx-uas.xml".into(),
            local: topo.addr(name),
            remote: None,
            calls: *n,
            rate: 0,
            inf: None,
            timeout: timeout + Duration::from_secs(10),
        };
        let s = Sipp::start_with(
            &tools.sipp,
            &spec,
            dir,
            &["-set".into(), "me".into(), name.to_string()],
        )
        .map_err(other)?;
        raise_priority(s.proc.id());
        servers.push(s);
    }
    for s in &mut servers {
        s.wait_listening(Duration::from_secs(10)).map_err(other)?;
    }
    let mut clients = Vec::new();
    for (from, mine) in &by_uac {
        let inf = dir.join(format!("{from}.csv"));
        let mut text = String::from(
            "SEQUENTIAL\n# label;action;from;dialled;at;ms;plan (see tests/sipp/pbx-uac.xml)\n",
        );
        for c in mine {
            text.push_str(&c.injection_line());
            text.push('\n');
        }
        std::fs::write(&inf, text).map_err(|e| other(format!("{}: {e}", inf.display())))?;
        let spec = SippSpec {
            name: from.to_string(),
            scenario: "pbx-uac.xml".into(),
            local: topo.addr(from),
            remote: Some(topo.pbx),
            calls: mine.len(),
            rate: 200,
            inf: Some(inf),
            timeout,
        };
        let s = Sipp::start_with(
            &tools.sipp,
            &spec,
            dir,
            &["-set".into(), "me".into(), from.to_string()],
        )
        .map_err(other)?;
        raise_priority(s.proc.id());
        clients.push(s);
    }
    let mut failures = Vec::new();
    for s in clients.iter_mut().chain(servers.iter_mut()) {
        if let Err(e) = s.wait_success(timeout + Duration::from_secs(15)) {
            failures.push(e);
            continue;
        }
        // exit status 0 also when stopped by a signal with calls still up
        match s.call_counts() {
            Some((ok, 0)) if ok == s.spec.calls as u64 => {}
            counts => failures.push(format!(
                "{} exited 0 but its last screen shows (successful, failed) calls {counts:?} of {} (stopped from outside?)\n{}",
                s.proc.name,
                s.spec.calls,
                s.diagnostics()
            )),
        }
    }
    if !failures.is_empty() {
        return Err(other(format!(
            "sipp did not play the plan:\n{}\n--- kamailio (end) ---\n{}",
            failures.join("\n"),
            kam.log_tail(40)
        )));
    }
    let markers_sent = cap.stop().map_err(other)?;
    kam.stop().map_err(other)?;
    let mut events = Vec::new();
    for s in clients.iter().chain(servers.iter()) {
        events.extend(sipp::parse_log(&s.log_file()).map_err(other)?);
    }
    Ok(RunOutput {
        dir: dir.to_path_buf(),
        pcap,
        events,
        markers_sent,
    })
}

/// What happened to one inbound call, from sipp's logs alone. Times are
/// the log lines of the side that received the packet the time is about
/// (for the caller's own requests, the caller's "sent" line), so each trails
/// the packet by the time sipp took to run again after it; see the tests
/// for the tolerance this needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub label: String,
    pub call_id: String,
    pub caller: String,
    pub practice: String,
    pub outcome: Outcome,
    pub abandoned: bool,
    /// The caller hung up (BYE or CANCEL); else the practice did (BYE,
    /// or a final error).
    pub ended_by_caller: bool,
    /// The caller's INVITE.
    pub started: Timestamp,
    /// The first handset's INVITE (the call was offered to staff).
    pub queue_joined: Option<Timestamp>,
    /// The first handset's 180.
    pub first_ring: Option<Timestamp>,
    /// A handset's 200.
    pub answered: Option<Timestamp>,
    /// The caller's BYE or CANCEL, or the BYE or error the caller got.
    pub ended: Timestamp,
    /// Voicemail's INVITE.
    pub voicemail: Option<Timestamp>,
    /// The callback server's INVITE.
    pub callback_requested: Option<Timestamp>,
    /// The carrier's INVITE of the callback made for this call.
    pub callback_made: Option<Timestamp>,
    pub wait_us: Option<i64>,
    pub duration_us: Option<i64>,
    /// The caller's leg and one per endpoint that got the INVITE.
    pub legs: u32,
}

/// The Call-ID of a planned call: the one its calling side logged sending
/// the INVITE under its label.
pub fn call_id_of<'a>(call: &PlannedCall, events: &'a [LogEvent]) -> Option<&'a str> {
    events
        .iter()
        .find(|e| {
            e.side == call.from && e.kind == call.label && e.dir == Dir::Sent && e.what == "INVITE"
        })
        .map(|e| e.call_id.as_str())
}

/// The inbound calls of a plan as sipp saw them, and (second) every way in
/// which a call did not go as its [`Intent`] said (a test harness problem,
/// not an engine one). `Err` when the logs miss what every call must have.
pub fn observe(
    calls: &[PlannedCall],
    events: &[LogEvent],
) -> Result<(Vec<Observed>, Vec<String>), String> {
    let mut by_call: BTreeMap<&str, Vec<&LogEvent>> = BTreeMap::new();
    for e in events {
        by_call.entry(e.call_id.as_str()).or_default().push(e);
    }
    let at = |cid: &str, side: &str, dir: Dir, what: &str| -> Option<Timestamp> {
        by_call
            .get(cid)?
            .iter()
            .filter(|e| e.side == side && e.dir == dir && e.what == what)
            .map(|e| e.at)
            .min()
    };
    let mut out = Vec::new();
    let mut deviations = Vec::new();
    let mut problems = String::new();
    for c in calls.iter().filter(|c| c.from == CALLER) {
        let Some(cid) = call_id_of(c, events) else {
            let _ = writeln!(problems, "{}: the caller did not log its INVITE", c.label);
            continue;
        };
        let started = at(cid, CALLER, Dir::Sent, "INVITE").expect("found above");
        let first = |side_what: &[(&str, Dir, &str)]| {
            side_what
                .iter()
                .filter_map(|(s, d, w)| at(cid, s, *d, w))
                .min()
        };
        let queue_joined = first(&HANDSETS.map(|h| (h, Dir::Recv, "INVITE")));
        let first_ring = first(&HANDSETS.map(|h| (h, Dir::Sent, "180/INVITE")));
        let reached: std::collections::BTreeSet<&str> = by_call[cid]
            .iter()
            .filter(|e| e.side != CALLER && e.dir == Dir::Recv && e.what == "INVITE")
            .map(|e| e.side.as_str())
            .collect();
        let staff_200 = first(&HANDSETS.map(|h| (h, Dir::Sent, "200/INVITE")));
        let caller_200 = at(cid, CALLER, Dir::Recv, "200/INVITE");
        let voicemail = at(cid, "vm", Dir::Recv, "INVITE");
        let callback = at(cid, "cb", Dir::Recv, "INVITE");
        let ends = [
            (at(cid, CALLER, Dir::Sent, "BYE"), true),
            (at(cid, CALLER, Dir::Sent, "CANCEL"), true),
            (at(cid, CALLER, Dir::Recv, "BYE"), false),
            (at(cid, CALLER, Dir::Recv, "486/INVITE"), false),
        ];
        let Some((ended, ended_by_caller)) = ends
            .iter()
            .filter_map(|(t, by)| t.map(|t| (t, *by)))
            .min_by_key(|(t, _)| *t)
        else {
            let _ = writeln!(
                problems,
                "{} ({cid}): the caller logged no end (BYE, CANCEL, 486)",
                c.label
            );
            continue;
        };
        // the outcome rules of cbt-metrics.md, on what sipp saw
        let answered = staff_200.filter(|a| caller_200.is_some() && *a <= ended);
        let outcome = if answered.is_some() {
            Outcome::Answered
        } else if callback.is_some() {
            Outcome::CallbackRequested
        } else if queue_joined.is_some() || voicemail.is_some() || caller_200.is_none() {
            Outcome::Missed
        } else {
            Outcome::EndedInIvr
        };
        let us = |a: Timestamp, b: Timestamp| b.since(a);
        let (wait_us, duration_us) = match outcome {
            Outcome::Answered => {
                let a = answered.expect("answered");
                (
                    Some(us(queue_joined.unwrap_or(started), a)),
                    Some(us(a, ended)),
                )
            }
            Outcome::Missed => {
                if caller_200.is_none() {
                    // never answered by anything: from the INVITE to the end
                    (Some(us(started, ended)), None)
                } else {
                    // waited for a person until voicemail (or the end)
                    let stop = voicemail.map_or(ended, |v| v.min(ended));
                    (Some(us(queue_joined.unwrap_or(started), stop)), None)
                }
            }
            _ => (None, None),
        };
        let abandoned = ended_by_caller
            && matches!(outcome, Outcome::Missed | Outcome::EndedInIvr)
            && voicemail.is_none();
        let o = Observed {
            label: c.label.clone(),
            call_id: cid.to_string(),
            caller: c.caller.clone(),
            practice: practice_of(&c.dialled).to_string(),
            outcome,
            abandoned,
            ended_by_caller,
            started,
            queue_joined,
            first_ring,
            answered,
            ended,
            voicemail,
            callback_requested: callback,
            callback_made: None,
            wait_us,
            duration_us,
            legs: 1 + reached.len() as u32,
        };
        match &c.intent {
            Intent::Inbound { outcome, abandoned } => {
                if (*outcome, *abandoned) != (o.outcome, o.abandoned) {
                    deviations.push(format!(
                        "{} ({cid}): planned {} (abandoned {abandoned}), but sipp's logs show {} (abandoned {})",
                        c.label,
                        outcome.name(),
                        o.outcome.name(),
                        o.abandoned
                    ));
                }
            }
            other => deviations.push(format!(
                "{}: a call from the carrier planned as {other:?}",
                c.label
            )),
        }
        out.push(o);
    }
    for c in calls.iter().filter(|c| c.from != CALLER) {
        let Some(cid) = call_id_of(c, events) else {
            let _ = writeln!(problems, "{}: {} did not log its INVITE", c.label, c.from);
            continue;
        };
        if let Intent::CallbackFor(of) = &c.intent {
            let made = at(cid, "out", Dir::Recv, "INVITE");
            match (out.iter_mut().find(|o| o.label == *of), made) {
                (Some(o), Some(t)) => {
                    if o.outcome != Outcome::CallbackRequested
                        || o.callback_requested.is_none_or(|r| r > t)
                    {
                        deviations.push(format!(
                            "{}: a callback for {of}, which did not request one before it",
                            c.label
                        ));
                    }
                    o.callback_made = Some(o.callback_made.map_or(t, |m| m.min(t)));
                }
                (None, _) => deviations.push(format!(
                    "{}: a callback for {of}, not an inbound call of the plan",
                    c.label
                )),
                (_, None) => deviations.push(format!(
                    "{} ({cid}): the carrier did not log the callback's INVITE",
                    c.label
                )),
            }
        }
        if matches!(c.intent, Intent::Inbound { .. }) {
            deviations.push(format!(
                "{}: a call from {} planned as inbound",
                c.label, c.from
            ));
        }
    }
    if problems.is_empty() {
        Ok((out, deviations))
    } else {
        Err(problems)
    }
}

/// How far a sipp log line may trail the packet it is about.
///
/// Every time cbt-agent reports comes from one packet. [`Observed`] takes
/// it from the log line of the sipp that sent that packet (written right
/// after sendto returned) or that received it (written once sipp has read
/// and matched it). Capture and logs read the same clock, and the kernel
/// stamps a packet on loopback before sendto returns and before the
/// receiver can read it, so the line is never before the packet: it trails
/// it by the time that sipp took to run again. That is tens of
/// microseconds on an idle machine; on a busy one a sipp can lose its CPU
/// between sendto and the log. Measured on a 2-core machine with a load
/// average of 3.5-4 (fuzzers and builds besides the tests): at normal
/// priority, one log line in about 700 compared trailed its packet by
/// 12.6 ms (a handset's 200 OK while 40 calls were up); with the sipp
/// processes and Kamailio at a raised priority (see [`run`]; only root
/// may) the largest of about 1,700 was 2 ms, and the median 0.1-0.3 ms.
/// Hence, with room for machines that cannot raise the priority:
///
/// - every time: log minus cbt-agent in `0..=LAG_US`;
/// - every wait and duration (a difference of two times): within
///   `LAG_US` either way;
/// - the median of all time differences within [`MEDIAN_US`], which a
///   systematic shift of cbt-agent's times (by a packet on another hop,
///   a fraction of a millisecond later) would exceed.
pub const LAG_US: i64 = 20_000;
pub const MEDIAN_US: i64 = 1_000;

/// Differences between sipp's logs and cbt-agent (log minus cbt-agent,
/// microseconds) by field, and the problems they show.
#[derive(Default)]
pub struct Differences {
    pub rows: BTreeMap<&'static str, Vec<i64>>,
    /// Times (not spans): their median is checked too.
    times: Vec<i64>,
    pub problems: String,
    /// The tolerance when not [`LAG_US`] (see [`Differences::with_lag`]).
    lag: Option<i64>,
}

impl Differences {
    /// Differences checked against another tolerance than [`LAG_US`], for
    /// reference times that trail their packets more than a log line does.
    pub fn with_lag(lag_us: i64) -> Self {
        Differences { lag: Some(lag_us), ..Default::default() }
    }

    fn lag(&self) -> i64 {
        self.lag.unwrap_or(LAG_US)
    }

    /// A time: both absent, or both present with the log at or after
    /// cbt-agent's time, by at most [`LAG_US`].
    pub fn time(&mut self, who: &str, field: &'static str, log: Option<i64>, got: Option<i64>) {
        if let Some(d) = self.pair(who, field, log, got) {
            self.times.push(d);
            let lag = self.lag();
            if !(0..=lag).contains(&d) {
                let _ = writeln!(
                    self.problems,
                    "{who}: {field} is {} us from sipp's log of its packet ({d:+} us; the log must be at or after it, by {lag} us at most)",
                    -d
                );
            }
        }
    }

    /// A wait or duration (microseconds): both absent, or within
    /// [`LAG_US`] of each other.
    pub fn span(&mut self, who: &str, field: &'static str, log: Option<i64>, got: Option<i64>) {
        if let Some(d) = self.pair(who, field, log, got) {
            let lag = self.lag();
            if d.abs() > lag {
                let _ = writeln!(
                    self.problems,
                    "{who}: {field} is {:?} us, sipp's logs give {:?} us ({d:+} us; tolerance {lag} us)",
                    got.unwrap_or_default(),
                    log.unwrap_or_default()
                );
            }
        }
    }

    fn pair(
        &mut self,
        who: &str,
        field: &'static str,
        log: Option<i64>,
        got: Option<i64>,
    ) -> Option<i64> {
        match (log, got) {
            (None, None) => None,
            (Some(l), Some(g)) => {
                self.rows.entry(field).or_default().push(l - g);
                Some(l - g)
            }
            (l, g) => {
                let _ = writeln!(
                    self.problems,
                    "{who}: {field} is {g:?}, sipp's logs give {l:?}"
                );
                None
            }
        }
    }

    /// Checks the median of the time differences; returns every problem.
    pub fn finish(mut self) -> (String, Self) {
        let mut t = self.times.clone();
        t.sort_unstable();
        if let Some(m) = t.get(t.len() / 2) {
            if *m > MEDIAN_US {
                let _ = writeln!(
                    self.problems,
                    "sipp's logs trail cbt-agent's times by {m} us in the median (tolerance {MEDIAN_US} us): are the times shifted?"
                );
            }
        }
        (std::mem::take(&mut self.problems), self)
    }

    pub fn print(&self) {
        eprintln!("sipp's log minus cbt-agent, microseconds:");
        let mut all: Vec<i64> = Vec::new();
        for (field, v) in &self.rows {
            let mut v = v.clone();
            v.sort_unstable();
            eprintln!(
                "  {field:<19} n={:<4} min={:<7} median={:<7} max={}",
                v.len(),
                v[0],
                v[v.len() / 2],
                v[v.len() - 1]
            );
            all.extend(v);
        }
        all.sort_unstable();
        if let (Some(first), Some(last)) = (all.first(), all.last()) {
            eprintln!(
                "  all                 n={:<4} min={first:<7} median={:<7} max={last}",
                all.len(),
                all[all.len() / 2]
            );
        }
    }
}

/// One inbound call as `cbt-agent replay --output calls` prints it (the
/// agent's own type: one JSON shape of a call).
pub use cbt_agent::output::CallJson as CallOut;

/// A time printed by cbt-agent (RFC 3339).
pub fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap_or_else(|| panic!("not an RFC 3339 time: {s}"))
}

/// What `cbt-agent replay` made of captures.
pub struct Replayed {
    /// `--output calls`.
    pub calls: Vec<CallOut>,
    /// `--output metrics`.
    pub metrics: serde_json::Value,
    /// `--output report`.
    pub report: String,
    /// Where `--nhs-csv` wrote its files.
    pub csv_dir: PathBuf,
}

/// Runs `cbt-agent replay --config CONFIG --secret-file DIR/secret` on
/// `pcaps` three times: `--output calls`, `--output metrics --nhs-csv
/// DIR/nhs-csv` and `--output report`. Panics on any error or output on
/// stderr.
pub fn replay(config: &Path, pcaps: &[PathBuf], dir: &Path) -> Replayed {
    use cbt_agent::replay::{run_with, Output, ReplayArgs};
    let csv_dir = dir.join("nhs-csv");
    let _ = std::fs::remove_dir_all(&csv_dir);
    let go = |output: Output, nhs_csv: Option<PathBuf>| -> String {
        let args = ReplayArgs {
            output,
            config: Some(config.to_path_buf()),
            nhs_csv,
            no_unassigned: false,
            from: None,
            to: None,
            reveal_numbers: false,
            secret_file: Some(dir.join("secret")),
            files: pcaps.to_vec(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(args, &mut out, &mut err)
            .unwrap_or_else(|e| panic!("cbt-agent replay --output {output:?}: {e:#}"));
        let err = String::from_utf8_lossy(&err);
        assert!(
            code == std::process::ExitCode::SUCCESS && err.trim().is_empty(),
            "cbt-agent replay --output {output:?} exited {code:?}: {err}"
        );
        String::from_utf8(out).expect("UTF-8 output")
    };
    let calls = go(Output::Calls, None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let metrics =
        serde_json::from_str(&go(Output::Metrics, Some(csv_dir.clone()))).expect("metrics JSON");
    let report = go(Output::Report, None);
    Replayed {
        calls,
        metrics,
        report,
        csv_dir,
    }
}

/// The published header lines of the three NHS England CSV files (without
/// the optional organisation codes), by file name.
pub const NHS_CSV_HEADERS: [(&str, &str); 3] = [
    (
        "by_day_and_time.csv",
        "Date,PRACTICE_CODE,Indicator,Time_Category,Value",
    ),
    (
        "by_durations.csv",
        "Date,PRACTICE_CODE,Indicator,Duration,Value",
    ),
    (
        "calls_answered_metric.csv",
        "Date,PRACTICE_CODE,Indicator,Wait_Time,Core_Category,Value",
    ),
];

/// Checks the three CSV files in `dir`: present, the exact header, CRLF
/// line ends, the same number of fields on every row; returns the rows
/// (header excluded) by file name, each split into fields.
pub fn read_nhs_csv(dir: &Path) -> Result<BTreeMap<String, Vec<Vec<String>>>, String> {
    let mut out = BTreeMap::new();
    for (name, header) in NHS_CSV_HEADERS {
        let p = dir.join(name);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let Some(first) = text.split("\r\n").next() else {
            return Err(format!("{name}: empty"));
        };
        if first != header {
            return Err(format!("{name}: header {first:?}, expected {header:?}"));
        }
        if !text.ends_with("\r\n") || text.replace("\r\n", "").contains('\n') {
            return Err(format!("{name}: lines must end with CRLF"));
        }
        let n = header.split(',').count();
        let mut rows = Vec::new();
        for (i, line) in text
            .trim_end_matches("\r\n")
            .split("\r\n")
            .enumerate()
            .skip(1)
        {
            let f: Vec<String> = line.split(',').map(str::to_string).collect();
            if f.len() != n {
                return Err(format!(
                    "{name}:{}: {} fields, expected {n}: {line:?}",
                    i + 1,
                    f.len()
                ));
            }
            rows.push(f);
        }
        out.insert(name.to_string(), rows);
    }
    Ok(out)
}

// The standard plan: one call of each kind (used by kamailio_e2e and daemon_live).

/// Ringing before voicemail (Kamailio's no-answer timer).
pub const NOANSWER_MS: u32 = 2500;

pub fn answer(after_ms: u32) -> Reply {
    Reply::Answer { after_ms }
}

pub fn inbound(outcome: Outcome, abandoned: bool) -> Intent {
    Intent::Inbound { outcome, abandoned }
}

/// One call of each kind; the callers' calls 200 ms apart, so several are
/// up at once.
pub fn plan() -> Vec<PlannedCall> {
    use Outcome::*;
    use Reply::*;
    let mut calls = Vec::new();
    let mut n = 0;
    let mut caller = |label: &str,
                      dialled: &str,
                      act: Act,
                      replies: Vec<(&'static str, Reply)>,
                      intent: Intent| {
        n += 1;
        calls.push(PlannedCall {
            label: label.into(),
            from: CALLER.into(),
            caller: format!("+4477009001{n:02}"),
            dialled: dialled.into(),
            at_ms: 200 * (n - 1),
            act,
            replies,
            intent,
        });
    };
    let a_main_intl = format!("44{}", &A_MAIN[1..]);
    let a_main_plus = format!("+44{}", &A_MAIN[1..]);
    // practice A's reception: both handsets ring
    caller(
        "a-answered",
        &a_main_intl,
        Act::Talk { ms: 1500 },
        vec![("h1", answer(1200)), ("h2", Ring)],
        inbound(Answered, false),
    );
    caller(
        "a-answered-by-h2",
        &a_main_plus,
        Act::Talk { ms: 1000 },
        vec![("h1", Ring), ("h2", answer(800))],
        inbound(Answered, false),
    );
    caller(
        "a-abandoned",
        A_MAIN,
        Act::Cancel { ms: 1500 },
        vec![("h1", Ring), ("h2", Ring)],
        inbound(Missed, true),
    );
    caller(
        "a-busy",
        &a_main_intl,
        Act::Busy,
        vec![
            ("h1", Busy { after_ms: 200 }),
            ("h2", Busy { after_ms: 300 }),
        ],
        inbound(Missed, false),
    );
    caller(
        "a-voicemail",
        &a_main_intl,
        Act::Talk { ms: 1500 },
        vec![("h1", Ring), ("h2", Ring), ("vm", answer(200))],
        inbound(Missed, false),
    );
    caller(
        "a-staff-hangs-up",
        &a_main_intl,
        Act::FarEnd,
        vec![
            (
                "h1",
                AnswerThenHangUp {
                    after_ms: 700,
                    talk_ms: 1200,
                },
            ),
            ("h2", Ring),
        ],
        inbound(Answered, false),
    );
    caller(
        "a-ivr",
        A_IVR,
        Act::Talk { ms: 2000 },
        vec![("ivr", answer(100))],
        inbound(EndedInIvr, true),
    );
    caller(
        "a-callback",
        A_CALLBACK,
        Act::FarEnd,
        vec![(
            "cb",
            AnswerThenHangUp {
                after_ms: 100,
                talk_ms: 1000,
            },
        )],
        inbound(CallbackRequested, false),
    );
    // practice B: one handset
    caller(
        "b-answered",
        B_MAIN,
        Act::Talk { ms: 1000 },
        vec![("h3", answer(600))],
        inbound(Answered, false),
    );
    caller(
        "b-abandoned",
        B_MAIN,
        Act::Cancel { ms: 800 },
        vec![("h3", Ring)],
        inbound(Missed, true),
    );
    caller(
        "b-voicemail",
        B_MAIN,
        Act::Talk { ms: 1000 },
        vec![("h3", Ring), ("vm", answer(100))],
        inbound(Missed, false),
    );
    caller(
        "b-ivr",
        B_IVR,
        Act::Talk { ms: 800 },
        vec![("ivr", answer(100))],
        inbound(EndedInIvr, true),
    );
    caller(
        "b-callback-never-made",
        B_CALLBACK,
        Act::FarEnd,
        vec![(
            "cb",
            AnswerThenHangUp {
                after_ms: 100,
                talk_ms: 600,
            },
        )],
        inbound(CallbackRequested, false),
    );
    // a number the PBX rings but the site file does not list
    caller(
        "unlisted",
        UNLISTED,
        Act::Talk { ms: 800 },
        vec![("h1", answer(500)), ("h2", Ring)],
        inbound(Answered, false),
    );
    // the handsets' own calls: never inbound calls
    let a_callback_caller = calls
        .iter()
        .find(|c| c.label == "a-callback")
        .expect("planned")
        .caller
        .clone();
    let mut handset = |label: &str,
                       from: &str,
                       caller: &str,
                       dialled: &str,
                       at_ms: u32,
                       act: Act,
                       replies: Vec<(&'static str, Reply)>,
                       intent: Intent| {
        calls.push(PlannedCall {
            label: label.into(),
            from: from.into(),
            caller: caller.into(),
            dialled: dialled.into(),
            at_ms,
            act,
            replies,
            intent,
        })
    };
    handset(
        "out",
        "d1",
        "211",
        "01134960000",
        100,
        Act::Talk { ms: 800 },
        vec![("out", answer(300))],
        Intent::NotInbound,
    );
    handset(
        "internal",
        "d2",
        "212",
        "211",
        300,
        Act::Talk { ms: 600 },
        vec![("h1", answer(400))],
        Intent::NotInbound,
    );
    handset(
        "internal-busy",
        "d3",
        "221",
        "212",
        500,
        Act::Busy,
        vec![("h2", Busy { after_ms: 200 })],
        Intent::NotInbound,
    );
    // the callback, in national form (the caller called from +44...), once
    // the request has ended (dialled at 1.4 s, ended about 1.1 s later)
    let national = format!("0{}", &a_callback_caller[3..]);
    handset(
        "callback",
        "d1",
        "211",
        &national,
        4500,
        Act::Talk { ms: 500 },
        vec![("out", answer(300))],
        Intent::CallbackFor("a-callback".into()),
    );
    // another call to the same caller: one request, one callback made
    handset(
        "callback-again",
        "d2",
        "212",
        &a_callback_caller,
        5500,
        Act::Talk { ms: 500 },
        vec![("out", answer(200))],
        Intent::NotInbound,
    );
    calls
}

