use anyhow::{Context, Result};
use cbt_collector::config::Config;
use cbt_collector::{participation, submission, tokens};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The IT supplier's collector for cbt-agent: receives the agents' day
/// documents over HTTPS into PostgreSQL and writes the monthly NHS England
/// submission. See docs/collector.md.
#[derive(Parser, Debug)]
#[command(name = "cbt-collector", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// The collector's configuration file.
    #[arg(long, value_name = "FILE", default_value = "/etc/cbt-collector/cbt-collector.toml")]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Migrate the database, then serve the agents' uploads and the status page.
    Serve(ConfigArg),
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Manage the agents' upload tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// NHS England's monthly participation list.
    #[command(subcommand)]
    Participation(ParticipationCmd),
    /// Write a month's NHS England files and their validation report.
    ///
    /// Exit status: 0 written and clean, 1 written with warnings (read
    /// validation.txt), 2 not written.
    Submission {
        #[command(flatten)]
        config: ConfigArg,
        /// The month, YYYY-MM.
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
        /// Where to write the files (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Leave out the Unassigned rows (calls on shared systems to numbers of no practice).
        #[arg(long)]
        no_unassigned: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token for an agent; it is printed once, as the last line.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// The agent's name: its upload.agent_id (by default its host name).
        #[arg(long, value_name = "NAME")]
        agent: String,
        /// An ODS code the agent may send (repeat for several; Unassigned is always allowed).
        #[arg(long = "practice", value_name = "ODS", required = true)]
        practices: Vec<String>,
    },
    /// Revoke every token of an agent, or one token.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "NAME", conflicts_with = "token_id", required_unless_present = "token_id")]
        agent: Option<String>,
        #[arg(long, value_name = "N")]
        token_id: Option<i64>,
    },
    /// List tokens (never the tokens themselves: only their hashes are kept).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ParticipationCmd {
    /// Replace a month's list with the PRACTICE_CODE column of a CSV file.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a month's list.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CBT_COLLECTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,cbt_collector={level}")));
    use std::io::IsTerminal;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false).init();
}

fn load(p: &std::path::Path) -> Result<Config> {
    let c = Config::load(p)?;
    init_logging(&c.log_level);
    Ok(c)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cbt-collector: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => {
            let c = Config::load(&file)?;
            println!("{}: valid (listen {}, {}, database {})", file.display(), c.listen, if c.tls.is_some() { "TLS" } else { "plain HTTP" }, c.database_display);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            let c = load(&a.config)?;
            runtime()?.block_on(cbt_collector::serve::run(c))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(t) => token(t),
        Command::Participation(p) => participation_cmd(p),
        Command::Submission { config, month, dir, no_unassigned } => {
            let c = load(&config.config)?;
            let month = participation::parse_month(&month)?;
            let rep = runtime()?.block_on(async {
                let pool = cbt_collector::db::open(&c).await?;
                submission::run(&pool, &submission::Request { month, dir: dir.clone(), include_unassigned: !no_unassigned }).await
            })?;
            match &rep.refused {
                Some(why) => eprintln!("cbt-collector: {} not written: {why}", rep.month),
                None => {
                    for f in &rep.files {
                        println!("{}: {} rows", dir.join(&f.name).display(), f.rows);
                    }
                }
            }
            for w in &rep.warnings {
                eprintln!("warning: {w}");
            }
            println!("{} (details there and in {})", dir.join(submission::VALIDATION_TXT).display(), submission::VALIDATION_JSON);
            Ok(ExitCode::from(rep.verdict.exit_code()))
        }
    }
}

fn token(t: TokenCmd) -> Result<ExitCode> {
    match t {
        TokenCmd::Add { config, agent, practices } => {
            let c = load(&config.config)?;
            tokens::check_agent_name(&agent)?;
            let (id, token) = runtime()?.block_on(async {
                let pool = cbt_collector::db::open(&c).await?;
                tokens::add(&pool, &agent, &practices).await
            })?;
            println!("token {id} for agent {agent}, practices {} (and Unassigned).", practices.join(", "));
            println!("Put it in the agent's configuration as upload.token; it is not shown again (only its hash is kept):");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Revoke { config, agent, token_id } => {
            let c = load(&config.config)?;
            let ids = runtime()?.block_on(async {
                let pool = cbt_collector::db::open(&c).await?;
                tokens::revoke(&pool, agent.as_deref(), token_id).await
            })?;
            if ids.is_empty() {
                eprintln!("cbt-collector: no active token matched (already revoked, or no such agent or id; see `token list`)");
                return Ok(ExitCode::from(1));
            }
            println!("revoked token(s) {}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::List { config, json } => {
            let c = load(&config.config)?;
            let list = runtime()?.block_on(async {
                let pool = cbt_collector::db::open(&c).await?;
                tokens::list(&pool).await
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:>5}  {:<24} {:<17} {:<17} {:<17} practices", "id", "agent", "created (UTC)", "revoked", "last upload");
                for t in &list {
                    println!(
                        "{:>5}  {:<24} {:<17} {:<17} {:<17} {}",
                        t.id,
                        t.agent,
                        t.created,
                        t.revoked.as_deref().unwrap_or("-"),
                        t.last_used.as_deref().unwrap_or("-"),
                        t.practices.join(" ")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn participation_cmd(p: ParticipationCmd) -> Result<ExitCode> {
    match p {
        ParticipationCmd::Import { config, month, file } => {
            let c = load(&config.config)?;
            let m = participation::parse_month(&month)?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let list = participation::parse_list(&bytes).with_context(|| format!("{}", file.display()))?;
            for (line, v) in &list.invalid {
                eprintln!("{}:{line}: {v:?} is not an ODS practice code (a letter and five digits); line skipped", file.display());
            }
            if list.practices.is_empty() {
                eprintln!("cbt-collector: {} holds no valid practice code; the list for {month} was not changed", file.display());
                return Ok(ExitCode::from(2));
            }
            let source = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            runtime()?.block_on(async {
                let pool = cbt_collector::db::open(&c).await?;
                participation::replace(&pool, m, &list.practices, &source).await.map_err(anyhow::Error::from)
            })?;
            println!(
                "participation list for {month}: {} practices imported from {}{}{}",
                list.practices.len(),
                file.display(),
                if list.duplicates > 0 { format!(", {} duplicate line(s) ignored", list.duplicates) } else { String::new() },
                if list.invalid.is_empty() { String::new() } else { format!(", {} invalid line(s) skipped", list.invalid.len()) }
            );
            Ok(if list.invalid.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        ParticipationCmd::Show { config, month } => {
            let c = load(&config.config)?;
            let m = participation::parse_month(&month)?;
            let list = runtime()?.block_on(async {
                let pool = cbt_collector::db::open(&c).await?;
                participation::list(&pool, m).await.map_err(anyhow::Error::from)
            })?;
            match list {
                None => {
                    eprintln!("cbt-collector: no participation list imported for {month}");
                    Ok(ExitCode::from(1))
                }
                Some(l) => {
                    for p in &l {
                        println!("{p}");
                    }
                    eprintln!("{} practices", l.len());
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}
