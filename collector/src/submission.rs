//! `cbt-collector submission`: the month's three NHS England files for the
//! whole estate, written by `cbt_proto::metrics::export::files` (the
//! agent's own writer) from the stored day documents, and the validation
//! report beside them.
//!
//! - Only practices on the month's participation list, plus `Unassigned`
//!   (calls on a phone system shared by several practices whose number is
//!   no practice's: NHS England's rule) unless `--no-unassigned`.
//! - Rows only for practice-dates with a document: a missing day is
//!   reported, never written as zeros. The writer is called once per date
//!   with the practices that have a document on it; its output for a span
//!   is exactly these per-date outputs one after the other.
//! - Documents of several agents for one practice and date are summed
//!   (`Day::merge`).
//! - Documents with different bucket edges cannot share one file: nothing
//!   is written then (exit status 2), and the report says which.
//!
//! One date's documents are in memory at a time; the files are written to
//! temporary names and renamed when complete.

use crate::db::DbError;
use anyhow::{Context, Result};
use cbt_proto::metrics::{export, Buckets, Day};
use cbt_proto::site::{OrgCodes, UNASSIGNED};
use cbt_proto::upload::DayDocument;
use chrono::{Datelike, NaiveDate, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const VALIDATION_TXT: &str = "validation.txt";
pub const VALIDATION_JSON: &str = "validation.json";
pub const CSV_FILES: [&str; 3] = [export::BY_DAY_AND_TIME_FILE, export::BY_DURATIONS_FILE, export::CALLS_ANSWERED_FILE];

/// How a submission ended (the process exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Written, nothing to report (0).
    Clean,
    /// Written; the report lists what to look at (1).
    Warnings,
    /// Not written (2).
    NotWritten,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Clean => 0,
            Verdict::Warnings => 1,
            Verdict::NotWritten => 2,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FileInfo {
    pub name: String,
    /// Data rows (without the header).
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PracticeDays {
    pub practice: String,
    pub dates: Vec<NaiveDate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeftOut {
    pub practice: String,
    pub days: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DocRef {
    pub practice: String,
    pub date: NaiveDate,
    pub agent: String,
    pub revision: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NotReconciled {
    pub practice: String,
    pub date: NaiveDate,
    pub agents: Vec<String>,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeveralAgents {
    pub practice: String,
    pub date: NaiveDate,
    pub agents: Vec<String>,
}

/// The data-quality flags of one practice-day (summed over its agents).
#[derive(Clone, Debug, Default, Serialize)]
pub struct QualityRow {
    pub practice: String,
    pub date: NaiveDate,
    pub partial_calls: u64,
    pub gap_minutes: f64,
    pub hours_without_capture: Vec<u8>,
    pub partial_view_hours: Vec<u8>,
    pub parse_error_share: f64,
    pub packets_dropped: u64,
    pub b2bua_ambiguous: u64,
}

impl QualityRow {
    fn any(&self) -> bool {
        self.partial_calls > 0
            || self.gap_minutes > 0.0
            || !self.hours_without_capture.is_empty()
            || !self.partial_view_hours.is_empty()
            || self.parse_error_share > 0.0
            || self.packets_dropped > 0
            || self.b2bua_ambiguous > 0
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EdgeSet {
    pub wait: Vec<i32>,
    pub duration: Vec<i32>,
    pub documents: i64,
    pub practices: Vec<String>,
}

/// validation.json (and, as text, validation.txt).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub month: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub generated_at: String,
    pub collector_version: String,
    pub verdict: Verdict,
    /// Why nothing was written.
    pub refused: Option<String>,
    pub files: Vec<FileInfo>,
    pub listed_practices: usize,
    pub practices_written: Vec<String>,
    pub include_unassigned: bool,
    pub unassigned_days: usize,
    /// `Unassigned` days left out by --no-unassigned.
    pub unassigned_left_out_days: i64,
    pub month_not_over: bool,
    pub listed_without_data: Vec<String>,
    pub missing_days: Vec<PracticeDays>,
    pub not_listed_left_out: Vec<LeftOut>,
    pub not_reconciled: Vec<NotReconciled>,
    pub not_final: Vec<DocRef>,
    pub bucket_edges: Vec<EdgeSet>,
    pub timezones: Vec<String>,
    pub org_codes_missing: Vec<String>,
    pub org_codes_changed: Vec<String>,
    pub several_agents: Vec<SeveralAgents>,
    pub quality: Vec<QualityRow>,
    pub warnings: Vec<String>,
}

fn last_of_month(first: NaiveDate) -> NaiveDate {
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    next.and_then(|d| d.pred_opt()).expect("a month has a last day")
}

fn dates(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

/// What the command was asked.
pub struct Request {
    pub month: NaiveDate,
    pub dir: PathBuf,
    pub include_unassigned: bool,
}

/// Writes the submission and its report. `Err` only when even the report
/// cannot be written or the database fails; a refusal is a report with
/// [`Verdict::NotWritten`].
pub async fn run(pool: &Pool, req: &Request) -> Result<Report> {
    let from = req.month;
    let to = last_of_month(from);
    let today = Utc::now().with_timezone(&crate::status::TIMEZONE).date_naive();
    let mut rep = Report {
        month: from.format("%Y-%m").to_string(),
        from,
        to,
        generated_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        collector_version: env!("CARGO_PKG_VERSION").to_string(),
        verdict: Verdict::Clean,
        refused: None,
        files: Vec::new(),
        listed_practices: 0,
        practices_written: Vec::new(),
        include_unassigned: req.include_unassigned,
        unassigned_days: 0,
        unassigned_left_out_days: 0,
        month_not_over: to >= today,
        listed_without_data: Vec::new(),
        missing_days: Vec::new(),
        not_listed_left_out: Vec::new(),
        not_reconciled: Vec::new(),
        not_final: Vec::new(),
        bucket_edges: Vec::new(),
        timezones: Vec::new(),
        org_codes_missing: Vec::new(),
        org_codes_changed: Vec::new(),
        several_agents: Vec::new(),
        quality: Vec::new(),
        warnings: Vec::new(),
    };
    std::fs::create_dir_all(&req.dir).with_context(|| format!("cannot create the directory {}", req.dir.display()))?;
    let outcome = build(pool, req, &mut rep, today).await;
    if let Err(e) = outcome {
        match e.downcast::<Refused>() {
            Ok(Refused(reason)) => {
                rep.refused = Some(reason);
                rep.verdict = Verdict::NotWritten;
                rep.files.clear();
                // files of an earlier run would not match this report
                for name in CSV_FILES {
                    let p = req.dir.join(name);
                    if p.exists() {
                        std::fs::remove_file(&p).with_context(|| format!("cannot remove the earlier {}", p.display()))?;
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    finish_warnings(&mut rep);
    write_atomic(&req.dir.join(VALIDATION_JSON), serde_json::to_string_pretty(&rep)?.as_bytes())?;
    write_atomic(&req.dir.join(VALIDATION_TXT), text_report(&rep).as_bytes())?;
    Ok(rep)
}

/// Why the files were not written (a report, not a failure of the program).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refused(reason.into()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn db(e: tokio_postgres::Error) -> anyhow::Error {
    anyhow::Error::new(DbError::from(e))
}

/// Practice order in the files: ODS codes sorted, `Unassigned` last.
fn practice_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a == UNASSIGNED, a).cmp(&(b == UNASSIGNED, b))
}

async fn build(pool: &Pool, req: &Request, rep: &mut Report, today: NaiveDate) -> Result<()> {
    let (from, to) = (rep.from, rep.to);
    let listed = crate::participation::list(pool, from).await?.ok_or_else(|| {
        refuse(format!(
            "no participation list for {}: import NHS England's list first (`cbt-collector participation import --month {} FILE`)",
            rep.month, rep.month
        ))
    })?;
    rep.listed_practices = listed.len();
    let mut included: Vec<String> = listed.clone();
    if req.include_unassigned {
        included.push(UNASSIGNED.to_string());
    }
    let client = pool.get().await.map_err(DbError::from)?;

    // practices with data but not listed: left out
    for r in client
        .query(
            "SELECT practice, count(DISTINCT day) FROM documents WHERE day BETWEEN $1 AND $2 AND practice <> ALL($3) AND practice <> $4
             GROUP BY practice ORDER BY practice",
            &[&from, &to, &listed, &UNASSIGNED],
        )
        .await
        .map_err(db)?
    {
        rep.not_listed_left_out.push(LeftOut { practice: r.get(0), days: r.get(1) });
    }
    if !req.include_unassigned {
        let r = client
            .query_one("SELECT count(DISTINCT day) FROM documents WHERE day BETWEEN $1 AND $2 AND practice = $3", &[&from, &to, &UNASSIGNED])
            .await
            .map_err(db)?;
        rep.unassigned_left_out_days = r.get(0);
    }

    // one set of bucket edges, or nothing can be written
    for r in client
        .query(
            "SELECT wait_edges, duration_edges, count(*), array_agg(DISTINCT practice ORDER BY practice) FROM documents
             WHERE day BETWEEN $1 AND $2 AND practice = ANY($3) GROUP BY wait_edges, duration_edges ORDER BY count(*) DESC",
            &[&from, &to, &included],
        )
        .await
        .map_err(db)?
    {
        rep.bucket_edges.push(EdgeSet { wait: r.get(0), duration: r.get(1), documents: r.get(2), practices: r.get(3) });
    }
    if rep.bucket_edges.is_empty() {
        return Err(refuse(format!("no day documents of {} for any listed practice{}", rep.month, if req.include_unassigned { " nor Unassigned" } else { "" })));
    }
    if rep.bucket_edges.len() > 1 {
        let sets: Vec<String> = rep
            .bucket_edges
            .iter()
            .map(|e| format!("wait {:?} duration {:?}: {} documents of {}", e.wait, e.duration, e.documents, summarise(&e.practices)))
            .collect();
        return Err(refuse(format!(
            "the documents use different bucket edges, which cannot share one file ({}); give every agent the same [buckets] and let it send its days again",
            sets.join("; ")
        )));
    }
    let edges = &rep.bucket_edges[0];
    let to_u32 = |v: &[i32]| v.iter().map(|e| *e as u32).collect::<Vec<u32>>();
    let wait = Buckets::new(&to_u32(&edges.wait)).map_err(|e| refuse(format!("stored wait edges are invalid: {e}")))?;
    let duration = Buckets::new(&to_u32(&edges.duration)).map_err(|e| refuse(format!("stored duration edges are invalid: {e}")))?;

    // organisation codes: the latest per practice; one header for all rows
    let mut codes: BTreeMap<String, (NaiveDate, OrgCodes)> = BTreeMap::new();
    let mut changed = BTreeSet::new();
    for r in client
        .query(
            "SELECT practice, region_code, icb_code, sub_icb_location_code, pcn_code, max(day) FROM documents
             WHERE day BETWEEN $1 AND $2 AND practice = ANY($3) GROUP BY 1, 2, 3, 4, 5",
            &[&from, &to, &included],
        )
        .await
        .map_err(db)?
    {
        let p: String = r.get(0);
        let c = OrgCodes { region: r.get(1), icb: r.get(2), sub_icb: r.get(3), pcn: r.get(4) };
        let last: NaiveDate = r.get(5);
        match codes.get(&p) {
            Some((d, _)) => {
                changed.insert(p.clone());
                if *d < last {
                    codes.insert(p, (last, c));
                }
            }
            None => {
                codes.insert(p, (last, c));
            }
        }
    }
    rep.org_codes_changed = changed.into_iter().collect();
    let with_codes = codes.values().any(|(_, c)| *c != OrgCodes::default());
    if with_codes {
        for (p, (_, c)) in codes.iter_mut() {
            if *c == OrgCodes::default() {
                if p != UNASSIGNED {
                    rep.org_codes_missing.push(p.clone());
                }
                // the writer prints empty columns for these, as the agent's does
                // for a practice without codes beside one with them
                *c = OrgCodes { region: Some(String::new()), icb: Some(String::new()), sub_icb: Some(String::new()), pcn: Some(String::new()) };
            }
        }
    }
    drop(client);

    // the files, one date at a time; the next date is fetched while one is written
    let mut out = Outputs::create(&req.dir)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(NaiveDate, Vec<tokio_postgres::Row>), DbError>>(2);
    {
        let pool = pool.clone();
        let included = included.clone();
        tokio::spawn(async move {
            let client = match pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            for date in dates(from, to) {
                let rows = client
                    .query("SELECT practice, agent, body FROM documents WHERE day = $1 AND practice = ANY($2) ORDER BY practice, agent", &[&date, &included])
                    .await
                    .map_err(DbError::from)
                    .map(|rows| (date, rows));
                let failed = rows.is_err();
                if tx.send(rows).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    let mut with_data: BTreeMap<String, BTreeSet<NaiveDate>> = BTreeMap::new();
    let mut timezones = BTreeSet::new();
    let mut written: BTreeSet<String> = BTreeSet::new();
    let (mut waited, mut parsed, mut made, mut wrote) = (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut documents = 0usize;
    loop {
        let t = Instant::now();
        let Some(msg) = rx.recv().await else { break };
        waited += t.elapsed();
        let (date, rows) = msg?;
        documents += rows.len();
        let t = Instant::now();
        if rows.is_empty() {
            continue;
        }
        let mut days: BTreeMap<(String, NaiveDate), Day> = BTreeMap::new();
        let mut agents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut quality: BTreeMap<String, QualityRow> = BTreeMap::new();
        // reading the documents is most of the work: both cores
        let read = tokio::task::block_in_place(|| read_documents(&rows, date, &edges.wait, &edges.duration));
        for (practice, agent, doc) in read? {
            if !doc.is_final {
                rep.not_final.push(DocRef { practice: practice.clone(), date, agent: agent.clone(), revision: doc.revision });
            }
            timezones.insert(doc.timezone.clone());
            let q = quality.entry(practice.clone()).or_insert_with(|| QualityRow { practice: practice.clone(), date, ..QualityRow::default() });
            let dq = &doc.quality;
            q.partial_calls += dq.partial_calls;
            q.gap_minutes += dq.gap_minutes;
            q.hours_without_capture.extend(&dq.hours_without_capture);
            q.partial_view_hours.extend(&dq.partial_view_hours);
            q.parse_error_share = q.parse_error_share.max(dq.parse_error_share);
            q.packets_dropped += dq.packets_dropped;
            q.b2bua_ambiguous += dq.b2bua_ambiguous;
            let day = doc.to_day();
            days.entry((practice.clone(), date)).and_modify(|d| d.merge(&day)).or_insert(day);
            agents.entry(practice).or_default().push(agent);
        }
        for mut q in quality.into_values() {
            for v in [&mut q.hours_without_capture, &mut q.partial_view_hours] {
                v.sort_unstable();
                v.dedup();
            }
            if q.any() {
                rep.quality.push(q);
            }
        }
        for ((practice, _), day) in &days {
            let a = &agents[practice];
            if let Err(reason) = day.reconciles() {
                rep.not_reconciled.push(NotReconciled { practice: practice.clone(), date, agents: a.clone(), reason });
            }
            if a.len() > 1 {
                rep.several_agents.push(SeveralAgents { practice: practice.clone(), date, agents: a.clone() });
            }
            with_data.entry(practice.clone()).or_default().insert(date);
            written.insert(practice.clone());
        }
        parsed += t.elapsed();
        let t = Instant::now();
        let mut practices: Vec<(String, OrgCodes)> = agents.keys().map(|p| (p.clone(), codes.get(p).map(|c| c.1.clone()).unwrap_or_default())).collect();
        practices.sort_by(|a, b| practice_order(&a.0, &b.0));
        let fig = export::Figures { practices, days: &days, wait: &wait, duration: &duration };
        let files = export::files(&fig, date, date);
        made += t.elapsed();
        let t = Instant::now();
        out.append(files)?;
        wrote += t.elapsed();
    }
    let t = Instant::now();
    out.finish(rep)?;
    wrote += t.elapsed();
    tracing::info!(
        documents,
        waiting_for_database_s = waited.as_secs_f64(),
        reading_documents_s = parsed.as_secs_f64(),
        making_rows_s = made.as_secs_f64(),
        writing_s = wrote.as_secs_f64(),
        "submission files written"
    );

    rep.timezones = timezones.into_iter().collect();
    let last_expected = to.min(today);
    for p in &listed {
        match with_data.get(p) {
            None => rep.listed_without_data.push(p.clone()),
            Some(have) => {
                let missing: Vec<NaiveDate> = dates(from, last_expected).filter(|d| !have.contains(d)).collect();
                if !missing.is_empty() {
                    rep.missing_days.push(PracticeDays { practice: p.clone(), dates: missing });
                }
            }
        }
    }
    rep.unassigned_days = with_data.get(UNASSIGNED).map_or(0, |d| d.len());
    let mut w: Vec<String> = written.into_iter().collect();
    w.sort_by(|a, b| practice_order(a, b));
    rep.practices_written = w;
    Ok(())
}

/// A stored day document without its DPN inputs (every wait and call
/// length of the day): the three files are counts only, and reading those
/// numbers was most of a national submission's time.
#[derive(serde::Deserialize)]
struct Counts {
    schema: String,
    version: u32,
    agent: cbt_proto::upload::AgentInfo,
    practice: String,
    #[serde(default)]
    org_codes: cbt_proto::upload::OrgCodesDoc,
    date: NaiveDate,
    timezone: String,
    revision: u64,
    #[serde(rename = "final")]
    is_final: bool,
    generated_at: String,
    buckets: cbt_proto::upload::BucketEdges,
    by_time: BTreeMap<String, BTreeMap<String, u64>>,
    cbt003_by_wait: BTreeMap<String, BTreeMap<String, u64>>,
    cbt007_by_duration: BTreeMap<String, u64>,
    #[allow(dead_code)]
    dpn: serde::de::IgnoredAny,
    quality: cbt_proto::upload::Quality,
}

impl From<Counts> for DayDocument {
    fn from(c: Counts) -> DayDocument {
        DayDocument {
            schema: c.schema,
            version: c.version,
            agent: c.agent,
            practice: c.practice,
            org_codes: c.org_codes,
            date: c.date,
            timezone: c.timezone,
            revision: c.revision,
            is_final: c.is_final,
            generated_at: c.generated_at,
            buckets: c.buckets,
            by_time: c.by_time,
            cbt003_by_wait: c.cbt003_by_wait,
            cbt007_by_duration: c.cbt007_by_duration,
            dpn: cbt_proto::upload::DpnInputs::default(),
            quality: c.quality,
        }
    }
}

/// The stored documents of one date, read on two threads. They passed
/// `DayDocument::parse` when they arrived; here their counts are read once
/// more (without the DPN inputs), and their schema, version and bucket edges
/// checked against what the submission uses, so that a row edited by hand
/// is refused rather than misread.
fn read_documents(rows: &[tokio_postgres::Row], date: NaiveDate, wait: &[i32], duration: &[i32]) -> Result<Vec<(String, String, DayDocument)>> {
    let read = |row: &tokio_postgres::Row| -> Result<(String, String, DayDocument)> {
        let practice: String = row.get(0);
        let agent: String = row.get(1);
        let body: &str = row.get(2);
        let bad = |why: String| refuse(format!("the stored document of {practice} {date} from agent {agent} cannot be read: {why}"));
        let doc: DayDocument = serde_json::from_str::<Counts>(body).map_err(|e| bad(e.to_string()))?.into();
        let same = |a: &[u32], b: &[i32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| i64::from(*x) == i64::from(*y));
        if doc.schema != cbt_proto::upload::SCHEMA || doc.version != cbt_proto::upload::VERSION {
            return Err(bad(format!("schema {:?} version {}", doc.schema, doc.version)));
        }
        if !same(&doc.buckets.wait, wait) || !same(&doc.buckets.duration, duration) || doc.practice != practice || doc.date != date {
            return Err(bad("its body does not match its row (edited by hand?)".into()));
        }
        Ok((practice, agent, doc))
    };
    let half = rows.len().div_ceil(2);
    if half < 64 {
        return rows.iter().map(read).collect();
    }
    let (a, b) = rows.split_at(half);
    std::thread::scope(|s| {
        let other = s.spawn(|| b.iter().map(read).collect::<Result<Vec<_>>>());
        let mut first: Vec<_> = a.iter().map(read).collect::<Result<Vec<_>>>()?;
        let second = other.join().map_err(|_| anyhow::anyhow!("a reading thread failed"))??;
        first.extend(second);
        Ok(first)
    })
}

fn summarise(list: &[String]) -> String {
    if list.len() <= 5 {
        list.join(", ")
    } else {
        format!("{} and {} more", list[..5].join(", "), list.len() - 5)
    }
}

/// The three files being written.
struct Outputs {
    files: Vec<Output>,
}

struct Output {
    path: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
    header: Option<String>,
    rows: u64,
    bytes: u64,
}

impl Outputs {
    fn create(dir: &Path) -> Result<Outputs> {
        let mut files = Vec::new();
        for name in CSV_FILES {
            let path = dir.join(name);
            let tmp = tmp_name(&path);
            let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            files.push(Output { path, w: std::io::BufWriter::with_capacity(1 << 20, f), header: None, rows: 0, bytes: 0 });
        }
        Ok(Outputs { files })
    }

    /// Appends one date's files (as the writer made them) to the outputs:
    /// the header once, then the rows.
    fn append(&mut self, made: Vec<(&'static str, String)>) -> Result<()> {
        for (name, text) in made {
            let Some(slot) = self.files.iter_mut().find(|f| f.path.file_name().is_some_and(|n| n == name)) else {
                anyhow::bail!("the writer made an unexpected file {name}");
            };
            let cut = text.find("\r\n").map_or(text.len(), |i| i + 2);
            let (head, rows) = text.split_at(cut);
            match &slot.header {
                None => {
                    slot.w.write_all(head.as_bytes())?;
                    slot.bytes += head.len() as u64;
                    slot.header = Some(head.to_string());
                }
                Some(h) if h == head => {}
                Some(h) => anyhow::bail!("{name}: the header changed from {h:?} to {head:?} between dates"),
            }
            slot.w.write_all(rows.as_bytes()).with_context(|| format!("cannot write {}", slot.path.display()))?;
            slot.rows += rows.matches("\r\n").count() as u64;
            slot.bytes += rows.len() as u64;
        }
        Ok(())
    }

    fn finish(self, rep: &mut Report) -> Result<()> {
        let mut done = Vec::new();
        for Output { path, mut w, rows, bytes, .. } in self.files {
            w.flush().with_context(|| format!("cannot write {}", path.display()))?;
            let f = w.into_inner().map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error()))?;
            f.sync_all().with_context(|| format!("cannot write {}", path.display()))?;
            done.push((path, rows, bytes));
        }
        for (path, rows, bytes) in done {
            std::fs::rename(tmp_name(&path), &path).with_context(|| format!("cannot rename into {}", path.display()))?;
            rep.files.push(FileInfo { name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), rows, bytes });
        }
        Ok(())
    }
}

fn finish_warnings(rep: &mut Report) {
    let mut w = Vec::new();
    if rep.verdict != Verdict::NotWritten {
        if rep.month_not_over {
            w.push(format!("{} is not over: days after today are neither written nor reported missing", rep.month));
        }
        if !rep.listed_without_data.is_empty() {
            w.push(format!("{} listed practice(s) have no data: {}", rep.listed_without_data.len(), summarise(&rep.listed_without_data)));
        }
        if !rep.missing_days.is_empty() {
            let n: usize = rep.missing_days.iter().map(|m| m.dates.len()).sum();
            w.push(format!("{n} practice-day(s) missing for {} practice(s)", rep.missing_days.len()));
        }
        if !rep.not_listed_left_out.is_empty() {
            let names: Vec<String> = rep.not_listed_left_out.iter().map(|l| l.practice.clone()).collect();
            w.push(format!("{} practice(s) with data are not on the participation list and were left out: {}", names.len(), summarise(&names)));
        }
        if !rep.not_reconciled.is_empty() {
            w.push(format!("{} practice-day(s) do not reconcile", rep.not_reconciled.len()));
        }
        if !rep.not_final.is_empty() {
            w.push(format!("{} document(s) are not final", rep.not_final.len()));
        }
        if rep.timezones.len() > 1 {
            w.push(format!("documents use several timezones: {}", rep.timezones.join(", ")));
        }
        if !rep.org_codes_missing.is_empty() {
            w.push(format!("{} practice(s) have no organisation codes while others do: {}", rep.org_codes_missing.len(), summarise(&rep.org_codes_missing)));
        }
        if !rep.org_codes_changed.is_empty() {
            w.push(format!("organisation codes changed during the month for {} (the latest are written)", summarise(&rep.org_codes_changed)));
        }
        if !rep.quality.is_empty() {
            w.push(format!("{} practice-day(s) carry data-quality flags", rep.quality.len()));
        }
        rep.verdict = if w.is_empty() { Verdict::Clean } else { Verdict::Warnings };
    }
    rep.warnings = w;
}

/// validation.txt: the same as validation.json, for a person.
pub fn text_report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "NHS England CBT submission for {} ({} to {})", r.month, r.from, r.to);
    let _ = writeln!(s, "made {} by cbt-collector {}", r.generated_at, r.collector_version);
    let _ = writeln!(s);
    match &r.refused {
        Some(why) => {
            let _ = writeln!(s, "NOT WRITTEN: {why}");
        }
        None => {
            let _ = writeln!(
                s,
                "{}: {} practice(s) written ({} on the participation list{})",
                if r.verdict == Verdict::Clean { "WRITTEN, no warnings" } else { "WRITTEN WITH WARNINGS" },
                r.practices_written.len(),
                r.listed_practices,
                if r.include_unassigned { format!(", plus Unassigned with {} day(s)", r.unassigned_days) } else { ", Unassigned left out".into() }
            );
            for f in &r.files {
                let _ = writeln!(s, "  {:<28} {:>10} rows {:>12} bytes", f.name, f.rows, f.bytes);
            }
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:");
        for w in &r.warnings {
            let _ = writeln!(s, "  - {w}");
        }
    }
    let section = |s: &mut String, title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(s, "\n{title} ({}):", lines.len());
            for l in lines {
                let _ = writeln!(s, "  {l}");
            }
        }
    };
    section(&mut s, "Listed practices with no data (not in the files)", r.listed_without_data.clone());
    section(
        &mut s,
        "Practice-dates missing (no document: no rows written)",
        r.missing_days.iter().map(|m| format!("{}: {}", m.practice, date_ranges(&m.dates))).collect(),
    );
    section(
        &mut s,
        "Practices with data not on the participation list (left out)",
        r.not_listed_left_out.iter().map(|l| format!("{}: {} day(s)", l.practice, l.days)).collect(),
    );
    if r.unassigned_left_out_days > 0 {
        section(&mut s, "Unassigned left out (--no-unassigned)", vec![format!("{} day(s)", r.unassigned_left_out_days)]);
    }
    section(
        &mut s,
        "Not reconciling (CBT001 = CBT002+CBT003+CBT004+CBT005, CBT003 = CBT007)",
        r.not_reconciled.iter().map(|n| format!("{} {} ({}): {}", n.practice, n.date, n.agents.join(", "), n.reason)).collect(),
    );
    section(
        &mut s,
        "Documents not final (the agent may still send a later revision)",
        r.not_final.iter().map(|d| format!("{} {} from {} (revision {})", d.practice, d.date, d.agent, d.revision)).collect(),
    );
    if r.bucket_edges.len() > 1 {
        section(
            &mut s,
            "Bucket edges",
            r.bucket_edges.iter().map(|e| format!("wait {:?} duration {:?}: {} documents of {}", e.wait, e.duration, e.documents, summarise(&e.practices))).collect(),
        );
    }
    section(&mut s, "Practices without organisation codes", r.org_codes_missing.clone());
    section(&mut s, "Organisation codes changed during the month", r.org_codes_changed.clone());
    section(
        &mut s,
        "Several agents summed",
        r.several_agents.iter().map(|a| format!("{} {}: {}", a.practice, a.date, a.agents.join(" + "))).collect(),
    );
    section(
        &mut s,
        "Data quality",
        r.quality
            .iter()
            .map(|q| {
                let mut parts = Vec::new();
                if q.partial_calls > 0 {
                    parts.push(format!("{} partial call(s)", q.partial_calls));
                }
                if q.gap_minutes > 0.0 {
                    parts.push(format!("{:.1} gap minute(s)", q.gap_minutes));
                }
                if !q.hours_without_capture.is_empty() {
                    parts.push(format!("no capture in hour(s) {:?}", q.hours_without_capture));
                }
                if !q.partial_view_hours.is_empty() {
                    parts.push(format!("handsets-only view in hour(s) {:?}", q.partial_view_hours));
                }
                if q.parse_error_share > 0.0 {
                    parts.push(format!("{:.2}% parse errors", q.parse_error_share * 100.0));
                }
                if q.packets_dropped > 0 {
                    parts.push(format!("{} packet(s) dropped", q.packets_dropped));
                }
                if q.b2bua_ambiguous > 0 {
                    parts.push(format!("{} b2bua_ambiguous", q.b2bua_ambiguous));
                }
                format!("{} {}: {}", q.practice, q.date, parts.join(", "))
            })
            .collect(),
    );
    let _ = writeln!(s, "\nExit status {}: 0 written and clean, 1 written with warnings, 2 not written.", r.verdict.exit_code());
    s
}

/// "2026-11-03..2026-11-05, 2026-11-09".
fn date_ranges(d: &[NaiveDate]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let mut j = i;
        while j + 1 < d.len() && d[j].succ_opt() == Some(d[j + 1]) {
            j += 1;
        }
        out.push(if i == j { d[i].to_string() } else { format!("{}..{}", d[i], d[j]) });
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_end() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(last_of_month(d(2026, 2, 1)), d(2026, 2, 28));
        assert_eq!(last_of_month(d(2028, 2, 1)), d(2028, 2, 29));
        assert_eq!(last_of_month(d(2026, 12, 1)), d(2026, 12, 31));
        assert_eq!(date_ranges(&[d(2026, 11, 3), d(2026, 11, 4), d(2026, 11, 5), d(2026, 11, 9)]), "2026-11-03..2026-11-05, 2026-11-09");
    }

    #[test]
    fn unassigned_comes_last() {
        let mut v = vec!["Unassigned", "B82099", "A12345"];
        v.sort_by(|a, b| practice_order(a, b));
        assert_eq!(v, vec!["A12345", "B82099", "Unassigned"]);
    }
}
