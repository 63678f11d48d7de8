//! The signals that ask a command to stop, in one place.
//!
//! SIGINT (Ctrl-C), SIGTERM (a service manager, `kill`) and SIGHUP (the terminal went away: the
//! admin's SSH session dropped in the middle of a restore). Left to their defaults, each would
//! end the process at once — during a restore, with mailcow's services stopped. Every command
//! that does more than read turns them into an orderly stop, and exits with the code borg gives
//! each: 2 for the first SIGINT, 128 + the signal's number for the others.

use tokio::signal::unix::{SignalKind, signal};

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
pub fn first() -> std::io::Result<tokio::sync::watch::Receiver<Option<&'static str>>> {
    let (seen, receiver) = tokio::sync::watch::channel(None);
    watch(move |name| {
        seen.send_if_modified(|first| first.is_none() && first.replace(name).is_none());
    })?;
    Ok(receiver)
}

/// Waits until `seen` holds a signal; its name.
pub async fn arrived(
    seen: &mut tokio::sync::watch::Receiver<Option<&'static str>>,
) -> &'static str {
    // The value is copied out at once: the channel's guard must not live across an await.
    let first = seen.wait_for(Option::is_some).await.map(|name| *name);
    match first {
        Ok(name) => name.expect("waited for Some"),
        // The sender lives as long as the handlers; without it no signal can come.
        Err(_) => std::future::pending().await,
    }
}

/// borg's exit code for a command stopped by `signal`.
pub fn exit_code(signal: &str) -> i32 {
    match signal {
        "SIGTERM" => 128 + libc::SIGTERM,
        "SIGHUP" => 128 + libc::SIGHUP,
        // borg ends a command cleanly on the first Ctrl-C with an error, rc 2.
        _ => super::EXIT_ERROR,
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
