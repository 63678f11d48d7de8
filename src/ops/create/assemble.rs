//! The assembler: takes the walk's slots strictly in walk order, fills in each file's chunk
//! list when its content worker is done, resolves hardlinks, writes the item stream and asks
//! the committer for checkpoints (the pipeline is drawn in `create`'s module notes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::format::archive::ItemStreamWriter;
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::envelope::ObjectId;
use crate::format::item::{Item, ItemKind};

use super::commit::Committer;
use super::content::{self, FileOutcome, FileRead};
use super::files_cache::FilesCache;
use super::store::ChunkStore;
use super::walk::{InodeKey, Place, Reopener, Slot};
use super::{ContentStats, CreateError, Halt, Progress, StatsByTop};

/// What the assembler produced.
pub(super) struct Assembled {
    pub item_ids: Vec<ObjectId>,
    pub stats: ContentStats,
    pub by_top: StatsByTop,
    pub warnings: u64,
}

/// Stores item-stream chunks as one batch and appends their ids to `ids`.
fn store_stream_chunks(
    store: &ChunkStore,
    chunks: Vec<Vec<u8>>,
    ids: &mut Vec<ObjectId>,
) -> Result<(), CreateError> {
    ids.extend(store.store_all(&chunks)?.iter().map(|s| s.chunk.id));
    Ok(())
}

/// Takes the walk's slots in order and turns them into the item stream.
pub(super) struct Assembler<'a> {
    store: &'a Arc<ChunkStore>,
    files: &'a Mutex<FilesCache>,
    progress: &'a dyn Progress,
    writer: ItemStreamWriter,
    item_ids: Vec<ObjectId>,
    stats: ContentStats,
    by_top: StatsByTop,
    warnings: u64,
    /// Hardlink masters stored so far: inode → archive path.
    masters: HashMap<InodeKey, Vec<u8>>,
    /// For a follower that has to be read after all (its master failed).
    chunker: Chunker,
    abort: &'a Halt,
    committer: &'a mut Committer,
    /// Tells `decide` that a checkpoint is written.
    checkpoint_done: SyncSender<()>,
}

impl<'a> Assembler<'a> {
    pub fn new(
        store: &'a Arc<ChunkStore>,
        files: &'a Mutex<FilesCache>,
        progress: &'a dyn Progress,
        chunker_params: ChunkerParams,
        abort: &'a Halt,
        committer: &'a mut Committer,
        checkpoint_done: SyncSender<()>,
    ) -> Assembler<'a> {
        let seed = store.key().chunk_seed();
        Assembler {
            store,
            files,
            progress,
            writer: ItemStreamWriter::new(seed),
            item_ids: Vec::new(),
            stats: ContentStats::default(),
            by_top: StatsByTop::new(),
            warnings: 0,
            masters: HashMap::new(),
            chunker: Chunker::new(chunker_params, seed),
            abort,
            committer,
            checkpoint_done,
        }
    }
}

impl Assembler<'_> {
    pub fn run(&mut self, batches: Receiver<Vec<Slot>>) -> Result<(), CreateError> {
        let mut complete = false;
        for slot in batches.into_iter().flatten() {
            match slot {
                Slot::End => complete = true,
                Slot::Checkpoint => {
                    store_stream_chunks(self.store, self.writer.flush(), &mut self.item_ids)?;
                    self.committer
                        .commit(self.item_ids.clone(), self.stats, true)?;
                    // Failing to send means `decide` is gone; the walk's end tells the rest.
                    let _ = self.checkpoint_done.send(());
                }
                Slot::File { fs_path, .. }
                | Slot::Unchanged { fs_path, .. }
                | Slot::Stream {
                    item: Item { path: fs_path, .. },
                } => {
                    return Err(CreateError::Aborted(format!(
                        "{} reached the assembler undecided",
                        String::from_utf8_lossy(&fs_path)
                    )));
                }
                Slot::Ready {
                    packed,
                    status,
                    fs_path,
                    master,
                    reused,
                } => {
                    if status != 'd' {
                        self.progress.file_status(status, &fs_path);
                    }
                    if let Some(reused) = reused {
                        self.stats.add_reused(reused.size, reused.csize);
                        self.top_stats(&fs_path)
                            .add_reused(reused.size, reused.csize);
                        self.progress.content(reused.size, 0);
                    }
                    self.emit_packed(&packed, master)?;
                }
                Slot::Reading {
                    item,
                    status,
                    fs_path,
                    master,
                    memorize,
                    fatal_errors,
                    outcome,
                } => {
                    self.progress.file_status(status, &fs_path);
                    let outcome = outcome.recv().map_err(|_| {
                        CreateError::Aborted("a content worker stopped unexpectedly".into())
                    })?;
                    if let (true, FileOutcome::Unreadable(e)) = (fatal_errors, &outcome) {
                        return Err(CreateError::Input(format!(
                            "{}: {e}",
                            String::from_utf8_lossy(&fs_path)
                        )));
                    }
                    if let Some((read, item)) = self.content_outcome(item, &fs_path, outcome)? {
                        if !read.changed
                            && let Some((path_hash, stat)) = memorize
                        {
                            let refs = read.chunks.iter().map(|s| s.chunk).collect();
                            let ext = item.xattrs.is_some()
                                || item.acl_access.is_some()
                                || item.acl_default.is_some()
                                || item.bsdflags.is_some();
                            self.files
                                .lock()
                                .expect("not poisoned")
                                .memorize(path_hash, &stat, ext, refs);
                        }
                        self.emit(&item, master)?;
                    }
                }
                Slot::Follower {
                    mut item,
                    fs_path,
                    inode,
                    place,
                } => {
                    if let Some(master) = self.masters.get(&inode) {
                        item.source = Some(master.clone());
                        self.progress.file_status('h', &fs_path);
                        self.emit(&item, None)?;
                    } else {
                        self.promote(item, &fs_path, inode, &place)?;
                    }
                }
                Slot::Status { status, fs_path } => self.progress.file_status(status, &fs_path),
                Slot::Problem { fs_path, message } => self.problem(&fs_path, &message),
            }
        }
        if complete || self.abort.halted() {
            Ok(())
        } else {
            Err(CreateError::Aborted(
                "the walk ended early (a content worker stopped)".into(),
            ))
        }
    }

    fn problem(&mut self, fs_path: &[u8], message: &str) {
        self.warnings += 1;
        self.progress.warning(message);
        if !fs_path.is_empty() {
            self.progress.file_status('E', fs_path);
        }
    }

    /// Completes a file item from what its reader found; `None` if it could not be read.
    fn content_outcome(
        &mut self,
        mut item: Item,
        fs_path: &[u8],
        outcome: FileOutcome,
    ) -> Result<Option<(FileRead, Item)>, CreateError> {
        let read = match outcome {
            FileOutcome::Read(read) => read,
            FileOutcome::Unreadable(e) => {
                let message = format!("{}: read: {e}", String::from_utf8_lossy(fs_path));
                self.problem(fs_path, &message);
                return Ok(None);
            }
            FileOutcome::Failed(e) => return Err(e.into()),
        };
        self.stats.add_read(&read.chunks);
        self.top_stats(fs_path).add_read(&read.chunks);
        let size: u64 = read.chunks.iter().map(|s| s.chunk.size).sum();
        let uploaded = read
            .chunks
            .iter()
            .filter(|s| s.new)
            .map(|s| s.chunk.csize)
            .sum();
        self.progress.content(size, uploaded);
        item.size = Some(size);
        item.chunks = Some(read.chunks.iter().map(|s| s.chunk).collect());
        if read.changed {
            self.warnings += 1;
            self.progress.warning(&format!(
                "{}: file changed while we backed it up",
                String::from_utf8_lossy(fs_path)
            ));
            self.progress.file_status('C', fs_path);
        }
        Ok(Some((read, item)))
    }

    /// A follower whose master could not be stored becomes the master itself, as in borg,
    /// where the first path that makes it into the archive is the master. A regular file is
    /// read here, opened again like any walked file (see `Place`) and checked to be the inode
    /// the walk saw.
    fn promote(
        &mut self,
        mut item: Item,
        fs_path: &[u8],
        inode: InodeKey,
        place: &Place,
    ) -> Result<(), CreateError> {
        item.hardlink_master = Some(true);
        if item.kind() != ItemKind::Regular {
            let status = match item.kind() {
                ItemKind::Fifo => 'f',
                ItemKind::CharDevice => 'c',
                _ => 'b',
            };
            self.progress.file_status(status, fs_path);
            return self.emit(&item, Some(inode));
        }
        self.progress.file_status('A', fs_path);
        let (file, st) = match Reopener::default().open(place, fs_path, inode.1) {
            Ok(opened) => opened,
            Err(e) => {
                self.problem(fs_path, &e.to_string());
                return Ok(());
            }
        };
        let source = content::Source::File {
            file,
            ctime: st.ctime_ns(),
        };
        let mut outcomes = content::read_files(
            vec![source],
            &mut self.chunker,
            &mut content::Batch::default(),
            self.store,
            self.abort,
        );
        let outcome = outcomes.pop().expect("one outcome per source");
        if let Some((_, item)) = self.content_outcome(item, fs_path, outcome)? {
            self.emit(&item, Some(inode))?;
        }
        Ok(())
    }

    /// Appends an item to the item stream, storing the stream's chunks as they complete.
    fn emit(&mut self, item: &Item, master: Option<InodeKey>) -> Result<(), CreateError> {
        self.emit_packed(
            &item.to_value().to_bytes(),
            master.map(|inode| (inode, item.path.clone())),
        )
    }

    /// [`Assembler::emit`] of an item packed earlier; `master`: its inode and path, if it is a
    /// hardlink master.
    fn emit_packed(
        &mut self,
        packed: &[u8],
        master: Option<(InodeKey, Vec<u8>)>,
    ) -> Result<(), CreateError> {
        let chunks = self.writer.push_packed(packed);
        store_stream_chunks(self.store, chunks, &mut self.item_ids)?;
        if let Some((inode, path)) = master {
            self.masters.insert(inode, path);
        }
        Ok(())
    }

    /// The figures of the top-level name `fs_path` is under (its first component).
    fn top_stats(&mut self, fs_path: &[u8]) -> &mut ContentStats {
        let relative = fs_path.strip_prefix(b"/").unwrap_or(fs_path);
        let top = relative.split(|b| *b == b'/').next().unwrap_or_default();
        // A handful of names: a list searched is cheaper than a map.
        let at = match self.by_top.iter().position(|(name, _)| name == top) {
            Some(at) => at,
            None => {
                self.by_top.push((top.to_vec(), ContentStats::default()));
                self.by_top.len() - 1
            }
        };
        &mut self.by_top[at].1
    }

    pub fn finish(self) -> Result<Assembled, CreateError> {
        let mut item_ids = self.item_ids;
        store_stream_chunks(self.store, self.writer.finish(), &mut item_ids)?;
        Ok(Assembled {
            item_ids,
            stats: self.stats,
            by_top: self.by_top,
            warnings: self.warnings,
        })
    }
}
