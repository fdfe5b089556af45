//! Logging (SPEC §11): one event per line, JSON objects with `timestamp`, `level`,
//! `event` and the ids involved, or readable text. Payloads and proxy credentials are
//! never logged: `Event` carries ids only, and proxies are redacted where they appear.

use crate::config::LogFormat;
use crate::engine::Event;

/// Install the global subscriber. Logs go to standard error (journald takes them).
pub fn init(format: LogFormat) {
    // Lines go through `logline`: `vtime` under a virtual clock, a syslog priority
    // prefix when standard error is the journal.
    let builder = tracing_subscriber::fmt()
        .with_writer(crate::logline::MakeLine {
            json: format == LogFormat::Json,
        })
        .with_target(false)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}

/// Log one engine event with its stable name and ids.
pub fn event(ev: &Event) {
    use tracing::{info, warn};
    let name = ev.name();
    match ev {
        Event::FileApplied {
            file,
            accounts,
            campaigns,
            actions,
            duplicates,
            events,
        } => info!(
            event = name,
            file, accounts, campaigns, actions, duplicates, events
        ),
        Event::FileRejected {
            file,
            line,
            field,
            reason,
        } => warn!(event = name, file, line, field, reason),
        Event::FileProgress { file, done, total } => info!(event = name, file, done, total),
        Event::ActionReserved {
            action,
            account,
            campaign,
            kind,
            attempt,
        } => info!(
            event = name,
            action,
            account,
            campaign,
            kind = kind.as_str(),
            attempt
        ),
        Event::ActionSent {
            action,
            account,
            campaign,
            kind,
        } => info!(event = name, action, account, campaign, kind = kind.as_str()),
        Event::ActionParked {
            action,
            account,
            campaign,
            kind,
            counter,
            until,
        } => info!(
            event = name,
            action,
            account,
            campaign,
            kind = kind.as_str(),
            counter,
            until = until.map(crate::logline::rfc3339)
        ),
        Event::ActionRetry {
            action,
            account,
            campaign,
            kind,
            reason,
            until,
        } => warn!(
            event = name,
            action,
            account,
            campaign,
            kind = kind.as_str(),
            reason,
            until = until.map(crate::logline::rfc3339)
        ),
        Event::ActionFailed {
            action,
            account,
            campaign,
            kind,
            reason,
        } => warn!(
            event = name,
            action,
            account,
            campaign,
            kind = kind.as_str(),
            reason
        ),
        Event::ActionUnknown {
            action,
            account,
            campaign,
            kind,
            reason,
        } => warn!(
            event = name,
            action,
            account,
            campaign,
            kind = kind.as_str(),
            reason
        ),
        Event::CapExhausted {
            account,
            campaign,
            counter,
            day,
        } => info!(event = name, account, campaign, counter, day = %day),
        Event::RateLimited {
            action,
            account,
            campaign,
            kind,
        } => warn!(event = name, action, account, campaign, kind = kind.as_str()),
        Event::AccountHeld { account, until } => {
            warn!(event = name, account, until = %crate::logline::rfc3339(*until))
        }
        Event::RampChanged {
            account,
            old,
            new,
            reason,
        } => info!(event = name, account, old, new, reason),
        Event::HealthChanged {
            account,
            old,
            new,
            reason,
            health_reason,
        } => warn!(
            event = name,
            account,
            old = old.as_str(),
            new = new.as_str(),
            reason,
            health_reason
        ),
        Event::FeedbackMissing { accounts } => warn!(event = name, accounts),
        Event::EventsPolled {
            events,
            applied,
            duplicates,
            ignored,
            error: None,
            ..
        } => info!(event = name, events, applied, duplicates, ignored),
        Event::EventsPolled {
            error: Some(error),
            retry_at,
            ..
        } => warn!(
            event = name,
            error = error.as_str(),
            retry_at = retry_at.map(|t| t.to_rfc3339()).as_deref()
        ),
        Event::RedZone {
            account,
            counter,
            value,
        } => warn!(event = name, account = account.as_deref(), counter, value),
        Event::CreditsRefilled { account, old, new } => info!(event = name, account, old, new),
        Event::UpstreamDown {
            since,
            failures,
            reason,
        } => warn!(event = name, since = %crate::logline::rfc3339(*since), failures, reason),
        Event::UpstreamUp {
            down_since,
            down_s,
            probes,
        } => info!(event = name, down_since = %crate::logline::rfc3339(*down_since), down_s, probes),
        Event::Paused { scope, changed } => warn!(event = name, scope, changed),
        Event::Resumed { scope, changed } => warn!(event = name, scope, changed),
        Event::ActionCancelled {
            action,
            account,
            campaign,
            kind,
            by,
        }
        | Event::ActionRequeued {
            action,
            account,
            campaign,
            kind,
            by,
        } => info!(event = name, action, account, campaign, kind = kind.as_str(), by),
        Event::RecordApplied {
            file,
            line,
            account,
            campaign,
            action,
            effect,
            ..
        } => info!(
            event = name,
            file,
            line,
            account = account.as_deref(),
            campaign = campaign.as_deref(),
            action = action.as_deref(),
            effect
        ),
        Event::EventIgnored {
            source,
            line,
            kind,
            action,
            reason,
        } => warn!(
            event = name,
            source,
            line,
            kind,
            action = action.as_deref(),
            reason
        ),
        Event::DaySummary {
            account,
            day,
            sent,
            invites_reserved,
            invite_cap,
            ramp_ceiling,
            health,
            invites_accepted,
            rate_limits,
            inmail_balance,
        } => info!(
            event = name,
            account,
            day = %day,
            invites = sent[0],
            messages = sent[1],
            inmails = sent[2],
            profile_views = sent[3],
            comments = sent[4],
            reactions = sent[5],
            invites_reserved,
            invite_cap,
            ramp_ceiling,
            health = health.as_str(),
            invites_accepted,
            rate_limits,
            inmail_balance
        ),
    }
}
