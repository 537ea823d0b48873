use super::*;
use crate::call::{Correlation, EndedBy};
use crate::number::Hasher;
use chrono::{TimeZone, Utc};
use proptest::prelude::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Erlang B by its textbook formula, A^N/N! / Σ A^k/k!, in log space (an
/// independent evaluation to hold the recursion against).
fn erlang_b_direct(n: u32, a: f64) -> f64 {
    let logs: Vec<f64> = (0..=n).map(|k| k as f64 * a.ln() - (1..=k).map(|i| (i as f64).ln()).sum::<f64>()).collect();
    let max = logs.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    (logs[n as usize] - max).exp() / z
}

/// Erlang C by its textbook formula with factorials (as the published
/// worked examples compute it): fine in f64 for small N.
fn erlang_c_factorials(n: u32, a: f64) -> f64 {
    let fact = |k: u32| (1..=k).map(|i| i as f64).product::<f64>();
    let top = a.powi(n as i32) / fact(n) * (n as f64 / (n as f64 - a));
    let sum: f64 = (0..n).map(|k| a.powi(k as i32) / fact(k)).sum();
    top / (sum + top)
}

#[test]
fn erlang_b_matches_published_tables() {
    // Erlang B tables (e.g. the traffic tables in ITU-T's "Teletraffic
    // Engineering Handbook" and every telephony handbook): the traffic
    // that N lines carry at 1% blocking.
    for (n, a) in [(5, 1.36), (10, 4.46), (20, 12.03), (50, 37.90), (100, 84.06)] {
        let b = erlang_b(n, a);
        assert!(close(b, 0.01, 0.0001), "B({n}, {a}) = {b}, the tables say 1%");
        assert!(close(b, erlang_b_direct(n, a), 1e-12));
    }
    assert_eq!(erlang_b(0, 3.0), 1.0);
    assert_eq!(erlang_b(4, 0.0), 0.0);
}

#[test]
fn erlang_c_call_centre_helper_worked_example() {
    // Call Centre Helper, "Erlang C Formula – Made Simple With an Easy
    // Worked Example" (callcentrehelper.com): 100 calls in 30 minutes, an
    // average handling time of 180 s, target 80% answered within 20 s.
    // Traffic 10 erlangs; with the first guess of 11 agents the probability
    // a call waits is 68.21% and the service level far short; agents are
    // added until the target is met, at 14.
    let a = 200.0 * 180.0 / 3600.0;
    assert_eq!(a, 10.0);
    let pw = erlang_c(11, a);
    assert!(close(pw, 0.6821, 0.00005), "P(wait) with 11 agents {pw}");
    assert!(close(pw, erlang_c_factorials(11, a), 1e-12));
    assert!(close(service_level(11, a, 180.0, 20.0), 0.3896, 0.0001));
    assert!(service_level(13, a, 180.0, 20.0) < 0.8);
    assert!(close(service_level(14, a, 180.0, 20.0), 0.8884, 0.0001));
    assert_eq!(staff_needed(a, 180.0, 20.0, 0.8), 14);
}

#[test]
fn erlang_c_erlang_uplift_worked_example() {
    // Jones, "Erlang uplift" (jonesthenet.com, budgeting / service levels):
    // 250 calls in the average hour, AHT 330 s, 80% answered within 30 s:
    // "Erlang ... thinks we need 28 advisors" (where the accountant's
    // 250 x 330 / 3600 gives 22.9).
    let a = 250.0 * 330.0 / 3600.0;
    assert!(close(a, 22.9, 0.05));
    assert_eq!(staff_needed(a, 330.0, 30.0, 0.8), 28);
    assert!(service_level(27, a, 330.0, 30.0) < 0.8);
}

#[test]
fn erlang_c_westbay_worked_example() {
    // "The Erlang-C formula" (Mitan / Westbay Engineers,
    // mitan.co.uk/erlang/elgcmath.htm), worked step by step: 360 calls per
    // half hour, 4 minutes each, 55 agents, service level target 15 s.
    // Traffic intensity 0.2 calls/s x 240 s = 48 erlangs, occupancy
    // 48/55 = 87.3%. Its factorial formulas, evaluated directly, agree with
    // the recursion here to 1e-12; the results are P(wait) 23.9%, average
    // speed of answer 8.2 s and 84.6% answered within 15 s.
    let a = 360.0 / 1800.0 * 240.0;
    assert!(close(a, 48.0, 1e-9));
    assert!(close(a / 55.0, 0.873, 0.0005));
    let pw = erlang_c(55, a);
    assert!(close(pw, erlang_c_factorials(55, a), 1e-12));
    assert!(close(pw, 0.2387, 0.0001), "{pw}");
    assert!(close(mean_wait(55, a, 240.0).unwrap(), 8.18, 0.01));
    assert!(close(service_level(55, a, 240.0, 15.0), 0.8459, 0.0001));
}

#[test]
fn no_overflow_with_hundreds_of_agents() {
    for (n, a) in [(150u32, 140.0), (500, 480.0), (1000, 950.0), (5000, 4900.0)] {
        let b = erlang_b(n, a);
        let c = erlang_c(n, a);
        assert!(b.is_finite() && b > 0.0 && b < 1.0, "B({n},{a}) = {b}");
        assert!(c.is_finite() && c > 0.0 && c < 1.0, "C({n},{a}) = {c}");
        assert!(close(b, erlang_b_direct(n, a), 1e-9), "{b} vs {}", erlang_b_direct(n, a));
        let staff = staff_needed(a, 200.0, 120.0, 0.8);
        assert!(staff as f64 > a && (staff as f64) < a * 1.2 + 10.0, "{staff} for {a}");
    }
}

#[test]
fn edges() {
    assert_eq!(staff_needed(0.0, 200.0, 120.0, 0.8), 0);
    assert_eq!(service_level(0, 0.0, 200.0, 120.0), 1.0);
    assert_eq!(service_level(3, 3.0, 200.0, 120.0), 0.0, "as many people as erlangs cannot keep up");
    assert_eq!(erlang_c(3, 5.0), 1.0);
    assert!(mean_wait(3, 5.0, 200.0).is_none());
    // a trickle of calls: one person
    assert_eq!(staff_needed(0.05, 200.0, 120.0, 0.8), 1);
}

proptest! {
    #[test]
    fn more_staff_never_lowers_the_service_level(n in 0u32..300, a in 0.0f64..250.0, h in 10.0f64..1200.0, t in 0.0f64..600.0) {
        let now = service_level(n, a, h, t);
        let more = service_level(n + 1, a, h, t);
        prop_assert!(more >= now - 1e-12, "SL({n}) = {now} > SL({}) = {more} (A {a}, h {h}, t {t})", n + 1);
        prop_assert!((0.0..=1.0).contains(&now));
        let c_now = erlang_c(n, a);
        let c_more = erlang_c(n + 1, a);
        prop_assert!(c_more <= c_now + 1e-12);
    }

    #[test]
    fn staff_needed_is_the_least_that_meets_the_target(a in 0.01f64..120.0, h in 30.0f64..900.0, t in 0.0f64..300.0, share in 0.5f64..0.95) {
        let n = staff_needed(a, h, t, share);
        prop_assert!(service_level(n, a, h, t) >= share);
        prop_assert!(n == 0 || service_level(n - 1, a, h, t) < share);
    }

    #[test]
    fn erlang_a_more_staff_never_lowers_its_service_level(n in 1u32..12, per_hour in 1.0f64..150.0, h in 60.0f64..400.0, patience in 20.0f64..600.0, t in 0.0f64..240.0) {
        let lambda = per_hour / 3600.0;
        let now = erlang_a(n, lambda, h, patience, t);
        let more = erlang_a(n + 1, lambda, h, patience, t);
        prop_assert!(more.answered_within >= now.answered_within - 1e-9, "{now:?} then {more:?}");
        prop_assert!(more.abandon <= now.abandon + 1e-9);
    }
}

#[test]
fn erlang_a_tends_to_erlang_c_as_patience_grows() {
    // Erlang A with callers who (nearly) never give up is Erlang C
    for (n, per_hour, h, t) in [(14u32, 200.0, 180.0, 20.0), (3, 40.0, 180.0, 120.0), (55, 720.0, 240.0, 15.0)] {
        let lambda = per_hour / 3600.0;
        let a = lambda * h;
        let r = erlang_a(n, lambda, h, 1e8, t);
        assert!(close(r.answered_within, service_level(n, a, h, t), 2e-4), "n {n}: {r:?} vs C {}", service_level(n, a, h, t));
        assert!(close(r.wait_prob, erlang_c(n, a), 2e-4), "{r:?} vs {}", erlang_c(n, a));
        assert!(r.abandon < 1e-4);
    }
}

/// A small deterministic generator (xorshift64*), for the simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -self.next().ln() * mean
    }
}

/// M/M/n+M by simulation: (answered within t, abandoned) shares.
fn simulate(n: usize, per_hour: f64, h: f64, patience: f64, t: f64, callers: usize, seed: u64) -> (f64, f64) {
    let mut rng = Rng(seed);
    let mut free_at = vec![0.0f64; n];
    let mut queue: std::collections::VecDeque<(f64, f64)> = std::collections::VecDeque::new(); // (arrival, gives up at)
    let (mut within, mut abandoned, mut counted) = (0usize, 0usize, 0usize);
    let warm = callers / 20;
    let mut clock = 0.0;
    let mut seen = 0usize;
    let record = |idx: usize, waited: Option<f64>, within: &mut usize, abandoned: &mut usize, counted: &mut usize| {
        if idx < warm {
            return;
        }
        *counted += 1;
        match waited {
            Some(w) if w <= t => *within += 1,
            Some(_) => {}
            None => *abandoned += 1,
        }
    };
    let mut indices: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    for i in 0..=callers {
        let arrival = if i < callers { clock + rng.exp(3600.0 / per_hour) } else { f64::INFINITY };
        // servers freeing before this arrival take the queue
        loop {
            if queue.is_empty() {
                break;
            }
            let (k, f) = free_at.iter().cloned().enumerate().fold((0, f64::INFINITY), |m, (k, f)| if f < m.1 { (k, f) } else { m });
            if f > arrival {
                break;
            }
            let (arr, gives_up) = queue.pop_front().expect("non-empty");
            let idx = indices.pop_front().expect("index");
            if gives_up <= f {
                record(idx, None, &mut within, &mut abandoned, &mut counted);
                continue;
            }
            record(idx, Some(f - arr), &mut within, &mut abandoned, &mut counted);
            free_at[k] = f + rng.exp(h);
        }
        if i == callers {
            break;
        }
        clock = arrival;
        seen += 1;
        let (k, f) = free_at.iter().cloned().enumerate().fold((0, f64::INFINITY), |m, (k, f)| if f < m.1 { (k, f) } else { m });
        if f <= arrival && queue.is_empty() {
            record(i, Some(0.0), &mut within, &mut abandoned, &mut counted);
            free_at[k] = arrival + rng.exp(h);
        } else {
            queue.push_back((arrival, arrival + rng.exp(patience)));
            indices.push_back(i);
        }
    }
    assert_eq!(seen, callers);
    (within as f64 / counted as f64, abandoned as f64 / counted as f64)
}

#[test]
fn erlang_a_agrees_with_simulation() {
    // a busy hour: 240 calls of 180 s (12 erlangs), callers patient for 90 s
    // on average, target 60 s; and a GP-sized queue: 60 calls an hour of
    // 150 s, patience 120 s, target 120 s
    for (n, per_hour, h, patience, t) in [(12usize, 240.0, 180.0, 90.0, 60.0), (14, 240.0, 180.0, 90.0, 60.0), (2, 60.0, 150.0, 120.0, 120.0), (3, 60.0, 150.0, 120.0, 120.0)] {
        let model = erlang_a(n as u32, per_hour / 3600.0, h, patience, t);
        let (within, abandon) = simulate(n, per_hour, h, patience, t, 400_000, 0x9E37_79B9_7F4A_7C15 ^ n as u64);
        assert!(close(model.answered_within, within, 0.01), "n {n}: model {model:?}, simulation within {within}");
        assert!(close(model.abandon, abandon, 0.01), "n {n}: model {model:?}, simulation abandoned {abandon}");
    }
}

fn call(started: Timestamp, outcome: Outcome, wait: Option<f64>, duration: Option<f64>, abandoned: bool) -> CallRecord {
    CallRecord {
        seq: 1,
        call_id: String::new(),
        practice: "B82005".into(),
        started,
        queue_joined: None,
        first_ring: None,
        answered: None,
        ended: started,
        ended_by: EndedBy::Caller,
        outcome,
        wait_s: wait,
        duration_s: duration,
        abandoned,
        voicemail: None,
        callback_requested: None,
        callback_made: None,
        offered_to_staff: true,
        legs: 1,
        correlation: Correlation::default(),
        partial: false,
        caller: None,
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
    Timestamp(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().timestamp_micros())
}

#[test]
fn table_from_calls() {
    let h = Hasher::new([1; 32], "44");
    let site = Site::single("B82005", &["01632 960123"], &h);
    // four Mondays in June 2026 (no bank holiday; BST, so 07:00Z is 08:00
    // local): 20 calls each between 08:00 and 08:30, 16 answered after
    // 30 s for 150 s, 2 missed (abandoned after 200 s), 1 callback, 1 in
    // the IVR (not counted: it never wanted a person)
    let mut calls = Vec::new();
    for monday in [1, 8, 15, 22] {
        for i in 0..20 {
            let t = utc(2026, 6, monday, 7, i, 0);
            calls.push(match i {
                0..=15 => call(t, Outcome::Answered, Some(30.0), Some(150.0), false),
                16 | 17 => call(t, Outcome::Missed, Some(200.0), None, true),
                18 => call(t, Outcome::CallbackRequested, None, None, false),
                _ => call(t, Outcome::EndedInIvr, None, None, true),
            });
        }
    }
    let to = NaiveDate::from_ymd_opt(2026, 6, 28).unwrap();
    let (from, to) = window(4, to, NaiveDate::from_ymd_opt(2026, 1, 1));
    assert_eq!(from, NaiveDate::from_ymd_opt(2026, 6, 1).unwrap());
    let p = StaffingParams {
        min_abandoned: 5,
        ..StaffingParams::default()
    };
    let st = staffing(&calls, &site, &p, from, to);
    assert_eq!(st.rows().count(), 7 * 48);
    let row = st.rows().find(|r| r.weekday == "Monday" && r.start == "08:00").unwrap();
    assert_eq!((row.days, row.calls, row.answered), (4, 76, 64));
    assert_eq!(row.arrivals_per_hour, 38.0);
    assert_eq!(row.mean_handle_s, Some(180.0));
    assert_eq!(row.handle_from, "half_hour");
    assert!(close(row.traffic_erlangs, 1.9, 1e-9));
    assert_eq!(row.staff_erlang_c, staff_needed(1.9, 180.0, 120.0, 0.8));
    assert_eq!(row.service_level_at_staff, Some(round(service_level(row.staff_erlang_c, 1.9, 180.0, 120.0), 4)));
    assert!(row.service_level_one_fewer.unwrap() < 0.8 && row.service_level_one_more.unwrap() >= row.service_level_at_staff.unwrap());
    // 8 abandoned, each having waited 200 s; 64 answered after 30 s
    let pr = st.practice("B82005").unwrap();
    assert_eq!(pr.abandoned_waiting, 8);
    assert_eq!(pr.patience_s, Some(round((8.0 * 200.0 + 64.0 * 30.0) / 8.0, 1)));
    assert!(row.staff_erlang_a.is_some());
    assert!(staffing(&calls, &site, &StaffingParams::default(), from, to).practice("B82005").unwrap().patience_s.is_none(), "fewer than 10 abandoned: no estimate");
    let quiet = st.rows().find(|r| r.weekday == "Tuesday" && r.start == "08:00").unwrap();
    assert_eq!((quiet.calls, quiet.staff_erlang_c, quiet.service_level_at_staff), (0, 0, None));
    // a bank holiday Monday is left out: its calls and the day
    let mut site2 = site.clone();
    site2.bank_holidays.insert(NaiveDate::from_ymd_opt(2026, 6, 8).unwrap());
    let st2 = staffing(&calls, &site2, &p, from, to);
    let row2 = st2.rows().find(|r| r.weekday == "Monday" && r.start == "08:00").unwrap();
    assert_eq!((row2.days, row2.calls), (3, 57));
    assert_eq!(row2.arrivals_per_hour, 38.0);
    // a window that starts where the data starts
    assert_eq!(window(4, to, NaiveDate::from_ymd_opt(2026, 6, 20)).0, NaiveDate::from_ymd_opt(2026, 6, 20).unwrap());
}
