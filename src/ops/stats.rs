//! Repository and archive statistics as `borg info` computes them (`cache.py:
//! CacheStatsMixin.stats`, `archive.py: Archive._calc_stats`).
//!
//! borg keeps a chunk index (id → refcount, size, stored size) in its local cache and rebuilds it
//! from the archives when it is missing. We have no such cache yet, so the index is built the
//! same way borg's cache sync builds it — every archive object, every item-metadata chunk and
//! every content chunk the items name, counted once per reference — and dropped afterwards.
//!
//! - "All archives": original and compressed sizes are the sums of the archives' own recorded
//!   figures (borg 1.2+ metadata), the deduplicated size and chunk counts come from the index;
//! - "This archive": the deduplicated size is the stored size of the content chunks that no
//!   other archive references as often (metadata chunks excluded, as borg 1.4.5 does).

use std::collections::HashMap;
use std::sync::Arc;

use crate::format::archive::{ArchiveMeta, ItemStreamDecoder};
use crate::format::envelope::{ObjectId, ObjectKey};
use crate::format::item::ChunkRef;
use crate::format::manifest::Manifest;
use crate::repo::repository::SharedRepository;

use super::items::{ReadError, fetch_ahead, fetch_sized};

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    refcount: u64,
    size: u64,
    csize: u64,
}

/// Chunk id → how often it is referenced, and its plaintext and stored sizes.
#[derive(Default)]
struct ChunkIndex(HashMap<ObjectId, Entry>);

impl ChunkIndex {
    fn add(&mut self, id: ObjectId, size: u64, csize: u64) {
        let entry = self.0.entry(id).or_insert(Entry {
            refcount: 0,
            size,
            csize,
        });
        entry.refcount += 1;
    }
}

/// The "All archives" and "Chunk index" figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepoStats {
    pub total_size: u64,
    pub total_csize: u64,
    pub unique_size: u64,
    pub unique_csize: u64,
    pub total_unique_chunks: u64,
    pub total_chunks: u64,
}

/// One archive's "This archive" figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub original_size: u64,
    pub compressed_size: u64,
    pub deduplicated_size: u64,
    pub nfiles: u64,
    /// The archive object's stored size (for the "maximum archive size" utilisation).
    pub archive_csize: u64,
}

/// Everything `info` reports about the repository and the named archives.
pub struct Report {
    pub repo: RepoStats,
    pub archives: HashMap<String, ArchiveStats>,
}

/// Reads every archive's metadata once and computes the statistics for the archives `wanted`.
pub async fn gather(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    manifest: &Manifest,
    wanted: &[String],
) -> Result<Report, ReadError> {
    let mut index = ChunkIndex::default();
    let mut per_archive: HashMap<String, (ChunkIndex, ArchiveStats)> = HashMap::new();
    let mut total_size = 0;
    let mut total_csize = 0;
    for (name, entry) in &manifest.archives {
        let name = String::from_utf8_lossy(name).into_owned();
        let (plaintext, stored) = fetch_sized(repo.clone(), key.clone(), entry.id).await?;
        index.add(entry.id, plaintext.len() as u64, stored as u64);
        let (meta, _) =
            ArchiveMeta::unpack(key, &plaintext).map_err(|source| ReadError::Archive {
                name: name.clone(),
                source,
            })?;
        let mut own = ChunkIndex::default();
        let mut computed = ArchiveStats {
            archive_csize: stored as u64,
            ..ArchiveStats::default()
        };
        let mut decoder = ItemStreamDecoder::new();
        let mut item_chunks = fetch_ahead(repo.clone(), key.clone(), meta.items.clone());
        for id in &meta.items {
            let (chunk, stored) = item_chunks
                .recv()
                .await
                .ok_or_else(|| ReadError::Interrupted("item metadata ended early".into()))??;
            index.add(*id, chunk.len() as u64, stored as u64);
            for item in decoder.feed(&chunk)? {
                let chunks = item.chunks.as_deref().unwrap_or_default();
                if item.chunks.is_some() {
                    computed.nfiles += 1;
                }
                for ChunkRef { id, size, csize } in chunks {
                    index.add(*id, *size, *csize);
                    own.add(*id, *size, *csize);
                    computed.original_size += size;
                    computed.compressed_size += csize;
                }
            }
        }
        decoder.finish()?;
        // borg 1.2+ records the archive's own figures (which count its metadata chunks too);
        // only older archives need the ones computed from their items.
        if let (Some(size), Some(csize), Some(nfiles)) = (meta.size, meta.csize, meta.nfiles) {
            computed.original_size = size;
            computed.compressed_size = csize;
            computed.nfiles = nfiles;
        }
        total_size += computed.original_size;
        total_csize += computed.compressed_size;
        if wanted.contains(&name) {
            per_archive.insert(name, (own, computed));
        }
    }
    let mut repo_stats = RepoStats {
        total_size,
        total_csize,
        ..RepoStats::default()
    };
    for entry in index.0.values() {
        repo_stats.unique_size += entry.size;
        repo_stats.unique_csize += entry.csize;
        repo_stats.total_unique_chunks += 1;
        repo_stats.total_chunks += entry.refcount;
    }
    let archives = per_archive
        .into_iter()
        .map(|(name, (own, mut stats))| {
            stats.deduplicated_size = own
                .0
                .iter()
                .filter(|(id, e)| index.0.get(*id).is_some_and(|g| g.refcount == e.refcount))
                .map(|(_, e)| e.csize)
                .sum();
            (name, stats)
        })
        .collect();
    Ok(Report {
        repo: repo_stats,
        archives,
    })
}
