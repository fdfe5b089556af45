//! Keys and values on disk. Keys are big-endian so that byte order is time and sequence
//! order; ids are separated by 0x00, which ids may not contain (control characters are
//! rejected by the job-file parser). Values are postcard-encoded `Stored<W>`: an enum
//! whose variants are only ever appended, so a record written by this version is read
//! by every later one. `W` is always a store-owned wire type (`wire.rs`) or a plain
//! value (a counter, an instant, an id): a [`Value`] is written and read only as one,
//! and the records that hold policy types convert at the edge (`edge.rs`).

use super::StoreError;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The on-disk format this build writes; a store with a larger one is refused.
/// Format 2 added two ledger record kinds that a format-1 build cannot read: the
/// outcomes of a recording transaction (`LedgerOutcomes`, `outcome_key`) and the
/// reservations of a reserve transaction (`LedgerReservations`, `reservations_key`,
/// with 12-byte `inflight` values). Every format-1 record still reads as it is, so a
/// format-1 store is upgraded by writing the new number (`Store::check_format`).
/// Moving the records to their own wire types (`wire.rs`) kept every byte: no new format.
/// Format 3 splits an action in two: its state (`ActionStateW`, `Stored::V2` in
/// `actions`, rewritten by reserve and record) and its body (`ActionBodyW` in
/// `bodies`, written once at ingest). A format 1 or 2 store still holds whole actions
/// (`Stored::V1`); each is read as it is and rewritten split at its next write, in
/// that write's transaction, so the upgrade again writes only the number at open.
/// Format 4 adds the second layout of an account and of a campaign (`AccountW`,
/// `CampaignW` as `Stored::V2`, with a pending zone change), which a format-3 build
/// reads as corrupt: with the number raised, that build refuses the store as newer
/// (exit 78, a deployment mistake) instead of failing on a record (exit 74, restarted
/// again and again). Every format-3 record still reads, so the upgrade writes only the
/// number.
/// Format 5 adds the `wal` tree (`store::behind`): the send path's batches are durable
/// there before their changes reach the other trees. A format-4 build would not replay
/// them after a crash (it would read every action and counter of those batches as
/// before them), so it must refuse such a store; a format-4 store has no record there,
/// so the upgrade again writes only the number.
pub const FORMAT_VERSION: u32 = 5;

/// The versioned envelope of every value. Append variants; never reorder or remove.
#[derive(Serialize, Deserialize)]
pub enum Stored<T> {
    V1(T),
    /// The second layout of a record whose fields grew (`Account`, `Campaign`).
    V2(T),
}

/// A value the store keeps: its bytes on disk and back. Implemented by plain values
/// ([`Plain`]) and, in `edge.rs`, by each in-memory record through its wire type; never
/// by serde alone, so a policy type cannot reach the disk without a pinned conversion.
pub trait Value: Sized {
    fn to_stored(&self) -> Vec<u8>;
    /// The value, or why the bytes are not one (no context: callers add the record
    /// and key, see [`decode_at`]).
    fn from_stored(bytes: &[u8]) -> Result<Self, String>;
}

/// Data written as it is, in the `Stored::V1` envelope: numbers, text, and the wire
/// types. Never an in-memory record or a policy type.
pub trait Plain: Serialize + DeserializeOwned {}

macro_rules! plain {
    ($($t:ty),+) => { $(impl Plain for $t {})+ };
}

plain!(bool, u8, u32, u64, i64, String);
impl<A: Plain, B: Plain> Plain for (A, B) {}

impl<T: Plain> Value for T {
    fn to_stored(&self) -> Vec<u8> {
        seal_v1(self)
    }

    fn from_stored(bytes: &[u8]) -> Result<T, String> {
        open_v1(bytes)
    }
}

pub fn encode<T: Value>(value: &T) -> Vec<u8> {
    value.to_stored()
}

pub fn decode<T: Value>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    T::from_stored(bytes).map_err(|e| StoreError::Corrupt(format!("cannot decode {what}: {e}")))
}

/// `decode`, naming the key the value was read from in the error.
pub fn decode_at<T: Value>(what: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    T::from_stored(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "cannot decode {what} at key \"{}\": {e}",
            key.escape_ascii()
        ))
    })
}

/// `value` in the `Stored::V1` envelope. Only for wire types and plain values.
pub(super) fn seal_v1<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail: postcard errors only on
    // unsupported types (none here) or a full fixed buffer (a Vec grows).
    postcard::to_allocvec(&Stored::V1(value)).unwrap_or_default()
}

/// `value` in the `Stored::V2` envelope, for records read with [`open_evolved`].
pub(super) fn seal_v2<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // As in `seal_v1`: cannot fail for these types.
    postcard::to_allocvec(&Stored::V2(value)).unwrap_or_default()
}

/// The `Stored::V1` value of `bytes`; layout 2 is refused.
pub(super) fn open_v1<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    open_v1_in(bytes)
}

/// The `Stored::V1` value of `bytes`, borrowing its text from them; layout 2 is refused.
pub(super) fn open_v1_in<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match postcard::from_bytes::<Stored<T>>(bytes) {
        Ok(Stored::V1(v)) => Ok(v),
        Ok(Stored::V2(_)) => Err("unexpected layout 2".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A record read in either of its layouts.
pub(super) enum Layout<Old, New> {
    V1(Old),
    V2(New),
}

/// Read a record that has two layouts: `V1` holds `Old`, `V2` holds `New`. The
/// envelope's first byte is the variant (postcard varint).
pub(super) fn open_evolved<Old: DeserializeOwned, New: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Layout<Old, New>, String> {
    if bytes.first() == Some(&0) {
        return open_v1(bytes).map(Layout::V1);
    }
    match postcard::from_bytes::<Stored<New>>(bytes) {
        Ok(Stored::V2(v)) => Ok(Layout::V2(v)),
        Ok(Stored::V1(_)) => Err("bad layout".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Sign-flipped big-endian i64, so negative values sort first.
pub fn be_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn from_be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    (u64::from_be_bytes(a) ^ (1 << 63)) as i64
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub fn day_num(d: NaiveDate) -> i32 {
    d.num_days_from_ce()
}

pub fn from_day_num(n: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(n).unwrap_or(NaiveDate::MIN)
}

fn be_day(d: NaiveDate) -> [u8; 4] {
    ((day_num(d) as u32) ^ (1 << 31)).to_be_bytes()
}

/// Concatenate parts with 0x00 separators.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// `days` tree: per-account-day counters.
pub fn account_day_key(account: &str, day: NaiveDate) -> Vec<u8> {
    key(&[b"a", account.as_bytes(), &be_day(day)])
}

/// `days` tree: per-campaign-day counters.
pub fn campaign_day_key(campaign: &str, day: NaiveDate) -> Vec<u8> {
    key(&[b"c", campaign.as_bytes(), &be_day(day)])
}

/// The day encoded at the end of a `days` key.
pub fn day_of_key(k: &[u8]) -> NaiveDate {
    let mut a = [0u8; 4];
    a.copy_from_slice(&k[k.len() - 4..]);
    from_day_num((u32::from_be_bytes(a) ^ (1 << 31)) as i32)
}

/// `ready` tree: queued and due, in fair order within an account: campaign, then
/// priority (higher first), then ingest sequence (older first).
pub fn ready_key(account: &str, campaign: &str, priority: i32, seq: u64) -> Vec<u8> {
    let prio = (i64::from(i32::MAX) - i64::from(priority)) as u32;
    key(&[
        account.as_bytes(),
        campaign.as_bytes(),
        &prio.to_be_bytes(),
        &seq.to_be_bytes(),
    ])
}

/// The part of a ready key after which every key belongs to a later campaign.
pub fn ready_after_campaign(account: &str, campaign: &str) -> Vec<u8> {
    let mut k = key(&[account.as_bytes(), campaign.as_bytes()]);
    k.push(1);
    k
}

pub fn account_prefix(account: &str) -> Vec<u8> {
    let mut k = account.as_bytes().to_vec();
    k.push(0);
    k
}

/// The first key after every key of `account_prefix(account)` (an id holds no 0xff
/// byte: it is UTF-8).
pub fn account_prefix_end(account: &str) -> Vec<u8> {
    let mut k = account.as_bytes().to_vec();
    k.push(1);
    k
}

/// Split a ready key into (account, campaign).
pub fn split_ready_key(k: &[u8]) -> Option<(String, String)> {
    let mut parts = k.splitn(3, |&b| b == 0);
    let a = parts.next()?;
    let c = parts.next()?;
    Some((
        String::from_utf8_lossy(a).into_owned(),
        String::from_utf8_lossy(c).into_owned(),
    ))
}

/// `timed` tree: waiting for a time (not_before, parking, backoff).
pub fn timed_key(until_ms: i64, action: &str) -> Vec<u8> {
    let mut k = be_i64(until_ms).to_vec();
    k.extend_from_slice(action.as_bytes());
    k
}

/// `waiting` tree: parked until an event (a campaign resumes, an account resumes).
pub fn waiting_key(owner_kind: &[u8], owner: &str, action: &str) -> Vec<u8> {
    key(&[owner_kind, owner.as_bytes(), action.as_bytes()])
}

pub fn waiting_prefix(owner_kind: &[u8], owner: &str) -> Vec<u8> {
    let mut k = key(&[owner_kind, owner.as_bytes()]);
    k.push(0);
    k
}

/// `links` tree: prospect → account per campaign (sticky), and the sent invite of a
/// prospect per account (for acceptances).
pub fn sticky_key(campaign: &str, prospect: &str) -> Vec<u8> {
    key(&[b"s", campaign.as_bytes(), prospect.as_bytes()])
}

pub fn invite_key(account: &str, prospect: &str) -> Vec<u8> {
    key(&[b"i", account.as_bytes(), prospect.as_bytes()])
}

/// 128-bit FNV-1a of an action id: the compact tombstone of a pruned action.
pub fn id_hash(id: &str) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for &b in id.as_bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h
}

/// `links` tree: the tombstone of a pruned action id (value: when it was pruned, ms).
pub fn tombstone_key(id: &str) -> Vec<u8> {
    key(&[b"t", &id_hash(id).to_be_bytes()])
}

/// `links` tree: tombstones in the order they expire (value: the tombstone key).
pub fn tombstone_expiry_key(pruned_ms: i64, id: &str) -> Vec<u8> {
    key(&[b"T", &be_i64(pruned_ms), &id_hash(id).to_be_bytes()])
}

pub const TOMBSTONE_EXPIRY_PREFIX: &[u8] = b"T\0";

/// The first expiry key at `pruned_ms`: every tombstone pruned earlier sorts before it.
pub fn tombstone_expiry_bound(pruned_ms: i64) -> Vec<u8> {
    key(&[b"T", &be_i64(pruned_ms)])
}

/// `links` tree: the last InMail sent by an account to a prospect (for replies named by
/// account and prospect, SPEC §9).
pub fn inmail_key(account: &str, prospect: &str) -> Vec<u8> {
    key(&[b"m", account.as_bytes(), prospect.as_bytes()])
}

/// `links` tree: a feed event id already applied (value: when, ms), by its hash.
pub fn feed_event_key(id: &str) -> Vec<u8> {
    key(&[b"e", &id_hash(id).to_be_bytes()])
}

/// `links` tree: applied feed event ids in the order they expire (value: the id key).
pub fn feed_event_expiry_key(applied_ms: i64, id: &str) -> Vec<u8> {
    key(&[b"E", &be_i64(applied_ms), &id_hash(id).to_be_bytes()])
}

pub const FEED_EVENT_EXPIRY_PREFIX: &[u8] = b"E\0";

/// The first expiry key at `applied_ms`: every id applied earlier sorts before it.
pub fn feed_event_expiry_bound(applied_ms: i64) -> Vec<u8> {
    key(&[b"E", &be_i64(applied_ms)])
}

/// `ledger` tree: a reservation is keyed by its id (8 bytes, big-endian); a release
/// (SPEC §3: the slots of an attempt that was not delivered) by its own id and `r`, so
/// both kinds sort in the order they were committed.
pub fn release_key(id: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn is_release_key(k: &[u8]) -> bool {
    k.len() == 9 && k[8] == b'r'
}

/// `ledger` tree: the outcomes recorded by one transaction, keyed by their own id and
/// `o` (after the reservations and releases committed before them).
pub fn outcome_key(id: u64) -> [u8; 9] {
    let mut k = [b'o'; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k
}

/// `ledger` tree: every reservation of one reserve transaction, keyed by its own id
/// and `b`.
pub fn reservations_key(id: u64) -> [u8; 9] {
    let mut k = [b'b'; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k
}

/// The `inflight` value of an action reserved in a batch: the batch's ledger id and
/// the entry's index in it (12 bytes). A format-1 store holds the 8-byte id of a
/// single `LedgerEntry` instead.
pub fn inflight_value(batch: u64, index: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&batch.to_be_bytes());
    v[8..].copy_from_slice(&index.to_be_bytes());
    v
}

/// The index in its batch that an `inflight` value names (`None`: a single entry).
pub fn inflight_index(v: &[u8]) -> Option<u32> {
    let b: [u8; 4] = v.get(8..12)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// The kinds of `ledger` records, told apart by their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerKind {
    /// `LedgerEntry`: 8 bytes (format 1; format 2 writes batches).
    Reservation,
    /// `LedgerReservations`: 8 bytes and `b`.
    Reservations,
    /// `LedgerRelease`: 8 bytes and `r`.
    Release,
    /// `LedgerOutcomes`: 8 bytes and `o`.
    Outcomes,
}

pub fn ledger_kind(k: &[u8]) -> Option<LedgerKind> {
    match (k.len(), k.last()) {
        (8, _) => Some(LedgerKind::Reservation),
        (9, Some(b'r')) => Some(LedgerKind::Release),
        (9, Some(b'o')) => Some(LedgerKind::Outcomes),
        (9, Some(b'b')) => Some(LedgerKind::Reservations),
        _ => None,
    }
}

/// The id at the start of a `ledger` key (reservation or release).
pub fn ledger_id(k: &[u8]) -> Option<u64> {
    let b: [u8; 8] = k.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// `files` tree: name and content hash of every applied job file.
pub fn file_key(name: &str, hash: u64) -> Vec<u8> {
    key(&[name.as_bytes(), &hash.to_be_bytes()])
}

/// FNV-1a, 64 bit: a content fingerprint for applied files (not a security boundary;
/// the name is part of the key too).
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = ContentHash::default();
    h.update(bytes);
    h.finish()
}

/// `content_hash` fed block by block.
pub struct ContentHash(u64);

impl Default for ContentHash {
    fn default() -> Self {
        ContentHash(0xcbf2_9ce4_8422_2325)
    }
}

impl ContentHash {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_round_trips() {
        assert!(be_i64(-5) < be_i64(3));
        assert!(be_i64(3) < be_i64(300));
        assert_eq!(from_be_i64(&be_i64(-12345)), -12345);
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 8).expect("date");
        let d2 = NaiveDate::from_ymd_opt(2026, 3, 9).expect("date");
        assert!(account_day_key("a", d1) < account_day_key("a", d2));
        assert_eq!(day_of_key(&account_day_key("acct", d2)), d2);
        assert!(
            ready_key("a", "c", 5, 9) < ready_key("a", "c", 0, 1),
            "higher priority first"
        );
        assert!(
            ready_key("a", "c", 0, 1) < ready_key("a", "c", 0, 2),
            "older first"
        );
        assert!(ready_key("a", "c", i32::MIN, 1) < ready_after_campaign("a", "c"));
        assert!(ready_after_campaign("a", "c") < ready_key("a", "cx", i32::MAX, 0));
        assert_eq!(
            split_ready_key(&ready_key("a", "c", 0, 1)),
            Some(("a".into(), "c".into()))
        );
    }

    #[test]
    fn versioned_values() {
        let bytes = encode(&(7u32, "x".to_string()));
        assert_eq!(bytes[0], 0, "the variant leads");
        assert_eq!(
            decode::<(u32, String)>("t", &bytes).expect("decodes"),
            (7, "x".to_string())
        );
        let newer = [1u8, 7, 1, b'x'];
        assert!(decode::<(u32, String)>("t", &newer).is_err());
    }
}
