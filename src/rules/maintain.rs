//! Account maintenance (SPEC §3.3–§3.5), PURE: InMail refills due by `now`, a zone
//! change coming into force (a campaign's too), and once per local day the health assessment (from the
//! signals the store read) and the 7-day ramp step. A clock stepped back finds the day
//! already maintained and changes nothing.

use super::Change;
use crate::policy::health::{self, Signals};
use crate::policy::{credits, ramp};
use crate::store::codec::{day_num, from_ms, ms};
use crate::store::records::{Account, AccountDayRec, Campaign};
use crate::store::Settings;
use chrono::{DateTime, Duration, NaiveDate, Utc};

/// Refill bound: months caught up in one maintenance pass (a worker down for years
/// still refills, a month per pass).
pub const MAX_REFILLS_PER_PASS: usize = 24;

/// The local days health is judged on, counted back from today (index 0 = today):
/// the acceptance window (3–17 days ago) and the rate limits of the last 7 days.
pub const SIGNAL_DAYS: usize = if health::ACCEPTANCE_TO_DAYS_AGO + 1 > health::RATE_LIMIT_DAYS {
    health::ACCEPTANCE_TO_DAYS_AGO as usize + 1
} else {
    health::RATE_LIMIT_DAYS as usize
};

/// The health signals of SPEC §3.4 from an account's day counters, `recent[ago]` being
/// the local day `ago` days before today (a missing day counts as empty).
pub fn signals(restricted: bool, feedback_seen: bool, recent: &[AccountDayRec]) -> Signals {
    debug_assert!(recent.len() >= SIGNAL_DAYS, "the store reads every signal day");
    let day = |ago: i64| recent.get(ago as usize).copied().unwrap_or_default();
    let mut s = Signals {
        restricted,
        feedback_seen,
        ..Signals::default()
    };
    for ago in health::ACCEPTANCE_FROM_DAYS_AGO..=health::ACCEPTANCE_TO_DAYS_AGO {
        s.invites_sent += day(ago).invites_sent;
        s.invites_accepted += day(ago).invites_accepted;
    }
    for ago in 0..health::RATE_LIMIT_DAYS {
        s.rate_limits += day(ago).rate_limits;
    }
    s
}

/// SPEC §8 `health_reason`: what `policy::health::assess` judged, e.g.
/// `acceptance 0.31 over 42 invites; 0 rate limits in 7 days`.
pub fn health_reason(s: &Signals) -> String {
    let sample = s.invites_sent;
    let acceptance = if !s.feedback_seen {
        // SPEC §3.4: unknown is not zero; the account is `watch` for this reason.
        format!(
            "no acceptance feedback ({sample} invites sent {}-{} days ago)",
            health::ACCEPTANCE_FROM_DAYS_AGO,
            health::ACCEPTANCE_TO_DAYS_AGO
        )
    } else if sample == 0 {
        format!(
            "no invites sent {}-{} days ago",
            health::ACCEPTANCE_FROM_DAYS_AGO,
            health::ACCEPTANCE_TO_DAYS_AGO
        )
    } else {
        format!(
            "acceptance {:.2} over {sample} invites",
            f64::from(s.invites_accepted) / f64::from(sample)
        )
    };
    let mut reason = format!(
        "{acceptance}; {} rate limits in {} days",
        s.rate_limits,
        health::RATE_LIMIT_DAYS
    );
    if s.restricted {
        reason.push_str("; restricted");
    }
    reason
}

/// Judge `a`'s health on `sig` (SPEC §3.4); a change is logged with its reason.
pub fn judge_health(a: &mut Account, sig: Signals, st: &Settings, out: &mut Vec<Change>) {
    debug_assert_eq!(sig.restricted, a.restricted, "signals read from this account");
    let health::Assessment { health: new, reason } = health::assess(sig, &st.policy.health);
    if new != a.health {
        out.push(Change::HealthChanged {
            account: a.id.clone(),
            old: a.health,
            new,
            reason,
            health_reason: health_reason(&sig),
        });
        a.health = new;
    }
}

/// Bring `a` up to `now` without its day counters: InMail refills due, and a zone
/// change in force folded into its zone. Returns the local day whose once-a-day turn
/// is due ([`day_turn`], with that day's signals), or `None` when today was maintained.
pub fn catch_up(
    a: &mut Account,
    now: DateTime<Utc>,
    st: &Settings,
    out: &mut Vec<Change>,
) -> Option<NaiveDate> {
    let tier = st.policy.tier(a.tier);
    for _ in 0..MAX_REFILLS_PER_PASS {
        let next = credits::next_refill_after(from_ms(a.last_refill_ms), a.refill_day);
        if next > now {
            break;
        }
        let old = a.credits;
        a.credits = credits::refill(a.credits, tier.inmail_credits, tier.inmail_ceiling);
        a.last_refill_ms = ms(next);
        out.push(Change::CreditsRefilled {
            account: a.id.clone(),
            old,
            new: a.credits,
        });
    }
    let zones = a.zones().settled(now);
    if zones != a.zones() {
        a.set_zones(zones);
    }
    let today = a.day_at(now);
    (a.maintained_day < today).then_some(today)
}

/// Campaign `c` with a zone change in force by `now` folded into its zone, as
/// [`catch_up`] does for an account; `None` when it has none to fold. Its days are the
/// same either way: this only forgets a change that is over.
pub fn settle_campaign(c: &Campaign, now: DateTime<Utc>) -> Option<Campaign> {
    let zones = c.zones().settled(now);
    (zones != c.zones()).then(|| {
        let mut settled = c.clone();
        settled.set_zones(zones);
        settled
    })
}

/// The once-a-day turn of local day `today` (from [`catch_up`]): health judged on
/// `sig`, then at most one ramp step when a 7-day boundary was passed.
pub fn day_turn(a: &mut Account, today: NaiveDate, sig: Signals, st: &Settings, out: &mut Vec<Change>) {
    debug_assert!(a.maintained_day < today, "a day is maintained once");
    a.maintained_day = today;
    judge_health(a, sig, st, out);
    let steps = ramp::boundaries_passed(i64::from(day_num(a.ramp_start)), i64::from(day_num(today)));
    if steps > a.ramp_steps {
        // One step per evaluation, even after a long stop: an account that sent
        // nothing for weeks has not earned several steps.
        a.ramp_steps = steps;
        let target = a.invite_target(&st.policy);
        let (new, reason) = ramp::evaluate(a.ramp_ceiling, target, st.policy.ramp, a.health);
        if new != a.ramp_ceiling {
            out.push(Change::RampChanged {
                account: a.id.clone(),
                old: a.ramp_ceiling,
                new,
                reason: reason.as_str(),
            });
            a.set_ramp_ceiling(today, new);
        }
    }
}

/// A day turn summarises at most this many past days (a worker stopped for more than
/// a year summarises the last year).
pub const MAX_SUMMARY_DAYS: i64 = 366;

/// The figures of one account's local day, for `day_summary` (SPEC §11).
#[derive(Clone, Debug, PartialEq)]
pub struct DaySummary {
    pub day: NaiveDate,
    pub rec: AccountDayRec,
    pub invite_cap: u32,
    pub ramp_ceiling: u32,
    pub health: crate::policy::Health,
    pub inmail_balance: u32,
}

/// The local days of `a` that ended and are not summarised yet, as the day turn at
/// local day `today` sees them: from the day after the last one summarised (yesterday
/// for an account never summarised), at most [`MAX_SUMMARY_DAYS`] back, to the day
/// before `today`. Empty when today was reached before (a clock stepped back).
pub fn unsummarised(a: &Account, today: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    let yesterday = today.pred_opt().unwrap_or(today);
    let last = a.summarised_day.unwrap_or(yesterday);
    let first = (last + Duration::days(1)).max(today - Duration::days(MAX_SUMMARY_DAYS));
    first.iter_days().take_while(move |d| *d < today)
}

/// The summary of local day `day` of `a` (maintained to now), from its counters `rec`.
pub fn summary(a: &Account, day: NaiveDate, rec: AccountDayRec, st: &Settings) -> DaySummary {
    DaySummary {
        day,
        rec,
        invite_cap: a.invite_cap(&st.policy, day),
        ramp_ceiling: a.ramp_ceiling_on(day),
        health: a.health,
        inmail_balance: a.credits,
    }
}

/// Remember that `a`'s days up to `last` are summarised: none is summarised twice.
pub fn summarised(a: &mut Account, last: NaiveDate) {
    debug_assert!(
        a.summarised_day.is_none_or(|d| d < last),
        "a day is summarised once"
    );
    a.summarised_day = Some(last);
}
