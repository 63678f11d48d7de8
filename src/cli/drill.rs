//! `mailcow-borg drill [ARCHIVE|latest]`: restore an archive into scratch volumes and prove it
//! usable in throwaway containers (`mailcow::drill`); the live mailcow is not touched. A line
//! per step, or one JSON object; exit 0 when every step is ok, 1 with warnings, 2 when a step
//! failed.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::Outcome;
use super::run_log::RunLog;
use super::scratch_run::{OnStop, run_scratch};
use super::settings::{Settings, SettingsArgs, settings};
use crate::mailcow::access::HelperAccess;
use crate::mailcow::drill::{DrillError, DrillReport, DrillRequest, Sample, Status, drill};
use crate::mailcow::restore::RestoreOptions;

#[derive(Args)]
pub struct DrillArgs {
    /// The archive: its name, or `latest` (the newest, not a checkpoint).
    #[arg(default_value = "latest")]
    archive: String,
    #[command(flatten)]
    settings: SettingsArgs,
    /// How many mails of each mailbox dovecot reads (spread over the mailbox).
    #[arg(long, value_name = "N", default_value_t = 10, conflicts_with = "all")]
    sample: u32,
    /// Read every mail of every mailbox.
    #[arg(long)]
    all: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DrillArgs) -> anyhow::Result<Outcome> {
    let Settings {
        file,
        mailcow_dir,
        access,
    } = settings(&args.settings)?;
    let log = RunLog::begin("drill", file.notify);
    let archive = Some(args.archive.clone());
    log.end(
        archive,
        None,
        None,
        drill_archive(args, mailcow_dir, access),
    )
}

fn drill_archive(
    args: DrillArgs,
    mailcow_dir: PathBuf,
    access: HelperAccess,
) -> anyhow::Result<Outcome> {
    let request = DrillRequest {
        archive: args.archive.clone(),
        sample: if args.all {
            Sample::All
        } else {
            Sample::PerMailbox(args.sample)
        },
    };
    let options = RestoreOptions {
        mailcow_dir,
        access,
    };
    let report = run_scratch(
        &options,
        OnStop {
            stopping: "stopping; the drill's scratch containers and volumes are removed",
            stopped: "the drill's scratch containers and volumes were removed",
        },
        |e| match e {
            DrillError::Stopped(signal) => Some(*signal),
            _ => None,
        },
        async |engine, conf, stop, say| drill(engine, &options, conf, &request, stop, say).await,
    )?;
    print(&report, args.json)?;
    match report.status() {
        Status::Ok | Status::Skipped => Ok(Outcome::Ok),
        Status::Warning => Ok(Outcome::Warning),
        Status::Failed => {
            anyhow::bail!(
                "the drill of archive {} failed: {} (see above)",
                report.archive,
                report.failed_steps().join(", ")
            )
        }
    }
}

/// The report on stdout: a line per step (its figures and time) and its messages below it, or
/// one JSON object.
pub(super) fn print(report: &DrillReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(report)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "Drill of archive {} ({:.1} s): {}",
        report.archive,
        report.seconds,
        report.status().name()
    )?;
    for step in &report.steps {
        let figures: Vec<String> = step
            .figures
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        writeln!(
            out,
            "  {:<10} {:<8} {:>7.1} s  {}",
            step.name,
            step.status.name(),
            step.seconds,
            figures.join(" ")
        )?;
        for message in &step.messages {
            writeln!(out, "             {message}")?;
        }
    }
    Ok(())
}
