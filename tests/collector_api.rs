//! cbt-collector's HTTPS API against a real PostgreSQL (started by the
//! test, tests/support/postgres.rs) with a test CA made at test time:
//! every response of `POST /v1/days`, the revision rules, token binding
//! and revocation, the audit of every request, the database going away and
//! coming back, the status endpoints, and a database migrated by a newer
//! collector.

use cbt_proto::metrics::{Buckets, Day, Indicator};
use cbt_proto::site::{OrgCodes, DEFAULT_EDGES};
use cbt_proto::upload::{AgentInfo, DayDocument, Quality};
use cbt_tests::collector::Setup;
use cbt_tests::postgres::Postgres;
use cbt_tests::workspace_root;
use chrono::{NaiveDate, Utc};
use serde_json::Value;
use std::path::PathBuf;

fn work(name: &str) -> PathBuf {
    workspace_root().join("target/collector-tests").join(name)
}

fn today() -> NaiveDate {
    Utc::now().with_timezone(&chrono_tz::Europe::London).date_naive()
}

/// A valid document: `calls` calls answered at 10:xx with a 12 s wait.
fn doc(agent: &str, practice: &str, date: NaiveDate, revision: u64, calls: u64) -> DayDocument {
    let wait = Buckets::new(&DEFAULT_EDGES).unwrap();
    let duration = Buckets::new(&DEFAULT_EDGES).unwrap();
    let mut day = Day::new(&wait, &duration);
    *day.band_mut(Indicator::Cbt001, 3) = calls;
    *day.band_mut(Indicator::Cbt003, 3) = calls;
    day.answered_by_wait[1][1] = calls;
    day.answered_by_duration[3] = calls;
    day.answered_waits = vec![12.0; calls as usize];
    day.durations = vec![75.5; calls as usize];
    let mut d = DayDocument::new(
        AgentInfo { id: agent.into(), version: "0.2.0".into() },
        practice,
        &OrgCodes::default(),
        date,
        "Europe/London",
        &wait,
        &duration,
        &day,
        Quality { sip_messages: 1000, ..Quality::default() },
    );
    d.revision = revision;
    d.generated_at = Utc::now().to_rfc3339();
    d
}

fn key(d: &DayDocument) -> String {
    format!("{}:{}:{}:{}", d.agent.id, d.practice, d.date, d.revision)
}

fn body(d: &DayDocument) -> Vec<u8> {
    serde_json::to_vec(d).unwrap()
}

fn json(r: reqwest::blocking::Response) -> (u16, Value, Option<String>) {
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v, retry)
}

fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.psql("cbt", sql).trim().parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn uploads_follow_the_revision_rules_and_every_refusal_is_clear_stored_nowhere_and_audited() {
    let Some(pg) = Postgres::start_or_skip() else { return };
    let setup = Setup::for_postgres(&work("api"), &pg, "cbt");
    let c = setup.start();
    let token = setup.add_token("pbx-01", &["B82005"]);
    assert!(token.starts_with("cbt_") && token.len() >= 4 + 43, "{token}");
    let other = setup.add_token("pbx-02", &["B82099"]);
    let date = today() - chrono::Days::new(2);

    // ping: who am I
    let r = c.client.get(format!("{}/v1/ping", c.base)).bearer_auth(&token).send().unwrap();
    let (st, v, _) = json(r);
    assert_eq!((st, v["agent"].as_str(), v["practices"].clone()), (200, Some("pbx-01"), serde_json::json!(["B82005"])));
    let (st, _, _) = json(c.client.get(format!("{}/v1/ping", c.base)).bearer_auth("cbt_nope").send().unwrap());
    assert_eq!(st, 401);

    // stored, duplicate, a higher revision, superseded, conflict
    let d1 = doc("pbx-01", "B82005", date, 1, 5);
    let (st, v, _) = json(c.post_day(&token, &key(&d1), body(&d1)));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, serde_json::json!({"result": "stored", "practice": "B82005", "date": date.to_string(), "revision": 1, "stored_revision": 1}));
    let mut again = d1.clone();
    again.generated_at = Utc::now().to_rfc3339(); // sent again later: same figures
    let (st, v, _) = json(c.post_day(&token, &key(&again), body(&again)));
    assert_eq!((st, v["result"].as_str()), (200, Some("duplicate")), "{v}");
    let d3 = doc("pbx-01", "B82005", date, 3, 7);
    let (st, v, _) = json(c.post_day(&token, &key(&d3), body(&d3)));
    assert_eq!((st, v["result"].as_str(), v["stored_revision"].as_i64()), (200, Some("stored"), Some(3)), "{v}");
    let d2 = doc("pbx-01", "B82005", date, 2, 6);
    let (st, v, _) = json(c.post_day(&token, &key(&d2), body(&d2)));
    assert_eq!((st, v["result"].as_str(), v["revision"].as_i64(), v["stored_revision"].as_i64()), (200, Some("superseded"), Some(2), Some(3)), "{v}");
    let d3x = doc("pbx-01", "B82005", date, 3, 8);
    let (st, v, _) = json(c.post_day(&token, &key(&d3x), body(&d3x)));
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("higher revision"), "{v}");
    assert_eq!(v["stored_revision"].as_i64(), Some(3));
    // a final copy of the stored revision marks it final
    let mut d3f = d3.clone();
    d3f.is_final = true;
    let (st, v, _) = json(c.post_day(&token, &key(&d3f), body(&d3f)));
    assert_eq!((st, v["result"].as_str()), (200, Some("duplicate")), "{v}");
    let row = pg.psql("cbt", &format!("SELECT revision, is_final, calls, duplicates FROM documents WHERE practice = 'B82005' AND day = '{date}'"));
    assert_eq!(row.trim(), "3|t|7|2", "the stored document is revision 3, final, 7 calls, 2 duplicates");
    let stored: DayDocument = DayDocument::parse(pg.psql("cbt", &format!("SELECT body FROM documents WHERE day = '{date}'")).trim().as_bytes()).unwrap();
    assert_eq!(stored.revision, 3);
    assert!(stored.is_final);
    // Unassigned is always allowed
    let du = doc("pbx-01", "Unassigned", date, 1, 2);
    let (st, v, _) = json(c.post_day(&token, &key(&du), body(&du)));
    assert_eq!((st, v["result"].as_str()), (200, Some("stored")), "{v}");
    // two agents, one practice-date: stored apart
    let o1 = doc("pbx-02", "B82099", date, 1, 1);
    assert_eq!(json(c.post_day(&other, &key(&o1), body(&o1))).0, 200);
    let documents = count(&pg, "SELECT count(*) FROM documents");
    assert_eq!(documents, 3);

    // refusals: (what, token, key, content type, body, status, words in the error)
    let good = doc("pbx-01", "B82005", date - chrono::Days::new(1), 1, 3);
    let good_body = body(&good);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = serde_json::to_value(&good).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let future = doc("pbx-01", "B82005", today() + chrono::Days::new(2), 1, 1);
    let tomorrow = doc("pbx-01", "B82005", today() + chrono::Days::new(1), 1, 1);
    let not_bound = doc("pbx-01", "B82099", date, 1, 1);
    let not_mine = doc("pbx-02", "B82005", date, 1, 1);
    let big = {
        let mut d = good.clone();
        d.dpn.durations_s = vec![123.456789; 200_000];
        body(&d)
    };
    let revoked_token = setup.add_token("pbx-03", &["B82005"]);
    let out = setup.run(&["token", "revoke", "--agent", "pbx-03"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    type Case<'a> = (&'a str, Option<&'a str>, String, &'a str, Vec<u8>, u16, &'a [&'a str]);
    let k = key(&good);
    let cases: Vec<Case> = vec![
        ("no token", None, k.clone(), "application/json", good_body.clone(), 401, &["Authorization"]),
        ("unknown token", Some("cbt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), k.clone(), "application/json", good_body.clone(), 401, &["unknown token"]),
        ("revoked token", Some(&revoked_token), k.clone(), "application/json", good_body.clone(), 401, &["revoked"]),
        ("not JSON type", Some(&token), k.clone(), "text/plain", good_body.clone(), 415, &["application/json"]),
        ("truncated JSON", Some(&token), k.clone(), "application/json", good_body[..good_body.len() / 2].to_vec(), 400, &["not a day document"]),
        ("wrong version", Some(&token), k.clone(), "application/json", with(&|v| v["version"] = 2.into()), 400, &["version 2", "upgrade the collector"]),
        ("wrong schema", Some(&token), k.clone(), "application/json", with(&|v| v["schema"] = "x/day".into()), 400, &["schema"]),
        ("negative count", Some(&token), k.clone(), "application/json", with(&|v| v["by_time"]["CBT001"]["10:00-11:59"] = (-3).into()), 400, &["not a day document"]),
        ("not an ODS code", Some(&token), "pbx-01:B8200:2026-01-01:1".into(), "application/json", with(&|v| v["practice"] = "B8200".into()), 400, &["ODS"]),
        ("unknown member", Some(&token), k.clone(), "application/json", with(&|v| v["caller"] = "07700900123".into()), 400, &["unknown field"]),
        ("no idempotency key", Some(&token), String::new(), "application/json", good_body.clone(), 400, &["Idempotency-Key"]),
        ("wrong idempotency key", Some(&token), format!("pbx-01:B82005:{}:9", good.date), "application/json", good_body.clone(), 400, &["does not match"]),
        ("future date", Some(&token), key(&future), "application/json", body(&future), 400, &["future"]),
        ("practice not bound", Some(&token), key(&not_bound), "application/json", body(&not_bound), 403, &["B82099", "token add"]),
        ("another agent's document", Some(&token), key(&not_mine), "application/json", body(&not_mine), 403, &["pbx-02", "agent_id"]),
        ("huge body", Some(&token), k.clone(), "application/json", big, 413, &["body_limit"]),
    ];
    let audit_before = count(&pg, "SELECT count(*) FROM audit");
    for (what, tok, idem, ctype, b, want, words) in &cases {
        let mut req = c.client.post(format!("{}/v1/days", c.base)).header("Content-Type", *ctype).body(b.clone());
        if let Some(t) = tok {
            req = req.bearer_auth(t);
        }
        if !idem.is_empty() {
            req = req.header("Idempotency-Key", idem.as_str());
        }
        let r = req.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        if *want == 401 {
            assert!(r.headers().contains_key("www-authenticate"), "{what}: no WWW-Authenticate");
        }
        let (st, v, _) = json(r);
        assert_eq!(st, *want, "{what}: {v}");
        let e = v["error"].as_str().unwrap_or_else(|| panic!("{what}: no error: {v}"));
        for w in *words {
            assert!(e.contains(w), "{what}: {w:?} not in {e:?}");
        }
    }
    assert_eq!(count(&pg, "SELECT count(*) FROM documents"), documents, "nothing stored for any refused request");
    assert_eq!(count(&pg, "SELECT count(*) FROM audit") - audit_before, cases.len() as i64, "every refused request audited");
    // tomorrow (in the document's timezone) is accepted: a clock a little ahead
    let (st, v, _) = json(c.post_day(&token, &key(&tomorrow), body(&tomorrow)));
    assert_eq!((st, v["result"].as_str()), (200, Some("stored")), "{v}");

    // the audit names what it knows
    let a = pg.psql("cbt", "SELECT status, result, coalesce(agent, '-'), coalesce(practice, '-'), coalesce(token_id::text, '-'), host(remote) FROM audit ORDER BY id");
    let rows: Vec<&str> = a.lines().collect();
    assert!(rows.contains(&"200|stored|pbx-01|B82005|1|127.0.0.1"), "{a}");
    assert!(rows.contains(&"200|duplicate|pbx-01|B82005|1|127.0.0.1"), "{a}");
    assert!(rows.contains(&"200|superseded|pbx-01|B82005|1|127.0.0.1"), "{a}");
    assert!(rows.contains(&"409|conflict|pbx-01|B82005|1|127.0.0.1"), "{a}");
    assert!(rows.contains(&"403|forbidden|pbx-01|B82099|1|127.0.0.1"), "token binding refusal audited: {a}");
    assert!(rows.contains(&"401|unauthorized|pbx-03|B82005|3|127.0.0.1"), "revoked token audited with its agent: {a}");
    assert!(rows.iter().any(|r| r.starts_with("401|unauthorized|-|B82005|-|")), "unauthenticated request audited: {a}");
    assert!(rows.contains(&"413|too_large|pbx-01|B82005|1|127.0.0.1"), "{a}");
    let reasons = pg.psql("cbt", "SELECT reason FROM audit WHERE result = 'bad_request'");
    assert!(!reasons.contains("07700900123"), "a number in a refused document reached the audit: {reasons}");
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(!log.contains("07700900123"), "a number in a refused document reached the log");
    assert!(!log.contains(&token) && !log.contains(&other), "a token in the log");
    let dump = pg.dump("cbt");
    assert!(!dump.contains(&token), "a token in the database");

    // token list shows hashes' owners, never tokens
    let out = setup.run(&["token", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("pbx-01") && listed.contains("pbx-03") && !listed.contains("cbt_"), "{listed}");
}

#[test]
fn a_database_that_goes_away_gives_503_with_retry_after_then_uploads_resume() {
    let Some(mut pg) = Postgres::start_or_skip() else { return };
    let setup = Setup::for_postgres(&work("db-away"), &pg, "cbt");
    let c = setup.start();
    let token = setup.add_token("pbx-01", &["B82005"]);
    let date = today() - chrono::Days::new(1);
    let d1 = doc("pbx-01", "B82005", date, 1, 4);
    assert_eq!(json(c.post_day(&token, &key(&d1), body(&d1))).0, 200);

    pg.stop();
    let d2 = doc("pbx-01", "B82005", date, 2, 5);
    let t0 = std::time::Instant::now();
    let (st, v, retry) = json(c.post_day(&token, &key(&d2), body(&d2)));
    assert_eq!(st, 503, "{v}");
    assert!(retry.is_some_and(|r| r.parse::<u32>().is_ok_and(|s| s > 0)), "Retry-After");
    assert!(v["error"].as_str().unwrap().contains("try again"), "{v}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(15), "503 came after {:?}", t0.elapsed());
    let h = c.client.get(format!("{}/healthz", c.base)).send().unwrap();
    assert_eq!(h.status().as_u16(), 503);
    let m = c.client.get(format!("{}/metrics", c.base)).send().unwrap().text().unwrap();
    assert!(m.contains("cbt_collector_database_up 0"), "{m}");

    pg.restart();
    let mut ok = None;
    for _ in 0..100 {
        let (st, v, _) = json(c.post_day(&token, &key(&d2), body(&d2)));
        if st == 200 {
            ok = Some(v);
            break;
        }
        assert_eq!(st, 503, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let v = ok.expect("accepted once PostgreSQL is back");
    assert_eq!((v["result"].as_str(), v["stored_revision"].as_i64()), (Some("stored"), Some(2)), "{v}");
    assert_eq!(c.client.get(format!("{}/healthz", c.base)).send().unwrap().status().as_u16(), 200);
    assert_eq!(pg.psql("cbt", "SELECT revision FROM documents").trim(), "2");
    // the refused upload was not audited (the database was away) but the log says so
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(log.contains("database is unavailable"), "{log}");
}

#[test]
fn status_page_api_and_metrics_show_every_practice_worst_first() {
    let Some(pg) = Postgres::start_or_skip() else { return };
    let setup = Setup::for_postgres(&work("status"), &pg, "cbt");
    let c = setup.start();
    let t1 = setup.add_token("pbx-01", &["B82005"]);
    let _t2 = setup.add_token("pbx-02", &["B82099"]); // never uploads
    let date = today();
    let d = doc("pbx-01", "B82005", date, 1, 3);
    assert_eq!(json(c.post_day(&t1, &key(&d), body(&d))).0, 200);
    assert_eq!(json(c.post_day(&t1, &key(&d), body(&d))).0, 200);

    let api: Value = c.client.get(format!("{}/api/practices", c.base)).send().unwrap().json().unwrap();
    let ps = api["practices"].as_array().unwrap();
    assert_eq!(ps.len(), 2, "{api}");
    assert_eq!(ps[0]["practice"], "B82099", "the practice that never uploaded comes first: {api}");
    assert_eq!(ps[0]["level"], "bad");
    assert_eq!(ps[1]["practice"], "B82005");
    assert_eq!(ps[1]["agents"], serde_json::json!(["pbx-01"]));
    assert!(ps[1]["last_upload_age_s"].as_f64().unwrap() < 60.0);

    let page = c.client.get(format!("{}/", c.base)).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().unwrap();
    assert!(html.contains("B82005") && html.contains("B82099") && html.contains("pbx-01"), "{html}");
    assert!(html.find("B82099") < html.find("B82005"), "worst first");
    assert!(!html.contains("<script"), "readable without JavaScript");

    let m = c.client.get(format!("{}/metrics", c.base)).send().unwrap().text().unwrap();
    for want in [
        "cbt_collector_requests_total{result=\"stored\"} 1",
        "cbt_collector_requests_total{result=\"duplicate\"} 1",
        "cbt_collector_documents_stored_total 1",
        "cbt_collector_duplicates_absorbed_total 1",
        "cbt_collector_database_up 1",
        "cbt_collector_practice_last_upload_age_seconds{practice=\"B82005\"}",
        "cbt_collector_practice_days_complete{practice=\"B82005\"} 0",
    ] {
        assert!(m.contains(want), "{want} not in\n{m}");
    }
    let (st, _, _) = json(c.client.get(format!("{}/nowhere", c.base)).send().unwrap());
    assert_eq!(st, 404);
    // plain HTTP to the HTTPS port is not served
    let plain = reqwest::blocking::Client::new().get(format!("http://{}/healthz", setup.listen)).send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[test]
fn a_database_migrated_by_a_newer_collector_is_refused_and_config_errors_name_the_line() {
    let Some(pg) = Postgres::start_or_skip() else { return };
    let setup = Setup::for_postgres(&work("migrations"), &pg, "cbt");
    // migrate (any command does), then pretend a newer collector came by
    let out = setup.run(&["token", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pg.psql("cbt", "SELECT string_agg(version::text, ',') FROM cbt_schema_migrations").trim(), "1");
    // migrating again is a no-op
    assert!(setup.run(&["token", "list"]).status.success());
    pg.psql("cbt", "INSERT INTO cbt_schema_migrations (version, name, applied_by) VALUES (99, 'future', 'cbt-collector 9.0.0')");
    let out = std::process::Command::new(&setup.bin).args(["serve", "--config"]).arg(&setup.config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("schema version 99") && e.contains("newer cbt-collector") && e.contains("upgrade"), "{e}");

    let bad = setup.dir.join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:8443\"\ndatabase = \"postgresql://localhost/cbt\"\npool_size = -1\nbody_limit = \"huge\"\n").unwrap();
    let out = std::process::Command::new(&setup.bin).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("bad.toml:3: pool_size") && e.contains("bad.toml:4: body_limit") && e.contains("fix:"), "{e}");

    // a database that is not there: a clear message, exit 2
    let nowhere = setup.dir.join("nowhere.toml");
    std::fs::write(&nowhere, format!("listen = \"127.0.0.1:1\"\ndatabase = \"postgresql://postgres@127.0.0.1:{}/cbt\"\n", cbt_tests::daemon::free_tcp_port())).unwrap();
    let out = std::process::Command::new(&setup.bin).args(["token", "list", "--config"]).arg(&nowhere).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot reach the database") && e.contains("check that PostgreSQL runs"), "{e}");
}

#[test]
fn the_database_connection_is_encrypted_and_verified_when_the_url_asks_for_it() {
    let Some(mut pg) = Postgres::start_or_skip() else { return };
    let dir = work("db-tls");
    let _ = std::fs::remove_dir_all(&dir);
    let ca = cbt_tests::tls::TestCa::new(&dir.join("pg-tls"));
    pg.enable_tls(&ca);
    let url = format!("{}?sslmode=require", pg.create_database("cbt"));
    let setup = Setup::new(&dir.join("collector"), &url, &format!("database_ca = \"{}\"\n", ca.ca_cert.display()));
    let c = setup.start();
    let token = setup.add_token("pbx-01", &["B82005"]);
    let d = doc("pbx-01", "B82005", today(), 1, 2);
    assert_eq!(json(c.post_day(&token, &key(&d), body(&d))).0, 200);
    let ssl = pg.psql("cbt", "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'cbt-collector'");
    assert_eq!(ssl.trim(), "t", "the collector's connections use TLS");

    // a certificate no trusted CA signed: refused, and said so
    let untrusted = Setup::new(&dir.join("untrusted"), &url, "");
    let out = untrusted.run(&["token", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot reach the database") && e.to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn two_collectors_on_one_database_keep_the_highest_revision_whatever_the_order() {
    let Some(pg) = Postgres::start_or_skip() else { return };
    let url = pg.create_database("cbt");
    let a = Setup::new(&work("two-a"), &url, "");
    let b = Setup::new(&work("two-b"), &url, "");
    let ca = a.start();
    let cb = b.start();
    let token = a.add_token("pbx-01", &["B82005"]);
    let date = today() - chrono::Days::new(1);
    // revisions 1..=30, each sent to both collectors, from 8 threads at once
    let mut jobs: Vec<(u64, bool)> = (1..=30u64).flat_map(|r| [(r, true), (r, false)]).collect();
    // a fixed shuffle: later revisions often arrive before earlier ones
    for i in (1..jobs.len()).rev() {
        jobs.swap(i, (i * 7919 + 13) % (i + 1));
    }
    let jobs = std::sync::Mutex::new(jobs);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let Some((rev, to_a)) = jobs.lock().unwrap().pop() else { break };
                let d = doc("pbx-01", "B82005", date, rev, rev);
                let c = if to_a { &ca } else { &cb };
                let (st, v, _) = json(c.post_day(&token, &key(&d), body(&d)));
                results.lock().unwrap().push((rev, st, v["result"].as_str().unwrap_or("").to_string()));
            });
        }
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), 60);
    for (rev, st, result) in &results {
        assert_eq!(*st, 200, "revision {rev}: {result}");
        assert!(["stored", "duplicate", "superseded"].contains(&result.as_str()), "revision {rev}: {result}");
    }
    for rev in 1..=30u64 {
        let stored = results.iter().filter(|(r, _, res)| *r == rev && res == "stored").count();
        assert!(stored <= 1, "revision {rev} stored {stored} times");
    }
    assert_eq!(results.iter().filter(|(r, _, res)| *r == 30 && res == "stored").count(), 1, "the highest revision is stored once");
    assert_eq!(pg.psql("cbt", "SELECT revision || '|' || calls FROM documents").trim(), "30|30");
    assert_eq!(count(&pg, "SELECT count(*) FROM audit"), 60, "every request audited once");
}
