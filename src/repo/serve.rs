//! The `borg serve` client: [`Repository`] over borg's RPC (`docs/borg-format.md` §1.4–§1.7).
//!
//! Every argument borg's server would default is sent explicitly: the server's defaults differ
//! from the client's (no lock timeout at all, shared lock with silent upgrade), and depending on
//! them would make our behaviour change with the server version.

use std::sync::Arc;

use crate::format::envelope::ObjectId;
use crate::format::msgpack::Value;

use super::repository::{OpenOptions, RepoError, RepoFuture, Repository};
use super::rpc::{RemoteException, RpcClient, RpcError};

/// The version we announce in `negotiate`: the borg release whose protocol we speak.
const CLIENT_VERSION: [i128; 4] = [1, 4, 5, -1];

/// A server older than this speaks a protocol we do not (`docs/borg-format.md` §1.4).
const MIN_SERVER_VERSION: (i128, i128, i128) = (1, 2, 0);

/// How long a compacting commit may go without a word from the server on top of the usual
/// silence limit: the server rewrites segments, possibly gigabytes of them, and reports
/// nothing until it is done.
const COMPACTION_GRACE: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// How long a repository check may go without a word from the server on top of the usual
/// silence limit: the server reads every segment file before it answers.
const CHECK_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl From<RpcError> for RepoError {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Remote(remote) => RepoError::from_remote(remote),
            other => RepoError::Rpc(other),
        }
    }
}

impl RepoError {
    fn from_remote(e: RemoteException) -> RepoError {
        let arg = |i: usize| e.args.get(i).cloned().unwrap_or_default();
        match e.class.as_str() {
            "DoesNotExist" => RepoError::DoesNotExist(arg(0)),
            "AlreadyExists" => RepoError::AlreadyExists(arg(0)),
            "PathAlreadyExists" => RepoError::PathAlreadyExists(arg(0)),
            "ParentPathDoesNotExist" => RepoError::ParentPathDoesNotExist(arg(0)),
            "InvalidRepository" => RepoError::NotARepository(arg(0)),
            "InvalidRepositoryConfig" => RepoError::InvalidConfig {
                path: arg(0),
                detail: arg(1),
            },
            "PathNotAllowed" => RepoError::PathNotAllowed(arg(0)),
            "LockTimeout" | "LockFailed" => RepoError::Locked(arg(0)),
            "ObjectNotFound" => RepoError::ObjectNotFound { id: arg(0) },
            "StorageQuotaExceeded" => RepoError::QuotaExceeded(e.args.join(", ")),
            "InsufficientFreeSpaceError" => RepoError::NoSpace(e.args.join(", ")),
            _ => RepoError::Other {
                message: e.args.join(", "),
                class: e.class,
            },
        }
    }
}

/// Agrees on the protocol; returns the server's borg version, e.g. `(1, 4, 5)`.
pub async fn negotiate(rpc: &RpcClient) -> Result<(i128, i128, i128), RepoError> {
    let client_version = Value::Array(CLIENT_VERSION.iter().map(|v| Value::Int(*v)).collect());
    let answer = rpc
        .call(
            "negotiate",
            vec![(
                "client_data",
                Value::Map(vec![(Value::raw("client_version"), client_version)]),
            )],
        )
        .await?;
    // Servers before 1.1 answer with a bare protocol number instead of a dict.
    let version = answer
        .get("server_version")
        .and_then(Value::as_array)
        .filter(|v| v.len() >= 3)
        .ok_or_else(|| {
            RepoError::UnsupportedServer(format!("older than 1.1 ({})", answer.brief()))
        })?;
    let part = |i: usize| version[i].as_int().unwrap_or(0);
    let found = (part(0), part(1), part(2));
    if found < MIN_SERVER_VERSION {
        return Err(RepoError::UnsupportedServer(format!(
            "{}.{}.{}",
            found.0, found.1, found.2
        )));
    }
    Ok(found)
}

/// What a session's first requests brought back (see [`ServeRepository::start`]).
pub struct Started {
    pub server_version: (i128, i128, i128),
    pub repo: ServeRepository,
    /// The manifest object, or why it could not be read (a repository without one).
    pub manifest: Result<Vec<u8>, RepoError>,
    /// The repository config's key (`load_key`), whether or not the key is kept there.
    pub config_key: Result<Option<String>, RepoError>,
}

/// A repository opened by a `borg serve` on the other end of an RPC connection (one per
/// connection): the [`Repository`] that every command uses today.
pub struct ServeRepository {
    rpc: Arc<RpcClient>,
    id: ObjectId,
}

impl ServeRepository {
    /// Opens the repository at `path`, sent exactly as the user gave it: the server resolves
    /// `~` and `/./` (`docs/borg-format.md` §1.1).
    pub async fn open(
        rpc: Arc<RpcClient>,
        path: &str,
        options: &OpenOptions,
    ) -> Result<ServeRepository, RepoError> {
        // The server answers `open` only once it has the lock: waiting for it is no stall.
        let answer = rpc
            .call_with_grace(
                "open",
                vec![
                    ("path", Value::raw(path)),
                    ("create", Value::Bool(options.create)),
                    ("lock_wait", Value::Int(options.lock_wait.as_secs() as i128)),
                    ("lock", Value::Bool(options.lock)),
                    ("exclusive", Value::Bool(options.exclusive)),
                    ("append_only", Value::Bool(options.append_only)),
                    ("make_parent_dirs", Value::Bool(options.make_parent_dirs)),
                ],
                options.lock_wait,
            )
            .await?;
        let id = answer
            .as_raw()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| RpcError::Protocol(format!("open returned {}", answer.brief())))?;
        Ok(ServeRepository { rpc, id })
    }

    /// Starts a session: `negotiate`, `open`, and the manifest and config key that every
    /// command reads next. All four go out at once: the server answers in order, and waiting
    /// for each answer before sending the next request cost a round trip apiece through
    /// `borg serve`'s queue. When one fails, the answers after it are not used: a too old
    /// server or a failed `open` is what is reported.
    pub async fn start(
        rpc: Arc<RpcClient>,
        path: &str,
        options: &OpenOptions,
    ) -> Result<Started, RepoError> {
        // For the two reads only, which do not need the id the `open` is still to return.
        let reader = ServeRepository {
            rpc: rpc.clone(),
            id: [0; 32],
        };
        let (server_version, opened, manifest, config_key) = tokio::join!(
            negotiate(&rpc),
            ServeRepository::open(rpc.clone(), path, options),
            reader.get(&crate::format::envelope::MANIFEST_ID),
            reader.load_key(),
        );
        let server_version = server_version?;
        Ok(Started {
            server_version,
            repo: opened?,
            manifest,
            config_key,
        })
    }
}

impl Repository for ServeRepository {
    fn id(&self) -> &ObjectId {
        &self.id
    }

    fn get<'a>(&'a self, id: &'a ObjectId) -> RepoFuture<'a, Vec<u8>> {
        Box::pin(async move {
            match self
                .rpc
                .call("get", vec![("id", Value::raw(id.to_vec()))])
                .await?
            {
                Value::Raw(data) => Ok(data),
                other => Err(RpcError::Protocol(format!("get returned {}", other.brief())).into()),
            }
        })
    }

    fn list<'a>(
        &'a self,
        limit: usize,
        marker: Option<&'a ObjectId>,
    ) -> RepoFuture<'a, Vec<ObjectId>> {
        Box::pin(async move {
            let answer = self
                .rpc
                .call(
                    "list",
                    vec![
                        ("limit", Value::Int(limit as i128)),
                        (
                            "marker",
                            marker.map_or(Value::Nil, |m| Value::raw(m.to_vec())),
                        ),
                    ],
                )
                .await?;
            answer
                .as_array()
                .and_then(|ids| {
                    ids.iter()
                        .map(|v| v.as_raw().and_then(|b| <[u8; 32]>::try_from(b).ok()))
                        .collect()
                })
                .ok_or_else(|| {
                    RpcError::Protocol("list returned something other than ids".into()).into()
                })
        })
    }

    /// Calls may run concurrently: the RPC pipelines them, and a failure comes back to the call
    /// it belongs to.
    fn put<'a>(&'a self, id: &'a ObjectId, data: Vec<u8>) -> RepoFuture<'a, ()> {
        Box::pin(async move {
            self.rpc
                .call_with_payload(
                    "put",
                    vec![("id", Value::raw(id.to_vec()))],
                    Some(("data", data)),
                )
                .await?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, id: &'a ObjectId) -> RepoFuture<'a, ()> {
        Box::pin(async move {
            self.rpc
                .call("delete", vec![("id", Value::raw(id.to_vec()))])
                .await?;
            Ok(())
        })
    }

    fn commit(&self, compact: bool) -> RepoFuture<'_, ()> {
        Box::pin(async move {
            self.rpc
                .call(
                    "commit",
                    vec![
                        ("save_space", Value::Bool(false)),
                        ("compact", Value::Bool(compact)),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn commit_compacting(&self, threshold: f64) -> RepoFuture<'_, ()> {
        Box::pin(async move {
            self.rpc
                .call_with_grace(
                    "commit",
                    vec![
                        ("save_space", Value::Bool(false)),
                        ("compact", Value::Bool(true)),
                        ("threshold", Value::Float(threshold)),
                        ("cleanup_commits", Value::Bool(false)),
                    ],
                    COMPACTION_GRACE,
                )
                .await?;
            Ok(())
        })
    }

    fn check(&self, max_duration: Option<u64>) -> RepoFuture<'_, bool> {
        Box::pin(async move {
            let answer = self
                .rpc
                .call_with_grace(
                    "check",
                    vec![
                        ("repair", Value::Bool(false)),
                        ("save_space", Value::Bool(false)),
                        ("max_duration", Value::Int(max_duration.unwrap_or(0).into())),
                    ],
                    // A partial check ends after `max_duration`; give it that plus the usual.
                    max_duration.map_or(CHECK_GRACE, std::time::Duration::from_secs),
                )
                .await?;
            match answer {
                Value::Bool(clean) => Ok(clean),
                other => {
                    Err(RpcError::Protocol(format!("check returned {}", other.brief())).into())
                }
            }
        })
    }

    fn rollback(&self) -> RepoFuture<'_, ()> {
        Box::pin(async move {
            self.rpc.call("rollback", Vec::new()).await?;
            Ok(())
        })
    }

    fn get_free_nonce(&self) -> RepoFuture<'_, Option<u64>> {
        Box::pin(async move {
            match self.rpc.call("get_free_nonce", Vec::new()).await? {
                Value::Nil => Ok(None),
                value => value
                    .as_int()
                    .and_then(|n| u64::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        RpcError::Protocol(format!("get_free_nonce returned {}", value.brief()))
                            .into()
                    }),
            }
        })
    }

    fn commit_nonce_reservation(
        &self,
        next_unreserved: u64,
        start_nonce: Option<u64>,
    ) -> RepoFuture<'_, ()> {
        Box::pin(async move {
            self.rpc
                .call(
                    "commit_nonce_reservation",
                    vec![
                        ("next_unreserved", Value::Int(next_unreserved.into())),
                        (
                            "start_nonce",
                            start_nonce.map_or(Value::Nil, |n| Value::Int(n.into())),
                        ),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn load_key(&self) -> RepoFuture<'_, Option<String>> {
        Box::pin(async move {
            match self.rpc.call("load_key", Vec::new()).await? {
                Value::Raw(text) if text.is_empty() => Ok(None),
                Value::Raw(text) => Ok(Some(String::from_utf8_lossy(&text).into_owned())),
                other => {
                    Err(RpcError::Protocol(format!("load_key returned {}", other.brief())).into())
                }
            }
        })
    }

    fn save_key<'a>(&'a self, text: &'a str) -> RepoFuture<'a, ()> {
        Box::pin(async move {
            self.rpc
                .call(
                    "save_key",
                    vec![("keydata", Value::raw(text.as_bytes().to_vec()))],
                )
                .await?;
            Ok(())
        })
    }

    fn break_lock(&self) -> RepoFuture<'_, ()> {
        Box::pin(async move {
            self.rpc.call("break_lock", Vec::new()).await?;
            Ok(())
        })
    }

    /// The server's input ends: it closes the repository, releasing the lock, and exits.
    /// Waiting for that is the connection's `close`.
    fn end_requests(&self) -> RepoFuture<'_, ()> {
        Box::pin(async move { Ok(self.rpc.shutdown().await?) })
    }
}
