//! `sendgate status [--account ID] [--campaign ID] [--json] [--at TIME]` (SPEC §8):
//! asked of the running worker through its admin socket, else read from the store
//! (never created). The human form fits 100 columns.

use super::list::fit;
use crate::store::{StatusReport, Use};
use std::fmt::Write;

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn pair(u: Use) -> String {
    match u.cap {
        Some(c) => format!("{}/{c}", u.used),
        None => format!("{}/-", u.used),
    }
}

/// The report as a readable table of at most 100 columns.
pub fn table(v: &StatusReport) -> String {
    let mut out = String::new();
    let since = v
        .upstream
        .since
        .map_or("worker start".to_string(), |t| time(Some(t)));
    let _ = writeln!(
        out,
        "status at {}   upstream {} since {since}   kill switch {}",
        time(Some(v.now)),
        v.upstream.state,
        if v.paused_all { "ON (pause --all)" } else { "off" }
    );
    if let Some(c) = &v.cluster {
        let _ = writeln!(
            out,
            "cluster {} as {}   owns {} account(s)",
            c.state,
            fit(&c.node, 40),
            c.owned.len()
        );
    }
    let counts: Vec<String> = v.states.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(out, "actions: {}", counts.join(", "));
    if !v.detail_complete {
        let _ = writeln!(out, "(too many actions: waiting and campaign states are partial)");
    }
    for a in &v.accounts {
        let t = &a.today;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "account {}  {}  {}  day {}{}",
            fit(&a.id, 40),
            a.tier,
            a.timezone,
            a.local_day,
            if a.paused { "  PAUSED" } else { "" }
        );
        let _ = writeln!(out, "  health {} ({})", a.health, fit(&a.health_reason, 80));
        let _ = writeln!(
            out,
            "  ramp ceiling {} (week {})  inmail credits {}  held until {}  next send {}",
            a.ramp_ceiling,
            a.ramp_week,
            a.inmail_credits,
            time(a.held_until),
            time(a.next_send)
        );
        let _ = writeln!(
            out,
            "  today: invites {}  messages {}  inmails {}  engagement {}  7-day invites {}",
            pair(t.invites),
            pair(t.messages),
            pair(t.inmails),
            pair(t.engagement),
            pair(t.weekly_invites)
        );
        for c in &a.campaigns {
            let _ = writeln!(
                out,
                "  campaign {}: invite {}  message {}  inmail {}",
                fit(&c.id, 40),
                pair(c.today.invite),
                pair(c.today.message),
                pair(c.today.inmail)
            );
        }
        for w in &a.waiting {
            let _ = writeln!(
                out,
                "  waiting {:>7} {:<24} until {}",
                w.count,
                fit(&w.reason, 24),
                time(w.until)
            );
        }
    }
    if !v.campaigns.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>9} {:>9} {:>9} {:<7} actions",
            "campaign", "day", "invite", "message", "inmail", "paused"
        );
        for c in &v.campaigns {
            let paused = match (c.paused, c.operator_paused) {
                (_, true) => "pause",
                (true, false) => "file",
                (false, false) => "no",
            };
            let states: Vec<String> = c.states.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                out,
                "{:<20} {:<10} {:>9} {:>9} {:>9} {:<7} {}",
                fit(&c.id, 20),
                c.local_day,
                pair(c.today.invite),
                pair(c.today.message),
                pair(c.today.inmail),
                paused,
                fit(&states.join(", "), 36)
            );
        }
    }
    out
}
