//! From the practice's wire to the NHS submission: the agent captures the
//! standard plan of calls through a real Kamailio (two practices and
//! Unassigned, every kind of call) on loopback and uploads its day
//! documents over HTTPS (a test CA made here) to a real `cbt-collector` on a
//! real PostgreSQL started by the test. The collector's submission for the
//! month must equal `cbt-agent report --nhs-csv` of the same store, file for
//! file, byte for byte. No caller number may reach the collector: not in a
//! request, a table or its log.

use cbt_tests::collector::Setup;
use cbt_tests::daemon::{agent_bin, free_tcp_port, Daemon};
use cbt_tests::kamailio::{self, plan, Intent, Topology, NOANSWER_MS, PRACTICE_A, PRACTICE_B};
use cbt_tests::postgres::Postgres;
use cbt_tests::sipp::CaptureError;
use cbt_tests::{in_ci, workspace_root};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const AGENT: &str = "e2e-pbx";

fn files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "csv"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn the_collectors_submission_equals_the_agents_own_files() {
    const TEST: &str = "upload_e2e";
    let Some((tools, kamailio_bin)) = kamailio::tools_or_skip(TEST) else { return };
    if unsafe { libc::geteuid() } != 0 {
        assert!(!in_ci(), "{TEST}: capturing on lo needs root");
        eprintln!("SKIP: {TEST}: capturing on lo needs root");
        return;
    }
    let Some(pg) = Postgres::start_or_skip() else { return };
    let dir = workspace_root().join("target/tmp").join(TEST);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // the supplier's side
    let setup = Setup::for_postgres(&dir.join("collector"), &pg, "cbt_upload_e2e");
    let token = setup.add_token(AGENT, &[PRACTICE_A, PRACTICE_B]);
    let mut collector = setup.start();
    let today = chrono::Utc::now().date_naive();
    let list = dir.join("participation.csv");
    std::fs::write(&list, format!("PRACTICE_CODE,PRACTICE_NAME\n{PRACTICE_A},Practice A\n{PRACTICE_B},Practice B\n")).unwrap();
    let month = today.format("%Y-%m").to_string();
    let out = setup.run(&["participation", "import", "--month", &month, list.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // the practice's side: capture on lo, upload to the collector
    let token_file = dir.join("upload-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let topo = Topology::pick();
    let hosts: Vec<String> = topo.all().iter().chain([&topo.pbx]).map(|a| format!("(host {} and port {})", a.ip(), a.port())).collect();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let config = dir.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[capture]\ninterfaces = [\"lo\"]\nfilter = \"udp and ({})\"\n[store]\ndir = \"{}\"\n[status]\nlisten = \"{status}\"\n[upload]\nurl = \"{}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\nagent_id = \"{AGENT}\"\ninterval = \"10s\"\nmax_backoff = \"2s\"\n",
            kamailio::site_toml(),
            hosts.join(" or "),
            dir.join("store").display(),
            setup.url(""),
            token_file.display(),
            setup.ca.ca_cert.display(),
        ),
    )
    .unwrap();
    let bin = agent_bin();
    let mut daemon = Daemon::start(&bin, &config, status, &dir.join("daemon.log"));
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
    let (_, deviations) = kamailio::observe(&calls, &run.events).unwrap();
    assert!(deviations.is_empty(), "the calls did not go as planned: {deviations:?}");
    let inbound = calls.iter().filter(|c| matches!(c.intent, Intent::Inbound { .. })).count() as u64;

    // the agent's own files for today, from its store (while it runs)
    let agent_csv = dir.join("agent-csv");
    let today_s = today.to_string();
    let mut last = String::new();
    let t0 = Instant::now();
    let submission = dir.join("submission");
    loop {
        let s = daemon.status().unwrap();
        let done = s["engine"]["calls_finished"].as_u64() >= Some(inbound) && s["engine"]["calls_in_progress"] == 0;
        if done && s["upload"]["outbox"] == 0 && s["upload"]["delivered"].as_u64() > Some(0) {
            let out = std::process::Command::new(&bin)
                .args(["report", "--output", "metrics", "--from", &today_s, "--to", &today_s, "--config"])
                .arg(&config)
                .arg("--nhs-csv")
                .arg(&agent_csv)
                .output()
                .unwrap();
            assert!(out.status.success(), "report: {}", String::from_utf8_lossy(&out.stderr));
            let _ = std::fs::remove_dir_all(&submission);
            let out = setup.run(&["submission", "--month", &month, "--dir", submission.to_str().unwrap()]);
            assert!(out.status.code().is_some_and(|c| c <= 1), "submission: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            // today is not over: the collector may hold an earlier revision
            // for a few seconds more; the files must converge
            if files(&agent_csv) == files(&submission) {
                break;
            }
            last = format!("agent {:?}\ncollector {:?}", files(&agent_csv), files(&submission));
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the collector's files never matched the agent's: {last}\n{s:#}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let agent_files = files(&agent_csv);
    assert_eq!(agent_files.len(), 3);
    assert!(agent_files.iter().all(|(_, text)| text.lines().count() > 1));
    assert!(agent_files[0].1.contains(PRACTICE_A) && agent_files[0].1.contains(PRACTICE_B) && agent_files[0].1.contains("Unassigned"));
    let validation = std::fs::read_to_string(submission.join("validation.json")).unwrap();
    let v: Value = serde_json::from_str(&validation).unwrap();
    assert!(v.to_string().contains(AGENT) || validation.contains(&today_s), "{validation}");

    // nothing of a caller reached the collector: not a number (the plan's
    // callers' numbers), in any table or its log
    let dump = pg.dump("cbt_upload_e2e");
    let log = std::fs::read_to_string(setup.log()).unwrap();
    for c in &calls {
        if c.caller.len() >= 6 && c.caller.chars().all(|ch| ch.is_ascii_digit()) {
            let national = c.caller.trim_start_matches("44");
            for form in [c.caller.as_str(), national] {
                assert!(!dump.contains(form), "caller number {form} in the collector's database");
                assert!(!log.contains(form), "caller number {form} in the collector's log");
            }
        }
    }
    daemon.stop().unwrap();
    collector.stop();
}
