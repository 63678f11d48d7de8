//! The file system side of extract: making each kind of object and restoring its metadata the
//! way borg 1.x's `Archive.restore_attrs` does, in its order — owner, then mode (a chown clears
//! setuid bits), then ACLs, then xattrs (after the chown, which would drop capabilities), and
//! the times last.
//!
//! Owners are restored by name when the name exists on this machine, else by number (borg's
//! default), or always by number with `--numeric-ids`. Names are looked up in `/etc/passwd` and
//! `/etc/group` directly: a static binary cannot use glibc's NSS modules, and in the helper
//! container those files are all there is anyway.
//!
//! POSIX ACLs are stored by borg as text (`user:name:rw-:1234` lines); they are set here by
//! writing the kernel's binary form to the `system.posix_acl_*` xattrs, which is what libacl
//! itself does, so no libacl is needed.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::ErrorKind;
use crate::format::item::{Item, ItemKind};

use super::acl;
use super::owners::Owners;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An object of the archive that is not extracted because a directory above it is a symlink;
/// its message is the warning's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "not extracted: its parent {} is a symlink (malicious or corrupted archive)",
    parent.display()
)]
pub struct SymlinkParent {
    pub parent: std::path::PathBuf,
}

impl SymlinkParent {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Integrity
    }
}

/// Refuses to create anything below a symlink: an archive that holds a symlink `a -> /etc` and
/// then a file `a/passwd` must not write to `/etc` (borg 1.4.5's hardening, CVE-2026-62268).
/// `verified` remembers directories already found to be real, so each is checked once.
pub fn check_parents(
    root: &Path,
    target: &Path,
    verified: &mut std::collections::HashSet<std::path::PathBuf>,
) -> Result<(), SymlinkParent> {
    if target
        .parent()
        .is_some_and(|parent| verified.contains(parent))
    {
        return Ok(());
    }
    let Ok(relative) = target.strip_prefix(root) else {
        return Ok(());
    };
    let mut dir = root.to_path_buf();
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        if components.peek().is_none() {
            break;
        }
        dir.push(component);
        if verified.contains(&dir) {
            continue;
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(SymlinkParent { parent: dir });
            }
            Ok(meta) if meta.is_dir() => {
                verified.insert(dir.clone());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Makes room for a new object at `path`: anything but a directory already there is removed,
/// as borg does, and missing parents are created — private (0700), as borg creates them, since
/// no archived attributes will be applied to directories the archive does not hold.
pub fn prepare(path: &Path) -> io::Result<()> {
    prepare_in(path, false)
}

/// [`prepare`], skipping the parent when the caller knows it exists.
pub fn prepare_in(path: &Path, parent_exists: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    make_parents(path, parent_exists)
}

/// The missing parents of `path`, private (0700), unless the caller knows they exist.
pub fn make_parents(path: &Path, parent_exists: bool) -> io::Result<()> {
    if !parent_exists
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(parent)?;
    }
    Ok(())
}

/// Renames `from` to `to` unless something is at `to` already (then `AlreadyExists`): an
/// atomic check, so nothing that appeared meanwhile is replaced.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
}

/// Makes the directory `path`; one that is already there is kept (its contents stay, its
/// attributes are restored later), anything else in the way is replaced.
pub fn make_dir(path: &Path, parent_exists: bool) -> io::Result<()> {
    if parent_exists {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => return other,
        }
    }
    prepare_in(path, parent_exists)?;
    match std::fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Creates a new regular file for writing (owner-only until its attributes are restored). In
/// the usual case — nothing there yet, parent known — that is one system call; only when
/// something is in the way is the path cleared first, as [`prepare`] does.
pub fn create_file(path: &Path, parent_exists: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    if parent_exists {
        match open() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => return other,
        }
    }
    prepare_in(path, parent_exists)?;
    open()
}

/// Makes a non-regular, non-directory object: symlink, fifo or device node.
pub fn make_special(path: &Path, item: &Item) -> io::Result<()> {
    match item.kind() {
        ItemKind::Symlink => {
            let target = item.source.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
        }
        ItemKind::Fifo | ItemKind::CharDevice | ItemKind::BlockDevice => {
            let path = c_path(path)?;
            let mode = item.mode.unwrap_or(0);
            let rdev = item.rdev.unwrap_or(0) as libc::dev_t;
            // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
            check(unsafe { libc::mknod(path.as_ptr(), mode as libc::mode_t, rdev) })
        }
        other => Err(io::Error::other(format!(
            "cannot restore an item of kind {other:?}"
        ))),
    }
}

/// What attributes are set on: a regular file still open from writing it (no path lookups),
/// or a path (directories, symlinks and the like; symlinks themselves, never their targets).
pub enum Target<'a> {
    File(&'a std::fs::File),
    Path(&'a Path),
}

/// The system calls for one target, so the attribute logic is written once.
enum Handle<'a> {
    Fd(libc::c_int),
    Path(CString, std::marker::PhantomData<&'a ()>),
}

impl Handle<'_> {
    fn chown(&self, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
        // SAFETY: the descriptor is open (borrowed from a live File) or the path is a valid
        // NUL-terminated string; -1 (as unsigned) leaves an id unchanged.
        check(unsafe {
            match self {
                Handle::Fd(fd) => libc::fchown(*fd, uid, gid),
                Handle::Path(c, _) => libc::lchown(c.as_ptr(), uid, gid),
            }
        })
    }

    fn chmod(&self, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: as in `chown`.
        check(unsafe {
            match self {
                Handle::Fd(fd) => libc::fchmod(*fd, mode),
                Handle::Path(c, _) => libc::chmod(c.as_ptr(), mode),
            }
        })
    }

    fn set_xattr(&self, name: &[u8], value: &[u8]) -> io::Result<()> {
        let name = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
        // SAFETY: as in `chown`; `name` is NUL-terminated and `value` is valid for its length.
        check(unsafe {
            match self {
                Handle::Fd(fd) => {
                    libc::fsetxattr(*fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
                }
                Handle::Path(c, _) => libc::lsetxattr(
                    c.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                ),
            }
        })
    }

    fn set_times(&self, times: &[libc::timespec; 2]) -> io::Result<()> {
        // SAFETY: as in `chown`; `times` holds two valid timespecs.
        check(unsafe {
            match self {
                Handle::Fd(fd) => libc::futimens(*fd, times.as_ptr()),
                Handle::Path(c, _) => libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                ),
            }
        })
    }
}

/// Restores owner, mode, ACLs, xattrs and times. Failures to set ownership are ignored as borg
/// ignores them (an unprivileged restore keeps the user's own ids); the others are returned as
/// warnings, one per attribute that could not be set.
pub fn apply_attrs(target: Target, item: &Item, owners: &Owners, numeric_ids: bool) -> Vec<String> {
    use std::os::fd::AsRawFd;
    let handle = match target {
        Target::File(file) => Handle::Fd(file.as_raw_fd()),
        Target::Path(path) => match c_path(path) {
            Ok(c) => Handle::Path(c, std::marker::PhantomData),
            Err(_) => return vec!["path contains a NUL byte".into()],
        },
    };
    let mut warnings = Vec::new();
    let symlink = item.kind() == ItemKind::Symlink;
    let (uid, gid) = owners.ids_for(item, numeric_ids);
    let _ = handle.chown(
        uid.unwrap_or(u32::MAX) as libc::uid_t,
        gid.unwrap_or(u32::MAX) as libc::gid_t,
    );
    if !symlink
        && let Some(mode) = item.mode
        && let Err(e) = handle.chmod((mode & 0o7777) as libc::mode_t)
    {
        warnings.push(format!("cannot set mode: {e}"));
    }
    for (name, text) in [
        ("system.posix_acl_access", &item.acl_access),
        ("system.posix_acl_default", &item.acl_default),
    ] {
        if let Some(text) = text {
            let result = acl::to_xattr(text, owners, numeric_ids)
                .and_then(|value| handle.set_xattr(name.as_bytes(), &value));
            if let Err(e) = result {
                warnings.push(format!("cannot set ACL {name}: {e}"));
            }
        }
    }
    for (name, value) in item.xattrs.iter().flatten() {
        if let Err(e) = handle.set_xattr(name, value) {
            // Linux allows only some namespaces on symlinks; borg skips those silently too.
            if !(symlink && e.raw_os_error() == Some(libc::EPERM)) {
                warnings.push(format!(
                    "cannot set xattr {}: {e}",
                    String::from_utf8_lossy(name)
                ));
            }
        }
    }
    let mtime = timespec(item.mtime);
    let atime = item.atime.map(timespec).unwrap_or(mtime);
    if let Err(e) = handle.set_times(&[atime, mtime]) {
        warnings.push(format!("cannot set times: {e}"));
    }
    warnings
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_created_below_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let mut verified = std::collections::HashSet::new();
        assert_eq!(
            check_parents(root, &root.join("real/dir/file"), &mut verified),
            Ok(())
        );
        assert!(verified.contains(&root.join("real/dir")));
        let refused = check_parents(root, &root.join("link/passwd"), &mut verified).unwrap_err();
        assert_eq!(refused.parent, root.join("link"));
        assert_eq!(
            refused.to_string(),
            format!(
                "not extracted: its parent {} is a symlink (malicious or corrupted archive)",
                root.join("link").display()
            )
        );
    }
}
