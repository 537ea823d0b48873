//! Makes `tests/fixtures/store-<version>/`: a store written by a released
//! `cbt-agent` binary, for the upgrade test (`tests/store_upgrade.rs`).
//!
//! `make-store-fixture AGENT_BIN OUT_DIR` (run by `scripts/make-store-fixture`,
//! which builds the release from git history first). The agent runs under
//! libfaketime so that its days are fixed dates, and receives synthetic calls
//! over HEP:
//!
//! 1. phase A, on 2026-11-02 (a Monday): finished calls of every kind; then a
//!    clean stop;
//! 2. phase B, on 2026-11-03: the restart closes 2026-11-02 (day figures and
//!    the upload outbox); calls are started (B1), an engine snapshot is
//!    taken, more messages arrive (B2) and the agent is killed with SIGKILL,
//!    so the store holds finished calls, closed days, a snapshot with calls in
//!    progress, and journal records written after it.
//!
//! `plan.json` says what was sent (call number, script, start) and which
//! messages of each call the agent saw: the test sends the rest and checks
//! every call against the plan, not against anything the agent computed.

use cbt_proto::synth::{Call, Script};
use cbt_proto::wire::{encode_hep as encode, HepPacket};
use cbt_proto::Timestamp;
use cbt_tests::sipp::ChildGuard;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const CARRIER: &str = "192.0.2.7:5060";
const HANDSET: &str = "10.20.1.11:5060";
const IVR: &str = "10.20.0.6:5060";

/// `2026-11-02 09:00:00` UTC (GMT in November) as a timestamp.
fn at(date: &str, hms: &str) -> Timestamp {
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{date} {hms}"), "%Y-%m-%d %H:%M:%S").expect("time");
    Timestamp(t.and_utc().timestamp_micros())
}

struct Planned {
    n: u64,
    to: &'static str,
    script: Script,
    start: Timestamp,
    expect: &'static str,
}

fn script_json(s: &Script) -> Value {
    match s {
        Script::Answered { ring, answer, talk, caller_hangs_up } => {
            json!({"answered": {"ring": ring, "answer": answer, "talk": talk, "caller_hangs_up": caller_hangs_up}})
        }
        Script::Rejected { ring, at, code } => json!({"rejected": {"ring": ring, "at": at, "code": code}}),
        Script::Cancelled { ring, cancel } => json!({"cancelled": {"ring": ring, "cancel": cancel}}),
        Script::ChallengedThenAnswered { answer, talk } => json!({"challenged_then_answered": {"answer": answer, "talk": talk}}),
        other => panic!("not used in the fixture: {other:?}"),
    }
}

fn call(p: &Planned) -> Call {
    Call::numbered(p.n, CARRIER.parse().unwrap(), p.to.parse().unwrap(), p.start, p.script.clone())
}

fn send(sock: &UdpSocket, hep: SocketAddr, msgs: &[cbt_proto::synth::Msg]) {
    for m in msgs {
        let pkt = encode(&HepPacket {
            ts: Some(m.ts),
            src: m.src,
            dst: m.dst,
            ip_proto: 17,
            proto_type: 1,
            capture_id: Some(1),
            correlation_id: None,
            payload: &m.bytes,
        });
        sock.send_to(&pkt, hep).expect("send HEP");
        std::thread::sleep(Duration::from_micros(200));
    }
}

struct Agent {
    proc: ChildGuard,
    status: SocketAddr,
}

impl Agent {
    fn start(bin: &Path, config: &Path, status: SocketAddr, fake: &str, log: &Path) -> Agent {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(config)
            .env("LD_PRELOAD", FAKETIME_LIB)
            .env("FAKETIME", format!("@{fake}"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_NO_CACHE", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        cbt_tests::die_with_test(&mut cmd);
        let mut a = Agent {
            proc: ChildGuard::new("cbt-agent", cmd.spawn().expect("start cbt-agent")),
            status,
        };
        let t0 = Instant::now();
        while a.get().is_none() {
            assert!(a.proc.try_wait().is_none(), "cbt-agent exited: {}", std::fs::read_to_string(log).unwrap_or_default());
            assert!(t0.elapsed() < Duration::from_secs(20), "cbt-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    fn get(&self) -> Option<Value> {
        let body = cbt_agent::client::get(&cbt_agent::config::Listen::Tcp(self.status), "/status").ok()?;
        serde_json::from_str(&body).ok()
    }

    fn wait_stored(&self, n: u64) {
        let t0 = Instant::now();
        loop {
            let s = self.get().expect("status");
            if s["store"]["calls_stored"].as_u64() == Some(n) {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{n} calls not stored: {s:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let upload = args.get(3).map(String::as_str) == Some("--upload");
    if args.len() != 3 && !upload {
        eprintln!("usage: make-store-fixture AGENT_BIN OUT_DIR [--upload]");
        std::process::exit(2);
    }
    assert!(Path::new(FAKETIME_LIB).exists(), "libfaketime is needed (apt-get install faketime)");
    let bin = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    let work = std::env::temp_dir().join(format!("cbt-store-fixture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let hep: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let site = "[[practice]]\nods = \"B82005\"\nnumbers = [\"01632 960123\"]\n\n[network]\ncarrier = [\"192.0.2.0/24\"]\npbx = [\"10.20.0.5\"]\nstaff = [\"10.20.1.0/24\"]\nautomated = [\"10.20.0.6\"]\n";
    let config = work.join("site.toml");
    // --upload (an agent with an uploader, 0.2 on): documents offered to a
    // collector that is not there, so the store holds upload states and an
    // outbox of undelivered documents
    let token = work.join("upload-token");
    std::fs::write(&token, "fixture-token\n").unwrap();
    let upload_section = if upload {
        format!("\n[upload]\nurl = \"http://127.0.0.1:{}\"\ntoken_file = \"{}\"\nagent_id = \"fixture\"\n", free_port(), token.display())
    } else {
        String::new()
    };
    let write_config = |store: &Path| {
        std::fs::write(
            &config,
            format!(
                "{site}\n[hep]\nlisten = \"{hep}\"\n\n[store]\ndir = \"{}\"\nsnapshot_every = \"2s\"\n\n[status]\nlisten = \"{status}\"\n{upload_section}",
                store.display()
            ),
        )
        .unwrap();
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    // phase A: finished calls of every kind on 2026-11-02
    let day_a = "2026-11-02";
    let a0 = at(day_a, "09:00:05");
    let a_scripts: Vec<(&'static str, Script, &'static str)> = vec![
        (HANDSET, Script::Answered { ring: 300, answer: 4_000, talk: 95_000, caller_hangs_up: true }, "answered"),
        (HANDSET, Script::Answered { ring: 200, answer: 31_500, talk: 40_000, caller_hangs_up: false }, "answered"),
        (HANDSET, Script::Answered { ring: 100, answer: 75_000, talk: 400_000, caller_hangs_up: true }, "answered"),
        (HANDSET, Script::ChallengedThenAnswered { answer: 2_500, talk: 61_000 }, "answered"),
        (HANDSET, Script::Cancelled { ring: 150, cancel: 12_000 }, "missed"),
        (HANDSET, Script::Cancelled { ring: 150, cancel: 45_000 }, "missed"),
        (HANDSET, Script::Rejected { ring: None, at: 300, code: 486 }, "missed"),
        (HANDSET, Script::Rejected { ring: Some(100), at: 20_000, code: 480 }, "missed"),
        (IVR, Script::Answered { ring: 50, answer: 200, talk: 15_000, caller_hangs_up: true }, "ended_in_ivr"),
        (IVR, Script::Answered { ring: 50, answer: 200, talk: 30_000, caller_hangs_up: false }, "ended_in_ivr"),
    ];
    let mut plan: Vec<Planned> = a_scripts
        .into_iter()
        .enumerate()
        .map(|(i, (to, script, expect))| Planned {
            n: 100 + i as u64,
            to,
            script,
            start: a0.add(i as i64 * 600 * 1_000_000),
            expect,
        })
        .collect();
    let store_a = work.join("store-a");
    write_config(&store_a);
    let log = work.join("agent.log");
    let mut agent = Agent::start(&bin, &config, status, &format!("{day_a} 09:00:00"), &log);
    for p in &plan {
        send(&sock, hep, &call(p).messages());
    }
    agent.wait_stored(plan.len() as u64);
    agent.proc.signal(libc::SIGTERM).unwrap();
    assert!(agent.proc.wait_timeout(Duration::from_secs(20)).unwrap().success());
    let finished_a = plan.len();

    // phase B on 2026-11-03, until the kill lands after a snapshot (a
    // snapshot taken after B2 would leave an empty journal: try again)
    let day_b = "2026-11-03";
    let mut attempt = 0;
    let (store, b_plan, b1_until, b2_until) = loop {
        attempt += 1;
        assert!(attempt <= 10, "no attempt left a journal after the snapshot");
        let store = work.join(format!("store-b{attempt}"));
        copy_dir(&store_a, &store);
        write_config(&store);
        let started = Instant::now();
        let agent = Agent::start(&bin, &config, status, &format!("{day_b} 10:00:00"), &log);
        // the agent's clock: the fake start plus real time since
        let clock = |t: Instant| at(day_b, "10:00:00").add(t.duration_since(started).as_micros() as i64);
        agent.wait_stored(finished_a as u64);
        let t = clock(Instant::now());
        // B1: three calls ringing, and one answered with no BYE yet
        let b: Vec<Planned> = vec![
            Planned { n: 200, to: HANDSET, script: Script::Answered { ring: 100, answer: 4_200, talk: 60_000, caller_hangs_up: true }, start: t.add(-200_000), expect: "answered" },
            Planned { n: 201, to: HANDSET, script: Script::Cancelled { ring: 100, cancel: 4_100 }, start: t.add(-150_000), expect: "missed" },
            Planned { n: 202, to: HANDSET, script: Script::Answered { ring: 50, answer: 100, talk: 90_000, caller_hangs_up: false }, start: t.add(-400_000), expect: "answered" },
            Planned { n: 203, to: HANDSET, script: Script::Answered { ring: 500, answer: 9_000, talk: 30_000, caller_hangs_up: true }, start: t.add(3_000_000), expect: "answered" },
        ];
        let b1_until = t.add(1_000_000);
        let b2_until = t.add(6_000_000);
        let msgs = |lo: Timestamp, hi: Timestamp| -> Vec<cbt_proto::synth::Msg> {
            let mut v: Vec<_> = b.iter().flat_map(|p| call(p).messages()).filter(|m| m.ts >= lo && m.ts < hi).collect();
            v.sort_by_key(|m| m.ts);
            v
        };
        send(&sock, hep, &msgs(Timestamp::MIN, b1_until));
        // a snapshot follows within 2 s
        std::thread::sleep(Duration::from_millis(2_600));
        send(&sock, hep, &msgs(b1_until, b2_until));
        std::thread::sleep(Duration::from_millis(250));
        let mut agent = agent;
        agent.proc.signal(libc::SIGKILL).unwrap();
        agent.proc.wait_timeout(Duration::from_secs(10)).unwrap();
        // the journal the snapshot names must hold records
        let snap: Value = serde_json::from_slice(&std::fs::read(store.join("snapshot.json")).unwrap()).unwrap();
        let gen = snap["journal"].as_u64().unwrap();
        let len = std::fs::metadata(store.join(format!("journal-{gen}.log"))).map(|m| m.len()).unwrap_or(0);
        let open = snap["snapshot"]["calls"]["open"].as_array().map_or(0, |a| a.len());
        eprintln!("attempt {attempt}: journal-{gen}.log {len} bytes, {open} calls open in the snapshot");
        if len > 0 && open >= 3 {
            break (store, b, b1_until, b2_until);
        }
    };
    plan.extend(b_plan);

    let _ = std::fs::remove_dir_all(&out);
    copy_dir(&store, &out.join("store"));
    std::fs::write(out.join("site.toml"), site).unwrap();
    let version = Command::new(&bin).arg("--version").output().unwrap();
    let doc = json!({
        "agent": String::from_utf8_lossy(&version.stdout).trim(),
        "made_by": "scripts/make-store-fixture",
        "upload": upload,
        "carrier": CARRIER,
        "calls": plan.iter().map(|p| json!({
            "n": p.n,
            "to": p.to,
            "start_us": p.start.0,
            "script": script_json(&p.script),
            "expect": p.expect,
        })).collect::<Vec<_>>(),
        "phase_b1_until_us": b1_until.0,
        "phase_b2_until_us": b2_until.0,
        "notes": "calls 100-109 finished on 2026-11-02 (day closed, in the outbox); 200-203 on 2026-11-03: the agent saw their messages before phase_b2_until_us, the rest is for the test to send",
    });
    std::fs::write(out.join("plan.json"), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("fixture written to {}", out.display());
}
