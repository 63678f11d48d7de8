//! What `backup` runs after a good archive when the config's `[check]` finds it due
//! ([`super::schedule`]): the repository checks, in one helper (`agent check`, which stamps
//! each when the run is clean), then a restore drill of the archive just written (stamped
//! here unless it failed). Both only read the repository; the archive is safe whatever they
//! find, and the caller says so.

use crate::docker::Engine;
use crate::docker::helper::StdoutTo;

use super::access::HelperError;
use super::conf::MailcowConf;
use super::drill::{DrillError, DrillReport, DrillRequest, Sample, Status, drill};
use super::helper_command::{CheckCommand, HelperCommand};
use super::restore::{RestoreOptions, run_helper};
use super::schedule::{CheckSchedule, DueChecks, Stamped, Stamps};
use crate::docker::DockerError;

/// Yields the signal (`SIGINT`, `SIGTERM`) that asks the run to stop.
type Stop = tokio::sync::watch::Receiver<Option<&'static str>>;

/// What ran, and how it ended.
#[derive(Debug, Default)]
pub struct Scheduled {
    /// What was due.
    pub due: DueChecks,
    /// The check helper's exit code (0 clean, 1 problems found, 2 error), if it ran.
    pub check_exit: Option<i64>,
    pub drill: Option<DrillReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduledError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Drill(#[from] DrillError),
    #[error("stopped by {0}")]
    Stopped(&'static str),
}

/// Runs what `schedule` finds due for `options`' repository now, the drill on `archive`.
pub async fn run_due(
    engine: &Engine,
    options: &RestoreOptions,
    conf: &MailcowConf,
    schedule: &CheckSchedule,
    archive: &str,
    mut stop: Stop,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Scheduled, ScheduledError> {
    let access = &options.access;
    let now = crate::ops::system::now_micros().div_euclid(1_000_000);
    let due = schedule.due(&Stamps::load(&access.state_dir), &access.repository, now);
    let mut scheduled = Scheduled {
        due: due.clone(),
        ..Scheduled::default()
    };
    if due.any_check() {
        let (image, _) = access.image(engine).await?;
        let command = HelperCommand::Check(Box::new(CheckCommand {
            segments: due.repository,
            archives: due.archives,
            verify_data: due.data,
            repository: access.repository.clone(),
            access: access.in_helper(),
        }));
        say(&format!(
            "checking the repository: {}",
            what_is_checked(&due)
        ));
        let spec = access.helper_spec(&image, &conf.project, &command);
        let (code, _, interrupted) = run_helper(engine, &spec, StdoutTo::Relay, &mut stop).await?;
        if let Some(signal) = interrupted {
            return Err(ScheduledError::Stopped(signal));
        }
        scheduled.check_exit = Some(code);
    }
    if due.drill {
        let request = DrillRequest {
            archive: archive.to_string(),
            sample: Sample::PerMailbox(schedule.drill_sample),
        };
        let report = drill(engine, options, conf, &request, stop, say).await?;
        // Loaded afresh: the check helper has stamped its own since.
        let mut stamps = Stamps::load(&access.state_dir);
        if report.status() != Status::Failed
            && let Err(e) = stamps.set(Stamped::Drill, &access.repository, now)
        {
            // Unrecorded, the drill runs again after the next backup: time, nothing worse.
            say(&format!(
                "cannot record the drill in {}: {e}",
                stamps.path().display()
            ));
        }
        scheduled.drill = Some(report);
    }
    Ok(scheduled)
}

/// The checks of `due`, in words.
pub fn what_is_checked(due: &DueChecks) -> String {
    let mut parts = Vec::new();
    if due.repository {
        parts.push("segments".to_string());
    }
    if due.archives {
        parts.push("archives".to_string());
    }
    if let Some(slice) = due.data {
        parts.push(if slice.is_all() {
            "all data".to_string()
        } else {
            format!("{:.0}% of the data", slice.percent())
        });
    }
    parts.join(", ")
}
