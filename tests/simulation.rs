//! Deterministic simulation: many seeds, each a world of accounts and campaigns run
//! for days on virtual time against the simulated LinkedIn (`upstream::sim::Sim`),
//! wrapped in an answerer that injects faults — rate limits, 5xx and timeouts (may have
//! been delivered), restrictions, no credits, connect errors, and outages of hours
//! (every call refused, or every call a 5xx) — while the driver crashes
//! the worker between reserve and send and between send and record, and steps the
//! clock back by up to an hour. After every step a model kept here checks:
//!
//! - P1: no counter over its cap per account and local day, nor per campaign and local
//!   day (from the reservations handed out); and at the end of each seed, a clean audit;
//! - P1 under clock steps: a reservation on a local day the clock had already left
//!   never takes more than that day's budget (a step back never reopens a day);
//! - P1 and the ramp: the worker's invite cap of a day lies within the range SPEC 3.3's
//!   rule allows, computed here from the account's start day (never above the ceiling
//!   it would have had healthy at every 7-day boundary);
//! - P7: after a 429 the engine recorded, nothing is reserved for that account on that
//!   local day, nor before a later Retry-After, across restarts and clock steps back;
//! - P3: no action id reaches the upstream again after an answer that may have
//!   delivered it (non-idempotent mode), and the simulator never answers `sent` twice;
//! - P4: the per-state counts sum to the actions accepted, and nothing is left
//!   `inflight` after a step; every day, each accepted action is in exactly one state.
//!
//! Feedback (acceptances, replies, restrictions) reaches the worker the way it does
//! under `run`: through the simulator's event feed, as JSON pages parsed and applied by
//! `Engine::feed_result`, polled several times a day; the feed itself misbehaves too:
//! 429s, broken pages, pages served again after a cursor that went back.
//!
//! A failing seed prints how to replay it: `SENDGATE_SIM_SEED=<seed> cargo nextest run
//! --test simulation`. `SENDGATE_SIM_SEEDS=N` runs seeds 1..=N (default 40).

mod common;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use common::sim::{chance, open, weighted_kind, KINDS};
use sendgate::contract::events::FetchError;
use sendgate::contract::jobfile::{parse_file, Record};
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::{Engine, EngineConfig};
use sendgate::policy::caps::{draws, Caps, Counter};
use sendgate::policy::pacing::{Rng, SplitMix64};
use sendgate::policy::window::{local_day, start_of_day};
use sendgate::policy::{CampaignType, Kind, Tier};
use sendgate::store::{ApplyOutcome, Reservation, Settings, State, Store, StoreError};
use sendgate::upstream::sim::{Sim, SimFeed};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const DEFAULT_SEEDS: u64 = 40;
const ACCOUNTS: usize = 25;
const CAMPAIGNS: usize = 4;
const DAYS: i64 = 10;
/// New actions per account per day.
const ACTIONS_PER_ACCOUNT_DAY: u64 = 10;
const THREADS: u64 = 4;
/// Per engine step with feedback due: a poll of the feed (per ten thousand).
const P_FEED_POLL: u64 = 200;
/// Every fault kind must be injected at least this often over the default seeds.
const MIN_PER_FAULT: u64 = 100;

/// Fault probabilities, per ten thousand.
const P_RATE_LIMITED: u64 = 80;
const P_SERVER_ERROR: u64 = 120;
const P_TIMEOUT: u64 = 120;
const P_RESTRICTED: u64 = 50;
const P_NOT_DELIVERED: u64 = 150;
/// Of InMail calls only.
const P_NO_CREDITS: u64 = 800;
/// Per simulated day: an outage of `OUTAGE_HOURS` (every call refused, or every call a
/// 5xx), starting at a random hour.
const P_OUTAGE_DAY: u64 = 5000;
const OUTAGE_HOURS: (u64, u64) = (1, 4);
/// Per reservation handed out / per call made.
const P_CRASH_BEFORE_SEND: u64 = 40;
const P_CRASH_AFTER_SEND: u64 = 25;
/// Per driver step; far more often in the hour after an account's local midnight,
/// where a step back lands on a day the clock had left.
const P_CLOCK_BACK: u64 = 20;
const P_CLOCK_BACK_AFTER_MIDNIGHT: u64 = 300;

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
];
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    rate_limited: u64,
    server_error: u64,
    timeout: u64,
    restricted: u64,
    no_credits: u64,
    not_delivered: u64,
    crash_before_send: u64,
    crash_after_send: u64,
    clock_back: u64,
    /// Calls answered by an outage, refused or 5xx.
    outage_refused: u64,
    outage_5xx: u64,
    /// Breaker openings, and reservations given back (not delivered).
    upstream_down: u64,
    releases: u64,
    /// Reservations on a local day the clock had already left (after a step back).
    reserved_on_left_day: u64,
    /// Step backs that crossed at least one account's local midnight.
    clock_back_across_midnight: u64,
    reservations: u64,
    /// 429s the engine recorded (not lost to a crash): each holds its account (P7).
    rate_limits_recorded: u64,
    calls: u64,
    sim_sent: u64,
    restarts: u64,
    account_days: u64,
    actions: u64,
    steps: u64,
    /// Feed polls: events applied, events seen again (a page served twice), and polls
    /// that failed (429, broken page) and applied nothing.
    feed_applied: u64,
    feed_duplicates: u64,
    feed_failed: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        let pairs: [(&mut u64, u64); 26] = [
            (&mut self.feed_applied, o.feed_applied),
            (&mut self.feed_duplicates, o.feed_duplicates),
            (&mut self.feed_failed, o.feed_failed),
            (&mut self.outage_refused, o.outage_refused),
            (&mut self.outage_5xx, o.outage_5xx),
            (&mut self.upstream_down, o.upstream_down),
            (&mut self.releases, o.releases),
            (&mut self.rate_limited, o.rate_limited),
            (&mut self.server_error, o.server_error),
            (&mut self.timeout, o.timeout),
            (&mut self.restricted, o.restricted),
            (&mut self.no_credits, o.no_credits),
            (&mut self.not_delivered, o.not_delivered),
            (&mut self.crash_before_send, o.crash_before_send),
            (&mut self.crash_after_send, o.crash_after_send),
            (&mut self.clock_back, o.clock_back),
            (&mut self.reserved_on_left_day, o.reserved_on_left_day),
            (&mut self.clock_back_across_midnight, o.clock_back_across_midnight),
            (&mut self.reservations, o.reservations),
            (&mut self.rate_limits_recorded, o.rate_limits_recorded),
            (&mut self.calls, o.calls),
            (&mut self.sim_sent, o.sim_sent),
            (&mut self.restarts, o.restarts),
            (&mut self.account_days, o.account_days),
            (&mut self.actions, o.actions),
            (&mut self.steps, o.steps),
        ];
        for (a, b) in pairs {
            *a += b;
        }
    }

    fn faults(&self) -> [(&'static str, u64); 11] {
        [
            ("outage_refused", self.outage_refused),
            ("outage_5xx", self.outage_5xx),
            ("rate_limited", self.rate_limited),
            ("5xx", self.server_error),
            ("timeout", self.timeout),
            ("restricted", self.restricted),
            ("no_credits", self.no_credits),
            ("not_delivered", self.not_delivered),
            ("crash_before_send", self.crash_before_send),
            ("crash_after_send", self.crash_after_send),
            ("clock_back", self.clock_back),
        ]
    }
}

/// SPEC 3.3, computed here from the rule (not from the worker's record): the highest
/// ramp ceiling an account can have on `day`, i.e. the ceiling had it been healthy at
/// every 7-day boundary since `ramp_start` (a hold or a step back only lowers it).
/// `start` and `weeks` are SPEC's defaults, which the simulation does not override.
fn ramp_ceiling_at_most(target: u32, established: bool, ramp_start: NaiveDate, day: NaiveDate) -> u32 {
    const START: u32 = 10;
    const WEEKS: i32 = 6;
    if established {
        return target;
    }
    let g = (f64::from(target) / f64::from(START)).powf(1.0 / f64::from(WEEKS));
    let boundaries = ((day - ramp_start).num_days() / 7).max(0);
    let mut ceiling = START.min(target);
    for _ in 0..boundaries {
        // ceil, less a hair so that float error cannot lift an exact product (10 · g⁶).
        let grown = (f64::from(ceiling) * g - 1e-9).ceil() as u32;
        ceiling = grown.max(ceiling).min(target);
    }
    ceiling
}

#[test]
fn the_independent_ramp_bound_follows_the_spec_example() {
    let day0 = NaiveDate::from_ymd_opt(2026, 11, 2).expect("day");
    let ceilings: Vec<u32> = (0..8)
        .map(|w| ramp_ceiling_at_most(80, false, day0, day0 + Duration::days(7 * w)))
        .collect();
    assert_eq!(ceilings, [10, 15, 22, 32, 46, 66, 80, 80], "SPEC 3.3's example");
    assert_eq!(
        ramp_ceiling_at_most(80, false, day0, day0 + Duration::days(6)),
        10
    );
    assert_eq!(ramp_ceiling_at_most(20, true, day0, day0), 20);
    assert_eq!(ramp_ceiling_at_most(5, false, day0, day0 + Duration::days(30)), 5);
}

fn pick<'a, T>(rng: &mut SplitMix64, xs: &'a [T]) -> &'a T {
    &xs[rng.between(0, xs.len() as u64 - 1) as usize]
}

// ---- the world of one seed ----

struct AccountSpec {
    id: String,
    tz: Tz,
    tier: Tier,
    caps: Caps,
    established: bool,
    /// The local day the setup file was applied: the ramp's start (SPEC 3.3 default).
    ramp_start: NaiveDate,
}

struct CampaignSpec {
    id: String,
    tz: Tz,
    /// Per type: invites, messages, inmails.
    caps: [u32; 3],
    accounts: Vec<usize>,
}

struct World {
    start: DateTime<Utc>,
    settings: Settings,
    accounts: Vec<AccountSpec>,
    campaigns: Vec<CampaignSpec>,
    setup: String,
    /// Outages: (from, until, refused; else 5xx).
    outages: Vec<(DateTime<Utc>, DateTime<Utc>, bool)>,
}

impl World {
    /// `Some(refused)` when an outage is under way at `now`.
    fn outage_at(&self, now: DateTime<Utc>) -> Option<bool> {
        self.outages
            .iter()
            .find(|(from, until, _)| *from <= now && now < *until)
            .map(|o| o.2)
    }
}

/// The outages of a seed, from a random source of their own (the rest of the world of
/// a seed stays what it was before outages were added).
fn outages(seed: u64, start: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>, bool)> {
    let mut rng = SplitMix64(seed ^ 0x07a6_e5ee_d000);
    (0..DAYS)
        .filter_map(|d| {
            if !chance(&mut rng, P_OUTAGE_DAY) {
                return None;
            }
            let from = start + Duration::days(d) + Duration::minutes(rng.between(0, 20 * 60) as i64);
            let hours = rng.between(OUTAGE_HOURS.0 * 60, OUTAGE_HOURS.1 * 60) as i64;
            Some((from, from + Duration::minutes(hours), rng.between(0, 1) == 0))
        })
        .collect()
}

fn world(seed: u64, rng: &mut SplitMix64) -> World {
    // Midnight UTC on a day of 2026 (some seeds cross a DST change).
    let base = DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
        .expect("base")
        .with_timezone(&Utc);
    let start = base + Duration::days(rng.between(0, 355) as i64);
    let defaults = Caps {
        invites: 10,
        messages: 6,
        inmails: 3,
        engagement: 12,
        weekly_invites: (seed % 3 == 0).then_some(45),
    };
    let mut settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    settings.policy.caps = defaults;
    let mut setup = String::new();
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        let id = format!("a{i:02}");
        let zone = *pick(rng, &ZONES);
        let tier = *pick(rng, &Tier::ALL);
        let window = match rng.between(0, 2) {
            // Every day, all day: sends around local midnight, where steps back bite.
            0 => r#"{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}"#
                .to_string(),
            1 => r#"{"days":["mon","tue","wed","thu","fri"],"start":"09:00","end":"17:00"}"#.to_string(),
            _ => {
                let days: Vec<String> = DAY_NAMES
                    .iter()
                    .filter(|_| rng.between(0, 3) > 0)
                    .map(|d| format!("\"{d}\""))
                    .collect();
                let from = rng.between(0, 14);
                let to = (from + rng.between(3, 10)).min(23);
                format!(
                    r#"{{"days":[{}],"start":"{from:02}:00","end":"{to:02}:{}"}}"#,
                    days.join(","),
                    if to == 23 { "59" } else { "00" }
                )
            }
        };
        let mut caps = defaults;
        let mut over = Vec::new();
        if rng.between(0, 1) == 0 {
            caps.invites = rng.between(3, 12) as u32;
            over.push(format!(r#""invites":{}"#, caps.invites));
        }
        if rng.between(0, 2) == 0 {
            caps.messages = rng.between(2, 8) as u32;
            over.push(format!(r#""messages":{}"#, caps.messages));
        }
        if rng.between(0, 2) == 0 {
            caps.engagement = rng.between(4, 15) as u32;
            over.push(format!(r#""engagement":{}"#, caps.engagement));
        }
        if rng.between(0, 3) == 0 {
            caps.inmails = rng.between(1, 4) as u32;
            over.push(format!(r#""inmails":{}"#, caps.inmails));
        }
        let credits = if rng.between(0, 1) == 0 {
            format!(r#","inmail_credits":{}"#, rng.between(0, 20))
        } else {
            String::new()
        };
        let established = rng.between(0, 1) == 0;
        setup += &format!(
            r#"{{"type":"account","id":"{id}","tier":"{}","timezone":"{zone}","window":{window},"established":{established},"caps":{{{}}}{credits}}}"#,
            tier.as_str(),
            over.join(",")
        );
        setup.push('\n');
        let tz: Tz = zone.parse().expect("zone");
        accounts.push(AccountSpec {
            id,
            tz,
            tier,
            caps,
            established,
            ramp_start: local_day(tz, start),
        });
    }
    let mut campaigns = Vec::new();
    for j in 0..CAMPAIGNS {
        let id = format!("c{j}");
        let zone = *pick(rng, &ZONES);
        let limit = rng.between(4, 25) as u32;
        let mut caps = [limit; 3];
        let mut split = Vec::new();
        for (t, name) in ["invites", "messages", "inmails"].iter().enumerate() {
            if rng.between(0, 2) == 0 {
                caps[t] = rng.between(1, 30) as u32;
                split.push(format!(r#""{name}":{}"#, caps[t]));
            }
        }
        let mut members: Vec<usize> = (0..ACCOUNTS).filter(|_| rng.between(0, 3) == 0).collect();
        if members.is_empty() {
            members.push(j);
        }
        let names: Vec<String> = members
            .iter()
            .map(|&i| format!("\"{}\"", accounts[i].id))
            .collect();
        setup += &format!(
            r#"{{"type":"campaign","id":"{id}","timezone":"{zone}","daily_limit":{limit},"cap_split":{{{}}},"accounts":[{}]}}"#,
            split.join(","),
            names.join(",")
        );
        setup.push('\n');
        campaigns.push(CampaignSpec {
            id,
            tz: zone.parse().expect("zone"),
            caps,
            accounts: members,
        });
    }
    World {
        start,
        settings,
        accounts,
        campaigns,
        setup,
        outages: outages(seed, start),
    }
}

// ---- the model ----

#[derive(Default)]
struct Model {
    accepted: BTreeSet<String>,
    /// Reservations per (account, local day, counter).
    counts: BTreeMap<(usize, NaiveDate, Counter), u32>,
    /// The invite cap in force when each (account, local day) was first reserved on.
    first_invite_cap: BTreeMap<(usize, NaiveDate), u32>,
    campaign_counts: BTreeMap<(usize, NaiveDate, CampaignType), u32>,
    /// Ids whose answer may have delivered them (or made them final): never call again.
    done: BTreeSet<String>,
    sim_sent: BTreeSet<String>,
    /// The latest time the engine has been driven to.
    high: Option<DateTime<Utc>>,
    /// Actions cancelled or still waiting, for the day files' events.
    ids: Vec<String>,
    /// The day counters each action's latest reservation took: (account, day, kind,
    /// campaign and its day), given back when its attempt is not delivered.
    taken: BTreeMap<String, (usize, NaiveDate, Kind, usize, NaiveDate)>,
    /// Per account, the 429s the engine recorded (P7).
    held: BTreeMap<usize, Held>,
}

/// The 429s of one account: the local days they fell on and the latest Retry-After.
#[derive(Default)]
struct Held {
    days: BTreeSet<NaiveDate>,
    until: Option<DateTime<Utc>>,
}

impl Held {
    /// Why a reservation at `now` breaks P7 (SPEC 5: held until the next window on a
    /// later day, or until Retry-After if that is later), if it does.
    fn forbids(&self, tz: Tz, now: DateTime<Utc>) -> Option<String> {
        let day = local_day(tz, now);
        if self.days.contains(&day) {
            return Some(format!("a 429 was recorded on {day}"));
        }
        self.until
            .filter(|u| now < *u)
            .map(|u| format!("a Retry-After holds it until {u}"))
    }
}

struct Ctx<'a> {
    w: &'a World,
    rng: SplitMix64,
    sim: Sim,
    model: Model,
    n: Counts,
    feed: SimFeed,
    files: u64,
}

type Check = Result<(), String>;

impl Ctx<'_> {
    fn account(&self, id: &str) -> usize {
        self.w
            .accounts
            .iter()
            .position(|a| a.id == id)
            .expect("known account")
    }

    fn campaign(&self, id: &str) -> usize {
        self.w
            .campaigns
            .iter()
            .position(|c| c.id == id)
            .expect("known campaign")
    }

    /// P1 for one reservation handed out at `now`.
    fn on_reserved(&mut self, store: &Store, r: &Reservation, now: DateTime<Utc>) -> Check {
        self.n.reservations += 1;
        let ai = self.account(&r.account);
        let spec = &self.w.accounts[ai];
        let policy = &self.w.settings.policy;
        let acct = store
            .account(&r.account)
            .map_err(|e| e.to_string())?
            .ok_or("reserved for an unknown account")?;
        let target = spec.caps.invites.min(policy.tier(spec.tier).invite_ceiling);
        let day = local_day(spec.tz, now);
        // The worker's own cap, and the bound SPEC 3.3's rule allows, computed here.
        let recorded_cap = acct.invite_cap(policy, day);
        let ramp_bound = ramp_ceiling_at_most(target, spec.established, spec.ramp_start, day);
        // A step back never goes below `ramp.start` (10), nor the ceiling above target.
        let floor = 10.min(target);
        if recorded_cap > ramp_bound || recorded_cap < floor {
            return Err(format!(
                "{} {day}: the worker's invite cap {recorded_cap} is outside [{floor}, {ramp_bound}], \
                 the ramp rule's range (target {target})",
                spec.id
            ));
        }
        let invite_cap = recorded_cap.min(ramp_bound);
        if let Some(p7) = self.model.held.get(&ai).and_then(|h| h.forbids(spec.tz, now)) {
            return Err(format!("P7: {} reserved at {now}: {p7}", spec.id));
        }
        let left_day = self.model.high.is_some_and(|h| local_day(spec.tz, h) > day);
        if left_day {
            self.n.reserved_on_left_day += 1;
        }
        let first = *self.model.first_invite_cap.entry((ai, day)).or_insert(invite_cap);
        let kind = r.request.kind;
        for &c in draws(kind) {
            let cap = match c {
                Counter::Invites => invite_cap,
                Counter::Messages => spec.caps.messages,
                Counter::Inmails => spec.caps.inmails,
                Counter::Engagement => spec.caps.engagement,
                Counter::WeeklyInvites | Counter::InmailCredits => continue,
            };
            let n = self.model.counts.entry((ai, day, c)).or_default();
            *n += 1;
            if *n > cap {
                return Err(format!(
                    "P1: {} {day} {}: {n} reserved > cap {cap} (at {now})",
                    spec.id,
                    c.as_str()
                ));
            }
            if left_day && c == Counter::Invites && *n > first {
                return Err(format!(
                    "a clock step back reopened {} {day}: {n} invites > {first}, that day's cap (at {now})",
                    spec.id
                ));
            }
        }
        if let (Kind::Invite, Some(weekly)) = (kind, spec.caps.weekly_invites) {
            let week: u32 = (0..7)
                .map(|ago| {
                    let d = day - Duration::days(ago);
                    self.model
                        .counts
                        .get(&(ai, d, Counter::Invites))
                        .copied()
                        .unwrap_or(0)
                })
                .sum();
            if week > weekly {
                return Err(format!(
                    "P1: {} week to {day}: {week} invites > {weekly}",
                    spec.id
                ));
            }
        }
        let (ci, cday) = {
            let ci = self.campaign(&r.campaign);
            (ci, local_day(self.w.campaigns[ci].tz, now))
        };
        self.model
            .taken
            .insert(r.request.id.clone(), (ai, day, kind, ci, cday));
        if let Some(t) = CampaignType::of(kind) {
            let ci = self.campaign(&r.campaign);
            let camp = &self.w.campaigns[ci];
            let cday = local_day(camp.tz, now);
            let cap = camp.caps[t as usize];
            let n = self.model.campaign_counts.entry((ci, cday, t)).or_default();
            *n += 1;
            if *n > cap {
                return Err(format!(
                    "P1: campaign {} {cday} {}: {n} reserved > cap {cap} (at {now})",
                    camp.id,
                    t.as_str()
                ));
            }
        }
        Ok(())
    }

    /// A not-delivered attempt was recorded: its slots are back (SPEC §3), on the days
    /// of its reservation.
    fn on_released(&mut self, id: &str) -> Check {
        self.n.releases += 1;
        let (ai, day, kind, ci, cday) = self
            .model
            .taken
            .remove(id)
            .ok_or_else(|| format!("{id} released without a reservation"))?;
        for &c in draws(kind) {
            if matches!(c, Counter::WeeklyInvites | Counter::InmailCredits) {
                continue;
            }
            let n = self.model.counts.entry((ai, day, c)).or_default();
            *n = n
                .checked_sub(1)
                .ok_or_else(|| format!("{id}: release below zero"))?;
        }
        if let Some(t) = CampaignType::of(kind) {
            let n = self.model.campaign_counts.entry((ci, cday, t)).or_default();
            *n = n
                .checked_sub(1)
                .ok_or_else(|| format!("{id}: campaign release below zero"))?;
        }
        Ok(())
    }

    /// The simulator answers (the request reached LinkedIn).
    fn forward(&mut self, req: &SendRequest, now: DateTime<Utc>) -> Result<Outcome, String> {
        let (o, fb) = self.sim.answer(req, now);
        if o == Outcome::Sent {
            self.n.sim_sent += 1;
            if !self.model.sim_sent.insert(req.id.clone()) {
                return Err(format!("P3: the upstream answered `sent` twice for {}", req.id));
            }
        }
        for f in fb {
            self.feed.push(f);
        }
        Ok(o)
    }

    /// The upstream: the simulator behind a fault injector. Returns the outcome the
    /// worker sees. P3 is checked here.
    fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> Result<Outcome, String> {
        self.n.calls += 1;
        if self.model.done.contains(&req.id) {
            return Err(format!(
                "P3: {} called again (attempt {}) after an answer that may have delivered it",
                req.id, req.attempt
            ));
        }
        match self.w.outage_at(now) {
            Some(true) => {
                self.n.outage_refused += 1;
                return Ok(Outcome::NotDelivered {
                    reason: "connection refused (outage)".into(),
                });
            }
            Some(false) => {
                self.n.outage_5xx += 1;
                // Some reach LinkedIn before the service fails.
                if self.rng.between(0, 3) == 0 {
                    self.forward(req, now)?;
                }
                self.model.done.insert(req.id.clone());
                return Ok(Outcome::MaybeDelivered {
                    reason: "HTTP 503 (outage)".into(),
                });
            }
            None => {}
        }
        let roll = self.rng.between(0, 9999);
        let outcome = if req.kind == Kind::Inmail && chance(&mut self.rng, P_NO_CREDITS) {
            self.n.no_credits += 1;
            Outcome::NoCredits
        } else if roll < P_RATE_LIMITED {
            self.n.rate_limited += 1;
            let hint = self.rng.between(0, 2);
            Outcome::RateLimited {
                retry_after_s: (hint > 0).then(|| self.rng.between(60, 3 * 86_400)),
            }
        } else if roll < P_RATE_LIMITED + P_SERVER_ERROR + P_TIMEOUT {
            let five = roll < P_RATE_LIMITED + P_SERVER_ERROR;
            if five {
                self.n.server_error += 1;
            } else {
                self.n.timeout += 1;
            }
            // Half of them reached LinkedIn before the answer was lost.
            if self.rng.between(0, 1) == 0 {
                self.forward(req, now)?;
            }
            Outcome::MaybeDelivered {
                reason: if five { "HTTP 502" } else { "timeout" }.into(),
            }
        } else if roll < P_RATE_LIMITED + P_SERVER_ERROR + P_TIMEOUT + P_RESTRICTED {
            self.n.restricted += 1;
            Outcome::Restricted
        } else if roll < P_RATE_LIMITED + P_SERVER_ERROR + P_TIMEOUT + P_RESTRICTED + P_NOT_DELIVERED {
            self.n.not_delivered += 1;
            Outcome::NotDelivered {
                reason: "connection refused".into(),
            }
        } else {
            self.forward(req, now)?
        };
        if matches!(
            outcome,
            Outcome::Sent | Outcome::OutOfNetwork | Outcome::Invalid { .. } | Outcome::MaybeDelivered { .. }
        ) {
            self.model.done.insert(req.id.clone());
        }
        Ok(outcome)
    }

    /// A job file for day `d`: new actions, and events (resumes, pauses, cancels).
    fn day_file(&mut self, d: i64, store: &Store) -> Result<String, StoreError> {
        let rng = &mut self.rng;
        let mut out = String::new();
        for (ai, a) in self.w.accounts.iter().enumerate() {
            for i in 0..ACTIONS_PER_ACCOUNT_DAY {
                let kind = weighted_kind(rng);
                // Mostly a campaign the account sends for; sometimes let it pick.
                let members: Vec<usize> = (0..CAMPAIGNS)
                    .filter(|&c| self.w.campaigns[c].accounts.contains(&ai))
                    .collect();
                let (campaign, account) = match members.as_slice() {
                    [] => (
                        &self.w.campaigns[rng.between(0, CAMPAIGNS as u64 - 1) as usize],
                        true,
                    ),
                    m => (&self.w.campaigns[*pick(rng, m)], rng.between(0, 4) > 0),
                };
                let id = format!("d{d}-{}-{i}-{}", a.id, kind.as_str());
                let account = if account {
                    format!(r#","account":"{}""#, a.id)
                } else {
                    String::new()
                };
                let not_before = if rng.between(0, 9) == 0 {
                    let t = self.w.start + Duration::days(d) + Duration::minutes(rng.between(0, 2880) as i64);
                    format!(
                        r#","not_before":"{}""#,
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                } else {
                    String::new()
                };
                out += &format!(
                    r#"{{"type":"action","id":"{id}","campaign":"{}"{account},"kind":"{}","prospect":"https://www.linkedin.com/in/{id}","payload":{{"d":{d}}},"priority":{}{not_before}}}"#,
                    campaign.id,
                    kind.as_str(),
                    rng.between(0, 2)
                );
                out.push('\n');
                self.model.ids.push(id);
            }
        }
        for a in store.accounts()? {
            if a.restricted && rng.between(0, 1) == 0 {
                out += &format!(
                    r#"{{"type":"event","kind":"account_resumed","account":"{}"}}"#,
                    a.id
                );
                out.push('\n');
            }
        }
        for c in &self.w.campaigns {
            let paused = store.campaign(&c.id)?.is_some_and(|c| c.paused);
            let kind = match (paused, rng.between(0, 9)) {
                (true, 0..=6) => "campaign_resumed",
                (false, 0) => "campaign_paused",
                _ => continue,
            };
            out += &format!(r#"{{"type":"event","kind":"{kind}","campaign":"{}"}}"#, c.id);
            out.push('\n');
        }
        for _ in 0..3 {
            if self.model.ids.is_empty() {
                break;
            }
            let id = pick(rng, &self.model.ids).clone();
            out += &format!(r#"{{"type":"event","kind":"cancel_action","action":"{id}"}}"#);
            out.push('\n');
        }
        Ok(out)
    }
}

fn engine_config(rng: &mut SplitMix64) -> EngineConfig {
    EngineConfig {
        min_gap_s: 45,
        max_gap_s: 240,
        max_inflight: 32,
        seed: rng.next_u64(),
        ..EngineConfig::default()
    }
}

/// P4: the per-state counts sum to the actions accepted, and nothing is in flight.
fn check_counts(store: &Store, accepted: usize, what: &str) -> Check {
    let counts = store.state_counts().map_err(|e| e.to_string())?;
    let sum: u64 = counts.iter().sum();
    if sum != accepted as u64 {
        return Err(format!(
            "P4 ({what}): state counts sum to {sum}, {accepted} actions accepted: {counts:?}"
        ));
    }
    if counts[State::Inflight.index()] != 0 {
        return Err(format!("P4 ({what}): actions left inflight: {counts:?}"));
    }
    Ok(())
}

/// P4 in full: every accepted action present once, the stored counts exact.
fn check_states(store: &Store, accepted: &BTreeSet<String>, what: &str) -> Check {
    let actions = store.actions().map_err(|e| e.to_string())?;
    let mut hist = [0u64; 7];
    let mut seen = BTreeSet::new();
    for a in &actions {
        if !seen.insert(a.id.as_str()) {
            return Err(format!("P4 ({what}): {} stored twice", a.id));
        }
        hist[a.state.index()] += 1;
    }
    if seen.len() != accepted.len() || accepted.iter().any(|id| !seen.contains(id.as_str())) {
        return Err(format!(
            "P4 ({what}): {} actions stored, {} accepted",
            seen.len(),
            accepted.len()
        ));
    }
    let counts = store.state_counts().map_err(|e| e.to_string())?;
    if counts != hist {
        return Err(format!(
            "P4 ({what}): stored counts {counts:?}, actions say {hist:?}"
        ));
    }
    Ok(())
}

fn apply_text(engine: &mut Engine, model: &mut Model, name: &str, text: &str, now: DateTime<Utc>) -> Check {
    let records = parse_file(name, text.as_bytes()).map_err(|e| format!("{name}: {e:?}"))?;
    match engine
        .apply_file(name, text.as_bytes(), now)
        .map_err(|e| e.to_string())?
    {
        ApplyOutcome::Applied(_) => {
            for l in &records {
                if let Record::Action(a) = &l.record {
                    model.accepted.insert(a.id.clone());
                }
            }
            Ok(())
        }
        other => Err(format!("{name} did not apply: {other:?}")),
    }
}

/// Drop the engine (a crash: nothing more is recorded) and start again at `now`.
fn restart(
    ctx: &mut Ctx,
    engine: Engine,
    path: &Path,
    now: DateTime<Utc>,
    what: &str,
) -> Result<Engine, String> {
    drop(engine);
    ctx.n.restarts += 1;
    let store = open(path, &ctx.w.settings);
    let engine = Engine::new(store, engine_config(&mut ctx.rng), now).map_err(|e| e.to_string())?;
    check_counts(engine.store(), ctx.model.accepted.len(), what)?;
    Ok(engine)
}

fn run_seed(seed: u64) -> Result<Counts, String> {
    let mut rng = SplitMix64(seed);
    let w = world(seed, &mut rng);
    // The store's durability is not under test here (fsync is off): on tmpfs when there
    // is one, a seed is bound by CPU rather than by sled's flushes.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new().prefix("sendgate-sim").tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| e.to_string())?;
    let path = dir.path().join("store");
    let mut ctx = Ctx {
        w: &w,
        rng,
        sim: Sim::new(seed),
        model: Model::default(),
        n: Counts::default(),
        feed: SimFeed::new(seed),
        files: 0,
    };
    for a in &w.accounts {
        let age = Duration::days(ctx.rng.between(0, 120) as i64);
        ctx.sim.register(&a.id, a.tier, w.start - age);
    }
    let mut now = w.start;
    let store = open(&path, &w.settings);
    let mut engine = Engine::new(store, engine_config(&mut ctx.rng), now).map_err(|e| e.to_string())?;
    apply_text(&mut engine, &mut ctx.model, "setup.jsonl", &w.setup, now)?;
    for d in 0..DAYS {
        let day_start = w.start + Duration::days(d);
        now = now.max(day_start);
        // Feedback that came due (acceptances, replies, restrictions), through the
        // feed's pages, then the day's job file.
        poll_feed(&mut ctx, &mut engine, now)?;
        let text = ctx.day_file(d, engine.store()).map_err(|e| e.to_string())?;
        ctx.files += 1;
        apply_text(&mut engine, &mut ctx.model, &format!("day-{d}.jsonl"), &text, now)?;
        let until = day_start + Duration::days(1);
        engine = run_day(&mut ctx, engine, &path, &mut now, until)?;
        check_states(engine.store(), &ctx.model.accepted, &format!("end of day {d}"))?;
        ctx.n.account_days += w.accounts.len() as u64;
    }
    let report = engine.store().audit(None, None).map_err(|e| e.to_string())?;
    if !report.clean() {
        return Err(format!("audit not clean: {report:?}"));
    }
    ctx.n.actions = ctx.model.accepted.len() as u64;
    Ok(ctx.n)
}

/// Poll the simulator's feed through the page path, with the feed's own faults.
fn poll_feed(ctx: &mut Ctx, engine: &mut Engine, now: DateTime<Utc>) -> Result<(), String> {
    let err = |e: StoreError| e.to_string();
    let roll = ctx.rng.between(0, 9);
    if roll == 0 {
        // A 429 on the feed: no account signal, nothing applied; the next poll retries.
        engine
            .feed_result(
                Err(FetchError::RateLimited {
                    retry_after_s: Some(60),
                }),
                now,
            )
            .map_err(err)?;
        ctx.n.feed_failed += 1;
        return Ok(());
    }
    let cursor = engine.store().events_cursor().map_err(err)?;
    if roll == 1 {
        // A broken page: refused whole, nothing applied.
        let mut body = ctx.feed.page(cursor.as_deref(), now);
        body.truncate(body.len() / 2);
        let c = engine.feed_result(Ok(body), now).map_err(err)?;
        if c.events != 0 {
            return Err("a broken page applied events".into());
        }
        ctx.n.feed_failed += 1;
    }
    let body = ctx.feed.page(cursor.as_deref(), now);
    let c = engine.feed_result(Ok(body.clone()), now).map_err(err)?;
    ctx.n.feed_applied += u64::from(c.applied) + u64::from(c.ignored);
    if roll == 2 {
        // The cursor goes back: the same page again applies nothing twice.
        let again = engine.feed_result(Ok(body), now).map_err(err)?;
        if again.applied + again.ignored != 0 || again.duplicates != c.events {
            return Err(format!(
                "a page served twice applied again: {again:?} after {c:?}"
            ));
        }
        ctx.n.feed_duplicates += u64::from(again.duplicates);
    }
    if let Some(c) = engine.store().events_cursor().map_err(err)? {
        ctx.feed.ack(&c);
    }
    Ok(())
}

fn run_day(
    ctx: &mut Ctx,
    mut engine: Engine,
    path: &Path,
    now: &mut DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Engine, String> {
    let err = |e: StoreError| e.to_string();
    loop {
        let Some(next) = engine.next_wake().map_err(err)?.filter(|n| *n < until) else {
            *now = (*now).max(until);
            return Ok(engine);
        };
        ctx.n.steps += 1;
        if ctx.n.steps > 5_000_000 {
            return Err("the engine does not go to sleep".into());
        }
        *now = (*now).max(next);
        if ctx.feed.has_news(*now) && chance(&mut ctx.rng, P_FEED_POLL) {
            poll_feed(ctx, &mut engine, *now)?;
        }
        let after_midnight = ctx
            .w
            .accounts
            .iter()
            .any(|a| (*now - start_of_day(a.tz, local_day(a.tz, *now))) < Duration::hours(1));
        let p_back = if after_midnight {
            P_CLOCK_BACK_AFTER_MIDNIGHT
        } else {
            P_CLOCK_BACK
        };
        if chance(&mut ctx.rng, p_back) {
            // The clock steps back and time goes on from there.
            ctx.n.clock_back += 1;
            let back = Duration::seconds(ctx.rng.between(1, 3600) as i64);
            let before = *now;
            *now -= back;
            if ctx
                .w
                .accounts
                .iter()
                .any(|a| local_day(a.tz, *now) < local_day(a.tz, before))
            {
                ctx.n.clock_back_across_midnight += 1;
            }
            match ctx.rng.between(0, 2) {
                // A restart with the clock back: every account may send at once.
                0 => engine = restart(ctx, engine, path, *now, "restart after a clock step")?,
                // A job file arriving: its accounts wake at the earlier time.
                1 => {
                    let ai = ctx.rng.between(0, ACCOUNTS as u64 - 1) as usize;
                    let a = &ctx.w.accounts[ai];
                    let members: Vec<usize> = (0..CAMPAIGNS)
                        .filter(|&c| ctx.w.campaigns[c].accounts.contains(&ai))
                        .collect();
                    let c = match members.as_slice() {
                        [] => 0,
                        m => *pick(&mut ctx.rng, m),
                    };
                    ctx.files += 1;
                    let text: String = (0..3)
                        .map(|i| {
                            let kind = pick(&mut ctx.rng, &KINDS).0;
                            let id = format!("late-{}-{i}", ctx.files);
                            ctx.model.ids.push(id.clone());
                            format!(
                                r#"{{"type":"action","id":"{id}","campaign":"{}","account":"{}","kind":"{}","prospect":"https://www.linkedin.com/in/{id}","payload":{{}}}}"#,
                                ctx.w.campaigns[c].id,
                                a.id,
                                kind.as_str()
                            ) + "\n"
                        })
                        .collect();
                    let name = format!("late-{}.jsonl", ctx.files);
                    apply_text(&mut engine, &mut ctx.model, &name, &text, *now)?;
                }
                _ => {}
            }
        }
        let reservations = engine.tick(*now).map_err(err)?;
        for r in &reservations {
            ctx.on_reserved(engine.store(), r, *now)?;
        }
        ctx.model.high = Some(ctx.model.high.map_or(*now, |h| h.max(*now)));
        for r in &reservations {
            if chance(&mut ctx.rng, P_CRASH_BEFORE_SEND) {
                // Reserved (durably) but never sent: it and the rest become unknown.
                ctx.n.crash_before_send += 1;
                engine = restart(ctx, engine, path, *now, "crash between reserve and send")?;
                break;
            }
            let outcome = ctx.answer(&r.request, *now)?;
            if chance(&mut ctx.rng, P_CRASH_AFTER_SEND) {
                // The upstream answered; the record never happened.
                ctx.n.crash_after_send += 1;
                ctx.model.done.insert(r.request.id.clone());
                engine = restart(ctx, engine, path, *now, "crash between send and record")?;
                break;
            }
            let released = matches!(outcome, Outcome::NotDelivered { .. });
            if let Outcome::RateLimited { retry_after_s } = &outcome {
                let ai = ctx.account(&r.account);
                let tz = ctx.w.accounts[ai].tz;
                let held = ctx.model.held.entry(ai).or_default();
                held.days.insert(local_day(tz, *now));
                if let Some(s) = retry_after_s {
                    let until = *now + Duration::seconds(*s as i64);
                    held.until = held.until.max(Some(until));
                }
                ctx.n.rate_limits_recorded += 1;
            }
            engine.complete(r, outcome, *now).map_err(err)?;
            if released {
                ctx.on_released(&r.request.id)?;
            }
        }
        for e in engine.drain_events().expect("settled") {
            if e.name() == "upstream_down" {
                ctx.n.upstream_down += 1;
            }
        }
        check_counts(engine.store(), ctx.model.accepted.len(), "after a step")?;
    }
}

fn replay_hint(seed: u64) -> String {
    format!("SENDGATE_SIM_SEED={seed} cargo nextest run --test simulation")
}

fn run_one(seed: u64) -> Counts {
    let result = std::panic::catch_unwind(|| run_seed(seed));
    match result {
        Ok(Ok(c)) => c,
        Ok(Err(msg)) => panic!(
            "simulation seed {seed} failed: {msg}\nreplay it with: {}",
            replay_hint(seed)
        ),
        Err(p) => {
            eprintln!(
                "simulation seed {seed} panicked\nreplay it with: {}",
                replay_hint(seed)
            );
            std::panic::resume_unwind(p)
        }
    }
}

#[test]
fn many_seeds_of_faults_crashes_and_clock_steps_keep_p1_to_p4() {
    let began = std::time::Instant::now();
    let one: Option<u64> = std::env::var("SENDGATE_SIM_SEED")
        .ok()
        .map(|s| s.parse().expect("SENDGATE_SIM_SEED is a number"));
    let seeds: Vec<u64> = match one {
        Some(s) => vec![s],
        None => {
            let n = std::env::var("SENDGATE_SIM_SEEDS")
                .ok()
                .map(|s| s.parse().expect("SENDGATE_SIM_SEEDS is a number"))
                .unwrap_or(DEFAULT_SEEDS);
            (1..=n).collect()
        }
    };
    let total = std::sync::Mutex::new(Counts::default());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (seeds, total) = (&seeds, &total);
            s.spawn(move || {
                for &seed in seeds.iter().skip(t as usize).step_by(THREADS as usize) {
                    let c = run_one(seed);
                    total.lock().expect("lock").add(&c);
                }
            });
        }
    });
    let n = total.into_inner().expect("lock");
    let faults: Vec<String> = n.faults().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "simulation: seeds={} account_days={} actions={} steps={} reservations={} calls={} sim_sent={} \
         restarts={} reserved_on_a_left_day={} clock_back_across_midnight={} upstream_down={} releases={} \
         rate_limits_recorded={} feed: applied={} duplicates={} failed={} faults: {} in {:.1} s",
        seeds.len(),
        n.account_days,
        n.actions,
        n.steps,
        n.reservations,
        n.calls,
        n.sim_sent,
        n.restarts,
        n.reserved_on_left_day,
        n.clock_back_across_midnight,
        n.upstream_down,
        n.releases,
        n.rate_limits_recorded,
        n.feed_applied,
        n.feed_duplicates,
        n.feed_failed,
        faults.join(" "),
        began.elapsed().as_secs_f64()
    );
    if one.is_none() && seeds.len() as u64 >= DEFAULT_SEEDS {
        assert!(n.account_days >= 10_000, "{} account-days", n.account_days);
        for (k, v) in n.faults() {
            assert!(
                v >= MIN_PER_FAULT,
                "fault `{k}` injected {v} times (< {MIN_PER_FAULT})"
            );
        }
        assert!(
            n.feed_applied >= MIN_PER_FAULT
                && n.feed_duplicates >= MIN_PER_FAULT
                && n.feed_failed >= MIN_PER_FAULT,
            "the feed path was barely exercised: applied {} duplicates {} failed {}",
            n.feed_applied,
            n.feed_duplicates,
            n.feed_failed
        );
        assert!(
            n.upstream_down >= seeds.len() as u64,
            "outages rarely opened the breaker: {}",
            n.upstream_down
        );
        assert!(
            n.rate_limits_recorded >= MIN_PER_FAULT,
            "P7 is checked after {} recorded 429s (< {MIN_PER_FAULT})",
            n.rate_limits_recorded
        );
        assert!(
            n.reserved_on_left_day >= MIN_PER_FAULT,
            "steps back rarely reached a day the clock had left: {}",
            n.reserved_on_left_day
        );
    }
}

/// The explicit case of a step back across a ramp boundary: the invites of a local day
/// never exceed that day's ramp ceiling (SPEC §3.2 "ramp ceiling of that day"), even
/// when the clock steps back into it after the boundary raised the ceiling.
///
/// It guards the ceiling kept per local day (`Account::ramp_ceiling_on`): a reservation
/// that took the account's current ceiling, already advanced by the next day's
/// maintenance, would reopen the day, and the ledger would record the new limit, so
/// `audit` alone would stay clean.
#[test]
fn a_step_back_across_a_ramp_boundary_keeps_that_days_ceiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
    // Ramp started six days ago: the first 7-day boundary is tomorrow, 10 -> 15.
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("day");
    let mut text = String::from(concat!(
        r#"{"type":"account","id":"a","tier":"sales_navigator_core","timezone":"UTC","ramp_start":"2026-11-17","#,
        r#""window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}}"#,
        "\n",
        r#"{"type":"campaign","id":"c","daily_limit":100}"#,
        "\n"
    ));
    for i in 0..40 {
        text += &format!(
            r#"{{"type":"action","id":"x{i:02}","campaign":"c","account":"a","kind":"invite","prospect":"p{i}","payload":{{}}}}"#
        );
        text.push('\n');
    }
    let drive = |engine: &mut Engine, from: DateTime<Utc>, until: DateTime<Utc>| {
        let mut now = from;
        while let Some(next) = engine.next_wake().expect("store").filter(|n| *n < until) {
            now = now.max(next);
            for r in engine.tick(now).expect("tick") {
                engine.complete(&r, Outcome::Sent, now).expect("record");
            }
        }
    };
    let mut engine = Engine::new(
        open(&path, &settings),
        EngineConfig::default(),
        at("2026-11-23T10:00:00Z"),
    )
    .expect("engine");
    let mut model = Model::default();
    apply_text(
        &mut engine,
        &mut model,
        "f.jsonl",
        &text,
        at("2026-11-23T10:00:00Z"),
    )
    .expect("apply");
    drive(
        &mut engine,
        at("2026-11-23T10:00:00Z"),
        at("2026-11-24T00:30:00Z"),
    );
    let before = engine
        .store()
        .account_day("a", day)
        .expect("day")
        .reserved
        .invites;
    assert_eq!(before, 10, "the day's ramp ceiling");
    // The worker restarts with its clock 40 minutes behind, on the day it had left.
    drop(engine);
    let mut engine = Engine::new(
        open(&path, &settings),
        EngineConfig::default(),
        at("2026-11-23T23:50:00Z"),
    )
    .expect("engine");
    drive(
        &mut engine,
        at("2026-11-23T23:50:00Z"),
        at("2026-11-24T00:00:00Z"),
    );
    let after = engine
        .store()
        .account_day("a", day)
        .expect("day")
        .reserved
        .invites;
    assert_eq!(
        after, before,
        "a step back reopened {day}: {after} invites, its ramp ceiling was 10"
    );
}
