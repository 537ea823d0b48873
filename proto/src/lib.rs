//! cbt-proto: the sans-IO engine of cbt-agent.
//!
//! Timestamped link-layer frames go in ([`engine::Engine::ingest`]); SIP
//! INVITE legs come out ([`engine::Engine::poll_leg`]). Nothing here does I/O
//! or reads a clock: time comes from packets, and `tick` advances timers.
//! Replaying the same frames gives the same legs, byte for byte.
//!
//! Layers, bottom up:
//! - [`wire`]: link layer, IPv4/IPv6 with fragment reassembly, tunnels, UDP,
//!   TCP stream reassembly, HEPv3;
//! - [`sip`]: message framing, a tolerant normalising step, rsip, and the
//!   owned [`sip::SipMessage`] summary;
//! - [`leg`]: INVITE dialogs with their timestamps and timers;
//! - [`guard`]: traffic that is not a patient calling (scanners, floods)
//!   and the memory ceiling;
//! - [`engine`]: the three wired together.

// No unsafe code, with one exception allowed where it is: the SSE2 newline
// mask in `sip/frame.rs` (`newline_bits`), a compare of sixteen borrowed bytes.
#![deny(unsafe_code)]

/// Adds one to `key`'s count in a counter table keyed by name (the
/// name is copied only the first time it is counted).
pub fn count_by_name(counts: &mut std::collections::BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

pub mod call;
pub mod engine;
pub mod guard;
pub mod leg;
mod mem;
pub mod metrics;
pub mod national;
pub mod number;
pub mod period;
pub mod persist;
pub mod site;
pub mod sip;
pub mod staffing;
/// Synthetic traffic for tests, fuzzing and benchmarks (feature `synth`).
#[cfg(any(test, feature = "synth"))]
pub mod synth;
pub mod time;
pub mod upload;
pub mod wire;

pub use engine::{Engine, EngineConfig, EngineSnapshot, EngineStats};
pub use leg::{EndReason, Leg, LegConfig, Side};
pub use time::Timestamp;
pub use wire::LinkType;
