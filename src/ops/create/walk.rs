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

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};

use crate::format::envelope::ObjectId;
use crate::format::item::{ChunkRef, Item};
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
    /// chunks and packed, pending the chunk index's word that the repository still has them
    /// (see `decide`).
    Unchanged {
        packed: Vec<u8>,
        chunks: Vec<ChunkRef>,
        reused: Reused,
        fs_path: Vec<u8>,
        stat: FileStat,
        master: Option<(InodeKey, Vec<u8>)>,
        path_hash: ObjectId,
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

fn key_of(st: &std::fs::Metadata) -> InodeKey {
    (st.dev(), st.ino())
}

fn c_path(path: &[u8]) -> io::Result<CString> {
    CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
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

/// `os.path.join` of a walked directory and an entry name, normalised as borg does.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = dir.to_vec();
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    normpath_bytes(&path)
}

/// The open flags borg uses, with `O_NOATIME` where the file system and our rights allow.
fn open_nofollow(path: &[u8], extra: libc::c_int) -> io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | extra | flags)
            .open(os(path))
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
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
        let st = match std::fs::symlink_metadata(os(&path)) {
            Ok(st) => st,
            Err(e) => return self.problem(&path, "stat", e),
        };
        let restrict_dev = self.options.one_file_system.then(|| st.dev());
        let root = Root {
            strip_prefix,
            restrict_dev,
        };
        self.node(&root, &path, st)?;
        // A finished root is not stored again (borg's skip_inodes).
        if let Ok(st) = std::fs::symlink_metadata(os(&path)) {
            self.skip.insert(key_of(&st));
        }
        Ok(())
    }

    fn excluded(&self, fs_path: &[u8]) -> bool {
        // borg matches the walked path with its leading slashes removed.
        let start = fs_path.iter().take_while(|b| **b == b'/').count();
        let relative = &fs_path[start..];
        self.options.excludes.iter().any(|p| p.matches(relative))
    }

    /// One file system object and, for a directory, everything below it.
    fn node(&mut self, root: &Root, fs_path: &[u8], st: std::fs::Metadata) -> Result<(), Stopped> {
        let inode = key_of(&st);
        if self.skip.contains(&inode) {
            return Ok(());
        }
        let Some(path) = root.archive_path(fs_path) else {
            // A level hidden by the slashdot prefix: walk through it, store nothing.
            return self.send(Slot::Status {
                status: 'x',
                fs_path: fs_path.to_vec(),
            });
        };
        let file_type = st.file_type();
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_dir() {
            self.directory(root, fs_path, path, &st)
        } else if file_type.is_file() {
            self.regular(fs_path, path, &st)
        } else if file_type.is_symlink() {
            self.symlink(fs_path, path, &st)
        } else if file_type.is_fifo() || file_type.is_char_device() || file_type.is_block_device() {
            if self.options.skip_special {
                return Ok(());
            }
            self.special(fs_path, path, &st)
        } else if file_type.is_socket() {
            Ok(()) // borg skips sockets without a word
        } else {
            self.send(Slot::Problem {
                fs_path: fs_path.to_vec(),
                message: format!("{}: unknown file type", String::from_utf8_lossy(fs_path)),
            })
        }
    }

    /// The item with the simple attributes of `st`.
    fn base_item(&self, path: Vec<u8>, st: &std::fs::Metadata) -> Item {
        let mut item = Item {
            path,
            ..Item::default()
        };
        fsmeta::stat_attrs(&mut item, st, self.owners, self.options.meta);
        item
    }

    /// Adds the extended attributes, read through `fd` if the object is open, else through its
    /// path; a failure is the item's problem (borg's `E`), reported, and `false`.
    fn with_ext_attrs(
        &self,
        item: &mut Item,
        fs_path: &[u8],
        fd: Option<RawFd>,
        is_dir: bool,
    ) -> Result<bool, Stopped> {
        let c = match c_path(fs_path) {
            Ok(c) => c,
            Err(e) => {
                self.problem(fs_path, "open", e)?;
                return Ok(false);
            }
        };
        let source = match fd {
            Some(fd) => Source::Fd(fd, &c),
            None => Source::Path(&c),
        };
        match fsmeta::ext_attrs(item, source, is_dir, self.owners, self.options.meta) {
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

    /// Opens `fs_path` and checks it is still what the walk's `lstat` saw (borg's
    /// `stat_update_check`): the fresh stat, or the problem has been reported.
    fn open_checked(
        &self,
        fs_path: &[u8],
        st: &std::fs::Metadata,
        extra_flags: libc::c_int,
    ) -> Result<Option<(File, std::fs::Metadata)>, Stopped> {
        let file = match open_nofollow(fs_path, extra_flags) {
            Ok(file) => file,
            Err(e) => return self.problem(fs_path, "open", e).map(|()| None),
        };
        let fresh = match file.metadata() {
            Ok(fresh) => fresh,
            Err(e) => return self.problem(fs_path, "fstat", e).map(|()| None),
        };
        if fresh.file_type() != st.file_type() || fresh.ino() != st.ino() {
            self.send(Slot::Problem {
                fs_path: fs_path.to_vec(),
                message: format!(
                    "{}: file type or inode changed while we backed it up (race condition, skipped file)",
                    String::from_utf8_lossy(fs_path)
                ),
            })?;
            return Ok(None);
        }
        Ok(Some((file, fresh)))
    }

    fn directory(
        &mut self,
        root: &Root,
        fs_path: &[u8],
        path: Vec<u8>,
        st: &std::fs::Metadata,
    ) -> Result<(), Stopped> {
        let Some((dir, st)) = self.open_checked(fs_path, st, libc::O_DIRECTORY)? else {
            return Ok(());
        };
        let recurse = root.restrict_dev.is_none_or(|dev| dev == st.dev());
        let tags = if recurse {
            self.tags(fs_path)
        } else {
            Vec::new()
        };
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
        if !self.with_ext_attrs(&mut item, fs_path, Some(dir.as_raw_fd()), true)? {
            return Ok(());
        }
        self.send_ready(item, 'd', fs_path, None)?;
        if !tags.is_empty() {
            // --keep-exclude-tags: the directory and its tags, nothing else.
            for tag in tags {
                let child = join(fs_path, &tag);
                match std::fs::symlink_metadata(os(&child)) {
                    Ok(st) => self.node(root, &child, st)?,
                    Err(e) => self.problem(&child, "stat", e)?,
                }
            }
            return excluded(self);
        }
        if recurse {
            let entries = match std::fs::read_dir(os(fs_path)) {
                Ok(entries) => entries,
                Err(e) => return self.problem(fs_path, "scandir", e),
            };
            let mut children = Vec::new();
            for entry in entries {
                match entry {
                    Ok(entry) => children.push((entry.ino(), entry.file_name())),
                    Err(e) => self.problem(fs_path, "scandir", e)?,
                }
            }
            // Stable: names with equal inode numbers keep readdir's order, as in borg.
            children.sort_by_key(|(ino, _)| *ino);
            drop(dir);
            for (_, name) in children {
                let child = join(fs_path, name.as_bytes());
                if self.excluded(&child) {
                    self.send(Slot::Status {
                        status: 'x',
                        fs_path: child,
                    })?;
                    continue;
                }
                match std::fs::symlink_metadata(os(&child)) {
                    Ok(st) => self.node(root, &child, st)?,
                    Err(e) => self.problem(&child, "stat", e)?,
                }
            }
        }
        self.send(Slot::Status {
            status: 'd',
            fs_path: fs_path.to_vec(),
        })
    }

    /// Whether `st` is a later path of a hardlink group (and records a first one).
    fn is_follower(&mut self, st: &std::fs::Metadata) -> (bool, Option<InodeKey>) {
        if st.nlink() <= 1 {
            return (false, None);
        }
        let inode = key_of(st);
        (!self.links.insert(inode), Some(inode))
    }

    /// A regular file. An unchanged one (per the files cache) whose item had no extended
    /// metadata last time costs just the walk's `lstat`: nothing else about it can have changed
    /// without changing its ctime. Any other is opened for its extended metadata; its contents
    /// are for later stages to read, if they must.
    fn regular(
        &mut self,
        fs_path: &[u8],
        path: Vec<u8>,
        st: &std::fs::Metadata,
    ) -> Result<(), Stopped> {
        let (follower, inode) = self.is_follower(st);
        let stat = FileStat {
            inode: st.ino(),
            size: st.size(),
            ctime: st.ctime() * 1_000_000_000 + st.ctime_nsec(),
            mtime: st.mtime() * 1_000_000_000 + st.mtime_nsec(),
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
            let Some((file, st)) = self.open_checked(fs_path, st, 0)? else {
                return Ok(());
            };
            let mut item = self.base_item(path, &st);
            if !self.with_ext_attrs(&mut item, fs_path, Some(file.as_raw_fd()), false)? {
                return Ok(());
            }
            item
        };
        if follower {
            return self.send(Slot::Follower {
                item,
                fs_path: fs_path.to_vec(),
                inode: inode.expect("followers are hardlinked"),
            });
        }
        item.hardlink_master = Some(inode.is_some());
        let status = match lookup {
            Lookup::Unchanged { chunks, .. } => {
                let reused = Reused::of(&chunks);
                item.size = Some(reused.size);
                item.chunks = Some(chunks);
                let packed = item.to_value().to_bytes();
                return self.send(Slot::Unchanged {
                    packed,
                    chunks: item.chunks.take().unwrap_or_default(),
                    reused,
                    fs_path: fs_path.to_vec(),
                    stat,
                    master: inode.map(|inode| (inode, item.path)),
                    path_hash,
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
        fs_path: &[u8],
        path: Vec<u8>,
        st: &std::fs::Metadata,
    ) -> Result<(), Stopped> {
        let target = match std::fs::read_link(os(fs_path)) {
            Ok(target) => target,
            Err(e) => return self.problem(fs_path, "readlink", e),
        };
        let mut item = self.base_item(path, st);
        item.source = Some(target.into_os_string().into_vec());
        if !self.with_ext_attrs(&mut item, fs_path, None, false)? {
            return Ok(());
        }
        self.send_ready(item, 's', fs_path, None)
    }

    /// Fifos and devices: metadata only. Fifos are opened (non-blocking) for their attributes,
    /// devices never are.
    fn special(
        &mut self,
        fs_path: &[u8],
        path: Vec<u8>,
        st: &std::fs::Metadata,
    ) -> Result<(), Stopped> {
        use std::os::unix::fs::FileTypeExt;
        let fifo = st.file_type().is_fifo();
        let (opened, st) = if fifo {
            match self.open_checked(fs_path, st, libc::O_NONBLOCK)? {
                Some((file, fresh)) => (Some(file), fresh),
                None => return Ok(()),
            }
        } else {
            (None, st.clone())
        };
        let mut item = self.base_item(path, &st);
        if !fifo {
            item.rdev = Some(st.rdev());
        }
        let fd = opened.as_ref().map(|file| file.as_raw_fd());
        if !self.with_ext_attrs(&mut item, fs_path, fd, false)? {
            return Ok(());
        }
        let status = if fifo {
            'f'
        } else if st.file_type().is_char_device() {
            'c'
        } else {
            'b'
        };
        let (follower, inode) = self.is_follower(&st);
        if follower {
            return self.send(Slot::Follower {
                item,
                fs_path: fs_path.to_vec(),
                inode: inode.expect("followers are hardlinked"),
            });
        }
        item.hardlink_master = Some(inode.is_some());
        self.send_ready(item, status, fs_path, inode)
    }
}

impl Walker<'_> {
    /// The tags that exclude `dir` (borg's `dir_is_tagged`): a valid `CACHEDIR.TAG` with
    /// `--exclude-caches`, and each `--exclude-if-present` name that exists (following
    /// symlinks: a dangling one does not count).
    fn tags(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let mut tags = Vec::new();
        if self.options.exclude_caches && is_tagged_cache(dir) {
            tags.push(b"CACHEDIR.TAG".to_vec());
        }
        for name in &self.options.exclude_if_present {
            if os(&join(dir, name)).exists() {
                tags.push(name.clone());
            }
        }
        tags
    }
}

/// `--exclude-caches`: a `CACHEDIR.TAG` (followed if a symlink) that starts with the signature.
fn is_tagged_cache(dir: &[u8]) -> bool {
    use std::io::Read;
    let mut signature = [0u8; 43];
    File::open(os(&join(dir, b"CACHEDIR.TAG")))
        .and_then(|mut f| f.read_exact(&mut signature))
        .is_ok_and(|()| signature == *CACHEDIR_TAG_SIGNATURE)
}

struct Root {
    strip_prefix: Option<Vec<u8>>,
    restrict_dev: Option<u64>,
}

impl Root {
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
