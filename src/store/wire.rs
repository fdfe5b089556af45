//! The store's wire types: what every record is on disk. Plain data owned by the store;
//! nothing here names a policy type or an in-memory record (the policy crate's `Kind`,
//! the store's `Action`, ...), so no change outside this file can change stored bytes.
//!
//! A record is postcard-encoded by position inside the `Stored` envelope (`codec.rs`):
//! never reorder or remove a field here; a record that grows gets a new `Stored` layout
//! (as `AccountV2W` and `CampaignV2W` did). An enum is written as the explicit tag of its wire enum, a
//! varint: the same bytes postcard wrote for the variant index when the policy enums
//! were stored as they are (format 1 and 2 stores read unchanged). Never renumber a tag;
//! a new variant takes the next free one.
//!
//! The conversions to and from the in-memory types live in one place, `store::edge`.
//! `store::golden` pins the bytes of every record and every tag.

use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A local day as stored: its text, as chrono writes it (`2026-03-04`), but written and
/// read here without chrono's general formatter and parser (the send path encodes and
/// decodes an account's days at every reservation). The bytes are the same; a day
/// outside years 0–9999, or text of another shape, goes through chrono itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day(pub NaiveDate);

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use chrono::Datelike;
        let (y, m, d) = (self.0.year(), self.0.month(), self.0.day());
        if !(0..=9999).contains(&y) {
            return self.0.serialize(s);
        }
        let digit = |n: u32| b'0' + (n % 10) as u8;
        let y = y as u32;
        let text = [
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            digit(m / 10),
            digit(m),
            b'-',
            digit(d / 10),
            digit(d),
        ];
        debug_assert_eq!(&text[..], self.0.to_string().as_bytes());
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Day;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a date")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Day, E> {
                if let Some(day) = plain_day(v.as_bytes()) {
                    return Ok(Day(day));
                }
                v.parse().map(Day).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// `YYYY-MM-DD`, all digits, a day that exists; anything else is chrono's to judge.
fn plain_day(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

/// An enum the store writes by explicit tag.
pub trait WireEnum: Copy + Eq + fmt::Debug + 'static {
    /// What the enum is, for errors (`kind`, `tier`, ...).
    const NAME: &'static str;
    /// Every variant, in tag order.
    const ALL: &'static [Self];
    fn tag(self) -> u32;
    fn from_tag(tag: u32) -> Option<Self>;
}

/// Declares a wire enum: `Name = tag` for each variant, tags explicit so that the
/// declaration order does not matter; `from_tag` is the same table read backwards.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident = $tag:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $tag,)+
        }

        impl WireEnum for $name {
            const NAME: &'static str = $what;
            const ALL: &'static [Self] = &[$($name::$variant,)+];

            fn tag(self) -> u32 {
                self as u32
            }

            fn from_tag(tag: u32) -> Option<Self> {
                match tag {
                    $($tag => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_enum! {
    /// A subscription tier (`Account::tier`).
    TierW, "tier", {
        Free = 0,
        PremiumCareer = 1,
        PremiumBusiness = 2,
        SalesNavigatorCore = 3,
        SalesNavigatorAdvanced = 4,
        RecruiterLite = 5,
        Recruiter = 6,
    }
}

wire_enum! {
    /// An account's health (`Account::health`).
    HealthW, "health", {
        Healthy = 0,
        Watch = 1,
        AtRisk = 2,
        Restricted = 3,
    }
}

wire_enum! {
    /// The kind of an action; also the index of `AccountDayW::sent_by_kind`.
    KindW, "kind", {
        Invite = 0,
        Message = 1,
        Inmail = 2,
        ProfileView = 3,
        Comment = 4,
        Reaction = 5,
    }
}

wire_enum! {
    /// The state of an action; also the index of `StateCountsW`.
    StateW, "state", {
        Queued = 0,
        Parked = 1,
        Inflight = 2,
        Sent = 3,
        Failed = 4,
        Unknown = 5,
        Cancelled = 6,
    }
}

/// A stored tag of wire enum `E`: written as a varint `u32`, read as any `u32` so that
/// an unknown tag becomes a clear error at the edge (`Tag::get`), not a postcard one.
pub struct Tag<E> {
    raw: u32,
    _enum: PhantomData<E>,
}

impl<E: WireEnum> Tag<E> {
    pub fn of(e: E) -> Tag<E> {
        Tag {
            raw: e.tag(),
            _enum: PhantomData,
        }
    }

    pub fn raw(&self) -> u32 {
        self.raw
    }

    /// The variant, or an error naming the enum and the unknown tag.
    pub fn get(&self) -> Result<E, String> {
        E::from_tag(self.raw).ok_or_else(|| format!("unknown {} tag {}", E::NAME, self.raw))
    }
}

impl<E> Clone for Tag<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Tag<E> {}

impl<E> PartialEq for Tag<E> {
    fn eq(&self, o: &Self) -> bool {
        self.raw == o.raw
    }
}

impl<E> fmt::Debug for Tag<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.raw)
    }
}

impl<E> Serialize for Tag<E> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.raw)
    }
}

impl<'de, E> Deserialize<'de> for Tag<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tag {
            raw: u32::deserialize(d)?,
            _enum: PhantomData,
        })
    }
}

/// Text of a record: borrowed when writing, owned when read.
pub type Text<'a> = Cow<'a, str>;

/// A sending window: days Monday first, wall-clock start and end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowW {
    pub days: [bool; 7],
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// Per-account cap overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountCapsW {
    pub invites: Option<u32>,
    pub messages: Option<u32>,
    pub inmails: Option<u32>,
    pub engagement: Option<u32>,
    pub weekly_invites: Option<u32>,
}

/// A time-zone change decided but not yet in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingZoneW<'a> {
    pub timezone: Text<'a>,
    pub from_ms: i64,
    pub last_old_day: Day,
}

/// `accounts` tree, layout 1 (`Stored::V1`): read, never written again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountV1W<'a> {
    pub id: Text<'a>,
    pub tier: Tag<TierW>,
    pub timezone: Text<'a>,
    pub window: WindowW,
    pub ramp_start: Day,
    pub established: bool,
    pub proxy: Option<Text<'a>>,
    pub caps: AccountCapsW,
    pub credits: u32,
    pub refill_day: u32,
    pub last_refill_ms: i64,
    pub ramp_ceiling: u32,
    pub ramp_history: Vec<(Day, u32)>,
    pub last_reserved_ms: Option<i64>,
    pub ramp_steps: i64,
    pub health: Tag<HealthW>,
    pub restricted: bool,
    pub held_until_ms: Option<i64>,
    pub maintained_day: Day,
}

/// `accounts` tree, layout 2 (`Stored::V2`): layout 1 and two fields at the end. A
/// nested struct is its fields in order (postcard writes no header), so `layout1`
/// takes the same bytes as if its fields stood here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountV2W<'a> {
    pub layout1: AccountV1W<'a>,
    pub pending_zone: Option<PendingZoneW<'a>>,
    pub summarised_day: Option<Day>,
}

/// `campaigns` tree, layout 1 (`Stored::V1`): read, never written again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignW<'a> {
    pub id: Text<'a>,
    pub timezone: Text<'a>,
    pub daily_limit: u32,
    pub split_invites: Option<u32>,
    pub split_messages: Option<u32>,
    pub split_inmails: Option<u32>,
    pub accounts: Cow<'a, [String]>,
    pub paused: bool,
}

/// `campaigns` tree, layout 2 (`Stored::V2`): layout 1 and a pending zone change at the
/// end, as `AccountV2W` grew (`layout1` takes the same bytes as its fields would).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignV2W<'a> {
    pub layout1: CampaignW<'a>,
    pub pending_zone: Option<PendingZoneW<'a>>,
}

/// `actions` and `staged` trees, layout 1 (`Stored::V1`, format 1 and 2 stores): the
/// whole action, its id repeated. Read, never written again: a format-3 build rewrites
/// it as an `ActionStateW` and an `ActionBodyW` at its next write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionW<'a> {
    pub id: Text<'a>,
    pub campaign: Text<'a>,
    pub account: Text<'a>,
    pub kind: Tag<KindW>,
    pub prospect: Text<'a>,
    pub payload: Text<'a>,
    pub priority: i32,
    pub seq: u64,
    pub state: Tag<StateW>,
    pub attempts: u32,
    pub retries: u32,
    pub reason: Option<Text<'a>>,
    pub until_ms: Option<i64>,
    pub updated_ms: i64,
    pub sent_day: Option<Day>,
    pub accepted: bool,
    pub refunded: bool,
}

/// `actions` and `staged` trees, layout 2 (`Stored::V2`, format 3): what changes after
/// ingest, the record reserve and record rewrite. The id is the key; what never
/// changes is the action's `ActionBodyW` in `bodies`, under the same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionStateW<'a> {
    pub state: Tag<StateW>,
    pub attempts: u32,
    pub retries: u32,
    pub reason: Option<Text<'a>>,
    pub until_ms: Option<i64>,
    pub updated_ms: i64,
    /// The local day an invite was sent on, as days from the common era.
    pub sent_day: Option<i32>,
    pub accepted: bool,
    pub refunded: bool,
}

/// `bodies` tree (format 3): what an action is, written once when its job file is
/// staged and never rewritten; removed with the action. Keyed by the action id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionBodyW<'a> {
    pub campaign: Text<'a>,
    pub account: Text<'a>,
    pub kind: Tag<KindW>,
    pub prospect: Text<'a>,
    pub payload: Text<'a>,
    pub priority: i32,
    pub seq: u64,
}

/// `ActionBodyW` read in place: the same fields in the same order, its text borrowed
/// from the stored bytes (publishing reads a body only for its index key).
#[derive(Debug, Deserialize)]
pub struct ActionBodyView<'a> {
    pub campaign: &'a str,
    pub account: &'a str,
    pub kind: Tag<KindW>,
    pub prospect: &'a str,
    pub payload: &'a str,
    pub priority: i32,
    pub seq: u64,
}

/// The slots an account reserved on one local day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountReservedW {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
    pub engagement: u32,
}

/// `days` tree, `a` keys: one account on one local day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountDayW {
    pub reserved: AccountReservedW,
    pub invites_sent: u32,
    pub invites_accepted: u32,
    pub rate_limits: u32,
    /// Confirmed sends, indexed by `KindW` tag.
    pub sent_by_kind: [u32; 6],
}

/// `days` tree, `c` keys: one campaign on one local day of its zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignDayW {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
}

/// `meta/state_counts`: actions per state, indexed by `StateW` tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateCountsW(pub [u64; 7]);

/// `meta/unreported/<files key>`: a committed job file whose `file_applied` is not
/// logged yet, with its record counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileReportW<'a> {
    pub name: Text<'a>,
    pub hash: u64,
    pub accounts: u32,
    pub campaigns: u32,
    pub actions: u32,
    pub duplicates: u32,
    pub events: u32,
}

/// The limits in force when a reservation was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerLimitsW {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
    pub engagement: u32,
    pub weekly_invites: Option<u32>,
    pub campaign: u32,
}

/// `ledger` tree: one reservation (alone under an 8-byte key in format 1; in a
/// `LedgerReservationsW` in format 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntryW<'a> {
    pub action: Text<'a>,
    pub account: Text<'a>,
    pub campaign: Text<'a>,
    pub kind: Tag<KindW>,
    pub attempt: u32,
    pub at_ms: i64,
    pub account_day: Day,
    pub campaign_day: Day,
    pub limits: LedgerLimitsW,
}

/// `ledger` tree, `b` keys: every reservation of one reserve transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerReservationsW<'a> {
    pub entries: Vec<LedgerEntryW<'a>>,
}

/// `ledger` tree, `r` keys: the slots of one reservation given back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerReleaseW<'a> {
    pub action: Text<'a>,
    pub account: Text<'a>,
    pub campaign: Text<'a>,
    pub kind: Tag<KindW>,
    pub attempt: u32,
    pub at_ms: i64,
    pub account_day: Day,
    pub campaign_day: Day,
    pub reservation: u64,
}

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerOutcomeW<'a> {
    pub action: Text<'a>,
    pub attempt: u32,
    pub outcome: Text<'a>,
    pub state: Tag<StateW>,
    pub reason: Option<Text<'a>>,
    pub until_ms: Option<i64>,
    pub released: bool,
}

/// `ledger` tree, `o` keys: every outcome recorded by one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerOutcomesW<'a> {
    pub at_ms: i64,
    pub outcomes: Vec<LedgerOutcomeW<'a>>,
}

/// One key a transaction of the send path changed: its tree (the index in the
/// store's `TREE_NAMES`, which never changes order), the key, and the new value
/// (`None`: removed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalWriteW<'a> {
    pub tree: u8,
    pub key: Cow<'a, [u8]>,
    pub value: Option<Cow<'a, [u8]>>,
}

/// `wal` tree: everything one transaction of the send path changed, kept until its
/// changes are in their trees (`store::behind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalRecordW<'a> {
    pub writes: Vec<WalWriteW<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every wire enum lists its variants in tag order, tags 0, 1, 2, ... with no gap,
    /// and `from_tag` reads each tag back to its variant.
    fn dense<E: WireEnum>() -> Result<(), String> {
        for (i, e) in E::ALL.iter().enumerate() {
            if e.tag() as usize != i {
                return Err(format!("{} {e:?} has tag {}, listed at {i}", E::NAME, e.tag()));
            }
            if E::from_tag(e.tag()) != Some(*e) {
                return Err(format!("{} tag {} reads back wrong", E::NAME, e.tag()));
            }
        }
        match E::from_tag(E::ALL.len() as u32) {
            None => Ok(()),
            Some(e) => Err(format!("{} tag past the end reads as {e:?}", E::NAME)),
        }
    }

    #[test]
    fn wire_enums_are_dense_and_in_tag_order() {
        assert_eq!(dense::<TierW>(), Ok(()));
        assert_eq!(dense::<HealthW>(), Ok(()));
        assert_eq!(dense::<KindW>(), Ok(()));
        assert_eq!(dense::<StateW>(), Ok(()));
        assert_eq!(KindW::ALL.len(), 6, "sent_by_kind has one slot per kind");
        assert_eq!(StateW::ALL.len(), 7, "state counts have one slot per state");
    }

    proptest::proptest! {
        /// `Day` writes the bytes chrono's own `NaiveDate` writes, and each reads the
        /// other's back to the same day, over chrono's whole range of dates.
        #[test]
        fn a_day_is_stored_as_chrono_stores_it(n in -400_000i32..4_000_000) {
            let Some(d) = NaiveDate::from_num_days_from_ce_opt(n) else { return Ok(()) };
            let ours = postcard::to_allocvec(&Day(d)).expect("encodes");
            let theirs = postcard::to_allocvec(&d).expect("encodes");
            proptest::prop_assert_eq!(&ours, &theirs);
            proptest::prop_assert_eq!(postcard::from_bytes::<Day>(&theirs).expect("decodes"), Day(d));
            proptest::prop_assert_eq!(postcard::from_bytes::<NaiveDate>(&ours).expect("decodes"), d);
        }
    }

    /// Text of another shape is chrono's to read or refuse, as before.
    #[test]
    fn a_day_of_another_shape_is_read_by_chrono() {
        let read = |t: &str| postcard::from_bytes::<Day>(&postcard::to_allocvec(t).expect("encodes"));
        let chrono = |t: &str| postcard::from_bytes::<NaiveDate>(&postcard::to_allocvec(t).expect("encodes"));
        for t in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "20260101",
            "+12026-01-01",
            "-0001-01-01",
            "2026-0a-01",
            "",
        ] {
            assert_eq!(read(t).ok().map(|d| d.0), chrono(t).ok(), "{t:?}");
        }
        assert!(read("2026-02-30").is_err(), "a day that does not exist");
        assert_eq!(
            read("0000-01-01").expect("year 0").0,
            NaiveDate::from_ymd_opt(0, 1, 1).expect("day")
        );
    }

    #[test]
    fn an_unknown_tag_is_an_error_naming_the_enum() {
        let t: Tag<KindW> = postcard::from_bytes(&[9]).expect("any u32 reads as a tag");
        assert_eq!(t.get(), Err("unknown kind tag 9".to_string()));
        let t: Tag<KindW> = postcard::from_bytes(&[2]).expect("a tag");
        assert_eq!(t.get(), Ok(KindW::Inmail));
        // A tag is the one varint byte postcard writes for a variant index below 128.
        assert_eq!(
            postcard::to_allocvec(&Tag::of(StateW::Cancelled)).expect("encodes"),
            [6]
        );
    }

    /// The wire types stand alone: this file names no policy type and no in-memory
    /// record, so only an edit here (pinned by `store::golden`) changes stored bytes.
    #[test]
    fn wire_types_import_nothing_of_policy_or_records() {
        let src = include_str!("wire.rs");
        let code = src.split("#[cfg(test)]").next().unwrap_or(src);
        for line in code.lines().filter(|l| l.trim_start().starts_with("use ")) {
            assert!(
                !line.contains("policy") && !line.contains("records") && !line.contains("crate::"),
                "wire.rs imports {line}"
            );
        }
        assert!(!code.contains("policy::"), "wire.rs names a policy path");
        assert!(!code.contains("records::"), "wire.rs names an in-memory record");
    }
}
