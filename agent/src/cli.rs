//! The command line, as a value: `main` parses it, and `cbt-agent man`
//! and `cbt-agent completions` render it (man pages and shell completions
//! for the Debian package are made from these very definitions).

use crate::{commands, replay};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cbt-agent",
    version,
    about = "Passive SIP monitor producing NHS Cloud Based Telephony (CBT) figures for GP practices",
    long_about = "cbt-agent watches a GP practice's SIP signalling (a mirror port, the PBX host, or HEPv3), reconstructs every call, and computes NHS England's Cloud Based Telephony indicators (CBT001-CBT007) and the nine Data Provision Notice metrics. Caller numbers never leave the machine.\n\nThe service runs `cbt-agent run` under systemd; the other commands inspect it, its store and its configuration. Documentation: /usr/share/doc/cbt-agent/."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service: capture, store, serve status (systemd runs this).
    Run {
        /// The configuration file.
        #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show how the running service is doing.
    Status(commands::StatusArgs),
    /// Print what the store holds, as `replay` prints it (works while the service runs).
    Report(commands::ReportArgs),
    /// Validate a configuration file and say what the service would do with it.
    CheckConfig(commands::CheckConfigArgs),
    /// Check an installation on the spot: rights, interfaces, traffic, roles, store, clock, upload.
    Doctor(crate::doctor::DoctorArgs),
    /// Run capture files through the engine and print what it finds.
    Replay(replay::ReplayArgs),
    /// Show what would be sent to the supplier's collector next (--dry-run).
    Upload(commands::UploadArgs),
    /// Write a month's NHS files and day documents into a directory (a supplier without a collector).
    Export(commands::ExportArgs),
    /// Make the practice page's password hash (page.lan.password_hash) or, with --token, a token.
    PagePassword(crate::page::access::PagePasswordArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (used to build the package).
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Writes `cbt-agent.1` and one page per command (`cbt-agent-run.1`...).
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut top = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut top)?;
    std::fs::write(dir.join("cbt-agent.1"), top)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name: &'static str = Box::leak(format!("cbt-agent-{}", sub.get_name()).into_boxed_str());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
    }
    Ok(())
}

/// Prints a completion script for `shell`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "cbt-agent", out);
}
