//! Making a run durable: the archive object, the manifest, the commit — for checkpoints during
//! the run and for the archive at its end — and then the caches.
//!
//! A checkpoint (every `--checkpoint-interval`, like borg's) saves the items so far as the
//! archive `<name>.checkpoint` and commits, so that an interrupted multi-hour first backup keeps
//! what it uploaded: the next run finds those chunks in the repository and does not send them
//! again. The next checkpoint, or the final archive, replaces it in the same commit (its archive
//! object is deleted; its item-stream chunks are a prefix of the next archive's, because the
//! item stream is cut at every checkpoint).
//!
//! Everything committed must be referenced, or `borg check` would report orphans after a crash.
//! Content workers run ahead of the item stream, so a checkpoint is a barrier: `decide` stops
//! handing out files, the assembler catches up with every file handed out, and only then is the
//! checkpoint written; then the files flow again. A checkpoint therefore falls between files,
//! never inside one (borg's part files are not needed for that, and not written).
//!
//! The caches are saved after each commit, with the manifest they now match, so they never
//! describe data the repository lacks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;

use crate::format::MAX_DATA_SIZE;
use crate::format::archive::ArchiveMeta;
use crate::format::envelope::{ObjectId, ObjectKey};
use crate::format::manifest::{ArchiveRef, Manifest, format_timestamp};
use crate::repo::repository::SharedRepository;

use super::files_cache::FilesCache;
use super::store::ChunkStore;
use super::{ContentStats, CreateError, CreateOptions};
use crate::ops::manifest_write::ManifestWriter;
use crate::ops::security::{Observed, SecurityDir};
use crate::ops::system::{now_micros, random_bytes};

pub struct Committer {
    pub repo: SharedRepository,
    pub key: Arc<ObjectKey>,
    pub store: Arc<ChunkStore>,
    pub runtime: Handle,
    pub options: Arc<CreateOptions>,
    pub started: Instant,
    /// The manifest as last committed, without our checkpoint in it.
    pub manifest: Manifest,
    /// `<name>.checkpoint`, or `.checkpoint.N` when that is taken.
    pub checkpoint_name: String,
    /// Our last checkpoint's archive object, deleted by the next commit.
    pub checkpoint: Option<ObjectId>,
    pub files: Arc<Mutex<FilesCache>>,
    /// The chunk index file.
    pub index_path: PathBuf,
    /// Cache or security-dir updates that failed after a commit.
    pub notes: Vec<String>,
}

/// An archive that was committed.
pub struct Committed {
    pub id: ObjectId,
    /// Unix microseconds.
    pub start: i64,
    pub end: i64,
    pub duration: f64,
    /// The archive object's plaintext size.
    pub archive_size: usize,
    pub manifest_timestamp: String,
    pub manifest_id: ObjectId,
}

/// The first of `<name>.checkpoint`, `<name>.checkpoint.1`, ... that `manifest` does not have.
pub fn checkpoint_name(manifest: &Manifest, name: &str) -> String {
    let base = format!("{name}.checkpoint");
    std::iter::once(base.clone())
        .chain((1..).map(|n| format!("{base}.{n}")))
        .find(|candidate| manifest.archive(candidate.as_bytes()).is_none())
        .expect("some suffix is free")
}

impl Committer {
    /// Writes the archive (the checkpoint, if `checkpoint`) with `items` and `stats` and
    /// commits it. Blocks: call from a thread outside the runtime.
    pub fn commit(
        &mut self,
        items: Vec<ObjectId>,
        stats: ContentStats,
        checkpoint: bool,
    ) -> Result<Committed, CreateError> {
        let options = self.options.clone();
        let name = if checkpoint {
            self.checkpoint_name.clone()
        } else {
            options.name.clone()
        };
        // The archive's time is its start: the end minus the duration, as borg computes it.
        let duration = self.started.elapsed();
        let (start, end) = match options.timestamp {
            Some(start) => (start, start + duration.as_micros() as i64),
            None => {
                let end = now_micros();
                (end - duration.as_micros() as i64, end)
            }
        };
        let meta = ArchiveMeta {
            version: 1,
            name: name.as_bytes().to_vec(),
            items,
            cmdline: options.cmdline.clone(),
            hostname: Some(options.hostname.as_bytes().to_vec()),
            username: Some(options.username.as_bytes().to_vec()),
            time: format_timestamp(start).into_bytes(),
            time_end: Some(format_timestamp(end).into_bytes()),
            comment: Some(options.comment.as_bytes().to_vec()),
            chunker_params: Some(options.chunker_params.to_value()),
            size: Some(stats.original_size),
            csize: Some(stats.compressed_size),
            nfiles: Some(stats.nfiles),
            size_parts: Some(0),
            csize_parts: Some(0),
            nfiles_parts: Some(0),
            cwd: Some(options.walk.cwd.clone()),
            extra: Vec::new(),
        };
        let packed = meta.pack(&self.key, random_bytes());
        if packed.len() > MAX_DATA_SIZE {
            return Err(CreateError::ArchiveTooLarge(packed.len()));
        }
        let archive = self.store.store(&packed)?.chunk.id;
        // Every put of this transaction acknowledged before the manifest names the archive.
        self.runtime.block_on(self.store.uploader.finish())?;
        if let Some(previous) = self.checkpoint.take() {
            self.runtime.block_on(self.repo.delete(&previous))?;
            self.store.forget(&previous);
        }

        let mut manifest = self.manifest.clone();
        manifest.archives.push((
            meta.name.clone(),
            ArchiveRef {
                id: archive,
                time: meta.time.clone(),
            },
        ));
        manifest.archives.sort_by(|a, b| a.0.cmp(&b.0));
        let writer = ManifestWriter {
            repo: &self.repo,
            key: &self.key,
            nonces: self.store.nonces(),
            compression: &options.compression,
        };
        let (timestamp, manifest_id) = self.runtime.block_on(async {
            let written = writer.put(&manifest).await?;
            self.repo.commit(false).await?;
            Ok::<_, CreateError>(written)
        })?;
        manifest.timestamp = timestamp.clone().into_bytes();

        if checkpoint {
            self.checkpoint = Some(archive);
            // The next commit starts from this timestamp, without the checkpoint.
            let mut base = manifest.clone();
            base.archives.retain(|(n, _)| *n != meta.name);
            self.manifest = base;
        } else {
            self.manifest = manifest;
            // The archive is in: the server may close the repository and wind down (a few
            // tens of milliseconds for `borg serve`) while the caches are saved.
            let _ = self.runtime.block_on(self.repo.end_requests());
        }
        self.after_commit(&timestamp, manifest_id, archive);
        Ok(Committed {
            id: archive,
            start,
            end,
            duration: duration.as_secs_f64(),
            archive_size: packed.len(),
            manifest_timestamp: timestamp,
            manifest_id,
        })
    }

    /// Remembers what the repository now is: the security dir, the chunk index, the files cache.
    /// Failures cost only speed or a warning next time, so they are notes, not errors.
    fn after_commit(&mut self, timestamp: &str, manifest_id: ObjectId, archive: ObjectId) {
        let remembered =
            SecurityDir::new(&self.options.security_dir, self.repo.id()).remember(&Observed {
                key_type: self.key.key_type(),
                location: &self.options.location,
                manifest_timestamp: timestamp,
            });
        let saved = self
            .store
            .save_index(&self.index_path, manifest_id, archive)
            .and_then(|()| {
                self.files
                    .lock()
                    .expect("not poisoned")
                    .save(&self.options.files_cache_path())
            });
        for (what, result) in [("security dir", remembered), ("cache", saved)] {
            if let Err(e) = result {
                self.notes.push(format!(
                    "the archive was committed, but the {what} could not be updated: {e}"
                ));
            }
        }
    }
}
