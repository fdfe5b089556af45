//! Account health from acceptance and rate-limit signals (SPEC §3.4).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Watch,
    AtRisk,
    Restricted,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Watch => "watch",
            Health::AtRisk => "at_risk",
            Health::Restricted => "restricted",
        }
    }
}

/// Acceptance is judged over invites sent this many local days ago, inclusive.
pub const ACCEPTANCE_FROM_DAYS_AGO: i64 = 3;
pub const ACCEPTANCE_TO_DAYS_AGO: i64 = 17;
/// Rate-limit responses count over this many local days, today included.
pub const RATE_LIMIT_DAYS: i64 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthParams {
    pub min_sample: u32,
    pub watch_acceptance: f64,
    pub at_risk_acceptance: f64,
    pub watch_rate_limits: u32,
    pub at_risk_rate_limits: u32,
}

impl Default for HealthParams {
    fn default() -> Self {
        HealthParams {
            min_sample: 20,
            watch_acceptance: 0.25,
            at_risk_acceptance: 0.15,
            watch_rate_limits: 1,
            at_risk_rate_limits: 3,
        }
    }
}

/// The signals health is judged on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    pub restricted: bool,
    /// Invites sent 3–17 local days ago, and how many of those were accepted.
    pub invites_sent: u32,
    pub invites_accepted: u32,
    /// Rate-limit responses in the last 7 local days.
    pub rate_limits: u32,
}

pub fn assess(s: Signals, p: &HealthParams) -> Health {
    if s.restricted {
        return Health::Restricted;
    }
    let acceptance = (s.invites_sent >= p.min_sample.max(1))
        .then(|| f64::from(s.invites_accepted) / f64::from(s.invites_sent));
    let below = |threshold: f64| acceptance.is_some_and(|a| a < threshold);
    if below(p.at_risk_acceptance) || s.rate_limits >= p.at_risk_rate_limits {
        Health::AtRisk
    } else if below(p.watch_acceptance) || s.rate_limits >= p.watch_rate_limits {
        Health::Watch
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(restricted: bool, sent: u32, accepted: u32, rate_limits: u32, expected: Health) {
        let s = Signals {
            restricted,
            invites_sent: sent,
            invites_accepted: accepted,
            rate_limits,
        };
        assert_eq!(assess(s, &HealthParams::default()), expected, "{s:?}");
    }

    #[test]
    fn table() {
        check(false, 0, 0, 0, Health::Healthy);
        check(false, 19, 0, 0, Health::Healthy); // sample too small to judge
        check(false, 20, 5, 0, Health::Healthy); // 0.25 is not below 0.25
        check(false, 20, 4, 0, Health::Watch); // 0.20
        check(false, 20, 3, 0, Health::Watch); // 0.15 is not below 0.15
        check(false, 20, 2, 0, Health::AtRisk); // 0.10
        check(false, 100, 50, 1, Health::Watch);
        check(false, 100, 50, 2, Health::Watch);
        check(false, 100, 50, 3, Health::AtRisk);
        check(true, 100, 50, 0, Health::Restricted);
    }
}
