//! Queries for the engine and the CLI: due times, the fair pick, status, the audit
//! that recomputes every counter from the ledger, and retention.

use super::codec::{self, from_be_i64, from_ms, ms};
use super::records::{AccountDayRec, Action, LedgerEntry, LedgerItem, LedgerRelease, State};
use super::reserve::Change;
use super::{Store, StoreError, ACCOUNTS, ACTIONS, CAMPAIGNS, DAYS, LEDGER, READY, TIMED, WAITING};
use crate::policy::caps::{draws, CampaignDay, Counter};
use crate::policy::window::local_day;
use crate::policy::CampaignType;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Retention never goes below this many days, whatever `store.retention_days` says:
/// counters of the last 17 local days decide health and the rolling week.
pub const MIN_RETENTION_DAYS: u32 = 30;

/// Actions moved from `timed` to `ready` per transaction.
pub const PROMOTE_BATCH: usize = 512;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountStatus {
    pub id: String,
    pub tier: String,
    pub timezone: String,
    pub local_day: NaiveDate,
    pub invites: (u32, u32),
    pub messages: (u32, u32),
    pub inmails: (u32, u32),
    pub engagement: (u32, u32),
    pub weekly_invites: Option<u32>,
    pub ramp_ceiling: u32,
    pub health: String,
    pub held_until: Option<DateTime<Utc>>,
    pub inmail_balance: u32,
    pub sent_today: u32,
}

/// The upstream circuit breaker (SPEC §8 `upstream`): `state` is `up` or `down`, and
/// `since` when it became so (`null`: up since the worker started). Only a running
/// worker knows it; read from the store alone it is `up`, the state a worker starts in.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    pub at: DateTime<Utc>,
    pub upstream: UpstreamStatus,
    pub accounts: Vec<AccountStatus>,
    pub actions: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overshoot {
    pub owner: String,
    pub day: NaiveDate,
    pub counter: String,
    pub count: u32,
    pub limit: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditReport {
    pub entries: u64,
    /// Reservations given back because their attempt was not delivered (SPEC §3).
    pub releases: u64,
    pub overshoots: Vec<Overshoot>,
    /// Stored counters that differ from the ledger's totals.
    pub mismatches: Vec<String>,
}

impl AuditReport {
    pub fn clean(&self) -> bool {
        self.overshoots.is_empty() && self.mismatches.is_empty()
    }
}

/// Count one more and return (the new count, `limit`).
fn bump(counter: &mut u32, limit: u32) -> (u32, u32) {
    *counter += 1;
    (*counter, limit)
}

#[derive(Default)]
struct Tally {
    day: AccountDayRec,
}

/// Take a release off the running counts of the reservation's days (P1 is judged on
/// reservations minus releases). A release with nothing to take from is a mismatch.
fn subtract(
    acct: &mut BTreeMap<(String, NaiveDate), Tally>,
    camp: &mut BTreeMap<(String, NaiveDate), CampaignDay>,
    r: &LedgerRelease,
) -> Result<(), String> {
    let day = &mut acct
        .entry((r.account.clone(), r.account_day))
        .or_default()
        .day
        .reserved;
    let c = camp.entry((r.campaign.clone(), r.campaign_day)).or_default();
    if crate::policy::caps::give_back(r.kind, day, c) {
        Ok(())
    } else {
        Err(format!(
            "release of {} attempt {} ({} {}): no such reservation counted",
            r.action, r.attempt, r.account, r.account_day
        ))
    }
}

impl Store {
    /// The earliest time an action waiting on a time becomes due.
    pub fn next_timed(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.op("next timed")?;
        Ok(self.trees[TIMED].first()?.map(|(k, _)| from_ms(from_be_i64(&k))))
    }

    /// Move up to `PROMOTE_BATCH` actions whose time has come to `ready`; returns the
    /// accounts that gained work. Call until it returns empty.
    pub fn promote_due(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.op("scan timed")?;
        let end = codec::be_i64(ms(now).saturating_add(1));
        let keys: Vec<sled::IVec> = self.trees[TIMED]
            .range(..end.to_vec())
            .keys()
            .take(PROMOTE_BATCH)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.transact(|tx| {
            let mut accounts = Vec::new();
            for k in &keys {
                tx.del(TIMED, k)?;
                let id = String::from_utf8_lossy(&k[8..]).into_owned();
                let Some(old) = tx.action(&id)? else { continue };
                if !matches!(old.state, State::Queued | State::Parked) || old.until_ms.is_none() {
                    continue;
                }
                let mut a = old.clone();
                a.state = State::Queued;
                a.until_ms = None;
                a.updated_ms = ms(now);
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

    /// Accounts with at least one ready action, in id order (one seek per account).
    pub fn ready_accounts(&self) -> Result<Vec<String>, StoreError> {
        self.op("scan ready")?;
        let mut out = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some((k, _)) = self.trees[READY].range(from.clone()..).next().transpose()? {
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
        let ready = &self.trees[READY];
        let first_after = match after {
            Some(c) => ready
                .range(codec::ready_after_campaign(account, c)..)
                .next()
                .transpose()?
                .filter(|(k, _)| k.starts_with(&prefix)),
            None => None,
        };
        let hit = match first_after {
            Some(kv) => Some(kv),
            None => ready.scan_prefix(&prefix).next().transpose()?,
        };
        Ok(hit.and_then(|(k, v)| {
            let (_, campaign) = codec::split_ready_key(&k)?;
            Some((campaign, String::from_utf8_lossy(&v).into_owned()))
        }))
    }

    /// Per account: today's counters against caps, ramp, health, hold, credits; and
    /// action counts per state.
    pub fn status(&self, now: DateTime<Utc>) -> Result<StatusReport, StoreError> {
        let policy = &self.settings.policy;
        let mut accounts = Vec::new();
        for a in self.accounts()? {
            let day = local_day(a.tz(), now);
            let rec = self.account_day(&a.id, day)?;
            let caps = a.caps(policy);
            accounts.push(AccountStatus {
                tier: a.tier.as_str().to_string(),
                timezone: a.timezone.clone(),
                local_day: day,
                invites: (rec.reserved.invites, a.invite_cap(policy, day)),
                messages: (rec.reserved.messages, caps.messages),
                inmails: (rec.reserved.inmails, caps.inmails),
                engagement: (rec.reserved.engagement, caps.engagement),
                weekly_invites: caps.weekly_invites,
                ramp_ceiling: a.ramp_ceiling_on(day),
                health: a.health.as_str().to_string(),
                held_until: a.held_until_ms.filter(|&h| h > ms(now)).map(from_ms),
                inmail_balance: a.credits,
                sent_today: rec.sent(),
                id: a.id,
            });
        }
        let counts = self.state_counts()?;
        let actions = State::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), counts[s.index()]))
            .collect();
        Ok(StatusReport {
            at: now,
            upstream: UpstreamStatus::default(),
            accounts,
            actions,
        })
    }

    /// Recompute every counter from the ledger, check each reservation against the
    /// limits in force when it was taken, and compare totals with stored counters.
    pub fn audit(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<AuditReport, StoreError> {
        self.op("scan ledger")?;
        let in_range = |d: NaiveDate| from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t);
        let mut report = AuditReport::default();
        let mut acct: BTreeMap<(String, NaiveDate), Tally> = BTreeMap::new();
        let mut camp: BTreeMap<(String, NaiveDate), CampaignDay> = BTreeMap::new();
        let mut over = |owner: &str, day: NaiveDate, counter: &str, count: u32, limit: u32| {
            if count > limit {
                report.overshoots.push(Overshoot {
                    owner: owner.to_string(),
                    day,
                    counter: counter.to_string(),
                    count,
                    limit,
                });
            }
        };
        // Retention prunes the ledger oldest first: a release of a reservation before
        // the first id left names a pruned one and has nothing to subtract from.
        let first_id = self.trees[LEDGER]
            .first()?
            .and_then(|(k, _)| codec::ledger_id(&k))
            .unwrap_or(0);
        let (mut releases, mut bad_releases) = (0u64, Vec::new());
        for kv in self.trees[LEDGER].iter() {
            let (k, v) = kv?;
            if codec::is_release_key(&k) {
                let r: LedgerRelease = codec::decode("ledger release", &v)?;
                if r.reservation >= first_id {
                    releases += 1;
                    if let Err(m) = subtract(&mut acct, &mut camp, &r) {
                        bad_releases.push(m);
                    }
                }
                continue;
            }
            let e: LedgerEntry = codec::decode("ledger entry", &v)?;
            let l = e.limits;
            // Every counter the kind draws from, in the policy's own table; the
            // running count is checked against the limit recorded with the entry.
            for &counter in draws(e.kind) {
                let d = &mut acct
                    .entry((e.account.clone(), e.account_day))
                    .or_default()
                    .day
                    .reserved;
                let (count, limit) = match counter {
                    Counter::Invites => bump(&mut d.invites, l.invites),
                    Counter::Messages => bump(&mut d.messages, l.messages),
                    Counter::Inmails => bump(&mut d.inmails, l.inmails),
                    Counter::Engagement => bump(&mut d.engagement, l.engagement),
                    Counter::WeeklyInvites => {
                        let Some(w) = l.weekly_invites else { continue };
                        let week: u32 = (0..7)
                            .map(|ago| {
                                let day = e.account_day - Duration::days(ago);
                                acct.get(&(e.account.clone(), day))
                                    .map_or(0, |t| t.day.reserved.invites)
                            })
                            .sum();
                        (week, w)
                    }
                    // A balance, not a daily counter: it cannot go below zero.
                    Counter::InmailCredits => continue,
                };
                over(&e.account, e.account_day, counter.as_str(), count, limit);
            }
            if let Some(t) = CampaignType::of(e.kind) {
                let c = camp.entry((e.campaign.clone(), e.campaign_day)).or_default();
                let n = match t {
                    CampaignType::Invites => &mut c.invites,
                    CampaignType::Messages => &mut c.messages,
                    CampaignType::Inmails => &mut c.inmails,
                };
                *n += 1;
                over(
                    &e.campaign,
                    e.campaign_day,
                    &format!("campaign.{}", t.as_str()),
                    *n,
                    l.campaign,
                );
            }
            report.entries += 1;
        }
        report.releases = releases;
        report.mismatches.extend(bad_releases);
        report.overshoots.retain(|o| in_range(o.day));
        // Stored counters must equal the ledger's totals (a day fully pruned from the
        // ledger is pruned from the counters too).
        for ((account, day), t) in &acct {
            let stored = self.account_day(account, *day)?;
            if stored.reserved != t.day.reserved && in_range(*day) {
                report.mismatches.push(format!(
                    "account {account} {day}: stored {:?}, ledger {:?}",
                    stored.reserved, t.day.reserved
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
        let days = self.settings.retention_days.max(MIN_RETENTION_DAYS);
        let cutoff = ms(now - Duration::days(i64::from(days)));
        let mut removed = 0;
        self.op("scan ledger")?;
        let mut old_ledger = Vec::new();
        for kv in self.trees[LEDGER].iter().take(max) {
            let (k, v) = kv?;
            let e = LedgerItem::decode(&k, &v)?;
            if e.at_ms >= cutoff {
                break;
            }
            old_ledger.push((k, e));
        }
        self.op("scan actions")?;
        let mut old_actions = Vec::new();
        for kv in self.trees[ACTIONS].iter() {
            if old_actions.len() >= max {
                break;
            }
            let (k, v) = kv?;
            let a: Action = codec::decode("action", &v)?;
            if a.state.finished() && a.updated_ms < cutoff {
                old_actions.push((k, a.state));
            }
        }
        if old_ledger.is_empty() && old_actions.is_empty() {
            return Ok(0);
        }
        let result = self.transact(|tx| {
            for (k, e) in &old_ledger {
                tx.del(LEDGER, k)?;
                tx.del(DAYS, &codec::account_day_key(&e.account, e.account_day))?;
                tx.del(DAYS, &codec::campaign_day_key(&e.campaign, e.campaign_day))?;
            }
            for (k, _) in &old_actions {
                tx.del(ACTIONS, k)?;
            }
            Ok(())
        })?;
        result.map_err(|r| StoreError::Corrupt(r.reason))?;
        let mut counts = self.state_counts()?;
        for (_, s) in &old_actions {
            counts[s.index()] = counts[s.index()].saturating_sub(1);
        }
        self.trees[super::META].insert(super::META_COUNTS, codec::encode(&counts))?;
        removed += old_ledger.len() + old_actions.len();
        self.make_durable()?;
        Ok(removed)
    }

    /// Release actions parked on an event whose owner is active again (self-healing
    /// after a crash between a resume and its release).
    pub fn release_stale_waiting(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.op("scan waiting")?;
        let mut owners = std::collections::BTreeSet::new();
        for k in self.trees[WAITING].iter().keys() {
            let k = k?;
            let mut parts = k.splitn(3, |&b| b == 0);
            let (Some(kind), Some(owner)) = (parts.next(), parts.next()) else {
                continue;
            };
            owners.insert((kind.to_vec(), String::from_utf8_lossy(owner).into_owned()));
        }
        for (kind, owner) in owners {
            let active = if kind == b"c" {
                self.trees[CAMPAIGNS]
                    .get(owner.as_bytes())?
                    .map(|v| codec::decode::<super::Campaign>("campaign", &v))
                    .transpose()?
                    .is_some_and(|c| !c.paused)
            } else {
                self.trees[ACCOUNTS]
                    .get(owner.as_bytes())?
                    .map(|v| codec::decode::<super::Account>("account", &v))
                    .transpose()?
                    .is_some_and(|a| !a.restricted)
            };
            if active {
                self.release(&kind, &owner, now)?;
            }
        }
        Ok(())
    }

    /// Run maintenance (refill, health, ramp) for one account at `now`; the engine
    /// calls it at each local day boundary. Returns what changed.
    pub fn maintain(&self, account: &str, now: DateTime<Utc>) -> Result<Vec<Change>, StoreError> {
        let st = &self.settings;
        let result = self.transact(|tx| {
            let mut changes = Vec::new();
            if let Some(mut a) = tx.account(account)? {
                super::reserve::maintain(tx, &mut a, now, st, &mut changes)?;
                tx.put_account(&a)?;
            }
            Ok(changes)
        })?;
        let changes = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if !changes.is_empty() {
            self.make_durable()?;
        }
        Ok(changes)
    }

    /// The counters of one account on one local day.
    pub fn account_day(&self, account: &str, day: NaiveDate) -> Result<AccountDayRec, StoreError> {
        self.day_record(&codec::account_day_key(account, day), "account day")
    }

    /// A `days` record, or zeroes for a day nothing was counted on.
    fn day_record<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<T, StoreError> {
        self.op("read day")?;
        match self.trees[DAYS].get(key)? {
            Some(v) => codec::decode(what, &v),
            None => Ok(T::default()),
        }
    }
}
