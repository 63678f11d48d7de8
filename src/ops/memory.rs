//! The memory a run may use, and a watch that ends it cleanly before the kernel would.
//!
//! The mailcow helper runs under a cgroup limit (`helper_memory_mib`), and so may a `create`
//! started by systemd with `MemoryMax=`. A process that reaches its limit is killed by the
//! kernel mid-write, which tells the admin nothing and leaves nothing behind but a checkpoint.
//! What a backup holds grows with the number of files in its caches (see `create::files_cache`
//! and `chunk_index`: about 150 bytes a file), so a run can know before it starts whether the
//! caches it is about to load fit — their size on disk is about their size in memory — and,
//! while it runs, watch its resident memory and stop with a clear error short of the limit.

use std::path::Path;

use crate::error::ErrorKind;

/// What a backup holds besides its caches, at the least: read-ahead batches, chunk buffers of
/// the workers, the upload window, the runtime. Measured peaks of runs with small caches are
/// 35–95 MiB; this is the floor below which no run is started.
const BASE: u64 = 48 << 20;

/// The memory this process may use, when a cgroup limits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    limit: u64,
}

/// A run would need, or came close to, more memory than it may use.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    #[error(
        "this backup needs about {needed_mib} MiB of memory, {what} included, more than the \
         {limit_mib} MiB it may use: raise helper_memory_mib (or the memory limit it runs under) \
         to at least {suggested_mib} and run again"
    )]
    TooSmall {
        what: String,
        needed_mib: u64,
        limit_mib: u64,
        suggested_mib: u64,
    },
    #[error(
        "the backup stopped at {resident_mib} MiB of memory, close to the {limit_mib} MiB it may \
         use (plan 100 MiB plus 200 MiB per million files): raise helper_memory_mib (or the \
         memory limit it runs under) and run again; nothing was committed"
    )]
    Reached { resident_mib: u64, limit_mib: u64 },
}

impl MemoryError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Environment
    }
}

const MIB: u64 = 1 << 20;

impl MemoryBudget {
    /// The limit of this process's memory cgroup (v2, then v1), if it has one.
    pub fn of_this_process() -> Option<MemoryBudget> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let text = read("/sys/fs/cgroup/memory.max")
            .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
        MemoryBudget::from_cgroup(&text)
    }

    /// v2 says `max` when there is no limit; v1 gives a number near 2⁶³.
    pub(crate) fn from_cgroup(text: &str) -> Option<MemoryBudget> {
        let limit: u64 = text.trim().parse().ok()?;
        (limit < 1 << 60).then_some(MemoryBudget { limit })
    }

    /// Whether the caches in `files` (their size on disk; missing ones count nothing) fit
    /// beside the rest of a run. `what` names them for the message.
    pub fn check_caches(&self, files: &[&Path], what: &str) -> Result<(), MemoryError> {
        let on_disk: u64 = files
            .iter()
            .filter_map(|file| std::fs::metadata(file).ok())
            .map(|meta| meta.len())
            .sum();
        // In memory a files-cache entry is 112 bytes to the file's 102, a chunk 40 to 40.
        let needed = BASE + on_disk + on_disk / 8;
        if needed <= self.limit {
            return Ok(());
        }
        Err(MemoryError::TooSmall {
            what: what.to_string(),
            needed_mib: needed.div_ceil(MIB),
            limit_mib: self.limit / MIB,
            // Room for the files this run adds.
            suggested_mib: (needed + needed / 4).div_ceil(MIB).next_multiple_of(64),
        })
    }

    /// The resident size past which a run stops: an eighth (at least 32 MiB) short of the
    /// limit, the growth a watch that looks a few times a second can miss.
    fn threshold(&self) -> u64 {
        self.limit - (self.limit / 8).max(32 * MIB).min(self.limit / 2)
    }

    /// An error if this process's resident memory is past the threshold.
    pub fn check_resident(&self) -> Result<(), MemoryError> {
        match resident() {
            Some(resident) if resident > self.threshold() => Err(MemoryError::Reached {
                resident_mib: resident / MIB,
                limit_mib: self.limit / MIB,
            }),
            _ => Ok(()),
        }
    }
}

/// This process's resident memory (`VmRSS`).
fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_parse_and_no_limit_is_none() {
        assert_eq!(
            MemoryBudget::from_cgroup("2147483648\n"),
            Some(MemoryBudget { limit: 2 << 30 })
        );
        assert_eq!(MemoryBudget::from_cgroup("max\n"), None);
        assert_eq!(MemoryBudget::from_cgroup("9223372036854771712\n"), None);
    }

    #[test]
    fn caches_that_do_not_fit_are_refused_with_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("files");
        std::fs::File::create(&cache)
            .unwrap()
            .set_len(200 * MIB)
            .unwrap();
        let missing = dir.path().join("chunks");
        let budget = MemoryBudget { limit: 256 * MIB };
        let error = budget
            .check_caches(&[&cache, &missing], "the files cache")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "this backup needs about 273 MiB of memory, the files cache included, more than the \
             256 MiB it may use: raise helper_memory_mib (or the memory limit it runs under) to \
             at least 384 and run again"
        );
        let roomy = MemoryBudget { limit: 300 * MIB };
        assert_eq!(roomy.check_caches(&[&cache, &missing], "caches"), Ok(()));
    }

    #[test]
    fn the_resident_watch_trips_only_past_its_threshold() {
        let now = resident().unwrap();
        let tight = MemoryBudget { limit: now };
        assert!(matches!(
            tight.check_resident(),
            Err(MemoryError::Reached { .. })
        ));
        let roomy = MemoryBudget {
            limit: now * 2 + 64 * MIB,
        };
        assert_eq!(roomy.check_resident(), Ok(()));
    }
}
