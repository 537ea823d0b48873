//! Running `cbt-collector` for the tests: its binary, a configuration
//! against a test PostgreSQL, the server over HTTPS with a test CA, and
//! its commands (token, participation, submission).

use crate::postgres::Postgres;
use crate::sipp::ChildGuard;
use crate::tls::TestCa;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `cbt-collector` binary of this workspace, built if needed (with the
/// profile the tests run in).
pub fn collector_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    let bin = profile_dir.join("cbt-collector");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root()).args(["build", "-q", "-p", "cbt-collector", "--bin", "cbt-collector"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "building cbt-collector failed");
    assert!(bin.exists(), "no binary at {}", bin.display());
    bin
}

/// A collector's files: its configuration, its log, its TLS material.
pub struct Setup {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub ca: TestCa,
}

impl Setup {
    /// Writes a configuration in `dir` for `database_url`, HTTPS with a new
    /// test CA, on a free port; `extra` is appended to the file.
    pub fn new(dir: &Path, database_url: &str, extra: &str) -> Setup {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("collector directory");
        let ca = TestCa::new(&dir.join("tls"));
        let listen: SocketAddr = format!("127.0.0.1:{}", crate::daemon::free_tcp_port()).parse().expect("addr");
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ndatabase = \"{database_url}\"\npool_size = 8\nlog_level = \"debug\"\n{extra}",
                ca.server_cert.display(),
                ca.server_key.display()
            ),
        )
        .expect("write configuration");
        Setup {
            bin: collector_bin(),
            dir: dir.to_path_buf(),
            config,
            listen,
            ca,
        }
    }

    pub fn for_postgres(dir: &Path, pg: &Postgres, db: &str) -> Setup {
        let url = pg.create_database(db);
        Setup::new(dir, &url, "")
    }

    /// `https://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.listen)
    }

    /// Runs a command (`token add ...`) with `--config` added after it.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        let split = args.iter().position(|a| a.starts_with("--")).unwrap_or(args.len());
        cmd.args(&args[..split]).arg("--config").arg(&self.config).args(&args[split..]);
        cmd.stdin(Stdio::null());
        crate::die_with_test(&mut cmd);
        cmd.output().expect("run cbt-collector")
    }

    /// `token add` for `agent` and `practices`; returns the token.
    pub fn add_token(&self, agent: &str, practices: &[&str]) -> String {
        let mut args = vec!["token", "add", "--agent", agent];
        for p in practices {
            args.push("--practice");
            args.push(p);
        }
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "token add: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout.lines().last().expect("the token is the last line").trim().to_string()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("collector.log")
    }

    /// Starts `cbt-collector serve` and waits until /healthz answers.
    pub fn start(&self) -> Collector {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--config"]).arg(&self.config).stdin(Stdio::null()).stdout(out.try_clone().expect("log")).stderr(out);
        crate::die_with_test(&mut cmd);
        let child = cmd.spawn().expect("start cbt-collector");
        let mut c = Collector {
            proc: ChildGuard::new("cbt-collector", child),
            client: self.ca.client(),
            base: self.url(""),
            log: self.log(),
        };
        c.wait_ready(Duration::from_secs(60));
        c
    }
}

pub struct Collector {
    pub proc: ChildGuard,
    pub client: reqwest::blocking::Client,
    pub base: String,
    pub log: PathBuf,
}

impl Collector {
    fn wait_ready(&mut self, timeout: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(st) = self.proc.try_wait() {
                panic!("cbt-collector exited ({st}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if self.client.get(format!("{}/healthz", self.base)).send().is_ok_and(|r| r.status().is_success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cbt-collector not ready after {timeout:?}: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// POSTs a day document with the headers an agent sends.
    pub fn post_day(&self, token: &str, idempotency_key: &str, body: Vec<u8>) -> reqwest::blocking::Response {
        self.client
            .post(format!("{}/v1/days", self.base))
            .bearer_auth(token)
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .expect("POST /v1/days")
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let _ = self.proc.signal(libc::SIGTERM);
        let st = self.proc.wait_timeout(Duration::from_secs(30)).expect("cbt-collector stops");
        assert!(st.success(), "cbt-collector exited with {st}: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}
