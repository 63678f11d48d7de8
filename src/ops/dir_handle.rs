//! Directories worked on by descriptor, never again by path.
//!
//! A restore mirrors directories (removes what the archive does not hold) in volumes that
//! other services' users can write to. Working by path, a directory swapped for a symlink
//! between our look and our removal would lead the removal out of the volume. A [`DirHandle`]
//! is opened without following symlinks, and everything below it — listing, opening a
//! subdirectory, removing — is relative to the open directory: whatever is renamed or replaced
//! meanwhile, the work stays in the directory that was opened.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// An open directory.
pub struct DirHandle {
    fd: OwnedFd,
}

/// One entry of a directory.
pub struct DirEntry {
    pub name: OsString,
    /// A directory itself, not a symlink to one.
    pub is_dir: bool,
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
    /// Opens the directory `path`; fails (`ELOOP`) if its last component is a symlink.
    pub fn open(path: &Path) -> io::Result<DirHandle> {
        let path = c_name(path.as_os_str())?;
        // SAFETY: `path` is a NUL-terminated string that lives for the call.
        let fd = unsafe { libc::open(path.as_ptr(), OPEN_FLAGS) };
        Ok(DirHandle { fd: owned(fd)? })
    }

    /// Opens the subdirectory `name`; fails if it is no longer a directory (a symlink now).
    pub fn open_child(&self, name: &OsStr) -> io::Result<DirHandle> {
        let name = c_name(name)?;
        // SAFETY: our descriptor is open; `name` is NUL-terminated and lives for the call.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), name.as_ptr(), OPEN_FLAGS) };
        Ok(DirHandle { fd: owned(fd)? })
    }

    /// The entries, without `.` and `..`.
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
            let (name, kind) = unsafe {
                (
                    CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes().to_vec(),
                    (*entry).d_type,
                )
            };
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsString::from_vec(name);
            let is_dir = match kind {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => self.is_dir_entry(&name)?,
                _ => false,
            };
            entries.push(DirEntry { name, is_dir });
        };
        // SAFETY: `stream` came from fdopendir and is closed exactly once.
        unsafe { libc::closedir(stream) };
        result.map(|()| entries)
    }

    /// For file systems whose directory entries carry no type: asks, without following a link.
    fn is_dir_entry(&self, name: &OsStr) -> io::Result<bool> {
        let c = c_name(name)?;
        // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: our descriptor is open, `c` NUL-terminated, `st` a live local.
        check(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
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
        let child = self.open_child(name)?;
        let mut removed = 0;
        for entry in child.entries()? {
            removed += child.remove(&entry.name)?;
        }
        // SAFETY: as above.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
        Ok(removed + 1)
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
        let dir = DirHandle::open(base.path()).unwrap();
        let mut listed: Vec<(String, bool)> = dir
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.is_dir))
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
        assert!(dir.open_child(OsStr::new("outside")).is_ok());
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
        let dir = DirHandle::open(&volume.join("d")).unwrap();
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
        let parent = DirHandle::open(&volume).unwrap();
        assert!(parent.open_child(OsStr::new("d")).is_err());
        assert!(DirHandle::open(&volume.join("d")).is_err());
    }
}
