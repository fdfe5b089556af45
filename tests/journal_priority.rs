//! SPEC §11: when standard error is the journal, every line carries its syslog priority
//! as a `<N>` prefix, which journald keeps as the line's priority, so `journalctl -p
//! warning` finds warnings and errors. journald itself does not run here: the test
//! hands the real binary a pipe as standard error and names that pipe in
//! `JOURNAL_STREAM` (device:inode), exactly as systemd names its stream socket.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and belong to nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn run_with_stderr(dir: &Path, journal_stream: Option<String>) -> Vec<String> {
    let config = dir.join("sendgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{d}/store\"\nfsync = false\n[spool]\ndir = \"{d}/spool\"\nrescan_s = 1\n\
             [upstream]\nkind = \"sim\"\n[status]\npath = \"{d}/status.json\"\nevery_s = 1\n",
            d = dir.display()
        ),
    )
    .expect("write config");
    let (read, write) = pipe();
    let meta = std::fs::File::from(write.try_clone().expect("dup"))
        .metadata()
        .expect("fstat");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write));
    if let Some(js) = journal_stream.map(|f| {
        f.replace("{dev}", &meta.dev().to_string())
            .replace("{ino}", &meta.ino().to_string())
    }) {
        cmd.env("JOURNAL_STREAM", js);
    }
    let mut child = cmd.spawn().expect("start sendgate");
    drop(cmd); // our copy of the write end: the reader sees EOF when the worker exits
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::fs::File::from(read);
    assert!(reader.as_raw_fd() >= 0);
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dropped = false;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) else {
            if !dropped && lines.iter().any(|l: &String| l.contains("worker_started")) {
                // A file that is not JSON: rejected, a warning.
                let tmp = dir.join("spool/tmp/bad");
                std::fs::write(&tmp, "not json\n").expect("write bad file");
                std::fs::rename(&tmp, dir.join("spool/incoming/bad.jsonl")).expect("rename");
                dropped = true;
            }
            continue;
        };
        let done = line.contains("file_rejected");
        lines.push(line);
        if done {
            break;
        }
    }
    common_stop(&mut child);
    lines
}

fn common_stop(child: &mut std::process::Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn on_the_journal_each_line_carries_its_syslog_priority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = run_with_stderr(dir.path(), Some("{dev}:{ino}".into()));
    let started = lines
        .iter()
        .find(|l| l.contains("worker_started"))
        .expect("worker_started");
    assert!(started.starts_with("<6>{"), "info is priority 6: {started}");
    let rejected = lines
        .iter()
        .find(|l| l.contains("file_rejected"))
        .expect("file_rejected");
    assert!(
        rejected.starts_with("<4>{"),
        "a warning is priority 4: {rejected}"
    );
    assert!(lines.iter().all(|l| l.starts_with('<')), "every line: {lines:?}");
}

#[test]
fn elsewhere_lines_carry_no_prefix() {
    // Not the journal: no variable, or one naming another stream.
    for js in [None, Some("1:1".to_string())] {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = run_with_stderr(dir.path(), js.clone());
        assert!(
            lines.iter().any(|l| l.contains("file_rejected")),
            "{js:?}: {lines:?}"
        );
        assert!(lines.iter().all(|l| l.starts_with('{')), "{js:?}: {lines:?}");
    }
}
