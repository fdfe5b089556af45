//! The engine's side of operator control: after a pause, resume, cancel or requeue
//! (applied to the store by `admin::ops`), look at the accounts again.

use super::Engine;
use chrono::{DateTime, Utc};

impl Engine {
    /// An operator changed holds or actions: wake every account with due work (a
    /// paused one is dropped again at its turn in `candidate`).
    pub fn operator_changed(&mut self, now: DateTime<Utc>) -> Result<(), crate::store::StoreError> {
        self.settle_answers()?;
        self.sync_accounts(now)
    }

    /// Forget every planned wake-up (the kill switch is on): the engine sleeps until
    /// something else wakes it.
    pub(super) fn sleep_all(&mut self) {
        for (_, account) in std::mem::take(&mut self.wake) {
            if let Some(s) = self.accounts.get_mut(&account) {
                s.wake_at = None;
            }
        }
    }
}

/// The log event of one job-file event record (SPEC §6): `action_cancelled`,
/// `action_requeued`, the record's own kind, or `event_ignored` with the reason.
pub(super) fn effect_event(file: &str, e: &crate::store::EventEffect) -> super::Event {
    use super::Event;
    let by = || format!("{file}:{}", e.line);
    match (&e.result, e.kind, e.action_kind) {
        (Err(reason), kind, _) => Event::EventIgnored {
            source: file.to_string(),
            line: Some(e.line),
            kind: kind.to_string(),
            action: e.action.clone(),
            reason: reason.clone(),
        },
        (Ok(_), "cancel_action", Some(kind)) => Event::ActionCancelled {
            action: e.action.clone().unwrap_or_default(),
            account: e.account.clone().unwrap_or_default(),
            campaign: e.campaign.clone().unwrap_or_default(),
            kind,
            by: by(),
        },
        (Ok(_), "requeue_action", Some(kind)) => Event::ActionRequeued {
            action: e.action.clone().unwrap_or_default(),
            account: e.account.clone().unwrap_or_default(),
            campaign: e.campaign.clone().unwrap_or_default(),
            kind,
            by: by(),
        },
        (Ok(effect), kind, _) => Event::RecordApplied {
            kind,
            file: file.to_string(),
            line: e.line,
            account: e.account.clone(),
            campaign: e.campaign.clone(),
            action: e.action.clone(),
            effect: effect.clone(),
        },
    }
}
