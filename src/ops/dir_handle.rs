//! File system objects worked on by descriptor, never again by path.
//!
//! A restore mirrors directories (removes what the archive does not hold), and a backup walks
//! them, in volumes that other services' users can write to. Working by path, a directory
//! swapped for a symlink between our look and our next step would lead a removal, or a read
//! into the archive, out of the volume. A [`DirHandle`] is opened without following symlinks,
//! and everything below it — listing, stat, opening a file or a subdirectory, reading a link,
//! removing — is relative to the open directory: whatever is renamed or replaced meanwhile, the
//! work stays in the directory that was opened.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::OnceLock;

/// An open directory.
pub struct DirHandle {
    fd: OwnedFd,
}

/// One entry of a directory.
pub struct DirEntry {
    pub name: OsString,
    /// The inode number `readdir` reports (borg's walk order sorts by it).
    pub ino: u64,
    /// `readdir`'s `d_type`.
    kind: u8,
}

impl DirEntry {
    /// Whether it is a directory itself, not a symlink to one. `dir` is the directory it was
    /// listed from: it is asked only on file systems whose entries carry no type.
    pub fn is_dir(&self, dir: &DirHandle) -> io::Result<bool> {
        match self.kind {
            libc::DT_DIR => Ok(true),
            libc::DT_UNKNOWN => Ok(dir.stat_child(&self.name)?.is_dir()),
            _ => Ok(false),
        }
    }
}

/// What `stat` says about a file system object. Ours, because `std::fs::Metadata` cannot be
/// made from a stat taken relative to a directory descriptor (`fstatat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    /// File type and permission bits.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub atime: i64,
    pub atime_nsec: i64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl Stat {
    // The field types differ between architectures (`st_nlink` is 32 bits on some).
    #[allow(clippy::unnecessary_cast)]
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            rdev: st.st_rdev as u64,
            atime: st.st_atime as i64,
            atime_nsec: st.st_atime_nsec as i64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            ctime: st.st_ctime as i64,
            ctime_nsec: st.st_ctime_nsec as i64,
        }
    }

    /// Runs a call that fills in a stat.
    fn filled(call: impl FnOnce(*mut libc::stat) -> libc::c_int) -> io::Result<Stat> {
        // SAFETY: an all-zero stat is a valid value for the call to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(call(&mut st))?;
        Ok(Stat::from_raw(&st))
    }

    /// The stat of an open object.
    pub fn of(fd: BorrowedFd) -> io::Result<Stat> {
        // SAFETY: `fd` is open for the call; the pointer is to a live local of `filled`.
        Stat::filled(|st| unsafe { libc::fstat(fd.as_raw_fd(), st) })
    }

    /// The stat of `path` itself, a symlink not followed: only for what the user named (a
    /// root of the walk); anything below it is asked through its directory.
    pub fn lstat(path: &Path) -> io::Result<Stat> {
        let path = c_name(path.as_os_str())?;
        // SAFETY: `path` is NUL-terminated and lives for the call; the pointer is to a live
        // local of `filled`.
        Stat::filled(|st| unsafe { libc::lstat(path.as_ptr(), st) })
    }

    /// The `S_IFMT` bits.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }

    /// `(dev, ino)`: what identifies an inode during one run.
    pub fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The mtime in nanoseconds, saturated: a file's owner may set its mtime (and atime) past
    /// the year 2262, whose nanoseconds do not fit in 64 bits.
    pub fn mtime_ns(&self) -> i64 {
        nanoseconds(self.mtime, self.mtime_nsec)
    }

    /// The atime in nanoseconds, saturated.
    pub fn atime_ns(&self) -> i64 {
        nanoseconds(self.atime, self.atime_nsec)
    }

    /// The ctime in nanoseconds, saturated (the clock may have been set far ahead).
    pub fn ctime_ns(&self) -> i64 {
        nanoseconds(self.ctime, self.ctime_nsec)
    }
}

fn nanoseconds(seconds: i64, nanos: i64) -> i64 {
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl DirHandle {
    /// Opens the directory `path`, with `flags` added (the walk's `O_NOATIME`); fails if its
    /// last component is a symlink.
    pub fn open(path: &Path, flags: libc::c_int) -> io::Result<DirHandle> {
        let path = c_name(path.as_os_str())?;
        // SAFETY: `path` is a NUL-terminated string that lives for the call.
        let fd = unsafe { libc::open(path.as_ptr(), OPEN_FLAGS | flags) };
        Ok(DirHandle { fd: owned(fd)? })
    }

    /// Opens the directory `path`, following symlinks in every component: only for a path the
    /// user named (the directory a walked root that is no directory itself is in).
    pub fn open_resolved(path: &Path) -> io::Result<DirHandle> {
        let path = c_name(path.as_os_str())?;
        // SAFETY: as in `open`.
        let fd = unsafe { libc::open(path.as_ptr(), OPEN_FLAGS & !libc::O_NOFOLLOW) };
        Ok(DirHandle { fd: owned(fd)? })
    }

    /// Opens the subdirectory `name`, with `flags` added; fails if it is no longer a directory
    /// (a symlink now).
    pub fn open_child(&self, name: &OsStr, flags: libc::c_int) -> io::Result<DirHandle> {
        let name = c_name(name)?;
        // SAFETY: our descriptor is open; `name` is NUL-terminated and lives for the call.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), name.as_ptr(), OPEN_FLAGS | flags) };
        Ok(DirHandle { fd: owned(fd)? })
    }

    /// Opens the directory `relative` below this one, one component at a time, each without
    /// following a symlink; `..` is refused, so the result is always below this directory.
    pub fn open_descendant(&self, relative: &[u8]) -> io::Result<DirHandle> {
        let mut dir = DirHandle {
            fd: self.fd.try_clone()?,
        };
        for component in relative.split(|b| *b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a path below a directory cannot contain ..",
                    ));
                }
                name => dir = dir.open_child(OsStr::from_bytes(name), 0)?,
            }
        }
        Ok(dir)
    }

    fn stat_at(&self, name: &OsStr, flags: libc::c_int) -> io::Result<Stat> {
        let c = c_name(name)?;
        // SAFETY: our descriptor is open, `c` NUL-terminated; the pointer is to a live local of
        // `filled`.
        Stat::filled(|st| unsafe { libc::fstatat(self.fd.as_raw_fd(), c.as_ptr(), st, flags) })
    }

    /// The stat of the entry `name`; a symlink is not followed.
    pub fn stat_child(&self, name: &OsStr) -> io::Result<Stat> {
        self.stat_at(name, libc::AT_SYMLINK_NOFOLLOW)
    }

    /// The stat of what `name` leads to, following symlinks wherever they go: only for what
    /// is looked at and never stored (borg's exclusion tags).
    pub fn stat_following(&self, name: &OsStr) -> io::Result<Stat> {
        self.stat_at(name, 0)
    }

    fn open_at(&self, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
        let c = c_name(name)?;
        // SAFETY: our descriptor is open; `c` is NUL-terminated and lives for the call.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | flags,
            )
        };
        Ok(File::from(owned(fd)?))
    }

    /// Opens the entry `name` for reading, with `flags` added; fails (`ELOOP`) if it is a
    /// symlink.
    pub fn open_file_child(&self, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
        self.open_at(name, libc::O_NOFOLLOW | flags)
    }

    /// Opens what `name` leads to for reading, following symlinks wherever they go: only for
    /// what is looked at and never stored (borg's exclusion tags).
    pub fn open_following(&self, name: &OsStr) -> io::Result<File> {
        self.open_at(name, 0)
    }

    /// The target of the symlink `name`.
    pub fn read_link_child(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        let c = c_name(name)?;
        let mut buffer = vec![0u8; 256];
        loop {
            // SAFETY: our descriptor is open, `c` NUL-terminated; `buffer` is valid for
            // `buffer.len()` bytes.
            let got = unsafe {
                libc::readlinkat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            // A target that fills the buffer may have been cut: try again with more room.
            if (got as usize) < buffer.len() {
                buffer.truncate(got as usize);
                return Ok(buffer);
            }
            buffer.resize(buffer.len() * 2, 0);
        }
    }

    /// A path to the entry `name` that goes through this open directory, for the calls that
    /// have no form relative to a directory descriptor (`llistxattr`, `lgetxattr` on a symlink
    /// or device, which are never opened): `/proc/self/fd/<fd>/<name>`. The magic link
    /// `/proc/self/fd/<fd>` is this very directory, whatever its path leads to meanwhile, so
    /// only `name` is looked up, in it; the caller must not follow `name` itself.
    pub fn path_of_child(&self, name: &OsStr) -> io::Result<CString> {
        static PROC: OnceLock<bool> = OnceLock::new();
        if !*PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "/proc is not mounted (attributes of symlinks and devices are read through it)",
            ));
        }
        let mut path = format!("/proc/self/fd/{}/", self.fd.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.as_bytes());
        c_name(OsStr::from_bytes(&path))
    }

    /// The entries, without `.` and `..`, in `readdir`'s order.
    pub fn entries(&self) -> io::Result<Vec<DirEntry>> {
        // readdir takes over the descriptor it is given: a duplicate, so ours stays open.
        // SAFETY: F_DUPFD_CLOEXEC on our open descriptor returns a new one or -1.
        let copy = owned(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: `copy` is an open directory descriptor; on success the stream owns it (and
        // closedir below closes it), so it is released from the OwnedFd first.
        let stream = unsafe { libc::fdopendir(copy.as_raw_fd()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(copy);
        // SAFETY: `stream` is a valid directory stream; the duplicate shares the file offset
        // with our descriptor, so the stream starts from the beginning explicitly.
        unsafe { libc::rewinddir(stream) };
        let mut entries = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; readdir reports its errors only through it.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `stream` is valid until closedir below.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let errno = io::Error::last_os_error();
                break match errno.raw_os_error() {
                    Some(0) => Ok(()),
                    _ => Err(errno),
                };
            }
            // SAFETY: a non-null entry points to a dirent whose d_name is NUL-terminated and
            // valid until the next readdir on this stream; it is copied out at once.
            let (name, ino, kind) = unsafe {
                (
                    CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes(),
                    (*entry).d_ino,
                    (*entry).d_type,
                )
            };
            if name == b"." || name == b".." {
                continue;
            }
            entries.push(DirEntry {
                name: OsString::from_vec(name.to_vec()),
                ino,
                kind,
            });
        };
        // SAFETY: `stream` came from fdopendir and is closed exactly once.
        unsafe { libc::closedir(stream) };
        result.map(|()| entries)
    }

    /// Removes the entry `name`: a file, link or other non-directory, or a whole directory tree
    /// (each of its directories opened by descriptor in turn). Returns how many entries went.
    pub fn remove(&self, name: &OsStr) -> io::Result<u64> {
        let c = c_name(name)?;
        // SAFETY: our descriptor is open; `c` is NUL-terminated and lives for the call.
        match check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            other => return other.map(|()| 1),
        }
        let child = self.open_child(name, 0)?;
        let mut removed = 0;
        for entry in child.entries()? {
            removed += child.remove(&entry.name)?;
        }
        // SAFETY: as above.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
        Ok(removed + 1)
    }
}

impl AsFd for DirHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for DirHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/f"), "f").unwrap();
        std::fs::write(root.join("d/g"), "g").unwrap();
        std::fs::write(root.join("h"), "h").unwrap();
    }

    #[test]
    fn entries_are_listed_and_trees_removed_by_descriptor() {
        let base = tempfile::tempdir().unwrap();
        tree(base.path());
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "keep").unwrap();
        std::os::unix::fs::symlink(&outside, base.path().join("link")).unwrap();
        let dir = DirHandle::open(base.path(), 0).unwrap();
        let mut listed: Vec<(String, bool)> = dir
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.name.to_string_lossy().into_owned(),
                    e.is_dir(&dir).unwrap(),
                )
            })
            .collect();
        listed.sort();
        let expected = [
            ("d", true),
            ("h", false),
            ("link", false),
            ("outside", true),
        ];
        let expected: Vec<(String, bool)> =
            expected.iter().map(|(n, d)| (n.to_string(), *d)).collect();
        assert_eq!(listed, expected);
        // Listing twice gives the same (the duplicate's offset does not leak).
        assert_eq!(dir.entries().unwrap().len(), 4);
        assert_eq!(dir.remove(OsStr::new("d")).unwrap(), 4);
        assert_eq!(dir.remove(OsStr::new("link")).unwrap(), 1);
        assert!(dir.open_child(OsStr::new("outside"), 0).is_ok());
        assert!(!base.path().join("d").exists());
        assert!(
            outside.join("keep").exists(),
            "a link's target is never touched"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_opening_cannot_lead_elsewhere() {
        let base = tempfile::tempdir().unwrap();
        let volume = base.path().join("volume");
        tree(&volume);
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "x").unwrap();
        let dir = DirHandle::open(&volume.join("d"), 0).unwrap();
        // Someone moves the directory away and puts a symlink to elsewhere in its place.
        std::fs::rename(volume.join("d"), base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("d")).unwrap();
        for entry in dir.entries().unwrap() {
            dir.remove(&entry.name).unwrap();
        }
        assert!(
            outside.join("precious").exists(),
            "nothing outside was removed"
        );
        assert!(
            std::fs::read_dir(base.path().join("moved"))
                .unwrap()
                .next()
                .is_none()
        );
        // And the symlink itself cannot be opened as a directory.
        let parent = DirHandle::open(&volume, 0).unwrap();
        assert!(parent.open_child(OsStr::new("d"), 0).is_err());
        assert!(DirHandle::open(&volume.join("d"), 0).is_err());
    }

    #[test]
    fn entries_are_stat_opened_and_read_below_the_directory_without_following_links() {
        let base = tempfile::tempdir().unwrap();
        tree(base.path());
        std::os::unix::fs::symlink("d/g", base.path().join("link")).unwrap();
        let dir = DirHandle::open(base.path(), 0).unwrap();
        let by_path = std::fs::symlink_metadata(base.path().join("h")).unwrap();
        let h = dir.stat_child(OsStr::new("h")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (
                h.dev,
                h.ino,
                h.mode,
                h.size,
                h.mtime,
                h.mtime_nsec,
                h.ctime_ns()
            ),
            (
                by_path.dev(),
                by_path.ino(),
                by_path.mode(),
                1,
                by_path.mtime(),
                by_path.mtime_nsec(),
                by_path.ctime() * 1_000_000_000 + by_path.ctime_nsec()
            )
        );
        let listed = dir.entries().unwrap();
        let h_entry = listed.iter().find(|e| e.name == "h").unwrap();
        assert_eq!(h_entry.ino, h.ino, "readdir's inode number");

        let link = OsStr::new("link");
        assert_eq!(dir.stat_child(link).unwrap().file_type(), libc::S_IFLNK);
        assert_eq!(dir.read_link_child(link).unwrap(), b"d/g");
        assert!(dir.stat_following(link).unwrap().is_file());
        let refused = dir.open_file_child(link, 0).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::ELOOP));
        let mut content = String::new();
        use std::io::Read;
        dir.open_following(link)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "g");
        // The path for calls without an *at form is the link itself, not its target.
        let through_proc = dir.path_of_child(link).unwrap();
        let seen = std::fs::symlink_metadata(OsStr::from_bytes(through_proc.as_bytes())).unwrap();
        assert!(seen.file_type().is_symlink());
        assert_eq!(seen.ino(), dir.stat_child(link).unwrap().ino);

        let long = "t".repeat(1000);
        std::os::unix::fs::symlink(&long, base.path().join("long")).unwrap();
        assert_eq!(
            dir.read_link_child(OsStr::new("long")).unwrap(),
            long.as_bytes()
        );
    }

    #[test]
    fn a_descendant_is_reached_only_through_directories() {
        let base = tempfile::tempdir().unwrap();
        let volume = base.path().join("volume");
        tree(&volume);
        let outside = base.path().join("outside");
        std::fs::create_dir_all(outside.join("e")).unwrap();
        std::fs::write(outside.join("e/f"), "secret").unwrap();
        let root = DirHandle::open(&volume, 0).unwrap();
        let e = root.open_descendant(b"d/e").unwrap();
        assert!(e.stat_child(OsStr::new("f")).unwrap().is_file());
        assert!(root.open_descendant(b"").is_ok());
        assert!(root.open_descendant(b"d/..").is_err());
        // `d` swapped for a symlink to a directory that holds `e/f` as well.
        std::fs::rename(volume.join("d"), base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("d")).unwrap();
        let refused = root.open_descendant(b"d/e").err().unwrap();
        // ENOTDIR: a symlink opened as a directory without following it.
        assert_eq!(refused.raw_os_error(), Some(libc::ENOTDIR));
        // What was open before the swap stays where it was.
        let mut content = String::new();
        use std::io::Read;
        e.open_file_child(OsStr::new("f"), 0)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "f");
    }

    #[test]
    fn far_future_times_saturate_instead_of_overflowing() {
        let base = tempfile::tempdir().unwrap();
        let file = base.path().join("future");
        std::fs::write(&file, "").unwrap();
        // Year 2400 (ext4 stores up to 2446): its nanoseconds do not fit in an i64.
        let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(13_569_465_600);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(far)
            .unwrap();
        let st = Stat::lstat(&file).unwrap();
        assert_eq!(st.mtime, 13_569_465_600);
        assert_eq!(st.mtime_ns(), i64::MAX);
    }
}
