//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// True when running under CI (`CI=true`): missing inputs are failures there.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// The public capture corpus: `$CBT_CORPUS_DIR`, else `../shared/corpus`
/// beside the workspace. `None` (with a printed skip) when absent outside
/// CI; a panic when absent under CI.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CBT_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"));
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if in_ci() {
        panic!(
            "the public capture corpus is missing at {} (set CBT_CORPUS_DIR); CI must have it",
            dir.display()
        );
    }
    eprintln!("SKIP: no capture corpus at {} (set CBT_CORPUS_DIR to run these tests)", dir.display());
    None
}

/// Replays capture files through the engine with a fixed key and returns
/// every leg, in the order they finished.
pub fn replay_legs(files: &[PathBuf]) -> (Vec<cbt_proto::Leg>, cbt_proto::EngineStats, Vec<String>) {
    use cbt_proto::{Engine, EngineConfig, LinkType};
    let mut engine = Engine::new(EngineConfig {
        hash_key: [7; 32],
        ..EngineConfig::default()
    });
    let mut legs = Vec::new();
    let mut inputs = cbt_agent::capture::Merged::open(files);
    inputs.for_each(|p| {
        if let Some(l) = LinkType::from_linktype(p.linktype) {
            engine.ingest(p.ts, l, &p.data);
        }
        while let Some(leg) = engine.poll_leg() {
            legs.push(leg);
        }
    });
    engine.finish();
    while let Some(leg) = engine.poll_leg() {
        legs.push(leg);
    }
    let errors = inputs.errors.iter().map(|e| e.to_string()).collect();
    (legs, engine.stats(), errors)
}
pub mod baresip;
pub mod collector;
pub mod daemon;
pub mod flood;
pub mod kamailio;
pub mod linphone;
pub mod page;
pub mod postgres;
pub mod relay;
pub mod sipp;
pub mod sippy;
pub mod tls;

/// Makes a child process die with the test that started it, even when the
/// test process itself is killed (a CI timeout, a SIGKILL): no sipp, capture
/// or agent is left running on loopback. The signal follows the thread that
/// spawned the child, so spawn from the test's own thread.
pub fn die_with_test(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe; it only changes this child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}
