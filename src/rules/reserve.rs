//! A reservation (SPEC §3, §4), PURE: from the action, its account (maintained to
//! `now`), the operator's holds, the campaign and the day counters, decide whether the
//! action is skipped, parked (why, until when) or admitted (the new counters, the
//! in-flight action, the ledger entry with the limits in force).

use super::{park, WaitOn};
use crate::policy::caps::{AccountDay, Blocker, Budget, CampaignDay, Decision};
use crate::policy::Kind;
use crate::store::codec::ms;
use crate::store::records::{Account, Action, Campaign, LedgerEntry, LedgerLimits, State};
use crate::store::Settings;
use chrono::{DateTime, NaiveDate, Utc};

pub const UNKNOWN_ACTION: &str = "unknown action";
pub const NOT_DUE: &str = "not due";
pub const UNKNOWN_ACCOUNT: &str = "unknown account";
pub const RESTRICTED: &str = "account restricted";
pub const HELD: &str = "account held";
pub const OPERATOR_PAUSE: &str = "paused by the operator";
pub const WINDOW_SHUT: &str = "outside the sending window";
pub const UNKNOWN_CAMPAIGN: &str = "unknown campaign";
/// The parking reason of an action whose campaign is paused (by an event or the operator).
pub const CAMPAIGN_PAUSED: &str = "campaign_paused";

/// Whether `a` may be reserved at `now`: queued and not backing off. The store checks
/// this before maintaining the account, so an action that is not due writes nothing.
pub fn due(a: &Action, now: DateTime<Utc>) -> bool {
    a.state == State::Queued && a.until_ms.is_none_or(|u| u <= ms(now))
}

/// The campaign as the reservation sees it.
#[derive(Clone, Copy, Debug)]
pub struct CampaignInput<'a> {
    pub campaign: &'a Campaign,
    /// An operator hold on the campaign (`sendgate pause --campaign`).
    pub operator_hold: bool,
}

/// The counters a reservation checks, read for the account's and the campaign's local
/// day at `now` ([`days`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub day: AccountDay,
    pub campaign_day: CampaignDay,
    /// Invites reserved on each of the 7 local days ending today, oldest first; read
    /// only when [`needs_week`] says so, else zeros.
    pub week: [u32; 7],
}

/// Everything one reservation is decided on.
#[derive(Clone, Copy, Debug)]
pub struct ReserveInput<'a> {
    pub action: &'a Action,
    /// The action's account, maintained to `now` (`maintain::catch_up`, `day_turn`).
    pub account: &'a Account,
    /// An operator hold on the account or on everything (`sendgate pause`).
    pub account_operator_hold: bool,
    pub campaign: Option<CampaignInput<'a>>,
    pub counters: Counters,
    pub now: DateTime<Utc>,
    pub settings: &'a Settings,
}

/// The account's and the campaign's local days at `now`: the counters to read. Both
/// follow their zones in force (a zone change waits for the end of the current day).
pub fn days(a: &Account, c: &Campaign, now: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    (a.day_at(now), c.day_at(now))
}

/// Whether the rolling week's invites are needed: an invite under a weekly cap.
pub fn needs_week(kind: Kind, a: &Account, st: &Settings) -> bool {
    kind == Kind::Invite && a.caps(&st.policy).weekly_invites.is_some()
}

/// The verdict on one reservation.
#[derive(Clone, Debug, PartialEq)]
pub enum ReserveDecision {
    /// Not reservable now; nothing changes.
    Skip(&'static str),
    /// The action parks: `action` is its new value. `blocked` is the exhausted counter
    /// (`None` for a paused campaign, which waits on `waiting_on` with no until).
    Park {
        action: Box<Action>,
        waiting_on: Option<WaitOn>,
        blocked: Option<Blocker>,
        until: Option<DateTime<Utc>>,
    },
    /// The slots are taken.
    Admit(Box<Admission>),
}

/// What an admitted reservation writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    /// The action, now `inflight` with one more attempt.
    pub action: Action,
    /// The account with its credits taken and its last reservation (pacing).
    pub account: Account,
    /// The account's counters of `entry.account_day` and the campaign's of
    /// `entry.campaign_day`, with the slots taken.
    pub day: AccountDay,
    pub campaign_day: CampaignDay,
    /// The ledger entry, with the limits in force.
    pub entry: LedgerEntry,
}

/// Decide one reservation: every check in SPEC order, first refusal wins.
pub fn decide(i: &ReserveInput) -> ReserveDecision {
    let (action, acct, now) = (i.action, i.account, i.now);
    if !due(action, now) {
        return ReserveDecision::Skip(NOT_DUE);
    }
    if acct.restricted {
        return ReserveDecision::Skip(RESTRICTED);
    }
    if acct.held(now) {
        return ReserveDecision::Skip(HELD);
    }
    if i.account_operator_hold {
        return ReserveDecision::Skip(OPERATOR_PAUSE);
    }
    if !acct.zones().is_open(&acct.window, now) {
        return ReserveDecision::Skip(WINDOW_SHUT);
    }
    let Some(CampaignInput {
        campaign,
        operator_hold,
    }) = i.campaign
    else {
        return ReserveDecision::Skip(UNKNOWN_CAMPAIGN);
    };
    // The action as parked, built only when it parks: an admission clones it once.
    let parked = |reason: String, until_ms: Option<i64>| {
        let mut p = action.clone();
        p.state = State::Parked;
        p.updated_ms = ms(now);
        p.reason = Some(reason);
        p.until_ms = until_ms;
        p
    };
    if campaign.paused || operator_hold {
        let parked = parked(CAMPAIGN_PAUSED.into(), None);
        return ReserveDecision::Park {
            action: Box::new(parked),
            waiting_on: Some(WaitOn::Campaign(campaign.id.clone())),
            blocked: None,
            until: None,
        };
    }
    let (today, camp_today) = days(acct, campaign, now);
    let limits = acct.limits(&i.settings.policy, campaign.limits(), today);
    let week = i.counters.week;
    debug_assert!(
        needs_week(action.kind, acct, i.settings) || week == [0; 7],
        "the week is read only for an invite under a weekly cap"
    );
    let mut budget = Budget {
        limits,
        day: i.counters.day,
        week_invites: week.iter().sum(),
        credits: acct.credits,
        campaign_day: i.counters.campaign_day,
    };
    match budget.reserve(action.kind) {
        Decision::Blocked(blocker) => {
            let weekly_cap = limits.weekly_invites.unwrap_or(u32::MAX);
            let until = park::until(acct, &campaign.zones(), blocker, now, week, weekly_cap);
            let parked = parked(blocker.name(), Some(ms(until)));
            ReserveDecision::Park {
                action: Box::new(parked),
                waiting_on: None,
                blocked: Some(blocker),
                until: Some(until),
            }
        }
        Decision::Admit => {
            let mut account = acct.clone();
            account.credits = budget.credits;
            account.last_reserved_ms = Some(ms(now));
            let mut inflight = action.clone();
            inflight.state = State::Inflight;
            inflight.attempts += 1;
            inflight.retries += 1;
            inflight.reason = None;
            inflight.until_ms = None;
            inflight.updated_ms = ms(now);
            let entry = LedgerEntry {
                action: action.id.clone(),
                account: acct.id.clone(),
                campaign: campaign.id.clone(),
                kind: action.kind,
                attempt: inflight.attempts,
                at_ms: ms(now),
                account_day: today,
                campaign_day: camp_today,
                limits: LedgerLimits::of(&limits, action.kind),
            };
            ReserveDecision::Admit(Box::new(Admission {
                action: inflight,
                account,
                day: budget.day,
                campaign_day: budget.campaign_day,
                entry,
            }))
        }
    }
}
