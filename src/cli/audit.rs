//! `sendgate audit` (SPEC §8): recompute every counter from the ledger and compare it
//! with the caps in force at each reservation; exit 0 if there is no overshoot. It never
//! creates a store.

use super::load_config;
use crate::exit;
use crate::store::{OpenOptions, Settings, Store, StoreError};
use chrono::NaiveDate;
use std::path::Path;

fn day(flag: &str, s: Option<&str>) -> Result<Option<NaiveDate>, i32> {
    s.map(|s| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            eprintln!("sendgate: {flag} `{s}` is not a day YYYY-MM-DD");
            exit::USAGE
        })
    })
    .transpose()
}

pub fn run(config: Option<&Path>, from: Option<&str>, to: Option<&str>, json: bool) -> i32 {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (from, to) = match (day("--from", from), day("--to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let opts = OpenOptions {
        cache_mb: config.store.cache_mb,
        fail_from_op: None,
    };
    let path = &config.store.path;
    // Never creates a store: a missing or empty path is an error naming it (exit 1).
    let store = match Store::open_existing(path, Settings::from_config(&config), opts) {
        Ok(s) => s,
        Err(e @ StoreError::Locked { .. }) => {
            eprintln!(
                "sendgate: {} (audit needs the store: stop the worker first)",
                e.describe(path)
            );
            return e.exit_code();
        }
        Err(e) => {
            eprintln!("sendgate: {}", e.describe(path));
            return e.exit_code();
        }
    };
    let report = match store.audit(from, to) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sendgate: {}", e.describe(path));
            return e.exit_code();
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("audit: {} reservations in the ledger", report.entries);
        for o in &report.overshoots {
            println!(
                "OVERSHOOT {} {} {}: {} > {}",
                o.owner, o.day, o.counter, o.count, o.limit
            );
        }
        for m in &report.mismatches {
            println!("MISMATCH {m}");
        }
        println!(
            "overshoots: {}, counter mismatches: {}",
            report.overshoots.len(),
            report.mismatches.len()
        );
    }
    if report.clean() {
        exit::OK
    } else {
        exit::FAILURE
    }
}
