//! The outside formats: job-file records and events (SPEC §6), and the upstream request
//! and outcomes (SPEC §5, §9). Parsing only; nothing here touches the store or the clock.

pub mod events;
pub mod jobfile;
pub mod upstream;

pub use jobfile::{
    parse_file, AccountRecord, ActionRecord, CampaignRecord, CampaignStatus, EventRecord, FileError, Record,
};
pub use upstream::{Outcome, SendRequest};
