//! An upstream outage as an operator lives it (SPEC §5 "Upstream down"): the real
//! binary, a loopback HTTP upstream that is down when the worker starts (connection
//! refused) and comes back on the same port. Virtual time runs 3600× faster, so a real
//! second is an hour of the sending day.

mod common;

use common::http::{read_request, HttpRequest};
use common::worker::{wait_until, Worker};
use common::{drop_job_file, invite_backlog};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const ACCOUNTS: [&str; 3] = ["a1", "a2", "a3"];
const CAP: usize = 20;

/// A loopback upstream on a given port that answers 200 and can be stopped (its port
/// then refuses connections) and started again.
struct Server {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(port: u16, seen: Arc<Mutex<Vec<HttpRequest>>>) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the upstream's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                conn.set_nonblocking(false).expect("blocking");
                conns2
                    .lock()
                    .expect("lock")
                    .push(conn.try_clone().expect("clone"));
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    while let Some(req) = read_request(&mut r) {
                        seen.lock().expect("lock").push(req);
                        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Server {
            stop,
            conns,
            accept: Some(accept),
        }
    }

    /// Close the port and every open connection.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            h.join().expect("accept thread");
        }
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn start_worker(dir: &Path, config: &Path) -> Worker {
    Worker::start(
        Command::new(env!("CARGO_BIN_EXE_sendgate"))
            .args(["run", "--config"])
            .arg(config)
            .current_dir(dir),
    )
}

#[test]
fn an_upstream_stopped_and_restarted_on_its_port_fails_nothing_and_caps_are_reached() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A free port, closed again: the upstream is down when the worker starts.
    let port = common::quiet_port();
    let d = dir.path().display();
    let cfg = dir.path().join("sendgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[store]
path = "{d}/store"
fsync = false
[spool]
dir = "{d}/spool"
rescan_s = 1
[upstream]
kind = "http"
url = "http://127.0.0.1:{port}"
timeout_s = 5
[pacing]
min_gap_s = 60
max_gap_s = 120
[status]
path = "{d}/status.json"
every_s = 1
[clock]
start = "2026-11-25T08:00:00Z"
speed = 3600.0
"#
        ),
    )
    .expect("write config");
    let w = start_worker(dir.path(), &cfg);
    let spool = dir.path().join("spool");
    drop_job_file(
        &spool,
        "001.jsonl",
        &invite_backlog(&ACCOUNTS, 3 * CAP, true, Some(CAP)),
    );
    w.wait_for_log("\"event\":\"upstream_down\"");
    let upstream_state = || {
        let text = std::fs::read_to_string(dir.path().join("status.json")).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        doc["status"]["upstream"]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until("status shows the upstream down", || upstream_state() == "down");
    // About an hour of virtual time with the port closed: the worker probes.
    std::thread::sleep(Duration::from_millis(1000));
    let seen: Arc<Mutex<Vec<HttpRequest>>> = Arc::default();
    let server = Server::start(port, Arc::clone(&seen));
    w.wait_for_log("\"event\":\"upstream_up\"");
    let total = ACCOUNTS.len() * CAP;
    wait_until("every account at its cap", || {
        seen.lock().expect("lock").len() >= total
    });
    // Two more virtual hours: the caps hold.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(upstream_state(), "up");
    server.stop();
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    let reqs = seen.lock().expect("lock").clone();
    assert_eq!(reqs.len(), total, "each account sends exactly its cap");
    for a in ACCOUNTS {
        let n = reqs.iter().filter(|r| r.body["account"] == a).count();
        assert_eq!(n, CAP, "{a}");
    }
    assert!(
        !log.contains("\"event\":\"action_failed\""),
        "an outage fails nothing:\n{log}"
    );
    let probes = log
        .lines()
        .filter(|l| l.contains("\"event\":\"action_reserved\""))
        .count()
        - total;
    println!("outage: {probes} refused attempts (probes included) before the upstream came back");
    let out = Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(["audit", "--config"])
        .arg(&cfg)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
}
