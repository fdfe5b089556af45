//! The operator's commands (SPEC §8): `status`, `list`, `show`, `pause`, `resume`,
//! `cancel`, `requeue` and `audit` ask the running worker through its admin socket;
//! when none runs they open the store themselves (never creating one) and run the same
//! request with the same code (`admin::ops`), so both paths print the same thing.

use super::load_config;
use crate::admin::client::{self, ClientError, Silence, Stage};
use crate::admin::{ops, Reply, Request};
use crate::config::Config;
use crate::exit;
use crate::store::{Filter, OpenOptions, Settings, State, Store, StoreError};
use chrono::Utc;
use std::io::Write;
use std::path::Path;

/// `--state` of `list`, `cancel` and `requeue`.
pub fn parse_state(s: &str) -> Result<State, String> {
    State::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
        let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        format!("`{s}` is not a state (one of {})", names.join(", "))
    })
}

/// `--kind` of `list`, `cancel` and `requeue`.
pub fn parse_kind(s: &str) -> Result<crate::policy::Kind, String> {
    crate::policy::Kind::parse(s).ok_or_else(|| {
        let names: Vec<&str> = crate::policy::Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("`{s}` is not a kind (one of {})", names.join(", "))
    })
}

/// Ask the worker, or the store when no worker runs. `Err` is the exit code (the
/// message is printed).
pub fn ask(config: Option<&Path>, req: &Request) -> Result<Reply, i32> {
    let config = load_config(config)?;
    ask_within(&config, req, client::EXCHANGE_TIMEOUT)
}

/// [`ask`], with the worker given `bound` for the whole exchange through its socket.
/// With no worker running, the command opens the store for this request and lets go of
/// it before it prints or logs anything: an output nobody reads (a pager left open, a
/// journal that stalls) never keeps the store from a worker that starts.
pub fn ask_within(config: &Config, req: &Request, bound: std::time::Duration) -> Result<Reply, i32> {
    let socket = crate::admin::server::socket_path(config);
    let reply = match client::call(&socket, req, bound) {
        Ok(reply) => reply,
        Err(ClientError::Failed(e)) => {
            eprintln!("sendgate: admin socket {e}");
            return Err(exit::FAILURE);
        }
        // The worker holds the store (it took the connection): the store is not read.
        Err(ClientError::NoAnswer(silence)) => {
            eprintln!(
                "sendgate: {}",
                no_answer(&silence, &config.store.path, req.mutates())
            );
            return Err(exit::FAILURE);
        }
        Err(ClientError::NoWorker) => from_store(config, &socket, req)?,
        // A command that only reads asks the store (which waits for a going worker's
        // lock); one that writes may have been carried out, so it is not run twice.
        Err(ClientError::Closed(_)) if !req.mutates() => from_store(config, &socket, req)?,
        Err(ClientError::Closed(e)) => {
            eprintln!(
                "sendgate: admin socket {e}; it may have stopped after carrying the command \
                 out: see `sendgate status`, then run the command again if needed"
            );
            return Err(exit::FAILURE);
        }
    };
    match reply {
        Reply::Error { message, exit } => {
            eprintln!("sendgate: {message}");
            Err(exit)
        }
        reply => Ok(reply),
    }
}

/// The message for a worker that did not answer within the bound: it names the socket
/// and the store, and for a command that writes, whether the worker may still carry it
/// out (it holds the whole request) or cannot (it never got it).
pub fn no_answer(silence: &Silence, store: &Path, mutates: bool) -> String {
    let what = match silence.stage {
        Stage::Connect => "did not take the connection",
        Stage::Send => "did not read the request",
        Stage::Answer => "did not answer",
        Stage::Reply => "did not finish its reply",
    };
    let head = format!(
        "admin socket {}: the worker {what} within {} s (stopped, as by `kill -STOP`, or hung); \
         its store {} was not read or changed by this command",
        silence.socket.display(),
        silence.waited.as_secs_f64(),
        store.display()
    );
    let tail = match (mutates, silence.stage.sent()) {
        (false, _) => "check the worker's process, then run the command again",
        (true, true) => {
            "the request was sent, so the worker may still carry it out when it runs again: \
             see `sendgate status` once it answers before running the command again"
        }
        (true, false) => {
            "the request did not reach the worker whole, so it will not be carried out: \
             check the worker's process, then run the command again"
        }
    };
    format!("{head}; {tail}")
}

/// Run `req` on the store, opened for it because no worker runs (never creating one),
/// and let go of before the events are logged.
fn from_store(config: &Config, socket: &Path, req: &Request) -> Result<Reply, i32> {
    let path = &config.store.path;
    let opts = OpenOptions {
        cache_mb: config.store.cache_mb,
        fail_from_op: None,
        ..OpenOptions::default()
    };
    let fail = |e: StoreError| {
        eprintln!("sendgate: {}", e.describe(path));
        e.exit_code()
    };
    // Never creates a store: a missing or empty path is an error naming it (exit 1).
    // A command that only reads leaves an older store in its format (an older build
    // still opens it); one that writes upgrades it first.
    let open = if req.mutates() {
        Store::open_existing
    } else {
        Store::open_read_only
    };
    let store = match open(path, Settings::from_config(config), opts) {
        Ok(s) => s,
        Err(e @ StoreError::Locked { .. }) => {
            eprintln!(
                "sendgate: {}; and its admin socket {} does not answer (check admin.socket)",
                e.describe(path),
                socket.display()
            );
            return Err(exit::FAILURE);
        }
        Err(e) => return Err(fail(e)),
    };
    if req.mutates() {
        // `paused`, `action_cancelled` and the rest are logged as the worker would.
        crate::log::init(config.log.format);
    }
    // A stopped worker's status is of now, on the real clock, unless `--at` is given:
    // never `clock.start`, which would show a past day.
    let now = Utc::now();
    let ctx = ops::Context {
        upstream: Default::default(),
        min_gap_s: config.pacing.min_gap_s,
        // No worker runs: nothing is dispatched, nothing owned.
        cluster: config.cluster.as_ref().map(|c| crate::cluster::ClusterStatus {
            state: "down".into(),
            node: c.node_name(),
            owned: Vec::new(),
        }),
    };
    let mut events = Vec::new();
    let reply = ops::execute(&store, req, now, &ctx, &mut events).map_err(fail)?;
    // A log nobody reads (a stalled journal) must not keep the store from a worker.
    drop(store);
    for e in &events {
        crate::log::event(e);
    }
    Ok(reply)
}

/// `list` (SPEC §8): asked a page at a time (`LIST_PAGE` rows), from the worker or,
/// when none runs, from the store, opened for each page and closed before the page is
/// printed. JSON lines are printed as each page comes; the table, whose columns fit
/// every row, once all are in.
pub fn list(config: Option<&Path>, filter: Filter, limit: usize, json: bool) -> i32 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut after = None;
    let mut got = 0usize;
    let mut table = Vec::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let req = Request::List {
            filter: filter.clone(),
            limit: if limit == 0 { 0 } else { limit - got },
            after: after.take(),
        };
        let (actions, more) = match ask_within(&config, &req, client::EXCHANGE_TIMEOUT) {
            Ok(Reply::List { actions, more }) => (actions, more),
            Ok(other) => return print(&other, json),
            Err(code) => return code,
        };
        got += actions.len();
        if json {
            for a in &actions {
                let line = serde_json::to_string(a).unwrap_or_default();
                // A reader that went away (`| head`) ends the listing quietly.
                if writeln!(out, "{line}").is_err() {
                    return exit::FAILURE;
                }
            }
            if out.flush().is_err() {
                return exit::FAILURE;
            }
        } else {
            table.extend(actions);
        }
        match more {
            Some(c) if limit == 0 || got < limit => after = Some(c),
            _ => break,
        }
    }
    if !json
        && write!(out, "{}", super::list::table(&table))
            .and_then(|()| out.flush())
            .is_err()
    {
        return exit::FAILURE;
    }
    exit::OK
}

/// Run a request and print its reply; returns the exit code.
pub fn run(config: Option<&Path>, req: Request, json: bool) -> i32 {
    match ask(config, &req) {
        Ok(reply) => print(&reply, json),
        Err(code) => code,
    }
}

fn print(reply: &Reply, json: bool) -> i32 {
    match reply {
        Reply::Status(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
            } else {
                print!("{}", super::status::table(r));
            }
        }
        Reply::List { actions, .. } => {
            if json {
                for a in actions {
                    println!("{}", serde_json::to_string(a).unwrap_or_default());
                }
            } else {
                print!("{}", super::list::table(actions));
            }
        }
        Reply::Show(h) => {
            if json {
                println!("{}", serde_json::to_string_pretty(h).unwrap_or_default());
            } else {
                print!("{}", super::list::show(h));
            }
        }
        Reply::Pause {
            scope,
            paused,
            changed,
        } => {
            if json {
                println!("{}", serde_json::to_string(reply).unwrap_or_default());
            } else {
                let what = if *paused { "paused" } else { "resumed" };
                let note = if *changed { "" } else { " (it already was)" };
                println!("{what}: {}{note}", scope.describe());
            }
        }
        Reply::Moved(m) => {
            if json {
                println!("{}", serde_json::to_string(m).unwrap_or_default());
            } else {
                println!("moved: {}, not movable: {}", m.moved, m.not_movable);
                for (id, why) in &m.refused {
                    println!("  {id}: {why}");
                }
                if m.not_movable > m.refused.len() as u64 {
                    println!("  ... and {} more", m.not_movable - m.refused.len() as u64);
                }
            }
        }
        Reply::Audit(report) => {
            super::audit::print(report, json);
            if !report.clean() {
                return exit::FAILURE;
            }
        }
        Reply::Error { message, exit } => {
            eprintln!("sendgate: {message}");
            return *exit;
        }
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn message(stage: Stage, mutates: bool) -> String {
        let silence = Silence {
            socket: PathBuf::from("/run/sg/admin.sock"),
            waited: client::EXCHANGE_TIMEOUT,
            stage,
        };
        no_answer(&silence, Path::new("/var/lib/sg/store"), mutates)
    }

    #[test]
    fn a_silent_worker_is_named_with_its_store_and_what_a_write_may_still_do() {
        let stages = [Stage::Connect, Stage::Send, Stage::Answer, Stage::Reply];
        for (stage, mutates) in stages.into_iter().flat_map(|s| [(s, false), (s, true)]) {
            let m = message(stage, mutates);
            let case = format!("{stage:?} mutates={mutates}: {m}");
            assert!(
                m.starts_with("admin socket /run/sg/admin.sock: the worker "),
                "{case}"
            );
            assert!(m.contains("within 35 s"), "{case}");
            assert!(m.contains("store /var/lib/sg/store"), "{case}");
            let may = m.contains("may still carry it out");
            assert_eq!(may, mutates && stage.sent(), "{case}");
            assert_eq!(
                m.contains("will not be carried out"),
                mutates && !stage.sent(),
                "{case}"
            );
        }
        assert!(message(Stage::Answer, false).contains("did not answer"));
        assert!(message(Stage::Connect, true).contains("did not take the connection"));
    }

    #[test]
    fn the_bound_is_the_worker_s_own_plus_a_margin() {
        let server = crate::admin::server::REQUEST_TIMEOUT;
        assert!(
            client::EXCHANGE_TIMEOUT > server,
            "the worker's own timeout reply must arrive"
        );
        assert!(client::EXCHANGE_TIMEOUT <= server + Duration::from_secs(10));
    }
}
