//! `restore --mailbox/--domain` merging into live mailboxes that kept receiving mail, in the
//! restore tests' world: real dovecot with mail_crypt (every mail below is delivered, moved,
//! flagged and deleted through it, so it is encrypted on disk and dovecot's own files are
//! real), real MariaDB and Redis, a repository served by real borg 1.4.5 over SSH. What
//! dovecot reads after each restore (`doveadm fetch`: folder, flags, text) is the proof.

use crate::common;

use std::collections::BTreeMap;

use common::cli::Ran;
use common::mailcow::{EXTRA_MAILBOX, Mailcow, docker_exec};
use common::mailcow_repo::{
    FreshFs, Setup, all_running, backed_up, bench_size, median, says, show, timed,
};

/// `doveadm` (the real one, not the recorder) in dovecot-mailcow; its stdout.
fn doveadm(mailcow: &Mailcow, args: &[&str]) -> String {
    let mut command = vec!["/usr/bin/doveadm"];
    command.extend(args);
    let (code, out, err) = docker_exec(&mailcow.container("dovecot-mailcow"), &command, b"");
    assert!(
        code == 0 && !err.contains("Error"),
        "doveadm {args:?}: {code} {err}"
    );
    String::from_utf8(out).unwrap()
}

/// A mailbox as dovecot reads it: each message by (folder, subject), with its flags and text;
/// a message read twice fails the test (every message must be there exactly once).
type Messages = BTreeMap<(String, String), (String, String)>;

fn messages(mailcow: &Mailcow, user: &str) -> Messages {
    let json = doveadm(
        mailcow,
        &[
            "-f",
            "json",
            "fetch",
            "-u",
            user,
            "mailbox flags hdr.subject text",
            "all",
        ],
    );
    let fetched: Vec<BTreeMap<String, String>> = match json.trim() {
        "" => Vec::new(),
        json => serde_json::from_str(json).unwrap(),
    };
    let mut read = Messages::new();
    for mut m in fetched {
        let key = (
            m.remove("mailbox").unwrap(),
            m.remove("hdr.subject").unwrap(),
        );
        let mut flags: Vec<&str> = m["flags"].split_whitespace().collect();
        // \Recent is the session's, not the message's.
        flags.retain(|f| *f != "\\Recent");
        flags.sort();
        let value = (flags.join(" "), m.remove("text").unwrap());
        assert!(
            read.insert(key.clone(), value).is_none(),
            "{user}: {key:?} is there twice"
        );
    }
    read
}

fn subscribed(mailcow: &Mailcow, user: &str) -> Vec<String> {
    doveadm(mailcow, &["mailbox", "list", "-s", "-u", user])
        .lines()
        .map(str::to_string)
        .collect()
}

fn deliver(mailcow: &Mailcow, user: &str, folder: &str, subject: &str) {
    let mail = format!(
        "From: someone@example.net\nTo: {user}\nSubject: {subject}\nMessage-ID: <{subject}@test>\n\nnew mail: {subject}\n"
    );
    let (code, _, err) = docker_exec(
        &mailcow.container("dovecot-mailcow"),
        &["/usr/bin/doveadm", "save", "-u", user, "-m", folder],
        mail.as_bytes(),
    );
    assert_eq!(code, 0, "doveadm save: {err}");
}

/// Asserts that two readings of mail are the same; on failure shows folders, subjects and
/// flags (not the texts).
fn same(actual: &Messages, expected: &Messages, what: &str) {
    let shown = |m: &Messages| -> Vec<(String, String, String)> {
        m.iter()
            .map(|((f, s), (flags, _))| (f.clone(), s.clone(), flags.clone()))
            .collect()
    };
    assert_eq!(shown(actual), shown(expected), "{what}");
    assert!(actual == expected, "{what}: a text differs");
}

/// The flags and texts of `all`, without keywords (`$Label1`): what `--into-folder` keeps.
fn without_keywords(all: Messages) -> Vec<(String, String)> {
    all.into_values()
        .map(|(flags, text)| {
            let standard: Vec<&str> = flags.split(' ').filter(|f| !f.starts_with('$')).collect();
            (standard.join(" "), text)
        })
        .collect()
}

/// `messages` of `all` whose folder is `folder`.
fn in_folder(all: &Messages, folder: &str) -> Messages {
    all.iter()
        .filter(|((f, _), _)| f == folder)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A refused restore: exit 2, one line saying `why`, and the mailbox as it was.
fn refused(setup: &Setup, mailcow: &Mailcow, args: &[&str], why: &str) {
    let before = messages(mailcow, EXTRA_MAILBOX);
    let ran: Ran = setup.restore(args);
    show(&ran, why);
    assert_eq!(ran.code, 2, "{args:?}");
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", ran.stderr);
    says(&ran.stderr, &[why]);
    assert!(
        messages(mailcow, EXTRA_MAILBOX) == before,
        "{args:?} changed the mailbox"
    );
}

/// The proof, option after option on one world: a mailbox that lost a folder and some
/// mails and kept receiving mail and changing flags after the backup gets exactly what it
/// lost back, with the flags it had, and keeps everything new; `--folder`, `--since/--before`,
/// `--into-folder`, `--to` and a domain merge each do what they say and nothing more; bad
/// input is refused with one line and changes nothing; `--mirror`'s plan says what it removes.
#[test]
fn a_merge_brings_back_what_was_lost_and_keeps_what_is_new() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, _) = backed_up(40);
    let user = EXTRA_MAILBOX;
    // Folders whose names dovecot escapes on disk (`.Projects.2025`, `.v1\2e2`), with mail
    // moved there, and flags: then the archive the restores read.
    for folder in ["Projects/2025", "v1.2", "Entwürfe"] {
        doveadm(&mailcow, &["mailbox", "create", "-s", "-u", user, folder]);
    }
    doveadm(
        &mailcow,
        &[
            "move",
            "-u",
            user,
            "Projects/2025",
            "mailbox",
            "Archive",
            "subject",
            "mail 0",
        ],
    );
    doveadm(
        &mailcow,
        &[
            "copy", "-u", user, "v1.2", "mailbox", "Sent", "subject", "mail 1",
        ],
    );
    doveadm(
        &mailcow,
        &[
            "copy",
            "-u",
            user,
            "Entwürfe",
            "mailbox",
            "Sent",
            "subject",
            "mail 2",
        ],
    );
    doveadm(
        &mailcow,
        &[
            "flags",
            "add",
            "-u",
            user,
            "\\Flagged $Label1",
            "mailbox",
            "INBOX",
            "subject",
            "mail 1",
        ],
    );
    let archived = messages(&mailcow, user);
    assert_eq!(archived.len(), 14, "{:?}", archived.keys());
    let ran = setup.backup(&[]);
    show(&ran, "second backup");
    assert_eq!(ran.code, 0);
    let other = mailcow.users[0].clone();
    let other_before = messages(&mailcow, &other);

    // After the backup: a folder deleted, two INBOX mails expunged, new mail, changed flags.
    doveadm(
        &mailcow,
        &["mailbox", "delete", "-s", "-u", user, "Projects/2025"],
    );
    for subject in ["INBOX mail 1", "INBOX mail 2"] {
        doveadm(
            &mailcow,
            &[
                "expunge", "-u", user, "mailbox", "INBOX", "header", "subject", subject,
            ],
        );
    }
    deliver(&mailcow, user, "INBOX", "arrived after the backup");
    doveadm(
        &mailcow,
        &[
            "flags",
            "add",
            "-u",
            user,
            "\\Answered",
            "mailbox",
            "INBOX",
            "subject",
            "INBOX mail 3",
        ],
    );
    let live = messages(&mailcow, user);
    assert_eq!(live.len(), 12);

    // The plans: what comes back, and what a mirror would remove. Nothing changes.
    let plan = setup.restore(&["--mailbox", user, "--dry-run"]);
    show(&plan, "merge plan");
    assert_eq!(plan.code, 0);
    says(
        &plan.stdout_text(),
        &[
            "nothing live is removed or changed",
            &format!("{user} INBOX: 2 of 4 messages come back"),
            &format!(
                "{user} Projects/2025: 1 of 1 messages come back (the folder is made again and subscribed)"
            ),
        ],
    );
    let plan = setup.restore(&["--mailbox", user, "--mirror", "--dry-run"]);
    show(&plan, "mirror plan");
    says(
        &plan.stdout_text(),
        &[&format!(
            "{user} INBOX: 1 live messages the archive does not hold are REMOVED"
        )],
    );
    assert!(
        messages(&mailcow, user) == live,
        "a dry run changed the mailbox"
    );

    // Bad input: one line each, exit 2, nothing changed.
    refused(
        &setup,
        &mailcow,
        &["--mailbox", user, "--folder", "Nope", "--yes"],
        "folder \"Nope\" is not in",
    );
    refused(
        &setup,
        &mailcow,
        &["--mailbox", user, "--since", "2026-02-30", "--yes"],
        "2026-02-30",
    );
    refused(
        &setup,
        &mailcow,
        &["--mailbox", "ghost@example.org", "--yes"],
        "holds no vmail/example.org/ghost",
    );
    refused(
        &setup,
        &mailcow,
        &["--mailbox", user, "--to", "nobody@example.org", "--yes"],
        "no such mailbox",
    );
    refused(
        &setup,
        &mailcow,
        &["--mailbox", user, "--mirror", "--folder", "INBOX", "--yes"],
        "--folder is for the merge",
    );

    // The merge: what was lost is back with its flags (`\Flagged $Label1` of INBOX mail 1),
    // what is new or changed stays, each message once, the deleted folder subscribed again.
    let ran = setup.restore(&["--mailbox", user, "--yes"]);
    show(&ran, "merge");
    assert_eq!(ran.code, 0);
    let merged = messages(&mailcow, user);
    let mut expected = archived.clone();
    for (key, value) in &live {
        expected.insert(key.clone(), value.clone());
    }
    same(&merged, &expected, "the merge");
    assert_eq!(
        merged[&("INBOX".into(), "INBOX mail 1".into())].0,
        "$Label1 \\Flagged \\Seen"
    );
    assert!(
        merged[&("INBOX".into(), "INBOX mail 3".into())]
            .0
            .contains("\\Answered")
    );
    assert!(subscribed(&mailcow, user).contains(&"Projects/2025".to_string()));
    all_running(&mailcow);
    // Again: nothing comes back, nothing changes.
    let again = setup.restore(&["--mailbox", user, "--yes"]);
    assert_eq!(again.code, 0);
    says(&again.stdout_text(), &["no message comes back"]);
    assert!(messages(&mailcow, user) == merged);

    // --folder: only that folder's mail comes back.
    for folder in ["v1.2", "Entwürfe"] {
        doveadm(&mailcow, &["mailbox", "delete", "-s", "-u", user, folder]);
    }
    doveadm(
        &mailcow,
        &[
            "expunge",
            "-u",
            user,
            "mailbox",
            "Sent",
            "header",
            "subject",
            "Sent mail 3",
        ],
    );
    let ran = setup.restore(&["--mailbox", user, "--folder", "v1.2", "--yes"]);
    show(&ran, "--folder v1.2");
    assert_eq!(ran.code, 0);
    let now = messages(&mailcow, user);
    assert!(in_folder(&now, "v1.2") == in_folder(&archived, "v1.2"));
    assert!(in_folder(&now, "Entwürfe").is_empty());
    assert_eq!(in_folder(&now, "Sent").len(), 3);

    // --since/--before, by the delivery time in the file names: Entwürfe's one mail was
    // saved (copied) after every mail of Sent was delivered.
    let ran = setup.restore(&[
        "--mailbox",
        user,
        "--folder",
        "Sent",
        "--before",
        "2000-01-01",
        "--yes",
    ]);
    assert_eq!(ran.code, 0);
    assert_eq!(in_folder(&messages(&mailcow, user), "Sent").len(), 3);
    let ran = setup.restore(&[
        "--mailbox",
        user,
        "--since",
        "2000-01-01T00:00:00Z",
        "--before",
        "2100-01-01",
        "--folder",
        "Sent",
        "--folder",
        "Entwürfe",
        "--yes",
    ]);
    show(&ran, "--since/--before");
    assert_eq!(ran.code, 0);
    let now = messages(&mailcow, user);
    assert!(in_folder(&now, "Sent") == in_folder(&archived, "Sent"));
    assert!(in_folder(&now, "Entwürfe") == in_folder(&archived, "Entwürfe"));

    // --into-folder: Archive's mail into a new folder, subscribed; Archive untouched.
    let before = messages(&mailcow, user);
    let ran = setup.restore(&[
        "--mailbox",
        user,
        "--folder",
        "Archive",
        "--into-folder",
        "From the backup",
        "--yes",
    ]);
    show(&ran, "--into-folder");
    assert_eq!(ran.code, 0);
    let now = messages(&mailcow, user);
    let into: Vec<_> = in_folder(&now, "From the backup").into_values().collect();
    let archive_mail: Vec<_> = in_folder(&archived, "Archive").into_values().collect();
    assert_eq!(into, archive_mail);
    assert!(subscribed(&mailcow, user).contains(&"From the backup".to_string()));
    let rest: Messages = now
        .into_iter()
        .filter(|((f, _), _)| f != "From the backup")
        .collect();
    assert!(rest == before, "--into-folder changed another folder");

    // --to: the INBOX of this mailbox into another one's new folder, readable there.
    let ran = setup.restore(&[
        "--mailbox",
        user,
        "--folder",
        "INBOX",
        "--to",
        &other,
        "--yes",
    ]);
    show(&ran, "--to");
    assert_eq!(ran.code, 0);
    let theirs = messages(&mailcow, &other);
    let (restored, kept): (Messages, Messages) = theirs
        .into_iter()
        .partition(|((f, _), _)| f.starts_with("Restored "));
    assert!(
        kept == other_before,
        "--to changed the other mailbox's folders"
    );
    assert_eq!(
        without_keywords(restored),
        without_keywords(in_folder(&archived, "INBOX"))
    );

    // A domain merge: mail lost in a mailbox of a domain comes back.
    let (_, domain) = other.split_once('@').unwrap();
    doveadm(
        &mailcow,
        &["expunge", "-u", &other, "mailbox", "Sent", "all"],
    );
    let ran = setup.restore(&["--domain", domain, "--yes"]);
    show(&ran, "--domain");
    assert_eq!(ran.code, 0);
    same(
        &in_folder(&messages(&mailcow, &other), "Sent"),
        &in_folder(&other_before, "Sent"),
        "the domain merge",
    );
    all_running(&mailcow);
}

/// A mailcow of `elsewhere` generated mails spread over its mailboxes and `in_mailbox` more
/// (generated alike, in the same folders) in [`EXTRA_MAILBOX`], backed up; the archive's name.
fn with_a_big_mailbox(elsewhere: u32, in_mailbox: u32) -> (Mailcow, Setup, String) {
    let mailcow = Mailcow::create(elsewhere);
    let generated = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("python3")
        .arg(common::repo_root().join("tests/oracle/gen_maildir.py"))
        .args(["--mails", &in_mailbox.to_string(), "--seed", "11"])
        .arg(generated.path())
        .status()
        .unwrap();
    assert!(status.success());
    let maildir = mailcow
        .volume_dir("vmail-vol-1")
        .join(common::mailcow::home_of(EXTRA_MAILBOX))
        .join("Maildir");
    let moved = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "cd \"$1\" && for f in */*/Maildir/cur/* */*/Maildir/new/* */*/Maildir/.[!.]*/cur/*; do \
                 d=\"$2/${f#*/*/Maildir/}\"; mkdir -p \"${d%/*}\" && mv \"$f\" \"$d\" || exit 1; \
             done && chown -R 5000:5000 \"$2/../..\" && find \"$2/../..\" -type d -exec chmod 700 {} + \
             && find \"$2\" -type f -exec chmod 600 {} +",
        )
        .args(["-", generated.path().to_str().unwrap(), maildir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(moved.success());
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    let ran = setup.backup(&["--json"]).expect(0, "backup");
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let name = summary["archive"]["name"].as_str().unwrap().to_string();
    (mailcow, setup, name)
}

/// The number of messages dovecot counts in a folder.
fn count(mailcow: &Mailcow, user: &str, folder: &str) -> usize {
    let status = doveadm(
        mailcow,
        &["mailbox", "status", "-u", user, "messages", folder],
    );
    // `<folder> messages=<n>`
    let (_, n) = status.trim().rsplit_once("messages=").unwrap();
    n.parse().unwrap()
}

/// SIGKILL of a merge midway — of the command and of the helper that writes — leaves no
/// half-written message: what is in the folder's `cur` is each an archived file, whole (a cut
/// one is in `tmp/`, which dovecot ignores and cleans); the next merge completes, every
/// message once, and every service runs again.
#[test]
fn a_killed_merge_leaves_whole_messages_and_the_next_one_completes() {
    require!(Borg14, Sshd, Docker, Root);
    let (mailcow, setup, _) = with_a_big_mailbox(40, 8000);
    let user = EXTRA_MAILBOX;
    let folder = mailcow
        .volume_dir("vmail-vol-1")
        .join(common::mailcow::home_of(user))
        .join("Maildir/.Archive/cur");
    let saved = tempfile::tempdir().unwrap();
    common::mailcow::copy_into(&folder, saved.path());
    let archived = count(&mailcow, user, "Archive");
    assert!(archived > 1000, "{archived} mails in Archive");
    doveadm(
        &mailcow,
        &["mailbox", "delete", "-s", "-u", user, "Archive"],
    );

    let mut merge = setup
        .command(&["restore"], &["--mailbox", user, "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::mailcow::wait_until("the merge writing", || {
        std::fs::read_dir(&folder).is_ok_and(|d| d.count() > 0)
    });
    let label = format!("label=org.mailcow-borg.project={}", mailcow.project);
    for helper in common::mailcow::docker(&["ps", "-q", "--filter", &label]).split_whitespace() {
        let _ = std::process::Command::new("docker")
            .args(["kill", "-s", "KILL", helper])
            .output();
    }
    merge.kill().unwrap();
    merge.wait().unwrap();
    let written: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    eprintln!("killed with {} of {archived} mails in place", written.len());
    for file in &written {
        let name = file.file_name().unwrap();
        assert!(
            std::fs::read(file).unwrap() == std::fs::read(saved.path().join(name)).unwrap(),
            "{} is not the archived file",
            file.display()
        );
    }

    let ran = setup.restore(&["--mailbox", user, "--yes"]);
    show(&ran, "the merge after the killed one");
    assert_eq!(ran.code, 0);
    assert_eq!(count(&mailcow, user, "Archive"), archived);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), archived);
    all_running(&mailcow);
}

/// Not a test: `scripts/bench-merge.sh` runs it (release build) and it prints figures. The
/// issue's case: one mailbox holds a quarter of the archive's mails (`MCB_BENCH_MAILS`, 20,000
/// in the script); after the backup it lost a folder and received a week of new mail; the
/// whole merge command (reading the archive's summary and the live mailbox, the helper, the
/// resync) against `borg extract REPO::ARCHIVE vmail/<domain>/<user>` into an empty directory
/// (on a fresh file system), which does none of the merging. Alternating, in one run; before
/// each merge the folder is deleted again through dovecot.
#[test]
#[ignore]
fn benchmark_merge() {
    require!(Borg14, Sshd, Docker, Root);
    let (mails, rounds) = bench_size();
    let in_mailbox = mails / 4;
    let (mailcow, setup, name) = with_a_big_mailbox(mails - in_mailbox, in_mailbox);
    let user = EXTRA_MAILBOX;
    let archived = messages(&mailcow, user).len();
    // A week of new mail.
    let (code, _, err) = docker_exec(
        &mailcow.container("dovecot-mailcow"),
        &[
            "sh",
            "-c",
            "for i in $(seq 1 200); do \
                 printf 'Subject: new %s\\n\\nnew mail %s\\n' $i $i | /usr/bin/doveadm save -u user@example.org || exit 1; \
             done",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let lost = "Archive";
    let url = format!("{}::{name}", setup.sshd.url(&setup.repo));
    let mailbox_path = format!("vmail/{}", common::mailcow::home_of(user).display());
    let (mut merge, mut borg, mut back) = (vec![], vec![], 0);
    for _ in 0..rounds {
        doveadm(&mailcow, &["mailbox", "delete", "-s", "-u", user, lost]);
        let (seconds, ran) = timed(|| setup.restore(&["--mailbox", user, "--yes"]));
        show(&ran, "merge");
        assert_eq!(ran.code, 0);
        merge.push(seconds);
        back = in_folder(&messages(&mailcow, user), lost).len();
        let into = tempfile::tempdir().unwrap();
        let _fresh = FreshFs::at(into.path());
        borg.push(
            timed(|| {
                setup
                    .borg_over_ssh(into.path(), &["extract", &url, &mailbox_path])
                    .expect(0, "borg extract")
            })
            .0,
        );
    }
    assert_eq!(messages(&mailcow, user).len(), archived + 200);
    let (merge, borg) = (median(merge), median(borg));
    println!(
        "\n### {mails} mails, {in_mailbox} of them in {user} ({archived} with the delivered ones), {rounds} rounds (median)\n"
    );
    println!("| step | seconds | / borg extract |\n|---|---:|---:|");
    println!(
        "| borg extract of the mailbox (`{mailbox_path}`, empty directory on a fresh ext4) | {borg:.2} | 1.00 |"
    );
    println!(
        "| **merge restore** of the mailbox ({back} mails of folder {lost} back, 200 new kept; the whole command) | {merge:.2} | **{:.2}** |",
        merge / borg
    );
}
