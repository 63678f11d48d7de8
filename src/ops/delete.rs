//! Deleting archives: borg's `delete REPO::A…` and the deleting half of `prune`.
//!
//! An archive is its object, its item-metadata chunks and the content chunks its items name, and
//! all three are shared: metadata chunks between archives of the same tree, content chunks
//! between every archive that holds the same data — ours, real borg's, another machine's. An
//! object may go only when no archive that stays references it.
//!
//! **Counting references.** borg keeps a reference count per chunk in its local cache and
//! decrements it per reference of the deleted archive; the cache is trusted because borg syncs
//! it with the repository first (reading every archive it has not seen). We keep no counts
//! between runs (`ops::chunk_index` says why `create` has no use for them), and counts kept in a
//! cache would be right only as long as we could prove them current: one borg run on another
//! machine and they would be stale in a way only reading its archives can fix. So the counts are
//! made afresh, under the exclusive lock, from every archive the manifest names: each archive's
//! object, metadata chunks and items are read ([`visit_references`]), several archives at once on
//! all cores. That costs reading every archive's metadata (never file contents), and it is exact
//! by construction: what the manifest names at this moment is everything that can reference a
//! chunk, and nobody can add to it while we hold the lock. An object is deleted when every
//! reference to it comes from the archives being deleted.
//!
//! Objects that no archive references (orphans, e.g. of a borg run that was killed) are not ours
//! to judge: they are left alone, as borg's `delete` and `prune` leave them (`borg check
//! --repair` is what removes them).
//!
//! **One transaction.** The deletes and the new manifest go in one transaction, committed only
//! after every delete was acknowledged. If anything fails or we are killed before the commit
//! returns, the server rolls the whole transaction back, so the repository is as before and the
//! next run does the same work again; the manifest never names an archive whose objects are gone.
//! (borg commits every 30 minutes during a long prune; one transaction is simpler and, since
//! deletes are small requests pipelined 100 at a time, not long.)
//!
//! **Append-only repositories** accept the deletes and the new manifest; the server keeps the
//! old data in its log until someone compacts without append-only. Nothing here can tell: that
//! shows in `compact`, which frees nothing there.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::error::ErrorKind;
use crate::format::envelope::{ObjectId, ObjectKey};
use crate::format::item::ChunkRef;
use crate::format::key::hex;
use crate::format::manifest::Manifest;
use crate::repo::repository::{RepoError, SharedRepository};

use super::chunk_index::{ChunkIndex, Reference, visit_references};
use super::items::ReadError;
use super::manifest_write::{ManifestWriteError, ManifestWriter};
use super::stats::RepoStats;

/// How many archives are read at once while counting: each already fetches its metadata chunks
/// ahead, so a few keep every core busy decoding without holding many item streams in memory.
const ARCHIVES_IN_FLIGHT: usize = 4;

/// How many deletes are sent before their answers are awaited (the RPC client's own limit).
const DELETES_IN_FLIGHT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(
        "cannot count the references of archive {name:?} ({source}); nothing was deleted. Run `borg check` to see what is damaged"
    )]
    Unreadable { name: String, source: ReadError },
    #[error(
        "deleting object {id}: {source}; nothing was deleted (the transaction was rolled back)"
    )]
    Delete { id: String, source: RepoError },
    #[error("writing the new manifest: {0}; nothing was deleted")]
    Manifest(#[from] ManifestWriteError),
    #[error("committing the deletion: {0}; the repository is as before or fully updated")]
    Commit(RepoError),
}

impl DeleteError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeleteError::Unreadable { source, .. } => source.kind(),
            DeleteError::Delete { source, .. } | DeleteError::Commit(source) => source.kind(),
            DeleteError::Manifest(e) => e.kind(),
        }
    }
}

/// What deleting the archives frees, as borg's `--stats` shows it ("Deleted data"): every
/// reference the archives make, and the stored size of the objects no other archive needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeletedStats {
    pub original_size: u64,
    pub compressed_size: u64,
    pub deduplicated_size: u64,
    /// Objects deleted.
    pub objects: u64,
}

/// The archives to delete and everything that goes with them, computed before anything is
/// changed.
pub struct DeletePlan {
    /// Name and id of each archive to delete, in the order given.
    pub archives: Vec<(String, ObjectId)>,
    /// Objects referenced only by those archives.
    garbage: Vec<ObjectId>,
    pub deleted: DeletedStats,
    /// The repository's figures once the archives are gone ("All archives", "Chunk index").
    pub remaining: RepoStats,
}

/// Counts every archive's references and works out what deleting `names` (manifest names, each
/// once) frees. Reads, changes nothing.
pub async fn plan(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    manifest: &Manifest,
    names: &[String],
) -> Result<DeletePlan, DeleteError> {
    let doomed_ids: HashMap<&[u8], ObjectId> = names
        .iter()
        .filter_map(|name| {
            let entry = manifest.archive(name.as_bytes())?;
            Some((name.as_bytes(), entry.id))
        })
        .collect();
    let mut all = ChunkIndex::<u32>::default();
    let mut doomed = ChunkIndex::<u32>::default();
    let mut deleted = DeletedStats::default();
    let mut remaining_sizes = (0u64, 0u64);

    let mut counted = futures_util::stream::iter(manifest.archives.iter().map(|(name, entry)| {
        let repo = repo.clone();
        let key = key.clone();
        let id = entry.id;
        let name = String::from_utf8_lossy(name).into_owned();
        // A task per archive, so that archives are decoded on every core.
        let task = tokio::spawn(async move {
            let references = count_references(&repo, &key, id, &name).await;
            (name, references)
        });
        async move { task.await.expect("counting task does not panic") }
    }))
    .buffer_unordered(ARCHIVES_IN_FLIGHT);

    while let Some((name, references)) = counted.next().await {
        let references = references.map_err(|source| DeleteError::Unreadable {
            name: name.clone(),
            source,
        })?;
        let is_doomed = doomed_ids.contains_key(name.as_bytes());
        for &(id, size, csize) in &references.objects {
            all.add_reference(id, size, csize);
            if is_doomed {
                doomed.add_reference(id, size, csize);
                deleted.original_size += size;
                deleted.compressed_size += csize;
            }
        }
        if !is_doomed {
            remaining_sizes.0 += references.original_size;
            remaining_sizes.1 += references.compressed_size;
        }
    }

    let mut garbage = Vec::new();
    let mut remaining = RepoStats {
        total_size: remaining_sizes.0,
        total_csize: remaining_sizes.1,
        ..RepoStats::default()
    };
    for (id, entry) in all.entries() {
        let doomed_count = doomed.get(id).map_or(0, |e| e.refcount);
        if doomed_count == entry.refcount {
            garbage.push(*id);
            deleted.deduplicated_size += u64::from(entry.sizes.csize);
        } else {
            remaining.unique_size += u64::from(entry.sizes.size);
            remaining.unique_csize += u64::from(entry.sizes.csize);
            remaining.total_unique_chunks += 1;
            remaining.total_chunks += u64::from(entry.refcount - doomed_count);
        }
    }
    deleted.objects = garbage.len() as u64;
    let archives = names
        .iter()
        .filter_map(|name| Some((name.clone(), *doomed_ids.get(name.as_bytes())?)))
        .collect();
    Ok(DeletePlan {
        archives,
        garbage,
        deleted,
        remaining,
    })
}

/// One archive's references, in the order met, with its own size figures.
struct ArchiveReferences {
    objects: Vec<(ObjectId, u64, u64)>,
    original_size: u64,
    compressed_size: u64,
}

async fn count_references(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    id: ObjectId,
    name: &str,
) -> Result<ArchiveReferences, ReadError> {
    let mut objects = Vec::new();
    let (mut original_size, mut compressed_size) = (0, 0);
    let (meta, _) = visit_references(repo, key, id, name, |reference| match reference {
        Reference::Object { id, size, csize } => objects.push((id, size, csize)),
        Reference::File(chunks) => {
            for &ChunkRef { id, size, csize } in chunks {
                objects.push((id, size, csize));
                original_size += size;
                compressed_size += csize;
            }
        }
    })
    .await?;
    // borg 1.2+ records the archive's figures; older archives have only their items'.
    if let (Some(size), Some(csize)) = (meta.size, meta.csize) {
        original_size = size;
        compressed_size = csize;
    }
    Ok(ArchiveReferences {
        objects,
        original_size,
        compressed_size,
    })
}

/// What [`execute`] did besides what the plan said.
#[derive(Debug, Default)]
pub struct Executed {
    /// Objects that were already gone from the repository (it was damaged before).
    pub already_missing: u64,
    /// The new manifest's timestamp and id.
    pub manifest_timestamp: String,
    pub manifest_id: ObjectId,
}

/// Carries `plan` out in one transaction: every object delete acknowledged, then the manifest
/// without the archives, then the commit. On any failure the transaction is rolled back (by the
/// server, as the session ends) and nothing has changed.
pub async fn execute(
    repo: &SharedRepository,
    manifest: &mut Manifest,
    writer: &ManifestWriter<'_>,
    plan: &DeletePlan,
) -> Result<Executed, DeleteError> {
    let mut executed = Executed::default();
    let mut deletes = futures_util::stream::iter(plan.garbage.iter().map(|id| async move {
        match repo.delete(id).await {
            Ok(()) => Ok(false),
            // Gone already: what we wanted. The repository was damaged; `borg check` says how.
            Err(RepoError::ObjectNotFound { .. }) => Ok(true),
            Err(source) => Err(DeleteError::Delete {
                id: hex(id),
                source,
            }),
        }
    }))
    .buffer_unordered(DELETES_IN_FLIGHT);
    while let Some(result) = deletes.next().await {
        if result? {
            executed.already_missing += 1;
        }
    }
    drop(deletes);

    let mut next = manifest.clone();
    next.archives
        .retain(|(name, _)| !plan.archives.iter().any(|(n, _)| n.as_bytes() == name));
    let (timestamp, manifest_id) = writer.put(&next).await?;
    repo.commit(false).await.map_err(DeleteError::Commit)?;
    next.timestamp = timestamp.clone().into_bytes();
    *manifest = next;
    executed.manifest_timestamp = timestamp;
    executed.manifest_id = manifest_id;
    Ok(executed)
}
