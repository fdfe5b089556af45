//! Queries for the engine and the CLI: due times, the fair pick, status, the audit
//! that recomputes every counter from the ledger, and retention.

use super::codec::{self, from_be_i64, from_ms, ms};
use super::records::{
    AccountDayRec, Action, LedgerEntry, LedgerItem, LedgerRelease, LedgerReservations, State,
};
use super::reserve::Change;
use super::{Store, StoreError, ACCOUNTS, ACTIONS, CAMPAIGNS, DAYS, LEDGER, LINKS, READY, TIMED, WAITING};
use crate::policy::caps::{CampaignDay, Counter};
use crate::policy::{health, ramp};
use crate::rules::audit::Recount;
pub use crate::rules::audit::{LedgerSum, Overshoot};
use crate::rules::records::{self, RedZoneNote};
use crate::rules::{maintain, park};
use chrono::{DateTime, Duration, NaiveDate, Utc};
pub use maintain::DaySummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Retention never goes below this many days: counters of the last 17 local days decide
/// health and the rolling week. The configuration refuses a lower
/// `store.retention_days` (exit 78); prune keeps the floor only as a defence.
pub const MIN_RETENTION_DAYS: u32 = 30;

/// Tombstones of pruned action ids are kept this long after pruning (at least a
/// year, SPEC: an id is never new twice).
pub const TOMBSTONE_DAYS: i64 = 400;

/// Actions moved from `timed` to `ready` per transaction.
pub const PROMOTE_BATCH: usize = 512;

/// Today's use of one counter against the cap in force (`null`: no cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    pub used: u32,
    pub cap: Option<u32>,
}

impl Use {
    fn of(used: u32, cap: u32) -> Use {
        Use { used, cap: Some(cap) }
    }
}

/// An account's counters on its local day (SPEC §8 `today`). `invites.cap` is the
/// effective cap `min(caps.invites, tier ceiling, ramp ceiling)`; `weekly_invites.used`
/// is the invites reserved over the 7 local days ending today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountToday {
    pub invites: Use,
    pub messages: Use,
    pub inmails: Use,
    pub engagement: Use,
    pub weekly_invites: Use,
}

/// Waiting actions of one reason (SPEC §8 `waiting`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub reason: String,
    pub count: u64,
    pub until: Option<DateTime<Utc>>,
}

/// One account in `status` (SPEC §8). `tier`, `timezone`, `timezone_next`,
/// `local_day` and `sent_today` are additions to the SPEC's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub id: String,
    pub health: String,
    /// What health was judged on: acceptance and its sample, rate limits in 7 days,
    /// restriction.
    pub health_reason: String,
    pub ramp_ceiling: u32,
    /// The warm-up week of today: 1 from `ramp_start`, one more per 7 days.
    pub ramp_week: u32,
    /// Paused by the operator (`sendgate pause --account`); `paused_all` stops it too.
    pub paused: bool,
    pub held_until: Option<DateTime<Utc>>,
    pub inmail_credits: u32,
    /// When the next send is due, judged from the store (`null`: paused, restricted,
    /// or no work that comes due by itself). Filled by `Store::status_detail`.
    pub next_send: Option<DateTime<Utc>>,
    pub today: AccountToday,
    /// Waiting actions by reason with the earliest until: parked ones by their reason,
    /// queued ones by `not_before` / `retry`, and due ones by why they wait now
    /// (`due`, `window`, `held`, `paused`, `account_restricted`). Filled by
    /// `Store::status_detail`.
    pub waiting: Vec<Waiting>,
    pub tier: String,
    /// The zone in force now.
    pub timezone: String,
    /// A zone change decided but not yet in force, and when it takes effect.
    pub timezone_next: Option<(String, DateTime<Utc>)>,
    pub local_day: NaiveDate,
    pub sent_today: u32,
    /// The campaigns this account draws from (listing it, or holding its waiting
    /// actions), with their use today against their caps.
    #[serde(default)]
    pub campaigns: Vec<AccountCampaign>,
}

/// One campaign cap set an account draws from (`accounts[].campaigns`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCampaign {
    pub id: String,
    pub today: CampaignToday,
}

/// A campaign's counters on its local day, per type (SPEC §8: `invite`, `message`,
/// `inmail`), against its caps (`cap_split.<type>`, else `daily_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignToday {
    pub invite: Use,
    pub message: Use,
    pub inmail: Use,
}

/// One campaign in `status` (SPEC §8). `timezone`, `timezone_next` and `local_day` are
/// additions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignStatus {
    pub id: String,
    /// Paused by its job file (`status: paused`, `campaign_paused`).
    pub paused: bool,
    pub today: CampaignToday,
    /// Actions per state (only states it has). Filled by `Store::status_detail`.
    pub states: BTreeMap<String, u64>,
    /// The zone in force now.
    pub timezone: String,
    /// A zone change decided but not yet in force, and when it takes effect.
    #[serde(default)]
    pub timezone_next: Option<(String, DateTime<Utc>)>,
    pub local_day: NaiveDate,
    /// Paused by the operator (`sendgate pause --campaign`); `paused` is the job file's.
    #[serde(default)]
    pub operator_paused: bool,
}

/// The upstream circuit breaker (SPEC §8 `upstream`): `state` is `up` or `down`, and
/// `since` when it became so (`null`: up since the worker started). Only a running
/// worker knows it; read from the store alone it is `up`, the state a worker starts in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    pub state: String,
    pub since: Option<DateTime<Utc>>,
}

impl Default for UpstreamStatus {
    fn default() -> Self {
        UpstreamStatus {
            state: "up".into(),
            since: None,
        }
    }
}

/// `status --json` (SPEC §8): fields may be added, never renamed or removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    /// The operator kill switch (`sendgate pause --all`).
    pub paused_all: bool,
    pub upstream: UpstreamStatus,
    /// Action counts per state, every state present.
    pub states: BTreeMap<String, u64>,
    pub accounts: Vec<AccountStatus>,
    pub campaigns: Vec<CampaignStatus>,
    /// False when the actions were too many to read for `waiting` and campaign
    /// `states` (`admin::ops::STATUS_SCAN_MAX`); those are then partial.
    #[serde(default = "yes")]
    pub detail_complete: bool,
    /// The fleet (SPEC §12), with `[cluster]` only; a running worker's view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub entries: u64,
    /// Reservations given back because their attempt was not delivered (SPEC §3).
    pub releases: u64,
    pub overshoots: Vec<Overshoot>,
    /// Stored counters that differ from the ledger's totals.
    pub mismatches: Vec<String>,
    /// The ledger's totals per owner, local day and counter (reservations less
    /// releases), for `audit --cluster` to compare with the fleet's counters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sums: Vec<LedgerSum>,
}

impl AuditReport {
    pub fn clean(&self) -> bool {
        self.overshoots.is_empty() && self.mismatches.is_empty()
    }
}

/// What a day turn did: changes to log, the days it summarised, and when the
/// account's next day begins (`None` for an unknown account).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DayTurn {
    pub changes: Vec<Change>,
    pub summaries: Vec<DaySummary>,
    pub next: Option<DateTime<Utc>>,
}

impl Store {
    /// The earliest time an action waiting on a time becomes due.
    pub fn next_timed(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.op("next timed")?;
        let first = self.seen_range(TIMED, Bound::Unbounded, Bound::Unbounded, 1)?;
        Ok(first.first().map(|(k, _)| from_ms(from_be_i64(k))))
    }

    /// Move up to `PROMOTE_BATCH` actions whose time has come to `ready`; returns the
    /// accounts that gained work. Call until it returns empty.
    pub fn promote_due(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.op("scan timed")?;
        let end = codec::be_i64(ms(now).saturating_add(1));
        let keys: Vec<sled::IVec> = self
            .seen_range(TIMED, Bound::Unbounded, Bound::Excluded(&end), PROMOTE_BATCH)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.transact_behind(|tx| {
            let mut accounts = Vec::new();
            for k in &keys {
                tx.del(TIMED, k)?;
                let id = String::from_utf8_lossy(&k[8..]).into_owned();
                let Some(old) = tx.action(&id)? else { continue };
                let Some(a) = park::promote(&old, now) else {
                    continue;
                };
                tx.transition(&old, &a, None)?;
                accounts.push(a.account);
            }
            tx.flush_counts()?;
            Ok(accounts)
        })?;
        let mut accounts = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        self.make_durable()?;
        accounts.sort();
        accounts.dedup();
        Ok(accounts)
    }

    /// Whether `account` has a ready action (one seek).
    pub fn has_ready(&self, account: &str) -> Result<bool, StoreError> {
        self.op("scan ready")?;
        let prefix = codec::account_prefix(account);
        let end = codec::account_prefix_end(account);
        let first = self.seen_range(READY, Bound::Included(&prefix), Bound::Excluded(&end), 1)?;
        Ok(!first.is_empty())
    }

    /// Accounts with at least one ready action, in id order (one seek per account).
    pub fn ready_accounts(&self) -> Result<Vec<String>, StoreError> {
        self.op("scan ready")?;
        let mut out = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some((k, _)) = self
            .seen_range(READY, Bound::Included(&from), Bound::Unbounded, 1)?
            .into_iter()
            .next()
        {
            let Some((account, _)) = codec::split_ready_key(&k) else {
                break;
            };
            from = account.as_bytes().to_vec();
            from.push(1);
            out.push(account);
        }
        Ok(out)
    }

    /// The next action of `account` in fair order: round robin over its campaigns
    /// starting after `after` (the campaign served last), then priority, then age.
    pub fn pick(&self, account: &str, after: Option<&str>) -> Result<Option<(String, String)>, StoreError> {
        self.op("pick")?;
        let prefix = codec::account_prefix(account);
        let end = codec::account_prefix_end(account);
        let first_from = |from: &[u8]| -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
            Ok(self
                .seen_range(READY, Bound::Included(from), Bound::Excluded(&end), 1)?
                .into_iter()
                .next()
                .filter(|(k, _)| k.starts_with(&prefix)))
        };
        let first_after = match after {
            Some(c) => first_from(&codec::ready_after_campaign(account, c))?,
            None => None,
        };
        let hit = match first_after {
            Some(kv) => Some(kv),
            None => first_from(&prefix)?,
        };
        Ok(hit.and_then(|(k, v)| {
            let (_, campaign) = codec::split_ready_key(&k)?;
            Some((campaign, String::from_utf8_lossy(&v).into_owned()))
        }))
    }

    /// Per account: today's counters against the caps in force, ramp, health and its
    /// reason, hold, credits; per campaign: today's counters against its caps; action
    /// counts per state. Reads O(accounts × 18 + campaigns) records, never the actions.
    pub fn status(&self, now: DateTime<Utc>) -> Result<StatusReport, StoreError> {
        let policy = &self.settings.policy;
        let mut accounts = Vec::new();
        // Read through what is behind: the status file and the metrics never make the
        // send path's batches catch up (a write between a reservation's sync and its send).
        let feedback_seen = self.seen_get(super::META, super::META_FEEDBACK_SEEN)?.is_some();
        for a in self.accounts()? {
            let zones = a.zones().settled(now);
            let day = zones.day_at(now);
            // The last 18 local days: today, the rolling week, and the health window.
            let back = health::ACCEPTANCE_TO_DAYS_AGO
                .max(health::RATE_LIMIT_DAYS - 1)
                .max(6);
            let days = (0..=back)
                .map(|ago| self.account_day(&a.id, day - Duration::days(ago)))
                .collect::<Result<Vec<_>, _>>()?;
            let rec = days[0];
            let caps = a.caps(policy);
            let week: u32 = days[..7].iter().map(|d| d.reserved.invites).sum();
            let signals = maintain::signals(a.restricted, feedback_seen, &days);
            let weeks = ramp::boundaries_passed(
                i64::from(codec::day_num(a.ramp_start)),
                i64::from(codec::day_num(day)),
            );
            accounts.push(AccountStatus {
                health: a.health.as_str().to_string(),
                health_reason: maintain::health_reason(&signals),
                ramp_ceiling: a.ramp_ceiling_on(day),
                ramp_week: u32::try_from(weeks + 1).unwrap_or(u32::MAX),
                paused: false,
                held_until: a.held_until_ms.filter(|&h| h > ms(now)).map(from_ms),
                inmail_credits: a.credits,
                next_send: None,
                today: AccountToday {
                    invites: Use::of(rec.reserved.invites, a.invite_cap(policy, day)),
                    messages: Use::of(rec.reserved.messages, caps.messages),
                    inmails: Use::of(rec.reserved.inmails, caps.inmails),
                    engagement: Use::of(rec.reserved.engagement, caps.engagement),
                    weekly_invites: Use {
                        used: week,
                        cap: caps.weekly_invites,
                    },
                },
                waiting: Vec::new(),
                tier: a.tier.as_str().to_string(),
                timezone: zones.zone_at(now).name().to_string(),
                timezone_next: zones.pending.map(|p| (p.zone.name().to_string(), p.from)),
                local_day: day,
                sent_today: rec.sent(),
                campaigns: Vec::new(),
                id: a.id,
            });
        }
        self.op("scan campaigns")?;
        let mut campaigns = Vec::new();
        for kv in self.seen_iter(CAMPAIGNS, Bound::Unbounded, Bound::Unbounded)? {
            let (k, v) = kv?;
            let c: super::Campaign = codec::decode_at("campaign", &k, &v)?;
            let zones = c.zones().settled(now);
            let day = zones.day_at(now);
            let used: CampaignDay = self.day_record(&codec::campaign_day_key(&c.id, day), "campaign day")?;
            let caps = c.limits();
            campaigns.push(CampaignStatus {
                paused: c.paused,
                today: CampaignToday {
                    invite: Use::of(used.invites, caps.invites),
                    message: Use::of(used.messages, caps.messages),
                    inmail: Use::of(used.inmails, caps.inmails),
                },
                states: BTreeMap::new(),
                timezone: zones.zone_at(now).name().to_string(),
                timezone_next: zones.pending.map(|p| (p.zone.name().to_string(), p.from)),
                local_day: day,
                operator_paused: false,
                id: c.id,
            });
        }
        let counts = self.state_counts()?;
        let states = State::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), counts[s.index()]))
            .collect();
        Ok(StatusReport {
            now,
            paused_all: false,
            upstream: UpstreamStatus::default(),
            states,
            accounts,
            campaigns,
            detail_complete: true,
            cluster: None,
        })
    }

    /// Recompute every counter from the ledger, check each reservation against the
    /// limits in force when it was taken, and compare totals with stored counters.
    pub fn audit(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<AuditReport, StoreError> {
        self.op("scan ledger")?;
        let in_range = |d: NaiveDate| from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t);
        let mut report = AuditReport::default();
        let mut recount = Recount::default();
        // Retention prunes the ledger oldest first: a release of a reservation before
        // the first id left names a pruned one and has nothing to subtract from.
        let first_id = self.trees()?[LEDGER]
            .first()?
            .and_then(|(k, _)| codec::ledger_id(&k))
            .unwrap_or(0);
        for kv in self.trees()?[LEDGER].iter() {
            let (k, v) = kv?;
            // Outcomes move no counter: nothing to sum.
            if codec::ledger_kind(&k) == Some(codec::LedgerKind::Outcomes) {
                continue;
            }
            if codec::is_release_key(&k) {
                let r: LedgerRelease = codec::decode_at("ledger release", &k, &v)?;
                if r.reservation >= first_id {
                    recount.release(&r);
                }
                continue;
            }
            let entries = match codec::ledger_kind(&k) {
                Some(codec::LedgerKind::Reservations) => {
                    codec::decode_at::<LedgerReservations>("ledger reservations", &k, &v)?.entries
                }
                _ => vec![codec::decode_at::<LedgerEntry>("ledger entry", &k, &v)?],
            };
            for e in &entries {
                recount.reservation(e, in_range);
            }
        }
        report.entries = recount.entries;
        report.releases = recount.releases;
        report.mismatches.append(&mut recount.overlaps);
        report.mismatches.append(&mut recount.bad_releases);
        report.overshoots = std::mem::take(&mut recount.overshoots);
        report.overshoots.retain(|o| in_range(o.day));
        report.sums = recount.sums(in_range);
        let (acct, camp) = (recount.accounts, recount.campaigns);
        // Stored counters must equal the ledger's totals (a day fully pruned from the
        // ledger is pruned from the counters too).
        for ((account, day), t) in &acct {
            let stored = self.account_day(account, *day)?;
            if stored.reserved != *t && in_range(*day) {
                report.mismatches.push(format!(
                    "account {account} {day}: stored {:?}, ledger {t:?}",
                    stored.reserved
                ));
            }
        }
        for ((campaign, day), t) in &camp {
            let stored: CampaignDay =
                self.day_record(&codec::campaign_day_key(campaign, *day), "campaign day")?;
            if stored != *t && in_range(*day) {
                report.mismatches.push(format!(
                    "campaign {campaign} {day}: stored {stored:?}, ledger {t:?}"
                ));
            }
        }
        Ok(report)
    }

    /// Prune finished actions and ledger entries (and their day counters) older than
    /// `store.retention_days`. Bounded work per call; returns how many were removed.
    pub fn prune(&self, now: DateTime<Utc>, max: usize) -> Result<usize, StoreError> {
        // Day counters feed weekly caps and 17-day health: never prune inside that reach.
        debug_assert!(
            self.settings.retention_days >= MIN_RETENTION_DAYS,
            "config validation refuses store.retention_days below {MIN_RETENTION_DAYS}"
        );
        let days = self.settings.retention_days.max(MIN_RETENTION_DAYS);
        let cutoff = ms(now - Duration::days(i64::from(days)));
        // Applied feed event ids, in their own bounded pass.
        let mut removed = self.prune_feed_events(now, max)?;
        self.op("scan ledger")?;
        let mut old_ledger = Vec::new();
        for kv in self.trees()?[LEDGER].iter().take(max) {
            let (k, v) = kv?;
            let e = LedgerItem::decode(&k, &v)?;
            if e.at_ms >= cutoff {
                break;
            }
            old_ledger.push((k, e));
        }
        self.op("scan actions")?;
        let mut old_actions = Vec::new();
        for kv in self.trees()?[ACTIONS].iter() {
            if old_actions.len() >= max {
                break;
            }
            let (k, v) = kv?;
            let a: Action = self.action_at(&k, &v)?;
            if a.state.finished() && a.updated_ms < cutoff {
                old_actions.push(a);
            }
        }
        self.op("scan tombstones")?;
        let tomb_cutoff = codec::tombstone_expiry_bound(ms(now - Duration::days(TOMBSTONE_DAYS)));
        let expired: Vec<(sled::IVec, sled::IVec)> = self.trees()?[LINKS]
            .range(codec::TOMBSTONE_EXPIRY_PREFIX.to_vec()..tomb_cutoff)
            .take(max)
            .collect::<Result<_, _>>()?;
        if old_ledger.is_empty() && old_actions.is_empty() && expired.is_empty() {
            return Ok(removed);
        }
        let pruned_ms = ms(now);
        let result = self.transact(|tx| {
            for (k, e) in &old_ledger {
                tx.del(LEDGER, k)?;
                for d in &e.days {
                    tx.del(DAYS, &codec::account_day_key(&d.account, d.account_day))?;
                    tx.del(DAYS, &codec::campaign_day_key(&d.campaign, d.campaign_day))?;
                }
            }
            for (k, tomb) in &expired {
                tx.del(LINKS, k)?;
                tx.del(LINKS, tomb)?;
            }
            // The id stays taken: a compact tombstone instead of the action, and the
            // state counts change in the same transaction.
            for a in &old_actions {
                tx.remove_action(a)?;
                let tomb = codec::tombstone_key(&a.id);
                tx.put(LINKS, &tomb, &pruned_ms)?;
                tx.put_raw(LINKS, &codec::tombstone_expiry_key(pruned_ms, &a.id), &tomb)?;
            }
            tx.flush_counts()?;
            Ok(())
        })?;
        result.map_err(|r| StoreError::Corrupt(r.reason))?;
        removed += old_ledger.len() + old_actions.len();
        self.make_durable()?;
        Ok(removed)
    }

    /// Fold the zone changes of campaigns that came into force by `now` into their
    /// zones (`rules::maintain::settle_campaign`), at most `max` per call, in one
    /// transaction; returns how many. Nothing a campaign does changes: its days read
    /// the same from the zone and a pending change as from the zone alone.
    pub fn settle_campaigns(&self, now: DateTime<Utc>, max: usize) -> Result<usize, StoreError> {
        self.op("scan campaigns")?;
        let mut due = Vec::new();
        for kv in self.trees()?[CAMPAIGNS].iter() {
            if due.len() >= max {
                break;
            }
            let (k, v) = kv?;
            let c: super::Campaign = codec::decode_at("campaign", &k, &v)?;
            if maintain::settle_campaign(&c, now).is_some() {
                due.push(c.id);
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let result = self.transact(|tx| {
            let mut n = 0;
            for id in &due {
                let settled = tx.campaign(id)?.and_then(|c| maintain::settle_campaign(&c, now));
                if let Some(c) = settled {
                    tx.put_campaign(&c)?;
                    n += 1;
                }
            }
            Ok(n)
        })?;
        let n = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        // Nothing observable changed: the next durable commit carries it.
        self.flush_later();
        Ok(n)
    }

    /// Release actions parked on an event whose owner is active again (self-healing
    /// after a crash between a resume and its release).
    pub fn release_stale_waiting(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.op("scan waiting")?;
        let mut owners = std::collections::BTreeSet::new();
        for k in self.trees()?[WAITING].iter().keys() {
            let k = k?;
            let mut parts = k.splitn(3, |&b| b == 0);
            let (Some(kind), Some(owner)) = (parts.next(), parts.next()) else {
                continue;
            };
            owners.insert((kind.to_vec(), String::from_utf8_lossy(owner).into_owned()));
        }
        if owners.is_empty() {
            return Ok(());
        }
        // Operator holds, read once for every campaign owner.
        let pauses = self.pauses()?;
        for (kind, owner) in owners {
            let active = if kind == b"c" {
                let c = self.trees()?[CAMPAIGNS]
                    .get(owner.as_bytes())?
                    .map(|v| codec::decode_at::<super::Campaign>("campaign", owner.as_bytes(), &v))
                    .transpose()?;
                park::campaign_active(c.as_ref(), pauses.campaigns.contains(&owner))
            } else {
                let a = self.trees()?[ACCOUNTS]
                    .get(owner.as_bytes())?
                    .map(|v| codec::decode_at::<super::Account>("account", owner.as_bytes(), &v))
                    .transpose()?;
                park::account_active(a.as_ref())
            };
            if active {
                self.release(&kind, &owner, now)?;
            }
        }
        Ok(())
    }

    /// The day turn of one account at `now`, in one transaction: maintenance (refill,
    /// health, ramp), and a summary of every local day that ended since the last one
    /// summarised, which is remembered so that a restart or a clock jump neither
    /// repeats nor loses one (SPEC §11). A clock stepped back summarises nothing.
    pub fn day_turn(&self, account: &str, now: DateTime<Utc>) -> Result<DayTurn, StoreError> {
        let st = &self.settings;
        let result = self.transact_behind(|tx| {
            let mut turn = DayTurn::default();
            let Some(mut a) = tx.account(account)? else {
                return Ok(turn);
            };
            let before = a.clone();
            super::reserve::maintain(tx, &mut a, now, st, &mut turn.changes)?;
            let today = a.day_at(now);
            for day in maintain::unsummarised(&a, today) {
                let rec = tx.account_day(account, day)?;
                turn.summaries.push(maintain::summary(&a, day, rec, st));
            }
            if let Some(s) = turn.summaries.last() {
                maintain::summarised(&mut a, s.day);
            }
            if a != before {
                tx.put_account(&a)?;
            }
            turn.next = Some(a.zones().start_of_next_day(now));
            Ok(turn)
        })?;
        let turn = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if !turn.changes.is_empty() || !turn.summaries.is_empty() {
            self.make_durable()?;
        }
        Ok(turn)
    }

    /// The configured caps (`[caps]`) in the red zone (SPEC §3.1) not yet logged with
    /// their value: each is remembered, so it is logged once per value, not at every
    /// start or reload (a value that leaves the red zone is forgotten).
    pub fn config_red_zones(&self) -> Result<Vec<(&'static str, u32)>, StoreError> {
        let caps = self.settings.policy.caps;
        let mut out = Vec::new();
        let mut changed = false;
        for (counter, v) in [
            (Counter::Invites, caps.invites),
            (Counter::Messages, caps.messages),
            (Counter::Inmails, caps.inmails),
            (Counter::Engagement, caps.engagement),
        ] {
            let key = format!("red_zone/{}", counter.as_str());
            self.op("read red zone")?;
            let meta = &self.trees()?[super::META];
            let was: Option<u32> = meta
                .get(key.as_bytes())?
                .map(|b| codec::decode_at("red zone", key.as_bytes(), &b))
                .transpose()?;
            match records::config_red_zone(counter, v, was) {
                RedZoneNote::Log => {
                    out.push((counter.as_str(), v));
                    meta.insert(key.as_bytes(), codec::encode(&v))?;
                    changed = true;
                }
                RedZoneNote::Forget => {
                    meta.remove(key.as_bytes())?;
                    changed = true;
                }
                RedZoneNote::Keep => {}
            }
        }
        if changed {
            self.flush()?;
        }
        Ok(out)
    }

    /// The counters of one account on one local day.
    pub fn account_day(&self, account: &str, day: NaiveDate) -> Result<AccountDayRec, StoreError> {
        self.day_record(&codec::account_day_key(account, day), "account day")
    }

    /// A `days` record, or zeroes for a day nothing was counted on.
    fn day_record<T: codec::Value + Default>(&self, key: &[u8], what: &str) -> Result<T, StoreError> {
        self.op("read day")?;
        match self.seen_get(DAYS, key)? {
            Some(v) => codec::decode_at(what, key, &v),
            None => Ok(T::default()),
        }
    }
}
