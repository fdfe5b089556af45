//! Fleets (SPEC §12): caps shared across hosts through etcd.
//!
//! - `plan`  — PURE: which keys a reservation draws from, the admit decision over the
//!   fleet's counters, how a batch splits into transactions of at most
//!   `MAX_TXN_OPS`, and the fail-closed clock of the lease. No IO.
//! - `task`  — the fleet's etcd logic (`Member`): the lease, the accounts owned, the
//!   claims the engine asks for; in the daemon one task on the tokio runtime runs it.
//! - `kv`    — the seam `task` talks through: etcd v3's transaction, lease grant,
//!   renewal and revoke as traits, and their etcd-client implementation.
//! - `standin` — an in-process etcd (`MemEtcd`) with the same semantics, virtual time
//!   and partitions: for the deterministic simulation only.
//!
//! The engine never waits on etcd: it hands a batch of candidates to the task (`Claim`)
//! and takes the answer from its inbox (`Answer`), then reserves locally what the fleet
//! admitted (see ARCHITECTURE.md, "Fleets").

pub mod audit;
pub mod kv;
pub mod plan;
pub mod standin;
pub mod task;

use crate::policy::caps::Blocker;
use crate::policy::Kind;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

/// `[cluster]` (SPEC §7, §12).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// This worker's name in the fleet; default: the host name.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_ttl")]
    pub lease_ttl_s: u64,
}

fn default_prefix() -> String {
    "/sendgate".into()
}

fn default_ttl() -> u64 {
    10
}

impl ClusterConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, reason: String| Err((key.to_string(), reason));
        if self.endpoints.is_empty() {
            return fail("cluster.endpoints", "must name at least one etcd endpoint".into());
        }
        for e in &self.endpoints {
            let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
            match rest {
                Some(hp) if !hp.is_empty() && !hp.contains('/') && hp.rsplit_once(':').is_some() => {}
                _ => {
                    return fail(
                        "cluster.endpoints",
                        format!("`{e}` is not an http://host:port URL"),
                    )
                }
            }
        }
        if let Some(n) = &self.node {
            if !valid_name(n) {
                return fail(
                    "cluster.node",
                    format!("`{n}` must be 1 to 255 bytes of visible characters without `/`"),
                );
            }
        }
        let p = &self.prefix;
        if !p.starts_with('/') || p.ends_with('/') || p.len() > 255 || p.chars().any(char::is_whitespace) {
            return fail(
                "cluster.prefix",
                format!("`{p}` must start with `/`, not end with one, and hold no spaces"),
            );
        }
        Ok(())
    }

    /// Whether a send can outlive its sender's lease. A claim is made while the lease
    /// is at most `ttl / 2` old, so it has at least `ttl / 2` left; a send may take up
    /// to `upstream.timeout_s`. When that is longer, a send can reach the upstream after
    /// etcd gave the account to another worker: caps still hold (the slot was counted),
    /// but for that call two workers may act for one account.
    pub fn send_may_outlive_lease(&self, upstream_timeout_s: u64) -> bool {
        upstream_timeout_s.saturating_mul(2) > self.lease_ttl_s
    }

    /// The node name in force: `node`, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && !n.contains('/') && n.chars().all(|c| c.is_ascii_graphic())
}

/// The host name (`gethostname`), or `localhost` when it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if valid_name(&name) {
        name
    } else {
        "localhost".into()
    }
}

/// `status` (SPEC §8, §12): `state` is `up` (dispatching) or `down` (etcd unreachable
/// or the lease in doubt), with the node name and the accounts it owns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ClusterStatus {
    pub state: String,
    pub node: String,
    pub owned: Vec<String>,
}

/// What one candidate reservation draws from, as the store sees it at `now` (after the
/// account's maintenance): the fleet checks the same limits against its own counters.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    pub action: String,
    pub account: String,
    pub campaign: String,
    pub kind: Kind,
    /// The account's local day, and the campaign's.
    pub account_day: NaiveDate,
    pub campaign_day: NaiveDate,
    pub limits: crate::policy::caps::Limits,
    /// Where an action blocked by each counter waits (the next day of that counter).
    pub account_until: DateTime<Utc>,
    pub campaign_until: DateTime<Utc>,
    /// The account's local state (InMail balance, ramp, health) after maintenance:
    /// what the claim writes beside the counters.
    pub state: plan::AccountState,
}

/// What the fleet says of one candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The fleet's counters took the slots: reserve locally, then send.
    Claimed,
    /// A fleet counter is full: park until `until`.
    Blocked { blocker: Blocker, until: DateTime<Utc> },
    /// `<prefix>/action/<id>` exists: sent (or being sent) by another worker.
    Duplicate,
    /// The account is not (or no longer) ours.
    NotOwned,
    /// No answer (etcd unreachable, lease in doubt, contention): try again later.
    Retry,
}

/// A batch the engine asks the fleet to claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub draws: Vec<Draw>,
}

/// What the cluster task tells the engine, through its inbox.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// The verdicts of a `Claim`, one per draw, in order.
    Answer(Vec<(Draw, Verdict)>),
    /// The worker holds `<prefix>/owner/<account>` now, and the account's state the
    /// fleet keeps (`None`: none yet), to adopt before its first dispatch.
    Owned(String, Option<plan::AccountState>),
    /// The account is held elsewhere (or we lost it).
    Elsewhere { account: String, owner: Option<String> },
    /// etcd is reachable and the lease is fresh again, or not.
    Up(bool),
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn key_of(text: &str) -> String {
        match Config::parse("t.toml", text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{text:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn a_send_longer_than_half_the_lease_is_flagged() {
        let c = |ttl: &str| {
            Config::parse(
                "t.toml",
                &format!("[cluster]\nendpoints = [\"http://127.0.0.1:2379\"]\n{ttl}"),
            )
            .expect("valid")
            .cluster
            .expect("set")
        };
        // SPEC 7's defaults: a 10 s lease, 30 s sends.
        assert!(c("").send_may_outlive_lease(30));
        assert!(c("lease_ttl_s = 59\n").send_may_outlive_lease(30));
        assert!(!c("lease_ttl_s = 60\n").send_may_outlive_lease(30));
        assert!(!c("lease_ttl_s = 10\n").send_may_outlive_lease(5));
        assert!(c("lease_ttl_s = 10\n").send_may_outlive_lease(6));
    }

    #[test]
    fn without_cluster_nothing_changes() {
        assert_eq!(Config::parse("t.toml", "").expect("empty").cluster, None);
    }

    #[test]
    fn a_cluster_gets_its_defaults() {
        let c = Config::parse("t.toml", "[cluster]\nendpoints = [\"http://127.0.0.1:2379\"]\n")
            .expect("valid")
            .cluster
            .expect("set");
        assert_eq!(c.prefix, "/sendgate");
        assert_eq!(c.lease_ttl_s, 10);
        assert_eq!(c.node, None);
        assert!(!c.node_name().is_empty() && !c.node_name().contains('/'));
        let c = Config::parse(
            "t.toml",
            "[cluster]\nendpoints = [\"http://a:1\", \"https://b:2\"]\nnode = \"h-1\"\nprefix = \"/x/y\"\nlease_ttl_s = 3\n",
        )
        .expect("valid")
        .cluster
        .expect("set");
        assert_eq!(
            (c.node_name().as_str(), c.prefix.as_str(), c.lease_ttl_s),
            ("h-1", "/x/y", 3)
        );
    }

    /// One line per case: a config → the key its error names.
    #[test]
    fn bad_cluster_values_name_their_key() {
        let e = "endpoints = [\"http://127.0.0.1:2379\"]\n";
        for (text, key) in [
            ("[cluster]\n".to_string(), "cluster.endpoints"),
            ("[cluster]\nendpoints = []\n".into(), "cluster.endpoints"),
            (
                "[cluster]\nendpoints = [\"127.0.0.1:2379\"]\n".into(),
                "cluster.endpoints",
            ),
            (
                "[cluster]\nendpoints = [\"http://h/x\"]\n".into(),
                "cluster.endpoints",
            ),
            (
                "[cluster]\nendpoints = \"http://h:1\"\n".into(),
                "cluster.endpoints",
            ),
            (format!("[cluster]\n{e}node = \"\"\n"), "cluster.node"),
            (format!("[cluster]\n{e}node = \"a/b\"\n"), "cluster.node"),
            (format!("[cluster]\n{e}prefix = \"sendgate\"\n"), "cluster.prefix"),
            (
                format!("[cluster]\n{e}prefix = \"/sendgate/\"\n"),
                "cluster.prefix",
            ),
            (format!("[cluster]\n{e}lease_ttl_s = 1\n"), "cluster.lease_ttl_s"),
            (
                format!("[cluster]\n{e}lease_ttl_s = 3601\n"),
                "cluster.lease_ttl_s",
            ),
            (format!("[cluster]\n{e}ttl = 3\n"), "cluster"),
        ] {
            assert!(
                key_of(&text).starts_with(key),
                "{text:?} names {:?}",
                key_of(&text)
            );
        }
    }
}
