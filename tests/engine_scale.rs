//! Scale: 10,000 accounts × 100 actions over 3 simulated days, zero overshoot by
//! `audit`. Slow in a debug build, so it is ignored by default; run it with
//! `cargo nextest run --release --run-ignored only --test engine_scale --no-capture`.

mod common;

use chrono::Duration;
use common::*;
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::virtual_run::VirtualRun;
use sendgate::engine::{Engine, EngineConfig};
use sendgate::store::{OpenOptions, Settings, State, Store};
use std::time::Instant;

const ACCOUNTS: usize = 10_000;
const ACTIONS_PER_ACCOUNT: usize = 100;
const ACCOUNTS_PER_FILE: usize = 500;

#[test]
#[ignore = "slow: 1,000,000 actions; run in release (see the README)"]
fn ten_thousand_accounts_three_days_zero_overshoot() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Durability is not what this measures (fsync off); every other path is real.
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    let store = Store::open(&dir.path().join("store"), settings, OpenOptions::default()).expect("open");
    let now = utc("2026-11-23T00:00:00Z"); // Monday
    let engine = Engine::new(store, EngineConfig::default(), now).expect("engine");
    let mut run = VirtualRun::new(engine, now);
    let kinds = [
        "invite",
        "message",
        "profile_view",
        "comment",
        "reaction",
        "invite",
        "message",
        "profile_view",
    ];
    let wall = Instant::now();
    run.apply_text(
        "campaigns.jsonl",
        &(campaign_line("c1", 1_000_000, "") + "\n" + &campaign_line("c2", 1_000_000, "") + "\n"),
    )
    .expect("apply");
    for f in 0..ACCOUNTS / ACCOUNTS_PER_FILE {
        let mut text = String::new();
        for a in f * ACCOUNTS_PER_FILE..(f + 1) * ACCOUNTS_PER_FILE {
            // Caps bind: 30 invites and 60 engagement a day, so parking is exercised.
            text += &account_line(&format!("a{a:05}"), r#","caps":{"invites":30,"engagement":60}"#);
            text.push('\n');
            for i in 0..ACTIONS_PER_ACCOUNT {
                let campaign = if i % 2 == 0 { "c1" } else { "c2" };
                text += &action_line(
                    &format!("a{a:05}/{i:03}"),
                    campaign,
                    &format!("a{a:05}"),
                    kinds[i % kinds.len()],
                );
                text.push('\n');
            }
        }
        run.apply_text(&format!("load-{f:03}.jsonl"), &text)
            .expect("apply");
    }
    let ingest_s = wall.elapsed().as_secs_f64();
    let mut sent = 0u64;
    let mut upstream = |_: &SendRequest, _: chrono::DateTime<chrono::Utc>| {
        sent += 1;
        Outcome::Sent
    };
    run.run_until(now + Duration::days(3), &mut upstream)
        .expect("run");
    let total_s = wall.elapsed().as_secs_f64();
    let store = run.engine.store();
    let audit = store.audit(None, None).expect("audit");
    let counts = store.state_counts().expect("counts");
    println!(
        "scale: {ACCOUNTS} accounts × {ACTIONS_PER_ACCOUNT} actions, 3 simulated days: ingest {ingest_s:.1}s, \
         total {total_s:.1}s wall, {sent} sent, {} reservations, {} wake-ups, states {:?}",
        audit.entries, run.engine.ticks, counts
    );
    assert!(
        audit.clean(),
        "{:?}",
        &audit.overshoots[..audit.overshoots.len().min(5)]
    );
    assert_eq!(
        counts.iter().sum::<u64>(),
        (ACCOUNTS * ACTIONS_PER_ACCOUNT) as u64,
        "P4: every action in one state"
    );
    assert_eq!(counts[State::Inflight.index()], 0);
    assert!(sent > 0);
}
