//! `init`: a new, empty repository, made as borg's `do_init` makes it (`archiver.py: do_init`,
//! `crypto/key.py: KeyfileKeyBase.create`), so that real borg and we use it alike:
//!
//! 1. the server creates the repository (`open` with `create`, exclusive lock): it refuses an
//!    existing repository, a non-empty directory and a missing parent itself, before writing
//!    anything;
//! 2. a new key — 100 random bytes split as borg splits them (fresh 64-byte halves for BLAKE2b
//!    types), sealed under the passphrase with a random salt and PBKDF2 (100,000 rounds) — goes
//!    into the repository config (repokey and authenticated modes) or a new key file;
//! 3. the manifest, empty, with its TAM and `tam_required`, encrypted with a reserved IV; then
//!    the commit;
//! 4. the security dir records the repository at once (`SecurityManager.save`, and the
//!    `tam_required` file), so that neither we nor borg later ask about an unknown repository.
//!
//! The passphrase is asked for before anything is created (by the caller), so that a missing one
//! leaves nothing behind; borg asks after creating the repository and destroys it again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ErrorKind;
use crate::format::compress::Compression;
use crate::format::envelope::ObjectKey;
use crate::format::key::{
    EncryptedKey, KeyMaterial, KeyStorage, KeyType, Keyfile, PBKDF2_ITERATIONS,
};
use crate::format::manifest::Manifest;
use crate::repo::location::Location;
use crate::repo::repository::{OpenOptions, RepoError, SharedRepository};
use crate::repo::serve::{ServeRepository, negotiate};

use super::durable::create_private_dir_all;
use super::key_files;
use super::manifest_write::{ManifestWriteError, ManifestWriter};
use super::nonces::NonceManager;
use super::open::{AccessOptions, OpenError, connect, repository_path};
use super::security::{Observed, SecurityDir};
use super::system::random_bytes;

/// What `init` makes, checked before anything is done.
#[derive(Clone, Debug)]
pub struct InitSettings {
    pub key_type: KeyType,
    pub append_only: bool,
    /// Bytes; `None`: no quota.
    pub storage_quota: Option<u64>,
    pub make_parent_dirs: bool,
}

/// A repository that was made.
#[derive(Debug)]
pub struct Initialized {
    pub id: [u8; 32],
    /// Where the key went, in keyfile modes.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "Aborting because key in \"{0}\" already exists: BORG_KEY_FILE names the key file of another repository; point it at a new file"
    )]
    KeyFileExists(String),
    #[error("cannot write the key file {path}: {detail}")]
    KeyFile { path: String, detail: String },
    #[error(transparent)]
    Manifest(#[from] ManifestWriteError),
    #[error(
        "the repository was made, but the security dir {dir} could not record it ({detail}); the next command will ask about an unknown repository"
    )]
    Security { dir: String, detail: String },
}

impl InitError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InitError::Open(e) => e.kind(),
            InitError::Repo(e) => e.kind(),
            InitError::KeyFileExists(_) => ErrorKind::BadInput,
            InitError::KeyFile { .. } | InitError::Security { .. } => ErrorKind::Environment,
            InitError::Manifest(e) => e.kind(),
        }
    }
}

/// Makes the repository at `location`. `passphrase` protects the key (ignored for `none`).
pub async fn init(
    location: &Location,
    options: &AccessOptions,
    settings: &InitSettings,
    passphrase: &str,
) -> Result<Initialized, InitError> {
    let key_target = match settings.key_type.storage() {
        KeyStorage::Keyfile => {
            let target = key_files::new_target(location, options);
            // Refused before the repository exists, so that the refusal changes nothing.
            if target.symlink_metadata().is_ok() {
                return Err(InitError::KeyFileExists(target.display().to_string()));
            }
            Some(target)
        }
        KeyStorage::None | KeyStorage::Repository => None,
    };
    let mut options = options.clone();
    // The quota is the server's setting, given on its command line as borg gives it
    // (`RemoteRepository.borg_cmd`); the repository config keeps it from then on.
    if let Some(quota) = settings.storage_quota {
        options
            .ssh
            .serve_args
            .push(format!("--storage-quota={quota}"));
    }
    let connection = connect(location, &options).await?;
    let made = async {
        negotiate(&connection.rpc).await?;
        let open_options = OpenOptions {
            create: true,
            lock_wait: options.lock_wait,
            append_only: settings.append_only,
            make_parent_dirs: settings.make_parent_dirs,
            ..OpenOptions::write()
        };
        let repo: SharedRepository = Arc::new(
            ServeRepository::open(
                connection.rpc.clone(),
                &repository_path(location),
                &open_options,
            )
            .await?,
        );
        let made = fill(&repo, location, &options, settings, passphrase, key_target).await;
        let _ = repo.end_requests().await;
        made
    }
    .await;
    let closed = connection.close().await;
    let made = made?;
    closed.map_err(OpenError::from)?;
    Ok(made)
}

/// The key, the manifest and the commit in the new, empty repository `repo`; then the
/// security dir.
async fn fill(
    repo: &SharedRepository,
    location: &Location,
    options: &AccessOptions,
    settings: &InitSettings,
    passphrase: &str,
    key_target: Option<PathBuf>,
) -> Result<Initialized, InitError> {
    let id = *repo.id();
    let key_type = settings.key_type;
    let key = if key_type == KeyType::Plaintext {
        ObjectKey::plaintext()
    } else {
        let material = KeyMaterial::from_random(key_type, &random_bytes(), &random_bytes(), id);
        let sealed = EncryptedKey::seal(
            &material,
            passphrase.as_bytes(),
            random_bytes(),
            PBKDF2_ITERATIONS,
        );
        match &key_target {
            Some(path) => write_key_file(
                path,
                &Keyfile {
                    repository_id: id,
                    key: sealed,
                }
                .render(),
            )?,
            None => repo.save_key(&sealed.to_text()).await?,
        }
        ObjectKey::new(key_type, material)
    };
    // Every key but `none`'s requires TAMs from now on (borg's `KeyBase.tam_required`).
    let tam_required = key_type != KeyType::Plaintext;
    let security = SecurityDir::new(&options.security_dir, &id);
    let nonces = NonceManager::new(repo.clone(), security.path().to_path_buf(), None);
    let (timestamp, _) = ManifestWriter {
        repo,
        key: &key,
        nonces: &nonces,
        // lz4, the compressor of borg's key object, which writes the manifest.
        compression: &Compression::Lz4,
    }
    // No timestamp yet: the writer takes the current time.
    .put(&Manifest::new(tam_required, Vec::new()))
    .await?;
    repo.commit(false).await?;

    let security_error = |e: std::io::Error| InitError::Security {
        dir: security.path().display().to_string(),
        detail: e.to_string(),
    };
    security
        .remember(&Observed {
            key_type,
            location: &location.canonical(),
            manifest_timestamp: &timestamp,
        })
        .map_err(security_error)?;
    if tam_required {
        security.remember_tam_required().map_err(security_error)?;
    }
    Ok(Initialized {
        id,
        key_file: key_target,
    })
}

/// Writes a new key file, only its owner may read it, in a directory only its owner may enter
/// (as borg's keys dir); an existing file is never replaced.
fn write_key_file(path: &Path, content: &str) -> Result<(), InitError> {
    let failed = |e: std::io::Error| InitError::KeyFile {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir_all(dir).map_err(failed)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                InitError::KeyFileExists(path.display().to_string())
            }
            _ => failed(e),
        })?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(failed)
}
