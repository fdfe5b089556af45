//! The event feed as an operator runs it (SPEC §9 "events"): the real binary with
//! `upstream.events = true` against a loopback upstream that takes sends on
//! `/v1/actions` and serves `/v1/events` pages from a script: a good page, a broken
//! page, a page naming an unknown account, a page repeating an id, a 429, a cursor that
//! goes back, a response slower than the time limit. Sending never stops and stays
//! within the caps; each acceptance counts once; nothing of a bad page applies.

mod common;

use common::http::read_request;
use common::worker::{wait_until, Worker, DEADLINE};
use common::{drop_job_file, invite_backlog};
use sendgate::store::{OpenOptions, Settings, Store};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNTS: [&str; 3] = ["a1", "a2", "a3"];
const CAP: usize = 8;
/// The slow page takes this long; the worker's time limit (`timeout_s`) is 1 s.
const SLOW: Duration = Duration::from_millis(2500);

#[derive(Default)]
struct Seen {
    /// Prospects of the sends, in order, per account.
    sends: Vec<(String, String, Instant)>,
    /// The `after` of every scripted poll, in order, and when it came.
    afters: Vec<(Option<String>, Instant)>,
    /// The script's next step (0: waiting for two sends of a1).
    step: usize,
    slow_window: Option<(Instant, Instant)>,
}

fn accepted(id: &str, account: &str, prospect: &str) -> String {
    format!(r#"{{"id":"{id}","kind":"invite_accepted","account":"{account}","prospect":"{prospect}"}}"#)
}

/// The answer to poll `step` (status line, body, delay).
fn script(step: usize, p: &[String]) -> (&'static str, String, Duration) {
    let ok = "200 OK";
    let page = |events: Vec<String>, cursor: &str| {
        format!(r#"{{"events":[{}],"cursor":"{cursor}"}}"#, events.join(","))
    };
    match step {
        1 => (ok, page(vec![accepted("e1", "a1", &p[0])], "c1"), Duration::ZERO),
        2 => (
            ok,
            r#"{"events":[{"id":"e2","kind":"invite_acc"#.into(),
            Duration::ZERO,
        ),
        3 => (
            ok,
            page(vec![accepted("e9", "nobody", &p[1])], "c9"),
            Duration::ZERO,
        ),
        4 => (
            ok,
            page(
                vec![
                    accepted("e1", "a1", &p[0]),
                    accepted("e2", "a1", &p[1]),
                    accepted("e2", "a1", &p[1]),
                ],
                "c2",
            ),
            Duration::ZERO,
        ),
        5 => ("429 Too Many Requests", "{}".into(), Duration::ZERO),
        // The cursor goes back: c1 again, with events already applied.
        6 => (
            ok,
            page(
                vec![accepted("e1", "a1", &p[0]), accepted("e2", "a1", &p[1])],
                "c1",
            ),
            Duration::ZERO,
        ),
        7 => (ok, page(vec![accepted("e3", "a1", &p[0])], "c3"), SLOW),
        _ => (ok, page(vec![accepted("e1", "a1", &p[0])], "c3"), Duration::ZERO),
    }
}

fn serve(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut w = conn.try_clone().expect("clone");
            let mut r = BufReader::new(conn);
            while let Some(req) = read_request(&mut r) {
                let now = Instant::now();
                let (status, body, delay) = if req.path.starts_with("/v1/actions") {
                    let account = req.body["account"].as_str().unwrap_or("").to_string();
                    let prospect = req.body["prospect"].as_str().unwrap_or("").to_string();
                    seen.lock().expect("lock").sends.push((account, prospect, now));
                    ("200 OK", "{}".to_string(), Duration::ZERO)
                } else {
                    let after = req.path.split_once("?after=").map(|(_, c)| c.to_string());
                    let mut s = seen.lock().expect("lock");
                    let a1: Vec<String> = s
                        .sends
                        .iter()
                        .filter(|(a, _, _)| a == "a1")
                        .map(|(_, p, _)| p.clone())
                        .collect();
                    if s.step == 0 && a1.len() >= 2 {
                        s.step = 1;
                    }
                    if s.step == 0 {
                        (
                            "200 OK",
                            r#"{"events":[],"cursor":"c0"}"#.to_string(),
                            Duration::ZERO,
                        )
                    } else {
                        let step = s.step;
                        s.step += 1;
                        s.afters.push((after, now));
                        let (status, body, delay) = script(step, &a1);
                        if !delay.is_zero() {
                            s.slow_window = Some((now, now + delay));
                        }
                        (status, body, delay)
                    }
                };
                std::thread::sleep(delay);
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

/// Start `sendgate run` in `dir` with fsync off, the spool and status file in `dir`, and
/// the caller's `[upstream]`, pacing and clock sections.
fn start(dir: &Path, sections: &str) -> Worker {
    let d = dir.display();
    let cfg = dir.join("sendgate.toml");
    let text = format!(
        "[store]\npath = \"{d}/store\"\nfsync = false\n[spool]\ndir = \"{d}/spool\"\nrescan_s = 1\n\
         [status]\npath = \"{d}/status.json\"\nevery_s = 1\n{sections}"
    );
    std::fs::write(&cfg, text).expect("write config");
    Worker::start(
        Command::new(env!("CARGO_BIN_EXE_sendgate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .current_dir(dir),
    )
}

fn polled(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "events_polled")
        .collect()
}

#[test]
fn bad_pages_repeats_a_429_a_cursor_going_back_and_a_slow_page_never_stop_sending_or_apply_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || serve(listener, seen));
    }
    // 600× virtual time: the feed is polled every 60 virtual s (0.1 s real); an
    // account sends every 300–600 virtual s (0.5–1 s real).
    let w = start(
        dir.path(),
        &format!(
            r#"[upstream]
kind = "http"
url = "http://127.0.0.1:{port}"
timeout_s = 1
events = true
events_every_s = 60
[pacing]
min_gap_s = 300
max_gap_s = 600
[clock]
start = "2026-11-25T08:00:00Z"
speed = 600.0
"#
        ),
    );
    drop_job_file(
        &dir.path().join("spool"),
        "001.jsonl",
        &invite_backlog(&ACCOUNTS, 3 * CAP, true, Some(CAP)),
    );
    let total = ACCOUNTS.len() * CAP;
    wait_until("the script played and every account reached its cap", || {
        let s = seen.lock().expect("lock");
        s.step > 9 && s.sends.len() >= total
    });
    // A little longer: nothing more is sent, and the feed settles on an empty page.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let s = seen.lock().expect("lock");

    // P1: each account sent exactly its cap, feed or no feed.
    assert_eq!(s.sends.len(), total, "{log}");
    for a in ACCOUNTS {
        assert_eq!(s.sends.iter().filter(|(x, _, _)| x == a).count(), CAP, "{a}");
    }
    // The cursor: kept across a bad page, an unknown account and a 429, followed when
    // it went back, kept across the slow page the worker gave up on.
    let afters: Vec<Option<&str>> = s.afters.iter().take(8).map(|(a, _)| a.as_deref()).collect();
    assert_eq!(
        afters,
        [
            Some("c0"),
            Some("c1"),
            Some("c1"),
            Some("c1"),
            Some("c2"),
            Some("c2"),
            Some("c1"),
            Some("c1")
        ],
        "{log}"
    );
    // Sending went on while the slow page was pending (counted at the server).
    let (from, to) = s.slow_window.expect("the slow page was served");
    let during = s.sends.iter().filter(|(_, _, t)| *t > from && *t < to).count();
    assert!(during >= 1, "no send while the feed hung for {SLOW:?}:\n{log}");

    // The log: every failed poll says why; the applied counts add up to two.
    let polls = polled(&log);
    let errors: Vec<String> = polls
        .iter()
        .filter_map(|p| p["error"].as_str().map(str::to_string))
        .collect();
    for needle in ["bad page", "unknown account `nobody`", "429", "timeout"] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no `{needle}` in {errors:?}"
        );
    }
    let sum = |k: &str| polls.iter().map(|p| p[k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(sum("applied"), 2, "{polls:?}");
    assert!(sum("duplicates") >= 5, "{polls:?}");
    // A 429 or a hang on the feed is neither an account signal nor an outage.
    for ev in ["rate_limited", "account_held", "upstream_down", "store_failed"] {
        assert!(!log.contains(&format!("\"event\":\"{ev}\"")), "{ev}:\n{log}");
    }
    // From outside the worker: the store counts each acceptance once.
    let store = Store::open_existing(
        &dir.path().join("store"),
        Settings::default(),
        OpenOptions::default(),
    )
    .expect("the store opens");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).expect("day");
    assert_eq!(store.account_day("a1", day).expect("day").invites_accepted, 2);
    assert!(s
        .afters
        .iter()
        .all(|(_, t)| t.duration_since(s.afters[0].1) < DEADLINE));
}

/// SPEC §9: the `sim` upstream feeds its own acceptances under `run`, so a new
/// account's ramp moves without any producer of events (before, it held at 10 for
/// lack of feedback).
#[test]
fn under_run_the_sim_feeds_its_acceptances_and_the_ramp_advances() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 50 000× virtual time: a virtual week is about 12 s.
    let w = start(
        dir.path(),
        r#"[upstream]
kind = "sim"
events_every_s = 600
[clock]
start = "2026-11-02T00:00:00Z"
speed = 50000.0
"#,
    );
    drop_job_file(
        &dir.path().join("spool"),
        "001.jsonl",
        &invite_backlog(&["a1", "a2", "a3"], 200, false, None),
    );
    w.wait_for_log("\"reason\":\"advance\"");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let polls = polled(&log);
    let applied: u64 = polls.iter().map(|p| p["applied"].as_u64().unwrap_or(0)).sum();
    assert!(applied >= 20, "acceptances came through the feed: {polls:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"event\":\"ramp_changed\"") && l.contains("\"new\":15")),
        "{log}"
    );
}
