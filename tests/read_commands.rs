//! `list`, `info` and `extract` of our binary, over SSH to a real sshd and real `borg serve`,
//! against repositories real borg (1.4.5 and Debian's 1.2.x) made from the tricky tree
//! (`tests/oracle/tricky_tree.py`), compared with what real borg prints and extracts.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::cli::{Ran, World, assert_same_tree, tricky_tree};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-read-test";

/// A tricky tree at `<dir>/tree`.
fn make_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    tricky_tree(&[OsStr::new("make"), tree.as_os_str()]).expect(0, "make the tricky tree");
    (dir, tree)
}

/// A repository made by `borg` in `mode` with two archives: `full` (the whole tree, as `.`)
/// and `part` (two of its directories, sharing their chunks with `full`).
fn make_repo(world: &World, borg: &Path, mode: &str, tree: &Path, repo: &Path) {
    world.borg_repo(borg, mode, repo, tree, "full");
    let archive = |name: &str| format!("{}::{name}", repo.display());
    world
        .borg(
            borg,
            tree,
            &["create", &archive("part"), "hardlinks", "names"],
        )
        .expect(0, "borg create part");
}

/// Replaces our SSH location in JSON output with borg's local path, the only expected difference.
fn local_location(ours: &[u8], url: &str, path: &Path) -> String {
    String::from_utf8_lossy(ours).replace(url, &path.display().to_string())
}

/// borg's `info` names its cache dir; we keep no cache, so that line is not compared.
fn without_cache_path(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .lines()
        .filter(|line| !line.trim_start().starts_with("\"path\": ") && !line.starts_with("Cache: "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_output(ours: &str, borg: &str, what: &str) {
    if ours != borg {
        let first = ours
            .lines()
            .zip(borg.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(ours.lines().count().min(borg.lines().count()));
        panic!(
            "{what}: output differs from borg's at line {}\n  ours: {:?}\n  borg: {:?}",
            first + 1,
            ours.lines().nth(first),
            borg.lines().nth(first)
        );
    }
}

/// borg's `--json-lines` puts the keys its format computes (`mtime`, `size`) in the order of a
/// Python set, which changes from run to run; so lines are compared as objects, and our order
/// (the default format's) is checked on its own.
fn assert_same_json_lines(ours: &str, borg: &str, what: &str) {
    assert_eq!(
        ours.lines().count(),
        borg.lines().count(),
        "{what}: line count"
    );
    for (i, (a, b)) in ours.lines().zip(borg.lines()).enumerate() {
        let parsed = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap();
        assert_eq!(parsed(a), parsed(b), "{what}: --json-lines line {}", i + 1);
        let position = |key: &str| a.find(&format!("\"{key}\": ")).unwrap();
        assert!(
            position("mtime") < position("size"),
            "{what}: key order: {a}"
        );
    }
}

/// Every read command on a repository that `maker` made agrees with borg 1.4.5's (whose output
/// formats are the reference, also for repositories older borg made).
fn compare_everything(world: &World, sshd: &Sshd, maker: &Path, mode: &str, tree: &Path) {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    make_repo(world, maker, mode, tree, &repo);
    let url = sshd.url(&repo);
    let what = format!("repository by {} in {mode}", maker.display());
    let borg = &common::borg14();
    let cwd = work.path();
    let borg_run = |args: &[&str]| world.borg(borg, cwd, args).expect(0, &what);
    let ours_run = |args: &[&str]| world.ours(cwd, args, &[]).expect(0, &what);
    let repo_local = repo.display().to_string();

    let archives_json = |ran: Ran| local_location(&ran.stdout, &url, &repo);
    assert_same_output(
        &archives_json(ours_run(&["list", "--json", &url])),
        &archives_json(borg_run(&["list", "--json", &repo_local])),
        &format!("{what}: list --json"),
    );
    for (args, name) in [
        (vec!["list", "--json-lines", "{}"], "list --json-lines"),
        (vec!["list", "{}"], "list"),
        (vec!["list", "--short", "{}"], "list --short"),
        (
            vec!["list", "--json-lines", "{}", "hardlinks/b", "names/"],
            "list PATH...",
        ),
    ] {
        let with = |location: &str| {
            args.iter()
                .map(|a| a.replace("{}", location))
                .collect::<Vec<_>>()
        };
        let ours = world
            .ours(cwd, &with(&format!("{url}::full")), &[])
            .expect(0, &what);
        let theirs = world
            .borg(borg, cwd, &with(&format!("{repo_local}::full")))
            .expect(0, &what);
        if name.contains("json") || name.contains("PATH") {
            assert_same_json_lines(&ours.stdout_text(), &theirs.stdout_text(), &what);
        } else {
            assert_same_output(
                &ours.stdout_text(),
                &theirs.stdout_text(),
                &format!("{what}: {name}"),
            );
        }
    }
    for (our_location, their_location) in [
        (url.clone(), repo_local.clone()),
        (format!("{url}::part"), format!("{repo_local}::part")),
    ] {
        for json in [false, true] {
            let args = |location: String| {
                let mut args = vec!["info".to_string(), location];
                if json {
                    args.push("--json".into());
                }
                args
            };
            let ours = world
                .ours(cwd, &args(our_location.clone()), &[])
                .expect(0, &what);
            let theirs = world
                .borg(borg, cwd, &args(their_location.clone()))
                .expect(0, &what);
            assert_same_output(
                &without_cache_path(local_location(&ours.stdout, &url, &repo).as_bytes()),
                &without_cache_path(&theirs.stdout),
                &format!("{what}: info {their_location} (json: {json})"),
            );
        }
    }

    let ours_dir = work.path().join("ours");
    let borg_dir = work.path().join("borg");
    std::fs::create_dir(&ours_dir).unwrap();
    std::fs::create_dir(&borg_dir).unwrap();
    world
        .ours(&ours_dir, &["extract", &format!("{url}::full")], &[])
        .expect(0, &format!("{what}: extract"));
    world
        .borg(
            borg,
            &borg_dir,
            &["extract", &format!("{repo_local}::full")],
        )
        .expect(0, &format!("{what}: borg extract"));
    assert_same_tree(&borg_dir, &ours_dir, &format!("{what}: extract"));
}

#[test]
fn borg_14_repositories_of_every_key_type_read_like_borg() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let (_dir, tree) = make_tree();
    for mode in common::ALL_MODES {
        compare_everything(&world, &sshd, &common::borg14(), mode, &tree);
    }
}

#[test]
fn borg_12_repositories_read_like_borg() {
    require!(Borg14, Borg12, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let (_dir, tree) = make_tree();
    for mode in ["repokey", "keyfile-blake2", "none"] {
        compare_everything(&world, &sshd, &common::borg12(), mode, &tree);
    }
}
