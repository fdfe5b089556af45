//! The spool under a running worker (SPEC §6), driven from outside the way an operator
//! or a clean-up job would: directories removed, unreadable files, names at the length
//! limit, identical re-drops, a file noticed through inotify alone, and files a killed
//! worker committed but never reported. The worker runs the real binary with the `sim`
//! upstream; the job files set up accounts and campaigns, and their few actions wait in
//! a paused campaign, so nothing is sent.

mod common;

use common::worker::{wait_until, Worker};
use sendgate::store::{Applied, ApplyOutcome, Begin, Settings, Store};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

/// Starts `sendgate run` on a config in `dir` with the given spool rescan period.
fn start_worker(dir: &Path, rescan_s: u64) -> Worker {
    start_worker_with(dir, rescan_s, |_| {})
}

fn start_worker_with(dir: &Path, rescan_s: u64, prepare: impl FnOnce(&mut Command)) -> Worker {
    let config = dir.join("sendgate.toml");
    let text = format!(
        "[store]\npath = \"{d}/store\"\nfsync = false\n[spool]\ndir = \"{d}/spool\"\nrescan_s = {rescan_s}\n\
         [upstream]\nkind = \"sim\"\n[status]\npath = \"{d}/status.json\"\nevery_s = 1\n",
        d = dir.display()
    );
    std::fs::write(&config, text).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .current_dir(dir)
        .env_remove("NOTIFY_SOCKET");
    prepare(&mut cmd);
    Worker::start(&mut cmd)
}

fn spool(dir: &Path, sub: &str) -> PathBuf {
    dir.join("spool").join(sub)
}

/// Drop a job file the way producers must: write in tmp/, rename into incoming/.
fn drop_file(dir: &Path, name: &str, text: &[u8]) {
    let tmp = spool(dir, "tmp").join(".dropping");
    std::fs::write(&tmp, text).expect("write job file");
    std::fs::rename(&tmp, spool(dir, "incoming").join(name)).expect("rename into incoming");
}

/// A valid file: an account `id` and a campaign, no actions.
fn setup(id: &str) -> String {
    format!(
        "{{\"type\":\"account\",\"id\":\"{id}\",\"tier\":\"free\",\"timezone\":\"UTC\"}}\n\
         {{\"type\":\"campaign\",\"id\":\"c-{id}\",\"daily_limit\":10}}\n"
    )
}

#[test]
fn removed_spool_directories_are_recreated_and_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_worker(dir.path(), 1);
    for (round, sub) in ["processing", "done", "rejected", "incoming"]
        .into_iter()
        .enumerate()
    {
        std::fs::remove_dir_all(spool(dir.path(), sub)).expect("remove a spool directory");
        // A removed incoming/ is noticed without any file arriving.
        wait_until(&format!("{sub}/ recreated"), || spool(dir.path(), sub).is_dir());
        let good = format!("{round}-good.jsonl");
        let bad = format!("{round}-bad.jsonl");
        drop_file(dir.path(), &good, setup(&format!("a{round}")).as_bytes());
        drop_file(dir.path(), &bad, b"{oops\n");
        wait_until(&format!("{good} done after {sub}/ was removed"), || {
            spool(dir.path(), "done").join(&good).exists()
        });
        wait_until(&format!("{bad} rejected after {sub}/ was removed"), || {
            spool(dir.path(), "rejected")
                .join(format!("{bad}.error"))
                .exists()
        });
        let path = spool(dir.path(), sub).display().to_string();
        let said = w
            .log()
            .lines()
            .any(|l| l.contains("\"event\":\"spool_error\"") && l.contains(&path));
        assert!(said, "no spool_error names {path}:\n{}", w.log());
    }
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// Runs `cmd` without the capabilities that let root read any file, so that mode 000
/// stops root too (CI runs as root). The spawn fails when this process may not drop them.
fn without_dac_override(cmd: &mut Command) {
    // SAFETY: `prctl` is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() != 0 {
                return Ok(());
            }
            // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
            for cap in [1, 2] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[test]
fn an_unreadable_file_is_rejected_and_a_fixed_namesake_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").expect("probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let mut cat = Command::new("cat");
    cat.arg(&probe).stdout(Stdio::null()).stderr(Stdio::null());
    without_dac_override(&mut cat);
    if cat.status().map_or(true, |s| s.success()) {
        eprintln!("skipped: this process cannot make a file unreadable to the worker");
        return;
    }
    let w = start_worker_with(dir.path(), 1, without_dac_override);
    let tmp = spool(dir.path(), "tmp").join(".locked");
    std::fs::write(&tmp, setup("a1")).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    std::fs::rename(&tmp, spool(dir.path(), "incoming/001.jsonl")).expect("drop");
    let error = spool(dir.path(), "rejected/001.jsonl.error");
    wait_until("the unreadable file rejected", || error.exists());
    let text = std::fs::read_to_string(&error).expect("read .error");
    assert!(
        text.contains("001.jsonl") && text.contains("ermission denied"),
        "{text}"
    );
    // The producer fixes the file and drops it again under the same name.
    drop_file(dir.path(), "001.jsonl", setup("a1").as_bytes());
    wait_until("the fixed namesake applied", || {
        spool(dir.path(), "done/001.jsonl").exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("\"event\":\"file_rejected\""), "{log}");
    assert!(log.contains("\"event\":\"file_applied\""), "{log}");
}

#[test]
fn names_of_251_to_255_bytes_never_get_stuck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_worker(dir.path(), 1);
    let names: Vec<String> = (251..=255).map(|len| format!("{:x<1$}", "n", len)).collect();
    let contents = |i: usize| {
        [
            b"{oops\n".to_vec(),
            b"{still bad\n".to_vec(),
            setup(&format!("a{i}")).into_bytes(),
            setup(&format!("b{i}")).into_bytes(),
        ]
    };
    for (i, name) in names.iter().enumerate() {
        // Rejected twice (so `.1` and `.error` both come into play), then applied twice.
        for (k, text) in contents(i).iter().enumerate() {
            drop_file(dir.path(), name, text);
            // Claimed after the long name (byte order), so done once that is through.
            let marker = format!("z{i}-{k}.jsonl");
            drop_file(dir.path(), &marker, setup(&format!("m{i}x{k}")).as_bytes());
            wait_until(&marker, || spool(dir.path(), "done").join(&marker).exists());
        }
    }
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    for sub in ["incoming", "processing"] {
        let left: Vec<_> = spool(dir.path(), sub).read_dir().expect("list").collect();
        assert!(left.is_empty(), "left in {sub}/: {left:?}\n{log}");
    }
    let rejected = spool(dir.path(), "rejected").read_dir().expect("list").count();
    assert_eq!(rejected, 4 * names.len(), "two files and two errors per name");
    let done = spool(dir.path(), "done").read_dir().expect("list").count();
    assert_eq!(done, 6 * names.len(), "two applies and four markers per name");
    assert_eq!(
        log.matches("\"event\":\"file_rejected\"").count(),
        2 * names.len(),
        "{log}"
    );
    assert_eq!(
        log.matches("\"event\":\"file_applied\"").count(),
        6 * names.len(),
        "{log}"
    );
    assert!(!log.contains("spool_error"), "{log}");
}

#[test]
fn an_identical_redrop_logs_file_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = start_worker(dir.path(), 1);
    drop_file(dir.path(), "001-setup.jsonl", setup("a1").as_bytes());
    wait_until("the first drop done", || {
        spool(dir.path(), "done/001-setup.jsonl").exists()
    });
    drop_file(dir.path(), "001-setup.jsonl", setup("a1").as_bytes());
    w.wait_for_log("\"event\":\"file_duplicate\"");
    wait_until("the re-drop moved to done/", || {
        spool(dir.path(), "done/001-setup.jsonl.1").exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.matches("\"event\":\"file_applied\"").count(), 1, "{log}");
    let dup = log
        .lines()
        .find(|l| l.contains("\"event\":\"file_duplicate\""))
        .expect("the duplicate line");
    assert!(dup.contains("001-setup.jsonl"), "names the file: {dup}");
}

#[test]
fn inotify_notices_a_file_without_the_rescan() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A rescan an hour away: only an inotify event can bring the file in.
    let w = start_worker(dir.path(), 3600);
    // Past the start-up pass.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    drop_file(dir.path(), "001-setup.jsonl", setup("a1").as_bytes());
    let done = spool(dir.path(), "done/001-setup.jsonl");
    while !done.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not applied within 5 s without a rescan:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// A file of every record kind, so that each count of `file_applied` is non-zero: an
/// account, a campaign, two actions, the second of them again (a duplicate), an event
/// (one that pauses the campaign: nothing is sent).
fn counted_file(id: &str) -> String {
    let action = |n: u32| common::action_line(&format!("{id}-{n}"), &format!("c-{id}"), id, "invite");
    [
        common::account_line(id, ""),
        common::campaign_line(&format!("c-{id}"), 10, ""),
        action(1),
        action(2),
        action(2),
        format!(r#"{{"type":"event","kind":"campaign_paused","campaign":"c-{id}"}}"#),
    ]
    .join("\n")
        + "\n"
}

/// The store of the worker in `dir`, opened through the library (no worker runs).
fn open_store(dir: &Path) -> Store {
    common::open(dir, Settings::default())
}

/// The counts a normal apply of `text` logs: applied to a scratch store of its own.
fn expected_counts(name: &str, text: &str) -> Applied {
    let scratch = tempfile::tempdir().expect("tempdir");
    let store = open_store(scratch.path());
    match store
        .apply(name, text.as_bytes(), chrono::Utc::now())
        .expect("store works")
    {
        ApplyOutcome::Applied(a) => a,
        other => panic!("{name} did not apply: {other:?}"),
    }
}

/// The JSON lines of `event` in `log` that name `file`.
fn file_lines(log: &str, event: &str, file: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event && v["file"] == file)
        .collect()
}

/// `file_applied` for `file` is logged exactly once in `log`, with the counts of
/// `a`, and no `file_duplicate` for it.
fn assert_reported_once(log: &str, file: &str, a: &Applied) {
    let lines = file_lines(log, "file_applied", file);
    assert_eq!(lines.len(), 1, "one file_applied for {file}:\n{log}");
    let counts: Vec<u64> = ["accounts", "campaigns", "actions", "duplicates", "events"]
        .iter()
        .map(|k| {
            lines[0][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} in {}", lines[0]))
        })
        .collect();
    let want = [a.accounts, a.campaigns, a.actions, a.duplicates, a.events].map(u64::from);
    assert_eq!(counts, want, "the counts of a normal apply: {}", lines[0]);
    assert!(
        file_lines(log, "file_duplicate", file).is_empty(),
        "{file} is no duplicate:\n{log}"
    );
}

/// The kill window of SPEC §6 staged from outside: `commit` applies `name` through the
/// store of `dir` (no worker runs, so nothing reports it), the file is left in spool
/// `sub/` as the kill found it, and a worker starts. Its log, once the file is in
/// `done/` and a `file_applied` was logged.
fn commit_kill_and_start(
    dir: &Path,
    name: &str,
    text: &str,
    sub: &str,
    commit: impl FnOnce(&Store),
) -> String {
    let store = open_store(dir);
    commit(&store);
    store.close().expect("close");
    std::fs::create_dir_all(spool(dir, sub)).expect("the spool directory");
    std::fs::write(spool(dir, sub).join(name), text).expect("the file as the kill left it");
    let w = start_worker(dir, 1);
    wait_until("the file in done/", || spool(dir, "done").join(name).exists());
    w.wait_for_log("\"event\":\"file_applied\"");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    log
}

/// Applies `text` as `name` whole: the commit and the publishing, not the report.
fn apply_whole(store: &Store, name: &str, text: &str) {
    match store.apply(name, text.as_bytes(), chrono::Utc::now()) {
        Ok(ApplyOutcome::Applied(_)) => {}
        other => panic!("{name}: {other:?}"),
    }
}

/// The crash window of SPEC §6: the worker committed a file (durably) and was killed
/// before it logged `file_applied` and moved the file. The next start reports it
/// applied, with its counts, once; a later start does not report it again; a genuine
/// second drop of it is a `file_duplicate`.
#[test]
fn a_file_committed_before_a_kill_is_reported_applied_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "001-crash.jsonl";
    let text = counted_file("r1");
    let want = expected_counts(name, &text);
    let counts = (
        want.accounts,
        want.campaigns,
        want.actions,
        want.duplicates,
        want.events,
    );
    assert_eq!(counts, (1, 1, 2, 1, 1), "every count of the file is exercised");
    let log = commit_kill_and_start(dir.path(), name, &text, "processing", |store| {
        apply_whole(store, name, &text)
    });
    assert_reported_once(&log, name, &want);
    assert!(!spool(dir.path(), "processing").join(name).exists());

    // Reported: the next start says nothing more of it; a second drop is a duplicate.
    let w = start_worker(dir.path(), 1);
    drop_file(dir.path(), name, text.as_bytes());
    w.wait_for_log("\"event\":\"file_duplicate\"");
    wait_until("the second drop moved to done/", || {
        spool(dir.path(), "done").join(format!("{name}.1")).exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(file_lines(&log, "file_applied", name).is_empty(), "{log}");
    assert_eq!(file_lines(&log, "file_duplicate", name).len(), 1, "{log}");
}

/// The same window when the kill came before the file's actions were published:
/// recovery at open publishes them, and the start-up reports the file applied.
#[test]
fn a_file_published_by_the_recovery_at_open_is_reported_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "001-half.jsonl";
    let text = counted_file("r2");
    let want = expected_counts(name, &text);
    let log = commit_kill_and_start(dir.path(), name, &text, "processing", |store| {
        let mut job = match store.begin_ingest(
            name,
            sendgate::store::Source::Bytes(text.as_bytes().to_vec()),
            chrono::Utc::now(),
        ) {
            Ok(Begin::Started(job)) => job,
            other => panic!("not started: {:?}", other.err()),
        };
        // Stage (one chunk), then commit; killed before anything is published.
        assert!(store.ingest_step(&mut job).expect("stage").is_none());
        assert!(store.ingest_step(&mut job).expect("commit").is_none());
        assert!(store.file_applied(name, text.as_bytes()).expect("read"));
        assert!(store.action("r2-1").expect("read").is_none(), "not published yet");
    });
    assert_reported_once(&log, name, &want);
    let store = open_store(dir.path());
    assert!(store.action("r2-2").expect("read").is_some(), "published at open");
}

/// Killed after the move to `done/` but before the line was logged: nothing is left in
/// `processing/`, and the start-up still reports the file applied, once.
#[test]
fn a_file_moved_to_done_before_its_line_is_reported_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "001-moved.jsonl";
    let text = counted_file("r3");
    let want = expected_counts(name, &text);
    let log = commit_kill_and_start(dir.path(), name, &text, "done", |store| {
        apply_whole(store, name, &text)
    });
    assert_reported_once(&log, name, &want);
    let done = spool(dir.path(), "done").read_dir().expect("list").count();
    assert_eq!(done, 1, "the file is not moved again");
}
