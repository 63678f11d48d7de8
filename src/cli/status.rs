//! `mailcow-borg status`: is there a fresh, good backup? From the journal of runs in the state
//! dir and, when it can be reached, the repository's newest archive of the backup's own name
//! pattern. A monitoring check: exit 0 fresh, 1 warning, 2 stale or failed; with `--nagios`,
//! one line with perfdata and the plugin exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::access::{runtime, with_repository};
use super::config;
use super::config_check::repository_access;
use super::exit;
use super::human;
use super::settings::{SettingsArgs, settings};
use crate::format::manifest::{Operation, parse_timestamp};
use crate::mailcow::journal;
use crate::mailcow::run_record::RunRecord;
use crate::ops::patterns::ArchiveGlob;
use crate::ops::placeholders::{PlaceholderValues, name_glob};
use crate::ops::prune::checkpoint_suffix;
use crate::ops::system::now_micros;

/// The longest `status` waits for the repository: a monitoring check must answer in time, and
/// without the repository it still answers from the journal.
const REPOSITORY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// A newest good backup older than this is stale: a number and s, m, h, d or w.
    #[arg(long, value_name = "AGE", default_value = "26h", value_parser = parse_age)]
    max_age: Duration,
    /// Print the status as one JSON document.
    #[arg(long)]
    json: bool,
    /// Print one line for Nagios or Icinga, with perfdata, and exit with the plugin codes.
    #[arg(long, conflicts_with = "json")]
    nagios: bool,
}

/// `26h`, `90m`, `2d`, ...: a positive number of seconds, minutes, hours, days or weeks.
fn parse_age(text: &str) -> Result<Duration, String> {
    let refused = || format!("{text:?} is not an age: give a number and s, m, h, d or w (26h)");
    let unit = match text.chars().last().ok_or_else(refused)? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 7 * 86400,
        _ => return Err(refused()),
    };
    let amount: u64 = text[..text.len() - 1].parse().map_err(|_| refused())?;
    match amount.checked_mul(unit) {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(refused()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }

    /// The exit code, for `status` and for a Nagios plugin alike.
    fn code(self) -> i32 {
        match self {
            Level::Ok => exit::EXIT_OK,
            Level::Warning => exit::EXIT_WARNING,
            Level::Critical => exit::EXIT_ERROR,
        }
    }
}

/// The newest archive of the backup's name pattern (checkpoints left out), as the repository
/// lists it.
struct Newest {
    name: String,
    /// Its start, Unix microseconds.
    time: i64,
}

/// What the repository said, or why it said nothing.
enum Repository {
    Read {
        newest: Option<Newest>,
        archives: usize,
    },
    Unreachable(String),
}

/// Everything `status` found, and its verdict.
struct Status {
    level: Level,
    message: String,
    last: Option<RunRecord>,
    last_success: Option<RunRecord>,
    repository: Repository,
    /// When the newest good backup was made (journal or repository), Unix microseconds.
    newest_good: Option<i64>,
    now: i64,
    max_age: Duration,
}

/// Exit code of a Nagios plugin that cannot tell.
const NAGIOS_UNKNOWN: i32 = 3;

/// Runs `status`; returns the process's exit code (a Nagios plugin's has one more value than
/// borg's, so this command does not end through [`exit::conclude`] alone).
pub fn run(args: StatusArgs) -> i32 {
    match find(&args) {
        Ok(status) => {
            let printed = if args.json {
                print_json(&status)
            } else if args.nagios {
                print_nagios(&status)
            } else {
                print_text(&status)
            };
            match printed {
                Ok(()) => status.level.code(),
                Err(e) => exit::conclude(Err(e)),
            }
        }
        Err(e) if args.nagios => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "MAILCOW-BORG UNKNOWN - {}", exit::one_line(&e));
            NAGIOS_UNKNOWN
        }
        Err(e) => exit::conclude(Err(e)),
    }
}

fn find(args: &StatusArgs) -> anyhow::Result<Status> {
    let settings = settings(&args.settings)?;
    let records = journal::read(&settings.access.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the journal {}: {e}",
            journal::path(&settings.access.state_dir).display()
        )
    })?;
    let backups: Vec<RunRecord> = records
        .into_iter()
        .filter(|r| r.command == "backup")
        .collect();
    let template = settings
        .file
        .archive_name
        .clone()
        .unwrap_or_else(|| config::DEFAULT_ARCHIVE_NAME.into());
    let glob = name_glob(&template, &PlaceholderValues::here(now_micros()))?;
    let mut access = settings.access.clone();
    let timeout = access.repository_access.server_timeout;
    access.repository_access.server_timeout = timeout.min(REPOSITORY_TIMEOUT.as_secs());
    let repository = match newest_archive(&access, &glob) {
        Ok((newest, archives)) => Repository::Read { newest, archives },
        Err(e) => Repository::Unreachable(exit::one_line(&e)),
    };
    Ok(assess(
        backups.last().cloned(),
        backups.iter().rev().find(|r| r.succeeded()).cloned(),
        repository,
        now_micros(),
        args.max_age,
    ))
}

/// The newest archive matching `glob`, and how many match.
fn newest_archive(
    access: &crate::mailcow::access::HelperAccess,
    glob: &str,
) -> anyhow::Result<(Option<Newest>, usize)> {
    let (location, mut options) = repository_access(access)?;
    options.ssh.connect_timeout = REPOSITORY_TIMEOUT;
    // The nightly backup holds the exclusive lock for as long as it runs; a monitoring check
    // then must still answer. Reading the manifest needs no lock.
    options.bypass_lock = true;
    let glob = ArchiveGlob::parse(glob);
    runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Read,
        async |repo| {
            let mut ours: Vec<Newest> = repo
                .archives_by_time()
                .into_iter()
                .filter(|(name, _)| glob.matches(name) && checkpoint_suffix(name).is_none())
                .map(|(name, entry)| Newest {
                    name: String::from_utf8_lossy(name).into_owned(),
                    time: parse_timestamp(&entry.time).unwrap_or(0),
                })
                .collect();
            let count = ours.len();
            Ok((ours.pop(), count))
        },
    ))
}

/// The verdict: a failed last run or a stale newest good backup is critical; a last run that
/// warned, or a repository that could not be read, is a warning.
fn assess(
    last: Option<RunRecord>,
    last_success: Option<RunRecord>,
    repository: Repository,
    now: i64,
    max_age: Duration,
) -> Status {
    let in_repository = match &repository {
        Repository::Read {
            newest: Some(newest),
            ..
        } => Some(newest.time),
        _ => None,
    };
    let newest_good = last_success.as_ref().map(|r| r.end).max(in_repository);
    let age = |micros: i64| Duration::from_secs(((now - micros).max(0) / 1_000_000) as u64);
    let (mut level, mut message) = match (&last, newest_good) {
        (Some(last), _) if !last.succeeded() => (
            Level::Critical,
            format!(
                "the last backup failed (exit {}, {} ago): {}",
                last.exit_code,
                human_age(age(last.end)),
                last.error
                    .as_deref()
                    .unwrap_or("its error was not recorded")
            ),
        ),
        (_, None) => (
            Level::Critical,
            "no good backup is recorded, and the repository lists none".to_string(),
        ),
        (_, Some(good)) if age(good) > max_age => (
            Level::Critical,
            format!(
                "the newest good backup is {} old, more than {}",
                human_age(age(good)),
                human_age(max_age)
            ),
        ),
        (Some(last), Some(_)) if last.exit_code == exit::EXIT_WARNING => (
            Level::Warning,
            format!(
                "the last backup ({} ago) ended with warnings; the messages are in its log",
                human_age(age(last.end))
            ),
        ),
        (_, Some(good)) => (
            Level::Ok,
            format!("the newest good backup is {} old", human_age(age(good))),
        ),
    };
    if let Repository::Unreachable(why) = &repository {
        message.push_str(&format!("; repository unreachable: {why}"));
        if level == Level::Ok {
            level = Level::Warning;
        }
    }
    Status {
        level,
        message,
        last,
        last_success,
        repository,
        newest_good,
        now,
        max_age,
    }
}

/// An age as people say it: `45s`, `12m`, `3h 5m`, `2d 4h`.
fn human_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn age_seconds(status: &Status) -> Option<i64> {
    status
        .newest_good
        .map(|good| (status.now - good).max(0) / 1_000_000)
}

fn print_text(status: &Status) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {}", status.level.name(), status.message)?;
    let run_line = |record: &RunRecord| {
        let mut line = format!(
            "{}, exit {}, took {:.0}s",
            human::time(record.start),
            record.exit_code,
            record.duration_seconds()
        );
        if let Some(archive) = &record.archive {
            line.push_str(&format!(", archive {archive}"));
        }
        if let Some(f) = record.figures {
            line.push_str(&format!(
                " ({} files, {} original, {} deduplicated)",
                f.files,
                human::size(f.original_bytes.into()),
                human::size(f.deduplicated_bytes.into())
            ));
        }
        line
    };
    match &status.last {
        Some(last) => writeln!(out, "last run:     {}", run_line(last))?,
        None => writeln!(out, "last run:     none recorded")?,
    }
    if let Some(success) = status
        .last_success
        .as_ref()
        .filter(|s| Some(*s) != status.last.as_ref())
    {
        writeln!(out, "last success: {}", run_line(success))?;
    }
    match &status.repository {
        Repository::Read {
            newest: Some(newest),
            archives,
        } => writeln!(
            out,
            "repository:   newest archive {} of {} ({archives} of this backup's name)",
            newest.name,
            human::time(newest.time)
        )?,
        Repository::Read { newest: None, .. } => {
            writeln!(out, "repository:   no archive of this backup's name")?
        }
        Repository::Unreachable(why) => writeln!(out, "repository:   unreachable: {why}")?,
    }
    Ok(())
}

fn print_nagios(status: &Status) -> anyhow::Result<()> {
    let mut perfdata = Vec::new();
    if let Some(age) = age_seconds(status) {
        perfdata.push(format!("age={age}s;;{}", status.max_age.as_secs()));
    }
    if let Some(last) = &status.last {
        perfdata.push(format!("duration={:.1}s", last.duration_seconds()));
        perfdata.push(format!("exit_code={}", last.exit_code));
    }
    if let Some(f) = status.last_success.as_ref().and_then(|s| s.figures) {
        perfdata.push(format!("files={}", f.files));
        perfdata.push(format!("original={}B", f.original_bytes));
        perfdata.push(format!("deduplicated={}B", f.deduplicated_bytes));
    }
    if let Repository::Read { archives, .. } = &status.repository {
        perfdata.push(format!("archives={archives}"));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "MAILCOW-BORG {} - {} | {}",
        status.level.name(),
        status.message.replace('|', "/"),
        perfdata.join(" ")
    )?;
    Ok(())
}

fn print_json(status: &Status) -> anyhow::Result<()> {
    let repository = match &status.repository {
        Repository::Read { newest, archives } => serde_json::json!({
            "reachable": true,
            "archives": archives,
            "newest_archive": newest.as_ref().map(|n| serde_json::json!({
                "name": n.name,
                "time": human::iso_time_seconds(n.time),
            })),
        }),
        Repository::Unreachable(why) => serde_json::json!({
            "reachable": false,
            "error": why,
        }),
    };
    let document = serde_json::json!({
        "status": status.level.name().to_lowercase(),
        "message": status.message,
        "age_seconds": age_seconds(status),
        "max_age_seconds": status.max_age.as_secs(),
        "last_run": status.last,
        "last_success": status.last_success,
        "repository": repository,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600 * 1_000_000;

    fn run(end: i64, exit_code: i32) -> RunRecord {
        RunRecord::new(
            "backup",
            end - 1,
            end,
            exit_code,
            None,
            None,
            (exit_code > 1).then_some("mysql: down"),
        )
    }

    fn read(newest: Option<i64>) -> Repository {
        Repository::Read {
            newest: newest.map(|time| Newest {
                name: "a".into(),
                time,
            }),
            archives: newest.iter().count(),
        }
    }

    fn level(last: Option<i64>, code: i32, repository: Repository) -> (Level, String) {
        let last = last.map(|end| run(end, code));
        let success = last.clone().filter(|r| r.succeeded());
        let status = assess(
            last,
            success,
            repository,
            30 * HOUR,
            parse_age("26h").unwrap(),
        );
        (status.level, status.message)
    }

    #[test]
    fn fresh_warned_failed_stale_and_unreachable() {
        assert_eq!(level(Some(29 * HOUR), 0, read(None)).0, Level::Ok);
        assert_eq!(level(Some(29 * HOUR), 1, read(None)).0, Level::Warning);
        let (failed, why) = level(Some(29 * HOUR), 2, read(Some(29 * HOUR)));
        assert_eq!(failed, Level::Critical);
        assert!(why.contains("mysql: down"), "{why}");
        let (stale, why) = level(Some(HOUR), 0, read(None));
        assert_eq!(stale, Level::Critical);
        assert!(why.contains("1d 5h old, more than 1d 2h"), "{why}");
        let (unreachable, why) = level(
            Some(29 * HOUR),
            0,
            Repository::Unreachable("refused".into()),
        );
        assert_eq!(unreachable, Level::Warning);
        assert!(why.ends_with("repository unreachable: refused"), "{why}");
        // The repository's newest archive counts when the journal has none.
        assert_eq!(level(None, 0, read(Some(29 * HOUR))).0, Level::Ok);
        assert_eq!(level(None, 0, read(None)).0, Level::Critical);
    }

    #[test]
    fn ages_parse_with_their_unit() {
        assert_eq!(parse_age("26h"), Ok(Duration::from_secs(26 * 3600)));
        assert_eq!(parse_age("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86400)));
        for bad in ["", "h", "0h", "26", "-1h", "1y", "99999999999999999999w"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
