//! A practice's figures over a period (a day, a week, a month) as the
//! practice manager's page shows them. Built from the same [`Aggregator`]
//! as `report` and the NHS files, so the page and the reports cannot
//! disagree: the DPN metrics are the report's own; the rest (days of the
//! week, shares, percentiles, wait and length histograms) is read from the
//! same day figures.

use crate::metrics::{Aggregator, Dpn, Indicator, TIME_CATEGORIES};
use crate::staffing::{weekday_name, WEEKDAYS};
use chrono::{Datelike, NaiveDate};
use serde::Serialize;

/// Outcome columns of the charts, in stacking order.
pub const OUTCOMES: [&str; 4] = ["answered", "missed", "ended_in_ivr", "callback_requested"];

/// The indicator of each of [`OUTCOMES`].
pub const OUTCOME_INDICATORS: [Indicator; 4] = [Indicator::Cbt003, Indicator::Cbt004, Indicator::Cbt002, Indicator::Cbt005];

/// Calls by outcome (in [`OUTCOMES`] order) in one band, weekday or date.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub label: String,
    /// answered, missed, ended in IVR, callback requested.
    pub outcomes: [u64; 4],
    pub callbacks_made: u64,
    /// Days counted (weekday rows: how many of that weekday the period has).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

impl Counts {
    pub fn inbound(&self) -> u64 {
        self.outcomes.iter().sum()
    }
}

/// A histogram over labelled buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Histogram {
    pub labels: Vec<String>,
    pub counts: Vec<u64>,
}

/// What the page shows of one practice over `from..=to`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeriodFigures {
    pub practice: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The nine DPN metrics, exactly as `report --output metrics` gives them.
    pub dpn: Dpn,
    pub ended_in_ivr: u64,
    /// By time band (`Time_Category`).
    pub by_band: Vec<Counts>,
    /// Monday first.
    pub by_weekday: Vec<Counts>,
    /// Every date of the period.
    pub by_date: Vec<Counts>,
    /// Answered calls by wait bucket (all core categories), and calls
    /// abandoned while waiting by the same buckets.
    pub answered_by_wait: Histogram,
    pub abandoned_by_wait: Histogram,
    /// Answered calls by call length bucket.
    pub answered_by_length: Histogram,
    /// Shares of inbound calls (0-1); `None` without calls.
    pub answered_share: Option<f64>,
    pub ended_in_ivr_share: Option<f64>,
    pub callback_requested_share: Option<f64>,
    pub missed_share: Option<f64>,
    /// Abandoned (DPN 2, both parts) over inbound.
    pub abandonment_share: Option<f64>,
    /// Answered within 2 minutes (whole seconds, 120 s included, as the
    /// NHS buckets count) over answered.
    pub answered_within_2_min_share: Option<f64>,
    pub median_wait_s: Option<f64>,
    /// 90th percentile of answered waits (nearest rank).
    pub p90_wait_s: Option<f64>,
    pub median_call_length_s: Option<f64>,
    /// Calls of which part was not seen.
    pub partial_calls: u64,
}

/// Nearest-rank percentile (`q` in 0-1) of values, rounded to the millisecond.
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some((s[rank - 1] * 1000.0).round() / 1000.0)
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The figures of `practice` over `from..=to` from an aggregator holding
/// (at least) those dates' calls and callbacks.
pub fn period(agg: &Aggregator, practice: &str, from: NaiveDate, to: NaiveDate) -> PeriodFigures {
    let report = agg.report(Some(from), Some(to));
    let pr = report.practices.iter().find(|p| p.practice == practice);
    let mut total = crate::metrics::Day::new(agg.wait_buckets(), agg.duration_buckets());
    let mut by_band: Vec<Counts> = TIME_CATEGORIES.iter().map(|l| Counts { label: l.to_string(), ..Counts::default() }).collect();
    let mut by_weekday: Vec<Counts> = WEEKDAYS
        .iter()
        .map(|w| Counts {
            label: weekday_name(*w).to_string(),
            days: Some(0),
            ..Counts::default()
        })
        .collect();
    let mut by_date = Vec::new();
    let mut date = from;
    while date <= to {
        if let Some(d) = by_weekday[date.weekday().num_days_from_monday() as usize].days.as_mut() {
            *d += 1;
        }
        let mut c = Counts {
            label: date.format("%Y-%m-%d").to_string(),
            ..Counts::default()
        };
        if let Some(day) = agg.days().get(&(practice.to_string(), date)) {
            total.merge(day);
            let w = &mut by_weekday[date.weekday().num_days_from_monday() as usize];
            for (k, ind) in OUTCOME_INDICATORS.iter().enumerate() {
                let n = day.total(*ind);
                c.outcomes[k] = n;
                w.outcomes[k] += n;
                for (b, band) in by_band.iter_mut().enumerate() {
                    band.outcomes[k] += day.band(*ind, b);
                }
            }
            c.callbacks_made = day.total(Indicator::Cbt006);
            w.callbacks_made += c.callbacks_made;
            for (b, band) in by_band.iter_mut().enumerate() {
                band.callbacks_made += day.band(Indicator::Cbt006, b);
            }
        }
        by_date.push(c);
        date = match date.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    let dpn = pr.map(|p| p.dpn.clone()).unwrap_or_else(|| crate::metrics::Dpn::of(&total));
    let inbound = dpn.call_volume;
    let ended_in_ivr = total.total(Indicator::Cbt002);
    let wait = agg.wait_buckets();
    let mut abandoned = vec![0u64; wait.len()];
    for w in &total.abandoned_waits {
        abandoned[wait.index(*w)] += 1;
    }
    let within = total.answered_waits.iter().filter(|w| w.is_finite() && w.floor() <= 120.0).count() as u64;
    PeriodFigures {
        practice: practice.to_string(),
        from,
        to,
        ended_in_ivr,
        by_band,
        by_weekday,
        by_date,
        answered_by_wait: Histogram {
            labels: wait.labels().to_vec(),
            counts: total.answered_by_wait.iter().map(|c| c.iter().sum()).collect(),
        },
        abandoned_by_wait: Histogram {
            labels: wait.labels().to_vec(),
            counts: abandoned,
        },
        answered_by_length: Histogram {
            labels: agg.duration_buckets().labels().to_vec(),
            counts: total.answered_by_duration.clone(),
        },
        answered_share: share(dpn.answered_calls, inbound),
        ended_in_ivr_share: share(ended_in_ivr, inbound),
        callback_requested_share: share(dpn.callbacks_requested, inbound),
        missed_share: share(dpn.missed_calls, inbound),
        abandonment_share: share(dpn.calls_abandoned, inbound),
        answered_within_2_min_share: share(within, total.answered_waits.len() as u64),
        median_wait_s: dpn.median_wait_to_answer_s,
        p90_wait_s: percentile(&total.answered_waits, 0.9),
        median_call_length_s: dpn.median_call_length_s,
        partial_calls: total.partial,
        dpn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 0.9), None);
        assert_eq!(percentile(&[5.0], 0.9), Some(5.0));
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.9), Some(10.0));
    }
}
