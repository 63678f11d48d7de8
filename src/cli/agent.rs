//! `mailcow-borg agent …`: what runs **inside** the helper container (hidden from `--help`).
//! The host starts it with the mailcow volumes mounted under `/mailcow` and everything it needs
//! on its command line, except secrets, which are files under `/run/secrets`. The command line
//! is the typed contract of `mailcow::helper_command`; each subcommand has one handler here.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::Outcome;
use super::access::{AccessArgs, parse_location, with_repository};
use super::check::{self, ArchiveChoice, CheckPlan};
use super::create::{self, CreateArgs, CreateSettings};
use super::retention;
use super::signals;
use crate::format::manifest::Operation;
use crate::mailcow::access::HELPER_STATE;
use crate::mailcow::crypt_keys::{self, CRYPT_KEYS, KeyFile};
use crate::mailcow::frames::FramedReader;
use crate::mailcow::helper_command::{
    ArchiveLocation, BackupCommand, CheckCommand, HelperCommand, InspectCommand, RepositoryAccess,
    RestoreCommand, StreamCommand,
};
use crate::mailcow::mail_merge::{MailCount, MaildirMerge};
use crate::mailcow::schedule::{Stamped, Stamps};
use crate::mailcow::summary::summarize;
use crate::ops::extract::ExtractOptions;
use crate::ops::open::OpenRepository;
use crate::ops::system::now_micros;

/// Runs one helper subcommand: one handler each.
pub fn run(command: HelperCommand) -> anyhow::Result<Outcome> {
    match command {
        HelperCommand::Backup(command) => backup(*command),
        HelperCommand::Inspect(command) => inspect(*command),
        HelperCommand::Restore(command) => restore(*command),
        HelperCommand::Stream(command) => stream(*command),
        HelperCommand::Check(command) => check(*command),
    }
}

fn backup(command: BackupCommand) -> anyhow::Result<Outcome> {
    if let Some(dir) = &command.require_crypt_keys {
        let key_files = CRYPT_KEYS.map(|name| {
            let path = dir.join(name);
            (path.display().to_string(), KeyFile::at(&path))
        });
        crypt_keys::require_for_backup(key_files, "the crypt volume (crypt-vol-1)").map_err(|e| {
            anyhow::anyhow!(
                "refusing to back up vmail: {e}. Restore the keys (or check that the crypt volume is the one dovecot-mailcow mounts at /mail_crypt) and run again"
            )
        })?;
    }
    let dump = FramedReader::new(std::io::stdin());
    let extras = create::Extras {
        stdin: Some((Box::new(dump), true)),
        // Postfix's fifos (public/pickup, …) are the mail system's, made again when it
        // starts; mailcow's volumes hold no other special files.
        skip_special: true,
        more_figures: true,
    };
    let (location, access, retention, output) = (
        command.location.clone(),
        command.access.clone(),
        command.retention.clone(),
        command.output,
    );
    // A connection that failed or dropped is said with its own exit code: the host may try
    // again, and the next try dedups against the checkpoint this one committed.
    let outcome = CreateSettings::from_args(CreateArgs::from(command), extras)?
        .run()
        .map_err(super::exit::mark_retryable)?;
    retention::after_backup(&location, &access, &retention, output)?;
    Ok(outcome)
}

fn inspect(command: InspectCommand) -> anyhow::Result<Outcome> {
    let InspectCommand {
        subtrees,
        target_crypt,
        live_mail,
        mail,
        location,
        access,
    } = command;
    let count = live_mail
        .map(|root| MaildirMerge::new(root, mail).map(MailCount::new))
        .transpose()?;
    with_archive(&location, &access, async move |repo, name| {
        let summary = summarize(repo, &name, &subtrees, target_crypt.as_deref(), count).await?;
        let json = serde_json::to_string(&summary)?;
        writeln!(std::io::stdout().lock(), "{json}")?;
        Ok(Outcome::Ok)
    })
}

fn restore(command: RestoreCommand) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir()?;
    let options = ExtractOptions {
        destination: cwd.clone(),
        paths: command
            .paths
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        // The helper has no user database: owners are the archive's numbers.
        numeric_ids: true,
        replace_atomically: true,
        // A restored mailbox whose domain directory is gone gets it back as it was.
        parents: true,
        // Mail volumes hold no privileged programs.
        no_set_id_files: true,
        mirror: command.mirrors.iter().map(|m| cwd.join(m)).collect(),
        keep_existing: command.merge,
        placer: if command.merge {
            Some(Arc::new(MaildirMerge::new(
                cwd.clone(),
                command.mail.clone(),
            )?))
        } else {
            None
        },
        ..Default::default()
    };
    with_archive(
        &command.location,
        &command.access,
        async move |repo, name| {
            let archive = repo.authenticated_archive(&name).await?;
            let stats = repo.extract(&archive, &options).await?;
            let outcome = Outcome::after_warnings(&stats.warnings);
            if command.merge {
                say!(
                    "restored {} items ({} bytes); kept {} that were there",
                    stats.items,
                    stats.bytes,
                    stats.kept
                );
            } else {
                say!(
                    "restored {} items ({} bytes); removed {} entries the archive does not hold",
                    stats.items,
                    stats.bytes,
                    stats.removed
                );
            }
            Ok(outcome)
        },
    )
}

fn stream(command: StreamCommand) -> anyhow::Result<Outcome> {
    let path = command.path;
    with_archive(
        &command.location,
        &command.access,
        async move |repo, name| {
            let archive = repo.authenticated_archive(&name).await?;
            repo.stream_file(&archive, &path, &mut tokio::io::stdout())
                .await?;
            Ok(Outcome::Ok)
        },
    )
}

/// The checks the host found due; each is stamped in the state dir when the whole run is clean
/// (a run that found problems runs all of them again after the next backup).
fn check(command: CheckCommand) -> anyhow::Result<Outcome> {
    let CheckCommand {
        segments,
        archives,
        verify_data,
        repository,
        access,
    } = command;
    let location = parse_location(Some(&repository))?;
    let options = AccessArgs::from(&access).to_options()?;
    let plan = CheckPlan {
        segments,
        max_duration: None,
        archives: archives.then(ArchiveChoice::default),
        verify_data,
        verbose: false,
    };
    let outcome = signals::run_until_stopped(
        "the check only reads; nothing was changed",
        check::check(&location, options, &plan),
    )?;
    if outcome == Outcome::Ok {
        let now = now_micros().div_euclid(1_000_000);
        let mut stamps = Stamps::load(Path::new(HELPER_STATE));
        let mut done = Vec::new();
        if segments {
            done.push((Stamped::RepositoryCheck, now));
        }
        if archives {
            done.push((Stamped::ArchivesCheck, now));
        }
        if let Some(slice) = verify_data {
            if slice.is_all() {
                done.push((Stamped::DataCheck, now));
            }
            done.push((Stamped::DataCursor, i64::from(slice.end())));
        }
        for (kind, value) in done {
            if let Err(e) = stamps.set(kind, &repository, value) {
                // Unrecorded, the check runs again after the next backup: time, nothing worse.
                say!(
                    "cannot record the check in {}: {e}",
                    stamps.path().display()
                );
            }
        }
    }
    Ok(outcome)
}

/// Opens the repository of `location` for reading, runs `work` with it and the archive name,
/// and closes it.
///
/// The helper is its container's PID 1, which the kernel spares from signals it has no handler
/// for: SIGINT and SIGTERM are caught here, and end the command at once. Nothing it does needs
/// rolling back (it only reads the repository; a file it was writing has a temporary name).
fn with_archive(
    location: &ArchiveLocation,
    access: &RepositoryAccess,
    work: impl AsyncFnOnce(&OpenRepository, String) -> anyhow::Result<Outcome>,
) -> anyhow::Result<Outcome> {
    let location_parsed = parse_location(Some(&location.to_string()))?;
    let Some(name) = location_parsed.archive.clone() else {
        anyhow::bail!("{location}: no archive given (REPOSITORY::ARCHIVE)");
    };
    let options = AccessArgs::from(access).to_options()?;
    signals::run_until_stopped(
        "stopped",
        with_repository(&location_parsed, &options, Operation::Read, async |repo| {
            work(repo, name).await
        }),
    )
}
