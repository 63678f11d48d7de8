//! A table keyed by object ids or path hashes that is one sorted array: for the tables a backup
//! loads whole from disk and mostly reads — `create`'s chunk index and files cache, which at a
//! few million files are the largest things a run holds.
//!
//! **Why not a hash map.** A hash map of `n` entries holds between `n` and `8n/7` buckets of
//! key and value, and doubles past each power-of-two threshold: 1,000,000 files-cache entries
//! live in 2²¹ buckets, 2.1 times the space of the entries themselves, and loading them means
//! inserting each one. A sorted array holds exactly the entries and loads by reading them in
//! order; what a run adds goes to a small map beside it (see `chunk_index`, `files_cache`) and
//! is merged in when the table is saved.
//!
//! **Finding a key.** The keys are keyed hashes, so their leading bits are uniform: a directory
//! of where each `bits`-bit prefix starts, with one or two entries a prefix, leaves a look at
//! one or two neighbouring entries, about what a hash map's lookup costs (with eight entries a
//! prefix, the binary search's comparisons took a tenth of an unchanged backup's CPU time at a
//! million files). The directory costs 2–4 bytes an entry. Ids an outsider can choose (an
//! unencrypted repository's plain SHA-256) may crowd one prefix; that costs a binary search
//! over them, never more.

use crate::format::envelope::ObjectId;

/// `(key, value)` pairs sorted by key, each key once; see the module notes.
#[derive(Debug)]
pub struct SortedIds<V> {
    entries: Vec<(ObjectId, V)>,
    /// `directory[p]`: the index of the first entry whose key's prefix is `p` or more; one more
    /// element than there are prefixes.
    directory: Vec<u32>,
    bits: u32,
}

impl<V> Default for SortedIds<V> {
    fn default() -> SortedIds<V> {
        SortedIds {
            entries: Vec::new(),
            directory: vec![0, 0],
            bits: 0,
        }
    }
}

impl<V> SortedIds<V> {
    /// The table of `entries`, or `None` unless their keys strictly increase (a damaged file)
    /// and fit the directory's 32-bit indexes.
    pub fn from_sorted(entries: Vec<(ObjectId, V)>) -> Option<SortedIds<V>> {
        let sorted = entries.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !sorted || u32::try_from(entries.len()).is_err() {
            return None;
        }
        let mut table = SortedIds {
            entries,
            directory: Vec::new(),
            bits: 0,
        };
        table.index();
        Some(table)
    }

    fn index(&mut self) {
        let n = self.entries.len();
        // One or two entries a prefix, up to 2^28 prefixes.
        self.bits = n.max(1).ilog2().min(28);
        let prefixes = 1usize << self.bits;
        self.directory = Vec::with_capacity(prefixes + 1);
        let mut at = 0;
        for prefix in 0..prefixes {
            while at < n && self.prefix(&self.entries[at].0) < prefix {
                at += 1;
            }
            self.directory.push(at as u32);
        }
        self.directory.push(n as u32);
    }

    fn prefix(&self, key: &ObjectId) -> usize {
        let lead = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
        // `checked_shr` because a shift by the full width (`bits` = 0) is not a zero.
        lead.checked_shr(32 - self.bits).unwrap_or(0) as usize
    }

    fn position(&self, key: &ObjectId) -> Option<usize> {
        let prefix = self.prefix(key);
        let (start, end) = (
            self.directory[prefix] as usize,
            self.directory[prefix + 1] as usize,
        );
        let bucket = &self.entries[start..end];
        let found = if bucket.len() <= 4 {
            bucket.iter().position(|(k, _)| k == key)
        } else {
            bucket.binary_search_by(|(k, _)| k.cmp(key)).ok()
        };
        found.map(|i| start + i)
    }

    pub fn get(&self, key: &ObjectId) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &ObjectId) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Drops `key`. It moves every later entry, so it is for the rare removal, not for many.
    pub fn remove(&mut self, key: &ObjectId) {
        if let Some(i) = self.position(key) {
            self.entries.remove(i);
            self.index();
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&ObjectId, &V) -> bool) {
        self.entries.retain(|(key, value)| keep(key, value));
        self.index();
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectId, &V)> {
        self.entries.iter().map(|(key, value)| (key, value))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, value)| value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The entries of two runs sorted by key, in key order; where both hold a key, `newer`'s entry
/// is the one given.
pub fn merged<'a, V: 'a>(
    older: impl Iterator<Item = (&'a ObjectId, &'a V)>,
    newer: impl Iterator<Item = (&'a ObjectId, &'a V)>,
) -> impl Iterator<Item = (&'a ObjectId, &'a V)> {
    let mut older = older.peekable();
    let mut newer = newer.peekable();
    std::iter::from_fn(move || match (older.peek(), newer.peek()) {
        (Some((a, _)), Some((b, _))) if a < b => older.next(),
        (Some((a, _)), Some((b, _))) if a == b => {
            older.next();
            newer.next()
        }
        (_, Some(_)) => newer.next(),
        (Some(_), None) => older.next(),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lead: u32, tail: u8) -> ObjectId {
        let mut key = [tail; 32];
        key[..4].copy_from_slice(&lead.to_be_bytes());
        key
    }

    #[test]
    fn finds_every_key_and_no_other_at_every_size() {
        for n in [0usize, 1, 2, 15, 16, 17, 100, 5000] {
            let mut entries: Vec<(ObjectId, usize)> = (0..n)
                .map(|i| (key((i as u32).wrapping_mul(2_654_435_761), 1), i))
                .collect();
            entries.sort();
            let table = SortedIds::from_sorted(entries.clone()).unwrap();
            for (k, v) in &entries {
                assert_eq!(table.get(k), Some(v), "n {n}");
                let mut absent = *k;
                absent[31] = 2;
                assert_eq!(table.get(&absent), None, "n {n}");
            }
            assert_eq!(table.get(&[0xff; 32]), None);
            assert_eq!(table.get(&[0; 32]), None);
        }
    }

    #[test]
    fn crowded_prefixes_still_resolve_and_unsorted_input_is_refused() {
        // An outsider's ids all sharing one prefix: found by the binary search of that prefix.
        let entries: Vec<(ObjectId, u8)> = (0..200u8).map(|i| (key(7, i), i)).collect();
        let mut table = SortedIds::from_sorted(entries).unwrap();
        assert_eq!(table.get(&key(7, 150)), Some(&150));
        table.remove(&key(7, 150));
        assert_eq!((table.get(&key(7, 150)), table.len()), (None, 199));
        table.retain(|_, v| v % 2 == 0);
        assert_eq!(
            (table.get(&key(7, 4)), table.get(&key(7, 5))),
            (Some(&4), None)
        );
        assert!(SortedIds::from_sorted(vec![(key(2, 0), ()), (key(1, 0), ())]).is_none());
        assert!(SortedIds::from_sorted(vec![(key(1, 0), ()), (key(1, 0), ())]).is_none());
    }

    #[test]
    fn merging_keeps_order_and_prefers_the_newer_entry() {
        let older = [(key(1, 0), 'a'), (key(3, 0), 'b'), (key(5, 0), 'c')];
        let newer = [(key(2, 0), 'x'), (key(3, 0), 'y'), (key(9, 0), 'z')];
        let values: String = merged(
            older.iter().map(|(k, v)| (k, v)),
            newer.iter().map(|(k, v)| (k, v)),
        )
        .map(|(_, v)| *v)
        .collect();
        assert_eq!(values, "axycz");
    }
}
