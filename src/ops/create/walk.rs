//! The walk: every root, depth first, in exactly borg 1.4.5's order, turned into items.
//!
//! Borg visits a directory's entries sorted by the inode number `readdir` reports (a stable
//! sort, so entries with equal numbers keep `readdir`'s order), stores a directory before its
//! contents, and makes the first path of a hardlink group its master. Matching that order makes
//! our item streams look like borg's, puts hardlink masters where borg puts them, and lets
//! identical trees produce identical metadata chunks (docs/create-notes.md §1–§3).
//!
//! The walk itself is one thread: it stats, opens files and reads their metadata, nothing of
//! the repository: so it starts while the connection to the repository is still being made.
//! Every item goes on, in walk order, as a [`Slot`]: complete, a regular file (for `decide`
//! and the content workers), a hardlink follower, or just a line for `--list`.
//!
//! Only a root is found by its path (the user named it); everything below it is reached by
//! descriptor (see `dir_handle`): each directory is opened without following a symlink and
//! checked to be what the walk's stat saw, and its entries are listed, stat'ed, opened and read
//! relative to it. A directory that a service's user swaps for a symlink while the backup runs
//! cannot lead the walk, or the later reading of a file's content, out of the volume.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::ErrorKind;
use crate::format::envelope::ObjectId;
use crate::format::item::{ChunkRef, Item};
use crate::ops::dir_handle::{DirHandle, Stat};
use crate::ops::owners::Owners;
use crate::ops::patterns::Pattern;
use crate::repo::location::normpath_bytes;

use super::content::FileOutcome;
use super::files_cache::{FileStat, FilesCache, Lookup};
use super::fsmeta::{self, MetaOptions, Source};
use super::{Halt, StreamInput};

/// `(st_dev, st_ino)`: what identifies an inode during one run.
pub type InodeKey = (u64, u64);

/// Slots per hand-over to the assembler.
pub const SLOT_BATCH: usize = 128;

const CACHEDIR_TAG_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";

pub struct WalkOptions {
    pub excludes: Vec<Pattern>,
    pub exclude_caches: bool,
    /// `--exclude-if-present`: names whose presence excludes a directory.
    pub exclude_if_present: Vec<Vec<u8>>,
    /// `--keep-exclude-tags`: store an excluded directory's item and its tags.
    pub keep_exclude_tags: bool,
    pub one_file_system: bool,
    pub meta: MetaOptions,
    /// Inodes never stored (our cache directory, a local repository).
    pub skip: HashSet<InodeKey>,
    /// The working directory, for the files cache's absolute paths.
    pub cwd: Vec<u8>,
    /// Leave fifos and devices out, like sockets (not a borg option: the mailcow helper's, for
    /// postfix's queue, whose fifos the mail system makes again itself).
    pub skip_special: bool,
}

/// One entry of the walk, in order.
pub enum Slot {
    /// An item that is complete.
    Ready {
        /// The item packed for the item stream: packing happens where the item is completed,
        /// which for most items is the walk, while the connection is still being made. The
        /// item itself is dropped there too: freeing it on the assembler's thread, the one
        /// that cannot keep up in an unchanged backup, cost it a quarter of its time.
        packed: Vec<u8>,
        status: char,
        fs_path: Vec<u8>,
        /// A hardlink master: its inode and archive path, for the followers.
        master: Option<(InodeKey, Vec<u8>)>,
        /// An unchanged file's content, stored earlier, for the archive's statistics.
        reused: Option<Reused>,
    },
    /// A regular file the files cache knows as unchanged: its item completed with the cached
    /// chunks, pending the chunk index's word that the repository still has them (see
    /// `decide`, which packs it: in an unchanged backup of a million files the walk is the
    /// thread that cannot keep up, and packing was a fifth of its time).
    Unchanged {
        item: Item,
        reused: Reused,
        fs_path: Vec<u8>,
        stat: FileStat,
        master: Option<InodeKey>,
        path_hash: ObjectId,
        place: Place,
    },
    /// A regular file whose content is to be read: new, or changed (see `decide`).
    File {
        item: Item,
        fs_path: Vec<u8>,
        stat: FileStat,
        master: Option<InodeKey>,
        /// The files cache's key for it.
        path_hash: ObjectId,
        /// `M` (known to the files cache, changed) or `A`.
        status: char,
        place: Place,
    },
    /// A regular file a content worker is reading (`decide` makes these from `File`).
    Reading {
        item: Item,
        status: char,
        fs_path: Vec<u8>,
        master: Option<InodeKey>,
        memorize: Option<(ObjectId, FileStat)>,
        /// A read error fails the backup instead of skipping the item.
        fatal_errors: bool,
        outcome: Receiver<FileOutcome>,
    },
    /// A later path of a hardlink group: it refers to the master, if the master made it in.
    Follower {
        item: Item,
        fs_path: Vec<u8>,
        inode: InodeKey,
        /// For reading its content after all, should its master not make it in.
        place: Place,
    },
    /// Only a `--list` line (`x` excluded, `d` after a directory's contents).
    Status { status: char, fs_path: Vec<u8> },
    /// A path that could not be backed up: a warning, and no item.
    Problem { fs_path: Vec<u8>, message: String },
    /// Content from a stream (`-`): its item without size and chunks.
    Stream { item: Item },
    /// The walk finished every root. Without it, the walk was cut short: no archive.
    End,
    /// Time for a checkpoint: everything before it is handed out (see `commit`).
    Checkpoint,
}

/// The size of an unchanged file's content and what its chunks take in the repository.
#[derive(Clone, Copy, Debug)]
pub struct Reused {
    pub size: u64,
    pub csize: u64,
}

impl Reused {
    pub fn of(chunks: &[ChunkRef]) -> Reused {
        Reused {
            size: chunks.iter().map(|c| c.size).sum(),
            csize: chunks.iter().map(|c| c.csize).sum(),
        }
    }
}

/// Where a walked file can be opened again, by the stages after the walk: reading its content
/// (`decide`) or promoting a hardlink follower (the assembler). It is the directory a root's
/// names are relative to, and where those names start in the walked path; the file is opened
/// again from there one directory at a time, never following a symlink ([`Reopener`]).
///
/// Why not the file's parent directory, open, or the file itself, open: up to `BATCHES_AHEAD`
/// (256) batches of [`SLOT_BATCH`] slots wait between the walk and `decide`, and in a first
/// backup they do (the content workers are the slower side). One open file per slot, or one
/// open directory per directory with a file in flight, would be thousands of descriptors —
/// past the 1024 that a host's soft `RLIMIT_NOFILE` often is. A `Place` holds one per root.
///
/// Descriptors a backup holds, then: the walk one per directory level it is inside (as borg),
/// plus the one it is opening; `decide` the directory its [`Reopener`] keeps, two while it
/// descends, and the files waiting for or with the content workers (at most three groups of
/// `GROUP_FILES` per worker and one being filled); the assembler one directory and file while
/// it promotes a follower; one per root while its slots are in flight.
#[derive(Clone)]
pub struct Place {
    base: Arc<DirHandle>,
    /// Where the path relative to `base` starts in the walked path.
    offset: usize,
}

/// The message for borg's `stat_update_check` failing: what was opened is not what the walk's
/// stat saw.
fn race_condition(fs_path: &[u8]) -> String {
    ReopenError::Changed {
        fs_path: fs_path.to_vec(),
    }
    .to_string()
}

/// Why a walked regular file could not be opened again; its message is the warning's.
#[derive(Debug, thiserror::Error)]
pub enum ReopenError {
    #[error(
        "{}: open: not below the root it was walked from",
        String::from_utf8_lossy(.fs_path)
    )]
    NotBelowRoot { fs_path: Vec<u8> },
    #[error(
        "{}: file type or inode changed while we backed it up (race condition, skipped file)",
        String::from_utf8_lossy(.fs_path)
    )]
    Changed { fs_path: Vec<u8> },
    #[error("{}: open: {source}", String::from_utf8_lossy(.fs_path))]
    Open { fs_path: Vec<u8>, source: io::Error },
}

impl ReopenError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReopenError::NotBelowRoot { .. }
            | ReopenError::Changed { .. }
            | ReopenError::Open { .. } => ErrorKind::Environment,
        }
    }
}

/// Opens walked regular files again by their [`Place`]. It keeps the last directory open:
/// files come in walk order, most of them next to others, so a directory is descended into once
/// for a run of its files and each file costs one `openat`, as an open by path would.
#[derive(Default)]
pub struct Reopener {
    last: Option<(Arc<DirHandle>, Vec<u8>, DirHandle)>,
}

impl Reopener {
    /// The regular file at `fs_path`, open, with its fresh stat, if it is still the inode
    /// `ino` the walk saw; else the problem, whose message is a warning's.
    pub fn open(
        &mut self,
        place: &Place,
        fs_path: &[u8],
        ino: u64,
    ) -> Result<(File, Stat), ReopenError> {
        let Some(relative) = fs_path.get(place.offset..) else {
            return Err(ReopenError::NotBelowRoot {
                fs_path: fs_path.to_vec(),
            });
        };
        let (dir, name) = match relative.iter().rposition(|b| *b == b'/') {
            Some(slash) => (&relative[..slash], &relative[slash + 1..]),
            None => (&b""[..], relative),
        };
        let name = OsStr::from_bytes(name);
        let opened = if dir.is_empty() {
            place.base.open_file_child(name, 0)
        } else {
            let cached = match &self.last {
                Some((base, path, handle)) if Arc::ptr_eq(base, &place.base) && path == dir => {
                    Ok(handle)
                }
                _ => {
                    // The old one goes first: at most two directories are open at a time.
                    self.last = None;
                    place.base.open_descendant(dir).map(|handle| {
                        &self
                            .last
                            .insert((place.base.clone(), dir.to_vec(), handle))
                            .2
                    })
                }
            };
            cached.and_then(|handle| handle.open_file_child(name, 0))
        };
        let checked = opened.and_then(|file| Ok((Stat::of(file.as_fd())?, file)));
        match checked {
            Ok((st, file)) if st.is_file() && st.ino == ino => Ok((file, st)),
            Ok(_) => Err(ReopenError::Changed {
                fs_path: fs_path.to_vec(),
            }),
            Err(source) => Err(ReopenError::Open {
                fs_path: fs_path.to_vec(),
                source,
            }),
        }
    }
}

/// The assembler hung up (it failed or was interrupted): stop walking.
pub struct Stopped;

pub struct Walker<'a> {
    pub options: &'a WalkOptions,
    /// What `-` among the roots stands for.
    pub stdin: Option<&'a StreamInput>,
    pub owners: &'a Owners,
    pub files: &'a Mutex<FilesCache>,
    /// Slots go to the assembler in batches: one hand-over per item would cost two thread
    /// wake-ups per file, more than a file-cache hit itself costs.
    pub slots: SyncSender<Vec<Slot>>,
    pub batch: RefCell<Vec<Slot>>,
    pub abort: &'a Halt,
    /// Inodes of hardlinked objects already seen.
    pub links: HashSet<InodeKey>,
    /// Inodes not to store: `options.skip` and every finished root.
    pub skip: HashSet<InodeKey>,
}

/// Whether `excludes` exclude the walked path `fs_path`. borg matches it with its leading slashes
/// removed.
pub fn is_excluded(excludes: &[Pattern], fs_path: &[u8]) -> bool {
    let start = fs_path.iter().take_while(|b| **b == b'/').count();
    let relative = &fs_path[start..];
    excludes.iter().any(|p| p.matches(relative))
}

fn os(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// borg's `make_path_safe`: no leading `/`, `//` or `../` runs; empty becomes `.`.
fn make_path_safe(path: &[u8]) -> Vec<u8> {
    let mut rest = path;
    loop {
        let after_dots = rest.strip_prefix(b"..").unwrap_or(rest);
        let slashes = after_dots.iter().take_while(|b| **b == b'/').count();
        if slashes == 0 {
            break;
        }
        rest = &after_dots[slashes..];
    }
    if rest.is_empty() {
        b".".to_vec()
    } else {
        rest.to_vec()
    }
}

/// `os.path.join` of a walked directory and an entry name, normalised as borg does. For a
/// name from a directory listing (no `/`, never `.` or `..`) the result ends with the name.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = dir.to_vec();
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    normpath_bytes(&path)
}

/// Opens with `O_NOATIME`, as borg does, where the file system and our rights allow it (only
/// the owner, or a holder of `CAP_FOWNER`, may).
fn noatime<T>(open: impl Fn(libc::c_int) -> io::Result<T>) -> io::Result<T> {
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

/// How the extended attributes of an object are reached.
enum Attrs<'a> {
    /// It is open.
    Open(RawFd),
    /// It is not (a symlink, a device): its name in its directory.
    Unopened(&'a DirHandle, &'a OsStr),
}

impl Walker<'_> {
    fn send(&self, slot: Slot) -> Result<(), Stopped> {
        if self.abort.halted() {
            return Err(Stopped);
        }
        let mut batch = self.batch.borrow_mut();
        batch.push(slot);
        if batch.len() >= SLOT_BATCH {
            let full = std::mem::take(&mut *batch);
            drop(batch);
            self.slots.send(full).map_err(|_| Stopped)?;
        }
        Ok(())
    }

    /// Ends the walk: the last slots, with [`Slot::End`] to say that nothing was left out.
    pub fn send_end(&self) -> Result<(), Stopped> {
        let mut batch = std::mem::take(&mut *self.batch.borrow_mut());
        batch.push(Slot::End);
        self.slots.send(batch).map_err(|_| Stopped)
    }

    fn problem(&self, fs_path: &[u8], op: &str, e: io::Error) -> Result<(), Stopped> {
        self.send(Slot::Problem {
            fs_path: fs_path.to_vec(),
            message: format!("{}: {op}: {e}", String::from_utf8_lossy(fs_path)),
        })
    }

    /// Walks one root argument (as given on the command line).
    pub fn root(&mut self, raw: &[u8]) -> Result<(), Stopped> {
        if let (b"-", Some(input)) = (raw, self.stdin) {
            return self.send(Slot::Stream { item: input.item() });
        }
        // The "slashdot hack": in `/srv/./data`, `/srv/` is not part of the archived paths.
        let strip_prefix = raw
            .windows(3)
            .position(|w| w == b"/./")
            .filter(|&pos| pos > 0)
            .map(|pos| {
                let mut prefix = normpath_bytes(&raw[..pos]);
                prefix.push(b'/');
                prefix
            });
        let path = normpath_bytes(raw);
        if self.excluded(&path) {
            return self.send(Slot::Status {
                status: 'x',
                fs_path: path,
            });
        }
        let st = match Stat::lstat(os(&path)) {
            Ok(st) => st,
            Err(e) => return self.problem(&path, "stat", e),
        };
        let naming = Naming {
            strip_prefix,
            restrict_dev: self.options.one_file_system.then_some(st.dev),
        };
        if st.is_dir() {
            self.root_directory(naming, &path, st)?;
        } else {
            self.root_other(naming, &path, st)?;
        }
        // A finished root is not stored again (borg's skip_inodes).
        self.skip.insert(st.key());
        Ok(())
    }

    /// A root that is a directory: opened by its path, but not through a symlink at its end,
    /// and checked to be the directory the stat saw.
    fn root_directory(&mut self, naming: Naming, path: &[u8], st: Stat) -> Result<(), Stopped> {
        let Some(item_path) = self.item_path(&naming, path, &st)? else {
            return Ok(());
        };
        let opened = noatime(|flags| DirHandle::open(os(path), flags));
        let Some((dir, st)) = self.checked(path, &st, opened)? else {
            return Ok(());
        };
        let dir = Arc::new(dir);
        let root = Root {
            naming,
            place: Place {
                base: dir.clone(),
                // Where the names of its entries start in their walked paths.
                offset: join(path, b"-").len() - 1,
            },
        };
        self.directory(&root, &dir, path, item_path, st)
    }

    /// A root that is no directory: found in its directory, which is opened by its path.
    fn root_other(&mut self, naming: Naming, path: &[u8], st: Stat) -> Result<(), Stopped> {
        // The walked path of a root that is no directory ends with a name (it is normalised,
        // and `/`, `.` and `..` are directories).
        let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(0) => (&b"/"[..], &path[1..]),
            Some(slash) => (&path[..slash], &path[slash + 1..]),
            None => (&b"."[..], path),
        };
        let base = match DirHandle::open_resolved(os(parent)) {
            Ok(base) => Arc::new(base),
            Err(e) => return self.problem(path, "open", e),
        };
        let root = Root {
            naming,
            place: Place {
                base: base.clone(),
                offset: path.len() - name.len(),
            },
        };
        self.node(&root, &base, OsStr::from_bytes(name), path, st)
    }

    fn excluded(&self, fs_path: &[u8]) -> bool {
        is_excluded(&self.options.excludes, fs_path)
    }

    /// The archive path of what the walk found, or `None` if nothing is stored for it: an
    /// inode to skip (without a word), or a level the slashdot prefix hides (walked through,
    /// an `x` line).
    fn item_path(
        &self,
        naming: &Naming,
        fs_path: &[u8],
        st: &Stat,
    ) -> Result<Option<Vec<u8>>, Stopped> {
        if self.skip.contains(&st.key()) {
            return Ok(None);
        }
        match naming.archive_path(fs_path) {
            Some(path) => Ok(Some(path)),
            None => self
                .send(Slot::Status {
                    status: 'x',
                    fs_path: fs_path.to_vec(),
                })
                .map(|()| None),
        }
    }

    /// One file system object, the entry `name` of `dir`, and, for a directory, everything
    /// below it.
    fn node(
        &mut self,
        root: &Root,
        dir: &DirHandle,
        name: &OsStr,
        fs_path: &[u8],
        st: Stat,
    ) -> Result<(), Stopped> {
        let Some(path) = self.item_path(&root.naming, fs_path, &st)? else {
            return Ok(());
        };
        match st.file_type() {
            libc::S_IFDIR => {
                let opened = noatime(|flags| dir.open_child(name, flags));
                let Some((sub, st)) = self.checked(fs_path, &st, opened)? else {
                    return Ok(());
                };
                self.directory(root, &sub, fs_path, path, st)
            }
            libc::S_IFREG => self.regular(root, dir, name, fs_path, path, &st),
            libc::S_IFLNK => self.symlink(dir, name, fs_path, path, &st),
            libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
                if self.options.skip_special {
                    return Ok(());
                }
                self.special(root, dir, name, fs_path, path, &st)
            }
            libc::S_IFSOCK => Ok(()), // borg skips sockets without a word
            _ => self.send(Slot::Problem {
                fs_path: fs_path.to_vec(),
                message: format!("{}: unknown file type", String::from_utf8_lossy(fs_path)),
            }),
        }
    }

    /// The item with the simple attributes of `st`.
    fn base_item(&self, path: Vec<u8>, st: &Stat) -> Item {
        let mut item = Item {
            path,
            ..Item::default()
        };
        fsmeta::stat_attrs(&mut item, st, self.owners, self.options.meta);
        item
    }

    /// Adds the extended attributes; a failure is the item's problem (borg's `E`), reported,
    /// and `false`.
    fn with_ext_attrs(
        &self,
        item: &mut Item,
        fs_path: &[u8],
        attrs: Attrs,
        is_dir: bool,
    ) -> Result<bool, Stopped> {
        let meta = self.options.meta;
        let through_proc;
        let source = match attrs {
            Attrs::Open(fd) => Source::Fd(fd),
            // Without xattrs and ACLs, nothing is read of an object that is not open.
            Attrs::Unopened(..) if !meta.xattrs && !meta.acls => return Ok(true),
            Attrs::Unopened(dir, name) => match dir.path_of_child(name) {
                Ok(path) => {
                    through_proc = path;
                    Source::Path(&through_proc)
                }
                Err(e) => {
                    self.problem(fs_path, "extended attributes", e)?;
                    return Ok(false);
                }
            },
        };
        match fsmeta::ext_attrs(item, source, is_dir, self.owners, meta) {
            Ok(warnings) => {
                for message in warnings {
                    self.send(Slot::Problem {
                        fs_path: Vec::new(),
                        message: format!("{}: {message}", String::from_utf8_lossy(fs_path)),
                    })?;
                }
                Ok(true)
            }
            Err(e) => {
                self.problem(fs_path, "extended attributes", e)?;
                Ok(false)
            }
        }
    }

    /// A complete item, packed here for the item stream.
    fn send_ready(
        &self,
        item: Item,
        status: char,
        fs_path: &[u8],
        master: Option<InodeKey>,
    ) -> Result<(), Stopped> {
        self.send(Slot::Ready {
            packed: item.to_value().to_bytes(),
            status,
            fs_path: fs_path.to_vec(),
            master: master.map(|inode| (inode, item.path)),
            reused: None,
        })
    }

    /// Checks that what was opened for `fs_path` is still what the walk's stat saw (borg's
    /// `stat_update_check`): it and its fresh stat, or the problem has been reported.
    fn checked<T: AsFd>(
        &self,
        fs_path: &[u8],
        st: &Stat,
        opened: io::Result<T>,
    ) -> Result<Option<(T, Stat)>, Stopped> {
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => return self.problem(fs_path, "open", e).map(|()| None),
        };
        let fresh = match Stat::of(opened.as_fd()) {
            Ok(fresh) => fresh,
            Err(e) => return self.problem(fs_path, "fstat", e).map(|()| None),
        };
        if fresh.file_type() != st.file_type() || fresh.ino != st.ino {
            self.send(Slot::Problem {
                fs_path: fs_path.to_vec(),
                message: race_condition(fs_path),
            })?;
            return Ok(None);
        }
        Ok(Some((opened, fresh)))
    }

    /// A directory, open, and what is below it. It stays open while its entries are walked:
    /// they are looked up in it, never by path. That is one descriptor per level of the tree,
    /// as in borg; a tree deeper than the descriptor limit fails at that depth, an `open`
    /// problem (`EMFILE`) for the directory there.
    fn directory(
        &mut self,
        root: &Root,
        dir: &DirHandle,
        fs_path: &[u8],
        path: Vec<u8>,
        st: Stat,
    ) -> Result<(), Stopped> {
        let recurse = root.naming.restrict_dev.is_none_or(|dev| dev == st.dev);
        let tags = if recurse { self.tags(dir) } else { Vec::new() };
        let excluded = |walker: &Self| {
            walker.send(Slot::Status {
                status: 'x',
                fs_path: fs_path.to_vec(),
            })
        };
        if !tags.is_empty() && !self.options.keep_exclude_tags {
            return excluded(self);
        }
        let mut item = self.base_item(path, &st);
        if !self.with_ext_attrs(&mut item, fs_path, Attrs::Open(dir.as_raw_fd()), true)? {
            return Ok(());
        }
        self.send_ready(item, 'd', fs_path, None)?;
        if !tags.is_empty() {
            // --keep-exclude-tags: the directory and its tags, nothing else.
            for tag in tags {
                self.tag(root, dir, &tag, &join(fs_path, &tag))?;
            }
            return excluded(self);
        }
        if recurse {
            let mut entries = match dir.entries() {
                Ok(entries) => entries,
                Err(e) => return self.problem(fs_path, "scandir", e),
            };
            // Stable: names with equal inode numbers keep readdir's order, as in borg.
            entries.sort_by_key(|entry| entry.ino);
            for entry in entries {
                let child = join(fs_path, entry.name.as_bytes());
                if self.excluded(&child) {
                    self.send(Slot::Status {
                        status: 'x',
                        fs_path: child,
                    })?;
                    continue;
                }
                match dir.stat_child(&entry.name) {
                    Ok(st) => self.node(root, dir, &entry.name, &child, st)?,
                    Err(e) => self.problem(&child, "stat", e)?,
                }
            }
        }
        self.send(Slot::Status {
            status: 'd',
            fs_path: fs_path.to_vec(),
        })
    }

    /// A tag kept with `--keep-exclude-tags`. An `--exclude-if-present` name may be a path
    /// below the directory: its directories are opened one by one, like everything below a
    /// root, never through a symlink.
    fn tag(
        &mut self,
        root: &Root,
        dir: &DirHandle,
        tag: &[u8],
        fs_path: &[u8],
    ) -> Result<(), Stopped> {
        let (parent, name) = match tag.iter().rposition(|b| *b == b'/') {
            Some(slash) => match dir.open_descendant(&tag[..slash]) {
                Ok(parent) => (Some(parent), &tag[slash + 1..]),
                Err(e) => return self.problem(fs_path, "stat", e),
            },
            None => (None, tag),
        };
        let parent = parent.as_ref().unwrap_or(dir);
        let name = OsStr::from_bytes(name);
        match parent.stat_child(name) {
            Ok(st) => self.node(root, parent, name, fs_path, st),
            Err(e) => self.problem(fs_path, "stat", e),
        }
    }

    /// Whether `st` is a later path of a hardlink group (and records a first one).
    fn is_follower(&mut self, st: &Stat) -> (bool, Option<InodeKey>) {
        if st.nlink <= 1 {
            return (false, None);
        }
        let inode = st.key();
        (!self.links.insert(inode), Some(inode))
    }

    /// A regular file. An unchanged one (per the files cache) whose item had no extended
    /// metadata last time costs just the walk's stat: nothing else about it can have changed
    /// without changing its ctime. Any other is opened for its extended metadata; its contents
    /// are for later stages to read, if they must.
    fn regular(
        &mut self,
        root: &Root,
        dir: &DirHandle,
        name: &OsStr,
        fs_path: &[u8],
        path: Vec<u8>,
        st: &Stat,
    ) -> Result<(), Stopped> {
        let (follower, inode) = self.is_follower(st);
        let stat = FileStat {
            inode: st.ino,
            size: st.size,
            ctime: st.ctime_ns(),
            mtime: st.mtime_ns(),
        };
        let (path_hash, lookup) = if follower {
            ([0; 32], Lookup::Unknown) // followers are not looked up, as in borg
        } else {
            let path_hash: ObjectId = Sha256::digest(self.absolute(fs_path)).into();
            let lookup = self
                .files
                .lock()
                .expect("not poisoned")
                .lookup(&path_hash, &stat);
            (path_hash, lookup)
        };
        let mut item = if let Lookup::Unchanged { ext: false, .. } = lookup {
            self.base_item(path, st)
        } else {
            let opened = noatime(|flags| dir.open_file_child(name, flags));
            let Some((file, st)) = self.checked(fs_path, st, opened)? else {
                return Ok(());
            };
            let mut item = self.base_item(path, &st);
            if !self.with_ext_attrs(&mut item, fs_path, Attrs::Open(file.as_raw_fd()), false)? {
                return Ok(());
            }
            item
        };
        let place = root.place.clone();
        if follower {
            return self.send(Slot::Follower {
                item,
                fs_path: fs_path.to_vec(),
                inode: inode.expect("followers are hardlinked"),
                place,
            });
        }
        item.hardlink_master = Some(inode.is_some());
        let status = match lookup {
            Lookup::Unchanged { chunks, .. } => {
                let reused = Reused::of(&chunks);
                item.size = Some(reused.size);
                item.chunks = Some(chunks);
                return self.send(Slot::Unchanged {
                    item,
                    reused,
                    fs_path: fs_path.to_vec(),
                    stat,
                    master: inode,
                    path_hash,
                    place,
                });
            }
            Lookup::Changed => 'M',
            Lookup::Unknown => 'A',
        };
        self.send(Slot::File {
            item,
            fs_path: fs_path.to_vec(),
            stat,
            master: inode,
            path_hash,
            status,
            place,
        })
    }

    /// The files cache key: the absolute path as walked (borg joins the working directory
    /// without normalising).
    fn absolute(&self, fs_path: &[u8]) -> Vec<u8> {
        if fs_path.starts_with(b"/") {
            return fs_path.to_vec();
        }
        let mut path = self.options.cwd.clone();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(fs_path);
        path
    }

    fn symlink(
        &mut self,
        dir: &DirHandle,
        name: &OsStr,
        fs_path: &[u8],
        path: Vec<u8>,
        st: &Stat,
    ) -> Result<(), Stopped> {
        let target = match dir.read_link_child(name) {
            Ok(target) => target,
            Err(e) => return self.problem(fs_path, "readlink", e),
        };
        let mut item = self.base_item(path, st);
        item.source = Some(target);
        if !self.with_ext_attrs(&mut item, fs_path, Attrs::Unopened(dir, name), false)? {
            return Ok(());
        }
        self.send_ready(item, 's', fs_path, None)
    }

    /// Fifos and devices: metadata only. Fifos are opened (non-blocking) for their attributes,
    /// devices never are.
    fn special(
        &mut self,
        root: &Root,
        dir: &DirHandle,
        name: &OsStr,
        fs_path: &[u8],
        path: Vec<u8>,
        st: &Stat,
    ) -> Result<(), Stopped> {
        let fifo = st.file_type() == libc::S_IFIFO;
        let (opened, st) = if fifo {
            let opened = noatime(|flags| dir.open_file_child(name, libc::O_NONBLOCK | flags));
            match self.checked(fs_path, st, opened)? {
                Some((file, fresh)) => (Some(file), fresh),
                None => return Ok(()),
            }
        } else {
            (None, *st)
        };
        let mut item = self.base_item(path, &st);
        if !fifo {
            item.rdev = Some(st.rdev);
        }
        let attrs = match &opened {
            Some(file) => Attrs::Open(file.as_raw_fd()),
            None => Attrs::Unopened(dir, name),
        };
        if !self.with_ext_attrs(&mut item, fs_path, attrs, false)? {
            return Ok(());
        }
        let status = match st.file_type() {
            libc::S_IFIFO => 'f',
            libc::S_IFCHR => 'c',
            _ => 'b',
        };
        let (follower, inode) = self.is_follower(&st);
        if follower {
            return self.send(Slot::Follower {
                item,
                fs_path: fs_path.to_vec(),
                inode: inode.expect("followers are hardlinked"),
                place: root.place.clone(),
            });
        }
        item.hardlink_master = Some(inode.is_some());
        self.send_ready(item, status, fs_path, inode)
    }
}

impl Walker<'_> {
    /// The tags that exclude `dir` (borg's `dir_is_tagged`): a valid `CACHEDIR.TAG` with
    /// `--exclude-caches`, and each `--exclude-if-present` name that exists. Symlinks are
    /// followed here, wherever they lead, as borg follows them: a tag is only looked at, never
    /// stored through the link (a dangling one does not count).
    fn tags(&self, dir: &DirHandle) -> Vec<Vec<u8>> {
        let mut tags = Vec::new();
        if self.options.exclude_caches && is_tagged_cache(dir) {
            tags.push(b"CACHEDIR.TAG".to_vec());
        }
        for name in &self.options.exclude_if_present {
            if dir.stat_following(OsStr::from_bytes(name)).is_ok() {
                tags.push(name.clone());
            }
        }
        tags
    }
}

/// `--exclude-caches`: a `CACHEDIR.TAG` (followed if a symlink) that starts with the signature.
fn is_tagged_cache(dir: &DirHandle) -> bool {
    use std::io::Read;
    let mut signature = [0u8; 43];
    dir.open_following(OsStr::new("CACHEDIR.TAG"))
        .and_then(|mut f| f.read_exact(&mut signature))
        .is_ok_and(|()| signature == *CACHEDIR_TAG_SIGNATURE)
}

/// How a root's paths become archive paths.
struct Naming {
    strip_prefix: Option<Vec<u8>>,
    /// `--one-file-system`: the root's device, the only one walked into.
    restrict_dev: Option<u64>,
}

impl Naming {
    /// The item path of `fs_path`, or `None` for a level the slashdot prefix hides.
    fn archive_path(&self, fs_path: &[u8]) -> Option<Vec<u8>> {
        let Some(prefix) = &self.strip_prefix else {
            return Some(make_path_safe(fs_path));
        };
        let mut with_slash = fs_path.to_vec();
        with_slash.push(b'/');
        if with_slash == *prefix {
            return Some(b".".to_vec());
        }
        if prefix.starts_with(&with_slash) {
            return None;
        }
        Some(make_path_safe(
            fs_path.strip_prefix(prefix.as_slice()).unwrap_or(fs_path),
        ))
    }
}

/// A root being walked.
struct Root {
    naming: Naming,
    place: Place,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn content(opened: Result<(File, Stat), ReopenError>) -> String {
        let mut text = String::new();
        opened.unwrap().0.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn files_are_opened_again_below_the_root_never_through_a_symlink() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        for (path, text) in [("top", "top"), ("a/b/one", "one"), ("c/two", "two")] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let outside = base.path().join("outside");
        std::fs::create_dir_all(outside.join("b")).unwrap();
        std::fs::write(outside.join("b/one"), "secret").unwrap();
        let ino = |path: &str| Stat::lstat(&root.join(path)).unwrap().ino;
        let walked = format!("{}/", root.display()).into_bytes();
        let place = Place {
            base: Arc::new(DirHandle::open(&root, 0).unwrap()),
            offset: walked.len(),
        };
        let at = |path: &str| [walked.as_slice(), path.as_bytes()].concat();
        let mut reopener = Reopener::default();
        for (path, text) in [("a/b/one", "one"), ("c/two", "two"), ("top", "top")] {
            assert_eq!(content(reopener.open(&place, &at(path), ino(path))), text);
        }
        let changed = reopener.open(&place, &at("c/two"), ino("top")).unwrap_err();
        assert!(matches!(changed, ReopenError::Changed { .. }), "{changed}");
        let message = changed.to_string();
        assert!(
            message.ends_with("(race condition, skipped file)"),
            "{message}"
        );

        let one = ino("a/b/one");
        assert_eq!(content(reopener.open(&place, &at("a/b/one"), one)), "one");
        std::fs::rename(root.join("a"), base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        // Kept open: the directory that was opened, wherever it is now.
        assert_eq!(content(reopener.open(&place, &at("a/b/one"), one)), "one");
        // Descended into afresh: the symlink is not followed.
        let refused = Reopener::default()
            .open(&place, &at("a/b/one"), one)
            .unwrap_err();
        assert!(matches!(refused, ReopenError::Open { .. }), "{refused}");
        let message = refused.to_string();
        assert!(message.contains("a/b/one: open: "), "{message}");
    }
}
