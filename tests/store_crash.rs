//! Crash tests at the store boundary. A child process (this test binary, re-invoked)
//! reserves in a loop and prints each reservation once `reserve` has returned, i.e.
//! once it is durable; the parent kills it with SIGKILL at random moments. After every
//! reopen: counters equal the ledger, no cap is exceeded, and every reservation printed
//! as durable is there.

mod common;

use common::*;
use sendgate::policy::pacing::{Rng, SplitMix64};
use sendgate::policy::Kind;
use sendgate::store::{OpenOptions, ReserveResult, Settings, State, Store};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NOW: &str = "2026-11-25T12:00:00Z";
const CHILD_ENV: &str = "SENDGATE_STORE_CRASH_CHILD";
/// Kill cycles; `SENDGATE_STORE_CRASH_CYCLES` overrides (at least 50 in CI).
const DEFAULT_CYCLES: usize = 50;
/// How long an anchored cycle waits for the child's start-up to end.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

fn open_store(dir: &Path) -> Store {
    Store::open(&dir.join("store"), Settings::default(), OpenOptions::default()).expect("store opens")
}

/// The child: reserve every queued action, one durable reservation at a time,
/// printing each id after `reserve` returned. sled writes a snapshot every 8 KiB of
/// log (`Store::snapshot_if_due`, as the engine between ticks): kills land in those too.
fn child(dir: &Path) {
    let opts = OpenOptions {
        snapshot_after_bytes: 8 << 10,
        ..OpenOptions::default()
    };
    let mut store = Store::open(&dir.join("store"), Settings::default(), opts).expect("store opens");
    let now = utc(NOW);
    store.recover(now).expect("recover");
    let queued: Vec<String> = store
        .actions()
        .expect("scan")
        .into_iter()
        .filter(|a| a.state == State::Queued)
        .map(|a| a.id)
        .collect();
    let mut out = std::io::stdout().lock();
    // Start-up (open, recovery, scan) is over: the parent may time its kill from here.
    // (On a line of its own: libtest may have printed `test crash_child ... ` before.)
    writeln!(out, "\nS").expect("stdout");
    out.flush().expect("flush");
    for id in queued {
        let (r, _) = store.reserve(std::slice::from_ref(&id), now).expect("reserve");
        if matches!(r[0], ReserveResult::Reserved(_)) {
            writeln!(out, "R {id}").expect("stdout");
            out.flush().expect("flush");
        }
        store.snapshot_if_due().expect("snapshot");
    }
    writeln!(out, "DONE").expect("stdout");
}

#[test]
fn crash_child() {
    // Only does something when re-invoked by the parent below.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_durable_reservation() {
    let cycles = std::env::var("SENDGATE_STORE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc(NOW);
    // Caps that bind only late: most of the run is reservations, the tail is parking.
    let caps =
        r#","caps":{"invites":4000,"messages":3000,"inmails":1500,"engagement":7000},"inmail_credits":1000"#;
    let mut text = format!(
        "{}\n{}\n",
        account_line("a1", caps),
        campaign_line("c1", 2500, "")
    );
    let mut rng = SplitMix64(7);
    for i in 0..20_000 {
        text += &action_line(
            &format!("x{i:05}"),
            "c1",
            "a1",
            Kind::ALL[rng.between(0, 5) as usize].as_str(),
        );
        text.push('\n');
    }
    {
        let store = open_store(dir.path());
        apply(&store, "load.jsonl", &text, now);
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut durable: BTreeSet<String> = BTreeSet::new();
    let mut finished = false;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Half the kills land at a random moment from the spawn (start-up and recovery
        // included), half at a random moment of the reservations: timed from the
        // child's "S", so a start-up slowed by a loaded machine cannot swallow them.
        let anchored = rng.between(0, 1) == 0;
        let kill_after = Duration::from_millis(rng.between(20, 250));
        let mut lines: Vec<String> = Vec::new();
        let start = Instant::now();
        if anchored {
            while !lines.iter().any(|l| l == "S") && start.elapsed() < STARTUP_WAIT {
                if let Ok(line) = rx.recv_timeout(Duration::from_millis(5)) {
                    lines.push(line);
                }
            }
        }
        let from = Instant::now();
        while from.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        reader.join().expect("reader");
        for line in lines.into_iter().chain(rx.try_iter()) {
            if let Some(id) = line.strip_prefix("R ") {
                durable.insert(id.to_string());
            } else if line == "DONE" {
                finished = true;
            }
        }
        let store = open_store(dir.path());
        let audit = store.audit(None, None).expect("audit");
        assert!(audit.clean(), "cycle {cycle}: {audit:?}");
        for id in &durable {
            let a = store.action(id).expect("read").expect("exists");
            assert!(
                matches!(a.state, State::Inflight | State::Unknown),
                "cycle {cycle}: {id} was printed as durable but is {:?}",
                a.state
            );
        }
        assert!(
            audit.entries as usize >= durable.len(),
            "cycle {cycle}: ledger lost entries"
        );
        let day = store.account_day("a1", now.date_naive()).expect("day").reserved;
        assert!(
            day.invites <= 2500 && day.messages <= 2500 && day.inmails <= 1000 && day.engagement <= 7000,
            "cycle {cycle}: {day:?}"
        );
    }
    println!(
        "store crash test: {cycles} SIGKILL cycles, {} reservations printed as durable, all present{}",
        durable.len(),
        if finished {
            " (the child finished its work)"
        } else {
            ""
        }
    );
    assert!(!durable.is_empty());
}

/// The newest snapshot sled wrote in the store at `path`: the log position it covers
/// (its file name, `snap.<LSN in hex>`).
fn newest_snapshot(path: &Path) -> Option<u64> {
    std::fs::read_dir(path)
        .expect("store dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
        })
        .max()
}

/// A kill -9 after a big file must not leave the next start sled's whole log to
/// replay (about 1 ms per MiB: 0.9 s with a million queued actions, against 0.15 s
/// after a clean stop). While a file applies, the engine has sled write a snapshot each
/// time `snapshot_after_bytes` of log were written, so what a crash leaves behind the
/// last snapshot stays within that bound, and the store as a kill left it opens whole.
#[test]
fn a_kill_after_a_big_file_leaves_a_short_log_to_replay() {
    use sendgate::engine::{Engine, EngineConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let after = 1 << 20;
    let opts = OpenOptions {
        snapshot_after_bytes: after,
        ..OpenOptions::default()
    };
    let store = open_with(&path, Settings::default(), opts).expect("store opens");
    let now = utc("2026-06-01T08:00:00Z");
    let mut engine = Engine::new(store, EngineConfig::default(), now).expect("engine starts");
    let accounts: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    // A big file, then a small one: the log goes on past the last snapshot.
    let files = [
        ("big.jsonl", invite_backlog(&names, 1_000, true, None)),
        ("small.jsonl", invite_backlog(&["b0"], 100, true, None)),
    ];
    for (name, text) in &files {
        let out = engine
            .apply_file(name, text.as_bytes(), now)
            .expect("store works");
        assert!(
            matches!(out, sendgate::store::ApplyOutcome::Applied(_)),
            "{name}: {out:?}"
        );
    }
    // No snapshot at all: the whole log is behind the store's creation.
    let snap = newest_snapshot(&path).unwrap_or(0);
    // What a kill -9 leaves: the files as they are, the process gone.
    let copy = dir.path().join("crashed");
    std::fs::create_dir(&copy).expect("copy dir");
    for e in std::fs::read_dir(&path).expect("store dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).expect("copy");
        }
    }
    std::mem::forget(engine);
    let store = open_with(&copy, Settings::default(), OpenOptions::default()).expect("the copy opens");
    assert_eq!(
        store.state_counts().expect("counts")[State::Queued as usize],
        20_100
    );
    drop(store);
    // The open replayed the log from the snapshot to its tip, and wrote a snapshot there.
    let tip = newest_snapshot(&copy).expect("the open wrote a snapshot");
    eprintln!(
        "log replayed after the kill: {} bytes (from {snap} to {tip})",
        tip - snap
    );
    assert!(
        tip - snap <= 2 * after,
        "a start after the kill replayed {} bytes of log",
        tip - snap
    );
}

/// Copy the store's files as a kill -9 leaves them (the process gone mid-run).
fn crash_image(path: &Path, copy: &Path) {
    std::fs::create_dir(copy).expect("copy dir");
    for e in std::fs::read_dir(path).expect("store dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).expect("copy");
        }
    }
}

/// A durable batch of the send path lives in sled's `wal` tree until its changes are
/// written to their trees (every few megabytes, at a snapshot, at a clean stop). A kill
/// in between leaves the reservations only there: the next open writes them to their
/// trees before anything reads, so every slot taken stays taken and every answer
/// recorded stays recorded.
#[test]
fn a_kill_before_the_batches_reach_their_trees_loses_none_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let store = open_with(&path, Settings::default(), OpenOptions::default()).expect("store opens");
    let now = utc(NOW);
    apply(
        &store,
        "backlog.jsonl",
        &invite_backlog(&["a", "b"], 10, true, None),
        now,
    );
    store.catch_up().expect("catch up");
    let ids: Vec<String> = (0..6)
        .flat_map(|i| [format!("a-{i}"), format!("b-{i}")])
        .collect();
    let (results, _) = store.reserve(&ids, now).expect("reserve");
    assert!(
        results.iter().all(|r| matches!(r, ReserveResult::Reserved(_))),
        "{results:?}"
    );
    // Half of them answered `sent`; the answer is flushed, as before anyone is told.
    let sent: Vec<(String, sendgate::contract::Outcome, u64)> = ids[..6]
        .iter()
        .map(|id| (id.clone(), sendgate::contract::Outcome::Sent, 0))
        .collect();
    store.record(&sent, now).expect("record");
    store.settle().expect("settle");
    let copy = dir.path().join("crashed");
    crash_image(&path, &copy);
    std::mem::forget(store);
    {
        // The copy holds the batches in `wal` only: its trees still read as before them.
        let db = raw_sled(&copy);
        assert_eq!(
            db.open_tree("wal").expect("wal").len(),
            2,
            "the reserve and the answers"
        );
        assert!(db.open_tree("inflight").expect("inflight").is_empty());
    }
    let store = open_with(&copy, Settings::default(), OpenOptions::default()).expect("the copy opens");
    let counts = store.state_counts().expect("counts");
    assert_eq!(counts[State::Sent as usize], 6);
    assert_eq!(counts[State::Inflight as usize], 6);
    assert_eq!(counts[State::Queued as usize], 8);
    assert_eq!(
        store.action("b-5").expect("read").expect("exists").state,
        State::Inflight
    );
    let day = utc(NOW).date_naive();
    for acct in ["a", "b"] {
        let rec = store.account_day(acct, day).expect("day");
        assert_eq!(rec.reserved.invites, 6, "{acct}: every slot taken stays taken");
    }
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert_eq!(audit.entries, 12);
    drop(store);
    let db = raw_sled(&copy);
    assert!(
        db.open_tree("wal").expect("wal").is_empty(),
        "the open wrote them to their trees"
    );
    assert_eq!(db.open_tree("inflight").expect("inflight").len(), 6);
}
