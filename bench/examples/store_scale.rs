//! A store the size of a busy practice's year, written and read through
//! the store's own API (run by `scripts/bench-store`).
//!
//!   store_scale fill DIR DAYS PER_DAY   writes DAYS x PER_DAY calls (from
//!       Mon 4 Nov 2024, one practice), prints the write rate of the first
//!       and of the last 10,000 calls, then closes every day (day figures);
//!   store_scale read DIR YYYY-MM-DD     opens it (RSS), reads one day's
//!       calls and day figures (time, records read: `records_read`), prints VmHWM.
use cbt_agent::store::Store;
use cbt_proto::call::{CallRecord, Correlation, EndedBy, Outcome};
use cbt_proto::number::Hasher;
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use std::time::Instant;
use cbt_bench::own_mib;

fn mem() -> String {
    format!("VmRSS {} MiB, VmHWM {} MiB", own_mib("VmRSS:"), own_mib("VmHWM:"))
}

fn site() -> Site {
    Site::single("B82005", &["01632 960123"], &Hasher::new([1; 32], "44"))
}

/// Mon 4 Nov 2024 08:00 UTC.
const T0: i64 = 1_730_707_200;

fn rec(seq: u64, day: i64, i: i64, per_day: i64) -> CallRecord {
    // calls spread over 08:00-18:30
    let started = Timestamp::from_secs_micros(T0 + day * 86_400 + i * (37_800 / per_day.max(1)), 0);
    let outcome = match seq % 10 {
        0 | 1 => Outcome::Missed,
        2 => Outcome::EndedInIvr,
        _ => Outcome::Answered,
    };
    let answered = (outcome == Outcome::Answered).then(|| started.add(20_000_000 + (seq % 60) as i64 * 1_000_000));
    CallRecord {
        seq,
        call_id: format!("{seq:016x}@bench.invalid"),
        practice: "B82005".into(),
        started,
        queue_joined: Some(started.add(8_000_000)),
        first_ring: Some(started.add(9_000_000)),
        answered,
        ended: started.add(200_000_000),
        ended_by: EndedBy::Caller,
        outcome,
        wait_s: Some(12.0 + (seq % 90) as f64),
        duration_s: answered.map(|_| 180.0),
        abandoned: outcome == Outcome::Missed,
        voicemail: None,
        callback_requested: None,
        callback_made: None,
        offered_to_staff: true,
        legs: 2,
        correlation: Correlation::default(),
        partial: false,
        caller: None,
    }
}

fn fill(dir: &str, days: i64, per_day: i64) {
    let store = Store::open(std::path::Path::new(dir), 8 << 20).expect("open");
    let total = (days * per_day) as u64;
    let window = 10_000.min(total);
    let mut seq = 0u64;
    let mut t = Instant::now();
    let t_all = Instant::now();
    for day in 0..days {
        for i in 0..per_day {
            seq += 1;
            if seq == total - window + 1 {
                t = Instant::now();
            }
            assert!(store.put_call(&rec(seq, day, i, per_day)).expect("write"));
            if seq == window {
                println!("write rate, first {window} calls (fresh store): {:.0} calls/s", window as f64 / t.elapsed().as_secs_f64());
            }
            if seq % 100_000 == 0 {
                eprintln!("  {seq} calls written, {}", mem());
            }
        }
    }
    println!("write rate, last {window} calls (store at {total}): {:.0} calls/s", window as f64 / t.elapsed().as_secs_f64());
    println!("all {total} calls: {:.1} s ({:.0} calls/s), {}", t_all.elapsed().as_secs_f64(), total as f64 / t_all.elapsed().as_secs_f64(), mem());
    let t = Instant::now();
    let today = chrono::NaiveDate::from_ymd_opt(2024, 11, 4).unwrap() + chrono::Duration::days(days);
    let closed = store.close_days(&site(), today).expect("close days");
    println!("closed {} days (figures from the calls) in {:.1} s", closed.len(), t.elapsed().as_secs_f64());
    store.flush().expect("flush");
    println!("store on disk: {} MiB", store.size_on_disk() / (1 << 20));
}

fn read(dir: &str, date: &str) {
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("YYYY-MM-DD");
    println!("before opening: {}", mem());
    let t = Instant::now();
    let store = Store::open(std::path::Path::new(dir), 8 << 20).expect("open");
    println!("opened in {:.2} s ({} calls): {}", t.elapsed().as_secs_f64(), store.call_count(), mem());
    let s = site();
    let t = Instant::now();
    let calls = store.calls_on(&s, date).expect("calls");
    println!("calls of {date}: {} in {:.1} ms{}", calls.len(), t.elapsed().as_secs_f64() * 1e3, reads(&store));
    let t = Instant::now();
    let days = day_figures(&store, date);
    println!("day figures of {date}: {days} in {:.1} ms{}", t.elapsed().as_secs_f64() * 1e3, reads(&store));
    println!("after the reads: {}", mem());
}

fn reads(store: &Store) -> String {
    format!(", {} records read so far", store.records_read())
}

fn day_figures(store: &Store, date: chrono::NaiveDate) -> usize {
    store.days_between(Some(date), Some(date)).expect("days").len()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("fill") if a.len() == 5 => fill(&a[2], a[3].parse().expect("DAYS"), a[4].parse().expect("PER_DAY")),
        Some("read") if a.len() == 4 => read(&a[2], &a[3]),
        _ => {
            eprintln!("usage: store_scale fill DIR DAYS PER_DAY | store_scale read DIR YYYY-MM-DD");
            std::process::exit(2);
        }
    }
}
