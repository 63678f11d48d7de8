//! The repository key as a thing to back up and restore (borg's `KeyManager`) and to re-protect
//! (`key change-passphrase`).
//!
//! Export and import need no passphrase and no manifest beyond its first byte (which says the
//! key type, and so where the key is kept): borg opens the repository for them without a lock,
//! and so do we ([`KeySession`]) — a repository whose key is lost or damaged must still let its
//! key be put back. The blob itself is only moved, never decrypted.

use std::path::PathBuf;

use crate::error::ErrorKind;
use crate::format::envelope::ObjectId;
use crate::format::key::{EncryptedKey, KeyError, KeyStorage, KeyType, Keyfile, PBKDF2_ITERATIONS};
use crate::format::key_export::{ImportError, keyfile_text, wrap_base64};
use crate::repo::location::Location;
use crate::repo::repository::{OpenOptions, RepoError, Repository as _};
use crate::repo::serve::{ServeRepository, Started};
use crate::repo::transport::Connection;

use super::durable::{create_private_dir_all, write_private_durably};
use super::open::{AccessOptions, OpenError, OpenRepository, connect, repository_path};
use super::{key_files, system};

#[derive(Debug, thiserror::Error)]
pub enum KeyManageError {
    #[error(
        "this repository is not encrypted (mode none): it has no key to export, import or protect"
    )]
    Unencrypted,
    #[error(
        "the repository config of {0} holds no key (it was removed or damaged); import a key backup with key import"
    )]
    NoRepositoryKey(String),
    #[error("the stored key is damaged: {0}; import a key backup with key import")]
    Damaged(KeyError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("cannot write the key file {path}: {source}")]
    WriteKeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl KeyManageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            KeyManageError::Unencrypted | KeyManageError::Import(_) => ErrorKind::BadInput,
            KeyManageError::NoRepositoryKey(_) | KeyManageError::Damaged(_) => ErrorKind::Integrity,
            KeyManageError::WriteKeyFile { .. } => ErrorKind::Environment,
            KeyManageError::Open(e) => e.kind(),
        }
    }
}

impl From<RepoError> for KeyManageError {
    fn from(e: RepoError) -> Self {
        KeyManageError::Open(OpenError::Repo(e))
    }
}

/// Where a repository's key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHome {
    /// In the repository config (repokey and authenticated modes).
    Repository,
    /// In this key file (keyfile modes).
    File(PathBuf),
}

/// A repository opened as borg's `key export` and `key import` open it: no lock, no passphrase,
/// the manifest read only for the key type.
pub struct KeySession {
    connection: Connection,
    repo: ServeRepository,
    key_type: KeyType,
    /// What the repository config holds; read for the key types that keep their key there.
    config_key: Option<String>,
}

impl KeySession {
    pub async fn open(
        location: &Location,
        options: &AccessOptions,
    ) -> Result<KeySession, KeyManageError> {
        let connection = connect(location, options).await?;
        let open_options = OpenOptions {
            lock: false,
            lock_wait: options.lock_wait,
            ..OpenOptions::read()
        };
        let started = async {
            let Started {
                repo,
                manifest,
                config_key,
                ..
            } = ServeRepository::start(
                connection.rpc.clone(),
                &repository_path(location),
                &open_options,
            )
            .await?;
            let manifest = match manifest {
                Err(RepoError::ObjectNotFound { .. }) => {
                    return Err(OpenError::NoManifest(location.canonical()).into());
                }
                other => other?,
            };
            let key_type = KeyType::identify(&manifest).map_err(OpenError::Key)?;
            let config_key = match key_type.storage() {
                KeyStorage::None => return Err(KeyManageError::Unencrypted),
                KeyStorage::Repository => config_key?,
                KeyStorage::Keyfile => None,
            };
            Ok((repo, key_type, config_key))
        }
        .await;
        match started {
            Ok((repo, key_type, config_key)) => Ok(KeySession {
                connection,
                repo,
                key_type,
                config_key,
            }),
            Err(e) => {
                let _ = connection.close().await;
                Err(e)
            }
        }
    }

    pub fn repository_id(&self) -> &ObjectId {
        self.repo.id()
    }

    /// The key blob's base64 text as it is stored (what a plain export carries), and where.
    pub fn stored_text(
        &self,
        location: &Location,
        options: &AccessOptions,
    ) -> Result<(String, KeyHome), KeyManageError> {
        match self.key_type.storage() {
            KeyStorage::Keyfile => {
                let (path, _) = key_files::find(self.repository_id(), options)?;
                // The text after the header exactly as the file has it, as borg exports it.
                let text = std::fs::read_to_string(&path).map_err(|e| OpenError::KeyFile {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                let blob = text.split_once('\n').map(|(_, b)| b).unwrap_or_default();
                Ok((blob.to_string(), KeyHome::File(path)))
            }
            _ => match &self.config_key {
                Some(text) => Ok((text.clone(), KeyHome::Repository)),
                None => Err(KeyManageError::NoRepositoryKey(location.canonical())),
            },
        }
    }

    /// The key blob's bytes, checked to be one.
    pub fn stored_blob(
        &self,
        location: &Location,
        options: &AccessOptions,
    ) -> Result<Vec<u8>, KeyManageError> {
        let (text, _) = self.stored_text(location, options)?;
        let blob =
            crate::format::key_export::decode_base64(&text).map_err(KeyManageError::Damaged)?;
        EncryptedKey::from_msgpack(&blob).map_err(KeyManageError::Damaged)?;
        Ok(blob)
    }

    /// Stores `blob` (a checked key blob of this repository) where this repository's key
    /// belongs: the repository config, or the key file borg would use.
    pub async fn store(
        &self,
        blob: &[u8],
        location: &Location,
        options: &AccessOptions,
    ) -> Result<KeyHome, KeyManageError> {
        let text = wrap_base64(blob);
        match self.key_type.storage() {
            KeyStorage::Keyfile => {
                let path =
                    key_files::existing_or_new_target(self.repository_id(), location, options);
                write_key_file(&path, &keyfile_text(self.repository_id(), &text))?;
                Ok(KeyHome::File(path))
            }
            _ => {
                self.repo.save_key(&text).await?;
                Ok(KeyHome::Repository)
            }
        }
    }

    pub async fn close(self) -> Result<(), KeyManageError> {
        drop(self.repo);
        Ok(self.connection.close().await.map_err(OpenError::Close)?)
    }
}

/// Writes a key file so that it is never seen half-written and only its owner can read it, in
/// a private directory when one must be made.
fn write_key_file(path: &std::path::Path, content: &str) -> Result<(), KeyManageError> {
    let error = |source| KeyManageError::WriteKeyFile {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir_all(dir).map_err(error)?;
    }
    write_private_durably(path, content.as_bytes()).map_err(error)
}

/// `key change-passphrase`: seals the open repository's key under `new_passphrase` with a fresh
/// salt and stores it where it came from. The secrets inside stay the same (as borg's do): a new
/// passphrase does not protect data from someone who had the key and the old passphrase.
pub async fn change_passphrase(
    open: &OpenRepository,
    new_passphrase: &str,
) -> Result<KeyHome, KeyManageError> {
    let material = open.key.material().ok_or(KeyManageError::Unencrypted)?;
    let sealed = EncryptedKey::seal(
        material,
        new_passphrase.as_bytes(),
        system::random_bytes::<32>(),
        PBKDF2_ITERATIONS,
    );
    match open.key.key_type().storage() {
        KeyStorage::Keyfile => {
            let path = open.key_file.as_ref().ok_or_else(|| {
                OpenError::Key(KeyError::Corrupt("its key file is not known".into()))
            })?;
            let keyfile = Keyfile {
                repository_id: material.repository_id,
                key: sealed,
            };
            write_key_file(path, &keyfile.render())?;
            Ok(KeyHome::File(path.clone()))
        }
        KeyStorage::Repository => {
            open.repo.save_key(&sealed.to_text()).await?;
            Ok(KeyHome::Repository)
        }
        KeyStorage::None => Err(KeyManageError::Unencrypted),
    }
}
