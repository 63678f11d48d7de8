//! One mailcow backup run, from the host: find mailcow, freshen what lives in memory (Redis
//! `SAVE`), make or reuse the helper image, start the helper with the volumes read-only, feed it
//! the database dump, relay its output, and hand back its exit code — removing the helper in
//! every case, also when the run is interrupted.
//!
//! The helper runs `mailcow-borg agent backup …`: the ordinary `create` over the mounted
//! volumes, with `-` for the framed dump on its stdin (see [`super::frames`]). Its command line
//! holds nothing secret; the passphrase, SSH key and known_hosts are read-only single-file
//! mounts under `/run/secrets`, and the persistent state directory (files cache, chunk index,
//! borg's security dir with the nonce counter) is mounted at `/state`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::docker::exec::ExecStream;
use crate::docker::helper::{HelperMount, HelperSpec, StdoutTo};
use crate::docker::image::ensure_helper_image;
use crate::docker::{DockerError, Engine};

use super::components::{CONFIG_PATHS, Component};
use super::conf::MailcowConf;
use super::discover::{DiscoverError, Found, discover};
use super::frames;
use super::mysql::{self, DumpError};
use super::redis::{self, RedisError};

/// Where the helper sees things.
pub const HELPER_ROOT: &str = "/mailcow";
pub const HELPER_STATE: &str = "/state";
const HELPER_SECRETS: &str = "/run/secrets";

/// The label that says which mailcow a helper belongs to.
pub const PROJECT_LABEL: &str = "org.mailcow-borg.project";

/// How long an interrupted helper gets to roll back before it is killed.
const ROLLBACK_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("mysql: {0}")]
    Dump(#[from] DumpError),
    #[error(
        "a helper container of an earlier run is still backing up this mailcow ({0}); wait for it to finish, or stop it: docker rm -f {0}"
    )]
    HelperRunning(String),
    #[error("cannot read our own executable to make the helper image: {0}")]
    OwnExecutable(std::io::Error),
    #[error("{0}: stopped before the helper started; nothing was written")]
    Stopped(&'static str),
    #[error("{what} {path}: {detail}")]
    File {
        what: &'static str,
        path: String,
        detail: String,
    },
}

/// Everything a run needs, settled by the CLI from the config file, environment and flags.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub mailcow_dir: PathBuf,
    pub components: Vec<Component>,
    /// The repository, as borg writes it.
    pub repository: String,
    /// The archive name, placeholders already expanded.
    pub archive: String,
    pub compression: String,
    /// Patterns on archive paths (`vmail/example.org/...`), borg's syntax.
    pub excludes: Vec<String>,
    pub passphrase_file: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub ssh_key_passphrase_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// `BORG_KEY_FILE` for keyfile repositories.
    pub key_file: Option<PathBuf>,
    pub remote_path: Option<String>,
    pub lock_wait: u64,
    pub checkpoint_interval: u64,
    /// Persistent host directory: caches and borg's security dir.
    pub state_dir: PathBuf,
    pub helper_image: Option<String>,
    pub network: String,
    /// For the archive's metadata, as the host knows them.
    pub hostname: String,
    pub username: String,
    pub output: OutputOptions,
}

/// What the helper prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutputOptions {
    pub stats: bool,
    pub json: bool,
    pub list: bool,
    pub progress: bool,
}

/// How the run ended.
pub struct BackupReport {
    /// The helper's exit code (borg's: 0, 1 warning, 2 error; 143 terminated).
    pub exit_code: i64,
    /// The helper's stdout, when `--json` asked for it to be captured.
    pub json: Option<Vec<u8>>,
    pub found: Found,
    pub helper_image: String,
    /// Whether the helper image was made by this run.
    pub image_made: bool,
    /// The signal that stopped the run, if one did.
    pub interrupted: Option<&'static str>,
}

/// The helper's mounts and arguments for `options`.
pub fn helper_spec(
    options: &BackupOptions,
    conf: &MailcowConf,
    found: &Found,
    image: &str,
) -> HelperSpec {
    let mut mounts = Vec::new();
    let mut paths = Vec::new();
    for (&component, volume) in &found.volumes {
        mounts.push(HelperMount::Volume {
            name: volume.clone(),
            target: format!("{HELPER_ROOT}/{}", component.archive_dir()),
            read_only: true,
        });
    }
    let bind = |source: &Path, target: String| HelperMount::Bind {
        source: source.display().to_string(),
        target,
        read_only: true,
    };
    let mut config_found = false;
    if options.components.contains(&Component::Config) {
        for relative in CONFIG_PATHS {
            let source = options.mailcow_dir.join(relative);
            if source.exists() {
                let target = format!(
                    "{HELPER_ROOT}/{}/{relative}",
                    Component::Config.archive_dir()
                );
                mounts.push(bind(&source, target));
                config_found = true;
            }
        }
    }
    mounts.push(HelperMount::Bind {
        source: options.state_dir.display().to_string(),
        target: HELPER_STATE.into(),
        read_only: false,
    });
    let mut args: Vec<String> = vec!["agent".into(), "backup".into()];
    let mut secret = |flag: &str, file: &Option<PathBuf>, name: &str| {
        if let Some(path) = file {
            let target = format!("{HELPER_SECRETS}/{name}");
            mounts.push(bind(path, target.clone()));
            args.extend([flag.to_string(), target]);
        }
    };
    secret("--passphrase-file", &options.passphrase_file, "passphrase");
    secret("--ssh-key", &options.ssh_key, "ssh_key");
    secret(
        "--ssh-key-passphrase-file",
        &options.ssh_key_passphrase_file,
        "ssh_key_passphrase",
    );
    secret("--known-hosts", &options.known_hosts, "known_hosts");
    let mut env = vec![
        format!("BORG_BASE_DIR={HELPER_STATE}"),
        format!("BORG_HOSTNAME={}", options.hostname),
        format!("BORG_USERNAME={}", options.username),
    ];
    if let Some(path) = &options.key_file {
        let target = format!("{HELPER_SECRETS}/borg_key");
        mounts.push(bind(path, target.clone()));
        env.push(format!("BORG_KEY_FILE={target}"));
    }
    if options.components.contains(&Component::Vmail) {
        args.extend([
            "--require-crypt-keys".into(),
            Component::Crypt.archive_dir().into(),
        ]);
    }
    args.extend([
        "--comment".into(),
        archive_comment(conf, &options.components),
        "--compression".into(),
        options.compression.clone(),
        "--lock-wait".into(),
        options.lock_wait.to_string(),
        "--checkpoint-interval".into(),
        options.checkpoint_interval.to_string(),
    ]);
    if let Some(remote) = &options.remote_path {
        args.extend(["--remote-path".into(), remote.clone()]);
    }
    for pattern in &options.excludes {
        args.extend(["--exclude".into(), pattern.clone()]);
    }
    let output = options.output;
    for (on, flag) in [
        (output.stats, "--stats"),
        (output.json, "--json"),
        (output.list, "--list"),
        (output.progress, "--progress"),
    ] {
        if on {
            args.push(flag.into());
        }
    }
    if options.components.contains(&Component::Mysql) {
        args.extend([
            "--stdin-name".into(),
            format!("{}/{}.sql", Component::Mysql.archive_dir(), conf.db_name),
            "--stdin-mode".into(),
            "0600".into(),
        ]);
    }
    args.push(format!("{}::{}", options.repository, options.archive));
    for component in &options.components {
        match component {
            Component::Mysql => paths.push("-".to_string()),
            Component::Config if !config_found => {}
            _ => paths.push(component.archive_dir().into()),
        }
    }
    args.extend(paths);
    HelperSpec {
        image: image.to_string(),
        args,
        working_dir: HELPER_ROOT.into(),
        mounts,
        network: options.network.clone(),
        // Root reading files of other owners (mail is uid 5000, mode 0700 and 0600).
        capabilities: vec!["DAC_READ_SEARCH".into()],
        env,
        labels: vec![(PROJECT_LABEL.into(), conf.project.clone())],
    }
}

/// The archive's comment: what a restore must know about where the archive came from — the
/// CPU architecture (rspamd's data is not portable across it), `MAILDIR_SUB` (mail is invisible
/// under another one) and the database name — as `key=value` words after a fixed prefix.
pub fn archive_comment(conf: &MailcowConf, components: &[Component]) -> String {
    let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
    format!(
        "mailcow-borg backup: project={} arch={} maildir_sub={} db={} components={}",
        conf.project,
        std::env::consts::ARCH,
        conf.maildir_sub,
        conf.db_name,
        names.join(",")
    )
}

/// Runs one backup. `stop` yields the name of a signal (`SIGINT`, `SIGTERM`) when the run must
/// end early: the helper gets it, rolls back, and is removed.
pub async fn backup(
    engine: &Engine,
    options: &BackupOptions,
    conf: &MailcowConf,
    mut stop: tokio::sync::watch::Receiver<Option<&'static str>>,
) -> Result<BackupReport, BackupError> {
    let found = discover(engine, conf, &options.components).await?;
    // Independent steps, each a round trip or two to the engine: taken together.
    let image = async {
        match &options.helper_image {
            Some(image) => Ok((image.clone(), false)),
            None => {
                let executable =
                    std::fs::read("/proc/self/exe").map_err(BackupError::OwnExecutable)?;
                Ok(ensure_helper_image(engine, &executable, env!("CARGO_PKG_VERSION")).await?)
            }
        }
    };
    let stale = async {
        let label = format!("{PROJECT_LABEL}={}", conf.project);
        match engine.remove_stale_helpers(&label).await?.first() {
            // Its host process was killed (the host lock is free), but it works on.
            Some(id) => Err(BackupError::HelperRunning(
                id[..12.min(id.len())].to_string(),
            )),
            None => Ok(()),
        }
    };
    let saved = async {
        match &found.redis {
            Some(redis) => Ok(redis::save(engine, redis, &conf.redis_pass).await?),
            None => Ok::<_, BackupError>(()),
        }
    };
    let tool = async {
        match &found.mysql {
            Some(mysql) => Ok(Some(mysql::dump_tool(engine, mysql).await?)),
            None => Ok::<_, BackupError>(None),
        }
    };
    let (image, _, _, dump_tool) = tokio::try_join!(image, stale, saved, tool)?;
    if let Some(signal) = *stop.borrow() {
        return Err(BackupError::Stopped(signal));
    }
    let (helper_image, image_made): (String, bool) = image;
    std::fs::create_dir_all(&options.state_dir).map_err(|e| BackupError::File {
        what: "cannot create the state directory",
        path: options.state_dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let spec = helper_spec(options, conf, &found, &helper_image);
    let mut helper = engine.start_helper(&spec).await?;
    let stdout = if options.output.json {
        StdoutTo::Capture
    } else {
        StdoutTo::Relay
    };
    let relay = helper.relay_output(stdout);
    let stdin = helper.take_stdin().expect("a new helper has its stdin");
    let feed = async {
        match (&found.mysql, dump_tool) {
            (Some(mysql), Some(tool)) => {
                let dump = mysql::start_dump(engine, mysql, tool, conf).await;
                feed_dump(dump, stdin, tool).await;
            }
            _ => close(stdin).await,
        }
    };
    let run = async {
        feed.await;
        helper.wait().await
    };
    let (exit_code, interrupted) = tokio::select! {
        code = run => (code, None),
        signal = wait_for_stop(&mut stop) => {
            let _ = helper.signal(signal).await;
            let code = helper.wait_or_kill(ROLLBACK_GRACE).await;
            (Ok(code.unwrap_or(137)), Some(signal))
        }
    };
    let removed = helper.remove().await;
    let captured = relay.await.ok().and_then(Result::ok);
    let exit_code = exit_code?;
    removed?;
    Ok(BackupReport {
        exit_code,
        json: options.output.json.then(|| captured.unwrap_or_default()),
        found,
        helper_image,
        image_made,
        interrupted,
    })
}

async fn wait_for_stop(
    stop: &mut tokio::sync::watch::Receiver<Option<&'static str>>,
) -> &'static str {
    loop {
        if let Some(signal) = *stop.borrow_and_update() {
            return signal;
        }
        if stop.changed().await.is_err() {
            // No one can stop us any more.
            std::future::pending::<()>().await;
        }
    }
}

type Stdin = Pin<Box<dyn AsyncWrite + Send>>;

async fn close(mut stdin: Stdin) {
    let _ = stdin.shutdown().await;
}

/// Streams the dump into the helper in frames, ending with the verdict: complete only when the
/// dump tool exited 0. If the helper stops reading (it failed), the dump is abandoned: dropping
/// its stream closes its output, and the tool ends on the broken pipe.
async fn feed_dump(dump: Result<ExecStream, DumpError>, mut stdin: Stdin, tool: &str) {
    let verdict = async {
        let mut dump = match dump {
            Ok(dump) => dump,
            Err(e) => return Ok(frames::failed_frame(&format!("mysql: {e}"))),
        };
        loop {
            match dump.next_stdout().await {
                Ok(Some(piece)) => {
                    for part in piece.chunks(frames::MAX_FRAME) {
                        stdin.write_all(&frames::data_header(part.len())).await?;
                        stdin.write_all(part).await?;
                    }
                }
                Ok(None) => break,
                Err(e) => return Ok(frames::failed_frame(&format!("mysql: {e}"))),
            }
        }
        Ok::<_, std::io::Error>(match dump.finish().await {
            Ok(finished) if finished.exit_code == 0 => frames::end_frame().to_vec(),
            Ok(finished) => frames::failed_frame(&format!(
                "mysql: {tool} exited with {}: {}",
                finished.exit_code,
                finished.last_error_line()
            )),
            Err(e) => frames::failed_frame(&format!("mysql: {e}")),
        })
    };
    if let Ok(frame) = verdict.await {
        let _ = stdin.write_all(&frame).await;
    }
    close(stdin).await;
}
