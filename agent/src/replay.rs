//! `cbt-agent replay`: capture files through the engine.

use crate::book::{CallBook, CallsOutput};
use crate::capture::Merged;
use crate::config::Config;
use crate::output::{leg_json, write_summary, LegTally};
use anyhow::{bail, Result};
use cbt_proto::number::Hasher;
use cbt_proto::site::Site;
use cbt_proto::{Engine, EngineConfig, LinkType};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One JSON object per line per finished leg.
    Legs,
    /// A readable table: legs by status, parse errors, packets by link type.
    Summary,
    /// One JSON object per line per inbound call (needs --config).
    Calls,
    /// The CBT indicators and the nine DPN metrics per practice, as JSON (needs --config).
    Metrics,
    /// The same as a readable report (needs --config).
    Report,
    /// People needed on the phones by weekday and half-hour (Erlang C and A),
    /// one JSON object per line, from the weeks before --to (default: the
    /// last date with calls) as `[staffing]` says (needs --config).
    Staffing,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// What to print.
    #[arg(long, value_enum, default_value_t = Output::Legs)]
    pub output: Output,
    /// The site configuration (practices, numbers, network roles).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also write the three NHS England CSV files into this directory (needs --config).
    #[arg(long, value_name = "DIR")]
    pub nhs_csv: Option<PathBuf>,
    /// Leave the `Unassigned` rows (calls to numbers of no configured
    /// practice on a shared system) out of the CSV files.
    #[arg(long)]
    pub no_unassigned: bool,
    /// First local date reported by metrics, report and --nhs-csv [default: first call].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<NaiveDate>,
    /// Last local date reported [default: last call].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<NaiveDate>,
    /// Print caller and callee numbers of legs as seen instead of keyed hashes.
    #[arg(long)]
    pub reveal_numbers: bool,
    /// Secret keying the number hashes [default: the configuration's
    /// privacy.secret_file, else the daemon's if readable, else
    /// $XDG_STATE_HOME/cbt-agent/secret, created on first use].
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// pcap or pcapng files; several are merged by timestamp.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// The engine a replay runs: with the site's rules when there is a
/// configuration (calls), emitting legs when asked.
fn new_engine(config: Option<&Config>, key: [u8; 32], emit_legs: bool) -> (Option<Site>, Engine) {
    let country = config.map_or("44".to_string(), |c| c.site.country_code.clone());
    let site = config.map(|c| c.site(&Hasher::new(key, &country)));
    let engine = Engine::new(EngineConfig {
        hash_key: key,
        country_code: country,
        site: site.clone(),
        emit_legs,
        legs: config.map(|c| c.legs.clone()).unwrap_or_default(),
        // the same scanner rules and memory ceiling as the daemon
        guard: config.map(|c| c.guard.engine()).unwrap_or_default(),
        ..EngineConfig::default()
    });
    (site, engine)
}

/// The calls of capture files under a configuration (what `replay
/// --output calls` prints), for tests and tools that need them as values.
pub fn calls_of(config: &Config, key: [u8; 32], files: &[PathBuf]) -> (Site, CallBook) {
    let (site, mut engine) = new_engine(Some(config), key, false);
    let mut book = CallBook::default();
    Merged::open(files).for_each(|pkt| {
        if let Some(link) = LinkType::from_linktype(pkt.linktype) {
            engine.ingest(pkt.ts, link, &pkt.data);
        }
        while let Some(ev) = engine.poll_call() {
            book.apply(ev);
        }
    });
    engine.finish();
    while let Some(ev) = engine.poll_call() {
        book.apply(ev);
    }
    (site.expect("a configuration gives a site"), book)
}

/// Runs with the process's stdout and stderr.
pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(args, &mut stdout.lock(), &mut stderr.lock())
}

/// Runs, printing results to `out` and problems with the input to `err`.
pub fn run_with(args: ReplayArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<ExitCode> {
    let config = match &args.config {
        Some(p) => Some(Config::load(p)?),
        None => None,
    };
    let needs_site = matches!(args.output, Output::Calls | Output::Metrics | Output::Report | Output::Staffing) || args.nhs_csv.is_some();
    if needs_site && config.is_none() {
        bail!("--output calls, metrics, report, staffing and --nhs-csv need --config FILE: the practices, their numbers and the network roles (see docs/configuration.md)");
    }
    let secret_path = args
        .secret_file
        .clone()
        .or_else(|| config.as_ref().and_then(|c| c.secret_file.clone()))
        .unwrap_or_else(crate::secret::default_path);
    let key = crate::secret::load_or_create(&secret_path)?;
    let (site, mut engine) = new_engine(config.as_ref(), key, matches!(args.output, Output::Legs | Output::Summary));
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut tally = LegTally::default();
    let mut book = CallBook::default();
    let mut unsupported = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    let mut drain = |engine: &mut Engine, out: &mut BufWriter<_>, tally: &mut LegTally, book: &mut CallBook| {
        while let Some(leg) = engine.poll_leg() {
            tally.add(&leg);
            if args.output == Output::Legs && write_err.is_none() {
                if let Err(e) = writeln!(out, "{}", leg_json(&leg, args.reveal_numbers)) {
                    write_err = Some(e);
                }
            }
        }
        while let Some(ev) = engine.poll_call() {
            book.apply(ev);
        }
    };
    let mut inputs = Merged::open(&args.files);
    inputs.for_each(|pkt| {
        match LinkType::from_linktype(pkt.linktype) {
            Some(link) => engine.ingest(pkt.ts, link, &pkt.data),
            None => unsupported += 1,
        }
        drain(&mut engine, &mut out, &mut tally, &mut book);
    });
    engine.finish();
    drain(&mut engine, &mut out, &mut tally, &mut book);
    if let Some(site) = &site {
        let what = match args.output {
            Output::Calls => CallsOutput::Calls,
            Output::Metrics => CallsOutput::Metrics,
            Output::Report => CallsOutput::Report,
            Output::Legs | Output::Summary | Output::Staffing => CallsOutput::Nothing,
        };
        book.emit(site, what, args.from, args.to, args.nhs_csv.as_deref(), !args.no_unassigned, &mut out, err)?;
        if args.output == Output::Staffing {
            let params = config.as_ref().map(|c| c.page.staffing.params()).unwrap_or_default();
            crate::page::write_staffing(&mut out, &book.records(), site, &params, args.to)?;
        }
    }
    if args.output == Output::Summary {
        write_summary(&mut out, &tally, &engine.stats(), unsupported)?;
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        r => r?,
    }
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    if inputs.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &inputs.errors {
            writeln!(err, "cbt-agent: {e}")?;
        }
        Ok(ExitCode::from(2))
    }
}
