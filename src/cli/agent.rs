//! `mailcow-borg agent …`: what runs **inside** the helper container (hidden from `--help`).
//! The host starts it with the mailcow volumes mounted under `/mailcow` and everything it needs
//! on its command line, except secrets, which are files under `/run/secrets`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Outcome;
use super::access::{AccessArgs, parse_location, runtime};
use super::create::{self, CreateArgs, Interrupted};
use crate::format::manifest::Operation;
use crate::mailcow::components::CRYPT_KEYS;
use crate::mailcow::frames::FramedReader;
use crate::mailcow::summary::summarize;
use crate::ops::extract::{ExtractOptions, extract};
use crate::ops::items::load_archive;
use crate::ops::open::{OpenRepository, open};
use crate::ops::stream_file::stream_file;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// `create` over the mounted volumes; `-` is the framed database dump on stdin.
    Backup(Box<AgentBackupArgs>),
    /// Print what a restore must know about an archive, as JSON.
    Inspect(Box<InspectArgs>),
    /// Extract into the mounted volumes, replacing files atomically and mirroring directories.
    Restore(Box<AgentRestoreArgs>),
    /// Write one file's content (the database dump) to stdout.
    Stream(Box<StreamArgs>),
}

#[derive(Args)]
pub struct InspectArgs {
    /// REPOSITORY::ARCHIVE, the archive may be `latest`.
    location: String,
    /// Archive paths to look for (mailboxes, domains).
    #[arg(long = "subtree", value_name = "PATH")]
    subtrees: Vec<String>,
    /// The target's crypt volume, to compare the mail_crypt keys with.
    #[arg(long, value_name = "DIR")]
    target_crypt: Option<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Args)]
pub struct AgentRestoreArgs {
    /// REPOSITORY::ARCHIVE
    location: String,
    /// Archive paths to extract.
    paths: Vec<String>,
    /// Make this directory (relative to the working directory) equal to the archive.
    #[arg(long = "mirror", value_name = "DIR")]
    mirrors: Vec<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Args)]
pub struct StreamArgs {
    /// REPOSITORY::ARCHIVE
    location: String,
    /// The archive path of a regular file.
    path: String,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Args)]
pub struct AgentBackupArgs {
    /// Refuse to run unless this directory holds dovecot's mail_crypt key pair, non-empty.
    #[arg(long, value_name = "DIR")]
    require_crypt_keys: Option<PathBuf>,
    #[command(flatten)]
    create: CreateArgs,
}

pub fn run(command: AgentCommand) -> anyhow::Result<Outcome> {
    match command {
        AgentCommand::Backup(args) => {
            if let Some(dir) = &args.require_crypt_keys {
                check_crypt_keys(dir)?;
            }
            let dump = FramedReader::new(std::io::stdin());
            let extras = create::Extras {
                stdin: Some((Box::new(dump), true)),
                // Postfix's fifos (public/pickup, …) are the mail system's, made again when it
                // starts; mailcow's volumes hold no other special files.
                skip_special: true,
            };
            create::run_with(args.create, extras)
        }
        AgentCommand::Inspect(args) => {
            let subtrees = args.subtrees.clone();
            let target = args.target_crypt.clone();
            with_archive(&args.location, &args.access, async move |repo, name| {
                let summary = summarize(
                    &repo.repo,
                    &repo.key,
                    &repo.manifest,
                    &name,
                    &subtrees,
                    target.as_deref(),
                )
                .await?;
                let json = serde_json::to_string(&summary)?;
                writeln!(std::io::stdout().lock(), "{json}")?;
                Ok(Outcome::Ok)
            })
        }
        AgentCommand::Restore(args) => {
            let cwd = std::env::current_dir()?;
            let options = ExtractOptions {
                destination: cwd.clone(),
                paths: args.paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
                // The helper has no user database: owners are the archive's numbers.
                numeric_ids: true,
                replace_atomically: true,
                // A restored mailbox whose domain directory is gone gets it back as it was.
                parents: true,
                // Mail volumes hold no privileged programs.
                no_set_id_files: true,
                mirror: args.mirrors.iter().map(|m| cwd.join(m)).collect(),
                ..Default::default()
            };
            with_archive(&args.location, &args.access, async move |repo, name| {
                let archive = load_archive(&repo.repo, &repo.key, &repo.manifest, &name).await?;
                archive.require_tam()?;
                let stats = extract(&repo.repo, &repo.key, &archive, &options).await?;
                let outcome = Outcome::after_warnings(&stats.warnings);
                say!(
                    "restored {} items ({} bytes); removed {} entries the archive does not hold",
                    stats.items,
                    stats.bytes,
                    stats.removed
                );
                Ok(outcome)
            })
        }
        AgentCommand::Stream(args) => {
            let path = args.path.clone();
            with_archive(&args.location, &args.access, async move |repo, name| {
                let archive = load_archive(&repo.repo, &repo.key, &repo.manifest, &name).await?;
                archive.require_tam()?;
                let mut out = tokio::io::stdout();
                stream_file(&repo.repo, &repo.key, &archive, &path, &mut out).await?;
                Ok(Outcome::Ok)
            })
        }
    }
}

/// Opens the repository of `location` for reading, runs `work` with it and the archive name,
/// and closes it.
///
/// The helper is its container's PID 1, which the kernel spares from signals it has no handler
/// for: SIGINT and SIGTERM are caught here, and end the command at once. Nothing it does needs
/// rolling back (it only reads the repository; a file it was writing has a temporary name).
fn with_archive(
    location: &str,
    access: &AccessArgs,
    work: impl AsyncFnOnce(&OpenRepository, String) -> anyhow::Result<Outcome>,
) -> anyhow::Result<Outcome> {
    let location_parsed = parse_location(Some(location))?;
    let Some(name) = location_parsed.archive.clone() else {
        anyhow::bail!("{location}: no archive given (REPOSITORY::ARCHIVE)");
    };
    let options = access.to_options()?;
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let mut stop = super::signals::first()?;
        let run = async {
            let repo = open(&location_parsed, &options, Operation::Read).await?;
            let result = work(&repo, name).await;
            let closed = repo.close().await;
            let outcome = result?;
            closed.map_err(|e| anyhow::anyhow!("closing the repository: {e}"))?;
            Ok(outcome)
        };
        tokio::select! {
            outcome = run => outcome,
            name = super::signals::arrived(&mut stop) => Err(Interrupted::by(name, "stopped").into()),
        }
    });
    // Not waiting for a writer thread that the signal left behind.
    runtime.shutdown_background();
    result
}
/// A vmail backup without the keys its mail is encrypted with is worthless, and dovecot makes a
/// new, wrong pair when the files are missing or empty: refuse, and say why.
fn check_crypt_keys(dir: &std::path::Path) -> anyhow::Result<()> {
    for name in CRYPT_KEYS {
        let path = dir.join(name);
        let problem = match std::fs::metadata(&path) {
            Ok(st) if st.is_file() && st.len() > 0 => continue,
            Ok(st) if st.is_file() => "is empty",
            Ok(_) => "is not a file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "is missing",
            Err(_) => "cannot be read",
        };
        anyhow::bail!(
            "refusing to back up vmail: {} {problem} in the crypt volume (crypt-vol-1); mail in vmail is encrypted with dovecot's mail_crypt key pair, and a backup without it cannot be read. Restore the keys (or check that the crypt volume is the one dovecot-mailcow mounts at /mail_crypt) and run again",
            path.display()
        );
    }
    Ok(())
}
