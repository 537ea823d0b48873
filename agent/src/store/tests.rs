use super::*;
use cbt_proto::call::{Correlation, EndedBy, Outcome};
use cbt_proto::number::Hasher;

fn site() -> Site {
    Site::single("B82005", &["01632 960123"], &Hasher::new([1; 32], "44"))
}

fn rec(seq: u64, started_s: i64, outcome: Outcome) -> CallRecord {
    let started = Timestamp::from_secs_micros(1_730_710_800 + started_s, 0);
    CallRecord {
        seq,
        call_id: format!("c{seq}"),
        practice: "B82005".into(),
        started,
        queue_joined: Some(started),
        first_ring: None,
        answered: None,
        ended: started.add(5_000_000),
        ended_by: EndedBy::Caller,
        outcome,
        wait_s: Some(5.0),
        duration_s: (outcome == Outcome::Answered).then_some(10.0),
        abandoned: outcome == Outcome::Missed,
        voicemail: None,
        callback_requested: None,
        callback_made: None,
        offered_to_staff: true,
        legs: 1,
        correlation: Correlation::default(),
        partial: false,
        caller: Some("abcdef0123456789".into()),
    }
}

#[test]
fn calls_are_stored_once_with_their_day_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let s = site();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(st.put_call(&rec(1, 0, Outcome::Answered), &s).unwrap());
        assert!(!st.put_call(&rec(1, 0, Outcome::Answered), &s).unwrap(), "second write of seq 1");
        assert!(st.put_call(&rec(2, 60, Outcome::Missed), &s).unwrap());
        assert!(st.callback_made(2, "B82005", Timestamp::from_secs_micros(1_730_711_000, 0), &s).unwrap());
        assert!(!st.callback_made(2, "B82005", Timestamp::from_secs_micros(1_730_711_001, 0), &s).unwrap());
        st.flush().unwrap();
    }
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let calls = st.calls_between(Timestamp(0), Timestamp::MAX).unwrap();
    assert_eq!(calls.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(calls.iter().all(|c| c.caller.is_none()), "no caller hash is stored");
    assert!(calls[1].callback_made.is_some());
    let days = st.days().unwrap();
    assert_eq!(days.len(), 1);
    let d = &days[0].1;
    assert_eq!((d.total(0), d.total(2), d.total(3), d.total(5)), (2, 1, 1, 1));
    assert_eq!(st.max_seq().unwrap(), 2);
    assert_eq!(st.verify().unwrap().unreadable, 0);
}

#[test]
fn snapshot_drops_the_journal_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let e = cbt_proto::engine::JournalEntry {
        ts: Timestamp(1),
        src: "192.0.2.1:5060".parse().unwrap(),
        dst: "10.0.0.1:5060".parse().unwrap(),
        transport: cbt_proto::wire::Transport::Udp,
        source: cbt_proto::wire::Source::Capture,
        msg: cbt_proto::sip::SipMessage {
            kind: cbt_proto::sip::Kind::Request(cbt_proto::sip::Method::Bye),
            call_id: "c".into(),
            from: Default::default(),
            to: Default::default(),
            ruri_user: None,
            cseq: 2,
            cseq_method: cbt_proto::sip::Method::Bye,
            via_branch: None,
            asserted_user: None,
            contact: None,
            reason: None,
            session_expires: None,
            headers: vec![],
        },
        hashes: Default::default(),
    };
    st.append_journal(&[e.clone(), e.clone()]).unwrap();
    let engine = cbt_proto::Engine::new(cbt_proto::EngineConfig::default());
    st.save_snapshot(&engine.snapshot()).unwrap();
    st.append_journal(&[e.clone()]).unwrap();
    let (snap, after) = st.recovery().unwrap();
    assert!(snap.is_some());
    assert_eq!(after.len(), 1, "only the entry written after the snapshot");
    assert_eq!(st.verify().unwrap().journal, 1);
}

#[test]
fn pruning_keeps_the_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    for i in 0..10 {
        st.put_call(&rec(i + 1, i as i64 * 3600, Outcome::Answered), &s).unwrap();
    }
    let cut = Timestamp::from_secs_micros(1_730_710_800 + 5 * 3600, 0);
    assert_eq!(st.prune_calls(cut).unwrap(), 5);
    assert_eq!(st.call_count(), 5);
    assert_eq!(st.pruned_before().unwrap(), Some(cut));
    let total: u64 = st.days().unwrap().iter().map(|(_, d)| d.total(0)).sum();
    assert_eq!(total, 10);
    assert_eq!(st.close_days(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap()).unwrap(), 1);
    assert_eq!(st.close_days(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap()).unwrap(), 0);
}
