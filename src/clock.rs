//! Clocks. Every sleep and timer in the worker goes through one: the system clock, the
//! scaled clock of `[clock] start/speed` (virtual time for demos and tests), or a
//! manual clock that only moves when told (simulation, deterministic tests).

use chrono::{DateTime, Duration, Utc};
use std::sync::Mutex;
use std::time::Instant;

/// The longest single wait handed to the OS: waits are re-evaluated at least this
/// often, so a clock step or a missed wake-up costs at most this much.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// How long to really wait for the clock to reach `t` (zero if it has).
    fn real_until(&self, t: DateTime<Utc>) -> std::time::Duration;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn real_until(&self, t: DateTime<Utc>) -> std::time::Duration {
        (t - Utc::now()).to_std().unwrap_or_default().min(MAX_WAIT)
    }
}

/// Virtual time starting at `start` when created, running `speed` times real time.
pub struct ScaledClock {
    start: DateTime<Utc>,
    origin: Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(start: DateTime<Utc>, speed: f64) -> ScaledClock {
        ScaledClock {
            start,
            origin: Instant::now(),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let virt_ms = self.origin.elapsed().as_secs_f64() * 1000.0 * self.speed;
        self.start + Duration::milliseconds(virt_ms as i64)
    }

    fn real_until(&self, t: DateTime<Utc>) -> std::time::Duration {
        let virt = (t - self.now()).to_std().unwrap_or_default();
        virt.div_f64(self.speed).min(MAX_WAIT)
    }
}

/// A clock that moves only when told.
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = t;
        }
    }

    pub fn advance(&self, d: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += d;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().map(|n| *n).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn real_until(&self, _t: DateTime<Utc>) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let t = Utc::now();
        let c = ManualClock::new(t);
        assert_eq!(c.now(), t);
        c.advance(Duration::hours(2));
        assert_eq!(c.now(), t + Duration::hours(2));
        assert_eq!(c.real_until(t + Duration::days(3)), std::time::Duration::ZERO);
    }

    #[test]
    fn scaled_clock_runs_fast_and_scales_waits() {
        let start = DateTime::parse_from_rfc3339("2026-03-06T08:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let c = ScaledClock::new(start, 3600.0);
        assert!(c.now() >= start);
        // One virtual hour is one real second at speed 3600, less the real time spent
        // between reading the clock and asking (however long a loaded machine takes).
        let asked = Instant::now();
        let wait = c.real_until(c.now() + Duration::hours(1));
        let spent = asked.elapsed();
        assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
        assert!(
            wait + spent >= std::time::Duration::from_millis(999),
            "{wait:?} + {spent:?}"
        );
    }
}
