//! `sendgate audit` (SPEC §8): recompute every counter from the ledger and compare it
//! with the caps in force at each reservation; exit 0 if there is no overshoot. It asks
//! the running worker through its admin socket, else opens the store (never creating one).

use crate::exit;
use crate::store::AuditReport;
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
    let (from, to) = match (day("--from", from), day("--to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    // Through the running worker's admin socket, else on the store (never created).
    super::operator::run(config, crate::admin::Request::Audit { from, to }, json)
}

/// Print an audit report (exit status is the caller's).
pub fn print(report: &AuditReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        return;
    }
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
