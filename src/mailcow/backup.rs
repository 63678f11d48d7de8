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

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::docker::exec::ExecStream;
use crate::docker::helper::{HelperMount, HelperSpec, StdoutTo};
use crate::docker::{DockerError, Engine};
use crate::error::ErrorKind;

use super::access::{HELPER_ROOT, HelperAccess, HelperError, READ_ANY_FILE, clear_stale_helpers};
use super::components::{CONFIG_PATHS, Component};
use super::conf::MailcowConf;
use super::discover::{DiscoverError, Found, discover};
use super::frames;
use super::helper_command::{BackupCommand, HelperCommand, RetentionCommand};
use super::mysql::{self, DumpError};
use super::origin::Origin;
use super::redis::{self, RedisError};
use super::schedule::CheckSchedule;

/// How long an interrupted helper gets to roll back before it is killed.
pub const ROLLBACK_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("mysql: {0}")]
    Dump(#[from] DumpError),
    #[error("{0}: stopped before the helper started; nothing was written")]
    Stopped(&'static str),
}

impl BackupError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackupError::Stopped(_) => ErrorKind::Interrupted,
            BackupError::Docker(_)
            | BackupError::Helper(_)
            | BackupError::Discover(_)
            | BackupError::Redis(_)
            | BackupError::Dump(_) => ErrorKind::Environment,
        }
    }
}

/// Everything a run needs, settled by the CLI from the config file, environment and flags.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub mailcow_dir: PathBuf,
    pub components: Vec<Component>,
    pub access: HelperAccess,
    /// The archive name, placeholders already expanded.
    pub archive: String,
    pub compression: String,
    /// Patterns on archive paths (`vmail/example.org/...`), borg's syntax.
    pub excludes: Vec<String>,
    pub checkpoint_interval: u64,
    /// kiB/s at most sent to the repository; 0: no limit.
    pub upload_ratelimit: u64,
    /// How often the CLI tries the backup again when its connection failed or dropped (the
    /// helper exits with `EXIT_CONNECTION_LOST`), and how long it waits before each try.
    pub retries: u32,
    pub retry_wait: Duration,
    pub output: OutputOptions,
    /// What to prune and compact after the archive (`prune_glob` `None`: nothing).
    pub retention: RetentionCommand,
    /// The checks and drill to run after a good archive when due (the CLI runs them, through
    /// [`super::scheduled`]).
    pub check: Option<CheckSchedule>,
}

/// What the helper prints.
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Print statistics at the end.
    #[arg(long)]
    pub stats: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// List each file with its status letter.
    #[arg(long)]
    pub list: bool,
    /// Show a progress line on stderr.
    #[arg(long)]
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

/// The helper's mounts and command for `options`.
pub fn helper_spec(
    options: &BackupOptions,
    conf: &MailcowConf,
    found: &Found,
    image: &str,
) -> HelperSpec {
    let mut mounts = Vec::new();
    for (&component, volume) in &found.volumes {
        mounts.push(HelperMount::Volume {
            name: volume.clone(),
            target: format!("{HELPER_ROOT}/{}", component.archive_dir()),
            read_only: true,
        });
    }
    let mut config_found = false;
    if options.components.contains(&Component::Config) {
        for relative in CONFIG_PATHS {
            let source = options.mailcow_dir.join(relative);
            if source.exists() {
                mounts.push(HelperMount::Bind {
                    source: source.display().to_string(),
                    target: format!(
                        "{HELPER_ROOT}/{}/{relative}",
                        Component::Config.archive_dir()
                    ),
                    read_only: true,
                });
                config_found = true;
            }
        }
    }
    let has = |component| options.components.contains(&component);
    let paths = options
        .components
        .iter()
        .filter_map(|component| match component {
            Component::Mysql => Some("-".to_string()),
            Component::Config if !config_found => None,
            _ => Some(component.archive_dir().into()),
        })
        .collect();
    let command = BackupCommand {
        require_crypt_keys: has(Component::Vmail).then(|| Component::Crypt.archive_dir().into()),
        comment: Origin::here(conf, &options.components).comment(),
        compression: options.compression.clone(),
        checkpoint_interval: options.checkpoint_interval,
        upload_ratelimit: options.upload_ratelimit,
        excludes: options.excludes.clone(),
        output: options.output,
        retention: options.retention.clone(),
        dump_name: has(Component::Mysql)
            .then(|| format!("{}/{}.sql", Component::Mysql.archive_dir(), conf.db_name)),
        location: options.access.archive(&options.archive),
        paths,
        access: options.access.in_helper(),
    };
    let mut spec = options.access.helper_spec(
        image,
        &conf.project,
        &HelperCommand::Backup(Box::new(command)),
    );
    spec.capabilities = READ_ANY_FILE.map(String::from).to_vec();
    spec.mounts.extend(mounts);
    spec
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
    let image = async { Ok::<_, BackupError>(options.access.image(engine).await?) };
    let stale = async { Ok::<_, BackupError>(clear_stale_helpers(engine, &conf.project).await?) };
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
    let ((helper_image, image_made), _, _, dump_tool) =
        tokio::try_join!(image, stale, saved, tool)?;
    if let Some(signal) = *stop.borrow() {
        return Err(BackupError::Stopped(signal));
    }
    options.access.ensure_state_dir()?;
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

pub async fn wait_for_stop(
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
