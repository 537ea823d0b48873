use super::*;
use crate::call::{CallRecord, Correlation, EndedBy, Outcome};
use crate::metrics::Aggregator;
use crate::number::Hasher;
use crate::site::Site;
use crate::time::Timestamp;

fn call(seq: u64, at_s: i64, outcome: Outcome, wait: Option<f64>, duration: Option<f64>) -> CallRecord {
    let started = Timestamp::from_secs_micros(1_793_610_000 + at_s, 0); // 2026-11-02 09:00 UTC
    CallRecord {
        seq,
        call_id: String::new(),
        practice: "B82005".into(),
        started,
        queue_joined: Some(started),
        first_ring: None,
        answered: None,
        ended: started.add(60_000_000),
        ended_by: EndedBy::Caller,
        outcome,
        wait_s: wait,
        duration_s: duration,
        abandoned: outcome == Outcome::Missed,
        voicemail: None,
        callback_requested: None,
        callback_made: None,
        offered_to_staff: true,
        legs: 1,
        correlation: Correlation::default(),
        partial: seq == 3,
        caller: None,
    }
}

fn doc() -> (DayDocument, Day) {
    let site = Site::single("B82005", &["441632960123"], &Hasher::new([1; 32], "44"));
    let mut agg = Aggregator::new(&site);
    agg.add_call(&call(1, 0, Outcome::Answered, Some(12.5), Some(95.25)));
    agg.add_call(&call(2, 3600, Outcome::Answered, Some(150.0), Some(30.0)));
    agg.add_call(&call(3, 7200, Outcome::Missed, Some(40.0), None));
    agg.add_call(&call(4, 30_000, Outcome::EndedInIvr, None, None));
    agg.add_callback("B82005", Timestamp::from_secs_micros(1_793_610_000 + 9000, 0));
    let date = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let day = agg.days()[&("B82005".to_string(), date)].clone();
    let mut d = DayDocument::new(
        AgentInfo { id: "pbx-01".into(), version: "0.2.0".into() },
        "B82005",
        &OrgCodes::default(),
        date,
        "Europe/London",
        agg.wait_buckets(),
        agg.duration_buckets(),
        &day,
        Quality { sip_messages: 100, ..Quality::default() },
    );
    d.revision = 1;
    d.generated_at = "2026-11-02T12:00:00Z".into();
    (d, day)
}

#[test]
fn a_day_goes_there_and_back_exactly() {
    let (d, day) = doc();
    let bytes = serde_json::to_vec(&d).unwrap();
    let back = DayDocument::parse(&bytes).unwrap();
    assert_eq!(back, d);
    assert_eq!(back.to_day(), day);
    assert!(back.reconciles().is_ok());
    assert_eq!(back.quality.partial_calls, 1);
    assert_eq!(back.by_time["CBT006"].values().sum::<u64>(), 1);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"final\":false"), "{text}");
    for leak in ["441632960123", "01632", "call_id", "caller"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[test]
fn content_key_ignores_revision_and_time_only() {
    let (a, _) = doc();
    let mut b = a.clone();
    b.revision = 9;
    b.is_final = true;
    b.generated_at = "2026-11-03T00:00:10Z".into();
    assert_eq!(a.content_key(), b.content_key());
    b.dpn.durations_s.push(1.0);
    assert_ne!(a.content_key(), b.content_key());
}

fn refused(edit: impl Fn(&mut serde_json::Value)) -> DocError {
    let (d, _) = doc();
    let mut v = serde_json::to_value(&d).unwrap();
    edit(&mut v);
    DayDocument::parse(&serde_json::to_vec(&v).unwrap()).expect_err("must be refused")
}

#[test]
fn bad_documents_are_refused_with_a_reason() {
    let (d, _) = doc();
    let bytes = serde_json::to_vec(&d).unwrap();
    assert!(matches!(DayDocument::parse(&bytes[..bytes.len() - 5]), Err(DocError::Syntax(_))));
    assert!(matches!(refused(|v| v["schema"] = "other".into()), DocError::Schema(_)));
    assert_eq!(refused(|v| v["version"] = 2.into()), DocError::Version { found: 2, supported: 1 });
    let e = refused(|v| v["by_time"]["CBT004"]["10:00-11:59"] = (-1).into());
    assert!(matches!(e, DocError::Syntax(_)), "{e}");
    let e = refused(|v| {
        v["by_time"]["CBT001"].as_object_mut().unwrap().remove("08:00-09:59");
    });
    assert!(e.to_string().contains("by_time.CBT001"), "{e}");
    let e = refused(|v| v["cbt007_by_duration"]["999"] = 1.into());
    assert!(e.to_string().contains("cbt007_by_duration"), "{e}");
    assert!(refused(|v| v["practice"] = "b82005".into()).to_string().contains("ODS"));
    assert!(refused(|v| v["revision"] = 0.into()).to_string().contains("revision"));
    assert!(refused(|v| v["timezone"] = "Mars/Olympus".into()).to_string().contains("timezone"));
    assert!(matches!(refused(|v| v["caller"] = "07700900123".into()), DocError::Syntax(_)), "unknown members are refused");
    assert!(refused(|v| v["dpn"]["durations_s"] = serde_json::json!([1.0, -2.0])).to_string().contains("durations_s"));
    assert!(refused(|v| v["quality"]["hours_without_capture"] = serde_json::json!([24])).to_string().contains("0 to 23"));
}

#[test]
fn unassigned_is_a_practice_of_its_own() {
    let (mut d, _) = doc();
    d.practice = UNASSIGNED.into();
    assert!(DayDocument::parse(&serde_json::to_vec(&d).unwrap()).is_ok());
}

#[test]
fn counts_that_do_not_add_up_are_reported() {
    let (mut d, _) = doc();
    *d.by_time.get_mut("CBT001").unwrap().get_mut("10:00-11:59").unwrap() += 1;
    let parsed = DayDocument::parse(&serde_json::to_vec(&d).unwrap()).expect("accepted: reported, not refused");
    let e = parsed.reconciles().unwrap_err();
    assert!(e.contains("10:00-11:59") && e.contains("CBT001"), "{e}");
}
