//! Nothing lost or counted twice, whatever fails between an agent and its
//! collector. The agent gets calls over HEP for 20 practices (so each round
//! of uploads is 20 documents); a relay on loopback stands between it and a
//! real collector over HTTPS on a real PostgreSQL, both started by the test.
//!
//! 1. the collector is down: the agent backs off, says so, then delivers all;
//! 2. the network resets connections part-way through requests and holds
//!    answers past the agent's timeout: everything arrives, and the
//!    collector's idempotency absorbs the documents sent twice;
//! 3. PostgreSQL stops under load: the collector answers 503, the agent
//!    retries, everything arrives once PostgreSQL is back;
//! 4. the agent is killed with SIGKILL at random moments while it delivers
//!    and started again on its store;
//!
//! and at the end, for every practice, the collector holds today's
//! document at the agent's last revision, counting exactly the calls sent.
//! A second test: a collector the agent does not trust, a revoked token, a
//! practice the token is not bound to, and the way through `upload.proxy`.

use cbt_proto::synth::{Call, Script};
use cbt_proto::Timestamp;
use cbt_tests::collector::Setup;
use cbt_tests::daemon::{agent_bin, free_tcp_port, Daemon};
use cbt_tests::postgres::Postgres;
use cbt_tests::relay::{Faults, Relay};
use cbt_tests::workspace_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AGENT: &str = "faulty-pbx";
const PRACTICES: u32 = 20;

fn ods(i: u32) -> String {
    format!("B{:05}", 83000 + i)
}

fn ddi(i: u32) -> String {
    format!("0163296{:04}", 1000 + i)
}

/// The site: 20 practices, a carrier, a PBX.
fn site() -> String {
    let mut s = String::new();
    for i in 0..PRACTICES {
        s.push_str(&format!("[[practice]]\nods = \"{}\"\nnumbers = [\"{}\"]\n", ods(i), ddi(i)));
    }
    s.push_str("[network]\ncarrier = [\"192.0.2.0/24\"]\npbx = [\"10.20.0.5\"]\n");
    s
}

fn now() -> Timestamp {
    cbt_agent::daemon::capture::now()
}

/// Sends answered calls over HEP; returns how many went to each practice.
struct Caller {
    sock: UdpSocket,
    hep: SocketAddr,
    next: u64,
    sent: BTreeMap<String, u64>,
}

impl Caller {
    fn call(&mut self, practice: u32) {
        let n = self.next;
        self.next += 1;
        let mut c = Call::numbered(n, format!("192.0.2.{}:5060", 1 + n % 200).parse().unwrap(), "10.20.0.5:5060".parse().unwrap(), now(), Script::Answered { ring: 0, answer: 1, talk: 2, caller_hangs_up: true });
        c.callee = ddi(practice);
        for m in c.messages() {
            let pkt = cbt_tests::daemon::hep_of(&m, 1);
            self.sock.send_to(&pkt, self.hep).unwrap();
        }
        *self.sent.entry(ods(practice)).or_default() += 1;
    }

    fn round(&mut self) {
        for p in 0..PRACTICES {
            self.call(p);
        }
    }
}

struct Agent {
    bin: PathBuf,
    config: PathBuf,
    status: SocketAddr,
    log: PathBuf,
    daemon: Daemon,
}

impl Agent {
    fn start(bin: &Path, config: &Path, status: SocketAddr, log: &Path) -> Agent {
        let mut daemon = Daemon::start(bin, config, status, log);
        daemon.wait_ready(Duration::from_secs(20)).unwrap();
        Agent { bin: bin.to_path_buf(), config: config.to_path_buf(), status, log: log.to_path_buf(), daemon }
    }

    fn restart_after_kill(&mut self) {
        self.daemon.kill9();
        self.daemon = Daemon::start(&self.bin, &self.config, self.status, &self.log);
        self.daemon.wait_ready(Duration::from_secs(30)).unwrap();
    }

    fn upload(&self) -> Value {
        self.daemon.status().map(|s| s["upload"].clone()).unwrap_or(Value::Null)
    }

    /// Waits until the collector holds, for every practice, today's
    /// document counting every call sent to it, and the agent's outbox is
    /// empty.
    fn wait_delivered(&self, pg: &Postgres, db: &str, sent: &BTreeMap<String, u64>, within: Duration, what: &str) -> Value {
        let t0 = Instant::now();
        loop {
            if let Ok(s) = self.daemon.status() {
                let there = at_collector(pg, db);
                let all = sent.iter().all(|(p, n)| there.get(p).is_some_and(|(_, c)| c == n));
                if all && s["upload"]["outbox"] == 0 {
                    return s;
                }
                assert!(t0.elapsed() < within, "{what}: not delivered in {within:?}: collector {there:?}, sent {sent:?}; agent {:#}", s["upload"]);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// today's documents at the collector: practice -> (revision, calls).
fn at_collector(pg: &Postgres, db: &str) -> BTreeMap<String, (u64, u64)> {
    let today = chrono::Utc::now().date_naive();
    pg.psql(db, &format!("SELECT practice, revision, calls FROM documents WHERE agent = '{AGENT}' AND day = '{today}'"))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            if f.len() != 3 {
                return None;
            }
            Some((f[0].to_string(), (f[1].parse().ok()?, f[2].parse().ok()?)))
        })
        .collect()
}

fn audit(pg: &Postgres, db: &str) -> BTreeMap<String, u64> {
    pg.psql(db, "SELECT result, count(*) FROM audit GROUP BY result")
        .lines()
        .filter_map(|l| {
            let (r, n) = l.split_once('|')?;
            Some((r.trim().to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

fn config_text(dir: &Path, url: &str, setup: &Setup, hep: SocketAddr, status: SocketAddr, extra: &str) -> String {
    format!(
        "{}[hep]\nlisten = \"{hep}\"\n[store]\ndir = \"{}\"\nsnapshot_every = \"2s\"\n[status]\nlisten = \"{status}\"\n[upload]\nurl = \"{url}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\nagent_id = \"{AGENT}\"\ninterval = \"10s\"\nmax_backoff = \"2s\"\ntimeout = \"3s\"\n{extra}",
        site(),
        dir.join("store").display(),
        dir.join("upload-token").display(),
        setup.ca.ca_cert.display(),
    )
}

#[test]
fn nothing_is_lost_or_counted_twice_whatever_fails() {
    const TEST: &str = "upload_faults";
    let Some(mut pg) = Postgres::start_or_skip() else { return };
    const DB: &str = "cbt_upload_faults";
    let dir = workspace_root().join("target/tmp").join(TEST);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let setup = Setup::for_postgres(&dir.join("collector"), &pg, DB);
    let practices: Vec<String> = (0..PRACTICES).map(ods).collect();
    let token = setup.add_token(AGENT, &practices.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(dir.join("upload-token"), format!("{token}\n")).unwrap();
    // the agent reaches the collector through the relay (its certificate is
    // for 127.0.0.1, the relay's address too)
    let relay = Relay::start(setup.listen);
    let hep: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let config = dir.join("site.toml");
    std::fs::write(&config, config_text(&dir, &format!("https://{}", relay.addr), &setup, hep, status, "")).unwrap();
    let mut caller = Caller { sock: UdpSocket::bind("127.0.0.1:0").unwrap(), hep, next: 1, sent: BTreeMap::new() };
    let total = |c: &Caller| c.sent.values().sum::<u64>();

    // 1. the collector is down
    let mut agent = Agent::start(&agent_bin(), &config, status, &dir.join("agent.log"));
    caller.round();
    let t0 = Instant::now();
    loop {
        let s = agent.daemon.status().unwrap();
        let failing = s["diagnostics"].as_array().unwrap().iter().any(|d| d["code"] == "upload_failing");
        if failing && s["upload"]["outbox"].as_u64() >= Some(PRACTICES as u64) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "no upload_failing while the collector is down: {s:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let err = agent.upload()["last_error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(!err.is_empty(), "the status says why");
    let mut collector = setup.start();
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(60), "after the collector came up");

    // 2. a network that resets requests part-way and answers too late
    // each connection carries a document or two, then dies in the middle of the next
    relay.set(Faults { reset_after_client_bytes: Some(12_000), ..Faults::default() });
    caller.round();
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(90), "through resets");
    // answers held past the agent's 3 s timeout, after the requests got
    // through: the collector has the document, the agent does not know
    relay.set(Faults { delay_response: Duration::from_millis(3500), delay_after_client_bytes: 2_500, ..Faults::default() });
    caller.round();
    std::thread::sleep(Duration::from_secs(15));
    relay.set(Faults::default());
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(90), "after late answers");
    assert!(relay.counters.resets.load(std::sync::atomic::Ordering::Relaxed) > 0, "the relay reset nothing");

    // 3. PostgreSQL restarted under load
    let sending = Instant::now();
    let mut stopped = false;
    while sending.elapsed() < Duration::from_secs(20) {
        caller.call(caller.next as u32 % PRACTICES);
        if !stopped && sending.elapsed() > Duration::from_secs(4) {
            pg.stop();
            stopped = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused_503 = agent.upload()["last_error"]["message"].as_str().unwrap_or_default().contains("503");
    pg.restart();
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(90), "after PostgreSQL came back");
    assert!(refused_503, "the collector did not answer 503 while PostgreSQL was down");

    // 4. kill -9 while delivering
    let mut seed = 0x5eed_u64;
    for _ in 0..4 {
        caller.round();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(9_000 + (seed >> 33) % 4_000));
        agent.restart_after_kill();
    }
    let s = agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(120), "after the kills");

    // every practice: today's document at the agent's last revision, with
    // exactly the calls sent to it. Today's document keeps changing (its
    // capture hours, a restart's gap ending when capture began), so the
    // agent may have made a revision since: wait until the collector holds
    // the agent's latest of every practice (each delivered within the
    // upload interval), then compare
    let today = chrono::Utc::now().date_naive();
    let agent_docs = || -> Vec<Value> { serde_json::from_str(&agent.daemon.get(&format!("/api/documents?from={today}&to={today}")).unwrap()).unwrap() };
    let latest = |docs: &BTreeMap<String, (u64, u64)>, mine: &[Value]| {
        mine.iter().all(|d| docs.get(d["practice"].as_str().unwrap_or_default()).is_some_and(|(r, _)| Some(*r) == d["revision"].as_u64()))
    };
    let t0 = Instant::now();
    let (docs, agent_docs) = loop {
        let (docs, mine) = (at_collector(&pg, DB), agent_docs());
        if latest(&docs, &mine) || t0.elapsed() > Duration::from_secs(60) {
            break (docs, mine);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(docs.len(), PRACTICES as usize, "{docs:?}");
    for (practice, sent) in &caller.sent {
        let (revision, calls) = docs[practice];
        assert_eq!(calls, *sent, "{practice}: the collector counts {calls} calls, {sent} were made");
        let mine = agent_docs.iter().find(|d| d["practice"] == practice.as_str()).unwrap();
        assert_eq!(revision, mine["revision"].as_u64().unwrap(), "{practice}: the collector holds another revision than the agent's last");
    }
    let a = audit(&pg, DB);
    let duplicates = a.get("duplicate").copied().unwrap_or(0);
    eprintln!(
        "{TEST}: {} calls to {PRACTICES} practices; collector audit {a:?}; {} duplicate deliveries absorbed by the idempotency key; agent: delivered {}, duplicates {}, retries {}; relay: {} connections, {} reset",
        total(&caller),
        duplicates,
        s["upload"]["delivered"],
        s["upload"]["duplicates"],
        s["upload"]["retries"],
        relay.counters.connections.load(std::sync::atomic::Ordering::Relaxed),
        relay.counters.resets.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(duplicates > 0, "answers held past the timeout and kills should have made the agent send something twice: {a:?}");
    agent.daemon.stop().unwrap();
    collector.stop();
}

/// Waits for `upload.parked` to hold a document, returning the status.
fn wait_parked(agent: &Agent, what: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let s = agent.daemon.status().unwrap();
        if s["upload"]["parked"].as_array().is_some_and(|p| !p.is_empty()) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "{what}: nothing parked: {:#}", s["upload"]);
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn refusals_are_clear_parked_and_sent_again_after_a_reload() {
    const TEST: &str = "upload_refusals";
    let Some(pg) = Postgres::start_or_skip() else { return };
    const DB: &str = "cbt_upload_refusals";
    let dir = workspace_root().join("target/tmp").join(TEST);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let setup = Setup::for_postgres(&dir.join("collector"), &pg, DB);
    let mut collector = setup.start();
    let practices: Vec<String> = (0..PRACTICES).map(ods).collect();
    let all: Vec<&str> = practices.iter().map(String::as_str).collect();
    let hep: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let config = dir.join("site.toml");
    let mut caller = Caller { sock: UdpSocket::bind("127.0.0.1:0").unwrap(), hep, next: 1, sent: BTreeMap::new() };

    // a collector whose certificate the agent does not trust
    let other_ca = cbt_tests::tls::TestCa::new(&dir.join("other-ca"));
    let token = setup.add_token(AGENT, &all);
    std::fs::write(dir.join("upload-token"), format!("{token}\n")).unwrap();
    let url = setup.url("");
    let text = config_text(&dir, &url, &setup, hep, status, "");
    std::fs::write(&config, text.replace(&setup.ca.ca_cert.display().to_string(), &other_ca.ca_cert.display().to_string())).unwrap();
    let mut agent = Agent::start(&agent_bin(), &config, status, &dir.join("agent.log"));
    caller.round();
    let t0 = Instant::now();
    let msg = loop {
        let m = agent.upload()["last_error"]["message"].as_str().unwrap_or_default().to_string();
        if !m.is_empty() {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no error with an untrusted collector");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(msg.contains("not trusted") && msg.contains("upload.ca_file"), "{msg}");
    // the right CA, reloaded: delivered
    std::fs::write(&config, &text).unwrap();
    agent.daemon.proc.signal(libc::SIGHUP).unwrap();
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(60), "with the right CA");

    // a revoked token: parked with the reason, sent after a new token and a reload
    let out = setup.run(&["token", "revoke", "--agent", AGENT]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    caller.round();
    let s = wait_parked(&agent, "revoked token");
    let reason = s["upload"]["parked"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("401") && reason.contains("token"), "{reason}");
    assert!(s["diagnostics"].as_array().unwrap().iter().any(|d| d["code"] == "upload_parked" && d["severity"] == "error"), "{s:#}");
    let token = setup.add_token(AGENT, &all);
    std::fs::write(dir.join("upload-token"), format!("{token}\n")).unwrap();
    agent.daemon.proc.signal(libc::SIGHUP).unwrap();
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(60), "with a new token");

    // a practice the token is not bound to: refused (403), audited, parked
    let token = setup.add_token(AGENT, &all[1..]);
    std::fs::write(dir.join("upload-token"), format!("{token}\n")).unwrap();
    agent.daemon.proc.signal(libc::SIGHUP).unwrap();
    caller.call(0);
    let s = wait_parked(&agent, "a practice not bound to the token");
    let p = &s["upload"]["parked"][0];
    assert_eq!(p["practice"], ods(0).as_str());
    assert!(p["reason"].as_str().unwrap().contains("403"), "{p}");
    let audited = pg.psql(DB, &format!("SELECT count(*) FROM audit WHERE practice = '{}' AND status = 403", ods(0)));
    assert!(audited.trim().parse::<u64>().unwrap_or(0) >= 1, "not audited: {audited}");

    // through an HTTP proxy (upload.proxy): CONNECT, then TLS to the collector
    let proxy = Relay::start(setup.listen);
    let token = setup.add_token(AGENT, &all);
    std::fs::write(dir.join("upload-token"), format!("{token}\n")).unwrap();
    std::fs::write(&config, config_text(&dir, &url, &setup, hep, status, &format!("proxy = \"http://{}\"\n", proxy.addr))).unwrap();
    agent.daemon.proc.signal(libc::SIGHUP).unwrap();
    caller.round();
    agent.wait_delivered(&pg, DB, &caller.sent, Duration::from_secs(60), "through the proxy");
    assert!(proxy.counters.tunnels.load(std::sync::atomic::Ordering::Relaxed) > 0, "nothing went through the proxy");
    agent.daemon.stop().unwrap();
    collector.stop();
}
