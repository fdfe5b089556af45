//! The floor under sled: what sled 0.34 itself allows on this disk, with the store's own
//! configuration (`store::sled_config`) and the syncs of `Store::make_durable` (sled's
//! `flush`, `fdatasync` of `db`, then an fsync of every file sled created since and of
//! the directories they appeared in). Nothing of sendgate's logic runs here: each figure
//! is a ceiling that no design keeping sled as the store can pass on this machine.
//!
//! - `commit`: one transaction inserting one small record (an action state's size), made
//!   durable, per commit. The single-action mode needs one such commit per action (a
//!   reservation is durable before its send; the outcome may ride on the next commit).
//! - `batch_log`: the one-record-per-batch design issue 13 suggests. Per batch of
//!   `BATCH` actions one transaction reads the log head, checks it (the compare-and-swap),
//!   writes the new head and one record holding every reservation, then flush +
//!   fdatasync. The batch's outcomes are one more record, either committed alone with a
//!   flush only (`separate`) or folded into the next batch's durable commit (`folded`).
//! - `ingest`: one file as chunk records of `CHUNK_BODIES` bodies each (one transaction
//!   per chunk), one small "applied" record, one flush + fdatasync at the end.
//!
//! Record sizes are measured, not guessed: `sizes` runs the real store through one batch
//! (ingest, reserve, record), closes it, and reads the value lengths sled holds.

use crate::common;
use sendgate::store::identity::Synced;
use sendgate::store::{codec, sled_config, OpenOptions, Store};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bodies per chunk record of the ingest floor.
pub const CHUNK_BODIES: usize = 2048;

/// How long a raw open waits for the lock of a store just closed (sled lets go of it
/// from a background thread).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The key of the log head, the compare-and-swap word of `batch_log`.
const HEAD: &[u8] = b"head";

/// Byte sizes of real records, as the store wrote them.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// One action's state record (`actions` value) after its outcome was recorded.
    pub state: usize,
    /// One action's body (`bodies` value), the bench's action line.
    pub body: usize,
    /// One batch's reservation record (`LedgerReservations`, `batch` entries).
    pub reservations: usize,
    /// One batch's outcome record (`LedgerOutcomes`, `batch` outcomes).
    pub outcomes: usize,
    /// Entries in each of those two records.
    pub batch: usize,
}

impl Sizes {
    /// One reservation entry: the record over its entries (its envelope, a few bytes,
    /// shared out).
    pub fn entry(&self) -> usize {
        self.reservations.div_ceil(self.batch)
    }

    /// One outcome entry, the same way.
    pub fn outcome(&self) -> usize {
        self.outcomes.div_ceil(self.batch)
    }
}

/// Run one batch of `batch` actions through a real store (100 accounts, the pipeline's
/// action lines), close it, and measure what sled holds.
pub fn sizes(dir: &Path, batch: usize, accounts: usize, settings: sendgate::store::Settings) -> Sizes {
    let path = dir.join("sizes");
    let store = Store::open(&path, settings, OpenOptions::default()).expect("store opens");
    common::apply_ok(&store, "00-setup.jsonl", &common::setup_text(accounts));
    let (text, ids) = common::actions_file("a-", batch, accounts, "bench");
    common::apply_ok(&store, "01-actions.jsonl", &text);
    let now = common::bench_now();
    let (results, _) = store.reserve(&ids, now).expect("reserve");
    let outcomes: Vec<_> = results
        .into_iter()
        .map(|r| match r {
            sendgate::store::ReserveResult::Reserved(res) => {
                (res.request.id, sendgate::contract::Outcome::Sent, 0)
            }
            other => panic!("a cap bound in the floor's sample: {other:?}"),
        })
        .collect();
    let (recorded, _) = store.record(&outcomes, now).expect("record");
    assert_eq!(recorded.len(), batch, "the sample batch was recorded");
    store.close().expect("store closes");

    let db = open_raw(&path);
    let tree = |name: &str| db.open_tree(name).expect("open tree");
    let mean = |t: sled::Tree| {
        let lens: Vec<usize> = t.iter().map(|kv| kv.expect("read").1.len()).collect();
        assert_eq!(lens.len(), batch, "one record per action");
        lens.iter().sum::<usize>().div_ceil(lens.len())
    };
    let state = mean(tree("actions"));
    let body = mean(tree("bodies"));
    let (mut reservations, mut outcomes) = (0, 0);
    for kv in tree("ledger").iter() {
        let (k, v) = kv.expect("read ledger");
        match codec::ledger_kind(&k) {
            Some(codec::LedgerKind::Reservations) => reservations = v.len(),
            Some(codec::LedgerKind::Outcomes) => outcomes = v.len(),
            _ => {}
        }
    }
    assert!(
        reservations > 0 && outcomes > 0,
        "the sample wrote both ledger records"
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&path);
    Sizes {
        state,
        body,
        reservations,
        outcomes,
        batch,
    }
}

/// sled's open of `path` with the store's configuration, waiting for a closed handle's
/// lock.
fn open_raw(path: &Path) -> sled::Db {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled_config(path, cache_bytes()).open() {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                eprintln!("  store still locked ({e}), retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("raw open of {}: {e}", path.display()),
        }
    }
}

fn cache_bytes() -> u64 {
    sendgate::store::sled_cache_bytes(OpenOptions::default().cache_mb)
}

/// Where the time of a floor run went, summed over its units (a commit, a batch or an
/// action: what the run's rate counts).
#[derive(Clone, Copy, Debug, Default)]
pub struct Times {
    pub units: u64,
    /// sled transactions.
    pub commits: u64,
    pub tx: Duration,
    pub flush: Duration,
    pub sync: Duration,
    pub wall: Duration,
    /// Process CPU (all threads, sled's included).
    pub cpu: Duration,
}

impl Times {
    /// Microseconds per unit of one part.
    pub fn per_unit_us(&self, d: Duration) -> f64 {
        1e6 * d.as_secs_f64() / self.units.max(1) as f64
    }

    pub fn add(&mut self, o: &Times) {
        self.units += o.units;
        self.commits += o.commits;
        self.tx += o.tx;
        self.flush += o.flush;
        self.sync += o.sync;
        self.wall += o.wall;
        self.cpu += o.cpu;
    }
}

/// A fresh sled database opened as `Store::open` opens one, synced as
/// `Store::make_durable` syncs one.
struct Raw {
    db: sled::Db,
    tree: sled::Tree,
    db_file: File,
    root: PathBuf,
    synced: Synced,
    times: Times,
}

impl Raw {
    fn open(dir: &Path) -> Raw {
        let root = dir.join("raw");
        let _ = std::fs::remove_dir_all(&root);
        let db = sled_config(&root, cache_bytes()).open().expect("sled opens");
        let tree = db.open_tree("log").expect("open tree");
        let db_file = File::open(root.join("db")).expect("open db file");
        let mut raw = Raw {
            db,
            tree,
            db_file,
            root,
            synced: Synced::default(),
            times: Times::default(),
        };
        // What sled created at open is synced once, before the clock starts (the store
        // does the same at its first `make_durable`).
        raw.flush(true);
        raw.times = Times::default();
        raw
    }

    /// One transaction over the log tree; `f` returns `false` to abort it (a lost
    /// compare-and-swap).
    fn commit(
        &mut self,
        f: impl Fn(&sled::transaction::TransactionalTree) -> Result<bool, ConflictableTransactionError<()>>,
    ) {
        let t = Instant::now();
        let r = self.tree.transaction(|t| {
            if f(t)? {
                Ok(())
            } else {
                Err(ConflictableTransactionError::Abort(()))
            }
        });
        match r {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => panic!("the log head moved under the benchmark"),
            Err(TransactionError::Storage(e)) => panic!("sled: {e}"),
        }
        self.times.tx += t.elapsed();
        self.times.commits += 1;
    }

    /// sled's flush, then (if `durable`) `fdatasync` of `db` and an fsync of every file
    /// and directory entry sled created since, as `Store::make_durable`.
    fn flush(&mut self, durable: bool) {
        let t = Instant::now();
        self.db.flush().expect("flush");
        let t2 = Instant::now();
        self.times.flush += t2 - t;
        if durable {
            self.db_file.sync_data().expect("fdatasync db");
            self.synced.sync_new(&self.root).expect("sync new files");
            self.times.sync += t2.elapsed();
        }
    }

    fn close(self) -> Times {
        let root = self.root.clone();
        let times = self.times;
        drop(self);
        let _ = std::fs::remove_dir_all(&root);
        times
    }
}

/// Times `body` on a fresh `Raw`: (operations per second, where the time went).
fn timed(dir: &Path, ops: usize, body: impl FnOnce(&mut Raw)) -> (f64, Times) {
    let mut raw = Raw::open(dir);
    let cpu0 = common::cpu_time_rusage();
    let t = Instant::now();
    body(&mut raw);
    let wall = t.elapsed();
    raw.times.wall = wall;
    raw.times.units = ops as u64;
    raw.times.cpu = common::cpu_time_rusage() - cpu0;
    (ops as f64 / wall.as_secs_f64(), raw.close())
}

/// `n` commits of one `value_len`-byte record each, durable unless `durable` is false:
/// commits per second.
pub fn commit(dir: &Path, n: usize, value_len: usize, durable: bool) -> (f64, Times) {
    let value = vec![0x5au8; value_len];
    timed(dir, n, |raw| {
        for i in 0..n as u64 {
            raw.commit(|t| {
                t.insert(&i.to_be_bytes(), value.as_slice())?;
                Ok(true)
            });
            raw.flush(durable);
        }
    })
}

/// How a batch's outcome record is written in `batch_log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcomes {
    /// Its own transaction after the batch's sends, with a flush only.
    Separate,
    /// In the next batch's durable transaction (the last one's with a flush at the end).
    Folded,
}

/// A ledger-like key: the batch id, big-endian, and the record's kind.
fn log_key(id: u64, kind: u8) -> [u8; 9] {
    let mut k = [kind; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k
}

/// `batches` batches, each one durable compare-and-swap commit of a head and a
/// `record_len`-byte reservation record, plus an `outcome_len`-byte outcome record
/// written as `mode` says: batches per second.
pub fn batch_log(
    dir: &Path,
    batches: usize,
    record_len: usize,
    outcome_len: usize,
    mode: Outcomes,
) -> (f64, Times) {
    let record = vec![0x5au8; record_len];
    let outcome = vec![0xa5u8; outcome_len];
    timed(dir, batches, |raw| {
        for b in 1..=batches as u64 {
            raw.commit(|t| {
                let head = t.get(HEAD)?.map_or(0, |v| {
                    u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 8]))
                });
                if head != b - 1 {
                    return Ok(false);
                }
                t.insert(HEAD, &b.to_be_bytes())?;
                t.insert(&log_key(b, b'b'), record.as_slice())?;
                if mode == Outcomes::Folded && b > 1 {
                    t.insert(&log_key(b - 1, b'o'), outcome.as_slice())?;
                }
                Ok(true)
            });
            raw.flush(true);
            // The batch's sends happen here; their outcomes follow.
            if mode == Outcomes::Separate {
                raw.commit(|t| {
                    t.insert(&log_key(b, b'o'), outcome.as_slice())?;
                    Ok(true)
                });
                raw.flush(false);
            }
        }
        if mode == Outcomes::Folded {
            let last = batches as u64;
            raw.commit(|t| {
                t.insert(&log_key(last, b'o'), outcome.as_slice())?;
                Ok(true)
            });
            raw.flush(false);
        }
    })
}

/// `n` actions as chunk records of `CHUNK_BODIES` `body_len`-byte bodies each (one
/// transaction per chunk), one "applied" record, one durable flush at the end: actions
/// per second.
pub fn ingest(dir: &Path, n: usize, body_len: usize) -> (f64, Times) {
    timed(dir, n, |raw| {
        let mut left = n;
        let mut chunk = 0u64;
        while left > 0 {
            let bodies = left.min(CHUNK_BODIES);
            // A fresh value per chunk, as a parsed file would give.
            let value = vec![0x5au8; bodies * body_len];
            raw.commit(|t| {
                t.insert(&log_key(chunk, b's'), value.as_slice())?;
                Ok(true)
            });
            left -= bodies;
            chunk += 1;
        }
        raw.commit(|t| {
            t.insert(b"applied", &chunk.to_be_bytes())?;
            Ok(true)
        });
        raw.flush(true);
    })
}

/// Files sled created under `dir/raw/blobs` during an ingest floor run would be synced;
/// how many a chunk of `bytes` makes depends on sled's blob threshold. Returns whether
/// a value of `bytes` is stored as a blob file, by writing one.
pub fn stored_as_blob(dir: &Path, bytes: usize) -> bool {
    let raw = Raw::open(dir);
    raw.tree.insert(b"probe", vec![0u8; bytes]).expect("insert");
    raw.db.flush().expect("flush");
    let blobs = std::fs::read_dir(raw.root.join("blobs")).map_or(0, |d| d.count());
    raw.close();
    blobs > 0
}
