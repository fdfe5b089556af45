//! Fleet mode (SPEC §12), the engine's side. Dispatch does not reserve fleet-bound
//! candidates itself: it asks the store what each would draw (`Store::fleet_routes`, a
//! dry run), hands those to the cluster task as one `Claim`, and goes on. The answer
//! comes back through the inbox (`fleet_notice`): what the fleet claimed is reserved
//! locally (durably) and only then sent; the rest is parked, failed or tried again.
//!
//! At most one claim is out at a time; its accounts count as in flight, so none of them
//! is picked twice. While the cluster is not up (`Notice::Up(false)`) nothing is
//! dispatched and nothing waits to be: `Up(true)` wakes every account with work.

use super::{Engine, Event};
use crate::cluster::{Claim, Notice, Verdict};
use crate::store::{Reservation, ReserveResult, Route, StoreError};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;

/// A claim the fleet could not answer is tried again this much later (virtual time).
const RETRY_S: i64 = 5;

#[derive(Debug, Default)]
pub(super) struct Fleet {
    up: bool,
    owned: BTreeSet<String>,
    elsewhere: BTreeSet<String>,
    /// The claim out now (its action ids), if any.
    pending: Option<Vec<String>>,
    outbox: Option<Claim>,
    /// The accounts last told to the cluster task.
    wanted: Option<BTreeSet<String>>,
}

impl Engine {
    /// Run as one worker of a fleet: nothing is dispatched before the cluster is up and
    /// an account is owned.
    pub fn enable_fleet(&mut self) {
        self.fleet = Some(Fleet::default());
    }

    /// Whether dispatching may go on (always, outside a fleet).
    pub(super) fn fleet_open(&self) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.up && f.pending.is_none())
    }

    /// The fleet's state for `status`: `None` outside a fleet.
    pub fn cluster_status(&self, node: String) -> Option<crate::cluster::ClusterStatus> {
        self.fleet.as_ref().map(|f| crate::cluster::ClusterStatus {
            state: if f.up { "up" } else { "down" }.into(),
            node,
            owned: f.owned.iter().cloned().collect(),
        })
    }

    /// The accounts this worker holds work for, when they changed since last asked.
    pub fn fleet_wanted(&mut self) -> Option<BTreeSet<String>> {
        let all: BTreeSet<String> = self.accounts.keys().cloned().collect();
        let f = self.fleet.as_mut()?;
        if f.wanted.as_ref() == Some(&all) {
            return None;
        }
        f.wanted = Some(all.clone());
        Some(all)
    }

    /// The claim to hand to the cluster task, if one was made.
    pub fn fleet_take_claim(&mut self) -> Option<Claim> {
        self.fleet.as_mut()?.outbox.take()
    }

    /// `account` may send only while this worker owns it; an account held elsewhere
    /// parks its ready actions (`owned_elsewhere`). `true` when it may go on.
    pub(super) fn fleet_may_send(&mut self, account: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(f) = &self.fleet else {
            return Ok(true);
        };
        if f.owned.contains(account) {
            return Ok(true);
        }
        if f.elsewhere.contains(account) {
            let parked = self
                .store
                .fleet_park_account(account, now, crate::store::OWNED_ELSEWHERE_BATCH)?;
            for p in parked {
                self.events.push(Event::ActionParked {
                    action: p.action,
                    account: account.to_string(),
                    campaign: p.campaign,
                    kind: p.kind,
                    counter: crate::store::OWNED_ELSEWHERE.into(),
                    until: None,
                });
            }
        }
        // Not ours (yet): `Notice::Owned` wakes it.
        Ok(false)
    }

    /// Dispatch of a batch in a fleet: local-only results now, a claim for the rest.
    pub(super) fn fleet_dispatch(
        &mut self,
        batch: Vec<String>,
        now: DateTime<Utc>,
        out: &mut Vec<Reservation>,
    ) -> Result<(), StoreError> {
        let routes = self.store.fleet_routes(&batch, now)?;
        let mut local = Vec::new();
        let mut draws = Vec::new();
        for (id, r) in batch.into_iter().zip(routes) {
            match r {
                Route::Fleet(d) => draws.push(*d),
                Route::Local => local.push(id),
            }
        }
        if !local.is_empty() {
            // Each would be refused on its own and none takes a slot, so together
            // they are refused too: nothing here reaches the upstream.
            let (results, changes) = self.store.reserve(&local, now)?;
            self.events.extend(changes.into_iter().map(super::change_event));
            for r in results {
                assert!(
                    !matches!(r, ReserveResult::Reserved(_)),
                    "a reservation without a fleet claim"
                );
                self.on_reserve_result(r, now, out)?;
            }
        }
        if draws.is_empty() {
            return Ok(());
        }
        for d in &draws {
            if let Some(s) = self.accounts.get_mut(&d.account) {
                s.inflight = true;
            }
            self.inflight += 1;
        }
        let Some(f) = self.fleet.as_mut() else {
            return Ok(());
        };
        debug_assert!(f.pending.is_none() && f.outbox.is_none());
        f.pending = Some(draws.iter().map(|d| d.action.clone()).collect());
        f.outbox = Some(Claim { draws });
        Ok(())
    }

    /// The claim could not be handed over: every draw of it is tried again later.
    pub fn fleet_claim_lost(
        &mut self,
        claim: Claim,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reservation>, StoreError> {
        let answer = claim.draws.into_iter().map(|d| (d, Verdict::Retry)).collect();
        self.fleet_notice(Notice::Answer(answer), now)
    }

    /// What the cluster task said. Returns the reservations to send (durable).
    pub fn fleet_notice(&mut self, n: Notice, now: DateTime<Utc>) -> Result<Vec<Reservation>, StoreError> {
        debug_assert!(self.answers.is_none(), "a fleet records every answer at once");
        let mut out = Vec::new();
        let Some(f) = self.fleet.as_mut() else {
            return Ok(out);
        };
        match n {
            Notice::Up(up) => {
                f.up = up;
                if up {
                    for a in self.store.ready_accounts()? {
                        self.schedule_min(&a, now);
                    }
                }
            }
            Notice::Owned(account, state) => {
                // The fleet's state of the account is adopted (durably) before the
                // account counts as owned, so its first dispatch here continues from it.
                if let Some(fleet_state) = state {
                    if let Some((before, after)) = self.store.fleet_adopt(&account, &fleet_state)? {
                        tracing::info!(
                            event = "account_state_adopted",
                            account = %account,
                            inmail_credits_before = before.credits,
                            inmail_credits = after.credits,
                            ramp_ceiling_before = before.ramp_ceiling,
                            ramp_ceiling = after.ramp_ceiling,
                            health = ?after.health,
                        );
                    }
                }
                let Some(f) = self.fleet.as_mut() else {
                    return Ok(out);
                };
                f.elsewhere.remove(&account);
                f.owned.insert(account.clone());
                self.store.fleet_release_account(&account, now)?;
                self.schedule_min(&account, now);
            }
            Notice::Elsewhere { account, owner } => {
                f.owned.remove(&account);
                if owner.is_some() {
                    f.elsewhere.insert(account.clone());
                }
                self.schedule_min(&account, now);
            }
            Notice::Answer(answer) => {
                f.pending = None;
                let mut claimed = Vec::new();
                for (d, v) in answer {
                    self.inflight = self.inflight.saturating_sub(1);
                    if let Some(s) = self.accounts.get_mut(&d.account) {
                        s.inflight = false;
                    }
                    match v {
                        Verdict::Claimed => claimed.push(d.action),
                        Verdict::Blocked { blocker, until } => {
                            let reason = blocker.name();
                            if self
                                .store
                                .fleet_settle(&d.action, true, &reason, Some(until), now)?
                            {
                                self.on_reserve_result(
                                    ReserveResult::Parked {
                                        action: d.action,
                                        account: d.account,
                                        campaign: d.campaign,
                                        kind: d.kind,
                                        blocker: reason,
                                        blocked: Some(blocker),
                                        until: Some(until),
                                    },
                                    now,
                                    &mut out,
                                )?;
                            } else {
                                self.schedule_min(&d.account, now);
                            }
                        }
                        Verdict::Duplicate => {
                            let reason = crate::store::DUPLICATE_IN_FLEET;
                            if self.store.fleet_settle(&d.action, false, reason, None, now)? {
                                self.events.push(Event::ActionFailed {
                                    action: d.action,
                                    account: d.account.clone(),
                                    campaign: d.campaign,
                                    kind: d.kind,
                                    reason: reason.into(),
                                });
                            }
                            self.schedule_min(&d.account, now);
                        }
                        Verdict::NotOwned => {
                            if let Some(f) = self.fleet.as_mut() {
                                f.owned.remove(&d.account);
                            }
                            self.schedule_min(&d.account, now);
                        }
                        Verdict::Retry => {
                            self.schedule_min(&d.account, now + Duration::seconds(RETRY_S));
                        }
                    }
                }
                if !claimed.is_empty() {
                    // The fleet holds the slots; now the local reservation, durable
                    // before anything is sent. One refused here only wastes its slot.
                    let (results, changes) = self.store.reserve(&claimed, now)?;
                    self.events.extend(changes.into_iter().map(super::change_event));
                    for r in results {
                        self.on_reserve_result(r, now, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }
}
