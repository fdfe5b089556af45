//! Helpers the deterministic simulations share (tests/simulation.rs, one worker, and
//! tests/simulation_fleet.rs, a fleet).

use sendgate::policy::pacing::{Rng, SplitMix64};
use sendgate::policy::Kind;
use sendgate::store::{OpenOptions, Settings, Store, StoreError};
use std::path::Path;

/// The kinds of the simulations' actions, with their weights (per hundred).
pub const KINDS: [(Kind, u64); 6] = [
    (Kind::Invite, 35),
    (Kind::Message, 20),
    (Kind::Inmail, 10),
    (Kind::ProfileView, 15),
    (Kind::Comment, 10),
    (Kind::Reaction, 10),
];

pub fn chance(rng: &mut SplitMix64, per_10k: u64) -> bool {
    rng.between(0, 9999) < per_10k
}

/// A kind drawn by `KINDS`' weights.
pub fn weighted_kind(rng: &mut SplitMix64) -> Kind {
    let mut roll = rng.between(0, 99);
    KINDS
        .iter()
        .find(|(_, w)| {
            let hit = roll < *w;
            roll = roll.saturating_sub(*w);
            hit
        })
        .map_or(Kind::Invite, |(k, _)| *k)
}

/// Open (or reopen, after a simulated crash) the store at `path`.
pub fn open(path: &Path, settings: &Settings) -> Store {
    let opts = OpenOptions {
        cache_mb: 8,
        fail_from_op: None,
        ..OpenOptions::default()
    };
    let mut tries = 0;
    loop {
        match Store::open(path, settings.clone(), opts.clone()) {
            Ok(s) => return s,
            // The previous handle's lock may take a moment to go.
            Err(StoreError::Locked { .. }) if tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("the store does not reopen: {e}"),
        }
    }
}
