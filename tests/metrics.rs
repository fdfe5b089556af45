//! `metrics.listen` seen from outside (SPEC §7, §11): the real `sendgate run`, a loopback
//! upstream this test runs and counts, and HTTP requests to the worker's listener:
//! `/metrics` agrees with what the upstream received and passes `promtool check
//! metrics`; the dashboard is one self-contained page that headless Chromium renders;
//! the listener is read-only and bounded, and slow clients do not stall sending; a bad
//! or busy address exits 78 naming the key.
//!
//! Tests that need `chromium` or `promtool` skip, saying why, where the tool is
//! missing, and fail instead under `SENDGATE_CI=1` (`.ci/run` installs both).

mod common;

use common::http::{read_request, reply};
use common::worker::{wait_until, Worker, DEADLINE};
use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback upstream: answers `200` except for actions whose id contains `/oon`
/// (`400 out_of_network`), and counts what it answered per (account, kind, status).
/// Answers per (account, kind, status).
type Answered = Arc<Mutex<BTreeMap<(String, String, u16), u64>>>;

struct Upstream {
    url: String,
    answered: Answered,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let answered: Answered = Arc::default();
        let counts = Arc::clone(&answered);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    while let Some(req) = read_request(&mut r) {
                        let (status, body) = if req.key.contains("/oon") {
                            (400, r#"{"error":"out_of_network"}"#)
                        } else {
                            (200, "{}")
                        };
                        let field = |f: &str| req.body[f].as_str().unwrap_or("?").to_string();
                        *counts
                            .lock()
                            .expect("lock")
                            .entry((field("account"), field("kind"), status))
                            .or_default() += 1;
                        if w.write_all(reply(status, "", body).as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream { url, answered }
    }

    fn count(&self, pred: impl Fn(&str, &str, u16) -> bool) -> u64 {
        self.answered
            .lock()
            .expect("lock")
            .iter()
            .filter(|((a, k, s), _)| pred(a, k, *s))
            .map(|(_, n)| *n)
            .sum()
    }
}

/// A port free a moment ago on 127.0.0.1.
fn free_addr() -> String {
    format!("127.0.0.1:{}", common::quiet_port())
}

fn write_config(dir: &Path, upstream: &str, listen: &str, speed: f64, start: &str) -> PathBuf {
    let path = dir.join("sendgate.toml");
    let text = format!(
        r#"[store]
path = "{d}/store"
fsync = false
[spool]
dir = "{d}/spool"
rescan_s = 1
[upstream]
kind = "http"
url = "{upstream}"
timeout_s = 5
[pacing]
min_gap_s = 60
max_gap_s = 120
[status]
path = "{d}/status.json"
every_s = 1
[metrics]
listen = "{listen}"
[clock]
start = "{start}"
speed = {speed:.1}
"#,
        d = dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_worker(dir: &Path, config: &Path) -> Worker {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"]).arg(config).current_dir(dir);
    Worker::start(&mut cmd)
}

fn drop_file(dir: &Path, name: &str, text: &str) {
    common::drop_job_file(&dir.join("spool"), name, text);
}

fn account(id: &str, zone: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"account","id":"{id}","tier":"sales_navigator_core","timezone":"{zone}","window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}}{extra}}}"#
    ) + "\n"
}

fn action(id: &str, account: &str, kind: &str) -> String {
    common::action_line(id, "c1", account, kind) + "\n"
}

/// One HTTP/1.1 request with `Connection: close`: (status, head, body); status 0 when
/// the listener closed the connection without an answer. A listener may refuse a head
/// before it is all written (a broken pipe here), so the answer is read regardless.
fn http(addr: &str, method: &str, path: &str, extra_headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `GET path` once the worker has published its first snapshot.
fn get(addr: &str, path: &str) -> String {
    let mut last = (0, String::new(), String::new());
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        last = http(addr, "GET", path, "");
        if last.0 == 200 {
            return last.2;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("GET {path}: {} {}", last.0, last.1);
}

/// The samples of an exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sample(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key).unwrap_or_else(|| panic!("no sample {key} in {s:#?}"))
}

/// An external program, or why the test cannot run: `None` means skip (printed);
/// under `SENDGATE_CI=1` a missing tool is a failure.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("`{name}` is not installed (Debian package: see .ci/run)");
        assert!(
            std::env::var("SENDGATE_CI").as_deref() != Ok("1"),
            "SENDGATE_CI=1 and {why}"
        );
        println!("SKIPPED: {test}: {why}");
    }
    found
}

/// Run a program with a time limit: (exit code, stdout, stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (mut out, mut err) = (
        child.stdout.take().expect("out"),
        child.stderr.take().expect("err"),
    );
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, o.join().expect("out"), e.join().expect("err"))
}

/// The figures of `/metrics` agree with what the upstream answered, and promtool
/// accepts the exposition.
#[test]
fn metrics_agree_with_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start();
    let addr = free_addr();
    let cfg = write_config(dir.path(), &up.url, &addr, 3600.0, "2026-11-25T00:10:00Z");
    let w = start_worker(dir.path(), &cfg);
    let mut text = account("a1", "UTC", r#","established":true,"caps":{"invites":4}"#);
    text += &account("a2", "Europe/Berlin", r#","established":true"#);
    text += r#"{"type":"campaign","id":"c1","daily_limit":50,"cap_split":{"invites":30}}"#;
    text += "\n";
    for i in 0..6 {
        text += &action(&format!("a1/p{i}/invite"), "a1", "invite");
    }
    for i in 0..3 {
        text += &action(&format!("a1/p{i}/message"), "a1", "message");
    }
    for i in 0..3 {
        text += &action(&format!("a2/p{i}/invite"), "a2", "invite");
    }
    text += &action("a2/oon/invite", "a2", "invite");
    text += &action("a2/p0/view", "a2", "profile_view");
    text += &action("a2/p1/view", "a2", "profile_view");
    drop_file(dir.path(), "001.jsonl", &text);
    // a1: 4 invites (its cap) + 3 messages; a2: 4 invites (one out of network) + 2 views.
    let expected = 13;
    wait_until("13 upstream requests", || up.count(|_, _, _| true) >= expected);
    // Wait (bounded) until the published snapshot has caught up with the upstream.
    let mut s = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        s = samples(&get(&addr, "/metrics"));
        let total: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("sendgate_outcomes_total{"))
            .map(|(_, v)| v)
            .sum();
        if total >= expected as f64 && s.get("sendgate_actions{state=\"sent\"}") == Some(&12.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up.count(|_, _, _| true), expected, "no more than the caps allow");
    for (account, kind) in [
        ("a1", "invite"),
        ("a1", "message"),
        ("a2", "invite"),
        ("a2", "profile_view"),
    ] {
        let ok = up.count(|a, k, st| a == account && k == kind && st == 200);
        assert!(ok > 0);
        assert_eq!(
            sample(
                &s,
                &format!("sendgate_sent_total{{account=\"{account}\",kind=\"{kind}\"}}")
            ),
            ok as f64,
            "{account} {kind}"
        );
    }
    assert_eq!(
        sample(&s, "sendgate_outcomes_total{outcome=\"sent\"}"),
        up.count(|_, _, st| st == 200) as f64
    );
    assert_eq!(
        sample(&s, "sendgate_outcomes_total{outcome=\"out_of_network\"}"),
        up.count(|_, _, st| st == 400) as f64
    );
    assert_eq!(
        sample(&s, "sendgate_outcomes_total{outcome=\"rate_limited\"}"),
        0.0
    );
    assert_eq!(sample(&s, "sendgate_actions{state=\"sent\"}"), 12.0);
    assert_eq!(sample(&s, "sendgate_actions{state=\"failed\"}"), 1.0);
    assert_eq!(sample(&s, "sendgate_actions{state=\"parked\"}"), 2.0);
    // Every request reserved a slot; an out-of-network answer keeps it (SPEC §5).
    for (account, counter, kind) in [
        ("a1", "invites", "invite"),
        ("a1", "messages", "message"),
        ("a2", "invites", "invite"),
    ] {
        assert_eq!(
            sample(
                &s,
                &format!("sendgate_account_used{{account=\"{account}\",counter=\"{counter}\"}}")
            ),
            up.count(|a, k, _| a == account && k == kind) as f64,
            "{account} {counter}"
        );
    }
    for (key, want) in [
        // Messages and views share the engagement bucket.
        (r#"sendgate_account_used{account="a1",counter="engagement"}"#, 3.0),
        (r#"sendgate_account_used{account="a2",counter="engagement"}"#, 2.0),
        (r#"sendgate_account_cap{account="a1",counter="invites"}"#, 4.0),
        (r#"sendgate_account_cap{account="a2",counter="invites"}"#, 80.0),
        // Established: the ramp starts at its target, min(caps.invites, tier ceiling).
        (r#"sendgate_account_ramp_ceiling{account="a1"}"#, 4.0),
        (r#"sendgate_account_ramp_ceiling{account="a2"}"#, 80.0),
        (r#"sendgate_campaign_used{campaign="c1",type="invite"}"#, 8.0),
        (r#"sendgate_campaign_cap{campaign="c1",type="invite"}"#, 30.0),
        (r#"sendgate_campaign_cap{campaign="c1",type="message"}"#, 50.0),
    ] {
        assert_eq!(sample(&s, key), want, "{key}");
    }
    assert!(!s.contains_key(r#"sendgate_account_cap{account="a1",counter="weekly_invites"}"#));
    for a in ["a1", "a2"] {
        let health: f64 = ["healthy", "watch", "at_risk", "restricted"]
            .iter()
            .map(|h| {
                sample(
                    &s,
                    &format!("sendgate_account_health{{account=\"{a}\",health=\"{h}\"}}"),
                )
            })
            .sum();
        assert_eq!(health, 1.0, "exactly one health state of {a}");
    }
    assert_eq!(sample(&s, "sendgate_upstream_up"), 1.0);
    assert!(sample(&s, "sendgate_store_durable_commit_seconds_count") >= expected as f64);
    assert_eq!(
        sample(&s, "sendgate_store_durable_commit_seconds_bucket{le=\"+Inf\"}"),
        sample(&s, "sendgate_store_durable_commit_seconds_count")
    );

    let body = get(&addr, "/metrics");
    for family in [
        "sendgate_actions gauge",
        "sendgate_account_used gauge",
        "sendgate_account_cap gauge",
        "sendgate_account_ramp_ceiling gauge",
        "sendgate_account_health gauge",
        "sendgate_sent_total counter",
        "sendgate_outcomes_total counter",
        "sendgate_upstream_up gauge",
        "sendgate_store_durable_commit_seconds histogram",
    ] {
        let name = family.split(' ').next().expect("name");
        assert!(body.contains(&format!("# TYPE {family}\n")), "{family}:\n{body}");
        assert!(body.contains(&format!("# HELP {name} ")), "{name}");
    }
    let (_, head, _) = http(&addr, "GET", "/metrics", "");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");

    if let Some(promtool) = tool(
        "promtool",
        "metrics_agree_with_the_upstream (promtool check metrics)",
    ) {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("feed promtool");
        let out = child.wait_with_output().expect("promtool ends");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// The listener is read-only and bounded, and clients that hold connections open
/// without finishing a request neither stall sending nor keep the listener forever.
#[test]
fn the_listener_is_read_only_bounded_and_never_stalls_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start();
    let addr = free_addr();
    let cfg = write_config(dir.path(), &up.url, &addr, 3600.0, "2026-11-25T00:10:00Z");
    let w = start_worker(dir.path(), &cfg);
    let mut text = account("a1", "UTC", r#","established":true"#);
    text += r#"{"type":"campaign","id":"c1","daily_limit":50}"#;
    text += "\n";
    drop_file(dir.path(), "001.jsonl", &text);
    let before = get(&addr, "/metrics");

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/metrics"] {
            let (status, head, _) = http(&addr, method, path, "Content-Length: 0\r\n");
            assert_eq!(status, 405, "{method} {path}: {head}");
        }
    }
    assert_eq!(http(&addr, "GET", "/status", "").0, 404);
    let big = format!("X-Filler: {}\r\n", "a".repeat(40 * 1024));
    let (status, _, _) = http(&addr, "GET", "/metrics", &big);
    assert!(status == 431 || status == 0, "a 40 KiB head is refused: {status}");

    // Clients that open connections, start a request and never finish it: more than
    // the listener serves at once.
    let mut slow = Vec::new();
    for _ in 0..24 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        slow.push(s);
    }
    // They hold every slot: a new request waits (in the kernel's backlog).
    let mut waiting = TcpStream::connect(&addr).expect("connect");
    waiting
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("timeout");
    waiting
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut first = [0u8; 1];
    assert!(
        waiting.read(&mut first).is_err(),
        "served at once although every connection slot was taken"
    );
    // Sending goes on meanwhile, and the status file keeps being rewritten.
    let mut actions = String::new();
    for i in 0..10 {
        actions += &action(&format!("a1/p{i}/invite"), "a1", "invite");
    }
    let status_before = std::fs::metadata(dir.path().join("status.json"))
        .and_then(|m| m.modified())
        .expect("status file");
    drop_file(dir.path(), "002.jsonl", &actions);
    wait_until("10 requests while slow clients hold the listener", || {
        up.count(|_, _, _| true) >= 10
    });
    wait_until("the status file to be rewritten", || {
        std::fs::metadata(dir.path().join("status.json"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > status_before)
    });
    // The slow clients' heads time out; the listener serves again, with new figures.
    let start = Instant::now();
    let mut after;
    loop {
        after = http(&addr, "GET", "/metrics", "");
        if after.0 == 200
            && after
                .2
                .contains("sendgate_sent_total{account=\"a1\",kind=\"invite\"} 10")
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the listener did not recover: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((slow, waiting));
    assert_ne!(
        before, after.2,
        "requests change nothing, sends change the figures"
    );
    assert_eq!(up.count(|_, _, _| true), 10, "no request of ours sent anything");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// SPEC §7: the address is checked at start, before the store is touched.
#[test]
fn a_bad_or_busy_address_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    for listen in [busy_addr.as_str(), "localhost:9187", "127.0.0.1"] {
        let cfg = write_config(
            dir.path(),
            "http://127.0.0.1:9",
            listen,
            1.0,
            "2026-11-25T00:10:00Z",
        );
        let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .current_dir(dir.path())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{listen}: {err}");
        assert!(err.contains("metrics.listen"), "{listen}: {err}");
        assert!(
            !dir.path().join("store").exists(),
            "{listen}: no store was created"
        );
    }
    drop(busy);
}

/// Account ids as the page shows them, for a worker that sent for a few virtual days.
const PAGE_ACCOUNTS: [(&str, &str, &str); 3] = [
    (
        "acct-berlin",
        "Europe/Berlin",
        r#","established":true,"caps":{"invites":30}"#,
    ),
    (
        "acct-nyc",
        "America/New_York",
        r#","established":false,"ramp_start":"2026-11-16""#,
    ),
    (
        "acct-tokyo",
        "Asia/Tokyo",
        r#","established":true,"caps":{"invites":20}"#,
    ),
];

/// The dashboard of a worker that ran a few virtual days: its HTML, and what a real
/// browser makes of it.
#[test]
fn the_dashboard_renders_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start();
    let addr = free_addr();
    // 40000×: a virtual day every 2.2 real seconds.
    let cfg = write_config(dir.path(), &up.url, &addr, 40000.0, "2026-11-23T00:10:00Z");
    let w = start_worker(dir.path(), &cfg);
    let mut text = String::new();
    for (id, zone, extra) in PAGE_ACCOUNTS {
        text += &account(id, zone, extra);
    }
    text += r#"{"type":"campaign","id":"c1","daily_limit":60}"#;
    text += "\n";
    for (id, _, _) in PAGE_ACCOUNTS {
        for i in 0..150 {
            text += &action(&format!("{id}/p{i}/invite"), id, "invite");
        }
        for i in 0..20 {
            text += &action(&format!("{id}/p{i}/message"), id, "message");
        }
    }
    drop_file(dir.path(), "001.jsonl", &text);
    // A few virtual days of sending.
    wait_until("sends on several days", || up.count(|_, _, _| true) >= 280);
    let page = get(&addr, "/");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for (id, _, _) in PAGE_ACCOUNTS {
        assert!(page.contains(&format!("id=\"account-{id}\"")), "{id}");
    }
    assert!(page.contains("id=\"campaign-c1\""));
    assert_eq!(
        page.matches("<svg").count(),
        PAGE_ACCOUNTS.len(),
        "one chart per account"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external asset"
    );
    assert!(!page.contains("<script"), "readable without JavaScript");

    let Some(chromium) = tool(
        "chromium",
        "the_dashboard_renders_in_a_real_browser (the browser part)",
    ) else {
        return;
    };
    let url = format!("http://{addr}/");
    let profile = tempfile::tempdir().expect("profile dir");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let browser = |extra: &[&str], target: &str| {
        let mut cmd = Command::new(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(target);
        run_bounded(&mut cmd, Duration::from_secs(90))
    };
    // Console messages are how the browser reports page errors; this page has no
    // script, so any is a failure. The check itself is checked on a page with one.
    let console = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_string)
            .collect()
    };
    let (_, _, err) = browser(
        &["--dump-dom"],
        "data:text/html,<p>x</p><script>console.error('probe')</script>",
    );
    assert!(
        console(&err).iter().any(|l| l.contains("probe")),
        "this chromium does not report console messages on stderr: {err}"
    );

    let (code, dom, err) = browser(&["--dump-dom"], &url);
    assert_eq!(code, 0, "{err}");
    assert!(console(&err).is_empty(), "console messages: {:?}", console(&err));
    for (id, _, _) in PAGE_ACCOUNTS {
        assert!(dom.contains(&format!("id=\"account-{id}\"")), "{id} in the DOM");
    }
    let shot_arg = format!("--screenshot={}", shot.display());
    let (code, _, err) = browser(&[&shot_arg, "--window-size=1100,1500"], &url);
    assert_eq!(code, 0, "{err}");
    assert!(console(&err).is_empty(), "console messages: {:?}", console(&err));

    // The PNG shows a page: mostly not the background, and the chart's bars drawn.
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let is = |p: &[u8], rgb: [u8; 3]| p[..3].iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 8);
    let background = pixels.iter().filter(|p| is(p, [0xf6, 0xf6, 0xf6])).count();
    let bars = pixels.iter().filter(|p| is(p, [0x34, 0x65, 0xa4])).count();
    assert!(
        background < pixels.len() * 9 / 10,
        "the page is blank: {background} of {} pixels are background",
        pixels.len()
    );
    assert!(bars > 500, "the bars are drawn: {bars} pixels of their colour");
    println!("screenshot: {}", shot.display());
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}
