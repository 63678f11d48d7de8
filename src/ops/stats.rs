//! Repository and archive statistics as `borg info` computes them (`cache.py:
//! CacheStatsMixin.stats`, `archive.py: Archive._calc_stats`).
//!
//! borg keeps a chunk index (id → refcount, size, stored size) in its local cache and rebuilds it
//! from the archives when it is missing. We keep no counted index between runs, so a counted
//! [`ChunkIndex`] is built the same way borg's cache sync builds it — every archive object, every
//! item-metadata chunk and every content chunk the items name, counted once per reference
//! ([`visit_references`]) — and dropped afterwards.
//!
//! - "All archives": original and compressed sizes are the sums of the archives' own recorded
//!   figures (borg 1.2+ metadata), the deduplicated size and chunk counts come from the index;
//! - "This archive": the deduplicated size is the stored size of the content chunks that no
//!   other archive references as often (metadata chunks excluded, as borg 1.4.5 does).

use std::collections::HashMap;
use std::sync::Arc;

use crate::format::envelope::ObjectKey;
use crate::format::item::ChunkRef;
use crate::format::manifest::Manifest;
use crate::repo::repository::SharedRepository;

use super::chunk_index::{ChunkIndex, Reference, visit_references};
use super::items::ReadError;

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
    let mut index = ChunkIndex::<u32>::default();
    let mut per_archive: HashMap<String, (ChunkIndex<u32>, ArchiveStats)> = HashMap::new();
    let mut total_size = 0;
    let mut total_csize = 0;
    for (name, entry) in &manifest.archives {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut own = ChunkIndex::<u32>::default();
        let mut computed = ArchiveStats::default();
        let (meta, stored) =
            visit_references(repo, key, entry.id, &name, |reference| match reference {
                Reference::Object { id, size, csize } => index.add_reference(id, size, csize),
                Reference::File(chunks) => {
                    computed.nfiles += 1;
                    for &ChunkRef { id, size, csize } in chunks {
                        index.add_reference(id, size, csize);
                        own.add_reference(id, size, csize);
                        computed.original_size += size;
                        computed.compressed_size += csize;
                    }
                }
            })
            .await?;
        computed.archive_csize = stored as u64;
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
    for (_, entry) in index.entries() {
        repo_stats.unique_size += u64::from(entry.sizes.size);
        repo_stats.unique_csize += u64::from(entry.sizes.csize);
        repo_stats.total_unique_chunks += 1;
        repo_stats.total_chunks += u64::from(entry.refcount);
    }
    let archives = per_archive
        .into_iter()
        .map(|(name, (own, mut stats))| {
            stats.deduplicated_size = own
                .entries()
                .filter(|(id, e)| index.get(id).is_some_and(|g| g.refcount == e.refcount))
                .map(|(_, e)| u64::from(e.sizes.csize))
                .sum();
            (name, stats)
        })
        .collect();
    Ok(Report {
        repo: repo_stats,
        archives,
    })
}
