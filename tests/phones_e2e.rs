//! Live, with real SIP phones: a real Kamailio as practice A's phone
//! system (`tests/kamailio/kamailio.cfg`, on 127.0.0.10), two baresip
//! handsets registered to it (H1, ext 211 on 127.0.1.11; H2, ext 212 on
//! 127.0.1.12: the ring group of 01632 960100), and a baresip as the
//! patient calling through the carrier (127.0.0.2, not on the staff
//! network); everything on loopback, captured on `lo`, the capture replayed
//! by `cbt-agent replay` (`cbt_tests::kamailio::replay`, the library entry
//! point of the command).
//!
//! sipp (in `kamailio_e2e`) plays scripted messages; these are full user
//! agents that negotiate media, send RTP, register every minute
//! (REGISTER noise the agent must not count), put calls on hold with
//! re-INVITEs and transfer them with REFER, each the way a phone does.
//! Each test places one call and proves that cbt-agent's view of it is
//! what the phones did:
//!
//! - [`ring_group_answered`]: both handsets ring, H1 answers after 2 s (H2
//!   stops ringing), the caller hangs up 3 s later: one inbound answered
//!   call, wait about 2 s, duration about 3 s;
//! - [`hold_and_resume`]: H1 puts the caller on hold and takes them off
//!   it (two re-INVITEs): still one answered call, for its whole length;
//! - [`withheld_caller`]: `From: "Anonymous" <sip:anonymous@anonymous.invalid>`:
//!   counted like any other call (answered by H2);
//! - [`caller_gives_up_while_ringing`]: CANCEL after 2 s of ringing: one
//!   missed, abandoned call that waited from the INVITE to the CANCEL;
//! - [`blind_transfer`]:
//!   H1 answers and transfers the caller to H2 (REFER; the caller's phone
//!   calls 212 with a new INVITE), H2 answers, the caller hangs up: ONE
//!   inbound call, answered by H1, lasting until the caller's last leg
//!   ends; H2 ringing for the transfer is not a new call. Its capture and
//!   the phones' events are kept at `/work/phones-transfer.pcap` and
//!   `/work/phones-transfer.events.txt` as well as in the work directory.
//! - [`attended_transfer`]: the same three roles played by linphone's
//!   console (`cbt_tests::linphone`; baresip 1.0 has no attended
//!   transfer): H1 answers, holds the caller, calls H2, H2 answers, H1
//!   transfers the caller to that call (REFER with `Replaces`; the caller's
//!   INVITE with `Replaces` takes the consultation's place at H2): ONE
//!   inbound call, answered by H1, lasting until the caller hangs up on H2.
//! - [`directed_pickup`]: H3 (ext 221, outside the group) picks up the
//!   call ringing at H1 and H2 with an INVITE carrying `Replaces`, which
//!   Kamailio relays to the caller: ONE inbound call, answered at the
//!   pickup, ended when H3 hangs up.
//!
//! Expected values come from the phones alone (the times baresip reported
//! its commands done and its calls' events over `ctrl_tcp`; see
//! `cbt_tests::baresip` for which packet each time bounds), never from
//! cbt-agent. Each time is the earliest report that follows its packet on
//! either side: the caller's BYE is before both the caller's `hangup`
//! response and the handset's `CALL_CLOSED` (the BYE relayed), and the
//! side that tears down its media first can be a few tens of
//! milliseconds late (baresip stops its audio threads before it reports). Each time cbt-agent reports must be at or before the
//! phone's, by [`PHONE_LAG_US`] (50 ms) at most, and each wait and
//! duration within 50 ms. `kamailio_e2e` allows 20 ms against sipp's own
//! log times; the phones' events carry no time of their own, so they are
//! timed when this test reads them from a TCP socket through a thread, and
//! on a loaded 2-core machine one came 24 ms after its packet. The
//! median check of that test is not made here either. (Wait and duration
//! buckets are whole seconds: 50 ms still catches any wrong packet or
//! rule: the phones act a second or more apart in these scenarios.)
//!
//! Needs baresip (`baresip-core`), kamailio, sipp, dumpcap or tcpdump and
//! the right to capture on `lo`. Without them: `SKIP: ...`, except under CI
//! where it fails. The work directory (each phone's configuration, log and
//! events, kamailio's log, the capture, the site file and cbt-agent's
//! outputs) is kept in `target/tmp/phones_e2e/<test>`. 3 to 9 s a test,
//! about 20 s for the four that run by default.

use cbt_proto::call::Outcome;
use cbt_agent::daemon::capture::now;
use cbt_proto::Timestamp;
use cbt_tests::baresip::{self, Phone, PhoneEvent, PhoneSpec};
use cbt_tests::in_ci;
use cbt_tests::kamailio::{self, CallOut, Differences, Kamailio, CALLER_IP, PBX_IP, PRACTICE_A};
use cbt_tests::linphone::{Linphone, LinphoneSpec};
use cbt_tests::sipp::{self, Capture, CaptureError};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TEST: &str = "phones_e2e";
const H1_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 11);
const H2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 12);
/// A third handset (ext 221), outside practice A's ring group.
const H3_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 21);
/// Practice A's reception (the ring group H1 + H2).
const A_MAIN: &str = "01632960100";
/// The caller's number (a UK mobile number for drama, Ofcom's range).
const CALLER_NUMBER: &str = "+447700900123";
const WITHHELD: &str = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";
/// Long enough for any phone to act, even on a machine busy with builds
/// (5 s was not, once: a handset's CALL_INCOMING arrived later). Only a
/// bound on waiting: times come from the events themselves.
const PATIENCE: Duration = Duration::from_secs(20);
/// How far a phone's event may trail cbt-agent's time of its packet (see
/// the module's notes).
const PHONE_LAG_US: i64 = 50_000;

/// One test at a time: each runs a Kamailio, three phones and a capture
/// on the same addresses, and their timing is what is measured.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn work_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(TEST)
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn free(ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, sipp::free_udp_port(ip))
}

/// Kamailio, the capture and the three phones of one test.
struct Rig {
    dir: PathBuf,
    started: Instant,
    pbx: SocketAddrV4,
    cap: Capture,
    kam: Kamailio,
    caller: Phone,
    h1: Phone,
    h2: Phone,
}

/// Starts everything, or `None` after `SKIP: ...` when a tool or the right
/// to capture is missing (outside CI). `caller_aor`: the caller's From.
fn rig(test: &str, caller_aor: &str) -> Option<Rig> {
    let (bin, modules) = baresip::baresip_or_skip(test)?;
    let Pbx { started, dir, pbx, caller_at, h1_at, h2_at, cap, kam, .. } = Pbx::start(test)?;
    let phone = |name: &str, sip: SocketAddrV4, aor: String, register: Option<u32>| {
        let spec = PhoneSpec {
            name: name.into(),
            sip,
            aor,
            register_every_s: register,
        };
        Phone::start(&bin, &modules, &spec, &dir)
            .unwrap_or_else(|e| panic!("{test}: {e} (work directory {})", dir.display()))
    };
    let caller = phone("caller", caller_at, caller_aor.to_string(), None);
    // the handsets' accounts are at the PBX: they register to it as they
    // start (before their control socket opens: no REGISTER_OK event
    // reaches the test), and again every minute
    let h1 = phone("h1", h1_at, format!("<sip:211@{pbx}>"), Some(60));
    let h2 = phone("h2", h2_at, format!("<sip:212@{pbx}>"), Some(60));
    Some(Rig {
        dir,
        started,
        pbx,
        cap,
        kam,
        caller,
        h1,
        h2,
    })
}

/// The parts every test shares: its work directory, the capture on `lo`
/// and Kamailio with the ring group H1 + H2, and the phones' addresses.
struct Pbx {
    started: Instant,
    dir: PathBuf,
    pbx: SocketAddrV4,
    caller_at: SocketAddrV4,
    h1_at: SocketAddrV4,
    h2_at: SocketAddrV4,
    h3_at: SocketAddrV4,
    cap: Capture,
    kam: Kamailio,
}

impl Pbx {
    /// Starts the capture and Kamailio, or `None` after `SKIP: ...` when
    /// Kamailio or the right to capture is missing (outside CI).
    fn start(test: &str) -> Option<Pbx> {
        let (tools, kamailio_bin) = kamailio::tools_or_skip(test)?;
        let started = Instant::now();
        let dir = work_dir(test);
        let pbx = free(PBX_IP);
        let (caller_at, h1_at, h2_at, h3_at) = (free(CALLER_IP), free(H1_IP), free(H2_IP), free(H3_IP));
        let pcap = dir.join("capture.pcap");
        let cap = match Capture::start(&tools.capture, "lo", &[pbx, caller_at, h1_at, h2_at, h3_at], &pcap) {
            Ok(c) => c,
            Err(CaptureError::Permission(m)) if !in_ci() => {
                eprintln!("SKIP: {test}: cannot capture on lo: {m} (run as root, or give dumpcap its capabilities)");
                return None;
            }
            Err(e) => panic!("{test}: {e}"),
        };
        let defines = vec![
            ("H1".to_string(), format!("\"{h1_at}\"")),
            ("H2".to_string(), format!("\"{h2_at}\"")),
            ("H3".to_string(), format!("\"{h3_at}\"")),
            // no voicemail during these calls
            ("NOANSWER_MS".to_string(), "60000".to_string()),
        ];
        let kam = Kamailio::start(&kamailio_bin, pbx, &defines, &dir)
            .unwrap_or_else(|e| panic!("{test}: {e} (work directory {})", dir.display()));
        Some(Pbx { started, dir, pbx, caller_at, h1_at, h2_at, h3_at, cap, kam })
    }
}

/// What the phones did, and what cbt-agent made of the capture.
struct Done {
    dir: PathBuf,
    pcap: PathBuf,
    /// Every phone's events, in time order, one a line.
    events_file: PathBuf,
    calls: Vec<CallOut>,
    here: String,
}

/// One of the two handsets of practice A's ring group.
#[derive(Clone, Copy)]
enum Handset {
    H1,
    H2,
}

impl Rig {
    fn handset(&mut self, h: Handset) -> &mut Phone {
        match h {
            Handset::H1 => &mut self.h1,
            Handset::H2 => &mut self.h2,
        }
    }

    /// `h` answers: the 200 is at the earlier of its `accept` done and the
    /// caller's CALL_ESTABLISHED.
    fn answer(&mut self, h: Handset) -> Timestamp {
        let accepted = ok(self.handset(h).accept()).at;
        accepted.min(ok(self.caller.wait_for("CALL_ESTABLISHED", PATIENCE)).at)
    }

    /// The caller hangs up on `h`: the BYE is at the earlier of the
    /// caller's `hangup` done and the handset's CALL_CLOSED.
    fn caller_hangs_up(&mut self, h: Handset) -> Timestamp {
        let hung_up = ok(self.caller.hangup()).at;
        hung_up.min(ok(self.handset(h).wait_for("CALL_CLOSED", PATIENCE)).at)
    }

    fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.pbx)
    }

    /// Stops the capture (once everything sent is in it), Kamailio and the
    /// phones; replays the capture.
    fn finish(self, test: &str) -> Done {
        let Rig {
            dir,
            started,
            cap,
            kam,
            caller,
            h1,
            h2,
            ..
        } = self;
        let mut all: Vec<(String, PhoneEvent)> = Vec::new();
        for p in [&caller, &h1, &h2] {
            all.extend(p.events().into_iter().map(|e| (p.spec.name.clone(), e)));
        }
        all.sort_by_key(|(_, e)| e.at);
        let events: Vec<(Timestamp, String)> = all
            .iter()
            .map(|(who, e)| {
                (
                    e.at,
                    format!(
                        "{who} {} call={} peer={} param={:?}",
                        e.kind,
                        e.call_id,
                        e.peer,
                        e.param.trim_end()
                    ),
                )
            })
            .collect();
        let quit = move || {
            for p in [caller, h1, h2] {
                p.quit();
            }
        };
        finish(test, dir, started, cap, kam, events, quit)
    }
}

/// Stops the capture (once everything sent is in it), writes the phones'
/// events (`events`, each with its time) to `events.txt`, quits the phones
/// (`quit`) and Kamailio, and replays the capture.
fn finish(
    test: &str,
    dir: PathBuf,
    started: Instant,
    cap: Capture,
    kam: Kamailio,
    mut events: Vec<(Timestamp, String)>,
    quit: impl FnOnce(),
) -> Done {
    let pcap = cap.file.clone();
    cap.stop()
        .unwrap_or_else(|e| panic!("{test}: the capture: {e}"));
    // the handsets' registrations are in what cbt-agent reads (and must
    // not count)
    let bytes = std::fs::read(&pcap).expect("capture");
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for h in ["211", "212"] {
        assert!(
            // (baresip writes `To: <sip:211@...>`, linphone `To: sip:211@...`)
            has(&format!("REGISTER sip:{}", kam.addr)) && (has(&format!("To: <sip:{h}@")) || has(&format!("To: sip:{h}@"))),
            "{test}: no REGISTER of {h} in the capture {}",
            pcap.display()
        );
    }
    events.sort_by_key(|(at, _)| *at);
    let events_file = dir.join("events.txt");
    let text: String = events.iter().map(|(at, e)| format!("{at} {e}\n")).collect();
    std::fs::write(&events_file, text).expect("events file");
    quit();
    kam.stop()
        .unwrap_or_else(|e| panic!("{test}: kamailio: {e}"));
    let site = dir.join("site.toml");
    std::fs::write(&site, kamailio::site_toml()).expect("site file");
    let replayed = kamailio::replay(&site, std::slice::from_ref(&pcap), &dir);
    std::fs::write(
        dir.join("calls.jsonl"),
        replayed
            .calls
            .iter()
            .map(|c| format!("{}\n", serde_json::to_string(c).expect("JSON")))
            .collect::<String>(),
    )
    .ok();
    std::fs::write(dir.join("report.txt"), &replayed.report).ok();
    let here = format!(
        "(test {:.1} s; the capture, the phones' logs and events, kamailio's log and cbt-agent's outputs are in {})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    eprintln!("{test}: {here}");
    Done {
        dir,
        pcap,
        events_file,
        calls: replayed.calls,
        here,
    }
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One inbound call as the phones saw it.
#[derive(Debug)]
struct Expected {
    outcome: Outcome,
    abandoned: bool,
    ended_by_caller: bool,
    /// The caller's INVITE (its `dial` done, or a handset ringing).
    started: Timestamp,
    /// The first handset's INVITE, and its 180 (its `CALL_INCOMING`,
    /// which baresip reports once it has sent the 180).
    queue_joined: Timestamp,
    /// The first 180, when a later report bounds it than `queue_joined`
    /// (linphone reports an incoming call before it sends its 180).
    first_ring: Option<Timestamp>,
    /// The handset's 200 (its `accept` done, or the caller's
    /// `CALL_ESTABLISHED`).
    answered: Option<Timestamp>,
    /// The caller's BYE or CANCEL (its `hangup` done, or the handset's
    /// `CALL_CLOSED`).
    ended: Timestamp,
    /// The caller and each handset that got the INVITE, when known.
    legs: Option<u32>,
}

impl Expected {
    /// A call transferred by the handset that answered it: answered by
    /// that first person (`answered`), lasting until the caller hangs up on
    /// the transfer target (`ended`). The legs a transfer adds are not
    /// counted here.
    fn transferred(started: Timestamp, queue_joined: Timestamp, first_ring: Option<Timestamp>, answered: Timestamp, ended: Timestamp) -> Expected {
        Expected {
            outcome: Outcome::Answered,
            abandoned: false,
            ended_by_caller: true,
            started,
            queue_joined,
            first_ring,
            answered: Some(answered),
            ended,
            legs: None,
        }
    }

    fn wait_us(&self) -> i64 {
        match self.answered {
            Some(a) => a.since(self.queue_joined),
            // never answered by anything: from the INVITE to the end
            None => self.ended.since(self.started),
        }
    }

    fn duration_us(&self) -> Option<i64> {
        self.answered.map(|a| self.ended.since(a))
    }
}

fn at(s: &Option<String>) -> Option<i64> {
    s.as_deref().map(|s| kamailio::ts(s).micros())
}

/// Every way cbt-agent's calls differ from the one call the phones made.
fn differences(want: &Expected, calls: &[CallOut]) -> String {
    let mut report = String::new();
    if calls.len() != 1 {
        let _ = writeln!(
            report,
            "{} inbound calls, but the caller made one call (the phones' events: {want:?})",
            calls.len()
        );
        for c in calls {
            let _ = writeln!(
                report,
                "  {} {} started {} answered {:?} ended {} wait {:?} duration {:?} legs {}",
                c.practice,
                c.outcome,
                c.started,
                c.answered,
                c.ended,
                c.wait_s,
                c.duration_s,
                c.legs
            );
        }
    }
    // the call that started at the caller's INVITE
    let Some(c) = calls.iter().find(|c| {
        (want.started.micros() - kamailio::ts(&c.started).micros()).abs() <= PHONE_LAG_US
    }) else {
        let _ = writeln!(
            report,
            "no inbound call started at the caller's INVITE ({})",
            want.started
        );
        return report;
    };
    let who = "the call";
    if c.practice != PRACTICE_A {
        let _ = writeln!(report, "practice {}, expected {PRACTICE_A}", c.practice);
    }
    if c.outcome != want.outcome.name() {
        let _ = writeln!(
            report,
            "outcome {}, expected {}",
            c.outcome,
            want.outcome.name()
        );
    }
    if c.abandoned != want.abandoned {
        let _ = writeln!(
            report,
            "abandoned {}, expected {}",
            c.abandoned, want.abandoned
        );
    }
    let by = if want.ended_by_caller {
        "caller"
    } else {
        "practice"
    };
    if c.ended_by != by {
        let _ = writeln!(report, "ended_by {}, expected {by}", c.ended_by);
    }
    if !c.offered_to_staff {
        let _ = writeln!(report, "not offered to staff, but the handsets rang");
    }
    if c.partial {
        let _ = writeln!(report, "marked partial");
    }
    if let Some(legs) = want.legs {
        if c.legs != legs {
            let _ = writeln!(
                report,
                "{} legs, but the caller and {} handsets got the INVITE",
                c.legs,
                legs - 1
            );
        }
    }
    let mut d = Differences::with_lag(PHONE_LAG_US);
    d.time(
        who,
        "started",
        Some(want.started.micros()),
        Some(kamailio::ts(&c.started).micros()),
    );
    d.time(
        who,
        "queue_joined",
        Some(want.queue_joined.micros()),
        at(&c.queue_joined),
    );
    d.time(
        who,
        "first_ring",
        Some(want.first_ring.unwrap_or(want.queue_joined).micros()),
        at(&c.first_ring),
    );
    d.time(
        who,
        "answered",
        want.answered.map(|t| t.micros()),
        at(&c.answered),
    );
    d.time(
        who,
        "ended",
        Some(want.ended.micros()),
        Some(kamailio::ts(&c.ended).micros()),
    );
    let us = |s: Option<f64>| s.map(|s| (s * 1e6).round() as i64);
    d.span(who, "wait", Some(want.wait_us()), us(c.wait_s));
    d.span(who, "duration", want.duration_us(), us(c.duration_s));
    // (Differences prints "sipp's log": here, the phones' events)
    eprintln!("the phones' events minus cbt-agent's times:");
    d.print();
    report.push_str(&d.problems);
    report
}

fn check(test: &str, want: &Expected, done: &Done) {
    let report = differences(want, &done.calls);
    assert!(
        report.is_empty(),
        "{test}: cbt-agent's view differs from what the phones did {}:\n{report}",
        done.here
    );
}

/// The caller dials practice A's reception; returns once both handsets
/// ring: (the INVITE, the first handset's INVITE).
fn dial_ring_group(rig: &mut Rig) -> (Timestamp, Timestamp) {
    let uri = rig.uri(A_MAIN);
    let dialled = ok(rig.caller.dial(&uri)).at;
    let r1 = ok(rig.h1.wait_for("CALL_INCOMING", PATIENCE)).at;
    let r2 = ok(rig.h2.wait_for("CALL_INCOMING", PATIENCE)).at;
    ok(rig.caller.wait_for("CALL_RINGING", PATIENCE));
    (dialled.min(r1).min(r2), r1.min(r2))
}

#[test]
fn ring_group_answered() {
    let test = "ring_group_answered";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let caller = format!("<sip:{CALLER_NUMBER}@{CALLER_IP}>");
    let Some(mut rig) = rig(test, &caller) else {
        return;
    };
    let (started, queue_joined) = dial_ring_group(&mut rig);
    sleep_past(started, 2000);
    let answered = rig.answer(Handset::H1);
    // H2 stops ringing (Kamailio CANCELs its branch)
    ok(rig.h2.wait_for("CALL_CLOSED", PATIENCE));
    sleep_past(answered, 3000);
    let ended = rig.caller_hangs_up(Handset::H1);
    let done = rig.finish(test);
    check(
        test,
        &Expected {
            outcome: Outcome::Answered,
            abandoned: false,
            ended_by_caller: true,
            started,
            queue_joined,
            first_ring: None,
            answered: Some(answered),
            ended,
            legs: Some(3),
        },
        &done,
    );
}

#[test]
fn hold_and_resume() {
    let test = "hold_and_resume";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let caller = format!("<sip:{CALLER_NUMBER}@{CALLER_IP}>");
    let Some(mut rig) = rig(test, &caller) else {
        return;
    };
    let (started, queue_joined) = dial_ring_group(&mut rig);
    sleep_past(started, 1000);
    let answered = rig.answer(Handset::H1);
    sleep_past(answered, 1000);
    // re-INVITE a=sendonly; the caller's phone answers a=recvonly
    ok(rig.h1.hold());
    ok(rig.caller.wait_for_nth("CALL_REMOTE_SDP", 2, PATIENCE));
    sleep_past(answered, 2500);
    ok(rig.h1.resume());
    ok(rig.caller.wait_for_nth("CALL_REMOTE_SDP", 3, PATIENCE));
    sleep_past(answered, 3500);
    let ended = rig.caller_hangs_up(Handset::H1);
    let done = rig.finish(test);
    check(
        test,
        &Expected {
            outcome: Outcome::Answered,
            abandoned: false,
            ended_by_caller: true,
            started,
            queue_joined,
            first_ring: None,
            answered: Some(answered),
            ended,
            legs: Some(3),
        },
        &done,
    );
}

#[test]
fn withheld_caller() {
    let test = "withheld_caller";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut rig) = rig(test, WITHHELD) else {
        return;
    };
    let (started, queue_joined) = dial_ring_group(&mut rig);
    let incoming = ok(rig.h2.wait_for("CALL_INCOMING", PATIENCE));
    assert!(
        incoming.peer.contains("anonymous@anonymous.invalid"),
        "{test}: the handset saw the caller as {}, not withheld",
        incoming.peer
    );
    sleep_past(started, 1000);
    let answered = rig.answer(Handset::H2);
    sleep_past(answered, 1500);
    let ended = rig.caller_hangs_up(Handset::H2);
    let done = rig.finish(test);
    check(
        test,
        &Expected {
            outcome: Outcome::Answered,
            abandoned: false,
            ended_by_caller: true,
            started,
            queue_joined,
            first_ring: None,
            answered: Some(answered),
            ended,
            legs: Some(3),
        },
        &done,
    );
}

#[test]
fn caller_gives_up_while_ringing() {
    let test = "caller_gives_up_while_ringing";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let caller = format!("<sip:{CALLER_NUMBER}@{CALLER_IP}>");
    let Some(mut rig) = rig(test, &caller) else {
        return;
    };
    let (started, queue_joined) = dial_ring_group(&mut rig);
    sleep_past(started, 2000);
    // CANCEL
    let hung_up = ok(rig.caller.hangup()).at;
    let ended = hung_up
        .min(ok(rig.h1.wait_for("CALL_CLOSED", PATIENCE)).at)
        .min(ok(rig.h2.wait_for("CALL_CLOSED", PATIENCE)).at);
    let done = rig.finish(test);
    check(
        test,
        &Expected {
            outcome: Outcome::Missed,
            abandoned: true,
            ended_by_caller: true,
            started,
            queue_joined,
            first_ring: None,
            answered: None,
            ended,
            legs: Some(3),
        },
        &done,
    );
}

/// Keeps a copy of the transfer's capture and events where the engineer
/// implementing the transfer rule will look for them.
fn keep_for_issue_11(done: &Done) {
    for (from, to) in [
        (&done.pcap, "/work/phones-transfer.pcap"),
        (&done.events_file, "/work/phones-transfer.events.txt"),
    ] {
        if Path::new("/work").is_dir() {
            use std::os::unix::fs::PermissionsExt;
            // dumpcap writes its file 0600
            let copied = std::fs::copy(from, to)
                .and_then(|_| std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)));
            if let Err(e) = copied {
                eprintln!("cannot copy {} to {to}: {e}", from.display());
            }
        }
    }
    eprintln!(
        "blind_transfer: cbt-agent's calls:\n{}",
        std::fs::read_to_string(done.dir.join("calls.jsonl")).unwrap_or_default()
    );
}

/// The rule of issue 11: a blind transfer keeps the call one inbound
/// call, answered by the first person who answered, lasting until the end
/// of the last leg carrying the caller; the transfer target ringing is not
/// a new call.
///
/// baresip 1.0.0 sends neither `Referred-By` in the REFER nor anything
/// tying the new INVITE to the old call: the caller's new INVITE (new
/// Call-ID, same From, same source address, Request-URI = the REFER's
/// `Refer-To`) starts while its first leg is still up; H1's BYE ends the
/// first leg once the caller's NOTIFY says H2 answered.
///
/// Before the transfer rule (main 786dd61) cbt-agent made one call (5
/// legs), answered by H1 with the right wait, but ended at H1's BYE
/// (`ended_by` practice, duration 3.0 s instead of 5.0 s). The rule
/// (docs/cbt-indicators.md, "Transfers") ties the caller's new INVITE to
/// the call in which the REFER was seen.
#[test]
fn blind_transfer() {
    let test = "blind_transfer";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let caller = format!("<sip:{CALLER_NUMBER}@{CALLER_IP}>");
    let Some(mut rig) = rig(test, &caller) else {
        return;
    };
    let (started, queue_joined) = dial_ring_group(&mut rig);
    sleep_past(started, 2000);
    let answered = rig.answer(Handset::H1);
    ok(rig.h2.wait_for("CALL_CLOSED", PATIENCE));
    sleep_past(answered, 1500);
    // REFER to the caller, Refer-To: sip:212@PBX; the caller's phone
    // INVITEs 212 through Kamailio (a new Call-ID)
    let target = rig.uri("212");
    ok(rig.h1.transfer(&target));
    ok(rig.caller.wait_for("TRANSFER", PATIENCE));
    let rung = ok(rig.h2.wait_for_nth("CALL_INCOMING", 2, PATIENCE)).at;
    sleep_past(rung, 1500);
    ok(rig.h2.accept());
    ok(rig.caller.wait_for_nth("CALL_ESTABLISHED", 2, PATIENCE));
    // H1 hangs up once the NOTIFY says the new call is up
    ok(rig.h1.wait_for("CALL_CLOSED", PATIENCE));
    std::thread::sleep(Duration::from_millis(2000));
    let hung_up = ok(rig.caller.hangup()).at;
    let ended = hung_up.min(ok(rig.h2.wait_for_nth("CALL_CLOSED", 2, PATIENCE)).at);
    let done = rig.finish(test);
    keep_for_issue_11(&done);
    check(test, &Expected::transferred(started, queue_joined, None, answered, ended), &done);
}

/// The attended transfer of issue 11, with linphone's console as all
/// three phones (baresip 1.0 has no attended transfer): the caller rings
/// practice A's group through Kamailio, H1 answers, puts the caller on
/// hold and calls H2 (extension 212, an internal call), H2 answers, and H1
/// transfers the caller to that call (`transfer 1 --to-call 2`: a REFER to
/// the caller whose Refer-To carries `Replaces`). The caller's phone
/// INVITEs 212 through Kamailio with `Replaces` (a new Call-ID), H2's
/// phone takes it in place of H1's consultation call, and H1 hangs up on
/// the caller once the caller's NOTIFY says the new call is up. Then the
/// caller talks to H2 and hangs up.
///
/// One inbound call: answered by H1 (the first person who answered),
/// lasting to the end of the caller's call with H2, ended by the caller;
/// the consultation call is an internal call, not a second inbound call.
#[test]
fn attended_transfer() {
    let test = "attended_transfer";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut rig) = Linphones::start(test) else {
        return;
    };
    let pbx = rig.pbx.pbx;
    let mut caller = rig.phone("caller", rig.pbx.caller_at, format!("<sip:{CALLER_NUMBER}@{CALLER_IP}>"));
    let mut h1 = rig.phone("h1", rig.pbx.h1_at, format!("<sip:211@{pbx}>"));
    let mut h2 = rig.phone("h2", rig.pbx.h2_at, format!("<sip:212@{pbx}>"));

    ok(caller.command(&format!("call sip:{A_MAIN}@{pbx}")));
    // "in progress": the INVITE is sent; "ringing": a handset's 180 came back
    let started = ok(caller.wait_for_all(&["Call 1 to", "in progress"], 1, PATIENCE)).at;
    let (queue_joined, first_ring, h1_first) = group_rings(&caller, &h1, &h2);
    sleep_past(started, 2000);
    ok(h1.command(&format!("answer {h1_first}")));
    let answered = connected(&h1, h1_first).min(connected(&caller, 1));
    // the group's other leg is cancelled
    ended_at(&h2, 1);
    sleep_past(answered, 1500);
    // the consultation: the caller on hold, H1 calls extension 212
    ok(h1.command(&format!("pause {h1_first}")));
    ok(h1.wait_for("is now paused", 1, PATIENCE));
    ok(h1.command(&format!("call sip:212@{pbx}")));
    let consult = ok(h1.wait_for("Establishing call id to sip:212", 1, PATIENCE));
    let consult: u32 = consult.text.rsplit("assigned id ").next().and_then(|s| s.trim().parse().ok()).expect("H1's call id");
    let (rung, h2_consult) = ok(h2.incoming_call(2, PATIENCE));
    sleep_past(rung.at, 1000);
    ok(h2.command(&format!("answer {h2_consult}")));
    let consulted = connected(&h1, consult);
    sleep_past(consulted, 1500);
    ok(h1.command(&format!("transfer {h1_first} --to-call {consult}")));
    // the caller's new call (id 2) replaces the consultation at H2
    let transferred = connected(&caller, 2);
    ended_at(&h1, h1_first);
    sleep_past(transferred, 2000);
    ok(caller.command("terminate all"));
    let (_, h2_replaced) = ok(h2.incoming_call(3, PATIENCE));
    let ended = ended_at(&caller, 2).min(ended_at(&h2, h2_replaced));
    let done = rig.finish(test, vec![caller, h1, h2]);
    check(test, &Expected::transferred(started, queue_joined, Some(first_ring), answered, ended), &done);
}

/// A directed pickup of issue 11, with real phones through the proxy: the
/// caller rings practice A's group (H1 and H2), and a third handset, H3
/// (ext 221, not in the group), picks the call up: an INVITE to the caller
/// with `Replaces` naming the caller's ringing dialog with H1 (its ids as
/// Kamailio logged H1's 180), which Kamailio relays to the caller. The
/// caller's phone takes it (linphone 5.1 offers such an INVITE as a new
/// call rather than taking it at once, so its console is told to answer
/// it; on that answer it cancels its first INVITE itself, as RFC 3891
/// asks), the group stops ringing, and H3 hangs up later.
///
/// One inbound call: answered at the pickup (H3's 200), lasting until H3
/// hangs up, ended by the practice; the pickup is not a second call.
#[test]
fn directed_pickup() {
    let test = "directed_pickup";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mut rig) = Linphones::start(test) else {
        return;
    };
    let pbx = rig.pbx.pbx;
    let caller_at = rig.pbx.caller_at;
    let mut caller = rig.phone("caller", caller_at, format!("<sip:{CALLER_NUMBER}@{CALLER_IP}>"));
    let h1 = rig.phone("h1", rig.pbx.h1_at, format!("<sip:211@{pbx}>"));
    let h2 = rig.phone("h2", rig.pbx.h2_at, format!("<sip:212@{pbx}>"));
    let mut h3 = rig.phone("h3", rig.pbx.h3_at, format!("<sip:221@{pbx}>"));

    ok(caller.command(&format!("call sip:{A_MAIN}@{pbx}")));
    let started = ok(caller.wait_for_all(&["Call 1 to", "in progress"], 1, PATIENCE)).at;
    let (queue_joined, first_ring, _) = group_rings(&caller, &h1, &h2);
    // the caller's dialog with H1, as Kamailio saw H1's 180
    let ringing = rig.logged_180(rig.pbx.h1_at);
    sleep_past(started, 2000);
    // Replaces names the dialog from the caller's side: its own tag is the
    // to-tag, H1's the from-tag (RFC 3891)
    ok(h3.command(&format!(
        "call <sip:{CALLER_NUMBER}@{caller_at}?Replaces={}%3Bto-tag%3D{}%3Bfrom-tag%3D{}>",
        ringing.call_id, ringing.from_tag, ringing.to_tag
    )));
    let (_, pickup) = ok(caller.incoming_call(1, PATIENCE));
    ok(caller.command(&format!("answer {pickup}")));
    let answered = connected(&caller, pickup).min(connected(&h3, 1));
    // the caller's first INVITE is cancelled, and with it the group
    ended_at(&caller, 1);
    ended_at(&h1, 1);
    ended_at(&h2, 1);
    sleep_past(answered, 3000);
    ok(h3.command("terminate all"));
    let ended = ended_at(&h3, 1).min(ended_at(&caller, pickup));
    let done = rig.finish(test, vec![caller, h1, h2, h3]);
    check(
        test,
        &Expected {
            outcome: Outcome::Answered,
            abandoned: false,
            ended_by_caller: false,
            started,
            queue_joined,
            first_ring: Some(first_ring),
            answered: Some(answered),
            ended,
            legs: None,
        },
        &done,
    );
}

/// Practice A's group ringing for the caller's call 1: when the first
/// handset said it had the INVITE (linphone says so before it sends its
/// 180), when the caller heard the first 180, and H1's number for the call.
fn group_rings(caller: &Linphone, h1: &Linphone, h2: &Linphone) -> (Timestamp, Timestamp, u32) {
    let (h1_rung, h1_call) = ok(h1.incoming_call(1, PATIENCE));
    let (h2_rung, _) = ok(h2.incoming_call(1, PATIENCE));
    let first_ring = ok(caller.wait_for_all(&["Call 1 to", "ringing"], 1, PATIENCE)).at;
    (h1_rung.at.min(h2_rung.at), first_ring, h1_call)
}

/// Kamailio and the capture for phones that are linphone consoles
/// (`cbt_tests::linphone`): what baresip cannot do.
struct Linphones {
    bin: PathBuf,
    pbx: Pbx,
}

/// A dialog as Kamailio logged a 180 (see `onreply_route` in
/// `tests/kamailio/kamailio.cfg`).
struct Ringing {
    call_id: String,
    from_tag: String,
    to_tag: String,
}

impl Linphones {
    fn start(test: &str) -> Option<Linphones> {
        let bin = cbt_tests::linphone::linphonec_or_skip(test)?;
        Some(Linphones { bin, pbx: Pbx::start(test)? })
    }

    /// A phone registered to the PBX (waits until it is: see the
    /// `cbt_tests::linphone` notes on media addresses).
    fn phone(&mut self, name: &str, sip: SocketAddrV4, identity: String) -> Linphone {
        let spec = LinphoneSpec { name: name.into(), sip, identity, proxy: self.pbx.pbx };
        let mut p = Linphone::start(&self.bin, &spec, &self.pbx.dir)
            .unwrap_or_else(|e| panic!("{e} (work directory {})", self.pbx.dir.display()));
        ok(p.wait_registered(PATIENCE));
        p
    }

    /// The first 180 Kamailio relayed from `from`, with its dialog.
    fn logged_180(&self, from: SocketAddrV4) -> Ringing {
        let deadline = Instant::now() + PATIENCE;
        let mark = format!("ringing from {} ", from.ip());
        loop {
            let log = std::fs::read_to_string(&self.pbx.kam.log).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains(&mark)) {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .unwrap_or_else(|| panic!("no {k} in `{line}`"))
                        .to_string()
                };
                return Ringing { call_id: field("call-id="), from_tag: field("from-tag="), to_tag: field("to-tag=") };
            }
            assert!(Instant::now() < deadline, "no 180 from {from} in {}", self.pbx.kam.log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self, test: &str, phones: Vec<Linphone>) -> Done {
        let mut events = Vec::new();
        for p in &phones {
            events.extend(p.lines().into_iter().map(|l| (l.at, format!("{} {}", p.spec.name, l.text))));
        }
        let quit = move || {
            for p in phones {
                p.quit();
            }
        };
        let Pbx { started, dir, cap, kam, .. } = self.pbx;
        finish(test, dir, started, cap, kam, events, quit)
    }
}

/// When the phone said call `call` was connected (its 200 sent or received).
fn connected(p: &Linphone, call: u32) -> Timestamp {
    ok(p.wait_for_all(&[&format!("Call {call} with"), "connected"], 1, PATIENCE)).at
}

/// When the phone said call `call` ended (its BYE or CANCEL sent or
/// received).
fn ended_at(p: &Linphone, call: u32) -> Timestamp {
    ok(p.wait_for_all(&[&format!("Call {call} with"), "ended"], 1, PATIENCE)).at
}

/// Sleeps until `ms` after `from`.
fn sleep_past(from: Timestamp, ms: i64) {
    let left = from.add(ms * 1000).since(now());
    if left > 0 {
        std::thread::sleep(Duration::from_micros(left as u64));
    }
}
