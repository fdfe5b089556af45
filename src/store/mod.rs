//! The store: the only code that touches sled. Accounts, campaigns, actions, the due
//! queues, per-day counters, the reservation ledger and applied job files live here,
//! and every change is one sled transaction.
//!
//! The durability boundary is [`Store::make_durable`]: sled's `flush` (which issues
//! `sync_file_range`, not a full sync) followed by `fdatasync` of `db` and an fsync of
//! every other file sled created since (and of the directories they appeared in). A
//! reservation is handed to the caller only after it returns, so no upstream call ever
//! fires on a reservation a crash or power cut could undo (SPEC P2).
//!
//! A store is created only where there is nothing; one that was emptied, replaced or
//! rolled back is refused (`identity.rs`).
//!
//! Every failure is a [`StoreError`] and every `StoreError` is fatal (SPEC P5): business
//! outcomes — a blocked action, a rejected file — are ordinary return values, so `?`
//! can never turn a broken store into "skip this one".

mod apply;
mod behind;
pub mod codec;
mod edge;
mod feed;
mod fleet;
pub mod identity;
mod ingest;
pub mod lock;
mod operator;
mod outcome;
mod query;
pub mod records;
mod reserve;
pub mod timing;
mod tx;
pub mod wire;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod writes;

pub use apply::ApplyOutcome;
pub use apply::{Applied, EventEffect};
pub use feed::{PageApplied, PageOutcome};
pub use fleet::{Route, DUPLICATE_IN_FLEET, OWNED_ELSEWHERE, OWNED_ELSEWHERE_BATCH};
pub use ingest::{scan, Begin, Ingest, Scanned, Source, Stamp, CHUNK_RECORDS};
pub use operator::{ActionRow, Filter, History, ListCursor, Move, MoveReport, OutcomeRow, Pauses, Scope};
pub use outcome::{Attempt, Recorded};
pub use query::{
    AccountCampaign, AccountStatus, AuditReport, CampaignStatus, CampaignToday, DaySummary, DayTurn,
    LedgerSum, Overshoot, StatusReport, UpstreamStatus, Use, Waiting, TOMBSTONE_DAYS,
};
pub use records::{Account, Action, Campaign, FileReport, State};
pub use reserve::{kinds_blocked_by, Change, Folded, Hold, ParkedAction, Reservation, ReserveResult};

use crate::config::Policy;
use codec::FORMAT_VERSION;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
pub use tx::Rejection;
use tx::{Abort, Tx};

/// Tree indexes into `Store::trees`.
const ACCOUNTS: usize = 0;
const CAMPAIGNS: usize = 1;
const ACTIONS: usize = 2;
const READY: usize = 3;
const TIMED: usize = 4;
const WAITING: usize = 5;
const DAYS: usize = 6;
const LEDGER: usize = 7;
const FILES: usize = 8;
const LINKS: usize = 9;
const INFLIGHT: usize = 10;
const META: usize = 11;
/// Actions and links of a job file being ingested, invisible until it is committed and
/// published (`ingest.rs`).
const STAGED: usize = 12;
/// What an action is (`wire::ActionBodyW`), written once at ingest and never rewritten;
/// `actions` holds what changes (format 3).
const BODIES: usize = 13;
/// What a transaction of the send path changed, until it is in its trees
/// (`behind.rs`, format 5).
const WAL: usize = 14;
/// The trees, by index. The order never changes: `wal` records name trees by index.
const TREE_NAMES: [&str; 15] = [
    "accounts",
    "campaigns",
    "actions",
    "ready",
    "timed",
    "waiting",
    "days",
    "ledger",
    "files",
    "links",
    "inflight",
    "meta",
    "staged",
    "bodies",
    "wal",
];

const META_FORMAT: &[u8] = b"format_version";
const META_COUNTS: &[u8] = b"state_counts";
/// The store id, also in the identity file (`identity.rs`).
const META_STORE_ID: &[u8] = b"store_id";
/// The ledger high-water mark as last written to the identity file: pruning may empty
/// the ledger, this keeps the data's own mark from going back.
const META_LEDGER_MARK: &[u8] = b"ledger_mark";
/// Present once any `invite_accepted` event has been applied (SPEC §3.4).
const META_FEEDBACK_SEEN: &[u8] = b"feedback_seen";

/// The ledger high-water mark goes to the identity file at most this often (and at a
/// clean stop): it costs a file write, an fsync and a directory fsync, never one per
/// reservation. A copy of the store older than this is not told apart from the
/// current one; an emptied or replaced store always is (the store id).
pub const MARK_EVERY: Duration = Duration::from_secs(60);

/// The error for an `actions` value at `key` that does not decode.
fn undecodable_action(key: &[u8], e: String) -> StoreError {
    StoreError::Corrupt(format!(
        "cannot decode action at key \"{}\": {e}",
        key.escape_ascii()
    ))
}

/// A sled transaction's result as the store reports it: an `Abort::Reject` as
/// `Ok(Err(reason))`; corruption and I/O errors fatal.
fn committed<T>(
    result: Result<T, sled::transaction::TransactionError<Abort>>,
) -> Result<Result<T, tx::Rejection>, StoreError> {
    use sled::transaction::TransactionError;
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(TransactionError::Abort(Abort::Reject(r))) => Ok(Err(r)),
        Err(TransactionError::Abort(Abort::Corrupt(m))) => Err(StoreError::Corrupt(m)),
        Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
    }
}

/// Every tree of the store, in `TREE_NAMES` order (the indexes `ACTIONS`, `META`, ...).
fn open_trees(db: &sled::Db) -> Result<Vec<sled::Tree>, StoreError> {
    Ok(TREE_NAMES
        .iter()
        .map(|n| db.open_tree(n))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The length of `file` (sled's `db`, at `path`).
fn file_len(file: &File, path: &Path) -> Result<u64, StoreError> {
    Ok(file.metadata().map_err(io("read the size of", path))?.len())
}

/// sled's open failed because another handle (another process, or one of ours just
/// dropped) still holds the store's file lock.
fn lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Open sled at `path`, first clearing the snapshots a kill left unfinished; while the
/// store's lock is held, try again as long as `lock::step` says (a holder that is gone
/// or going, for an open; sled's own threads, for a close), then report who holds it.
fn open_sled(path: &Path, cache_bytes: u64, patience: lock::Patience) -> Result<sled::Db, StoreError> {
    let shown = path.display().to_string();
    let first = Instant::now();
    let mut told = false;
    // Each holder seen gets its own wait (`lock::step`), counted from when it was first
    // seen: a command that just let go leaves a lock no longer listed, whose 250 ms
    // must not be spent already. All of them together wait at most `lock::ALL_WAIT`.
    let mut seen: Option<(lock::Holder, Instant)> = None;
    loop {
        // A kill while sled wrote its snapshot must not stop every later open.
        identity::clear_unfinished_snapshots(path)?;
        let e = match sled_config(path, cache_bytes).open() {
            Ok(db) => return Ok(db),
            Err(e) => e,
        };
        if !lock_held(&e) {
            return Err(match e {
                sled::Error::Io(source) => StoreError::Io {
                    op: "open",
                    path: shown,
                    source,
                },
                sled::Error::Corruption { .. } => StoreError::Corrupt(format!("{shown}: {e}")),
                other => StoreError::Sled(other),
            });
        }
        let holder = identity::observe_holder(&path.join("db"));
        let command = match &holder {
            lock::Holder::Live(pid, lock::Name::Command(c)) => Some((*pid, c.as_str())),
            _ => None,
        };
        if let (Some((pid, c)), false) = (command, told) {
            told = true;
            tracing::warn!(
                store = %shown,
                pid,
                "the store is open in a `sendgate {c}` command (pid {pid}); waiting up to {} s for it to finish",
                lock::COMMAND_WAIT.as_secs()
            );
        }
        let since = match &seen {
            Some((h, t)) if *h == holder => *t,
            _ => Instant::now(),
        };
        seen = Some((holder.clone(), since));
        let step = if first.elapsed() >= lock::ALL_WAIT {
            lock::Step::Fail
        } else {
            // A close waits for its own handle, however it reads, from the first try.
            let waited = match patience {
                lock::Patience::Close => first.elapsed(),
                lock::Patience::Open => since.elapsed(),
            };
            lock::step(&holder, patience, waited)
        };
        match step {
            lock::Step::Retry if command.is_some() => std::thread::sleep(lock::COMMAND_POLL),
            lock::Step::Retry => std::thread::sleep(lock::POLL),
            lock::Step::Fail => {
                return Err(StoreError::Locked {
                    path: shown,
                    detail: lock::detail(&holder),
                })
            }
        }
    }
}

/// What sled is told its cache may hold, for a budget of `cache_mb` MiB of memory
/// (`store.cache_mb`). sled counts a cached page by its size in the log, and each page
/// costs more than that in memory: with a million queued actions, whose small records
/// fill many small pages, the heap grew by 2.3 bytes per byte of `cache_capacity`
/// (BENCHMARKS.md, "The sled cache budget"). So sled gets half the budget.
pub fn sled_cache_bytes(cache_mb: u64) -> u64 {
    cache_mb.saturating_mul(1024 * 1024) / 2
}

/// The sled configuration of every store open (and of the benchmark that measures what
/// sled itself allows, `benches/throughput.rs`, so the two cannot drift apart).
pub fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        // Every write that matters is flushed explicitly (`make_durable`, `flush`);
        // without the background flusher nothing wakes while everything is parked.
        .flush_every_ms(None)
}

#[cfg(test)]
#[test]
fn sled_is_given_half_of_the_cache_budget() {
    assert_eq!(sled_cache_bytes(64), 32 << 20);
    assert_eq!(sled_cache_bytes(1), 512 << 10);
    assert_eq!(sled_cache_bytes(u64::MAX), u64::MAX / 2);
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `detail` is `lock::detail`: who holds it (`another sendgate (pid N): ...` for a
    /// worker, `process N (python3), ...` for another program).
    #[error("store {path} is locked by {detail}")]
    Locked { path: String, detail: String },
    #[error("no store at {path} (nothing was created; check store.path)")]
    NotFound { path: String },
    #[error("store {path} is refused: {reason}")]
    Damaged { path: String, reason: String },
    #[error(
        "store {path} was written by a newer sendgate (format {found}, this build reads up to {supported})"
    )]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("injected store fault at operation {n} ({op})")]
    Injected { n: u64, op: &'static str },
}

impl StoreError {
    /// The exit code for this error (SPEC §8, §10): a newer format is a deployment
    /// mistake that a restart cannot fix (78); a store that does not exist, for the
    /// commands that never create one, is 1; everything else is a store failure (74).
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::NewerFormat { .. } => crate::exit::CONFIG,
            StoreError::NotFound { .. } => crate::exit::FAILURE,
            _ => crate::exit::STORE,
        }
    }

    /// The message for an operator: always names the store's path.
    pub fn describe(&self, path: &Path) -> String {
        let text = self.to_string();
        let shown = path.display().to_string();
        if text.contains(&shown) {
            text
        } else {
            format!("store {shown}: {text}")
        }
    }
}

/// Settings the store decides with; replaced on a configuration reload.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub policy: Policy,
    pub fsync: bool,
    pub idempotent: bool,
    pub max_attempts: u32,
    pub retention_days: u32,
    /// Backoff bounds for retries allowed by SPEC §5, in seconds.
    pub backoff_base_s: u64,
    pub backoff_max_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Policy::default(),
            fsync: true,
            idempotent: false,
            max_attempts: 5,
            retention_days: 90,
            backoff_base_s: 30,
            backoff_max_s: 3600,
        }
    }
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Settings {
        Settings {
            policy: c.policy(),
            fsync: c.store.fsync,
            idempotent: c.upstream.idempotent,
            max_attempts: c.upstream.max_attempts,
            retention_days: c.store.retention_days,
            ..Settings::default()
        }
    }
}

/// Options for opening a store.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub cache_mb: u64,
    /// Fault injection for tests: store operation number `n` (1-based) and every one
    /// after it fails, the way sled's errors are sticky.
    pub fail_from_op: Option<u64>,
    /// sled's log written since its last snapshot after which `Store::snapshot_if_due`
    /// has sled write a new one (`SNAPSHOT_AFTER_BYTES`; tests set less).
    pub snapshot_after_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_mb: 64,
            fail_from_op: None,
            snapshot_after_bytes: SNAPSHOT_AFTER_BYTES,
        }
    }
}

/// How much of sled's log a start after a crash may have to replay: once this much
/// was written since sled's last snapshot, the worker has sled write a new one
/// (`Store::snapshot_if_due`). sled replays about 1 MiB of log per millisecond here,
/// so a kill -9 costs the next start at most about 0.07 s more than a clean stop;
/// each snapshot costs the engine thread about that plus an open (0.15 s with a
/// million queued actions), once per 64 MiB written (about 80,000 ingested actions).
pub const SNAPSHOT_AFTER_BYTES: u64 = 64 << 20;

pub struct Store {
    /// `None` only after a snapshot's reopen failed: that error is fatal, like every
    /// `StoreError`, and nothing uses the store after it (`Store::db`).
    db: Option<sled::Db>,
    /// Read through `trees` (which writes what is behind first) or through the
    /// `seen_*` readers (which look through it); written only in transactions.
    sled_trees: Vec<sled::Tree>,
    /// The send path's changes committed to `wal` and not yet to their trees.
    behind: Mutex<behind::Behind>,
    db_file: File,
    path: PathBuf,
    /// The store directory's (device, inode) at open: `check_in_place` compares.
    dir_id: (u64, u64),
    cache_bytes: u64,
    /// The log sled wrote since its last snapshot, as `snapshot_if_due` sees it.
    since_snapshot: SinceSnapshot,
    pub settings: Settings,
    ops: AtomicU64,
    fail_from_op: Option<u64>,
    /// A commit that only needs to survive the process (an ordinary outcome) is
    /// waiting for sled's flush: the next `make_durable` carries it, else `settle`.
    unflushed: AtomicBool,
    /// sled flushes issued (`make_durable` and `settle`), for tests and benchmarks.
    flushes: AtomicU64,
    /// Commits tried: sled transactions (each writes sled's log buffer twice) and the
    /// send path's records.
    transactions: AtomicU64,
    /// Ready actions read by backlog scans (`park_ready`), for tests.
    backlog_reads: AtomicU64,
    /// Files and directory entries already synced (`make_durable`).
    synced: Mutex<identity::Synced>,
    /// The identity this process keeps up to date; `None` for the read-only commands.
    mark: Option<Mutex<Mark>>,
    /// How long each `make_durable` took (`sendgate_store_durable_commit_seconds`).
    durable_times: std::sync::Arc<timing::DurableTimes>,
    /// Opened by a command that only reads: an older format is not upgraded, so
    /// nothing may be written (`open_read_only`).
    read_only: bool,
}

/// What sled wrote to its log since its last snapshot (its open), from two sources
/// that each miss part of it: what our flushes wrote (`sled::Db::flush` returns it; a
/// buffer sled wrote because it was full is not counted), and how much `db` grew (a
/// log that reuses freed segments does not grow). The larger of the two is the
/// estimate.
#[derive(Debug)]
struct SinceSnapshot {
    after: u64,
    flushed: AtomicU64,
    db_len: u64,
}

/// The identity file as last written, and when.
struct Mark {
    identity: identity::Identity,
    written: Instant,
}

/// What `Store::open_with` found at the store path before opening sled.
enum Found {
    /// A store being created: its identity is written, marked incomplete.
    New(identity::Identity),
    /// A store with its identity.
    Identified(identity::Identity),
    /// A `db` without an identity (an earlier version, or a wiped identity file).
    Legacy,
}

/// How `Store::open_with` treats a path that holds no store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `run`: a missing path or an empty directory becomes a new store.
    Create,
    /// `status`, `audit`: never create or write anything outside sled's own files.
    Existing,
}

/// What recovery at open did with actions found `inflight`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub unknown: Vec<String>,
    pub requeued: Vec<String>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

fn damaged(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl Store {
    /// Open the store at `path`, or create one where there is nothing (no path, or an
    /// empty directory). A locked, corrupt, newer, emptied or replaced store is an error
    /// and is never replaced by an empty one (SPEC P5).
    pub fn open(path: &Path, settings: Settings, opts: OpenOptions) -> Result<Store, StoreError> {
        Store::open_with(path, settings, opts, Mode::Create, true)
    }

    /// Open an existing store and never create one: a missing path or an empty
    /// directory is `StoreError::NotFound` (the read-only commands, SPEC §8).
    pub fn open_existing(path: &Path, settings: Settings, opts: OpenOptions) -> Result<Store, StoreError> {
        Store::open_with(path, settings, opts, Mode::Existing, true)
    }

    /// `open_existing` for a command that only reads (`status`, `list`, `show`,
    /// `audit`): a store of an older format is read as it is and stays in that format,
    /// so looking at a store with a newer build never makes an older build refuse it.
    /// Such a store must not be written (`transact_mode` checks it in debug builds).
    pub fn open_read_only(path: &Path, settings: Settings, opts: OpenOptions) -> Result<Store, StoreError> {
        Store::open_with(path, settings, opts, Mode::Existing, false)
    }

    fn open_with(
        path: &Path,
        settings: Settings,
        opts: OpenOptions,
        mode: Mode,
        upgrade: bool,
    ) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let not_found = || StoreError::NotFound { path: shown.clone() };
        let found = match identity::inspect(path)? {
            identity::Layout::Missing | identity::Layout::Empty if mode == Mode::Existing => {
                return Err(not_found());
            }
            identity::Layout::Missing | identity::Layout::Empty => {
                // Identity first (marked incomplete), data second: see `check_identity`.
                identity::create_dir(path)?;
                let id = identity::Identity::new(identity::new_store_id(path)?);
                identity::write(path, &id, true)?;
                Found::New(id)
            }
            // A creation that crashed before its data carried the store id.
            identity::Layout::Identified(id) if !id.complete => match mode {
                Mode::Existing => return Err(not_found()),
                Mode::Create => Found::New(id),
            },
            identity::Layout::Identified(id) => {
                // sled would create a new, empty `db`: refuse before it can.
                if !path.join("db").exists() {
                    return Err(damaged(
                        path,
                        format!(
                            "its identity file names store {} but its data (`db`) is gone; \
                             restore the store, or empty the directory to start a new one",
                            id.store_id
                        ),
                    ));
                }
                Found::Identified(id)
            }
            identity::Layout::Legacy => Found::Legacy,
            identity::Layout::Foreign(names) => {
                return Err(damaged(
                    path,
                    format!(
                        "it is not empty ({}) but holds neither a sendgate identity nor a sled `db`; \
                         only an empty directory becomes a new store",
                        names.join(", ")
                    ),
                ));
            }
        };
        let db = open_sled(path, sled_cache_bytes(opts.cache_mb), lock::Patience::Open)?;
        let trees = open_trees(&db)?;
        let db_path = path.join("db");
        let db_file = File::open(&db_path).map_err(io("open the db file", &db_path))?;
        let db_len = file_len(&db_file, &db_path)?;
        let dir_id = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path).map_err(io("read", path))?;
            (m.dev(), m.ino())
        };
        let mut store = Store {
            db: Some(db),
            sled_trees: trees,
            behind: Mutex::new(behind::Behind::default()),
            db_file,
            path: path.to_path_buf(),
            dir_id,
            cache_bytes: sled_cache_bytes(opts.cache_mb),
            since_snapshot: SinceSnapshot {
                after: opts.snapshot_after_bytes,
                flushed: AtomicU64::new(0),
                db_len,
            },
            settings,
            ops: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            backlog_reads: AtomicU64::new(0),
            fail_from_op: opts.fail_from_op,
            synced: Mutex::new(identity::Synced::default()),
            mark: None,
            durable_times: std::sync::Arc::default(),
            read_only: !upgrade,
        };
        debug_assert!(
            upgrade || mode == Mode::Existing,
            "a store that may be created is written"
        );
        store.check_format(matches!(found, Found::New(_)))?;
        // A batch a crash left in `wal` reaches its trees before anything reads them.
        store.replay_wal()?;
        let identity = store.check_identity(found, mode)?;
        store.mark = identity.map(|identity| {
            Mutex::new(Mark {
                identity,
                written: Instant::now(),
            })
        });
        if mode == Mode::Create {
            // A file staged but not committed by a process that died is dropped (it is
            // still in `processing/`); a committed one is published (`ingest.rs`).
            store.recover_ingest()?;
        }
        Ok(store)
    }

    fn check_format(&self, creating: bool) -> Result<(), StoreError> {
        let meta = &self.sled_trees[META];
        match meta.get(META_FORMAT)? {
            Some(v) => {
                let found = codec::decode_at::<u32>("format_version", META_FORMAT, &v)?;
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: self.path.display().to_string(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found < FORMAT_VERSION && !self.read_only {
                    // Format 1 -> 2 only added record kinds, 2 -> 3 a record layout read
                    // beside the old one (an action is split at its next write), and
                    // 3 -> 4 the second layout of accounts and campaigns, and 4 -> 5
                    // the `wal` tree: nothing stored changes but the number, one atomic
                    // insert made durable before this build writes anything an older
                    // build could not read.
                    debug_assert!(found >= 1 && FORMAT_VERSION == 5, "add this upgrade's steps");
                    meta.insert(META_FORMAT, codec::encode(&FORMAT_VERSION))?;
                    self.make_durable()?;
                }
                Ok(())
            }
            None if creating => {
                meta.insert(META_FORMAT, codec::encode(&FORMAT_VERSION))?;
                Ok(())
            }
            None => Err(damaged(
                &self.path,
                if self.sled_trees.iter().all(|t| t.is_empty()) {
                    "its `db` holds no sendgate data (emptied or lost); restore the store, \
                     or empty the directory to start a new one"
                } else {
                    "it holds data but no format_version"
                },
            )),
        }
    }

    /// The store id and ledger mark of the data against the identity file. Returns the
    /// identity this process keeps up to date (`None` for `Mode::Existing`).
    fn check_identity(&self, found: Found, mode: Mode) -> Result<Option<identity::Identity>, StoreError> {
        let meta = &self.trees()?[META];
        let data_id = match meta.get(META_STORE_ID)? {
            Some(v) => Some(codec::decode_at::<String>("store id", META_STORE_ID, &v)?),
            None => None,
        };
        let data_mark = self.data_mark()?;
        let mismatch = |id: &identity::Identity, d: &str| {
            damaged(
                &self.path,
                format!(
                    "its data belongs to store {d}, its identity file to store {}",
                    id.store_id
                ),
            )
        };
        let mut id = match found {
            Found::New(mut id) => {
                match &data_id {
                    Some(d) if *d != id.store_id => return Err(mismatch(&id, d)),
                    Some(_) => {}
                    None if data_mark > 0
                        || !self.trees()?[ACTIONS].is_empty()
                        || !self.trees()?[ACCOUNTS].is_empty() =>
                    {
                        return Err(damaged(&self.path, "it holds data of no known store"));
                    }
                    None => {
                        meta.insert(META_STORE_ID, codec::encode(&id.store_id))?;
                    }
                }
                id.complete = true;
                id
            }
            Found::Identified(id) => {
                match &data_id {
                    Some(d) if *d == id.store_id => {}
                    Some(d) => return Err(mismatch(&id, d)),
                    None => {
                        return Err(damaged(
                            &self.path,
                            format!(
                                "its identity file names store {} but its data carries no store id \
                                 (emptied or replaced); restore the store, or empty the directory \
                                 to start a new one",
                                id.store_id
                            ),
                        ))
                    }
                }
                if data_mark < id.ledger_mark {
                    return Err(damaged(
                        &self.path,
                        format!(
                            "its ledger is behind its identity file (ledger mark {data_mark}, \
                             recorded {}): reservations were lost or an older copy was restored",
                            id.ledger_mark
                        ),
                    ));
                }
                id
            }
            // A store of an earlier version (or whose identity file was deleted) whose
            // data is whole: adopt it.
            Found::Legacy if mode == Mode::Existing => return Ok(None),
            Found::Legacy => {
                let store_id = match data_id {
                    Some(d) => d,
                    None => {
                        let d = identity::new_store_id(&self.path)?;
                        meta.insert(META_STORE_ID, codec::encode(&d))?;
                        d
                    }
                };
                let mut id = identity::Identity::new(store_id);
                id.complete = true;
                id
            }
        };
        if mode == Mode::Existing {
            return Ok(None);
        }
        // A new or adopted store gets its (complete) identity now; an identified one
        // only moves its mark with the next `make_durable` after `MARK_EVERY`, which
        // keeps a restart free of extra syncs.
        let stale = match identity::read(&self.path) {
            Ok(on_disk) => on_disk != id,
            Err(_) => true,
        };
        if stale {
            // Data first, identity second: a crash in between leaves data that carries
            // the store id, which the next open accepts.
            self.make_durable()?;
            id.ledger_mark = id.ledger_mark.max(data_mark);
            identity::write(&self.path, &id, true)?;
        }
        Ok(Some(id))
    }

    /// One more than the highest ledger id the data holds or held (0: none).
    fn data_mark(&self) -> Result<u64, StoreError> {
        // Every ledger key starts with its own id (`codec::ledger_kind`): a
        // reservation, a release or a batch of outcomes.
        let last = match self.trees()?[LEDGER].last()? {
            Some((k, _)) if codec::ledger_kind(&k).is_some() => codec::ledger_id(&k)
                .ok_or_else(|| StoreError::Corrupt("a ledger key is too short".into()))?
                .saturating_add(1),
            Some(_) => return Err(StoreError::Corrupt("a ledger key names no known record".into())),
            None => 0,
        };
        let kept = match self.sled_trees[META].get(META_LEDGER_MARK)? {
            Some(v) => codec::decode_at::<u64>("ledger mark", META_LEDGER_MARK, &v)?,
            None => 0,
        };
        Ok(last.max(kept))
    }

    /// Write the ledger high-water mark to the identity file now (at a clean stop).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.mark_now(true)
    }

    /// A clean close (the worker's stop): everything durable and the identity's mark
    /// current, then sled opened once more and closed. sled writes its snapshot (where
    /// every page lives) only while it opens, and every open replays the log written
    /// since the last snapshot: without this, a start after weeks of running reads the
    /// whole `db` file first (1.3–1.6 s for a million queued actions), with it nothing.
    /// A crash in here loses nothing: the data is durable before sled is reopened, the
    /// snapshot is sled's own (written, synced, renamed), and without it the next open
    /// replays the log as always.
    pub fn close(self) -> Result<(), StoreError> {
        self.catch_up()?;
        self.make_durable()?;
        self.checkpoint()?;
        let path = self.path.clone();
        drop(self);
        // sled lets go of its file lock from a background thread a moment after the
        // handle is dropped. Nothing is read: the open's recovery is the point, and
        // dropping the handle flushes and syncs (nothing was written).
        drop(open_sled(&path, 1024 * 1024, lock::Patience::Close)?);
        Ok(())
    }

    /// The store is still where it was opened: the same directory, with its `db` and
    /// its identity file. A store removed or replaced under a running worker (`rm -rf`)
    /// is a store failure found within a status interval, not at the next stop (sled
    /// goes on writing into the removed files, and the next start would find nothing).
    pub fn check_in_place(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let same_dir = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.dir_id);
        let whole = self.path.join("db").is_file() && self.path.join(identity::ID_FILE).is_file();
        if same_dir && whole {
            return Ok(());
        }
        Err(damaged(
            &self.path,
            "its directory, its `db` or its identity file was removed or replaced while the worker \
             ran; restore the store from a copy (a new, empty store would give every cap of the \
             day out again)",
        ))
    }

    /// Whether opening `path` would create a new store (nothing there, or an empty
    /// directory, or a creation that never finished).
    pub fn would_create(path: &Path) -> Result<bool, StoreError> {
        Ok(match identity::inspect(path)? {
            identity::Layout::Missing | identity::Layout::Empty => true,
            identity::Layout::Identified(id) => !id.complete,
            _ => false,
        })
    }

    /// sled's handle. Only a failed snapshot leaves none, and its error ends the process.
    fn db(&self) -> &sled::Db {
        match &self.db {
            Some(db) => db,
            None => unreachable!("the store was used after its snapshot failed"),
        }
    }

    /// sled's log written since its last snapshot (an estimate: `SinceSnapshot`).
    fn log_since_snapshot(&self) -> Result<u64, StoreError> {
        let len = file_len(&self.db_file, &self.path.join("db"))?;
        let flushed = self.since_snapshot.flushed.load(Ordering::Relaxed);
        Ok(flushed.max(len.saturating_sub(self.since_snapshot.db_len)))
    }

    /// Bound what a start after a kill -9 replays: once `SNAPSHOT_AFTER_BYTES` (or the
    /// store's `snapshot_after_bytes`) of log were written since sled's last snapshot,
    /// make everything durable and reopen sled, which writes a snapshot as it opens
    /// (sled 0.34 writes one at no other time). The engine calls this between steps;
    /// nothing else holds the store then. Returns whether it reopened.
    ///
    /// A crash anywhere in here loses nothing: the data is durable before sled lets go,
    /// and sled writes its snapshot beside the log (synced, then renamed). An error is
    /// fatal and leaves the store unusable, as every `StoreError` ends the process.
    pub fn snapshot_if_due(&mut self) -> Result<bool, StoreError> {
        if self.read_only {
            return Ok(false);
        }
        let log = self.log_since_snapshot()?;
        if log < self.since_snapshot.after {
            return Ok(false);
        }
        let started = Instant::now();
        self.catch_up()?;
        self.make_durable()?;
        self.op("snapshot")?;
        self.sled_trees.clear();
        self.db = None;
        // sled's own threads drop its cache and let go of the lock a moment after the
        // last handle. Once they have, the heap they freed goes back to the system
        // before the new open allocates its own: without that, parking a million
        // actions peaked at 220 MiB instead of 178 (glibc kept the old cache's pages).
        let db_path = self.path.join("db");
        let since = Instant::now();
        while !identity::lock_free(&db_path) && since.elapsed() < lock::CLOSE_WAIT {
            std::thread::sleep(lock::POLL);
        }
        crate::mem::give_back();
        // A lock still held after that is reported by the open, as a close's is; an
        // error says the worker was reopening its store (a full disk fails here too).
        let db = open_sled(&self.path, self.cache_bytes, lock::Patience::Close).map_err(|e| match e {
            StoreError::Io { path, source, .. } => StoreError::Io {
                op: "reopen (to have sled write its snapshot)",
                path,
                source,
            },
            other => other,
        })?;
        self.sled_trees = open_trees(&db)?;
        self.db = Some(db);
        self.since_snapshot.db_len = file_len(&self.db_file, &db_path)?;
        self.since_snapshot.flushed.store(0, Ordering::Relaxed);
        // Old page versions the replay read and let go of.
        crate::mem::give_back();
        // The snapshot's file and its rename reach the disk with the directory.
        self.make_durable()?;
        tracing::debug!(
            store = %self.path.display(),
            log_bytes = log,
            seconds = started.elapsed().as_secs_f64(),
            "sled wrote a snapshot of its log"
        );
        Ok(true)
    }

    /// Before a flush: if the mark is due (or `force`), keep the data's mark in `meta`
    /// and return it, to be written to the identity file once the flush is durable.
    fn mark_due(&self, force: bool) -> Result<Option<u64>, StoreError> {
        let Some(mark) = &self.mark else { return Ok(None) };
        let written = match mark.lock() {
            Ok(m) => m.written,
            Err(_) => return Err(StoreError::Corrupt("the ledger mark lock is poisoned".into())),
        };
        if !force && written.elapsed() < MARK_EVERY {
            return Ok(None);
        }
        let m = self.data_mark()?;
        // `data_mark` wrote everything behind to its trees: `meta` is current.
        self.sled_trees[META].insert(META_LEDGER_MARK, codec::encode(&m))?;
        Ok(Some(m))
    }

    /// After a durable flush: the identity file's mark follows the data's.
    fn mark_written(&self, m: u64) -> Result<(), StoreError> {
        let Some(mark) = &self.mark else { return Ok(()) };
        let mut g = mark
            .lock()
            .map_err(|_| StoreError::Corrupt("the ledger mark lock is poisoned".into()))?;
        g.written = Instant::now();
        if m > g.identity.ledger_mark {
            g.identity.ledger_mark = m;
            identity::write(&self.path, &g.identity, self.settings.fsync)?;
        }
        Ok(())
    }

    fn mark_now(&self, force: bool) -> Result<(), StoreError> {
        self.op("flush")?;
        let due = self.mark_due(force)?;
        self.sled_flush()?;
        if self.settings.fsync {
            self.op("fdatasync")?;
            self.sync_files()?;
        }
        if let Some(m) = due {
            self.mark_written(m)?;
        }
        Ok(())
    }

    /// `fdatasync` of `db`, then every other file sled created since the last call
    /// (`conf`, `blobs/*`, `snap.*`) and the directories whose entries changed.
    fn sync_files(&self) -> Result<(), StoreError> {
        self.db_file
            .sync_data()
            .map_err(io("fdatasync", &self.path.join("db")))?;
        let mut synced = self
            .synced
            .lock()
            .map_err(|_| StoreError::Corrupt("the sync tracker lock is poisoned".into()))?;
        synced.sync_new(&self.path)
    }

    /// Count one store operation; fails from the configured operation on (tests).
    fn op(&self, op: &'static str) -> Result<(), StoreError> {
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        match self.fail_from_op {
            Some(from) if n >= from => Err(StoreError::Injected { n, op }),
            _ => Ok(()),
        }
    }

    /// Store operations performed so far (for the fault-injection loop).
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// The durability boundary. sled's flush writes and `sync_file_range`s its log;
    /// only the `fdatasync` after it (of `db`, and of any file sled created since: a
    /// blob, a snapshot, with their directory) survives a power cut on a disk with a
    /// volatile write cache. Callers hand out permission to send only after this
    /// returns. At most every `MARK_EVERY` it also carries the ledger mark to the
    /// identity file.
    pub fn make_durable(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.mark_now(false);
        self.durable_times.observe(started.elapsed());
        result
    }

    /// The durations of `make_durable` so far (shared: the copy stays current).
    pub fn durable_times(&self) -> std::sync::Arc<timing::DurableTimes> {
        std::sync::Arc::clone(&self.durable_times)
    }

    /// sled's flush without the `fdatasync`: survives the process dying, not a power cut.
    fn flush(&self) -> Result<(), StoreError> {
        self.op("flush")?;

        self.sled_flush()
    }

    /// sled's flush: everything committed so far reaches the file, the waiting
    /// commits included.
    fn sled_flush(&self) -> Result<(), StoreError> {
        let written = self.db().flush()?;
        self.since_snapshot
            .flushed
            .fetch_add(written as u64, Ordering::Relaxed);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.unflushed.store(false, Ordering::Release);
        Ok(())
    }

    /// A commit that only needs to survive the process is left to the next flush:
    /// the next `make_durable` (usually the next reservation, a moment later) or
    /// `settle`, whichever comes first.
    fn flush_later(&self) {
        self.unflushed.store(true, Ordering::Release);
    }

    /// Flush what `flush_later` left waiting, if anything. Whoever reports a commit
    /// (a log line, a reply) settles first, so nothing is told that a `kill -9` could
    /// still undo.
    pub fn settle(&self) -> Result<(), StoreError> {
        if self.unflushed.load(Ordering::Acquire) {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether a commit is waiting for `settle` (or the next `make_durable`).
    pub fn unsettled(&self) -> bool {
        self.unflushed.load(Ordering::Acquire)
    }

    /// sled flushes issued so far (`make_durable`, `settle` and the store's own).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// sled transactions run so far (each seals and writes sled's log buffer before and
    /// after its batch, so each costs log writes of its own: `Store::reserve_after`).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Ready actions read so far by the scans that park a blocked backlog.
    pub fn backlog_reads(&self) -> u64 {
        self.backlog_reads.load(Ordering::Relaxed)
    }

    /// Run `f` as one transaction over every tree. An `Abort::Reject` comes back as
    /// `Ok(Err(reason))`; corruption and I/O errors are fatal.
    fn transact<T>(
        &self,
        f: impl Fn(&Tx) -> tx::TxResult<T>,
    ) -> Result<Result<T, tx::Rejection>, StoreError> {
        self.transact_mode(tx::Mode::Live, f)
    }

    /// `transact`, reading and writing as `mode` says (`ingest.rs`).
    fn transact_mode<T>(
        &self,
        mode: tx::Mode,
        f: impl Fn(&Tx) -> tx::TxResult<T>,
    ) -> Result<Result<T, tx::Rejection>, StoreError> {
        use sled::transaction::Transactional;
        debug_assert!(!self.read_only, "a store opened read-only is written");
        self.op("transaction")?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        // Behind first, and no send-path commit until this one is done (the send
        // path reads outside sled's transactions: `transact_behind`).
        let mut behind = self.lock_behind()?;
        self.catch_up_locked(&mut behind)?;
        let result = self
            .sled_trees
            .as_slice()
            .transaction(|trees| f(&Tx::with_mode(trees, mode)));
        drop(behind);
        committed(result)
    }

    /// `transact` for the send path (`behind.rs`): `f` reads the trees directly (no
    /// sled transaction: the lock on what is behind keeps every other writer out) and
    /// its writes become one `wal` record, one atomic insert, holding every change it
    /// made; they stay in memory until `catch_up` writes them to their trees, and
    /// reads after it see them. Durable, like any commit, once `make_durable` returns.
    fn transact_behind<T>(
        &self,
        f: impl Fn(&Tx) -> tx::TxResult<T>,
    ) -> Result<Result<T, tx::Rejection>, StoreError> {
        use sled::transaction::ConflictableTransactionError as E;
        debug_assert!(!self.read_only, "a store opened read-only is written");
        self.op("transaction")?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        // Held until the record is written: no other writer of this store runs
        // meanwhile (every sled transaction of the store takes it too), so the reads
        // need no sled transaction, and what they decided on is what the record holds.
        let mut behind = self.lock_behind()?;
        let tx = Tx::behind(&self.sled_trees, &behind.overlay, &behind.accounts);
        let v = match f(&tx) {
            Ok(v) => v,
            Err(E::Abort(Abort::Reject(r))) => return Ok(Err(r)),
            Err(E::Abort(Abort::Corrupt(m))) => return Err(StoreError::Corrupt(m)),
            Err(E::Storage(e)) => return Err(StoreError::Sled(e)),
            Err(E::Conflict) => {
                return Err(StoreError::Corrupt(
                    "a sled transaction conflict outside a transaction".into(),
                ))
            }
        };
        let (delta, decoded) = (tx.take_delta(), tx.take_accounts());
        drop(tx);
        behind.keep_decoded(decoded);
        if delta.is_empty() {
            return Ok(Ok(v));
        }
        // One key: the batch's whole record, written atomically.
        let key = behind::wal_key(behind.next);
        self.sled_trees[WAL].insert(key, behind::encode(&delta))?;
        behind.merge(delta);
        if behind.bytes > behind::BEHIND_MAX_BYTES {
            self.catch_up_locked(&mut behind)?;
        }
        Ok(Ok(v))
    }

    /// Write every change behind to its tree and remove the `wal` records that held
    /// them, in one transaction. Not flushed: the records made them durable, and a
    /// crash before the next flush leaves the records to replay.
    pub fn catch_up(&self) -> Result<(), StoreError> {
        let mut behind = self.lock_behind()?;
        self.catch_up_locked(&mut behind)
    }

    /// `catch_up`, the lock held by the caller.
    fn catch_up_locked(&self, behind: &mut behind::Behind) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, Transactional};
        if behind.is_empty() {
            return Ok(());
        }
        self.op("catch up")?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let (first, next) = (behind.first, behind.next);
        let result = self.sled_trees.as_slice().transaction(|trees| {
            for ((tree, key), value) in &behind.overlay {
                match value {
                    Some(v) => trees[*tree].insert(key.as_slice(), v.clone())?,
                    None => trees[*tree].remove(key.as_slice())?,
                };
            }
            for seq in first..next {
                trees[WAL].remove(&behind::wal_key(seq))?;
            }
            Ok::<(), ConflictableTransactionError<Abort>>(())
        });
        // Nothing in it rejects: a rejection would be a bug, read as corruption.
        committed(result)?.map_err(|r| StoreError::Corrupt(r.reason))?;
        behind.overlay.clear();
        behind.bytes = 0;
        behind.first = next;
        Ok(())
    }

    /// At open: the `wal` records a crash left (batches made durable whose changes
    /// had not reached their trees) are written to their trees, in order, before
    /// anything reads them.
    fn replay_wal(&self) -> Result<(), StoreError> {
        let mut behind = self.lock_behind()?;
        debug_assert!(behind.is_empty(), "the wal is replayed once, at open");
        let mut records = 0u64;
        for kv in self.sled_trees[WAL].iter() {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    StoreError::Corrupt(format!("a wal key is not 8 bytes: \"{}\"", k.escape_ascii()))
                })?;
            let delta = behind::decode(&v, TREE_NAMES.len())
                .map_err(|e| StoreError::Corrupt(format!("cannot decode the wal record {seq}: {e}")))?;
            if records == 0 {
                behind.first = seq;
            }
            behind.next = seq;
            behind.merge(delta);
            records += 1;
        }
        drop(behind);
        if records > 0 {
            tracing::debug!(
                store = %self.path.display(),
                records,
                "wrote the send path's last committed batches to their trees"
            );
            self.catch_up()?;
        }
        Ok(())
    }

    fn lock_behind(&self) -> Result<std::sync::MutexGuard<'_, behind::Behind>, StoreError> {
        self.behind
            .lock()
            .map_err(|_| StoreError::Corrupt("the lock of the changes behind the trees is poisoned".into()))
    }

    /// Write `key` of `tree` outside a transaction without catching up: only for a key
    /// the send path never writes, so nothing behind can hide or undo it.
    fn write_aside(&self, tree: usize, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        debug_assert!(
            self.lock_behind()?.get(tree, key).is_none(),
            "a key the send path writes is written aside"
        );
        match value {
            Some(v) => self.sled_trees[tree].insert(key, v)?,
            None => self.sled_trees[tree].remove(key)?,
        };
        Ok(())
    }

    /// Every tree, once everything behind was written to it (`catch_up`): for readers
    /// that do not look through it (scans of whole trees, reports) and for writes
    /// outside a transaction.
    fn trees(&self) -> Result<&[sled::Tree], StoreError> {
        self.catch_up()?;
        Ok(&self.sled_trees)
    }

    /// `key` of `tree` as the send path left it (what is behind, else the tree).
    fn seen_get(&self, tree: usize, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        if let Some(v) = self.lock_behind()?.get(tree, key) {
            return Ok(v);
        }
        Ok(self.sled_trees[tree].get(key)?)
    }

    /// The entries of `tree` between `lo` and `hi`, in key order, as the send path left
    /// them: the tree's own with what is behind merged in (copied out: at most
    /// `BEHIND_MAX_BYTES`, and only the range's).
    fn seen_iter(
        &self,
        tree: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<behind::Merged<sled::Iter>, StoreError> {
        let ahead = self
            .lock_behind()?
            .range(tree, lo, hi)
            .map(|(k, v)| (k.to_vec(), v.clone()))
            .collect();
        let stored = self.sled_trees[tree].range::<&[u8], _>((lo, hi));
        Ok(behind::Merged::new(stored, ahead))
    }

    /// The first `n` entries of `seen_iter`.
    fn seen_range(
        &self,
        tree: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        n: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        Ok(self
            .seen_iter(tree, lo, hi)?
            .take(n)
            .collect::<sled::Result<_>>()?)
    }

    /// A round trip through the store for the watchdog: a read and a durable write.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.op("ping")?;
        self.write_aside(META, b"ping", Some(&codec::encode(&0u8)))?;
        self.make_durable()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Action counts per state.
    pub fn state_counts(&self) -> Result<[u64; 7], StoreError> {
        self.op("read counts")?;
        Ok(match self.seen_get(META, META_COUNTS)? {
            Some(v) => codec::decode_at::<records::StateCounts>("state counts", META_COUNTS, &v)?.0,
            None => [0; 7],
        })
    }

    fn read<T: codec::Value>(
        &self,
        tree: usize,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.op(what)?;
        self.seen_get(tree, key.as_bytes())?
            .map(|v| codec::decode_at(what, key.as_bytes(), &v))
            .transpose()
    }

    pub fn action(&self, id: &str) -> Result<Option<Action>, StoreError> {
        self.op("action")?;
        match self.seen_get(ACTIONS, id.as_bytes())? {
            Some(v) => self.action_at(id.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The action stored at `key` with value `value` of `actions` (a scan), joined
    /// with its body when `value` holds only its state (format 3).
    fn action_at(&self, key: &[u8], value: &[u8]) -> Result<Action, StoreError> {
        let corrupt = |e: String| undecodable_action(key, e);
        match Action::read_stored(value).map_err(corrupt)? {
            edge::StoredAction::Whole(a) => Ok(a),
            edge::StoredAction::State(s) => {
                let body = self
                    .seen_get(BODIES, key)?
                    .ok_or_else(|| corrupt("its body is missing".into()))?;
                let id = std::str::from_utf8(key).map_err(|e| corrupt(e.to_string()))?;
                Action::join(id, s, &body).map_err(corrupt)
            }
        }
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.read(ACCOUNTS, id, "account")
    }

    pub fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        self.read(CAMPAIGNS, id, "campaign")
    }

    /// Every account, in id order.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.op("scan accounts")?;
        self.seen_range(ACCOUNTS, Bound::Unbounded, Bound::Unbounded, usize::MAX)?
            .into_iter()
            .map(|(k, v)| codec::decode_at("account", &k, &v))
            .collect()
    }

    /// Every action, in id order (tests and audits; O(actions)).
    pub fn actions(&self) -> Result<Vec<Action>, StoreError> {
        self.op("scan actions")?;
        self.trees()?[ACTIONS]
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                self.action_at(&k, &v)
            })
            .collect()
    }
}
