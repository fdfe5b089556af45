//! The job-file records (SPEC §6) in the store, through a `Tx`: for each record the
//! reads its rules need (`rules::records`, `rules::event`), then the writes they return.
//! `ingest.rs` runs them chunk by chunk, all or nothing per file; `feed.rs` applies the
//! upstream's events with the same `apply_event`.

use super::codec::{self, content_hash, file_key};
use super::records::{Account, Action, Campaign, State};
use super::reserve::{refresh_health, Change};
use super::tx::{reject, Tx, TxResult};
use super::{Settings, Store, StoreError, FILES, LINKS, META, TIMED, WAITING};
use crate::contract::jobfile::{
    AccountRecord, ActionRecord, CampaignRecord, EventRecord, FieldError, Line, Record, ReplyTo,
};
use crate::policy::Kind;
use crate::rules::event;
use crate::rules::park;
use crate::rules::records::{self, Assign, Candidate};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Actions a cap raise wakes per transaction (`Store::wake_raised`).
pub const WAKE_BATCH: usize = 1024;
/// `timed` keys a cap raise reads per window (`Store::wake_raised`).
pub const WAKE_SCAN: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub accounts: u32,
    pub campaigns: u32,
    pub actions: u32,
    pub duplicates: u32,
    pub events: u32,
    pub changes: Vec<Change>,
    /// What each event record did, in file order (SPEC §6: every record has a
    /// visible effect).
    pub effects: Vec<EventEffect>,
    /// The caps the file's account and campaign records raised: their parked actions
    /// are woken once the file is published (`Store::wake_raised`).
    pub raised: park::Raised,
}

/// The effect of one event record, for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct EventEffect {
    pub line: usize,
    /// The record's `kind` (`cancel_action`, `invite_accepted`, ...).
    pub kind: &'static str,
    pub account: Option<String>,
    pub campaign: Option<String>,
    pub action: Option<String>,
    /// The kind of the action a cancel or requeue moved.
    pub action_kind: Option<Kind>,
    /// `Ok(what it did)`, or `Err(why it changed nothing)` (`event_ignored`).
    pub result: Result<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ApplyOutcome {
    Applied(Applied),
    /// The same name and content was applied before (a crash between apply and the
    /// move to `done/`): nothing to do.
    AlreadyApplied,
    Rejected(super::Rejection),
}

pub(super) struct Ctx<'a> {
    tx: &'a Tx<'a>,
    st: &'a Settings,
    now: DateTime<Utc>,
    /// Actions assigned per (account, kind) in this file, for picking accounts.
    assigned: BTreeMap<(String, Kind), u32>,
    seqs: std::slice::Iter<'a, u64>,
    out: Applied,
    /// Campaigns (`true`) and accounts (`false`) resumed: their waiting actions are
    /// released after the transaction (a transaction cannot scan an index).
    resumed: Vec<(bool, String)>,
    /// Campaigns read by actions of this file (each decoded once; a campaign record or
    /// event in the file drops its entry), and accounts known to exist.
    campaign_cache: BTreeMap<String, Campaign>,
    known_accounts: std::collections::BTreeSet<String>,
}

/// A rule's refusal of the record on `line`: the transaction aborts, nothing applied.
fn refuse<T>(line: usize, e: FieldError) -> TxResult<T> {
    reject(line, &e.field, e.reason)
}

fn apply_account(c: &mut Ctx, line: usize, r: &AccountRecord) -> TxResult<()> {
    let tx = c.tx;
    let existing = tx.account(&r.id)?;
    let before = existing.clone();
    let mut up = match records::account(existing, r, c.st, c.now) {
        Ok(up) => up,
        Err(e) => return refuse(line, e),
    };
    if let Some(today) = up.judge_on {
        let signals = super::reserve::signals(tx, &up.account, today)?;
        records::judge_new(&mut up.account, signals, c.st);
    }
    if let Some(old) = &before {
        let policy = &c.st.policy;
        let counters = park::raised_account(old, policy, &up.account, policy, c.now);
        c.out.raised.add_account(&r.id, counters);
    }
    tx.put_account(&up.account)?;
    c.out.changes.extend(up.changes);
    c.out.accounts += 1;
    Ok(())
}

fn apply_campaign(c: &mut Ctx, line: usize, r: &CampaignRecord) -> TxResult<()> {
    let tx = c.tx;
    let existing = tx.campaign(&r.id)?;
    let mut unknown = None;
    for (i, a) in r.accounts.iter().flatten().enumerate() {
        if tx.account(a)?.is_none() {
            unknown = Some(i);
            break;
        }
    }
    let old_limits = existing.as_ref().map(Campaign::limits);
    let up = match records::campaign(existing, r, unknown, c.now) {
        Ok(up) => up,
        Err(e) => return refuse(line, e),
    };
    if let Some(old) = old_limits {
        let types = park::raised_campaign(old, up.campaign.limits());
        c.out.raised.add_campaign(&r.id, types);
    }
    tx.put_campaign(&up.campaign)?;
    c.campaign_cache.remove(&up.campaign.id);
    if up.resumed {
        c.resumed.push((true, up.campaign.id));
    }
    c.out.campaigns += 1;
    Ok(())
}

/// The campaign's accounts a pick ranks (`rules::records::pick_account`): those that
/// exist and are not restricted, with their counters of the day they are ranked on.
fn candidates(c: &Ctx, camp: &Campaign) -> TxResult<Vec<Candidate>> {
    let mut out = Vec::with_capacity(camp.accounts.len());
    for id in &camp.accounts {
        let Some(account) = c.tx.account(id)? else {
            continue;
        };
        let Some(day) = records::candidate_day(&account, c.now) else {
            continue;
        };
        let reserved = c.tx.account_day(id, day)?.reserved;
        out.push(Candidate { account, reserved });
    }
    Ok(out)
}

fn apply_action(c: &mut Ctx, line: usize, r: &ActionRecord) -> TxResult<()> {
    let tx = c.tx;
    // A pruned id left a tombstone: it is a duplicate too, never new work.
    if tx.get_raw(super::ACTIONS, r.id.as_bytes())?.is_some()
        || tx.get_raw(LINKS, &codec::tombstone_key(&r.id))?.is_some()
    {
        c.out.duplicates += 1;
        return Ok(());
    }
    let camp = match c.campaign_cache.get(&r.campaign) {
        Some(camp) => camp.clone(),
        None => match tx.campaign(&r.campaign)? {
            Some(camp) => {
                c.campaign_cache.insert(camp.id.clone(), camp.clone());
                camp
            }
            None => return reject(line, "campaign", format!("unknown campaign `{}`", r.campaign)),
        },
    };
    let payload = match records::payload(r) {
        Ok(p) => p,
        Err(e) => return refuse(line, e),
    };
    let sticky = codec::sticky_key(&camp.id, &r.prospect);
    let stuck = if records::sticks(&camp) {
        tx.get_raw(LINKS, &sticky)?
    } else {
        None
    };
    let stuck_id = stuck.as_ref().map(|a| String::from_utf8_lossy(a));
    let account = match records::assign(r, stuck_id.as_deref()) {
        Assign::Named(a) => {
            if !c.known_accounts.contains(a) {
                if tx.account(a)?.is_none() {
                    return reject(line, "account", format!("unknown account `{a}`"));
                }
                c.known_accounts.insert(a.to_string());
            }
            a.to_string()
        }
        Assign::Stuck(a) => a.to_string(),
        Assign::Pick => {
            let candidates = candidates(c, &camp)?;
            match records::pick_account(&candidates, &camp, r.kind, &c.assigned, c.st, c.now) {
                Some(a) => a,
                None => return refuse(line, records::no_account(&camp)),
            }
        }
    };
    if records::links(&camp, stuck.is_some()) {
        tx.put_raw(LINKS, &sticky, account.as_bytes())?;
    }
    *c.assigned.entry((account.clone(), r.kind)).or_default() += 1;
    let seq = c.seqs.next().copied().unwrap_or(u64::MAX);
    tx.insert_action(&records::new_action(r, account, payload, seq, c.now))?;
    c.out.actions += 1;
    Ok(())
}

fn need_account(tx: &Tx, line: usize, id: &str) -> TxResult<Account> {
    match tx.account(id)? {
        Some(a) => Ok(a),
        None => reject(line, "account", format!("unknown account `{id}`")),
    }
}

fn need_action(tx: &Tx, line: usize, id: &str) -> TxResult<Action> {
    match tx.action(id)? {
        Some(a) => Ok(a),
        None => reject(line, "action", format!("unknown action `{id}`")),
    }
}

/// What a `Ctx` learns while applying records, carried from one chunk of a file to
/// the next (`ingest.rs`).
#[derive(Clone, Default)]
pub(super) struct Carry {
    assigned: BTreeMap<(String, Kind), u32>,
    pub(super) out: Applied,
    pub(super) resumed: Vec<(bool, String)>,
    campaign_cache: BTreeMap<String, Campaign>,
    known_accounts: std::collections::BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(tx: &'a Tx<'a>, st: &'a Settings, now: DateTime<Utc>, seqs: &'a [u64]) -> Ctx<'a> {
        Ctx::resume(tx, st, now, seqs, Carry::default())
    }

    /// A context that goes on from what earlier chunks of the same file learnt.
    pub(super) fn resume(
        tx: &'a Tx<'a>,
        st: &'a Settings,
        now: DateTime<Utc>,
        seqs: &'a [u64],
        carry: Carry,
    ) -> Ctx<'a> {
        Ctx {
            tx,
            st,
            now,
            assigned: carry.assigned,
            seqs: seqs.iter(),
            out: carry.out,
            resumed: carry.resumed,
            campaign_cache: carry.campaign_cache,
            known_accounts: carry.known_accounts,
        }
    }

    pub(super) fn into_carry(self) -> Carry {
        Carry {
            assigned: self.assigned,
            out: self.out,
            resumed: self.resumed,
            campaign_cache: self.campaign_cache,
            known_accounts: self.known_accounts,
        }
    }

    /// Apply one record of a job file.
    pub(super) fn record(&mut self, l: &Line<Record>) -> TxResult<()> {
        match &l.record {
            Record::Account(r) => apply_account(self, l.line, r),
            Record::Campaign(r) => apply_campaign(self, l.line, r),
            Record::Action(r) => apply_action(self, l.line, r),
            Record::Event(e) => apply_event(self, l.line, e).map(|_| ()),
        }
    }
}

/// The action a link of account `account` to a prospect names (`None`: no link).
fn linked(tx: &Tx, key: &[u8]) -> TxResult<Option<Action>> {
    match tx.get_raw(LINKS, key)? {
        Some(id) => tx.action(&String::from_utf8_lossy(&id)),
        None => Ok(None),
    }
}

/// Apply one event with the event rules (`rules::event`, SPEC §6), from a file or the
/// upstream's feed (SPEC §9). Returns whether it changed anything (false: an
/// acceptance of an invite never sent, a reply to no sent InMail or one already
/// refunded, and the like). An event naming an unknown account, campaign or action
/// refuses the record.
pub(super) fn apply_event(c: &mut Ctx, line: usize, e: &EventRecord) -> TxResult<bool> {
    let tx = c.tx;
    let (mut account_id, mut campaign_id, mut action_id, mut action_kind) = (None, None, None, None);
    let said = match e {
        EventRecord::InviteAccepted {
            account, prospect, ..
        } => {
            need_account(tx, line, account)?;
            // Acceptance feedback flows from now on: acceptance is judged, not unknown.
            super::reserve::mark_feedback_seen(tx)?;
            let invite = linked(tx, &codec::invite_key(account, prospect))?;
            let (acceptance, said) = event::accept(invite.as_ref());
            if let Some(acc) = acceptance {
                tx.put_action(&acc.action)?;
                let d = acc.count(tx.account_day(account, acc.day)?);
                tx.put_account_day(account, acc.day, &d)?;
            }
            action_id = invite.map(|a| a.id);
            account_id = Some(account.clone());
            said
        }
        EventRecord::ReplyReceived { to, .. } => {
            let action = match to {
                ReplyTo::Action(action) => Some(need_action(tx, line, action)?),
                ReplyTo::Prospect { account, prospect } => {
                    need_account(tx, line, account)?;
                    // The prospect's last InMail sent from that account, if any.
                    linked(tx, &codec::inmail_key(account, prospect))?
                }
            };
            let account = match &action {
                Some(a) if event::refundable(a) => tx.account(&a.account)?,
                _ => None,
            };
            let (refund, said) = event::reply(action.as_ref(), account, c.st);
            if let Some(r) = refund {
                if let Some(acct) = &r.account {
                    tx.put_account(acct)?;
                }
                tx.put_action(&r.action)?;
            }
            if let Some(a) = action {
                (account_id, campaign_id, action_id) = (Some(a.account), Some(a.campaign), Some(a.id));
            }
            said
        }
        EventRecord::AccountRestricted { account } | EventRecord::AccountResumed { account } => {
            let mut a = need_account(tx, line, account)?;
            let restricted = matches!(e, EventRecord::AccountRestricted { .. });
            let said = event::restriction(&mut a, restricted);
            let today = a.day_at(c.now);
            refresh_health(tx, &mut a, today, c.st, &mut c.out.changes)?;
            tx.put_account(&a)?;
            if !restricted {
                c.resumed.push((false, account.clone()));
            }
            account_id = Some(account.clone());
            said
        }
        EventRecord::TierChanged { account, tier } => {
            let mut a = need_account(tx, line, account)?;
            let said = event::tier(&mut a, *tier);
            tx.put_account(&a)?;
            account_id = Some(account.clone());
            said
        }
        EventRecord::CampaignPaused { campaign } | EventRecord::CampaignResumed { campaign } => {
            let Some(mut camp) = tx.campaign(campaign)? else {
                return reject(line, "campaign", format!("unknown campaign `{campaign}`"));
            };
            camp.paused = matches!(e, EventRecord::CampaignPaused { .. });
            let said = event::campaign_pause(camp.paused);
            tx.put_campaign(&camp)?;
            c.campaign_cache.remove(&camp.id);
            if !camp.paused {
                c.resumed.push((true, campaign.clone()));
            }
            campaign_id = Some(campaign.clone());
            said
        }
        EventRecord::CancelAction { action } | EventRecord::RequeueAction { action } => {
            let op = match e {
                EventRecord::CancelAction { .. } => super::Move::Cancel,
                _ => super::Move::Requeue,
            };
            let old = need_action(tx, line, action)?;
            let (new, said) = event::moved(op, &old, c.now);
            if let Some(new) = new {
                tx.transition(&old, &new, None)?;
            }
            (account_id, campaign_id, action_id, action_kind) = (
                Some(old.account),
                Some(old.campaign),
                Some(action.clone()),
                Some(old.kind),
            );
            said
        }
    };
    let effect = said.is_ok();
    c.out.effects.push(EventEffect {
        line,
        kind: event::kind(e),
        account: account_id,
        campaign: campaign_id,
        action: action_id,
        action_kind,
        result: said,
    });
    c.out.events += 1;
    Ok(effect)
}

/// `meta` key counting the start-ups that found job file `name` in `processing/`
/// without it being applied (SPEC §6, poison files).
pub(super) fn leftover_key(name: &str) -> Vec<u8> {
    [b"leftover/".as_slice(), name.as_bytes()].concat()
}

impl Store {
    /// A start-up found `name` in `processing/`: counts it, durably, and returns how
    /// many start-ups in a row have now found it there without it being applied (1 the
    /// first time). The transaction that applies the file clears the count.
    pub fn leftover_found(&self, name: &str) -> Result<u32, StoreError> {
        let key = leftover_key(name);
        let result = self.transact(|tx| {
            let starts = tx
                .get::<u32>(META, &key, "leftover count")?
                .unwrap_or(0)
                .saturating_add(1);
            tx.put(META, &key, &starts)?;
            Ok(starts)
        })?;
        let starts = result.map_err(|r| StoreError::Corrupt(r.reason))?;
        debug_assert!(starts >= 1);
        // Durable before the file is tried: a crash while trying it must count.
        self.make_durable()?;
        Ok(starts)
    }

    /// Forgets the start-up count of `name` (a file rejected or quarantined: it left
    /// `processing/` without being applied).
    pub fn forget_leftover(&self, name: &str) -> Result<(), StoreError> {
        let key = leftover_key(name);
        let result = self.transact(|tx| tx.del(META, &key))?;
        result.map_err(|r| StoreError::Corrupt(r.reason))
    }

    /// Whether a file of this name and content was applied.
    pub fn file_applied(&self, name: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        self.file_hash_applied(name, content_hash(bytes))
    }

    /// Whether a file of this name and content hash (`codec::content_hash`) was applied.
    pub fn file_hash_applied(&self, name: &str, hash: u64) -> Result<bool, StoreError> {
        self.op("read files")?;
        Ok(self.trees()?[FILES].contains_key(file_key(name, hash))?)
    }

    /// One bounded step of waking the actions parked until a time on a cap `raised`
    /// covers (`park::wake`): queued and due at once. Reads at most `WAKE_SCAN` keys of
    /// the `timed` index after `after` and moves at most `WAKE_BATCH` actions in one
    /// durable transaction. Returns the accounts that gained ready work and the key to
    /// go on after, `None` once the index was read to its end.
    pub fn wake_raised_step(
        &self,
        raised: &park::Raised,
        after: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
        if raised.is_empty() {
            return Ok((Vec::new(), None));
        }
        self.op("scan timed")?;
        let from = match after {
            Some(k) => std::ops::Bound::Excluded(k.to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut read = 0;
        let mut last = None;
        for k in self.trees()?[TIMED]
            .range((from, std::ops::Bound::Unbounded))
            .keys()
        {
            let k = k?;
            read += 1;
            last = Some(k.to_vec());
            let id = String::from_utf8_lossy(&k[8..]);
            if let Some(a) = self.action(&id)? {
                if park::wake(&a, raised, now).is_some() {
                    keys.push(k.to_vec());
                }
            }
            if keys.len() >= WAKE_BATCH || read >= WAKE_SCAN {
                break;
            }
        }
        let mut accounts = std::collections::BTreeSet::new();
        if !keys.is_empty() {
            let result = self.transact(|tx| {
                let mut woken = Vec::new();
                for k in &keys {
                    let id = String::from_utf8_lossy(&k[8..]);
                    let Some(old) = tx.action(&id)? else { continue };
                    let Some(a) = park::wake(&old, raised, now) else {
                        continue;
                    };
                    debug_assert!(a.until_ms.is_none() && a.state == State::Queued);
                    tx.transition(&old, &a, None)?;
                    woken.push(a.account);
                }
                tx.flush_counts()?;
                Ok(woken)
            })?;
            accounts.extend(result.map_err(|r| StoreError::Corrupt(r.reason))?);
            self.make_durable()?;
        }
        let done = keys.len() < WAKE_BATCH && read < WAKE_SCAN;
        Ok((accounts.into_iter().collect(), if done { None } else { last }))
    }

    /// `wake_raised_step` until the `timed` index was read to its end (the store alone,
    /// without an engine to step it: `Store::apply`).
    pub fn wake_raised(&self, raised: &park::Raised, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut accounts = Vec::new();
        let mut after = None;
        loop {
            let (woken, next) = self.wake_raised_step(raised, after.as_deref(), now)?;
            accounts.extend(woken);
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        accounts.sort();
        accounts.dedup();
        Ok(accounts)
    }

    /// Move actions parked on an event of `owner` (a campaign `c` or account `a`) back
    /// to the ready queue, in bounded batches.
    pub(super) fn release(&self, kind: &[u8], owner: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        const BATCH: usize = 1024;
        let prefix = codec::waiting_prefix(kind, owner);
        loop {
            self.op("scan waiting")?;
            let ids: Vec<String> = self.trees()?[WAITING]
                .scan_prefix(&prefix)
                .keys()
                .take(BATCH)
                .map(|k| k.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned()))
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(());
            }
            let result = self.transact(|tx| {
                for id in &ids {
                    tx.del(WAITING, &codec::waiting_key(kind, owner, id))?;
                    let Some(old) = tx.action(id)? else { continue };
                    let Some(a) = park::release(&old, now) else {
                        continue;
                    };
                    tx.transition(&old, &a, None)?;
                }
                tx.flush_counts()?;
                Ok(())
            })?;
            result.map_err(|r| StoreError::Corrupt(r.reason))?;
            self.make_durable()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenOptions;
    use chrono::NaiveTime;

    fn apply(store: &Store, name: &str, text: &str) -> ApplyOutcome {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        store.apply(name, text.as_bytes(), now).expect("apply")
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("time")
    }

    /// SPEC §6: fields left out of an upsert keep their value, inside `window`, `caps`
    /// and `cap_split` too.
    #[test]
    fn a_partial_upsert_keeps_what_it_leaves_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("store"),
            Settings::default(),
            OpenOptions::default(),
        )
        .expect("open");
        let first = concat!(
            r#"{"type":"account","id":"a1","window":{"days":["sat","sun"],"start":"10:00","end":"12:00"},"caps":{"invites":30,"messages":20}}"#,
            "\n",
            r#"{"type":"campaign","id":"c1","daily_limit":10,"cap_split":{"invites":5,"messages":6}}"#,
            "\n"
        );
        assert!(matches!(
            apply(&store, "1.jsonl", first),
            ApplyOutcome::Applied(_)
        ));
        let second = concat!(
            r#"{"type":"account","id":"a1","window":{"start":"08:00"},"caps":{"invites":40}}"#,
            "\n",
            r#"{"type":"campaign","id":"c1","cap_split":{"inmails":1}}"#,
            "\n"
        );
        assert!(matches!(
            apply(&store, "2.jsonl", second),
            ApplyOutcome::Applied(_)
        ));
        let a = store.account("a1").expect("read").expect("account");
        let weekend = [false, false, false, false, false, true, true];
        assert_eq!(
            (a.window.days, a.window.start, a.window.end),
            (weekend, hm(8, 0), hm(12, 0))
        );
        assert_eq!((a.caps.invites, a.caps.messages), (Some(40), Some(20)));
        let c = store.campaign("c1").expect("read").expect("campaign");
        assert_eq!(c.daily_limit, 10);
        assert_eq!(
            (c.split_invites, c.split_messages, c.split_inmails),
            (Some(5), Some(6), Some(1))
        );
        // A start after the stored end leaves an empty window: rejected, naming it.
        let third = r#"{"type":"account","id":"a1","window":{"start":"13:00"}}"#;
        match apply(&store, "3.jsonl", third) {
            ApplyOutcome::Rejected(r) => assert_eq!((r.line, r.field.as_str()), (1, "window.start")),
            other => panic!("expected a rejection, got {other:?}"),
        }
        let a = store.account("a1").expect("read").expect("account");
        assert_eq!(
            (a.window.start, a.window.end),
            (hm(8, 0), hm(12, 0)),
            "nothing applied"
        );
    }
}
