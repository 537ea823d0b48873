//! cbt-agent: NHS Cloud Based Telephony figures from passively observed SIP.

use cbt_agent::replay;

use clap::{Parser, Subcommand};

use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cbt-agent", version, about = "Passive SIP monitor producing NHS Cloud Based Telephony (CBT) figures for GP practices", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run capture files through the engine and print what it finds.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cbt-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

