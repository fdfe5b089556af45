//! `GET /`: one self-contained HTML page (inline CSS and SVG, no script, no external
//! asset; it reloads itself every `REFRESH_S` with a meta refresh). Every id and reason
//! is escaped.

use super::{Snapshot, MAX_DASHBOARD_ACCOUNTS, MAX_DASHBOARD_CAMPAIGNS};
use crate::chart::{self, escape, Panel};
use crate::store::{AccountStatus, Use};
use std::fmt::Write as _;

pub const REFRESH_S: u32 = 10;

const STYLE: &str = "
body{font-family:sans-serif;margin:1.5em;color:#222;background:#f6f6f6}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.15em;margin:1.2em 0 .4em}
h3{font-size:1.05em;margin:0 0 .3em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:.6em 0}
.meta{color:#555;font-size:.9em}
table{border-collapse:collapse} td,th{padding:.15em .6em;text-align:left;font-size:.92em}
.meter{display:inline-block;width:16em;height:.9em;background:#e4e4e4;border-radius:3px;vertical-align:middle}
.meter-fill{display:block;height:100%;background:#3465a4;border-radius:3px}
.meter.full .meter-fill{background:#cc0000}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;color:#fff;font-weight:bold}
.healthy,.up{background:#4e9a06} .watch{background:#c4a000} .at_risk{background:#ce5c00}
.restricted,.down{background:#a40000}
";

/// A bar of `used` against `cap` (none: a bar with no limit), then the numbers.
fn bar(out: &mut String, name: &str, u: Use) {
    let (pct, full, text) = match u.cap {
        Some(0) => (100.0, true, format!("{} / 0", u.used)),
        Some(c) => (
            (f64::from(u.used) * 100.0 / f64::from(c)).min(100.0),
            u.used >= c,
            format!("{} / {c}", u.used),
        ),
        None => (0.0, false, format!("{} (no cap)", u.used)),
    };
    let class = if full { "meter full" } else { "meter" };
    let _ = writeln!(
        out,
        r#"<tr><th>{}</th><td><span class="{class}"><span class="meter-fill" style="width:{pct:.0}%"></span></span></td><td>{text}</td></tr>"#,
        escape(name)
    );
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "—".to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

fn account(out: &mut String, s: &Snapshot, a: &AccountStatus) {
    let id = escape(&a.id);
    let _ = writeln!(out, r#"<section class="card account" id="account-{id}">"#);
    let _ = writeln!(
        out,
        r#"<h3>{id} <span class="badge {h}">{h}</span>{}</h3>"#,
        if a.paused { " (paused)" } else { "" },
        h = escape(&a.health)
    );
    let _ = writeln!(
        out,
        r#"<p class="meta">{} · {} · local day {} · ramp week {}, ceiling {} · InMail credits {} · held until {}</p>"#,
        escape(&a.tier),
        escape(&a.timezone),
        a.local_day,
        a.ramp_week,
        a.ramp_ceiling,
        a.inmail_credits,
        time(a.held_until)
    );
    let _ = writeln!(out, r#"<p class="meta">health: {}</p>"#, escape(&a.health_reason));
    out.push_str("<table>\n");
    let t = &a.today;
    for (name, u) in [
        ("invites", t.invites),
        ("messages", t.messages),
        ("InMails", t.inmails),
        ("engagement", t.engagement),
        ("weekly invites", t.weekly_invites),
    ] {
        bar(out, name, u);
    }
    out.push_str("</table>\n");
    if a.waiting.is_empty() {
        out.push_str("<p class=\"meta\">waiting: none</p>\n");
    } else {
        out.push_str(
            "<table class=\"waiting\"><tr><th>waiting for</th><th>actions</th><th>until</th></tr>\n",
        );
        for w in &a.waiting {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&w.reason),
                w.count,
                time(w.until)
            );
        }
        out.push_str("</table>\n");
    }
    if let Some(days) = s.history.get(&a.id) {
        out.push_str(&chart::inline(&Panel {
            title: format!("{} · invites per day", a.id),
            days: days.clone(),
        }));
    }
    out.push_str("</section>\n");
}

pub fn render(s: &Snapshot) -> String {
    let r = &s.report;
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>sendgate</title>
<style>{STYLE}</style>
</head><body>
"#
    );
    let up = escape(&r.upstream.state);
    let _ = writeln!(
        out,
        r#"<h1>sendgate</h1><p class="meta">as of {} · upstream <span class="badge {up}" id="upstream">{up}</span>{}{}</p>"#,
        r.now.format("%Y-%m-%d %H:%M:%S UTC"),
        r.upstream
            .since
            .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_default(),
        if r.paused_all {
            " · <strong>all sending paused</strong>"
        } else {
            ""
        }
    );
    out.push_str("<table class=\"states\"><tr>");
    for (state, n) in &r.states {
        let _ = write!(out, "<th>{}</th><td>{n}</td>", escape(state));
    }
    out.push_str("</tr></table>\n");

    let _ = writeln!(out, "<h2>Accounts ({})</h2>", r.accounts.len());
    for a in r.accounts.iter().take(MAX_DASHBOARD_ACCOUNTS) {
        account(&mut out, s, a);
    }
    if r.accounts.len() > MAX_DASHBOARD_ACCOUNTS {
        let _ = writeln!(
            out,
            r#"<p class="meta">{} more accounts: see /metrics or <code>sendgate status</code>.</p>"#,
            r.accounts.len() - MAX_DASHBOARD_ACCOUNTS
        );
    }

    let _ = writeln!(out, "<h2>Campaigns ({})</h2>", r.campaigns.len());
    for c in r.campaigns.iter().take(MAX_DASHBOARD_CAMPAIGNS) {
        let id = escape(&c.id);
        let _ = writeln!(
            out,
            r#"<section class="card campaign" id="campaign-{id}"><h3>{id}{}</h3><p class="meta">{} · local day {}</p><table>"#,
            if c.paused { " (paused)" } else { "" },
            escape(&c.timezone),
            c.local_day
        );
        let t = &c.today;
        for (name, u) in [
            ("invites", t.invite),
            ("messages", t.message),
            ("InMails", t.inmail),
        ] {
            bar(&mut out, name, u);
        }
        out.push_str("</table>");
        if !c.states.is_empty() {
            let states: Vec<String> = c
                .states
                .iter()
                .map(|(k, v)| format!("{} {v}", escape(k)))
                .collect();
            let _ = write!(out, r#"<p class="meta">actions: {}</p>"#, states.join(" · "));
        }
        out.push_str("</section>\n");
    }
    if r.campaigns.len() > MAX_DASHBOARD_CAMPAIGNS {
        let _ = writeln!(
            out,
            r#"<p class="meta">{} more campaigns: see /metrics.</p>"#,
            r.campaigns.len() - MAX_DASHBOARD_CAMPAIGNS
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::timing::DurableTimes;
    use std::collections::BTreeMap;

    /// SPEC §8's example, with an id that needs escaping and the fields added since.
    pub(crate) fn snapshot() -> Snapshot {
        let report = serde_json::json!({
            "now": "2026-03-02T10:00:00Z", "paused_all": false,
            "upstream": {"state": "down", "since": "2026-03-02T09:50:00Z"},
            "states": {"queued": 1, "parked": 120, "inflight": 0, "sent": 15, "failed": 0, "unknown": 0, "cancelled": 0},
            "accounts": [{
                "id": "acct-1<script>alert(1)</script>", "health": "healthy",
                "health_reason": "acceptance 0.31 over 42 invites; 0 rate limits in 7 days",
                "ramp_ceiling": 46, "ramp_week": 4, "paused": false, "held_until": null,
                "inmail_credits": 50, "next_send": null,
                "today": {"invites": {"used": 12, "cap": 46}, "messages": {"used": 3, "cap": 80},
                          "inmails": {"used": 5, "cap": 5}, "engagement": {"used": 20, "cap": 100},
                          "weekly_invites": {"used": 70, "cap": null}},
                "waiting": [{"reason": "invites", "count": 120, "until": "2026-03-03T09:00:00Z"}],
                "tier": "sales_navigator_core", "timezone": "Europe/Berlin", "timezone_next": null,
                "local_day": "2026-03-02", "sent_today": 35
            }],
            "campaigns": [{"id": "q4&co", "paused": true,
                "today": {"invite": {"used": 12, "cap": 20}, "message": {"used": 3, "cap": 20}, "inmail": {"used": 0, "cap": 20}},
                "states": {"parked": 120, "sent": 15}, "timezone": "UTC", "local_day": "2026-03-02"}]
        });
        let report = serde_json::from_value(report).expect("a status report");
        let first = chrono::NaiveDate::from_ymd_opt(2026, 2, 17).expect("day");
        let days = (0..14)
            .map(|i| crate::chart::Day {
                day: first + chrono::Duration::days(i),
                invites: 10 + i as u32,
                sends: 30,
                cap: 46,
                ramp: 46,
            })
            .collect();
        let mut sent = BTreeMap::new();
        sent.insert(
            (
                "acct-1<script>alert(1)</script>".to_string(),
                crate::policy::Kind::Invite,
            ),
            12,
        );
        let mut outcomes: BTreeMap<&'static str, u64> =
            super::super::OUTCOMES.iter().map(|&o| (o, 0)).collect();
        outcomes.insert("sent", 12);
        let durable = DurableTimes::default();
        durable.observe(std::time::Duration::from_millis(2));
        Snapshot {
            history: [("acct-1<script>alert(1)</script>".to_string(), days)].into(),
            report,
            sent,
            outcomes,
            durable: durable.histogram(),
        }
    }

    #[test]
    fn the_page_is_self_contained_escaped_and_complete() {
        let page = render(&snapshot());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external asset"
        );
        assert!(!page.contains("<script"), "no script, and the id is escaped");
        assert!(page.contains("acct-1&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("q4&amp;co (paused)"));
        assert_eq!(page.matches("<svg").count(), 1, "the account's 14-day chart");
        assert_eq!(page.matches(r#"<text class="chart-date""#).count(), 14);
        // Today's bars against each cap, the ramp, health and its reason.
        assert!(page.contains("<td>12 / 46</td>") && page.contains("<td>70 (no cap)</td>"));
        assert!(
            page.contains(r#"<span class="meter full"><span class="meter-fill" style="width:100%">"#),
            "InMails 5 / 5 are full"
        );
        assert!(page.contains("ramp week 4, ceiling 46"));
        assert!(page.contains("acceptance 0.31 over 42 invites"));
        // Waiting actions by reason, with their earliest until.
        assert!(page.contains("<tr><td>invites</td><td>120</td><td>2026-03-03 09:00 UTC</td></tr>"));
        // The campaign's progress against its caps, and the upstream state.
        assert!(page.contains("<td>12 / 20</td>"));
        assert!(page.contains(r#"id="upstream">down</span> since 2026-03-02 09:50 UTC"#));
        assert!(page.contains(r#"<meta http-equiv="refresh""#));
    }

    /// The page's style never reaches into the chart: CSS sizes SVG shapes too (a
    /// `.bar` rule once stretched every bar across the chart).
    #[test]
    fn the_style_leaves_the_chart_alone() {
        let page = render(&snapshot());
        let svg = &page[page.find("<svg").expect("svg")..page.find("</svg>").expect("end")];
        for class in svg.split("class=\"").skip(1) {
            let class = &class[..class.find('"').expect("quote")];
            assert!(!STYLE.contains(&format!(".{class}")), "the style names .{class}");
        }
        assert!(svg.contains(r#"class="chart-bar""#));
    }
}
