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
    /// Whether any `invite_accepted` has ever reached the worker (store-wide). Until
    /// then acceptance is unknown, not zero.
    pub feedback_seen: bool,
}

/// Why an account has its health (logged with `health_changed`).
pub const REASON_RESTRICTED: &str = "restricted";
pub const REASON_LOW_ACCEPTANCE: &str = "low acceptance";
pub const REASON_RATE_LIMITS: &str = "rate limits";
pub const REASON_NO_FEEDBACK: &str = "no acceptance feedback";
pub const REASON_OK: &str = "signals healthy";

/// A health state and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub health: Health,
    pub reason: &'static str,
}

pub fn assess(s: Signals, p: &HealthParams) -> Assessment {
    let a = |health, reason| Assessment { health, reason };
    if s.restricted {
        return a(Health::Restricted, REASON_RESTRICTED);
    }
    // Unknown acceptance (no feedback ever) is never judged: no data is not bad data.
    let acceptance = (s.feedback_seen && s.invites_sent >= p.min_sample.max(1))
        .then(|| f64::from(s.invites_accepted) / f64::from(s.invites_sent));
    let below = |threshold: f64| acceptance.is_some_and(|a| a < threshold);
    if below(p.at_risk_acceptance) {
        a(Health::AtRisk, REASON_LOW_ACCEPTANCE)
    } else if s.rate_limits >= p.at_risk_rate_limits {
        a(Health::AtRisk, REASON_RATE_LIMITS)
    } else if below(p.watch_acceptance) {
        a(Health::Watch, REASON_LOW_ACCEPTANCE)
    } else if s.rate_limits >= p.watch_rate_limits {
        a(Health::Watch, REASON_RATE_LIMITS)
    } else if !s.feedback_seen {
        a(Health::Watch, REASON_NO_FEEDBACK)
    } else {
        a(Health::Healthy, REASON_OK)
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
            feedback_seen: true,
        };
        assert_eq!(assess(s, &HealthParams::default()).health, expected, "{s:?}");
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

    #[test]
    fn unknown_acceptance_is_watch_not_at_risk() {
        let p = HealthParams::default();
        let s = |sent, accepted, rate_limits, restricted| Signals {
            restricted,
            invites_sent: sent,
            invites_accepted: accepted,
            rate_limits,
            feedback_seen: false,
        };
        let watch = Assessment {
            health: Health::Watch,
            reason: REASON_NO_FEEDBACK,
        };
        assert_eq!(assess(s(0, 0, 0, false), &p), watch);
        assert_eq!(assess(s(100, 0, 0, false), &p), watch);
        assert_eq!(assess(s(100, 0, 1, false), &p).reason, REASON_RATE_LIMITS);
        assert_eq!(assess(s(100, 0, 3, false), &p).health, Health::AtRisk);
        assert_eq!(assess(s(100, 0, 0, true), &p).health, Health::Restricted);
        // Once feedback flows, zero acceptances over a full sample is judged.
        let seen = Signals {
            feedback_seen: true,
            ..s(100, 0, 0, false)
        };
        assert_eq!(
            assess(seen, &p),
            Assessment {
                health: Health::AtRisk,
                reason: REASON_LOW_ACCEPTANCE
            }
        );
    }

    /// The names `status`, the logs and the metrics print (SPEC §3.4).
    #[test]
    fn health_names_are_the_contract_spelling() {
        let names = [Health::Healthy, Health::Watch, Health::AtRisk, Health::Restricted].map(Health::as_str);
        assert_eq!(names, ["healthy", "watch", "at_risk", "restricted"]);
    }
}
