//! The small commands: `status`, `report`, `check-config`.

use crate::book::{CallBook, CallsOutput};
use crate::client;
use crate::config::{Config, Listen, DEFAULT_STATUS};
use crate::daemon::status::Status;
use crate::store::Store;
use anyhow::{Context, Result};
use cbt_proto::call::CallRecord;
use cbt_proto::metrics::Day;
use cbt_proto::number::Hasher;
use cbt_proto::Timestamp;
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the status document as JSON.
    #[arg(long)]
    pub json: bool,
    /// The configuration file (for the status address).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The status API address (`127.0.0.1:9465` or `unix:/path`), overriding the configuration.
    #[arg(long, value_name = "ADDR")]
    pub url: Option<String>,
}

fn listen_of(config: Option<&PathBuf>, url: Option<&str>) -> Result<Listen> {
    if let Some(u) = url {
        return Ok(match u.strip_prefix("unix:") {
            Some(p) => Listen::Unix(PathBuf::from(p)),
            None => Listen::Tcp(u.trim_start_matches("http://").trim_end_matches('/').parse().with_context(|| format!("`{u}` is not address:port"))?),
        });
    }
    let path = config.cloned().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG));
    match Config::load(&path) {
        Ok(c) => Ok(c.agent.status_listen),
        Err(_) if config.is_none() => Ok(Listen::Tcp(DEFAULT_STATUS.parse().expect("default"))),
        Err(e) => Err(e.into()),
    }
}

/// `cbt-agent status`: exit 0 when healthy, 1 when a diagnostic is an
/// error, 3 when the service is not running.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let listen = listen_of(args.config.as_ref(), args.url.as_deref())?;
    let body = match client::get(&listen, "/status") {
        Ok(b) => b,
        Err(e) if client::is_not_running(&e) => {
            eprintln!("cbt-agent is not running (nothing answers at {listen}); start it with `systemctl start cbt-agent`");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e),
    };
    let s: Status = serde_json::from_str(&body).context("the status document is unreadable")?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
    } else {
        write_status(&mut out, &s)?;
    }
    Ok(if s.diagnostics.iter().any(|d| d.severity == "error") {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn human_bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

pub fn write_status(w: &mut dyn Write, s: &Status) -> std::io::Result<()> {
    writeln!(w, "cbt-agent {}, up {}h {:02}m (config {})", s.version, s.uptime_s / 3600, s.uptime_s / 60 % 60, s.config)?;
    writeln!(w, "View: {}", s.view)?;
    writeln!(w, "Sources")?;
    if s.sources.is_empty() {
        writeln!(w, "  none")?;
    }
    for src in &s.sources {
        writeln!(
            w,
            "  {:<22} {:<11} {:<8} packets {:>10}  kernel drops {}  interface drops {}  queue drops {}",
            src.name,
            src.linktype.clone().unwrap_or_else(|| "-".into()),
            if src.running { "running" } else { "stopped" },
            src.packets,
            src.kernel_dropped,
            src.if_dropped,
            src.queue_dropped
        )?;
        if let Some(e) = &src.error {
            writeln!(w, "    error: {e}")?;
        }
    }
    writeln!(
        w,
        "Traffic: {:.1} packets/s, {:.1} SIP messages/s; {} legs and {} calls in progress; last packet {}",
        s.rates.packets_per_s,
        s.rates.sip_messages_per_s,
        s.engine.legs_in_progress,
        s.engine.calls_in_progress,
        s.engine.last_packet.clone().unwrap_or_else(|| "never".into())
    )?;
    if s.sip.parse_errors.is_empty() {
        writeln!(w, "Parse errors: none ({} SIP messages)", s.sip.messages)?;
    } else {
        let list: Vec<String> = s.sip.parse_errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(w, "Parse errors: {} (of {} SIP messages)", list.join(", "), s.sip.messages)?;
    }
    let (k, m) = (&s.hostile.kept_out, &s.hostile.memory);
    writeln!(
        w,
        "Kept out: {} INVITEs ({} from unexpected senders, {} scanner User-Agents, {} scanner-like calls), {} other requests, {} HEP packets from unknown senders{}",
        k.invites,
        k.screen.unexpected_invites,
        k.screen.scanner_agent_invites,
        k.screen.scanner_calls,
        k.screen.other_requests,
        k.hep_rejected,
        if k.sources.is_empty() {
            String::new()
        } else {
            format!("; from {}", k.sources.iter().take(5).map(|x| format!("{} ({})", x.address, x.total())).collect::<Vec<_>>().join(", "))
        }
    )?;
    writeln!(
        w,
        "Memory: {} resident; engine {} of {} (peak {}), {} unanswered INVITEs shed; queue {} of {}, {} packets dropped at the ceiling",
        human_bytes(m.rss_bytes),
        human_bytes(m.engine.used_bytes),
        human_bytes(m.engine.limit_bytes),
        human_bytes(m.engine.peak_bytes),
        m.engine.legs_shed,
        human_bytes(m.queue_bytes),
        human_bytes(m.queue_limit_bytes),
        m.queue_dropped
    )?;
    let st = &s.store;
    writeln!(
        w,
        "Store: {}, {}, {}, {} calls stored{}; snapshot {}",
        if st.healthy { "healthy" } else { "NOT WRITABLE" },
        st.dir,
        human_bytes(st.size_bytes),
        st.calls_stored,
        if st.held_in_memory > 0 { format!(", {} held in memory", st.held_in_memory) } else { String::new() },
        st.snapshot_age_s.map_or_else(|| "not yet taken".into(), |a| format!("{a} s ago"))
    )?;
    if let Some(r) = &st.recovered {
        writeln!(w, "  at start: {r}")?;
    }
    writeln!(w, "Today ({})", s.today.date)?;
    for p in &s.today.practices {
        writeln!(
            w,
            "  {}: {} inbound, {} answered, {} missed ({} abandoned), {} ended in IVR, {} callbacks requested ({} made)",
            p.practice, p.inbound, p.answered, p.missed, p.abandoned, p.ended_in_ivr, p.callback_requested, p.callbacks_made
        )?;
    }
    if s.diagnostics.is_empty() {
        writeln!(w, "Problems: none")?;
    } else {
        writeln!(w, "Problems")?;
        for d in &s.diagnostics {
            writeln!(w, "  {}: {}", d.severity, d.message)?;
        }
    }
    if !s.gaps.is_empty() {
        writeln!(w, "Recent gaps (packets not seen)")?;
        for g in s.gaps.iter().take(5) {
            writeln!(w, "  {} to {}: {}", g.from, g.to, g.reason)?;
        }
    }
    Ok(())
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportOutput {
    Calls,
    Metrics,
    Report,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// First local date [default: the first stored call].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<NaiveDate>,
    /// Last local date [default: the last stored call].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<NaiveDate>,
    #[arg(long, value_enum, default_value_t = ReportOutput::Report)]
    pub output: ReportOutput,
    /// Also write the three NHS England CSV files into this directory.
    #[arg(long, value_name = "DIR")]
    pub nhs_csv: Option<PathBuf>,
}

/// `cbt-agent report`: from the running service's API, else from the store.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let mut q = Vec::new();
    if let Some(f) = args.from {
        q.push(format!("from={f}"));
    }
    if let Some(t) = args.to {
        q.push(format!("to={t}"));
    }
    let path = format!("/api/calls?{}", q.join("&"));
    type Days = Vec<((String, NaiveDate), Day)>;
    let (records, days, pruned, problems): (Vec<CallRecord>, Days, Option<Timestamp>, Vec<String>) =
        match client::get(&config.agent.status_listen, &path) {
            Ok(body) => {
                let records = serde_json::from_str(&body).context("the service's call list is unreadable")?;
                let d: serde_json::Value = serde_json::from_str(&client::get(&config.agent.status_listen, "/api/days")?)?;
                let problems = serde_json::from_value(d["problems"].clone()).unwrap_or_default();
                (records, serde_json::from_value(d["days"].clone())?, serde_json::from_value(d["pruned_before"].clone())?, problems)
            }
            Err(e) if client::is_not_running(&e) => {
                let store = Store::open(&config.agent.store_dir, config.agent.cache_bytes)
                    .with_context(|| format!("the service is not running and its store in {} cannot be opened", config.agent.store_dir.display()))?;
                store.verify()?;
                let r = (store.calls_between(Timestamp::MIN, Timestamp::MAX)?, store.days()?, store.pruned_before()?);
                (r.0, r.1, r.2, store.problems())
            }
            Err(e) => return Err(e),
        };
    // the numbers' hashes play no part in a report: no secret is needed
    let site = config.site(&Hasher::new([0; 32], &config.country_code));
    let mut book = CallBook::from_records(records);
    if let Some(cut) = pruned {
        let agg = cbt_proto::metrics::Aggregator::new(&site);
        let first_kept = agg.local_date(cut);
        book.add_days(days.into_iter().filter(|((_, d), _)| *d < first_kept).collect());
    }
    let what = match args.output {
        ReportOutput::Calls => CallsOutput::Calls,
        ReportOutput::Metrics => CallsOutput::Metrics,
        ReportOutput::Report => CallsOutput::Report,
    };
    let (out, err) = (std::io::stdout(), std::io::stderr());
    book.emit(&site, what, args.from, args.to, args.nhs_csv.as_deref(), &mut out.lock(), &mut err.lock())?;
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // the figures above leave out what could not be read: say so, and fail
    for p in &problems {
        eprintln!("store problem: {p}");
    }
    eprintln!("cbt-agent: {} things in the store could not be read; the figures above leave them out (see docs/operations.md, \"Kept aside\")", problems.len());
    Ok(ExitCode::from(1))
}

/// `cbt-agent check-config`: 0 valid, 1 valid but the machine does not
/// match it (missing interface, store not writable), 2 invalid.
pub fn check_config(path: &PathBuf) -> Result<ExitCode> {
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let out = std::io::stdout();
    let mut w = out.lock();
    let mut warnings = Vec::new();
    writeln!(w, "{} is valid.", path.display())?;
    writeln!(w, "Practices (times in {})", c.timezone.name())?;
    for p in &c.practices {
        writeln!(w, "  {}{}: {}", p.ods, p.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(), if p.numbers.is_empty() { "no numbers: every inbound call".into() } else { p.numbers.join(", ") })?;
    }
    if c.practices.len() > 1 {
        writeln!(w, "  calls to other numbers: Unassigned")?;
    }
    let list = |v: Vec<String>| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let addrs = |v: &[cbt_proto::site::AddrMatch]| list(v.iter().map(|a| a.to_string()).collect());
    writeln!(w, "Network roles")?;
    writeln!(w, "  carrier:   {} (and anything outside the site)", addrs(&c.carrier))?;
    writeln!(w, "  pbx:       {}", addrs(&c.pbx))?;
    writeln!(w, "  staff:     {}; extensions {}", addrs(&c.staff), list(c.staff_extensions.iter().map(|p| p.as_str().to_string()).collect()))?;
    writeln!(w, "  automated: {}; voicemail {}; queue {}", list(c.automated.clone()), list(c.voicemail.clone()), list(c.queue.clone()))?;
    writeln!(
        w,
        "Callbacks: requested via {}{}, counted within {}",
        list(c.callback_request.clone()),
        c.callback_header.as_ref().map(|h| format!(" or header {h}")).unwrap_or_default(),
        match c.callback_window {
            cbt_proto::site::CallbackWindow::SameDay => "the same day".to_string(),
            cbt_proto::site::CallbackWindow::Within(d) => format!("{} minutes", d / 60_000_000),
        }
    )?;
    writeln!(w, "Correlation: B2BUA heuristic {}, headers {}", if c.b2bua { "on" } else { "off" }, list(c.correlation_headers.clone()))?;
    let a = &c.agent;
    writeln!(w, "Capture")?;
    let devices: Vec<String> = pcap::Device::list().map(|d| d.into_iter().map(|d| d.name).collect()).unwrap_or_default();
    if a.interfaces.is_empty() {
        writeln!(w, "  no interfaces (HEP only)")?;
    }
    for i in &a.interfaces {
        let found = i == "any" || devices.contains(i);
        if !found {
            warnings.push(format!("interface {i} does not exist on this machine (have: {})", devices.join(", ")));
        }
        writeln!(w, "  {i}{}", if found { "" } else { "  (NOT FOUND on this machine)" })?;
    }
    writeln!(w, "  filter: {}", a.filter_for(true))?;
    writeln!(w, "  snap length {}, kernel buffer {}, immediate mode {}", a.snaplen, human_bytes(a.buffer_bytes as u64), if a.immediate { "on" } else { "off" })?;
    writeln!(w, "HEP: {}", a.hep_listen.map_or("off".to_string(), |h| format!("listening on {h}, receive queue {}", human_bytes(a.hep_receive_buffer as u64))))?;
    let writable = std::fs::create_dir_all(&a.store_dir).is_ok() && tempfile_in(&a.store_dir);
    if !writable {
        warnings.push(format!("the store directory {} is not writable by this user", a.store_dir.display()));
    }
    writeln!(
        w,
        "Store: {}{}, retention {} days, cache {}",
        a.store_dir.display(),
        if writable { "" } else { " (NOT WRITABLE)" },
        a.retention / 86_400_000_000,
        human_bytes(a.cache_bytes)
    )?;
    writeln!(w, "Status API: {}", a.status_listen)?;
    writeln!(w, "Log level: {}", a.log_level)?;
    if warnings.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for m in warnings {
            eprintln!("warning: {m}");
        }
        Ok(ExitCode::from(1))
    }
}

fn tempfile_in(dir: &std::path::Path) -> bool {
    let p = dir.join(format!(".cbt-agent-check-{}", std::process::id()));
    let ok = std::fs::write(&p, b"").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}
