//! The upstream's event feed in the store (SPEC §9 "events"): a page of events is
//! applied in one transaction together with its cursor, each event once by its id,
//! with exactly the job-file event rules (`apply::apply_event`). A page that names an
//! unknown account or action is refused whole: nothing of it is applied and the cursor
//! stays where it was.
//!
//! Applied ids are kept (by hash, like tombstones) for `store.retention_days` and
//! then pruned, so a page served again, or a cursor that goes back, never applies an
//! event twice within that reach.

use super::apply::{apply_event, Ctx, EventEffect};
use super::codec::{self, ms};
use super::reserve::Change;
use super::tx::Rejection;
use super::{Store, StoreError, LINKS, META};
use crate::contract::events::Page;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;

/// The cursor of the last page applied.
const META_EVENTS_CURSOR: &[u8] = b"events_cursor";

/// What applying a page did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageApplied {
    /// Events applied for the first time that changed something.
    pub applied: u32,
    /// Events whose id was applied before (or repeated within the page): skipped.
    pub duplicates: u32,
    /// New events with nothing to act on (an acceptance of an invite never sent, a
    /// reply to no sent InMail or one already refunded, a restriction already known).
    pub ignored: u32,
    pub changes: Vec<Change>,
    /// What each new event did, or why it was ignored, as a job file's events are
    /// logged (SPEC §9: the same rules); `line` is its place in the page, from 0.
    pub effects: Vec<EventEffect>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PageOutcome {
    Applied(PageApplied),
    /// Nothing applied; `field` names the event (`events.3.account`).
    Rejected(Rejection),
}

impl Store {
    /// The cursor to poll after, if a page was ever applied.
    pub fn events_cursor(&self) -> Result<Option<String>, StoreError> {
        self.op("read events cursor")?;
        Ok(self
            .seen_get(META, META_EVENTS_CURSOR)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Apply a page whole, with its cursor, in one transaction; or refuse it whole.
    pub fn apply_page(&self, page: &Page, now: DateTime<Utc>) -> Result<PageOutcome, StoreError> {
        if page.events.is_empty() && self.events_cursor()?.as_deref() == Some(page.cursor.as_str()) {
            return Ok(PageOutcome::Applied(PageApplied::default()));
        }
        let st = &self.settings;
        let applied_ms = ms(now);
        let result = self.transact(|tx| {
            let mut c = Ctx::new(tx, st, now, &[]);
            let mut out = PageApplied::default();
            let mut in_page = BTreeSet::new();
            for (i, e) in page.events.iter().enumerate() {
                let key = codec::feed_event_key(&e.id);
                if !in_page.insert(key.clone()) || tx.get_raw(LINKS, &key)?.is_some() {
                    out.duplicates += 1;
                    continue;
                }
                if apply_event(&mut c, i, &e.event)? {
                    out.applied += 1;
                } else {
                    out.ignored += 1;
                }
                tx.put(LINKS, &key, &applied_ms)?;
                tx.put_raw(LINKS, &codec::feed_event_expiry_key(applied_ms, &e.id), &key)?;
            }
            tx.put_raw(META, META_EVENTS_CURSOR, page.cursor.as_bytes())?;
            tx.flush_counts()?;
            let carry = c.into_carry();
            let (applied, resumed) = (carry.out, carry.resumed);
            // Feed kinds never resume anything (SPEC §9: acceptances, replies,
            // restrictions), so nothing waits for a release after the commit.
            debug_assert!(resumed.is_empty(), "a feed event resumed {resumed:?}");
            out.changes = applied.changes;
            out.effects = applied.effects;
            Ok(out)
        })?;
        match result {
            Ok(out) => {
                // A restriction stops an account: durable like the outcomes that do.
                self.make_durable()?;
                debug_assert_eq!(
                    (out.applied + out.duplicates + out.ignored) as usize,
                    page.events.len()
                );
                Ok(PageOutcome::Applied(out))
            }
            Err(r) => Ok(PageOutcome::Rejected(Rejection {
                field: format!("events.{}.{}", r.line, r.field),
                ..r
            })),
        }
    }

    /// Forget applied feed event ids older than `store.retention_days`; at most `max`
    /// per call. Returns how many were forgotten.
    pub(super) fn prune_feed_events(&self, now: DateTime<Utc>, max: usize) -> Result<usize, StoreError> {
        let days = i64::from(self.settings.retention_days.max(super::query::MIN_RETENTION_DAYS));
        let bound = codec::feed_event_expiry_bound(ms(now - Duration::days(days)));
        self.op("scan feed events")?;
        let expired: Vec<(sled::IVec, sled::IVec)> = self.trees()?[LINKS]
            .range(codec::FEED_EVENT_EXPIRY_PREFIX.to_vec()..bound)
            .take(max)
            .collect::<Result<_, _>>()?;
        if expired.is_empty() {
            return Ok(0);
        }
        let result = self.transact(|tx| {
            for (k, id_key) in &expired {
                tx.del(LINKS, k)?;
                tx.del(LINKS, id_key)?;
            }
            Ok(())
        })?;
        result.map_err(|r| StoreError::Corrupt(r.reason))?;
        self.make_durable()?;
        Ok(expired.len())
    }
}
