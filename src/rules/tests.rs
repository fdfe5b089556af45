//! Table tests of the rules, without a store: one row per SPEC §5 outcome, per
//! reservation verdict, per maintenance step and per parking rule. Every expected effect
//! is written out here, never computed by the rule under test.
//!
//! The clock of every row: Monday 2026-11-30 10:00 UTC; the account's window is the
//! default Mon–Fri 09:00–17:00 UTC, so "the next window on a later day" is Tuesday
//! 2026-12-01 09:00 UTC. The job-file record and event rules have their rows in
//! `tests/records.rs`.

mod records;

use super::audit;
use super::moves::Move;
use super::outcome::{self, DayDelta, Link, OutcomeEffects, OutcomeInput, Release, Reserved};
use super::park::{self, Backlog, Hold};
use super::reserve::{self, Admission, CampaignInput, Counters, ReserveDecision, ReserveInput};
use super::status::{self, Standing};
use super::{maintain, Change, Inconsistent, WaitOn};
use crate::contract::Outcome;
use crate::policy::caps::{AccountDay, Blocker, CampaignDay, CampaignType, Counter};
use crate::policy::health::{self, Signals};
use crate::policy::{Health, Kind, Tier, Window};
use crate::store::codec::ms;
use crate::store::records::{
    Account, AccountCaps, AccountDayRec, Action, Campaign, LedgerEntry, LedgerLimits, LedgerRelease, State,
};
use crate::store::Settings;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("a valid instant")
}

fn day(y: i32, mo: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, mo, d).expect("a valid date")
}

/// Monday 2026-11-30 10:00 UTC.
fn t0() -> DateTime<Utc> {
    at(2026, 11, 30, 10, 0)
}

/// Tuesday 09:00 UTC: the next window opening on a later day.
fn next_window() -> DateTime<Utc> {
    at(2026, 12, 1, 9, 0)
}

fn account() -> Account {
    Account {
        id: "acct-1".into(),
        tier: Tier::SalesNavigatorCore,
        timezone: "UTC".into(),
        window: Window::default(),
        ramp_start: day(2026, 11, 2),
        established: true,
        proxy: None,
        caps: AccountCaps::default(),
        credits: 10,
        refill_day: 1,
        last_refill_ms: ms(at(2026, 11, 1, 0, 0)),
        ramp_ceiling: 80,
        ramp_history: vec![(day(2026, 11, 2), 80)],
        last_reserved_ms: None,
        ramp_steps: 4,
        health: Health::Healthy,
        restricted: false,
        held_until_ms: None,
        maintained_day: day(2026, 11, 30),
        pending_zone: None,
        summarised_day: None,
    }
}

fn campaign() -> Campaign {
    Campaign {
        id: "q4".into(),
        timezone: "UTC".into(),
        daily_limit: 20,
        split_invites: None,
        split_messages: None,
        split_inmails: None,
        accounts: vec!["acct-1".into()],
        paused: false,
        pending_zone: None,
    }
}

fn action(kind: Kind, state: State) -> Action {
    Action {
        attempts: 2,
        retries: 2,
        ..Action::fixture(kind, state)
    }
}

/// `a` as a rule leaves it at `t0()`: the given state, reason and until.
fn moved(a: &Action, state: State, reason: Option<&str>, until: Option<DateTime<Utc>>) -> Action {
    Action {
        state,
        reason: reason.map(str::to_string),
        until_ms: until.map(ms),
        updated_ms: ms(t0()),
        ..a.clone()
    }
}

// ---------------------------------------------------------------------------------
// SPEC §5: one row per outcome.

/// The answer's input: an invite in flight, healthy signals with feedback flowing.
struct Answer {
    action: Action,
    account: Account,
    outcome: Outcome,
    probe: bool,
    reserved: Option<Reserved>,
    settings: Settings,
}

fn answer(outcome: Outcome) -> Answer {
    Answer {
        action: action(Kind::Invite, State::Inflight),
        account: account(),
        outcome,
        probe: false,
        reserved: None,
        settings: Settings::default(),
    }
}

const BACKOFF_S: u64 = 30;

fn signals() -> Signals {
    Signals {
        feedback_seen: true,
        ..Signals::default()
    }
}

fn decide(a: &Answer) -> Result<OutcomeEffects, Inconsistent> {
    outcome::effects(&OutcomeInput {
        action: &a.action,
        account: &a.account,
        outcome: &a.outcome,
        backoff_s: BACKOFF_S,
        probe: a.probe,
        signals: signals(),
        reserved: a.reserved.as_ref(),
        now: t0(),
        settings: &a.settings,
    })
}

/// Nothing but the action changes.
fn only(action: Action) -> OutcomeEffects {
    OutcomeEffects::only(action)
}

fn check(a: Answer, expected: OutcomeEffects) {
    let got = decide(&a).expect("consistent inputs");
    assert_eq!(got, expected, "{:?}", a.outcome);
}

#[test]
fn sent_invite_counts_the_send_and_links_the_prospect() {
    let a = answer(Outcome::Sent);
    let mut after = moved(&a.action, State::Sent, None, None);
    after.sent_day = Some(day(2026, 11, 30));
    let expected = OutcomeEffects {
        counters: Some(DayDelta {
            day: day(2026, 11, 30),
            sent: Some(Kind::Invite),
            invites_sent: 1,
            rate_limits: 0,
        }),
        links: vec![Link::Invite {
            account: "acct-1".into(),
            prospect: "https://www.linkedin.com/in/jane".into(),
            action: "q4/jane".into(),
        }],
        ..only(after)
    };
    check(a, expected);
}

#[test]
fn sent_inmail_links_the_prospect_for_a_reply() {
    let mut a = answer(Outcome::Sent);
    a.action.kind = Kind::Inmail;
    let after = moved(&a.action, State::Sent, None, None);
    let expected = OutcomeEffects {
        counters: Some(DayDelta {
            day: day(2026, 11, 30),
            sent: Some(Kind::Inmail),
            invites_sent: 0,
            rate_limits: 0,
        }),
        links: vec![Link::Inmail {
            account: "acct-1".into(),
            prospect: "https://www.linkedin.com/in/jane".into(),
            action: "q4/jane".into(),
        }],
        ..only(after)
    };
    check(a, expected);
}

#[test]
fn sent_message_counts_the_send_and_links_nothing() {
    let mut a = answer(Outcome::Sent);
    a.action.kind = Kind::Message;
    let expected = OutcomeEffects {
        counters: Some(DayDelta {
            day: day(2026, 11, 30),
            sent: Some(Kind::Message),
            invites_sent: 0,
            rate_limits: 0,
        }),
        ..only(moved(&a.action, State::Sent, None, None))
    };
    check(a, expected);
}

/// A rate limit held until `until`: the account held, the limit counted, health judged
/// with it (one limit in 7 days: `watch`).
fn rate_limited(a: &Answer, until: DateTime<Utc>) -> OutcomeEffects {
    let mut held = account();
    held.held_until_ms = Some(ms(until));
    held.health = Health::Watch;
    OutcomeEffects {
        account: Some(held),
        counters: Some(DayDelta {
            day: day(2026, 11, 30),
            sent: None,
            invites_sent: 0,
            rate_limits: 1,
        }),
        changes: vec![
            Change::HealthChanged {
                account: "acct-1".into(),
                old: Health::Healthy,
                new: Health::Watch,
                reason: health::REASON_RATE_LIMITS,
                health_reason: "no invites sent 3-17 days ago; 1 rate limits in 7 days".into(),
            },
            Change::AccountHeld {
                account: "acct-1".into(),
                until,
            },
        ],
        ..only(moved(&a.action, State::Parked, Some("rate_limited"), Some(until)))
    }
}

#[test]
fn rate_limited_without_retry_after_holds_until_the_next_window_on_a_later_day() {
    let a = answer(Outcome::RateLimited { retry_after_s: None });
    let expected = rate_limited(&a, next_window());
    check(a, expected);
}

#[test]
fn rate_limited_with_a_later_retry_after_holds_until_then() {
    let a = answer(Outcome::RateLimited {
        retry_after_s: Some(2 * 86_400),
    });
    let expected = rate_limited(&a, at(2026, 12, 2, 10, 0));
    check(a, expected);
}

#[test]
fn rate_limited_with_a_short_retry_after_still_waits_for_a_later_day() {
    let a = answer(Outcome::RateLimited {
        retry_after_s: Some(60),
    });
    let expected = rate_limited(&a, next_window());
    check(a, expected);
}

#[test]
fn rate_limited_never_shortens_an_earlier_longer_hold() {
    let mut a = answer(Outcome::RateLimited { retry_after_s: None });
    let longer = at(2026, 12, 5, 0, 0);
    a.account.held_until_ms = Some(ms(longer));
    let mut expected = rate_limited(&a, next_window());
    expected.account.as_mut().expect("held").held_until_ms = Some(ms(longer));
    check(a, expected);
}

#[test]
fn out_of_network_fails_and_keeps_the_slot() {
    let a = answer(Outcome::OutOfNetwork);
    let expected = only(moved(&a.action, State::Failed, Some("out_of_network"), None));
    check(a, expected);
}

#[test]
fn restricted_parks_on_the_account_and_marks_it_restricted() {
    let a = answer(Outcome::Restricted);
    let mut restricted = account();
    restricted.restricted = true;
    restricted.health = Health::Restricted;
    let expected = OutcomeEffects {
        waiting_on: Some(WaitOn::Account("acct-1".into())),
        account: Some(restricted),
        changes: vec![Change::HealthChanged {
            account: "acct-1".into(),
            old: Health::Healthy,
            new: Health::Restricted,
            reason: health::REASON_RESTRICTED,
            health_reason: "restricted: the upstream answered `restricted`".into(),
        }],
        ..only(moved(&a.action, State::Parked, Some("account_restricted"), None))
    };
    check(a, expected);
}

#[test]
fn restricted_again_logs_no_second_health_change() {
    let mut a = answer(Outcome::Restricted);
    a.account.restricted = true;
    a.account.health = Health::Restricted;
    let expected = OutcomeEffects {
        waiting_on: Some(WaitOn::Account("acct-1".into())),
        account: Some(a.account.clone()),
        ..only(moved(&a.action, State::Parked, Some("account_restricted"), None))
    };
    check(a, expected);
}

#[test]
fn no_credits_drains_the_balance_and_parks_until_the_refills_window() {
    let mut a = answer(Outcome::NoCredits);
    a.action.kind = Kind::Inmail;
    a.account.refill_day = 3;
    let mut drained = a.account.clone();
    drained.credits = 0;
    // The refill: Thursday 2026-12-03 00:00 UTC; its first window opening, 09:00.
    let until = at(2026, 12, 3, 9, 0);
    let expected = OutcomeEffects {
        account: Some(drained),
        ..only(moved(&a.action, State::Parked, Some("no_credits"), Some(until)))
    };
    check(a, expected);
}

#[test]
fn invalid_fails_with_its_reason() {
    let a = answer(Outcome::Invalid {
        reason: "bad prospect".into(),
    });
    let expected = only(moved(
        &a.action,
        State::Failed,
        Some("invalid: bad prospect"),
        None,
    ));
    check(a, expected);
}

fn backoff_until() -> DateTime<Utc> {
    at(2026, 11, 30, 10, 0) + chrono::Duration::seconds(BACKOFF_S as i64)
}

/// Queued again after the backoff, for a retry.
fn retried(a: &Action) -> Action {
    moved(
        a,
        State::Queued,
        Some("not_delivered: refused"),
        Some(backoff_until()),
    )
}

fn not_delivered() -> Outcome {
    Outcome::NotDelivered {
        reason: "refused".into(),
    }
}

#[test]
fn not_delivered_without_a_known_reservation_is_queued_and_keeps_its_slots() {
    let a = answer(not_delivered());
    let expected = only(retried(&a.action));
    check(a, expected);
}

/// The reservation of attempt 2 of `kind`, on Sunday's account day and Monday's
/// campaign day (the answer came after midnight), with the counters holding its slot.
fn reservation(kind: Kind) -> Reserved {
    Reserved {
        ledger_id: 77,
        entry: LedgerEntry {
            action: "q4/jane".into(),
            account: "acct-1".into(),
            campaign: "q4".into(),
            kind,
            attempt: 2,
            at_ms: ms(at(2026, 11, 29, 23, 59)),
            account_day: day(2026, 11, 29),
            campaign_day: day(2026, 11, 30),
            limits: LedgerLimits {
                invites: 80,
                messages: 80,
                inmails: 5,
                engagement: 100,
                weekly_invites: None,
                campaign: 20,
            },
        },
        day: day_counters(3, 1),
        campaign_day: campaign_counters(2, 1),
    }
}

/// An account's counters of a day: invites and InMails reserved, one rate limit.
fn day_counters(invites: u32, inmails: u32) -> AccountDayRec {
    AccountDayRec {
        reserved: AccountDay {
            invites,
            inmails,
            ..AccountDay::default()
        },
        rate_limits: 1,
        ..AccountDayRec::default()
    }
}

fn campaign_counters(invites: u32, inmails: u32) -> CampaignDay {
    CampaignDay {
        invites,
        inmails,
        ..CampaignDay::default()
    }
}

fn release_record(kind: Kind) -> LedgerRelease {
    LedgerRelease {
        action: "q4/jane".into(),
        account: "acct-1".into(),
        campaign: "q4".into(),
        kind,
        attempt: 2,
        at_ms: ms(t0()),
        account_day: day(2026, 11, 29),
        campaign_day: day(2026, 11, 30),
        reservation: 77,
    }
}

#[test]
fn not_delivered_gives_back_exactly_its_reservations_slots() {
    let mut a = answer(not_delivered());
    a.reserved = Some(reservation(Kind::Invite));
    let expected = OutcomeEffects {
        release: Some(Release {
            day: day_counters(2, 1),
            campaign_day: Some(campaign_counters(1, 1)),
            record: release_record(Kind::Invite),
        }),
        ..only(retried(&a.action))
    };
    check(a, expected);
}

#[test]
fn not_delivered_inmail_gives_back_its_credit() {
    let mut a = answer(not_delivered());
    a.action.kind = Kind::Inmail;
    a.reserved = Some(reservation(Kind::Inmail));
    let mut credited = account();
    credited.credits = 11;
    let expected = OutcomeEffects {
        account: Some(credited),
        release: Some(Release {
            day: day_counters(3, 0),
            campaign_day: Some(campaign_counters(2, 0)),
            record: release_record(Kind::Inmail),
        }),
        ..only(retried(&a.action))
    };
    check(a, expected);
}

#[test]
fn not_delivered_profile_view_writes_no_campaign_counter() {
    let mut a = answer(not_delivered());
    a.action.kind = Kind::ProfileView;
    let mut r = reservation(Kind::ProfileView);
    r.day.reserved.engagement = 4;
    a.reserved = Some(r);
    let got = decide(&a).expect("consistent");
    let release = got.release.expect("released");
    assert_eq!(release.day.reserved.engagement, 3);
    assert_eq!(
        release.campaign_day, None,
        "no campaign counter holds a profile view"
    );
}

#[test]
fn not_delivered_at_max_attempts_fails() {
    let mut a = answer(not_delivered());
    a.action.retries = 5;
    let expected = only(moved(
        &a.action,
        State::Failed,
        Some("not_delivered: refused: 5 attempts"),
        None,
    ));
    check(a, expected);
}

#[test]
fn a_probe_is_not_one_of_the_actions_attempts() {
    // Retries 5 of 5: as an attempt it would fail; as a probe it counts 4 and retries.
    let mut a = answer(not_delivered());
    a.action.retries = 5;
    a.probe = true;
    let mut after = retried(&a.action);
    after.retries = 4;
    check(a, only(after));
}

#[test]
fn maybe_delivered_is_unknown_unless_idempotent() {
    let maybe = || Outcome::MaybeDelivered {
        reason: "timeout".into(),
    };
    let a = answer(maybe());
    let expected = only(moved(
        &a.action,
        State::Unknown,
        Some("maybe_delivered: timeout"),
        None,
    ));
    check(a, expected);

    let mut a = answer(maybe());
    a.settings.idempotent = true;
    a.reserved = Some(reservation(Kind::Invite));
    // Retried with the same key; its slots stay used (it may have been received).
    let expected = only(moved(
        &a.action,
        State::Queued,
        Some("maybe_delivered: timeout"),
        Some(backoff_until()),
    ));
    check(a, expected);

    let mut a = answer(maybe());
    a.settings.idempotent = true;
    a.action.retries = 5;
    let expected = only(moved(
        &a.action,
        State::Failed,
        Some("maybe_delivered: timeout: 5 attempts"),
        None,
    ));
    check(a, expected);
}

#[test]
fn a_reservation_naming_another_attempt_is_inconsistent() {
    let mut a = answer(not_delivered());
    let mut r = reservation(Kind::Invite);
    r.entry.attempt = 1;
    a.reserved = Some(r);
    assert_eq!(
        decide(&a),
        Err(Inconsistent(
            "in-flight q4/jane (attempt 2) points at the reservation of q4/jane (attempt 1)".into()
        ))
    );
}

#[test]
fn counters_without_the_slot_to_give_back_are_inconsistent() {
    let mut a = answer(not_delivered());
    let mut r = reservation(Kind::Invite);
    r.day.reserved.invites = 0;
    a.reserved = Some(r);
    assert!(decide(&a).is_err());
}

#[test]
fn only_holding_answers_are_binding_and_only_a_rate_limit_reads_signals() {
    let all = [
        (Outcome::Sent, false, false),
        (Outcome::RateLimited { retry_after_s: None }, true, true),
        (Outcome::OutOfNetwork, false, false),
        (Outcome::Restricted, true, false),
        (Outcome::NoCredits, true, false),
        (Outcome::Invalid { reason: "x".into() }, false, false),
        (not_delivered(), false, false),
        (Outcome::MaybeDelivered { reason: "x".into() }, false, false),
    ];
    for (o, binding, signals) in all {
        assert_eq!(outcome::binding(&o), binding, "{o:?}");
        assert_eq!(outcome::needs_signals(&o), signals, "{o:?}");
    }
}

#[test]
fn an_attempt_lost_to_a_crash_is_unknown_or_requeued_when_idempotent() {
    let a = action(Kind::Invite, State::Inflight);
    assert_eq!(
        outcome::lost_to_crash(&a, false, t0()),
        moved(&a, State::Unknown, Some("outcome lost to a crash"), None)
    );
    assert_eq!(
        outcome::lost_to_crash(&a, true, t0()),
        moved(&a, State::Queued, Some("recovered after a crash"), None)
    );
}

// ---------------------------------------------------------------------------------
// Reservations: every refusal, the parks, the admission.

struct Ask {
    action: Action,
    account: Account,
    account_hold: bool,
    campaign: Option<Campaign>,
    campaign_hold: bool,
    counters: Counters,
    now: DateTime<Utc>,
    settings: Settings,
}

/// What a row changes in the plain request.
type Setup = fn(&mut Ask);

fn ask(kind: Kind) -> Ask {
    Ask {
        action: action(kind, State::Queued),
        account: account(),
        account_hold: false,
        campaign: Some(campaign()),
        campaign_hold: false,
        counters: Counters::default(),
        now: t0(),
        settings: Settings::default(),
    }
}

fn verdict(a: &Ask) -> ReserveDecision {
    reserve::decide(&ReserveInput {
        action: &a.action,
        account: &a.account,
        account_operator_hold: a.account_hold,
        campaign: a.campaign.as_ref().map(|c| CampaignInput {
            campaign: c,
            operator_hold: a.campaign_hold,
        }),
        counters: a.counters,
        now: a.now,
        settings: &a.settings,
    })
}

#[test]
fn refusals_in_order() {
    let rows: [(&str, Setup, &str); 9] = [
        (
            "backing off",
            |a| a.action.until_ms = Some(ms(t0()) + 1),
            reserve::NOT_DUE,
        ),
        (
            "already in flight",
            |a| a.action.state = State::Inflight,
            reserve::NOT_DUE,
        ),
        ("restricted", |a| a.account.restricted = true, reserve::RESTRICTED),
        (
            "held by a rate limit",
            |a| a.account.held_until_ms = Some(ms(t0()) + 1),
            reserve::HELD,
        ),
        (
            "operator pause",
            |a| a.account_hold = true,
            reserve::OPERATOR_PAUSE,
        ),
        (
            "after hours",
            |a| a.now = at(2026, 11, 30, 17, 30),
            reserve::WINDOW_SHUT,
        ),
        (
            "saturday",
            |a| a.now = at(2026, 12, 5, 10, 0),
            reserve::WINDOW_SHUT,
        ),
        (
            "unknown campaign",
            |a| a.campaign = None,
            reserve::UNKNOWN_CAMPAIGN,
        ),
        // A restricted account is refused before a held one: the first refusal wins.
        (
            "restricted and held",
            |a| {
                a.account.restricted = true;
                a.account.held_until_ms = Some(ms(t0()) + 1);
                a.account_hold = true;
            },
            reserve::RESTRICTED,
        ),
    ];
    for (name, set, why) in rows {
        let mut a = ask(Kind::Invite);
        set(&mut a);
        assert_eq!(verdict(&a), ReserveDecision::Skip(why), "{name}");
    }
}

#[test]
fn a_backoff_that_ended_and_an_expired_hold_do_not_refuse() {
    let mut a = ask(Kind::Invite);
    a.action.until_ms = Some(ms(t0()));
    a.account.held_until_ms = Some(ms(t0()));
    assert!(matches!(verdict(&a), ReserveDecision::Admit(_)));
}

fn paused(a: &Ask) -> ReserveDecision {
    ReserveDecision::Park {
        action: Box::new(moved(&a.action, State::Parked, Some("campaign_paused"), None)),
        waiting_on: Some(WaitOn::Campaign("q4".into())),
        blocked: None,
        until: None,
    }
}

#[test]
fn a_paused_campaign_parks_waiting_on_its_resume() {
    let mut a = ask(Kind::Message);
    a.campaign.as_mut().expect("campaign").paused = true;
    assert_eq!(verdict(&a), paused(&a));
    let mut a = ask(Kind::Message);
    a.campaign_hold = true;
    assert_eq!(verdict(&a), paused(&a), "an operator hold on the campaign");
}

fn blocked(a: &Ask, blocker: Blocker, until: DateTime<Utc>) -> ReserveDecision {
    ReserveDecision::Park {
        action: Box::new(moved(
            &a.action,
            State::Parked,
            Some(blocker.name().as_str()),
            Some(until),
        )),
        waiting_on: None,
        blocked: Some(blocker),
        until: Some(until),
    }
}

#[test]
fn each_exhausted_counter_parks_until_its_next_day() {
    let rows: [(Kind, Setup, Blocker, DateTime<Utc>); 8] = [
        (
            Kind::Invite,
            |a| a.counters.day.invites = 80,
            Blocker::Account(Counter::Invites),
            next_window(),
        ),
        (
            Kind::Message,
            |a| a.counters.day.messages = 80,
            Blocker::Account(Counter::Messages),
            next_window(),
        ),
        (
            Kind::Inmail,
            |a| a.counters.day.inmails = 5,
            Blocker::Account(Counter::Inmails),
            next_window(),
        ),
        (
            Kind::ProfileView,
            |a| a.counters.day.engagement = 100,
            Blocker::Account(Counter::Engagement),
            next_window(),
        ),
        // The ramp is the invite ceiling: 10 today, whatever the caps say.
        (
            Kind::Invite,
            |a| {
                a.account.ramp_ceiling = 10;
                a.account.ramp_history = vec![(day(2026, 11, 2), 10)];
                a.counters.day.invites = 10;
            },
            Blocker::Account(Counter::Invites),
            next_window(),
        ),
        // No credits: the next refill (the 3rd, 00:00 UTC), then its window (09:00).
        (
            Kind::Inmail,
            |a| {
                a.account.credits = 0;
                a.account.refill_day = 3;
            },
            Blocker::Account(Counter::InmailCredits),
            at(2026, 12, 3, 9, 0),
        ),
        // The campaign's day is UTC: its next day opens with the account's window.
        (
            Kind::Invite,
            |a| a.counters.campaign_day.invites = 20,
            Blocker::Campaign(CampaignType::Invites),
            next_window(),
        ),
        // A campaign on Kiritimati time (UTC+14) turns its day at 10:00 UTC: Tuesday
        // 10:00 UTC is inside the account's window.
        (
            Kind::Message,
            |a| {
                a.campaign.as_mut().expect("campaign").timezone = "Pacific/Kiritimati".into();
                a.counters.campaign_day.messages = 20;
            },
            Blocker::Campaign(CampaignType::Messages),
            at(2026, 12, 1, 10, 0),
        ),
    ];
    for (kind, set, blocker, until) in rows {
        let mut a = ask(kind);
        set(&mut a);
        assert_eq!(verdict(&a), blocked(&a, blocker, until), "{}", blocker.name());
    }
}

#[test]
fn the_rolling_week_parks_until_its_sum_drops_below_the_cap() {
    let mut a = ask(Kind::Invite);
    a.account.caps.weekly_invites = Some(100);
    assert!(reserve::needs_week(Kind::Invite, &a.account, &a.settings));
    assert!(!reserve::needs_week(Kind::Message, &a.account, &a.settings));
    // Oldest first; tomorrow drops 0 (still 100), the day after drops 60: Wednesday.
    a.counters.week = [0, 60, 20, 10, 5, 3, 2];
    a.counters.day.invites = 2;
    let expected = blocked(
        &a,
        Blocker::Account(Counter::WeeklyInvites),
        at(2026, 12, 2, 9, 0),
    );
    assert_eq!(verdict(&a), expected);
}

#[test]
fn an_admitted_invite_takes_its_slots_and_writes_the_ledger_entry() {
    let mut a = ask(Kind::Invite);
    a.counters.day.invites = 3;
    a.counters.campaign_day.invites = 2;
    let mut inflight = moved(&a.action, State::Inflight, None, None);
    inflight.attempts = 3;
    inflight.retries = 3;
    let mut acct = account();
    acct.last_reserved_ms = Some(ms(t0()));
    let expected = ReserveDecision::Admit(Box::new(Admission {
        action: inflight,
        account: acct,
        day: AccountDay {
            invites: 4,
            ..AccountDay::default()
        },
        campaign_day: CampaignDay {
            invites: 3,
            ..CampaignDay::default()
        },
        entry: LedgerEntry {
            action: "q4/jane".into(),
            account: "acct-1".into(),
            campaign: "q4".into(),
            kind: Kind::Invite,
            attempt: 3,
            at_ms: ms(t0()),
            account_day: day(2026, 11, 30),
            campaign_day: day(2026, 11, 30),
            limits: LedgerLimits {
                invites: 80,
                messages: 80,
                inmails: 5,
                engagement: 100,
                weekly_invites: None,
                campaign: 20,
            },
        },
    }));
    assert_eq!(verdict(&a), expected);
}

#[test]
fn an_admitted_inmail_takes_a_credit() {
    let a = ask(Kind::Inmail);
    let ReserveDecision::Admit(adm) = verdict(&a) else {
        panic!("admitted");
    };
    assert_eq!(adm.account.credits, 9);
    assert_eq!(
        (
            adm.day.inmails,
            adm.campaign_day.inmails,
            adm.entry.limits.campaign
        ),
        (1, 1, 20)
    );
}

// ---------------------------------------------------------------------------------
// A campaign's time-zone change (SPEC §3.6: per local day of the campaign's zone).

/// A campaign of `daily_limit` 3 (UTC) and an account open all day: an invite is tried
/// every 10 minutes for 3 days from `t0()`; after the day's 3 invites, a `campaign`
/// record sets each zone of `changes`, one per try. Returns each admission: (when, the
/// campaign day it counted on). The store's part is played by two maps of day counters.
fn campaign_sends_across(changes: &[&str]) -> Vec<(DateTime<Utc>, NaiveDate)> {
    use crate::contract::jobfile::CampaignRecord;
    use std::collections::BTreeMap;
    let mut acct = account();
    acct.window = Window {
        days: [true; 7],
        start: chrono::NaiveTime::MIN,
        end: chrono::NaiveTime::from_hms_opt(23, 59, 0).expect("a valid time"),
    };
    let mut camp = Campaign {
        daily_limit: 3,
        ..campaign()
    };
    let settings = Settings::default();
    let mut account_days: BTreeMap<NaiveDate, AccountDay> = BTreeMap::new();
    let mut campaign_days: BTreeMap<NaiveDate, CampaignDay> = BTreeMap::new();
    let mut sends = Vec::new();
    for step in 0..3 * 24 * 6 {
        let now = t0() + chrono::Duration::minutes(10 * step);
        if let Some(tz) = usize::try_from(step - 3).ok().and_then(|i| changes.get(i)) {
            let r = CampaignRecord {
                id: camp.id.clone(),
                timezone: Some(tz.parse().expect("a zone")),
                ..CampaignRecord::default()
            };
            camp = super::records::campaign(Some(camp), &r, None, now)
                .expect("applies")
                .campaign;
        }
        let (today, camp_today) = reserve::days(&acct, &camp, now);
        let counters = Counters {
            day: account_days.get(&today).copied().unwrap_or_default(),
            campaign_day: campaign_days.get(&camp_today).copied().unwrap_or_default(),
            week: [0; 7],
        };
        let queued = action(Kind::Invite, State::Queued);
        let decision = reserve::decide(&ReserveInput {
            action: &queued,
            account: &acct,
            account_operator_hold: false,
            campaign: Some(CampaignInput {
                campaign: &camp,
                operator_hold: false,
            }),
            counters,
            now,
            settings: &settings,
        });
        if let ReserveDecision::Admit(adm) = decision {
            account_days.insert(adm.entry.account_day, adm.day);
            campaign_days.insert(adm.entry.campaign_day, adm.campaign_day);
            sends.push((now, adm.entry.campaign_day));
            acct = adm.account;
        }
    }
    sends
}

#[test]
fn a_campaign_zone_change_never_gives_it_a_second_day_over_the_same_hours() {
    // An earlier date (UTC−12), a later one (UTC+14), and the one then the other.
    for changes in [
        &["Etc/GMT+12"][..],
        &["Etc/GMT-14"],
        &["Etc/GMT+12", "Etc/GMT-14"],
    ] {
        let sends = campaign_sends_across(changes);
        let first = sends[0].0;
        let in_a_day = sends
            .iter()
            .filter(|(t, _)| *t < first + chrono::Duration::hours(24))
            .count();
        assert_eq!(
            in_a_day, 3,
            "{changes:?}: the campaign's 3 in 24 hours: {sends:?}"
        );
        // Its days follow one another in real time: none comes back after a later one.
        assert!(
            sends.windows(2).all(|w| w[0].1 <= w[1].1),
            "{changes:?}: days overlap: {sends:?}"
        );
        // The new zone does apply, once the day it was decided on has ended.
        let (last, last_day) = *sends.last().expect("sends");
        let zone: chrono_tz::Tz = changes.last().expect("a change").parse().expect("zone");
        assert_eq!(
            last_day,
            crate::policy::window::local_day(zone, last),
            "{changes:?}"
        );
        assert_eq!(sends.len(), 3 * 3, "{changes:?}: 3 a day: {sends:?}");
    }
}

// ---------------------------------------------------------------------------------
// Maintenance.

#[test]
fn catch_up_refills_once_per_month_due_and_says_when_a_day_turn_is_due() {
    let st = Settings::default();
    let mut a = account();
    a.last_refill_ms = ms(at(2026, 10, 1, 0, 0));
    a.maintained_day = day(2026, 11, 29);
    let mut out = Vec::new();
    assert_eq!(
        maintain::catch_up(&mut a, t0(), &st, &mut out),
        Some(day(2026, 11, 30))
    );
    // Sales Navigator Core: 50 a month, up to 150.
    assert_eq!(
        out,
        vec![Change::CreditsRefilled {
            account: "acct-1".into(),
            old: 10,
            new: 60,
        }]
    );
    assert_eq!((a.credits, a.last_refill_ms), (60, ms(at(2026, 11, 1, 0, 0))));
    // Caught up, and the day maintained: nothing more, even with the clock stepped back.
    a.maintained_day = day(2026, 11, 30);
    let mut out = Vec::new();
    assert_eq!(maintain::catch_up(&mut a, t0(), &st, &mut out), None);
    assert_eq!(
        maintain::catch_up(&mut a, at(2026, 11, 29, 10, 0), &st, &mut out),
        None
    );
    assert!(out.is_empty());
}

/// A warming account (ramp 10 → 80 over 6 weeks) on its fourth boundary.
fn warming(ceiling: u32) -> Account {
    Account {
        established: false,
        ramp_ceiling: ceiling,
        ramp_history: vec![(day(2026, 11, 2), ceiling)],
        ramp_steps: 3,
        maintained_day: day(2026, 11, 29),
        ..account()
    }
}

#[test]
fn day_turn_judges_health_then_steps_the_ramp_once() {
    let st = Settings::default();
    let today = day(2026, 11, 30);
    let healthy = Signals {
        invites_sent: 40,
        invites_accepted: 20,
        ..signals()
    };
    let at_risk = Signals {
        rate_limits: 3,
        ..healthy
    };
    // (ceiling, signals, health after, ceiling after, reason)
    let rows = [
        (10, healthy, Health::Healthy, 15, "advance"),
        (22, at_risk, Health::AtRisk, 15, "step_back"),
        (
            22,
            Signals {
                rate_limits: 1,
                ..healthy
            },
            Health::Watch,
            22,
            "",
        ),
    ];
    for (ceiling, sig, health, new, reason) in rows {
        let mut a = warming(ceiling);
        let mut out = Vec::new();
        maintain::day_turn(&mut a, today, sig, &st, &mut out);
        assert_eq!((a.maintained_day, a.ramp_steps), (today, 4));
        assert_eq!((a.health, a.ramp_ceiling), (health, new), "{sig:?}");
        let ramp: Vec<_> = out
            .iter()
            .filter_map(|c| match c {
                Change::RampChanged { old, new, reason, .. } => Some((*old, *new, *reason)),
                _ => None,
            })
            .collect();
        let expected = if new == ceiling {
            vec![]
        } else {
            vec![(ceiling, new, reason)]
        };
        assert_eq!(ramp, expected, "{sig:?}");
        let health_changes = out
            .iter()
            .filter(|c| matches!(c, Change::HealthChanged { .. }))
            .count();
        assert_eq!(health_changes, usize::from(health != Health::Healthy));
    }
}

#[test]
fn signals_sum_the_acceptance_window_and_the_rate_limit_week() {
    let mut recent = vec![AccountDayRec::default(); maintain::SIGNAL_DAYS];
    assert_eq!(maintain::SIGNAL_DAYS, 18);
    for (ago, d) in recent.iter_mut().enumerate() {
        d.invites_sent = 1;
        d.invites_accepted = u32::from(ago % 2 == 0);
        d.rate_limits = 1;
    }
    // Acceptance: days 3..=17 (15 days, 7 of them even); rate limits: days 0..=6.
    assert_eq!(
        maintain::signals(false, true, &recent),
        Signals {
            restricted: false,
            invites_sent: 15,
            invites_accepted: 7,
            rate_limits: 7,
            feedback_seen: true,
        }
    );
    let s = maintain::signals(true, false, &recent);
    assert_eq!(
        maintain::health_reason(&s),
        "no acceptance feedback (15 invites sent 3-17 days ago); 7 rate limits in 7 days; restricted"
    );
}

// ---------------------------------------------------------------------------------
// Parking a backlog.

#[test]
fn a_blocked_counter_parks_every_kind_that_draws_from_it() {
    let rows = [
        (Blocker::Account(Counter::Invites), vec![Kind::Invite]),
        (
            Blocker::Account(Counter::Engagement),
            vec![Kind::Message, Kind::ProfileView, Kind::Comment, Kind::Reaction],
        ),
        (Blocker::Account(Counter::InmailCredits), vec![Kind::Inmail]),
        (Blocker::Campaign(CampaignType::Messages), vec![Kind::Message]),
    ];
    for (b, kinds) in rows {
        assert_eq!(park::kinds_blocked_by(b), kinds, "{}", b.name());
    }
}

#[test]
fn backlog_plans() {
    let b = Blocker::Account(Counter::Messages);
    assert_eq!(
        park::backlog(Hold::Counter(b, next_window()), None),
        Some(Backlog {
            kinds: vec![Kind::Message],
            reason: "account.messages".into(),
            until: Some(next_window()),
            waiting_on: None,
        })
    );
    assert_eq!(
        park::backlog(Hold::CampaignPaused, None),
        None,
        "no campaign named"
    );
    assert_eq!(
        park::backlog(Hold::CampaignPaused, Some("q4")),
        Some(Backlog {
            kinds: Kind::ALL.to_vec(),
            reason: "campaign_paused".into(),
            until: None,
            waiting_on: Some(WaitOn::Campaign("q4".into())),
        })
    );
    assert_eq!(
        park::owned_elsewhere("acct-1", "owned_elsewhere"),
        Backlog {
            kinds: Kind::ALL.to_vec(),
            reason: "owned_elsewhere".into(),
            until: None,
            waiting_on: Some(WaitOn::Account("acct-1".into())),
        }
    );
}

#[test]
fn only_queued_due_actions_of_a_stopped_kind_park_with_the_backlog() {
    let plan = park::backlog(
        Hold::Counter(Blocker::Account(Counter::Invites), next_window()),
        None,
    )
    .expect("a plan");
    let queued = action(Kind::Invite, State::Queued);
    assert_eq!(
        park::park_with(&queued, &plan, t0()),
        Some(moved(
            &queued,
            State::Parked,
            Some("account.invites"),
            Some(next_window())
        ))
    );
    let mut backing_off = queued.clone();
    backing_off.until_ms = Some(ms(t0()));
    let rows = [
        ("another kind", action(Kind::Message, State::Queued)),
        ("backing off", backing_off),
        ("in flight", action(Kind::Invite, State::Inflight)),
        ("already parked", action(Kind::Invite, State::Parked)),
    ];
    for (name, a) in rows {
        assert_eq!(park::park_with(&a, &plan, t0()), None, "{name}");
    }
}

#[test]
fn a_fleet_verdict_parks_or_fails_a_queued_action_only() {
    let queued = action(Kind::Invite, State::Queued);
    assert_eq!(
        park::settle(&queued, true, "owned_elsewhere", None, t0()),
        Some((
            moved(&queued, State::Parked, Some("owned_elsewhere"), None),
            Some(WaitOn::Account("acct-1".into()))
        )),
        "no until: waits on its account"
    );
    assert_eq!(
        park::settle(&queued, true, "account.invites", Some(next_window()), t0()),
        Some((
            moved(
                &queued,
                State::Parked,
                Some("account.invites"),
                Some(next_window())
            ),
            None
        ))
    );
    assert_eq!(
        park::settle(&queued, false, "duplicate_in_fleet", Some(next_window()), t0()),
        Some((
            moved(&queued, State::Failed, Some("duplicate_in_fleet"), None),
            None
        )),
        "a failure keeps no until"
    );
    let inflight = action(Kind::Invite, State::Inflight);
    assert_eq!(park::settle(&inflight, true, "owned_elsewhere", None, t0()), None);
}

// ---------------------------------------------------------------------------------
// Promotion and release of waiting actions.

/// An invite parked with `reason`, until `until` or (`None`) waiting on an event.
fn parked_invite(reason: &str, until: Option<DateTime<Utc>>) -> Action {
    moved(
        &action(Kind::Invite, State::Parked),
        State::Parked,
        Some(reason),
        until,
    )
}

#[test]
fn an_action_whose_time_came_is_queued_again_and_keeps_its_reason() {
    let parked = parked_invite("invites", Some(next_window()));
    let due = Action {
        state: State::Queued,
        reason: Some("invites".into()),
        until_ms: None,
        updated_ms: ms(t0()),
        ..parked.clone()
    };
    assert_eq!(park::promote(&parked, t0()), Some(due));
    let backing_off = moved(
        &action(Kind::Invite, State::Queued),
        State::Queued,
        None,
        Some(next_window()),
    );
    assert_eq!(
        park::promote(&backing_off, t0()),
        Some(moved(&backing_off, State::Queued, None, None))
    );
    let waiting = parked_invite("campaign_paused", None);
    assert_eq!(
        park::promote(&waiting, t0()),
        None,
        "waits on an event, not a time"
    );
    assert_eq!(park::promote(&action(Kind::Invite, State::Inflight), t0()), None);
    assert_eq!(
        park::promote(&action(Kind::Invite, State::Queued), t0()),
        None,
        "no until"
    );
}

#[test]
fn an_action_waiting_on_an_event_is_released_without_its_reason() {
    let waiting = parked_invite("campaign_paused", None);
    assert_eq!(
        park::release(&waiting, t0()),
        Some(moved(&waiting, State::Queued, None, None))
    );
    let timed = parked_invite("invites", Some(next_window()));
    assert_eq!(park::release(&timed, t0()), None, "waits on a time");
    assert_eq!(park::release(&action(Kind::Invite, State::Queued), t0()), None);
    assert_eq!(park::release(&action(Kind::Invite, State::Cancelled), t0()), None);
}

#[test]
fn waiting_actions_go_only_when_their_owner_is_active() {
    let paused = Campaign {
        paused: true,
        ..campaign()
    };
    // (campaign, operator hold) -> active
    let rows = [
        (Some(campaign()), false, true),
        (Some(campaign()), true, false),
        (Some(paused), false, false),
        (None, false, false),
    ];
    for (c, hold, active) in rows {
        assert_eq!(park::campaign_active(c.as_ref(), hold), active, "{c:?} {hold}");
    }
    let restricted = Account {
        restricted: true,
        ..account()
    };
    assert!(park::account_active(Some(&account())));
    assert!(!park::account_active(Some(&restricted)));
    assert!(!park::account_active(None));
}

// ---------------------------------------------------------------------------------
// Cancel and requeue.

#[test]
fn only_queued_or_parked_cancel_and_only_failed_or_unknown_requeue() {
    use State::*;
    // (state, cancel moves it, requeue moves it)
    let rows = [
        (Queued, true, false),
        (Parked, true, false),
        (Inflight, false, false),
        (Sent, false, false),
        (Failed, false, true),
        (Unknown, false, true),
        (Cancelled, false, false),
    ];
    assert_eq!(rows.len(), State::ALL.len(), "every state has a row");
    for (s, cancel, requeue) in rows {
        assert_eq!(Move::Cancel.movable(s), cancel, "cancel {s:?}");
        assert_eq!(Move::Requeue.movable(s), requeue, "requeue {s:?}");
    }
}

#[test]
fn a_move_clears_the_wait_and_a_requeue_starts_the_retries_again() {
    let failed = Action {
        retries: 5,
        reason: Some("invalid: bad url".into()),
        until_ms: Some(7),
        ..action(Kind::Invite, State::Failed)
    };
    let requeued = Action {
        retries: 0,
        ..moved(&failed, State::Queued, None, None)
    };
    assert_eq!(Move::Requeue.verdict(&failed, t0()), Ok(requeued));
    let parked = moved(
        &action(Kind::Message, State::Parked),
        State::Parked,
        Some("messages"),
        Some(next_window()),
    );
    assert_eq!(
        Move::Cancel.verdict(&parked, t0()),
        Ok(moved(&parked, State::Cancelled, Some("cancelled"), None)),
        "attempts and retries stay"
    );
    assert_eq!(
        Move::Cancel.verdict(&action(Kind::Invite, State::Sent), t0()),
        Err("cannot cancel an action that is sent".to_string())
    );
    assert_eq!(
        Move::Requeue.verdict(&action(Kind::Invite, State::Queued), t0()),
        Err("cannot requeue an action that is queued".to_string())
    );
}

// ---------------------------------------------------------------------------------
// What `status` says of an account's work.

#[test]
fn each_waiting_action_is_counted_under_its_reason() {
    let a = |state, reason: Option<&str>, until: Option<DateTime<Utc>>| Action {
        reason: reason.map(str::to_string),
        until_ms: until.map(ms),
        ..action(Kind::Invite, state)
    };
    let w = |r: &str| Some(Standing::Waiting(r.to_string()));
    let rows = [
        ("due", a(State::Queued, None, None), Some(Standing::Ready)),
        (
            "due, stale reason",
            a(State::Queued, Some("invites"), None),
            Some(Standing::Ready),
        ),
        (
            "not_before",
            a(State::Queued, None, Some(next_window())),
            w("not_before"),
        ),
        (
            "backoff",
            a(State::Queued, Some("timeout"), Some(next_window())),
            w("retry"),
        ),
        (
            "parked on a cap",
            a(State::Parked, Some("invites"), Some(next_window())),
            w("invites"),
        ),
        (
            "parked on an event",
            a(State::Parked, Some("campaign_paused"), None),
            w("campaign_paused"),
        ),
        ("parked, no reason", a(State::Parked, None, None), w("parked")),
        ("in flight", a(State::Inflight, None, None), None),
        ("sent", a(State::Sent, None, None), None),
    ];
    for (name, action, expected) in rows {
        assert_eq!(status::standing(&action), expected, "{name}");
    }
}

#[test]
fn next_send_waits_for_work_hold_pacing_and_window() {
    let now = t0(); // Monday 10:00, inside 09:00-17:00
    let mut a = account();
    assert_eq!(status::next_send(&a, now, false, true, None, 45), Some(now));
    assert_eq!(status::next_send(&a, now, true, true, None, 45), None, "paused");
    assert_eq!(
        status::next_send(&a, now, false, false, None, 45),
        None,
        "no work"
    );
    let later = at(2026, 11, 30, 11, 0);
    assert_eq!(
        status::next_send(&a, now, false, false, Some(later), 45),
        Some(later)
    );
    a.last_reserved_ms = Some(ms(now));
    assert_eq!(
        status::next_send(&a, now, false, true, None, 45),
        Some(at(2026, 11, 30, 10, 0) + chrono::Duration::seconds(45))
    );
    a.held_until_ms = Some(ms(at(2026, 11, 30, 18, 0)));
    // Held past the window's end: the next opening, Tuesday 09:00.
    assert_eq!(
        status::next_send(&a, now, false, true, None, 45),
        Some(next_window())
    );
    a.restricted = true;
    assert_eq!(status::next_send(&a, now, false, true, None, 45), None);
}

#[test]
fn due_work_not_sent_says_why_first_reason_wins() {
    let next = Some(at(2026, 11, 30, 10, 5));
    let held_until = at(2026, 11, 30, 12, 0);
    let held = Account {
        held_until_ms: Some(ms(held_until)),
        ..account()
    };
    let restricted = Account {
        restricted: true,
        ..held.clone()
    };
    let saturday = at(2026, 12, 5, 10, 0);
    let rows = [
        ("operator", restricted.clone(), t0(), true, ("paused", None)),
        (
            "restricted",
            restricted,
            t0(),
            false,
            ("account_restricted", None),
        ),
        ("held", held, t0(), false, ("held", Some(held_until))),
        ("window shut", account(), saturday, false, ("window", next)),
        ("due", account(), t0(), false, ("due", next)),
    ];
    for (name, a, now, operator, expected) in rows {
        assert_eq!(status::ready_reason(&a, now, operator, next), expected, "{name}");
    }
}

// ---------------------------------------------------------------------------------
// Day summaries.

#[test]
fn a_day_turn_summarises_each_ended_day_once_and_at_most_a_year() {
    let today = day(2026, 11, 30);
    let with = |last: Option<NaiveDate>| Account {
        summarised_day: last,
        ..account()
    };
    let rows: [(&str, Option<NaiveDate>, Vec<NaiveDate>); 5] = [
        ("never summarised: from today on", None, vec![]),
        (
            "three days behind",
            Some(day(2026, 11, 26)),
            vec![day(2026, 11, 27), day(2026, 11, 28), day(2026, 11, 29)],
        ),
        ("up to date", Some(day(2026, 11, 29)), vec![]),
        ("clock stepped back", Some(day(2026, 12, 2)), vec![]),
        ("today already", Some(today), vec![]),
    ];
    for (name, last, expected) in rows {
        let got: Vec<NaiveDate> = maintain::unsummarised(&with(last), today).collect();
        assert_eq!(got, expected, "{name}");
    }
    let years: Vec<NaiveDate> = maintain::unsummarised(&with(Some(day(2024, 1, 1))), today).collect();
    assert_eq!(
        (years.len(), years.first(), years.last()),
        (366, Some(&day(2025, 11, 29)), Some(&day(2026, 11, 29))),
        "a year back at most"
    );
}

#[test]
fn a_day_summary_holds_the_days_figures_and_is_remembered() {
    let rec = AccountDayRec {
        invites_sent: 7,
        rate_limits: 1,
        ..AccountDayRec::default()
    };
    let a = Account {
        ramp_history: vec![(day(2026, 11, 2), 40), (day(2026, 11, 30), 60)],
        ramp_ceiling: 60,
        health: Health::Watch,
        ..account()
    };
    let s = maintain::summary(&a, day(2026, 11, 29), rec, &Settings::default());
    assert_eq!(
        s,
        maintain::DaySummary {
            day: day(2026, 11, 29),
            rec,
            // min(caps 80, tier ceiling 100, the ramp of that day 40)
            invite_cap: 40,
            ramp_ceiling: 40,
            health: Health::Watch,
            inmail_balance: 10,
        }
    );
    let mut a = a;
    maintain::summarised(&mut a, day(2026, 11, 29));
    assert_eq!(a.summarised_day, Some(day(2026, 11, 29)));
}

// ---------------------------------------------------------------------------------
// The audit's recount.

/// Reservation of `kind` on account day 11-29 and campaign day 11-30, taken at `at_ms`
/// under invite limit `invites` and campaign limit `campaign`.
fn entry(kind: Kind, account_day: NaiveDate, at_ms: i64, invites: u32, campaign: u32) -> LedgerEntry {
    let mut e = reservation(kind).entry;
    e.account_day = account_day;
    e.at_ms = at_ms;
    e.limits.invites = invites;
    e.limits.campaign = campaign;
    e
}

#[test]
fn the_recount_finds_each_counter_over_the_limit_it_was_taken_under() {
    let all = |_: NaiveDate| true;
    let d = day(2026, 11, 29);
    let mut r = audit::Recount::default();
    r.reservation(&entry(Kind::Invite, d, ms(t0()), 1, 5), all);
    r.reservation(&entry(Kind::Invite, d, ms(t0()), 1, 5), all);
    r.reservation(&entry(Kind::Message, d, ms(t0()), 1, 1), all);
    r.reservation(&entry(Kind::Message, d, ms(t0()), 1, 1), all);
    let over = |owner: &str, day, counter: &str, count, limit| audit::Overshoot {
        owner: owner.into(),
        day,
        counter: counter.into(),
        count,
        limit,
    };
    assert_eq!(
        r.overshoots,
        vec![
            over("acct-1", d, "invites", 2, 1),
            // the campaign's second message on 11-30, under a limit of 1
            over("q4", day(2026, 11, 30), "campaign.messages", 2, 1),
        ]
    );
    assert_eq!(r.entries, 4);
    assert_eq!(
        r.accounts.get(&("acct-1".to_string(), d)),
        Some(&AccountDay {
            invites: 2,
            messages: 2,
            engagement: 2,
            ..AccountDay::default()
        })
    );
    assert_eq!(
        r.campaigns.get(&("q4".to_string(), day(2026, 11, 30))),
        Some(&CampaignDay {
            invites: 2,
            messages: 2,
            ..CampaignDay::default()
        })
    );
}

#[test]
fn a_release_takes_its_slots_off_and_one_with_nothing_to_take_is_reported() {
    let all = |_: NaiveDate| true;
    let mut r = audit::Recount::default();
    r.reservation(&entry(Kind::Invite, day(2026, 11, 29), ms(t0()), 80, 20), all);
    r.release(&release_record(Kind::Invite));
    assert_eq!(
        r.accounts.get(&("acct-1".to_string(), day(2026, 11, 29))),
        Some(&AccountDay::default())
    );
    assert_eq!((r.releases, r.bad_releases.len()), (1, 0));
    assert_eq!(r.sums(all), vec![], "nothing left to sum");
    r.release(&release_record(Kind::Invite));
    assert_eq!(
        r.bad_releases,
        vec!["release of q4/jane attempt 2 (acct-1 2026-11-29): no such reservation counted".to_string()]
    );
}

#[test]
fn a_reservation_on_an_earlier_day_after_a_later_one_began_is_an_overlap() {
    let invite = |d: NaiveDate, h: u32, m: u32| entry(Kind::Invite, d, ms(at(2026, 12, 1, h, m)), 80, 20);
    let (monday, tuesday) = (day(2026, 11, 30), day(2026, 12, 1));
    let overlap = "account acct-1 2026-11-30: reserved at 2026-12-01 09:30:00 UTC after day 2026-12-01 began at 2026-12-01 09:00:00 UTC (days overlap)";
    // (audit range holds Monday, overlaps found)
    for (in_range, expected) in [(true, vec![overlap.to_string()]), (false, vec![])] {
        let mut r = audit::Recount::default();
        // Tuesday's first reservation at 09:00, then one counted on Monday at 09:30;
        // one of Monday's taken before Tuesday began is no overlap.
        for e in [invite(tuesday, 9, 0), invite(monday, 9, 30), invite(monday, 8, 0)] {
            r.reservation(&e, |_| in_range);
        }
        assert_eq!(r.overlaps, expected, "in range: {in_range}");
    }
}

#[test]
fn a_campaign_reservation_on_an_earlier_day_after_a_later_one_began_is_an_overlap() {
    // Each account keeps to its own day; the campaign alone goes back a date.
    let invite = |account: &str, campaign_day: NaiveDate, h: u32, m: u32| LedgerEntry {
        account: account.into(),
        campaign_day,
        ..entry(Kind::Invite, day(2026, 12, 1), ms(at(2026, 12, 1, h, m)), 80, 20)
    };
    let (monday, tuesday) = (day(2026, 11, 30), day(2026, 12, 1));
    let overlap = "campaign q4 2026-11-30: reserved at 2026-12-01 09:30:00 UTC after day 2026-12-01 began at 2026-12-01 09:00:00 UTC (days overlap)";
    // (audit range holds Monday, overlaps found)
    for (in_range, expected) in [(true, vec![overlap.to_string()]), (false, vec![])] {
        let mut r = audit::Recount::default();
        // The campaign's Tuesday begins at 09:00 (acct-1); acct-2 then counts on its
        // Monday at 09:30; one of Monday's taken before Tuesday began is no overlap.
        for e in [
            invite("acct-1", tuesday, 9, 0),
            invite("acct-2", monday, 9, 30),
            invite("acct-2", monday, 8, 0),
        ] {
            r.reservation(&e, |d| in_range || d != monday);
        }
        assert_eq!(r.overlaps, expected, "in range: {in_range}");
    }
}

#[test]
fn the_sums_are_the_non_zero_totals_of_the_days_in_range() {
    let all = |_: NaiveDate| true;
    let mut r = audit::Recount::default();
    r.reservation(&entry(Kind::Inmail, day(2026, 11, 29), ms(t0()), 80, 20), all);
    r.reservation(&entry(Kind::Invite, day(2026, 11, 28), ms(t0()), 80, 20), all);
    let sum = |owner: &str, id: &str, day, counter: &str, count| audit::LedgerSum {
        owner: owner.into(),
        id: id.into(),
        day,
        counter: counter.into(),
        count,
    };
    assert_eq!(
        r.sums(|d| d >= day(2026, 11, 29)),
        vec![
            sum("account", "acct-1", day(2026, 11, 29), "inmails", 1),
            sum("campaign", "q4", day(2026, 11, 30), "invites", 1),
            sum("campaign", "q4", day(2026, 11, 30), "inmails", 1),
        ]
    );
}

// ---------------------------------------------------------------------------------
// A raised cap wakes what it parked until a later day.

fn limits(invites: u32, messages: u32, engagement: u32, weekly: Option<u32>) -> crate::policy::caps::Limits {
    crate::policy::caps::Limits {
        invites,
        messages,
        inmails: 5,
        engagement,
        weekly_invites: weekly,
        campaign: crate::policy::caps::CampaignLimits {
            invites: 20,
            messages: 20,
            inmails: 20,
        },
    }
}

#[test]
fn only_a_cap_that_rose_counts_as_raised() {
    use Counter::*;
    // (old, new) -> the counters raised
    let rows = [
        (limits(80, 2, 100, None), limits(80, 4, 100, None), vec![Messages]),
        (limits(80, 4, 100, None), limits(80, 2, 100, None), vec![]),
        (limits(80, 4, 100, None), limits(80, 4, 100, None), vec![]),
        (
            limits(10, 4, 100, None),
            limits(20, 4, 150, None),
            vec![Invites, Engagement],
        ),
        (
            limits(80, 4, 100, Some(100)),
            limits(80, 4, 100, Some(120)),
            vec![WeeklyInvites],
        ),
        (
            limits(80, 4, 100, Some(100)),
            limits(80, 4, 100, None),
            vec![WeeklyInvites],
        ),
        (limits(80, 4, 100, None), limits(80, 4, 100, Some(500)), vec![]),
        (
            limits(80, 4, 100, Some(100)),
            limits(80, 4, 100, Some(90)),
            vec![],
        ),
    ];
    for (old, new, want) in rows {
        assert_eq!(park::raised_limits(&old, &new), want, "{old:?} -> {new:?}");
    }
}

#[test]
fn a_raised_invite_cap_under_the_ramp_raises_nothing() {
    let policy = Settings::default().policy;
    let old = Account {
        caps: AccountCaps {
            invites: Some(40),
            messages: Some(2),
            ..AccountCaps::default()
        },
        ..account()
    };
    // The ramp ceiling is 80: invites 40 -> 90 raises the effective cap to 80 only.
    let raised = Account {
        caps: AccountCaps {
            invites: Some(90),
            messages: Some(4),
            ..AccountCaps::default()
        },
        ..old.clone()
    };
    assert_eq!(
        park::raised_account(&old, &policy, &raised, &policy, t0()),
        vec![Counter::Invites, Counter::Messages]
    );
    // Under a ramp ceiling of 30, a cap of 40 or 90 leaves the effective cap at 30.
    let ramped = |a: &Account| Account {
        ramp_ceiling: 30,
        ramp_history: vec![(day(2026, 11, 2), 30)],
        ..a.clone()
    };
    assert_eq!(
        park::raised_account(&ramped(&old), &policy, &ramped(&raised), &policy, t0()),
        vec![Counter::Messages],
        "the ramp is not raised by a cap (SPEC §3.3)"
    );
    // A reload: the same account under a policy with a higher `[caps] messages`.
    let mut more = policy.clone();
    more.caps.messages += 10;
    assert_eq!(
        park::raised_account(&account(), &policy, &account(), &more, t0()),
        vec![Counter::Messages]
    );
    assert_eq!(
        park::raised_account(&account(), &more, &account(), &policy, t0()),
        vec![],
        "a lowered cap raises nothing"
    );
    let overridden = Account {
        id: "acct-2".into(),
        ..old
    };
    let r = park::raised_by_policy(&[account(), overridden], &policy, &more, t0());
    assert_eq!(
        r.accounts.get("acct-1"),
        Some(&vec![Counter::Messages]),
        "the account without an override follows [caps]"
    );
    assert_eq!(
        r.accounts.get("acct-2"),
        None,
        "its own cap of 2 did not move: {r:?}"
    );
    assert!(r.campaigns.is_empty(), "a reload raises no campaign cap");
}

#[test]
fn a_campaign_cap_rises_per_type() {
    let c = campaign();
    let split = Campaign {
        split_invites: Some(5),
        ..c.clone()
    };
    let higher = |x: &Campaign| Campaign {
        daily_limit: 30,
        ..x.clone()
    };
    // (old, new) -> the types raised
    let rows = [
        (
            c.clone(),
            higher(&c),
            vec![
                CampaignType::Invites,
                CampaignType::Messages,
                CampaignType::Inmails,
            ],
        ),
        (
            split.clone(),
            higher(&split),
            vec![CampaignType::Messages, CampaignType::Inmails],
        ),
        (higher(&c), c.clone(), vec![]),
        (c.clone(), split.clone(), vec![]),
        (split.clone(), c.clone(), vec![CampaignType::Invites]),
    ];
    for (old, new, want) in rows {
        assert_eq!(
            park::raised_campaign(old.limits(), new.limits()),
            want,
            "{:?} -> {:?}",
            old.limits(),
            new.limits()
        );
    }
}

#[test]
fn a_raise_wakes_only_what_it_parked_on_the_raised_counter_of_its_scope() {
    let mut raised = park::Raised::default();
    raised.add_account("acct-1", vec![Counter::Messages]);
    raised.add_campaign("q4", vec![CampaignType::Invites]);
    let parked = |kind: Kind, reason: &str| {
        moved(
            &action(kind, State::Parked),
            State::Parked,
            Some(reason),
            Some(next_window()),
        )
    };
    let due = |a: &Action| Some(moved(a, State::Queued, a.reason.as_deref(), None));
    let on_messages = parked(Kind::Message, "account.messages");
    let on_campaign = parked(Kind::Invite, "campaign.invites");
    let other_account = Action {
        account: "acct-2".into(),
        ..on_messages.clone()
    };
    let other_campaign = Action {
        campaign: "q5".into(),
        ..on_campaign.clone()
    };
    let backing_off = moved(
        &action(Kind::Message, State::Queued),
        State::Queued,
        Some("account.messages"),
        Some(next_window()),
    );
    let rows = [
        (on_messages.clone(), due(&on_messages)),
        (on_campaign.clone(), due(&on_campaign)),
        (parked(Kind::Message, "account.engagement"), None),
        (parked(Kind::Invite, "account.invites"), None),
        (parked(Kind::Message, "campaign.messages"), None),
        (parked(Kind::Inmail, "account.inmail_credits"), None),
        (other_account, None),
        (other_campaign, None),
        (parked_invite("campaign_paused", None), None),
        (backing_off, None),
        (moved(&on_messages, State::Inflight, None, None), None),
        (
            moved(&on_messages, State::Cancelled, Some("account.messages"), None),
            None,
        ),
    ];
    for (a, want) in rows {
        assert_eq!(park::wake(&a, &raised, t0()), want, "{a:?}");
    }
    assert_eq!(
        park::wake(&on_messages, &park::Raised::default(), t0()),
        None,
        "nothing raised wakes nothing"
    );
}
