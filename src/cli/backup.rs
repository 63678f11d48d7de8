//! `mailcow-borg backup`: back up the whole mailcow on this host into one archive, through the
//! helper container. Made for cron: quiet on success unless asked (`--stats`, `--progress`,
//! `--json`), borg's exit codes, one run at a time.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use super::Outcome;
use super::access::runtime;
use super::config::{self, ConfigFile};
use super::create::{Interrupted, placeholder_values};
use crate::docker::Engine;
use crate::mailcow::backup::{BackupError, BackupOptions, OutputOptions, backup};
use crate::mailcow::conf::MailcowConf;
use crate::ops::placeholders::expand;

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
    /// Back up only this component (repeatable): vmail, crypt, vmail-index, redis, rspamd,
    /// postfix, mysql, sogo, config.
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Compression: lz4, zstd[,L], zlib[,L], auto,C[,L], none.
    #[arg(short = 'C', long, value_name = "SPEC")]
    compression: Option<String>,
    /// Exclude archive paths matching PATTERN (added to the config's `exclude`).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// The archive name; placeholders such as {hostname} and {now} are expanded.
    #[arg(long, value_name = "NAME")]
    archive_name: Option<String>,
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
    /// Seconds to wait for another backup on this host, and for the repository's lock.
    #[arg(long, value_name = "SECONDS")]
    lock_wait: Option<u64>,
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

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Print statistics at the end.
    #[arg(short = 's', long)]
    stats: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// List each file with its status letter.
    #[arg(long)]
    list: bool,
    /// Show a progress line on stderr.
    #[arg(long)]
    progress: bool,
}

/// A file named in the config or a flag, made absolute (the engine binds it into the helper)
/// and checked to exist.
fn existing_file(key: &str, path: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    path.map(|p| {
        std::fs::canonicalize(&p).map_err(|e| anyhow::anyhow!("{key} {}: {e}", p.display()))
    })
    .transpose()
}

/// The settings, resolved; `output` says what the helper prints.
pub(super) fn options(args: &SettingsArgs, output: OutputOptions) -> anyhow::Result<BackupOptions> {
    let (config_path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    let file = ConfigFile::load(&config_path, explicit)?;
    let repository = args.repo.clone().or(file.repository).ok_or_else(|| {
        anyhow::anyhow!(
            "no repository: set repository in {} (or --repo, BORG_REPO)",
            config_path.display()
        )
    })?;
    let names = if args.components.is_empty() {
        file.components.unwrap_or_default()
    } else {
        args.components.clone()
    };
    let components = config::components(&names).map_err(|e| anyhow::anyhow!(e))?;
    let mut excludes = file.exclude.unwrap_or_default();
    excludes.extend(args.excludes.iter().cloned());
    let values = placeholder_values(super::create::now_micros());
    let name_template = args
        .archive_name
        .clone()
        .or(file.archive_name)
        .unwrap_or_else(|| config::DEFAULT_ARCHIVE_NAME.into());
    Ok(BackupOptions {
        mailcow_dir: std::path::absolute(
            args.mailcow_dir
                .clone()
                .or(file.mailcow_dir)
                .unwrap_or_else(|| config::DEFAULT_MAILCOW_DIR.into()),
        )?,
        components,
        repository,
        archive: expand(&name_template, &values)?,
        compression: args
            .compression
            .clone()
            .or(file.compression)
            .unwrap_or_else(|| "lz4".into()),
        excludes,
        passphrase_file: existing_file(
            "passphrase_file",
            args.passphrase_file.clone().or(file.passphrase_file),
        )?,
        ssh_key: existing_file("ssh_key", args.ssh_key.clone().or(file.ssh_key))?,
        ssh_key_passphrase_file: existing_file(
            "ssh_key_passphrase_file",
            args.ssh_key_passphrase_file
                .clone()
                .or(file.ssh_key_passphrase_file),
        )?,
        known_hosts: existing_file("known_hosts", args.known_hosts.clone().or(file.known_hosts))?,
        key_file: existing_file("key_file", file.key_file)?,
        remote_path: args.remote_path.clone().or(file.remote_path),
        lock_wait: args.lock_wait.or(file.lock_wait).unwrap_or(1),
        checkpoint_interval: file.checkpoint_interval.unwrap_or(1800),
        state_dir: std::path::absolute(
            args.state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| config::DEFAULT_STATE_DIR.into()),
        )?,
        helper_image: args.helper_image.clone().or(file.helper_image),
        network: args
            .helper_network
            .clone()
            .or(file.helper_network)
            .unwrap_or_else(|| "host".into()),
        hostname: values.hostname.clone(),
        username: values.user.clone(),
        output,
    })
}

/// One backup at a time on this host: an exclusive `flock` on `<state dir>/lock`, held until
/// the process exits (so a killed run never leaves it behind).
fn host_lock(state_dir: &Path, wait: Duration) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the state directory {}: {e}",
            state_dir.display()
        )
    })?;
    let path = state_dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
    let started = Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            return Ok(file);
        }
        if started.elapsed() >= wait {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another mailcow-borg backup is running on this host (process {}, lock {}); waited {} s: try again later, or give --lock-wait",
                holder.trim(),
                path.display(),
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(args: BackupArgs) -> anyhow::Result<Outcome> {
    let output = OutputOptions {
        stats: args.stats,
        json: args.json,
        list: args.list,
        progress: args.progress,
    };
    let options = options(&args.settings, output)?;
    let _lock = host_lock(&options.state_dir, Duration::from_secs(options.lock_wait))?;
    let conf = MailcowConf::load(&options.mailcow_dir)?;
    runtime()?.block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(None);
        watch_signals(stop_tx)?;
        let engine = Engine::connect().await?;
        let exit_code_for = |signal: &str| {
            if signal == "SIGTERM" {
                super::EXIT_SIGTERM
            } else {
                super::EXIT_ERROR
            }
        };
        let report = match backup(&engine, &options, &conf, stop).await {
            Err(BackupError::Stopped(signal)) => {
                return Err(Interrupted(exit_code_for(signal)).into());
            }
            other => other?,
        };
        if let Some(signal) = report.interrupted {
            return Err(Interrupted(exit_code_for(signal)).into());
        }
        let outcome = match report.exit_code {
            0 => Outcome::Ok,
            1 => Outcome::Warning,
            code => anyhow::bail!(
                "the backup failed (the helper exited with {code}; its message is above); nothing was committed"
            ),
        };
        if let Some(captured) = &report.json {
            print_json(captured, &report, &conf)?;
        }
        Ok(outcome)
    })
}

/// SIGINT and SIGTERM are passed on to the helper (through `stop`), not obeyed at once.
fn watch_signals(stop: tokio::sync::watch::Sender<Option<&'static str>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let mut stream = signal(kind)?;
        let stop = stop.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                eprintln!(
                    "mailcow-borg: {name}: stopping the helper; it rolls back what this run wrote"
                );
                let _ = stop.send(Some(name));
            }
        });
    }
    Ok(())
}

/// The helper's `create --json` document, with what the host found added as `mailcow`.
fn print_json(
    captured: &[u8],
    report: &crate::mailcow::backup::BackupReport,
    conf: &MailcowConf,
) -> anyhow::Result<()> {
    let mut document: serde_json::Value = serde_json::from_slice(captured)
        .map_err(|e| anyhow::anyhow!("the helper's JSON summary is not JSON: {e}"))?;
    let volumes: serde_json::Map<String, serde_json::Value> = report
        .found
        .volumes
        .iter()
        .map(|(c, v)| (c.name().to_string(), v.clone().into()))
        .collect();
    document["mailcow"] = serde_json::json!({
        "project": conf.project,
        "volumes": volumes,
        "helper_image": report.helper_image,
        "helper_image_made": report.image_made,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    Ok(())
}
