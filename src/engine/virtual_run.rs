//! Driving the engine on virtual time: the loop `simulate` and the deterministic tests
//! share. Time jumps straight to the next thing due, so a month runs in seconds; an
//! upstream call takes no virtual time.

use super::{Engine, Event};
use crate::contract::jobfile::{Line, Record};
use crate::contract::{Outcome, SendRequest};
use crate::store::StoreError;
use crate::upstream::sim::Feedback;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Upper bound on loop iterations of one run: a run that would take more is a bug
/// (the engine failing to sleep), not a workload.
pub const MAX_STEPS: u64 = 50_000_000;

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
    feedback: BTreeMap<(DateTime<Utc>, u64), Feedback>,
    feedback_seq: u64,
    /// Every event with the virtual time it happened at.
    pub log: Vec<(DateTime<Utc>, Event)>,
    pub steps: u64,
}

impl VirtualRun {
    pub fn new(engine: Engine, now: DateTime<Utc>) -> VirtualRun {
        VirtualRun {
            engine,
            now,
            feedback: BTreeMap::new(),
            feedback_seq: 0,
            log: Vec::new(),
            steps: 0,
        }
    }

    fn collect(&mut self) {
        let now = self.now;
        self.log
            .extend(self.engine.drain_events().into_iter().map(|e| (now, e)));
    }

    /// Apply a job file's text at the current time.
    pub fn apply_text(&mut self, name: &str, text: &str) -> Result<(), StoreError> {
        match crate::contract::parse_file(name, text.as_bytes()) {
            Ok(records) => {
                self.engine
                    .apply_file(name, text.as_bytes(), &records, self.now)?;
            }
            Err(e) => self.log.push((
                self.now,
                Event::FileRejected {
                    file: name.to_string(),
                    line: e.line,
                    field: e.field,
                    reason: e.reason,
                },
            )),
        }
        self.collect();
        Ok(())
    }

    fn deliver_feedback(&mut self) -> Result<(), StoreError> {
        let due: Vec<_> = self
            .feedback
            .range(..=(self.now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let records: Vec<Line<Record>> = due
            .iter()
            .filter_map(|k| self.feedback.remove(k))
            .enumerate()
            .map(|(i, f)| Line {
                line: i + 1,
                record: Record::Event(f.event),
            })
            .collect();
        let name = format!("feedback-{}", self.feedback_seq);
        self.feedback_seq += 1;
        self.engine
            .apply_file(&name, name.as_bytes(), &records, self.now)?;
        Ok(())
    }

    /// Run until `until` (exclusive) or until nothing is left to do.
    pub fn run_until(&mut self, until: DateTime<Utc>, upstream: &mut impl Answer) -> Result<(), StoreError> {
        while self.steps < MAX_STEPS {
            let next_fb = self.feedback.keys().next().map(|(t, _)| *t);
            let next = [self.engine.next_wake()?, next_fb].into_iter().flatten().min();
            let Some(next) = next else { break };
            if next >= until {
                break;
            }
            self.steps += 1;
            self.now = self.now.max(next);
            self.deliver_feedback()?;
            let reservations = self.engine.tick(self.now)?;
            let mut done = Vec::with_capacity(reservations.len());
            for r in reservations {
                let (outcome, fb) = upstream.answer(&r.request, self.now);
                done.push((r, outcome));
                for f in fb {
                    self.feedback.insert((f.at, self.feedback_seq), f);
                    self.feedback_seq += 1;
                }
            }
            if !done.is_empty() {
                self.engine.complete_many(done, self.now)?;
            }
            self.collect();
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
