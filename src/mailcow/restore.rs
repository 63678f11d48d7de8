//! One mailcow restore, from the host, in two halves with the user's consent between them.
//!
//! **Prepare** changes nothing: a helper reads the archive's summary (what it holds, where it
//! came from, its mail_crypt keys compared with the target's), the plan is made from it
//! ([`super::restore_plan`]), the volumes are found, and the database login is tried. Every
//! refusal happens here, before anything is stopped.
//!
//! **Execute** carries the plan out: the watchdog is stopped, then the services whose files are
//! written; one helper writes every file component into its volume (mounted read-write only
//! now), crypt first, while a second helper streams the dump into the `mariadb` client of the
//! running mysql-mailcow; the stopped services are started again, the watchdog last —
//! **whatever happened before**, so a failed restore never leaves mailcow down — and dovecot is
//! told to look at the restored mail (`doveadm force-resync`, `quota recalc`).
//!
//! Files are replaced atomically (a file is either the old one or the archive's, never half of
//! one), and a directory restored whole is made equal to the archive only after everything in
//! it was written: a restore that fails midway leaves each volume as a mix of old and restored
//! complete files, and says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;

use crate::docker::discover::Container;
use crate::docker::helper::{HelperMount, HelperSpec, StdoutTo};
use crate::docker::{DockerError, Engine};
use crate::error::ErrorKind;

use super::access::{
    HELPER_ROOT, HelperAccess, HelperError, READ_ANY_FILE, WRITE_ANY_FILE, clear_stale_helpers,
};
use super::backup::{ROLLBACK_GRACE, wait_for_stop};
use super::components::Component;
use super::conf::MailcowConf;
use super::discover::{DiscoverError, Found, discover_among};
use super::helper_command::{HelperCommand, InspectCommand, RestoreCommand, StreamCommand};
use super::mail_merge::MailSelection;
use super::mysql::{self, DumpError, Login};
use super::restore_plan::{
    ConfigTarget, MailPlan, Plan, PlanError, RestoreRequest, Resync, Scope, WATCHDOG,
    mail_selection, make_plan, subtrees,
};
use super::staged_import::{self, Staging, StagingError, Tools};
use super::stopped::RecoveryError;
use super::summary::{ArchiveSummary, SqlDump};

/// Yields the signal (`SIGINT`, `SIGTERM`) that asks the restore to stop.
type Stop = tokio::sync::watch::Receiver<Option<&'static str>>;

/// Where the inspecting helper sees the target's crypt volume.
const TARGET_CRYPT: &str = "/target/crypt";
/// Where it sees the target's vmail volume: as `vmail` below this.
const TARGET_ROOT: &str = "/target";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("mysql: {0}")]
    Mysql(#[from] DumpError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("mysql: {0}")]
    Staging(#[from] StagingError),
    #[error(
        "reading the archive failed (the helper exited with {0}; its message is above); nothing was changed"
    )]
    Inspect(i64),
    #[error("the helper's archive summary is not what this version expects: {0}")]
    Summary(String),
    #[error("{0}: stopped before anything was changed")]
    Stopped(&'static str),
}

impl RestoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RestoreError::Stopped(_) => ErrorKind::Interrupted,
            RestoreError::Plan(_) => ErrorKind::BadInput,
            RestoreError::Inspect(_) => ErrorKind::Repository,
            RestoreError::Summary(_) => ErrorKind::Integrity,
            RestoreError::Docker(_)
            | RestoreError::Helper(_)
            | RestoreError::Discover(_)
            | RestoreError::Mysql(_) => ErrorKind::Environment,
            RestoreError::Staging(e) => e.kind(),
        }
    }
}

/// Why the services a restore stops were not all stopped.
#[derive(Debug, thiserror::Error)]
pub enum StopServicesError {
    /// The record of what is stopped (for the next run to start it) could not be written.
    #[error("nothing was stopped: {0}")]
    Record(#[source] RecoveryError),
    #[error(transparent)]
    Docker(#[from] DockerError),
}

impl StopServicesError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StopServicesError::Record(_) | StopServicesError::Docker(_) => ErrorKind::Environment,
        }
    }
}

/// Why the helper that restores the file components could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FilesSetupError {
    #[error("config: cannot create {}: {source}", .dir.display())]
    ConfigDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: its volume was not found")]
    NoVolume(Component),
}

impl FilesSetupError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FilesSetupError::ConfigDir { .. } | FilesSetupError::NoVolume(_) => {
                ErrorKind::Environment
            }
        }
    }
}

/// What a restore run needs besides the plan.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub mailcow_dir: PathBuf,
    pub access: HelperAccess,
}

/// Everything known before the plan is carried out.
pub struct Prepared {
    pub summary: ArchiveSummary,
    pub plan: Plan,
    pub found: Found,
    /// The project's containers, for stopping and starting services.
    pub containers: Vec<Container>,
    pub image: String,
    /// The SQL client and the dump tool in mysql-mailcow, when the database is restored.
    database_tools: Option<(&'static str, &'static str)>,
}

impl Prepared {
    /// The containers of the services the plan stops that exist and run, in stop order.
    pub fn running_to_stop(&self) -> Vec<&Container> {
        self.plan
            .stop
            .iter()
            .filter_map(|service| {
                self.containers
                    .iter()
                    .find(|c| c.service == *service && c.running)
            })
            .collect()
    }
}

/// Runs a helper to its end: stdin closed, output relayed as `stdout` says, passed a stop
/// signal if one comes (then given [`ROLLBACK_GRACE`]), always removed. Returns its exit code,
/// what [`StdoutTo::Capture`] kept, and the signal that stopped it.
pub(super) async fn run_helper(
    engine: &Engine,
    spec: &HelperSpec,
    stdout: StdoutTo,
    stop: &mut Stop,
) -> Result<(i64, Vec<u8>, Option<&'static str>), DockerError> {
    use tokio::io::AsyncWriteExt;
    let mut helper = engine.start_helper(spec).await?;
    let relay = helper.relay_output(stdout);
    if let Some(mut stdin) = helper.take_stdin() {
        let _ = stdin.shutdown().await;
    }
    let (code, interrupted) = tokio::select! {
        code = helper.wait() => (code, None),
        signal = wait_for_stop(stop) => {
            let _ = helper.signal(signal).await;
            (Ok(helper.wait_or_kill(ROLLBACK_GRACE).await.unwrap_or(137)), Some(signal))
        }
    };
    let removed = helper.remove().await;
    let captured = relay.await.ok().and_then(Result::ok).unwrap_or_default();
    let code = code?;
    removed?;
    Ok((code, captured, interrupted))
}

/// What an inspecting helper looks at, besides the repository.
pub struct Inspection<'a> {
    /// The archive's name, or `latest`.
    pub archive: &'a str,
    /// Archive paths to look for (mailboxes, domains).
    pub subtrees: Vec<String>,
    /// The target's crypt volume, whose keys the archive's are compared with.
    pub crypt_volume: Option<String>,
    /// The target's vmail volume and the mail selection, to count the subtrees' mail against
    /// the live mail.
    pub live_mail: Option<(String, MailSelection)>,
    /// Labels for the helper besides the project's.
    pub labels: Vec<(String, String)>,
}

/// Runs a helper (`agent inspect`) that reads the archive's summary. Changes nothing.
pub async fn read_summary(
    engine: &Engine,
    access: &HelperAccess,
    project: &str,
    image: &str,
    inspection: Inspection<'_>,
    stop: &mut Stop,
) -> Result<ArchiveSummary, RestoreError> {
    let Inspection {
        archive,
        subtrees,
        crypt_volume,
        live_mail,
        labels,
    } = inspection;
    let (vmail_volume, mail) = live_mail.unzip();
    let command = InspectCommand {
        subtrees,
        target_crypt: crypt_volume.is_some().then(|| TARGET_CRYPT.into()),
        live_mail: vmail_volume.is_some().then(|| TARGET_ROOT.into()),
        mail: mail.unwrap_or_default(),
        location: access.archive(archive),
        access: access.in_helper(),
    };
    let mut spec = access.helper_spec(image, project, &HelperCommand::Inspect(Box::new(command)));
    spec.working_dir = "/".into();
    spec.labels.extend(labels);
    if let Some(volume) = vmail_volume {
        spec.mounts.push(HelperMount::Volume {
            name: volume,
            target: format!("{TARGET_ROOT}/{}", Component::Vmail.archive_dir()),
            read_only: true,
        });
        // Maildirs are vmail's (uid 5000), private to it.
        spec.capabilities = READ_ANY_FILE.map(String::from).to_vec();
    }
    if let Some(volume) = crypt_volume {
        spec.mounts.push(HelperMount::Volume {
            name: volume,
            target: TARGET_CRYPT.into(),
            read_only: true,
        });
        // The keys are dovecot's (uid 401), readable by it alone.
        spec.capabilities = READ_ANY_FILE.map(String::from).to_vec();
    }
    let (code, captured, interrupted) = run_helper(engine, &spec, StdoutTo::Capture, stop).await?;
    if let Some(signal) = interrupted {
        return Err(RestoreError::Stopped(signal));
    }
    if code != 0 {
        return Err(RestoreError::Inspect(code));
    }
    serde_json::from_slice(&captured).map_err(|e| RestoreError::Summary(e.to_string()))
}

/// Reads the archive, makes the plan, finds what it needs and checks the database login.
/// Changes nothing.
pub async fn prepare(
    engine: &Engine,
    options: &RestoreOptions,
    conf: &MailcowConf,
    request: &RestoreRequest,
    stop: &mut Stop,
) -> Result<Prepared, RestoreError> {
    let image = async { Ok::<_, RestoreError>(options.access.image(engine).await?) };
    let stale = async { Ok::<_, RestoreError>(clear_stale_helpers(engine, &conf.project).await?) };
    let containers =
        async { Ok::<_, RestoreError>(engine.project_containers(&conf.project).await?) };
    let ((image, _), _, containers) = tokio::try_join!(image, stale, containers)?;
    // The target's keys, to compare with the archive's; a mailcow without a crypt volume has
    // none to compare.
    let crypt_volume = discover_among(engine, conf, &containers, &[Component::Crypt])
        .await
        .ok()
        .and_then(|found| found.volumes.get(&Component::Crypt).cloned());
    options.access.ensure_state_dir()?;
    let subtrees: Vec<String> = subtrees(request)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    // The live mail of the subtrees, to plan the merge (or count what a mirror removes).
    let selection = mail_selection(request, conf)?;
    let live_mail = if subtrees.is_empty() {
        None
    } else {
        discover_among(engine, conf, &containers, &[Component::Vmail])
            .await?
            .volumes
            .get(&Component::Vmail)
            .cloned()
            .map(|volume| (volume, selection))
    };
    let summary = read_summary(
        engine,
        &options.access,
        &conf.project,
        &image,
        Inspection {
            archive: &request.archive,
            subtrees,
            crypt_volume,
            live_mail,
            labels: Vec::new(),
        },
        stop,
    )
    .await?;

    let plan = make_plan(request, &summary, conf, std::env::consts::ARCH)?;
    let mut needed: Vec<Component> = plan
        .files
        .iter()
        .map(|f| f.component)
        .filter(|c| c.volume().is_some())
        .collect();
    if plan.database.is_some() {
        needed.push(Component::Mysql);
    }
    let found = discover_among(engine, conf, &containers, &needed).await?;
    let database_tools = match &found.mysql {
        Some(mysql) => {
            Staging::new(&conf.db_name)?;
            let client = mysql::client_tool(engine, mysql).await?;
            let dump_tool = mysql::dump_tool(engine, mysql).await?;
            mysql::check_login(engine, mysql, client, Login::root(conf)).await?;
            Some((client, dump_tool))
        }
        None => None,
    };
    Ok(Prepared {
        summary,
        plan,
        found,
        containers,
        image,
        database_tools,
    })
}

/// What a cut-off or failed file restore leaves: whole files, old or restored, nothing removed.
const FILES_LEFT: &str = "the volumes hold restored and old files side by side (every file whole; nothing the archive lacks was removed yet): run the restore again";

/// Why the files step failed; the message says what the volumes hold now.
#[derive(Debug, thiserror::Error)]
pub enum FilesStepError {
    #[error("config: cannot keep a copy of mailcow.conf: {0}")]
    KeepConf(std::io::Error),
    #[error(transparent)]
    Setup(#[from] FilesSetupError),
    #[error("files: {0}")]
    Helper(DockerError),
    #[error("files: interrupted by {0}; {FILES_LEFT}")]
    Interrupted(&'static str),
    #[error("files: the helper exited with {0} (its message is above); {FILES_LEFT}")]
    HelperFailed(i64),
}

/// Why the database step failed. Once the import started, `DBNAME` is unchanged whatever
/// failed (the staging database takes the import); `left` is why the staging database could
/// not be dropped, if it could not.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseStepError {
    #[error("mysql: {0}")]
    Setup(StagingError),
    #[error("mysql: {0}")]
    Client(DumpError),
    #[error(
        "mysql: {failure}; the database {database} is unchanged{}",
        left.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    Import {
        failure: ImportFailure,
        database: String,
        left: Option<StagingError>,
    },
}

/// What stopped a staged import before or during the swap.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    #[error("{0}")]
    Helper(DockerError),
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    #[error("{0}")]
    Docker(DockerError),
    #[error("{client} exited with {code}: {last}")]
    Client {
        client: String,
        code: i64,
        last: String,
    },
    #[error("reading the dump from the archive failed (the helper exited with {0})")]
    Reading(i64),
    #[error("{0}")]
    Staging(StagingError),
}

/// How the restore ended.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// What was restored completely.
    pub restored: Vec<String>,
    /// What failed, and how.
    pub failed: Option<String>,
    /// What was not (or not completely) restored because of the failure.
    pub not_restored: Vec<String>,
    /// Services that could not be started again.
    pub not_started: Vec<String>,
    /// Things that did not fully work but did not fail the restore.
    pub warnings: Vec<String>,
    /// The signal that stopped the restore.
    pub interrupted: Option<&'static str>,
}

/// Carries the plan out; `say` gets a line for each step. Never returns early with services
/// stopped: the report says what happened.
pub async fn execute(
    engine: &Engine,
    options: &RestoreOptions,
    conf: &MailcowConf,
    prepared: &Prepared,
    stop: Stop,
    say: &(dyn Fn(&str) + Sync),
) -> RestoreReport {
    let plan = &prepared.plan;
    // What the plan skipped, and the checks it could not make, are warnings of the run too.
    let mut report = RestoreReport {
        warnings: [plan.skipped.clone(), plan.warnings.clone()].concat(),
        ..Default::default()
    };
    let file_names: Vec<String> = plan.files.iter().map(describe_step).collect();
    let database = plan
        .database
        .as_ref()
        .map(|d| format!("mysql (database {})", d.database));
    let mut failures = Vec::new();
    let run = Run {
        engine,
        options,
        conf,
        prepared,
        say,
    };
    // Recorded before anything stops, so that if this process dies the next run starts them.
    let (watchdog, services): (Vec<&Container>, Vec<&Container>) = prepared
        .running_to_stop()
        .into_iter()
        .partition(|c| c.service == WATCHDOG);
    let start_order = [services, watchdog].concat();
    let state_dir = &options.access.state_dir;
    let (stopped, stopping) = match super::stopped::record(state_dir, &start_order) {
        Ok(()) => run.stop_services().await,
        Err(e) => (Vec::new(), Err(StopServicesError::Record(e))),
    };
    if let Err(e) = stopping {
        failures.push(e.to_string());
        report.not_restored = file_names.iter().cloned().chain(database).collect();
    } else {
        // The files and the database are independent: restored together.
        let files = async {
            if plan.files.is_empty() {
                return Ok(None);
            }
            run.files(stop.clone()).await.map(Some)
        };
        let dump = async {
            match (
                &plan.database,
                &prepared.found.mysql,
                prepared.database_tools,
            ) {
                (Some(dump), Some(container), Some((client, dump_tool))) => {
                    let tools = Tools {
                        container,
                        client,
                        dump_tool,
                    };
                    run.database(dump, tools, stop.clone()).await.map(Some)
                }
                _ => Ok(None),
            }
        };
        let (files, dump) = tokio::join!(files, dump);
        match files {
            Ok(Some(warnings)) => {
                report.warnings.extend(warnings);
                report.restored.extend(file_names);
            }
            Ok(None) => {}
            Err(e) => {
                failures.push(e.to_string());
                report.not_restored.extend(file_names);
            }
        }
        match dump {
            Ok(Some(warnings)) => {
                report.warnings.extend(warnings);
                report.restored.extend(database);
            }
            Ok(None) => {}
            Err(e) => {
                failures.push(e.to_string());
                report.not_restored.extend(database);
            }
        }
    }
    if !failures.is_empty() {
        report.failed = Some(failures.join("; "));
    }
    report.interrupted = *stop.borrow();

    // Whatever happened: everything stopped is started again, together, the watchdog last.
    let (watchdog, services): (Vec<&Container>, Vec<&Container>) =
        stopped.iter().partition(|c| c.service == WATCHDOG);
    for group in [services, watchdog] {
        if group.is_empty() {
            continue;
        }
        say(&format!("starting {}", names(&group)));
        let results = join_all(group.iter().map(|c| engine.start_container(&c.id, &c.name))).await;
        for (container, result) in group.iter().zip(results) {
            if let Err(e) = result {
                report.not_started.push(format!("{}: {e}", container.name));
            }
        }
    }
    if report.not_started.is_empty()
        && let Err(e) = super::stopped::clear(state_dir)
    {
        report.warnings.push(e.to_string());
    }
    if report.failed.is_none()
        && let Some(resync) = &plan.resync
    {
        run.resync_mail(resync, plan.merge.as_ref(), &mut report.warnings)
            .await;
    }
    report
}

/// Where a dump is read from: the archive, through a helper (`agent stream`).
pub struct DumpSource<'a> {
    pub access: &'a HelperAccess,
    pub project: &'a str,
    /// The helper image.
    pub image: &'a str,
    pub archive: &'a str,
    /// Labels for the helper besides the project's.
    pub labels: Vec<(String, String)>,
}

/// A helper streams the dump out of the archive into a staging database of the server in
/// `tools`, which replaces the dump's database only once it is complete ([`staged_import`]).
/// Returns the warnings of an import that worked.
pub async fn import_dump(
    engine: &Engine,
    source: &DumpSource<'_>,
    conf: &MailcowConf,
    dump: &SqlDump,
    tools: Tools<'_>,
    mut stop: Stop,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>, DatabaseStepError> {
    let staging = Staging::new(&dump.database).map_err(DatabaseStepError::Setup)?;
    say(&format!(
        "restoring database {} from {} into {} (staged in {})",
        dump.database, dump.path, tools.container.name, staging.staging
    ));
    let (import, input) = mysql::start_import(
        engine,
        tools.container,
        tools.client,
        Login::root(conf),
        &[],
    )
    .await
    .map_err(DatabaseStepError::Client)?;
    let command = StreamCommand {
        location: source.access.archive(source.archive),
        path: dump.path.clone(),
        access: source.access.in_helper(),
    };
    let mut spec = source.access.helper_spec(
        source.image,
        source.project,
        &HelperCommand::Stream(Box::new(command)),
    );
    spec.working_dir = "/".into();
    spec.labels.extend(source.labels.iter().cloned());
    let (to_rewriter, from_helper) = tokio::io::duplex(256 * 1024);
    let (streamed, finished, rewritten) = tokio::join!(
        run_helper(
            engine,
            &spec,
            StdoutTo::Pipe(Box::pin(to_rewriter)),
            &mut stop
        ),
        import.finish(),
        staged_import::rewrite_into(from_helper, input, staging.rewriter()),
    );
    let failure = match (streamed, finished) {
        (Err(e), _) => Some(ImportFailure::Helper(e)),
        (Ok((_, _, Some(signal))), _) => Some(ImportFailure::Interrupted(signal)),
        (_, Err(e)) => Some(ImportFailure::Docker(e)),
        (_, Ok(finished)) if finished.exit_code != 0 => Some(ImportFailure::Client {
            client: tools.client.to_string(),
            code: finished.exit_code,
            last: finished.last_error_line(),
        }),
        (Ok((code, _, None)), _) if code != 0 => Some(ImportFailure::Reading(code)),
        _ => None,
    };
    let rewritten = rewritten.map_err(ImportFailure::Staging);
    let swapped = match failure.map_or(rewritten, Err) {
        Ok(rewritten) => {
            say("swapping the restored database in");
            staged_import::swap(engine, tools, conf, &staging, &rewritten)
                .await
                .map_err(ImportFailure::Staging)
        }
        Err(failure) => Err(failure),
    };
    match swapped {
        Ok(warnings) => {
            say("database restored");
            Ok(warnings)
        }
        Err(failure) => Err(DatabaseStepError::Import {
            failure,
            database: dump.database.clone(),
            left: staged_import::discard(engine, tools, conf, &staging)
                .await
                .err(),
        }),
    }
}

/// One execution's fixed parts, shared by its steps.
#[derive(Clone, Copy)]
struct Run<'a> {
    engine: &'a Engine,
    options: &'a RestoreOptions,
    conf: &'a MailcowConf,
    prepared: &'a Prepared,
    say: &'a (dyn Fn(&str) + Sync),
}

impl<'a> Run<'a> {
    /// Stops the running services the plan names: the watchdog first and alone (it would restart
    /// what it sees stopped), then the rest together — their order does not matter, and each may
    /// take seconds. Returns what it tried to stop (to be started again whatever happened).
    async fn stop_services(&self) -> (Vec<&'a Container>, Result<(), StopServicesError>) {
        let Run {
            engine,
            prepared,
            say,
            ..
        } = *self;
        let running = prepared.running_to_stop();
        let (watchdog, services) = running.split_at(usize::from(
            running.first().is_some_and(|c| c.service == WATCHDOG),
        ));
        let mut stopped = Vec::new();
        for group in [watchdog, services] {
            if group.is_empty() {
                continue;
            }
            say(&format!("stopping {}", names(group)));
            stopped.extend(group);
            let results =
                join_all(group.iter().map(|c| engine.stop_container(&c.id, &c.name))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return (stopped, Err(e.into()));
            }
        }
        (stopped, Ok(()))
    }

    /// The files step: one helper writes every file component. Returns its warnings.
    async fn files(&self, mut stop: Stop) -> Result<Vec<String>, FilesStepError> {
        let Run {
            engine,
            options,
            conf,
            prepared,
            say,
        } = *self;
        let plan = &prepared.plan;
        if let ConfigTarget::InPlace = plan.config
            && plan.files.iter().any(|f| f.component == Component::Config)
        {
            keep_old_conf(&options.mailcow_dir).map_err(FilesStepError::KeepConf)?;
        }
        let names: Vec<String> = plan.files.iter().map(describe_step).collect();
        say(&format!("restoring files: {}", names.join(", ")));
        let spec = files_spec(options, conf, prepared)?;
        let (code, _, interrupted) = run_helper(engine, &spec, StdoutTo::Relay, &mut stop)
            .await
            .map_err(FilesStepError::Helper)?;
        if let Some(signal) = interrupted {
            return Err(FilesStepError::Interrupted(signal));
        }
        say("files restored");
        match code {
            0 => Ok(Vec::new()),
            1 => Ok(vec![
                "files: some items could not be restored (listed above)".into(),
            ]),
            code => Err(FilesStepError::HelperFailed(code)),
        }
    }

    /// The database step: [`import_dump`] into the running mysql-mailcow.
    async fn database(
        &self,
        dump: &SqlDump,
        tools: Tools<'_>,
        stop: Stop,
    ) -> Result<Vec<String>, DatabaseStepError> {
        let Run {
            engine,
            options,
            conf,
            prepared,
            say,
        } = *self;
        let source = DumpSource {
            access: &options.access,
            project: &conf.project,
            image: &prepared.image,
            archive: &prepared.plan.archive,
            labels: Vec::new(),
        };
        import_dump(engine, &source, conf, dump, tools, stop, say).await
    }

    /// Makes the running dovecot-mailcow see the restored mail: for each user mask one `doveadm
    /// batch` of `force-resync` and `quota recalc` (one process instead of one per command),
    /// and beside it, after a merge, one `mailbox subscribe` per user for the folders it
    /// subscribes. Dovecot may just have been started, so each command is tried a few times.
    async fn resync_mail(
        &self,
        resync: &Resync,
        merge: Option<&MailPlan>,
        warnings: &mut Vec<String>,
    ) {
        let users: Vec<Vec<&str>> = match resync {
            Resync::All => vec![vec!["-A"]],
            Resync::Users(masks) => masks.iter().map(|m| vec!["-u", m.as_str()]).collect(),
        };
        let mut resyncs: Vec<Vec<&str>> = Vec::new();
        for user in &users {
            let mut batch = [&["doveadm", "batch"][..], user].concat();
            // Merged messages reappear under names dovecot saw expunged: dovecot 2.3 gives the
            // first of a folder a new UID and the others only at its next sync (checked with
            // the test image's dovecot).
            for _ in 0..if merge.is_some() { 2 } else { 1 } {
                batch.extend([":", "force-resync", "*"]);
            }
            batch.extend([":", "quota", "recalc"]);
            resyncs.push(batch);
        }
        let mut folders_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (user, folder) in merge.map(|m| &m.subscribe[..]).unwrap_or_default() {
            folders_of.entry(user).or_default().push(folder);
        }
        let subscribes: Vec<Vec<&str>> = folders_of
            .into_iter()
            .map(|(user, folders)| {
                [
                    &["doveadm", "mailbox", "subscribe", "-u", user][..],
                    &folders,
                ]
                .concat()
            })
            .collect();
        let (resynced, subscribed) =
            tokio::join!(self.in_dovecot(&resyncs), self.in_dovecot(&subscribes));
        warnings.extend(resynced.into_iter().chain(subscribed));
    }

    /// Runs `commands` one after the other in dovecot-mailcow, each tried up to five times;
    /// a warning for each that did not succeed.
    async fn in_dovecot(&self, commands: &[Vec<&str>]) -> Vec<String> {
        let Run {
            engine,
            prepared,
            say,
            ..
        } = *self;
        let dovecot = prepared
            .containers
            .iter()
            .find(|c| c.service == "dovecot-mailcow");
        let mut warnings = Vec::new();
        for command in commands {
            let shown = command
                .iter()
                .map(|w| {
                    if w.contains(['*', ' ']) {
                        format!("'{w}'")
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let Some(dovecot) = dovecot else {
                warnings.push(format!(
                    "no dovecot-mailcow container: run {shown} in it once it runs"
                ));
                continue;
            };
            say(&format!("{shown} in {}", dovecot.name));
            let mut last = String::new();
            let mut done = false;
            for attempt in 0..5 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                match engine.exec_capture(&dovecot.id, command, b"").await {
                    Ok((_, finished)) if finished.exit_code == 0 => {
                        done = true;
                        break;
                    }
                    Ok((_, finished)) => {
                        last = format!(
                            "exit code {}: {}",
                            finished.exit_code,
                            finished.last_error_line()
                        )
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if !done {
                warnings.push(format!(
                    "{shown} failed ({last}); the mail is restored, but dovecot may not show it until you run: docker exec {} {shown}",
                    dovecot.name
                ));
            }
        }
        warnings
    }
}

fn names(containers: &[&Container]) -> String {
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    names.join(", ")
}

fn describe_step(step: &super::restore_plan::FileStep) -> String {
    match &step.scope {
        Scope::Whole => step.component.name().to_string(),
        Scope::Subtrees(paths) | Scope::Merge(paths) => paths.join(", "),
    }
}

/// `mailcow.conf.before-restore-<UTC time>` beside it, with its mode.
fn keep_old_conf(mailcow_dir: &std::path::Path) -> std::io::Result<()> {
    let conf = mailcow_dir.join("mailcow.conf");
    if !conf.exists() {
        return Ok(());
    }
    let stamp = crate::format::manifest::format_timestamp(crate::ops::system::now_micros());
    let stamp: String = stamp
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    std::fs::copy(
        &conf,
        mailcow_dir.join(format!("mailcow.conf.before-restore-{stamp}")),
    )?;
    Ok(())
}

/// The helper that writes the file components: each volume read-write at its archive path
/// below [`HELPER_ROOT`], the config target bound there too.
fn files_spec(
    options: &RestoreOptions,
    conf: &MailcowConf,
    prepared: &Prepared,
) -> Result<HelperSpec, FilesSetupError> {
    let plan = &prepared.plan;
    let mut mounts = Vec::new();
    let mut mirrors = Vec::new();
    let mut paths = Vec::new();
    for step in &plan.files {
        let dir = step.component.archive_dir();
        let target = format!("{HELPER_ROOT}/{dir}");
        if step.component == Component::Config {
            let source = match &plan.config {
                ConfigTarget::InPlace => options.mailcow_dir.clone(),
                ConfigTarget::Directory(dir) => {
                    make_private_dir(dir).map_err(|source| FilesSetupError::ConfigDir {
                        dir: dir.clone(),
                        source,
                    })?;
                    dir.clone()
                }
            };
            mounts.push(HelperMount::Bind {
                source: source.display().to_string(),
                target,
                read_only: false,
            });
            paths.push(dir.to_string());
            continue;
        }
        let volume = prepared
            .found
            .volumes
            .get(&step.component)
            .ok_or(FilesSetupError::NoVolume(step.component))?;
        mounts.push(HelperMount::Volume {
            name: volume.clone(),
            target,
            read_only: false,
        });
        match &step.scope {
            Scope::Whole => {
                mirrors.push(dir.to_string());
                paths.push(dir.to_string());
            }
            Scope::Subtrees(subtrees) => {
                mirrors.extend(subtrees.iter().cloned());
                paths.extend(subtrees.iter().cloned());
            }
            Scope::Merge(subtrees) => paths.extend(subtrees.iter().cloned()),
        }
    }
    let command = RestoreCommand {
        mirrors,
        merge: plan.merge.is_some(),
        mail: plan
            .merge
            .as_ref()
            .map(|m| m.selection.clone())
            .unwrap_or_default(),
        location: options.access.archive(&plan.archive),
        paths,
        access: options.access.in_helper(),
    };
    let mut spec = options.access.helper_spec(
        &prepared.image,
        &conf.project,
        &HelperCommand::Restore(Box::new(command)),
    );
    spec.capabilities = WRITE_ANY_FILE.map(String::from).to_vec();
    spec.mounts.extend(mounts);
    Ok(spec)
}

/// The restored configuration holds every secret of the installation: only root may read it.
fn make_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
