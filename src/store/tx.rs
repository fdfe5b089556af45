//! Typed access to the trees inside one sled transaction. Closures that use it must be
//! pure: sled may run them more than once, and a plain `Tree` call inside one deadlocks.

use super::codec::{self, account_day_key, campaign_day_key, Value};
use super::edge::{Indexing, StoredAction};
use super::records::{Account, AccountDayRec, Action, Campaign, CampaignDayRec, State, StateCounts};
use super::{
    ACCOUNTS, ACTIONS, BODIES, CAMPAIGNS, DAYS, INFLIGHT, LINKS, META, META_COUNTS, READY, STAGED, TIMED,
    WAITING,
};
use chrono::NaiveDate;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// Writes a staging pass keeps in memory instead of the store: `None` deletes.
pub type Overlay = BTreeMap<(usize, Vec<u8>), Option<sled::IVec>>;

/// Accounts by id, each with the stored bytes it was decoded from or encoded to
/// (`Mode::Behind`): reading the same bytes again gives a copy instead of a decode, so
/// the cache is right whatever happened to the key since (other bytes miss it).
pub type Decoded = HashMap<String, (sled::IVec, Account)>;

/// Where a transaction's reads and writes go (see `ingest.rs`).
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    /// The live trees.
    Live,
    /// A staging pass of job file `token`: new actions and their sticky links go to
    /// `staged`; every other write stays in memory (the overlay of earlier chunks plus
    /// this attempt's delta), so nothing a reader sees changes.
    Dry { token: u64, overlay: &'a Overlay },
    /// The commit of job file `token`: writes go to the live trees, except to actions
    /// and links staged by the file, which stay staged until published.
    Commit { token: u64 },
    /// The send path (`store::behind`): every write stays in this attempt's delta,
    /// which becomes the transaction's `wal` record; reads see the delta, then the
    /// changes still behind their trees, then the trees.
    Behind {
        overlay: &'a Overlay,
        accounts: &'a Decoded,
    },
}

/// The `staged` key of `key` of `tree` for job file `token`.
pub fn stage_key(token: u64, tree: usize, key: &[u8]) -> Vec<u8> {
    debug_assert!(
        tree == ACTIONS || tree == LINKS,
        "only actions and links are staged"
    );
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(&token.to_be_bytes());
    k.push(tree as u8);
    k.extend_from_slice(key);
    k
}

pub struct Tx<'a> {
    t: &'a [TransactionalTree],
    /// `Mode::Behind`: the trees read directly, outside any sled transaction (`t` is
    /// empty then: every write stays in the delta).
    plain: Option<&'a [sled::Tree]>,
    /// State-count changes, written once when the closure finishes (`flush_counts`).
    counts: RefCell<[i64; 7]>,
    mode: Mode<'a>,
    /// `Mode::Dry`: this attempt's writes, merged into the overlay once it commits.
    delta: RefCell<Overlay>,
    /// Actions read in layout 1 (a format 1 or 2 store: body and state in one record):
    /// their next write also writes their body (`put_action`).
    whole: RefCell<BTreeSet<String>>,
    /// `Mode::Behind`: accounts this attempt decoded or wrote (`Decoded`).
    accounts: RefCell<Decoded>,
}

/// A stored value decoded through its wire type; an undecodable one aborts the
/// transaction with an error naming `what` and the key.
fn decode<T: Value>(what: &str, key: &[u8], raw: &[u8]) -> TxResult<T> {
    codec::decode_at(what, key, raw)
        .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string())))
}

fn corrupt(what: &str, key: &[u8], e: impl std::fmt::Display) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(Abort::Corrupt(format!(
        "cannot decode {what} at key \"{}\": {e}",
        key.escape_ascii()
    )))
}

impl<'a> Tx<'a> {
    pub fn with_mode(t: &'a [TransactionalTree], mode: Mode<'a>) -> Tx<'a> {
        Tx {
            t,
            plain: None,
            counts: RefCell::new([0; 7]),
            mode,
            delta: RefCell::new(Overlay::new()),
            whole: RefCell::new(BTreeSet::new()),
            accounts: RefCell::new(Decoded::new()),
        }
    }

    /// The send path's access (`Mode::Behind` over `overlay`), reading `trees` directly:
    /// the caller holds what makes it the only writer (`Store::transact_behind`), and
    /// the attempt's writes become one record, written on its own.
    pub fn behind(trees: &'a [sled::Tree], overlay: &'a Overlay, accounts: &'a Decoded) -> Tx<'a> {
        Tx {
            t: &[],
            plain: Some(trees),
            counts: RefCell::new([0; 7]),
            mode: Mode::Behind { overlay, accounts },
            delta: RefCell::new(Overlay::new()),
            whole: RefCell::new(BTreeSet::new()),
            accounts: RefCell::new(Decoded::new()),
        }
    }

    /// `Mode::Dry` and `Mode::Behind`: the writes this attempt kept in memory.
    pub fn take_delta(&self) -> Overlay {
        std::mem::take(&mut *self.delta.borrow_mut())
    }

    /// `Mode::Behind`: the accounts this attempt decoded or wrote, with their bytes.
    pub fn take_accounts(&self) -> Decoded {
        std::mem::take(&mut *self.accounts.borrow_mut())
    }

    /// The staged value of `key`, if the file being ingested staged it.
    fn staged(&self, tree: usize, key: &[u8]) -> TxResult<Option<sled::IVec>> {
        match self.mode {
            Mode::Dry { token, .. } | Mode::Commit { token } if tree == ACTIONS || tree == LINKS => {
                Ok(self.t[STAGED].get(stage_key(token, tree, key))?)
            }
            _ => Ok(None),
        }
    }

    /// Whether action `id` is one the file being ingested staged (it is not live yet:
    /// it has no index entries and is not counted).
    pub fn is_staged(&self, id: &str) -> TxResult<bool> {
        Ok(self.staged(ACTIONS, id.as_bytes())?.is_some())
    }

    fn write(&self, tree: usize, key: &[u8], value: Option<&[u8]>) -> TxResult<()> {
        match self.mode {
            Mode::Live => {}
            Mode::Behind { .. } => {
                self.delta
                    .borrow_mut()
                    .insert((tree, key.to_vec()), value.map(sled::IVec::from));
                return Ok(());
            }
            Mode::Dry { token, .. } => {
                // A new action or link goes to `staged`; everything else only changes
                // what this pass reads.
                let new = (tree == ACTIONS || tree == LINKS)
                    && value.is_some()
                    && self.get_raw(tree, key)?.is_none();
                if new {
                    self.t[STAGED].insert(stage_key(token, tree, key), value.unwrap_or_default())?;
                } else {
                    self.delta
                        .borrow_mut()
                        .insert((tree, key.to_vec()), value.map(sled::IVec::from));
                }
                return Ok(());
            }
            Mode::Commit { token } => {
                if self.staged(tree, key)?.is_some() {
                    let k = stage_key(token, tree, key);
                    match value {
                        Some(v) => self.t[STAGED].insert(k, v)?,
                        None => self.t[STAGED].remove(k)?,
                    };
                    return Ok(());
                }
            }
        }
        match value {
            Some(v) => self.t[tree].insert(key, v)?,
            None => self.t[tree].remove(key)?,
        };
        Ok(())
    }

    /// A stored value, decoded through its wire type; an undecodable one aborts the
    /// transaction with an error naming `what` and the key.
    pub fn get<T: Value>(&self, tree: usize, key: &[u8], what: &str) -> TxResult<Option<T>> {
        match self.get_raw(tree, key)? {
            None => Ok(None),
            Some(v) => decode(what, key, &v).map(Some),
        }
    }

    pub fn put<T: Value>(&self, tree: usize, key: &[u8], value: &T) -> TxResult<()> {
        self.write(tree, key, Some(&codec::encode(value)))
    }

    pub fn put_raw(&self, tree: usize, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.write(tree, key, Some(value))
    }

    pub fn get_raw(&self, tree: usize, key: &[u8]) -> TxResult<Option<sled::IVec>> {
        if let Mode::Dry { overlay, .. } | Mode::Behind { overlay, .. } = self.mode {
            if overlay.is_empty() && self.delta.borrow().is_empty() {
                return self.staged_or_live(tree, key);
            }
            let k = (tree, key.to_vec());
            if let Some(v) = self.delta.borrow().get(&k) {
                return Ok(v.clone());
            }
            if let Some(v) = overlay.get(&k) {
                return Ok(v.clone());
            }
        }
        self.staged_or_live(tree, key)
    }

    /// Whether `tree` holds a key starting with `prefix`, as this attempt sees it;
    /// `None` where that cannot be told cheaply: inside a sled transaction (it has no
    /// scan), or when a change under `prefix` is in memory.
    pub fn any_with_prefix(&self, tree: usize, prefix: &[u8]) -> TxResult<Option<bool>> {
        let (Mode::Behind { overlay, .. }, Some(trees)) = (self.mode, self.plain) else {
            return Ok(None);
        };
        let under = |o: &Overlay| {
            o.range((tree, prefix.to_vec())..)
                .next()
                .is_some_and(|((t, k), _)| *t == tree && k.starts_with(prefix))
        };
        if under(overlay) || under(&self.delta.borrow()) {
            return Ok(None);
        }
        Ok(Some(
            trees[tree].scan_prefix(prefix).next().transpose()?.is_some(),
        ))
    }

    fn staged_or_live(&self, tree: usize, key: &[u8]) -> TxResult<Option<sled::IVec>> {
        if let Some(v) = self.staged(tree, key)? {
            return Ok(Some(v));
        }
        if let Some(trees) = self.plain {
            return Ok(trees[tree].get(key)?);
        }
        Ok(self.t[tree].get(key)?)
    }

    pub fn del(&self, tree: usize, key: &[u8]) -> TxResult<()> {
        self.write(tree, key, None)
    }

    pub fn account(&self, id: &str) -> TxResult<Option<Account>> {
        let Mode::Behind { accounts, .. } = self.mode else {
            return self.get(ACCOUNTS, id.as_bytes(), "account");
        };
        let Some(raw) = self.get_raw(ACCOUNTS, id.as_bytes())? else {
            return Ok(None);
        };
        let known = |d: &Decoded| d.get(id).filter(|(b, _)| *b == raw).map(|(_, a)| a.clone());
        if let Some(a) = known(&self.accounts.borrow()).or_else(|| known(accounts)) {
            debug_assert_eq!(
                Some(&a),
                codec::decode_at::<Account>("account", id.as_bytes(), &raw)
                    .ok()
                    .as_ref()
            );
            return Ok(Some(a));
        }
        let a: Account = decode("account", id.as_bytes(), &raw)?;
        self.accounts
            .borrow_mut()
            .insert(id.to_string(), (raw, a.clone()));
        Ok(Some(a))
    }

    pub fn put_account(&self, a: &Account) -> TxResult<()> {
        let bytes = sled::IVec::from(a.encode());
        if let Mode::Behind { .. } = self.mode {
            self.accounts
                .borrow_mut()
                .insert(a.id.clone(), (bytes.clone(), a.clone()));
        }
        self.put_raw(ACCOUNTS, a.id.as_bytes(), &bytes)
    }

    pub fn campaign(&self, id: &str) -> TxResult<Option<Campaign>> {
        self.get(CAMPAIGNS, id.as_bytes(), "campaign")
    }

    pub fn put_campaign(&self, c: &Campaign) -> TxResult<()> {
        self.put(CAMPAIGNS, c.id.as_bytes(), c)
    }

    /// An action: its state record joined with its body (one record in layout 1).
    pub fn action(&self, id: &str) -> TxResult<Option<Action>> {
        let key = id.as_bytes();
        let Some(v) = self.get_raw(ACTIONS, key)? else {
            return Ok(None);
        };
        match Action::read_stored(&v).map_err(|e| corrupt("action", key, e))? {
            StoredAction::Whole(a) => {
                self.whole.borrow_mut().insert(a.id.clone());
                Ok(Some(a))
            }
            StoredAction::State(s) => {
                let body = self
                    .get_raw(BODIES, key)?
                    .ok_or_else(|| corrupt("action", key, "its body is missing"))?;
                Action::join(id, s, &body)
                    .map(Some)
                    .map_err(|e| corrupt("action", key, e))
            }
        }
    }

    /// Write an action that exists: its state record only, since its body never changes
    /// after ingest; an action read in layout 1 gets its body written too (the migration
    /// of a format 1 or 2 store, record by record, in the transaction that changes it).
    /// An action is only written after `action` read it in the same transaction.
    pub fn put_action(&self, a: &Action) -> TxResult<()> {
        let key = a.id.as_bytes();
        if self.whole.borrow_mut().remove(&a.id) {
            self.put_raw(BODIES, key, &a.encode_body())?;
        } else {
            debug_assert!(
                self.get_raw(ACTIONS, key)?.is_some_and(|v| v.first() == Some(&1)),
                "action {} written without being read, or not in layout 2",
                a.id
            );
        }
        self.put_raw(ACTIONS, key, &a.encode_state())
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
        self.index_as(a.state, a.until_ms, &a.id, waiting_on, || {
            codec::ready_key(&a.account, &a.campaign, a.priority, a.seq)
        })
    }

    /// `index` of action `id` in `state` with `until_ms`; `ready` makes its `ready` key.
    fn index_as<R: AsRef<[u8]>>(
        &self,
        state: State,
        until_ms: Option<i64>,
        id: &str,
        waiting_on: Option<(&[u8], &str)>,
        ready: impl FnOnce() -> R,
    ) -> TxResult<()> {
        match state {
            State::Queued | State::Parked => {
                if let Some(until) = until_ms {
                    self.put_raw(TIMED, &codec::timed_key(until, id), &[])?;
                } else if let (State::Parked, Some((kind, owner))) = (state, waiting_on) {
                    self.put_raw(WAITING, &codec::waiting_key(kind, owner, id), &[])?;
                } else {
                    self.put_raw(READY, ready().as_ref(), id.as_bytes())?;
                }
            }
            State::Inflight => self.put_raw(INFLIGHT, id.as_bytes(), &[])?,
            State::Sent | State::Failed | State::Unknown | State::Cancelled => {}
        }
        Ok(())
    }

    /// Move an action to a new state (and index), counting the change.
    pub fn transition(&self, old: &Action, new: &Action, waiting_on: Option<(&[u8], &str)>) -> TxResult<()> {
        if !matches!(self.mode, Mode::Live) && self.is_staged(&old.id)? {
            // Not live yet: it gets its index entry and count when it is published.
            debug_assert!(
                waiting_on.is_none(),
                "a staged action is never parked on an event"
            );
            return self.put_action(new);
        }
        self.unindex(old)?;
        self.index(new, waiting_on)?;
        self.put_action(new)?;
        let mut c = self.counts.borrow_mut();
        c[old.state.index()] -= 1;
        c[new.state.index()] += 1;
        Ok(())
    }

    /// Store a new action and index it.
    pub fn insert_action(&self, a: &Action) -> TxResult<()> {
        if let Mode::Dry { token, .. } = self.mode {
            // Staged: indexed and counted when the committed file is published. The
            // caller checked that the id is new (`apply::apply_action`).
            // Its body goes to `bodies` now, once: publishing moves only the small
            // state record. A body without a state record is in no listing; dropping
            // the staged file removes it (`ingest::drop_token`).
            debug_assert!(self.get_raw(ACTIONS, a.id.as_bytes())?.is_none());
            self.t[BODIES].insert(a.id.as_bytes(), a.encode_body())?;
            self.t[STAGED].insert(stage_key(token, ACTIONS, a.id.as_bytes()), a.encode_state())?;
            return Ok(());
        }
        self.index(a, None)?;
        self.put_raw(BODIES, a.id.as_bytes(), &a.encode_body())?;
        self.put_raw(ACTIONS, a.id.as_bytes(), &a.encode_state())?;
        self.counts.borrow_mut()[a.state.index()] += 1;
        Ok(())
    }

    /// `insert_action` of action `id` whose body is stored and whose state record is
    /// `state`, indexed as `ix` says (publishing a staged one: its body is not read
    /// into an `Action`).
    pub fn insert_state(&self, id: &str, ix: &Indexing, state: &[u8]) -> TxResult<()> {
        debug_assert!(matches!(self.mode, Mode::Live));
        debug_assert_eq!(state.first(), Some(&1), "a layout-2 state record");
        self.index_as(ix.state, ix.until_ms, id, None, || ix.ready.as_slice())?;
        self.put_raw(ACTIONS, id.as_bytes(), state)?;
        self.counts.borrow_mut()[ix.state.index()] += 1;
        Ok(())
    }

    /// Delete an action and its body (pruning), counting the change.
    pub fn remove_action(&self, a: &Action) -> TxResult<()> {
        self.unindex(a)?;
        self.del(ACTIONS, a.id.as_bytes())?;
        self.del(BODIES, a.id.as_bytes())?;
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
        let mut counts: StateCounts = self.get(META, META_COUNTS, "state counts")?.unwrap_or_default();
        for (c, d) in counts.0.iter_mut().zip(delta) {
            *c = c.saturating_add_signed(d);
        }
        self.put(META, META_COUNTS, &counts)
    }
}
