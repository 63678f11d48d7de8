//! A file system object's metadata as the keys of a borg 1.4.5 item (`archive.py:
//! MetadataCollector`; docs/create-notes.md §2).
//!
//! The simple keys come from the walk's stat: `mode`, `uid`, `gid`, `user`/`group` (nil when the
//! id has no name, or with `--numeric-ids`), `mtime`, `ctime` (on by default) and `atime` (off by
//! default). Times are clamped to borg's `safe_ns` range. The extended keys are read through the
//! open descriptor when there is one (files, directories, fifos) and through a path otherwise
//! (symlinks, devices — never opened, as borg never opens them; see `DirHandle::path_of_child`):
//!
//! - `bsdflags`: Linux inode flags through `FS_IOC_GETFLAGS`, only nodump/immutable/append, and
//!   only through a descriptor;
//! - `xattrs`: every name but `system.posix_acl_*` (those are the ACLs), an empty value as nil;
//! - `acl_access` / `acl_default`: only when the access ACL says more than the mode bits; a
//!   directory then also gets its default ACL, empty text when it has none (see [`acl`]).
//!
//! Each key is present only when non-empty, as in borg.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

use crate::format::item::Item;
use crate::ops::acl;
use crate::ops::dir_handle::Stat;
use crate::ops::owners::Owners;

/// borg's `MAX_NS`: the latest time a 32-bit platform can restore, less two days.
const MAX_NS: i64 = (i32::MAX as i64 - 48 * 3600) * 1_000_000_000;

/// Which metadata is stored; borg's `--numeric-ids`, `--atime`, `--noctime`, `--noflags`,
/// `--noxattrs`, `--noacls`.
#[derive(Clone, Copy, Debug)]
pub struct MetaOptions {
    pub numeric_ids: bool,
    pub atime: bool,
    pub ctime: bool,
    pub flags: bool,
    pub xattrs: bool,
    pub acls: bool,
}

impl Default for MetaOptions {
    fn default() -> Self {
        MetaOptions {
            numeric_ids: false,
            atime: false,
            ctime: true,
            flags: true,
            xattrs: true,
            acls: true,
        }
    }
}

fn safe_ns(nanoseconds: i64) -> i64 {
    nanoseconds.clamp(0, MAX_NS)
}

/// `mode`, owners and times from a stat.
pub fn stat_attrs(item: &mut Item, st: &Stat, owners: &Owners, options: MetaOptions) {
    item.mode = Some(st.mode);
    item.uid = Some(st.uid);
    item.gid = Some(st.gid);
    let name =
        |name: Option<&[u8]>| Some(name.filter(|_| !options.numeric_ids).map(<[u8]>::to_vec));
    item.user = name(owners.user_name(st.uid));
    item.group = name(owners.group_name(st.gid));
    item.mtime = safe_ns(st.mtime_ns());
    item.atime = options.atime.then(|| safe_ns(st.atime_ns()));
    item.ctime = options.ctime.then(|| safe_ns(st.ctime_ns()));
}

/// Where extended attributes are read from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// An open descriptor (a directory's default ACL too is read through it).
    Fd(RawFd),
    /// The path itself, never followed if it is a symlink.
    Path(&'a CStr),
}

/// Adds `bsdflags`, `xattrs` and the ACLs. An error reading them fails the item (borg's `E`);
/// a single unreadable xattr is only a warning, returned.
pub fn ext_attrs(
    item: &mut Item,
    source: Source,
    is_dir: bool,
    owners: &Owners,
    options: MetaOptions,
) -> io::Result<Vec<String>> {
    let mut warnings = Vec::new();
    if options.flags
        && let Source::Fd(fd) = source
    {
        item.bsdflags = Some(bsd_flags(fd)).filter(|f| *f != 0);
    }
    if options.xattrs {
        let mut xattrs = Vec::new();
        for name in list_xattrs(source)? {
            if name.starts_with(b"system.posix_acl_") {
                continue;
            }
            match get_xattr(source, &name) {
                Ok(Some(value)) => xattrs.push((name, value)),
                Ok(None) => {} // removed since it was listed
                Err(e) => warnings.push(format!(
                    "when getting extended attribute {}: {e}",
                    String::from_utf8_lossy(&name)
                )),
            }
        }
        xattrs.sort();
        item.xattrs = Some(xattrs).filter(|x| !x.is_empty());
    }
    if options.acls {
        let access = match get_xattr(source, b"system.posix_acl_access") {
            Ok(value) => value,
            Err(e) if unsupported(&e) => None,
            Err(e) => return Err(e),
        };
        if let Some(access) = access.filter(|a| acl::is_extended(a)) {
            item.acl_access = Some(acl::to_text(&access, owners, options.numeric_ids)?);
            if is_dir {
                // libacl gives an empty ACL, and so empty text, when there is no default ACL.
                item.acl_default = Some(match get_xattr(source, b"system.posix_acl_default")? {
                    Some(default) => acl::to_text(&default, owners, options.numeric_ids)?,
                    None => Vec::new(),
                });
            }
        }
    }
    Ok(warnings)
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM))
}

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IMMUTABLE_FL: libc::c_int = 0x10;
const FS_APPEND_FL: libc::c_int = 0x20;
const FS_NODUMP_FL: libc::c_int = 0x40;

/// The inode flags borg keeps, as BSD flags (nodump 1, immutable 2, append 4); 0 where the
/// file system has none.
fn bsd_flags(fd: RawFd) -> u32 {
    let mut flags: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor owned by the caller; FS_IOC_GETFLAGS writes one int
    // to the pointer, which points at a live local.
    if unsafe { libc::ioctl(fd, FS_IOC_GETFLAGS, &mut flags as *mut libc::c_int) } == -1 {
        return 0;
    }
    [(FS_NODUMP_FL, 1), (FS_IMMUTABLE_FL, 2), (FS_APPEND_FL, 4)]
        .into_iter()
        .filter(|(linux, _)| flags & linux != 0)
        .map(|(_, bsd)| bsd)
        .sum()
}

/// Calls a size-probing xattr function: first straight into a small buffer, which holds the
/// answer for almost every file (most have no xattrs at all), and only when that is too small
/// asks for the size and retries (the value may grow in between).
fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut small = [0u8; 512];
    let got = call(small.as_mut_ptr().cast(), small.len());
    if got >= 0 {
        return Ok(small[..got as usize].to_vec());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ERANGE) {
        return Err(e);
    }
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0u8; size as usize];
        let got = call(buffer.as_mut_ptr().cast(), buffer.len());
        if got >= 0 {
            buffer.truncate(got as usize);
            return Ok(buffer);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

fn list_xattrs(source: Source) -> io::Result<Vec<Vec<u8>>> {
    let names = read_sized(|buf, len| match source {
        // SAFETY: `fd` is open, `path` NUL-terminated; `buf` is null with `len` 0 (size probe)
        // or valid for `len` bytes (a live buffer of `read_sized`).
        Source::Fd(fd) => unsafe { libc::flistxattr(fd, buf.cast(), len) },
        Source::Path(path) => unsafe { libc::llistxattr(path.as_ptr(), buf.cast(), len) },
    });
    match names {
        Ok(names) => Ok(names
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if unsupported(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// One xattr's value; `None` if the object does not have it.
fn get_xattr(source: Source, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    let value = read_sized(|buf, len| match source {
        // SAFETY: as in `list_xattrs`; `name` is NUL-terminated.
        Source::Fd(fd) => unsafe { libc::fgetxattr(fd, name.as_ptr(), buf, len) },
        Source::Path(path) => unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf, len) },
    });
    match value {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}
