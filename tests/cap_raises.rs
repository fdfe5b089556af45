//! P1 when the cap in force rises in the middle of a local day: a reload with a higher
//! `[caps]` value, or a second job file raising a campaign's `daily_limit`. What the
//! old cap parked until the next day is woken at once, and exactly the difference goes
//! out that day: not nothing (parked until tomorrow), never more than the new cap. A
//! cap lowered in the middle of a day wakes nothing. Counted from the upstream calls
//! the engine made, on a manual clock.

mod common;

use chrono::{DateTime, NaiveDate, Utc};
use common::*;
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::virtual_run::VirtualRun;
use sendgate::engine::{Engine, EngineConfig};
use sendgate::policy::Kind;
use sendgate::store::{Settings, State};
use std::cell::RefCell;
use std::collections::BTreeMap;

const START: &str = "2026-11-25T00:00:00Z";
/// The change comes six hours into the day: the old cap of 2 is long spent.
const CHANGE: &str = "2026-11-25T06:00:00Z";
const DAY_2: &str = "2026-11-26T00:00:00Z";
const DAY_2_END: &str = "2026-11-27T00:00:00Z";

fn settings(messages: u32) -> Settings {
    let mut s = Settings {
        fsync: false,
        ..Settings::default()
    };
    s.policy.caps.messages = messages;
    s
}

/// An account open all day, a campaign of daily limit `daily_limit`, and 20 messages
/// (more than two days take).
fn setup(daily_limit: u32) -> String {
    let mut text = format!(
        "{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", daily_limit, "")
    );
    for i in 0..20 {
        text += &action_line(&format!("m{i:02}"), "c1", "a1", "message");
        text.push('\n');
    }
    text
}

/// Runs the day up to the change with `[caps] messages = caps`, applies `change`, then
/// the rest of that day and the next. Returns the calls per UTC day, the count at the
/// change and the number of actions parked right after it.
fn run(
    caps: u32,
    daily_limit: u32,
    change: impl FnOnce(&mut VirtualRun),
) -> (BTreeMap<NaiveDate, usize>, usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc(START);
    let store = open(dir.path(), settings(caps));
    let engine = Engine::new(store, EngineConfig::default(), now).expect("engine");
    let mut run = VirtualRun::new(engine, now);
    run.apply_text("setup.jsonl", &setup(daily_limit)).expect("apply");
    let calls: RefCell<Vec<DateTime<Utc>>> = RefCell::default();
    let mut upstream = |r: &SendRequest, t: DateTime<Utc>| {
        assert_eq!(r.kind, Kind::Message);
        calls.borrow_mut().push(t);
        Outcome::Sent
    };
    run.run_until(utc(CHANGE), &mut upstream).expect("run");
    let at_change = calls.borrow().len();
    change(&mut run);
    assert_eq!(
        run.events("file_rejected").count(),
        0,
        "the change applies: {:?}",
        run.log
    );
    let parked = parked(&run);
    run.run_until(utc(DAY_2_END), &mut upstream).expect("run");
    let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for t in calls.borrow().iter() {
        *per_day.entry(t.date_naive()).or_default() += 1;
    }
    (per_day, at_change, parked)
}

fn parked(run: &VirtualRun) -> usize {
    let actions = run.engine.store().actions().expect("actions");
    actions.iter().filter(|a| a.state == State::Parked).count()
}

fn day(s: &str) -> NaiveDate {
    utc(s).date_naive()
}

/// Checks a run against `(sent before the change, parked right after it, sent on the
/// first day, sent on the second day)`.
fn expect(got: (BTreeMap<NaiveDate, usize>, usize, usize), want: (usize, usize, usize, usize)) {
    let (per_day, at_change, parked) = got;
    let sent_on = |d: &str| per_day.get(&day(d)).copied().unwrap_or(0);
    assert_eq!(
        (at_change, parked, sent_on(START), sent_on(DAY_2)),
        want,
        "(sent before the change, parked after it, sent on day 1, on day 2): {per_day:?}"
    );
}

fn reload(messages: u32) -> impl FnOnce(&mut VirtualRun) {
    move |run: &mut VirtualRun| {
        let now = run.now;
        run.engine.set_settings(settings(messages), now).expect("reload");
    }
}

/// 2 sent before the change, 18 parked until the next day: a cap of 4 wakes them all,
/// exactly 2 more go out that day and 4 the next.
#[test]
fn a_reload_raising_the_message_cap_sends_the_difference_the_same_day() {
    expect(run(2, 500, reload(4)), (2, 0, 4, 4));
}

#[test]
fn a_reload_lowering_the_message_cap_wakes_nothing() {
    expect(run(2, 500, reload(1)), (2, 18, 2, 1));
}

#[test]
fn a_reload_raising_another_cap_wakes_nothing() {
    let raise_inmails = |run: &mut VirtualRun| {
        let mut s = settings(2);
        s.policy.caps.inmails += 3;
        let now = run.now;
        run.engine.set_settings(s, now).expect("reload");
    };
    expect(run(2, 500, raise_inmails), (2, 18, 2, 2));
}

fn campaign_file(daily_limit: u32) -> impl FnOnce(&mut VirtualRun) {
    move |run: &mut VirtualRun| {
        run.apply_text("raise.jsonl", &(campaign_line("c1", daily_limit, "") + "\n"))
            .expect("apply the change");
    }
}

/// The campaign's limit of 2 spent, 18 parked: a second file raising it to 4 wakes
/// them, exactly 2 more go out that day and 4 the next.
#[test]
fn a_job_file_raising_a_campaigns_daily_limit_sends_the_difference_the_same_day() {
    expect(run(80, 2, campaign_file(4)), (2, 0, 4, 4));
}

#[test]
fn a_job_file_lowering_a_campaigns_daily_limit_wakes_nothing() {
    expect(run(80, 2, campaign_file(1)), (2, 18, 2, 1));
}

#[test]
fn a_job_file_raising_an_accounts_message_cap_sends_the_difference_the_same_day() {
    let raise = |run: &mut VirtualRun| {
        run.apply_text(
            "raise.jsonl",
            concat!(r#"{"type":"account","id":"a1","caps":{"messages":5}}"#, "\n"),
        )
        .expect("apply the change");
    };
    expect(run(2, 500, raise), (2, 0, 5, 5));
}
