use super::*;
use crate::engine::{Engine, EngineConfig};
use crate::site::Site;
use crate::synth::{Call, Script};
use crate::time::{Timestamp, SECOND};
use crate::wire::{encode_hep as encode, HepPacket};

/// An engine with a site, fed synthetic calls: some finished, some not.
fn site() -> Site {
    let mut site = Site::single("B82005", &["441632960123"], &crate::number::Hasher::new([9; 32], "44"));
    site.staff = vec![crate::site::AddrMatch::parse("10.20.1.0/24").unwrap()];
    site.carrier = vec![crate::site::AddrMatch::parse("192.0.2.0/24").unwrap()];
    site
}

fn busy_engine() -> Engine {
    let site = site();
    let mut e = Engine::new(EngineConfig {
        site: Some(site),
        journal: true,
        hash_key: [9; 32],
        ..EngineConfig::default()
    });
    let t0 = Timestamp(1_793_610_000 * SECOND);
    let scripts = [
        Script::Answered { ring: 100, answer: 2000, talk: 600_000, caller_hangs_up: true },
        Script::Cancelled { ring: 100, cancel: 900_000 },
        Script::AnsweredNoBye { answer: 1500 },
        Script::Rejected { ring: None, at: 300, code: 486 },
    ];
    for (n, s) in scripts.iter().enumerate() {
        let c = Call::numbered(n as u64, "192.0.2.7:5060".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), t0.add(n as i64 * SECOND), s.clone());
        for m in c.messages().into_iter().filter(|m| m.ts < t0.add(60 * SECOND)) {
            let pkt = encode(&HepPacket { ts: Some(m.ts), src: m.src, dst: m.dst, ip_proto: 17, proto_type: 1, capture_id: None, correlation_id: None, payload: &m.bytes });
            e.ingest_hep(m.ts, &pkt);
        }
    }
    e
}

#[test]
fn snapshot_round_trips() {
    let e = busy_engine();
    let mut bytes = Vec::new();
    write_snapshot(&mut bytes, 7, &e.snapshot_ref()).unwrap();
    let (gen, snap) = read_snapshot(&bytes).unwrap();
    assert_eq!(gen, 7);
    assert_eq!(snapshot_journal(&bytes).unwrap(), 7);
    // what is kept of each leg (not its raw user parts, never stored)
    let stored = |legs: &[crate::leg::Leg]| legs.iter().map(v1::LegV1::from).collect::<Vec<_>>();
    assert_eq!(stored(&snap.legs.legs), stored(&e.snapshot().legs.legs));
    assert_eq!(snap.calls.as_ref().unwrap().open.len(), e.open_calls());
    assert!(e.open_calls() >= 2, "the test needs calls in progress");
    // the same bytes again from what was read
    let mut e2 = busy_engine();
    e2.restore(snap);
    let mut again = Vec::new();
    write_snapshot(&mut again, 7, &e2.snapshot_ref()).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), String::from_utf8(bytes).unwrap());
}

#[test]
fn a_newer_or_broken_snapshot_is_an_error_that_says_so() {
    let e = busy_engine();
    let mut bytes = Vec::new();
    write_snapshot(&mut bytes, 3, &e.snapshot_ref()).unwrap();
    let newer = String::from_utf8(bytes.clone()).unwrap().replacen("\"version\":2", "\"version\":3", 1);
    match read_snapshot(newer.as_bytes()) {
        Err(FormatError::Newer { found: 3, supported: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    let err = read_snapshot(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, FormatError::Undecodable { .. }), "{err}");
    assert!(err.to_string().starts_with("the engine snapshot cannot be decoded"), "{err}");
}

#[test]
fn journal_records_round_trip() {
    let mut e = busy_engine();
    let mut n = 0;
    while let Some(j) = e.poll_journal() {
        let (v, body) = encode_journal_record(&j);
        assert_eq!(v, 1);
        assert_eq!(decode_journal_record(v, &body).unwrap(), j);
        n += 1;
    }
    assert!(n > 10);
    assert!(matches!(decode_journal_record(9, b"{}"), Err(FormatError::Newer { found: 9, .. })));
}

#[test]
fn calls_and_days_carry_their_version() {
    let mut e = busy_engine();
    e.finish();
    let mut agg = crate::metrics::Aggregator::new(&site());
    let mut n = 0;
    while let Some(crate::call::CallEvent::Finished(r)) = e.poll_call() {
        let bytes = encode_call(&r);
        assert!(bytes.starts_with(b"{\"v\":1,"), "{}", String::from_utf8_lossy(&bytes));
        let back = decode_call(&bytes).unwrap();
        assert_eq!(back, CallRecord { caller: None, ..(*r).clone() });
        agg.add_call(&r);
        n += 1;
    }
    assert_eq!(n, 4);
    for day in agg.days().values() {
        assert_eq!(&decode_day(&encode_day(day)).unwrap(), day);
    }
}

#[test]
fn what_0_1_0_wrote_is_read_and_newer_versions_are_refused() {
    // a call record exactly as 0.1.0 stored it (no `v`, `caller` null)
    let old = br#"{"seq":3,"call_id":"x@y","practice":"B82005","started":1793610005000000,"queue_joined":1793610005000000,"first_ring":1793610005300000,"answered":1793610009000000,"ended":1793610104000000,"ended_by":"caller","outcome":"answered","wait_s":4.0,"duration_s":95.0,"abandoned":false,"voicemail":null,"callback_requested":null,"callback_made":null,"offered_to_staff":true,"legs":1,"correlation":{"same_call_id":0,"header":0,"b2bua":0},"partial":false,"caller":null}"#;
    let r = decode_call(old).unwrap();
    assert_eq!((r.seq, r.outcome, r.wait_s, r.duration_s), (3, crate::call::Outcome::Answered, Some(4.0), Some(95.0)));
    let newer = String::from_utf8_lossy(old).replacen("{", "{\"v\":2,", 1);
    assert!(matches!(decode_call(newer.as_bytes()), Err(FormatError::Newer { found: 2, .. })));
    assert!(matches!(decode_call(b"[1,2]"), Err(FormatError::Undecodable { .. })));
    assert!(matches!(decode_call(b"{\"v\":1}"), Err(FormatError::Undecodable { .. })));
}
