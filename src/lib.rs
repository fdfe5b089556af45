//! sendgate: a worker that sends LinkedIn outreach actions through an upstream service
//! and never lets an account or campaign go over its daily caps.
//!
//! The map, from the outside in:
//!
//! - `admin`    — the running worker's control socket and the operator's requests.
//! - `cli`      — one file per command (`run`, `check`, `status`, `list`, `audit`, ...).
//! - `config`   — the TOML configuration: defaults, validation, unknown keys rejected.
//! - `contract` — the outside formats: job-file records and events, upstream request
//!   and outcomes.
//! - `policy`   — PURE: caps, tiers, ramp, health, InMail credits, windows, pacing. No
//!   IO, no clock reads, no tokio, no sled.
//! - `rules`    — PURE: the business rules the store applies (SPEC §5 outcomes,
//!   reservations, maintenance, parking), decided from values read beforehand.
//!
//! See ARCHITECTURE.md for the invariants and the path data travels.

pub mod admin;
pub mod chart;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod daemon;
pub mod engine;
pub mod log;
pub mod logline;
pub mod mem;
pub mod metrics;
pub mod rules;
/// The pure policy core, a crate of its own (`crates/policy`).
pub use sendgate_policy as policy;
pub mod spool;
pub mod store;
pub mod upstream;

/// Exit codes (SPEC §10).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const STORE: i32 = 74;
    pub const CONFIG: i32 = 78;
}
