//! Running the `cbt-agent` daemon for the tests: start it with a
//! configuration, wait until it captures, query its status, kill it.

use crate::sipp::ChildGuard;
use cbt_agent::config::Listen;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `cbt-agent` binary of this workspace, built if needed (with the
/// profile the tests run in).
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/cbt-agent
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let bin = profile_dir.join("cbt-agent");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root()).args(["build", "-q", "-p", "cbt-agent", "--bin", "cbt-agent"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "building cbt-agent failed");
    assert!(bin.exists(), "no binary at {}", bin.display());
    bin
}

/// A free TCP port on 127.0.0.1 (for the status API).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Daemon {
    pub proc: ChildGuard,
    pub status: SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cbt-agent run --config CONFIG`, its output in `log`.
    pub fn start(bin: &Path, config: &Path, status: SocketAddr, log: &Path) -> Daemon {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        crate::die_with_test(&mut cmd);
        let child = cmd
            .spawn()
            .expect("start cbt-agent");
        Daemon {
            proc: ChildGuard::new("cbt-agent", child),
            status,
            log: log.to_path_buf(),
        }
    }

    /// GETs a path of the status API.
    pub fn get(&self, path: &str) -> Result<String, String> {
        cbt_agent::client::get(&Listen::Tcp(self.status), path).map_err(|e| format!("{e:#}"))
    }

    pub fn status(&self) -> Result<Value, String> {
        serde_json::from_str(&self.get("/status")?).map_err(|e| e.to_string())
    }

    /// Waits until the status API answers and every capture source runs.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(st) = self.proc.try_wait() {
                return Err(format!("cbt-agent exited ({st}): {}", std::fs::read_to_string(&self.log).unwrap_or_default()));
            }
            if let Ok(s) = self.status() {
                let sources = s["sources"].as_array().cloned().unwrap_or_default();
                if !sources.is_empty() && sources.iter().all(|x| x["running"] == Value::Bool(true)) {
                    return Ok(t0.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("cbt-agent not ready after {timeout:?}: {}", std::fs::read_to_string(&self.log).unwrap_or_default()))
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.proc.signal(libc::SIGKILL);
        let _ = self.proc.wait_timeout(Duration::from_secs(10));
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<(), String> {
        self.proc.signal(libc::SIGTERM)?;
        let st = self.proc.wait_timeout(Duration::from_secs(30))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("cbt-agent exited with {st}: {}", std::fs::read_to_string(&self.log).unwrap_or_default()))
        }
    }
}

/// A site configuration for a sipp caller on `carrier` calling handset
/// `staff`, capturing `lo` with a filter limited to those endpoints.
pub fn config_text(carrier: SocketAddr, staff: SocketAddr, store: &Path, status: SocketAddr, extra: &str) -> String {
    format!(
        r#"[[practice]]
ods = "B82005"
numbers = ["01632 960123"]
[network]
carrier = ["{}"]
staff = ["{}"]
[capture]
interfaces = ["lo"]
filter = "udp and ((host {} and port {}) or (host {} and port {}))"
[store]
dir = "{}"
snapshot_every = "5s"
[status]
listen = "{status}"
{extra}
"#,
        carrier.ip(),
        staff.ip(),
        carrier.ip(),
        carrier.port(),
        staff.ip(),
        staff.port(),
        store.display()
    )
}

/// A synthetic message as a PBX's HEP agent mirrors it (HEPv3, UDP/SIP),
/// tagged with `capture_id`: what the tests send to `[hep] listen`.
pub fn hep_of(m: &cbt_proto::synth::Msg, capture_id: u32) -> Vec<u8> {
    cbt_proto::wire::encode_hep(&cbt_proto::wire::HepPacket {
        ts: Some(m.ts),
        src: m.src,
        dst: m.dst,
        ip_proto: 17,
        proto_type: 1,
        capture_id: Some(capture_id),
        correlation_id: None,
        payload: &m.bytes,
    })
}
