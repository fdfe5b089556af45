//! P2 seen from outside the worker: `strace` watches the real `sendgate run` and the
//! test checks, at every connection to the loopback upstream (the worker opens one per
//! attempt), that since the previous one the store's files were written and then
//! synced with `fdatasync`/`fsync`, with no store write left unsynced at the moment of
//! the connect: the reservation was durable before the call. The same check on a
//! worker with `store.fsync = false` must fail, so the observer can see the difference.
//! Skipped, with the reason, where `strace` is missing or cannot trace (no ptrace).

mod common;

use common::http::read_request;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const INVITES: usize = 4;
const SYSCALLS: &str = "fdatasync,fsync,sync_file_range,write,writev,pwrite64,pwritev,pwritev2,connect";

/// Why strace cannot be used here, if it cannot.
fn strace_unusable() -> Option<String> {
    match Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fdatasync", "-o", "/dev/null", "true"])
        .output()
    {
        Err(e) => Some(format!("strace is not installed ({e})")),
        Ok(out) if !out.status.success() => Some(format!(
            "strace cannot trace here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// A loopback upstream answering 200; returns its port and the keys it received.
fn upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = Arc::clone(&seen2);
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                let mut r = BufReader::new(conn);
                while let Some(req) = read_request(&mut r) {
                    seen.lock().expect("lock").push(req.key);
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// One traced event, in the order strace reported it.
#[derive(Debug, PartialEq)]
enum Traced {
    /// A write to a store file began.
    StoreWrite,
    /// An fdatasync/fsync of a store file completed.
    StoreSync,
    /// A connect to the upstream's port began.
    Connect,
}

/// The events of an `strace -f -y` log. A call interrupted by another thread's is
/// split into `name(args <unfinished ...>` and `<... name resumed>...`; a write or a
/// connect counts where it begins, a sync where it ends.
fn events(trace: &str, store: &str, port: u16) -> Vec<Traced> {
    let connect = format!("htons({port})");
    let mut pending_sync: std::collections::BTreeSet<String> = Default::default();
    let mut out = Vec::new();
    for line in trace.lines() {
        let (pid, call) = line.split_once(' ').unwrap_or(("", line));
        let call = call.trim_start();
        let is_sync = call.starts_with("fdatasync(") || call.starts_with("fsync(");
        let is_write = ["write(", "writev(", "pwrite64(", "pwritev(", "pwritev2("]
            .iter()
            .any(|p| call.starts_with(p));
        if call.starts_with("<... fdatasync resumed>") || call.starts_with("<... fsync resumed>") {
            if pending_sync.remove(pid) && call.contains(") = 0") {
                out.push(Traced::StoreSync);
            }
        } else if is_sync && call.contains(store) {
            if call.contains("<unfinished ...>") {
                pending_sync.insert(pid.to_string());
            } else if call.contains(") = 0") {
                out.push(Traced::StoreSync);
            }
        } else if is_write && call.contains(store) {
            out.push(Traced::StoreWrite);
        } else if call.starts_with("connect(") && call.contains(&connect) {
            out.push(Traced::Connect);
        }
    }
    out
}

/// P2 in the trace: before every connect, since the previous one, a store write and
/// then a sync, and no write after the last sync. `Err` names the first connect that
/// breaks it.
fn check(events: &[Traced]) -> Result<usize, String> {
    let (mut wrote, mut synced_after_write, mut connects) = (false, false, 0usize);
    for e in events {
        match e {
            Traced::StoreWrite => {
                wrote = true;
                synced_after_write = false;
            }
            Traced::StoreSync => synced_after_write = wrote || synced_after_write,
            Traced::Connect => {
                connects += 1;
                if !(wrote && synced_after_write) {
                    return Err(format!(
                        "connect #{connects} came {}",
                        if wrote {
                            "after a store write that was not synced"
                        } else {
                            "without a store write since the previous one"
                        }
                    ));
                }
                (wrote, synced_after_write) = (false, false);
            }
        }
    }
    Ok(connects)
}

#[test]
fn the_check_reads_traces_as_intended() {
    use Traced::*;
    assert_eq!(
        check(&[StoreWrite, StoreSync, Connect, StoreWrite, StoreSync, Connect]),
        Ok(2)
    );
    assert!(check(&[StoreWrite, Connect]).is_err(), "no sync");
    assert!(check(&[StoreSync, Connect]).is_err(), "no write");
    assert!(
        check(&[StoreWrite, StoreSync, StoreWrite, Connect]).is_err(),
        "unsynced write"
    );
    assert!(
        check(&[StoreWrite, StoreSync, Connect, Connect]).is_err(),
        "a second call on one sync"
    );
    let trace = "\
10 pwrite64(7</s/store/db>, \"x\", 1, 0) = 1
11 fdatasync(7</s/store/db> <unfinished ...>
10 write(2<pipe:[1]>, \"log\", 3) = 3
11 <... fdatasync resumed>) = 0
12 connect(9<TCP:[2]>, {sa_family=AF_INET, sin_port=htons(4242), sin_addr=inet_addr(\"127.0.0.1\")}, 16) = -1 EINPROGRESS
12 connect(9<TCP:[2]>, {sa_family=AF_INET, sin_port=htons(4243), sin_addr=inet_addr(\"127.0.0.1\")}, 16) = 0
";
    assert_eq!(
        events(trace, "/s/store/", 4242),
        vec![StoreWrite, StoreSync, Connect]
    );
}

/// Run the worker under strace with `fsync` on or off; the trace's events and the
/// number of requests the upstream received.
fn traced_run(dir: &Path, fsync: bool) -> (Vec<Traced>, usize) {
    let (port, seen) = upstream();
    let store = dir.join("store");
    let spool = dir.join("spool");
    for d in ["tmp", "incoming"] {
        std::fs::create_dir_all(spool.join(d)).expect("spool");
    }
    // The job files wait before the start: every store write after start-up belongs to
    // a reservation or an outcome.
    let mut text = format!(
        "{}\n{}\n",
        common::account_line("a1", ""),
        common::campaign_line("c1", 100, "")
    );
    for i in 0..INVITES {
        text += &common::action_line(&format!("i{i}"), "c1", "a1", "invite");
        text.push('\n');
    }
    std::fs::write(spool.join("incoming/001.jsonl"), text).expect("job file");
    let config = dir.join("sendgate.toml");
    // Sends 600–900 virtual seconds apart at 3600×: 170–250 ms of real time, one
    // reservation per dispatch.
    std::fs::write(
        &config,
        format!(
            r#"[store]
path = "{store}"
fsync = {fsync}
[spool]
dir = "{spool}"
[upstream]
kind = "http"
url = "http://127.0.0.1:{port}"
timeout_s = 5
[pacing]
min_gap_s = 600
max_gap_s = 900
[log]
format = "json"
[status]
path = "{status}"
[clock]
start = "2026-11-25T08:00:00Z"
speed = 3600.0
"#,
            store = store.display(),
            spool = spool.display(),
            status = dir.join("status.json").display(),
        ),
    )
    .expect("config");
    let trace = dir.join("trace.txt");
    let child = Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "0", "-e", &format!("trace={SYSCALLS}")])
        .args(["-e", "signal=none", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sendgate"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace sendgate");
    let start = Instant::now();
    while seen.lock().expect("lock").len() < INVITES {
        assert!(start.elapsed() < DEADLINE, "the traced worker did not send");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The worker is strace's child: stop it by its pid from the status file.
    let pid = loop {
        let status = std::fs::read_to_string(dir.join("status.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        if let Some(pid) = v["worker"]["pid"].as_i64() {
            break pid;
        }
        assert!(start.elapsed() < DEADLINE, "no status file");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) takes no pointers; the pid is the worker, strace's child, which
    // strace has not reaped (strace is still running).
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let out = child.wait_with_output().expect("strace ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&trace).expect("trace");
    let received = seen.lock().expect("lock").len();
    (events(&text, &format!("{}/", store.display()), port), received)
}

#[test]
fn every_upstream_call_follows_an_fdatasync_of_the_store() {
    if let Some(why) = strace_unusable() {
        println!("SKIPPED: every_upstream_call_follows_an_fdatasync_of_the_store: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (trace, received) = traced_run(dir.path(), true);
    let connects = check(&trace).unwrap_or_else(|e| panic!("fsync on: {e}: {trace:?}"));
    assert_eq!(connects, received, "one connect per request received");
    assert!(connects >= INVITES);
    // The control: without the extra sync the same observer sees the difference.
    let dir = tempfile::tempdir().expect("tempdir");
    let (trace, _) = traced_run(dir.path(), false);
    assert!(
        check(&trace).is_err(),
        "fsync off passes the check too, so it proves nothing: {trace:?}"
    );
    println!("P2 under strace: {connects} connects, each after a store write and its fdatasync");
}
