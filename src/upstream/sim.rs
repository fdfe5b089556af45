//! The simulated LinkedIn (SPEC §9 `sim`): deterministic per seed. Each account has
//! hidden daily limits that grow with its tier and age; pushing past them draws rate
//! limits and, when pushed hard, a restriction. Prospects accept invites and answer
//! InMails with per-account probabilities, a share of prospects is out of network, and
//! InMails fail with `no_credits` when the LinkedIn-side balance is empty.

use super::{EventSource, FetchFuture, SendFuture, Upstream};
use crate::clock::Clock;
use crate::contract::events::{page_json, FeedEvent, FetchError, MAX_PAGE_EVENTS};
use crate::contract::jobfile::{EventRecord, ReplyTo};
use crate::contract::{Outcome, SendRequest};
use crate::policy::pacing::{Rng, SplitMix64};
use crate::policy::{Kind, Tier};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Share of prospects out of network, per mille.
const OUT_OF_NETWORK_PER_MILLE: u64 = 20;
/// Rate limits within 7 days after which a further push restricts the account.
const RESTRICT_AFTER_RATE_LIMITS: u32 = 4;

/// Something the simulated LinkedIn reports later: an acceptance or a reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    pub at: DateTime<Utc>,
    pub event: EventRecord,
}

#[derive(Clone, Debug)]
struct SimAccount {
    tier: Tier,
    created: DateTime<Utc>,
    /// Probability a prospect accepts an invite.
    acceptance: f64,
    day: Option<NaiveDate>,
    invites_today: u32,
    actions_today: u32,
    rate_limits: Vec<NaiveDate>,
    restricted: bool,
    credits: u32,
    refilled_month: (i32, u32),
}

/// The hidden daily invite limit of a tier before age is applied.
fn hidden_invite_limit(tier: Tier) -> u32 {
    match tier {
        Tier::Free => 25,
        Tier::PremiumCareer | Tier::PremiumBusiness => 90,
        _ => 110,
    }
}

fn hidden_monthly_credits(tier: Tier) -> u32 {
    tier.default_limits().inmail_credits
}

pub struct Sim {
    seed: u64,
    accounts: BTreeMap<String, SimAccount>,
    /// Requests answered, per outcome name (for reports).
    pub answered: BTreeMap<&'static str, u64>,
}

fn mix(seed: u64, s: &str) -> u64 {
    let mut h = seed ^ 0x51_7c_c1_b7_27_22_0a_95;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64(h).next_u64()
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim {
            seed,
            accounts: BTreeMap::new(),
            answered: BTreeMap::new(),
        }
    }

    /// Tell the simulator an account's tier and age (else: premium, created at its
    /// first request).
    pub fn register(&mut self, id: &str, tier: Tier, created: DateTime<Utc>) {
        self.accounts
            .insert(id.to_string(), new_account(self.seed, id, tier, created));
    }

    fn account(&mut self, id: &str, now: DateTime<Utc>) -> &mut SimAccount {
        let seed = self.seed;
        self.accounts
            .entry(id.to_string())
            .or_insert_with(|| new_account(seed, id, Tier::PremiumBusiness, now))
    }

    /// Answer one request at `now`; returns the outcome and later feedback.
    pub fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> (Outcome, Vec<Feedback>) {
        let seed = self.seed;
        let roll = mix(seed, &format!("{}#{}", req.id, req.attempt));
        let prospect_roll = mix(seed, &req.prospect);
        let mut restricted_now = false;
        let a = self.account(&req.account, now);
        let today = now.date_naive();
        if a.day != Some(today) {
            a.day = Some(today);
            a.invites_today = 0;
            a.actions_today = 0;
        }
        let month = (now.year(), now.month());
        if month != a.refilled_month {
            a.refilled_month = month;
            a.credits = a
                .credits
                .saturating_add(hidden_monthly_credits(a.tier))
                .min(a.tier.default_limits().inmail_ceiling);
        }
        a.rate_limits.retain(|d| (today - *d).num_days() < 7);
        let age_weeks = (now - a.created).num_days().max(0) / 7;
        let age_factor = (0.35 + 0.12 * age_weeks as f64).min(1.0);
        let invite_limit = (f64::from(hidden_invite_limit(a.tier)) * age_factor).ceil() as u32;
        let action_limit = 250;
        let outcome = if a.restricted {
            Outcome::Restricted
        } else if (req.kind == Kind::Invite && a.invites_today >= invite_limit)
            || a.actions_today >= action_limit
        {
            a.rate_limits.push(today);
            if a.rate_limits.len() as u32 >= RESTRICT_AFTER_RATE_LIMITS {
                a.restricted = true;
                // Integration services report a restriction as an event too.
                restricted_now = true;
                Outcome::Restricted
            } else {
                Outcome::RateLimited { retry_after_s: None }
            }
        } else if matches!(req.kind, Kind::Invite | Kind::Message)
            && prospect_roll % 1000 < OUT_OF_NETWORK_PER_MILLE
        {
            Outcome::OutOfNetwork
        } else if req.kind == Kind::Inmail && a.credits == 0 {
            Outcome::NoCredits
        } else {
            Outcome::Sent
        };
        let mut feedback = Vec::new();
        if restricted_now {
            feedback.push(Feedback {
                at: now,
                event: EventRecord::AccountRestricted {
                    account: req.account.clone(),
                },
            });
        }
        if outcome == Outcome::Sent {
            a.actions_today += 1;
            let delay = Duration::hours(12 + (roll % 96) as i64);
            match req.kind {
                Kind::Invite => {
                    a.invites_today += 1;
                    if (roll >> 8) % 1000 < (a.acceptance * 1000.0) as u64 {
                        feedback.push(Feedback {
                            at: now + delay,
                            event: EventRecord::InviteAccepted {
                                account: req.account.clone(),
                                prospect: req.prospect.clone(),
                                at: Some(now + delay),
                            },
                        });
                    }
                }
                Kind::Inmail => {
                    a.credits -= 1;
                    if (roll >> 8) % 100 < 25 {
                        feedback.push(Feedback {
                            at: now + delay,
                            event: EventRecord::ReplyReceived {
                                to: ReplyTo::Prospect {
                                    account: req.account.clone(),
                                    prospect: req.prospect.clone(),
                                },
                                at: Some(now + delay),
                            },
                        });
                    }
                }
                _ => {}
            }
        }
        *self.answered.entry(outcome.name()).or_default() += 1;
        (outcome, feedback)
    }
}

fn new_account(seed: u64, id: &str, tier: Tier, created: DateTime<Utc>) -> SimAccount {
    SimAccount {
        tier,
        created,
        acceptance: 0.28 + (mix(seed, id) % 300) as f64 / 1000.0,
        day: None,
        invites_today: 0,
        actions_today: 0,
        rate_limits: Vec::new(),
        restricted: false,
        credits: hidden_monthly_credits(tier),
        refilled_month: (created.year(), created.month()),
    }
}

/// The simulator's own event feed (SPEC §9: the `sim` upstream feeds its acceptances,
/// replies and restrictions the same way as an http service): feedback waits until its
/// time, then is served as pages of the same JSON as `GET /v1/events`, so it goes
/// through the same parser and the same page-apply path.
///
/// A cursor is `<epoch>-<position>`; events before a position asked after are dropped
/// (the worker has applied them), so memory holds only what is not yet acknowledged.
/// A cursor of another epoch (a restarted simulator) is served from the start of what
/// this one holds; applied ids make any repeat harmless.
pub struct SimFeed {
    epoch: u64,
    pending: BTreeMap<(DateTime<Utc>, u64), Feedback>,
    seq: u64,
    /// Released events in release order; `base` is the position of the first.
    released: std::collections::VecDeque<FeedEvent>,
    base: u64,
}

impl SimFeed {
    pub fn new(epoch: u64) -> SimFeed {
        SimFeed {
            epoch,
            pending: BTreeMap::new(),
            seq: 0,
            released: Default::default(),
            base: 0,
        }
    }

    pub fn push(&mut self, f: Feedback) {
        self.pending.insert((f.at, self.seq), f);
        self.seq += 1;
    }

    /// When the next feedback comes due (a poll before then finds nothing new).
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.pending.keys().next().map(|(t, _)| *t)
    }

    /// Whether anything is due or served but not yet acknowledged at `now`.
    pub fn has_news(&self, now: DateTime<Utc>) -> bool {
        !self.released.is_empty() || self.next_due().is_some_and(|t| t <= now)
    }

    /// The position a cursor of this feed stands for, if it is one of this epoch's and
    /// not before what is kept.
    fn position(&self, cursor: &str) -> Option<u64> {
        let end = self.base + self.released.len() as u64;
        cursor
            .split_once('-')
            .filter(|(e, _)| u64::from_str_radix(e, 16).ok() == Some(self.epoch))
            .and_then(|(_, p)| p.parse::<u64>().ok())
            .filter(|p| (self.base..=end).contains(p))
    }

    fn ack_to(&mut self, position: u64) {
        while self.base < position && self.released.pop_front().is_some() {
            self.base += 1;
        }
    }

    /// Drop what the worker has applied up to `cursor` (the next page would too).
    pub fn ack(&mut self, cursor: &str) {
        if let Some(p) = self.position(cursor) {
            self.ack_to(p);
        }
    }

    /// The page after `after` at `now`, as JSON.
    pub fn page(&mut self, after: Option<&str>, now: DateTime<Utc>) -> Vec<u8> {
        let due: Vec<_> = self.pending.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
        for k in due {
            if let Some(f) = self.pending.remove(&k) {
                let id = format!("sim-{:x}-{}", self.epoch, k.1);
                self.released.push_back(FeedEvent { id, event: f.event });
            }
        }
        let start = after.and_then(|c| self.position(c)).unwrap_or(self.base);
        self.ack_to(start);
        let events: Vec<FeedEvent> = self.released.iter().take(MAX_PAGE_EVENTS).cloned().collect();
        let cursor = format!("{:x}-{}", self.epoch, start + events.len() as u64);
        page_json(&events, &cursor)
    }
}

/// The simulator as an [`Upstream`] and an [`EventSource`] for `sendgate run` with
/// `upstream.kind = "sim"`: its feedback is polled like an http service's events.
pub struct SimUpstream {
    sim: Mutex<(Sim, SimFeed)>,
    clock: Arc<dyn Clock>,
}

impl SimUpstream {
    pub fn new(seed: u64, clock: Arc<dyn Clock>) -> SimUpstream {
        // A new epoch per process: a cursor kept from an earlier run is not this one's.
        let epoch = mix(seed, &clock.now().timestamp_nanos_opt().unwrap_or(0).to_string())
            ^ u64::from(std::process::id());
        SimUpstream {
            sim: Mutex::new((Sim::new(seed), SimFeed::new(epoch))),
            clock,
        }
    }
}

impl Upstream for SimUpstream {
    fn send(&self, req: SendRequest) -> SendFuture {
        let now = self.clock.now();
        let outcome = match self.sim.lock() {
            Ok(mut guard) => {
                let (sim, feed) = &mut *guard;
                let (outcome, feedback) = sim.answer(&req, now);
                for f in feedback {
                    feed.push(f);
                }
                outcome
            }
            Err(_) => Outcome::NotDelivered {
                reason: "simulator unavailable".into(),
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}

impl EventSource for SimUpstream {
    fn fetch(&self, after: Option<String>) -> FetchFuture {
        let now = self.clock.now();
        let page = match self.sim.lock() {
            Ok(mut guard) => Ok(guard.1.page(after.as_deref(), now)),
            Err(_) => Err(FetchError::Failed("simulator unavailable".into())),
        };
        Box::pin(std::future::ready(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(id: &str, kind: Kind) -> SendRequest {
        SendRequest {
            id: id.into(),
            account: "a".into(),
            proxy: None,
            campaign: "c".into(),
            kind,
            prospect: format!("p-{id}"),
            payload: json!({}),
            attempt: 1,
        }
    }

    #[test]
    fn deterministic_per_seed_and_pushing_draws_rate_limits() {
        let t = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let run = |seed| {
            let mut s = Sim::new(seed);
            s.register("a", Tier::Free, t);
            (0..60)
                .map(|i| s.answer(&req(&format!("x{i}"), Kind::Invite), t).0)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        let outcomes = run(1);
        assert!(outcomes.contains(&Outcome::Sent));
        assert!(outcomes.contains(&Outcome::RateLimited { retry_after_s: None }));
        assert!(
            outcomes.contains(&Outcome::Restricted),
            "pushed hard, it restricts"
        );
    }

    /// The sim's feed serves what is due, again for the same cursor, nothing twice once
    /// a later cursor is asked after, and everything it holds for a foreign cursor.
    #[test]
    fn the_feed_serves_due_feedback_by_cursor() {
        use crate::contract::events::parse_page;
        let t = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let mut f = SimFeed::new(7);
        let accept = |p: &str, at| Feedback {
            at,
            event: EventRecord::AccountRestricted { account: p.into() },
        };
        f.push(accept("a", t + Duration::hours(1)));
        f.push(accept("b", t + Duration::hours(2)));
        let page =
            |f: &mut SimFeed, after: Option<&str>, at| parse_page(&f.page(after, at)).expect("a valid page");
        let p0 = page(&mut f, None, t);
        assert!(p0.events.is_empty());
        let p1 = page(&mut f, Some(&p0.cursor), t + Duration::hours(1));
        assert_eq!(p1.events.len(), 1);
        let again = page(&mut f, Some(&p0.cursor), t + Duration::hours(1));
        assert_eq!(again, p1, "the same cursor gets the same page");
        let p2 = page(&mut f, Some(&p1.cursor), t + Duration::hours(3));
        assert_eq!(p2.events.len(), 1);
        assert_ne!(p2.events[0].id, p1.events[0].id);
        let foreign = page(&mut f, Some("ffff-0"), t + Duration::hours(3));
        assert_eq!(
            foreign.events, p2.events,
            "a cursor of another run starts at what is held"
        );
        f.ack(&p2.cursor);
        assert!(!f.has_news(t + Duration::hours(3)));
    }

    #[test]
    fn inmails_run_out_of_credits() {
        let t = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let mut s = Sim::new(3);
        s.register("a", Tier::PremiumCareer, t);
        let outcomes: Vec<_> = (0..8)
            .map(|i| s.answer(&req(&format!("m{i}"), Kind::Inmail), t).0)
            .collect();
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Sent).count(), 5);
        assert_eq!(outcomes.last(), Some(&Outcome::NoCredits));
    }
}
