//! `mailcow-borg drill` end to end, in the mailcow stand-in world (real MariaDB and Redis,
//! a repository served by real borg 1.4.5 over a real sshd, the real Docker engine): a good
//! archive drills clean; a broken dump, a damaged repository object and a mailbox without its
//! maildir are found and named; and after every drill nothing it made is left, the live
//! volumes are byte for byte as before, and the live services still run, never restarted.

use crate::common;

use common::cli::{Ran, assert_same_tree};
use common::mailcow::{DELIVERED_PER_MAILBOX, Mailcow, docker, docker_exec};
use common::mailcow_repo::{
    SERVICES, Setup, VOLUMES, all_running, says, show, snapshot, started_at,
};

const DRILL_LABEL: &str = "org.mailcow-borg.drill";

/// A started, filled stand-in whose mailbox table matches its maildirs plus `extra` rows.
fn world(mails: u32, extra: &[&str]) -> (Mailcow, Setup) {
    let mailcow = Mailcow::create(mails);
    mailcow.start();
    mailcow.fill_database();
    mailcow.mailbox_rows_matching_maildirs(extra);
    mailcow.set_redis_keys(&[("other", "value")]);
    let redis = mailcow.container("redis-mailcow");
    let script = format!(
        "AUTH \"{}\"\nHSET DKIM_PRIV_KEYS domain0.test key0 domain1.test key1\n",
        common::mailcow::REDIS_PASS.replace('"', "\\\"")
    );
    let (code, _, err) = docker_exec(&redis, &["redis-cli"], script.as_bytes());
    assert_eq!(code, 0, "{err}");
    let setup = Setup::new(&mailcow);
    (mailcow, setup)
}

fn backup(setup: &Setup) -> String {
    let ran = setup.backup(&["--json"]).expect(0, "backup");
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    summary["archive"]["name"].as_str().unwrap().to_string()
}

/// What the live mailcow is before a drill, to compare after it.
struct Live {
    volumes: tempfile::TempDir,
    rows: String,
    started: Vec<String>,
}

impl Live {
    fn of(mailcow: &Mailcow) -> Live {
        Live {
            volumes: snapshot(mailcow),
            rows: Mailcow::rows(&mailcow.container("mysql-mailcow")),
            started: SERVICES.iter().map(|s| started_at(mailcow, s)).collect(),
        }
    }

    /// Nothing of the drill is left, and the live mailcow is as it was: every volume byte for
    /// byte, the database's rows, every service running since the same moment.
    fn unchanged(&self, mailcow: &Mailcow) {
        no_drill_left(mailcow);
        common::mailcow_repo::no_helper_left(mailcow);
        for (volume, name) in VOLUMES {
            assert_same_tree(
                &self.volumes.path().join(name),
                &mailcow.volume_dir(volume),
                name,
            );
        }
        assert_eq!(
            Mailcow::rows(&mailcow.container("mysql-mailcow")),
            self.rows
        );
        all_running(mailcow);
        let started: Vec<String> = SERVICES.iter().map(|s| started_at(mailcow, s)).collect();
        assert_eq!(started, self.started, "a service was restarted");
    }
}

fn drill(setup: &Setup, args: &[&str]) -> Ran {
    let ran = Ran::from(setup.command(&["drill"], args).output().unwrap());
    show(&ran, &format!("drill {}", args.join(" ")));
    ran
}

/// The step `name` of a `--json` report.
fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

#[test]
fn a_good_archive_drills_clean_and_the_live_mailcow_is_untouched() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup) = world(300, &[]);
    let name = backup(&setup);
    let live = Live::of(&mailcow);

    let ran = drill(&setup, &["--json"]).expect(0, "drill");
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(report["archive"], name.as_str());
    for step in report["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "ok", "{step}");
    }
    let files = step(&report, "files");
    assert!(files["figures"]["items"].as_u64().unwrap() > 300, "{files}");
    let database = step(&report, "database");
    let mailboxes = mailcow.users.len() as u64;
    assert_eq!(database["figures"]["rows_mailbox"], mailboxes);
    assert_eq!(database["figures"]["rows_domain"], 7);
    assert_eq!(database["figures"]["tables"], 2);
    let mailbox_step = step(&report, "mailboxes");
    assert_eq!(mailbox_step["figures"]["mailboxes"], mailboxes);
    assert_eq!(mailbox_step["figures"]["maildirs"], mailboxes);
    // Every mailbox has more than 10 mails (those delivered through dovecot, encrypted, and
    // the generated ones): 10 of each are read.
    let mail = step(&report, "mail");
    assert_eq!(mail["figures"]["mailboxes"], mailboxes);
    assert_eq!(mail["figures"]["mails_read"], 10 * mailboxes);
    assert_eq!(
        mail["figures"]["mails"],
        300 + DELIVERED_PER_MAILBOX as u64 * mailboxes,
        "{mail}"
    );
    let redis = step(&report, "redis");
    assert_eq!(redis["figures"]["dkim_keys"], 2);
    assert_eq!(redis["figures"]["keys"], 2);
    live.unchanged(&mailcow);

    // The text report: a line per step.
    let ran = drill(&setup, &[name.as_str()]).expect(0, "drill as text");
    says(
        &ran.stdout_text(),
        &[
            &format!("Drill of archive {name}"),
            "files      ok",
            "database   ok",
            &format!("rows_mailbox={mailboxes}"),
            "mailboxes  ok",
            "redis      ok",
            "dkim_keys=2",
            "mail       ok",
        ],
    );
    live.unchanged(&mailcow);

    // --all reads every mail.
    let ran = drill(&setup, &["--all", "--json"]).expect(0, "drill --all");
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let mail = step(&report, "mail");
    assert_eq!(mail["figures"]["mails_read"], mail["figures"]["mails"]);
    live.unchanged(&mailcow);
}

/// The keys were lost and dovecot made a fresh pair (as mailcow's entrypoint does); a backup
/// after that holds mail the keys it holds cannot decrypt: the mail step names it.
#[test]
fn mail_the_archived_keys_cannot_decrypt_fails_the_drill_naming_it() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup) = world(20, &[]);
    let dovecot = mailcow.container("dovecot-mailcow");
    let (code, _, err) = docker_exec(
        &dovecot,
        &[
            "sh",
            "-c",
            "cd /mail_crypt && openssl ecparam -name prime256v1 -genkey | openssl pkey -out ecprivkey.pem && openssl pkey -in ecprivkey.pem -pubout -out ecpubkey.pem && chown 401 ecprivkey.pem ecpubkey.pem",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    backup(&setup);
    let live = Live::of(&mailcow);
    let ran = drill(&setup, &["--json"]).expect(2, "drill with the wrong keys");
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let mail = step(&report, "mail");
    assert_eq!(mail["status"], "failed", "{mail}");
    let message = mail["messages"].to_string();
    says(
        &message,
        &[
            "dovecot cannot read",
            "with the restored mail_crypt keys",
            "INBOX: ",
        ],
    );
    // Named by mailbox and file: one of the world's mailboxes and a maildir file name.
    assert!(
        mailcow
            .users
            .iter()
            .any(|u| message.contains(&format!("{u} INBOX: "))),
        "{message}"
    );
    says(&ran.stderr, &["failed: mail"]);
    live.unchanged(&mailcow);
}

#[test]
fn a_mailbox_row_without_its_maildir_is_a_warning_naming_it() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup) = world(50, &["ghost@domain0.test"]);
    backup(&setup);
    let live = Live::of(&mailcow);
    let ran = drill(&setup, &[]).expect(1, "drill");
    says(
        &ran.stdout_text(),
        &[
            "mailboxes  warning",
            "1 mailbox(es) of the mailbox table have no maildir in the restored vmail: ghost@domain0.test",
            "files      ok",
            "database   ok",
        ],
    );
    live.unchanged(&mailcow);
}

/// An archive real borg made of the backup's layout, its dump cut off; then a content chunk
/// of the repository damaged.
#[test]
fn a_broken_dump_or_a_damaged_repository_object_fails_the_drill_naming_it() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup) = world(300, &[]);
    let good = backup(&setup);
    setup.borg_made_archive(&mailcow, "cut-dump", |dump| {
        dump[..dump.len() * 3 / 5].to_vec()
    });
    let live = Live::of(&mailcow);

    let ran = drill(&setup, &["cut-dump", "--json"]).expect(2, "drill of a cut-off dump");
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let database = step(&report, "database");
    assert_eq!(database["status"], "failed", "{database}");
    // Cut mid-statement: the server refuses its syntax before the completeness check could.
    says(
        &database["messages"].to_string(),
        &["the dump does not load", "mariadb exited with 1"],
    );
    assert_eq!(step(&report, "files")["status"], "ok");
    assert_eq!(step(&report, "mailboxes")["status"], "skipped");
    says(
        &ran.stderr,
        &["the drill of archive cut-dump failed: database"],
    );
    live.unchanged(&mailcow);

    // A content chunk damaged on the repository host: the good archive's files fail.
    damage_content(&setup);
    let ran = drill(&setup, &[&good]).expect(2, "drill of a damaged repository");
    says(
        &ran.stdout_text(),
        &[
            "files      failed",
            "the archive's files do not all come back complete",
        ],
    );
    says(&ran.stderr, &["the restore is incomplete", "failed: files"]);
    live.unchanged(&mailcow);
}

/// Flips bytes a third into the repository's largest segment, where the mails' content is
/// (it was written first; the archive's metadata follows it).
fn damage_content(setup: &Setup) {
    let mut segments: Vec<(u64, std::path::PathBuf)> = Vec::new();
    for dir in std::fs::read_dir(setup.repo.join("data")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let file = file.unwrap();
            segments.push((file.metadata().unwrap().len(), file.path()));
        }
    }
    let (size, path) = segments.into_iter().max().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (size / 3) as usize;
    for byte in &mut bytes[at..at + 64] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn sigterm_during_a_drill_removes_its_containers_and_volumes() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup) = world(3000, &[]);
    backup(&setup);
    let live = Live::of(&mailcow);
    let child = setup
        .command(&["drill"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let label = format!("label={DRILL_LABEL}={}", mailcow.project);
    common::mailcow::wait_until("the drill's throwaway MariaDB", || {
        docker(&["ps", "-q", "--filter", &label]).lines().count() >= 2
    });
    // SAFETY: kill(2) on our own child's pid, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let ran = Ran::from(child.wait_with_output().unwrap());
    show(&ran, "drill stopped by SIGTERM");
    assert_eq!(ran.code, 143);
    says(
        &ran.stderr,
        &[
            "Received SIGTERM",
            "the drill's scratch containers and volumes were removed",
        ],
    );
    live.unchanged(&mailcow);
}

/// `[check]` with every kind due daily and half of the data per backup.
fn schedule_checks(setup: &Setup, repository: &str) {
    setup.add_to_config(&format!(
        "[check]\nrepository = \"{repository}\"\narchives = \"1d\"\ndata = \"50%\"\ndrill = \"1d\"\ndrill_sample = 2\n"
    ));
}

/// The state dir's stamps, as `kind value` per line.
fn stamps(setup: &Setup) -> Vec<String> {
    std::fs::read_to_string(setup.dir.path().join("state/schedule-stamps"))
        .unwrap_or_default()
        .lines()
        .map(|line| line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn backup_runs_the_checks_and_the_drill_that_are_due_and_says_when_one_finds_problems() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup) = world(300, &[]);
    schedule_checks(&setup, "1d");

    // First backup: everything is due.
    let ran = setup.backup(&["--json"]).expect(0, "first backup");
    show(&ran, "first backup");
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let scheduled = &summary["scheduled"];
    assert_eq!(
        scheduled["check"]["checked"], "segments, archives, 50% of the data",
        "{summary}"
    );
    assert_eq!(scheduled["check"]["exit_code"], 0, "{summary}");
    assert_eq!(scheduled["drill"]["archive"], summary["archive"]["name"]);
    assert_eq!(
        step(&scheduled["drill"], "mail")["status"],
        "ok",
        "{summary}"
    );
    let after_first = stamps(&setup);
    for kind in ["check-repository", "check-archives", "drill"] {
        assert!(
            after_first
                .iter()
                .any(|s| s.starts_with(&format!("{kind} "))),
            "{kind} not stamped: {after_first:?}"
        );
    }
    assert!(
        after_first.contains(&"check-data-cursor 2147483648".to_string()),
        "{after_first:?}"
    );
    no_drill_left(&mailcow);

    // Second backup: only the next half of the data is due.
    let ran = setup.backup(&[]).expect(0, "second backup");
    show(&ran, "second backup");
    says(&ran.stderr, &["checking the repository: 50% of the data"]);
    assert!(
        !ran.stdout_text().contains("Drill of archive"),
        "a drill ran again"
    );
    assert!(
        stamps(&setup).contains(&"check-data-cursor 0".to_string()),
        "{:?}",
        stamps(&setup)
    );

    // A damaged segment: the repository check after the third backup finds it; the backup
    // says its archive is safe, and exits 2.
    damage_content(&setup);
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config = config.replace(
        "repository = \"1d\"\narchives",
        "repository = \"always\"\narchives",
    );
    std::fs::write(&setup.config, config).unwrap();
    let ran = setup.backup(&[]).expect(2, "third backup");
    show(&ran, "third backup");
    says(
        &ran.stderr,
        &[
            "was written and is safe, but the scheduled check (segments, 50% of the data) found problems",
            "borg check --repair",
        ],
    );
    let listed = setup.borg(&["list", "--short", setup.repo.to_str().unwrap()]);
    assert_eq!(
        listed.stdout_text().lines().count(),
        3,
        "{}",
        listed.stdout_text()
    );
    no_drill_left(&mailcow);
}

/// Nothing labelled as the drill's is left, container or volume.
fn no_drill_left(mailcow: &Mailcow) {
    let label = format!("label={DRILL_LABEL}={}", mailcow.project);
    let containers = docker(&["ps", "-aq", "--filter", &label]);
    assert!(containers.is_empty(), "drill containers left: {containers}");
    let volumes = docker(&["volume", "ls", "-q", "--filter", &label]);
    assert!(volumes.is_empty(), "drill volumes left: {volumes}");
}
