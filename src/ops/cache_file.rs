//! Our cache files (`create`'s files cache and chunk index): a 16-byte magic naming the kind
//! and version, a body, and a SHA-256 of both. A cache is only ever a shortcut, so one that is
//! damaged, of another version or missing is rebuilt, never trusted in part.

use std::io::{self, Write};
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

/// The body of a cache file [`save`] wrote with `magic`; `None` if it is damaged or
/// of another kind or version.
pub fn body<'a>(data: &'a [u8], magic: &[u8; 16]) -> Option<&'a [u8]> {
    let (checked, digest) = data.split_at_checked(data.len().checked_sub(32)?)?;
    if Sha256::digest(checked).as_slice() != digest {
        return None;
    }
    checked.strip_prefix(magic)
}
