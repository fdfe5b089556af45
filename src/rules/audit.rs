//! The audit's recount (SPEC §8 `audit`, P1), PURE: every reservation of the ledger
//! counted again on the counters its kind draws from and checked against the limits
//! recorded with it, each release taken off its reservation's days, and two local days
//! of an account, or of a campaign, that overlapped in real time found. The store reads the ledger in
//! order, feeds each record here, and compares the totals with its stored counters.

use crate::policy::caps::{draws, give_back, AccountDay, CampaignDay, CampaignType, Counter};
use crate::store::codec::from_ms;
use crate::store::records::{LedgerEntry, LedgerRelease};
use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A counter over the limit in force when its last slot was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overshoot {
    pub owner: String,
    pub day: NaiveDate,
    pub counter: String,
    pub count: u32,
    pub limit: u32,
}

/// One counter's total in this store's ledger: `owner` is `account` or `campaign`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSum {
    pub owner: String,
    pub id: String,
    pub day: NaiveDate,
    pub counter: String,
    pub count: u32,
}

/// The running recount, in ledger order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recount {
    /// Per account and local day: slots reserved less those given back.
    pub accounts: BTreeMap<(String, NaiveDate), AccountDay>,
    /// Per campaign and local day, likewise.
    pub campaigns: BTreeMap<(String, NaiveDate), CampaignDay>,
    /// Per account: the latest local day reserved on, and when it was first reserved
    /// on. A reservation on an earlier day after that instant means two days overlapped
    /// in real time (each may be under its cap, the account was not).
    latest: BTreeMap<String, (NaiveDate, i64)>,
    /// Per campaign, likewise: its days must not overlap either (SPEC §3.6).
    latest_campaign: BTreeMap<String, (NaiveDate, i64)>,
    pub entries: u64,
    pub releases: u64,
    /// Every counter found over its limit, on any day (the caller keeps its range).
    pub overshoots: Vec<Overshoot>,
    /// Days that overlapped, on a day in range.
    pub overlaps: Vec<String>,
    /// Releases with nothing to take from.
    pub bad_releases: Vec<String>,
}

/// One owner's (an account's or a campaign's) reservation on local `day` at `at_ms`,
/// given the latest day it reserved on and when that day's first reservation was:
/// the later day and its start when `day` is earlier and came after that start (two
/// days over the same hours), else `None`; a later day becomes the latest.
fn overlap(
    latest: &mut BTreeMap<String, (NaiveDate, i64)>,
    owner: &str,
    day: NaiveDate,
    at_ms: i64,
) -> Option<(NaiveDate, i64)> {
    match latest.get(owner) {
        Some(&(later, since)) if day < later && at_ms >= since => Some((later, since)),
        Some(&(later, _)) if day <= later => None,
        _ => {
            latest.insert(owner.to_string(), (day, at_ms));
            None
        }
    }
}

/// Count one more and return (the new count, `limit`).
fn bump(counter: &mut u32, limit: u32) -> (u32, u32) {
    *counter += 1;
    (*counter, limit)
}

impl Recount {
    fn over(&mut self, owner: &str, day: NaiveDate, counter: String, count: u32, limit: u32) {
        if count > limit {
            self.overshoots.push(Overshoot {
                owner: owner.to_string(),
                day,
                counter,
                count,
                limit,
            });
        }
    }

    /// Count reservation `e`; `in_range`: the days the audit reports overlaps on.
    pub fn reservation(&mut self, e: &LedgerEntry, in_range: impl Fn(NaiveDate) -> bool) {
        let l = e.limits;
        let account = overlap(&mut self.latest, &e.account, e.account_day, e.at_ms);
        let campaign = overlap(&mut self.latest_campaign, &e.campaign, e.campaign_day, e.at_ms);
        for (owner, id, day, found) in [
            ("account", &e.account, e.account_day, account),
            ("campaign", &e.campaign, e.campaign_day, campaign),
        ] {
            if let Some((later, since)) = found.filter(|_| in_range(day)) {
                self.overlaps.push(format!(
                    "{owner} {id} {day}: reserved at {} after day {later} began at {} (days overlap)",
                    from_ms(e.at_ms),
                    from_ms(since)
                ));
            }
        }
        // Every counter the kind draws from, in the policy's own table; the running
        // count is checked against the limit recorded with the entry.
        for &counter in draws(e.kind) {
            let d = self
                .accounts
                .entry((e.account.clone(), e.account_day))
                .or_default();
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
                            self.accounts
                                .get(&(e.account.clone(), day))
                                .map_or(0, |d| d.invites)
                        })
                        .sum();
                    (week, w)
                }
                // A balance, not a daily counter: it cannot go below zero.
                Counter::InmailCredits => continue,
            };
            self.over(
                &e.account,
                e.account_day,
                counter.as_str().to_string(),
                count,
                limit,
            );
        }
        if let Some(t) = CampaignType::of(e.kind) {
            let c = self
                .campaigns
                .entry((e.campaign.clone(), e.campaign_day))
                .or_default();
            let n = match t {
                CampaignType::Invites => &mut c.invites,
                CampaignType::Messages => &mut c.messages,
                CampaignType::Inmails => &mut c.inmails,
            };
            *n += 1;
            let count = *n;
            self.over(
                &e.campaign,
                e.campaign_day,
                format!("campaign.{}", t.as_str()),
                count,
                l.campaign,
            );
        }
        self.entries += 1;
    }

    /// Take release `r` off the counts of its reservation's days (P1 is judged on
    /// reservations minus releases). A release with nothing to take from is a mismatch.
    pub fn release(&mut self, r: &LedgerRelease) {
        self.releases += 1;
        let day = self
            .accounts
            .entry((r.account.clone(), r.account_day))
            .or_default();
        let c = self
            .campaigns
            .entry((r.campaign.clone(), r.campaign_day))
            .or_default();
        if !give_back(r.kind, day, c) {
            self.bad_releases.push(format!(
                "release of {} attempt {} ({} {}): no such reservation counted",
                r.action, r.attempt, r.account, r.account_day
            ));
        }
    }

    /// The non-zero totals of the days in range (`AuditReport::sums`).
    pub fn sums(&self, in_range: impl Fn(NaiveDate) -> bool) -> Vec<LedgerSum> {
        let mut out = Vec::new();
        let mut push = |owner: &str, id: &str, day: NaiveDate, counter: &str, count: u32| {
            if count > 0 && in_range(day) {
                out.push(LedgerSum {
                    owner: owner.into(),
                    id: id.into(),
                    day,
                    counter: counter.into(),
                    count,
                });
            }
        };
        for ((a, day), r) in &self.accounts {
            for (c, n) in [
                (Counter::Invites, r.invites),
                (Counter::Messages, r.messages),
                (Counter::Inmails, r.inmails),
                (Counter::Engagement, r.engagement),
            ] {
                push("account", a, *day, c.as_str(), n);
            }
        }
        for ((c, day), d) in &self.campaigns {
            for t in [
                CampaignType::Invites,
                CampaignType::Messages,
                CampaignType::Inmails,
            ] {
                push("campaign", c, *day, t.as_str(), d.get(t));
            }
        }
        out
    }
}
