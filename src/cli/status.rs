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
    match serde_json::from_value::<StatusReport>(doc["status"].clone()) {
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

fn print_report(report: &StatusReport, json: bool, source: &str) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        return;
    }
    print_table(report, source);
}

fn print_table(v: &StatusReport, source: &str) {
    println!("status at {} (from {source})", v.now.to_rfc3339());
    let since = v
        .upstream
        .since
        .map_or("worker start".to_string(), |t| t.to_rfc3339());
    println!("upstream {} since {since}", v.upstream.state);
    println!(
        "{:<24} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>5} {:>4} {:<10} {:>7} held until",
        "account",
        "tier",
        "day",
        "invites",
        "messages",
        "inmails",
        "engage",
        "week",
        "ramp",
        "wk",
        "health",
        "credits"
    );
    let pair = |u: crate::store::Use| match u.cap {
        Some(c) => format!("{}/{c}", u.used),
        None => format!("{}/-", u.used),
    };
    for a in &v.accounts {
        let t = &a.today;
        println!(
            "{:<24} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>5} {:>4} {:<10} {:>7} {}",
            a.id,
            a.tier,
            a.local_day,
            pair(t.invites),
            pair(t.messages),
            pair(t.inmails),
            pair(t.engagement),
            pair(t.weekly_invites),
            a.ramp_ceiling,
            a.ramp_week,
            a.health,
            a.inmail_credits,
            a.held_until.map_or("-".to_string(), |t| t.to_rfc3339())
        );
        println!("{:<24} health: {}", "", a.health_reason);
    }
    if !v.campaigns.is_empty() {
        println!(
            "{:<24} {:<10} {:>9} {:>9} {:>9} paused",
            "campaign", "day", "invite", "message", "inmail"
        );
        for c in &v.campaigns {
            println!(
                "{:<24} {:<10} {:>9} {:>9} {:>9} {}",
                c.id,
                c.local_day,
                pair(c.today.invite),
                pair(c.today.message),
                pair(c.today.inmail),
                if c.paused { "yes" } else { "no" }
            );
        }
    }
    let counts: Vec<String> = v.states.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("actions: {}", counts.join(", "));
}
