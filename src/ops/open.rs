//! Opening a repository for reading, as borg's `with_repository` does: connect over the right
//! transport, agree on the protocol, open with a shared lock, fetch the manifest, find and unlock
//! the key (repository config or key file), verify the manifest's TAM, check the feature flags,
//! and compare with the security dir before trusting anything in it.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use crate::error::ErrorKind;
use crate::format::compress::Compression;
use crate::format::envelope::{EnvelopeError, MANIFEST_ID, ObjectId, ObjectKey};
use crate::format::item::{ChunkRef, Item};
use crate::format::key::{EncryptedKey, KeyError, KeyStorage, KeyType, hex};
use crate::format::manifest::{ArchiveRef, Manifest, ManifestError, Operation, parse_timestamp};
use crate::repo::local;
use crate::repo::location::{Location, Repo};
use crate::repo::ratelimit::Throttled;
use crate::repo::repository::Repository as _;
use crate::repo::repository::{OpenOptions, RepoError, SharedRepository};
use crate::repo::serve::{ServeRepository, Started, negotiate};
use crate::repo::ssh::{self, SshError, SshOptions};
use crate::repo::transport::{Connection, ServerLog, SessionEnd};

use super::check::{self, CheckOptions, CheckSummary, Finding};
use super::create::{CreateError, CreateOptions, CreateReport, Progress, StartedWalk, create};
use super::delete::{self, DeleteError, DeletePlan, Executed};
use super::extract::{ExtractError, ExtractOptions, ExtractStats, extract};
use super::items::{Archive, ReadError, fetch, load_archive, stream_items};
use super::manifest_write::ManifestWriter;
use super::nonces::NonceManager;
use super::passphrase::{PassphraseError, PassphraseSources};
use super::security::{Observed, SecurityConsent, SecurityDir, SecurityError};
use super::stats::{Report, gather};
use super::stream_file::{StreamFileError, stream_file};
use super::unlock_ahead::UnlockAhead;

/// Everything needed to reach and unlock a repository; the CLI builds it from flags and borg's
/// environment variables.
#[derive(Clone)]
pub struct AccessOptions {
    pub ssh: SshOptions,
    /// `borg` for local repositories (`--remote-path` applies here too).
    pub local_borg: PathBuf,
    pub lock_wait: Duration,
    /// Reads without taking the repository's lock (borg's `--bypass-lock`): what `status`
    /// does, to answer while a backup holds the exclusive lock. Writers always lock.
    pub bypass_lock: bool,
    /// How long the server may stay silent while an answer is awaited (and SSH may take to
    /// log in and start `borg serve`) before the connection is given up.
    pub server_timeout: Duration,
    /// `--upload-ratelimit` in bytes per second; `None`: as fast as the link goes.
    pub upload_ratelimit: Option<NonZeroU64>,
    pub passphrase: PassphraseSources,
    /// `BORG_KEY_FILE`: the key file to use, instead of searching `keys_dir`.
    pub key_file: Option<PathBuf>,
    pub keys_dir: PathBuf,
    pub security_dir: PathBuf,
    /// Where the key's salt is remembered per location, to unlock while connecting (see
    /// [`super::unlock_ahead`]); `None`: nowhere.
    pub unlock_memo: Option<PathBuf>,
    pub consent: SecurityConsent,
    pub server_log: ServerLog,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Spawn(#[from] local::SpawnError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0} has no manifest: it is not a borg repository, or one that was never initialised")]
    NoManifest(String),
    #[error(transparent)]
    Passphrase(#[from] PassphraseError),
    #[error("{0}")]
    Key(KeyError),
    #[error(
        "no key file for repository {id} in {dir}; set BORG_KEY_FILE to the key file exported from the machine that created the repository"
    )]
    NoKeyFile { id: String, dir: String },
    #[error("cannot read key file {path}: {detail}")]
    KeyFile { path: String, detail: String },
    #[error("the manifest cannot be read with this key: {0}")]
    Manifest(EnvelopeError),
    #[error(transparent)]
    ManifestInvalid(#[from] ManifestError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("closing the repository: {0}")]
    Close(#[from] SessionEnd),
}

impl OpenError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpenError::Ssh(e) => e.kind(),
            OpenError::Spawn(_) => ErrorKind::Environment,
            OpenError::Repo(e) => e.kind(),
            OpenError::NoManifest(_) => ErrorKind::BadInput,
            OpenError::Passphrase(e) => e.kind(),
            OpenError::Key(KeyError::WrongPassphrase) => ErrorKind::BadInput,
            OpenError::Key(_) | OpenError::Manifest(_) | OpenError::ManifestInvalid(_) => {
                ErrorKind::Integrity
            }
            OpenError::NoKeyFile { .. } => ErrorKind::BadInput,
            OpenError::KeyFile { .. } => ErrorKind::Environment,
            OpenError::Security(e) => e.kind(),
            OpenError::Close(_) => ErrorKind::Repository,
        }
    }
}

/// A repository opened for reading, with its unlocked key and verified manifest.
pub struct OpenRepository {
    pub connection: Connection,
    pub repo: SharedRepository,
    pub key: Arc<ObjectKey>,
    pub manifest: Manifest,
    /// The id hash of the manifest's plaintext: it changes with every write, by anyone.
    pub manifest_id: ObjectId,
    /// The key file used (keyfile modes).
    pub key_file: Option<PathBuf>,
    /// The IV after the manifest's ciphertext, where a writer's reservation starts at the least.
    pub manifest_nonce: Option<u64>,
    /// The server's borg version.
    pub server_version: (i128, i128, i128),
    /// Where the security dirs are, and the location as they record it: a writer updates them.
    pub security_base: PathBuf,
    pub location: String,
}

/// What a command does with an open repository. Each operation lives in its own module and
/// takes only the parts it needs (so it can be tested on its own); these are the entry points
/// commands use, so that none passes the repository, key and manifest around by hand.
impl OpenRepository {
    /// The archive `name` of the manifest, its TAM verified where it has one.
    pub async fn archive(&self, name: &str) -> Result<Archive, ReadError> {
        load_archive(&self.repo, &self.key, &self.manifest, name).await
    }

    /// The archive `name`, refusing one without a TAM: what a restore writes into a live system
    /// must provably come from a holder of the key.
    pub async fn authenticated_archive(&self, name: &str) -> Result<Archive, ReadError> {
        let archive = self.archive(name).await?;
        archive.require_tam()?;
        Ok(archive)
    }

    /// The object `id`, authenticated, decrypted and decompressed.
    pub async fn object(&self, id: ObjectId) -> Result<Vec<u8>, ReadError> {
        fetch(self.repo.clone(), self.key.clone(), id, None).await
    }

    /// A content chunk an item refers to, checked against the size the reference gives.
    pub async fn chunk(&self, chunk: &ChunkRef) -> Result<Vec<u8>, ReadError> {
        let size = usize::try_from(chunk.size).ok();
        fetch(self.repo.clone(), self.key.clone(), chunk.id, size).await
    }

    /// The manifest's archives, oldest first (by the time the manifest records), as `list`
    /// shows them.
    pub fn archives_by_time(&self) -> Vec<(&[u8], &ArchiveRef)> {
        let mut archives: Vec<_> = self
            .manifest
            .archives
            .iter()
            .map(|(name, entry)| (name.as_slice(), entry))
            .collect();
        archives.sort_by_cached_key(|(_, entry)| parse_timestamp(&entry.time).unwrap_or(0));
        archives
    }

    /// `archive`'s items in order, in batches; the channel ends after the last item or after
    /// the first error.
    pub fn items(&self, archive: &Archive) -> mpsc::Receiver<Result<Vec<Item>, ReadError>> {
        stream_items(
            self.repo.clone(),
            self.key.clone(),
            archive.meta.items.clone(),
        )
    }

    /// Restores `archive` (or the parts `options` select) into the file system.
    pub async fn extract(
        &self,
        archive: &Archive,
        options: &ExtractOptions,
    ) -> Result<ExtractStats, ExtractError> {
        extract(&self.repo, &self.key, archive, options).await
    }

    /// Writes the content of `archive`'s regular file `path` to `out`; returns its size.
    pub async fn stream_file(
        &self,
        archive: &Archive,
        path: &str,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, StreamFileError> {
        stream_file(&self.repo, &self.key, archive, path, out).await
    }

    /// `info`'s statistics: the repository's, and those of the archives `names`.
    pub async fn statistics(&self, names: &[String]) -> Result<Report, ReadError> {
        gather(&self.repo, &self.key, &self.manifest, names).await
    }

    /// Writes a new archive; see [`super::create::create`].
    pub async fn create(
        &mut self,
        options: Arc<CreateOptions>,
        walk: StartedWalk,
        progress: Arc<dyn Progress>,
        started: Instant,
    ) -> Result<CreateReport, CreateError> {
        create(self, options, walk, progress, started).await
    }

    /// Works out what deleting the archives `names` frees; see [`super::delete`].
    pub async fn plan_delete(&self, names: &[String]) -> Result<DeletePlan, DeleteError> {
        delete::plan(&self.repo, &self.key, &self.manifest, names).await
    }

    /// Deletes the archives of `plan` and every object only they referenced, in one commit;
    /// see [`super::delete`]. Afterwards the security dir knows the new manifest (a failure to
    /// record that is returned as a note: the deletion itself is done).
    pub async fn delete(
        &mut self,
        plan: &DeletePlan,
    ) -> Result<(Executed, Option<String>), DeleteError> {
        let nonces = NonceManager::new(
            self.repo.clone(),
            self.security_base.join(hex(self.repo.id())),
            self.manifest_nonce,
        );
        let writer = ManifestWriter {
            repo: &self.repo,
            key: &self.key,
            nonces: &nonces,
            compression: &Compression::default(),
        };
        let executed = delete::execute(&self.repo, &mut self.manifest, &writer, plan).await?;
        self.manifest_id = executed.manifest_id;
        let remembered =
            SecurityDir::new(&self.security_base, self.repo.id()).remember(&Observed {
                key_type: self.key.key_type(),
                location: &self.location,
                manifest_timestamp: &executed.manifest_timestamp,
            });
        let note = remembered.err().map(|e| {
            format!("the archives were deleted, but the security dir could not be updated: {e}")
        });
        Ok((executed, note))
    }

    /// Checks the archives (and with `verify_data` every object), reporting each finding; see
    /// [`super::check`]. `manifest_trusted`: whether the manifest verified on opening
    /// ([`open_for_check`] says).
    pub async fn check(
        &self,
        manifest_trusted: bool,
        options: &CheckOptions,
        report: &mut (dyn FnMut(Finding) + Send),
    ) -> Result<CheckSummary, ReadError> {
        let manifest = manifest_trusted.then_some(&self.manifest);
        check::check(&self.repo, &self.key, manifest, options, report).await
    }

    /// Closes the session, releasing the lock.
    pub async fn close(self) -> Result<(), OpenError> {
        drop(self.repo);
        Ok(self.connection.close().await?)
    }
}

/// Starts `borg serve` for `location` over the transport its syntax asks for.
pub async fn connect(
    location: &Location,
    options: &AccessOptions,
) -> Result<Connection, OpenError> {
    let mut streams = match &location.repo {
        Repo::Ssh(target) => ssh::connect(target, &options.ssh).await?,
        Repo::Local { .. } => {
            let args: Vec<&str> = options.ssh.serve_args.iter().map(String::as_str).collect();
            local::spawn(&options.local_borg, &args)?
        }
    };
    // Everything for the server is written to its input, whichever transport carries it.
    if let Some(rate) = options.upload_ratelimit {
        streams.stdin = Box::new(Throttled::new(streams.stdin, rate));
    }
    Ok(Connection::new(
        streams,
        options.server_log.clone(),
        Some(options.server_timeout),
    ))
}

/// `break-lock`: removes the repository's locks, as borg does — the repository opened without
/// taking a lock, neither key nor manifest read (a lock may be what keeps them from being read).
pub async fn break_lock(location: &Location, options: &AccessOptions) -> Result<(), OpenError> {
    let open_options = OpenOptions {
        lock: false,
        ..OpenOptions::read()
    };
    with_bare_repository(location, options, &open_options, async |repo| {
        repo.break_lock().await
    })
    .await
}

/// `compact`: frees the space of deleted objects, as borg's `compact` does — under the exclusive
/// lock, the manifest rewritten unchanged (so that there is a transaction to commit), then a
/// compacting commit with `threshold` (0.0–1.0). No key is needed: the server does the work.
pub async fn compact(
    location: &Location,
    options: &AccessOptions,
    threshold: f64,
) -> Result<(), OpenError> {
    let open_options = OpenOptions {
        lock_wait: options.lock_wait,
        ..OpenOptions::write()
    };
    with_bare_repository(location, options, &open_options, async |repo| {
        let manifest = repo.get(&MANIFEST_ID).await?;
        repo.put(&MANIFEST_ID, manifest).await?;
        repo.commit_compacting(threshold).await
    })
    .await
}

/// Opens the repository without reading key or manifest, runs `work`, closes.
async fn with_bare_repository(
    location: &Location,
    options: &AccessOptions,
    open_options: &OpenOptions,
    work: impl AsyncFnOnce(&ServeRepository) -> Result<(), RepoError>,
) -> Result<(), OpenError> {
    let connection = connect(location, options).await?;
    let done = async {
        negotiate(&connection.rpc).await?;
        let repo = ServeRepository::open(
            connection.rpc.clone(),
            &repository_path(location),
            open_options,
        )
        .await?;
        work(&repo).await
    }
    .await;
    let closed = connection.close().await;
    done?;
    Ok(closed?)
}

pub async fn open(
    location: &Location,
    options: &AccessOptions,
    operation: Operation,
) -> Result<OpenRepository, OpenError> {
    let (repo, manifest_damage) = open_as(location, options, operation, Purpose::Use).await?;
    // Only a check gets past a manifest that does not verify.
    debug_assert!(manifest_damage.is_none());
    Ok(repo)
}

/// Opens for `check`, as borg's check does: with the exclusive lock (the server's own check
/// needs it, and nobody may write while the archives are compared with the object list), and
/// reporting a manifest that cannot be decrypted or authenticated instead of refusing it. The
/// repository then comes with an empty manifest and the reason it is not trusted. The security
/// dir is left alone (see `open_over`).
pub async fn open_for_check(
    location: &Location,
    options: &AccessOptions,
) -> Result<(OpenRepository, Option<OpenError>), OpenError> {
    open_as(location, options, Operation::Check, Purpose::Check).await
}

/// What a repository is opened for, beyond the manifest's feature flags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Reading or writing archives: the manifest must verify.
    Use,
    /// Checking: the exclusive lock, and a damaged manifest is a finding, not a failure.
    Check,
}

async fn open_as(
    location: &Location,
    options: &AccessOptions,
    operation: Operation,
    purpose: Purpose,
) -> Result<(OpenRepository, Option<OpenError>), OpenError> {
    let ahead = UnlockAhead::start(
        options.unlock_memo.as_deref(),
        &location.canonical(),
        &options.passphrase,
    );
    let connection = connect(location, options).await?;
    let rpc = connection.rpc.clone();
    match open_over(rpc, location, options, operation, purpose, ahead).await {
        Ok(Opened {
            repo,
            key,
            manifest,
            manifest_id,
            key_file,
            manifest_nonce,
            server_version,
            manifest_damage,
        }) => Ok((
            OpenRepository {
                connection,
                repo,
                key,
                manifest,
                manifest_id,
                key_file,
                manifest_nonce,
                server_version,
                security_base: options.security_dir.clone(),
                location: location.canonical(),
            },
            manifest_damage,
        )),
        Err(e) => {
            // Leave no lock behind: a refused repository is closed as cleanly as a used one.
            let _ = connection.close().await;
            Err(e)
        }
    }
}

/// What `open_over` found, before it is joined with the connection.
struct Opened {
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    manifest: Manifest,
    manifest_id: ObjectId,
    key_file: Option<PathBuf>,
    manifest_nonce: Option<u64>,
    server_version: (i128, i128, i128),
    /// Why the manifest is not trusted ([`Purpose::Check`] only; `manifest` is then empty).
    manifest_damage: Option<OpenError>,
}

async fn open_over(
    rpc: Arc<crate::repo::rpc::RpcClient>,
    location: &Location,
    options: &AccessOptions,
    operation: Operation,
    purpose: Purpose,
    ahead: UnlockAhead,
) -> Result<Opened, OpenError> {
    let path = repository_path(location);
    // Writers take the exclusive lock up front, as borg does, rather than upgrading later.
    let base = match (operation, purpose) {
        (Operation::Write | Operation::Delete, _) | (_, Purpose::Check) => OpenOptions::write(),
        (Operation::Read | Operation::Check, Purpose::Use) => OpenOptions::read(),
    };
    let open_options = OpenOptions {
        lock_wait: options.lock_wait,
        lock: base.exclusive || !options.bypass_lock,
        ..base
    };
    let Started {
        server_version,
        repo,
        manifest,
        config_key,
    } = ServeRepository::start(rpc, &path, &open_options).await?;
    let repo: SharedRepository = Arc::new(repo);
    let manifest_object = match manifest {
        Err(RepoError::ObjectNotFound { .. }) => {
            return Err(OpenError::NoManifest(location.canonical()));
        }
        other => other?,
    };
    let key_type = KeyType::identify(&manifest_object).map_err(OpenError::Key)?;
    let (key, key_file) = unlock_key(repo.id(), key_type, config_key, options, ahead).await?;
    let key = Arc::new(key);
    let verified = key
        .open(&MANIFEST_ID, &manifest_object, None)
        .map_err(OpenError::Manifest)
        .and_then(|plaintext| {
            let manifest = Manifest::unpack(&key, &plaintext)?;
            Ok((manifest, plaintext))
        });
    let (manifest, plaintext) = match verified {
        Ok(verified) => verified,
        Err(damage) if purpose == Purpose::Check => {
            return Ok(Opened {
                manifest_nonce: crate::format::nonce::manifest_nonce(&key, &manifest_object),
                manifest_id: MANIFEST_ID,
                manifest: Manifest::new(key.key_type().is_encrypted(), Vec::new()),
                repo,
                key,
                key_file,
                server_version,
                manifest_damage: Some(damage),
            });
        }
        Err(refused) => return Err(refused),
    };
    manifest.check_features(operation)?;

    // A check neither consults nor updates the security dir, as borg's does not: it writes and
    // restores nothing, and must be able to look at a copy or an older state of a repository
    // (which the replay check would refuse) to say what is wrong with it.
    if purpose == Purpose::Use {
        SecurityDir::new(&options.security_dir, repo.id()).check_and_remember(
            &Observed {
                key_type,
                location: &location.canonical(),
                manifest_timestamp: &String::from_utf8_lossy(&manifest.timestamp),
            },
            options.consent,
        )?;
    }
    Ok(Opened {
        manifest_nonce: crate::format::nonce::manifest_nonce(&key, &manifest_object),
        manifest_id: key.id_hash(&plaintext),
        repo,
        key,
        manifest,
        key_file,
        server_version,
        manifest_damage: None,
    })
}

/// The path `borg serve` is asked to open, as the user gave it.
pub(crate) fn repository_path(location: &Location) -> String {
    match &location.repo {
        Repo::Ssh(target) => target.path.clone(),
        // A local `borg serve` runs in our working directory, so relative paths mean the same.
        Repo::Local { path } => path.clone(),
    }
}

/// The unlocked key, and the key file it came from in keyfile modes. `config_key`: what the
/// repository config holds.
async fn unlock_key(
    repo_id: &ObjectId,
    key_type: KeyType,
    config_key: Result<Option<String>, RepoError>,
    options: &AccessOptions,
    ahead: UnlockAhead,
) -> Result<(ObjectKey, Option<PathBuf>), OpenError> {
    let mut key_file = None;
    let encrypted = match key_type.storage() {
        KeyStorage::None => return Ok((ObjectKey::plaintext(), None)),
        KeyStorage::Repository => {
            let text = config_key?.ok_or_else(|| {
                OpenError::Key(KeyError::Corrupt(
                    "the repository config holds no key".into(),
                ))
            })?;
            EncryptedKey::from_text(&text).map_err(OpenError::Key)?
        }
        KeyStorage::Keyfile => {
            let (path, keyfile) = super::key_files::find(repo_id, options)?;
            key_file = Some(path);
            keyfile.key
        }
    };
    let material = ahead.open(&encrypted, &options.passphrase).await?;
    Ok((ObjectKey::new(key_type, material), key_file))
}
