//! Key files of keyfile-mode repositories on this machine: finding the one of a repository
//! (`BORG_KEY_FILE`, or the file in the keys dir whose header names it) and choosing where a new
//! one goes, by borg's rules (`crypto/key.py: KeyfileKey`, `Location.to_key_filename`), so that
//! borg and we find each other's key files.

use std::path::{Path, PathBuf};

use crate::format::key::{Keyfile, hex};
use crate::repo::location::{Location, Repo};

use super::open::{AccessOptions, OpenError};

/// `BORG_KEY_FILE`, or the file in the keys dir whose header names this repository.
pub fn find(id: &[u8; 32], options: &AccessOptions) -> Result<(PathBuf, Keyfile), OpenError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| OpenError::KeyFile {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    };
    if let Some(path) = &options.key_file {
        let keyfile = Keyfile::parse(&read(path)?).map_err(OpenError::Key)?;
        keyfile.check_repository(id).map_err(OpenError::Key)?;
        return Ok((path.clone(), keyfile));
    }
    if let Some((path, text)) = in_keys_dir(id, options) {
        let keyfile = Keyfile::parse(&text).map_err(OpenError::Key)?;
        return Ok((path, keyfile));
    }
    Err(OpenError::NoKeyFile {
        id: hex(id),
        dir: options.keys_dir.display().to_string(),
    })
}

/// The file in the keys dir whose header names this repository, and its text.
fn in_keys_dir(id: &[u8; 32], options: &AccessOptions) -> Option<(PathBuf, String)> {
    let wanted = format!("BORG_KEY {}", hex(id));
    std::fs::read_dir(&options.keys_dir)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let text = std::fs::read_to_string(entry.path()).ok()?;
            (text.lines().next().map(str::trim_end) == Some(wanted.as_str()))
                .then(|| (entry.path(), text))
        })
}

/// Where `key import` writes the key of repository `id` at `location` (borg's
/// `get_existing_or_new_target`): `BORG_KEY_FILE`, else the key file that names the repository
/// — replaced even when damaged, which is the usual reason for an import (borg would write a
/// second file beside it) — else a new file by [`new_target`]'s rule.
pub fn existing_or_new_target(
    id: &[u8; 32],
    location: &Location,
    options: &AccessOptions,
) -> PathBuf {
    if options.key_file.is_none()
        && let Some((path, _)) = in_keys_dir(id, options)
    {
        return path;
    }
    new_target(location, options)
}

/// Where a new key file for `location` goes: `BORG_KEY_FILE` if set, else borg's name for the
/// location in the keys dir, with `.2`, `.3`, … appended while that name is taken.
pub fn new_target(location: &Location, options: &AccessOptions) -> PathBuf {
    if let Some(path) = &options.key_file {
        return std::path::absolute(path).unwrap_or_else(|_| path.clone());
    }
    let base = options.keys_dir.join(file_name(location));
    let mut path = base.clone();
    let mut n = 1;
    while path.symlink_metadata().is_ok() {
        n += 1;
        path = PathBuf::from(format!("{}.{n}", base.display()));
    }
    path
}

/// `Location.to_key_filename`: the path (and for SSH the host, then `__`) with every character
/// that is not a word character (Python's unicode `\w`) made `_`, `_` stripped from both ends of
/// the path part, cut to 100 characters. The path is the one given (normalised), not made
/// absolute: borg names the key of `init repo` in the current directory `repo`.
pub fn file_name(location: &Location) -> String {
    let word = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = match &location.repo {
        Repo::Local { path } => word(path).trim_matches('_').to_string(),
        Repo::Ssh(target) => format!(
            "{}__{}",
            word(&target.host),
            word(&target.path).trim_matches('_')
        ),
    };
    name.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> String {
        file_name(&Location::parse(text, None).unwrap())
    }

    #[test]
    fn names_follow_borgs_rule() {
        assert_eq!(name("/srv/backup/mail-repo"), "srv_backup_mail_repo");
        assert_eq!(name("repo"), "repo");
        assert_eq!(name("file:///srv/./r"), "srv_r");
        assert_eq!(
            name("ssh://u@host.example:2222/./repo"),
            "host_example__repo"
        );
        assert_eq!(name("u@10.0.0.1:backups/mail"), "10_0_0_1__backups_mail");
        assert_eq!(name(&format!("/{}", "a".repeat(150))).len(), 100);
    }
}
