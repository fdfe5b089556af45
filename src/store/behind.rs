//! Writes of the send path that are committed and durable but not yet in their trees.
//!
//! A transaction of the send path (`Store::transact_behind`: a reserve batch with the
//! answers it carries, a batch of answers, a promotion, a day turn) writes one record
//! to the `wal` tree: every key and value it changed, in every tree (`WalRecord`). Its
//! changes stay in memory here, in `Behind`, which every reader looks through first.
//! `Store::catch_up` later writes them all to their trees in one transaction that also
//! removes the records, so a key written by many batches (an account, its day counter,
//! an action reserved then answered, a `ready` key taken and an `inflight` key put and
//! removed) costs its tree one write, or none. That happens once `BEHIND_MAX_BYTES` are
//! held, before any reader that does not look through (`Store::trees`), before a
//! snapshot and at a clean stop.
//!
//! The record is what makes a batch durable (SPEC P2: `make_durable` after it, before
//! any send); a crash leaves the records, and the next open writes them to their trees
//! before anything reads (`Store::replay_wal`). Writing a record's changes again is
//! harmless (each is the value the key ends with), and a record is removed in the
//! transaction that writes it, so a crash anywhere applies each batch once.

use super::tx::{Decoded, Overlay};
use super::wire::{WalRecordW, WalWriteW};
use std::borrow::Cow;
use std::ops::Bound;

/// At most this many bytes of keys and values are held behind their trees (about
/// 16,000 sent actions at the bench's sizes); more, and they are written at once.
pub const BEHIND_MAX_BYTES: usize = 4 << 20;

/// What the `wal` tree holds and the trees do not yet: the changes of the records
/// `first..next`, merged in order (a later write of a key replaces an earlier one).
#[derive(Debug, Default)]
pub struct Behind {
    pub overlay: Overlay,
    /// Bytes of keys and values in `overlay` (an estimate of its memory).
    pub bytes: usize,
    pub first: u64,
    pub next: u64,
    /// Accounts the send path decoded or wrote, with their bytes (`tx::Decoded`): kept
    /// across commits and catch-ups, since a copy is only given for the same bytes.
    pub accounts: Decoded,
}

/// At most this many accounts are kept decoded; past it the cache starts again.
pub const DECODED_MAX: usize = 16_384;

impl Behind {
    /// No record is waiting.
    pub fn is_empty(&self) -> bool {
        debug_assert!(self.first < self.next || self.overlay.is_empty());
        self.first == self.next
    }

    /// `Some(value)` if `key` of `tree` was written here (`Some(None)`: removed).
    pub fn get(&self, tree: usize, key: &[u8]) -> Option<Option<sled::IVec>> {
        if self.overlay.is_empty() {
            return None;
        }
        self.overlay.get(&(tree, key.to_vec())).cloned()
    }

    /// Keep `decoded` (accounts an attempt decoded or wrote) for the next attempts.
    pub fn keep_decoded(&mut self, decoded: Decoded) {
        if self.accounts.len() + decoded.len() > DECODED_MAX {
            self.accounts.clear();
        }
        self.accounts.extend(decoded);
    }

    /// Add the changes of record `self.next` (`delta`, already in the `wal` tree).
    pub fn merge(&mut self, delta: Overlay) {
        for ((tree, key), value) in delta {
            let (klen, vlen) = (key.len(), value.as_ref().map_or(0, |v| v.len()));
            match self.overlay.insert((tree, key), value) {
                // The key's old value goes; its key stays counted once.
                Some(old) => {
                    self.bytes = self.bytes.saturating_sub(old.map_or(0, |v| v.len())) + vlen;
                }
                None => self.bytes += klen + vlen,
            }
        }
        self.next += 1;
    }

    /// The entries of `tree` between `lo` and `hi`, in key order (`None`: removed).
    pub fn range<'a>(
        &'a self,
        tree: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a Option<sled::IVec>)> + 'a {
        let lo = match lo {
            Bound::Included(k) => Bound::Included((tree, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((tree, k.to_vec())),
            Bound::Unbounded => Bound::Included((tree, Vec::new())),
        };
        let hi = match hi {
            Bound::Included(k) => Bound::Included((tree, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((tree, k.to_vec())),
            Bound::Unbounded => Bound::Excluded((tree + 1, Vec::new())),
        };
        // An empty range (lo past hi) is empty, not a panic.
        let empty = match (&lo, &hi) {
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => l > h,
            _ => false,
        };
        let range = if empty || self.overlay.is_empty() {
            None
        } else {
            Some(self.overlay.range((lo, hi)))
        };
        range.into_iter().flatten().map(|((_, k), v)| (k.as_slice(), v))
    }
}

/// The `wal` key of record `seq`: big-endian, so the tree holds them in order.
pub fn wal_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// A transaction's changes as its `wal` record.
pub fn encode(delta: &Overlay) -> Vec<u8> {
    let writes = delta
        .iter()
        .map(|((tree, key), value)| WalWriteW {
            tree: *tree as u8,
            key: Cow::Borrowed(key.as_slice()),
            value: value.as_ref().map(|v| Cow::Borrowed(v.as_ref())),
        })
        .collect();
    super::codec::seal_v1(&WalRecordW { writes })
}

/// A `wal` record's changes; `trees` is how many trees there are (a record naming
/// another is corrupt).
pub fn decode(bytes: &[u8], trees: usize) -> Result<Overlay, String> {
    let w: WalRecordW<'static> = super::codec::open_v1(bytes)?;
    let mut out = Overlay::new();
    for write in w.writes {
        let tree = write.tree as usize;
        if tree >= trees {
            return Err(format!("it names tree {tree}, of {trees}"));
        }
        out.insert(
            (tree, write.key.into_owned()),
            write.value.map(|v| sled::IVec::from(v.into_owned())),
        );
    }
    Ok(out)
}

/// A sled scan of a tree (`stored`, in key order) as seen through what is behind
/// (`ahead`: the same range's entries written behind, in key order, copied out): a key
/// written behind shows its new value, one removed behind is skipped.
pub struct Merged<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> {
    stored: std::iter::Peekable<I>,
    ahead: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<sled::IVec>)>>,
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Merged<I> {
    pub fn new(stored: I, ahead: Vec<(Vec<u8>, Option<sled::IVec>)>) -> Merged<I> {
        debug_assert!(ahead.windows(2).all(|w| w[0].0 < w[1].0), "ahead is in key order");
        Merged {
            stored: stored.peekable(),
            ahead: ahead.into_iter().peekable(),
        }
    }
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for Merged<I> {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = match self.stored.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return self.stored.next(),
                None => None,
            };
            let take_ahead = match (s, self.ahead.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(s), Some((a, _))) => {
                    if a.as_slice() == s.as_ref() {
                        // The stored value is replaced or removed.
                        self.stored.next();
                    }
                    a.as_slice() <= s.as_ref()
                }
            };
            if !take_ahead {
                return self.stored.next();
            }
            if let Some((k, Some(v))) = self.ahead.next() {
                return Some(Ok((sled::IVec::from(k), v)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> sled::IVec {
        sled::IVec::from(s.as_bytes())
    }

    fn stored(keys: &[&str]) -> Vec<sled::Result<(sled::IVec, sled::IVec)>> {
        keys.iter().map(|k| Ok((iv(k), iv(&format!("s{k}"))))).collect()
    }

    fn seen(keys: &[&str], ahead: &[(&str, Option<&str>)], n: usize) -> Vec<(String, String)> {
        let mut b = Behind::default();
        let delta: Overlay = ahead
            .iter()
            .map(|(k, v)| ((3, k.as_bytes().to_vec()), v.map(iv)))
            .collect();
        b.merge(delta);
        let ahead = b
            .range(3, Bound::Unbounded, Bound::Unbounded)
            .map(|(k, v)| (k.to_vec(), v.clone()))
            .collect();
        Merged::new(stored(keys).into_iter(), ahead)
            .take(n)
            .collect::<sled::Result<Vec<_>>>()
            .expect("no error")
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).expect("utf8"),
                    String::from_utf8(v.to_vec()).expect("utf8"),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_scan_sees_keys_added_replaced_and_removed_behind() {
        let ahead = [("a", None), ("b", Some("nb")), ("c", Some("nc")), ("e", None)];
        assert_eq!(
            seen(&["a", "b", "d", "e", "f"], &ahead, 10),
            pairs(&[("b", "nb"), ("c", "nc"), ("d", "sd"), ("f", "sf")])
        );
        assert_eq!(seen(&["a", "b", "d"], &ahead, 1), pairs(&[("b", "nb")]));
        // Every stored key removed: nothing is left.
        assert_eq!(seen(&["a", "e"], &ahead, 10), pairs(&[("b", "nb"), ("c", "nc")]));
        assert_eq!(seen(&[], &[("x", None)], 10), pairs(&[]));
        assert_eq!(seen(&["x"], &[], 10), pairs(&[("x", "sx")]));
    }

    #[test]
    fn a_range_holds_only_its_own_tree_from_its_start() {
        let mut b = Behind::default();
        let delta: Overlay = [
            ((2, b"k".to_vec()), Some(iv("two"))),
            ((3, b"a".to_vec()), Some(iv("a"))),
            ((3, b"m".to_vec()), None),
            ((4, b"a".to_vec()), Some(iv("four"))),
        ]
        .into_iter()
        .collect();
        b.merge(delta);
        let keys: Vec<&[u8]> = b
            .range(3, Bound::Included(b"b"), Bound::Unbounded)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"m".as_slice()]);
        assert_eq!(b.range(3, Bound::Unbounded, Bound::Unbounded).count(), 2);
        assert_eq!(b.range(3, Bound::Unbounded, Bound::Excluded(b"m")).count(), 1);
        assert_eq!(
            b.range(3, Bound::Included(b"z"), Bound::Excluded(b"a")).count(),
            0
        );
        assert_eq!(b.range(5, Bound::Unbounded, Bound::Unbounded).count(), 0);
        assert_eq!(b.get(3, b"m"), Some(None));
        assert_eq!(b.get(3, b"z"), None);
        assert_eq!((b.first, b.next), (0, 1));
    }

    #[test]
    fn merging_counts_each_key_once_and_keeps_the_last_value() {
        let mut b = Behind::default();
        b.merge(
            [((0, b"acct".to_vec()), Some(iv("0123456789")))]
                .into_iter()
                .collect(),
        );
        assert_eq!(b.bytes, 14);
        b.merge([((0, b"acct".to_vec()), Some(iv("01")))].into_iter().collect());
        assert_eq!(b.bytes, 6);
        assert_eq!(b.get(0, b"acct"), Some(Some(iv("01"))));
        assert_eq!(b.next, 2);
    }

    #[test]
    fn a_record_decodes_to_the_changes_it_was_made_from() {
        let delta: Overlay = [
            ((2, b"q4/jane".to_vec()), Some(iv("state"))),
            ((3, b"ready-key".to_vec()), None),
        ]
        .into_iter()
        .collect();
        let bytes = encode(&delta);
        assert_eq!(decode(&bytes, 15).expect("decodes"), delta);
        let err = decode(&bytes, 3).expect_err("tree 3 of 3 is not a tree");
        assert!(err.contains("tree 3"), "{err}");
        assert!(decode(&bytes[..bytes.len() - 1], 15).is_err());
    }
}
