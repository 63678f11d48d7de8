//! Writing the manifest, the one object every writer rewrites (`create`, `delete`, `prune`,
//! `init`): its timestamp moved past the previous one, its TAM, compressed, encrypted under a
//! reserved IV — and put in the open transaction, so that it becomes the repository's manifest
//! with the commit and not before.

use crate::error::ErrorKind;
use crate::format::compress::Compression;
use crate::format::envelope::{MANIFEST_ID, ObjectId, ObjectKey, cipher_blocks};
use crate::format::manifest::{Manifest, next_timestamp};
use crate::repo::repository::{RepoError, SharedRepository};

use super::nonces::{NonceError, NonceManager};
use super::system::{now_micros, random_bytes};

#[derive(Debug, thiserror::Error)]
pub enum ManifestWriteError {
    #[error(transparent)]
    Nonce(#[from] NonceError),
    #[error("storing the manifest: {0}")]
    Put(#[from] RepoError),
}

impl ManifestWriteError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ManifestWriteError::Nonce(e) => e.kind(),
            ManifestWriteError::Put(e) => e.kind(),
        }
    }
}

/// Everything a manifest is written with.
pub struct ManifestWriter<'a> {
    pub repo: &'a SharedRepository,
    pub key: &'a ObjectKey,
    /// Reserves the IV in encrypted modes.
    pub nonces: &'a NonceManager,
    pub compression: &'a Compression,
}

impl ManifestWriter<'_> {
    /// Puts `manifest` with a timestamp after its current one (borg refuses a manifest that goes
    /// back in time); returns that timestamp and the manifest's id hash (what caches remember).
    pub async fn put(&self, manifest: &Manifest) -> Result<(String, ObjectId), ManifestWriteError> {
        let mut manifest = manifest.clone();
        let timestamp = next_timestamp(Some(&manifest.timestamp), now_micros());
        manifest.timestamp = timestamp.clone().into_bytes();
        let plain = manifest.pack(self.key, random_bytes());
        let payload = self.compression.compress(&plain);
        let iv = if self.key.key_type().is_encrypted() {
            self.nonces.allocate(cipher_blocks(payload.len())).await?
        } else {
            0
        };
        self.repo
            .put(&MANIFEST_ID, self.key.seal(&payload, iv))
            .await?;
        Ok((timestamp, self.key.id_hash(&plain)))
    }
}
