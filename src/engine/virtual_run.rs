//! Driving the engine on virtual time: the loop `simulate` and the deterministic tests
//! share. Time jumps straight to the next thing due, so a month runs in seconds; an
//! upstream call takes no virtual time.
//!
//! Feedback (acceptances, replies, restrictions) travels the way it does under `run`:
//! the simulator's event feed (`SimFeed`) serves it as JSON pages, polled every
//! `poll_every_s` on a fixed grid, parsed and applied by `Engine::feed_result`. A poll
//! that would find nothing new is skipped, which changes nothing: an empty page with
//! the same cursor applies nothing and logs nothing.

use super::{Engine, Event};
use crate::contract::events::MAX_PAGE_EVENTS;
use crate::contract::{Outcome, SendRequest};
use crate::store::StoreError;
use crate::upstream::sim::{Feedback, SimFeed};
use chrono::{DateTime, Duration, Utc};

/// Upper bound on loop iterations of one run: a run that would take more is a bug
/// (the engine failing to sleep), not a workload.
pub const MAX_STEPS: u64 = 50_000_000;

/// The virtual feed's poll interval unless told otherwise (`upstream.events_every_s`
/// is 60 by default; five minutes keeps month-long runs quick and changes nothing a
/// day-level rule can see).
pub const DEFAULT_POLL_EVERY_S: i64 = 300;

/// Something that answers attempts: the simulator, or a scripted test upstream.
pub trait Answer {
    fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> (Outcome, Vec<Feedback>);
}

impl Answer for crate::upstream::sim::Sim {
    fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> (Outcome, Vec<Feedback>) {
        crate::upstream::sim::Sim::answer(self, req, now)
    }
}

impl<F: FnMut(&SendRequest, DateTime<Utc>) -> Outcome> Answer for F {
    fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> (Outcome, Vec<Feedback>) {
        (self(req, now), Vec::new())
    }
}

/// A virtual-time run: the engine, feedback waiting to be delivered, and the log.
pub struct VirtualRun {
    pub engine: Engine,
    pub now: DateTime<Utc>,
    feed: SimFeed,
    /// Feed polls happen at `anchor + k * poll_every_s`.
    anchor: DateTime<Utc>,
    pub poll_every_s: i64,
    /// Every event with the virtual time it happened at.
    pub log: Vec<(DateTime<Utc>, Event)>,
    pub steps: u64,
}

impl VirtualRun {
    pub fn new(engine: Engine, now: DateTime<Utc>) -> VirtualRun {
        VirtualRun {
            engine,
            now,
            feed: SimFeed::new(0),
            anchor: now,
            poll_every_s: DEFAULT_POLL_EVERY_S,
            log: Vec::new(),
            steps: 0,
        }
    }

    fn collect(&mut self) -> Result<(), StoreError> {
        let now = self.now;
        self.log
            .extend(self.engine.drain_events()?.into_iter().map(|e| (now, e)));
        // Kept: as good as logged.
        self.engine.events_logged()
    }

    /// Apply a job file's text at the current time.
    pub fn apply_text(&mut self, name: &str, text: &str) -> Result<(), StoreError> {
        self.engine.apply_file(name, text.as_bytes(), self.now)?;
        self.collect()?;
        Ok(())
    }

    /// The next poll that would find something: the first grid point at or after the
    /// earliest feedback due (now, if some was served and not yet acknowledged).
    fn next_poll(&self) -> Option<DateTime<Utc>> {
        let every = self.poll_every_s.max(1);
        let due = if self.feed.has_news(self.now) {
            self.now
        } else {
            self.feed.next_due()?
        };
        let k = ((due - self.anchor).num_seconds().max(0) + every - 1) / every;
        Some(self.anchor + Duration::seconds(k * every))
    }

    /// Poll the feed through the page path until a page is not full.
    fn poll_feed(&mut self) -> Result<(), StoreError> {
        loop {
            let cursor = self.engine.store().events_cursor()?;
            let body = self.feed.page(cursor.as_deref(), self.now);
            let counts = self.engine.feed_result(Ok(body), self.now)?;
            if let Some(c) = self.engine.store().events_cursor()? {
                self.feed.ack(&c);
            }
            if (counts.events as usize) < MAX_PAGE_EVENTS {
                return Ok(());
            }
        }
    }

    /// Hand feedback to the feed, as an upstream would (for tests with their own).
    pub fn push_feedback(&mut self, f: Feedback) {
        self.feed.push(f);
    }

    /// Run until `until` (exclusive) or until nothing is left to do.
    pub fn run_until(&mut self, until: DateTime<Utc>, upstream: &mut impl Answer) -> Result<(), StoreError> {
        while self.steps < MAX_STEPS {
            let next_fb = self.next_poll();
            let next = [self.engine.next_wake()?, next_fb].into_iter().flatten().min();
            let Some(next) = next else { break };
            if next >= until {
                break;
            }
            self.steps += 1;
            self.now = self.now.max(next);
            if next_fb.is_some_and(|t| t <= self.now) {
                self.poll_feed()?;
            }
            let reservations = self.engine.tick(self.now)?;
            let mut done = Vec::with_capacity(reservations.len());
            for r in reservations {
                let (outcome, fb) = upstream.answer(&r.request, self.now);
                done.push((r, outcome));
                for f in fb {
                    self.feed.push(f);
                }
            }
            if !done.is_empty() {
                self.engine.complete_many(done, self.now)?;
            }
            self.collect()?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Events of one name, with their times.
    pub fn events(&self, name: &str) -> impl Iterator<Item = &(DateTime<Utc>, Event)> {
        let name = name.to_string();
        self.log.iter().filter(move |(_, e)| e.name() == name)
    }
}
