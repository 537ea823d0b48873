//! An upgraded agent reads what the released one wrote, and loses no call.
//!
//! `tests/fixtures/store-0.1.0/` is a store written by cbt-agent 0.1.0 itself
//! (store layout 2), `tests/fixtures/store-layout3/` one written by the
//! agent of store layout 3 (the first with an uploader, here offering its
//! documents to a collector that is not there), `tests/fixtures/store-layout4/`
//! one of layout 4 (the last to keep calls in sled; this build moves them
//! to files of a day), all made by
//! `scripts/make-store-fixture`: finished calls, a closed day, an engine
//! snapshot with calls in progress, journal records after it, then kill -9.
//! `plan.json` there says what was sent; every expectation below comes from
//! the plan, not from anything an agent computed.
//!
//! 1. The engine and store of this build open each (migrating the layout),
//!    read every call, the closed day and the upload states, restore the
//!    calls in progress from the snapshot and the journal, and with the rest
//!    of their messages finish them with exactly the outcomes, waits and
//!    durations planned.
//! 2. The daemon of this build starts on a copy, recovers, stores every
//!    planned call exactly once, and `cbt-agent report` reads the store.

use cbt_agent::config::Config;
use cbt_proto::call::{CallEvent, CallRecord, Outcome};
use cbt_proto::metrics::Indicator;
use cbt_proto::synth::{Call, Msg, Script};
use cbt_proto::{Engine, EngineConfig, Timestamp};
use cbt_tests::daemon::{agent_bin, free_tcp_port, Daemon};
use cbt_tests::workspace_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FIXTURE_0_1_0: &str = "tests/fixtures/store-0.1.0";
const FIXTURE_LAYOUT3: &str = "tests/fixtures/store-layout3";
const FIXTURE_LAYOUT4: &str = "tests/fixtures/store-layout4";

struct Planned {
    n: u64,
    to: SocketAddr,
    start: Timestamp,
    script: Script,
    expect: Outcome,
}

struct Plan {
    carrier: SocketAddr,
    calls: Vec<Planned>,
    b2_until: Timestamp,
    /// The agent offered documents to a collector (none was there).
    upload: bool,
}

fn u32_of(v: &Value, k: &str) -> u32 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")) as u32
}

fn plan(fixture: &str) -> Plan {
    let d: Value = serde_json::from_slice(&std::fs::read(workspace_root().join(fixture).join("plan.json")).unwrap()).unwrap();
    let calls = d["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = &c["script"];
            let script = if let Some(a) = s.get("answered") {
                Script::Answered {
                    ring: u32_of(a, "ring"),
                    answer: u32_of(a, "answer"),
                    talk: u32_of(a, "talk"),
                    caller_hangs_up: a["caller_hangs_up"].as_bool().unwrap(),
                }
            } else if let Some(a) = s.get("rejected") {
                Script::Rejected {
                    ring: a["ring"].as_u64().map(|r| r as u32),
                    at: u32_of(a, "at"),
                    code: u32_of(a, "code") as u16,
                }
            } else if let Some(a) = s.get("cancelled") {
                Script::Cancelled { ring: u32_of(a, "ring"), cancel: u32_of(a, "cancel") }
            } else if let Some(a) = s.get("challenged_then_answered") {
                Script::ChallengedThenAnswered { answer: u32_of(a, "answer"), talk: u32_of(a, "talk") }
            } else {
                panic!("unknown script {s}")
            };
            Planned {
                n: c["n"].as_u64().unwrap(),
                to: c["to"].as_str().unwrap().parse().unwrap(),
                start: Timestamp(c["start_us"].as_i64().unwrap()),
                script,
                expect: serde_json::from_value(c["expect"].clone()).unwrap(),
            }
        })
        .collect();
    Plan {
        carrier: d["carrier"].as_str().unwrap().parse().unwrap(),
        calls,
        b2_until: Timestamp(d["phase_b2_until_us"].as_i64().unwrap()),
        upload: d["upload"].as_bool().unwrap_or(false),
    }
}

impl Plan {
    fn messages(&self, p: &Planned) -> Vec<Msg> {
        Call::numbered(p.n, self.carrier, p.to, p.start, p.script.clone()).messages()
    }

    /// What the agent never saw: the messages after the kill.
    fn rest(&self) -> Vec<Msg> {
        let mut v: Vec<Msg> = self.calls.iter().flat_map(|p| self.messages(p)).filter(|m| m.ts >= self.b2_until).collect();
        v.sort_by_key(|m| m.ts);
        v
    }
}

/// (wait, duration) in seconds the plan implies for a call the carrier
/// sent straight to a handset or the IVR.
fn planned_times(p: &Planned) -> (Option<f64>, Option<f64>) {
    let s = |ms: u32| Some(ms as f64 / 1000.0);
    match (&p.script, p.expect) {
        (Script::Answered { answer, talk, .. }, Outcome::Answered) => (s(*answer), s(*talk)),
        (Script::ChallengedThenAnswered { answer, talk }, _) => (s(*answer), s(*talk)),
        (Script::Cancelled { cancel, .. }, _) => (s(*cancel), None),
        (Script::Rejected { at, .. }, _) => (s(*at), None),
        _ => (None, None),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn scratch(name: &str, fixture: &str) -> PathBuf {
    let dir = workspace_root().join("target/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&workspace_root().join(fixture).join("store"), &dir.join("store"));
    dir
}

/// Checks calls against the plan: each planned call exactly once (by start
/// time), with its outcome and, where the whole call was seen, its times.
fn check_against_plan(plan: &Plan, calls: &[CallRecord], exact_times_for: impl Fn(&Planned) -> bool) {
    let by_start: BTreeMap<Timestamp, &CallRecord> = calls.iter().map(|c| (c.started, c)).collect();
    assert_eq!(by_start.len(), calls.len(), "two calls with one start time");
    assert_eq!(calls.len(), plan.calls.len(), "calls: {:#?}", calls.iter().map(|c| (c.started, c.outcome)).collect::<Vec<_>>());
    let mut seqs: Vec<u64> = calls.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), calls.len(), "a sequence number used twice");
    for p in &plan.calls {
        let c = by_start.get(&p.start).unwrap_or_else(|| panic!("call {} (started {}) is missing", p.n, p.start));
        assert_eq!(c.practice, "B82005");
        if exact_times_for(p) {
            assert_eq!(c.outcome, p.expect, "call {}", p.n);
            let (wait, duration) = planned_times(p);
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() < 0.0015,
                (a, b) => a == b,
            };
            assert!(close(c.wait_s, wait), "call {}: wait {:?}, planned {wait:?}", p.n, c.wait_s);
            assert!(close(c.duration_s, duration), "call {}: duration {:?}, planned {duration:?}", p.n, c.duration_s);
        }
    }
}

#[test]
fn the_engine_and_store_of_this_build_finish_what_0_1_0_left() {
    engine_and_store_finish(FIXTURE_0_1_0, "store_upgrade_engine");
}

#[test]
fn the_engine_and_store_of_this_build_finish_what_layout_3_left() {
    engine_and_store_finish(FIXTURE_LAYOUT3, "store_upgrade_engine_layout3");
}

#[test]
fn the_engine_and_store_of_this_build_finish_what_layout_4_left() {
    engine_and_store_finish(FIXTURE_LAYOUT4, "store_upgrade_engine_layout4");
}

fn engine_and_store_finish(fixture: &str, scratch_name: &str) {
    let plan = plan(fixture);
    let dir = scratch(scratch_name, fixture);
    let root = workspace_root().join(fixture);
    let config = Config::load(&root.join("site.toml")).unwrap();
    let key = cbt_agent::secret::load_or_create(&dir.join("store/secret")).unwrap();
    let hasher = cbt_proto::number::Hasher::new(key, &config.site.country_code);
    let site = config.site(&hasher);
    let before_upgrade = cbt_agent::daemon::capture::now();
    let store = cbt_agent::store::Store::open(&dir.join("store"), 1 << 20).unwrap();
    if fixture == FIXTURE_LAYOUT4 {
        // layout 4 pruned by store.call_retention already: moving its calls
        // to files changes no retention, and is not recorded as an upgrade
        assert_eq!(store.upgraded_at().unwrap(), None);
    } else {
        // the upgrade is recorded: what the earlier release stored keeps its
        // retention (AgentConfig::call_cut)
        let upgraded = store.upgraded_at().unwrap().expect("upgrade recorded");
        assert!(upgraded >= before_upgrade && upgraded <= cbt_agent::daemon::capture::now());
        let cut = config.agent.call_cut(cbt_agent::daemon::capture::now(), Some(upgraded));
        assert!(store.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().all(|c| c.started > cut), "none of its calls is due for pruning");
    }

    // what 0.1.0 stored reads as it was
    let counts = store.verify().unwrap();
    assert_eq!(counts.unreadable, 0);
    let stored = store.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap();
    let finished_before_kill: Vec<&Planned> = plan.calls.iter().filter(|p| plan.messages(p).iter().all(|m| m.ts < plan.b2_until)).collect();
    assert_eq!(stored.len(), finished_before_kill.len(), "every call 0.1.0 finished was stored");
    let days = store.days().unwrap();
    assert_eq!(days.len(), 1, "2026-11-02 was closed by 0.1.0");
    let ((practice, date), day) = &days[0];
    assert_eq!((practice.as_str(), date.to_string().as_str()), ("B82005", "2026-11-02"));
    let count = |o: Outcome| plan.calls.iter().filter(|p| p.start < Timestamp(1_793_664_000_000_000) && p.expect == o).count() as u64;
    assert_eq!(
        (day.total(Indicator::Cbt001), day.total(Indicator::Cbt002), day.total(Indicator::Cbt003), day.total(Indicator::Cbt004)),
        (10, count(Outcome::EndedInIvr), count(Outcome::Answered), count(Outcome::Missed)),
        "the closed day's figures"
    );
    // the day is found by its date, as pages and reports read it
    let nov = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    assert_eq!(store.days_between(Some(nov(2)), Some(nov(2))).unwrap(), days);
    assert!(store.days_between(Some(nov(3)), None).unwrap().is_empty());
    assert_eq!(store.calls_on(&site, nov(2)).unwrap().len(), 10, "the closed day's calls, by date");
    if plan.upload {
        // the closed day was offered as final, and today's figures as they
        // were; nothing was delivered
        let states = store.upload_states().unwrap();
        let final_2nd = states.iter().find(|((p, d), _)| p == "B82005" && *d == nov(2)).map(|(_, s)| s);
        assert!(final_2nd.is_some_and(|s| s.is_final && s.revision >= 1), "{states:?}");
        assert!(states.iter().any(|((p, d), s)| p == "B82005" && *d == nov(3) && !s.is_final), "{states:?}");
        assert_eq!(store.upload_states_between(Some(nov(2)), Some(nov(2))).unwrap().len(), 1);
        let outbox = store.outbox_items().unwrap();
        assert!(outbox.iter().any(|i| i.date == nov(2) && i.is_final && Some(i.revision) == final_2nd.map(|s| s.revision)), "{outbox:?}");
        assert!(store.undelivered_dates().unwrap().contains(&nov(2)));
    }

    // the calls in progress: snapshot + journal, then what the agent never saw
    let rec = store.recovery().unwrap();
    assert!(rec.snapshot.is_some(), "0.1.0's snapshot reads");
    assert!(!rec.entries.is_empty(), "0.1.0's journal reads");
    assert!(store.problems().is_empty(), "{:?}", store.problems());
    let mut engine = Engine::new(EngineConfig {
        hash_key: key,
        site: Some(site),
        emit_legs: false,
        journal: true,
        legs: cbt_proto::LegConfig { adopt_orphans: true, ..config.legs.clone() },
        ..EngineConfig::default()
    });
    engine.restore(rec.snapshot.unwrap());
    let open_after_restore = engine.open_calls();
    assert!(open_after_restore >= 3, "calls in progress restored: {open_after_restore}");
    for e in &rec.entries {
        engine.replay_journal(e);
    }
    for m in plan.rest() {
        engine.ingest_hep(m.ts, &cbt_tests::daemon::hep_of(&m, 1));
    }
    engine.finish();
    let mut all = stored;
    while let Some(ev) = engine.poll_call() {
        if let CallEvent::Finished(r) = ev {
            // the daemon writes these with put_call, which ignores a call it has
            if store.put_call(&r).unwrap() {
                all.push(*r);
            }
        }
    }
    check_against_plan(&plan, &all, |_| true);
}

#[test]
fn the_daemon_of_this_build_recovers_a_0_1_0_store_and_loses_no_call() {
    daemon_recovers(FIXTURE_0_1_0, "store_upgrade_daemon");
}

#[test]
fn the_daemon_of_this_build_recovers_a_layout_3_store_and_loses_no_call() {
    daemon_recovers(FIXTURE_LAYOUT3, "store_upgrade_daemon_layout3");
}

#[test]
fn the_daemon_of_this_build_recovers_a_layout_4_store_and_loses_no_call() {
    daemon_recovers(FIXTURE_LAYOUT4, "store_upgrade_daemon_layout4");
}

fn daemon_recovers(fixture: &str, scratch_name: &str) {
    let plan = plan(fixture);
    let dir = scratch(scratch_name, fixture);
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let hep_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let site = std::fs::read_to_string(workspace_root().join(fixture).join("site.toml")).unwrap();
    let config = dir.join("site.toml");
    // the fixtures' calls are of November 2026: kept whatever today's date
    // (the default call retention would prune them as the days go by)
    std::fs::write(
        &config,
        format!(
            "{site}\n[hep]\nlisten = \"{hep_addr}\"\n\n[store]\ndir = \"{}\"\nretention = \"36500d\"\ncall_retention = \"36500d\"\n\n[status]\nlisten = \"{status}\"\n",
            dir.join("store").display()
        ),
    )
    .unwrap();
    let bin = agent_bin();
    let mut daemon = Daemon::start(&bin, &config, status, &dir.join("daemon.log"));
    daemon.wait_ready(Duration::from_secs(30)).unwrap();
    // the calls in progress come back from 0.1.0's snapshot and journal;
    // this machine's clock is weeks past their packets, so they close at the
    // first tick (ends inferred) and are stored
    let t0 = Instant::now();
    let s = loop {
        let s = daemon.status().unwrap();
        if s["store"]["calls_stored"].as_u64() == Some(plan.calls.len() as u64) {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not every call stored: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let recovered = s["store"]["recovered"].as_str().unwrap_or_default();
    assert!(recovered.contains("restored") && recovered.contains("calls in progress"), "{recovered}");
    assert_eq!(s["store"]["problems"].as_array().map(|a| a.len()), Some(0), "{s:#}");
    assert!(!s["diagnostics"].as_array().unwrap().iter().any(|d| d["code"] == "store_format"), "{s:#}");
    daemon.stop().unwrap();

    // report reads the upgraded store (the service stopped) and exits 0
    let out = std::process::Command::new(&bin)
        .args(["report", "--output", "calls", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(calls.len(), plan.calls.len());
    let store = cbt_agent::store::Store::open(&dir.join("store"), 1 << 20).unwrap();
    let records = store.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap();
    // the calls whose end came after the kill were closed by the restarted
    // agent's clock, so only their existence (and the finished ones' every
    // figure) is checked here; the engine test above checks their outcomes
    check_against_plan(&plan, &records, |p| plan.messages(p).iter().all(|m| m.ts < plan.b2_until));
}
