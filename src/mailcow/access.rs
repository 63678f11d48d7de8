//! What every helper container needs to reach the repository, and how it gets it — shared by
//! backup and restore, so both hand secrets on the same way.
//!
//! The helper's command line holds nothing secret: the passphrase, SSH key, its passphrase and
//! known_hosts are read-only single-file mounts under `/run/secrets`, named on the command line
//! by their path there. The persistent state directory (files cache, chunk index, borg's
//! security dir with the nonce counter) is mounted read-write at `/state`, which is the
//! helper's `BORG_BASE_DIR`.

use std::path::{Path, PathBuf};

use crate::docker::helper::{HelperLimits, HelperMount, HelperSpec};
use crate::docker::image::ensure_helper_image;
use crate::docker::{DockerError, Engine};

/// Where the helper sees things.
pub const HELPER_ROOT: &str = "/mailcow";
pub const HELPER_STATE: &str = "/state";
const HELPER_SECRETS: &str = "/run/secrets";

/// The label that says which mailcow a helper belongs to.
pub const PROJECT_LABEL: &str = "org.mailcow-borg.project";

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(
        "a helper container of an earlier run is still working on this mailcow ({0}); wait for it to finish, or stop it: docker rm -f {0}"
    )]
    Running(String),
    #[error("cannot read our own executable to make the helper image: {0}")]
    OwnExecutable(std::io::Error),
    #[error("cannot create the state directory {path}: {detail}")]
    StateDir { path: String, detail: String },
}

/// The capabilities of a helper that reads files of every owner (mail is uid 5000, mode 0700
/// and 0600; the crypt keys dovecot's, uid 401) from read-only mounts. `DAC_OVERRIDE`, not
/// `DAC_READ_SEARCH`, though reading is all it needs: on a read-only mount the two read the
/// same, but Docker's default seccomp profile lets holders of `DAC_READ_SEARCH` call
/// `open_by_handle_at` — the "Shocker" escape, which opens files of the host by handle.
pub const READ_ANY_FILE: [&str; 1] = ["DAC_OVERRIDE"];

/// The capabilities of a helper that writes files of every owner and gives them back their
/// owners, modes and times (`DAC_OVERRIDE` reads and searches too; see [`READ_ANY_FILE`]).
pub const WRITE_ANY_FILE: [&str; 4] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"];

/// The repository and how to reach it, settled by the CLI from the config file, environment
/// and flags.
#[derive(Clone, Debug)]
pub struct HelperAccess {
    /// The repository, as borg writes it.
    pub repository: String,
    pub passphrase_file: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub ssh_key_passphrase_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// `BORG_KEY_FILE` for keyfile repositories.
    pub key_file: Option<PathBuf>,
    pub remote_path: Option<String>,
    pub lock_wait: u64,
    /// Seconds the repository server may stay silent (`--server-timeout`).
    pub server_timeout: u64,
    /// Persistent host directory: caches and borg's security dir.
    pub state_dir: PathBuf,
    pub helper_image: Option<String>,
    pub network: String,
    pub limits: HelperLimits,
    /// For archive metadata, as the host knows them.
    pub hostname: String,
    pub username: String,
}

fn read_only_bind(source: &Path, target: String) -> HelperMount {
    HelperMount::Bind {
        source: source.display().to_string(),
        target,
        read_only: true,
    }
}

impl HelperAccess {
    /// A helper that runs `agent <command>` for the mailcow of `project`, with the state
    /// directory, the secrets and the repository options; callers add their mounts and
    /// arguments.
    pub fn helper_spec(&self, image: &str, command: &str, project: &str) -> HelperSpec {
        let mut mounts = vec![HelperMount::Bind {
            source: self.state_dir.display().to_string(),
            target: HELPER_STATE.into(),
            read_only: false,
        }];
        let mut args: Vec<String> = vec!["agent".into(), command.into()];
        for (flag, file, name) in [
            ("--passphrase-file", &self.passphrase_file, "passphrase"),
            ("--ssh-key", &self.ssh_key, "ssh_key"),
            (
                "--ssh-key-passphrase-file",
                &self.ssh_key_passphrase_file,
                "ssh_key_passphrase",
            ),
            ("--known-hosts", &self.known_hosts, "known_hosts"),
        ] {
            if let Some(path) = file {
                let target = format!("{HELPER_SECRETS}/{name}");
                mounts.push(read_only_bind(path, target.clone()));
                args.extend([flag.to_string(), target]);
            }
        }
        let mut env = vec![
            format!("BORG_BASE_DIR={HELPER_STATE}"),
            format!("BORG_HOSTNAME={}", self.hostname),
            format!("BORG_USERNAME={}", self.username),
        ];
        if let Some(path) = &self.key_file {
            let target = format!("{HELPER_SECRETS}/borg_key");
            mounts.push(read_only_bind(path, target.clone()));
            env.push(format!("BORG_KEY_FILE={target}"));
        }
        args.extend(["--lock-wait".into(), self.lock_wait.to_string()]);
        args.extend(["--server-timeout".into(), self.server_timeout.to_string()]);
        if let Some(remote) = &self.remote_path {
            args.extend(["--remote-path".into(), remote.clone()]);
        }
        HelperSpec {
            image: image.to_string(),
            args,
            working_dir: HELPER_ROOT.into(),
            mounts,
            network: self.network.clone(),
            capabilities: Vec::new(),
            env,
            labels: vec![(PROJECT_LABEL.into(), project.to_string())],
            limits: self.limits,
        }
    }

    /// The helper image: the configured one, or one made from this executable (and whether
    /// this call made it).
    pub async fn image(&self, engine: &Engine) -> Result<(String, bool), HelperError> {
        match &self.helper_image {
            Some(image) => Ok((image.clone(), false)),
            None => {
                let executable =
                    std::fs::read("/proc/self/exe").map_err(HelperError::OwnExecutable)?;
                Ok(ensure_helper_image(engine, &executable, env!("CARGO_PKG_VERSION")).await?)
            }
        }
    }

    /// Creates the state directory (the helper's `/state`).
    pub fn ensure_state_dir(&self) -> Result<(), HelperError> {
        crate::ops::durable::create_private_dir_all(&self.state_dir).map_err(|e| {
            HelperError::StateDir {
                path: self.state_dir.display().to_string(),
                detail: e.to_string(),
            }
        })
    }
}

/// Removes the stopped helpers a killed earlier run left for `project`; refuses while one of
/// them still runs (its host process is gone — the host lock was free — but it works on).
pub async fn clear_stale_helpers(engine: &Engine, project: &str) -> Result<(), HelperError> {
    let label = format!("{PROJECT_LABEL}={project}");
    match engine.remove_stale_helpers(&label).await?.first() {
        Some(id) => Err(HelperError::Running(id[..12.min(id.len())].to_string())),
        None => Ok(()),
    }
}
