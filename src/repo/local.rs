//! The local transport: a `borg serve` child process on this machine, for repositories given as
//! plain paths (and for tests). Remote repositories go over SSH instead and need no local borg.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::rpc::RpcClient;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start `{program} serve` for a local repository: {source}; install borg, or use an ssh:// repository (which needs no local borg)"
)]
pub struct SpawnError {
    program: String,
    #[source]
    source: std::io::Error,
}

/// A running `borg serve` and the RPC connection to it.
pub struct LocalServe {
    pub client: RpcClient,
    child: Child,
}

impl LocalServe {
    /// Starts `<borg> serve [extra args]`. Its stderr (log lines) is forwarded to `log`.
    pub fn spawn(
        borg: &Path,
        extra_args: &[&str],
        log: impl Fn(String) + Send + 'static,
    ) -> Result<LocalServe, SpawnError> {
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
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log(line);
            }
        });
        Ok(LocalServe {
            client: RpcClient::new(stdout, stdin),
            child,
        })
    }

    /// Ends the session: closes the server's stdin and waits for it to exit.
    pub async fn close(mut self) -> std::io::Result<()> {
        let _ = self.client.shutdown().await;
        self.child.wait().await.map(|_| ())
    }
}
