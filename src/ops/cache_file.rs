//! Our cache files (`create`'s files cache and chunk index): a 16-byte magic naming the kind
//! and version, a body, and a SHA-256 of both. A cache is only ever a shortcut, so one that is
//! damaged, of another version or missing is rebuilt, never trusted in part.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Writes a cache file: `magic`, `body`, and a SHA-256 of both, through a temporary file and
/// a rename, so readers see the old file or the new one. It is not synced: after a power loss it
/// may be empty or partial, which the checksum reveals, and a damaged cache is only rebuilt —
/// not worth an fsync on every run.
pub fn save(path: &Path, magic: &[u8; 16], body: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    super::durable::create_private_dir_all(dir)?;
    let mut data = Vec::with_capacity(magic.len() + body.len() + 32);
    data.extend_from_slice(magic);
    data.extend_from_slice(body);
    let digest = Sha256::digest(&data);
    data.extend_from_slice(&digest);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
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
