//! Where a blocked action waits (SPEC §4 "Parking", §5), PURE: the next window opening
//! on a later day of the counter that blocked it; for InMail credits, the next refill;
//! for the rolling week, the first day its sum drops below the cap. And which actions of
//! a blocked backlog park with it, and which parked ones a raised cap wakes.

use super::WaitOn;
use crate::config::Policy;
use crate::policy::caps::{self, Blocker, CampaignLimits, Counter, Limits};
use crate::policy::zone::Zones;
use crate::policy::{credits, CampaignType, Kind};
use crate::store::codec::ms;
use crate::store::records::{Account, Action, Campaign, State};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// When no window opening is found (a window with no open day): a day later.
fn or_a_day_later(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    t.unwrap_or(now + Duration::days(1))
}

/// The account's next window opening on a later local day (an exhausted account counter).
pub fn next_account_day(a: &Account, now: DateTime<Utc>) -> DateTime<Utc> {
    or_a_day_later(a.zones().next_open_on_later_day(&a.window, now), now)
}

/// The account's next window opening from the campaign's next local day (an exhausted
/// campaign counter); `campaign`: the campaign's days (`Campaign::zones`).
pub fn next_campaign_day(a: &Account, campaign: &Zones, now: DateTime<Utc>) -> DateTime<Utc> {
    or_a_day_later(
        a.zones().next_open(&a.window, campaign.start_of_next_day(now)),
        now,
    )
}

/// Where an action blocked by `blocker` waits. `week_counts`: invites reserved on each
/// of the 7 local days ending today, oldest first (read only for the weekly cap).
pub fn until(
    a: &Account,
    campaign: &Zones,
    blocker: Blocker,
    now: DateTime<Utc>,
    week_counts: [u32; 7],
    weekly_cap: u32,
) -> DateTime<Utc> {
    let zones = a.zones();
    let w = &a.window;
    match blocker {
        Blocker::Account(Counter::InmailCredits) => or_a_day_later(
            zones.next_open(w, credits::next_refill_after(now, a.refill_day)),
            now,
        ),
        Blocker::Account(Counter::WeeklyInvites) => {
            let today = zones.day_at(now);
            let k = (1..=7usize)
                .find(|&k| week_counts[k..].iter().sum::<u32>() < weekly_cap)
                .unwrap_or(7);
            or_a_day_later(
                zones.next_open(w, zones.start_of_day(today + Duration::days(k as i64))),
                now,
            )
        }
        Blocker::Account(_) => next_account_day(a, now),
        Blocker::Campaign(_) => next_campaign_day(a, campaign, now),
    }
}

/// A rate limit's hold (SPEC §5): the account's next window on a later day, or the
/// `Retry-After` hint when that is later (a hint never shortens it).
pub fn rate_limit_hold(a: &Account, now: DateTime<Utc>, retry_after_s: Option<u64>) -> DateTime<Utc> {
    let next_day = a.zones().next_open_on_later_day(&a.window, now);
    let hint = retry_after_s.map(|s| now + Duration::seconds(s.min(i64::MAX as u64 / 2000) as i64));
    match (next_day, hint) {
        (Some(d), Some(h)) => d.max(h),
        (Some(d), None) => d,
        (None, h) => h.unwrap_or(now).max(now + Duration::days(1)),
    }
}

/// After a `no_credits` answer: the first window opening from the next refill.
pub fn no_credits_until(a: &Account, now: DateTime<Utc>) -> DateTime<Utc> {
    let refill = credits::next_refill_after(now, a.refill_day);
    a.zones().next_open(&a.window, refill).unwrap_or(refill)
}

/// The kinds a blocked counter stops: every one that draws from it.
pub fn kinds_blocked_by(blocker: Blocker) -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|&k| match blocker {
            Blocker::Account(c) => caps::draws(k).contains(&c),
            Blocker::Campaign(t) => CampaignType::of(k) == Some(t),
        })
        .collect()
}

/// Why a backlog is parked: an exhausted counter (until a time), or a paused campaign
/// (until it resumes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hold {
    Counter(Blocker, DateTime<Utc>),
    CampaignPaused,
}

/// How the ready actions of a backlog park: the kinds that park, with what reason and
/// until, waiting on what.
#[derive(Clone, Debug, PartialEq)]
pub struct Backlog {
    pub kinds: Vec<Kind>,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
    pub waiting_on: Option<WaitOn>,
}

/// The backlog of an account (of `campaign` only, when given) that `hold` stops: every
/// kind drawing from an exhausted counter, or every action of a paused campaign. `None`
/// when nothing parks (a campaign pause with no campaign named).
pub fn backlog(hold: Hold, campaign: Option<&str>) -> Option<Backlog> {
    match hold {
        Hold::Counter(b, until) => Some(Backlog {
            kinds: kinds_blocked_by(b),
            reason: b.name(),
            until: Some(until),
            waiting_on: None,
        }),
        // Parked without an until, an action waits on its campaign's resume.
        Hold::CampaignPaused => campaign.map(|c| Backlog {
            kinds: Kind::ALL.to_vec(),
            reason: "campaign_paused".to_string(),
            until: None,
            waiting_on: Some(WaitOn::Campaign(c.to_string())),
        }),
    }
}

/// The backlog of an account another worker owns (SPEC §12): every kind, waiting on
/// the account until this worker owns it.
pub fn owned_elsewhere(account: &str, reason: &str) -> Backlog {
    Backlog {
        kinds: Kind::ALL.to_vec(),
        reason: reason.to_string(),
        until: None,
        waiting_on: Some(WaitOn::Account(account.to_string())),
    }
}

/// `a` parked with its backlog, or `None` when it does not park (no longer queued
/// and due, backing off, or of a kind the hold does not stop).
pub fn park_with(a: &Action, b: &Backlog, now: DateTime<Utc>) -> Option<Action> {
    if a.state != State::Queued || a.until_ms.is_some() || !b.kinds.contains(&a.kind) {
        return None;
    }
    let mut p = a.clone();
    p.state = State::Parked;
    p.reason = Some(b.reason.clone());
    p.until_ms = b.until.map(ms);
    p.updated_ms = ms(now);
    Some(p)
}

/// A queued action moved on a fleet's word (SPEC §12), without a reservation: parked
/// with `reason` until `until` (or waiting on its account when `None`), or failed
/// (`park = false`). `None` when it is no longer queued.
pub fn settle(
    a: &Action,
    park: bool,
    reason: &str,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(Action, Option<WaitOn>)> {
    if a.state != State::Queued {
        return None;
    }
    let mut s = a.clone();
    s.state = if park { State::Parked } else { State::Failed };
    s.reason = Some(reason.to_string());
    s.until_ms = if park { until.map(ms) } else { None };
    s.updated_ms = ms(now);
    let waiting = (park && until.is_none()).then(|| WaitOn::Account(a.account.clone()));
    Some((s, waiting))
}

/// An action whose until has come (the `timed` index): queued and due again, or `None`
/// when it no longer waits on a time (moved since, or no until). Its reason stays
/// until the next reservation replaces it.
pub fn promote(a: &Action, now: DateTime<Utc>) -> Option<Action> {
    if !matches!(a.state, State::Queued | State::Parked) || a.until_ms.is_none() {
        return None;
    }
    let mut p = a.clone();
    p.state = State::Queued;
    p.until_ms = None;
    p.updated_ms = ms(now);
    Some(p)
}

/// The caps a change raised: per account, the account counters whose cap in force rose;
/// per campaign, the types whose campaign cap rose. An action parked until a time on
/// one of them is woken at once (`wake`) rather than at its until: a raised cap takes
/// effect the same day.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Raised {
    pub accounts: BTreeMap<String, Vec<Counter>>,
    pub campaigns: BTreeMap<String, Vec<CampaignType>>,
}

impl Raised {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.campaigns.is_empty()
    }

    /// `counters` of `account` rose (nothing when empty).
    pub fn add_account(&mut self, account: &str, counters: Vec<Counter>) {
        add_sorted(&mut self.accounts, account, counters);
    }

    /// `types` of `campaign` rose (nothing when empty).
    pub fn add_campaign(&mut self, campaign: &str, types: Vec<CampaignType>) {
        add_sorted(&mut self.campaigns, campaign, types);
    }

    /// Everything `other` raised too.
    pub fn extend(&mut self, other: Raised) {
        for (a, counters) in other.accounts {
            self.add_account(&a, counters);
        }
        for (c, types) in other.campaigns {
            self.add_campaign(&c, types);
        }
    }

    /// Whether `reason` (a parking reason, `Blocker::name`) is a counter raised for
    /// `account`, or for `campaign` when given: what a raise wakes and forgets.
    pub fn covers(&self, account: &str, campaign: Option<&str>, reason: &str) -> bool {
        let by_account = self.accounts.get(account).into_iter().flatten();
        let by_campaign = campaign.and_then(|c| self.campaigns.get(c)).into_iter().flatten();
        by_account
            .map(|&c| Blocker::Account(c))
            .chain(by_campaign.map(|&t| Blocker::Campaign(t)))
            .any(|b| b.name() == reason)
    }
}

/// `items` added to `key`'s sorted, deduplicated list in `map` (nothing when empty).
fn add_sorted<T: Ord>(map: &mut BTreeMap<String, Vec<T>>, key: &str, items: Vec<T>) {
    if items.is_empty() {
        return;
    }
    let e = map.entry(key.to_string()).or_default();
    e.extend(items);
    e.sort();
    e.dedup();
}

/// The account counters whose cap is higher under `new` than under `old` (SPEC §3.1,
/// §3.2): the daily caps (`invites` is the effective cap, so a higher `caps.invites`
/// under a lower tier or ramp ceiling raises nothing) and the rolling week (`None`: no
/// cap). An InMail credit balance is no cap: never.
pub fn raised_limits(old: &Limits, new: &Limits) -> Vec<Counter> {
    let week_rose = match (old.weekly_invites, new.weekly_invites) {
        (Some(o), Some(n)) => n > o,
        (Some(_), None) => true,
        (None, _) => false,
    };
    [
        (Counter::Invites, new.invites > old.invites),
        (Counter::Messages, new.messages > old.messages),
        (Counter::Inmails, new.inmails > old.inmails),
        (Counter::Engagement, new.engagement > old.engagement),
        (Counter::WeeklyInvites, week_rose),
    ]
    .into_iter()
    .filter_map(|(c, rose)| rose.then_some(c))
    .collect()
}

/// The account counters whose cap in force on the account's local day at `now` is
/// higher for `new` under `new_policy` than for `old` under `old_policy`: an upsert
/// (one policy, two accounts) or a reload (one account, two policies).
pub fn raised_account(
    old: &Account,
    old_policy: &Policy,
    new: &Account,
    new_policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<Counter> {
    let none = CampaignLimits {
        invites: 0,
        messages: 0,
        inmails: 0,
    };
    raised_limits(
        &old.limits(old_policy, none, old.day_at(now)),
        &new.limits(new_policy, none, new.day_at(now)),
    )
}

/// The campaign types whose cap (SPEC §3.6: `cap_split.<type>`, else `daily_limit`) is
/// higher in `new` than in `old`.
pub fn raised_campaign(old: CampaignLimits, new: CampaignLimits) -> Vec<CampaignType> {
    [
        CampaignType::Invites,
        CampaignType::Messages,
        CampaignType::Inmails,
    ]
    .into_iter()
    .filter(|&t| new.get(t) > old.get(t))
    .collect()
}

/// What a new configuration raised for each of `accounts` (a reload: `[caps]`,
/// `[tiers.*]`); campaign caps come only from job files.
pub fn raised_by_policy(accounts: &[Account], old: &Policy, new: &Policy, now: DateTime<Utc>) -> Raised {
    let mut r = Raised::default();
    for a in accounts {
        r.add_account(&a.id, raised_account(a, old, a, new, now));
    }
    r
}

/// An action parked until a time on a counter `raised` names for its account or its
/// campaign: queued and due again at once, as `promote` makes it (the reservation
/// check decides as always; one that still does not fit parks again). `None` for
/// anything else: another counter or scope, an action waiting on an event, backing
/// off (queued with an until), or no longer parked.
pub fn wake(a: &Action, raised: &Raised, now: DateTime<Utc>) -> Option<Action> {
    if a.state != State::Parked || a.until_ms.is_none() {
        return None;
    }
    let reason = a.reason.as_deref()?;
    if !raised.covers(&a.account, Some(&a.campaign), reason) {
        return None;
    }
    promote(a, now)
}

/// An action parked on an event whose owner is active again: queued and due, its
/// reason gone; `None` when it no longer waits on an event (moved since, or it waits
/// on a time).
pub fn release(a: &Action, now: DateTime<Utc>) -> Option<Action> {
    if a.state != State::Parked || a.until_ms.is_some() {
        return None;
    }
    let mut r = a.clone();
    r.state = State::Queued;
    r.reason = None;
    r.updated_ms = ms(now);
    Some(r)
}

/// Whether the actions waiting on a campaign may go: it exists, its job file does not
/// pause it, and neither does the operator.
pub fn campaign_active(c: Option<&Campaign>, operator_hold: bool) -> bool {
    c.is_some_and(|c| !c.paused) && !operator_hold
}

/// Whether the actions waiting on an account may go: it exists and is not restricted.
pub fn account_active(a: Option<&Account>) -> bool {
    a.is_some_and(|a| !a.restricted)
}
