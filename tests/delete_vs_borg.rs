//! `delete` and `compact` against real borg 1.4.5 on twin repositories: one repository, archives
//! by both tools, copied; our delete + compact on one copy, borg's on the other. The same
//! archives must be left, the same lines printed, `borg check --verify-data` must find nothing
//! wrong (no orphans, nothing missing) in ours, archives written by borg after ours must keep
//! every chunk, and our copy must take no more space than borg's.

use crate::common;

use std::path::{Path, PathBuf};

use common::cli::{Ran, World};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-delete-test";

/// Version `v` of a source tree: 12 files of which each version replaces three, so every archive
/// has chunks of its own and shares the rest.
fn write_version(dir: &Path, v: u64) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir.join("mail")).unwrap();
    for i in 0..12u64 {
        let generation = if i < 3 * v.min(4) { v * 100 + i } else { i };
        std::fs::write(
            dir.join(format!("mail/m{i:02}")),
            common::noise(generation, 40_000 + (i as usize) * 3_000),
        )
        .unwrap();
    }
}

/// Our world and borg's, each with its own base dir (caches, security dirs) and its own copy.
struct Twins {
    _sshd: Sshd,
    work: tempfile::TempDir,
    ours: World,
    theirs: World,
    repo_ours: PathBuf,
    repo_theirs: PathBuf,
    url_ours: String,
    source: PathBuf,
}

/// Archives `b1` (borg), `o1` (ours), `b2`, `o2`, `b3` (borg, after ours) of tree versions 1–5,
/// in `mode`; then the repository and the base dir copied.
fn twins(mode: &str) -> Twins {
    let sshd = Sshd::start();
    let ours = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let repo_ours = work.path().join("repo-ours");
    let borg = common::borg14();
    write_version(&source, 1);
    ours.borg_init(&borg, work.path(), mode, &repo_ours);
    let url_ours = sshd.url(&repo_ours);
    let repo_arg = repo_ours.to_str().unwrap();
    for (v, name, by_borg) in [
        (1, "b1", true),
        (2, "o1", false),
        (3, "b2", true),
        (4, "o2", false),
        (5, "b3", true),
    ] {
        write_version(&source, v);
        let ran = if by_borg {
            ours.borg(
                &borg,
                &source,
                &["create", &format!("{repo_arg}::{name}"), "."],
            )
        } else {
            ours.ours(
                &source,
                &["create", &format!("{url_ours}::{name}"), "."],
                &[],
            )
        };
        ran.expect(0, &format!("create {name}"));
    }
    let repo_theirs = work.path().join("repo-theirs");
    common::copy_tree(&repo_ours, &repo_theirs);
    let theirs = World::new(PASSPHRASE);
    common::copy_tree(ours.base.path(), theirs.base.path());
    Twins {
        _sshd: sshd,
        work,
        ours,
        theirs,
        repo_ours,
        repo_theirs,
        url_ours,
        source,
    }
}

impl Twins {
    fn borg_theirs(&self, args: &[&str]) -> Ran {
        self.theirs.borg(&common::borg14(), self.work.path(), args)
    }

    fn borg_ours(&self, args: &[&str]) -> Ran {
        self.ours.borg(&common::borg14(), self.work.path(), args)
    }

    fn ours(&self, args: &[&str]) -> Ran {
        self.ours.ours(self.work.path(), args, &[])
    }

    fn theirs_arg(&self) -> &str {
        self.repo_theirs.to_str().unwrap()
    }

    fn ours_arg(&self) -> &str {
        self.repo_ours.to_str().unwrap()
    }

    /// The archive names borg lists in a repository.
    fn names(&self, repo: &str) -> Vec<String> {
        let world = if repo == self.theirs_arg() {
            &self.theirs
        } else {
            &self.ours
        };
        world
            .borg(
                &common::borg14(),
                self.work.path(),
                &["list", "--short", repo],
            )
            .expect(0, "borg list")
            .stdout_text()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `borg check --verify-data` of our copy: exit 0 and nothing reported.
    fn assert_checks_clean(&self, what: &str) {
        let ran = self
            .borg_ours(&["check", "--verify-data", self.ours_arg()])
            .expect(0, &format!("borg check --verify-data after {what}"));
        assert!(
            !ran.stderr.contains("orphan") && !ran.stderr.contains("missing"),
            "borg check after {what}:\n{}",
            ran.stderr
        );
    }

    /// `borg extract` of `archive` from our copy equals tree version `v`.
    fn assert_extracts(&self, archive: &str, v: u64) {
        write_version(&self.source, v);
        let target = self.work.path().join(format!("extract-{archive}"));
        std::fs::create_dir_all(&target).unwrap();
        self.ours
            .borg(
                &common::borg14(),
                &target,
                &["extract", &format!("{}::{archive}", self.ours_arg())],
            )
            .expect(0, &format!("borg extract {archive}"));
        // Contents only: the source was rewritten since, with new times.
        for i in 0..12 {
            let file = format!("mail/m{i:02}");
            assert!(
                std::fs::read(self.source.join(&file)).unwrap()
                    == std::fs::read(target.join(&file)).unwrap(),
                "{archive}: {file} differs"
            );
        }
    }
}

fn bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_on_disk(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// The lines of a command's stderr that the tools should agree on: not the servers' (`Remote:
/// ...`), nor borg's question about the copy being a moved repository (the twin's cache and
/// security dir remember the original's location, which is the point of sharing them).
fn own_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            !l.starts_with("Remote:")
                && !l.starts_with("Warning: The repository at location")
                && !l.starts_with("Do you want to continue? [yN] yes")
        })
        .collect()
}

#[test]
fn delete_and_compact_leave_what_borgs_leave_and_borg_checks_clean() {
    require!(Borg14, Sshd);
    let t = twins("repokey-blake2");

    // Delete one archive of each tool's; --list and --stats print what borg prints.
    let ours = t
        .ours(&[
            "delete",
            "--list",
            "--stats",
            &format!("{}::b2", t.url_ours),
            "o1",
        ])
        .expect(0, "our delete");
    let theirs = t
        .borg_theirs(&[
            "delete",
            "--list",
            "--stats",
            &format!("{}::b2", t.theirs_arg()),
            "o1",
        ])
        .expect(0, "borg delete");
    assert_eq!(
        own_lines(&ours.stderr),
        own_lines(&theirs.stderr),
        "delete --list --stats"
    );
    assert_eq!(t.names(t.ours_arg()), ["b1", "o2", "b3"]);
    assert_eq!(t.names(t.ours_arg()), t.names(t.theirs_arg()));
    t.assert_checks_clean("delete");

    // Compacting frees the space; -v shows the server's report.
    let before = bytes_on_disk(&t.repo_ours);
    let ran = t
        .ours(&["compact", "-v", &t.url_ours])
        .expect(0, "our compact");
    assert!(
        ran.stderr.contains("compaction freed about"),
        "compact -v:\n{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("append-only"), "{}", ran.stderr);
    t.borg_theirs(&["compact", t.theirs_arg()])
        .expect(0, "borg compact");
    let (ours_size, theirs_size) = (bytes_on_disk(&t.repo_ours), bytes_on_disk(&t.repo_theirs));
    assert!(
        ours_size < before,
        "compact freed nothing: {before} → {ours_size}"
    );
    assert!(
        ours_size as f64 <= theirs_size as f64 * 1.03,
        "ours {ours_size} bytes, borg's {theirs_size}"
    );
    t.assert_checks_clean("compact");

    // Our o2 goes; borg's b3, written after it, shares most of its chunks and keeps them all.
    t.ours(&["delete", &format!("{}::o2", t.url_ours)])
        .expect(0, "our delete o2");
    t.ours(&["compact", &t.url_ours]).expect(0, "our compact");
    t.assert_checks_clean("deleting o2");
    t.assert_extracts("b3", 5);
    t.assert_extracts("b1", 1);
}

#[test]
fn archive_selection_and_refusals_match_borg() {
    require!(Borg14, Sshd);
    let t = twins("repokey");
    let url = &t.url_ours;
    // Dry runs change nothing, so both tools see the same repository.
    for args in [
        vec!["--dry-run", "--list", "-a", "o*"],
        vec!["--dry-run", "--list", "--first", "2"],
        vec!["--dry-run", "--list", "--last", "2"],
        vec!["--dry-run", "--list", "-a", "b*", "--last", "1"],
    ] {
        let mut ours_args = vec!["delete"];
        ours_args.extend(&args);
        ours_args.push(url);
        let mut theirs_args = vec!["delete"];
        theirs_args.extend(&args);
        theirs_args.push(t.ours_arg());
        let ours = t.ours(&ours_args).expect(0, &format!("ours {args:?}"));
        let theirs = t
            .borg_ours(&theirs_args)
            .expect(0, &format!("borg {args:?}"));
        assert_eq!(ours.stderr, theirs.stderr, "{args:?}");
        assert!(!ours.stderr.is_empty(), "{args:?} listed nothing");
    }

    // An unknown archive: a warning line per name, rc 1, the others deleted.
    let ours = t.ours(&["delete", "--list", &format!("{url}::nope"), "b1"]);
    let theirs = t.borg_theirs(&[
        "delete",
        "--list",
        &format!("{}::nope", t.theirs_arg()),
        "b1",
    ]);
    assert_eq!((ours.code, theirs.code), (1, 1), "{}", ours.stderr);
    assert_eq!(own_lines(&ours.stderr), own_lines(&theirs.stderr));
    assert_eq!(t.names(t.ours_arg()), ["o1", "b2", "o2", "b3"]);

    // Names and filters mixed; no archive at all (a whole repository: borg's job).
    let mixed = t.ours(&["delete", &format!("{url}::b2"), "-a", "o*"]);
    assert_eq!(mixed.code, 2);
    assert_eq!(
        mixed.stderr.trim_end(),
        "mailcow-borg: error: Mixing archive filters and explicitly named archives is not supported."
    );
    let whole = t.ours(&["delete", url]);
    assert_eq!(whole.code, 2);
    assert_eq!(whole.stderr.lines().count(), 1, "{}", whole.stderr);
    assert!(
        whole.stderr.contains("borg delete REPO"),
        "{}",
        whole.stderr
    );
    assert_eq!(t.names(t.ours_arg()), ["o1", "b2", "o2", "b3"]);
    // A wrong passphrase: refused before anything is read.
    let wrong = t.ours.ours(
        t.work.path(),
        &["delete", &format!("{url}::b2")],
        &[("BORG_PASSPHRASE", "wrong")],
    );
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert_eq!(wrong.stderr.lines().count(), 1, "{}", wrong.stderr);
    assert_eq!(t.names(t.ours_arg()), ["o1", "b2", "o2", "b3"]);
}

#[test]
fn append_only_repositories_keep_the_data_and_compact_says_so() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let repo = work.path().join("repo");
    let borg = common::borg14();
    world
        .borg(
            &borg,
            work.path(),
            &[
                "init",
                "-e",
                "repokey",
                "--append-only",
                repo.to_str().unwrap(),
            ],
        )
        .expect(0, "borg init --append-only");
    let url = sshd.url(&repo);
    for v in 1..=2 {
        write_version(&source, v);
        world
            .ours(&source, &["create", &format!("{url}::a{v}"), "."], &[])
            .expect(0, "our create");
    }
    let before = bytes_on_disk(&repo);
    world
        .ours(work.path(), &["delete", &format!("{url}::a1")], &[])
        .expect(0, "our delete");
    let ran = world
        .ours(work.path(), &["compact", &url], &[])
        .expect(0, "our compact");
    assert!(ran.stderr.contains("append-only"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(bytes_on_disk(&repo) >= before, "append-only data went away");
    let listed = world
        .borg(
            &borg,
            work.path(),
            &["list", "--short", repo.to_str().unwrap()],
        )
        .expect(0, "borg list");
    assert_eq!(listed.stdout_text(), "a2\n");
    world
        .borg(&borg, work.path(), &["check", repo.to_str().unwrap()])
        .expect(0, "borg check");
}

#[test]
fn delete_and_compact_work_through_a_borg_12_server() {
    require!(Borg14, Borg12, Sshd);
    let t = twins("repokey");
    let server = common::borg12();
    let server = server.to_str().unwrap();
    let through_12 = |args: &[&str]| {
        t.ours
            .ours(t.work.path(), args, &[("BORG_REMOTE_PATH", server)])
    };
    through_12(&["delete", "--stats", &format!("{}::b2", t.url_ours), "o1"])
        .expect(0, "our delete through a 1.2 server");
    let ran = through_12(&["compact", "-v", &t.url_ours]).expect(0, "our compact through 1.2");
    assert!(
        ran.stderr.contains("compaction freed about"),
        "{}",
        ran.stderr
    );
    assert_eq!(t.names(t.ours_arg()), ["b1", "o2", "b3"]);
    t.assert_checks_clean("delete and compact through a 1.2 server");
    t.assert_extracts("b3", 5);
}
