//! The content workers: read a file, cut it into chunks with the repository's chunker, and store
//! each chunk (hash, dedup, compress, encrypt, upload). One worker per core, each on a whole
//! file at a time: a maildir is many small files, so files are the natural unit of parallelism,
//! and a file's chunks stay in order without any bookkeeping.
//!
//! After reading, the file is stat'ed again. If its ctime moved, it changed while we read it:
//! its item is still stored (borg's `C`), but it is not remembered in the files cache, so the
//! next run reads it again.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::format::chunker::{Chunker, ChunkerParams};

use super::Halt;
use super::store::{ChunkStore, StoreError, Stored};

/// A file for a worker to read; the walk opened it and took its ctime.
pub struct FileJob {
    pub file: File,
    pub ctime: i64,
    pub reply: SyncSender<FileOutcome>,
}

pub struct FileRead {
    pub chunks: Vec<Stored>,
    /// The ctime moved while reading.
    pub changed: bool,
}

pub enum FileOutcome {
    Read(FileRead),
    /// Reading failed: a warning for this file.
    Unreadable(io::Error),
    /// Storing failed: the backup cannot go on.
    Failed(StoreError),
}

/// Reads one file completely.
pub fn read_file(
    file: &mut File,
    ctime: i64,
    chunker: &mut Chunker,
    store: &ChunkStore,
    abort: &Halt,
) -> FileOutcome {
    chunker.reset();
    let mut chunks = Vec::new();
    loop {
        if abort.halted() {
            return FileOutcome::Failed(StoreError::Stopped);
        }
        let piece = match chunker.next_chunk(file) {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => return FileOutcome::Unreadable(e),
        };
        match store.store(piece) {
            Ok(stored) => chunks.push(stored),
            Err(e) => return FileOutcome::Failed(e),
        }
    }
    let changed = match file.metadata() {
        Ok(st) => st.ctime() * 1_000_000_000 + st.ctime_nsec() != ctime,
        Err(e) => return FileOutcome::Unreadable(e),
    };
    FileOutcome::Read(FileRead { chunks, changed })
}

/// A worker's loop: files from the shared queue until it closes.
pub fn worker(
    jobs: Arc<Mutex<Receiver<FileJob>>>,
    params: ChunkerParams,
    seed: i32,
    store: Arc<ChunkStore>,
    abort: Arc<Halt>,
) {
    let mut chunker = Chunker::new(params, seed);
    loop {
        let job = jobs.lock().expect("not poisoned").recv();
        let Ok(FileJob {
            mut file,
            ctime,
            reply,
        }) = job
        else {
            return;
        };
        let outcome = read_file(&mut file, ctime, &mut chunker, &store, &abort);
        // The assembler may have stopped waiting (it failed); that is its business.
        let _ = reply.send(outcome);
    }
}
