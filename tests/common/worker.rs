//! A `sendgate run` child whose standard error is collected, for tests that drive the
//! real binary from outside.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait of these helpers gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Worker {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Worker {
    /// Spawn `cmd` (standard input and output closed, standard error collected) and wait
    /// for `worker_started`.
    pub fn start(cmd: &mut Command) -> Worker {
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
        let w = Worker { child, log };
        w.wait_for_log("worker_started");
        w
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    pub fn wait_for_log(&self, needle: &str) {
        wait_until(&format!("`{needle}` in the log"), || self.log().contains(needle));
    }

    /// SIGTERM, then wait for the exit: (exit code, the log).
    pub fn stop(mut self) -> (i32, String) {
        super::signal(&self.child, libc::SIGTERM);
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

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
