//! The repository seam: what every operation may ask of a borg 1.x repository, whatever holds
//! it. Operations (layer 3) see only [`Repository`]; today's one implementation is the `borg
//! serve` client ([`super::serve::ServeRepository`]), a native backend writing borg's segment
//! files itself would be another, and [`super::faults::FaultyRepository`] wraps any of them to
//! fail on demand in tests.
//!
//! The promises below are borg's (`repository.py`), so that an operation written against this
//! trait is correct for every backend: nothing is visible to other clients before `commit`, a
//! crash before it leaves the repository as it was at the last commit, and the nonce file is
//! outside transactions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::format::envelope::ObjectId;

use super::rpc::RpcError;

/// A repository method's answer, to come. Boxed so that the trait can be used as `dyn`: a
/// backend or a decorator is chosen at run time, and one allocation per request is nothing next
/// to the request itself.
pub type RepoFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RepoError>> + Send + 'a>>;

/// An open repository, shared by the tasks of one operation (they fetch and store concurrently).
pub type SharedRepository = Arc<dyn Repository>;

/// One open borg 1.x repository, holding the lock its opener asked for until it is dropped or
/// [`Repository::end_requests`] is called.
///
/// Every method may be called from several tasks at once; a backend answers each call on its
/// own, so a failed `put` fails that call and no other. Objects are opaque bytes here: keys,
/// encryption and the manifest's meaning are layer 3's.
pub trait Repository: Send + Sync {
    /// The repository id (32 bytes, from its config), fixed for its lifetime.
    fn id(&self) -> &ObjectId;

    /// The stored object `id`, exactly as put. An id that is not there is
    /// [`RepoError::ObjectNotFound`], never empty data. The bytes come from the repository host
    /// and are not trusted: the caller authenticates them.
    fn get<'a>(&'a self, id: &'a ObjectId) -> RepoFuture<'a, Vec<u8>>;

    /// Up to `limit` object ids after `marker` (from the start when `None`), in an order that
    /// stays the same while nobody writes, so that listing page by page sees every object once.
    /// An empty answer means there are no more.
    fn list<'a>(
        &'a self,
        limit: usize,
        marker: Option<&'a ObjectId>,
    ) -> RepoFuture<'a, Vec<ObjectId>>;

    /// Stores `data` under `id` in the open transaction, replacing an object of that id. Not
    /// visible to other clients, and gone after a crash or a [`rollback`](Self::rollback), until
    /// [`commit`](Self::commit) returns. Success means the backend accepted it, not that it is
    /// durable.
    fn put<'a>(&'a self, id: &'a ObjectId, data: Vec<u8>) -> RepoFuture<'a, ()>;

    /// Deletes object `id` in the open transaction (same visibility as [`put`](Self::put)). An
    /// id that is not there is [`RepoError::ObjectNotFound`].
    fn delete<'a>(&'a self, id: &'a ObjectId) -> RepoFuture<'a, ()>;

    /// Makes every `put` and `delete` of the transaction durable and visible, all or none: when
    /// it returns `Ok`, a crash no longer undoes them; when it fails or never returns, the
    /// repository is either as it was before the transaction or as after it, never between.
    /// `compact: false` leaves freeing space to a later compaction (what borg's clients send
    /// since 1.2).
    fn commit(&self, compact: bool) -> RepoFuture<'_, ()>;

    /// [`commit`](Self::commit), then frees the space that deleted and replaced objects take
    /// (borg's `compact`): every segment in which at least `threshold` (0.0–1.0) of the bytes
    /// are freeable is rewritten. An append-only repository frees nothing. Slow on a large
    /// repository, and the server says nothing meanwhile.
    fn commit_compacting(&self, threshold: f64) -> RepoFuture<'_, ()>;

    /// The repository's own consistency check, run where the segment files are (borg's
    /// `Repository.check` without repair): every segment entry's CRC and header, then — in a full
    /// check — an index rebuilt from the segments compared with the committed one. Needs the
    /// exclusive lock. `max_duration` (seconds) makes it a partial check that stops after that
    /// long and resumes where it stopped the next time (no index comparison then). Returns
    /// whether no problem was found; what was found is reported in the server's log. Slow on a
    /// large repository, and answered only when done.
    fn check(&self, max_duration: Option<u64>) -> RepoFuture<'_, bool>;

    /// Drops everything put or deleted since the last commit.
    fn rollback(&self) -> RepoFuture<'_, ()>;

    /// The repository's nonce counter: the first IV no client has reserved, or `None` where
    /// none was ever reserved (`docs/borg-format.md` §3.5). Outside transactions. From the
    /// repository host, so a reader checks it against its own record before use.
    fn get_free_nonce(&self) -> RepoFuture<'_, Option<u64>>;

    /// Reserves every IV below `next_unreserved`, durably and at once (outside transactions):
    /// after it returns, no other client starts below it. `start_nonce` is what
    /// [`get_free_nonce`](Self::get_free_nonce) returned, so that the backend refuses when
    /// another client reserved meanwhile.
    fn commit_nonce_reservation(
        &self,
        next_unreserved: u64,
        start_nonce: Option<u64>,
    ) -> RepoFuture<'_, ()>;

    /// The key kept in the repository config (repokey modes), as its text, or `None` (keyfile
    /// and `none` modes).
    fn load_key(&self) -> RepoFuture<'_, Option<String>>;

    /// Stores `text` as the key in the repository config (repokey modes; `init`, `key import`,
    /// `key change-passphrase`). Durable when it returns, outside transactions, as borg's
    /// `save_key` rewrites the config file at once.
    fn save_key<'a>(&'a self, text: &'a str) -> RepoFuture<'a, ()>;

    /// Removes the repository's locks, whoever holds them (borg's `break-lock`): for a lock a
    /// process on another machine left behind. Only safe when no one is using the repository.
    fn break_lock(&self) -> RepoFuture<'_, ()>;

    /// Says there will be no more requests: the backend releases the lock and winds down while
    /// the caller does local work. A transaction not committed by now is rolled back. Further
    /// calls fail.
    fn end_requests(&self) -> RepoFuture<'_, ()>;
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository {0} does not exist")]
    DoesNotExist(String),
    // The three refusals of creating a repository, in borg's words (`Repository.create`).
    #[error("A repository already exists at {0}.")]
    AlreadyExists(String),
    #[error("There is already something at {0}.")]
    PathAlreadyExists(String),
    #[error(
        "The parent path of the repo directory [{0}] does not exist. (--make-parent-dirs creates it.)"
    )]
    ParentPathDoesNotExist(String),
    #[error("{0} is not a borg repository")]
    NotARepository(String),
    #[error(
        "{path} has an invalid repository config ({detail}); is it a borg 2 repository? mailcow-borg works with borg 1.x repositories"
    )]
    InvalidConfig { path: String, detail: String },
    #[error(
        "the server does not allow access to {0} (borg serve --restrict-to-path/--restrict-to-repository)"
    )]
    PathNotAllowed(String),
    #[error(
        "the repository is locked ({0}): another borg is using it; wait, or if that process is gone, break the lock"
    )]
    Locked(String),
    #[error(
        "object {id} is not in the repository: the repository is damaged or was changed meanwhile"
    )]
    ObjectNotFound { id: String },
    #[error(
        "the repository is full: its storage quota is used up ({0}); free space with borg prune and compact, or raise --storage-quota"
    )]
    QuotaExceeded(String),
    #[error("the repository host has not enough free space ({0})")]
    NoSpace(String),
    #[error("the server runs borg {0}; borg 1.2 or newer is needed on the repository host")]
    UnsupportedServer(String),
    #[error("the repository server reported {class}: {message}")]
    Other { class: String, message: String },
    #[error(transparent)]
    Rpc(RpcError),
}

impl RepoError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepoError::Rpc(RpcError::Protocol(_)) => ErrorKind::Integrity,
            RepoError::Rpc(RpcError::ConnectionLost(_) | RpcError::Silent { .. }) => {
                ErrorKind::Connection
            }
            // The user chose a place that is taken or not there.
            RepoError::AlreadyExists(_)
            | RepoError::PathAlreadyExists(_)
            | RepoError::ParentPathDoesNotExist(_) => ErrorKind::BadInput,
            _ => ErrorKind::Repository,
        }
    }
}

/// How to open a repository; every field goes to the server as given.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub create: bool,
    /// How long to wait for the lock before failing with [`RepoError::Locked`].
    pub lock_wait: Duration,
    pub lock: bool,
    /// `true` for writers, `false` (shared) for readers, as borg opens per command.
    pub exclusive: bool,
    pub append_only: bool,
    pub make_parent_dirs: bool,
}

impl OpenOptions {
    /// What borg's writers (`create`, `delete`, `prune`) use: an exclusive lock.
    pub fn write() -> Self {
        OpenOptions {
            exclusive: true,
            ..OpenOptions::read()
        }
    }

    /// What borg's `list`, `info` and `extract` use: a shared lock, waiting 1 s by default.
    pub fn read() -> Self {
        OpenOptions {
            create: false,
            lock_wait: Duration::from_secs(1),
            lock: true,
            exclusive: false,
            append_only: false,
            make_parent_dirs: false,
        }
    }
}
