//! The engine decides *when* to send. It owns the store and keeps, per account, the
//! earliest instant it may send again (window, pacing gap, hold, one send in flight),
//! so it sleeps until the earliest due time instead of polling.
//!
//! It is a synchronous state machine driven by its caller with `now`: `tick` reserves
//! (durably, through the store) and hands back the attempts to send; `complete` records
//! what the upstream said. The daemon drives it with the system or scaled clock and a
//! real upstream; `simulate` and the tests drive it with a manual clock and `sim`.

pub mod events;
mod feed;
mod fleet;
mod operator;
mod outage;
pub mod virtual_run;

pub use events::Event;
pub use feed::{FetchError, PollCounts, MAX_FEED_BACKOFF_S};

use crate::contract::Outcome;
use crate::policy::breaker::{Breaker, Permit};
use crate::policy::caps::Blocker;
use crate::policy::pacing::{backoff_s, next_gap_s, SplitMix64};
use crate::policy::zone::Zones;
use crate::rules::park;
use crate::store::Change;
use crate::store::{
    ApplyOutcome, Attempt, Begin, FileReport, Hold, Ingest, Reservation, ReserveResult, Source, State, Store,
    StoreError,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Reservations taken in one store transaction (group commit).
pub const MAX_RESERVE_BATCH: usize = 64;
/// Reservation attempts per `tick` before it yields (it asks to be woken at once).
pub const MAX_RESERVATIONS_PER_TICK: usize = 4096;
/// Events (each parked action logs one) after which `dispatch` yields: walking a
/// million-action backlog, one tick once held 250,000 of them.
pub const MAX_EVENTS_PER_TICK: usize = 16_384;
/// Promotion rounds (of `store::PROMOTE_BATCH` each) per `tick`.
pub const MAX_PROMOTE_ROUNDS: usize = 64;
/// Day turns per `tick` before it dispatches and yields (it asks to be woken at once):
/// at start-up every account has one due, and one is a store transaction. An account
/// about to be dispatched has its own due turn first (`candidate`).
pub const MAX_TURNS_PER_TICK: usize = 256;
/// Actions parked per backlog transaction when a counter is exhausted.
pub const MAX_PARK_BATCH: usize = 4096;
/// Held backlogs remembered (`Engine::backlogs`) before those whose hold ended are
/// forgotten.
const MAX_BACKLOGS: usize = 1024;

/// A held backlog: account, campaign (`None`: the whole account), counter, end of the
/// hold.
type BacklogKey = (String, Option<String>, String, DateTime<Utc>);
/// When a reservation is skipped for a reason the engine did not foresee (a race with
/// an event), the account is looked at again after this long.
const RECHECK_S: i64 = 60;
/// A file of more records than this logs `file_progress`, at most every
/// `PROGRESS_EVERY` (SPEC §6).
pub const PROGRESS_RECORDS: usize = 10_000;
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    pub min_gap_s: u64,
    pub max_gap_s: u64,
    /// Sends in flight at once, over all accounts (each account has at most one).
    pub max_inflight: usize,
    pub seed: u64,
    /// `upstream.breaker_failures` and `upstream.breaker_max_s` (SPEC §5, §7).
    pub breaker_failures: u32,
    pub breaker_max_s: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            min_gap_s: 45,
            max_gap_s: 240,
            max_inflight: 32,
            seed: 1,
            breaker_failures: 5,
            breaker_max_s: 300,
        }
    }
}

#[derive(Clone, Debug)]
struct Sched {
    /// The account's days (zone in force, any pending change): windows follow them.
    zones: Zones,
    /// Where this account sits in `wake`, if anywhere.
    wake_at: Option<DateTime<Utc>>,
    /// The pacing gap: no dispatch before this.
    next_ok: DateTime<Utc>,
    inflight: bool,
    last_campaign: Option<String>,
    day: NaiveDate,
    /// This account's entry in `turns` (at most one: the earliest).
    turn_at: Option<DateTime<Utc>>,
    /// Woken without knowing whether it has a ready action (at start-up, after a file):
    /// `candidate` looks at the ready index before anything else.
    check_ready: bool,
}

pub struct Engine {
    store: Store,
    cfg: EngineConfig,
    rng: SplitMix64,
    accounts: BTreeMap<String, Sched>,
    wake: BTreeSet<(DateTime<Utc>, String)>,
    turns: BTreeSet<(DateTime<Utc>, String)>,
    inflight: usize,
    /// `cap_exhausted` is logged once per account, counter and local day.
    exhausted: BTreeSet<(String, String, NaiveDate)>,
    /// How far the backlog of a held account (or campaign) was parked, per account,
    /// campaign (`None`: the whole account), counter and end of the hold: the key to
    /// read after, or `None` once it was read to its end. A backlog is read once per
    /// hold, a window at a time, however many of its actions are refused: the front of
    /// it may be actions the hold does not stop.
    backlogs: BTreeMap<BacklogKey, Option<Vec<u8>>>,
    /// Caps raised whose parked actions are still being woken, a bounded step per tick
    /// (`Store::wake_raised_step`), and the `timed` key to go on after.
    waking: Option<(park::Raised, Option<Vec<u8>>)>,
    /// The UTC day `feedback_missing` was last checked: once per day for the engine's
    /// life (a restart checks again on its first tick).
    feedback_day: Option<NaiveDate>,
    /// Set when a tick stopped early: wake again at once.
    more: bool,
    events: Vec<Event>,
    /// The files (name, content hash) whose `file_applied` is in `events`, and those
    /// whose line was handed out by the last `drain_events`: each file's stored report
    /// is dropped once its line is logged (`events_logged`).
    reports: Vec<(String, u64)>,
    drained_reports: Vec<(String, u64)>,
    /// Wake-ups served (`tick` calls), for the idle test and status.
    pub ticks: u64,
    /// The configured caps last checked for red-zone values (a reload may change them).
    red_zone_caps: Option<crate::policy::caps::Caps>,
    /// The upstream circuit breaker (SPEC §5 "Upstream down"), with its own random
    /// source so that an outage does not shift the pacing draws.
    breaker: Breaker,
    breaker_rng: SplitMix64,
    /// Actions in flight as probes of the open breaker (at most one).
    probes: BTreeSet<String>,
    /// `sent` answers not yet recorded: the next reservation's transaction records
    /// them first (`Store::reserve_after`), so one durable commit carries both. Held
    /// only until that reservation, the end of the tick, a day turn, or any other
    /// call that touches the store (`settle_answers`): never across a decision that
    /// could read what they change.
    answers: Option<Answers>,
    /// Probes sent during the current outage.
    probes_sent: u32,
    /// The upstream's event feed, when polled (SPEC §9 "events").
    feed: Option<feed::Feed>,
    /// Fleet mode (SPEC §12): claims through the cluster task before reserving.
    fleet: Option<fleet::Fleet>,
    /// When the file being applied last logged `file_progress`.
    progress_at: Instant,
    /// Work since the heap was last given back (`mem`).
    churn: crate::mem::Churn,
}

fn change_event(c: Change) -> Event {
    match c {
        Change::RampChanged {
            account,
            old,
            new,
            reason,
        } => Event::RampChanged {
            account,
            old,
            new,
            reason: reason.to_string(),
        },
        Change::HealthChanged {
            account,
            old,
            new,
            reason,
            health_reason,
        } => Event::HealthChanged {
            account,
            old,
            new,
            reason: reason.to_string(),
            health_reason,
        },
        Change::CreditsRefilled { account, old, new } => Event::CreditsRefilled { account, old, new },
        Change::AccountHeld { account, until } => Event::AccountHeld { account, until },
        Change::RedZone {
            account,
            counter,
            value,
        } => Event::RedZone {
            account,
            counter: counter.to_string(),
            value,
        },
    }
}

impl Engine {
    /// Take over a store: recover actions a crash left in flight, then schedule every
    /// account that has work.
    pub fn new(store: Store, cfg: EngineConfig, now: DateTime<Utc>) -> Result<Engine, StoreError> {
        let breaker = Breaker::new(outage::breaker_config(&cfg));
        let breaker_rng = SplitMix64(cfg.seed ^ outage::RNG_SALT);
        let mut e = Engine {
            store,
            rng: SplitMix64(cfg.seed),
            cfg,
            accounts: BTreeMap::new(),
            wake: BTreeSet::new(),
            turns: BTreeSet::new(),
            inflight: 0,
            exhausted: BTreeSet::new(),
            backlogs: BTreeMap::new(),
            waking: None,
            feedback_day: None,
            more: false,
            events: Vec::new(),
            reports: Vec::new(),
            drained_reports: Vec::new(),
            ticks: 0,
            red_zone_caps: None,
            breaker,
            breaker_rng,
            probes: BTreeSet::new(),
            answers: None,
            probes_sent: 0,
            feed: None,
            fleet: None,
            progress_at: Instant::now(),
            churn: crate::mem::Churn::default(),
        };
        let rec = e.store.recover(now)?;
        for id in rec.unknown.iter().chain(&rec.requeued) {
            if let Some(a) = e.store.action(id)? {
                let reason = a.reason.clone().unwrap_or_default();
                if a.state == State::Unknown {
                    e.events.push(Event::ActionUnknown {
                        action: a.id,
                        account: a.account,
                        campaign: a.campaign,
                        kind: a.kind,
                        reason,
                    });
                }
            }
        }
        e.store.release_stale_waiting(now)?;
        e.sync_accounts(now)?;
        e.check_red_zones()?;
        Ok(e)
    }

    /// Run with new settings (a reload): the caps in force change now, and the actions
    /// parked on a cap the new settings raise, for any account, are woken at once
    /// (`rules::park::raised_by_policy`, `Store::wake_raised`); the reservation check
    /// decides as always, so nothing goes over the new cap.
    pub fn set_settings(
        &mut self,
        settings: crate::store::Settings,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Answers held are recorded under the settings they came under.
        self.settle_answers()?;
        let old = std::mem::replace(&mut self.store.settings, settings);
        if old.policy == self.store.settings.policy {
            return Ok(());
        }
        let accounts = self.store.accounts()?;
        let raised = park::raised_by_policy(&accounts, &old.policy, &self.store.settings.policy, now);
        if raised.is_empty() {
            return Ok(());
        }
        self.raise(raised, now)
    }

    /// Caps were raised: forget their held backlogs, and wake what they parked, a
    /// first step now and the rest a step per tick. A raise while one is being woken
    /// joins it, and the `timed` index is read again from its start.
    fn raise(&mut self, raised: park::Raised, now: DateTime<Utc>) -> Result<(), StoreError> {
        if raised.is_empty() {
            return Ok(());
        }
        self.forget_holds(&raised);
        let mut all = self.waking.take().map(|(r, _)| r).unwrap_or_default();
        all.extend(raised);
        self.waking = Some((all, None));
        self.wake_step(now)
    }

    /// One bounded step of the wake in progress, if any; asks to be woken at once while
    /// there is more.
    fn wake_step(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let Some((raised, after)) = self.waking.take() else {
            return Ok(());
        };
        self.settle_answers()?;
        let (woken, next) = self.store.wake_raised_step(&raised, after.as_deref(), now)?;
        self.churn.add(woken.len() as u64);
        for account in woken {
            self.schedule_min(&account, now);
        }
        if next.is_some() {
            self.waking = Some((raised, next));
            self.more = true;
        }
        Ok(())
    }

    /// Forget the held backlogs (and the `cap_exhausted` already logged today) of the
    /// counters `raised` names: a backlog read to its end under a hold would otherwise
    /// stay unread when its woken actions are refused again under the same until.
    fn forget_holds(&mut self, raised: &park::Raised) {
        self.backlogs.retain(|(account, campaign, counter, _), _| {
            !raised.covers(account, campaign.as_deref(), counter)
        });
        let campaign_counters: Vec<String> = raised
            .campaigns
            .values()
            .flatten()
            .map(|&t| Blocker::Campaign(t).name())
            .collect();
        self.exhausted.retain(|(account, counter, _)| {
            !raised.covers(account, None, counter) && !campaign_counters.contains(counter)
        });
    }

    /// Log configured caps in the red zone, once per value (the store remembers them).
    fn check_red_zones(&mut self) -> Result<(), StoreError> {
        let caps = self.store.settings.policy.caps;
        if self.red_zone_caps == Some(caps) {
            return Ok(());
        }
        self.red_zone_caps = Some(caps);
        for (counter, value) in self.store.config_red_zones()? {
            self.events.push(Event::RedZone {
                account: None,
                counter: counter.to_string(),
                value,
            });
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The store, for a clean close (`Store::close`) once the engine is done.
    pub fn into_store(self) -> Store {
        self.store
    }

    pub fn config_mut(&mut self) -> &mut EngineConfig {
        &mut self.cfg
    }

    /// The events so far, to be logged: the store is settled first, so no line tells
    /// of a commit a `kill -9` could still undo.
    pub fn drain_events(&mut self) -> Result<Vec<Event>, StoreError> {
        self.settle()?;
        self.drained_reports.append(&mut self.reports);
        Ok(std::mem::take(&mut self.events))
    }

    /// The events `drain_events` handed out are logged: the files they report applied
    /// need no report at the next start-up any more (SPEC §6). A crash before this
    /// (or before the store's next flush) reports such a file again, never not at all.
    pub fn events_logged(&mut self) -> Result<(), StoreError> {
        self.settle_answers()?;
        for (name, hash) in std::mem::take(&mut self.drained_reports) {
            self.store.file_reported(&name, hash)?;
        }
        Ok(())
    }

    /// Report a file a previous process committed but died before logging (a report
    /// from `Store::unreported_files`): `file_applied` with its stored counts.
    pub fn report_file(&mut self, r: &FileReport) {
        self.events.push(Event::FileApplied {
            file: r.name.clone(),
            accounts: r.accounts,
            campaigns: r.campaigns,
            actions: r.actions,
            duplicates: r.duplicates,
            events: r.events,
        });
        self.reports.push((r.name.clone(), r.hash));
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Load accounts (new ones get a schedule and a day turn) and wake every account
    /// with ready work.
    fn sync_accounts(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        for a in self.store.accounts()? {
            let zones = a.zones();
            match self.accounts.get_mut(&a.id) {
                Some(s) => {
                    if s.zones != zones {
                        // A changed zone can only end the current day later; a turn at
                        // the new end makes sure it is not missed.
                        s.zones = zones;
                        self.plan_turn(&a.id, zones.start_of_next_day(now));
                    }
                }
                None => {
                    // Pacing survives a restart: the gap counts from the last reservation.
                    let gap = next_gap_s(self.cfg.min_gap_s, self.cfg.max_gap_s, &mut self.rng);
                    let next_ok = a
                        .last_reserved_ms
                        .map(crate::store::codec::from_ms)
                        .map_or(now, |t| {
                            (t + Duration::seconds(gap as i64)).min(now + Duration::seconds(gap as i64))
                        });
                    self.accounts.insert(
                        a.id.clone(),
                        Sched {
                            zones,
                            wake_at: None,
                            next_ok,
                            inflight: false,
                            last_campaign: None,
                            day: zones.day_at(now),
                            turn_at: None,
                            check_ready: false,
                        },
                    );
                    // A turn now: it summarises any day that ended while the worker
                    // was stopped (the store remembers the last one summarised).
                    self.plan_turn(&a.id, now);
                }
            }
            // Every account is woken, each to look at its own ready actions when its
            // turn in `dispatch` comes: no scan of the whole ready index here, so a
            // million queued actions do not delay the first send (or a file's apply).
            if let Some(s) = self.accounts.get_mut(&a.id) {
                s.check_ready = true;
            }
            self.schedule_min(&a.id, now);
        }
        Ok(())
    }

    /// Plan a day turn of `account` at `at`, unless one is planned no later. One entry
    /// an account is enough: every turn plans the next one from the zones in force.
    fn plan_turn(&mut self, account: &str, at: DateTime<Utc>) {
        let Some(s) = self.accounts.get_mut(account) else {
            return;
        };
        match s.turn_at {
            Some(t) if t <= at => return,
            Some(t) => {
                self.turns.remove(&(t, account.to_string()));
            }
            None => {}
        }
        s.turn_at = Some(at);
        self.turns.insert((at, account.to_string()));
        debug_assert!(
            self.turns.len() <= self.accounts.len(),
            "one turn an account at most"
        );
    }

    /// Run `account`'s day turn now if one is due.
    fn turn_if_due(&mut self, account: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let Some(t) = self
            .accounts
            .get(account)
            .and_then(|s| s.turn_at)
            .filter(|t| *t <= now)
        else {
            return Ok(());
        };
        self.turns.remove(&(t, account.to_string()));
        if let Some(s) = self.accounts.get_mut(account) {
            s.turn_at = None;
        }
        self.day_turn(account, now)
    }

    /// Wake `account` at `at`, replacing any earlier plan.
    fn schedule_at(&mut self, account: &str, at: DateTime<Utc>) {
        let Some(s) = self.accounts.get_mut(account) else {
            return;
        };
        if let Some(old) = s.wake_at.take() {
            self.wake.remove(&(old, account.to_string()));
        }
        s.wake_at = Some(at);
        self.wake.insert((at, account.to_string()));
    }

    /// Wake `account` at `at` unless it is already due to wake earlier.
    fn schedule_min(&mut self, account: &str, at: DateTime<Utc>) {
        let earlier = self
            .accounts
            .get(account)
            .and_then(|s| s.wake_at)
            .is_some_and(|w| w <= at);
        if !earlier {
            self.schedule_at(account, at);
        }
    }

    /// Apply a job file whole (every chunk at once) and log the result.
    pub fn apply_file(
        &mut self,
        name: &str,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut job = match self.begin_file(name, Source::Bytes(bytes.to_vec()), now)? {
            Begin::Finished(o) => return Ok(o),
            Begin::Started(job) => job,
        };
        loop {
            if let Some(o) = self.file_step(&mut job, now)? {
                return Ok(o);
            }
        }
    }

    /// Start applying a job file: `Begin::Started` is stepped with `file_step`, and
    /// the engine may tick between two steps (SPEC §6, big files).
    pub fn begin_file(
        &mut self,
        name: &str,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<Begin, StoreError> {
        self.settle_answers()?;
        let begin = self.store.begin_ingest(name, source, now)?;
        if let Begin::Finished(o) = &begin {
            self.file_outcome(name, o, now)?;
        }
        self.progress_at = Instant::now();
        Ok(begin)
    }

    /// One bounded step of a file (a chunk staged, the commit, or a chunk published):
    /// its outcome once it is done, logged.
    pub fn file_step(
        &mut self,
        job: &mut Ingest,
        now: DateTime<Utc>,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        self.settle_answers()?;
        let outcome = self.store.ingest_step(job)?;
        // A big file writes much of sled's log: a kill -9 must not replay all of it.
        self.store.snapshot_if_due()?;
        let (done, total) = job.progress();
        match &outcome {
            Some(o) => {
                if matches!(o, ApplyOutcome::Applied(_)) {
                    self.reports.push((job.name().to_string(), job.hash()));
                }
                self.file_outcome(job.name(), o, now)?
            }
            None if total > PROGRESS_RECORDS && self.progress_at.elapsed() >= PROGRESS_EVERY => {
                self.progress_at = Instant::now();
                self.events.push(Event::FileProgress {
                    file: job.name().to_string(),
                    done,
                    total,
                });
            }
            None => {}
        }
        Ok(outcome)
    }

    /// A stop while `job` applies: drop it if it is not committed yet (`true`; the file
    /// is applied again at the next start), else `false` and it is to be finished.
    pub fn abandon_file(&mut self, job: &mut Ingest) -> Result<bool, StoreError> {
        self.store.abandon_ingest(job)
    }

    fn file_outcome(
        &mut self,
        name: &str,
        outcome: &ApplyOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match outcome {
            ApplyOutcome::Applied(a) => {
                self.events.push(Event::FileApplied {
                    file: name.to_string(),
                    accounts: a.accounts,
                    campaigns: a.campaigns,
                    actions: a.actions,
                    duplicates: a.duplicates,
                    events: a.events,
                });
                self.events.extend(a.changes.iter().cloned().map(change_event));
                self.events
                    .extend(a.effects.iter().map(|e| operator::effect_event(name, e)));
                self.sync_accounts(now)?;
                // What the file's raised caps had parked wakes, a step per tick.
                self.raise(a.raised.clone(), now)?;
                self.churn.add(u64::from(a.actions));
                self.give_back_if_churned();
            }
            ApplyOutcome::AlreadyApplied => {}
            ApplyOutcome::Rejected(r) => self.events.push(Event::FileRejected {
                file: name.to_string(),
                line: r.line,
                field: r.field.clone(),
                reason: r.reason.clone(),
            }),
        }
        Ok(())
    }

    /// The earliest instant the engine has something to do, if any.
    pub fn next_wake(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        if self.more {
            return Ok(Some(DateTime::<Utc>::MIN_UTC));
        }
        let candidates = [
            // The breaker may hold the wake queue back (an outage, a probe in flight).
            self.wake
                .first()
                .and_then(|(t, _)| self.wake_gate(*t))
                .filter(|_| self.fleet_open()),
            self.turns.first().map(|(t, _)| *t),
            self.store.next_timed()?,
            self.feed_wake(),
        ];
        Ok(candidates.into_iter().flatten().min())
    }

    /// Do everything due at `now`: promote waiting actions, turn local days, and
    /// reserve the next action of every account that may send. Returns durable
    /// reservations: the caller sends each and reports back with `complete`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<Vec<Reservation>, StoreError> {
        self.ticks += 1;
        self.more = false;
        // Before anything is reserved, so the pause never sits between a reservation
        // and its send.
        self.store.snapshot_if_due()?;
        self.check_red_zones()?;
        for round in 0.. {
            let accounts = self.store.promote_due(now)?;
            if accounts.is_empty() {
                break;
            }
            for a in accounts {
                self.schedule_min(&a, now);
            }
            if round + 1 >= MAX_PROMOTE_ROUNDS {
                self.more = true;
                break;
            }
        }
        for done in 0.. {
            let Some((t, account)) = self.turns.first().cloned() else {
                break;
            };
            if t > now {
                break;
            }
            if done >= MAX_TURNS_PER_TICK {
                // The rest in the next ticks; an account dispatched before then turns
                // its own day first (`candidate`).
                self.more = true;
                break;
            }
            self.turns.remove(&(t, account.clone()));
            if let Some(s) = self.accounts.get_mut(&account) {
                debug_assert_eq!(s.turn_at, Some(t), "`turns` and `turn_at` agree");
                s.turn_at = None;
            }
            self.day_turn(&account, now)?;
        }
        self.wake_step(now)?;
        let out = self.dispatch(now)?;
        // Answers no reservation carried are recorded on their own.
        self.settle_answers()?;
        if out.is_empty() {
            // It reads every account: on a tick that hands nothing out, so that it
            // never delays a send (the first tick after a start, above all).
            self.check_feedback(now)?;
        }
        self.give_back_if_churned();
        Ok(out)
    }

    /// After enough work (a backlog walked and parked, every account's day turned, a
    /// big file), give the heap's free pages back.
    fn give_back_if_churned(&mut self) {
        if self.churn.trim_due() {
            crate::mem::give_back();
        }
    }

    /// Once per UTC day: while no `invite_accepted` has ever reached the worker, say so
    /// (SPEC §3.4). A clock that steps back does not log it again. Checked on the first
    /// tick of the day that reserves nothing.
    fn check_feedback(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let day = now.date_naive();
        if self.feedback_day.is_some_and(|d| d >= day) {
            return Ok(());
        }
        self.feedback_day = Some(day);
        if let Some(accounts) = self.store.feedback_missing()? {
            self.events.push(Event::FeedbackMissing { accounts });
        }
        Ok(())
    }

    fn day_turn(&mut self, account: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        if !self.accounts.contains_key(account) {
            return Ok(());
        }
        // A turn reads the day's counters an answer adds to.
        self.settle_answers()?;
        let turn = self.store.day_turn(account, now)?;
        self.churn.add(1);
        let Some(next) = turn.next else {
            return Ok(());
        };
        self.plan_turn(account, next);
        self.events.extend(turn.changes.into_iter().map(change_event));
        for d in &turn.summaries {
            self.events.push(Event::DaySummary {
                account: account.to_string(),
                day: d.day,
                sent: d.rec.sent_by_kind,
                invites_reserved: d.rec.reserved.invites,
                invite_cap: d.invite_cap,
                ramp_ceiling: d.ramp_ceiling,
                health: d.health,
                invites_accepted: d.rec.invites_accepted,
                rate_limits: d.rec.rate_limits,
                inmail_balance: d.inmail_balance,
            });
        }
        let Some(s) = self.accounts.get_mut(account) else {
            return Ok(());
        };
        let today = s.zones.day_at(now);
        if today <= s.day {
            return Ok(()); // the clock stepped back, or a repeated turn
        }
        s.day = today;
        self.exhausted.retain(|(a, _, d)| a != account || *d >= today);
        self.schedule_min(account, now);
        Ok(())
    }

    /// Pick the next action of every account that may send now, and reserve them in
    /// batches.
    fn dispatch(&mut self, now: DateTime<Utc>) -> Result<Vec<Reservation>, StoreError> {
        if self.store.paused_all()? {
            // The kill switch: nothing is dispatched, and nothing waits to be
            // (`operator_changed` wakes every account with work when it is lifted).
            self.sleep_all();
            return Ok(Vec::new());
        }
        let max_inflight = match self.breaker.permit(now) {
            Permit::Dispatch { max_inflight } => self.max_inflight(max_inflight),
            Permit::Probe => return self.dispatch_probe(now),
            // Open: every waiting action stays exactly as it is.
            Permit::Wait(_) => return Ok(Vec::new()),
        };
        if !self.fleet_open() {
            // A fleet whose cluster is down, or a claim out: `fleet_notice` wakes.
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut attempts = 0;
        loop {
            let mut batch: Vec<String> = Vec::new();
            while self.inflight + batch.len() < max_inflight && batch.len() < MAX_RESERVE_BATCH {
                let Some((t, account)) = self.wake.first().cloned() else {
                    break;
                };
                if t > now {
                    break;
                }
                self.wake.remove(&(t, account.clone()));
                if let Some(id) = self.candidate(&account, now)? {
                    batch.push(id);
                }
            }
            if batch.is_empty() {
                return Ok(out);
            }
            attempts += batch.len();
            if self.fleet.is_some() {
                self.fleet_dispatch(batch, now, &mut out)?;
                if !self.fleet_open() {
                    return Ok(out); // one claim at a time
                }
                continue;
            }
            let held = self.answers.take();
            let (answers, at) = held.as_ref().map_or((&[][..], now), |a| (&a.attempts[..], a.at));
            let folded = self.store.reserve_after(answers, at, &batch, now)?;
            if let Some(a) = held {
                self.answered(
                    a.done,
                    folded.recorded,
                    folded.answer_changes,
                    BTreeSet::new(),
                    a.at,
                );
            }
            self.events.extend(folded.changes.into_iter().map(change_event));
            for r in folded.results {
                self.on_reserve_result(r, now, &mut out)?;
            }
            if attempts >= MAX_RESERVATIONS_PER_TICK || self.events.len() >= MAX_EVENTS_PER_TICK {
                // The rest in the next tick; the caller logs and drops these events
                // first, so a walked backlog never piles up in memory.
                self.more = true;
                return Ok(out);
            }
        }
    }

    /// The action `account` should try now, or `None` after rescheduling it for
    /// when it may send (hold, window, pacing) or dropping it (no work, restricted).
    fn candidate(&mut self, account: &str, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
        let Some(s) = self.accounts.get_mut(account) else {
            return Ok(None);
        };
        s.wake_at = None;
        if s.inflight {
            return Ok(None); // `complete` reschedules it
        }
        if std::mem::take(&mut s.check_ready) && !self.store.has_ready(account)? {
            // Nothing to send: a promotion, an event or a file wakes it again.
            return Ok(None);
        }
        // A new local day is turned before anything is dispatched on it.
        self.turn_if_due(account, now)?;
        let Some(s) = self.accounts.get_mut(account) else {
            return Ok(None);
        };
        if let Some(w) = s.wake_at.take() {
            // Its turn woke it for the new day: that is this very wake.
            debug_assert!(w <= now, "a day turn wakes an account now");
            self.wake.remove(&(w, account.to_string()));
        }
        let (next_ok, last) = (s.next_ok, s.last_campaign.clone());
        let Some(a) = self.store.account(account)? else {
            return Ok(None);
        };
        if a.restricted {
            return Ok(None); // `account_resumed` (a job file) wakes it again
        }
        if self.store.account_paused(account)? {
            return Ok(None); // `resume` wakes it again
        }
        if !self.fleet_may_send(account, now)? {
            return Ok(None); // `Notice::Owned` wakes it
        }
        let zones = a.zones();
        if let Some(h) = a
            .held_until_ms
            .map(crate::store::codec::from_ms)
            .filter(|h| *h > now)
        {
            self.schedule_at(account, h);
            return Ok(None);
        }
        if !zones.is_open(&a.window, now) {
            if let Some(open) = zones.next_open(&a.window, now) {
                self.schedule_at(account, open);
            }
            return Ok(None);
        }
        if next_ok > now {
            self.schedule_at(account, next_ok);
            return Ok(None);
        }
        Ok(self.store.pick(account, last.as_deref())?.map(|(_, id)| id))
    }

    fn on_reserve_result(
        &mut self,
        r: ReserveResult,
        now: DateTime<Utc>,
        out: &mut Vec<Reservation>,
    ) -> Result<(), StoreError> {
        match r {
            ReserveResult::Reserved(res) => {
                let gap = next_gap_s(self.cfg.min_gap_s, self.cfg.max_gap_s, &mut self.rng);
                if let Some(s) = self.accounts.get_mut(&res.account) {
                    s.inflight = true;
                    s.last_campaign = Some(res.campaign.clone());
                    s.next_ok = now + Duration::seconds(gap as i64);
                }
                self.churn.add(1);
                self.inflight += 1;
                self.events.push(Event::ActionReserved {
                    action: res.request.id.clone(),
                    account: res.account.clone(),
                    campaign: res.campaign.clone(),
                    kind: res.request.kind,
                    attempt: res.request.attempt,
                });
                out.push(res);
            }
            ReserveResult::Parked {
                action,
                account,
                campaign,
                kind,
                blocker,
                blocked,
                until,
            } => {
                if let (Some(s), Some(_)) = (self.accounts.get(&account), blocked) {
                    let day = s.zones.day_at(now);
                    if self.exhausted.insert((account.clone(), blocker.clone(), day)) {
                        self.events.push(Event::CapExhausted {
                            account: account.clone(),
                            campaign: campaign.clone(),
                            counter: blocker.clone(),
                            day,
                        });
                    }
                }
                self.events.push(Event::ActionParked {
                    action,
                    account: account.clone(),
                    campaign: campaign.clone(),
                    kind,
                    counter: blocker.clone(),
                    until,
                });
                let backlog = match (blocked, until) {
                    (Some(b @ Blocker::Campaign(_)), Some(t)) => {
                        Some((Some(campaign.as_str()), Hold::Counter(b, t)))
                    }
                    (Some(b @ Blocker::Account(_)), Some(t)) => Some((None, Hold::Counter(b, t))),
                    (None, None) => Some((Some(campaign.as_str()), Hold::CampaignPaused)),
                    _ => None,
                };
                if let Some((only, hold)) = backlog {
                    let parked = self.park_backlog(&account, only, hold, &blocker, now)?;
                    for p in parked {
                        self.churn.add(1);
                        self.events.push(Event::ActionParked {
                            action: p.action,
                            account: account.clone(),
                            campaign: p.campaign,
                            kind: p.kind,
                            counter: blocker.clone(),
                            until,
                        });
                    }
                }
                self.schedule_min(&account, now);
            }
            ReserveResult::Skipped { action, .. } => {
                if let Some(a) = self.store.action(&action)? {
                    self.schedule_min(&a.account, now + Duration::seconds(RECHECK_S));
                }
            }
        }
        Ok(())
    }

    /// Park the next window of a held backlog (at most `MAX_PARK_BATCH` ready actions
    /// read), after the last one read under the same hold; nothing once the backlog
    /// was read to its end under that hold. A paused campaign's backlog is read from
    /// its start each time: the pause stops every action of it, so a window never
    /// reads the same action twice.
    fn park_backlog(
        &mut self,
        account: &str,
        only: Option<&str>,
        hold: Hold,
        counter: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::store::ParkedAction>, StoreError> {
        let key = match hold {
            Hold::Counter(_, until) => Some((
                account.to_string(),
                only.map(str::to_string),
                counter.to_string(),
                until,
            )),
            Hold::CampaignPaused => None,
        };
        let after = match key.as_ref().and_then(|k| self.backlogs.get(k)) {
            Some(None) => return Ok(Vec::new()),
            Some(Some(k)) => Some(k.clone()),
            None => None,
        };
        let (parked, next) =
            self.store
                .park_backlog(account, only, hold, now, MAX_PARK_BATCH, after.as_deref())?;
        if let Some(k) = key {
            if self.backlogs.len() >= MAX_BACKLOGS {
                self.backlogs.retain(|(_, _, _, until), _| *until > now);
            }
            self.backlogs.insert(k, next);
        }
        Ok(parked)
    }

    /// Record what the upstream answered for an attempt handed out by `tick`.
    pub fn complete(
        &mut self,
        res: &Reservation,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.complete_many(vec![(res.clone(), outcome)], now)
    }

    /// Record several answers in one store transaction and one durable commit.
    pub fn complete_many(
        &mut self,
        done: Vec<(Reservation, Outcome)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(done.len());
        let mut rate_limited = BTreeSet::new();
        for (res, outcome) in &done {
            let retries = self.store.action(&res.request.id)?.map_or(1, |a| a.retries);
            let st = &self.store.settings;
            let backoff = backoff_s(retries, st.backoff_base_s, st.backoff_max_s, &mut self.rng);
            if matches!(outcome, Outcome::RateLimited { .. }) {
                rate_limited.insert(res.request.id.clone());
            }
            batch.push(Attempt {
                action: res.request.id.clone(),
                outcome: outcome.clone(),
                backoff_s: backoff,
                probe: self.probes.contains(&res.request.id),
            });
        }
        for (res, _) in &done {
            self.inflight = self.inflight.saturating_sub(1);
            let next_ok = match self.accounts.get_mut(&res.account) {
                Some(s) => {
                    s.inflight = false;
                    s.next_ok
                }
                None => now,
            };
            self.schedule_at(&res.account, next_ok.max(now));
        }
        let foldable = self.fleet.is_none()
            && done.iter().all(|(_, o)| matches!(o, Outcome::Sent))
            && batch.iter().all(|a| !a.probe)
            && !self.breaker.is_open()
            && self.answers.as_ref().is_none_or(|a| a.at == now);
        if foldable {
            // Recorded with the next reservation, at this `now`: nothing the breaker
            // or the rules decide before then reads what a `sent` answer changes.
            let a = self.answers.get_or_insert_with(|| Answers {
                at: now,
                done: Vec::new(),
                attempts: Vec::new(),
            });
            a.done.extend(done);
            a.attempts.extend(batch);
            return Ok(());
        }
        // Answers are recorded in the order they came.
        self.settle_answers()?;
        let (recorded, changes) = self.store.record_attempts(&batch, now)?;
        self.answered(done, recorded, changes, rate_limited, now);
        Ok(())
    }

    /// Every answer in so far recorded (those held for the next reservation too) and
    /// flushed: what the daemon runs before it reads a job file, so that a file which
    /// kills the worker (out of memory) takes no answer along.
    pub fn settle(&mut self) -> Result<(), StoreError> {
        self.settle_answers()?;
        self.store.settle()
    }

    /// Record the answers held for the next reservation now, on their own (a no-op
    /// when none are held). Every call that touches the store other than that
    /// reservation runs this first.
    pub fn settle_answers(&mut self) -> Result<(), StoreError> {
        let Some(a) = self.answers.take() else {
            return Ok(());
        };
        let (recorded, changes) = self.store.record_attempts(&a.attempts, a.at)?;
        self.answered(a.done, recorded, changes, BTreeSet::new(), a.at);
        Ok(())
    }

    /// The events of recorded answers, then the breaker's verdict on them.
    fn answered(
        &mut self,
        done: Vec<(Reservation, Outcome)>,
        recorded: Vec<crate::store::Recorded>,
        changes: Vec<Change>,
        rate_limited: BTreeSet<String>,
        now: DateTime<Utc>,
    ) {
        for r in recorded {
            let (action, account, campaign, kind) = (r.action, r.account, r.campaign, r.kind);
            let reason = r.reason.unwrap_or_default();
            if rate_limited.contains(&action) {
                self.events.push(Event::RateLimited {
                    action: action.clone(),
                    account: account.clone(),
                    campaign: campaign.clone(),
                    kind,
                });
            }
            self.events.push(match r.state {
                State::Sent => Event::ActionSent {
                    action,
                    account,
                    campaign,
                    kind,
                },
                State::Failed => Event::ActionFailed {
                    action,
                    account,
                    campaign,
                    kind,
                    reason,
                },
                State::Unknown => Event::ActionUnknown {
                    action,
                    account,
                    campaign,
                    kind,
                    reason,
                },
                State::Queued => Event::ActionRetry {
                    action,
                    account,
                    campaign,
                    kind,
                    reason,
                    until: r.until,
                },
                State::Parked | State::Inflight | State::Cancelled => Event::ActionParked {
                    action,
                    account,
                    campaign,
                    kind,
                    counter: reason,
                    until: r.until,
                },
            });
        }
        self.events.extend(changes.into_iter().map(change_event));
        self.on_answers(&done, now);
    }
}

/// `sent` answers held for the next reservation (`Engine::answers`), all answered at
/// `at`.
struct Answers {
    at: DateTime<Utc>,
    done: Vec<(Reservation, Outcome)>,
    attempts: Vec<Attempt>,
}
