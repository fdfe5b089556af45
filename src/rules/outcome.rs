//! SPEC §5 as a table of effects, PURE: what one upstream answer does to the action,
//! its account, today's counters, the links replies are matched by, and the slots of
//! the reservation it was in flight on. The store reads the inputs, calls [`effects`]
//! and writes what it returns.
//!
//! | answer | action | account | counters / links | slots |
//! |---|---|---|---|---|
//! | sent | `sent` | — | today: sent +1 (invite: also `invites_sent`); invite and InMail link | kept |
//! | rate limited | `parked` until the hold | held until the next window on a later day or `Retry-After`, later wins; health judged with the limit | today: `rate_limits` +1 | kept |
//! | out of network | `failed` (`out_of_network`) | — | — | kept |
//! | restricted | `parked` (`account_restricted`), waits on the account | health `restricted` | — | kept |
//! | no credits | `parked` until the next refill's window | balance 0 | — | kept |
//! | invalid | `failed` (`invalid: reason`) | — | — | kept |
//! | not delivered | `queued` after the backoff; `failed` at `max_attempts` | InMail credit back | — | given back, if the reservation is known |
//! | may have been delivered | idempotent: as not delivered (slots kept); else `unknown` | — | — | kept |
//!
//! A probe of the open breaker is not one of the action's attempts.

use super::{maintain, park, Change, Inconsistent, WaitOn};
use crate::contract::Outcome;
use crate::policy::caps::{self, AccountDay, CampaignDay};
use crate::policy::health::{self, Signals};
use crate::policy::{credits, CampaignType, Health, Kind};
use crate::store::codec::ms;
use crate::store::records::{Account, AccountDayRec, Action, LedgerEntry, LedgerRelease, State};
use crate::store::Settings;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::borrow::Cow;

/// The reason of an action parked by a `restricted` answer; it waits on its account.
pub const ACCOUNT_RESTRICTED: &str = "account_restricted";

/// Whether an action takes an outcome: only one in flight.
pub fn awaits_outcome(a: &Action) -> bool {
    a.state == State::Inflight
}

/// Whether the answer holds, stops or drains the account: recorded durably (flush and
/// fdatasync), since losing it to a power cut could let the account send again the
/// same day. Any other outcome lost to a power cut reads `unknown`, its slot used.
pub fn binding(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::RateLimited { .. } | Outcome::Restricted | Outcome::NoCredits
    )
}

/// Whether [`effects`] needs the account's health signals (read before the answer).
pub fn needs_signals(o: &Outcome) -> bool {
    matches!(o, Outcome::RateLimited { .. })
}

/// The reservation an attempt is in flight on, with the counters it took slots of.
#[derive(Clone, Debug, PartialEq)]
pub struct Reserved {
    /// Its ledger id (a batch, or a format-1 entry of its own).
    pub ledger_id: u64,
    pub entry: LedgerEntry,
    /// The account's counters of `entry.account_day`, the campaign's of `entry.campaign_day`.
    pub day: AccountDayRec,
    pub campaign_day: CampaignDay,
}

/// One answer and what it is decided on.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeInput<'a> {
    /// The action in flight ([`awaits_outcome`]).
    pub action: &'a Action,
    pub account: &'a Account,
    pub outcome: &'a Outcome,
    /// The wait before a retry, drawn by the caller.
    pub backoff_s: u64,
    /// A probe of the open circuit breaker: not one of the action's attempts.
    pub probe: bool,
    /// The account's health signals before this answer (when [`needs_signals`]; else
    /// any value, unused).
    pub signals: Signals,
    /// For a `not_delivered` answer: its reservation when the store remembers it.
    pub reserved: Option<&'a Reserved>,
    pub now: DateTime<Utc>,
    pub settings: &'a Settings,
}

/// Additions to the account's counters of one local day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayDelta {
    pub day: NaiveDate,
    /// A confirmed send of this kind.
    pub sent: Option<Kind>,
    pub invites_sent: u32,
    pub rate_limits: u32,
}

impl DayDelta {
    pub fn apply(&self, rec: &mut AccountDayRec) {
        if let Some(k) = self.sent {
            rec.sent_by_kind[k as usize] += 1;
        }
        rec.invites_sent += self.invites_sent;
        rec.rate_limits += self.rate_limits;
    }
}

/// A link a later event is matched by (SPEC §6, §9): an accepted invite by account and
/// prospect; a reply to the last InMail sent to a prospect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Invite {
        account: String,
        prospect: String,
        action: String,
    },
    Inmail {
        account: String,
        prospect: String,
        action: String,
    },
}

/// The slots of a reservation given back (SPEC §3): the counters of the reservation's
/// own days (not today's: the answer may come after midnight) and the ledger record.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    pub day: AccountDayRec,
    /// `None` for a kind no campaign counter holds.
    pub campaign_day: Option<CampaignDay>,
    pub record: LedgerRelease,
}

/// Everything one answer changes.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeEffects {
    pub action: Action,
    /// A parked action with no until waits on this.
    pub waiting_on: Option<WaitOn>,
    /// The account to write, when the answer changed it.
    pub account: Option<Account>,
    pub counters: Option<DayDelta>,
    pub links: Vec<Link>,
    pub release: Option<Release>,
    pub changes: Vec<Change>,
}

impl OutcomeEffects {
    /// Nothing changes but the action.
    pub fn only(action: Action) -> OutcomeEffects {
        OutcomeEffects {
            action,
            waiting_on: None,
            account: None,
            counters: None,
            links: Vec::new(),
            release: None,
            changes: Vec::new(),
        }
    }
}

/// Decide what one answer does (the table above).
pub fn effects(i: &OutcomeInput) -> Result<OutcomeEffects, Inconsistent> {
    let (old, now, st) = (i.action, i.now, i.settings);
    debug_assert!(awaits_outcome(old), "only an action in flight takes an outcome");
    // Cloned only by an answer that changes the account.
    let mut acct = Cow::Borrowed(i.account);
    let today = acct.day_at(now);
    // The action after the answer: `a` is `fx.action`, changed in place.
    let mut fx = OutcomeEffects::only(old.clone());
    let a = &mut fx.action;
    a.updated_ms = ms(now);
    if i.probe {
        // A probe is not one of the action's attempts (SPEC §5 "Upstream down").
        debug_assert!(a.retries >= 1, "a probe was reserved, so counted once");
        a.retries = a.retries.saturating_sub(1);
    }
    let retry = |a: &mut Action, why: &str| {
        if a.retries < st.max_attempts {
            a.state = State::Queued;
            a.reason = Some(why.to_string());
            a.until_ms = Some(ms(now + Duration::seconds(i.backoff_s as i64)));
        } else {
            a.state = State::Failed;
            a.reason = Some(format!("{why}: {} attempts", a.retries));
        }
    };
    match i.outcome {
        Outcome::Sent => {
            a.state = State::Sent;
            a.reason = None;
            let mut delta = DayDelta {
                day: today,
                sent: Some(a.kind),
                ..DayDelta::default()
            };
            let link = |a: &Action| (acct.id.clone(), a.prospect.clone(), a.id.clone());
            if a.kind == Kind::Invite {
                delta.invites_sent = 1;
                a.sent_day = Some(today);
                let (account, prospect, action) = link(a);
                fx.links.push(Link::Invite {
                    account,
                    prospect,
                    action,
                });
            } else if a.kind == Kind::Inmail {
                // The last InMail to this prospect: a reply named by account and
                // prospect returns its credit (SPEC §9).
                let (account, prospect, action) = link(a);
                fx.links.push(Link::Inmail {
                    account,
                    prospect,
                    action,
                });
            }
            fx.counters = Some(delta);
        }
        Outcome::RateLimited { retry_after_s } => {
            let until = park::rate_limit_hold(&acct, now, *retry_after_s);
            let held = acct.held_until_ms.unwrap_or(0).max(ms(until));
            acct.to_mut().held_until_ms = Some(held);
            fx.counters = Some(DayDelta {
                day: today,
                rate_limits: 1,
                ..DayDelta::default()
            });
            // Health counts this answer: today is in the rate-limit window.
            const { assert!(health::RATE_LIMIT_DAYS > 0) };
            let sig = Signals {
                rate_limits: i.signals.rate_limits + 1,
                ..i.signals
            };
            maintain::judge_health(acct.to_mut(), sig, st, &mut fx.changes);
            fx.changes.push(Change::AccountHeld {
                account: acct.id.clone(),
                until,
            });
            a.state = State::Parked;
            a.reason = Some("rate_limited".into());
            a.until_ms = Some(ms(until));
        }
        Outcome::OutOfNetwork => {
            a.state = State::Failed;
            a.reason = Some("out_of_network".into());
        }
        Outcome::Restricted => {
            acct.to_mut().restricted = true;
            if acct.health != Health::Restricted {
                fx.changes.push(Change::HealthChanged {
                    account: acct.id.clone(),
                    old: acct.health,
                    new: Health::Restricted,
                    reason: health::REASON_RESTRICTED,
                    health_reason: "restricted: the upstream answered `restricted`".into(),
                });
                acct.to_mut().health = Health::Restricted;
            }
            a.state = State::Parked;
            a.reason = Some(ACCOUNT_RESTRICTED.into());
            a.until_ms = None;
            fx.waiting_on = Some(WaitOn::Account(old.account.clone()));
        }
        Outcome::NoCredits => {
            acct.to_mut().credits = 0;
            a.state = State::Parked;
            a.reason = Some("no_credits".into());
            a.until_ms = Some(ms(park::no_credits_until(&acct, now)));
        }
        Outcome::Invalid { reason } => {
            a.state = State::Failed;
            a.reason = Some(format!("invalid: {reason}"));
        }
        Outcome::NotDelivered { reason } => {
            if let Some(r) = i.reserved {
                let release = release(old, acct.to_mut(), r, now, st)?;
                if release.record.kind == Kind::Inmail {
                    fx.account = Some(acct.clone().into_owned());
                }
                fx.release = Some(release);
            }
            retry(a, &format!("not_delivered: {reason}"));
        }
        Outcome::MaybeDelivered { reason } => {
            if st.idempotent {
                retry(a, &format!("maybe_delivered: {reason}"));
            } else {
                a.state = State::Unknown;
                a.reason = Some(format!("maybe_delivered: {reason}"));
            }
        }
    }
    if binding(i.outcome) {
        fx.account = Some(acct.into_owned());
    }
    Ok(fx)
}

/// Give back the slots of the reservation `old` is in flight on: one of every counter
/// it took, and its InMail credit (never above the ceiling; not at all when a refill
/// came since). Giving back too little is safe, too much is not.
fn release(
    old: &Action,
    acct: &mut Account,
    r: &Reserved,
    now: DateTime<Utc>,
    st: &Settings,
) -> Result<Release, Inconsistent> {
    let e = &r.entry;
    if e.action != old.id || e.attempt != old.attempts {
        return Err(Inconsistent(format!(
            "in-flight {} (attempt {}) points at the reservation of {} (attempt {})",
            old.id, old.attempts, e.action, e.attempt
        )));
    }
    let mut day = r.day;
    let mut camp: CampaignDay = r.campaign_day;
    let mut reserved: AccountDay = day.reserved;
    if !caps::give_back(e.kind, &mut reserved, &mut camp) {
        return Err(Inconsistent(format!(
            "releasing {} attempt {}: the counters of {} {} hold no such slot",
            old.id, e.attempt, e.account, e.account_day
        )));
    }
    day.reserved = reserved;
    if e.kind == Kind::Inmail {
        let ceiling = st.policy.tier(acct.tier).inmail_ceiling;
        acct.credits = credits::give_back(acct.credits, ceiling, acct.last_refill_ms > e.at_ms);
    }
    Ok(Release {
        day,
        campaign_day: CampaignType::of(e.kind).map(|_| camp),
        record: LedgerRelease {
            action: e.action.clone(),
            account: e.account.clone(),
            campaign: e.campaign.clone(),
            kind: e.kind,
            attempt: e.attempt,
            at_ms: ms(now),
            account_day: e.account_day,
            campaign_day: e.campaign_day,
            reservation: r.ledger_id,
        },
    })
}

/// At start-up: an attempt a crash left in flight becomes `unknown`, or is queued again
/// with the same idempotency key when the upstream is idempotent (SPEC §5). Its slots
/// stay used.
pub fn lost_to_crash(old: &Action, idempotent: bool, now: DateTime<Utc>) -> Action {
    debug_assert!(awaits_outcome(old));
    let mut a = old.clone();
    a.updated_ms = ms(now);
    if idempotent {
        a.state = State::Queued;
        a.reason = Some("recovered after a crash".into());
    } else {
        a.state = State::Unknown;
        a.reason = Some("outcome lost to a crash".into());
    }
    a
}
