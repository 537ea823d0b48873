//! Hostile traffic on loopback (127.0.0.0/8 only).
//!
//! 1. A scanner's traffic as sipp scenarios (an OPTIONS sweep, INVITEs to
//!    extensions 100-999 with sipvicious' `friendly-scanner` User-Agent,
//!    REGISTER password guessing against a PBX that answers them as
//!    Asterisk does), captured to a pcap and replayed through `cbt-agent
//!    replay --config`: no call, with a carrier list, without one, and
//!    without one and no User-Agent to go by.
//! 2. Every flood of `cbt_tests::flood` at 2,000 packets/s against `cbt-agent
//!    run` while sipp makes real calls (answered, hung up by the callee,
//!    busy, cancelled while ringing): every real call is stored once with
//!    the outcome sipp scripted, none of the flood is counted, the flood is
//!    in the status by reason and address, resident memory and engine state
//!    stay under their ceilings, and the daemon stays healthy. A second
//!    test floods INVITEs at a site without a carrier list (behaviour).
//!
//! Each flood lasts `CBT_FLOOD_SECS` (default 2) at `CBT_FLOOD_RATE`
//! packets/s (default 2000); `CBT_FLOOD_FRESH=1` starts a new daemon for
//! each flood, so that peak memory is each flood's own. `scripts/bench-floods`
//! runs the full 30 s floods in release mode and prints the figures.

use cbt_agent::store::Store;
use cbt_proto::call::{CallRecord, Outcome};
use cbt_proto::Timestamp;
use cbt_tests::daemon::{agent_bin, free_tcp_port, Daemon};
use cbt_tests::flood::{self, Kind, Target};
use cbt_tests::sipp::{self, CaptureError, Sipp, SippSpec};
use cbt_tests::{in_ci, workspace_root};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root_or_skip(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(!in_ci(), "{test}: capturing on lo needs root");
    eprintln!("SKIP: {test}: capturing on lo needs root");
    false
}

fn fresh_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join("target/tmp").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn v4(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

fn free_udp(ip: [u8; 4]) -> SocketAddrV4 {
    v4(ip, sipp::free_udp_port(Ipv4Addr::from(ip)))
}

// ---------------------------------------------------------------------------
// 1. a scanner's capture

#[test]
fn a_scanners_capture_replays_to_no_calls() {
    const TEST: &str = "hostile_capture";
    let Some(tools) = sipp::tools_or_skip(TEST) else {
        return;
    };
    if !root_or_skip(TEST) {
        return;
    }
    let dir = fresh_dir(TEST);
    let scanner = free_udp([127, 0, 0, 66]);
    let pbx = free_udp([127, 0, 0, 67]);
    let pcap = dir.join("scanner.pcap");
    let cap = match sipp::Capture::start(&tools.capture, "lo", &[scanner, pbx], &pcap) {
        Ok(c) => c,
        Err(CaptureError::Permission(m)) if !in_ci() => {
            eprintln!("SKIP: {TEST}: {m}");
            return;
        }
        Err(e) => panic!("{TEST}: {e}"),
    };
    // (scanner, PBX, extensions): an OPTIONS sweep, INVITEs to 100-999,
    // REGISTER guessing
    let phases: [(&str, &str, std::ops::Range<u32>); 3] = [
        ("scan-options.xml", "scan-pbx-options.xml", 100..200),
        ("scan-invite.xml", "scan-pbx-invite.xml", 100..1000),
        ("scan-register.xml", "scan-pbx-register.xml", 200..220),
    ];
    let timeout = Duration::from_secs(60);
    for (n, (uac, uas, exts)) in phases.iter().enumerate() {
        let csv = dir.join(format!("ext{n}.csv"));
        let mut text = String::from("SEQUENTIAL\n");
        for e in exts.clone() {
            text.push_str(&format!("{e}\n"));
        }
        std::fs::write(&csv, text).unwrap();
        let calls = exts.len();
        let spec = |name: String, scenario: &str, local, remote, inf, rate| SippSpec {
            name,
            scenario: scenario.into(),
            local,
            remote,
            calls,
            rate,
            inf,
            timeout,
        };
        let mut pbx_p = Sipp::start(
            &tools.sipp,
            &spec(format!("pbx{n}"), uas, pbx, None, None, 0),
            &dir,
        )
        .unwrap();
        pbx_p.wait_listening(Duration::from_secs(10)).unwrap();
        let mut scan_p = Sipp::start(
            &tools.sipp,
            &spec(
                format!("scanner{n}"),
                uac,
                scanner,
                Some(pbx),
                Some(csv),
                300,
            ),
            &dir,
        )
        .unwrap();
        scan_p.wait_success(timeout).unwrap();
        pbx_p.wait_success(Duration::from_secs(20)).unwrap();
    }
    cap.stop().unwrap();

    let bin = agent_bin();
    let secret = dir.join("secret");
    let replay = |args: &[&str]| {
        let out = Command::new(&bin)
            .arg("replay")
            .args(["--secret-file", secret.to_str().unwrap()])
            .args(args)
            .arg(&pcap)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replay {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // the scanner's INVITEs are all there, as legs
    let legs = replay(&["--output", "legs"]);
    assert_eq!(
        legs.lines().count(),
        900,
        "every INVITE of the sweep is a leg"
    );
    let site = |network: &str, extra: &str| {
        format!("[[practice]]\nods = \"B82005\"\nnumbers = [\"01632 960123\"]\n[network]\n{network}\n{extra}")
    };
    for (name, text) in [
        (
            "carrier",
            site(
                &format!("carrier = [\"127.0.0.2\"]\npbx = [\"{}\"]", pbx.ip()),
                "",
            ),
        ),
        ("no-carrier", site(&format!("pbx = [\"{}\"]", pbx.ip()), "")),
        (
            "no-carrier-no-agents",
            site(
                &format!("pbx = [\"{}\"]", pbx.ip()),
                "[scanners]\nuser_agents = [\"no-scanner-has-this\"]\n",
            ),
        ),
        ("nothing", site("", "").replace("[network]\n", "")),
    ] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let calls = replay(&["--config", config.to_str().unwrap(), "--output", "calls"]);
        assert_eq!(calls, "", "{name}: the scanner made calls");
    }
}

// ---------------------------------------------------------------------------
// 2. floods against the daemon while real calls go on

/// One run's addresses.
struct Net {
    carrier: SocketAddrV4,
    pbx: SocketAddrV4,
    scanner: Ipv4Addr,
    /// The PBX's address where nothing answers (the flood's target).
    dead: SocketAddrV4,
    stream: SocketAddrV4,
    hep: SocketAddrV4,
}

impl Net {
    fn new(base: u8) -> Net {
        let carrier = free_udp([127, 0, base, 2]);
        let pbx = free_udp([127, 0, base, 3]);
        let dead = free_udp([127, 0, base, 3]);
        let stream = {
            let l = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, base, 3), 0)).unwrap();
            match l.local_addr().unwrap() {
                SocketAddr::V4(a) => a,
                _ => unreachable!(),
            }
        };
        let hep = free_udp([127, 0, 0, 1]);
        Net {
            carrier,
            pbx,
            scanner: Ipv4Addr::new(127, 0, base, 66),
            dead,
            stream,
            hep,
        }
    }

    fn target(&self) -> Target {
        Target {
            scanner: self.scanner,
            pbx: self.dead,
            stream: self.stream,
            hep: self.hep,
            carrier: self.carrier,
            ddi: "441632960123".into(),
        }
    }

    fn config(&self, dir: &Path, status: SocketAddr, carrier: bool, engine_memory: &str) -> String {
        format!(
            r#"[[practice]]
ods = "B82005"
numbers = ["01632 960123"]
[network]
{carrier}staff = ["{pbx}"]
[capture]
interfaces = ["lo"]
# the PBX's traffic; not what the kernel sends back to the scanner (RST,
# ICMP), which a real capture would see but which tells nothing here
filter = "host {pbx} and not dst host {scanner}"
[hep]
listen = "{hep}"
[store]
dir = "{store}"
snapshot_every = "5s"
[status]
listen = "{status}"
[limits]
engine_memory = "{engine_memory}"
# a real call whose end the capture dropped (a loaded machine) closes by
# timer within the test's wait (the calls last 3 s at most)
[calls]
ring_timeout = "20s"
max_duration = "60s"
"#,
            carrier = if carrier {
                format!("carrier = [\"{}\"]\n", self.carrier.ip())
            } else {
                String::new()
            },
            pbx = self.pbx.ip(),
            scanner = self.scanner,
            hep = self.hep,
            store = dir.join("store").display(),
        )
    }
}

fn calls_csv(dir: &Path, n: usize) -> PathBuf {
    let kinds = ["answer", "calleebye", "busy", "cancel"];
    let mut text = String::from("SEQUENTIAL\n");
    for i in 0..n {
        text.push_str(&format!("{};4420796{:05};441632960123\n", kinds[i % 4], i));
    }
    let p = dir.join("calls.csv");
    std::fs::write(&p, text).unwrap();
    p
}

/// Peak resident memory of a process while it is sampled.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, _)) = flood::rss_and_cpu(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// The status once it has stopped changing (it is refreshed every second).
fn settled(d: &Daemon) -> Value {
    // what the floods count (real calls go on meanwhile)
    let key = |s: &Value| {
        let k = &s["hostile"]["kept_out"];
        (
            n(&k["invites"]) + n(&k["other_requests"]),
            n(&s["sip"]["non_sip_datagrams"]),
            n(&k["hep_rejected"]),
            s["uptime_s"].clone(),
        )
    };
    let mut last = d.status().unwrap();
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        let s = d.status().unwrap();
        if key(&s).0 == key(&last).0
            && key(&s).1 == key(&last).1
            && key(&s).2 == key(&last).2
            && key(&s).3 != key(&last).3
        {
            return s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return s;
        }
        last = s;
    }
}

/// What one flood did.
#[derive(Debug, Default)]
struct Row {
    kind: &'static str,
    sent: u64,
    secs: f64,
    peak_rss: u64,
    cpu_pct: f64,
    engine_peak: u64,
    legs_shed: u64,
    kept_invites: u64,
    kept_requests: u64,
    hep_rejected: u64,
    non_sip: u64,
    drops: u64,
    /// Of those, dropped because the engine's queue was full (the rest:
    /// by the kernel's capture buffer).
    queue_drops: u64,
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn drops(s: &Value) -> u64 {
    s["sources"].as_array().map_or(0, |a| {
        a.iter()
            .map(|x| n(&x["kernel_dropped"]) + n(&x["if_dropped"]) + n(&x["queue_dropped"]))
            .sum()
    })
}

fn queue_drops(s: &Value) -> u64 {
    s["sources"]
        .as_array()
        .map_or(0, |a| a.iter().map(|x| n(&x["queue_dropped"])).sum())
}

/// Runs `episodes` (each a new daemon and a new sipp run) of floods; checks
/// every real call and what was kept out; returns a row per flood.
fn floods(
    test: &str,
    base: u8,
    carrier: bool,
    episodes: &[Vec<Kind>],
    secs: f64,
    rate: u32,
) -> Vec<Row> {
    let Some(tools) = sipp::tools_or_skip(test) else {
        return Vec::new();
    };
    if !root_or_skip(test) {
        return Vec::new();
    }
    let bin = agent_bin();
    let mut rows = Vec::new();
    for (e, kinds) in episodes.iter().enumerate() {
        let dir = fresh_dir(&format!("{test}/{e}"));
        let net = Net::new(base);
        let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let engine_memory =
            std::env::var("CBT_FLOOD_ENGINE_MEMORY").unwrap_or_else(|_| "16MiB".into());
        let limit = cbt_agent::config::parse_size(&engine_memory).unwrap();
        let config = dir.join("site.toml");
        std::fs::write(&config, net.config(&dir, status, carrier, &engine_memory)).unwrap();
        let log = dir.join("daemon.log");
        let mut daemon = Daemon::start(&bin, &config, status, &log);
        daemon.wait_ready(Duration::from_secs(30)).unwrap();
        let pid = daemon.proc.id();

        // real calls all along: 10 a second, each lasting 0.5 to 3 s
        let span = kinds.len() as f64 * (secs + 1.0) + 3.0;
        let calls = (span * 10.0) as usize;
        let csv = calls_csv(&dir, calls);
        let timeout = Duration::from_secs_f64(span + 90.0);
        let spec = |name: &str, scenario: &str, local, remote, inf| SippSpec {
            name: name.into(),
            scenario: scenario.into(),
            local,
            remote,
            calls,
            rate: 10,
            inf,
            timeout,
        };
        let mut uas = Sipp::start(
            &tools.sipp,
            &spec("uas", "uas.xml", net.pbx, None, None),
            &dir,
        )
        .unwrap();
        uas.wait_listening(Duration::from_secs(10)).unwrap();
        let mut uac = Sipp::start(
            &tools.sipp,
            &spec("uac", "uac.xml", net.carrier, Some(net.pbx), Some(csv)),
            &dir,
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(1));

        for kind in kinds {
            let before = daemon.status().unwrap();
            let (_, cpu0) = flood::rss_and_cpu(pid).unwrap();
            let sampler = Sampler::start(pid);
            let t0 = Instant::now();
            let stop = AtomicBool::new(false);
            let sent = flood::run(
                *kind,
                &net.target(),
                rate,
                Duration::from_secs_f64(secs),
                &stop,
            )
            .unwrap_or_else(|e| panic!("{test}: flood {}: {e}", kind.name()));
            // let the engine take what is queued
            std::thread::sleep(Duration::from_millis(700));
            let wall = t0.elapsed().as_secs_f64();
            let (_, cpu1) = flood::rss_and_cpu(pid).unwrap();
            let peak_rss = sampler.finish();
            let after = settled(&daemon);
            assert!(
                daemon.proc.try_wait().is_none(),
                "{test}: the daemon died during the {} flood: {}",
                kind.name(),
                std::fs::read_to_string(&log).unwrap()
            );
            let d = |p: &dyn Fn(&Value) -> &Value| n(p(&after)).saturating_sub(n(p(&before)));
            let row = Row {
                kind: kind.name(),
                sent,
                secs: wall,
                peak_rss,
                cpu_pct: 100.0 * (cpu1 - cpu0) / wall,
                engine_peak: n(&after["hostile"]["memory"]["peak_bytes"]),
                legs_shed: d(&|s| &s["hostile"]["memory"]["legs_shed"]),
                kept_invites: d(&|s| &s["hostile"]["kept_out"]["invites"]),
                kept_requests: d(&|s| &s["hostile"]["kept_out"]["other_requests"]),
                hep_rejected: d(&|s| &s["hostile"]["kept_out"]["hep_rejected"]),
                non_sip: d(&|s| &s["sip"]["non_sip_datagrams"]),
                drops: drops(&after) - drops(&before),
                queue_drops: queue_drops(&after) - queue_drops(&before),
            };
            eprintln!("{test}: {row:?}");
            // what each flood must have been counted as (all of it, unless
            // the capture dropped some, which the row shows)
            let got = match kind {
                Kind::Invite if carrier => Some(row.kept_invites),
                Kind::Register | Kind::Options | Kind::Subscribe => Some(row.kept_requests),
                Kind::Garbage => Some(row.non_sip),
                Kind::Hep => Some(row.hep_rejected),
                _ => None,
            };
            if let Some(got) = got {
                assert!(
                    got + row.drops >= sent && got <= sent,
                    "{test}: {} flood: {got} of {sent} counted ({} dropped)",
                    kind.name(),
                    row.drops
                );
            }
            // over by at most one packet's state and its index tables
            // doubling before the shedding (a 32,768-slot legs table going
            // to 65,536 is 557 KB; two tables can grow on one packet)
            assert!(
                row.engine_peak <= limit as u64 + limit as u64 / 4,
                "{test}: engine state {} over its {limit} ceiling",
                row.engine_peak
            );
            // the packaged unit stops the agent at 256 MiB
            assert!(
                peak_rss < 192 << 20,
                "{test}: {} MiB resident during the {} flood",
                peak_rss >> 20,
                kind.name()
            );
            assert_eq!(daemon.get("/healthz").unwrap().trim(), "ok");
            rows.push(row);
        }
        uac.wait_success(timeout)
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        uas.wait_success(Duration::from_secs(30)).unwrap();

        // every real call ends; dead INVITEs time out (Timer B) and are decided
        let t_end = Instant::now();
        let s = loop {
            let s = daemon.status().unwrap();
            if n(&s["engine"]["calls_in_progress"]) == 0
                && n(&s["engine"]["legs_in_progress"]) == 0
                && n(&s["store"]["held_in_memory"]) == 0
            {
                break s;
            }
            assert!(
                t_end.elapsed() < Duration::from_secs(90),
                "{test}: still in progress: {}",
                s["engine"]
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let errors: Vec<&Value> = s["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] == "error")
            .collect();
        assert!(errors.is_empty(), "{test}: {errors:?}");
        let codes: Vec<&str> = s["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["code"].as_str())
            .collect();
        let metrics = daemon.get("/metrics").unwrap();
        assert!(
            metrics.contains("cbt_kept_out_invites_total{reason=\"unexpected_source\"}")
                && metrics.contains("cbt_engine_memory_peak_bytes")
        );
        if kinds.iter().any(|k| {
            matches!(
                k,
                Kind::Invite | Kind::Register | Kind::Options | Kind::Subscribe
            )
        }) {
            assert!(
                codes.contains(&"scanner"),
                "{test}: no scanner diagnostic: {codes:?}"
            );
            let src = &s["hostile"]["kept_out"]["sources"][0];
            assert_eq!(
                src["address"],
                net.scanner.to_string(),
                "{test}: {}",
                s["hostile"]
            );
            assert!(
                daemon.get("/").unwrap().contains("Not counted as calls"),
                "{test}: the page says nothing of the scanners"
            );
        }
        if kinds.contains(&Kind::Hep) {
            assert!(codes.contains(&"hep_rejected"), "{test}: {codes:?}");
        }
        if !carrier {
            // every INVITE of the flood was set aside when it timed out, or shed
            let sent: u64 = rows
                .iter()
                .filter(|r| r.kind == "invite")
                .map(|r| r.sent)
                .sum();
            let m = &s["hostile"];
            let out = n(&m["kept_out"]["scanner_calls"]) + n(&m["memory"]["calls_shed"]);
            assert!(
                out <= sent && out + drops(&s) >= sent,
                "{test}: {out} of {sent} flood INVITEs kept out: {m}"
            );
        }
        let total_drops = drops(&s);
        daemon.stop().unwrap();

        // every call sipp made is stored once, as sipp scripted it; nothing else
        let mut events = sipp::parse_log(&uac.log_file()).unwrap();
        events.extend(sipp::parse_log(&uas.log_file()).unwrap());
        let made = sipp::calls(&events);
        assert_eq!(made.len(), calls, "{test}: sipp made every call");
        let store = Store::open(&dir.join("store"), 8 << 20).unwrap();
        let stored = store.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap();
        let mut by_id: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
        for r in &stored {
            by_id.entry(r.call_id.as_str()).or_default().push(r);
        }
        let mut problems = Vec::new();
        for (cid, call) in &made {
            let recs = by_id.remove(cid.as_str()).unwrap_or_default();
            let want = match call.kind.as_str() {
                "answer" | "calleebye" => (Outcome::Answered, false),
                "busy" => (Outcome::Missed, false),
                "cancel" => (Outcome::Missed, true),
                other => panic!("unknown kind {other}"),
            };
            match recs.as_slice() {
                [r] if (r.outcome, r.abandoned) == want => {}
                [r] => problems.push(format!(
                    "{cid} ({}): stored {:?} abandoned={}",
                    call.kind, r.outcome, r.abandoned
                )),
                _ => problems.push(format!(
                    "{cid} ({}): stored {} times",
                    call.kind,
                    recs.len()
                )),
            }
        }
        for (cid, recs) in &by_id {
            problems.push(format!(
                "{cid}: {} stored calls that are not sipp's (the flood?)",
                recs.len()
            ));
        }
        assert!(
            problems.is_empty(),
            "{test}: {} problems ({} packets dropped before the engine):\n{}",
            problems.len(),
            total_drops,
            problems.join("\n")
        );
        let floods: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        eprintln!(
            "{test}: real calls: {} made by sipp during {}, every one stored once as scripted, {} calls stored in all; {} packets dropped before the engine",
            made.len(),
            floods.join(","),
            stored.len(),
            total_drops
        );
    }
    rows
}

fn episodes(kinds: &[Kind]) -> Vec<Vec<Kind>> {
    if env_or("CBT_FLOOD_FRESH", 0) == 1 {
        kinds.iter().map(|k| vec![*k]).collect()
    } else {
        vec![kinds.to_vec()]
    }
}

fn print_rows(title: &str, rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    eprintln!("\n{title}");
    eprintln!(
        "{:<11} {:>8} {:>6} {:>9} {:>6} {:>11} {:>10} {:>10} {:>10} {:>8} {:>8} {:>6} {:>6}",
        "flood",
        "packets",
        "secs",
        "peak RSS",
        "CPU%",
        "engine peak",
        "legs shed",
        "kept INV",
        "kept other",
        "HEP refd",
        "non-SIP",
        "drops",
        "queue"
    );
    for r in rows {
        eprintln!(
            "{:<11} {:>8} {:>6.1} {:>7.1}Mi {:>6.1} {:>9.1}Mi {:>10} {:>10} {:>10} {:>8} {:>8} {:>6} {:>6}",
            r.kind,
            r.sent,
            r.secs,
            r.peak_rss as f64 / 1048576.0,
            r.cpu_pct,
            r.engine_peak as f64 / 1048576.0,
            r.legs_shed,
            r.kept_invites,
            r.kept_requests,
            r.hep_rejected,
            r.non_sip,
            r.drops,
            r.queue_drops
        );
    }
}

#[test]
fn every_flood_with_a_carrier_list_while_real_calls_go_on() {
    let secs = env_or("CBT_FLOOD_SECS", 2.0);
    let rate = env_or("CBT_FLOOD_RATE", 2000);
    let kinds: Vec<Kind> = match std::env::var("CBT_FLOOD_KINDS") {
        Ok(list) => list
            .split(',')
            .map(|k| Kind::parse(k.trim()).unwrap_or_else(|| panic!("no flood {k}")))
            .collect(),
        Err(_) => Kind::ALL.to_vec(),
    };
    let rows = floods("hostile_floods", 1, true, &episodes(&kinds), secs, rate);
    print_rows(
        &format!("floods at {rate}/s for {secs} s, carrier configured, real sipp calls alongside:"),
        &rows,
    );
}

#[test]
fn an_invite_flood_without_a_carrier_list_counts_nothing() {
    let secs = env_or("CBT_FLOOD_SECS", 2.0);
    let rate = env_or("CBT_FLOOD_RATE", 2000);
    let rows = floods(
        "hostile_floods_no_carrier",
        2,
        false,
        &[vec![Kind::Invite]],
        secs,
        rate,
    );
    print_rows(
        &format!("INVITE flood at {rate}/s for {secs} s, no carrier list:"),
        &rows,
    );
    if let Some(r) = rows.first() {
        assert!(r.sent > 0);
    }
}
