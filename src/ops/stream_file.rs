//! One regular file's content out of an archive, in order, to a writer — the database dump a
//! restore pipes into the database server. Chunks are fetched ahead (and opened on the worker
//! pool) while the writer drains, as everywhere else.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::ErrorKind;
use crate::format::envelope::ObjectKey;
use crate::format::item::{Item, ItemKind};
use crate::repo::repository::SharedRepository;

use super::items::{Archive, ReadError, fetch_ahead, stream_items};

#[derive(Debug, thiserror::Error)]
pub enum StreamFileError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0} is not in the archive")]
    Missing(String),
    #[error("{0} is not a regular file in the archive")]
    NotAFile(String),
    #[error("writing {path}'s content: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: its chunks hold {got} bytes, its size says {expected}")]
    Inconsistent {
        path: String,
        got: u64,
        expected: u64,
    },
}

impl StreamFileError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StreamFileError::Read(e) => e.kind(),
            StreamFileError::Missing(_) | StreamFileError::NotAFile(_) => ErrorKind::BadInput,
            StreamFileError::Write { .. } => ErrorKind::Environment,
            StreamFileError::Inconsistent { .. } => ErrorKind::Integrity,
        }
    }
}

async fn find(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    archive: &Archive,
    path: &str,
) -> Result<Item, StreamFileError> {
    let mut batches = stream_items(repo.clone(), key.clone(), archive.meta.items.clone());
    while let Some(batch) = batches.recv().await {
        if let Some(item) = batch?.into_iter().find(|i| i.path == path.as_bytes()) {
            return Ok(item);
        }
    }
    Err(StreamFileError::Missing(path.to_string()))
}

/// Writes the content of the archive's regular file `path` to `out`; returns its size.
pub async fn stream_file(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    archive: &Archive,
    path: &str,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, StreamFileError> {
    let item = find(repo, key, archive, path).await?;
    // A hardlink slave's content is its master's, which borg never makes of a stdin item.
    if item.kind() != ItemKind::Regular || item.is_hardlink_slave() {
        return Err(StreamFileError::NotAFile(path.to_string()));
    }
    let ids = item.chunks.iter().flatten().map(|c| c.id).collect();
    let mut chunks = fetch_ahead(repo.clone(), key.clone(), ids);
    let mut written = 0u64;
    let write_error = |source| StreamFileError::Write {
        path: path.to_string(),
        source,
    };
    while let Some(chunk) = chunks.recv().await {
        let (data, _) = chunk?;
        out.write_all(&data).await.map_err(write_error)?;
        written += data.len() as u64;
    }
    out.flush().await.map_err(write_error)?;
    match item.size {
        Some(expected) if expected != written => Err(StreamFileError::Inconsistent {
            path: path.to_string(),
            got: written,
            expected,
        }),
        _ => Ok(written),
    }
}
