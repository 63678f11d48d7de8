//! `create`'s chunk index as it is kept between runs: a [`ChunkIndex`] without reference counts
//! (see `ops::chunk_index` for why), plus what it takes to keep it in step with the repository.
//!
//! Like borg's, it is answered locally and never by asking the server per chunk. Unlike borg's
//! it keeps no reference counts: `create` only adds, and whether a chunk is new in this run is
//! known from the run itself. That makes keeping it in step with the repository much cheaper.
//!
//! **Staying in step.** The cache remembers the id of the manifest it matches (the id hash of the
//! manifest's plaintext; every writer rewrites the manifest). When the repository's manifest is
//! the same, nothing is asked of the server. When it differs, another client wrote — created,
//! deleted, pruned — and the index is brought up to date without reading every archive:
//!
//! 1. `list` the repository's object ids (32 bytes each, 100,000 per call). Entries whose id is
//!    gone are dropped; ids we did not know are added with their sizes unknown.
//! 2. The size of a chunk someone else stored is in their archives' items. Only the archives
//!    this cache has not read yet are read — it remembers which ones it has — so an unchanged
//!    repository costs one `list`, and a borg run in between costs reading that one archive's
//!    metadata, never its file contents.
//! 3. Whatever is still unsized (an object no archive mentions, or an entry a borg
//!    `--no-cache-sync` run recorded with csize 0) is fetched when, and only if, this run
//!    meets it: the stored length is the csize, the plaintext length is the chunk's own.
//!
//! A chunk stored by an interrupted transaction is not in the repository after the rollback, and
//! the cache is saved only after a commit, together with the manifest id it now matches.
//!
//! On disk: a header, the manifest id, the archive ids read, then `(id, size, csize)` records
//! in id order (loaded straight into the index's sorted table), all followed by a SHA-256;
//! written to a temporary name and renamed (see `cache_file::save`).

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::format::envelope::{ObjectId, ObjectKey};
use crate::format::manifest::Manifest;
use crate::repo::repository::SharedRepository;

use crate::ops::cache_file::{self, Cached};
use crate::ops::chunk_index::{ChunkIndex, Reference, Sizes, visit_references};
use crate::ops::id_map::IdSet;
use crate::ops::items::{ReadError, list_objects};

const MAGIC: &[u8; 16] = b"mailcow-borg-ci2";

#[derive(Default)]
pub struct ChunkCache {
    pub index: ChunkIndex,
    /// The archives whose chunk sizes are in `index`.
    archives: IdSet<ObjectId>,
    /// The manifest this cache matches.
    manifest_id: Option<ObjectId>,
}

/// What a sync did, for the log.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub listed: usize,
    pub archives_read: usize,
}

impl ChunkCache {
    /// Loads the cache saved at `path`; anything unreadable gives an empty cache (which the
    /// sync then fills) and the reason, for a warning.
    pub fn load(path: &Path) -> (ChunkCache, Option<String>) {
        match cache_file::load(path, MAGIC, decode) {
            Ok(Cached::Loaded(cache)) => (cache, None),
            Ok(Cached::Absent) => (ChunkCache::default(), None),
            Ok(Cached::Damaged) => (
                ChunkCache::default(),
                Some(format!(
                    "the chunk index {} is damaged; rebuilding it from the repository",
                    path.display()
                )),
            ),
            Err(e) => (
                ChunkCache::default(),
                Some(format!(
                    "cannot read the chunk index {}: {e}; rebuilding it",
                    path.display()
                )),
            ),
        }
    }

    pub fn matches(&self, manifest_id: &ObjectId) -> bool {
        self.manifest_id.as_ref() == Some(manifest_id)
    }

    /// Brings the cache in step with the repository whose manifest (with id `manifest_id`) is
    /// `manifest`; see the module notes. Returns `None` when it already was.
    pub async fn sync(
        &mut self,
        repo: &SharedRepository,
        key: &Arc<ObjectKey>,
        manifest: &Manifest,
        manifest_id: ObjectId,
    ) -> Result<Option<SyncReport>, ReadError> {
        if self.matches(&manifest_id) {
            return Ok(None);
        }
        let mut report = SyncReport::default();
        let present: IdSet<ObjectId> = list_objects(repo).await?.into_iter().collect();
        report.listed = present.len();
        self.index.match_listing(&present);
        let current: IdSet<ObjectId> = manifest.archives.iter().map(|(_, a)| a.id).collect();
        self.archives.retain(|id| current.contains(id));
        for (_, archive) in &manifest.archives {
            if self.archives.contains(&archive.id) || !present.contains(&archive.id) {
                continue;
            }
            self.read_archive(repo, key, archive.id).await?;
            self.archives.insert(archive.id);
            report.archives_read += 1;
        }
        self.manifest_id = Some(manifest_id);
        Ok(Some(report))
    }

    /// Learns sizes from one archive: its own object, its item-stream chunks, and every chunk
    /// its items reference.
    async fn read_archive(
        &mut self,
        repo: &SharedRepository,
        key: &Arc<ObjectKey>,
        id: ObjectId,
    ) -> Result<(), ReadError> {
        let index = &mut self.index;
        let name = crate::format::key::hex(&id);
        visit_references(repo, key, id, &name, |reference| match reference {
            Reference::Object { id, size, csize } => index.learn(id, size, csize),
            Reference::File(chunks) => {
                for chunk in chunks {
                    index.learn(chunk.id, chunk.size, chunk.csize);
                }
            }
        })
        .await?;
        Ok(())
    }

    /// After a commit: the cache now matches the manifest with id `manifest_id`, which also
    /// lists `archive` (whose chunks were all added while it was written).
    pub fn committed(&mut self, manifest_id: ObjectId, archive: Option<ObjectId>) {
        self.manifest_id = Some(manifest_id);
        self.archives.extend(archive);
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        cache_file::save(path, MAGIC, |out| {
            out.write_all(&self.manifest_id.unwrap_or_default())?;
            out.write_all(&(self.archives.len() as u64).to_le_bytes())?;
            for id in &self.archives {
                out.write_all(id)?;
            }
            for (id, entry) in self.index.sorted_entries() {
                out.write_all(id)?;
                out.write_all(&entry.sizes.size.to_le_bytes())?;
                out.write_all(&entry.sizes.csize.to_le_bytes())?;
            }
            Ok(())
        })
    }
}

/// A chunk's record: id, size, stored size.
const RECORD: u64 = 40;

fn decode(body: &mut cache_file::Body) -> Option<ChunkCache> {
    let manifest_id = body.array::<32>()?;
    let count = body.u64()?;
    if count > body.left() / 32 {
        return None;
    }
    let mut archives = IdSet::default();
    for _ in 0..count {
        archives.insert(body.array::<32>()?);
    }
    if !body.left().is_multiple_of(RECORD) {
        return None;
    }
    let mut chunks = Vec::with_capacity(usize::try_from(body.left() / RECORD).ok()?);
    while body.left() > 0 {
        let record = body.array::<{ RECORD as usize }>()?;
        let (id, sizes) = record.split_first_chunk::<32>()?;
        let size = u32::from_le_bytes(sizes[..4].try_into().ok()?);
        let csize = u32::from_le_bytes(sizes[4..].try_into().ok()?);
        chunks.push((*id, Sizes { size, csize }));
    }
    Some(ChunkCache {
        index: ChunkIndex::from_sorted(chunks)?,
        archives,
        manifest_id: Some(manifest_id).filter(|id| *id != [0; 32]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_and_damage_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        let mut cache = ChunkCache::default();
        cache.index.insert([1; 32], Sizes { size: 5, csize: 48 });
        cache.index.insert([2; 32], Sizes::UNKNOWN);
        cache.committed([7; 32], Some([3; 32]));
        cache.save(&path).unwrap();
        let (back, warning) = ChunkCache::load(&path);
        assert!(warning.is_none());
        let entries = |index: &ChunkIndex| {
            index
                .sorted_entries()
                .map(|(id, e)| (*id, *e))
                .collect::<Vec<_>>()
        };
        assert_eq!(entries(&back.index), entries(&cache.index));
        assert_eq!(back.archives, cache.archives);
        assert!(back.matches(&[7; 32]));
        let mut data = std::fs::read(&path).unwrap();
        data[40] ^= 1;
        std::fs::write(&path, data).unwrap();
        let (back, warning) = ChunkCache::load(&path);
        assert!(warning.unwrap().contains("damaged"));
        assert!(back.index.is_empty() && !back.matches(&[7; 32]));
    }
}
