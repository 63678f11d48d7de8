//! Between the walk and the assembler: for each regular file, ask the files cache whether it
//! changed. An unchanged file whose chunks the repository still has is complete at once (`U`);
//! any other file is opened again and handed to a content worker (`A` new, `M` changed).
//!
//! This is its own stage, not part of the walk, because it needs the repository — the key for
//! the files cache's path hashes, the chunk index — and the walk does not: the walk starts
//! while the SSH connection and `borg serve` are still starting (a few hundred milliseconds,
//! as long as a whole unchanged maildir backup takes), and this stage catches up when they are
//! ready.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use crate::format::envelope::{ObjectId, ObjectKey};
use crate::format::item::ChunkRef;

use super::content::FileJob;
use super::files_cache::{FilesCache, Lookup};
use super::store::ChunkStore;
use super::walk::Slot;

pub struct Decider<'a> {
    pub key: &'a ObjectKey,
    pub files: &'a Mutex<FilesCache>,
    pub store: &'a Arc<ChunkStore>,
    pub jobs: SyncSender<FileJob>,
    /// The working directory, for the files cache's absolute paths.
    pub cwd: &'a [u8],
}

impl Decider<'_> {
    /// Passes the walk's batches on to the assembler, deciding the files in them; ends when
    /// either side hangs up, or when the workers are gone (then without the walk's
    /// [`Slot::End`], so the assembler knows the walk is incomplete).
    pub fn run(&self, walk: Receiver<Vec<Slot>>, assembler: SyncSender<Vec<Slot>>) {
        for batch in walk {
            let decided: Option<Vec<Slot>> =
                batch.into_iter().map(|slot| self.decide(slot)).collect();
            let Some(decided) = decided else {
                return;
            };
            if assembler.send(decided).is_err() {
                return;
            }
        }
    }

    /// The slot for the assembler; `None` if the content workers are gone.
    fn decide(&self, slot: Slot) -> Option<Slot> {
        let Slot::File {
            mut item,
            fs_path,
            stat,
            master,
        } = slot
        else {
            return Some(slot);
        };
        let path_hash = self.key.id_hash(&self.absolute(&fs_path));
        let lookup = self
            .files
            .lock()
            .expect("not poisoned")
            .lookup(&path_hash, &stat);
        let status = match lookup {
            Lookup::Unknown => 'A',
            Lookup::Changed => 'M',
            Lookup::Unchanged(ids) => match self.reuse(&ids) {
                Some(chunks) => {
                    item.size = Some(chunks.iter().map(|c| c.size).sum());
                    item.chunks = Some(chunks);
                    return Some(Slot::Ready {
                        item,
                        status: 'U',
                        fs_path,
                        master,
                    });
                }
                // A chunk of it is no longer in the repository: read it again.
                None => 'M',
            },
        };
        // The same file the walk saw, or it is skipped: what was stored must match its item.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(std::path::Path::new(std::ffi::OsStr::from_bytes(&fs_path)))
            .and_then(|file| Ok((file.metadata()?, file)));
        let file = match opened {
            Ok((st, file)) if st.is_file() && st.ino() == stat.inode => file,
            Ok(_) => {
                return Some(Slot::Problem {
                    message: format!(
                        "{}: file type or inode changed while we backed it up (race condition, skipped file)",
                        String::from_utf8_lossy(&fs_path)
                    ),
                    fs_path,
                });
            }
            Err(e) => {
                return Some(Slot::Problem {
                    message: format!("{}: open: {e}", String::from_utf8_lossy(&fs_path)),
                    fs_path,
                });
            }
        };
        let (reply, outcome) = sync_channel(1);
        let job = FileJob {
            file,
            ctime: stat.ctime,
            reply,
        };
        self.jobs.send(job).ok()?;
        Some(Slot::Reading {
            item,
            status,
            fs_path,
            master,
            memorize: Some((path_hash, stat)),
            outcome,
        })
    }

    /// The chunk references of an unchanged file, if the index still knows all its chunks.
    fn reuse(&self, ids: &[ObjectId]) -> Option<Vec<ChunkRef>> {
        ids.iter()
            .map(|id| {
                self.store.known(id).map(|sizes| ChunkRef {
                    id: *id,
                    size: u64::from(sizes.size),
                    csize: u64::from(sizes.csize),
                })
            })
            .collect()
    }

    /// The files cache key path: borg joins the working directory without normalising.
    fn absolute(&self, fs_path: &[u8]) -> Vec<u8> {
        if fs_path.starts_with(b"/") {
            return fs_path.to_vec();
        }
        let mut path = self.cwd.to_vec();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(fs_path);
        path
    }
}
