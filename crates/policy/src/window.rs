//! Local days and sending windows in IANA time zones (SPEC §4).
//!
//! An instant is inside a window when its local weekday is one of the window's days and
//! its local wall time lies in `[start, end)`. Defining it on wall time makes both DST
//! edges fall out: on a 23-hour day a start inside the skipped hour opens at the first
//! instant after the gap; on a 25-hour day both passes through a repeated hour count,
//! so `next_open` after the first pass finds the second (the repeated start, or the
//! instant the clock goes back into the window) before the next day's opening.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How far forward a search for an opening looks: a window with at least one day opens
/// within 7 local days; one more covers a DST gap that swallows the start.
const SEARCH_DAYS: i64 = 9;
/// The longest run of non-existent local minutes any zone has had (Samoa skipped a day).
const GAP_SEARCH_MIN: i64 = 26 * 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Default for Window {
    /// Mon–Fri 09:00–17:00 (SPEC §4).
    fn default() -> Self {
        Window {
            days: [true, true, true, true, true, false, false],
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("09:00 is a valid time"),
            end: NaiveTime::from_hms_opt(17, 0, 0).expect("17:00 is a valid time"),
        }
    }
}

pub fn weekday_index(w: Weekday) -> usize {
    w.num_days_from_monday() as usize
}

pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The local calendar day of an instant in a zone.
pub fn local_day(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// The earliest instant whose local wall time is `local` or, when `local` falls in a
/// DST gap, the first instant after the gap. A repeated local time resolves to its
/// first occurrence.
pub fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    for _ in 0..GAP_SEARCH_MIN {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
            LocalResult::None => probe += Duration::minutes(1),
        }
    }
    // No zone has a gap this long; fall back to reading the wall time as UTC offset 0.
    Utc.from_utc_datetime(&local)
}

/// The instant a local day's clock goes back (the start of its repeated hour), if it does.
fn clock_back_on(tz: Tz, day: NaiveDate) -> Option<DateTime<Utc>> {
    let at = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0);
    let offset = |secs: i64| {
        at(secs).map(|t| {
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        })
    };
    let mut lo = start_of_day(tz, day).timestamp();
    let mut hi = start_of_day(tz, day.succ_opt()?).timestamp() - 1;
    let before = offset(lo)?;
    if offset(hi)? >= before {
        return None;
    }
    // Seconds: offset(lo) is the earlier, larger one; find the first with a smaller one.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset(mid)? < before {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    debug_assert!(offset(hi) < Some(before) && offset(hi - 1) == Some(before));
    at(hi)
}

/// The first instant of a local day.
pub fn start_of_day(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    first_instant_at_or_after(tz, day.and_time(NaiveTime::MIN))
}

/// The first instant of the local day after the one `t` falls on.
pub fn start_of_next_day(tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
    let next = local_day(tz, t).succ_opt().unwrap_or(NaiveDate::MAX);
    start_of_day(tz, next)
}

impl Window {
    pub fn is_open(&self, tz: Tz, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&tz);
        let time = local.time();
        self.days[weekday_index(local.weekday())] && self.start <= time && time < self.end
    }

    /// The earliest instant at or after `t` inside the window, or `None` for a window
    /// with no days (it never opens).
    pub fn next_open(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(tz, t) {
            return Some(t);
        }
        let first = local_day(tz, t);
        for offset in 0..SEARCH_DAYS {
            let day = first + Duration::days(offset);
            if !self.days[weekday_index(day.weekday())] {
                continue;
            }
            // On a 25-hour day the window may open twice: at the second pass through a
            // repeated start, or where the clock going back re-enters the window.
            let local = day.and_time(self.start);
            let second = match tz.from_local_datetime(&local) {
                LocalResult::Ambiguous(a, b) => Some(a.max(b).with_timezone(&Utc)),
                _ => None,
            };
            let candidates = [
                Some(first_instant_at_or_after(tz, local)),
                second,
                clock_back_on(tz, day),
            ];
            let opening = candidates
                .into_iter()
                .flatten()
                .filter(|&c| c >= t && self.is_open(tz, c))
                .min();
            if opening.is_some() {
                return opening;
            }
        }
        None
    }

    /// The end of the open stretch containing `t` (the first instant not open).
    pub fn close_after(&self, tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = local_day(tz, t);
        first_instant_at_or_after(tz, day.and_time(self.end))
    }

    /// The next opening that falls on a local day (of `day_tz`) later than the day of
    /// `t`: where an action blocked by a day's counter is parked (SPEC §4).
    pub fn next_open_on_later_day(&self, tz: Tz, day_tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_open(tz, start_of_next_day(day_tz, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("test time")
    }

    fn every_day(start: NaiveTime, end: NaiveTime) -> Window {
        Window {
            days: [true; 7],
            start,
            end,
        }
    }

    const NY: Tz = chrono_tz::America::New_York;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    /// One line per case: (window, zone, instant) → expected next opening.
    fn check(w: &Window, tz: Tz, t: &str, expected: &str) {
        assert_eq!(w.next_open(tz, utc(t)), Some(utc(expected)), "from {t} in {tz}");
    }

    #[test]
    fn next_open_table() {
        let w = Window::default();
        check(&w, NY, "2026-03-06T14:00:00Z", "2026-03-06T14:00:00Z"); // Fri 09:00 EST, open
        check(&w, NY, "2026-03-06T22:00:00Z", "2026-03-09T13:00:00Z"); // Fri 17:00 EST → Mon 09:00 EDT
        check(&w, NY, "2026-03-07T15:00:00Z", "2026-03-09T13:00:00Z"); // Saturday
        check(&w, BERLIN, "2026-03-27T16:00:00Z", "2026-03-30T07:00:00Z"); // Fri 17:00 CET → Mon CEST
        check(&w, BERLIN, "2026-10-23T15:00:00Z", "2026-10-26T08:00:00Z"); // → Mon CET
        check(&w, NY, "2026-10-30T21:00:00Z", "2026-11-02T14:00:00Z"); // Fri 17:00 EDT → Mon EST
    }

    #[test]
    fn local_days_are_23_and_25_hours() {
        let spring = start_of_day(NY, NaiveDate::from_ymd_opt(2026, 3, 9).expect("date"))
            - start_of_day(NY, NaiveDate::from_ymd_opt(2026, 3, 8).expect("date"));
        assert_eq!(spring, Duration::hours(23));
        let autumn = start_of_day(BERLIN, NaiveDate::from_ymd_opt(2026, 10, 26).expect("date"))
            - start_of_day(BERLIN, NaiveDate::from_ymd_opt(2026, 10, 25).expect("date"));
        assert_eq!(autumn, Duration::hours(25));
        let autumn_ny = start_of_day(NY, NaiveDate::from_ymd_opt(2026, 11, 2).expect("date"))
            - start_of_day(NY, NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"));
        assert_eq!(autumn_ny, Duration::hours(25));
        let spring_berlin = start_of_day(BERLIN, NaiveDate::from_ymd_opt(2026, 3, 30).expect("date"))
            - start_of_day(BERLIN, NaiveDate::from_ymd_opt(2026, 3, 29).expect("date"));
        assert_eq!(spring_berlin, Duration::hours(23));
    }

    #[test]
    fn start_in_skipped_hour_opens_after_the_gap() {
        // 2026-03-08 02:00 EST → 03:00 EDT; a 02:30 start opens at 03:00 EDT = 07:00Z.
        let w = every_day(hm(2, 30), hm(5, 0));
        check(&w, NY, "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z");
        // Berlin 2026-03-29 02:00 CET → 03:00 CEST = 01:00Z.
        check(&w, BERLIN, "2026-03-28T23:30:00Z", "2026-03-29T01:00:00Z");
        // A window that lies wholly inside the gap does not open that day.
        let inside = every_day(hm(2, 10), hm(2, 50));
        check(&inside, NY, "2026-03-08T05:00:00Z", "2026-03-09T06:10:00Z");
    }

    #[test]
    fn repeated_hour_opens_at_first_pass_and_both_passes_count() {
        // 2026-11-01 01:00–02:00 EDT then 01:00–02:00 EST in New York.
        let w = every_day(hm(1, 30), hm(1, 45));
        check(&w, NY, "2026-11-01T04:00:00Z", "2026-11-01T05:30:00Z");
        assert!(w.is_open(NY, utc("2026-11-01T05:35:00Z"))); // first pass, EDT
        assert!(w.is_open(NY, utc("2026-11-01T06:35:00Z"))); // second pass, EST
        assert!(!w.is_open(NY, utc("2026-11-01T06:50:00Z")));
        // Berlin 2026-10-25 02:00–03:00 CEST then CET.
        let b = every_day(hm(2, 15), hm(9, 0));
        check(&b, BERLIN, "2026-10-24T22:00:00Z", "2026-10-25T00:15:00Z");
    }

    /// After the first pass closes, the next opening is the second pass on the same
    /// day, not the next day's: a worker asleep until `next_open` must not skip it.
    #[test]
    fn after_the_first_pass_the_next_opening_is_the_second_pass() {
        // A window inside the repeated hour: 01:30 EDT = 05:30Z, 01:30 EST = 06:30Z.
        let inside = every_day(hm(1, 30), hm(1, 45));
        check(&inside, NY, "2026-11-01T05:45:00Z", "2026-11-01T06:30:00Z");
        check(&inside, NY, "2026-11-01T06:45:00Z", "2026-11-02T06:30:00Z");
        // A window that covers the start of the repeated hour: open 01:00–01:30 EDT
        // (05:00–05:30Z), and again when the clock goes back to 01:00 EST (06:00Z).
        let across = every_day(hm(1, 0), hm(1, 30));
        check(&across, NY, "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z");
        check(&across, NY, "2026-11-01T06:30:00Z", "2026-11-02T06:00:00Z");
        // 00:30–01:30: the clock going back re-enters the window at 06:00Z.
        let early = every_day(hm(0, 30), hm(1, 30));
        check(&early, NY, "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z");
        // Berlin 2026-10-25: 02:00 CEST = 00:00Z, 02:00 CET = 01:00Z.
        let b = every_day(hm(2, 0), hm(2, 30));
        check(&b, BERLIN, "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z");
        // No repeated hour: unchanged.
        check(&across, NY, "2026-11-02T06:30:00Z", "2026-11-03T06:00:00Z");
    }

    #[test]
    fn next_opening_on_a_later_day_uses_the_counters_zone() {
        let w = Window::default();
        // Thursday 16:00 in New York = 21:00Z; Berlin's local day already ended at 23:00Z
        // only later, so the later Berlin day starts Fri 00:00 CET = Thu 23:00Z: the next
        // New York opening after that is Friday 09:00 EST.
        let t = utc("2026-11-26T21:00:00Z");
        assert_eq!(
            w.next_open_on_later_day(NY, BERLIN, t),
            Some(utc("2026-11-27T14:00:00Z"))
        );
        assert_eq!(
            w.next_open_on_later_day(NY, NY, t),
            Some(utc("2026-11-27T14:00:00Z"))
        );
        // Friday: the next later day with an opening is Monday.
        let fri = utc("2026-11-27T15:00:00Z");
        assert_eq!(
            w.next_open_on_later_day(NY, NY, fri),
            Some(utc("2026-11-30T14:00:00Z"))
        );
    }

    #[test]
    fn a_window_without_days_never_opens() {
        let w = Window {
            days: [false; 7],
            ..Window::default()
        };
        assert_eq!(w.next_open(NY, utc("2026-11-26T21:00:00Z")), None);
    }

    /// Samoa skipped 2011-12-30 entirely: the first instant at or after that day's
    /// midnight is the next day's, found across a gap of 24 hours.
    #[test]
    fn a_skipped_day_is_crossed() {
        let local = NaiveDate::from_ymd_opt(2011, 12, 30)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("local time");
        assert_eq!(
            first_instant_at_or_after(chrono_tz::Pacific::Apia, local),
            utc("2011-12-30T10:00:00Z"),
            "2011-12-31 00:00 in Apia (UTC+14)"
        );
    }
}
