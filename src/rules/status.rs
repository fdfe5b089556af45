//! What `status` says of an account's work (SPEC §8), PURE: why a waiting action waits,
//! why due actions are not sent right now, and when the account will next send.

use crate::store::codec::from_ms;
use crate::store::records::{Account, Action, State};
use chrono::{DateTime, Duration, Utc};

/// Where a queued or parked action stands in `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Queued and due: it waits only for its account ([`ready_reason`]).
    Ready,
    /// Waiting, for this reason (`not_before`, `retry`, a parking reason, `parked`),
    /// until its until if it has one.
    Waiting(String),
}

/// How `status` counts `a`; `None` for an action that neither waits nor is due (in
/// flight or finished).
pub fn standing(a: &Action) -> Option<Standing> {
    if !matches!(a.state, State::Queued | State::Parked) {
        return None;
    }
    let reason = match (a.state, a.until_ms, a.reason.as_deref()) {
        (State::Queued, None, _) => return Some(Standing::Ready),
        (State::Queued, Some(_), None) => "not_before",
        (State::Queued, Some(_), Some(_)) => "retry",
        (_, _, Some(why)) => why,
        (_, _, None) => "parked",
    };
    Some(Standing::Waiting(reason.to_string()))
}

/// When account `a` will next send: the earliest moment it has due work, is not held,
/// its pacing gap (at least `min_gap_s` after the last reservation) has passed and its
/// window is open. `None`: paused, restricted, or no work that will come due by itself.
pub fn next_send(
    a: &Account,
    now: DateTime<Utc>,
    held_by_operator: bool,
    has_ready: bool,
    earliest_until: Option<DateTime<Utc>>,
    min_gap_s: u64,
) -> Option<DateTime<Utc>> {
    if held_by_operator || a.restricted {
        return None;
    }
    let work = if has_ready { Some(now) } else { earliest_until }?;
    let mut t = work.max(now);
    if let Some(h) = a.held_until_ms.map(from_ms) {
        t = t.max(h);
    }
    if let Some(last) = a.last_reserved_ms.map(from_ms) {
        t = t.max(last + Duration::seconds(i64::try_from(min_gap_s).unwrap_or(i64::MAX / 1000)));
    }
    let zones = a.zones();
    if zones.is_open(&a.window, t) {
        Some(t)
    } else {
        zones.next_open(&a.window, t)
    }
}

/// Why due (queued, ready) actions of `a` are not sent right now, and until when
/// (`next`: [`next_send`]).
pub fn ready_reason(
    a: &Account,
    now: DateTime<Utc>,
    held_by_operator: bool,
    next: Option<DateTime<Utc>>,
) -> (&'static str, Option<DateTime<Utc>>) {
    if held_by_operator {
        ("paused", None)
    } else if a.restricted {
        ("account_restricted", None)
    } else if a.held(now) {
        ("held", a.held_until_ms.map(from_ms))
    } else if !a.zones().is_open(&a.window, now) {
        ("window", next)
    } else {
        ("due", next)
    }
}
