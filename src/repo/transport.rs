//! One `borg serve` session, however it was reached.
//!
//! A transport yields three byte streams (the server's stdin, stdout and stderr) and a way to
//! wait for the server to end. Everything above it — the RPC, the repository methods — sees only
//! a [`Connection`], so the SSH transport (production) and the local one (plain paths, tests)
//! are interchangeable, and a test can put a misbehaving transport in their place.
//!
//! The server's stderr carries its log, one JSON object per line in borg's `--log-json` shape
//! (`docs/borg-format.md` §1.9). It is read by its own task, so a chatty server can never block its
//! stdout, and its last lines that are not borg log records are kept: when a connection breaks,
//! what the server said last (`borg: command not found`, a Python traceback) is usually the only
//! explanation there is.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::sync::Notify;

use super::rpc::RpcClient;

/// How many of the server's last stderr lines are kept for error messages.
const TAIL_LINES: usize = 5;

/// A log line from the server, already decoded from borg's JSON form where it was JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLine {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`; `None` for lines that were not JSON
    /// (shell errors, tracebacks), which are shown as warnings.
    pub level: Option<String>,
    pub message: String,
}

impl ServerLine {
    fn parse(line: &str) -> Option<ServerLine> {
        let line = line.trim_end();
        if line.is_empty() {
            return None;
        }
        if line.starts_with('{')
            && let Ok(fields) = serde_json::from_str::<serde_json::Value>(line)
        {
            let text = |name: &str| {
                fields
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            // Progress lines are only for a terminal watching the server; borg drops them too
            // unless progress is on.
            return match text("type").as_deref() {
                Some("log_message") => Some(ServerLine {
                    level: text("levelname"),
                    message: text("message").unwrap_or_default(),
                }),
                _ => None,
            };
        }
        Some(ServerLine {
            level: None,
            message: line.to_string(),
        })
    }
}

/// Where the server's log lines go.
pub type ServerLog = Arc<dyn Fn(&ServerLine) + Send + Sync>;

/// The server's stderr: forwarded to the log, its tail remembered.
pub struct ServerStderr {
    tail: Mutex<VecDeque<String>>,
    ended: Mutex<bool>,
    ended_notify: Notify,
}

impl ServerStderr {
    /// Starts forwarding `stderr` to `log`.
    pub fn forward(stderr: impl AsyncRead + Send + Unpin + 'static, log: ServerLog) -> Arc<Self> {
        let this = Arc::new(ServerStderr {
            tail: Mutex::default(),
            ended: Mutex::new(false),
            ended_notify: Notify::new(),
        });
        let state = this.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr);
            let mut raw = Vec::new();
            // Lines are read as bytes: a server's message need not be UTF-8.
            while let Ok(true) = read_line_capped(&mut lines, &mut raw).await {
                let text = String::from_utf8_lossy(&raw).into_owned();
                raw.clear();
                if let Some(line) = ServerLine::parse(&text) {
                    // borg's own log lines are shown as they come; what else the server
                    // writes (a shell's "command not found", a traceback) is what explains a
                    // connection that breaks.
                    if line.level.is_none() {
                        let mut tail = state.tail.lock().expect("stderr tail");
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.message.clone());
                    }
                    log(&line);
                }
            }
            *state.ended.lock().expect("stderr end flag") = true;
            state.ended_notify.notify_waiters();
        });
        this
    }

    /// The server's last words, once its stderr has ended (or after a short grace period: the
    /// stderr of a local process is a separate pipe and may trail its stdout).
    pub async fn last_words(&self) -> Option<String> {
        let ended = self.ended_notify.notified();
        if !*self.ended.lock().expect("stderr end flag") {
            let _ = tokio::time::timeout(Duration::from_secs(1), ended).await;
        }
        let tail = self.tail.lock().expect("stderr tail");
        (!tail.is_empty()).then(|| tail.iter().cloned().collect::<Vec<_>>().join(" / "))
    }
}

/// A longer stderr line from the server is cut to this: the server is not trusted, and a line
/// without an end must not grow without bound.
const MAX_LINE: usize = 64 << 10;

/// Reads one line into `line` (empty before), keeping at most [`MAX_LINE`] bytes of it and
/// discarding the rest up to its newline; `false` at the end of the stream.
async fn read_line_capped(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (taken, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&available[..taken.min(room)]);
        reader.consume(taken);
        if ended {
            return Ok(true);
        }
    }
}

/// How a `borg serve` session ended other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("borg serve exited with code {0}")]
    ExitCode(i64),
    #[error("borg serve was killed by signal {0}")]
    Signal(String),
    #[error("the connection ended before borg serve reported its exit")]
    Vanished,
    #[error("cannot wait for borg serve: {0}")]
    Wait(std::io::Error),
    #[error("the server did not end the session within {0} s")]
    Timeout(u64),
}

/// The future a transport returns when asked to wait for the server's end.
pub type Finish = Pin<Box<dyn Future<Output = Result<(), SessionEnd>> + Send>>;

/// What a transport must provide besides the streams: waiting for the server to end.
pub trait ServeSession: Send {
    /// Waits until the server has exited (its input is already closed); `Err` describes an
    /// abnormal end (exit code, signal, lost connection).
    fn finish(self: Box<Self>) -> Finish;
}

/// The streams of a freshly started `borg serve`, as a transport hands them over.
pub struct ServeStreams {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
    pub session: Box<dyn ServeSession>,
}

/// How long closing a session may take (borg serve releases its lock and exits at once).
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An RPC connection to one `borg serve`, over any transport.
pub struct Connection {
    pub rpc: Arc<RpcClient>,
    session: Box<dyn ServeSession>,
}

impl Connection {
    /// `silence_limit`: how long a call may hear nothing from the server (see
    /// [`RpcClient::new`]).
    pub fn new(
        streams: ServeStreams,
        log: ServerLog,
        silence_limit: Option<Duration>,
    ) -> Connection {
        let stderr = ServerStderr::forward(streams.stderr, log);
        Connection {
            rpc: Arc::new(RpcClient::new(
                streams.stdout,
                streams.stdin,
                Some(stderr),
                silence_limit,
            )),
            session: streams.session,
        }
    }

    /// Ends the session cleanly: closing the server's input makes it close the repository
    /// (releasing the lock, rolling back anything uncommitted) and exit.
    pub async fn close(self) -> Result<(), SessionEnd> {
        // A server that hangs must not hang us: dropping the session ends it regardless.
        let closing = async {
            let _ = self.rpc.shutdown().await;
            self.session.finish().await
        };
        tokio::time::timeout(CLOSE_TIMEOUT, closing)
            .await
            .unwrap_or(Err(SessionEnd::Timeout(CLOSE_TIMEOUT.as_secs())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endless_stderr_line_is_cut_not_kept() {
        let mut input = vec![b'x'; 3 * MAX_LINE];
        input.extend_from_slice(b"\nshort\nlast");
        let mut reader = BufReader::with_capacity(1000, &input[..]);
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line_capped(&mut reader, &mut line).await.unwrap() {
            lines.push(std::mem::take(&mut line));
        }
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], b"short\n");
        assert_eq!(lines[2], b"last");
    }

    #[test]
    fn json_log_lines_are_decoded_and_progress_is_dropped() {
        let line = ServerLine::parse(
            r#"{"type": "log_message", "time": 1.5, "message": "Remote: x \"y\"", "levelname": "WARNING", "name": "borg.repository"}"#,
        );
        assert_eq!(
            line,
            Some(ServerLine {
                level: Some("WARNING".into()),
                message: "Remote: x \"y\"".into()
            })
        );
        assert_eq!(
            ServerLine::parse(r#"{"type": "progress_percent", "finished": false}"#),
            None
        );
        assert_eq!(
            ServerLine::parse("bash: borg: command not found\n").map(|l| l.message),
            Some("bash: borg: command not found".into())
        );
    }
}
