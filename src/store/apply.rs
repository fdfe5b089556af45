//! The job-file record rules (SPEC §6): what each record does to the store, through a
//! `Tx`. `ingest.rs` runs them chunk by chunk, all or nothing per file.

use super::codec::{self, content_hash, file_key, ms};
use super::records::{Account, AccountCaps, Action, Campaign, State};
use super::reserve::{refresh_health, Change};
use super::tx::{reject, Tx, TxResult};
use super::{Settings, Store, StoreError, FILES, LINKS, META, WAITING};
use crate::contract::jobfile::{
    AccountRecord, ActionRecord, CampaignRecord, EventRecord, Line, Record, ReplyTo,
};
use crate::contract::CampaignStatus;
use crate::policy::caps::{red_zone, Budget, Counter};
use crate::policy::window::local_day;
use crate::policy::{credits, ramp, Health, Kind, Tier};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Largest payload accepted, as JSON text: payloads travel in every attempt and stay
/// in the store until pruned.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

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

fn apply_account(c: &mut Ctx, line: usize, r: &AccountRecord) -> TxResult<()> {
    let tx = c.tx;
    let policy = &c.st.policy;
    let existing = tx.account(&r.id)?;
    let is_new = existing.is_none();
    let mut a = match existing {
        Some(a) => a,
        None => {
            let tz = r.timezone.unwrap_or(chrono_tz::UTC);
            let today = local_day(tz, c.now);
            let tier = r.tier.unwrap_or(Tier::Free);
            Account {
                id: r.id.clone(),
                tier,
                timezone: tz.name().to_string(),
                window: Default::default(),
                ramp_start: today,
                established: false,
                proxy: None,
                caps: AccountCaps::default(),
                credits: policy.tier(tier).inmail_credits,
                refill_day: 1,
                last_refill_ms: ms(c.now),
                ramp_ceiling: 0,
                ramp_history: Vec::new(),
                last_reserved_ms: None,
                ramp_steps: 0,
                health: Health::Healthy,
                restricted: false,
                held_until_ms: None,
                maintained_day: today,
                pending_zone: None,
                summarised_day: today.pred_opt(),
            }
        }
    };
    if let Some(t) = r.tier {
        a.tier = t;
    }
    if let (Some(tz), false) = (r.timezone, is_new) {
        // Never a second day over the same hours: the new zone waits for the end of
        // the current local day (`policy::zone`).
        a.set_zones(a.zones().change(tz, c.now));
    }
    if let Some(patch) = &r.window {
        // Parts of the window left out keep their stored value (SPEC §6).
        a.window = match patch.apply(a.window) {
            Ok(w) => w,
            Err(e) => return reject(line, &e.field, e.reason),
        };
    }
    if let Some(p) = &r.proxy {
        a.proxy = Some(p.clone());
    }
    if let Some(d) = r.inmail_refill_day {
        a.refill_day = d;
    }
    if let Some(caps) = &r.caps {
        let before = a.caps;
        a.caps.merge(caps);
        for (counter, v, was) in [
            (Counter::Invites, caps.invites, before.invites),
            (Counter::Messages, caps.messages, before.messages),
            (Counter::Inmails, caps.inmails, before.inmails),
            (Counter::Engagement, caps.engagement, before.engagement),
        ] {
            // Once per value: re-sending the same record does not log it again.
            if let Some(v) = v.filter(|&v| red_zone(counter, v) && Some(v) != was) {
                c.out.changes.push(Change::RedZone {
                    account: Some(a.id.clone()),
                    counter: counter.as_str(),
                    value: v,
                });
            }
        }
    }
    if r.tier.is_some() && is_new && r.inmail_credits.is_none() {
        a.credits = policy.tier(a.tier).inmail_credits;
    }
    if let Some(n) = r.inmail_credits {
        a.credits = n;
    }
    let today = a.day_at(c.now);
    if let Some(d) = r.ramp_start {
        a.ramp_start = d;
    }
    if is_new || r.ramp_start.is_some() {
        // Boundaries before today count as evaluated: a ramp starts where it is told,
        // it does not jump several steps at once.
        a.ramp_steps = ramp::boundaries_passed(
            i64::from(codec::day_num(a.ramp_start)),
            i64::from(codec::day_num(today)),
        );
    }
    if let Some(e) = r.established {
        a.established = e;
    }
    let target = a.invite_target(policy);
    if is_new {
        a.set_ramp_ceiling(today, ramp::initial_ceiling(target, policy.ramp, a.established));
    } else if r.established == Some(true) && target > a.ramp_ceiling {
        c.out.changes.push(Change::RampChanged {
            account: a.id.clone(),
            old: a.ramp_ceiling,
            new: target,
            reason: "established",
        });
        a.set_ramp_ceiling(today, target);
    }
    if is_new {
        // Judged from the start, not at its first day turn: while acceptance feedback
        // is unknown a new account reads `watch`, "no acceptance feedback" (SPEC §3.4).
        let signals = super::reserve::signals(tx, &a, today)?;
        a.health = crate::policy::health::assess(signals, &policy.health).health;
    }
    tx.put_account(&a)?;
    c.out.accounts += 1;
    Ok(())
}

fn apply_campaign(c: &mut Ctx, line: usize, r: &CampaignRecord) -> TxResult<()> {
    let tx = c.tx;
    let mut camp = match tx.campaign(&r.id)? {
        Some(camp) => camp,
        None => {
            let Some(limit) = r.daily_limit else {
                return reject(line, "daily_limit", "a new campaign needs a daily_limit");
            };
            Campaign {
                id: r.id.clone(),
                timezone: "UTC".into(),
                daily_limit: limit,
                split_invites: None,
                split_messages: None,
                split_inmails: None,
                accounts: Vec::new(),
                paused: false,
            }
        }
    };
    if let Some(tz) = r.timezone {
        camp.timezone = tz.name().to_string();
    }
    if let Some(l) = r.daily_limit {
        camp.daily_limit = l;
    }
    if let Some(s) = &r.cap_split {
        camp.merge_split(s);
    }
    if let Some(list) = &r.accounts {
        for (i, a) in list.iter().enumerate() {
            if tx.account(a)?.is_none() {
                return reject(line, &format!("accounts.{i}"), format!("unknown account `{a}`"));
            }
        }
        camp.accounts = list.clone();
    }
    let was_paused = camp.paused;
    if let Some(s) = r.status {
        camp.paused = s == CampaignStatus::Paused;
    }
    tx.put_campaign(&camp)?;
    c.campaign_cache.remove(&camp.id);
    if was_paused && !camp.paused {
        c.resumed.push((true, camp.id.clone()));
    }
    c.out.campaigns += 1;
    Ok(())
}

/// Pick the campaign account with the most remaining budget today for `kind`
/// (less what this file already assigned it); ties go to the first listed. Only
/// accounts that can send are candidates (`Account::can_send`: not restricted, not
/// held); when none can, a held one (its hold ends by itself); `None` when every
/// account is restricted.
fn pick_account(c: &mut Ctx, camp: &Campaign, kind: Kind) -> TxResult<Option<String>> {
    // (can send, remaining budget, id): the best is the largest by the first two.
    let mut best: Option<(bool, u32, String)> = None;
    for id in &camp.accounts {
        let Some(a) = c.tx.account(id)? else { continue };
        if a.restricted {
            continue;
        }
        let today = a.day_at(c.now);
        let budget = Budget {
            limits: a.limits(&c.st.policy, camp.limits(), today),
            day: c.tx.account_day(id, today)?.reserved,
            week_invites: 0,
            credits: a.credits,
            campaign_day: Default::default(),
        };
        let taken = c.assigned.get(&(id.clone(), kind)).copied().unwrap_or(0);
        let left = budget.remaining(kind).saturating_sub(taken);
        let rank = (a.can_send(c.now), left);
        if best.as_ref().is_none_or(|(s, l, _)| rank > (*s, *l)) {
            best = Some((rank.0, rank.1, id.clone()));
        }
    }
    Ok(best.map(|(_, _, id)| id))
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
    let payload = r.payload.to_string();
    if payload.len() > MAX_PAYLOAD_BYTES {
        return reject(line, "payload", format!("larger than {MAX_PAYLOAD_BYTES} bytes"));
    }
    // A prospect stays on its account for the campaign (SPEC §2); that only matters
    // where the worker may pick accounts, i.e. where the campaign lists some.
    let sticky = codec::sticky_key(&camp.id, &r.prospect);
    let picks = !camp.accounts.is_empty();
    let stuck = if picks { tx.get_raw(LINKS, &sticky)? } else { None };
    let account = match (&r.account, &stuck) {
        (Some(a), _) => {
            if !c.known_accounts.contains(a) {
                if tx.account(a)?.is_none() {
                    return reject(line, "account", format!("unknown account `{a}`"));
                }
                c.known_accounts.insert(a.clone());
            }
            a.clone()
        }
        (None, Some(a)) => String::from_utf8_lossy(a).into_owned(),
        (None, None) => match pick_account(c, &camp, r.kind)? {
            Some(a) => a,
            None if camp.accounts.is_empty() => {
                return reject(line, "account", "no account given and the campaign lists none")
            }
            None => {
                return reject(
                    line,
                    "account",
                    format!(
                        "no account given and every account of campaign `{}` is restricted",
                        camp.id
                    ),
                )
            }
        },
    };
    if picks && stuck.is_none() {
        tx.put_raw(LINKS, &sticky, account.as_bytes())?;
    }
    *c.assigned.entry((account.clone(), r.kind)).or_default() += 1;
    let seq = c.seqs.next().copied().unwrap_or(u64::MAX);
    let action = Action {
        id: r.id.clone(),
        campaign: r.campaign.clone(),
        account,
        kind: r.kind,
        prospect: r.prospect.clone(),
        payload,
        priority: r.priority,
        seq,
        state: State::Queued,
        attempts: 0,
        retries: 0,
        reason: None,
        until_ms: r.not_before.filter(|t| *t > c.now).map(ms),
        updated_ms: ms(c.now),
        sent_day: None,
        accepted: false,
        refunded: false,
    };
    tx.insert_action(&action)?;
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

/// Return the InMail credit of a sent InMail on a reply, once per action (SPEC §3.5):
/// true when it did.
fn refund_reply(tx: &Tx, st: &Settings, mut a: Action) -> TxResult<bool> {
    if a.kind != Kind::Inmail || a.state != State::Sent || a.refunded {
        return Ok(false);
    }
    if let Some(mut acct) = tx.account(&a.account)? {
        let ceiling = st.policy.tier(acct.tier).inmail_ceiling;
        acct.credits = credits::refund(acct.credits, ceiling);
        tx.put_account(&acct)?;
    }
    a.refunded = true;
    tx.put_action(&a)?;
    Ok(true)
}

/// Apply one event with the job-file rules (SPEC §6), from a file or the upstream's
/// feed (SPEC §9). Returns whether it changed anything (false: an acceptance of an
/// invite never sent, a reply to no sent InMail or one already refunded, and the like).
pub(super) fn apply_event(c: &mut Ctx, line: usize, e: &EventRecord) -> TxResult<bool> {
    let tx = c.tx;
    let st = c.st;
    let mut effect = true;
    // What the log says the record did (SPEC §6), or why it changed nothing.
    let (kind, done): (&'static str, String);
    let mut why = String::new();
    let (mut account_id, mut campaign_id, mut action_id, mut action_kind) = (None, None, None, None);
    match e {
        EventRecord::InviteAccepted {
            account, prospect, ..
        } => {
            need_account(tx, line, account)?;
            // Acceptance feedback flows from now on: acceptance is judged, not unknown.
            super::reserve::mark_feedback_seen(tx)?;
            effect = false;
            if let Some(id) = tx.get_raw(LINKS, &codec::invite_key(account, prospect))? {
                let id = String::from_utf8_lossy(&id).into_owned();
                if let Some(mut a) = tx.action(&id)? {
                    if let (false, Some(day)) = (a.accepted, a.sent_day) {
                        effect = true;
                        a.accepted = true;
                        tx.put_action(&a)?;
                        let mut d = tx.account_day(account, day)?;
                        d.invites_accepted += 1;
                        tx.put_account_day(account, day, &d)?;
                    }
                    action_id = Some(id);
                }
            }
            kind = "invite_accepted";
            account_id = Some(account.clone());
            done = "the acceptance was counted".into();
            why = "no sent invite to this prospect from this account, or it was accepted before".into();
        }
        EventRecord::ReplyReceived { to, .. } => {
            let action = match to {
                ReplyTo::Action(action) => Some(need_action(tx, line, action)?),
                ReplyTo::Prospect { account, prospect } => {
                    need_account(tx, line, account)?;
                    // The prospect's last InMail sent from that account, if any.
                    match tx.get_raw(LINKS, &codec::inmail_key(account, prospect))? {
                        Some(id) => tx.action(&String::from_utf8_lossy(&id))?,
                        None => None,
                    }
                }
            };
            if let Some(a) = &action {
                (account_id, campaign_id, action_id) = (
                    Some(a.account.clone()),
                    Some(a.campaign.clone()),
                    Some(a.id.clone()),
                );
            }
            effect = match action {
                Some(a) => refund_reply(tx, st, a)?,
                None => false,
            };
            kind = "reply_received";
            done = "the InMail credit was returned".into();
            why = "no sent InMail whose credit is still out".into();
        }
        EventRecord::AccountRestricted { account } | EventRecord::AccountResumed { account } => {
            let mut a = need_account(tx, line, account)?;
            let restricted = matches!(e, EventRecord::AccountRestricted { .. });
            effect = a.restricted != restricted;
            a.restricted = restricted;
            let today = a.day_at(c.now);
            refresh_health(tx, &mut a, today, st, &mut c.out.changes)?;
            tx.put_account(&a)?;
            if !restricted {
                c.resumed.push((false, account.clone()));
            }
            account_id = Some(account.clone());
            (kind, done, why) = if restricted {
                (
                    "account_restricted",
                    "the account sends nothing until account_resumed".into(),
                    "already restricted".into(),
                )
            } else {
                (
                    "account_resumed",
                    "the account sends again".into(),
                    "not restricted".into(),
                )
            };
        }
        EventRecord::TierChanged { account, tier } => {
            let mut a = need_account(tx, line, account)?;
            done = format!("tier {} -> {}", a.tier.as_str(), tier.as_str());
            a.tier = *tier;
            tx.put_account(&a)?;
            (kind, account_id) = ("tier_changed", Some(account.clone()));
        }
        EventRecord::CampaignPaused { campaign } | EventRecord::CampaignResumed { campaign } => {
            let Some(mut camp) = tx.campaign(campaign)? else {
                return reject(line, "campaign", format!("unknown campaign `{campaign}`"));
            };
            camp.paused = matches!(e, EventRecord::CampaignPaused { .. });
            tx.put_campaign(&camp)?;
            c.campaign_cache.remove(&camp.id);
            if !camp.paused {
                c.resumed.push((true, campaign.clone()));
            }
            campaign_id = Some(campaign.clone());
            (kind, done) = if camp.paused {
                (
                    "campaign_paused",
                    "the campaign sends nothing until campaign_resumed".into(),
                )
            } else {
                ("campaign_resumed", "the campaign sends again".into())
            };
        }
        EventRecord::CancelAction { action } | EventRecord::RequeueAction { action } => {
            // The same rules as the operator's `cancel` / `requeue` (SPEC §5, §6, §8).
            let op;
            (op, kind) = match e {
                EventRecord::CancelAction { .. } => (super::Move::Cancel, "cancel_action"),
                _ => (super::Move::Requeue, "requeue_action"),
            };
            let old = need_action(tx, line, action)?;
            effect = op.movable(old.state);
            if effect {
                tx.transition(&old, &op.apply(&old, c.now), None)?;
            }
            done = kind.to_string();
            why = op.refusal(old.state);
            (account_id, campaign_id, action_id, action_kind) = (
                Some(old.account),
                Some(old.campaign),
                Some(action.clone()),
                Some(old.kind),
            );
        }
    }
    c.out.effects.push(EventEffect {
        line,
        kind,
        account: account_id,
        campaign: campaign_id,
        action: action_id,
        action_kind,
        result: if effect { Ok(done) } else { Err(why) },
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
        Ok(self.trees[FILES].contains_key(file_key(name, hash))?)
    }

    /// Move actions parked on an event of `owner` (a campaign `c` or account `a`) back
    /// to the ready queue, in bounded batches.
    pub(super) fn release(&self, kind: &[u8], owner: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        const BATCH: usize = 1024;
        let prefix = codec::waiting_prefix(kind, owner);
        loop {
            self.op("scan waiting")?;
            let ids: Vec<String> = self.trees[WAITING]
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
                    if old.state != State::Parked || old.until_ms.is_some() {
                        continue;
                    }
                    let mut a = old.clone();
                    a.state = State::Queued;
                    a.reason = None;
                    a.updated_ms = ms(now);
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
