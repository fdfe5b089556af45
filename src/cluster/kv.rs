//! The seam between the fleet's logic (`task::Member`) and etcd: the few etcd v3 calls
//! it makes (one transaction shape, lease grant, renewal, revoke) as two traits.
//! `EtcdConnect` speaks to etcd through etcd-client (the daemon); `standin::MemEtcd`
//! implements the same semantics in process (the deterministic simulation only).
//!
//! Semantics both sides keep (etcd v3's):
//! - every write bumps the store's revision by one; a key's `mod_revision` is the
//!   revision of its last write, and an absent key compares as revision 0;
//! - a transaction checks every compare, then runs one branch whole, atomically;
//! - a key put under a lease is deleted when the lease expires or is revoked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The caller's monotonic clock, in milliseconds: real in the daemon, virtual in the
/// simulation. Lease decisions read only this.
pub type Millis = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One condition of a transaction, always `Equal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's create revision (0: absent).
    Created(String, i64),
    /// The key's mod revision (0: absent).
    Modified(String, i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        /// Deleted with this lease (`None`: kept until deleted).
        lease: Option<i64>,
    },
    Get(String),
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: Option<i64>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub when: Vec<Compare>,
    pub then: Vec<Op>,
    pub otherwise: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// The lease it was put under (0: none).
    pub lease: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// What the branch's `Get`s found, in order (an absent key adds nothing).
    pub kvs: Vec<KeyValue>,
}

/// No answer, or a refusal: the caller treats the connection as lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

/// A connection to the key-value store. Every call answers, or fails, within the
/// implementation's call time limit.
pub trait Kv: Send {
    fn txn(&mut self, t: Txn) -> impl Future<Output = Result<TxnResponse, KvError>> + Send;
    /// A new lease of `ttl_s` seconds; its id.
    fn grant(&mut self, ttl_s: i64) -> impl Future<Output = Result<i64, KvError>> + Send;
    /// Renew `lease`: its remaining TTL in seconds, 0 when the store no longer has it.
    fn keep_alive(&mut self, lease: i64) -> impl Future<Output = Result<i64, KvError>> + Send;
    fn revoke(&mut self, lease: i64) -> impl Future<Output = Result<(), KvError>> + Send;
}

/// How a member reaches the store: `endpoint` counts up after each failure (the
/// implementation picks `endpoint % n` of its endpoints).
pub trait Connect: Send {
    type Kv: Kv;
    fn connect(&mut self, endpoint: usize) -> impl Future<Output = Result<Self::Kv, KvError>> + Send;
}

// ---- etcd (etcd-client) ----

/// etcd's client URLs and the time limit of one call.
pub struct EtcdConnect {
    pub endpoints: Vec<String>,
    pub limit: Duration,
}

pub struct EtcdKv {
    client: etcd_client::Client,
    limit: Duration,
    /// The keep-alive stream of the lease being renewed (opened on first renewal).
    keeper: Option<(i64, etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
}

fn etcd_err(e: etcd_client::Error) -> KvError {
    KvError(e.to_string())
}

async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, KvError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(etcd_err),
        Err(_) => Err(KvError("etcd did not answer in time".into())),
    }
}

impl Connect for EtcdConnect {
    type Kv = EtcdKv;

    async fn connect(&mut self, endpoint: usize) -> Result<EtcdKv, KvError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.limit)
            .with_timeout(self.limit);
        // One member at a time, the next one after a failure: a dead member of a live
        // cluster costs one reconnect, not a failed request in every few (any live
        // member forwards to the leader).
        let e = &self.endpoints[endpoint % self.endpoints.len()];
        let client = within(
            self.limit * 2,
            etcd_client::Client::connect([e.as_str()], Some(opts)),
        )
        .await?;
        Ok(EtcdKv {
            client,
            limit: self.limit,
            keeper: None,
        })
    }
}

impl Kv for EtcdKv {
    async fn txn(&mut self, t: Txn) -> Result<TxnResponse, KvError> {
        use etcd_client::{Compare as C, CompareOp, PutOptions, TxnOp, TxnOpResponse};
        let op = |o: Op| match o {
            Op::Put { key, value, lease } => {
                TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
            }
            Op::Get(key) => TxnOp::get(key, None),
        };
        let when: Vec<C> = t
            .when
            .into_iter()
            .map(|c| match c {
                Compare::Created(k, r) => C::create_revision(k, CompareOp::Equal, r),
                Compare::Modified(k, r) => C::mod_revision(k, CompareOp::Equal, r),
            })
            .collect();
        let mut txn = etcd_client::Txn::new();
        if !when.is_empty() {
            txn = txn.when(when);
        }
        if !t.then.is_empty() {
            txn = txn.and_then(t.then.into_iter().map(op).collect::<Vec<_>>());
        }
        if !t.otherwise.is_empty() {
            txn = txn.or_else(t.otherwise.into_iter().map(op).collect::<Vec<_>>());
        }
        let r = within(self.limit, self.client.txn(txn)).await?;
        let mut kvs = Vec::new();
        for op in r.op_responses() {
            let TxnOpResponse::Get(g) = op else { continue };
            kvs.extend(g.kvs().iter().map(|kv| KeyValue {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            }));
        }
        Ok(TxnResponse {
            succeeded: r.succeeded(),
            kvs,
        })
    }

    async fn grant(&mut self, ttl_s: i64) -> Result<i64, KvError> {
        Ok(within(self.limit, self.client.lease_grant(ttl_s, None))
            .await?
            .id())
    }

    async fn keep_alive(&mut self, lease: i64) -> Result<i64, KvError> {
        if self.keeper.as_ref().is_none_or(|k| k.0 != lease) {
            let (keeper, stream) = within(self.limit, self.client.lease_keep_alive(lease)).await?;
            self.keeper = Some((lease, keeper, stream));
        }
        let Some((_, keeper, stream)) = self.keeper.as_mut() else {
            return Err(KvError("no keep-alive stream".into()));
        };
        let answer = within(self.limit, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await?;
        Ok(answer.map_or(0, |r| r.ttl()))
    }

    async fn revoke(&mut self, lease: i64) -> Result<(), KvError> {
        within(self.limit, self.client.lease_revoke(lease))
            .await
            .map(drop)
    }
}
