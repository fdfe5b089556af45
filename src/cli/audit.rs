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

/// `audit --cluster`: the audit, then this host's ledger totals against the fleet's
/// counters; exit 0 only if both are clean.
pub fn run_cluster(config: Option<&Path>, from: Option<&str>, to: Option<&str>, json: bool) -> i32 {
    let (from, to) = match (day("--from", from), day("--to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let cfg = match super::load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(cluster) = cfg.cluster.clone() else {
        eprintln!("sendgate: audit --cluster needs a [cluster] section in the configuration");
        return exit::USAGE;
    };
    let report = match super::operator::ask(config, &crate::admin::Request::Audit { from, to }) {
        Ok(crate::admin::Reply::Audit(r)) => r,
        Ok(_) => {
            eprintln!("sendgate: unexpected reply to audit");
            return exit::FAILURE;
        }
        Err(code) => return code,
    };
    let fleet = match crate::cluster::audit::fetch(&cluster, &report.sums) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "sendgate: etcd at {} (cluster.endpoints): {e}",
                cluster.endpoints.join(", ")
            );
            return exit::FAILURE;
        }
    };
    let compared = crate::cluster::audit::compare(&cluster.prefix, &report.sums, &fleet);
    if json {
        let doc = serde_json::json!({"audit": report, "cluster": compared});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print(&report, false);
        for b in &compared.behind {
            println!(
                "FLEET BEHIND {}: this host {} > fleet {}",
                b.key, b.local, b.fleet
            );
        }
        println!(
            "fleet: {} counters compared, {} behind this host",
            compared.compared,
            compared.behind.len()
        );
    }
    if report.clean() && compared.behind.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    }
}

/// Print an audit report (exit status is the caller's).
pub fn print(report: &AuditReport, json: bool) {
    if json {
        // The ledger totals are for `--cluster`; the plain audit prints what it judged.
        let shown = AuditReport {
            sums: Vec::new(),
            ..report.clone()
        };
        println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
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
