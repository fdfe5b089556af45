//! Which time zone, and which local day, is in force for an account at an instant when
//! its zone changes (SPEC §3: counters are per *local day*).
//!
//! The rule: **an account's days never overlap in real time.** A new zone takes effect
//! when the current local day ends in the old zone; the first day in the new zone is
//! the first one that begins at or after that instant *and* carries a later date than
//! the last old day (two real intervals never share one date's counters). Until then the
//! last old day goes on: it lasts longer than 24 hours, never shorter, so its caps only
//! cover more time. Moving `Pacific/Kiritimati` (UTC+14) to `Pacific/Pago_Pago`
//! (UTC−11) right after a full day can therefore not open an earlier date with empty
//! counters.

use super::window::{local_day, start_of_day, start_of_next_day, Window};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

/// A zone change that has been decided and takes effect at `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub zone: Tz,
    /// The first instant of the first day in `zone`.
    pub from: DateTime<Utc>,
    /// The last day in the old zone: it lasts until `from`.
    pub last_old_day: NaiveDate,
}

/// An account's days: a zone, and possibly a change to another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zones {
    pub zone: Tz,
    pub pending: Option<Pending>,
}

/// Days searched for the first new-zone day with a later date: the new date can trail
/// the old one by at most a day (offsets span 26 hours), plus a skipped day (Samoa).
const SEARCH_DAYS: i64 = 4;

/// The pure decision: an account in `old` whose zone becomes `new` at `changed_at`.
/// Returns when the new zone applies and the last day in the old zone.
pub fn takes_effect(old: Tz, new: Tz, changed_at: DateTime<Utc>) -> (DateTime<Utc>, NaiveDate) {
    let last_old_day = local_day(old, changed_at);
    let end = start_of_next_day(old, changed_at);
    (first_day_after(new, last_old_day, end), last_old_day)
}

/// The start of the first day of `new` dated after `last_old_day` that begins, whole,
/// at or after `end`: never a day whose own hours began earlier, since those hours were
/// already counted on the old day.
fn first_day_after(new: Tz, last_old_day: NaiveDate, end: DateTime<Utc>) -> DateTime<Utc> {
    let first = local_day(new, end);
    let from = (0..SEARCH_DAYS)
        .map(|i| first + Duration::days(i))
        .filter(|d| *d > last_old_day)
        .map(|d| start_of_day(new, d))
        .find(|s| *s >= end)
        // Unreachable for real zones; fall back to a full extra day in the old zone.
        .unwrap_or(end + Duration::days(2));
    debug_assert!(from >= end && local_day(new, from) > last_old_day);
    from
}

impl Zones {
    pub fn fixed(zone: Tz) -> Zones {
        Zones { zone, pending: None }
    }

    /// The zone in force at `t` (windows follow it).
    pub fn zone_at(&self, t: DateTime<Utc>) -> Tz {
        match self.pending {
            Some(p) if t >= p.from => p.zone,
            _ => self.zone,
        }
    }

    /// The account's local day at `t`: the old zone's date, held at the last old day
    /// until the new zone applies, then the new zone's date.
    pub fn day_at(&self, t: DateTime<Utc>) -> NaiveDate {
        match self.pending {
            Some(p) if t >= p.from => local_day(p.zone, t),
            Some(p) => local_day(self.zone, t).min(p.last_old_day),
            None => local_day(self.zone, t),
        }
    }

    /// The first instant of the account's day after the one `t` falls on.
    pub fn start_of_next_day(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self.pending {
            Some(p) if t >= p.from => start_of_next_day(p.zone, t),
            Some(p) if self.day_at(t) >= p.last_old_day => p.from,
            _ => start_of_next_day(self.zone, t),
        }
    }

    /// The first instant of the account's day `d` (or of the first day after it, when
    /// `d` is a date a zone change skips).
    pub fn start_of_day(&self, d: NaiveDate) -> DateTime<Utc> {
        match self.pending {
            Some(p) if d > p.last_old_day => start_of_day(p.zone, d).max(p.from),
            _ => start_of_day(self.zone, d),
        }
    }

    /// The same days from `now` on, with a change already in force folded in.
    pub fn settled(&self, now: DateTime<Utc>) -> Zones {
        match self.pending {
            Some(p) if now >= p.from => Zones::fixed(p.zone),
            _ => *self,
        }
    }

    /// The days after the zone is set to `new` at `now`. A change decided while an
    /// earlier one is still pending replaces it, from the end of the same old day.
    pub fn change(&self, new: Tz, now: DateTime<Utc>) -> Zones {
        let cur = self.settled(now);
        // The last old day already runs past its own end (a pending change holds it):
        // the next date's own hours have begun and are counted on it.
        let extended = cur
            .pending
            .is_some_and(|p| start_of_next_day(cur.zone, start_of_day(cur.zone, p.last_old_day)) < now);
        if cur.zone == new && !extended {
            // No change, or back to the zone in force before a pending change took
            // effect, while the old zone's day is still its own: its days simply go on.
            return Zones::fixed(new);
        }
        // Still inside the old zone's days: decide from the same last old day, so a
        // second change never moves its end before the one already decided.
        let at = match cur.pending {
            Some(p) => start_of_day(cur.zone, p.last_old_day),
            None => now,
        };
        let (from, last_old_day) = takes_effect(cur.zone, new, at);
        // A new day never starts part-way through its own hours: hours of it already
        // counted on the extended old day would be counted twice.
        let from = if from < now {
            first_day_after(new, last_old_day, now)
        } else {
            from
        };
        Zones {
            zone: cur.zone,
            pending: Some(Pending {
                zone: new,
                from,
                last_old_day,
            }),
        }
    }

    /// The earliest instant at or after `t` inside `w`, read in the zone in force then.
    pub fn next_open(&self, w: &Window, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.pending {
            Some(p) if t < p.from => match w.next_open(self.zone, t) {
                Some(o) if o < p.from => Some(o),
                _ => w.next_open(p.zone, p.from),
            },
            _ => w.next_open(self.zone_at(t), t),
        }
    }

    pub fn is_open(&self, w: &Window, t: DateTime<Utc>) -> bool {
        w.is_open(self.zone_at(t), t)
    }

    /// The next opening on a later account day than the one `t` falls on.
    pub fn next_open_on_later_day(&self, w: &Window, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_open(w, self.start_of_next_day(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KIRITIMATI: Tz = chrono_tz::Pacific::Kiritimati;
    const PAGO_PAGO: Tz = chrono_tz::Pacific::Pago_Pago;
    const ZONES: [Tz; 8] = [
        KIRITIMATI,
        PAGO_PAGO,
        chrono_tz::America::New_York,
        chrono_tz::Europe::Berlin,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Pacific::Apia,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::UTC,
    ];

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("test date")
    }

    /// One line per case: (old, new, changed at) → (new zone from, last old day).
    fn check(old: Tz, new: Tz, at: &str, from: &str, last: &str) {
        assert_eq!(
            takes_effect(old, new, utc(at)),
            (utc(from), date(last)),
            "{old} → {new} at {at}"
        );
    }

    #[test]
    fn takes_effect_table() {
        // Kiritimati Nov 25 = [Nov 24 10:00Z, Nov 25 10:00Z). Pago Pago's Nov 25 begins
        // at 11:00Z, but that date is taken: its first day is Nov 26 (Nov 26 11:00Z).
        check(
            KIRITIMATI,
            PAGO_PAGO,
            "2026-11-25T09:00:00Z",
            "2026-11-26T11:00:00Z",
            "2026-11-25",
        );
        // Pago Pago Nov 25 ends Nov 26 11:00Z = Nov 27 01:00 in Kiritimati: the first
        // Kiritimati day starting after it is Nov 28 (Nov 27 10:00Z).
        check(
            PAGO_PAGO,
            KIRITIMATI,
            "2026-11-25T20:00:00Z",
            "2026-11-27T10:00:00Z",
            "2026-11-25",
        );
        // Neighbouring zones: at the next midnight of the new zone.
        let (berlin, ny) = (chrono_tz::Europe::Berlin, chrono_tz::America::New_York);
        check(
            berlin,
            ny,
            "2026-11-25T12:00:00Z",
            "2026-11-26T05:00:00Z",
            "2026-11-25",
        );
        check(
            ny,
            berlin,
            "2026-11-25T12:00:00Z",
            "2026-11-26T23:00:00Z",
            "2026-11-25",
        );
        check(
            berlin,
            berlin,
            "2026-11-25T12:00:00Z",
            "2026-11-25T23:00:00Z",
            "2026-11-25",
        );
    }

    #[test]
    fn the_kiritimati_repro_keeps_one_day() {
        let at = utc("2026-11-25T09:00:00Z");
        let z = Zones::fixed(KIRITIMATI).change(PAGO_PAGO, at);
        assert_eq!(z.day_at(at), date("2026-11-25"));
        assert_eq!(z.day_at(at + Duration::minutes(10)), date("2026-11-25"));
        assert_eq!(z.day_at(utc("2026-11-26T10:59:59Z")), date("2026-11-25"));
        assert_eq!(z.day_at(utc("2026-11-26T11:00:00Z")), date("2026-11-26"));
        assert_eq!(z.zone_at(utc("2026-11-26T11:00:00Z")), PAGO_PAGO);
        assert_eq!(z.start_of_next_day(at), utc("2026-11-26T11:00:00Z"));
        // Changing back before it took effect undoes it.
        assert_eq!(
            z.change(KIRITIMATI, at + Duration::hours(1)),
            Zones::fixed(KIRITIMATI)
        );
    }

    /// UTC to Pago Pago, then back to UTC after the UTC day ran past its end: UTC's
    /// next date began while the old day still counted, so the old day runs on to the
    /// date after, never opening Nov 26 part-way through with empty counters.
    #[test]
    fn changing_back_after_the_old_day_ran_over_keeps_it_to_a_whole_day() {
        let z = Zones::fixed(Tz::UTC).change(PAGO_PAGO, utc("2026-11-25T23:30:00Z"));
        let back_at = utc("2026-11-26T01:00:00Z");
        assert_eq!(z.day_at(back_at), date("2026-11-25"));
        let back = z.change(Tz::UTC, back_at);
        assert_eq!(back.day_at(back_at), date("2026-11-25"));
        assert_eq!(back.day_at(utc("2026-11-26T23:59:59Z")), date("2026-11-25"));
        assert_eq!(back.day_at(utc("2026-11-27T00:00:00Z")), date("2026-11-27"));
        assert_eq!(back.start_of_next_day(back_at), utc("2026-11-27T00:00:00Z"));
        // The same for another zone whose next date already began (London is UTC+0).
        let london = z.change(chrono_tz::Europe::London, back_at);
        assert_eq!(london.day_at(utc("2026-11-26T12:00:00Z")), date("2026-11-25"));
        assert_eq!(london.start_of_next_day(back_at), utc("2026-11-27T00:00:00Z"));
        // Asked again, the change decides the same.
        assert_eq!(back.change(Tz::UTC, back_at + Duration::hours(1)), back);
    }

    fn instant(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(secs, 0).expect("in range")
    }

    proptest! {
        /// For any two zones, change instant and a second change: the account's day is
        /// a non-decreasing function of time (so each day is one interval and no two
        /// overlap), the past is unchanged, the current day is never cut short, and
        /// the last zone applies within three days.
        #[test]
        fn days_never_overlap(
            a in 0..ZONES.len(), b in 0..ZONES.len(), c in 0..ZONES.len(),
            at in 1_700_000_000i64..1_900_000_000,
            second_after_s in 0i64..200_000,
        ) {
            let (old, new, third) = (ZONES[a], ZONES[b], ZONES[c]);
            let t0 = instant(at);
            let z = Zones::fixed(old).change(new, t0);
            let t1 = t0 + Duration::seconds(second_after_s);
            let z2 = z.change(third, t1);
            let before = Zones::fixed(old);
            let mut prev: Option<NaiveDate> = None;
            let mut t = t0 - Duration::days(2);
            while t < t0 + Duration::days(6) {
                let zz = if t < t1 { z } else { z2 };
                let d = zz.day_at(t);
                if t < t0 {
                    prop_assert_eq!(d, before.day_at(t), "the past changes at {}", t);
                }
                if t >= t0 && t < start_of_next_day(old, t0) {
                    prop_assert_eq!(d, local_day(old, t0), "the current day is cut at {}", t);
                }
                if let Some(p) = prev {
                    prop_assert!(d >= p, "{old}→{new}→{third}: day {d} after {p} at {t}");
                    // A day that began after a change is whole: its own first hour
                    // came no earlier than the last instant seen on the day before.
                    if d > p && t >= t0 {
                        let own = start_of_day(zz.zone_at(t), d);
                        prop_assert!(
                            own > t - Duration::minutes(17),
                            "{old}→{new}→{third}: day {d} begins at {t}, its own hours at {own}"
                        );
                    }
                }
                prev = Some(d);
                t += Duration::minutes(17);
            }
            let late = t1 + Duration::days(4);
            prop_assert_eq!(z2.day_at(late), local_day(third, late));
            prop_assert_eq!(z2.zone_at(late), third);
        }

        /// Where the next day begins agrees with `day_at`, and `start_of_day` of that
        /// day is that instant.
        #[test]
        fn next_day_boundary_agrees(
            a in 0..ZONES.len(), b in 0..ZONES.len(),
            at in 1_700_000_000i64..1_900_000_000,
            probe_s in 0i64..300_000,
        ) {
            let t0 = instant(at);
            let z = Zones::fixed(ZONES[a]).change(ZONES[b], t0);
            let t = t0 + Duration::seconds(probe_s);
            let next = z.start_of_next_day(t);
            prop_assert!(next > t);
            prop_assert_eq!(z.day_at(next - Duration::milliseconds(1)), z.day_at(t));
            prop_assert!(z.day_at(next) > z.day_at(t));
            prop_assert_eq!(z.start_of_day(z.day_at(next)), next);
        }
    }

    /// Kiritimati (UTC+14) to Pago Pago (UTC-11) decided at 2026-11-25T00:00Z: the
    /// old day 2026-11-25 runs on until Pago Pago's 2026-11-26 begins. Each method of
    /// `Zones` on either side of the hand-over, with the instants worked out by hand.
    #[test]
    fn a_pending_change_hands_over_exactly_at_its_instant() {
        let (old, new) = (chrono_tz::Pacific::Kiritimati, chrono_tz::Pacific::Pago_Pago);
        let day = |s: &str| s.parse::<NaiveDate>().expect("date");
        let (from, last_old_day) = takes_effect(old, new, utc("2026-11-25T00:00:00Z"));
        assert_eq!(
            (from, last_old_day),
            (utc("2026-11-26T11:00:00Z"), day("2026-11-25"))
        );
        let z = Zones {
            zone: old,
            pending: Some(Pending {
                zone: new,
                from,
                last_old_day,
            }),
        };
        let before = from - Duration::seconds(1);
        assert_eq!((z.zone_at(before), z.zone_at(from)), (old, new));
        assert_eq!(z.day_at(before), day("2026-11-25"), "the old day runs on");
        assert_eq!(z.day_at(from), day("2026-11-26"));
        // Next day: an earlier old day ends at its own midnight; the last old day ends
        // at the hand-over, however late it already is.
        assert_eq!(
            z.start_of_next_day(utc("2026-11-24T00:00:00Z")),
            utc("2026-11-24T10:00:00Z")
        );
        assert_eq!(z.start_of_next_day(utc("2026-11-24T12:00:00Z")), from);
        assert_eq!(z.start_of_next_day(utc("2026-11-26T00:00:00Z")), from);
        assert_eq!(z.start_of_next_day(from), utc("2026-11-27T11:00:00Z"));
        // Start of day: the last old day began at Kiritimati's midnight; the first new
        // day at the hand-over.
        assert_eq!(z.start_of_day(day("2026-11-25")), utc("2026-11-24T10:00:00Z"));
        assert_eq!(z.start_of_day(day("2026-11-26")), from);
        assert_eq!(z.start_of_day(day("2026-11-27")), utc("2026-11-27T11:00:00Z"));
        // An all-day window is open now, in the old zone before the hand-over.
        let all_day = Window {
            days: [true; 7],
            start: chrono::NaiveTime::from_hms_opt(0, 0, 0).expect("time"),
            end: chrono::NaiveTime::from_hms_opt(23, 59, 0).expect("time"),
        };
        let t = utc("2026-11-25T00:00:00Z");
        assert_eq!(z.next_open(&all_day, t), Some(t));

        // 09:00-17:00 every day: 19:00Z-03:00Z in Kiritimati, 20:00Z-04:00Z in Pago Pago.
        let hours = |h0, h1| Window {
            days: [true; 7],
            start: chrono::NaiveTime::from_hms_opt(h0, 0, 0).expect("time"),
            end: chrono::NaiveTime::from_hms_opt(h1, 0, 0).expect("time"),
        };
        let office = hours(9, 17);
        let at = |s| z.next_open(&office, utc(s));
        assert_eq!(
            at("2026-11-25T04:00:00Z"),
            Some(utc("2026-11-25T19:00:00Z")),
            "old zone, before the hand-over"
        );
        assert_eq!(
            at("2026-11-26T05:00:00Z"),
            Some(utc("2026-11-26T20:00:00Z")),
            "an old opening after the hand-over does not count"
        );
        assert_eq!(
            at("2026-11-27T12:00:00Z"),
            Some(utc("2026-11-27T20:00:00Z")),
            "new zone, after the hand-over"
        );
        assert!(z.is_open(&office, utc("2026-11-25T20:00:00Z")));
        assert!(
            !z.is_open(&office, utc("2026-11-26T19:30:00Z")),
            "Pago Pago is not open yet"
        );
        assert!(z.is_open(&office, utc("2026-11-26T20:30:00Z")));
        assert_eq!(
            z.next_open_on_later_day(&office, utc("2026-11-25T20:00:00Z")),
            Some(utc("2026-11-26T20:00:00Z")),
            "the day after the last old day is Pago Pago's 2026-11-26"
        );
        // An old-zone opening exactly at the hand-over belongs to the new zone's days.
        let early = hours(1, 23);
        assert_eq!(
            z.next_open(&early, utc("2026-11-26T10:30:00Z")),
            Some(utc("2026-11-26T12:00:00Z")),
            "01:00 in Pago Pago, not 01:00 in Kiritimati at the hand-over itself"
        );
    }
}
