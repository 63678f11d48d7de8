//! `mailcow-borg backup` end to end, on the real Docker engine: a mailcow-like project with
//! real MariaDB and Redis (tests/common/mailcow.rs), backed up through our helper container over
//! SSH into a repository served by real borg 1.4.5, and judged by real borg: `check
//! --verify-data`, `extract` of every volume compared file by file, the SQL dump loaded into a
//! fresh MariaDB, the Redis dump read by a fresh Redis.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::cli::{Ran, assert_same_tree, tricky_tree};
use common::mailcow::{
    DB_IMAGE, DELIVERED_PER_MAILBOX, Mailcow, docker, docker_exec, encrypted_mail_files, wait_until,
};
use common::mailcow_repo::{PASSPHRASE, Setup, bench_size, median, no_helper_left, timed};

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
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(300);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    // Written just before the backup, with Redis' own saves off: only a SAVE puts them on disk.
    mailcow.set_redis_keys(&[("DKIM_PRIV_KEYS", "dkim-private"), ("fresh", "just-before")]);

    let checked = setup.check(&[]).expect(0, "config check");
    let report = checked.stdout_text();
    for expected in [
        format!("volume {}", mailcow.volume("vmail-vol-1")),
        "mariadb-dump of database mailcow in".to_string(),
        "(DBUSER and DBROOT log in)".to_string(),
        "mail_crypt keys: present".to_string(),
        "borg 1.4.5 serves it; 0 archives".to_string(),
    ] {
        assert!(
            report.contains(&expected),
            "config check should say {expected:?}:\n{report}"
        );
    }

    let ran = setup.backup(&["--json"]).expect(0, "mailcow-borg backup");
    no_helper_left(&mailcow);
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let name = summary["archive"]["name"].as_str().unwrap().to_string();
    assert!(name.contains("-mailcow-"), "default archive name: {name}");
    assert_eq!(summary["mailcow"]["project"], mailcow.project.as_str());
    assert_eq!(
        summary["mailcow"]["volumes"]["vmail"],
        mailcow.volume("vmail-vol-1").as_str()
    );
    // The run's rates: the archive's files and bytes over its duration.
    let (archive, figures) = (&summary["archive"], &summary["figures"]);
    let duration = archive["duration"].as_f64().unwrap();
    for (rate, total) in [
        ("files_per_second", "nfiles"),
        ("original_bytes_per_second", "original_size"),
    ] {
        let total = archive["stats"][total].as_f64().unwrap();
        let rate = figures[rate].as_f64().unwrap();
        assert!(
            total > 0.0 && (rate * duration - total).abs() <= total * 0.001,
            "{summary}"
        );
    }

    let repo = setup.repo.to_str().unwrap();
    setup
        .borg(&["check", "--verify-data", repo])
        .expect(0, "borg check --verify-data");
    // What a restore needs to know about the source is in the archive's comment.
    let info = setup
        .borg(&["info", "--json", &format!("{repo}::{name}")])
        .expect(0, "borg info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let comment = info["archives"][0]["comment"].as_str().unwrap();
    assert!(
        comment.starts_with(&format!(
            "mailcow-borg backup: project={} arch={} maildir_sub=Maildir db=mailcow components=vmail,crypt,",
            mailcow.project,
            std::env::consts::ARCH
        )),
        "{comment}"
    );
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
        ("sogo", "sogo-userdata-backup-vol-1"),
        ("redis", "redis-vol-1"),
    ] {
        assert_same_tree(&mailcow.volume_dir(volume), &out.join(component), component);
    }
    // The mail dovecot encrypted is archived as it is on disk (the trees are the same):
    // encrypted.
    for user in &mailcow.users {
        assert_eq!(
            encrypted_mail_files(&out.join("vmail"), user).len(),
            DELIVERED_PER_MAILBOX,
            "encrypted mail files of {user} in the archive"
        );
    }
    // Postfix's queue, without its fifo (postfix makes it again when it starts).
    let postfix = mailcow.volume_dir("postfix-vol-1");
    assert!(postfix.join("public/pickup").exists());
    assert!(!out.join("postfix/public/pickup").exists());
    let diff = tricky_tree(&[
        OsStr::new("diff"),
        OsStr::new("--ignore"),
        OsStr::new("public/pickup"),
        postfix.as_os_str(),
        out.join("postfix").as_os_str(),
    ]);
    assert_eq!(diff.code, 0, "postfix: {}", diff.stdout_text());
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

    // A second run, in a new helper: the files cache in the state dir survived the first
    // helper, so the mail is not read again (`U`); --stats and --list reach our stderr.
    let again = setup
        .backup(&["--stats", "--list"])
        .expect(0, "second backup");
    assert!(
        again.stdout.is_empty(),
        "--stats and --list write to stderr only"
    );
    assert!(again.stderr.contains("Archive name: "), "{}", again.stderr);
    let unchanged = again
        .stderr
        .lines()
        .filter(|l| l.starts_with("U vmail/"))
        .count();
    let read_again = again
        .stderr
        .lines()
        .filter(|l| l.starts_with("A vmail/"))
        .count();
    assert!(
        unchanged >= 300 && read_again == 0,
        "{unchanged} mail files unchanged, {read_again} read as new"
    );
    let second = setup.backup(&["--json"]).expect(0, "third backup");
    let summary: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let stats = &summary["archive"]["stats"];
    let (new, all) = (
        stats["deduplicated_size"].as_u64().unwrap(),
        stats["original_size"].as_u64().unwrap(),
    );
    assert!(
        new * 100 < all,
        "a repeated backup stored {new} of {all} bytes again"
    );
    assert_eq!(archives(&setup).len(), 3);
}

/// The archives in the repository.
fn archives(setup: &Setup) -> Vec<String> {
    let listed = setup
        .borg(&["list", "--short", setup.repo.to_str().unwrap()])
        .expect(0, "borg list");
    listed.stdout_text().lines().map(str::to_string).collect()
}

/// Runs a backup that must fail: exit code 2, `expected` in its message, nothing committed,
/// no helper left.
fn fails(setup: &Setup, mailcow: &Mailcow, args: &[&str], expected: &str, what: &str) {
    let ran = setup.backup(args);
    eprintln!("--- {what}:\n{}", ran.stderr);
    assert_eq!(ran.code, 2, "{what}: exit code\n{}", ran.stderr);
    assert!(
        ran.stderr.contains(expected),
        "{what}: the message should say {expected:?}:\n{}",
        ran.stderr
    );
    no_helper_left(mailcow);
    assert!(
        archives(setup).is_empty(),
        "{what}: an archive was committed"
    );
}

#[test]
fn failures_say_what_happened_exit_2_and_commit_nothing() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(20);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    let dir = setup.dir.path();
    let with = |key: &str, value: &str| {
        let text = std::fs::read_to_string(&setup.config).unwrap();
        let changed: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key} =")) {
                    format!("{key} = \"{value}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let path = dir.join(format!("config-{key}.toml"));
        std::fs::write(&path, changed).unwrap();
        path
    };

    // A wrong passphrase.
    let wrong = dir.join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let config = with("passphrase_file", wrong.to_str().unwrap());
    fails(
        &setup,
        &mailcow,
        &["--config", config.to_str().unwrap()],
        "wrong passphrase",
        "wrong passphrase",
    );
    let checked = setup.check(&["--config", config.to_str().unwrap()]);
    assert_eq!(checked.code, 2);
    assert!(
        checked.stderr.contains("wrong passphrase"),
        "{}",
        checked.stderr
    );
    // A config file with a key we do not know.
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "repositry = \"x\"\n").unwrap();
    let checked = setup.check(&["--config", typo.to_str().unwrap()]);
    assert_eq!(checked.code, 2);
    assert!(
        checked.stderr.contains("line 1: unknown field `repositry`"),
        "{}",
        checked.stderr
    );

    // The repository cannot be reached.
    let unreachable = format!("ssh://root@127.0.0.1:1{}", setup.repo.display());
    let config = with("repository", &unreachable);
    fails(
        &setup,
        &mailcow,
        &["--config", config.to_str().unwrap()],
        "127.0.0.1",
        "unreachable repository",
    );

    // The mail_crypt keys are missing, then empty.
    let keys = mailcow.volume_dir("crypt-vol-1");
    let key = keys.join("ecprivkey.pem");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    fails(
        &setup,
        &mailcow,
        &[],
        "ecprivkey.pem is missing",
        "missing crypt key",
    );
    std::fs::write(&key, b"").unwrap();
    fails(
        &setup,
        &mailcow,
        &[],
        "ecprivkey.pem is empty",
        "empty crypt key",
    );
    std::fs::write(&key, &saved).unwrap();

    // The dump fails midway: a view over a table that is gone makes mariadb-dump stop after
    // it has written the tables before it.
    let mysql = mailcow.container("mysql-mailcow");
    let sql = b"CREATE TABLE mailcow.zz (x INT); CREATE VIEW mailcow.zz_view AS SELECT x FROM mailcow.zz; DROP TABLE mailcow.zz;";
    assert_eq!(docker_exec(&mysql, &["mariadb", "-uroot"], sql).0, 0);
    fails(
        &setup,
        &mailcow,
        &[],
        "mariadb-dump exited with 2",
        "failing dump",
    );
    let drop = b"DROP VIEW mailcow.zz_view;";
    assert_eq!(docker_exec(&mysql, &["mariadb", "-uroot"], drop).0, 0);

    // The helper's memory limit is below what any backup needs: the helper says so before it
    // reads anything, rather than being killed by the kernel midway.
    let small = dir.join("config-small-helper.toml");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&small, format!("{text}helper_memory_mib = 6\n")).unwrap();
    fails(
        &setup,
        &mailcow,
        &["--config", small.to_str().unwrap()],
        "MiB it may use: raise helper_memory_mib (or the memory limit it runs under) to at least 64",
        "helper memory too small",
    );

    // Another backup holds the host lock.
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // `-o`: only flock holds the lock (not its child), so killing it releases the lock.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(state.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    fails(
        &setup,
        &mailcow,
        &["--lock-wait", "1"],
        "another mailcow-borg backup or restore is running",
        "second run",
    );
    holder.kill().unwrap();
    holder.wait().unwrap();

    // A wrong Redis password in mailcow.conf.
    let wrong_redis = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(mailcow.dir.path().join("mailcow.conf")).unwrap();
    let conf: String = conf
        .lines()
        .map(|l| {
            if l.starts_with("REDISPASS=") {
                "REDISPASS=wrong\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(wrong_redis.path().join("mailcow.conf"), conf).unwrap();
    let config = with("mailcow_dir", wrong_redis.path().to_str().unwrap());
    fails(
        &setup,
        &mailcow,
        &["--config", config.to_str().unwrap()],
        "redis: redis SAVE in",
        "wrong redis password",
    );

    // mailcow is not running, or not there at all.
    docker(&["stop", "-t", "1", &mailcow.container("mysql-mailcow")]);
    fails(
        &setup,
        &mailcow,
        &[],
        "mysql-mailcow is not running",
        "stopped mysql",
    );
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("mailcow.conf"),
        "COMPOSE_PROJECT_NAME=nosuchproject\nDBNAME=mailcow\nDBUSER=mailcow\nDBPASS=x\n",
    )
    .unwrap();
    let config = with("mailcow_dir", elsewhere.path().to_str().unwrap());
    fails(
        &setup,
        &mailcow,
        &["--config", config.to_str().unwrap()],
        "mailcow not found: no container",
        "no mailcow",
    );

    // What is left still works: without mysql, the rest is backed up; a volume whose
    // container is gone (sogo-mailcow removed) is found by its name.
    docker(&["rm", "-f", &mailcow.container("sogo-mailcow")]);
    let ran = setup.backup(&[
        "--component",
        "vmail",
        "--component",
        "redis",
        "--component",
        "config",
        "--component",
        "sogo",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let names = archives(&setup);
    assert_eq!(names.len(), 1);
    let archive = format!("{}::{}", setup.repo.display(), names[0]);
    let listed = setup
        .borg(&["list", "--short", &archive, "sogo"])
        .expect(0, "borg list");
    assert!(
        listed.stdout_text().contains("sogo/user@example.org"),
        "{}",
        listed.stdout_text()
    );
    setup
        .borg(&["check", setup.repo.to_str().unwrap()])
        .expect(0, "borg check");
}

/// Ctrl-C while the helper runs (here it waits for the repository's lock, which another borg
/// holds): the helper rolls back and is removed, nothing is committed, the exit code is 2.
/// While it ran, `docker inspect` showed no secret.
#[test]
fn sigint_removes_the_helper_and_commits_nothing_and_inspect_shows_no_secret() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(20);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    let repo = setup.repo.to_str().unwrap().to_string();
    let mut holder = std::process::Command::new(common::borg14())
        .args(["with-lock", &repo, "sleep", "120"])
        .env("BORG_BASE_DIR", setup.world.base.path())
        .env("BORG_PASSPHRASE", PASSPHRASE)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let running_helper = || {
        let label = format!("label=org.mailcow-borg.project={}", mailcow.project);
        docker(&["ps", "-q", "--filter", &label])
    };

    // A run killed outright leaves its helper working; the next run does not start a second
    // one beside it, and says what to do.
    let mut killed = setup
        .backup_command(&["--lock-wait", "100"])
        .spawn()
        .unwrap();
    let mut orphan = String::new();
    wait_until("the helper container", || {
        orphan = running_helper();
        !orphan.is_empty()
    });
    killed.kill().unwrap();
    killed.wait().unwrap();
    let second = setup.backup(&[]);
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!(
            "a helper container of an earlier run is still working on this mailcow ({orphan})"
        )),
        "{}",
        second.stderr
    );
    assert_eq!(running_helper(), orphan, "the orphan is left alone");
    docker(&["rm", "-f", &orphan]);

    let child = setup
        .backup_command(&["--lock-wait", "100"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut helper = String::new();
    wait_until("the helper container", || {
        helper = running_helper();
        !helper.is_empty()
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let inspected = docker(&["inspect", &helper]);
    for secret in [
        PASSPHRASE,
        common::mailcow::DB_PASS,
        common::mailcow::REDIS_PASS,
    ] {
        assert!(
            !inspected.contains(secret),
            "docker inspect shows a secret: {inspected}"
        );
    }
    assert!(inspected.contains("/run/secrets/passphrase"), "{inspected}");

    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = std::time::Instant::now();
    let ran = Ran::from(child.wait_with_output().unwrap());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the run ended {:?} after SIGINT",
        started.elapsed()
    );
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    no_helper_left(&mailcow);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let _ = setup.borg(&["break-lock", &repo]);
    assert!(archives(&setup).is_empty());
}

/// Not a test: `scripts/bench-backup.sh` runs it (release build) and it prints figures.
/// What the orchestration costs around the borg work (making the helper image, reusing it, a
/// helper's start and removal), and the whole `backup` against the same work done without
/// Docker orchestration — our `create` and borg's, on the host, over the same volumes, with
/// the same redis SAVE and the dump piped in — all in one run, on the same data.
#[test]
#[ignore]
fn benchmark_backup() {
    require!(Borg14, Sshd, Docker, Root);
    use mailcow_borg::docker::Engine;
    use mailcow_borg::docker::helper::{HelperSpec, StdoutTo};
    use mailcow_borg::docker::image::ensure_helper_image;

    let (mails, rounds) = bench_size();
    let mailcow = Mailcow::create(mails);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);

    // The helper image: made, then reused; a helper's whole life around a trivial command.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let executable = std::fs::read(env!("CARGO_BIN_EXE_mailcow-borg")).unwrap();
    let (make, reuse, helper_life) = runtime.block_on(async {
        let engine = Engine::connect().await.unwrap();
        let version = env!("CARGO_PKG_VERSION");
        let (image, _) = ensure_helper_image(&engine, &executable, version)
            .await
            .unwrap();
        docker(&["rmi", &image]);
        let started = std::time::Instant::now();
        let (_, made) = ensure_helper_image(&engine, &executable, version)
            .await
            .unwrap();
        assert!(made);
        let make = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        ensure_helper_image(&engine, &executable, version)
            .await
            .unwrap();
        let reuse = started.elapsed().as_secs_f64();
        let mut lives = Vec::new();
        for _ in 0..rounds {
            let spec = HelperSpec {
                image: image.clone(),
                args: vec!["--version".into()],
                working_dir: "/".into(),
                mounts: vec![],
                network: "host".into(),
                capabilities: vec![],
                env: vec![],
                labels: vec![],
                limits: Default::default(),
            };
            let started = std::time::Instant::now();
            let mut helper = engine.start_helper(&spec).await.unwrap();
            let output = helper.relay_output(StdoutTo::Capture);
            assert_eq!(helper.wait().await.unwrap(), 0);
            helper.remove().await.unwrap();
            output.await.unwrap().unwrap();
            lives.push(started.elapsed().as_secs_f64());
        }
        (make, reuse, median(lives))
    });

    // The same work without the helper: redis SAVE and the dump by `docker exec`, the dump
    // piped into `create -` of the volumes' directories on this host.
    let volumes: Vec<PathBuf> = [
        "vmail-vol-1",
        "crypt-vol-1",
        "vmail-index-vol-1",
        "redis-vol-1",
        "rspamd-vol-1",
        "postfix-vol-1",
        "sogo-userdata-backup-vol-1",
    ]
    .iter()
    .map(|v| mailcow.volume_dir(v))
    .collect();
    let borg_repo = setup.dir.path().join("borg-repo");
    setup
        .borg(&["init", "-e", "repokey-blake2", borg_repo.to_str().unwrap()])
        .expect(0, "borg init");
    let direct_repo = setup.dir.path().join("direct-repo");
    setup
        .borg(&[
            "init",
            "-e",
            "repokey-blake2",
            direct_repo.to_str().unwrap(),
        ])
        .expect(0, "borg init");
    let sshd = &setup.sshd;
    let direct = |tool: &str, repo: &Path, n: usize| {
        let redis = mailcow.container("redis-mailcow");
        let save = format!(
            "AUTH \"{}\"\nSAVE\n",
            common::mailcow::REDIS_PASS.replace('"', "\\\"")
        );
        assert_eq!(docker_exec(&redis, &["redis-cli"], save.as_bytes()).0, 0);
        let options = format!(
            "[client]\npassword=\"{}\"\n",
            common::mailcow::DB_PASS
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        );
        let mut dump = std::process::Command::new("docker")
            .args([
                "exec",
                "-i",
                &mailcow.container("mysql-mailcow"),
                "mariadb-dump",
                "--defaults-extra-file=/dev/stdin",
                "--user=mailcow",
                "--single-transaction",
                "--default-character-set=utf8mb4",
                "--databases",
                "mailcow",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        dump.stdin
            .take()
            .unwrap()
            .write_all(options.as_bytes())
            .unwrap();
        let url = format!("{}::run{n}", sshd.url(repo));
        let mut command = if tool == "borg" {
            let mut c = std::process::Command::new(common::borg14());
            c.env(
                "BORG_RSH",
                format!(
                    "ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
                    sshd.path("id_ed25519").display(),
                    sshd.known_hosts().display()
                ),
            );
            c
        } else {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mailcow-borg"));
            c.env("MAILCOW_BORG_SSH_KEY", sshd.path("id_ed25519"))
                .env("MAILCOW_BORG_KNOWN_HOSTS", sshd.known_hosts())
                .env(
                    "MAILCOW_BORG_CACHE_DIR",
                    setup.dir.path().join("direct-cache"),
                );
            c
        };
        command
            .env("BORG_BASE_DIR", setup.world.base.path().join(tool))
            .env("BORG_PASSPHRASE", PASSPHRASE)
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_REMOTE_PATH", common::borg14())
            .args(["create", "--stdin-name", "mysql/mailcow.sql", &url])
            .args(&volumes)
            .arg("-")
            .stdin(dump.stdout.take().unwrap())
            .stdout(std::process::Stdio::null());
        let ran = Ran::from(command.output().unwrap());
        assert!(dump.wait().unwrap().success());
        ran.expect(0, &format!("{tool} create"));
    };

    let mut table = Vec::new();
    for (step, runs) in [("first backup", 1), ("nothing changed", rounds)] {
        let (mut ours, mut ours_direct, mut borg) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..runs {
            ours.push(timed(|| setup.backup(&[]).expect(0, "backup")).0);
            let tag = table.len() * 100 + n;
            ours_direct.push(timed(|| direct("ours", &direct_repo, tag)).0);
            borg.push(timed(|| direct("borg", &borg_repo, tag)).0);
        }
        table.push((step, median(ours), median(ours_direct), median(borg)));
    }

    println!("\n### {mails} mails, {rounds} rounds (median)\n");
    println!("| orchestration | seconds |\n|---|---:|");
    println!("| helper image made from the executable | {make:.2} |");
    println!("| helper image reused | {reuse:.3} |");
    println!("| helper container created, started, waited for, removed | {helper_life:.2} |");
    println!(
        "\n| step | backup s | same work, our create on the host s | borg create on the host s | backup − create | **backup / borg** |\n|---|---:|---:|---:|---:|---:|"
    );
    for (step, ours, direct, borg) in table {
        println!(
            "| {step} | {ours:.2} | {direct:.2} | {borg:.2} | {:.2} | **{:.2}** |",
            ours - direct,
            ours / borg
        );
    }
}

/// `[retention]`: after each good archive the backup prunes the archives of its own name (and
/// their checkpoints), never another archive — not even one of another host's same pattern —
/// and compacts; `--json` and `--stats` say what went; borg 1.4.5 checks the result.
#[test]
fn retention_prunes_only_the_backups_own_archives() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(5);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    let repo = setup.repo.to_str().unwrap().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim().split('.').next().unwrap().to_string();
    let other_host = "otherhost-mailcow-2020-01-01T00:00:00".to_string();
    let by_hand = "by-hand".to_string();
    let checkpoint = format!("{host}-mailcow-2019-01-01T00:00:00.checkpoint");
    let source = setup.dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("file"), "not mailcow\n").unwrap();
    for name in [&other_host, &by_hand, &checkpoint] {
        setup
            .world
            .borg(
                &common::borg14(),
                &source,
                &[
                    "create",
                    "--timestamp",
                    "2019-06-01T00:00:00",
                    &format!("{repo}::{name}"),
                    ".",
                ],
            )
            .expect(0, "borg create");
    }
    setup.add_to_config("\n[retention]\nkeep_last = 2\n");
    let checked = setup.check(&[]).expect(0, "config check");
    let line = format!(
        "retention: after each backup, prune the archives matching {host}-mailcow-* (keep_last = 2); compact = always"
    );
    assert!(
        checked.stdout_text().contains(&line),
        "{}",
        checked.stdout_text()
    );

    let run = |expect_pruned: &[&String]| -> (String, serde_json::Value) {
        let ran = setup.backup(&["--json"]).expect(0, "backup with retention");
        let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
        let name = summary["archive"]["name"].as_str().unwrap().to_string();
        let pruned: Vec<&str> = summary["prune"]["pruned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let expected: Vec<&str> = expect_pruned.iter().map(|n| n.as_str()).collect();
        assert_eq!(pruned, expected, "{summary:#}");
        assert_eq!(summary["prune"]["glob"], format!("{host}-mailcow-*"));
        assert_eq!(summary["compact"]["ran"], true, "{summary:#}");
        assert_eq!(summary["compact"]["append_only"], false);
        assert_eq!(summary["mailcow"]["project"], mailcow.project.as_str());
        (name, summary)
    };
    // The checkpoint of the backup's name goes at once (a complete archive is newer).
    let (first, summary) = run(&[&checkpoint]);
    assert_eq!(summary["prune"]["kept"], serde_json::json!([first]));
    let (second, _) = run(&[]);
    let (third, summary) = run(&[&first]);
    assert_eq!(summary["prune"]["kept"], serde_json::json!([third, second]));
    assert!(
        summary["prune"]["deleted"]["original_size"]
            .as_u64()
            .unwrap()
            > 0
    );

    let ran = setup
        .backup(&["--stats"])
        .expect(0, "backup --stats with retention");
    assert!(ran.stderr.contains("Archive name: "), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "Retention of the archives matching {host}-mailcow-*: keeping 2, pruning 1."
        )),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("Pruned archive: {second}")),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("Deleted data:"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Compacted the repository."),
        "{}",
        ran.stderr
    );

    // The two of this backup's name that keep_last = 2 keeps, and the two of other names.
    let left = archives(&setup);
    assert_eq!(left.len(), 4, "{left:?}");
    for name in [&other_host, &by_hand, &third] {
        assert!(left.contains(name), "{name} should be left: {left:?}");
    }
    setup.borg(&["check", &repo]).expect(0, "borg check");
    no_helper_left(&mailcow);

    // A prune that fails after a good archive: the hand-made archive's metadata is gone, so
    // counting references fails. Exit 2, the archive is there, and the message says so.
    let listed = setup
        .borg(&["list", "--json", &repo])
        .expect(0, "borg list --json");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == by_hand.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    setup
        .borg(&["debug", "delete-obj", &repo, &id])
        .expect(0, "borg debug delete-obj");
    let ran = setup.backup(&["--json"]);
    eprintln!("--- a failed prune:\n{}", ran.stderr);
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let fifth = summary["archive"]["name"].as_str().unwrap().to_string();
    assert!(
        ran.stderr.contains(&format!(
            "the archive {fifth} was written and is safe; pruning after it failed: "
        )),
        "{}",
        ran.stderr
    );
    assert!(archives(&setup).contains(&fifth));
    no_helper_left(&mailcow);
}
