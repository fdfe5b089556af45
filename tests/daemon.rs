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
        let mut child = Command::new(env!("CARGO_BIN_EXE_sendgate"))
            .args(["run", "--config"])
            .arg(config)
            .current_dir(dir)
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
        let w = Worker { child, log };
        w.wait_for_log("worker_started");
        w
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
