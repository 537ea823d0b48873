//! `cbt-agent doctor`: the install-day check, for the person at the
//! practice. Each check gives one verdict (ok, warning, failure) with what
//! to do about it; the exit status is the worst verdict (0, 1, 2).
//!
//! It captures for a few seconds on each configured interface (with the
//! configured filter) and reads what it sees: packets at all, SIP in both
//! directions (a one-way mirror is the most common fault), whether the
//! carrier, PBX and staff addresses of the configuration appear, and which
//! addresses appear in no role. It also checks the capture rights, the
//! store, the clock, the service, and the collector with the token.

use crate::config::{AgentConfig, Config};
use crate::{client, commands};
use anyhow::Result;
use cbt_proto::site::AddrMatch;
use cbt_proto::{Engine, EngineConfig, LinkType};
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// How long to watch each interface (make a test call meanwhile).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub seconds: u64,
    /// Skip watching the interfaces.
    #[arg(long)]
    pub no_capture: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(name: &str, verdict: Verdict, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Effective capabilities of this process (from /proc).
fn capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(0))))
        .unwrap_or(0)
}

/// What a watch of one interface saw.
#[derive(Default)]
struct Seen {
    packets: u64,
    requests: u64,
    responses: u64,
    /// SIP endpoints (address -> messages from or to it).
    addrs: BTreeMap<IpAddr, u64>,
}

fn watch(iface: &str, a: &AgentConfig, secs: u64) -> Result<Seen, String> {
    let mut cap = crate::daemon::capture::open(iface, a)?;
    let dl = cap.get_datalink();
    let filter = a.filter_for(dl == pcap::Linktype::ETHERNET);
    cap.filter(&filter, true).map_err(|e| format!("the capture filter does not compile: {e}"))?;
    let link = LinkType::from_linktype(dl.0).ok_or_else(|| format!("link type {} is not supported", dl.0))?;
    let mut engine = Engine::new(EngineConfig {
        journal: true,
        emit_legs: false,
        ..EngineConfig::default()
    });
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        match cap.next_packet() {
            Ok(p) => {
                seen.packets += 1;
                let ts = cbt_proto::Timestamp::from_secs_micros(p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64 / 1000);
                engine.ingest(ts, link, p.data);
                while let Some(j) = engine.poll_journal() {
                    *seen.addrs.entry(j.src.ip()).or_default() += 1;
                    *seen.addrs.entry(j.dst.ip()).or_default() += 1;
                }
            }
            Err(pcap::Error::TimeoutExpired) => {}
            Err(e) => return Err(format!("capture failed: {e}")),
        }
    }
    let st = engine.stats();
    seen.requests = st.sip.requests.values().sum();
    seen.responses = st.sip.responses.values().sum();
    Ok(seen)
}

fn operstate(iface: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/operstate")).ok().map(|s| s.trim().to_string())
}

/// The kernel's clock discipline: synchronised (NTP, chrony, timesyncd) or not.
fn clock_synchronised() -> Option<bool> {
    // SAFETY: adjtimex with modes 0 only reads the kernel's state into `t`.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0)
}

fn roles(c: &Config) -> Vec<(&'static str, &Vec<AddrMatch>)> {
    vec![("carrier", &c.site.carrier), ("pbx", &c.site.pbx), ("staff", &c.site.staff)]
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let mut checks = Vec::new();
    let config = match Config::load(&args.config) {
        Ok(c) => {
            let warn = c.warnings.len();
            checks.push(check(
                "configuration",
                if warn > 0 { Verdict::Warn } else { Verdict::Ok },
                if warn > 0 {
                    format!("{} is valid, with {warn} warnings: {}", args.config.display(), c.warnings.iter().map(|w| format!("{}: {}", w.key, w.message)).collect::<Vec<_>>().join("; "))
                } else {
                    format!("{} is valid", args.config.display())
                },
                (warn > 0).then_some("see `cbt-agent check-config` for each warning and its fix"),
            ));
            Some(c)
        }
        Err(e) => {
            checks.push(check("configuration", Verdict::Fail, e.to_string(), Some("fix the file; `cbt-agent check-config FILE` lists every problem")));
            None
        }
    };
    if let Some(c) = &config {
        let a = &c.agent;
        // rights
        let root = unsafe { libc::geteuid() } == 0;
        let caps = capabilities();
        let can_capture = root || (caps >> 13 & 1 == 1 && caps >> 12 & 1 == 1);
        checks.push(if can_capture {
            check("capture rights", Verdict::Ok, if root { "running as root" } else { "CAP_NET_RAW and CAP_NET_ADMIN" }, None)
        } else {
            check("capture rights", Verdict::Fail, "this user cannot capture packets", Some("run `sudo cbt-agent doctor` (the service itself gets the capabilities from its unit)"))
        });
        // the service
        match client::get(&a.status_listen, "/status") {
            Ok(body) => {
                let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let errors: Vec<String> = s["diagnostics"].as_array().into_iter().flatten().filter(|d| d["severity"] == "error").map(|d| d["message"].as_str().unwrap_or("").to_string()).collect();
                checks.push(if errors.is_empty() {
                    check("service", Verdict::Ok, format!("cbt-agent {} is running and reports no error", s["version"].as_str().unwrap_or("?")), None)
                } else {
                    check("service", Verdict::Fail, format!("running, reporting: {}", errors.join("; ")), Some("see `cbt-agent status` and docs/operations.md, \"Troubleshooting\""))
                });
            }
            Err(e) if client::is_not_running(&e) => checks.push(check(
                "service",
                Verdict::Warn,
                format!("not running (nothing answers at {})", a.status_listen),
                Some("`sudo systemctl enable --now cbt-agent` once the checks below pass"),
            )),
            Err(e) => checks.push(check("service", Verdict::Warn, format!("{e:#}"), None)),
        }
        // the store
        match commands::writable(&a.store_dir) {
            Ok(()) => checks.push(check("store", Verdict::Ok, format!("{} can be written", a.store_dir.display()), None)),
            Err(e) if !root => checks.push(check("store", Verdict::Warn, e, Some("run doctor with sudo to check the store as the service would"))),
            Err(e) => checks.push(check("store", Verdict::Fail, e, Some("free the disk or fix the directory's rights (the service writes it as user cbt-agent)"))),
        }
        // the clock
        checks.push(match clock_synchronised() {
            Some(true) => check("clock", Verdict::Ok, "synchronised", None),
            Some(false) => check(
                "clock",
                Verdict::Warn,
                "not synchronised: call times and the day's boundaries depend on it",
                Some("enable time synchronisation: `sudo timedatectl set-ntp true` (systemd-timesyncd or chrony)"),
            ),
            None => check("clock", Verdict::Warn, "cannot tell whether it is synchronised", None),
        });
        // the collector
        if let Some(u) = &c.upload {
            checks.push(upload_check(u, c));
        }
        // the interfaces
        if !args.no_capture && can_capture {
            checks.extend(capture_checks(c, args.seconds));
        }
    }
    let out = std::io::stdout();
    let mut w = out.lock();
    for ch in &checks {
        let tag = match ch.verdict {
            Verdict::Ok => "  ok ",
            Verdict::Warn => "WARN ",
            Verdict::Fail => "FAIL ",
        };
        writeln!(w, "{tag} {}: {}", ch.name, ch.detail)?;
        if let Some(f) = &ch.fix {
            writeln!(w, "      fix: {f}")?;
        }
    }
    let worst = checks.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Ok);
    Ok(match worst {
        Verdict::Ok => ExitCode::SUCCESS,
        Verdict::Warn => ExitCode::from(1),
        Verdict::Fail => ExitCode::from(2),
    })
}

fn upload_check(u: &crate::config::UploadConfig, c: &Config) -> Check {
    let (client, token) = match crate::upload::deliver::client(u) {
        Ok(x) => x,
        Err(e) => return check("collector", Verdict::Fail, e, Some("fix [upload] (docs/configuration.md)")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return check("collector", Verdict::Warn, e.to_string(), None),
    };
    let url = u.ping_url();
    let r = rt.block_on(async {
        let resp = client.get(&url).bearer_auth(&token).send().await?;
        let status = resp.status().as_u16();
        Ok::<_, reqwest::Error>((status, resp.text().await.unwrap_or_default()))
    });
    match r {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let bound: Vec<String> = v["practices"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_string)).collect();
            let missing: Vec<&str> = c.site.practices.iter().map(|p| p.ods.as_str()).filter(|p| !bound.iter().any(|b| b == p)).collect();
            let name = v["agent"].as_str().unwrap_or_default();
            if name != u.agent_id {
                check(
                    "collector",
                    Verdict::Fail,
                    format!("the token belongs to agent `{name}`, but this agent sends as `{}`: the collector would refuse every document", u.agent_id),
                    Some("set upload.agent_id to the name given to `cbt-collector token add --agent`, or have a token made for this name"),
                )
            } else if missing.is_empty() {
                check("collector", Verdict::Ok, format!("{} accepts the token (agent {})", u.url, v["agent"].as_str().unwrap_or("?")), None)
            } else {
                check(
                    "collector",
                    Verdict::Fail,
                    format!("the token is not bound to {}: their figures would be refused", missing.join(", ")),
                    Some("have the supplier add them: `cbt-collector token add --agent NAME --practice ODS ...` and put the new token in upload.token_file"),
                )
            }
        }
        Ok((status, body)) => {
            let detail = match crate::upload::deliver::classify(status, &body, None) {
                crate::upload::deliver::Outcome::Park(r) | crate::upload::deliver::Outcome::Retry(r, _) => r,
                crate::upload::deliver::Outcome::Taken(_) => format!("{status}"),
            };
            check("collector", Verdict::Fail, detail, None)
        }
        Err(e) => {
            let d = e.to_string();
            let lower = format!("{e:?}").to_ascii_lowercase();
            let fix = if lower.contains("certificate") {
                "set upload.ca_file to the CA that signed the collector's certificate"
            } else {
                "check upload.url, the network path and upload.proxy (a firewall must allow HTTPS out to the collector)"
            };
            check("collector", Verdict::Fail, format!("{url}: {d}"), Some(fix))
        }
    }
}

fn capture_checks(c: &Config, secs: u64) -> Vec<Check> {
    let a = &c.agent;
    let mut out = Vec::new();
    if a.interfaces.is_empty() {
        out.push(check("interfaces", Verdict::Ok, "none configured (HEP input only)", None));
        return out;
    }
    let mut all = Seen::default();
    for iface in &a.interfaces {
        let name = format!("interface {iface}");
        if iface != "any" {
            match operstate(iface) {
                None => {
                    out.push(check(&name, Verdict::Fail, "does not exist", Some("set capture.interfaces to a name from `ip link`")));
                    continue;
                }
                Some(s) if s == "down" => {
                    out.push(check(&name, Verdict::Fail, "is down", Some("connect it (the mirror port's cable) and bring it up: `sudo ip link set IFACE up`")));
                    continue;
                }
                _ => {}
            }
        }
        match watch(iface, a, secs) {
            Err(e) => out.push(check(&name, Verdict::Fail, e, None)),
            Ok(s) => {
                out.push(if s.packets == 0 {
                    check(
                        &name,
                        Verdict::Fail,
                        format!("no packet in {secs} s matched the capture filter"),
                        Some("check the mirror (SPAN) port copies the PBX's traffic to this interface, and make a test call during the check"),
                    )
                } else {
                    check(&name, Verdict::Ok, format!("{} packets in {secs} s", s.packets), None)
                });
                all.packets += s.packets;
                all.requests += s.requests;
                all.responses += s.responses;
                for (k, v) in s.addrs {
                    *all.addrs.entry(k).or_default() += v;
                }
            }
        }
    }
    out.push(match (all.requests, all.responses) {
        (0, 0) => check("SIP", Verdict::Warn, format!("no SIP in {secs} s"), Some("make a test call during the check (`cbt-agent doctor --seconds 60`), or check the capture sees the PBX's SIP")),
        (_, 0) => check(
            "SIP both ways",
            Verdict::Fail,
            format!("{} requests and no response: only one direction is copied", all.requests),
            Some("set the mirror (SPAN) port to copy both directions (ingress and egress) of the PBX's port"),
        ),
        (0, _) => check(
            "SIP both ways",
            Verdict::Fail,
            format!("{} responses and no request: only one direction is copied", all.responses),
            Some("set the mirror (SPAN) port to copy both directions (ingress and egress) of the PBX's port"),
        ),
        (q, r) => check("SIP both ways", Verdict::Ok, format!("{q} requests and {r} responses"), None),
    });
    if all.addrs.is_empty() {
        return out;
    }
    for (role, list) in roles(c) {
        if list.is_empty() {
            continue;
        }
        let hit = all.addrs.keys().any(|ip| list.iter().any(|m| m.matches(std::net::SocketAddr::new(*ip, 0))));
        out.push(if hit {
            check(&format!("{role} addresses"), Verdict::Ok, "seen in the calls", None)
        } else {
            check(
                &format!("{role} addresses"),
                Verdict::Warn,
                format!("none of {} appeared in a call", list.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")),
                Some("make a test call through that part of the system; if it still does not appear, correct network.* in the configuration"),
            )
        });
    }
    let known = |ip: &IpAddr| {
        let sa = std::net::SocketAddr::new(*ip, 0);
        roles(c).iter().any(|(_, l)| l.iter().any(|m| m.matches(sa))) || c.site.callback_originators.iter().any(|m| m.matches(sa))
    };
    let stray: Vec<String> = all.addrs.iter().filter(|(ip, _)| !known(ip)).map(|(ip, n)| format!("{ip} ({n} messages)")).collect();
    if !stray.is_empty() && !(c.site.carrier.is_empty() && c.site.pbx.is_empty() && c.site.staff.is_empty()) {
        out.push(check(
            "addresses in no role",
            Verdict::Warn,
            stray.join(", "),
            Some("if one is the carrier, the PBX, a handset or an IVR, add it to network.* (anything else outside the site counts as the carrier side)"),
        ));
    }
    out
}
