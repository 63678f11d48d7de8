//! A borg repository behind the test's sshd, and a config file that points `backup` and
//! `restore` of a stand-in mailcow at it.

use std::path::PathBuf;

use super::cli::{Ran, World};
use super::mailcow::{Mailcow, docker};
use super::sshd::Sshd;

pub const PASSPHRASE: &str = "mcb-mailcow-test";

/// A repository on the test's sshd and a config file that points the backup at it.
pub struct Setup {
    pub world: World,
    /// Serves the repository for as long as the test runs.
    pub sshd: Sshd,
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(mailcow: &Mailcow) -> Setup {
        let sshd = Sshd::start();
        let world = World::new(PASSPHRASE);
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        world.borg_init(&super::borg14(), dir.path(), "repokey-blake2", &repo);
        let passphrase = dir.path().join("passphrase");
        std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "repository = \"{}\"\npassphrase_file = \"{}\"\nssh_key = \"{}\"\nknown_hosts = \"{}\"\nremote_path = \"{}\"\nmailcow_dir = \"{}\"\nstate_dir = \"{}\"\n",
                sshd.url(&repo),
                passphrase.display(),
                sshd.path("id_ed25519").display(),
                sshd.known_hosts().display(),
                super::borg14().display(),
                mailcow.dir.path().display(),
                dir.path().join("state").display(),
            ),
        )
        .unwrap();
        Setup {
            world,
            sshd,
            dir,
            repo,
            config,
        }
    }

    /// Our `backup` with `args` (and the config, unless they name another), the environment
    /// cleared (no passphrase in it).
    pub fn backup(&self, args: &[&str]) -> Ran {
        Ran::from(self.backup_command(args).output().unwrap())
    }

    pub fn backup_command(&self, args: &[&str]) -> std::process::Command {
        self.command(&["backup"], args)
    }

    /// Our `restore` with `args`.
    pub fn restore(&self, args: &[&str]) -> Ran {
        Ran::from(self.command(&["restore"], args).output().unwrap())
    }

    /// `config check` with `args`.
    pub fn check(&self, args: &[&str]) -> Ran {
        Ran::from(self.command(&["config", "check"], args).output().unwrap())
    }

    pub fn command(&self, subcommand: &[&str], args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailcow-borg"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(subcommand);
        if !args.contains(&"--config") {
            command.arg("--config").arg(&self.config);
        }
        command.args(args).stdin(std::process::Stdio::null());
        command
    }

    pub fn borg(&self, args: &[&str]) -> Ran {
        self.world.borg(&super::borg14(), self.dir.path(), args)
    }
}

/// No helper container of this mailcow exists, running or stopped.
pub fn no_helper_left(mailcow: &Mailcow) {
    let label = format!("label=org.mailcow-borg.project={}", mailcow.project);
    let left = docker(&["ps", "-aq", "--filter", &label]);
    assert!(left.is_empty(), "helper containers left behind: {left}");
}

/// Seconds `f` takes.
pub fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let started = std::time::Instant::now();
    let value = f();
    (started.elapsed().as_secs_f64(), value)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The mailcow benchmarks' size: mails (`MCB_BENCH_MAILS`, default 2000) and rounds
/// (`MCB_BENCH_ROUNDS`, default 3), as their scripts pass them.
pub fn bench_size() -> (u32, usize) {
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        setting("MCB_BENCH_MAILS", 2000) as u32,
        setting("MCB_BENCH_ROUNDS", 3),
    )
}
