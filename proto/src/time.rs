//! Packet time. The engine never reads a clock: every instant comes from a
//! captured packet (or from the caller of `tick`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Microseconds since the Unix epoch, UTC, as stamped on a captured packet.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A span of packet time, in microseconds.
pub type Micros = i64;

pub const MILLISECOND: Micros = 1_000;
pub const SECOND: Micros = 1_000_000;
pub const MINUTE: Micros = 60 * SECOND;
pub const HOUR: Micros = 60 * MINUTE;

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    /// From a pcap-style (seconds, sub-second) pair; `sub` is in microseconds.
    pub fn from_secs_micros(secs: i64, micros: i64) -> Self {
        Timestamp(secs.saturating_mul(SECOND).saturating_add(micros))
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn add(self, d: Micros) -> Self {
        Timestamp(self.0.saturating_add(d))
    }

    /// `self - earlier` in microseconds (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Micros {
        self.0.saturating_sub(earlier.0)
    }

    /// Seconds as a float, for wait and duration figures.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        self.since(earlier) as f64 / SECOND as f64
    }

    pub fn to_datetime(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_micros(self.0)
    }

    /// RFC 3339, UTC, always six fractional digits: `2024-03-31T00:59:59.123456Z`.
    pub fn to_rfc3339(self) -> String {
        match self.to_datetime() {
            Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            None => format!("@{}us", self.0),
        }
    }

    /// Parses what `to_rfc3339` prints (any RFC 3339 offset is accepted).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|dt| Timestamp(dt.timestamp_micros()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_microseconds_and_round_trips() {
        let t = Timestamp::from_secs_micros(1_711_846_799, 123_456);
        assert_eq!(t.to_rfc3339(), "2024-03-31T00:59:59.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::from_secs_micros(0, 0).to_rfc3339(),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp::MAX.add(SECOND), Timestamp::MAX);
        assert_eq!(Timestamp(5 * SECOND).secs_since(Timestamp(SECOND)), 4.0);
    }
}
