//! The signals that ask a command to stop, in one place.
//!
//! SIGINT (Ctrl-C), SIGTERM (a service manager, `kill`) and SIGHUP (the terminal went away: the
//! admin's SSH session dropped in the middle of a restore). Left to their defaults, each would
//! end the process at once — during a restore, with mailcow's services stopped. Every command
//! that does more than read turns them into an orderly stop, and exits with the code borg gives
//! each: 2 for the first SIGINT, 128 + the signal's number for the others ([`Interrupted`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};

/// The first stop signal's name, once one came.
pub type FirstSignal = tokio::sync::watch::Receiver<Option<&'static str>>;

/// SIGINT, SIGTERM or SIGHUP stopped the command; the exit code is borg's for it, and
/// `outcome` says what that left.
#[derive(Debug)]
pub struct Interrupted {
    /// The signal's name (`SIGINT`, `SIGTERM`, `SIGHUP`).
    pub signal: &'static str,
    pub outcome: &'static str,
}

impl Interrupted {
    /// What borg prints when it rolled back an unfinished archive.
    pub const NOTHING_COMMITTED: &'static str = "nothing was committed";

    /// By the signal named `signal`.
    pub fn by(signal: &'static str, outcome: &'static str) -> Interrupted {
        Interrupted { signal, outcome }
    }

    /// The exit code borg gives a command stopped by this signal.
    pub fn code(&self) -> i32 {
        exit_code(self.signal)
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}; {}", describe(self.signal), self.outcome)
    }
}

impl std::error::Error for Interrupted {}

/// The signals handled, by the names Docker's kill API also takes (the host passes them on to
/// the helper container by name).
const STOP_SIGNALS: [(&str, libc::c_int); 3] = [
    ("SIGINT", libc::SIGINT),
    ("SIGTERM", libc::SIGTERM),
    ("SIGHUP", libc::SIGHUP),
];

/// Calls `on_signal` with the signal's name each time a stop signal arrives. Needs a running
/// Tokio runtime; from the call on, the signals no longer end the process by themselves.
pub fn watch(on_signal: impl Fn(&'static str) + Clone + Send + 'static) -> std::io::Result<()> {
    for (name, number) in STOP_SIGNALS {
        let mut stream = signal(SignalKind::from_raw(number))?;
        let on_signal = on_signal.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                on_signal(name);
            }
        });
    }
    Ok(())
}

/// A watch channel that holds the first stop signal's name, once one arrived.
pub fn first() -> std::io::Result<FirstSignal> {
    let (seen, receiver) = tokio::sync::watch::channel(None);
    watch(move |name| {
        seen.send_if_modified(|first| first.is_none() && first.replace(name).is_none());
    })?;
    Ok(receiver)
}

/// Waits until `seen` holds a signal; its name.
pub async fn arrived(seen: &mut FirstSignal) -> &'static str {
    // The value is copied out at once: the channel's guard must not live across an await.
    let first = seen.wait_for(Option::is_some).await.map(|name| *name);
    match first {
        Ok(name) => name.expect("waited for Some"),
        // The sender lives as long as the handlers; without it no signal can come.
        Err(_) => std::future::pending().await,
    }
}

/// Runs `work` on a runtime of its own until it ends, or until the first stop signal: then it
/// is dropped where it is — `outcome` says what that leaves — and the command ends with borg's
/// code for the signal. For commands whose work may simply stop: a reader, or a writer whose
/// changes are one transaction that the server rolls back when the session ends.
pub fn run_until_stopped<T>(
    outcome: &'static str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = super::access::runtime()?;
    let result = runtime.block_on(async {
        let mut stop = first()?;
        tokio::select! {
            done = work => done,
            name = arrived(&mut stop) => Err(Interrupted::by(name, outcome).into()),
        }
    });
    // Not waiting for a task or a writer thread that the signal left behind.
    runtime.shutdown_background();
    result
}

/// For a command that writes the repository itself (`create`): the first stop signal sets
/// `stop`, so the run rolls back and releases the lock instead of the process dying with the
/// repository locked. The first signal's name, once one came.
pub fn roll_back_on_stop(stop: Arc<AtomicBool>) -> std::io::Result<FirstSignal> {
    let seen = first()?;
    let mut first = seen.clone();
    tokio::spawn(async move {
        arrived(&mut first).await;
        stop.store(true, Ordering::Relaxed);
        say!("mailcow-borg: stopping: rolling back what this run wrote");
    });
    Ok(seen)
}

/// For a command on the host (`backup`, `restore`): each stop signal is said, with
/// `what_happens`, and passed on through `stop` (to the helper), not obeyed at once.
pub fn pass_on(
    stop: tokio::sync::watch::Sender<Option<&'static str>>,
    what_happens: &'static str,
) -> std::io::Result<()> {
    watch(move |name| {
        say!("mailcow-borg: {name}: {what_happens}");
        let _ = stop.send(Some(name));
    })
}

/// borg's exit code for a command stopped by `signal`.
pub fn exit_code(signal: &str) -> i32 {
    match signal {
        "SIGTERM" => 128 + libc::SIGTERM,
        "SIGHUP" => 128 + libc::SIGHUP,
        // borg ends a command cleanly on the first Ctrl-C with an error, rc 2.
        _ => super::exit::EXIT_ERROR,
    }
}

/// How borg says which signal stopped it.
pub fn describe(signal: &str) -> &'static str {
    match signal {
        "SIGTERM" => "Received SIGTERM",
        "SIGHUP" => "Received SIGHUP",
        _ => "Got Ctrl-C / SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_words_are_borgs() {
        assert_eq!(exit_code("SIGINT"), 2);
        assert_eq!(exit_code("SIGTERM"), 143);
        assert_eq!(exit_code("SIGHUP"), 129);
        assert_eq!(describe("SIGHUP"), "Received SIGHUP");
    }
}
