//! What this machine keeps must be private and must survive a power loss.
//!
//! Private: the state dir, the caches and borg's security dir are made 0700 whatever the umask
//! — the files cache holds a hash of every mailbox's path, the security dir the nonce counter
//! whose reuse would leak plaintext. Durable: a file that must never be seen half-written, and
//! never be seen *old* after it was relied on (the nonce record), is written to a temporary
//! name, synced, renamed, and its directory synced, since a rename lives in the directory.

use std::fs::{DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `path` and any missing parents as directories only their owner can enter. Existing
/// directories are left as they are: they are the admin's.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        // The umask may have taken bits away; none are added beyond the owner's.
        Ok(()) => std::fs::set_permissions(path, Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `content` so that after a crash or power loss it holds either the old
/// content or the new, and once this returns, the new.
pub fn write_durably(path: &Path, content: &[u8]) -> io::Result<()> {
    write_durably_with_mode(path, content, 0o666)
}

/// [`write_durably`] for a file only its owner may read (a key file), whatever the umask.
pub fn write_private_durably(path: &Path, content: &[u8]) -> io::Result<()> {
    write_durably_with_mode(path, content, 0o600)
}

/// [`write_durably`] for a file everyone may read and only its owner may change (a systemd
/// unit, a cron.d entry: cron ignores a group- or world-writable one), exactly 0644 whatever
/// the umask.
pub fn write_public_durably(path: &Path, content: &[u8]) -> io::Result<()> {
    write_durably_with_mode(path, content, 0o644)
}

fn write_durably_with_mode(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temporary file left by a crash may have other permissions: start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask only takes bits away: a mode below 0666 is set whole, so a umask of 077 cannot
    // hide a file that others must read.
    if mode != 0o666 {
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename lives in the directory.
    File::open(dir)?.sync_all()
}

/// Makes everything written so far durable, on every file system: at the end of a restore,
/// whose files and directories may lie on several volumes, one `sync` is far cheaper than
/// syncing each file and directory.
pub fn sync_all_file_systems() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn private_dirs_are_0700_whatever_the_umask_and_existing_ones_are_kept() {
        let base = tempfile::tempdir().unwrap();
        let existing = base.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, Permissions::from_mode(0o755)).unwrap();
        // SAFETY: umask only sets the process's file mode mask; it is put back at once.
        let old = unsafe { libc::umask(0o277) };
        let made = create_private_dir_all(&existing.join("a/b"));
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        made.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&existing), 0o755);
        assert_eq!(mode(&existing.join("a")), 0o700);
        assert_eq!(mode(&existing.join("a/b")), 0o700);
        create_private_dir_all(&existing.join("a/b")).unwrap();
    }

    #[test]
    fn a_durable_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nonce");
        write_durably(&path, b"one").unwrap();
        write_durably(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_private_write_is_for_the_owner_only_also_over_a_leftover_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let leftover = dir.path().join("key.tmp");
        std::fs::write(&leftover, b"old").unwrap();
        std::fs::set_permissions(&leftover, Permissions::from_mode(0o644)).unwrap();
        write_private_durably(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o077, 0);
        assert!(!leftover.exists());
    }

    #[test]
    fn a_public_write_is_0644_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailcow-borg.timer");
        // SAFETY: umask only sets the process's file mode mask; it is put back at once.
        let old = unsafe { libc::umask(0o077) };
        let written = write_public_durably(&path, b"[Timer]\n");
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        written.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
    }
}
