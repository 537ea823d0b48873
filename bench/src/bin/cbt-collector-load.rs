//! Load for `scripts/bench-collector`: a whole estate of agents against one
//! cbt-collector and its PostgreSQL.
//!
//! `load`: AGENTS agents (one practice each, one token each, made with the
//! collector's own code) each POST today's day document every INTERVAL
//! seconds (15 min / 100 = 9 s: 100x speed) over HTTPS for SECONDS, each
//! send a higher revision with more calls, 2% sent twice (a retry: a
//! duplicate). Open loop: a send is due at its time whatever the answers.
//! Prints requests/s and latency, then checks that nothing was lost: every
//! agent's stored revision is the highest one acknowledged, and every
//! request has its audit row.
//!
//! `fill`: a month of final documents for the same practices, stored with
//! the collector's own code (`store::store`), and the month's participation
//! list as a CSV file; the script then times `cbt-collector submission`.

use anyhow::{bail, Context, Result};
use cbt_collector::config::Config;
use cbt_collector::store::{self, AuditEntry};
use cbt_collector::tokens::{self, Auth};
use cbt_proto::metrics::{Buckets, Day, Indicator, CORE_CATEGORIES};
use cbt_proto::site::{OrgCodes, DEFAULT_EDGES};
use cbt_proto::upload::{AgentInfo, DayDocument, Quality};
use chrono::{Datelike, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: cbt-collector-load load --config F --ca CA.pem --url https://HOST:PORT [--agents 6500] [--interval 9] [--seconds 120] [--out F.json]\n       cbt-collector-load fill --config F --month YYYY-MM [--agents 6500] --list FILE.csv"
    );
    std::process::exit(2)
}

struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(v: &[String]) -> Args {
        let mut m = BTreeMap::new();
        let mut it = v.iter();
        while let Some(k) = it.next() {
            let Some(k) = k.strip_prefix("--") else { usage() };
            let Some(val) = it.next() else { usage() };
            m.insert(k.to_string(), val.clone());
        }
        Args(m)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn req(&self, k: &str) -> &str {
        self.get(k).unwrap_or_else(|| usage())
    }
    fn num(&self, k: &str, d: u64) -> u64 {
        self.get(k).map(|v| v.parse().unwrap_or_else(|_| usage())).unwrap_or(d)
    }
}

fn practice(i: usize) -> String {
    format!("P{:05}", i)
}

fn agent(i: usize) -> String {
    format!("bench-agent-{i:05}")
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A plausible day: `calls` inbound calls spread over the bands, 70%
/// answered, with their waits and lengths.
fn document(agent_name: &str, practice: &str, date: NaiveDate, revision: u64, calls: u64, seed: u64, is_final: bool) -> DayDocument {
    let wait = Buckets::new(&DEFAULT_EDGES).expect("edges");
    let duration = Buckets::new(&DEFAULT_EDGES).expect("edges");
    let mut day = Day::new(&wait, &duration);
    let mut rng = Rng(seed);
    for _ in 0..calls {
        let band = [2, 2, 2, 3, 3, 4, 5, 6, 8][rng.below(9) as usize];
        *day.band_mut(Indicator::Cbt001, band) += 1;
        let r = rng.below(100);
        if r < 70 {
            *day.band_mut(Indicator::Cbt003, band) += 1;
            let w = (rng.below(400_000) as f64) / 1000.0;
            let d = (rng.below(600_000) as f64) / 1000.0 + 5.0;
            let core = if band == 2 { 0 } else if band <= 6 { 1 } else { 2 };
            day.answered_by_wait[wait.index(w)][core] += 1;
            day.answered_by_duration[duration.index(d)] += 1;
            day.answered_waits.push(w);
            day.durations.push(d);
        } else if r < 90 {
            *day.band_mut(Indicator::Cbt004, band) += 1;
            if r < 82 {
                day.abandoned_missed += 1;
                day.abandoned_waits.push((rng.below(200_000) as f64) / 1000.0);
            }
        } else if r < 96 {
            *day.band_mut(Indicator::Cbt002, band) += 1;
        } else {
            *day.band_mut(Indicator::Cbt005, band) += 1;
        }
    }
    let _ = CORE_CATEGORIES;
    let mut d = DayDocument::new(
        AgentInfo { id: agent_name.to_string(), version: "0.2.0".into() },
        practice,
        &OrgCodes::default(),
        date,
        "Europe/London",
        &wait,
        &duration,
        &day,
        Quality { sip_messages: calls * 12, ..Quality::default() },
    );
    d.revision = revision;
    d.is_final = is_final;
    d.generated_at = Utc::now().to_rfc3339();
    d
}

async fn ensure_tokens(pool: &deadpool_postgres::Pool, agents: usize) -> Result<Vec<(i64, String)>> {
    // one token per agent, made with the collector's own code; tokens are
    // only shown once, so a run makes new ones and revokes the old
    let existing = pool.get().await?.query("SELECT count(*) FROM tokens WHERE revoked_at IS NULL", &[]).await?;
    let n: i64 = existing[0].get(0);
    if n > 0 {
        pool.get().await?.execute("UPDATE tokens SET revoked_at = now() WHERE revoked_at IS NULL", &[]).await?;
    }
    let t0 = Instant::now();
    let mut out = vec![(0i64, String::new()); agents];
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..agents {
        let pool = pool.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            tokens::add(&pool, &agent(i), &[practice(i)]).await.map(|t| (i, t))
        }));
    }
    for t in tasks {
        let (i, tok) = t.await??;
        out[i] = tok;
    }
    eprintln!("{agents} tokens made in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(out)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn load(a: &Args) -> Result<()> {
    let cfg = Config::load(&PathBuf::from(a.req("config")))?;
    let pool = cbt_collector::db::open(&cfg).await?;
    let agents = a.num("agents", 6500) as usize;
    let interval = Duration::from_secs_f64(a.num("interval", 9) as f64);
    let seconds = a.num("seconds", 120);
    let url = format!("{}/v1/days", a.req("url").trim_end_matches('/'));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(a.req("ca")).context("--ca")?)?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(60))
        .build()?;
    let toks = ensure_tokens(&pool, agents).await?;
    let audit_before: i64 = pool.get().await?.query_one("SELECT count(*) FROM audit", &[]).await?.get(0);
    let today = Utc::now().with_timezone(&chrono_tz::Europe::London).date_naive();
    let start = tokio::time::Instant::now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(seconds);
    // at most this many requests in flight (the file descriptors of one client)
    let inflight = Arc::new(tokio::sync::Semaphore::new(4000));
    let mut tasks = Vec::new();
    for (i, (_, token)) in toks.into_iter().enumerate() {
        let client = client.clone();
        let url = url.clone();
        let inflight = inflight.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(i as u64 * 7919 + 1);
            let offset = Duration::from_micros(rng.below(interval.as_micros() as u64));
            let daily = 50 + rng.below(550); // calls by the end of the day
            let mut due = start + offset;
            let mut revision = 0u64;
            let mut lat = Vec::new();
            let mut acked = 0u64;
            let mut results: BTreeMap<String, u64> = BTreeMap::new();
            let mut sent = 0u64;
            let mut k = 0u64;
            while due < end {
                tokio::time::sleep_until(due).await;
                revision += 1;
                k += 1;
                let progress = ((k as f64) * interval.as_secs_f64() * 100.0 / 86_400.0).min(1.0);
                let calls = (daily as f64 * (0.3 + 0.7 * progress)) as u64;
                let doc = document(&agent(i), &practice(i), today, revision, calls, i as u64 * 1_000_003 + revision, false);
                let body = serde_json::to_vec(&doc).expect("serialise");
                let key = format!("{}:{}:{}:{}", doc.agent.id, doc.practice, doc.date, doc.revision);
                let times = if rng.below(100) < 2 { 2 } else { 1 };
                for _ in 0..times {
                    let _p = inflight.acquire().await;
                    let t0 = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    sent += 1;
                    let result = match r {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            if status == 200 {
                                acked = acked.max(v["stored_revision"].as_u64().unwrap_or(0));
                                v["result"].as_str().unwrap_or("?").to_string()
                            } else {
                                format!("http_{status}")
                            }
                        }
                        Err(e) => format!("error: {e}"),
                    };
                    lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    *results.entry(result).or_default() += 1;
                }
                due += interval;
            }
            (i, acked, lat, results, sent)
        }));
    }
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked = vec![0u64; agents];
    let mut sent = 0u64;
    for t in tasks {
        let (i, a, l, r, s) = t.await?;
        acked[i] = a;
        lat.extend(l);
        sent += s;
        for (k, v) in r {
            *results.entry(k).or_default() += v;
        }
    }
    let wall = t0.elapsed().as_secs_f64() - 1.0;
    lat.sort_unstable();
    // nothing lost: every agent's stored revision is its highest acknowledged
    let client_db = pool.get().await?;
    let rows = client_db.query("SELECT agent, revision FROM documents WHERE day = $1", &[&today]).await?;
    let stored: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut lost = 0u64;
    for (i, a) in acked.iter().enumerate() {
        if *a > 0 && stored.get(&agent(i)).copied().unwrap_or(0) as u64 != *a {
            lost += 1;
        }
    }
    let audit_after: i64 = client_db.query_one("SELECT count(*) FROM audit", &[]).await?.get(0);
    let report = serde_json::json!({
        "agents": agents,
        "interval_s": interval.as_secs_f64(),
        "seconds": seconds,
        "requests": sent,
        "requests_per_s": (sent as f64 / wall * 10.0).round() / 10.0,
        "offered_per_s": ((agents as f64 / interval.as_secs_f64()) * 10.0).round() / 10.0,
        "latency_ms": {"p50": pct(&lat, 0.50), "p90": pct(&lat, 0.90), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0)},
        "results": results,
        "documents_in_database": stored.len(),
        "agents_whose_acknowledged_revision_is_not_stored": lost,
        "audit_rows": audit_after - audit_before,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(out) = a.get("out") {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    }
    let acked_agents = acked.iter().filter(|a| **a > 0).count();
    if lost > 0 || (audit_after - audit_before) as u64 != sent || stored.len() != acked_agents {
        bail!(
            "LOST: {lost} agents' revisions, {} audit rows for {sent} requests, {} documents for {acked_agents} agents acknowledged",
            audit_after - audit_before,
            stored.len()
        );
    }
    Ok(())
}

async fn fill(a: &Args) -> Result<()> {
    let cfg = Config::load(&PathBuf::from(a.req("config")))?;
    let pool = cbt_collector::db::open(&cfg).await?;
    let agents = a.num("agents", 6500) as usize;
    let month = cbt_collector::participation::parse_month(a.req("month"))?;
    let days: Vec<NaiveDate> = month.iter_days().take_while(|d| d.month() == month.month()).collect();
    let rows = pool.get().await?.query("SELECT id, agent FROM tokens WHERE revoked_at IS NULL", &[]).await?;
    let ids: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    let mut csv = String::from("PRACTICE_CODE,PRACTICE_NAME\r\n");
    for i in 0..agents {
        csv.push_str(&format!("{},Practice {i}\r\n", practice(i)));
    }
    std::fs::write(a.req("list"), csv)?;
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    let mut bytes = 0usize;
    for i in 0..agents {
        let Some(id) = ids.get(&agent(i)).copied() else {
            bail!("no token for {}: run `load` first", agent(i));
        };
        for (n, date) in days.iter().enumerate() {
            let weekend = matches!(date.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
            let mut rng = Rng((i * 31 + n) as u64);
            let calls = if weekend { rng.below(10) } else { 50 + rng.below(550) };
            let doc = document(&agent(i), &practice(i), *date, 1, calls, (i * 1000 + n) as u64, true);
            let body = serde_json::to_string(&doc)?;
            bytes += body.len();
            let pool = pool.clone();
            let sem = sem.clone().acquire_owned().await?;
            tasks.push(tokio::spawn(async move {
                let _s = sem;
                let auth = Auth { token_id: id, agent: doc.agent.id.clone(), practices: vec![doc.practice.clone()] };
                store::store(&pool, &auth, &doc, &body, AuditEntry::default()).await
            }));
            if tasks.len() >= 256 {
                for t in tasks.drain(..) {
                    t.await??;
                }
            }
        }
    }
    for t in tasks {
        t.await??;
    }
    let n = agents * days.len();
    eprintln!(
        "{n} documents ({:.0} MB of JSON, {:.1} KB each) stored in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64 / 1e3,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else { usage() };
    let a = Args::parse(rest);
    match cmd.as_str() {
        "load" => load(&a).await,
        "fill" => fill(&a).await,
        _ => usage(),
    }
}
