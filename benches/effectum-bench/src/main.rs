//! effectum 0.7 (an SQLite job queue) on the same disk as sendgate's throughput benchmark.
//!
//! usage: effectum-bench <N> <DIR> [REPS] [CONCURRENCY] [MODES]
//!
//! MODES is a comma-separated subset of `wal,default,asis` (all three by default).
//!
//! For each mode, REPS times: a fresh queue file in DIR, N no-op jobs enqueued in one
//! `add_jobs` call, then one worker runs them; every job completes itself explicitly
//! (`RunningJob::complete`, which returns once effectum's writer thread has committed the
//! completion). Prints one JSON object on stdout with the median jobs per second of each
//! mode.
//!
//! effectum 0.7 does not expose its pragmas: `Queue::with_options` runs
//! `PRAGMA journal = wal` (not a real pragma — SQLite ignores it, so the queue stays in
//! the rollback-journal `DELETE` mode) and `PRAGMA synchronous = normal`. To measure it
//! with `synchronous = FULL` without patching it, this program registers an SQLite
//! auto-extension: every connection effectum opens first runs
//! `PRAGMA journal_mode = <mode>; PRAGMA synchronous = FULL`, and an authorizer then
//! makes SQLite ignore that connection's later `synchronous`/`journal_mode` pragmas
//! (effectum's own). The modes:
//!
//! - `wal`:     journal_mode = WAL,    synchronous = FULL
//! - `default`: journal_mode = DELETE (effectum's effective default), synchronous = FULL
//! - `asis`:    untouched: what effectum does out of the box (DELETE, synchronous = NORMAL)

use effectum::{Job, JobRunner, Queue, RunningJob, Worker};
use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODE_ASIS: u8 = 0;
const MODE_WAL: u8 = 1;
const MODE_DELETE: u8 = 2;

/// The mode applied to connections opened from now on.
static MODE: AtomicU8 = AtomicU8::new(MODE_ASIS);
/// Pragmas of effectum's that the authorizer made SQLite ignore.
static OVERRIDDEN: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn authorize(
    _user: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    _arg2: *const c_char,
    _arg3: *const c_char,
    _arg4: *const c_char,
) -> c_int {
    if action == ffi::SQLITE_PRAGMA && !arg1.is_null() {
        // SAFETY: SQLite passes a NUL-terminated pragma name.
        let name = unsafe { CStr::from_ptr(arg1) }.to_bytes();
        if name.eq_ignore_ascii_case(b"synchronous") || name.eq_ignore_ascii_case(b"journal_mode") {
            OVERRIDDEN.fetch_add(1, Ordering::Relaxed);
            return ffi::SQLITE_IGNORE;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    _err: *mut *const c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    let sql: &CStr = match MODE.load(Ordering::SeqCst) {
        MODE_WAL => c"PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
        MODE_DELETE => c"PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;",
        _ => return ffi::SQLITE_OK,
    };
    // SAFETY: `db` is the connection being opened; the SQL is NUL-terminated.
    let rc = unsafe { ffi::sqlite3_exec(db, sql.as_ptr(), None, std::ptr::null_mut(), std::ptr::null_mut()) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: as above; the callback is a plain function with no user data.
    unsafe { ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut()) }
}

#[derive(Clone, Debug)]
struct Ctx {
    done: Arc<AtomicUsize>,
    all_done: Arc<tokio::sync::Notify>,
    target: usize,
}

async fn noop_job(job: RunningJob, ctx: Ctx) -> Result<(), effectum::Error> {
    // The "send": nothing. Then the durable completion, awaited.
    job.complete(()).await?;
    if ctx.done.fetch_add(1, Ordering::SeqCst) + 1 == ctx.target {
        ctx.all_done.notify_one();
    }
    Ok(())
}

struct Run {
    enqueue_s: f64,
    run_s: f64,
    journal: &'static str,
}

/// SQLite's header bytes 18 and 19 are 2 in WAL mode, 1 in rollback-journal mode.
fn journal_of(db: &Path) -> &'static str {
    match std::fs::read(db) {
        Ok(b) if b.len() > 19 && b[18] == 2 && b[19] == 2 => "wal",
        Ok(b) if b.len() > 19 => "rollback (delete)",
        _ => "unknown",
    }
}

async fn one_run(n: usize, file: &Path, mode: u8, concurrency: u16) -> Run {
    let _ = std::fs::remove_file(file);
    for ext in ["-wal", "-shm", "-journal"] {
        let mut p = file.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    MODE.store(mode, Ordering::SeqCst);
    let queue = Queue::new(file).await.expect("effectum queue opens");
    let ctx = Ctx {
        done: Arc::new(AtomicUsize::new(0)),
        all_done: Arc::new(tokio::sync::Notify::new()),
        target: n,
    };
    let jobs: Vec<Job> = (0..n)
        .map(|i| {
            Job::builder("noop")
                .json_payload(&serde_json::json!({"i": i, "note": "hi"}))
                .expect("payload")
                .build()
        })
        .collect();
    let t0 = Instant::now();
    queue.add_jobs(jobs).await.expect("jobs enqueued");
    let enqueue_s = t0.elapsed().as_secs_f64();
    let runner = JobRunner::builder("noop", noop_job).build();
    let t1 = Instant::now();
    let worker = Worker::builder(&queue, ctx.clone())
        .max_concurrency(concurrency)
        .jobs([runner])
        .build()
        .await
        .expect("worker starts");
    let notified = ctx.all_done.notified();
    if ctx.done.load(Ordering::SeqCst) < n {
        tokio::time::timeout(Duration::from_secs(600), notified)
            .await
            .expect("effectum finished within 10 minutes");
    }
    let run_s = t1.elapsed().as_secs_f64();
    worker.unregister(None).await.expect("worker stops");
    queue.close(Duration::from_secs(10)).await.expect("queue closes");
    drop(queue);
    MODE.store(MODE_ASIS, Ordering::SeqCst);
    Run {
        enqueue_s,
        run_s,
        journal: journal_of(file),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: effectum-bench <N> <DIR> [REPS] [CONCURRENCY] [MODES]");
        std::process::exit(2);
    }
    let n: usize = args[1].parse().expect("N is a number");
    let dir = PathBuf::from(&args[2]);
    let reps: usize = args.get(3).map_or(3, |s| s.parse().expect("REPS is a number"));
    let concurrency: u16 = args
        .get(4)
        .map_or(64, |s| s.parse().expect("CONCURRENCY is a number"));
    let modes: Vec<String> = args
        .get(5)
        .map_or("wal,default,asis", String::as_str)
        .split(',')
        .map(str::to_string)
        .collect();
    std::fs::create_dir_all(&dir).expect("bench dir");
    // SAFETY: registers a plain function, once, before any connection is opened.
    let rc = unsafe { ffi::sqlite3_auto_extension(Some(on_open)) };
    assert_eq!(rc, ffi::SQLITE_OK, "auto-extension registered");

    let mut out = serde_json::Map::new();
    out.insert("n".into(), n.into());
    out.insert("reps".into(), reps.into());
    out.insert("concurrency".into(), concurrency.into());
    for (name, mode) in [("wal", MODE_WAL), ("default", MODE_DELETE), ("asis", MODE_ASIS)] {
        if !modes.iter().any(|m| m == name) {
            continue;
        }
        let mut run_rates = Vec::new();
        let mut e2e_rates = Vec::new();
        let mut enqueue_rates = Vec::new();
        let mut journal = "";
        for r in 0..reps {
            let file = dir.join(format!("effectum-{name}-{r}.db"));
            let run = one_run(n, &file, mode, concurrency).await;
            eprintln!(
                "effectum {name} rep {r}: enqueue {:.3}s, run+complete {:.3}s ({:.0} jobs/s), journal {}",
                run.enqueue_s,
                run.run_s,
                n as f64 / run.run_s,
                run.journal
            );
            run_rates.push(n as f64 / run.run_s);
            e2e_rates.push(n as f64 / (run.enqueue_s + run.run_s));
            enqueue_rates.push(n as f64 / run.enqueue_s);
            journal = run.journal;
            let _ = std::fs::remove_file(&file);
        }
        let (lo, hi) = run_rates
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        out.insert(format!("{name}_jobs_per_s_min"), lo.into());
        out.insert(format!("{name}_jobs_per_s_max"), hi.into());
        out.insert(format!("{name}_jobs_per_s"), median(run_rates).into());
        out.insert(format!("{name}_e2e_jobs_per_s"), median(e2e_rates).into());
        out.insert(format!("{name}_enqueue_jobs_per_s"), median(enqueue_rates).into());
        out.insert(format!("{name}_journal"), journal.into());
    }
    out.insert(
        "pragmas_overridden".into(),
        OVERRIDDEN.load(Ordering::Relaxed).into(),
    );
    println!("{}", serde_json::Value::Object(out));
}
