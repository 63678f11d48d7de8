//! The local transport: a `borg serve` child process on this machine, for repositories given as
//! plain paths (and for tests). Remote repositories go over SSH instead and need no local borg.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::transport::{Finish, ServeSession, ServeStreams, SessionEnd};

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start `{program} serve` for a local repository: {source}; install borg, or use an ssh:// repository (which needs no local borg)"
)]
pub struct SpawnError {
    program: String,
    #[source]
    source: std::io::Error,
}

/// Starts `<borg> serve [extra args]` and hands over its streams.
pub fn spawn(borg: &Path, extra_args: &[&str]) -> Result<ServeStreams, SpawnError> {
    let mut child = Command::new(borg)
        .arg("serve")
        .args(extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SpawnError {
            program: borg.display().to_string(),
            source,
        })?;
    Ok(ServeStreams {
        stdin: Box::new(child.stdin.take().expect("piped stdin")),
        stdout: Box::new(child.stdout.take().expect("piped stdout")),
        stderr: Box::new(child.stderr.take().expect("piped stderr")),
        session: Box::new(LocalSession(child)),
    })
}

struct LocalSession(Child);

impl ServeSession for LocalSession {
    fn finish(mut self: Box<Self>) -> Finish {
        Box::pin(async move {
            let status = self.0.wait().await.map_err(SessionEnd::Wait)?;
            match (status.code(), status.signal()) {
                (Some(0), _) => Ok(()),
                (Some(code), _) => Err(SessionEnd::ExitCode(code.into())),
                (None, Some(signal)) => Err(SessionEnd::Signal(signal.to_string())),
                (None, None) => Err(SessionEnd::Vanished),
            }
        })
    }
}
