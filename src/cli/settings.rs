//! The settings every mailcow command shares (`backup`, `restore`, `config check`): where the
//! config file is, the repository and how to reach it, the mailcow directory, the state
//! directory and the helper — from the config file, overridden by the environment and flags.

use std::path::PathBuf;

use clap::Args;

use super::config::{self, ConfigFile};
use crate::docker::helper::HelperLimits;
use crate::mailcow::access::HelperAccess;
use crate::mailcow::helper_command::RepositoryAccess;
use crate::ops::placeholders::PlaceholderValues;

/// Where the mailcow commands get their settings: the config file, overridden by the
/// environment and these flags.
#[derive(Args)]
pub struct SettingsArgs {
    /// The config file.
    #[arg(long, env = "MAILCOW_BORG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The repository (instead of the config's `repository`).
    #[arg(long, env = "BORG_REPO", value_name = "REPOSITORY")]
    repo: Option<String>,
    /// The mailcow directory, where mailcow.conf is.
    #[arg(long, env = "MAILCOW_BORG_MAILCOW_DIR", value_name = "DIR")]
    mailcow_dir: Option<PathBuf>,
    /// The file holding the repository's passphrase.
    #[arg(long, env = "MAILCOW_BORG_PASSPHRASE_FILE", value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// SSH private key for the repository host.
    #[arg(long, env = "MAILCOW_BORG_SSH_KEY", value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// File holding the SSH key's passphrase.
    #[arg(long, value_name = "FILE")]
    ssh_key_passphrase_file: Option<PathBuf>,
    /// known_hosts file that holds the repository host's key.
    #[arg(long, env = "MAILCOW_BORG_KNOWN_HOSTS", value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// borg on the repository host.
    #[arg(long, env = "BORG_REMOTE_PATH", value_name = "PATH")]
    remote_path: Option<String>,
    /// Seconds to wait for another backup or restore on this host, and for the repository's
    /// lock.
    #[arg(long, value_name = "SECONDS")]
    lock_wait: Option<u64>,
    /// Seconds the repository server may stay silent while an answer is awaited.
    #[arg(long, value_name = "SECONDS")]
    server_timeout: Option<u64>,
    /// Where caches and borg's security dir persist.
    #[arg(long, env = "MAILCOW_BORG_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Use this image for the helper instead of making one from this executable.
    #[arg(long, value_name = "IMAGE")]
    helper_image: Option<String>,
    /// The helper's network: host (default), none, or a network's name.
    #[arg(long, value_name = "NETWORK")]
    helper_network: Option<String>,
}

/// A file named in the config or a flag, made absolute (the engine binds it into the helper)
/// and checked to exist.
fn existing_file(key: &str, path: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    path.map(|p| {
        std::fs::canonicalize(&p).map_err(|e| anyhow::anyhow!("{key} {}: {e}", p.display()))
    })
    .transpose()
}

/// The shared settings, resolved; `file` holds the rest of the config file for the command.
pub struct Settings {
    pub file: ConfigFile,
    pub mailcow_dir: PathBuf,
    pub access: HelperAccess,
}

/// The state dir: the one given (flag or environment), else the config's, else the default;
/// absolute.
pub fn state_dir(given: Option<PathBuf>, in_file: Option<PathBuf>) -> std::io::Result<PathBuf> {
    std::path::absolute(
        given
            .or(in_file)
            .unwrap_or_else(|| config::DEFAULT_STATE_DIR.into()),
    )
}

pub fn settings(args: &SettingsArgs) -> anyhow::Result<Settings> {
    let (config_path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    let mut file = ConfigFile::load(&config_path, explicit)?;
    let repository = args
        .repo
        .clone()
        .or(file.repository.take())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no repository: set repository in {} (or --repo, BORG_REPO)",
                config_path.display()
            )
        })?;
    let values = PlaceholderValues::here(crate::ops::system::now_micros());
    let access = HelperAccess {
        repository,
        repository_access: RepositoryAccess {
            passphrase_file: existing_file(
                "passphrase_file",
                args.passphrase_file.clone().or(file.passphrase_file.take()),
            )?,
            ssh_key: existing_file("ssh_key", args.ssh_key.clone().or(file.ssh_key.take()))?,
            ssh_key_passphrase_file: existing_file(
                "ssh_key_passphrase_file",
                args.ssh_key_passphrase_file
                    .clone()
                    .or(file.ssh_key_passphrase_file.take()),
            )?,
            known_hosts: existing_file(
                "known_hosts",
                args.known_hosts.clone().or(file.known_hosts.take()),
            )?,
            remote_path: args.remote_path.clone().or(file.remote_path.take()),
            lock_wait: args
                .lock_wait
                .or(file.lock_wait)
                .unwrap_or(super::access::DEFAULT_LOCK_WAIT),
            server_timeout: args
                .server_timeout
                .or(file.server_timeout)
                .unwrap_or(super::access::DEFAULT_SERVER_TIMEOUT),
        },
        key_file: existing_file("key_file", file.key_file.take())?,
        state_dir: state_dir(args.state_dir.clone(), file.state_dir.take())?,
        helper_image: args.helper_image.clone().or(file.helper_image.take()),
        network: args
            .helper_network
            .clone()
            .or(file.helper_network.take())
            .unwrap_or_else(|| "host".into()),
        limits: {
            let defaults = HelperLimits::default();
            HelperLimits {
                memory_mib: file.helper_memory_mib.unwrap_or(defaults.memory_mib),
                pids: file.helper_pids.unwrap_or(defaults.pids),
            }
        },
        hostname: values.hostname,
        username: values.user,
    };
    let mailcow_dir = std::path::absolute(
        args.mailcow_dir
            .clone()
            .or(file.mailcow_dir.take())
            .unwrap_or_else(|| config::DEFAULT_MAILCOW_DIR.into()),
    )?;
    Ok(Settings {
        file,
        mailcow_dir,
        access,
    })
}
