//! cbt-agent: NHS Cloud Based Telephony figures from passively observed SIP.

use cbt_agent::{commands, daemon, replay};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cbt-agent", version, about = "Passive SIP monitor producing NHS Cloud Based Telephony (CBT) figures for GP practices", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: capture, store, serve status (systemd runs this).
    Run {
        /// The configuration file.
        #[arg(long, value_name = "FILE", default_value = cbt_agent::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show how the running service is doing.
    Status(commands::StatusArgs),
    /// Print what the store holds, as `replay` prints it (works while the service runs).
    Report(commands::ReportArgs),
    /// Validate a configuration file and say what the service would do with it.
    CheckConfig {
        /// The configuration file.
        #[arg(value_name = "FILE", default_value = cbt_agent::config::DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Run capture files through the engine and print what it finds.
    Replay(replay::ReplayArgs),
    /// Show what would be sent to the supplier's collector next (--dry-run).
    Upload(commands::UploadArgs),
    /// Write a month's NHS files and day documents into a directory (a supplier without a collector).
    Export(commands::ExportArgs),
    /// Make the practice page's password hash (page.lan.password_hash) or, with --token, a token.
    PagePassword(cbt_agent::page::access::PagePasswordArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => daemon::run(config),
        Command::Status(args) => commands::status(args),
        Command::Report(args) => commands::report(args),
        Command::CheckConfig { file } => commands::check_config(&file),
        Command::Replay(args) => replay::run(args),
        Command::Upload(args) => commands::upload(args),
        Command::Export(args) => commands::export(args),
        Command::PagePassword(args) => cbt_agent::page::access::page_password(args),
    };
    match result {
        Ok(code) => code,
        // the reader went away (`| head`): not an error
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cbt-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}
