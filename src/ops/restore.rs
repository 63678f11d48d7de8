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

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::format::item::{Item, ItemKind};

/// Name → id maps from the local account databases.
#[derive(Default)]
pub struct Owners {
    users: HashMap<Vec<u8>, u32>,
    groups: HashMap<Vec<u8>, u32>,
}

impl Owners {
    /// Reads `/etc/passwd` and `/etc/group`; missing files mean "no names known".
    pub fn load() -> Owners {
        Owners {
            users: read_id_db(Path::new("/etc/passwd")),
            groups: read_id_db(Path::new("/etc/group")),
        }
    }

    fn uid(&self, name: &[u8]) -> Option<u32> {
        self.users.get(name).copied()
    }

    fn gid(&self, name: &[u8]) -> Option<u32> {
        self.groups.get(name).copied()
    }

    /// The uid and gid to give an extracted item.
    pub fn ids_for(&self, item: &Item, numeric_ids: bool) -> (Option<u32>, Option<u32>) {
        if numeric_ids {
            return (item.uid, item.gid);
        }
        let named = |name: &Option<Option<Vec<u8>>>, lookup: &dyn Fn(&[u8]) -> Option<u32>| {
            name.as_ref().and_then(|n| n.as_deref()).and_then(lookup)
        };
        (
            named(&item.user, &|n| self.uid(n)).or(item.uid),
            named(&item.group, &|n| self.gid(n)).or(item.gid),
        )
    }
}

/// `name:x:id:...` lines: the first and third field.
fn read_id_db(path: &Path) -> HashMap<Vec<u8>, u32> {
    let Ok(data) = std::fs::read(path) else {
        return HashMap::new();
    };
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|b| *b == b':');
            let name = fields.next()?;
            let id = std::str::from_utf8(fields.nth(1)?).ok()?.parse().ok()?;
            Some((name.to_vec(), id))
        })
        .collect()
}

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

/// Refuses to create anything below a symlink: an archive that holds a symlink `a -> /etc` and
/// then a file `a/passwd` must not write to `/etc` (borg 1.4.5's hardening, CVE-2026-62268).
/// `verified` remembers directories already found to be real, so each is checked once.
pub fn check_parents(
    root: &Path,
    target: &Path,
    verified: &mut std::collections::HashSet<std::path::PathBuf>,
) -> Result<(), String> {
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
                return Err(format!(
                    "not extracted: its parent {} is a symlink (malicious or corrupted archive)",
                    dir.display()
                ));
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
    if !parent_exists
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(parent)?;
    }
    Ok(())
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
            let result = acl_to_xattr(text, owners, numeric_ids)
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

// The kernel's POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h).
const ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Borg's ACL text (`tag:qualifier:perms[:id]` per line) to the kernel's binary xattr value.
fn acl_to_xattr(text: &[u8], owners: &Owners, numeric_ids: bool) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ACL {what}"));
    let mut entries = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|b| *b == b':').collect();
        if fields.len() < 3 {
            return Err(bad("entry without permissions"));
        }
        let (tag, qualifier, perms) = (fields[0], fields[1], fields[2]);
        let stored_id = fields
            .get(3)
            .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok());
        let numeric = std::str::from_utf8(qualifier)
            .ok()
            .and_then(|q| q.parse().ok());
        let id_for = |lookup: &dyn Fn(&[u8]) -> Option<u32>| {
            if numeric_ids {
                stored_id.or(numeric)
            } else {
                lookup(qualifier).or(stored_id).or(numeric)
            }
            .ok_or_else(|| bad("entry names an unknown user or group"))
        };
        let (tag, id) = match (tag, qualifier.is_empty()) {
            (b"user", true) => (0x01u16, ACL_UNDEFINED_ID),
            (b"user", false) => (0x02, id_for(&|n| owners.uid(n))?),
            (b"group", true) => (0x04, ACL_UNDEFINED_ID),
            (b"group", false) => (0x08, id_for(&|n| owners.gid(n))?),
            (b"mask", _) => (0x10, ACL_UNDEFINED_ID),
            (b"other", _) => (0x20, ACL_UNDEFINED_ID),
            _ => return Err(bad("entry of unknown type")),
        };
        let mut perm = 0u16;
        for (i, flag) in [(b'r', 4), (b'w', 2), (b'x', 1)] {
            if perms.contains(&i) {
                perm |= flag;
            }
        }
        entries.push((tag, id, perm));
    }
    // The kernel requires entries ordered by tag, and named ones by id.
    entries.sort_by_key(|(tag, id, _)| (*tag, *id));
    let mut value = ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for (tag, id, perm) in entries {
        value.extend_from_slice(&tag.to_le_bytes());
        value.extend_from_slice(&perm.to_le_bytes());
        value.extend_from_slice(&id.to_le_bytes());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_text_becomes_the_kernels_binary_form() {
        let owners = Owners {
            users: [(b"alice".to_vec(), 1001)].into_iter().collect(),
            groups: HashMap::new(),
        };
        let text = b"user::rw-\nuser:alice:r--:1234\ngroup::r--\ngroup:staff:rwx:50\nmask::rwx\nother::---";
        let value = acl_to_xattr(text, &owners, false).unwrap();
        let entry = |tag: u16, perm: u16, id: u32| {
            let mut e = tag.to_le_bytes().to_vec();
            e.extend_from_slice(&perm.to_le_bytes());
            e.extend_from_slice(&id.to_le_bytes());
            e
        };
        let mut expected = 2u32.to_le_bytes().to_vec();
        for e in [
            entry(0x01, 6, u32::MAX),
            entry(0x02, 4, 1001), // alice exists here: her local uid wins
            entry(0x04, 4, u32::MAX),
            entry(0x08, 7, 50), // staff does not: the stored gid
            entry(0x10, 7, u32::MAX),
            entry(0x20, 0, u32::MAX),
        ] {
            expected.extend(e);
        }
        assert_eq!(value, expected);
        let numeric = acl_to_xattr(text, &owners, true).unwrap();
        assert_eq!(&numeric[12..20], &entry(0x02, 4, 1234)[..]);
    }
}
