//! The event rules (SPEC §6, §9), PURE: what an event of a job file or of the
//! upstream's feed does to the action or account it names, and what the log says it
//! did (`Ok`) or why it changed nothing (`Err`, `event_ignored`). The store finds the
//! records an event names (an unknown account, campaign or action refuses it), reads
//! them, calls these rules and writes what they return.
//!
//! | event | effect | nothing when |
//! |---|---|---|
//! | `invite_accepted` | the invite matched by account and prospect: accepted, counted on the day it was sent | no sent invite, or accepted before |
//! | `reply_received` | the InMail's credit back, once | no sent InMail whose credit is still out |
//! | `account_restricted` / `account_resumed` | the flag, health judged again; resumed: its waiting actions go | the flag was already so |
//! | `tier_changed` | the tier | — |
//! | `campaign_paused` / `campaign_resumed` | the flag; resumed: its waiting actions go | — |
//! | `cancel_action` / `requeue_action` | `moves::Move` | the action's state does not move |

use super::moves::Move;
use crate::contract::jobfile::EventRecord;
use crate::policy::{credits, Kind, Tier};
use crate::store::records::{Account, AccountDayRec, Action, State};
use crate::store::Settings;
use chrono::{DateTime, NaiveDate, Utc};

/// What the log says an event did, or why it changed nothing.
pub type Said = Result<String, String>;

/// The event's `kind` as the log names it.
pub fn kind(e: &EventRecord) -> &'static str {
    match e {
        EventRecord::InviteAccepted { .. } => "invite_accepted",
        EventRecord::ReplyReceived { .. } => "reply_received",
        EventRecord::AccountRestricted { .. } => "account_restricted",
        EventRecord::AccountResumed { .. } => "account_resumed",
        EventRecord::TierChanged { .. } => "tier_changed",
        EventRecord::CampaignPaused { .. } => "campaign_paused",
        EventRecord::CampaignResumed { .. } => "campaign_resumed",
        EventRecord::CancelAction { .. } => "cancel_action",
        EventRecord::RequeueAction { .. } => "requeue_action",
    }
}

/// An acceptance counted: the invite, now accepted, and the account's local day it
/// was sent on, whose `invites_accepted` grows by one (acceptance ratios, SPEC §3.4).
#[derive(Clone, Debug, PartialEq)]
pub struct Acceptance {
    pub action: Action,
    pub day: NaiveDate,
}

impl Acceptance {
    /// The counters of `self.day` with the acceptance counted.
    pub fn count(&self, mut rec: AccountDayRec) -> AccountDayRec {
        rec.invites_accepted += 1;
        rec
    }
}

/// `invite_accepted` on `invite`, the action the account's link to the prospect names
/// (`None`: no link, or no such action). Acceptance feedback flows from now on either
/// way (the store marks it).
pub fn accept(invite: Option<&Action>) -> (Option<Acceptance>, Said) {
    let acceptance = invite.and_then(|a| match (a.accepted, a.sent_day) {
        (false, Some(day)) => Some(Acceptance {
            action: Action {
                accepted: true,
                ..a.clone()
            },
            day,
        }),
        _ => None,
    });
    let said = match acceptance {
        Some(_) => Ok("the acceptance was counted".into()),
        None => Err("no sent invite to this prospect from this account, or it was accepted before".into()),
    };
    (acceptance, said)
}

/// Whether a reply returns `a`'s InMail credit (SPEC §3.5): a sent InMail whose credit
/// is still out. Only then does the store read the account.
pub fn refundable(a: &Action) -> bool {
    a.kind == Kind::Inmail && a.state == State::Sent && !a.refunded
}

/// A credit returned: the InMail marked refunded (once per action), and its account
/// (when it still exists) with the credit back, within its tier's ceiling.
#[derive(Clone, Debug, PartialEq)]
pub struct Refund {
    pub action: Action,
    pub account: Option<Account>,
}

/// `reply_received` to `to` (the named action, or the prospect's last InMail from the
/// account; `None`: there is none). `account`: the InMail's account, read only when the
/// action is [`refundable`].
pub fn reply(to: Option<&Action>, account: Option<Account>, st: &Settings) -> (Option<Refund>, Said) {
    let Some(a) = to.filter(|a| refundable(a)) else {
        return (None, Err("no sent InMail whose credit is still out".into()));
    };
    let account = account.map(|mut acct| {
        debug_assert_eq!(acct.id, a.account, "the InMail's own account");
        let ceiling = st.policy.tier(acct.tier).inmail_ceiling;
        acct.credits = credits::refund(acct.credits, ceiling);
        acct
    });
    let refund = Refund {
        action: Action {
            refunded: true,
            ..a.clone()
        },
        account,
    };
    (Some(refund), Ok("the InMail credit was returned".into()))
}

/// `account_restricted` (`restricted`) or `account_resumed` on `a`: the flag set. The
/// store then judges its health again on its signals (`maintain::judge_health`) and,
/// on a resume, releases the actions waiting on it (also when it was not restricted:
/// a release left over by a crash is harmless).
pub fn restriction(a: &mut Account, restricted: bool) -> Said {
    let changed = a.restricted != restricted;
    a.restricted = restricted;
    match (restricted, changed) {
        (true, true) => Ok("the account sends nothing until account_resumed".into()),
        (true, false) => Err("already restricted".into()),
        (false, true) => Ok("the account sends again".into()),
        (false, false) => Err("not restricted".into()),
    }
}

/// `tier_changed`: always takes effect (the same tier is told again, not ignored).
pub fn tier(a: &mut Account, tier: Tier) -> Said {
    let said = format!("tier {} -> {}", a.tier.as_str(), tier.as_str());
    a.tier = tier;
    Ok(said)
}

/// `campaign_paused` (`paused`) or `campaign_resumed`: always takes effect; on a
/// resume the store releases the actions waiting on the campaign.
pub fn campaign_pause(paused: bool) -> Said {
    Ok(if paused {
        "the campaign sends nothing until campaign_resumed".into()
    } else {
        "the campaign sends again".into()
    })
}

/// `cancel_action` / `requeue_action` on `old`: the same rule as the operator's
/// `cancel` / `requeue` (SPEC §5, §6, §8). The action after the move, or why it does
/// not move.
pub fn moved(op: Move, old: &Action, now: DateTime<Utc>) -> (Option<Action>, Said) {
    match op.verdict(old, now) {
        Ok(new) => {
            let done = match op {
                Move::Cancel => "cancel_action",
                Move::Requeue => "requeue_action",
            };
            (Some(new), Ok(done.to_string()))
        }
        Err(why) => (None, Err(why)),
    }
}
