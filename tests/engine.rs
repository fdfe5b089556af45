//! The engine on a manual clock: windows, pacing, fairness, parking, every row of the
//! upstream-outcome table, the ramp, credits, and sleeping while everything is parked.

mod common;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use common::*;
use sendgate::config::Config;
use sendgate::contract::jobfile::EventRecord;
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::virtual_run::{Answer, VirtualRun};
use sendgate::engine::{Engine, EngineConfig, Event};
use sendgate::policy::Health;
use sendgate::store::{Reservation, Settings, State};
use sendgate::upstream::sim::Feedback;
use std::collections::BTreeMap;

fn engine_at(dir: &std::path::Path, settings: Settings, now: DateTime<Utc>) -> VirtualRun {
    let store = open(dir, settings);
    let engine = Engine::new(store, EngineConfig::default(), now).expect("engine starts");
    VirtualRun::new(engine, now)
}

fn quiet_settings() -> Settings {
    Settings {
        fsync: false,
        ..Settings::default()
    }
}

fn always(outcome: Outcome) -> impl FnMut(&SendRequest, DateTime<Utc>) -> Outcome {
    move |_, _| outcome.clone()
}

fn actions(prefix: &str, n: usize, campaign: &str, account: &str, kind: &str) -> String {
    (0..n)
        .map(|i| action_line(&format!("{prefix}{i:04}"), campaign, account, kind) + "\n")
        .collect()
}

fn sends(run: &VirtualRun) -> Vec<(DateTime<Utc>, String, String)> {
    run.events("action_sent")
        .filter_map(|(t, e)| match e {
            Event::ActionSent {
                account, campaign, ..
            } => Some((*t, account.clone(), campaign.clone())),
            _ => None,
        })
        .collect()
}

// ---- SPEC §5, one line per row ----

struct Row {
    outcome: Outcome,
    idempotent: bool,
    state: State,
    reason: &'static str,
    held: bool,
    health: Health,
}

fn check(row: Row) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = quiet_settings();
    settings.idempotent = row.idempotent;
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), settings, now);
    let text = format!(
        "{}\n{}\n{}",
        account_line("a1", r#","inmail_credits":3"#),
        campaign_line("c1", 50, ""),
        action_line("x", "c1", "a1", "inmail") + "\n"
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    let mut calls = 0;
    let outcome = row.outcome.clone();
    let mut upstream = |_: &SendRequest, _: DateTime<Utc>| {
        calls += 1;
        outcome.clone()
    };
    // One call only: stop right after the first attempt.
    run.run_until(now + Duration::seconds(1), &mut upstream)
        .expect("run");
    assert_eq!(calls, 1, "{:?}", row.outcome);
    let store = run.engine.store();
    let a = store.action("x").expect("read").expect("exists");
    assert_eq!(a.state, row.state, "{:?}: {:?}", row.outcome, a);
    assert!(
        a.reason.clone().unwrap_or_default().starts_with(row.reason),
        "{:?}: {:?}",
        row.outcome,
        a.reason
    );
    let acct = store.account("a1").expect("read").expect("exists");
    assert_eq!(acct.held_until_ms.is_some(), row.held, "{:?}", row.outcome);
    assert_eq!(acct.health, row.health, "{:?}", row.outcome);
    // A slot stays used, except for an attempt that was certainly never received.
    let slot = u32::from(!matches!(row.outcome, Outcome::NotDelivered { .. }));
    assert_eq!(
        store
            .account_day("a1", now.date_naive())
            .expect("day")
            .reserved
            .inmails,
        slot,
        "{:?}: slot used",
        row.outcome
    );
    if row.outcome == Outcome::NoCredits {
        assert_eq!(acct.credits, 0);
        assert_eq!(
            a.until_ms.map(sendgate::store::codec::from_ms),
            Some(utc("2026-12-01T00:00:00Z"))
        );
    }
}

#[test]
fn every_row_of_the_outcome_table() {
    use Outcome::{Invalid, MaybeDelivered, NoCredits, NotDelivered, OutOfNetwork, RateLimited, Restricted};
    use State::{Failed, Parked, Queued, Unknown};
    let r = |s: &str| s.to_string();
    let row = |outcome, idempotent, state, reason, held, health| Row {
        outcome,
        idempotent,
        state,
        reason,
        held,
        health,
    };
    // No acceptance feedback ever reached this store: a new account reads `watch`
    // ("no acceptance feedback") from the start unless something is worse.
    check(row(Outcome::Sent, false, State::Sent, "", false, Health::Watch));
    check(row(
        RateLimited { retry_after_s: None },
        false,
        Parked,
        "rate_limited",
        true,
        Health::Watch,
    ));
    check(row(
        OutOfNetwork,
        false,
        Failed,
        "out_of_network",
        false,
        Health::Watch,
    ));
    check(row(
        Restricted,
        false,
        Parked,
        "account_restricted",
        false,
        Health::Restricted,
    ));
    check(row(NoCredits, false, Parked, "no_credits", false, Health::Watch));
    check(row(
        Invalid {
            reason: r("http 400"),
        },
        false,
        Failed,
        "invalid",
        false,
        Health::Watch,
    ));
    check(row(
        NotDelivered { reason: r("refused") },
        false,
        Queued,
        "not_delivered",
        false,
        Health::Watch,
    ));
    check(row(
        MaybeDelivered { reason: r("timeout") },
        false,
        Unknown,
        "maybe_delivered",
        false,
        Health::Watch,
    ));
    check(row(
        MaybeDelivered { reason: r("timeout") },
        true,
        Queued,
        "maybe_delivered",
        false,
        Health::Watch,
    ));
}

#[test]
fn retries_back_off_and_stop_at_max_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}",
        account_line("a1", ""),
        campaign_line("c1", 50, ""),
        actions("m", 1, "c1", "a1", "message")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    let mut attempts = Vec::new();
    let mut upstream = |req: &SendRequest, t: DateTime<Utc>| {
        attempts.push((t, req.attempt, req.id.clone()));
        Outcome::NotDelivered {
            reason: "refused".into(),
        }
    };
    run.run_until(now + Duration::hours(20), &mut upstream)
        .expect("run");
    assert_eq!(attempts.len(), 5, "upstream.max_attempts = 5: {attempts:?}");
    assert!(
        attempts.iter().all(|(_, _, id)| id == "m0000"),
        "same idempotency key"
    );
    assert_eq!(
        attempts.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let gaps: Vec<i64> = attempts
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).num_seconds())
        .collect();
    // Attempt k waits at least half its backoff bound, 30 s · 2^(k-1) (pacing may add more).
    for (i, g) in gaps.iter().enumerate() {
        assert!(
            *g >= (30 << i) / 2,
            "backoff after attempt {}: {g}s in {gaps:?}",
            i + 1
        );
    }
    let a = run.engine.store().action("m0000").expect("read").expect("exists");
    assert_eq!(a.state, State::Failed);
    let day = run
        .engine
        .store()
        .account_day("a1", now.date_naive())
        .expect("day");
    assert_eq!(
        day.reserved.messages, 0,
        "every attempt reserved its own slot and, refused, gave it back"
    );
    let audit = run.engine.store().audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert_eq!((audit.entries, audit.releases), (5, 5));
}

#[test]
fn new_york_windows_across_the_march_dst_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc("2026-03-02T00:00:00Z"); // Monday
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    let account = r#"{"type":"account","id":"ny","tier":"sales_navigator_core","timezone":"America/New_York","established":true,"caps":{"engagement":20}}"#;
    let text = format!(
        "{account}\n{}\n{}",
        campaign_line("c1", 100, ""),
        actions("v", 400, "c1", "ny", "profile_view")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(utc("2026-03-16T00:00:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    let ny = chrono_tz::America::New_York;
    let mut per_day: BTreeMap<chrono::NaiveDate, u32> = BTreeMap::new();
    for (t, _, _) in sends(&run) {
        let local = t.with_timezone(&ny);
        assert!(
            !matches!(local.weekday(), Weekday::Sat | Weekday::Sun),
            "weekend send at {local}"
        );
        assert!(
            (9..17).contains(&local.hour()),
            "send outside 09:00–17:00 at {local}"
        );
        *per_day.entry(local.date_naive()).or_default() += 1;
    }
    // Two full weeks, the DST change (Sunday 8 March) in between: 10 weekdays × 20.
    assert_eq!(per_day.len(), 10, "{per_day:?}");
    assert!(
        per_day.values().all(|&n| n == 20),
        "a full budget each weekday: {per_day:?}"
    );
    // Monday 9 March opens at 09:00 EDT = 13:00Z, not 14:00Z.
    let first_after_dst = sends(&run)
        .into_iter()
        .find(|(t, _, _)| *t >= utc("2026-03-09T00:00:00Z"));
    assert_eq!(first_after_dst.map(|s| s.0), Some(utc("2026-03-09T13:00:00Z")));
}

#[test]
fn pacing_gaps_stay_in_bounds_and_campaigns_alternate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T00:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}\n{}{}",
        account_line("a1", r#","caps":{"engagement":100}"#),
        campaign_line("ca", 100, ""),
        campaign_line("cb", 100, ""),
        actions("a", 40, "ca", "a1", "profile_view"),
        actions("b", 40, "cb", "a1", "reaction"),
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(6), &mut always(Outcome::Sent))
        .expect("run");
    let s = sends(&run);
    assert_eq!(s.len(), 80);
    for w in s.windows(2) {
        let gap = (w[1].0 - w[0].0).num_seconds();
        assert!((45..=240).contains(&gap), "gap {gap}s out of [45, 240]");
    }
    let order: String = s
        .iter()
        .map(|(_, _, c)| if c == "ca" { 'a' } else { 'b' })
        .collect();
    assert_eq!(order, "ab".repeat(40), "round robin between campaigns");
}

#[test]
fn priority_then_age_within_a_campaign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T00:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let hi = r#"{"type":"action","id":"late-hi","campaign":"c1","account":"a1","kind":"reaction","prospect":"p9","priority":5}"#;
    let text = format!(
        "{}\n{}\n{}{hi}\n",
        account_line("a1", ""),
        campaign_line("c1", 10, ""),
        actions("old", 3, "c1", "a1", "reaction")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(2), &mut always(Outcome::Sent))
        .expect("run");
    let ids: Vec<String> = run
        .events("action_sent")
        .filter_map(|(_, e)| match e {
            Event::ActionSent { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec!["late-hi", "old0000", "old0001", "old0002"]);
}

fn parked(run: &VirtualRun) -> Vec<(String, String, Option<DateTime<Utc>>)> {
    run.events("action_parked")
        .filter_map(|(_, e)| match e {
            Event::ActionParked {
                action,
                counter,
                until,
                ..
            } => Some((action.clone(), counter.clone(), *until)),
            _ => None,
        })
        .collect()
}

/// One line per blocking counter: (account extra, campaign extra, kind, n) → the
/// first parked action's counter and until-time.
fn check_parking(acct_extra: &str, daily_limit: u32, kind: &str, n: usize, counter: &str, until: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z"); // Wednesday
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let account = format!(
        r#"{{"type":"account","id":"a1","tier":"sales_navigator_core","timezone":"Europe/Berlin","established":true{acct_extra}}}"#
    );
    let text = format!(
        "{account}\n{}\n{}",
        campaign_line("c1", daily_limit, r#","timezone":"America/New_York""#),
        actions("x", n, "c1", "a1", kind)
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(6), &mut always(Outcome::Sent))
        .expect("run");
    let p = parked(&run);
    let first = p
        .first()
        .unwrap_or_else(|| panic!("nothing parked for {counter}"));
    assert_eq!(first.1, counter);
    assert_eq!(first.2, Some(utc(until)), "{counter}");
    assert!(run.events("cap_exhausted").count() >= 1);
}

#[test]
fn parking_reason_and_until_for_each_blocking_counter() {
    // Berlin window Mon–Fri 09:00–17:00 CET = 08:00–16:00Z; next later day: Thursday.
    check_parking(
        r#","caps":{"invites":3}"#,
        50,
        "invite",
        5,
        "account.invites",
        "2026-11-26T08:00:00Z",
    );
    check_parking(
        r#","caps":{"engagement":4}"#,
        50,
        "comment",
        6,
        "account.engagement",
        "2026-11-26T08:00:00Z",
    );
    check_parking(
        r#","caps":{"messages":2}"#,
        50,
        "message",
        4,
        "account.messages",
        "2026-11-26T08:00:00Z",
    );
    // The campaign's day is New York's: it turns at 05:00Z Thursday, after Berlin's
    // window opened? No: the next Berlin opening after 05:00Z Thursday is 08:00Z.
    check_parking("", 2, "invite", 4, "campaign.invites", "2026-11-26T08:00:00Z");
    check_parking(
        r#","caps":{"weekly_invites":3}"#,
        50,
        "invite",
        5,
        "account.weekly_invites",
        "2026-12-02T08:00:00Z",
    );
    // Credits come back at the refill (1 December 00:00Z), then the next opening.
    check_parking(
        r#","inmail_credits":1"#,
        50,
        "inmail",
        3,
        "account.inmail_credits",
        "2026-12-01T08:00:00Z",
    );
}

#[test]
fn a_campaign_day_in_another_zone_parks_until_that_day_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Tokyo campaign, UTC account open all day: Tokyo's day turns at 15:00Z.
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}",
        account_line("a1", ""),
        campaign_line("c1", 2, r#","timezone":"Asia/Tokyo""#),
        actions("x", 4, "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(2), &mut always(Outcome::Sent))
        .expect("run");
    let p = parked(&run);
    assert_eq!(p[0].1, "campaign.invites");
    assert_eq!(p[0].2, Some(utc("2026-11-25T15:00:00Z")));
}

#[test]
fn a_429_holds_the_whole_account_until_its_next_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T09:00:00Z"); // Wednesday, Berlin 10:00
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let account = r#"{"type":"account","id":"a1","tier":"sales_navigator_core","timezone":"Europe/Berlin","established":true}"#;
    let text = format!(
        "{account}\n{}\n{}{}",
        campaign_line("c1", 50, ""),
        actions("i", 5, "c1", "a1", "invite"),
        actions("v", 5, "c1", "a1", "profile_view")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    let mut calls: Vec<DateTime<Utc>> = Vec::new();
    let mut upstream = |_: &SendRequest, t: DateTime<Utc>| {
        calls.push(t);
        if calls.len() == 2 {
            Outcome::RateLimited {
                retry_after_s: Some(60),
            }
        } else {
            Outcome::Sent
        }
    };
    run.run_until(utc("2026-11-26T12:00:00Z"), &mut upstream)
        .expect("run");
    let berlin = chrono_tz::Europe::Berlin;
    let limited_at = calls[1];
    let same_day: Vec<_> = calls[2..]
        .iter()
        .filter(|t| t.with_timezone(&berlin).date_naive() == limited_at.with_timezone(&berlin).date_naive())
        .collect();
    assert!(
        same_day.is_empty(),
        "no call of any kind on the day of the 429: {same_day:?}"
    );
    assert_eq!(
        calls.get(2),
        Some(&utc("2026-11-26T08:00:00Z")),
        "resumes at the next window opening"
    );
    assert_eq!(run.events("rate_limited").count(), 1);
    assert_eq!(run.events("account_held").count(), 1);
}

/// Sends everything; every other invite is accepted an hour later.
struct Accepting(u64);

impl Answer for Accepting {
    fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> (Outcome, Vec<Feedback>) {
        self.0 += 1;
        let fb = (self.0 % 2 == 0).then(|| Feedback {
            at: now + Duration::hours(1),
            event: EventRecord::InviteAccepted {
                account: req.account.clone(),
                prospect: req.prospect.clone(),
                at: None,
            },
        });
        (Outcome::Sent, fb.into_iter().collect())
    }
}

#[test]
fn ramp_over_six_weeks_and_a_step_back_after_three_rate_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc("2026-11-02T00:00:00Z"); // Monday
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    let account = r#"{"type":"account","id":"a1","tier":"sales_navigator_core","timezone":"UTC","window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"},"caps":{"invites":80},"ramp_start":"2026-11-02"}"#;
    let text = format!(
        "{account}\n{}\n{}",
        campaign_line("c1", 200, ""),
        actions("i", 4000, "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(start + Duration::days(50), &mut Accepting(0))
        .expect("run");
    let ramp: Vec<(u32, u32)> = run
        .events("ramp_changed")
        .filter_map(|(_, e)| match e {
            Event::RampChanged { old, new, .. } => Some((*old, *new)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ramp,
        vec![(10, 15), (15, 22), (22, 32), (32, 46), (46, 66), (66, 80)]
    );
    // Never more invites in a day than the ramp ceiling of that day.
    let mut per_day: BTreeMap<chrono::NaiveDate, u32> = BTreeMap::new();
    for (t, _, _) in sends(&run) {
        *per_day.entry(t.date_naive()).or_default() += 1;
    }
    assert_eq!(per_day.get(&utc("2026-11-02T00:00:00Z").date_naive()), Some(&10));
    assert_eq!(per_day.get(&utc("2026-11-09T00:00:00Z").date_naive()), Some(&15));
    assert_eq!(per_day.get(&utc("2026-12-14T00:00:00Z").date_naive()), Some(&80));
    assert!(per_day.values().all(|&n| n <= 80));
    assert!(run.engine.store().audit(None, None).expect("audit").clean());

    // Three rate limits in a week: at_risk, and the next boundary steps back.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    let text = format!(
        "{account}\n{}\n{}",
        campaign_line("c1", 200, ""),
        actions("i", 4000, "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(start + Duration::days(21), &mut Accepting(0))
        .expect("run");
    let mut n = 0;
    let mut limiter = |_: &SendRequest, _: DateTime<Utc>| {
        n += 1;
        if n % 5 == 0 {
            Outcome::RateLimited { retry_after_s: None }
        } else {
            Outcome::Sent
        }
    };
    run.run_until(start + Duration::days(29), &mut limiter)
        .expect("run");
    let last = run
        .events("ramp_changed")
        .filter_map(|(_, e)| match e {
            Event::RampChanged { old, new, reason, .. } => Some((*old, *new, reason.clone())),
            _ => None,
        })
        .last();
    assert_eq!(last, Some((32, 22, "step_back".to_string())));
    assert!(
        run.events("health_changed").any(|(_, e)| matches!(
            e,
            Event::HealthChanged {
                new: Health::AtRisk,
                health_reason,
                ..
            } if health_reason.contains("3 rate limits in 7 days")
        )),
        "health_changed carries what it judged on (SPEC §11)"
    );
}

// ---- SPEC §3.4: unknown acceptance is not zero ----

/// A new account on the ramp (start 10), open every day, and a long invite backlog.
fn ramping_account(run: &mut VirtualRun, extra_lines: &str) {
    let account = r#"{"type":"account","id":"a1","tier":"sales_navigator_core","timezone":"UTC","window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"},"caps":{"invites":80},"ramp_start":"2026-11-02"}"#;
    let text = format!(
        "{account}\n{}\n{}{extra_lines}",
        campaign_line("c1", 200, ""),
        actions("i", 4000, "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
}

fn health_changes(run: &VirtualRun) -> Vec<(Health, String)> {
    run.events("health_changed")
        .filter_map(|(_, e)| match e {
            Event::HealthChanged { new, reason, .. } => Some((*new, reason.clone())),
            _ => None,
        })
        .collect()
}

fn ramp_changes(run: &VirtualRun) -> Vec<(u32, u32, String)> {
    run.events("ramp_changed")
        .filter_map(|(_, e)| match e {
            Event::RampChanged { old, new, reason, .. } => Some((*old, *new, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn without_acceptance_feedback_the_ramp_holds_and_health_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc("2026-11-02T00:00:00Z"); // Monday
    let end = start + Duration::days(35);
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    ramping_account(&mut run, "");
    // Every invite is sent; no `invite_accepted` ever arrives.
    run.run_until(end, &mut always(Outcome::Sent)).expect("run");

    // Five weeks of sending, 20+ invites in every acceptance window: never judged at
    // zero acceptance, never stepped back, never raised. The account read `watch` from
    // its creation on (not `healthy` until its first day turn), so health never changed.
    assert_eq!(health_changes(&run), vec![]);
    let status = run.engine.store().status(end).expect("status");
    assert!(
        status.accounts[0]
            .health_reason
            .starts_with("no acceptance feedback"),
        "{}",
        status.accounts[0].health_reason
    );
    assert_eq!(ramp_changes(&run), vec![]);
    let mut per_day: BTreeMap<chrono::NaiveDate, u32> = BTreeMap::new();
    for (t, _, _) in sends(&run) {
        *per_day.entry(t.date_naive()).or_default() += 1;
    }
    assert_eq!(per_day.len(), 35, "{per_day:?}");
    assert!(per_day.values().all(|&n| n == 10), "{per_day:?}");
    let a = run.engine.store().account("a1").expect("read").expect("a1");
    assert_eq!(a.health, Health::Watch);

    // `feedback_missing` once per UTC day, naming the one account waiting.
    let mut logged: BTreeMap<chrono::NaiveDate, u32> = BTreeMap::new();
    for (t, e) in run.events("feedback_missing") {
        assert!(matches!(e, Event::FeedbackMissing { accounts: 1 }), "{e:?}");
        *logged.entry(t.date_naive()).or_default() += 1;
    }
    let days: Vec<_> = (0..35)
        .map(|d| (start + Duration::days(d)).date_naive())
        .collect();
    assert_eq!(logged.keys().copied().collect::<Vec<_>>(), days);
    assert!(logged.values().all(|&n| n == 1), "{logged:?}");
}

#[test]
fn once_feedback_flows_zero_acceptances_are_at_risk_and_step_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc("2026-11-02T00:00:00Z"); // Monday
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    ramping_account(&mut run, "");
    // Three weeks at 50% acceptance raise the ramp; then acceptances stop entirely.
    run.run_until(start + Duration::days(21) + Duration::hours(1), &mut Accepting(0))
        .expect("run");
    assert_eq!(ramp_changes(&run).last(), Some(&(22, 32, "advance".to_string())));
    run.run_until(start + Duration::days(43), &mut always(Outcome::Sent))
        .expect("run");
    let health = health_changes(&run);
    assert!(
        health.contains(&(Health::AtRisk, "low acceptance".to_string())),
        "{health:?}"
    );
    assert!(
        ramp_changes(&run).iter().any(|(_, _, r)| r == "step_back"),
        "{:?}",
        ramp_changes(&run)
    );
    // Feedback flowed from the first acceptance on: no more `feedback_missing`.
    let first_accept = start + Duration::hours(2);
    assert!(run.events("feedback_missing").all(|(t, _)| *t < first_accept));
}

#[test]
fn one_invite_accepted_from_a_job_file_turns_acceptance_judgement_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc("2026-11-02T00:00:00Z"); // Monday
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    // An acceptance of a prospect this worker never invited still proves that
    // feedback reaches it: from then on, zero acceptances are judged.
    ramping_account(
        &mut run,
        r#"{"type":"event","kind":"invite_accepted","account":"a1","prospect":"https://www.linkedin.com/in/someone-else"}"#,
    );
    run.run_until(start + Duration::days(10), &mut always(Outcome::Sent))
        .expect("run");
    let health = health_changes(&run);
    assert_eq!(
        health.last(),
        Some(&(Health::AtRisk, "low acceptance".to_string())),
        "{health:?}"
    );
    assert!(
        !health.iter().any(|(_, r)| r == "no acceptance feedback"),
        "{health:?}"
    );
    assert_eq!(run.events("feedback_missing").count(), 0);
}

#[test]
fn credits_refill_on_the_refill_day_and_a_reply_refunds_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-28T10:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}",
        account_line("a1", r#","inmail_credits":140,"caps":{"inmails":10}"#),
        campaign_line("c1", 50, ""),
        actions("m", 2, "c1", "a1", "inmail")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(1), &mut always(Outcome::Sent))
        .expect("run");
    let credits = |run: &VirtualRun| {
        run.engine
            .store()
            .account("a1")
            .expect("read")
            .expect("exists")
            .credits
    };
    assert_eq!(credits(&run), 138);
    let reply = r#"{"type":"event","kind":"reply_received","action":"m0000"}"#;
    run.apply_text("r1.jsonl", reply).expect("apply");
    assert_eq!(credits(&run), 139);
    run.apply_text("r2.jsonl", &format!("{reply}\n")).expect("apply");
    assert_eq!(credits(&run), 139, "refunded at most once");
    // 1 December 00:00 UTC: +50, capped at the ceiling of 150.
    run.run_until(utc("2026-12-01T06:00:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    assert_eq!(credits(&run), 150);
    assert!(run
        .events("credits_refilled")
        .any(|(t, e)| *t == utc("2026-12-01T00:00:00Z")
            && matches!(
                e,
                Event::CreditsRefilled {
                    old: 139,
                    new: 150,
                    ..
                }
            )));
}

#[test]
fn a_thousand_parked_accounts_wake_the_engine_at_most_twice_an_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let mut text = campaign_line("c1", 5000, "") + "\n";
    for i in 0..1000 {
        text += &account_line(&format!("a{i:04}"), r#","caps":{"invites":0}"#);
        text += "\n";
    }
    for i in 0..1000 {
        text += &action_line(&format!("x{i:04}"), "c1", &format!("a{i:04}"), "invite");
        text += "\n";
    }
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(1), &mut always(Outcome::Sent))
        .expect("run");
    assert_eq!(
        run.events("action_parked").count(),
        1000,
        "all parked until tomorrow"
    );
    let before = run.engine.ticks;
    let hours = 12;
    run.run_until(now + Duration::hours(1 + hours), &mut always(Outcome::Sent))
        .expect("run");
    let wakeups = run.engine.ticks - before;
    assert!(
        wakeups <= 2 * hours as u64,
        "{wakeups} wake-ups in {hours} simulated hours"
    );
}

#[test]
fn config_policy_reaches_the_engine() {
    let c = Config::parse("t.toml", "[caps]\nengagement = 7\n").expect("valid");
    let s = Settings::from_config(&c);
    assert_eq!(s.policy.caps.engagement, 7);
}

#[test]
fn a_paused_campaign_parks_its_backlog_until_it_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}\n{}{}",
        account_line("a1", ""),
        campaign_line("c1", 50, r#","status":"paused""#),
        campaign_line("c2", 50, ""),
        actions("p", 5, "c1", "a1", "message"),
        actions("q", 2, "c2", "a1", "message")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(1), &mut always(Outcome::Sent))
        .expect("run");
    let sent: Vec<String> = sends(&run).into_iter().map(|s| s.2).collect();
    assert_eq!(
        sent,
        vec!["c2", "c2"],
        "a paused campaign sends nothing; the other goes on"
    );
    let p = parked(&run);
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p
        .iter()
        .all(|(_, counter, until)| counter == "campaign_paused" && until.is_none()));
    assert_eq!(run.events("cap_exhausted").count(), 0, "a pause is not a cap");
    let resume = r#"{"type":"event","kind":"campaign_resumed","campaign":"c1"}"#;
    run.apply_text("r.jsonl", resume).expect("apply");
    run.run_until(now + Duration::hours(2), &mut always(Outcome::Sent))
        .expect("run");
    assert_eq!(sends(&run).len(), 7, "all five resume");
}

// ---- Time-zone changes (SPEC §3: local days; README "Time zones") ----

fn zone_account(tz: &str) -> String {
    format!(
        r#"{{"type":"account","id":"a1","tier":"free","timezone":"{tz}","window":{{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}},"established":true}}"#
    )
}

/// A free account (20 invites a day) sends its 20 in `from`, then an account record
/// moves it to `to`. No invite goes out before the first day in the new zone begins
/// (`first_new_day`), and each day after holds at most 20.
fn check_zone_change(from: &str, to: &str, start: &str, change: &str, first_new_day: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc(start);
    let mut run = engine_at(dir.path(), quiet_settings(), start);
    let text = format!(
        "{}\n{}\n{}",
        zone_account(from),
        campaign_line("c1", 500, ""),
        actions("i", 100, "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    let change = utc(change);
    run.run_until(change, &mut always(Outcome::Sent)).expect("run");
    assert_eq!(sends(&run).len(), 20, "{from}: the day's 20 before the change");
    run.apply_text("tz.jsonl", &zone_account(to)).expect("apply");
    let first = utc(first_new_day);
    run.run_until(first, &mut always(Outcome::Sent)).expect("run");
    let early: Vec<_> = sends(&run).into_iter().skip(20).map(|(t, _, _)| t).collect();
    assert!(
        early.is_empty(),
        "{from} → {to}: sent before the new zone's first day: {early:?}"
    );
    run.run_until(first + Duration::days(2), &mut always(Outcome::Sent))
        .expect("run");
    let all = sends(&run);
    let day1 = all
        .iter()
        .filter(|(t, _, _)| *t >= first && *t < first + Duration::days(1))
        .count();
    assert_eq!(day1, 20, "{to}: the first new day sends its cap");
    assert_eq!(all.len(), 60);
    let tz: chrono_tz::Tz = to.parse().expect("zone");
    let acct = run.engine.store().account("a1").expect("read").expect("exists");
    assert_eq!(acct.zone_at(run.now), tz);
    let audit = run.engine.store().audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
}

#[test]
fn a_zone_change_across_the_date_line_never_reopens_a_day() {
    // Kiritimati (UTC+14) Nov 25 = [Nov 24 10:00Z, Nov 25 10:00Z). Pago Pago (UTC−11)
    // is then on Nov 24: its first day is Nov 26 (it begins Nov 26 11:00Z).
    check_zone_change(
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "2026-11-24T10:00:00Z",
        "2026-11-24T14:00:00Z",
        "2026-11-26T11:00:00Z",
    );
    // Pago Pago Nov 25 = [Nov 25 11:00Z, Nov 26 11:00Z); the first Kiritimati day that
    // begins after it is Nov 28 (Nov 27 10:00Z).
    check_zone_change(
        "Pacific/Pago_Pago",
        "Pacific/Kiritimati",
        "2026-11-25T11:00:00Z",
        "2026-11-25T15:00:00Z",
        "2026-11-27T10:00:00Z",
    );
}

// ---- day_summary: one per account per local day (SPEC §11) ----

fn summaries(log: &[(DateTime<Utc>, Event)]) -> Vec<chrono::NaiveDate> {
    log.iter()
        .filter_map(|(_, e)| match e {
            Event::DaySummary { day, .. } => Some(*day),
            _ => None,
        })
        .collect()
}

#[test]
fn one_day_summary_per_day_across_a_restart_and_clock_jumps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc("2026-11-25T10:00:00Z");
    let mut log = Vec::new();
    {
        let mut run = engine_at(dir.path(), quiet_settings(), start);
        let text = format!(
            "{}\n{}\n{}",
            account_line("a1", ""),
            campaign_line("c1", 5, ""),
            actions("m", 40, "c1", "a1", "message")
        );
        run.apply_text("f.jsonl", &text).expect("apply");
        run.run_until(utc("2026-11-25T23:00:00Z"), &mut always(Outcome::Sent))
            .expect("run");
        log.append(&mut run.log);
    }
    // Stopped at 23:00, started again after midnight: Nov 25 is summarised once.
    let mut run = engine_at(dir.path(), quiet_settings(), utc("2026-11-26T01:00:00Z"));
    run.run_until(utc("2026-11-26T02:00:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    assert_eq!(
        summaries(&run.log),
        vec![utc("2026-11-25T00:00:00Z").date_naive()]
    );
    assert!(run.log.iter().any(|(_, e)| matches!(
        e,
        Event::DaySummary { sent, .. } if sent[1] == 5
    )));
    // The clock jumps four days ahead: one summary for each day passed over.
    run.now = utc("2026-11-30T05:00:00Z");
    run.run_until(utc("2026-11-30T06:00:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    // Back two days, then forward again past Dec 1: nothing twice.
    run.now = utc("2026-11-28T05:00:00Z");
    run.run_until(utc("2026-11-28T06:00:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    run.now = utc("2026-12-01T05:00:00Z");
    run.run_until(utc("2026-12-01T06:00:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    log.append(&mut run.log);
    let days = summaries(&log);
    let expected: Vec<chrono::NaiveDate> = (25..=30)
        .map(|d| chrono::NaiveDate::from_ymd_opt(2026, 11, d).expect("date"))
        .collect();
    assert_eq!(days, expected);
}

// ---- requeue_action and tier_changed (SPEC §5, §3.2) ----

#[test]
fn requeue_action_sends_a_failed_action_again_and_leaves_a_sent_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}{}",
        account_line("a1", ""),
        campaign_line("c1", 50, ""),
        action_line("bad", "c1", "a1", "message") + "\n",
        action_line("good", "c1", "a1", "profile_view") + "\n"
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    let mut upstream = |r: &SendRequest, _: DateTime<Utc>| {
        if r.id == "bad" {
            Outcome::Invalid {
                reason: "http 400".into(),
            }
        } else {
            Outcome::Sent
        }
    };
    run.run_until(now + Duration::hours(1), &mut upstream)
        .expect("run");
    let state = |run: &VirtualRun, id: &str| run.engine.store().action(id).expect("read").map(|a| a.state);
    assert_eq!(state(&run, "bad"), Some(State::Failed));
    assert_eq!(state(&run, "good"), Some(State::Sent));
    let requeue = r#"{"type":"event","kind":"requeue_action","action":"bad"}
{"type":"event","kind":"requeue_action","action":"good"}
"#;
    run.apply_text("requeue.jsonl", requeue).expect("apply");
    assert_eq!(state(&run, "bad"), Some(State::Queued));
    run.run_until(now + Duration::hours(2), &mut always(Outcome::Sent))
        .expect("run");
    assert_eq!(state(&run, "bad"), Some(State::Sent));
    let attempts: Vec<String> = run
        .events("action_reserved")
        .filter_map(|(_, e)| match e {
            Event::ActionReserved { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        attempts,
        vec!["bad", "good", "bad"],
        "a sent action is never requeued"
    );
    let counts = run.engine.store().state_counts().expect("counts");
    assert_eq!(counts[State::Sent.index()], 2);
    assert_eq!(counts[State::Failed.index()], 0);
}

#[test]
fn tier_changed_lowers_the_invite_cap_from_the_next_reservation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T01:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let text = format!(
        "{}\n{}\n{}",
        account_line("a1", ""),
        campaign_line("c1", 500, ""),
        actions("i", 60, "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    // 10 invites under sales_navigator_core (cap 80), then the tier drops to free (20).
    let mut n = 0;
    run.run_until(
        now + Duration::hours(20),
        &mut |_: &SendRequest, _: DateTime<Utc>| {
            n += 1;
            Outcome::Sent
        },
    )
    .expect("run");
    assert!(n > 20, "the first tier allows more than 20 ({n})");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    run.apply_text("f.jsonl", &text).expect("apply");
    while sends(&run).len() < 10 {
        let next = run.engine.next_wake().expect("wake").expect("work");
        run.run_until(next + Duration::seconds(1), &mut always(Outcome::Sent))
            .expect("run");
    }
    assert_eq!(sends(&run).len(), 10);
    let tier_at = run.now;
    run.apply_text(
        "tier.jsonl",
        r#"{"type":"event","kind":"tier_changed","account":"a1","tier":"free"}"#,
    )
    .expect("apply");
    run.run_until(utc("2026-11-25T23:59:00Z"), &mut always(Outcome::Sent))
        .expect("run");
    let day = sends(&run)
        .iter()
        .filter(|(t, _, _)| t.date_naive() == tier_at.date_naive())
        .count();
    assert_eq!(day, 20, "the free tier's 20 a day, counting the 10 sent before");
    let parked: Vec<_> = parked(&run).into_iter().map(|(_, c, _)| c).collect();
    assert!(parked.iter().any(|c| c == "account.invites"), "{parked:?}");
}

#[test]
fn a_configured_red_zone_cap_is_logged_once_per_value_not_at_every_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut settings = quiet_settings();
    settings.policy.caps.invites = 95;
    let red = |e: &mut Engine| -> Vec<(String, u32)> {
        e.drain_events()
            .expect("settled")
            .into_iter()
            .filter_map(|e| match e {
                Event::RedZone {
                    account: None,
                    counter,
                    value,
                } => Some((counter, value)),
                _ => None,
            })
            .collect()
    };
    let start = |settings: &Settings| {
        Engine::new(open(dir.path(), settings.clone()), EngineConfig::default(), now).expect("engine")
    };
    let mut e = start(&settings);
    assert_eq!(red(&mut e), vec![("invites".to_string(), 95)]);
    drop(e);
    let mut e = start(&settings);
    assert!(red(&mut e).is_empty(), "logged again at a restart");
    // A reload with another red-zone value logs that one, once.
    e.store_mut().settings.policy.caps.invites = 96;
    e.tick(now).expect("tick");
    e.tick(now).expect("tick");
    assert_eq!(red(&mut e), vec![("invites".to_string(), 96)]);
}

#[test]
fn a_restart_turns_each_account_s_day_before_its_first_dispatch_however_many_accounts() {
    use sendgate::engine::MAX_TURNS_PER_TICK;
    let dir = tempfile::tempdir().expect("tempdir");
    let day1 = utc("2026-11-25T10:00:00Z");
    // More accounts than one tick turns: the accounts with work come after the first
    // tick's turns, so each is dispatched before the bounded loop reaches it.
    let n = MAX_TURNS_PER_TICK + 44;
    let id = |i: usize| format!("a{i:04}");
    {
        let mut run = engine_at(dir.path(), quiet_settings(), day1);
        let mut text = campaign_line("c1", 5000, "") + "\n";
        for i in 0..n {
            text += &account_line(&id(i), "");
            text += "\n";
        }
        run.apply_text("accounts.jsonl", &text).expect("apply");
        run.run_until(day1 + Duration::minutes(1), &mut always(Outcome::Sent))
            .expect("run");
    }
    // Started again on day 2: every account has day 1 to summarise.
    let day2 = utc("2026-11-26T01:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), day2);
    let text: String = (MAX_TURNS_PER_TICK..n)
        .map(|i| action_line(&format!("x{i:04}"), "c1", &id(i), "message") + "\n")
        .collect();
    run.apply_text("work.jsonl", &text).expect("apply");
    run.run_until(day2 + Duration::minutes(10), &mut always(Outcome::Sent))
        .expect("run");
    let mut summaries: BTreeMap<String, Vec<chrono::NaiveDate>> = BTreeMap::new();
    let mut dispatched_unturned = Vec::new();
    for (_, e) in &run.log {
        match e {
            Event::DaySummary { account, day, .. } => {
                summaries.entry(account.clone()).or_default().push(*day)
            }
            Event::ActionReserved { account, .. } if !summaries.contains_key(account) => {
                dispatched_unturned.push(account.clone())
            }
            _ => {}
        }
    }
    assert_eq!(
        dispatched_unturned,
        Vec::<String>::new(),
        "an account was dispatched on day 2 before its day turn"
    );
    assert_eq!(
        run.events("action_sent").count(),
        n - MAX_TURNS_PER_TICK,
        "every action went"
    );
    assert_eq!(summaries.len(), n, "every account's day turned");
    assert!(
        summaries.values().all(|d| *d == vec![day1.date_naive()]),
        "day 1 once for each: {summaries:?}"
    );
}

/// An engine on a fresh store in `dir` with `text` applied at `now`.
fn engine_with(dir: &std::path::Path, now: DateTime<Utc>, text: &str) -> Engine {
    let mut e = Engine::new(open(dir, quiet_settings()), EngineConfig::default(), now).expect("engine");
    e.apply_file("f.jsonl", text.as_bytes(), now).expect("apply");
    e
}

/// Tick at each planned wake from `at` (first at `at` itself) until a tick hands out
/// at least `n` reservations: those and the time of that tick.
fn tick_until(e: &mut Engine, mut at: DateTime<Utc>, n: usize) -> (Vec<Reservation>, DateTime<Utc>) {
    for _ in 0..100 {
        let out = e.tick(at).expect("tick");
        if out.len() >= n {
            return (out, at);
        }
        at = e.next_wake().expect("wake").expect("a wake is planned");
    }
    panic!("no tick handed out {n} reservations");
}

fn state_of(e: &Engine, id: &str) -> State {
    e.store().action(id).expect("read").expect("stored").state
}

/// One account with `n` messages: an engine ticked until the first is handed out, its
/// events drained. The reservation and the time of the tick that made it.
fn first_of_one_account(dir: &std::path::Path, n: usize) -> (Engine, Reservation, DateTime<Utc>) {
    let now = utc("2026-11-25T10:00:00Z");
    let text = format!(
        "{}\n{}\n{}",
        account_line("a1", ""),
        campaign_line("c1", 10, ""),
        actions("m", n, "c1", "a1", "message")
    );
    let mut e = engine_with(dir, now, &text);
    let (mut first, at) = tick_until(&mut e, now, 1);
    assert_eq!(first.len(), 1, "one at a time on one account, within the window");
    e.drain_events().expect("settled");
    (e, first.remove(0), at)
}

/// Nothing is logged that a `kill -9` could still undo: an answer is recorded and
/// flushed before the events that tell of it are handed out.
#[test]
fn the_events_of_an_answer_are_handed_out_only_once_it_is_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, reserved, at) = first_of_one_account(dir.path(), 1);
    e.complete(&reserved, Outcome::Sent, at).expect("complete");
    // Held for the next reservation: not even committed yet, and nothing told of it.
    assert!(!e.store().unsettled(), "a held answer is not committed");
    let id = &reserved.request.id;
    assert_eq!(state_of(&e, id), State::Inflight);
    let before = e.store().flushes();
    let events = e.drain_events().expect("settled");
    assert!(!e.store().unsettled());
    assert_eq!(e.store().flushes(), before + 1);
    assert_eq!(state_of(&e, id), State::Sent);
    assert!(events.iter().any(|ev| ev.name() == "action_sent"), "{events:?}");
}

/// A `sent` answer is recorded in the transaction that reserves the next action, and
/// made durable with it: one sled transaction and one flush for both (each transaction
/// writes sled's log buffer twice, which is what one action per commit waits on).
#[test]
fn a_sent_answer_rides_on_the_next_reservation_in_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, first, at) = first_of_one_account(dir.path(), 2);
    let (tx0, flush0) = (e.store().transactions(), e.store().flushes());
    e.complete(&first, Outcome::Sent, at).expect("complete");
    let next = e.next_wake().expect("wake").expect("a wake is planned");
    let (second, _) = tick_until(&mut e, next, 1);
    assert_eq!(second.len(), 1, "the second action goes after its pacing gap");
    assert_eq!(
        e.store().transactions() - tx0,
        1,
        "the answer and the reservation: one transaction"
    );
    assert_eq!(e.store().flushes() - flush0, 1, "and one durable commit");
    assert_eq!(state_of(&e, &first.request.id), State::Sent);
    assert_eq!(state_of(&e, &second[0].request.id), State::Inflight);
    let events: Vec<&str> = e
        .drain_events()
        .expect("settled")
        .iter()
        .map(|ev| ev.name())
        .collect();
    assert_eq!(
        events.first(),
        Some(&"action_sent"),
        "the answer's line comes first: {events:?}"
    );
}

/// Before it reads a job file the daemon settles the engine (`Engine::settle`): every
/// answer in so far, the `sent` ones held for the next reservation too, is recorded
/// and flushed, so a file that kills the worker while it is read or parsed (out of
/// memory) takes no answer along. Settling only the store left a held answer out of
/// it: after such a crash its action read `unknown` although the upstream said `sent`.
#[test]
fn settling_before_a_file_records_and_flushes_the_held_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut e, first, at) = first_of_one_account(dir.path(), 2);
    e.complete(&first, Outcome::Sent, at).expect("complete");
    let id = &first.request.id;
    assert_eq!(state_of(&e, id), State::Inflight, "held for the next reservation");
    e.store().settle().expect("store settled");
    assert_eq!(
        state_of(&e, id),
        State::Inflight,
        "the store alone does not know of a held answer"
    );
    e.settle().expect("engine settled");
    assert_eq!(state_of(&e, id), State::Sent, "recorded before the file is read");
    assert!(!e.store().unsettled(), "and flushed: a crash cannot undo it");
}

/// An answer other than `sent` is recorded as it comes (a failure feeds the breaker, a
/// rate limit holds the account): nothing decides before it is in the store.
#[test]
fn an_answer_other_than_sent_is_recorded_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let text = format!(
        "{}\n{}\n{}\n{}{}",
        account_line("a1", ""),
        account_line("a2", ""),
        campaign_line("c1", 10, ""),
        actions("m", 2, "c1", "a1", "message"),
        actions("n", 2, "c1", "a2", "message")
    );
    let mut e = engine_with(dir.path(), now, &text);
    let (out, at) = tick_until(&mut e, now, 2);
    let reason = "HTTP 503".to_string();
    e.complete(&out[0], Outcome::MaybeDelivered { reason }, at)
        .expect("complete");
    assert_ne!(
        state_of(&e, &out[0].request.id),
        State::Inflight,
        "recorded at once"
    );
    e.complete(&out[1], Outcome::RateLimited { retry_after_s: None }, at)
        .expect("complete");
    assert_ne!(
        state_of(&e, &out[1].request.id),
        State::Inflight,
        "recorded at once"
    );
    assert!(
        !e.store().unsettled(),
        "a rate limit is durable before `complete` returns"
    );
}

/// A held backlog is read once, a window at a time, however many of its actions are
/// refused. Here the front of the account's ready actions is a campaign of profile
/// views its invite cap does not stop, more than one window long, and the invites of a
/// second campaign come after them: each refused invite read the same first window
/// again (4,096 actions in one transaction), which stalled a worker for minutes while
/// a big file came in.
#[test]
fn a_held_backlog_is_read_once_whatever_its_front_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T00:00:00Z");
    let mut run = engine_at(dir.path(), quiet_settings(), now);
    let views = sendgate::engine::MAX_PARK_BATCH + 200;
    let invites = 40;
    let text = format!(
        "{}\n{}\n{}\n{}{}",
        account_line("a1", r#","caps":{"invites":1}"#),
        campaign_line("c1", 100_000, ""),
        campaign_line("c2", 100_000, ""),
        actions("v", views, "c1", "a1", "profile_view"),
        actions("i", invites, "c2", "a1", "invite"),
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(now + Duration::hours(20), &mut always(Outcome::Sent))
        .expect("run");
    let store = run.engine.store();
    let parked_invites = parked(&run)
        .iter()
        .filter(|(id, counter, _)| id.starts_with('i') && counter == "account.invites")
        .count();
    assert_eq!(
        parked_invites,
        invites - 1,
        "every invite but the first waits for tomorrow"
    );
    let reads = store.backlog_reads();
    let ready = (views + invites) as u64;
    assert!(
        reads <= 2 * ready,
        "the backlog scans read {reads} ready actions for a backlog of {ready}"
    );
}
