//! Scale figures with a million queued actions (10,000 accounts × 100 invites):
//! memory, bytes on disk, time from `Engine::new` to the first reservation, and the CPU
//! the worker burns while every account is parked.
//!
//! ```text
//! cargo bench --bench scale              # 10,000 accounts × 100 = 1,000,000 actions
//! cargo bench --bench scale -- --quick   # 1,000 accounts × 100 = 100,000 actions
//! ```
//!
//! Each phase runs in a fresh child process (this binary with `--phase`), so its peak
//! RSS (`VmHWM`) is its own and not the ingest's:
//!
//! 1. `ingest`: job files of 50,000 actions applied with `store.fsync = false` (to keep
//!    a million-action load bounded; a durable ingest adds one fdatasync per file).
//! 2. `start`: reopen the store (fsync on), `Engine::new`, then `engine.tick(now)` until
//!    it hands out a reservation. RSS right after.
//! 3. `parked`: reopen with `caps.invites = 0`, so every reservation is refused and every
//!    account parks its whole backlog until tomorrow's window; tick until nothing is
//!    due, then run the daemon's loop shape on the real clock — sleep until
//!    `next_wake`, tick when due — and measure process CPU time (all threads, sled's
//!    included) over wall time.
//! 4. `daemon` (after `ingest`, before `start`): the release `sendgate run` on a copy of
//!    that store with a loopback upstream; time from spawning the process to the first request the
//!    upstream receives, and the worker's peak RSS then.
//! 5. `daemon` and `start` after a kill -9 (`*_after_crash`): the same two phases on the
//!    store as a kill -9 right after the ingest's last file leaves it (a copy taken
//!    before the clean close), so sled replays the log written since the last snapshot
//!    the ingest had it write (`Store::snapshot_if_due`, as the worker between steps).
//!
//! The store's bytes are reported by sled file kind (`db`, `snapshots`, `blobs`, `other`;
//! apparent and allocated): `ingest.files_before_close` and `files_after_close`,
//! `disk_files_after_ingest` and `disk_files_after_parking` in `scale.json`.
//!
//! `BENCH_SENDGATE=PATH` runs another build's `sendgate` in the `daemon` phase.
//! `BENCH_KEEP=1` keeps a copy of the ingested store in `target/bench/scale-store-N`
//! (its crashed image in `scale-store-N-crashed`, and the store after the `parked`
//! phase in `scale-store-N-parked`);
//! `BENCH_STORE_FROM=DIR` starts from a copy of such a store instead of ingesting (and
//! skips the big-file phase): for repeated start-up and memory runs on one store
//! (`BENCH_CRASHED_FROM=DIR` adds the after-crash phases).

mod common;

use common::Mode;
use sendgate::contract::parse_file;
use sendgate::engine::{Engine, EngineConfig};
use sendgate::store::{ApplyOutcome, OpenOptions, State, Store};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PER_ACCOUNT: usize = 100;

/// glibc's view of the heap: (bytes in use by the program, bytes held from the system).
fn heap_bytes() -> (u64, u64) {
    // SAFETY: mallinfo2 has no preconditions.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, (m.arena + m.hblkhd) as u64)
}

/// CPU time per thread name (`/proc/self/task/*/stat`), in clock ticks.
fn thread_ticks() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        *out.entry(name).or_default() += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    out
}
const FILE_ACTIONS: usize = 50_000;

fn store_path(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// The store as a kill -9 after the ingest's last file leaves it (`phase_ingest`).
fn crashed_path(dir: &Path) -> PathBuf {
    dir.join("crashed-store")
}

/// A store directory's bytes by sled file kind — its log (`db`), snapshots (`snap.*`),
/// blobs (`blobs/*`) and the rest (`conf`, the identity file) — each as apparent size
/// and allocated blocks (BENCHMARKS.md, "Where the bytes on disk go").
fn store_files(dir: &Path) -> Value {
    use std::os::unix::fs::MetadataExt;
    let mut kinds = serde_json::Map::new();
    let mut add = |kind: &str, len: u64, blocks: u64| {
        let e = kinds
            .entry(kind.to_string())
            .or_insert_with(|| json!({"files": 0, "apparent": 0, "allocated": 0}));
        let bump = |v: &Value, by: u64| json!(v.as_u64().unwrap_or(0) + by);
        e["files"] = bump(&e["files"], 1);
        e["apparent"] = bump(&e["apparent"], len);
        e["allocated"] = bump(&e["allocated"], blocks * 512);
    };
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                dirs.push(e.path());
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = if d != dir {
                "blobs"
            } else if name == "db" {
                "db"
            } else if name.starts_with("snap.") {
                "snapshots"
            } else {
                "other"
            };
            add(kind, md.len(), md.blocks());
        }
    }
    Value::Object(kinds)
}

fn apply(store: &Store, name: &str, text: &str) -> u32 {
    parse_file(name, text.as_bytes()).expect("valid job file");
    match store
        .apply(name, text.as_bytes(), common::bench_now())
        .expect("store works")
    {
        ApplyOutcome::Applied(a) => a.actions,
        other => panic!("{name} did not apply: {other:?}"),
    }
}

/// Phase 1: accounts (config caps), one campaign, then `accounts × 100` invites.
fn phase_ingest(dir: &Path, accounts: usize) -> Value {
    let mut store =
        Store::open(&store_path(dir), common::settings(false), OpenOptions::default()).expect("store opens");
    let mut text = String::new();
    for i in 0..accounts {
        text.push_str(&common::account_line(i, ""));
        text.push('\n');
    }
    text.push_str(&common::campaign_line("scale"));
    text.push('\n');
    apply(&store, "0000-accounts.jsonl", &text);
    let total = accounts * PER_ACCOUNT;
    let mut applied = 0usize;
    let mut parse_s = 0.0;
    let mut apply_s = 0.0;
    let mut file = 0;
    let mut snapshots = 0u32;
    let mut i = 0;
    while i < total {
        let end = (i + FILE_ACTIONS).min(total);
        let mut text = String::with_capacity((end - i) * 240);
        for k in i..end {
            let (acct, n) = (k / PER_ACCOUNT, k % PER_ACCOUNT);
            let id = format!("s-{acct:05}-{n:03}");
            text.push_str(&common::action_line(
                &id,
                "scale",
                &common::account_id(acct),
                "invite",
            ));
            text.push('\n');
        }
        file += 1;
        let name = format!("{file:04}-actions.jsonl");
        let t0 = Instant::now();
        parse_file(&name, text.as_bytes()).expect("valid job file");
        parse_s += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let out = store
            .apply(&name, text.as_bytes(), common::bench_now())
            .expect("store works");
        // As the worker does between the steps of a file (`Engine::file_step`): sled
        // writes a snapshot once enough log was written, so a kill -9 replays only the
        // tail. Its cost is part of the ingest's.
        snapshots += u32::from(store.snapshot_if_due().expect("store works"));
        apply_s += t1.elapsed().as_secs_f64();
        match out {
            ApplyOutcome::Applied(a) => applied += a.actions as usize,
            other => panic!("{name} did not apply: {other:?}"),
        }
        i = end;
    }
    assert_eq!(applied, total);
    let before_close = store_files(&store_path(dir));
    // What a kill -9 here would leave: every byte sled wrote is in the kernel's hands,
    // and sled's newest snapshot is the last one `snapshot_if_due` had it write, so the
    // next open replays the log written since (at most about `SNAPSHOT_AFTER_BYTES`
    // plus one file's). The `*_after_crash` phases start from this copy.
    copy_dir(&store_path(dir), &crashed_path(dir));
    // As the worker leaves its store at a clean stop.
    store.close().expect("clean close");
    json!({
        "files_before_close": before_close,
        "files_after_close": store_files(&store_path(dir)),
        "actions": total,
        "files": file,
        "snapshots": snapshots,
        "parse_s": parse_s,
        "apply_s": apply_s,
        // `apply` parses too (chunk by chunk): `parse_s` is the parse alone, for scale.
        "ingest_actions_per_s": total as f64 / apply_s,
        "vm_hwm_kib": common::status_kib("VmHWM"),
        "vm_rss_kib": common::status_kib("VmRSS"),
    })
}

/// A job file of `n` actions of about 277 bytes each (227,000 make the 60 MiB file of
/// the ingest goal), over `accounts` accounts of the `bench` campaign.
fn big_file(n: usize, accounts: usize) -> String {
    let mut text = common::setup_text(accounts);
    let note = "Hi, I enjoyed your post on durable queues and would like to connect, thanks ok";
    for i in 0..n {
        let id = format!("big-{i:07}");
        text.push_str(&format!(
            r#"{{"type":"action","id":"{id}","campaign":"bench","account":"{}","kind":"{}","prospect":"https://www.linkedin.com/in/{id}","payload":{{"note":"{note}"}}}}"#,
            common::account_id(i % accounts),
            common::KINDS[i % common::KINDS.len()],
        ));
        text.push('\n');
    }
    text
}

/// Phase 0: one big file applied durably the way the daemon applies it: read from disk
/// a chunk at a time (`store::scan`), the engine ticking between two steps
/// (`Engine::file_step`). Peak RSS while it applies (the file is written first, and the
/// peak its writing reached is reset: `before_vm_hwm_kib` is the peak from there to the
/// first step), the longest step (the longest the engine could not send or feed the
/// watchdog), and actions per second.
fn phase_bigfile(dir: &Path, n: usize) -> Value {
    let now = common::bench_now();
    let path = dir.join("big.jsonl");
    let size = {
        let text = big_file(n, 100);
        std::fs::write(&path, &text).expect("write the big file");
        text.len()
    };
    sendgate::mem::give_back();
    // `5` resets the peak resident size (`VmHWM`) to the current one (proc(5)).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let store = Store::open(
        &dir.join("big-store"),
        common::settings(true),
        common::open_options(),
    )
    .expect("store opens");
    let mut engine = Engine::new(store, EngineConfig::default(), now).expect("engine starts");
    let file = std::fs::File::open(&path).expect("open the big file");
    let source = sendgate::store::Source::Scanned(sendgate::store::scan("big.jsonl", file).expect("scan"));
    let before_hwm = common::status_kib("VmHWM");
    let t0 = Instant::now();
    let mut longest = Duration::ZERO;
    let mut steps = 0u64;
    let mut step_at = Instant::now();
    let outcome = match engine.begin_file("big.jsonl", source, now).expect("begin") {
        sendgate::store::Begin::Finished(o) => o,
        sendgate::store::Begin::Started(mut job) => loop {
            let r = engine.file_step(&mut job, now).expect("step");
            longest = longest.max(step_at.elapsed());
            steps += 1;
            if let Some(o) = r {
                break o;
            }
            // What the daemon does between two steps (nothing is due: caps never bind
            // but the bench clock stands still, so this is the tick's own cost).
            let _ = engine.tick(now).expect("tick");
            engine.drain_events().expect("settled");
            step_at = Instant::now();
        },
    };
    let total_s = t0.elapsed().as_secs_f64();
    match outcome {
        ApplyOutcome::Applied(a) => assert_eq!(a.actions as usize, n),
        other => panic!("big file did not apply: {other:?}"),
    }
    json!({
        "actions": n,
        "file_bytes": size,
        "apply_s": total_s,
        "actions_per_s": n as f64 / total_s,
        "steps": steps,
        "longest_step_s": longest.as_secs_f64(),
        "before_vm_hwm_kib": before_hwm,
        "vm_hwm_kib": common::status_kib("VmHWM"),
        "vm_rss_kib": common::status_kib("VmRSS"),
    })
}

/// Seconds since the parent spawned this phase's process (`BENCH_SPAWNED_AT_NS`).
fn since_spawn_s() -> Option<f64> {
    let at: u128 = std::env::var("BENCH_SPAWNED_AT_NS").ok()?.parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(now.saturating_sub(at) as f64 / 1e9)
}

/// Phase 2: time from `Engine::new` to the first reservation, and RSS after it.
fn phase_start(dir: &Path) -> Value {
    let at_main_s = since_spawn_s();
    let now = common::bench_now();
    let t_open = Instant::now();
    let store =
        Store::open(&store_path(dir), common::settings(true), common::open_options()).expect("store opens");
    let open_s = t_open.elapsed().as_secs_f64();
    let open_rss = common::status_kib("VmRSS");
    let (open_heap, _) = heap_bytes();
    let t0 = Instant::now();
    let mut engine = Engine::new(store, EngineConfig::default(), now).expect("engine starts");
    let new_s = t0.elapsed().as_secs_f64();
    let mut ticks = 0;
    let mut events = 0;
    let first = loop {
        let r = engine.tick(now).expect("tick");
        // The daemon logs and drops events after every tick; so do we.
        events += engine.drain_events().expect("settled").len();
        ticks += 1;
        if !r.is_empty() {
            break r;
        }
        assert!(ticks < 1000, "no reservation after 1000 ticks");
    };
    let first_s = t0.elapsed().as_secs_f64();
    let spawn_to_first_s = since_spawn_s();
    let counts = engine.store().state_counts().expect("counts");
    let (heap_in_use, heap_held) = heap_bytes();
    json!({
        "heap_in_use_bytes": heap_in_use,
        "heap_held_bytes": heap_held,
        "after_open_vm_rss_kib": open_rss,
        "after_open_heap_in_use_bytes": open_heap,
        "store_open_s": open_s,
        "engine_new_s": new_s,
        "first_reservation_s": first_s,
        "process_to_main_s": at_main_s,
        "process_to_first_reservation_s": spawn_to_first_s,
        "ticks": ticks,
        "events": events,
        "first_batch": first.len(),
        "queued": counts[State::Queued.index()],
        "vm_hwm_kib": common::status_kib("VmHWM"),
        "vm_rss_kib": common::status_kib("VmRSS"),
    })
}

/// Phase 3: park everything, then idle on the real clock for `idle_s`.
fn phase_parked(dir: &Path, idle_s: f64) -> Value {
    let base = common::bench_now();
    let mut settings = common::settings(false);
    settings.policy.caps.invites = 0;
    let store = Store::open(&store_path(dir), settings, common::open_options()).expect("store opens");
    let t0 = Instant::now();
    let mut engine = Engine::new(store, EngineConfig::default(), base).expect("engine starts");
    let mut park_ticks = 0u64;
    let mut events = engine.drain_events().expect("settled").len();
    // Accounts that sent in the `start` phase wait out their pacing gap (persisted
    // across restarts) first: follow virtual time up to an hour to park them too.
    let mut now = base;
    while let Some(t) = engine
        .next_wake()
        .expect("next wake")
        .filter(|t| *t <= base + chrono::Duration::hours(1))
    {
        now = now.max(t);
        let r = engine.tick(now).expect("tick");
        events += engine.drain_events().expect("settled").len();
        assert!(r.is_empty(), "a reservation with caps.invites = 0");
        park_ticks += 1;
    }
    let base = now;
    let park_s = t0.elapsed().as_secs_f64();
    let counts = engine.store().state_counts().expect("counts");
    let parked = counts[State::Parked.index()];
    let queued = counts[State::Queued.index()];
    let next = engine.next_wake().expect("next wake");
    let after_park_hwm = common::status_kib("VmHWM");
    let after_park_rss = common::status_kib("VmRSS");
    let (heap_in_use, heap_held) = heap_bytes();

    let idle = Duration::from_secs_f64(idle_s);
    let threads0 = thread_ticks();
    let (cpu0, stat0) = (common::cpu_time_rusage(), common::cpu_time_stat());
    let wall0 = Instant::now();
    let mut idle_ticks = 0u64;
    let mut wakeups = 0u64;
    loop {
        let el = wall0.elapsed();
        if el >= idle {
            break;
        }
        let now = base + chrono::Duration::from_std(el).expect("duration");
        match engine.next_wake().expect("next wake") {
            Some(t) if t <= now => {
                engine.tick(now).expect("tick");
                engine.drain_events().expect("settled");
                idle_ticks += 1;
            }
            Some(t) => {
                let until = (t - now).to_std().unwrap_or_default().min(idle - el);
                std::thread::sleep(until);
                wakeups += 1;
            }
            None => {
                std::thread::sleep(idle - el);
                wakeups += 1;
            }
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = (common::cpu_time_rusage() - cpu0).as_secs_f64();
    let cpu_stat = (common::cpu_time_stat() - stat0).as_secs_f64();
    // Which threads burned it (clock ticks, usually 10 ms each).
    let by_thread: serde_json::Map<String, Value> = thread_ticks()
        .into_iter()
        .map(|(name, t)| {
            let before = threads0.get(&name).copied().unwrap_or(0);
            (name, json!(t.saturating_sub(before)))
        })
        .filter(|(_, v)| v.as_u64() != Some(0))
        .collect();
    json!({
        "park_s": park_s,
        "park_ticks": park_ticks,
        "events": events,
        "parked": parked,
        "queued_left": queued,
        "next_wake_in_s": next.map(|t| (t - base).num_seconds()),
        "after_park_vm_hwm_kib": after_park_hwm,
        "after_park_vm_rss_kib": after_park_rss,
        "after_park_heap_in_use_bytes": heap_in_use,
        "after_park_heap_held_bytes": heap_held,
        "idle_wall_s": wall,
        "idle_cpu_s": cpu,
        "idle_cpu_s_proc_stat": cpu_stat,
        "idle_cpu_ticks_by_thread": by_thread,
        "cache_mb": common::open_options().cache_mb,
        "idle_cpu_pct_of_core": 100.0 * cpu / wall,
        "idle_ticks": idle_ticks,
        "idle_sleeps": wakeups,
    })
}

/// A loopback upstream that answers every request `200 {}` and sends the instant each
/// one arrived on the returned channel.
fn loopback_upstream() -> (String, std::sync::mpsc::Receiver<Instant>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                let mut r = BufReader::new(conn);
                let mut line = String::new();
                loop {
                    let mut len = 0usize;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = tx.send(Instant::now());
                    let reply =
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// Phase 4: the release `sendgate run` on the ingested store (default configuration but
/// for paths, the loopback upstream and a clock at the bench's instant): time from
/// spawning the process to the first request the upstream receives.
fn phase_daemon(dir: &Path) -> Value {
    use std::io::BufRead;
    let (url, first) = loopback_upstream();
    let cfg = dir.join("sendgate.toml");
    let now = common::bench_now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = \"{d}/store\"\n[spool]\ndir = \"{d}/spool\"\n\
             [upstream]\nkind = \"http\"\nurl = \"{url}\"\ntimeout_s = 5\n\
             [status]\npath = \"{d}/status.json\"\n[clock]\nstart = \"{now}\"\nspeed = 1.0\n",
            d = dir.display()
        ),
    )
    .expect("write config");
    let t0 = Instant::now();
    // `BENCH_SENDGATE`: another build's binary, for a side-by-side run.
    let exe = std::env::var_os("BENCH_SENDGATE").unwrap_or_else(|| env!("CARGO_BIN_EXE_sendgate").into());
    let mut worker = Command::new(exe)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sendgate run");
    let pid = worker.id();
    // The instant `worker_started` was logged (the store open and the engine built).
    let (started_tx, started) = std::sync::mpsc::channel();
    let stderr = worker.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"worker_started\"") {
                let _ = started_tx.send(Instant::now());
            }
        }
    });
    let got = first.recv_timeout(Duration::from_secs(120));
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: `pid` is our own child, not yet waited for.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = worker.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = worker.kill();
            let _ = worker.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let got = got.expect("the worker sent a request within 120 s");
    let started = started.try_recv().ok();
    json!({
        "process_to_first_send_s": (got - t0).as_secs_f64(),
        "process_to_worker_started_s": started.map(|t| (t - t0).as_secs_f64()),
        "vm_hwm_kib_at_first_send": hwm,
        "clean_exit": status.is_some_and(|s| s.success()),
    })
}

/// `cp -a from to`: a store directory, as it is.
fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "copy {} to {}", from.display(), to.display());
    // Written back before any phase runs on the copy: its first fsync of `db` (sled's
    // recovery after a crash, `Store::open`'s own) would otherwise wait for the whole
    // copy to reach the disk (1.3–1.4 s at a million queued), which no real start pays.
    let dir = std::fs::File::open(to).expect("open the copy");
    // SAFETY: `dir` is an open descriptor for the whole call.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    assert_eq!(rc, 0, "syncfs {}", to.display());
}

/// Runs one phase in a child process and returns what it printed.
fn child(phase: &str, dir: &Path, extra: &str) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let spawned = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let out = Command::new(exe)
        .env("BENCH_SPAWNED_AT_NS", spawned.to_string())
        .args(["--phase", phase])
        .arg(dir)
        .arg(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run phase");
    assert!(out.status.success(), "phase {phase} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("phase printed JSON")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let dir = PathBuf::from(&args[i + 2]);
        let extra = &args[i + 3];
        let v = match args[i + 1].as_str() {
            "ingest" => phase_ingest(&dir, extra.parse().expect("accounts")),
            "bigfile" => phase_bigfile(&dir, extra.parse().expect("actions")),
            "start" => phase_start(&dir),
            "parked" => phase_parked(&dir, extra.parse().expect("idle seconds")),
            "daemon" => phase_daemon(&dir),
            other => panic!("unknown phase {other}"),
        };
        println!("{v}");
        return;
    }
    let Some(mode) = common::mode() else { return };
    let (accounts, idle_s) = match mode {
        Mode::Full => (10_000, 60.0),
        Mode::Quick => (1_000, 10.0),
        Mode::Smoke => (20, 0.5),
    };
    let dir = common::scratch("scale");
    let fs = common::check_disk(&dir);
    eprintln!(
        "scale ({mode:?}): {accounts} accounts × {PER_ACCOUNT} = {} actions in {} ({fs}), load {}",
        accounts * PER_ACCOUNT,
        dir.display(),
        common::loadavg()
    );
    let big_n = if mode == Mode::Smoke { 5_000 } else { 227_000 };
    let from = std::env::var_os("BENCH_STORE_FROM").map(PathBuf::from);
    let (bigfile, ingest) = match &from {
        Some(src) => {
            copy_dir(src, &store_path(&dir));
            eprintln!("  store copied from {}", src.display());
            if let Some(crashed) = std::env::var_os("BENCH_CRASHED_FROM") {
                copy_dir(Path::new(&crashed), &crashed_path(&dir));
            }
            (Value::Null, Value::Null)
        }
        None => {
            let bigfile = child("bigfile", &dir, &big_n.to_string());
            eprintln!("  bigfile: {bigfile}");
            let _ = std::fs::remove_dir_all(dir.join("big-store"));
            let t = Instant::now();
            let ingest = child("ingest", &dir, &accounts.to_string());
            eprintln!("  ingest: {ingest} ({:.1}s)", t.elapsed().as_secs_f64());
            if std::env::var_os("BENCH_KEEP").is_some() {
                let keep = common::target_dir().join(format!("bench/scale-store-{accounts}"));
                let _ = std::fs::remove_dir_all(&keep);
                copy_dir(&store_path(&dir), &keep);
                eprintln!("  kept the ingested store in {}", keep.display());
                let keep = common::target_dir().join(format!("bench/scale-store-{accounts}-crashed"));
                let _ = std::fs::remove_dir_all(&keep);
                copy_dir(&crashed_path(&dir), &keep);
                eprintln!("  kept its crashed image in {}", keep.display());
            }
            (bigfile, ingest)
        }
    };
    let (apparent, allocated) = common::disk_usage(&store_path(&dir));
    let files_after_ingest = store_files(&store_path(&dir));
    // On a copy: its sends must not pace the accounts of the phases after it.
    let daemon_dir = dir.join("daemon");
    std::fs::create_dir_all(&daemon_dir).expect("daemon dir");
    copy_dir(&store_path(&dir), &store_path(&daemon_dir));
    let daemon = child("daemon", &daemon_dir, "-");
    let _ = std::fs::remove_dir_all(&daemon_dir);
    eprintln!("  daemon: {daemon}");
    // The same after a kill -9, each on its own copy of the crashed image (an open
    // writes a snapshot, so a second open of one copy would replay nothing).
    let (daemon_after_crash, start_after_crash) = if crashed_path(&dir).exists() {
        let run = |phase: &str| {
            let d = dir.join(format!("{phase}-after-crash"));
            std::fs::create_dir_all(&d).expect("after-crash dir");
            copy_dir(&crashed_path(&dir), &store_path(&d));
            let v = child(phase, &d, "-");
            let _ = std::fs::remove_dir_all(&d);
            eprintln!("  {phase} after a kill -9: {v}");
            v
        };
        (run("daemon"), run("start"))
    } else {
        eprintln!("  no crashed image (BENCH_CRASHED_FROM unset): the after-crash phases are skipped");
        (Value::Null, Value::Null)
    };
    let start = child("start", &dir, "-");
    eprintln!("  start: {start}");
    let parked = child("parked", &dir, &idle_s.to_string());
    eprintln!("  parked: {parked}");
    let (apparent_after, allocated_after) = common::disk_usage(&store_path(&dir));
    let files_after_parking = store_files(&store_path(&dir));
    if from.is_none() && std::env::var_os("BENCH_KEEP").is_some() {
        let keep = common::target_dir().join(format!("bench/scale-store-{accounts}-parked"));
        let _ = std::fs::remove_dir_all(&keep);
        copy_dir(&store_path(&dir), &keep);
        eprintln!("  kept the parked store in {}", keep.display());
    }

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let kib = |v: &Value, k: &str| common::mib(v[k].as_u64().unwrap_or(0));
    let n = accounts * PER_ACCOUNT;
    println!();
    println!("scale, {mode:?} mode: {accounts} accounts × {PER_ACCOUNT} = {n} queued actions");
    println!("| {:<62} | {:>14} |", "figure", "value");
    println!("|{:-<64}|{:->16}|", "", "");
    let row = |k: &str, v: String| println!("| {k:<62} | {v:>14} |");
    row(
        &format!(
            "{:.0} MiB file ({big_n} actions): peak RSS applying it (MiB) (goal ≤ 256)",
            f(&bigfile, "file_bytes") / 1048576.0
        ),
        format!("{:.1}", kib(&bigfile, "vm_hwm_kib")),
    );
    row(
        "  the same: longest engine step (s) (goal ≤ 2)",
        format!("{:.3}", f(&bigfile, "longest_step_s")),
    );
    row(
        "  the same: durable ingest (actions/s, parse + apply)",
        format!("{:.0}", f(&bigfile, "actions_per_s")),
    );
    row(
        "ingest, fsync off (actions/s, parse + apply)",
        format!("{:.0}", f(&ingest, "ingest_actions_per_s")),
    );
    row(
        "ingest process peak RSS (MiB)",
        format!("{:.1}", kib(&ingest, "vm_hwm_kib")),
    );
    row(
        "store on disk after ingest (MiB, apparent)",
        format!("{:.1}", apparent as f64 / 1048576.0),
    );
    row(
        "store on disk after ingest (MiB, allocated)",
        format!("{:.1}", allocated as f64 / 1048576.0),
    );
    row(
        "store on disk per queued action (bytes, apparent)",
        format!("{:.0}", apparent as f64 / n as f64),
    );
    let per = |files: &Value, kind: &str| files[kind]["apparent"].as_f64().unwrap_or(0.0) / n as f64;
    row(
        "  of which sled's log `db` / snapshots (bytes per action)",
        format!(
            "{:.0} / {:.1}",
            per(&files_after_ingest, "db"),
            per(&files_after_ingest, "snapshots")
        ),
    );
    row(
        "`sendgate run`: process start → first request upstream (s) (goal ≤ 0.5)",
        format!("{:.3}", f(&daemon, "process_to_first_send_s")),
    );
    row(
        "  the same: process start → `worker_started` (s)",
        format!("{:.3}", f(&daemon, "process_to_worker_started_s")),
    );
    row(
        "  the same: worker peak RSS at the first send (MiB)",
        format!("{:.1}", kib(&daemon, "vm_hwm_kib_at_first_send")),
    );
    row(
        "`sendgate run` after a kill -9: process start → first request (s)",
        format!("{:.3}", f(&daemon_after_crash, "process_to_first_send_s")),
    );
    row(
        "  the same: process start → `worker_started` (s)",
        format!("{:.3}", f(&daemon_after_crash, "process_to_worker_started_s")),
    );
    row(
        "  `--phase start` after a kill -9: Store::open (s)",
        format!("{:.3}", f(&start_after_crash, "store_open_s")),
    );
    row(
        "  the same: bench process start → first reservation (s)",
        format!("{:.3}", f(&start_after_crash, "process_to_first_reservation_s")),
    );
    row(
        "bench process start → first reservation (s)",
        format!("{:.3}", f(&start, "process_to_first_reservation_s")),
    );
    row("Store::open (s)", format!("{:.3}", f(&start, "store_open_s")));
    row("Engine::new (s)", format!("{:.3}", f(&start, "engine_new_s")));
    row(
        "Engine::new start → first reservation (s) (goal ≤ 1)",
        format!("{:.3}", f(&start, "first_reservation_s")),
    );
    row(
        "worker RSS after first reservation (MiB) (goal ≤ 200)",
        format!("{:.1}", kib(&start, "vm_rss_kib")),
    );
    row(
        "worker peak RSS to first reservation (MiB)",
        format!("{:.1}", kib(&start, "vm_hwm_kib")),
    );
    row(
        "time to park every account's backlog (s)",
        format!("{:.1}", f(&parked, "park_s")),
    );
    row(
        "worker peak RSS after parking everything (MiB) (goal ≤ 200)",
        format!("{:.1}", kib(&parked, "after_park_vm_hwm_kib")),
    );
    row(
        &format!("CPU while all parked, % of one core over {idle_s} s (goal ≤ 1)"),
        format!("{:.3}", f(&parked, "idle_cpu_pct_of_core")),
    );
    row(
        "store on disk after parking (MiB, apparent)",
        format!("{:.1}", apparent_after as f64 / 1048576.0),
    );

    let j = json!({
        "mode": format!("{mode:?}").to_lowercase(),
        "accounts": accounts,
        "actions": n,
        "filesystem": fs,
        "disk_bytes_after_ingest": apparent,
        "disk_bytes_allocated_after_ingest": allocated,
        "disk_bytes_after_parking": apparent_after,
        "disk_bytes_allocated_after_parking": allocated_after,
        "disk_files_after_ingest": files_after_ingest,
        "disk_files_after_parking": files_after_parking,
        "ingest": ingest,
        "bigfile": bigfile,
        "start": start,
        "parked": parked,
        "daemon": daemon,
        "daemon_after_crash": daemon_after_crash,
        "start_after_crash": start_after_crash,
        // The goal rows of issue 13, in one place.
        "goals": {
            "peak_rss_mib_after_walk": kib(&parked, "after_park_vm_hwm_kib"),
            "process_start_to_first_send_s": f(&daemon, "process_to_first_send_s"),
            "process_start_to_first_send_after_kill_s": f(&daemon_after_crash, "process_to_first_send_s"),
            "store_bytes_per_queued_action": apparent as f64 / n as f64,
        },
        "rss_mib_after_first_reservation": kib(&start, "vm_rss_kib"),
        "first_reservation_s": f(&start, "first_reservation_s"),
        "idle_cpu_pct_of_core": f(&parked, "idle_cpu_pct_of_core"),
        "machine": { "cores": common::cores(), "cpu": common::cpu_model(), "loadavg_at_end": common::loadavg() },
    });
    let _ = std::fs::remove_dir_all(&dir);
    if mode == Mode::Smoke {
        let total = |v: &Value| -> u64 {
            v.as_object()
                .map(|m| m.values().map(|k| k["apparent"].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0)
        };
        assert_eq!(
            total(&j["disk_files_after_ingest"]),
            apparent,
            "the breakdown by file kind covers every byte of the store"
        );
        assert!(
            j["disk_files_after_ingest"]["db"]["apparent"].as_u64() > Some(0),
            "sled's log `db` is counted"
        );
        assert_eq!(j["parked"]["queued_left"], 0, "everything parked");
        assert_eq!(
            j["daemon"]["clean_exit"], true,
            "the worker stopped cleanly on SIGTERM"
        );
        assert_eq!(
            j["daemon_after_crash"]["clean_exit"], true,
            "the worker started on the crashed image, sent and stopped cleanly"
        );
        assert_eq!(
            j["start_after_crash"]["queued"], j["start"]["queued"],
            "the crashed image recovers what the cleanly closed store holds"
        );
        println!("smoke run ok");
    } else {
        let out = common::target_dir().join("bench/scale.json");
        std::fs::write(&out, serde_json::to_string_pretty(&j).expect("json") + "\n")
            .expect("write scale.json");
        println!("\nwrote {}", out.display());
    }
}
