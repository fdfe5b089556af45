//! `sendgate run` as an operator runs it: the real binary, a spool directory, and a
//! loopback HTTP upstream this test runs itself. Virtual time runs 3600× faster or more
//! (`[clock] speed`), so a few real seconds cover hours of a sending day. A request is
//! placed on the worker's virtual time by bounds that hold however slowly the machine
//! starts the worker (`Worker::vtime_at_most`, `Worker::vtime_at_least`).

mod common;

use chrono::{DateTime, Utc};
use common::cli;
use common::http::{read_request, reply, HttpRequest};
use common::worker::{wait_until, Notify, Worker, DEADLINE};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Request = HttpRequest;

/// A loopback upstream: records requests with the instant each arrived, answers with
/// `respond(n)` (1-based).
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<(Instant, Request)>>>,
}

impl Upstream {
    fn start(respond: impl Fn(usize) -> (u16, String) + Send + Sync + 'static) -> Upstream {
        Upstream::start_with_headers(move |n| {
            let (status, body) = respond(n);
            (status, String::new(), body)
        })
    }

    /// `respond(n)` gives the status, extra header lines (each ending in `\r\n`) and body.
    fn start_with_headers(
        respond: impl Fn(usize) -> (u16, String, String) + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<(Instant, Request)>>> = Arc::default();
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
                            s.push((Instant::now(), req));
                            s.len()
                        };
                        let (status, headers, body) = respond(n);
                        let reply = reply(status, &headers, &body);
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
        self.receipts().into_iter().map(|(_, r)| r).collect()
    }

    /// Every request with the instant it arrived.
    fn receipts(&self) -> Vec<(Instant, Request)> {
        self.seen.lock().expect("lock").clone()
    }
}

/// `sendgate run --config CONFIG` in `dir`, once `worker_started` is logged.
fn start_worker(dir: &Path, config: &Path) -> Worker {
    Worker::start(&mut run_command(dir, config))
}

fn run_command(dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(["run", "--config"]).arg(config).current_dir(dir);
    cmd
}

fn config(dir: &Path, upstream_url: &str, extra: &str) -> PathBuf {
    // 00:10 at 3600×: the local midnight is almost 24 real seconds away, for tests
    // that watch a few virtual hours on a loaded machine.
    config_at(
        dir,
        upstream_url,
        &Clock::new("2026-11-25T00:10:00Z", 3600.0),
        extra,
    )
}

/// A worker's `[clock]` and `[pacing]`.
struct Clock {
    start: DateTime<Utc>,
    speed: f64,
    gap_s: (u64, u64),
}

impl Clock {
    fn new(start: &str, speed: f64) -> Clock {
        Clock {
            start: utc(start),
            speed,
            gap_s: (1, 2),
        }
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// The test configuration with the caller's clock and pacing.
fn config_at(dir: &Path, upstream_url: &str, clock: &Clock, extra: &str) -> PathBuf {
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
min_gap_s = {min_gap}
max_gap_s = {max_gap}
[status]
path = "{d}/status.json"
every_s = 1
[clock]
start = "{start}"
speed = {speed:.1}
{extra}"#,
        d = dir.display(),
        start = clock.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        speed = clock.speed,
        min_gap = clock.gap_s.0,
        max_gap = clock.gap_s.1,
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
    let w = start_worker(dir.path(), &cfg);
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
    let (code, out, _) = cli(&cfg, &["audit"]);
    assert_eq!(code, 0, "{out}");
}

/// Requests received by `w` (for a clock `c`) that it certainly sent before `t`.
fn sent_before(up: &Upstream, w: &Worker, c: &Clock, t: DateTime<Utc>) -> Vec<(DateTime<Utc>, String)> {
    up.receipts()
        .into_iter()
        .filter(|(at, _)| *at >= w.spawned)
        .map(|(at, r)| (w.vtime_at_most(c.start, c.speed, at), r.key))
        .filter(|(v, _)| *v < t)
        .collect()
}

/// Wait until `up` has more than `n` requests.
fn wait_for_requests(up: &Upstream, n: usize, what: &str) {
    wait_until(what, || up.requests().len() > n);
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
    // 7200×: the 16 virtual hours left of the day take 8 real seconds.
    let clock = Clock::new("2026-11-25T08:00:00Z", 7200.0);
    let midnight = utc("2026-11-26T00:00:00Z");
    let cfg = config_at(dir.path(), &up.url, &clock, "");
    let w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    w.wait_for_log("\"event\":\"rate_limited\"");
    // The whole rest of the local day: the next request comes after its midnight.
    wait_for_requests(&up, 2, "sends to resume on the next day");
    let early = sent_before(&up, &w, &clock, midnight);
    assert_eq!(
        early.len(),
        2,
        "no retry and no other send on the day of the 429: {early:?}"
    );
    let (code, log) = w.stop();
    assert_eq!(code, 0);
    assert!(log.contains("\"event\":\"account_held\""), "{log}");
    assert!(
        log.contains("2026-11-26T00:00:00"),
        "held until the next window opening:\n{log}"
    );
}

#[test]
fn a_429_holds_across_a_restart_and_a_clock_stepped_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|n| {
        if n == 2 {
            (429, String::new())
        } else {
            (200, "{}".into())
        }
    });
    let midnight = utc("2026-11-26T00:00:00Z");
    let first = Clock::new("2026-11-25T08:00:00Z", 7200.0);
    let cfg = config_at(dir.path(), &up.url, &first, "");
    let w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    w.wait_for_log("\"event\":\"account_held\"");
    assert_eq!(w.stop().0, 0);
    assert_eq!(up.requests().len(), 2, "the 429 was the second request");

    // A restart with the clock stepped back to 01:00 of the same day, watched for ten
    // virtual hours (past the 429's own time).
    let back = Clock::new("2026-11-25T01:00:00Z", 7200.0);
    let cfg = config_at(dir.path(), &up.url, &back, "");
    let w = start_worker(dir.path(), &cfg);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(w.stop().0, 0);
    assert_eq!(
        up.requests().len(),
        2,
        "a restart with the clock stepped back sent on the day of the 429"
    );

    // A restart at 08:00 again (the 429's time is behind it): nothing until midnight,
    // then the account sends again.
    let again = Clock::new("2026-11-25T08:00:00Z", 36000.0);
    let cfg = config_at(dir.path(), &up.url, &again, "");
    let w = start_worker(dir.path(), &cfg);
    wait_for_requests(&up, 2, "sends to resume on the next day");
    let early = sent_before(&up, &w, &again, midnight);
    assert!(
        early.is_empty(),
        "sent on the day of the 429 after a restart: {early:?}"
    );
    assert_eq!(w.stop().0, 0);
}

#[test]
fn a_retry_after_beyond_the_next_window_is_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    const RETRY_AFTER_S: i64 = 36 * 3600;
    let up = Upstream::start_with_headers(|n| {
        if n == 2 {
            (429, format!("retry-after: {RETRY_AFTER_S}\r\n"), String::new())
        } else {
            (200, String::new(), "{}".into())
        }
    });
    // 36000×: the 36 virtual hours of the hold take 3.6 real seconds.
    let clock = Clock::new("2026-11-25T08:00:00Z", 36000.0);
    let cfg = config_at(dir.path(), &up.url, &clock, "");
    let w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    wait_for_requests(&up, 2, "sends to resume after the Retry-After");
    let receipts = up.receipts();
    // The hold runs from the 429, which the worker's clock read no earlier than this.
    let limited_at = w.vtime_at_least(clock.start, clock.speed, receipts[1].0);
    let held_until = limited_at + chrono::Duration::seconds(RETRY_AFTER_S);
    assert!(
        held_until > utc("2026-11-26T00:00:00Z"),
        "later than the next window"
    );
    let early = sent_before(&up, &w, &clock, held_until);
    assert_eq!(
        early.len(),
        2,
        "sent before the Retry-After ran out ({held_until}): {early:?}"
    );
    let (code, log) = w.stop();
    assert_eq!(code, 0);
    let held = w_events(&log, "account_held");
    let until = held
        .first()
        .and_then(|v| v["until"].as_str())
        .map(utc)
        .expect("account_held with an until");
    assert!(
        until >= held_until,
        "held until {until}, Retry-After asks for {held_until}"
    );
}

/// The JSON events `name` of a log.
fn w_events(log: &str, name: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == name)
        .collect()
}

#[test]
fn a_sighup_lowering_the_caps_stops_the_day_at_the_new_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    // Sends 600–900 virtual seconds apart: 80–125 ms of real time at 7200×.
    let clock = Clock {
        gap_s: (600, 900),
        ..Clock::new("2026-11-25T08:00:00Z", 7200.0)
    };
    let midnight = utc("2026-11-26T00:00:00Z");
    const OLD_CAP: usize = 10;
    const NEW_CAP: usize = 2;
    let cfg = config_at(
        dir.path(),
        &up.url,
        &clock,
        &format!("[caps]\ninvites = {OLD_CAP}\n"),
    );
    let w = start_worker(dir.path(), &cfg);
    // The account takes its invite cap from `[caps]` (no override of its own).
    let setup = setup(80).replace(r#","caps":{"invites":80}"#, "");
    assert!(!setup.contains("\"caps\""), "{setup}");
    drop_file(dir.path(), "001-setup.jsonl", setup.as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    wait_until("three sends under the old caps", || up.requests().len() >= 3);
    config_at(
        dir.path(),
        &up.url,
        &clock,
        &format!("[caps]\ninvites = {NEW_CAP}\n"),
    );
    w.signal(libc::SIGHUP);
    w.wait_for_log("config_reloaded");
    // Reservations made under the old caps, counted in the worker's own log order.
    let log = w.log();
    let before_reload = log
        .lines()
        .take_while(|l| !l.contains("config_reloaded"))
        .filter(|l| l.contains("\"event\":\"action_reserved\""))
        .count();
    assert!(
        before_reload > NEW_CAP,
        "the day's count ({before_reload}) is already over the new cap"
    );
    // Watch the whole day: wait until the worker's clock is surely past midnight.
    wait_until("the next local day", || {
        w.vtime_at_least(clock.start, clock.speed, Instant::now()) >= midnight + chrono::Duration::hours(2)
    });
    let that_day = sent_before(&up, &w, &clock, midnight);
    assert_eq!(
        that_day.len(),
        before_reload,
        "sends after the caps were lowered to {NEW_CAP} on a day that had {before_reload}"
    );
    let next_day = up.requests().len() - that_day.len();
    assert!(
        (1..=NEW_CAP).contains(&next_day),
        "the next day sends again, up to the new cap: {next_day}"
    );
    assert_eq!(w.stop().0, 0);
}

/// A `campaign` record that moves campaign `c1` to zone `tz`, then invites `i`, `i+1`
/// ... for it, `n` of them (the first of `invites(i + n)` left out).
fn campaign_zone(tz: &str, i: usize, n: usize) -> String {
    let more: String = invites(i + n)
        .lines()
        .skip(i)
        .map(|l| l.to_string() + "\n")
        .collect();
    format!(r#"{{"type":"campaign","id":"c1","timezone":"{tz}"}}"#) + "\n" + &more
}

#[test]
fn a_campaign_zone_change_never_reopens_its_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    // 10:00 UTC at 60×: the campaign's UTC day has 14 virtual hours (14 real minutes)
    // left, far more than the test takes.
    let clock = Clock::new("2026-11-25T10:00:00Z", 60.0);
    let cfg = config_at(dir.path(), &up.url, &clock, "");
    let w = start_worker(dir.path(), &cfg);
    // The account could send 80 invites today; its campaign allows 3 a day.
    let setup = setup(80).replace(r#""daily_limit":100"#, r#""daily_limit":3"#);
    drop_file(dir.path(), "001-setup.jsonl", setup.as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(10).as_bytes());
    wait_until("the campaign's 3 invites", || up.requests().len() >= 3);
    w.wait_for_log("cap_exhausted");
    // UTC−12 is on the date before, UTC+14 on the date after: neither may open a day
    // with empty counters over the hours of the day that sent 3, for fresh invites.
    for (i, tz) in ["Etc/GMT+12", "Etc/GMT-14"].into_iter().enumerate() {
        let name = format!("00{}-zone.jsonl", i + 3);
        drop_file(dir.path(), &name, campaign_zone(tz, 10 * (i + 1), 10).as_bytes());
        let done = dir.path().join("spool/done").join(&name);
        wait_until("the zone change applied", || done.exists());
        // Two virtual minutes: a reopened day would send its 3 within seconds.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            up.requests().len(),
            3,
            "after {tz}: the campaign sent more than its day's 3 as counted by the server"
        );
    }
    // `status` through the running worker: the zone in force is still UTC, the change
    // takes effect when the UTC day ends and UTC+14's next date begins (Nov 26 10:00Z).
    let (code, out, err) = cli(&cfg, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    let c1 = &v["campaigns"][0];
    assert_eq!(c1["timezone"], "UTC", "{c1}");
    assert_eq!(c1["local_day"], "2026-11-25", "{c1}");
    assert_eq!(c1["today"]["invite"]["used"], 3, "{c1}");
    assert_eq!(
        c1["timezone_next"],
        serde_json::json!(["Etc/GMT-14", "2026-11-26T10:00:00Z"]),
        "{c1}"
    );
    check_status_schema(&v, "a running worker");
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let (code, out, _) = cli(&cfg, &["audit"]);
    assert_eq!(code, 0, "{out}");
}

/// `record` (an account or a campaign record naming `timezone`) moves its day's zone
/// to Pago Pago just before midnight UTC, which holds the UTC day on until Pago Pago's
/// next date; the day's 3 invites go out after midnight UTC, on the held day; then
/// `record` moves it back to UTC. UTC's next date began while the held day still
/// counted: opening it now would send 3 more within minutes, 6 in one UTC date.
fn change_back_after_midnight(record: &str, invites_cap: u32, daily_limit: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    // 23:58 UTC at 60×: midnight two real seconds after the start.
    let clock = Clock::new("2026-11-25T23:58:00Z", 60.0);
    let cfg = config_at(dir.path(), &up.url, &clock, "");
    let w = start_worker(dir.path(), &cfg);
    let setup =
        setup(invites_cap).replace(r#""daily_limit":100"#, &format!(r#""daily_limit":{daily_limit}"#));
    let zone = |tz: &str| record.replace("ZONE", tz) + "\n";
    drop_file(dir.path(), "001-setup.jsonl", setup.as_bytes());
    drop_file(dir.path(), "002-zone.jsonl", zone("Pacific/Pago_Pago").as_bytes());
    let done = |name: &str| dir.path().join("spool/done").join(name);
    wait_until("the zone change applied", || done("002-zone.jsonl").exists());
    std::thread::sleep(Duration::from_secs(4));
    drop_file(dir.path(), "003-invites.jsonl", invites(5).as_bytes());
    wait_until("the held day's 3 invites", || up.requests().len() >= 3);
    let back = zone("UTC")
        + &campaign_zone("UTC", 5, 5)
            .lines()
            .skip(1)
            .map(|l| l.to_string() + "\n")
            .collect::<String>();
    drop_file(dir.path(), "004-back.jsonl", back.as_bytes());
    wait_until("the change back applied", || done("004-back.jsonl").exists());
    // Three virtual minutes: a day opened part-way would send its 3 within seconds.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        up.requests().len(),
        3,
        "after the change back: more than 3 invites in the UTC date 2026-11-26, as counted by the server"
    );
    assert_eq!(w.stop().0, 0);
    let (code, out, _) = cli(&cfg, &["audit"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_campaign_zone_changed_back_after_midnight_opens_no_day_part_way() {
    change_back_after_midnight(r#"{"type":"campaign","id":"c1","timezone":"ZONE"}"#, 80, 3);
}

#[test]
fn an_account_zone_changed_back_after_midnight_opens_no_day_part_way() {
    change_back_after_midnight(r#"{"type":"account","id":"a1","timezone":"ZONE"}"#, 3, 100);
}

#[test]
fn hostile_files_are_rejected_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = start_worker(dir.path(), &cfg);
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
    let w = start_worker(dir.path(), &cfg);
    let start = Instant::now();
    let (code, _, err) = cli(&cfg, &["run"]);
    assert_eq!(code, 74, "{err}");
    assert!(start.elapsed() < Duration::from_secs(10), "exits at once");
    assert!(err.contains("store_failed"));
    // `status` asks the running worker through its admin socket instead.
    let (code, out, err) = cli(&cfg, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status at"));
    assert_eq!(w.stop().0, 0);
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = start_worker(dir.path(), &cfg);
    std::fs::write(&cfg, "[caps]\ninvitez = 3\n").expect("break the config");
    w.signal(libc::SIGHUP);
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
    let w = start_worker(dir.path(), &cfg);
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
    let w = start_worker(dir.path(), &cfg);
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
    let w = start_worker(dir.path(), &cfg);
    let status = dir.path().join("status.json");
    wait_until("the first status file", || status.exists());
    std::fs::remove_file(&status).expect("remove status");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!status.exists(), "every_s = 3600: no rewrite yet");
    let fast = original.replace("max_file_bytes = 8192\n", "max_file_bytes = 100\n");
    assert_ne!(fast, original);
    std::fs::write(&cfg, &fast).expect("write config");
    w.signal(libc::SIGHUP);
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

/// A restart-only key keeps its running value across reloads: while the file differs
/// from what runs, every reload says a restart is needed; once the file is put back,
/// none does (the running worker never took the new value).
#[test]
fn sighup_reports_a_restart_only_key_against_the_running_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let original = std::fs::read_to_string(&cfg).expect("config");
    let store = format!("path = \"{}\"", dir.path().join("store").display());
    assert!(original.contains(&store), "{original}");
    let moved = original.replace(
        &store,
        &format!("path = \"{}\"", dir.path().join("elsewhere").display()),
    );
    let w = start_worker(dir.path(), &cfg);
    let count = |needle: &str| w.log().matches(needle).count();
    let reload = |text: &str, n: usize| {
        std::fs::write(&cfg, text).expect("write config");
        w.signal(libc::SIGHUP);
        wait_until("the reload", || count("\"config_reloaded\"") >= n);
    };
    reload(&moved, 1);
    assert_eq!(count("\"config_restart_needed\""), 1, "{}", w.log());
    reload(&moved, 2);
    assert_eq!(
        count("\"config_restart_needed\""),
        2,
        "still needed:\n{}",
        w.log()
    );
    reload(&original, 3);
    assert_eq!(
        count("\"config_restart_needed\""),
        2,
        "the file matches what runs:\n{}",
        w.log()
    );
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
}

// --- The store's identity, read-only commands, errors, modes, status and notify. ---

/// Run `sendgate run` until it exits by itself.
fn run_to_exit(dir: &Path, cfg: &Path) -> (i32, String) {
    Worker::spawn(&mut run_command(dir, cfg)).wait_exit()
}

#[test]
fn a_wiped_store_exits_74_and_the_upstream_gets_nothing_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = start_worker(dir.path(), &cfg);
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
        let (code, out, err) = cli(&cfg, &["audit"]);
        assert_eq!(code, 74, "{wipe}: audit refuses too:\n{out}{err}");
        assert!(!out.contains("overshoots: 0"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.requests().len(), 5, "nothing more reached the upstream");
}

/// `rm -rf` of the store directory under a running worker: it went on sending into
/// the removed files and answering `status` until its stop (16 more sends in 8 s), and
/// the next start made a new, empty store and gave the day's caps out again. Now the
/// worker fails within a status interval (exit 74, naming the path), and a start that
/// finds no store while the spool's `done/` holds applied files refuses to make one.
#[test]
fn a_store_removed_under_the_worker_fails_it_and_is_not_made_anew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(30).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    wait_until("5 requests", || up.requests().len() >= 5);
    let store = dir.path().join("store");
    std::fs::remove_dir_all(&store).expect("rm -rf store");
    // Before, it ran on until its stop: `wait_exit` fails after its deadline.
    let (code, log) = w.wait_exit();
    assert_eq!(code, 74, "the worker fails on its removed store:\n{log}");
    assert!(log.contains("\"event\":\"store_failed\""), "{log}");
    assert!(log.contains("removed or replaced"), "{log}");
    let sent = up.requests().len();
    // systemd's restart: no new store, nothing sent.
    let (code, log) = run_to_exit(dir.path(), &cfg);
    assert_eq!(code, 74, "a start without its store refuses to make one:\n{log}");
    assert!(log.contains("done"), "names the spool's done/:\n{log}");
    assert!(!store.exists(), "no new store was made");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.requests().len(), sent, "nothing more reached the upstream");
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
        let args: Vec<&str> = [cmd].iter().chain(extra).copied().collect();
        let (code, out, err) = cli(&cfg, &args);
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
    let w = start_worker(dir.path(), &cfg);
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
    let w = Worker::spawn(&mut cmd);
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
    assert_eq!(start_worker(dir.path(), &cfg).stop().0, 0);
    // Only the status file reads the per-state counts of an idle store: make them
    // undecodable behind the store's back.
    let store = dir.path().join("store");
    {
        let db = common::raw_sled(&store);
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("state_counts", &[0xffu8, 0xff, 0xff][..])
            .expect("write");
        db.flush().expect("flush");
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
    let w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(3).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(5).as_bytes());
    wait_until("3 requests", || up.requests().len() >= 3);
    std::thread::sleep(Duration::from_millis(1500)); // a status file written after them
    let sent = up.requests().len();
    assert_eq!(sent, 3, "the invite cap of 3 holds");
    let check = |out: &str, from: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{from}: {e}: {out}"));
        check_status_schema(&v, from);
        let a = &v["accounts"][0];
        assert_eq!(a["id"], "a1", "{from}: {v}");
        let today = &a["today"];
        assert_eq!(
            today["invites"]["used"], sent,
            "{from}: invites used = requests received: {v}"
        );
        assert_eq!(today["invites"]["cap"], 3, "{from}: the invite cap in force: {v}");
        assert_eq!(today["messages"]["used"], 0, "{from}: {v}");
        assert_eq!(
            today["weekly_invites"]["used"], sent,
            "{from}: the week began today: {v}"
        );
        assert_eq!(
            today["weekly_invites"]["cap"],
            serde_json::Value::Null,
            "{from}: no weekly cap: {v}"
        );
        assert_eq!(a["ramp_week"], 1, "{from}: ramp_start is today: {v}");
        assert_eq!(a["paused"], false, "{from}: {v}");
        assert_eq!(a["held_until"], serde_json::Value::Null, "{from}: {v}");
        // No acceptance feedback ever arrived: a new account reads `watch` from the start.
        assert_eq!(a["health"], "watch", "{from}: {v}");
        assert!(
            a["health_reason"].as_str().is_some_and(
                |r| r.starts_with("no acceptance feedback") && r.contains("0 rate limits in 7 days")
            ),
            "{from}: {v}"
        );
        let c = &v["campaigns"][0];
        assert_eq!(c["id"], "c1", "{from}: {v}");
        assert_eq!(c["paused"], false, "{from}: {v}");
        assert_eq!(c["today"]["invite"]["used"], sent, "{from}: {v}");
        assert_eq!(c["today"]["invite"]["cap"], 100, "{from}: daily_limit: {v}");
        assert_eq!(c["today"]["message"]["used"], 0, "{from}: {v}");
        assert_eq!(c["today"]["inmail"]["cap"], 100, "{from}: {v}");
        assert_eq!(v["paused_all"], false, "{from}: {v}");
        assert_eq!(v["states"]["sent"], sent, "{from}: {v}");
        assert_eq!(v["states"]["parked"], 2, "{from}: {v}");
        v
    };
    let (code, running, err) = cli(&cfg, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let running = check(&running, "running worker");
    assert_eq!(w.stop().0, 0);
    // A stopped worker's status is of the real clock unless `--at` names the time.
    let at = running["now"].as_str().expect("now").to_string();
    let (code, stopped, err) = cli(&cfg, &["status", "--json", "--at", &at]);
    assert_eq!(code, 0, "{err}");
    let stopped = check(&stopped, "store");
    assert_eq!(shape(&running), shape(&stopped), "one schema");
    // The text output reads the same report, from the store.
    let (code, text, err) = cli(&cfg, &["status", "--at", &at]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&format!("{sent}/3")), "{text}");
}

/// Every field of SPEC §8's `status --json`, with its type.
fn check_status_schema(v: &serde_json::Value, from: &str) {
    use serde_json::Value;
    let string = |x: &Value| x.is_string();
    let count = |x: &Value| x.is_u64();
    let time_or_null = |x: &Value| {
        x.is_null()
            || x.as_str()
                .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok())
    };
    let has = |obj: &Value, field: &str, ok: &dyn Fn(&Value) -> bool, what: &str| {
        let x = obj
            .get(field)
            .unwrap_or_else(|| panic!("{from}: {what} lacks {field}: {v}"));
        assert!(ok(x), "{from}: {what}.{field} has the wrong type: {x}");
    };
    let usage = |x: &Value| {
        x.get("used").is_some_and(|u| u.is_u64()) && x.get("cap").is_some_and(|c| c.is_null() || c.is_u64())
    };
    has(v, "now", &|x| time_or_null(x) && !x.is_null(), "status");
    has(v, "paused_all", &|x| x.is_boolean(), "status");
    has(v, "upstream", &|x| x.is_object(), "status");
    has(&v["upstream"], "state", &|x| x == "up" || x == "down", "upstream");
    has(&v["upstream"], "since", &time_or_null, "upstream");
    for state in [
        "queued",
        "parked",
        "inflight",
        "sent",
        "failed",
        "unknown",
        "cancelled",
    ] {
        has(&v["states"], state, &count, "states");
    }
    let accounts = v["accounts"]
        .as_array()
        .unwrap_or_else(|| panic!("{from}: accounts: {v}"));
    assert!(!accounts.is_empty(), "{from}: {v}");
    for a in accounts {
        has(a, "id", &string, "account");
        has(a, "health", &string, "account");
        has(a, "health_reason", &string, "account");
        has(a, "ramp_ceiling", &count, "account");
        has(a, "ramp_week", &count, "account");
        has(a, "paused", &|x| x.is_boolean(), "account");
        has(a, "held_until", &time_or_null, "account");
        has(a, "inmail_credits", &count, "account");
        has(a, "next_send", &time_or_null, "account");
        for counter in ["invites", "messages", "inmails", "engagement", "weekly_invites"] {
            has(&a["today"], counter, &usage, "account.today");
        }
        has(a, "waiting", &|x| x.is_array(), "account");
        for w in a["waiting"].as_array().into_iter().flatten() {
            has(w, "reason", &string, "waiting");
            has(w, "count", &count, "waiting");
            has(w, "until", &time_or_null, "waiting");
        }
    }
    let campaigns = v["campaigns"]
        .as_array()
        .unwrap_or_else(|| panic!("{from}: campaigns: {v}"));
    assert!(!campaigns.is_empty(), "{from}: {v}");
    for c in campaigns {
        has(c, "id", &string, "campaign");
        has(c, "paused", &|x| x.is_boolean(), "campaign");
        for t in ["invite", "message", "inmail"] {
            has(&c["today"], t, &usage, "campaign.today");
        }
        has(
            c,
            "states",
            &|x| x.as_object().is_some_and(|m| m.values().all(|n| n.is_u64())),
            "campaign",
        );
    }
}

/// The object keys of a JSON document, as paths (arrays by their first element).
fn shape(v: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{at}.{k}");
                    out.push(p.clone());
                    walk(x, p, out);
                }
            }
            serde_json::Value::Array(xs) => {
                if let Some(x) = xs.first() {
                    walk(x, format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

#[test]
fn sd_notify_says_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    let notify = Notify::bind(&dir.path().join("notify.sock"));
    let mut cmd = notify.worker(&cfg, dir.path(), 1_000_000);
    let w = Worker::spawn(&mut cmd);
    w.wait_for_log("worker_started");
    let has = |needle: &str| {
        notify
            .messages()
            .iter()
            .any(|(_, m)| m.lines().any(|l| l.starts_with(needle)))
    };
    wait_until("READY=1", || has("READY=1"));
    wait_until("a STATUS= with the upstream state and the action counts", || {
        has("STATUS=upstream up; 0 accounts; actions:")
    });
    wait_until("WATCHDOG=1", || has("WATCHDOG=1"));
    let pings = || {
        notify
            .messages()
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .count()
    };
    let first = pings();
    wait_until("a second WATCHDOG=1", || pings() > first);
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    wait_until("STOPPING=1", || has("STOPPING=1"));
    let all: Vec<String> = notify.messages().into_iter().map(|(_, m)| m).collect();
    let ready = all.iter().position(|m| m.contains("READY=1")).expect("ready");
    let stopping = all
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .expect("stopping");
    assert!(ready < stopping, "READY before STOPPING: {all:?}");
}

/// Unmounts a test's tmpfs when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// P5 at the binary: the store's file system fills up underneath a worker that is
/// sending (a small tmpfs mounted as the store directory; needs root, skipped with the
/// reason otherwise). The worker logs `store_failed` and exits 74; every request the
/// upstream received had a durable reservation (once space returns, the store holds
/// each of them as reserved, never as `queued`), and none came after the exit.
#[test]
fn a_store_that_fills_up_while_sending_fails_closed_with_74() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).expect("mkdir store");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&store_dir)
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "SKIPPED: a_store_that_fills_up_while_sending_fails_closed_with_74 needs to mount a tmpfs (root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!(
                "SKIPPED: a_store_that_fills_up_while_sending_fails_closed_with_74: cannot run mount: {e}"
            );
            return;
        }
    }
    let _unmount = Unmount(store_dir.clone());
    let up = Upstream::start(|_| (200, "{}".into()));
    // Sends 60–120 virtual seconds apart: 17–33 ms of real time at 3600×.
    let clock = Clock {
        gap_s: (60, 120),
        ..Clock::new("2026-11-25T08:00:00Z", 3600.0)
    };
    let cfg = config_at(dir.path(), &up.url, &clock, "");
    let mut w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    drop_file(dir.path(), "002-invites.jsonl", invites(30).as_bytes());
    wait_until("a few sends", || up.requests().len() >= 3);
    // Fill the file system underneath the running worker.
    let filler = store_dir.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let at_full = up.requests().len();
    let start = Instant::now();
    let code = loop {
        if let Some(status) = w.child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the worker goes on with a full store ({} requests):\n{}",
            up.requests().len(),
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100)); // let the log reader drain
    let log = w.log();
    assert_eq!(code, Some(74), "exit code on a full store:\n{log}");
    assert!(log.contains("\"event\":\"store_failed\""), "{log}");
    let received = up.requests();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.requests().len(), received.len(), "a request after the exit");
    // Space returns: every request received had a durable reservation.
    std::fs::remove_file(&filler).expect("remove the filler");
    let store = sendgate::store::Store::open(
        &store_dir,
        sendgate::store::Settings::default(),
        sendgate::store::OpenOptions::default(),
    )
    .expect("the store reopens once space returns");
    for r in &received {
        let a = store
            .action(&r.key)
            .expect("read")
            .expect("a received action is stored");
        assert!(
            matches!(
                a.state,
                sendgate::store::State::Inflight
                    | sendgate::store::State::Sent
                    | sendgate::store::State::Unknown
            ),
            "{} reached the upstream but its reservation is not in the store: {:?}",
            r.key,
            a.state
        );
    }
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    drop(store);
    println!(
        "store fills up: {at_full} requests when the disk was full, {} in all, exit 74",
        received.len()
    );
    drop(w);
}

/// Actions of the big file in the store, and whether the file is recorded as applied.
fn big_file_in_store(dir: &Path, n: usize) -> usize {
    let store = sendgate::store::Store::open(
        &dir.join("store"),
        sendgate::store::Settings::default(),
        sendgate::store::OpenOptions::default(),
    )
    .expect("the store opens after the kill");
    let found = (0..n)
        .filter(|i| store.action(&format!("c1/p{i}/invite")).expect("read").is_some())
        .count();
    let counts = store.state_counts().expect("counts");
    assert_eq!(
        counts.iter().sum::<u64>() as usize,
        found,
        "the state counts agree with the actions"
    );
    found
}

/// P6 across a crash: SIGKILL while the worker applies a big file leaves none of it in
/// the store (checked at once, before anything else runs), and the next start takes
/// the file from `processing/` again and applies all of it.
#[test]
fn a_kill_during_a_big_apply_leaves_none_and_the_restart_applies_all() {
    const N: usize = 30_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(|_| (200, "{}".into()));
    let cfg = config(dir.path(), &up.url, "");
    // The big file needs more than the 8 KiB limit the other tests use.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("max_file_bytes = 8192", "max_file_bytes = 67108864"),
    )
    .expect("config");
    let mut w = start_worker(dir.path(), &cfg);
    drop_file(dir.path(), "001-setup.jsonl", setup(80).as_bytes());
    wait_until("the setup file", || {
        dir.path().join("spool/done/001-setup.jsonl").exists()
    });
    drop_file(dir.path(), "002-big.jsonl", invites(N).as_bytes());
    let processing = dir.path().join("spool/processing/002-big.jsonl");
    wait_until("the big file claimed", || processing.exists());
    std::thread::sleep(Duration::from_millis(150));
    w.child.kill().expect("SIGKILL");
    let _ = w.child.wait();
    let applied_before_kill = w_events(&w.log(), "file_applied")
        .iter()
        .any(|v| v["file"] == "002-big.jsonl");
    assert!(
        processing.exists() && !applied_before_kill,
        "the kill was meant to land during the apply; it came after:\n{}",
        w.log()
    );
    drop(w);
    let found = big_file_in_store(dir.path(), N);
    assert!(
        found == 0 || found == N,
        "half applied after the kill: {found} of {N}"
    );
    // The next start takes it again, whole.
    let mut w = start_worker(dir.path(), &cfg);
    let done = dir.path().join("spool/done/002-big.jsonl");
    wait_until("the big file applied after the restart", || done.exists());
    w.child.kill().expect("SIGKILL");
    let _ = w.child.wait();
    drop(w);
    assert_eq!(
        big_file_in_store(dir.path(), N),
        N,
        "the restart applied all of it"
    );
}
