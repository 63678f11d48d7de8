//! `mailcow-borg prune [REPO]`: borg's retention rules (`docs/borg-cli.md` §7.1–7.3), with
//! borg's flags and borg's `--list` and `-v` lines. Which archives stay is `ops::prune`'s
//! decision; this file turns the flags into its rules and prints its verdicts.

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, parse_location, runtime, with_repository};
use super::human;
use crate::format::manifest::Operation;
use crate::format::text::with_question_marks as remove_surrogates;
use crate::ops::patterns::ArchiveGlob;
use crate::ops::placeholders::{PlaceholderValues, expand};
use crate::ops::prune::{
    Decision, Period, PruneError, PruneRules, RulesError, Selection, Verdict, candidates,
    manifest_counts, python_int, select,
};
use crate::ops::system::now_micros;

#[derive(Args)]
pub struct PruneArgs {
    /// REPOSITORY (default: BORG_REPO).
    location: Option<String>,
    /// Change nothing; show what would be pruned (with --list).
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// List every archive with what happens to it and why (on stderr, as borg does).
    #[arg(long)]
    list: bool,
    /// Show statistics of the deleted data.
    #[arg(short = 's', long)]
    stats: bool,
    /// Keep every archive of this interval before now: <int><H|d|w|m|y> (m = 31 days,
    /// y = 365 days).
    #[arg(long, value_name = "INTERVAL")]
    keep_within: Option<String>,
    /// Keep the last N archives (the same as --keep-secondly).
    #[arg(long, visible_alias = "keep-secondly", value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_last: i64,
    /// Number of minutely archives to keep (N < 0: no limit).
    #[arg(long, value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_minutely: i64,
    /// Number of hourly archives to keep.
    #[arg(short = 'H', long, value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_hourly: i64,
    /// Number of daily archives to keep.
    #[arg(short = 'd', long, value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_daily: i64,
    /// Number of weekly (ISO week) archives to keep.
    #[arg(short = 'w', long, value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_weekly: i64,
    /// Number of monthly archives to keep.
    #[arg(short = 'm', long, value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_monthly: i64,
    /// Number of quarterly archives to keep, quarters of 13 ISO weeks.
    #[arg(long = "keep-13weekly", value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_13weekly: i64,
    /// Number of quarterly archives to keep, quarters of 3 months.
    #[arg(long = "keep-3monthly", value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_3monthly: i64,
    /// Number of yearly archives to keep.
    #[arg(short = 'y', long, value_name = "N", value_parser = count, allow_negative_numbers = true, default_value_t = 0)]
    keep_yearly: i64,
    /// Only archives whose names match this glob (and their checkpoints); placeholders work.
    #[arg(short = 'a', long, value_name = "GLOB")]
    glob_archives: Option<String>,
    #[command(flatten)]
    access: AccessArgs,
}

/// A rule's N as Python's `int` reads it (borg's `type=int`).
fn count(text: &str) -> Result<i64, String> {
    python_int(text).ok_or_else(|| format!("invalid int value: '{text}'"))
}

impl PruneArgs {
    /// The flags as checked rules: the one conversion.
    fn rules(&self) -> Result<PruneRules, RulesError> {
        PruneRules::new(
            self.keep_within.as_deref(),
            [
                (Period::Secondly, self.keep_last),
                (Period::Minutely, self.keep_minutely),
                (Period::Hourly, self.keep_hourly),
                (Period::Daily, self.keep_daily),
                (Period::Weekly, self.keep_weekly),
                (Period::Monthly, self.keep_monthly),
                (Period::Quarterly13Weekly, self.keep_13weekly),
                (Period::Quarterly3Monthly, self.keep_3monthly),
                (Period::Yearly, self.keep_yearly),
            ],
        )
    }
}

pub fn run(args: PruneArgs) -> anyhow::Result<Outcome> {
    if args.dry_run && args.stats {
        // borg's words; a dry run computes no statistics.
        say!("Ignoring --stats. It is not supported when using --dry-run.");
    }
    // Everything the command line can get wrong is refused before the repository is contacted.
    let rules = args.rules()?;
    let location = parse_location(args.location.as_deref())?;
    let now = now_micros();
    let glob = match &args.glob_archives {
        Some(text) => Some(ArchiveGlob::parse(&expand(
            text,
            &PlaceholderValues::here(now),
        )?)),
        None => None,
    };
    let options = args.access.to_options()?;
    // borg takes the exclusive lock for a dry run too: what it shows is what a run would do.
    runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Delete,
        async |repo| {
            let selection = select(candidates(&repo.manifest, glob.as_ref())?, &rules, now);
            if args.access.info {
                let (archives, checkpoints) = manifest_counts(&repo.manifest);
                let t = selection.tally();
                say!(
                    "Repository contains {archives} normal archives and {checkpoints} checkpoint archives."
                );
                say!(
                    "Applying rules to the matching {} archives and {} checkpoints...",
                    t.archives,
                    t.checkpoints
                );
                say!(
                    "Keeping {} archives and {} checkpoints, pruning {} archives and {} checkpoints.",
                    t.kept_archives,
                    t.kept_checkpoints,
                    t.pruned_archives,
                    t.pruned_checkpoints
                );
            }
            let mut report = ListReport::new(&selection, args.list, args.dry_run);
            if args.dry_run {
                for _ in selection.pruned() {
                    report.pruned();
                }
            } else {
                // Here `repo.delete_archives` (ops/delete.rs) deletes `selection.pruned()`,
                // newest first, calling `report.pruned()` as each one goes; then `--stats`.
                return Err(PruneError::DeletionUnavailable.into());
            }
            report.finish();
            Ok(Outcome::Ok)
        },
    ))
}

/// The `--list` lines, newest first: each kept archive as the walk passes it, each pruned one
/// when it is deleted (or, in a dry run, would be) — borg's interleaving.
struct ListReport<'s> {
    verdicts: std::slice::Iter<'s, Verdict>,
    shown: bool,
    dry_run: bool,
    pruned: usize,
    to_prune: usize,
}

impl<'s> ListReport<'s> {
    fn new(selection: &'s Selection, shown: bool, dry_run: bool) -> ListReport<'s> {
        ListReport {
            verdicts: selection.verdicts.iter(),
            shown,
            dry_run,
            pruned: 0,
            to_prune: selection.pruned().count(),
        }
    }

    /// The next archive of [`Selection::pruned`] is gone (or would be).
    fn pruned(&mut self) {
        while let Some(verdict) = self.verdicts.next() {
            if verdict.decision == Decision::Prune {
                self.pruned += 1;
                let message = if self.dry_run {
                    "Would prune:".to_string()
                } else {
                    format!("Pruning archive ({}/{}):", self.pruned, self.to_prune)
                };
                self.line(&message, verdict);
                return;
            }
            self.kept(verdict);
        }
    }

    /// The kept archives after the last pruned one.
    fn finish(mut self) {
        while let Some(verdict) = self.verdicts.next() {
            self.kept(verdict);
        }
    }

    fn kept(&self, verdict: &Verdict) {
        match verdict.decision {
            Decision::Keep { reason, number } => self.line(
                &format!("Keeping archive (rule: {reason} #{number}):"),
                verdict,
            ),
            Decision::KeepCheckpoint => self.line("Keeping checkpoint archive:", verdict),
            // Announced by `pruned`; one never announced was not deleted, and is not listed.
            Decision::Prune => {}
        }
    }

    fn line(&self, message: &str, verdict: &Verdict) {
        if self.shown {
            let archive = &verdict.archive;
            let name = remove_surrogates(&archive.name);
            let shown = human::archive_line(&name, archive.start, &archive.id);
            say!("{message:<44} {shown}");
        }
    }
}
