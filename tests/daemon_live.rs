//! The daemon live on loopback: while sipp callers and endpoints make the
//! standard plan of calls through a real Kamailio (one call of each kind,
//! two practices), `cbt-agent run` captures `lo`, and a separate capture
//! records the same traffic. Then:
//!
//! - no caller number in what it serves, logs or stores;
//! - `cbt-agent status --json` and `/metrics` report today's calls by
//!   outcome per practice as sipp's logs say they went;
//! - `cbt-agent report --output calls` (answered by the running daemon)
//!   prints exactly what `cbt-agent replay --output calls` prints for the
//!   capture taken alongside;
//! - SIGHUP reloads a changed configuration, and a broken one is refused
//!   with the reason while the daemon keeps running.
//!
//! A second test feeds calls over HEPv3 only (no capture, no root).

use cbt_proto::call::Outcome;
use cbt_tests::daemon::{agent_bin, free_tcp_port, Daemon};
use cbt_tests::kamailio::{self, plan, Intent, Topology, NOANSWER_MS};
use cbt_tests::sipp::CaptureError;
use cbt_tests::{in_ci, workspace_root};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn run_agent(bin: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(bin).args(args).output().expect("run cbt-agent");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn wait_idle(d: &Daemon, calls: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let s = d.status().unwrap();
        if s["engine"]["calls_finished"].as_u64() >= Some(calls) && s["engine"]["calls_in_progress"] == 0 && s["store"]["held_in_memory"] == 0 {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "calls did not finish: {s:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// As [`wait_idle`], then until `calls` inbound calls are in today's
/// figures (at most 10 s more; the test's own assertions then judge them).
/// A call enters today's figures when the store acknowledges it (its group
/// commit), a moment after `calls_stored` counts it: a status read in
/// between showed 3 calls stored and 0 today (CI, 2 Dec 2026).
fn wait_counted_today(d: &Daemon, calls: u64) -> Value {
    let mut s = wait_idle(d, calls);
    let t0 = Instant::now();
    let counted = |s: &Value| s["today"]["practices"].as_array().map_or(0, |ps| ps.iter().filter_map(|p| p["inbound"].as_u64()).sum::<u64>());
    while counted(&s) < calls && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        s = d.status().unwrap();
    }
    s
}

/// `practice -> outcome -> count` from `/metrics`' `cbt_calls_today`.
fn metrics_today(text: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("cbt_calls_today{")) {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let get = |k: &str| labels.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
        out.entry(get("practice")).or_default().insert(get("outcome"), value.parse().unwrap());
    }
    out
}

#[test]
fn the_daemon_sees_what_sipp_and_kamailio_did() {
    const TEST: &str = "daemon_live";
    let Some((tools, kamailio_bin)) = kamailio::tools_or_skip(TEST) else { return };
    if unsafe { libc::geteuid() } != 0 {
        assert!(!in_ci(), "{TEST}: capturing on lo needs root");
        eprintln!("SKIP: {TEST}: capturing on lo needs root");
        return;
    }
    let dir = workspace_root().join("target/tmp").join(TEST);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let topo = Topology::pick();
    let hosts: Vec<String> = topo.all().iter().chain([&topo.pbx]).map(|a| format!("(host {} and port {})", a.ip(), a.port())).collect();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let agent_part = format!(
        "\n[capture]\ninterfaces = [\"lo\"]\nfilter = \"udp and ({})\"\n[store]\ndir = \"{}\"\n[status]\nlisten = \"{status}\"\n",
        hosts.join(" or "),
        dir.join("store").display()
    );
    let site = kamailio::site_toml();
    let config = dir.join("site.toml");
    std::fs::write(&config, format!("{site}{agent_part}")).unwrap();
    let bin = agent_bin();
    let log = dir.join("daemon.log");
    let mut daemon = Daemon::start(&bin, &config, status, &log);
    daemon.wait_ready(Duration::from_secs(20)).unwrap();

    let calls = plan();
    let run = match kamailio::run(&tools, &kamailio_bin, &topo, &calls, NOANSWER_MS, &dir.join("run")) {
        Ok(r) => r,
        Err(CaptureError::Permission(m)) if !in_ci() => {
            eprintln!("SKIP: {TEST}: {m}");
            return;
        }
        Err(e) => panic!("{TEST}: {e}"),
    };
    let (observed, deviations) = kamailio::observe(&calls, &run.events).unwrap();
    assert!(deviations.is_empty(), "the calls did not go as planned: {deviations:?}");
    let inbound = calls.iter().filter(|c| matches!(c.intent, Intent::Inbound { .. })).count() as u64;
    let s = wait_idle(&daemon, inbound);

    // what sipp's logs say, per practice and outcome
    let mut expected: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for o in &observed {
        *expected.entry(o.practice.clone()).or_default().entry(o.outcome.name().to_string()).or_default() += 1;
    }
    // status --json, through the command a supplier would type
    let (json, err, code) = run_agent(&bin, &["status", "--json", "--url", &status.to_string()]);
    assert_eq!(code, 0, "status: {err}{json}");
    let st: Value = serde_json::from_str(&json).unwrap();
    for p in st["today"]["practices"].as_array().unwrap() {
        let name = p["practice"].as_str().unwrap();
        let want = expected.get(name).cloned().unwrap_or_default();
        for (field, outcome) in [("answered", Outcome::Answered), ("missed", Outcome::Missed), ("ended_in_ivr", Outcome::EndedInIvr), ("callback_requested", Outcome::CallbackRequested)] {
            assert_eq!(p[field].as_u64().unwrap(), want.get(outcome.name()).copied().unwrap_or(0), "status: {name} {field}");
        }
        let made = observed.iter().filter(|o| o.practice == name && o.callback_made.is_some()).count() as u64;
        assert_eq!(p["callbacks_made"].as_u64().unwrap(), made, "status: {name} callbacks made");
    }
    assert_eq!(st["sources"][0]["kernel_dropped"], 0);
    assert!(st["sip"]["parse_errors"].as_object().unwrap().is_empty(), "{}", st["sip"]);
    // /metrics
    let m = metrics_today(&daemon.get("/metrics").unwrap());
    for (practice, outcomes) in &expected {
        for (outcome, n) in outcomes {
            assert_eq!(m[practice][outcome], *n, "/metrics {practice} {outcome}");
        }
    }
    // the page for the practice manager
    let page = daemon.get("/").unwrap();
    assert!(page.contains("<svg") && page.contains(kamailio::PRACTICE_A));

    // report (from the running daemon) equals replay of the capture taken alongside
    let (reported, err, code) = run_agent(&bin, &["report", "--config", config.to_str().unwrap(), "--output", "calls"]);
    assert_eq!(code, 0, "report: {err}");
    let (replayed, err, code) = run_agent(
        &bin,
        &["replay", "--config", config.to_str().unwrap(), "--output", "calls", run.pcap.to_str().unwrap()],
    );
    assert_eq!(code, 0, "replay: {err}");
    assert_eq!(reported.lines().count() as u64, inbound);
    assert_eq!(reported, replayed, "report --output calls differs from replay --output calls");
    let (metrics_a, _, _) = run_agent(&bin, &["report", "--config", config.to_str().unwrap(), "--output", "metrics"]);
    let (metrics_b, _, _) = run_agent(&bin, &["replay", "--config", config.to_str().unwrap(), "--output", "metrics", run.pcap.to_str().unwrap()]);
    assert_eq!(metrics_a, metrics_b, "report --output metrics differs from replay");

    // SIGHUP: a good change applies, a broken file is refused with its reason
    let practices_before = s["today"]["practices"].as_array().unwrap().len();
    std::fs::write(&config, format!("{site}\n[[practice]]\nods = \"C12345\"\nnumbers = [\"01632 960300\"]\n{agent_part}")).unwrap();
    daemon.proc.signal(libc::SIGHUP).unwrap();
    let t0 = Instant::now();
    while daemon.status().unwrap()["today"]["practices"].as_array().unwrap().len() == practices_before {
        assert!(t0.elapsed() < Duration::from_secs(10), "reload not applied: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&config, format!("{site}\n[[practice]]\nods = \"12345\"\n{agent_part}")).unwrap();
    daemon.proc.signal(libc::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("configuration not reloaded") && logged.contains("is not an ODS practice code"), "{logged}");
    assert!(daemon.proc.try_wait().is_none(), "still running after a bad reload");

    // privacy: no caller's number in anything the agent serves, logs or keeps
    let callers: Vec<String> = calls
        .iter()
        .filter(|c| matches!(c.intent, Intent::Inbound { .. }))
        .filter_map(|c| c.caller.strip_prefix("+44").map(str::to_string))
        .collect();
    assert!(callers.len() > 5, "the plan's callers are +44 numbers");
    let mut served = Vec::new();
    for path in ["/status", "/metrics", "/", "/api/calls", "/api/days"] {
        served.push((path.to_string(), daemon.get(path).unwrap().into_bytes()));
    }
    daemon.stop().unwrap();
    let mut kept = served;
    kept.push(("daemon.log".into(), std::fs::read(&log).unwrap()));
    files_under(&dir.join("store"), &mut kept);
    assert!(kept.len() > 8, "the store has files: {:?}", kept.iter().map(|k| &k.0).collect::<Vec<_>>());
    // the search does see what was kept: the practice's code is in the store
    let store_files = kept.iter().filter(|(name, _)| name.contains("/store/"));
    assert!(store_files.filter(|(_, b)| contains(b, kamailio::PRACTICE_A.as_bytes())).count() > 0, "no store file names the practice");
    for (name, bytes) in &kept {
        for n in &callers {
            // the national significant number is inside every written form
            assert!(!contains(bytes, n.as_bytes()), "{name} contains the caller number {n}");
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn calls_arrive_over_hep_too() {
    const TEST: &str = "daemon_hep";
    let dir = workspace_root().join("target/tmp").join(TEST);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let hep = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let hep_addr = hep.local_addr().unwrap();
    drop(hep);
    let config = dir.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[[practice]]\nods = \"B82005\"\nnumbers = [\"01632 960123\"]\n[network]\ncarrier = [\"192.0.2.0/24\"]\nstaff = [\"10.20.1.0/24\"]\n[hep]\nlisten = \"{hep_addr}\"\n[store]\ndir = \"{}\"\n[status]\nlisten = \"{status}\"\n",
            dir.join("store").display()
        ),
    )
    .unwrap();
    let bin = agent_bin();
    let mut daemon = Daemon::start(&bin, &config, status, &dir.join("daemon.log"));
    daemon.wait_ready(Duration::from_secs(20)).unwrap();
    // synthetic calls as a PBX's HEP agent would mirror them
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let now = cbt_agent::daemon::capture::now();
    let mut sent = 0u64;
    let scripts = [
        cbt_proto::synth::Script::Answered { ring: 100, answer: 2000, talk: 3000, caller_hangs_up: true },
        cbt_proto::synth::Script::Rejected { ring: None, at: 300, code: 486 },
        cbt_proto::synth::Script::Cancelled { ring: 100, cancel: 1500 },
    ];
    for (n, script) in scripts.iter().enumerate() {
        // the carrier straight to a handset
        let c = cbt_proto::synth::Call::numbered(n as u64, "192.0.2.7:5060".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), now, script.clone());
        for m in c.messages() {
            let pkt = cbt_tests::daemon::hep_of(&m, 7);
            sock.send_to(&pkt, hep_addr).unwrap();
            sent += 1;
        }
    }
    let s = wait_counted_today(&daemon, 3);
    let p = &s["today"]["practices"][0];
    assert_eq!((p["answered"].as_u64(), p["missed"].as_u64(), p["abandoned"].as_u64()), (Some(1), Some(2), Some(1)), "{s:#}");
    assert_eq!(s["sip"]["hep_messages"].as_u64(), Some(sent));
    daemon.stop().unwrap();
}

/// One HEP feed, two agents (a hosted-PBX supplier's SBCs mirror every
/// practice's calls to both): each owns one practice's numbers and ignores
/// calls to numbers it does not list (`calls.unlisted = "ignore"`), so
/// between them every call is counted once, each by its own agent, and
/// neither has an Unassigned row. No capture, no root.
#[test]
fn two_agents_share_one_hep_feed_each_counting_its_own_practice() {
    const TEST: &str = "daemon_hep_split";
    let dir = workspace_root().join("target/tmp").join(TEST);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = agent_bin();
    let agents: Vec<(&str, &str, SocketAddr, SocketAddr, Daemon)> = [("a", "B82005", "01632 960123"), ("b", "B82099", "01632 960777")]
        .into_iter()
        .map(|(name, ods, number)| {
            let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
            let hep_addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[[practice]]\nods = \"{ods}\"\nnumbers = [\"{number}\"]\n[calls]\nunlisted = \"ignore\"\n[network]\ncarrier = [\"192.0.2.0/24\"]\nstaff = [\"10.20.1.0/24\"]\n[hep]\nlisten = \"{hep_addr}\"\n[store]\ndir = \"{}\"\n[status]\nlisten = \"{status}\"\n",
                    dir.join(format!("store-{name}")).display()
                ),
            )
            .unwrap();
            let d = Daemon::start(&bin, &config, status, &dir.join(format!("{name}.log")));
            (name, ods, status, hep_addr, d)
        })
        .collect();
    let mut agents = agents;
    for a in &mut agents {
        a.4.wait_ready(Duration::from_secs(20)).unwrap();
    }
    // practice A: answered, busy, cancelled; practice B: answered, answered, busy
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let now = cbt_agent::daemon::capture::now();
    let answered = cbt_proto::synth::Script::Answered { ring: 100, answer: 2000, talk: 3000, caller_hangs_up: true };
    let busy = cbt_proto::synth::Script::Rejected { ring: None, at: 300, code: 486 };
    let cancelled = cbt_proto::synth::Script::Cancelled { ring: 100, cancel: 1500 };
    let plan = [("01632960123", answered.clone()), ("01632960123", busy.clone()), ("01632960123", cancelled), ("01632960777", answered.clone()), ("01632960777", answered), ("01632960777", busy)];
    for (n, (ddi, script)) in plan.iter().enumerate() {
        let mut c = cbt_proto::synth::Call::numbered(n as u64, "192.0.2.7:5060".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), now, script.clone());
        c.callee = ddi.to_string();
        for m in c.messages() {
            let pkt = cbt_tests::daemon::hep_of(&m, 7);
            for a in &agents {
                sock.send_to(&pkt, a.3).unwrap();
            }
        }
    }
    for (name, ods, _, _, d) in &agents {
        let s = wait_counted_today(d, 3);
        let practices = s["today"]["practices"].as_array().cloned().unwrap_or_default();
        let mine: Vec<&Value> = practices.iter().filter(|p| p["inbound"].as_u64().unwrap_or(0) > 0).collect();
        assert_eq!(mine.len(), 1, "agent {name}: only its own practice has calls: {s:#}");
        let p = mine[0];
        assert_eq!(p["practice"].as_str(), Some(*ods), "agent {name}: {s:#}");
        let want = if *name == "a" { (Some(3), Some(1), Some(2)) } else { (Some(3), Some(2), Some(1)) };
        assert_eq!((p["inbound"].as_u64(), p["answered"].as_u64(), p["missed"].as_u64()), want, "agent {name}: {s:#}");
        assert_eq!(s["engine"]["calls_finished"].as_u64(), Some(3), "agent {name}: the other practice's calls are not its calls");
        assert_eq!(s["engine"]["not_ours"].as_u64(), Some(3), "agent {name}: {s:#}");
    }
    for (_, _, _, _, mut d) in agents {
        d.stop().unwrap();
    }
}
