//! The practice manager's page in a real browser: the daemon serves a store
//! holding the bundled morning (two practices through Kamailio, Tuesday
//! 4 November 2025) and a month of synthetic calls before it (1 October to
//! 3 November, across the October clock change), plus a few calls from a
//! minute ago (the live "today"). Headless Chromium loads every period of
//! both practices, the staffing page and the monthly report; the figures in
//! the pages' tables must be those `cbt-agent report --output metrics` and
//! `--output staffing` give for the same dates, the charts must be there,
//! the monthly report must print on one A4 page, and no page may carry a
//! Call-ID or a caller's hash. Screenshots stay in `target/page-shots/`.

use cbt_agent::config::{Config, Listen};
use cbt_proto::call::CallRecord;
use cbt_tests::daemon::agent_bin;
use cbt_tests::page::*;
use cbt_tests::workspace_root;
use chrono::NaiveDate;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

fn get(status: SocketAddr, path: &str) -> String {
    cbt_agent::client::get(&Listen::Tcp(status), path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

/// `cbt-agent report --output OUTPUT` for `from..=to` (through the running
/// service's API).
fn report(config: &Path, output: &str, from: Option<NaiveDate>, to: NaiveDate) -> String {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["report", "--config"]).arg(config).args(["--output", output, "--to", &to.to_string()]);
    if let Some(f) = from {
        cmd.args(["--from", &f.to_string()]);
    }
    let out = cmd.output().expect("run cbt-agent report");
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn same(page: &str, json: &Value) -> bool {
    match json {
        Value::Null => page.is_empty(),
        Value::Number(n) => page.parse::<f64>().is_ok_and(|p| (p - n.as_f64().unwrap()).abs() < 1e-9),
        _ => false,
    }
}

/// The page's DPN cells equal the report's DPN metrics, field by field.
fn check_dpn(dom: &str, dpn: &Value, what: &str) {
    let m = metrics(dom);
    let mut checked = 0;
    for (k, v) in dpn.as_object().unwrap() {
        let cells: Vec<&String> = m.iter().filter(|(key, _)| key == k).map(|(_, v)| v).collect();
        assert!(!cells.is_empty(), "{what}: no {k} on the page");
        for c in cells {
            assert!(same(c, v), "{what}: {k} is {c:?} on the page, {v} in the report");
            checked += 1;
        }
    }
    assert!(checked >= 14, "{what}: {checked} cells");
}

fn check_bands(dom: &str, practice: &Value, what: &str) {
    let by = &practice["by_time_category"];
    for band in cbt_proto::metrics::TIME_CATEGORIES {
        let cells = row_cells(dom, "bands", &format!("data-row=\"{band}\""));
        let n = |i: usize| cells[i].parse::<u64>().unwrap();
        let want = |code: &str| by[code][band].as_u64().unwrap();
        assert_eq!(
            (n(1), n(2), n(3), n(4), n(5), n(6)),
            (want("CBT003"), want("CBT004"), want("CBT002"), want("CBT005"), want("CBT001"), want("CBT006")),
            "{what}: band {band}"
        );
    }
}

#[test]
fn every_period_in_a_real_browser() {
    let Some(chrome) = chromium() else { return };
    let root = workspace_root();
    let tmp = root.join("target/page-test");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let shots = root.join("target/page-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tmp.join("chromium-profile");

    // the calls: the morning, a month before it, and a few a minute ago
    let fixture = root.join("tests/fixtures/morning.toml");
    let config = Config::load(&fixture).unwrap();
    let (site, book) = cbt_agent::replay::calls_of(&config, [7; 32], &[root.join("tests/fixtures/morning.pcap")]);
    let mut records: Vec<CallRecord> = book.records().into_iter().cloned().collect();
    assert_eq!(records.len(), 258);
    let morning = d(2025, 11, 4);
    records.extend(synthetic_calls(&site, d(2025, 10, 1), d(2025, 11, 3), 100_000, 0x5EED));
    let now = cbt_agent::daemon::capture::now();
    let mut live: Vec<CallRecord> = synthetic_calls(&site, d(2025, 11, 3), d(2025, 11, 3), 900_000, 7).into_iter().filter(|c| c.practice == "B82005").take(5).collect();
    for (i, c) in live.iter_mut().enumerate() {
        let shift = now.since(c.started) - (120 - 10 * i as i64) * 1_000_000;
        for t in [Some(&mut c.started), Some(&mut c.ended), c.queue_joined.as_mut(), c.answered.as_mut(), c.first_ring.as_mut(), c.callback_requested.as_mut(), c.voicemail.as_mut()].into_iter().flatten() {
            *t = t.add(shift);
        }
        c.callback_made = None;
    }
    let today = local_date(&site, now);
    let live_today = live.iter().filter(|c| local_date(&site, c.started) == today).count() as u64;
    records.extend(live);
    eprintln!("{} calls in the store", records.len());
    fill_store(&tmp.join("store"), &records);
    let site_toml = std::fs::read_to_string(&fixture).unwrap();
    let extra = format!("[page]\nnational = \"{}\"\n", root.join("packaging/national.toml").display());
    let (mut daemon, status) = serve_store(&site_toml, &tmp, &extra);
    let agent_toml = tmp.join("agent.toml");

    let base = format!("http://{status}");
    let secrets: Vec<String> = records.iter().flat_map(|r| [Some(r.call_id.clone()), r.caller.clone()]).flatten().filter(|s| !s.is_empty()).collect();
    let no_secrets = |text: &str, what: &str| {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} shows {s}");
        }
    };
    let mut timings: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let mut fetch = |path: &str| -> String {
        let t0 = Instant::now();
        let body = get(status, path);
        timings.insert(path.to_string(), (body.len(), t0.elapsed().as_secs_f64() * 1000.0));
        body
    };

    // every period of both practices, the morning taken as today
    use cbt_agent::page::Period;
    for practice in ["B82005", "B82099"] {
        for p in Period::ALL {
            let (from, to) = p.span(morning);
            let path = format!("/?period={}&practice={practice}&date={morning}", p.slug());
            let html = fetch(&path);
            no_secrets(&html, &path);
            let dom = dump_dom(&chrome, &profile, &format!("{base}{path}"));
            let rep: Value = serde_json::from_str(&report(&agent_toml, "metrics", Some(from), to)).unwrap();
            let pr = rep["practices"].as_array().unwrap().iter().find(|x| x["practice"] == practice).unwrap();
            let what = format!("{practice} {}", p.slug());
            check_dpn(&dom, &pr["dpn"], &what);
            check_bands(&dom, pr, &what);
            let calls = pr["dpn"]["call_volume"].as_u64().unwrap();
            assert!(calls > 0, "{what}: no calls");
            for chart in ["chart-bands", "chart-waits", "chart-england"] {
                assert!(dom.contains(&format!("id=\"{chart}\"")), "{what}: no {chart}");
            }
            assert!(dom.matches("<g class=\"bar\"").count() >= 9, "{what}: bars");
            let drawn: u64 = dom
                .split("id=\"chart-bands\"")
                .nth(1)
                .unwrap()
                .split("</svg>")
                .next()
                .unwrap()
                .split("data-outcome=\"")
                .skip(1)
                .map(|s| s.split("data-value=\"").nth(1).unwrap().split('"').next().unwrap().parse::<u64>().unwrap())
                .sum();
            assert_eq!(drawn, calls, "{what}: the band chart draws every call");
            if from != to {
                assert!(dom.contains("id=\"chart-weekdays\""), "{what}: by weekday");
            }
            // shares beside England's
            let answered = pr["dpn"]["answered_calls"].as_u64().unwrap() as f64 / calls as f64;
            let tile = metrics(&dom).into_iter().find(|(k, _)| k == "answered_share").unwrap().1;
            assert!((tile.parse::<f64>().unwrap() - answered).abs() < 1e-9, "{what}: answered share");
            assert!(dom.contains("57.7%") && dom.contains("61.6%"), "{what}: England's figures");
            assert!(dom.contains("Where your set-up changes the picture"));
            if practice == "B82005" && matches!(p, Period::Today | Period::LastMonth) {
                let name = format!("{}-{}", practice, p.slug());
                screenshot(&chrome, &profile, &format!("{base}{path}"), &shots.join(format!("{name}.png")), 1100, 3600);
            }
        }
    }
    // the picture in docs/operations.md
    screenshot(&chrome, &profile, &format!("{base}/?period=last-month&practice=B82005&date={morning}"), &shots.join("overview.png"), 800, 1120);
    // a phone's view of the morning
    screenshot(&chrome, &profile, &format!("{base}/?period=today&practice=B82005&date={morning}"), &shots.join("phone-today.png"), 412, 2600);

    // live today: the calls of a minute ago, refreshing itself
    let html = fetch("/?practice=B82005");
    assert!(html.contains("http-equiv=\"refresh\""), "today refreshes");
    let vol = metrics(&html).into_iter().find(|(k, _)| k == "call_volume").unwrap().1;
    assert_eq!(vol.parse::<u64>().unwrap(), live_today, "today's calls");

    // staffing: the page and the API against `report --output staffing`
    let to = d(2025, 11, 3);
    let cli: Vec<Value> = report(&agent_toml, "staffing", None, to).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cli_rows: Vec<&Value> = cli.iter().collect();
    assert!(cli_rows.len() >= 2 * 7 * 48 && cli_rows.len() / (7 * 48) * (7 * 48) == cli_rows.len(), "each practice x 7 days x 48 half-hours: {}", cli_rows.len());
    let api: Vec<Value> = serde_json::from_str(&fetch(&format!("/api/staffing?to={to}&weeks=4&target_s=120&target_share=0.8"))).unwrap();
    assert_eq!(api.len(), cli_rows.len());
    for (a, c) in api.iter().zip(&cli_rows) {
        assert_eq!(&a, c, "the API and the CLI give the same staffing");
    }
    let monday8 = api.iter().find(|r| r["practice"] == "B82005" && r["weekday"] == "Monday" && r["start"] == "08:00").unwrap();
    eprintln!("B82005 Monday 08:00: {monday8}");
    assert_eq!(monday8["days"], 4, "four Mondays learnt from (7 Oct to 3 Nov)");
    assert!(monday8["staff_erlang_c"].as_u64().unwrap() >= 2);
    let staffing_json = fetch(&format!("/api/staffing?to={to}"));
    no_secrets(&staffing_json, "/api/staffing");
    let path = format!("/staffing?practice=B82005&to={to}&weekday=Monday");
    let html = fetch(&path);
    no_secrets(&html, &path);
    let dom = dump_dom(&chrome, &profile, &format!("{base}{path}"));
    for chart in ["chart-heatmap", "chart-staffing"] {
        assert!(dom.contains(&format!("id=\"{chart}\"")), "staffing: no {chart}");
    }
    let mut rows = 0;
    for r in api.iter().filter(|r| r["practice"] == "B82005" && r["weekday"] == "Monday" && r["calls"].as_u64().unwrap() > 0) {
        let cells = row_cells(&dom, "staffing", &format!("data-start=\"{}\"", r["start"].as_str().unwrap()));
        assert_eq!(cells[4], r["staff_erlang_c"].to_string(), "staffing page at {}", r["start"]);
        assert_eq!(cells[9], r["staff_erlang_a"].as_u64().map_or("–".to_string(), |n| n.to_string()), "Erlang A at {}", r["start"]);
        rows += 1;
    }
    assert!(rows >= 20, "{rows} Monday half-hours with calls");
    // the heat map's cells are the API's arrivals
    let heat = dom.split("id=\"chart-heatmap\"").nth(1).unwrap();
    let cell = heat.split("data-weekday=\"Monday\" data-start=\"08:00\" data-value=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(cell, format!("{:.1}", monday8["arrivals_per_hour"].as_f64().unwrap()));
    screenshot(&chrome, &profile, &format!("{base}{path}"), &shots.join("staffing.png"), 1100, 3000);

    // the monthly report: October's DPN metrics, on one A4 page
    let path = "/report?month=2025-10&practice=B82005";
    let html = fetch(path);
    no_secrets(&html, path);
    let dom = dump_dom(&chrome, &profile, &format!("{base}{path}"));
    let rep: Value = serde_json::from_str(&report(&agent_toml, "metrics", Some(d(2025, 10, 1)), d(2025, 10, 31))).unwrap();
    let pr = rep["practices"].as_array().unwrap().iter().find(|x| x["practice"] == "B82005").unwrap();
    check_dpn(&dom, &pr["dpn"], "monthly report");
    assert!(dom.contains("October 2025"));
    let pdf = shots.join("monthly-report.pdf");
    print_pdf(&chrome, &profile, &format!("{base}{path}"), &pdf);
    assert_eq!(pdf_pages(&pdf), 1, "the monthly report prints on one page ({})", pdf.display());
    screenshot(&chrome, &profile, &format!("{base}{path}"), &shots.join("monthly-report.png"), 900, 1300);

    // page weight and time to make
    eprintln!("{:<60} {:>9} {:>9}", "page", "bytes", "ms");
    for (p, (bytes, ms)) in &timings {
        eprintln!("{p:<60} {bytes:>9} {ms:>9.1}");
        if !p.starts_with("/api/") {
            assert!(*bytes < 200_000, "{p} weighs {bytes} bytes");
        }
    }
    daemon.stop().unwrap();
}
