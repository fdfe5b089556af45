//! What the engine reports: one variant per stable log event of SPEC §11 (plus
//! `action_retry`, a not-delivered attempt queued again after its backoff). Ids only:
//! never a payload or a proxy.

use crate::policy::{Health, Kind};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    FileApplied {
        file: String,
        accounts: u32,
        campaigns: u32,
        actions: u32,
        duplicates: u32,
        events: u32,
    },
    FileRejected {
        file: String,
        line: usize,
        field: String,
        reason: String,
    },
    /// A big file being applied: records done so far, of `total` (SPEC §6).
    FileProgress {
        file: String,
        done: usize,
        total: usize,
    },
    ActionReserved {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        attempt: u32,
    },
    ActionSent {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
    },
    ActionParked {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        counter: String,
        until: Option<DateTime<Utc>>,
    },
    ActionRetry {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        reason: String,
        until: Option<DateTime<Utc>>,
    },
    ActionFailed {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        reason: String,
    },
    ActionUnknown {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        reason: String,
    },
    CapExhausted {
        account: String,
        campaign: String,
        counter: String,
        day: NaiveDate,
    },
    RateLimited {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
    },
    AccountHeld {
        account: String,
        until: DateTime<Utc>,
    },
    RampChanged {
        account: String,
        old: u32,
        new: u32,
        reason: String,
    },
    HealthChanged {
        account: String,
        old: Health,
        new: Health,
        reason: String,
        /// Acceptance and its sample, rate limits in 7 days, restriction.
        health_reason: String,
    },
    /// No `invite_accepted` has ever reached the worker: acceptance is unknown and the
    /// ramp holds (SPEC §3.4). Logged once per UTC day.
    FeedbackMissing {
        /// Accounts (not restricted) whose acceptance waits on feedback.
        accounts: u32,
    },
    /// One poll of the upstream's event feed (SPEC §9): logged for every page that held
    /// events, and for every poll that applied nothing (with the reason and the retry).
    EventsPolled {
        events: u32,
        applied: u32,
        duplicates: u32,
        ignored: u32,
        error: Option<String>,
        retry_at: Option<DateTime<Utc>>,
    },
    RedZone {
        account: Option<String>,
        counter: String,
        value: u32,
    },
    CreditsRefilled {
        account: String,
        old: u32,
        new: u32,
    },
    /// The circuit breaker opened (SPEC §5 "Upstream down"): dispatching stops but for
    /// one probe at a time.
    UpstreamDown {
        since: DateTime<Utc>,
        /// The consecutive failed answers that opened it.
        failures: u32,
        /// The last of them.
        reason: String,
    },
    /// An answer proved the service up again: the breaker closed.
    UpstreamUp {
        down_since: DateTime<Utc>,
        down_s: i64,
        /// Probes sent while it was down.
        probes: u32,
    },
    /// An operator hold was set (SPEC §8 `pause`); `scope` is `all`, `account ID` or
    /// `campaign ID`; `changed` is false when it was already in force.
    Paused {
        scope: String,
        changed: bool,
    },
    Resumed {
        scope: String,
        changed: bool,
    },
    /// An action cancelled, `by` the operator or a job file.
    ActionCancelled {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        by: String,
    },
    ActionRequeued {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        by: String,
    },
    /// A job-file event record applied (SPEC §6): logged under the record's own kind
    /// (`campaign_paused`, `tier_changed`, `invite_accepted`, ...) with what it did.
    RecordApplied {
        kind: &'static str,
        file: String,
        line: usize,
        account: Option<String>,
        campaign: Option<String>,
        action: Option<String>,
        effect: String,
    },
    /// A job-file event or an operator request that changed nothing, and why (SPEC §6).
    EventIgnored {
        /// The job file, or `operator`.
        source: String,
        line: Option<usize>,
        /// The event kind (`cancel_action`, ...).
        kind: String,
        action: Option<String>,
        reason: String,
    },
    DaySummary {
        account: String,
        day: NaiveDate,
        /// Sends per kind, in `Kind::ALL` order.
        sent: [u32; 6],
        invites_reserved: u32,
        invite_cap: u32,
        ramp_ceiling: u32,
        health: Health,
        invites_accepted: u32,
        rate_limits: u32,
        inmail_balance: u32,
    },
}

impl Event {
    /// The stable event name (SPEC §11).
    pub fn name(&self) -> &'static str {
        match self {
            Event::FileApplied { .. } => "file_applied",
            Event::FileRejected { .. } => "file_rejected",
            Event::FileProgress { .. } => "file_progress",
            Event::ActionReserved { .. } => "action_reserved",
            Event::ActionSent { .. } => "action_sent",
            Event::ActionParked { .. } => "action_parked",
            Event::ActionRetry { .. } => "action_retry",
            Event::ActionFailed { .. } => "action_failed",
            Event::ActionUnknown { .. } => "action_unknown",
            Event::CapExhausted { .. } => "cap_exhausted",
            Event::RateLimited { .. } => "rate_limited",
            Event::AccountHeld { .. } => "account_held",
            Event::RampChanged { .. } => "ramp_changed",
            Event::HealthChanged { .. } => "health_changed",
            Event::FeedbackMissing { .. } => "feedback_missing",
            Event::EventsPolled { .. } => "events_polled",
            Event::RedZone { .. } => "red_zone",
            Event::CreditsRefilled { .. } => "credits_refilled",
            Event::DaySummary { .. } => "day_summary",
            Event::UpstreamDown { .. } => "upstream_down",
            Event::UpstreamUp { .. } => "upstream_up",
            Event::Paused { .. } => "paused",
            Event::Resumed { .. } => "resumed",
            Event::ActionCancelled { .. } => "action_cancelled",
            Event::ActionRequeued { .. } => "action_requeued",
            Event::EventIgnored { .. } => "event_ignored",
            Event::RecordApplied { kind, .. } => kind,
        }
    }
}
