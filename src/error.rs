//! What kind of failure ended a command. Every error type of the library says which kind each
//! of its cases is (a `kind()` method beside the type); the command line maps kinds to borg's
//! exit codes in one place (`cli::exit`), and later consumers — a status file, a failure
//! notification, metrics — can tell "the repository host is full" from "the passphrase is
//! wrong" without parsing messages.
//!
//! The kinds answer "who can fix it?", which is what an admin reading an alert needs first.

/// See the module notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A signal stopped the run; what it left is in the message.
    Interrupted,
    /// The command line, the config file, a pattern, a name or a passphrase was wrong: fix the
    /// input and run again.
    BadInput,
    /// The repository or its host failed or refused: locked, full, too old a borg, a
    /// misbehaving server, a login refused.
    Repository,
    /// The connection to the repository host could not be made, dropped or stalled: the
    /// network or the host's availability; trying again later may well succeed (`backup`'s
    /// `retries` does).
    Connection,
    /// Data did not verify: a damaged or forged object, a replayed or swapped repository, an
    /// archive without authentication. Nothing is trusted that failed this.
    Integrity,
    /// This machine: files and directories, permissions, Docker, mailcow's containers and
    /// database.
    Environment,
}
