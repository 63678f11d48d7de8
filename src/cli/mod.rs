//! Layer 6, the command line: parses arguments, runs one command, maps the outcome to borg's exit
//! codes (0 success, 1 warning, 2 error) and prints errors as one line on stderr.

/// `eprintln!` that cannot panic: a closed or broken stderr (the admin's SSH session dropped,
/// a log pipe that died) must not end a restore halfway with mailcow's services stopped —
/// `eprintln!` panics when the write fails, and our panics abort. Such a line is lost; the run
/// goes on.
macro_rules! say {
    ($($arg:tt)*) => {{
        $crate::stderr::write(format!("{}\n", format_args!($($arg)*)).as_bytes());
    }};
}

/// `eprint!` that cannot panic (see [`say!`]).
macro_rules! say_part {
    ($($arg:tt)*) => {{
        $crate::stderr::write(format!($($arg)*).as_bytes());
    }};
}

mod access;
mod agent;
mod archive_filter;
mod backup;
mod benchmark;
mod break_lock;
mod check;
mod compact;
mod config;
mod config_check;
mod create;
mod debug;
mod delete;
mod drill;
mod exit;
mod export;
mod extract;
mod human;
mod info;
mod init;
mod key;
mod list;
mod mail_filter;
mod new_passphrase;
mod prune;
mod pyjson;
mod restore;
mod retention;
mod run_log;
mod schedule_cmd;
mod scratch_run;
mod settings;
mod signals;
mod status;
mod tty;

use clap::{Parser, Subcommand};

use crate::mailcow::helper_command::HelperCommand;

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// It reached the end but skipped or noticed something (borg's rc 1); the command has
    /// printed what.
    Warning,
}

impl Outcome {
    /// Prints `warnings`, a line each: the outcome of a run that noticed them.
    fn after_warnings(warnings: &[String]) -> Outcome {
        for warning in warnings {
            say!("{warning}");
        }
        if warnings.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Warning
        }
    }
}

#[derive(Parser)]
#[command(
    name = "mailcow-borg",
    version,
    about = "Backups of a dockerized mailcow into BorgBackup 1.x repositories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Back up this host's mailcow into a new archive, through a helper container.
    Backup(Box<backup::BackupArgs>),
    /// Restore this host's mailcow from an archive that `backup` wrote.
    Restore(Box<restore::RestoreArgs>),
    /// Prove an archive restores into a usable mailcow: restored into scratch volumes and
    /// checked in throwaway containers, never touching the live one.
    Drill(Box<drill::DrillArgs>),
    /// Write one mailbox of an archive, decrypted, as an mbox file or a maildir tree anyone
    /// can open, never touching the live one.
    Export(Box<export::ExportArgs>),
    /// Whether there is a fresh, good backup: for people and for monitoring (Nagios, Icinga).
    Status(Box<status::StatusArgs>),
    /// Check the mailcow backup's config and everything it needs.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Run `backup` every day: install, show or remove a systemd timer or cron entry.
    #[command(subcommand)]
    Schedule(schedule_cmd::ScheduleCommand),
    /// Make a new, empty repository.
    Init(Box<init::InitArgs>),
    /// Back up files and directories into a new archive.
    Create(Box<create::CreateArgs>),
    /// List the archives of a repository, or the contents of an archive.
    List(list::ListArgs),
    /// Show an archive's metadata and statistics (or every archive's).
    Info(info::InfoArgs),
    /// Restore an archive (or parts of it) into the current directory.
    Extract(extract::ExtractArgs),
    /// Delete archives and the data only they hold (space is freed by `compact`).
    Delete(delete::DeleteArgs),
    /// Free the space of deleted archives (the repository server does the work).
    Compact(compact::CompactArgs),
    /// Check the repository and its archives, as `borg check` does (without repairing).
    Check(Box<check::CheckArgs>),
    /// Export, import or re-protect the repository key.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Delete the archives that borg's retention rules (--keep-daily, ...) do not keep.
    Prune(prune::PruneArgs),
    /// Remove the repository's locks (only when no borg or mailcow-borg is using it).
    BreakLock(break_lock::BreakLockArgs),
    /// Low-level tools for checking compatibility with borg.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Measure this machine's speed.
    #[command(subcommand)]
    Benchmark(benchmark::BenchmarkCommand),
    /// Runs inside the helper container.
    #[command(subcommand, hide = true)]
    Agent(HelperCommand),
}

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout (exit 0) and usage errors to stderr (exit 2,
            // like borg's argparse).
            let _ = e.print();
            return if e.use_stderr() {
                exit::EXIT_ERROR
            } else {
                exit::EXIT_OK
            };
        }
    };
    let result = match cli.command {
        // Its exit codes are a monitoring check's.
        Command::Status(args) => return status::run(*args),
        Command::Backup(args) => backup::run(*args),
        Command::Restore(args) => restore::run(*args),
        Command::Drill(args) => drill::run(*args),
        Command::Export(args) => export::run(*args),
        Command::Config(cmd) => config_check::run(cmd),
        Command::Schedule(cmd) => schedule_cmd::run(cmd),
        Command::Init(args) => init::run(*args),
        Command::Create(args) => create::run(*args),
        Command::List(args) => list::run(args),
        Command::Info(args) => info::run(args),
        Command::Extract(args) => extract::run(args),
        Command::Delete(args) => delete::run(args),
        Command::Compact(args) => compact::run(args),
        Command::Check(args) => check::run(*args),
        Command::Key(cmd) => key::run(cmd),
        Command::Prune(args) => prune::run(args),
        Command::BreakLock(args) => break_lock::run(args),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Benchmark(cmd) => benchmark::run(cmd).map(|()| Outcome::Ok),
        Command::Agent(cmd) => agent::run(cmd),
    };
    exit::conclude(result)
}
