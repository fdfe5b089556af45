//! Operator control in the store (SPEC §8, P9): holds kept in `meta` (pause and resume
//! of an account, a campaign or everything), the action listing, bulk cancel and
//! requeue with the rules of the `cancel_action` / `requeue_action` events, an action's
//! history from the ledger, and the detail of `status` that needs the actions
//! (waiting actions by reason, next send, actions per campaign and state).
//!
//! Everything here reads or writes through the store's own trees and transactions, so
//! the running worker (through its admin socket) and a CLI that opened the store itself
//! get the same answers.

use super::codec::{self, from_ms};
use super::query::{CampaignToday, StatusReport, Use, Waiting};
use super::records::{Action, LedgerEntry, LedgerOutcomes, LedgerRelease, LedgerReservations, State};
use super::tx::Tx;
use super::{Store, StoreError, ACTIONS, CAMPAIGNS, LEDGER, META};
use crate::policy::caps::CampaignDay;
use crate::policy::Kind;
pub use crate::rules::moves::Move;
use crate::rules::status::{self, Standing};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound;

/// Keys of operator holds in `meta`: `pause/all`, `pause/a/<account>`, `pause/c/<campaign>`.
const PAUSE_PREFIX: &[u8] = b"pause/";
/// Actions changed per transaction by a bulk cancel or requeue.
pub const MOVE_BATCH: usize = 512;
/// Not-movable ids named in a bulk move's answer (the count is always whole).
pub const MAX_NOT_MOVABLE_SHOWN: usize = 20;

/// What an operator hold covers (SPEC §8 `pause` / `resume`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    All,
    Account(String),
    Campaign(String),
}

impl Scope {
    fn key(&self) -> Vec<u8> {
        let mut k = PAUSE_PREFIX.to_vec();
        match self {
            Scope::All => k.extend_from_slice(b"all"),
            Scope::Account(id) => {
                k.extend_from_slice(b"a/");
                k.extend_from_slice(id.as_bytes());
            }
            Scope::Campaign(id) => {
                k.extend_from_slice(b"c/");
                k.extend_from_slice(id.as_bytes());
            }
        }
        k
    }

    /// `all`, `account acct-1`, `campaign q4`: the `scope` field of `paused`/`resumed`.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all".into(),
            Scope::Account(id) => format!("account {id}"),
            Scope::Campaign(id) => format!("campaign {id}"),
        }
    }
}

/// Every operator hold in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pauses {
    pub all: bool,
    pub accounts: BTreeSet<String>,
    pub campaigns: BTreeSet<String>,
}

/// The filter of `list`, `cancel` and `requeue` (every given field must match).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub state: Option<State>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub campaign: Option<String>,
    #[serde(default)]
    pub kind: Option<Kind>,
}

impl Filter {
    pub fn matches(&self, a: &Action) -> bool {
        self.state.is_none_or(|s| a.state == s)
            && self.account.as_ref().is_none_or(|x| &a.account == x)
            && self.campaign.as_ref().is_none_or(|x| &a.campaign == x)
            && self.kind.is_none_or(|k| a.kind == k)
    }

    /// SPEC §8: a bulk move's filter names at least a state, an account or a campaign.
    pub fn is_narrow(&self) -> bool {
        self.state.is_some() || self.account.is_some() || self.campaign.is_some()
    }
}

/// One line of `list` (SPEC §8): id, account, campaign, kind, state, reason, until,
/// attempts; `priority` and `updated` are additions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRow {
    pub id: String,
    pub account: String,
    pub campaign: String,
    pub kind: Kind,
    pub state: State,
    pub reason: Option<String>,
    pub until: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub priority: i32,
    pub updated: DateTime<Utc>,
}

impl ActionRow {
    pub fn of(a: &Action) -> ActionRow {
        ActionRow {
            id: a.id.clone(),
            account: a.account.clone(),
            campaign: a.campaign.clone(),
            kind: a.kind,
            state: a.state,
            reason: a.reason.clone(),
            until: a.until_ms.map(from_ms),
            attempts: a.attempts,
            priority: a.priority,
            updated: from_ms(a.updated_ms),
        }
    }
}

/// What a bulk move did. `moved` holds the rows moved (for the log); the answer to the
/// operator carries counts and at most `MAX_NOT_MOVABLE_SHOWN` refused ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveReport {
    pub moved: u64,
    pub not_movable: u64,
    /// Some of the refused: (id, why).
    pub refused: Vec<(String, String)>,
    #[serde(skip)]
    pub moved_rows: Vec<ActionRow>,
    #[serde(skip)]
    pub refused_rows: Vec<(String, String)>,
}

/// `show ACTION`: the action, and its ledger history: every reservation, release and
/// outcome, each list in ledger (commit) order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub action: ActionRow,
    pub prospect: String,
    pub reservations: Vec<LedgerEntry>,
    pub releases: Vec<LedgerRelease>,
    #[serde(default)]
    pub outcomes: Vec<OutcomeRow>,
}

/// What became of one attempt (`show`): the outcome, when it was recorded, the
/// action's state after it with its reason and until, and whether its slots were
/// given back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRow {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub outcome: String,
    pub state: State,
    pub reason: Option<String>,
    pub until: Option<DateTime<Utc>>,
    pub released: bool,
}

/// Waiting actions of one (account, reason): how many, and the earliest until.
type WaitingTally = (u64, Option<DateTime<Utc>>);

/// A place in `list`'s order: oldest (lowest sequence) first, then by id. A page of a
/// long listing starts after the last row of the one before.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListCursor {
    pub seq: u64,
    pub id: String,
}

fn paused_in(tx: &Tx, key: &[u8]) -> super::tx::TxResult<bool> {
    Ok(tx.get_raw(META, key)?.is_some())
}

/// Inside a reservation: whether the operator holds everything.
pub(super) fn all_held_by_operator(tx: &Tx) -> super::tx::TxResult<bool> {
    paused_in(tx, &Scope::All.key())
}

/// Inside a reservation: whether the operator holds `account` itself (the hold on
/// everything is `all_held_by_operator`).
pub(super) fn account_held_by_operator(tx: &Tx, account: &str) -> super::tx::TxResult<bool> {
    paused_in(tx, &Scope::Account(account.to_string()).key())
}

/// Inside a reservation: `Some(false)` when the operator holds no account at all (so
/// no account needs its own read); `None` when that cannot be told cheaply.
pub(super) fn any_account_held(tx: &Tx) -> super::tx::TxResult<Option<bool>> {
    tx.any_with_prefix(META, &Scope::Account(String::new()).key())
}

/// Inside a reservation: whether the operator paused `campaign`.
pub(super) fn campaign_held_by_operator(tx: &Tx, campaign: &str) -> super::tx::TxResult<bool> {
    paused_in(tx, &Scope::Campaign(campaign.to_string()).key())
}

impl Store {
    /// Every operator hold in force.
    pub fn pauses(&self) -> Result<Pauses, StoreError> {
        self.op("read pauses")?;
        let mut p = Pauses::default();
        let mut end = PAUSE_PREFIX.to_vec();
        end.push(0xff);
        for kv in self.seen_iter(META, Bound::Included(PAUSE_PREFIX), Bound::Excluded(&end))? {
            let (k, _) = kv?;
            let rest = &k[PAUSE_PREFIX.len()..];
            if rest == b"all" {
                p.all = true;
            } else if let Some(id) = rest.strip_prefix(b"a/") {
                p.accounts.insert(String::from_utf8_lossy(id).into_owned());
            } else if let Some(id) = rest.strip_prefix(b"c/") {
                p.campaigns.insert(String::from_utf8_lossy(id).into_owned());
            }
        }
        Ok(p)
    }

    /// The kill switch is on.
    pub fn paused_all(&self) -> Result<bool, StoreError> {
        self.op("read pause")?;
        Ok(self.seen_get(META, Scope::All.key().as_ref())?.is_some())
    }

    /// Everything or `account` is paused by the operator.
    pub fn account_paused(&self, account: &str) -> Result<bool, StoreError> {
        self.op("read pause")?;
        Ok(self.seen_get(META, Scope::All.key().as_ref())?.is_some()
            || self
                .seen_get(META, Scope::Account(account.to_string()).key().as_ref())?
                .is_some())
    }

    /// Set or lift an operator hold, durably. Returns whether anything changed (the
    /// caller checks that the account or campaign exists). Lifting a campaign hold
    /// releases the actions that waited on it, unless its job file paused it too.
    pub fn set_pause(&self, scope: &Scope, paused: bool, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.op("write pause")?;
        let key = scope.key();
        let meta = &self.trees()?[META];
        let changed = if paused {
            meta.insert(key, &[][..])?.is_none()
        } else {
            meta.remove(key)?.is_some()
        };
        self.make_durable()?;
        if let (Scope::Campaign(id), false) = (scope, paused) {
            let job_paused = self.campaign(id)?.is_some_and(|c| c.paused);
            if !job_paused {
                self.release(b"c", id, now)?;
            }
        }
        Ok(changed)
    }

    /// The matching actions, oldest first; `limit` 0 means all.
    pub fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<ActionRow>, StoreError> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(self.list_page(filter, None, limit)?.0)
    }

    /// At most `limit` (≥ 1) of the matching actions that come after `after` in `list`'s
    /// order, oldest first, and where the next page starts when this one is full (there
    /// may be more). One pass over the actions, holding at most `limit` rows.
    pub fn list_page(
        &self,
        filter: &Filter,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> Result<(Vec<ActionRow>, Option<ListCursor>), StoreError> {
        debug_assert!(limit >= 1);
        self.op("scan actions")?;
        // The `limit` oldest matches, kept in a bounded max-heap over one pass.
        let mut heap: BinaryHeap<(ListCursor, usize)> = BinaryHeap::new();
        let mut rows: Vec<ActionRow> = Vec::new();
        for kv in self.trees()?[ACTIONS].iter() {
            let (k, v) = kv?;
            let a: Action = self.action_at(&k, &v)?;
            if !filter.matches(&a) {
                continue;
            }
            let key = ListCursor {
                seq: a.seq,
                id: a.id.clone(),
            };
            if after.is_some_and(|c| key <= *c) {
                continue;
            }
            if heap.len() < limit {
                heap.push((key, rows.len()));
                rows.push(ActionRow::of(&a));
            } else if heap.peek().is_some_and(|(top, _)| key < *top) {
                if let Some((_, slot)) = heap.pop() {
                    rows[slot] = ActionRow::of(&a);
                    heap.push((key, slot));
                }
            }
        }
        let full = heap.len() == limit;
        let mut order: Vec<(ListCursor, usize)> = heap.into_vec();
        order.sort();
        let next = if full {
            order.last().map(|(c, _)| c.clone())
        } else {
            None
        };
        let mut slots: Vec<Option<ActionRow>> = rows.into_iter().map(Some).collect();
        let page: Vec<ActionRow> = order
            .into_iter()
            .filter_map(|(_, slot)| slots[slot].take())
            .collect();
        debug_assert!(page.len() <= limit && (next.is_none() || page.len() == limit));
        Ok((page, next))
    }

    /// Cancel or requeue the actions named, or those matching `filter`, in
    /// transactions of `MOVE_BATCH`.
    pub fn move_actions(
        &self,
        op: Move,
        ids: &[String],
        filter: Option<&Filter>,
        now: DateTime<Utc>,
    ) -> Result<MoveReport, StoreError> {
        let mut report = MoveReport::default();
        let mut batch: Vec<String> = Vec::new();
        if let Some(f) = filter {
            self.op("scan actions")?;
            for kv in self.trees()?[ACTIONS].iter() {
                let (k, v) = kv?;
                let a: Action = self.action_at(&k, &v)?;
                if f.matches(&a) {
                    batch.push(a.id);
                    if batch.len() >= MOVE_BATCH {
                        self.move_batch(op, &std::mem::take(&mut batch), now, &mut report)?;
                    }
                }
            }
        } else {
            for id in ids {
                batch.push(id.clone());
                if batch.len() >= MOVE_BATCH {
                    self.move_batch(op, &std::mem::take(&mut batch), now, &mut report)?;
                }
            }
        }
        self.move_batch(op, &batch, now, &mut report)?;
        report.moved = report.moved_rows.len() as u64;
        report.not_movable = report.refused_rows.len() as u64;
        report.refused = report
            .refused_rows
            .iter()
            .take(MAX_NOT_MOVABLE_SHOWN)
            .cloned()
            .collect();
        Ok(report)
    }

    fn move_batch(
        &self,
        op: Move,
        ids: &[String],
        now: DateTime<Utc>,
        report: &mut MoveReport,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let result = self.transact(|tx| {
            let (mut moved, mut refused) = (Vec::new(), Vec::new());
            for id in ids {
                let Some(old) = tx.action(id)? else {
                    refused.push((id.clone(), "unknown action".to_string()));
                    continue;
                };
                match op.verdict(&old, now) {
                    Ok(new) => {
                        tx.transition(&old, &new, None)?;
                        moved.push(ActionRow::of(&new));
                    }
                    Err(why) => refused.push((id.clone(), why)),
                }
            }
            tx.flush_counts()?;
            Ok((moved, refused))
        })?;
        let (moved, refused) = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if !moved.is_empty() {
            self.make_durable()?;
        }
        report.moved_rows.extend(moved);
        report.refused_rows.extend(refused);
        Ok(())
    }

    /// `show ACTION`: the action and every reservation, release and outcome of it in
    /// the ledger (one pass over the ledger).
    pub fn history(&self, id: &str) -> Result<Option<History>, StoreError> {
        let Some(a) = self.action(id)? else {
            return Ok(None);
        };
        self.op("scan ledger")?;
        let (mut reservations, mut releases, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
        for kv in self.trees()?[LEDGER].iter() {
            let (k, v) = kv?;
            match codec::ledger_kind(&k) {
                Some(codec::LedgerKind::Release) => {
                    let r: LedgerRelease = codec::decode_at("ledger release", &k, &v)?;
                    if r.action == id {
                        releases.push(r);
                    }
                }
                Some(codec::LedgerKind::Outcomes) => {
                    let o: LedgerOutcomes = codec::decode_at("ledger outcomes", &k, &v)?;
                    outcomes.extend(
                        o.outcomes
                            .into_iter()
                            .filter(|x| x.action == id)
                            .map(|x| OutcomeRow {
                                attempt: x.attempt,
                                at: from_ms(o.at_ms),
                                outcome: x.outcome,
                                state: x.state,
                                reason: x.reason,
                                until: x.until_ms.map(from_ms),
                                released: x.released,
                            }),
                    );
                }
                Some(codec::LedgerKind::Reservations) => {
                    let b: LedgerReservations = codec::decode_at("ledger reservations", &k, &v)?;
                    reservations.extend(b.entries.into_iter().filter(|e| e.action == id));
                }
                Some(codec::LedgerKind::Reservation) => {
                    let e: LedgerEntry = codec::decode_at("ledger entry", &k, &v)?;
                    if e.action == id {
                        reservations.push(e);
                    }
                }
                None => return Err(StoreError::Corrupt("a ledger key names no known record".into())),
            }
        }
        Ok(Some(History {
            action: ActionRow::of(&a),
            prospect: a.prospect,
            reservations,
            releases,
            outcomes,
        }))
    }

    /// Fill what `status` (SPEC §8) needs the actions for: operator holds, per account
    /// the waiting actions by reason with the earliest until, the next send and the
    /// campaign caps it draws from; per campaign the actions per state. One pass over
    /// at most `scan_max` actions; returns false when there were more.
    pub fn status_detail(
        &self,
        r: &mut StatusReport,
        now: DateTime<Utc>,
        min_gap_s: u64,
        scan_max: usize,
    ) -> Result<bool, StoreError> {
        let pauses = self.pauses()?;
        r.paused_all = pauses.all;
        let accounts: BTreeMap<String, super::Account> =
            self.accounts()?.into_iter().map(|a| (a.id.clone(), a)).collect();
        let mut waiting: BTreeMap<(String, String), WaitingTally> = BTreeMap::new();
        let mut ready: BTreeMap<String, u64> = BTreeMap::new();
        let mut earliest: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut draws: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut states: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        self.op("scan actions")?;
        let mut complete = true;
        for (n, kv) in self
            .seen_iter(ACTIONS, Bound::Unbounded, Bound::Unbounded)?
            .enumerate()
        {
            if n >= scan_max {
                complete = false;
                break;
            }
            let (k, v) = kv?;
            let a: Action = self.action_at(&k, &v)?;
            *states
                .entry(a.campaign.clone())
                .or_default()
                .entry(a.state.as_str().to_string())
                .or_default() += 1;
            let Some(standing) = status::standing(&a) else {
                continue;
            };
            draws
                .entry(a.account.clone())
                .or_default()
                .insert(a.campaign.clone());
            let reason = match standing {
                Standing::Ready => {
                    *ready.entry(a.account.clone()).or_default() += 1;
                    continue;
                }
                Standing::Waiting(why) => why,
            };
            let until = a.until_ms.map(from_ms);
            if let Some(t) = until {
                let e = earliest.entry(a.account.clone()).or_insert(t);
                *e = (*e).min(t);
            }
            let w = waiting.entry((a.account.clone(), reason)).or_insert((0, until));
            w.0 += 1;
            w.1 = match (w.1, until) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
        }
        let campaigns: BTreeMap<String, super::Campaign> = self
            .seen_iter(CAMPAIGNS, Bound::Unbounded, Bound::Unbounded)?
            .map(|kv| {
                let (k, v) = kv?;
                let c: super::Campaign = codec::decode_at("campaign", &k, &v)?;
                Ok((c.id.clone(), c))
            })
            .collect::<Result<_, StoreError>>()?;
        for c in campaigns.values() {
            for acct in &c.accounts {
                draws.entry(acct.clone()).or_default().insert(c.id.clone());
            }
        }
        let mut campaign_today: BTreeMap<String, CampaignToday> = BTreeMap::new();
        for c in &mut r.campaigns {
            c.operator_paused = pauses.campaigns.contains(&c.id);
            c.states = states.remove(&c.id).unwrap_or_default();
            campaign_today.insert(c.id.clone(), c.today);
        }
        for s in &mut r.accounts {
            let Some(a) = accounts.get(&s.id) else { continue };
            s.paused = pauses.accounts.contains(&s.id);
            let held_by_operator = pauses.all || s.paused;
            let n_ready = ready.get(&s.id).copied().unwrap_or(0);
            let next = status::next_send(
                a,
                now,
                held_by_operator,
                n_ready > 0,
                earliest.get(&s.id).copied(),
                min_gap_s,
            );
            s.next_send = next;
            let mut w: Vec<Waiting> = waiting
                .range((s.id.clone(), String::new())..)
                .take_while(|((acct, _), _)| *acct == s.id)
                .map(|((_, reason), (count, until))| Waiting {
                    reason: reason.clone(),
                    count: *count,
                    until: *until,
                })
                .collect();
            if n_ready > 0 {
                let (reason, until) = status::ready_reason(a, now, held_by_operator, next);
                w.push(Waiting {
                    reason: reason.to_string(),
                    count: n_ready,
                    until,
                });
                w.sort_by(|x, y| x.reason.cmp(&y.reason));
            }
            s.waiting = w;
            s.campaigns = draws
                .get(&s.id)
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    campaign_today.get(c).map(|t| super::query::AccountCampaign {
                        id: c.clone(),
                        today: *t,
                    })
                })
                .collect();
        }
        Ok(complete)
    }

    /// A campaign's counters on its local day at `now` (for a campaign `status` lists).
    pub fn campaign_today(
        &self,
        c: &super::Campaign,
        now: DateTime<Utc>,
    ) -> Result<CampaignToday, StoreError> {
        self.op("read day")?;
        let day = c.day_at(now);
        let key = codec::campaign_day_key(&c.id, day);
        let used: CampaignDay = match self.seen_get(super::DAYS, &key)? {
            Some(v) => codec::decode_at("campaign day", &key, &v)?,
            None => CampaignDay::default(),
        };
        let caps = c.limits();
        Ok(CampaignToday {
            invite: Use {
                used: used.invites,
                cap: Some(caps.invites),
            },
            message: Use {
                used: used.messages,
                cap: Some(caps.messages),
            },
            inmail: Use {
                used: used.inmails,
                cap: Some(caps.inmails),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(state: State, account: &str, campaign: &str, kind: Kind) -> Action {
        Action {
            account: account.into(),
            campaign: campaign.into(),
            ..Action::fixture(kind, state)
        }
    }

    #[test]
    fn filters_match_every_given_field() {
        let a = action(State::Failed, "a1", "q4", Kind::Invite);
        let f = |state, account: Option<&str>, campaign: Option<&str>, kind| Filter {
            state,
            account: account.map(str::to_string),
            campaign: campaign.map(str::to_string),
            kind,
        };
        assert!(f(None, None, None, None).matches(&a));
        assert!(f(Some(State::Failed), Some("a1"), Some("q4"), Some(Kind::Invite)).matches(&a));
        assert!(!f(Some(State::Queued), None, None, None).matches(&a));
        assert!(!f(None, Some("a2"), None, None).matches(&a));
        assert!(!f(None, None, Some("q5"), None).matches(&a));
        assert!(!f(None, None, None, Some(Kind::Message)).matches(&a));
        assert!(
            !f(None, None, None, Some(Kind::Invite)).is_narrow(),
            "kind alone is too wide"
        );
        assert!(f(None, Some("a1"), None, None).is_narrow());
    }

    #[test]
    fn pause_keys_are_distinct_per_scope() {
        let keys = [
            Scope::All.key(),
            Scope::Account("all".into()).key(),
            Scope::Campaign("all".into()).key(),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        assert_eq!(Scope::Campaign("q4".into()).describe(), "campaign q4");
    }
}
