//! The nightly `backup` run, installed by `schedule install` as a systemd service and timer or
//! as an `/etc/cron.d` entry (not to be confused with `schedule.rs`, which says how often the
//! checks ride on that nightly run).
//!
//! Every file written here starts with [`MARKER`]: it is how `install` knows a file is its own
//! to replace (and refuses one that is not), and how `remove` knows what it may delete. The
//! texts depend only on the inputs, so installing twice writes byte-identical files and
//! reports no change; for cron that rules out a random offset drawn at install time, so the
//! start is shifted by a fixed number of minutes derived from the host name instead.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::ErrorKind;
use crate::ops::durable::write_public_durably;

/// The first line of every file we write.
pub const MARKER: &str =
    "# written by mailcow-borg schedule install; remove it with: mailcow-borg schedule remove";
pub const SERVICE_NAME: &str = "mailcow-borg.service";
pub const TIMER_NAME: &str = "mailcow-borg.timer";
/// cron.d entries: run-parts' naming rules, so no dot.
pub const CRON_NAME: &str = "mailcow-borg";
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
pub const DEFAULT_CRON_DIR: &str = "/etc/cron.d";
/// Where `systemctl enable` links the timer.
const WANTS_DIR: &str = "timers.target.wants";
/// Ours are well below this; a bigger file at our name is not ours and is not read further.
const MAX_FILE: u64 = 64 * 1024;
/// cron starts its jobs with a minimal PATH; `logger` and what `backup` might look for are on
/// this one.
const CRON_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MINUTES_PER_DAY: u32 = 24 * 60;

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("--time {0:?}: give HH:MM with hours 00-23 and minutes 00-59, e.g. 03:15")]
    Time(String),
    #[error("--randomize {0:?}: give 0, minutes or hours below a day, e.g. 30m or 2h")]
    Randomize(String),
    #[error(
        "{what} {path:?} holds characters a unit or cron line cannot carry as they are (only \
         letters, digits and / . _ - + : @ , are); use a path without them"
    )]
    UnsafePath { what: &'static str, path: PathBuf },
    #[error(
        "{0} exists and was not written by mailcow-borg schedule install; move it away, then \
         run this again"
    )]
    Foreign(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl TimerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TimerError::Time(_) | TimerError::Randomize(_) | TimerError::UnsafePath { .. } => {
                ErrorKind::BadInput
            }
            TimerError::Foreign(_) | TimerError::Io { .. } => ErrorKind::Environment,
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TimerError {
    let path = path.to_path_buf();
    move |source| TimerError::Io {
        action,
        path,
        source,
    }
}

/// When the run starts each day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeOfDay {
    hour: u32,
    minute: u32,
}

impl TimeOfDay {
    fn minutes(self) -> u32 {
        self.hour * 60 + self.minute
    }

    fn from_minutes(minutes: u32) -> TimeOfDay {
        let minutes = minutes % MINUTES_PER_DAY;
        TimeOfDay {
            hour: minutes / 60,
            minute: minutes % 60,
        }
    }
}

impl FromStr for TimeOfDay {
    type Err = TimerError;

    fn from_str(text: &str) -> Result<TimeOfDay, TimerError> {
        let bad = || TimerError::Time(text.to_string());
        let (hour, minute) = text.split_once(':').ok_or_else(bad)?;
        let two_digits = |part: &str| {
            (part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u32>().ok())
                .flatten()
        };
        match (two_digits(hour), two_digits(minute)) {
            (Some(hour), Some(minute)) if hour < 24 && minute < 60 => {
                Ok(TimeOfDay { hour, minute })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// How far past the time a run may start (`--randomize`), in whole minutes, below a day: so
/// that many hosts backing up to one repository host do not all start at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    minutes: u32,
}

impl Spread {
    pub fn minutes(self) -> u32 {
        self.minutes
    }
}

impl FromStr for Spread {
    type Err = TimerError;

    fn from_str(text: &str) -> Result<Spread, TimerError> {
        let bad = || TimerError::Randomize(text.to_string());
        if text == "0" {
            return Ok(Spread { minutes: 0 });
        }
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        if number.is_empty() || number.len() > 4 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let amount: u32 = number.parse().map_err(|_| bad())?;
        let minutes = match unit {
            "m" => amount,
            "h" => amount * 60,
            _ => return Err(bad()),
        };
        if minutes >= MINUTES_PER_DAY {
            return Err(bad());
        }
        Ok(Spread { minutes })
    }
}

/// What the schedule runs and when.
#[derive(Clone, Debug)]
pub struct Job {
    exe: String,
    config: String,
    state_dir: String,
    time: TimeOfDay,
    spread: Spread,
}

/// `path` as it can stand in a unit's `ExecStart=` and a cron line unquoted: systemd reads `%`
/// as a specifier and splits at spaces, cron reads `%` as a newline and hands the rest to `sh`.
/// Rather than quote for both, such paths are refused; installed binaries and config files do
/// not need them.
fn plain_path(what: &'static str, path: &Path) -> Result<String, TimerError> {
    let unsafe_path = || TimerError::UnsafePath {
        what,
        path: path.to_path_buf(),
    };
    let text = path.to_str().ok_or_else(unsafe_path)?;
    let plain = text.starts_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,".contains(&b));
    if plain {
        Ok(text.to_string())
    } else {
        Err(unsafe_path())
    }
}

impl Job {
    /// `backup --config config` of the binary `exe`, whose state lives in `state_dir`; the
    /// paths absolute.
    pub fn new(
        exe: &Path,
        config: &Path,
        state_dir: &Path,
        time: TimeOfDay,
        spread: Spread,
    ) -> Result<Job, TimerError> {
        Ok(Job {
            exe: plain_path("the executable", exe)?,
            config: plain_path("the config file", config)?,
            state_dir: plain_path("the state dir", state_dir)?,
            time,
            spread,
        })
    }

    fn command(&self) -> String {
        format!("{} backup --config {}", self.exe, self.config)
    }

    /// The service: the run at low CPU and I/O priority, with the system read-only around it
    /// except the state dir. `/run` (the Docker socket) stays writable under
    /// `ProtectSystem=full`; the mailcow dir and the config only need reading. Nothing of the
    /// run is shared with Docker through /tmp, so it can be private.
    pub fn service_text(&self) -> String {
        format!(
            "{MARKER}
[Unit]
Description=mailcow-borg: back up this mailcow
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
ExecStart={command}
Nice=10
IOSchedulingClass=idle
CPUSchedulingPolicy=batch
# On a stop, backup removes its helper container and says what was committed.
TimeoutStopSec=5min
ProtectSystem=full
ProtectHome=read-only
ReadWritePaths=-{state_dir}
PrivateTmp=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
",
            command = self.command(),
            state_dir = self.state_dir,
        )
    }

    /// The timer: daily at the time, up to the spread later, and at boot when the machine was
    /// off at the time (`Persistent`).
    pub fn timer_text(&self) -> String {
        format!(
            "{MARKER}
[Unit]
Description=mailcow-borg: daily backup of this mailcow

[Timer]
OnCalendar=*-*-* {time}:00
Persistent=true
RandomizedDelaySec={spread}min

[Install]
WantedBy=timers.target
",
            time = self.time,
            spread = self.spread.minutes,
        )
    }

    /// The cron.d entry, started at the time shifted by a fixed share of the spread that
    /// depends on `hostname`; the output goes to syslog.
    pub fn cron_text(&self, hostname: &str) -> String {
        let offset = if self.spread.minutes == 0 {
            0
        } else {
            let digest = Sha256::digest(hostname.as_bytes());
            let first: [u8; 4] = digest[..4].try_into().expect("a SHA-256 has 32 bytes");
            u32::from_be_bytes(first) % self.spread.minutes
        };
        let start = TimeOfDay::from_minutes(self.time.minutes() + offset);
        format!(
            "{MARKER}
# Daily at {time} plus {offset} min (of --randomize {spread}m: fixed for this host name).
PATH={CRON_PATH}
{minute} {hour} * * * root {command} 2>&1 | logger -t mailcow-borg
",
            time = self.time,
            spread = self.spread.minutes,
            minute = start.minute,
            hour = start.hour,
            command = self.command(),
        )
    }
}

/// Where the files go.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub unit_dir: PathBuf,
    pub cron_dir: PathBuf,
}

impl Dirs {
    fn unit_paths(&self) -> [PathBuf; 2] {
        [
            self.unit_dir.join(SERVICE_NAME),
            self.unit_dir.join(TIMER_NAME),
        ]
    }

    fn cron_path(&self) -> PathBuf {
        self.cron_dir.join(CRON_NAME)
    }

    fn all_paths(&self) -> [PathBuf; 3] {
        let [service, timer] = self.unit_paths();
        [service, timer, self.cron_path()]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Systemd,
    Cron,
}

/// What is at one of our paths.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Ours(String),
    /// A file (or something else) that we did not write.
    Foreign,
}

/// What is at `path`. Only a regular file, small, in UTF-8 and starting with our marker is
/// ours; a symlink is not, since replacing it would not change what it points to.
pub fn look(path: &Path) -> Result<Found, TimerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(io_error("look at", path)(e)),
    };
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Ok(Found::Foreign);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(io_error("read", path))?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) if text.lines().next() == Some(MARKER) => Found::Ours(text),
        _ => Found::Foreign,
    })
}

/// What `install` or `remove` did to one path.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Wrote(PathBuf),
    Unchanged(PathBuf),
    Removed(PathBuf),
}

/// Writes the files of `kind` for `job` and removes our files of the other kind, so one
/// schedule runs. Nothing is written when a file at one of the paths is not ours.
pub fn install(
    job: &Job,
    kind: Kind,
    dirs: &Dirs,
    hostname: &str,
) -> Result<Vec<Change>, TimerError> {
    let [service, timer] = dirs.unit_paths();
    let (files, others) = match kind {
        Kind::Systemd => (
            vec![(service, job.service_text()), (timer, job.timer_text())],
            vec![dirs.cron_path()],
        ),
        Kind::Cron => (
            vec![(dirs.cron_path(), job.cron_text(hostname))],
            dirs.unit_paths().to_vec(),
        ),
    };
    let mut found = Vec::with_capacity(files.len());
    for (path, _) in &files {
        match look(path)? {
            Found::Foreign => return Err(TimerError::Foreign(path.clone())),
            other => found.push(other),
        }
    }
    let mut changes = Vec::new();
    for ((path, text), found) in files.into_iter().zip(found) {
        if found == Found::Ours(text.clone()) {
            changes.push(Change::Unchanged(path));
        } else {
            write_public_durably(&path, text.as_bytes()).map_err(io_error("write", &path))?;
            changes.push(Change::Wrote(path));
        }
    }
    for path in others {
        if remove_if_ours(&path)? {
            changes.push(Change::Removed(path));
        }
    }
    Ok(changes)
}

fn remove_if_ours(path: &Path) -> Result<bool, TimerError> {
    if !matches!(look(path)?, Found::Ours(_)) {
        return Ok(false);
    }
    std::fs::remove_file(path).map_err(io_error("remove", path))?;
    Ok(true)
}

/// What `remove` did: the paths it removed, and those at our names that are not ours (left).
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<PathBuf>,
    pub foreign: Vec<PathBuf>,
}

/// Removes our files, and the link `systemctl enable` made to our timer (what `systemctl
/// disable` would remove) so no dangling link is left.
pub fn remove(dirs: &Dirs) -> Result<Removal, TimerError> {
    let mut removal = Removal::default();
    let timer = dirs.unit_dir.join(TIMER_NAME);
    let timer_is_ours = matches!(look(&timer)?, Found::Ours(_));
    for path in dirs.all_paths() {
        match look(&path)? {
            Found::Nothing => {}
            Found::Foreign => removal.foreign.push(path),
            Found::Ours(_) => {
                std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
                removal.removed.push(path);
            }
        }
    }
    let link = dirs.unit_dir.join(WANTS_DIR).join(TIMER_NAME);
    let points_to_ours = std::fs::read_link(&link)
        .is_ok_and(|target| target == timer || target.file_name() == Some(TIMER_NAME.as_ref()));
    if timer_is_ours && points_to_ours {
        std::fs::remove_file(&link).map_err(io_error("remove", &link))?;
        removal.removed.push(link);
    }
    Ok(removal)
}

/// What is at each of our paths.
pub fn show(dirs: &Dirs) -> Result<Vec<(PathBuf, Found)>, TimerError> {
    dirs.all_paths()
        .into_iter()
        .map(|path| look(&path).map(|found| (path, found)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(time: &str, spread: &str) -> Job {
        Job::new(
            Path::new("/usr/local/bin/mailcow-borg"),
            Path::new("/etc/mailcow-borg/config.toml"),
            Path::new("/var/lib/mailcow-borg"),
            time.parse().unwrap(),
            spread.parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn times_are_hh_mm_within_a_day() {
        assert_eq!("03:15".parse::<TimeOfDay>().unwrap().to_string(), "03:15");
        assert_eq!("00:00".parse::<TimeOfDay>().unwrap().minutes(), 0);
        assert_eq!("23:59".parse::<TimeOfDay>().unwrap().minutes(), 1439);
        for bad in [
            "24:00", "12:60", "3:15", "03:5", "0315", "", "03:15:00", "+3:15", "a3:15",
        ] {
            let err = bad.parse::<TimeOfDay>().unwrap_err();
            assert!(matches!(err, TimerError::Time(_)), "{bad}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn spreads_are_minutes_or_hours_below_a_day() {
        let minutes = |text: &str| text.parse::<Spread>().map(|s| s.minutes);
        assert_eq!(minutes("0").unwrap(), 0);
        assert_eq!(minutes("30m").unwrap(), 30);
        assert_eq!(minutes("2h").unwrap(), 120);
        assert_eq!(minutes("1439m").unwrap(), 1439);
        for bad in [
            "", "m", "30", "30s", "24h", "1440m", "-5m", "1.5h", "99999h", "0m0",
        ] {
            assert!(
                matches!(minutes(bad), Err(TimerError::Randomize(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_a_unit_or_cron_line_would_misread_are_refused() {
        let make = |exe: &str| {
            Job::new(
                Path::new(exe),
                Path::new("/etc/mailcow-borg/config.toml"),
                Path::new("/var/lib/mailcow-borg"),
                "03:00".parse().unwrap(),
                "0".parse().unwrap(),
            )
        };
        assert!(make("/opt/mailcow-borg_1.2+x/bin/mailcow-borg").is_ok());
        for bad in [
            "/opt/my dir/mailcow-borg",
            "/opt/100%/x",
            "relative/x",
            "/a;b",
            "/a\nb",
        ] {
            assert!(
                matches!(make(bad), Err(TimerError::UnsafePath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_units_run_backup_daily_at_low_priority() {
        let job = job("03:15", "30m");
        let service = job.service_text();
        assert!(service.starts_with(&format!("{MARKER}\n")));
        assert!(service.contains(
            "\nExecStart=/usr/local/bin/mailcow-borg backup --config /etc/mailcow-borg/config.toml\n"
        ));
        for line in [
            "Type=oneshot",
            "Nice=10",
            "IOSchedulingClass=idle",
            "CPUSchedulingPolicy=batch",
            "ReadWritePaths=-/var/lib/mailcow-borg",
            "ProtectSystem=full",
        ] {
            assert!(service.lines().any(|l| l == line), "{line}");
        }
        let timer = job.timer_text();
        assert!(timer.starts_with(&format!("{MARKER}\n")));
        for line in [
            "OnCalendar=*-*-* 03:15:00",
            "Persistent=true",
            "RandomizedDelaySec=30min",
            "WantedBy=timers.target",
        ] {
            assert!(timer.lines().any(|l| l == line), "{line}");
        }
    }

    #[test]
    fn the_cron_start_is_shifted_within_the_spread_by_the_host_name() {
        let cron_line = |text: &str| {
            text.lines()
                .find(|l| l.ends_with("| logger -t mailcow-borg"))
                .unwrap()
                .to_string()
        };
        assert_eq!(
            cron_line(&job("03:15", "0").cron_text("mx1")),
            "15 3 * * * root /usr/local/bin/mailcow-borg backup --config \
             /etc/mailcow-borg/config.toml 2>&1 | logger -t mailcow-borg"
        );
        let spread = job("23:50", "30m");
        let mut starts = std::collections::BTreeSet::new();
        for host in ["mx1", "mx2", "mail.example.org", "a", "b", "c", "d", "e"] {
            let text = spread.cron_text(host);
            assert_eq!(text, spread.cron_text(host), "the same every time");
            let line = cron_line(&text);
            let fields: Vec<&str> = line.split(' ').collect();
            let minute: u32 = fields[0].parse().unwrap();
            let hour: u32 = fields[1].parse().unwrap();
            let start = hour * 60 + minute;
            // 23:50 up to 30 minutes later, across midnight.
            let late = (start + MINUTES_PER_DAY - (23 * 60 + 50)) % MINUTES_PER_DAY;
            assert!(late < 30, "{line}");
            starts.insert(start);
        }
        assert!(starts.len() > 1, "host names spread the start: {starts:?}");
    }

    #[test]
    fn only_a_small_regular_file_starting_with_the_marker_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(look(&path).unwrap(), Found::Nothing);
        std::fs::write(&path, format!("{MARKER}\nx\n")).unwrap();
        assert_eq!(look(&path).unwrap(), Found::Ours(format!("{MARKER}\nx\n")));
        std::fs::write(&path, format!("# mine\n{MARKER}\n")).unwrap();
        assert_eq!(look(&path).unwrap(), Found::Foreign);
        let mut big = format!("{MARKER}\n");
        big.push_str(&"#".repeat(MAX_FILE as usize));
        std::fs::write(&path, big).unwrap();
        assert_eq!(look(&path).unwrap(), Found::Foreign);
        let link = dir.path().join("link");
        std::fs::write(&path, format!("{MARKER}\n")).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(look(&link).unwrap(), Found::Foreign);
    }
}
