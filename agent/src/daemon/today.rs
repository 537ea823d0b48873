//! Today's figures, live (the status, the page): read from the store once a
//! day (and after a reload), then kept up to date from each call the store
//! acknowledges, so that a day's live figures and its close agree.
//!
//! A call is in the store (a read sees it) a moment before the store
//! acknowledges it (the group commit, every 50 ms). The read leaves out what
//! is written but not acknowledged, and a read made while acknowledging
//! already holds the calls acknowledged: either way, a call counts once.

use super::persister::Persister;
use cbt_proto::call::CallEvent;
use cbt_proto::metrics::Aggregator;
use cbt_proto::site::Site;
use chrono::NaiveDate;

#[derive(Default)]
pub(super) struct LiveToday {
    /// The date, its figures, and whether they were read from the store
    /// (else they are empty for now, and read at the next use: the store
    /// was away or could not be read).
    day: Option<(NaiveDate, Aggregator, bool)>,
    /// When a read last failed: tried again a minute later, not at every
    /// use (each would read today's file and log again).
    failed: Option<std::time::Instant>,
}

const READ_AGAIN: std::time::Duration = std::time::Duration::from_secs(60);

impl LiveToday {
    /// Read again from the store at the next use (a new site).
    pub fn forget(&mut self) {
        self.day = None;
        self.failed = None;
    }

    fn stale(&self, today: NaiveDate) -> bool {
        match &self.day {
            Some((d, _, read)) if *d == today => !read && self.failed.is_none_or(|t| t.elapsed() >= READ_AGAIN),
            _ => true,
        }
    }

    /// The figures of `today`, read from the store if they are not held.
    pub fn figures(&mut self, site: &Site, persister: &Persister, today: NaiveDate) -> &mut Aggregator {
        if self.stale(today) {
            // today's stored calls and the callbacks made today, as the
            // day's close will count them (read a chunk at a time)
            let read = match persister.store() {
                Some(store) => store.figures_on_except(site, today, &persister.unacknowledged()).map_err(|e| {
                    tracing::warn!("today's stored calls could not be read (tried again in a minute): {e:#}");
                    self.failed = Some(std::time::Instant::now());
                }),
                None => Err(()),
            };
            self.day = Some(match read {
                Ok(agg) => {
                    self.failed = None;
                    (today, agg, true)
                }
                Err(()) => (today, Aggregator::new(site), false),
            });
        }
        match &mut self.day {
            Some((_, agg, _)) => agg,
            None => unreachable!("set above"),
        }
    }

    /// Counts the calls and callbacks the store just acknowledged.
    pub fn acknowledged(&mut self, site: &Site, persister: &Persister, today: NaiveDate, acked: &[CallEvent]) {
        if acked.is_empty() {
            return;
        }
        let read_now = self.stale(today);
        let agg = self.figures(site, persister, today);
        if read_now {
            // the read holds them: they are acknowledged, so stored (a
            // read that failed is made again at the next use, and holds
            // them then)
            return;
        }
        for ev in acked {
            match ev {
                CallEvent::Finished(r) if agg.local_date(r.started) == today => agg.add_call(r),
                CallEvent::CallbackMade { practice, at, .. } if agg.local_date(*at) == today => agg.add_callback(practice, *at),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::persister::tests::{calls, engine, opened, persister, site, stored_then_killed, T0};
    use crate::daemon::persister::FLUSH_EVERY;
    use crate::daemon::ManualClock;
    use cbt_proto::metrics::Indicator;
    use cbt_proto::Timestamp;
    use std::sync::Arc;

    /// Inbound calls in the figures (CBT001).
    fn inbound(agg: &Aggregator) -> u64 {
        agg.days().values().map(|d| d.total(Indicator::Cbt001)).sum()
    }

    /// The test calls' local date.
    fn today() -> NaiveDate {
        Aggregator::new(&site()).local_date(Timestamp(T0))
    }

    #[test]
    fn a_call_stored_but_not_yet_acknowledged_when_today_is_read_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp(T0)));
        let (mut p, mut e) = opened(dir.path(), &clock);
        let (site, today) = (site(), today());
        let mut live = LiveToday::default();
        calls(&mut e, 1, 3);
        assert!(p.persist(&mut e).is_empty(), "written, not acknowledged");
        // the status reads today's figures between the write and the flush
        assert_eq!(inbound(live.figures(&site, &p, today)), 0, "not acknowledged: not counted yet");
        clock.advance(FLUSH_EVERY);
        let acked = p.persist(&mut e);
        assert_eq!(acked.len(), 3);
        live.acknowledged(&site, &p, today, &acked);
        assert_eq!(inbound(live.figures(&site, &p, today)), 3, "each call once");
        let close = p.store().unwrap().figures_on(&site, today).unwrap();
        assert_eq!(inbound(&close), 3, "as the day's close counts them");
    }

    #[test]
    fn today_first_read_while_acknowledging_a_batch_counts_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp(T0)));
        let (mut p, mut e) = opened(dir.path(), &clock);
        let (site, today) = (site(), today());
        let mut live = LiveToday::default();
        calls(&mut e, 1, 5);
        assert!(p.persist(&mut e).is_empty());
        clock.advance(FLUSH_EVERY);
        let acked = p.persist(&mut e);
        assert_eq!(acked.len(), 5);
        live.acknowledged(&site, &p, today, &acked);
        assert_eq!(inbound(live.figures(&site, &p, today)), 5);
        // later calls are counted as they are acknowledged
        calls(&mut e, 6, 2);
        assert!(p.persist(&mut e).is_empty());
        clock.advance(FLUSH_EVERY);
        let acked = p.persist(&mut e);
        live.acknowledged(&site, &p, today, &acked);
        assert_eq!(inbound(live.figures(&site, &p, today)), 7);
        assert_eq!(inbound(&p.store().unwrap().figures_on(&site, today).unwrap()), 7);
    }

    #[test]
    fn today_read_while_the_store_is_away_is_read_again_when_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp(T0)));
        let (site, today) = (site(), today());
        stored_then_killed(dir.path(), &clock, 3);
        // the next process is asked for today's figures before its store opens
        let (mut p, _) = persister(dir.path().join("store"), 100, clock.clone());
        let mut live = LiveToday::default();
        assert_eq!(inbound(live.figures(&site, &p, today)), 0, "no store yet");
        let mut e = engine();
        p.open(&mut e);
        assert_eq!(inbound(live.figures(&site, &p, today)), 3, "read once the store is there");
    }
}
