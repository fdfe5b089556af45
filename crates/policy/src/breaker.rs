//! The upstream circuit breaker (SPEC §5 "Upstream down"), as a pure state machine fed
//! with classified answers and `now`: it says whether the engine may dispatch, may send
//! one probe, or must wait. Randomness (probe jitter) comes from an injected [`Rng`].
//!
//! - **Closed**: every attempt may go. A run of `failures` consecutive answers that were
//!   not delivered or may have been delivered (across all accounts) opens it. While such
//!   a run is under way, attempts in flight count as failures to come, so the run can not
//!   overshoot `failures` by much when many sends are in flight.
//! - **Open**: nothing is dispatched except one probe at a time; probes back off from
//!   `PROBE_BASE_S` doubling up to `max_s`, each wait drawn in `[3/4 · d, d]`.
//! - Any answer that proves the service is up closes it.

use super::pacing::Rng;
use chrono::{DateTime, Duration, Utc};

/// The first wait before a probe, doubled after each probe that fails.
pub const PROBE_BASE_S: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed answers that open the breaker (`upstream.breaker_failures`).
    pub failures: u32,
    /// The longest wait between two probes (`upstream.breaker_max_s`).
    pub max_s: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            max_s: 300,
        }
    }
}

/// What an answer says about the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// It answered (sent, 409, 429, any 4xx): the service is up.
    Up,
    /// Not delivered, or may have been delivered (5xx, timeout, reset).
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed {
        streak: u32,
    },
    Open {
        /// Probes that failed so far (the backoff step).
        step: u32,
        probe_at: DateTime<Utc>,
        probing: bool,
    },
}

/// What the engine may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Closed: dispatch while fewer than `max_inflight` attempts are in flight
    /// (`None`: the breaker sets no bound).
    Dispatch { max_inflight: Option<usize> },
    /// Open and a probe is due: dispatch exactly one attempt, as a probe.
    Probe,
    /// Open: nothing before `Some(t)`, or until the probe in flight answers (`None`).
    Wait(Option<DateTime<Utc>>),
}

/// A change of state, to be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened { failures: u32 },
    Closed { down_since: DateTime<Utc>, down_s: i64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Breaker {
    cfg: BreakerConfig,
    phase: Phase,
    /// When the current state began (`None`: closed since the start).
    since: Option<DateTime<Utc>>,
}

/// The wait before the probe after `step` failed probes: `PROBE_BASE_S · 2^step`, capped
/// at `max_s`, drawn in `[3/4 · d, d]` so that workers restarted together drift apart.
pub fn probe_wait_s(step: u32, max_s: u64, rng: &mut impl Rng) -> u64 {
    let d = PROBE_BASE_S
        .saturating_mul(1u64 << step.min(30))
        .min(max_s.max(1));
    rng.between(d - d / 4, d)
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        debug_assert!(cfg.failures >= 1);
        Breaker {
            cfg,
            phase: Phase::Closed { streak: 0 },
            since: None,
        }
    }

    /// A reloaded configuration applies from the next answer on.
    pub fn set_config(&mut self, cfg: BreakerConfig) {
        self.cfg = cfg;
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// When the current state (up or down) began; `None` if up since the start.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since
    }

    pub fn permit(&self, now: DateTime<Utc>) -> Permit {
        match self.phase {
            Phase::Closed { streak: 0 } => Permit::Dispatch { max_inflight: None },
            Phase::Closed { streak } => {
                let left = self.cfg.failures.saturating_sub(streak) as usize;
                Permit::Dispatch {
                    max_inflight: Some(left),
                }
            }
            Phase::Open { probing: true, .. } => Permit::Wait(None),
            Phase::Open { probe_at, .. } if probe_at > now => Permit::Wait(Some(probe_at)),
            Phase::Open { .. } => Permit::Probe,
        }
    }

    /// A probe was dispatched (after `permit` said `Probe`).
    pub fn probe_sent(&mut self) {
        debug_assert!(matches!(self.phase, Phase::Open { probing: false, .. }));
        if let Phase::Open { probing, .. } = &mut self.phase {
            *probing = true;
        }
    }

    /// Feed one answer. `probe`: it answers the probe in flight.
    pub fn answer(
        &mut self,
        signal: Signal,
        probe: bool,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Option<Transition> {
        match (self.phase, signal) {
            (Phase::Closed { .. }, Signal::Up) => {
                self.phase = Phase::Closed { streak: 0 };
                None
            }
            (Phase::Closed { streak }, Signal::Down) => {
                let streak = streak + 1;
                if streak < self.cfg.failures {
                    self.phase = Phase::Closed { streak };
                    return None;
                }
                self.phase = Phase::Open {
                    step: 0,
                    probe_at: now + secs(probe_wait_s(0, self.cfg.max_s, rng)),
                    probing: false,
                };
                self.since = Some(now);
                Some(Transition::Opened { failures: streak })
            }
            (Phase::Open { .. }, Signal::Up) => {
                let down_since = self.since.unwrap_or(now);
                self.phase = Phase::Closed { streak: 0 };
                self.since = Some(now);
                Some(Transition::Closed {
                    down_since,
                    down_s: (now - down_since).num_seconds().max(0),
                })
            }
            (Phase::Open { step, probing, .. }, Signal::Down) => {
                if probe {
                    debug_assert!(probing, "a probe answered while none was in flight");
                    let step = step + 1;
                    self.phase = Phase::Open {
                        step,
                        probe_at: now + secs(probe_wait_s(step, self.cfg.max_s, rng)),
                        probing: false,
                    };
                }
                // An attempt sent before the breaker opened changes nothing.
                None
            }
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::seconds(s.min(i64::MAX as u64 / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::SplitMix64;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T09:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    #[test]
    fn opens_after_the_configured_run_of_failures_only() {
        let mut b = Breaker::new(cfg());
        let mut rng = SplitMix64(1);
        for _ in 0..4 {
            assert_eq!(b.answer(Signal::Down, false, t0(), &mut rng), None);
        }
        // An answer from the service breaks the run.
        assert_eq!(b.answer(Signal::Up, false, t0(), &mut rng), None);
        for _ in 0..4 {
            assert_eq!(b.answer(Signal::Down, false, t0(), &mut rng), None);
        }
        assert_eq!(
            b.permit(t0()),
            Permit::Dispatch {
                max_inflight: Some(1)
            },
            "one more failure may be in flight"
        );
        assert_eq!(
            b.answer(Signal::Down, false, t0(), &mut rng),
            Some(Transition::Opened { failures: 5 })
        );
        assert!(b.is_open());
        assert_eq!(b.since(), Some(t0()));
    }

    #[test]
    fn probes_one_at_a_time_backing_off_to_the_cap() {
        let mut b = Breaker::new(cfg());
        let mut rng = SplitMix64(7);
        let mut now = t0();
        for _ in 0..5 {
            b.answer(Signal::Down, false, now, &mut rng);
        }
        let mut waits = Vec::new();
        for _ in 0..12 {
            let Permit::Wait(Some(at)) = b.permit(now) else {
                panic!("open: wait for the probe, got {:?}", b.permit(now));
            };
            waits.push((at - now).num_seconds());
            now = at;
            assert_eq!(b.permit(now), Permit::Probe);
            b.probe_sent();
            assert_eq!(b.permit(now), Permit::Wait(None), "one probe at a time");
            // A straggler sent before the breaker opened changes nothing.
            assert_eq!(b.answer(Signal::Down, false, now, &mut rng), None);
            assert_eq!(b.permit(now), Permit::Wait(None));
            assert_eq!(b.answer(Signal::Down, true, now, &mut rng), None);
        }
        let caps = [5, 10, 20, 40, 80, 160, 300, 300, 300, 300, 300, 300];
        for (w, d) in waits.iter().zip(caps) {
            assert!((d - d / 4..=d).contains(w), "wait {w}s for bound {d}s: {waits:?}");
        }
        let closed = b.answer(Signal::Up, true, now, &mut rng);
        assert_eq!(
            closed,
            Some(Transition::Closed {
                down_since: t0(),
                down_s: (now - t0()).num_seconds()
            })
        );
        assert_eq!(b.permit(now), Permit::Dispatch { max_inflight: None });
        assert_eq!(b.since(), Some(now));
    }

    #[test]
    fn any_answer_from_the_service_closes_it_even_a_straggler() {
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            max_s: 60,
        });
        let mut rng = SplitMix64(3);
        assert!(b.answer(Signal::Down, false, t0(), &mut rng).is_some());
        let later = t0() + Duration::seconds(90);
        assert!(matches!(
            b.answer(Signal::Up, false, later, &mut rng),
            Some(Transition::Closed { down_s: 90, .. })
        ));
    }

    proptest! {
        /// Whatever the answers: at most one probe in flight, waits within bounds, the
        /// breaker open exactly when the last `failures` answers while closed failed.
        #[test]
        fn model(seed: u64, failures in 1u32..8, max_s in 1u64..1000,
                 script in proptest::collection::vec((any::<bool>(), 0u64..400), 1..200)) {
            let mut b = Breaker::new(BreakerConfig { failures, max_s });
            let mut rng = SplitMix64(seed);
            let mut now = t0();
            let mut streak = 0u32;
            let mut probing = false;
            for (up, dt) in script {
                now += Duration::seconds(dt as i64);
                match b.permit(now) {
                    Permit::Probe => {
                        prop_assert!(b.is_open() && !probing);
                        b.probe_sent();
                        probing = true;
                    }
                    Permit::Wait(Some(at)) => {
                        prop_assert!(at > now && !probing);
                        prop_assert!((at - now).num_seconds() as u64 <= max_s.max(1));
                    }
                    Permit::Wait(None) => prop_assert!(probing),
                    Permit::Dispatch { max_inflight } => {
                        prop_assert!(!b.is_open());
                        prop_assert_eq!(max_inflight.is_some(), streak > 0);
                    }
                }
                let signal = if up { Signal::Up } else { Signal::Down };
                let was_open = b.is_open();
                let probe = probing;
                let t = b.answer(signal, probe, now, &mut rng);
                probing = false;
                if up {
                    streak = 0;
                    prop_assert_eq!(t.is_some(), was_open);
                } else if !was_open {
                    streak += 1;
                    prop_assert_eq!(t.is_some(), streak == failures);
                    if streak == failures { streak = 0; }
                } else {
                    prop_assert!(t.is_none());
                }
                prop_assert_eq!(b.is_open(), (was_open && !up) || matches!(t, Some(Transition::Opened { .. })));
            }
        }
    }

    /// A source whose draws are always the low end of the range.
    struct Lowest;

    impl crate::pacing::Rng for Lowest {
        fn next_u64(&mut self) -> u64 {
            0
        }
    }

    /// A probe wait can be as short as three quarters of its bound, never shorter.
    #[test]
    fn probe_waits_reach_down_to_three_quarters_of_their_bound() {
        assert_eq!(probe_wait_s(0, 300, &mut Lowest), 4, "5 s bound: 5 - 5/4");
        assert_eq!(probe_wait_s(3, 300, &mut Lowest), 30, "40 s bound");
        assert_eq!(probe_wait_s(20, 300, &mut Lowest), 225, "capped at breaker_max_s");
        assert_eq!(probe_wait_s(40, 1, &mut Lowest), 1);
    }

    /// Waits of any length survive the conversion to a duration.
    #[test]
    fn long_waits_are_kept_whole() {
        assert_eq!(secs(3_600), Duration::seconds(3_600));
        assert_eq!(secs(86_400 * 30), Duration::days(30));
        assert!(
            secs(u64::MAX) > Duration::days(365 * 1_000),
            "saturates, never wraps"
        );
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            max_s: 86_400,
        });
        b.answer(Signal::Down, false, t0(), &mut Lowest);
        for _ in 0..20 {
            let Permit::Wait(Some(at)) = b.permit(t0()) else {
                panic!("open: {:?}", b.permit(t0()));
            };
            b.probe_sent();
            b.answer(Signal::Down, true, at, &mut Lowest);
        }
        let Permit::Wait(Some(at)) = b.permit(t0()) else {
            panic!("still open");
        };
        assert!(
            at > t0() + Duration::hours(18),
            "a day-long cap is honoured: {at}"
        );
    }

    /// A reloaded `breaker_failures` applies from the next answer on.
    #[test]
    fn a_reloaded_config_applies_to_the_next_answer() {
        let mut b = Breaker::new(cfg());
        let mut rng = SplitMix64(5);
        b.answer(Signal::Down, false, t0(), &mut rng);
        b.set_config(BreakerConfig {
            failures: 2,
            max_s: 60,
        });
        assert_eq!(
            b.answer(Signal::Down, false, t0(), &mut rng),
            Some(Transition::Opened { failures: 2 })
        );
        let Permit::Wait(Some(at)) = b.permit(t0()) else {
            panic!("open");
        };
        assert!(at <= t0() + Duration::seconds(5));
    }
}
