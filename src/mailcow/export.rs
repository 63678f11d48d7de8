//! `export`: one mailbox of an archive as a plain, **decrypted** mbox file or maildir tree that
//! anyone can open (Thunderbird, `mutt -f`), without touching the live mailcow.
//!
//! **How**: the restore drill's machinery ([`super::throwaway`]). The restore's own helper
//! writes the mailbox's subtree and the archive's mail_crypt keys into a scratch volume; a
//! throwaway container of the installation's own dovecot image, without network, configured
//! by us with mail_crypt and those keys, copies the mailbox with `doveadm backup` (dsync) into
//! a plain maildir beside it — dovecot reads each mail through its zlib and mail_crypt plugins
//! and writes it back with neither (`mail_crypt_save_version = 0`, no `zlib_save`); the copy is
//! read out through the Docker API (the engine's tar stream) and written here as the mbox or
//! the maildir. Everything the run made carries [`EXPORT_LABEL`] and is removed at its end,
//! also when a signal stops it; what a killed run left, the next removes.
//!
//! **Why not decode mail_crypt and dovecot's compression in Rust**: that is dovecot's private
//! format (its per-mail key envelopes, its streams of several compressors and versions, its
//! keys possibly in a user's own mailbox attributes), which dovecot may change, and which a
//! second implementation could get subtly wrong on mail the tests never saw — the one program
//! that certainly reads what dovecot wrote is that installation's dovecot. The cost is a
//! container start and a copy, small beside the restore (BENCHMARKS.md). dsync also keeps
//! what a reader needs: flags (maildir), folders, the received date (the files' mtime).
//!
//! **The output** is written under a temporary name beside `PATH` (created 0600, a maildir's
//! directories 0700, files 0600) and renamed to `PATH` only once complete and synced, without
//! replacing anything (`renameat2` with `RENAME_NOREPLACE`): an existing `PATH` is refused
//! before anything runs, and a run that fails or is stopped removes its temporary output.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::docker::Engine;
use crate::docker::tar_stream::EntryKind;
use crate::error::ErrorKind;

use super::components::Component;
use super::conf::MailcowConf;
use super::crypt_keys::CRYPT_KEYS;
use super::mail_filter::MailFilter;
use super::maildir_names::{INBOX, NameError, folder_dir, folder_name};
use super::mbox;
use super::restore::RestoreOptions;
use super::restore_plan::{PlanError, mailbox_path};
use super::summary::Tally;
use super::throwaway::{
    DovecotError, Purpose, RESTORED, Scratch, ScratchError, Stop, doveadm, in_scratch,
};

/// The label of everything an export makes; the value is the project.
pub const EXPORT_LABEL: &str = "org.mailcow-borg.export";
/// The largest message taken: each is held in memory while it is written.
const MAX_MESSAGE: u64 = 1 << 30;
/// Where dovecot writes the plain copy: in the scratch volume, beside the restored files.
const PLAIN: &str = "plain";
/// Copies the mailbox (`$1`) plain into the maildir `$2`; dovecot's errors fail it, also when
/// doveadm exits 0 after saying one.
const COPY_PLAIN: &str = r#"c=$0
e=/tmp/mcb-dovecot/backup.err
mkdir -p "$2" && chown 5000:5000 "$2" || exit 1
doveadm -c "$c" backup -u "$1" "maildir:$2:INDEX=MEMORY" 2>"$e"
rc=$?
while IFS= read -r line; do
  case $line in *Error:*|*Fatal:*) printf '%s\n' "$line" >&2; exit 1;; esac
done < "$e"
[ $rc -eq 0 ] || { tail -n 1 "$e" >&2; echo "doveadm backup exited with $rc" >&2; exit 1; }"#;
/// Lists the maildir `$1`, NUL-separated: its folders' directories (`./.Name`), then its
/// mail files (`./cur/…`, `./.Name/new/…`).
const LIST_MAILDIR: &str = r#"cd "$1" || exit 1
find . -mindepth 1 -maxdepth 1 -type d -name '.?*' -print0 || exit 1
find . -mindepth 2 -maxdepth 3 -type f \( -path './cur/*' -o -path './new/*' -o -path './.*/cur/*' -o -path './.*/new/*' \) -print0"#;
/// Removes the paths on stdin (NUL-separated, relative) from the maildir `$0`.
const REMOVE: &str = r#"cd "$0" && xargs -0 -r rm -rf --"#;

/// What the mailbox is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One mbox file (mboxrd) with every message of every folder.
    Mbox,
    /// A maildir++ tree, as mailcow keeps it: INBOX at its top, a folder `.Name` each.
    Maildir,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Mbox => "mbox",
            Format::Maildir => "maildir",
        }
    }
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    /// `user@domain`.
    pub mailbox: String,
    /// The archive's name, or `latest`.
    pub archive: String,
    pub format: Format,
    pub output: PathBuf,
    /// Which of the mailbox's mail is exported.
    pub selection: MailFilter,
    /// Check everything, write nothing.
    pub dry_run: bool,
}

/// What was exported (or would be, in a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// The archive's name (`latest` resolved).
    pub archive: String,
    /// The mailbox's files in the archive (mail, dovecot's indexes and lists).
    pub archived: Tally,
    /// Messages written, and their bytes.
    pub messages: u64,
    pub bytes: u64,
    /// The folders they are in, by IMAP name.
    pub folders: BTreeSet<String>,
    /// Things that did not fully work but did not fail the export.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("archive {archive} holds no folder {folder:?} of {mailbox}")]
    UnknownFolder {
        archive: String,
        mailbox: String,
        folder: String,
    },
    #[error("{0} exists: export never writes over anything; give a path that does not exist")]
    Exists(PathBuf),
    #[error("{0}: no such directory to write the export into")]
    NoDirectory(PathBuf),
    #[error("writing {}: {source}", .path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no dovecot-mailcow container to take dovecot's image from: export reads the mail with this mailcow's own dovecot"
    )]
    NoDovecotImage,
    #[error("the dovecot-mailcow image has no dovecot")]
    NoDovecot,
    #[error("the throwaway dovecot {0}")]
    Dovecot(String),
    #[error(
        "the restore helper exited with {0} (its message is above): the mailbox does not come back complete from the archive"
    )]
    Files(i64),
    #[error("dovecot cannot read the mail of {mailbox}{keys}: {detail}")]
    Unreadable {
        mailbox: String,
        keys: &'static str,
        detail: String,
    },
    #[error("the plain copy dovecot wrote holds {0}, which is not a maildir's")]
    Unexpected(String),
}

impl ExportError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExportError::Scratch(e) => e.kind(),
            ExportError::Plan(_)
            | ExportError::Name(_)
            | ExportError::UnknownFolder { .. }
            | ExportError::Exists(_)
            | ExportError::NoDirectory(_) => ErrorKind::BadInput,
            ExportError::Files(_) => ErrorKind::Repository,
            ExportError::Unreadable { .. } | ExportError::Unexpected(_) => ErrorKind::Integrity,
            ExportError::Output { .. }
            | ExportError::NoDovecotImage
            | ExportError::NoDovecot
            | ExportError::Dovecot(_) => ErrorKind::Environment,
        }
    }
}

/// Checks what can be checked before anything runs: the mailbox's form, the folders' names,
/// the dates' order, and that `output` is free and its directory there. Returns the mailbox's
/// archive path.
pub fn check_request(request: &ExportRequest) -> Result<String, ExportError> {
    let (subtree, _) = mailbox_path(&request.mailbox)?;
    request.selection.check()?;
    if request.output.symlink_metadata().is_ok() {
        return Err(ExportError::Exists(request.output.clone()));
    }
    let parent = parent_of(&request.output);
    if !parent.is_dir() {
        return Err(ExportError::NoDirectory(parent.to_path_buf()));
    }
    Ok(subtree)
}

/// The directory `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Exports `request`'s mailbox; `say` gets a line for each step. Everything the run made in
/// Docker is removed before it returns, whatever happened.
pub async fn export(
    engine: &Engine,
    options: &RestoreOptions,
    conf: &MailcowConf,
    request: &ExportRequest,
    stop: Stop,
    say: &(dyn Fn(&str) + Sync),
) -> Result<ExportReport, ExportError> {
    let subtree = check_request(request)?;
    // The folders' directories, to find them in the archive's summary (at this mailcow's
    // MAILDIR_SUB; the archive's is known only from the summary).
    let folder_paths: Vec<(String, String)> = request
        .selection
        .folders
        .iter()
        .filter_map(|folder| {
            let dir = folder_dir(folder).ok()?;
            (!dir.is_empty()).then(|| {
                let path = format!("{}/{dir}", maildir_of(&subtree, &conf.maildir_sub));
                (folder.clone(), path)
            })
        })
        .collect();
    let purpose = Purpose {
        label: EXPORT_LABEL,
        name: "export",
        archive: &request.archive,
        subtrees: std::iter::once(subtree.clone())
            .chain(folder_paths.iter().map(|(_, path)| path.clone()))
            .collect(),
    };
    in_scratch(
        engine,
        options,
        conf,
        purpose,
        stop,
        async |scratch: &Scratch<'_>, stop| {
            export_in(scratch, request, &subtree, &folder_paths, stop, say).await
        },
    )
    .await
}

/// The export, in the scratch run: `subtree` is the mailbox's archive path, `folder_paths`
/// the asked-for folders' (by IMAP name) at this mailcow's MAILDIR_SUB.
async fn export_in(
    scratch: &Scratch<'_>,
    request: &ExportRequest,
    subtree: &str,
    folder_paths: &[(String, String)],
    mut stop: Stop,
    say: &(dyn Fn(&str) + Sync),
) -> Result<ExportReport, ExportError> {
    let conf = scratch.conf;
    let summary = &scratch.summary;
    let archived =
        *summary
            .subtrees
            .get(subtree)
            .ok_or_else(|| PlanError::SubtreeNotInArchive {
                archive: summary.name.clone(),
                what: subtree.to_string(),
            })?;
    let unknown = |folder: &str| ExportError::UnknownFolder {
        archive: summary.name.clone(),
        mailbox: request.mailbox.clone(),
        folder: folder.to_string(),
    };
    if scratch.maildir_sub() == conf.maildir_sub
        && let Some((folder, _)) = folder_paths
            .iter()
            .find(|(_, path)| !summary.subtrees.contains_key(path))
    {
        return Err(unknown(folder));
    }
    let image = scratch
        .image_of("dovecot-mailcow")
        .ok_or(ExportError::NoDovecotImage)?;
    let mut report = ExportReport {
        archive: summary.name.clone(),
        archived,
        ..ExportReport::default()
    };
    if request.dry_run {
        return Ok(report);
    }
    let keys = summary.crypt_keys.in_archive;
    let mut paths = vec![subtree.to_string()];
    if keys {
        let crypt = Component::Crypt.archive_dir();
        paths.extend(CRYPT_KEYS.map(|key| format!("{crypt}/{key}")));
    } else {
        report.warnings.push(
            concat!(
                "the archive holds no mail_crypt keys: ",
                "mail dovecot stored encrypted cannot be read"
            )
            .into(),
        );
    }
    let volume = scratch.volume_name("files");
    scratch
        .engine
        .create_volume(&volume, &scratch.labels)
        .await
        .map_err(ScratchError::from)?;
    say(&format!(
        "restoring {} of archive {} into scratch volume {volume}",
        paths.join(", "),
        summary.name
    ));
    match scratch
        .restore_into(paths, &volume, &mut stop)
        .await
        .map_err(ScratchError::from)?
    {
        (_, Some(signal)) => return Err(ScratchError::Stopped(signal).into()),
        (0, None) => {}
        (1, None) => report
            .warnings
            .push("some of the mailbox's files could not be restored (listed above)".into()),
        (code, None) => return Err(ExportError::Files(code)),
    }
    say("copying the mail plain with dovecot in a throwaway container without network");
    let id = scratch
        .start_dovecot(image, &volume, keys)
        .await
        .map_err(|e| match e {
            DovecotError::NoDovecot => ExportError::NoDovecot,
            DovecotError::Failed(e) => ExportError::Dovecot(format!("did not start: {e}")),
        })?;
    if !request.selection.is_all() {
        let maildir = format!("{RESTORED}/{}", maildir_of(subtree, scratch.maildir_sub()));
        let listed = doveadm(
            scratch.engine,
            &id,
            LIST_MAILDIR,
            std::slice::from_ref(&maildir),
        )
        .await
        .map_err(|e| ExportError::Dovecot(format!("could not list the mailbox: {e}")))?;
        let removed =
            unselected(listed.as_bytes(), &request.selection).map_err(|folder| unknown(&folder))?;
        let (_, finished) = scratch
            .engine
            .exec_capture(&id, &["sh", "-c", REMOVE, &maildir], &removed.join(&0u8))
            .await
            .map_err(ScratchError::from)?;
        if finished.exit_code != 0 {
            return Err(ExportError::Dovecot(format!(
                "could not leave out the mail not selected: {}",
                finished.last_error_line()
            )));
        }
    }
    let plain = format!("{RESTORED}/{PLAIN}");
    doveadm(
        scratch.engine,
        &id,
        COPY_PLAIN,
        &[request.mailbox.clone(), plain.clone()],
    )
    .await
    .map_err(|detail| ExportError::Unreadable {
        mailbox: request.mailbox.clone(),
        keys: if keys {
            " with the archive's mail_crypt keys"
        } else {
            " (the archive holds no mail_crypt keys)"
        },
        detail,
    })?;
    say(&format!(
        "writing {} as {}",
        request.output.display(),
        request.format.name()
    ));
    write_output(scratch, &id, &plain, request, &mut report).await?;
    Ok(report)
}

/// The maildir of the mailbox at the archive path `mailbox`.
fn maildir_of(mailbox: &str, maildir_sub: &str) -> String {
    if maildir_sub.is_empty() {
        mailbox.to_string()
    } else {
        format!("{mailbox}/{maildir_sub}")
    }
}

/// What of the restored maildir [`LIST_MAILDIR`] listed (`listing`) is not selected: the
/// directories of folders not asked for, the mail files of INBOX when it is not, and the mail
/// files of asked-for folders delivered outside the window. A folder asked for that is not
/// there is returned as the error.
fn unselected(listing: &[u8], selection: &MailFilter) -> Result<Vec<Vec<u8>>, String> {
    let mut folders = vec![String::new()];
    let mut mails: Vec<(&[u8], String, &[u8])> = Vec::new();
    for path in listing.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let components: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        match components[..] {
            [b".", dir] => folders.push(String::from_utf8_lossy(dir).into_owned()),
            [b".", b"cur" | b"new", name] => mails.push((path, String::new(), name)),
            [b".", dir, b"cur" | b"new", name] => {
                mails.push((path, String::from_utf8_lossy(dir).into_owned(), name))
            }
            // Nothing else is listed.
            _ => {}
        }
    }
    let wanted: Vec<String> = if selection.folders.is_empty() {
        folders.clone()
    } else {
        let mut wanted = Vec::new();
        for folder in &selection.folders {
            let dir = folder_dir(folder).map_err(|_| folder.clone())?;
            if !folders.contains(&dir) {
                return Err(folder.clone());
            }
            wanted.push(dir);
        }
        wanted
    };
    let mut removed: Vec<Vec<u8>> = folders
        .iter()
        .filter(|dir| !dir.is_empty() && !wanted.contains(dir))
        .map(|dir| format!("./{dir}").into_bytes())
        .collect();
    for (path, dir, name) in mails {
        let kept = wanted.contains(&dir) && selection.in_window(&String::from_utf8_lossy(name));
        // A folder not asked for goes as a whole, but INBOX is the maildir itself.
        if !kept && (dir.is_empty() || wanted.contains(&dir)) {
            removed.push(path.to_vec());
        }
    }
    Ok(removed)
}

/// Where a tar entry of the plain copy belongs: its path below the copy's top, checked
/// component by component (nothing may lead out of the output), and the folder of a mail.
#[derive(Debug, PartialEq, Eq)]
struct Placed {
    relative: PathBuf,
    /// `Some(folder)` for a mail: a file in a folder's `cur` or `new`.
    mail_of: Option<String>,
}

fn place(path: &[u8]) -> Result<Option<Placed>, ExportError> {
    let unexpected = || ExportError::Unexpected(format!("{:?}", String::from_utf8_lossy(path)));
    let mut components = path.split(|b| *b == b'/');
    // The copy's own directory, which the tar names first.
    if components.next() != Some(PLAIN.as_bytes()) {
        return Err(unexpected());
    }
    let components: Vec<&[u8]> = components.collect();
    if components.is_empty() {
        return Ok(None);
    }
    if components
        .iter()
        .any(|c| c.is_empty() || *c == b"." || *c == b"..")
    {
        return Err(unexpected());
    }
    let mail_of = match components[..] {
        [b"cur" | b"new", _] => Some(INBOX.to_string()),
        [folder, b"cur" | b"new", _] if folder.starts_with(b".") => {
            let dir = String::from_utf8_lossy(folder);
            Some(folder_name(&dir).unwrap_or_else(|| dir.into_owned()))
        }
        _ => None,
    };
    let relative = components
        .iter()
        .map(|c| Path::new(OsStr::from_bytes(c)))
        .collect();
    Ok(Some(Placed { relative, mail_of }))
}

/// The output being written under a temporary name; removed unless committed.
struct Staged {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staged {
    fn new(target: &Path) -> Staged {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        Staged {
            temp: parent_of(target).join(format!(".{name}.mcb-export-{}", std::process::id())),
            target: target.to_path_buf(),
            committed: false,
        }
    }

    fn error(&self, source: std::io::Error) -> ExportError {
        ExportError::Output {
            path: self.target.clone(),
            source,
        }
    }

    /// Renames it to the target, which must still not exist, and makes the rename durable.
    fn commit(mut self) -> Result<(), ExportError> {
        if let Err(e) = crate::ops::fs_write::rename_no_replace(&self.temp, &self.target) {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(ExportError::Exists(self.target.clone()));
            }
            return Err(self.error(e));
        }
        self.committed = true;
        std::fs::File::open(parent_of(&self.target))
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.error(e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ =
                std::fs::remove_dir_all(&self.temp).or_else(|_| std::fs::remove_file(&self.temp));
        }
    }
}

/// Reads the plain copy at `plain` in the dovecot container `id` and writes it as asked.
async fn write_output(
    scratch: &Scratch<'_>,
    id: &str,
    plain: &str,
    request: &ExportRequest,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    let staged = Staged::new(&request.output);
    let mut entries = scratch.engine.download(id, plain, MAX_MESSAGE);
    let mut mbox = match request.format {
        Format::Mbox => Some(BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged.temp)
                .map_err(|e| staged.error(e))?,
        )),
        Format::Maildir => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&staged.temp)
                .map_err(|e| staged.error(e))?;
            None
        }
    };
    while let Some(entry) = entries.next_entry().await.map_err(ScratchError::from)? {
        let Some(placed) = place(&entry.path)? else {
            continue;
        };
        match entry.kind {
            EntryKind::File | EntryKind::Directory => {}
            EntryKind::Other(_) => {
                return Err(ExportError::Unexpected(format!(
                    "{} (neither a file nor a directory)",
                    placed.relative.display()
                )));
            }
        }
        if let (EntryKind::File, Some(folder)) = (entry.kind, &placed.mail_of) {
            report.messages += 1;
            report.bytes += entry.content.len() as u64;
            report.folders.insert(folder.clone());
        }
        let written = match (&mut mbox, entry.kind) {
            (Some(out), EntryKind::File) if placed.mail_of.is_some() => {
                mbox::write_message(out, &entry.content, entry.mtime)
            }
            (Some(_), _) => Ok(()),
            (None, EntryKind::Directory) => std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(staged.temp.join(&placed.relative)),
            (None, _) => write_file(
                &staged.temp.join(&placed.relative),
                &entry.content,
                entry.mtime,
            ),
        };
        written.map_err(|e| staged.error(e))?;
    }
    match mbox {
        Some(out) => {
            let file = out.into_inner().map_err(|e| staged.error(e.into_error()))?;
            file.sync_all().map_err(|e| staged.error(e))?;
        }
        None => crate::ops::durable::sync_all_file_systems(),
    }
    staged.commit()
}

/// A file of the maildir, 0600, with its time: dovecot takes a mail file's mtime for the
/// date it was received.
fn write_file(path: &Path, content: &[u8], mtime: i64) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    file.set_modified(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copys_entries_are_placed_below_it_and_mails_know_their_folder() {
        let placed = |path: &str| place(path.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(placed("plain"), Ok(None));
        assert_eq!(
            placed("plain/cur/1.M2P3.h,S=5:2,S"),
            Ok(Some(Placed {
                relative: "cur/1.M2P3.h,S=5:2,S".into(),
                mail_of: Some("INBOX".into())
            }))
        );
        assert_eq!(
            placed("plain/.Projects.2025/new/1.M2"),
            Ok(Some(Placed {
                relative: ".Projects.2025/new/1.M2".into(),
                mail_of: Some("Projects/2025".into())
            }))
        );
        assert_eq!(
            placed("plain/dovecot-uidlist").unwrap().unwrap().mail_of,
            None
        );
        assert_eq!(placed("plain/.Sent/tmp/x").unwrap().unwrap().mail_of, None);
        for bad in [
            "other/cur/x",
            "plain/../x",
            "plain//x",
            "plain/./x",
            "/plain/x",
        ] {
            assert!(placed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_is_not_selected_is_left_out_by_folder_and_delivery_time() {
        let listing = b"./.Sent\0./.Projects.2025\0./cur/1700000000.M1P1.h:2,S\0./new/1800000000.M2P2.h\0./.Sent/cur/1700000500.M3P3.h:2,\0./.Projects.2025/cur/1800000000.M4P4.h:2,S\0./.Projects.2025/cur/no-time\0";
        let removed = |selection: MailFilter| -> Result<Vec<String>, String> {
            unselected(listing, &selection).map(|removed| {
                removed
                    .iter()
                    .map(|p| String::from_utf8(p.clone()).unwrap())
                    .collect()
            })
        };
        let folders = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert_eq!(removed(MailFilter::default()), Ok(vec![]));
        assert_eq!(
            removed(MailFilter {
                folders: folders(&["Projects/2025"]),
                ..MailFilter::default()
            }),
            Ok(vec![
                "./.Sent".into(),
                "./cur/1700000000.M1P1.h:2,S".into(),
                "./new/1800000000.M2P2.h".into()
            ])
        );
        assert_eq!(
            removed(MailFilter {
                folders: folders(&["inbox", "Sent"]),
                since: Some(1_700_000_100),
                before: None,
            }),
            Ok(vec![
                "./.Projects.2025".into(),
                "./cur/1700000000.M1P1.h:2,S".into()
            ])
        );
        // A name without a time is outside every window.
        assert_eq!(
            removed(MailFilter {
                folders: Vec::new(),
                since: None,
                before: Some(1_800_000_000),
            }),
            Ok(vec![
                "./new/1800000000.M2P2.h".into(),
                "./.Projects.2025/cur/1800000000.M4P4.h:2,S".into(),
                "./.Projects.2025/cur/no-time".into()
            ])
        );
        assert_eq!(
            removed(MailFilter {
                folders: folders(&["Sent", "Trash"]),
                ..MailFilter::default()
            }),
            Err("Trash".into())
        );
    }

    #[test]
    fn an_existing_output_or_a_missing_directory_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let request = |output: PathBuf, mailbox: &str| ExportRequest {
            mailbox: mailbox.into(),
            archive: "latest".into(),
            format: Format::Mbox,
            output,
            selection: MailFilter::default(),
            dry_run: false,
        };
        let free = dir.path().join("out.mbox");
        assert_eq!(
            check_request(&request(free.clone(), "u@example.org")).unwrap(),
            "vmail/example.org/u"
        );
        std::fs::write(&free, b"").unwrap();
        assert!(matches!(
            check_request(&request(free, "u@example.org")),
            Err(ExportError::Exists(_))
        ));
        assert!(matches!(
            check_request(&request(dir.path().join("no/out"), "u@example.org")),
            Err(ExportError::NoDirectory(_))
        ));
        assert!(matches!(
            check_request(&request(dir.path().join("x"), "no-domain")),
            Err(ExportError::Plan(PlanError::BadMailbox(_)))
        ));
        let mut bad_folder = request(dir.path().join("x"), "u@example.org");
        bad_folder.selection.folders = vec!["Projects//2025".into()];
        assert!(matches!(
            check_request(&bad_folder),
            Err(ExportError::Name(NameError::EmptyLevel(_)))
        ));
        let mut empty_window = request(dir.path().join("x"), "u@example.org");
        empty_window.selection.since = Some(2);
        empty_window.selection.before = Some(2);
        assert!(matches!(
            check_request(&empty_window),
            Err(ExportError::Name(NameError::EmptyWindow))
        ));
    }

    #[test]
    fn staged_output_is_removed_unless_committed_and_never_replaces_anything() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let staged = Staged::new(&target);
        std::fs::create_dir(&staged.temp).unwrap();
        std::fs::write(staged.temp.join("f"), b"x").unwrap();
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let staged = Staged::new(&target);
        std::fs::write(&staged.temp, b"mail").unwrap();
        std::fs::write(&target, b"someone else's").unwrap();
        assert!(matches!(staged.commit(), Err(ExportError::Exists(_))));
        assert_eq!(std::fs::read(&target).unwrap(), b"someone else's");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        std::fs::remove_file(&target).unwrap();
        let staged = Staged::new(&target);
        std::fs::write(&staged.temp, b"mail").unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"mail");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
