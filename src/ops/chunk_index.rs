//! The chunk index: the chunks of a repository by id, each with its plaintext and stored sizes
//! and, in an index that counts them, how many references archives make to it — borg's
//! `ChunkIndex` (id → refcount, size, csize, all 32-bit).
//!
//! Two kinds of index are built, and they differ only in whether references are counted, so the
//! count is the type parameter of one type:
//!
//! - **`ChunkIndex` (no counts)** is `create`'s: which chunks the repository already holds, so a
//!   chunk is uploaded once and every reference to it can say `[id, size, csize]`. `create` only
//!   adds chunks, and whether a chunk is new in this run is known from the run itself, so it has
//!   no use for counts; without them it can be kept in step with the repository cheaply (a list
//!   of ids and the archives it has not read yet, `create::chunk_cache`), where counts would mean
//!   reading every archive whenever another client wrote. It is held for a whole backup and
//!   looked up per chunk, so its entry stays 8 bytes next to the 32-byte id: a `u32` count that
//!   `create` would never maintain would make every entry 12 bytes (~10% more memory for millions
//!   of chunks) for nothing.
//! - **`ChunkIndex<u32>` (counted)** is built the way borg's cache sync builds its index — every
//!   archive object, every item-metadata chunk and every content chunk the items name, counted
//!   once per reference — for `info`'s statistics; prune and delete need the same exact counts
//!   to know which chunks no archive references any more. Like borg's, a count stops at
//!   [`MAX_REFCOUNT`] and stays there.
//!
//! [`visit_references`] is that reading of one archive, for both kinds.

use std::sync::Arc;

use crate::format::archive::{ArchiveMeta, ItemStreamDecoder};
use crate::format::envelope::{ObjectId, ObjectKey};
use crate::format::item::ChunkRef;
use crate::repo::repository::SharedRepository;

use super::id_map::{IdMap, IdSet};
use super::items::{ReadError, fetch_ahead, fetch_sized};
use super::sorted_ids::{SortedIds, merged};

/// borg's `ChunkIndex.MAX_VALUE` (2³² − 1025): a count that reaches it stays there.
pub const MAX_REFCOUNT: u32 = u32::MAX - 1024;

/// A chunk's plaintext and stored sizes; a `csize` of 0 means "present, sizes not known yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub size: u32,
    pub csize: u32,
}

impl Sizes {
    pub const UNKNOWN: Sizes = Sizes { size: 0, csize: 0 };

    pub fn known(self) -> bool {
        self.csize != 0
    }
}

/// One chunk: its sizes and its reference count, `()` in an index without counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<R> {
    pub sizes: Sizes,
    pub refcount: R,
}

/// Chunk id → [`Entry`]; `R` is `()` (no counts) or `u32` (counted); see the module notes.
///
/// What was loaded from disk is a [`SortedIds`] — compact, and the bulk of `create`'s index at
/// millions of chunks — and what a run adds goes to a map beside it. A key is in one of the two,
/// never both. The counted indexes are built in memory and only use the map.
#[derive(Debug)]
pub struct ChunkIndex<R = ()> {
    loaded: SortedIds<Entry<R>>,
    added: IdMap<ObjectId, Entry<R>>,
}

impl<R> Default for ChunkIndex<R> {
    fn default() -> ChunkIndex<R> {
        ChunkIndex {
            loaded: SortedIds::default(),
            added: IdMap::default(),
        }
    }
}

impl<R> ChunkIndex<R> {
    pub fn get(&self, id: &ObjectId) -> Option<&Entry<R>> {
        self.loaded.get(id).or_else(|| self.added.get(id))
    }

    fn get_mut(&mut self, id: &ObjectId) -> Option<&mut Entry<R>> {
        match self.loaded.get_mut(id) {
            Some(entry) => Some(entry),
            None => self.added.get_mut(id),
        }
    }

    /// In no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&ObjectId, &Entry<R>)> {
        self.loaded.iter().chain(&self.added)
    }

    /// In id order, as a file of them is kept.
    pub fn sorted_entries(&self) -> impl Iterator<Item = (&ObjectId, &Entry<R>)> {
        let mut added: Vec<_> = self.added.iter().collect();
        added.sort_unstable_by_key(|(id, _)| *id);
        merged(self.loaded.iter(), added.into_iter())
    }

    pub fn len(&self) -> usize {
        self.loaded.len() + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops `id`: the object was deleted.
    pub fn remove(&mut self, id: &ObjectId) {
        self.loaded.remove(id);
        self.added.remove(id);
    }

    fn put(&mut self, id: ObjectId, entry: Entry<R>) {
        match self.loaded.get_mut(&id) {
            Some(old) => *old = entry,
            None => {
                self.added.insert(id, entry);
            }
        }
    }
}

impl ChunkIndex {
    /// The index of `sorted`, chunks in strictly increasing id order (as [`sorted_entries`]
    /// gives them); `None` if they are not.
    ///
    /// [`sorted_entries`]: ChunkIndex::sorted_entries
    pub fn from_sorted(sorted: Vec<(ObjectId, Sizes)>) -> Option<ChunkIndex> {
        let entries = sorted
            .into_iter()
            .map(|(id, sizes)| {
                (
                    id,
                    Entry {
                        sizes,
                        refcount: (),
                    },
                )
            })
            .collect();
        Some(ChunkIndex {
            loaded: SortedIds::from_sorted(entries)?,
            added: IdMap::default(),
        })
    }

    /// Whether the repository has `chunk`, with the sizes the reference gives.
    pub fn holds(&self, chunk: &ChunkRef) -> bool {
        self.get(&chunk.id).is_some_and(|entry| {
            entry.sizes.known()
                && u64::from(entry.sizes.size) == chunk.size
                && u64::from(entry.sizes.csize) == chunk.csize
        })
    }

    pub fn insert(&mut self, id: ObjectId, sizes: Sizes) {
        self.put(
            id,
            Entry {
                sizes,
                refcount: (),
            },
        );
    }

    /// Makes the ids those of the repository's listing `present`: entries not in it are dropped,
    /// ids not known yet are added with their sizes unknown.
    pub fn match_listing(&mut self, present: &IdSet<ObjectId>) {
        self.loaded.retain(|id, _| present.contains(id));
        self.added.retain(|id, _| present.contains(id));
        for id in present {
            if self.get(id).is_none() {
                self.added.insert(
                    *id,
                    Entry {
                        sizes: Sizes::UNKNOWN,
                        refcount: (),
                    },
                );
            }
        }
    }

    /// Records sizes for a chunk the repository holds, unless they are known or unusable.
    pub fn learn(&mut self, id: ObjectId, size: u64, csize: u64) {
        if let Some(entry) = self.get_mut(&id)
            && !entry.sizes.known()
            && csize != 0
            && let (Ok(size), Ok(csize)) = (u32::try_from(size), u32::try_from(csize))
        {
            entry.sizes = Sizes { size, csize };
        }
    }
}

impl ChunkIndex<u32> {
    /// Counts one more reference to `id`. The sizes of its first reference stay, and sizes are
    /// kept in 32 bits, as borg's cache sync keeps them (no chunk borg makes comes near 4 GiB).
    pub fn add_reference(&mut self, id: ObjectId, size: u64, csize: u64) {
        let entry = match self.loaded.get_mut(&id) {
            Some(entry) => entry,
            None => self.added.entry(id).or_insert(Entry {
                sizes: Sizes {
                    size: size as u32,
                    csize: csize as u32,
                },
                refcount: 0,
            }),
        };
        entry.refcount = entry.refcount.saturating_add(1).min(MAX_REFCOUNT);
    }
}

/// What reading an archive meets, in order.
pub enum Reference<'a> {
    /// An object the archive references: the archive object itself (first), then each of its
    /// item-metadata chunks; with its plaintext and stored sizes.
    Object { id: ObjectId, size: u64, csize: u64 },
    /// An item with content (a `chunks` list: a file) and its content chunks, the rest of the
    /// archive's references. Items without are not shown.
    File(&'a [ChunkRef]),
}

/// Reads the archive `id` — its object, its item-metadata chunks (fetched ahead) and its items'
/// content chunk lists (nothing else of the items is built), never file contents — and shows `visit` every [`Reference`] in order. `name` names the archive
/// in errors. Returns its metadata and its object's stored size.
pub async fn visit_references(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    id: ObjectId,
    name: &str,
    mut visit: impl FnMut(Reference),
) -> Result<(ArchiveMeta, usize), ReadError> {
    let (plaintext, stored) = fetch_sized(repo.clone(), key.clone(), id).await?;
    visit(Reference::Object {
        id,
        size: plaintext.len() as u64,
        csize: stored as u64,
    });
    let (meta, _) = ArchiveMeta::unpack(key, &plaintext).map_err(|source| ReadError::Archive {
        name: name.to_string(),
        source,
    })?;
    let mut decoder = ItemStreamDecoder::new();
    let mut item_chunks = fetch_ahead(repo.clone(), key.clone(), meta.items.clone());
    for id in &meta.items {
        let (chunk, stored) = item_chunks
            .recv()
            .await
            .ok_or_else(|| ReadError::Interrupted("item metadata ended early".into()))??;
        visit(Reference::Object {
            id: *id,
            size: chunk.len() as u64,
            csize: stored as u64,
        });
        decoder.feed_content(&chunk, |has_chunks, chunks, _| {
            if has_chunks {
                visit(Reference::File(chunks));
            }
        })?;
    }
    decoder.finish()?;
    Ok((meta, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_eight_bytes_without_counts() {
        assert_eq!(size_of::<Entry<()>>(), 8);
        assert_eq!(size_of::<Entry<u32>>(), 12);
    }

    #[test]
    fn counts_keep_the_first_sizes_and_stop_at_the_maximum() {
        let mut index = ChunkIndex::<u32>::default();
        index.add_reference([1; 32], 5, 48);
        index.add_reference([1; 32], 6, 49);
        let entry = index.get(&[1; 32]).unwrap();
        assert_eq!(
            (entry.sizes, entry.refcount),
            (Sizes { size: 5, csize: 48 }, 2)
        );
        index.get_mut(&[1; 32]).unwrap().refcount = MAX_REFCOUNT;
        index.add_reference([1; 32], 5, 48);
        assert_eq!(index.get(&[1; 32]).unwrap().refcount, MAX_REFCOUNT);
    }
}
