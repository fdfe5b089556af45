//! The command line (SPEC §8): argument parsing and dispatch. Each command lives in its
//! own file and returns an exit code (SPEC §10).

pub mod audit;
pub mod check;
pub mod list;
pub mod operator;
pub mod run;
pub mod simulate;
pub mod status;

use crate::admin::Request;
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
    /// Per account: use against every cap, ramp, health and why, holds, next send,
    /// waiting actions; per campaign: use and actions per state; the upstream.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only this account (and the campaigns it draws from).
        #[arg(long)]
        account: Option<String>,
        /// Only this campaign (and the accounts that draw from it).
        #[arg(long)]
        campaign: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Report as of this RFC 3339 time (default: now on the real clock, or the
        /// running worker's clock).
        #[arg(long, value_parser = parse_time)]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The matching actions, oldest first.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many (0: all).
        #[arg(long, default_value_t = crate::admin::protocol::DEFAULT_LIST_LIMIT)]
        limit: usize,
        /// One JSON object per line (JSON Lines).
        #[arg(long)]
        json: bool,
    },
    /// One action and its history: every reservation (with the limits in force).
    Show {
        #[arg(long)]
        config: Option<PathBuf>,
        action: String,
        #[arg(long)]
        json: bool,
    },
    /// Hold an account, a campaign or everything (--all: the kill switch).
    Pause(HoldArgs),
    /// Lift a hold set by `pause`.
    Resume(HoldArgs),
    /// Cancel queued or parked actions, by id or by filter.
    Cancel(MoveArgs),
    /// Queue failed or unknown actions again, by id or by filter.
    Requeue(MoveArgs),
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
        /// Also compare this host's ledger totals with the fleet's counters in etcd
        /// (needs `[cluster]`).
        #[arg(long)]
        cluster: bool,
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

/// `--state`, `--account`, `--campaign`, `--kind`.
#[derive(clap::Args, Debug, Default)]
pub struct FilterArgs {
    /// queued, parked, inflight, sent, failed, unknown or cancelled.
    #[arg(long, value_parser = operator::parse_state)]
    pub state: Option<crate::store::State>,
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub campaign: Option<String>,
    /// invite, message, inmail, profile_view, comment or reaction.
    #[arg(long, value_parser = operator::parse_kind)]
    pub kind: Option<crate::policy::Kind>,
}

impl FilterArgs {
    fn filter(self) -> crate::store::Filter {
        crate::store::Filter {
            state: self.state,
            account: self.account,
            campaign: self.campaign,
            kind: self.kind,
        }
    }

    fn given(&self) -> bool {
        self.state.is_some() || self.account.is_some() || self.campaign.is_some() || self.kind.is_some()
    }
}

/// `pause` / `resume`.
#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    scope: ScopeArgs,
    #[arg(long)]
    json: bool,
}

/// `cancel` / `requeue`.
#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Action ids (or give a filter).
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    #[arg(long)]
    json: bool,
}

/// Exactly one of `--account`, `--campaign`, `--all`.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub campaign: Option<String>,
    /// Everything: the kill switch.
    #[arg(long)]
    pub all: bool,
}

impl ScopeArgs {
    fn scope(self) -> crate::store::Scope {
        match (self.account, self.campaign) {
            (Some(a), _) => crate::store::Scope::Account(a),
            (None, Some(c)) => crate::store::Scope::Campaign(c),
            (None, None) => crate::store::Scope::All,
        }
    }
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("`{s}` is not an RFC 3339 time (like 2026-03-02T10:00:00Z)"))
}

/// `pause` (`paused`) or `resume`.
fn hold(a: HoldArgs, paused: bool) -> i32 {
    let scope = a.scope.scope();
    let req = if paused {
        Request::Pause { scope }
    } else {
        Request::Resume { scope }
    };
    operator::run(a.config.as_deref(), req, a.json)
}

/// `cancel` or `requeue`.
fn bulk_move(a: MoveArgs, cancel: bool) -> i32 {
    match bulk(a.ids, a.filter, cancel) {
        Ok(req) => operator::run(a.config.as_deref(), req, a.json),
        Err(code) => code,
    }
}

/// A bulk move: ids, or a filter naming a state, an account or a campaign (SPEC §8).
fn bulk(ids: Vec<String>, filter: FilterArgs, cancel: bool) -> Result<Request, i32> {
    let filter = match (ids.is_empty(), filter.given()) {
        (false, true) => {
            eprintln!("sendgate: give action ids or a filter, not both");
            return Err(exit::USAGE);
        }
        (true, false) => {
            eprintln!("sendgate: give action ids or a filter (--state, --account, --campaign)");
            return Err(exit::USAGE);
        }
        (false, false) => None,
        (true, true) => Some(filter.filter()),
    };
    let req = if cancel {
        Request::Cancel { ids, filter }
    } else {
        Request::Requeue { ids, filter }
    };
    if let Err(e) = req.validate() {
        eprintln!("sendgate: {e}");
        return Err(exit::USAGE);
    }
    Ok(req)
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
        Command::Status {
            config,
            account,
            campaign,
            json,
            at,
        } => operator::run(
            config.as_deref(),
            Request::Status {
                account,
                campaign,
                at,
            },
            json,
        ),
        Command::List {
            config,
            filter,
            limit,
            json,
        } => operator::list(config.as_deref(), filter.filter(), limit, json),
        Command::Show { config, action, json } => {
            operator::run(config.as_deref(), Request::Show { action }, json)
        }
        Command::Pause(a) => hold(a, true),
        Command::Resume(a) => hold(a, false),
        Command::Cancel(a) => bulk_move(a, true),
        Command::Requeue(a) => bulk_move(a, false),
        Command::Audit {
            config,
            from,
            to,
            cluster: false,
            json,
        } => audit::run(config.as_deref(), from.as_deref(), to.as_deref(), json),
        Command::Audit {
            config,
            from,
            to,
            cluster: true,
            json,
        } => audit::run_cluster(config.as_deref(), from.as_deref(), to.as_deref(), json),
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
