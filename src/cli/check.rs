//! `mailcow-borg check [REPO[::ARCHIVE]]`: borg 1.4's `borg check` without `--repair`
//! (`docs/borg-cli.md` §8): the repository server's own check over RPC, then the archive check
//! of [`crate::ops::check`], with borg's lines and exit codes (0 clean, 1 problems, 2 error).
//!
//! The server's check reports through its log, which reaches us with the session's stderr and
//! is shown as borg shows it (`Remote: …`, informational lines with `-v`). Its answer is only
//! whether it found errors; the findings of the archive check come as typed values and are
//! printed here, in borg's words, problems always and progress with `-v`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::Outcome;
use super::access::AccessArgs;
use super::archive_filter::ArchiveFilter;
use super::run_log::RunLog;
use super::signals;
use crate::format::envelope::EnvelopeError;
use crate::format::key::hex;
use crate::format::manifest::ManifestError;
use crate::format::tam::TamError;
use crate::ops::check::{ArchiveSelection, ArchiveTamProblem, CheckOptions, Finding};
use crate::ops::id_slice::IdSlice;
use crate::ops::items::ReadError;
use crate::ops::open::{AccessOptions, OpenError, open_for_check};
use crate::repo::location::Location;
use crate::repo::repository::RepoError;
use crate::repo::transport::ServerLine;

#[derive(Args)]
pub struct CheckArgs {
    /// REPOSITORY or REPOSITORY::ARCHIVE (default: BORG_REPO).
    location: Option<String>,
    /// Only the repository server's check (segment files and index); no key needed.
    #[arg(long)]
    repository_only: bool,
    /// Only the archive check.
    #[arg(long)]
    archives_only: bool,
    /// Also decrypt and authenticate every object in the repository (reads all data).
    #[arg(long)]
    verify_data: bool,
    /// Refused: repairs are borg's (`borg check --repair`).
    #[arg(long)]
    repair: bool,
    /// A partial repository check that stops after SECONDS and goes on from there next time
    /// (with --repository-only).
    #[arg(long, value_name = "SECONDS")]
    max_duration: Option<u64>,
    #[command(flatten)]
    filter: ArchiveFilter,
    #[command(flatten)]
    access: AccessArgs,
}

/// Refusals before anything is contacted, in borg's words where borg has them.
#[derive(Debug, thiserror::Error)]
pub enum CheckRefusal {
    #[error(
        "mailcow-borg does not repair repositories, and nothing was changed; run `borg check --repair REPO` (borg 1.4) to repair, after reading its warnings"
    )]
    Repair,
    #[error(
        "--repository-only contradicts --first, --last, --glob-archives, --prefix and --verify-data arguments."
    )]
    RepositoryOnlyContradicts,
    #[error("--repository-only is required for --max-duration support.")]
    MaxDurationNeedsRepositoryOnly,
}

/// How the server's last line of its check begins ("Finished full repository check, …").
const SERVER_CHECK_DONE: &str = "Finished ";

/// What one check does, settled from `check`'s flags or from `backup`'s schedule
/// (`agent check`).
pub struct CheckPlan {
    /// The server's check of its segments and index, and how long it may take.
    pub segments: bool,
    pub max_duration: Option<u64>,
    /// The archive check, of these archives; `None`: no archive is checked.
    pub archives: Option<ArchiveChoice>,
    /// Verify the data of the objects in this slice of the id space.
    pub verify_data: Option<IdSlice>,
    /// Progress lines (`-v`).
    pub verbose: bool,
}

/// Which archives the archive check reads: all, unless an archive is named or filtered.
#[derive(Default)]
pub struct ArchiveChoice {
    pub name: Option<String>,
    pub filter: ArchiveFilter,
}

pub fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    if args.repair {
        return Err(CheckRefusal::Repair.into());
    }
    if args.repository_only && (args.verify_data || args.filter.is_set()) {
        return Err(CheckRefusal::RepositoryOnlyContradicts.into());
    }
    if args.max_duration.is_some_and(|s| s > 0) && !args.repository_only {
        return Err(CheckRefusal::MaxDurationNeedsRepositoryOnly.into());
    }
    let (location, options, notify) = args.access.resolve_with_notify(args.location.as_deref())?;
    let log = RunLog::begin("check", notify);
    let plan = CheckPlan {
        segments: !args.archives_only,
        max_duration: args.max_duration,
        archives: (!args.repository_only).then(|| ArchiveChoice {
            name: location.archive.clone(),
            filter: args.filter,
        }),
        verify_data: args.verify_data.then_some(IdSlice::ALL),
        verbose: args.access.info,
    };
    let result = signals::run_until_stopped(
        "the check only reads; nothing was changed",
        check(&location, options, &plan),
    );
    log.end(location.archive.clone(), None, None, result)
}

/// Runs `plan` on the repository at `location`, printing what it finds as borg does: 0 clean,
/// 1 problems found.
pub async fn check(
    location: &Location,
    mut options: AccessOptions,
    plan: &CheckPlan,
) -> anyhow::Result<Outcome> {
    let verbose = plan.verbose;
    // The server's check reports through its log at INFO and up; its last line says it is done,
    // and our own lines wait for it (the log comes on another stream than the answer).
    let server_done = Arc::new(AtomicBool::new(false));
    let shown = options.server_log.clone();
    let done = server_done.clone();
    options.server_log = Arc::new(move |line: &ServerLine| {
        if line.message.starts_with(SERVER_CHECK_DONE) && line.message.contains("repository check")
        {
            done.store(true, Ordering::Relaxed);
        }
        shown(line)
    });
    if !options.ssh.serve_args.iter().any(|a| a == "--info") {
        options.ssh.serve_args.push("--info".into());
    }
    let (repo, manifest_damage) = open_for_check(location, &options).await?;
    let outcome: anyhow::Result<Outcome> = async {
        if plan.segments {
            let clean = repo.repo.check(plan.max_duration).await?;
            for _ in 0..40 {
                if server_done.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !clean {
                return Ok(Outcome::Warning);
            }
        }
        let selection = match &plan.archives {
            None if plan.verify_data.is_none() => return Ok(Outcome::Ok),
            None => ArchiveSelection::None,
            Some(ArchiveChoice {
                name: Some(name), ..
            }) => ArchiveSelection::Some(vec![name.clone()]),
            Some(ArchiveChoice { filter, .. }) if !filter.is_set() => ArchiveSelection::All,
            Some(ArchiveChoice { filter, .. }) => {
                let names = filter.chosen(&repo);
                selection_warnings(filter, names.len());
                ArchiveSelection::Some(names)
            }
        };
        let archives_checked = selection != ArchiveSelection::None;
        let check_options = CheckOptions {
            verify_data: plan.verify_data,
            archives: selection,
        };
        if archives_checked {
            say_info(verbose, "Starting archive consistency check...");
        }
        let mut report = |finding: Finding| show(&finding, manifest_damage.as_ref(), verbose);
        let summary = repo
            .check(manifest_damage.is_none(), &check_options, &mut report)
            .await?;
        if summary.problems > 0 {
            if archives_checked {
                say!("Archive consistency check complete, problems found.");
            }
            Ok(Outcome::Warning)
        } else {
            if archives_checked {
                say_info(
                    verbose,
                    "Archive consistency check complete, no problems found.",
                );
            }
            Ok(Outcome::Ok)
        }
    }
    .await;
    let closed = repo.close().await;
    let outcome = outcome?;
    closed?;
    Ok(outcome)
}

/// borg's warnings when `-a`, `--first` or `--last` found fewer archives than asked.
fn selection_warnings(args: &ArchiveFilter, found: usize) {
    if let Some(glob) = &args.glob
        && found == 0
    {
        say!("--glob-archives {glob} does not match any archives");
    }
    if let Some(first) = args.first.filter(|&n| found < n) {
        say!("--first {first} archives: only found {found} archives");
    }
    if let Some(last) = args.last.filter(|&n| found < n) {
        say!("--last {last} archives: only found {found} archives");
    }
}

fn say_info(verbose: bool, line: &str) {
    if verbose {
        say!("{line}");
    }
}

/// Prints a finding as borg logs it: problems always, progress with `-v`.
fn show(finding: &Finding, manifest_damage: Option<&OpenError>, verbose: bool) {
    let line = match finding {
        Finding::NoData => {
            "Repository contains no apparent data at all, cannot continue check/repair.".into()
        }
        Finding::VerifyStarted => {
            return say_info(
                verbose,
                "Starting cryptographic data integrity verification...",
            );
        }
        Finding::ObjectUnreadable { id, error } => {
            format!("chunk {}: {}", hex(id), repo_error_text(error))
        }
        Finding::ObjectDamaged { id, error } => {
            format!(
                "chunk {}, integrity error: {}",
                hex(id),
                envelope_text(error)
            )
        }
        Finding::VerifyFinished { verified, errors } => {
            let line = format!(
                "Finished cryptographic data integrity verification, verified {verified} chunks with {errors} integrity errors."
            );
            if *errors == 0 {
                return say_info(verbose, &line);
            }
            say!(
                "Found defect chunks. With --repair, they would get deleted, so affected files could get repaired then and maybe healed later."
            );
            line
        }
        Finding::ManifestUntrusted => {
            let why = manifest_damage.map_or_else(String::new, manifest_text);
            format!(
                "Repository manifest is corrupted: {why}\nWithout a trusted manifest no archive is checked; `borg check --repair` rebuilds it from the archives."
            )
        }
        Finding::ArchiveNotFound(name) => format!("Archive '{name}' not found."),
        Finding::Analyzing { name, index, total } => {
            return say_info(
                verbose,
                &format!("Analyzing archive {name} ({index}/{total})"),
            );
        }
        Finding::ArchiveMissing { id } => {
            format!("Archive metadata block {} is missing!", hex(id))
        }
        Finding::ArchiveCorrupted { id, error } => format!(
            "Archive metadata block {} is corrupted: {}",
            hex(id),
            read_error_text(error)
        ),
        Finding::ArchiveUnauthenticated { name, problem } => {
            let why = match problem {
                ArchiveTamProblem::Missing => {
                    format!(
                        "Archive '{name}' is unauthenticated, but it is required for this repository."
                    )
                }
                ArchiveTamProblem::Invalid(crate::format::archive::ArchiveError::Tam(
                    TamError::Invalid(_),
                )) => "Data integrity error: Archive authentication did not verify".into(),
                ArchiveTamProblem::Invalid(other) => format!("Data integrity error: {other}"),
            };
            format!(
                "Archive TAM authentication issue for archive {name}: {why}\nThis archive would be *removed* / *deleted* when using --repair!"
            )
        }
        Finding::ItemChunkMissing { index, id } => {
            format!(
                "item metadata chunk missing [chunk: {index:06}_{}]",
                hex(id)
            )
        }
        Finding::ItemChunkDamaged { index, id, error } => {
            format!("{} [chunk: {index:06}_{}]", read_error_text(error), hex(id))
        }
        Finding::ItemsUndecodable { archive, error } => {
            format!(
                "{archive}: Did not get expected metadata when unpacking item metadata ({error})"
            )
        }
        Finding::MissingFileChunk {
            archive,
            path,
            start,
            end,
            id,
        } => format!(
            "{archive}: {}: New missing file chunk detected (Byte {start}-{end}, Chunk {}). Would replace it with all-zero chunk with --repair.",
            String::from_utf8_lossy(path),
            hex(id)
        ),
        Finding::DamagedFileChunk {
            archive,
            path,
            start,
            end,
            id,
        } => format!(
            "{archive}: {}: damaged file chunk (Byte {start}-{end}, Chunk {}): the file cannot be restored intact.",
            String::from_utf8_lossy(path),
            hex(id)
        ),
        Finding::Orphans(0) => return,
        Finding::Orphans(n) => format!("{n} orphaned objects found!"),
        Finding::OrphansSkipped => {
            return say_info(
                verbose,
                "Orphaned objects check skipped (needs all archives checked).",
            );
        }
    };
    say!("{line}");
}

/// An object's envelope failure in borg's words (`key.py: decrypt, assert_id`; a MAC failure as
/// borg 1.4.5's check prints it, verified).
fn envelope_text(error: &EnvelopeError) -> String {
    match error {
        EnvelopeError::MacMismatch { .. } => "MAC Authentication failed".into(),
        EnvelopeError::IdMismatch { id } => {
            format!("Data integrity error: Chunk {id}: id verification failed")
        }
        EnvelopeError::WrongType { id, .. } => {
            format!("Data integrity error: Chunk {id}: Invalid encryption envelope")
        }
        other => format!("Data integrity error: {other}"),
    }
}

fn repo_error_text(error: &RepoError) -> String {
    match error {
        // The server's own integrity errors keep their text ("Segment entry checksum mismatch …").
        RepoError::Other { class, message } if class == "IntegrityError" => {
            format!("Data integrity error: {message}")
        }
        other => other.to_string(),
    }
}

fn read_error_text(error: &ReadError) -> String {
    match error {
        ReadError::Damaged { source, .. } => envelope_text(source),
        ReadError::Fetch { source, .. } => repo_error_text(source),
        other => other.to_string(),
    }
}

fn manifest_text(damage: &OpenError) -> String {
    match damage {
        OpenError::ManifestInvalid(ManifestError::TamMissing) => {
            "Manifest is unauthenticated, but it is required for this repository.".into()
        }
        OpenError::ManifestInvalid(ManifestError::Tam(TamError::Invalid(_))) => {
            "Data integrity error: Manifest authentication did not verify".into()
        }
        OpenError::Manifest(envelope) => envelope_text(envelope),
        other => other.to_string(),
    }
}
