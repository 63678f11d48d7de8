//! `mailcow-borg restore` end to end, in the same Docker world as the backup tests: a
//! mailcow-like project with real MariaDB and Redis, a repository served by real borg 1.4.5
//! over SSH. Each volume is compared with what real borg extracts of the archive, the database
//! by its rows, Redis by its keys; the services by whether they run again.

use crate::common;

use std::path::{Path, PathBuf};

use common::cli::{Ran, assert_same_tree, tricky_tree};
use common::mailcow::{MailboxMail, Mailcow, docker, docker_exec};
use common::mailcow_repo::{
    FreshFs, Setup, VOLUMES, all_running, backed_up, bench_size, median, no_helper_left, running,
    says, show, snapshot, started_at, timed,
};

/// What real borg extracts of the archive.
fn extracted(setup: &Setup, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let location = format!("{}::{name}", setup.repo.display());
    setup
        .world
        .borg(&common::borg14(), dir.path(), &["extract", &location])
        .expect(0, "borg extract");
    dir
}

fn doveadm_calls(mailcow: &Mailcow) -> String {
    let (_, out, _) = docker_exec(
        &mailcow.container("dovecot-mailcow"),
        &["cat", "/doveadm.log"],
        b"",
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn redis_get(mailcow: &Mailcow, key: &str) -> String {
    let script = format!(
        "AUTH \"{}\"\nGET {key}\n",
        common::mailcow::REDIS_PASS.replace('"', "\\\"")
    );
    let (_, out, _) = docker_exec(
        &mailcow.container("redis-mailcow"),
        &["redis-cli"],
        script.as_bytes(),
    );
    String::from_utf8_lossy(&out)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn sql(mailcow: &Mailcow, statement: &str) {
    let (code, _, err) = docker_exec(
        &mailcow.container("mysql-mailcow"),
        &["mariadb", "-uroot"],
        statement.as_bytes(),
    );
    assert_eq!(code, 0, "{statement}: {err}");
}

/// Removes everything in a directory, keeping it.
fn empty_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// What dovecot writes of its own in vmail and its index once a restore has run
/// `doveadm force-resync` and `quota recalc`: it takes locks in every folder (the directories'
/// mtimes change), rewrites each folder's UID list and appends to its index transaction logs.
/// Everything else — every mail file's bytes, every owner and mode, every name — must be as
/// archived (and the mail must read back: [`same_mail`]).
const DOVECOT_WRITES: [&str; 6] = [
    "--no-dir-mtime",
    "*",
    "--ignore",
    "*dovecot-uidlist",
    "--ignore",
    "*dovecot*.log",
];

/// [`assert_same_tree`] of a restored vmail (or part of it) or vmail index, but for
/// [`DOVECOT_WRITES`].
fn assert_same_mail_tree(expected: &Path, actual: &Path, what: &str) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["diff".as_ref()];
    args.extend(DOVECOT_WRITES.iter().map(|a| std::ffi::OsStr::new(*a)));
    args.extend([expected.as_os_str(), actual.as_os_str()]);
    let diff = tricky_tree(&args);
    assert_eq!(
        diff.code,
        0,
        "{what}: the trees differ\n{}{}",
        diff.stdout_text(),
        diff.stderr
    );
}

/// Asserts that every mailbox reads back through dovecot as it did before (`before`, from
/// [`Mailcow::read_every_mailbox`]), without printing the mail.
fn same_mail(before: &[MailboxMail], after: &[MailboxMail], what: &str) {
    assert_eq!(before.len(), after.len(), "{what}: mailboxes");
    for ((user, mails), (user_after, mails_after)) in before.iter().zip(after) {
        assert_eq!(user, user_after, "{what}");
        assert_eq!(mails.len(), mails_after.len(), "{what}: mails of {user}");
        for (i, (mail, mail_after)) in mails.iter().zip(mails_after).enumerate() {
            assert!(
                mail == mail_after,
                "{what}: mail {i} of {user} (in {}) reads back differently",
                mail.0
            );
        }
    }
}

#[test]
fn a_full_restore_brings_back_destroyed_volumes_the_database_and_redis() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, name) = backed_up(300);
    let rows = Mailcow::rows(&mailcow.container("mysql-mailcow"));
    let schema = Mailcow::schema(&mailcow.container("mysql-mailcow"));
    let archive = extracted(&setup, &name);
    let mail = mailcow.read_every_mailbox();

    // Destroy: every volume emptied (a stray file left in vmail), the database dropped, Redis
    // flushed.
    for (volume, _) in VOLUMES {
        empty_dir(&mailcow.volume_dir(volume));
    }
    std::fs::write(
        mailcow.volume_dir("vmail-vol-1").join("stray"),
        "not in the archive",
    )
    .unwrap();
    sql(&mailcow, "DROP DATABASE mailcow;");
    let script = format!(
        "AUTH \"{}\"\nFLUSHALL\n",
        common::mailcow::REDIS_PASS.replace('"', "\\\"")
    );
    docker_exec(
        &mailcow.container("redis-mailcow"),
        &["redis-cli"],
        script.as_bytes(),
    );
    let destroyed = snapshot(&mailcow);

    // A dry run shows the plan and changes nothing.
    let dry = setup.restore(&["--dry-run"]);
    show(&dry, "dry run");
    assert_eq!(dry.code, 0);
    let plan = dry.stdout_text();
    says(
        &plan,
        &[
            &format!("Restore plan: archive {name}"),
            &format!("stop        {}", mailcow.container("watchdog-mailcow")),
            &format!(
                "volume {}: made equal to the archive",
                mailcow.volume("vmail-vol-1")
            ),
            "database mailcow in",
            "doveadm force-resync -A '*'",
            "the live configuration is not touched",
        ],
    );
    let after_dry_run = snapshot(&mailcow);
    assert_same_tree(
        destroyed.path(),
        after_dry_run.path(),
        "volumes after --dry-run",
    );
    all_running(&mailcow);

    // Without a terminal to ask on, --yes is needed.
    let refused = setup.restore(&[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let after_refusal = snapshot(&mailcow);
    assert_same_tree(
        destroyed.path(),
        after_refusal.path(),
        "volumes after a refusal",
    );

    let ran = setup.restore(&["latest", "--yes"]);
    show(&ran, "restore");
    assert_eq!(ran.code, 0);
    no_helper_left(&mailcow);
    for (volume, dir) in VOLUMES {
        let compare = match volume {
            "vmail-vol-1" | "vmail-index-vol-1" => assert_same_mail_tree,
            _ => assert_same_tree,
        };
        compare(
            &archive.path().join(dir),
            &mailcow.volume_dir(volume),
            volume,
        );
    }
    all_running(&mailcow);
    // The proof that the mail is there again: dovecot reads (decrypts) every mail as before.
    same_mail(
        &mail,
        &mailcow.read_every_mailbox(),
        "after the full restore",
    );
    assert_eq!(Mailcow::rows(&mailcow.container("mysql-mailcow")), rows);
    // Views (one built on the other), trigger, event, function and foreign key came back too,
    // and the staged restore left no database of its own behind.
    assert_eq!(Mailcow::schema(&mailcow.container("mysql-mailcow")), schema);
    assert_eq!(redis_get(&mailcow, "DKIM_PRIV_KEYS"), "dkim-private");
    assert_eq!(redis_get(&mailcow, "other"), "value");
    let calls = doveadm_calls(&mailcow);
    assert!(
        calls.contains("batch -A : force-resync * : quota recalc"),
        "doveadm calls: {calls}"
    );
    // The configuration went beside, not over, the live one.
    let restored_conf = setup
        .dir
        .path()
        .join("state/restored-config")
        .join(&name)
        .join("mailcow.conf");
    assert_eq!(
        std::fs::read(&restored_conf).unwrap(),
        std::fs::read(mailcow.dir.path().join("mailcow.conf")).unwrap()
    );
    assert_same_tree(
        &archive.path().join("config/data"),
        &restored_conf.parent().unwrap().join("data"),
        "restored config",
    );
}

#[test]
fn a_mailbox_restore_changes_only_that_mailbox() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, name) = backed_up(200);
    let archive = extracted(&setup, &name);
    let vmail = mailcow.volume_dir("vmail-vol-1");
    let mut mailboxes: Vec<PathBuf> = Vec::new();
    for domain in std::fs::read_dir(&vmail).unwrap() {
        for user in std::fs::read_dir(domain.unwrap().path()).unwrap() {
            mailboxes.push(user.unwrap().path());
        }
    }
    mailboxes.sort();
    assert!(
        mailboxes.len() >= 2,
        "the maildir has {} mailboxes",
        mailboxes.len()
    );
    let (target, other) = (&mailboxes[0], &mailboxes[1]);
    let relative = target.strip_prefix(&vmail).unwrap();
    let domain = relative.parent().unwrap().to_str().unwrap();
    let user = relative.file_name().unwrap().to_str().unwrap();
    let mailbox = format!("{user}@{domain}");
    let mail = mailcow.read_all_mail(&mailbox).unwrap();

    // After the backup: the target mailbox loses its mail and gains a file; another mailbox
    // gets new mail, which must survive.
    empty_dir(target);
    std::fs::write(target.join("new-after-backup"), "x").unwrap();
    std::fs::write(other.join("delivered-after-backup"), "keep me").unwrap();
    let dovecot_started = started_at(&mailcow, "dovecot-mailcow");
    let watchdog_started = started_at(&mailcow, "watchdog-mailcow");

    // Keys other than the archive's: restoring the mail alone is refused.
    let key = mailcow.volume_dir("crypt-vol-1").join("ecprivkey.pem");
    let original_key = std::fs::read(&key).unwrap();
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nother\n").unwrap();
    let refused = setup.restore(&["--mailbox", &mailbox, "--mirror", "--yes"]);
    show(&refused, "restore with other keys");
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("other mail_crypt keys"),
        "{}",
        refused.stderr
    );
    assert!(
        target.join("new-after-backup").exists(),
        "a refused restore changed the mailbox"
    );
    std::fs::write(&key, &original_key).unwrap();

    let ran = setup.restore(&["--mailbox", &mailbox, "--mirror", "--yes"]);
    show(&ran, "mailbox restore");
    assert_eq!(ran.code, 0);
    assert_same_mail_tree(
        &archive.path().join("vmail").join(relative),
        target,
        "the mailbox",
    );
    assert!(
        mailcow.read_all_mail(&mailbox).unwrap() == mail,
        "{mailbox} reads back differently through dovecot"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("delivered-after-backup")).unwrap(),
        "keep me"
    );
    // Dovecot and the watchdog kept running.
    assert_eq!(started_at(&mailcow, "dovecot-mailcow"), dovecot_started);
    assert_eq!(started_at(&mailcow, "watchdog-mailcow"), watchdog_started);
    all_running(&mailcow);
    let calls = doveadm_calls(&mailcow);
    assert!(
        calls.contains(&format!(
            "batch -u {mailbox} : force-resync * : quota recalc"
        )),
        "doveadm calls: {calls}"
    );

    // A mailbox whose whole domain directory is gone: the domain directory comes back as
    // archived (vmail's owner and mode), not as a new root-owned one dovecot cannot enter.
    let last = mailboxes.last().unwrap();
    let gone_domain = last.parent().unwrap();
    assert_ne!(
        gone_domain,
        target.parent().unwrap(),
        "two domains are needed"
    );
    std::fs::remove_dir_all(gone_domain).unwrap();
    let relative = last.strip_prefix(&vmail).unwrap();
    let mailbox = format!(
        "{}@{}",
        relative.file_name().unwrap().to_str().unwrap(),
        relative.parent().unwrap().to_str().unwrap()
    );
    let ran = setup.restore(&["--mailbox", &mailbox, "--mirror", "--yes"]);
    show(&ran, "mailbox of a vanished domain");
    assert_eq!(ran.code, 0);
    assert_same_mail_tree(
        &archive.path().join("vmail").join(relative),
        last,
        "the mailbox",
    );
    use std::os::unix::fs::MetadataExt;
    let (archived, restored) = (
        std::fs::metadata(
            archive
                .path()
                .join("vmail")
                .join(relative.parent().unwrap()),
        )
        .unwrap(),
        std::fs::metadata(gone_domain).unwrap(),
    );
    assert_eq!(
        (restored.uid(), restored.mode()),
        (archived.uid(), archived.mode()),
        "the domain directory"
    );

    // The configuration over the live one, on request: the old mailcow.conf is kept.
    let live = mailcow.dir.path().join("mailcow.conf");
    let archived = std::fs::read(archive.path().join("config/mailcow.conf")).unwrap();
    let changed = [archived.clone(), b"CHANGED_AFTER_THE_BACKUP=1\n".to_vec()].concat();
    std::fs::write(&live, &changed).unwrap();
    let ran = setup.restore(&["--component", "config", "--config-in-place", "--yes"]);
    show(&ran, "config in place");
    assert_eq!(ran.code, 0);
    assert_eq!(std::fs::read(&live).unwrap(), archived);
    let kept: Vec<_> = std::fs::read_dir(mailcow.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("mailcow.conf.before-restore-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), changed);
}

/// The refusal to restore mail without its keys is what keeps it readable. The keys are lost
/// and dovecot-mailcow makes a fresh pair as it starts (as mailcow's does): dovecot cannot read
/// the archived mail with it, a restore of vmail alone is refused and changes nothing, and a
/// restore that brings the archive's keys too makes every mail readable again.
#[test]
fn mail_restored_with_its_keys_reads_back_and_without_them_is_refused() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, name) = backed_up(20);
    let archive = extracted(&setup, &name);
    let mail = mailcow.read_every_mailbox();

    let crypt = mailcow.volume_dir("crypt-vol-1");
    for key in ["ecprivkey.pem", "ecpubkey.pem"] {
        std::fs::remove_file(crypt.join(key)).unwrap();
    }
    docker(&["restart", &mailcow.container("dovecot-mailcow")]);
    mailcow.wait_for_dovecot();
    let archived_key = std::fs::read(archive.path().join("crypt/ecprivkey.pem")).unwrap();
    let fresh_key = std::fs::read(crypt.join("ecprivkey.pem")).unwrap();
    assert!(
        fresh_key.starts_with(b"-----BEGIN PRIVATE KEY-----") && fresh_key != archived_key,
        "dovecot-mailcow made no fresh key pair"
    );
    // The mail files are still the archived ones; with the fresh pair they cannot be read.
    assert_same_mail_tree(
        &archive.path().join("vmail"),
        &mailcow.volume_dir("vmail-vol-1"),
        "vmail",
    );
    let unreadable = mailcow
        .read_all_mail(&mailcow.users[0])
        .expect_err("mail read with other keys");
    assert!(
        unreadable.contains("Private key not available"),
        "{unreadable}"
    );

    let before = snapshot(&mailcow);
    let refused = setup.restore(&["--component", "vmail", "--yes"]);
    show(&refused, "vmail restore with other keys");
    assert_eq!(refused.code, 2);
    says(
        &refused.stderr,
        &["other mail_crypt keys", "--component crypt"],
    );
    assert_same_tree(
        before.path(),
        snapshot(&mailcow).path(),
        "volumes after the refusal",
    );

    let ran = setup.restore(&["--component", "vmail", "--component", "crypt", "--yes"]);
    show(&ran, "restore with the keys");
    assert_eq!(ran.code, 0);
    assert_same_tree(&archive.path().join("crypt"), &crypt, "crypt");
    same_mail(
        &mail,
        &mailcow.read_every_mailbox(),
        "after the restore with the keys",
    );
}

/// An import that fails midway (here: a dump line longer than the server now accepts) leaves
/// the database exactly as it was — rows written after the backup included — and no staging
/// database behind; the files restored alongside stay restored.
#[test]
fn a_database_import_that_fails_midway_leaves_the_database_as_it_was() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, name) = backed_up(30);
    let archive = extracted(&setup, &name);
    let mysql = mailcow.container("mysql-mailcow");
    empty_dir(&mailcow.volume_dir("vmail-vol-1"));
    sql(
        &mailcow,
        "INSERT INTO mailcow.domain VALUES ('after-backup.example', 'newer than the archive');",
    );
    let rows = Mailcow::rows(&mysql);
    let schema = Mailcow::schema(&mysql);
    // The server's packet limit is the larger of these two.
    sql(
        &mailcow,
        "SET GLOBAL max_allowed_packet = 1024; SET GLOBAL net_buffer_length = 1024;",
    );

    let ran = setup.restore(&["--component", "vmail", "--component", "mysql", "--yes"]);
    sql(
        &mailcow,
        "SET GLOBAL max_allowed_packet = 16777216; SET GLOBAL net_buffer_length = 16384;",
    );
    show(&ran, "failing restore");
    assert_eq!(ran.code, 2);
    says(
        &ran.stderr,
        &[
            "staged in mailcow_mcb_restoring",
            "the restore failed: mysql: mariadb exited with 1",
            "the database mailcow is unchanged",
            "Restored: vmail. Not restored: mysql (database mailcow)",
            "Every service stopped for the restore was started again",
        ],
    );
    assert!(rows.contains("after-backup.example"), "{rows}");
    assert_eq!(Mailcow::rows(&mysql), rows);
    assert_eq!(Mailcow::schema(&mysql), schema);
    assert_same_mail_tree(
        &archive.path().join("vmail"),
        &mailcow.volume_dir("vmail-vol-1"),
        "vmail",
    );
    all_running(&mailcow);
    no_helper_left(&mailcow);
}

/// SIGKILL while the dump is on its way (held there by another session's global read lock):
/// once the lock is gone, the orphaned SQL client runs whatever reached it — into the staging
/// database, never into `mailcow`, which keeps every row. The next restore drops the staging
/// database and completes.
#[test]
fn a_killed_database_restore_leaves_the_database_as_it_was() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, _) = backed_up(30);
    let mysql = mailcow.container("mysql-mailcow");
    let archived = Mailcow::rows(&mysql);
    sql(
        &mailcow,
        "INSERT INTO mailcow.domain VALUES ('after-backup.example', 'newer than the archive');",
    );
    let rows = Mailcow::rows(&mysql);
    let schema = Mailcow::schema(&mysql);

    let mut lock = std::process::Command::new("docker")
        .args(["exec", &mysql, "mariadb", "-uroot", "-e"])
        .arg("FLUSH TABLES WITH READ LOCK; SELECT SLEEP(300)")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waiting = |state: &str| {
        let (_, out, _) = docker_exec(
            &mysql,
            &["mariadb", "-uroot", "-N", "-e", "SHOW PROCESSLIST"],
            b"",
        );
        String::from_utf8_lossy(&out).contains(state)
    };
    common::mailcow::wait_until("the lock", || waiting("User sleep"));
    let mut child = setup
        .command(&["restore"], &["--component", "mysql", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::mailcow::wait_until("the import waiting for the lock", || {
        waiting("Waiting for backup lock") || waiting("Waiting for global read lock")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    sql(
        &mailcow,
        "SELECT CONCAT('KILL ', ID) INTO @k FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'; \
         PREPARE k FROM @k; EXECUTE k;",
    );
    lock.wait().unwrap();
    common::mailcow::wait_until("the orphaned import", || {
        !waiting("mcb_restoring") && !waiting("Waiting for")
    });
    assert_eq!(Mailcow::rows(&mysql), rows);

    setup
        .restore(&["--component", "mysql", "--yes"])
        .expect(0, "the next restore");
    assert_eq!(Mailcow::rows(&mysql), archived);
    assert_eq!(Mailcow::schema(&mysql), schema);
    all_running(&mailcow);
}

/// Ctrl-C while the files are written: the helper is stopped and removed, every service runs
/// again, the message says what state the volumes are in, the exit code is 2; the next restore
/// completes.
#[test]
fn sigint_during_a_restore_starts_everything_again() {
    require!(Borg14, Sshd, Docker, Root);
    interrupted_restore(libc::SIGINT, "SIGINT", 2);
}

/// The same when the admin's terminal goes away (SIGHUP), which would otherwise end the process
/// at once with mailcow's services stopped; borg's code for it is 129.
#[test]
fn sighup_during_a_restore_starts_everything_again() {
    require!(Borg14, Sshd, Docker, Root);
    interrupted_restore(libc::SIGHUP, "SIGHUP", 129);
}

/// Empties vmail and starts a restore of it; returns once its files step has begun (dovecot
/// is down and a helper runs).
fn vmail_restore_in_its_files_step(mailcow: &Mailcow, setup: &Setup) -> std::process::Child {
    empty_dir(&mailcow.volume_dir("vmail-vol-1"));
    let child = setup
        .command(&["restore"], &["--component", "vmail", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::mailcow::wait_until("the files step", || {
        !running(mailcow, "dovecot-mailcow") && helper_runs(mailcow)
    });
    child
}

fn helper_runs(mailcow: &Mailcow) -> bool {
    let label = format!("label=org.mailcow-borg.project={}", mailcow.project);
    !docker(&["ps", "-q", "--filter", &label]).is_empty()
}

/// SIGKILL (or the OOM killer, or a power cut) gives a restore no chance to start what it
/// stopped. Its record in the state dir does: the next command starts the services once the
/// orphaned helper has finished, and says so.
#[test]
fn services_a_killed_restore_left_stopped_are_started_by_the_next_command() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, _) = backed_up(3000);
    let mut child = vmail_restore_in_its_files_step(&mailcow, &setup);
    child.kill().unwrap();
    child.wait().unwrap();
    let record = setup.dir.path().join("state/stopped-services.json");
    assert!(record.exists(), "no record of the stopped services");
    assert!(!running(&mailcow, "dovecot-mailcow"));
    // The dead run's helper finishes its work on its own.
    common::mailcow::wait_until("the orphaned helper ends", || !helper_runs(&mailcow));
    assert!(
        !running(&mailcow, "dovecot-mailcow"),
        "nothing starts them by itself"
    );

    let ran = setup
        .check(&[])
        .expect(0, "config check after the killed restore");
    says(
        &ran.stderr,
        &[
            "a restore that was cut off",
            "started them again",
            "dovecot-mailcow",
        ],
    );
    all_running(&mailcow);
    assert!(!record.exists(), "the record is removed once they run");
    no_helper_left(&mailcow);
    // Nothing is left to do for the command after it.
    let ran = setup.check(&[]).expect(0, "config check again");
    assert!(!ran.stderr.contains("cut off"), "{}", ran.stderr);
}

fn interrupted_restore(signal: libc::c_int, name: &str, code: i32) {
    let (mailcow, setup, archive_name) = backed_up(3000);
    let archive = extracted(&setup, &archive_name);
    let child = vmail_restore_in_its_files_step(&mailcow, &setup);
    // SAFETY: kill(2) on our own child's pid, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let ran = Ran::from(child.wait_with_output().unwrap());
    show(&ran, "interrupted restore");
    assert_eq!(ran.code, code);
    says(
        &ran.stderr,
        &[
            format!("files: interrupted by {name}").as_str(),
            "every file whole",
            "Every service stopped for the restore was started again",
        ],
    );
    all_running(&mailcow);
    no_helper_left(&mailcow);

    setup
        .restore(&["--component", "vmail", "--yes"])
        .expect(0, "the next restore");
    assert_same_mail_tree(
        &archive.path().join("vmail"),
        &mailcow.volume_dir("vmail-vol-1"),
        "vmail",
    );
}

#[test]
fn an_archive_real_borg_made_of_the_same_layout_restores_too() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(50);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    // The layout by hand: the volumes' contents and a dump, as `borg create` of a directory.
    let staging = setup.borg_made_archive(&mailcow, "by-borg", |dump| dump);
    let rows = Mailcow::rows(&mailcow.container("mysql-mailcow"));
    empty_dir(&mailcow.volume_dir("vmail-vol-1"));
    sql(&mailcow, "DROP DATABASE mailcow;");

    let ran = setup.restore(&["by-borg", "--yes"]);
    show(&ran, "restore of borg's archive");
    // Warnings: without our comment, MAILDIR_SUB cannot be checked.
    assert_eq!(ran.code, 1);
    assert!(
        ran.stdout_text()
            .contains("not written by mailcow-borg backup")
    );
    assert_same_mail_tree(
        &staging.path().join("vmail"),
        &mailcow.volume_dir("vmail-vol-1"),
        "vmail",
    );
    assert_eq!(Mailcow::rows(&mailcow.container("mysql-mailcow")), rows);
    all_running(&mailcow);
    assert_same_tree(
        &staging.path().join("crypt"),
        &mailcow.volume_dir("crypt-vol-1"),
        "crypt",
    );
}

/// Not a test: `scripts/bench-restore.sh` runs it (release build) and it prints figures. The
/// file part of a restore into emptied volumes — `restore` of every file component, all its
/// orchestration included (reading the archive's summary, stopping and starting services,
/// the helper) — against `borg extract` of the same components into an empty directory, both
/// over the same loopback sshd and `borg serve` 1.4.5; our `extract` on the host for reference;
/// and the full restore with the database; then the drill of the same archive, step by step,
/// against the restore's files step. Alternating, in one run, on the same data; every run
/// writes the mail into a fresh file system of its own.
#[test]
#[ignore]
fn benchmark_restore() {
    require!(Borg14, Sshd, Docker, Root);
    let (mails, rounds) = bench_size();
    let (mailcow, setup, name) = backed_up(mails);
    let url = format!("{}::{name}", setup.sshd.url(&setup.repo));
    let dirs: Vec<&str> = VOLUMES.iter().map(|(_, dir)| *dir).collect();
    let mut file_args = vec!["--yes"];
    for dir in &dirs {
        file_args.extend(["--component", dir]);
    }
    let empty_volumes = || {
        for (volume, _) in VOLUMES {
            empty_dir(&mailcow.volume_dir(volume));
        }
    };
    let extract_with = |tool: &str| {
        let into = tempfile::tempdir().unwrap();
        let _fresh = FreshFs::at(into.path());
        let mut args: Vec<&str> = vec!["extract", &url];
        args.extend(&dirs);
        let ran = if tool == "borg" {
            setup.borg_over_ssh(into.path(), &args)
        } else {
            let world =
                common::cli::World::new(common::mailcow_repo::PASSPHRASE).with_ssh(&setup.sshd);
            world.ours(into.path(), &args, &[])
        };
        ran.expect(0, &format!("{tool} extract"));
    };
    // Returns the time and the restore's own account of its steps, with their times.
    let restore_with = |args: &[&str], what: &str| {
        empty_volumes();
        let _fresh = FreshFs::at(&mailcow.volume_dir("vmail-vol-1"));
        let (seconds, ran) = timed(|| setup.restore(args).expect(0, what));
        let steps: Vec<String> = ran
            .stderr
            .lines()
            .filter(|l| l.starts_with("mailcow-borg: ["))
            .map(String::from)
            .collect();
        (seconds, steps.join("\n"))
    };
    // When a step of the restore's account began, in seconds.
    let began = |log: &str, step: &str| -> f64 {
        let line = log.lines().find(|l| l.contains(step)).unwrap();
        let at = line.split('[').nth(1).unwrap().split(" s]").next().unwrap();
        at.trim().parse().unwrap()
    };
    // The drill of the same archive (default sample), its seconds in all and per step. It
    // warns (exit 1): this world's mailbox table does not list the generated mailboxes.
    let drill = || -> serde_json::Value {
        let ran = Ran::from(setup.command(&["drill"], &["--json"]).output().unwrap());
        serde_json::from_slice(&ran.expect(1, "drill").stdout).unwrap()
    };
    let (mut files, mut full, mut borg, mut ours) = (vec![], vec![], vec![], vec![]);
    let (mut file_step, mut drills) = (vec![], vec![]);
    let mut steps = String::new();
    for _ in 0..rounds {
        let (seconds, log) = restore_with(&file_args, "restore of the files");
        files.push(seconds);
        file_step.push(began(&log, "files restored") - began(&log, "restoring files"));
        borg.push(timed(|| extract_with("borg")).0);
        ours.push(timed(|| extract_with("ours")).0);
        let (seconds, log) = restore_with(&["--yes"], "full restore");
        full.push(seconds);
        steps = log;
        drills.push(drill());
    }
    let (files, full, borg, ours) = (median(files), median(full), median(borg), median(ours));
    let file_step = median(file_step);
    let drill_seconds = |step: Option<&str>| {
        median(
            drills
                .iter()
                .map(|report| match step {
                    None => report["seconds"].as_f64().unwrap(),
                    Some(name) => report["steps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|s| s["name"] == name)
                        .unwrap()["seconds"]
                        .as_f64()
                        .unwrap(),
                })
                .collect(),
        )
    };
    println!("\n### {mails} mails, {rounds} rounds (median)\n");
    println!("| step | seconds | / borg extract |\n|---|---:|---:|");
    println!("| borg extract of the file components (host, empty directory) | {borg:.2} | 1.00 |");
    println!(
        "| our extract of the same (host, empty directory) | {ours:.2} | {:.2} |",
        ours / borg
    );
    println!(
        "| **restore of the file components** (emptied volumes, all orchestration) | {files:.2} | **{:.2}** |",
        files / borg
    );
    println!(
        "| **its files step** (helper start, repository open, extract, mirror) | {file_step:.2} | **{:.2}** |",
        file_step / borg
    );
    println!(
        "| full restore, database included | {full:.2} | {:.2} |",
        full / borg
    );
    println!(
        "\n| drill of the archive (default sample) | seconds | / restore's files step |\n|---|---:|---:|"
    );
    let drill_steps = drills[0]["steps"].as_array().unwrap().iter();
    for name in drill_steps.map(|s| s["name"].as_str().unwrap()) {
        let seconds = drill_seconds(Some(name));
        println!("| {name} | {seconds:.2} | {:.2} |", seconds / file_step);
    }
    let whole = drill_seconds(None);
    println!(
        "| **the whole drill** | {whole:.2} | **{:.2}** |",
        whole / file_step
    );
    println!("\nThe last full restore's steps:\n\n```\n{steps}\n```");
}

/// A restore writes no setuid or setgid program into mailcow's volumes, whatever the archive
/// holds, and says what it cleared; a setgid directory (postfix's `public` is 2710) keeps it.
#[test]
fn a_restore_clears_the_setuid_and_setgid_bits_of_files() {
    require!(Borg14, Sshd, Docker, Root);
    use std::os::unix::fs::PermissionsExt;
    let mailcow = Mailcow::create(20);
    mailcow.start();
    let postfix = mailcow.volume_dir("postfix-vol-1");
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    for (name, mode) in [("suid-program", 0o4755), ("sgid-file", 0o2644)] {
        std::fs::write(postfix.join(name), "#!/bin/sh\n").unwrap();
        set_mode(&postfix.join(name), mode);
    }
    set_mode(&postfix.join("public"), 0o2710);
    let setup = Setup::new(&mailcow);
    setup
        .backup(&["--component", "postfix"])
        .expect(0, "backup");
    for name in ["suid-program", "sgid-file"] {
        std::fs::remove_file(postfix.join(name)).unwrap();
    }
    let ran = setup.restore(&["--component", "postfix", "--yes"]);
    show(&ran, "restore of set-id files");
    assert_eq!(ran.code, 1, "the cleared bits are warnings");
    says(
        &ran.stderr,
        &[
            "suid-program: setuid/setgid bits cleared (mode 4755 in the archive)",
            "sgid-file: setuid/setgid bits cleared (mode 2644 in the archive)",
        ],
    );
    assert_eq!(mode(&postfix.join("suid-program")), 0o755);
    assert_eq!(mode(&postfix.join("sgid-file")), 0o644);
    assert_eq!(mode(&postfix.join("public")), 0o2710);
    all_running(&mailcow);
    no_helper_left(&mailcow);
}
