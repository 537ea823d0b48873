//! The store failing under the daemon: a full disk (a small tmpfs as the
//! state directory) and an unreadable store. Either is a clear error in
//! status, logs and /healthz; capture goes on and finished calls are held
//! in memory; when the store is usable again every held call is written,
//! none lost, none doubled. Needs root (mount, capture on lo).

use cbt_tests::daemon::{agent_bin, config_text, free_tcp_port, Daemon};
use cbt_tests::sipp::{self, ChildGuard};
use cbt_tests::{in_ci, workspace_root};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root_or_skip(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = format!("{test}: needs root (mount a tmpfs, capture on lo)");
    assert!(!in_ci(), "{msg}");
    eprintln!("SKIP: {msg}");
    false
}

/// sipp's built-in UAS on `uas` and UAC placing `calls` calls from `uac`.
fn calls(sipp_bin: &Path, uac: SocketAddr, uas: SocketAddr, n: usize, rate: u32, dir: &Path) {
    let spawn = |args: Vec<String>| {
        let child = Command::new(sipp_bin)
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp");
        ChildGuard::new("sipp", child)
    };
    let mut uas_p = spawn(vec!["-sn".into(), "uas".into(), "-i".into(), uas.ip().to_string(), "-p".into(), uas.port().to_string(), "-nostdin".into()]);
    std::thread::sleep(Duration::from_millis(500));
    let mut uac_p = spawn(vec![
        uas.to_string(),
        "-sn".into(),
        "uac".into(),
        "-i".into(),
        uac.ip().to_string(),
        "-p".into(),
        uac.port().to_string(),
        "-m".into(),
        n.to_string(),
        "-r".into(),
        rate.to_string(),
        "-nostdin".into(),
    ]);
    let st = uac_p.wait_timeout(Duration::from_secs(120)).expect("sipp UAC ends");
    assert!(st.success(), "sipp UAC: {st}");
    let _ = uas_p.signal(libc::SIGKILL);
}

fn wait_for(daemon: &Daemon, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let s = daemon.status().unwrap();
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < timeout, "{what}: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn healthz(d: &Daemon) -> String {
    match d.get("/healthz") {
        Ok(b) => b,
        Err(e) => e,
    }
}

fn setup(test: &str) -> Option<(sipp::Tools, std::path::PathBuf, SocketAddr, SocketAddr, SocketAddr)> {
    let tools = sipp::tools_or_skip(test)?;
    if !root_or_skip(test) {
        return None;
    }
    let dir = workspace_root().join("target/tmp").join(test);
    let _ = Command::new("umount").arg(dir.join("state")).stderr(Stdio::null()).status();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let uac: SocketAddr = format!("127.0.0.2:{}", sipp::free_udp_port(Ipv4Addr::new(127, 0, 0, 2))).parse().unwrap();
    let uas: SocketAddr = format!("127.0.0.3:{}", sipp::free_udp_port(Ipv4Addr::new(127, 0, 0, 3))).parse().unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    Some((tools, dir, uac, uas, status))
}

#[test]
fn a_full_disk_holds_calls_in_memory_and_writes_them_when_space_returns() {
    const TEST: &str = "daemon_disk_full";
    let Some((tools, dir, uac, uas, status)) = setup(TEST) else { return };
    let state = dir.join("state");
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=640k", "tmpfs"]).arg(&state).status().unwrap();
    assert!(st.success(), "mount tmpfs on {}", state.display());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let config = dir.join("site.toml");
    std::fs::write(&config, config_text(uac, uas, &state.join("store"), status, "")).unwrap();
    let mut daemon = Daemon::start(&agent_bin(), &config, status, &dir.join("daemon.log"));
    daemon.wait_ready(Duration::from_secs(20)).unwrap();
    let n = 1500;
    calls(&tools.sipp, uac, uas, n, 300, &dir);
    let s = wait_for(&daemon, "the store fills up", Duration::from_secs(30), |s| {
        s["store"]["healthy"] == false && s["engine"]["calls_finished"] == n && s["engine"]["calls_in_progress"] == 0
    });
    let held = s["store"]["held_in_memory"].as_u64().unwrap();
    let stored_before = s["store"]["calls_stored"].as_u64().unwrap();
    assert!(held > 0, "calls are held in memory: {s:#}");
    let problem = s["diagnostics"].as_array().unwrap().iter().find(|d| d["code"] == "store_error").cloned().expect("a store_error diagnostic");
    assert!(problem["message"].as_str().unwrap().contains("full"), "{problem}");
    assert!(healthz(&daemon).contains("store unavailable"));
    assert!(daemon.proc.try_wait().is_none(), "the daemon is still running");
    // space returns
    let st = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&state).status().unwrap();
    assert!(st.success());
    let s = wait_for(&daemon, "the store comes back", Duration::from_secs(40), |s| s["store"]["healthy"] == true && s["store"]["held_in_memory"] == 0);
    assert_eq!(s["store"]["calls_stored"].as_u64().unwrap(), n as u64, "every call stored (before the disk filled: {stored_before}, held: {held})");
    assert_eq!(healthz(&daemon).trim(), "ok");
    daemon.stop().unwrap();
    let store = cbt_agent::store::Store::open(&state.join("store"), 1 << 20).unwrap();
    let all = store.calls_between(cbt_proto::Timestamp::MIN, cbt_proto::Timestamp::MAX).unwrap();
    let mut ids: Vec<&str> = all.iter().map(|c| c.call_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((all.len(), ids.len()), (n, n), "each call once");
}

#[test]
fn an_unreadable_store_is_a_clear_error_and_capture_goes_on() {
    const TEST: &str = "daemon_bad_store";
    let Some((tools, dir, uac, uas, status)) = setup(TEST) else { return };
    let store_dir = dir.join("state/store");
    std::fs::create_dir_all(store_dir.join("db")).unwrap();
    std::fs::write(store_dir.join("db/conf"), vec![0x5a; 4096]).unwrap();
    std::fs::write(store_dir.join("db/db"), vec![0xa5; 65536]).unwrap();
    let config = dir.join("site.toml");
    std::fs::write(&config, config_text(uac, uas, &store_dir, status, "")).unwrap();
    let log = dir.join("daemon.log");
    let mut daemon = Daemon::start(&agent_bin(), &config, status, &log);
    daemon.wait_ready(Duration::from_secs(20)).unwrap();
    let n = 50;
    calls(&tools.sipp, uac, uas, n, 50, &dir);
    let s = wait_for(&daemon, "calls held", Duration::from_secs(20), |s| s["store"]["held_in_memory"] == n);
    let err = s["store"]["error"].as_str().unwrap().to_string();
    assert!(err.contains("may be damaged") && err.contains("move the directory aside"), "{err}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("store unavailable"), "logged");
    assert_eq!(s["today"]["practices"][0]["inbound"], 0, "not counted before stored");
    // the supplier moves it aside, as the message says
    std::fs::rename(&store_dir, dir.join("state/store.damaged")).unwrap();
    let s = wait_for(&daemon, "a new store", Duration::from_secs(30), |s| s["store"]["healthy"] == true && s["store"]["held_in_memory"] == 0);
    assert_eq!(s["store"]["calls_stored"], n);
    assert_eq!(s["today"]["practices"][0]["inbound"], n);
    daemon.stop().unwrap();
}
