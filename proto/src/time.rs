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

/// An optional [`Timestamp`] in 8 bytes, not 16: what a leg or call in
/// progress keeps of its many optional instants (a leg has nine; at 12,000
/// legs in progress the difference is over a megabyte). `i64::MIN` stands
/// for none; `Some(Timestamp::MIN)` is kept as one microsecond later.
/// Read and written as `Option<Timestamp>` (stored forms are unchanged);
/// ordered as `Option<Timestamp>` is (none first).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OptTime(i64);

impl OptTime {
    pub const NONE: OptTime = OptTime(i64::MIN);

    pub const fn some(t: Timestamp) -> OptTime {
        OptTime(if t.0 == i64::MIN { i64::MIN + 1 } else { t.0 })
    }

    pub const fn get(self) -> Option<Timestamp> {
        if self.0 == i64::MIN {
            None
        } else {
            Some(Timestamp(self.0))
        }
    }

    pub const fn is_some(self) -> bool {
        self.0 != i64::MIN
    }

    pub const fn is_none(self) -> bool {
        self.0 == i64::MIN
    }

    /// Sets it to `t` unless it is already set (a first sighting).
    pub fn or_set(&mut self, t: Timestamp) {
        if self.is_none() {
            *self = OptTime::some(t);
        }
    }
}

impl Default for OptTime {
    fn default() -> Self {
        OptTime::NONE
    }
}

impl From<Option<Timestamp>> for OptTime {
    fn from(t: Option<Timestamp>) -> Self {
        t.map_or(OptTime::NONE, OptTime::some)
    }
}

impl From<OptTime> for Option<Timestamp> {
    fn from(t: OptTime) -> Self {
        t.get()
    }
}

impl fmt::Debug for OptTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for OptTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Timestamp>::deserialize(d).map(OptTime::from)
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
    fn an_optional_time_is_eight_bytes_and_stored_as_an_option() {
        assert_eq!(std::mem::size_of::<OptTime>(), 8);
        for t in [None, Some(Timestamp(0)), Some(Timestamp(-1)), Some(Timestamp(1_711_846_799_123_456)), Some(Timestamp::MAX)] {
            let o = OptTime::from(t);
            assert_eq!(o.get(), t);
            assert_eq!(serde_json::to_string(&o).unwrap(), serde_json::to_string(&t).unwrap());
            assert_eq!(serde_json::from_str::<OptTime>(&serde_json::to_string(&t).unwrap()).unwrap(), o);
        }
        // the one value it cannot hold stays a time
        assert_eq!(OptTime::some(Timestamp::MIN).get(), Some(Timestamp(i64::MIN + 1)));
        assert_eq!(OptTime::default(), OptTime::NONE);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp::MAX.add(SECOND), Timestamp::MAX);
        assert_eq!(Timestamp(5 * SECOND).secs_since(Timestamp(SECOND)), 4.0);
    }
}
