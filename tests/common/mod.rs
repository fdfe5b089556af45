//! Shared test helpers: job-file builders and store setup.
#![allow(dead_code)]

pub mod http;
pub mod worker;

use chrono::{DateTime, Utc};
use sendgate::contract::jobfile::parse_file;
use sendgate::store::{ApplyOutcome, OpenOptions, Settings, Store};
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
    Store::open(&dir.join("store"), settings, OpenOptions::default()).expect("store opens")
}

/// Parse and apply a job file; panics unless it applied.
pub fn apply(store: &Store, name: &str, text: &str, now: DateTime<Utc>) {
    let records = parse_file(name, text.as_bytes()).expect("valid job file");
    match store
        .apply(name, text.as_bytes(), &records, now)
        .expect("store works")
    {
        ApplyOutcome::Applied(_) => {}
        other => panic!("{name} did not apply: {other:?}"),
    }
}

/// Send `sig` to a child process with kill(2): no dependence on a `kill` program.
pub fn signal(child: &std::process::Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes no pointers; the pid is our own child, not reaped yet (the
    // caller holds its `Child`), so it cannot name another process.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}
