//! `create`: back up file system trees into a new archive that borg 1.x takes for its own.
//!
//! The work is a pipeline on every core:
//!
//! ```text
//!   walk ──Slot──▶ decide ──file groups──▶ content workers (1 per core): read, chunk, store ─┐
//!  (starts before      │                                                                   │
//!   the connection)    └──Slot, in walk order──▶ assembler ◀── chunk lists ────────────────┘
//!                                                  │ item stream → store; checkpoints
//!                                                  ▼
//!                        archive object → every put acknowledged → manifest → commit
//! ```
//!
//! [`walk`] visits the trees in borg's order and produces items; it needs nothing of the
//! repository, so it runs while SSH and `borg serve` start, asking the [`files_cache`] which files
//! are unchanged and packing every other item it can complete. [`decide`] confirms the unchanged
//! ones against the repository's chunk index (kept in [`chunk_cache`]) and packs them — the walk
//! is the stage that cannot keep up in an unchanged backup — and hands the other files to the [`content`]
//! workers in groups, whose [`store`] dedups their chunks a batch at a time, compresses, encrypts
//! (IVs from the nonce reservation) and uploads within a byte budget. The assembler ([`assemble`])
//! takes the slots strictly in walk order, fills in each file's chunk list when its worker is done,
//! resolves hardlinks and writes the item stream. [`commit`] writes checkpoints and, once every put
//! has been acknowledged, the archive and the manifest; anything that goes wrong before leaves the
//! repository as it was at the last commit (the rest of the transaction is rolled back). The caches
//! are saved after each commit, so they never describe data the repository lacks.

pub mod assemble;
pub mod chunk_cache;
pub mod commit;
pub mod content;
pub mod decide;
pub mod files_cache;
pub mod fsmeta;
pub mod store;
pub mod tally;
pub mod walk;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::error::ErrorKind;
use crate::format::chunker::ChunkerParams;
use crate::format::compress::Compression;
use crate::format::envelope::ObjectId;
use crate::format::item::Item;
use crate::format::key::hex;
use crate::repo::repository::RepoError;
use sha2::{Digest, Sha256};

use super::items::ReadError;
use super::manifest_write::ManifestWriteError;
use super::memory::{MemoryBudget, MemoryError};
use super::nonces::{NonceError, NonceManager};
use super::open::OpenRepository;
use super::owners::Owners;

use assemble::{Assembled, Assembler};
use chunk_cache::ChunkCache;
use commit::{Committer, checkpoint_name};
use decide::Decider;
use files_cache::{FilesCache, FilesCacheMode};
use store::{ChunkStore, StoreError, Stored};
use walk::{Reopener, Slot, WalkOptions, Walker};

/// Slot batches the walk may run ahead of the assembler (twice: walk → decide → assemble).
/// Every slot on the way holds its item, path, reply channel and chunk list — some 600 bytes
/// for a small mail — so 2 × 32 × 128 slots are ~5 MB; 256 batches were ~40 MB of a first
/// backup's peak, and no faster (100,000 small mails: 5.4 s and 92 MiB against 8.0 s and
/// 112 MiB). Workers still have thousands of files queued.
const BATCHES_AHEAD: usize = 32;

/// Everything `create` needs besides the open repository.
pub struct CreateOptions {
    pub name: String,
    /// The PATH arguments, as given.
    pub roots: Vec<Vec<u8>>,
    pub compression: Compression,
    pub chunker_params: ChunkerParams,
    pub files_cache: FilesCacheMode,
    /// `BORG_FILES_CACHE_TTL`.
    pub files_cache_ttl: u8,
    /// `BORG_FILES_CACHE_SUFFIX`: keeps a separate files cache per backup set.
    pub files_cache_suffix: Option<String>,
    pub walk: WalkOptions,
    /// Our cache directory: the chunk index in `<dir>/<repository id>/`, the files cache in
    /// `<dir>/files/` by location (it is needed before the repository is reached).
    pub cache_dir: PathBuf,
    pub security_dir: PathBuf,
    /// The repository location, canonical, for the security dir.
    pub location: String,
    pub comment: String,
    /// `--timestamp`: the archive's start time (Unix microseconds) instead of now.
    pub timestamp: Option<i64>,
    /// `--checkpoint-interval`.
    pub checkpoint_interval: std::time::Duration,
    pub cmdline: Vec<Vec<u8>>,
    pub hostname: String,
    pub username: String,
    pub workers: usize,
    /// What `-` among the roots reads.
    pub stdin: Option<StreamInput>,
    /// The memory the run may use, if it is limited: caches that would not fit are refused
    /// before they are loaded, and the run stops short of the limit (see `ops::memory`).
    pub memory: Option<MemoryBudget>,
}

/// Content from a stream, stored as one regular file: borg's stdin item (`-` among the paths,
/// `--stdin-name`, `--stdin-mode`, `--stdin-user`, `--stdin-group`). Its times are the moment
/// the walk reaches it, in whole seconds, as borg stores them.
pub struct StreamInput {
    pub name: Vec<u8>,
    /// Permission bits; the item is always a regular file.
    pub mode: u32,
    pub uid: u32,
    pub user: String,
    pub gid: u32,
    pub group: String,
    /// Whether a failed read fails the backup (no archive) rather than skipping the item with a
    /// warning (borg's `-`): for content whose producer can fail midway, such as a database
    /// dump, where a half item must never look like a complete one.
    pub fatal_errors: bool,
    /// Taken by the one worker that reads it.
    pub reader: Mutex<Option<Box<dyn std::io::Read + Send>>>,
}

impl StreamInput {
    fn item(&self) -> Item {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64
            * 1_000_000_000;
        Item {
            path: self.name.clone(),
            mode: Some(self.mode & 0o7777 | 0o100000),
            uid: Some(self.uid),
            user: Some(Some(self.user.clone().into_bytes())),
            gid: Some(self.gid),
            group: Some(Some(self.group.clone().into_bytes())),
            mtime: now,
            atime: Some(now),
            ctime: Some(now),
            hardlink_master: Some(false),
            ..Item::default()
        }
    }
}

impl CreateOptions {
    /// The files cache, keyed by the repository's location rather than its id: the walk uses it
    /// before the repository answers. A different repository at the same location costs
    /// nothing but speed, since a file counts as unchanged only when the repository's chunk
    /// index has all its chunks.
    fn files_cache_path(&self) -> PathBuf {
        let mut name = hex(&Sha256::digest(self.location.as_bytes()));
        if let Some(suffix) = &self.files_cache_suffix {
            name = format!("{name}.{suffix}");
        }
        self.cache_dir.join("files").join(name)
    }
}

/// What a UI hears while `create` runs.
pub trait Progress: Send + Sync {
    /// A `--list` line: borg's status letter and the walked path.
    fn file_status(&self, status: char, path: &[u8]);
    /// A problem with one file: the run goes on and ends with a warning.
    fn warning(&self, message: &str);
    /// A file's content is in: `original` bytes (read, or reused unchanged), of which `uploaded`
    /// bytes (compressed) were new to the repository. For a progress display.
    fn content(&self, _original: u64, _uploaded: u64) {}
}

/// The archive's own figures (`create --json`'s `archive.stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContentStats {
    pub original_size: u64,
    pub compressed_size: u64,
    pub deduplicated_size: u64,
    pub nfiles: u64,
}

impl ContentStats {
    /// A file read now, whose chunks are `chunks`.
    fn add_read(&mut self, chunks: &[Stored]) {
        self.nfiles += 1;
        for stored in chunks {
            self.original_size += stored.chunk.size;
            self.compressed_size += stored.chunk.csize;
            if stored.new {
                self.deduplicated_size += stored.chunk.csize;
            }
        }
    }

    /// A file reused unchanged from the files cache: nothing new in the repository.
    fn add_reused(&mut self, size: u64, csize: u64) {
        self.nfiles += 1;
        self.original_size += size;
        self.compressed_size += csize;
    }
}

/// The archive's figures split by the first component of the files' paths (`vmail`, `mysql`
/// in a mailcow backup), in the order first met.
pub type StatsByTop = Vec<(Vec<u8>, ContentStats)>;

pub struct CreateReport {
    pub id: ObjectId,
    pub name: String,
    /// Unix microseconds.
    pub start: i64,
    pub end: i64,
    pub duration: f64,
    pub stats: ContentStats,
    pub by_top: StatsByTop,
    /// The archive object's plaintext size (for borg's "utilization of max. archive size").
    pub archive_size: usize,
    /// Problems with single files (each also went to [`Progress::warning`]).
    pub warnings: u64,
    /// The manifest timestamp written.
    pub manifest_timestamp: String,
    /// Non-fatal notes about the caches (damaged, rebuilt).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("archive {0} already exists")]
    AlreadyExists(String),
    #[error(
        "invalid archive name {0:?}: it must not be empty, contain '/' or '::', or be longer than 255 characters"
    )]
    InvalidName(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot bring the chunk index up to date: {0}")]
    Sync(#[from] ReadError),
    #[error(transparent)]
    Nonce(#[from] NonceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the archive metadata is too large for one object ({0} bytes); split the backup")]
    ArchiveTooLarge(usize),
    #[error("cannot use the cache directory {path}: {source}")]
    Cache { path: String, source: io::Error },
    #[error("the backup stopped: {0}")]
    Aborted(String),
    /// A stream whose errors are fatal failed: nothing was committed.
    #[error("{0}; nothing was committed")]
    Input(String),
    /// Stopped from outside (a signal) before the commit: nothing was written.
    #[error("interrupted; nothing was committed")]
    Interrupted,
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// A manifest write fails as its parts would have in `create` itself: the same messages.
impl From<ManifestWriteError> for CreateError {
    fn from(e: ManifestWriteError) -> CreateError {
        match e {
            ManifestWriteError::Nonce(e) => CreateError::Nonce(e),
            ManifestWriteError::Put(e) => CreateError::Repo(e),
        }
    }
}

impl CreateError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CreateError::AlreadyExists(_) | CreateError::InvalidName(_) => ErrorKind::BadInput,
            CreateError::Repo(e) => e.kind(),
            CreateError::Sync(e) => e.kind(),
            CreateError::Nonce(e) | CreateError::Store(StoreError::Nonce(e)) => e.kind(),
            CreateError::Store(StoreError::Probe { source, .. }) => source.kind(),
            // The upload's own error is reported in its place; this one only ends the run.
            CreateError::Store(StoreError::UploadFailed) => ErrorKind::Repository,
            CreateError::Store(StoreError::Stopped) | CreateError::Interrupted => {
                ErrorKind::Interrupted
            }
            CreateError::ArchiveTooLarge(_) => ErrorKind::BadInput,
            CreateError::Cache { .. } | CreateError::Aborted(_) | CreateError::Input(_) => {
                ErrorKind::Environment
            }
            CreateError::Memory(e) => e.kind(),
        }
    }
}

/// When the pipeline's threads should give up: stopped from outside, or another part failed.
pub struct Halt {
    stop: Arc<AtomicBool>,
    failed: AtomicBool,
    /// Why the memory watch stopped the run, if it did.
    memory: OnceLock<MemoryError>,
}

impl Halt {
    pub fn halted(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
}

/// borg's archive-name rules (`archivename_validator`).
fn check_name(name: &str) -> Result<(), CreateError> {
    if name.is_empty() || name.contains('/') || name.contains("::") || name.chars().count() > 255 {
        return Err(CreateError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Backs up `options.roots`, walked by `walk` (from [`start_walk`]), into a new archive in
/// `opened` (opened for writing). The walk's `stop` flag (set from a signal handler) ends the
/// run before the commit with [`CreateError::Interrupted`]. `started` is when the run began,
/// for the archive's duration. Once the archive is committed the server is told that no more
/// requests follow, so it winds down while the caches are saved: what is left to do with
/// `opened` is to close it.
pub async fn create(
    opened: &mut OpenRepository,
    options: Arc<CreateOptions>,
    walk: StartedWalk,
    progress: Arc<dyn Progress>,
    started: Instant,
) -> Result<CreateReport, CreateError> {
    check_name(&options.name)?;
    if opened.manifest.archive(options.name.as_bytes()).is_some() {
        return Err(CreateError::AlreadyExists(options.name.clone()));
    }
    let result = write_archive(opened, options, walk, progress, started).await;
    if result.is_err() {
        // Nothing of this run may stay: drop the uncommitted transaction explicitly.
        let _ = opened.repo.rollback().await;
    }
    result
}

async fn write_archive(
    opened: &mut OpenRepository,
    options: Arc<CreateOptions>,
    mut walk: StartedWalk,
    progress: Arc<dyn Progress>,
    started: Instant,
) -> Result<CreateReport, CreateError> {
    let stop = walk.halt.stop.clone();
    let stopped = || stop.load(Ordering::Relaxed);
    let repo = opened.repo.clone();
    let key = opened.key.clone();
    let cache_dir = options.cache_dir.join(hex(repo.id()));
    let cache_error = |source: io::Error| CreateError::Cache {
        path: cache_dir.display().to_string(),
        source,
    };
    super::durable::create_private_dir_all(&cache_dir).map_err(cache_error)?;
    let mut notes = Vec::new();
    let index_path = cache_dir.join("chunks");
    if let Some(budget) = options.memory {
        budget.check_caches(
            &[&options.files_cache_path(), &index_path],
            "the files cache and the chunk index",
        )?;
    }
    let (mut chunks, note) = ChunkCache::load(&index_path);
    notes.extend(note);
    chunks
        .sync(&repo, &key, &opened.manifest, opened.manifest_id)
        .await?;
    let (files, note) = (&mut walk.files).await.map_err(|_| {
        CreateError::Aborted("the walk ended before its files cache was read".into())
    })??;
    notes.extend(note);

    let nonces = NonceManager::new(
        repo.clone(),
        options.security_dir.join(hex(repo.id())),
        opened.manifest_nonce,
    );
    let runtime = tokio::runtime::Handle::current();
    let store = Arc::new(ChunkStore::new(
        key.clone(),
        options.compression.clone(),
        nonces,
        repo.clone(),
        runtime,
        chunks,
    ));
    if key.key_type().is_encrypted() {
        // The first new object waits for a nonce reservation: two requests and a synced local
        // write (see `nonces`). Made now, it overlaps the walk's catching up instead; should it
        // fail, the first allocation tries again and reports why.
        let early = store.clone();
        tokio::spawn(async move {
            let _ = early.nonces().allocate(0).await;
        });
    }
    let mut committer = Committer {
        repo: repo.clone(),
        key: key.clone(),
        store: store.clone(),
        runtime: tokio::runtime::Handle::current(),
        options: options.clone(),
        started,
        manifest: opened.manifest.clone(),
        checkpoint_name: checkpoint_name(&opened.manifest, &options.name),
        checkpoint: None,
        files: files.clone(),
        index_path,
        notes,
    };
    let pipeline_options = options.clone();
    let uploads = store.clone();
    let halt = walk.halt.clone();
    let (assembled, mut committer) = tokio::task::spawn_blocking(move || {
        let assembled = run_pipeline(
            &pipeline_options,
            walk,
            &store,
            &files,
            &*progress,
            &mut committer,
        );
        (assembled, committer)
    })
    .await
    .map_err(|e| CreateError::Aborted(e.to_string()))?;
    if let Some(e) = halt.memory.get() {
        return Err(e.clone().into());
    }
    // A stop cuts the walk short, so even a pipeline that ended well may lack files.
    let assembled = match assembled {
        Err(CreateError::Store(StoreError::Stopped)) | Ok(_) if stopped() => {
            return Err(CreateError::Interrupted);
        }
        Ok(assembled) => assembled,
        Err(e) => return Err(explain(&uploads, e).await),
    };
    let stats = assembled.stats;
    if stopped() {
        return Err(CreateError::Interrupted);
    }
    let (committed, committer) = tokio::task::spawn_blocking(move || {
        let committed = committer.commit(assembled.item_ids, stats, false);
        (committed, committer)
    })
    .await
    .map_err(|e| CreateError::Aborted(e.to_string()))?;
    let committed = match committed {
        Ok(committed) => committed,
        Err(e) => return Err(explain(&uploads, e).await),
    };
    opened.manifest = committer.manifest;
    opened.manifest_id = committed.manifest_id;
    Ok(CreateReport {
        id: committed.id,
        name: options.name.clone(),
        start: committed.start,
        end: committed.end,
        duration: committed.duration,
        stats,
        by_top: assembled.by_top,
        archive_size: committed.archive_size,
        warnings: assembled.warnings,
        manifest_timestamp: committed.manifest_timestamp,
        notes: committer.notes,
    })
}

/// Puts run in the background, so the part that meets a failed one only knows *that* one
/// failed; the uploader knows why (the repository is full, the connection broke, ...).
async fn explain(store: &ChunkStore, error: CreateError) -> CreateError {
    match error {
        CreateError::Store(StoreError::UploadFailed) => match store.uploader.finish().await {
            Err(cause) => CreateError::Repo(cause),
            Ok(()) => error,
        },
        other => other,
    }
}

/// The files cache as the walk loaded it, and why it could not be used, if it could not; or why
/// it was not loaded.
type LoadedFiles = Result<(Arc<Mutex<FilesCache>>, Option<String>), MemoryError>;

/// A walk started ahead of the repository connection (see `decide`): its batches wait in the
/// channel until the pipeline takes them. Dropping it stops the walk (its next hand-over fails).
pub struct StartedWalk {
    batches: Receiver<Vec<Slot>>,
    halt: Arc<Halt>,
    /// The files cache once the walk has loaded it, and why it could not be used, if it could
    /// not.
    files: tokio::sync::oneshot::Receiver<LoadedFiles>,
}

/// Starts walking `options.roots` now. `stop` (set from a signal handler) stops the whole run.
pub fn start_walk(options: Arc<CreateOptions>, stop: Arc<AtomicBool>) -> StartedWalk {
    let halt = Arc::new(Halt {
        stop,
        failed: AtomicBool::new(false),
        memory: OnceLock::new(),
    });
    let (slots, batches) = sync_channel(BATCHES_AHEAD);
    let walker_halt = halt.clone();
    let (loaded, files) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        // Loaded here, not before the thread starts: the connection is made meanwhile, and a
        // large cache takes a while to read.
        let path = options.files_cache_path();
        if let Some(Err(e)) = options
            .memory
            .map(|budget| budget.check_caches(&[&path], "the files cache"))
        {
            let _ = loaded.send(Err(e));
            return;
        }
        let (cache, note) = FilesCache::load(&path, options.files_cache, options.files_cache_ttl);
        let walker_files = Arc::new(Mutex::new(cache));
        if loaded.send(Ok((walker_files.clone(), note))).is_err() {
            return;
        }
        let owners = Owners::load();
        let mut walker = Walker {
            options: &options.walk,
            stdin: options.stdin.as_ref(),
            owners: &owners,
            files: &walker_files,
            slots,
            batch: Default::default(),
            abort: &walker_halt,
            links: Default::default(),
            skip: options.walk.skip.clone(),
        };
        for root in &options.roots {
            if walker.root(root).is_err() {
                return;
            }
        }
        let _ = walker.send_end();
    });
    StartedWalk {
        batches,
        halt,
        files,
    }
}

fn run_pipeline(
    options: &CreateOptions,
    walk: StartedWalk,
    store: &Arc<ChunkStore>,
    files: &Mutex<FilesCache>,
    progress: &dyn Progress,
    committer: &mut Committer,
) -> Result<Assembled, CreateError> {
    let StartedWalk { batches, halt, .. } = walk;
    let (checkpoint_done, checkpoint_wait) = sync_channel(1);
    let abort = &halt;
    let workers = options.workers.max(1);
    let (decided_tx, decided_rx) = sync_channel(BATCHES_AHEAD);
    let (job_tx, job_rx) = sync_channel(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let seed = store.key().chunk_seed();
    // Dropped when the pipeline ends, however it ends: that ends the memory watch at once.
    let (finished, pipeline_end) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        if let Some(budget) = options.memory {
            scope.spawn(move || watch_memory(budget, abort, pipeline_end));
        }
        for _ in 0..workers {
            let (jobs, store, abort) = (job_rx.clone(), store.clone(), abort.clone());
            let params = options.chunker_params;
            scope.spawn(move || content::worker(jobs, params, seed, store, abort));
        }
        scope.spawn(move || {
            let decider = Decider {
                store,
                stdin: options.stdin.as_ref(),
                jobs: decide::Groups::new(job_tx),
                checkpoint_interval: options.checkpoint_interval,
                checkpoint_done: checkpoint_wait,
                reopener: Reopener::default(),
            };
            decider.run(batches, decided_tx);
        });
        let mut assembler = Assembler::new(
            store,
            files,
            progress,
            options.chunker_params,
            abort,
            committer,
            checkpoint_done,
        );
        let result = assembler.run(decided_rx);
        if result.is_err() {
            // Stop the walk and the workers too.
            abort.fail();
        }
        let result = result.map(|()| assembler.finish()).and_then(|r| r);
        drop(finished);
        result
    })
}

/// Looks at the run's resident memory five times a second until the pipeline ends (`end` hangs
/// up), and stops it (through `halt`) short of what `budget` allows: a clear error instead of
/// the kernel's kill.
fn watch_memory(budget: MemoryBudget, halt: &Halt, end: Receiver<()>) {
    while !halt.halted() {
        if let Err(e) = budget.check_resident() {
            let _ = halt.memory.set(e);
            halt.fail();
            return;
        }
        if end.recv_timeout(std::time::Duration::from_millis(200))
            != Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halt() -> Halt {
        Halt {
            stop: Arc::new(AtomicBool::new(false)),
            failed: AtomicBool::new(false),
            memory: OnceLock::new(),
        }
    }

    #[test]
    fn the_memory_watch_stops_a_run_past_its_budget_and_ends_with_the_pipeline() {
        let tight = MemoryBudget::from_cgroup("1048576").unwrap();
        let (_running, end) = std::sync::mpsc::channel();
        let stopped = halt();
        watch_memory(tight, &stopped, end);
        assert!(stopped.halted());
        assert!(matches!(
            stopped.memory.get(),
            Some(MemoryError::Reached { limit_mib: 1, .. })
        ));

        let roomy = MemoryBudget::from_cgroup(&(1u64 << 50).to_string()).unwrap();
        let (finished, end) = std::sync::mpsc::channel::<()>();
        let running = halt();
        std::thread::scope(|scope| {
            let watch = scope.spawn(|| watch_memory(roomy, &running, end));
            drop(finished);
            watch.join().unwrap();
        });
        assert!(!running.halted() && running.memory.get().is_none());
    }
}
