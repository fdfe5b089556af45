//! Rows of the job-file record rules (`rules::records`) and the event rules
//! (`rules::event`): every expected record, refusal and log text written out here.

use super::{account, action, at, campaign, day, moved, next_window, t0};
use crate::contract::jobfile::{
    AccountRecord, ActionRecord, CampaignRecord, CapSplit, CapsOverride, EventRecord, FieldError, ReplyTo,
    WindowPatch,
};
use crate::contract::CampaignStatus;
use crate::policy::caps::AccountDay;
use crate::policy::health::Signals;
use crate::policy::{Health, Kind, Tier, Window};
use crate::rules::event::{self, Acceptance, Refund};
use crate::rules::moves::Move;
use crate::rules::records::{self, AccountUpsert, Assign, CampaignUpsert, Candidate, MAX_PAYLOAD_BYTES};
use crate::rules::Change;
use crate::store::codec::ms;
use crate::store::records::{Account, AccountCaps, AccountDayRec, Action, Campaign, State};
use crate::store::Settings;
use chrono::{Duration, NaiveTime};
use std::collections::BTreeMap;

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).expect("a valid time")
}

fn refusal(field: &str, reason: &str) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn upsert(existing: Option<Account>, r: &AccountRecord) -> Result<AccountUpsert, FieldError> {
    records::account(existing, r, &Settings::default(), t0())
}

// ---------------------------------------------------------------------------------
// `account` records.

#[test]
fn a_new_account_starts_on_its_tier_at_the_ramps_start_and_is_judged_today() {
    let r = AccountRecord {
        id: "acct-2".into(),
        tier: Some(Tier::PremiumCareer),
        ..AccountRecord::default()
    };
    let expected = Account {
        id: "acct-2".into(),
        tier: Tier::PremiumCareer,
        timezone: "UTC".into(),
        window: Window::default(),
        ramp_start: day(2026, 11, 30),
        established: false,
        proxy: None,
        caps: AccountCaps::default(),
        // premium_career: 5 InMail credits a month
        credits: 5,
        refill_day: 1,
        last_refill_ms: ms(t0()),
        // not established: the ramp's start, 10 (below the target 80)
        ramp_ceiling: 10,
        ramp_history: vec![(day(2026, 11, 30), 10)],
        last_reserved_ms: None,
        ramp_steps: 0,
        health: Health::Healthy,
        restricted: false,
        held_until_ms: None,
        maintained_day: day(2026, 11, 30),
        pending_zone: None,
        summarised_day: Some(day(2026, 11, 29)),
    };
    assert_eq!(
        upsert(None, &r),
        Ok(AccountUpsert {
            account: expected.clone(),
            judge_on: Some(day(2026, 11, 30)),
            changes: vec![],
        })
    );
    // Judged from the start: no acceptance feedback yet reads `watch`.
    let mut a = expected;
    records::judge_new(&mut a, Signals::default(), &Settings::default());
    assert_eq!(a.health, Health::Watch);
}

#[test]
fn an_established_new_account_starts_at_its_target() {
    let r = AccountRecord {
        id: "acct-2".into(),
        established: Some(true),
        inmail_credits: Some(3),
        ..AccountRecord::default()
    };
    let up = upsert(None, &r).expect("accepted");
    // free: invite ceiling 20 (below the default cap 80); credits as told
    assert_eq!(
        (
            up.account.tier,
            up.account.ramp_ceiling,
            up.account.credits,
            up.account.established
        ),
        (Tier::Free, 20, 3, true)
    );
}

#[test]
fn an_upsert_keeps_what_it_leaves_out_and_logs_a_red_zone_cap_once() {
    let r = AccountRecord {
        id: "acct-1".into(),
        window: Some(WindowPatch {
            start: Some(hm(10, 0)),
            ..WindowPatch::default()
        }),
        caps: Some(CapsOverride {
            invites: Some(95),
            messages: Some(20),
            ..CapsOverride::default()
        }),
        proxy: Some("http://proxy:3128".into()),
        inmail_refill_day: Some(15),
        ..AccountRecord::default()
    };
    let expected = Account {
        window: Window {
            start: hm(10, 0),
            ..Window::default()
        },
        caps: AccountCaps {
            invites: Some(95),
            messages: Some(20),
            ..AccountCaps::default()
        },
        proxy: Some("http://proxy:3128".into()),
        refill_day: 15,
        ..account()
    };
    let red = Change::RedZone {
        account: Some("acct-1".into()),
        counter: "invites",
        value: 95,
    };
    assert_eq!(
        upsert(Some(account()), &r),
        Ok(AccountUpsert {
            account: expected.clone(),
            judge_on: None,
            changes: vec![red],
        })
    );
    let again = upsert(Some(expected.clone()), &r).expect("accepted");
    assert_eq!(
        (again.account, again.changes),
        (expected, vec![]),
        "logged once per value"
    );
}

#[test]
fn established_raises_the_ramp_to_its_target_once() {
    let warming = Account {
        established: false,
        ramp_ceiling: 30,
        ramp_history: vec![(day(2026, 11, 2), 30)],
        ..account()
    };
    let r = AccountRecord {
        id: "acct-1".into(),
        established: Some(true),
        ..AccountRecord::default()
    };
    let up = upsert(Some(warming), &r).expect("accepted");
    assert_eq!(
        up.changes,
        vec![Change::RampChanged {
            account: "acct-1".into(),
            old: 30,
            // min(default cap 80, sales_navigator_core ceiling 100)
            new: 80,
            reason: "established",
        }]
    );
    assert_eq!(
        (up.account.ramp_ceiling, up.account.ramp_history.clone()),
        (80, vec![(day(2026, 11, 2), 30), (day(2026, 11, 30), 80)])
    );
    let again = upsert(Some(up.account), &r).expect("accepted");
    assert_eq!(again.changes, vec![], "already at its target");
}

#[test]
fn a_window_left_empty_is_refused_naming_the_field() {
    let r = AccountRecord {
        id: "acct-1".into(),
        window: Some(WindowPatch {
            start: Some(hm(18, 0)),
            ..WindowPatch::default()
        }),
        ..AccountRecord::default()
    };
    assert_eq!(
        upsert(Some(account()), &r),
        Err(refusal(
            "window.start",
            "window 18:00–17:00 is empty: window.end must be later than window.start (windows do not cross midnight)"
        ))
    );
}

#[test]
fn a_red_zone_cap_is_logged_once_per_value_and_forgotten_when_it_leaves() {
    use crate::policy::caps::Counter::{Engagement, Inmails, Invites, Messages};
    use records::RedZoneNote::{Forget, Keep, Log};
    // (counter, value, remembered) -> note; the red zone: invites and messages over
    // 90, InMails over 15, engagement over 100.
    let rows = [
        (Invites, 91, None, Log),
        (Invites, 91, Some(91), Keep),
        (Invites, 95, Some(91), Log),
        (Invites, 90, Some(91), Forget),
        (Invites, 90, None, Keep),
        (Messages, 91, None, Log),
        (Inmails, 16, None, Log),
        (Inmails, 15, None, Keep),
        (Engagement, 100, Some(120), Forget),
        (Engagement, 101, None, Log),
    ];
    for (counter, value, was, note) in rows {
        assert_eq!(
            records::config_red_zone(counter, value, was),
            note,
            "{counter:?} {value} {was:?}"
        );
        assert_eq!(
            records::red_zone_news(counter, value, was),
            note == Log,
            "{counter:?} {value} {was:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// `campaign` records.

#[test]
fn campaign_upserts() {
    let new = |r: CampaignRecord, unknown| records::campaign(None, &r, unknown, t0());
    assert_eq!(
        new(
            CampaignRecord {
                id: "q5".into(),
                ..CampaignRecord::default()
            },
            None
        ),
        Err(refusal("daily_limit", "a new campaign needs a daily_limit"))
    );
    let listed = CampaignRecord {
        id: "q5".into(),
        daily_limit: Some(10),
        accounts: Some(vec!["acct-1".into(), "ghost".into()]),
        ..CampaignRecord::default()
    };
    assert_eq!(
        new(listed.clone(), Some(1)),
        Err(refusal("accounts.1", "unknown account `ghost`"))
    );
    assert_eq!(
        new(
            CampaignRecord {
                timezone: Some(chrono_tz::Europe::Paris),
                cap_split: Some(CapSplit {
                    invites: Some(5),
                    ..CapSplit::default()
                }),
                ..listed
            },
            None
        ),
        Ok(CampaignUpsert {
            campaign: Campaign {
                id: "q5".into(),
                timezone: "Europe/Paris".into(),
                daily_limit: 10,
                split_invites: Some(5),
                split_messages: None,
                split_inmails: None,
                accounts: vec!["acct-1".into(), "ghost".into()],
                paused: false,
                pending_zone: None,
            },
            resumed: false,
        })
    );
    // An upsert keeps what it leaves out, cap_split too; a resume is reported.
    let paused = Campaign {
        split_messages: Some(6),
        paused: true,
        ..campaign()
    };
    let r = CampaignRecord {
        id: "q4".into(),
        cap_split: Some(CapSplit {
            inmails: Some(1),
            ..CapSplit::default()
        }),
        status: Some(CampaignStatus::Active),
        ..CampaignRecord::default()
    };
    assert_eq!(
        records::campaign(Some(paused.clone()), &r, None, t0()),
        Ok(CampaignUpsert {
            campaign: Campaign {
                split_messages: Some(6),
                split_inmails: Some(1),
                ..campaign()
            },
            resumed: true,
        })
    );
    let silent = CampaignRecord {
        id: "q4".into(),
        ..CampaignRecord::default()
    };
    assert_eq!(
        records::campaign(Some(paused.clone()), &silent, None, t0()),
        Ok(CampaignUpsert {
            campaign: paused,
            resumed: false,
        }),
        "a status left out keeps the pause"
    );
}

#[test]
fn a_campaign_zone_change_waits_for_the_end_of_its_day() {
    let moved = |tz: chrono_tz::Tz| CampaignRecord {
        id: "q4".into(),
        timezone: Some(tz),
        ..CampaignRecord::default()
    };
    let pending = |tz: &str, from, last_old_day| crate::store::records::PendingZone {
        timezone: tz.into(),
        from_ms: ms(from),
        last_old_day,
    };
    // Monday 10:00 UTC. UTC−12 is on Sunday then: its first day after Monday (UTC) is
    // its Tuesday, from Tuesday 12:00 UTC; until then the campaign stays on Monday.
    let west = records::campaign(Some(campaign()), &moved(chrono_tz::Etc::GMTPlus12), None, t0())
        .expect("applies")
        .campaign;
    assert_eq!(
        west,
        Campaign {
            pending_zone: Some(pending("Etc/GMT+12", at(2026, 12, 1, 12, 0), day(2026, 11, 30))),
            ..campaign()
        }
    );
    assert_eq!(west.day_at(t0() + Duration::hours(25)), day(2026, 11, 30));
    assert_eq!(west.day_at(at(2026, 12, 1, 12, 0)), day(2026, 12, 1));
    // Then UTC+14, already on Tuesday: its Wednesday begins Tuesday 10:00 UTC, the
    // first of its days to begin after Monday (UTC) ended.
    let east = records::campaign(Some(west), &moved(chrono_tz::Etc::GMTMinus14), None, t0())
        .expect("applies")
        .campaign;
    assert_eq!(
        east.pending_zone,
        Some(pending("Etc/GMT-14", at(2026, 12, 1, 10, 0), day(2026, 11, 30)))
    );
    assert_eq!(east.day_at(at(2026, 12, 1, 9, 59)), day(2026, 11, 30));
    assert_eq!(east.day_at(at(2026, 12, 1, 10, 0)), day(2026, 12, 2));
    // Back to the zone in force: no change at all. A new campaign takes its zone at once.
    let back = records::campaign(Some(east), &moved(chrono_tz::UTC), None, t0())
        .expect("applies")
        .campaign;
    assert_eq!(back, campaign());
    let fresh = CampaignRecord {
        id: "q6".into(),
        daily_limit: Some(3),
        ..moved(chrono_tz::Etc::GMTPlus12)
    };
    let fresh = records::campaign(None, &fresh, None, t0())
        .expect("applies")
        .campaign;
    assert_eq!(
        (fresh.timezone.as_str(), fresh.pending_zone),
        ("Etc/GMT+12", None)
    );
}

// ---------------------------------------------------------------------------------
// `action` records.

fn record(account: Option<&str>) -> ActionRecord {
    ActionRecord {
        id: "q4/jane".into(),
        campaign: "q4".into(),
        account: account.map(str::to_string),
        kind: Kind::Message,
        prospect: "https://www.linkedin.com/in/jane".into(),
        payload: serde_json::json!({}),
        not_before: None,
        priority: 3,
    }
}

#[test]
fn a_payload_over_the_bound_is_refused() {
    let sized = |n: usize| ActionRecord {
        // A JSON string: its text is two quotes longer.
        payload: serde_json::Value::String("a".repeat(n - 2)),
        ..record(None)
    };
    let fits = records::payload(&sized(MAX_PAYLOAD_BYTES)).expect("fits");
    assert_eq!(fits.len(), 16 * 1024);
    assert_eq!(
        records::payload(&sized(MAX_PAYLOAD_BYTES + 1)),
        Err(refusal("payload", "larger than 16384 bytes"))
    );
}

#[test]
fn the_account_is_the_named_one_else_the_sticky_one_else_a_pick() {
    let named = record(Some("acct-9"));
    let unnamed = record(None);
    assert_eq!(records::assign(&named, Some("acct-1")), Assign::Named("acct-9"));
    assert_eq!(records::assign(&named, None), Assign::Named("acct-9"));
    assert_eq!(records::assign(&unnamed, Some("acct-1")), Assign::Stuck("acct-1"));
    assert_eq!(records::assign(&unnamed, None), Assign::Pick);
    // A prospect sticks only where the campaign lists accounts, and only once.
    let lists_none = Campaign {
        accounts: vec![],
        ..campaign()
    };
    assert!(records::sticks(&campaign()) && !records::sticks(&lists_none));
    assert!(records::links(&campaign(), false));
    assert!(!records::links(&campaign(), true), "already stuck");
    assert!(!records::links(&lists_none, false));
}

fn candidate(id: &str, messages_used: u32) -> Candidate {
    Candidate {
        account: Account {
            id: id.into(),
            ..account()
        },
        reserved: AccountDay {
            messages: messages_used,
            ..AccountDay::default()
        },
    }
}

/// What a file already assigned, per (account, kind).
type Assigned = BTreeMap<(String, Kind), u32>;

fn held(mut c: Candidate) -> Candidate {
    c.account.held_until_ms = Some(ms(next_window()));
    c
}

#[test]
fn a_pick_takes_the_most_remaining_budget_and_a_held_account_only_when_none_can_send() {
    // Messages: the default cap 80 less what is used (engagement, 100, has room).
    let camp = Campaign {
        accounts: vec!["a".into(), "b".into(), "c".into()],
        ..campaign()
    };
    let none = BTreeMap::new();
    let b_busy = BTreeMap::from([(("b".to_string(), Kind::Message), 25)]);
    let b_busy_invites = BTreeMap::from([(("b".to_string(), Kind::Invite), 25)]);
    let spread = || vec![candidate("a", 70), candidate("b", 50), candidate("c", 60)];
    let rows: [(&str, Vec<Candidate>, &Assigned, Option<&str>); 7] = [
        ("most left", spread(), &none, Some("b")),
        (
            "a tie goes to the first listed",
            vec![candidate("a", 70), candidate("b", 50), candidate("c", 50)],
            &none,
            Some("b"),
        ),
        ("less what this file assigned", spread(), &b_busy, Some("c")),
        (
            "assigned of another kind does not count",
            spread(),
            &b_busy_invites,
            Some("b"),
        ),
        (
            "one that can send beats a held one with more",
            vec![candidate("a", 70), held(candidate("b", 0))],
            &none,
            Some("a"),
        ),
        (
            "every one held: the held one with most left",
            vec![held(candidate("a", 70)), held(candidate("b", 10))],
            &none,
            Some("b"),
        ),
        ("no candidate", vec![], &none, None),
    ];
    for (name, cands, assigned, expected) in rows {
        let got = records::pick_account(&cands, &camp, Kind::Message, assigned, &Settings::default(), t0());
        assert_eq!(got.as_deref(), expected, "{name}");
    }
    let restricted = Account {
        restricted: true,
        ..account()
    };
    assert_eq!(records::candidate_day(&restricted, t0()), None, "no candidate");
    assert_eq!(records::candidate_day(&account(), t0()), Some(day(2026, 11, 30)));
}

#[test]
fn an_action_without_an_account_to_pick_is_refused_saying_why() {
    let lists_none = Campaign {
        accounts: vec![],
        ..campaign()
    };
    assert_eq!(
        records::no_account(&lists_none),
        refusal("account", "no account given and the campaign lists none")
    );
    assert_eq!(
        records::no_account(&campaign()),
        refusal(
            "account",
            "no account given and every account of campaign `q4` is restricted"
        )
    );
}

#[test]
fn a_new_action_is_queued_and_waits_only_for_a_not_before_ahead() {
    let expected = Action {
        kind: Kind::Message,
        priority: 3,
        seq: 42,
        updated_ms: ms(t0()),
        ..Action::fixture(Kind::Message, State::Queued)
    };
    let r = record(None);
    assert_eq!(
        records::new_action(&r, "acct-1".into(), "{}".into(), 42, t0()),
        expected
    );
    let later = ActionRecord {
        not_before: Some(next_window()),
        ..record(None)
    };
    assert_eq!(
        records::new_action(&later, "acct-1".into(), "{}".into(), 42, t0()),
        Action {
            until_ms: Some(ms(next_window())),
            ..expected.clone()
        }
    );
    let past = ActionRecord {
        not_before: Some(t0() - Duration::hours(1)),
        ..record(None)
    };
    assert_eq!(
        records::new_action(&past, "acct-1".into(), "{}".into(), 42, t0()),
        expected,
        "a not_before passed is due now"
    );
}

// ---------------------------------------------------------------------------------
// Events.

fn sent(kind: Kind) -> Action {
    Action {
        sent_day: Some(day(2026, 11, 20)),
        ..action(kind, State::Sent)
    }
}

#[test]
fn an_acceptance_counts_once_on_the_day_the_invite_was_sent() {
    let invite = sent(Kind::Invite);
    let why = "no sent invite to this prospect from this account, or it was accepted before";
    assert_eq!(
        event::accept(Some(&invite)),
        (
            Some(Acceptance {
                action: Action {
                    accepted: true,
                    ..invite.clone()
                },
                day: day(2026, 11, 20),
            }),
            Ok("the acceptance was counted".to_string())
        )
    );
    let accepted = Action {
        accepted: true,
        ..invite
    };
    assert_eq!(event::accept(Some(&accepted)), (None, Err(why.to_string())));
    let never_sent = action(Kind::Invite, State::Queued);
    assert_eq!(event::accept(Some(&never_sent)), (None, Err(why.to_string())));
    assert_eq!(event::accept(None), (None, Err(why.to_string())));
    let acc = event::accept(Some(&sent(Kind::Invite))).0.expect("counted");
    let before = AccountDayRec {
        invites_sent: 4,
        invites_accepted: 2,
        ..AccountDayRec::default()
    };
    assert_eq!(
        acc.count(before),
        AccountDayRec {
            invites_accepted: 3,
            ..before
        }
    );
}

#[test]
fn a_reply_returns_a_sent_inmails_credit_once_within_the_ceiling() {
    let st = Settings::default();
    let inmail = sent(Kind::Inmail);
    let refunded = Action {
        refunded: true,
        ..inmail.clone()
    };
    let with = |credits| Account { credits, ..account() };
    let why = Err("no sent InMail whose credit is still out".to_string());
    let done = Ok("the InMail credit was returned".to_string());
    // sales_navigator_core: ceiling 150
    assert_eq!(
        event::reply(Some(&inmail), Some(with(10)), &st),
        (
            Some(Refund {
                action: refunded.clone(),
                account: Some(with(11)),
            }),
            done.clone()
        )
    );
    assert_eq!(
        event::reply(Some(&inmail), Some(with(150)), &st),
        (
            Some(Refund {
                action: refunded.clone(),
                account: Some(with(150)),
            }),
            done.clone()
        ),
        "at the ceiling"
    );
    assert_eq!(
        event::reply(Some(&inmail), None, &st),
        (
            Some(Refund {
                action: refunded.clone(),
                account: None,
            }),
            done
        ),
        "the account is gone: the action is marked still"
    );
    let rows = [
        ("refunded before", refunded),
        ("not an InMail", sent(Kind::Message)),
        ("not sent", action(Kind::Inmail, State::Inflight)),
    ];
    for (name, a) in rows {
        assert!(!event::refundable(&a), "{name}");
        assert_eq!(
            event::reply(Some(&a), Some(with(10)), &st),
            (None, why.clone()),
            "{name}"
        );
    }
    assert!(event::refundable(&inmail));
    assert_eq!(event::reply(None, None, &st), (None, why));
}

#[test]
fn account_tier_and_campaign_events_say_what_they_did() {
    let mut a = account();
    let restricted = |a: &mut Account, r| (event::restriction(a, r), a.restricted);
    let rows = [
        (true, Ok("the account sends nothing until account_resumed"), true),
        (true, Err("already restricted"), true),
        (false, Ok("the account sends again"), false),
        (false, Err("not restricted"), false),
    ];
    for (r, said, flag) in rows {
        let said = said.map(str::to_string).map_err(str::to_string);
        assert_eq!(restricted(&mut a, r), (said, flag), "restricted: {r}");
    }
    assert_eq!(
        event::tier(&mut a, Tier::Free),
        Ok("tier sales_navigator_core -> free".to_string())
    );
    assert_eq!(a.tier, Tier::Free);
    assert_eq!(
        event::tier(&mut a, Tier::Free),
        Ok("tier free -> free".to_string()),
        "told again, not ignored"
    );
    assert_eq!(
        event::campaign_pause(true),
        Ok("the campaign sends nothing until campaign_resumed".to_string())
    );
    assert_eq!(
        event::campaign_pause(false),
        Ok("the campaign sends again".to_string())
    );
}

#[test]
fn cancel_and_requeue_events_follow_the_move_rule() {
    let queued = action(Kind::Invite, State::Queued);
    assert_eq!(
        event::moved(Move::Cancel, &queued, t0()),
        (
            Some(moved(&queued, State::Cancelled, Some("cancelled"), None)),
            Ok("cancel_action".to_string())
        )
    );
    let unknown = action(Kind::Invite, State::Unknown);
    assert_eq!(
        event::moved(Move::Requeue, &unknown, t0()),
        (
            Some(Action {
                retries: 0,
                ..moved(&unknown, State::Queued, None, None)
            }),
            Ok("requeue_action".to_string())
        )
    );
    assert_eq!(
        event::moved(Move::Cancel, &sent(Kind::Invite), t0()),
        (None, Err("cannot cancel an action that is sent".to_string()))
    );
}

#[test]
fn every_event_is_logged_under_its_kind() {
    let acct = || "acct-1".to_string();
    let rows = [
        (
            EventRecord::InviteAccepted {
                account: acct(),
                prospect: "p".into(),
                at: None,
            },
            "invite_accepted",
        ),
        (
            EventRecord::ReplyReceived {
                to: ReplyTo::Action("q4/jane".into()),
                at: Some(at(2026, 11, 30, 9, 0)),
            },
            "reply_received",
        ),
        (
            EventRecord::AccountRestricted { account: acct() },
            "account_restricted",
        ),
        (EventRecord::AccountResumed { account: acct() }, "account_resumed"),
        (
            EventRecord::TierChanged {
                account: acct(),
                tier: Tier::Free,
            },
            "tier_changed",
        ),
        (
            EventRecord::CampaignPaused {
                campaign: "q4".into(),
            },
            "campaign_paused",
        ),
        (
            EventRecord::CampaignResumed {
                campaign: "q4".into(),
            },
            "campaign_resumed",
        ),
        (EventRecord::CancelAction { action: "x".into() }, "cancel_action"),
        (
            EventRecord::RequeueAction { action: "x".into() },
            "requeue_action",
        ),
    ];
    for (e, kind) in rows {
        assert_eq!(event::kind(&e), kind);
    }
}
