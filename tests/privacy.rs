//! Privacy: a capture full of distinctive caller numbers, in every place a
//! number can appear in SIP (From, display name, P-Asserted-Identity,
//! Contact, Request-URI of a callback), replayed into every output. No
//! output contains any of the numbers in any written form; the outputs
//! about calls (calls, metrics, report, NHS CSV) contain no hash of one
//! either. Legs print keyed hashes only.

use cbt_agent::replay::{run_with, Output, ReplayArgs};
use cbt_proto::number::Hasher;
use cbt_proto::synth::{frames, Call, Msg, Script};
use cbt_proto::time::{Timestamp, MILLISECOND};
use std::path::{Path, PathBuf};

const SITE: &str = r#"
[[practice]]
ods = "B82005"
numbers = ["01632 960123"]
[network]
carrier = ["192.0.2.0/24"]
pbx = ["10.20.0.5"]
staff = ["10.20.1.0/24"]
[callbacks]
request = ["callback"]
"#;

/// Caller numbers, each written a different way on the wire.
const CALLERS: [&str; 6] = ["07700900461", "+447700900462", "447700900463", "07700900464", "+447700900465", "07700900466"];

fn digits(n: &str) -> String {
    n.chars().filter(char::is_ascii_digit).collect()
}

/// Every form of a number a leak could take.
fn forms(n: &str) -> Vec<String> {
    let d = digits(n);
    let national = d.strip_prefix("44").map(|r| format!("0{r}")).unwrap_or(d.clone());
    let subscriber = national.trim_start_matches('0').to_string(); // 7700900461
    vec![national.clone(), format!("44{subscriber}"), subscriber, format!("{} {}", &national[..5], &national[5..])]
}

fn leg(n: usize, from: &str, to: &str, caller: &str, callee: &str, start_ms: i64, script: Script) -> Vec<Msg> {
    let t0 = Timestamp::from_secs_micros(1_730_710_800, 0);
    let mut c = Call::numbered(n as u64, from.parse().unwrap(), to.parse().unwrap(), t0.add(start_ms * MILLISECOND), script);
    c.caller = caller.into();
    c.callee = callee.into();
    c.messages()
        .into_iter()
        .map(|mut m| {
            let text = String::from_utf8(m.bytes).unwrap();
            let with_name = text.replace("\"Caller\"", &format!("\"{caller} Smith\""));
            let with_pai = with_name.replacen("Max-Forwards: 70\r\n", &format!("Max-Forwards: 70\r\nP-Asserted-Identity: <tel:{caller}>\r\n"), 1);
            m.bytes = with_pai.into_bytes();
            m
        })
        .collect()
}

fn write_pcap(path: &Path, msgs: &mut [Msg]) {
    msgs.sort_by_key(|m| m.ts);
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
    let mut save = cap.savefile(path).unwrap();
    for (i, m) in msgs.iter().enumerate() {
        let f = frames::udp(m.src, m.dst, i as u16, &m.bytes);
        let us = m.ts.micros();
        let h = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: (us / 1_000_000) as _,
                tv_usec: (us % 1_000_000) as _,
            },
            caplen: f.len() as u32,
            len: f.len() as u32,
        };
        save.write(&pcap::Packet::new(&h, &f));
    }
    save.flush().unwrap();
}

fn replay(dir: &Path, cap: &Path, output: Output, csv: Option<PathBuf>) -> (String, String) {
    let args = ReplayArgs {
        output,
        config: Some(dir.join("site.toml")),
        nhs_csv: csv,
        no_unassigned: false,
        from: None,
        to: None,
        reveal_numbers: false,
        secret_file: Some(dir.join("secret")),
        files: vec![cap.to_path_buf()],
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(args, &mut out, &mut err).unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

/// The capture of distinctive numbers, written into `dir` with the site.
fn numbers_capture(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("site.toml"), SITE).unwrap();
    let (c, p, h, cb) = ("192.0.2.1:5060", "10.20.0.5:5060", "10.20.1.11:5060", "10.20.0.7:5060");
    let answered = |r, a, t| Script::Answered { ring: r, answer: a, talk: t, caller_hangs_up: true };
    let mut msgs = Vec::new();
    msgs.extend(leg(1, c, p, CALLERS[0], "01632960123", 0, answered(50, 100, 60_000)));
    msgs.extend(leg(2, p, h, CALLERS[0], "201", 5_000, answered(100, 3_000, 40_000)));
    msgs.extend(leg(3, c, p, CALLERS[1], "+441632960123", 1_000, Script::Cancelled { ring: 100, cancel: 9_000 }));
    msgs.extend(leg(4, c, p, CALLERS[2], "441632960123", 2_000, Script::Rejected { ring: None, at: 300, code: 486 }));
    msgs.extend(leg(5, c, p, CALLERS[3], "01632960123", 3_000, Script::Answered { ring: 50, answer: 100, talk: 24_000, caller_hangs_up: false }));
    msgs.extend(leg(6, p, cb, CALLERS[3], "callback", 20_000, answered(10, 100, 2_000)));
    msgs.extend(leg(7, p, c, "01632960123", CALLERS[3], 300_000, answered(100, 2_000, 30_000)));
    msgs.extend(leg(8, c, p, CALLERS[4], "01632960999", 4_000, answered(50, 100, 5_000)));
    msgs.extend(leg(9, c, h, CALLERS[5], "01632960123", 5_000, answered(300, 4_000, 10_000)));
    let cap = dir.join("numbers.pcap");
    write_pcap(&cap, &mut msgs);
    cap
}

/// The key the engine hashed numbers with (replay made it on first use).
fn key_of(dir: &Path) -> [u8; 32] {
    let key_hex = std::fs::read_to_string(dir.join("secret")).unwrap();
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&key_hex.trim()[2 * i..2 * i + 2], 16).unwrap();
    }
    key
}

#[test]
fn no_output_carries_a_caller_number_or_its_hash() {
    let dir = std::env::temp_dir().join(format!("cbt-privacy-{}", std::process::id()));
    let cap = numbers_capture(&dir);
    let (calls, e1) = replay(&dir, &cap, Output::Calls, Some(dir.join("csv")));
    let (metrics, e2) = replay(&dir, &cap, Output::Metrics, None);
    let (report, e3) = replay(&dir, &cap, Output::Report, None);
    let (legs, e4) = replay(&dir, &cap, Output::Legs, None);
    let (summary, e5) = replay(&dir, &cap, Output::Summary, None);
    let (staffing, e6) = replay(&dir, &cap, Output::Staffing, None);
    assert!(staffing.lines().count() >= 7 * 48 && staffing.contains("\"staff_erlang_c\""), "{e6}");
    assert_eq!(calls.lines().count(), 6, "{calls}");
    assert!(calls.contains("\"callback_made\":\"20"), "the callback is matched: {calls}");
    let csv: String = ["by_day_and_time.csv", "by_durations.csv", "calls_answered_metric.csv"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join("csv").join(f)).unwrap())
        .collect();

    // the hashes the engine computed for these callers
    let hasher = Hasher::new(key_of(&dir), "44");
    let about_calls = [("calls", &calls), ("metrics", &metrics), ("report", &report), ("csv", &csv), ("staffing", &staffing)];
    let everything = [about_calls.as_slice(), &[("legs", &legs), ("summary", &summary)]].concat();
    let logs = [e1, e2, e3, e4, e5, e6].concat();
    for n in CALLERS {
        for f in forms(n) {
            for (name, text) in &everything {
                assert!(!text.contains(&f), "{name} output contains {f}");
            }
            assert!(!logs.contains(&f), "stderr contains {f}");
        }
        let h = hasher.hash(n);
        for (name, text) in &about_calls {
            assert!(!text.contains(&h), "{name} output contains the hash of {n}");
        }
        assert!(legs.contains(&h), "legs carry the keyed hash instead of the number");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The practice manager's pages and the staffing JSON, served by the daemon
/// from a store holding these calls: no caller number in any form, no hash
/// of one, no Call-ID; nor the practice's own number.
#[test]
fn pages_carry_no_number_hash_or_call_id() {
    let dir = std::env::temp_dir().join(format!("cbt-privacy-page-{}", std::process::id()));
    let cap = numbers_capture(&dir);
    // replay makes the secret; the calls as the daemon would store them
    let _ = replay(&dir, &cap, Output::Calls, None);
    let key = key_of(&dir);
    let config = cbt_agent::config::Config::load(&dir.join("site.toml")).unwrap();
    let (_, book) = cbt_agent::replay::calls_of(&config, key, std::slice::from_ref(&cap));
    let records: Vec<_> = book.records().into_iter().cloned().collect();
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r.caller.is_some() && !r.call_id.is_empty()), "the records hold what must not be shown");
    cbt_tests::page::fill_store(&dir.join("store"), &records);
    let (mut daemon, status) = cbt_tests::page::serve_store(SITE, &dir, "");
    let date = "2024-11-04";
    let mut paths: Vec<String> = ["today", "yesterday", "week", "month", "last-month"].iter().map(|p| format!("/?period={p}&date={date}")).collect();
    paths.extend([format!("/staffing?to={date}"), format!("/staffing?to={date}&weekday=Monday"), "/report?month=2024-11".to_string(), format!("/api/staffing?to={date}"), "/".to_string()]);
    let hasher = Hasher::new(key, "44");
    let mut shown = 0;
    for path in &paths {
        let body = cbt_agent::client::get(&cbt_agent::config::Listen::Tcp(status), path).unwrap_or_else(|e| panic!("{path}: {e:#}"));
        for n in CALLERS.iter().chain(&["01632960123"]) {
            for f in forms(n) {
                assert!(!body.contains(&f), "{path} contains {f}");
            }
            assert!(!body.contains(&hasher.hash(n)), "{path} contains the hash of {n}");
        }
        for r in &records {
            assert!(!body.contains(&r.call_id), "{path} contains a Call-ID");
            assert!(!body.contains(r.caller.as_deref().unwrap()), "{path} contains a caller hash");
        }
        shown += body.len();
    }
    assert!(shown > 50_000);
    daemon.stop().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
