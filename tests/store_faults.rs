//! Store fault injection, SQLite's I/O-error loop: run one representative workload
//! through the library with store operation `n` (and every one after it) failing, for
//! n = 1, 2, 3, … until the workload completes without reaching the fault. Each time:
//! the run stops with a store error (exit code 74) and the upstream got no call after
//! the failing operation (SPEC P2, P5); the store reopened without faults recovers to
//! a clean audit with every action in exactly one state (P1, P4); and finishing the
//! workload on it sends no action twice and overshoots no cap (P1, P3). The store runs
//! with `fsync` on, so the `fdatasync` after each flush is one of the failing points.

mod common;

use chrono::{DateTime, Duration, Utc};
use sendgate::contract::jobfile::parse_file;
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::{Engine, EngineConfig};
use sendgate::policy::caps::{draws, Counter};
use sendgate::policy::window::local_day;
use sendgate::policy::{CampaignType, Kind};
use sendgate::store::{ApplyOutcome, OpenOptions, Settings, State, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const START: &str = "2026-11-25T08:00:00Z";
const FILE: &str = "jobs.jsonl";
/// Accounts: (id, zone, invites, messages, inmails, engagement).
const ACCOUNTS: [(&str, &str, u32, u32, u32, u32); 2] =
    [("a1", "UTC", 5, 3, 2, 6), ("a2", "Europe/Berlin", 4, 2, 1, 5)];
/// Campaigns: (id, zone, daily_limit).
const CAMPAIGNS: [(&str, &str, u32); 2] = [("c1", "UTC", 6), ("c2", "America/New_York", 3)];
const KINDS: [&str; 6] = [
    "invite",
    "message",
    "inmail",
    "profile_view",
    "comment",
    "reaction",
];
const ACTIONS: usize = 40;
/// Threads the loop runs on.
const THREADS: u64 = 4;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

fn start() -> DateTime<Utc> {
    utc(START)
}

/// The workload runs a full day from `START`, so both accounts turn a local day.
fn end() -> DateTime<Utc> {
    start() + Duration::days(1) + Duration::hours(2)
}

/// With `fsync` on, as in production: the `fdatasync` after each flush is an
/// operation of its own, so the loop fails it too (SPEC P2, P5).
fn settings() -> Settings {
    Settings {
        fsync: true,
        ..Settings::default()
    }
}

/// A fresh directory, on tmpfs when there is one: the loop runs the workload once per
/// store operation, and an `fdatasync` on tmpfs costs nothing (the sync itself is not
/// under test here, its place in the sequence of operations is).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("sendgate-faults").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        min_gap_s: 60,
        max_gap_s: 600,
        max_inflight: 32,
        seed: 7,
        ..EngineConfig::default()
    }
}

/// Two accounts in two zones, two campaigns (one naming its accounts, so some actions
/// name none), and 40 actions of every kind: more than the caps allow in a day.
fn job_file() -> String {
    let mut out = String::new();
    for (id, tz, inv, msg, inm, eng) in ACCOUNTS {
        out += &format!(
            r#"{{"type":"account","id":"{id}","tier":"sales_navigator_core","timezone":"{tz}","established":true,"window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"caps":{{"invites":{inv},"messages":{msg},"inmails":{inm},"engagement":{eng}}},"inmail_credits":50}}"#
        );
        out.push('\n');
    }
    for (id, tz, limit) in CAMPAIGNS {
        out += &format!(
            r#"{{"type":"campaign","id":"{id}","timezone":"{tz}","daily_limit":{limit},"accounts":["a1","a2"]}}"#
        );
        out.push('\n');
    }
    for i in 0..ACTIONS {
        let kind = KINDS[(i * 7 + i / 6) % KINDS.len()];
        let campaign = CAMPAIGNS[i % 2].0;
        let account = match i % 5 {
            0 => String::new(), // the campaign picks one
            r => format!(r#","account":"{}""#, ACCOUNTS[r % 2].0),
        };
        out += &format!(
            r#"{{"type":"action","id":"x{i:02}","campaign":"{campaign}"{account},"kind":"{kind}","prospect":"https://www.linkedin.com/in/p{i}","payload":{{"n":{i}}},"priority":{}}}"#,
            i % 3
        );
        out.push('\n');
    }
    out
}

/// One upstream call as the scripted upstream saw it.
#[derive(Clone, Debug)]
struct Call {
    /// `store.ops()` when the call was made.
    ops: u64,
    id: String,
    account: String,
    campaign: String,
    kind: Kind,
    at: DateTime<Utc>,
    outcome: Outcome,
}

/// A scripted upstream: mostly `sent`, with `maybe_delivered` and `not_delivered`
/// answers at fixed places, so retries and unknown outcomes are part of the workload.
#[derive(Default)]
struct Scripted {
    calls: Vec<Call>,
}

impl Scripted {
    fn answer(&mut self, req: &SendRequest, ops: u64, at: DateTime<Utc>, campaign: &str) -> Outcome {
        let n = self.calls.len();
        let outcome = match n % 11 {
            4 => Outcome::MaybeDelivered {
                reason: "HTTP 503".into(),
            },
            8 => Outcome::NotDelivered {
                reason: "connection refused".into(),
            },
            _ => Outcome::Sent,
        };
        self.calls.push(Call {
            ops,
            id: req.id.clone(),
            account: req.account.clone(),
            campaign: campaign.to_string(),
            kind: req.kind,
            at,
            outcome: outcome.clone(),
        });
        outcome
    }
}

/// Drive the engine on virtual time until `until`, recording the op count at each call.
fn drive(
    engine: &mut Engine,
    now: &mut DateTime<Utc>,
    until: DateTime<Utc>,
    up: &mut Scripted,
) -> Result<(), StoreError> {
    for _ in 0..1_000_000 {
        let Some(next) = engine.next_wake()?.filter(|n| *n < until) else {
            *now = (*now).max(until);
            return Ok(());
        };
        *now = (*now).max(next);
        for r in engine.tick(*now)? {
            let ops = engine.store().ops();
            let outcome = up.answer(&r.request, ops, *now, &r.campaign);
            engine.complete(&r, outcome, *now)?;
        }
        engine.drain_events()?;
    }
    panic!("the engine did not go to sleep");
}

fn apply(engine: &mut Engine, now: DateTime<Utc>) -> Result<(), StoreError> {
    let text = job_file();
    parse_file(FILE, text.as_bytes()).expect("the job file is valid");
    match engine.apply_file(FILE, text.as_bytes(), now)? {
        ApplyOutcome::Applied(_) | ApplyOutcome::AlreadyApplied => Ok(()),
        ApplyOutcome::Rejected(r) => panic!("job file rejected: {r:?}"),
    }
}

/// The workload: open, take over (recovery), apply the job file, run the day.
fn workload(
    path: &Path,
    fail_from_op: Option<u64>,
    now: &mut DateTime<Utc>,
    up: &mut Scripted,
) -> Result<u64, StoreError> {
    let opts = OpenOptions {
        cache_mb: 8,
        fail_from_op,
        ..OpenOptions::default()
    };
    let store = common::open_with(path, settings(), opts)?;
    let mut engine = Engine::new(store, engine_config(), *now)?;
    apply(&mut engine, *now)?;
    drive(&mut engine, now, end(), up)?;
    Ok(engine.store().ops())
}

/// Open without faults (waiting while the failed run's dropped handle still holds
/// sled's lock).
fn reopen(path: &Path) -> Store {
    common::open_with(path, settings(), OpenOptions::default()).expect("reopens without faults")
}

/// P4: every action in exactly one state; the stored per-state counts agree.
fn check_states(store: &Store, expect: usize, what: &str) -> BTreeMap<State, usize> {
    let actions = store.actions().expect("scan actions");
    let ids: BTreeSet<&str> = actions.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), actions.len(), "{what}: an action id appears twice");
    assert_eq!(actions.len(), expect, "{what}: actions in the store");
    let mut by_state: BTreeMap<State, usize> = BTreeMap::new();
    for a in &actions {
        *by_state.entry(a.state).or_default() += 1;
    }
    let counts = store.state_counts().expect("state counts");
    for s in State::ALL {
        assert_eq!(
            counts[s.index()] as usize,
            by_state.get(&s).copied().unwrap_or(0),
            "{what}: stored count of `{}` differs from the actions",
            s.as_str()
        );
    }
    by_state
}

fn check_audit(store: &Store, what: &str) {
    let report = store.audit(None, None).expect("audit reads");
    assert!(report.clean(), "{what}: audit not clean: {report:?}");
}

/// P1 and P3 as the upstream saw them: per account and local day no counter over its
/// cap, per campaign and local day no type over its cap, and no action called again
/// after a call that may have delivered it.
fn check_calls(calls: &[Call], what: &str) {
    let zone = |id: &str| -> chrono_tz::Tz {
        ACCOUNTS
            .iter()
            .map(|a| (a.0, a.1))
            .chain(CAMPAIGNS.iter().map(|c| (c.0, c.1)))
            .find(|(i, _)| *i == id)
            .map(|(_, z)| z.parse().expect("zone"))
            .expect("known owner")
    };
    let mut per_account: BTreeMap<(String, chrono::NaiveDate, Counter), u32> = BTreeMap::new();
    let mut per_campaign: BTreeMap<(String, chrono::NaiveDate, CampaignType), u32> = BTreeMap::new();
    let mut delivered: BTreeSet<&str> = BTreeSet::new();
    for c in calls {
        assert!(
            !delivered.contains(c.id.as_str()),
            "{what}: {} called again after a call that may have delivered it",
            c.id
        );
        if matches!(c.outcome, Outcome::NotDelivered { .. }) {
            // Never received: it counts against no cap, and its slots are given back
            // (SPEC §3) once its outcome is recorded.
            continue;
        }
        delivered.insert(&c.id);
        let (_, _, inv, msg, inm, eng) = *ACCOUNTS.iter().find(|a| a.0 == c.account).expect("account");
        let day = local_day(zone(&c.account), c.at);
        for &counter in draws(c.kind) {
            let cap = match counter {
                Counter::Invites => inv,
                Counter::Messages => msg,
                Counter::Inmails => inm,
                Counter::Engagement => eng,
                Counter::WeeklyInvites | Counter::InmailCredits => continue,
            };
            let n = per_account.entry((c.account.clone(), day, counter)).or_default();
            *n += 1;
            assert!(
                *n <= cap,
                "{what}: {} {day} {}: {n} calls > cap {cap}",
                c.account,
                counter.as_str()
            );
        }
        if let Some(t) = CampaignType::of(c.kind) {
            let cap = CAMPAIGNS.iter().find(|x| x.0 == c.campaign).expect("campaign").2;
            let day = local_day(zone(&c.campaign), c.at);
            let n = per_campaign.entry((c.campaign.clone(), day, t)).or_default();
            *n += 1;
            assert!(
                *n <= cap,
                "{what}: campaign {} {day} {}: {n} calls > cap {cap}",
                c.campaign,
                t.as_str()
            );
        }
    }
}

/// One run of the loop: the workload with store op `n` failing onward. Returns `None`
/// when the workload completed before reaching op `n`, else whether the job file had
/// been applied before the fault, and the kind of operation that failed.
fn fault_at(n: u64, total: u64) -> Option<(bool, &'static str)> {
    let dir = scratch();
    let path = dir.path().join("store");
    let mut up = Scripted::default();
    let mut now = start();
    let what = format!("fault at op {n}");
    let failed_op: &'static str;
    match workload(&path, Some(n), &mut now, &mut up) {
        Ok(ops) => {
            assert!(
                ops < n,
                "{what}: the workload finished after {ops} ops: a failed store operation was ignored"
            );
            assert_eq!(
                n,
                total + 1,
                "{what}: completed before the fault-free total {total}"
            );
            return None;
        }
        Err(e) => {
            assert_eq!(e.exit_code(), 74, "{what}: {e}");
            match e {
                StoreError::Injected { op, .. } => failed_op = op,
                e => panic!("{what}: not the injected fault: {e}"),
            }
        }
    }
    if let Some(c) = up.calls.iter().find(|c| c.ops >= n) {
        panic!(
            "{what}: upstream called for {} with {} store ops done: after the failed op",
            c.id, c.ops
        );
    }
    // Reopen without faults; the engine recovers what was in flight.
    let store = reopen(&path);
    let mut engine = Engine::new(store, engine_config(), now).expect("takes over");
    let applied = engine.store().action("x00").expect("read").is_some();
    check_audit(engine.store(), &what);
    let states = check_states(engine.store(), if applied { ACTIONS } else { 0 }, &what);
    assert!(
        !states.contains_key(&State::Inflight),
        "{what}: inflight after recovery: {states:?}"
    );
    // The rest of the workload on the recovered store.
    apply(&mut engine, now).expect("apply after recovery");
    drive(&mut engine, &mut now, end(), &mut up).expect("finish the workload");
    check_audit(engine.store(), &what);
    let states = check_states(engine.store(), ACTIONS, &what);
    assert!(!states.contains_key(&State::Inflight), "{what}: {states:?}");
    check_calls(&up.calls, &what);
    Some((applied, failed_op))
}

#[test]
fn every_store_operation_failing_fails_closed_and_recovers_clean() {
    let began = std::time::Instant::now();
    // The fault-free run: how many store operations the workload takes.
    let dir = scratch();
    let mut up = Scripted::default();
    let mut now = start();
    let total = workload(&dir.path().join("store"), None, &mut now, &mut up).expect("fault-free run");
    let clean_calls = up.calls.len();
    check_calls(&up.calls, "fault-free");
    {
        let store = reopen(&dir.path().join("store"));
        check_audit(&store, "fault-free");
        let states = check_states(&store, ACTIONS, "fault-free");
        assert!(states.contains_key(&State::Sent), "{states:?}");
        assert!(
            states.contains_key(&State::Parked),
            "the caps bind: some actions wait for a later day: {states:?}"
        );
    }
    assert!(clean_calls > 10, "a representative workload: {clean_calls} calls");
    println!("store_faults: the fault-free workload takes {total} store operations and {clean_calls} upstream calls");

    // Op counts are spread over a few threads (the work is mostly waiting on sled's
    // flushes); each thread takes every THREADS-th n.
    let tally = |first: u64| {
        let (mut covered, mut before_apply) = (0u64, 0u64);
        let mut ops: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut n = first;
        while n <= total + 1 {
            if let Some((applied, op)) = fault_at(n, total) {
                covered += 1;
                before_apply += u64::from(!applied);
                *ops.entry(op).or_default() += 1;
            }
            n += THREADS;
        }
        (covered, before_apply, ops)
    };
    let (covered, before_apply, ops) = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=THREADS).map(|first| s.spawn(move || tally(first))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a fault run panicked"))
            .fold((0, 0, BTreeMap::new()), |mut a, b| {
                for (op, k) in b.2 {
                    *a.2.entry(op).or_default() += k;
                }
                (a.0 + b.0, a.1 + b.1, a.2)
            })
    });
    assert!(
        ops.get("fdatasync").copied().unwrap_or(0) > 0,
        "no fault landed on an fdatasync: {ops:?}"
    );
    assert_eq!(
        covered, total,
        "every op count up to the fault-free total fails closed"
    );
    println!(
        "store_faults: covered n = 1..={total} ({covered} faults, {before_apply} of them before the job \
         file was applied; by operation {ops:?}) in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
