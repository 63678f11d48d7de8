//! Files copied out of a container through the API (`GET /containers/{id}/archive`, what `docker
//! cp` uses): the engine sends them as a tar stream, read here entry by entry as it arrives.
//!
//! The engine writes tar with Go's `archive/tar`: ustar headers, names longer than a ustar
//! header holds in PAX extended headers (`x`), sometimes a GNU long name (`L`). Those are
//! understood; every header's checksum is verified, sizes are bounded, and what an entry is
//! (file, directory, anything else) is reported for the caller to accept or refuse: the files
//! come from a container that ran on restored data, so nothing about them is trusted.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::engine::{DockerError, Engine};

const BLOCK: usize = 512;
/// The largest PAX or GNU long-name record taken (a path, a time: a few hundred bytes).
const MAX_META: u64 = 64 * 1024;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A link, a device, a fifo…: its tar type flag.
    Other(u8),
}

/// One entry, its content read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// As the archive names it, without a trailing `/`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub content: Vec<u8>,
}

/// A tar stream being read.
pub struct TarReader {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, DockerError>> + Send>>,
    /// Received, not yet taken.
    pending: Vec<u8>,
    /// The largest entry content taken.
    max_entry: u64,
    what: String,
    ended: bool,
}

/// Long names and times that PAX or GNU headers give the next entry.
#[derive(Default)]
struct Overrides {
    path: Option<Vec<u8>>,
    mtime: Option<i64>,
}

impl TarReader {
    /// Reads the tar in `stream`; `what` names it in messages, `max_entry` bounds an entry.
    pub fn new(
        stream: impl Stream<Item = Result<Bytes, DockerError>> + Send + 'static,
        what: String,
        max_entry: u64,
    ) -> TarReader {
        TarReader {
            stream: Box::pin(stream),
            pending: Vec::new(),
            max_entry,
            what,
            ended: false,
        }
    }

    fn bad(&self, detail: impl Into<String>) -> DockerError {
        DockerError::Api {
            context: self.what.clone(),
            detail: detail.into(),
        }
    }

    /// Exactly `n` bytes; `None` when the stream ended before any of them.
    async fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, DockerError> {
        while self.pending.len() < n {
            match self.stream.next().await {
                Some(piece) => self.pending.extend_from_slice(&piece?),
                None if self.pending.is_empty() => return Ok(None),
                None => return Err(self.bad("the tar stream ends inside an entry")),
            }
        }
        let rest = self.pending.split_off(n);
        Ok(Some(std::mem::replace(&mut self.pending, rest)))
    }

    /// `size` bytes of content and their padding.
    async fn content(&mut self, size: u64, limit: u64) -> Result<Vec<u8>, DockerError> {
        if size > limit {
            return Err(self.bad(format!(
                "an entry of {size} bytes, more than the {limit} taken"
            )));
        }
        let padded = (size as usize).div_ceil(BLOCK) * BLOCK;
        let mut content = self
            .take(padded)
            .await?
            .ok_or_else(|| self.bad("the tar stream ends inside an entry"))?;
        content.truncate(size as usize);
        Ok(content)
    }

    /// The next entry; `None` after the last.
    pub async fn next_entry(&mut self) -> Result<Option<TarEntry>, DockerError> {
        let mut overrides = Overrides::default();
        loop {
            if self.ended {
                return Ok(None);
            }
            let Some(header) = self.take(BLOCK).await? else {
                // The engine always ends with zero blocks; a stream cut before them is not
                // a whole tar.
                return Err(self.bad("the tar stream ends without its end marker"));
            };
            if header.iter().all(|b| *b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let header = Header::parse(&header).map_err(|e| self.bad(e))?;
            match header.flag {
                b'x' => {
                    let records = self.content(header.size, MAX_META).await?;
                    apply_pax(&records, &mut overrides).map_err(|e| self.bad(e))?;
                }
                b'L' => {
                    let mut name = self.content(header.size, MAX_META).await?;
                    while name.last() == Some(&0) {
                        name.pop();
                    }
                    overrides.path = Some(name);
                }
                // Global PAX headers and GNU long link names say nothing we use.
                b'g' | b'K' => {
                    self.content(header.size, MAX_META).await?;
                }
                flag => {
                    let kind = match flag {
                        b'0' | 0 | b'7' => EntryKind::File,
                        b'5' => EntryKind::Directory,
                        other => EntryKind::Other(other),
                    };
                    // Only files have content (a hard link's size is 0).
                    let size = if kind == EntryKind::File {
                        header.size
                    } else {
                        0
                    };
                    let content = self.content(size, self.max_entry).await?;
                    let mut path = overrides.path.take().unwrap_or(header.path);
                    while path.len() > 1 && path.last() == Some(&b'/') {
                        path.pop();
                    }
                    return Ok(Some(TarEntry {
                        path,
                        kind,
                        mode: header.mode,
                        mtime: overrides.mtime.unwrap_or(header.mtime),
                        content,
                    }));
                }
            }
        }
    }
}

/// The fields of a header block that are used.
struct Header {
    path: Vec<u8>,
    mode: u32,
    size: u64,
    mtime: i64,
    flag: u8,
}

impl Header {
    fn parse(block: &[u8]) -> Result<Header, String> {
        let field = |from: usize, to: usize| {
            let bytes = &block[from..to];
            &bytes[..bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len())]
        };
        let recorded = number(&block[148..156]).ok_or("a header with an unreadable checksum")?;
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if sum != recorded {
            return Err("a header whose checksum does not match".into());
        }
        let mut path = Vec::new();
        if &block[257..262] == b"ustar" && !field(345, 500).is_empty() {
            path.extend_from_slice(field(345, 500));
            path.push(b'/');
        }
        path.extend_from_slice(field(0, 100));
        let size = number(&block[124..136]).ok_or("a header with an unreadable size")?;
        let mtime = number(&block[136..148]).ok_or("a header with an unreadable time")?;
        let mode = number(&block[100..108]).ok_or("a header with an unreadable mode")?;
        Ok(Header {
            path,
            mode: (mode & 0o7777) as u32,
            size,
            mtime: i64::try_from(mtime).map_err(|_| "a header with a time out of range")?,
            flag: block[156],
        })
    }
}

/// A numeric field: octal digits (space or NUL ended), or GNU's base-256 for big values.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// PAX records (`<length> <key>=<value>\n`): the path and the time are used.
fn apply_pax(mut records: &[u8], overrides: &mut Overrides) -> Result<(), String> {
    let bad = || "a PAX header that cannot be read".to_string();
    while !records.is_empty() {
        let space = records.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let length: usize = std::str::from_utf8(&records[..space])
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(bad)?;
        if length <= space + 1 || length > records.len() || records[length - 1] != b'\n' {
            return Err(bad());
        }
        let record = &records[space + 1..length - 1];
        let equals = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        match key {
            b"path" => overrides.path = Some(value.to_vec()),
            b"mtime" => {
                let text = std::str::from_utf8(value).map_err(|_| bad())?;
                let seconds = text.split('.').next().unwrap_or_default();
                overrides.mtime = Some(seconds.parse().map_err(|_| bad())?);
            }
            _ => {}
        }
        records = &records[length..];
    }
    Ok(())
}

impl Engine {
    /// What is at `path` in the container `id` (running or not; a mounted volume's files
    /// included), as a tar stream whose entries are named from `path`'s last component. An
    /// entry's content is at most `max_entry` bytes.
    pub fn download(&self, id: &str, path: &str, max_entry: u64) -> TarReader {
        let options = bollard::query_parameters::DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let what = format!("copying {path} out of container {id}");
        let context = what.clone();
        let stream = self
            .api
            .download_from_container(id, Some(options))
            .map(move |piece| piece.map_err(|e| DockerError::api(&context, e)));
        TarReader::new(stream, what, max_entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(tar: Vec<u8>, max_entry: u64) -> TarReader {
        // Pieces of odd sizes, as a network delivers them.
        let pieces: Vec<Result<Bytes, DockerError>> = tar
            .chunks(700)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        TarReader::new(futures_util::stream::iter(pieces), "test".into(), max_entry)
    }

    async fn all(mut reader: TarReader) -> Result<Vec<TarEntry>, DockerError> {
        let mut entries = Vec::new();
        while let Some(entry) = reader.next_entry().await? {
            entries.push(entry);
        }
        Ok(entries)
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A tree made by GNU tar in PAX format (as Go writes long names), with a name longer
    /// than a ustar header holds, read back.
    #[test]
    fn reads_what_tar_writes_long_names_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plain");
        let long = format!("cur/{}:2,S", "1796602699.M482047P76.".repeat(8));
        std::fs::create_dir_all(root.join("cur")).unwrap();
        std::fs::write(root.join(&long), b"Subject: x\n\nbody\n").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        let status = std::process::Command::new("tar")
            .args(["--format=pax", "--sort=name", "--mtime=@1796602682", "-cf"])
            .arg(dir.path().join("t.tar"))
            .arg("-C")
            .arg(dir.path())
            .arg("plain")
            .status()
            .unwrap();
        assert!(status.success());
        let tar = std::fs::read(dir.path().join("t.tar")).unwrap();
        let entries = run(all(reader(tar, 1 << 20))).unwrap();
        let listed: Vec<(String, EntryKind, i64, &[u8])> = entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8(e.path.clone()).unwrap(),
                    e.kind,
                    e.mtime,
                    e.content.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "plain".to_string(),
                    EntryKind::Directory,
                    1796602682,
                    &b""[..]
                ),
                ("plain/cur".into(), EntryKind::Directory, 1796602682, b""),
                (
                    format!("plain/{long}"),
                    EntryKind::File,
                    1796602682,
                    b"Subject: x\n\nbody\n"
                ),
                ("plain/empty".into(), EntryKind::File, 1796602682, b""),
            ]
        );
    }

    fn header(name: &str, flag: u8, size: u64) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        block[100..107].copy_from_slice(b"0000600");
        block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        block[136..147].copy_from_slice(b"00000000001");
        block[156] = flag;
        block[257..263].copy_from_slice(b"ustar\0");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        block
    }

    fn with_content(mut header: Vec<u8>, content: &[u8]) -> Vec<u8> {
        header.extend_from_slice(content);
        header.resize(header.len().div_ceil(BLOCK) * BLOCK, 0);
        header
    }

    #[test]
    fn a_damaged_cut_or_oversized_stream_is_refused_and_other_kinds_are_named() {
        let end = vec![0u8; 2 * BLOCK];
        let good = [with_content(header("a", b'0', 3), b"abc"), end.clone()].concat();
        assert_eq!(run(all(reader(good.clone(), 3))).unwrap().len(), 1);
        let error = |tar: Vec<u8>, max: u64| run(all(reader(tar, max))).unwrap_err().to_string();
        assert!(error(good.clone(), 2).contains("more than the 2 taken"));
        let mut damaged = good.clone();
        damaged[10] ^= 1;
        assert!(error(damaged, 3).contains("checksum"));
        assert!(error(good[..BLOCK + 100].to_vec(), 3).contains("ends inside an entry"));
        assert!(error(good[..2 * BLOCK].to_vec(), 3).contains("without its end marker"));
        let link = [header("l", b'2', 0), end].concat();
        assert_eq!(
            run(all(reader(link, 3))).unwrap()[0].kind,
            EntryKind::Other(b'2')
        );
    }

    #[test]
    fn numbers_are_octal_or_base_256() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"   17 \0"), Some(0o17));
        assert_eq!(number(b"\0\0\0"), Some(0));
        assert_eq!(number(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(b"9"), None);
    }
}
