//! The security dir: what this machine remembers about each repository it has seen, in borg's
//! own layout (`<security>/<repo id>/{key-type,location,manifest-timestamp}`), so that borg and
//! mailcow-borg on one machine share and honour the same memory (`docs/borg-format.md` §8.1, §8.2;
//! the checks and their messages: `docs/borg-cli.md` §11).
//!
//! It is what detects a repository that was swapped (same id, another key type), moved (another
//! location) or rolled back to an older state (an older manifest timestamp than last seen: an
//! attacker with access to the server replaying old segments).

use std::path::{Path, PathBuf};

use crate::error::ErrorKind;
use crate::format::key::KeyType;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "the repository's manifest is older ({found}) than the one last seen here ({seen}): it was rolled back or replayed; if you restored the repository from a backup on purpose, delete {dir}"
    )]
    Replay {
        found: String,
        seen: String,
        dir: String,
    },
    #[error(
        "the repository's key type changed (was {seen}, is {found}) since it was last seen here: it may have been replaced; if that was intended, delete {dir}"
    )]
    KeyTypeChanged {
        seen: String,
        found: String,
        dir: String,
    },
    #[error(
        "this repository was previously at {seen}, now at {found}; if it was moved, set BORG_RELOCATED_REPO_ACCESS_IS_OK=yes"
    )]
    Relocated { seen: String, found: String },
    #[error(
        "this is a previously unknown unencrypted repository; to access it, set BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes"
    )]
    UnknownUnencrypted,
    #[error("cannot use the security dir {dir}: {detail}")]
    Io { dir: String, detail: String },
}

impl SecurityError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SecurityError::Replay { .. } | SecurityError::KeyTypeChanged { .. } => {
                ErrorKind::Integrity
            }
            // Borg asks; we need the answer given in advance.
            SecurityError::Relocated { .. } | SecurityError::UnknownUnencrypted => {
                ErrorKind::BadInput
            }
            SecurityError::Io { .. } => ErrorKind::Environment,
        }
    }
}

/// The answers a borg user gives through environment variables instead of prompts.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecurityConsent {
    pub relocated_ok: bool,
    pub unknown_unencrypted_ok: bool,
}

/// What is checked and then remembered.
pub struct Observed<'a> {
    pub key_type: KeyType,
    pub location: &'a str,
    pub manifest_timestamp: &'a str,
}

/// The security dir of one repository.
pub struct SecurityDir {
    dir: PathBuf,
}

impl SecurityDir {
    pub fn new(base: &Path, repository_id: &[u8; 32]) -> SecurityDir {
        SecurityDir {
            dir: base.join(crate::format::key::hex(repository_id)),
        }
    }

    /// `<security dir>/<repository id>`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .map(|s| s.trim_end().to_string())
    }

    /// Borg's `assert_secure`: refuses what does not match memory, then remembers `seen`.
    pub fn check_and_remember(
        &self,
        seen: &Observed,
        consent: SecurityConsent,
    ) -> Result<(), SecurityError> {
        let shown = self.dir.display().to_string();
        let known = self.dir.exists();
        if !known && !seen.key_type.is_encrypted() && !consent.unknown_unencrypted_ok {
            return Err(SecurityError::UnknownUnencrypted);
        }
        if let Some(previous) = self.read("key-type")
            && previous != (seen.key_type as u8).to_string()
        {
            return Err(SecurityError::KeyTypeChanged {
                seen: previous,
                found: (seen.key_type as u8).to_string(),
                dir: shown,
            });
        }
        if let Some(previous) = self.read("location")
            && previous != seen.location
            && !consent.relocated_ok
        {
            return Err(SecurityError::Relocated {
                seen: previous,
                found: seen.location.to_string(),
            });
        }
        // Borg compares the ISO timestamps as strings; they have a fixed width, so that orders them.
        if let Some(previous) = self.read("manifest-timestamp")
            && previous.as_str() > seen.manifest_timestamp
        {
            return Err(SecurityError::Replay {
                found: seen.manifest_timestamp.to_string(),
                seen: previous,
                dir: shown,
            });
        }
        self.remember(seen).map_err(|e| SecurityError::Io {
            dir: shown,
            detail: e.to_string(),
        })
    }

    /// Records what a writer just committed, so that the next check compares against it.
    pub fn remember(&self, seen: &Observed) -> std::io::Result<()> {
        super::durable::create_private_dir_all(&self.dir)?;
        for (name, value) in [
            ("key-type", (seen.key_type as u8).to_string()),
            ("location", seen.location.to_string()),
            ("manifest-timestamp", seen.manifest_timestamp.to_string()),
        ] {
            // A file that already says it stays as it is (most runs change only the timestamp).
            if self.read(name).as_deref() == Some(value.as_str()) {
                continue;
            }
            // A crash never leaves a half-written file to compare against, and a power loss
            // no older one than what was relied on.
            super::durable::write_durably(&self.dir.join(name), value.as_bytes())?;
        }
        Ok(())
    }

    /// The empty `tam_required` file borg's `init` leaves: for keys that do not say whether
    /// they require TAMs (made before borg 1.0.9), it says they do.
    pub fn remember_tam_required(&self) -> std::io::Result<()> {
        super::durable::create_private_dir_all(&self.dir)?;
        super::durable::write_durably(&self.dir.join("tam_required"), b"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_key_change_and_relocation_are_detected() {
        let base = tempfile::tempdir().unwrap();
        let dir = SecurityDir::new(base.path(), &[7; 32]);
        let seen = |ts: &'static str, location: &'static str| Observed {
            key_type: KeyType::Blake2Repokey,
            location,
            manifest_timestamp: ts,
        };
        let ok = SecurityConsent::default();
        dir.check_and_remember(&seen("2026-01-02T00:00:00.000000", "ssh://h/r"), ok)
            .unwrap();
        dir.check_and_remember(&seen("2026-01-03T00:00:00.000000", "ssh://h/r"), ok)
            .unwrap();
        let replay = dir.check_and_remember(&seen("2026-01-02T00:00:00.000000", "ssh://h/r"), ok);
        assert!(
            matches!(replay, Err(SecurityError::Replay { .. })),
            "{replay:?}"
        );
        let moved = dir.check_and_remember(&seen("2026-01-04T00:00:00.000000", "ssh://x/r"), ok);
        assert!(matches!(moved, Err(SecurityError::Relocated { .. })));
        let consent = SecurityConsent {
            relocated_ok: true,
            ..ok
        };
        dir.check_and_remember(&seen("2026-01-04T00:00:00.000000", "ssh://x/r"), consent)
            .unwrap();
        let swapped = dir.check_and_remember(
            &Observed {
                key_type: KeyType::Repokey,
                location: "ssh://x/r",
                manifest_timestamp: "2026-01-05T00:00:00.000000",
            },
            ok,
        );
        assert!(matches!(swapped, Err(SecurityError::KeyTypeChanged { .. })));
        assert_eq!(
            std::fs::read_to_string(
                base.path()
                    .join(crate::format::key::hex(&[7; 32]))
                    .join("key-type")
            )
            .unwrap(),
            "5"
        );

        let unknown = SecurityDir::new(base.path(), &[8; 32]).check_and_remember(
            &Observed {
                key_type: KeyType::Plaintext,
                location: "/r",
                manifest_timestamp: "2026-01-01T00:00:00.000000",
            },
            ok,
        );
        assert!(matches!(unknown, Err(SecurityError::UnknownUnencrypted)));
    }
}
