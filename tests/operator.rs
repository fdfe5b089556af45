//! Operator control as an operator uses it (SPEC §8, P9): the real binary, a loopback
//! HTTP upstream this test runs itself and counts, a virtual clock, and the commands
//! `status`, `list`, `show`, `audit`, `pause`, `resume`, `cancel`, `requeue` both
//! through the running worker's admin socket and on a stopped worker's store.

mod common;

use common::http::{read_request, reply};
use common::worker::{wait_until, Notify, Worker, DEADLINE};
use common::{account_line, action_line, campaign_line, cli};
use sendgate::admin::client::{self, ClientError, Silence, Stage};
use sendgate::admin::{parse_request, Reply, Request};
use sendgate::cli::operator;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loopback upstream that counts requests, answers `status` after `delay`.
struct Upstream {
    url: String,
    count: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(status: u16, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        let c2 = Arc::clone(&count);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let count = Arc::clone(&c2);
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    while read_request(&mut r).is_some() {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(delay);
                        let body = if status == 200 { "{}" } else { r#"{"error":"bad"}"# };
                        let reply = reply(status, "", body);
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream { url, count }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

const START: &str = "2026-11-25T09:10:00Z";

fn config(dir: &Path, url: &str) -> PathBuf {
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
url = "{url}"
timeout_s = 5
[pacing]
min_gap_s = 1
max_gap_s = 2
[status]
path = "{d}/status.json"
every_s = 1
[clock]
start = "{START}"
speed = 600.0
"#,
        d = dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn start(dir: &Path, config: &Path) -> Worker {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"]).arg(config).current_dir(dir);
    Worker::start(&mut cmd)
}

fn drop_file(dir: &Path, name: &str, text: &str) {
    let spool = dir.join("spool");
    wait_until("the spool", || spool.join("incoming").is_dir());
    common::drop_job_file(&spool, name, text);
}

fn ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = cli(config, args);
    assert_eq!(code, 0, "sendgate {args:?}: {err}");
    out
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(config, args)).expect("JSON")
}

fn lines(config: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    ok(config, args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn setup(n_invites: usize, kind: &str) -> String {
    let mut s = account_line("acct-1", "") + "\n" + &campaign_line("q4", 3, "") + "\n";
    for i in 0..n_invites {
        s += &action_line(&format!("q4/{i}"), "q4", "acct-1", kind);
        s.push('\n');
    }
    s
}

#[test]
fn status_list_show_and_audit_agree_with_the_upstream_running_and_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(200, Duration::ZERO);
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    drop_file(dir.path(), "a.jsonl", &setup(5, "invite"));
    // The campaign allows 3 invites a day: 3 go out, 2 park until the next UTC day.
    wait_until("2 parked", || {
        cli(&cfg, &["list", "--state", "parked", "--json"])
            .1
            .lines()
            .count()
            == 2
    });
    let parked = lines(&cfg, &["list", "--state", "parked", "--json"]);
    for p in &parked {
        assert_eq!(p["reason"], "campaign.invites", "{p}");
        assert_eq!(p["until"], "2026-11-26T00:00:00Z", "{p}");
        assert_eq!(p["state"], "parked");
    }
    assert_eq!(up.count(), 3, "the upstream counted 3 invites");
    let s = json(&cfg, &["status", "--json"]);
    let a = &s["accounts"][0];
    assert_eq!(a["today"]["invites"]["used"], 3, "{s}");
    assert_eq!(a["campaigns"][0]["id"], "q4", "{s}");
    assert_eq!(a["campaigns"][0]["today"]["invite"]["used"], 3, "{s}");
    assert_eq!(a["campaigns"][0]["today"]["invite"]["cap"], 3, "{s}");
    assert_eq!(a["waiting"][0]["reason"], "campaign.invites", "{s}");
    assert_eq!(a["waiting"][0]["count"], 2, "{s}");
    assert_eq!(a["waiting"][0]["until"], "2026-11-26T00:00:00Z", "{s}");
    assert_eq!(a["next_send"], "2026-11-26T00:00:00Z", "{s}");
    assert_eq!(s["campaigns"][0]["states"]["sent"], 3, "{s}");
    assert_eq!(s["campaigns"][0]["states"]["parked"], 2, "{s}");
    assert_eq!(s["states"]["sent"], 3, "{s}");
    // The human table fits 100 columns.
    let table = ok(&cfg, &["status"]);
    assert!(table.contains("campaign.invites"), "{table}");
    for l in table.lines() {
        assert!(l.chars().count() <= 100, "longer than 100 columns: {l}");
    }
    // Filters.
    let only = json(&cfg, &["status", "--json", "--campaign", "q4"]);
    assert_eq!(only["campaigns"].as_array().map(Vec::len), Some(1));
    let (code, _, err) = cli(&cfg, &["status", "--account", "nobody"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nobody"), "{err}");
    // show: one reservation with the campaign limit in force.
    let h = json(&cfg, &["show", "q4/0", "--json"]);
    assert_eq!(h["reservations"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(h["reservations"][0]["limits"]["campaign"], 3, "{h}");
    // audit while the worker runs (through the socket).
    let audit = ok(&cfg, &["audit"]);
    assert!(audit.contains("3 reservations"), "{audit}");
    // The same report from the running worker and from its store once stopped.
    let at = "2026-11-25T12:00:00Z";
    let running = ok(&cfg, &["status", "--json", "--at", at]);
    let listed = ok(&cfg, &["list", "--json", "--limit", "0"]);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        !dir.path().join("admin.sock").exists(),
        "a clean stop removes the socket"
    );
    // SPEC §11: under `[clock]` every line carries `vtime`; one spelling of the upstream.
    for l in log.lines().filter(|l| l.starts_with('{')) {
        assert!(l.contains(r#""vtime":"2026-11-2"#), "no vtime: {l}");
    }
    assert!(log.contains(r#""upstream":"http""#), "{log}");
    assert!(log.contains(r#""until":"2026-11-26T00:00:00Z""#), "{log}");
    assert_eq!(ok(&cfg, &["status", "--json", "--at", at]), running);
    assert_eq!(ok(&cfg, &["list", "--json", "--limit", "0"]), listed);
    assert!(ok(&cfg, &["audit"]).contains("3 reservations"));
    // A stopped worker's status is of now on the real clock, not `clock.start`.
    let now = json(&cfg, &["status", "--json"]);
    let t = chrono::DateTime::parse_from_rfc3339(now["now"].as_str().expect("now")).expect("time");
    assert!(
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs()
            < 60
    );
    // `list --limit`: oldest first.
    let two = lines(&cfg, &["list", "--json", "--limit", "2"]);
    let ids: Vec<&str> = two.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["q4/0", "q4/1"]);
}

/// An exec upstream that answers by attempt: 1 rate limited, 2 not delivered, then sent.
fn attempt_script(dir: &Path) -> PathBuf {
    let script = dir.join("li-send.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nreq=$(cat)\ncase \"$req\" in\n\
         *'\"attempt\":1'*) echo '{\"outcome\":\"rate_limited\",\"detail\":\"slow down\"}' ;;\n\
         *'\"attempt\":2'*) echo '{\"outcome\":\"not_delivered\",\"detail\":\"connection refused\"}' ;;\n\
         *) echo '{\"outcome\":\"sent\",\"detail\":\"\"}' ;;\nesac\n",
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    script
}

#[test]
fn show_lists_every_attempt_reservation_release_and_outcome_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = attempt_script(dir.path());
    let cfg = config(dir.path(), "http://127.0.0.1:9");
    let text = std::fs::read_to_string(&cfg).expect("config");
    // A fast clock: the rate limit holds the account to the next day.
    let text = text
        .replace(
            "kind = \"http\"\nurl = \"http://127.0.0.1:9\"",
            &format!("kind = \"exec\"\ncommand = [\"{}\"]", script.display()),
        )
        .replace("speed = 600.0", "speed = 20000.0");
    assert!(
        text.contains("kind = \"exec\"") && text.contains("speed = 20000.0"),
        "{text}"
    );
    std::fs::write(&cfg, text).expect("write config");
    let w = start(dir.path(), &cfg);
    drop_file(dir.path(), "a.jsonl", &setup(1, "message"));
    wait_until("q4/0 sent", || {
        let (_, out, _) = cli(&cfg, &["show", "q4/0", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|h| h["action"]["state"] == "sent")
    });
    let check = |h: &serde_json::Value| {
        let n = |k: &str| h[k].as_array().map_or(0, Vec::len);
        assert_eq!(
            (n("reservations"), n("releases"), n("outcomes")),
            (3, 1, 3),
            "{h}"
        );
        let attempts: Vec<u64> = (0..3)
            .map(|i| h["reservations"][i]["attempt"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(attempts, [1, 2, 3], "{h}");
        let o = &h["outcomes"];
        let got: Vec<(u64, &str, &str, bool)> = (0..3)
            .map(|i| {
                (
                    o[i]["attempt"].as_u64().unwrap_or(0),
                    o[i]["outcome"].as_str().unwrap_or(""),
                    o[i]["state"].as_str().unwrap_or(""),
                    o[i]["released"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "rate_limited", "parked", false),
                (2, "not_delivered", "queued", true),
                (3, "sent", "sent", false)
            ],
            "{h}"
        );
        assert_eq!(o[0]["reason"], "rate_limited", "{h}");
        assert_eq!(o[1]["reason"], "not_delivered: connection refused", "{h}");
        assert_eq!(h["releases"][0]["attempt"], 2, "{h}");
        // Each outcome comes after its reservation, and before the next one.
        for i in 0..3 {
            let at = |v: &serde_json::Value| {
                chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or("")).map(|t| t.timestamp_millis())
            };
            let reserved = h["reservations"][i]["at_ms"].as_i64().unwrap_or(i64::MAX);
            let answered = at(&o[i]["at"]).expect("an RFC 3339 time");
            assert!(reserved <= answered, "{h}");
            if i < 2 {
                assert!(
                    answered <= h["reservations"][i + 1]["at_ms"].as_i64().unwrap_or(0),
                    "{h}"
                );
            }
        }
    };
    let running = json(&cfg, &["show", "q4/0", "--json"]);
    check(&running);
    let human = ok(&cfg, &["show", "q4/0"]);
    // The human form: reservation, (release,) outcome per attempt, in order.
    let order: Vec<&str> = human
        .lines()
        .filter(|l| l.starts_with("  attempt "))
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        [
            "reserved",
            "rate_limited",
            "reserved",
            "released",
            "not_delivered",
            "reserved",
            "sent"
        ],
        "{human}"
    );
    // The outcome records move no counter: the audit still agrees.
    let audit = ok(&cfg, &["audit", "--json"]);
    let a: serde_json::Value = serde_json::from_str(&audit).expect("JSON");
    assert_eq!(a["entries"], 3, "{a}");
    assert_eq!(a["releases"], 1, "{a}");
    assert_eq!(a["mismatches"].as_array().map(Vec::len), Some(0), "{a}");
    assert_eq!(a["overshoots"].as_array().map(Vec::len), Some(0), "{a}");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    // The same history from the stopped worker's store.
    assert_eq!(json(&cfg, &["show", "q4/0", "--json"]), running);
}

#[test]
fn the_kill_switch_stops_requests_and_holds_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A slow upstream: at most one call of the single account is in flight at a time.
    let up = Upstream::start(200, Duration::from_millis(40));
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    drop_file(dir.path(), "a.jsonl", &setup(90, "profile_view"));
    wait_until("5 requests", || up.count() >= 5);
    let out = ok(&cfg, &["pause", "--all"]);
    let at_return = up.count();
    assert!(out.contains("paused: all"), "{out}");
    std::thread::sleep(Duration::from_millis(800));
    // One account: at most the one call already in flight arrives after the return.
    let after = up.count();
    assert!(after <= at_return + 1, "{at_return} at the return, {after} later");
    let s = json(&cfg, &["status", "--json"]);
    assert_eq!(s["paused_all"], true, "{s}");
    assert_eq!(s["accounts"][0]["waiting"][0]["reason"], "paused", "{s}");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(r#""event":"paused""#) && log.contains(r#""scope":"all""#),
        "{log}"
    );
    // Kept in the store: a restarted worker sends nothing.
    let w = start(dir.path(), &cfg);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(up.count(), after, "a paused worker sent after a restart");
    assert_eq!(json(&cfg, &["status", "--json"])["paused_all"], true);
    // An account pause under the lifted kill switch still holds it.
    ok(&cfg, &["pause", "--account", "acct-1"]);
    ok(&cfg, &["resume", "--all"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.count(), after, "a paused account sent");
    let s = json(&cfg, &["status", "--json", "--account", "acct-1"]);
    assert_eq!(s["accounts"][0]["paused"], true, "{s}");
    ok(&cfg, &["resume", "--account", "acct-1"]);
    wait_until("sending again", || up.count() > after);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(r#""event":"resumed""#), "{log}");
}

#[test]
fn bulk_cancel_and_requeue_count_what_moved_and_log_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(400, Duration::ZERO);
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    drop_file(dir.path(), "a.jsonl", &setup(3, "message"));
    wait_until("3 failed", || {
        cli(&cfg, &["list", "--state", "failed", "--json"])
            .1
            .lines()
            .count()
            == 3
    });
    ok(&cfg, &["pause", "--all"]);
    // Usage: a filter names a state, an account or a campaign; ids or a filter.
    assert_eq!(cli(&cfg, &["cancel", "--kind", "message"]).0, 2);
    assert_eq!(cli(&cfg, &["cancel"]).0, 2);
    assert_eq!(cli(&cfg, &["requeue", "q4/0", "--state", "failed"]).0, 2);
    assert_eq!(cli(&cfg, &["pause"]).0, 2);
    // Failed actions cannot be cancelled: none moves, each is said.
    let out = ok(&cfg, &["cancel", "--campaign", "q4"]);
    assert!(out.contains("moved: 0, not movable: 3"), "{out}");
    let out = ok(&cfg, &["requeue", "--campaign", "q4", "--state", "failed"]);
    assert!(out.contains("moved: 3, not movable: 0"), "{out}");
    let out = ok(&cfg, &["cancel", "q4/0", "q4/1", "nope"]);
    assert!(out.contains("moved: 2, not movable: 1"), "{out}");
    assert!(out.contains("nope: unknown action"), "{out}");
    let s = json(&cfg, &["status", "--json"]);
    assert_eq!(s["states"]["cancelled"], 2, "{s}");
    assert_eq!(s["states"]["queued"], 1, "{s}");
    // A job-file cancel that cannot apply is not silent (SPEC §6).
    drop_file(
        dir.path(),
        "b.jsonl",
        "{\"type\":\"event\",\"kind\":\"cancel_action\",\"action\":\"q4/0\"}\n",
    );
    w.wait_for_log("cannot cancel an action that is cancelled");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.matches(r#""event":"action_requeued""#).count(), 3, "{log}");
    assert_eq!(log.matches(r#""event":"action_cancelled""#).count(), 2, "{log}");
    assert!(log.matches(r#""event":"event_ignored""#).count() >= 4, "{log}");
    // Without a worker, the same commands on the store.
    let out = ok(&cfg, &["cancel", "--state", "queued", "--campaign", "q4"]);
    assert!(out.contains("moved: 1, not movable: 0"), "{out}");
}

#[test]
fn hostile_admin_clients_leave_the_worker_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(200, Duration::from_millis(20));
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    let sock = dir.path().join("admin.sock");
    wait_until("the socket", || sock.exists());
    // Garbage gets an error line, and the connection ends.
    let mut g = UnixStream::connect(&sock).expect("connect");
    g.write_all(b"\x00\xffnot json\n").expect("write");
    let mut reply = String::new();
    BufReader::new(&g).read_line(&mut reply).expect("reply");
    assert!(reply.contains(r#""reply":"error""#), "{reply}");
    // A status of chrono's first day is refused, not walked back past it (before, the
    // worker panicked).
    let mut far = UnixStream::connect(&sock).expect("connect");
    far.write_all(b"{\"cmd\":\"status\",\"at\":\"-262143-01-01T00:00:00Z\"}\n")
        .expect("write");
    let mut reply = String::new();
    BufReader::new(&far).read_line(&mut reply).expect("reply");
    assert!(reply.contains("years 0000 to 9999"), "{reply}");
    // A line longer than the bound is refused without being read whole.
    let mut h = UnixStream::connect(&sock).expect("connect");
    h.set_write_timeout(Some(DEADLINE)).expect("timeout");
    let _ = h.write_all(&vec![b'x'; 1 << 20]);
    let mut reply = String::new();
    let _ = BufReader::new(&h).read_line(&mut reply);
    assert!(reply.contains("longer than"), "{reply}");
    // Clients that connect and never write nor read hold every slot.
    let idle: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&sock).expect("connect"))
        .collect();
    // And one that asks for a long list and never reads it.
    let mut quiet = UnixStream::connect(&sock).expect("connect");
    let _ = quiet.write_all(b"{\"cmd\":\"list\",\"limit\":0}\n");
    drop_file(dir.path(), "a.jsonl", &setup(60, "profile_view"));
    let before = up.count();
    let t = Instant::now();
    wait_until("sending while clients misbehave", || up.count() >= before + 10);
    assert!(t.elapsed() < DEADLINE);
    // The slots are full: a further client is told so at once, not left hanging.
    let (code, _, err) = cli(&cfg, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("busy"), "{err}");
    drop(idle);
    let mut rest = Vec::new();
    let _ = quiet.read_to_end(&mut rest);
    wait_until("a free slot", || cli(&cfg, &["status", "--json"]).0 == 0);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn without_a_worker_no_store_is_created_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "http://127.0.0.1:9");
    for args in [
        &["status"][..],
        &["list"],
        &["show", "x"],
        &["pause", "--all"],
        &["requeue", "--state", "failed"],
        &["audit"],
    ] {
        let (code, _, err) = cli(&cfg, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&dir.path().join("store").display().to_string()),
            "{err}"
        );
    }
    assert!(!dir.path().join("store").exists(), "no store was created");
    assert_eq!(cli(&cfg, &["list", "--state", "lost"]).0, 2);
    assert_eq!(cli(&cfg, &["list", "--kind", "poke"]).0, 2);
    assert_eq!(cli(&cfg, &["status", "--at", "yesterday"]).0, 2);
    assert_eq!(cli(&cfg, &["pause", "--all", "--account", "a"]).0, 2);
}

/// A worker killed with `kill -9` leaves its socket taking connections while the kernel
/// tears it down, and they close without a word. `status` then reads the store, as when
/// no worker runs; `pause` is not run a second time on the store (the worker may have
/// carried it out) and says so.
#[test]
fn a_worker_that_closes_without_an_answer_leaves_reads_to_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "http://127.0.0.1:9");
    let store = common::open(dir.path(), sendgate::store::Settings::default());
    common::apply(&store, "f1.jsonl", &setup(1, "invite"), common::utc(START));
    store.close().expect("close");
    // The going worker's socket: every connection accepted, then closed unread.
    let listener = UnixListener::bind(dir.path().join("admin.sock")).expect("bind the socket");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicUsize::new(0));
    let stop2 = Arc::clone(&stop);
    let closer = std::thread::spawn(move || {
        let start = Instant::now();
        while stop2.load(Ordering::SeqCst) == 0 && start.elapsed() < DEADLINE {
            match listener.accept() {
                Ok((conn, _)) => drop(conn),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let (code, out, err) = cli(&cfg, &["status"]);
    assert_eq!(code, 0, "status falls back to the store: {err}");
    assert!(out.contains("acct-1"), "{out}");
    let (code, _, err) = cli(&cfg, &["pause", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("without an answer"), "{err}");
    assert!(err.contains("sendgate status"), "{err}");
    stop.store(1, Ordering::SeqCst);
    closer.join().expect("the closer thread");
}

/// The bound the tests give the client in place of the CLI's `EXCHANGE_TIMEOUT`.
const SHORT_BOUND: Duration = Duration::from_millis(200);

/// Call the socket at `sock` with `req` on a thread, within `SHORT_BOUND`: what it
/// returned and how long it took. Waits at most `DEADLINE` for it (a client that waits
/// for ever fails the test instead of hanging it).
fn call_bounded(sock: &Path, req: Request) -> (Result<Reply, ClientError>, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = sock.to_path_buf();
    std::thread::spawn(move || {
        let start = Instant::now();
        let result = client::call(&sock, &req, SHORT_BOUND);
        let _ = tx.send((result, start.elapsed()));
    });
    rx.recv_timeout(DEADLINE)
        .expect("the client returns within its bound, not after a socket timeout or never")
}

fn silence(result: Result<Reply, ClientError>) -> Silence {
    match result {
        Err(ClientError::NoAnswer(s)) => s,
        other => panic!("expected no answer, got {other:?}"),
    }
}

/// A worker stopped with `kill -STOP`: its socket takes connections (the kernel queues
/// them) and nobody answers. The client gives up once its bound passes (before, a read
/// timeout of 60 s ended in "Resource temporarily unavailable"), and knows the request
/// was sent: the message for `pause` names the socket and the store and says the worker
/// may still carry it out; the one for `status` does not.
#[test]
fn a_worker_that_never_answers_is_given_up_on_within_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("admin.sock");
    let store = dir.path().join("store");
    // Never accepts, never reads: a stopped worker's listener.
    let _listener = UnixListener::bind(&sock).expect("bind the socket");
    let pause = parse_request(br#"{"cmd":"pause","scope":"all"}"#).expect("pause");
    let status = parse_request(br#"{"cmd":"status"}"#).expect("status");
    for req in [pause, status] {
        let mutates = req.mutates();
        let (result, took) = call_bounded(&sock, req);
        let s = silence(result);
        assert_eq!(s.stage, Stage::Answer, "the request was written whole");
        assert!(took >= SHORT_BOUND, "gave up after {took:?}, before its bound");
        assert!(took < SHORT_BOUND * 10, "gave up after {took:?}");
        let msg = operator::no_answer(&s, &store, mutates);
        assert!(msg.contains(&sock.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("store {}", store.display())), "{msg}");
        assert!(msg.contains("did not answer within 0.2 s"), "{msg}");
        assert_eq!(msg.contains("may still carry it out"), mutates, "{msg}");
    }
}

/// A stopped worker's backlog fills with the connections of every command that gave up
/// on it; then a connect waits for room. The client bounds that wait too (before, it
/// waited for ever), and knows that the request was never sent.
#[test]
fn a_full_backlog_is_given_up_on_within_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("admin.sock");
    let listener = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).expect("socket");
    listener
        .bind(&socket2::SockAddr::unix(&sock).expect("address"))
        .expect("bind");
    // A backlog of 0 holds one connection not yet accepted.
    listener.listen(0).expect("listen");
    let _queued = UnixStream::connect(&sock).expect("the first connection is queued");
    let pause = parse_request(br#"{"cmd":"pause","scope":"all"}"#).expect("pause");
    let (result, took) = call_bounded(&sock, pause);
    let s = silence(result);
    assert_eq!(s.stage, Stage::Connect);
    assert!(!s.stage.sent());
    assert!(took < SHORT_BOUND * 10, "gave up after {took:?}");
    let msg = operator::no_answer(&s, &dir.path().join("store"), true);
    assert!(msg.contains("did not take the connection"), "{msg}");
    assert!(msg.contains("will not be carried out"), "{msg}");
}

#[test]
fn a_paused_campaign_waits_while_the_others_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(200, Duration::ZERO);
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    let mut setup = account_line("acct-1", "") + "\n";
    setup += &(campaign_line("q4", 10, "") + "\n" + &campaign_line("q5", 10, "") + "\n");
    drop_file(dir.path(), "a.jsonl", &setup);
    wait_until("the campaign", || {
        cli(&cfg, &["pause", "--campaign", "q4"]).0 == 0
    });
    let mut actions = String::new();
    for i in 0..3 {
        actions += &(action_line(&format!("q4/{i}"), "q4", "acct-1", "message") + "\n");
        actions += &(action_line(&format!("q5/{i}"), "q5", "acct-1", "message") + "\n");
    }
    drop_file(dir.path(), "b.jsonl", &actions);
    wait_until("q5 sent", || up.count() == 3);
    wait_until("q4 parked", || {
        cli(&cfg, &["list", "--campaign", "q4", "--state", "parked", "--json"])
            .1
            .lines()
            .count()
            == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.count(), 3, "a paused campaign sent");
    let s = json(&cfg, &["status", "--json", "--campaign", "q4"]);
    assert_eq!(s["campaigns"][0]["operator_paused"], true, "{s}");
    assert_eq!(s["accounts"][0]["waiting"][0]["reason"], "campaign_paused", "{s}");
    assert_eq!(cli(&cfg, &["pause", "--campaign", "nope"]).0, 1);
    ok(&cfg, &["resume", "--campaign", "q4"]);
    wait_until("q4 sent after resume", || up.count() == 6);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(r#""scope":"campaign q4""#), "{log}");
}

/// Requests that arrive together are answered one a loop turn: between two answers the
/// worker ticks and feeds the watchdog. Before, a burst of `status` requests over a big
/// store (8 at once over 1,000,000 actions: 38 s) was answered in one turn, holding
/// sending and the watchdog (`WatchdogSec=30` in the shipped unit) for the sum of their
/// times. `WATCHDOG_USEC` of 20 ms asks for a ping at every turn that follows one of
/// these requests.
#[test]
fn a_burst_of_requests_is_answered_one_a_turn_with_the_watchdog_fed_between() {
    use std::sync::Barrier;
    const CLIENTS: usize = 8;
    const WAITING: usize = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(200, Duration::ZERO);
    let cfg = config(dir.path(), &up.url);
    let notify = Notify::bind(&dir.path().join("notify.sock"));
    let mut cmd = notify.worker(&cfg, dir.path(), 20_000);
    let w = Worker::start(&mut cmd);
    // Many waiting actions make each `status` cost a walk over them.
    let mut text = account_line("acct-1", "") + "\n" + &campaign_line("q4", 3, "") + "\n";
    for i in 0..WAITING {
        text += &format!(
            r#"{{"type":"action","id":"q4/{i}","campaign":"q4","account":"acct-1","kind":"profile_view","prospect":"https://www.linkedin.com/in/p{i}","not_before":"2027-06-01T00:00:00Z"}}"#
        );
        text.push('\n');
    }
    drop_file(dir.path(), "a.jsonl", &text);
    wait_until("the file applied", || w.log().contains("file_applied"));
    let sock = dir.path().join("admin.sock");
    let status = parse_request(br#"{"cmd":"status"}"#).expect("status");
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (sock, status, start) = (sock.clone(), status.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let reply = client::call(&sock, &status, DEADLINE);
                assert!(matches!(reply, Ok(Reply::Status(_))), "{reply:?}");
                Instant::now()
            })
        })
        .collect();
    start.wait();
    let asked = Instant::now();
    let last = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .max()
        .expect("answers");
    let burst = last - asked;
    // The longest stretch of the burst without a ping: one request's time (and the
    // scheduler's noise) when they are answered a turn each, nearly all of it when
    // they are answered in one turn.
    let mut marks: Vec<Instant> = notify
        .messages()
        .into_iter()
        .filter(|(at, m)| m.contains("WATCHDOG=1") && *at > asked && *at < last)
        .map(|(at, _)| at)
        .collect();
    marks.insert(0, asked);
    marks.push(last);
    let longest = marks.windows(2).map(|m| m[1] - m[0]).max().expect("two marks");
    assert!(
        longest < burst / 2,
        "{CLIENTS} requests took {burst:?}; the watchdog went {longest:?} without a ping"
    );
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// `list --limit 0` over more actions than one reply carries. The worker built the
/// whole listing as one reply (786 MB of worker memory, and 1.4 GB in the command, over
/// a million actions); it answers `LIST_PAGE` rows at a time now, and the command asks
/// page after page and prints every action once, oldest first, through the running
/// worker and from the stopped worker's store alike.
#[test]
fn a_long_listing_comes_a_page_at_a_time() {
    use sendgate::admin::LIST_PAGE;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(200, Duration::ZERO);
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    let n = LIST_PAGE + 7;
    drop_file(dir.path(), "001.jsonl", &setup(n, "invite"));
    w.wait_for_log("\"event\":\"file_applied\"");
    let sock = dir.path().join("admin.sock");
    let all = Request::List {
        filter: Default::default(),
        limit: 0,
        after: None,
    };
    match client::call(&sock, &all, DEADLINE) {
        Ok(Reply::List { actions, more }) => {
            assert_eq!(actions.len(), LIST_PAGE, "one page");
            assert_eq!(more.map(|c| c.id), actions.last().map(|a| a.id.clone()));
        }
        other => panic!("{other:?}"),
    }
    let expected: Vec<String> = (0..n).map(|i| format!("q4/{i}")).collect();
    let ids = |args: &[&str]| -> Vec<String> {
        lines(&cfg, args)
            .iter()
            .map(|l| l["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert!(
        ids(&["list", "--json", "--limit", "0"]) == expected,
        "through the worker"
    );
    let some = (LIST_PAGE + 3).to_string();
    assert_eq!(
        ids(&["list", "--json", "--limit", &some]),
        expected[..LIST_PAGE + 3]
    );
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        ids(&["list", "--json", "--limit", "0"]) == expected,
        "from the store"
    );
    let table = ok(&cfg, &["list", "--limit", "0"]);
    assert_eq!(
        table.lines().filter(|l| l.contains("q4/")).count(),
        n,
        "the table"
    );
}

/// A worker started while a command that found no worker has the store open (here a
/// `status`, stopped with SIGSTOP while it holds the store) waits for the command to
/// finish, saying so. It failed at once (exit 74): systemd's restarts, five in a few
/// seconds, could all fall inside one long command, and the unit then stayed down.
#[test]
fn a_worker_waits_for_a_command_that_has_the_store_open() {
    let (dir, _up, cfg) = applied_then_stopped(2_000);
    // Catch a `status` while it holds the store (it walks 2,000 actions) and stop it
    // there; a run that finished first is tried again.
    let db = dir.path().join("store").join("db");
    let mut status = None;
    for _ in 0..50 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sendgate"))
            .args(["status", "--json", "--config"])
            .arg(&cfg)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start status");
        let pid = c.id();
        loop {
            if sendgate::store::identity::lock_holder(&db) == Some(pid) {
                common::signal(&c, libc::SIGSTOP);
                if sendgate::store::identity::lock_holder(&db) == Some(pid) {
                    status = Some(c);
                } else {
                    common::signal(&c, libc::SIGCONT);
                    let _ = c.wait();
                }
                break;
            }
            if c.try_wait().expect("try_wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if status.is_some() {
            break;
        }
    }
    let mut status = status.expect("a status caught holding the store in 50 runs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"]).arg(&cfg).current_dir(dir.path());
    let mut w = Worker::spawn(&mut cmd);
    w.wait_for_log("`sendgate status` command (pid");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        w.child.try_wait().expect("try_wait").is_none(),
        "the worker waits: {}",
        w.log()
    );
    common::signal(&status, libc::SIGCONT);
    assert!(status.wait().expect("wait").success());
    w.wait_for_log("worker_started");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// `list --limit 0 --json` from a stopped worker's store, into a pipe nobody reads yet
/// (a pager left open, a stopped pipeline): the command kept the store open while it
/// waited to write, so a worker started meanwhile found the store locked and exited 74.
/// The store is let go before a page is written.
#[test]
fn a_listing_nobody_reads_leaves_the_store_to_a_starting_worker() {
    let n = 2_000;
    let (dir, _up, cfg) = applied_then_stopped(n);
    // 2,000 rows are far more than a pipe holds: the command waits for its reader.
    let mut list = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["list", "--json", "--limit", "0", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run sendgate list");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        list.try_wait().expect("wait").is_none(),
        "the listing waits for its reader"
    );
    let w = start(dir.path(), &cfg);
    let mut out = String::new();
    list.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the listing");
    assert_eq!(list.wait().expect("wait").code(), Some(0));
    assert_eq!(out.lines().count(), n, "every action once");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// A `cancel` run with no worker logs each action it moved; a reader of its standard
/// error that does not read (a stalled journal) held the store's lock while the command
/// waited to write, so a worker started meanwhile waited for it, then exited 74. The
/// store is let go of before anything is logged or printed.
#[test]
fn a_command_whose_log_nobody_reads_leaves_the_store_to_a_starting_worker() {
    let n = 2_000;
    let (dir, _up, cfg) = applied_then_stopped(n);
    // 2,000 `action_cancelled` lines are far more than a pipe holds.
    let mut cancel = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["cancel", "--campaign", "q4", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sendgate cancel");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cancel.try_wait().expect("wait").is_none(),
        "the command waits for its reader"
    );
    let w = start(dir.path(), &cfg);
    let mut err = String::new();
    cancel
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read the log");
    assert_eq!(cancel.wait().expect("wait").code(), Some(0));
    assert!(
        err.matches("\"event\":\"action_cancelled\"").count() >= n - 10,
        "{}",
        err.len()
    );
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

/// A store with `n` invites of campaign `q4` applied by a worker, which is stopped: the
/// temporary directory, the upstream (kept alive) and the config.
fn applied_then_stopped(n: usize) -> (tempfile::TempDir, Upstream, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(200, Duration::ZERO);
    let cfg = config(dir.path(), &up.url);
    let w = start(dir.path(), &cfg);
    drop_file(dir.path(), "001.jsonl", &setup(n, "invite"));
    w.wait_for_log("\"event\":\"file_applied\"");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    (dir, up, cfg)
}
