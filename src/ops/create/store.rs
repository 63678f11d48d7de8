//! Storing chunks: dedup against the chunk index, then compress, encrypt and upload what is new.
//!
//! Many threads store at once (the content workers, and the item-stream writer), each a batch of
//! chunks at a time (see [`ChunkStore::store_all`]). The index is behind one mutex, held only to
//! look up or record ids, never while compressing, encrypting or waiting for the network. A chunk
//! another thread is storing right now is *pending*: a second thread that meets it waits for the
//! first instead of uploading it twice, then references it; a thread never waits while chunks
//! of its own are pending, so two threads cannot wait for each other.
//!
//! Uploads are pipelined: a put returns as soon as the object is queued on the RPC connection,
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
use crate::format::nonce::ReservationRefused;
use crate::ops::nonces::{NonceError, NonceManager};
use crate::repo::repository::{RepoError, SharedRepository};

use super::chunk_cache::ChunkCache;
use crate::ops::chunk_index::Sizes;
use crate::ops::id_map::IdSet;

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
    repo: SharedRepository,
    runtime: Handle,
    budget: Arc<Semaphore>,
    failure: Arc<Mutex<Option<RepoError>>>,
    failed: Arc<AtomicBool>,
}

impl Uploader {
    pub fn new(repo: SharedRepository, runtime: Handle) -> Uploader {
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

    /// Queues puts; blocks (this thread, not the runtime) while the budget is used up. A batch
    /// is one task and takes its budget at once: one wake-up of the runtime, not one per object.
    pub fn put_all(&self, objects: Vec<(ObjectId, Vec<u8>)>) -> Result<(), StoreError> {
        if self.failed() {
            return Err(StoreError::UploadFailed);
        }
        let bytes: usize = objects.iter().map(|(_, data)| data.len()).sum();
        let cost = u32::try_from(bytes)
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
            // Concurrently: the RPC client pipelines them.
            let repo = &repo;
            let puts = objects
                .into_iter()
                .map(|(id, data)| async move { repo.put(&id, data).await });
            let results = futures_util::future::join_all(puts).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
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
    chunks: ChunkCache,
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
    repo: SharedRepository,
    state: Mutex<State>,
    settled: Condvar,
}

impl ChunkStore {
    pub fn new(
        key: Arc<ObjectKey>,
        compression: Compression,
        nonces: NonceManager,
        repo: SharedRepository,
        runtime: Handle,
        chunks: ChunkCache,
    ) -> ChunkStore {
        ChunkStore {
            key,
            compression,
            nonces,
            uploader: Uploader::new(repo.clone(), runtime.clone()),
            runtime,
            repo,
            state: Mutex::new(State {
                chunks,
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
            .map(|chunks| chunks.iter().all(|c| state.chunks.index.holds(c)))
            .collect()
    }

    /// Stores `data` unless the repository has it; either way, the reference to it.
    pub fn store(&self, data: &[u8]) -> Result<Stored, StoreError> {
        Ok(self.store_all(&[data])?[0])
    }

    /// [`ChunkStore::store`] for a batch of chunks: their ids are hashed together, the index is
    /// asked under one lock, and the new ones are compressed, sealed (MACs together too) and
    /// queued as one batch, with one nonce allocation and one upload task. BLAKE2b in the vector
    /// lanes is what batches are for: it is the largest part of a first backup's CPU time.
    pub fn store_all<C: AsRef<[u8]>>(&self, chunks: &[C]) -> Result<Vec<Stored>, StoreError> {
        let ids = self.key.id_hashes(chunks);
        let mut stored = vec![None; chunks.len()];
        let mut todo: Vec<usize> = (0..chunks.len()).collect();
        while !todo.is_empty() {
            todo = self.store_round(&ids, chunks, todo, &mut stored)?;
        }
        Ok(stored
            .into_iter()
            .map(|s| s.expect("every chunk is settled"))
            .collect())
    }

    /// Settles the chunks `todo` of a batch that nobody else is storing, and waits for the
    /// others; returns those, for another round (they are in the index now, unless their
    /// thread failed). A chunk that appears twice in the batch is one of those: the round
    /// stores its first copy.
    fn store_round<C: AsRef<[u8]>>(
        &self,
        ids: &[ObjectId],
        chunks: &[C],
        todo: Vec<usize>,
        stored: &mut [Option<Stored>],
    ) -> Result<Vec<usize>, StoreError> {
        if self.uploader.failed() {
            return Err(StoreError::UploadFailed);
        }
        let size = |i: usize| chunks[i].as_ref().len() as u32;
        let reference = |i: usize, csize: u32, new: bool| Stored {
            chunk: ChunkRef {
                id: ids[i],
                size: u64::from(size(i)),
                csize: u64::from(csize),
            },
            new,
        };
        let (mut upload, mut probe, mut later) = (Vec::new(), Vec::new(), Vec::new());
        let mut state = self.state.lock().expect("not poisoned");
        for i in todo {
            if state.pending.contains(&ids[i]) {
                later.push(i);
                continue;
            }
            match state.chunks.index.get(&ids[i]) {
                Some(entry) if entry.sizes.known() => {
                    stored[i] = Some(reference(i, entry.sizes.csize, false));
                    continue;
                }
                Some(_) => probe.push(i),
                None => upload.push(i),
            }
            state.pending.insert(ids[i]);
        }
        drop(state);
        let result = self
            .upload(upload.iter().map(|&i| (ids[i], chunks[i].as_ref())))
            .and_then(|mut csizes| {
                for &i in &probe {
                    csizes.push(self.probe(ids[i])?);
                }
                Ok(csizes)
            });
        let mut state = self.state.lock().expect("not poisoned");
        let settled = upload.iter().chain(&probe);
        for &i in settled.clone() {
            state.pending.remove(&ids[i]);
        }
        if let Ok(csizes) = &result {
            for (n, (&i, &csize)) in settled.zip(csizes).enumerate() {
                let sizes = Sizes {
                    size: size(i),
                    csize,
                };
                state.chunks.index.insert(ids[i], sizes);
                stored[i] = Some(reference(i, csize, n < upload.len()));
            }
        }
        // Before waiting: another thread may be waiting for what this one just settled.
        self.settled.notify_all();
        result?;
        while later.iter().any(|&i| state.pending.contains(&ids[i])) {
            state = self.settled.wait(state).expect("not poisoned");
        }
        Ok(later)
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

    /// Compresses, seals and queues new chunks; their stored sizes.
    fn upload<'d>(
        &self,
        chunks: impl Iterator<Item = (ObjectId, &'d [u8])>,
    ) -> Result<Vec<u32>, StoreError> {
        let headroom = self.key.envelope_headroom();
        let (ids, mut buffers): (Vec<ObjectId>, Vec<Vec<u8>>) = chunks
            .map(|(id, data)| (id, self.compression.compress_reserving(data, headroom)))
            .unzip();
        if buffers.is_empty() {
            return Ok(Vec::new());
        }
        let ivs: Vec<u64> = if self.key.key_type().is_encrypted() {
            // One reservation for the batch; each object starts where the one before ends.
            let blocks: Vec<u64> = buffers
                .iter()
                .map(|b| cipher_blocks(b.len() - headroom))
                .collect();
            let total = blocks.iter().try_fold(0u64, |sum, &n| sum.checked_add(n));
            let total = total.ok_or(NonceError::Refused(ReservationRefused::Exhausted {
                start: 0,
            }))?;
            let first = self.runtime.block_on(self.nonces.allocate(total))?;
            let mut next = first;
            let mut ivs = Vec::with_capacity(blocks.len());
            for n in blocks {
                ivs.push(next);
                // `allocate` reserved first .. first + sum below the counter's ceiling; checked
                // all the same, since a wrapped IV would reuse a keystream.
                next = next.checked_add(n).ok_or(NonceError::Refused(
                    ReservationRefused::Exhausted { start: first },
                ))?;
            }
            ivs
        } else {
            vec![0; buffers.len()]
        };
        self.key.seal_reserved(&mut buffers, &ivs);
        let csizes = buffers.iter().map(|b| b.len() as u32).collect();
        self.uploader
            .put_all(ids.into_iter().zip(buffers).collect())?;
        Ok(csizes)
    }

    /// The IV reservations, for an object stored outside the index (the manifest).
    pub fn nonces(&self) -> &NonceManager {
        &self.nonces
    }

    /// Drops `id` from the index: the object was deleted.
    pub fn forget(&self, id: &ObjectId) {
        self.state
            .lock()
            .expect("not poisoned")
            .chunks
            .index
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
        state.chunks.committed(manifest_id, Some(archive));
        state.chunks.save(path)
    }
}
