//! The upstream's event feed, seen from the engine (SPEC §9 "events"): when to poll
//! next, and what a fetched page does. The fetch itself is the caller's (the daemon
//! over HTTP or from the `sim`, `VirtualRun` from its simulator); the engine parses
//! the body (`contract::events`), applies the page through the store in one
//! transaction with its cursor, logs `events_polled`, and plans the next poll.
//!
//! A failed poll (a bad page, a 429, a 5xx, a timeout) applies nothing, is logged with
//! its reason and is retried after a backoff that doubles from `upstream.events_every_s`
//! up to `MAX_FEED_BACKOFF_S`. None of it is an account signal or a breaker signal:
//! sending goes on exactly as before.

use super::{change_event, Engine, Event};
pub use crate::contract::events::FetchError;
use crate::contract::events::{parse_page, MAX_PAGE_EVENTS};
use crate::policy::pacing::{backoff_s, SplitMix64};
use crate::store::{PageOutcome, StoreError};
use chrono::{DateTime, Duration, Utc};

/// The longest wait between two polls of a failing feed.
pub const MAX_FEED_BACKOFF_S: u64 = 3_600;
/// The longest `Retry-After` a 429 on the feed is followed for.
const MAX_FEED_RETRY_AFTER_S: u64 = 86_400;

/// The feed's schedule: when the next poll is due and how many failed in a row.
#[derive(Clone, Debug)]
pub(super) struct Feed {
    every_s: u64,
    next_at: DateTime<Utc>,
    /// A fetch was handed out and its result is not back yet.
    polling: bool,
    failures: u32,
    rng: SplitMix64,
}

/// The counts one poll logs (`events_polled`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollCounts {
    pub events: u32,
    pub applied: u32,
    pub duplicates: u32,
    pub ignored: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Engine {
    /// Poll the feed every `every_s` from `now` on (the first poll is due at once).
    /// Called again (a reload), it keeps the schedule and takes the new interval.
    pub fn enable_feed(&mut self, every_s: u64, now: DateTime<Utc>) {
        debug_assert!(every_s >= 1, "config validation keeps events_every_s >= 1");
        match &mut self.feed {
            Some(f) => f.every_s = every_s.max(1),
            None => {
                self.feed = Some(Feed {
                    every_s: every_s.max(1),
                    next_at: now,
                    polling: false,
                    failures: 0,
                    rng: SplitMix64(self.cfg.seed ^ 0xfeed),
                })
            }
        }
    }

    pub fn disable_feed(&mut self) {
        self.feed = None;
    }

    /// When the next poll is due, unless one is under way or there is no feed.
    pub(super) fn feed_wake(&self) -> Option<DateTime<Utc>> {
        self.feed.as_ref().filter(|f| !f.polling).map(|f| f.next_at)
    }

    /// If a poll is due at `now`: mark it under way and return the cursor to ask after
    /// (`None` before the first page ever applied).
    pub fn feed_poll_due(&mut self, now: DateTime<Utc>) -> Result<Option<Option<String>>, StoreError> {
        let due = self.feed.as_ref().is_some_and(|f| !f.polling && f.next_at <= now);
        if !due {
            return Ok(None);
        }
        let cursor = self.store.events_cursor()?;
        if let Some(f) = &mut self.feed {
            f.polling = true;
        }
        Ok(Some(cursor))
    }

    /// What a poll brought back: a page body, or why none came. A store error is the
    /// only error (fatal, SPEC P5); everything else is logged and retried.
    pub fn feed_result(
        &mut self,
        fetched: Result<Vec<u8>, FetchError>,
        now: DateTime<Utc>,
    ) -> Result<PollCounts, StoreError> {
        self.settle_answers()?;
        let (failure, retry_after_s) = match fetched {
            Ok(body) => match parse_page(&body) {
                Ok(page) => match self.store.apply_page(&page, now)? {
                    PageOutcome::Applied(a) => {
                        let counts = PollCounts {
                            events: count(page.events.len()),
                            applied: a.applied,
                            duplicates: a.duplicates,
                            ignored: a.ignored,
                        };
                        self.events.extend(a.changes.into_iter().map(change_event));
                        // Each event's effect, or why it was ignored, as a job file's
                        // (`line`: its place in the page, from 1).
                        self.events.extend(a.effects.into_iter().map(|e| {
                            let e = crate::store::EventEffect {
                                line: e.line + 1,
                                ..e
                            };
                            super::operator::effect_event(FEED_SOURCE, &e)
                        }));
                        if counts.events > 0 {
                            self.events.push(Event::EventsPolled {
                                events: counts.events,
                                applied: counts.applied,
                                duplicates: counts.duplicates,
                                ignored: counts.ignored,
                                error: None,
                                retry_at: None,
                            });
                        }
                        if counts.applied > 0 {
                            // A restriction or a refund may change who can send.
                            self.sync_accounts(now)?;
                        }
                        // A full page means more may wait: ask again at once.
                        let full = page.events.len() >= MAX_PAGE_EVENTS;
                        self.feed_done(now, if full { 0 } else { self.feed_every_s() });
                        return Ok(counts);
                    }
                    PageOutcome::Rejected(r) => {
                        (format!("bad page: field `{}`: {}", r.field, r.reason), None)
                    }
                },
                Err(e) => (format!("bad page: {e}"), None),
            },
            Err(FetchError::RateLimited { retry_after_s }) => {
                ("rate limited (429)".to_string(), retry_after_s)
            }
            Err(FetchError::Failed(reason)) => (reason, None),
        };
        let retry_at = self.feed_failed(now, retry_after_s);
        self.events.push(Event::EventsPolled {
            events: 0,
            applied: 0,
            duplicates: 0,
            ignored: 0,
            error: Some(failure),
            retry_at: Some(retry_at),
        });
        Ok(PollCounts::default())
    }

    fn feed_every_s(&self) -> u64 {
        self.feed.as_ref().map_or(60, |f| f.every_s)
    }

    fn feed_done(&mut self, now: DateTime<Utc>, wait_s: u64) {
        if let Some(f) = &mut self.feed {
            f.polling = false;
            f.failures = 0;
            f.next_at = now + Duration::seconds(wait_s as i64);
        }
    }

    /// Plan the retry after a failed poll; returns when it is due.
    fn feed_failed(&mut self, now: DateTime<Utc>, retry_after_s: Option<u64>) -> DateTime<Utc> {
        let Some(f) = &mut self.feed else {
            return now;
        };
        f.polling = false;
        f.failures = f.failures.saturating_add(1);
        let max = MAX_FEED_BACKOFF_S.max(f.every_s);
        // Doubling from the interval (attempt 2 is twice it), jittered, never sooner
        // than the interval itself.
        let wait = backoff_s(f.failures + 1, f.every_s, max, &mut f.rng).max(f.every_s);
        let wait = wait.max(retry_after_s.unwrap_or(0).min(MAX_FEED_RETRY_AFTER_S));
        f.next_at = now + Duration::seconds(wait as i64);
        f.next_at
    }
}

/// The source a feed event's log line names (a job file's names the file).
pub const FEED_SOURCE: &str = "events feed";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::store::{OpenOptions, Settings, Store};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    /// A failing feed backs off (doubling, never below the interval, a Retry-After
    /// lengthens it) and a good page brings the interval back; sending is not touched.
    #[test]
    fn failures_back_off_and_a_good_page_resets_the_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("s"), Settings::default(), OpenOptions::default()).expect("open");
        let now = t("2026-11-25T12:00:00Z");
        let mut e = Engine::new(store, EngineConfig::default(), now).expect("engine");
        e.enable_feed(60, now);
        assert_eq!(
            e.feed_poll_due(now).expect("due"),
            Some(None),
            "first poll at once, no cursor"
        );
        assert_eq!(e.feed_wake(), None, "nothing planned while a poll is under way");
        let mut waits = Vec::new();
        let mut at = now;
        for _ in 0..8 {
            e.feed_result(Ok(b"{not json".to_vec()), at)
                .expect("no store error");
            let next = e.feed_wake().expect("planned");
            waits.push((next - at).num_seconds());
            at = next;
            assert!(e.feed_poll_due(at).expect("due").is_some());
        }
        assert!(waits.iter().all(|w| (60..=3600).contains(w)), "{waits:?}");
        assert!(waits[7] >= 1800, "it backs off: {waits:?}");
        e.feed_result(
            Err(FetchError::RateLimited {
                retry_after_s: Some(7200),
            }),
            at,
        )
        .expect("ok");
        let next = e.feed_wake().expect("planned");
        assert!(
            (next - at).num_seconds() >= 7200,
            "Retry-After lengthens the wait"
        );
        at = next;
        assert!(e.feed_poll_due(at).expect("due").is_some());
        let counts = e
            .feed_result(Ok(br#"{"events":[],"cursor":"c1"}"#.to_vec()), at)
            .expect("ok");
        assert_eq!(counts, PollCounts::default());
        assert_eq!(e.feed_wake(), Some(at + Duration::seconds(60)));
        assert_eq!(e.store().events_cursor().expect("read"), Some("c1".into()));
        let logged: Vec<_> = e
            .drain_events()
            .expect("settled")
            .into_iter()
            .filter(|ev| ev.name() == "events_polled")
            .collect();
        assert_eq!(logged.len(), 9, "every failed poll is logged with its reason");
        assert!(logged
            .iter()
            .all(|ev| matches!(ev, Event::EventsPolled { error: Some(_), .. })));
    }

    /// Each event of a feed page logs what it did, or why it was ignored, as the same
    /// event in a job file does (SPEC §9: the same rules; §6: every event has a visible
    /// effect). Before, a page logged only its counts (`events_polled applied=1
    /// ignored=1`), and an operator could not see which event was ignored, or why.
    #[test]
    fn each_feed_event_logs_its_effect_or_why_it_was_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("s"), Settings::default(), OpenOptions::default()).expect("open");
        let now = t("2026-11-25T12:00:00Z");
        let mut e = Engine::new(store, EngineConfig::default(), now).expect("engine");
        let setup = concat!(
            r#"{"type":"account","id":"a1","tier":"free","timezone":"UTC","window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}}"#,
            "\n"
        );
        e.apply_file("setup.jsonl", setup.as_bytes(), now)
            .expect("applied");
        e.drain_events().expect("settled");
        e.enable_feed(60, now);
        let page = concat!(
            r#"{"events":[{"id":"e1","kind":"invite_accepted","account":"a1","prospect":"https://www.linkedin.com/in/nobody"},"#,
            r#"{"id":"e2","kind":"account_restricted","account":"a1"}],"cursor":"c1"}"#
        );
        let counts = e.feed_result(Ok(page.as_bytes().to_vec()), now).expect("ok");
        assert_eq!((counts.applied, counts.ignored), (1, 1), "{counts:?}");
        let logged = e.drain_events().expect("settled");
        let ignored: Vec<_> = logged
            .iter()
            .filter_map(|ev| match ev {
                Event::EventIgnored {
                    source,
                    line,
                    kind,
                    reason,
                    ..
                } => Some((source.as_str(), *line, kind.as_str(), reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(ignored.len(), 1, "{logged:?}");
        assert_eq!(ignored[0].0, FEED_SOURCE);
        assert_eq!((ignored[0].1, ignored[0].2), (Some(1), "invite_accepted"));
        assert!(!ignored[0].3.is_empty(), "says why: {logged:?}");
        assert!(
            logged.iter().any(|ev| matches!(
                ev,
                Event::RecordApplied { kind: "account_restricted", file, line: 2, .. } if file == FEED_SOURCE
            )),
            "the restriction's own line: {logged:?}"
        );
    }
}
