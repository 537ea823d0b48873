use super::*;
use cbt_proto::call::{Correlation, EndedBy, Outcome};
use cbt_proto::number::Hasher;

fn site() -> Site {
    Site::single("B82005", &["01632 960123"], &Hasher::new([1; 32], "44"))
}

/// A call starting `started_s` after Mon 4 Nov 2024 09:00 UTC.
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

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn calls_are_stored_once_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(st.put_call(&rec(1, 0, Outcome::Answered)).unwrap());
        assert!(!st.put_call(&rec(1, 0, Outcome::Answered)).unwrap(), "second write of seq 1");
        assert!(st.put_call(&rec(2, 60, Outcome::Missed)).unwrap());
        assert!(st.callback_made(2, Timestamp::from_secs_micros(1_730_711_000, 0)).unwrap());
        assert!(!st.callback_made(2, Timestamp::from_secs_micros(1_730_711_001, 0)).unwrap());
        st.flush().unwrap();
    }
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let calls = st.calls_between(Timestamp(0), Timestamp::MAX).unwrap();
    assert_eq!(calls.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(calls.iter().all(|c| c.caller.is_none()), "no caller hash is stored");
    assert!(calls[1].callback_made.is_some());
    assert_eq!(st.calls_on(&site(), date(2024, 11, 4)).unwrap().len(), 2);
    assert_eq!(st.max_seq().unwrap(), 2);
    assert_eq!(st.verify().unwrap().unreadable, 0);
}

fn entry(n: u32) -> JournalEntry {
    JournalEntry {
        ts: Timestamp(n as i64),
        src: "192.0.2.1:5060".parse().unwrap(),
        dst: "10.0.0.1:5060".parse().unwrap(),
        transport: cbt_proto::wire::Transport::Udp,
        source: cbt_proto::wire::Source::Capture,
        msg: cbt_proto::sip::SipMessage {
            kind: cbt_proto::sip::Kind::Request(cbt_proto::sip::Method::Bye),
            call_id: format!("c{n}"),
            from: Default::default(),
            to: Default::default(),
            ruri_user: None,
            cseq: n,
            cseq_method: cbt_proto::sip::Method::Bye,
            via_branch: None,
            asserted_user: None,
            contact: None,
            reason: None,
            session_expires: None,
            headers: vec![],
        },
        hashes: Default::default(),
    }
}

#[test]
fn the_journal_since_the_snapshot_is_replayed_and_a_torn_tail_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        st.append_journal(&[entry(1), entry(2)]).unwrap();
        let engine = cbt_proto::Engine::new(cbt_proto::EngineConfig::default());
        st.save_snapshot(&engine.snapshot()).unwrap();
        st.append_journal(&[entry(3), entry(4)]).unwrap();
        st.flush().unwrap();
    }
    // a crash in the middle of a record
    let gens = journal_generations(dir.path()).unwrap();
    assert_eq!(gens, [2], "the journal before the snapshot is gone");
    let path = journal_path(dir.path(), 2);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 10).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let (snap, after) = st.recovery().unwrap();
    assert!(snap.is_some());
    assert_eq!(after, [entry(3)], "entry 4 was torn");
}

#[test]
fn days_close_with_their_figures_and_pruning_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let s = site();
    for i in 0..10 {
        // two days: 4 and 5 November
        st.put_call(&rec(i + 1, i as i64 * 3 * 3600, Outcome::Answered)).unwrap();
    }
    assert_eq!(st.close_days(&s, date(2024, 11, 5)).unwrap(), 1, "only the 4th is over");
    assert_eq!(st.close_days(&s, date(2024, 11, 5)).unwrap(), 0, "once");
    assert_eq!(st.close_days(&s, date(2024, 11, 6)).unwrap(), 1);
    let days = st.days().unwrap();
    let totals: Vec<u64> = days.iter().map(|(_, d)| d.total(0)).collect();
    assert_eq!(totals, [5, 5]);
    assert_eq!(st.outbox_len(), 2);
    let cut = Timestamp::MAX;
    assert_eq!(st.prune_calls(&s, cut).unwrap(), 10, "all days closed: all prunable");
    assert_eq!(st.call_count(), 0);
    assert!(st.pruned_before().unwrap().is_some());
    assert_eq!(st.days().unwrap().len(), 2, "figures stay");
}
