//! cbt-agent: NHS Cloud Based Telephony figures from passively observed SIP.

use cbt_agent::cli::{Cli, Command};
use cbt_agent::{commands, daemon, doctor, replay};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => daemon::run(config),
        Command::Status(args) => commands::status(args),
        Command::Report(args) => commands::report(args),
        Command::CheckConfig(args) => commands::check_config(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Upload(args) => commands::upload(args),
        Command::Export(args) => commands::export(args),
        Command::Completions { shell } => {
            cbt_agent::cli::write_completions(shell, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => cbt_agent::cli::write_man_pages(&dir).map(|_| ExitCode::SUCCESS).map_err(Into::into),
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
