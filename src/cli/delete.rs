//! `mailcow-borg delete REPO::ARCHIVE [ARCHIVE…]` and `delete REPO -a GLOB | --first N | --last
//! N`: borg's `delete` of archives, with its messages, `--list` lines and `--stats` block
//! (`docs/borg-cli.md` §7.4). Deleting a whole repository is left to borg on purpose: it is one
//! command an admin should type with borg's own warnings in front of them.
//!
//! The deleting itself ([`deletion`]) is shared with `prune`: count references, delete in one
//! transaction, print the statistics.

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, with_repository};
use super::archive_filter::ArchiveFilter;
use super::human;
use super::info::{STATS_HEADER, totals_text};
use super::list::archive_line;
use super::signals;
use crate::format::manifest::Operation;
use crate::ops::delete::DeletedStats;
use crate::ops::open::OpenRepository;
use crate::ops::stats::RepoStats;

#[derive(Args)]
pub struct DeleteArgs {
    /// REPOSITORY::ARCHIVE, or REPOSITORY with -a/--first/--last (default: BORG_REPO).
    location: Option<String>,
    /// More archives to delete.
    archives: Vec<String>,
    #[command(flatten)]
    filter: ArchiveFilter,
    /// Show what would be deleted; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Print each archive as it is deleted.
    #[arg(long = "list")]
    list: bool,
    /// Print what was freed and what the repository holds afterwards.
    #[arg(short = 's', long)]
    stats: bool,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteRefusal {
    #[error("Mixing archive filters and explicitly named archives is not supported.")]
    Mixed,
    #[error(
        "no archive given: mailcow-borg deletes archives (REPO::ARCHIVE, -a GLOB, --first N, --last N), never a whole repository; to delete the repository itself, use `borg delete REPO`"
    )]
    WholeRepository,
}

pub fn run(args: DeleteArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    let explicit: Vec<String> = location
        .archive
        .iter()
        .chain(&args.archives)
        .cloned()
        .collect();
    let filtered = args.filter.is_set();
    if filtered && !explicit.is_empty() {
        return Err(DeleteRefusal::Mixed.into());
    }
    if !filtered && explicit.is_empty() {
        return Err(DeleteRefusal::WholeRepository.into());
    }
    let show = Printing {
        list: args.list,
        stats: args.stats,
        dry_run: args.dry_run,
    };
    let work = async |repo: &mut OpenRepository| {
        let names = if filtered {
            args.filter.chosen(repo)
        } else {
            explicit.clone()
        };
        let mut not_found = 0;
        let mut found: Vec<String> = Vec::new();
        let total = names.len();
        for (i, name) in names.iter().enumerate() {
            let i = i + 1;
            // A name given twice is gone by its second turn, as in borg.
            match repo.manifest.archive(name.as_bytes()) {
                Some(entry) if !found.contains(name) => {
                    if show.list {
                        let verb = if show.dry_run {
                            "Would delete archive"
                        } else {
                            "Deleting archive"
                        };
                        say!(
                            "{verb}: {} ({i}/{total})",
                            archive_line(name.as_bytes(), entry)
                        );
                    }
                    found.push(name.clone());
                }
                _ => {
                    say!("Archive {name} not found ({i}/{total}).");
                    not_found += 1;
                }
            }
        }
        deletion(repo, &found, show).await?;
        Ok(if not_found == 0 {
            Outcome::Ok
        } else {
            Outcome::Warning
        })
    };
    run_deleting(&location, &options, work)
}

/// What a deleting command prints.
#[derive(Clone, Copy)]
pub struct Printing {
    pub list: bool,
    pub stats: bool,
    pub dry_run: bool,
}

/// Deletes the archives `names` (all in the manifest) with everything only they reference, or
/// under `--dry-run` only works out what that would free when `--stats` asks; prints the
/// statistics. Returns what was freed, and when anything was, what remains.
pub async fn deletion(
    repo: &mut OpenRepository,
    names: &[String],
    show: Printing,
) -> anyhow::Result<(DeletedStats, Option<RepoStats>)> {
    if names.is_empty() || (show.dry_run && !show.stats) {
        return Ok((DeletedStats::default(), None));
    }
    let plan = repo.plan_delete(names).await?;
    if !show.dry_run {
        let (_, note) = repo.delete(&plan).await?;
        if let Some(note) = note {
            say!("{note}");
        }
    }
    if show.stats {
        let size = |n: u64| human::size(-i128::from(n));
        say!(
            "{STATS_HEADER}{:15} {:>20} {:>20} {:>20}\n{}{}",
            "Deleted data:",
            size(plan.deleted.original_size),
            size(plan.deleted.compressed_size),
            size(plan.deleted.deduplicated_size),
            totals_text(&plan.remaining),
            DASHES,
        );
    }
    Ok((plan.deleted, Some(plan.remaining)))
}

const DASHES: &str =
    "------------------------------------------------------------------------------";

/// Runs `work` on the repository opened for deleting; a stop signal ends it where it is. The
/// deletion is one transaction, so stopping before its commit leaves the repository as it was
/// (the server rolls back when the session ends).
pub fn run_deleting<T>(
    location: &crate::repo::location::Location,
    options: &crate::ops::open::AccessOptions,
    work: impl AsyncFnOnce(&mut OpenRepository) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    signals::run_until_stopped(
        "nothing was deleted, unless the signal came while the deletion was being committed (then all of it was): `list` shows which",
        with_repository(location, options, Operation::Delete, work),
    )
}
