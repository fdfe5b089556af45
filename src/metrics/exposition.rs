//! `GET /metrics`: a [`Snapshot`] in the Prometheus text format (version 0.0.4), encoded
//! by `prometheus-client` (HELP and TYPE lines, label escaping) from a registry built
//! for the request.

use super::{Snapshot, HEALTH_STATES};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|&(k, v)| (k, v.to_string())).collect()
}

/// A histogram whose buckets were counted elsewhere (`store::timing`).
#[derive(Debug)]
struct Histogram(crate::store::timing::DurableHistogram);

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_s, self.0.count, &self.0.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn gauges(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn set(f: &Family<Labels, Gauge>, pairs: &[(&'static str, &str)], v: impl Into<i64>) {
    f.get_or_create(&labels(pairs)).set(v.into());
}

pub fn render(s: &Snapshot) -> String {
    let r = &s.report;
    let mut reg = Registry::default();

    let actions = gauges(&mut reg, "sendgate_actions", "Actions per state.");
    for (state, n) in &r.states {
        set(
            &actions,
            &[("state", state)],
            i64::try_from(*n).unwrap_or(i64::MAX),
        );
    }

    let used = gauges(
        &mut reg,
        "sendgate_account_used",
        "Today's use of each account counter (the account's local day; weekly_invites: the last 7 local days).",
    );
    let cap = gauges(
        &mut reg,
        "sendgate_account_cap",
        "The cap in force today of each account counter (absent: no cap).",
    );
    let ramp = gauges(
        &mut reg,
        "sendgate_account_ramp_ceiling",
        "Today's ramp ceiling of invites per account.",
    );
    let week = gauges(
        &mut reg,
        "sendgate_account_ramp_week",
        "The warm-up week of each account (1 from ramp_start).",
    );
    let health = gauges(
        &mut reg,
        "sendgate_account_health",
        "Health of each account: 1 for the current state, 0 for the others.",
    );
    let credits = gauges(
        &mut reg,
        "sendgate_account_inmail_credits",
        "The InMail credit balance of each account.",
    );
    for a in &r.accounts {
        let t = &a.today;
        for (counter, u) in [
            ("invites", t.invites),
            ("messages", t.messages),
            ("inmails", t.inmails),
            ("engagement", t.engagement),
            ("weekly_invites", t.weekly_invites),
        ] {
            let l = [("account", a.id.as_str()), ("counter", counter)];
            set(&used, &l, u.used);
            if let Some(c) = u.cap {
                set(&cap, &l, c);
            }
        }
        set(&ramp, &[("account", &a.id)], a.ramp_ceiling);
        set(&week, &[("account", &a.id)], a.ramp_week);
        set(&credits, &[("account", &a.id)], a.inmail_credits);
        for h in HEALTH_STATES {
            set(
                &health,
                &[("account", &a.id), ("health", h)],
                i64::from(a.health == h),
            );
        }
    }

    let c_used = gauges(
        &mut reg,
        "sendgate_campaign_used",
        "Today's use of each campaign cap per type (invite, message, inmail), on the campaign's local day.",
    );
    let c_cap = gauges(
        &mut reg,
        "sendgate_campaign_cap",
        "Each campaign's daily cap per type (cap_split.<type>, else daily_limit).",
    );
    let c_paused = gauges(&mut reg, "sendgate_campaign_paused", "1 for a paused campaign.");
    for c in &r.campaigns {
        let t = &c.today;
        for (ty, u) in [("invite", t.invite), ("message", t.message), ("inmail", t.inmail)] {
            let l = [("campaign", c.id.as_str()), ("type", ty)];
            set(&c_used, &l, u.used);
            if let Some(v) = u.cap {
                set(&c_cap, &l, v);
            }
        }
        set(&c_paused, &[("campaign", &c.id)], i64::from(c.paused));
    }

    let sent = Family::<Labels, Counter>::default();
    reg.register(
        "sendgate_sent",
        "Upstream answers `sent` per account and kind since the worker started.",
        sent.clone(),
    );
    for ((account, kind), n) in &s.sent {
        sent.get_or_create(&labels(&[("account", account), ("kind", kind.as_str())]))
            .inc_by(*n);
    }
    let outcomes = Family::<Labels, Counter>::default();
    reg.register(
        "sendgate_outcomes",
        "Upstream answers per outcome since the worker started.",
        outcomes.clone(),
    );
    for (o, n) in &s.outcomes {
        outcomes.get_or_create(&labels(&[("outcome", o)])).inc_by(*n);
    }

    let up = Gauge::<i64>::default();
    up.set(i64::from(r.upstream.state == "up"));
    reg.register(
        "sendgate_upstream_up",
        "1 while the upstream circuit breaker is closed, 0 while it is open (SPEC 5).",
        up,
    );
    if let Some(c) = &r.cluster {
        let cluster = Gauge::<i64>::default();
        cluster.set(i64::from(c.state == "up"));
        reg.register(
            "sendgate_cluster_up",
            "1 while the worker may dispatch in its fleet (etcd reachable, lease fresh), 0 otherwise (SPEC 12).",
            cluster,
        );
    }
    let paused = Gauge::<i64>::default();
    paused.set(i64::from(r.paused_all));
    reg.register(
        "sendgate_paused_all",
        "1 while the operator kill switch (pause --all) is on.",
        paused,
    );
    reg.register(
        "sendgate_store_durable_commit_seconds",
        "Time of each durable store commit: sled's flush and the fdatasync.",
        Histogram(s.durable.clone()),
    );

    let mut out = String::new();
    // Writing to a String cannot fail; the encoder has no other error.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let text = render(&crate::metrics::dashboard::tests::snapshot());
        for (name, ty) in [
            ("sendgate_actions", "gauge"),
            ("sendgate_account_used", "gauge"),
            ("sendgate_account_cap", "gauge"),
            ("sendgate_account_ramp_ceiling", "gauge"),
            ("sendgate_account_health", "gauge"),
            ("sendgate_sent_total", "counter"),
            ("sendgate_outcomes_total", "counter"),
            ("sendgate_upstream_up", "gauge"),
            ("sendgate_store_durable_commit_seconds", "histogram"),
            ("sendgate_campaign_used", "gauge"),
            ("sendgate_campaign_cap", "gauge"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} {ty}\n")), "{name}:\n{text}");
        }
        let id = "acct-1<script>alert(1)</script>";
        for line in [
            format!("sendgate_account_used{{account=\"{id}\",counter=\"invites\"}} 12"),
            format!("sendgate_account_cap{{account=\"{id}\",counter=\"invites\"}} 46"),
            format!("sendgate_account_used{{account=\"{id}\",counter=\"weekly_invites\"}} 70"),
            format!("sendgate_account_ramp_ceiling{{account=\"{id}\"}} 46"),
            format!("sendgate_account_health{{account=\"{id}\",health=\"healthy\"}} 1"),
            format!("sendgate_account_health{{account=\"{id}\",health=\"watch\"}} 0"),
            format!("sendgate_sent_total{{account=\"{id}\",kind=\"invite\"}} 12"),
            "sendgate_outcomes_total{outcome=\"sent\"} 12".to_string(),
            "sendgate_outcomes_total{outcome=\"rate_limited\"} 0".to_string(),
            "sendgate_actions{state=\"parked\"} 120".to_string(),
            "sendgate_upstream_up 0".to_string(),
            "sendgate_campaign_used{campaign=\"q4&co\",type=\"invite\"} 12".to_string(),
            "sendgate_campaign_paused{campaign=\"q4&co\"} 1".to_string(),
            "sendgate_store_durable_commit_seconds_count 1".to_string(),
            "sendgate_store_durable_commit_seconds_bucket{le=\"0.0025\"} 1".to_string(),
            "sendgate_store_durable_commit_seconds_bucket{le=\"0.001\"} 0".to_string(),
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing `{line}`:\n{text}");
        }
        // No cap, no sample.
        assert!(!text.contains("counter=\"weekly_invites\"} 70\nsendgate_account_cap"));
        assert!(!text.contains(&format!(
            "sendgate_account_cap{{account=\"{id}\",counter=\"weekly_invites\"}}"
        )));
        // A label value with a quote, a backslash and a newline stays one line.
        let mut s = crate::metrics::dashboard::tests::snapshot();
        s.report.accounts[0].id = "a\"b\\c\nd".into();
        let text = render(&s);
        assert!(
            text.contains(r#"sendgate_account_ramp_ceiling{account="a\"b\\c\nd"} 46"#),
            "{text}"
        );
    }
}
