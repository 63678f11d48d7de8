//! Reading archives: the archive object, its item stream, and content chunks — fetched ahead and
//! opened (decrypt, decompress, id check) on the worker pool while the consumer works.
//!
//! Every fetch is a task that does `get` and `open` together; callers keep the tasks in order
//! in a bounded window, so the server always has requests queued (the RPC pipelines up to 100),
//! all cores decrypt, and memory stays bounded by the window however large the archive is.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ErrorKind;
use crate::format::archive::{ArchiveError, ArchiveMeta, ItemStreamDecoder, ItemStreamError};
use crate::format::envelope::{EnvelopeError, ObjectId, ObjectKey};
use crate::format::item::Item;
use crate::format::key::hex;
use crate::format::manifest::Manifest;
use crate::format::tam::TamStatus;
use crate::repo::repository::{RepoError, SharedRepository};

/// How many item-metadata chunks are fetched ahead of the decoder.
const ITEM_CHUNKS_AHEAD: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("archive {0:?} does not exist")]
    NoSuchArchive(String),
    #[error(
        "archive {0:?} has no TAM (archive authentication), so nothing proves it was written by a \
         client holding this repository's key; refusing to restore it (if you trust it, `borg \
         upgrade --archives-tam` adds the TAMs)"
    )]
    Unauthenticated(String),
    #[error("archive {name:?}: {source}")]
    Archive { name: String, source: ArchiveError },
    #[error("object {id}: {source}")]
    Fetch { id: String, source: RepoError },
    #[error("object {id} is damaged: {source}")]
    Damaged { id: String, source: EnvelopeError },
    #[error("cannot list the repository's objects: {0}")]
    List(RepoError),
    #[error("the item stream is damaged: {0}")]
    Items(#[from] ItemStreamError),
    #[error("reading was interrupted: {0}")]
    Interrupted(String),
}

impl ReadError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::NoSuchArchive(_) => ErrorKind::BadInput,
            ReadError::Fetch { source, .. } | ReadError::List(source) => source.kind(),
            ReadError::Unauthenticated(_)
            | ReadError::Archive { .. }
            | ReadError::Damaged { .. }
            | ReadError::Items(_) => ErrorKind::Integrity,
            // A task of ours ended early (the runtime shutting down), not a signal.
            ReadError::Interrupted(_) => ErrorKind::Environment,
        }
    }
}

/// An archive's metadata, as listed in the manifest and stored in its archive object.
pub struct Archive {
    pub id: ObjectId,
    pub meta: ArchiveMeta,
    pub tam: TamStatus,
}

impl Archive {
    /// What to tell the user about an archive without TAM, which borg's `list` and `extract`
    /// tolerate (borg check reports it). Its metadata object is encrypted and MAC'd like any
    /// chunk, but so is every chunk of file content a client ever stored — a mail with crafted
    /// bytes included — so without the TAM nothing says it was meant as an archive.
    pub fn tam_warning(&self) -> Option<String> {
        (self.tam == TamStatus::Missing).then(|| {
            format!(
                "warning: archive {:?} has no TAM (archive authentication): nothing proves it \
                 was written by a client holding this repository's key",
                String::from_utf8_lossy(&self.meta.name)
            )
        })
    }

    /// Refuses an archive without TAM: a restore writes what it holds into live systems.
    pub fn require_tam(&self) -> Result<(), ReadError> {
        match self.tam {
            TamStatus::Verified => Ok(()),
            TamStatus::Missing => Err(ReadError::Unauthenticated(
                String::from_utf8_lossy(&self.meta.name).into_owned(),
            )),
        }
    }
}

/// Loads the archive `name` named in `manifest` and verifies its TAM where it has one.
pub async fn load_archive(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    manifest: &Manifest,
    name: &str,
) -> Result<Archive, ReadError> {
    let entry = manifest
        .archive(name.as_bytes())
        .ok_or_else(|| ReadError::NoSuchArchive(name.to_string()))?;
    let plaintext = fetch(repo.clone(), key.clone(), entry.id, None).await?;
    let (meta, tam) =
        ArchiveMeta::unpack(key, &plaintext).map_err(|source| ReadError::Archive {
            name: name.to_string(),
            source,
        })?;
    Ok(Archive {
        id: entry.id,
        meta,
        tam,
    })
}

/// How many ids one `list` request asks for: 3.2 MB of answer, few round trips.
const LIST_BATCH: usize = 100_000;

/// Every object id in the repository, in the server's listing order (page by page).
pub async fn list_objects(repo: &SharedRepository) -> Result<Vec<ObjectId>, ReadError> {
    let mut ids = Vec::new();
    loop {
        let batch = repo
            .list(LIST_BATCH, ids.last())
            .await
            .map_err(ReadError::List)?;
        let done = batch.len() < LIST_BATCH;
        ids.extend(batch);
        if done {
            return Ok(ids);
        }
    }
}

/// Fetches and opens one object.
pub async fn fetch(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    id: ObjectId,
    size: Option<usize>,
) -> Result<Vec<u8>, ReadError> {
    fetch_with(repo, key, id, size).await.map(|(data, _)| data)
}

/// Fetches and opens one object; also returns its stored (compressed, encrypted) size.
pub async fn fetch_sized(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    id: ObjectId,
) -> Result<(Vec<u8>, usize), ReadError> {
    fetch_with(repo, key, id, None).await
}

async fn fetch_with(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    id: ObjectId,
    size: Option<usize>,
) -> Result<(Vec<u8>, usize), ReadError> {
    let stored = repo.get(&id).await.map_err(|source| ReadError::Fetch {
        id: hex(&id),
        source,
    })?;
    let data = key
        .open(&id, &stored, size)
        .map_err(|source| ReadError::Damaged {
            id: hex(&id),
            source,
        })?;
    Ok((data, stored.len()))
}

/// Starts fetching one object on the worker pool.
pub fn spawn_fetch(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    id: ObjectId,
    size: Option<usize>,
) -> JoinHandle<Result<Vec<u8>, ReadError>> {
    tokio::spawn(fetch(repo.clone(), key.clone(), id, size))
}

/// Waits for a fetch task.
pub async fn join<T>(task: JoinHandle<Result<T, ReadError>>) -> Result<T, ReadError> {
    task.await
        .map_err(|e| ReadError::Interrupted(e.to_string()))?
}

/// Fetches `ids` in order, [`ITEM_CHUNKS_AHEAD`] at a time; each arrives with its stored size.
/// The channel ends after the last one or after the first error.
pub fn fetch_ahead(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    ids: Vec<ObjectId>,
) -> mpsc::Receiver<Result<(Vec<u8>, usize), ReadError>> {
    fetch_ahead_until(repo, key, ids, true)
}

/// [`fetch_ahead`] that goes on after a failed object, each failure in its place (`check`
/// reports every damaged one).
pub fn fetch_ahead_tolerant(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    ids: Vec<ObjectId>,
) -> mpsc::Receiver<Result<(Vec<u8>, usize), ReadError>> {
    fetch_ahead_until(repo, key, ids, false)
}

fn fetch_ahead_until(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    ids: Vec<ObjectId>,
    stop_at_error: bool,
) -> mpsc::Receiver<Result<(Vec<u8>, usize), ReadError>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut ahead = VecDeque::new();
        let mut ids = ids.into_iter();
        loop {
            while ahead.len() < ITEM_CHUNKS_AHEAD {
                match ids.next() {
                    Some(id) => {
                        ahead.push_back(tokio::spawn(fetch_sized(repo.clone(), key.clone(), id)))
                    }
                    None => break,
                }
            }
            let Some(task) = ahead.pop_front() else {
                return;
            };
            let fetched = join(task).await;
            let failed = fetched.is_err() && stop_at_error;
            if tx.send(fetched).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Streams the items of an archive in order; batches arrive on the returned channel, which ends
/// after the last item or after the first error.
pub fn stream_items(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    item_chunks: Vec<ObjectId>,
) -> mpsc::Receiver<Result<Vec<Item>, ReadError>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut chunks = fetch_ahead(repo, key, item_chunks);
        let mut decoder = ItemStreamDecoder::new();
        while let Some(chunk) = chunks.recv().await {
            let batch = chunk.and_then(|(data, _)| decoder.feed(&data).map_err(ReadError::from));
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
        if let Err(e) = decoder.finish() {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    rx
}
