//! Typed access to the trees inside one sled transaction. Closures that use it must be
//! pure: sled may run them more than once, and a plain `Tree` call inside one deadlocks.

use super::codec::{self, account_day_key, campaign_day_key};
use super::records::{Account, AccountDayRec, Action, Campaign, CampaignDayRec, State};
use super::{ACCOUNTS, ACTIONS, CAMPAIGNS, DAYS, INFLIGHT, META, META_COUNTS, READY, TIMED, WAITING};
use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::cell::RefCell;

/// Why a transaction stopped on purpose.
#[derive(Debug)]
pub enum Abort {
    /// A business rejection (a bad job file): nothing applied, not an error.
    Reject(Rejection),
    /// A value that cannot be decoded: fatal.
    Corrupt(String),
}

pub type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

/// Why a job file was rejected at apply time: the line and field, and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

pub fn reject<T>(line: usize, field: &str, reason: impl Into<String>) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(Abort::Reject(Rejection {
        line,
        field: field.to_string(),
        reason: reason.into(),
    })))
}

pub struct Tx<'a> {
    t: &'a [TransactionalTree],
    /// State-count changes, written once when the closure finishes (`flush_counts`).
    counts: RefCell<[i64; 7]>,
}

impl<'a> Tx<'a> {
    pub fn new(t: &'a [TransactionalTree]) -> Tx<'a> {
        Tx {
            t,
            counts: RefCell::new([0; 7]),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, tree: usize, key: &[u8], what: &str) -> TxResult<Option<T>> {
        match self.t[tree].get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(what, &v)
                .map(Some)
                .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string()))),
        }
    }

    pub fn put<T: Serialize>(&self, tree: usize, key: &[u8], value: &T) -> TxResult<()> {
        self.t[tree].insert(key, codec::encode(value))?;
        Ok(())
    }

    pub fn put_raw(&self, tree: usize, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.t[tree].insert(key, value)?;
        Ok(())
    }

    pub fn get_raw(&self, tree: usize, key: &[u8]) -> TxResult<Option<sled::IVec>> {
        Ok(self.t[tree].get(key)?)
    }

    pub fn del(&self, tree: usize, key: &[u8]) -> TxResult<()> {
        self.t[tree].remove(key)?;
        Ok(())
    }

    pub fn account(&self, id: &str) -> TxResult<Option<Account>> {
        match self.t[ACCOUNTS].get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => Account::decode(&v)
                .map(Some)
                .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string()))),
        }
    }

    pub fn put_account(&self, a: &Account) -> TxResult<()> {
        self.put_raw(ACCOUNTS, a.id.as_bytes(), &a.encode())
    }

    pub fn campaign(&self, id: &str) -> TxResult<Option<Campaign>> {
        self.get(CAMPAIGNS, id.as_bytes(), "campaign")
    }

    pub fn put_campaign(&self, c: &Campaign) -> TxResult<()> {
        self.put(CAMPAIGNS, c.id.as_bytes(), c)
    }

    pub fn action(&self, id: &str) -> TxResult<Option<Action>> {
        self.get(ACTIONS, id.as_bytes(), "action")
    }

    pub fn account_day(&self, account: &str, day: NaiveDate) -> TxResult<AccountDayRec> {
        Ok(self
            .get(DAYS, &account_day_key(account, day), "account day")?
            .unwrap_or_default())
    }

    pub fn put_account_day(&self, account: &str, day: NaiveDate, rec: &AccountDayRec) -> TxResult<()> {
        self.put(DAYS, &account_day_key(account, day), rec)
    }

    pub fn campaign_day(&self, campaign: &str, day: NaiveDate) -> TxResult<CampaignDayRec> {
        Ok(self
            .get(DAYS, &campaign_day_key(campaign, day), "campaign day")?
            .unwrap_or_default())
    }

    pub fn put_campaign_day(&self, campaign: &str, day: NaiveDate, rec: &CampaignDayRec) -> TxResult<()> {
        self.put(DAYS, &campaign_day_key(campaign, day), rec)
    }

    /// Remove an action from whichever index its current state keeps it in.
    pub fn unindex(&self, a: &Action) -> TxResult<()> {
        match a.state {
            State::Queued | State::Parked => {
                if let Some(until) = a.until_ms {
                    self.del(TIMED, &codec::timed_key(until, &a.id))?;
                } else if a.state == State::Parked {
                    for owner in [(&b"c"[..], &a.campaign), (&b"a"[..], &a.account)] {
                        self.del(WAITING, &codec::waiting_key(owner.0, owner.1, &a.id))?;
                    }
                } else {
                    self.del(
                        READY,
                        &codec::ready_key(&a.account, &a.campaign, a.priority, a.seq),
                    )?;
                }
            }
            State::Inflight => self.del(INFLIGHT, a.id.as_bytes())?,
            State::Sent | State::Failed | State::Unknown | State::Cancelled => {}
        }
        Ok(())
    }

    /// Add an action to the index its state calls for: `ready` (queued, due),
    /// `timed` (has an until), `waiting` (parked on an event, keyed by `waiting_on`).
    pub fn index(&self, a: &Action, waiting_on: Option<(&[u8], &str)>) -> TxResult<()> {
        match a.state {
            State::Queued | State::Parked => {
                if let Some(until) = a.until_ms {
                    self.put_raw(TIMED, &codec::timed_key(until, &a.id), &[])?;
                } else if let (State::Parked, Some((kind, owner))) = (a.state, waiting_on) {
                    self.put_raw(WAITING, &codec::waiting_key(kind, owner, &a.id), &[])?;
                } else {
                    let k = codec::ready_key(&a.account, &a.campaign, a.priority, a.seq);
                    self.put_raw(READY, &k, a.id.as_bytes())?;
                }
            }
            State::Inflight => self.put_raw(INFLIGHT, a.id.as_bytes(), &[])?,
            State::Sent | State::Failed | State::Unknown | State::Cancelled => {}
        }
        Ok(())
    }

    /// Move an action to a new state (and index), counting the change.
    pub fn transition(&self, old: &Action, new: &Action, waiting_on: Option<(&[u8], &str)>) -> TxResult<()> {
        self.unindex(old)?;
        self.index(new, waiting_on)?;
        self.put(ACTIONS, new.id.as_bytes(), new)?;
        let mut c = self.counts.borrow_mut();
        c[old.state.index()] -= 1;
        c[new.state.index()] += 1;
        Ok(())
    }

    /// Store a new action and index it.
    pub fn insert_action(&self, a: &Action) -> TxResult<()> {
        self.index(a, None)?;
        self.put(ACTIONS, a.id.as_bytes(), a)?;
        self.counts.borrow_mut()[a.state.index()] += 1;
        Ok(())
    }

    /// Delete an action (pruning), counting the change.
    pub fn remove_action(&self, a: &Action) -> TxResult<()> {
        self.unindex(a)?;
        self.del(ACTIONS, a.id.as_bytes())?;
        self.counts.borrow_mut()[a.state.index()] -= 1;
        Ok(())
    }

    /// Write the accumulated state-count changes. Call last in every closure that
    /// changes an action's state.
    pub fn flush_counts(&self) -> TxResult<()> {
        let delta = *self.counts.borrow();
        if delta.iter().all(|&d| d == 0) {
            return Ok(());
        }
        let mut counts: [u64; 7] = self.get(META, META_COUNTS, "state counts")?.unwrap_or([0; 7]);
        for (c, d) in counts.iter_mut().zip(delta) {
            *c = c.saturating_add_signed(d);
        }
        self.put(META, META_COUNTS, &counts)
    }
}
