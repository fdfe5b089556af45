//! The crash harness: the real `sendgate run` against a loopback HTTP upstream that
//! appends every request it receives to a file and fsyncs it before it answers 200,
//! killed with SIGKILL at random moments while it sends, and started again.
//!
//! Every process start restarts the virtual clock at `[clock] start` (SPEC §7), so each
//! restart steps the clock back to the start of its cycle. Each cycle starts on the next
//! virtual day (half of them, each bringing a job file of new actions), on the same day
//! again (a quarter), or a few days back, onto days whose budgets are spent (a quarter).
//! A cycle's virtual span (under an hour) never crosses a local midnight in any zone
//! used, so every request the upstream logs belongs to the local days of its cycle's
//! start. At the end, after a clean run and SIGTERM:
//! (a) no action id reached the upstream twice (P3);
//! (b) per account, local day and counter, and per campaign, local day and type, the
//!     requests received never exceed the cap (P1);
//! (c) every action accepted from the job files is in exactly one state, everything the
//!     upstream received is `sent` or `unknown`, and nothing it did not receive is
//!     `sent` (P4);
//! (d) `sendgate audit` exits 0.
//!
//! `SENDGATE_CRASH_CYCLES=N` runs N cycles (default 30), `SENDGATE_CRASH_SEED=S` picks
//! the kill times.

mod common;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use chrono_tz::Tz;
use common::http::read_request;
use sendgate::policy::caps::{draws, Counter};
use sendgate::policy::pacing::{Rng, SplitMix64};
use sendgate::policy::window::local_day;
use sendgate::policy::{CampaignType, Kind};
use sendgate::store::{OpenOptions, Settings, State, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions as FileOptions};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_CYCLES: usize = 30;
const DEFAULT_SEED: u64 = 0x5eed_c4a5;
/// Monday 2026-01-05, 09:00 UTC: a weekday morning, and at least four hours from a
/// local midnight in every zone below (DST included).
const BASE: &str = "2026-01-05T09:00:00Z";
const SPEED: f64 = 3600.0;
/// Real time a cycle lives before SIGKILL, in ms.
const KILL_AFTER_MS: (u64, u64) = (50, 400);
/// New actions per new virtual day.
const ACTIONS_PER_DAY: usize = 60;
/// Every wait gives up after this long.
const DEADLINE: Duration = Duration::from_secs(60);

/// Accounts: id, tier, zone. All share the caps below and are open all day, every day.
const ACCOUNTS: [(&str, &str, &str); 4] = [
    ("a-utc", "sales_navigator_core", "UTC"),
    ("a-berlin", "premium_business", "Europe/Berlin"),
    ("a-ny", "recruiter_lite", "America/New_York"),
    ("a-kolkata", "premium_career", "Asia/Kolkata"),
];
const CAP_INVITES: u32 = 10;
const CAP_MESSAGES: u32 = 6;
const CAP_INMAILS: u32 = 2;
const CAP_ENGAGEMENT: u32 = 10;
/// Campaigns: id, zone, daily_limit, cap_split.invites, sender accounts (for actions
/// that name none).
const C1: (&str, &str, u32) = ("c1", "UTC", 14);
const C2: (&str, &str, u32) = ("c2", "America/Los_Angeles", 8);
const C2_INVITES: u32 = 6;
const C2_ACCOUNTS: [&str; 2] = ["a-berlin", "a-ny"];

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

fn zone(owner: &str) -> Tz {
    ACCOUNTS
        .iter()
        .map(|a| (a.0, a.2))
        .chain([(C1.0, C1.1), (C2.0, C2.1)])
        .find(|(id, _)| *id == owner)
        .map(|(_, z)| z.parse().expect("zone"))
        .unwrap_or_else(|| panic!("unknown owner {owner}"))
}

fn account_cap(counter: Counter) -> Option<u32> {
    match counter {
        Counter::Invites => Some(CAP_INVITES),
        Counter::Messages => Some(CAP_MESSAGES),
        Counter::Inmails => Some(CAP_INMAILS),
        Counter::Engagement => Some(CAP_ENGAGEMENT),
        Counter::WeeklyInvites | Counter::InmailCredits => None,
    }
}

fn campaign_cap(campaign: &str, t: CampaignType) -> u32 {
    match (campaign, t) {
        ("c1", _) => C1.2,
        ("c2", CampaignType::Invites) => C2_INVITES,
        ("c2", _) => C2.2,
        _ => panic!("unknown campaign {campaign}"),
    }
}

// ---- the loopback upstream ----

/// One request as the upstream logged it (one JSON line in its file).
#[derive(Debug)]
struct Logged {
    cycle: usize,
    key: String,
    body: serde_json::Value,
}

/// One request: the cycle named by its path (`POST /cycle/N/v1/actions`), its key and body.
fn read_cycle_request(r: &mut BufReader<TcpStream>) -> Option<(usize, String, serde_json::Value)> {
    let req = read_request(r)?;
    let cycle = req
        .path
        .strip_prefix("/cycle/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse().ok())
        .expect("a request to /cycle/N/v1/actions");
    Some((cycle, req.key, req.body))
}

/// A loopback upstream that appends each request (with the cycle that sent it) to
/// `path` and fsyncs before it answers 200. Each cycle's worker is configured with
/// `upstream.url = {url}/cycle/N`, so a request says which process sent it even when
/// it is read after that process was killed.
struct Upstream {
    url: String,
    path: PathBuf,
}

impl Upstream {
    fn start(path: PathBuf) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let file = Arc::new(Mutex::new(
            FileOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("upstream log"),
        ));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let file = Arc::clone(&file);
                std::thread::spawn(move || {
                    let Ok(mut w) = conn.try_clone() else { return };
                    let mut r = BufReader::new(conn);
                    while let Some((cycle, key, body)) = read_cycle_request(&mut r) {
                        {
                            let mut f = file.lock().expect("lock");
                            let line = serde_json::json!({"cycle": cycle, "key": key, "body": body});
                            writeln!(f, "{line}").expect("append to the upstream log");
                            f.sync_data().expect("fsync the upstream log");
                        }
                        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream { url, path }
    }

    fn logged(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("an upstream log line");
                Logged {
                    cycle: v["cycle"].as_u64().expect("cycle") as usize,
                    key: v["key"].as_str().expect("key").to_string(),
                    body: v["body"].clone(),
                }
            })
            .collect()
    }
}

// ---- the worker ----

fn write_config(dir: &Path, upstream: &str, cycle: usize, start: DateTime<Utc>) -> PathBuf {
    let path = dir.join("sendgate.toml");
    let text = format!(
        r#"[store]
path = "{d}/store"
fsync = true
[spool]
dir = "{d}/spool"
rescan_s = 1
[upstream]
kind = "http"
url = "{upstream}/cycle/{cycle}"
timeout_s = 5
idempotent = false
[health]
min_sample = 1000000
[pacing]
min_gap_s = 1
max_gap_s = 2
[log]
format = "json"
[status]
path = "{d}/status.json"
every_s = 1
[clock]
start = "{start}"
speed = {SPEED:.1}
"#,
        d = dir.display(),
        start = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn(dir: &Path, config: &Path) -> Child {
    let log = FileOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("worker.log"))
        .expect("worker log");
    Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["run", "--config"])
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start sendgate")
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(start.elapsed() < DEADLINE, "the worker did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---- job files ----

fn drop_file(dir: &Path, name: &str, text: &str) {
    let spool = dir.join("spool");
    std::fs::create_dir_all(spool.join("tmp")).expect("spool/tmp");
    std::fs::create_dir_all(spool.join("incoming")).expect("spool/incoming");
    let tmp = spool.join("tmp").join(name);
    let mut f = File::create(&tmp).expect("write job file");
    f.write_all(text.as_bytes()).expect("write job file");
    f.sync_all().expect("sync job file");
    std::fs::rename(&tmp, spool.join("incoming").join(name)).expect("rename into incoming");
}

fn setup_file() -> String {
    let mut out = String::new();
    for (id, tier, tz) in ACCOUNTS {
        out += &format!(
            concat!(
                r#"{{"type":"account","id":"{}","tier":"{}","timezone":"{}","established":true,"#,
                r#""window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"#,
                r#""proxy":"http://user:pw@203.0.113.7:3128","inmail_credits":15,"#,
                r#""caps":{{"invites":{},"messages":{},"inmails":{},"engagement":{}}}}}"#,
                "\n"
            ),
            id, tier, tz, CAP_INVITES, CAP_MESSAGES, CAP_INMAILS, CAP_ENGAGEMENT
        );
    }
    out += &format!(
        r#"{{"type":"campaign","id":"{}","timezone":"{}","daily_limit":{}}}"#,
        C1.0, C1.1, C1.2
    );
    out.push('\n');
    out += &format!(
        r#"{{"type":"campaign","id":"{}","timezone":"{}","daily_limit":{},"cap_split":{{"invites":{}}},"accounts":["{}","{}"]}}"#,
        C2.0, C2.1, C2.2, C2_INVITES, C2_ACCOUNTS[0], C2_ACCOUNTS[1]
    );
    out.push('\n');
    out
}

/// A day's new actions, mixed kinds over both campaigns; some of c2's name no account.
fn actions_file(day: u64, rng: &mut SplitMix64, ids: &mut Vec<String>) -> String {
    const KINDS: [(&str, u64); 6] = [
        ("invite", 35),
        ("message", 20),
        ("inmail", 10),
        ("profile_view", 15),
        ("comment", 10),
        ("reaction", 10),
    ];
    let mut out = String::new();
    for i in 0..ACTIONS_PER_DAY {
        let mut roll = rng.between(0, 99);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                let hit = roll < *w;
                roll = roll.saturating_sub(*w);
                hit
            })
            .map_or("invite", |(k, _)| *k);
        let id = format!("d{day:04}-{i:02}-{kind}");
        let (campaign, account) = if rng.between(0, 2) == 0 {
            let a = match rng.between(0, 2) {
                0 => String::new(),
                n => format!(r#","account":"{}""#, C2_ACCOUNTS[n as usize - 1]),
            };
            ("c2", a)
        } else {
            let a = ACCOUNTS[rng.between(0, 3) as usize].0;
            ("c1", format!(r#","account":"{a}""#))
        };
        out += &format!(
            r#"{{"type":"action","id":"{id}","campaign":"{campaign}"{account},"kind":"{kind}","prospect":"https://www.linkedin.com/in/p-{day}-{i}","payload":{{"day":{day}}},"priority":{}}}"#,
            rng.between(0, 2)
        );
        out.push('\n');
        ids.push(id);
    }
    out
}

fn cycles() -> usize {
    std::env::var("SENDGATE_CRASH_CYCLES")
        .ok()
        .map(|v| v.parse().expect("SENDGATE_CRASH_CYCLES is a number"))
        .unwrap_or(DEFAULT_CYCLES)
}

fn seed() -> u64 {
    std::env::var("SENDGATE_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("SENDGATE_CRASH_SEED is a number"))
        .unwrap_or(DEFAULT_SEED)
}

/// The local days (every account's and campaign's zone) a cycle started at `start`
/// and living `real` covers must be one each: the attribution of requests relies on it.
fn assert_one_local_day(start: DateTime<Utc>, real: Duration) {
    let span = Days::milliseconds((real.as_secs_f64() * 1000.0 * SPEED) as i64 + 60_000);
    for owner in ACCOUNTS.iter().map(|a| a.0).chain([C1.0, C2.0]) {
        let tz = zone(owner);
        assert_eq!(
            local_day(tz, start),
            local_day(tz, start + span),
            "a cycle from {start} for {real:?} crosses a local midnight of {owner}"
        );
    }
}

#[test]
fn sigkill_at_random_moments_never_overshoots_nor_sends_twice() {
    let began = Instant::now();
    let cycles = cycles();
    let seed = seed();
    let tmp = tempfile::tempdir().expect("tempdir");
    // `SENDGATE_CRASH_KEEP=1` keeps the directory (store, spool, logs) for a post-mortem.
    let dir = if std::env::var_os("SENDGATE_CRASH_KEEP").is_some() {
        let kept = tmp.keep();
        println!("crash_harness: keeping {}", kept.display());
        kept
    } else {
        tmp.path().to_path_buf()
    };
    let dir = dir.as_path();
    let up = Upstream::start(dir.join("upstream.jsonl"));
    let mut rng = SplitMix64(seed);
    let base = utc(BASE);
    let mut ids: Vec<String> = Vec::new();
    let mut files = 0usize;
    drop_file(dir, "00000-setup.jsonl", &setup_file());
    files += 1;
    let mut next_file = |dir: &Path, day: u64, rng: &mut SplitMix64, ids: &mut Vec<String>| {
        let text = actions_file(day, rng, ids);
        drop_file(dir, &format!("{files:05}-day{day:04}.jsonl"), &text);
        files += 1;
    };
    next_file(dir, 0, &mut rng, &mut ids);

    // Cycle index -> virtual start.
    let mut starts: Vec<DateTime<Utc>> = Vec::new();
    let (mut day, mut max_day, mut steps_back, mut restarts_same_day) = (0u64, 0u64, 0usize, 0usize);
    let mut exits: BTreeMap<String, usize> = BTreeMap::new();
    for cycle in 0..cycles {
        if cycle > 0 {
            match rng.between(0, 7) {
                // The same day again: the restart alone steps the clock back.
                0 | 1 => restarts_same_day += 1,
                // Back a few days, onto days whose budgets are spent.
                2 | 3 if max_day > 0 => {
                    day = max_day - rng.between(1, max_day.min(3));
                    steps_back += 1;
                }
                _ => {
                    max_day += 1;
                    day = max_day;
                    next_file(dir, day, &mut rng, &mut ids);
                }
            }
        }
        let start = base + Days::days(day as i64);
        starts.push(start);
        let config = write_config(dir, &up.url, cycle, start);
        let spawned = Instant::now();
        let mut child = spawn(dir, &config);
        std::thread::sleep(Duration::from_millis(
            rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1),
        ));
        // An early exit (other than the kill) is a failure, unless it is the store
        // lock of the previous cycle's process, which cannot outlive its reaping.
        if let Some(code) = child.try_wait().expect("wait").and_then(|s| s.code()) {
            panic!(
                "cycle {cycle}: the worker exited with {code} before the kill:\n{}",
                log_tail(dir)
            );
        }
        child.kill().expect("SIGKILL");
        let code = wait_exit(&mut child);
        *exits
            .entry(code.map_or("SIGKILL".into(), |c| c.to_string()))
            .or_default() += 1;
        assert_one_local_day(start, spawned.elapsed());
    }

    // A clean run on the latest day: it takes any file left, recovers what the last
    // kill left in flight, sends, and stops on SIGTERM.
    let start = base + Days::days(max_day as i64);
    starts.push(start);
    let config = write_config(dir, &up.url, cycles, start);
    let spawned = Instant::now();
    let mut child = spawn(dir, &config);
    let spool = dir.join("spool");
    let empty = |d: &str| {
        std::fs::read_dir(spool.join(d))
            .map(|r| r.count() == 0)
            .unwrap_or(true)
    };
    while !(empty("incoming") && empty("processing")) {
        assert!(
            spawned.elapsed() < DEADLINE,
            "the clean run did not take every file:\n{}",
            log_tail(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(ok.success());
    let code = wait_exit(&mut child);
    assert_eq!(code, Some(0), "SIGTERM exits 0:\n{}", log_tail(dir));
    assert_one_local_day(start, spawned.elapsed());
    std::thread::sleep(Duration::from_millis(20));
    let rejected: Vec<_> = std::fs::read_dir(spool.join("rejected"))
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(rejected.is_empty(), "job files rejected: {rejected:?}");

    // (a) no action id reached the upstream twice.
    let logged = up.logged();
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &logged {
        assert_eq!(l.body["id"], l.key.as_str(), "Idempotency-Key is the action id");
        *per_key.entry(l.key.as_str()).or_default() += 1;
    }
    let duplicates: Vec<(&str, usize)> = per_key
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (*k, *n))
        .collect();

    // (b) per account / campaign, local day and counter: never over the cap.
    let mut account_days: BTreeMap<(String, NaiveDate, Counter), u32> = BTreeMap::new();
    let mut campaign_days: BTreeMap<(String, NaiveDate, CampaignType), u32> = BTreeMap::new();
    let mut cycles_with_sends = BTreeSet::new();
    for l in &logged {
        cycles_with_sends.insert(l.cycle);
        let at = starts[l.cycle];
        let account = l.body["account"].as_str().expect("account").to_string();
        let campaign = l.body["campaign"].as_str().expect("campaign").to_string();
        let kind = Kind::parse(l.body["kind"].as_str().expect("kind")).expect("a kind");
        let day = local_day(zone(&account), at);
        for &c in draws(kind) {
            if account_cap(c).is_some() {
                *account_days.entry((account.clone(), day, c)).or_default() += 1;
            }
        }
        if let Some(t) = CampaignType::of(kind) {
            let day = local_day(zone(&campaign), at);
            *campaign_days.entry((campaign, day, t)).or_default() += 1;
        }
    }
    let mut overshoots: Vec<String> = Vec::new();
    let mut exhausted = 0usize;
    for ((owner, day, c), n) in &account_days {
        let cap = account_cap(*c).expect("capped counter");
        exhausted += usize::from(*n == cap);
        if *n > cap {
            overshoots.push(format!("{owner} {day} {}: {n} > {cap}", c.as_str()));
        }
    }
    for ((owner, day, t), n) in &campaign_days {
        let cap = campaign_cap(owner, *t);
        exhausted += usize::from(*n == cap);
        if *n > cap {
            overshoots.push(format!("{owner} {day} campaign.{}: {n} > {cap}", t.as_str()));
        }
    }

    // (c) every accepted action in exactly one state.
    let store = Store::open(&dir.join("store"), Settings::default(), OpenOptions::default())
        .expect("the store opens after the worker stopped");
    let actions = store.actions().expect("scan actions");
    let counts = store.state_counts().expect("state counts");
    let mut by_state: BTreeMap<State, u64> = BTreeMap::new();
    let mut stored: BTreeMap<&str, State> = BTreeMap::new();
    for a in &actions {
        assert!(
            stored.insert(a.id.as_str(), a.state).is_none(),
            "{} stored twice",
            a.id
        );
        *by_state.entry(a.state).or_default() += 1;
    }
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(expected.len(), ids.len(), "the test made unique ids");
    let missing: Vec<&&str> = expected.iter().filter(|id| !stored.contains_key(**id)).collect();
    let extra: Vec<&&str> = stored.keys().filter(|id| !expected.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "accepted actions missing from the store: {missing:?}"
    );
    assert!(extra.is_empty(), "actions nobody sent in: {extra:?}");
    for s in State::ALL {
        assert_eq!(
            counts[s.index()],
            by_state.get(&s).copied().unwrap_or(0),
            "stored count of `{}` differs from the actions",
            s.as_str()
        );
    }
    assert_eq!(counts.iter().sum::<u64>(), ids.len() as u64, "state counts sum");
    assert_eq!(
        by_state.get(&State::Inflight),
        None,
        "inflight after a clean stop"
    );
    for key in per_key.keys() {
        let state = stored.get(key).copied();
        assert!(
            matches!(state, Some(State::Sent | State::Unknown)),
            "{key} reached the upstream but is {state:?}"
        );
    }
    for (id, state) in &stored {
        assert!(
            *state != State::Sent || per_key.contains_key(id),
            "{id} is sent but the upstream never received it"
        );
    }
    drop(store);

    // (d) the audit agrees.
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["audit", "--config"])
        .arg(&config)
        .output()
        .expect("audit");
    let audit = String::from_utf8_lossy(&out.stdout).to_string();
    let status = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .expect("status");
    assert_eq!(status.status.code(), Some(0), "sendgate status");

    let unknown = by_state.get(&State::Unknown).copied().unwrap_or(0);
    // Unknown actions the upstream did receive: kills between the send and its record.
    let unknown_received = stored
        .iter()
        .filter(|(id, s)| **s == State::Unknown && per_key.contains_key(**id))
        .count();
    let states: Vec<String> = by_state
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    println!(
        "crash_harness: cycles={cycles} seed={seed} days={} steps_back={steps_back} same_day_restarts={restarts_same_day} files={files} actions={} \
         sends={} cycles_with_sends={} unknown={unknown} (received {unknown_received}) duplicates={} overshoots={} exhausted_counters={exhausted} \
         exits={exits:?} states=[{}] audit_exit={:?} in {:.1} s",
        max_day + 1,
        ids.len(),
        logged.len(),
        cycles_with_sends.len(),
        duplicates.len(),
        overshoots.len(),
        states.join(", "),
        out.status.code(),
        began.elapsed().as_secs_f64()
    );
    assert!(duplicates.is_empty(), "actions sent twice: {duplicates:?}");
    assert!(overshoots.is_empty(), "caps exceeded: {overshoots:?}");
    assert_eq!(out.status.code(), Some(0), "sendgate audit:\n{audit}");
    assert!(!logged.is_empty(), "nothing was sent");
    assert!(exhausted > 0, "no cap was ever reached: the caps must bind");
}
