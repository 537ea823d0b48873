//! A real PostgreSQL for the tests: Debian's `postgresql` package
//! (`scripts/setup-deps`), a cluster made with `initdb` in a temporary
//! directory, served on a free port of 127.0.0.1 (TCP only, no Unix
//! socket), owned and run by an unprivileged user when the tests run as
//! root (PostgreSQL refuses root): `nobody`. The server dies with the test
//! (PR_SET_PDEATHSIG) and is stopped, its directory removed, when the
//! [`Postgres`] is dropped, even when the test fails.
//!
//! ```no_run
//! let mut pg = cbt_tests::postgres::Postgres::start();
//! let url = pg.create_database("cbt");
//! pg.stop();      // the database is away: clients see connection errors
//! pg.restart();   // same data, same port
//! ```

use crate::sipp::ChildGuard;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The directory of PostgreSQL's programs: the newest
/// `/usr/lib/postgresql/*/bin` (or `$CBT_PG_BIN`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CBT_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some((_, b)) => b,
        None => panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run scripts/setup-deps, or apt-get install postgresql"),
    }
}

/// The user the server runs as: `None` to run as ourselves (not root),
/// else `nobody`'s uid and gid.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let name = std::ffi::CString::new("nobody").expect("name");
        let pw = libc::getpwnam(name.as_ptr());
        assert!(!pw.is_null(), "the tests run as root and there is no user `nobody` to run PostgreSQL as");
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_r(&e.path(), uid, gid);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Postgres {
    pub bin: PathBuf,
    /// Holds `data/` (the cluster) and `postgres.log`.
    pub root: PathBuf,
    pub port: u16,
    user: Option<(u32, u32)>,
    server: Option<ChildGuard>,
    /// Extra `-c name=value` settings of the server.
    settings: Vec<String>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// True when PostgreSQL's programs are installed.
pub fn installed() -> bool {
    std::env::var_os("CBT_PG_BIN").is_some()
        || std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|rd| rd.flatten().any(|e| e.path().join("bin/postgres").exists()))
}

impl Postgres {
    /// [`Postgres::start`], or `None` with a printed skip when PostgreSQL is
    /// not installed outside CI (under CI its absence is a failure).
    pub fn start_or_skip() -> Option<Postgres> {
        if !installed() && !crate::in_ci() {
            eprintln!("SKIP: PostgreSQL is not installed (scripts/setup-deps installs it)");
            return None;
        }
        Some(Postgres::start())
    }

    /// A new cluster, started. fsync is off: the tests never crash the
    /// machine, and it keeps them fast on a shared disk.
    pub fn start() -> Postgres {
        Postgres::start_with(&["fsync=off", "synchronous_commit=off", "full_page_writes=off"])
    }

    /// A new cluster, started with these `name=value` settings.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = bin_dir();
        let root = std::env::temp_dir().join(format!("cbt-pg-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data")).expect("temporary directory");
        let user = run_as();
        if let Some((uid, gid)) = user {
            chown_r(&root, uid, gid);
        }
        let mut pg = Postgres {
            bin,
            root,
            port: free_port(),
            user,
            server: None,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        let out = pg
            .command("initdb")
            .args(["-D"])
            .arg(pg.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        pg.restart();
        pg
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// One of PostgreSQL's programs, as the server's user.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.root).stdin(Stdio::null()).env_remove("PGDATA").env("PGCONNECT_TIMEOUT", "5");
        c
    }

    /// Starts the server (again) on the same data and port, and waits until
    /// it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "PostgreSQL is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(self.data()).args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k", ""]);
        for s in &self.settings {
            cmd.args(["-c", s]);
        }
        cmd.stdout(log.try_clone().expect("log")).stderr(log);
        crate::die_with_test(&mut cmd);
        let child = cmd.spawn().expect("start postgres");
        self.server = Some(ChildGuard::new("postgres", child));
        let t0 = Instant::now();
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(st) = self.server.as_mut().and_then(|s| s.try_wait()) {
                panic!("postgres exited ({st}): {}", std::fs::read_to_string(self.log_path()).unwrap_or_default());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "postgres not ready after 60 s: {}", std::fs::read_to_string(self.log_path()).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: connections are closed) and waits.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            if s.signal(libc::SIGINT).is_ok() && s.wait_timeout(Duration::from_secs(30)).is_err() {
                let _ = s.signal(libc::SIGKILL);
                let _ = s.wait_timeout(Duration::from_secs(10));
            }
        }
    }

    /// Restarts the server with TLS on (`ssl=on`), with the test CA's server
    /// certificate (valid for 127.0.0.1); clients may then use `sslmode=require`.
    pub fn enable_tls(&mut self, ca: &crate::tls::TestCa) {
        self.stop();
        let cert = self.root.join("server.crt");
        let key = self.root.join("server.key");
        std::fs::copy(&ca.server_cert, &cert).expect("copy certificate");
        std::fs::copy(&ca.server_key, &key).expect("copy key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        if let Some((uid, gid)) = self.user {
            chown_r(&cert, uid, gid);
            chown_r(&key, uid, gid);
        }
        self.settings.push("ssl=on".into());
        self.settings.push(format!("ssl_cert_file={}", cert.display()));
        self.settings.push(format!("ssl_key_file={}", key.display()));
        self.restart();
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// `postgresql://postgres@127.0.0.1:PORT/NAME`
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with psql (unaligned, tuples only); panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql);
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn psql_output(&self, db: &str, sql: &str) -> Output {
        self.command("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])
            .output()
            .expect("run psql")
    }

    /// Everything in a database as pg_dump writes it (schema and data).
    pub fn dump(&self, db: &str) -> String {
        let out = self
            .command("pg_dump")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", db])
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
