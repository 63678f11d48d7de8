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
use crate::ops::cache_file::{self, Cached};
use crate::ops::sorted_ids::{SortedIds, merged};

const MAGIC: &[u8; 16] = b"mailcow-borg-fc4";

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

/// A file as remembered: 40 bytes, and its chunks beside it in [`FilesCache::chunks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    inode: u64,
    size: u64,
    /// ctime or mtime (per the mode), nanoseconds.
    cmtime: i64,
    /// Its chunks are `chunks[first .. first + count]`.
    first: u64,
    count: u32,
    age: u8,
    /// The item had extended metadata (xattrs, ACLs, flags).
    ext: bool,
}

impl Entry {
    /// Where its chunks are in [`FilesCache::chunks`].
    fn chunks(&self) -> std::ops::Range<usize> {
        let first = self.first as usize;
        first..first + self.count as usize
    }
}

/// A chunk of a remembered file, with its sizes, so that an unchanged file's item is complete
/// before the repository answers (the chunk index then only confirms them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileChunk {
    id: ObjectId,
    size: u32,
    csize: u32,
}

impl FileChunk {
    fn new(chunk: &ChunkRef) -> Option<FileChunk> {
        Some(FileChunk {
            id: chunk.id,
            size: chunk.size.try_into().ok()?,
            csize: chunk.csize.try_into().ok()?,
        })
    }

    fn reference(&self) -> ChunkRef {
        ChunkRef {
            id: self.id,
            size: self.size.into(),
            csize: self.csize.into(),
        }
    }
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

/// The cache as a run holds it: what was loaded as one sorted table (most of it, at millions of
/// files: see `sorted_ids`), what this run met for the first time in a list beside it, and all
/// their chunks in one array. A path is looked up once a run, so what this run added is never
/// looked up and needs no index; it is sorted and merged in when saved.
pub struct FilesCache {
    mode: FilesCacheMode,
    ttl: u8,
    loaded: SortedIds<Entry>,
    /// Files first seen in this run, as they were read.
    added: Vec<(ObjectId, Entry)>,
    /// Every entry's chunks. A changed file's new ones are appended; its old ones stay unused
    /// until the cache is next loaded.
    chunks: Vec<FileChunk>,
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
            loaded: SortedIds::default(),
            added: Vec::new(),
            chunks: Vec::new(),
            newest_cmtime: None,
        };
        if mode.disabled {
            return (cache, None);
        }
        match cache_file::load(path, MAGIC, decode) {
            Ok(Cached::Loaded((loaded, chunks))) => (cache.loaded, cache.chunks) = (loaded, chunks),
            Ok(Cached::Absent) => {}
            Ok(Cached::Damaged) => {
                return (
                    cache,
                    Some(format!(
                        "the files cache {} is damaged; continuing without it (every file is read)",
                        path.display()
                    )),
                );
            }
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
        for entry in cache.loaded.values_mut() {
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
        let Some(entry) = self.loaded.get_mut(path_hash) else {
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
            chunks: self.chunks[entry.chunks()]
                .iter()
                .map(FileChunk::reference)
                .collect(),
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
        // Sizes past 32 bits are not kept; such a file (which borg's chunker never makes) is
        // read again next time.
        let Some(file_chunks) = chunks
            .iter()
            .map(FileChunk::new)
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        let Ok(count) = u32::try_from(file_chunks.len()) else {
            return;
        };
        let entry = Entry {
            inode: stat.inode,
            size: stat.size,
            cmtime,
            first: self.chunks.len() as u64,
            count,
            age: 0,
            ext,
        };
        self.chunks.extend(file_chunks);
        match self.loaded.get_mut(&path_hash) {
            Some(old) => *old = entry,
            None => self.added.push((path_hash, entry)),
        }
    }

    /// Writes the entries worth keeping (see the module notes) to `path`, atomically, in
    /// path-hash order.
    pub fn save(&mut self, path: &Path) -> io::Result<()> {
        if self.mode.disabled {
            return Ok(());
        }
        // The same path read twice in a run (named twice) keeps its last reading: reversed, a
        // stable sort puts it first among its equals, and `dedup` keeps the first.
        self.added.reverse();
        self.added.sort_by_key(|(hash, _)| *hash);
        self.added.dedup_by(|later, earlier| later.0 == earlier.0);
        let newest = self.newest_cmtime.unwrap_or(i64::MAX);
        let ttl = self.ttl;
        let kept = || {
            merged(self.loaded.iter(), self.added.iter().map(|(k, v)| (k, v))).filter(
                move |(_, e)| (e.age == 0 && e.cmtime < newest) || (e.age > 0 && e.age < ttl),
            )
        };
        let (files, chunks) = kept().fold((0u64, 0u64), |(files, chunks), (_, e)| {
            (files + 1, chunks + u64::from(e.count))
        });
        cache_file::save(path, MAGIC, |out| {
            out.write_all(&files.to_le_bytes())?;
            out.write_all(&chunks.to_le_bytes())?;
            for (hash, entry) in kept() {
                let mut record = [0u8; FILE_RECORD];
                record[..32].copy_from_slice(hash);
                record[32] = entry.age;
                record[33..41].copy_from_slice(&entry.inode.to_le_bytes());
                record[41..49].copy_from_slice(&entry.size.to_le_bytes());
                record[49..57].copy_from_slice(&entry.cmtime.to_le_bytes());
                record[57] = u8::from(entry.ext);
                record[58..62].copy_from_slice(&entry.count.to_le_bytes());
                out.write_all(&record)?;
                for chunk in &self.chunks[entry.chunks()] {
                    let mut record = [0u8; CHUNK_RECORD];
                    record[..32].copy_from_slice(&chunk.id);
                    record[32..36].copy_from_slice(&chunk.size.to_le_bytes());
                    record[36..].copy_from_slice(&chunk.csize.to_le_bytes());
                    out.write_all(&record)?;
                }
            }
            Ok(())
        })
    }
}

/// A file: path hash, age, inode, size, time, ext, number of chunks.
const FILE_RECORD: usize = 62;
/// A chunk of a file: id, size, stored size.
const CHUNK_RECORD: usize = 40;

/// The body: the numbers of files and chunks, then each file in path-hash order followed by its
/// chunks.
fn decode(body: &mut cache_file::Body) -> Option<(SortedIds<Entry>, Vec<FileChunk>)> {
    let files = body.u64()?;
    let chunks = body.u64()?;
    // The sizes must add up before anything is allocated for them.
    let expected = files
        .checked_mul(FILE_RECORD as u64)?
        .checked_add(chunks.checked_mul(CHUNK_RECORD as u64)?)?;
    if expected != body.left() {
        return None;
    }
    let mut entries = Vec::with_capacity(usize::try_from(files).ok()?);
    let mut file_chunks = Vec::with_capacity(usize::try_from(chunks).ok()?);
    for _ in 0..files {
        let record = body.array::<FILE_RECORD>()?;
        let number =
            |range: std::ops::Range<usize>| -> Option<[u8; 8]> { record[range].try_into().ok() };
        let count = u32::from_le_bytes(record[58..62].try_into().ok()?);
        let entry = Entry {
            inode: u64::from_le_bytes(number(33..41)?),
            size: u64::from_le_bytes(number(41..49)?),
            cmtime: i64::from_le_bytes(number(49..57)?),
            first: file_chunks.len() as u64,
            count,
            age: record[32],
            ext: record[57] != 0,
        };
        for _ in 0..count {
            let chunk = body.array::<CHUNK_RECORD>()?;
            file_chunks.push(FileChunk {
                id: chunk[..32].try_into().ok()?,
                size: u32::from_le_bytes(chunk[32..36].try_into().ok()?),
                csize: u32::from_le_bytes(chunk[36..].try_into().ok()?),
            });
        }
        entries.push((record[..32].try_into().ok()?, entry));
    }
    Some((SortedIds::from_sorted(entries)?, file_chunks))
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
        let (mut cache, _) = FilesCache::load(&path, mode, 2);
        cache.save(&path).unwrap();
        let (mut cache, _) = FilesCache::load(&path, mode, 2);
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 100)),
            Lookup::Unchanged { .. }
        ));
        let (mut cache, _) = FilesCache::load(&path, mode, 2);
        cache.save(&path).unwrap();
        let (mut cache, _) = FilesCache::load(&path, mode, 2);
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

    fn chunks_of(cache: &mut FilesCache, hash: u8, stat: &FileStat) -> Option<Vec<ChunkRef>> {
        match cache.lookup(&[hash; 32], stat) {
            Lookup::Unchanged { chunks, .. } => Some(chunks),
            _ => None,
        }
    }

    #[test]
    fn changed_and_new_files_are_merged_into_the_loaded_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files");
        let mode = FilesCacheMode::default();
        let (mut cache, _) = FilesCache::load(&path, mode, 20);
        for hash in [5u8, 1, 9] {
            cache.memorize(
                [hash; 32],
                &stat(u64::from(hash), 10, 100),
                false,
                vec![chunk(hash)],
            );
        }
        cache.memorize([0; 32], &stat(0, 1, 300), false, vec![]); // the newest, not kept
        cache.save(&path).unwrap();

        let (mut cache, _) = FilesCache::load(&path, mode, 20);
        assert!(matches!(
            cache.lookup(&[5; 32], &stat(5, 11, 101)),
            Lookup::Changed
        ));
        cache.memorize(
            [5; 32],
            &stat(5, 11, 101),
            false,
            vec![chunk(50), chunk(51)],
        );
        // A new file, read twice in the run: the last reading is the one kept.
        cache.memorize([3; 32], &stat(3, 10, 100), false, vec![chunk(30)]);
        cache.memorize([3; 32], &stat(3, 10, 100), true, vec![chunk(31)]);
        cache.memorize([0; 32], &stat(0, 1, 300), false, vec![]);
        cache.save(&path).unwrap();

        let (mut cache, warning) = FilesCache::load(&path, mode, 20);
        assert!(warning.is_none());
        assert_eq!(
            chunks_of(&mut cache, 1, &stat(1, 10, 100)),
            Some(vec![chunk(1)])
        );
        assert_eq!(
            chunks_of(&mut cache, 9, &stat(9, 10, 100)),
            Some(vec![chunk(9)])
        );
        assert_eq!(
            chunks_of(&mut cache, 5, &stat(5, 11, 101)),
            Some(vec![chunk(50), chunk(51)])
        );
        assert!(matches!(
            cache.lookup(&[3; 32], &stat(3, 10, 100)),
            Lookup::Unchanged { ext: true, .. }
        ));
    }

    #[test]
    fn a_cache_of_another_version_is_rebuilt_without_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files");
        let mut older = MAGIC.to_vec();
        *older.last_mut().unwrap() -= 1;
        std::fs::write(&path, [older, vec![0; 100]].concat()).unwrap();
        let (mut cache, warning) = FilesCache::load(&path, FilesCacheMode::default(), 20);
        assert_eq!(warning, None);
        assert!(matches!(
            cache.lookup(&[1; 32], &stat(7, 10, 100)),
            Lookup::Unknown
        ));
    }
}
