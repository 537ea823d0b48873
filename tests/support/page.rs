//! For the practice page tests: a store filled with given calls, the daemon
//! serving it (no capture source, so no root needed), synthetic months of
//! calls, and a real headless Chromium to load the pages.

use crate::daemon::{agent_bin, free_tcp_port, Daemon};
use cbt_proto::call::{CallRecord, Correlation, EndedBy, Outcome};
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Weekday};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A store in `dir` holding `records`.
pub fn fill_store(dir: &Path, records: &[CallRecord]) {
    let store = cbt_agent::store::Store::open(dir, 8 << 20).expect("open store");
    for r in records {
        assert!(store.put_call(r).expect("store a call"), "call {} stored twice", r.seq);
    }
    store.flush().expect("flush");
}

/// The daemon on `dir`'s store with `site_toml` (practices, network) plus
/// a status address, no capture, a long retention (the calls are old) and
/// `extra` TOML. Waits until its status answers.
pub fn serve_store(site_toml: &str, dir: &Path, extra: &str) -> (Daemon, SocketAddr) {
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let text = format!(
        "{site_toml}\n[store]\ndir = \"{}\"\nretention = \"3650d\"\ncall_retention = \"3650d\"\n[status]\nlisten = \"{status}\"\n[privacy]\nsecret_file = \"{}\"\n{extra}\n",
        dir.join("store").display(),
        dir.join("secret").display()
    );
    let config = dir.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&agent_bin(), &config, status, &dir.join("agent.log"));
    let t0 = Instant::now();
    while d.status().is_err() {
        if let Some(st) = d.proc.try_wait() {
            panic!("cbt-agent exited ({st}): {}", std::fs::read_to_string(&d.log).unwrap_or_default());
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "cbt-agent did not answer: {}", std::fs::read_to_string(&d.log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, status)
}

/// Headless Chromium (Debian's `chromium`), or `None` with a printed skip;
/// a panic under CI, where it must be installed (scripts/setup-deps).
pub fn chromium() -> Option<PathBuf> {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return Some(PathBuf::from(c));
        }
    }
    if crate::in_ci() {
        panic!("chromium is not installed; scripts/setup-deps installs it");
    }
    eprintln!("SKIP: no chromium (apt-get install chromium)");
    None
}

/// Runs headless Chromium with a fresh profile on a loopback URL.
pub fn chromium_run(bin: &Path, profile: &Path, args: &[String], url: &str) -> std::process::Output {
    assert!(url.starts_with("http://127.0.0.1:") || url.starts_with("https://127."), "only loopback: {url}");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        "--mute-audio",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    crate::die_with_test(&mut cmd);
    let out = cmd.output().expect("run chromium");
    assert!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The DOM of a page after Chromium loaded it.
pub fn dump_dom(bin: &Path, profile: &Path, url: &str) -> String {
    String::from_utf8(chromium_run(bin, profile, &["--dump-dom".into()], url).stdout).expect("utf-8 DOM")
}

/// A PNG of a page at `width` x `height`.
pub fn screenshot(bin: &Path, profile: &Path, url: &str, png: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(png);
    chromium_run(bin, profile, &[format!("--screenshot={}", png.display()), format!("--window-size={width},{height}")], url);
    assert!(png.exists(), "no screenshot of {url}");
}

/// The page printed to PDF (A4, as the page's print style asks).
pub fn print_pdf(bin: &Path, profile: &Path, url: &str, pdf: &Path) {
    let _ = std::fs::remove_file(pdf);
    chromium_run(bin, profile, &[format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".into()], url);
    assert!(pdf.exists(), "no PDF of {url}");
}

/// Pages in a PDF that Chromium wrote.
pub fn pdf_pages(pdf: &Path) -> usize {
    let b = std::fs::read(pdf).unwrap();
    let s = String::from_utf8_lossy(&b);
    s.matches("/Type /Page\n").count() + s.matches("/Type /Page ").count() + s.matches("/Type /Page>").count() + s.matches("/Type/Page/").count() + s.matches("/Type/Page>").count()
}

/// Every `data-metric="K" data-value="V"` pair of a page, in order.
pub fn metrics(dom: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find("data-metric=\"") {
        rest = &rest[i + 13..];
        let Some(e) = rest.find('"') else { break };
        let key = rest[..e].to_string();
        let after = &rest[e..];
        let value = after
            .find("data-value=\"")
            .filter(|j| *j < 40)
            .and_then(|j| after[j + 12..].find('"').map(|k| after[j + 12..j + 12 + k].to_string()))
            .unwrap_or_default();
        out.push((key, value));
    }
    out
}

/// The text of the `<td>` cells of the table row whose attribute is
/// `row_attr` (like `data-row="08:00-09:59"`) within the table with
/// `data-table="table"`.
pub fn row_cells(dom: &str, table: &str, row_attr: &str) -> Vec<String> {
    let t = dom.find(&format!("data-table=\"{table}\"")).unwrap_or_else(|| panic!("no table {table}"));
    let dom = &dom[t..];
    let end = dom.find("</table>").unwrap_or(dom.len());
    let dom = &dom[..end];
    let r = dom.find(row_attr).unwrap_or_else(|| panic!("no row {row_attr} in {table}"));
    let row = &dom[r..];
    let row = &row[..row.find("</tr>").unwrap_or(row.len())];
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').map_or(0, |i| i + 1)..];
            let c = &c[..c.find("</td>").unwrap_or(c.len())];
            // strip inner tags
            let mut s = String::new();
            let mut inside = false;
            for ch in c.chars() {
                match ch {
                    '<' => inside = true,
                    '>' => inside = false,
                    _ if !inside => s.push(ch),
                    _ => {}
                }
            }
            s.trim().to_string()
        })
        .collect()
}

/// A small deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn exp(&mut self, mean: f64) -> f64 {
        -self.uniform().ln() * mean
    }
}

fn local_ts(site: &Site, d: NaiveDate, secs_of_day: f64) -> Timestamp {
    let t = d.and_hms_opt(0, 0, 0).unwrap() + chrono::Duration::milliseconds((secs_of_day * 1000.0) as i64);
    let utc = site.timezone.from_local_datetime(&t).earliest().expect("a local time");
    Timestamp(utc.timestamp_micros())
}

/// Calls as a GP practice gets them, on `from..=to`: the 08:00 rush
/// (Mondays busiest), quiet afternoons, closed at weekends and on bank
/// holidays (a few calls still come), for each practice (the second gets
/// half as many) and a few to `Unassigned`; a fifth end in the IVR, some ask
/// for a callback (most made two hours later), the rest wait (longer in the
/// rush) and are answered, or give up after an exponential patience, or
/// reach voicemail. Sequence numbers from `first_seq`.
pub fn synthetic_calls(site: &Site, from: NaiveDate, to: NaiveDate, first_seq: u64, seed: u64) -> Vec<CallRecord> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut seq = first_seq;
    let mut practices: Vec<(String, f64)> = site.practices.iter().enumerate().map(|(i, p)| (p.ods.clone(), if i == 0 { 1.0 } else { 0.5 })).collect();
    if practices.len() > 1 {
        practices.push((cbt_proto::site::UNASSIGNED.to_string(), 0.03));
    }
    let mut d = from;
    while d <= to {
        let wd = match d.weekday() {
            Weekday::Mon => 1.4,
            Weekday::Tue => 1.1,
            Weekday::Fri => 0.9,
            Weekday::Sat | Weekday::Sun => 0.04,
            _ => 1.0,
        };
        let wd = if site.bank_holidays.contains(&d) { 0.04 } else { wd };
        for (practice, pf) in &practices {
            for slot in 14..40 {
                // calls per half-hour: the 08:00 rush, then a lull
                let base = match slot {
                    16 => 18.0,
                    17 => 13.0,
                    18 => 9.0,
                    19..=23 => 6.0,
                    24..=27 => 3.5,
                    28..=35 => 5.0,
                    36 | 37 => 2.5,
                    _ => 0.6,
                };
                let n = (base * wd * pf * (0.7 + 0.6 * rng.uniform())).round() as usize;
                let rush = slot <= 18;
                for _ in 0..n {
                    seq += 1;
                    let start_s = slot as f64 * 1800.0 + rng.uniform() * 1800.0;
                    let started = local_ts(site, d, start_s);
                    let at = |s: f64| local_ts(site, d, start_s + s);
                    let u = rng.uniform();
                    let ivr_s = 8.0 + rng.uniform() * 12.0;
                    let mut c = CallRecord {
                        seq,
                        call_id: format!("synth-{seq}-{:x}@pbx.test", rng.0),
                        practice: practice.clone(),
                        started,
                        queue_joined: None,
                        first_ring: None,
                        answered: None,
                        ended: at(ivr_s),
                        ended_by: EndedBy::Caller,
                        outcome: Outcome::EndedInIvr,
                        wait_s: None,
                        duration_s: None,
                        abandoned: false,
                        voicemail: None,
                        callback_requested: None,
                        callback_made: None,
                        offered_to_staff: false,
                        legs: 2,
                        correlation: Correlation::default(),
                        partial: false,
                        caller: Some(format!("c4113{:016x}", rng.0)),
                    };
                    if u < 0.2 {
                        c.abandoned = rng.uniform() < 0.4;
                    } else if u < 0.27 {
                        c.outcome = Outcome::CallbackRequested;
                        c.callback_requested = Some(at(ivr_s + 15.0));
                        c.ended = at(ivr_s + 25.0);
                        c.ended_by = EndedBy::Practice;
                        if rng.uniform() < 0.8 {
                            c.callback_made = Some(at(7200.0 + rng.uniform() * 3600.0));
                        }
                    } else {
                        c.queue_joined = Some(at(ivr_s));
                        c.offered_to_staff = true;
                        let wait = rng.exp(if rush { 150.0 } else { 45.0 });
                        let patience = rng.exp(200.0);
                        if rng.uniform() < 0.03 {
                            let w = wait.min(60.0);
                            c.outcome = Outcome::Missed;
                            c.wait_s = Some((w * 1000.0).round() / 1000.0);
                            c.voicemail = Some(at(ivr_s + w));
                            c.ended = at(ivr_s + w + 30.0);
                        } else if patience < wait {
                            c.outcome = Outcome::Missed;
                            c.abandoned = true;
                            c.wait_s = Some((patience * 1000.0).round() / 1000.0);
                            c.ended = at(ivr_s + patience);
                        } else {
                            let dur = 40.0 + rng.exp(140.0);
                            c.outcome = Outcome::Answered;
                            c.wait_s = Some((wait * 1000.0).round() / 1000.0);
                            c.duration_s = Some((dur * 1000.0).round() / 1000.0);
                            c.answered = Some(at(ivr_s + wait));
                            c.first_ring = c.queue_joined;
                            c.ended = at(ivr_s + wait + dur);
                        }
                    }
                    out.push(c);
                }
            }
        }
        d = d.succ_opt().unwrap();
    }
    out
}

/// Local date of a timestamp in the site's zone.
pub fn local_date(site: &Site, t: Timestamp) -> NaiveDate {
    t.to_datetime().unwrap().with_timezone(&site.timezone).date_naive()
}

/// Local hour and minute (for checks).
pub fn local_hm(site: &Site, t: Timestamp) -> (u32, u32) {
    let d = t.to_datetime().unwrap().with_timezone(&site.timezone);
    (d.hour(), d.minute())
}
