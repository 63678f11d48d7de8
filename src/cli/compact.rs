//! `mailcow-borg compact [REPO]`: frees the space that deleted archives took, like `borg
//! compact` — the repository server rewrites its sparse segments; no key is needed
//! (`docs/borg-cli.md` §7.5).
//!
//! The server reports what it freed in a log line ("compaction freed about …"), shown with
//! `-v`. An append-only repository compacts nothing and says nothing, so a compaction that ends
//! without that line is one in an append-only repository, which we say (borg does not: its
//! users wonder why prune freed no space).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::Outcome;
use super::access::AccessArgs;
use super::signals;
use crate::ops::open::{AccessOptions, compact};
use crate::repo::location::Location;
use crate::repo::transport::ServerLine;

#[derive(Args)]
pub struct CompactArgs {
    /// REPOSITORY (default: BORG_REPO).
    location: Option<String>,
    /// Rewrite a segment when at least this percentage of it is freeable (0: every segment with
    /// anything to free; 100: none).
    #[arg(long, default_value_t = 10, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    threshold: u8,
    /// Do nothing (borg has it, for scripts).
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    access: AccessArgs,
}

/// How the server's report of freed space begins (`repository.py: compact_segments`).
const FREED: &str = "compaction freed about";

/// What compacting found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compacted {
    Freed,
    /// The server did not compact: the repository is append-only.
    AppendOnly,
}

pub fn run(args: CompactArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    if args.dry_run {
        return Ok(Outcome::Ok);
    }
    if compact_until_stopped(&location, options, args.threshold)? == Compacted::AppendOnly {
        say!("{APPEND_ONLY}");
    }
    Ok(Outcome::Ok)
}

/// [`compact_reporting`] in a runtime of its own, ended at once by a stop signal (which
/// `backup`'s helper, its container's PID 1, would otherwise not even notice).
pub fn compact_until_stopped(
    location: &Location,
    options: AccessOptions,
    threshold_percent: u8,
) -> anyhow::Result<Compacted> {
    signals::run_until_stopped(
        "the server finishes or drops the compaction on its own; no data is lost either way",
        compact_reporting(location, options, threshold_percent),
    )
}

/// Said when an append-only repository freed nothing.
pub const APPEND_ONLY: &str = "the repository is append-only (borg init --append-only, or borg serve --append-only on the server): compacting freed nothing, and deleted archives' data stays until the repository is compacted without append-only";

/// Compacts and tells whether the server did: `options`' server log is wrapped to notice the
/// server's report, which is asked for even when it is not shown.
pub async fn compact_reporting(
    location: &Location,
    mut options: AccessOptions,
    threshold_percent: u8,
) -> anyhow::Result<Compacted> {
    let reported = Arc::new(AtomicBool::new(false));
    let shown = options.server_log.clone();
    let noticed = reported.clone();
    options.server_log = Arc::new(move |line: &ServerLine| {
        if line.message.starts_with(FREED) {
            noticed.store(true, Ordering::Relaxed);
        }
        shown(line)
    });
    if !options.ssh.serve_args.iter().any(|a| a == "--info") {
        options.ssh.serve_args.push("--info".into());
    }
    compact(location, &options, f64::from(threshold_percent) / 100.0).await?;
    // The server has exited; a local server's stderr is a pipe of its own and may trail.
    for _ in 0..20 {
        if reported.load(Ordering::Relaxed) {
            return Ok(Compacted::Freed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Compacted::AppendOnly)
}
