//! `sendgate audit --cluster` (SPEC §8, §12): this host's ledger totals against the
//! fleet's counters in etcd, for the days the ledger holds. Each fleet counter counts
//! every host's claims (and a wasted slot stays counted), so a host's total may be
//! below it, never above: a host above the fleet means the fleet undercounted and P1
//! cannot be vouched for over the fleet.

use super::plan::{self, MAX_TXN_OPS};
use super::ClusterConfig;
use crate::store::LedgerSum;
use etcd_client::{Client, ConnectOptions, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One counter compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Compared {
    pub key: String,
    pub local: u32,
    pub fleet: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterAudit {
    pub compared: usize,
    /// Counters where this host's ledger holds more than the fleet's counter.
    pub behind: Vec<Compared>,
}

/// The fleet key of a ledger total.
pub fn key_of(prefix: &str, s: &LedgerSum) -> String {
    format!(
        "{prefix}/count/{}/{}/{}/{}",
        s.owner,
        plan::esc(&s.id),
        s.day,
        s.counter
    )
}

/// PURE: compare the ledger's totals with the fleet's values (absent = 0).
pub fn compare(prefix: &str, sums: &[LedgerSum], fleet: &BTreeMap<String, u64>) -> ClusterAudit {
    let mut out = ClusterAudit::default();
    for s in sums {
        let key = key_of(prefix, s);
        let f = fleet.get(&key).copied().unwrap_or(0);
        out.compared += 1;
        if u64::from(s.count) > f {
            out.behind.push(Compared {
                key,
                local: s.count,
                fleet: f,
            });
        }
    }
    out
}

/// Read the fleet's values of `sums` from etcd, `MAX_TXN_OPS` keys per transaction.
pub fn fetch(cfg: &ClusterConfig, sums: &[LedgerSum]) -> Result<BTreeMap<String, u64>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(cfg.lease_ttl_s.max(2));
    let keys: Vec<String> = sums.iter().map(|s| key_of(&cfg.prefix, s)).collect();
    rt.block_on(async {
        let opts = ConnectOptions::new()
            .with_connect_timeout(limit)
            .with_timeout(limit);
        let mut client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|k| TxnOp::get(k.clone(), None))
                    .collect::<Vec<_>>(),
            );
            let r = client.txn(txn).await.map_err(|e| e.to_string())?;
            for op in r.op_responses() {
                let TxnOpResponse::Get(g) = op else { continue };
                for kv in g.kvs() {
                    let k = String::from_utf8_lossy(kv.key()).into_owned();
                    out.insert(k.clone(), plan::parse_count(&k, kv.value())?);
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_host_above_the_fleet_is_reported_and_below_is_not() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let sum = |owner: &str, id: &str, counter: &str, count| LedgerSum {
            owner: owner.into(),
            id: id.into(),
            day,
            counter: counter.into(),
            count,
        };
        let sums = vec![
            sum("account", "a/1", "invites", 12),
            sum("campaign", "q", "invites", 12),
            sum("account", "a2", "messages", 1),
        ];
        // The audit's keys are the claim's keys.
        assert_eq!(
            key_of("/p", &sums[0]),
            plan::account_key("/p", "a/1", day, crate::policy::caps::Counter::Invites)
        );
        assert_eq!(
            key_of("/p", &sums[1]),
            plan::campaign_key("/p", "q", day, crate::policy::caps::CampaignType::Invites)
        );
        let mut fleet = BTreeMap::new();
        fleet.insert(key_of("/p", &sums[0]), 12);
        fleet.insert(key_of("/p", &sums[1]), 30);
        let a = compare("/p", &sums, &fleet);
        assert_eq!(a.compared, 3);
        assert_eq!(
            a.behind,
            vec![Compared {
                key: key_of("/p", &sums[2]),
                local: 1,
                fleet: 0
            }]
        );
    }
}
