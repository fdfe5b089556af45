//! `sendgate simulate` (SPEC §8): the whole engine against the simulated LinkedIn on a
//! virtual clock, in a temporary store. Prints a day-by-day table per account and the
//! audit; deterministic for a seed.

use crate::chart::{self, Day, Panel};
use crate::engine::virtual_run::VirtualRun;
use crate::engine::{Engine, EngineConfig, Event};
use crate::exit;
use crate::policy::window::local_day;
use crate::policy::Tier;
use crate::store::{OpenOptions, Settings, Store};
use crate::upstream::sim::Sim;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Largest simulation accepted (days × accounts), to keep a typo from running for hours.
pub const MAX_ACCOUNT_DAYS: u64 = 200_000;

const TIERS: [Tier; 4] = [
    Tier::SalesNavigatorCore,
    Tier::PremiumBusiness,
    Tier::Free,
    Tier::RecruiterLite,
];
const ZONES: [&str; 4] = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"];
/// Actions dropped per account per day: invites, messages, InMails, views, comments, reactions.
const DAILY_DROP: [(&str, u32); 6] = [
    ("invite", 60),
    ("message", 30),
    ("inmail", 3),
    ("profile_view", 30),
    ("comment", 5),
    ("reaction", 10),
];

fn start() -> DateTime<Utc> {
    // A Monday, a week before the US DST change.
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn setup_file(accounts: u32, start_day: NaiveDate) -> String {
    let mut text = String::new();
    for i in 0..accounts as usize {
        let _ = writeln!(
            text,
            r#"{{"type":"account","id":"acct-{:02}","tier":"{}","timezone":"{}","ramp_start":"{start_day}","established":false,"proxy":"http://sim:secret@127.0.0.1:3128"}}"#,
            i + 1,
            TIERS[i % TIERS.len()].as_str(),
            ZONES[i % ZONES.len()]
        );
    }
    let ids: Vec<String> = (1..=accounts).map(|i| format!("\"acct-{i:02}\"")).collect();
    let _ = writeln!(
        text,
        r#"{{"type":"campaign","id":"outreach","daily_limit":60,"accounts":[{}]}}"#,
        ids.join(",")
    );
    let _ = writeln!(
        text,
        r#"{{"type":"campaign","id":"nurture","daily_limit":40,"accounts":[{}]}}"#,
        ids.join(",")
    );
    text
}

fn day_file(accounts: u32, day: u32) -> String {
    let mut text = String::new();
    for a in 1..=accounts {
        for (kind, n) in DAILY_DROP {
            for j in 0..n {
                let campaign = if j % 3 == 2 { "nurture" } else { "outreach" };
                let id = format!("d{day:03}/a{a:02}/{kind}/{j:03}");
                let _ = writeln!(
                    text,
                    r#"{{"type":"action","id":"{id}","campaign":"{campaign}","account":"acct-{a:02}","kind":"{kind}","prospect":"https://www.linkedin.com/in/sim-{a}-{day}-{kind}-{j}","payload":{{"text":"hello"}}}}"#
                );
            }
        }
    }
    text
}

#[derive(Default, Clone)]
struct Row {
    sent: [u32; 6],
    invites_reserved: u32,
    cap: u32,
    ramp: u32,
    health: String,
    parked: u32,
    held: u32,
}

pub fn run(days: u32, accounts: u32, seed: u64, svg: Option<&Path>) -> i32 {
    if days == 0 || accounts == 0 || u64::from(days) * u64::from(accounts) > MAX_ACCOUNT_DAYS {
        eprintln!(
            "sendgate: --days and --accounts must be positive, days × accounts at most {MAX_ACCOUNT_DAYS}"
        );
        return exit::USAGE;
    }
    match simulate(days, accounts, seed, svg) {
        Ok(clean) => {
            if clean {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sendgate: {e}");
            exit::FAILURE
        }
    }
}

fn simulate(days: u32, accounts: u32, seed: u64, svg: Option<&Path>) -> Result<bool, String> {
    let dir = tempfile_dir()?;
    let settings = Settings {
        fsync: false, // a throwaway store: durability is not what is simulated
        ..Settings::default()
    };
    let store =
        Store::open(&dir.join("store"), settings, OpenOptions::default()).map_err(|e| e.to_string())?;
    let t0 = start();
    let cfg = EngineConfig {
        seed,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, cfg, t0).map_err(|e| e.to_string())?;
    let mut run = VirtualRun::new(engine, t0);
    let mut sim = Sim::new(seed);
    for i in 0..accounts as usize {
        // Older accounts first: LinkedIn trusts an account more with age.
        let age = Duration::weeks(((accounts as usize - i) * 3) as i64);
        sim.register(&format!("acct-{:02}", i + 1), TIERS[i % TIERS.len()], t0 - age);
    }
    run.apply_text("setup.jsonl", &setup_file(accounts, t0.date_naive()))
        .map_err(|e| e.to_string())?;
    let wall = std::time::Instant::now();
    for d in 0..days {
        run.apply_text(&format!("day-{d:03}.jsonl"), &day_file(accounts, d))
            .map_err(|e| e.to_string())?;
        run.run_until(t0 + Duration::days(i64::from(d) + 1), &mut sim)
            .map_err(|e| e.to_string())?;
        if days > 14 && (d + 1) % 7 == 0 {
            eprintln!(
                "simulate: day {}/{days} ({:.1}s)",
                d + 1,
                wall.elapsed().as_secs_f64()
            );
        }
    }
    // One more day so the last day's summaries are written.
    run.run_until(t0 + Duration::days(i64::from(days) + 1), &mut sim)
        .map_err(|e| e.to_string())?;
    let rows = collect_rows(&run, t0.date_naive(), days)?;
    let store = run.engine.store();
    let audit = store.audit(None, None).map_err(|e| e.to_string())?;
    println!(
        "sendgate simulate: {accounts} accounts, {days} days, seed {seed}, virtual start {}",
        t0.date_naive()
    );
    for (account, days_rows) in &rows {
        let a = store
            .account(account)
            .map_err(|e| e.to_string())?
            .ok_or("account vanished")?;
        println!();
        println!("account {account} ({}, {})", a.tier, a.timezone);
        println!("day         inv  msg  inm view  cmt  rct  cap ramp accept health    parked held");
        for (day, r) in days_rows {
            let rec = store.account_day(account, *day).map_err(|e| e.to_string())?;
            let accept = if rec.invites_sent > 0 {
                format!(
                    "{:.2}",
                    f64::from(rec.invites_accepted) / f64::from(rec.invites_sent)
                )
            } else {
                "-".into()
            };
            println!(
                "{day} {:>4} {:>4} {:>4} {:>4} {:>4} {:>4} {:>4} {:>4} {:>6} {:<9} {:>6} {:>4}",
                r.sent[0],
                r.sent[1],
                r.sent[2],
                r.sent[3],
                r.sent[4],
                r.sent[5],
                r.cap,
                r.ramp,
                accept,
                r.health,
                r.parked,
                r.held
            );
        }
    }
    println!();
    let answered: Vec<String> = sim.answered.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("upstream answers: {}", answered.join(", "));
    println!(
        "audit: {} reservations, overshoots {}, counter mismatches {}",
        audit.entries,
        audit.overshoots.len(),
        audit.mismatches.len()
    );
    if let Some(path) = svg {
        std::fs::write(path, render_svg(&rows)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(audit.clean())
}

type Rows = BTreeMap<String, BTreeMap<NaiveDate, Row>>;

fn collect_rows(run: &VirtualRun, first: NaiveDate, days: u32) -> Result<Rows, String> {
    let store = run.engine.store();
    let last = first + Duration::days(i64::from(days) - 1);
    let mut rows: Rows = BTreeMap::new();
    let mut zones = BTreeMap::new();
    for a in store.accounts().map_err(|e| e.to_string())? {
        zones.insert(a.id.clone(), a.tz());
    }
    for (t, e) in &run.log {
        match e {
            Event::DaySummary {
                account,
                day,
                sent,
                invites_reserved,
                invite_cap,
                ramp_ceiling,
                health,
                ..
            } if *day >= first && *day <= last => {
                let r = rows.entry(account.clone()).or_default().entry(*day).or_default();
                r.sent = *sent;
                r.invites_reserved = *invites_reserved;
                r.cap = *invite_cap;
                r.ramp = *ramp_ceiling;
                r.health = health.as_str().to_string();
            }
            Event::ActionParked { account, .. } | Event::AccountHeld { account, .. } => {
                let Some(tz) = zones.get(account) else { continue };
                let day = local_day(*tz, *t);
                if day < first || day > last {
                    continue;
                }
                let r = rows.entry(account.clone()).or_default().entry(day).or_default();
                if matches!(e, Event::AccountHeld { .. }) {
                    r.held += 1;
                } else {
                    r.parked += 1;
                }
            }
            _ => {}
        }
    }
    Ok(rows)
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let p = base.join(format!("sendgate-simulate-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err("cannot create a temporary directory".into())
}

/// Invites per day against the invite cap and the ramp ceiling, one panel per account
/// (`chart`, the dashboard's chart).
fn render_svg(rows: &Rows) -> String {
    let panels: Vec<Panel> = rows
        .iter()
        .map(|(account, days)| Panel {
            title: account.clone(),
            days: days
                .iter()
                .map(|(day, r)| Day {
                    day: *day,
                    invites: r.invites_reserved,
                    sends: r.sent.iter().sum(),
                    cap: r.cap,
                    ramp: r.ramp,
                })
                .collect(),
        })
        .collect();
    chart::document(&panels)
}
