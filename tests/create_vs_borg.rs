//! `create` of our binary over SSH into repositories real borg made, judged by real borg: its
//! `check --verify-data` must be clean, its `extract` must give the tree back, its own `create`
//! afterwards must work and find nothing new to store, and `delete` plus `compact` must leave a
//! clean repository. For the same tree, our archive's items must be exactly the items borg's
//! `create` writes (`borg debug dump-archive`), down to the item-stream chunk ids.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::cli::{Ran, World, assert_same_tree, tricky_tree};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-create-test";

/// A tricky tree at `<dir>/tree`, plus one file changed after all others.
///
/// The tricky tree's files all share one ctime (they are made within one clock tick), and the
/// files cache, in borg as in ours, never keeps a file whose ctime is the newest of the run (it
/// could change again within the same tick unnoticed). The later file keeps the rest cacheable.
fn make_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    tricky_tree(&[OsStr::new("make"), tree.as_os_str()]).expect(0, "make the tricky tree");
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(tree.join(NEWEST), b"changed last").unwrap();
    (dir, tree)
}

const NEWEST: &str = "newest";

/// A tmpfs mounted for the length of a test.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn json(ran: &Ran) -> serde_json::Value {
    serde_json::from_slice(&ran.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", ran.stdout_text()))
}

/// `borg debug dump-archive` of `repo::name`, parsed.
fn dump(world: &World, borg: &Path, cwd: &Path, repo: &Path, name: &str) -> serde_json::Value {
    let out = cwd.join(format!("dump-{name}.json"));
    world
        .borg(
            borg,
            cwd,
            &[
                "debug",
                "dump-archive",
                &format!("{}::{name}", repo.display()),
                out.to_str().unwrap(),
            ],
        )
        .expect(0, "borg debug dump-archive");
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// `borg extract` of `repo::name` (by `borg`) into a new directory `cwd/into`, which it returns.
fn extract_into(
    world: &World,
    borg: &Path,
    cwd: &Path,
    repo: &Path,
    name: &str,
    into: &str,
    what: &str,
) -> PathBuf {
    let dir = cwd.join(into);
    std::fs::create_dir(&dir).unwrap();
    world
        .borg(
            borg,
            &dir,
            &["extract", &format!("{}::{name}", repo.display())],
        )
        .expect(0, &format!("{what}: borg extract of {name}"));
    dir
}

fn check_clean(world: &World, borg: &Path, cwd: &Path, repo: &Path, what: &str) {
    let ran = world
        .borg(
            borg,
            cwd,
            &["check", "--verify-data", repo.to_str().unwrap()],
        )
        .expect(0, &format!("{what}: borg check --verify-data"));
    assert!(
        !ran.stderr.contains("orphan"),
        "{what}: borg check reports orphans:\n{}",
        ran.stderr
    );
}

/// Our create of `tree` (as `.`) into `url::name`, with `--json`, served by `server` (a borg).
fn ours_create(
    world: &World,
    server: &Path,
    tree: &Path,
    url: &str,
    name: &str,
    extra: &[&str],
) -> Ran {
    let location = format!("{url}::{name}");
    let mut args = vec!["create", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[location.as_str(), "."]);
    world.ours(
        tree,
        &args,
        &[("BORG_REMOTE_PATH", server.to_str().unwrap())],
    )
}

/// The whole story for one repository that `maker` initialised in `mode`.
fn create_and_let_borg_judge(world: &World, sshd: &Sshd, maker: &Path, mode: &str, tree: &Path) {
    let what = format!("{mode} repository by {}", maker.display());
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let repo = cwd.join("repo");
    let borg = &common::borg14();
    world
        .borg(maker, cwd, &["init", "-e", mode, repo.to_str().unwrap()])
        .expect(0, &format!("{what}: borg init"));
    let url = sshd.url(&repo);

    let first = ours_create(world, maker, tree, &url, "ours", &[]).expect(0, &what);
    let stats = &json(&first)["archive"]["stats"];
    assert!(
        stats["deduplicated_size"].as_u64().unwrap() > 1_000_000,
        "{what}: {stats}"
    );
    check_clean(world, maker, cwd, &repo, &what);
    for command in ["info", "list"] {
        world
            .borg(maker, cwd, &[command, &format!("{}::ours", repo.display())])
            .expect(0, &format!("{what}: borg {command} of our archive"));
    }

    // borg extracts what we stored, identically (borg's own known limits aside: the tricky
    // tree's out-of-range times are clamped at create time by both tools alike).
    let extracted = extract_into(world, maker, cwd, &repo, "ours", "extracted", &what);

    // borg's create after ours: its cache sync reads our archive, and it finds no new content.
    let theirs = world
        .borg(
            maker,
            tree,
            &[
                "create",
                "--json",
                &format!("{}::theirs", repo.display()),
                ".",
            ],
        )
        .expect(0, &format!("{what}: borg create after ours"));
    // borg 1.2 counts the archive's own metadata in its deduplicated size (its second run of
    // an unchanged tree reports about 500 bytes too); 1.4 counts file contents only.
    let new_bytes = json(&theirs)["archive"]["stats"]["deduplicated_size"]
        .as_u64()
        .unwrap();
    let allowed = if maker == borg { 0 } else { 4096 };
    assert!(
        new_bytes <= allowed,
        "{what}: borg stored {new_bytes} bytes again that we had stored"
    );
    let borg_extracted = extract_into(world, maker, cwd, &repo, "theirs", "borg-extracted", &what);
    assert_same_tree(&borg_extracted, &extracted, &what);

    {
        // The same items as borg's, in the same order, in the same item-stream chunks.
        let ours = dump(world, maker, cwd, &repo, "ours");
        let theirs = dump(world, maker, cwd, &repo, "theirs");
        let (a, b) = (
            ours["_items"].as_array().unwrap(),
            theirs["_items"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}: item count");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x, y, "{what}: item differs from borg's");
        }
        assert_eq!(
            ours["_meta"]["items"], theirs["_meta"]["items"],
            "{what}: item-stream chunks"
        );
        for key in [
            "chunker_params",
            "comment",
            "hostname",
            "username",
            "version",
        ] {
            assert_eq!(ours["_meta"][key], theirs["_meta"][key], "{what}: {key}");
        }
    }

    // Our second run of the unchanged tree reads nothing and stores no content.
    let second = ours_create(world, maker, tree, &url, "ours-2", &["--list"]).expect(0, &what);
    assert_eq!(
        json(&second)["archive"]["stats"]["deduplicated_size"],
        0,
        "{what}"
    );
    let read_again: Vec<&str> = second
        .stderr
        .lines()
        .filter(|l| l.starts_with("A ") || l.starts_with("M "))
        .collect();
    assert_eq!(
        read_again,
        [format!("A {NEWEST}")],
        "{what}: unchanged files were read again"
    );
    assert!(second.stderr.lines().any(|l| l.starts_with("U ")), "{what}");

    // borg deletes our archive and compacts; the repository stays clean.
    for args in [
        vec!["delete".to_string(), format!("{}::ours", repo.display())],
        vec!["compact".to_string(), repo.display().to_string()],
    ] {
        world
            .borg(maker, cwd, &args)
            .expect(0, &format!("{what}: borg {}", args[0]));
    }
    check_clean(world, maker, cwd, &repo, &what);
    // And we go on writing into it (our chunk index notices what borg deleted).
    ours_create(world, maker, tree, &url, "ours-3", &[]).expect(0, &what);
    check_clean(world, maker, cwd, &repo, &what);

    // Every archive of the tree deleted and compacted: the content is gone from the repository
    // while our files cache still lists it as unchanged. We notice and read it again.
    for args in [
        vec!["delete".to_string(), format!("{}::ours-2", repo.display())],
        vec!["delete".to_string(), format!("{}::ours-3", repo.display())],
        vec!["delete".to_string(), format!("{}::theirs", repo.display())],
        vec!["compact".to_string(), repo.display().to_string()],
    ] {
        world
            .borg(maker, cwd, &args)
            .expect(0, &format!("{what}: borg {}", args[0]));
    }
    let fourth = ours_create(world, maker, tree, &url, "ours-4", &["--list"]).expect(0, &what);
    assert!(
        fourth.stderr.lines().any(|l| l.starts_with("M ")),
        "{what}: files whose chunks are gone were not read again:\n{}",
        fourth.stderr
    );
    // Only empty files, which have no chunks to lose, stay unchanged.
    for line in fourth.stderr.lines().filter(|l| l.starts_with("U ")) {
        assert_eq!(
            std::fs::metadata(tree.join(&line[2..])).unwrap().len(),
            0,
            "{what}: {line}: taken as unchanged though its chunks are gone"
        );
    }
    check_clean(world, maker, cwd, &repo, &what);
    let again = extract_into(world, maker, cwd, &repo, "ours-4", "extracted-again", &what);
    assert_same_tree(&again, &extracted, &what);
}

#[test]
fn borg_14_repositories_of_every_key_type_accept_our_archives() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let (_dir, tree) = make_tree();
    for mode in common::ALL_MODES {
        create_and_let_borg_judge(&world, &sshd, &common::borg14(), mode, &tree);
    }
}

#[test]
fn borg_12_repositories_accept_our_archives() {
    require!(Borg14, Borg12, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let (_dir, tree) = make_tree();
    create_and_let_borg_judge(&world, &sshd, &common::borg12(), "repokey", &tree);
}

/// What borg stored first, we do not upload again (we learn its chunks from the repository),
/// and with the same exclusion options both tools leave out the same paths.
#[test]
fn borg_first_then_ours_dedups_and_excludes_alike() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let (_dir, tree) = make_tree();
    // A cache directory borg's --exclude-caches leaves out, and one with a wrong signature.
    for (dir, tag) in [
        (
            "tagged",
            &b"Signature: 8a477f597d28d172789f06886806bc55 and more"[..],
        ),
        (
            "mistagged",
            &b"Signature: 00000000000000000000000000000000"[..],
        ),
    ] {
        std::fs::create_dir(tree.join(dir)).unwrap();
        std::fs::write(tree.join(dir).join("CACHEDIR.TAG"), tag).unwrap();
        std::fs::write(tree.join(dir).join("data"), b"cached").unwrap();
    }
    std::fs::create_dir(tree.join("skipped")).unwrap();
    std::fs::write(tree.join("skipped/.nobackup"), b"").unwrap();
    std::fs::write(tree.join("skipped/data"), b"not wanted").unwrap();
    // Another file system inside the tree, which -x/--one-file-system does not enter.
    let mount = Mount::tmpfs(&tree.join("mnt"));
    std::fs::write(mount.0.join("elsewhere"), b"on another file system").unwrap();
    let borg = common::borg14();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let repo = cwd.join("repo");
    world.borg_init(&borg, cwd, "repokey-blake2", &repo);
    let url = sshd.url(&repo);
    let exclude_from = cwd.join("excludes");
    std::fs::write(&exclude_from, "# one pattern per line\nnames/--help\n").unwrap();
    let exclusions = [
        "--one-file-system",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--keep-exclude-tags",
        "-e",
        "sh:**/8MiB*.bin",
        "--exclude-from",
        exclude_from.to_str().unwrap(),
        "-e",
        "fm:deep/*/*/*/*",
        "-e",
        "pp:sizes/big",
    ];
    let mut args = vec!["create", "--json"];
    args.extend(exclusions);
    let theirs = format!("{}::theirs", repo.display());
    let borg_args: Vec<&str> = args.iter().copied().chain([theirs.as_str(), "."]).collect();
    world
        .borg(&borg, &tree, &borg_args)
        .expect(0, "borg create");
    let ours = format!("{url}::ours");
    let our_args: Vec<&str> = args.iter().copied().chain([ours.as_str(), "."]).collect();
    let ran = world
        .ours(&tree, &our_args, &[])
        .expect(0, "our create after borg's");
    assert_eq!(
        json(&ran)["archive"]["stats"]["deduplicated_size"],
        0,
        "we uploaded content borg had stored"
    );
    let list = |name: &str| {
        world
            .borg(
                &borg,
                cwd,
                &["list", "--short", &format!("{}::{name}", repo.display())],
            )
            .expect(0, "borg list")
            .stdout_text()
    };
    let (ours_listed, theirs_listed) = (list("ours"), list("theirs"));
    assert_eq!(ours_listed, theirs_listed, "different paths excluded");
    let has = |path: &str| ours_listed.lines().any(|l| l == path);
    assert!(
        !has("tagged/data") && has("mistagged/data"),
        "{ours_listed}"
    );
    assert!(
        !has("names/--help")
            && !has("deep/level-01/level-02/level-03/level-04")
            && has("deep/level-01/level-02/level-03"),
        "{ours_listed}"
    );
    assert!(
        !has("sizes/8MiB.bin") && has("sizes/17MiB.bin"),
        "{ours_listed}"
    );
    assert!(has("mnt") && !has("mnt/elsewhere"), "{ours_listed}");
    assert!(
        has("tagged/CACHEDIR.TAG") && has("skipped/.nobackup") && !has("skipped/data"),
        "{ours_listed}"
    );
    let ours_dump = dump(&world, &borg, cwd, &repo, "ours");
    let theirs_dump = dump(&world, &borg, cwd, &repo, "theirs");
    assert_eq!(ours_dump["_items"], theirs_dump["_items"]);
    check_clean(&world, &borg, cwd, &repo, "borg first, then ours");
}

/// `-` among the paths stores standard input as one regular file, as borg does: the same item
/// (name, mode forced to a regular file, root's ids and names) and the same chunks, so what one
/// tool stored from a pipe the other does not store again.
#[test]
fn standard_input_becomes_borgs_stdin_item() {
    require!(Borg14);
    let world = World::new(PASSPHRASE);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    let borg = common::borg14();
    world.borg_init(&borg, dir.path(), "repokey-blake2", &repo);
    // Several chunks' worth: text, then pseudo-random bytes.
    let mut data = b"-- a database dump\nINSERT INTO t VALUES (1);\n".repeat(20_000);
    let mut x: u32 = 7;
    data.extend((0..3_000_000).map(|_| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (x >> 16) as u8
    }));
    let source = dir.path().join("data");
    std::fs::write(&source, &data).unwrap();
    let stdin_args = ["--stdin-name", "mysql/mailcow.sql", "--stdin-mode", "0600"];
    let run_with_stdin = |mut command: std::process::Command| {
        command.stdin(std::fs::File::open(&source).unwrap());
        Ran::from(command.output().unwrap())
    };
    let mut borg_create = std::process::Command::new(&borg);
    borg_create
        .current_dir(dir.path())
        .env("BORG_BASE_DIR", world.base.path())
        .env("BORG_PASSPHRASE", PASSPHRASE)
        .arg("create")
        .args(stdin_args)
        .arg(format!("{repo_arg}::borgs"))
        .arg("-");
    run_with_stdin(borg_create).expect(0, "borg create -");
    let mut args = vec!["create", "--json"];
    args.extend(stdin_args);
    let location = format!("{repo_arg}::ours");
    args.extend([location.as_str(), "-"]);
    let ours = run_with_stdin(world.ours_command(dir.path(), &args, &[])).expect(0, "our create -");
    let stats = &json(&ours)["archive"]["stats"];
    assert_eq!(stats["nfiles"], 1);
    assert_eq!(stats["original_size"], data.len());
    assert_eq!(
        stats["deduplicated_size"], 0,
        "borg stored this content already"
    );
    check_clean(&world, &borg, dir.path(), &repo, "stdin");
    let extracted = world
        .borg(
            &borg,
            dir.path(),
            &["extract", "--stdout", &location, "mysql/mailcow.sql"],
        )
        .expect(0, "borg extract --stdout");
    assert!(extracted.stdout == data, "borg extracts what we read");
    let item = |name: &str| {
        let dumped = dump(&world, &borg, dir.path(), &repo, name);
        let mut item = dumped["_items"][0].clone();
        for time in ["mtime", "atime", "ctime"] {
            let t = item[time].as_i64().expect("times are stored");
            assert_eq!(t % 1_000_000_000, 0, "{name}: {time} in whole seconds");
            item[time] = 0.into();
        }
        assert_eq!(dumped["_items"].as_array().unwrap().len(), 1);
        item
    };
    assert_eq!(item("ours"), item("borgs"));
}
