//! Reserve: one transaction that reads what an action draws from, asks the rules
//! (`rules::reserve::decide`), takes the slots, moves the action to `inflight` and
//! appends a ledger entry; then the durability boundary, then permission to send (SPEC
//! P1, P2). Also the store's side of maintenance (`rules::maintain`) and backlog parking
//! (`rules::park`): the reads and the writes, never the rule.

use super::codec;
use super::operator;
use super::outcome::{Attempt, Recorded};
use super::records::{Account, AccountDayRec, Action, Campaign, LedgerEntry, LedgerReservations};
use super::tx::{Tx, TxResult};
use super::{Settings, Store, StoreError, INFLIGHT, LEDGER, META, META_FEEDBACK_SEEN, READY};
use crate::contract::upstream::redact_proxy;
use crate::contract::SendRequest;
use crate::policy::caps::Blocker;
use crate::policy::health::Signals;
use crate::policy::Kind;
pub use crate::rules::park::{kinds_blocked_by, Hold};
use crate::rules::reserve::{self, ReserveDecision};
pub use crate::rules::Change;
use crate::rules::{maintain, park, WaitOn};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::BTreeMap;

/// Permission to send one attempt: the reservation is durable when this exists.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub request: SendRequest,
    pub campaign: String,
    pub account: String,
}

impl Reservation {
    /// The proxy with credentials removed, for logs.
    pub fn proxy_for_log(&self) -> Option<String> {
        self.request.proxy.as_deref().map(redact_proxy)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReserveResult {
    Reserved(Reservation),
    /// Blocked by a cap: parked until `until` (or until an event when `None`).
    /// `blocked` is the counter (`None` for a paused campaign).
    Parked {
        action: String,
        account: String,
        campaign: String,
        kind: Kind,
        blocker: String,
        blocked: Option<Blocker>,
        until: Option<DateTime<Utc>>,
    },
    /// Not reservable now (no longer queued, account held or restricted, window shut).
    Skipped {
        action: String,
        why: &'static str,
    },
}

/// The health signals of an account on local day `today` (SPEC §3.4): its counters
/// of the days health is judged on, read here and summed by the rule.
pub(super) fn signals(tx: &Tx, a: &Account, today: NaiveDate) -> TxResult<Signals> {
    let mut recent = Vec::with_capacity(maintain::SIGNAL_DAYS);
    for ago in 0..maintain::SIGNAL_DAYS {
        recent.push(tx.account_day(&a.id, today - Duration::days(ago as i64))?);
    }
    Ok(maintain::signals(a.restricted, feedback_seen(tx)?, &recent))
}

/// Whether any `invite_accepted` has ever reached the worker (SPEC §3.4), store-wide.
pub(super) fn feedback_seen(tx: &Tx) -> TxResult<bool> {
    Ok(tx.get_raw(META, META_FEEDBACK_SEEN)?.is_some())
}

/// Mark that acceptance feedback flows, in the transaction that applies it.
pub(super) fn mark_feedback_seen(tx: &Tx) -> TxResult<()> {
    tx.put_raw(META, META_FEEDBACK_SEEN, &[1])
}

/// Judge `a`'s health on its stored signals (`rules::maintain::judge_health`).
pub(super) fn refresh_health(
    tx: &Tx,
    a: &mut Account,
    today: NaiveDate,
    st: &Settings,
    out: &mut Vec<Change>,
) -> TxResult<()> {
    let sig = signals(tx, a, today)?;
    maintain::judge_health(a, sig, st, out);
    Ok(())
}

/// Bring an account up to `now` (`rules::maintain`): refills and a zone change without
/// reading anything; the day's signals are read only when the day turn is due.
pub(super) fn maintain(
    tx: &Tx,
    a: &mut Account,
    now: DateTime<Utc>,
    st: &Settings,
    out: &mut Vec<Change>,
) -> TxResult<()> {
    if let Some(today) = maintain::catch_up(a, now, st, out) {
        let sig = signals(tx, a, today)?;
        maintain::day_turn(a, today, sig, st, out);
    }
    Ok(())
}

/// Invites reserved on each of the 7 local days ending `today` (oldest first).
fn week(tx: &Tx, account: &str, today: NaiveDate) -> TxResult<[u32; 7]> {
    let mut w = [0u32; 7];
    for (i, slot) in w.iter_mut().enumerate() {
        *slot = tx
            .account_day(account, today - Duration::days(6 - i as i64))?
            .reserved
            .invites;
    }
    Ok(w)
}

fn skipped(action: &str, why: &'static str) -> ReserveResult {
    ReserveResult::Skipped {
        action: action.to_string(),
        why,
    }
}

/// The index key of what a parked action waits on (`Tx::transition`).
pub(super) fn waiting_key(w: &WaitOn) -> (&'static [u8], &str) {
    match w {
        WaitOn::Account(a) => (b"a", a.as_str()),
        WaitOn::Campaign(c) => (b"c", c.as_str()),
    }
}

/// One reserve transaction's running state: its ledger record (id and entries so far)
/// and what it reads once. A reservation writes no campaign and no operator hold, so
/// each campaign (with its hold) and the store-wide hold are read once per attempt of
/// the transaction, not once per action.
pub(super) struct Batch {
    pub id: u64,
    pub entries: Vec<LedgerEntry>,
    all_held: Option<bool>,
    /// Whether any account is held (`operator::any_account_held`), read once.
    any_account_held: Option<Option<bool>>,
    /// By id: the campaign (`None`: unknown) and whether the operator paused it.
    campaigns: BTreeMap<String, Option<(Campaign, bool)>>,
}

impl Batch {
    pub fn new(id: u64, capacity: usize) -> Batch {
        Batch {
            id,
            entries: Vec::with_capacity(capacity),
            all_held: None,
            any_account_held: None,
            campaigns: BTreeMap::new(),
        }
    }

    /// Whether an operator hold stops `account`: everything, or the account itself.
    fn account_held(&mut self, tx: &Tx, account: &str) -> TxResult<bool> {
        let all = match self.all_held {
            Some(held) => held,
            None => *self.all_held.insert(operator::all_held_by_operator(tx)?),
        };
        if all {
            return Ok(true);
        }
        let any = match self.any_account_held {
            Some(any) => any,
            None => *self.any_account_held.insert(operator::any_account_held(tx)?),
        };
        Ok(any != Some(false) && operator::account_held_by_operator(tx, account)?)
    }

    /// Campaign `id` and whether the operator paused it (`None`: unknown).
    fn campaign(&mut self, tx: &Tx, id: &str) -> TxResult<Option<&(Campaign, bool)>> {
        if !self.campaigns.contains_key(id) {
            let c = match tx.campaign(id)? {
                Some(c) => {
                    let held = operator::campaign_held_by_operator(tx, &c.id)?;
                    Some((c, held))
                }
                None => None,
            };
            self.campaigns.insert(id.to_string(), c);
        }
        Ok(self.campaigns.get(id).and_then(Option::as_ref))
    }
}

/// Reserve one action: read what `rules::reserve::decide` needs, then write its verdict.
pub(super) fn reserve_one(
    tx: &Tx,
    id: &str,
    now: DateTime<Utc>,
    st: &Settings,
    batch: &mut Batch,
    out: &mut Vec<Change>,
) -> TxResult<ReserveResult> {
    let Some(action) = tx.action(id)? else {
        return Ok(skipped(id, reserve::UNKNOWN_ACTION));
    };
    if !reserve::due(&action, now) {
        return Ok(skipped(id, reserve::NOT_DUE));
    }
    let Some(mut acct) = tx.account(&action.account)? else {
        return Ok(skipped(id, reserve::UNKNOWN_ACCOUNT));
    };
    maintain(tx, &mut acct, now, st, out)?;
    let account_hold = batch.account_held(tx, &acct.id)?;
    let campaign = batch.campaign(tx, &action.campaign)?;
    let mut counters = reserve::Counters::default();
    let mut day_rec = None;
    if let Some((c, _)) = campaign {
        let (today, camp_today) = reserve::days(&acct, c, now);
        let rec = tx.account_day(&acct.id, today)?;
        counters.day = rec.reserved;
        day_rec = Some(rec);
        counters.campaign_day = tx.campaign_day(&c.id, camp_today)?;
        if reserve::needs_week(action.kind, &acct, st) {
            counters.week = week(tx, &acct.id, today)?;
        }
    }
    let decision = reserve::decide(&reserve::ReserveInput {
        action: &action,
        account: &acct,
        account_operator_hold: account_hold,
        campaign: campaign.map(|(c, held)| reserve::CampaignInput {
            campaign: c,
            operator_hold: *held,
        }),
        counters,
        now,
        settings: st,
    });
    match decision {
        ReserveDecision::Skip(why) => {
            put_if_maintained(tx, &acct)?;
            Ok(skipped(id, why))
        }
        ReserveDecision::Park {
            action: parked,
            waiting_on,
            blocked,
            until,
        } => {
            put_if_maintained(tx, &acct)?;
            tx.transition(&action, &parked, waiting_on.as_ref().map(waiting_key))?;
            Ok(ReserveResult::Parked {
                blocker: parked.reason.clone().unwrap_or_default(),
                action: parked.id,
                account: acct.id,
                campaign: parked.campaign,
                kind: parked.kind,
                blocked,
                until,
            })
        }
        ReserveDecision::Admit(adm) => {
            let mut rec = day_rec.unwrap_or_default();
            admit(tx, &action, *adm, &mut rec, batch.id, &mut batch.entries)
        }
    }
}

/// Write `acct` when maintenance changed it (a refused reservation; an admitted one
/// writes the account anyway). Compared with the stored one, read again from the
/// transaction's cache, so an admission pays for no copy of the account.
fn put_if_maintained(tx: &Tx, acct: &Account) -> TxResult<()> {
    if tx.account(&acct.id)?.as_ref() != Some(acct) {
        tx.put_account(acct)?;
    }
    Ok(())
}

/// Write an admitted reservation: the slots, the account, the action in flight and
/// its place in the batch's ledger record.
fn admit(
    tx: &Tx,
    old: &Action,
    adm: reserve::Admission,
    day: &mut AccountDayRec,
    batch_id: u64,
    entries: &mut Vec<LedgerEntry>,
) -> TxResult<ReserveResult> {
    let reserve::Admission {
        action: inflight,
        account,
        day: reserved,
        campaign_day,
        entry,
    } = adm;
    day.reserved = reserved;
    tx.put_account_day(&account.id, entry.account_day, day)?;
    tx.put_campaign_day(&entry.campaign, entry.campaign_day, &campaign_day)?;
    tx.put_account(&account)?;
    tx.transition(old, &inflight, None)?;
    // The in-flight index remembers the reservation (its batch and place in it), so
    // that an attempt that is not delivered gives back exactly these slots
    // (`outcome::release`).
    let index = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    debug_assert!(index < u32::MAX, "a reserve batch is far smaller");
    tx.put_raw(
        INFLIGHT,
        inflight.id.as_bytes(),
        &codec::inflight_value(batch_id, index),
    )?;
    entries.push(entry);
    Ok(ReserveResult::Reserved(request_of(&inflight, &account)))
}

fn request_of(a: &Action, acct: &Account) -> Reservation {
    Reservation {
        request: SendRequest {
            id: a.id.clone(),
            account: a.account.clone(),
            proxy: acct.proxy.clone(),
            campaign: a.campaign.clone(),
            kind: a.kind,
            prospect: a.prospect.clone(),
            payload: serde_json::from_str(&a.payload).unwrap_or(serde_json::Value::Null),
            attempt: a.attempts,
        },
        campaign: a.campaign.clone(),
        account: a.account.clone(),
    }
}

/// One action parked with the rest of a blocked backlog.
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedAction {
    pub action: String,
    pub campaign: String,
    pub kind: Kind,
}

impl Store {
    /// `None` once acceptance feedback flows; until then, how many accounts (not
    /// restricted) wait on it (SPEC §3.4 `feedback_missing`).
    pub fn feedback_missing(&self) -> Result<Option<u32>, StoreError> {
        self.op("feedback")?;
        if self.seen_get(META, META_FEEDBACK_SEEN)?.is_some() {
            return Ok(None);
        }
        let waiting = self.accounts()?.iter().filter(|a| !a.restricted).count();
        Ok(Some(u32::try_from(waiting).unwrap_or(u32::MAX)))
    }

    /// Park, in one transaction, every ready action of `account` (of `campaign` only,
    /// when given) that `hold` stops: all kinds drawing from an exhausted counter, or
    /// every action of a paused campaign. They would all be refused, so trying them
    /// one by one only burns transactions. At most `max` ready actions are read per
    /// call, from the start or after `after` (the cursor a previous call returned);
    /// the cursor returned is `None` once the backlog was read to its end.
    pub fn park_backlog(
        &self,
        account: &str,
        campaign: Option<&str>,
        hold: Hold,
        now: DateTime<Utc>,
        max: usize,
        after: Option<&[u8]>,
    ) -> Result<(Vec<ParkedAction>, Option<Vec<u8>>), StoreError> {
        let Some(plan) = park::backlog(hold, campaign) else {
            return Ok((Vec::new(), None));
        };
        let prefix = match campaign {
            Some(c) => {
                let mut p = codec::key(&[account.as_bytes(), c.as_bytes()]);
                p.push(0);
                p
            }
            None => codec::account_prefix(account),
        };
        self.park_ready(&prefix, &plan, now, max, after)
    }

    /// Park, in one transaction, the ready actions under `prefix` (at most `max`, after
    /// the key `after` when given) that `plan` stops (`rules::park::park_with`); durable
    /// when any moved. Returns them, and the last key read when more may follow.
    pub(super) fn park_ready(
        &self,
        prefix: &[u8],
        plan: &park::Backlog,
        now: DateTime<Utc>,
        max: usize,
        after: Option<&[u8]>,
    ) -> Result<(Vec<ParkedAction>, Option<Vec<u8>>), StoreError> {
        use std::ops::Bound;
        debug_assert!(
            after.is_none_or(|k| k.starts_with(prefix)),
            "a cursor outside its backlog"
        );
        self.op("scan ready")?;
        let start = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut ids: Vec<String> = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let mut more = false;
        for kv in self.trees()?[READY].range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = kv?;
            if !k.starts_with(prefix) {
                break;
            }
            if ids.len() == max {
                more = true;
                break;
            }
            ids.push(String::from_utf8_lossy(&v).into_owned());
            last = Some(k.to_vec());
        }
        self.backlog_reads
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let next = if more { last } else { None };
        if ids.is_empty() {
            return Ok((Vec::new(), next));
        }
        let waiting_on = plan.waiting_on.as_ref().map(waiting_key);
        let result = self.transact(|tx| {
            let mut out = Vec::new();
            for id in &ids {
                let Some(old) = tx.action(id)? else { continue };
                let Some(a) = park::park_with(&old, plan, now) else {
                    continue;
                };
                tx.transition(&old, &a, waiting_on)?;
                out.push(ParkedAction {
                    action: a.id,
                    campaign: a.campaign,
                    kind: a.kind,
                });
            }
            tx.flush_counts()?;
            Ok(out)
        })?;
        let out = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        if !out.is_empty() {
            self.make_durable()?;
        }
        Ok((out, next))
    }

    /// Reserve several actions in one transaction and one durable commit (group
    /// commit). Each result says reserved, parked, or skipped; only `Reserved` ones
    /// may be sent, and only after this returns.
    pub fn reserve(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(Vec<ReserveResult>, Vec<Change>), StoreError> {
        let folded = self.reserve_after(&[], now, ids, now)?;
        debug_assert!(folded.recorded.is_empty() && folded.answer_changes.is_empty());
        Ok((folded.results, folded.changes))
    }

    /// Record `answers` (answered at `answered`, as [`Store::record_attempts`] would
    /// then) and reserve `ids` at `now`, in one transaction and one durable commit:
    /// the answers first, so every reservation is decided on them (a slot an answer
    /// gave back, a hold it set), then the reservations, as [`Store::reserve`] would.
    /// With no answers this is `reserve`. One sled transaction costs its own writes of
    /// sled's log buffer (`pin_log` seals it before and after the batch), so an answer
    /// recorded apart costs the next reservation's durable commit two more log writes
    /// to wait for.
    pub fn reserve_after(
        &self,
        answers: &[Attempt],
        answered: DateTime<Utc>,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Folded, StoreError> {
        let answer_ids = self.answer_ids(answers)?;
        // One ledger record holds every reservation of the batch, with the limits in
        // force; its id is taken before the transaction (which may run twice).
        self.op("generate ledger id")?;
        let batch_id = self.db().generate_id()?;
        let st = &self.settings;
        let result = self.transact_behind(|tx| {
            let mut answer_changes = Vec::new();
            let recorded = self.record_in(tx, answers, &answer_ids, answered, &mut answer_changes)?;
            let mut changes = Vec::new();
            let mut results = Vec::with_capacity(ids.len());
            let mut batch = Batch::new(batch_id, ids.len());
            for id in ids {
                results.push(reserve_one(tx, id, now, st, &mut batch, &mut changes)?);
            }
            if !batch.entries.is_empty() {
                tx.put(
                    LEDGER,
                    &codec::reservations_key(batch_id),
                    &LedgerReservations {
                        entries: batch.entries,
                    },
                )?;
            }
            tx.flush_counts()?;
            Ok(Folded {
                recorded,
                answer_changes,
                results,
                changes,
            })
        })?;
        let folded = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        // The durability boundary: nothing below this line may run before the
        // reservation survives a crash and a power cut.
        self.make_durable()?;
        Ok(folded)
    }
}

/// What [`Store::reserve_after`] did: the answers recorded, then the reservations.
#[derive(Debug)]
pub struct Folded {
    pub recorded: Vec<Recorded>,
    /// The changes the answers made (accounts held, ...), to log before `changes`.
    pub answer_changes: Vec<Change>,
    pub results: Vec<ReserveResult>,
    pub changes: Vec<Change>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Scope;

    /// One batch reads each campaign and the store-wide hold once (`Batch`): what it
    /// keeps must stay each campaign's own, and an account's hold is never taken for
    /// another account's.
    #[test]
    fn one_batch_keeps_each_campaigns_and_accounts_operator_hold_apart() {
        let (_dir, store, now) = super::super::writes::fresh();
        let win = super::super::writes::WINDOW;
        let mut text = String::new();
        for c in ["c1", "c2"] {
            text += &format!("{{\"type\":\"campaign\",\"id\":\"{c}\",\"daily_limit\":1000}}\n");
        }
        for a in ["a0", "a1"] {
            text += &format!(
                "{{\"type\":\"account\",\"id\":\"{a}\",\"tier\":\"sales_navigator_core\",\"timezone\":\"UTC\",{win},\"established\":true}}\n"
            );
        }
        let plan = [
            ("x0", "c1", "a1"),
            ("x1", "c2", "a1"),
            ("x2", "c2", "a0"),
            ("x3", "c1", "a1"),
            ("x4", "c2", "a1"),
        ];
        for (id, c, a) in plan {
            text += &format!(
                "{{\"type\":\"action\",\"id\":\"{id}\",\"campaign\":\"{c}\",\"account\":\"{a}\",\"kind\":\"message\",\"prospect\":\"https://www.linkedin.com/in/{id}\",\"payload\":{{\"note\":\"hi\"}}}}\n"
            );
        }
        store.apply("ops.jsonl", text.as_bytes(), now).expect("applies");
        store
            .set_pause(&Scope::Campaign("c1".into()), true, now)
            .expect("pause c1");
        store
            .set_pause(&Scope::Account("a0".into()), true, now)
            .expect("pause a0");
        let ids: Vec<String> = plan.iter().map(|p| p.0.to_string()).collect();
        let (results, _) = store.reserve(&ids, now).expect("reserves");
        let got: Vec<(&str, &str)> = results
            .iter()
            .map(|r| match r {
                ReserveResult::Reserved(res) => (res.request.id.as_str(), "reserved"),
                ReserveResult::Parked { action, blocker, .. } => (action.as_str(), blocker.as_str()),
                ReserveResult::Skipped { action, why } => (action.as_str(), *why),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("x0", reserve::CAMPAIGN_PAUSED),
                ("x1", "reserved"),
                ("x2", reserve::OPERATOR_PAUSE),
                ("x3", reserve::CAMPAIGN_PAUSED),
                ("x4", "reserved"),
            ]
        );
    }

    /// A batch that found no account held skips each account's own read; a hold set
    /// after it stops the very next batch, and a hold lifted frees it.
    #[test]
    fn an_account_held_between_two_batches_stops_the_next_one() {
        let (_dir, store, now) = super::super::writes::fresh();
        let win = super::super::writes::WINDOW;
        let mut text = String::from("{\"type\":\"campaign\",\"id\":\"c\",\"daily_limit\":1000}\n");
        text += &format!(
            "{{\"type\":\"account\",\"id\":\"a0\",\"tier\":\"sales_navigator_core\",\"timezone\":\"UTC\",{win},\"established\":true}}\n"
        );
        for id in ["x0", "x1", "x2"] {
            text += &format!(
                "{{\"type\":\"action\",\"id\":\"{id}\",\"campaign\":\"c\",\"account\":\"a0\",\"kind\":\"profile_view\",\"prospect\":\"https://www.linkedin.com/in/{id}\",\"payload\":{{}}}}\n"
            );
        }
        store.apply("ops.jsonl", text.as_bytes(), now).expect("applies");
        let one = |id: &str| -> String {
            let (results, _) = store.reserve(&[id.to_string()], now).expect("reserves");
            match &results[..] {
                [ReserveResult::Reserved(_)] => "reserved".into(),
                [ReserveResult::Skipped { why, .. }] => why.to_string(),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(one("x0"), "reserved");
        store
            .set_pause(&Scope::Account("a0".into()), true, now)
            .expect("pause a0");
        assert_eq!(one("x1"), reserve::OPERATOR_PAUSE);
        store
            .set_pause(&Scope::Account("a0".into()), false, now)
            .expect("resume a0");
        assert_eq!(one("x1"), "reserved");
        assert_eq!(one("x2"), "reserved");
    }
}
