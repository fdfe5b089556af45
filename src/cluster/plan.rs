//! PURE: the fleet's side of a reservation. Which etcd keys a candidate draws from,
//! whether the fleet's counters admit it (the same `used + 1 > cap` check as the
//! store's), what a batch writes, how a batch splits into transactions, and when the
//! lease is too old to dispatch. No IO and no clock: callers pass values and instants.

use super::{Draw, Verdict};
use crate::policy::caps::{draws, Blocker, CampaignType, Counter};
use crate::policy::Kind;
use chrono::{Duration, NaiveDate};
use std::collections::{BTreeMap, BTreeSet};

/// etcd's default `--max-txn-ops`: compares, and operations per branch, per transaction.
pub const MAX_TXN_OPS: usize = 128;

/// An id in a key: `/` and `%` escaped, so `a/b` and `a` + `/b` never meet.
pub fn esc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

pub fn owner_key(prefix: &str, account: &str) -> String {
    format!("{prefix}/owner/{}", esc(account))
}

pub fn owner_prefix(prefix: &str) -> String {
    format!("{prefix}/owner/")
}

pub fn action_key(prefix: &str, action: &str) -> String {
    format!("{prefix}/action/{}", esc(action))
}

pub fn account_key(prefix: &str, account: &str, day: NaiveDate, counter: Counter) -> String {
    format!(
        "{prefix}/count/account/{}/{day}/{}",
        esc(account),
        counter.as_str()
    )
}

pub fn campaign_key(prefix: &str, campaign: &str, day: NaiveDate, t: CampaignType) -> String {
    format!("{prefix}/count/campaign/{}/{day}/{}", esc(campaign), t.as_str())
}

/// One condition of a reservation: the sum of `keys` plus one must not pass `cap`.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    pub keys: Vec<String>,
    pub cap: u32,
    pub blocker: Blocker,
}

/// The fleet conditions of a draw (in the order the store checks them) and the keys
/// it adds one to when admitted.
///
/// The InMail credit balance is not a fleet counter: it belongs to the account, and
/// only the account's owner draws from it (the owner key is compared in the same
/// transaction).
pub fn needs(prefix: &str, d: &Draw) -> (Vec<Need>, Vec<String>) {
    let l = &d.limits;
    let mut needs = Vec::new();
    let mut incs = Vec::new();
    for &c in draws(d.kind) {
        let today = account_key(prefix, &d.account, d.account_day, c);
        match c {
            Counter::Invites | Counter::Messages | Counter::Inmails | Counter::Engagement => {
                let cap = match c {
                    Counter::Invites => l.invites,
                    Counter::Messages => l.messages,
                    Counter::Inmails => l.inmails,
                    _ => l.engagement,
                };
                needs.push(Need {
                    keys: vec![today.clone()],
                    cap,
                    blocker: Blocker::Account(c),
                });
                incs.push(today);
            }
            Counter::WeeklyInvites => {
                if let Some(cap) = l.weekly_invites {
                    let keys = (0..7)
                        .rev()
                        .map(|ago| {
                            account_key(
                                prefix,
                                &d.account,
                                d.account_day - Duration::days(ago),
                                Counter::Invites,
                            )
                        })
                        .collect();
                    needs.push(Need {
                        keys,
                        cap,
                        blocker: Blocker::Account(c),
                    });
                }
            }
            Counter::InmailCredits => {}
        }
    }
    if let Some(t) = CampaignType::of(d.kind) {
        let k = campaign_key(prefix, &d.campaign, d.campaign_day, t);
        needs.push(Need {
            keys: vec![k.clone()],
            cap: l.campaign.get(t),
            blocker: Blocker::Campaign(t),
        });
        incs.push(k);
    }
    (needs, incs)
}

/// Every key a draw reads (its counters, its action key, its account's owner key).
pub fn keys_of(prefix: &str, d: &Draw) -> BTreeSet<String> {
    let (needs, incs) = needs(prefix, d);
    let mut keys: BTreeSet<String> = needs.into_iter().flat_map(|n| n.keys).collect();
    keys.extend(incs);
    keys.insert(action_key(prefix, &d.action));
    keys.insert(owner_key(prefix, &d.account));
    keys
}

/// Split a batch into runs whose keys fit one transaction (`MAX_TXN_OPS` compares,
/// and as many puts at most, since only compared keys are written).
pub fn chunks(prefix: &str, draws: &[Draw]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut keys = BTreeSet::new();
    for (i, d) in draws.iter().enumerate() {
        let k = keys_of(prefix, d);
        let mut merged = keys.clone();
        merged.extend(k.iter().cloned());
        if merged.len() > MAX_TXN_OPS && i > start {
            out.push(start..i);
            start = i;
            keys = k;
        } else {
            keys = merged;
        }
    }
    if start < draws.len() {
        out.push(start..draws.len());
    }
    out
}

/// The fleet's decision for a batch, given the counters' current `values` (absent = 0),
/// the action keys that `exist`, and the accounts this worker `owns` (under its lease).
/// Admits in order, each against the counters as the earlier ones left them. Returns
/// a verdict per draw and the new value of every counter that changed.
pub fn admit(
    prefix: &str,
    batch: &[Draw],
    values: &BTreeMap<String, u64>,
    exist: &BTreeSet<String>,
    owns: &dyn Fn(&str) -> bool,
) -> (Vec<Verdict>, BTreeMap<String, u64>) {
    let mut cur = values.clone();
    let mut writes = BTreeMap::new();
    let mut taken = BTreeSet::new();
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        if !owns(&d.account) {
            out.push(Verdict::NotOwned);
            continue;
        }
        let ak = action_key(prefix, &d.action);
        if exist.contains(&ak) || !taken.insert(ak) {
            out.push(Verdict::Duplicate);
            continue;
        }
        let (needs, incs) = needs(prefix, d);
        let blocked = needs.iter().find(|n| {
            let used: u64 = n.keys.iter().map(|k| cur.get(k).copied().unwrap_or(0)).sum();
            used + 1 > u64::from(n.cap)
        });
        if let Some(n) = blocked {
            let until = match n.blocker {
                Blocker::Campaign(_) => d.campaign_until,
                Blocker::Account(_) => d.account_until,
            };
            out.push(Verdict::Blocked {
                blocker: n.blocker,
                until,
            });
            continue;
        }
        for k in incs {
            let v = cur.entry(k.clone()).or_insert(0);
            *v += 1;
            writes.insert(k, *v);
        }
        out.push(Verdict::Claimed);
    }
    debug_assert!(writes
        .iter()
        .all(|(k, v)| values.get(k).copied().unwrap_or(0) < *v));
    (out, writes)
}

/// A counter's value as stored in etcd: decimal text. Anything else is an error (a key
/// someone else wrote): the fleet refuses to guess.
pub fn parse_count(key: &str, v: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("{key}: not a count"))
}

/// The fail-closed clock of the lease (SPEC §12): dispatching is allowed only while the
/// last renewal is younger than `ttl / 2`, so the worker stops well before etcd can
/// expire the lease and hand its accounts to another worker. Instants are the caller's
/// monotonic milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    ttl_ms: u64,
    renewed_ms: Option<u64>,
}

impl Freshness {
    pub fn new(ttl_s: u64) -> Freshness {
        Freshness {
            ttl_ms: ttl_s.saturating_mul(1000),
            renewed_ms: None,
        }
    }

    /// The lease was granted or renewed at `at_ms` (the request's send time, not the
    /// answer's, so the time on the wire counts against us).
    pub fn renewed(&mut self, at_ms: u64) {
        self.renewed_ms = Some(self.renewed_ms.map_or(at_ms, |r| r.max(at_ms)));
    }

    /// The lease is gone (revoked, expired, a new one is needed).
    pub fn lost(&mut self) {
        self.renewed_ms = None;
    }

    pub fn fresh(&self, now_ms: u64) -> bool {
        self.renewed_ms
            .is_some_and(|r| now_ms.saturating_sub(r) < self.ttl_ms / 2)
    }

    /// How often to renew: three times per half-life, so two lost renewals in a row
    /// still leave one before dispatching stops.
    pub fn renew_every_ms(&self) -> u64 {
        (self.ttl_ms / 6).max(100)
    }
}

/// Whether a kind draws from any fleet counter at all (every kind does today; kept for
/// the engine's assertion).
pub fn counted(kind: Kind) -> bool {
    !draws(kind).is_empty() || CampaignType::of(kind).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::caps::{CampaignLimits, Limits};
    use chrono::{TimeZone, Utc};

    fn limits(invites: u32, weekly: Option<u32>, campaign: u32) -> Limits {
        Limits {
            invites,
            messages: 80,
            inmails: 5,
            engagement: 100,
            weekly_invites: weekly,
            campaign: CampaignLimits {
                invites: campaign,
                messages: campaign,
                inmails: campaign,
            },
        }
    }

    fn draw(action: &str, account: &str, kind: Kind, l: Limits) -> Draw {
        let day = NaiveDate::from_ymd_opt(2026, 3, 6).unwrap();
        Draw {
            action: action.into(),
            account: account.into(),
            campaign: "q4".into(),
            kind,
            account_day: day,
            campaign_day: day,
            limits: l,
            account_until: Utc.with_ymd_and_hms(2026, 3, 7, 9, 0, 0).unwrap(),
            campaign_until: Utc.with_ymd_and_hms(2026, 3, 7, 0, 0, 0).unwrap(),
        }
    }

    const P: &str = "/sg";

    #[test]
    fn an_invite_draws_day_week_and_campaign() {
        let d = draw("x", "a/1", Kind::Invite, limits(20, Some(100), 30));
        let (needs, incs) = needs(P, &d);
        assert_eq!(needs.len(), 3);
        assert_eq!(needs[0].keys, vec!["/sg/count/account/a%2F1/2026-03-06/invites"]);
        assert_eq!(needs[1].keys.len(), 7);
        assert_eq!(needs[1].keys[0], "/sg/count/account/a%2F1/2026-02-28/invites");
        assert_eq!(needs[2].keys, vec!["/sg/count/campaign/q4/2026-03-06/invites"]);
        assert_eq!(
            incs,
            vec![
                "/sg/count/account/a%2F1/2026-03-06/invites".to_string(),
                "/sg/count/campaign/q4/2026-03-06/invites".to_string()
            ]
        );
        // No weekly cap: no weekly keys.
        let d = draw("x", "a", Kind::Invite, limits(20, None, 30));
        assert_eq!(super::needs(P, &d).0.len(), 2);
        // Engagement has no campaign counter.
        let d = draw("x", "a", Kind::Reaction, limits(20, None, 30));
        let (n, i) = super::needs(P, &d);
        assert_eq!((n.len(), i.len()), (1, 1));
        assert!(i[0].ends_with("/engagement"));
    }

    #[test]
    fn admit_stops_at_the_campaign_cap_across_accounts() {
        let l = limits(20, None, 3);
        let batch: Vec<Draw> = (0..5)
            .map(|i| draw(&format!("x{i}"), &format!("a{}", i % 2), Kind::Invite, l))
            .collect();
        let mut values = BTreeMap::new();
        values.insert(
            campaign_key(P, "q4", batch[0].campaign_day, CampaignType::Invites),
            1,
        );
        let (v, writes) = admit(P, &batch, &values, &BTreeSet::new(), &|_| true);
        let claimed = v.iter().filter(|v| **v == Verdict::Claimed).count();
        assert_eq!(claimed, 2, "1 used + 2 = cap 3: {v:?}");
        assert!(matches!(
            v[2],
            Verdict::Blocked {
                blocker: Blocker::Campaign(CampaignType::Invites),
                ..
            }
        ));
        assert_eq!(
            writes[&campaign_key(P, "q4", batch[0].campaign_day, CampaignType::Invites)],
            3
        );
    }

    #[test]
    fn admit_counts_the_week_and_refuses_duplicates_and_foreign_accounts() {
        let l = limits(20, Some(2), 30);
        let d0 = draw("x0", "a", Kind::Invite, l);
        let mut values = BTreeMap::new();
        values.insert(
            account_key(P, "a", d0.account_day - Duration::days(3), Counter::Invites),
            1,
        );
        let batch = vec![
            d0.clone(),
            draw("x1", "a", Kind::Invite, l),
            draw("x2", "b", Kind::Invite, l),
            draw("x0", "a", Kind::Invite, l),
            draw("x3", "c", Kind::Invite, l),
        ];
        let exist: BTreeSet<String> = [action_key(P, "x2")].into();
        let (v, _) = admit(P, &batch, &values, &exist, &|a| a != "c");
        assert_eq!(v[0], Verdict::Claimed);
        assert!(matches!(
            v[1],
            Verdict::Blocked {
                blocker: Blocker::Account(Counter::WeeklyInvites),
                ..
            }
        ));
        assert_eq!(v[2], Verdict::Duplicate);
        assert_eq!(v[3], Verdict::Duplicate, "the same id twice in one batch");
        assert_eq!(v[4], Verdict::NotOwned);
    }

    #[test]
    fn chunks_fit_the_transaction_limit() {
        let l = limits(20, Some(100), 30);
        let batch: Vec<Draw> = (0..64)
            .map(|i| draw(&format!("x{i}"), &format!("a{i}"), Kind::Invite, l))
            .collect();
        let cs = chunks(P, &batch);
        assert!(cs.len() > 1);
        assert_eq!(cs.first().unwrap().start, 0);
        assert_eq!(cs.last().unwrap().end, 64);
        for w in cs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for c in cs {
            let keys: BTreeSet<String> = batch[c].iter().flat_map(|d| keys_of(P, d)).collect();
            assert!(keys.len() <= MAX_TXN_OPS, "{}", keys.len());
        }
    }

    #[test]
    fn freshness_stops_at_half_the_ttl() {
        let mut f = Freshness::new(10);
        assert!(!f.fresh(0), "no lease yet");
        f.renewed(1_000);
        assert!(f.fresh(5_999));
        assert!(!f.fresh(6_000));
        f.renewed(500); // an older answer arriving late changes nothing
        assert!(f.fresh(5_999));
        f.lost();
        assert!(!f.fresh(1_001));
        assert!(f.renew_every_ms() < 5_000 / 2);
    }

    #[test]
    fn counts_parse_or_fail_with_the_key() {
        assert_eq!(parse_count("k", b"17"), Ok(17));
        assert_eq!(parse_count("k", b"x").unwrap_err(), "k: not a count");
        assert!(counted(Kind::ProfileView));
    }
}
