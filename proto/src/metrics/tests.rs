use super::*;
use crate::call::{Correlation, EndedBy};
use crate::number::Hasher;
use chrono::{NaiveTime, TimeZone, Utc};
use proptest::prelude::*;

fn site() -> Site {
    let h = Hasher::new([1; 32], "44");
    let mut s = Site::single("B82005", &["01632 960123"], &h);
    s.practices.push(crate::site::Practice {
        ods: "B82099".into(),
        name: None,
        number_hashes: vec![],
        codes: OrgCodes::default(),
    });
    s
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
    Timestamp(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().timestamp_micros())
}

fn call(practice: &str, started: Timestamp, outcome: Outcome, wait: Option<f64>, duration: Option<f64>, abandoned: bool) -> CallRecord {
    CallRecord {
        seq: 1,
        call_id: String::new(),
        practice: practice.into(),
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
        offered_to_staff: false,
        legs: 1,
        correlation: Correlation::default(),
        partial: false,
        caller: None,
    }
}

fn local(h: u32, m: u32, s: u32) -> NaiveDateTime {
    // Monday 4 November 2024
    NaiveDate::from_ymd_opt(2024, 11, 4).unwrap().and_time(NaiveTime::from_hms_opt(h, m, s).unwrap())
}

#[test]
fn bucket_edges_truncate_to_whole_seconds() {
    let b = Buckets::new(&crate::site::DEFAULT_EDGES).unwrap();
    assert_eq!(b.labels(), ["0", "1_30", "31_60", "61_120", "121_180", "181_240", "241_300", ">300"]);
    let label = |s: f64| b.labels()[b.index(s)].as_str();
    assert_eq!(label(0.0), "0");
    assert_eq!(label(0.999), "0");
    assert_eq!(label(1.0), "1_30");
    assert_eq!(label(30.999), "1_30");
    assert_eq!(label(31.0), "31_60");
    assert_eq!(label(59.999), "31_60");
    assert_eq!(label(60.0), "31_60");
    assert_eq!(label(60.999), "31_60");
    assert_eq!(label(61.0), "61_120");
    assert_eq!(label(300.0), "241_300");
    assert_eq!(label(300.5), "241_300");
    assert_eq!(label(301.0), ">300");
    assert_eq!(label(-1.0), "0");
    assert!(Buckets::new(&[30, 10]).is_err());
    assert_eq!(Buckets::new(&[10, 60]).unwrap().labels(), ["0_10", "11_60", ">60"]);
}

#[test]
fn time_bands_and_core_hours_at_their_edges() {
    let band = |h, m, s| TIME_CATEGORIES[time_category(local(h, m, s))];
    assert_eq!(band(0, 0, 0), "00:00-05:59");
    assert_eq!(band(5, 59, 59), "00:00-05:59");
    assert_eq!(band(6, 0, 0), "06:00-07:59");
    assert_eq!(band(17, 59, 59), "16:00-17:59");
    assert_eq!(band(18, 0, 0), "18:00-18:29");
    assert_eq!(band(18, 29, 59), "18:00-18:29");
    assert_eq!(band(18, 30, 0), "18:30-23:59");
    assert_eq!(band(23, 59, 59), "18:30-23:59");
    let hol = crate::site::default_bank_holidays();
    let core = |t: NaiveDateTime| CORE_CATEGORIES[core_category(t, &hol)];
    assert_eq!(core(local(7, 59, 59)), "Non-Core");
    assert_eq!(core(local(8, 0, 0)), "Core_8_10");
    assert_eq!(core(local(9, 59, 59)), "Core_8_10");
    assert_eq!(core(local(10, 0, 0)), "Core_10_1830");
    assert_eq!(core(local(18, 29, 59)), "Core_10_1830");
    assert_eq!(core(local(18, 30, 0)), "Non-Core");
    let saturday = local(9, 0, 0) + chrono::Duration::days(5);
    assert_eq!(core(saturday), "Non-Core");
    let christmas = NaiveDate::from_ymd_opt(2024, 12, 25).unwrap().and_hms_opt(9, 0, 0).unwrap();
    assert_eq!(core(christmas), "Non-Core");
    let boxing_day_2026_substitute = NaiveDate::from_ymd_opt(2026, 12, 28).unwrap().and_hms_opt(9, 0, 0).unwrap();
    assert_eq!(core(boxing_day_2026_substitute), "Non-Core");
}

/// (UTC instant, expected local date, expected band)
fn check_dst(cases: &[(Timestamp, &str, &str)]) {
    let mut agg = Aggregator::new(&site());
    for (t, _, _) in cases {
        agg.add_call(&call("B82005", *t, Outcome::Missed, Some(1.0), None, false));
    }
    for (t, date, band) in cases {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        assert_eq!(agg.local_date(*t), d, "{t}");
        let b = TIME_CATEGORIES.iter().position(|x| x == band).unwrap();
        assert!(agg.days()[&("B82005".to_string(), d)].band(Indicator::Cbt001, b) > 0, "{t} not in {band}");
    }
}

#[test]
fn spring_forward_sunday() {
    // 31 March 2024: 01:00 GMT becomes 02:00 BST; the first band holds 5 hours
    check_dst(&[
        (utc(2024, 3, 31, 0, 59, 59), "2024-03-31", "00:00-05:59"),
        (utc(2024, 3, 31, 1, 0, 0), "2024-03-31", "00:00-05:59"), // 02:00 BST
        (utc(2024, 3, 31, 4, 59, 59), "2024-03-31", "00:00-05:59"), // 05:59:59 BST
        (utc(2024, 3, 31, 5, 0, 0), "2024-03-31", "06:00-07:59"),
        (utc(2024, 3, 31, 17, 29, 59), "2024-03-31", "18:00-18:29"),
        (utc(2024, 3, 31, 17, 30, 0), "2024-03-31", "18:30-23:59"),
        (utc(2024, 3, 31, 22, 59, 59), "2024-03-31", "18:30-23:59"),
        (utc(2024, 3, 31, 23, 0, 0), "2024-04-01", "00:00-05:59"),
    ]);
}

#[test]
fn fall_back_sunday() {
    // 27 October 2024: 02:00 BST becomes 01:00 GMT; the first band holds 7 hours
    check_dst(&[
        (utc(2024, 10, 26, 22, 59, 59), "2024-10-26", "18:30-23:59"),
        (utc(2024, 10, 26, 23, 0, 0), "2024-10-27", "00:00-05:59"), // 00:00 BST
        (utc(2024, 10, 27, 0, 30, 0), "2024-10-27", "00:00-05:59"), // 01:30 BST
        (utc(2024, 10, 27, 1, 30, 0), "2024-10-27", "00:00-05:59"), // 01:30 GMT again
        (utc(2024, 10, 27, 5, 59, 59), "2024-10-27", "00:00-05:59"),
        (utc(2024, 10, 27, 6, 0, 0), "2024-10-27", "06:00-07:59"),
        (utc(2024, 10, 27, 18, 29, 59), "2024-10-27", "18:00-18:29"),
        (utc(2024, 10, 27, 23, 59, 59), "2024-10-27", "18:30-23:59"),
    ]);
}

#[test]
fn dpn_metrics_means_and_medians() {
    let mut agg = Aggregator::new(&site());
    let t = utc(2024, 11, 4, 9, 0, 0);
    for (w, d) in [(10.0, 60.0), (20.0, 120.0), (40.0, 30.0)] {
        agg.add_call(&call("B82005", t, Outcome::Answered, Some(w), Some(d), false));
    }
    agg.add_call(&call("B82005", t, Outcome::Missed, Some(5.0), None, true));
    agg.add_call(&call("B82005", t, Outcome::Missed, Some(15.0), None, true));
    agg.add_call(&call("B82005", t, Outcome::Missed, Some(0.2), None, false));
    agg.add_call(&call("B82005", t, Outcome::EndedInIvr, None, None, true));
    agg.add_call(&call("B82005", t, Outcome::CallbackRequested, None, None, false));
    agg.add_callback("B82005", t);
    let r = agg.report(None, None);
    let p = &r.practices[0];
    let d = &p.dpn;
    assert_eq!(d.call_volume, 8);
    assert_eq!((d.answered_calls, d.missed_calls, d.callbacks_requested, d.callbacks_made), (3, 3, 1, 1));
    assert_eq!((d.calls_abandoned, d.calls_abandoned_waiting, d.calls_abandoned_in_ivr), (3, 2, 1));
    assert_eq!((d.mean_wait_to_answer_s, d.median_wait_to_answer_s), (Some(23.333), Some(20.0)));
    assert_eq!((d.mean_wait_before_abandonment_s, d.median_wait_before_abandonment_s), (Some(10.0), Some(10.0)));
    assert_eq!((d.mean_call_length_s, d.median_call_length_s), (Some(70.0), Some(60.0)));
    assert_eq!(p.totals["CBT003"], p.totals["CBT007"]);
    assert_eq!(p.months.len(), 1);
    assert_eq!(p.months[0].month, "2024-11");
    // the second practice is reported, with zeros
    assert_eq!(r.practices[1].totals["CBT001"], 0);
}

#[test]
fn csv_headers_are_exact_and_zero_days_are_present() {
    let mut agg = Aggregator::new(&site());
    agg.add_call(&call("B82005", utc(2024, 11, 4, 9, 0, 0), Outcome::Answered, Some(12.0), Some(75.0), false));
    let from = NaiveDate::from_ymd_opt(2024, 11, 4).unwrap();
    let to = NaiveDate::from_ymd_opt(2024, 11, 5).unwrap();
    let files = export::files(&agg.figures(), from, to);
    let first = |i: usize| files[i].1.lines().next().unwrap().to_string();
    assert_eq!(files[0].0, "by_day_and_time.csv");
    assert_eq!(first(0), "Date,PRACTICE_CODE,Indicator,Time_Category,Value");
    assert_eq!(first(1), "Date,PRACTICE_CODE,Indicator,Duration,Value");
    assert_eq!(first(2), "Date,PRACTICE_CODE,Indicator,Wait_Time,Core_Category,Value");
    // 2 days x 2 practices x 6 indicators x 9 bands
    assert_eq!(files[0].1.lines().count(), 1 + 2 * 2 * 6 * 9);
    assert!(files[0].1.contains("2024-11-04,B82005,CBT003,08:00-09:59,1\r\n"));
    assert!(files[0].1.contains("2024-11-05,B82099,CBT001,08:00-09:59,0\r\n"));
    assert!(files[1].1.contains("2024-11-04,B82005,CBT007,61_120,1\r\n"));
    assert!(files[1].1.contains("2024-11-04,B82005,CBT007,TOTAL,1\r\n"));
    assert!(files[2].1.contains("2024-11-04,B82005,CBT003,1_30,Core_8_10,1\r\n"));
    assert!(files[2].1.contains("2024-11-04,B82005,CBT003,TOTAL,Core_8_10,1\r\n"));
    assert_eq!(export::field("a,\"b\""), "\"a,\"\"b\"\"\"");
}

#[test]
fn org_codes_add_their_columns() {
    let mut s = site();
    s.practices[0].codes = OrgCodes {
        region: Some("Y63".into()),
        icb: Some("QOQ".into()),
        sub_icb: Some("02Y".into()),
        pcn: Some("U12345".into()),
    };
    let agg = Aggregator::new(&s);
    let d = NaiveDate::from_ymd_opt(2024, 11, 4).unwrap();
    let files = export::files(&agg.figures(), d, d);
    let mut lines = files[0].1.lines();
    assert_eq!(
        lines.next().unwrap(),
        "Date,REGION_CODE,ICB_CODE,SUB_ICB_LOCATION_CODE,PCN_CODE,PRACTICE_CODE,Indicator,Time_Category,Value"
    );
    assert_eq!(lines.next().unwrap(), "2024-11-04,Y63,QOQ,02Y,U12345,B82005,CBT001,00:00-05:59,0");
    assert!(files[0].1.contains("2024-11-04,,,,,B82099,CBT001,00:00-05:59,0"));
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(Outcome::ALL.to_vec())
}

proptest! {
    /// CBT001 = CBT002 + CBT003 + CBT004 + CBT005 and CBT003 = CBT007 for
    /// every practice and day, whatever the mix of calls.
    #[test]
    fn reconciliation_holds_for_every_practice_day(
        calls in prop::collection::vec((0usize..3, 0i64..(40 * 86_400), outcome(), 0.0f64..900.0, 0.0f64..3600.0, any::<bool>()), 0..300)
    ) {
        let mut agg = Aggregator::new(&site());
        let base = utc(2024, 10, 20, 0, 0, 0); // spans the October clock change
        for (p, offset, o, w, d, ab) in calls {
            let practice = ["B82005", "B82099", UNASSIGNED][p];
            let (wait, dur) = match o {
                Outcome::Answered => (Some(w), Some(d)),
                Outcome::Missed => (Some(w), None),
                _ => (None, None),
            };
            agg.add_call(&call(practice, base.add(offset * 1_000_000), o, wait, dur, ab && o != Outcome::Answered));
        }
        for ((p, date), day) in agg.days() {
            prop_assert_eq!(day.total(Indicator::Cbt001), day.total(Indicator::Cbt002) + day.total(Indicator::Cbt003) + day.total(Indicator::Cbt004) + day.total(Indicator::Cbt005), "{} {}", p, date);
            prop_assert_eq!(day.total(Indicator::Cbt003), day.total(Indicator::Cbt007));
            let by_wait: u64 = day.answered_by_wait.iter().flatten().sum();
            prop_assert_eq!(by_wait, day.total(Indicator::Cbt003));
            prop_assert!(day.reconciles().is_ok());
            for b in 0..9 {
                prop_assert_eq!(day.band(Indicator::Cbt001, b), day.band(Indicator::Cbt002, b) + day.band(Indicator::Cbt003, b) + day.band(Indicator::Cbt004, b) + day.band(Indicator::Cbt005, b));
            }
        }
    }
}

/// The CSV writer as it was first written (one `Vec<String>` and a join per
/// row): `export::files` must write exactly its bytes, only faster.
fn files_reference(fig: &export::Figures<'_>, from: NaiveDate, to: NaiveDate) -> Vec<String> {
    use export::*;
    let line = |fields: &[String]| {
        let mut l = fields.iter().map(|f| field(f)).collect::<Vec<_>>().join(",");
        l.push_str("\r\n");
        l
    };
    let with_codes = fig.practices.iter().any(|(_, c)| *c != OrgCodes::default());
    let head = |rest: &[&str]| {
        let mut h = vec![DATE.to_string()];
        if with_codes {
            h.extend(ORG_CODES.iter().map(|s| s.to_string()));
        }
        h.push(PRACTICE.to_string());
        h.extend(rest.iter().map(|s| s.to_string()));
        line(&h)
    };
    let lead = |date: NaiveDate, ods: &str, codes: &OrgCodes| {
        let mut f = vec![date.format("%Y-%m-%d").to_string()];
        if with_codes {
            for c in [&codes.region, &codes.icb, &codes.sub_icb, &codes.pcn] {
                f.push(c.clone().unwrap_or_default());
            }
        }
        f.push(ods.to_string());
        f
    };
    let mut by_time = head(&[INDICATOR, TIME_CATEGORY, VALUE]);
    let mut by_duration = head(&[INDICATOR, DURATION, VALUE]);
    let mut answered = head(&[INDICATOR, WAIT_TIME, CORE_CATEGORY, VALUE]);
    let empty = Day::new(fig.wait, fig.duration);
    let mut date = from;
    while date <= to {
        for (ods, codes) in &fig.practices {
            let day = fig.days.get(&(ods.clone(), date)).unwrap_or(&empty);
            for ind in Indicator::BY_TIME {
                for (b, cat) in TIME_CATEGORIES.iter().enumerate() {
                    let mut f = lead(date, ods, codes);
                    f.extend([ind.code().to_string(), cat.to_string(), day.band(ind, b).to_string()]);
                    by_time.push_str(&line(&f));
                }
            }
            for (label, n) in fig.duration.labels().iter().zip(&day.answered_by_duration) {
                let mut f = lead(date, ods, codes);
                f.extend([Indicator::Cbt007.code().to_string(), label.clone(), n.to_string()]);
                by_duration.push_str(&line(&f));
            }
            let mut f = lead(date, ods, codes);
            f.extend([Indicator::Cbt007.code().to_string(), TOTAL.to_string(), day.total(Indicator::Cbt007).to_string()]);
            by_duration.push_str(&line(&f));
            for (c, core) in CORE_CATEGORIES.iter().enumerate() {
                for (label, counts) in fig.wait.labels().iter().zip(&day.answered_by_wait) {
                    let mut f = lead(date, ods, codes);
                    f.extend([Indicator::Cbt003.code().to_string(), label.clone(), core.to_string(), counts[c].to_string()]);
                    answered.push_str(&line(&f));
                }
                let total: u64 = day.answered_by_wait.iter().map(|x| x[c]).sum();
                let mut f = lead(date, ods, codes);
                f.extend([Indicator::Cbt003.code().to_string(), TOTAL.to_string(), core.to_string(), total.to_string()]);
                answered.push_str(&line(&f));
            }
        }
        date = date.succ_opt().unwrap();
    }
    vec![by_time, by_duration, answered]
}

proptest! {
    #[test]
    fn the_csv_writer_writes_the_reference_bytes(
        counts in proptest::collection::vec((0usize..3, 0u32..86_400, 0u8..4, 0u32..400, 0u32..700), 0..60),
        codes in proptest::option::of(("[A-Z0-9,\" ]{0,5}", "[A-Z0-9]{0,4}")),
        edges in proptest::sample::select(vec![vec![0u32, 30, 60, 120, 180, 240, 300], vec![10u32], vec![0u32, 20, 45]]),
    ) {
        let mut s = site();
        if let Some((region, icb)) = codes {
            s.practices[1].codes = OrgCodes { region: Some(region), icb: Some(icb), sub_icb: None, pcn: Some("U1".into()) };
        }
        s.wait_edges = edges.clone();
        s.duration_edges = edges;
        let mut agg = Aggregator::new(&s);
        for (p, secs, o, wait, dur) in counts {
            let practice = ["B82005", "B82099", UNASSIGNED][p];
            let outcome = [Outcome::Answered, Outcome::Missed, Outcome::EndedInIvr, Outcome::CallbackRequested][o as usize];
            let answered = outcome == Outcome::Answered;
            let at = utc(2024, 11, 3, 0, 0, 0).add(secs as i64 * 1_000_000 * 2);
            agg.add_call(&call(practice, at, outcome, answered.then_some(wait as f64 / 2.0), answered.then_some(dur as f64), false));
        }
        let from = NaiveDate::from_ymd_opt(2024, 11, 2).unwrap();
        let to = NaiveDate::from_ymd_opt(2024, 11, 5).unwrap();
        let fig = agg.figures();
        let got: Vec<String> = export::files(&fig, from, to).into_iter().map(|f| f.1).collect();
        prop_assert_eq!(got, files_reference(&fig, from, to));
    }
}
