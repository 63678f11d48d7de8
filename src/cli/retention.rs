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
use crate::mailcow::retention::CompactWhen;
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

/// Where the helper remembers its last compaction (in the state dir, which outlives it).
const COMPACT_STAMP: &str = "last-compact";

/// borg compact's default threshold, in percent.
const COMPACT_THRESHOLD: u8 = 10;

/// What pruning did.
struct Pruned {
    kept: Vec<String>,
    pruned: Vec<String>,
    deleted: DeletedStats,
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
        let deleted = deletion(repo, &pruned, show).await?;
        Ok(Pruned {
            kept,
            pruned,
            deleted,
        })
    })
}

/// Compacts when `when` says it is due; what it found, or `None` when it was not due.
fn compact_if_due(
    location: &ArchiveLocation,
    access: &RepositoryAccess,
    when: CompactWhen,
) -> anyhow::Result<Option<Compacted>> {
    let stamp = Path::new(HELPER_STATE).join(COMPACT_STAMP);
    let now = now_micros().div_euclid(1_000_000);
    if !due(when, || last_compaction(&stamp, &location.repository), now) {
        return Ok(None);
    }
    let repository = parse_location(Some(&location.repository))?;
    let options = AccessArgs::from(access).to_options()?;
    let compacted = compact_until_stopped(&repository, options, COMPACT_THRESHOLD)?;
    // Unrecorded, the next backup compacts again: wasted time, nothing worse.
    if let Err(e) = std::fs::write(&stamp, format!("{now} {}\n", location.repository)) {
        say!("cannot record the compaction in {}: {e}", stamp.display());
    }
    Ok(Some(compacted))
}

/// Whether compacting is due at `now` (Unix seconds); `last` reads when it last ran.
fn due(when: CompactWhen, last: impl FnOnce() -> Option<i64>, now: i64) -> bool {
    match (when, when.interval_seconds()) {
        (CompactWhen::Never, _) => false,
        (_, Some(interval)) => {
            last().is_none_or(|last| now.saturating_sub(last) >= interval as i64)
        }
        _ => true,
    }
}

/// When this repository was last compacted (Unix seconds), from the stamp: "<seconds>
/// <repository>". Another repository's stamp does not count.
fn last_compaction(stamp: &Path, repository: &str) -> Option<i64> {
    let text = std::fs::read_to_string(stamp).ok()?;
    let (seconds, stamped) = text.trim_end().split_once(' ')?;
    (stamped == repository)
        .then(|| seconds.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_is_due_as_configured_and_per_repository() {
        let week = CompactWhen::Every {
            amount: 7,
            unit: 'd',
        };
        let now = 1_800_000_000;
        assert!(due(CompactWhen::Always, || Some(now), now));
        assert!(!due(CompactWhen::Never, || None, now));
        assert!(due(week, || None, now));
        assert!(!due(week, || Some(now - 6 * 86_400), now));
        assert!(due(week, || Some(now - 7 * 86_400), now));

        let dir = tempfile::tempdir().unwrap();
        let stamp = dir.path().join(COMPACT_STAMP);
        assert_eq!(last_compaction(&stamp, "ssh://h/./r"), None);
        std::fs::write(&stamp, "1700000000 ssh://h/./r\n").unwrap();
        assert_eq!(last_compaction(&stamp, "ssh://h/./r"), Some(1_700_000_000));
        assert_eq!(last_compaction(&stamp, "ssh://h/./other"), None);
        std::fs::write(&stamp, "garbage").unwrap();
        assert_eq!(last_compaction(&stamp, "ssh://h/./r"), None);
    }
}
