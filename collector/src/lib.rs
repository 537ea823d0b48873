//! cbt-collector: the IT supplier's side of cbt-agent. Agents POST one day
//! document per practice and local date (`cbt_proto::upload`); the
//! collector keeps the highest revision of each in PostgreSQL and writes
//! the monthly NHS England submission for the whole estate with the one
//! CSV writer the agent uses (`cbt_proto::metrics::export`).
//!
//! Stateless: every rule (idempotency, revisions, tokens) lives in the
//! database, so several collectors can serve one PostgreSQL behind a load
//! balancer. See docs/collector.md.

pub mod config;
pub mod db;
pub mod http;
pub mod participation;
pub mod serve;
pub mod status;
pub mod store;
pub mod submission;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};

/// The results a request can have, as counted in `/metrics`.
pub const RESULTS: [&str; 12] = [
    "stored",
    "duplicate",
    "superseded",
    "conflict",
    "ping",
    "bad_request",
    "unauthorized",
    "forbidden",
    "too_large",
    "unsupported_media_type",
    "unavailable",
    "error",
];

/// Request counters of this process.
#[derive(Default)]
pub struct Metrics {
    counts: [AtomicU64; RESULTS.len()],
}

impl Metrics {
    pub fn count(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, result: &str) -> u64 {
        RESULTS.iter().position(|r| *r == result).map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RESULTS.iter().zip(&self.counts).map(|(r, c)| (*r, c.load(Ordering::Relaxed))).collect()
    }
}
