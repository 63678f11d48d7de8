//! What every helper container needs to reach the repository, and how it gets it — shared by
//! backup and restore, so both hand secrets on the same way.
//!
//! The helper's command line ([`super::helper_command`]) holds nothing secret: the passphrase,
//! SSH key, its passphrase and known_hosts are read-only single-file mounts under
//! `/run/secrets`, named on the command line by their path there. The persistent state directory (files cache, chunk index, borg's
//! security dir with the nonce counter) is mounted read-write at `/state`, which is the
//! helper's `BORG_BASE_DIR`.

use std::path::{Path, PathBuf};

use crate::docker::helper::{HelperLimits, HelperMount, HelperSpec};
use crate::docker::image::ensure_helper_image;
use crate::docker::{DockerError, Engine};

use super::helper_command::{ArchiveLocation, HelperCommand, RepositoryAccess};

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
    /// How the host reaches it, with the host's paths of the secrets; a helper gets the same
    /// with their paths under `/run/secrets` ([`HelperAccess::in_helper`]).
    pub repository_access: RepositoryAccess,
    /// `BORG_KEY_FILE` for keyfile repositories.
    pub key_file: Option<PathBuf>,
    /// Persistent host directory: caches and borg's security dir.
    pub state_dir: PathBuf,
    pub helper_image: Option<String>,
    pub network: String,
    pub limits: HelperLimits,
    /// For archive metadata, as the host knows them.
    pub hostname: String,
    pub username: String,
}

fn read_only_bind(source: &Path, target: PathBuf) -> HelperMount {
    HelperMount::Bind {
        source: source.display().to_string(),
        target: target.display().to_string(),
        read_only: true,
    }
}

/// Where a secret file of [`RepositoryAccess`] is in every helper.
fn secret_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{HELPER_SECRETS}/{name}"))
}

impl HelperAccess {
    /// The secrets passed as files, each with its host path and its name under `/run/secrets`:
    /// [`Self::in_helper`] names them there, [`Self::helper_spec`] mounts them there.
    fn secret_files(&self) -> [(Option<&PathBuf>, &'static str); 4] {
        let access = &self.repository_access;
        [
            (access.passphrase_file.as_ref(), "passphrase"),
            (access.ssh_key.as_ref(), "ssh_key"),
            (
                access.ssh_key_passphrase_file.as_ref(),
                "ssh_key_passphrase",
            ),
            (access.known_hosts.as_ref(), "known_hosts"),
        ]
    }

    /// The repository access as a helper sees it: the secrets where [`Self::helper_spec`]
    /// mounts them.
    pub fn in_helper(&self) -> RepositoryAccess {
        let [
            passphrase_file,
            ssh_key,
            ssh_key_passphrase_file,
            known_hosts,
        ] = self
            .secret_files()
            .map(|(file, name)| file.map(|_| secret_path(name)));
        RepositoryAccess {
            passphrase_file,
            ssh_key,
            ssh_key_passphrase_file,
            known_hosts,
            ..self.repository_access.clone()
        }
    }

    /// `archive` in this repository.
    pub fn archive(&self, archive: &str) -> ArchiveLocation {
        ArchiveLocation {
            repository: self.repository.clone(),
            archive: archive.into(),
        }
    }

    /// A helper that runs `command` for the mailcow of `project`, with the state directory and
    /// the secrets mounted; callers add their mounts and capabilities. The command's access
    /// must be [`Self::in_helper`]'s.
    pub fn helper_spec(&self, image: &str, project: &str, command: &HelperCommand) -> HelperSpec {
        let mut mounts = vec![HelperMount::Bind {
            source: self.state_dir.display().to_string(),
            target: HELPER_STATE.into(),
            read_only: false,
        }];
        for (file, name) in self.secret_files() {
            if let Some(path) = file {
                mounts.push(read_only_bind(path, secret_path(name)));
            }
        }
        let mut env = vec![
            format!("BORG_BASE_DIR={HELPER_STATE}"),
            format!("BORG_HOSTNAME={}", self.hostname),
            format!("BORG_USERNAME={}", self.username),
        ];
        if let Some(path) = &self.key_file {
            let target = secret_path("borg_key");
            env.push(format!("BORG_KEY_FILE={}", target.display()));
            mounts.push(read_only_bind(path, target));
        }
        HelperSpec {
            image: image.to_string(),
            args: command.to_args(),
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
