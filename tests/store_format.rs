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
    let db = sled::open(path).expect("raw open");
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

#[test]
fn a_format_1_store_is_upgraded_and_keeps_its_ledger() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format1");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    copy_dir(&fixture, &path);
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
        let next_day = utc("2026-11-26T10:00:00Z");
        store.promote_due(next_day).expect("promote due");
        let (results, _) = store.reserve(&["q4/3".to_string()], next_day).expect("reserve");
        assert!(
            matches!(results.as_slice(), [ReserveResult::Reserved(_)]),
            "{results:?}"
        );
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
