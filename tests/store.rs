//! The store through its public API: apply, reserve, record, audit, and what must
//! never happen to an opened store.

mod common;

use common::*;
use sendgate::contract::jobfile::parse_file;
use sendgate::contract::Outcome;
use sendgate::policy::pacing::{Rng, SplitMix64};
use sendgate::policy::Kind;
use sendgate::store::{
    ApplyOutcome, Attempt, OpenOptions, ReserveResult, Settings, State, Store, StoreError,
};
use std::sync::Arc;

const NOW: &str = "2026-11-25T12:00:00Z"; // a Wednesday

#[test]
fn apply_reserve_record_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let now = utc(NOW);
    let mut text = format!(
        "{}\n{}\n",
        account_line("a1", r#","caps":{"invites":3}"#),
        campaign_line("c1", 10, "")
    );
    for i in 0..5 {
        text.push_str(&action_line(&format!("x{i}"), "c1", "a1", "invite"));
        text.push('\n');
    }
    apply(&store, "f1.jsonl", &text, now);
    let ids: Vec<String> = (0..5).map(|i| format!("x{i}")).collect();
    let (results, _) = store.reserve(&ids, now).expect("reserve");
    let reserved = results
        .iter()
        .filter(|r| matches!(r, ReserveResult::Reserved(_)))
        .count();
    assert_eq!(reserved, 3, "{results:?}");
    let parked: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            ReserveResult::Parked { blocker, until, .. } => Some((blocker.clone(), *until)),
            _ => None,
        })
        .collect();
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0].0, "account.invites");
    assert_eq!(
        parked[0].1,
        Some(utc("2026-11-26T00:00:00Z")),
        "next window opening on a later day"
    );
    let outcomes: Vec<_> = ids[..3].iter().map(|id| (id.clone(), Outcome::Sent, 0)).collect();
    store.record(&outcomes, now).expect("record");
    assert_eq!(
        store.action("x0").expect("read").map(|a| a.state),
        Some(State::Sent)
    );
    assert_eq!(
        store.action("x4").expect("read").map(|a| a.state),
        Some(State::Parked)
    );
    let counts = store.state_counts().expect("counts");
    assert_eq!(counts[State::Sent.index()], 3);
    assert_eq!(counts[State::Parked.index()], 2);
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert_eq!(audit.entries, 3);
}

/// `reserve_after` records the answers before it reserves, in one transaction: a slot
/// an answer gives back (not delivered) is there for the reservation beside it, and
/// the ledger and counters agree after.
#[test]
fn answers_are_recorded_before_the_reservations_they_ride_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let now = utc(NOW);
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        account_line("a1", r#","caps":{"invites":1}"#),
        campaign_line("c1", 10, ""),
        action_line("x0", "c1", "a1", "invite"),
        action_line("x1", "c1", "a1", "invite"),
        action_line("x2", "c1", "a1", "invite"),
    );
    apply(&store, "f1.jsonl", &text, now);
    let (first, _) = store.reserve(&["x0".to_string()], now).expect("reserve");
    assert!(matches!(first[0], ReserveResult::Reserved(_)), "{first:?}");
    let refused = Attempt {
        action: "x0".into(),
        outcome: Outcome::NotDelivered {
            reason: "connection refused".into(),
        },
        backoff_s: 60,
        probe: false,
    };
    let tx0 = store.transactions();
    let folded = store
        .reserve_after(&[refused], now, &["x1".to_string()], now)
        .expect("reserve after");
    assert_eq!(store.transactions() - tx0, 1, "one transaction");
    assert_eq!(folded.recorded.len(), 1);
    assert!(folded.recorded[0].released, "its slot given back");
    assert!(
        matches!(folded.results[0], ReserveResult::Reserved(_)),
        "the slot given back is taken in the same transaction: {:?}",
        folded.results
    );
    // The cap is full again: x2 parks, and x0 (queued for its retry) waits.
    let sent = Attempt {
        action: "x1".into(),
        outcome: Outcome::Sent,
        backoff_s: 0,
        probe: false,
    };
    let folded = store
        .reserve_after(&[sent], now, &["x2".to_string()], now)
        .expect("reserve after");
    assert_eq!(folded.recorded[0].state, State::Sent);
    assert!(
        matches!(folded.results[0], ReserveResult::Parked { .. }),
        "{:?}",
        folded.results
    );
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert_eq!(
        store.action("x1").expect("read").map(|a| a.state),
        Some(State::Sent)
    );
}

#[test]
fn a_file_is_applied_once_and_a_bad_one_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let now = utc(NOW);
    let text = format!("{}\n{}\n", account_line("a1", ""), campaign_line("c1", 10, ""));
    apply(&store, "f.jsonl", &text, now);
    parse_file("f.jsonl", text.as_bytes()).expect("valid");
    assert_eq!(
        store.apply("f.jsonl", text.as_bytes(), now).expect("ok"),
        ApplyOutcome::AlreadyApplied
    );
    // Line 2 is fine, line 3 names an unknown campaign: nothing of the file applies.
    let bad = format!(
        "{}\n{}\n{}\n",
        campaign_line("c2", 5, ""),
        action_line("y1", "c1", "a1", "message"),
        action_line("y2", "nope", "a1", "message")
    );
    parse_file("bad.jsonl", bad.as_bytes()).expect("parses");
    match store
        .apply("bad.jsonl", bad.as_bytes(), now)
        .expect("store works")
    {
        ApplyOutcome::Rejected(r) => assert_eq!((r.line, r.field.as_str()), (3, "campaign")),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(store.campaign("c2").expect("read").is_none(), "half-applied");
    assert!(store.action("y1").expect("read").is_none(), "half-applied");
    // Duplicates are skipped and counted.
    let dup = format!(
        "{}\n{}\n",
        action_line("z", "c1", "a1", "message"),
        action_line("z", "c1", "a1", "message")
    );
    parse_file("dup.jsonl", dup.as_bytes()).expect("parses");
    match store.apply("dup.jsonl", dup.as_bytes(), now).expect("ok") {
        ApplyOutcome::Applied(a) => assert_eq!((a.actions, a.duplicates), (1, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn eight_threads_never_overshoot_and_ledger_equals_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Durability is not under test here; contention is.
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    let store = Arc::new(open(dir.path(), settings));
    let now = utc(NOW);
    let caps = r#","caps":{"invites":40,"messages":30,"inmails":5,"engagement":50,"weekly_invites":100},"inmail_credits":4"#;
    let mut text = format!("{}\n{}\n", account_line("a1", caps), campaign_line("c1", 25, ""));
    let mut rng = SplitMix64(42);
    let per_thread = 60;
    for t in 0..8 {
        for i in 0..per_thread {
            let kind = Kind::ALL[rng.between(0, 5) as usize].as_str();
            text.push_str(&action_line(&format!("t{t}-{i}"), "c1", "a1", kind));
            text.push('\n');
        }
    }
    apply(&store, "load.jsonl", &text, now);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut reserved = 0;
                for i in 0..per_thread {
                    let (r, _) = store.reserve(&[format!("t{t}-{i}")], now).expect("reserve");
                    reserved += usize::from(matches!(r[0], ReserveResult::Reserved(_)));
                }
                reserved
            })
        })
        .collect();
    let reserved: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert_eq!(audit.entries as usize, reserved);
    let day = store.account_day("a1", now.date_naive()).expect("day").reserved;
    assert!(
        day.invites <= 25 && day.messages <= 25 && day.inmails <= 4 && day.engagement <= 50,
        "{day:?}"
    );
    assert!(reserved > 0);
    let acct = store.account("a1").expect("read").expect("exists");
    assert_eq!(acct.credits, 4 - day.inmails, "one credit per InMail");
}

#[test]
fn a_newer_format_is_refused_and_a_locked_store_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    {
        let store = Store::open(&path, Settings::default(), OpenOptions::default()).expect("opens");
        // A second open in the same process hits sled's file lock.
        match Store::open(&path, Settings::default(), OpenOptions::default()) {
            Err(e @ StoreError::Locked { .. }) => {
                assert!(e.to_string().contains("locked"), "{e}");
                assert_eq!(e.exit_code(), 74);
            }
            Err(e) => panic!("expected a lock error, got {e}"),
            Ok(_) => panic!("a second open must fail"),
        }
        drop(store);
    }
    {
        let db = raw_sled(&path);
        let meta = db.open_tree("meta").expect("meta");
        meta.insert(
            "format_version",
            postcard::to_allocvec(&(0u8, 99u32)).expect("encode"),
        )
        .expect("write");
        db.flush().expect("flush");
    }
    match Store::open(&path, Settings::default(), OpenOptions::default()) {
        Err(e @ StoreError::NewerFormat { .. }) => {
            assert!(e.to_string().contains("newer"), "{e}");
            assert_eq!(e.exit_code(), 78);
        }
        Err(e) => panic!("expected a newer-format error, got {e}"),
        Ok(_) => panic!("a newer store must be refused"),
    }
    assert!(path.join("db").exists(), "never replaced by an empty store");
}

#[test]
fn inflight_actions_become_unknown_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc(NOW);
    {
        let store = open(dir.path(), Settings::default());
        let text = format!(
            "{}\n{}\n{}\n",
            account_line("a1", ""),
            campaign_line("c1", 10, ""),
            action_line("x", "c1", "a1", "message")
        );
        apply(&store, "f.jsonl", &text, now);
        let (r, _) = store.reserve(&["x".to_string()], now).expect("reserve");
        assert!(matches!(r[0], ReserveResult::Reserved(_)));
    }
    let store = open(dir.path(), Settings::default());
    let rec = store.recover(now).expect("recover");
    assert_eq!(rec.unknown, vec!["x".to_string()]);
    assert_eq!(
        store.action("x").expect("read").map(|a| a.state),
        Some(State::Unknown)
    );
    assert_eq!(
        store
            .account_day("a1", now.date_naive())
            .expect("day")
            .reserved
            .messages,
        1,
        "slot stays used"
    );
    // `show` lists the lost attempt's outcome after its reservation; the audit, which
    // sums reservations and releases only, still agrees.
    let h = store.history("x").expect("history").expect("the action");
    assert_eq!((h.reservations.len(), h.outcomes.len()), (1, 1), "{h:?}");
    let o = &h.outcomes[0];
    assert_eq!(
        (o.attempt, o.outcome.as_str(), o.state, o.released),
        (1, "lost_to_crash", State::Unknown, false)
    );
    assert_eq!(o.reason.as_deref(), Some("outcome lost to a crash"));
    assert!(store.audit(None, None).expect("audit").clean());
}

#[test]
fn retention_prunes_finished_actions_and_old_ledger_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        retention_days: 30,
        ..Settings::default()
    };
    let store = open(dir.path(), settings);
    let then = utc(NOW);
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", 10, ""),
        action_line("old", "c1", "a1", "message"),
        action_line("waiting", "c1", "a1", "message")
    );
    apply(&store, "f.jsonl", &text, then);
    store.reserve(&["old".to_string()], then).expect("reserve");
    store
        .record(&[("old".to_string(), Outcome::Sent, 0)], then)
        .expect("record");
    // 29 days later nothing is old enough; 31 days later the sent action and its ledger
    // records (its reservation and the batch of outcomes) go, the still-queued action
    // stays.
    assert_eq!(
        store
            .prune(then + chrono::Duration::days(29), 100)
            .expect("prune"),
        0
    );
    assert_eq!(
        store
            .prune(then + chrono::Duration::days(31), 100)
            .expect("prune"),
        3
    );
    assert!(store.action("old").expect("read").is_none());
    assert_eq!(
        store.action("waiting").expect("read").map(|a| a.state),
        Some(State::Queued)
    );
    let counts = store.state_counts().expect("counts");
    assert_eq!(
        (counts[State::Sent.index()], counts[State::Queued.index()]),
        (0, 1)
    );
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean() && audit.entries == 0, "{audit:?}");
}

#[test]
fn audit_reports_an_overshoot_and_a_counter_mismatch() {
    use sendgate::store::codec::{decode, encode};
    use sendgate::store::records::{AccountDayRec, LedgerReservations};
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc(NOW);
    {
        let store = open(dir.path(), Settings::default());
        let mut text = format!(
            "{}\n{}\n",
            account_line("a1", r#","caps":{"invites":3}"#),
            campaign_line("c1", 10, "")
        );
        for i in 0..3 {
            text += &action_line(&format!("x{i}"), "c1", "a1", "invite");
            text.push('\n');
        }
        apply(&store, "f.jsonl", &text, now);
        let ids: Vec<String> = (0..3).map(|i| format!("x{i}")).collect();
        store.reserve(&ids, now).expect("reserve");
        assert!(store.audit(None, None).expect("audit").clean());
    }
    // Tamper behind the store's back: the last entry claims a limit of 1, and the day
    // counter says 2 where the ledger holds 3.
    {
        let db = raw_sled(&dir.path().join("store"));
        let ledger = db.open_tree("ledger").expect("ledger");
        let (k, v) = ledger.last().expect("read").expect("an entry");
        let mut b: LedgerReservations = decode("ledger reservations", &v).expect("decodes");
        let e = b.entries.last_mut().expect("an entry");
        e.limits.invites = 1;
        ledger.insert(k, encode(&b)).expect("write");
        let days = db.open_tree("days").expect("days");
        let key = sendgate::store::codec::account_day_key("a1", now.date_naive());
        let mut d: AccountDayRec =
            decode("day", &days.get(&key).expect("read").expect("a day")).expect("decodes");
        d.reserved.invites = 2;
        days.insert(key, encode(&d)).expect("write");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), Settings::default());
    let audit = store.audit(None, None).expect("audit");
    assert!(!audit.clean());
    assert_eq!(audit.overshoots.len(), 1, "{audit:?}");
    let o = &audit.overshoots[0];
    assert_eq!(
        (o.owner.as_str(), o.counter.as_str(), o.count, o.limit),
        ("a1", "invites", 3, 1)
    );
    assert_eq!(audit.mismatches.len(), 1, "{audit:?}");
    // Outside the day range, nothing to report.
    let later = now.date_naive() + chrono::Duration::days(1);
    assert!(store.audit(Some(later), None).expect("audit").clean());
    drop(store);
    // `sendgate audit` says the same and exits 1.
    let cfg = dir.path().join("audit.toml");
    std::fs::write(
        &cfg,
        format!("[store]\npath = \"{}\"\n", dir.path().join("store").display()),
    )
    .expect("config");
    let mut out = None;
    for _ in 0..100 {
        // sled releases its file lock a moment after the handle is dropped.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_sendgate"))
            .args(["audit", "--config"])
            .arg(&cfg)
            .output()
            .expect("audit");
        if o.status.code() != Some(74) {
            out = Some(o);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = out.expect("the store unlocks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("OVERSHOOT a1") && stdout.contains("MISMATCH"),
        "{stdout}"
    );
}

// --- Store identity (SPEC P5): a damaged store never comes back empty. ---

/// Wait until no handle holds sled's lock on `store/db` (sled lets go of it from a
/// background thread a moment after the last handle is dropped).
fn wait_unlocked(store: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let db = std::fs::File::open(store.join("db")).expect("open db");
    for _ in 0..400 {
        // SAFETY: flock on a descriptor we own; released by the second call.
        if unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_UN) };
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!(
        "{}: still locked 2 s after the last handle was dropped",
        store.display()
    );
}

/// A store at `dir/store` with an account, a campaign, three actions and two
/// reservations; closed when this returns.
fn store_with_reservations(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("store");
    let store = open(dir, Settings::default());
    let now = utc(NOW);
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", 10, ""),
        action_line("x0", "c1", "a1", "invite"),
        action_line("x1", "c1", "a1", "invite"),
        action_line("x2", "c1", "a1", "invite")
    );
    apply(&store, "f.jsonl", &text, now);
    let (r, _) = store
        .reserve(&["x0".to_string(), "x1".to_string()], now)
        .expect("reserve");
    assert!(r.iter().all(|r| matches!(r, ReserveResult::Reserved(_))), "{r:?}");
    store.checkpoint().expect("checkpoint");
    drop(store);
    wait_unlocked(&path);
    path
}

fn sled_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(path)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != identity::ID_FILE))
        .collect()
}

fn remove(p: &std::path::Path) {
    if p.is_dir() {
        std::fs::remove_dir_all(p).expect("rm -r");
    } else {
        std::fs::remove_file(p).expect("rm");
    }
}

/// Open must refuse with a store error (exit 74) whose message names the path and
/// contains `needle`; the refused directory keeps its identity file.
fn assert_refused(path: &std::path::Path, needle: &str) {
    type Open = fn(&std::path::Path, Settings, OpenOptions) -> Result<Store, StoreError>;
    for opener in [Store::open as Open, Store::open_existing] {
        match opener(path, Settings::default(), OpenOptions::default()) {
            Err(e) => {
                let msg = e.describe(path);
                assert_eq!(e.exit_code(), 74, "{msg}");
                assert!(msg.contains(&path.display().to_string()), "names the path: {msg}");
                assert!(msg.contains(needle), "`{needle}` in: {msg}");
            }
            Ok(s) => panic!(
                "a damaged store opened: {} actions, {} ledger entries",
                s.actions().expect("scan").len(),
                s.audit(None, None).expect("audit").entries
            ),
        }
    }
    assert!(path.join(identity::ID_FILE).exists());
}

use sendgate::store::identity;

#[test]
fn an_emptied_db_without_snapshots_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    std::fs::write(path.join("db"), b"").expect(": > db");
    for p in sled_files(&path) {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
        {
            remove(&p);
        }
    }
    assert_refused(&path, "no sendgate data");
}

#[test]
fn a_removed_db_and_snapshots_are_refused_though_conf_and_blobs_remain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    for p in sled_files(&path) {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if name == "db" || name.starts_with("snap.") {
            remove(&p);
        }
    }
    assert!(path.join("conf").exists() && path.join("blobs").exists());
    assert_refused(&path, "`db`) is gone");
    assert!(!path.join("db").exists(), "nothing was created in its place");
}

#[test]
fn a_store_emptied_but_for_its_identity_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    for p in sled_files(&path) {
        remove(&p);
    }
    assert_refused(&path, "is gone");
    assert_eq!(
        sled_files(&path),
        Vec::<std::path::PathBuf>::new(),
        "nothing created"
    );
}

#[test]
fn data_of_another_store_under_an_identity_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    drop(open(other.path(), Settings::default()));
    wait_unlocked(&other.path().join("store"));
    for p in sled_files(&path) {
        remove(&p);
    }
    for p in sled_files(&other.path().join("store")) {
        let to = path.join(p.file_name().expect("name"));
        if p.is_dir() {
            std::fs::create_dir(&to).expect("mkdir");
        } else {
            std::fs::copy(&p, &to).expect("copy");
        }
    }
    assert_refused(&path, "its data belongs to store");
}

#[test]
fn an_older_copy_of_the_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    let backup = dir.path().join("backup");
    std::fs::create_dir(&backup).expect("mkdir");
    for p in sled_files(&path) {
        if p.is_file() {
            std::fs::copy(&p, backup.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    {
        let store = open(dir.path(), Settings::default());
        let (r, _) = store.reserve(&["x2".to_string()], utc(NOW)).expect("reserve");
        assert!(matches!(r[0], ReserveResult::Reserved(_)));
        store.checkpoint().expect("checkpoint");
    }
    wait_unlocked(&path);
    for p in sled_files(&path) {
        remove(&p);
    }
    std::fs::create_dir(path.join("blobs")).expect("mkdir blobs");
    for p in sled_files(&backup) {
        std::fs::copy(&p, path.join(p.file_name().expect("name"))).expect("restore");
    }
    assert_refused(&path, "behind");
}

#[test]
fn a_new_store_gets_an_identity_and_reopens_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    let id = identity::read(&path).expect("identity");
    assert!(id.complete && id.store_id.len() == 32, "{id:?}");
    assert!(id.ledger_mark >= 2, "the mark follows the ledger: {id:?}");
    let store = open(dir.path(), Settings::default());
    assert_eq!(store.audit(None, None).expect("audit").entries, 2);
    drop(store);
    assert_eq!(identity::read(&path).expect("identity").store_id, id.store_id);
}

#[test]
fn a_store_without_identity_is_adopted_when_its_data_is_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    let before = identity::read(&path).expect("identity");
    std::fs::remove_file(path.join(identity::ID_FILE)).expect("rm id");
    // The read-only commands open it and write nothing.
    drop(Store::open_existing(&path, Settings::default(), OpenOptions::default()).expect("opens"));
    wait_unlocked(&path);
    assert!(!path.join(identity::ID_FILE).exists());
    // `run` adopts it under the store id its data carries.
    let store = open(dir.path(), Settings::default());
    assert_eq!(store.audit(None, None).expect("audit").entries, 2);
    let after = identity::read(&path).expect("identity written");
    assert_eq!(after.store_id, before.store_id);
    assert!(after.complete && after.ledger_mark >= 2, "{after:?}");
    drop(store);
    wait_unlocked(&path);
    // Without an identity, an emptied db is still refused (no data, no format).
    std::fs::remove_file(path.join(identity::ID_FILE)).expect("rm id");
    std::fs::write(path.join("db"), b"").expect(": > db");
    for p in sled_files(&path) {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
        {
            remove(&p);
        }
    }
    match Store::open(&path, Settings::default(), OpenOptions::default()) {
        Err(e) => assert_eq!(e.exit_code(), 74, "{e}"),
        Ok(_) => panic!("an emptied store without identity became a new one"),
    }
    // Nor does a directory of sled's files without `db` become a new store.
    std::fs::remove_file(path.join("db")).expect("rm db");
    match Store::open(&path, Settings::default(), OpenOptions::default()) {
        Err(e) => assert!(e.to_string().contains("not empty"), "{e}"),
        Ok(_) => panic!("a non-empty directory became a new store"),
    }
    assert!(!path.join("db").exists());
}

#[test]
fn only_a_missing_path_or_an_empty_directory_becomes_a_store() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // Read-only opens never create one.
    let missing = dir.path().join("missing/store");
    match Store::open_existing(&missing, Settings::default(), OpenOptions::default()) {
        Err(e @ StoreError::NotFound { .. }) => {
            assert_eq!(e.exit_code(), 1);
            assert!(
                e.describe(&missing).contains(&missing.display().to_string()),
                "{e}"
            );
        }
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("a read-only open created a store"),
    }
    assert!(!dir.path().join("missing").exists(), "nothing created");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(matches!(
        Store::open_existing(&empty, Settings::default(), OpenOptions::default()),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        std::fs::read_dir(&empty).expect("ls").count(),
        0,
        "nothing created"
    );
    // `run` creates both, mode 0700.
    for path in [&missing, &empty] {
        drop(Store::open(path, Settings::default(), OpenOptions::default()).expect("created"));
        let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", path.display());
        assert!(identity::read(path).expect("identity").complete);
    }
    // A creation that crashed after writing its identity, before its data carried the
    // store id, is created afresh under that id (nothing was accepted yet).
    let crashed = dir.path().join("crashed");
    std::fs::create_dir(&crashed).expect("mkdir");
    let mut id = identity::Identity::new("0123456789abcdef0123456789abcdef".into());
    identity::write(&crashed, &id, true).expect("identity");
    assert!(matches!(
        Store::open_existing(&crashed, Settings::default(), OpenOptions::default()),
        Err(StoreError::NotFound { .. })
    ));
    drop(Store::open(&crashed, Settings::default(), OpenOptions::default()).expect("created"));
    id.complete = true;
    assert_eq!(identity::read(&crashed).expect("identity"), id);
}

#[test]
fn store_errors_name_the_path_and_a_lock_names_its_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let store = Store::open(&path, Settings::default(), OpenOptions::default()).expect("opens");
    match Store::open_existing(&path, Settings::default(), OpenOptions::default()) {
        Err(e @ StoreError::Locked { .. }) => {
            let msg = e.describe(&path);
            // The holder is this test's own process, named as `/proc` names it.
            let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
            let needle = format!("locked by process {} ({})", std::process::id(), comm.trim_end());
            assert!(msg.contains(&needle), "`{needle}` in: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(!msg.contains("WouldBlock"), "{msg}");
        }
        Err(e) => panic!("expected a lock error, got {e}"),
        Ok(_) => panic!("a second open must fail"),
    }
    drop(store);
    // A path under a regular file: works as root too.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let under = file.join("store");
    match Store::open(&under, Settings::default(), OpenOptions::default()) {
        Err(e) => {
            assert_eq!(e.exit_code(), 74);
            assert!(e.describe(&under).contains(&file.display().to_string()), "{e}");
        }
        Ok(_) => panic!("a store under a regular file"),
    }
    match Store::open_existing(&under, Settings::default(), OpenOptions::default()) {
        Err(e) => assert_eq!(e.exit_code(), 1, "does not exist: {e}"),
        Ok(_) => panic!("a store under a regular file"),
    }
    // A path that is a regular file.
    match Store::open(&file, Settings::default(), OpenOptions::default()) {
        Err(e) => assert!(e.describe(&file).contains("not a directory"), "{e}"),
        Ok(_) => panic!("a store in a regular file"),
    }
}

#[test]
fn an_unreadable_store_directory_is_named() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } == 0 {
        println!("SKIPPED: an_unreadable_store_directory_is_named: root reads any directory");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_with_reservations(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let result = Store::open(&path, Settings::default(), OpenOptions::default());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod back");
    match result {
        Err(e) => {
            let msg = e.describe(&path);
            assert_eq!(e.exit_code(), 74);
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains("ermission denied"),
                "{msg}"
            );
        }
        Ok(_) => panic!("opened an unreadable store"),
    }
}

/// Apply a job file and return what it changed.
fn applied(
    store: &Store,
    name: &str,
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> sendgate::store::Applied {
    parse_file(name, text.as_bytes()).expect("valid job file");
    match store.apply(name, text.as_bytes(), now).expect("store works") {
        ApplyOutcome::Applied(a) => a,
        other => panic!("{name} did not apply: {other:?}"),
    }
}

#[test]
fn a_pruned_action_id_is_never_new_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        retention_days: 30,
        ..Settings::default()
    };
    let store = open(dir.path(), settings);
    let then = utc(NOW);
    let text = format!(
        "{}\n{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", 10, ""),
        action_line("old", "c1", "a1", "message"),
    );
    apply(&store, "f.jsonl", &text, then);
    store.reserve(&["old".to_string()], then).expect("reserve");
    store
        .record(&[("old".to_string(), Outcome::Sent, 0)], then)
        .expect("record");
    let pruned_at = then + chrono::Duration::days(31);
    // The action, its reservation and its batch of outcomes.
    assert_eq!(store.prune(pruned_at, 100).expect("prune"), 3);
    assert!(store.action("old").expect("read").is_none());
    // The same id again, in another file, a month and then a year later: a duplicate.
    for (name, days) in [("again.jsonl", 60), ("year.jsonl", 31 + 365)] {
        let at = then + chrono::Duration::days(days);
        let again = action_line("old", "c1", "a1", "message") + "\n";
        let a = applied(&store, name, &again, at);
        assert_eq!((a.actions, a.duplicates), (0, 1), "{name}");
        assert!(store.action("old").expect("read").is_none(), "{name}");
    }
    let counts = store.state_counts().expect("counts");
    assert_eq!(counts.iter().sum::<u64>(), 0, "{counts:?}");
    // Tombstones expire after `TOMBSTONE_DAYS`, in a later prune.
    let expiry = pruned_at + chrono::Duration::days(sendgate::store::TOMBSTONE_DAYS + 1);
    assert_eq!(store.prune(expiry, 100).expect("prune"), 0);
    let again = action_line("old", "c1", "a1", "message") + "\n";
    let a = applied(&store, "late.jsonl", &again, expiry);
    assert_eq!((a.actions, a.duplicates), (1, 0));
}

/// Count actions per state by reading them all.
fn recount(store: &Store) -> [u64; 7] {
    let mut c = [0u64; 7];
    for a in store.actions().expect("actions") {
        c[a.state.index()] += 1;
    }
    c
}

#[test]
fn pruning_keeps_the_state_counts_right_whatever_operation_fails() {
    let then = utc(NOW);
    let later = then + chrono::Duration::days(31);
    let settings = || Settings {
        retention_days: 30,
        fsync: false,
        ..Settings::default()
    };
    for fail_at in 1..12 {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path(), settings());
            let mut text = format!("{}\n{}\n", account_line("a1", ""), campaign_line("c1", 10, ""));
            for i in 0..3 {
                text += &(action_line(&format!("m{i}"), "c1", "a1", "message") + "\n");
            }
            apply(&store, "f.jsonl", &text, then);
            let ids: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
            store.reserve(&ids, then).expect("reserve");
            let done: Vec<_> = ids.iter().map(|id| (id.clone(), Outcome::Sent, 0)).collect();
            store.record(&done, then).expect("record");
        }
        {
            let opts = OpenOptions {
                fail_from_op: Some(fail_at),
                ..OpenOptions::default()
            };
            if let Ok(store) = common::open_with(&dir.path().join("store"), settings(), opts) {
                let _ = store.prune(later, 100);
            }
        }
        let store = open(dir.path(), settings());
        assert_eq!(
            store.state_counts().expect("counts"),
            recount(&store),
            "a fault at operation {fail_at}"
        );
    }
}

#[test]
fn picking_an_account_skips_restricted_and_held_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let now = utc(NOW);
    // a1 has the most budget, a3 the least: the old rule picks a1.
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        account_line("a1", r#","caps":{"messages":80}"#),
        account_line("a2", r#","caps":{"messages":60}"#),
        account_line("a3", r#","caps":{"messages":10}"#),
        campaign_line("c1", 50, r#","accounts":["a1","a2","a3"]"#),
        action_line("hold-a2", "c1", "a2", "message"),
    );
    apply(&store, "f.jsonl", &text, now);
    // a2 gets a 429 (held until its next window), a1 is restricted.
    store.reserve(&["hold-a2".to_string()], now).expect("reserve");
    store
        .record(
            &[(
                "hold-a2".to_string(),
                Outcome::RateLimited { retry_after_s: None },
                0,
            )],
            now,
        )
        .expect("record");
    apply(
        &store,
        "restrict.jsonl",
        r#"{"type":"event","kind":"account_restricted","account":"a1"}"#,
        now,
    );
    let unnamed = |id: &str| {
        format!(
            r#"{{"type":"action","id":"{id}","campaign":"c1","kind":"message","prospect":"https://www.linkedin.com/in/{id}","payload":{{}}}}"#
        )
    };
    apply(&store, "p1.jsonl", &unnamed("p1"), now);
    assert_eq!(
        store.action("p1").expect("read").map(|a| a.account),
        Some("a3".into())
    );
    // With a3 restricted too, only the held a2 is left: its hold ends by itself.
    apply(
        &store,
        "restrict3.jsonl",
        r#"{"type":"event","kind":"account_restricted","account":"a3"}"#,
        now,
    );
    apply(&store, "p2.jsonl", &unnamed("p2"), now);
    assert_eq!(
        store.action("p2").expect("read").map(|a| a.account),
        Some("a2".into())
    );
    // Every account restricted: the line is rejected, naming the field.
    apply(
        &store,
        "restrict2.jsonl",
        r#"{"type":"event","kind":"account_restricted","account":"a2"}"#,
        now,
    );
    let text = unnamed("p3");
    parse_file("p3.jsonl", text.as_bytes()).expect("valid");
    match store.apply("p3.jsonl", text.as_bytes(), now).expect("store") {
        ApplyOutcome::Rejected(r) => {
            assert_eq!((r.line, r.field.as_str()), (1, "account"));
            assert!(r.reason.contains("restricted"), "{}", r.reason);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ramp_changed_and_red_zone_are_logged_once_per_change() {
    use sendgate::store::Change;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let now = utc(NOW);
    let account = |extra: &str| {
        format!(
            r#"{{"type":"account","id":"a1","tier":"sales_navigator_core","caps":{{"invites":95}}{extra}}}"#
        )
    };
    let ramp = |a: &sendgate::store::Applied| -> Vec<(u32, u32)> {
        a.changes
            .iter()
            .filter_map(|c| match c {
                Change::RampChanged { old, new, .. } => Some((*old, *new)),
                _ => None,
            })
            .collect()
    };
    let red = |a: &sendgate::store::Applied| -> Vec<(&'static str, u32)> {
        a.changes
            .iter()
            .filter_map(|c| match c {
                Change::RedZone { counter, value, .. } => Some((*counter, *value)),
                _ => None,
            })
            .collect()
    };
    let a = applied(&store, "new.jsonl", &account(""), now);
    assert_eq!(red(&a), vec![("invites", 95)]);
    assert!(ramp(&a).is_empty(), "a new account starts its ramp, no change");
    // The same record again: the value is not new, nothing is logged.
    let a = applied(&store, "same.jsonl", &(account("") + "\n"), now);
    assert!(red(&a).is_empty(), "{:?}", a.changes);
    // `established: true` lifts the ramp to the target: logged.
    let a = applied(&store, "est.jsonl", &account(r#","established":true"#), now);
    assert_eq!(ramp(&a), vec![(10, 95)]);
    assert!(red(&a).is_empty());
    let acct = store.account("a1").expect("read").expect("exists");
    assert_eq!(acct.ramp_ceiling, 95);
    // A new red-zone value is logged again.
    let a = applied(
        &store,
        "more.jsonl",
        r#"{"type":"account","id":"a1","caps":{"invites":96}}"#,
        now,
    );
    assert_eq!(red(&a), vec![("invites", 96)]);
}

/// SPEC §3.2, one row per tier: (tier, invite ceiling / day, InMail credits / month,
/// InMail balance ceiling). Checked through the store: the invites an established
/// account may reserve in a day, its starting balance, and its balance after two
/// years of refills.
#[test]
fn every_tier_row_of_the_spec() {
    let rows = [
        ("free", 20, 0, 0),
        ("premium_career", 80, 5, 15),
        ("premium_business", 80, 15, 45),
        ("sales_navigator_core", 100, 50, 150),
        ("sales_navigator_advanced", 100, 50, 150),
        ("recruiter_lite", 100, 30, 120),
        ("recruiter", 100, 150, 600),
    ];
    for (tier, invites, monthly, ceiling) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(
            dir.path(),
            Settings {
                fsync: false,
                ..Settings::default()
            },
        );
        let now = utc(NOW);
        let acct = format!(
            r#"{{"type":"account","id":"a1","tier":"{tier}","timezone":"UTC","window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"established":true,"caps":{{"invites":150}}}}"#
        );
        let mut text = format!("{acct}\n{}\n", campaign_line("c1", 1000, ""));
        for i in 0..110 {
            text += &(action_line(&format!("i{i:03}"), "c1", "a1", "invite") + "\n");
        }
        text += &(action_line("m", "c1", "a1", "message") + "\n");
        apply(&store, "f.jsonl", &text, now);
        let a = store.account("a1").expect("read").expect("exists");
        assert_eq!(a.credits, monthly, "{tier}: starting InMail credits");
        let ids: Vec<String> = (0..110).map(|i| format!("i{i:03}")).collect();
        let (results, _) = store.reserve(&ids, now).expect("reserve");
        let reserved = results
            .iter()
            .filter(|r| matches!(r, ReserveResult::Reserved(_)))
            .count();
        assert_eq!(reserved, invites, "{tier}: invites a day");
        // Two years on, a reservation runs the refills: the balance stops at the
        // ceiling (unused credits roll over up to it).
        let later = now + chrono::Duration::days(730);
        store.reserve(&["m".to_string()], later).expect("reserve");
        let a = store.account("a1").expect("read").expect("exists");
        assert_eq!(a.credits, ceiling, "{tier}: InMail balance ceiling");
    }
}

/// A closed store where account `a1` reserved two messages of campaign `c1`, five
/// minutes apart, and the audit is clean: the overlap tests then edit its ledger.
fn two_messages_reserved_five_minutes_apart() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc(NOW);
    let store = open(dir.path(), Settings::default());
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", 10, ""),
        action_line("x0", "c1", "a1", "message"),
        action_line("x1", "c1", "a1", "message"),
    );
    apply(&store, "f.jsonl", &text, now);
    store.reserve(&["x0".to_string()], now).expect("reserve");
    let later = now + chrono::Duration::minutes(5);
    store.reserve(&["x1".to_string()], later).expect("reserve");
    assert!(store.audit(None, None).expect("audit").clean());
    dir
}

#[test]
fn audit_reports_days_that_overlap_in_real_time() {
    use sendgate::store::codec::{decode, encode};
    use sendgate::store::records::LedgerReservations;
    let dir = two_messages_reserved_five_minutes_apart();
    // The later reservation claims the day before: what a zone change that reopened
    // an earlier date used to write.
    {
        let db = raw_sled(&dir.path().join("store"));
        let ledger = db.open_tree("ledger").expect("ledger");
        let (k, v) = ledger.last().expect("read").expect("an entry");
        let mut b: LedgerReservations = decode("ledger reservations", &v).expect("decodes");
        let e = b.entries.last_mut().expect("an entry");
        e.account_day = e.account_day.pred_opt().expect("a day before");
        ledger.insert(k, encode(&b)).expect("write");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), Settings::default());
    let audit = store.audit(None, None).expect("audit");
    assert!(
        audit.mismatches.iter().any(|m| m.contains("days overlap")),
        "{audit:?}"
    );
}

#[test]
fn a_campaigns_zone_change_is_stored_pending_and_folded_in_once_in_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc(NOW);
    let store = open(dir.path(), Settings::default());
    apply(&store, "f.jsonl", &(campaign_line("c1", 3, "") + "\n"), now);
    let moved = r#"{"type":"campaign","id":"c1","timezone":"Etc/GMT-14"}"#.to_string() + "\n";
    apply(&store, "g.jsonl", &moved, now);
    let c = store.campaign("c1").expect("read").expect("exists");
    let from = c.pending_zone.as_ref().expect("a pending change").from_ms;
    assert_eq!(c.timezone, "UTC", "the zone in force until the UTC day ends");
    assert_eq!(c.day_at(now), now.date_naive());
    let from = sendgate::store::codec::from_ms(from);
    assert!(from > now, "{from}");
    // Before the change is in force there is nothing to fold; after, it is folded in
    // once, and the campaign's days read the same.
    let before = store.settle_campaigns(from - chrono::Duration::seconds(1), 100);
    assert_eq!(before.expect("settles"), 0);
    let day = c.day_at(from);
    assert_eq!(store.settle_campaigns(from, 100).expect("settles"), 1);
    let c = store.campaign("c1").expect("read").expect("exists");
    assert_eq!(
        (c.timezone.as_str(), c.pending_zone.as_ref()),
        ("Etc/GMT-14", None)
    );
    assert_eq!(c.day_at(from), day);
    assert_eq!(store.settle_campaigns(from, 100).expect("settles"), 0);
}

#[test]
fn audit_reports_campaign_days_that_overlap_in_real_time() {
    use sendgate::policy::caps::CampaignDay;
    use sendgate::store::codec::{decode, encode};
    use sendgate::store::records::LedgerReservations;
    let dir = two_messages_reserved_five_minutes_apart();
    // The later reservation counts on the campaign's day before, the account's day
    // unchanged: what a campaign zone change that reopened an earlier date wrote. The
    // day's counters move with it, so only the overlap is wrong.
    {
        let db = raw_sled(&dir.path().join("store"));
        let ledger = db.open_tree("ledger").expect("ledger");
        let (k, v) = ledger.last().expect("read").expect("an entry");
        let mut b: LedgerReservations = decode("ledger reservations", &v).expect("decodes");
        let e = b.entries.last_mut().expect("an entry");
        let day = e.campaign_day;
        e.campaign_day = day.pred_opt().expect("a day before");
        let (c, d) = (e.campaign.clone(), e.campaign_day);
        ledger.insert(k, encode(&b)).expect("write");
        let days = db.open_tree("days").expect("days");
        let today_key = sendgate::store::codec::campaign_day_key(&c, day);
        let mut today: CampaignDay = decode(
            "campaign day",
            &days.get(&today_key).expect("read").expect("today"),
        )
        .expect("decodes");
        today.messages -= 1;
        days.insert(today_key, encode(&today)).expect("write");
        let one = CampaignDay {
            messages: 1,
            ..CampaignDay::default()
        };
        days.insert(sendgate::store::codec::campaign_day_key(&c, d), encode(&one))
            .expect("write");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), Settings::default());
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.overshoots.is_empty(), "{audit:?}");
    let overlaps: Vec<&String> = audit
        .mismatches
        .iter()
        .filter(|m| m.contains("days overlap"))
        .collect();
    assert_eq!(overlaps.len(), 1, "{audit:?}");
    assert!(overlaps[0].starts_with("campaign c1 "), "{audit:?}");
    assert!(!audit.clean());
}

// ---- a clean close leaves sled a snapshot (start-up time, BENCHMARKS.md Scale) ----

/// sled's snapshot files in `store`, by name (`snap.<lsn>`: the log position it covers).
fn snapshots(store: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .expect("read store dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap."))
        .collect();
    names.sort();
    names
}

#[test]
fn a_clean_close_leaves_a_snapshot_so_the_next_open_replays_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let path = dir.path().join("store");
    let backlog = |prefix: &str| {
        let mut text = format!("{}\n{}\n", account_line("a1", ""), campaign_line("c1", 1000, ""));
        for i in 0..200 {
            text.push_str(&action_line(&format!("{prefix}{i}"), "c1", "a1", "message"));
            text.push('\n');
        }
        text
    };
    // The control: written and dropped, the next open replays the log and snapshots
    // where it got to, so the snapshot moves.
    let s = open(dir.path(), Settings::default());
    apply(&s, "1.jsonl", &backlog("x"), now);
    s.make_durable().expect("durable");
    drop(s);
    let before = snapshots(&path);
    let s = open(dir.path(), Settings::default());
    let after = snapshots(&path);
    assert_ne!(
        before, after,
        "an open after a plain drop replays the log and writes a new snapshot"
    );
    // Written and closed: the close snapshots the tip, the next open has nothing to replay.
    apply(&s, "2.jsonl", &backlog("y"), now);
    s.close().expect("clean close");
    let closed = snapshots(&path);
    assert_eq!(closed.len(), 1, "one snapshot, the old ones removed: {closed:?}");
    assert_ne!(closed, after, "the close wrote a snapshot of the new tip");
    let s = open(dir.path(), Settings::default());
    assert_eq!(
        snapshots(&path),
        closed,
        "nothing was replayed, so no new snapshot"
    );
    // And the data is whole.
    let queued = s.state_counts().expect("counts")[State::Queued.index()];
    assert_eq!(queued, 400, "every action of both files is there");
    assert!(s.action("y199").expect("read").is_some());
}

/// A kill while sled writes the snapshot it takes at every open leaves
/// `snap.<lsn>.generating` behind, empty or torn. sled 0.34 lists it as the newest
/// snapshot and refuses to open ("corrupted data"), at every start from then on: seen once
/// in 3,000 SIGKILLs of the release crash harness, exit 74 at the next start. The file
/// was never renamed, so it never was a snapshot: the store opens as if it were not there.
#[test]
fn a_snapshot_a_kill_left_unfinished_does_not_stop_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let path = dir.path().join("store");
    let mut text = format!("{}\n{}\n", account_line("a1", ""), campaign_line("c1", 1000, ""));
    for i in 0..50 {
        text.push_str(&action_line(&format!("x{i}"), "c1", "a1", "message"));
        text.push('\n');
    }
    let s = open(dir.path(), Settings::default());
    apply(&s, "1.jsonl", &text, now);
    s.close().expect("clean close");
    let done = snapshots(&path);
    assert_eq!(done.len(), 1, "{done:?}");
    // Cut at the first byte (the same lsn, so it sorts after the finished one) and torn
    // part way (a later lsn).
    let empty = format!("{}.generating", done[0]);
    let torn = "snap.7FFFFFFFFFFFFFFF.generating".to_string();
    std::fs::write(path.join(&empty), b"").expect("write");
    std::fs::write(path.join(&torn), [0x5a; 40]).expect("write");
    for (name, unfinished) in [
        (empty.as_str(), true),
        (torn.as_str(), true),
        (done[0].as_str(), false),
        ("snap..generating", false),
        ("snap.00AB.generating.old", false),
    ] {
        assert_eq!(identity::is_unfinished_snapshot(name), unfinished, "{name}");
    }
    let s = open(dir.path(), Settings::default());
    assert_eq!(
        snapshots(&path),
        done,
        "the unfinished snapshots are gone, the finished one stays"
    );
    assert_eq!(s.state_counts().expect("counts")[State::Queued.index()], 50);
    assert!(s.action("x49").expect("read").is_some());
}

/// The repair never touches a store another process holds: its snapshot may be the one
/// being written.
#[test]
fn an_unfinished_snapshot_of_a_held_store_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let held = open(dir.path(), Settings::default());
    let name = "snap.7FFFFFFFFFFFFFFF.generating";
    std::fs::write(path.join(name), b"").expect("write");
    match Store::open(&path, Settings::default(), OpenOptions::default()) {
        Err(StoreError::Locked { .. }) => {}
        Err(e) => panic!("expected the store to be reported locked, got {e}"),
        Ok(_) => panic!("a second handle opened a held store"),
    }
    assert!(path.join(name).exists(), "a held store's file was removed");
    drop(held);
}

/// An ordinary answer needs to survive the process, not a power cut (SPEC §5: lost, it
/// reads `unknown`). It rides on the next reservation's durable commit, so sending one
/// action at a time costs one sled flush per action, not two; an answer that holds or
/// stops an account is still made durable before `record` returns.
#[test]
fn an_ordinary_answer_is_flushed_with_the_next_reservation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let now = utc(NOW);
    let mut text = format!("{}\n{}\n", account_line("a1", ""), campaign_line("c1", 10, ""));
    for i in 0..4 {
        text.push_str(&action_line(&format!("x{i}"), "c1", "a1", "message"));
        text.push('\n');
    }
    apply(&store, "f.jsonl", &text, now);
    let reserve = |id: &str| {
        let (r, _) = store.reserve(&[id.to_string()], now).expect("reserve");
        assert!(matches!(r[0], ReserveResult::Reserved(_)), "{r:?}");
    };
    reserve("x0");
    let before = store.flushes();
    assert!(!store.unsettled(), "a reservation leaves nothing waiting");
    store
        .record(&[("x0".to_string(), Outcome::Sent, 0)], now)
        .expect("record");
    assert_eq!(store.flushes(), before, "a sent answer waits for the next flush");
    assert!(store.unsettled());
    assert_eq!(
        store.action("x0").expect("read").map(|a| a.state),
        Some(State::Sent)
    );
    reserve("x1");
    assert_eq!(
        store.flushes(),
        before + 1,
        "one flush carries the answer and the reservation"
    );
    assert!(!store.unsettled());
    store
        .record(&[("x1".to_string(), Outcome::Sent, 0)], now)
        .expect("record");
    store.settle().expect("settle");
    assert_eq!(store.flushes(), before + 2, "settle flushes what waits");
    store.settle().expect("settle");
    assert_eq!(store.flushes(), before + 2, "and nothing when nothing waits");
    // A rate limit holds the account: durable before `record` returns.
    reserve("x2");
    let durable = store.durable_times().histogram().count;
    store
        .record(
            &[("x2".to_string(), Outcome::RateLimited { retry_after_s: None }, 0)],
            now,
        )
        .expect("record");
    assert_eq!(
        store.durable_times().histogram().count,
        durable + 1,
        "a rate limit is made durable at once"
    );
    assert!(!store.unsettled());
}
