//! Cancel and requeue (SPEC §5, §6, §8), PURE: one rule for the job-file events
//! `cancel_action` / `requeue_action` and the operator's bulk `cancel` / `requeue`:
//! which states move, why one does not, and the action after the move.

use crate::store::codec::ms;
use crate::store::records::{Action, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The reason of a cancelled action.
pub const CANCELLED: &str = "cancelled";

/// A move: cancel (from queued or parked) or requeue (from failed or unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Move {
    Cancel,
    Requeue,
}

impl Move {
    pub fn movable(self, s: State) -> bool {
        match self {
            Move::Cancel => matches!(s, State::Queued | State::Parked),
            Move::Requeue => matches!(s, State::Failed | State::Unknown),
        }
    }

    /// Why an action in state `s` does not move (the `event_ignored` reason).
    pub fn refusal(self, s: State) -> String {
        match self {
            Move::Cancel => format!("cannot cancel an action that is {}", s.as_str()),
            Move::Requeue => format!("cannot requeue an action that is {}", s.as_str()),
        }
    }

    /// The action after the move: out of any wait; a requeued one starts its retries
    /// again (`upstream.max_attempts` counts from here).
    pub fn apply(self, old: &Action, now: DateTime<Utc>) -> Action {
        debug_assert!(self.movable(old.state), "only a movable action is moved");
        let mut a = old.clone();
        a.until_ms = None;
        a.updated_ms = ms(now);
        match self {
            Move::Cancel => {
                a.state = State::Cancelled;
                a.reason = Some(CANCELLED.into());
            }
            Move::Requeue => {
                a.state = State::Queued;
                a.reason = None;
                a.retries = 0;
            }
        }
        a
    }

    /// The action after the move, or why it does not move.
    pub fn verdict(self, old: &Action, now: DateTime<Utc>) -> Result<Action, String> {
        if self.movable(old.state) {
            Ok(self.apply(old, now))
        } else {
            Err(self.refusal(old.state))
        }
    }
}
