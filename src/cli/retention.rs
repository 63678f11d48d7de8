//! `backup`'s retention, run by the helper once the archive is committed: prune the archives
//! of the backup's own name (the glob the host made from `archive_name`; every other archive
//! of the repository is left alone) with `prune`'s selection and `delete`'s deletion, then
//! compact when due. What fails here fails after a good archive, and says so
//! ([`ArchiveSafe`]).

use std::path::Path;

use super::access::{AccessArgs, parse_location};
use super::compact::{APPEND_ONLY, Compacted, compact_until_stopped};
use super::delete::{Printing, deletion, run_deleting};
use crate::mailcow::access::HELPER_STATE;
use crate::mailcow::backup::OutputOptions;
use crate::mailcow::helper_command::{ArchiveLocation, RepositoryAccess, RetentionCommand};
use crate::mailcow::schedule::{Stamped, Stamps, When};
use crate::ops::delete::DeletedStats;
use crate::ops::patterns::ArchiveGlob;
use crate::ops::prune::{Decision, candidates, select};
use crate::ops::system::now_micros;

/// A retention step failed after the archive was committed.
#[derive(Debug, thiserror::Error)]
#[error("the archive {archive} was written and is safe; {step} after it failed: {detail}")]
pub struct ArchiveSafe {
    pub archive: String,
    pub step: &'static str,
    pub detail: String,
}

/// borg compact's default threshold, in percent.
const COMPACT_THRESHOLD: u8 = 10;

/// What pruning did.
struct Pruned {
    kept: Vec<String>,
    pruned: Vec<String>,
    deleted: DeletedStats,
    /// Archives in the repository after the prune.
    archives: usize,
    /// The repository's stored size after the prune, known when it deleted archives.
    repository_bytes: Option<u64>,
}

/// Prunes and compacts as `retention` says (nothing without its glob), printing what `output`
/// asks for: a JSON document with `prune` and `compact` after create's, or a short text block.
pub fn after_backup(
    location: &ArchiveLocation,
    access: &RepositoryAccess,
    retention: &RetentionCommand,
    output: OutputOptions,
) -> Result<(), ArchiveSafe> {
    let Some(glob) = &retention.prune_glob else {
        return Ok(());
    };
    let safe = |step: &'static str| {
        move |e: anyhow::Error| ArchiveSafe {
            archive: location.archive.clone(),
            step,
            detail: super::exit::one_line(&e),
        }
    };
    let text = output.stats && !output.json;
    let pruned = prune(location, access, retention, glob, text).map_err(safe("pruning"))?;
    let compacted =
        compact_if_due(location, access, retention.compact).map_err(safe("compacting"))?;
    if output.json {
        let document = serde_json::json!({
            "prune": {
                "glob": glob,
                "kept": pruned.kept,
                "pruned": pruned.pruned,
                "deleted": {
                    "original_size": pruned.deleted.original_size,
                    "compressed_size": pruned.deleted.compressed_size,
                    "deduplicated_size": pruned.deleted.deduplicated_size,
                },
                "repository": {
                    "archives": pruned.archives,
                    "unique_csize": pruned.repository_bytes,
                },
            },
            "compact": {
                "when": retention.compact.to_string(),
                "ran": compacted.is_some(),
                "append_only": compacted == Some(Compacted::AppendOnly),
            },
        });
        println!("{document}");
    } else if text {
        say!(
            "{}",
            match compacted {
                Some(Compacted::Freed) => "Compacted the repository.".to_string(),
                Some(Compacted::AppendOnly) => APPEND_ONLY.to_string(),
                None => format!("Compacting is not due (compact = {}).", retention.compact),
            }
        );
    }
    Ok(())
}

/// Prunes the archives `glob` selects by the rules, in one transaction; the archive just
/// written is never among them (a `keep_within` shorter than the backup took would choose it).
fn prune(
    location: &ArchiveLocation,
    access: &RepositoryAccess,
    retention: &RetentionCommand,
    glob: &str,
    text: bool,
) -> anyhow::Result<Pruned> {
    let rules = retention.rules()?;
    let glob_parsed = ArchiveGlob::parse(glob);
    let repository = parse_location(Some(&location.repository))?;
    let options = AccessArgs::from(access).to_options()?;
    let now = now_micros();
    run_deleting(&repository, &options, async |repo| {
        let selection = select(candidates(&repo.manifest, Some(&glob_parsed))?, &rules, now);
        let (mut kept, mut pruned) = (Vec::new(), Vec::new());
        for verdict in &selection.verdicts {
            let name = String::from_utf8_lossy(&verdict.archive.name).into_owned();
            if verdict.decision == Decision::Prune && name != location.archive {
                pruned.push(name);
            } else {
                kept.push(name);
            }
        }
        if text {
            say!(
                "Retention of the archives matching {glob}: keeping {}, pruning {}.",
                kept.len(),
                pruned.len()
            );
            for name in &pruned {
                say!("Pruned archive: {name}");
            }
        }
        let show = Printing {
            list: false,
            stats: text,
            dry_run: false,
        };
        let (deleted, remaining) = deletion(repo, &pruned, show).await?;
        Ok(Pruned {
            kept,
            pruned,
            deleted,
            archives: repo.manifest.archives.len(),
            repository_bytes: remaining.map(|r| r.unique_csize),
        })
    })
}

/// Compacts when `when` says it is due; what it found, or `None` when it was not due.
fn compact_if_due(
    location: &ArchiveLocation,
    access: &RepositoryAccess,
    when: When,
) -> anyhow::Result<Option<Compacted>> {
    // The state dir outlives the helper.
    let mut stamps = Stamps::load(Path::new(HELPER_STATE));
    let now = now_micros().div_euclid(1_000_000);
    if !when.is_due(stamps.get(Stamped::Compact, &location.repository), now) {
        return Ok(None);
    }
    let repository = parse_location(Some(&location.repository))?;
    let options = AccessArgs::from(access).to_options()?;
    let compacted = compact_until_stopped(&repository, options, COMPACT_THRESHOLD)?;
    // Unrecorded, the next backup compacts again: wasted time, nothing worse.
    if let Err(e) = stamps.set(Stamped::Compact, &location.repository, now) {
        say!(
            "cannot record the compaction in {}: {e}",
            stamps.path().display()
        );
    }
    Ok(Some(compacted))
}
