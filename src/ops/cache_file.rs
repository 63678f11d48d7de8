//! Our cache files (`create`'s files cache and chunk index): a 16-byte magic naming the kind
//! and version, a body, and a SHA-256 of both. A cache is only ever a shortcut, so one that is
//! damaged, of another version or missing is rebuilt, never trusted in part.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Writes a cache file: `magic`, the body `write_body` writes, and a SHA-256 of both, through a
/// temporary file and a rename, so readers see the old file or the new one. The body goes
/// straight to the file, never whole in memory: a files cache of millions of entries is
/// hundreds of megabytes. It is not synced: after a power loss it may be empty or partial,
/// which the checksum reveals, and a damaged cache is only rebuilt — not worth an fsync on
/// every run.
pub fn save(
    path: &Path,
    magic: &[u8; 16],
    write_body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    super::durable::create_private_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let hashed = Hashed {
        file: std::fs::File::create(&tmp)?,
        digest: Sha256::new(),
    };
    // Buffered before the hashing, so the digest takes the body in large pieces.
    let mut out = io::BufWriter::with_capacity(1 << 16, hashed);
    out.write_all(magic)?;
    write_body(&mut out)?;
    let Hashed { mut file, digest } = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.write_all(&digest.finalize())?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// A file that hashes what is written to it.
struct Hashed {
    file: std::fs::File,
    digest: Sha256,
}

impl Write for Hashed {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.digest.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What [`load`] found.
pub enum Cached<T> {
    Loaded(T),
    /// No file, or one an earlier or later version wrote: a cache to build, with nothing to
    /// warn about (an upgrade must not turn the next backup into a warning).
    Absent,
    /// Damaged: its checksum or its records are wrong.
    Damaged,
}

/// Reads a cache file [`save`] wrote with `magic`, a piece at a time: `read_body` is given its
/// body to read to the end (`None`: it is malformed), and the checksum is compared after. Like
/// saving, loading never holds the whole file: a files cache of millions of entries is hundreds
/// of megabytes. The last byte of `magic` is its version.
pub fn load<T>(
    path: &Path,
    magic: &[u8; 16],
    read_body: impl FnOnce(&mut Body) -> Option<T>,
) -> io::Result<Cached<T>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cached::Absent),
        Err(e) => return Err(e),
    };
    let Some(body_len) = file.metadata()?.len().checked_sub(16 + 32) else {
        return Ok(Cached::Damaged);
    };
    let mut body = Body {
        file: io::BufReader::with_capacity(1 << 16, file),
        digest: Sha256::new(),
        left: 16 + body_len,
    };
    match body.array::<16>() {
        Some(found) if found == *magic => {}
        Some(found) if found[..15] == magic[..15] => return Ok(Cached::Absent),
        _ => return Ok(Cached::Damaged),
    }
    let Some(value) = read_body(&mut body).filter(|_| body.left == 0) else {
        return Ok(Cached::Damaged);
    };
    let mut digest = [0u8; 32];
    body.file.read_exact(&mut digest)?;
    Ok(if body.digest.finalize().as_slice() == digest {
        Cached::Loaded(value)
    } else {
        Cached::Damaged
    })
}

/// The body of a cache file being loaded, hashed as it is read; every read is `None` past its end.
pub struct Body {
    file: io::BufReader<std::fs::File>,
    digest: Sha256,
    left: u64,
}

impl Body {
    /// The bytes not read yet.
    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut bytes = [0u8; N];
        self.left = self.left.checked_sub(N as u64)?;
        self.file.read_exact(&mut bytes).ok()?;
        self.digest.update(bytes);
        Some(bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}
