//! Poison files (SPEC 6): a job file whose apply kills the worker is not tried a third
//! time. The worker runs the real binary under an address-space limit (`setrlimit`,
//! as `prlimit --as` or a small VPS would impose) that a big, valid file exceeds: the
//! apply itself is bounded (chunks), but a `.json` document is parsed whole, so it is
//! read whole, and this one is bigger than the room the limit leaves. The worker aborts
//! on allocation, the file stays in `processing/`, and without the quarantine every
//! restart would abort again. Deciding to quarantine must not read the file whole
//! either (it hashes it block by block). A JSON Lines file of the same size is read a
//! chunk at a time, and applies under the same limit.

mod common;

use common::worker::{wait_until, Worker};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("sendgate.toml");
    let text = format!(
        "[store]\npath = \"{d}/store\"\nfsync = false\ncache_mb = 8\n[spool]\ndir = \"{d}/spool\"\nrescan_s = 1\nmax_file_bytes = 134217728\n\
         [upstream]\nkind = \"sim\"\n[status]\npath = \"{d}/status.json\"\nevery_s = 1\n",
        d = dir.display()
    );
    std::fs::write(&config, text).expect("write config");
    config
}

/// `sendgate run` with its address space limited to `limit` bytes (none: no limit).
fn worker(dir: &Path, config: &Path, limit: Option<u64>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"])
        .arg(config)
        .current_dir(dir)
        .env_remove("NOTIFY_SOCKET")
        // Fewer malloc arenas: the limit then measures the heap, not reserved arenas.
        .env("MALLOC_ARENA_MAX", "2");
    if let Some(limit) = limit {
        // SAFETY: only setrlimit(2) runs between fork and exec; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

fn spool(dir: &Path, sub: &str) -> PathBuf {
    dir.join("spool").join(sub)
}

fn drop_file(dir: &Path, name: &str, text: &str) {
    common::drop_job_file(&dir.join("spool"), name, text);
}

/// A valid `.json` document of `n` actions for one account and campaign of its own.
fn big_document(n: usize) -> String {
    let mut text = String::with_capacity(n * 260);
    text.push_str("{\"records\": [\n");
    text.push_str(&common::account_line("poison-acct", ""));
    text.push_str(",\n");
    text.push_str(&common::campaign_line("poison-camp", 20, ""));
    for i in 0..n {
        text.push_str(",\n");
        text.push_str(&common::action_line(
            &format!("p{i:07}"),
            "poison-camp",
            "poison-acct",
            "message",
        ));
    }
    text.push_str("\n]}\n");
    text
}

fn status_json(dir: &Path, config: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["status", "--json", "--config"])
        .arg(config)
        .current_dir(dir)
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// An address-space limit that leaves a worker `room` bytes above the peak it reaches
/// idle on this machine, with one small file applied (account `calm`).
fn limit_with_room(dir: &Path, config: &Path, room: u64) -> u64 {
    let idle = Worker::start(&mut worker(dir, config, None));
    drop_file(
        dir,
        "0-setup.jsonl",
        &format!("{}\n", common::account_line("calm", "")),
    );
    wait_until("the setup file applied", || {
        spool(dir, "done").join("0-setup.jsonl").exists()
    });
    let limit = common::proc_status_bytes(idle.child.id(), "VmPeak") + room;
    let (code, log) = idle.stop();
    assert_eq!(code, 0, "{log}");
    limit
}

#[test]
fn a_file_that_kills_the_worker_twice_is_quarantined_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());

    // The limit leaves 24 MiB of room, far less than the big document (about 100 MiB)
    // it must read whole (`spool.max_file_bytes` is raised to 128 MiB for it).
    let limit = limit_with_room(dir.path(), &config, 24 << 20);

    let big = big_document(600_000);
    assert!(big.len() > 96 << 20, "{} bytes", big.len());
    drop_file(dir.path(), "1-big.json", &big);
    let processing = spool(dir.path(), "processing").join("1-big.json");
    let mut killed = 0;
    for start in 1..=2 {
        let w = Worker::spawn(&mut worker(dir.path(), &config, Some(limit)));
        let (code, log) = w.wait_exit();
        assert_ne!(code, 0, "start {start}: the limit did not stop the apply:\n{log}");
        assert!(
            processing.exists(),
            "start {start}: the file left processing/ although the worker died:\n{log}"
        );
        assert!(
            !log.contains("file_quarantined"),
            "start {start} quarantined too early:\n{log}"
        );
        killed += 1;
    }
    assert_eq!(killed, 2);

    // The third start quarantines it and goes on: a later file is applied.
    let w = Worker::start(&mut worker(dir.path(), &config, Some(limit)));
    w.wait_for_log("file_quarantined");
    let rejected = spool(dir.path(), "rejected");
    wait_until("the file and its .error in rejected/", || {
        rejected.join("1-big.json").exists() && rejected.join("1-big.json.error").exists()
    });
    assert!(!processing.exists());
    let error = std::fs::read_to_string(rejected.join("1-big.json.error")).expect("an .error beside it");
    assert!(error.starts_with("1-big.json:"), "{error}");
    assert!(error.contains("2 start-ups in a row"), "{error}");
    drop_file(
        dir.path(),
        "2-after.jsonl",
        &format!("{}\n", common::account_line("later", "")),
    );
    wait_until("a later file applied", || {
        spool(dir.path(), "done").join("2-after.jsonl").exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("file_quarantined"))
        .expect("the quarantine is logged");
    assert!(line.contains("1-big.json"), "{line}");

    // Nothing of it was applied: its account is unknown, no action is queued.
    let status = status_json(dir.path(), &config);
    let accounts: Vec<&str> = status["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(accounts, ["calm", "later"], "{status}");
    assert_eq!(status["states"]["queued"], 0, "{status}");
}

#[test]
fn a_file_interrupted_once_is_applied_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    // The state a crash leaves: a claimed file in processing/, never applied.
    let w = Worker::start(&mut worker(dir.path(), &config, None));
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    std::fs::write(
        spool(dir.path(), "processing").join("1-once.jsonl"),
        format!("{}\n", common::account_line("once", "")),
    )
    .expect("write into processing/");

    let w = Worker::start(&mut worker(dir.path(), &config, None));
    wait_until("the leftover applied", || {
        spool(dir.path(), "done").join("1-once.jsonl").exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("file_quarantined"), "{log}");

    // A namesake interrupted later starts counting afresh: one crash is not two.
    std::fs::write(
        spool(dir.path(), "processing").join("1-once.jsonl"),
        format!("{}\n", common::account_line("twice", "")),
    )
    .expect("write into processing/");
    let w = Worker::start(&mut worker(dir.path(), &config, None));
    wait_until("the namesake applied", || {
        !spool(dir.path(), "processing").join("1-once.jsonl").exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("file_quarantined"), "{log}");
    assert!(!spool(dir.path(), "rejected").join("1-once.jsonl").exists());
}

/// The reverse of the poison: a JSON Lines file far bigger than the room the limit
/// leaves is read a chunk at a time (SPEC 6, big files), so it applies and the worker
/// goes on. Most of this one is blank lines, so that it is quick to apply; read whole,
/// it would abort the worker as the document above does.
#[test]
fn a_json_lines_file_bigger_than_the_memory_left_is_applied_a_chunk_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let limit = limit_with_room(dir.path(), &config, 24 << 20);

    let blanks = format!("{}\n", " ".repeat(127)).repeat(256);
    let mut big = String::with_capacity(100 << 20);
    big.push_str(&common::account_line("roomy-acct", ""));
    big.push('\n');
    big.push_str(&common::campaign_line("roomy-camp", 20, ""));
    big.push('\n');
    for i in 0..3_200 {
        big.push_str(&blanks);
        big.push_str(&common::action_line(
            &format!("r{i:05}"),
            "roomy-camp",
            "roomy-acct",
            "message",
        ));
        big.push('\n');
    }
    assert!(big.len() > 96 << 20, "{} bytes", big.len());
    drop_file(dir.path(), "1-big.jsonl", &big);
    drop(big);

    let w = Worker::start(&mut worker(dir.path(), &config, Some(limit)));
    wait_until("the big file applied", || {
        spool(dir.path(), "done").join("1-big.jsonl").exists()
    });
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("file_applied") && l.contains("1-big.jsonl"))
        .unwrap_or_else(|| panic!("file_applied for the big file:\n{log}"));
    assert!(line.contains("\"actions\":3200"), "{line}");
    assert!(!log.contains("file_quarantined"), "{log}");
}
