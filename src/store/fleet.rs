//! Fleets (SPEC §12), the store's side: what a reservation would draw from, decided by
//! the store's own check (`reserve_one`) in a transaction that is then aborted, so the
//! fleet is asked exactly for what the local reservation will take; and the fleet's
//! verdicts that move an action without a reservation (parked, failed).

use super::codec::waiting_prefix;
use super::records::Account;
use super::reserve::{maintain, reserve_one, waiting_key, Batch, ParkedAction, ReserveResult};
use super::tx::{reject, Tx, TxResult};
use super::{Settings, Store, StoreError};
use crate::cluster::plan::{AccountState, STATE_VERSION};
use crate::cluster::Draw;
use crate::rules::park;
use chrono::{DateTime, Utc};
use std::cell::RefCell;

/// Where a candidate goes in a fleet.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// The store would admit it: the fleet must claim it first.
    Fleet(Box<Draw>),
    /// The store would not admit it (parked, skipped): reserve locally as usual, which
    /// takes no slot and sends nothing.
    Local,
}

/// Actions parked for an account held elsewhere, per call.
pub const OWNED_ELSEWHERE_BATCH: usize = 4096;
/// The parking reason of an account held by another worker (SPEC §12).
pub const OWNED_ELSEWHERE: &str = "owned_elsewhere";
/// The failure reason of an action id already sent in the fleet (SPEC §12).
pub const DUPLICATE_IN_FLEET: &str = "duplicate_in_fleet";

fn draw_of(tx: &Tx, id: &str, now: DateTime<Utc>, st: &Settings) -> TxResult<Option<Draw>> {
    let Some(action) = tx.action(id)? else {
        return Ok(None);
    };
    let Some(mut acct) = tx.account(&action.account)? else {
        return Ok(None);
    };
    maintain(tx, &mut acct, now, st, &mut Vec::new())?;
    let Some(campaign) = tx.campaign(&action.campaign)? else {
        return Ok(None);
    };
    let account_day = acct.day_at(now);
    Ok(Some(Draw {
        action: action.id.clone(),
        account: acct.id.clone(),
        campaign: campaign.id.clone(),
        kind: action.kind,
        account_day,
        campaign_day: campaign.day_at(now),
        limits: acct.limits(&st.policy, campaign.limits(), account_day),
        account_until: park::next_account_day(&acct, now),
        campaign_until: park::next_campaign_day(&acct, &campaign.zones(), now),
        state: state_of(&acct),
    }))
}

/// The part of an account a fleet keeps beside its counters.
pub fn state_of(a: &Account) -> AccountState {
    AccountState {
        v: STATE_VERSION,
        credits: a.credits,
        last_refill_ms: a.last_refill_ms,
        ramp_ceiling: a.ramp_ceiling,
        ramp_history: a.ramp_history.clone(),
        ramp_steps: a.ramp_steps,
        health: a.health,
        restricted: a.restricted,
        held_until_ms: a.held_until_ms,
    }
}

/// What a new owner adopts from the fleet's state (`AccountState::adopt`), on `a`.
fn adopt_into(a: &mut Account, fleet: &AccountState) {
    let s = AccountState::adopt(&state_of(a), fleet);
    a.credits = s.credits;
    a.last_refill_ms = s.last_refill_ms;
    a.ramp_ceiling = s.ramp_ceiling;
    a.ramp_history = s.ramp_history;
    a.ramp_steps = s.ramp_steps;
    a.health = s.health;
    a.restricted = s.restricted;
    a.held_until_ms = s.held_until_ms;
}

impl Store {
    /// For each candidate, whether the local reservation would admit it and, if so,
    /// what it draws from. Writes nothing (the transaction is aborted).
    pub fn fleet_routes(&self, ids: &[String], now: DateTime<Utc>) -> Result<Vec<Route>, StoreError> {
        let st = &self.settings;
        let mut routes = Vec::with_capacity(ids.len());
        // One dry run per candidate: a verdict that leans on another candidate of the
        // batch (the last slot of a shared campaign) would not hold for the batch the
        // local reservation actually takes.
        for id in ids {
            let route = RefCell::new(Route::Local);
            // Behind (`behind.rs`): the dry run reads what the send path has not yet
            // written to its trees, and, aborted, writes nothing, so a fleet's dispatch
            // does not make the send path catch up.
            let result = self.transact_behind(|tx| {
                let draw = draw_of(tx, id, now, st)?;
                let r = reserve_one(tx, id, now, st, &mut Batch::new(0, 1), &mut Vec::new())?;
                *route.borrow_mut() = match (r, draw) {
                    (ReserveResult::Reserved(_), Some(d)) => Route::Fleet(Box::new(d)),
                    _ => Route::Local,
                };
                reject::<()>(0, "", "dry run")
            })?;
            debug_assert!(result.is_err(), "the dry run never commits");
            routes.push(route.into_inner());
        }
        Ok(routes)
    }

    /// Move a queued action on the fleet's word: parked with `reason` (until `until`, or
    /// waiting on its account when `None`), or failed (`park = false`). `false` when the
    /// action was no longer queued.
    pub fn fleet_settle(
        &self,
        id: &str,
        park: bool,
        reason: &str,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self.transact(|tx| {
            let Some(old) = tx.action(id)? else {
                return Ok(false);
            };
            let Some((a, waiting)) = park::settle(&old, park, reason, until, now) else {
                return Ok(false);
            };
            tx.transition(&old, &a, waiting.as_ref().map(waiting_key))?;
            tx.flush_counts()?;
            Ok(true)
        })?;
        let moved = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if moved {
            self.make_durable()?;
        }
        Ok(moved)
    }

    /// Park every ready action of `account` (at most `max`) with reason
    /// `owned_elsewhere`, waiting on the account: `fleet_release_account` brings them
    /// back when this worker owns it.
    pub fn fleet_park_account(
        &self,
        account: &str,
        now: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<ParkedAction>, StoreError> {
        let plan = park::owned_elsewhere(account, OWNED_ELSEWHERE);
        let (parked, _) = self.park_ready(&super::codec::account_prefix(account), &plan, now, max, None)?;
        Ok(parked)
    }

    /// On taking `account` over: adopt the fleet's state of it (one transaction, made
    /// durable before any dispatch). Returns the local state before and after, or
    /// `None` when the account is not in this store.
    pub fn fleet_adopt(
        &self,
        account: &str,
        fleet: &AccountState,
    ) -> Result<Option<(AccountState, AccountState)>, StoreError> {
        let result = self.transact(|tx| {
            let Some(mut a) = tx.account(account)? else {
                return Ok(None);
            };
            let before = state_of(&a);
            adopt_into(&mut a, fleet);
            let after = state_of(&a);
            if after != before {
                tx.put_account(&a)?;
            }
            Ok(Some((before, after)))
        })?;
        let out = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if out.as_ref().is_some_and(|(b, a)| b != a) {
            self.make_durable()?;
        }
        Ok(out)
    }

    /// Queue again the actions parked while `account` was held elsewhere.
    pub fn fleet_release_account(&self, account: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.op("scan waiting")?;
        let any = self.trees()?[super::WAITING]
            .scan_prefix(waiting_prefix(b"a", account))
            .next()
            .is_some();
        if any {
            self.release(b"a", account, now)?;
        }
        Ok(any)
    }
}
