//! Recording what the upstream answered (SPEC §5), and recovery of actions a crash
//! left `inflight`.

use super::codec::{self, from_ms, ms};
use super::records::{
    Account, Action, LedgerEntry, LedgerOutcome, LedgerOutcomes, LedgerRelease, LedgerReservations, State,
};
use super::reserve::{refresh_health, Change};
use super::tx::{Abort, Tx, TxResult};
use super::{Recovery, Settings, Store, StoreError, INFLIGHT, LEDGER, LINKS};
use crate::contract::Outcome;
use crate::policy::{caps, credits, Health, Kind};
use chrono::{DateTime, Duration, Utc};
use sled::transaction::ConflictableTransactionError;

/// What became of an action after its outcome was recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub action: String,
    pub account: String,
    pub campaign: String,
    pub kind: Kind,
    pub state: State,
    pub reason: Option<String>,
    pub until: Option<DateTime<Utc>>,
    /// The attempt was not delivered and its slots were given back (SPEC §3).
    pub released: bool,
}

/// One answer to record (the arguments of [`Store::record_attempts`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub action: String,
    pub outcome: Outcome,
    /// The wait before a retry, drawn by the caller.
    pub backoff_s: u64,
    /// A probe of the open circuit breaker (SPEC §5 "Upstream down"): it does not count
    /// against `upstream.max_attempts`.
    pub probe: bool,
}

fn recorded(a: &Action, released: bool) -> Recorded {
    Recorded {
        action: a.id.clone(),
        account: a.account.clone(),
        campaign: a.campaign.clone(),
        kind: a.kind,
        state: a.state,
        reason: a.reason.clone(),
        until: a.until_ms.map(from_ms),
        released,
    }
}

impl Store {
    /// Record the outcomes of several attempts in one transaction: `(action, outcome,
    /// backoff_s)`, none of them a probe. See [`Store::record_attempts`].
    pub fn record(
        &self,
        outcomes: &[(String, Outcome, u64)],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Recorded>, Vec<Change>), StoreError> {
        let attempts: Vec<Attempt> = outcomes
            .iter()
            .map(|(id, outcome, backoff_s)| Attempt {
                action: id.clone(),
                outcome: outcome.clone(),
                backoff_s: *backoff_s,
                probe: false,
            })
            .collect();
        self.record_attempts(&attempts, now)
    }

    /// Record the outcomes of several attempts in one transaction. Rate limits,
    /// restrictions and `no_credits` are made durable (flush + fdatasync); other
    /// outcomes are flushed (they survive `kill -9`; a power cut can only turn them
    /// into `unknown`). An attempt that was not delivered gives its slots back in the
    /// same transaction (SPEC §3).
    pub fn record_attempts(
        &self,
        attempts: &[Attempt],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Recorded>, Vec<Change>), StoreError> {
        // Ids for the releases, taken before the transaction (it may run twice).
        let mut release_ids = Vec::with_capacity(attempts.len());
        for at in attempts {
            release_ids.push(match at.outcome {
                Outcome::NotDelivered { .. } => {
                    self.op("generate ledger id")?;
                    Some(self.db.generate_id()?)
                }
                _ => None,
            });
        }
        // One ledger record holds every outcome of the batch (`show` lists them).
        self.op("generate ledger id")?;
        let outcomes_id = self.db.generate_id()?;
        let result = self.transact(|tx| {
            let mut changes = Vec::new();
            let mut out = Vec::with_capacity(attempts.len());
            let mut ledger = Vec::with_capacity(attempts.len());
            for (at, rid) in attempts.iter().zip(&release_ids) {
                if let Some((r, attempt)) = self.record_one(tx, at, *rid, now, &mut changes)? {
                    ledger.push(outcome_of(&r, attempt, at.outcome.name()));
                    out.push(r);
                }
            }
            put_outcomes(tx, outcomes_id, now, ledger)?;
            tx.flush_counts()?;
            Ok((out, changes))
        })?;
        let done = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        // An outcome that holds, stops or drains an account must survive a power cut:
        // losing it could let the account send again the same day. Any other outcome
        // only needs to survive the process: lost to a power cut, its action reads
        // `unknown` at the next start, its slot still used — never a second send.
        let binding = attempts.iter().any(|at| {
            matches!(
                at.outcome,
                Outcome::RateLimited { .. } | Outcome::Restricted | Outcome::NoCredits
            )
        });
        if binding {
            self.make_durable()?;
        } else {
            self.flush()?;
        }
        Ok(done)
    }

    fn record_one(
        &self,
        tx: &Tx,
        attempt: &Attempt,
        release_id: Option<u64>,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) -> TxResult<Option<(Recorded, u32)>> {
        let (id, outcome, backoff_s) = (attempt.action.as_str(), &attempt.outcome, attempt.backoff_s);
        let st = &self.settings;
        let Some(old) = tx.action(id)? else {
            return Ok(None);
        };
        if old.state != State::Inflight {
            return Ok(None);
        }
        let Some(mut acct) = tx.account(&old.account)? else {
            return Ok(None);
        };
        let today = acct.day_at(now);
        let mut a = old.clone();
        a.updated_ms = ms(now);
        let mut waiting_on: Option<(&[u8], &str)> = None;
        let mut released = false;
        let mut credit_back = false;
        if attempt.probe {
            // A probe is not one of the action's attempts (SPEC §5 "Upstream down").
            debug_assert!(a.retries >= 1, "a probe was reserved, so counted once");
            a.retries = a.retries.saturating_sub(1);
        }
        let retry = |a: &mut Action, why: &str| {
            if a.retries < st.max_attempts {
                a.state = State::Queued;
                a.reason = Some(why.to_string());
                a.until_ms = Some(ms(now + Duration::seconds(backoff_s as i64)));
            } else {
                a.state = State::Failed;
                a.reason = Some(format!("{why}: {} attempts", a.retries));
            }
        };
        match outcome {
            Outcome::Sent => {
                a.state = State::Sent;
                a.reason = None;
                let mut day = tx.account_day(&acct.id, today)?;
                day.sent_by_kind[a.kind as usize] += 1;
                if a.kind == Kind::Invite {
                    day.invites_sent += 1;
                    a.sent_day = Some(today);
                    let k = super::codec::invite_key(&acct.id, &a.prospect);
                    tx.put_raw(LINKS, &k, a.id.as_bytes())?;
                }
                if a.kind == Kind::Inmail {
                    // The last InMail to this prospect: a reply named by account and
                    // prospect returns its credit (SPEC §9).
                    let k = super::codec::inmail_key(&acct.id, &a.prospect);
                    tx.put_raw(LINKS, &k, a.id.as_bytes())?;
                }
                tx.put_account_day(&acct.id, today, &day)?;
            }
            Outcome::RateLimited { retry_after_s } => {
                let next_day = acct.zones().next_open_on_later_day(&acct.window, now);
                let hint =
                    retry_after_s.map(|s| now + Duration::seconds(s.min(i64::MAX as u64 / 2000) as i64));
                let until = match (next_day, hint) {
                    (Some(d), Some(h)) => d.max(h),
                    (Some(d), None) => d,
                    (None, h) => h.unwrap_or(now).max(now + Duration::days(1)),
                };
                acct.held_until_ms = Some(acct.held_until_ms.unwrap_or(0).max(ms(until)));
                let mut day = tx.account_day(&acct.id, today)?;
                day.rate_limits += 1;
                tx.put_account_day(&acct.id, today, &day)?;
                refresh_health(tx, &mut acct, today, st, changes)?;
                changes.push(Change::AccountHeld {
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
                acct.restricted = true;
                if acct.health != Health::Restricted {
                    changes.push(Change::HealthChanged {
                        account: acct.id.clone(),
                        old: acct.health,
                        new: Health::Restricted,
                        reason: crate::policy::health::REASON_RESTRICTED,
                        health_reason: "restricted: the upstream answered `restricted`".into(),
                    });
                    acct.health = Health::Restricted;
                }
                a.state = State::Parked;
                a.reason = Some("account_restricted".into());
                a.until_ms = None;
                waiting_on = Some((b"a", &old.account));
            }
            Outcome::NoCredits => {
                acct.credits = 0;
                let refill = credits::next_refill_after(now, acct.refill_day);
                let until = acct.zones().next_open(&acct.window, refill).unwrap_or(refill);
                a.state = State::Parked;
                a.reason = Some("no_credits".into());
                a.until_ms = Some(ms(until));
            }
            Outcome::Invalid { reason } => {
                a.state = State::Failed;
                a.reason = Some(format!("invalid: {reason}"));
            }
            Outcome::NotDelivered { reason } => {
                if let Some(rid) = release_id {
                    (released, credit_back) = release(tx, &old, &mut acct, rid, now, st)?;
                }
                retry(&mut a, &format!("not_delivered: {reason}"));
            }
            Outcome::MaybeDelivered { reason } => {
                if st.idempotent {
                    retry(&mut a, &format!("maybe_delivered: {reason}"));
                } else {
                    a.state = State::Unknown;
                    a.reason = Some(format!("maybe_delivered: {reason}"));
                }
            }
        }
        if credit_back
            || matches!(
                outcome,
                Outcome::RateLimited { .. } | Outcome::Restricted | Outcome::NoCredits
            )
        {
            tx.put_account(&acct)?;
        }
        tx.transition(&old, &a, waiting_on)?;
        Ok(Some((recorded(&a, released), old.attempts)))
    }

    /// At open: actions a crash left `inflight` become `unknown`, or are queued again
    /// with the same idempotency key when `upstream.idempotent = true`. Their slots
    /// stay used.
    pub fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError> {
        self.op("scan inflight")?;
        let ids: Vec<String> = self.trees[INFLIGHT]
            .iter()
            .keys()
            .map(|k| k.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Recovery::default());
        }
        let idempotent = self.settings.idempotent;
        self.op("generate ledger id")?;
        let outcomes_id = self.db.generate_id()?;
        let result = self.transact(|tx| {
            let mut rec = Recovery::default();
            let mut ledger = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(old) = tx.action(id)? else { continue };
                if old.state != State::Inflight {
                    continue;
                }
                let mut a = old.clone();
                a.updated_ms = ms(now);
                if idempotent {
                    a.state = State::Queued;
                    a.reason = Some("recovered after a crash".into());
                    rec.requeued.push(a.id.clone());
                } else {
                    a.state = State::Unknown;
                    a.reason = Some("outcome lost to a crash".into());
                    rec.unknown.push(a.id.clone());
                }
                tx.transition(&old, &a, None)?;
                ledger.push(outcome_of(&recorded(&a, false), old.attempts, LOST_TO_CRASH));
            }
            put_outcomes(tx, outcomes_id, now, ledger)?;
            tx.flush_counts()?;
            Ok(rec)
        })?;
        let rec = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        self.make_durable()?;
        Ok(rec)
    }
}

/// Give back the slots of the reservation `old` is in flight on (SPEC §3, "not
/// delivered"): one of every day counter it took, on the reservation's own local days
/// (not today's: the answer may come after midnight), and its InMail credit; and write
/// the release to the ledger. Returns (released, the account's balance changed).
/// An attempt whose reservation is not remembered (reserved by an older build) keeps
/// its slots: giving back too little is safe, too much is not.
fn release(
    tx: &Tx,
    old: &Action,
    acct: &mut Account,
    release_id: u64,
    now: DateTime<Utc>,
    st: &Settings,
) -> TxResult<(bool, bool)> {
    let Some(raw) = tx.get_raw(INFLIGHT, old.id.as_bytes())? else {
        return Ok((false, false));
    };
    let Some(lid) = codec::ledger_id(&raw) else {
        return Ok((false, false));
    };
    let entry = match codec::inflight_index(&raw) {
        // Format 2: the entry's place in its batch.
        Some(index) => tx
            .get::<LedgerReservations>(LEDGER, &codec::reservations_key(lid), "ledger reservations")?
            .and_then(|b| b.entries.into_iter().nth(index as usize)),
        // Format 1: a record of its own.
        None => tx.get::<LedgerEntry>(LEDGER, &lid.to_be_bytes(), "ledger entry")?,
    };
    let Some(entry) = entry else {
        return Ok((false, false));
    };
    if entry.action != old.id || entry.attempt != old.attempts {
        return Err(corrupt(format!(
            "in-flight {} (attempt {}) points at the reservation of {} (attempt {})",
            old.id, old.attempts, entry.action, entry.attempt
        )));
    }
    let mut day = tx.account_day(&entry.account, entry.account_day)?;
    let mut camp = tx.campaign_day(&entry.campaign, entry.campaign_day)?;
    if !caps::give_back(entry.kind, &mut day.reserved, &mut camp) {
        return Err(corrupt(format!(
            "releasing {} attempt {}: the counters of {} {} hold no such slot",
            old.id, entry.attempt, entry.account, entry.account_day
        )));
    }
    tx.put_account_day(&entry.account, entry.account_day, &day)?;
    if crate::policy::CampaignType::of(entry.kind).is_some() {
        tx.put_campaign_day(&entry.campaign, entry.campaign_day, &camp)?;
    }
    let credit_back = entry.kind == Kind::Inmail;
    if credit_back {
        let ceiling = st.policy.tier(acct.tier).inmail_ceiling;
        acct.credits = credits::give_back(acct.credits, ceiling, acct.last_refill_ms > entry.at_ms);
    }
    let rel = LedgerRelease {
        action: entry.action,
        account: entry.account,
        campaign: entry.campaign,
        kind: entry.kind,
        attempt: entry.attempt,
        at_ms: ms(now),
        account_day: entry.account_day,
        campaign_day: entry.campaign_day,
        reservation: lid,
    };
    tx.put(LEDGER, &codec::release_key(release_id), &rel)?;
    Ok((true, credit_back))
}

/// The outcome name of an attempt a crash left in flight, found at start-up.
pub const LOST_TO_CRASH: &str = "lost_to_crash";

fn outcome_of(r: &Recorded, attempt: u32, outcome: &str) -> LedgerOutcome {
    LedgerOutcome {
        action: r.action.clone(),
        attempt,
        outcome: outcome.to_string(),
        state: r.state,
        reason: r.reason.clone(),
        until_ms: r.until.map(ms),
        released: r.released,
    }
}

/// Write the batch's outcomes as one ledger record (none when nothing was recorded).
fn put_outcomes(tx: &Tx, id: u64, now: DateTime<Utc>, outcomes: Vec<LedgerOutcome>) -> TxResult<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let rec = LedgerOutcomes {
        at_ms: ms(now),
        outcomes,
    };
    tx.put(LEDGER, &codec::outcome_key(id), &rec)
}

fn corrupt(msg: String) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(Abort::Corrupt(msg))
}
