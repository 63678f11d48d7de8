//! How a command's result becomes borg's exit code and, for an error, one line on stderr
//! (`docs/borg-cli.md` §1): 0 success, 1 warning, 2 error, 128 + N for signal N. The kind of an
//! error ([`ErrorKind`]) is found here, in one place, from the library's typed errors.

use crate::error::ErrorKind;
use crate::format::key_export::ImportError;
use crate::mailcow::backup::BackupError;
use crate::mailcow::components::UnknownComponent;
use crate::mailcow::export::ExportError;
use crate::mailcow::maildir_names::NameError;
use crate::mailcow::restore::RestoreError;
use crate::mailcow::throwaway::ScratchError;
use crate::mailcow::timer_units::TimerError;
use crate::ops::create::CreateError;
use crate::ops::create::files_cache::FilesCacheModeError;
use crate::ops::extract::ExtractError;
use crate::ops::init::InitError;
use crate::ops::items::ReadError;
use crate::ops::key_manager::KeyManageError;
use crate::ops::nonces::NonceError;
use crate::ops::open::OpenError;
use crate::ops::passphrase::PassphraseError;
use crate::ops::patterns::PatternError;
use crate::ops::placeholders::PlaceholderError;
use crate::ops::prune::{PruneError, RulesError};
use crate::ops::security::SecurityError;
use crate::ops::stream_file::StreamFileError;
use crate::repo::location::LocationError;
use crate::repo::repository::RepoError;
use crate::repo::ssh::SshError;

use super::Outcome;
use super::check::CheckRefusal;
use super::config::ConfigError;
use super::export::UnknownFormat;
use super::init::QuotaError;
use super::key::KeyArgsError;
use super::new_passphrase::NewPassphraseError;
use super::retention::ArchiveSafe;
use super::signals::Interrupted;
use crate::mailcow::helper_command::{EXIT_ARCHIVE_SAFE, EXIT_CONNECTION_LOST};

pub const EXIT_OK: i32 = 0;
pub const EXIT_WARNING: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

/// Prints what needs printing about `result` and returns the process's exit code.
pub fn conclude(result: anyhow::Result<Outcome>) -> i32 {
    let code = exit_code(&result);
    let Err(e) = result else {
        return code;
    };
    // A reader of our output that went away (`| head`) is not an error worth reporting.
    if is_broken_pipe(&e) {
        return code;
    }
    if e.is::<ArchiveSafe>() {
        say!("mailcow-borg: error: {e}");
    } else if kind_of(&e) == ErrorKind::Interrupted && e.is::<Interrupted>() {
        // Stopped by a signal we know: what the stop left.
        say!("mailcow-borg: {e}");
    } else {
        say!("mailcow-borg: error: {}", one_line(&e));
    }
    code
}

/// The exit code `result` ends the process with.
pub fn exit_code(result: &anyhow::Result<Outcome>) -> i32 {
    let e = match result {
        Ok(Outcome::Ok) => return EXIT_OK,
        Ok(Outcome::Warning) => return EXIT_WARNING,
        Err(e) => e,
    };
    if is_broken_pipe(e) {
        return EXIT_OK;
    }
    // The helper's own code for this, which the host turns into borg's 2 and its message.
    if e.is::<ArchiveSafe>() {
        return EXIT_ARCHIVE_SAFE as i32;
    }
    if e.is::<Retryable>() {
        return EXIT_CONNECTION_LOST as i32;
    }
    match (kind_of(e), e.downcast_ref::<Interrupted>()) {
        // Stopped by a signal we know: borg's 128 + N.
        (ErrorKind::Interrupted, Some(stop)) => stop.code(),
        // Every other kind is borg's rc 2 (legacy exit codes; `docs/borg-cli.md` §1).
        (
            ErrorKind::Interrupted
            | ErrorKind::BadInput
            | ErrorKind::Repository
            | ErrorKind::Connection
            | ErrorKind::Integrity
            | ErrorKind::Environment,
            _,
        ) => EXIT_ERROR,
    }
}

/// A helper's backup that failed for a reason trying again may cure (the connection could
/// not be made or dropped): it exits with [`EXIT_CONNECTION_LOST`], for the host to retry.
#[derive(Debug, thiserror::Error)]
#[error("the connection to the repository failed")]
pub struct Retryable;

/// `e` marked [`Retryable`] when its kind says a new try may cure it; anything else — a wrong
/// passphrase, an unknown host key, a full repository, bad input — as it is.
pub fn mark_retryable(e: anyhow::Error) -> anyhow::Error {
    if kind_of(&e) == ErrorKind::Connection {
        e.context(Retryable)
    } else {
        e
    }
}

/// The kind of the first error in `e`'s chain that knows its own; what none claims (an
/// `anyhow!` message of the command line about its own checks) is the environment's.
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    e.chain()
        .find_map(kind_of_cause)
        .unwrap_or(ErrorKind::Environment)
}

fn kind_of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    macro_rules! by_method {
        ($($error:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$error>() {
                return Some(e.kind());
            })*
        };
    }
    by_method!(
        RepoError,
        SshError,
        OpenError,
        KeyManageError,
        PassphraseError,
        SecurityError,
        ReadError,
        NonceError,
        ExtractError,
        StreamFileError,
        CreateError,
        FilesCacheModeError,
        BackupError,
        RestoreError,
        ScratchError,
        ExportError,
        InitError,
        NewPassphraseError,
        QuotaError,
        RulesError,
        PruneError,
        TimerError,
    );
    if cause.is::<Interrupted>() {
        return Some(ErrorKind::Interrupted);
    }
    if cause.is::<LocationError>()
        || cause.is::<PatternError>()
        || cause.is::<PlaceholderError>()
        || cause.is::<ConfigError>()
        || cause.is::<UnknownComponent>()
        || cause.is::<ImportError>()
        || cause.is::<KeyArgsError>()
        || cause.is::<CheckRefusal>()
        || cause.is::<UnknownFormat>()
        || cause.is::<NameError>()
    {
        return Some(ErrorKind::BadInput);
    }
    if cause.is::<std::io::Error>() {
        return Some(ErrorKind::Environment);
    }
    None
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line: "what happened: why". A cause that the message
/// already tells (many errors show their source in their own text) is not repeated.
pub(super) fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::rpc::RpcError;

    #[test]
    fn kinds_come_from_the_first_typed_cause() {
        let locked = anyhow::Error::from(OpenError::Repo(RepoError::Locked("lock".into())))
            .context("opening");
        assert_eq!(kind_of(&locked), ErrorKind::Repository);
        let replay = anyhow::Error::from(OpenError::Security(SecurityError::UnknownUnencrypted));
        assert_eq!(kind_of(&replay), ErrorKind::BadInput);
        let stopped = anyhow::Error::from(Interrupted::by("SIGTERM", "nothing was committed"));
        assert_eq!(kind_of(&stopped), ErrorKind::Interrupted);
        assert_eq!(
            kind_of(&anyhow::anyhow!("something")),
            ErrorKind::Environment
        );
    }

    #[test]
    fn only_connection_failures_are_retried() {
        let retried = |e: anyhow::Error| mark_retryable(e).is::<Retryable>();
        let lost = || RepoError::Rpc(RpcError::ConnectionLost("reset by peer".into()));
        // Dropped mid-upload, stalled, never reached, or broken during login: tried again.
        assert!(retried(CreateError::Repo(lost()).into()));
        assert!(retried(
            anyhow::Error::from(OpenError::Repo(lost())).context("opening")
        ));
        let silent = RpcError::Silent {
            method: "put".into(),
            seconds: 300,
        };
        assert!(retried(CreateError::Repo(RepoError::Rpc(silent)).into()));
        let unreachable = SshError::Connect {
            target: "h".into(),
            detail: "refused".into(),
        };
        assert!(retried(OpenError::Ssh(unreachable).into()));
        // What a new try cannot fix: not retried.
        let unknown_key = SshError::UnknownHostKey {
            target: "h".into(),
            fingerprint: "SHA256:x".into(),
            line: "h ssh-ed25519 AAAA".into(),
            file: "known_hosts".into(),
        };
        assert!(!retried(OpenError::Ssh(unknown_key).into()));
        let refused = SshError::AuthRefused {
            target: "h".into(),
            user: "u".into(),
            tried: "id_ed25519".into(),
        };
        assert!(!retried(OpenError::Ssh(refused).into()));
        assert!(!retried(
            OpenError::Key(crate::format::key::KeyError::WrongPassphrase).into()
        ));
        assert!(!retried(
            CreateError::Repo(RepoError::QuotaExceeded("10 GB".into())).into()
        ));
        assert!(!retried(
            CreateError::Repo(RepoError::NoSpace("/srv".into())).into()
        ));
        assert!(!retried(
            CreateError::Repo(RepoError::Rpc(RpcError::Protocol("junk".into()))).into()
        ));
        assert!(!retried(anyhow::anyhow!(
            "refusing to back up vmail: the crypt keys are missing"
        )));
        assert!(!retried(
            ConfigError::Invalid {
                path: "config.toml".into(),
                detail: "retries: invalid type".into()
            }
            .into()
        ));
    }

    #[test]
    fn exit_codes_are_borgs() {
        assert_eq!(conclude(Ok(Outcome::Ok)), EXIT_OK);
        assert_eq!(conclude(Ok(Outcome::Warning)), EXIT_WARNING);
        assert_eq!(conclude(Err(anyhow::anyhow!("failed"))), EXIT_ERROR);
        let term = Interrupted::by("SIGTERM", "nothing was committed");
        assert_eq!(conclude(Err(term.into())), 143);
        let hup = Interrupted::by("SIGHUP", "nothing was changed");
        assert_eq!(conclude(Err(hup.into())), 129);
        let safe = ArchiveSafe {
            archive: "a".into(),
            step: "pruning",
            detail: "lost".into(),
        };
        assert_eq!(conclude(Err(safe.into())), EXIT_ARCHIVE_SAFE as i32);
        let dropped = mark_retryable(
            CreateError::Repo(RepoError::Rpc(RpcError::ConnectionLost("reset".into()))).into(),
        );
        assert_eq!(conclude(Err(dropped)), EXIT_CONNECTION_LOST as i32);
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(conclude(Err(pipe.into())), EXIT_OK);
    }
}
