//! The invite ramp, the master ceiling for invites (SPEC §3.3).

use super::Health;
use serde::{Deserialize, Serialize};

/// Days between two ramp evaluations.
pub const RAMP_STEP_DAYS: i64 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RampParams {
    pub start: u32,
    pub weeks: u32,
}

impl Default for RampParams {
    fn default() -> Self {
        RampParams { start: 10, weeks: 6 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RampReason {
    Advance,
    Hold,
    StepBack,
    /// A restricted account holds too; kept apart so logs say why.
    Restricted,
}

impl RampReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RampReason::Advance => "advance",
            RampReason::Hold => "hold",
            RampReason::StepBack => "step_back",
            RampReason::Restricted => "restricted",
        }
    }
}

/// The ceiling an account starts at: its target when established, else `start`.
pub fn initial_ceiling(target: u32, params: RampParams, established: bool) -> u32 {
    if established {
        target
    } else {
        params.start.min(target)
    }
}

/// The growth factor `g = (target / start) ^ (1 / weeks)`.
pub fn growth(target: u32, params: RampParams) -> f64 {
    let start = f64::from(params.start.max(1));
    let target = f64::from(target.max(1));
    let weeks = f64::from(params.weeks.max(1));
    (target / start).powf(1.0 / weeks).max(1.0)
}

/// One evaluation at a 7-day boundary.
pub fn evaluate(ceiling: u32, target: u32, params: RampParams, health: Health) -> (u32, RampReason) {
    let g = growth(target, params);
    match health {
        Health::Healthy => {
            // Round away tiny float error before ceil (10 * 8^(1/6)^k must not drift up).
            let grown = (f64::from(ceiling) * g * 1e9).round() / 1e9;
            let next = (grown.ceil() as u64).min(u64::from(target)) as u32;
            (next.max(ceiling.min(target)), RampReason::Advance)
        }
        Health::Watch => (ceiling, RampReason::Hold),
        Health::AtRisk => {
            let shrunk = ((f64::from(ceiling) / g * 1e9).round() / 1e9).floor() as u32;
            (shrunk.max(params.start.min(target)), RampReason::StepBack)
        }
        Health::Restricted => (ceiling, RampReason::Restricted),
    }
}

/// How many 7-day boundaries after `ramp_start` have passed on local day `day`
/// (both as days since the epoch).
pub fn boundaries_passed(ramp_start_day: i64, day: i64) -> i64 {
    if day <= ramp_start_day {
        0
    } else {
        (day - ramp_start_day) / RAMP_STEP_DAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_ramp_to_80() {
        let p = RampParams::default();
        let mut c = initial_ceiling(80, p, false);
        let mut seen = vec![c];
        for _ in 0..7 {
            c = evaluate(c, 80, p, Health::Healthy).0;
            seen.push(c);
        }
        assert_eq!(seen, vec![10, 15, 22, 32, 46, 66, 80, 80]);
    }

    #[test]
    fn established_starts_at_target() {
        assert_eq!(initial_ceiling(80, RampParams::default(), true), 80);
        assert_eq!(initial_ceiling(20, RampParams::default(), false), 10);
        assert_eq!(initial_ceiling(5, RampParams::default(), false), 5);
    }

    #[test]
    fn watch_holds_and_at_risk_steps_back() {
        let p = RampParams::default();
        assert_eq!(evaluate(32, 80, p, Health::Watch), (32, RampReason::Hold));
        assert_eq!(evaluate(32, 80, p, Health::AtRisk), (22, RampReason::StepBack));
        assert_eq!(evaluate(15, 80, p, Health::AtRisk), (10, RampReason::StepBack));
        assert_eq!(evaluate(10, 80, p, Health::AtRisk), (10, RampReason::StepBack));
        assert_eq!(
            evaluate(46, 80, p, Health::Restricted),
            (46, RampReason::Restricted)
        );
    }

    #[test]
    fn target_below_ceiling_and_degenerate_params() {
        let p = RampParams { start: 10, weeks: 6 };
        assert_eq!(evaluate(80, 20, p, Health::Healthy).0, 20);
        let flat = RampParams { start: 80, weeks: 6 };
        assert_eq!(evaluate(80, 80, flat, Health::Healthy).0, 80);
        let zero = RampParams { start: 0, weeks: 0 };
        assert!(evaluate(0, 80, zero, Health::Healthy).0 <= 80);
    }

    #[test]
    fn boundaries() {
        assert_eq!(boundaries_passed(100, 100), 0);
        assert_eq!(boundaries_passed(100, 106), 0);
        assert_eq!(boundaries_passed(100, 107), 1);
        assert_eq!(boundaries_passed(100, 142), 6);
        assert_eq!(boundaries_passed(100, 90), 0);
    }

    /// The reasons `ramp_changed` logs.
    #[test]
    fn reasons_are_spelled_for_the_log() {
        let names = [
            RampReason::Advance,
            RampReason::Hold,
            RampReason::StepBack,
            RampReason::Restricted,
        ]
        .map(RampReason::as_str);
        assert_eq!(names, ["advance", "hold", "step_back", "restricted"]);
    }
}
