//! The engine's side of the upstream circuit breaker (SPEC §5 "Upstream down"). The
//! decisions are `policy::breaker`'s; here they meet the wake queue, probes, pacing and
//! events. While the breaker is open nothing is reserved but one probe at a time, so
//! waiting actions keep their state and attempt counts.

use super::{Engine, Event, MAX_RESERVATIONS_PER_TICK};
use crate::contract::Outcome;
use crate::policy::breaker::{BreakerConfig, Permit, Signal, Transition};
use crate::policy::pacing::next_gap_s;
use crate::store::{Reservation, StoreError, UpstreamStatus};
use chrono::{DateTime, Duration, Utc};

/// Mixed into the engine's seed for the breaker's own random source.
pub(super) const RNG_SALT: u64 = 0xB4EA_4E42_0000_0005;

pub(super) fn breaker_config(cfg: &super::EngineConfig) -> BreakerConfig {
    BreakerConfig {
        failures: cfg.breaker_failures.max(1),
        max_s: cfg.breaker_max_s.max(1),
    }
}

/// What an answer says about the service: anything the service answered itself (sent,
/// 409, 429, any 4xx) proves it up; not delivered and maybe delivered do not.
pub fn signal(o: &Outcome) -> Signal {
    match o {
        Outcome::NotDelivered { .. } | Outcome::MaybeDelivered { .. } => Signal::Down,
        Outcome::Sent
        | Outcome::RateLimited { .. }
        | Outcome::OutOfNetwork
        | Outcome::Restricted
        | Outcome::NoCredits
        | Outcome::Invalid { .. } => Signal::Up,
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::NotDelivered { reason } | Outcome::MaybeDelivered { reason } => {
            format!("{}: {reason}", o.name())
        }
        other => other.name().to_string(),
    }
}

impl Engine {
    /// The breaker as `status` shows it (SPEC §8 `upstream`).
    pub fn upstream_status(&self) -> UpstreamStatus {
        UpstreamStatus {
            state: if self.breaker.is_open() { "down" } else { "up" }.to_string(),
            since: self.breaker.since(),
        }
    }

    /// A reloaded `upstream.breaker_*`.
    pub fn set_breaker(&mut self, failures: u32, max_s: u64) {
        self.cfg.breaker_failures = failures;
        self.cfg.breaker_max_s = max_s;
        self.breaker.set_config(breaker_config(&self.cfg));
    }

    /// The in-flight bound: the configured one, lowered by the breaker while a run of
    /// failures is under way.
    pub(super) fn max_inflight(&self, breaker: Option<usize>) -> usize {
        breaker.map_or(self.cfg.max_inflight, |n| n.min(self.cfg.max_inflight))
    }

    /// When an account due at `t` may be served: not before the next probe while the
    /// breaker is open, and not at all (`None`) until an answer arrives while a probe
    /// is in flight or the in-flight bound is reached.
    pub(super) fn wake_gate(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.breaker.permit(t) {
            Permit::Dispatch { max_inflight } => {
                (self.inflight < self.max_inflight(max_inflight)).then_some(t)
            }
            Permit::Probe => Some(t),
            Permit::Wait(at) => at.map(|at| at.max(t)),
        }
    }

    /// The breaker is open and a probe is due: reserve the first due action that may
    /// go, and only that one.
    pub(super) fn dispatch_probe(&mut self, now: DateTime<Utc>) -> Result<Vec<Reservation>, StoreError> {
        debug_assert!(
            self.answers.is_none(),
            "no answer is held while the breaker is open"
        );
        let mut out = Vec::new();
        for _ in 0..MAX_RESERVATIONS_PER_TICK {
            let Some((t, account)) = self.wake.first().cloned() else {
                return Ok(out);
            };
            if t > now {
                return Ok(out);
            }
            self.wake.remove(&(t, account.clone()));
            let Some(id) = self.candidate(&account, now)? else {
                continue;
            };
            let (results, changes) = self.store.reserve(&[id], now)?;
            self.events.extend(changes.into_iter().map(super::change_event));
            for r in results {
                self.on_reserve_result(r, now, &mut out)?;
            }
            if let Some(res) = out.first() {
                debug_assert!(self.probes.is_empty() && out.len() == 1);
                self.probes.insert(res.request.id.clone());
                self.probes_sent += 1;
                self.breaker.probe_sent();
                return Ok(out);
            }
        }
        self.more = true;
        Ok(out)
    }

    /// Feed the answers to the breaker and log what it did.
    pub(super) fn on_answers(&mut self, done: &[(Reservation, Outcome)], now: DateTime<Utc>) {
        for (res, outcome) in done {
            let probe = self.probes.remove(&res.request.id);
            match self
                .breaker
                .answer(signal(outcome), probe, now, &mut self.breaker_rng)
            {
                Some(Transition::Opened { failures }) => {
                    self.probes_sent = 0;
                    self.events.push(Event::UpstreamDown {
                        since: now,
                        failures,
                        reason: describe(outcome),
                    });
                }
                Some(Transition::Closed { down_since, down_s }) => {
                    self.events.push(Event::UpstreamUp {
                        down_since,
                        down_s,
                        probes: self.probes_sent,
                    });
                    self.probes_sent = 0;
                    self.resume_paced(now);
                }
                None => {}
            }
        }
    }

    /// After an outage every account waits one ordinary pacing gap before it sends
    /// again, as if it had just sent: the recovered service sees the usual trickle,
    /// not every account at once.
    fn resume_paced(&mut self, now: DateTime<Utc>) {
        let (lo, hi) = (self.cfg.min_gap_s, self.cfg.max_gap_s);
        for s in self.accounts.values_mut() {
            let gap = next_gap_s(lo, hi, &mut self.rng);
            s.next_ok = s.next_ok.max(now + Duration::seconds(gap as i64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_classified() {
        let r = || "x".to_string();
        let check = |o: Outcome, s: Signal| assert_eq!(signal(&o), s, "{o:?}");
        check(Outcome::Sent, Signal::Up);
        check(Outcome::RateLimited { retry_after_s: None }, Signal::Up);
        check(Outcome::OutOfNetwork, Signal::Up);
        check(Outcome::Restricted, Signal::Up);
        check(Outcome::NoCredits, Signal::Up);
        check(Outcome::Invalid { reason: r() }, Signal::Up);
        check(Outcome::NotDelivered { reason: r() }, Signal::Down);
        check(Outcome::MaybeDelivered { reason: r() }, Signal::Down);
    }
}
