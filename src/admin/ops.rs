//! What each admin request does to a store. The engine thread runs it between ticks
//! for the running worker; the CLI runs it on a store it opened itself. Events to log
//! (`paused`, `resumed`, `action_cancelled`, `action_requeued`, `event_ignored`) are
//! handed back, not logged here.

use super::protocol::{Reply, Request, LIST_PAGE};
use crate::engine::Event;
use crate::exit;
use crate::store::{Filter, Move, Scope, StatusReport, Store, StoreError, UpstreamStatus};
use chrono::{DateTime, Utc};

/// `status` reads at most this many actions for its per-campaign and waiting detail
/// (SPEC P8's figure); beyond it the report says `detail_complete: false`.
pub const STATUS_SCAN_MAX: usize = 1_000_000;

/// What only a running worker knows.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub upstream: UpstreamStatus,
    /// `pacing.min_gap_s`, for the next send.
    pub min_gap_s: u64,
    /// The fleet's state, with `[cluster]`.
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// The full status report at `now`: counters, detail, the upstream breaker.
pub fn status_report(
    store: &Store,
    now: DateTime<Utc>,
    ctx: &Context,
    scan_max: usize,
) -> Result<StatusReport, StoreError> {
    let mut report = store.status(now)?;
    report.upstream = ctx.upstream.clone();
    report.cluster = ctx.cluster.clone();
    report.detail_complete = store.status_detail(&mut report, now, ctx.min_gap_s, scan_max)?;
    Ok(report)
}

/// Run one request. A `StoreError` is fatal for the caller (SPEC P5); anything the
/// operator got wrong is a `Reply::Error`.
pub fn execute(
    store: &Store,
    req: &Request,
    now: DateTime<Utc>,
    ctx: &Context,
    events: &mut Vec<Event>,
) -> Result<Reply, StoreError> {
    if let Err(e) = req.validate() {
        return Ok(Reply::error(e, exit::USAGE));
    }
    Ok(match req {
        Request::Status {
            account,
            campaign,
            at,
        } => {
            let mut r = status_report(store, at.unwrap_or(now), ctx, STATUS_SCAN_MAX)?;
            if let Some(id) = account {
                if !r.accounts.iter().any(|a| &a.id == id) {
                    return Ok(Reply::error(format!("no account `{id}`"), exit::FAILURE));
                }
                r.accounts.retain(|a| &a.id == id);
                let drawn: Vec<String> = r
                    .accounts
                    .iter()
                    .flat_map(|a| a.campaigns.iter().map(|c| c.id.clone()))
                    .collect();
                r.campaigns.retain(|c| drawn.contains(&c.id));
            }
            if let Some(id) = campaign {
                if !r.campaigns.iter().any(|c| &c.id == id) {
                    return Ok(Reply::error(format!("no campaign `{id}`"), exit::FAILURE));
                }
                r.campaigns.retain(|c| &c.id == id);
                r.accounts.retain(|a| a.campaigns.iter().any(|c| &c.id == id));
            }
            Reply::Status(r)
        }
        Request::List { filter, limit, after } => {
            let page = if *limit == 0 {
                LIST_PAGE
            } else {
                (*limit).min(LIST_PAGE)
            };
            let (actions, more) = store.list_page(filter, after.as_ref(), page)?;
            Reply::List { actions, more }
        }
        Request::Show { action } => match store.history(action)? {
            Some(h) => Reply::Show(h),
            None => Reply::error(format!("no action `{action}`"), exit::FAILURE),
        },
        Request::Pause { scope } | Request::Resume { scope } => {
            let paused = matches!(req, Request::Pause { .. });
            if let Some(missing) = unknown(store, scope)? {
                return Ok(Reply::error(missing, exit::FAILURE));
            }
            let changed = store.set_pause(scope, paused, now)?;
            let scope_text = scope.describe();
            events.push(if paused {
                Event::Paused {
                    scope: scope_text,
                    changed,
                }
            } else {
                Event::Resumed {
                    scope: scope_text,
                    changed,
                }
            });
            Reply::Pause {
                scope: scope.clone(),
                paused,
                changed,
            }
        }
        Request::Cancel { ids, filter } | Request::Requeue { ids, filter } => {
            let op = if matches!(req, Request::Cancel { .. }) {
                Move::Cancel
            } else {
                Move::Requeue
            };
            let report = store.move_actions(op, ids, filter.as_ref(), now)?;
            moved_events(op, &report, events);
            Reply::Moved(report)
        }
        Request::Audit { from, to } => Reply::Audit(store.audit(*from, *to)?),
    })
}

/// One `action_cancelled` / `action_requeued` per action moved, one `event_ignored`
/// per action that could not move (SPEC §6: every request has a visible effect).
fn moved_events(op: Move, report: &crate::store::MoveReport, events: &mut Vec<Event>) {
    for r in &report.moved_rows {
        let (action, account, campaign, kind) = (r.id.clone(), r.account.clone(), r.campaign.clone(), r.kind);
        events.push(match op {
            Move::Cancel => Event::ActionCancelled {
                action,
                account,
                campaign,
                kind,
                by: "operator".into(),
            },
            Move::Requeue => Event::ActionRequeued {
                action,
                account,
                campaign,
                kind,
                by: "operator".into(),
            },
        });
    }
    for (id, why) in &report.refused_rows {
        events.push(Event::EventIgnored {
            source: "operator".into(),
            line: None,
            kind: match op {
                Move::Cancel => "cancel_action".into(),
                Move::Requeue => "requeue_action".into(),
            },
            action: Some(id.clone()),
            reason: why.clone(),
        });
    }
}

/// A pause or resume naming an account or campaign that does not exist.
fn unknown(store: &Store, scope: &Scope) -> Result<Option<String>, StoreError> {
    Ok(match scope {
        Scope::All => None,
        Scope::Account(id) => store.account(id)?.is_none().then(|| format!("no account `{id}`")),
        Scope::Campaign(id) => store
            .campaign(id)?
            .is_none()
            .then(|| format!("no campaign `{id}`")),
    })
}

/// The filter a bulk move or `list` was given, for messages.
pub fn describe_filter(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(s) = f.state {
        parts.push(format!("state {}", s.as_str()));
    }
    if let Some(a) = &f.account {
        parts.push(format!("account {a}"));
    }
    if let Some(c) = &f.campaign {
        parts.push(format!("campaign {c}"));
    }
    if let Some(k) = f.kind {
        parts.push(format!("kind {k}"));
    }
    parts.join(", ")
}
