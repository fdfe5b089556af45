//! P1 when the cap in force drops in the middle of a local day: a `tier_changed` event
//! to a tier with a lower invite ceiling, or an account upsert with lower caps. From
//! the change on, nothing more goes out that day once the day's count has reached the
//! new cap; a cap lowered to above the count leaves exactly the difference; the next
//! day sends up to the new cap. (A SIGHUP with lower `[caps]` is in `daemon.rs`.)
//! Counted from the upstream calls the engine made, on a manual clock.

mod common;

use chrono::{DateTime, NaiveDate, Utc};
use common::*;
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::virtual_run::VirtualRun;
use sendgate::engine::{Engine, EngineConfig};
use sendgate::store::Settings;
use std::cell::RefCell;
use std::collections::BTreeMap;

const START: &str = "2026-11-25T00:00:00Z";
/// The change comes 90 minutes into the day: with the default pacing (45–240 s gaps)
/// some 20–40 invites have gone out, between the lowered caps below and the old one.
const CHANGE: &str = "2026-11-25T01:30:00Z";
const DAY_1_END: &str = "2026-11-26T00:00:00Z";
const DAY_2_END: &str = "2026-11-27T00:00:00Z";

/// An established account with an invite cap of 60 and more invites than two days take.
fn setup() -> String {
    let mut text = format!(
        "{}\n{}\n",
        account_line("a1", r#","caps":{"invites":60}"#),
        campaign_line("c1", 500, "")
    );
    for i in 0..200 {
        text += &action_line(&format!("i{i:03}"), "c1", "a1", "invite");
        text.push('\n');
    }
    text
}

/// Runs the day up to the change, applies `change` (a job file) with the day's count
/// so far, then the rest of the day and the next. Returns the calls per UTC day and
/// the count at the change.
fn run(change: impl Fn(usize) -> String) -> (BTreeMap<NaiveDate, usize>, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    let now = utc(START);
    let store = open(dir.path(), settings);
    let engine = Engine::new(store, EngineConfig::default(), now).expect("engine");
    let mut run = VirtualRun::new(engine, now);
    run.apply_text("setup.jsonl", &setup()).expect("apply");
    let calls: RefCell<Vec<DateTime<Utc>>> = RefCell::default();
    let mut upstream = |_: &SendRequest, t: DateTime<Utc>| {
        calls.borrow_mut().push(t);
        Outcome::Sent
    };
    run.run_until(utc(CHANGE), &mut upstream).expect("run");
    let at_change = calls.borrow().len();
    run.apply_text("change.jsonl", &change(at_change))
        .expect("apply the change");
    assert_eq!(
        run.events("file_rejected").count(),
        0,
        "the change applies: {:?}",
        run.log
    );
    run.run_until(utc(DAY_2_END), &mut upstream).expect("run");
    let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for t in calls.borrow().iter() {
        *per_day.entry(t.date_naive()).or_default() += 1;
    }
    (per_day, at_change)
}

fn day(s: &str) -> NaiveDate {
    utc(s).date_naive()
}

#[test]
fn a_tier_change_to_a_lower_ceiling_stops_the_day_at_once() {
    // free: 20 invites a day (SPEC 3.2).
    let (per_day, at_change) =
        run(|_| r#"{"type":"event","kind":"tier_changed","account":"a1","tier":"free"}"#.to_string() + "\n");
    assert!(at_change > 20, "the day is past the new ceiling: {at_change}");
    assert_eq!(
        per_day.get(&day(START)).copied(),
        Some(at_change),
        "sent after the tier change on a day already past its ceiling: {per_day:?}"
    );
    assert_eq!(
        per_day.get(&day(DAY_1_END)).copied(),
        Some(20),
        "the next day sends up to the free tier's ceiling: {per_day:?}"
    );
}

#[test]
fn an_account_upsert_with_a_cap_below_the_count_stops_the_day() {
    let (per_day, at_change) =
        run(|_| r#"{"type":"account","id":"a1","caps":{"invites":5}}"#.to_string() + "\n");
    assert!(at_change > 5, "the day is past the new cap: {at_change}");
    assert_eq!(
        per_day.get(&day(START)).copied(),
        Some(at_change),
        "sent after the cap was lowered below the day's count: {per_day:?}"
    );
    assert_eq!(per_day.get(&day(DAY_1_END)).copied(), Some(5), "{per_day:?}");
}

#[test]
fn an_account_upsert_with_a_cap_above_the_count_leaves_the_difference() {
    let (per_day, at_change) =
        run(|n| format!(r#"{{"type":"account","id":"a1","caps":{{"invites":{}}}}}"#, n + 3) + "\n");
    assert!(
        at_change + 3 < 60,
        "the new cap is lower than the old: {at_change}"
    );
    assert_eq!(
        per_day.get(&day(START)).copied(),
        Some(at_change + 3),
        "exactly three more that day: {per_day:?}"
    );
    assert_eq!(
        per_day.get(&day(DAY_1_END)).copied(),
        Some(at_change + 3),
        "{per_day:?}"
    );
}
