//! The host ↔ helper contract: what the host asks a helper container to do, one typed value per
//! helper subcommand. The host turns it into the helper's command line
//! ([`HelperCommand::to_args`]); the helper parses that command line back into the same value
//! (`mailcow-borg agent …`, whose clap definition is this module's). The round-trip tests below
//! prove that the two sides agree, field by field.
//!
//! Nothing secret is in a command: secrets are files under `/run/secrets`, named here by their
//! path ([`RepositoryAccess`]). Docker's API carries the command line as JSON strings, so every
//! value here is text; the host only writes paths of its own making (`/run/secrets/…`,
//! `/target/crypt`, archive paths).
//!
//! A new helper subcommand is one more struct here (a variant of [`HelperCommand`]) and one
//! handler in `src/cli/agent.rs`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Subcommand};

use crate::error::ErrorKind;

use super::backup::OutputOptions;
use super::mail_filter::MailFilter;
use super::mail_merge::MailSelection;
use super::retention::Keep;
use super::schedule::When;
use crate::ops::id_slice::IdSlice;
use crate::ops::prune::{PruneRules, RulesError};

/// Every helper subcommand, as `mailcow-borg agent <subcommand>` takes it.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum HelperCommand {
    /// `create` over the mounted volumes; `-` is the framed database dump on stdin.
    Backup(Box<BackupCommand>),
    /// Print what a restore must know about an archive, as JSON.
    Inspect(Box<InspectCommand>),
    /// Extract into the mounted volumes, replacing files atomically and mirroring directories.
    Restore(Box<RestoreCommand>),
    /// Write one file's content (the database dump) to stdout.
    Stream(Box<StreamCommand>),
    /// The checks `backup`'s `[check]` table found due; each stamped in the state dir if it
    /// passes.
    Check(Box<CheckCommand>),
}

/// The subcommand of our binary that runs a [`HelperCommand`].
const AGENT: &str = "agent";

/// The permission bits of the database dump in the archive: it holds every password hash and
/// every secret of the installation, for root alone.
pub const DUMP_MODE: u32 = 0o600;

/// How the helper reaches the repository: the part every subcommand shares. On the host it holds
/// the host's paths of the secrets (`config check` opens the repository with it); what a helper
/// gets holds their paths under `/run/secrets` (`HelperAccess::in_helper`).
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct RepositoryAccess {
    /// Seconds to wait for the repository lock.
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: u64,
    /// Seconds the repository server may stay silent while an answer is awaited.
    #[arg(long, value_name = "SECONDS")]
    pub server_timeout: u64,
    /// borg on the repository host (default: borg).
    #[arg(long, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// The repository passphrase's file (first line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The SSH private key.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// The file holding the SSH key's passphrase.
    #[arg(long, value_name = "FILE")]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// The known_hosts file that holds the repository host's key.
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

/// `REPOSITORY::ARCHIVE`: the archive a helper works on. borg's repository syntax has no `::`
/// (its paths are `[^:]+`), so the first `::` is where the archive name starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveLocation {
    /// The repository, as borg writes it.
    pub repository: String,
    pub archive: String,
}

impl fmt::Display for ArchiveLocation {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}::{}", self.repository, self.archive)
    }
}

/// A helper's location argument without `::ARCHIVE`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text}: no archive given (REPOSITORY::ARCHIVE)")]
pub struct NoArchiveGiven {
    pub text: String,
}

impl NoArchiveGiven {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl FromStr for ArchiveLocation {
    type Err = NoArchiveGiven;

    fn from_str(text: &str) -> Result<Self, NoArchiveGiven> {
        let (repository, archive) = text.split_once("::").ok_or_else(|| NoArchiveGiven {
            text: text.to_string(),
        })?;
        Ok(ArchiveLocation {
            repository: repository.into(),
            archive: archive.into(),
        })
    }
}

/// `agent backup`: `create` over the components mounted under `/mailcow`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct BackupCommand {
    /// Refuse to run unless this directory holds dovecot's mail_crypt key pair, non-empty.
    #[arg(long, value_name = "DIR")]
    pub require_crypt_keys: Option<PathBuf>,
    /// The archive's comment (where it came from, `Origin`).
    #[arg(long, value_name = "COMMENT")]
    pub comment: String,
    /// Compression, as `create --compression` takes it.
    #[arg(long, value_name = "SPEC")]
    pub compression: String,
    /// Seconds between checkpoints.
    #[arg(long, value_name = "SECONDS")]
    pub checkpoint_interval: u64,
    /// kiB/s at most sent to the repository; 0: no limit.
    #[arg(long, value_name = "RATE")]
    pub upload_ratelimit: u64,
    /// Patterns on archive paths, borg's syntax.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    #[command(flatten)]
    pub output: OutputOptions,
    #[command(flatten)]
    pub retention: RetentionCommand,
    /// The archive path of the database dump (`-` among the paths), stored with [`DUMP_MODE`].
    #[arg(long, value_name = "NAME")]
    pub dump_name: Option<String>,
    pub location: ArchiveLocation,
    /// The directories below the working directory to back up, in archive order; `-` is the
    /// dump.
    pub paths: Vec<String>,
    #[command(flatten)]
    pub access: RepositoryAccess,
}

/// What `agent backup` does after the archive is committed: prune the archives of the backup's
/// own name, then compact. Off without `--prune-glob`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionCommand {
    /// Prune the archives this glob selects (made from the archive name's pattern), and their
    /// checkpoints; no other archive is touched.
    #[arg(long, value_name = "GLOB")]
    pub prune_glob: Option<String>,
    /// Keep every archive of this interval (prune's --keep-within).
    #[arg(long, value_name = "INTERVAL")]
    pub keep_within: Option<String>,
    /// Keep N archives of each PERIOD (prune's period rules, e.g. daily=7); repeatable.
    #[arg(long = "keep", value_name = "PERIOD=N")]
    pub keeps: Vec<Keep>,
    /// When to compact after pruning: always, never, or an interval since the last time.
    #[arg(long, value_name = "WHEN", default_value_t)]
    pub compact: When,
}

impl RetentionCommand {
    /// The rules, checked.
    pub fn rules(&self) -> Result<PruneRules, RulesError> {
        PruneRules::new(
            self.keep_within.as_deref(),
            self.keeps.iter().map(|k| (k.period, k.count)),
        )
    }
}

/// The exit code of a helper whose archive was committed but whose retention (prune or
/// compact) then failed: the host says the archive is safe, and ends with borg's 2.
pub const EXIT_ARCHIVE_SAFE: i64 = 3;

/// The exit code of a helper whose backup failed because the connection to the repository
/// could not be made or dropped (nothing else): the host may try the backup again.
pub const EXIT_CONNECTION_LOST: i64 = 4;

/// `agent inspect`: the archive's summary as JSON on stdout.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct InspectCommand {
    /// Archive paths to look for (mailboxes, domains).
    #[arg(long = "subtree", value_name = "PATH")]
    pub subtrees: Vec<String>,
    /// The target's crypt volume, to compare the mail_crypt keys with.
    #[arg(long, value_name = "DIR")]
    pub target_crypt: Option<PathBuf>,
    /// Where the target's vmail volume is mounted (as `vmail` below this directory): count,
    /// per folder of the subtrees, the mail a merge brings back and a mirror removes.
    #[arg(long, value_name = "DIR")]
    pub live_mail: Option<PathBuf>,
    #[command(flatten)]
    pub mail: MailSelection,
    /// The archive; its name may be `latest`.
    pub location: ArchiveLocation,
    #[command(flatten)]
    pub access: RepositoryAccess,
}

/// `agent restore`: extract into the volumes mounted under `/mailcow`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct RestoreCommand {
    /// Make this directory (relative to the working directory) equal to the archive.
    #[arg(long = "mirror", value_name = "DIR")]
    pub mirrors: Vec<String>,
    /// Merge the paths' mail into the live maildirs (`mail_merge`): nothing that exists is
    /// changed.
    #[arg(long)]
    pub merge: bool,
    #[command(flatten)]
    pub mail: MailSelection,
    pub location: ArchiveLocation,
    /// Archive paths to extract.
    pub paths: Vec<String>,
    #[command(flatten)]
    pub access: RepositoryAccess,
}

/// `agent stream`: one archived file's content on stdout.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct StreamCommand {
    pub location: ArchiveLocation,
    /// The archive path of a regular file.
    pub path: String,
    #[command(flatten)]
    pub access: RepositoryAccess,
}

/// `agent check`: the repository checks due after a backup.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct CheckCommand {
    /// The server's check of its segments (`check --repository-only`).
    #[arg(long)]
    pub segments: bool,
    /// Every archive's consistency (`check --archives-only`).
    #[arg(long)]
    pub archives: bool,
    /// Verify the data of the objects whose ids are in this slice (`START+LEN`).
    #[arg(long, value_name = "SLICE")]
    pub verify_data: Option<IdSlice>,
    /// The repository, as borg writes it.
    pub repository: String,
    #[command(flatten)]
    pub access: RepositoryAccess,
}

/// A command line being written: options as `--name=value`, so that a value that starts with a
/// dash stays a value; positionals after `--` for the same reason.
#[derive(Default)]
struct ArgsWriter {
    options: Vec<String>,
    positionals: Vec<String>,
}

impl ArgsWriter {
    fn value(&mut self, name: &str, value: impl fmt::Display) {
        self.options.push(format!("--{name}={value}"));
    }

    fn optional(&mut self, name: &str, value: Option<impl fmt::Display>) {
        if let Some(value) = value {
            self.value(name, value);
        }
    }

    fn each(&mut self, name: &str, values: &[impl fmt::Display]) {
        for value in values {
            self.value(name, value);
        }
    }

    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.options.push(format!("--{name}"));
        }
    }

    fn positional(&mut self, value: impl fmt::Display) {
        self.positionals.push(value.to_string());
    }

    fn access(&mut self, access: &RepositoryAccess) {
        let RepositoryAccess {
            lock_wait,
            server_timeout,
            remote_path,
            passphrase_file,
            ssh_key,
            ssh_key_passphrase_file,
            known_hosts,
        } = access;
        self.value("lock-wait", lock_wait);
        self.value("server-timeout", server_timeout);
        self.optional("remote-path", remote_path.as_ref());
        for (name, file) in [
            ("passphrase-file", passphrase_file),
            ("ssh-key", ssh_key),
            ("ssh-key-passphrase-file", ssh_key_passphrase_file),
            ("known-hosts", known_hosts),
        ] {
            self.optional(name, file.as_ref().map(|f| f.display()));
        }
    }

    fn mail(&mut self, mail: &MailSelection) {
        let MailSelection {
            maildir_sub,
            filter:
                MailFilter {
                    folders,
                    since,
                    before,
                },
            into_folder,
            to,
        } = mail;
        self.value("maildir-sub", maildir_sub);
        self.each("folder", folders);
        self.optional("since", since.as_ref());
        self.optional("before", before.as_ref());
        self.optional("into-folder", into_folder.as_ref());
        self.optional("to", to.as_ref());
    }

    fn finish(self, subcommand: &str) -> Vec<String> {
        let mut args = vec![AGENT.to_string(), subcommand.to_string()];
        args.extend(self.options);
        args.push("--".into());
        args.extend(self.positionals);
        args
    }
}

impl HelperCommand {
    /// The helper's command line: `agent <subcommand> <options> -- <positionals>`. The fields
    /// are destructured, so that a new one cannot be forgotten here.
    pub fn to_args(&self) -> Vec<String> {
        let mut w = ArgsWriter::default();
        let subcommand = match self {
            HelperCommand::Backup(command) => {
                let BackupCommand {
                    require_crypt_keys,
                    comment,
                    compression,
                    checkpoint_interval,
                    upload_ratelimit,
                    excludes,
                    output,
                    retention,
                    dump_name,
                    location,
                    paths,
                    access,
                } = &**command;
                let RetentionCommand {
                    prune_glob,
                    keep_within,
                    keeps,
                    compact,
                } = retention;
                let OutputOptions {
                    stats,
                    json,
                    list,
                    progress,
                } = *output;
                w.optional(
                    "require-crypt-keys",
                    require_crypt_keys.as_ref().map(|d| d.display()),
                );
                w.value("comment", comment);
                w.value("compression", compression);
                w.value("checkpoint-interval", checkpoint_interval);
                w.value("upload-ratelimit", upload_ratelimit);
                w.each("exclude", excludes);
                w.flag("stats", stats);
                w.flag("json", json);
                w.flag("list", list);
                w.flag("progress", progress);
                if prune_glob.is_some() {
                    w.optional("prune-glob", prune_glob.as_ref());
                    w.optional("keep-within", keep_within.as_ref());
                    w.each("keep", keeps);
                    w.value("compact", compact);
                }
                w.optional("dump-name", dump_name.as_ref());
                w.access(access);
                w.positional(location);
                paths.iter().for_each(|p| w.positional(p));
                "backup"
            }
            HelperCommand::Inspect(command) => {
                let InspectCommand {
                    subtrees,
                    target_crypt,
                    live_mail,
                    mail,
                    location,
                    access,
                } = &**command;
                w.each("subtree", subtrees);
                w.optional("target-crypt", target_crypt.as_ref().map(|d| d.display()));
                w.optional("live-mail", live_mail.as_ref().map(|d| d.display()));
                w.mail(mail);
                w.access(access);
                w.positional(location);
                "inspect"
            }
            HelperCommand::Restore(command) => {
                let RestoreCommand {
                    mirrors,
                    merge,
                    mail,
                    location,
                    paths,
                    access,
                } = &**command;
                w.each("mirror", mirrors);
                w.flag("merge", *merge);
                w.mail(mail);
                w.access(access);
                w.positional(location);
                paths.iter().for_each(|p| w.positional(p));
                "restore"
            }
            HelperCommand::Stream(command) => {
                let StreamCommand {
                    location,
                    path,
                    access,
                } = &**command;
                w.access(access);
                w.positional(location);
                w.positional(path);
                "stream"
            }
            HelperCommand::Check(command) => {
                let CheckCommand {
                    segments,
                    archives,
                    verify_data,
                    repository,
                    access,
                } = &**command;
                w.flag("segments", *segments);
                w.flag("archives", *archives);
                w.optional("verify-data", verify_data.as_ref());
                w.access(access);
                w.positional(repository);
                "check"
            }
        };
        w.finish(subcommand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Our binary as far as the helper is concerned: `mailcow-borg agent <subcommand>`.
    #[derive(Parser)]
    struct Binary {
        #[command(subcommand)]
        top: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        #[command(subcommand)]
        Agent(HelperCommand),
    }

    fn round_trip(command: HelperCommand) {
        let args = command.to_args();
        let parsed = Binary::try_parse_from(std::iter::once("mailcow-borg".into()).chain(args))
            .unwrap_or_else(|e| panic!("{command:?} does not parse back: {e}"));
        let Top::Agent(parsed) = parsed.top;
        assert_eq!(parsed, command);
    }

    #[test]
    fn a_location_needs_an_archive() {
        assert_eq!(
            "/srv/repo::mailcow-1::x".parse::<ArchiveLocation>(),
            Ok(ArchiveLocation {
                repository: "/srv/repo".into(),
                archive: "mailcow-1::x".into(),
            })
        );
        let refused = "/srv/repo".parse::<ArchiveLocation>().unwrap_err();
        assert_eq!(
            refused.to_string(),
            "/srv/repo: no archive given (REPOSITORY::ARCHIVE)"
        );
    }

    fn location(archive: &str) -> ArchiveLocation {
        ArchiveLocation {
            repository: "ssh://borg@backup.example.org:2222/./mailcow".into(),
            archive: archive.into(),
        }
    }

    fn full_access() -> RepositoryAccess {
        RepositoryAccess {
            lock_wait: 0,
            server_timeout: u64::MAX,
            remote_path: Some("--borg 1.4".into()),
            passphrase_file: Some("/run/secrets/passphrase".into()),
            ssh_key: Some("/run/secrets/ssh_key".into()),
            ssh_key_passphrase_file: Some("/run/secrets/ssh key passphrase".into()),
            known_hosts: Some("-known_hosts".into()),
        }
    }

    fn bare_access() -> RepositoryAccess {
        RepositoryAccess {
            lock_wait: 1,
            server_timeout: 300,
            remote_path: None,
            passphrase_file: None,
            ssh_key: None,
            ssh_key_passphrase_file: None,
            known_hosts: None,
        }
    }

    fn backup(access: RepositoryAccess) -> BackupCommand {
        BackupCommand {
            require_crypt_keys: Some("crypt".into()),
            comment: "mailcow-borg 1 {\"maildir_sub\": \"Maildir\"}\n-x".into(),
            compression: "zstd,3".into(),
            checkpoint_interval: 1800,
            upload_ratelimit: 2048,
            excludes: vec!["-e".into(), "vmail/*/ spaced/*".into(), "".into()],
            output: OutputOptions {
                stats: true,
                json: true,
                list: true,
                progress: true,
            },
            retention: RetentionCommand {
                prune_glob: Some("mail-mailcow-* [*]".into()),
                keep_within: Some("2d".into()),
                keeps: vec![
                    Keep {
                        period: crate::ops::prune::Period::Daily,
                        count: 7,
                    },
                    Keep {
                        period: crate::ops::prune::Period::Quarterly13Weekly,
                        count: -1,
                    },
                ],
                compact: When::Every {
                    amount: 7,
                    unit: 'd',
                },
            },
            dump_name: Some("mysql/my db.sql".into()),
            location: location("mailcow-{now}"),
            paths: vec!["vmail".into(), "-".into(), "--json".into(), "config".into()],
            access,
        }
    }

    #[test]
    fn backup_round_trips() {
        round_trip(HelperCommand::Backup(Box::new(backup(full_access()))));
        round_trip(HelperCommand::Backup(Box::new(BackupCommand {
            require_crypt_keys: None,
            comment: String::new(),
            excludes: Vec::new(),
            output: OutputOptions::default(),
            retention: RetentionCommand::default(),
            dump_name: None,
            paths: Vec::new(),
            upload_ratelimit: 0,
            ..backup(bare_access())
        })));
    }

    fn full_mail() -> MailSelection {
        MailSelection {
            maildir_sub: "-Mail dir".into(),
            filter: MailFilter {
                folders: vec!["INBOX".into(), "-x/Entwürfe".into(), "a=b".into()],
                since: Some(-5),
                before: Some(1_796_601_600),
            },
            into_folder: Some("Restored 2026-12-07".into()),
            to: Some("vmail/example.net/v".into()),
        }
    }

    #[test]
    fn inspect_round_trips() {
        round_trip(HelperCommand::Inspect(Box::new(InspectCommand {
            subtrees: vec!["vmail/example.org/a b".into(), "-v".into()],
            target_crypt: Some("/target/crypt".into()),
            live_mail: Some("/target".into()),
            mail: full_mail(),
            location: location("latest"),
            access: full_access(),
        })));
        round_trip(HelperCommand::Inspect(Box::new(InspectCommand {
            subtrees: Vec::new(),
            target_crypt: None,
            live_mail: None,
            mail: MailSelection::default(),
            location: location(""),
            access: bare_access(),
        })));
    }

    #[test]
    fn restore_round_trips() {
        round_trip(HelperCommand::Restore(Box::new(RestoreCommand {
            mirrors: vec!["vmail/example.org/user".into(), "--crypt".into()],
            merge: true,
            mail: full_mail(),
            location: location("a::b c"),
            paths: vec!["crypt".into(), "-".into(), "vmail/ä ö".into()],
            access: full_access(),
        })));
        round_trip(HelperCommand::Restore(Box::new(RestoreCommand {
            mirrors: Vec::new(),
            merge: false,
            mail: MailSelection::default(),
            location: location("-archive"),
            paths: Vec::new(),
            access: bare_access(),
        })));
    }

    #[test]
    fn stream_round_trips() {
        round_trip(HelperCommand::Stream(Box::new(StreamCommand {
            location: location("mailcow-2024-01-01"),
            path: "mysql/mailcow.sql".into(),
            access: full_access(),
        })));
        round_trip(HelperCommand::Stream(Box::new(StreamCommand {
            location: location("x"),
            path: "--".into(),
            access: bare_access(),
        })));
        round_trip(HelperCommand::Check(Box::new(CheckCommand {
            segments: true,
            archives: false,
            verify_data: Some(IdSlice::share(123, 5)),
            repository: "ssh://u@h:23/./repo".into(),
            access: full_access(),
        })));
        round_trip(HelperCommand::Check(Box::new(CheckCommand {
            segments: false,
            archives: true,
            verify_data: None,
            repository: "-repo".into(),
            access: bare_access(),
        })));
    }

    #[test]
    fn a_location_splits_at_its_first_double_colon() {
        assert_eq!(
            "/srv/repo::a::b".parse::<ArchiveLocation>(),
            Ok(ArchiveLocation {
                repository: "/srv/repo".into(),
                archive: "a::b".into()
            })
        );
        assert!("/srv/repo".parse::<ArchiveLocation>().is_err());
    }
}
