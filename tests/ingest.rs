//! Chunked ingest (SPEC §6 "Big files", P6): a file bigger than one chunk is staged,
//! committed and published; until the commit nothing of it is visible, and a process
//! that dies before the commit leaves nothing of it behind.

mod common;

use common::*;
use sendgate::store::{ApplyOutcome, Begin, Filter, Ingest, Settings, State, Store, CHUNK_RECORDS};

const NOW: &str = "2026-11-25T12:00:00Z";

/// An account and a campaign, then `n` invites `big-{i}`.
fn big_file(n: usize) -> String {
    let mut text = format!("{}\n{}\n", account_line("a1", ""), campaign_line("c1", 1000, ""));
    for i in 0..n {
        text.push_str(&action_line(&format!("big-{i}"), "c1", "a1", "invite"));
        text.push('\n');
    }
    text
}

fn begin(store: &Store, name: &str, text: &str) -> Box<Ingest> {
    match store
        .begin_ingest(
            name,
            sendgate::store::Source::Bytes(text.as_bytes().to_vec()),
            utc(NOW),
        )
        .expect("store works")
    {
        Begin::Started(job) => job,
        Begin::Finished(o) => panic!("{name} finished at once: {o:?}"),
    }
}

fn queued(store: &Store) -> u64 {
    store.status(utc(NOW)).expect("status").states["queued"]
}

fn listed(store: &Store) -> usize {
    store.list(&Filter::default(), usize::MAX).expect("list").len()
}

/// What a reader sees of a store: the listing, the queued count, one action, and the
/// account the file creates.
fn visible(store: &Store, id: &str) -> (usize, u64, bool, bool) {
    (
        listed(store),
        queued(store),
        store.action(id).expect("read").is_some(),
        store.account("a1").expect("read").is_some(),
    )
}

/// How many action bodies the store at `dir` holds, read with sled directly (the store
/// must be closed; sled may hold its lock a moment after the last handle went).
fn bodies(dir: &std::path::Path) -> usize {
    let db = common::raw_sled(&dir.join("store"));
    db.open_tree("bodies").expect("bodies").len()
}

#[test]
fn a_staged_file_is_invisible_and_recovery_at_open_drops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = CHUNK_RECORDS * 3;
    let text = big_file(n);
    {
        let store = open(dir.path(), Settings::default());
        let mut job = begin(&store, "big.jsonl", &text);
        for _ in 0..2 {
            assert!(store.ingest_step(&mut job).expect("stage").is_none());
        }
        assert_eq!(job.progress(), (2 * CHUNK_RECORDS, n + 2));
        // Staged, not committed: no reader sees any of it, the account included.
        assert_eq!(visible(&store, "big-0"), (0, 0, false, false));
        assert!(store.audit(None, None).expect("audit").clean());
        store.make_durable().expect("flush");
        // The process dies here (the store is dropped without another step).
    }
    let store = open(dir.path(), Settings::default());
    assert_eq!(
        visible(&store, "big-0"),
        (0, 0, false, false),
        "recovery dropped it"
    );
    assert!(!store.file_applied("big.jsonl", text.as_bytes()).expect("read"));
    // The bodies it staged (written once, at staging) went with it.
    drop(store);
    assert_eq!(bodies(dir.path()), 0, "no body of a dropped file is left");
    let store = open(dir.path(), Settings::default());
    // The same file (still in `processing/`) is applied afresh, all of it.
    match store
        .apply("big.jsonl", text.as_bytes(), utc(NOW))
        .expect("apply")
    {
        ApplyOutcome::Applied(a) => assert_eq!((a.actions, a.duplicates), (n as u32, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(visible(&store, "big-0"), (n, n as u64, true, true));
    assert!(store.audit(None, None).expect("audit").clean());
    drop(store);
    assert_eq!(bodies(dir.path()), n, "one body per action");
}

#[test]
fn a_committed_file_is_published_whole_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = CHUNK_RECORDS * 2 + 10;
    let text = big_file(n);
    {
        let store = open(dir.path(), Settings::default());
        let mut job = begin(&store, "big.jsonl", &text);
        // Stage every chunk, commit, and publish one chunk.
        while job.progress().0 < job.progress().1 {
            assert!(store.ingest_step(&mut job).expect("stage").is_none());
        }
        assert!(store.ingest_step(&mut job).expect("commit").is_none());
        assert!(store.file_applied("big.jsonl", text.as_bytes()).expect("read"));
        assert!(store.ingest_step(&mut job).expect("publish").is_none());
        let partial = listed(&store);
        assert!(0 < partial && partial < n, "{partial}");
        assert_eq!(queued(&store), partial as u64, "counts follow what is published");
        assert!(store.audit(None, None).expect("audit").clean());
        store.make_durable().expect("flush");
    }
    let store = open(dir.path(), Settings::default());
    assert_eq!(visible(&store, "big-0"), (n, n as u64, true, true));
    assert!(store.audit(None, None).expect("audit").clean());
    // Applied once: the same file again is a no-op.
    assert_eq!(
        store
            .apply("big.jsonl", text.as_bytes(), utc(NOW))
            .expect("apply"),
        ApplyOutcome::AlreadyApplied
    );
}

#[test]
fn a_bad_line_in_a_late_chunk_rejects_the_whole_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let n = CHUNK_RECORDS * 2;
    for (bad, field) in [
        (r#"{"type":"action","id":"x"}"#, "campaign"),
        (
            &action_line("late", "no-such-campaign", "a1", "invite") as &str,
            "campaign",
        ),
    ] {
        let text = format!("{}{bad}\n", big_file(n));
        match store
            .apply("bad.jsonl", text.as_bytes(), utc(NOW))
            .expect("apply")
        {
            ApplyOutcome::Rejected(r) => assert_eq!((r.line, r.field.as_str()), (n + 3, field), "{r:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(visible(&store, "big-0"), (0, 0, false, false));
    }
    // Nothing was left staged, no body either: a reopen finds nothing to drop or publish.
    drop(store);
    assert_eq!(bodies(dir.path()), 0, "no body of a rejected file is left");
    let store = open(dir.path(), Settings::default());
    assert_eq!(visible(&store, "big-0"), (0, 0, false, false));
}

/// Records later in a file see earlier ones across chunks, as in one transaction:
/// duplicates within the file, and events on actions the file itself added.
#[test]
fn later_chunks_see_earlier_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    let n = CHUNK_RECORDS * 2;
    let mut text = big_file(n);
    text.push_str(&action_line("big-1", "c1", "a1", "invite"));
    text.push('\n');
    text.push_str(r#"{"type":"event","kind":"cancel_action","action":"big-0"}"#);
    text.push('\n');
    match store.apply("f.jsonl", text.as_bytes(), utc(NOW)).expect("apply") {
        ApplyOutcome::Applied(a) => {
            assert_eq!((a.actions, a.duplicates, a.events), (n as u32, 1, 1));
            assert_eq!(a.effects.len(), 1);
            assert!(a.effects[0].result.is_ok(), "{:?}", a.effects[0]);
        }
        other => panic!("{other:?}"),
    }
    let cancelled = store.action("big-0").expect("read").expect("big-0");
    assert_eq!(cancelled.state, State::Cancelled);
    let status = store.status(utc(NOW)).expect("status");
    assert_eq!(
        (status.states["queued"], status.states["cancelled"]),
        (n as u64 - 1, 1)
    );
    assert!(store.audit(None, None).expect("audit").clean());
    // The cancelled action is in no queue: every action handed out is another one.
    let ids: Vec<String> = (0..5).map(|i| format!("big-{i}")).collect();
    let (results, _) = store.reserve(&ids, utc(NOW)).expect("reserve");
    assert!(
        !format!("{:?}", results[0]).contains("Reserved"),
        "{:?}",
        results[0]
    );
}

/// Ingest `text` the way the daemon takes a JSON Lines file: written to disk, scanned
/// once, then read back a chunk at a time while it applies. `between` runs after the
/// first step (a chunk staged), with the path of the file.
fn ingest_from_disk(
    store: &Store,
    dir: &std::path::Path,
    name: &str,
    text: &str,
    between: impl FnOnce(&std::path::Path),
) -> ApplyOutcome {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    let file = std::fs::File::open(&path).expect("open it");
    let scanned = sendgate::store::scan(name, file).expect("scan");
    let mut job = match store
        .begin_ingest(name, sendgate::store::Source::Scanned(scanned), utc(NOW))
        .expect("store works")
    {
        Begin::Started(job) => job,
        Begin::Finished(o) => return o,
    };
    let mut between = Some(between);
    loop {
        if let Some(o) = store.ingest_step(&mut job).expect("store works") {
            return o;
        }
        if let Some(f) = between.take() {
            f(&path);
        }
    }
}

/// A file read back a chunk at a time applies exactly as the same bytes held whole:
/// the same outcome, the same actions; and a bad line is named the same way.
#[test]
fn a_file_read_a_chunk_at_a_time_applies_as_the_same_bytes_held_whole() {
    let n = 2 * CHUNK_RECORDS + 17;
    let text = big_file(n).replace(
        "\n{\"type\":\"action\",\"id\":\"big-9\"",
        "\n\r\n  \n{\"type\":\"action\",\"id\":\"big-9\"",
    );
    let files = tempfile::tempdir().expect("tempdir");
    let (da, db) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let whole = open(da.path(), Settings::default());
    let read = open(db.path(), Settings::default());
    let a = whole
        .apply("big.jsonl", text.as_bytes(), utc(NOW))
        .expect("applies");
    let b = ingest_from_disk(&read, files.path(), "big.jsonl", &text, |_| {});
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(
        matches!(b, ApplyOutcome::Applied(ref x) if x.actions as usize == n),
        "{b:?}"
    );
    assert_eq!(listed(&read), n);
    for id in ["big-0", "big-9", &format!("big-{}", n - 1)] {
        assert_eq!(
            whole
                .action(id)
                .expect("read")
                .map(|a| (a.id, a.state, a.payload, a.prospect)),
            read.action(id)
                .expect("read")
                .map(|a| (a.id, a.state, a.payload, a.prospect)),
            "{id}"
        );
    }
    // A bad line past the first chunk: the same line and field, nothing applied.
    let bad = big_file(n).replace(
        &format!("\"id\":\"big-{}\"", CHUNK_RECORDS + 3),
        &format!("\"id\":\"big-{}\",\"kind\":\"wave\"", CHUNK_RECORDS + 3),
    );
    let (dc, dd) = (tempfile::tempdir().expect("c"), tempfile::tempdir().expect("d"));
    let (c, d) = (
        open(dc.path(), Settings::default()),
        open(dd.path(), Settings::default()),
    );
    let a = c
        .apply("bad.jsonl", bad.as_bytes(), utc(NOW))
        .expect("store works");
    let b = ingest_from_disk(&d, files.path(), "bad.jsonl", &bad, |_| {});
    assert!(matches!(b, ApplyOutcome::Rejected(_)), "{b:?}");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!((listed(&d), queued(&d)), (0, 0));
}

/// A file written to while it applies (not renamed into the spool whole, or changed by
/// someone in `processing/`) is rejected at the commit, whole: what was staged is
/// dropped, and nothing of it is visible.
#[test]
fn a_file_changed_while_it_applies_is_rejected_whole() {
    let n = 2 * CHUNK_RECORDS + 5;
    let text = big_file(n);
    let files = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Settings::default());
    // Appended to: one more action the scan never saw.
    let o = ingest_from_disk(&store, files.path(), "grown.jsonl", &text, |path| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open");
        writeln!(f, "{}", action_line("late", "c1", "a1", "invite")).expect("append");
    });
    match &o {
        ApplyOutcome::Rejected(r) => {
            assert_eq!(r.field, "file", "{r:?}");
            assert!(r.reason.contains("changed while it was being applied"), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(visible(&store, "big-0"), (0, 0, false, false));
    // Rewritten in place, the same size: the later chunks are not what was scanned.
    let o = ingest_from_disk(&store, files.path(), "rewritten.jsonl", &text, |path| {
        let swapped = text.replace("\"big-", "\"bog-");
        assert_eq!(swapped.len(), text.len());
        std::fs::write(path, swapped).expect("rewrite");
    });
    assert!(
        matches!(o, ApplyOutcome::Rejected(ref r) if r.field == "file"),
        "{o:?}"
    );
    assert_eq!(visible(&store, "big-0"), (0, 0, false, false));
    assert_eq!(visible(&store, "bog-0"), (0, 0, false, false));
    // Untouched, it applies.
    let o = ingest_from_disk(&store, files.path(), "kept.jsonl", &text, |_| {});
    assert!(
        matches!(o, ApplyOutcome::Applied(ref a) if a.actions as usize == n),
        "{o:?}"
    );
}
