//! Storing chunks: dedup against the chunk index, then compress, encrypt and upload what is new.
//!
//! Many threads store at once (the content workers, and the item-stream writer). The index is
//! behind one mutex, held only to look up or record an id, never while compressing, encrypting
//! or waiting for the network. A chunk another thread is storing right now is *pending*: a second
//! thread that meets it waits for the first instead of uploading it twice, then references it.
//!
//! Uploads are pipelined: `put` returns as soon as the object is queued on the RPC connection,
//! and a byte budget bounds what is queued, so memory stays flat however fast the disk is and
//! however slow the link. The first failed put stops every worker at its next chunk;
//! [`Uploader::finish`] waits for every put to be acknowledged and reports that failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::format::compress::Compression;
use crate::format::envelope::{ObjectId, ObjectKey, cipher_blocks};
use crate::format::item::ChunkRef;
use crate::ops::nonces::{NonceError, NonceManager};
use crate::repo::repository::{RepoError, Repository};

use super::chunk_index::{ChunkIndex, Sizes};
use super::id_map::IdSet;

/// Encrypted bytes queued for upload at most.
const UPLOAD_BUDGET: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Nonce(#[from] NonceError),
    #[error("cannot read chunk {id} to learn its stored size: {source}")]
    Probe { id: String, source: RepoError },
    /// An upload failed; [`Uploader::finish`] has the reason.
    #[error("an upload to the repository failed")]
    UploadFailed,
    /// The backup is being stopped (interrupted, or another part failed).
    #[error("the backup was stopped")]
    Stopped,
}

/// Puts objects in the background within a byte budget.
pub struct Uploader {
    repo: Repository,
    runtime: Handle,
    budget: Arc<Semaphore>,
    failure: Arc<Mutex<Option<RepoError>>>,
    failed: Arc<AtomicBool>,
}

impl Uploader {
    pub fn new(repo: Repository, runtime: Handle) -> Uploader {
        Uploader {
            repo,
            runtime,
            budget: Arc::new(Semaphore::new(UPLOAD_BUDGET as usize)),
            failure: Arc::default(),
            failed: Arc::default(),
        }
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Queues a put; blocks (this thread, not the runtime) while the budget is used up.
    pub fn put(&self, id: ObjectId, data: Vec<u8>) -> Result<(), StoreError> {
        if self.failed() {
            return Err(StoreError::UploadFailed);
        }
        let cost = u32::try_from(data.len())
            .unwrap_or(UPLOAD_BUDGET)
            .min(UPLOAD_BUDGET);
        let permit = self
            .runtime
            .block_on(self.budget.clone().acquire_many_owned(cost))
            .expect("the budget semaphore is never closed");
        let repo = self.repo.clone();
        let failure = self.failure.clone();
        let failed = self.failed.clone();
        self.runtime.spawn(async move {
            if let Err(e) = repo.put(&id, data).await {
                failure.lock().expect("not poisoned").get_or_insert(e);
                failed.store(true, Ordering::Relaxed);
            }
            drop(permit);
        });
        Ok(())
    }

    /// Waits until every queued put is acknowledged; the first failure, if any.
    pub async fn finish(&self) -> Result<(), RepoError> {
        let all = self
            .budget
            .acquire_many(UPLOAD_BUDGET)
            .await
            .expect("the budget semaphore is never closed");
        drop(all);
        match self.failure.lock().expect("not poisoned").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

struct State {
    index: ChunkIndex,
    /// Ids some thread is storing right now.
    pending: IdSet<ObjectId>,
}

/// What storing one chunk did.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub chunk: ChunkRef,
    /// Uploaded in this run (borg's "unique" for the deduplicated size).
    pub new: bool,
}

pub struct ChunkStore {
    key: Arc<ObjectKey>,
    compression: Compression,
    nonces: NonceManager,
    runtime: Handle,
    pub uploader: Uploader,
    repo: Repository,
    state: Mutex<State>,
    settled: Condvar,
}

impl ChunkStore {
    pub fn new(
        key: Arc<ObjectKey>,
        compression: Compression,
        nonces: NonceManager,
        repo: Repository,
        runtime: Handle,
        index: ChunkIndex,
    ) -> ChunkStore {
        ChunkStore {
            key,
            compression,
            nonces,
            uploader: Uploader::new(repo.clone(), runtime.clone()),
            runtime,
            repo,
            state: Mutex::new(State {
                index,
                pending: IdSet::default(),
            }),
            settled: Condvar::new(),
        }
    }

    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// For each chunk list, whether the index has every chunk in it with the same sizes (the
    /// files-cache hits of a batch of files: one lock for all of them).
    pub fn all_held<'c>(&self, lists: impl Iterator<Item = &'c [ChunkRef]>) -> Vec<bool> {
        let state = self.state.lock().expect("not poisoned");
        lists
            .map(|chunks| chunks.iter().all(|c| state.index.holds(c)))
            .collect()
    }

    /// Stores `data` unless the repository has it; either way, the reference to it.
    pub fn store(&self, data: &[u8]) -> Result<Stored, StoreError> {
        self.store_with_id(self.key.id_hash(data), data)
    }

    pub fn store_with_id(&self, id: ObjectId, data: &[u8]) -> Result<Stored, StoreError> {
        if self.uploader.failed() {
            return Err(StoreError::UploadFailed);
        }
        let size = data.len() as u64;
        let reference = |sizes: Sizes| ChunkRef {
            id,
            size,
            csize: u64::from(sizes.csize),
        };
        let mut state = self.state.lock().expect("not poisoned");
        let probe = loop {
            if state.pending.contains(&id) {
                state = self.settled.wait(state).expect("not poisoned");
                continue;
            }
            match state.index.chunks.get(&id) {
                Some(sizes) if sizes.known() => {
                    return Ok(Stored {
                        chunk: reference(*sizes),
                        new: false,
                    });
                }
                Some(_) => break true,
                None => break false,
            }
        };
        state.pending.insert(id);
        drop(state);
        let result = if probe {
            self.probe(id)
        } else {
            self.upload(id, data)
        };
        let mut state = self.state.lock().expect("not poisoned");
        state.pending.remove(&id);
        if let Ok(csize) = result {
            state.index.chunks.insert(
                id,
                Sizes {
                    size: size as u32,
                    csize,
                },
            );
        }
        drop(state);
        self.settled.notify_all();
        let csize = result?;
        Ok(Stored {
            chunk: reference(Sizes {
                size: size as u32,
                csize,
            }),
            new: !probe,
        })
    }

    /// The stored size of a chunk the repository has but no archive told us about.
    fn probe(&self, id: ObjectId) -> Result<u32, StoreError> {
        let stored = self
            .runtime
            .block_on(self.repo.get(&id))
            .map_err(|source| StoreError::Probe {
                id: crate::format::key::hex(&id),
                source,
            })?;
        Ok(stored.len() as u32)
    }

    fn upload(&self, id: ObjectId, data: &[u8]) -> Result<u32, StoreError> {
        let headroom = self.key.envelope_headroom();
        let reserved = self.compression.compress_reserving(data, headroom);
        let iv = if self.key.key_type().is_encrypted() {
            let payload_len = reserved.len() - headroom;
            self.runtime
                .block_on(self.nonces.allocate(cipher_blocks(payload_len)))?
        } else {
            0
        };
        let stored = self.key.seal_reserved(reserved, iv);
        let csize = stored.len() as u32;
        self.uploader.put(id, stored)?;
        Ok(csize)
    }

    /// An IV for an object stored outside the index (the manifest).
    pub async fn allocate_iv(&self, blocks: u64) -> Result<u64, NonceError> {
        self.nonces.allocate(blocks).await
    }

    /// Drops `id` from the index: the object was deleted.
    pub fn forget(&self, id: &ObjectId) {
        self.state
            .lock()
            .expect("not poisoned")
            .index
            .chunks
            .remove(id);
    }

    /// Saves the index after a commit: it now matches the manifest `manifest_id`, which lists
    /// `archive`.
    pub fn save_index(
        &self,
        path: &std::path::Path,
        manifest_id: ObjectId,
        archive: ObjectId,
    ) -> std::io::Result<()> {
        let mut state = self.state.lock().expect("not poisoned");
        state.index.committed(manifest_id, Some(archive));
        state.index.save(path)
    }
}
