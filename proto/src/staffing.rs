//! How many people the phones need: queueing models fed by a practice's own
//! calls.
//!
//! For every weekday and half-hour, from the last weeks of inbound calls:
//! how many calls wanted a person (arrivals per hour), how long a person is
//! busy with one (mean handling time: the answered calls' length plus a
//! wrap-up), and from those, by **Erlang C**, the fewest people on the phones
//! for a target such as "80% of callers answered within 120 s", with the
//! service level one person fewer and one more.
//!
//! **Erlang A** (callers give up; patience estimated from the practice's own
//! abandoned calls) is given beside it: it is the more realistic model, since
//! Erlang C's callers wait for ever. Erlang C is validated against published
//! worked examples, Erlang A against its Erlang C limit and a simulation
//! (`staffing/tests.rs`).
//!
//! Numerics: Erlang B by its recursion (every step between 0 and 1, no
//! factorial, no power), Erlang C from it; Erlang A's stationary
//! distribution in log space and its waiting-time distribution by
//! uniformisation. Nothing overflows at hundreds of agents.

use crate::call::{CallRecord, Outcome};
use crate::site::{Site, UNASSIGNED};
use crate::time::Timestamp;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};
use serde::Serialize;
use std::collections::BTreeMap;

/// Erlang B: the probability that a call offered `traffic` erlangs finds all
/// `servers` busy (lost-calls-cleared). Recursion
/// `B(0) = 1, B(k) = A·B(k-1) / (k + A·B(k-1))`.
pub fn erlang_b(servers: u32, traffic: f64) -> f64 {
    if traffic.is_nan() || traffic <= 0.0 {
        return if servers == 0 { 1.0 } else { 0.0 };
    }
    let mut b = 1.0;
    for k in 1..=servers {
        b = traffic * b / (k as f64 + traffic * b);
    }
    b
}

/// Erlang C: the probability that a caller has to wait (all `servers`
/// busy) when callers wait as long as it takes. 1 when the servers cannot
/// keep up (`servers <= traffic`).
pub fn erlang_c(servers: u32, traffic: f64) -> f64 {
    if traffic.is_nan() || traffic <= 0.0 {
        return 0.0;
    }
    let n = servers as f64;
    if n <= traffic {
        return 1.0;
    }
    let b = erlang_b(servers, traffic);
    (n * b / (n - traffic * (1.0 - b))).clamp(0.0, 1.0)
}

/// Erlang C service level: the share of callers answered within
/// `target_s`, `1 - C·exp(-(n - A)·t / h)`. 0 when the servers cannot keep
/// up; 1 with no traffic.
pub fn service_level(servers: u32, traffic: f64, handle_s: f64, target_s: f64) -> f64 {
    if traffic.is_nan() || traffic <= 0.0 {
        return 1.0;
    }
    let n = servers as f64;
    if n <= traffic || handle_s <= 0.0 {
        return 0.0;
    }
    let c = erlang_c(servers, traffic);
    (1.0 - c * (-(n - traffic) * target_s.max(0.0) / handle_s).exp()).clamp(0.0, 1.0)
}

/// Erlang C mean wait of all callers (average speed of answer),
/// `C·h / (n - A)`; `None` when the servers cannot keep up.
pub fn mean_wait(servers: u32, traffic: f64, handle_s: f64) -> Option<f64> {
    if traffic.is_nan() || traffic <= 0.0 {
        return Some(0.0);
    }
    let n = servers as f64;
    (n > traffic).then(|| erlang_c(servers, traffic) * handle_s / (n - traffic))
}

/// The fewest servers whose Erlang C service level reaches `share`
/// (0 with no traffic).
pub fn staff_needed(traffic: f64, handle_s: f64, target_s: f64, share: f64) -> u32 {
    if traffic.is_nan() || traffic <= 0.0 || handle_s <= 0.0 {
        return 0;
    }
    let share = share.clamp(0.0, 0.999_999);
    let mut n = traffic.floor() as u32 + 1;
    // the service level rises with every server towards 1: this ends; the
    // cap only guards against nonsense inputs
    let cap = (traffic * 10.0 + 1000.0).min(u32::MAX as f64 / 2.0) as u32;
    while n < cap && service_level(n, traffic, handle_s, target_s) < share {
        n += 1;
    }
    n
}

/// What Erlang A (M/M/n+M: exponential patience) says of one staffing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ErlangA {
    /// The share of all callers answered within the target (those who
    /// give up, at any time, are not).
    pub answered_within: f64,
    /// The share of callers who give up before being answered.
    pub abandon: f64,
    /// The share of callers who find everyone busy.
    pub wait_prob: f64,
}

/// Erlang A for `servers` people, callers arriving at `arrival_per_s`, each
/// taking `handle_s` of a person's time, giving up after an exponential
/// patience of mean `patience_s`.
pub fn erlang_a(servers: u32, arrival_per_s: f64, handle_s: f64, patience_s: f64, target_s: f64) -> ErlangA {
    if arrival_per_s.is_nan() || arrival_per_s <= 0.0 {
        return ErlangA {
            answered_within: 1.0,
            abandon: 0.0,
            wait_prob: 0.0,
        };
    }
    if servers == 0 || handle_s <= 0.0 || patience_s.is_nan() || patience_s <= 0.0 {
        return ErlangA {
            answered_within: 0.0,
            abandon: 1.0,
            wait_prob: 1.0,
        };
    }
    let (lambda, mu, theta) = (arrival_per_s, 1.0 / handle_s, 1.0 / patience_s.min(1e9));
    let n = servers as usize;
    // log of the unnormalised stationary probabilities of k callers in the
    // system (birth rate λ, death rate min(k, n)·μ + max(k - n, 0)·θ), up
    // to where they no longer matter
    let mut lp: Vec<f64> = vec![0.0];
    let mut max = 0.0f64;
    let cap = n + 200_000;
    let mut k = 0usize;
    loop {
        k += 1;
        let death = (k.min(n)) as f64 * mu + k.saturating_sub(n) as f64 * theta;
        let v = lp[k - 1] + lambda.ln() - death.ln();
        lp.push(v);
        max = max.max(v);
        if (k > n && v < max - 46.0 && v < lp[k - 1]) || k >= cap {
            break;
        }
    }
    let weights: Vec<f64> = lp.iter().map(|v| (v - max).exp()).collect();
    let z: f64 = weights.iter().sum();
    let pi: Vec<f64> = weights.iter().map(|w| w / z).collect();
    let immediate: f64 = pi[..n].iter().sum();
    let queued: f64 = pi[n..].iter().enumerate().map(|(j, p)| j as f64 * p).sum();
    let abandon = (theta * queued / lambda).clamp(0.0, 1.0);
    // a caller finding n + j in the system has j callers ahead; the number
    // ahead falls at rate n·μ + i·θ, the caller gives up at rate θ, and is
    // answered on leaving position 0. Uniformised at rate Λ, starting from
    // the arrival distribution over positions, summing the answered mass by
    // the Poisson weights of the number of jumps by time t.
    let mut q: Vec<f64> = pi[n..].to_vec();
    let jmax = q.len() - 1;
    let rate = |i: usize| n as f64 * mu + i as f64 * theta;
    let big = rate(jmax) + theta;
    let lt = big * target_s.max(0.0);
    let steps = (lt + 12.0 * lt.sqrt() + 30.0).ceil() as usize;
    let mut served = 0.0;
    let mut within = 0.0;
    // Poisson(m; Λt) in log space: log p0 = -Λt
    let mut log_pois = -lt;
    let mut mass_left = 1.0;
    for m in 0..=steps {
        let w = if lt > 0.0 { log_pois.exp() } else if m == 0 { 1.0 } else { 0.0 };
        within += w * served;
        mass_left -= w;
        if lt > 0.0 {
            log_pois += lt.ln() - ((m + 1) as f64).ln();
        }
        // one jump
        let mut next = vec![0.0; q.len()];
        for (i, p) in q.iter().enumerate() {
            if *p == 0.0 {
                continue;
            }
            let a = rate(i);
            let stay = 1.0 - (a + theta) / big;
            next[i] += p * stay;
            if i == 0 {
                served += p * a / big;
            } else {
                next[i - 1] += p * a / big;
            }
        }
        q = next;
    }
    // the Poisson mass beyond the last step (tiny) gets the last answer
    within += mass_left.max(0.0) * served;
    ErlangA {
        answered_within: (immediate + within).clamp(0.0, 1.0),
        abandon,
        wait_prob: (1.0 - immediate).clamp(0.0, 1.0),
    }
}

/// The fewest people for which Erlang A's share answered within the target
/// reaches `share`; `None` if not reached within `limit` people.
pub fn staff_needed_a(arrival_per_s: f64, handle_s: f64, patience_s: f64, target_s: f64, share: f64, limit: u32) -> Option<u32> {
    if arrival_per_s.is_nan() || arrival_per_s <= 0.0 {
        return Some(0);
    }
    (1..=limit).find(|n| erlang_a(*n, arrival_per_s, handle_s, patience_s, target_s).answered_within >= share)
}

/// Mean patience (seconds) from calls, as exponential patience's maximum
/// likelihood estimate: calls abandoned while waiting divided by the total
/// time all callers spent waiting for a person (answered and missed calls).
/// `None` below `min_abandoned` abandonments: too little to go on.
pub fn estimate_patience<'a>(calls: impl IntoIterator<Item = &'a CallRecord>, min_abandoned: u64) -> Option<f64> {
    let (mut abandoned, mut exposure) = (0u64, 0.0f64);
    for c in calls {
        if !matches!(c.outcome, Outcome::Answered | Outcome::Missed) {
            continue;
        }
        exposure += c.wait_s.unwrap_or(0.0).max(0.0);
        if c.outcome == Outcome::Missed && c.abandoned {
            abandoned += 1;
        }
    }
    (abandoned >= min_abandoned.max(1) && exposure > 0.0).then(|| exposure / abandoned as f64)
}

/// What the staffing table is asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct StaffingParams {
    /// Weeks of calls to learn from, ending with the last date.
    pub weeks: u32,
    /// Answered within this many seconds...
    pub target_s: f64,
    /// ...for this share of callers.
    pub target_share: f64,
    /// Seconds a person stays busy after each answered call.
    pub wrap_up_s: f64,
    /// A half-hour with fewer answered calls than this takes the practice's
    /// mean handling time over the window.
    pub min_answered: u64,
    /// Erlang A needs at least this many abandoned calls to estimate patience.
    pub min_abandoned: u64,
}

impl Default for StaffingParams {
    fn default() -> Self {
        StaffingParams {
            weeks: 4,
            target_s: 120.0,
            target_share: 0.8,
            wrap_up_s: 30.0,
            min_answered: 5,
            min_abandoned: 10,
        }
    }
}

/// Half-hours in a day.
pub const SLOTS: usize = 48;

pub const WEEKDAYS: [Weekday; 7] = [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

/// English name of a weekday.
pub fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// `HH:MM` of a half-hour slot.
pub fn slot_start(slot: usize) -> String {
    format!("{:02}:{:02}", slot / 2, (slot % 2) * 30)
}

/// One weekday and half-hour of one practice.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlotStaffing {
    pub practice: String,
    pub weekday: &'static str,
    /// Local start of the half-hour, `HH:MM`.
    pub start: String,
    /// Days of this weekday in the window (bank holidays left out).
    pub days: u32,
    /// Calls that wanted a person (all but those ending in the IVR) in this
    /// half-hour over those days.
    pub calls: u64,
    pub arrivals_per_hour: f64,
    /// Answered calls behind the handling time.
    pub answered: u64,
    /// Mean answered call length plus the wrap-up, seconds.
    pub mean_handle_s: Option<f64>,
    /// `half_hour` (this half-hour's calls), `practice` (too few answered
    /// here: the practice's mean over the window) or `none`.
    pub handle_from: &'static str,
    /// Arrivals times handling time: people busy on average.
    pub traffic_erlangs: f64,
    /// Erlang C: the fewest people on the phones meeting the target.
    pub staff_erlang_c: u32,
    /// Erlang C share answered within the target with that many, one fewer
    /// and one more (`None`: no calls).
    pub service_level_at_staff: Option<f64>,
    pub service_level_one_fewer: Option<f64>,
    pub service_level_one_more: Option<f64>,
    /// Erlang C mean wait with that many, seconds.
    pub mean_wait_s: Option<f64>,
    /// Erlang A (callers give up with the practice's patience): the fewest
    /// people meeting the target, the share answered within it and the
    /// share giving up with that many. `None` without enough abandoned
    /// calls to estimate patience.
    pub staff_erlang_a: Option<u32>,
    pub service_level_erlang_a: Option<f64>,
    pub abandon_share_erlang_a: Option<f64>,
}

/// A practice's staffing table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PracticeStaffing {
    pub practice: String,
    /// Mean handling time over the whole window, seconds.
    pub mean_handle_s: Option<f64>,
    /// Estimated mean patience of callers, seconds (Erlang A).
    pub patience_s: Option<f64>,
    pub abandoned_waiting: u64,
    /// Monday 00:00 first, Sunday 23:30 last.
    pub slots: Vec<SlotStaffing>,
}

/// Staffing for every practice, from the calls of `from..=to`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Staffing {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub weeks: u32,
    pub target_s: f64,
    pub target_share: f64,
    pub wrap_up_s: f64,
    pub practices: Vec<PracticeStaffing>,
}

impl Staffing {
    /// Every slot of every practice, in order (the JSON outputs).
    pub fn rows(&self) -> impl Iterator<Item = &SlotStaffing> {
        self.practices.iter().flat_map(|p| p.slots.iter())
    }

    /// A practice's table.
    pub fn practice(&self, ods: &str) -> Option<&PracticeStaffing> {
        self.practices.iter().find(|p| p.practice == ods)
    }
}

/// The dates learnt from: `weeks` whole weeks ending with `to`, but not
/// before the first date with data (an agent installed a week ago learns
/// from one week, not four weeks of which three are empty).
pub fn window(weeks: u32, to: NaiveDate, first_data: Option<NaiveDate>) -> (NaiveDate, NaiveDate) {
    let days = (weeks.max(1) as i64) * 7 - 1;
    let from = to - chrono::Duration::days(days);
    let from = first_data.map_or(from, |f| f.max(from));
    (from.min(to), to)
}

fn local(site: &Site, t: Timestamp) -> NaiveDateTime {
    t.to_datetime().map(|d| d.with_timezone(&site.timezone).naive_local()).unwrap_or_default()
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

struct Acc {
    calls: [[u64; SLOTS]; 7],
    durations: Vec<Vec<f64>>,
    all_durations: Vec<f64>,
    waiting: Vec<CallRecord>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            calls: [[0; SLOTS]; 7],
            durations: vec![Vec::new(); 7 * SLOTS],
            all_durations: Vec::new(),
            waiting: Vec::new(),
        }
    }
}

/// The staffing tables of `from..=to` (see [`window`]) from the calls, by
/// the site's local time; bank-holiday dates are left out.
pub fn staffing(calls: &[CallRecord], site: &Site, p: &StaffingParams, from: NaiveDate, to: NaiveDate) -> Staffing {
    let mut days = [0u32; 7];
    let mut d = from;
    while d <= to {
        if !site.bank_holidays.contains(&d) {
            days[d.weekday().num_days_from_monday() as usize] += 1;
        }
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for c in calls {
        let at = local(site, c.started);
        let date = at.date();
        if date < from || date > to || site.bank_holidays.contains(&date) || c.outcome == Outcome::EndedInIvr {
            continue;
        }
        let a = acc.entry(c.practice.clone()).or_insert_with(Acc::new);
        let (w, s) = (at.weekday().num_days_from_monday() as usize, (at.hour() * 2 + at.minute() / 30) as usize);
        a.calls[w][s] += 1;
        if c.outcome == Outcome::Answered {
            if let Some(dur) = c.duration_s {
                a.durations[w * SLOTS + s].push(dur.max(0.0));
                a.all_durations.push(dur.max(0.0));
            }
        }
        if matches!(c.outcome, Outcome::Answered | Outcome::Missed) {
            a.waiting.push(c.clone());
        }
    }
    let mut order: Vec<String> = site.practices.iter().map(|p| p.ods.clone()).collect();
    for k in acc.keys() {
        if !order.contains(k) {
            order.push(k.clone());
        }
    }
    // `Unassigned` last, like the reports
    order.sort_by_key(|p| p == UNASSIGNED);
    let empty = Acc::new();
    let practices = order
        .into_iter()
        .map(|ods| {
            let a = acc.get(&ods).unwrap_or(&empty);
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let practice_handle = mean(&a.all_durations).map(|m| m + p.wrap_up_s);
            let patience = estimate_patience(&a.waiting, p.min_abandoned);
            let abandoned_waiting = a.waiting.iter().filter(|c| c.outcome == Outcome::Missed && c.abandoned).count() as u64;
            let mut slots = Vec::with_capacity(7 * SLOTS);
            for (w, weekday) in WEEKDAYS.iter().enumerate() {
                for s in 0..SLOTS {
                    let calls = a.calls[w][s];
                    let n_days = days[w];
                    let per_hour = if n_days == 0 { 0.0 } else { calls as f64 / n_days as f64 * 2.0 };
                    let durs = &a.durations[w * SLOTS + s];
                    let (handle, from) = if durs.len() as u64 >= p.min_answered.max(1) {
                        (mean(durs).map(|m| m + p.wrap_up_s), "half_hour")
                    } else if practice_handle.is_some() {
                        (practice_handle, "practice")
                    } else {
                        (None, "none")
                    };
                    let traffic = handle.map_or(0.0, |h| per_hour / 3600.0 * h);
                    let (staff, sl, fewer, more, wait) = match handle {
                        Some(h) if traffic > 0.0 => {
                            let n = staff_needed(traffic, h, p.target_s, p.target_share);
                            (
                                n,
                                Some(service_level(n, traffic, h, p.target_s)),
                                Some(if n == 0 { 0.0 } else { service_level(n - 1, traffic, h, p.target_s) }),
                                Some(service_level(n + 1, traffic, h, p.target_s)),
                                mean_wait(n, traffic, h),
                            )
                        }
                        _ => (0, None, None, None, None),
                    };
                    let (sa, sla, aba) = match (handle, patience) {
                        (Some(h), Some(pat)) if per_hour > 0.0 => {
                            let lambda = per_hour / 3600.0;
                            match staff_needed_a(lambda, h, pat, p.target_s, p.target_share, staff.max(1) + 50) {
                                Some(n) => {
                                    let r = erlang_a(n, lambda, h, pat, p.target_s);
                                    (Some(n), Some(round(r.answered_within, 4)), Some(round(r.abandon, 4)))
                                }
                                None => (None, None, None),
                            }
                        }
                        _ => (None, None, None),
                    };
                    slots.push(SlotStaffing {
                        practice: ods.clone(),
                        weekday: weekday_name(*weekday),
                        start: slot_start(s),
                        days: n_days,
                        calls,
                        arrivals_per_hour: round(per_hour, 3),
                        answered: durs.len() as u64,
                        mean_handle_s: handle.map(|h| round(h, 1)),
                        handle_from: from,
                        traffic_erlangs: round(traffic, 3),
                        staff_erlang_c: staff,
                        service_level_at_staff: sl.map(|v| round(v, 4)),
                        service_level_one_fewer: fewer.map(|v| round(v, 4)),
                        service_level_one_more: more.map(|v| round(v, 4)),
                        mean_wait_s: wait.map(|v| round(v, 1)),
                        staff_erlang_a: sa,
                        service_level_erlang_a: sla,
                        abandon_share_erlang_a: aba,
                    });
                }
            }
            PracticeStaffing {
                practice: ods,
                mean_handle_s: practice_handle.map(|h| round(h, 1)),
                patience_s: patience.map(|v| round(v, 1)),
                abandoned_waiting,
                slots,
            }
        })
        .collect();
    Staffing {
        from,
        to,
        weeks: p.weeks,
        target_s: p.target_s,
        target_share: p.target_share,
        wrap_up_s: p.wrap_up_s,
        practices,
    }
}

#[cfg(test)]
mod tests;
