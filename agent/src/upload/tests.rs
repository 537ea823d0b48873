use super::deliver::{classify, Outcome};
use super::*;
use cbt_proto::call::{CallRecord, Correlation, EndedBy, Outcome as CallOutcome};
use cbt_proto::metrics::Indicator;
use cbt_proto::number::Hasher;
use cbt_proto::upload::DayDocument;

const MIN: i64 = 60_000_000;

fn site() -> Site {
    let mut s = Site::single("B82005", &["01632 960123"], &Hasher::new([1; 32], "44"));
    s.settle = 10 * SECOND;
    s
}

/// Mon 2 Nov 2026 00:00 UTC (= London) plus `s` seconds.
fn t(s: i64) -> Timestamp {
    Timestamp::from_secs_micros(1_793_577_600 + s, 0)
}

fn date(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

fn rec(seq: u64, started: Timestamp, outcome: CallOutcome) -> CallRecord {
    CallRecord {
        seq,
        call_id: format!("c{seq}"),
        practice: "B82005".into(),
        started,
        queue_joined: Some(started),
        first_ring: None,
        answered: (outcome == CallOutcome::Answered).then(|| started.add(5 * SECOND)),
        ended: started.add(65 * SECOND),
        ended_by: EndedBy::Caller,
        outcome,
        wait_s: Some(5.0),
        duration_s: (outcome == CallOutcome::Answered).then_some(60.0),
        abandoned: outcome == CallOutcome::Missed,
        voicemail: None,
        callback_requested: None,
        callback_made: None,
        offered_to_staff: true,
        legs: 1,
        correlation: Correlation::default(),
        partial: false,
        caller: Some("0123456789abcdef".into()),
    }
}

fn cfg() -> UploadConfig {
    UploadConfig {
        url: "https://collector.example.net".into(),
        token_file: "/nonexistent".into(),
        ca_file: None,
        client_cert: None,
        client_key: None,
        proxy: None,
        interval: 15 * MIN,
        max_backoff: 30 * MIN,
        timeout: 30 * SECOND,
        agent_id: "pbx-01".into(),
    }
}

fn docs(store: &Store) -> Vec<(OutboxItemV1Doc, DayDocument)> {
    store
        .outbox_items()
        .unwrap()
        .into_iter()
        .map(|i| {
            let d = DayDocument::parse(i.body.as_bytes()).expect("what the agent sends parses");
            (OutboxItemV1Doc { revision: i.revision, is_final: i.is_final, date: i.date }, d)
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct OutboxItemV1Doc {
    revision: u64,
    is_final: bool,
    date: NaiveDate,
}

#[test]
fn today_is_sent_every_interval_but_only_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    store.put_call(&rec(1, t(9 * 3600), CallOutcome::Answered)).unwrap();
    let mut sch = Scheduler::new(&cfg());
    let now = t(10 * 3600);
    assert_eq!(sch.run(&store, &s, now).unwrap().documents, 1);
    let d = docs(&store);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, OutboxItemV1Doc { revision: 1, is_final: false, date: date(2) });
    assert_eq!(d[0].1.by_time["CBT001"]["08:00-09:59"], 1);
    assert_eq!(d[0].1.agent.id, "pbx-01");
    // within the interval: nothing; after it, unchanged: nothing
    assert_eq!(sch.run(&store, &s, now.add(MIN)).unwrap().documents, 0);
    assert_eq!(sch.run(&store, &s, now.add(16 * MIN)).unwrap().documents, 0);
    // a new call: the next interval sends revision 2, replacing 1 in the outbox
    store.put_call(&rec(2, t(10 * 3600 + 1200), CallOutcome::Missed)).unwrap();
    assert_eq!(sch.run(&store, &s, now.add(20 * MIN)).unwrap().documents, 0, "not before the interval");
    assert_eq!(sch.run(&store, &s, now.add(32 * MIN)).unwrap().documents, 1);
    let d = docs(&store);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0.revision, 2);
    assert_eq!(d[0].1.to_day().total(Indicator::Cbt001), 2);
}

#[test]
fn a_day_is_final_after_midnight_and_settle_and_a_late_call_raises_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    store.put_call(&rec(1, t(9 * 3600), CallOutcome::Answered)).unwrap();
    let mut sch = Scheduler::new(&cfg());
    sch.run(&store, &s, t(23 * 3600)).unwrap();
    // 5 s after midnight: not settled yet
    sch.run(&store, &s, t(24 * 3600 + 5)).unwrap();
    assert_eq!(store.closed_through().unwrap(), None);
    // settled: 2 Nov closes, its final document replaces the live one
    let o = sch.run(&store, &s, t(24 * 3600 + 11)).unwrap();
    assert_eq!(o.closed_days, 1);
    let d = docs(&store);
    let nov2: Vec<_> = d.iter().filter(|(i, _)| i.date == date(2)).collect();
    assert_eq!(nov2.len(), 1);
    assert_eq!((nov2[0].0.revision, nov2[0].0.is_final), (2, true));
    let first_final = nov2[0].1.clone();
    // the collector takes it
    store.delivered("B82005", date(2), 2, t(24 * 3600 + 20)).unwrap();
    assert!(docs(&store).iter().all(|(i, _)| i.date != date(2)));
    // a call that started at 23:59 and ended after midnight is stored late
    store.put_call(&rec(3, t(24 * 3600 - 60), CallOutcome::Missed)).unwrap();
    store.mark_dirty(date(2)).unwrap();
    sch.run(&store, &s, t(24 * 3600 + 120)).unwrap();
    let d = docs(&store);
    let nov2: Vec<_> = d.iter().filter(|(i, _)| i.date == date(2)).collect();
    assert_eq!((nov2[0].0.revision, nov2[0].0.is_final), (3, true));
    assert_eq!(nov2[0].1.to_day().total(Indicator::Cbt001), first_final.to_day().total(Indicator::Cbt001) + 1);
    assert!(store.dirty_days().unwrap().is_empty());
    // nothing changed: no new revision
    store.mark_dirty(date(2)).unwrap();
    assert_eq!(sch.run(&store, &s, t(24 * 3600 + 180)).unwrap().documents, 0);
}

#[test]
fn closed_days_from_before_upload_are_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    for d in 0..3 {
        store.put_call(&rec(d + 1, t(d as i64 * 86_400 + 9 * 3600), CallOutcome::Answered)).unwrap();
    }
    // days closed without uploading (an agent without [upload])
    store.close_days(&s, date(5)).unwrap();
    let mut sch = Scheduler::new(&cfg());
    let o = sch.run(&store, &s, t(4 * 86_400 + 3600)).unwrap();
    let finals: Vec<NaiveDate> = docs(&store).iter().filter(|(i, _)| i.is_final).map(|(i, _)| i.date).collect();
    assert_eq!(finals, [date(2), date(3), date(4)], "{o:?}");
    let mut again = Scheduler::new(&cfg());
    assert_eq!(again.run(&store, &s, t(4 * 86_400 + 7200)).unwrap().documents, 0, "once, across restarts");
}

#[test]
fn pruning_keeps_the_calls_of_days_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    for d in 0..3 {
        store.put_call(&rec(d + 1, t(d as i64 * 86_400 + 9 * 3600), CallOutcome::Answered)).unwrap();
    }
    let mut sch = Scheduler::new(&cfg());
    sch.run(&store, &s, t(3 * 86_400 + 3600)).unwrap();
    store.delivered("B82005", date(2), store.outbox_items().unwrap()[0].revision, t(0)).unwrap();
    // everything is past retention, but 3 and 4 Nov are not delivered
    assert_eq!(store.prune_calls(&s, Timestamp::MAX).unwrap(), 1);
    let left: Vec<u64> = store.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(left, [2, 3]);
}

#[test]
fn documents_hold_no_number_and_no_call_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    store.put_call(&rec(1, t(9 * 3600), CallOutcome::Answered)).unwrap();
    Scheduler::new(&cfg()).run(&store, &s, t(10 * 3600)).unwrap();
    for i in store.outbox_items().unwrap() {
        for leak in ["01632", "1632960123", "0123456789abcdef", "\"c1\"", "call_id"] {
            assert!(!i.body.contains(leak), "{leak} in {}", i.body);
        }
    }
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let cap = 30 * MIN;
    assert_eq!(backoff(1, cap, 1.0), 2 * SECOND);
    assert_eq!(backoff(1, cap, 0.0), SECOND);
    assert_eq!(backoff(4, cap, 1.0), 16 * SECOND);
    assert_eq!(backoff(40, cap, 1.0), cap);
    assert_eq!(backoff(40, cap, 0.0), cap / 2);
    let mut last = 0;
    for n in 1..20 {
        let b = backoff(n, cap, 1.0);
        assert!(b >= last && b <= cap);
        last = b;
    }
}

#[test]
fn answers_are_sorted_into_taken_retry_and_park() {
    assert_eq!(classify(200, r#"{"result":"duplicate"}"#, None), Outcome::Taken("duplicate".into()));
    assert_eq!(classify(201, "", None), Outcome::Taken("stored".into()));
    assert!(matches!(classify(503, "db down", Some(7)), Outcome::Retry(_, Some(7))));
    assert!(matches!(classify(429, "", None), Outcome::Retry(_, None)));
    assert!(matches!(classify(408, "", None), Outcome::Retry(..)));
    match classify(401, r#"{"error":"token revoked"}"#, None) {
        Outcome::Park(r) => assert!(r.contains("token revoked") && r.contains("upload.token_file"), "{r}"),
        o => panic!("{o:?}"),
    }
    match classify(400, r#"{"error":"`practice` \"X\" is not an ODS code"}"#, None) {
        Outcome::Park(r) => assert!(r.contains("400") && r.contains("ODS"), "{r}"),
        o => panic!("{o:?}"),
    }
    assert!(matches!(classify(403, "", None), Outcome::Park(_)));
}

#[test]
fn a_newer_revision_replaces_an_undelivered_one_and_an_old_answer_does_not_remove_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let d = date(2);
    assert_eq!(store.offer_document("B82005", d, "a", false, t(0), |r| format!("body{r}")).unwrap(), Some(1));
    assert_eq!(store.offer_document("B82005", d, "a", false, t(1), |r| format!("body{r}")).unwrap(), None);
    assert_eq!(store.offer_document("B82005", d, "b", false, t(2), |r| format!("body{r}")).unwrap(), Some(2));
    store.delivered("B82005", d, 1, t(3)).unwrap();
    let items = store.outbox_items().unwrap();
    assert_eq!((items.len(), items[0].revision, items[0].body.as_str()), (1, 2, "body2"));
    assert_eq!(store.offer_document("B82005", d, "b", true, t(4), |r| format!("body{r}")).unwrap(), Some(3), "final is a new revision");
    store.delivered("B82005", d, 3, t(5)).unwrap();
    assert!(store.outbox_items().unwrap().is_empty());
    let st = &store.upload_states().unwrap()[0].1;
    assert_eq!((st.revision, st.delivered_revision, st.is_final), (3, 3, true));
}
