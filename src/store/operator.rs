//! Operator control in the store (SPEC §8, P9): holds kept in `meta` (pause and resume
//! of an account, a campaign or everything), the action listing, bulk cancel and
//! requeue with the rules of the `cancel_action` / `requeue_action` events, an action's
//! history from the ledger, and the detail of `status` that needs the actions
//! (waiting actions by reason, next send, actions per campaign and state).
//!
//! Everything here reads or writes through the store's own trees and transactions, so
//! the running worker (through its admin socket) and a CLI that opened the store itself
//! get the same answers.

use super::codec::{self, from_ms, ms};
use super::query::{CampaignToday, StatusReport, Use, Waiting};
use super::records::{Action, LedgerEntry, LedgerOutcomes, LedgerRelease, LedgerReservations, State};
use super::tx::Tx;
use super::{Store, StoreError, ACTIONS, CAMPAIGNS, LEDGER, META};
use crate::policy::caps::CampaignDay;
use crate::policy::window::local_day;
use crate::policy::Kind;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

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

/// A bulk move: cancel (from queued or parked) or requeue (from failed or unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Move {
    Cancel,
    Requeue,
}

impl Move {
    pub fn movable(self, s: State) -> bool {
        match self {
            Move::Cancel => matches!(s, State::Queued | State::Parked),
            Move::Requeue => matches!(s, State::Failed | State::Unknown),
        }
    }

    /// Why an action in state `s` does not move (the `event_ignored` reason).
    pub fn refusal(self, s: State) -> String {
        match self {
            Move::Cancel => format!("cannot cancel an action that is {}", s.as_str()),
            Move::Requeue => format!("cannot requeue an action that is {}", s.as_str()),
        }
    }

    /// The action after the move (the rules of the job-file events, SPEC §5, §6).
    pub fn apply(self, old: &Action, now: DateTime<Utc>) -> Action {
        let mut a = old.clone();
        a.until_ms = None;
        a.updated_ms = ms(now);
        match self {
            Move::Cancel => {
                a.state = State::Cancelled;
                a.reason = Some("cancelled".into());
            }
            Move::Requeue => {
                a.state = State::Queued;
                a.reason = None;
                a.retries = 0;
            }
        }
        a
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

/// One action in the order of `list`: oldest (lowest sequence) first.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct BySeq(u64, String);

fn paused_in(tx: &Tx, key: &[u8]) -> super::tx::TxResult<bool> {
    Ok(tx.get_raw(META, key)?.is_some())
}

/// Inside a reservation: whether an operator hold stops `account` (everything, or the
/// account itself).
pub(super) fn account_held_by_operator(tx: &Tx, account: &str) -> super::tx::TxResult<bool> {
    Ok(paused_in(tx, &Scope::All.key())? || paused_in(tx, &Scope::Account(account.to_string()).key())?)
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
        for k in self.trees[META].scan_prefix(PAUSE_PREFIX).keys() {
            let k = k?;
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
        Ok(self.trees[META].contains_key(Scope::All.key())?)
    }

    /// Everything or `account` is paused by the operator.
    pub fn account_paused(&self, account: &str) -> Result<bool, StoreError> {
        self.op("read pause")?;
        let meta = &self.trees[META];
        Ok(meta.contains_key(Scope::All.key())?
            || meta.contains_key(Scope::Account(account.to_string()).key())?)
    }

    /// Set or lift an operator hold, durably. Returns whether anything changed (the
    /// caller checks that the account or campaign exists). Lifting a campaign hold
    /// releases the actions that waited on it, unless its job file paused it too.
    pub fn set_pause(&self, scope: &Scope, paused: bool, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.op("write pause")?;
        let key = scope.key();
        let meta = &self.trees[META];
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
        self.op("scan actions")?;
        // The `limit` oldest matches, kept in a bounded max-heap over one pass.
        let mut heap: BinaryHeap<(BySeq, usize)> = BinaryHeap::new();
        let mut rows: Vec<ActionRow> = Vec::new();
        for kv in self.trees[ACTIONS].iter() {
            let (k, v) = kv?;
            let a: Action = self.action_at(&k, &v)?;
            if !filter.matches(&a) {
                continue;
            }
            let key = BySeq(a.seq, a.id.clone());
            if limit == 0 || heap.len() < limit {
                heap.push((key, rows.len()));
                rows.push(ActionRow::of(&a));
            } else if heap.peek().is_some_and(|(top, _)| key < *top) {
                if let Some((_, slot)) = heap.pop() {
                    rows[slot] = ActionRow::of(&a);
                    heap.push((key, slot));
                }
            }
        }
        let mut order: Vec<(BySeq, usize)> = heap.into_vec();
        order.sort();
        let mut slots: Vec<Option<ActionRow>> = rows.into_iter().map(Some).collect();
        Ok(order
            .into_iter()
            .filter_map(|(_, slot)| slots[slot].take())
            .collect())
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
            for kv in self.trees[ACTIONS].iter() {
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
                match tx.action(id)? {
                    None => refused.push((id.clone(), "unknown action".to_string())),
                    Some(old) if !op.movable(old.state) => refused.push((id.clone(), op.refusal(old.state))),
                    Some(old) => {
                        let new = op.apply(&old, now);
                        tx.transition(&old, &new, None)?;
                        moved.push(ActionRow::of(&new));
                    }
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
        for kv in self.trees[LEDGER].iter() {
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
        for (n, kv) in self.trees[ACTIONS].iter().enumerate() {
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
            if !matches!(a.state, State::Queued | State::Parked) {
                continue;
            }
            draws
                .entry(a.account.clone())
                .or_default()
                .insert(a.campaign.clone());
            let until = a.until_ms.map(from_ms);
            let reason = match (a.state, until, a.reason.as_deref()) {
                (State::Queued, None, _) => {
                    *ready.entry(a.account.clone()).or_default() += 1;
                    continue;
                }
                (State::Queued, Some(_), None) => "not_before".to_string(),
                (State::Queued, Some(_), Some(_)) => "retry".to_string(),
                (_, _, Some(why)) => why.to_string(),
                (_, _, None) => "parked".to_string(),
            };
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
        let campaigns: BTreeMap<String, super::Campaign> = self.trees[CAMPAIGNS]
            .iter()
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
            let next = next_send(
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
                let (reason, until) = ready_reason(a, now, held_by_operator, next);
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
        let day = local_day(c.tz(), now);
        let key = codec::campaign_day_key(&c.id, day);
        let used: CampaignDay = match self.trees[super::DAYS].get(&key)? {
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

/// When `account` will next send, judged from the store: the earliest moment it has
/// due work, is not held, its pacing gap (at least `min_gap_s` after the last
/// reservation) has passed and its window is open. `None`: paused, restricted, or no
/// work that will come due by itself.
fn next_send(
    a: &super::Account,
    now: DateTime<Utc>,
    held_by_operator: bool,
    has_ready: bool,
    earliest_until: Option<DateTime<Utc>>,
    min_gap_s: u64,
) -> Option<DateTime<Utc>> {
    if held_by_operator || a.restricted {
        return None;
    }
    let work = if has_ready { Some(now) } else { earliest_until }?;
    let mut t = work.max(now);
    if let Some(h) = a.held_until_ms.map(from_ms) {
        t = t.max(h);
    }
    if let Some(last) = a.last_reserved_ms.map(from_ms) {
        t = t.max(last + Duration::seconds(i64::try_from(min_gap_s).unwrap_or(i64::MAX / 1000)));
    }
    let zones = a.zones();
    if zones.is_open(&a.window, t) {
        Some(t)
    } else {
        zones.next_open(&a.window, t)
    }
}

/// Why due (queued, ready) actions of `a` are not sent right now, and until when.
fn ready_reason(
    a: &super::Account,
    now: DateTime<Utc>,
    held_by_operator: bool,
    next: Option<DateTime<Utc>>,
) -> (&'static str, Option<DateTime<Utc>>) {
    if held_by_operator {
        ("paused", None)
    } else if a.restricted {
        ("account_restricted", None)
    } else if a.held(now) {
        ("held", a.held_until_ms.map(from_ms))
    } else if !a.zones().is_open(&a.window, now) {
        ("window", next)
    } else {
        ("due", next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Window;

    fn action(state: State, account: &str, campaign: &str, kind: Kind) -> Action {
        Action {
            id: "x".into(),
            campaign: campaign.into(),
            account: account.into(),
            kind,
            prospect: "p".into(),
            payload: "{}".into(),
            priority: 0,
            seq: 1,
            state,
            attempts: 0,
            retries: 0,
            reason: None,
            until_ms: None,
            updated_ms: 0,
            sent_day: None,
            accepted: false,
            refunded: false,
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
    fn moves_follow_the_event_rules() {
        for s in State::ALL {
            assert_eq!(
                Move::Cancel.movable(s),
                matches!(s, State::Queued | State::Parked),
                "{s:?}"
            );
            assert_eq!(
                Move::Requeue.movable(s),
                matches!(s, State::Failed | State::Unknown),
                "{s:?}"
            );
        }
        let mut old = action(State::Failed, "a1", "q4", Kind::Invite);
        old.retries = 5;
        old.reason = Some("invalid".into());
        old.until_ms = Some(7);
        let now = from_ms(1_000);
        let r = Move::Requeue.apply(&old, now);
        assert_eq!(
            (r.state, r.retries, r.reason.clone(), r.until_ms),
            (State::Queued, 0, None, None)
        );
        let c = Move::Cancel.apply(&action(State::Parked, "a1", "q4", Kind::Invite), now);
        assert_eq!(
            (c.state, c.reason.as_deref()),
            (State::Cancelled, Some("cancelled"))
        );
        assert_eq!(
            Move::Cancel.refusal(State::Sent),
            "cannot cancel an action that is sent"
        );
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

    #[test]
    fn next_send_waits_for_work_hold_pacing_and_window() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        let now = t("2026-11-25T10:00:00Z"); // a Wednesday, inside 09:00-17:00
        let json = format!(
            r#"{{"id":"a1","tier":"free","timezone":"UTC","window":{},"ramp_start":"2026-11-01","established":true,"proxy":null,"caps":{{"invites":null,"messages":null,"inmails":null,"engagement":null,"weekly_invites":null}},"credits":0,"refill_day":1,"last_refill_ms":0,"ramp_ceiling":20,"ramp_history":[],"last_reserved_ms":null,"ramp_steps":0,"health":"healthy","restricted":false,"held_until_ms":null,"maintained_day":"2026-11-25","pending_zone":null,"summarised_day":null}}"#,
            serde_json::to_string(&Window::default()).expect("window")
        );
        let mut a: super::super::Account = serde_json::from_str(&json).expect("account");
        assert_eq!(next_send(&a, now, false, true, None, 45), Some(now));
        assert_eq!(next_send(&a, now, true, true, None, 45), None, "paused");
        assert_eq!(next_send(&a, now, false, false, None, 45), None, "no work");
        let later = t("2026-11-25T11:00:00Z");
        assert_eq!(next_send(&a, now, false, false, Some(later), 45), Some(later));
        a.last_reserved_ms = Some(ms(now));
        assert_eq!(
            next_send(&a, now, false, true, None, 45),
            Some(now + Duration::seconds(45))
        );
        a.held_until_ms = Some(ms(t("2026-11-25T18:00:00Z")));
        // Held past the window's end: the next opening, Thursday 09:00.
        assert_eq!(
            next_send(&a, now, false, true, None, 45),
            Some(t("2026-11-26T09:00:00Z"))
        );
        a.restricted = true;
        assert_eq!(next_send(&a, now, false, true, None, 45), None);
    }
}
