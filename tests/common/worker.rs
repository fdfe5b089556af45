//! A `sendgate run` child whose standard error is collected, for tests that drive the
//! real binary from outside.

use chrono::{DateTime, Utc};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait of these helpers gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Worker {
    pub child: Child,
    log: Arc<Mutex<String>>,
    /// Just before the process was started: its virtual clock starts at `[clock] start`
    /// no earlier than this instant (see `Worker::vtime_at_most`).
    pub spawned: Instant,
    /// When `worker_started` was read: the virtual clock had started by then.
    started_seen: Instant,
}

impl Worker {
    /// Spawn `cmd` and wait for `worker_started`.
    pub fn start(cmd: &mut Command) -> Worker {
        let mut w = Worker::spawn(cmd);
        w.wait_for_log("worker_started");
        w.started_seen = Instant::now();
        w
    }

    /// Spawn `cmd` (standard input and output closed, standard error collected); does
    /// not wait for anything.
    pub fn spawn(cmd: &mut Command) -> Worker {
        let spawned = Instant::now();
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
        Worker {
            child,
            log,
            spawned,
            started_seen: spawned,
        }
    }

    /// Wait for the process to exit by itself: (exit code, its log).
    pub fn wait_exit(mut self) -> (i32, String) {
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

    /// The earliest the worker's virtual clock can have read at the real instant `t`:
    /// its clock had started when `worker_started` was read.
    pub fn vtime_at_least(&self, start: DateTime<Utc>, speed: f64, t: Instant) -> DateTime<Utc> {
        let real = t.saturating_duration_since(self.started_seen);
        start + chrono::Duration::milliseconds((real.as_secs_f64() * speed * 1000.0).floor() as i64)
    }

    /// The latest the worker's virtual clock can have read at the real instant `t`, for
    /// a worker started with `[clock] start` and `speed`: its clock started after
    /// `spawned`, so it is behind `start + (t - spawned) * speed`. A request whose bound
    /// is before a local midnight was certainly sent before it, however slowly the
    /// worker started on a loaded machine.
    pub fn vtime_at_most(&self, start: DateTime<Utc>, speed: f64, t: Instant) -> DateTime<Utc> {
        let real = t.saturating_duration_since(self.spawned);
        start + chrono::Duration::milliseconds((real.as_secs_f64() * speed * 1000.0).ceil() as i64)
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    pub fn wait_for_log(&self, needle: &str) {
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

    pub fn signal(&self, sig: libc::c_int) {
        super::signal(&self.child, sig);
    }

    /// SIGTERM, then wait for the exit: (exit code, the log).
    pub fn stop(mut self) -> (i32, String) {
        self.signal(libc::SIGTERM);
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

/// `wait_until`, and on timeout the last lines each worker logged: what they were doing
/// when the wait gave up.
pub fn wait_watching(workers: &[&Worker], what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= DEADLINE {
            let tails: Vec<String> = workers
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let log = w.log();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                    format!("--- worker {} (last 40 lines) ---\n{tail}", i + 1)
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A stand-in for systemd's notify socket: every datagram a worker sends it, with the
/// moment it came.
pub struct Notify {
    path: std::path::PathBuf,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    /// Listen at `path`.
    pub fn bind(path: &std::path::Path) -> Notify {
        let socket = std::os::unix::net::UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => seen2
                        .lock()
                        .expect("lock")
                        .push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        Notify {
            path: path.to_path_buf(),
            seen,
        }
    }

    /// The messages so far, in order, each with when it came.
    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.seen.lock().expect("lock").clone()
    }

    /// `sendgate run --config cfg` in `dir` as systemd starts it under a watchdog of
    /// `usec` µs. systemd gives the watchdog to the main pid: WATCHDOG_PID must be the
    /// worker's own, so a shell sets it and execs the worker under the same pid.
    pub fn worker(&self, cfg: &std::path::Path, dir: &std::path::Path, usec: u64) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""])
            .arg(env!("CARGO_BIN_EXE_sendgate"))
            .arg(cfg)
            .current_dir(dir)
            .env("NOTIFY_SOCKET", &self.path)
            .env("WATCHDOG_USEC", usec.to_string());
        cmd
    }
}
