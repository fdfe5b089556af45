//! The job-file record rules (SPEC §2, §6), PURE: what an `account` or `campaign`
//! upsert keeps and changes, which account a campaign's action goes to (named, stuck
//! to its prospect, or picked by remaining budget), and the action it becomes. The
//! store reads the record's inputs inside its transaction (the stored account or
//! campaign, the listed accounts, the sticky link, the candidates' counters), calls
//! these rules and writes what they return; a refusal names the field, the store adds
//! the line.

use super::Change;
use crate::contract::jobfile::{AccountRecord, ActionRecord, CampaignRecord, FieldError};
use crate::contract::CampaignStatus;
use crate::policy::caps::{red_zone, AccountDay, Budget, Counter};
use crate::policy::health::{self, Signals};
use crate::policy::window::local_day;
use crate::policy::{ramp, Health, Kind, Tier};
use crate::store::codec::{self, ms};
use crate::store::records::{Account, AccountCaps, Action, Campaign, State};
use crate::store::Settings;
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::BTreeMap;

/// Largest payload accepted, as JSON text: payloads travel in every attempt and stay
/// in the store until pruned.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

fn refused<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.into(),
        reason: reason.into(),
    })
}

/// What an `account` record does.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountUpsert {
    pub account: Account,
    /// A new account is judged from the start, not at its first day turn: its health
    /// on the signals of this local day ([`judge_new`]; the store reads them and sums
    /// them with `maintain::signals`).
    pub judge_on: Option<NaiveDate>,
    /// Red-zone caps (once per value) and a ramp raised by `established`, in order.
    pub changes: Vec<Change>,
}

/// A new account as the record creates it, before the record's fields apply.
fn new_account(r: &AccountRecord, st: &Settings, now: DateTime<Utc>) -> Account {
    let tz = r.timezone.unwrap_or(chrono_tz::UTC);
    let today = local_day(tz, now);
    let tier = r.tier.unwrap_or(Tier::Free);
    Account {
        id: r.id.clone(),
        tier,
        timezone: tz.name().to_string(),
        window: Default::default(),
        ramp_start: today,
        established: false,
        proxy: None,
        caps: AccountCaps::default(),
        credits: st.policy.tier(tier).inmail_credits,
        refill_day: 1,
        last_refill_ms: ms(now),
        ramp_ceiling: 0,
        ramp_history: Vec::new(),
        last_reserved_ms: None,
        ramp_steps: 0,
        health: Health::Healthy,
        restricted: false,
        held_until_ms: None,
        maintained_day: today,
        pending_zone: None,
        summarised_day: today.pred_opt(),
    }
}

/// An `account` record upserted on `existing` (SPEC §6): fields left out keep their
/// value, inside `window` and `caps` too; a new zone waits for the end of the current
/// local day; a window left empty is refused.
pub fn account(
    existing: Option<Account>,
    r: &AccountRecord,
    st: &Settings,
    now: DateTime<Utc>,
) -> Result<AccountUpsert, FieldError> {
    let policy = &st.policy;
    let is_new = existing.is_none();
    let mut a = existing.unwrap_or_else(|| new_account(r, st, now));
    let mut changes = Vec::new();
    if let Some(t) = r.tier {
        a.tier = t;
    }
    if let (Some(tz), false) = (r.timezone, is_new) {
        // Never a second day over the same hours: the new zone waits for the end of
        // the current local day (`policy::zone`).
        a.set_zones(a.zones().change(tz, now));
    }
    if let Some(patch) = &r.window {
        // Parts of the window left out keep their stored value (SPEC §6).
        a.window = patch.apply(a.window)?;
    }
    if let Some(p) = &r.proxy {
        a.proxy = Some(p.clone());
    }
    if let Some(d) = r.inmail_refill_day {
        a.refill_day = d;
    }
    if let Some(caps) = &r.caps {
        let before = a.caps;
        a.caps.merge(caps);
        for (counter, v, was) in [
            (Counter::Invites, caps.invites, before.invites),
            (Counter::Messages, caps.messages, before.messages),
            (Counter::Inmails, caps.inmails, before.inmails),
            (Counter::Engagement, caps.engagement, before.engagement),
        ] {
            // Once per value: re-sending the same record does not log it again.
            if let Some(v) = v.filter(|&v| red_zone_news(counter, v, was)) {
                changes.push(Change::RedZone {
                    account: Some(a.id.clone()),
                    counter: counter.as_str(),
                    value: v,
                });
            }
        }
    }
    if r.tier.is_some() && is_new && r.inmail_credits.is_none() {
        a.credits = policy.tier(a.tier).inmail_credits;
    }
    if let Some(n) = r.inmail_credits {
        a.credits = n;
    }
    let today = a.day_at(now);
    if let Some(d) = r.ramp_start {
        a.ramp_start = d;
    }
    if is_new || r.ramp_start.is_some() {
        // Boundaries before today count as evaluated: a ramp starts where it is told,
        // it does not jump several steps at once.
        a.ramp_steps = ramp::boundaries_passed(
            i64::from(codec::day_num(a.ramp_start)),
            i64::from(codec::day_num(today)),
        );
    }
    if let Some(e) = r.established {
        a.established = e;
    }
    let target = a.invite_target(policy);
    if is_new {
        a.set_ramp_ceiling(today, ramp::initial_ceiling(target, policy.ramp, a.established));
    } else if r.established == Some(true) && target > a.ramp_ceiling {
        changes.push(Change::RampChanged {
            account: a.id.clone(),
            old: a.ramp_ceiling,
            new: target,
            reason: "established",
        });
        a.set_ramp_ceiling(today, target);
    }
    Ok(AccountUpsert {
        account: a,
        judge_on: is_new.then_some(today),
        changes,
    })
}

/// Whether a cap set to `value` is news for the log (SPEC §3.1): in the red zone and
/// not the value `was` last logged for it (once per value).
pub fn red_zone_news(counter: Counter, value: u32, was: Option<u32>) -> bool {
    red_zone(counter, value) && Some(value) != was
}

/// What a configured cap (`[caps]`) does to the red-zone value remembered for it, at
/// a start or a reload (logged once per value, not at every start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedZoneNote {
    /// Log it and remember the value.
    Log,
    /// It left the red zone: forget the value, so coming back is logged again.
    Forget,
    /// Nothing to log or change.
    Keep,
}

/// The note of configured cap `counter` = `value`, `was` being the value remembered.
pub fn config_red_zone(counter: Counter, value: u32, was: Option<u32>) -> RedZoneNote {
    if red_zone_news(counter, value, was) {
        RedZoneNote::Log
    } else if !red_zone(counter, value) && was.is_some() {
        RedZoneNote::Forget
    } else {
        RedZoneNote::Keep
    }
}

/// A new account's health from the start (`AccountUpsert::judge_on`): while
/// acceptance feedback is unknown it reads `watch`, "no acceptance feedback" (SPEC
/// §3.4). Nothing is logged: there was no health before.
pub fn judge_new(a: &mut Account, sig: Signals, st: &Settings) {
    debug_assert_eq!(sig.restricted, a.restricted, "signals read from this account");
    a.health = health::assess(sig, &st.policy.health).health;
}

/// What a `campaign` record does.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignUpsert {
    pub campaign: Campaign,
    /// It was paused and is not any more: the actions waiting on it are released.
    pub resumed: bool,
}

/// A `campaign` record upserted on `existing` (SPEC §6) at `now`. `unknown_account`:
/// the index in `r.accounts` of the first account the store does not know, if any. A
/// new campaign needs a `daily_limit`; every listed account must exist; a new zone
/// waits for the end of the campaign's current local day, as an account's does.
pub fn campaign(
    existing: Option<Campaign>,
    r: &CampaignRecord,
    unknown_account: Option<usize>,
    now: DateTime<Utc>,
) -> Result<CampaignUpsert, FieldError> {
    let is_new = existing.is_none();
    let mut camp = match existing {
        Some(camp) => camp,
        None => {
            let Some(limit) = r.daily_limit else {
                return refused("daily_limit", "a new campaign needs a daily_limit");
            };
            Campaign {
                id: r.id.clone(),
                timezone: "UTC".into(),
                daily_limit: limit,
                split_invites: None,
                split_messages: None,
                split_inmails: None,
                accounts: Vec::new(),
                paused: false,
                pending_zone: None,
            }
        }
    };
    match r.timezone {
        // A new campaign has no day yet: its zone applies at once.
        Some(tz) if is_new => camp.timezone = tz.name().to_string(),
        // Never a second campaign day over the same hours, which would take the
        // campaign's caps again (`policy::zone`, the rule accounts follow).
        Some(tz) => camp.set_zones(camp.zones().change(tz, now)),
        None => {}
    }
    if let Some(l) = r.daily_limit {
        camp.daily_limit = l;
    }
    if let Some(s) = &r.cap_split {
        camp.merge_split(s);
    }
    if let Some(list) = &r.accounts {
        if let Some(i) = unknown_account {
            let a = list.get(i).map_or("", String::as_str);
            return refused(format!("accounts.{i}"), format!("unknown account `{a}`"));
        }
        camp.accounts = list.clone();
    }
    let was_paused = camp.paused;
    if let Some(s) = r.status {
        camp.paused = s == CampaignStatus::Paused;
    }
    Ok(CampaignUpsert {
        resumed: was_paused && !camp.paused,
        campaign: camp,
    })
}

/// The action's payload as stored (JSON text), or refused when larger than
/// [`MAX_PAYLOAD_BYTES`].
pub fn payload(r: &ActionRecord) -> Result<String, FieldError> {
    let payload = r.payload.to_string();
    if payload.len() > MAX_PAYLOAD_BYTES {
        return refused("payload", format!("larger than {MAX_PAYLOAD_BYTES} bytes"));
    }
    Ok(payload)
}

/// Whether a prospect stays on its account for campaign `camp` (SPEC §2): that only
/// matters where the worker may pick accounts, i.e. where the campaign lists some.
/// Only then is the sticky link read and written.
pub fn sticks(camp: &Campaign) -> bool {
    !camp.accounts.is_empty()
}

/// Where an action's account comes from, the first that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assign<'a> {
    /// The record names it (the store checks that it exists).
    Named(&'a str),
    /// The prospect's sticky link in this campaign.
    Stuck(&'a str),
    /// The worker picks one of the campaign's accounts ([`pick_account`]).
    Pick,
}

/// Where the account of action record `r` comes from; `stuck`: the prospect's sticky
/// link in the campaign, read where the campaign [`sticks`].
pub fn assign<'a>(r: &'a ActionRecord, stuck: Option<&'a str>) -> Assign<'a> {
    match (r.account.as_deref(), stuck) {
        (Some(a), _) => Assign::Named(a),
        (None, Some(a)) => Assign::Stuck(a),
        (None, None) => Assign::Pick,
    }
}

/// Whether the action's account becomes the prospect's sticky link: the campaign
/// sticks and no link was there.
pub fn links(camp: &Campaign, stuck: bool) -> bool {
    sticks(camp) && !stuck
}

/// One account of a campaign as the pick sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub account: Account,
    /// Its counters reserved on the local day [`candidate_day`] named.
    pub reserved: AccountDay,
}

/// The local day whose counters rank `a` in a pick, or `None` when it is no candidate
/// (restricted: it cannot send until an event says so).
pub fn candidate_day(a: &Account, now: DateTime<Utc>) -> Option<NaiveDate> {
    (!a.restricted).then(|| a.day_at(now))
}

/// Pick the campaign account with the most remaining budget today for `kind` (less
/// what this file already `assigned` it); ties go to the first listed. Only accounts
/// that can send are candidates (`Account::can_send`: not restricted, not held); when
/// none can, a held one (its hold ends by itself); `None` when every account is
/// restricted. `candidates`: the campaign's accounts that exist and are not
/// restricted, in the campaign's order.
pub fn pick_account(
    candidates: &[Candidate],
    camp: &Campaign,
    kind: Kind,
    assigned: &BTreeMap<(String, Kind), u32>,
    st: &Settings,
    now: DateTime<Utc>,
) -> Option<String> {
    // (can send, remaining budget, id): the best is the largest by the first two.
    let mut best: Option<(bool, u32, &str)> = None;
    for c in candidates {
        let a = &c.account;
        debug_assert!(!a.restricted, "a restricted account is no candidate");
        let today = a.day_at(now);
        let budget = Budget {
            limits: a.limits(&st.policy, camp.limits(), today),
            day: c.reserved,
            week_invites: 0,
            credits: a.credits,
            campaign_day: Default::default(),
        };
        let taken = assigned.get(&(a.id.clone(), kind)).copied().unwrap_or(0);
        let left = budget.remaining(kind).saturating_sub(taken);
        let rank = (a.can_send(now), left);
        if best.is_none_or(|(s, l, _)| rank > (s, l)) {
            best = Some((rank.0, rank.1, &a.id));
        }
    }
    best.map(|(_, _, id)| id.to_string())
}

/// Why an action without an account has none: the campaign lists none, or every
/// account it lists is restricted.
pub fn no_account(camp: &Campaign) -> FieldError {
    let reason = if camp.accounts.is_empty() {
        "no account given and the campaign lists none".to_string()
    } else {
        format!(
            "no account given and every account of campaign `{}` is restricted",
            camp.id
        )
    };
    FieldError {
        field: "account".into(),
        reason,
    }
}

/// The action an `action` record becomes: queued, due at `not_before` when that is
/// still ahead, never attempted; `seq` is its place in the queue's age order.
pub fn new_action(
    r: &ActionRecord,
    account: String,
    payload: String,
    seq: u64,
    now: DateTime<Utc>,
) -> Action {
    Action {
        id: r.id.clone(),
        campaign: r.campaign.clone(),
        account,
        kind: r.kind,
        prospect: r.prospect.clone(),
        payload,
        priority: r.priority,
        seq,
        state: State::Queued,
        attempts: 0,
        retries: 0,
        reason: None,
        until_ms: r.not_before.filter(|t| *t > now).map(ms),
        updated_ms: ms(now),
        sent_day: None,
        accepted: false,
        refunded: false,
    }
}
