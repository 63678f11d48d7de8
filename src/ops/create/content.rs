//! The content workers: read a file, cut it into chunks with the repository's chunker, and store
//! each chunk (hash, dedup, compress, encrypt, upload). One worker per core, each on a whole
//! file at a time: a maildir is many small files, so files are the natural unit of parallelism,
//! and a file's chunks stay in order without any bookkeeping.
//!
//! After reading, the file is stat'ed again. If its ctime moved, it changed while we read it:
//! its item is still stored (borg's `C`), but it is not remembered in the files cache, so the
//! next run reads it again.
//!
//! A stream (stdin, `-`) is read the same way, to its end, with nothing to stat afterwards.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::format::chunker::{Chunker, ChunkerParams};

use super::Halt;
use super::store::{ChunkStore, StoreError, Stored};

/// What a worker reads.
pub enum Source {
    /// A file the walk opened, with the ctime it saw.
    File { file: File, ctime: i64 },
    /// A stream, read to its end.
    Stream(Box<dyn Read + Send>),
}

/// Content for a worker to read.
pub struct FileJob {
    pub source: Source,
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

/// Reads one file or stream completely.
pub fn read_file(
    source: &mut Source,
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
        let reader: &mut dyn Read = match source {
            Source::File { file, .. } => file,
            Source::Stream(stream) => stream,
        };
        let piece = match chunker.next_chunk(reader) {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => return FileOutcome::Unreadable(e),
        };
        match store.store(piece) {
            Ok(stored) => chunks.push(stored),
            Err(e) => return FileOutcome::Failed(e),
        }
    }
    let changed = match source {
        Source::File { file, ctime } => match file.metadata() {
            Ok(st) => st.ctime() * 1_000_000_000 + st.ctime_nsec() != *ctime,
            Err(e) => return FileOutcome::Unreadable(e),
        },
        Source::Stream(_) => false,
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
        let Ok(FileJob { mut source, reply }) = job else {
            return;
        };
        let outcome = read_file(&mut source, &mut chunker, &store, &abort);
        // The assembler may have stopped waiting (it failed); that is its business.
        let _ = reply.send(outcome);
    }
}
