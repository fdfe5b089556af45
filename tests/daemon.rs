//! `sendgate run` as an operator runs it: the real binary, a spool directory, and a
//! loopback HTTP upstream this test runs itself. Virtual time runs 3600× faster
//! (`[clock] speed`), so a few real seconds cover hours of a sending day.

mod common;

use common::http::{read_request, HttpRequest};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait in this file gives up after this long.
const DEADLINE: Duration = Duration::from_secs(30);

type Request = HttpRequest;

/// A loopback upstream: records requests, answers with `respond(n)` (1-based).
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Upstream {
    fn start(respond: impl Fn(usize) -> (u16, String) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let respond = Arc::new(respond);
        let (seen2, respond2) = (Arc::clone(&seen), Arc::clone(&respond));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (seen, respond) = (Arc::clone(&seen2), Arc::clone(&respond2));
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    while let Some(req) = read_request(&mut r) {
                        let n = {
                            let mut s = seen.lock().expect("lock");
                            s.push(req);
                            s.len()
                        };
                        let (status, body) = respond(n);
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream { url, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().expect("lock").clone()
    }
}

struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Worker {
    fn start(dir: &Path, config: &Path) -> Worker {
        let w = Worker::spawn(run_command(dir, config));
        w.wait_for_log("worker_started");
        w
    }

    /// Spawn `cmd` with its standard error collected; does not wait for anything.
    fn spawn(mut cmd: Command) -> Worker {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sendgate");
        let log: Arc<Mutex<String>> = Arc::default();
        let (stderr, log2) = (child.stderr.take().expect("stderr"), Arc::clone(&log));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let mut l = log2.lock().expect("lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        Worker { child, log }
    }

    /// Wait for the process to exit by itself: (exit code, its log).
    fn wait_exit(mut self) -> (i32, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(50)); // let the log reader drain
                return (status.code().unwrap_or(-1), self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the worker did not exit by itself:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < DEADLINE,
                "no `{needle}` in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    fn stop(mut self) -> (i32, String) {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(50)); // let the log reader drain
                return (status.code().unwrap_or(-1), self.log());
            }
            assert!(start.elapsed() < DEADLINE, "the worker did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_command(dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"]).arg(config).current_dir(dir);
    cmd
}

fn config(dir: &Path, upstream_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("sendgate.toml");
    let text = format!(
        r#"[store]
path = "{d}/store"
fsync = false
[spool]
dir = "{d}/spool"
rescan_s = 1
max_file_bytes = 8192
[upstream]
kind = "http"
url = "{upstream_url}"
timeout_s = 5
[pacing]
min_gap_s = 1
max_gap_s = 2
[status]
path = "{d}/status.json"
every_s = 1
[clock]
start = "2026-11-25T08:00:00Z"
speed = 3600.0
{extra}"#,
        d = dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Drop a job file the way producers must: write in tmp/, rename into incoming/.
fn drop_file(dir: &Path, name: &str, text: &[u8]) {
    let spool = dir.join("spool");
    let tmp = spool.join("tmp").join(name);
    std::fs::write(&tmp, text).expect("write job file");
    std::fs::rename(&tmp, spool.join("incoming").join(name)).expect("rename into incoming");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PROXY_SECRET: &str = "hunter2-do-not-log";

fn setup(invites_cap: u32) -> String {
    format!(
        concat!(
            r#"{{"type":"account","id":"a1","tier":"sales_navigator_core","timezone":"UTC","established":true,"#,
            r#""window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"#,
            r#""proxy":"http://user:{}@203.0.113.7:3128","caps":{{"invites":{}}}}}"#,
            "\n",
            r#"{{"type":"campaign","id":"c1","daily_limit":100}}"#,
            "\n"
        ),
        PROXY_SECRET, invites_cap
    )
}

fn invites(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"type":"action","id":"c1/p{i}/invite","campaign":"c1","account":"a1","kind":"invite","prospect":"https://www.linkedin.com/in/p{i}","payload":{{"note":"secret-payload-{i}"}}}}"#
            ) + "\n"
        })
        .collect()
}

#[test]
fn files_in_requests_out_caps_held_and_no_secret_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(5).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(20).as_bytes());
    wait_until("5 requests", || up.requests().len() >= 5);
    // Three more virtual hours of the same day: the cap holds.
    std::thread::sleep(Duration::from_secs(3));
    let reqs = up.requests();
    assert_eq!(
        reqs.len(),
        5,
        "the invite cap of 5 holds as counted by the server"
    );
    let mut keys: Vec<&str> = reqs.iter().map(|r| r.key.as_str()).collect();
    for r in &reqs {
        assert_eq!(r.body["id"], r.key.as_str(), "Idempotency-Key is the action id");
        for field in [
            "id", "account", "proxy", "campaign", "kind", "prospect", "payload", "attempt",
        ] {
            assert!(r.body.get(field).is_some(), "body lacks {field}: {}", r.body);
        }
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5, "no action sent twice");
    assert!(dir.path().join("spool/done/002-invites.jsonl").exists());
    let status = std::fs::read_to_string(dir.path().join("status.json")).expect("status file");
    assert!(status.contains("\"a1\""), "{status}");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "SIGTERM exits 0:\n{log}");
    assert!(log.contains("\"event\":\"action_sent\""), "{log}");
    assert!(log.contains("\"event\":\"cap_exhausted\""), "{log}");
    assert!(
        !log.contains(PROXY_SECRET),
        "the proxy password leaked into the log"
    );
    assert!(!log.contains("secret-payload"), "a payload leaked into the log");
    // The store agrees: audit is clean.
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["audit", "--config"])
        .arg(&cfg)
        .output()
        .expect("audit");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_429_stops_the_account_for_the_rest_of_its_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|n| {
        if n == 2 {
            (429, String::new())
        } else {
            (200, "{}".into())
        }
    });
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    w.wait_for_log("\"event\":\"rate_limited\"");
    // Four more virtual hours of the same local day: nothing more goes out.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(up.requests().len(), 2, "no retry and no other send that day");
    let (code, log) = w.stop();
    assert_eq!(code, 0);
    assert!(log.contains("\"event\":\"account_held\""), "{log}");
    assert!(
        log.contains("2026-11-26T00:00:00"),
        "held until the next window opening:\n{log}"
    );
}

#[test]
fn hostile_files_are_rejected_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    drop_file(dir.path(), "000-setup.jsonl", setup(80).as_bytes());
    drop_file(
        dir.path(),
        "001-bad-json.jsonl",
        b"{\"type\":\"campaign\",\"id\":\"x\",\"daily_limit\":1}\n{oops\n",
    );
    drop_file(
        dir.path(),
        "002-unknown-field.jsonl",
        b"{\"type\":\"campaign\",\"id\":\"y\",\"daily_limt\":1}\n",
    );
    let unknown_campaign = invites(1).replace("\"campaign\":\"c1\"", "\"campaign\":\"nope\"");
    drop_file(
        dir.path(),
        "003-unknown-campaign.jsonl",
        unknown_campaign.as_bytes(),
    );
    drop_file(
        dir.path(),
        "004-junk.jsonl",
        &[0xff, 0x00, 0xfe, 0x13, 0x37, b'\n', 0x80],
    );
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("spool/incoming/005-link.jsonl"))
        .expect("symlink");
    drop_file(dir.path(), "006-oversize.jsonl", &vec![b' '; 9000]);
    drop_file(dir.path(), "007-good.jsonl", invites(2).as_bytes());
    let done = dir.path().join("spool/done/007-good.jsonl");
    wait_until("the good file after the bad ones", || done.exists());
    let rejected = dir.path().join("spool/rejected");
    for (name, needle) in [
        ("001-bad-json.jsonl", ":2: field `record`"),
        ("002-unknown-field.jsonl", "daily_limt"),
        ("003-unknown-campaign.jsonl", "unknown campaign"),
        ("004-junk.jsonl", "UTF-8"),
        ("005-link.jsonl", "symbolic link"),
        ("006-oversize.jsonl", "8192"),
    ] {
        assert!(
            rejected.join(name).symlink_metadata().is_ok(),
            "{name} not in rejected/"
        );
        let error = std::fs::read_to_string(rejected.join(format!("{name}.error"))).expect("an .error file");
        assert!(error.contains(needle), "{name}.error lacks `{needle}`: {error}");
    }
    assert!(dir.path().join("spool/done/000-setup.jsonl").exists());
    wait_until("the good file's sends", || up.requests().len() >= 2);
    let (code, log) = w.stop();
    assert_eq!(code, 0);
    assert_eq!(log.matches("\"event\":\"file_rejected\"").count(), 6, "{log}");
}

#[test]
fn a_second_worker_on_the_same_store_exits_74() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("second worker");
    assert_eq!(
        out.status.code(),
        Some(74),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(10), "exits at once");
    assert!(String::from_utf8_lossy(&out.stderr).contains("store_failed"));
    // `status` reads the running worker's status file instead.
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .expect("status");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("worker status file"));
    assert_eq!(w.stop().0, 0);
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    std::fs::write(&cfg, "[caps]\ninvitez = 3\n").expect("break the config");
    w.signal("HUP");
    w.wait_for_log("config_rejected");
    drop_file(dir.path(), "001-setup.jsonl", setup(3).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(5).as_bytes());
    wait_until("sends under the old config", || up.requests().len() >= 3);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("caps.invitez"),
        "the rejection names the key:\n{log}"
    );
}

/// Every file of the store, as bytes, for a search that does not trust the reader.
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut stack = vec![dir.join("store")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read store dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                all.extend(std::fs::read(&path).expect("read store file"));
            }
        }
    }
    all
}

#[test]
fn exec_details_with_credentials_reach_neither_the_log_nor_the_store() {
    const SECRET: &str = "PW-s3cr3t-77";
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("li-send.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >/dev/null\necho '{{\"outcome\":\"invalid\",\"detail\":\"bad proxy http://user:{SECRET}@host:8080\"}}'\n"
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let cfg = config(dir.path(), "http://127.0.0.1:9", "");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text.replace(
        "kind = \"http\"\nurl = \"http://127.0.0.1:9\"",
        &format!("kind = \"exec\"\ncommand = [\"{}\"]", script.display()),
    );
    assert!(text.contains("kind = \"exec\""), "{text}");
    std::fs::write(&cfg, text).expect("write config");
    let w = Worker::start(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(1).as_bytes());
    w.wait_for_log("\"event\":\"action_failed\"");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains(SECRET),
        "the exec detail's password leaked into the log:\n{log}"
    );
    assert!(
        log.contains("bad proxy http://***@host:8080"),
        "the redacted detail is kept:\n{log}"
    );
    assert!(
        !String::from_utf8_lossy(&store_bytes(dir.path())).contains(SECRET),
        "the password reached the store's files"
    );
    let store = sendgate::store::Store::open(
        &dir.path().join("store"),
        sendgate::store::Settings::default(),
        sendgate::store::OpenOptions::default(),
    )
    .expect("open the store");
    let action = store.action("c1/p0/invite").expect("read").expect("the action");
    let reason = action.reason.unwrap_or_default();
    assert!(reason.contains("bad proxy http://***@host:8080"), "{reason}");
}

#[test]
fn repeated_keys_and_padded_action_ids_are_rejected_by_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|n| {
        if n == 1 {
            (200, "{}".into())
        } else {
            (409, "{}".into())
        }
    });
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    drop_file(dir.path(), "000-setup.jsonl", setup(80).as_bytes());
    let action = |id: &str| {
        format!(
            r#"{{"type":"action","id":"{id}","campaign":"c1","account":"a1","kind":"invite","prospect":"https://www.linkedin.com/in/p-{}"}}"#,
            id.len()
        ) + "\n"
    };
    drop_file(dir.path(), "001-key.jsonl", action("dup-key").as_bytes());
    drop_file(dir.path(), "002-lead.jsonl", action(" dup-key").as_bytes());
    drop_file(dir.path(), "003-trail.jsonl", action("dup-key ").as_bytes());
    drop_file(
        dir.path(),
        "004-twice.jsonl",
        b"{\"type\":\"account\",\"id\":\"a1\",\"caps\":{\"invites\":2,\"invites\":40}}\n",
    );
    drop_file(dir.path(), "005-good.jsonl", action("last").as_bytes());
    wait_until("the last file", || {
        dir.path().join("spool/done/005-good.jsonl").exists()
    });
    wait_until("two sends", || up.requests().len() >= 2);
    std::thread::sleep(Duration::from_secs(2));
    let keys: Vec<String> = up.requests().iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, ["dup-key", "last"], "only the two valid ids went out");
    let rejected = dir.path().join("spool/rejected");
    for (name, needle) in [
        ("002-lead.jsonl", ":1: field `id`"),
        ("003-trail.jsonl", ":1: field `id`"),
        ("004-twice.jsonl", ":1: field `caps.invites`"),
    ] {
        let error = std::fs::read_to_string(rejected.join(format!("{name}.error"))).expect("an .error file");
        assert!(error.contains(needle), "{name}.error lacks `{needle}`: {error}");
    }
    assert!(std::fs::read_to_string(rejected.join("004-twice.jsonl.error"))
        .expect("error")
        .contains("duplicate key `invites`"));
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn sighup_applies_status_every_s_and_max_file_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let original = std::fs::read_to_string(&cfg).expect("config");
    let slow = original.replace("every_s = 1\n", "every_s = 3600\n");
    assert_ne!(slow, original);
    std::fs::write(&cfg, &slow).expect("write config");
    let w = Worker::start(dir.path(), &cfg);
    let status = dir.path().join("status.json");
    wait_until("the first status file", || status.exists());
    std::fs::remove_file(&status).expect("remove status");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!status.exists(), "every_s = 3600: no rewrite yet");
    let fast = original.replace("max_file_bytes = 8192\n", "max_file_bytes = 100\n");
    assert_ne!(fast, original);
    std::fs::write(&cfg, &fast).expect("write config");
    w.signal("HUP");
    w.wait_for_log("config_reloaded");
    wait_until("the status file under every_s = 1", || status.exists());
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    let error = dir.path().join("spool/rejected/001-setup.jsonl.error");
    wait_until("the file over the new bound rejected", || error.exists());
    let text = std::fs::read_to_string(&error).expect("error file");
    assert!(text.contains("100"), "{text}");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("config_restart_needed"), "{log}");
}

// --- The store's identity, read-only commands, errors, modes, status and notify. ---

/// Run a read-only command (`status`, `audit`) against `cfg`: (exit code, stdout, stderr).
fn command(cmd: &str, cfg: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args([cmd, "--config"])
        .arg(cfg)
        .args(extra)
        .output()
        .expect("run sendgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `sendgate run` until it exits by itself.
fn run_to_exit(dir: &Path, cfg: &Path) -> (i32, String) {
    Worker::spawn(run_command(dir, cfg)).wait_exit()
}

#[test]
fn a_wiped_store_exits_74_and_the_upstream_gets_nothing_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    let (setup_file, invites_file) = (setup(5), invites(20));
    drop_file(dir.path(), "001-setup.jsonl", setup_file.as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites_file.as_bytes());
    wait_until("5 requests", || up.requests().len() >= 5);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let store = dir.path().join("store");
    let wipe_snapshots = || {
        for e in std::fs::read_dir(&store).expect("ls store") {
            let p = e.expect("entry").path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
            {
                std::fs::remove_file(&p).expect("rm snap");
            }
        }
    };
    // `: > db; rm snap.*`, then `rm db` too (conf and blobs/ stay); the same files
    // dropped again each time, on the same local day.
    for (round, wipe) in ["truncate db", "remove db"].into_iter().enumerate() {
        if wipe == "truncate db" {
            std::fs::write(store.join("db"), b"").expect(": > db");
        } else {
            let _ = std::fs::remove_file(store.join("db"));
        }
        wipe_snapshots();
        drop_file(
            dir.path(),
            &format!("1{round}1-setup.jsonl"),
            setup_file.as_bytes(),
        );
        drop_file(
            dir.path(),
            &format!("1{round}2-invites.jsonl"),
            invites_file.as_bytes(),
        );
        let (code, log) = run_to_exit(dir.path(), &cfg);
        assert_eq!(code, 74, "{wipe}: the damaged store is refused:\n{log}");
        assert!(log.contains("\"event\":\"store_failed\""), "{log}");
        assert!(
            log.contains(&store.display().to_string()),
            "names the path:\n{log}"
        );
        let (code, out, err) = command("audit", &cfg, &[]);
        assert_eq!(code, 74, "{wipe}: audit refuses too:\n{out}{err}");
        assert!(!out.contains("overshoots: 0"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.requests().len(), 5, "nothing more reached the upstream");
}

#[test]
fn status_and_audit_never_create_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "http://127.0.0.1:9", "");
    let text = std::fs::read_to_string(&cfg).expect("read config");
    let typo = dir.path().join("stroe/store");
    std::fs::write(
        &cfg,
        text.replace(
            &format!("path = \"{}/store\"", dir.path().display()),
            &format!("path = \"{}\"", typo.display()),
        ),
    )
    .expect("write config");
    for (cmd, extra) in [
        ("status", &[][..]),
        ("status", &["--json"][..]),
        ("audit", &[][..]),
    ] {
        let (code, out, err) = command(cmd, &cfg, extra);
        assert_eq!(code, 1, "{cmd} {extra:?}: a missing store is exit 1:\n{out}{err}");
        assert!(err.contains(&typo.display().to_string()), "names the path: {err}");
        assert!(!out.contains("overshoots: 0"), "{out}");
        assert!(!dir.path().join("stroe").exists(), "{cmd} created something");
    }
}

#[test]
fn a_second_worker_is_told_the_pid_holding_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    let (code, log) = run_to_exit(dir.path(), &cfg);
    assert_eq!(code, 74, "{log}");
    let needle = format!("locked by another sendgate (pid {})", w.child.id());
    assert!(log.contains(&needle), "`{needle}` in:\n{log}");
    assert!(!log.contains("WouldBlock"), "{log}");
    assert_eq!(w.stop().0, 0);
}

#[test]
fn a_store_path_under_a_regular_file_is_named_and_exits_74() {
    // Works as root, unlike a permission test.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "http://127.0.0.1:9", "");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let text = std::fs::read_to_string(&cfg).expect("read config");
    std::fs::write(
        &cfg,
        text.replace(
            &format!("path = \"{}/store\"", dir.path().display()),
            &format!("path = \"{}/store\"", file.display()),
        ),
    )
    .expect("write config");
    let (code, log) = run_to_exit(dir.path(), &cfg);
    assert_eq!(code, 74, "{log}");
    assert!(log.contains("\"event\":\"store_failed\""), "{log}");
    assert!(
        log.contains(&file.display().to_string()),
        "names the path:\n{log}"
    );
}

#[test]
fn the_store_and_the_status_file_get_their_modes_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let mut cmd = run_command(dir.path(), &cfg);
    // SAFETY: umask is async-signal-safe; the child only execs after it.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let w = Worker::spawn(cmd);
    w.wait_for_log("worker_started");
    let status = dir.path().join("status.json");
    wait_until("the status file", || status.exists());
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("store")), 0o700, "store directory");
    assert_eq!(mode(&status), 0o640, "status file");
    assert_eq!(
        mode(&dir.path().join("store/sendgate-store.id")),
        0o600,
        "identity file"
    );
    assert_eq!(w.stop().0, 0);
}

#[test]
fn a_store_read_failing_for_the_status_file_exits_74() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    assert_eq!(Worker::start(dir.path(), &cfg).stop().0, 0);
    // Only the status file reads the per-state counts of an idle store: make them
    // undecodable behind the store's back.
    let store = dir.path().join("store");
    for _ in 0..400 {
        match sled::open(&store) {
            Ok(db) => {
                let meta = db.open_tree("meta").expect("meta");
                meta.insert("state_counts", &[0xffu8, 0xff, 0xff][..])
                    .expect("write");
                db.flush().expect("flush");
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    std::thread::sleep(Duration::from_millis(200)); // sled lets go of its lock
    let (code, log) = run_to_exit(dir.path(), &cfg);
    assert_eq!(code, 74, "{log}");
    assert!(log.contains("\"event\":\"store_failed\""), "{log}");
    assert!(!log.contains("status_failed"), "{log}");
}

#[test]
fn status_json_has_one_schema_whether_the_worker_runs_or_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = Worker::start(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(3).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(5).as_bytes());
    wait_until("3 requests", || up.requests().len() >= 3);
    std::thread::sleep(Duration::from_millis(1500)); // a status file written after them
    let check = |out: &str, from: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{from}: {e}: {out}"));
        let a = &v["accounts"][0];
        assert_eq!(a["id"], "a1", "{from}: {v}");
        for field in [
            "health",
            "ramp_ceiling",
            "held_until",
            "inmail_balance",
            "invites",
            "engagement",
        ] {
            assert!(a.get(field).is_some(), "{from}: account lacks {field}: {v}");
        }
        assert_eq!(a["invites"][0], 3, "{from}: today's invites used: {v}");
        assert_eq!(a["invites"][1], 3, "{from}: today's invite cap: {v}");
        assert_eq!(v["actions"]["sent"], 3, "{from}: {v}");
        assert_eq!(v["actions"]["parked"], 2, "{from}: {v}");
        v
    };
    let (code, running, err) = command("status", &cfg, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let running = check(&running, "running worker");
    assert_eq!(w.stop().0, 0);
    let (code, stopped, err) = command("status", &cfg, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let stopped = check(&stopped, "store");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };
    assert_eq!(keys(&running), keys(&stopped), "one schema");
}

#[test]
fn sd_notify_says_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => seen2
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    // systemd gives the watchdog to the main pid: WATCHDOG_PID must be the worker's own,
    // so a shell sets it and execs the worker under the same pid.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_sendgate"))
        .arg(&cfg)
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000");
    let w = Worker::spawn(cmd);
    w.wait_for_log("worker_started");
    let has = |needle: &str| {
        seen.lock()
            .expect("lock")
            .iter()
            .any(|m| m.lines().any(|l| l.starts_with(needle)))
    };
    wait_until("READY=1", || has("READY=1"));
    wait_until("a STATUS= with the action counts", || {
        has("STATUS=0 accounts; actions:")
    });
    wait_until("WATCHDOG=1", || has("WATCHDOG=1"));
    let pings = || {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count()
    };
    let first = pings();
    wait_until("a second WATCHDOG=1", || pings() > first);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    wait_until("STOPPING=1", || has("STOPPING=1"));
    let all = seen.lock().expect("lock").clone();
    let ready = all.iter().position(|m| m.contains("READY=1")).expect("ready");
    let stopping = all
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .expect("stopping");
    assert!(ready < stopping, "READY before STOPPING: {all:?}");
}
