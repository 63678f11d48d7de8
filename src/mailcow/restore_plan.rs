//! Deciding what a restore does, before it does anything: from what was asked, what the archive
//! holds (its [`ArchiveSummary`]) and the target's `mailcow.conf`, which components are
//! restored (whole, or only some mailboxes' and domains' subtrees), which services are stopped,
//! and which of the known disasters must be refused:
//!
//! - vmail without the mail_crypt keys it was encrypted with: the mail cannot be read, and
//!   dovecot, finding no keys, makes a new pair (mailcow #2395, #5105);
//! - vmail from another `MAILDIR_SUB`: dovecot shows no mail (mailcow #3602);
//! - a database dump of another name than `DBNAME`: mailcow would not use it;
//! - rspamd's data from another CPU architecture: rspamd crashes on it — skipped with a
//!   warning, as mailcow's own restore does.
//!
//! The first two can be forced; the plan is pure, so each rule has a unit test.
//!
//! Mail of `--mailbox`/`--domain` is merged by default ([`super::mail_merge`]: nothing live is
//! removed or changed) and mirrored (made equal to the archive) with `--mirror`; the plan says,
//! per folder, how many messages come back or how many live ones are removed.

use std::path::PathBuf;

use super::components::Component;
use super::conf::MailcowConf;
use super::crypt_keys;
use super::mail_filter::MailFilter;
use super::mail_merge::{FolderMail, MailSelection};
use super::maildir_names::{self, NameError};
use super::summary::{ArchiveSummary, SqlDump, Tally};

/// Checks the user may override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Force {
    /// Restore mail although its mail_crypt keys are missing or differ.
    pub crypt_keys: bool,
    /// Restore mail made under another `MAILDIR_SUB`.
    pub maildir_sub: bool,
}

/// Where the `config` component goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigTarget {
    /// A directory of its own; the live configuration is not touched.
    Directory(PathBuf),
    /// Over the live mailcow directory, the old `mailcow.conf` kept beside it.
    InPlace,
}

/// What was asked.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// An archive name, or `latest`.
    pub archive: String,
    /// Whole components; empty means every one the archive holds, unless mailboxes or domains
    /// are asked for.
    pub components: Vec<Component>,
    /// `user@domain`.
    pub mailboxes: Vec<String>,
    pub domains: Vec<String>,
    pub force: Force,
    pub config: ConfigTarget,
    pub mail: MailRequest,
}

/// How the mail of `--mailbox`/`--domain` is restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MailMode {
    /// Messages the live mailbox lacks come back; nothing live is removed or changed.
    #[default]
    Merge,
    /// The subtrees are made equal to the archive.
    Mirror,
}

/// What of the mailboxes' mail a merge takes, and where to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailRequest {
    pub mode: MailMode,
    pub filter: MailFilter,
    /// `--into-folder [NAME]`: `Some(None)` is the default name.
    pub into_folder: Option<Option<String>>,
    /// `--to USER@DOMAIN`.
    pub to: Option<String>,
    /// With `--to`: into the folders of the same names, not into a new one.
    pub keep_folders: bool,
}

impl MailRequest {
    /// Whether anything but a plain merge or mirror of whole mailboxes was asked.
    fn narrows(&self) -> bool {
        !self.filter.is_all()
            || self.into_folder.is_some()
            || self.to.is_some()
            || self.keep_folders
    }
}

/// The folder `--into-folder` makes when it is given no name.
pub fn default_into_folder(archive_time: &str) -> String {
    format!(
        "Restored {}",
        archive_time.get(..10).unwrap_or(archive_time)
    )
}

/// What of a component is restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// All of it: the volume is made equal to the archive.
    Whole,
    /// Only these archive paths (`vmail/<domain>[/<user>]`), each made equal to the archive.
    Subtrees(Vec<String>),
    /// The mail of these archive paths merged into the live mailboxes ([`MailPlan`]).
    Merge(Vec<String>),
}

/// What a merge does: the selection the helper applies, and what it comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailPlan {
    pub selection: MailSelection,
    /// `user@domain` and IMAP name of each folder to subscribe after the files (the
    /// `--into-folder`, or a folder that is not live and gets mail back).
    pub subscribe: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStep {
    pub component: Component,
    pub scope: Scope,
    pub tally: Tally,
}

/// Which users' mail dovecot must look at again after the files changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resync {
    All,
    /// `doveadm -u` masks: `user@domain`, or `*@domain`.
    Users(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The archive's name (`latest` resolved).
    pub archive: String,
    /// In the order they are restored: crypt before mail.
    pub files: Vec<FileStep>,
    pub database: Option<SqlDump>,
    /// Services stopped before the files are written, in this order (the watchdog first, so
    /// it does not restart the others), and started again in reverse order.
    pub stop: Vec<&'static str>,
    pub resync: Option<Resync>,
    pub config: ConfigTarget,
    /// When the mail of mailboxes or domains is merged.
    pub merge: Option<MailPlan>,
    /// Per folder: what comes back (merge) or is removed (mirror).
    pub mail: Vec<FolderMail>,
    /// Components left out, with why.
    pub skipped: Vec<String>,
    /// Checks that could not be made or were forced.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "archive {archive} holds no {component} (it holds: {holds}); leave out --component {component}"
    )]
    NotInArchive {
        archive: String,
        component: Component,
        holds: String,
    },
    #[error(
        "archive {archive} holds no {what}; check the name (borg list {archive} vmail/ shows what it holds)"
    )]
    SubtreeNotInArchive { archive: String, what: String },
    #[error("{0:?} is not a mailbox: give it as user@domain")]
    BadMailbox(String),
    #[error("{0:?} is not a domain name")]
    BadDomain(String),
    #[error(
        "--mailbox and --domain restore parts of vmail; --component vmail restores all of it: give one or the other"
    )]
    VmailTwice,
    #[error("{0}; add --force crypt-keys to restore anyway (the mail will not be readable)")]
    CryptKeys(crypt_keys::KeysRefusal),
    #[error(
        "the archive's mail was stored under MAILDIR_SUB={archive:?}, this mailcow uses MAILDIR_SUB={target:?} (mailcow.conf): dovecot would show no mail. Set MAILDIR_SUB={archive} in mailcow.conf and restart mailcow (docker compose up -d), or add --force maildir-sub"
    )]
    MaildirSub { archive: String, target: String },
    #[error(
        "the archive's database dump is of database {archive:?}, but mailcow.conf has DBNAME={target}: set DBNAME={archive} in mailcow.conf and restart mailcow (docker compose up -d), or leave out --component mysql"
    )]
    DatabaseName { archive: String, target: String },
    #[error(
        "archive {0} holds nothing this mailcow restore knows (no vmail, crypt, mysql, …): was it written by mailcow-borg backup?"
    )]
    Nothing(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("--{0} selects mail of --mailbox or --domain: give one")]
    NeedsMailboxes(&'static str),
    #[error(
        "--mirror makes whole mailboxes equal to the archive; --{0} is for the merge (leave out --mirror)"
    )]
    MirrorNarrowed(&'static str),
    #[error(
        "--mailbox and --domain merge mail into the live mailboxes; restore --component in a run of its own (or add --mirror)"
    )]
    MergeWithComponents,
    #[error("--to takes the mail of one --mailbox (no --domain)")]
    ToNeedsOneMailbox,
    #[error("--keep-folders goes with --to")]
    KeepFoldersWithoutTo,
    #[error("--to {0}: no such mailbox in this mailcow (create it first)")]
    NoTarget(String),
    #[error(
        "--to {0}: refusing, the archive's mail_crypt keys are not this mailcow's (or cannot be compared), so the mail could not be read in another mailbox"
    )]
    ToOtherKeys(String),
    #[error(
        "refusing to merge: the archive's mail is encrypted with other mail_crypt keys than this mailcow's, so dovecot could not read it beside the live mail; add --force crypt-keys to merge anyway"
    )]
    MergeOtherKeys,
    #[error("folder {folder:?} is not in {mailboxes} in archive {archive} (it holds: {holds})")]
    UnknownFolder {
        folder: String,
        mailboxes: String,
        archive: String,
        holds: String,
    },
    #[error(
        "--into-folder {folder:?}: {mailbox} has that folder already; name a new one (--into-folder NAME)"
    )]
    IntoExisting { folder: String, mailbox: String },
}

/// The services a component's files are written with stopped.
fn service_of(component: Component) -> Option<&'static str> {
    match component {
        Component::Vmail | Component::Crypt | Component::VmailIndex => Some("dovecot-mailcow"),
        Component::Redis => Some("redis-mailcow"),
        Component::Postfix => Some("postfix-mailcow"),
        Component::Rspamd => Some("rspamd-mailcow"),
        Component::Mysql | Component::Sogo | Component::Config => None,
    }
}

pub const WATCHDOG: &str = "watchdog-mailcow";

/// The order files are restored in: the keys before the mail they decrypt.
const FILE_ORDER: [Component; 8] = [
    Component::Crypt,
    Component::Vmail,
    Component::VmailIndex,
    Component::Redis,
    Component::Postfix,
    Component::Rspamd,
    Component::Sogo,
    Component::Config,
];

/// A mailbox's archive path (`vmail/<domain>/<user>`) and its `doveadm -u` name, or why
/// `mailbox` is not one.
pub fn mailbox_path(mailbox: &str) -> Result<(String, String), PlanError> {
    let bad = || PlanError::BadMailbox(mailbox.to_string());
    let (user, domain) = mailbox.split_once('@').ok_or_else(bad)?;
    if !is_name(user) || !is_name(domain) {
        return Err(bad());
    }
    Ok((
        format!("{}/{domain}/{user}", Component::Vmail.archive_dir()),
        mailbox.to_string(),
    ))
}

/// A single path component that is safe to join: not empty, no `/`, not `.` or `..`, no `@`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '@', '\0'])
}

/// The archive paths of the asked mailboxes and domains, each with its `doveadm -u` mask.
pub fn subtrees(request: &RestoreRequest) -> Result<Vec<(String, String)>, PlanError> {
    let mut subtrees = Vec::new();
    for mailbox in &request.mailboxes {
        subtrees.push(mailbox_path(mailbox)?);
    }
    for domain in &request.domains {
        if !is_name(domain) {
            return Err(PlanError::BadDomain(domain.clone()));
        }
        subtrees.push((
            format!("{}/{domain}", Component::Vmail.archive_dir()),
            format!("*@{domain}"),
        ));
    }
    Ok(subtrees)
}

/// The first mail option given that narrows a merge, as the command line names it.
fn narrowing_option(mail: &MailRequest) -> Option<&'static str> {
    mail.filter.first_option().or_else(|| {
        [
            (mail.into_folder.is_some(), "into-folder"),
            (mail.to.is_some(), "to"),
            (mail.keep_folders, "keep-folders"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    })
}

/// Checks the mail options that need no archive, and makes the selection the inspecting
/// helper counts with (without `--into-folder`, whose default name is the archive's date).
pub fn mail_selection(
    request: &RestoreRequest,
    conf: &MailcowConf,
) -> Result<MailSelection, PlanError> {
    let mail = &request.mail;
    debug_assert!(mail.narrows() == narrowing_option(mail).is_some());
    let asks_mailboxes = !request.mailboxes.is_empty() || !request.domains.is_empty();
    if let Some(option) = narrowing_option(mail) {
        if !asks_mailboxes {
            return Err(PlanError::NeedsMailboxes(option));
        }
        if mail.mode == MailMode::Mirror {
            return Err(PlanError::MirrorNarrowed(option));
        }
    }
    if mail.mode == MailMode::Merge
        && asks_mailboxes
        && !request.components.is_empty()
        && !request.components.contains(&Component::Vmail)
    {
        return Err(PlanError::MergeWithComponents);
    }
    if mail.keep_folders && mail.to.is_none() {
        return Err(PlanError::KeepFoldersWithoutTo);
    }
    let to = match &mail.to {
        Some(_) if request.mailboxes.len() != 1 || !request.domains.is_empty() => {
            return Err(PlanError::ToNeedsOneMailbox);
        }
        Some(to) => Some(mailbox_path(to)?.0),
        None => None,
    };
    mail.filter.check()?;
    if let Some(Some(into_folder)) = &mail.into_folder {
        maildir_names::folder_dir(into_folder)?;
    }
    Ok(MailSelection {
        maildir_sub: conf.maildir_sub.clone(),
        filter: mail.filter.clone(),
        into_folder: None,
        to,
    })
}

/// The merge's plan: the checks that need the archive's summary (folders it holds, the
/// `--to` mailbox and `--into-folder` live), the folder that takes the mail, and the folders
/// to subscribe.
fn merge_plan(
    request: &RestoreRequest,
    summary: &ArchiveSummary,
    conf: &MailcowConf,
) -> Result<MailPlan, PlanError> {
    let mail = &request.mail;
    let mut selection = mail_selection(request, conf)?;
    let in_request = |mailbox: &str| {
        request.mailboxes.iter().any(|m| m == mailbox)
            || request
                .domains
                .iter()
                .any(|d| mailbox.rsplit_once('@').is_some_and(|(_, md)| md == d))
    };
    for folder in &mail.filter.folders {
        let dir = maildir_names::folder_dir(folder)?;
        let holds: std::collections::BTreeSet<&String> = summary
            .mail
            .archive_folders
            .iter()
            .filter(|(mailbox, _)| in_request(mailbox))
            .flat_map(|(_, folders)| folders)
            .collect();
        if !holds
            .iter()
            .any(|f| maildir_names::folder_dir(f).is_ok_and(|d| d == dir))
        {
            let asked: Vec<&str> = request
                .mailboxes
                .iter()
                .chain(&request.domains)
                .map(String::as_str)
                .collect();
            return Err(PlanError::UnknownFolder {
                folder: folder.clone(),
                mailboxes: asked.join(", "),
                archive: summary.name.clone(),
                holds: holds
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    if let Some(to) = &mail.to {
        if !summary.mail.live_folders.contains_key(to) {
            return Err(PlanError::NoTarget(to.clone()));
        }
        if summary.crypt_keys.same != Some(true) {
            return Err(PlanError::ToOtherKeys(to.clone()));
        }
    }
    let into = match (&mail.into_folder, &mail.to) {
        (Some(Some(name)), _) => Some(name.clone()),
        (Some(None), _) => Some(default_into_folder(&summary.time)),
        (None, Some(_)) if !mail.keep_folders => Some(default_into_folder(&summary.time)),
        (None, _) => None,
    };
    // The mailboxes that get mail: `--to`, or each source mailbox.
    let mut receiving: Vec<String> = summary
        .mail
        .folders
        .iter()
        .filter(|f| f.archived > 0)
        .map(|f| mail.to.clone().unwrap_or_else(|| f.mailbox.clone()))
        .collect();
    receiving.sort();
    receiving.dedup();
    let subscribe = match &into {
        Some(into) => {
            let dir = maildir_names::folder_dir(into)?;
            for mailbox in &receiving {
                let existing = summary.mail.live_folders.get(mailbox).and_then(|folders| {
                    folders
                        .iter()
                        .find(|f| maildir_names::folder_dir(f).is_ok_and(|d| d == dir))
                });
                if existing.is_some() {
                    return Err(PlanError::IntoExisting {
                        folder: into.clone(),
                        mailbox: mailbox.clone(),
                    });
                }
            }
            receiving
                .into_iter()
                .map(|mailbox| (mailbox, into.clone()))
                .collect()
        }
        None => summary
            .mail
            .folders
            .iter()
            .filter(|f| f.back > 0 && !f.live)
            .map(|f| {
                let mailbox = mail.to.clone().unwrap_or_else(|| f.mailbox.clone());
                (mailbox, f.folder.clone())
            })
            .collect(),
    };
    selection.into_folder = into;
    Ok(MailPlan {
        selection,
        subscribe,
    })
}

/// Decides what to do; `arch` is this machine's CPU architecture.
pub fn make_plan(
    request: &RestoreRequest,
    summary: &ArchiveSummary,
    conf: &MailcowConf,
    arch: &str,
) -> Result<Plan, PlanError> {
    let archive = summary.name.clone();
    let holds = |c: Component| match c {
        Component::Mysql => !summary.sql_dumps.is_empty(),
        _ => summary.components.contains_key(c.archive_dir()),
    };
    let (subtrees, users): (Vec<String>, Vec<String>) = subtrees(request)?.into_iter().unzip();
    if !subtrees.is_empty() && request.components.contains(&Component::Vmail) {
        return Err(PlanError::VmailTwice);
    }
    for subtree in &subtrees {
        if !summary.subtrees.contains_key(subtree) {
            return Err(PlanError::SubtreeNotInArchive {
                archive: archive.clone(),
                what: subtree.clone(),
            });
        }
    }
    let wanted: Vec<Component> = if !request.components.is_empty() {
        let holds_text = || {
            let names: Vec<&str> = Component::ALL
                .into_iter()
                .filter(|c| holds(*c))
                .map(Component::name)
                .collect();
            names.join(", ")
        };
        for &component in &request.components {
            if !holds(component) {
                return Err(PlanError::NotInArchive {
                    archive: archive.clone(),
                    component,
                    holds: holds_text(),
                });
            }
        }
        request.components.clone()
    } else if subtrees.is_empty() {
        let all: Vec<Component> = Component::ALL.into_iter().filter(|c| holds(*c)).collect();
        if all.is_empty() {
            return Err(PlanError::Nothing(archive));
        }
        all
    } else {
        Vec::new()
    };

    let merging = !subtrees.is_empty() && request.mail.mode == MailMode::Merge;
    let mut plan = Plan {
        archive,
        files: Vec::new(),
        database: None,
        stop: Vec::new(),
        resync: None,
        config: request.config.clone(),
        merge: if merging {
            Some(merge_plan(request, summary, conf)?)
        } else {
            mail_selection(request, conf)?;
            None
        },
        mail: summary.mail.folders.clone(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    let origin = summary.origin.as_ref();
    for component in FILE_ORDER {
        if !wanted.contains(&component) {
            continue;
        }
        if component == Component::Rspamd {
            match origin.map(|o| o.arch.as_str()) {
                Some(made_on) if made_on != arch => {
                    plan.skipped.push(format!(
                        "rspamd: the archive was made on {made_on}, this host is {arch}; rspamd's data does not work on another CPU architecture (it is rebuilt by rspamd)"
                    ));
                    continue;
                }
                None => plan.warnings.push(
                    "rspamd: the archive does not say on which CPU architecture it was made; restored as it is".into(),
                ),
                Some(_) => {}
            }
        }
        plan.files.push(FileStep {
            component,
            scope: Scope::Whole,
            tally: summary
                .components
                .get(component.archive_dir())
                .copied()
                .unwrap_or_default(),
        });
    }
    if !subtrees.is_empty() {
        let tally = subtrees.iter().fold(Tally::default(), |sum, s| {
            let t = summary.subtrees[s];
            Tally {
                items: sum.items + t.items,
                bytes: sum.bytes + t.bytes,
            }
        });
        let at = plan
            .files
            .iter()
            .position(|f| f.component > Component::Vmail)
            .unwrap_or(plan.files.len());
        plan.files.insert(
            at,
            FileStep {
                component: Component::Vmail,
                scope: if merging {
                    Scope::Merge(subtrees)
                } else {
                    Scope::Subtrees(subtrees)
                },
                tally,
            },
        );
    }
    let restores = |c: Component| plan.files.iter().any(|f| f.component == c);
    let whole = |c: Component| {
        plan.files
            .iter()
            .any(|f| f.component == c && f.scope == Scope::Whole)
    };
    if restores(Component::Vmail) {
        check_crypt_keys(
            summary,
            restores(Component::Crypt),
            request.force,
            merging,
            &mut plan.warnings,
        )?;
        match origin {
            Some(o) if o.maildir_sub != conf.maildir_sub => {
                if !request.force.maildir_sub {
                    return Err(PlanError::MaildirSub {
                        archive: o.maildir_sub.clone(),
                        target: conf.maildir_sub.clone(),
                    });
                }
                plan.warnings.push(format!(
                    "MAILDIR_SUB: the archive's is {:?}, this mailcow's {:?} (forced)",
                    o.maildir_sub, conf.maildir_sub
                ));
            }
            None => plan.warnings.push(
                "MAILDIR_SUB: the archive does not say which it was made with; check that mailcow.conf's matches the old installation's".into(),
            ),
            Some(_) => {}
        }
        plan.resync = Some(if whole(Component::Vmail) {
            Resync::All
        } else if let Some(to) = &request.mail.to {
            Resync::Users(vec![to.clone()])
        } else {
            Resync::Users(users)
        });
    }
    if wanted.contains(&Component::Mysql) {
        let dump = pick_dump(summary, conf);
        if dump.database != conf.db_name {
            return Err(PlanError::DatabaseName {
                archive: dump.database.clone(),
                target: conf.db_name.clone(),
            });
        }
        plan.database = Some(dump.clone());
    }
    for step in &plan.files {
        // A mailbox restore leaves dovecot running: the other users keep their mail, and
        // force-resync makes dovecot see the restored files.
        if step.scope != Scope::Whole {
            continue;
        }
        if let Some(service) = service_of(step.component)
            && !plan.stop.contains(&service)
        {
            plan.stop.push(service);
        }
    }
    // The watchdog would restart what it sees stopped, and reads the database whose tables
    // are swapped; a restore that stops nothing and leaves the database alone (a mailbox's
    // merge or mirror) does not disturb it.
    if !plan.stop.is_empty() || plan.database.is_some() {
        plan.stop.insert(0, WATCHDOG);
    }
    Ok(plan)
}

/// The dump to restore: the one of `DBNAME` if the archive has it, else the only (or first).
fn pick_dump<'s>(summary: &'s ArchiveSummary, conf: &MailcowConf) -> &'s SqlDump {
    summary
        .sql_dumps
        .iter()
        .find(|d| d.database == conf.db_name)
        .unwrap_or(&summary.sql_dumps[0])
}

/// Applies the mail_crypt key rules ([`crypt_keys::restore_problem`]) to the plan: a refusal,
/// unless forced, or a warning. A merge cannot take the archive's keys along (the live mail
/// needs the live ones), so it is refused with other keys.
fn check_crypt_keys(
    summary: &ArchiveSummary,
    with_crypt: bool,
    force: Force,
    merging: bool,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    match crypt_keys::restore_problem(&summary.crypt_keys, with_crypt) {
        Ok(warning) => warnings.extend(warning),
        Err(problem) if force.crypt_keys => warnings.push(format!("{problem} (forced)")),
        Err(crypt_keys::KeysRefusal::OtherKeys) if merging => {
            return Err(PlanError::MergeOtherKeys);
        }
        Err(problem) => return Err(PlanError::CryptKeys(problem)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailcow::mail_merge::MailSummary;
    use crate::mailcow::origin::Origin;
    use crate::mailcow::summary::CryptKeys;

    fn conf() -> MailcowConf {
        MailcowConf::parse(
            "COMPOSE_PROJECT_NAME=p\nDBNAME=mailcow\nDBUSER=mailcow\nDBPASS=x\nMAILDIR_SUB=Maildir\n",
            "mailcow.conf".into(),
        )
        .unwrap()
    }

    fn summary() -> ArchiveSummary {
        let tally = Tally {
            items: 3,
            bytes: 100,
        };
        ArchiveSummary {
            name: "a1".into(),
            time: "2026-11-29T10:00:00.000000".into(),
            hostname: "mail".into(),
            origin: Some(Origin {
                project: "p".into(),
                arch: "x86_64".into(),
                maildir_sub: "Maildir".into(),
                db: "mailcow".into(),
                components: vec![],
            }),
            components: ["vmail", "crypt", "redis", "rspamd", "config", "mysql"]
                .into_iter()
                .map(|c| (c.to_string(), tally))
                .collect(),
            sql_dumps: vec![SqlDump {
                path: "mysql/mailcow.sql".into(),
                database: "mailcow".into(),
                bytes: 10,
            }],
            subtrees: [("vmail/example.org/user".to_string(), tally)].into(),
            crypt_keys: CryptKeys {
                in_archive: true,
                in_target: Some(true),
                same: Some(true),
            },
            mail: MailSummary {
                folders: vec![
                    FolderMail {
                        mailbox: "user@example.org".into(),
                        folder: "INBOX".into(),
                        archived: 5,
                        back: 2,
                        removed: 1,
                        live: true,
                    },
                    FolderMail {
                        mailbox: "user@example.org".into(),
                        folder: "Projects/2025".into(),
                        archived: 3,
                        back: 3,
                        removed: 0,
                        live: false,
                    },
                ],
                archive_folders: [(
                    "user@example.org".to_string(),
                    ["INBOX", "Projects/2025"].map(String::from).into(),
                )]
                .into(),
                live_folders: [
                    (
                        "user@example.org".to_string(),
                        ["INBOX"].map(String::from).into(),
                    ),
                    (
                        "other@example.org".to_string(),
                        ["INBOX", "Restored 2026-11-29"].map(String::from).into(),
                    ),
                ]
                .into(),
            },
        }
    }

    fn request() -> RestoreRequest {
        RestoreRequest {
            archive: "latest".into(),
            components: vec![],
            mailboxes: vec![],
            domains: vec![],
            force: Force::default(),
            config: ConfigTarget::Directory("/restored".into()),
            mail: MailRequest::default(),
        }
    }

    fn order(plan: &Plan) -> Vec<Component> {
        plan.files.iter().map(|f| f.component).collect()
    }

    #[test]
    fn a_full_restore_takes_all_the_archive_holds_keys_first_and_stops_the_watchdog_first() {
        let plan = make_plan(&request(), &summary(), &conf(), "x86_64").unwrap();
        use Component::*;
        assert_eq!(order(&plan), [Crypt, Vmail, Redis, Rspamd, Config]);
        assert_eq!(
            plan.stop,
            [
                WATCHDOG,
                "dovecot-mailcow",
                "redis-mailcow",
                "rspamd-mailcow"
            ]
        );
        assert_eq!(plan.database.as_ref().unwrap().path, "mysql/mailcow.sql");
        assert_eq!(plan.resync, Some(Resync::All));
        assert!(plan.skipped.is_empty() && plan.warnings.is_empty());
    }

    #[test]
    fn rspamd_from_another_architecture_is_skipped_with_the_reason() {
        let plan = make_plan(&request(), &summary(), &conf(), "aarch64").unwrap();
        assert!(!order(&plan).contains(&Component::Rspamd));
        assert!(!plan.stop.contains(&"rspamd-mailcow"));
        assert!(plan.skipped[0].contains("made on x86_64, this host is aarch64"));
    }

    #[test]
    fn a_mailbox_restore_merges_or_mirrors_only_its_subtree_and_leaves_dovecot_running() {
        let mut r = request();
        r.mailboxes = vec!["user@example.org".into()];
        let plan = make_plan(&r, &summary(), &conf(), "x86_64").unwrap();
        assert_eq!(
            plan.files[0].scope,
            Scope::Merge(vec!["vmail/example.org/user".into()])
        );
        let merge = plan.merge.unwrap();
        assert_eq!(merge.selection.maildir_sub, "Maildir");
        assert_eq!(merge.selection.into_folder, None);
        // The folder that is not live gets mail back: made again, subscribed.
        assert_eq!(
            merge.subscribe,
            [("user@example.org".to_string(), "Projects/2025".to_string())]
        );
        r.mail.mode = MailMode::Mirror;
        let plan = make_plan(&r, &summary(), &conf(), "x86_64").unwrap();
        assert_eq!(plan.merge, None);
        assert_eq!(plan.mail[0].removed, 1);
        assert_eq!(
            plan.files,
            [FileStep {
                component: Component::Vmail,
                scope: Scope::Subtrees(vec!["vmail/example.org/user".into()]),
                tally: Tally {
                    items: 3,
                    bytes: 100
                },
            }]
        );
        assert!(plan.stop.is_empty(), "{:?}", plan.stop);
        assert_eq!(
            plan.resync,
            Some(Resync::Users(vec!["user@example.org".into()]))
        );
        r.mailboxes = vec!["other@example.org".into()];
        assert!(matches!(
            make_plan(&r, &summary(), &conf(), "x86_64"),
            Err(PlanError::SubtreeNotInArchive { .. })
        ));
        r.mailboxes = vec!["../etc@example.org".into()];
        assert!(matches!(
            make_plan(&r, &summary(), &conf(), "x86_64"),
            Err(PlanError::BadMailbox(_))
        ));
    }

    fn merge(mail: MailRequest) -> Result<Plan, PlanError> {
        let mut r = request();
        r.mailboxes = vec!["user@example.org".into()];
        r.mail = mail;
        make_plan(&r, &summary(), &conf(), "x86_64")
    }

    #[test]
    fn into_folder_and_to_gather_the_mail_in_a_new_subscribed_folder() {
        let plan = merge(MailRequest {
            into_folder: Some(None),
            ..Default::default()
        })
        .unwrap();
        let into = Some("Restored 2026-11-29".to_string());
        let m = plan.merge.unwrap();
        assert_eq!(m.selection.into_folder, into);
        assert_eq!(
            m.subscribe,
            [("user@example.org".to_string(), into.clone().unwrap())]
        );
        // The other mailbox has that folder already: a name is needed.
        let e = merge(MailRequest {
            to: Some("other@example.org".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, PlanError::IntoExisting { .. }), "{e}");
        let plan = merge(MailRequest {
            to: Some("other@example.org".into()),
            into_folder: Some(Some("From user".into())),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            plan.resync,
            Some(Resync::Users(vec!["other@example.org".into()]))
        );
        let m = plan.merge.unwrap();
        assert_eq!(m.selection.to.as_deref(), Some("vmail/example.org/other"));
        assert_eq!(
            m.subscribe,
            [("other@example.org".to_string(), "From user".to_string())]
        );
        let e = merge(MailRequest {
            to: Some("nobody@example.org".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, PlanError::NoTarget("nobody@example.org".into()));
    }

    #[test]
    fn bad_mail_options_are_refused_before_anything_is_done() {
        let e = merge(MailRequest {
            filter: MailFilter {
                folders: vec!["Nope".into()],
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "folder \"Nope\" is not in user@example.org in archive a1 (it holds: INBOX, Projects/2025)"
        );
        assert!(
            merge(MailRequest {
                filter: MailFilter {
                    folders: vec!["inbox".into(), "Projects/2025".into()],
                    ..Default::default()
                },
                ..Default::default()
            })
            .is_ok()
        );
        let refused = |mail: MailRequest| merge(mail).unwrap_err();
        assert_eq!(
            refused(MailRequest {
                filter: MailFilter {
                    since: Some(5),
                    before: Some(5),
                    ..Default::default()
                },
                ..Default::default()
            }),
            PlanError::Name(NameError::EmptyWindow)
        );
        assert_eq!(
            refused(MailRequest {
                mode: MailMode::Mirror,
                filter: MailFilter {
                    folders: vec!["INBOX".into()],
                    ..Default::default()
                },
                ..Default::default()
            }),
            PlanError::MirrorNarrowed("folder")
        );
        assert_eq!(
            refused(MailRequest {
                keep_folders: true,
                ..Default::default()
            }),
            PlanError::KeepFoldersWithoutTo
        );
        assert!(matches!(
            refused(MailRequest {
                filter: MailFilter {
                    folders: vec!["a//b".into()],
                    ..Default::default()
                },
                ..Default::default()
            }),
            PlanError::Name(_)
        ));
        let mut r = request();
        r.mail.filter.since = Some(1);
        assert_eq!(
            make_plan(&r, &summary(), &conf(), "x86_64").unwrap_err(),
            PlanError::NeedsMailboxes("since")
        );
        r.mailboxes = vec!["user@example.org".into()];
        r.components = vec![Component::Crypt];
        assert_eq!(
            make_plan(&r, &summary(), &conf(), "x86_64").unwrap_err(),
            PlanError::MergeWithComponents
        );
        let mut s = summary();
        s.crypt_keys.same = Some(false);
        let mut r = request();
        r.mailboxes = vec!["user@example.org".into()];
        assert_eq!(
            make_plan(&r, &s, &conf(), "x86_64").unwrap_err(),
            PlanError::MergeOtherKeys
        );
        r.mail.to = Some("other@example.org".into());
        r.mail.into_folder = Some(Some("x".into()));
        r.force.crypt_keys = true;
        assert_eq!(
            make_plan(&r, &s, &conf(), "x86_64").unwrap_err(),
            PlanError::ToOtherKeys("other@example.org".into())
        );
    }

    #[test]
    fn mail_without_its_keys_is_refused_unless_forced() {
        let mut r = request();
        r.components = vec![Component::Vmail];
        let mut s = summary();
        s.crypt_keys.same = Some(false);
        let e = make_plan(&r, &s, &conf(), "x86_64").unwrap_err();
        assert!(e.to_string().contains("add --component crypt"), "{e}");
        r.components.push(Component::Crypt);
        assert!(make_plan(&r, &s, &conf(), "x86_64").is_ok());
        s.crypt_keys = CryptKeys {
            in_archive: false,
            in_target: Some(false),
            same: None,
        };
        assert!(matches!(
            make_plan(&r, &s, &conf(), "x86_64"),
            Err(PlanError::CryptKeys(_))
        ));
        r.components = vec![Component::Vmail];
        assert!(matches!(
            make_plan(&r, &s, &conf(), "x86_64"),
            Err(PlanError::CryptKeys(_))
        ));
        r.force.crypt_keys = true;
        let plan = make_plan(&r, &s, &conf(), "x86_64").unwrap();
        assert!(plan.warnings[0].ends_with("(forced)"));
    }

    #[test]
    fn another_maildir_sub_is_refused_unless_forced() {
        let mut c = conf();
        c.maildir_sub = String::new();
        let e = make_plan(&request(), &summary(), &c, "x86_64").unwrap_err();
        assert!(e.to_string().contains("Set MAILDIR_SUB=Maildir"), "{e}");
        let mut r = request();
        r.force.maildir_sub = true;
        assert!(make_plan(&r, &summary(), &c, "x86_64").is_ok());
        // Without vmail the MAILDIR_SUB does not matter.
        let mut r = request();
        r.components = vec![Component::Redis];
        assert!(make_plan(&r, &summary(), &c, "x86_64").is_ok());
    }

    #[test]
    fn a_dump_of_another_database_says_what_to_change() {
        let mut c = conf();
        c.db_name = "mailcow2".into();
        let e = make_plan(&request(), &summary(), &c, "x86_64").unwrap_err();
        assert!(
            e.to_string().contains("set DBNAME=mailcow in mailcow.conf"),
            "{e}"
        );
    }

    #[test]
    fn components_the_archive_lacks_are_named_with_what_it_holds() {
        let mut r = request();
        r.components = vec![Component::Sogo];
        let e = make_plan(&r, &summary(), &conf(), "x86_64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "archive a1 holds no sogo (it holds: vmail, crypt, redis, rspamd, mysql, config); leave out --component sogo"
        );
    }

    #[test]
    fn an_archive_without_origin_restores_with_warnings() {
        let mut s = summary();
        s.origin = None;
        let plan = make_plan(&request(), &s, &conf(), "x86_64").unwrap();
        assert!(order(&plan).contains(&Component::Rspamd));
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    }
}
