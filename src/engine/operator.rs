//! The engine's side of operator control: after a pause, resume, cancel or requeue
//! (applied to the store by `admin::ops`), look at the accounts again.

use super::Engine;
use chrono::{DateTime, Utc};

impl Engine {
    /// An operator changed holds or actions: wake every account with due work (a
    /// paused one is dropped again at its turn in `candidate`).
    pub fn operator_changed(&mut self, now: DateTime<Utc>) -> Result<(), crate::store::StoreError> {
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
