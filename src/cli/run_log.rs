//! What a run leaves behind for monitoring: notifications (`[notify]`) of its start and end,
//! its record in the journal of the state dir, and, when the config names a `metrics_file`, the
//! metrics of the runs recorded. None of it changes a run's outcome: what cannot be sent or
//! written is a warning on stderr.

use std::path::Path;
use std::time::Duration;

use super::Outcome;
use super::exit;
use super::human;
use crate::mailcow::journal;
use crate::mailcow::metrics;
use crate::mailcow::run_record::RunRecord;
use crate::notify::{Event, Message, Notifier, NotifyConfig};
use crate::ops::durable::write_durably;
use crate::ops::system::now_micros;

/// A run being watched: begun (its start notified), ended with its record.
pub struct RunLog {
    command: &'static str,
    start: i64,
    hostname: String,
    notifier: Option<Notifier>,
}

/// Where a run is recorded: the journal of the state dir (the host lock is held: one writer at
/// a time), and the metrics file.
pub struct Journal<'a> {
    pub state_dir: &'a Path,
    pub metrics_file: Option<&'a Path>,
}

impl RunLog {
    /// `command` starts now; its start goes to the targets that want it, beside the run.
    pub fn begin(command: &'static str, notify: Option<NotifyConfig>) -> RunLog {
        let start = now_micros();
        let hostname = &crate::ops::placeholders::host_name();
        let notifier = notify.map(|config| {
            let mut notifier = Notifier::new(config);
            notifier.start(Message {
                event: Event::Start,
                title: format!("mailcow-borg {command} on {hostname} started"),
                text: format!(
                    "mailcow-borg {command} on {hostname} started at {}.",
                    human::time(start)
                ),
                log: Vec::new(),
                summary: serde_json::json!({
                    "event": Event::Start,
                    "command": command,
                    "hostname": hostname,
                    "start": start,
                    "start_time": utc(start),
                }),
                duration: None,
                hostname: hostname.into(),
            });
            notifier
        });
        RunLog {
            command,
            start,
            hostname: hostname.into(),
            notifier,
        }
    }

    /// The run ended with `result`: the record of it (`archive` the one it wrote or read, with
    /// the figures of the helper's JSON `summary`), the notifications of how it ended, and —
    /// given a `journal` — the journal and metrics. Returns `result` as it was.
    pub fn end(
        self,
        archive: Option<String>,
        summary: Option<&[u8]>,
        journal: Option<Journal>,
        result: anyhow::Result<Outcome>,
    ) -> anyhow::Result<Outcome> {
        let error = result.as_ref().err().map(exit::one_line);
        let mut record = RunRecord::new(
            self.command,
            self.start,
            now_micros(),
            exit::exit_code(&result),
            archive,
            None,
            error.as_deref(),
        );
        if let Some(summary) = summary {
            record = record.with_summary(summary);
        }
        if let Some(journal) = journal {
            write_journal(journal, record.clone());
        }
        if let Some(notifier) = self.notifier {
            notifier.finish(message(&record, &self.hostname));
        }
        result
    }
}

/// How `record`'s run ended, as every notification kind tells it.
fn message(record: &RunRecord, hostname: &str) -> Message {
    let event = Event::of_exit_code(record.exit_code);
    let how = match event {
        Event::Success => "succeeded",
        Event::Warning => "succeeded with warnings",
        _ => "FAILED",
    };
    let command = &record.command;
    let seconds = record.duration_seconds();
    let mut lines = vec![format!(
        "mailcow-borg {command} on {hostname} {how} after {seconds:.0} s (exit {}).",
        record.exit_code
    )];
    if let Some(archive) = &record.archive {
        lines.push(format!("Archive: {archive}"));
    }
    if let Some(f) = record.figures {
        lines.push(format!(
            "Files: {}; original {}, compressed {}, added to the repository {}.",
            f.files,
            human::size(f.original_bytes.into()),
            human::size(f.compressed_bytes.into()),
            human::size(f.deduplicated_bytes.into())
        ));
    }
    if let Some(error) = &record.error {
        lines.push(format!("Error: {error}"));
    }
    if event != Event::Success {
        lines.push(format!(
            "`mailcow-borg status` on {hostname} shows the recent runs; the lines below are this run's last."
        ));
    }
    // The error line is printed when the process ends, after this; the log has it already.
    let mut log = crate::stderr::last_lines();
    if let Some(error) = &record.error {
        log.push(format!("mailcow-borg: error: {error}"));
    }
    let mut summary = serde_json::to_value(record).unwrap_or_default();
    summary["event"] = serde_json::json!(event);
    summary["hostname"] = serde_json::json!(hostname);
    summary["start_time"] = serde_json::json!(utc(record.start));
    summary["end_time"] = serde_json::json!(utc(record.end));
    summary["duration_seconds"] = serde_json::json!(seconds);
    summary["log"] = serde_json::json!(log);
    Message {
        event,
        title: format!("mailcow-borg {command} on {hostname} {how}"),
        text: lines.join("\n"),
        log,
        summary,
        duration: Some(Duration::from_secs_f64(seconds)),
        hostname: hostname.into(),
    }
}

/// RFC 3339 in UTC, for machines: `2026-12-07T06:22:42.123456Z`.
fn utc(unix_micros: i64) -> String {
    format!(
        "{}Z",
        crate::format::manifest::format_timestamp(unix_micros)
    )
}

/// Appends `record` to the journal and rewrites the metrics file.
fn write_journal(journal: Journal, record: RunRecord) {
    let Journal {
        state_dir,
        metrics_file,
    } = journal;
    let records = match journal::append(state_dir, record.clone()) {
        Ok(records) => records,
        Err(e) => {
            say!(
                "mailcow-borg: warning: cannot record this run in {}: {e}; `status` and the metrics miss it",
                journal::path(state_dir).display()
            );
            // The metrics still tell of this run, as far as it alone can.
            vec![record]
        }
    };
    if let Some(path) = metrics_file
        && let Err(e) = write_durably(path, metrics::render(&records).as_bytes())
    {
        say!(
            "mailcow-borg: warning: cannot write the metrics file {}: {e}; check metrics_file in the config",
            path.display()
        );
    }
}
