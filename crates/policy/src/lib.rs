//! The pure policy core: caps, tiers, ramp, health, InMail credits, sending windows and
//! pacing, as functions of their inputs and `now`.
//!
//! Invariant: nothing under `policy/` does IO, reads the clock, or imports tokio or sled.
//! `now` is always a parameter and randomness comes from an injected [`Rng`]. The CI
//! script greps this folder to enforce it (`tests/policy_purity.rs`).

pub mod breaker;
pub mod caps;
pub mod credits;
pub mod health;
pub mod pacing;
pub mod ramp;
pub mod tier;
pub mod window;
pub mod zone;

pub use caps::{Blocker, CampaignType, Counter, Decision};
pub use health::Health;
pub use pacing::{Rng, SplitMix64};
pub use tier::Tier;
pub use window::Window;

use serde::{Deserialize, Serialize};

/// The six kinds of action (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invite,
    Message,
    Inmail,
    ProfileView,
    Comment,
    Reaction,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Invite,
        Kind::Message,
        Kind::Inmail,
        Kind::ProfileView,
        Kind::Comment,
        Kind::Reaction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invite => "invite",
            Kind::Message => "message",
            Kind::Inmail => "inmail",
            Kind::ProfileView => "profile_view",
            Kind::Comment => "comment",
            Kind::Reaction => "reaction",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds' names are the job files' and the logs' spelling (SPEC §2, §6).
    #[test]
    fn kind_names_are_the_contract_spelling_and_parse_back() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "invite",
                "message",
                "inmail",
                "profile_view",
                "comment",
                "reaction"
            ]
        );
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        for bad in ["", "Invite", "invites", "profile-view"] {
            assert_eq!(Kind::parse(bad), None, "{bad:?}");
        }
    }
}
