//! Reserve: one transaction that re-checks every counter an action draws from through
//! the policy core, takes the slots, moves the action to `inflight` and appends a ledger
//! entry; then the durability boundary, then permission to send (SPEC P1, P2).

use super::codec::{self, day_num, from_ms, ms};
use super::records::{Account, Action, LedgerEntry, LedgerLimits, LedgerReservations, State};
use super::tx::{Tx, TxResult};
use super::{Settings, Store, StoreError, INFLIGHT, LEDGER, META, META_FEEDBACK_SEEN};
use crate::contract::upstream::redact_proxy;
use crate::contract::SendRequest;
use crate::policy::caps::{Blocker, Budget, Counter, Decision};
use crate::policy::health::{self, Signals};
use crate::policy::window::{local_day, start_of_next_day};
use crate::policy::{credits, ramp, Health, Kind};
use chrono::{DateTime, Duration, NaiveDate, Utc};

/// Permission to send one attempt: the reservation is durable when this exists.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub request: SendRequest,
    pub campaign: String,
    pub account: String,
}

impl Reservation {
    /// The proxy with credentials removed, for logs.
    pub fn proxy_for_log(&self) -> Option<String> {
        self.request.proxy.as_deref().map(redact_proxy)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReserveResult {
    Reserved(Reservation),
    /// Blocked by a cap: parked until `until` (or until an event when `None`).
    /// `blocked` is the counter (`None` for a paused campaign).
    Parked {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        blocker: String,
        blocked: Option<Blocker>,
        until: Option<DateTime<Utc>>,
    },
    /// Not reservable now (no longer queued, account held or restricted, window shut).
    Skipped {
        action: String,
        why: &'static str,
    },
}

/// Something that changed in passing and must be logged.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    RampChanged {
        account: String,
        old: u32,
        new: u32,
        reason: &'static str,
    },
    HealthChanged {
        account: String,
        old: Health,
        new: Health,
        reason: &'static str,
        /// What health was judged on (SPEC §11 `health_reason`): acceptance and its
        /// sample, rate limits in 7 days, restriction.
        health_reason: String,
    },
    CreditsRefilled {
        account: String,
        old: u32,
        new: u32,
    },
    AccountHeld {
        account: String,
        until: DateTime<Utc>,
    },
    RedZone {
        account: Option<String>,
        counter: &'static str,
        value: u32,
    },
}

/// Refill bound: months caught up in one maintenance pass (a worker down for years
/// still refills, a month per pass).
const MAX_REFILLS_PER_PASS: usize = 24;

/// The health signals of an account on local day `today` (SPEC §3.4).
pub(super) fn signals(tx: &Tx, a: &Account, today: NaiveDate) -> TxResult<Signals> {
    let mut s = Signals {
        restricted: a.restricted,
        feedback_seen: feedback_seen(tx)?,
        ..Signals::default()
    };
    for ago in health::ACCEPTANCE_FROM_DAYS_AGO..=health::ACCEPTANCE_TO_DAYS_AGO {
        let d = tx.account_day(&a.id, today - Duration::days(ago))?;
        s.invites_sent += d.invites_sent;
        s.invites_accepted += d.invites_accepted;
    }
    for ago in 0..health::RATE_LIMIT_DAYS {
        s.rate_limits += tx.account_day(&a.id, today - Duration::days(ago))?.rate_limits;
    }
    Ok(s)
}

/// Whether any `invite_accepted` has ever reached the worker (SPEC §3.4), store-wide.
pub(super) fn feedback_seen(tx: &Tx) -> TxResult<bool> {
    Ok(tx.get_raw(META, META_FEEDBACK_SEEN)?.is_some())
}

/// Mark that acceptance feedback flows, in the transaction that applies it.
pub(super) fn mark_feedback_seen(tx: &Tx) -> TxResult<()> {
    tx.put_raw(META, META_FEEDBACK_SEEN, &[1])
}

pub(super) fn refresh_health(
    tx: &Tx,
    a: &mut Account,
    today: NaiveDate,
    st: &Settings,
    out: &mut Vec<Change>,
) -> TxResult<()> {
    let sig = signals(tx, a, today)?;
    let health::Assessment { health: new, reason } = health::assess(sig, &st.policy.health);
    if new != a.health {
        out.push(Change::HealthChanged {
            account: a.id.clone(),
            old: a.health,
            new,
            reason,
            health_reason: super::query::health_reason(
                a.restricted,
                feedback_seen(tx)?,
                sig.invites_sent,
                sig.invites_accepted,
                sig.rate_limits,
            ),
        });
        a.health = new;
    }
    Ok(())
}

/// Bring an account up to `now`: InMail refills, and once per local day the health
/// assessment and any 7-day ramp boundaries passed. A clock that steps backwards finds
/// the day already maintained and changes nothing.
pub(super) fn maintain(
    tx: &Tx,
    a: &mut Account,
    now: DateTime<Utc>,
    st: &Settings,
    out: &mut Vec<Change>,
) -> TxResult<()> {
    let tier = st.policy.tier(a.tier);
    for _ in 0..MAX_REFILLS_PER_PASS {
        let next = credits::next_refill_after(from_ms(a.last_refill_ms), a.refill_day);
        if next > now {
            break;
        }
        let old = a.credits;
        a.credits = credits::refill(a.credits, tier.inmail_credits, tier.inmail_ceiling);
        a.last_refill_ms = ms(next);
        out.push(Change::CreditsRefilled {
            account: a.id.clone(),
            old,
            new: a.credits,
        });
    }
    // A zone change in force is folded into the account's zone.
    let zones = a.zones().settled(now);
    if zones != a.zones() {
        a.set_zones(zones);
    }
    let today = a.day_at(now);
    if a.maintained_day >= today {
        return Ok(());
    }
    a.maintained_day = today;
    refresh_health(tx, a, today, st, out)?;
    let steps = ramp::boundaries_passed(i64::from(day_num(a.ramp_start)), i64::from(day_num(today)));
    if steps > a.ramp_steps {
        // One step per evaluation, even after a long stop: an account that sent
        // nothing for weeks has not earned several steps.
        a.ramp_steps = steps;
        let target = a.invite_target(&st.policy);
        let (new, reason) = ramp::evaluate(a.ramp_ceiling, target, st.policy.ramp, a.health);
        if new != a.ramp_ceiling {
            out.push(Change::RampChanged {
                account: a.id.clone(),
                old: a.ramp_ceiling,
                new,
                reason: reason.as_str(),
            });
            a.set_ramp_ceiling(today, new);
        }
    }
    Ok(())
}

/// Invites reserved on each of the 7 local days ending `today` (oldest first).
fn week(tx: &Tx, account: &str, today: NaiveDate) -> TxResult<[u32; 7]> {
    let mut w = [0u32; 7];
    for (i, slot) in w.iter_mut().enumerate() {
        *slot = tx
            .account_day(account, today - Duration::days(6 - i as i64))?
            .reserved
            .invites;
    }
    Ok(w)
}

/// Where a blocked action waits: the next window opening on a later day of the
/// counter that blocked it; for credits, the next refill; for the rolling week, the
/// first day the 7-day sum drops below the cap.
fn park_until(
    a: &Account,
    campaign_tz: chrono_tz::Tz,
    blocker: Blocker,
    now: DateTime<Utc>,
    week_counts: [u32; 7],
    weekly_cap: u32,
) -> Option<DateTime<Utc>> {
    let zones = a.zones();
    let w = &a.window;
    match blocker {
        Blocker::Account(Counter::InmailCredits) => {
            zones.next_open(w, credits::next_refill_after(now, a.refill_day))
        }
        Blocker::Account(Counter::WeeklyInvites) => {
            let today = zones.day_at(now);
            let k = (1..=7usize)
                .find(|&k| week_counts[k..].iter().sum::<u32>() < weekly_cap)
                .unwrap_or(7);
            zones.next_open(w, zones.start_of_day(today + Duration::days(k as i64)))
        }
        Blocker::Account(_) => zones.next_open_on_later_day(w, now),
        Blocker::Campaign(_) => zones.next_open(w, start_of_next_day(campaign_tz, now)),
    }
}

fn skipped(action: &str, why: &'static str) -> ReserveResult {
    ReserveResult::Skipped {
        action: action.to_string(),
        why,
    }
}

pub(super) fn reserve_one(
    tx: &Tx,
    id: &str,
    now: DateTime<Utc>,
    st: &Settings,
    batch_id: u64,
    entries: &mut Vec<LedgerEntry>,
    out: &mut Vec<Change>,
) -> TxResult<ReserveResult> {
    let Some(action) = tx.action(id)? else {
        return Ok(skipped(id, "unknown action"));
    };
    if action.state != State::Queued || action.until_ms.is_some_and(|u| u > ms(now)) {
        return Ok(skipped(id, "not due"));
    }
    let Some(mut acct) = tx.account(&action.account)? else {
        return Ok(skipped(id, "unknown account"));
    };
    let before = acct.clone();
    maintain(tx, &mut acct, now, st, out)?;
    if acct != before {
        tx.put_account(&acct)?;
    }
    if acct.restricted {
        return Ok(skipped(id, "account restricted"));
    }
    if acct.held(now) {
        return Ok(skipped(id, "account held"));
    }
    if super::operator::account_held_by_operator(tx, &acct.id)? {
        return Ok(skipped(id, "paused by the operator"));
    }
    if !acct.zones().is_open(&acct.window, now) {
        return Ok(skipped(id, "outside the sending window"));
    }
    let Some(campaign) = tx.campaign(&action.campaign)? else {
        return Ok(skipped(id, "unknown campaign"));
    };
    let mut parked = action.clone();
    parked.state = State::Parked;
    parked.updated_ms = ms(now);
    if campaign.paused || super::operator::campaign_held_by_operator(tx, &campaign.id)? {
        parked.reason = Some("campaign_paused".into());
        parked.until_ms = None;
        tx.transition(&action, &parked, Some((b"c", &campaign.id)))?;
        return Ok(ReserveResult::Parked {
            action: action.id,
            account: acct.id,
            campaign: campaign.id,
            kind: parked.kind,
            blocker: "campaign_paused".into(),
            blocked: None,
            until: None,
        });
    }
    let today = acct.day_at(now);
    let camp_today = local_day(campaign.tz(), now);
    let mut day = tx.account_day(&acct.id, today)?;
    let mut camp_day = tx.campaign_day(&campaign.id, camp_today)?;
    let limits = acct.limits(&st.policy, campaign.limits(), today);
    let week_counts = match (action.kind, limits.weekly_invites) {
        (Kind::Invite, Some(_)) => week(tx, &acct.id, today)?,
        _ => [0; 7],
    };
    let mut budget = Budget {
        limits,
        day: day.reserved,
        week_invites: week_counts.iter().sum(),
        credits: acct.credits,
        campaign_day: camp_day,
    };
    match budget.reserve(action.kind) {
        Decision::Blocked(blocker) => {
            let weekly_cap = limits.weekly_invites.unwrap_or(u32::MAX);
            let until = park_until(&acct, campaign.tz(), blocker, now, week_counts, weekly_cap)
                .unwrap_or(now + Duration::days(1));
            parked.reason = Some(blocker.name());
            parked.until_ms = Some(ms(until));
            tx.transition(&action, &parked, None)?;
            Ok(ReserveResult::Parked {
                action: action.id,
                account: acct.id,
                campaign: campaign.id,
                kind: parked.kind,
                blocker: blocker.name(),
                blocked: Some(blocker),
                until: Some(until),
            })
        }
        Decision::Admit => {
            day.reserved = budget.day;
            camp_day = budget.campaign_day;
            acct.credits = budget.credits;
            acct.last_reserved_ms = Some(ms(now));
            tx.put_account_day(&acct.id, today, &day)?;
            tx.put_campaign_day(&campaign.id, camp_today, &camp_day)?;
            tx.put_account(&acct)?;
            let mut inflight = action.clone();
            inflight.state = State::Inflight;
            inflight.attempts += 1;
            inflight.retries += 1;
            inflight.reason = None;
            inflight.until_ms = None;
            inflight.updated_ms = ms(now);
            tx.transition(&action, &inflight, None)?;
            // The in-flight index remembers the reservation (its batch and place in
            // it), so that an attempt that is not delivered gives back exactly these
            // slots (`outcome::release`).
            let index = u32::try_from(entries.len()).unwrap_or(u32::MAX);
            debug_assert!(index < u32::MAX, "a reserve batch is far smaller");
            tx.put_raw(
                INFLIGHT,
                action.id.as_bytes(),
                &codec::inflight_value(batch_id, index),
            )?;
            entries.push(LedgerEntry {
                action: action.id.clone(),
                account: acct.id.clone(),
                campaign: campaign.id.clone(),
                kind: action.kind,
                attempt: inflight.attempts,
                at_ms: ms(now),
                account_day: today,
                campaign_day: camp_today,
                limits: LedgerLimits::of(&limits, action.kind),
            });
            Ok(ReserveResult::Reserved(request_of(&inflight, &acct)))
        }
    }
}

fn request_of(a: &Action, acct: &Account) -> Reservation {
    Reservation {
        request: SendRequest {
            id: a.id.clone(),
            account: a.account.clone(),
            proxy: acct.proxy.clone(),
            campaign: a.campaign.clone(),
            kind: a.kind,
            prospect: a.prospect.clone(),
            payload: serde_json::from_str(&a.payload).unwrap_or(serde_json::Value::Null),
            attempt: a.attempts,
        },
        campaign: a.campaign.clone(),
        account: a.account.clone(),
    }
}

/// The kinds a blocked counter stops: every one that draws from it.
pub fn kinds_blocked_by(blocker: Blocker) -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|&k| match blocker {
            Blocker::Account(c) => crate::policy::caps::draws(k).contains(&c),
            Blocker::Campaign(t) => crate::policy::CampaignType::of(k) == Some(t),
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

/// One action parked with the rest of a blocked backlog.
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedAction {
    pub action: String,
    pub campaign: String,
    pub kind: Kind,
}

impl Store {
    /// `None` once acceptance feedback flows; until then, how many accounts (not
    /// restricted) wait on it (SPEC §3.4 `feedback_missing`).
    pub fn feedback_missing(&self) -> Result<Option<u32>, StoreError> {
        self.op("feedback")?;
        if self.trees[META].get(META_FEEDBACK_SEEN)?.is_some() {
            return Ok(None);
        }
        let waiting = self.accounts()?.iter().filter(|a| !a.restricted).count();
        Ok(Some(u32::try_from(waiting).unwrap_or(u32::MAX)))
    }

    /// Park, in one transaction, every ready action of `account` (of `campaign` only,
    /// when given) that `hold` stops: all kinds drawing from an exhausted counter, or
    /// every action of a paused campaign. They would all be refused, so trying them
    /// one by one only burns transactions. At most `max` per call.
    pub fn park_backlog(
        &self,
        account: &str,
        campaign: Option<&str>,
        hold: Hold,
        now: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<ParkedAction>, StoreError> {
        let (kinds, reason, until) = match hold {
            Hold::Counter(b, until) => (kinds_blocked_by(b), b.name(), Some(ms(until))),
            Hold::CampaignPaused => (Kind::ALL.to_vec(), "campaign_paused".to_string(), None),
        };
        // Parked without an until, an action waits on its campaign's resume.
        let waiting_on = match (until, campaign) {
            (None, Some(c)) => Some((&b"c"[..], c)),
            (None, None) => return Ok(Vec::new()),
            (Some(_), _) => None,
        };
        let prefix = match campaign {
            Some(c) => {
                let mut p = super::codec::key(&[account.as_bytes(), c.as_bytes()]);
                p.push(0);
                p
            }
            None => super::codec::account_prefix(account),
        };
        self.op("scan ready")?;
        let ids: Vec<String> = self.trees[super::READY]
            .scan_prefix(&prefix)
            .values()
            .take(max)
            .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.transact(|tx| {
            let mut out = Vec::new();
            for id in &ids {
                let Some(old) = tx.action(id)? else { continue };
                if old.state != State::Queued || old.until_ms.is_some() || !kinds.contains(&old.kind) {
                    continue;
                }
                let mut a = old.clone();
                a.state = State::Parked;
                a.reason = Some(reason.clone());
                a.until_ms = until;
                a.updated_ms = ms(now);
                tx.transition(&old, &a, waiting_on)?;
                out.push(ParkedAction {
                    action: a.id,
                    campaign: a.campaign,
                    kind: a.kind,
                });
            }
            tx.flush_counts()?;
            Ok(out)
        })?;
        let out = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if !out.is_empty() {
            self.make_durable()?;
        }
        Ok(out)
    }

    /// Reserve several actions in one transaction and one durable commit (group
    /// commit). Each result says reserved, parked, or skipped; only `Reserved` ones
    /// may be sent, and only after this returns.
    pub fn reserve(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(Vec<ReserveResult>, Vec<Change>), StoreError> {
        // One ledger record holds every reservation of the batch, with the limits in
        // force; its id is taken before the transaction (which may run twice).
        self.op("generate ledger id")?;
        let batch_id = self.db.generate_id()?;
        let st = &self.settings;
        let result = self.transact(|tx| {
            let mut changes = Vec::new();
            let mut results = Vec::with_capacity(ids.len());
            let mut entries = Vec::with_capacity(ids.len());
            for id in ids {
                results.push(reserve_one(
                    tx,
                    id,
                    now,
                    st,
                    batch_id,
                    &mut entries,
                    &mut changes,
                )?);
            }
            if !entries.is_empty() {
                tx.put(
                    LEDGER,
                    &codec::reservations_key(batch_id),
                    &LedgerReservations { entries },
                )?;
            }
            tx.flush_counts()?;
            Ok((results, changes))
        })?;
        let (results, changes) = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        // The durability boundary: nothing below this line may run before the
        // reservation survives a crash and a power cut.
        self.make_durable()?;
        Ok((results, changes))
    }
}
