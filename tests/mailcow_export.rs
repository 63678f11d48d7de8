//! `mailcow-borg export` end to end, in the real-dovecot world (mail encrypted on disk by
//! mail_crypt and compressed, a repository served by real borg 1.4.5 over a real sshd, the
//! real Docker engine): a mailbox exported as mbox parses with Python's `mailbox` module and
//! holds every message dovecot reads from the live mailbox; exported as a maildir it opens in
//! a fresh dovecot that has no keys; `--folder` and `--since` export what they select; the live volumes are byte for byte as before, nothing of
//! the export is left in Docker, and bad input is refused with one line, writing nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common;

use common::cli::{Ran, assert_same_tree};
use common::mailcow::{DOVECOT_IMAGE, Mail, Mailcow, docker, docker_exec, home_of};
use common::mailcow_repo::{
    SERVICES, Setup, VOLUMES, no_helper_left, says, show, snapshot, started_at,
};

const EXPORT_LABEL: &str = "org.mailcow-borg.export";

/// A mail that tests the mbox's quoting: lines starting with `From ` (after `>`s or not),
/// 8-bit text, no line end at its end; its envelope sender is not its `From`.
const TRICKY: &[u8] = "Return-Path: <bounce@example.net>\nFrom: Tricky <tricky@example.org>\nSubject: From lines\nMessage-ID: <tricky@example.org>\nDate: Wed, 2 Dec 2026 09:00:00 +0000\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nFrom the start of a line\n>From quoted once\n>>From quoted twice\nFromage is no From line\nGrüße ✉\nno line end at the end".as_bytes();

fn export(setup: &Setup, args: &[&str]) -> Ran {
    let ran = Ran::from(setup.command(&["export"], args).output().unwrap());
    show(&ran, &format!("export {}", args.join(" ")));
    ran
}

/// Line ends as LF, and the message's last line end(s) dropped: an mbox must end each message
/// with a line end, so one that had none gains one.
fn normalised(mail: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = String::from_utf8_lossy(mail)
        .replace("\r\n", "\n")
        .into_bytes();
    let end = text.iter().rposition(|b| *b != b'\n').map_or(0, |i| i + 1);
    text[..end].to_vec()
}

/// mboxrd's quoting undone: one `>` less on a line that is `>`s and `From `.
fn unquoted(mail: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in mail.split_inclusive(|b| *b == b'\n') {
        let quotes = line.iter().take_while(|b| **b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The messages of the mbox `path` as Python's `mailbox.mbox` reads them: (the `From ` line's
/// text, the message's bytes), in file order.
fn python_mbox(path: &Path) -> Vec<(String, Vec<u8>)> {
    let script = "import json, mailbox, sys\nbox = mailbox.mbox(sys.argv[1], create=False)\nprint(json.dumps([[box.get_message(k).get_from(), box.get_bytes(k).hex()] for k in box.keys()]))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 mailbox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(from, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (from, bytes)
        })
        .collect()
}

/// Every mail of `user` in the maildir tree `dir` as a fresh dovecot of the test image reads
/// it: no mail_crypt, no zlib, no keys; sorted as `read_all_mail` sorts.
fn read_with_fresh_dovecot(dir: &Path, user: &str) -> Vec<Mail> {
    let script = r#"cp -a /in /export && chown -R 5000:5000 /export && mkdir -p /tmp/run || exit 1
cat > /tmp/plain.conf <<'EOF'
protocols =
ssl = no
base_dir = /tmp/run
state_dir = /tmp/state
log_path = /dev/stderr
mail_location = maildir:/export:INDEX=MEMORY
mail_uid = 5000
mail_gid = 5000
first_valid_uid = 5000
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=5000 gid=5000 home=/tmp/home allow_all_users=yes
}
EOF
dovecot -c /tmp/plain.conf || exit 1
while [ ! -S /tmp/run/auth-userdb ]; do sleep 0.2; done
/usr/bin/doveadm -c /tmp/plain.conf -f json fetch -u "$0" 'mailbox text' all"#;
    let volume = format!("{}:/in:ro", dir.display());
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v", &volume])
        .args(["--entrypoint", "sh", DOVECOT_IMAGE, "-c", script, user])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("Error"),
        "fresh dovecot: {stderr}"
    );
    let fetched: Vec<std::collections::BTreeMap<String, String>> =
        serde_json::from_slice(&out.stdout).unwrap();
    let mut mails: Vec<Mail> = fetched
        .into_iter()
        .map(|mut m| {
            (
                m.remove("mailbox").unwrap(),
                m.remove("text").unwrap().into_bytes(),
            )
        })
        .collect();
    mails.sort();
    mails
}

/// The mail file names of a maildir's INBOX (or of the folder `dir` is).
fn inbox_files(dir: &Path) -> Vec<String> {
    ["cur", "new"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn modes(path: &Path, dirs: &mut Vec<u32>, files: &mut Vec<u32>) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    if path.is_dir() {
        dirs.push(mode);
        for entry in std::fs::read_dir(path).unwrap() {
            modes(&entry.unwrap().path(), dirs, files);
        }
    } else {
        files.push(mode);
    }
}

/// Nothing labelled as the export's is left, container or volume, and no helper.
fn nothing_left(mailcow: &Mailcow) {
    let label = format!("label={EXPORT_LABEL}={}", mailcow.project);
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &label]),
        "",
        "containers left"
    );
    assert_eq!(
        docker(&["volume", "ls", "-q", "--filter", &label]),
        "",
        "volumes left"
    );
    no_helper_left(mailcow);
}

#[test]
fn a_mailbox_exports_decrypted_as_mbox_and_maildir_and_bad_input_writes_nothing() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(150);
    mailcow.start();
    mailcow.fill_database();
    // The mailbox with the most generated mail in INBOX: their names date from 2023, the mail
    // delivered through dovecot is from today, so --since has mail on both sides.
    let user = mailcow
        .users
        .iter()
        .max_by_key(|u| inbox_files(&mailcow.maildir.join(home_of(u)).join("Maildir")).len())
        .unwrap()
        .clone();
    let dovecot = mailcow.container("dovecot-mailcow");
    let (code, _, err) = docker_exec(
        &dovecot,
        &[
            "/usr/bin/doveadm",
            "mailbox",
            "create",
            "-u",
            &user,
            "Tricky",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker_exec(
        &dovecot,
        &["/usr/bin/doveadm", "save", "-u", &user, "-m", "Tricky"],
        TRICKY,
    );
    assert_eq!(code, 0, "{err}");
    let live_mail = mailcow.read_all_mail(&user).unwrap();
    assert!(live_mail.iter().any(|(folder, _)| folder == "Tricky"));
    let live_maildir = mailcow
        .volume_dir("vmail-vol-1")
        .join(home_of(&user))
        .join("Maildir");
    let since_2026 = inbox_files(&live_maildir)
        .into_iter()
        .chain(inbox_files(&live_maildir.join(".Tricky")))
        .filter(|name| name.split('.').next().unwrap().parse::<i64>().unwrap() >= 1_767_225_600)
        .count();
    let setup = Setup::new(&mailcow);
    setup.backup(&[]).expect(0, "backup");
    let volumes = snapshot(&mailcow);
    let started: Vec<String> = SERVICES.iter().map(|s| started_at(&mailcow, s)).collect();
    let out = tempfile::tempdir().unwrap();
    let out_path = |name: &str| out.path().join(name).to_str().unwrap().to_string();

    // mbox: every message, once, as dovecot reads it from the live mailbox.
    let mbox = out_path("user.mbox");
    let ran = export(
        &setup,
        &["--mailbox", &user, "--format", "mbox", "-o", &mbox],
    )
    .expect(0, "export as mbox");
    says(
        &ran.stderr,
        &[&format!("exported {} messages", live_mail.len())],
    );
    assert_eq!(
        std::fs::metadata(&mbox).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let parsed = python_mbox(Path::new(&mbox));
    let mut exported: Vec<Vec<u8>> = parsed
        .iter()
        .map(|(_, mail)| normalised(&unquoted(mail)))
        .collect();
    let mut expected: Vec<Vec<u8>> = live_mail.iter().map(|(_, m)| normalised(m)).collect();
    exported.sort();
    expected.sort();
    assert_eq!(exported.len(), expected.len());
    assert!(
        exported == expected,
        "the mbox's messages differ from dovecot's"
    );
    // The quoting is in the file, and each From line names the sender and a date.
    let raw = std::fs::read(&mbox).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    says(
        &raw,
        &["\n>From the start of a line\n>>From quoted once\n>>>From quoted twice\nFromage"],
    );
    let tricky = parsed
        .iter()
        .find(|(_, m)| m.starts_with(b"Return-Path: <bounce@example.net>"))
        .unwrap();
    assert!(tricky.0.starts_with("bounce@example.net "), "{}", tricky.0);
    assert!(
        parsed
            .iter()
            .any(|(from, _)| from.starts_with("sender@example.org ")),
        "{parsed:?}"
    );
    for (from, _) in &parsed {
        let year = from.rsplit(' ').next().unwrap();
        assert!(year.len() == 4 && year.starts_with("20"), "{from}");
    }

    // maildir: opens in a fresh dovecot without the keys, every message in its folder.
    let maildir = out_path("user-maildir");
    export(
        &setup,
        &[
            "--mailbox",
            &user,
            "latest",
            "--format",
            "maildir",
            "-o",
            &maildir,
        ],
    )
    .expect(0, "export as maildir");
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    modes(Path::new(&maildir), &mut dirs, &mut files);
    assert!(dirs.iter().all(|m| *m == 0o700), "{dirs:?}");
    assert!(files.iter().all(|m| *m == 0o600), "{files:?}");
    let read = read_with_fresh_dovecot(Path::new(&maildir), &user);
    let normalise = |mails: &[Mail]| -> Vec<(String, Vec<u8>)> {
        let mut mails: Vec<(String, Vec<u8>)> = mails
            .iter()
            .map(|(folder, mail)| (folder.clone(), normalised(mail)))
            .collect();
        mails.sort();
        mails
    };
    assert!(
        normalise(&read) == normalise(&live_mail),
        "the maildir's messages differ from dovecot's: {} against {}",
        read.len(),
        live_mail.len()
    );

    // --folder and --since: INBOX and Tricky, only the mail delivered since 2026.
    let filtered = out_path("filtered.mbox");
    export(
        &setup,
        &[
            "--mailbox",
            &user,
            "--folder",
            "INBOX",
            "--folder",
            "Tricky",
            "--since",
            "2026-01-01",
            "--format",
            "mbox",
            "-o",
            &filtered,
        ],
    )
    .expect(0, "export of two folders since 2026");
    let in_folders: Vec<Vec<u8>> = live_mail
        .iter()
        .filter(|(folder, _)| folder == "INBOX" || folder == "Tricky")
        .map(|(_, m)| normalised(m))
        .collect();
    let parsed_filtered = python_mbox(Path::new(&filtered));
    assert_eq!(parsed_filtered.len(), since_2026);
    assert!(
        // The mail delivered into INBOX and the tricky one, but not the generated mail.
        since_2026 > 1 && since_2026 < in_folders.len(),
        "{since_2026} of {} mails: the filter must keep some and leave out some",
        in_folders.len()
    );
    for (_, mail) in &parsed_filtered {
        assert!(in_folders.contains(&normalised(&unquoted(mail))));
    }

    // Bad input: one line, exit 2, nothing written.
    let before: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    let refused = |args: &[&str], says_what: &str| {
        let ran = export(&setup, args).expect(2, says_what);
        let lines: Vec<&str> = ran
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{}", ran.stderr);
        says(lines[0], &[says_what]);
    };
    let fresh = out_path("fresh.mbox");
    refused(
        &["--mailbox", &user, "--format", "mbox", "-o", &mbox],
        "exists: export never writes over anything",
    );
    refused(
        &[
            "--mailbox",
            "nobody@domain0.test",
            "--format",
            "mbox",
            "-o",
            &fresh,
        ],
        "holds no vmail/domain0.test/nobody",
    );
    refused(
        &["--mailbox", "nobody", "--format", "mbox", "-o", &fresh],
        "is not a mailbox",
    );
    refused(
        &[
            "--mailbox",
            &user,
            "--folder",
            "NoSuch",
            "--format",
            "mbox",
            "-o",
            &fresh,
        ],
        "holds no folder \"NoSuch\"",
    );
    refused(
        &[
            "--mailbox",
            &user,
            "--since",
            "yesterday",
            "--format",
            "mbox",
            "-o",
            &fresh,
        ],
        "date \"yesterday\" is neither",
    );
    refused(
        &["--mailbox", &user, "--format", "pst", "-o", &fresh],
        "give mbox or maildir",
    );
    refused(
        &[
            "--mailbox",
            &user,
            "--format",
            "mbox",
            "-o",
            &out_path("no/such/dir"),
        ],
        "no such directory",
    );
    // The helper that reads the archive says why first, then the export its line.
    let ran = export(
        &setup,
        &[
            "--mailbox",
            &user,
            "no-such-archive",
            "--format",
            "mbox",
            "-o",
            &fresh,
        ],
    )
    .expect(2, "an archive that does not exist");
    says(&ran.stderr, &["no-such-archive"]);
    let ran = export(
        &setup,
        &[
            "--mailbox",
            &user,
            "--format",
            "mbox",
            "-o",
            &fresh,
            "--dry-run",
        ],
    )
    .expect(0, "dry run");
    says(
        &ran.stderr,
        &["dry run: would export", "nothing was written"],
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        before.len(),
        "something was written"
    );
    assert_eq!(
        std::fs::read_to_string(&mbox).unwrap(),
        raw,
        "the existing output was changed"
    );

    // The live mailcow: as it was, nothing restarted, nothing of the export left.
    nothing_left(&mailcow);
    for (volume, name) in VOLUMES {
        assert_same_tree(
            &volumes.path().join(name),
            &mailcow.volume_dir(volume),
            name,
        );
    }
    let now: Vec<String> = SERVICES.iter().map(|s| started_at(&mailcow, s)).collect();
    assert_eq!(now, started, "a service was restarted");
}

/// Not a test: `scripts/bench-export.sh` runs it (release build) and it prints figures. The
/// export of one mailbox that holds a quarter of the archive's mail (domain0.test's generated
/// mail, all moved into user0's folders before the backup) as mbox and as maildir — the whole
/// command: reading the archive's summary, the helper's restore into the scratch volume, the
/// throwaway dovecot's plain copy, the copy out and the write — against `borg extract
/// REPO::ARCHIVE vmail/domain0.test/user0` into an empty directory, which neither decrypts
/// nor writes anything a person can open; both over the same loopback sshd and `borg serve`
/// 1.4.5, alternating, in one run, each into a fresh file system of its own.
#[test]
#[ignore]
fn benchmark_export() {
    require!(Borg14, Sshd, Docker, Root);
    use crate::common::mailcow_repo::FreshFs;
    use common::mailcow_repo::{bench_size, median, timed};
    let (mails, rounds) = bench_size();
    let mailcow = Mailcow::create(mails);
    let domain = mailcow.volume_dir("vmail-vol-1").join("domain0.test");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "cd \"$0\" && for u in user*; do [ \"$u\" = user0 ] && continue; \
             (cd \"$u/Maildir\" && find . -path ./tmp -prune -o -type f -print | while read -r f; do \
                 mkdir -p \"../../user0/Maildir/$(dirname \"$f\")\" && mv \"$f\" \"../../user0/Maildir/$f\"; done) || exit 1; \
             done; chown -R 5000:5000 user0",
        )
        .arg(&domain)
        .status()
        .unwrap();
    assert!(status.success(), "moving domain0.test's mail into user0");
    mailcow.start();
    mailcow.fill_database();
    let user = "user0@domain0.test";
    let maildir = domain.join("user0/Maildir");
    let in_mailbox: usize = std::fs::read_dir(&maildir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .chain([maildir.clone()])
        .map(|folder| inbox_files(&folder).len())
        .sum();
    let setup = Setup::new(&mailcow);
    let ran = setup.backup(&["--json"]).expect(0, "backup");
    let summary: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let name = summary["archive"]["name"].as_str().unwrap().to_string();
    let url = format!("{}::{name}", setup.sshd.url(&setup.repo));
    let (mut borg, mut mbox, mut maildir) = (vec![], vec![], vec![]);
    let mut steps = String::new();
    for _ in 0..rounds {
        let into = tempfile::tempdir().unwrap();
        let _fresh = FreshFs::at(into.path());
        borg.push(
            timed(|| {
                setup
                    .borg_over_ssh(into.path(), &["extract", &url, "vmail/domain0.test/user0"])
                    .expect(0, "borg extract")
            })
            .0,
        );
        for (format, times) in [("mbox", &mut mbox), ("maildir", &mut maildir)] {
            let into = tempfile::tempdir().unwrap();
            let _fresh = FreshFs::at(into.path());
            let output = into.path().join("export");
            let args = [
                "--mailbox",
                user,
                &name,
                "--format",
                format,
                "-o",
                output.to_str().unwrap(),
            ];
            let (seconds, ran) = timed(|| {
                Ran::from(setup.command(&["export"], &args).output().unwrap()).expect(0, "export")
            });
            times.push(seconds);
            steps = ran.stderr;
        }
    }
    let (borg, mbox, maildir) = (median(borg), median(mbox), median(maildir));
    println!(
        "\n### one mailbox of {in_mailbox} mails in an archive of {mails} (plus the delivered ones), {rounds} rounds (median)\n"
    );
    println!("| command | seconds | / borg extract |\n|---|---:|---:|");
    println!(
        "| `borg extract REPO::ARCHIVE vmail/domain0.test/user0` (host, empty directory) | {borg:.2} | 1.00 |"
    );
    println!(
        "| **`export --format mbox`** (whole command) | {mbox:.2} | **{:.2}** |",
        mbox / borg
    );
    println!(
        "| **`export --format maildir`** (whole command) | {maildir:.2} | **{:.2}** |",
        maildir / borg
    );
    println!("\nThe last export's steps:\n\n```\n{steps}```");
}
