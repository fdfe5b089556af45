//! A full disk: on a small tmpfs (needs root to mount; skipped with the reason
//! otherwise) writes fail, the fatal error surfaces, nothing is admitted afterwards,
//! and after space returns the reopened store is consistent.

mod common;

use common::*;
use sendgate::contract::jobfile::parse_file;
use sendgate::store::{ApplyOutcome, OpenOptions, ReserveResult, Settings, State, Store, StoreError};
use std::path::Path;
use std::process::Command;

fn mount_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn remount(dir: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Queued before the disk fills and never reserved by the fill loop.
const SPARE: &str = "spare";

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_fails_closed_and_recovers_consistent() {
    let base = tempfile::tempdir().expect("tempdir");
    let mnt = base.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    if let Err(why) = mount_tmpfs(&mnt, "3m") {
        println!(
            "SKIPPED: a_full_disk_fails_closed_and_recovers_consistent needs to mount a tmpfs (root): {why}"
        );
        return;
    }
    let _guard = Unmount(&mnt);
    let now = utc("2026-11-25T12:00:00Z");
    let path = mnt.join("store");
    let settings = Settings::default();
    let store = match Store::open(
        &path,
        settings.clone(),
        OpenOptions {
            cache_mb: 8,
            fail_from_op: None,
            ..OpenOptions::default()
        },
    ) {
        Ok(s) => s,
        Err(e) => panic!("the store should open on an empty 3 MiB tmpfs: {e}"),
    };
    let caps = r#","caps":{"invites":10000,"messages":10000,"inmails":10000,"engagement":10000},"inmail_credits":10000"#;
    apply(
        &store,
        "setup.jsonl",
        &format!(
            "{}\n{}\n{}\n",
            account_line("a1", caps),
            campaign_line("c1", 100_000, ""),
            action_line(SPARE, "c1", "a1", "message")
        ),
        now,
    );
    let spare = store.action(SPARE).expect("read").expect("the spare action");
    assert_eq!(
        spare.state,
        State::Queued,
        "the spare action waits to be reserved"
    );
    // Fill the disk with job files of big payloads until the store fails.
    let mut failure: Option<StoreError> = None;
    let mut reserved = 0usize;
    'fill: for f in 0..10_000 {
        let mut text = String::new();
        for i in 0..20 {
            let id = format!("f{f}-{i}");
            text += &format!(
                r#"{{"type":"action","id":"{id}","campaign":"c1","account":"a1","kind":"message","prospect":"p-{id}","payload":{{"text":"{}"}}}}"#,
                "x".repeat(8000)
            );
            text.push('\n');
        }
        parse_file("f.jsonl", text.as_bytes()).expect("valid");
        match store.apply(&format!("f{f}.jsonl"), text.as_bytes(), now) {
            Ok(ApplyOutcome::Applied(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => {
                failure = Some(e);
                break 'fill;
            }
        }
        let ids: Vec<String> = (0..20).map(|i| format!("f{f}-{i}")).collect();
        match store.reserve(&ids, now) {
            Ok((r, _)) => {
                reserved += r
                    .iter()
                    .filter(|r| matches!(r, ReserveResult::Reserved(_)))
                    .count()
            }
            Err(e) => {
                failure = Some(e);
                break 'fill;
            }
        }
    }
    let failure = failure.expect("a 3 MiB disk fills up");
    assert_eq!(failure.exit_code(), 74, "{failure}");
    // Fail closed: a queued action, due and within every cap, is not admitted on the
    // full disk: the reservation fails with a store error.
    match store.reserve(&[SPARE.to_string()], now) {
        Err(e) => assert_eq!(e.exit_code(), 74, "{e}"),
        Ok((r, _)) => panic!("a reservation was answered after the disk filled: {r:?}"),
    }
    drop(store);
    assert!(remount(&mnt, "64m"), "space returns");
    let store = Store::open(&path, settings, OpenOptions::default()).expect("reopens once space returns");
    store.recover(now).expect("recover");
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert!(
        audit.entries as usize >= reserved,
        "durable reservations survived: {} < {reserved}",
        audit.entries
    );
    println!("full disk: failed with `{failure}` after {reserved} reservations; reopened clean");
}
