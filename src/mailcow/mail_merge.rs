//! Merging archived mail into live maildirs, message by message, without changing anything
//! that is there: the rules of `restore --mailbox/--domain` (the default, not `--mirror`).
//!
//! Every archive item below a mailbox is placed by where it sits in the maildir
//! ([`maildir_names`]):
//! - a message (`<folder>/cur/<name>`, `<folder>/new/<name>`) comes back unless the live
//!   destination folder has a message of the same identity (in `cur` or `new`, whatever its
//!   flags), under its original name, written in the folder's `tmp/` first and renamed into
//!   place only if nothing took the name meanwhile; `--folder`, `--since`/`--before` select;
//! - dovecot's index, uidlist and uidvalidity files never come back (dovecot rebuilds them,
//!   with new UIDs for the restored mail, at `force-resync`), nor `subscriptions` (folders are
//!   subscribed through `doveadm`), nor anything in `tmp/`;
//! - `dovecot-keywords` (which keyword a flag letter `a`…`z` of this folder's messages stands
//!   for) comes back only into a folder that has none live, and never into `--into-folder`,
//!   where letters from several folders would mix: there a message's keyword letters are
//!   dropped from its name (its identity stays), so no later list gives them a meaning they
//!   never had; elsewhere a restored message's keywords read as they did while its folder kept
//!   its keyword list (dovecot only appends to it); the standard flags (seen, answered, …)
//!   always come back;
//! - every other file or directory comes back only where nothing is (the extract's
//!   `keep_existing`), with its archived owner, mode and times.
//!
//! `--into-folder` puts the selected messages of every folder into one folder, and `--to`
//! into another mailbox; then nothing outside the messages' folders is placed.
//!
//! The inspecting helper runs the same rules without writing ([`MailCount`]), so that the plan
//! says per folder how many messages come back, and how many live ones `--mirror` removes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::item::{Item, ItemKind};
use crate::ops::extract::{Placement, Placer};

use super::mail_filter::MailFilter;
use super::maildir_names::{self, INBOX_DIR, INFO_SEPARATOR, NameError};

/// The maildir's subdirectories that hold messages.
const MESSAGE_DIRS: [&str; 2] = ["cur", "new"];
/// Where a message is written before it is renamed into `cur` or `new`.
const STAGING_DIR: &str = "tmp";

/// What of the archived mail is restored, and where to; the same in the inspecting and the
/// restoring helper (whose command lines carry it).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct MailSelection {
    /// `MAILDIR_SUB`: where in a mailbox's directory its maildir is (empty: the directory).
    #[arg(long, value_name = "DIR", default_value = "")]
    pub maildir_sub: String,
    #[command(flatten)]
    pub filter: MailFilter,
    /// One folder (IMAP name) that takes every selected message.
    #[arg(long, value_name = "NAME")]
    pub into_folder: Option<String>,
    /// Another mailbox's archive path (`vmail/<domain>/<user>`) that takes them.
    #[arg(long, value_name = "PATH")]
    pub to: Option<String>,
}

/// Where an archive path sits in vmail.
#[derive(Debug, PartialEq, Eq)]
enum Located<'a> {
    /// Not in a mailbox: `vmail`, `vmail/<domain>`, other components.
    Outside,
    /// In a mailbox (`vmail/<domain>/<user>`) but not in its maildir; `rest` is empty for
    /// the mailbox's own directory.
    Mailbox { mailbox: &'a str, rest: &'a str },
    /// In a folder of the maildir: the folder's directory ([`INBOX_DIR`] for INBOX) and the
    /// path inside it (empty for the folder's own directory).
    Folder {
        mailbox: &'a str,
        folder: &'a str,
        inner: &'a str,
    },
}

fn locate<'a>(path: &'a str, maildir_sub: &str) -> Located<'a> {
    let mut parts = path.splitn(4, '/');
    let (Some("vmail"), Some(_domain), Some(_user)) = (parts.next(), parts.next(), parts.next())
    else {
        return Located::Outside;
    };
    let rest = parts.next().unwrap_or_default();
    let mailbox = &path[..path.len() - rest.len()].trim_end_matches('/');
    let in_maildir = if maildir_sub.is_empty() {
        Some(rest)
    } else if rest == maildir_sub {
        Some("")
    } else {
        rest.strip_prefix(maildir_sub)
            .and_then(|r| r.strip_prefix('/'))
    };
    let Some(in_maildir) = in_maildir else {
        return Located::Mailbox { mailbox, rest };
    };
    let (first, after) = in_maildir.split_once('/').unwrap_or((in_maildir, ""));
    if first.starts_with('.') && maildir_names::folder_name(first).is_some() {
        Located::Folder {
            mailbox,
            folder: first,
            inner: after,
        }
    } else {
        Located::Folder {
            mailbox,
            folder: INBOX_DIR,
            inner: in_maildir,
        }
    }
}

/// What a path inside a folder is.
#[derive(Debug, PartialEq, Eq)]
enum InFolder<'a> {
    /// The folder's directory, or its `cur`, `new`, `tmp`.
    Dir,
    /// A message in `cur` or `new`: which, and its file name.
    Message { dir: &'a str, name: &'a str },
    /// A file of the folder's own (`maildirfolder`, `dovecot-keywords`, …).
    File(&'a str),
    /// Anything else (`tmp/…`, deeper paths).
    Other,
}

fn in_folder(inner: &str) -> InFolder<'_> {
    match inner.split_once('/') {
        None if inner.is_empty() || MESSAGE_DIRS.contains(&inner) || inner == STAGING_DIR => {
            InFolder::Dir
        }
        None => InFolder::File(inner),
        Some((dir, name)) if MESSAGE_DIRS.contains(&dir) && !name.contains('/') => {
            InFolder::Message { dir, name }
        }
        Some(_) => InFolder::Other,
    }
}

/// A folder's own file that comes back (only where none is live, the extract's rule): not
/// dovecot's caches (uidlist, uidvalidity, indexes, logs) nor the subscriptions.
fn folder_file_comes_back(name: &str, into_folder: bool) -> bool {
    match name {
        "maildirfolder" => true,
        "dovecot-keywords" => !into_folder,
        "subscriptions" => false,
        _ => !name.starts_with("dovecot") && !into_folder,
    }
}

/// `user@domain` of a mailbox's archive path `vmail/<domain>/<user>`.
pub fn mailbox_name(mailbox: &str) -> String {
    let mut parts = mailbox.split('/').skip(1);
    let domain = parts.next().unwrap_or_default();
    let user = parts.next().unwrap_or_default();
    format!("{user}@{domain}")
}

/// The rules, with the live maildirs below `root` (where vmail's parent is).
#[derive(Debug)]
pub struct MaildirMerge {
    root: PathBuf,
    selection: MailSelection,
    /// The selected folders' directories; `None`: all.
    folder_dirs: Option<BTreeSet<String>>,
    /// The `--into-folder` directory.
    into_dir: Option<String>,
    /// Identities in each live folder directory, read once.
    live: Mutex<HashMap<PathBuf, Arc<HashSet<String>>>>,
}

/// Where a selected archived message goes.
#[derive(Debug, PartialEq, Eq)]
struct MessagePlace<'a> {
    mailbox: &'a str,
    folder: &'a str,
    /// Its destination folder's directory.
    folder_path: PathBuf,
    name: &'a str,
    dir: &'a str,
}

impl MaildirMerge {
    pub fn new(root: PathBuf, selection: MailSelection) -> Result<MaildirMerge, NameError> {
        let folder_dirs = selection.filter.folder_dirs()?;
        let into_dir = selection
            .into_folder
            .as_deref()
            .map(maildir_names::folder_dir)
            .transpose()?;
        Ok(MaildirMerge {
            root,
            selection,
            folder_dirs,
            into_dir,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the merge takes only some of the mail (then nothing but folders and messages
    /// is placed).
    fn narrowed(&self) -> bool {
        !self.selection.filter.is_all() || self.into_dir.is_some() || self.selection.to.is_some()
    }

    fn folder_selected(&self, folder: &str) -> bool {
        self.folder_dirs.as_ref().is_none_or(|d| d.contains(folder))
    }

    /// The live directory of `folder` (or the `--into-folder`) of `mailbox` (or `--to`).
    fn destination(&self, mailbox: &str, folder: &str) -> PathBuf {
        let mut path = self
            .root
            .join(self.selection.to.as_deref().unwrap_or(mailbox));
        if !self.selection.maildir_sub.is_empty() {
            path.push(&self.selection.maildir_sub);
        }
        let folder = self.into_dir.as_deref().unwrap_or(folder);
        if !folder.is_empty() {
            path.push(folder);
        }
        path
    }

    /// The identities of the messages in a live folder directory (none if it is missing).
    fn live_identities(&self, folder_path: &Path) -> Arc<HashSet<String>> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.entry(folder_path.to_path_buf())
            .or_insert_with(|| Arc::new(read_identities(folder_path)))
            .clone()
    }

    /// The selected message at archive path `path`, if it is one.
    fn message<'p>(&self, path: &'p str) -> Option<MessagePlace<'p>> {
        let Located::Folder {
            mailbox,
            folder,
            inner,
        } = locate(path, &self.selection.maildir_sub)
        else {
            return None;
        };
        let InFolder::Message { dir, name } = in_folder(inner) else {
            return None;
        };
        (self.folder_selected(folder) && self.selection.filter.in_window(name)).then(|| {
            MessagePlace {
                mailbox,
                folder,
                folder_path: self.destination(mailbox, folder),
                name,
                dir,
            }
        })
    }

    /// Whether a live message of the same identity is in the destination folder.
    fn is_live(&self, message: &MessagePlace) -> bool {
        self.live_identities(&message.folder_path)
            .contains(maildir_names::message_identity(message.name))
    }

    /// Where the archive path `path` goes, with the directory its content is staged in; the
    /// extract then leaves out what exists.
    fn place_path(&self, path: &str) -> Option<Placement> {
        let at = |target: PathBuf| {
            Some(Placement {
                target,
                staging: None,
            })
        };
        let into = self.into_dir.is_some();
        match locate(path, &self.selection.maildir_sub) {
            Located::Outside => (!into && self.selection.to.is_none()).then(|| Placement {
                target: self.root.join(path),
                staging: None,
            }),
            Located::Mailbox { rest, .. } => {
                let wanted = if rest.is_empty() {
                    !into && self.selection.to.is_none()
                } else {
                    !self.narrowed()
                };
                wanted.then(|| Placement {
                    target: self.root.join(path),
                    staging: None,
                })
            }
            Located::Folder {
                mailbox,
                folder,
                inner,
            } => {
                let destination = self.destination(mailbox, folder);
                match in_folder(inner) {
                    // The maildir itself is every folder's parent: it is placed whatever
                    // is selected, but it is the `--into-folder` only when INBOX is.
                    InFolder::Dir if inner.is_empty() && folder == INBOX_DIR => {
                        if into {
                            self.folder_selected(folder)
                                .then_some(())
                                .and_then(|()| at(destination))
                        } else if self.selection.to.is_some() {
                            None
                        } else {
                            at(destination)
                        }
                    }
                    _ if !self.folder_selected(folder) => None,
                    InFolder::Dir if inner.is_empty() => at(destination),
                    InFolder::Dir => at(destination.join(inner)),
                    InFolder::Message { .. } => {
                        let message = self.message(path)?;
                        if self.is_live(&message) {
                            return None;
                        }
                        let name = if into {
                            without_keywords(message.name)
                        } else {
                            message.name.to_string()
                        };
                        Some(Placement {
                            target: message.folder_path.join(message.dir).join(name),
                            staging: Some(message.folder_path.join(STAGING_DIR)),
                        })
                    }
                    InFolder::File(name) if folder_file_comes_back(name, into) => {
                        at(destination.join(name))
                    }
                    InFolder::File(_) | InFolder::Other => None,
                }
            }
        }
    }
}

impl Placer for MaildirMerge {
    fn place(&self, item: &Item, _target: PathBuf) -> Option<Placement> {
        let path = std::str::from_utf8(&item.path).ok()?;
        // Only messages, directories and a few plain files are mail; a link or a device in
        // a maildir is nothing dovecot made.
        match item.kind() {
            ItemKind::Regular | ItemKind::Directory => self.place_path(path),
            _ if !self.narrowed() => self.place_path(path),
            _ => None,
        }
    }
}

/// A message file name without its keyword letters (`a`…`z` after `:2,`); the standard
/// flags (upper case) stay.
fn without_keywords(name: &str) -> String {
    match name.split_once(INFO_SEPARATOR) {
        Some((identity, flags)) => {
            let standard: String = flags.chars().filter(|c| !c.is_ascii_lowercase()).collect();
            format!("{identity}{INFO_SEPARATOR}{standard}")
        }
        None => name.to_string(),
    }
}

/// The message identities in `folder_path`'s `cur` and `new`.
fn read_identities(folder_path: &Path) -> HashSet<String> {
    let mut identities = HashSet::new();
    for dir in MESSAGE_DIRS {
        let Ok(entries) = std::fs::read_dir(folder_path.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with('.') {
                identities.insert(maildir_names::message_identity(name).to_string());
            }
        }
    }
    identities
}

/// How a folder's mail compares, archive against live.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderMail {
    /// `user@domain`.
    pub mailbox: String,
    /// The IMAP name (of the archived folder; of the live one for what only live holds).
    pub folder: String,
    /// Selected messages the archive holds.
    pub archived: u64,
    /// Of those, the ones a merge brings back (their identity is not in the live
    /// destination).
    pub back: u64,
    /// Live messages the archive does not hold: what `--mirror` removes.
    pub removed: u64,
    /// Whether the destination folder exists live.
    pub live: bool,
}

/// The mail of the restored subtrees, archive against live.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailSummary {
    /// The folders with selected archived mail or live mail a mirror removes.
    pub folders: Vec<FolderMail>,
    /// Every folder (IMAP name) the archive holds, by mailbox (`user@domain`).
    pub archive_folders: BTreeMap<String, BTreeSet<String>>,
    /// The folders of each live mailbox of the subtrees and of `--to`; a mailbox that is
    /// not live is not here.
    pub live_folders: BTreeMap<String, BTreeSet<String>>,
}

/// Counts what [`MaildirMerge`] would do, item by item, and what `--mirror` would remove.
#[derive(Debug)]
pub struct MailCount {
    merge: MaildirMerge,
    /// By (mailbox archive path, folder directory).
    folders: BTreeMap<(String, String), FolderMail>,
    /// Every archived identity, selected or not, by (mailbox path, folder directory).
    archived: HashMap<(String, String), HashSet<String>>,
    archive_folders: BTreeMap<String, BTreeSet<String>>,
}

impl MailCount {
    pub fn new(merge: MaildirMerge) -> MailCount {
        MailCount {
            merge,
            folders: BTreeMap::new(),
            archived: HashMap::new(),
            archive_folders: BTreeMap::new(),
        }
    }

    /// Counts one archive item (every item below the restored subtrees).
    pub fn add(&mut self, item: &Item) {
        let Ok(path) = std::str::from_utf8(&item.path) else {
            return;
        };
        if let Located::Folder {
            mailbox,
            folder,
            inner: "",
        } = locate(path, &self.merge.selection.maildir_sub)
            && item.kind() == ItemKind::Directory
            && let Some(name) = maildir_names::folder_name(folder)
        {
            self.archive_folders
                .entry(mailbox_name(mailbox))
                .or_default()
                .insert(name);
        }
        if item.kind() != ItemKind::Regular {
            return;
        }
        if let Located::Folder {
            mailbox,
            folder,
            inner,
        } = locate(path, &self.merge.selection.maildir_sub)
            && let InFolder::Message { name, .. } = in_folder(inner)
        {
            self.archived
                .entry((mailbox.to_string(), folder.to_string()))
                .or_default()
                .insert(maildir_names::message_identity(name).to_string());
        }
        let Some(message) = self.merge.message(path) else {
            return;
        };
        let back = !self.merge.is_live(&message);
        let live = message.folder_path.is_dir();
        let counted = self
            .folders
            .entry((message.mailbox.to_string(), message.folder.to_string()))
            .or_insert_with(|| FolderMail {
                mailbox: mailbox_name(message.mailbox),
                folder: maildir_names::folder_name(message.folder).unwrap_or_default(),
                live,
                ..Default::default()
            });
        counted.archived += 1;
        counted.back += u64::from(back);
    }

    /// The counts, with the live messages of `subtrees` (mailboxes or domains) the archive
    /// does not hold.
    pub fn finish(mut self, subtrees: &[String]) -> MailSummary {
        let sub = self.merge.selection.maildir_sub.clone();
        let maildir_of = |mailbox: &str| {
            let mut maildir = self.merge.root.join(mailbox);
            if !sub.is_empty() {
                maildir.push(&sub);
            }
            maildir
        };
        let mut live_names = BTreeMap::new();
        let mut mailboxes: Vec<String> = subtrees
            .iter()
            .flat_map(|s| live_mailboxes(&self.merge.root, s))
            .collect();
        mailboxes.extend(self.merge.selection.to.clone());
        for mailbox in &mailboxes {
            let maildir = maildir_of(mailbox);
            if maildir.is_dir() {
                let names = live_folders(&maildir)
                    .iter()
                    .filter_map(|f| maildir_names::folder_name(f))
                    .collect();
                live_names.insert(mailbox_name(mailbox), names);
            }
        }
        for subtree in subtrees {
            for mailbox in live_mailboxes(&self.merge.root, subtree) {
                let maildir = maildir_of(&mailbox);
                for folder in live_folders(&maildir) {
                    let live = read_identities(&maildir.join(&folder));
                    let archived = self.archived.get(&(mailbox.clone(), folder.clone()));
                    let removed = live
                        .iter()
                        .filter(|id| archived.is_none_or(|a| !a.contains(*id)))
                        .count() as u64;
                    if removed == 0 {
                        continue;
                    }
                    let counted = self
                        .folders
                        .entry((mailbox.clone(), folder.clone()))
                        .or_insert_with(|| FolderMail {
                            mailbox: mailbox_name(&mailbox),
                            folder: maildir_names::folder_name(&folder).unwrap_or_default(),
                            live: true,
                            ..Default::default()
                        });
                    counted.removed = removed;
                }
            }
        }
        MailSummary {
            folders: self.folders.into_values().collect(),
            archive_folders: self.archive_folders,
            live_folders: live_names,
        }
    }
}

/// The live mailboxes (archive paths) of a subtree: itself if it is a mailbox
/// (`vmail/<domain>/<user>`), else the user directories of the domain.
fn live_mailboxes(root: &Path, subtree: &str) -> Vec<String> {
    if subtree.matches('/').count() >= 2 {
        return if root.join(subtree).is_dir() {
            vec![subtree.to_string()]
        } else {
            Vec::new()
        };
    }
    let Ok(entries) = std::fs::read_dir(root.join(subtree)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(|n| format!("{subtree}/{n}")))
        .collect()
}

/// The folder directories of a live maildir: [`INBOX_DIR`] and every `.name` dovecot made.
fn live_folders(maildir: &Path) -> Vec<String> {
    let mut folders = vec![INBOX_DIR.to_string()];
    if let Ok(entries) = std::fs::read_dir(maildir) {
        folders.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with('.') && maildir_names::folder_name(n).is_some()),
        );
    }
    folders
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(selection: MailSelection) -> MaildirMerge {
        MaildirMerge::new(PathBuf::from("/nonexistent-root"), selection).unwrap()
    }

    fn sub() -> MailSelection {
        MailSelection {
            maildir_sub: "Maildir".into(),
            ..Default::default()
        }
    }

    fn target(m: &MaildirMerge, path: &str) -> Option<String> {
        m.place_path(path).map(|p| {
            let t = p.target.display().to_string();
            t.strip_prefix("/nonexistent-root/")
                .unwrap_or(&t)
                .to_string()
        })
    }

    #[test]
    fn paths_are_located_in_the_maildir() {
        let m = "vmail/example.org/u";
        assert_eq!(locate("vmail/example.org", "Maildir"), Located::Outside);
        assert_eq!(locate("crypt/x", "Maildir"), Located::Outside);
        assert_eq!(
            locate("vmail/example.org/u", "Maildir"),
            Located::Mailbox {
                mailbox: m,
                rest: ""
            }
        );
        assert_eq!(
            locate("vmail/example.org/u/sieve/x", "Maildir"),
            Located::Mailbox {
                mailbox: m,
                rest: "sieve/x"
            }
        );
        assert_eq!(
            locate("vmail/example.org/u/Maildir", "Maildir"),
            Located::Folder {
                mailbox: m,
                folder: "",
                inner: ""
            }
        );
        assert_eq!(
            locate("vmail/example.org/u/Maildir/cur/1.M2P3.h:2,S", "Maildir"),
            Located::Folder {
                mailbox: m,
                folder: "",
                inner: "cur/1.M2P3.h:2,S"
            }
        );
        assert_eq!(
            locate("vmail/example.org/u/Maildir/.A.B/new/1.M2P3.h", "Maildir"),
            Located::Folder {
                mailbox: m,
                folder: ".A.B",
                inner: "new/1.M2P3.h"
            }
        );
        // MAILDIR_SUB empty: the mailbox directory is the maildir.
        assert_eq!(
            locate("vmail/example.org/u/.Sent", ""),
            Located::Folder {
                mailbox: m,
                folder: ".Sent",
                inner: ""
            }
        );
        assert_eq!(
            in_folder("cur/x"),
            InFolder::Message {
                dir: "cur",
                name: "x"
            }
        );
        assert_eq!(in_folder("tmp/x"), InFolder::Other);
        assert_eq!(in_folder("tmp"), InFolder::Dir);
        assert_eq!(
            in_folder("dovecot-uidlist"),
            InFolder::File("dovecot-uidlist")
        );
    }

    #[test]
    fn a_merge_places_messages_and_new_files_never_dovecot_caches() {
        let m = merge(sub());
        let p = "vmail/example.org/u/Maildir";
        assert_eq!(target(&m, "vmail").as_deref(), Some("vmail"));
        assert_eq!(
            target(&m, &format!("{p}/cur/1.M1P1.h:2,S")),
            Some(format!("{p}/cur/1.M1P1.h:2,S"))
        );
        let placed = m.place_path(&format!("{p}/.Sent/new/1.M1P1.h")).unwrap();
        assert_eq!(
            placed.staging,
            Some(PathBuf::from(format!("/nonexistent-root/{p}/.Sent/tmp")))
        );
        for never in [
            "dovecot-uidlist",
            "dovecot-uidvalidity",
            "dovecot-uidvalidity.5f1e2d3c",
            "dovecot.index",
            "dovecot.list.index.log",
            "subscriptions",
            "tmp/1.M1P1.h",
        ] {
            assert_eq!(target(&m, &format!("{p}/{never}")), None, "{never}");
        }
        for kept in ["dovecot-keywords", "maildirfolder"] {
            assert!(target(&m, &format!("{p}/.Sent/{kept}")).is_some(), "{kept}");
        }
        assert!(target(&m, "vmail/example.org/u/sieve/x.sieve").is_some());
    }

    #[test]
    fn folders_and_dates_select_and_into_folder_gathers() {
        let p = "vmail/example.org/u/Maildir";
        let m = merge(MailSelection {
            filter: MailFilter {
                folders: vec!["Projects/2025".into()],
                since: Some(1000),
                before: Some(2000),
            },
            ..sub()
        });
        assert!(target(&m, &format!("{p}/.Projects.2025/cur/1500.M1P1.h:2,")).is_some());
        assert_eq!(
            target(&m, &format!("{p}/.Projects.2025/cur/2000.M1P1.h:2,")),
            None
        );
        assert_eq!(
            target(&m, &format!("{p}/.Projects.2025/cur/999.M1P1.h:2,")),
            None
        );
        assert_eq!(
            target(&m, &format!("{p}/.Projects.2025/cur/x.M1P1.h:2,")),
            None
        );
        assert_eq!(target(&m, &format!("{p}/cur/1500.M1P1.h:2,")), None);
        assert_eq!(target(&m, &format!("{p}/.Sent")), None);
        // The maildir and the mailbox are parents: placed (kept if they exist).
        assert!(target(&m, p).is_some());
        assert!(target(&m, "vmail/example.org/u").is_some());
        assert_eq!(target(&m, "vmail/example.org/u/sieve/x"), None);

        let m = merge(MailSelection {
            into_folder: Some("Restored 2026-12-01".into()),
            to: Some("vmail/example.net/v".into()),
            ..sub()
        });
        let into = "vmail/example.net/v/Maildir/.Restored 2026-12-01";
        assert_eq!(target(&m, p).as_deref(), Some(into));
        assert_eq!(target(&m, &format!("{p}/.Sent")).as_deref(), Some(into));
        assert_eq!(
            target(&m, &format!("{p}/.Sent/cur/1.M1P1.h:2,FSab")),
            Some(format!("{into}/cur/1.M1P1.h:2,FS"))
        );
        assert_eq!(
            target(&m, &format!("{p}/.Sent/maildirfolder")),
            Some(format!("{into}/maildirfolder"))
        );
        for never in ["vmail", "vmail/example.org", "vmail/example.org/u"] {
            assert_eq!(target(&m, never), None, "{never}");
        }
        assert_eq!(target(&m, &format!("{p}/.Sent/dovecot-keywords")), None);
    }

    #[test]
    fn mailbox_names_come_from_the_path() {
        assert_eq!(mailbox_name("vmail/example.org/u"), "u@example.org");
    }
}
