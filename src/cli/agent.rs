//! `mailcow-borg agent …`: what runs **inside** the helper container (hidden from `--help`).
//! The host starts it with the mailcow volumes mounted under `/mailcow` and everything it needs
//! on its command line, except secrets, which are files under `/run/secrets`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Outcome;
use super::create::{self, CreateArgs};
use crate::mailcow::components::CRYPT_KEYS;
use crate::mailcow::frames::FramedReader;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// `create` over the mounted volumes; `-` is the framed database dump on stdin.
    Backup(Box<AgentBackupArgs>),
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
    }
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
