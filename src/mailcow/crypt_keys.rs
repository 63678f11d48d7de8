//! dovecot's mail_crypt key pair, and every rule about it in one place. Mail in vmail is
//! encrypted with it, and dovecot makes a new, wrong pair when the files are missing or empty:
//! mail backed up or restored without its keys cannot be read. So a vmail backup refuses
//! without both keys ([`require_for_backup`]: in the helper, over the mounted crypt volume; in
//! `config check`, through dovecot-mailcow's file system), and a vmail restore refuses unless
//! the keys the mail needs end up in the target ([`restore_problem`]).

use std::path::Path;

use super::summary;

/// The key pair's files, in the crypt volume (dovecot-mailcow's `/mail_crypt`).
pub const CRYPT_KEYS: [&str; 2] = ["ecprivkey.pem", "ecpubkey.pem"];

/// What is at a key's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFile {
    /// A regular file, not empty: a key dovecot can use.
    Usable,
    Empty,
    NotAFile,
    Missing,
    Unreadable,
}

impl KeyFile {
    /// The file at `path` on this machine.
    pub fn at(path: &Path) -> KeyFile {
        match std::fs::metadata(path) {
            Ok(st) if st.is_file() && st.len() > 0 => KeyFile::Usable,
            Ok(st) if st.is_file() => KeyFile::Empty,
            Ok(_) => KeyFile::NotAFile,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::Missing,
            Err(_) => KeyFile::Unreadable,
        }
    }

    /// A file of `size` bytes, `None` when nothing is there (what a container's file system
    /// tells through the Docker API).
    pub fn of_size(size: Option<u64>) -> KeyFile {
        match size {
            Some(0) => KeyFile::Empty,
            Some(_) => KeyFile::Usable,
            None => KeyFile::Missing,
        }
    }

    fn problem(self) -> Option<&'static str> {
        match self {
            KeyFile::Usable => None,
            KeyFile::Empty => Some("is empty"),
            KeyFile::NotAFile => Some("is not a file"),
            KeyFile::Missing => Some("is missing"),
            KeyFile::Unreadable => Some("cannot be read"),
        }
    }
}

/// A key that a vmail backup needs is not usable.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} {problem} in {place}; mail in vmail is encrypted with dovecot's mail_crypt key pair, and a backup without it cannot be read"
)]
pub struct UnusableKey {
    path: String,
    problem: &'static str,
    place: String,
}

/// Refuses a vmail backup unless both keys are usable. `key_files` are the keys' paths (as
/// the message shows them) with what is there, `place` says where they were looked at.
pub fn require_for_backup(
    key_files: impl IntoIterator<Item = (String, KeyFile)>,
    place: &str,
) -> Result<(), UnusableKey> {
    for (path, file) in key_files {
        if let Some(problem) = file.problem() {
            return Err(UnusableKey {
                path,
                problem,
                place: place.to_string(),
            });
        }
    }
    Ok(())
}

/// Why a vmail restore is refused for its mail_crypt keys.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysRefusal {
    #[error(
        "refusing to restore vmail: the archive holds no mail_crypt keys (crypt/ecprivkey.pem, crypt/ecpubkey.pem), so restoring crypt would leave dovecot without them"
    )]
    NoneToRestore,
    #[error(
        "refusing to restore vmail: the archive's mail is encrypted with other mail_crypt keys than this mailcow's; add --component crypt to restore the archive's keys too"
    )]
    OtherKeys,
    #[error(
        "refusing to restore vmail: neither the archive nor this mailcow's crypt volume holds the mail_crypt keys the mail is encrypted with"
    )]
    NoKeysAnywhere,
    #[error(
        "refusing to restore vmail: this mailcow's crypt volume holds no mail_crypt keys; add --component crypt to restore the archive's"
    )]
    NoKeysInTarget,
}

/// What restoring vmail means for its keys, from the archive's summary: a refusal (`Err`),
/// or the warning of a restore that goes ahead without being able to check them.
/// `with_crypt`: the archive's keys are restored too.
pub fn restore_problem(
    keys: &summary::CryptKeys,
    with_crypt: bool,
) -> Result<Option<String>, KeysRefusal> {
    if with_crypt {
        if keys.in_archive {
            return Ok(None);
        }
        return Err(KeysRefusal::NoneToRestore);
    }
    match (keys.in_archive, keys.in_target, keys.same) {
        (_, Some(true), Some(false)) => Err(KeysRefusal::OtherKeys),
        (false, Some(false) | None, _) => Err(KeysRefusal::NoKeysAnywhere),
        (true, Some(false) | None, _) => Err(KeysRefusal::NoKeysInTarget),
        (false, Some(true), _) => Ok(Some(
            "mail_crypt keys: the archive holds none, so it cannot be checked that this mailcow's keys are the ones its mail is encrypted with".into(),
        )),
        (true, Some(true), _) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_needs_both_keys_as_non_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let keys = |dir: &Path| {
            CRYPT_KEYS.map(|name| {
                let path = dir.join(name);
                (path.display().to_string(), KeyFile::at(&path))
            })
        };
        let e = require_for_backup(keys(dir.path()), "the crypt volume").unwrap_err();
        assert!(
            e.to_string()
                .contains("ecprivkey.pem is missing in the crypt volume")
        );
        std::fs::write(dir.path().join(CRYPT_KEYS[0]), b"").unwrap();
        let e = require_for_backup(keys(dir.path()), "x").unwrap_err();
        assert!(e.to_string().contains("ecprivkey.pem is empty"), "{e}");
        std::fs::write(dir.path().join(CRYPT_KEYS[0]), b"k").unwrap();
        std::fs::create_dir(dir.path().join(CRYPT_KEYS[1])).unwrap();
        let e = require_for_backup(keys(dir.path()), "x").unwrap_err();
        assert!(e.to_string().contains("ecpubkey.pem is not a file"), "{e}");
        std::fs::remove_dir(dir.path().join(CRYPT_KEYS[1])).unwrap();
        std::fs::write(dir.path().join(CRYPT_KEYS[1]), b"k").unwrap();
        assert!(require_for_backup(keys(dir.path()), "x").is_ok());
    }

    #[test]
    fn sizes_say_missing_empty_or_usable() {
        assert_eq!(KeyFile::of_size(None), KeyFile::Missing);
        assert_eq!(KeyFile::of_size(Some(0)), KeyFile::Empty);
        assert_eq!(KeyFile::of_size(Some(241)), KeyFile::Usable);
    }
}
