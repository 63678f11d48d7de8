//! `mailcow-borg backup` end to end, on the real Docker engine: a mailcow-like project with
//! real MariaDB and Redis (tests/common/mailcow.rs), backed up through our helper container over
//! SSH into a repository served by real borg 1.4.5, and judged by real borg: `check
//! --verify-data`, `extract` of every volume compared file by file, the SQL dump loaded into a
//! fresh MariaDB, the Redis dump read by a fresh Redis.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{Ran, World, assert_same_tree};
use common::mailcow::{DB_IMAGE, Mailcow, docker, docker_exec, wait_until};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-mailcow-test";

/// A repository on the test's sshd and a config file that points the backup at it.
struct Setup {
    world: World,
    /// Serves the repository for as long as the test runs.
    _sshd: Sshd,
    dir: tempfile::TempDir,
    repo: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(mailcow: &Mailcow) -> Setup {
        let sshd = Sshd::start();
        let world = World::new(PASSPHRASE);
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        world
            .borg(
                &common::borg14(),
                dir.path(),
                &["init", "-e", "repokey-blake2", repo.to_str().unwrap()],
            )
            .expect(0, "borg init");
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
                common::borg14().display(),
                mailcow.dir.path().display(),
                dir.path().join("state").display(),
            ),
        )
        .unwrap();
        Setup {
            world,
            _sshd: sshd,
            dir,
            repo,
            config,
        }
    }

    /// Our `backup` with the config and `args`, the environment cleared (no passphrase in it).
    fn backup(&self, args: &[&str]) -> Ran {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailcow-borg"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("backup")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(std::process::Stdio::null());
        Ran::from(command.output().unwrap())
    }

    fn borg(&self, args: &[&str]) -> Ran {
        self.world.borg(&common::borg14(), self.dir.path(), args)
    }
}

fn no_helper_left() {
    let left = docker(&["ps", "-aq", "--filter", "label=org.mailcow-borg.helper"]);
    assert!(left.is_empty(), "helper containers left behind: {left}");
}

/// A fresh MariaDB (empty datadir) in a throwaway container.
struct FreshMariadb(String);

impl FreshMariadb {
    fn start() -> FreshMariadb {
        let id = docker(&[
            "run",
            "-d",
            "--tmpfs",
            "/var/lib/mysql",
            "--tmpfs",
            "/run/mysqld",
            DB_IMAGE,
            "sh",
            "-c",
            "chown mysql:mysql /var/lib/mysql /run/mysqld && mariadb-install-db --user=mysql >/dev/null && exec mariadbd --user=mysql",
        ]);
        wait_until("a fresh mariadbd", || {
            docker_exec(&id, &["mariadb-admin", "ping"], b"").0 == 0
        });
        FreshMariadb(id)
    }
}

impl Drop for FreshMariadb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// The value of `key` in a Redis started on the dump.rdb found in `dir`.
fn key_in_dump(dir: &Path, key: &str) -> String {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("dump.rdb"), copy.path().join("dump.rdb")).unwrap();
    let id = docker(&[
        "run",
        "-d",
        "-v",
        &format!("{}:/data", copy.path().display()),
        DB_IMAGE,
        "redis-server",
        "--dir",
        "/data",
        "--save",
        "",
    ]);
    wait_until("a fresh redis", || {
        docker_exec(&id, &["redis-cli", "ping"], b"").1 == b"PONG\n"
    });
    let (_, value, _) = docker_exec(&id, &["redis-cli", "get", key], b"");
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &id])
        .output();
    String::from_utf8_lossy(&value).trim().to_string()
}

#[test]
fn a_backup_of_a_running_mailcow_is_a_borg_archive_of_all_of_it() {
    let mailcow = Mailcow::create(300);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    // Written just before the backup, with Redis' own saves off: only a SAVE puts them on disk.
    mailcow.set_redis_keys(&[("DKIM_PRIV_KEYS", "dkim-private"), ("fresh", "just-before")]);

    let ran = setup.backup(&["--json"]).expect(0, "mailcow-borg backup");
    no_helper_left();
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let name = summary["archive"]["name"].as_str().unwrap().to_string();
    assert!(name.contains("-mailcow-"), "default archive name: {name}");
    assert_eq!(summary["mailcow"]["project"], mailcow.project.as_str());
    assert_eq!(
        summary["mailcow"]["volumes"]["vmail"],
        mailcow.volume("vmail-vol-1").as_str()
    );

    let repo = setup.repo.to_str().unwrap();
    setup
        .borg(&["check", "--verify-data", repo])
        .expect(0, "borg check --verify-data");
    let out = setup.dir.path().join("extracted");
    std::fs::create_dir(&out).unwrap();
    setup
        .world
        .borg(
            &common::borg14(),
            &out,
            &["extract", &format!("{repo}::{name}")],
        )
        .expect(0, "borg extract");

    for (component, volume) in [
        ("vmail", "vmail-vol-1"),
        ("crypt", "crypt-vol-1"),
        ("vmail-index", "vmail-index-vol-1"),
        ("rspamd", "rspamd-vol-1"),
        ("postfix", "postfix-vol-1"),
        ("sogo", "sogo-userdata-backup-vol-1"),
        ("redis", "redis-vol-1"),
    ] {
        assert_same_tree(&mailcow.volume_dir(volume), &out.join(component), component);
    }
    for file in [
        "mailcow.conf",
        "docker-compose.override.yml",
        "data/conf/postfix/extra.cf",
        "data/assets/ssl/key.pem",
    ] {
        assert_eq!(
            std::fs::read(out.join("config").join(file)).unwrap(),
            std::fs::read(mailcow.dir.path().join(file)).unwrap(),
            "config/{file}"
        );
    }

    // The dump: private, and it loads into a fresh server with the same rows.
    let dump = out.join("mysql/mailcow.sql");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dump).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o600);
    let fresh = FreshMariadb::start();
    let (code, _, err) = docker_exec(
        &fresh.0,
        &["mariadb", "-uroot"],
        &std::fs::read(&dump).unwrap(),
    );
    assert_eq!(code, 0, "loading the dump: {err}");
    assert_eq!(
        Mailcow::rows(&fresh.0),
        Mailcow::rows(&mailcow.container("mysql-mailcow"))
    );

    // Redis: the keys written just before the backup are in its dump (SAVE ran).
    assert_eq!(key_in_dump(&out.join("redis"), "fresh"), "just-before");
    assert_eq!(
        key_in_dump(&out.join("redis"), "DKIM_PRIV_KEYS"),
        "dkim-private"
    );
}
