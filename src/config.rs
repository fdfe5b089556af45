//! The TOML configuration (SPEC §7): every key optional, unknown keys rejected naming
//! the key, values validated. A config error exits 78.

use crate::policy::caps::Caps;
use crate::policy::health::HealthParams;
use crate::policy::ramp::RampParams;
use crate::policy::tier::TierLimits;
use crate::policy::Tier;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the zero-config `run` keeps its store, spool and status file.
pub const ZERO_CONFIG_DIR: &str = "sendgate-data";
/// The config file `run` looks for when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "sendgate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        path: String,
        key: String,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub fsync: bool,
    pub cache_mb: u64,
    pub retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("/var/lib/sendgate/store"),
            fsync: true,
            cache_mb: 64,
            retention_days: 90,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub rescan_s: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("/var/spool/sendgate"),
            max_file_bytes: 64 * 1024 * 1024,
            rescan_s: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    Http,
    Exec,
    Sim,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    pub url: String,
    pub command: Vec<String>,
    pub timeout_s: u64,
    pub idempotent: bool,
    pub max_attempts: u32,
    /// Consecutive failed attempts that open the circuit breaker (SPEC §5).
    pub breaker_failures: u32,
    /// The longest wait between two probes while the upstream is down.
    pub breaker_max_s: u64,
    /// Seed of the `sim` upstream.
    pub seed: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            kind: UpstreamKind::Http,
            url: "http://127.0.0.1:8700".into(),
            command: vec!["/usr/local/bin/li-send".into()],
            timeout_s: 30,
            idempotent: false,
            max_attempts: 5,
            breaker_failures: 5,
            breaker_max_s: 300,
            seed: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsConfig {
    pub invites: Option<u32>,
    pub messages: Option<u32>,
    pub inmails: Option<u32>,
    pub engagement: Option<u32>,
    pub weekly_invites: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub invite_ceiling: Option<u32>,
    pub inmail_credits: Option<u32>,
    pub inmail_ceiling: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacingConfig {
    pub min_gap_s: u64,
    pub max_gap_s: u64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            min_gap_s: 45,
            max_gap_s: 240,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    pub path: PathBuf,
    pub every_s: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            path: PathBuf::from("/run/sendgate/status.json"),
            every_s: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    #[serde(default, with = "opt_rfc3339")]
    pub start: Option<DateTime<Utc>>,
    pub speed: Option<f64>,
}

mod opt_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time")))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RampConfig {
    pub start: u32,
    pub weeks: u32,
}

impl Default for RampConfig {
    fn default() -> Self {
        let d = RampParams::default();
        RampConfig {
            start: d.start,
            weeks: d.weeks,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub min_sample: u32,
    pub watch_acceptance: f64,
    pub at_risk_acceptance: f64,
    pub watch_rate_limits: u32,
    pub at_risk_rate_limits: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let d = HealthParams::default();
        HealthConfig {
            min_sample: d.min_sample,
            watch_acceptance: d.watch_acceptance,
            at_risk_acceptance: d.at_risk_acceptance,
            watch_rate_limits: d.watch_rate_limits,
            at_risk_rate_limits: d.at_risk_rate_limits,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub spool: SpoolConfig,
    pub upstream: UpstreamConfig,
    pub caps: CapsConfig,
    pub tiers: BTreeMap<String, TierConfig>,
    pub ramp: RampConfig,
    pub health: HealthConfig,
    pub pacing: PacingConfig,
    pub log: LogConfig,
    pub status: StatusConfig,
    pub clock: ClockConfig,
}

/// The policy parameters the store and engine decide with, derived from a `Config`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub caps: Caps,
    pub tiers: BTreeMap<Tier, TierLimits>,
    pub ramp: RampParams,
    pub health: HealthParams,
}

impl Policy {
    pub fn tier(&self, t: Tier) -> TierLimits {
        self.tiers.get(&t).copied().unwrap_or_else(|| t.default_limits())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Config::default().policy()
    }
}

impl Config {
    /// The zero-config defaults of `sendgate run` without a file: the `sim` upstream
    /// and everything under `./sendgate-data/`.
    pub fn zero_config() -> Config {
        let base = Path::new(ZERO_CONFIG_DIR);
        let mut c = Config::default();
        c.store.path = base.join("store");
        c.spool.dir = base.join("spool");
        c.status.path = base.join("status.json");
        c.upstream.kind = UpstreamKind::Sim;
        c
    }

    pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            path: path.to_string(),
            key,
            reason,
        };
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            let msg = e.inner().message().to_string();
            if let Some(name) = msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                key = if key == "." {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
            }
            let line = e
                .inner()
                .span()
                .map(|s| {
                    format!(
                        " (line {})",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            invalid(key, format!("{msg}{line}"))
        })?;
        config.validate().map_err(|(k, r)| invalid(k.to_string(), r))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&shown, &text)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |key: &'static str, v: u64| {
            if v == 0 {
                Err((key, "must be at least 1".to_string()))
            } else {
                Ok(())
            }
        };
        positive("store.cache_mb", self.store.cache_mb)?;
        positive("store.retention_days", u64::from(self.store.retention_days))?;
        positive("spool.max_file_bytes", self.spool.max_file_bytes)?;
        positive("spool.rescan_s", self.spool.rescan_s)?;
        positive("upstream.timeout_s", self.upstream.timeout_s)?;
        positive("upstream.max_attempts", u64::from(self.upstream.max_attempts))?;
        positive(
            "upstream.breaker_failures",
            u64::from(self.upstream.breaker_failures),
        )?;
        positive("upstream.breaker_max_s", self.upstream.breaker_max_s)?;
        positive("status.every_s", self.status.every_s)?;
        positive("ramp.start", u64::from(self.ramp.start))?;
        positive("ramp.weeks", u64::from(self.ramp.weeks))?;
        if let Some(name) = self.tiers.keys().find(|n| Tier::parse(n).is_none()) {
            return Err(("tiers", format!("unknown tier `{name}`")));
        }
        if self.pacing.min_gap_s > self.pacing.max_gap_s {
            return Err(("pacing.max_gap_s", "must not be below pacing.min_gap_s".into()));
        }
        if self.upstream.kind == UpstreamKind::Exec && self.upstream.command.is_empty() {
            return Err((
                "upstream.command",
                "must name a program for kind = \"exec\"".into(),
            ));
        }
        if self.upstream.kind == UpstreamKind::Http && !self.upstream.url.starts_with("http") {
            return Err(("upstream.url", "must be an http:// or https:// URL".into()));
        }
        let h = &self.health;
        for (key, v) in [
            ("health.watch_acceptance", h.watch_acceptance),
            ("health.at_risk_acceptance", h.at_risk_acceptance),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((key, "must be between 0 and 1".into()));
            }
        }
        if let Some(speed) = self.clock.speed {
            if !(speed.is_finite() && speed > 0.0) {
                return Err(("clock.speed", "must be a positive number".into()));
            }
        }
        Ok(())
    }

    pub fn policy(&self) -> Policy {
        let d = Caps::default();
        let c = &self.caps;
        let tiers = Tier::ALL
            .into_iter()
            .map(|t| {
                let base = t.default_limits();
                let o = self.tiers.get(t.as_str()).copied().unwrap_or_default();
                let limits = TierLimits {
                    invite_ceiling: o.invite_ceiling.unwrap_or(base.invite_ceiling),
                    inmail_credits: o.inmail_credits.unwrap_or(base.inmail_credits),
                    inmail_ceiling: o.inmail_ceiling.unwrap_or(base.inmail_ceiling),
                };
                (t, limits)
            })
            .collect();
        Policy {
            caps: Caps {
                invites: c.invites.unwrap_or(d.invites),
                messages: c.messages.unwrap_or(d.messages),
                inmails: c.inmails.unwrap_or(d.inmails),
                engagement: c.engagement.unwrap_or(d.engagement),
                weekly_invites: c.weekly_invites.or(d.weekly_invites),
            },
            tiers,
            ramp: RampParams {
                start: self.ramp.start,
                weeks: self.ramp.weeks,
            },
            health: HealthParams {
                min_sample: self.health.min_sample,
                watch_acceptance: self.health.watch_acceptance,
                at_risk_acceptance: self.health.at_risk_acceptance,
                watch_rate_limits: self.health.watch_rate_limits,
                at_risk_rate_limits: self.health.at_risk_rate_limits,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str) -> String {
        match Config::parse("t.toml", text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn empty_is_the_spec_defaults() {
        let c = Config::parse("t.toml", "").expect("empty config");
        assert_eq!(c, Config::default());
        assert_eq!(c.upstream.kind, UpstreamKind::Http);
        assert_eq!(c.policy().caps, Caps::default());
        assert_eq!(
            c.pacing,
            PacingConfig {
                min_gap_s: 45,
                max_gap_s: 240
            }
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(key_of("[caps]\ninvitez = 3\n"), "caps.invitez");
        assert_eq!(key_of("[stor]\npath = \"x\"\n"), "stor");
        assert_eq!(
            key_of("[tiers.free]\ninvite_cieling = 3\n"),
            "tiers.free.invite_cieling"
        );
        assert_eq!(key_of("[tiers.gold]\ninvite_ceiling = 3\n"), "tiers");
        assert_eq!(key_of("[upstream]\nkind = \"smtp\"\n"), "upstream.kind");
        assert_eq!(key_of("[pacing]\nmin_gap_s = 300\n"), "pacing.max_gap_s");
        assert_eq!(key_of("[store]\ncache_mb = \"big\"\n"), "store.cache_mb");
        assert_eq!(key_of("[clock]\nstart = \"soon\"\n"), "clock.start");
    }

    #[test]
    fn overrides_reach_the_policy() {
        let c = Config::parse("t.toml", "[caps]\ninvites = 95\nweekly_invites = 200\n[tiers.free]\ninvite_ceiling = 5\n[ramp]\nstart = 5\n")
            .expect("valid");
        let p = c.policy();
        assert_eq!(p.caps.invites, 95);
        assert_eq!(p.caps.weekly_invites, Some(200));
        assert_eq!(p.tier(Tier::Free).invite_ceiling, 5);
        assert_eq!(p.tier(Tier::Free).inmail_ceiling, 0);
        assert_eq!(p.ramp.start, 5);
    }
}
