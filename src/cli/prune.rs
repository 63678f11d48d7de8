//! `mailcow-borg prune [REPO]`: borg's retention rules (`docs/borg-cli.md` §7.1–7.3), with
//! borg's flags and borg's `--list` and `-v` lines. Which archives stay is `ops::prune`'s
//! decision; this file turns the flags into its rules, prints its verdicts and hands the pruned
//! archives to `delete`'s deletion.

use clap::Args;

use super::Outcome;
use super::access::AccessArgs;
use super::delete::{Printing, deletion, run_deleting};
use super::human;
use super::run_log::RunLog;
use crate::format::text::with_question_marks as remove_surrogates;
use crate::ops::open::OpenRepository;
use crate::ops::patterns::ArchiveGlob;
use crate::ops::placeholders::{PlaceholderValues, expand};
use crate::ops::prune::{
    Decision, Period, PruneRules, RulesError, Selection, Verdict, candidates, manifest_counts,
    python_int, select,
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
    let (location, options, notify) = args.access.resolve_with_notify(args.location.as_deref())?;
    let now = now_micros();
    let glob = match &args.glob_archives {
        Some(text) => Some(ArchiveGlob::parse(&expand(
            text,
            &PlaceholderValues::here(now),
        )?)),
        None => None,
    };
    // A dry run only shows what would go: nothing to tell anyone.
    let log = RunLog::begin("prune", notify.filter(|_| !args.dry_run));
    // borg takes the exclusive lock for a dry run too: what it shows is what a run would do.
    let work = async |repo: &mut OpenRepository| {
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
        if args.list {
            // All before the deletion, which is one transaction (delete's): borg prints each
            // line after deleting that archive and commits every 30 minutes; what remains is
            // the same.
            print_list(&selection, args.dry_run);
        }
        let names: Vec<String> = selection
            .pruned()
            .map(|archive| String::from_utf8_lossy(&archive.name).into_owned())
            .collect();
        let show = Printing {
            list: args.list,
            stats: args.stats && !args.dry_run,
            dry_run: args.dry_run,
        };
        deletion(repo, &names, show).await?;
        Ok(Outcome::Ok)
    };
    log.end(None, None, None, run_deleting(&location, &options, work))
}

/// borg's `--list` lines, newest first, checkpoints among the others.
fn print_list(selection: &Selection, dry_run: bool) {
    let to_prune = selection.pruned().count();
    let mut pruned = 0;
    for Verdict { archive, decision } in &selection.verdicts {
        let message = match decision {
            Decision::Keep { reason, number } => {
                format!("Keeping archive (rule: {reason} #{number}):")
            }
            Decision::KeepCheckpoint => "Keeping checkpoint archive:".into(),
            Decision::Prune if dry_run => "Would prune:".into(),
            Decision::Prune => {
                pruned += 1;
                format!("Pruning archive ({pruned}/{to_prune}):")
            }
        };
        let name = remove_surrogates(&archive.name);
        let shown = human::archive_line(&name, archive.start, &archive.id);
        say!("{message:<44} {shown}");
    }
}
