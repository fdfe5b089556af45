//! Metrics and the local dashboard (SPEC §11): `GET /metrics` in the Prometheus text
//! format and `GET /`, one self-contained page, served with `metrics.listen` set.
//!
//! The engine thread owns a [`Publisher`]: it counts each upstream answer and, where
//! the status file is written (and, rate-limited, after answers arrive), builds a
//! [`Snapshot`] from the store and swaps it into a `tokio::sync::watch` channel. The
//! HTTP handlers (`server`) only clone the latest `Arc<Snapshot>` and render it: a
//! request never reads the store, never waits for the engine and changes nothing, and
//! the engine never waits for a client.

pub mod dashboard;
pub mod exposition;
pub mod server;

use crate::chart::Day;
use crate::contract::Outcome;
use crate::policy::Kind;
use crate::store::timing::{DurableHistogram, DurableTimes};
use crate::store::{Reservation, StatusReport, Store, StoreError};
use chrono::Duration as Days;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Days of history in each account's chart, today included.
pub const CHART_DAYS: i64 = 14;
/// Accounts charted and shown on the dashboard (all of them are in `/metrics`): the
/// page and the work of each snapshot stay bounded however many accounts there are.
pub const MAX_DASHBOARD_ACCOUNTS: usize = 100;
/// Campaigns shown on the dashboard (all of them are in `/metrics`).
pub const MAX_DASHBOARD_CAMPAIGNS: usize = 100;
/// After upstream answers, a new snapshot follows no sooner than this after the last…
pub const MIN_PUBLISH_GAP: Duration = Duration::from_secs(1);
/// …and no sooner than this many times the last snapshot's cost, so building
/// snapshots takes at most 1/20 of the engine thread.
pub const PUBLISH_COST_FACTOR: u32 = 20;

/// Every outcome `Outcome::name` gives, for `sendgate_outcomes_total` (all present,
/// zero until seen, so an alert on a rate sees the series from the start).
pub const OUTCOMES: [&str; 8] = [
    "sent",
    "rate_limited",
    "out_of_network",
    "restricted",
    "no_credits",
    "invalid",
    "not_delivered",
    "maybe_delivered",
];

/// The health states, for `sendgate_account_health` (1 for the current one).
pub const HEALTH_STATES: [&str; 4] = ["healthy", "watch", "at_risk", "restricted"];

/// What the handlers render: plain data, copied out of the engine thread.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub report: StatusReport,
    /// The last `CHART_DAYS` local days of the first `MAX_DASHBOARD_ACCOUNTS` accounts.
    pub history: BTreeMap<String, Vec<Day>>,
    /// Upstream answers `sent` per account and kind since the worker started.
    pub sent: BTreeMap<(String, Kind), u64>,
    /// Upstream answers per outcome since the worker started.
    pub outcomes: BTreeMap<&'static str, u64>,
    pub durable: DurableHistogram,
}

/// The latest snapshot; `None` until the worker published its first.
pub type Latest = watch::Receiver<Option<Arc<Snapshot>>>;

/// The engine thread's side: counts answers and publishes snapshots.
pub struct Publisher {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    sent: BTreeMap<(String, Kind), u64>,
    outcomes: BTreeMap<&'static str, u64>,
    durable: Arc<DurableTimes>,
    /// Answers arrived since the last snapshot.
    dirty: Cell<bool>,
    last: Cell<Option<Instant>>,
    cost: Cell<Duration>,
}

impl Publisher {
    pub fn new(durable: Arc<DurableTimes>) -> (Publisher, Latest) {
        let (tx, rx) = watch::channel(None);
        let p = Publisher {
            tx,
            sent: BTreeMap::new(),
            outcomes: OUTCOMES.iter().map(|&o| (o, 0)).collect(),
            durable,
            dirty: Cell::new(false),
            last: Cell::new(None),
            cost: Cell::new(Duration::ZERO),
        };
        (p, rx)
    }

    /// One upstream answer.
    pub fn count(&mut self, res: &Reservation, outcome: &Outcome) {
        let name = outcome.name();
        debug_assert!(OUTCOMES.contains(&name), "{name} missing from OUTCOMES");
        *self.outcomes.entry(name).or_default() += 1;
        if matches!(outcome, Outcome::Sent) {
            *self
                .sent
                .entry((res.request.account.clone(), res.request.kind))
                .or_default() += 1;
        }
        self.dirty.set(true);
    }

    /// When the answers counted since the last snapshot may be published (`None`:
    /// nothing new to publish).
    pub fn due_at(&self) -> Option<Instant> {
        if !self.dirty.get() {
            return None;
        }
        let gap = MIN_PUBLISH_GAP.max(self.cost.get() * PUBLISH_COST_FACTOR);
        Some(self.last.get().map_or_else(Instant::now, |t| t + gap))
    }

    /// Build a snapshot around `report` (the status of `store` at `report.now`) and
    /// make it the one the handlers see.
    pub fn publish(&self, report: StatusReport, store: &Store) -> Result<(), StoreError> {
        let started = Instant::now();
        let history = history(&report, store)?;
        let snapshot = Snapshot {
            history,
            sent: self.sent.clone(),
            outcomes: self.outcomes.clone(),
            durable: self.durable.histogram(),
            report,
        };
        // Readers only ever hold the lock to clone an `Arc`.
        self.tx.send_replace(Some(Arc::new(snapshot)));
        self.dirty.set(false);
        self.last.set(Some(Instant::now()));
        self.cost.set(started.elapsed());
        Ok(())
    }
}

/// Per account shown on the dashboard, its last `CHART_DAYS` local days: invites
/// reserved, sends of every kind confirmed, the invite cap and the ramp ceiling.
fn history(report: &StatusReport, store: &Store) -> Result<BTreeMap<String, Vec<Day>>, StoreError> {
    let policy = &store.settings.policy;
    let mut out = BTreeMap::new();
    for status in report.accounts.iter().take(MAX_DASHBOARD_ACCOUNTS) {
        let Some(a) = store.account(&status.id)? else {
            continue;
        };
        let mut days = Vec::with_capacity(CHART_DAYS as usize);
        for ago in (0..CHART_DAYS).rev() {
            let day = status.local_day - Days::days(ago);
            let rec = store.account_day(&a.id, day)?;
            days.push(Day {
                day,
                invites: rec.reserved.invites,
                sends: rec.sent(),
                cap: a.invite_cap(policy, day),
                ramp: a.ramp_ceiling_on(day),
            });
        }
        out.insert(a.id, days);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_a_series() {
        for o in [
            Outcome::Sent,
            Outcome::RateLimited { retry_after_s: None },
            Outcome::OutOfNetwork,
            Outcome::Restricted,
            Outcome::NoCredits,
            Outcome::Invalid { reason: "x".into() },
            Outcome::NotDelivered { reason: "x".into() },
            Outcome::MaybeDelivered { reason: "x".into() },
        ] {
            assert!(OUTCOMES.contains(&o.name()), "{}", o.name());
        }
        for h in [
            crate::policy::Health::Healthy,
            crate::policy::Health::Watch,
            crate::policy::Health::AtRisk,
            crate::policy::Health::Restricted,
        ] {
            assert!(HEALTH_STATES.contains(&h.as_str()));
        }
    }

    #[test]
    fn publishing_is_rate_limited_only_after_answers() {
        let (p, rx) = Publisher::new(Arc::default());
        assert!(p.due_at().is_none(), "nothing counted, nothing due");
        assert!(rx.borrow().is_none());
        p.dirty.set(true);
        assert!(p.due_at().is_some_and(|t| t <= Instant::now()));
        p.last.set(Some(Instant::now()));
        p.cost.set(Duration::from_millis(200));
        let due = p.due_at().expect("due");
        // 20 × 200 ms beats the 1 s floor.
        assert!(due >= Instant::now() + Duration::from_millis(3900));
    }
}
