//! The collector's one TOML file, validated with errors that name the file,
//! the line, the key and what to write instead (the agent's style).
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! tls_cert = "/etc/cbt-collector/tls/fullchain.pem"
//! tls_key = "/etc/cbt-collector/tls/key.pem"
//! database = "postgresql://cbt_collector@db.example/cbt"
//! body_limit = "1 MiB"     # default
//! pool_size = 16           # default
//! log_level = "info"       # default
//! ```
//!
//! See docs/collector.md for every key.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

type S<T> = Spanned<T>;

/// A size: a number of bytes, or a string with a unit ("1 MiB").
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<S<String>>,
    tls_cert: Option<S<String>>,
    tls_key: Option<S<String>>,
    database: Option<S<String>>,
    database_ca: Option<S<String>>,
    body_limit: Option<S<RawSize>>,
    pool_size: Option<S<i64>>,
    log_level: Option<S<String>>,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub key: String,
    pub message: String,
    pub fix: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}: {}", self.path.display(), p.line, p.key, p.message)?;
            if !p.fix.is_empty() {
                write!(f, "; fix: {}", p.fix)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where the service listens and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A validated configuration.
#[derive(Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// `None`: plain HTTP (TLS terminated by a load balancer).
    pub tls: Option<Tls>,
    /// The PostgreSQL connection settings.
    pub database: tokio_postgres::Config,
    /// The URL as written, with its password masked (for messages).
    pub database_display: String,
    /// Certificates (PEM) trusted for the database's TLS, besides the system's.
    pub database_ca: Option<PathBuf>,
    pub body_limit: usize,
    pub pool_size: usize,
    pub log_level: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("database", &self.database_display)
            .field("database_ca", &self.database_ca)
            .field("body_limit", &self.body_limit)
            .field("pool_size", &self.pool_size)
            .field("log_level", &self.log_level)
            .finish()
    }
}

pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
pub const DEFAULT_POOL_SIZE: usize = 16;

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())].matches('\n').count() + 1
    }

    fn bad<T>(&mut self, v: &S<T>, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        let line = self.line_of(v.span());
        self.problems.push(Problem {
            line,
            key: key.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn missing(&mut self, key: &str, fix: &str) {
        self.problems.push(Problem {
            line: 1,
            key: key.to_string(),
            message: "is required".into(),
            fix: fix.into(),
        });
    }
}

/// Bytes from "1048576", "1 MiB", "512 KiB", "2 MB".
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The URL with any password replaced by `***`.
pub fn mask_password(url: &str) -> String {
    // postgresql://user:password@host/db
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &rest[at..]);
            }
        }
        return url.to_string();
    }
    // key=value form
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read the file: {e}"),
                fix: "check the path given with --config and that the file is readable by this user".into(),
            }],
        })?;
        Config::parse(&text, path)
    }

    /// Validates configuration text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            let fix = if message.contains("unknown field") {
                "remove or correct the key (the keys are listen, tls_cert, tls_key, database, database_ca, body_limit, pool_size, log_level; see docs/collector.md)"
            } else if message.contains("invalid type") || message.contains("did not match any variant") {
                "check the value's type: strings in quotes, numbers bare"
            } else {
                "fix the TOML syntax"
            };
            err(vec![Problem {
                line,
                key: "(toml)".into(),
                message,
                fix: fix.into(),
            }])
        })?;
        let mut c = Checker {
            text,
            problems: Vec::new(),
        };
        let listen = match &raw.listen {
            None => {
                c.missing("listen", "add listen = \"0.0.0.0:8443\" (address and port to serve agents on)");
                None
            }
            Some(v) => match v.get_ref().trim().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.bad(v, "listen", format!("`{}` is not an address and port", v.get_ref()), "write it like \"0.0.0.0:8443\" or \"[::]:8443\"");
                    None
                }
            },
        };
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                for (v, k) in [(cert, "tls_cert"), (key, "tls_key")] {
                    let p = Path::new(v.get_ref());
                    if v.get_ref().trim().is_empty() {
                        c.bad(v, k, "is empty", "give the path of a PEM file");
                    } else if let Err(e) = std::fs::metadata(p) {
                        c.bad(v, k, format!("cannot read {}: {e}", p.display()), "give the path of a PEM file readable by the collector's user");
                    }
                }
                Some(Tls {
                    cert: PathBuf::from(cert.get_ref()),
                    key: PathBuf::from(key.get_ref()),
                })
            }
            (Some(v), None) => {
                c.bad(v, "tls_cert", "is set but tls_key is not", "add tls_key = \"/path/to/key.pem\" (or remove both to serve plain HTTP behind a TLS load balancer)");
                None
            }
            (None, Some(v)) => {
                c.bad(v, "tls_key", "is set but tls_cert is not", "add tls_cert = \"/path/to/fullchain.pem\" (or remove both to serve plain HTTP behind a TLS load balancer)");
                None
            }
        };
        let database = match &raw.database {
            None => {
                c.missing("database", "add database = \"postgresql://cbt_collector@localhost/cbt\"");
                None
            }
            Some(v) => match v.get_ref().trim().parse::<tokio_postgres::Config>() {
                Ok(cfg) if cfg.get_hosts().is_empty() => {
                    c.bad(v, "database", "names no host", "write a URL like \"postgresql://user:password@host:5432/dbname\"");
                    None
                }
                Ok(cfg) if cfg.get_dbname().is_none() => {
                    c.bad(v, "database", "names no database", "add the database name after the host: \"postgresql://user@host/cbt\"");
                    None
                }
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    c.bad(
                        v,
                        "database",
                        format!("`{}` is not a PostgreSQL URL: {e}", mask_password(v.get_ref())),
                        "write it like \"postgresql://user:password@host:5432/dbname\" (percent-encode special characters in the password)",
                    );
                    None
                }
            },
        };
        let database_ca = raw.database_ca.as_ref().map(|v| {
            let p = PathBuf::from(v.get_ref());
            if let Err(e) = std::fs::metadata(&p) {
                c.bad(v, "database_ca", format!("cannot read {}: {e}", p.display()), "give the PEM file of the CA that signed the database's certificate, readable by the collector's user");
            }
            p
        });
        let body_limit = match &raw.body_limit {
            None => DEFAULT_BODY_LIMIT,
            Some(v) => {
                let n = match v.get_ref() {
                    RawSize::Bytes(n) => u64::try_from(*n).ok(),
                    RawSize::Text(s) => parse_size(s),
                };
                match n {
                    Some(n) if (4096..=(64 << 20)).contains(&n) => n as usize,
                    _ => {
                        c.bad(v, "body_limit", "is not a size from 4 KiB to 64 MiB", "write a size like \"1 MiB\" or \"512 KiB\" (a day document is a few tens of KiB)");
                        DEFAULT_BODY_LIMIT
                    }
                }
            }
        };
        let pool_size = match &raw.pool_size {
            None => DEFAULT_POOL_SIZE,
            Some(v) if (1..=1000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                c.bad(v, "pool_size", format!("{} is not from 1 to 1000", v.get_ref()), "give the number of database connections this collector may open, like 16");
                DEFAULT_POOL_SIZE
            }
        };
        let log_level = match &raw.log_level {
            None => "info".to_string(),
            Some(v) => {
                let l = v.get_ref().trim().to_ascii_lowercase();
                if !matches!(l.as_str(), "error" | "warn" | "info" | "debug" | "trace") {
                    c.bad(v, "log_level", format!("`{}` is not a level", v.get_ref()), "write one of error, warn, info, debug, trace");
                }
                l
            }
        };
        if !c.problems.is_empty() {
            c.problems.sort_by_key(|p| p.line);
            return Err(err(c.problems));
        }
        let url = raw.database.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default();
        Ok(Config {
            path: path.to_path_buf(),
            listen: listen.expect("checked"),
            tls,
            database: database.expect("checked"),
            database_display: mask_password(&url),
            database_ca,
            body_limit,
            pool_size,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("c.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_file_has_defaults() {
        let c = parse("listen = \"127.0.0.1:8443\"\ndatabase = \"postgresql://u:secret@localhost:5433/cbt\"\n").unwrap();
        assert_eq!(c.body_limit, 1 << 20);
        assert_eq!(c.pool_size, 16);
        assert_eq!(c.log_level, "info");
        assert!(c.tls.is_none());
        assert_eq!(c.database_display, "postgresql://u:***@localhost:5433/cbt");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn problems_name_line_key_and_fix() {
        let e = parse("listen = \"127.0.0.1\"\ndatabase = \"postgresql://localhost/cbt\"\nbody_limit = \"lots\"\npool_size = 0\n").unwrap_err();
        assert!(e.contains("c.toml:1: listen: `127.0.0.1` is not an address and port; fix:"), "{e}");
        assert!(e.contains("c.toml:3: body_limit:"), "{e}");
        assert!(e.contains("c.toml:4: pool_size: 0 is not from 1 to 1000"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\ndatabase = \"postgresql://localhost/cbt\"\ntls_cert = \"/nonexistent.pem\"\n").unwrap_err();
        assert!(e.contains(":3: tls_cert: is set but tls_key is not"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\ndatabase = \"postgresql://localhost/cbt\"\ntls = 1\n").unwrap_err();
        assert!(e.contains(":3: (toml): unknown field `tls`"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("database: is required"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\ndatabase = \"postgresql://localhost\"\n").unwrap_err();
        assert!(e.contains("names no database"), "{e}");
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("2000"), Some(2000));
        assert_eq!(parse_size("1 parsec"), None);
        let c = parse("listen = \"127.0.0.1:1\"\ndatabase = \"postgresql://localhost/cbt\"\nbody_limit = 65536\n").unwrap();
        assert_eq!(c.body_limit, 65536);
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_password("postgresql://a:b@h/d"), "postgresql://a:***@h/d");
        assert_eq!(mask_password("postgresql://a@h/d"), "postgresql://a@h/d");
        assert_eq!(mask_password("host=h password=x dbname=d"), "host=h password=*** dbname=d");
    }
}
