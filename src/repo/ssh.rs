//! The SSH transport: `borg serve` on a remote host, reached with russh — no `ssh` binary.
//!
//! What OpenSSH would do for `borg` is done here explicitly, because there is no `ssh_config` and
//! no terminal to ask a question on:
//!
//! - the host key is checked against a known_hosts file before anything is sent; an unknown key
//!   is refused unless the user opted in to accepting new keys, a changed or revoked one always
//!   is; the refusal names the fingerprint and the exact line to add or remove;
//! - the host key algorithms known for the host are asked for first (as OpenSSH orders them), so
//!   a host recorded with its ECDSA key is not refused for offering Ed25519;
//! - public-key authentication with OpenSSH private keys; a passphrase-protected key needs its
//!   passphrase handed over by file or environment, never on the command line;
//! - keepalives, so a link that dies silently ends the session instead of hanging it;
//! - the command is `<remote path> serve`, joined with spaces as `ssh` joins its arguments, so a
//!   `--remote-path` that works with borg works here.
//!
//! The channel's data and stderr arrive as messages on one queue; a pump task turns them back
//! into the two byte streams the rest of the client expects.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::AsyncWriteExt;

use super::known_hosts::{self, KnownHosts, Verdict};
use super::location::SshTarget;
use super::tcp::QuickStream;
use super::transport::{Finish, ServeSession, ServeStreams, SessionEnd};
use crate::error::ErrorKind;

/// How to reach and trust an SSH server; every field has a default a user can override.
#[derive(Clone)]
pub struct SshOptions {
    /// The login name when the location names none.
    pub default_user: String,
    pub known_hosts: PathBuf,
    /// Record an unknown host key instead of refusing it (`StrictHostKeyChecking=accept-new`).
    pub accept_new_host_key: bool,
    /// Private keys to offer, in order; missing files are skipped.
    pub identities: Vec<PathBuf>,
    /// For passphrase-protected private keys.
    pub key_passphrase: Option<String>,
    /// `borg` on the server (`--remote-path`, `BORG_REMOTE_PATH`).
    pub remote_path: String,
    /// Options for `borg serve` (log level, as borg passes them).
    pub serve_args: Vec<String>,
    pub connect_timeout: Duration,
    /// Silence after which a keepalive is sent; three unanswered ones end the session.
    pub keepalive: Duration,
}

impl std::fmt::Debug for SshOptions {
    /// Everything but the key's passphrase, which is only said to be there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshOptions")
            .field("default_user", &self.default_user)
            .field("known_hosts", &self.known_hosts)
            .field("accept_new_host_key", &self.accept_new_host_key)
            .field("identities", &self.identities)
            .field(
                "key_passphrase",
                &self.key_passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("remote_path", &self.remote_path)
            .field("serve_args", &self.serve_args)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl SshOptions {
    /// OpenSSH's defaults under `home`: `~/.ssh/known_hosts` and the usual identity files.
    pub fn defaults(home: &Path, user: &str) -> SshOptions {
        let ssh = home.join(".ssh");
        SshOptions {
            default_user: user.to_string(),
            known_hosts: ssh.join("known_hosts"),
            accept_new_host_key: false,
            identities: ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|name| ssh.join(name))
                .collect(),
            key_passphrase: None,
            remote_path: "borg".into(),
            serve_args: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error(
        "the host key of {target} is not known ({fingerprint}); if that is the server's key, add it with: echo '{line}' >> {file} (or rerun with --accept-new-host-key)"
    )]
    UnknownHostKey {
        target: String,
        fingerprint: String,
        line: String,
        file: String,
    },
    #[error(
        "the host key of {target} has CHANGED ({fingerprint}) and does not match line {line} of {file}: someone may be intercepting the connection; if the server's key really changed, remove that line (sed -i '{line}d' {file}) and add the new key"
    )]
    ChangedHostKey {
        target: String,
        fingerprint: String,
        line: usize,
        file: String,
    },
    #[error("the host key of {target} ({fingerprint}) is revoked in line {line} of {file}")]
    RevokedHostKey {
        target: String,
        fingerprint: String,
        line: usize,
        file: String,
    },
    #[error("cannot read known_hosts file {file}: {detail}")]
    KnownHostsUnreadable { file: String, detail: String },
    #[error(
        "no SSH private key found (looked for {tried}); give one with --ssh-key or MAILCOW_BORG_SSH_KEY"
    )]
    NoIdentity { tried: String },
    #[error(
        "the SSH key {0} is protected by a passphrase; give it in a file (--ssh-key-passphrase-file) or in MAILCOW_BORG_SSH_KEY_PASSPHRASE"
    )]
    KeyEncrypted(String),
    #[error("cannot use the SSH key {path}: {detail}")]
    KeyUnusable { path: String, detail: String },
    #[error("{target} refused authentication as {user} with the key(s) {tried}")]
    AuthRefused {
        target: String,
        user: String,
        tried: String,
    },
    #[error("the SSH session with {target} failed: {detail}")]
    Session { target: String, detail: String },
}

impl SshError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            // Whoever answered is not provably the repository host.
            SshError::ChangedHostKey { .. } | SshError::RevokedHostKey { .. } => {
                ErrorKind::Integrity
            }
            SshError::UnknownHostKey { .. }
            | SshError::NoIdentity { .. }
            | SshError::KeyEncrypted(_) => ErrorKind::BadInput,
            SshError::KnownHostsUnreadable { .. } | SshError::KeyUnusable { .. } => {
                ErrorKind::Environment
            }
            SshError::AuthRefused { .. } => ErrorKind::Repository,
            SshError::Connect { .. } | SshError::Session { .. } => ErrorKind::Connection,
        }
    }
}

/// Connects, verifies the host, authenticates and starts `borg serve`.
pub async fn connect(target: &SshTarget, options: &SshOptions) -> Result<ServeStreams, SshError> {
    let port = target.port.unwrap_or(22);
    let shown = display_target(target, port);
    let known =
        KnownHosts::load(&options.known_hosts).map_err(|e| SshError::KnownHostsUnreadable {
            file: options.known_hosts.display().to_string(),
            detail: e.to_string(),
        })?;
    let config = client::Config {
        keepalive_interval: Some(options.keepalive),
        keepalive_max: 3,
        // borg's objects are up to ~20 MiB; a larger window keeps the pipe full on long links.
        window_size: 16 << 20,
        preferred: russh::Preferred {
            key: host_key_order(&known.known_algorithms(&target.host, port)).into(),
            cipher: cipher_order().into(),
            ..russh::Preferred::DEFAULT
        },
        ..client::Config::default()
    };
    let verdict = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        host: target.host.clone(),
        port,
        known,
        accept_new: options.accept_new_host_key,
        shown: shown.clone(),
        refusal: verdict.clone(),
    };
    let connecting = async {
        let socket = tokio::net::TcpStream::connect((target.host.as_str(), port))
            .await
            .map_err(|e| SshError::Connect {
                target: shown.clone(),
                detail: e.to_string(),
            })?;
        let socket = QuickStream::new(socket).map_err(|e| SshError::Connect {
            target: shown.clone(),
            detail: e.to_string(),
        })?;
        client::connect_stream(Arc::new(config), socket, verifier)
            .await
            .map_err(|e| {
                // A refused host key surfaces as a generic error; the verifier kept the reason.
                verdict
                    .lock()
                    .expect("host key verdict")
                    .take()
                    .unwrap_or_else(|| SshError::Connect {
                        target: shown.clone(),
                        detail: e.to_string(),
                    })
            })
    };
    let mut handle = tokio::time::timeout(options.connect_timeout, connecting)
        .await
        .map_err(|_| SshError::Connect {
            target: shown.clone(),
            detail: format!("no answer within {:?}", options.connect_timeout),
        })??;

    // A server that accepts the connection and then never answers must not hang us either:
    // logging in and starting `borg serve` get the same limit again.
    let user = target.user.as_deref().unwrap_or(&options.default_user);
    let logging_in = async {
        authenticate(&mut handle, user, options, &shown).await?;
        start_serve(handle, options, &shown).await
    };
    tokio::time::timeout(options.connect_timeout, logging_in)
        .await
        .map_err(|_| SshError::Connect {
            target: shown.clone(),
            detail: format!(
                "no answer within {:?} while logging in and starting borg serve",
                options.connect_timeout
            ),
        })?
}

fn display_target(target: &SshTarget, port: u16) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    if port == 22 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// With AES instructions, AES-GCM costs a fraction of ChaCha20-Poly1305 per byte (measured: the
/// SSH cipher was 8% of an extract's CPU with ChaCha20); without them, ChaCha20 is the faster.
fn cipher_order() -> Vec<russh::cipher::Name> {
    use russh::cipher::{AES_128_GCM, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    #[cfg(target_arch = "x86_64")]
    let hardware_aes = is_x86_feature_detected!("aes") && is_x86_feature_detected!("pclmulqdq");
    #[cfg(not(target_arch = "x86_64"))]
    let hardware_aes = false;
    if hardware_aes {
        vec![AES_256_GCM, AES_128_GCM, CHACHA20_POLY1305, AES_256_CTR]
    } else {
        vec![CHACHA20_POLY1305, AES_256_GCM, AES_128_GCM, AES_256_CTR]
    }
}

/// russh's host key preferences, with the algorithms known_hosts has for this host first.
fn host_key_order(known: &[Algorithm]) -> Vec<Algorithm> {
    let mut order = russh::Preferred::DEFAULT.key.to_vec();
    let is_rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
    let is_known = |a: &Algorithm| known.iter().any(|k| k == a || (is_rsa(k) && is_rsa(a)));
    order.sort_by_key(|a| !is_known(a));
    order
}

struct Verifier {
    host: String,
    port: u16,
    known: KnownHosts,
    accept_new: bool,
    shown: String,
    refusal: Arc<Mutex<Option<SshError>>>,
}

impl Verifier {
    fn judge(&self, key: &PublicKey) -> Result<(), SshError> {
        let file = self.known.path().display().to_string();
        let fingerprint = format!("{} key {}", key.algorithm(), known_hosts::fingerprint(key));
        let target = self.shown.clone();
        match self.known.check(&self.host, self.port, key) {
            Verdict::Known => Ok(()),
            Verdict::Unknown if self.accept_new => {
                known_hosts::append(self.known.path(), &self.host, self.port, key).map_err(|e| {
                    SshError::KnownHostsUnreadable {
                        file,
                        detail: format!("cannot record the new host key: {e}"),
                    }
                })
            }
            Verdict::Unknown => Err(SshError::UnknownHostKey {
                target,
                fingerprint,
                line: known_hosts::entry_line(&self.host, self.port, key),
                file,
            }),
            Verdict::Changed { line } => Err(SshError::ChangedHostKey {
                target,
                fingerprint,
                line,
                file,
            }),
            Verdict::Revoked { line } => Err(SshError::RevokedHostKey {
                target,
                fingerprint,
                line,
                file,
            }),
        }
    }
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // No certificate algorithms are advertised, so a certificate is not expected; refusing
        // it is the safe answer.
        let judged = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.judge(key),
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::Session {
                target: self.shown.clone(),
                detail: "the server presented a host certificate, which is not supported".into(),
            }),
        };
        match judged {
            Ok(()) => Ok(true),
            Err(refusal) => {
                *self.refusal.lock().expect("host key verdict") = Some(refusal);
                Ok(false)
            }
        }
    }
}

async fn authenticate(
    handle: &mut Handle<Verifier>,
    user: &str,
    options: &SshOptions,
    shown: &str,
) -> Result<(), SshError> {
    let session_error = |e: russh::Error| SshError::Session {
        target: shown.to_string(),
        detail: e.to_string(),
    };
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(session_error)?
        .flatten();
    let mut tried = Vec::new();
    for path in &options.identities {
        if !path.exists() {
            continue;
        }
        let key = load_key(path, options.key_passphrase.as_deref())?;
        tried.push(path.display().to_string());
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash))
            .await
            .map_err(session_error)?;
        if result.success() {
            return Ok(());
        }
    }
    if tried.is_empty() {
        return Err(SshError::NoIdentity {
            tried: options
                .identities
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Err(SshError::AuthRefused {
        target: shown.to_string(),
        user: user.to_string(),
        tried: tried.join(", "),
    })
}

fn load_key(path: &Path, passphrase: Option<&str>) -> Result<russh::keys::PrivateKey, SshError> {
    let shown = path.display().to_string();
    match russh::keys::load_secret_key(path, passphrase) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(SshError::KeyEncrypted(shown)),
        Err(e) => Err(SshError::KeyUnusable {
            path: shown,
            detail: if passphrase.is_some() {
                format!("{e} (is the passphrase right?)")
            } else {
                e.to_string()
            },
        }),
    }
}

/// How long the channel may stay open after `borg serve` reported its exit.
const EXITED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens a session channel, runs `borg serve` in it and turns the channel into streams.
async fn start_serve(
    handle: Handle<Verifier>,
    options: &SshOptions,
    shown: &str,
) -> Result<ServeStreams, SshError> {
    let session_error = |e: russh::Error| SshError::Session {
        target: shown.to_string(),
        detail: e.to_string(),
    };
    let channel = handle.channel_open_session().await.map_err(session_error)?;
    let mut command = vec![options.remote_path.as_str(), "serve"];
    command.extend(options.serve_args.iter().map(String::as_str));
    channel
        .exec(true, command.join(" "))
        .await
        .map_err(session_error)?;

    let (mut read_half, write_half) = channel.split();
    let stdin = write_half.make_writer();
    let (mut stdout_tx, stdout_rx) = tokio::io::duplex(1 << 20);
    let (mut stderr_tx, stderr_rx) = tokio::io::duplex(64 << 10);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut exit = None;
        loop {
            // Once borg serve has exited, the channel has nothing more to bring: if the server
            // does not close it soon, the streams end anyway, so that no caller waits forever
            // for an answer from a process that is gone.
            let message = if exit.is_some() {
                tokio::time::timeout(EXITED_GRACE, read_half.wait())
                    .await
                    .unwrap_or_default()
            } else {
                read_half.wait().await
            };
            let Some(message) = message else {
                break;
            };
            match message {
                ChannelMsg::Data { data } if stdout_tx.write_all(&data).await.is_err() => break,
                ChannelMsg::Data { .. } => {}
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    let _ = stderr_tx.write_all(&data).await;
                }
                ChannelMsg::ExitStatus { exit_status: 0 } => exit = Some(None),
                ChannelMsg::ExitStatus { exit_status } => {
                    exit = Some(Some(SessionEnd::ExitCode(exit_status.into())));
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    exit = Some(Some(SessionEnd::Signal(format!("{signal_name:?}"))));
                }
                _ => {}
            }
        }
        // Dropping the stream ends tell the RPC reader and the log forwarder that it is over.
        drop(stdout_tx);
        drop(stderr_tx);
        let _ = ended_tx.send(exit);
    });
    Ok(ServeStreams {
        stdin: Box::new(stdin),
        stdout: Box::new(stdout_rx),
        stderr: Box::new(stderr_rx),
        session: Box::new(SshSession {
            handle,
            ended: ended_rx,
        }),
    })
}

struct SshSession {
    handle: Handle<Verifier>,
    /// How the server ended: `Some(None)` cleanly, `None` unreported.
    ended: tokio::sync::oneshot::Receiver<Option<Option<SessionEnd>>>,
}

impl ServeSession for SshSession {
    fn finish(self: Box<Self>) -> Finish {
        Box::pin(async move {
            let exit = self.ended.await.ok().flatten();
            let _ = self
                .handle
                .disconnect(Disconnect::ByApplication, "", "en")
                .await;
            match exit {
                Some(None) => Ok(()),
                Some(Some(end)) => Err(end),
                None => Err(SessionEnd::Vanished),
            }
        })
    }
}
