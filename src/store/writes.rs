//! The sled writes one reserved, sent and recorded action costs, counted from sled's
//! own change events (every key a commit inserts or removes), not from our calls.

use super::{OpenOptions, Settings, Store};
use crate::contract::Outcome;
use chrono::{TimeZone, Utc};
use std::time::Duration;

/// Per-action sled writes and the bytes they carry (keys and values).
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    writes: f64,
    bytes: f64,
}

/// An account's window open all day, every day (a job-file fragment).
pub(super) const WINDOW: &str =
    r#""window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"}"#;

/// A new store without fsync, in a directory that lives as long as the first value.
pub(super) fn fresh() -> (tempfile::TempDir, Store, chrono::DateTime<Utc>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        fsync: false,
        ..Settings::default()
    };
    let store = Store::open(&dir.path().join("store"), settings, OpenOptions::default()).expect("open");
    let now = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).single().expect("time");
    (dir, store, now)
}

/// Reserve and record `n` actions in batches of `batch` over `accounts` accounts,
/// then write what is behind to the trees; returns sled writes per action (reserve,
/// record, catching up).
fn writes_per_action(n: usize, batch: usize, accounts: usize) -> (Cost, Cost, Cost) {
    let (_dir, store, now) = fresh();
    let mut text = String::from("{\"type\":\"campaign\",\"id\":\"c\",\"daily_limit\":100000}\n");
    let win = WINDOW;
    for a in 0..accounts {
        text += &format!(
            "{{\"type\":\"account\",\"id\":\"a{a}\",\"tier\":\"sales_navigator_core\",\"timezone\":\"UTC\",{win},\"established\":true,\"caps\":{{\"messages\":10000,\"engagement\":10000}}}}\n"
        );
    }
    let kinds = ["message", "profile_view"];
    let ids: Vec<String> = (0..n).map(|i| format!("x{i:05}")).collect();
    for (i, id) in ids.iter().enumerate() {
        text += &format!(
            "{{\"type\":\"action\",\"id\":\"{id}\",\"campaign\":\"c\",\"account\":\"a{}\",\"kind\":\"{}\",\"prospect\":\"https://www.linkedin.com/in/{id}\",\"payload\":{{\"note\":\"hi\"}}}}\n",
            i % accounts,
            kinds[i % kinds.len()]
        );
    }
    store.apply("w.jsonl", text.as_bytes(), now).expect("applies");
    store.catch_up().expect("catch up");
    let subs: Vec<sled::Subscriber> = store.sled_trees.iter().map(|t| t.watch_prefix(vec![])).collect();
    let drain = |subs: &mut Vec<sled::Subscriber>| -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        for s in subs.iter_mut() {
            while let Ok(e) = s.next_timeout(Duration::from_millis(5)) {
                n += 1;
                bytes += match e {
                    sled::Event::Insert { key, value } => key.len() + value.len(),
                    sled::Event::Remove { key } => key.len(),
                };
            }
        }
        (n, bytes)
    };
    let mut subs = subs;
    let (mut reserve_w, mut record_w) = ((0, 0), (0, 0));
    for chunk in ids.chunks(batch) {
        let (results, _) = store.reserve(chunk, now).expect("reserve");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, super::ReserveResult::Reserved(_))),
            "{results:?}"
        );
        let (w, b) = drain(&mut subs);
        reserve_w = (reserve_w.0 + w, reserve_w.1 + b);
        let outcomes: Vec<(String, Outcome, u64)> =
            chunk.iter().map(|id| (id.clone(), Outcome::Sent, 0)).collect();
        let (recorded, _) = store.record(&outcomes, now).expect("record");
        assert_eq!(recorded.len(), chunk.len());
        let (w, b) = drain(&mut subs);
        record_w = (record_w.0 + w, record_w.1 + b);
    }
    // Catching up is one commit of thousands of writes, more than a sled subscriber
    // queues (a writer waits on a full queue, and a transaction's events are only
    // delivered once it commits): its writes are what is behind, counted there (every
    // key changed, and every `wal` record removed).
    drop(subs);
    let caught_up = {
        let b = store.lock_behind().expect("behind");
        let bytes = b
            .overlay
            .iter()
            .map(|((_, k), v)| k.len() + v.as_ref().map_or(0, |v| v.len()));
        let records = (b.next - b.first) as usize;
        (b.overlay.len() + records, bytes.sum::<usize>() + 8 * records)
    };
    store.catch_up().expect("catch up");
    let per = |(w, b): (usize, usize)| Cost {
        writes: w as f64 / n as f64,
        bytes: b as f64 / n as f64,
    };
    (per(reserve_w), per(record_w), per(caught_up))
}

#[test]
fn sled_writes_per_sent_action() {
    for (n, batch, accounts) in [(16, 1, 1), (1280, 64, 100), (128, 64, 4)] {
        let (res_c, rec_c, up_c) = writes_per_action(n, batch, accounts);
        let (res, rec, up) = (res_c.writes, rec_c.writes, up_c.writes);
        eprintln!(
            "batch {batch}, {accounts} accounts: {res:.2} writes to reserve + {rec:.2} to record \
             + {up:.2} catching up = {:.2} per action; {:.0} + {:.0} + {:.0} = {:.0} bytes written per action",
            res + rec + up,
            res_c.bytes,
            rec_c.bytes,
            up_c.bytes,
            res_c.bytes + rec_c.bytes + up_c.bytes
        );
        // The bounds this layout keeps: a regression adds writes to the send path.
        // Each transaction of the send path writes one `wal` record: batched, that is
        // a 64th of a write per action.
        let per_commit = 1.0 / batch as f64;
        assert!(res <= per_commit + 1e-9, "{res} writes per reserved action");
        assert!(rec <= per_commit + 1e-9, "{rec} writes per recorded action");
        // Catching up writes each key the batches changed once: the action's state and
        // its `ready` key removed (the `inflight` key put and removed cancel out), the
        // account and its day once for all its actions, and one ledger record per
        // transaction, then removes the `wal` records. Before, every reservation and
        // every answer wrote its own (4.55 + 3.03 = 7.6 per action, batch 64 over 100
        // accounts).
        assert!(
            up <= if batch == 1 { 7.5 } else { 3.4 },
            "{up} writes per action catching up"
        );
    }
}

/// Bytes per queued action, tree by tree (keys + values), after ingesting `n` actions
/// shaped like the `scale` benchmark's (an invite with a short note); and sled's own
/// size on disk per action. Returns (bytes in the trees, bytes on disk) per action.
fn bytes_per_queued_action(n: usize) -> (f64, f64) {
    let (_dir, store, now) = fresh();
    let accounts = 10;
    let mut text = String::from("{\"type\":\"campaign\",\"id\":\"scale\",\"daily_limit\":100000}\n");
    let win = WINDOW;
    for a in 0..accounts {
        text += &format!(
            "{{\"type\":\"account\",\"id\":\"acct-{a:05}\",\"tier\":\"free\",\"timezone\":\"UTC\",{win},\"established\":true}}\n"
        );
    }
    store.apply("setup.jsonl", text.as_bytes(), now).expect("applies");
    let before: Vec<usize> = store
        .trees()
        .expect("trees")
        .iter()
        .map(|t| {
            t.iter()
                .map(|kv| kv.map(|(k, v)| k.len() + v.len()).unwrap_or(0))
                .sum()
        })
        .collect();
    // Two files, as `scale` ingests several.
    for half in 0..2 {
        let mut text = String::new();
        for i in (half * n / 2)..((half + 1) * n / 2) {
            let (acct, k) = (i % accounts, i / accounts);
            let id = format!("s-{acct:05}-{k:03}");
            text += &format!(
                r#"{{"type":"action","id":"{id}","campaign":"scale","account":"acct-{acct:05}","kind":"invite","prospect":"https://www.linkedin.com/in/{id}","payload":{{"note":"Hi, I enjoyed your post on durable queues"}}}}"#
            );
            text.push('\n');
        }
        store
            .apply(&format!("{half}.jsonl"), text.as_bytes(), now)
            .expect("applies");
    }
    store.make_durable().expect("flush");
    let mut total = 0;
    for (i, t) in store.trees().expect("trees").iter().enumerate() {
        let (mut keys, mut values, mut count) = (0, 0, 0);
        for kv in t.iter() {
            let (k, v) = kv.expect("reads");
            keys += k.len();
            values += v.len();
            count += 1;
        }
        let grown = keys + values - before[i];
        total += grown;
        if grown > 0 {
            eprintln!(
                "  {:<10} {count:>6} records, {:>6.1} bytes of keys + {:>6.1} of values per queued action",
                super::TREE_NAMES[i],
                keys as f64 / n as f64,
                values as f64 / n as f64
            );
        }
    }
    let per = |tree: usize| -> f64 {
        let bytes: usize = store.trees().expect("trees")[tree]
            .iter()
            .map(|kv| kv.map(|(k, v)| k.len() + v.len()).unwrap_or(0))
            .sum();
        bytes as f64 / n as f64
    };
    // What reserve and record rewrite is the state record alone: an id key and a few
    // small numbers (the payload and the strings stay in `bodies`).
    assert!(
        per(super::ACTIONS) <= 11.0 + 16.0,
        "{} bytes per action record",
        per(super::ACTIONS)
    );
    assert!(per(super::BODIES) > 100.0, "the bodies hold the payloads");
    assert_eq!(per(super::STAGED), 0.0, "nothing is left staged");
    let disk = store.db().size_on_disk().expect("size") as f64;
    (total as f64 / n as f64, disk / n as f64)
}

#[test]
fn store_bytes_per_queued_action() {
    let n = 4000;
    let (logical, disk) = bytes_per_queued_action(n);
    eprintln!(
        "{n} queued actions: {logical:.1} bytes per action in the trees, {disk:.1} bytes per action on disk (sled)"
    );
    assert!(logical > 0.0 && disk > 0.0);
}
