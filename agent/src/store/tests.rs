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

/// Writes a record of call `seq` with these bytes straight into its day's
/// file (as damage would leave it), counted as a call.
fn put_raw(st: &Store, seq: u64, started_s: i64, bytes: &[u8]) {
    assert!(st.calls.put(seq, rec(seq, started_s, Outcome::Answered).started, bytes, None).unwrap());
    st.call_count.fetch_add(1, Ordering::Relaxed);
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
        assert!(st.callback_made(2, Timestamp::from_secs_micros(1_730_710_870, 0), Timestamp::from_secs_micros(1_730_711_000, 0)).unwrap());
        assert!(!st.callback_made(2, Timestamp::from_secs_micros(1_730_710_870, 0), Timestamp::from_secs_micros(1_730_711_001, 0)).unwrap());
        assert!(!st.callback_made(9, Timestamp::from_secs_micros(1_730_710_870, 0), Timestamp::from_secs_micros(1_730_711_001, 0)).unwrap(), "an unknown call");
        st.flush().unwrap();
    }
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let calls = st.calls_between(Timestamp(0), Timestamp::MAX).unwrap();
    assert_eq!(calls.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(calls.iter().all(|c| c.caller.is_none()), "no caller hash is stored");
    assert!(calls[1].callback_made.is_some());
    assert_eq!(st.calls_on(&site(), date(2024, 11, 4)).unwrap().len(), 2);
    assert_eq!(st.max_seq().unwrap(), 2);
    assert_eq!(st.call_count(), 2, "the count is kept with the calls");
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
            reason: None,
            session_expires: None,
            headers: vec![],
            media: None,
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
        st.save_snapshot(&engine.snapshot_ref()).unwrap();
        st.append_journal(&[entry(3), entry(4)]).unwrap();
        st.flush().unwrap();
    }
    // a crash in the middle of a record
    let gens = journal_generations(dir.path()).unwrap();
    assert_eq!(gens, [2], "the journal before the snapshot is gone");
    let path = journal_path(dir.path(), 2);
    assert!(std::fs::read(&path).unwrap().starts_with(&framing::FILE_HEADER));
    let len = std::fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 10).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let rec = st.recovery().unwrap();
    assert!(rec.snapshot.is_some());
    assert_eq!(rec.entries, [entry(3)], "entry 4 was torn");
    assert!(rec.torn_bytes > 0);
    assert!(st.problems().is_empty(), "a torn tail is not damage: {:?}", st.problems());
}

#[test]
fn a_damaged_record_in_the_middle_of_the_journal_is_kept_aside_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        st.append_journal(&(1..=5).map(entry).collect::<Vec<_>>()).unwrap();
        st.flush().unwrap();
    }
    let gens = journal_generations(dir.path()).unwrap();
    let path = journal_path(dir.path(), gens[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    // a byte inside the third record's body (its Call-ID "c3")
    let at = bytes.windows(6).position(|w| w == b"\"c3\",\"").unwrap();
    bytes[at + 2] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let rec = st.recovery().unwrap();
    assert_eq!(rec.entries, [entry(1), entry(2), entry(4), entry(5)]);
    let problems = st.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("damaged") && problems[0].contains("kept in"), "{}", problems[0]);
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("aside")).unwrap().flatten().collect();
    assert_eq!(aside.len(), 1);
    let kept = std::fs::read(aside[0].path()).unwrap();
    assert!(kept.windows(4).any(|w| w == b"\"cX\""), "the damaged record is kept as it was");
    assert_eq!(st.kept_aside(), (0, 1));
}

#[test]
fn what_a_newer_agent_wrote_is_refused_untouched() {
    // a newer store layout
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
        st.meta.insert("schema", json(&(SCHEMA + 1))).unwrap();
        st.flush().unwrap();
    }
    let err = Store::open(dir.path(), 1 << 20).err().expect("refused").to_string();
    assert!(err.contains("written by a newer cbt-agent"), "{err}");
    // a newer snapshot in a store of this layout
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        let engine = cbt_proto::Engine::new(cbt_proto::EngineConfig::default());
        st.save_snapshot(&engine.snapshot_ref()).unwrap();
        st.append_journal(&[entry(1)]).unwrap();
        st.flush().unwrap();
    }
    let snap = dir.path().join("snapshot.json");
    let written = format!("\"version\":{}", cbt_proto::persist::SNAPSHOT_VERSION);
    let text = std::fs::read_to_string(&snap).unwrap();
    assert!(text.contains(&written), "{text}");
    let text = text.replace(&written, "\"version\":7");
    std::fs::write(&snap, &text).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let err = st.recovery().err().expect("refused").to_string();
    assert!(err.contains("version 7") && err.contains("newer cbt-agent"), "{err}");
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), text, "left as it was");
}

#[test]
fn an_unreadable_call_is_kept_aside_and_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
    put_raw(&st, 2, 60, b"{\"v\":1,\"seq\":2,\"practice\":");
    let counts = st.verify().unwrap();
    assert_eq!((counts.calls, counts.unreadable), (1, 1));
    assert_eq!(st.calls_between(Timestamp(0), Timestamp::MAX).unwrap().len(), 1);
    assert_eq!(st.problems().len(), 1);
    assert!(st.problems()[0].contains("stored call 2") && st.problems()[0].contains("kept in"), "{:?}", st.problems());
    assert_eq!(st.kept_aside(), (0, 1));
    let kept = std::fs::read(dir.path().join("aside/calls-2024-11-04-call-2.json")).unwrap();
    assert_eq!(kept, b"{\"v\":1,\"seq\":2,\"practice\":", "kept as it was");
    // taken out of its file: read once, reported once
    assert_eq!(st.calls_between(Timestamp(0), Timestamp::MAX).unwrap().len(), 1);
    assert_eq!(st.problems().len(), 1);
}

#[test]
fn damaged_bytes_in_a_call_file_are_kept_aside_and_the_calls_around_them_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=3 {
            st.put_call(&rec(i, i as i64 * 60, Outcome::Answered)).unwrap();
        }
    }
    let path = dir.path().join("calls/2024-11-04.calls");
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(&cbt_proto::persist::calls::FILE_HEADER));
    let at = bytes.windows(6).position(|w| w == b"\"c2\",\"").unwrap();
    bytes[at + 2] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let seqs: Vec<u64> = st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 3]);
    let problems = st.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("calls/2024-11-04.calls") && problems[0].contains("damaged") && problems[0].contains("kept in"), "{}", problems[0]);
    assert_eq!(st.kept_aside(), (0, 1));
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("aside")).unwrap().flatten().collect();
    assert!(std::fs::read(aside[0].path()).unwrap().windows(4).any(|w| w == b"\"cX\""), "kept as it was");
    // the file no longer holds them: read again, nothing more to report;
    // the call can be stored again (the journal replaying it)
    assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 2);
    assert!(st.put_call(&rec(2, 120, Outcome::Answered)).unwrap());
    assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 3);
    assert_eq!(st.problems().len(), 1);
}

#[test]
fn a_call_cut_short_by_a_kill_is_dropped_and_stored_again_by_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Store::open(dir.path(), 1 << 20).unwrap();
        st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
        st.put_call(&rec(2, 60, Outcome::Missed)).unwrap();
        st.flush().unwrap();
        st.counted = false; // as a kill leaves it
    }
    let path = dir.path().join("calls/2024-11-04.calls");
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 7).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(st.call_count(), 1, "counted from the files");
    assert_eq!(st.verify().unwrap().unreadable, 0);
    assert!(st.problems().is_empty(), "a torn tail is not damage: {:?}", st.problems());
    assert!(!st.put_call(&rec(1, 0, Outcome::Answered)).unwrap(), "stored");
    assert!(st.put_call(&rec(2, 60, Outcome::Missed)).unwrap(), "cut short: stored again");
    st.flush().unwrap();
    let seqs: Vec<u64> = st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(st.problems().is_empty(), "{:?}", st.problems());
    // a kill as a day's file was made: its header cut short
    drop(st);
    std::fs::write(dir.path().join("calls/2024-11-05.calls"), &cbt_proto::persist::calls::FILE_HEADER[..5]).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    assert!(st.put_call(&rec(3, 86_400, Outcome::Answered)).unwrap());
    st.flush().unwrap();
    drop(st);
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let seqs: Vec<u64> = st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(st.problems().is_empty(), "{:?}", st.problems());
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
    assert_eq!(st.close_days(&s, date(2024, 11, 5)).unwrap(), [date(2024, 11, 4)], "only the 4th is over");
    assert!(st.close_days(&s, date(2024, 11, 5)).unwrap().is_empty(), "once");
    assert_eq!(st.close_days(&s, date(2024, 11, 6)).unwrap(), [date(2024, 11, 5)]);
    let days = st.days().unwrap();
    let totals: Vec<u64> = days.iter().map(|(_, d)| d.total(cbt_proto::metrics::Indicator::Cbt001)).collect();
    assert_eq!(totals, [5, 5]);
    let cut = Timestamp::MAX;
    assert_eq!(st.prune_calls(&s, cut).unwrap(), 10, "all days closed: all prunable");
    assert_eq!(st.call_count(), 0);
    assert!(st.pruned_before().unwrap().is_some());
    assert_eq!(st.days().unwrap().len(), 2, "figures stay");
}

#[test]
fn a_second_process_on_the_same_store_is_told_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), 1 << 20).unwrap();
    // flock locks are per open file description: a second open in this
    // process conflicts as a second process would
    let err = Store::open(dir.path(), 1 << 20).err().expect("refused").to_string();
    assert_eq!(
        err,
        format!(
            "another cbt-agent is using {} (pid {}): stop it first (`sudo systemctl stop cbt-agent`), or give this one another store.dir",
            dir.path().display(),
            std::process::id()
        )
    );
}

#[test]
fn reopening_waits_for_sleds_own_lock_a_moment_after_a_close() {
    // sled's background threads can hold its database (and its lock on
    // db/db) a moment after the Store that opened it is gone; our own lock
    // being free says the holder is this process, so the open waits
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), 1 << 20).unwrap());
    let lingering = sled::Config::new()
        .path(dir.path().join("db"))
        .open()
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(lingering);
    });
    let st = Store::open(dir.path(), 1 << 20).expect("opens once sled lets go");
    release.join().unwrap();
    assert_eq!(st.call_count(), 0);
}

/// A store with `per_day` calls on each of `days` days from 4 Nov 2024,
/// every day closed.
fn store_of_days(dir: &Path, days: i64, per_day: i64) -> Store {
    let st = Store::open(dir, 1 << 20).unwrap();
    let mut seq = 0;
    for d in 0..days {
        for i in 0..per_day {
            seq += 1;
            st.put_call(&rec(seq, d * 86_400 + i * 60, if i % 3 == 0 { Outcome::Missed } else { Outcome::Answered })).unwrap();
        }
    }
    let last = date(2024, 11, 4) + Duration::days(days);
    st.close_days(&site(), last).unwrap();
    st
}

#[test]
fn a_call_past_call_retention_goes_and_its_days_figures_stay() {
    let dir = tempfile::tempdir().unwrap();
    let s = site();
    let st = store_of_days(dir.path(), 6, 4);
    let figures_before = st.days().unwrap();
    assert_eq!(figures_before.iter().filter(|((p, _), _)| p == "B82005").count(), 6);
    // the 7th is dirty (a late call): nothing from it on goes
    st.mark_dirty(date(2024, 11, 7)).unwrap();
    // call retention reaches 12:00 on the 9th: the 4th to the 6th go, the
    // day holding the cut is kept whole
    let cut = Timestamp::from_secs_micros(1_730_710_800 + 5 * 86_400 + 3 * 3600, 0);
    assert_eq!(st.prune_calls(&s, cut).unwrap(), 12, "three days of four calls");
    assert_eq!(st.call_count(), 12);
    let left: Vec<NaiveDate> = st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().map(|c| Aggregator::new(&s).local_date(c.started)).collect();
    assert_eq!(left.first(), Some(&date(2024, 11, 7)), "the dirty day and after kept");
    assert_eq!(st.pruned_before().unwrap(), Some(local_day_span(&s, date(2024, 11, 7)).0));
    assert_eq!(st.days().unwrap(), figures_before, "every day's figures stay");
    // the book of the first week: the pruned days from their figures,
    // the rest from their calls, every call counted once
    let book = crate::page::book_between(&st, &s, date(2024, 11, 4), date(2024, 11, 9)).unwrap();
    let agg = book.aggregate(&s);
    let cbt001 = |d: &Day| d.total(cbt_proto::metrics::Indicator::Cbt001);
    let total: u64 = (4..=9).filter_map(|d| agg.days().get(&("B82005".to_string(), date(2024, 11, d)))).map(cbt001).sum();
    let stored: u64 = figures_before.iter().filter(|((p, _), _)| p == "B82005").map(|(_, d)| cbt001(d)).sum();
    assert!(stored > 0);
    assert_eq!(total, stored);
    // clean again: the next prune takes the calls up to the cut
    st.recompute_day(&s, date(2024, 11, 7)).unwrap();
    assert_eq!(st.prune_calls(&s, cut).unwrap(), 8);
    assert_eq!(st.prune_calls(&s, cut).unwrap(), 0, "once");
    assert_eq!(st.days().unwrap().len(), figures_before.len());

    // day figures, upload states and activity go by store.retention
    st.offer_document("B82005", date(2024, 11, 4), "a", true, cut, |r| format!("doc {r}")).unwrap();
    st.offer_document("B82005", date(2024, 11, 6), "a", true, cut, |r| format!("doc {r}")).unwrap();
    for d in [4, 6] {
        st.delivered("B82005", date(2024, 11, d), 1, cut).unwrap();
    }
    let mut hours = std::collections::BTreeMap::new();
    hours.insert((date(2024, 11, 4), 9), HourV1 { up_s: 3600, ..Default::default() });
    hours.insert((date(2024, 11, 6), 9), HourV1 { up_s: 3600, ..Default::default() });
    st.add_activity(&hours).unwrap();
    let practices = figures_before.iter().filter(|((_, d), _)| *d == date(2024, 11, 4)).count();
    assert_eq!(st.prune_days(date(2024, 11, 6)).unwrap(), 2 * practices + 2, "the 4th and 5th's figures, the 4th's upload state and activity");
    assert_eq!(st.days().unwrap().first().map(|((_, d), _)| *d), Some(date(2024, 11, 6)));
    assert_eq!(st.upload_states().unwrap().iter().map(|((_, d), _)| *d).collect::<Vec<_>>(), [date(2024, 11, 6)]);
    assert!(st.activity_on(date(2024, 11, 4)).unwrap().is_none());
    assert!(st.activity_on(date(2024, 11, 6)).unwrap().is_some());
    assert_eq!(st.days_pruned_before().unwrap(), Some(date(2024, 11, 6)));
    // an undelivered document holds its day's figures (and later days')
    st.offer_document("B82005", date(2024, 11, 7), "b", true, cut, |r| format!("doc {r}")).unwrap();
    assert_eq!(st.prune_days(date(2024, 11, 30)).unwrap(), practices + 2, "only the 6th goes");
    assert_eq!(st.days().unwrap().first().map(|((_, d), _)| *d), Some(date(2024, 11, 7)));
    // the count of calls kept with them survives reopening
    st.flush().unwrap();
    drop(st);
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(st.call_count(), 4);
    assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 4);
    assert_eq!(st.max_seq().unwrap(), 24, "numbering goes on after the pruned calls");
}

#[test]
fn reading_some_days_reads_only_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = site();
    let st = store_of_days(dir.path(), 30, 20);
    let before = st.records_read();
    let calls = st.calls_on(&s, date(2024, 11, 20)).unwrap();
    assert_eq!(calls.len(), 20);
    assert_eq!(st.records_read() - before, 20, "one day of 30: its 20 calls read");
    let before = st.records_read();
    let days = st.days_between(Some(date(2024, 11, 10)), Some(date(2024, 11, 11))).unwrap();
    assert!(!days.is_empty());
    assert!(days.iter().all(|((_, d), _)| *d == date(2024, 11, 10) || *d == date(2024, 11, 11)), "{days:?}");
    assert_eq!(days.iter().filter(|((p, _), _)| p == "B82005").count(), 2);
    assert_eq!(st.records_read() - before, days.len(), "two days of 30: only their figures read");
    let before = st.records_read();
    assert_eq!(st.days_on(date(2024, 12, 25)).unwrap().len(), 0);
    assert_eq!(st.records_read() - before, 0, "a day after the stored ones reads nothing");
}

/// Rewrites a store of this layout as layout `layout` (3 or 4) wrote it:
/// calls in sled's `calls` tree, one key per call (their files gone unless
/// `keep_files`: a move to files cut short); for 3, `days` and `uploads`
/// keyed practice first and the `seqs` index. With `cut_short` (3), the
/// `days` tree is left as a migration cut short after rewriting it leaves
/// it.
fn as_layout(dir: &Path, layout: u32, cut_short: bool, keep_files: bool) {
    let mut st = Store::open(dir, 1 << 20).unwrap();
    let calls = st.db.open_tree("calls").unwrap();
    for c in st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap() {
        calls.insert(call_key(c.started, c.seq), cbt_proto::persist::encode_call(&c)).unwrap();
    }
    if layout == 3 {
        let old_key = |k: &[u8]| {
            let (date, practice) = parse_day_key(k).unwrap();
            let mut o = practice.into_bytes();
            o.push(0);
            o.extend_from_slice(date.format("%Y-%m-%d").to_string().as_bytes());
            o
        };
        let trees: &[&sled::Tree] = if cut_short { &[&st.uploads] } else { &[&st.days, &st.uploads] };
        for tree in trees {
            for r in tree.iter() {
                let (k, v) = r.unwrap();
                tree.remove(&k).unwrap();
                tree.insert(old_key(&k), v).unwrap();
            }
        }
        let seqs = st.db.open_tree("seqs").unwrap();
        for k in calls.iter().keys() {
            let k = k.unwrap();
            seqs.insert(&k[8..16], &k[..]).unwrap();
        }
    }
    st.meta.insert("schema", json(&layout)).unwrap();
    // the totals this layout writes when it closes, layout 3 did not (they
    // were taken out when it opened)
    assert!(st.meta.get(TOTALS).unwrap().is_none());
    st.flush().unwrap();
    if layout == 4 {
        st.meta.insert(TOTALS, json(&CallTotals { count: calls.len() as u64, max_seq: st.max_seq().unwrap() })).unwrap();
        st.db.flush().unwrap();
    }
    st.counted = false;
    drop(st);
    if !keep_files {
        std::fs::remove_dir_all(dir.join("calls")).unwrap();
    }
}

fn as_layout_3(dir: &Path, cut_short: bool) {
    as_layout(dir, 3, cut_short, false)
}

#[test]
fn a_layout_3_store_migrates_even_after_a_migration_cut_short() {
    for cut_short in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (calls, days, states) = {
            let st = store_of_days(dir.path(), 3, 5);
            st.offer_document("B82005", date(2024, 11, 5), "a", true, Timestamp(0), |r| format!("doc {r}")).unwrap();
            st.delivered("B82005", date(2024, 11, 5), 1, Timestamp(0)).unwrap();
            st.offer_document("B82005", date(2024, 11, 6), "b", true, Timestamp(0), |r| format!("doc {r}")).unwrap();
            st.flush().unwrap();
            (st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap(), st.days().unwrap(), st.upload_states().unwrap())
        };
        as_layout_3(dir.path(), cut_short);
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(st.meta.get("schema").unwrap().as_deref(), Some(&json(&SCHEMA)[..]));
        assert!(!st.db.tree_names().iter().any(|n| n.as_ref() == b"seqs"), "the index is gone");
        assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap(), calls, "cut short: {cut_short}");
        assert_eq!(st.call_count(), 15);
        assert_eq!(st.max_seq().unwrap(), 15);
        assert_eq!(st.days().unwrap(), days, "cut short: {cut_short}");
        assert_eq!(st.days_on(date(2024, 11, 5)).unwrap().len(), days.iter().filter(|((_, d), _)| *d == date(2024, 11, 5)).count());
        assert_eq!(st.upload_states().unwrap(), states, "cut short: {cut_short}");
        assert_eq!(st.undelivered_dates().unwrap(), BTreeSet::from([date(2024, 11, 6)]));
        // the journal replayed after the upgrade finds its calls stored
        assert!(!st.put_call(&rec(7, 86_400 + 60, Outcome::Answered)).unwrap(), "stored once");
        assert!(st.callback_made(7, rec(7, 86_400 + 60, Outcome::Answered).started.add(30_000_000), Timestamp::from_secs_micros(1_730_900_000, 0)).unwrap());
        assert_eq!(st.call_count(), 15);
    }
}

#[test]
fn after_a_clean_close_the_start_does_not_read_every_call_but_a_damaged_one_is_still_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
        put_raw(&st, 2, 60, b"{\"v\":1,\"seq\":2");
    } // closed cleanly
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        let counts = st.verify().unwrap();
        assert_eq!((counts.calls, counts.unreadable), (2, 0), "not read at start");
        assert_eq!(st.records_read(), 0);
        // read when asked for: kept aside and reported then
        assert_eq!(st.calls_between(Timestamp(0), Timestamp::MAX).unwrap().len(), 1);
        assert_eq!(st.kept_aside(), (0, 1));
        assert!(st.problems()[0].contains("stored call"), "{:?}", st.problems());
    }
    // a crash (no clean close): the next start reads every call
    let mut st = Store::open(dir.path(), 1 << 20).unwrap();
    put_raw(&st, 2, 60, b"{\"v\":1,\"seq\":2");
    st.flush().unwrap();
    st.counted = false; // as a kill leaves it: no totals written
    drop(st);
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(st.verify().unwrap().unreadable, 1);
}

#[test]
fn a_layout_4_store_moves_its_calls_to_files_even_after_a_move_cut_short() {
    // 0: as 4 left it; 1: some files written, the mark still 4; 2: every
    // file written and the mark 5, the tree not yet dropped
    for stage in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (calls, days) = {
            let st = store_of_days(dir.path(), 3, 5);
            st.callback_made(7, rec(7, 86_400 + 60, Outcome::Answered).started.add(30_000_000), Timestamp::from_secs_micros(1_730_900_000, 0)).unwrap();
            st.flush().unwrap();
            (st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap(), st.days().unwrap())
        };
        assert!(calls[6].callback_made.is_some());
        as_layout(dir.path(), 4, false, stage > 0);
        if stage == 1 {
            std::fs::remove_file(dir.path().join("calls/2024-11-06.calls")).unwrap();
        }
        if stage == 2 {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.open_tree("meta").unwrap().insert("schema", json(&SCHEMA)).unwrap();
            db.flush().unwrap();
        }
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(st.meta.get("schema").unwrap().as_deref(), Some(&json(&SCHEMA)[..]));
        assert!(!st.db.tree_names().iter().any(|n| n.as_ref() == b"calls"), "stage {stage}: the tree is gone");
        assert_eq!(st.verify().unwrap().unreadable, 0);
        assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap(), calls, "stage {stage}");
        assert_eq!(st.call_count(), 15, "stage {stage}");
        assert_eq!(st.max_seq().unwrap(), 15);
        assert_eq!(st.days().unwrap(), days);
        assert!(!st.put_call(&rec(12, 2 * 86_400 + 60, Outcome::Answered)).unwrap(), "stored once");
        assert!(!st.callback_made(7, rec(7, 86_400 + 60, Outcome::Answered).started.add(30_000_000), Timestamp::from_secs_micros(1_730_900_001, 0)).unwrap(), "its callback too");
        let files: Vec<_> = std::fs::read_dir(dir.path().join("calls")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(st.problems().is_empty(), "{:?}", st.problems());
    }
}

#[test]
fn pruning_deletes_whole_days_and_rewrites_the_day_holding_the_cut() {
    // prune the calls before a cut that is not a UTC midnight (a local
    // midnight in summer): the file holding it is rewritten, the rest go whole
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    for i in 0..48 {
        st.put_call(&rec(i + 1, i as i64 * 3600, Outcome::Answered)).unwrap();
    }
    st.flush().unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("calls")).unwrap().count(), 3, "4, 5 and 6 November (UTC)");
    let cut = rec(1, 0, Outcome::Answered).started.add(24 * 3_600_000_000); // 5 Nov 09:00
    let first = rec(1, 0, Outcome::Answered).started;
    assert!(!st.calls.any_before(first).unwrap() && st.calls.any_before(first.add(1)).unwrap());
    assert_eq!(st.first_call_start().unwrap(), Some(first));
    assert_eq!(st.calls.prune_before(cut, |_| {}).unwrap(), 24);
    assert_eq!(st.first_call_start().unwrap(), Some(rec(25, 24 * 3600, Outcome::Answered).started), "known again after the prune");
    assert!(!st.calls.any_before(cut).unwrap(), "the cut's own day read: nothing before it");
    assert!(st.calls.any_before(cut.add(1)).unwrap());
    let left: Vec<u64> = st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(left, (25..=48).collect::<Vec<_>>());
    assert!(!dir.path().join("calls/2024-11-04.calls").exists());
    assert_eq!(st.calls.count().unwrap(), (24, 48));
    assert!(!st.put_call(&rec(30, 29 * 3600, Outcome::Answered)).unwrap(), "still known after the rewrite");
    assert!(st.put_call(&rec(20, 19 * 3600, Outcome::Answered)).unwrap(), "pruned: a new call to the files");
    assert_eq!(st.first_call_start().unwrap(), Some(rec(20, 19 * 3600, Outcome::Answered).started), "kept up to date as calls are stored");
}

#[test]
fn a_days_figures_read_a_chunk_at_a_time_equal_those_of_its_calls_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = site();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    // three days of calls, a callback for every fifth made the next day
    for i in 0..150u64 {
        let mut r = rec(i + 1, i as i64 * 1700, if i % 3 == 0 { Outcome::Missed } else { Outcome::Answered });
        r.callback_requested = (i % 5 == 0).then_some(r.ended);
        st.put_call(&r).unwrap();
        if i % 5 == 0 {
            st.callback_made(i + 1, r.ended, r.started.add(86_400_000_000)).unwrap();
        }
    }
    st.flush().unwrap();
    let whole = |date: NaiveDate| {
        let mut agg = Aggregator::new(&s);
        for r in st.calls_on(&s, date).unwrap() {
            agg.add_call(&r);
        }
        let (from, to) = local_day_span(&s, date);
        for r in st.calls_between(from.add(-2 * 86_400_000_000), to).unwrap() {
            if let Some(at) = r.callback_made.filter(|t| *t >= from && *t < to) {
                agg.add_callback(&r.practice, at);
            }
        }
        agg.days().clone()
    };
    for d in 3..=7 {
        let date = date(2024, 11, d);
        let streamed = st.figures_on(&s, date).unwrap().days().clone();
        assert_eq!(streamed, whole(date), "{date}");
    }
    let callbacks = |date| st.figures_on(&s, date).unwrap().days().values().map(|d| d.total(cbt_proto::metrics::Indicator::Cbt006)).sum::<u64>();
    assert!(callbacks(date(2024, 11, 5)) > 0, "callbacks counted on the day they were made");
    assert!(st.any_call_on(&s, date(2024, 11, 6)).unwrap());
    assert!(!st.any_call_on(&s, date(2024, 11, 8)).unwrap());
    // damage in a file: the figures count every intact call and the damage
    // is kept aside once
    let cbt001 = |days: &std::collections::BTreeMap<(String, NaiveDate), Day>| days.values().map(|d| d.total(cbt_proto::metrics::Indicator::Cbt001)).sum::<u64>();
    let before = cbt001(st.figures_on(&s, date(2024, 11, 5)).unwrap().days());
    let path = dir.path().join("calls/2024-11-05.calls");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"\"c60\"").unwrap();
    bytes[at + 2] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let after = st.figures_on(&s, date(2024, 11, 5)).unwrap().days().clone();
    assert_eq!(after, whole(date(2024, 11, 5)));
    assert_eq!(cbt001(&after), before - 1, "the damaged call alone is missing");
    assert_eq!(st.problems().len(), 1, "{:?}", st.problems());
    assert_eq!(st.kept_aside(), (0, 1));
}

#[test]
fn a_snapshot_puts_the_calls_finished_before_it_on_disk_first() {
    // the journal before a snapshot is deleted: a call finished from its
    // messages must be on disk by then, flushed or not (a kill right after
    // the snapshot would lose it otherwise)
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    st.append_journal(&[entry(1)]).unwrap();
    st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
    let path = dir.path().join("calls/2024-11-04.calls");
    let on_disk = || std::fs::read(&path).unwrap_or_default().windows(4).any(|w| w == b"\"c1\"");
    assert!(!on_disk(), "buffered until a flush");
    let engine = cbt_proto::Engine::new(cbt_proto::EngineConfig::default());
    st.save_snapshot(&engine.snapshot_ref()).unwrap();
    assert!(on_disk(), "written before the journal went");
}


#[test]
fn damage_in_the_file_a_prune_rewrites_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    for i in 0..48 {
        st.put_call(&rec(i + 1, i as i64 * 3600, Outcome::Answered)).unwrap();
    }
    st.flush().unwrap();
    // damage call 30 (5 Nov, after the cut)
    let path = dir.path().join("calls/2024-11-05.calls");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"\"c30\"").unwrap();
    bytes[at + 2] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let cut = rec(1, 0, Outcome::Answered).started.add(24 * 3_600_000_000);
    assert_eq!(st.prune_calls(&site(), cut).unwrap(), 0, "no day closed: nothing pruned");
    let gone = std::cell::Cell::new(0);
    assert_eq!(st.reported(st.calls.prune_before(cut, |n| gone.set(gone.get() + n))).unwrap(), 24);
    assert_eq!(gone.get(), 24, "counted as each file goes");
    assert!(!std::fs::read(&path).unwrap().windows(5).any(|w| w == b"\"cX0\""), "(the damaged record is gone from the file)");
    assert_eq!(st.problems().len(), 1, "{:?}", st.problems());
    assert_eq!(st.kept_aside(), (0, 1), "kept aside before prune's rewrite dropped it");
}

#[test]
fn a_rewrite_that_keeps_failing_reports_and_uncounts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
    st.put_call(&rec(3, 120, Outcome::Answered)).unwrap();
    put_raw(&st, 2, 60, b"{\"v\":1,\"seq\":2");
    st.flush().unwrap();
    std::fs::create_dir(dir.path().join("calls/2024-11-04.calls.tmp")).unwrap();
    for _ in 0..3 {
        assert!(st.calls_between(Timestamp::MIN, Timestamp::MAX).is_err());
    }
    assert_eq!(st.call_count(), 3, "problems: {:?}", st.problems());
    assert!(st.problems().is_empty(), "{:?}", st.problems());
    // once the file can be rewritten: reported once, uncounted once
    std::fs::remove_dir(dir.path().join("calls/2024-11-04.calls.tmp")).unwrap();
    for _ in 0..3 {
        assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 2);
    }
    assert_eq!(st.call_count(), 2);
    assert_eq!(st.problems().len(), 1, "{:?}", st.problems());
}

#[test]
fn a_damaged_file_header_after_a_crash_is_kept_aside_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Store::open(dir.path(), 1 << 20).unwrap();
        st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
        st.flush().unwrap();
        st.counted = false; // a kill
    }
    let path = dir.path().join("calls/2024-11-04.calls");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let st = match Store::open(dir.path(), 1 << 20) {
        Ok(st) => st,
        Err(e) => panic!("one flipped header bit: the store does not open: {e}"),
    };
    assert_eq!(st.call_count(), 1);
    assert!(st.put_call(&rec(2, 60, Outcome::Answered)).unwrap(), "a later call of that day is stored");
    assert!(!st.put_call(&rec(1, 0, Outcome::Answered)).unwrap(), "the first is still there");
    st.flush().unwrap();
    assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 2);
    assert_eq!(st.problems().len(), 1, "the header kept aside: {:?}", st.problems());
    assert!(std::fs::read(&path).unwrap().starts_with(&cbt_proto::persist::calls::FILE_HEADER), "rewritten with a good header");
}

#[test]
fn a_damaged_file_header_after_a_clean_close_refuses_no_call_of_its_day() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = Store::open(dir.path(), 1 << 20).unwrap();
        st.put_call(&rec(1, 0, Outcome::Answered)).unwrap();
    }
    let path = dir.path().join("calls/2024-11-04.calls");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    let r = st.put_call(&rec(2, 60, Outcome::Answered));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn damage_that_cannot_be_kept_aside_stays_in_its_file_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    for i in 1..=3 {
        st.put_call(&rec(i, i as i64 * 60, Outcome::Answered)).unwrap();
    }
    st.flush().unwrap();
    let path = dir.path().join("calls/2024-11-04.calls");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(4).position(|w| w == b"\"c2\"").unwrap();
    bytes[at + 2] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    // aside/ cannot be made (a file is in the way, as a full disk would)
    std::fs::write(dir.path().join("aside"), b"").unwrap();
    assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 2);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    assert!(st.problems().is_empty(), "{:?}", st.problems());
    std::fs::remove_file(dir.path().join("aside")).unwrap();
    assert_eq!(st.calls_between(Timestamp::MIN, Timestamp::MAX).unwrap().len(), 2);
    assert_eq!(st.problems().len(), 1, "{:?}", st.problems());
    assert_eq!(st.kept_aside(), (0, 1));
    assert_ne!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_layout_4_key_reads_back_as_the_start_and_number_it_was_made_of() {
    for (micros, seq) in [(i64::MIN, 0), (-1, 1), (0, 2), (1_793_610_000_000_000, u64::MAX), (i64::MAX, 9)] {
        let k = call_key(Timestamp(micros), seq);
        assert_eq!((key_started(&k), key_seq(&k)), (Some(Timestamp(micros)), Some(seq)));
    }
    assert_eq!((key_started(b"short"), key_seq(b"short")), (None, None));
}

#[test]
fn a_callback_made_days_after_its_call_within_a_long_window_counts_on_its_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = site();
    s.callback_window = cbt_proto::site::CallbackWindow::Within(72 * 3_600_000_000);
    let st = Store::open(dir.path(), 1 << 20).unwrap();
    // Friday 1 November 2024 10:00 UTC; its callback Monday 09:30
    let mut r = rec(1, -71 * 3600, Outcome::Missed);
    r.callback_requested = Some(r.ended);
    st.put_call(&r).unwrap();
    st.callback_made(1, r.ended, rec(2, 1800, Outcome::Answered).started).unwrap();
    st.flush().unwrap();
    let made = |site: &Site| -> u64 {
        st.figures_on(site, date(2024, 11, 4)).unwrap().days().values().map(|d| d.total(cbt_proto::metrics::Indicator::Cbt006)).sum()
    };
    assert_eq!(made(&s), 1, "Monday's figures count the callback made that Monday");
    assert_eq!(callback_lookback(&s), 4 * 86_400_000_000);
    // a same-day window looks back two days, as before
    assert_eq!(callback_lookback(&site()), 2 * 86_400_000_000);
}
