//! The records kept in the store, in memory, and the policy inputs derived from them.
//! On disk each is its own wire type (`wire.rs`), converted in `edge.rs` only; the
//! serde derives left here serve JSON (`show`, the admin socket) and tests, never the
//! store (`codec` writes a `Value`, which none of them is by serde alone).

use crate::config::Policy;
use crate::contract::jobfile::{CampaignStatus, CapSplit, CapsOverride};
use crate::policy::caps::{AccountDay, CampaignDay, CampaignLimits, Caps, Limits};
use crate::policy::zone::{Pending, Zones};
use crate::policy::{Health, Kind, Tier, Window};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Ramp ceilings remembered per account: eight weekly steps. A day older than all of
/// them gets the lowest ceiling remembered (never a higher one).
pub const RAMP_HISTORY: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub tier: Tier,
    pub timezone: String,
    pub window: Window,
    pub ramp_start: NaiveDate,
    pub established: bool,
    pub proxy: Option<String>,
    pub caps: AccountCaps,
    pub credits: u32,
    pub refill_day: u32,
    /// The last refill instant applied (ms since the epoch).
    pub last_refill_ms: i64,
    pub ramp_ceiling: u32,
    /// The ceilings in force and the local day each took effect, oldest first (at most
    /// `RAMP_HISTORY`): a clock stepped back into an earlier day gets that day's
    /// ceiling, never a later, higher one.
    pub ramp_history: Vec<(NaiveDate, u32)>,
    /// The last reservation (ms): pacing survives a restart.
    pub last_reserved_ms: Option<i64>,
    /// 7-day ramp boundaries already evaluated.
    pub ramp_steps: i64,
    pub health: Health,
    pub restricted: bool,
    /// No sends of any kind before this instant (a rate limit), ms.
    pub held_until_ms: Option<i64>,
    /// The local day maintenance (refill, health, ramp) last ran for.
    pub maintained_day: NaiveDate,
    // ---- Added in layout 2 (`Stored::V2`); a layout-1 record reads as `None`. ----
    /// A time-zone change decided but not yet in force (`policy::zone`).
    pub pending_zone: Option<PendingZone>,
    /// The last local day a `day_summary` was emitted for.
    pub summarised_day: Option<NaiveDate>,
}

/// A decided time-zone change: `timezone` applies from `from_ms`; until then the
/// account stays on `last_old_day` of its current zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingZone {
    pub timezone: String,
    pub from_ms: i64,
    pub last_old_day: NaiveDate,
}

/// The days of an account or a campaign as stored: its zone, and a change decided but
/// not yet in force (`policy::zone`, the one rule for both).
fn zones_of(timezone: &str, pending: Option<&PendingZone>) -> Zones {
    Zones {
        zone: timezone.parse().unwrap_or(Tz::UTC),
        pending: pending.map(|p| Pending {
            zone: p.timezone.parse().unwrap_or(Tz::UTC),
            from: super::codec::from_ms(p.from_ms),
            last_old_day: p.last_old_day,
        }),
    }
}

/// [`zones_of`]'s inverse: the zone and the pending change to store.
fn stored_zones(z: Zones) -> (String, Option<PendingZone>) {
    let pending = z.pending.map(|p| PendingZone {
        timezone: p.zone.name().to_string(),
        from_ms: super::codec::ms(p.from),
        last_old_day: p.last_old_day,
    });
    (z.zone.name().to_string(), pending)
}

/// Per-account cap overrides; `None` falls back to the config's `[caps]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCaps {
    pub invites: Option<u32>,
    pub messages: Option<u32>,
    pub inmails: Option<u32>,
    pub engagement: Option<u32>,
    pub weekly_invites: Option<u32>,
}

impl AccountCaps {
    pub fn merge(&mut self, o: &CapsOverride) {
        self.invites = o.invites.or(self.invites);
        self.messages = o.messages.or(self.messages);
        self.inmails = o.inmails.or(self.inmails);
        self.engagement = o.engagement.or(self.engagement);
        self.weekly_invites = o.weekly_invites.or(self.weekly_invites);
    }
}

impl Account {
    /// Layout 2 on disk (`Stored::V2`, `wire::AccountV2W`, converted in `edge.rs`).
    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode(self)
    }

    /// Reads layout 1 and layout 2.
    pub fn decode(bytes: &[u8]) -> Result<Account, super::StoreError> {
        super::codec::decode("account", bytes)
    }

    /// The zone the account's days started in (before any pending change).
    pub fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(Tz::UTC)
    }

    /// The account's days: its zone and any change decided but not yet in force.
    pub fn zones(&self) -> Zones {
        zones_of(&self.timezone, self.pending_zone.as_ref())
    }

    pub fn set_zones(&mut self, z: Zones) {
        (self.timezone, self.pending_zone) = stored_zones(z);
    }

    /// The zone in force at `t`: local days and the sending window follow it.
    pub fn zone_at(&self, t: DateTime<Utc>) -> Tz {
        self.zones().zone_at(t)
    }

    /// The account's local day at `t` (SPEC §3), per the zone in force.
    pub fn day_at(&self, t: DateTime<Utc>) -> NaiveDate {
        self.zones().day_at(t)
    }

    /// Whether new work should go to this account when a campaign picks one: not
    /// restricted, not held at `now`. (An operator pause, once it exists, belongs here.)
    pub fn can_send(&self, now: DateTime<Utc>) -> bool {
        !self.restricted && !self.held(now)
    }

    pub fn held(&self, now: DateTime<Utc>) -> bool {
        self.held_until_ms.is_some_and(|h| h > super::codec::ms(now))
    }

    pub fn caps(&self, policy: &Policy) -> Caps {
        let d = policy.caps;
        Caps {
            invites: self.caps.invites.unwrap_or(d.invites),
            messages: self.caps.messages.unwrap_or(d.messages),
            inmails: self.caps.inmails.unwrap_or(d.inmails),
            engagement: self.caps.engagement.unwrap_or(d.engagement),
            weekly_invites: self.caps.weekly_invites.or(d.weekly_invites),
        }
    }

    /// `min(caps.invites, tier ceiling)`: where the ramp is heading.
    pub fn invite_target(&self, policy: &Policy) -> u32 {
        self.caps(policy)
            .invites
            .min(policy.tier(self.tier).invite_ceiling)
    }

    /// The ramp ceiling of local day `day`: the latest one that took effect on or
    /// before it; for a day before all of the history, the lowest one known.
    pub fn ramp_ceiling_on(&self, day: NaiveDate) -> u32 {
        match self.ramp_history.iter().rev().find(|(since, _)| *since <= day) {
            Some((_, c)) => *c,
            None => self
                .ramp_history
                .iter()
                .map(|(_, c)| *c)
                .chain([self.ramp_ceiling])
                .min()
                .unwrap_or(self.ramp_ceiling),
        }
    }

    /// Set a new ramp ceiling from local day `day` on.
    pub fn set_ramp_ceiling(&mut self, day: NaiveDate, ceiling: u32) {
        self.ramp_ceiling = ceiling;
        self.ramp_history.retain(|(since, _)| *since < day);
        self.ramp_history.push((day, ceiling));
        if self.ramp_history.len() > RAMP_HISTORY {
            self.ramp_history.remove(0);
        }
    }

    /// The effective invite cap of SPEC §3.2 on local day `day`:
    /// `min(caps.invites, tier ceiling, ramp ceiling of that day)`.
    pub fn invite_cap(&self, policy: &Policy, day: NaiveDate) -> u32 {
        self.invite_target(policy).min(self.ramp_ceiling_on(day))
    }

    pub fn limits(&self, policy: &Policy, campaign: CampaignLimits, day: NaiveDate) -> Limits {
        let caps = self.caps(policy);
        Limits {
            invites: self.invite_cap(policy, day),
            messages: caps.messages,
            inmails: caps.inmails,
            engagement: caps.engagement,
            weekly_invites: caps.weekly_invites,
            campaign,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Campaign {
    pub id: String,
    /// The zone the campaign's days started in (before any pending change).
    pub timezone: String,
    pub daily_limit: u32,
    pub split_invites: Option<u32>,
    pub split_messages: Option<u32>,
    pub split_inmails: Option<u32>,
    pub accounts: Vec<String>,
    pub paused: bool,
    // ---- Added in layout 2 (`Stored::V2`); a layout-1 record reads as `None`. ----
    /// A time-zone change decided but not yet in force (`policy::zone`): the campaign's
    /// days never overlap in real time, as an account's do not.
    pub pending_zone: Option<PendingZone>,
}

impl Campaign {
    /// Layout 2 on disk (`Stored::V2`, `wire::CampaignV2W`, converted in `edge.rs`).
    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode(self)
    }

    /// Reads layout 1 and layout 2.
    pub fn decode(bytes: &[u8]) -> Result<Campaign, super::StoreError> {
        super::codec::decode("campaign", bytes)
    }

    /// The campaign's days (SPEC §3.6): its zone and any change decided but not yet
    /// in force. Every campaign day is read through these, never the raw zone.
    pub fn zones(&self) -> Zones {
        zones_of(&self.timezone, self.pending_zone.as_ref())
    }

    pub fn set_zones(&mut self, z: Zones) {
        (self.timezone, self.pending_zone) = stored_zones(z);
    }

    /// The campaign's local day at `t`, per the zone in force.
    pub fn day_at(&self, t: DateTime<Utc>) -> NaiveDate {
        self.zones().day_at(t)
    }

    pub fn limits(&self) -> CampaignLimits {
        CampaignLimits {
            invites: self.split_invites.unwrap_or(self.daily_limit),
            messages: self.split_messages.unwrap_or(self.daily_limit),
            inmails: self.split_inmails.unwrap_or(self.daily_limit),
        }
    }

    pub fn merge_split(&mut self, s: &CapSplit) {
        self.split_invites = s.invites.or(self.split_invites);
        self.split_messages = s.messages.or(self.split_messages);
        self.split_inmails = s.inmails.or(self.split_inmails);
    }

    pub fn status(&self) -> CampaignStatus {
        if self.paused {
            CampaignStatus::Paused
        } else {
            CampaignStatus::Active
        }
    }
}

/// The visible states of an action (SPEC P4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Parked,
    Inflight,
    Sent,
    Failed,
    Unknown,
    Cancelled,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Parked,
        State::Inflight,
        State::Sent,
        State::Failed,
        State::Unknown,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Parked => "parked",
            State::Inflight => "inflight",
            State::Sent => "sent",
            State::Failed => "failed",
            State::Unknown => "unknown",
            State::Cancelled => "cancelled",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Finished states are pruned after `store.retention_days`.
    pub fn finished(self) -> bool {
        matches!(self, State::Sent | State::Failed | State::Cancelled)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub id: String,
    pub campaign: String,
    pub account: String,
    pub kind: Kind,
    pub prospect: String,
    /// The payload as JSON text (opaque; passed upstream, never logged).
    pub payload: String,
    pub priority: i32,
    pub seq: u64,
    pub state: State,
    /// Upstream attempts made so far (each reserved its own slot).
    pub attempts: u32,
    /// Attempts since the last `requeue_action` (bounded by `upstream.max_attempts`).
    pub retries: u32,
    pub reason: Option<String>,
    /// When a parked or backed-off action is due again, ms.
    pub until_ms: Option<i64>,
    pub updated_ms: i64,
    /// The account's local day the invite was sent on (for acceptance ratios).
    pub sent_day: Option<NaiveDate>,
    pub accepted: bool,
    pub refunded: bool,
}

impl AccountDayRec {
    pub fn sent(&self) -> u32 {
        self.sent_by_kind.iter().sum()
    }
}

/// Counters and signals of one account on one local day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountDayRec {
    pub reserved: AccountDay,
    /// Invites confirmed sent that day, and how many of them were accepted since.
    pub invites_sent: u32,
    pub invites_accepted: u32,
    pub rate_limits: u32,
    /// Confirmed sends per kind, in `Kind::ALL` order.
    pub sent_by_kind: [u32; 6],
}

/// One reservation, with the limits in force when it was taken (for `audit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub action: String,
    pub account: String,
    pub campaign: String,
    pub kind: Kind,
    pub attempt: u32,
    pub at_ms: i64,
    pub account_day: NaiveDate,
    pub campaign_day: NaiveDate,
    pub limits: LedgerLimits,
}

/// Every reservation taken by one reserve transaction (format 2): one ledger record per
/// batch, under `codec::reservations_key`. An action in flight names its entry by the
/// batch id and index (`codec::inflight_value`).
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerReservations {
    pub entries: Vec<LedgerEntry>,
}

/// The slots of one reservation given back, because its attempt was certainly never
/// received (SPEC §3, §5 "not delivered"). Written in the transaction that records the
/// outcome, under `codec::release_key`; `audit` subtracts it from the day it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerRelease {
    pub action: String,
    pub account: String,
    pub campaign: String,
    pub kind: Kind,
    pub attempt: u32,
    pub at_ms: i64,
    /// The days of the reservation released (not the day of the release).
    pub account_day: NaiveDate,
    pub campaign_day: NaiveDate,
    /// The ledger id of the reservation released: its `LedgerReservations` batch
    /// (format 2) or its own `LedgerEntry` (format 1).
    pub reservation: u64,
}

/// What became of one attempt (SPEC §5), as `show` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerOutcome {
    pub action: String,
    /// The attempt answered (the `attempt` of its reservation).
    pub attempt: u32,
    /// The outcome's name (`Outcome::name`: `sent`, `rate_limited`, ...), or
    /// `lost_to_crash` for an attempt a crash left in flight (found at start-up).
    pub outcome: String,
    /// The action's state after it, with its reason (redacted as every stored reason)
    /// and until.
    pub state: State,
    pub reason: Option<String>,
    pub until_ms: Option<i64>,
    /// The attempt was not delivered and its slots were given back (a `LedgerRelease`
    /// in the same transaction).
    pub released: bool,
}

/// Every outcome recorded by one transaction: one ledger record per recorded batch,
/// under `codec::outcome_key`. It moves no counter: `audit` skips it, retention prunes
/// it by `at_ms` like any ledger record.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerOutcomes {
    pub at_ms: i64,
    pub outcomes: Vec<LedgerOutcome>,
}

/// The day counters a ledger record holds slots of: pruned with it.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerDays {
    pub account: String,
    pub campaign: String,
    pub account_day: NaiveDate,
    pub campaign_day: NaiveDate,
}

/// What retention needs of any ledger record: when it was written, and the day
/// counters it names (none for outcomes).
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerItem {
    pub at_ms: i64,
    pub days: Vec<LedgerDays>,
}

impl LedgerItem {
    /// Decode a `ledger` value by the kind its key names.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<LedgerItem, super::StoreError> {
        use super::codec::{ledger_kind, LedgerKind};
        match ledger_kind(key) {
            Some(LedgerKind::Release) => {
                let r: LedgerRelease = super::codec::decode_at("ledger release", key, value)?;
                Ok(LedgerItem {
                    at_ms: r.at_ms,
                    days: vec![LedgerDays {
                        account: r.account,
                        campaign: r.campaign,
                        account_day: r.account_day,
                        campaign_day: r.campaign_day,
                    }],
                })
            }
            Some(LedgerKind::Outcomes) => {
                let o: LedgerOutcomes = super::codec::decode_at("ledger outcomes", key, value)?;
                Ok(LedgerItem {
                    at_ms: o.at_ms,
                    days: Vec::new(),
                })
            }
            Some(LedgerKind::Reservations) => {
                let b: LedgerReservations = super::codec::decode_at("ledger reservations", key, value)?;
                Ok(LedgerItem {
                    at_ms: b.entries.iter().map(|e| e.at_ms).max().unwrap_or(i64::MIN),
                    days: b
                        .entries
                        .into_iter()
                        .map(|e| LedgerDays {
                            account: e.account,
                            campaign: e.campaign,
                            account_day: e.account_day,
                            campaign_day: e.campaign_day,
                        })
                        .collect(),
                })
            }
            Some(LedgerKind::Reservation) => {
                let e: LedgerEntry = super::codec::decode_at("ledger entry", key, value)?;
                Ok(LedgerItem {
                    at_ms: e.at_ms,
                    days: vec![LedgerDays {
                        account: e.account,
                        campaign: e.campaign,
                        account_day: e.account_day,
                        campaign_day: e.campaign_day,
                    }],
                })
            }
            None => Err(super::StoreError::Corrupt(format!(
                "a ledger key of {} bytes names no known record",
                key.len()
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLimits {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
    pub engagement: u32,
    pub weekly_invites: Option<u32>,
    pub campaign: u32,
}

impl LedgerLimits {
    pub fn of(l: &Limits, kind: Kind) -> LedgerLimits {
        let campaign = crate::policy::CampaignType::of(kind).map_or(u32::MAX, |t| l.campaign.get(t));
        LedgerLimits {
            invites: l.invites,
            messages: l.messages,
            inmails: l.inmails,
            engagement: l.engagement,
            weekly_invites: l.weekly_invites,
            campaign,
        }
    }
}

pub type CampaignDayRec = CampaignDay;

/// Actions per state, indexed by `State::index` (`meta/state_counts`; on disk by
/// `wire::StateW` tag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; 7]);

/// A job file committed but not yet reported (`meta/unreported/<files key>`): written by
/// the transaction that commits the file, removed once its `file_applied` line is
/// logged. One found at start-up belongs to a file whose worker died in between (SPEC
/// §6): it is reported then, with these counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileReport {
    pub name: String,
    /// Its content hash (`codec::content_hash`), the other half of its `files` key.
    pub hash: u64,
    pub accounts: u32,
    pub campaigns: u32,
    pub actions: u32,
    pub duplicates: u32,
    pub events: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// The layout-1 fields in their order, as a store written before layout 2 holds them.
    #[derive(Serialize)]
    struct V1Written<'a> {
        id: &'a str,
        tier: Tier,
        timezone: &'a str,
        window: Window,
        ramp_start: NaiveDate,
        established: bool,
        proxy: Option<String>,
        caps: AccountCaps,
        credits: u32,
        refill_day: u32,
        last_refill_ms: i64,
        ramp_ceiling: u32,
        ramp_history: Vec<(NaiveDate, u32)>,
        last_reserved_ms: Option<i64>,
        ramp_steps: i64,
        health: Health,
        restricted: bool,
        held_until_ms: Option<i64>,
        maintained_day: NaiveDate,
    }

    #[test]
    fn a_layout_1_account_still_reads() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
        let old = V1Written {
            id: "a1",
            tier: Tier::Free,
            timezone: "Pacific/Kiritimati",
            window: Window::default(),
            ramp_start: day,
            established: true,
            proxy: None,
            caps: AccountCaps::default(),
            credits: 3,
            refill_day: 1,
            last_refill_ms: 0,
            ramp_ceiling: 20,
            ramp_history: vec![(day, 20)],
            last_reserved_ms: Some(5),
            ramp_steps: 0,
            health: Health::Healthy,
            restricted: false,
            held_until_ms: None,
            maintained_day: day,
        };
        let bytes = super::super::codec::seal_v1(&old);
        assert_eq!(bytes[0], 0, "layout 1");
        let a = Account::decode(&bytes).expect("layout 1 reads");
        assert_eq!(
            (a.id.as_str(), a.timezone.as_str(), a.credits),
            ("a1", "Pacific/Kiritimati", 3)
        );
        assert_eq!(a.pending_zone, None);
        assert_eq!(a.summarised_day, day.pred_opt());
        // Written back as layout 2, it round-trips.
        let mut b = a.clone();
        b.pending_zone = Some(PendingZone {
            timezone: "Pacific/Pago_Pago".into(),
            from_ms: 7,
            last_old_day: day,
        });
        let bytes = b.encode();
        assert_eq!(bytes[0], 1, "layout 2");
        assert_eq!(Account::decode(&bytes).expect("layout 2 reads"), b);
        // The generic decoder goes through the same wire layouts.
        assert_eq!(
            super::super::codec::decode::<Account>("account", &bytes).expect("reads"),
            b
        );
    }
}
