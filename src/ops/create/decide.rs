//! Between the walk and the assembler: for each regular file, settle what the files cache said.
//! An unchanged file whose chunks the repository still has is complete at once (`U`: its item
//! is packed here, off the walk's thread, which is the one that cannot keep up); any other
//! file is opened again and handed to a content worker (`A` new, `M` changed).
//!
//! This is its own stage, not part of the walk, because it needs the repository (the chunk
//! index) and the walk does not: the walk starts while the SSH connection and `borg serve` are
//! still starting (a few hundred milliseconds, as long as a whole unchanged maildir backup
//! takes), and this stage catches up when they are ready.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::format::envelope::ObjectId;
use crate::format::item::Item;

use super::StreamInput;
use super::content::{FileJob, GROUP_BYTES, GROUP_FILES, Source};
use super::files_cache::FileStat;
use super::store::ChunkStore;
use super::walk::{InodeKey, Place, Reopener, Slot};

/// Files for the content workers, handed out in groups ([`super::content`] says why).
pub struct Groups {
    workers: SyncSender<Vec<FileJob>>,
    group: Vec<FileJob>,
    bytes: u64,
}

impl Groups {
    pub fn new(workers: SyncSender<Vec<FileJob>>) -> Groups {
        Groups {
            workers,
            group: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a file of `size` bytes (as the walk saw it); `None` if the workers are gone.
    fn add(&mut self, job: FileJob, size: u64) -> Option<()> {
        self.group.push(job);
        self.bytes = self.bytes.saturating_add(size);
        if self.group.len() >= GROUP_FILES || self.bytes >= GROUP_BYTES as u64 {
            self.flush()?;
        }
        Some(())
    }

    /// Hands out the files collected so far; `None` if the workers are gone.
    fn flush(&mut self) -> Option<()> {
        if self.group.is_empty() {
            return Some(());
        }
        self.bytes = 0;
        self.workers.send(std::mem::take(&mut self.group)).ok()
    }
}

pub struct Decider<'a> {
    pub store: &'a Arc<ChunkStore>,
    /// What a [`Slot::Stream`] reads.
    pub stdin: Option<&'a StreamInput>,
    pub jobs: Groups,
    /// `--checkpoint-interval`.
    pub checkpoint_interval: Duration,
    /// The assembler's word that a checkpoint is written.
    pub checkpoint_done: Receiver<()>,
    pub reopener: Reopener,
}

impl Decider<'_> {
    /// Passes the walk's batches on to the assembler, deciding the files in them; ends when
    /// either side hangs up, or when the workers are gone (then without the walk's
    /// [`Slot::End`], so the assembler knows the walk is incomplete).
    ///
    /// When a checkpoint is due, it hands out nothing more until the assembler has written it:
    /// then everything committed is referenced by the checkpoint's items.
    pub fn run(mut self, walk: Receiver<Vec<Slot>>, assembler: SyncSender<Vec<Slot>>) {
        let mut last_checkpoint = Instant::now();
        for batch in walk {
            let mut decided = Vec::with_capacity(batch.len());
            let held = self.store.all_held(batch.iter().map(|slot| match slot {
                Slot::Unchanged { item, .. } => item.chunks.as_deref().unwrap_or_default(),
                _ => &[],
            }));
            for (slot, held) in batch.into_iter().zip(held) {
                let Some(slot) = self.decide(slot, held) else {
                    return;
                };
                decided.push(slot);
                if last_checkpoint.elapsed() >= self.checkpoint_interval {
                    decided.push(Slot::Checkpoint);
                    // The assembler waits for every file before the checkpoint: all of them
                    // must be with the workers first (here and before every send below).
                    if self.jobs.flush().is_none()
                        || assembler.send(std::mem::take(&mut decided)).is_err()
                        || self.checkpoint_done.recv().is_err()
                    {
                        return;
                    }
                    last_checkpoint = Instant::now();
                }
            }
            if self.jobs.flush().is_none() || assembler.send(decided).is_err() {
                return;
            }
        }
    }

    /// The slot for the assembler; `None` if the content workers are gone. `held`: the
    /// repository has every chunk the files cache lists for it.
    fn decide(&mut self, slot: Slot, held: bool) -> Option<Slot> {
        match slot {
            Slot::Stream { item } => self.stream(item),
            Slot::Unchanged {
                item,
                reused,
                fs_path,
                master,
                ..
            } if held => Some(Slot::Ready {
                packed: item.to_value().to_bytes(),
                status: 'U',
                fs_path,
                master: master.map(|inode| (inode, item.path)),
                reused: Some(reused),
            }),
            // A chunk of it is no longer in the repository: read it again.
            Slot::Unchanged {
                mut item,
                fs_path,
                stat,
                master,
                path_hash,
                place,
                ..
            } => {
                item.size = None;
                item.chunks = None;
                self.read(item, 'M', fs_path, stat, master, path_hash, &place)
            }
            Slot::File {
                item,
                fs_path,
                stat,
                master,
                path_hash,
                status,
                place,
            } => self.read(item, status, fs_path, stat, master, path_hash, &place),
            other => Some(other),
        }
    }

    /// Hands a file to a content worker, if it is the same file the walk saw; else it is
    /// skipped, since what was stored must match its item.
    #[allow(clippy::too_many_arguments)] // the parts of the slots it comes from
    fn read(
        &mut self,
        item: Item,
        status: char,
        fs_path: Vec<u8>,
        stat: FileStat,
        master: Option<InodeKey>,
        path_hash: ObjectId,
        place: &Place,
    ) -> Option<Slot> {
        let file = match self.reopener.open(place, &fs_path, stat.inode) {
            Ok((file, _)) => file,
            Err(e) => {
                let message = e.to_string();
                return Some(Slot::Problem { message, fs_path });
            }
        };
        let (reply, outcome) = sync_channel(1);
        let source = Source::File {
            file,
            ctime: stat.ctime,
        };
        self.jobs.add(FileJob { source, reply }, stat.size)?;
        Some(Slot::Reading {
            item,
            status,
            fs_path,
            master,
            memorize: Some((path_hash, stat)),
            fatal_errors: false,
            outcome,
        })
    }

    /// The stream's one item goes to a worker like a file's; it is never in the files cache.
    fn stream(&mut self, item: Item) -> Option<Slot> {
        let input = self
            .stdin
            .expect("the walk makes stream slots only for a stream input");
        let taken = input.reader.lock().expect("not poisoned").take();
        let Some(reader) = taken else {
            return Some(Slot::Problem {
                message: "-: the standard input can be read only once".into(),
                fs_path: item.path,
            });
        };
        let (reply, outcome) = sync_channel(1);
        let source = Source::Stream(reader);
        // A stream's size is unknown: it is a group of its own.
        self.jobs.add(FileJob { source, reply }, u64::MAX)?;
        Some(Slot::Reading {
            fs_path: item.path.clone(),
            item,
            status: 'i',
            master: None,
            memorize: None,
            fatal_errors: input.fatal_errors,
            outcome,
        })
    }
}
