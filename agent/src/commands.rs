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
use chrono::{Datelike, NaiveDate};
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

/// The status API's address, and where it came from (for messages).
fn listen_of(config: Option<&PathBuf>, url: Option<&str>) -> Result<(Listen, String)> {
    if let Some(u) = url {
        let l = match u.strip_prefix("unix:") {
            Some(p) => Listen::Unix(PathBuf::from(p)),
            None => Listen::Tcp(u.trim_start_matches("http://").trim_end_matches('/').parse().with_context(|| format!("`{u}` is not address:port"))?),
        };
        return Ok((l, "given with --url".into()));
    }
    let path = config.cloned().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG));
    match Config::load(&path) {
        Ok(c) => Ok((c.agent.status_listen, format!("status.listen of {}", path.display()))),
        Err(e) if config.is_none() => {
            let why = e.problems.first().map_or_else(String::new, |p| format!("{}; {}", p.message, p.fix));
            eprintln!("note: {} could not be read ({why}); trying the default address {DEFAULT_STATUS}", path.display());
            Ok((Listen::Tcp(DEFAULT_STATUS.parse().expect("default")), format!("the default address, as {} could not be read", path.display())))
        }
        Err(e) => Err(e.into()),
    }
}

/// `cbt-agent status`: exit 0 when healthy, 1 when a diagnostic is an
/// error, 3 when the service is not running.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let (listen, from) = listen_of(args.config.as_ref(), args.url.as_deref())?;
    let body = match client::get(&listen, "/status") {
        Ok(b) => b,
        Err(e) if client::is_not_running(&e) => {
            eprintln!("cbt-agent is not running (nothing answers at {listen}, {from}); start it with `sudo systemctl start cbt-agent`");
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
    let u = &s.upload;
    if u.enabled {
        writeln!(
            w,
            "Upload: to {} as {}; {} documents waiting{}{}; last delivered {}",
            u.url,
            u.agent_id,
            u.outbox,
            u.oldest_undelivered.as_ref().map_or(String::new(), |d| format!(" (oldest day {d})")),
            if u.parked.is_empty() { String::new() } else { format!(", {} PARKED", u.parked.len()) },
            u.last_success.as_ref().map_or("never".to_string(), |d| format!("{} ({} {} revision {}: {})", d.at, d.practice, d.date, d.revision, d.result))
        )?;
        if let Some(e) = &u.last_error {
            writeln!(w, "  last error {}: {}", e.at, e.message)?;
        }
        for p in &u.parked {
            writeln!(w, "  parked {} {} revision {}: {}", p.practice, p.date, p.revision, p.reason)?;
        }
    } else {
        writeln!(w, "Upload: off (no [upload] in the configuration; figures stay on this machine)")?;
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
    /// People needed on the phones by weekday and half-hour, one JSON object
    /// per line (from the weeks before --to, default the last date with calls; `[staffing]` settings).
    Staffing,
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
    /// Leave the `Unassigned` rows out of the CSV files.
    #[arg(long)]
    pub no_unassigned: bool,
}

/// `cbt-agent report`: from the running service's API, else from the store.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    // callbacks made in the period may be of calls up to 3 days before it
    // (as the page reads it); only the days asked for are read
    let calls_from = args.from.map(|f| f - chrono::Duration::days(3));
    let range = |from: Option<NaiveDate>| {
        let q: Vec<String> = [from.map(|f| format!("from={f}")), args.to.map(|t| format!("to={t}"))].into_iter().flatten().collect();
        q.join("&")
    };
    type Days = Vec<((String, NaiveDate), Day)>;
    let (records, days, pruned, problems): (Vec<CallRecord>, Days, Option<Timestamp>, Vec<String>) =
        match client::get(&config.agent.status_listen, &format!("/api/calls?{}", range(calls_from))) {
            Ok(body) => {
                let calls: Vec<crate::output::CallJson> = serde_json::from_str(&body).context("the service's call list is unreadable")?;
                let records = calls.iter().map(|c| c.record()).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("the service's call list is unreadable: {e}"))?;
                let d: serde_json::Value = serde_json::from_str(&client::get(&config.agent.status_listen, &format!("/api/days?{}", range(args.from)))?)?;
                let problems = serde_json::from_value(d["problems"].clone()).unwrap_or_default();
                (records, serde_json::from_value(d["days"].clone())?, serde_json::from_value(d["pruned_before"].clone())?, problems)
            }
            Err(e) if client::is_not_running(&e) => {
                let store = Store::open(&config.agent.store_dir, config.agent.cache_bytes)
                    .with_context(|| format!("the service is not running and its store in {} cannot be opened", config.agent.store_dir.display()))?;
                // only the period is read (what it holds that cannot be
                // read is reported below), not every stored call
                let site = config.site(&Hasher::new([0; 32], &config.site.country_code));
                let (from, to) = crate::store::local_span(&site, calls_from, args.to);
                let r = (store.calls_between(from, to)?, store.days_between(args.from, args.to)?, store.pruned_before()?);
                (r.0, r.1, r.2, store.problems())
            }
            Err(e) => return Err(e),
        };
    // the numbers' hashes play no part in a report: no secret is needed
    let site = config.site(&Hasher::new([0; 32], &config.site.country_code));
    // calls before the cut that a prune cut short left count from the
    // stored figures of their days, as every other call before it
    let records = records.into_iter().filter(|r| pruned.is_none_or(|cut| r.started >= cut)).collect();
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
        ReportOutput::Staffing => CallsOutput::Nothing,
    };
    let (out, err) = (std::io::stdout(), std::io::stderr());
    book.emit(&site, what, args.from, args.to, args.nhs_csv.as_deref(), !args.no_unassigned, &mut out.lock(), &mut err.lock())?;
    if args.output == ReportOutput::Staffing {
        crate::page::write_staffing(&mut out.lock(), &book.records(), &site, &config.page.staffing.params(), args.to)?;
    }
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

#[derive(Args, Debug)]
pub struct CheckConfigArgs {
    /// The configuration file.
    #[arg(value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    pub file: PathBuf,
    /// The service's own start-up check (systemd's ExecStartPre): fail only
    /// for what makes running pointless (an invalid file, a store the
    /// service can never write); what the service waits out or retries (a
    /// missing interface, an unreachable collector) is only reported.
    #[arg(long)]
    pub service: bool,
}

/// Can this user write `dir` (or create it: the nearest existing ancestor)?
/// Asks the kernel (access(2)), which also knows read-only mounts such as
/// the service's sandbox; creates nothing.
pub fn writable(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = dir.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return Err("no part of the path exists".into());
        }
    }
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| "the path holds a NUL byte".to_string())?;
    // SAFETY: access(2) reads a NUL-terminated path we own.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(format!("{} is not writable by this user ({})", p.display(), std::io::Error::last_os_error()))
    }
}

/// `cbt-agent check-config FILE`: 0 valid (warnings printed), 1 valid but
/// this machine does not match it (a missing interface, a store this user
/// cannot write), 2 invalid. With `--service`: 2 only for what stops the
/// service for good, else 0.
pub fn check_config(args: CheckConfigArgs) -> Result<ExitCode> {
    let path = &args.file;
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let out = std::io::stdout();
    let mut w = out.lock();
    let mut machine = Vec::new();
    let mut fatal = Vec::new();
    if !args.service {
        writeln!(w, "{} is valid.", path.display())?;
        describe(&mut w, &c)?;
    }
    let a = &c.agent;
    let devices: Vec<String> = pcap::Device::list().map(|d| d.into_iter().map(|d| d.name).collect()).unwrap_or_default();
    for i in a.interfaces.iter().filter(|i| *i != "any" && !devices.contains(i)) {
        machine.push(format!("interface {i} does not exist on this machine (have: {}); the service waits for it", devices.join(", ")));
    }
    if let Err(e) = writable(&a.store_dir) {
        let default = std::path::Path::new(crate::config::DEFAULT_STORE);
        if args.service && !a.store_dir.starts_with(default) {
            fatal.push(format!(
                "store.dir {}: {e}. The service may write only {} (systemd ProtectSystem=strict): use that, or allow the directory with a drop-in (`systemctl edit cbt-agent`: [Service] ReadWritePaths={}), see docs/operations.md",
                a.store_dir.display(),
                default.display(),
                a.store_dir.display()
            ));
        } else {
            machine.push(format!("store.dir {}: {e}", a.store_dir.display()));
        }
    }
    if let Some(u) = &c.upload {
        if let Err(e) = std::fs::File::open(&u.token_file) {
            machine.push(format!("upload.token_file {}: {e}; documents are not sent until it can be read", u.token_file.display()));
        }
        if let Some(ca) = &u.ca_file {
            if let Err(e) = std::fs::File::open(ca) {
                machine.push(format!("upload.ca_file {}: {e}", ca.display()));
            }
        }
    }
    for p in &c.warnings {
        eprintln!("warning: {}:{}: {}: {}; fix: {}", path.display(), p.line, p.key, p.message, p.fix);
    }
    for m in &machine {
        eprintln!("warning: {m}");
    }
    for f in &fatal {
        eprintln!("error: {f}");
    }
    Ok(if !fatal.is_empty() {
        ExitCode::from(2)
    } else if !machine.is_empty() && !args.service {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What the service would do with a configuration, for people.
fn describe(w: &mut dyn Write, c: &Config) -> Result<()> {
    writeln!(w, "Practices (times in {})", c.site.timezone.name())?;
    for p in &c.site.practices {
        writeln!(w, "  {}{}: {}", p.ods, p.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(), if p.numbers.is_empty() { "no numbers: every inbound call".into() } else { p.numbers.join(", ") })?;
    }
    if c.site.practices.len() > 1 {
        writeln!(w, "  calls to other numbers: Unassigned")?;
    }
    let list = |v: Vec<String>| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let addrs = |v: &[cbt_proto::site::AddrMatch]| list(v.iter().map(|a| a.to_string()).collect());
    writeln!(w, "Network roles")?;
    writeln!(w, "  carrier:   {} (and anything outside the site)", addrs(&c.site.carrier))?;
    writeln!(w, "  pbx:       {}", addrs(&c.site.pbx))?;
    writeln!(w, "  staff:     {}; extensions {}", addrs(&c.site.staff), list(c.site.staff_extensions.iter().map(|p| p.as_str().to_string()).collect()))?;
    if !c.site.pickup_codes.is_empty() {
        writeln!(w, "  pickup:    {}", list(c.site.pickup_codes.iter().map(|p| p.as_str().to_string()).collect()))?;
    }
    writeln!(w, "  automated: {}; voicemail {}; queue {}", list(c.site.automated.clone()), list(c.site.voicemail.clone()), list(c.site.queue.clone()))?;
    let span = |d: cbt_proto::time::Micros| crate::config::format_duration(d);
    writeln!(
        w,
        "Callbacks: requested via {}{}, counted within {}",
        list(c.site.callback_request.clone()),
        c.site.callback_header.as_ref().map(|h| format!(" or header {h}")).unwrap_or_default(),
        match c.site.callback_window {
            cbt_proto::site::CallbackWindow::SameDay => "the same day".to_string(),
            cbt_proto::site::CallbackWindow::Within(d) => span(d),
        }
    )?;
    writeln!(w, "Correlation: B2BUA heuristic {}, headers {}, settle {}", if c.site.b2bua { "on" } else { "off" }, list(c.site.correlation_headers.clone()), span(c.site.settle))?;
    writeln!(w, "Calls: ring timeout {}, longest call {}", span(c.legs.ring_timeout), span(c.legs.max_call))?;
    let a = &c.agent;
    writeln!(w, "Capture")?;
    if a.interfaces.is_empty() {
        writeln!(w, "  no interfaces (HEP only)")?;
    }
    for i in &a.interfaces {
        writeln!(w, "  {i}")?;
    }
    writeln!(w, "  filter: {}", a.filter_for(true))?;
    writeln!(w, "  snap length {}, kernel buffer {}, immediate mode {}", a.snaplen, human_bytes(a.buffer_bytes as u64), if a.immediate { "on" } else { "off" })?;
    writeln!(w, "HEP: {}", a.hep_listen.map_or("off".to_string(), |h| format!("listening on {h}, receive queue {}", human_bytes(a.hep_receive_buffer as u64))))?;
    writeln!(
        w,
        "Store: {}, call records kept {}, day figures {}, snapshot every {}, cache {}",
        a.store_dir.display(),
        span(a.call_retention),
        span(a.retention),
        span(a.snapshot_every),
        human_bytes(a.cache_bytes)
    )?;
    writeln!(w, "Status API: {}", a.status_listen)?;
    match &c.upload {
        Some(u) => writeln!(
            w,
            "Upload: to {} as {}, today's figures every {}, retries back off to {}{}",
            u.days_url(),
            u.agent_id,
            span(u.interval),
            span(u.max_backoff),
            u.proxy.as_ref().map(|p| format!(", through {p}")).unwrap_or_default()
        )?,
        None => writeln!(w, "Upload: off (figures stay on this machine; `cbt-agent export` writes them for a month)")?,
    }
    crate::page::check_config_lines(w, &c.page)?;
    writeln!(w, "Log level: {}", a.log_level)?;
    Ok(())
}


/// Asks the running service's API for `path`, else opens the store itself
/// (the service is stopped) and computes the same with `offline`.
fn from_service_or_store<T: serde::de::DeserializeOwned>(
    config: &Config,
    path: &str,
    offline: impl FnOnce(&Store, &cbt_proto::site::Site, &str) -> Result<T>,
) -> Result<T> {
    match client::get(&config.agent.status_listen, path) {
        Ok(body) => serde_json::from_str(&body).with_context(|| format!("the service's answer to {path} is unreadable")),
        Err(e) if client::is_not_running(&e) => {
            let store = Store::open(&config.agent.store_dir, config.agent.cache_bytes)
                .with_context(|| format!("the service is not running and its store in {} cannot be opened", config.agent.store_dir.display()))?;
            let site = config.site(&Hasher::new([0; 32], &config.site.country_code));
            offline(&store, &site, &crate::upload::agent_id(config.upload.as_ref()))
        }
        Err(e) => Err(e),
    }
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Print what waits in the outbox and today's documents as they would be
    /// sent now, one JSON object per line; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `cbt-agent upload --dry-run`.
pub fn upload(args: UploadArgs) -> Result<ExitCode> {
    if !args.dry_run {
        eprintln!("cbt-agent upload: the service sends documents by itself; give --dry-run to see what it would send (`systemctl reload cbt-agent` sends parked documents again)");
        return Ok(ExitCode::from(2));
    }
    let config = Config::load(&args.config)?;
    if config.upload.is_none() {
        eprintln!("note: {} has no [upload] section: nothing is sent; these are the documents it would send", args.config.display());
    }
    #[derive(serde::Deserialize)]
    struct View {
        outbox: Vec<cbt_proto::persist::v1::OutboxItemV1>,
        next: Vec<cbt_proto::upload::DayDocument>,
    }
    let view: View = from_service_or_store(&config, "/api/upload", |store, site, agent| {
        let now = crate::daemon::capture::now();
        let today = cbt_proto::metrics::Aggregator::new(site).local_date(now);
        Ok(View {
            outbox: store.outbox_items()?,
            next: crate::upload::documents_between(store, site, agent, today, today, now)?,
        })
    })?;
    let out = std::io::stdout();
    let mut w = out.lock();
    for i in &view.outbox {
        let doc: serde_json::Value = serde_json::from_str(&i.body).unwrap_or(serde_json::Value::Null);
        let line = serde_json::json!({
            "queued": {"practice": i.practice, "date": i.date, "revision": i.revision, "final": i.is_final,
                       "attempts": i.attempts, "next_attempt": i.next_attempt.to_rfc3339(), "last_error": i.last_error, "parked": i.parked},
            "document": doc,
        });
        writeln!(w, "{line}")?;
    }
    for d in &view.next {
        writeln!(w, "{}", serde_json::json!({ "next": {"practice": d.practice, "date": d.date}, "document": d }))?;
    }
    eprintln!("{} documents queued, {} made for today", view.outbox.len(), view.next.len());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The month to export: YYYY-MM, or `previous` (the month before this one).
    #[arg(long, value_name = "YYYY-MM")]
    pub month: String,
    /// Where to write the three NHS files and the day documents.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Leave the `Unassigned` rows out of the CSV files.
    #[arg(long)]
    pub no_unassigned: bool,
}

/// The first and last date of `YYYY-MM`, or of the month before this one
/// (`previous`, in local time: what a timer on the 1st-5th exports).
pub fn month_span(month: &str) -> Result<(NaiveDate, NaiveDate)> {
    let first = if month.trim() == "previous" {
        let today = chrono::Local::now().date_naive();
        NaiveDate::from_ymd_opt(today.year(), today.month(), 1)
            .and_then(|d| d.checked_sub_months(chrono::Months::new(1)))
            .context("month out of range")?
    } else {
        NaiveDate::parse_from_str(&format!("{}-01", month.trim()), "%Y-%m-%d")
            .with_context(|| format!("`{month}` is not a month: write it as YYYY-MM, like 2026-11, or `previous`"))?
    };
    let next = first.checked_add_months(chrono::Months::new(1)).context("month out of range")?;
    Ok((first, next.pred_opt().context("month out of range")?))
}

/// `cbt-agent export --month YYYY-MM --dir D`: for a supplier without a
/// collector, the month's three NHS files (made from the day documents,
/// exactly as a collector would) and the documents themselves.
pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let (from, to) = month_span(&args.month)?;
    let docs: Vec<cbt_proto::upload::DayDocument> = from_service_or_store(&config, &format!("/api/documents?from={from}&to={to}"), |store, site, agent| {
        crate::upload::documents_between(store, site, agent, from, to, crate::daemon::capture::now())
    })?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let docs_dir = args.dir.join("documents");
    std::fs::create_dir_all(&docs_dir)?;
    for d in &docs {
        let path = docs_dir.join(format!("{}-{}.json", d.date, d.practice));
        std::fs::write(&path, serde_json::to_string_pretty(d)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let fig = cbt_proto::upload::DocFigures::from_documents(&docs).map_err(|e| anyhow::anyhow!(e))?;
    let (first, last) = fig.span().unwrap_or((from, to));
    crate::output::write_nhs_csv(&args.dir, fig.figures(), !args.no_unassigned, first, last)
        .with_context(|| format!("cannot write the CSV files into {}", args.dir.display()))?;
    let not_final = docs.iter().filter(|d| !d.is_final).count();
    eprintln!(
        "wrote {} day documents and the three NHS files for {first} to {last} into {}{}",
        docs.len(),
        args.dir.display(),
        if not_final > 0 { format!(" ({not_final} documents are of days not over yet)") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}
