//! `[page]` (the practice manager's page: national figures, the optional
//! LAN listener) and `[staffing]` (the staffing table's defaults).
//!
//! ```toml
//! [page]
//! national = "/usr/share/cbt-agent/national.toml"
//! [page.lan]
//! listen = "192.168.10.5:9443"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # cbt-agent page-password
//! token_file = "/etc/cbt-agent/page-token"
//! cert = "/etc/cbt-agent/page.crt"
//! key = "/etc/cbt-agent/page.key"
//! api = false
//! [staffing]
//! weeks = 4
//! target_wait = "120s"
//! target_share = 0.8
//! wrap_up = "30s"
//! ```

use super::{parse_duration, Checker, Problem, S};
use cbt_proto::time::SECOND;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the package installs the national figures.
pub const DEFAULT_NATIONAL: &str = "/usr/share/cbt-agent/national.toml";

#[derive(Deserialize, Default)]
pub(super) struct RawPage {
    national: Option<S<String>>,
    lan: Option<RawLan>,
}

#[derive(Deserialize, Default)]
struct RawLan {
    listen: Option<S<String>>,
    password_hash: Option<S<String>>,
    token_file: Option<S<String>>,
    cert: Option<S<String>>,
    key: Option<S<String>>,
    api: Option<bool>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawStaffing {
    weeks: Option<S<i64>>,
    target_wait: Option<S<String>>,
    target_share: Option<S<f64>>,
    wrap_up: Option<S<String>>,
}

/// `[page]` and `[staffing]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PageConfig {
    /// The national figures file.
    pub national: PathBuf,
    /// The listener for the manager's desk; `None`: loopback only.
    pub lan: Option<LanConfig>,
    pub staffing: StaffingConfig,
}

impl Default for PageConfig {
    fn default() -> Self {
        PageConfig {
            national: PathBuf::from(DEFAULT_NATIONAL),
            lan: None,
            staffing: StaffingConfig::default(),
        }
    }
}

/// `[page.lan]`: HTTPS on a LAN address, behind a password or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanConfig {
    pub listen: SocketAddr,
    /// An argon2 PHC string (`cbt-agent page-password` makes one).
    pub password_hash: Option<String>,
    /// A file holding a read-only token (for a wall display or a script).
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Also serve `/status`, `/metrics` and `/api/*` there (behind the same
    /// password or token).
    pub api: bool,
}

/// `[staffing]`: what the staffing table is computed for unless asked
/// otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct StaffingConfig {
    pub weeks: u32,
    pub target_s: f64,
    pub target_share: f64,
    pub wrap_up_s: f64,
}

impl Default for StaffingConfig {
    fn default() -> Self {
        let d = cbt_proto::staffing::StaffingParams::default();
        StaffingConfig {
            weeks: d.weeks,
            target_s: d.target_s,
            target_share: d.target_share,
            wrap_up_s: d.wrap_up_s,
        }
    }
}

impl StaffingConfig {
    pub fn params(&self) -> cbt_proto::staffing::StaffingParams {
        cbt_proto::staffing::StaffingParams {
            weeks: self.weeks,
            target_s: self.target_s,
            target_share: self.target_share,
            wrap_up_s: self.wrap_up_s,
            ..Default::default()
        }
    }
}

fn abs_path(c: &mut Checker, v: &Option<S<String>>, key: &str, example: &str) -> Option<PathBuf> {
    let v = v.as_ref()?;
    let s = v.get_ref().trim();
    if !s.starts_with('/') {
        c.bad(v, key, format!("`{s}` is not an absolute path"), format!("write the file's full path, like \"{example}\""));
        return None;
    }
    Some(PathBuf::from(s))
}

pub(super) fn page_config(c: &mut Checker, page: &RawPage, staffing: &RawStaffing, status_listen: &super::Listen) -> PageConfig {
    let national = abs_path(c, &page.national, "page.national", DEFAULT_NATIONAL).unwrap_or_else(|| PathBuf::from(DEFAULT_NATIONAL));
    let lan = page.lan.as_ref().and_then(|l| lan_config(c, l, status_listen));
    PageConfig {
        national,
        lan,
        staffing: staffing_config(c, staffing),
    }
}

fn lan_config(c: &mut Checker, l: &RawLan, status_listen: &super::Listen) -> Option<LanConfig> {
    let first_line = [&l.listen, &l.password_hash, &l.token_file, &l.cert, &l.key]
        .iter()
        .find_map(|v| v.as_ref().map(|v| c.line(v.span())))
        .unwrap_or(1);
    let missing = |c: &mut Checker, key: &str, message: &str, fix: &str| {
        c.problems.push(Problem {
            line: first_line,
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        })
    };
    let listen = match &l.listen {
        None => {
            missing(c, "page.lan.listen", "[page.lan] has no listen address", "add listen = \"192.168.10.5:9443\" (this machine's LAN address), or remove [page.lan] to keep the page on this machine");
            None
        }
        Some(v) => match v.get_ref().trim().parse::<SocketAddr>() {
            Ok(a) if *status_listen == super::Listen::Tcp(a) => {
                c.bad(v, "page.lan.listen", format!("{a} is also status.listen"), "give the LAN listener its own port, like 9443");
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                c.bad(v, "page.lan.listen", format!("`{}` is not address:port", v.get_ref()), "write it like \"192.168.10.5:9443\"");
                None
            }
        },
    };
    let password_hash = l.password_hash.as_ref().and_then(|v| {
        let s = v.get_ref().trim();
        match argon2::PasswordHash::new(s) {
            Ok(h) if h.algorithm.as_str().starts_with("argon2") && h.hash.is_some() => Some(s.to_string()),
            _ => {
                c.bad(v, "page.lan.password_hash", "not an argon2 password hash", "make one with `cbt-agent page-password` and paste the line it prints (it starts with $argon2id$)");
                None
            }
        }
    });
    let token_file = abs_path(c, &l.token_file, "page.lan.token_file", "/etc/cbt-agent/page-token");
    if l.password_hash.is_none() && l.token_file.is_none() {
        missing(
            c,
            "page.lan",
            "the LAN listener needs a password or a token: without one anyone on the network could read the page",
            "add password_hash (from `cbt-agent page-password`) or token_file (from `cbt-agent page-password --token`)",
        );
    }
    let cert = abs_path(c, &l.cert, "page.lan.cert", "/etc/cbt-agent/page.crt");
    let key = abs_path(c, &l.key, "page.lan.key", "/etc/cbt-agent/page.key");
    if l.cert.is_none() || l.key.is_none() {
        missing(
            c,
            "page.lan.cert",
            "the LAN listener serves HTTPS only and needs a certificate and its key",
            "add cert and key (PEM files; see docs/operations.md for making a certificate for this machine)",
        );
    }
    Some(LanConfig {
        listen: listen?,
        password_hash,
        token_file,
        cert: cert?,
        key: key?,
        api: l.api.unwrap_or(false),
    })
}

fn staffing_config(c: &mut Checker, s: &RawStaffing) -> StaffingConfig {
    let mut out = StaffingConfig::default();
    if let Some(v) = &s.weeks {
        if (1..=52).contains(v.get_ref()) {
            out.weeks = *v.get_ref() as u32;
        } else {
            c.bad(v, "staffing.weeks", format!("{} is out of range", v.get_ref()), "use 1 to 52 weeks");
        }
    }
    let secs = |c: &mut Checker, v: &Option<S<String>>, key: &str, lo: f64, hi: f64, default: f64| -> f64 {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()).map(|us| us as f64 / SECOND as f64) {
            Some(s) if (lo..=hi).contains(&s) => s,
            Some(_) => {
                c.bad(v, key, format!("`{}` is out of range", v.get_ref()), format!("use {lo} to {hi} seconds, like \"{default}s\""));
                default
            }
            None => {
                c.bad(v, key, format!("`{}` is not a duration", v.get_ref()), format!("write seconds with a unit, like \"{default}s\""));
                default
            }
        }
    };
    out.target_s = secs(c, &s.target_wait, "staffing.target_wait", 1.0, 3600.0, out.target_s);
    out.wrap_up_s = match &s.wrap_up {
        // "0s" is a fair answer: no wrap-up
        Some(v) if matches!(v.get_ref().trim(), "0" | "0s") => 0.0,
        other => secs(c, other, "staffing.wrap_up", 0.0, 3600.0, out.wrap_up_s),
    };
    if let Some(v) = &s.target_share {
        let x = *v.get_ref();
        if x > 0.0 && x < 1.0 {
            out.target_share = x;
        } else {
            c.bad(v, "staffing.target_share", format!("{x} is not a share between 0 and 1"), "write it like 0.8 (80% of callers)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError, Problem};
    use std::path::Path;

    const SITE: &str = "[[practice]]\nods = \"B82005\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{SITE}{extra}"), Path::new("site.toml"))
    }

    fn problems(extra: &str) -> Vec<Problem> {
        parse(extra).expect_err("should be rejected").problems
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.page.national, Path::new(super::DEFAULT_NATIONAL));
        assert!(c.page.lan.is_none());
        assert_eq!((c.page.staffing.weeks, c.page.staffing.target_s, c.page.staffing.target_share, c.page.staffing.wrap_up_s), (4, 120.0, 0.8, 30.0));
    }

    #[test]
    fn staffing_and_lan() {
        let hash = crate::page::access::hash_password("a long enough password").unwrap();
        let c = parse(&format!(
            "[staffing]\nweeks = 6\ntarget_wait = \"90s\"\ntarget_share = 0.9\nwrap_up = \"0s\"\n[page]\nnational = \"/etc/cbt-agent/national.toml\"\n[page.lan]\nlisten = \"192.168.10.5:9443\"\npassword_hash = \"{hash}\"\ncert = \"/etc/cbt-agent/page.crt\"\nkey = \"/etc/cbt-agent/page.key\"\n"
        ))
        .unwrap();
        assert_eq!((c.page.staffing.weeks, c.page.staffing.target_s, c.page.staffing.target_share, c.page.staffing.wrap_up_s), (6, 90.0, 0.9, 0.0));
        let lan = c.page.lan.unwrap();
        assert_eq!(lan.listen.to_string(), "192.168.10.5:9443");
        assert!(!lan.api && lan.token_file.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let p = problems("[staffing]\nweeks = 0\ntarget_share = 1.5\ntarget_wait = \"soon\"\n");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["staffing.weeks", "staffing.target_share", "staffing.target_wait"]);
        // a listener with nothing to protect it, and no certificate
        let p = problems("[page.lan]\nlisten = \"192.168.10.5:9443\"\n");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"page.lan") && keys.contains(&"page.lan.cert"), "{keys:?}");
        let p = problems("[page.lan]\nlisten = \"192.168.10.5:9443\"\npassword_hash = \"hunter2\"\ncert = \"/c\"\nkey = \"/k\"\n");
        assert_eq!(p[0].key, "page.lan.password_hash");
        assert!(p[0].fix.contains("page-password"));
        let p = problems("[status]\nlisten = \"127.0.0.1:9465\"\n[page.lan]\nlisten = \"127.0.0.1:9465\"\ntoken_file = \"/t\"\ncert = \"/c\"\nkey = \"/k\"\n");
        assert_eq!(p[0].key, "page.lan.listen");
        assert!(problems("[page]\nnational = \"national.toml\"\n")[0].key == "page.national");
        let p = problems("[page.lan]\nlisten = \"192.168.10.5:9443\"\ntoken_fille = \"/t\"\n");
        assert!(p.iter().any(|p| p.key == "page.lan.token_fille" && p.fix.contains("token_file")), "{p:?}");
        // the same for the other optional section
        let p = problems("[upload]\nurl = \"https://collector.example.net\"\ntoken_file = \"/t\"\nproxi = \"http://p:8080\"\n");
        assert!(p.iter().any(|p| p.key == "upload.proxi" && p.fix.contains("proxy") && p.line == 6), "{p:?}");
    }
}
