//! `cbt-agent replay`: capture files through the engine.

use crate::capture::Merged;
use crate::output::{leg_json, write_summary, LegTally};
use anyhow::Result;
use cbt_proto::{Engine, EngineConfig, LinkType};
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
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// What to print.
    #[arg(long, value_enum, default_value_t = Output::Legs)]
    output: Output,
    /// Print caller and callee numbers as seen instead of keyed hashes.
    #[arg(long)]
    reveal_numbers: bool,
    /// Secret keying the number hashes [default: the daemon's if readable,
    /// else $XDG_STATE_HOME/cbt-agent/secret, created on first use].
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// pcap or pcapng files; several are merged by timestamp.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let secret_path = args.secret_file.clone().unwrap_or_else(crate::secret::default_path);
    let key = crate::secret::load_or_create(&secret_path)?;
    let mut engine = Engine::new(EngineConfig {
        hash_key: key,
        ..EngineConfig::default()
    });
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut tally = LegTally::default();
    let mut unsupported = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    let mut emit = |engine: &mut Engine, out: &mut BufWriter<_>, tally: &mut LegTally| {
        while let Some(leg) = engine.poll_leg() {
            tally.add(&leg);
            if args.output == Output::Legs && write_err.is_none() {
                if let Err(e) = writeln!(out, "{}", leg_json(&leg, args.reveal_numbers)) {
                    write_err = Some(e);
                }
            }
        }
    };
    let mut inputs = Merged::open(&args.files);
    inputs.for_each(|pkt| {
        match LinkType::from_linktype(pkt.linktype) {
            Some(link) => engine.ingest(pkt.ts, link, &pkt.data),
            None => unsupported += 1,
        }
        emit(&mut engine, &mut out, &mut tally);
    });
    engine.finish();
    emit(&mut engine, &mut out, &mut tally);
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
            eprintln!("cbt-agent: {e}");
        }
        Ok(ExitCode::from(2))
    }
}
