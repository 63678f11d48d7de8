//! `mailcow-borg export --mailbox USER@DOMAIN [ARCHIVE|latest] --format mbox|maildir -o PATH`:
//! one mailbox of an archive, decrypted, as an mbox file or a maildir tree
//! (`mailcow::export`); the live mailcow is not touched. `--dry-run` checks and says what
//! would be exported.

use std::path::PathBuf;

use clap::Args;

use super::Outcome;
use super::human;
use super::mail_filter::MailFilterArgs;
use super::scratch_run::{OnStop, run_scratch};
use super::settings::{Settings, SettingsArgs, settings};
use crate::mailcow::export::{
    ExportError, ExportReport, ExportRequest, Format, check_request, export,
};
use crate::mailcow::restore::RestoreOptions;
use crate::mailcow::throwaway::ScratchError;

#[derive(Args)]
pub struct ExportArgs {
    /// The archive: its name, or `latest` (the newest, not a checkpoint).
    #[arg(default_value = "latest")]
    archive: String,
    #[command(flatten)]
    settings: SettingsArgs,
    /// The mailbox to export.
    #[arg(long, value_name = "USER@DOMAIN")]
    mailbox: String,
    /// mbox (one file, every folder's messages) or maildir (a maildir++ tree).
    #[arg(long, value_name = "FORMAT")]
    format: String,
    /// Where to write it; it must not exist.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
    #[command(flatten)]
    filter: MailFilterArgs,
    /// Check the mailbox and the path, say what would be exported, write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

/// Why the format given is not one.
#[derive(Debug, thiserror::Error)]
#[error("--format {0:?} is not one export writes: give mbox or maildir")]
pub struct UnknownFormat(String);

fn format(name: &str) -> Result<Format, UnknownFormat> {
    match name {
        "mbox" => Ok(Format::Mbox),
        "maildir" => Ok(Format::Maildir),
        other => Err(UnknownFormat(other.to_string())),
    }
}

pub fn run(args: ExportArgs) -> anyhow::Result<Outcome> {
    let request = ExportRequest {
        mailbox: args.mailbox.clone(),
        archive: args.archive.clone(),
        format: format(&args.format)?,
        output: args.output.clone(),
        selection: args.filter.filter()?,
        dry_run: args.dry_run,
    };
    // Refused before the settings are even read.
    check_request(&request)?;
    let Settings {
        mailcow_dir,
        access,
        ..
    } = settings(&args.settings)?;
    let options = RestoreOptions {
        mailcow_dir,
        access,
    };
    let report = run_scratch(
        &options,
        OnStop {
            stopping: "stopping; the export's scratch containers and volumes are removed",
            stopped: "nothing was written; the export's scratch containers and volumes were removed",
        },
        |e| match e {
            ExportError::Scratch(ScratchError::Stopped(signal)) => Some(*signal),
            _ => None,
        },
        async |engine, conf, stop, say| export(engine, &options, conf, &request, stop, say).await,
    )?;
    finish(&request, &report);
    Ok(Outcome::after_warnings(
        &report
            .warnings
            .iter()
            .map(|w| format!("mailcow-borg: warning: {w}"))
            .collect::<Vec<_>>(),
    ))
}

/// The last line: what was (or would be) written.
fn finish(request: &ExportRequest, report: &ExportReport) {
    if request.dry_run {
        say!(
            "dry run: would export {} from archive {} ({} files, {} in the archive) as {} to {}; nothing was written",
            request.mailbox,
            report.archive,
            report.archived.items,
            human::size(report.archived.bytes as i128),
            request.format.name(),
            request.output.display()
        );
        return;
    }
    say!(
        "mailcow-borg: exported {} messages ({}) in {} folders of {} from archive {} as {} to {}",
        report.messages,
        human::size(report.bytes as i128),
        report.folders.len(),
        request.mailbox,
        report.archive,
        request.format.name(),
        request.output.display()
    );
}
