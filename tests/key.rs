//! `key export`, `key import` and `key change-passphrase` against real borg: repositories made
//! by `borg init` (1.4.5), reached over a real sshd or as local paths; our exports are borg's
//! bytes, each tool imports the other's backups (plain and paper), and after every import or
//! passphrase change both tools open the repository with the passphrase they should, and only
//! with it.

use crate::common;

use std::path::{Path, PathBuf};

use common::cli::{Ran, World, assert_refused, run_with_stdin};
use common::sshd::Sshd;

const OLD: &str = "mcb-key-old";
const NEW: &str = "mcb-key-new";

/// A repository made by borg 1.4.5 in `mode` at `<dir>/<name>`, with one small archive, and
/// the working directory for the commands.
fn borg_repo(world: &World, dir: &Path, name: &str, mode: &str) -> PathBuf {
    let source = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("file"), format!("data of {name}")).unwrap();
    let repo = dir.join(name);
    world.borg_repo(&common::borg14(), mode, &repo, &source, "a1");
    repo
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

fn ours(world: &World, dir: &Path, args: &[&str]) -> Ran {
    world.ours(dir, args, &[])
}

fn borg(world: &World, dir: &Path, args: &[&str]) -> Ran {
    world.borg(&common::borg14(), dir, args)
}

/// Both tools list the repository with `passphrase`, and neither with `wrong`.
fn both_open_only_with(world: &World, dir: &Path, repo: &str, passphrase: &str, wrong: &str) {
    for (pass, ok) in [(passphrase, true), (wrong, false)] {
        let env = [("BORG_PASSPHRASE", pass)];
        let theirs = world.borg_env(&common::borg14(), dir, &["list", "--short", repo], &env);
        let mine = world.ours(dir, &["list", "--short", repo], &env);
        if ok {
            assert_eq!(theirs.expect(0, "borg list").stdout_text(), "a1\n");
            assert_eq!(mine.expect(0, "our list").stdout_text(), "a1\n");
        } else {
            theirs.expect(2, "borg list with the wrong passphrase");
            assert_refused(mine, &["passphrase"], "our list with the wrong passphrase");
        }
    }
}

fn key_files(world: &World) -> Vec<PathBuf> {
    let dir = world.base.path().join(".config/borg/keys");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The three export forms, byte for byte borg's, over SSH and locally, for every key mode that
/// has a key; `none` refused by both.
#[test]
fn exports_are_borgs_bytes() {
    require!(Borg14, Borg12, Sshd);
    let sshd = Sshd::start();
    let world = World::new(OLD).with_ssh(&sshd);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (mode, over_ssh) in [
        ("repokey", true),
        ("keyfile", true),
        ("repokey-blake2", false),
        ("keyfile-blake2", false),
        ("authenticated", false),
    ] {
        let repo = borg_repo(&world, d, mode, mode);
        let ours_repo = if over_ssh {
            sshd.url(&repo)
        } else {
            s(&repo).to_string()
        };
        for form in [None, Some("--paper")] {
            let mut args = vec!["key", "export"];
            args.extend(form);
            let theirs =
                borg(&world, d, &[&args[..], &[s(&repo)]].concat()).expect(0, "borg export");
            let mine = ours(&world, d, &[&args[..], &[&ours_repo]].concat()).expect(0, mode);
            assert_eq!(mine.stdout_text(), theirs.stdout_text(), "{mode} {form:?}");
            if form.is_none() {
                assert!(mine.stdout_text().starts_with("BORG_KEY "), "{mode}");
            }
            // Debian's borg 1.2 writes the same plain and paper exports.
            let old = world.borg(&common::borg12(), d, &[&args[..], &[s(&repo)]].concat());
            assert_eq!(
                old.expect(0, "borg 1.2 export").stdout,
                mine.stdout,
                "{mode} 1.2"
            );
        }
        // --qr-html into a file: borg 1.4.5's page (1.2's template differs in comment words).
        let (theirs, mine) = (
            d.join(format!("{mode}-borg.html")),
            d.join(format!("{mode}-ours.html")),
        );
        borg(
            &world,
            d,
            &["key", "export", "--qr-html", s(&repo), s(&theirs)],
        )
        .expect(0, "borg qr");
        ours(
            &world,
            d,
            &["key", "export", "--qr-html", &ours_repo, s(&mine)],
        )
        .expect(0, "our qr");
        assert_eq!(
            std::fs::read(&mine).unwrap(),
            std::fs::read(&theirs).unwrap(),
            "{mode} qr-html"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&mine).unwrap().mode() & 0o077,
            0,
            "{mode}: a private file"
        );
    }
    // An existing file is overwritten, a directory refused, as by borg.
    let repo = d.join("repokey");
    let out = d.join("out.key");
    std::fs::write(&out, "old content that is longer than nothing").unwrap();
    ours(&world, d, &["key", "export", s(&repo), s(&out)]).expect(0, "export over a file");
    let plain = borg(&world, d, &["key", "export", s(&repo)]).stdout;
    assert_eq!(std::fs::read(&out).unwrap(), plain);
    let theirs = borg(&world, d, &["key", "export", s(&repo), s(d)]);
    assert!(
        theirs
            .expect(2, "borg export to a dir")
            .stderr
            .contains("must be a file, not a directory")
    );
    assert_refused(
        ours(&world, d, &["key", "export", s(&repo), s(d)]),
        &["must be a file, not a directory"],
        "our export to a directory",
    );
    // Mode none has no key: borg's rc 2 (46 in modern mode), ours 2.
    let none = borg_repo(&world, d, "none", "none");
    borg(&world, d, &["key", "export", s(&none)]).expect(2, "borg export of none");
    assert_refused(
        ours(&world, d, &["key", "export", s(&none)]),
        &["not encrypted"],
        "export of none",
    );
    assert_refused(
        world.ours(
            d,
            &["key", "change-passphrase", s(&none)],
            &[("BORG_NEW_PASSPHRASE", NEW)],
        ),
        &["not encrypted"],
        "change-passphrase of none",
    );
}

/// Puts `repo`'s key out of reach of `OLD` with borg's own change-passphrase.
fn borg_rekeys(world: &World, dir: &Path, repo: &Path) {
    world
        .borg_env(
            &common::borg14(),
            dir,
            &["key", "change-passphrase", s(repo)],
            &[("BORG_NEW_PASSPHRASE", NEW)],
        )
        .expect(0, "borg change-passphrase");
}

/// A repokey repository, over SSH: its key re-protected by borg, then put back from a backup
/// made under the old passphrase — ours imported by us and by borg, borg's imported by us — in
/// the plain and the paper form, the paper form piped in; after each, both tools open it with
/// the old passphrase and not the new one.
#[test]
fn repokey_imports_cross_both_ways() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let world = World::new(OLD).with_ssh(&sshd);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = borg_repo(&world, d, "repo", "repokey-blake2");
    let url = sshd.url(&repo);
    let exported = |args: &[&str], name: &str| {
        let path = d.join(name);
        std::fs::write(&path, ours(&world, d, args).expect(0, name).stdout).unwrap();
        path
    };
    let our_plain = exported(&["key", "export", &url], "ours.key");
    let our_paper = exported(&["key", "export", "--paper", &url], "ours.paper");
    let borg_plain = d.join("borg.key");
    borg(&world, d, &["key", "export", s(&repo), s(&borg_plain)]).expect(0, "borg export");
    let borg_paper = borg(&world, d, &["key", "export", "--paper", s(&repo)])
        .expect(0, "paper")
        .stdout;

    // We import our plain backup, then borg's, from a file and from stdin.
    for (what, file) in [("ours", &our_plain), ("borg's", &borg_plain)] {
        borg_rekeys(&world, d, &repo);
        both_open_only_with(&world, d, s(&repo), NEW, OLD);
        ours(&world, d, &["key", "import", &url, s(file)]).expect(0, what);
        both_open_only_with(&world, d, s(&repo), OLD, NEW);
    }
    borg_rekeys(&world, d, &repo);
    let piped = world.ours_command(d, &["key", "import", &url, "-"], &[]);
    run_with_stdin(piped, &std::fs::read(&our_plain).unwrap()).expect(0, "import from stdin");
    both_open_only_with(&world, d, s(&repo), OLD, NEW);

    // Borg imports our plain backup.
    borg_rekeys(&world, d, &repo);
    borg(&world, d, &["key", "import", s(&repo), s(&our_plain)]).expect(0, "borg imports ours");
    both_open_only_with(&world, d, s(&repo), OLD, NEW);

    // We take borg's paper key piped in: the export itself, and the answers alone.
    let answers: String = String::from_utf8(borg_paper.clone())
        .unwrap()
        .lines()
        .skip(3)
        .map(|l| format!("{}\n", l.split_once(": ").unwrap().1))
        .collect();
    for input in [borg_paper.clone(), answers.into_bytes()] {
        borg_rekeys(&world, d, &repo);
        let command = world.ours_command(d, &["key", "import", "--paper", &url], &[]);
        run_with_stdin(command, &input).expect(0, "our paper import");
        both_open_only_with(&world, d, s(&repo), OLD, NEW);
    }
    // Borg takes our paper key, typed (piped) at its prompts.
    let our_answers: String = std::fs::read_to_string(&our_paper)
        .unwrap()
        .lines()
        .skip(3)
        .map(|l| format!("{}\n", l.split_once(": ").unwrap().1))
        .collect();
    borg_rekeys(&world, d, &repo);
    let command = world.borg_command(
        &common::borg14(),
        d,
        &["key", "import", "--paper", s(&repo)],
        &[],
    );
    let ran = run_with_stdin(command, our_answers.as_bytes()).expect(0, "borg paper import");
    assert!(
        !ran.stdout_text().contains("aborted"),
        "{}",
        ran.stdout_text()
    );
    both_open_only_with(&world, d, s(&repo), OLD, NEW);
}

/// A keyfile repository: its key file lost, put back by us (under the name borg gives a new
/// key file) from our backup and from borg's, and by borg from ours.
#[test]
fn keyfile_imports_cross_both_ways() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let world = World::new(OLD).with_ssh(&sshd);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = borg_repo(&world, d, "repo", "keyfile");
    let [borg_file] = &key_files(&world)[..] else {
        panic!("one key file");
    };
    let borg_file = borg_file.clone();
    let borg_content = std::fs::read(&borg_file).unwrap();
    let our_plain = d.join("ours.key");
    ours(&world, d, &["key", "export", s(&repo), s(&our_plain)]).expect(0, "export");
    let our_paper = ours(&world, d, &["key", "export", "--paper", &sshd.url(&repo)])
        .expect(0, "paper")
        .stdout;

    // We import our plain and paper backups, borg imports ours; each time the file is borg's,
    // under borg's name for it.
    for step in ["ours", "ours-paper", "borg"] {
        std::fs::remove_file(&borg_file).unwrap();
        assert_refused(
            ours(&world, d, &["list", s(&repo)]),
            &["no key file"],
            "key file gone",
        );
        match step {
            "ours" => {
                ours(&world, d, &["key", "import", s(&repo), s(&our_plain)]).expect(0, step);
            }
            "ours-paper" => {
                let command = world.ours_command(d, &["key", "import", "--paper", s(&repo)], &[]);
                run_with_stdin(command, &our_paper).expect(0, step);
            }
            _ => {
                borg(&world, d, &["key", "import", s(&repo), s(&our_plain)]).expect(0, step);
            }
        }
        assert_eq!(key_files(&world), vec![borg_file.clone()], "{step}");
        assert_eq!(std::fs::read(&borg_file).unwrap(), borg_content, "{step}");
        both_open_only_with(&world, d, s(&repo), OLD, NEW);
    }
    // Over SSH the new file is named after the SSH location, as borg names it.
    std::fs::remove_file(&borg_file).unwrap();
    ours(
        &world,
        d,
        &["key", "import", &sshd.url(&repo), s(&our_plain)],
    )
    .expect(0, "over SSH");
    let [ssh_file] = &key_files(&world)[..] else {
        panic!("one key file");
    };
    let name = ssh_file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("127_0_0_1__"), "{name}");
    assert_eq!(std::fs::read(ssh_file).unwrap(), borg_content);
    both_open_only_with(&world, d, s(&repo), OLD, NEW);
    std::fs::rename(ssh_file, &borg_file).unwrap();

    // A damaged key file that names the repository is replaced, not joined by a second one.
    std::fs::write(
        &borg_file,
        format!(
            "{}\ngarbage\n",
            String::from_utf8_lossy(&borg_content)
                .lines()
                .next()
                .unwrap()
        ),
    )
    .unwrap();
    ours(&world, d, &["key", "import", s(&repo), s(&our_plain)]).expect(0, "over a damaged file");
    assert_eq!(key_files(&world), vec![borg_file.clone()]);
    both_open_only_with(&world, d, s(&repo), OLD, NEW);
}

/// Our change-passphrase, for a repokey repository over SSH and a keyfile one: borg then opens
/// with the new passphrase and not the old; `-v` says what borg says; with no new passphrase
/// and no terminal, a clear refusal and nothing changed.
#[test]
fn change_passphrase_is_seen_by_borg() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let world = World::new(OLD).with_ssh(&sshd);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for mode in ["repokey", "keyfile-blake2", "authenticated"] {
        let repo = borg_repo(&world, d, mode, mode);
        let url = sshd.url(&repo);
        let before = borg(&world, d, &["key", "export", s(&repo)]).stdout;
        let command = world.ours_command(d, &["key", "change-passphrase", &url], &[]);
        let ran = run_with_stdin(command, b"");
        assert_refused(ran, &["BORG_NEW_PASSPHRASE"], "no new passphrase");
        assert_eq!(borg(&world, d, &["key", "export", s(&repo)]).stdout, before);

        let ran = world
            .ours(
                d,
                &["key", "change-passphrase", "-v", &url],
                &[("BORG_NEW_PASSPHRASE", NEW)],
            )
            .expect(0, mode);
        let header = String::from_utf8_lossy(&before)
            .lines()
            .next()
            .unwrap()
            .to_string();
        let key_file = key_files(&world)
            .into_iter()
            .find(|f| std::fs::read_to_string(f).unwrap().starts_with(&header));
        let location = match key_file {
            Some(file) => {
                use std::os::unix::fs::MetadataExt;
                assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o077, 0);
                file.display().to_string()
            }
            None => url.clone(),
        };
        assert_eq!(
            ran.stderr,
            format!("Key updated\nKey location: {location}\n"),
            "{mode}"
        );
        assert_ne!(
            borg(&world, d, &["key", "export", s(&repo)]).stdout,
            before,
            "{mode}: re-sealed"
        );
        both_open_only_with(&world, d, s(&repo), NEW, OLD);
    }
}

/// Backups of another repository, or no backups at all, are refused by both tools with exit
/// 2, and nothing is written.
#[test]
fn wrong_backups_are_refused_and_nothing_written() {
    require!(Borg14);
    let world = World::new(OLD);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = borg_repo(&world, d, "repo", "repokey");
    let other = borg_repo(&world, d, "other", "keyfile");
    let config = std::fs::read(repo.join("config")).unwrap();
    let keys = key_files(&world);
    let other_key = d.join("other.key");
    borg(&world, d, &["key", "export", s(&other), s(&other_key)]).expect(0, "export other");
    let other_paper = borg(&world, d, &["key", "export", "--paper", s(&other)]).stdout;
    let garbage = d.join("garbage");
    std::fs::write(&garbage, "hello\n").unwrap();
    let damaged = d.join("damaged.key");
    let header = borg(&world, d, &["key", "export", s(&repo)]).stdout_text();
    std::fs::write(
        &damaged,
        format!("{}\nnot-base64!\n", header.lines().next().unwrap()),
    )
    .unwrap();

    for (file, words, borg_words) in [
        (
            &other_key,
            &["different repository"][..],
            "different backup repository",
        ),
        (
            &garbage,
            &["not a borg key backup"][..],
            "not a Borg key backup",
        ),
    ] {
        let theirs = borg(&world, d, &["key", "import", s(&repo), s(file)]).expect(2, "borg");
        assert!(theirs.stderr.contains(borg_words), "{}", theirs.stderr);
        assert_refused(
            ours(&world, d, &["key", "import", s(&repo), s(file)]),
            words,
            "import",
        );
    }
    // Borg stores whatever follows a right header; we refuse a blob that is no key.
    assert_refused(
        ours(&world, d, &["key", "import", s(&repo), s(&damaged)]),
        &["damaged"],
        "a damaged backup",
    );
    // Another repository's paper key is refused at its id line.
    let command = world.ours_command(d, &["key", "import", "--paper", s(&repo)], &[]);
    assert_refused(
        run_with_stdin(command, &other_paper),
        &["different repository"],
        "paper",
    );
    // A typing error in a piped paper key ends the import with the line named.
    let mine = ours(&world, d, &["key", "export", "--paper", s(&repo)]).stdout_text();
    let lines: Vec<&str> = mine.lines().collect();
    let mut broken: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
    broken[5] = format!("{}\n", lines[5].replace('-', ""));
    let broken = broken.concat();
    let command = world.ours_command(d, &["key", "import", "--paper", s(&repo)], &[]);
    assert_refused(
        run_with_stdin(command, broken.as_bytes()),
        &["paper key line 2"],
        "typo",
    );
    let command = world.ours_command(d, &["key", "import", "--paper", s(&repo)], &[]);
    let cut: String = mine.lines().take(8).map(|l| format!("{l}\n")).collect();
    assert_refused(
        run_with_stdin(command, cut.as_bytes()),
        &["ended after 4 of 20"],
        "cut",
    );
    assert_refused(
        ours(
            &world,
            d,
            &["key", "import", "--paper", s(&repo), s(&other_key)],
        ),
        &["not read from a file"],
        "--paper with a file",
    );

    assert_eq!(
        std::fs::read(repo.join("config")).unwrap(),
        config,
        "config untouched"
    );
    assert_eq!(key_files(&world), keys, "no key file written");
    both_open_only_with(&world, d, s(&repo), OLD, NEW);
}
