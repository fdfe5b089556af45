//! Golden bytes: the exact encoding of every stored record, pinned. Records are written
//! as their wire types (`wire.rs`, converted in `edge.rs`), postcard-encoded by position,
//! enums as pinned tags, so reordering a field of a wire type or renumbering a tag
//! changes the bytes a store already holds. These tests make such a change fail loudly:
//! a stored type may only grow through a new `Stored` layout, never change in place.
//! The bytes are those format 1 and 2 stores hold (written when the policy types were
//! stored as they are): the wire types kept them.

use super::codec;
use super::edge::StoredAction;
use super::records::{
    Account, AccountCaps, AccountDayRec, Action, Campaign, FileReport, LedgerEntry, LedgerLimits,
    LedgerOutcome, LedgerOutcomes, LedgerRelease, LedgerReservations, PendingZone, State, StateCounts,
};
use super::wire::{HealthW, KindW, StateW, Tag, TierW, WireEnum};
use crate::policy::caps::{AccountDay, CampaignDay};
use crate::policy::{Health, Kind, Tier, Window};
use chrono::{NaiveDate, NaiveTime};

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid test date")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn account() -> Account {
    Account {
        id: "acct-1".into(),
        tier: Tier::SalesNavigatorCore,
        timezone: "Europe/Berlin".into(),
        window: Window {
            days: [true, true, true, true, true, false, true],
            start: NaiveTime::from_hms_opt(9, 30, 0).expect("time"),
            end: NaiveTime::from_hms_opt(17, 0, 0).expect("time"),
        },
        ramp_start: day(2026, 11, 2),
        established: false,
        proxy: Some("http://p:3128".into()),
        caps: AccountCaps {
            invites: Some(40),
            messages: None,
            inmails: Some(3),
            engagement: None,
            weekly_invites: Some(150),
        },
        credits: 47,
        refill_day: 5,
        last_refill_ms: 1_700_000_000_000,
        ramp_ceiling: 15,
        ramp_history: vec![(day(2026, 11, 2), 10), (day(2026, 11, 9), 15)],
        last_reserved_ms: Some(1_764_000_000_123),
        ramp_steps: 2,
        health: Health::Watch,
        restricted: false,
        held_until_ms: None,
        maintained_day: day(2026, 11, 28),
        pending_zone: Some(PendingZone {
            timezone: "Pacific/Kiritimati".into(),
            from_ms: 1_764_460_800_000,
            last_old_day: day(2026, 11, 29),
        }),
        summarised_day: Some(day(2026, 11, 27)),
    }
}

fn a_campaign() -> Campaign {
    Campaign {
        id: "q4".into(),
        timezone: "UTC".into(),
        daily_limit: 20,
        split_invites: Some(30),
        split_messages: None,
        split_inmails: Some(2),
        accounts: vec!["acct-1".into(), "acct-2".into()],
        paused: true,
        pending_zone: Some(PendingZone {
            timezone: "Pacific/Kiritimati".into(),
            from_ms: 1_764_460_800_000,
            last_old_day: day(2026, 11, 29),
        }),
    }
}

fn action() -> Action {
    Action {
        id: "q4/jane/inmail".into(),
        campaign: "q4".into(),
        account: "acct-1".into(),
        kind: Kind::Inmail,
        prospect: "https://www.linkedin.com/in/jane".into(),
        payload: "{\"note\":\"hi\"}".into(),
        priority: -2,
        seq: 300,
        state: State::Parked,
        attempts: 1,
        retries: 1,
        reason: Some("inmails".into()),
        until_ms: Some(1_764_403_200_000),
        updated_ms: 1_764_400_000_000,
        sent_day: None,
        accepted: false,
        refunded: true,
    }
}

fn limits() -> LedgerLimits {
    LedgerLimits {
        invites: 15,
        messages: 80,
        inmails: 5,
        engagement: 100,
        weekly_invites: None,
        campaign: 20,
    }
}

/// Encodes `value`, compares with `golden`, and decodes `golden` back to `value`.
fn pin<T: PartialEq + std::fmt::Debug>(
    what: &str,
    value: &T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> T,
    golden: &str,
) {
    let bytes = encode(value);
    assert_eq!(
        hex(&bytes),
        golden,
        "the stored encoding of {what} changed: existing stores would misread it. Add a new \
         `Stored` layout (and a migration) instead of changing the type in place"
    );
    assert_eq!(
        &decode(&unhex(golden)),
        value,
        "{what} no longer reads its pinned bytes"
    );
}

#[test]
fn account_layout_2() {
    pin(
        "Account",
        &account(),
        Account::encode,
        |b| Account::decode(b).expect("decodes"),
        "0106616363742d31030d4575726f70652f4265726c696e010101010100010830393a33303a30300831373a30303a30300a323032362d31312d303200010d687474703a2f2f703a333132380128000103000196012f0580a0abfef9620f020a323032362d31312d30320a0a323032362d31312d30390f01f6a1bfe9d666040100000a323032362d31312d32380112506163696669632f4b69726974696d61746980a0f9a0da660a323032362d31312d3239010a323032362d31312d3237",
    );
}

#[test]
fn campaign_layout_2() {
    // Layout 1's fields (as `campaign_layout_1_reads`), then the pending zone change.
    pin(
        "Campaign",
        &a_campaign(),
        Campaign::encode,
        |b| Campaign::decode(b).expect("decodes"),
        "010271340355544314011e0001020206616363742d3106616363742d32010112506163696669632f4b69726974696d61746980a0f9a0da660a323032362d31312d3239",
    );
}

#[test]
fn campaign_layout_1_reads() {
    // Layout 1 is never written again; a store may still hold it.
    let v1 = "000271340355544314011e0001020206616363742d3106616363742d3201";
    let want = Campaign {
        pending_zone: None,
        ..a_campaign()
    };
    assert_eq!(Campaign::decode(&unhex(v1)).expect("layout 1 reads"), want);
}

/// An action read from an `actions` value, and its body's bytes (format 3).
fn read_action(state: &[u8], body: &[u8]) -> Action {
    match Action::read_stored(state).expect("decodes") {
        StoredAction::Whole(a) => a,
        StoredAction::State(s) => Action::join("q4/jane/inmail", s, body).expect("joins"),
    }
}

#[test]
fn action_and_its_states() {
    // Format 3: the state record (`actions`, layout 2) and the body (`bodies`).
    const BODY: &str = "0002713406616363742d31022068747470733a2f2f7777772e6c696e6b6564696e2e636f6d2f696e2f6a616e650d7b226e6f7465223a226869227d03ac02";
    pin(
        "Action state",
        &action(),
        Action::encode_state,
        |b| read_action(b, &unhex(BODY)),
        "010101010107696e6d61696c7301808082ead96680b0fbe6d966000001",
    );
    pin(
        "Action body",
        &action(),
        Action::encode_body,
        |b| read_action(&action().encode_state(), b),
        BODY,
    );
    let sent = Action {
        state: State::Sent,
        reason: None,
        until_ms: None,
        sent_day: Some(day(2026, 11, 28)),
        accepted: true,
        ..action()
    };
    pin(
        "Action state (a sent invite)",
        &sent,
        Action::encode_state,
        |b| read_action(b, &unhex(BODY)),
        "01030101000080b0fbe6d96601d8a95a0101",
    );
    // Layout 1, as format 1 and 2 stores hold it: still read, never written.
    pin(
        "Action layout 1",
        &action(),
        Action::encode_layout1,
        |b| read_action(b, &[]),
        "000e71342f6a616e652f696e6d61696c02713406616363742d31022068747470733a2f2f7777772e6c696e6b6564696e2e636f6d2f696e2f6a616e650d7b226e6f7465223a226869227d03ac020101010107696e6d61696c7301808082ead96680b0fbe6d966000001",
    );
    // Every state by its variant index.
    let states: Vec<String> = State::ALL.iter().map(|s| hex(&codec::encode(s))).collect();
    assert_eq!(states, ["0000", "0001", "0002", "0003", "0004", "0005", "0006"]);
}

#[test]
fn enums_keep_their_variant_indexes() {
    let tiers: Vec<String> = [
        Tier::Free,
        Tier::PremiumCareer,
        Tier::PremiumBusiness,
        Tier::SalesNavigatorCore,
        Tier::SalesNavigatorAdvanced,
        Tier::RecruiterLite,
        Tier::Recruiter,
    ]
    .iter()
    .map(|t| hex(&codec::encode(t)))
    .collect();
    assert_eq!(tiers, ["0000", "0001", "0002", "0003", "0004", "0005", "0006"]);
    let health: Vec<String> = [Health::Healthy, Health::Watch, Health::AtRisk, Health::Restricted]
        .iter()
        .map(|h| hex(&codec::encode(h)))
        .collect();
    assert_eq!(health, ["0000", "0001", "0002", "0003"]);
    let kinds: Vec<String> = Kind::ALL.iter().map(|k| hex(&codec::encode(k))).collect();
    assert_eq!(kinds, ["0000", "0001", "0002", "0003", "0004", "0005"]);
}

#[test]
fn day_counters() {
    // In memory the slots follow `Kind as usize`; on disk, the kind's tag.
    let mut sent_by_kind = [0; 6];
    for (k, n) in [
        (Kind::Invite, 11),
        (Kind::Message, 3),
        (Kind::Inmail, 1),
        (Kind::ProfileView, 100),
        (Kind::Comment, 60),
        (Kind::Reaction, 40),
    ] {
        sent_by_kind[k as usize] = n;
    }
    let rec = AccountDayRec {
        reserved: AccountDay {
            invites: 12,
            messages: 3,
            inmails: 1,
            engagement: 200,
        },
        invites_sent: 11,
        invites_accepted: 4,
        rate_limits: 1,
        sent_by_kind,
    };
    pin(
        "AccountDayRec",
        &rec,
        codec::encode,
        |b| codec::decode("account day", b).expect("decodes"),
        "000c0301c8010b04010b0301643c28",
    );
    let camp = CampaignDay {
        invites: 9,
        messages: 300,
        inmails: 0,
    };
    pin(
        "CampaignDay",
        &camp,
        codec::encode,
        |b| codec::decode("campaign day", b).expect("decodes"),
        "0009ac0200",
    );
}

#[test]
fn ledger_records() {
    let entry = LedgerEntry {
        action: "q4/jane/inmail".into(),
        account: "acct-1".into(),
        campaign: "q4".into(),
        kind: Kind::Invite,
        attempt: 2,
        at_ms: 1_764_400_000_000,
        account_day: day(2026, 11, 29),
        campaign_day: day(2026, 11, 28),
        limits: limits(),
    };
    pin(
        "LedgerEntry",
        &entry,
        codec::encode,
        |b| codec::decode("ledger entry", b).expect("decodes"),
        "000e71342f6a616e652f696e6d61696c06616363742d31027134000280b0fbe6d9660a323032362d31312d32390a323032362d31312d32380f5005640014",
    );
    let release = LedgerRelease {
        action: "q4/jane/inmail".into(),
        account: "acct-1".into(),
        campaign: "q4".into(),
        kind: Kind::Message,
        attempt: 1,
        at_ms: 1_764_400_000_999,
        account_day: day(2026, 11, 29),
        campaign_day: day(2026, 11, 29),
        reservation: 77,
    };
    pin(
        "LedgerRelease",
        &release,
        codec::encode,
        |b| codec::decode("ledger release", b).expect("decodes"),
        "000e71342f6a616e652f696e6d61696c06616363742d310271340101cebffbe6d9660a323032362d31312d32390a323032362d31312d32394d",
    );
}

#[test]
fn ledger_outcomes() {
    let outcomes = LedgerOutcomes {
        at_ms: 1_764_400_001_000,
        outcomes: vec![
            LedgerOutcome {
                action: "q4/jane/inmail".into(),
                attempt: 1,
                outcome: "rate_limited".into(),
                state: State::Parked,
                reason: Some("rate_limited".into()),
                until_ms: Some(1_764_403_200_000),
                released: false,
            },
            LedgerOutcome {
                action: "q4/joe".into(),
                attempt: 3,
                outcome: "not_delivered".into(),
                state: State::Queued,
                reason: Some("not_delivered: connection refused".into()),
                until_ms: None,
                released: true,
            },
        ],
    };
    pin(
        "LedgerOutcomes",
        &outcomes,
        codec::encode,
        |b| codec::decode("ledger outcomes", b).expect("decodes"),
        "00d0bffbe6d966020e71342f6a616e652f696e6d61696c010c726174655f6c696d6974656401010c726174655f6c696d6974656401808082ead966000671342f6a6f65030d6e6f745f64656c6976657265640001216e6f745f64656c6976657265643a20636f6e6e656374696f6e20726566757365640001",
    );
    assert_eq!(
        codec::ledger_kind(&codec::outcome_key(7)),
        Some(codec::LedgerKind::Outcomes)
    );
    assert_eq!(
        codec::ledger_kind(&codec::reservations_key(7)),
        Some(codec::LedgerKind::Reservations)
    );
    assert_eq!(codec::inflight_index(&codec::inflight_value(7, 3)), Some(3));
    assert_eq!(codec::ledger_id(&codec::inflight_value(7, 3)), Some(7));
    assert_eq!(codec::inflight_index(&7u64.to_be_bytes()), None);
    assert_eq!(
        codec::ledger_kind(&codec::release_key(7)),
        Some(codec::LedgerKind::Release)
    );
    assert_eq!(
        codec::ledger_kind(&7u64.to_be_bytes()),
        Some(codec::LedgerKind::Reservation)
    );
    assert_eq!(codec::ledger_kind(b"0123456789"), None);
}

#[test]
fn ledger_reservations() {
    let entry = |action: &str, kind: Kind, attempt: u32| LedgerEntry {
        action: action.into(),
        account: "acct-1".into(),
        campaign: "q4".into(),
        kind,
        attempt,
        at_ms: 1_764_400_000_000,
        account_day: day(2026, 11, 29),
        campaign_day: day(2026, 11, 28),
        limits: limits(),
    };
    let batch = LedgerReservations {
        entries: vec![entry("q4/a", Kind::Invite, 1), entry("q4/b", Kind::Message, 2)],
    };
    pin(
        "LedgerReservations",
        &batch,
        codec::encode,
        |b| codec::decode("ledger reservations", b).expect("decodes"),
        "00020471342f6106616363742d31027134000180b0fbe6d9660a323032362d31312d32390a323032362d31312d32380f50056400140471342f6206616363742d31027134010280b0fbe6d9660a323032362d31312d32390a323032362d31312d32380f5005640014",
    );
}

#[test]
fn account_layout_1_reads() {
    // Layout 1 is never written again; a store may still hold it.
    let v1 = "0006616363742d31030d4575726f70652f4265726c696e010101010100010830393a33303a30300831373a30303a30300a323032362d31312d303200010d687474703a2f2f703a333132380128000103000196012f0580a0abfef9620f020a323032362d31312d30320a0a323032362d31312d30390f01f6a1bfe9d666040100000a323032362d31312d3238";
    let want = Account {
        pending_zone: None,
        summarised_day: Some(day(2026, 11, 27)),
        ..account()
    };
    assert_eq!(Account::decode(&unhex(v1)).expect("layout 1 reads"), want);
}

#[test]
fn state_counts() {
    let mut counts = [0u64; 7];
    for (i, s) in State::ALL.iter().enumerate() {
        counts[s.index()] = 1 + i as u64;
    }
    counts[State::Cancelled.index()] = 300;
    pin(
        "StateCounts",
        &StateCounts(counts),
        codec::encode,
        |b| codec::decode("state counts", b).expect("decodes"),
        "00010203040506ac02",
    );
}

/// Every tag of every wire enum, as a stored value holds it (one varint byte).
#[test]
fn wire_enum_tags() {
    fn tags<E: WireEnum>() -> Vec<String> {
        E::ALL
            .iter()
            .map(|e| hex(&codec::seal_v1(&Tag::of(*e))))
            .collect()
    }
    assert_eq!(
        tags::<TierW>(),
        ["0000", "0001", "0002", "0003", "0004", "0005", "0006"]
    );
    assert_eq!(tags::<HealthW>(), ["0000", "0001", "0002", "0003"]);
    assert_eq!(tags::<KindW>(), ["0000", "0001", "0002", "0003", "0004", "0005"]);
    assert_eq!(
        tags::<StateW>(),
        ["0000", "0001", "0002", "0003", "0004", "0005", "0006"]
    );
    let names: Vec<String> = TierW::ALL.iter().map(|t| format!("{t:?}")).collect();
    assert_eq!(
        names,
        [
            "Free",
            "PremiumCareer",
            "PremiumBusiness",
            "SalesNavigatorCore",
            "SalesNavigatorAdvanced",
            "RecruiterLite",
            "Recruiter"
        ]
    );
    let names: Vec<String> = HealthW::ALL.iter().map(|t| format!("{t:?}")).collect();
    assert_eq!(names, ["Healthy", "Watch", "AtRisk", "Restricted"]);
    let names: Vec<String> = KindW::ALL.iter().map(|t| format!("{t:?}")).collect();
    assert_eq!(
        names,
        [
            "Invite",
            "Message",
            "Inmail",
            "ProfileView",
            "Comment",
            "Reaction"
        ]
    );
    let names: Vec<String> = StateW::ALL.iter().map(|t| format!("{t:?}")).collect();
    assert_eq!(
        names,
        [
            "Queued",
            "Parked",
            "Inflight",
            "Sent",
            "Failed",
            "Unknown",
            "Cancelled"
        ]
    );
}

/// The plain values of `meta`, `files` and `links`: numbers, text and the ingest marker.
#[test]
fn plain_values() {
    pin(
        "format_version",
        &2u32,
        codec::encode,
        |b| codec::decode("format", b).expect("decodes"),
        "0002",
    );
    pin(
        "ledger mark",
        &300u64,
        codec::encode,
        |b| codec::decode("mark", b).expect("decodes"),
        "00ac02",
    );
    pin(
        "applied at (ms)",
        &1_764_400_000_000i64,
        codec::encode,
        |b| codec::decode("applied", b).expect("decodes"),
        "0080b0fbe6d966",
    );
    pin(
        "store id",
        &"s-1".to_string(),
        codec::encode,
        |b| codec::decode("store id", b).expect("decodes"),
        "0003732d31",
    );
    pin(
        "ingest marker",
        &("in.jsonl".to_string(), true),
        codec::encode,
        |b| codec::decode("ingest marker", b).expect("decodes"),
        "0008696e2e6a736f6e6c01",
    );
}

/// `meta/unreported/<files key>`: a committed file's counts until `file_applied` is logged.
#[test]
fn file_report() {
    pin(
        "file report",
        &FileReport {
            name: "in.jsonl".into(),
            hash: 0x0102_0304_0506_0708,
            accounts: 1,
            campaigns: 2,
            actions: 300,
            duplicates: 4,
            events: 5,
        },
        codec::encode,
        |b| codec::decode("file report", b).expect("decodes"),
        "0008696e2e6a736f6e6c888e98a8c0e08081010102ac020405",
    );
}

/// A stored value whose tag no wire enum knows is an error naming the record, the key
/// and the tag, for every record kind that holds one.
#[test]
fn an_unknown_tag_is_refused_with_the_record_and_key() {
    let mut a = account().encode();
    // The tier tag follows the envelope byte and the id ("acct-1", one length byte).
    assert_eq!(a[8], 3, "the tier of the pinned account");
    a[8] = 77;
    let e = codec::decode_at::<Account>("account", b"acct-1", &a).expect_err("tier 77");
    assert_eq!(
        e.to_string(),
        "store is corrupt: cannot decode account at key \"acct-1\": unknown tier tag 77"
    );
    let mut o = codec::encode(&LedgerOutcomes {
        at_ms: 0,
        outcomes: vec![LedgerOutcome {
            action: "x".into(),
            attempt: 1,
            outcome: "sent".into(),
            state: State::Sent,
            reason: None,
            until_ms: None,
            released: false,
        }],
    });
    // envelope, at_ms 0, one outcome, "x", attempt 1, "sent", then the state tag.
    assert_eq!(o[11], 3, "the state tag of `sent`");
    o[11] = 7;
    let e = codec::decode_at::<LedgerOutcomes>("ledger outcomes", &codec::outcome_key(5), &o)
        .expect_err("state 7");
    assert!(e.to_string().ends_with("outcome 0: unknown state tag 7"), "{e}");
    assert!(e.to_string().contains("ledger outcomes at key \"\\x00"), "{e}");
}

#[test]
fn wal_record() {
    // Two changes of one send-path transaction: an action's state record written, a
    // `ready` key removed. The tree is named by its index in `TREE_NAMES`.
    let delta: super::tx::Overlay = [
        (
            (super::ACTIONS, b"q4/jane".to_vec()),
            Some(sled::IVec::from(&[1u8, 2, 3][..])),
        ),
        ((super::READY, b"acct-1\x00c".to_vec()), None),
    ]
    .into_iter()
    .collect();
    pin(
        "a wal record",
        &delta,
        super::behind::encode,
        |b| super::behind::decode(b, super::TREE_NAMES.len()).expect("decodes"),
        "0002020771342f6a616e6501030102030308616363742d31006300",
    );
}

#[test]
fn the_trees_keep_their_order() {
    // `wal` records name a tree by its index: the order is part of the format.
    assert_eq!(
        super::TREE_NAMES,
        [
            "accounts",
            "campaigns",
            "actions",
            "ready",
            "timed",
            "waiting",
            "days",
            "ledger",
            "files",
            "links",
            "inflight",
            "meta",
            "staged",
            "bodies",
            "wal"
        ]
    );
}
