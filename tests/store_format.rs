//! A store written by a format-1 build (`tests/fixtures/store-format1`, made by
//! `tests/fixtures/make-store.sh` with the last format-1 binary) opens, is upgraded to
//! the current format, and keeps every record: its actions, its ledger (reservations
//! and releases), its counters (the audit agrees); new outcomes are recorded beside the
//! old records.

mod common;

use common::utc;
use sendgate::contract::Outcome;
use sendgate::store::{OpenOptions, ReserveResult, Settings, State, Store};
use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read the fixture") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// The `format_version` a store's data holds, read with sled directly.
fn format_of(path: &Path) -> u32 {
    let db = common::raw_sled(path);
    let v = db
        .open_tree("meta")
        .expect("meta")
        .get("format_version")
        .expect("read")
        .expect("a format_version");
    let (layout, n): (u8, u32) = postcard::from_bytes(&v).expect("decode");
    assert_eq!(layout, 0);
    n
}

/// A copy of the format-1 fixture, at `store` in a new directory.
fn format_1_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format1");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    copy_dir(&fixture, &path);
    (dir, path)
}

/// The fixture's next day, when its parked invite `q4/3` is due again: promote and
/// reserve it. Returns that day.
fn reserve_parked_invite(store: &Store) -> chrono::DateTime<chrono::Utc> {
    let next_day = utc("2026-11-26T10:00:00Z");
    store.promote_due(next_day).expect("promote due");
    let (results, _) = store.reserve(&["q4/3".to_string()], next_day).expect("reserve");
    assert!(
        matches!(results.as_slice(), [ReserveResult::Reserved(_)]),
        "{results:?}"
    );
    next_day
}

#[test]
fn a_format_1_store_is_upgraded_and_keeps_its_ledger() {
    let (_dir, path) = format_1_copy();
    assert_eq!(format_of(&path), 1, "the fixture is a format-1 store");
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    {
        let store =
            Store::open(&path, settings.clone(), OpenOptions::default()).expect("a format-1 store opens");
        let counts = store.state_counts().expect("counts");
        let by_state = |s: State| counts[s.index()];
        assert_eq!(
            (
                by_state(State::Sent),
                by_state(State::Parked),
                by_state(State::Failed)
            ),
            (6, 4, 1),
            "{counts:?}"
        );
        // The format-1 ledger reads: the reservation and release of the attempt that
        // was not delivered, and no outcomes (format 1 kept none).
        let h = store.history("q4/nd").expect("history").expect("the action");
        assert_eq!(
            (h.reservations.len(), h.releases.len(), h.outcomes.len()),
            (1, 1, 0)
        );
        assert_eq!(h.releases[0].attempt, 1);
        let audit = store.audit(None, None).expect("audit");
        assert!(audit.clean(), "{audit:?}");
        assert_eq!((audit.entries, audit.releases), (9, 1));
        // New work beside the old records: the next day, a parked invite is due again.
        let next_day = reserve_parked_invite(&store);
        store
            .record(&[("q4/3".to_string(), Outcome::Sent, 0)], next_day)
            .expect("record");
        let h = store.history("q4/3").expect("history").expect("the action");
        assert_eq!(
            (h.reservations.len(), h.releases.len(), h.outcomes.len()),
            (1, 0, 1)
        );
        assert_eq!(h.outcomes[0].outcome, "sent");
        let audit = store.audit(None, None).expect("audit");
        assert!(audit.clean(), "{audit:?}");
        assert_eq!((audit.entries, audit.releases), (10, 1));
    }
    assert_eq!(
        format_of(&path),
        sendgate::store::codec::FORMAT_VERSION,
        "upgraded on open"
    );
    // And it opens again as a current store.
    let store = Store::open(&path, settings, OpenOptions::default()).expect("reopens");
    assert!(store.audit(None, None).expect("audit").clean());
}

/// Every record of the format-1 fixture reads through the store's wire types, and every
/// one this build writes the same way comes out byte for byte as it was: moving the
/// records to their own wire types changed no stored byte. A campaign is written as
/// layout 2 now: its layout-1 bytes and no pending zone change.
#[test]
fn every_record_of_a_format_1_store_reads_and_writes_back_the_same_bytes() {
    use sendgate::store::codec::{self, decode_at, encode, LedgerKind};
    use sendgate::store::records::{
        Account, AccountDayRec, Campaign, CampaignDayRec, LedgerEntry, LedgerOutcomes, LedgerRelease,
        LedgerReservations, StateCounts,
    };
    fn same<T: codec::Value>(what: &str, k: &[u8], v: &[u8]) -> usize {
        let value: T = decode_at(what, k, v).expect("reads");
        assert_eq!(
            encode(&value),
            v,
            "{what} at {:?} re-encodes differently",
            k.escape_ascii().to_string()
        );
        1
    }
    let (_dir, path) = format_1_copy();
    let db = common::raw_sled(&path);
    let tree = |name: &str| db.open_tree(name).expect("tree");
    let mut n = [0usize; 6];
    for kv in tree("accounts").iter() {
        let (k, v) = kv.expect("read");
        let a: Account = decode_at("account", &k, &v).expect("an account reads");
        if v.first() == Some(&1) {
            assert_eq!(encode(&a), v.as_ref(), "layout 2 re-encodes the same");
        }
        n[0] += 1;
    }
    for kv in tree("campaigns").iter() {
        let (k, v) = kv.expect("read");
        let c: Campaign = decode_at("campaign", &k, &v).expect("a campaign reads");
        assert_eq!(c.pending_zone, None, "layout 1 holds no pending zone change");
        // Written again it is layout 2: the same fields, then "no pending change".
        assert_eq!(v.first(), Some(&0), "the fixture's campaigns are layout 1");
        let layout2: Vec<u8> = [&[1u8][..], &v[1..], &[0u8][..]].concat();
        assert_eq!(encode(&c), layout2, "campaign at {k:?} as layout 2");
        n[1] += 1;
    }
    for kv in tree("actions").iter() {
        let (k, v) = kv.expect("read");
        // Whole actions (layout 1, its bytes pinned by `store::golden`): format 3
        // reads them as they are and splits each at its next write.
        assert_eq!(v.first(), Some(&0), "a whole action at {k:?}");
        n[2] += 1;
    }
    for kv in tree("days").iter() {
        let (k, v) = kv.expect("read");
        n[3] += match k.first() {
            Some(b'a') => same::<AccountDayRec>("account day", &k, &v),
            _ => same::<CampaignDayRec>("campaign day", &k, &v),
        };
    }
    for kv in tree("ledger").iter() {
        let (k, v) = kv.expect("read");
        n[4] += match codec::ledger_kind(&k).expect("a known ledger key") {
            LedgerKind::Reservation => same::<LedgerEntry>("ledger entry", &k, &v),
            LedgerKind::Reservations => same::<LedgerReservations>("ledger reservations", &k, &v),
            LedgerKind::Release => same::<LedgerRelease>("ledger release", &k, &v),
            LedgerKind::Outcomes => same::<LedgerOutcomes>("ledger outcomes", &k, &v),
        };
    }
    let counts = tree("meta")
        .get("state_counts")
        .expect("read")
        .expect("state counts");
    n[5] += same::<StateCounts>("state counts", b"state_counts", &counts);
    assert!(
        n.iter().all(|&c| c > 0),
        "every kind of record is in the fixture: {n:?}"
    );
    drop(db);
    let store = Store::open_existing(&path, Settings::default(), OpenOptions::default()).expect("opens");
    assert_eq!(store.actions().expect("every action reads").len(), n[2]);
}

/// A stored value this build cannot convert (here an action whose kind tag no kind
/// has) is a corrupt-store error naming the record, its key and the tag: never a
/// panic, never a default.
#[test]
fn an_unknown_kind_tag_is_refused_naming_the_action_and_its_key() {
    use common::{account_line, action_line, apply, campaign_line, open};
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    {
        let store = open(dir.path(), settings.clone());
        let text = format!(
            "{}\n{}\n{}\n",
            account_line("a1", ""),
            campaign_line("c1", 10, ""),
            action_line("x", "c1", "a1", "inmail")
        );
        apply(&store, "f.jsonl", &text, utc("2026-11-25T10:00:00Z"));
    }
    {
        let db = common::raw_sled(&dir.path().join("store"));
        let bodies = db.open_tree("bodies").expect("bodies");
        let mut v = bodies
            .get("x")
            .expect("read")
            .expect("the action's body")
            .to_vec();
        // The envelope, then campaign "c1" and account "a1" (one length byte each),
        // then the kind's tag: 2, an InMail.
        let at = 1 + 3 + 3;
        assert_eq!(v[at], 2, "the tag of an InMail");
        v[at] = 9;
        bodies.insert("x", v).expect("write");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), settings);
    let e = store.action("x").expect_err("tag 9 is no kind");
    assert_eq!(
        e.to_string(),
        "store is corrupt: cannot decode action at key \"x\": its body: unknown kind tag 9"
    );
    assert!(store.actions().is_err(), "a scan refuses it too");
}

/// The layout of each action in a store's raw trees: `actions` value's first byte (0:
/// whole, format 1 and 2; 1: its state, format 3) and whether `bodies` holds its body.
fn layouts(path: &Path) -> std::collections::BTreeMap<String, (u8, bool)> {
    let db = common::raw_sled(path);
    let (actions, bodies) = (
        db.open_tree("actions").expect("actions"),
        db.open_tree("bodies").expect("bodies"),
    );
    let mut out = std::collections::BTreeMap::new();
    for kv in actions.iter() {
        let (k, v) = kv.expect("read");
        let body = bodies.contains_key(&k).expect("read");
        out.insert(String::from_utf8_lossy(&k).into_owned(), (v[0], body));
    }
    assert_eq!(
        bodies.len(),
        out.values().filter(|(_, body)| *body).count(),
        "every body belongs to an action"
    );
    out
}

/// Format 2 -> 3 splits an action into its state and its body at its next write, in
/// that write's transaction: the other whole actions read as they are (list, show,
/// audit), a written one reads the same after its split, and pruning removes both
/// layouts. A crash cannot half-migrate: the only step at open is the number.
#[test]
fn old_whole_actions_read_and_are_split_at_their_next_write() {
    use sendgate::store::Filter;
    let (_dir, path) = format_1_copy();
    let before = layouts(&path);
    assert!(before.values().all(|&l| l == (0, false)), "{before:?}");
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    let old;
    {
        let store = Store::open(&path, settings.clone(), OpenOptions::default()).expect("opens");
        let all = store.list(&Filter::default(), 0).expect("list");
        assert_eq!(all.len(), before.len(), "every whole action is listed");
        old = store.action("q4/3").expect("read").expect("the action");
        reserve_parked_invite(&store);
        // The reservation's changes reach the trees read below raw at a clean stop
        // (until then they are in its `wal` record).
        store.close().expect("a clean stop");
    }
    let after_reserve = layouts(&path);
    assert_eq!(after_reserve["q4/3"], (1, true), "split by the reservation");
    assert!(
        after_reserve.values().all(|&l| l == (0, false) || l == (1, true)),
        "whole, or split with a body: {after_reserve:?}"
    );
    assert!(
        after_reserve.values().any(|&l| l == (0, false)),
        "actions not written stay whole: {after_reserve:?}"
    );
    {
        let store = Store::open(&path, settings.clone(), OpenOptions::default()).expect("reopens");
        let next_day = utc("2026-11-26T10:00:00Z");
        store
            .record(&[("q4/3".to_string(), Outcome::Sent, 0)], next_day)
            .expect("record");
        let a = store.action("q4/3").expect("read").expect("the action");
        assert_eq!(
            (
                &a.campaign,
                &a.account,
                a.kind,
                &a.prospect,
                &a.payload,
                a.priority,
                a.seq
            ),
            (
                &old.campaign,
                &old.account,
                old.kind,
                &old.prospect,
                &old.payload,
                old.priority,
                old.seq
            ),
            "the body reads back as it was"
        );
        assert_eq!((a.state, a.attempts), (State::Sent, old.attempts + 1));
        let h = store.history("q4/3").expect("history").expect("shown");
        assert_eq!(h.prospect, old.prospect);
        assert_eq!(
            store.list(&Filter::default(), 0).expect("list").len(),
            before.len()
        );
        assert!(store.audit(None, None).expect("audit").clean());
    }
    // Retention: finished actions of either layout go, with their bodies; parked stay.
    let later = Settings {
        retention_days: 30,
        ..settings
    };
    let kept = {
        let store = Store::open(&path, later, OpenOptions::default()).expect("reopens");
        let removed = store.prune(utc("2027-06-01T00:00:00Z"), 10_000).expect("prune");
        assert!(removed > 0);
        store.actions().expect("reads").len()
    };
    let pruned = layouts(&path);
    assert_eq!(pruned.len(), kept);
    assert!(!pruned.contains_key("q4/3"), "the split sent action is pruned");
    assert!(
        pruned.values().all(|&l| l == (0, false) || l == (1, true)),
        "{pruned:?}"
    );
}

/// The commands that only read (`status`, `list`, `show`, `audit`) run by a newer
/// build on an older store leave its format as it was, so the older build still opens
/// it (a rollback stays possible); the first command that writes upgrades it.
#[test]
fn reading_an_older_store_with_a_newer_build_leaves_its_format() {
    let (dir, path) = format_1_copy();
    let config = dir.path().join("sendgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\nfsync = false\n[admin]\nsocket = \"{}\"\n",
            path.display(),
            dir.path().join("admin.sock").display()
        ),
    )
    .expect("write config");
    let sendgate = |args: &[&str]| {
        let (code, _, err) = common::cli(&config, args);
        assert_eq!(code, 0, "sendgate {args:?}: {err}");
    };
    assert_eq!(format_of(&path), 1);
    for args in [
        &["status", "--json"][..],
        &["list", "--limit", "0"],
        &["show", "q4/3"],
        &["audit"],
    ] {
        sendgate(args);
        assert_eq!(format_of(&path), 1, "sendgate {args:?} changed the format");
    }
    sendgate(&["pause", "--all"]);
    assert_eq!(
        format_of(&path),
        sendgate::store::codec::FORMAT_VERSION,
        "a write upgrades the store first"
    );
}

/// A store holding the second layout of an account or a campaign (a zone change that
/// waits for the end of the day) carries a format number above 3: a format-3 build,
/// which reads those records as corrupt (exit 74, restarted again and again), refuses
/// the store as newer instead (exit 78, a deployment mistake).
#[test]
fn a_pending_zone_change_is_stored_under_a_format_a_format_3_build_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let now = utc("2026-06-01T12:00:00Z");
    let window =
        r#""window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}"#;
    let records = |zone: &str| {
        format!(
            "{{\"type\":\"account\",\"id\":\"a1\",\"tier\":\"free\",\"timezone\":\"{zone}\",{window}}}\n\
             {{\"type\":\"campaign\",\"id\":\"c1\",\"daily_limit\":5,\"timezone\":\"{zone}\"}}\n"
        )
    };
    {
        let store = common::open(dir.path(), Settings::default());
        common::apply(&store, "utc.jsonl", &records("UTC"), now);
        common::apply(&store, "tokyo.jsonl", &records("Asia/Tokyo"), now);
        let s = store.status(now).expect("status");
        assert!(
            s.accounts.iter().all(|a| a.timezone_next.is_some()),
            "the account's change waits: {:?}",
            s.accounts
        );
        store.close().expect("close");
    }
    assert!(
        format_of(&path) > 3,
        "format {} would be read by a build that cannot read the records",
        format_of(&path)
    );
}
