//! PURE: the business rules the store applies. Each function decides from plain values
//! read beforehand (an action, an account, day counters, a campaign, operator holds,
//! health signals, the settings) and `now`, and returns what should change; the store
//! reads those inputs inside its transaction, calls the rule and writes the effects.
//!
//! - `outcome`  — SPEC §5 as a table of effects: what an upstream answer does to the
//!   action, the account, the day counters, the links, the reservation's slots.
//! - `reserve`  — a reservation: skip, park (why, until when) or admit (the new
//!   counters and the ledger entry) (SPEC §3, §4).
//! - `maintain` — refills, a zone change coming into force, once per local day the
//!   health assessment and the ramp step (SPEC §3.3–§3.5).
//! - `park`     — where a blocked action waits, which of a backlog park with it, an
//!   action moved on a fleet's verdict, promoted when its time comes or released when
//!   the owner it waits on is active again.
//! - `records`  — the job-file records (SPEC §6): what an account or campaign upsert
//!   keeps, which account an action goes to (named, sticky, picked), the new action.
//! - `event`    — what each event of a job file or the feed does, and what the log
//!   says it did or why it changed nothing (SPEC §6, §9).
//! - `moves`    — cancel and requeue, for the events and the operator alike (§5, §8).
//! - `status`   — why an action waits, why due work is not sent now, the next send (§8).
//! - `audit`    — the ledger recounted: overshoots, overlapping days, releases with
//!   nothing to give back, the totals (§8 `audit`, P1).
//!
//! Must never: touch sled or any IO, read the clock, or know how a record is keyed.
//! Enforced by `tests/policy_purity.rs`. Table tests: `rules::tests` (no store).
//!
//! Why here and not in `crates/policy`: these rules decide on the store's records
//! (`Account`, `Action`, `LedgerEntry`) and the `Settings`; the policy crate stays the
//! layer below them (caps, ramp, health, credits, windows), free of any record type.

pub mod audit;
pub mod event;
pub mod maintain;
pub mod moves;
pub mod outcome;
pub mod park;
pub mod records;
pub mod reserve;
pub mod status;

#[cfg(test)]
mod tests;

use crate::policy::Health;
use chrono::{DateTime, Utc};

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

/// What a parked action without an until waits on: an event about its account
/// (`account_resumed`, the fleet handing the account over) or its campaign's resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitOn {
    Account(String),
    Campaign(String),
}

/// Inputs that contradict each other: the store is damaged (a reservation that names
/// another attempt, counters that hold no slot to give back). Never a business result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconsistent(pub String);
