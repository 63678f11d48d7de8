//! The options every repository command shares, and how they (with borg's environment
//! variables) become the typed [`AccessOptions`] of the operations layer. All reading of the
//! environment for repository access happens here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::config::{self, ConfigFile};
use super::settings;
use crate::format::manifest::Operation;
use crate::mailcow::helper_command::RepositoryAccess;
use crate::notify::NotifyConfig;
use crate::ops::open::{AccessOptions, OpenRepository, open};
use crate::ops::passphrase::PassphraseSources;
use crate::ops::security::SecurityConsent;
use crate::repo::location::{Location, LocationError};
use crate::repo::ssh::SshOptions;
use crate::repo::transport::ServerLine;

#[derive(Args, Clone, Debug)]
pub struct AccessArgs {
    /// The mailcow backup's config file: its repository (when none is given here or in
    /// BORG_REPO), passphrase file, SSH key, known_hosts and state dir are used.
    #[arg(long, env = "MAILCOW_BORG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the repository lock [default: 1].
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
    /// Give the repository server up when it stays silent this long while an answer is
    /// awaited (a stalled server must not hang a run) [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub server_timeout: Option<u64>,
    /// borg on the repository host (for local repositories: the borg to run) [default: borg].
    #[arg(long, env = "BORG_REMOTE_PATH", value_name = "PATH")]
    pub remote_path: Option<String>,
    /// Read the repository passphrase from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// SSH private key to log in with (default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa).
    #[arg(long, env = "MAILCOW_BORG_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// File holding the passphrase of the SSH key (or MAILCOW_BORG_SSH_KEY_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// known_hosts file to verify the server's host key with (default: ~/.ssh/known_hosts).
    #[arg(long, env = "MAILCOW_BORG_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record an unknown host key (never a changed one), like ssh's
    /// StrictHostKeyChecking=accept-new.
    #[arg(long)]
    pub accept_new_host_key: bool,
    /// Also show the server's informational messages.
    #[arg(short = 'v', long = "info", visible_alias = "verbose")]
    pub info: bool,
}

/// `--remote-path`'s default: the borg on the `PATH`.
const DEFAULT_REMOTE_PATH: &str = "borg";

/// `--server-timeout`'s default: five minutes of silence. borg serve answers every request at
/// once; only a commit of a very large repository, or an `open` that must rebuild a lost index,
/// takes longer (and `open` gets `--lock-wait` on top).
pub const DEFAULT_SERVER_TIMEOUT: u64 = 300;

/// `--lock-wait`'s default, as borg's.
pub const DEFAULT_LOCK_WAIT: u64 = 1;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_path(name: &str) -> Option<PathBuf> {
    env(name).map(PathBuf::from)
}

fn is_yes(name: &str) -> bool {
    matches!(
        env(name).as_deref(),
        Some("yes" | "Yes" | "YES" | "y" | "Y" | "1")
    )
}

/// The login name: `$USER`/`$LOGNAME`, else the passwd entry of our uid.
fn user_name() -> String {
    if let Some(user) = env("USER").or_else(|| env("LOGNAME")) {
        return user;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&uid.to_string().as_str())).then(|| fields[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

/// Our cache base: `MAILCOW_BORG_CACHE_DIR`, else beside borg's, under `BORG_BASE_DIR`,
/// `XDG_CACHE_HOME` or home. (`create --cache-dir` overrides it for `create`.)
pub fn cache_base() -> PathBuf {
    borg_style_dir(
        "MAILCOW_BORG_CACHE_DIR",
        ".cache",
        "XDG_CACHE_HOME",
        "mailcow-borg",
    )
}

/// The cache's directory of key salts by location (see `ops::unlock_ahead`).
pub const UNLOCK_MEMO: &str = "unlock";

/// borg's config dir: `BORG_CONFIG_DIR`, else under `BORG_BASE_DIR`, `XDG_CONFIG_HOME` or home.
fn borg_config_dir() -> PathBuf {
    borg_style_dir("BORG_CONFIG_DIR", ".config", "XDG_CONFIG_HOME", "borg")
}

/// borg's rule for where a directory of its kind is: the variable `own` if set, else
/// `$BORG_BASE_DIR/<dot>/<leaf>`, else `$<xdg>/<leaf>`, else `~/<dot>/<leaf>`.
fn borg_style_dir(own: &str, dot: &str, xdg: &str, leaf: &str) -> PathBuf {
    if let Some(dir) = env_path(own) {
        return dir;
    }
    match env_path("BORG_BASE_DIR") {
        Some(base) => base.join(dot).join(leaf),
        None => env_path(xdg).unwrap_or_else(|| home().join(dot)).join(leaf),
    }
}

impl AccessArgs {
    pub fn to_options(&self) -> anyhow::Result<AccessOptions> {
        let home = home();
        let mut ssh = SshOptions::defaults(&home, &user_name());
        if let Some(key) = &self.ssh_key {
            ssh.identities = vec![key.clone()];
        }
        if let Some(file) = &self.known_hosts {
            ssh.known_hosts = file.clone();
        }
        ssh.accept_new_host_key = self.accept_new_host_key;
        let remote_path = self
            .remote_path
            .clone()
            .unwrap_or_else(|| DEFAULT_REMOTE_PATH.into());
        ssh.remote_path = remote_path.clone();
        if self.info {
            ssh.serve_args.push("--info".into());
        }
        ssh.key_passphrase = match &self.ssh_key_passphrase_file {
            Some(file) => Some(read_first_line(file)?),
            None => env("MAILCOW_BORG_SSH_KEY_PASSPHRASE"),
        };
        let config = borg_config_dir();
        let show_info = self.info;
        Ok(AccessOptions {
            ssh,
            local_borg: PathBuf::from(remote_path),
            lock_wait: Duration::from_secs(self.lock_wait.unwrap_or(DEFAULT_LOCK_WAIT)),
            bypass_lock: false,
            server_timeout: Duration::from_secs(
                self.server_timeout.unwrap_or(DEFAULT_SERVER_TIMEOUT),
            ),
            // `create` and the helper's backup set it; other commands upload next to nothing.
            upload_ratelimit: None,
            passphrase: PassphraseSources {
                file: self.passphrase_file.clone(),
                env: std::env::var("BORG_PASSPHRASE").ok(),
                command: env("BORG_PASSCOMMAND"),
                fd: env("BORG_PASSPHRASE_FD"),
            },
            key_file: env_path("BORG_KEY_FILE"),
            keys_dir: env_path("BORG_KEYS_DIR").unwrap_or_else(|| config.join("keys")),
            security_dir: env_path("BORG_SECURITY_DIR").unwrap_or_else(|| config.join("security")),
            unlock_memo: Some(cache_base().join(UNLOCK_MEMO)),
            consent: SecurityConsent {
                relocated_ok: is_yes("BORG_RELOCATED_REPO_ACCESS_IS_OK"),
                unknown_unencrypted_ok: is_yes("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"),
            },
            server_log: Arc::new(move |line: &ServerLine| print_server_line(line, show_info)),
        })
    }
}

/// The access a helper is given ([`RepositoryAccess`], the host ↔ helper contract's shared
/// part) as this command line's options: what the host does not send is off. The helper takes
/// its access this way, and so does `config check`, which opens the repository as the helper
/// will.
impl From<&RepositoryAccess> for AccessArgs {
    fn from(access: &RepositoryAccess) -> AccessArgs {
        let RepositoryAccess {
            lock_wait,
            server_timeout,
            remote_path,
            passphrase_file,
            ssh_key,
            ssh_key_passphrase_file,
            known_hosts,
        } = access.clone();
        AccessArgs {
            config: None,
            lock_wait: Some(lock_wait),
            server_timeout: Some(server_timeout),
            remote_path,
            passphrase_file,
            ssh_key,
            ssh_key_passphrase_file,
            known_hosts,
            accept_new_host_key: false,
            info: false,
        }
    }
}

/// Shows the server's messages as borg does: `Remote: ...` on stderr, warnings and up by default.
fn print_server_line(line: &ServerLine, show_info: bool) {
    let shown = match line.level.as_deref() {
        Some("DEBUG") => false,
        Some("INFO") => show_info,
        _ => true,
    };
    if shown {
        say!("Remote: {}", line.message);
    }
}

fn read_first_line(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// `BORG_NEW_PASSPHRASE`: the passphrase for a new key (`init`), before the ordinary sources.
/// Set but empty is an empty passphrase, as for `BORG_PASSPHRASE`.
pub fn new_passphrase_env() -> Option<String> {
    std::env::var("BORG_NEW_PASSPHRASE").ok()
}

impl AccessArgs {
    /// The repository and how to reach it, for every repository command: `location` as given
    /// (with `BORG_REPO`), these options, and borg's environment — and the mailcow config file
    /// when `--config` names one or when no repository is given otherwise (the default file,
    /// if it exists). The config's settings come after flags and the environment, so an admin
    /// runs `init`, `key export`, `prune`, … with the settings `backup` uses, borg's security
    /// and keys dirs included (under the state dir, where the helper keeps them).
    pub fn resolve(&self, location: Option<&str>) -> anyhow::Result<(Location, AccessOptions)> {
        self.resolve_with_config(location)
            .map(|(location, options, _)| (location, options))
    }

    /// [`Self::resolve`], and the mailcow config's `[notify]` when the config file was used:
    /// `check` and `prune` run with the config tell of their runs as `backup` does.
    pub fn resolve_with_notify(
        &self,
        location: Option<&str>,
    ) -> anyhow::Result<(Location, AccessOptions, Option<NotifyConfig>)> {
        self.resolve_with_config(location)
            .map(|(location, options, file)| (location, options, file.and_then(|f| f.notify)))
    }

    fn resolve_with_config(
        &self,
        location: Option<&str>,
    ) -> anyhow::Result<(Location, AccessOptions, Option<ConfigFile>)> {
        let borg_repo = env("BORG_REPO");
        let omitted = location.is_none_or(|l| l.starts_with("::"));
        let (path, explicit) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(config::DEFAULT_CONFIG), false),
        };
        if !explicit && (borg_repo.is_some() || !omitted || !path.exists()) {
            return Ok((parse_location(location)?, self.to_options()?, None));
        }
        let mut file = ConfigFile::load(&path, explicit)?;
        // The config's repository stands where BORG_REPO would (`::ARCHIVE` works with it).
        let location = Location::parse(
            location.unwrap_or(""),
            borg_repo.as_deref().or(file.repository.as_deref()),
        )?;
        let merged = AccessArgs {
            lock_wait: self.lock_wait.or(file.lock_wait),
            server_timeout: self.server_timeout.or(file.server_timeout),
            remote_path: self.remote_path.clone().or(file.remote_path.take()),
            passphrase_file: self.passphrase_file.clone().or(file.passphrase_file.take()),
            ssh_key: self.ssh_key.clone().or(file.ssh_key.take()),
            ssh_key_passphrase_file: self
                .ssh_key_passphrase_file
                .clone()
                .or(file.ssh_key_passphrase_file.take()),
            known_hosts: self.known_hosts.clone().or(file.known_hosts.take()),
            ..self.clone()
        };
        let mut options = merged.to_options()?;
        let state_dir =
            settings::state_dir(env_path("MAILCOW_BORG_STATE_DIR"), file.state_dir.take())?;
        in_state_dir(&mut options, &state_dir);
        if options.key_file.is_none() {
            options.key_file = file.key_file.take();
        }
        Ok((location, options, Some(file)))
    }
}

/// Points `options` at borg's security and keys dirs and our cache in a mailcow state dir,
/// where the helper (whose `BORG_BASE_DIR` the state dir is) keeps them: what the host does
/// with a repository of the config agrees with what backups do.
pub fn in_state_dir(options: &mut AccessOptions, state_dir: &Path) {
    let borg_dir = state_dir.join(".config/borg");
    options.security_dir = borg_dir.join("security");
    options.keys_dir = borg_dir.join("keys");
    options.unlock_memo = Some(state_dir.join(".cache/mailcow-borg").join(UNLOCK_MEMO));
}

/// Parses a location argument, with `BORG_REPO` for the omitted parts.
pub fn parse_location(text: Option<&str>) -> Result<Location, LocationError> {
    Location::parse(text.unwrap_or(""), env("BORG_REPO").as_deref())
}

/// A runtime for one command: all cores decrypt and decompress.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Opens the repository at `location` once, runs `work` with it and closes it whatever `work`
/// returned: every command's open → work → close. An error of `work` wins over one of closing.
pub async fn with_repository<T>(
    location: &Location,
    options: &AccessOptions,
    operation: Operation,
    work: impl AsyncFnOnce(&mut OpenRepository) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut repo = open(location, options, operation).await?;
    let result = work(&mut repo).await;
    let closed = repo.close().await;
    let value = result?;
    closed?;
    Ok(value)
}
