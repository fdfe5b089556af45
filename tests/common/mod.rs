//! Shared test helpers: job-file builders and store setup.
#![allow(dead_code)]

pub mod http;
pub mod sim;
pub mod worker;

use chrono::{DateTime, Utc};
use sendgate::contract::jobfile::parse_file;
use sendgate::store::{ApplyOutcome, OpenOptions, Settings, Store, StoreError};
use std::path::Path;

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// An account open every day, all day (00:00–23:59 local).
pub fn account_line(id: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"account","id":"{id}","tier":"sales_navigator_core","timezone":"UTC","window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"established":true{extra}}}"#
    )
}

pub fn campaign_line(id: &str, daily_limit: u32, extra: &str) -> String {
    format!(r#"{{"type":"campaign","id":"{id}","daily_limit":{daily_limit}{extra}}}"#)
}

pub fn action_line(id: &str, campaign: &str, account: &str, kind: &str) -> String {
    format!(
        r#"{{"type":"action","id":"{id}","campaign":"{campaign}","account":"{account}","kind":"{kind}","prospect":"https://www.linkedin.com/in/{id}","payload":{{"note":"hi"}}}}"#
    )
}

pub fn open(dir: &Path, settings: Settings) -> Store {
    open_with(&dir.join("store"), settings, OpenOptions::default()).expect("store opens")
}

/// `Store::open`, waiting (bounded) while the store is still locked by a handle this
/// process just dropped: sled's background threads let go of the lock file a moment
/// after the last handle, later still on a loaded machine.
pub fn open_with(path: &Path, settings: Settings, opts: OpenOptions) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(path, settings.clone(), opts.clone()) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The store's sled database at `path`, opened directly (the store must be closed),
/// waiting (bounded) while sled still holds the lock of a handle just dropped.
pub fn raw_sled(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("store still locked ({e}), retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("raw open of {}: {e}", path.display()),
        }
    }
}

/// `sendgate ARGS --config CONFIG`: (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run sendgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parse and apply a job file; panics unless it applied.
pub fn apply(store: &Store, name: &str, text: &str, now: DateTime<Utc>) {
    parse_file(name, text.as_bytes()).expect("valid job file");
    match store.apply(name, text.as_bytes(), now).expect("store works") {
        ApplyOutcome::Applied(_) => {}
        other => panic!("{name} did not apply: {other:?}"),
    }
}

/// A campaign `c1` (daily limit 1000) and, per account, an account open all day in
/// UTC (`established` or on the ramp; `invite_cap` when given) with `invites` invite
/// actions `{account}-{i}` to prospects `https://www.linkedin.com/in/{account}-{i}`.
pub fn invite_backlog(
    accounts: &[&str],
    invites: usize,
    established: bool,
    invite_cap: Option<usize>,
) -> String {
    let mut text = String::from(r#"{"type":"campaign","id":"c1","daily_limit":1000}"#);
    text.push('\n');
    let caps = invite_cap.map_or(String::new(), |c| format!(r#","caps":{{"invites":{c}}}"#));
    for a in accounts {
        text += &format!(
            r#"{{"type":"account","id":"{a}","tier":"sales_navigator_core","timezone":"UTC","established":{established},"window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}}{caps}}}"#
        );
        text.push('\n');
        for i in 0..invites {
            text += &format!(
                r#"{{"type":"action","id":"{a}-{i}","campaign":"c1","account":"{a}","kind":"invite","prospect":"https://www.linkedin.com/in/{a}-{i}","payload":{{}}}}"#
            );
            text.push('\n');
        }
    }
    text
}

/// Drop a job file the way producers must: write it in `tmp/`, rename it into
/// `incoming/`.
pub fn drop_job_file(spool: &Path, name: &str, text: &str) {
    let tmp = spool.join("tmp").join(name);
    std::fs::write(&tmp, text).expect("write a job file in tmp/");
    std::fs::rename(&tmp, spool.join("incoming").join(name)).expect("rename it into incoming/");
}

/// Send `sig` to a child process with kill(2): no dependence on a `kill` program.
pub fn signal(child: &std::process::Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes no pointers; the pid is our own child, not reaped yet (the
    // caller holds its `Child`), so it cannot name another process.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// A `/proc/PID/status` field in bytes (`VmPeak`, `VmHWM`, ...) of a running process.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}

/// A loopback port for a server a test starts later (a worker's metrics listener, an
/// etcd member, an upstream that is down at first), free when this returns.
///
/// Never a port the kernel hands out by itself: binding port 0 and closing it gives an
/// ephemeral port, which any outgoing connection of another test may take before the
/// server binds it ("Address already in use"). These come from below the ephemeral
/// range (`net.ipv4.ip_local_port_range`, 32768 and up by default), where only a
/// fixed bind lands, spread by process id and a counter so that tests running side by
/// side start apart; a port that is taken is skipped.
pub fn quiet_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (base + n.wrapping_mul(101)) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}
