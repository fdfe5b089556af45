//! InMail credits: monthly refill up to the tier's rollover ceiling, refunds on reply
//! (SPEC §3.5).

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};

/// Refill days past 28 are moved to the month's last day (February has 28 or 29).
pub const MAX_REFILL_DAY: u32 = 31;

/// The balance after a refill: monthly credits added, never lifting it above the
/// ceiling, and never taking away credits above the ceiling that were set by hand.
pub fn refill(balance: u32, monthly: u32, ceiling: u32) -> u32 {
    balance.max(balance.saturating_add(monthly).min(ceiling))
}

/// The balance after a reply returns one credit (never above the ceiling).
pub fn refund(balance: u32, ceiling: u32) -> u32 {
    balance.max(balance.saturating_add(1).min(ceiling))
}

/// The balance after an attempt that was never received gives its credit back: exactly
/// the credit taken, unless a refill happened since the reservation, in which case the
/// refill's ceiling applies as for a reply.
pub fn give_back(balance: u32, ceiling: u32, refilled_since: bool) -> u32 {
    if refilled_since {
        refund(balance, ceiling)
    } else {
        balance.saturating_add(1)
    }
}

fn last_day_of_month(year: i32, month: u32) -> u32 {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|first| first.checked_add_months(Months::new(1)))
        .and_then(|next| next.pred_opt())
        .map_or(28, |last| last.day())
}

fn refill_instant(month: NaiveDate, refill_day: u32) -> Option<DateTime<Utc>> {
    let day = refill_day
        .clamp(1, MAX_REFILL_DAY)
        .min(last_day_of_month(month.year(), month.month()));
    let date = month.with_day(day)?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
}

/// The first refill instant (the refill day at 00:00 UTC) strictly after `t`: this
/// month's, or else next month's.
pub fn next_refill_after(t: DateTime<Utc>, refill_day: u32) -> DateTime<Utc> {
    let this_month = t.date_naive().with_day(1);
    let next_month = this_month.and_then(|m| m.checked_add_months(Months::new(1)));
    [this_month, next_month]
        .into_iter()
        .flatten()
        .filter_map(|m| refill_instant(m, refill_day))
        .find(|r| *r > t)
        // Only at the end of chrono's calendar: no refill ever comes.
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn refill_rolls_over_up_to_the_ceiling() {
        assert_eq!(refill(0, 50, 150), 50);
        assert_eq!(refill(120, 50, 150), 150);
        assert_eq!(refill(150, 50, 150), 150);
        assert_eq!(refill(200, 50, 150), 200); // set by hand above the ceiling: kept
        assert_eq!(refill(3, 0, 0), 3); // free tier adds nothing
    }

    #[test]
    fn refund_never_above_the_ceiling() {
        assert_eq!(refund(4, 15), 5);
        assert_eq!(refund(15, 15), 15);
        assert_eq!(refund(0, 0), 0);
    }

    #[test]
    fn give_back_is_exact_unless_a_refill_came_between() {
        assert_eq!(give_back(199, 150, false), 200, "a balance set above the ceiling");
        assert_eq!(
            give_back(150, 150, true),
            150,
            "refilled to the ceiling meanwhile"
        );
        assert_eq!(give_back(3, 15, true), 4);
    }

    #[test]
    fn refill_instants() {
        assert_eq!(
            next_refill_after(utc("2026-11-28T10:00:00Z"), 1),
            utc("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2026-12-01T00:00:00Z"), 1),
            utc("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2026-11-30T23:59:59Z"), 1),
            utc("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2026-11-10T00:00:00Z"), 15),
            utc("2026-11-15T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2027-02-01T00:00:00Z"), 31),
            utc("2027-02-28T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2028-02-01T00:00:00Z"), 30),
            utc("2028-02-29T00:00:00Z")
        );
    }

    /// The refill after a day late in the year is in the next year's January, and a
    /// month shorter than the refill day refills on its last day.
    #[test]
    fn next_refill_crosses_the_year_and_short_months() {
        assert_eq!(
            next_refill_after(utc("2026-12-15T08:00:00Z"), 1),
            utc("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2026-12-31T23:59:59Z"), 31),
            utc("2027-01-31T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2026-12-01T00:00:00Z"), 1),
            utc("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2026-11-30T00:00:00Z"), 31),
            utc("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2028-02-01T00:00:00Z"), 30),
            utc("2028-02-29T00:00:00Z")
        );
        assert_eq!(
            next_refill_after(utc("2027-02-28T00:00:00Z"), 30),
            utc("2027-03-30T00:00:00Z")
        );
        assert_eq!(last_day_of_month(2026, 12), 31);
        assert_eq!(last_day_of_month(2026, 11), 30);
        assert_eq!(last_day_of_month(2100, 2), 28);
        assert_eq!(last_day_of_month(2000, 2), 29);
    }
}
