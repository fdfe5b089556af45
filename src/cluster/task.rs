//! The fleet's etcd logic: `Member` owns the connection, the worker's lease (kept alive
//! every `ttl / 6`), the accounts it owns, and runs the claims the engine asks for, one
//! at a time. It tells the engine what happened through a callback that posts into the
//! engine's inbox; the engine never waits on it. It reaches the store through
//! `kv::Connect`: in the daemon one task on the send runtime runs it over etcd
//! (`spawn`); the simulation drives it over the stand-in on virtual time.
//!
//! Fail closed (SPEC §12): every claim is refused (`Verdict::Retry`) while the lease is
//! not fresh (`plan::Freshness`), and every claim transaction compares the owner keys'
//! revisions, so a lease that expired in between fails the transaction in etcd itself.

use super::kv::{Compare, Connect, EtcdConnect, Kv, KvError, Millis, Op, Txn};
use super::plan::{self, Freshness};
use super::{Claim, ClusterConfig, Draw, Notice, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Compare-and-swap rounds for one transaction before the claim is answered `Retry`.
const MAX_CAS_ROUNDS: usize = 8;
/// Accounts tried for ownership per pass.
const MAX_OWNER_TRIES_PER_PASS: usize = 256;
/// How long a retention lease is put under after its grant (then a new one is).
const RETENTION_REUSE_MS: u64 = 86_400_000;
/// Requests waiting for the task (the engine sends one claim at a time).
const QUEUE: usize = 16;

pub enum Request {
    Claim(Claim),
    /// The accounts this worker has work for: it tries to own each.
    Want(BTreeSet<String>),
    /// Release every account (revoke the lease) and stop; the sender hears when done.
    Stop(std::sync::mpsc::SyncSender<()>),
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Request>,
}

impl Handle {
    /// Queue a request; `false` when the task's queue is full or gone (the caller
    /// treats it as "no answer", and tries again later).
    pub fn send(&self, r: Request) -> bool {
        self.tx.try_send(r).is_ok()
    }
}

/// The time limit of one etcd call.
fn call_timeout(ttl_s: u64) -> Duration {
    Duration::from_millis((ttl_s * 1000 / 4).max(200))
}

/// Start the task on `runtime`, over etcd. `notify` posts a notice to the engine.
pub fn spawn(
    runtime: &tokio::runtime::Runtime,
    cfg: &ClusterConfig,
    retention_days: u32,
    notify: Arc<dyn Fn(Notice) + Send + Sync>,
) -> Handle {
    let (tx, rx) = mpsc::channel(QUEUE);
    let connect = EtcdConnect {
        endpoints: cfg.endpoints.clone(),
        limit: call_timeout(cfg.lease_ttl_s),
    };
    let started = Instant::now();
    let clock: Millis = Arc::new(move || started.elapsed().as_millis() as u64);
    let m = Member::new(connect, cfg, retention_days, clock, notify);
    runtime.spawn(m.run(rx));
    Handle { tx }
}

struct Conn<K> {
    kv: K,
    lease: i64,
    /// Counters and action keys live under this long lease (`retention_days` + 1 day),
    /// so etcd forgets them after the store does.
    retention: i64,
}

/// One worker's membership of the fleet: its lease, the accounts it owns, its claims.
/// Generic over how it reaches the store (`kv::Connect`): etcd in the daemon, the
/// stand-in (`standin::MemEtcd`) in the simulation. Time is the caller's `clock`.
pub struct Member<C: Connect> {
    connector: C,
    node: String,
    prefix: String,
    ttl_s: u64,
    retention_s: i64,
    fresh: Freshness,
    clock: Millis,
    conn: Option<Conn<C::Kv>>,
    /// The index (modulo their number) of the endpoint to connect to.
    endpoint: usize,
    /// The lease of the last connection: kept on reconnect while etcd still has it
    /// (an etcd restart keeps leases), so the accounts under it stay ours.
    last_lease: Option<i64>,
    /// The retention lease and when it was granted (this member's clock).
    retention: Option<(i64, u64)>,
    owned: BTreeSet<String>,
    /// Accounts seen held by another worker, and by whom (logged once per change).
    elsewhere: BTreeMap<String, String>,
    wanted: BTreeSet<String>,
    up: Option<bool>,
    notify: Arc<dyn Fn(Notice) + Send + Sync>,
}

type KvResult<T> = Result<T, KvError>;

impl<C: Connect> Member<C> {
    pub fn new(
        connector: C,
        cfg: &ClusterConfig,
        retention_days: u32,
        clock: Millis,
        notify: Arc<dyn Fn(Notice) + Send + Sync>,
    ) -> Member<C> {
        Member {
            connector,
            node: cfg.node_name(),
            prefix: cfg.prefix.clone(),
            ttl_s: cfg.lease_ttl_s,
            retention_s: (i64::from(retention_days) + 1) * 86_400,
            fresh: Freshness::new(cfg.lease_ttl_s),
            clock,
            conn: None,
            endpoint: 0,
            last_lease: None,
            retention: None,
            owned: BTreeSet::new(),
            elsewhere: BTreeMap::new(),
            wanted: BTreeSet::new(),
            up: None,
            notify,
        }
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// How often `maintain` is due (the lease's renewal period).
    pub fn renew_every_ms(&self) -> u64 {
        self.fresh.renew_every_ms()
    }

    /// The accounts owned now.
    pub fn owned(&self) -> &BTreeSet<String> {
        &self.owned
    }

    /// The lease this member holds (or last held), if any.
    pub fn lease(&self) -> Option<i64> {
        self.last_lease
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let every = Duration::from_millis(self.fresh.renew_every_ms());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.maintain().await,
                r = rx.recv() => match r {
                    Some(Request::Claim(c)) => self.claim(c).await,
                    Some(Request::Want(w)) => self.want(w).await,
                    Some(Request::Stop(done)) => {
                        self.stop().await;
                        let _ = done.try_send(());
                        return;
                    }
                    None => {
                        self.stop().await;
                        return;
                    }
                },
            }
        }
    }

    /// Tell the engine (and the log) when dispatching may go on or must stop.
    fn report_up(&mut self, reason: &str) {
        let up = self.conn.is_some() && self.fresh.fresh(self.now_ms());
        if self.up == Some(up) {
            return;
        }
        if up {
            tracing::info!(event = "cluster_available", node = %self.node, owned = self.owned.len());
        } else {
            let reason = if reason.is_empty() {
                "the lease was not renewed in time"
            } else {
                reason
            };
            tracing::warn!(event = "cluster_unavailable", node = %self.node, reason = %reason);
        }
        self.up = Some(up);
        (self.notify)(Notice::Up(up));
    }

    /// Every `renew_every_ms`: connect, grant, renew; then try to own what is wanted.
    pub async fn maintain(&mut self) {
        if let Err(e) = self.renew().await {
            self.drop_conn();
            self.report_up(&format!("etcd: {e}"));
            return;
        }
        self.report_up("");
        self.take_ownership().await;
        self.report_up("");
    }

    /// The accounts this worker has work for: it tries to own each.
    pub async fn want(&mut self, wanted: BTreeSet<String>) {
        self.wanted = wanted;
        self.take_ownership().await;
        self.report_up("");
    }

    fn drop_conn(&mut self) {
        self.endpoint = self.endpoint.wrapping_add(1);
        if self.conn.take().is_some() {
            // Ownership lasts no longer than we can vouch for the lease: the engine
            // stops dispatching through `Up(false)`, and the owner keys are compared
            // again by every claim.
            self.fresh.lost();
        }
    }

    async fn renew(&mut self) -> KvResult<()> {
        let sent = self.now_ms();
        let Some(c) = self.conn.as_mut() else {
            let conn = self.connect().await?;
            self.conn = Some(conn);
            self.fresh.renewed(sent);
            return Ok(());
        };
        if c.kv.keep_alive(c.lease).await? > 0 {
            self.fresh.renewed(sent);
            Ok(())
        } else {
            // The lease is gone: every owner key under it went with it.
            self.release_all("lease expired");
            Err(KvError("lease expired".into()))
        }
    }

    async fn connect(&mut self) -> KvResult<Conn<C::Kv>> {
        let mut kv = self.connector.connect(self.endpoint).await?;
        let mut kept = None;
        if let Some(id) = self.last_lease {
            if kv.keep_alive(id).await? > 0 {
                kept = Some(id);
            }
        }
        let lease = match kept {
            Some(id) => id,
            None => {
                let lease = kv.grant(self.ttl_s as i64).await?;
                // A new lease owns nothing yet.
                self.release_all("lease expired");
                lease
            }
        };
        self.last_lease = Some(lease);
        // The retention lease of the last connection is kept for a day after its
        // grant (renewing it only lets its keys outlive the store a little longer),
        // so reconnects do not pile up month-long leases in etcd.
        let now = self.now_ms();
        let reuse = match self.retention {
            Some((id, granted)) if now.saturating_sub(granted) < RETENTION_REUSE_MS => {
                kv.keep_alive(id).await? > 0
            }
            _ => false,
        };
        let retention = match self.retention {
            Some((id, _)) if reuse => id,
            _ => {
                let id = kv.grant(self.retention_s).await?;
                self.retention = Some((id, now));
                id
            }
        };
        Ok(Conn { kv, lease, retention })
    }

    fn release_all(&mut self, why: &str) {
        for a in std::mem::take(&mut self.owned) {
            tracing::warn!(event = "account_released", account = %a, node = %self.node, reason = why);
            (self.notify)(Notice::Elsewhere {
                account: a,
                owner: None,
            });
        }
    }

    fn may_dispatch(&self) -> bool {
        self.conn.is_some() && self.fresh.fresh(self.now_ms())
    }

    /// Create-only: `<prefix>/owner/<account>` under our lease, for every wanted
    /// account not yet ours.
    async fn take_ownership(&mut self) {
        if !self.may_dispatch() {
            return;
        }
        let todo: Vec<String> = self
            .wanted
            .iter()
            .filter(|a| !self.owned.contains(*a))
            .take(MAX_OWNER_TRIES_PER_PASS)
            .cloned()
            .collect();
        for account in todo {
            if let Err(e) = self.try_own(&account).await {
                tracing::debug!(error = %e, "ownership attempt failed");
                return;
            }
        }
    }

    async fn try_own(&mut self, account: &str) -> KvResult<()> {
        let key = plan::owner_key(&self.prefix, account);
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        let skey = plan::state_key(&self.prefix, account);
        // The account's state is read in the same transaction that takes the owner
        // key: nothing can write it in between but an owner, and that is us now.
        let r =
            c.kv.txn(Txn {
                when: vec![Compare::Created(key.clone(), 0)],
                then: vec![
                    Op::put(key.clone(), self.node.clone(), Some(c.lease)),
                    Op::Get(skey.clone()),
                ],
                otherwise: vec![Op::Get(key.clone()), Op::Get(skey.clone())],
            })
            .await?;
        let mut holder = if r.succeeded { None } else { Some(String::new()) };
        let mut state = None;
        for kv in r.kvs {
            if kv.key == skey {
                state = Some(kv.value);
            } else if !r.succeeded {
                holder = if kv.lease == c.lease {
                    None // ours already
                } else {
                    Some(String::from_utf8_lossy(&kv.value).into_owned())
                };
            }
        }
        match holder {
            None => {
                self.elsewhere.remove(account);
                if !self.owned.contains(account) {
                    // Fail closed: a state this build cannot read is never guessed
                    // at; the account stays unowned here (and is held under our
                    // lease, so no other worker of this build sends for it either).
                    let state = match state.map(|v| plan::AccountState::decode(&skey, &v)).transpose() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(event = "account_state_unreadable", account = %account, error = %e);
                            return Ok(());
                        }
                    };
                    self.owned.insert(account.to_string());
                    tracing::info!(
                        event = "account_owned",
                        account = %account,
                        node = %self.node,
                        fleet_state = state.is_some(),
                        inmail_credits = state.as_ref().map(|s| s.credits),
                        ramp_ceiling = state.as_ref().map(|s| s.ramp_ceiling),
                    );
                    (self.notify)(Notice::Owned(account.to_string(), state));
                }
            }
            Some(owner) => {
                if self.elsewhere.get(account) != Some(&owner) {
                    tracing::info!(event = "account_elsewhere", account = %account, owner = %owner);
                    self.elsewhere.insert(account.to_string(), owner.clone());
                    (self.notify)(Notice::Elsewhere {
                        account: account.to_string(),
                        owner: Some(owner),
                    });
                }
            }
        }
        Ok(())
    }

    /// Claim a batch and tell the engine the verdicts (`Notice::Answer`).
    pub async fn claim(&mut self, c: Claim) {
        let answer = self.claim_draws(c.draws).await;
        (self.notify)(Notice::Answer(answer));
        self.report_up("");
    }

    /// Claim a batch: per transaction-sized chunk, read every key, decide (`plan::admit`),
    /// and write the new counts and the action keys in one transaction that compares
    /// every key's revision; on a lost race, read again.
    async fn claim_draws(&mut self, draws: Vec<Draw>) -> Vec<(Draw, Verdict)> {
        let mut verdicts = vec![Verdict::Retry; draws.len()];
        if self.may_dispatch() {
            for range in plan::chunks(&self.prefix, &draws) {
                match self.claim_chunk(&draws[range.clone()]).await {
                    Ok(Some(v)) => verdicts.splice(range, v).for_each(drop),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "claim failed");
                        self.drop_conn();
                        self.report_up(&format!("etcd: {e}"));
                        break;
                    }
                }
                if !self.may_dispatch() {
                    break;
                }
            }
        }
        for (d, v) in draws.iter().zip(&verdicts) {
            if *v == Verdict::NotOwned && self.owned.remove(&d.account) {
                tracing::warn!(event = "account_released", account = %d.account, node = %self.node, reason = "owner key lost");
                (self.notify)(Notice::Elsewhere {
                    account: d.account.clone(),
                    owner: None,
                });
            }
        }
        draws.into_iter().zip(verdicts).collect()
    }

    async fn claim_chunk(&mut self, batch: &[Draw]) -> KvResult<Option<Vec<Verdict>>> {
        let keys: BTreeSet<String> = batch
            .iter()
            .flat_map(|d| plan::keys_of(&self.prefix, d))
            .collect();
        let owner_prefix = plan::owner_prefix(&self.prefix);
        let state_prefix = plan::state_prefix(&self.prefix);
        let action_prefix = format!("{}/action/", self.prefix);
        for _ in 0..MAX_CAS_ROUNDS {
            if !self.may_dispatch() {
                return Ok(None);
            }
            let Some(c) = self.conn.as_mut() else {
                return Ok(None);
            };
            let read = Txn {
                then: keys.iter().map(|k| Op::Get(k.clone())).collect(),
                ..Txn::default()
            };
            let r = c.kv.txn(read).await?;
            let mut revs: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 0)).collect();
            let mut values = BTreeMap::new();
            let mut actions = BTreeMap::new();
            let mut mine = BTreeSet::new();
            let mut states = BTreeMap::new();
            for kv in r.kvs {
                let k = kv.key;
                revs.insert(k.clone(), kv.mod_revision);
                if k.starts_with(&owner_prefix) {
                    if kv.lease == c.lease {
                        mine.insert(k);
                    }
                } else if k.starts_with(&action_prefix) {
                    // Another node's key is a duplicate; ours is a retry of our claim
                    // (its answer lost, or a crash before the local commit): `admit`
                    // tells which.
                    actions.insert(k, kv.value);
                } else if k.starts_with(&state_prefix) {
                    let st = plan::AccountState::decode(&k, &kv.value).map_err(KvError)?;
                    states.insert(k, st);
                } else {
                    let v = plan::parse_count(&k, &kv.value).map_err(KvError)?;
                    values.insert(k, v);
                }
            }
            let prefix = self.prefix.clone();
            let owns = |a: &str| mine.contains(&plan::owner_key(&prefix, a));
            let plan::Admitted {
                verdicts,
                writes,
                states: new_states,
            } = plan::admit(&self.prefix, &self.node, batch, &values, &states, &actions, &owns);
            if !verdicts.contains(&Verdict::Claimed) {
                return Ok(Some(verdicts));
            }
            let when: Vec<Compare> = revs
                .iter()
                .map(|(k, rev)| Compare::Modified(k.clone(), *rev))
                .collect();
            let keep = Some(c.retention);
            let mut puts: Vec<Op> = writes
                .iter()
                .map(|(k, v)| Op::put(k.clone(), v.to_string(), keep))
                .collect();
            // The account's state lives as long as the account (no lease): a new
            // owner continues from it whenever it takes over.
            for (k, st) in &new_states {
                if states.get(k) != Some(st) {
                    puts.push(Op::put(k.clone(), st.encode(), None));
                }
            }
            for (d, v) in batch.iter().zip(&verdicts) {
                if *v == Verdict::Claimed {
                    puts.push(Op::put(
                        plan::action_key(&self.prefix, &d.action),
                        plan::action_value(&self.node, d),
                        keep,
                    ));
                }
            }
            debug_assert!(when.len() <= plan::MAX_TXN_OPS && puts.len() <= plan::MAX_TXN_OPS);
            let r =
                c.kv.txn(Txn {
                    when,
                    then: puts,
                    otherwise: Vec::new(),
                })
                .await?;
            if r.succeeded {
                return Ok(Some(verdicts));
            }
        }
        Ok(None)
    }

    /// A clean stop: revoke the lease, so the accounts pass to another worker at once.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.kv.revoke(c.lease).await;
        }
        self.last_lease = None;
        self.release_all("worker stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::standin::{block_on, MemEtcd};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A member over the stand-in, on a virtual clock.
    fn member(
        ttl_s: u64,
    ) -> (
        Arc<AtomicU64>,
        MemEtcd,
        Member<crate::cluster::standin::MemConnect>,
    ) {
        let t = Arc::new(AtomicU64::new(0));
        let (t1, t2) = (Arc::clone(&t), Arc::clone(&t));
        let etcd = MemEtcd::new(Arc::new(move || t1.load(Ordering::SeqCst)));
        let cfg = ClusterConfig {
            endpoints: vec!["http://stand-in:2379".into()],
            node: Some("w1".into()),
            prefix: "/t".into(),
            lease_ttl_s: ttl_s,
        };
        let m = Member::new(
            etcd.connector("w1"),
            &cfg,
            30,
            Arc::new(move || t2.load(Ordering::SeqCst)),
            Arc::new(|_| {}),
        );
        (t, etcd, m)
    }

    fn invite(action: &str) -> Draw {
        use crate::policy::caps::{CampaignLimits, Limits};
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 6).expect("a date");
        let until = chrono::DateTime::from_timestamp(1_772_841_600, 0).expect("an instant");
        Draw {
            action: action.into(),
            account: "a".into(),
            campaign: "q".into(),
            kind: crate::policy::Kind::Invite,
            account_day: day,
            campaign_day: day,
            limits: Limits {
                invites: 1000,
                messages: 1000,
                inmails: 1000,
                engagement: 1000,
                weekly_invites: None,
                campaign: CampaignLimits {
                    invites: 1000,
                    messages: 1000,
                    inmails: 1000,
                },
            },
            account_until: until,
            campaign_until: until,
            state: plan::AccountState {
                v: plan::STATE_VERSION,
                credits: 0,
                last_refill_ms: 0,
                ramp_ceiling: 1000,
                ramp_history: Vec::new(),
                ramp_steps: 0,
                health: crate::policy::Health::Healthy,
                restricted: false,
                held_until_ms: None,
            },
        }
    }

    /// etcd may commit a claim whose answer never comes back (a timeout during a leader
    /// election): the claim is tried again, and each action must be counted once. It was
    /// counted again on every retry, a wasted campaign slot per lost answer.
    #[test]
    fn a_claim_whose_answer_was_lost_is_counted_once() {
        let (_t, etcd, mut m) = member(60);
        etcd.lose_answers(2_500, 7);
        let wanted: BTreeSet<String> = ["a".to_string()].into();
        let mut claimed = 0u64;
        for i in 0..40 {
            let d = invite(&format!("x{i}"));
            let mut tries = 0;
            loop {
                tries += 1;
                assert!(tries < 200, "x{i} never claimed");
                block_on(m.maintain());
                block_on(m.want(wanted.clone()));
                let v = block_on(m.claim_draws(vec![d.clone()]));
                if v[0].1 == Verdict::Claimed {
                    claimed += 1;
                    break;
                }
                assert_eq!(v[0].1, Verdict::Retry, "x{i}");
            }
        }
        assert!(etcd.answers_lost() >= 10, "answers lost: {}", etcd.answers_lost());
        let count = |k: String| {
            let (v, _) = etcd.get(&k).unwrap_or_else(|| panic!("{k}"));
            String::from_utf8(v)
                .expect("text")
                .parse::<u64>()
                .expect("a count")
        };
        let d = invite("x0");
        let account = plan::account_key("/t", "a", d.account_day, crate::policy::caps::Counter::Invites);
        let campaign = plan::campaign_key(
            "/t",
            "q",
            d.campaign_day,
            crate::policy::caps::CampaignType::Invites,
        );
        assert_eq!((count(account), count(campaign)), (claimed, claimed));
    }

    /// Each reconnect used to grant a new retention lease (`retention_days` + 1 days)
    /// and never revoke the last one: a flapping link piled up leases in etcd for a
    /// month. A reconnect within a day keeps the one it has.
    #[test]
    fn reconnects_keep_the_retention_lease() {
        let (t, etcd, mut m) = member(60);
        block_on(m.maintain());
        assert!(m.may_dispatch());
        assert_eq!(etcd.leases(), 2, "the worker's lease and the retention lease");
        for _ in 0..5 {
            let now = t.load(Ordering::SeqCst);
            etcd.partition("w1", now + 15_000);
            t.store(now + 10_000, Ordering::SeqCst);
            block_on(m.maintain());
            assert!(!m.may_dispatch(), "cut off");
            t.store(now + 20_000, Ordering::SeqCst);
            block_on(m.maintain());
            assert!(m.may_dispatch(), "back");
        }
        assert_eq!(etcd.leases(), 2, "five reconnects, no new lease");
        // A day later, or once etcd lost it, a new one is granted.
        let now = t.load(Ordering::SeqCst);
        etcd.partition("w1", now + 5_000);
        block_on(m.maintain());
        t.store(86_400_000 + 10_000, Ordering::SeqCst);
        block_on(m.maintain());
        block_on(m.maintain());
        assert!(m.may_dispatch());
        assert_eq!(etcd.leases(), 3, "the old retention lease still holds old keys");
    }
}
