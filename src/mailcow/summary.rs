//! What a restore must know about an archive before it plans anything, gathered by the helper
//! (which holds the repository's key) and handed to the host as JSON on the helper's stdout:
//! the archive's name (with `latest` resolved), its origin, which components it holds and how
//! much, where the database dump is, whether the requested mailboxes and domains are in it,
//! and whether its mail_crypt keys are there — and the same as the target's.
//!
//! Reading it costs one pass over the item stream (metadata only) and two tiny files.

use std::collections::BTreeMap;
use std::path::Path;

use crate::format::item::{ChunkRef, ItemKind};
use crate::format::manifest::Manifest;
use crate::ops::items::ReadError;
use crate::ops::open::OpenRepository;

use super::components::Component;
use super::crypt_keys::CRYPT_KEYS;
use super::mail_merge::{MailCount, MailSummary};
use super::origin::Origin;

/// The archive name that means the newest archive.
pub const LATEST: &str = "latest";

/// Items and bytes below an archive path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub items: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SqlDump {
    /// Its archive path, `mysql/<database>.sql`.
    pub path: String,
    pub database: String,
    pub bytes: u64,
}

/// The mail_crypt key pair: in the archive, in the target, and whether they are the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CryptKeys {
    /// Both keys are in the archive, not empty.
    pub in_archive: bool,
    /// Both keys are in the target's crypt volume, not empty (`None`: not looked at).
    pub in_target: Option<bool>,
    /// Whether the archive's keys are byte for byte the target's (`None`: one side lacks them).
    pub same: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveSummary {
    pub name: String,
    /// The start time as borg stores it (`%Y-%m-%dT%H:%M:%S.%f`, UTC).
    pub time: String,
    pub hostname: String,
    /// What `backup` recorded; `None` for archives it did not write.
    pub origin: Option<Origin>,
    /// The archive's top-level directories (the components), with what is below them.
    pub components: BTreeMap<String, Tally>,
    pub sql_dumps: Vec<SqlDump>,
    /// The requested subtrees (`vmail/<domain>[/<user>]`) that are in the archive.
    pub subtrees: BTreeMap<String, Tally>,
    pub crypt_keys: CryptKeys,
    /// Per folder of the subtrees: the mail a merge brings back and a mirror removes (when
    /// the live mail was looked at).
    #[serde(default)]
    pub mail: MailSummary,
}

/// The name of the archive `name` stands for: itself, or for [`LATEST`] the newest archive
/// that is not a checkpoint.
pub fn resolve_name(manifest: &Manifest, name: &str) -> Result<String, ReadError> {
    if name != LATEST {
        return Ok(name.to_string());
    }
    manifest
        .archives
        .iter()
        .filter(|(name, _)| !name.ends_with(b".checkpoint"))
        .max_by(|a, b| a.1.time.cmp(&b.1.time))
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
        .ok_or_else(|| ReadError::NoSuchArchive("latest (the repository has no archives)".into()))
}

/// Whether `path` is `prefix` or below it.
fn is_below(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// Summarises the archive `name` (or [`LATEST`]); `subtrees` are archive paths to look for,
/// `target_crypt` is where the target's crypt volume is mounted, if it is, and `mail` counts
/// the subtrees' mail against the live mail.
pub async fn summarize(
    repo: &OpenRepository,
    name: &str,
    subtrees: &[String],
    target_crypt: Option<&Path>,
    mut mail: Option<MailCount>,
) -> Result<ArchiveSummary, ReadError> {
    let name = resolve_name(&repo.manifest, name)?;
    let archive = repo.authenticated_archive(&name).await?;
    let text = |bytes: &Option<Vec<u8>>| {
        String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).into_owned()
    };
    let mut summary = ArchiveSummary {
        time: String::from_utf8_lossy(&archive.meta.time).into_owned(),
        hostname: text(&archive.meta.hostname),
        origin: Origin::parse(&text(&archive.meta.comment)),
        name,
        components: BTreeMap::new(),
        sql_dumps: Vec::new(),
        subtrees: BTreeMap::new(),
        crypt_keys: CryptKeys::default(),
        mail: MailSummary::default(),
    };
    let crypt_dir = Component::Crypt.archive_dir();
    let key_paths: Vec<String> = CRYPT_KEYS
        .iter()
        .map(|k| format!("{crypt_dir}/{k}"))
        .collect();
    let mut key_chunks: Vec<Option<Vec<ChunkRef>>> = vec![None; CRYPT_KEYS.len()];
    let mysql_prefix = format!("{}/", Component::Mysql.archive_dir());
    let mut batches = repo.items(&archive);
    while let Some(batch) = batches.recv().await {
        for item in batch? {
            let bytes = item.size.unwrap_or_else(|| item.chunks_size());
            let regular = item.kind() == ItemKind::Regular;
            let top = item.path.split(|b| *b == b'/').next().unwrap_or_default();
            let tally = summary
                .components
                .entry(String::from_utf8_lossy(top).into_owned())
                .or_default();
            tally.items += 1;
            tally.bytes += bytes;
            let mut in_subtree = false;
            for subtree in subtrees {
                if is_below(&item.path, subtree.as_bytes()) {
                    let tally = summary.subtrees.entry(subtree.clone()).or_default();
                    tally.items += 1;
                    tally.bytes += bytes;
                    in_subtree = true;
                }
            }
            if in_subtree && let Some(mail) = mail.as_mut() {
                mail.add(&item);
            }
            let path = String::from_utf8_lossy(&item.path);
            if let Some(i) = key_paths.iter().position(|p| *p == path)
                && regular
                && bytes > 0
            {
                key_chunks[i] = item.chunks.clone();
            }
            if regular
                && let Some(file) = path.strip_prefix(&mysql_prefix)
                && let Some(database) = file.strip_suffix(".sql")
                && !database.contains('/')
            {
                summary.sql_dumps.push(SqlDump {
                    path: path.to_string(),
                    database: database.to_string(),
                    bytes,
                });
            }
        }
    }
    let mut archive_keys = Vec::new();
    for chunks in key_chunks.iter().flatten() {
        let mut content = Vec::new();
        for chunk in chunks {
            content.extend(repo.chunk(chunk).await?);
        }
        archive_keys.push(content);
    }
    if let Some(mail) = mail {
        summary.mail = mail.finish(subtrees);
    }
    summary.crypt_keys.in_archive = archive_keys.len() == CRYPT_KEYS.len();
    if let Some(dir) = target_crypt {
        let target_keys: Vec<Vec<u8>> = CRYPT_KEYS
            .iter()
            .filter_map(|k| std::fs::read(dir.join(k)).ok())
            .filter(|content| !content.is_empty())
            .collect();
        let in_target = target_keys.len() == CRYPT_KEYS.len();
        summary.crypt_keys.in_target = Some(in_target);
        if in_target && summary.crypt_keys.in_archive {
            summary.crypt_keys.same = Some(target_keys == archive_keys);
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_means_the_path_or_under_it_not_a_longer_name() {
        assert!(is_below(
            b"vmail/example.org/user",
            b"vmail/example.org/user"
        ));
        assert!(is_below(
            b"vmail/example.org/user/Maildir",
            b"vmail/example.org/user"
        ));
        assert!(!is_below(
            b"vmail/example.org/username",
            b"vmail/example.org/user"
        ));
        assert!(!is_below(b"vmail/example.org", b"vmail/example.org/user"));
    }
}
