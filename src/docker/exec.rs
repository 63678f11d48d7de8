//! Commands run inside a running container (`docker exec`), through the API.
//!
//! Secrets for such a command (a database or Redis password) go in on the command's **stdin**,
//! never in its arguments or environment: arguments show in `ps` and in the exec's inspect
//! output, and the environment in `/proc/PID/environ`. The stdin is written and closed at once;
//! the output is either captured ([`Engine::exec_capture`]) or read piece by piece as it comes
//! ([`Engine::exec_stream`], for a database dump that must not touch the disk).

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::engine::{DockerError, Engine};

/// A command's stdin.
pub type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// How much of a command's stderr is kept for its error message.
const STDERR_KEPT: usize = 64 * 1024;

/// A started command whose stdout is read as it comes.
pub struct ExecStream {
    engine: Engine,
    exec_id: String,
    output: super::OutputStream,
    stderr: Vec<u8>,
    what: String,
}

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    pub exit_code: i64,
    /// The end of what it wrote on stderr (at most 64 KiB).
    pub stderr: Vec<u8>,
}

impl Finished {
    /// The last line of stderr, for a one-line message.
    pub fn last_error_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    }
}

impl ExecStream {
    /// The next piece of stdout; `None` at its end.
    pub async fn next_stdout(&mut self) -> Result<Option<Bytes>, DockerError> {
        while let Some(item) = self.output.next().await {
            match item.map_err(|e| DockerError::api(&self.what, e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    return Ok(Some(message));
                }
                LogOutput::StdErr { message } => {
                    self.stderr.extend_from_slice(&message);
                    if self.stderr.len() > STDERR_KEPT {
                        self.stderr.drain(..self.stderr.len() - STDERR_KEPT);
                    }
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(None)
    }

    /// Waits for the command's exit code, after its output ended.
    pub async fn finish(mut self) -> Result<Finished, DockerError> {
        while self.next_stdout().await?.is_some() {}
        // The output ends when the process closes it; the engine records the exit a moment
        // later.
        for _ in 0..200 {
            let inspect = self
                .engine
                .api
                .inspect_exec(&self.exec_id)
                .await
                .map_err(|e| DockerError::api(&self.what, e))?;
            if inspect.running != Some(true) {
                return Ok(Finished {
                    exit_code: inspect.exit_code.unwrap_or(-1),
                    stderr: self.stderr,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(DockerError::Api {
            context: self.what,
            detail: "the command closed its output but did not exit".into(),
        })
    }
}

impl Engine {
    /// Starts `cmd` in `container`, writes `stdin` to it and closes it.
    pub async fn exec_stream(
        &self,
        container: &str,
        cmd: &[&str],
        stdin: &[u8],
    ) -> Result<ExecStream, DockerError> {
        let (stream, mut input) = self.exec_with_input(container, cmd).await?;
        let written = async {
            input.write_all(stdin).await?;
            input.shutdown().await
        };
        written
            .await
            .map_err(|e| DockerError::api(&stream.what, e))?;
        Ok(stream)
    }

    /// Starts `cmd` in `container` with its stdin left open for the caller, who must shut it
    /// down to end the command's input.
    pub async fn exec_with_input(
        &self,
        container: &str,
        cmd: &[&str],
    ) -> Result<(ExecStream, Input), DockerError> {
        let what = format!("running {} in {container}", cmd.first().unwrap_or(&""));
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let created = self
            .api
            .create_exec(container, config)
            .await
            .map_err(|e| DockerError::api(&what, e))?;
        let started = self
            .api
            .start_exec(&created.id, None::<StartExecOptions>)
            .await
            .map_err(|e| DockerError::api(&what, e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(DockerError::Api {
                context: what,
                detail: "the engine started the command detached".into(),
            });
        };
        let stream = ExecStream {
            engine: self.clone(),
            exec_id: created.id,
            output,
            stderr: Vec::new(),
            what,
        };
        Ok((stream, input))
    }

    /// Runs `cmd` in `container` to its end: its stdout and how it ended.
    pub async fn exec_capture(
        &self,
        container: &str,
        cmd: &[&str],
        stdin: &[u8],
    ) -> Result<(Vec<u8>, Finished), DockerError> {
        let mut stream = self.exec_stream(container, cmd, stdin).await?;
        let mut stdout = Vec::new();
        while let Some(piece) = stream.next_stdout().await? {
            stdout.extend_from_slice(&piece);
        }
        Ok((stdout, stream.finish().await?))
    }
}
