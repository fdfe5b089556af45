//! The human forms of `list` and `show` (SPEC §8); `--json` prints the rows as they are.

use crate::store::{ActionRow, History};
use std::fmt::Write;

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Cut `s` to `n` characters, marking the cut.
pub fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// One line per action, in 100 columns (long ids are cut; `--json` has them whole).
pub fn table(rows: &[ActionRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<12} {:<8} {:<9} {:>3} {:<20} until",
        "action", "account", "campaign", "kind", "state", "att", "reason"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<12} {:<8} {:<9} {:>3} {:<20} {}",
            fit(&r.id, 24),
            fit(&r.account, 12),
            fit(&r.campaign, 12),
            fit(r.kind.as_str(), 8),
            r.state.as_str(),
            r.attempts,
            fit(r.reason.as_deref().unwrap_or("-"), 20),
            time(r.until)
        );
    }
    let _ = writeln!(out, "{} actions", rows.len());
    out
}

/// `show ACTION`: the action, then every reservation with the limits in force and
/// every release, in ledger order.
pub fn show(h: &History) -> String {
    let a = &h.action;
    let mut out = String::new();
    let _ = writeln!(out, "action    {}", a.id);
    let _ = writeln!(out, "account   {}", a.account);
    let _ = writeln!(out, "campaign  {}", a.campaign);
    let _ = writeln!(out, "kind      {}", a.kind);
    let _ = writeln!(out, "prospect  {}", h.prospect);
    let _ = writeln!(out, "state     {}", a.state.as_str());
    let _ = writeln!(out, "reason    {}", a.reason.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "until     {}", time(a.until));
    let _ = writeln!(out, "attempts  {}", a.attempts);
    let _ = writeln!(out, "updated   {}", time(Some(a.updated)));
    let _ = writeln!(out, "reservations: {}", h.reservations.len());
    for e in &h.reservations {
        let l = &e.limits;
        let _ = writeln!(
            out,
            "  attempt {} at {} (account day {}, campaign day {}): limits invites {} messages {} inmails {} engagement {} weekly {} campaign {}",
            e.attempt,
            time(Some(crate::store::codec::from_ms(e.at_ms))),
            e.account_day,
            e.campaign_day,
            l.invites,
            l.messages,
            l.inmails,
            l.engagement,
            l.weekly_invites.map_or("-".into(), |w| w.to_string()),
            if l.campaign == u32::MAX { "-".into() } else { l.campaign.to_string() }
        );
    }
    for r in &h.releases {
        let _ = writeln!(
            out,
            "  released attempt {} at {} (not delivered: its slots were given back)",
            r.attempt,
            time(Some(crate::store::codec::from_ms(r.at_ms)))
        );
    }
    out
}
