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

/// `show ACTION`: the action, then its attempts in order: each reservation with the
/// limits in force, the release of its slots if it was not delivered, and its outcome.
pub fn show(h: &History) -> String {
    use crate::store::codec::from_ms;
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
    let _ = writeln!(
        out,
        "history: {} reservations, {} releases, {} outcomes",
        h.reservations.len(),
        h.releases.len(),
        h.outcomes.len()
    );
    // Per attempt: reserved, then released, then its outcome (the release and the
    // outcome are committed together). Each list is already in ledger order.
    let mut lines: Vec<(u32, u8, usize, String)> = Vec::new();
    for (i, e) in h.reservations.iter().enumerate() {
        let l = &e.limits;
        lines.push((
            e.attempt,
            0,
            i,
            format!(
                "  attempt {} reserved at {} (account day {}, campaign day {}): limits invites {} messages {} inmails {} engagement {} weekly {} campaign {}",
                e.attempt,
                time(Some(from_ms(e.at_ms))),
                e.account_day,
                e.campaign_day,
                l.invites,
                l.messages,
                l.inmails,
                l.engagement,
                l.weekly_invites.map_or("-".into(), |w| w.to_string()),
                if l.campaign == u32::MAX { "-".into() } else { l.campaign.to_string() }
            ),
        ));
    }
    for (i, r) in h.releases.iter().enumerate() {
        lines.push((
            r.attempt,
            1,
            i,
            format!(
                "  attempt {} released at {} (not delivered: its slots were given back)",
                r.attempt,
                time(Some(from_ms(r.at_ms)))
            ),
        ));
    }
    for (i, o) in h.outcomes.iter().enumerate() {
        lines.push((
            o.attempt,
            2,
            i,
            format!(
                "  attempt {} {} at {} -> {}{}{}{}",
                o.attempt,
                o.outcome,
                time(Some(o.at)),
                o.state.as_str(),
                o.reason.as_deref().map_or(String::new(), |r| format!(" ({r})")),
                o.until
                    .map_or(String::new(), |u| format!(" until {}", time(Some(u)))),
                if o.released { ", slots released" } else { "" }
            ),
        ));
    }
    lines.sort_by_key(|l| (l.0, l.1, l.2));
    for (_, _, _, l) in lines {
        let _ = writeln!(out, "{l}");
    }
    out
}
