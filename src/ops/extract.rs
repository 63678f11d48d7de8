//! `extract`: restore an archive's items into a directory.
//!
//! Two stages run concurrently:
//!
//! - the **planner** (async) walks the item stream, decides what is extracted where (path
//!   filters, `--strip-components`, hardlinks), and starts the fetch of every content chunk as
//!   soon as it sees it — each fetch is a task that also decrypts and decompresses, so all cores
//!   work and the server always has requests queued. A byte budget bounds the chunks in flight,
//!   so memory stays flat however large the archive;
//! - the **writer** (one blocking thread) takes the plan in archive order and does the file
//!   system work, waiting for each chunk only when it needs it.
//!
//! Directories get their attributes after their contents, when the writer leaves them (borg
//! does the same), so restoring files inside does not disturb a directory's mtime or trip over a
//! read-only mode.
//!
//! Hardlinks are borg 1.x's: the first item of a group (the master) has the content, later ones
//! (slaves) name it in `source`. When path filters leave the master out, the first selected
//! slave gets the master's content and the others link to it, as borg does.
//!
//! A file that cannot be written completely is removed, so what is left are complete files;
//! when data cannot be read from the repository the restore stops and says it is incomplete.
//!
//! With `keep_existing` the extract only adds: whatever exists at an item's target is left as
//! it is (a directory keeps its attributes), and an item is not even fetched then. A
//! [`Placer`] may decide, item by item, whether and where each selected item goes, and where
//! its content is written before it is renamed into place (a maildir's `tmp/`).

use std::collections::{HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::error::ErrorKind;
use crate::format::envelope::ObjectKey;
use crate::format::item::{ChunkRef, Item, ItemKind};
use crate::repo::repository::SharedRepository;

use super::dir_handle::DirHandle;
use super::fs_write::{self, Target};
use super::items::{Archive, ReadError, join, spawn_fetch, stream_items};
use super::owners::Owners;
use super::select::{self, PathSelection};

/// The setuid and setgid bits of a mode.
const SET_ID_BITS: u32 = 0o6000;

/// Plaintext bytes of content chunks fetched ahead of the writer.
const BYTES_AHEAD: usize = 32 << 20;

/// Decides where a selected item is restored, after the path filters and
/// `--strip-components`: its caller's knowledge of a layout (a maildir's folders) that the
/// extract has none of.
pub trait Placer: Send + Sync + std::fmt::Debug {
    /// `None` leaves the item out; `target` is where it would go.
    fn place(&self, item: &Item, target: PathBuf) -> Option<Placement>;
}

/// Where a selected item goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub target: PathBuf,
    /// For a regular file: the directory its content is written in under a temporary name
    /// before it is renamed to `target` (same file system); beside `target` when `None` or
    /// when the directory does not exist.
    pub staging: Option<PathBuf>,
}

#[derive(Clone, Debug, Default)]
pub struct ExtractOptions {
    /// Where to restore to (borg: the working directory).
    pub destination: PathBuf,
    /// Only items at or below these archive paths (borg's default `pp:` path prefixes).
    pub paths: Vec<Vec<u8>>,
    pub strip_components: usize,
    pub numeric_ids: bool,
    /// Read and verify everything, write nothing.
    pub dry_run: bool,
    /// Leave holes where a chunk is all zeros.
    pub sparse: bool,
    /// Write each regular file under a temporary name and rename it into place when it is
    /// complete, so a file that was there before stays whole until its replacement is.
    pub replace_atomically: bool,
    /// Directories (below the destination) to make equal to the archive: after a complete
    /// extract, whatever is in them that the archive does not hold is removed.
    pub mirror: Vec<PathBuf>,
    /// Also restore the directories above the `paths` (themselves, not their other contents),
    /// so a missing parent is made with its archived owner and mode, not root's 0700.
    pub parents: bool,
    /// Clear the setuid and setgid bits of everything but directories (each with a warning):
    /// a restore into a mail server's volumes has no reason to make privileged programs, and a
    /// crafted archive would. On a directory setgid only hands its group on (postfix's `public`
    /// is 2710), so it stays.
    pub no_set_id_files: bool,
    /// Never replace, remove or change anything that exists: an item whose target exists is
    /// left out (not fetched), and a file is renamed into place only if nothing took its name
    /// meanwhile. Needs `replace_atomically`.
    pub keep_existing: bool,
    pub placer: Option<std::sync::Arc<dyn Placer>>,
}

#[derive(Debug, Default)]
pub struct ExtractStats {
    pub items: u64,
    pub bytes: u64,
    /// Entries removed from the mirrored directories.
    pub removed: u64,
    /// Items left out because their target exists (`keep_existing`).
    pub kept: u64,
    /// Things that did not fully work but did not stop the restore (borg's exit code 1).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{path}: {source}; the restore is incomplete")]
    Content { path: String, source: ReadError },
    #[error("{0}; the restore is incomplete")]
    Read(#[from] ReadError),
    #[error(transparent)]
    Pattern(#[from] super::patterns::PatternError),
    #[error("the archive's item {path} is inconsistent: {detail}")]
    Inconsistent { path: String, detail: String },
}

impl ExtractError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExtractError::Content { source, .. } | ExtractError::Read(source) => source.kind(),
            ExtractError::Pattern(_) => ErrorKind::BadInput,
            ExtractError::Inconsistent { .. } => ErrorKind::Integrity,
        }
    }
}

/// A piece of fetched content and its share of the byte budget.
struct Fetched {
    task: JoinHandle<Result<Vec<u8>, ReadError>>,
    _budget: OwnedSemaphorePermit,
}

/// One step for the writer, in archive order.
enum Step {
    /// Make `item` at `target`; a regular file's `chunks` follow as `Chunk` steps.
    Make {
        item: Box<Item>,
        target: PathBuf,
        staging: Option<PathBuf>,
        chunks: usize,
    },
    /// Link `target` to the already extracted `existing`.
    Link {
        target: PathBuf,
        existing: PathBuf,
    },
    Chunk(Fetched),
    /// A planner-side problem with one item that does not stop the restore.
    Warn(String),
    /// An item left out because its target exists.
    Kept,
    Fail(ExtractError),
    /// The whole archive was planned. Without it, a plan that ended is a cut-off one (the
    /// planner was stopped), and nothing may be removed as "not in the archive".
    Done,
}

pub async fn extract(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    archive: &Archive,
    options: &ExtractOptions,
) -> Result<ExtractStats, ExtractError> {
    let (tx, rx) = mpsc::channel(1024);
    let planner = tokio::spawn(plan(
        repo.clone(),
        key.clone(),
        archive.meta.items.clone(),
        options.clone(),
        tx,
    ));
    let writer_options = options.clone();
    let runtime = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || write(rx, &writer_options, &runtime))
        .await
        .map_err(|e| ReadError::Interrupted(e.to_string()))?;
    planner.abort();
    written
}

/// An archive path that would reach outside the destination: the item is skipped, with a
/// warning.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("skipping {0}: the archive path is not relative and local")]
struct UnsafePath(String);

/// The path `item` should be restored to, or `None` if it is not selected or stripped away.
fn target_path(
    path: &[u8],
    is_dir: bool,
    selection: &mut PathSelection,
    options: &ExtractOptions,
) -> Result<Option<PathBuf>, UnsafePath> {
    let components = select::components(path);
    if path.starts_with(b"/") || components.iter().any(|c| *c == b"..") {
        return Err(UnsafePath(String::from_utf8_lossy(path).into_owned()));
    }
    let above_a_path = || {
        options.paths.iter().any(|p| {
            let below = select::components(p);
            below.len() > components.len() && below.starts_with(&components)
        })
    };
    let selected = selection.selects(path) || (options.parents && is_dir && above_a_path());
    if !selected {
        return Ok(None);
    }
    if options.strip_components > 0 && components.len() <= options.strip_components {
        return Ok(None);
    }
    let mut target = options.destination.clone();
    for c in &components[options.strip_components.min(components.len())..] {
        target.push(std::ffi::OsStr::from_bytes(c));
    }
    Ok(Some(target))
}

/// Where the content of a hardlink group ended up, or its chunks while nothing has it yet.
enum Master {
    Extracted(PathBuf),
    Unextracted(Vec<ChunkRef>),
}

async fn plan(
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    item_chunks: Vec<[u8; 32]>,
    options: ExtractOptions,
    tx: mpsc::Sender<Step>,
) {
    let budget = Arc::new(Semaphore::new(BYTES_AHEAD >> 10));
    let mut batches = stream_items(repo.clone(), key.clone(), item_chunks);
    let mut masters: HashMap<Vec<u8>, Master> = HashMap::new();
    let mut selection = match PathSelection::new(&options.paths) {
        Ok(selection) => selection,
        Err(e) => {
            let _ = tx.send(Step::Fail(ExtractError::Pattern(e))).await;
            return;
        }
    };
    let fetch = |chunk: &ChunkRef| {
        let repo = repo.clone();
        let key = key.clone();
        let budget = budget.clone();
        let chunk = *chunk;
        async move {
            let kib = (chunk.size as usize)
                .div_ceil(1024)
                .clamp(1, BYTES_AHEAD >> 10);
            let permit = budget
                .acquire_many_owned(kib as u32)
                .await
                .expect("budget semaphore is never closed");
            Fetched {
                task: spawn_fetch(&repo, &key, chunk.id, Some(chunk.size as usize)),
                _budget: permit,
            }
        }
    };
    while let Some(batch) = batches.recv().await {
        let items = match batch {
            Ok(items) => items,
            Err(e) => {
                let _ = tx.send(Step::Fail(e.into())).await;
                return;
            }
        };
        for item in items {
            let is_dir = item.kind() == ItemKind::Directory;
            let target = match target_path(&item.path, is_dir, &mut selection, &options) {
                Ok(target) => target,
                Err(unsafe_path) => {
                    if tx.send(Step::Warn(unsafe_path.to_string())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let placement = target.and_then(|target| match &options.placer {
                Some(placer) => placer.place(&item, target),
                None => Some(Placement {
                    target,
                    staging: None,
                }),
            });
            // What exists is kept: left out here, before its content is fetched.
            let (placement, kept) = match placement {
                Some(p)
                    if options.keep_existing && std::fs::symlink_metadata(&p.target).is_ok() =>
                {
                    (None, true)
                }
                other => (other, false),
            };
            if kept && tx.send(Step::Kept).await.is_err() {
                return;
            }
            let (target, staging) = match placement {
                Some(Placement { target, staging }) => (Some(target), staging),
                None => (None, None),
            };
            let kind = item.kind();
            let mut content = item.chunks.clone().unwrap_or_default();
            if item.is_hardlink_slave() {
                let source = item.source.clone().unwrap_or_default();
                match (masters.get(&source), &target) {
                    (_, None) => continue,
                    (Some(Master::Extracted(existing)), Some(target)) => {
                        let step = Step::Link {
                            existing: existing.clone(),
                            target: target.clone(),
                        };
                        if tx.send(step).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    (Some(Master::Unextracted(chunks)), Some(target)) => {
                        content = chunks.clone();
                        masters.insert(source, Master::Extracted(target.clone()));
                    }
                    (None, Some(_)) => {
                        let step = Step::Fail(ExtractError::Inconsistent {
                            path: String::from_utf8_lossy(&item.path).into_owned(),
                            detail: "a hardlink to a file that is not in the archive before it"
                                .into(),
                        });
                        let _ = tx.send(step).await;
                        return;
                    }
                }
            } else if item.hardlink_master == Some(true) {
                let master = match &target {
                    Some(target) => Master::Extracted(target.clone()),
                    None => Master::Unextracted(content.clone()),
                };
                masters.insert(item.path.clone(), master);
            }
            let Some(target) = target else {
                continue;
            };
            let chunks = if kind == ItemKind::Regular {
                content.len()
            } else {
                0
            };
            let mut item = Box::new(item);
            item.chunks = Some(content.clone());
            if tx
                .send(Step::Make {
                    item,
                    target,
                    staging,
                    chunks,
                })
                .await
                .is_err()
            {
                return;
            }
            // Only a regular file's content is written; a crafted archive may give chunks to a
            // directory or a link, which are not fetched at all.
            for chunk in content.iter().take(chunks) {
                if tx.send(Step::Chunk(fetch(chunk).await)).await.is_err() {
                    return;
                }
            }
        }
    }
    for warning in selection.unmatched_warnings() {
        if tx.send(Step::Warn(warning)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Step::Done).await;
}

/// The writer: executes the plan on the file system (or only reads it, for a dry run).
///
/// As in borg, a file system problem with one item (a non-empty directory where a file belongs,
/// a symlinked parent, no permission) skips that item with a warning; only a problem with the
/// repository's data stops the restore.
fn write(
    mut rx: mpsc::Receiver<Step>,
    options: &ExtractOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<ExtractStats, ExtractError> {
    let mut writer = Writer {
        options,
        owners: Owners::load(),
        stats: ExtractStats::default(),
        open_dirs: Vec::new(),
        known_dirs: HashSet::new(),
        extracted: HashSet::new(),
        parts: 0,
    };
    let mut done = false;
    while let Some(step) = rx.blocking_recv() {
        match step {
            Step::Done => done = true,
            Step::Warn(warning) => writer.stats.warnings.push(warning),
            Step::Kept => writer.stats.kept += 1,
            Step::Fail(e) => return Err(e),
            // The reader sends chunks only right after their file, which takes them all.
            Step::Chunk(_) => {
                return Err(ExtractError::Inconsistent {
                    path: "(none)".into(),
                    detail: "file content without a file".into(),
                });
            }
            // A link shares the inode, and with it the attributes, of what it links to.
            Step::Link { target, existing } => {
                if let Some(parent_known) = writer.enter(&target) {
                    let linked = writer
                        .make_room(&target, parent_known)
                        .and_then(|()| std::fs::hard_link(&existing, &target));
                    writer.warn_on(&target, "link", linked);
                }
            }
            Step::Make {
                item,
                target,
                staging,
                chunks,
            } => {
                let allowed = writer.enter(&target);
                match (item.kind(), allowed) {
                    (ItemKind::Regular, _) => {
                        let staging = staging.filter(|_| allowed.is_some());
                        let written_at = writer.write_path(&target, staging.as_deref());
                        let destination = allowed.map(|known| (written_at.as_path(), known));
                        let written =
                            write_file(&mut rx, destination, &item, chunks, options, runtime)
                                .inspect_err(|_| {
                                    // Nothing half-written may look like a restored file.
                                    if allowed.is_some() {
                                        let _ = std::fs::remove_file(&written_at);
                                    }
                                })?;
                        if allowed.is_some() {
                            writer.finish_file(&written_at, &target, &item, written);
                        }
                    }
                    (_, None) => {}
                    (ItemKind::Directory, Some(parent_known)) if options.keep_existing => {
                        // One that appeared meanwhile is someone else's: its attributes stay.
                        let made = writer
                            .make_room(&target, parent_known)
                            .and_then(|()| std::fs::create_dir(&target));
                        match made {
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                writer.stats.kept += 1;
                            }
                            made => {
                                if writer.warn_on(&target, "mkdir", made) {
                                    // Its owner and mode at once, not only when it is left: a
                                    // restore cut off inside must not leave a root-owned
                                    // directory that a later one keeps as it is.
                                    writer.restore_attrs(Target::Path(&target), &target, &item);
                                    writer.known_dirs.insert(target.clone());
                                    writer.open_dirs.push((target, item));
                                }
                            }
                        }
                    }
                    (ItemKind::Directory, Some(parent_known)) => {
                        let made = fs_write::make_dir(&target, parent_known);
                        if writer.warn_on(&target, "mkdir", made) {
                            writer.known_dirs.insert(target.clone());
                            writer.open_dirs.push((target, item));
                        }
                    }
                    (ItemKind::Socket | ItemKind::Unknown, _) => {
                        writer.stats.warnings.push(format!(
                            "{}: skipped, items of this type cannot be restored",
                            target.display()
                        ))
                    }
                    (_, Some(parent_known)) => {
                        let made = writer
                            .make_room(&target, parent_known)
                            .and_then(|()| fs_write::make_special(&target, &item));
                        if writer.warn_on(&target, "create", made) {
                            writer.restore_attrs(Target::Path(&target), &target, &item);
                        }
                    }
                }
            }
        }
    }
    writer.leave_dirs(None);
    if !done {
        return Err(ReadError::Interrupted("the extract was stopped before its end".into()).into());
    }
    for root in &options.mirror {
        writer.mirror(root);
    }
    if options.replace_atomically {
        // Into live volumes: what the restore reports as done must survive a power loss.
        super::durable::sync_all_file_systems();
    }
    Ok(writer.stats)
}

/// The writer's state between steps.
struct Writer<'o> {
    options: &'o ExtractOptions,
    owners: Owners,
    stats: ExtractStats,
    /// Directories entered and not yet left, outermost first, with their items.
    open_dirs: Vec<(PathBuf, Box<Item>)>,
    /// Directories known to exist as real directories, not symlinks.
    known_dirs: HashSet<PathBuf>,
    /// Every path the archive put in place, when directories are mirrored.
    extracted: HashSet<PathBuf>,
    /// Temporary files made so far, for unique names.
    parts: u64,
}

impl Writer<'_> {
    /// Called for every item before it is made: leaves the directories it is not in and counts
    /// it. `None` if it must not be written (never in a dry run, never below a symlink), else
    /// whether its parent is known to exist already.
    fn enter(&mut self, target: &Path) -> Option<bool> {
        self.leave_dirs(Some(target));
        self.stats.items += 1;
        if !self.options.mirror.is_empty() {
            self.extracted.insert(target.to_path_buf());
        }
        if self.options.dry_run {
            return None;
        }
        match fs_write::check_parents(&self.options.destination, target, &mut self.known_dirs) {
            Ok(()) => Some(target.parent().is_some_and(|p| self.known_dirs.contains(p))),
            Err(warning) => {
                self.stats
                    .warnings
                    .push(format!("{}: {warning}", target.display()));
                None
            }
        }
    }

    /// Makes room for a new entry at `target` ([`fs_write::prepare_in`]); with `keep_existing`
    /// only its parents, so that whatever is there makes the creation fail instead.
    fn make_room(&self, target: &Path, parent_known: bool) -> std::io::Result<()> {
        if self.options.keep_existing {
            fs_write::make_parents(target, parent_known)
        } else {
            fs_write::prepare_in(target, parent_known)
        }
    }

    /// Applies the attributes of the directories that `next` is not inside of.
    fn leave_dirs(&mut self, next: Option<&Path>) {
        while let Some((dir, _)) = self.open_dirs.last() {
            if next.is_some_and(|p| p.starts_with(dir) && p != dir) {
                break;
            }
            let (dir, item) = self.open_dirs.pop().expect("non-empty");
            self.restore_attrs(Target::Path(&dir), &dir, &item);
        }
    }

    fn restore_attrs(&mut self, target: Target, path: &Path, item: &Item) {
        let set_id = item.mode.unwrap_or(0) & SET_ID_BITS;
        let stripped;
        let item =
            if self.options.no_set_id_files && set_id != 0 && item.kind() != ItemKind::Directory {
                self.stats.warnings.push(format!(
                    "{}: setuid/setgid bits cleared (mode {:o} in the archive)",
                    path.display(),
                    item.mode.unwrap_or(0) & 0o7777
                ));
                stripped = Item {
                    mode: item.mode.map(|m| m & !SET_ID_BITS),
                    ..item.clone()
                };
                &stripped
            } else {
                item
            };
        let warnings = fs_write::apply_attrs(target, item, &self.owners, self.options.numeric_ids);
        self.stats.warnings.extend(
            warnings
                .into_iter()
                .map(|w| format!("{}: {w}", path.display())),
        );
    }

    /// Records a failed operation as a warning; returns whether it succeeded.
    fn warn_on(&mut self, path: &Path, operation: &str, result: std::io::Result<()>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                self.stats
                    .warnings
                    .push(format!("{}: {operation}: {e}", path.display()));
                false
            }
        }
    }

    /// Where the content of a file for `target` is written: `target` itself, or a temporary
    /// name when files replace their predecessors atomically — in `staging`, made like
    /// `target`'s directory if the archive has not brought it yet (a maildir's `tmp/` comes
    /// after `cur/` and `new/`), else beside `target` when it cannot be made.
    fn write_path(&mut self, target: &Path, staging: Option<&Path>) -> PathBuf {
        if !self.options.replace_atomically {
            return target.to_path_buf();
        }
        self.parts += 1;
        let name = format!(".mailcow-borg-part-{}-{}", std::process::id(), self.parts);
        match staging {
            Some(dir) if self.known_dirs.contains(dir) || make_like(dir, target).is_ok() => {
                self.known_dirs.insert(dir.to_path_buf());
                dir.join(name)
            }
            _ => target.with_file_name(name),
        }
    }

    /// Gives the file written at `written_at` its attributes and, if that was a temporary
    /// name, moves it to `target`; a file that failed is removed.
    fn finish_file(
        &mut self,
        written_at: &Path,
        target: &Path,
        item: &Item,
        written: std::io::Result<(u64, Option<std::fs::File>)>,
    ) {
        let placed = written.and_then(|(bytes, file)| {
            self.stats.bytes += bytes;
            if let Some(file) = file {
                self.restore_attrs(Target::File(&file), target, item);
            }
            if written_at == target {
                Ok(())
            } else if self.options.keep_existing {
                fs_write::rename_no_replace(written_at, target)
            } else {
                std::fs::rename(written_at, target)
            }
        });
        if let Err(e) = placed {
            let _ = std::fs::remove_file(written_at);
            if self.options.keep_existing && e.kind() == std::io::ErrorKind::AlreadyExists {
                self.stats.kept += 1;
            } else {
                self.warn_on(target, "write", Err(e));
            }
        }
    }

    /// Removes what is below `root` but was not extracted (`root` itself stays).
    /// Removes from `root` what the archive does not hold, working by descriptor: the volume's
    /// other users may swap a directory for a symlink meanwhile, and no removal may follow it
    /// out of the volume (see `dir_handle`).
    fn mirror(&mut self, root: &Path) {
        match DirHandle::open(root, 0) {
            Ok(dir) => self.mirror_dir(&dir, root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                self.warn_on(root, "open directory", Err(e));
            }
        }
    }

    fn mirror_dir(&mut self, dir: &DirHandle, path: &Path) {
        let entries = match dir.entries() {
            Ok(entries) => entries,
            Err(e) => {
                self.warn_on(path, "read directory", Err(e));
                return;
            }
        };
        for entry in entries {
            let child = path.join(&entry.name);
            if self.extracted.contains(&child) {
                match entry
                    .is_dir(dir)
                    .and_then(|is_dir| is_dir.then(|| dir.open_child(&entry.name, 0)).transpose())
                {
                    Ok(Some(sub)) => self.mirror_dir(&sub, &child),
                    Ok(None) => {}
                    Err(e) => {
                        self.warn_on(&child, "open directory", Err(e));
                    }
                }
                continue;
            }
            let removed = dir.remove(&entry.name).map(drop);
            if self.warn_on(&child, "remove", removed) {
                self.stats.removed += 1;
            }
        }
    }
}

/// The directory `dir`, if it is not there, with the owner and mode of `target`'s directory.
fn make_like(dir: &Path, target: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if dir.is_dir() {
        return Ok(());
    }
    let model = std::fs::metadata(target.parent().unwrap_or(Path::new(".")))?;
    std::fs::create_dir(dir)?;
    std::os::unix::fs::chown(dir, Some(model.uid()), Some(model.gid()))?;
    std::fs::set_permissions(dir, model.permissions())
}

/// Writes one regular file from its chunks, which follow on `rx`, to `target` (with whether
/// its parent is known to exist), or only reads them when there is no target. Returns the size
/// and the still open file, for its attributes. The outer error is fatal (the repository's data
/// could not be read); the inner one concerns this file only, whose chunks are consumed all the
/// same.
fn write_file(
    rx: &mut mpsc::Receiver<Step>,
    target: Option<(&Path, bool)>,
    item: &Item,
    chunks: usize,
    options: &ExtractOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<std::io::Result<(u64, Option<std::fs::File>)>, ExtractError> {
    let shown = || String::from_utf8_lossy(&item.path).into_owned();
    let mut file = target.map(|(path, parent_known)| fs_write::create_file(path, parent_known));
    let mut size = 0u64;
    for _ in 0..chunks {
        let Some(Step::Chunk(fetched)) = rx.blocking_recv() else {
            return Err(ExtractError::Inconsistent {
                path: shown(),
                detail: "its content ended early".into(),
            });
        };
        let data =
            runtime
                .block_on(join(fetched.task))
                .map_err(|source| ExtractError::Content {
                    path: shown(),
                    source,
                })?;
        size += data.len() as u64;
        if let Some(Ok(f)) = file.as_mut() {
            let result = if options.sparse && data.iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(data.len() as i64)).map(drop)
            } else {
                f.write_all(&data)
            };
            if let Err(e) = result {
                file = Some(Err(e));
            }
        }
    }
    if let Some(expected) = item.size
        && expected != size
    {
        return Err(ExtractError::Inconsistent {
            path: shown(),
            detail: format!("its chunks hold {size} bytes, its size says {expected}"),
        });
    }
    Ok(match file {
        // A sparse file ending in a hole needs its length set explicitly.
        Some(Ok(f)) if options.sparse => f.set_len(size).map(|()| (size, Some(f))),
        Some(Ok(f)) => Ok((size, Some(f))),
        Some(Err(e)) => Err(e),
        None => Ok((size, None)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_filters_and_strip_components() {
        let options = ExtractOptions {
            destination: PathBuf::from("/dest"),
            paths: vec![b"a/b".to_vec()],
            strip_components: 1,
            ..Default::default()
        };
        let mut selection = PathSelection::new(&options.paths).unwrap();
        let mut target = |p: &[u8]| target_path(p, false, &mut selection, &options);
        assert_eq!(target(b"a/b/c"), Ok(Some(PathBuf::from("/dest/b/c"))));
        assert_eq!(target(b"a/b"), Ok(Some(PathBuf::from("/dest/b"))));
        assert_eq!(target(b"a/bc"), Ok(None));
        assert_eq!(target(b"a"), Ok(None));
        assert!(target(b"a/b/../../etc").is_err());
        assert!(target(b"/etc/passwd").is_err());
        let all = ExtractOptions {
            destination: PathBuf::from("/dest"),
            ..Default::default()
        };
        assert_eq!(
            target_path(b".", true, &mut PathSelection::default(), &all),
            Ok(Some(PathBuf::from("/dest")))
        );
    }

    #[test]
    fn with_parents_the_directories_above_a_path_are_selected_alone() {
        let options = ExtractOptions {
            destination: PathBuf::from("/dest"),
            paths: vec![b"vmail/example.org/user".to_vec()],
            parents: true,
            ..Default::default()
        };
        let mut selection = PathSelection::new(&options.paths).unwrap();
        let mut target = |p: &[u8], dir| target_path(p, dir, &mut selection, &options);
        let at = |p: &str| Ok(Some(PathBuf::from(p)));
        assert_eq!(target(b"vmail", true), at("/dest/vmail"));
        assert_eq!(
            target(b"vmail/example.org", true),
            at("/dest/vmail/example.org")
        );
        assert_eq!(target(b"vmail/example.org/other", true), Ok(None));
        assert_eq!(target(b"vmail/example.org/file", false), Ok(None));
        assert_eq!(
            target(b"vmail/example.org/user/cur", true),
            at("/dest/vmail/example.org/user/cur")
        );
        assert_eq!(target(b"vmail/example.net", true), Ok(None));
    }
}
