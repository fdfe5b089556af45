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
/// Under systemd, where the store and the spool go inside `$STATE_DIRECTORY` and the
/// status file inside `$RUNTIME_DIRECTORY` when the config names no path (SPEC §7).
pub const STATE_STORE: &str = "store";
pub const STATE_SPOOL: &str = "spool";
pub const RUNTIME_STATUS: &str = "status.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    /// The file is not TOML at all there (a broken table header, a stray character):
    /// no key to name, only the line.
    #[error("{path}: TOML syntax: {reason}")]
    Syntax { path: String, reason: String },
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

impl UpstreamKind {
    /// The spelling of the configuration (`"upstream":"http"` in logs too).
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Http => "http",
            UpstreamKind::Exec => "exec",
            UpstreamKind::Sim => "sim",
        }
    }
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
    /// Poll `GET {url}/v1/events` for acceptances, replies and restrictions (SPEC §9).
    /// The `sim` upstream feeds its own whatever this says; `exec` has no feed.
    pub events: bool,
    pub events_every_s: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            kind: UpstreamKind::Http,
            url: "http://127.0.0.1:8700".into(),
            // No default program: `kind = "exec"` must name one (a default that does
            // not exist would burn every action's attempts).
            command: Vec::new(),
            timeout_s: 30,
            idempotent: false,
            max_attempts: 5,
            breaker_failures: 5,
            breaker_max_s: 300,
            seed: 1,
            events: false,
            events_every_s: 60,
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

/// `[metrics]` (SPEC §7, §11): where `GET /metrics` and the dashboard are served; unset,
/// no listener. An IP address and a port (a host name is not resolved).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<std::net::SocketAddr>,
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
    pub metrics: MetricsConfig,
    pub admin: AdminConfig,
    /// `[cluster]` (SPEC §7, §12): unset, a single host.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    pub clock: ClockConfig,
}

/// `[admin]` (SPEC §7): the control socket; unset, `admin.sock` beside the status file
/// (`admin::server::socket_path`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub socket: Option<PathBuf>,
}

/// The accepted range of every integer key, inclusive; `tiers.*` stands for each tier.
/// README's configuration reference lists the same table. The bounds keep every time
/// and size computed from a key far from overflow (a panic where a config error
/// belongs), and refuse values that can only be typos; `store.retention_days` starts
/// at 30 because counters of the last 17 local days decide health and the rolling week.
pub const INT_RANGES: &[(&str, u64, u64)] = &[
    ("store.cache_mb", 1, 65_536),
    ("store.retention_days", 30, 3_650),
    ("spool.max_file_bytes", 1, 1 << 30),
    ("spool.rescan_s", 1, 3_600),
    ("upstream.timeout_s", 1, 3_600),
    ("upstream.max_attempts", 1, 100),
    ("upstream.breaker_failures", 1, 1_000),
    ("upstream.breaker_max_s", 5, 86_400),
    ("upstream.seed", 0, u64::MAX),
    ("upstream.events_every_s", 1, 86_400),
    ("caps.invites", 0, 10_000),
    ("caps.messages", 0, 10_000),
    ("caps.inmails", 0, 10_000),
    ("caps.engagement", 0, 10_000),
    ("caps.weekly_invites", 0, 70_000),
    ("tiers.*.invite_ceiling", 0, 10_000),
    ("tiers.*.inmail_credits", 0, 10_000),
    ("tiers.*.inmail_ceiling", 0, 100_000),
    ("ramp.start", 1, 10_000),
    ("ramp.weeks", 1, 104),
    ("health.min_sample", 1, 1_000_000),
    ("health.watch_rate_limits", 1, 1_000),
    ("health.at_risk_rate_limits", 1, 1_000),
    ("pacing.min_gap_s", 0, 86_400),
    ("pacing.max_gap_s", 0, 86_400),
    ("status.every_s", 1, 3_600),
    ("cluster.lease_ttl_s", 2, 3_600),
];

/// `clock.speed`, virtual seconds per real second, inclusive. Below, a wait of one
/// virtual second would be longer than `std::time::Duration` can hold; above, a run of
/// a few hours would leave chrono's calendar.
pub const CLOCK_SPEED_RANGE: (f64, f64) = (0.001, 100_000.0);

/// The range of an integer key of [`INT_RANGES`].
fn int_range(key: &str) -> (u64, u64) {
    let pattern = match key.strip_prefix("tiers.") {
        Some(rest) => rest
            .split_once('.')
            .map_or(key.to_string(), |(_, k)| format!("tiers.*.{k}")),
        None => key.to_string(),
    };
    INT_RANGES
        .iter()
        .find(|(k, _, _)| *k == pattern)
        .map(|&(_, lo, hi)| (lo, hi))
        // A key missing from the table is a bug caught by `every_integer_key_has_a_range`.
        .unwrap_or((0, u64::MAX))
}

/// The dotted key written on the line holding `offset` (`store.cache_mb` for
/// `cache_mb = …` under `[store]`), for errors that toml reports without a path.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    // A table header (a broken one, or one written twice) names its table.
    if let Some(header) = line.trim().strip_prefix('[') {
        let table = header.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace());
        return (!table.is_empty()).then(|| table.to_string());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// A directory systemd passes in `name` (`StateDirectory=` and the like): the first
/// of a `:`-separated list, and only an absolute path.
fn env_dir(name: &str) -> Option<PathBuf> {
    let value = std::env::var_os(name)?;
    let first = std::env::split_paths(&value).next()?;
    first.is_absolute().then_some(first)
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
    /// and everything under `./sendgate-data/` (or systemd's directories, when set).
    pub fn zero_config() -> Config {
        let base = Path::new(ZERO_CONFIG_DIR);
        let mut c = Config::default();
        c.store.path = base.join("store");
        c.spool.dir = base.join("spool");
        c.status.path = base.join("status.json");
        c.upstream.kind = UpstreamKind::Sim;
        c.follow_systemd_dirs(&toml::Table::new(), env_dir);
        c
    }

    /// SPEC §7: a path the config does not name follows systemd's directories when the
    /// unit gives them: the store in `$STATE_DIRECTORY/store`, the spool in
    /// `$STATE_DIRECTORY/spool`, the status file in `$RUNTIME_DIRECTORY/status.json`.
    /// `given` is the config file as written; `env` reads a variable (the first path of
    /// a `:`-separated list, ignored unless absolute).
    pub fn follow_systemd_dirs(&mut self, given: &toml::Table, env: impl Fn(&str) -> Option<PathBuf>) {
        let named = |section: &str, key: &str| {
            given
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|t| t.contains_key(key))
        };
        if let Some(state) = env("STATE_DIRECTORY") {
            if !named("store", "path") {
                self.store.path = state.join(STATE_STORE);
            }
            if !named("spool", "dir") {
                self.spool.dir = state.join(STATE_SPOOL);
            }
        }
        if let Some(runtime) = env("RUNTIME_DIRECTORY") {
            if !named("status", "path") {
                self.status.path = runtime.join(RUNTIME_STATUS);
            }
        }
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
            if key == "." {
                // toml names no key for some errors (a number too large for an
                // integer): take it from the line the error points at.
                if let Some(named) = e.inner().span().and_then(|s| key_at(text, s.start)) {
                    key = named;
                }
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
            // toml's messages span lines; a log line or an error is one line.
            let msg = msg.trim().replace('\n', "; ");
            if key == "." {
                // Not a key's value but the text itself: "key `.`" would name nothing.
                return ConfigError::Syntax {
                    path: path.to_string(),
                    reason: format!("{msg}{line}"),
                };
            }
            invalid(key, format!("{msg}{line}"))
        })?;
        config.validate().map_err(|(k, r)| invalid(k, r))?;
        Ok(config)
    }

    /// Reads and parses a config file; paths it does not name follow systemd's
    /// directories when the environment gives them ([`Config::follow_systemd_dirs`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config = Config::parse(&shown, &text)?;
        // `parse` accepted the text, so it is a TOML table.
        let given: toml::Table = text.parse().unwrap_or_default();
        config.follow_systemd_dirs(&given, env_dir);
        Ok(config)
    }

    /// Every integer key and its value, for the range check; optional keys only when set.
    fn int_values(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = vec![
            ("store.cache_mb".into(), self.store.cache_mb),
            (
                "store.retention_days".into(),
                u64::from(self.store.retention_days),
            ),
            ("spool.max_file_bytes".into(), self.spool.max_file_bytes),
            ("spool.rescan_s".into(), self.spool.rescan_s),
            ("upstream.timeout_s".into(), self.upstream.timeout_s),
            (
                "upstream.max_attempts".into(),
                u64::from(self.upstream.max_attempts),
            ),
            (
                "upstream.breaker_failures".into(),
                u64::from(self.upstream.breaker_failures),
            ),
            ("upstream.breaker_max_s".into(), self.upstream.breaker_max_s),
            ("upstream.seed".into(), self.upstream.seed),
            ("upstream.events_every_s".into(), self.upstream.events_every_s),
            ("ramp.start".into(), u64::from(self.ramp.start)),
            ("ramp.weeks".into(), u64::from(self.ramp.weeks)),
            ("health.min_sample".into(), u64::from(self.health.min_sample)),
            (
                "health.watch_rate_limits".into(),
                u64::from(self.health.watch_rate_limits),
            ),
            (
                "health.at_risk_rate_limits".into(),
                u64::from(self.health.at_risk_rate_limits),
            ),
            ("pacing.min_gap_s".into(), self.pacing.min_gap_s),
            ("pacing.max_gap_s".into(), self.pacing.max_gap_s),
            ("status.every_s".into(), self.status.every_s),
        ];
        v.extend(
            self.cluster
                .as_ref()
                .map(|c| ("cluster.lease_ttl_s".into(), c.lease_ttl_s)),
        );
        let c = &self.caps;
        for (key, value) in [
            ("caps.invites", c.invites),
            ("caps.messages", c.messages),
            ("caps.inmails", c.inmails),
            ("caps.engagement", c.engagement),
            ("caps.weekly_invites", c.weekly_invites),
        ] {
            v.extend(value.map(|x| (key.to_string(), u64::from(x))));
        }
        for (name, t) in &self.tiers {
            for (key, value) in [
                ("invite_ceiling", t.invite_ceiling),
                ("inmail_credits", t.inmail_credits),
                ("inmail_ceiling", t.inmail_ceiling),
            ] {
                v.extend(value.map(|x| (format!("tiers.{name}.{key}"), u64::from(x))));
            }
        }
        v
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (key, value) in self.int_values() {
            let (lo, hi) = int_range(&key);
            if !(lo..=hi).contains(&value) {
                return Err((key, format!("must be between {lo} and {hi}, not {value}")));
            }
        }
        let fail = |key: &str, reason: &str| Err((key.to_string(), reason.to_string()));
        if let Some(name) = self.tiers.keys().find(|n| Tier::parse(n).is_none()) {
            return Err(("tiers".into(), format!("unknown tier `{name}`")));
        }
        if self.pacing.min_gap_s > self.pacing.max_gap_s {
            return fail("pacing.max_gap_s", "must not be below pacing.min_gap_s");
        }
        if self.upstream.kind == UpstreamKind::Exec && self.upstream.command.is_empty() {
            return fail("upstream.command", "must name a program for kind = \"exec\"");
        }
        if self.upstream.kind == UpstreamKind::Exec && self.upstream.events {
            return fail(
                "upstream.events",
                "the exec upstream has no event feed; events need kind = \"http\" (SPEC §9)",
            );
        }
        if self.upstream.kind == UpstreamKind::Http && !self.upstream.url.starts_with("http") {
            return fail("upstream.url", "must be an http:// or https:// URL");
        }
        let h = &self.health;
        for (key, v) in [
            ("health.watch_acceptance", h.watch_acceptance),
            ("health.at_risk_acceptance", h.at_risk_acceptance),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return fail(key, "must be between 0 and 1");
            }
        }
        // `at_risk` is the worse state: its thresholds come first (a swap is a typo that
        // would skip `watch`).
        if h.at_risk_acceptance > h.watch_acceptance {
            return fail(
                "health.at_risk_acceptance",
                "must not be above health.watch_acceptance",
            );
        }
        if h.at_risk_rate_limits < h.watch_rate_limits {
            return fail(
                "health.at_risk_rate_limits",
                "must not be below health.watch_rate_limits",
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if let Some(speed) = self.clock.speed {
            let (lo, hi) = CLOCK_SPEED_RANGE;
            // NaN fails `contains` too.
            if !(lo..=hi).contains(&speed) {
                return Err((
                    "clock.speed".into(),
                    format!("must be between {lo} and {hi}, not {speed:e}"),
                ));
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

    /// A broken table header names its table.
    #[test]
    fn a_broken_table_header_names_the_table() {
        let e = Config::parse("t.toml", "[store]\nfsync = true\n[caps\ninvites = 3\n")
            .expect_err("broken header");
        assert!(e.to_string().starts_with("t.toml: key `caps`: "), "{e}");
        assert!(
            e.to_string().contains("(line 3)") && !e.to_string().contains('\n'),
            "{e}"
        );
    }

    /// A syntax error names its line, not a key `.` that means nothing to an operator.
    #[test]
    fn a_syntax_error_names_the_line_not_a_key() {
        let e = Config::parse("t.toml", "[store]\nfsync = true\n@@@\n").expect_err("not TOML");
        let text = e.to_string();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert!(text.starts_with("t.toml: TOML syntax: "), "{text}");
        assert!(text.contains("(line 3)"), "{text}");
        assert!(!text.contains("key `.`") && !text.contains('\n'), "{text}");
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

    /// Every integer key the config has is in `INT_RANGES`, and every range is
    /// documented in the README's table.
    #[test]
    fn every_integer_key_has_a_range() {
        let mut c = Config {
            caps: CapsConfig {
                invites: Some(1),
                messages: Some(1),
                inmails: Some(1),
                engagement: Some(1),
                weekly_invites: Some(1),
            },
            ..Config::default()
        };
        c.tiers.insert(
            "free".into(),
            TierConfig {
                invite_ceiling: Some(1),
                inmail_credits: Some(1),
                inmail_ceiling: Some(1),
            },
        );
        c.cluster = Some(crate::cluster::ClusterConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            node: None,
            prefix: "/sendgate".into(),
            lease_ttl_s: 10,
        });
        let keys: Vec<String> = c.int_values().into_iter().map(|(k, _)| k).collect();
        for key in &keys {
            let pattern = key.replace("tiers.free.", "tiers.*.");
            assert!(
                INT_RANGES.iter().any(|(k, _, _)| *k == pattern),
                "{key} has no range"
            );
        }
        assert_eq!(
            keys.len(),
            INT_RANGES.len(),
            "a range for a key that does not exist"
        );
        let readme = include_str!("../README.md");
        for (key, lo, hi) in INT_RANGES {
            let row = format!("| `{key}` | {lo} | {hi} |");
            assert!(readme.contains(&row), "README lacks the row `{row}`");
        }
    }

    #[test]
    fn the_example_config_is_the_defaults() {
        let c = Config::parse(
            "examples/sendgate.toml",
            include_str!("../examples/sendgate.toml"),
        )
        .expect("the example parses");
        assert_eq!(c.store, Config::default().store);
        assert_eq!(c.upstream, Config::default().upstream);
        assert_eq!(c.policy(), Config::default().policy());
    }

    /// One line per case: a config → the key its error names (exit 78 in the binary).
    #[test]
    fn values_out_of_range_name_their_key() {
        for (text, key) in [
            ("[clock]\nspeed = 1e300\n", "clock.speed"),
            ("[clock]\nspeed = 1e-300\n", "clock.speed"),
            ("[clock]\nspeed = nan\n", "clock.speed"),
            ("[clock]\nspeed = 0.0\n", "clock.speed"),
            ("[pacing]\nmax_gap_s = 9223372036854775807\n", "pacing.max_gap_s"),
            (
                "[upstream]\ntimeout_s = 9223372036854775807\n",
                "upstream.timeout_s",
            ),
            ("[upstream]\ntimeout_s = 0\n", "upstream.timeout_s"),
            ("[store]\nretention_days = 4294967295\n", "store.retention_days"),
            ("[store]\nretention_days = 29\n", "store.retention_days"),
            ("[store]\ncache_mb = 18446744073709551\n", "store.cache_mb"),
            ("[store]\ncache_mb = 18446744073709551615\n", "store.cache_mb"),
            (
                "[spool]\ndir = \"x\"\n\nrescan_s = 99999999999999999999\n",
                "spool.rescan_s",
            ),
            ("[spool]\nmax_file_bytes = 0\n", "spool.max_file_bytes"),
            ("[spool]\nrescan_s = 100000\n", "spool.rescan_s"),
            ("[status]\nevery_s = 0\n", "status.every_s"),
            ("[upstream]\nmax_attempts = 1000\n", "upstream.max_attempts"),
            ("[caps]\ninvites = 100000\n", "caps.invites"),
            (
                "[tiers.free]\ninvite_ceiling = 4000000000\n",
                "tiers.free.invite_ceiling",
            ),
            ("[ramp]\nweeks = 0\n", "ramp.weeks"),
            ("[health]\nmin_sample = 0\n", "health.min_sample"),
            // Swapped thresholds (accepted before).
            (
                "[health]\nat_risk_acceptance = 0.3\n",
                "health.at_risk_acceptance",
            ),
            (
                "[health]\nwatch_rate_limits = 3\nat_risk_rate_limits = 2\n",
                "health.at_risk_rate_limits",
            ),
            ("[upstream]\nkind = \"exec\"\n", "upstream.command"),
            ("[upstream]\nkind = \"exec\"\ncommand = []\n", "upstream.command"),
            // An exec program has no event feed (SPEC §9).
            (
                "[upstream]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\nevents = true\n",
                "upstream.events",
            ),
            ("[upstream]\nevents_every_s = 0\n", "upstream.events_every_s"),
            ("[metrics]\nlisten = \"localhost:9187\"\n", "metrics.listen"),
            ("[metrics]\nlisten = \"127.0.0.1\"\n", "metrics.listen"),
            ("[metrics]\nlisten = 9187\n", "metrics.listen"),
            ("[metrics]\nlisten = \"127.0.0.1:99999\"\n", "metrics.listen"),
        ] {
            assert_eq!(key_of(text), key, "{text}");
        }
        // The ends of each range are accepted.
        for text in [
            "[store]\nretention_days = 30\n",
            "[store]\nretention_days = 3650\n",
            "[clock]\nspeed = 0.001\n",
            "[clock]\nspeed = 100000.0\n",
            "[pacing]\nmin_gap_s = 0\nmax_gap_s = 86400\n",
            "[upstream]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n",
            "[metrics]\nlisten = \"127.0.0.1:9187\"\n",
            "[metrics]\nlisten = \"[::1]:0\"\n",
        ] {
            assert!(Config::parse("t.toml", text).is_ok(), "{text}");
        }
    }

    #[test]
    fn repeated_keys_are_errors() {
        // toml refuses a key defined twice; an override cannot hide behind another.
        for text in [
            "[caps]\ninvites = 2\ninvites = 40\n",
            "[caps]\ninvites = 2\n[caps]\ninvites = 40\n",
            "[tiers.free]\ninvite_ceiling = 2\n[tiers.free]\ninvite_ceiling = 40\n",
        ] {
            match Config::parse("t.toml", text) {
                Err(ConfigError::Invalid { reason, .. }) => {
                    assert!(
                        reason.contains("duplicate") || reason.contains("defined"),
                        "{text}: {reason}"
                    )
                }
                other => panic!("{text}: expected an error, got {other:?}"),
            }
        }
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
