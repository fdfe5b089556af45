//! Subscription tiers and their ceilings (SPEC §3.2).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Free,
    PremiumCareer,
    PremiumBusiness,
    SalesNavigatorCore,
    SalesNavigatorAdvanced,
    RecruiterLite,
    Recruiter,
}

/// What a tier allows: invites per day, InMail credits added per month, and the
/// balance ceiling unused credits roll over up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLimits {
    pub invite_ceiling: u32,
    pub inmail_credits: u32,
    pub inmail_ceiling: u32,
}

impl Tier {
    pub const ALL: [Tier; 7] = [
        Tier::Free,
        Tier::PremiumCareer,
        Tier::PremiumBusiness,
        Tier::SalesNavigatorCore,
        Tier::SalesNavigatorAdvanced,
        Tier::RecruiterLite,
        Tier::Recruiter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::PremiumCareer => "premium_career",
            Tier::PremiumBusiness => "premium_business",
            Tier::SalesNavigatorCore => "sales_navigator_core",
            Tier::SalesNavigatorAdvanced => "sales_navigator_advanced",
            Tier::RecruiterLite => "recruiter_lite",
            Tier::Recruiter => "recruiter",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The defaults of SPEC §3.2.
    pub fn default_limits(self) -> TierLimits {
        let (invite_ceiling, inmail_credits, inmail_ceiling) = match self {
            Tier::Free => (20, 0, 0),
            Tier::PremiumCareer => (80, 5, 15),
            Tier::PremiumBusiness => (80, 15, 45),
            Tier::SalesNavigatorCore | Tier::SalesNavigatorAdvanced => (100, 50, 150),
            Tier::RecruiterLite => (100, 30, 120),
            Tier::Recruiter => (100, 150, 600),
        };
        TierLimits {
            invite_ceiling,
            inmail_credits,
            inmail_ceiling,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
        assert_eq!(Tier::parse("gold"), None);
    }

    #[test]
    fn spec_table() {
        let l = Tier::Recruiter.default_limits();
        assert_eq!(
            (l.invite_ceiling, l.inmail_credits, l.inmail_ceiling),
            (100, 150, 600)
        );
        let l = Tier::Free.default_limits();
        assert_eq!((l.invite_ceiling, l.inmail_credits, l.inmail_ceiling), (20, 0, 0));
    }
}
