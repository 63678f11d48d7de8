//! The passphrase for a new key, as borg's `Passphrase.new` finds it: `BORG_NEW_PASSPHRASE`,
//! then the ordinary sources (`--passphrase-file`, `BORG_PASSPHRASE`, `BORG_PASSCOMMAND`,
//! `BORG_PASSPHRASE_FD`), else asked twice on the terminal without echo. Never asked when stdin
//! is not a terminal: a cron job or a container must fail with a clear message, not hang.
//! An empty passphrase is accepted, as borg accepts it for new keys.

use std::io::{self, BufRead};

use crate::error::ErrorKind;
use crate::ops::passphrase::{PassphraseError, PassphraseSources};

/// Borg's number of tries before it gives up (`Passphrase.new`).
const TRIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum NewPassphraseError {
    #[error(transparent)]
    Source(#[from] PassphraseError),
    #[error(
        "no passphrase for the new key, and stdin is not a terminal to ask on: set BORG_NEW_PASSPHRASE (or BORG_PASSPHRASE, BORG_PASSCOMMAND, BORG_PASSPHRASE_FD), or use --passphrase-file"
    )]
    NotATerminal,
    #[error("asking for the passphrase on the terminal failed: {0}")]
    Terminal(io::Error),
    #[error("no passphrase was entered (end of input); nothing was created")]
    Ended,
    #[error("Exceeded the maximum password retries.")]
    Retries,
}

impl NewPassphraseError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            NewPassphraseError::Source(e) => e.kind(),
            NewPassphraseError::Terminal(_) => ErrorKind::Environment,
            NewPassphraseError::NotATerminal
            | NewPassphraseError::Ended
            | NewPassphraseError::Retries => ErrorKind::BadInput,
        }
    }
}

/// `new` (`BORG_NEW_PASSPHRASE`) if set, else the first of `sources`, else the terminal's answer.
pub fn new_passphrase(
    new: Option<String>,
    sources: &PassphraseSources,
) -> Result<String, NewPassphraseError> {
    if let Some(passphrase) = new {
        return Ok(passphrase);
    }
    match sources.read() {
        Err(PassphraseError::Missing) => {}
        other => return Ok(other?),
    }
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Err(NewPassphraseError::NotATerminal);
    }
    for _ in 0..TRIES {
        let first = ask("Enter new passphrase: ")?;
        let second = ask("Enter same passphrase again: ")?;
        if first == second {
            return Ok(first);
        }
        say!("Passphrases do not match");
    }
    Err(NewPassphraseError::Retries)
}

/// One line from the terminal on stdin, typed without echo after `prompt` (on stderr).
fn ask(prompt: &str) -> Result<String, NewPassphraseError> {
    let line = {
        // Quiet before the prompt shows: switching drops what was typed until then.
        let _quiet = EchoOff::on_stdin().map_err(NewPassphraseError::Terminal)?;
        say_part!("{prompt}");
        let mut line = String::new();
        let read = io::stdin().lock().read_line(&mut line);
        // The Enter the user typed was not echoed either.
        say!("");
        match read {
            Ok(0) => return Err(NewPassphraseError::Ended),
            Ok(_) => line,
            Err(e) => return Err(NewPassphraseError::Terminal(e)),
        }
    };
    Ok(line.strip_suffix('\n').unwrap_or(&line).to_string())
}

/// The terminal's echo switched off until dropped, when the settings before are restored.
struct EchoOff {
    before: libc::termios,
}

impl EchoOff {
    fn on_stdin() -> io::Result<EchoOff> {
        // SAFETY: termios is plain old data; tcgetattr fills it completely or fails.
        let mut before: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a pointer to a live termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut before) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = before;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above; TCSAFLUSH drops what was typed before the prompt.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EchoOff { before })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `on_stdin` on the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.before) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borg_new_passphrase_comes_first_and_empty_ones_count() {
        let sources = PassphraseSources {
            env: Some("old".into()),
            ..Default::default()
        };
        assert_eq!(new_passphrase(Some("new".into()), &sources).unwrap(), "new");
        assert_eq!(new_passphrase(None, &sources).unwrap(), "old");
        let empty = PassphraseSources {
            env: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(new_passphrase(None, &empty).unwrap(), "");
    }
}
