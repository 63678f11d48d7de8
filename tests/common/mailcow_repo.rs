//! A borg repository behind the test's sshd, and a config file that points `backup` and
//! `restore` of a stand-in mailcow at it.

use std::path::{Path, PathBuf};

use super::cli::{Ran, World};
use super::mailcow::{Mailcow, docker, docker_exec};
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

    /// Appends `text` to the config file (a table it opens takes the keys after it).
    pub fn add_to_config(&self, text: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
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

    /// Real borg 1.4.5 in `cwd` against the repository over the sshd, as an admin runs it on
    /// another host (`BORG_RSH` with the test's key and known_hosts).
    pub fn borg_over_ssh(&self, cwd: &Path, args: &[&str]) -> Ran {
        let ssh = self.world.base.path().join("borg-ssh");
        if !ssh.exists() {
            std::fs::write(
                &ssh,
                format!(
                    "#!/bin/sh\nexec ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes \"$@\"\n",
                    self.sshd.path("id_ed25519").display(),
                    self.sshd.known_hosts().display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let mut command = std::process::Command::new(super::borg14());
        command
            .current_dir(cwd)
            .env("BORG_RSH", &ssh)
            .env("BORG_BASE_DIR", self.world.base.path())
            .env("BORG_PASSPHRASE", PASSPHRASE)
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_REMOTE_PATH", super::borg14())
            .args(args);
        Ran::from(command.output().unwrap())
    }

    pub fn borg(&self, args: &[&str]) -> Ran {
        self.world.borg(&super::borg14(), self.dir.path(), args)
    }

    /// An archive `name` that real borg makes of the backup's layout by hand: vmail and crypt
    /// as they are in `mailcow`'s volumes, and its database's dump as `dump` makes it. Returns
    /// the directory it was made of (`vmail/`, `crypt/`, `mysql/mailcow.sql`).
    pub fn borg_made_archive(
        &self,
        mailcow: &Mailcow,
        name: &str,
        dump: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) -> tempfile::TempDir {
        let staging = tempfile::tempdir().unwrap();
        for (volume, dir) in [("vmail-vol-1", "vmail"), ("crypt-vol-1", "crypt")] {
            let to = staging.path().join(dir);
            std::fs::create_dir(&to).unwrap();
            super::mailcow::copy_into(&mailcow.volume_dir(volume), &to);
        }
        let (code, dumped, err) = docker_exec(
            &mailcow.container("mysql-mailcow"),
            &["mariadb-dump", "-uroot", "--databases", "mailcow"],
            b"",
        );
        assert_eq!(code, 0, "{err}");
        std::fs::create_dir(staging.path().join("mysql")).unwrap();
        std::fs::write(staging.path().join("mysql/mailcow.sql"), dump(dumped)).unwrap();
        let location = format!("{}::{name}", self.repo.display());
        self.world
            .borg(
                &super::borg14(),
                staging.path(),
                &["create", &location, "vmail", "crypt", "mysql"],
            )
            .expect(0, "borg create");
        staging
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

/// The volumes a backup holds, by their short names and archive directories.
pub const VOLUMES: [(&str, &str); 7] = [
    ("vmail-vol-1", "vmail"),
    ("crypt-vol-1", "crypt"),
    ("vmail-index-vol-1", "vmail-index"),
    ("redis-vol-1", "redis"),
    ("rspamd-vol-1", "rspamd"),
    ("postfix-vol-1", "postfix"),
    ("sogo-userdata-backup-vol-1", "sogo"),
];

pub const SERVICES: [&str; 7] = [
    "watchdog-mailcow",
    "dovecot-mailcow",
    "postfix-mailcow",
    "rspamd-mailcow",
    "sogo-mailcow",
    "redis-mailcow",
    "mysql-mailcow",
];

/// A backup of a freshly filled mailcow; its archive's name.
pub fn backed_up(mails: u32) -> (Mailcow, Setup, String) {
    let mailcow = Mailcow::create(mails);
    mailcow.start();
    mailcow.fill_database();
    mailcow.set_redis_keys(&[("DKIM_PRIV_KEYS", "dkim-private"), ("other", "value")]);
    let setup = Setup::new(&mailcow);
    let ran = setup.backup(&["--json"]).expect(0, "backup");
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let name = summary["archive"]["name"].as_str().unwrap().to_string();
    (mailcow, setup, name)
}

/// A copy of every volume (cp -a), by archive directory.
pub fn snapshot(mailcow: &Mailcow) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (volume, name) in VOLUMES {
        let copy = dir.path().join(name);
        std::fs::create_dir(&copy).unwrap();
        super::mailcow::copy_into(&mailcow.volume_dir(volume), &copy);
    }
    dir
}

pub fn running(mailcow: &Mailcow, service: &str) -> bool {
    docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &mailcow.container(service),
    ]) == "true"
}

pub fn started_at(mailcow: &Mailcow, service: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &mailcow.container(service),
    ])
}

pub fn all_running(mailcow: &Mailcow) {
    for service in SERVICES {
        if !running(mailcow, service) {
            // Why it stopped is in its last lines of output (dovecot logs to stderr).
            let logs = std::process::Command::new("docker")
                .args(["logs", "--tail", "20", &mailcow.container(service)])
                .output()
                .expect("docker CLI");
            panic!(
                "{service} does not run; its last output:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
    }
}

/// Asserts that `text` holds each of `expected`.
pub fn says(text: &str, expected: &[&str]) {
    for expected in expected {
        assert!(text.contains(expected), "should say {expected:?}:\n{text}");
    }
}

pub fn show(ran: &Ran, what: &str) {
    eprintln!(
        "--- {what}: exit {}\n{}{}",
        ran.code,
        ran.stdout_text(),
        ran.stderr
    );
}

/// A fresh ext4 file system (a loop-mounted image) at a directory, for as long as it lives:
/// on a long-used file system, creating inodes costs more and more, which would blur the
/// comparison (see the extract benchmark in BENCHMARKS.md).
pub struct FreshFs {
    at: PathBuf,
    _image: tempfile::TempDir,
}

impl FreshFs {
    pub fn at(dir: &Path) -> FreshFs {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new(program)
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "{program} {args:?}");
        };
        run(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), image.as_os_str()],
        );
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                dir.as_os_str(),
            ],
        );
        FreshFs {
            at: dir.to_path_buf(),
            _image: image_dir,
        }
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        // Lazily: a restarted container may still hold it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}
