//! Shared bits of the benchmark tools.

/// A memory field of this process in MiB (`VmRSS:`, `VmHWM:`...), from
/// /proc/self/status; 0 if it cannot be read.
pub fn own_mib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}
