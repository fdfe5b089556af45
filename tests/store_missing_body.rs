//! A format-3 store whose `bodies` entry of an action is gone (a damaged store): every
//! command that reads that action (`show`, `list`, `status`) fails closed with the store error (exit 74), naming
//! the action and what is missing, and never panics; the worker logs `store_failed`
//! and exits 74 before any upstream call.

mod common;

use common::worker::Worker;
use common::{account_line, action_line, apply, campaign_line, cli, open, utc};
use sendgate::store::Settings;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Monday inside the default sending window.
const START: &str = "2026-03-02T10:00:00Z";

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("sendgate.toml");
    // Port 9 (discard) on loopback: nothing listens, and nothing must be sent anyway.
    let text = format!(
        r#"[store]
path = "{d}/store"
fsync = false
[spool]
dir = "{d}/spool"
[upstream]
kind = "http"
url = "http://127.0.0.1:9"
timeout_s = 2
[status]
path = "{d}/status.json"
[admin]
socket = "{d}/admin.sock"
[clock]
start = "{START}"
speed = 60.0
"#,
        d = dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A store with two due invites, `keep` and `lost`, and no body for `lost`.
fn damaged_store(dir: &Path) {
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    {
        let store = open(dir, settings);
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            account_line("a1", ""),
            campaign_line("c1", 10, ""),
            action_line("keep", "c1", "a1", "invite"),
            action_line("lost", "c1", "a1", "invite")
        );
        apply(&store, "f.jsonl", &text, utc("2026-03-02T09:00:00Z"));
    }
    let db = common::raw_sled(&dir.join("store"));
    let bodies = db.open_tree("bodies").expect("bodies");
    assert!(
        bodies.remove("lost").expect("remove").is_some(),
        "lost had a body"
    );
    db.flush().expect("flush");
}

#[test]
fn a_missing_body_fails_closed_naming_the_action_in_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    damaged_store(dir.path());
    let config = config(dir.path());
    for args in [
        &["show", "lost"][..],
        &["list", "--limit", "0"],
        &["status", "--json"],
    ] {
        let (code, out, err) = cli(&config, args);
        assert!(!err.contains("panicked"), "sendgate {args:?} panicked: {err}");
        assert_eq!(code, 74, "sendgate {args:?}: exit {code}\n{out}\n{err}");
        assert!(
            err.contains("\"lost\"") && err.contains("body is missing"),
            "sendgate {args:?} names the action and what is missing: {err}"
        );
    }
    // `audit` reads the ledger only: the damage is not its to see, and it still runs.
    let (code, _, err) = cli(&config, &["audit"]);
    assert_eq!(code, 0, "audit: {err}");
    // The healthy action still shows on its own.
    let (code, out, err) = cli(&config, &["show", "keep"]);
    assert_eq!(code, 0, "show keep: {err}");
    assert!(out.contains("keep"), "{out}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"]).arg(&config).current_dir(dir.path());
    let (code, log) = Worker::spawn(&mut cmd).wait_exit();
    assert!(!log.contains("panicked"), "the worker panicked:\n{log}");
    assert_eq!(code, 74, "the worker fails closed:\n{log}");
    let failed = log
        .lines()
        .find(|l| l.contains("store_failed"))
        .unwrap_or_else(|| panic!("no store_failed:\n{log}"));
    assert!(
        failed.contains("lost") && failed.contains("body is missing"),
        "store_failed names the action: {failed}"
    );
    assert!(!log.contains("action_sent"), "{log}");
}
