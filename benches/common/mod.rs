//! Shared helpers of the hand-written benchmark harnesses (`throughput`, `scale`): the
//! command line (including the libtest protocol nextest speaks), where to put data, the
//! machine, job-file builders, and process measurements.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use sendgate::store::Settings;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the harness was invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench --bench NAME`: the numbers for BENCHMARKS.md.
    Full,
    /// `cargo bench --bench NAME -- --quick`: the same measurements, smaller.
    Quick,
    /// `cargo test` / `cargo nextest run --all-targets`: a seconds-long smoke run that
    /// checks the benchmark code still works; prints nothing to compare.
    Smoke,
}

/// Reads the command line. Speaks enough of libtest's protocol for nextest, which runs
/// every target of `--all-targets` (benches included) as a test binary: `--list`
/// announces one test, `smoke`, which runs the smoke mode. Returns `None` when there is
/// nothing to run (a listing was printed, or another test was asked for).
pub fn mode() -> Option<Mode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    if has("--list") {
        if !has("--ignored") {
            println!("smoke: test");
        }
        return None;
    }
    if has("--bench") {
        return Some(if has("--quick") { Mode::Quick } else { Mode::Full });
    }
    // A test run: with a name filter, run only when it selects `smoke`.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if has("--ignored") || (!filters.is_empty() && !filters.iter().any(|f| "smoke".contains(f.as_str()))) {
        return None;
    }
    Some(Mode::Smoke)
}

/// The target directory of this build (`CARGO_TARGET_DIR` or `<crate>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// A fresh scratch directory `target/bench/<name>-<pid>` (on the project's disk, never
/// a tmpfs /tmp; per process, so parallel test runs never share a store).
pub fn scratch(name: &str) -> PathBuf {
    let dir = target_dir()
        .join("bench")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench scratch dir");
    dir
}

/// The file system type of `dir`, by `statfs` magic number.
pub fn fs_type(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        other => format!("0x{other:x}"),
    }
}

/// Refuses to measure durability on a RAM-backed file system.
pub fn check_disk(dir: &Path) -> String {
    let fs = fs_type(dir);
    if fs == "tmpfs" {
        eprintln!(
            "warning: {} is on tmpfs: fsync is free there, the numbers mean nothing",
            dir.display()
        );
    }
    fs
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average: other work on the machine skews every number.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The fixed instant every run is measured at: Wednesday noon UTC, inside every window.
pub fn bench_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0)
        .single()
        .expect("valid instant")
}

/// Store settings with real durability and tier invite ceilings lifted, so that only
/// the caps a benchmark sets can bind.
pub fn settings(fsync: bool) -> Settings {
    let mut s = Settings {
        fsync,
        ..Settings::default()
    };
    for t in s.policy.tiers.values_mut() {
        t.invite_ceiling = 10_000_000;
    }
    s
}

pub fn account_id(i: usize) -> String {
    format!("acct-{i:05}")
}

/// An account open all day, every day; `caps` is a JSON fragment such as
/// `,"caps":{"invites":10000}` or empty (the config's caps apply).
pub fn account_line(i: usize, caps: &str) -> String {
    format!(
        r#"{{"type":"account","id":"{}","tier":"sales_navigator_core","timezone":"UTC","window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"established":true{caps}}}"#,
        account_id(i)
    )
}

/// Caps high enough never to bind in a benchmark.
pub const HIGH_CAPS: &str =
    r#","caps":{"invites":10000,"messages":10000,"inmails":10000,"engagement":10000}"#;

pub fn campaign_line(id: &str) -> String {
    format!(r#"{{"type":"campaign","id":"{id}","daily_limit":100000000}}"#)
}

/// `accounts` accounts with caps that never bind, and the `bench` campaign.
pub fn setup_text(accounts: usize) -> String {
    let mut text = String::new();
    for i in 0..accounts {
        text.push_str(&account_line(i, HIGH_CAPS));
        text.push('\n');
    }
    text.push_str(&campaign_line("bench"));
    text.push('\n');
    text
}

/// Parse and apply a job file at `bench_now()`; panics unless it applied.
pub fn apply_ok(store: &sendgate::store::Store, name: &str, text: &str) {
    sendgate::contract::parse_file(name, text.as_bytes()).expect("valid job file");
    match store
        .apply(name, text.as_bytes(), bench_now())
        .expect("store works")
    {
        sendgate::store::ApplyOutcome::Applied(_) => {}
        other => panic!("{name} did not apply: {other:?}"),
    }
}

pub fn action_line(id: &str, campaign: &str, account: &str, kind: &str) -> String {
    format!(
        r#"{{"type":"action","id":"{id}","campaign":"{campaign}","account":"{account}","kind":"{kind}","prospect":"https://www.linkedin.com/in/{id}","payload":{{"note":"Hi, I enjoyed your post on durable queues"}}}}"#
    )
}

/// Kinds the pipeline benchmarks cycle through (each draws from different counters).
pub const KINDS: [&str; 3] = ["invite", "message", "profile_view"];

/// A job file of `n` actions spread round robin over accounts `0..m`, ids `{prefix}{i}`.
pub fn actions_file(prefix: &str, n: usize, m: usize, campaign: &str) -> (String, Vec<String>) {
    let mut text = String::with_capacity(n * 240);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{prefix}{i:07}");
        text.push_str(&action_line(
            &id,
            campaign,
            &account_id(i % m),
            KINDS[i % KINDS.len()],
        ));
        text.push('\n');
        ids.push(id);
    }
    (text, ids)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of the whole process (all threads), from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks).
pub fn cpu_time_stat() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // `rest` starts at field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// User + system CPU time of the whole process, from `getrusage` (microseconds).
pub fn cpu_time_rusage() -> Duration {
    // SAFETY: `ru` is a properly sized out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
}

/// Bytes of all files under `dir`: (apparent size, allocated blocks).
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                let (a, b) = disk_usage(&e.path());
                total.0 += a;
                total.1 += b;
            } else {
                total.0 += md.len();
                total.1 += md.blocks() * 512;
            }
        }
    }
    total
}

/// The median of some repetitions, with the spread.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The store's open options, with two experiment knobs for profiles: `BENCH_CACHE_MB`
/// (sled's cache; default `store.cache_mb = 64`) and `BENCH_SNAPSHOT_MB` (sled's log
/// between two snapshots, `SNAPSHOT_AFTER_BYTES`; a huge value turns them off).
pub fn open_options() -> sendgate::store::OpenOptions {
    let mut o = sendgate::store::OpenOptions::default();
    if let Some(mb) = std::env::var("BENCH_CACHE_MB").ok().and_then(|v| v.parse().ok()) {
        o.cache_mb = mb;
    }
    if let Some(mb) = std::env::var("BENCH_SNAPSHOT_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        o.snapshot_after_bytes = mb.saturating_mul(1 << 20);
    }
    o
}
