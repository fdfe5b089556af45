//! The store: the only code that touches sled. Accounts, campaigns, actions, the due
//! queues, per-day counters, the reservation ledger and applied job files live here,
//! and every change is one sled transaction.
//!
//! The durability boundary is [`Store::make_durable`]: sled's `flush` (which issues
//! `sync_file_range`, not a full sync) followed by `fdatasync` of the store file. A
//! reservation is handed to the caller only after it returns, so no upstream call ever
//! fires on a reservation a crash or power cut could undo (SPEC P2).
//!
//! Every failure is a [`StoreError`] and every `StoreError` is fatal (SPEC P5): business
//! outcomes — a blocked action, a rejected file — are ordinary return values, so `?`
//! can never turn a broken store into "skip this one".

mod apply;
pub mod codec;
mod outcome;
mod query;
pub mod records;
mod reserve;
mod tx;

pub use apply::Applied;
pub use apply::ApplyOutcome;
pub use outcome::{Attempt, Recorded};
pub use query::{AccountStatus, AuditReport, Overshoot, StatusReport, UpstreamStatus};
pub use records::{Account, Action, Campaign, State};
pub use reserve::{kinds_blocked_by, Change, Hold, ParkedAction, Reservation, ReserveResult};

use crate::config::Policy;
use codec::FORMAT_VERSION;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
const TREE_NAMES: [&str; 12] = [
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
];

const META_FORMAT: &[u8] = b"format_version";
const META_COUNTS: &[u8] = b"state_counts";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} is locked by another process (is another worker running?): {detail}")]
    Locked { path: String, detail: String },
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
    #[error("store I/O error during {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("injected store fault at operation {n} ({op})")]
    Injected { n: u64, op: &'static str },
}

impl StoreError {
    /// The exit code for this error: a newer format is a deployment mistake that a
    /// restart cannot fix (78); everything else is a store failure (74).
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::NewerFormat { .. } => crate::exit::CONFIG,
            _ => crate::exit::STORE,
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
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_mb: 64,
            fail_from_op: None,
        }
    }
}

pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    db_file: File,
    path: PathBuf,
    pub settings: Settings,
    ops: AtomicU64,
    fail_from_op: Option<u64>,
}

/// What recovery at open did with actions found `inflight`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub unknown: Vec<String>,
    pub requeued: Vec<String>,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

impl Store {
    /// Open (or create) the store at `path`. A locked, corrupt or newer store is an
    /// error and is never replaced by an empty one.
    pub fn open(path: &Path, settings: Settings, opts: OpenOptions) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let fresh = !path.join("db").exists();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_mb.saturating_mul(1024 * 1024))
            // Every write that matters is flushed explicitly (`make_durable`, `flush`);
            // without the background flusher nothing wakes while everything is parked.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::Other && io.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: shown.clone(),
                        detail: io.to_string(),
                    }
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: shown.clone(),
                    detail: io.to_string(),
                },
                sled::Error::Corruption { .. } => StoreError::Corrupt(format!("{shown}: {e}")),
                other => StoreError::Sled(other),
            })?;
        let trees = TREE_NAMES
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        let db_file = File::open(path.join("db")).map_err(io("open db file"))?;
        let store = Store {
            db,
            trees,
            db_file,
            path: path.to_path_buf(),
            settings,
            ops: AtomicU64::new(0),
            fail_from_op: opts.fail_from_op,
        };
        store.check_format(fresh)?;
        Ok(store)
    }

    fn check_format(&self, fresh: bool) -> Result<(), StoreError> {
        let meta = &self.trees[META];
        match meta.get(META_FORMAT)? {
            Some(v) => {
                let found = codec::decode::<u32>("format_version", &v)?;
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: self.path.display().to_string(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                Ok(())
            }
            None if fresh || self.trees.iter().all(|t| t.is_empty()) => {
                meta.insert(META_FORMAT, codec::encode(&FORMAT_VERSION))?;
                self.make_durable()
            }
            None => Err(StoreError::Corrupt(format!(
                "{}: holds data but no format_version",
                self.path.display()
            ))),
        }
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
    /// only the `fdatasync` after it survives a power cut on a disk with a volatile
    /// write cache. Callers hand out permission to send only after this returns.
    pub fn make_durable(&self) -> Result<(), StoreError> {
        self.op("flush")?;
        self.db.flush()?;
        if self.settings.fsync {
            self.op("fdatasync")?;
            self.db_file.sync_data().map_err(io("fdatasync"))?;
        }
        Ok(())
    }

    /// sled's flush without the `fdatasync`: survives the process dying, not a power cut.
    fn flush(&self) -> Result<(), StoreError> {
        self.op("flush")?;
        self.db.flush()?;
        Ok(())
    }

    /// Run `f` as one transaction over every tree. An `Abort::Reject` comes back as
    /// `Ok(Err(reason))`; corruption and I/O errors are fatal.
    fn transact<T>(
        &self,
        f: impl Fn(&Tx) -> tx::TxResult<T>,
    ) -> Result<Result<T, tx::Rejection>, StoreError> {
        use sled::transaction::{TransactionError, Transactional};
        self.op("transaction")?;
        let result = self.trees.as_slice().transaction(|trees| f(&Tx::new(trees)));
        match result {
            Ok(v) => Ok(Ok(v)),
            Err(TransactionError::Abort(Abort::Reject(r))) => Ok(Err(r)),
            Err(TransactionError::Abort(Abort::Corrupt(m))) => Err(StoreError::Corrupt(m)),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// A round trip through the store for the watchdog: a read and a durable write.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.op("ping")?;
        self.trees[META].insert(b"ping", codec::encode(&0u8))?;
        self.make_durable()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Action counts per state.
    pub fn state_counts(&self) -> Result<[u64; 7], StoreError> {
        self.op("read counts")?;
        Ok(match self.trees[META].get(META_COUNTS)? {
            Some(v) => codec::decode("state counts", &v)?,
            None => [0; 7],
        })
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        tree: usize,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.op(what)?;
        self.trees[tree]
            .get(key.as_bytes())?
            .map(|v| codec::decode(what, &v))
            .transpose()
    }

    pub fn action(&self, id: &str) -> Result<Option<Action>, StoreError> {
        self.read(ACTIONS, id, "action")
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
        self.trees[ACCOUNTS]
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                codec::decode("account", &v)
            })
            .collect()
    }

    /// Every action, in id order (tests and audits; O(actions)).
    pub fn actions(&self) -> Result<Vec<Action>, StoreError> {
        self.op("scan actions")?;
        self.trees[ACTIONS]
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                codec::decode("action", &v)
            })
            .collect()
    }
}
