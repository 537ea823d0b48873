//! The install-time secret that keys the hash of phone numbers.
//!
//! Numbers are compared only as keyed hashes; without the secret a hash
//! cannot be reversed by trying every number. The daemon keeps the secret in
//! its state directory; `replay` uses the daemon's if it can read it, else a
//! per-user one under `$XDG_STATE_HOME/cbt-agent/secret` (created on first
//! use), so replaying the same file twice gives the same hashes.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DAEMON_SECRET: &str = "/var/lib/cbt-agent/secret";

/// Where `replay` looks for the secret when none is given.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CBT_SECRET_FILE") {
        return PathBuf::from(p);
    }
    let daemon = Path::new(DAEMON_SECRET);
    if std::fs::File::open(daemon).is_ok() {
        return daemon.to_path_buf();
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("cbt-agent").join("secret")
}

/// Reads the secret at `path`, creating it (32 random bytes, hex, mode 0600)
/// if it does not exist.
pub fn load_or_create(path: &Path) -> Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(text.trim()).with_context(|| {
            format!(
                "{}: not a cbt-agent secret (expected 64 hex digits); delete it to have a new one made (hashes stored with the old one will no longer match)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {} for the hashing secret", dir.display()))?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(path)
                .with_context(|| format!("cannot create the hashing secret {}", path.display()))?;
            writeln!(f, "{}", hex(&key))?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read the hashing secret {}", path.display())),
    }
}

fn parse(s: &str) -> Result<[u8; 32]> {
    if s.len() != 64 {
        bail!("wrong length");
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("cbt-secret-test-{}", std::process::id()));
        let p = dir.join("s");
        let a = load_or_create(&p).unwrap();
        let b = load_or_create(&p).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0; 32]);
        std::fs::write(&p, "nonsense").unwrap();
        let e = load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
