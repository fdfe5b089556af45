//! An in-process stand-in for etcd, for the deterministic simulation only (the real
//! etcd tests, tests/fleet.rs, are the proof). It keeps etcd v3's semantics that the
//! fleet relies on (see `kv`): one revision counter, create and mod revisions per key,
//! transactions that compare and then run one branch atomically, and leases that
//! expire `ttl` after their last renewal and delete their keys.
//!
//! Time is the caller's (virtual milliseconds). Partitions: a node cut off until an
//! instant gets an error for every call, as if etcd did not answer; a share of calls
//! can lose their answer after taking effect (a timeout after the commit). Every call yields
//! once before it is applied, so a driver polling several members' futures decides
//! how their transactions interleave.

use super::kv::{Compare, Connect, KeyValue, Kv, KvError, Millis, Op, Txn, TxnResponse};
use crate::policy::pacing::{Rng, SplitMix64};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    ttl_ms: u64,
    expires_ms: u64,
}

#[derive(Default)]
struct State {
    revision: i64,
    keys: BTreeMap<String, Entry>,
    leases: BTreeMap<i64, Lease>,
    next_lease: i64,
    /// Node -> cut off until this instant.
    cut: BTreeMap<String, u64>,
    /// Test only: transactions ignore their compares (a broken store).
    skip_compares: bool,
    expired: u64,
    /// Calls whose effect is applied but whose answer is lost, per ten thousand, and
    /// the source that decides which.
    lose_per_10k: u64,
    lose_state: u64,
    lost: u64,
}

/// The stand-in. Clones share one store.
#[derive(Clone)]
pub struct MemEtcd {
    state: Arc<Mutex<State>>,
    now: Millis,
}

impl MemEtcd {
    pub fn new(now: Millis) -> MemEtcd {
        MemEtcd {
            state: Arc::default(),
            now,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cut `node` off until `until_ms` (a later cut extends, never shortens, one).
    pub fn partition(&self, node: &str, until_ms: u64) {
        let mut s = self.lock();
        let u = s.cut.entry(node.to_string()).or_insert(0);
        *u = (*u).max(until_ms);
    }

    pub fn is_cut(&self, node: &str) -> bool {
        let now = (self.now)();
        self.lock().cut.get(node).is_some_and(|u| now < *u)
    }

    /// Test only: make every transaction succeed without checking its compares, to
    /// show that a judge of the fleet catches a store without compare-and-swap.
    pub fn skip_compares(&self, on: bool) {
        self.lock().skip_compares = on;
    }

    /// Lose the answer of `per_10k` calls in ten thousand after they took effect (a
    /// timeout after the commit), chosen by a source seeded with `seed`.
    pub fn lose_answers(&self, per_10k: u64, seed: u64) {
        let mut s = self.lock();
        s.lose_per_10k = per_10k;
        s.lose_state = seed;
    }

    /// How many answers were lost so far.
    pub fn answers_lost(&self) -> u64 {
        self.lock().lost
    }

    /// Expire the leases due at the caller's now (and delete their keys).
    pub fn expire(&self) {
        let now = (self.now)();
        self.lock().expire(now);
    }

    /// How many leases expired so far.
    pub fn expired(&self) -> u64 {
        self.lock().expired
    }

    /// How many leases the store holds now (after expiring).
    pub fn leases(&self) -> usize {
        let now = (self.now)();
        let mut s = self.lock();
        s.expire(now);
        s.leases.len()
    }

    /// The value of `key` and the lease it is under, if present (after expiring).
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        let now = (self.now)();
        let mut s = self.lock();
        s.expire(now);
        s.keys.get(key).map(|e| (e.value.clone(), e.lease))
    }

    /// A connector for `node`.
    pub fn connector(&self, node: &str) -> MemConnect {
        MemConnect {
            etcd: self.clone(),
            node: node.to_string(),
        }
    }

    /// Run `f` on the store for `node` at the caller's now, unless it is cut off.
    fn call<T>(
        &self,
        node: &str,
        f: impl FnOnce(&mut State, u64) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let now = (self.now)();
        let mut s = self.lock();
        if s.cut.get(node).is_some_and(|u| now < *u) {
            return Err(KvError(format!("{node} is cut off from the stand-in")));
        }
        s.expire(now);
        let r = f(&mut s, now)?;
        let mut roll = SplitMix64(s.lose_state);
        let lose = s.lose_per_10k > 0 && roll.between(0, 9999) < s.lose_per_10k;
        s.lose_state = roll.0;
        if lose {
            s.lost += 1;
            return Err(KvError("the answer was lost after the call took effect".into()));
        }
        Ok(r)
    }
}

impl State {
    fn expire(&mut self, now: u64) {
        let gone: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.expired += 1;
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: i64) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        let keys: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, e)| e.lease == id)
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            // etcd deletes a lease's keys in one revision.
            self.revision += 1;
        }
        for k in keys {
            self.keys.remove(&k);
        }
    }

    fn holds(&self, c: &Compare) -> bool {
        match c {
            Compare::Created(k, r) => self.keys.get(k).map_or(0, |e| e.create_revision) == *r,
            Compare::Modified(k, r) => self.keys.get(k).map_or(0, |e| e.mod_revision) == *r,
        }
    }

    fn txn(&mut self, t: Txn) -> Result<TxnResponse, KvError> {
        let succeeded = self.skip_compares || t.when.iter().all(|c| self.holds(c));
        let ops = if succeeded { t.then } else { t.otherwise };
        // Check before applying: a put under an unknown lease fails the whole
        // transaction, as in etcd.
        for o in &ops {
            if let Op::Put { lease: Some(l), .. } = o {
                if !self.leases.contains_key(l) {
                    return Err(KvError(format!("lease {l} not found")));
                }
            }
        }
        let writes = ops.iter().any(|o| matches!(o, Op::Put { .. }));
        if writes {
            self.revision += 1;
        }
        let rev = self.revision;
        let mut kvs = Vec::new();
        for o in ops {
            match o {
                Op::Get(k) => kvs.extend(self.keys.get(&k).map(|e| KeyValue {
                    key: k.clone(),
                    value: e.value.clone(),
                    mod_revision: e.mod_revision,
                    lease: e.lease,
                })),
                Op::Put { key, value, lease } => {
                    let create_revision = self.keys.get(&key).map_or(rev, |e| e.create_revision);
                    self.keys.insert(
                        key,
                        Entry {
                            value,
                            create_revision,
                            mod_revision: rev,
                            lease: lease.unwrap_or(0),
                        },
                    );
                }
            }
        }
        Ok(TxnResponse { succeeded, kvs })
    }
}

/// Ready on the second poll: one turn of the driver between a call and its effect.
struct Hop(bool);

impl Future for Hop {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

pub struct MemConnect {
    etcd: MemEtcd,
    node: String,
}

/// One node's connection to the stand-in.
pub struct MemKv {
    etcd: MemEtcd,
    node: String,
}

impl Connect for MemConnect {
    type Kv = MemKv;

    async fn connect(&mut self, _endpoint: usize) -> Result<MemKv, KvError> {
        Hop(false).await;
        self.etcd.call(&self.node, |_, _| Ok(()))?;
        Ok(MemKv {
            etcd: self.etcd.clone(),
            node: self.node.clone(),
        })
    }
}

impl Kv for MemKv {
    async fn txn(&mut self, t: Txn) -> Result<TxnResponse, KvError> {
        Hop(false).await;
        self.etcd.call(&self.node, |s, _| s.txn(t))
    }

    async fn grant(&mut self, ttl_s: i64) -> Result<i64, KvError> {
        Hop(false).await;
        self.etcd.call(&self.node, |s, now| {
            s.next_lease += 1;
            let ttl_ms = u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000);
            s.leases.insert(
                s.next_lease,
                Lease {
                    ttl_ms,
                    expires_ms: now.saturating_add(ttl_ms),
                },
            );
            Ok(s.next_lease)
        })
    }

    async fn keep_alive(&mut self, lease: i64) -> Result<i64, KvError> {
        Hop(false).await;
        self.etcd.call(&self.node, |s, now| {
            Ok(match s.leases.get_mut(&lease) {
                Some(l) => {
                    l.expires_ms = now.saturating_add(l.ttl_ms);
                    (l.ttl_ms / 1000) as i64
                }
                None => 0,
            })
        })
    }

    async fn revoke(&mut self, lease: i64) -> Result<(), KvError> {
        Hop(false).await;
        self.etcd.call(&self.node, |s, _| {
            s.drop_lease(lease);
            Ok(())
        })
    }
}

/// Poll `f` to completion on this thread (the stand-in's calls need no runtime).
pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Poll `futures` to completion on this thread, `pick(n)` choosing which of the `n`
/// still running goes next: the simulation's scheduler (no runtime, no timers).
pub fn run_interleaved<'a>(
    mut futures: Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>,
    pick: &mut dyn FnMut(usize) -> usize,
) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while !futures.is_empty() {
        let i = pick(futures.len()) % futures.len();
        if futures[i].as_mut().poll(&mut cx).is_ready() {
            drop(futures.swap_remove(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn world() -> (Arc<AtomicU64>, MemEtcd) {
        let t = Arc::new(AtomicU64::new(0));
        let t2 = Arc::clone(&t);
        (t, MemEtcd::new(Arc::new(move || t2.load(Ordering::SeqCst))))
    }

    #[test]
    fn create_only_and_revision_compares_behave_like_etcd() {
        let (_, etcd) = world();
        let mut kv = block_on(etcd.connector("a").connect(0)).expect("connect");
        let own = |node: &str| Txn {
            when: vec![Compare::Created("o".into(), 0)],
            then: vec![Op::put("o", node, None)],
            otherwise: vec![Op::Get("o".into())],
        };
        assert!(block_on(kv.txn(own("a"))).expect("txn").succeeded);
        let r = block_on(kv.txn(own("b"))).expect("txn");
        assert!(!r.succeeded);
        assert_eq!(r.kvs[0].value, b"a");
        // A stale mod revision fails; the current one passes.
        let rev = r.kvs[0].mod_revision;
        let put = |rev| Txn {
            when: vec![Compare::Modified("o".into(), rev)],
            then: vec![Op::put("o", "c", None)],
            otherwise: vec![],
        };
        assert!(!block_on(kv.txn(put(rev - 1))).expect("txn").succeeded);
        assert!(block_on(kv.txn(put(rev))).expect("txn").succeeded);
        assert!(
            !block_on(kv.txn(put(rev))).expect("txn").succeeded,
            "the put moved it"
        );
        // An absent key compares as revision 0.
        assert!(
            block_on(kv.txn(Txn {
                when: vec![Compare::Modified("absent".into(), 0)],
                ..Txn::default()
            }))
            .expect("txn")
            .succeeded
        );
    }

    #[test]
    fn leases_expire_and_take_their_keys_and_cut_nodes_get_errors() {
        let (t, etcd) = world();
        let mut kv = block_on(etcd.connector("a").connect(0)).expect("connect");
        let lease = block_on(kv.grant(10)).expect("grant");
        let put = Txn {
            then: vec![Op::put("k", "v", Some(lease))],
            ..Txn::default()
        };
        assert!(block_on(kv.txn(put.clone())).expect("txn").succeeded);
        t.store(9_000, Ordering::SeqCst);
        assert_eq!(block_on(kv.keep_alive(lease)), Ok(10));
        t.store(18_999, Ordering::SeqCst);
        assert!(etcd.get("k").is_some(), "renewed at 9 s, due at 19 s");
        etcd.partition("a", 40_000);
        assert!(block_on(kv.keep_alive(lease)).is_err());
        assert!(block_on(etcd.connector("a").connect(0)).is_err());
        t.store(19_000, Ordering::SeqCst);
        assert_eq!(etcd.get("k"), None, "the lease expired with its key");
        t.store(40_000, Ordering::SeqCst);
        assert_eq!(block_on(kv.keep_alive(lease)), Ok(0), "gone");
        assert!(block_on(kv.txn(put)).is_err(), "a put under a gone lease fails");
        assert_eq!(etcd.expired(), 1);
    }

    #[test]
    fn a_lost_answer_still_took_effect() {
        let (_, etcd) = world();
        etcd.lose_answers(10_000, 7);
        let mut kv = MemKv {
            etcd: etcd.clone(),
            node: "a".into(),
        };
        let put = Txn {
            then: vec![Op::put("k", "v", None)],
            ..Txn::default()
        };
        assert!(block_on(kv.txn(put)).is_err());
        assert_eq!(etcd.get("k"), Some((b"v".to_vec(), 0)));
        assert_eq!(etcd.answers_lost(), 1);
    }

    #[test]
    fn the_driver_decides_how_calls_interleave() {
        let (_, etcd) = world();
        let order = Arc::new(Mutex::new(Vec::new()));
        let futs: Vec<Pin<Box<dyn Future<Output = ()>>>> = ["a", "b"]
            .into_iter()
            .map(|n| {
                let (etcd, order) = (etcd.clone(), Arc::clone(&order));
                Box::pin(async move {
                    let mut kv = etcd.connector(n).connect(0).await.expect("connect");
                    let r = kv
                        .txn(Txn {
                            then: vec![Op::Get("x".into())],
                            ..Txn::default()
                        })
                        .await
                        .expect("txn");
                    order.lock().expect("lock").push((n, r.kvs.len()));
                }) as Pin<Box<dyn Future<Output = ()>>>
            })
            .collect();
        // Always the last one first: b runs to its end before a.
        run_interleaved(futs, &mut |n| n - 1);
        assert_eq!(*order.lock().expect("lock"), vec![("b", 0), ("a", 0)]);
    }
}
