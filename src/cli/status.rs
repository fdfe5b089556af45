//! `sendgate status [--config PATH] [--json]` (SPEC §8): the running worker's status
//! file while a worker holds the store, else the store itself. It never creates a store.

use super::load_config;
use crate::exit;
use crate::store::{OpenOptions, Settings, StatusReport, Store, StoreError};
use chrono::Utc;
use std::path::Path;

pub fn run(config: Option<&Path>, json: bool) -> i32 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = config.clock.start.unwrap_or_else(Utc::now);
    let opts = OpenOptions {
        cache_mb: config.store.cache_mb,
        fail_from_op: None,
    };
    let path = &config.store.path;
    // Never creates a store: a missing or empty path is an error naming it (exit 1).
    match Store::open_existing(path, Settings::from_config(&config), opts) {
        Ok(store) => match store.status(now) {
            Ok(report) => {
                print_report(&report, json, "store");
                exit::OK
            }
            Err(e) => {
                eprintln!("sendgate: {}", e.describe(path));
                e.exit_code()
            }
        },
        Err(StoreError::Locked { .. }) => from_status_file(&config.status.path, json),
        Err(e) => {
            eprintln!("sendgate: {}", e.describe(path));
            e.exit_code()
        }
    }
}

fn from_status_file(path: &Path, json: bool) -> i32 {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "sendgate: a worker holds the store, but its status file {} cannot be read: {e}",
                path.display()
            );
            return exit::FAILURE;
        }
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sendgate: {}: {e}", path.display());
            return exit::FAILURE;
        }
    };
    if json {
        // One schema whether the worker runs or not (SPEC §8): the report, as from the
        // store; the file's `worker` section stays in the file.
        println!(
            "{}",
            serde_json::to_string_pretty(&doc["status"]).unwrap_or_default()
        );
        return exit::OK;
    }
    match serde_json::from_value::<StatusReportView>(doc["status"].clone()) {
        Ok(v) => {
            print_table(&v, &format!("worker status file {}", path.display()));
            exit::OK
        }
        Err(e) => {
            eprintln!("sendgate: {}: {e}", path.display());
            exit::FAILURE
        }
    }
}

#[derive(serde::Deserialize)]
struct AccountView {
    id: String,
    tier: String,
    local_day: String,
    invites: (u32, u32),
    messages: (u32, u32),
    inmails: (u32, u32),
    engagement: (u32, u32),
    ramp_ceiling: u32,
    health: String,
    held_until: Option<String>,
    inmail_balance: u32,
}

#[derive(serde::Deserialize)]
struct StatusReportView {
    at: String,
    /// Absent in the status file of an older worker.
    #[serde(default)]
    upstream: Option<crate::store::UpstreamStatus>,
    accounts: Vec<AccountView>,
    actions: std::collections::BTreeMap<String, u64>,
}

fn print_report(report: &StatusReport, json: bool, source: &str) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        return;
    }
    match serde_json::to_value(report).and_then(serde_json::from_value::<StatusReportView>) {
        Ok(v) => print_table(&v, source),
        Err(e) => eprintln!("sendgate: {e}"),
    }
}

fn print_table(v: &StatusReportView, source: &str) {
    println!("status at {} (from {source})", v.at);
    if let Some(u) = &v.upstream {
        let since = u.since.map_or("worker start".to_string(), |t| t.to_rfc3339());
        println!("upstream {} since {since}", u.state);
    }
    println!(
        "{:<24} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9} {:>5} {:<10} {:>7} held until",
        "account", "tier", "day", "invites", "messages", "inmails", "engage", "ramp", "health", "credits"
    );
    for a in &v.accounts {
        let pair = |p: (u32, u32)| format!("{}/{}", p.0, p.1);
        println!(
            "{:<24} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9} {:>5} {:<10} {:>7} {}",
            a.id,
            a.tier,
            a.local_day,
            pair(a.invites),
            pair(a.messages),
            pair(a.inmails),
            pair(a.engagement),
            a.ramp_ceiling,
            a.health,
            a.inmail_balance,
            a.held_until.as_deref().unwrap_or("-")
        );
    }
    let counts: Vec<String> = v.actions.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("actions: {}", counts.join(", "));
}
