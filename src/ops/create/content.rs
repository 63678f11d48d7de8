//! The content workers: read files, cut them into chunks with the repository's chunker, and
//! store the chunks (hash, dedup, compress, encrypt, upload). One worker per core, each on a
//! group of whole files at a time: a maildir is many small files, so files are the natural unit
//! of parallelism, and a file's chunks stay in order without any bookkeeping.
//!
//! Why groups, and not one file at a time: BLAKE2b (a chunk's id, and the MAC of what is
//! stored) is the largest part of a first backup's CPU time, and it runs about three times as
//! fast on four inputs at once, in the lanes of the vector unit, as on one. A mail is a single
//! chunk, so the batch has to span files: a worker reads the files of its group one after the
//! other, collects their chunks (copied out of the chunker's buffer, cheap next to hashing
//! them) up to [`GROUP_BYTES`], and stores them together. A large file's chunks are stored as
//! they fill a batch, or one by one when they are that large themselves, so memory stays
//! bounded by the batch, not by the file.
//!
//! After reading, a file is stat'ed again. If its ctime moved, it changed while we read it:
//! its item is still stored (borg's `C`), but it is not remembered in the files cache, so the
//! next run reads it again. A file that cannot be read to its end stores none of the chunks
//! still in the batch; it is a warning.
//!
//! A stream (stdin, `-`) is read the same way, to its end, with nothing to stat afterwards.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::format::chunker::{Chunker, ChunkerParams};
use crate::ops::dir_handle::Stat;

use super::Halt;
use super::store::{ChunkStore, StoreError, Stored};

/// A group holds at most this many files...
pub const GROUP_FILES: usize = 16;
/// ...and files of at most about this many bytes; a worker stores its chunks in batches of
/// this size too. 16 mails of ~32 KiB keep four lanes busy; more would only add memory.
pub const GROUP_BYTES: usize = 1 << 20;

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

#[derive(Default)]
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

/// Chunks of a group's files waiting to be stored together, with the file each belongs to.
/// They are copied end to end into one buffer, which a worker keeps from batch to batch (a
/// fresh one each time cost more in page faults than the copying).
#[derive(Default)]
pub struct Batch {
    data: Vec<u8>,
    /// Where each chunk ends in `data`.
    ends: Vec<usize>,
    owners: Vec<usize>,
}

impl Batch {
    fn add(&mut self, owner: usize, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.ends.push(self.data.len());
        self.owners.push(owner);
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.owners.clear();
    }

    /// Forgets the chunks of `owner`, the file read last.
    fn drop_file(&mut self, owner: usize) {
        while self.owners.last() == Some(&owner) {
            self.owners.pop();
            self.ends.pop();
        }
        self.data.truncate(self.ends.last().map_or(0, |&end| end));
    }

    fn chunks(&self) -> Vec<&[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.data[start..end])
            .collect()
    }

    /// Stores the chunks and appends each to its file's list. On failure, the earliest file
    /// that had a chunk in the batch, with the reason.
    fn store(
        &mut self,
        store: &ChunkStore,
        reads: &mut [FileRead],
    ) -> Result<(), (usize, StoreError)> {
        let Some(&first) = self.owners.first() else {
            return Ok(());
        };
        let stored = store.store_all(&self.chunks()).map_err(|e| (first, e))?;
        for (&owner, stored) in self.owners.iter().zip(stored) {
            reads[owner].chunks.push(stored);
        }
        self.clear();
        Ok(())
    }
}

/// Reads files (or a stream) completely, in order, storing their chunks in batches; an outcome
/// for each.
pub fn read_files(
    sources: Vec<Source>,
    chunker: &mut Chunker,
    batch: &mut Batch,
    store: &ChunkStore,
    abort: &Halt,
) -> Vec<FileOutcome> {
    let mut reads: Vec<FileRead> = sources.iter().map(|_| FileRead::default()).collect();
    let mut failures: Vec<Option<FileOutcome>> = sources.iter().map(|_| None).collect();
    batch.clear();
    let mut stored = Ok(());
    for (n, mut source) in sources.into_iter().enumerate() {
        if let Err(failure) = read_one(n, &mut source, chunker, store, abort, batch, &mut reads) {
            match failure {
                ReadFailure::Unreadable(e) => {
                    batch.drop_file(n);
                    failures[n] = Some(FileOutcome::Unreadable(e));
                }
                ReadFailure::Store(first, e) => {
                    stored = Err((first, e));
                    break;
                }
            }
        }
    }
    if stored.is_ok() {
        stored = batch.store(store, &mut reads);
    }
    if let Err((first, e)) = stored {
        // The earliest file affected carries the reason (the assembler meets it first); the
        // ones after it were not stored completely, or not read.
        let mut reason = Some(e);
        for failure in &mut failures[first..] {
            if failure.is_none() {
                let e = reason.take().unwrap_or(StoreError::Stopped);
                *failure = Some(FileOutcome::Failed(e));
            }
        }
    }
    reads
        .into_iter()
        .zip(failures)
        .map(|(read, failure)| failure.unwrap_or(FileOutcome::Read(read)))
        .collect()
}

enum ReadFailure {
    Unreadable(io::Error),
    /// Storing a batch failed; the earliest file in it, and why.
    Store(usize, StoreError),
}

/// Reads file `n` of a group to its end into the batch, storing the batch whenever it is full.
fn read_one(
    n: usize,
    source: &mut Source,
    chunker: &mut Chunker,
    store: &ChunkStore,
    abort: &Halt,
    batch: &mut Batch,
    reads: &mut [FileRead],
) -> Result<(), ReadFailure> {
    chunker.reset();
    loop {
        if abort.halted() {
            let first = batch.owners.first().map_or(n, |&first| first);
            return Err(ReadFailure::Store(first, StoreError::Stopped));
        }
        let reader: &mut dyn Read = match source {
            Source::File { file, .. } => file,
            Source::Stream(stream) => stream,
        };
        let piece = match chunker.next_chunk(reader) {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => return Err(ReadFailure::Unreadable(e)),
        };
        // The batch never outgrows GROUP_BYTES, and a chunk that large is its own batch, stored
        // straight from the chunker's buffer: a 10 MB attachment must not leave 10 MB of copy
        // buffer behind in every worker.
        if batch.data.len() + piece.len() > GROUP_BYTES {
            batch
                .store(store, reads)
                .map_err(|(first, e)| ReadFailure::Store(first, e))?;
        }
        if piece.len() < GROUP_BYTES {
            batch.add(n, piece);
        } else {
            let stored = store.store(piece).map_err(|e| ReadFailure::Store(n, e))?;
            reads[n].chunks.push(stored);
        }
    }
    if let Source::File { file, ctime } = source {
        let st = Stat::of(file.as_fd()).map_err(ReadFailure::Unreadable)?;
        reads[n].changed = st.ctime_ns() != *ctime;
    }
    Ok(())
}

/// A worker's loop: groups of files from the shared queue until it closes.
pub fn worker(
    jobs: Arc<Mutex<Receiver<Vec<FileJob>>>>,
    params: ChunkerParams,
    seed: i32,
    store: Arc<ChunkStore>,
    abort: Arc<Halt>,
) {
    let mut chunker = Chunker::new(params, seed);
    let mut batch = Batch::default();
    loop {
        let group = jobs.lock().expect("not poisoned").recv();
        let Ok(group) = group else {
            return;
        };
        let (sources, replies): (Vec<Source>, Vec<_>) =
            group.into_iter().map(|job| (job.source, job.reply)).unzip();
        let outcomes = read_files(sources, &mut chunker, &mut batch, &store, &abort);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The assembler may have stopped waiting (it failed); that is its business.
            let _ = reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_chunks_apart_and_forgets_the_last_files_chunks() {
        let mut batch = Batch::default();
        batch.add(0, b"mail one");
        batch.add(1, b"");
        batch.add(1, b"attachment, first chunk");
        batch.add(2, b"partly read");
        batch.add(2, b"then failed");
        batch.drop_file(2);
        assert_eq!(
            batch.chunks(),
            [&b"mail one"[..], b"", b"attachment, first chunk"]
        );
        assert_eq!(batch.owners, [0, 1, 1]);
        batch.drop_file(1);
        batch.add(3, b"next");
        assert_eq!(batch.chunks(), [&b"mail one"[..], b"next"]);
        assert_eq!(batch.data.len(), 12);
    }
}
