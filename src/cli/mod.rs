//! The command line (SPEC §8): argument parsing and dispatch. Each command lives in its
//! own file and returns an exit code (SPEC §10).

pub mod audit;
pub mod check;
pub mod run;
pub mod simulate;
pub mod status;

use crate::config::{Config, DEFAULT_CONFIG_FILE};
use crate::exit;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "sendgate",
    version,
    about = "Sends LinkedIn outreach actions without ever going over a cap"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the worker: apply job files from the spool, send due actions upstream.
    Run {
        /// Config file (default: ./sendgate.toml if present, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate job files without a store; print every error with file, line and field.
    Check {
        /// Job files (.jsonl or .json).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Per-account counters, caps, ramp, health, holds and credits; action counts.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recompute every counter from the ledger and report any overshoot.
    Audit {
        #[arg(long)]
        config: Option<PathBuf>,
        /// First local day to check (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Last local day to check (YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the whole engine against a simulated LinkedIn on a virtual clock.
    Simulate {
        #[arg(long, default_value_t = 42)]
        days: u32,
        #[arg(long, default_value_t = 3)]
        accounts: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write a chart of sends per day against the caps.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

/// Parse the process arguments and run the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::USAGE } else { exit::OK };
        }
    };
    match cli.command {
        Command::Check { files } => check::run(&files),
        Command::Run { config } => run::run(config.as_deref()),
        Command::Status { config, json } => status::run(config.as_deref(), json),
        Command::Audit {
            config,
            from,
            to,
            json,
        } => audit::run(config.as_deref(), from.as_deref(), to.as_deref(), json),
        Command::Simulate {
            days,
            accounts,
            seed,
            svg,
        } => simulate::run(days, accounts, seed, svg.as_deref()),
    }
}

/// The config of `--config PATH`, else `./sendgate.toml` if present, else the
/// zero-config defaults. A bad file is reported and maps to exit 78.
pub fn load_config(path: Option<&Path>) -> Result<Config, i32> {
    let default = Path::new(DEFAULT_CONFIG_FILE);
    let chosen = path.or_else(|| default.exists().then_some(default));
    match chosen {
        None => Ok(Config::zero_config()),
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("sendgate: config error: {e}");
            exit::CONFIG
        }),
    }
}
