//! The `borg serve` RPC client (`docs/borg-format.md` §1): msgpack requests and responses over a
//! byte stream.
//!
//! Framing is plain concatenation of msgpack objects in both directions. Requests use the dict
//! form `{i: msgid, m: method, a: {name: value}}`, also for `negotiate`, so every answer comes back
//! as a dict too: `{i, r}` or `{i, exception_class, exception_args, ...}`.
//!
//! The server answers strictly in order, but one request at a time would cost a round trip per
//! object over SSH. So calls are pipelined: any number of tasks may call concurrently, up to
//! [`MAX_IN_FLIGHT`] requests are outstanding, and one reader task matches answers to callers by
//! msgid. Reading never waits for writing (and stderr is drained by its own task), so neither
//! pipe can fill up and deadlock the pair.
//!
//! The server is not trusted to answer at all: a call that hears nothing from it for the
//! connection's silence limit gives the whole connection up (a stalled server must not keep a
//! restore — and mailcow's stopped services — waiting forever). Any byte from the server counts
//! as life, so a long answer that is still arriving, or a queue of answers ahead of ours, does
//! not trip it.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, oneshot};

use super::transport::ServerStderr;
use crate::format::msgpack::{StreamDecoder, Value, encode_map_len, encode_raw_len};

/// Borg's client keeps at most this many requests in flight.
pub const MAX_IN_FLIGHT: usize = 100;

/// Requests are collected up to this size before they are written.
const WRITE_BUFFER: usize = 256 << 10;

/// Borg's unpacker refuses to buffer more than this (`docs/borg-format.md` §0.1); so do we.
const MAX_BUFFERED: usize = 60 << 20;

/// No answer of borg serve has more elements than this (the largest, `list`, has one per id,
/// and we ask for 100,000 at a time); more is a server trying to make us build a huge tree.
const MAX_ANSWER_ELEMENTS: usize = 1 << 20;

/// An exception the server raised, as it reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteException {
    /// Python class name, e.g. `ObjectNotFound`.
    pub class: String,
    /// The exception's arguments, rendered as text (ids as hex).
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("the repository server reported {}: {}", .0.class, .0.args.join(", "))]
    Remote(RemoteException),
    #[error("the connection to the repository server was lost: {0}")]
    ConnectionLost(String),
    #[error("the repository server sent something that is not borg's RPC protocol: {0}")]
    Protocol(String),
    #[error(
        "the repository server sent nothing for {seconds} s while {method} waited for its answer; \
         it seems stalled, so the connection was given up (--server-timeout sets the limit)"
    )]
    Silent { method: String, seconds: u64 },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>>;

/// A connection to one `borg serve` process.
pub struct RpcClient {
    /// `None` once [`RpcClient::shutdown`] dropped it.
    writer: tokio::sync::Mutex<Option<BufWriter<Box<dyn AsyncWrite + Send + Unpin>>>>,
    /// Callers waiting to write: the last of a burst flushes, so a burst of requests (puts)
    /// reaches the server in a few large writes, which it reads many at a time.
    queued: std::sync::atomic::AtomicUsize,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
    slots: Semaphore,
    /// Why the reader stopped, once it has.
    closed: Arc<Closed>,
    /// When the server was last heard from.
    heard: Arc<Heard>,
    /// How long a call may hear nothing from the server; `None`: forever.
    silence_limit: Option<Duration>,
}

/// When bytes last came from the server, as milliseconds since `epoch`.
struct Heard {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Heard {
    fn new() -> Self {
        Heard {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the server has been silent, counting only from `since` on.
    fn silent_since(&self, since: Instant) -> Duration {
        let last = self.epoch
            + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        Instant::now().saturating_duration_since(last.max(since))
    }
}

/// Why the reader stopped, once it has, and a way to wait for that.
#[derive(Default)]
struct Closed {
    reason: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Closed {
    fn reason(&self) -> Option<String> {
        self.reason.lock().expect("closed flag").clone()
    }

    fn set(&self, reason: String) {
        *self.reason.lock().expect("closed flag") = Some(reason);
        self.notify.notify_waiters();
    }

    /// Returns once the connection is known to be gone.
    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a `set` in between is not missed.
        notified.as_mut().enable();
        if self.reason().is_none() {
            notified.await;
        }
    }
}

impl RpcClient {
    /// Starts the reader task over the server's stdout. `reader` and `writer` are the two
    /// directions of the transport; `stderr`, if given, explains a connection that breaks.
    /// `silence_limit` is how long a call may hear nothing from the server before the
    /// connection is given up (`None`: no limit).
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
        stderr: Option<Arc<ServerStderr>>,
        silence_limit: Option<Duration>,
    ) -> RpcClient {
        let pending: Pending = Arc::default();
        let closed: Arc<Closed> = Arc::default();
        let heard = Arc::new(Heard::new());
        tokio::spawn(read_responses(
            reader,
            pending.clone(),
            closed.clone(),
            heard.clone(),
            stderr,
        ));
        RpcClient {
            writer: tokio::sync::Mutex::new(Some(BufWriter::with_capacity(
                WRITE_BUFFER,
                Box::new(writer),
            ))),
            queued: std::sync::atomic::AtomicUsize::new(0),
            pending,
            next_id: std::sync::atomic::AtomicU64::new(1),
            slots: Semaphore::new(MAX_IN_FLIGHT),
            closed,
            heard,
            silence_limit,
        }
    }

    /// Calls `method` with named arguments and waits for its result.
    pub async fn call(&self, method: &str, args: Vec<(&str, Value)>) -> Result<Value, RpcError> {
        self.call_with_payload(method, args, None).await
    }

    /// Like [`RpcClient::call`], for a call the server may legitimately sit on for `grace`
    /// before it answers (`open` waiting for the repository's lock): the silence limit starts
    /// after it.
    pub async fn call_with_grace(
        &self,
        method: &str,
        args: Vec<(&str, Value)>,
        grace: Duration,
    ) -> Result<Value, RpcError> {
        self.within_silence_limit(method, grace, self.request(method, args, None))
            .await
    }

    /// Like [`RpcClient::call`], with one more argument `payload = (name, bytes)` sent as a raw
    /// string straight from its buffer: a put's object data is not copied into the request.
    pub async fn call_with_payload(
        &self,
        method: &str,
        args: Vec<(&str, Value)>,
        payload: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, RpcError> {
        let request = self.request(method, args, payload);
        self.within_silence_limit(method, Duration::ZERO, request)
            .await
    }

    /// Runs `call` (a request being sent and answered) until it ends or the server has been
    /// silent for the limit (plus `grace`) since it began; then the whole connection is given
    /// up, since its stream can no longer be trusted to line up, and every waiting call fails.
    async fn within_silence_limit(
        &self,
        method: &str,
        grace: Duration,
        call: impl Future<Output = Result<Value, RpcError>>,
    ) -> Result<Value, RpcError> {
        let Some(limit) = self.silence_limit.map(|l| l + grace) else {
            return call.await;
        };
        tokio::pin!(call);
        let began = Instant::now();
        loop {
            let wait = limit.saturating_sub(self.heard.silent_since(began));
            match tokio::time::timeout(wait, &mut call).await {
                Ok(answer) => return answer,
                Err(_) if self.heard.silent_since(began) >= limit => break,
                // Something came meanwhile: the limit counts from then.
                Err(_) => {}
            }
        }
        let silent = RpcError::Silent {
            method: method.to_string(),
            seconds: limit.as_secs(),
        };
        fail_all(&self.pending, &self.closed, silent.to_string());
        Err(silent)
    }

    /// Sends one request and waits for its answer, without a limit.
    async fn request(
        &self,
        method: &str,
        args: Vec<(&str, Value)>,
        payload: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, RpcError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| RpcError::ConnectionLost("client closed".into()))?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending map").insert(id, tx);
        if let Some(reason) = self.closed.reason() {
            self.pending.lock().expect("pending map").remove(&id);
            return Err(RpcError::ConnectionLost(reason));
        }
        // Insertion order i, m, a, as borg sends it; the argument map needs no order. The
        // payload, if any, is the last argument, and its bytes follow the encoded head.
        let mut head = Vec::new();
        encode_map_len(3, &mut head);
        for (key, value) in [("i", Value::Int(id as i128)), ("m", Value::raw(method))] {
            Value::raw(key).encode(&mut head);
            value.encode(&mut head);
        }
        Value::raw("a").encode(&mut head);
        encode_map_len(args.len() + usize::from(payload.is_some()), &mut head);
        for (key, value) in args {
            Value::raw(key).encode(&mut head);
            value.encode(&mut head);
        }
        let body = payload.map(|(name, bytes)| {
            Value::raw(name).encode(&mut head);
            encode_raw_len(bytes.len(), &mut head);
            bytes
        });
        {
            use std::sync::atomic::Ordering::SeqCst;
            self.queued.fetch_add(1, SeqCst);
            let mut guard = self.writer.lock().await;
            self.queued.fetch_sub(1, SeqCst);
            let written = match guard.as_mut() {
                Some(writer) => {
                    let write = async {
                        writer.write_all(&head).await?;
                        if let Some(body) = &body {
                            writer.write_all(body).await?;
                        }
                        // Whoever is still queued writes after us and flushes (or leaves it to
                        // the one after it): the request is never left waiting in the buffer.
                        if self.queued.load(SeqCst) == 0 {
                            writer.flush().await?;
                        }
                        Ok(())
                    };
                    // A server that died stops reading, and a write into a full channel would
                    // wait forever: the reader's word that the connection is gone ends it.
                    tokio::select! {
                        result = write => result.map_err(|e: std::io::Error| e.to_string()),
                        () = self.closed.wait() => Err(self
                            .closed
                            .reason()
                            .unwrap_or_else(|| "the connection was closed".into())),
                    }
                }
                None => Err("the connection was closed".to_string()),
            };
            if written.is_err() {
                // Half a request may have gone out: nothing more can follow it.
                *guard = None;
            }
            if let Err(e) = written {
                self.pending.lock().expect("pending map").remove(&id);
                return Err(RpcError::ConnectionLost(e));
            }
        }
        drop(body);
        rx.await.unwrap_or_else(|_| {
            let reason = self.closed.reason();
            Err(RpcError::ConnectionLost(
                reason.unwrap_or_else(|| "no answer".into()),
            ))
        })
    }

    /// Closes our side of the stream: the server then closes the repository (releasing its lock,
    /// rolling back anything uncommitted) and exits.
    pub async fn shutdown(&self) -> Result<(), RpcError> {
        // Dropping the writer is what closes a pipe (a child's stdin ignores `shutdown`).
        match self.writer.lock().await.take() {
            Some(mut writer) => writer
                .shutdown()
                .await
                .map_err(|e| RpcError::ConnectionLost(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Reads answers until the stream ends, handing each to the caller waiting for its msgid. When
/// the stream ends or breaks, every waiting caller gets the reason.
async fn read_responses(
    mut reader: impl AsyncRead + Unpin,
    pending: Pending,
    closed: Arc<Closed>,
    heard: Arc<Heard>,
    stderr: Option<Arc<ServerStderr>>,
) {
    let mut decoder = StreamDecoder::with_element_limit(MAX_ANSWER_ELEMENTS);
    let mut buf = vec![0u8; 1 << 20];
    let reason = loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break "the server closed the connection".to_string(),
            Ok(n) => n,
            Err(e) => break e.to_string(),
        };
        heard.now();
        let values = match decoder.feed(&buf[..n]) {
            Ok(values) => values,
            Err(e) => break format!("undecodable answer: {e}"),
        };
        if decoder.buffered() > MAX_BUFFERED {
            break "an answer larger than 60 MiB".to_string();
        }
        for value in values {
            let (id, result) = match parse_response(value) {
                Ok(answer) => answer,
                Err(e) => {
                    fail_all(&pending, &closed, e.to_string());
                    return;
                }
            };
            let waiter = pending.lock().expect("pending map").remove(&id);
            if let Some(tx) = waiter {
                let _ = tx.send(result);
            }
        }
    };
    let reason = match stderr {
        Some(stderr) => match stderr.last_words().await {
            Some(words) => format!("{reason} (the server said: {words})"),
            None => reason,
        },
        None => reason,
    };
    fail_all(&pending, &closed, reason);
}

fn fail_all(pending: &Pending, closed: &Closed, reason: String) {
    closed.set(reason.clone());
    for (_, tx) in pending.lock().expect("pending map").drain() {
        let _ = tx.send(Err(RpcError::ConnectionLost(reason.clone())));
    }
}

/// Splits an answer into its msgid and result or remote exception.
fn parse_response(value: Value) -> Result<(u64, Result<Value, RpcError>), RpcError> {
    let id = value
        .get("i")
        .and_then(Value::as_int)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| RpcError::Protocol(format!("answer without msgid: {}", value.brief())))?;
    if let Some(class) = value.get("exception_class") {
        let class = class
            .as_raw()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let args = value
            .get("exception_args")
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .map(render_arg)
            .collect();
        return Ok((id, Err(RpcError::Remote(RemoteException { class, args }))));
    }
    match value {
        Value::Map(entries) => {
            let result = entries
                .into_iter()
                .find(|(k, _)| k.as_raw() == Some(b"r"))
                .map(|(_, v)| v)
                .ok_or_else(|| RpcError::Protocol("answer without result".into()))?;
            Ok((id, Ok(result)))
        }
        other => Err(RpcError::Protocol(format!(
            "answer is not a map: {}",
            other.brief()
        ))),
    }
}

/// Exception arguments are usually text (paths, hex ids); anything else is shown as msgpack.
fn render_arg(v: &Value) -> String {
    match v {
        Value::Raw(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// An RPC client over an in-memory pipe with the given silence limit; the other end.
    fn over_pipe(limit: Duration) -> (RpcClient, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(ours);
        (RpcClient::new(read, write, None, Some(limit)), theirs)
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up() {
        let (rpc, server) = over_pipe(Duration::from_millis(300));
        let (mut requests, _answers) = tokio::io::split(server);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while requests.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        match rpc.call("get_free_nonce", Vec::new()).await {
            Err(RpcError::Silent { method, .. }) => assert_eq!(method, "get_free_nonce"),
            other => panic!("{other:?}"),
        }
        // The connection is gone for every later call too.
        assert!(matches!(
            rpc.call("get", Vec::new()).await,
            Err(RpcError::ConnectionLost(_))
        ));
    }

    #[tokio::test]
    async fn a_slow_answer_that_keeps_arriving_is_not_a_stall() {
        let (rpc, server) = over_pipe(Duration::from_millis(300));
        let (mut requests, mut answers) = tokio::io::split(server);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            let _ = requests.read(&mut sink).await;
            let answer = Value::Map(vec![
                (Value::raw("i"), Value::Int(1)),
                (Value::raw("r"), Value::raw("slow but alive")),
            ])
            .to_bytes();
            // Three times the limit in all, a byte every 40 ms.
            for byte in answer {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let _ = answers.write_all(&[byte]).await;
            }
            let _ = requests.read(&mut sink).await;
        });
        assert_eq!(
            rpc.call("get", Vec::new()).await.unwrap(),
            Value::raw("slow but alive")
        );
    }

    #[test]
    fn results_and_exceptions_are_told_apart() {
        let ok = Value::Map(vec![
            (Value::raw("i"), Value::Int(7)),
            (Value::raw("r"), Value::Nil),
        ]);
        assert!(matches!(parse_response(ok), Ok((7, Ok(Value::Nil)))));
        let err = Value::Map(vec![
            (Value::raw("i"), Value::Int(8)),
            (Value::raw("exception_class"), Value::raw("ObjectNotFound")),
            (
                Value::raw("exception_args"),
                Value::Array(vec![Value::raw("ab12"), Value::raw("/srv/repo")]),
            ),
        ]);
        match parse_response(err) {
            Ok((8, Err(RpcError::Remote(e)))) => {
                assert_eq!(e.class, "ObjectNotFound");
                assert_eq!(e.args, vec!["ab12", "/srv/repo"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_response(Value::Int(1)).is_err());
    }
}
