//! The passphrase for a new key, as borg's `Passphrase.new` finds it: `BORG_NEW_PASSPHRASE`,
//! then the ordinary sources (`--passphrase-file`, `BORG_PASSPHRASE`, `BORG_PASSCOMMAND`,
//! `BORG_PASSPHRASE_FD`), else asked twice on the terminal without echo. Never asked when stdin
//! is not a terminal: a cron job or a container must fail with a clear message, not hang.
//! An empty passphrase is accepted, as borg accepts it for new keys.

use std::io;

use super::tty::Tty;

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
    ask_twice()
}

/// Asked twice on the terminal without echo, again while the two differ (borg's 10 tries).
/// Only when stdin is a terminal: a cron job or a container fails at once instead of hanging.
pub fn ask_twice() -> Result<String, NewPassphraseError> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Err(NewPassphraseError::NotATerminal);
    }
    let mut tty = Tty::open().map_err(|_| NewPassphraseError::NotATerminal)?;
    for _ in 0..TRIES {
        let first = ask(&mut tty, "Enter new passphrase: ")?;
        let second = ask(&mut tty, "Enter same passphrase again: ")?;
        if first == second {
            return Ok(first);
        }
        tty.say("Passphrases do not match")
            .map_err(NewPassphraseError::Terminal)?;
    }
    Err(NewPassphraseError::Retries)
}

fn ask(tty: &mut Tty, prompt: &str) -> Result<String, NewPassphraseError> {
    tty.read_secret(prompt).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => NewPassphraseError::Ended,
        _ => NewPassphraseError::Terminal(e),
    })
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
