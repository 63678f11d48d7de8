//! `mailcow-borg schedule install|show|remove`: the nightly `backup` as a systemd timer or a
//! cron.d entry (`mailcow::timer_units`). Nothing here runs systemctl: the command says what
//! to run.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::Outcome;
use super::config::{self, ConfigFile};
use super::settings::state_dir;
use crate::mailcow::timer_units::{
    self, Change, DEFAULT_CRON_DIR, DEFAULT_UNIT_DIR, Dirs, Found, Job, Kind, Spread, TIMER_NAME,
    TimeOfDay,
};
use crate::ops::durable::create_private_dir_all;
use crate::ops::placeholders::PlaceholderValues;

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Run `backup` every day: a systemd service and timer (where systemd runs) or an
    /// /etc/cron.d entry.
    Install(InstallArgs),
    /// Show the installed schedule.
    Show(Places),
    /// Remove the schedule that `install` wrote (and nothing else).
    Remove(Places),
}

/// Where the files go; other places than the system's are for tests.
#[derive(Args)]
pub struct Places {
    #[arg(long, value_name = "DIR", default_value = DEFAULT_UNIT_DIR, hide = true)]
    unit_dir: PathBuf,
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CRON_DIR, hide = true)]
    cron_dir: PathBuf,
}

impl Places {
    fn dirs(&self) -> Dirs {
        Dirs {
            unit_dir: self.unit_dir.clone(),
            cron_dir: self.cron_dir.clone(),
        }
    }
}

#[derive(Args)]
pub struct InstallArgs {
    /// The config file the nightly backup runs with.
    #[arg(long, env = "MAILCOW_BORG_CONFIG", value_name = "FILE", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// When the backup starts each day (local time).
    #[arg(long, value_name = "HH:MM", default_value = "03:00")]
    time: String,
    /// Start up to this much later (0, minutes or hours: 30m, 2h): systemd draws a new delay
    /// each day; cron shifts the start by a fixed amount derived from the host name.
    #[arg(long, value_name = "SPAN", default_value = "30m")]
    randomize: String,
    /// Install a systemd service and timer (the default where systemd runs).
    #[arg(long, conflicts_with = "cron")]
    systemd: bool,
    /// Install an /etc/cron.d entry (the default where systemd does not run).
    #[arg(long)]
    cron: bool,
    #[command(flatten)]
    places: Places,
}

pub fn run(command: ScheduleCommand) -> anyhow::Result<Outcome> {
    match command {
        ScheduleCommand::Install(args) => install(args),
        ScheduleCommand::Show(places) => show(&places.dirs()),
        ScheduleCommand::Remove(places) => remove(&places.dirs()),
    }
}

fn install(args: InstallArgs) -> anyhow::Result<Outcome> {
    let time: TimeOfDay = args.time.parse()?;
    let spread: Spread = args.randomize.parse()?;
    // The nightly run needs the file; a missing or broken one is better found now.
    let config_path = std::path::absolute(&args.config)?;
    let file = ConfigFile::load(&config_path, true)?;
    let state_dir = state_dir(None, file.state_dir)?;
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this program's own path: {e}"))?;
    let job = Job::new(&exe, &config_path, &state_dir, time, spread)?;
    let kind = if args.cron {
        Kind::Cron
    } else if args.systemd || Path::new("/run/systemd/system").is_dir() {
        Kind::Systemd
    } else {
        Kind::Cron
    };
    // The service may write only in the state dir, named by ReadWritePaths; systemd skips a
    // missing one, and then it could not be made where the system is read-only.
    create_private_dir_all(&state_dir)
        .map_err(|e| anyhow::anyhow!("cannot make the state dir {}: {e}", state_dir.display()))?;
    let hostname = PlaceholderValues::here(crate::ops::system::now_micros()).hostname;
    let changes = timer_units::install(&job, kind, &args.places.dirs(), &hostname)?;
    let mut out = std::io::stdout().lock();
    let mut changed = false;
    for change in &changes {
        match change {
            Change::Wrote(path) => {
                changed = true;
                writeln!(out, "wrote {}", path.display())?;
            }
            Change::Unchanged(path) => writeln!(out, "unchanged {}", path.display())?,
            Change::Removed(path) => {
                changed = true;
                writeln!(
                    out,
                    "removed {} (replaced by this schedule)",
                    path.display()
                )?;
            }
        }
    }
    match spread.minutes() {
        0 => writeln!(out, "backup runs daily at {time} (local time)")?,
        minutes => writeln!(
            out,
            "backup runs daily at {time} (local time), up to {minutes} min later"
        )?,
    }
    match (kind, changed) {
        (Kind::Systemd, true) => writeln!(
            out,
            "now run: systemctl daemon-reload && systemctl enable --now {TIMER_NAME}"
        )?,
        (Kind::Systemd, false) => writeln!(
            out,
            "nothing changed; if not done yet, run: systemctl enable --now {TIMER_NAME}"
        )?,
        (Kind::Cron, _) => writeln!(
            out,
            "cron reads the entry by itself; the output goes to syslog (tag mailcow-borg)"
        )?,
    }
    Ok(Outcome::Ok)
}

fn show(dirs: &Dirs) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let mut any = false;
    for (path, found) in timer_units::show(dirs)? {
        match found {
            Found::Nothing => {}
            Found::Foreign => {
                any = true;
                writeln!(
                    out,
                    "{}: present, not written by mailcow-borg (left alone)",
                    path.display()
                )?;
            }
            Found::Ours(text) => {
                any = true;
                writeln!(out, "{}:", path.display())?;
                for line in text.lines() {
                    writeln!(out, "    {line}")?;
                }
            }
        }
    }
    if !any {
        writeln!(
            out,
            "no schedule installed (none in {} or {}); see: mailcow-borg schedule install --help",
            dirs.unit_dir.display(),
            dirs.cron_dir.display()
        )?;
    }
    Ok(Outcome::Ok)
}

fn remove(dirs: &Dirs) -> anyhow::Result<Outcome> {
    let removal = timer_units::remove(dirs)?;
    let mut out = std::io::stdout().lock();
    for path in &removal.removed {
        writeln!(out, "removed {}", path.display())?;
    }
    if removal.removed.is_empty() {
        writeln!(out, "nothing to remove: no schedule of ours installed")?;
    } else if removal
        .removed
        .iter()
        .any(|p| p.starts_with(&dirs.unit_dir))
    {
        writeln!(
            out,
            "now run: systemctl stop {TIMER_NAME}; systemctl daemon-reload"
        )?;
    }
    let warnings: Vec<String> = removal
        .foreign
        .iter()
        .map(|path| {
            format!(
                "mailcow-borg: warning: {} was not written by mailcow-borg and is left as it is",
                path.display()
            )
        })
        .collect();
    Ok(Outcome::after_warnings(&warnings))
}
