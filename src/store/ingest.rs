//! Ingest a job file in bounded chunks, all or nothing (SPEC §6 "Big files", P6, P8).
//!
//! 1. **Stage.** The file's records are parsed and applied in file order, a chunk of
//!    `CHUNK_RECORDS` per sled transaction, in `tx::Mode::Dry`: a new action (and the
//!    sticky link of a new prospect) goes to the `staged` tree under the file's token;
//!    every other write (accounts, campaigns, event effects) only changes what the pass
//!    itself reads (an in-memory overlay), so later records see earlier ones exactly as
//!    in one transaction. Nothing a reader of the live trees sees changes: staged
//!    actions are in no index, no count, no listing. A bad record anywhere rejects the
//!    file and drops what was staged.
//! 2. **Commit.** One transaction (`Mode::Commit`) re-applies the file's account,
//!    campaign and event records in file order to the live state (they are few, and kept
//!    parsed), writes the `files` record and the file's report (`FileReport`: its
//!    record counts, until its `file_applied` is logged), and marks the file committed.
//!    From here on the file counts as applied, and a crash cannot undo it.
//! 3. **Publish.** Bounded transactions move staged actions into the live trees (the
//!    record, its index entry, its state count) and staged links after them, then drop
//!    the marker. Each move is one transaction, so a crash repeats none and loses none.
//!
//! A marker `ingest/<token>` in `meta` exists from the first chunk until the file is
//! published or dropped. Recovery at open drops a staged, uncommitted file (it is still
//! in `processing/`, and is applied again or quarantined by the spool rules) and
//! publishes the rest of a committed one; that file's report is still stored, so the
//! next start-up logs its `file_applied` ([`Store::unreported_files`]), not a
//! `file_duplicate`.
//!
//! Between two chunks the caller runs the engine (sends, timers, watchdog).
//!
//! A JSON Lines file is never held whole: the spool reads it once in blocks for its
//! content hash and the place of every record ([`Scanned`], `jobfile::LineSpans`), and
//! each chunk is read again from the open file when it is staged. A file that changed
//! in between (its size or its change time) is rejected at the commit, before anything
//! of it counts. A `.json` document is parsed whole, so it is read whole.

use super::apply::{leftover_key, ApplyOutcome, Carry, Ctx};
use super::codec::{self, content_hash, file_key, ms};
use super::edge::{Indexing, StoredAction};
use super::records::{Action, FileReport};
use super::tx::{stage_key, Mode, Overlay, Rejection, Tx};
use super::{Store, StoreError, ACTIONS, BODIES, FILES, LINKS, META, STAGED};
use crate::contract::jobfile::{self, Line, Record, Span};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Records parsed and applied per staging transaction, and actions moved per publish
/// transaction: bounds the memory of one transaction and the time between two engine
/// turns.
pub const CHUNK_RECORDS: usize = 2048;

const MARKER_PREFIX: &[u8] = b"ingest/";

/// `meta` keys of the reports of committed files whose `file_applied` is not logged yet:
/// this prefix and the file's `files` key.
const REPORT_PREFIX: &[u8] = b"unreported/";

fn report_key(name: &str, hash: u64) -> Vec<u8> {
    [REPORT_PREFIX, &file_key(name, hash)].concat()
}

/// The token of a file that staged nothing (no record): no staged key carries it.
const NO_TOKEN: u64 = u64::MAX;

fn marker_key(token: u64) -> Vec<u8> {
    [MARKER_PREFIX, &token.to_be_bytes()].concat()
}

/// The marker's value: the file's name, and whether it was committed.
type Marker = (String, bool);

/// A staged action as publishing moves it.
enum Staged {
    /// Layout 1 (staged by a format 1 or 2 build): the whole action.
    Whole(Action),
    /// Layout 2: its id and where it is indexed; the state record is moved as it is.
    State(String, Indexing),
}

/// A job file as the store reads it.
pub enum Source {
    /// Its whole content (a `.json` document; tests, `simulate`).
    Bytes(Vec<u8>),
    /// A JSON Lines file the spool scanned: read a chunk at a time.
    Scanned(Scanned),
}

/// A JSON Lines file read once, a block at a time: what staging needs to read it again
/// a chunk at a time, without holding it whole.
pub struct Scanned {
    pub file: File,
    pub stamp: Stamp,
    /// `codec::content_hash` of the whole file.
    pub hash: u64,
    /// Where its records are, or why the file cannot be read as records.
    pub spans: Result<Vec<Span>, jobfile::FileError>,
}

/// What tells that a file changed after it was scanned: its size and its change time
/// (every write moves it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(file: &File) -> std::io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Read `file` whole, a block at a time: its `Scanned` (the spans of a JSON Lines file
/// named `name`; the hash of every byte).
pub fn scan(name: &str, mut file: File) -> std::io::Result<Scanned> {
    use std::io::Read;
    let stamp = Stamp::of(&file)?;
    let mut hash = codec::ContentHash::default();
    let mut lines = Ok(jobfile::LineSpans::new(name));
    let mut block = vec![0u8; 256 * 1024];
    loop {
        let n = match file.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&block[..n]);
        // After the first bad line only the hash is still wanted (`files` dedups by it).
        if let Ok(l) = lines.as_mut() {
            if let Err(e) = l.feed(&block[..n]) {
                lines = Err(e);
            }
        }
    }
    let spans = lines.and_then(jobfile::LineSpans::finish);
    Ok(Scanned {
        file,
        stamp,
        hash: hash.finish(),
        spans,
    })
}

/// The bytes of a file being ingested: whole, or read back a chunk at a time.
enum Text {
    Whole(Vec<u8>),
    File { file: File, stamp: Stamp },
}

impl Text {
    /// The text of `range` of the file; `None` when it is not what the scan read (the
    /// file changed since).
    fn range(&self, range: std::ops::Range<usize>) -> std::io::Result<Option<Cow<'_, str>>> {
        match self {
            Text::Whole(bytes) => Ok(Some(Cow::Borrowed(
                jobfile::text_of(bytes).get(range).unwrap_or_default(),
            ))),
            Text::File { file, .. } => {
                let mut buf = vec![0u8; range.len()];
                file.read_exact_at(&mut buf, range.start as u64)?;
                Ok(String::from_utf8(buf).ok().map(Cow::Owned))
            }
        }
    }

    /// Whether the file is as it was scanned.
    fn unchanged(&self) -> std::io::Result<bool> {
        match self {
            Text::Whole(_) => Ok(true),
            Text::File { file, stamp } => Ok(Stamp::of(file)? == *stamp),
        }
    }
}

/// Why a file that changed while it was applied is refused.
const CHANGED: &str = "the file changed while it was being applied (write job files in tmp/ \
                       and rename them into incoming/); nothing of it was applied";

/// Bytes read from a file in one go while a chunk is staged: records close together
/// share a read, and the blank lines between records far apart are never read.
const READ_BYTES: usize = 1 << 20;

/// The records of `spans`, parsed, each with its line; else the line, field and reason
/// that reject the file.
fn read_records(text: &Text, spans: &[Span]) -> Result<Vec<Line<Record>>, (usize, String, String)> {
    let mut records = Vec::with_capacity(spans.len());
    let mut i = 0;
    while i < spans.len() {
        let base = spans[i].range.start;
        let mut j = i + 1;
        while j < spans.len() && spans[j].range.end - base <= READ_BYTES {
            j += 1;
        }
        let line = spans[i].line;
        let part = match text.range(base..spans[j - 1].range.end) {
            Ok(Some(t)) => t,
            Ok(None) => return Err((line, "file".into(), CHANGED.into())),
            Err(e) => {
                let reason = format!("could not be read again while it was applied: {e}");
                return Err((line, "file".into(), reason));
            }
        };
        for s in &spans[i..j] {
            // Record bounds fall on characters in the text the scan read; not in a file
            // changed since.
            let Some(record) = part.get(s.range.start - base..s.range.end - base) else {
                return Err((s.line, "file".into(), CHANGED.into()));
            };
            match jobfile::parse_record(record) {
                Ok(record) => records.push(Line { line: s.line, record }),
                Err(e) => return Err((s.line, e.field, e.reason)),
            }
        }
        i = j;
    }
    Ok(records)
}

enum Phase {
    Staging,
    Publishing,
}

/// A job file being ingested: `Store::ingest_step` until it returns an outcome.
pub struct Ingest {
    name: String,
    text: Text,
    spans: Vec<Span>,
    /// Records done so far.
    next: usize,
    now: DateTime<Utc>,
    /// The content hash of the file; with `name`, its `files` key `fkey`.
    hash: u64,
    fkey: Vec<u8>,
    token: Option<u64>,
    overlay: Overlay,
    carry: Carry,
    /// Account, campaign and event records, re-applied by the commit.
    rest: Vec<Line<Record>>,
    phase: Phase,
    /// Set by the commit: what the file did, and the owners to release after publishing.
    applied: Option<Carry>,
}

impl Ingest {
    /// (records done, records in the file), for `file_progress`.
    pub fn progress(&self) -> (usize, usize) {
        (self.next, self.spans.len())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The content hash of the file (`codec::content_hash`).
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// How `Store::begin_ingest` starts.
pub enum Begin {
    /// Step it with `Store::ingest_step`.
    Started(Box<Ingest>),
    /// Decided at once: applied before, or not a readable file.
    Finished(ApplyOutcome),
}

fn rejection(line: usize, field: &str, reason: String) -> ApplyOutcome {
    ApplyOutcome::Rejected(Rejection {
        line,
        field: field.to_string(),
        reason,
    })
}

impl Store {
    /// Start ingesting job file `name`.
    pub fn begin_ingest(&self, name: &str, source: Source, now: DateTime<Utc>) -> Result<Begin, StoreError> {
        let (hash, spans, text) = match source {
            Source::Bytes(bytes) => (
                content_hash(&bytes),
                jobfile::record_spans(name, &bytes),
                Text::Whole(bytes),
            ),
            Source::Scanned(s) => (
                s.hash,
                s.spans,
                Text::File {
                    file: s.file,
                    stamp: s.stamp,
                },
            ),
        };
        let fkey = file_key(name, hash);
        self.op("read files")?;
        if self.trees()?[FILES].contains_key(&fkey)? {
            return Ok(Begin::Finished(ApplyOutcome::AlreadyApplied));
        }
        let spans = match spans {
            Ok(s) => s,
            Err(e) => return Ok(Begin::Finished(rejection(e.line, &e.field, e.reason))),
        };
        Ok(Begin::Started(Box::new(Ingest {
            name: name.to_string(),
            text,
            spans,
            next: 0,
            now,
            hash,
            fkey,
            token: None,
            overlay: Overlay::new(),
            carry: Carry::default(),
            rest: Vec::new(),
            phase: Phase::Staging,
            applied: None,
        })))
    }

    /// One bounded step of an ingest: `None` while there is more to do.
    pub fn ingest_step(&self, job: &mut Ingest) -> Result<Option<ApplyOutcome>, StoreError> {
        match job.phase {
            Phase::Staging if job.next < job.spans.len() => self.stage_chunk(job),
            Phase::Staging => self.commit(job),
            Phase::Publishing => {
                let token = job.token.unwrap_or(NO_TOKEN);
                if self.publish_chunk(token)? {
                    return Ok(None);
                }
                self.make_durable()?;
                let carry = job.applied.take().unwrap_or_default();
                for (is_campaign, owner) in &carry.resumed {
                    self.release(if *is_campaign { b"c" } else { b"a" }, owner, job.now)?;
                }
                Ok(Some(ApplyOutcome::Applied(carry.out)))
            }
        }
    }

    /// A clean stop while `job` is still staged (SPEC §10: a stop takes no new work):
    /// what it staged is dropped, and so is the count of start-ups that found it in
    /// `processing/`, since a stop is not a crash (SPEC §6, poison files); the file stays
    /// in `processing/` and is taken again, whole, at the next start. Returns `false`,
    /// touching nothing, once the file is committed: it counts as applied, and publishing
    /// its last chunks is left to finish (or to the recovery at the next open).
    pub fn abandon_ingest(&self, job: &mut Ingest) -> Result<bool, StoreError> {
        if !matches!(job.phase, Phase::Staging) {
            return Ok(false);
        }
        self.drop_staged(job)?;
        self.forget_leftover(&job.name)?;
        self.make_durable()?;
        Ok(true)
    }

    /// Apply a job file whole, or reject it whole with the line and field.
    /// Without an engine, the caps it raised wake what they parked before it returns.
    pub fn apply(&self, name: &str, bytes: &[u8], now: DateTime<Utc>) -> Result<ApplyOutcome, StoreError> {
        let mut job = match self.begin_ingest(name, Source::Bytes(bytes.to_vec()), now)? {
            Begin::Finished(o) => return Ok(o),
            Begin::Started(job) => job,
        };
        loop {
            if let Some(o) = self.ingest_step(&mut job)? {
                if let ApplyOutcome::Applied(a) = &o {
                    self.wake_raised(&a.raised, now)?;
                }
                return Ok(o);
            }
        }
    }

    fn stage_chunk(&self, job: &mut Ingest) -> Result<Option<ApplyOutcome>, StoreError> {
        let end = (job.next + CHUNK_RECORDS).min(job.spans.len());
        let records = match read_records(&job.text, &job.spans[job.next..end]) {
            Ok(r) => r,
            Err((line, field, reason)) => {
                self.drop_staged(job)?;
                return Ok(Some(rejection(line, &field, reason)));
            }
        };
        let token = match job.token {
            Some(t) => t,
            None => {
                let t = self.db().generate_id()?;
                // Before anything is staged under it: recovery finds every staged key.
                self.op("write ingest marker")?;
                let marker: Marker = (job.name.clone(), false);
                self.trees()?[META].insert(marker_key(t), codec::encode(&marker))?;
                job.token = Some(t);
                t
            }
        };
        let n_actions = records
            .iter()
            .filter(|l| matches!(l.record, Record::Action(_)))
            .count();
        let mut seqs = Vec::with_capacity(n_actions);
        for _ in 0..n_actions {
            seqs.push(self.db().generate_id()?);
        }
        let (st, now, overlay, carry) = (&self.settings, job.now, &job.overlay, &job.carry);
        let result = self.transact_mode(Mode::Dry { token, overlay }, |tx: &Tx| {
            let mut c = Ctx::resume(tx, st, now, &seqs, carry.clone());
            for l in &records {
                c.record(l)?;
            }
            Ok((c.into_carry(), tx.take_delta()))
        })?;
        match result {
            Ok((carry, delta)) => {
                job.carry = carry;
                job.overlay.extend(delta);
                job.rest.extend(
                    records
                        .into_iter()
                        .filter(|l| !matches!(l.record, Record::Action(_))),
                );
                job.next = end;
                Ok(None)
            }
            Err(r) => {
                self.drop_staged(job)?;
                Ok(Some(ApplyOutcome::Rejected(r)))
            }
        }
    }

    fn commit(&self, job: &mut Ingest) -> Result<Option<ApplyOutcome>, StoreError> {
        // What was staged must be what the file holds now, or none of it counts.
        if !job.text.unchanged().unwrap_or(false) {
            self.drop_staged(job)?;
            return Ok(Some(rejection(0, "file", CHANGED.into())));
        }
        let token = job.token.unwrap_or(NO_TOKEN);
        let (st, now, rest, name, fkey) = (&self.settings, job.now, &job.rest, &job.name, &job.fkey);
        let marker: Marker = (name.clone(), true);
        // The counts are the staging pass's: the commit re-applies the same records.
        let staged = &job.carry.out;
        let report = FileReport {
            name: name.clone(),
            hash: job.hash,
            accounts: staged.accounts,
            campaigns: staged.campaigns,
            actions: staged.actions,
            duplicates: staged.duplicates,
            events: staged.events,
        };
        let rkey = report_key(name, job.hash);
        let result = self.transact_mode(Mode::Commit { token }, |tx: &Tx| {
            if tx.get_raw(FILES, fkey)?.is_some() {
                return Ok(None);
            }
            let mut c = Ctx::new(tx, st, now, &[]);
            for l in rest {
                c.record(l)?;
            }
            tx.put(FILES, fkey, &ms(now))?;
            // Until `file_applied` is logged: a crash before that is reported at the
            // next start-up, not taken for a second drop.
            tx.put(META, &rkey, &report)?;
            // Applied: it is no poison file, whatever start-ups found it before.
            tx.del(META, &leftover_key(name))?;
            if job.token.is_some() {
                tx.put(META, &marker_key(token), &marker)?;
            }
            tx.flush_counts()?;
            Ok(Some(c.into_carry()))
        })?;
        let mut carry = match result {
            Ok(Some(c)) => c,
            Ok(None) => {
                self.drop_staged(job)?;
                return Ok(Some(ApplyOutcome::AlreadyApplied));
            }
            Err(r) => {
                self.drop_staged(job)?;
                return Ok(Some(ApplyOutcome::Rejected(r)));
            }
        };
        // The file is applied once this is durable; publishing only moves what it staged.
        self.make_durable()?;
        let mut out = std::mem::take(&mut carry.out);
        out.actions = job.carry.out.actions;
        out.duplicates = job.carry.out.duplicates;
        debug_assert_eq!(
            (out.accounts, out.campaigns, out.events),
            (
                job.carry.out.accounts,
                job.carry.out.campaigns,
                job.carry.out.events
            ),
            "the commit re-applies what the staging pass applied"
        );
        let mut applied = carry;
        applied.out = out;
        job.applied = Some(applied);
        job.overlay = Overlay::new();
        job.rest = Vec::new();
        job.phase = Phase::Publishing;
        Ok(None)
    }

    /// Move up to a chunk of the staged actions of committed file `token` into the live
    /// trees, or else of its staged links; when nothing is left, drop its marker and
    /// return false.
    fn publish_chunk(&self, token: u64) -> Result<bool, StoreError> {
        for tree in [ACTIONS, LINKS] {
            let prefix = stage_key(token, tree, b"");
            self.op("scan staged")?;
            let batch = self.trees()?[STAGED]
                .scan_prefix(&prefix)
                .take(CHUNK_RECORDS)
                .collect::<Result<Vec<_>, _>>()?;
            if batch.is_empty() {
                continue;
            }
            // A staged action is its state record, its body already in `bodies`: the
            // body is read only for the index key. One staged by a format 1 or 2 build
            // is the whole action (layout 1).
            let actions = if tree == ACTIONS {
                batch
                    .iter()
                    .map(|(k, v)| self.staged_action(&k[prefix.len()..], v).map(Some))
                    .collect::<Result<Vec<_>, StoreError>>()?
            } else {
                (0..batch.len()).map(|_| None).collect()
            };
            let result = self.transact(|tx| {
                for ((k, v), a) in batch.iter().zip(&actions) {
                    let key = &k[prefix.len()..];
                    if let Some(a) = a {
                        if tx.get_raw(ACTIONS, key)?.is_some() {
                            // Published before a crash: nothing to move.
                        } else {
                            match a {
                                Staged::Whole(a) => tx.insert_action(a)?,
                                Staged::State(id, ix) => tx.insert_state(id, ix, v)?,
                            }
                        }
                    } else if tx.get_raw(LINKS, key)?.is_none() {
                        tx.put_raw(LINKS, key, v)?;
                    }
                    tx.del(STAGED, k)?;
                }
                tx.flush_counts()?;
                Ok(())
            })?;
            result.map_err(|r| StoreError::Corrupt(r.reason))?;
            return Ok(true);
        }
        self.op("drop ingest marker")?;
        self.trees()?[META].remove(marker_key(token))?;
        Ok(false)
    }

    /// A staged `actions` value under action id `key`, read for publishing.
    fn staged_action(&self, key: &[u8], value: &[u8]) -> Result<Staged, StoreError> {
        let corrupt = |e: String| super::undecodable_action(key, e);
        match Action::read_stored(value).map_err(corrupt)? {
            StoredAction::Whole(a) => {
                debug_assert_eq!(a.id.as_bytes(), key);
                Ok(Staged::Whole(a))
            }
            StoredAction::State(s) => {
                let id = std::str::from_utf8(key).map_err(|e| corrupt(e.to_string()))?;
                let body = self.trees()?[BODIES]
                    .get(key)?
                    .ok_or_else(|| corrupt("its body is missing".into()))?;
                let ix = Indexing::of(&s, &body).map_err(corrupt)?;
                Ok(Staged::State(id.to_string(), ix))
            }
        }
    }

    /// Forget what an uncommitted file staged (a rejection, or recovery).
    fn drop_staged(&self, job: &mut Ingest) -> Result<(), StoreError> {
        if let Some(token) = job.token.take() {
            self.drop_token(token)?;
        }
        Ok(())
    }

    fn drop_token(&self, token: u64) -> Result<(), StoreError> {
        let prefix = token.to_be_bytes();
        let actions = stage_key(token, ACTIONS, b"");
        loop {
            self.op("drop staged")?;
            let keys = self.trees()?[STAGED]
                .scan_prefix(prefix)
                .keys()
                .take(CHUNK_RECORDS)
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                break;
            }
            // The bodies of staged actions first: a crash before the staged keys go
            // finds them again. A body whose action is live is not the file's.
            let mut bodies = sled::Batch::default();
            let mut batch = sled::Batch::default();
            for k in keys {
                if let Some(id) = k.strip_prefix(actions.as_slice()) {
                    if !self.trees()?[ACTIONS].contains_key(id)? {
                        bodies.remove(id);
                    }
                }
                batch.remove(k);
            }
            self.trees()?[BODIES].apply_batch(bodies)?;
            self.trees()?[STAGED].apply_batch(batch)?;
        }
        self.trees()?[META].remove(marker_key(token))?;
        Ok(())
    }

    /// The reports of committed files whose `file_applied` was never logged (the worker
    /// died between the commit and the log line), in key order. A start-up reports
    /// each once (SPEC §6): a file is never silently applied.
    pub fn unreported_files(&self) -> Result<Vec<FileReport>, StoreError> {
        self.op("scan file reports")?;
        let mut reports = Vec::new();
        for kv in self.trees()?[META].scan_prefix(REPORT_PREFIX) {
            let (k, v) = kv?;
            let report: FileReport = codec::decode_at("file report", &k, &v)?;
            debug_assert_eq!(&k[..], report_key(&report.name, report.hash).as_slice());
            reports.push(report);
        }
        Ok(reports)
    }

    /// `file_applied` of file `name` (content hash `hash`) is logged: forget its report.
    /// Not made durable here: a crash before the next flush reports it again, once.
    pub fn file_reported(&self, name: &str, hash: u64) -> Result<(), StoreError> {
        self.op("drop file report")?;
        // Only a file's commit writes a report, never the send path: nothing behind
        // can hide this key, so it is removed without making the send path catch up
        // (a write between a reservation's sync and its send).
        self.write_aside(META, &report_key(name, hash), None)?;
        Ok(())
    }

    /// Recovery at open: drop every staged, uncommitted file, and publish the rest of
    /// every committed one. Returns the names of the files dropped.
    pub fn recover_ingest(&self) -> Result<Vec<String>, StoreError> {
        self.op("scan ingest markers")?;
        let markers = self.trees()?[META]
            .scan_prefix(MARKER_PREFIX)
            .collect::<Result<Vec<_>, _>>()?;
        let mut dropped = Vec::new();
        let had_markers = !markers.is_empty();
        for (k, v) in markers {
            let token = k
                .get(MARKER_PREFIX.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("an ingest marker key is not 8 bytes".into()))?;
            let (name, committed): Marker = codec::decode_at("ingest marker", &k, &v)?;
            if committed {
                while self.publish_chunk(token)? {}
            } else {
                self.drop_token(token)?;
                dropped.push(name);
            }
        }
        debug_assert!(
            self.trees()?[STAGED].is_empty(),
            "every staged key belongs to a marked file"
        );
        if had_markers {
            self.make_durable()?;
        }
        Ok(dropped)
    }
}
