//! `mailcow-borg backup`: back up the whole mailcow on this host into one archive, through the
//! helper container. Made for cron: quiet on success unless asked (`--stats`, `--progress`,
//! `--json`), borg's exit codes, one run at a time.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::Outcome;
use super::access::runtime;
use super::config;
use super::run_log::{Journal, RunLog};
use super::settings::{Settings, SettingsArgs, settings};
use super::signals::{self, Interrupted};
use crate::docker::Engine;
use crate::mailcow::access::HelperAccess;
use crate::mailcow::backup::{
    BackupError, BackupOptions, BackupReport, OutputOptions, backup, wait_for_stop,
};
use crate::mailcow::conf::MailcowConf;
use crate::mailcow::drill::{DrillError, DrillReport, Status};
use crate::mailcow::helper_command::{EXIT_ARCHIVE_SAFE, EXIT_CONNECTION_LOST, RetentionCommand};
use crate::mailcow::restore::RestoreOptions;
use crate::mailcow::schedule::CheckSchedule;
use crate::mailcow::scheduled::{Scheduled, ScheduledError, run_due, what_is_checked};
use crate::mailcow::stopped;
use crate::notify::NotifyConfig;
use crate::ops::placeholders::{PlaceholderValues, expand, name_glob};
use crate::ops::system::now_micros;

/// What a backup takes besides the shared settings.
#[derive(Args)]
pub struct BackupSettingsArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
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
    /// Send at most RATE kiB/s to the repository (0: no limit) [default: the config's
    /// upload_ratelimit, else 0].
    #[arg(long, value_name = "RATE")]
    upload_ratelimit: Option<u64>,
    /// Try the backup again up to N times when its connection to the repository fails or
    /// drops [default: the config's retries, else 0].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Seconds to wait before trying again [default: the config's retry_wait, else 60].
    #[arg(long, value_name = "SECONDS")]
    retry_wait: Option<u64>,
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    settings: BackupSettingsArgs,
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

/// `retries`' default: none. A scheduled backup runs again by itself, and an unreachable
/// repository host should not hold the host lock for minutes; a flaky link sets it.
pub const DEFAULT_RETRIES: u32 = 0;

/// `retry_wait`'s default: a minute, long enough for a router or an SSH server to come back.
pub const DEFAULT_RETRY_WAIT: u64 = 60;

/// Where a backup tells how it went, besides its exit code: the config's `metrics_file` and
/// `[notify]`.
pub(super) struct Reporting {
    pub metrics_file: Option<PathBuf>,
    pub notify: Option<NotifyConfig>,
}

/// The backup's settings, resolved (`output` says what the helper prints), and its reporting.
pub(super) fn options(
    args: &BackupSettingsArgs,
    output: OutputOptions,
) -> anyhow::Result<(BackupOptions, Reporting)> {
    let Settings {
        file,
        mailcow_dir,
        access,
    } = settings(&args.settings)?;
    let names = if args.components.is_empty() {
        file.components.unwrap_or_default()
    } else {
        args.components.clone()
    };
    let components = config::components(&names)?;
    let mut excludes = file.exclude.unwrap_or_default();
    excludes.extend(args.excludes.iter().cloned());
    let values = PlaceholderValues::here(now_micros());
    let name_template = args
        .archive_name
        .clone()
        .or(file.archive_name)
        .unwrap_or_else(|| config::DEFAULT_ARCHIVE_NAME.into());
    let retention = match file.retention {
        Some(retention) => RetentionCommand {
            prune_glob: Some(name_glob(&name_template, &values)?),
            keep_within: retention.keep_within,
            keeps: retention.keeps,
            compact: retention.compact,
        },
        None => RetentionCommand::default(),
    };
    let backup = BackupOptions {
        mailcow_dir,
        components,
        access,
        archive: expand(&name_template, &values)?,
        retention,
        check: file.check,
        compression: args
            .compression
            .clone()
            .or(file.compression)
            .unwrap_or_else(|| "lz4".into()),
        excludes,
        checkpoint_interval: file.checkpoint_interval.unwrap_or(1800),
        upload_ratelimit: args.upload_ratelimit.or(file.upload_ratelimit).unwrap_or(0),
        retries: args.retries.or(file.retries).unwrap_or(DEFAULT_RETRIES),
        retry_wait: Duration::from_secs(
            args.retry_wait
                .or(file.retry_wait)
                .unwrap_or(DEFAULT_RETRY_WAIT),
        ),
        output,
    };
    let reporting = Reporting {
        metrics_file: file.metrics_file,
        notify: file.notify,
    };
    Ok((backup, reporting))
}

/// One backup or restore at a time on this host: an exclusive `flock` on `<state dir>/lock`, held until
/// the process exits (so a killed run never leaves it behind).
pub(super) fn host_lock(access: &HelperAccess) -> anyhow::Result<std::fs::File> {
    let wait = Duration::from_secs(access.repository_access.lock_wait);
    lock_host(access, wait)?.ok_or_else(|| {
        let path = access.state_dir.join("lock");
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow::anyhow!(
            "another mailcow-borg backup or restore is running on this host (process {}, lock {}); waited {} s: try again later, or give --lock-wait",
            holder.trim(),
            path.display(),
            wait.as_secs()
        )
    })
}

/// The host lock if it can be had within `wait`; `None` while another run holds it.
pub(super) fn lock_host(
    access: &HelperAccess,
    wait: Duration,
) -> anyhow::Result<Option<std::fs::File>> {
    access.ensure_state_dir()?;
    let path = access.state_dir.join("lock");
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
            return Ok(Some(file));
        }
        if started.elapsed() >= wait {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With the host lock held: starts the services a restore that died had left stopped, and says
/// so (see `mailcow::stopped`).
pub(super) async fn start_what_a_dead_restore_stopped(
    engine: &Engine,
    access: &HelperAccess,
    conf: &MailcowConf,
) -> anyhow::Result<()> {
    if let Some(done) = stopped::recover(engine, &access.state_dir, &conf.project).await? {
        say!("mailcow-borg: {done}");
    }
    Ok(())
}

pub fn run(args: BackupArgs) -> anyhow::Result<Outcome> {
    let output = OutputOptions {
        stats: args.stats,
        // The helper's JSON summary holds the figures the run record keeps; it is asked for
        // unless `--stats` wants them as text, and printed only when `--json` asks.
        json: args.json || !args.stats,
        list: args.list,
        progress: args.progress,
    };
    let (options, reporting) = options(&args.settings, output)?;
    let log = RunLog::begin("backup", reporting.notify);
    let archive = Some(options.archive.clone());
    // A backup that cannot run because another holds the host is a failed backup to be told
    // of; only the holder of the lock writes the journal.
    let _lock = match host_lock(&options.access) {
        Ok(lock) => lock,
        Err(e) => return log.end(archive, None, None, Err(e)),
    };
    let mut summary = None;
    let result = back_up(&options, args.json, &mut summary);
    let journal = Journal {
        state_dir: &options.access.state_dir,
        metrics_file: reporting.metrics_file.as_deref(),
    };
    log.end(archive, summary.as_deref(), Some(journal), result)
}

/// The backup with the host lock held; `summary` gets the helper's JSON summary when it
/// printed one. `json_wanted`: the summary goes to stdout.
fn back_up(
    options: &BackupOptions,
    json_wanted: bool,
    summary: &mut Option<Vec<u8>>,
) -> anyhow::Result<Outcome> {
    let conf = MailcowConf::load(&options.mailcow_dir)?;
    runtime()?.block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(None);
        signals::pass_on(
            stop_tx,
            "stopping the helper; it rolls back what this run wrote",
        )?;
        let engine = Engine::connect().await?;
        start_what_a_dead_restore_stopped(&engine, &options.access, &conf).await?;
        let stop_after = stop.clone();
        let (report, tries) = backup_with_retries(&engine, options, &conf, stop).await?;
        summary.clone_from(&report.json);
        if let Some(signal) = report.interrupted {
            // Stopped after the archive was committed, while pruning or compacting: the
            // helper said so with its exit code.
            let outcome = if report.exit_code == EXIT_ARCHIVE_SAFE {
                "the archive was written and is safe; pruning or compacting after it was stopped (a prune is one transaction: it was rolled back whole)"
            } else {
                Interrupted::NOTHING_COMMITTED
            };
            return Err(Interrupted::by(signal, outcome).into());
        }
        let captured = report.json.as_deref().filter(|_| json_wanted);
        if tries > 1 && report.exit_code != EXIT_CONNECTION_LOST && !json_wanted {
            say!("mailcow-borg: the backup took {tries} tries");
        }
        let outcome = match report.exit_code {
            0 => Outcome::Ok,
            1 => Outcome::Warning,
            EXIT_ARCHIVE_SAFE => {
                if let Some(captured) = captured {
                    print_json(captured, &report, &conf, None, tries)?;
                }
                anyhow::bail!(
                    "the archive {} was written and is safe, but pruning or compacting after it failed (the line above says what)",
                    options.archive
                );
            }
            EXIT_CONNECTION_LOST => anyhow::bail!(
                "the backup failed: the connection to the repository failed on each of {tries} tries (the lines above say how); nothing was committed but checkpoints, which the next run builds on. Check the network and the repository host{}",
                if options.retries == 0 {
                    ", or set retries in the config to try again by itself"
                } else {
                    ""
                }
            ),
            code => anyhow::bail!(
                "the backup failed (the helper exited with {code}; its message is above); nothing was committed"
            ),
        };
        let scheduled = match &options.check {
            Some(schedule) => Some(
                run_scheduled(&engine, options, &conf, schedule, stop_after, json_wanted).await?,
            ),
            None => None,
        };
        if let Some(captured) = captured {
            print_json(captured, &report, &conf, scheduled.as_ref(), tries)?;
        }
        match &scheduled {
            Some(scheduled) => scheduled_outcome(scheduled, outcome, &options.archive),
            None => Ok(outcome),
        }
    })
}

/// Runs the backup, and again after `retry_wait` while its connection failed or dropped, up to
/// `retries` more times; the report of the last try and how many there were. Each try is a new
/// helper with the same archive name: what an earlier one checkpointed is in the repository,
/// and the chunk index, brought in step with it, keeps it from being sent again.
async fn backup_with_retries(
    engine: &Engine,
    options: &BackupOptions,
    conf: &MailcowConf,
    mut stop: tokio::sync::watch::Receiver<Option<&'static str>>,
) -> anyhow::Result<(BackupReport, u32)> {
    let mut tries = 1;
    loop {
        let report = match backup(engine, options, conf, stop.clone()).await {
            Err(BackupError::Stopped(signal)) => {
                return Err(Interrupted::by(signal, Interrupted::NOTHING_COMMITTED).into());
            }
            other => other?,
        };
        if report.interrupted.is_some()
            || report.exit_code != EXIT_CONNECTION_LOST
            || tries > options.retries
        {
            return Ok((report, tries));
        }
        say!(
            "mailcow-borg: the connection to the repository failed (try {tries} of {}); trying again in {} s",
            options.retries + 1,
            options.retry_wait.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(options.retry_wait) => {}
            signal = wait_for_stop(&mut stop) => {
                return Err(Interrupted::by(signal, Interrupted::NOTHING_COMMITTED).into());
            }
        }
        tries += 1;
    }
}

/// Runs the checks and drill `[check]` finds due after the archive; a stop signal ends the
/// command with a line that says the archive is safe.
async fn run_scheduled(
    engine: &Engine,
    options: &BackupOptions,
    conf: &MailcowConf,
    schedule: &CheckSchedule,
    stop: tokio::sync::watch::Receiver<Option<&'static str>>,
    quiet: bool,
) -> anyhow::Result<Scheduled> {
    let restore_options = RestoreOptions {
        mailcow_dir: options.mailcow_dir.clone(),
        access: options.access.clone(),
    };
    let say = |line: &str| {
        if !quiet {
            say!("mailcow-borg: {line}");
        }
    };
    match run_due(
        engine,
        &restore_options,
        conf,
        schedule,
        &options.archive,
        stop,
        &say,
    )
    .await
    {
        Ok(scheduled) => {
            if let (Some(report), false) = (&scheduled.drill, quiet) {
                super::drill::print(report, false)?;
            }
            Ok(scheduled)
        }
        Err(ScheduledError::Stopped(signal))
        | Err(ScheduledError::Drill(DrillError::Stopped(signal))) => Err(Interrupted::by(
            signal,
            "the archive was written and is safe; the checks after it were stopped",
        )
        .into()),
        Err(e) => Err(anyhow::anyhow!(
            "the archive {} was written and is safe, but the scheduled checks after it could not run: {e}",
            options.archive
        )),
    }
}

/// The backup's outcome once the scheduled checks ran: a check that found problems, or a
/// drill that failed, is an error that says which and what to do.
fn scheduled_outcome(
    scheduled: &Scheduled,
    outcome: Outcome,
    archive: &str,
) -> anyhow::Result<Outcome> {
    match scheduled.check_exit {
        None | Some(0) => {}
        Some(1) => anyhow::bail!(
            "the archive {archive} was written and is safe, but the scheduled check ({}) found problems in the repository (listed above): run `mailcow-borg check -v` to see them again, and `borg check --repair` to repair",
            what_is_checked(&scheduled.due)
        ),
        Some(code) => anyhow::bail!(
            "the archive {archive} was written and is safe, but the scheduled check ({}) failed (exit {code}; the line above says why); it runs again after the next backup",
            what_is_checked(&scheduled.due)
        ),
    }
    match scheduled.drill.as_ref().map(DrillReport::status) {
        Some(Status::Failed) => {
            let report = scheduled.drill.as_ref().expect("a status was read from it");
            anyhow::bail!(
                "the archive {archive} was written and is safe, but the scheduled restore drill of it failed: {} (see above); run `mailcow-borg drill {archive}` to see it again",
                report.failed_steps().join(", ")
            )
        }
        Some(Status::Warning) => Ok(Outcome::Warning),
        _ => Ok(outcome),
    }
}

/// The helper's `create --json` document, with what the host found added as `mailcow`.
fn print_json(
    captured: &[u8],
    report: &BackupReport,
    conf: &MailcowConf,
    scheduled: Option<&Scheduled>,
    tries: u32,
) -> anyhow::Result<()> {
    // create's document, then (with retention) one holding `prune` and `compact`.
    let not_json =
        |e: serde_json::Error| anyhow::anyhow!("the helper's JSON summary is not JSON: {e}");
    let mut documents =
        serde_json::Deserializer::from_slice(captured).into_iter::<serde_json::Value>();
    let mut document = documents
        .next()
        .ok_or_else(|| anyhow::anyhow!("the helper printed no JSON summary"))?
        .map_err(not_json)?;
    for more in documents {
        if let serde_json::Value::Object(members) = more.map_err(not_json)? {
            for (key, value) in members {
                document[key] = value;
            }
        }
    }
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
        "tries": tries,
    });
    if let Some(scheduled) = scheduled {
        document["scheduled"] = serde_json::json!({
            "check": scheduled.check_exit.map(|code| serde_json::json!({
                "checked": what_is_checked(&scheduled.due),
                "exit_code": code,
            })),
            "drill": scheduled.drill,
        });
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    Ok(())
}
