//! The journal of runs in the state dir: the last [`KEEP`] runs, one JSON line each, oldest
//! first. Written by the run that holds the host lock, so one writer at a time; replaced whole
//! and durably, so a reader (`status`, a monitoring check) never sees half a line and a power
//! loss never leaves fewer runs than before.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::run_record::RunRecord;
use crate::ops::durable::write_durably;

/// The journal's name in the state dir.
pub const FILE: &str = "journal.jsonl";

/// Runs kept: a daily backup's three months, an hourly one's four days.
pub const KEEP: usize = 100;

/// The most of the file read: far more than [`KEEP`] records take (each is well under 2 KiB,
/// its error line being cut), so only a file someone else wrote to is cut, from its start.
const MAX_READ: u64 = 1 << 20;

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The runs recorded, oldest first; none when there is no journal yet. A line that is not a
/// record (written by hand, or by a newer version) is skipped.
pub fn read(state_dir: &Path) -> io::Result<Vec<RunRecord>> {
    let mut file = match std::fs::File::open(path(state_dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let cut = len > MAX_READ;
    if cut {
        file.seek(SeekFrom::Start(len - MAX_READ))?;
    }
    let mut text = Vec::new();
    file.take(MAX_READ).read_to_end(&mut text)?;
    let mut lines = text.split(|&b| b == b'\n');
    if cut {
        // The first line read is a line's tail.
        lines.next();
    }
    Ok(lines
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect())
}

/// Adds `record` to the journal, dropping the oldest beyond [`KEEP`]; returns the runs now
/// recorded, oldest first.
pub fn append(state_dir: &Path, record: RunRecord) -> io::Result<Vec<RunRecord>> {
    let mut records = read(state_dir)?;
    records.push(record);
    let records = bounded(records);
    write_durably(&path(state_dir), &lines(&records)?)?;
    Ok(records)
}

fn bounded(mut records: Vec<RunRecord>) -> Vec<RunRecord> {
    records.drain(..records.len().saturating_sub(KEEP));
    records
}

fn lines(records: &[RunRecord]) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    for record in records {
        serde_json::to_writer(&mut text, record)?;
        text.push(b'\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: i64) -> RunRecord {
        RunRecord::new("backup", n, n + 1, 0, Some(format!("a-{n}")), None, None)
    }

    #[test]
    fn the_journal_keeps_the_last_runs_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        for n in 0..(KEEP as i64 + 5) {
            append(dir.path(), run(n)).unwrap();
        }
        let records = read(dir.path()).unwrap();
        assert_eq!(records.len(), KEEP);
        assert_eq!(records[0], run(5));
        assert_eq!(records[KEEP - 1], run(KEEP as i64 + 4));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
    }

    #[test]
    fn lines_that_are_no_record_are_skipped_and_a_huge_file_is_read_from_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = b"garbage\n{\"command\": 1}\n".to_vec();
        text.extend(lines(&[run(1)]).unwrap());
        std::fs::write(path(dir.path()), &text).unwrap();
        assert_eq!(read(dir.path()).unwrap(), [run(1)]);

        let mut huge = vec![b'x'; MAX_READ as usize + 10];
        huge.push(b'\n');
        huge.extend(lines(&[run(2), run(3)]).unwrap());
        std::fs::write(path(dir.path()), &huge).unwrap();
        assert_eq!(read(dir.path()).unwrap(), [run(2), run(3)]);
    }
}
