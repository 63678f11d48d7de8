//! The files cache: which files are unchanged since an earlier run, so they are not read again.
//!
//! It follows borg's rules (`cache.py: file_known_and_unchanged / memorize_file / _write_files`;
//! docs/create-notes.md §4), because borg users tune them and know their quirks:
//!
//! - the key is a hash of the absolute path as walked, so a changed working directory or mount
//!   point misses. Borg uses the repository key's id hash; we use plain SHA-256 and keep one
//!   cache per repository *location*, because the walk consults the cache while the repository
//!   is still being reached (see `decide`). A file only counts as unchanged if the repository's
//!   chunk index has all its chunks, so a cache from another repository costs speed, not data;
//! - an entry is (inode, size, ctime or mtime, chunk ids, whether the item had xattrs, ACLs or
//!   flags) and an age. A lookup compares what the mode names (`ctime,size,inode` by default);
//!   a hit resets the age and takes the new inode;
//! - every run that loads the cache ages each entry by one; entries reaching
//!   `BORG_FILES_CACHE_TTL` (20) are dropped at save, and so are entries seen in this run whose
//!   time is not older than the newest time of the files read in this run — a file changed in
//!   the same tick as the backup could change again unnoticed.
//!
//! The file is ours, not borg's (borg never reads another client's cache): a short header, the
//! records, and a SHA-256 of everything before it, written to a temporary name and renamed (see
//! `cache_file::save`). A file that is missing, damaged or from another version is a warning and
//! an empty cache.

use std::io;
use std::path::Path;

use crate::error::ErrorKind;
use crate::format::envelope::ObjectId;
use crate::format::item::ChunkRef;
use crate::ops::cache_file;

use crate::ops::id_map::IdMap;

const MAGIC: &[u8; 16] = b"mailcow-borg-fc3";

/// Which attributes decide "unchanged": borg's `--files-cache` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilesCacheMode {
    /// Compare ctime.
    pub ctime: bool,
    /// Compare (and store) mtime instead of ctime.
    pub mtime: bool,
    pub size: bool,
    pub inode: bool,
    /// Load and save, but never hit: every file is read.
    pub rechunk: bool,
    /// Neither loaded nor saved.
    pub disabled: bool,
}

impl Default for FilesCacheMode {
    fn default() -> Self {
        FilesCacheMode {
            ctime: true,
            mtime: false,
            size: true,
            inode: true,
            rechunk: false,
            disabled: false,
        }
    }
}

/// A `--files-cache` value borg would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilesCacheModeError {
    #[error(
        "invalid files cache mode {0:?}: use a comma list of ctime, mtime, size, inode, rechunk, or disabled"
    )]
    UnknownWord(String),
    #[error("--files-cache: ctime and mtime exclude each other")]
    CtimeAndMtime,
    #[error("--files-cache: disabled cannot be combined with anything")]
    DisabledCombined,
}

impl FilesCacheModeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FilesCacheModeError::UnknownWord(_)
            | FilesCacheModeError::CtimeAndMtime
            | FilesCacheModeError::DisabledCombined => ErrorKind::BadInput,
        }
    }
}

impl std::str::FromStr for FilesCacheMode {
    type Err = FilesCacheModeError;

    fn from_str(text: &str) -> Result<Self, FilesCacheModeError> {
        let mut mode = FilesCacheMode {
            ctime: false,
            size: false,
            inode: false,
            ..FilesCacheMode::default()
        };
        for word in text.split(',') {
            match word {
                "ctime" => mode.ctime = true,
                "mtime" => mode.mtime = true,
                "size" => mode.size = true,
                "inode" => mode.inode = true,
                "rechunk" => mode.rechunk = true,
                "disabled" => mode.disabled = true,
                other => return Err(FilesCacheModeError::UnknownWord(other.to_string())),
            }
        }
        if mode.ctime && mode.mtime {
            return Err(FilesCacheModeError::CtimeAndMtime);
        }
        if mode.disabled && text != "disabled" {
            return Err(FilesCacheModeError::DisabledCombined);
        }
        Ok(mode)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    age: u8,
    inode: u64,
    size: u64,
    /// ctime or mtime (per the mode), nanoseconds.
    cmtime: i64,
    /// The item had extended metadata (xattrs, ACLs, flags).
    ext: bool,
    /// With their sizes, so that an unchanged file's item is complete before the repository
    /// answers (the chunk index then only confirms them).
    chunks: Vec<ChunkRef>,
}

/// What the walk needs to know about a file to look it up and remember it.
#[derive(Clone, Copy, Debug)]
pub struct FileStat {
    pub inode: u64,
    pub size: u64,
    pub ctime: i64,
    pub mtime: i64,
}

pub enum Lookup {
    /// Not in the cache (or the cache is off): `A`.
    Unknown,
    /// In the cache but changed: `M`.
    Changed,
    /// Unchanged: these are its chunks, if they are all still in the repository. `ext`: it
    /// had extended metadata last time. Setting xattrs, ACLs or flags changes the ctime, so
    /// without `ext` and with the ctime unchanged it still has none: they need not be read.
    Unchanged { chunks: Vec<ChunkRef>, ext: bool },
}

pub struct FilesCache {
    mode: FilesCacheMode,
    ttl: u8,
    entries: IdMap<ObjectId, Entry>,
    /// The newest time among files read (not just looked up) in this run.
    newest_cmtime: Option<i64>,
}

impl FilesCache {
    /// Loads `path` (unless the mode is disabled) and ages its entries. A cache that cannot be
    /// read gives an empty one and the reason, for a warning.
    pub fn load(path: &Path, mode: FilesCacheMode, ttl: u8) -> (FilesCache, Option<String>) {
        let mut cache = FilesCache {
            mode,
            ttl: ttl.max(1),
            entries: IdMap::default(),
            newest_cmtime: None,
        };
        if mode.disabled {
            return (cache, None);
        }
        match std::fs::read(path) {
            Ok(data) => match decode(&data) {
                Some(entries) => cache.entries = entries,
                None => {
                    return (
                        cache,
                        Some(format!(
                            "the files cache {} is damaged; continuing without it (every file is read)",
                            path.display()
                        )),
                    );
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return (
                    cache,
                    Some(format!(
                        "cannot read the files cache {}: {e}; continuing without it",
                        path.display()
                    )),
                );
            }
        }
        for entry in cache.entries.values_mut() {
            entry.age = entry.age.saturating_add(1);
        }
        (cache, None)
    }

    fn cmtime(&self, stat: &FileStat) -> i64 {
        if self.mode.mtime {
            stat.mtime
        } else {
            stat.ctime
        }
    }

    pub fn lookup(&mut self, path_hash: &ObjectId, stat: &FileStat) -> Lookup {
        if self.mode.disabled || self.mode.rechunk {
            return Lookup::Unknown;
        }
        let cmtime = self.cmtime(stat);
        let mode = self.mode;
        let Some(entry) = self.entries.get_mut(path_hash) else {
            return Lookup::Unknown;
        };
        if (mode.size && entry.size != stat.size)
            || (mode.inode && entry.inode != stat.inode)
            || ((mode.ctime || mode.mtime) && entry.cmtime != cmtime)
        {
            return Lookup::Changed;
        }
        entry.inode = stat.inode;
        entry.age = 0;
        Lookup::Unchanged {
            chunks: entry.chunks.clone(),
            // Only a ctime comparison proves the metadata unchanged.
            ext: entry.ext || !mode.ctime,
        }
    }

    /// Remembers a file that was read in this run; `ext`: its item has extended metadata.
    pub fn memorize(
        &mut self,
        path_hash: ObjectId,
        stat: &FileStat,
        ext: bool,
        chunks: Vec<ChunkRef>,
    ) {
        if self.mode.disabled {
            return;
        }
        let cmtime = self.cmtime(stat);
        self.newest_cmtime = Some(self.newest_cmtime.map_or(cmtime, |n| n.max(cmtime)));
        self.entries.insert(
            path_hash,
            Entry {
                age: 0,
                inode: stat.inode,
                size: stat.size,
                cmtime,
                ext,
                chunks,
            },
        );
    }

    /// Writes the entries worth keeping (see the module notes) to `path`, atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if self.mode.disabled {
            return Ok(());
        }
        let newest = self.newest_cmtime.unwrap_or(i64::MAX);
        let kept = self
            .entries
            .iter()
            .filter(|(_, e)| (e.age == 0 && e.cmtime < newest) || (e.age > 0 && e.age < self.ttl));
        cache_file::save(path, MAGIC, |out| {
            for (hash, entry) in kept {
                out.write_all(hash)?;
                out.write_all(&[entry.age])?;
                out.write_all(&entry.inode.to_le_bytes())?;
                out.write_all(&entry.size.to_le_bytes())?;
                out.write_all(&entry.cmtime.to_le_bytes())?;
                out.write_all(&[u8::from(entry.ext)])?;
                out.write_all(&(entry.chunks.len() as u32).to_le_bytes())?;
                for chunk in &entry.chunks {
                    out.write_all(&chunk.id)?;
                    out.write_all(&(chunk.size as u32).to_le_bytes())?;
                    out.write_all(&(chunk.csize as u32).to_le_bytes())?;
                }
            }
            Ok(())
        })
    }
}

/// A chunk in the file: id, size, stored size.
const CHUNK_RECORD: usize = 40;

fn decode(data: &[u8]) -> Option<IdMap<ObjectId, Entry>> {
    let mut rest = cache_file::body(data, MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let mut entries = IdMap::default();
    while let Some(hash) = take(32) {
        let hash: ObjectId = hash.try_into().ok()?;
        let age = take(1)?[0];
        let inode = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let cmtime = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let ext = take(1)?[0] != 0;
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        // Exactly as many as there are: most files are one chunk, and a collected Vec would
        // start at four (144 bytes a file of nothing).
        let records = take(count.checked_mul(CHUNK_RECORD)?)?;
        let mut chunks = Vec::with_capacity(count);
        for record in records.chunks_exact(CHUNK_RECORD) {
            chunks.push(ChunkRef {
                id: record[..32].try_into().ok()?,
                size: u32::from_le_bytes(record[32..36].try_into().ok()?).into(),
                csize: u32::from_le_bytes(record[36..40].try_into().ok()?).into(),
            });
        }
        entries.insert(
            hash,
            Entry {
                age,
                inode,
                size,
                cmtime,
                ext,
                chunks,
            },
        );
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tag: u8) -> ChunkRef {
        ChunkRef {
            id: [tag; 32],
            size: 5,
            csize: 48,
        }
    }

    fn stat(inode: u64, size: u64, time: i64) -> FileStat {
        FileStat {
            inode,
            size,
            ctime: time,
            mtime: time - 5,
        }
    }

    #[test]
    fn modes_parse_like_borgs() {
        assert_eq!(
            "ctime,size,inode".parse::<FilesCacheMode>().unwrap(),
            FilesCacheMode::default()
        );
        let m: FilesCacheMode = "mtime,size".parse().unwrap();
        assert!(m.mtime && m.size && !m.inode);
        assert!("disabled".parse::<FilesCacheMode>().unwrap().disabled);
        let refused = |text: &str| text.parse::<FilesCacheMode>().unwrap_err();
        assert_eq!(refused("ctime,mtime"), FilesCacheModeError::CtimeAndMtime);
        assert_eq!(
            refused("size,disabled"),
            FilesCacheModeError::DisabledCombined
        );
        assert_eq!(
            refused("atime").to_string(),
            "invalid files cache mode \"atime\": use a comma list of ctime, mtime, size, inode, \
             rechunk, or disabled"
        );
    }

    #[test]
    fn hits_misses_ageing_and_the_newest_time_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files");
        let mode = FilesCacheMode::default();
        let (mut cache, warning) = FilesCache::load(&path, mode, 2);
        assert!(warning.is_none());
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 100)),
            Lookup::Unknown
        ));
        cache.memorize([1; 32], &stat(7, 10, 100), false, vec![chunk(9)]);
        cache.memorize([2; 32], &stat(8, 10, 200), true, vec![]); // the newest: not kept
        cache.save(&path).unwrap();

        let (mut cache, _) = FilesCache::load(&path, mode, 2);
        assert!(matches!(
            cache.lookup(&[2; 32], &stat(8, 10, 200)),
            Lookup::Unknown
        ));
        match cache.lookup(&[1; 32], &stat(7, 10, 100)) {
            Lookup::Unchanged { chunks, ext } => {
                assert_eq!(chunks, vec![chunk(9)]);
                assert!(!ext);
            }
            _ => panic!("expected a hit"),
        }
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 11, 100)),
            Lookup::Changed
        ));
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(6, 10, 100)),
            Lookup::Changed
        ));
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 101)),
            Lookup::Changed
        ));
        // Nothing was read in this run, so the hit (age 0) is kept.
        cache.save(&path).unwrap();
        // Two runs without a hit: age 1 is kept, age 2 reaches the TTL of 2.
        let (cache, _) = FilesCache::load(&path, mode, 2);
        cache.save(&path).unwrap();
        let (mut cache, _) = FilesCache::load(&path, mode, 2);
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 100)),
            Lookup::Unchanged { .. }
        ));
        let (cache, _) = FilesCache::load(&path, mode, 2);
        cache.save(&path).unwrap();
        let (cache, _) = FilesCache::load(&path, mode, 2);
        cache.save(&path).unwrap();
        let (mut cache, _) = FilesCache::load(&path, mode, 2);
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 100)),
            Lookup::Unknown
        ));
    }

    #[test]
    fn a_damaged_cache_is_a_warning_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files");
        let (mut cache, _) = FilesCache::load(&path, FilesCacheMode::default(), 20);
        cache.memorize([1; 32], &stat(7, 10, 100), false, vec![chunk(9)]);
        cache.memorize([2; 32], &stat(8, 10, 200), true, vec![]);
        cache.save(&path).unwrap();
        let mut data = std::fs::read(&path).unwrap();
        data[20] ^= 1;
        std::fs::write(&path, data).unwrap();
        let (mut cache, warning) = FilesCache::load(&path, FilesCacheMode::default(), 20);
        assert!(warning.unwrap().contains("damaged"));
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 100)),
            Lookup::Unknown
        ));
    }
}
