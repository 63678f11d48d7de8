//! Where the repository passphrase comes from, in borg's order: `BORG_PASSPHRASE`, then
//! `BORG_PASSCOMMAND` (run without a shell, its first output line minus the newline), then
//! `BORG_PASSPHRASE_FD` (read to end from that descriptor). `--passphrase-file` comes first when
//! given, being the most explicit. There is no prompt: this runs from cron and in containers.
//!
//! The sources are described here and read only when a key actually needs unlocking, so an
//! unencrypted repository never runs the pass command.

use std::path::PathBuf;

use crate::error::ErrorKind;

/// The ways a passphrase can be handed to us; the CLI fills this in from flags and environment.
#[derive(Clone, Default)]
pub struct PassphraseSources {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
    pub command: Option<String>,
    pub fd: Option<String>,
}

impl std::fmt::Debug for PassphraseSources {
    /// Says which sources are set, never the passphrase itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseSources")
            .field("file", &self.file)
            .field("env", &self.env.as_ref().map(|_| "<redacted>"))
            .field("command", &self.command)
            .field("fd", &self.fd)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    #[error(
        "the repository key is encrypted and no passphrase was given: set BORG_PASSPHRASE, BORG_PASSCOMMAND or BORG_PASSPHRASE_FD, or use --passphrase-file"
    )]
    Missing,
    #[error("cannot read the passphrase file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("BORG_PASSCOMMAND failed: {0}")]
    Command(String),
    #[error("cannot read the passphrase from BORG_PASSPHRASE_FD={fd}: {detail}")]
    Fd { fd: String, detail: String },
}

impl PassphraseError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PassphraseError::Missing | PassphraseError::Command(_) => ErrorKind::BadInput,
            PassphraseError::File { .. } | PassphraseError::Fd { .. } => ErrorKind::Environment,
        }
    }
}

impl PassphraseSources {
    /// The passphrase from the first source that is set.
    pub fn read(&self) -> Result<String, PassphraseError> {
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| PassphraseError::File {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            return Ok(strip_newline(text));
        }
        if let Some(passphrase) = &self.env {
            return Ok(passphrase.clone());
        }
        if let Some(command) = &self.command {
            return run_pass_command(command);
        }
        if let Some(fd) = &self.fd {
            return read_fd(fd);
        }
        Err(PassphraseError::Missing)
    }
}

fn strip_newline(mut text: String) -> String {
    while text.ends_with('\n') {
        text.pop();
    }
    text
}

fn run_pass_command(command: &str) -> Result<String, PassphraseError> {
    let words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| PassphraseError::Command(format!("cannot parse {command:?}")))?;
    let output = std::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| PassphraseError::Command(format!("cannot run {:?}: {e}", words[0])))?;
    if !output.status.success() {
        return Err(PassphraseError::Command(format!(
            "{:?} ended with {}",
            words[0], output.status
        )));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| PassphraseError::Command("its output is not UTF-8".into()))?;
    Ok(strip_newline(text))
}

fn read_fd(fd: &str) -> Result<String, PassphraseError> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let error = |detail: String| PassphraseError::Fd {
        fd: fd.to_string(),
        detail,
    };
    let number: i32 = fd
        .parse()
        .map_err(|_| error("not a file descriptor number".into()))?;
    // Refuse descriptors that are not open, so `from_raw_fd` below gets a valid one.
    // SAFETY: fcntl(F_GETFD) only queries flags and is defined for any integer.
    if number < 0 || unsafe { libc::fcntl(number, libc::F_GETFD) } == -1 {
        return Err(error("the descriptor is not open".into()));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to us for this purpose
    // alone; the File takes ownership and closes it after reading, as borg does.
    let mut file = unsafe { std::fs::File::from_raw_fd(number) };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| error(e.to_string()))?;
    Ok(strip_newline(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let sources = PassphraseSources {
            env: Some("hunter2-secret".into()),
            command: Some("pass show borg".into()),
            ..Default::default()
        };
        let shown = format!("{sources:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("pass show borg"));
        let mut ssh = crate::repo::ssh::SshOptions::defaults(std::path::Path::new("/h"), "u");
        ssh.key_passphrase = Some("ssh-key-secret".into());
        let shown = format!("{ssh:?}");
        assert!(!shown.contains("ssh-key-secret"), "{shown}");
    }

    #[test]
    fn sources_are_tried_in_borgs_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut sources = PassphraseSources {
            file: Some(file),
            env: Some("from-env".into()),
            command: Some("echo 'from command'".into()),
            fd: None,
        };
        assert_eq!(sources.read().unwrap(), "from-file");
        sources.file = None;
        assert_eq!(sources.read().unwrap(), "from-env");
        sources.env = None;
        assert_eq!(sources.read().unwrap(), "from command");
        sources.command = Some("false".into());
        assert!(matches!(sources.read(), Err(PassphraseError::Command(_))));
        sources.command = None;
        assert!(matches!(sources.read(), Err(PassphraseError::Missing)));
        sources.fd = Some("987".into());
        assert!(matches!(sources.read(), Err(PassphraseError::Fd { .. })));
    }
}
