//! The monthly submission end to end: the bundled morning capture
//! (`tests/fixtures/morning.pcap`, two practices behind one Kamailio)
//! replayed through the library exactly as `cbt-agent replay` does, one
//! day document per practice and date (`DayDocument::new`) POSTed over
//! HTTPS to a running collector backed by a real PostgreSQL, a
//! participation list holding one of the two practices and a practice
//! with no data, then `cbt-collector submission`. Its three files must
//! equal, byte for byte, what the agent's own writer makes of the same
//! calls restricted to the listed practice and Unassigned; the validation
//! report must name the listed practice without data and the practice left
//! out. No caller number of the capture may reach any table or the log.

use cbt_agent::config::Config;
use cbt_proto::metrics::{export, Aggregator, Day, Indicator};
use cbt_proto::site::UNASSIGNED;
use cbt_proto::upload::{AgentInfo, DayDocument, Quality};
use cbt_tests::collector::Setup;
use cbt_tests::postgres::Postgres;
use cbt_tests::workspace_root;
use chrono::{Datelike, NaiveDate, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const AGENT: &str = "morning-pbx";

/// The morning's calls, aggregated as `cbt-agent replay --config` does.
fn replay_morning() -> Aggregator {
    let f = workspace_root().join("tests/fixtures");
    let config = Config::load(&f.join("morning.toml")).expect("morning.toml");
    let (site, book) = cbt_agent::replay::calls_of(&config, [7u8; 32], &[f.join("morning.pcap")]);
    book.aggregate(&site)
}

/// One final document per practice and date of the replay, as an agent
/// makes them when the day closes.
fn documents(agg: &Aggregator) -> Vec<DayDocument> {
    let (from, to) = agg.span().expect("calls");
    let empty = Day::new(agg.wait_buckets(), agg.duration_buckets());
    let mut out = Vec::new();
    for (practice, codes) in agg.practice_list() {
        for date in from.iter_days().take_while(|d| *d <= to) {
            let day = agg.days().get(&(practice.clone(), date)).unwrap_or(&empty);
            let mut d = DayDocument::new(
                AgentInfo { id: AGENT.into(), version: env!("CARGO_PKG_VERSION").into() },
                &practice,
                &codes,
                date,
                "Europe/London",
                agg.wait_buckets(),
                agg.duration_buckets(),
                day,
                Quality { sip_messages: 5000, parse_errors: 0, ..Quality::default() },
            );
            d.revision = 1;
            d.is_final = true;
            d.generated_at = Utc::now().to_rfc3339();
            out.push(d);
        }
    }
    out
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn submission(setup: &Setup, month: &str, dir: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["submission", "--month", month, "--dir", dir.to_str().unwrap()];
    args.extend(extra);
    let out = setup.run(&args);
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs of "7700900" and three digits: the callers of the morning capture.
fn caller_numbers(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = text[i..].find("7700900") {
        let at = i + p;
        let end = at + 10;
        if end <= b.len() && b[at + 7..end].iter().all(u8::is_ascii_digit) {
            found.push(text[at..end].to_string());
        }
        i = at + 7;
    }
    found
}

#[test]
fn the_months_files_equal_the_agents_own_for_the_listed_practice_and_the_report_names_what_is_missing() {
    let agg = replay_morning();
    let (from, to) = agg.span().expect("the morning has calls");
    let practices: Vec<String> = agg.practice_list().into_iter().map(|p| p.0).collect();
    assert!(practices.contains(&"B82005".to_string()) && practices.contains(&"B82099".to_string()), "{practices:?}");
    let month = format!("{:04}-{:02}", from.year(), from.month());
    assert_eq!((to.year(), to.month()), (from.year(), from.month()), "the morning is within one month");

    let work = workspace_root().join("target/collector-tests/submission");
    let Some(pg) = Postgres::start_or_skip() else { return };
    let setup = Setup::for_postgres(&work, &pg, "cbt");
    let c = setup.start();
    let token = setup.add_token(AGENT, &["B82005", "B82099"]);

    // the agent uploads its days over HTTPS
    let docs = documents(&agg);
    for d in &docs {
        let key = format!("{}:{}:{}:{}", d.agent.id, d.practice, d.date, d.revision);
        let r = c.post_day(&token, &key, serde_json::to_vec(d).unwrap());
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap();
        assert_eq!((status, v["result"].as_str()), (200, Some("stored")), "{} {}: {v}", d.practice, d.date);
    }
    assert_eq!(pg.psql("cbt", "SELECT count(*) FROM documents").trim(), docs.len().to_string());

    // NHS England's list: B82005 and a practice without an agent (B82099 is not listed)
    let list = work.join("participation.csv");
    std::fs::write(&list, "\u{feff}ORG_NAME,Practice_Code,ICB_CODE\r\n\"Surgery A, The\",B82005,QWO\r\nNo Agent Surgery,A99999,QWO\r\nTypo Surgery,B8200,QWO\r\n").unwrap();
    let out = setup.run(&["participation", "import", "--month", &month, list.to_str().unwrap()]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "an invalid line is reported (exit 1): {said}");
    assert!(said.contains("2 practices imported") && said.contains("participation.csv:4") && said.contains("B8200"), "{said}");
    assert_eq!(pg.psql("cbt", "SELECT string_agg(practice, ',' ORDER BY practice) FROM participation").trim(), "A99999,B82005");

    // the submission
    let dir = work.join("out");
    let (code, said) = submission(&setup, &month, &dir, &[]);
    assert_eq!(code, 1, "written with warnings (a listed practice without data, another left out, days missing): {said}");
    let has_unassigned = practices.iter().any(|p| p == UNASSIGNED);
    let expected = |with_unassigned: bool| {
        let fig = export::Figures {
            practices: agg.practice_list().into_iter().filter(|(p, _)| p == "B82005" || (with_unassigned && p == UNASSIGNED)).collect(),
            ..agg.figures()
        };
        export::files(&fig, from, to)
    };
    for (name, want) in expected(true) {
        let got = read(&dir, name);
        assert!(got == want, "{name} differs from the agent's writer:\n--- collector\n{}\n--- agent\n{}", &got[..got.len().min(2000)], &want[..want.len().min(2000)]);
        assert!(got.lines().skip(1).all(|l| !l.contains("B82099")), "{name}: an unlisted practice was written");
        assert!(got.lines().count() > 1, "{name} has rows");
    }
    let v: Value = serde_json::from_str(&read(&dir, "validation.json")).unwrap();
    assert_eq!(v["verdict"], "warnings");
    assert_eq!(v["listed_without_data"], serde_json::json!(["A99999"]), "{v:#}");
    assert_eq!(v["not_listed_left_out"][0]["practice"], "B82099", "{v:#}");
    assert!(v["not_reconciled"].as_array().unwrap().is_empty(), "{v:#}");
    assert!(v["not_final"].as_array().unwrap().is_empty(), "{v:#}");
    let missing = v["missing_days"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{v:#}");
    assert_eq!(missing[0]["practice"], "B82005");
    assert!(!missing[0]["dates"].as_array().unwrap().contains(&Value::String(from.to_string())), "the morning's date is not missing");
    let txt = read(&dir, "validation.txt");
    assert!(txt.contains("WRITTEN WITH WARNINGS") && txt.contains("A99999") && txt.contains("B82099: 1 day(s)"), "{txt}");
    assert!(txt.contains("Listed practices with no data") && txt.contains("left out"), "{txt}");

    // without Unassigned
    let dir2 = work.join("out-no-unassigned");
    let (code, said) = submission(&setup, &month, &dir2, &["--no-unassigned"]);
    assert_eq!(code, 1, "{said}");
    for (name, want) in expected(false) {
        assert!(read(&dir2, name) == want, "{name} (--no-unassigned) differs from the agent's writer");
    }
    if has_unassigned {
        assert!(read(&dir2, "validation.txt").contains("Unassigned left out"));
    }

    // a month without a participation list is not written
    let dir3 = work.join("out-other-month");
    let (code, said) = submission(&setup, "2020-01", &dir3, &[]);
    assert_eq!(code, 2, "{said}");
    assert!(read(&dir3, "validation.txt").contains("NOT WRITTEN: no participation list for 2020-01"));
    assert!(!dir3.join(export::BY_DAY_AND_TIME_FILE).exists());

    // privacy: the capture is full of caller numbers; none reached the collector
    let capture = String::from_utf8_lossy(&std::fs::read(workspace_root().join("tests/fixtures/morning.pcap")).unwrap()).into_owned();
    assert!(caller_numbers(&capture).len() > 100, "the check below would prove nothing");
    let dump = pg.dump("cbt");
    assert!(dump.contains("B82005") && dump.contains("CBT001"), "the dump holds the documents");
    assert_eq!(caller_numbers(&dump), Vec::<String>::new(), "caller numbers in the database");
    let mut c = c;
    c.stop();
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(log.contains("cbt-collector listening"), "{log}");
    assert_eq!(caller_numbers(&log), Vec::<String>::new(), "caller numbers in the collector's log");
    for f in [&dir, &dir2] {
        for e in std::fs::read_dir(f).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            assert_eq!(caller_numbers(&text), Vec::<String>::new(), "caller numbers in {}", e.path().display());
        }
    }
}

/// A document like the morning's but with other figures.
fn simple(agent: &str, practice: &str, date: NaiveDate, answered: u64, edges: &[u32]) -> DayDocument {
    let wait = cbt_proto::metrics::Buckets::new(edges).unwrap();
    let duration = cbt_proto::metrics::Buckets::new(edges).unwrap();
    let mut day = Day::new(&wait, &duration);
    *day.band_mut(Indicator::Cbt001, 4) = answered + 1;
    *day.band_mut(Indicator::Cbt003, 4) = answered;
    *day.band_mut(Indicator::Cbt004, 4) = 1;
    day.answered_by_wait[1][1] = answered;
    day.answered_by_duration[2] = answered;
    day.answered_waits = vec![20.0; answered as usize];
    day.durations = vec![50.0; answered as usize];
    day.partial = 1;
    let mut d = DayDocument::new(
        AgentInfo { id: agent.into(), version: "0.2.0".into() },
        practice,
        &Default::default(),
        date,
        "Europe/London",
        &wait,
        &duration,
        &day,
        Quality { gap_minutes: 2.5, ..Quality::default() },
    );
    d.revision = 1;
    d.is_final = answered != 3;
    d.generated_at = Utc::now().to_rfc3339();
    d
}

#[test]
fn several_agents_are_summed_and_different_bucket_edges_are_refused() {
    let work: PathBuf = workspace_root().join("target/collector-tests/submission-sum");
    let Some(pg) = Postgres::start_or_skip() else { return };
    let setup = Setup::for_postgres(&work, &pg, "cbt");
    let c = setup.start();
    let t1 = setup.add_token("feed-a", &["B82005"]);
    let t2 = setup.add_token("feed-b", &["B82005"]);
    let date = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    let edges = cbt_proto::site::DEFAULT_EDGES;
    let a = simple("feed-a", "B82005", date, 2, &edges);
    let b = simple("feed-b", "B82005", date, 3, &edges);
    for (t, d) in [(&t1, &a), (&t2, &b)] {
        let key = format!("{}:{}:{}:{}", d.agent.id, d.practice, d.date, d.revision);
        assert_eq!(c.post_day(t, &key, serde_json::to_vec(d).unwrap()).status().as_u16(), 200);
    }
    let list = work.join("list.csv");
    std::fs::write(&list, "PRACTICE_CODE\nB82005\n").unwrap();
    assert!(setup.run(&["participation", "import", "--month", "2026-03", list.to_str().unwrap()]).status.success());
    let dir = work.join("out");
    let (code, said) = submission(&setup, "2026-03", &dir, &[]);
    assert_eq!(code, 1, "{said}");
    // expected: the agent's writer on the sum of the two days
    let wait = cbt_proto::metrics::Buckets::new(&edges).unwrap();
    let mut sum = a.to_day();
    sum.merge(&b.to_day());
    let days: BTreeMap<(String, NaiveDate), Day> = [(("B82005".to_string(), date), sum)].into_iter().collect();
    let fig = export::Figures { practices: vec![("B82005".into(), Default::default())], days: &days, wait: &wait, duration: &wait };
    for (name, want) in export::files(&fig, date, date) {
        assert!(read(&dir, name) == want, "{name}: not the sum of both agents");
    }
    assert!(read(&dir, export::BY_DAY_AND_TIME_FILE).contains("2026-03-10,B82005,CBT001,12:00-13:59,7\r\n"));
    let v: Value = serde_json::from_str(&read(&dir, "validation.json")).unwrap();
    assert_eq!(v["several_agents"][0]["agents"], serde_json::json!(["feed-a", "feed-b"]), "{v:#}");
    assert_eq!(v["not_final"][0]["agent"], "feed-b", "{v:#}");
    assert_eq!(v["quality"][0]["partial_calls"], 2, "{v:#}");
    assert_eq!(v["quality"][0]["gap_minutes"], 5.0, "{v:#}");
    let txt = read(&dir, "validation.txt");
    assert!(txt.contains("feed-a + feed-b") && txt.contains("2 partial call(s)"), "{txt}");

    // another agent with other bucket edges: nothing can be written
    let t3 = setup.add_token("feed-c", &["B82005"]);
    let other = simple("feed-c", "B82005", date.succ_opt().unwrap(), 1, &[0, 20, 60, 300]);
    let key = format!("{}:{}:{}:{}", other.agent.id, other.practice, other.date, other.revision);
    assert_eq!(c.post_day(&t3, &key, serde_json::to_vec(&other).unwrap()).status().as_u16(), 200);
    let (code, said) = submission(&setup, "2026-03", &dir, &[]);
    assert_eq!(code, 2, "{said}");
    let txt = read(&dir, "validation.txt");
    assert!(txt.contains("NOT WRITTEN") && txt.contains("different bucket edges") && txt.contains("[0, 20, 60, 300]"), "{txt}");
    for name in submission_files() {
        assert!(!dir.join(name).exists(), "{name} of the earlier run was left beside a NOT WRITTEN report");
    }
}

fn submission_files() -> [&'static str; 3] {
    [export::BY_DAY_AND_TIME_FILE, export::BY_DURATIONS_FILE, export::CALLS_ANSWERED_FILE]
}
