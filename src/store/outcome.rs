//! Recording what the upstream answered (SPEC §5), and recovery of actions a crash
//! left `inflight`.

use super::codec::{from_ms, ms};
use super::records::{Action, State};
use super::reserve::{refresh_health, Change};
use super::tx::{Tx, TxResult};
use super::{Recovery, Store, StoreError, INFLIGHT, LINKS};
use crate::contract::Outcome;
use crate::policy::{credits, Health, Kind};
use chrono::{DateTime, Duration, Utc};

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
}

fn recorded(a: &Action) -> Recorded {
    Recorded {
        action: a.id.clone(),
        account: a.account.clone(),
        campaign: a.campaign.clone(),
        kind: a.kind,
        state: a.state,
        reason: a.reason.clone(),
        until: a.until_ms.map(from_ms),
    }
}

impl Store {
    /// Record the outcomes of several attempts in one transaction. Rate limits,
    /// restrictions and `no_credits` are made durable (flush + fdatasync); other
    /// outcomes are flushed (they survive `kill -9`; a power cut can only turn them
    /// into `unknown`). `backoff_s` is the wait before a retry, drawn by the caller.
    pub fn record(
        &self,
        outcomes: &[(String, Outcome, u64)],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Recorded>, Vec<Change>), StoreError> {
        let result = self.transact(|tx| {
            let mut changes = Vec::new();
            let mut out = Vec::with_capacity(outcomes.len());
            for (id, outcome, backoff_s) in outcomes {
                if let Some(r) = self.record_one(tx, id, outcome, *backoff_s, now, &mut changes)? {
                    out.push(r);
                }
            }
            tx.flush_counts()?;
            Ok((out, changes))
        })?;
        let done = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        // An outcome that holds, stops or drains an account must survive a power cut:
        // losing it could let the account send again the same day. Any other outcome
        // only needs to survive the process: lost to a power cut, its action reads
        // `unknown` at the next start, its slot still used — never a second send.
        let binding = outcomes.iter().any(|(_, o, _)| {
            matches!(
                o,
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
        id: &str,
        outcome: &Outcome,
        backoff_s: u64,
        now: DateTime<Utc>,
        changes: &mut Vec<Change>,
    ) -> TxResult<Option<Recorded>> {
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
            Outcome::NotDelivered { reason } => retry(&mut a, &format!("not_delivered: {reason}")),
            Outcome::MaybeDelivered { reason } => {
                if st.idempotent {
                    retry(&mut a, &format!("maybe_delivered: {reason}"));
                } else {
                    a.state = State::Unknown;
                    a.reason = Some(format!("maybe_delivered: {reason}"));
                }
            }
        }
        if matches!(
            outcome,
            Outcome::RateLimited { .. } | Outcome::Restricted | Outcome::NoCredits
        ) {
            tx.put_account(&acct)?;
        }
        tx.transition(&old, &a, waiting_on)?;
        Ok(Some(recorded(&a)))
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
        let result = self.transact(|tx| {
            let mut rec = Recovery::default();
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
            }
            tx.flush_counts()?;
            Ok(rec)
        })?;
        let rec = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        self.make_durable()?;
        Ok(rec)
    }
}
