//! Durable throughput, side by side: the disk's own `fdatasync` rate, sendgate's
//! reserve → send → record pipeline with real durability, job-file ingest, and effectum
//! (an SQLite job queue) on the same disk.
//!
//! ```text
//! cargo bench --bench throughput              # full: the numbers in BENCHMARKS.md
//! cargo bench --bench throughput -- --quick   # the same, smaller (under 3 minutes)
//! cargo bench --bench throughput -- --quick --no-effectum
//! cargo bench --bench throughput -- --quick --only batched   # one figure, for profiling
//! cargo bench --bench throughput -- --quick --only floor      # sled's own floor alone
//! ```
//!
//! Every figure is the median of 3 (quick) or 5 (full) repetitions, each on a fresh
//! store under `target/bench/`. Results: a table on stdout and
//! `target/bench/throughput.json`.
//!
//! effectum is measured by `benches/effectum-bench/`, a separate crate with its own
//! workspace, built and run here with `cargo run --release`, so the main crate's tests
//! and lints never compile SQLite.

mod common;
mod floor;

use common::{Mode, Stat};
use sendgate::contract::{parse_file, Outcome, SendRequest};
use sendgate::store::{ApplyOutcome, Attempt, ReserveResult, Store};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Reservations per `reserve` call and outcomes per `record` call in batched mode: the
/// engine's own group-commit size.
const BATCH: usize = sendgate::engine::MAX_RESERVE_BATCH;

struct Sizes {
    reps: usize,
    fsyncs: usize,
    /// Accounts the pipeline actions are spread over.
    accounts: usize,
    single: usize,
    batched: usize,
    ingest: usize,
    effectum: usize,
    effectum_single: usize,
}

fn sizes(mode: Mode) -> Sizes {
    match mode {
        Mode::Full => Sizes {
            reps: 5,
            fsyncs: 1000,
            accounts: 100,
            single: 1000,
            batched: 20_000,
            ingest: 100_000,
            effectum: 10_000,
            effectum_single: 1000,
        },
        Mode::Quick => Sizes {
            reps: 3,
            fsyncs: 300,
            accounts: 100,
            single: 300,
            batched: 4000,
            ingest: 20_000,
            effectum: 2000,
            effectum_single: 300,
        },
        Mode::Smoke => Sizes {
            reps: 1,
            fsyncs: 10,
            accounts: 4,
            single: 10,
            batched: 130,
            ingest: 200,
            effectum: 0,
            effectum_single: 0,
        },
    }
}

/// (a) The disk's limit: 512-byte appends to one file, each followed by `fdatasync`.
fn fdatasync_rate(dir: &Path, n: usize) -> f64 {
    let path = dir.join("fdatasync.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open fdatasync file");
    let block = [0x5au8; 512];
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&block).expect("append");
        f.sync_data().expect("fdatasync");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    rate
}

/// The no-op upstream: looks at the request and says `sent`.
fn noop_send(req: &SendRequest) -> Outcome {
    black_box(req);
    Outcome::Sent
}

fn open_store(dir: &Path) -> Store {
    Store::open(&dir.join("store"), common::settings(true), common::open_options()).expect("store opens")
}

/// A store with `accounts` accounts (caps that never bind) and one campaign.
fn setup(dir: &Path, accounts: usize) -> Store {
    let store = open_store(dir);
    common::apply_ok(&store, "00-setup.jsonl", &common::setup_text(accounts));
    store
}

struct Ingest {
    parse_per_s: f64,
    apply_per_s: f64,
    total_per_s: f64,
    /// Process CPU time (all threads, sled's included) of `apply`, per action.
    apply_cpu_us: f64,
}

/// Ingest: one file of `n` actions, parsed and applied (in chunks, durable).
/// `Store::apply` parses as it goes: `parse_per_s` times the parse alone, for scale;
/// `apply_per_s` and `total_per_s` are both parse + apply.
fn ingest(dir: &Path, n: usize, accounts: usize) -> Ingest {
    let store = setup(dir, accounts);
    let (text, _) = common::actions_file("in-", n, accounts, "bench");
    let t0 = Instant::now();
    let records = parse_file("01-actions.jsonl", text.as_bytes()).expect("valid job file");
    let parse_s = t0.elapsed().as_secs_f64();
    drop(records);
    let cpu0 = common::cpu_time_rusage();
    let t1 = Instant::now();
    let out = store
        .apply("01-actions.jsonl", text.as_bytes(), common::bench_now())
        .expect("store works");
    let apply_s = t1.elapsed().as_secs_f64();
    let apply_cpu_s = (common::cpu_time_rusage() - cpu0).as_secs_f64();
    match out {
        ApplyOutcome::Applied(a) => assert_eq!(a.actions as usize, n, "every action applied"),
        other => panic!("ingest did not apply: {other:?}"),
    }
    Ingest {
        parse_per_s: n as f64 / parse_s,
        apply_per_s: n as f64 / apply_s,
        total_per_s: n as f64 / apply_s,
        apply_cpu_us: 1e6 * apply_cpu_s / n as f64,
    }
}

/// Where one pipeline run spent its time.
#[derive(Default)]
struct Breakdown {
    wall_s: f64,
    /// The reservation transactions, the previous batch's answers included.
    reserve_s: f64,
    /// The last batch's answers, on their own.
    record_s: f64,
    /// Process CPU time (all threads, sled's included) over the run.
    cpu_s: f64,
}

/// (b) reserve → no-op send → record, `batch` actions per reserve call, each batch's
/// answers recorded in the next batch's reservation transaction; every reservation
/// durable (flush + fdatasync unless `fsync` is false). Returns actions per second.
fn pipeline(dir: &Path, n: usize, accounts: usize, batch: usize) -> f64 {
    pipeline_with(dir, n, accounts, batch, true, &mut Breakdown::default())
}

fn pipeline_with(dir: &Path, n: usize, accounts: usize, batch: usize, fsync: bool, b: &mut Breakdown) -> f64 {
    let mut store = setup(dir, accounts);
    let (text, ids) = common::actions_file("a-", n, accounts, "bench");
    common::apply_ok(&store, "01-actions.jsonl", &text);
    store.settings.fsync = fsync;
    let now = common::bench_now();
    let mut sent = 0usize;
    let cpu0 = common::cpu_time_rusage();
    let t = Instant::now();
    // As the worker does: the answers of one batch are recorded in the transaction
    // that reserves the next (`Store::reserve_after`), made durable once; the last
    // batch's answers are recorded on their own, then flushed before anyone is told.
    let mut answers: Vec<Attempt> = Vec::new();
    for chunk in ids.chunks(batch) {
        let t_res = Instant::now();
        // As the engine at the start of each tick: sled writes a snapshot once enough
        // log was written since the last one (its cost counts as the reservation's).
        store.snapshot_if_due().expect("snapshot");
        let folded = store.reserve_after(&answers, now, chunk, now).expect("reserve");
        b.reserve_s += t_res.elapsed().as_secs_f64();
        sent += folded.recorded.len();
        answers.clear();
        for r in folded.results {
            match r {
                ReserveResult::Reserved(res) => {
                    let outcome = noop_send(&res.request);
                    answers.push(Attempt {
                        action: res.request.id,
                        outcome,
                        backoff_s: 0,
                        probe: false,
                    });
                }
                other => panic!("a cap bound in the benchmark: {other:?}"),
            }
        }
    }
    let t_rec = Instant::now();
    let (recorded, _changes) = store.record_attempts(&answers, now).expect("record");
    sent += recorded.len();
    store.settle().expect("settle");
    // What the batches changed is written to its trees once enough is held (every
    // few thousand actions); the rest here, so every action's whole cost is counted.
    store.catch_up().expect("catch up");
    b.record_s += t_rec.elapsed().as_secs_f64();
    let wall = t.elapsed().as_secs_f64();
    b.wall_s += wall;
    b.cpu_s += (common::cpu_time_rusage() - cpu0).as_secs_f64();
    assert_eq!(sent, n, "every action sent and recorded");
    n as f64 / wall
}

/// The floor under sled (`floor.rs`): every figure with its spread, the record sizes
/// used and where each commit's time went (summed over the repetitions).
struct Floor {
    sizes: floor::Sizes,
    commit: Stat,
    commit_times: floor::Times,
    commit_nofsync: Stat,
    commit_nofsync_times: floor::Times,
    /// Actions per second (batches × `BATCH`).
    batch_separate: Stat,
    batch_separate_times: floor::Times,
    batch_folded: Stat,
    batch_folded_times: floor::Times,
    ingest: Stat,
    ingest_times: floor::Times,
    chunk_is_blob: bool,
}

fn measure_floor(dir: &Path, sz: &Sizes) -> Floor {
    let sizes = floor::sizes(dir, BATCH, sz.accounts.max(BATCH), common::settings(true));
    eprintln!(
        "  record sizes (bytes, as the store wrote them): state {}, body {}, reservations of {BATCH} {} \
         ({} an entry), outcomes of {BATCH} {} ({} an entry)",
        sizes.state,
        sizes.body,
        sizes.reservations,
        sizes.entry(),
        sizes.outcomes,
        sizes.outcome()
    );
    let runs = |label: &str, f: &dyn Fn(&Path) -> (f64, floor::Times)| {
        let mut times = floor::Times::default();
        let s = repeat(sz.reps, label, |r| {
            let (x, t) = f(&dir.join(format!("floor-{label}-{r}")));
            let _ = std::fs::remove_dir_all(dir.join(format!("floor-{label}-{r}")));
            times.add(&t);
            x
        });
        (s, times)
    };
    let batches = (sz.batched / BATCH).max(1);
    let (record_len, outcome_len) = (BATCH * sizes.entry(), BATCH * sizes.outcome());
    let per_batch = |s: Stat| Stat {
        median: s.median * BATCH as f64,
        min: s.min * BATCH as f64,
        max: s.max * BATCH as f64,
    };
    let (commit, commit_times) = runs("commit", &|d| floor::commit(d, sz.single, sizes.state, true));
    let (commit_nofsync, commit_nofsync_times) = runs("commit-nofsync", &|d| {
        floor::commit(d, sz.single, sizes.state, false)
    });
    let (sep, batch_separate_times) = runs("batch-separate", &|d| {
        floor::batch_log(d, batches, record_len, outcome_len, floor::Outcomes::Separate)
    });
    let (fold, batch_folded_times) = runs("batch-folded", &|d| {
        floor::batch_log(d, batches, record_len, outcome_len, floor::Outcomes::Folded)
    });
    let (ingest, ingest_times) = runs("ingest", &|d| floor::ingest(d, sz.ingest, sizes.body));
    let chunk_is_blob = floor::stored_as_blob(&dir.join("floor-blob"), floor::CHUNK_BODIES * sizes.body);
    Floor {
        sizes,
        commit,
        commit_times,
        commit_nofsync,
        commit_nofsync_times,
        batch_separate: per_batch(sep),
        batch_separate_times,
        batch_folded: per_batch(fold),
        batch_folded_times,
        ingest,
        ingest_times,
        chunk_is_blob,
    }
}

/// One floor run's time per unit (`unit`: what its rate counts), as a JSON object
/// (microseconds).
fn times_json(unit: &str, t: &floor::Times) -> serde_json::Value {
    serde_json::json!({
        "unit": unit,
        "units": t.units,
        "sled_transactions": t.commits,
        "transaction_us": t.per_unit_us(t.tx),
        "flush_us": t.per_unit_us(t.flush),
        "fsync_us": t.per_unit_us(t.sync),
        "wall_us": t.per_unit_us(t.wall),
        "process_cpu_us": t.per_unit_us(t.cpu),
    })
}

fn print_times(label: &str, unit: &str, t: &floor::Times) {
    eprintln!(
        "  {label}: per {unit} wall {:.1} µs = transactions {:.1} + flushes {:.1} + fsyncs {:.1}; \
         process CPU {:.1} µs",
        t.per_unit_us(t.wall),
        t.per_unit_us(t.tx),
        t.per_unit_us(t.flush),
        t.per_unit_us(t.sync),
        t.per_unit_us(t.cpu)
    );
}

impl Floor {
    fn print_times(&self) {
        print_times("commit", "commit", &self.commit_times);
        print_times("commit without fdatasync", "commit", &self.commit_nofsync_times);
        print_times(
            "batch log, outcomes separate",
            "batch",
            &self.batch_separate_times,
        );
        print_times("batch log, outcomes folded", "batch", &self.batch_folded_times);
        print_times("ingest chunks", "action", &self.ingest_times);
    }

    /// The better of the two batch-log variants.
    fn batch_best(&self) -> f64 {
        self.batch_separate.median.max(self.batch_folded.median)
    }
}

fn repeat(reps: usize, label: &str, mut f: impl FnMut(usize) -> f64) -> Stat {
    let v: Vec<f64> = (0..reps)
        .map(|r| {
            let x = f(r);
            eprintln!("  {label} rep {r}: {x:.0}/s");
            x
        })
        .collect();
    common::stat(v)
}

/// (c) effectum, through its own crate. `Err` says why it was skipped.
fn effectum(
    n: usize,
    reps: usize,
    concurrency: u16,
    modes: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join("benches/effectum-bench/Cargo.toml");
    let dir = common::scratch("effectum");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building and running effectum-bench (the first build compiles SQLite: minutes)");
    let out = Command::new(&cargo)
        .arg("run")
        .arg("--release")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(common::target_dir().join("effectum-bench"))
        .arg("--")
        .arg(n.to_string())
        .arg(&dir)
        .arg(reps.to_string())
        .arg(concurrency.to_string())
        .arg(modes)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run `{cargo}`: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "`cargo run --manifest-path {}` failed ({}); see the messages above",
            manifest.display(),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(format!("effectum-bench printed no JSON result: {text:?}")),
    }
}

fn num(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(serde_json::Value::as_f64)
}

fn main() {
    let Some(mode) = common::mode() else { return };
    let args: Vec<String> = std::env::args().collect();
    let want_effectum = mode != Mode::Smoke && !args.iter().any(|a| a == "--no-effectum");
    let sz = sizes(mode);
    let dir = common::scratch("throughput");
    let fs = common::check_disk(&dir);
    eprintln!(
        "throughput ({mode:?}): {} on {fs}, {} cores, {}, load {}",
        dir.display(),
        common::cores(),
        common::cpu_model(),
        common::loadavg()
    );

    // `--only fdatasync|ingest|single|batched|single-nofsync|batched-nofsync|floor`: one
    // measurement with a time breakdown and no report (for profiling).
    if let Some(only) = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
    {
        if only == "floor" {
            let f = measure_floor(&dir, &sz);
            f.print_times();
            for (name, s) in [
                ("durable commits", f.commit),
                ("commits, flush only", f.commit_nofsync),
                ("batch log actions, outcomes separate", f.batch_separate),
                ("batch log actions, outcomes folded", f.batch_folded),
                ("ingest chunk actions", f.ingest),
            ] {
                println!(
                    "floor {name}: median {:.0}/s (min {:.0}, max {:.0})",
                    s.median, s.min, s.max
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let s = match only.as_str() {
            "fdatasync" => repeat(sz.reps, "fdatasync", |_| fdatasync_rate(&dir, sz.fsyncs)),
            "ingest" => repeat(sz.reps, "ingest", |r| {
                let d = dir.join(format!("ingest-{r}"));
                let i = ingest(&d, sz.ingest, sz.accounts);
                eprintln!(
                    "  parse {:.0}/s, apply {:.0}/s; apply's process CPU {:.1} µs per action",
                    i.parse_per_s, i.apply_per_s, i.apply_cpu_us
                );
                i.total_per_s
            }),
            "single" | "batched" | "single-nofsync" | "batched-nofsync" => {
                let (batch, n) = if only.starts_with("single") {
                    (1, sz.single)
                } else {
                    (BATCH, sz.batched)
                };
                let fsync = !only.ends_with("nofsync");
                let mut b = Breakdown::default();
                let s = repeat(sz.reps, only, |r| {
                    pipeline_with(&dir.join(format!("p-{r}")), n, sz.accounts, batch, fsync, &mut b)
                });
                let per = |x: f64| 1e6 * x / (n * sz.reps) as f64;
                eprintln!(
                    "  per action: wall {:.1} µs = reserve {:.1} + record {:.1} + rest {:.1}; \
                     process CPU {:.1} µs ({:.0}% of wall)",
                    per(b.wall_s),
                    per(b.reserve_s),
                    per(b.record_s),
                    per(b.wall_s - b.reserve_s - b.record_s),
                    per(b.cpu_s),
                    100.0 * b.cpu_s / b.wall_s
                );
                s
            }
            other => panic!(
                "--only takes fdatasync, ingest, single, batched, single-nofsync, batched-nofsync \
                 or floor, not {other}"
            ),
        };
        println!(
            "{only}: median {:.0}/s (min {:.0}, max {:.0})",
            s.median, s.min, s.max
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    eprintln!("(a) fdatasync of 512-byte appends");
    let fsync = repeat(sz.reps, "fdatasync", |_| fdatasync_rate(&dir, sz.fsyncs));

    eprintln!("(b) sendgate ingest: one file of {} actions", sz.ingest);
    let mut ingests = Vec::new();
    for r in 0..sz.reps {
        let d = dir.join(format!("ingest-{r}"));
        let i = ingest(&d, sz.ingest, sz.accounts);
        eprintln!(
            "  ingest rep {r}: parse {:.0}/s, apply {:.0}/s, together {:.0}/s",
            i.parse_per_s, i.apply_per_s, i.total_per_s
        );
        let _ = std::fs::remove_dir_all(&d);
        ingests.push(i);
    }
    let parse = common::stat(ingests.iter().map(|i| i.parse_per_s).collect());
    let apply = common::stat(ingests.iter().map(|i| i.apply_per_s).collect());
    let ingest_total = common::stat(ingests.iter().map(|i| i.total_per_s).collect());

    eprintln!(
        "(b) sendgate pipeline, one action per transaction ({} actions)",
        sz.single
    );
    let single = repeat(sz.reps, "single", |r| {
        let d = dir.join(format!("single-{r}"));
        let x = pipeline(&d, sz.single, sz.accounts, 1);
        let _ = std::fs::remove_dir_all(&d);
        x
    });
    eprintln!(
        "(b) sendgate pipeline, {BATCH} actions per transaction ({} actions)",
        sz.batched
    );
    let batched = repeat(sz.reps, "batched", |r| {
        let d = dir.join(format!("batched-{r}"));
        let x = pipeline(&d, sz.batched, sz.accounts, BATCH);
        let _ = std::fs::remove_dir_all(&d);
        x
    });

    eprintln!("(d) the floor under sled: sled 0.34 alone, the store's config and syncs");
    let fl = measure_floor(&dir, &sz);
    fl.print_times();

    let (eff, eff_single, eff_skip) = if want_effectum {
        eprintln!(
            "(c) effectum: {} no-op jobs, worker concurrency {BATCH}",
            sz.effectum
        );
        match effectum(sz.effectum, sz.reps, BATCH as u16, "wal,default,asis") {
            Ok(m) => {
                eprintln!(
                    "(c) effectum: {} no-op jobs, worker concurrency 1",
                    sz.effectum_single
                );
                let s = effectum(sz.effectum_single, sz.reps, 1, "wal,default").ok();
                (Some(m), s, None)
            }
            Err(why) => (None, None, Some(why)),
        }
    } else {
        let why = if mode == Mode::Smoke {
            "smoke run".to_string()
        } else {
            "--no-effectum".to_string()
        };
        (None, None, Some(why))
    };
    if let Some(why) = &eff_skip {
        eprintln!("effectum skipped: {why}");
    }

    let best = single.median.max(batched.median);
    let eff_wal = eff.as_ref().and_then(|m| num(m, "wal_jobs_per_s"));
    let eff_default = eff.as_ref().and_then(|m| num(m, "default_jobs_per_s"));
    let eff_asis = eff.as_ref().and_then(|m| num(m, "asis_jobs_per_s"));
    let eff_best = match (eff_wal, eff_default) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let eff_e2e = eff.as_ref().and_then(|m| {
        let w = num(m, "wal_e2e_jobs_per_s")?;
        let d = num(m, "default_e2e_jobs_per_s")?;
        Some(w.max(d))
    });
    let eff1_best = eff_single.as_ref().and_then(|m| {
        let w = num(m, "wal_jobs_per_s")?;
        let d = num(m, "default_jobs_per_s")?;
        Some(w.max(d))
    });
    // sendgate end to end, like effectum's: ingest, then the batched pipeline.
    let sg_e2e = 1.0 / (1.0 / ingest_total.median + 1.0 / batched.median);

    let row = |name: &str, s: &Stat| {
        println!(
            "| {name:<58} | {:>12.0} | {:>10.0} – {:<10.0} |",
            s.median, s.min, s.max
        )
    };
    let one = |name: &str, v: Option<f64>| match v {
        Some(v) => println!("| {name:<58} | {v:>12.0} | {:>23} |", ""),
        None => println!("| {name:<58} | {:>12} | {:>23} |", "skipped", ""),
    };
    // An effectum figure with its spread, from effectum-bench's JSON.
    let eff_row = |name: &str, m: Option<&serde_json::Map<String, serde_json::Value>>, mode: &str| {
        let v = m.and_then(|m| num(m, &format!("{mode}_jobs_per_s")));
        let lo = m.and_then(|m| num(m, &format!("{mode}_jobs_per_s_min")));
        let hi = m.and_then(|m| num(m, &format!("{mode}_jobs_per_s_max")));
        match (v, lo, hi) {
            (Some(v), Some(lo), Some(hi)) => {
                println!("| {name:<58} | {v:>12.0} | {lo:>10.0} – {hi:<10.0} |")
            }
            _ => one(name, v),
        }
    };
    let ratio = |name: &str, a: f64, b: Option<f64>| match b {
        Some(b) => println!("| {name:<58} | {:>11.2}× | {:>23} |", a / b, ""),
        None => println!("| {name:<58} | {:>12} | {:>23} |", "n/a", ""),
    };
    println!();
    println!(
        "throughput, {mode:?} mode, median of {} (per second; spread min – max)",
        sz.reps
    );
    println!("| {:<58} | {:>12} | {:>23} |", "figure", "median", "spread");
    println!("|{:-<60}|{:->14}|{:->25}|", "", "", "");
    row("fdatasync of 512-byte appends", &fsync);
    row("sendgate: one action per transaction (actions)", &single);
    row(
        &format!("sendgate: {BATCH} actions per transaction (actions)"),
        &batched,
    );
    row("sendgate ingest: parse (actions)", &parse);
    row(
        "sendgate ingest: apply, one durable transaction (actions)",
        &apply,
    );
    row("sendgate ingest: parse + apply (actions)", &ingest_total);
    eff_row(
        "effectum WAL, synchronous=FULL, concurrency 64 (jobs)",
        eff.as_ref(),
        "wal",
    );
    eff_row(
        "effectum DELETE (its default), synchronous=FULL, conc. 64",
        eff.as_ref(),
        "default",
    );
    eff_row(
        "effectum as shipped (DELETE, synchronous=NORMAL), conc. 64",
        eff.as_ref(),
        "asis",
    );
    eff_row(
        "effectum WAL, synchronous=FULL, concurrency 1 (jobs)",
        eff_single.as_ref(),
        "wal",
    );
    eff_row(
        "effectum DELETE, synchronous=FULL, concurrency 1 (jobs)",
        eff_single.as_ref(),
        "default",
    );
    one("effectum end to end (enqueue + run), best FULL mode", eff_e2e);
    one("sendgate end to end (ingest + batched pipeline)", Some(sg_e2e));
    ratio("ratio: sendgate best / effectum best (goal ≥ 2)", best, eff_best);
    ratio(
        "ratio: sendgate single / effectum concurrency 1",
        single.median,
        eff1_best,
    );
    ratio("ratio: sendgate e2e / effectum e2e", sg_e2e, eff_e2e);
    ratio(
        "ratio: sendgate batched / fdatasync (goal ≥ 1)",
        batched.median,
        Some(fsync.median),
    );
    let eff1_wal = eff_single.as_ref().and_then(|m| num(m, "wal_jobs_per_s"));
    let eff_enqueue = eff.as_ref().and_then(|m| num(m, "wal_enqueue_jobs_per_s"));
    let floor_ingest_parsed = 1.0 / (1.0 / fl.ingest.median + 1.0 / parse.median);
    let sz_f = fl.sizes;
    row(
        &format!("floor: durable commit of one {} B record (commits)", sz_f.state),
        &fl.commit,
    );
    row(
        "floor: the same, flush without fdatasync (commits)",
        &fl.commit_nofsync,
    );
    row(
        &format!(
            "floor: batch log, {BATCH} × {} B, outcomes separate (act.)",
            sz_f.entry()
        ),
        &fl.batch_separate,
    );
    row(
        &format!(
            "floor: batch log, {BATCH} × {} B, outcomes folded (act.)",
            sz_f.entry()
        ),
        &fl.batch_folded,
    );
    row(
        &format!(
            "floor: ingest, {} × {} B a chunk record (actions)",
            floor::CHUNK_BODIES,
            sz_f.body
        ),
        &fl.ingest,
    );
    one(
        "floor: ingest chunks + this run's parse, serial",
        Some(floor_ingest_parsed),
    );
    one("effectum WAL FULL add_jobs enqueue (jobs)", eff_enqueue);
    ratio(
        "ratio: floor commit / effectum WAL c=1 (goal ≥ 1.5)",
        fl.commit.median,
        eff1_wal,
    );
    ratio(
        "ratio: floor batch log best / effectum WAL ×64 (goal ≥ 2)",
        fl.batch_best(),
        eff_wal,
    );
    ratio(
        "ratio: floor ingest / effectum WAL enqueue (goal ≥ 1)",
        fl.ingest.median,
        eff_enqueue,
    );
    // What is left per action for everything but sled at the goal rate: the goal's time
    // per action minus the floor's (negative: out of reach even with no work at all).
    let budget_us =
        |floor_per_s: f64, goal_per_s: Option<f64>| goal_per_s.map(|g| 1e6 / g - 1e6 / floor_per_s);
    let budget_batch = budget_us(fl.batch_best(), eff_wal.map(|e| 2.0 * e));
    let budget_single = budget_us(fl.commit.median, eff1_wal.map(|e| 1.5 * e));
    let budget_ingest = budget_us(fl.ingest.median, eff_enqueue);
    let us = |name: &str, v: Option<f64>| match v {
        Some(v) => println!("| {name:<58} | {v:>10.1}µs | {:>23} |", ""),
        None => println!("| {name:<58} | {:>12} | {:>23} |", "n/a", ""),
    };
    us(
        "budget per action left at 2× effectum ×64 (batch log)",
        budget_batch,
    );
    us(
        "budget per action left at 1.5× effectum c=1 (commit)",
        budget_single,
    );
    us(
        "budget per action left at 1× effectum enqueue (ingest)",
        budget_ingest,
    );

    let mut j = serde_json::json!({
        "mode": format!("{mode:?}").to_lowercase(),
        "reps": sz.reps,
        "sendgate_actions_per_s": best,
        "sendgate_single_per_s": single.median,
        "sendgate_batched_per_s": batched.median,
        "sendgate_batch_size": BATCH,
        "effectum_jobs_per_s": eff_best,
        "effectum_wal_full_jobs_per_s": eff_wal,
        "effectum_default_full_jobs_per_s": eff_default,
        "effectum_as_shipped_jobs_per_s": eff_asis,
        "effectum_concurrency1_jobs_per_s": eff1_best,
        "effectum_e2e_jobs_per_s": eff_e2e,
        "effectum_skipped": eff_skip,
        "sendgate_e2e_actions_per_s": sg_e2e,
        "fdatasync_per_s": fsync.median,
        "ingest_actions_per_s": ingest_total.median,
        "ingest_parse_actions_per_s": parse.median,
        "ingest_apply_actions_per_s": apply.median,
        "ratio_sendgate_vs_effectum": eff_best.map(|e| best / e),
        "ratio_batched_vs_fdatasync": batched.median / fsync.median,
        "spread": {
            "fdatasync_per_s": [fsync.min, fsync.max],
            "sendgate_single_per_s": [single.min, single.max],
            "sendgate_batched_per_s": [batched.min, batched.max],
            "ingest_actions_per_s": [ingest_total.min, ingest_total.max],
        },
        "sizes": {
            "fsyncs": sz.fsyncs, "accounts": sz.accounts, "single": sz.single,
            "batched": sz.batched, "ingest": sz.ingest, "effectum": sz.effectum,
            "effectum_concurrency1": sz.effectum_single,
        },
        "machine": {
            "cores": common::cores(),
            "cpu": common::cpu_model(),
            "filesystem": fs,
            "loadavg_at_end": common::loadavg(),
        },
    });
    let spread = |s: &Stat| serde_json::json!([s.min, s.max]);
    j["floor"] = serde_json::json!({
        "what": "sled 0.34 alone with store::sled_config and make_durable's syncs (benches/floor)",
        "batch": BATCH,
        "chunk_bodies": floor::CHUNK_BODIES,
        "record_bytes": {
            "state": sz_f.state,
            "body": sz_f.body,
            "reservations_record": sz_f.reservations,
            "reservation_entry": sz_f.entry(),
            "outcomes_record": sz_f.outcomes,
            "outcome_entry": sz_f.outcome(),
            "batch_log_record": BATCH * sz_f.entry(),
            "batch_log_outcome_record": BATCH * sz_f.outcome(),
            "ingest_chunk_record": floor::CHUNK_BODIES * sz_f.body,
            "ingest_chunk_stored_as_blob": fl.chunk_is_blob,
        },
        "commit_durable_per_s": fl.commit.median,
        "commit_flush_only_per_s": fl.commit_nofsync.median,
        "batch_log_separate_actions_per_s": fl.batch_separate.median,
        "batch_log_folded_actions_per_s": fl.batch_folded.median,
        "ingest_actions_per_s": fl.ingest.median,
        "ingest_with_parse_actions_per_s": floor_ingest_parsed,
        "spread": {
            "commit_durable_per_s": spread(&fl.commit),
            "commit_flush_only_per_s": spread(&fl.commit_nofsync),
            "batch_log_separate_actions_per_s": spread(&fl.batch_separate),
            "batch_log_folded_actions_per_s": spread(&fl.batch_folded),
            "ingest_actions_per_s": spread(&fl.ingest),
        },
        "time_per_unit": {
            "commit_durable": times_json("commit", &fl.commit_times),
            "commit_flush_only": times_json("commit", &fl.commit_nofsync_times),
            "batch_log_separate": times_json("batch", &fl.batch_separate_times),
            "batch_log_folded": times_json("batch", &fl.batch_folded_times),
            "ingest": times_json("action", &fl.ingest_times),
        },
        "effectum_wal_concurrency1_jobs_per_s": eff1_wal,
        "effectum_wal_x64_jobs_per_s": eff_wal,
        "effectum_wal_enqueue_jobs_per_s": eff_enqueue,
        "ratio_commit_vs_effectum_concurrency1": eff1_wal.map(|e| fl.commit.median / e),
        "ratio_batch_log_vs_effectum_x64": eff_wal.map(|e| fl.batch_best() / e),
        "ratio_ingest_vs_effectum_enqueue": eff_enqueue.map(|e| fl.ingest.median / e),
        "budget_us_per_action_at_goal": {
            "batched_2x": budget_batch,
            "single_1_5x": budget_single,
            "ingest_1x": budget_ingest,
        },
    });
    if let Some(m) = eff {
        j["effectum_raw"] = serde_json::Value::Object(m);
    }
    if let Some(m) = eff_single {
        j["effectum_concurrency1_raw"] = serde_json::Value::Object(m);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if mode != Mode::Smoke {
        let out = common::target_dir().join("bench/throughput.json");
        std::fs::write(&out, serde_json::to_string_pretty(&j).expect("json") + "\n")
            .expect("write throughput.json");
        println!("\nwrote {}", out.display());
    } else {
        println!("smoke run ok");
    }
}
