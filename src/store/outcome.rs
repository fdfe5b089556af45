//! Recording what the upstream answered (SPEC §5), and recovery of actions a crash
//! left `inflight`: the reads and the writes. What an answer does is decided by
//! `rules::outcome`.

use super::codec::{self, from_ms, ms};
use super::records::{Action, LedgerEntry, LedgerOutcome, LedgerOutcomes, LedgerReservations, State};
use super::reserve::{waiting_key, Change};
use super::tx::{Abort, Tx, TxResult};
use super::{Recovery, Store, StoreError, INFLIGHT, LEDGER, LINKS};
use crate::contract::Outcome;
use crate::policy::health::Signals;
use crate::policy::Kind;
use crate::rules::outcome::{self, Link};
use chrono::{DateTime, Utc};
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

/// Ledger ids of a batch of answers (`Store::answer_ids`).
pub(super) struct AnswerIds {
    releases: Vec<Option<u64>>,
    outcomes: Option<u64>,
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
    /// restrictions and `no_credits` are made durable (flush + fdatasync) before this
    /// returns; other outcomes are committed and flushed with the next durable commit
    /// (the next reservation) or at `settle`, whichever comes first: until then a
    /// `kill -9` undoes them as it would an answer not yet recorded (`unknown`, or
    /// queued again under the same key when idempotent).
    /// An attempt that was not delivered gives its slots back in the same transaction
    /// (SPEC §3).
    pub fn record_attempts(
        &self,
        attempts: &[Attempt],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Recorded>, Vec<Change>), StoreError> {
        let ids = self.answer_ids(attempts)?;
        let result = self.transact_behind(|tx| {
            let mut changes = Vec::new();
            let out = self.record_in(tx, attempts, &ids, now, &mut changes)?;
            tx.flush_counts()?;
            Ok((out, changes))
        })?;
        let done = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        // An outcome that holds, stops or drains an account must survive a power cut
        // before anything else is decided: losing it could let the account send again
        // the same day. Any other outcome only needs to reach the file before anyone is
        // told of it: lost to a crash, it is as if the answer never came (its action
        // reads `unknown`, or is queued again under the same key when idempotent; its
        // slot stays used). The next reservation's durable commit carries it (one flush
        // per action instead of two), else `settle` does.
        let binding = attempts.iter().any(|at| outcome::binding(&at.outcome));
        if binding {
            self.make_durable()?;
        } else {
            self.flush_later();
        }
        Ok(done)
    }

    /// The ledger ids a batch of answers needs, taken before its transaction (which
    /// may run twice): one a release (an attempt not delivered), one for the record of
    /// the batch's outcomes.
    pub(super) fn answer_ids(&self, attempts: &[Attempt]) -> Result<AnswerIds, StoreError> {
        let mut releases = Vec::with_capacity(attempts.len());
        for at in attempts {
            releases.push(match at.outcome {
                Outcome::NotDelivered { .. } => {
                    self.op("generate ledger id")?;
                    Some(self.db().generate_id()?)
                }
                _ => None,
            });
        }
        // One ledger record holds every outcome of the batch (`show` lists them).
        let outcomes = if attempts.is_empty() {
            None
        } else {
            self.op("generate ledger id")?;
            Some(self.db().generate_id()?)
        };
        Ok(AnswerIds { releases, outcomes })
    }

    /// Record `attempts` inside `tx` (the state counts are the caller's to flush).
    pub(super) fn record_in(
        &self,
        tx: &Tx,
        attempts: &[Attempt],
        ids: &AnswerIds,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) -> TxResult<Vec<Recorded>> {
        debug_assert_eq!(
            ids.releases.len(),
            attempts.len(),
            "one release id slot an answer"
        );
        let mut out = Vec::with_capacity(attempts.len());
        let mut ledger = Vec::with_capacity(attempts.len());
        for (at, rid) in attempts.iter().zip(&ids.releases) {
            if let Some((r, attempt)) = self.record_one(tx, at, *rid, now, changes)? {
                ledger.push(outcome_of(&r, attempt, at.outcome.name()));
                out.push(r);
            }
        }
        if let Some(id) = ids.outcomes {
            put_outcomes(tx, id, now, ledger)?;
        }
        Ok(out)
    }

    /// Record one answer: read what `rules::outcome::effects` needs, write its effects.
    fn record_one(
        &self,
        tx: &Tx,
        attempt: &Attempt,
        release_id: Option<u64>,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) -> TxResult<Option<(Recorded, u32)>> {
        let st = &self.settings;
        let Some(old) = tx.action(&attempt.action)? else {
            return Ok(None);
        };
        if !outcome::awaits_outcome(&old) {
            return Ok(None);
        }
        let Some(acct) = tx.account(&old.account)? else {
            return Ok(None);
        };
        let signals = if outcome::needs_signals(&attempt.outcome) {
            super::reserve::signals(tx, &acct, acct.day_at(now))?
        } else {
            Signals::default()
        };
        let reserved = match (&attempt.outcome, release_id) {
            (Outcome::NotDelivered { .. }, Some(_)) => reservation_of(tx, &old)?,
            _ => None,
        };
        let fx = outcome::effects(&outcome::OutcomeInput {
            action: &old,
            account: &acct,
            outcome: &attempt.outcome,
            backoff_s: attempt.backoff_s,
            probe: attempt.probe,
            signals,
            reserved: reserved.as_ref(),
            now,
            settings: st,
        })
        .map_err(|e| corrupt(e.0))?;
        if let Some(d) = &fx.counters {
            let mut day = tx.account_day(&acct.id, d.day)?;
            d.apply(&mut day);
            tx.put_account_day(&acct.id, d.day, &day)?;
        }
        for link in &fx.links {
            let (key, action) = match link {
                Link::Invite {
                    account,
                    prospect,
                    action,
                } => (codec::invite_key(account, prospect), action),
                Link::Inmail {
                    account,
                    prospect,
                    action,
                } => (codec::inmail_key(account, prospect), action),
            };
            tx.put_raw(LINKS, &key, action.as_bytes())?;
        }
        if let (Some(r), Some(rid)) = (&fx.release, release_id) {
            let rel = &r.record;
            tx.put_account_day(&rel.account, rel.account_day, &r.day)?;
            if let Some(camp) = &r.campaign_day {
                tx.put_campaign_day(&rel.campaign, rel.campaign_day, camp)?;
            }
            tx.put(LEDGER, &codec::release_key(rid), rel)?;
        }
        if let Some(a) = &fx.account {
            tx.put_account(a)?;
        }
        tx.transition(&old, &fx.action, fx.waiting_on.as_ref().map(waiting_key))?;
        changes.extend(fx.changes);
        Ok(Some((recorded(&fx.action, fx.release.is_some()), old.attempts)))
    }

    /// At open: actions a crash left `inflight` become `unknown`, or are queued again
    /// with the same idempotency key when `upstream.idempotent = true`. Their slots
    /// stay used.
    pub fn recover(&self, now: DateTime<Utc>) -> Result<Recovery, StoreError> {
        self.op("scan inflight")?;
        let ids: Vec<String> = self.trees()?[INFLIGHT]
            .iter()
            .keys()
            .map(|k| k.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Recovery::default());
        }
        let idempotent = self.settings.idempotent;
        self.op("generate ledger id")?;
        let outcomes_id = self.db().generate_id()?;
        let result = self.transact(|tx| {
            let mut rec = Recovery::default();
            let mut ledger = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(old) = tx.action(id)? else { continue };
                if !outcome::awaits_outcome(&old) {
                    continue;
                }
                let a = outcome::lost_to_crash(&old, idempotent, now);
                match a.state {
                    State::Queued => rec.requeued.push(a.id.clone()),
                    _ => rec.unknown.push(a.id.clone()),
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

/// The reservation `old` is in flight on, with the counters it took slots of (for a
/// `not_delivered` answer). `None` when it is not remembered (reserved by an older
/// build): its slots are then kept, giving back too little is safe, too much is not.
fn reservation_of(tx: &Tx, old: &Action) -> TxResult<Option<outcome::Reserved>> {
    let Some(raw) = tx.get_raw(INFLIGHT, old.id.as_bytes())? else {
        return Ok(None);
    };
    let Some(lid) = codec::ledger_id(&raw) else {
        return Ok(None);
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
        return Ok(None);
    };
    Ok(Some(outcome::Reserved {
        ledger_id: lid,
        day: tx.account_day(&entry.account, entry.account_day)?,
        campaign_day: tx.campaign_day(&entry.campaign, entry.campaign_day)?,
        entry,
    }))
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
