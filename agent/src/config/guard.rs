//! The settings against hostile traffic: who may send HEP (`hep.allow`),
//! how scanners are recognised (`[scanners]`), and the memory ceilings
//! (`[limits]`). See docs/configuration.md and docs/operations.md.

use super::{parse_duration, parse_size, Checker, S};
use cbt_proto::guard::{GuardConfig, DEFAULT_MEMORY_LIMIT, DEFAULT_SCANNER_AGENTS};
use cbt_proto::site::AddrMatch;
use cbt_proto::time::{Micros, MINUTE, SECOND};
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScanners {
    user_agents: Option<Vec<S<String>>>,
    burst: Option<S<i64>>,
    burst_window: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    engine_memory: Option<S<String>>,
    queue_memory: Option<S<String>>,
}

/// Default ceiling for packets waiting between capture and the engine.
pub const DEFAULT_QUEUE_MEMORY: usize = 32 << 20;

/// The validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// HEP senders besides loopback (`hep.allow`).
    pub hep_allow: Vec<AddrMatch>,
    /// Ceiling for engine state (`limits.engine_memory`).
    pub engine_memory: usize,
    /// Ceiling for packets queued before the engine (`limits.queue_memory`).
    pub queue_memory: usize,
    /// `scanners.user_agents`, lower case.
    pub scanner_agents: Vec<String>,
    pub burst: u32,
    pub burst_window: Micros,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            hep_allow: Vec::new(),
            engine_memory: DEFAULT_MEMORY_LIMIT,
            queue_memory: DEFAULT_QUEUE_MEMORY,
            scanner_agents: DEFAULT_SCANNER_AGENTS.iter().map(|s| s.to_string()).collect(),
            burst: 50,
            burst_window: 10 * SECOND,
        }
    }
}

impl GuardSettings {
    /// What the engine applies.
    pub fn engine(&self) -> GuardConfig {
        GuardConfig {
            memory_limit: self.engine_memory,
            scanner_agents: self.scanner_agents.clone(),
            burst: self.burst,
            burst_window: self.burst_window,
        }
    }

    /// Who may send HEP: this host's loopback (127.0.0.1, ::1), then `hep.allow`.
    pub fn hep_senders(&self) -> Vec<AddrMatch> {
        let mut v = vec![
            AddrMatch::Addr(IpAddr::from([127, 0, 0, 1]), None),
            AddrMatch::Addr(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), None),
        ];
        v.extend(self.hep_allow.iter().cloned());
        v
    }
}

pub(super) fn settings(c: &mut Checker, allow: &[S<String>], sc: &RawScanners, lim: &RawLimits) -> GuardSettings {
    let d = GuardSettings::default();
    let mut hep_allow = Vec::new();
    for v in allow {
        match AddrMatch::parse(v.get_ref()) {
            Ok(AddrMatch::Addr(_, Some(_))) => c.bad(
                v,
                "hep.allow",
                format!("`{}` has a port, but senders are recognised by address only", v.get_ref()),
                "write the address without :port (10.20.0.5) or a CIDR block (10.20.0.0/24)",
            ),
            Ok(a) => hep_allow.push(a),
            Err(e) => c.bad(
                v,
                "hep.allow",
                e,
                "write the address (10.20.0.5), CIDR block (10.20.0.0/24) or range (10.20.0.5-10.20.0.9) of the PBX or HEP agent sending to hep.listen",
            ),
        }
    }
    let size = |c: &mut Checker, v: &Option<S<String>>, key: &str, lo: u64, hi: u64, default: usize, example: &str| -> usize {
        let Some(v) = v else { return default };
        match parse_size(v.get_ref()) {
            Some(n) if (lo..=hi).contains(&n) => n as usize,
            Some(_) => {
                c.bad(v, key, format!("`{}` is out of range", v.get_ref()), format!("write a size from {} MiB to {} MiB, like \"{example}\"", lo >> 20, hi >> 20));
                default
            }
            None => {
                c.bad(v, key, format!("`{}` is not a size", v.get_ref()), format!("write a number with a unit, like \"{example}\""));
                default
            }
        }
    };
    // the packaged unit stops the agent at 256 MiB (MemoryMax): the engine's
    // ceiling must leave room for the rest (store cache, queue, capture rings)
    let engine_memory = size(c, &lim.engine_memory, "limits.engine_memory", 8 << 20, 4 << 30, d.engine_memory, "64MiB");
    let queue_memory = size(c, &lim.queue_memory, "limits.queue_memory", 1 << 20, 1 << 30, d.queue_memory, "32MiB");
    let scanner_agents = match &sc.user_agents {
        None => d.scanner_agents,
        Some(list) => {
            let mut out = Vec::new();
            for v in list {
                let s = v.get_ref().trim();
                if s.is_empty() || s.len() > 64 || !s.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ') {
                    c.bad(v, "scanners.user_agents", format!("`{s}` is not a User-Agent fragment"), "write a word of the scanner's User-Agent header (printable ASCII, at most 64 characters), like \"friendly-scanner\"");
                } else {
                    out.push(s.to_ascii_lowercase());
                }
            }
            out
        }
    };
    let burst = match &sc.burst {
        None => d.burst,
        Some(n) if (5..=100_000).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            c.bad(n, "scanners.burst", format!("{} is out of range", n.get_ref()), "use a number of new calls from 5 to 100000 (default 50): more than a practice's carrier ever sends within scanners.burst_window");
            d.burst
        }
    };
    let burst_window = match &sc.burst_window {
        None => d.burst_window,
        Some(v) => match parse_duration(v.get_ref()) {
            Some(t) if (SECOND..=10 * MINUTE).contains(&t) => t,
            _ => {
                c.bad(v, "scanners.burst_window", format!("`{}` is not a duration from 1s to 10m", v.get_ref()), "write a duration like \"10s\"");
                d.burst_window
            }
        },
    };
    GuardSettings {
        hep_allow,
        engine_memory,
        queue_memory,
        scanner_agents,
        burst,
        burst_window,
    }
}
