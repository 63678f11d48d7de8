//! `init` of our binary, proven with real borg: for every key mode, over SSH to a real sshd with
//! a borg 1.4.5 server and a Debian borg 1.2.x server, and to a local path, the repository we
//! make is one real borg (the same version as the server) writes to, lists, checks with
//! `--verify-data` and extracts from — without being asked about an unknown or moved
//! repository, since our init filled the security dir as borg's does — and that we read and
//! write too. Also: where a key file goes (compared with where borg puts it), the repository
//! options in the config, and the refusals, which must change nothing.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::cli::{Ran, World, assert_refused, assert_same_tree};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-init-test";

/// Real borg must not be asked anything: the security dir knows the repository as it is.
const STRICT: [(&str, &str); 2] = [
    ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "no"),
    ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "no"),
];

/// A small tree to back up: a few files, one of them large enough for several chunks.
fn make_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("hello.txt"), "hello from init\n").unwrap();
    std::fs::write(tree.join("sub/noise.bin"), common::noise(7, 3 << 20)).unwrap();
    std::fs::write(tree.join("sub/empty"), "").unwrap();
    tree
}

/// How real borg logs in to the test's sshd.
fn borg_rsh(sshd: &Sshd) -> String {
    format!(
        "ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        sshd.path("id_ed25519").display(),
        sshd.known_hosts().display()
    )
}

/// One tool against one repository: which borg client, with which server (`remote`), reached as
/// `url`.
struct Setup<'a> {
    world: &'a World,
    borg: PathBuf,
    remote: PathBuf,
    rsh: Option<String>,
    work: &'a Path,
    tree: &'a Path,
}

impl Setup<'_> {
    fn env(&self) -> Vec<(&str, &str)> {
        let mut env = STRICT.to_vec();
        env.push(("BORG_REMOTE_PATH", self.remote.to_str().unwrap()));
        if let Some(rsh) = &self.rsh {
            env.push(("BORG_RSH", rsh));
        }
        env
    }

    fn ours(&self, cwd: &Path, args: &[&str]) -> Ran {
        self.world.ours(cwd, args, &self.env())
    }

    fn borg(&self, cwd: &Path, args: &[&str]) -> Ran {
        self.world.borg_env(&self.borg, cwd, args, &self.env())
    }

    /// Our init of `url` in `mode`, then real borg and we use the repository.
    fn exercise(&self, url: &str, mode: &str) {
        let what = |step: &str| format!("{mode} at {url}: {step}");
        let made = self
            .ours(self.work, &["init", "-e", mode, url])
            .expect(0, &what("our init"));
        // What borg 1.4.5 says when it makes a repository of this mode beside ours.
        let beside = format!("{url}-by-borg");
        let advice = self
            .world
            .borg_env(
                &common::borg14(),
                self.work,
                &["init", "-e", mode, &beside],
                &self.env(),
            )
            .expect(0, &what("borg init beside ours"));
        assert_eq!(made.stderr, advice.stderr, "{}", what("init's output"));

        let archive = |name: &str| format!("{url}::{name}");
        self.borg(self.tree, &["create", &archive("borg"), "."])
            .expect(0, &what("borg create"));
        self.ours(self.tree, &["create", &archive("ours"), "."])
            .expect(0, &what("our create"));
        for listing in [
            self.borg(self.work, &["list", "--short", url])
                .expect(0, &what("borg list")),
            self.ours(self.work, &["list", "--short", url])
                .expect(0, &what("our list")),
        ] {
            assert_eq!(listing.stdout_text(), "borg\nours\n", "{}", what("list"));
        }
        self.borg(self.work, &["check", "--verify-data", url])
            .expect(0, &what("borg check --verify-data"));

        let into = |tool: &str| {
            let dir = self.work.join(format!("{mode}-{tool}-extract"));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        let (borg_dir, ours_dir) = (into("borg"), into("ours"));
        self.borg(&borg_dir, &["extract", &archive("ours")])
            .expect(0, &what("borg extract of ours"));
        self.ours(&ours_dir, &["extract", &archive("borg")])
            .expect(0, &what("our extract of borg's"));
        assert_same_tree(&borg_dir, &ours_dir, &what("the two extracts"));
        assert_eq!(
            std::fs::read(ours_dir.join("sub/noise.bin")).unwrap(),
            std::fs::read(self.tree.join("sub/noise.bin")).unwrap(),
            "{}",
            what("content")
        );
    }
}

fn over_ssh(client: PathBuf, server: PathBuf) {
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let tree = make_tree(work.path());
    let setup = Setup {
        world: &world,
        borg: client,
        remote: server,
        rsh: Some(borg_rsh(&sshd)),
        work: work.path(),
        tree: &tree,
    };
    for mode in common::ALL_MODES {
        setup.exercise(&sshd.url(&work.path().join(format!("repo-{mode}"))), mode);
    }
}

#[test]
fn every_mode_over_ssh_with_a_borg_14_server() {
    require!(Borg14, Sshd, Root);
    over_ssh(common::borg14(), common::borg14());
}

#[test]
fn every_mode_over_ssh_with_a_borg_12_server() {
    require!(Borg14, Borg12, Sshd, Root);
    over_ssh(common::borg12(), common::borg12());
}

#[test]
fn every_mode_at_a_local_path() {
    require!(Borg14);
    let world = World::new(PASSPHRASE);
    let work = tempfile::tempdir().unwrap();
    let tree = make_tree(work.path());
    let setup = Setup {
        world: &world,
        borg: common::borg14(),
        remote: common::borg14(),
        rsh: None,
        work: work.path(),
        tree: &tree,
    };
    for mode in common::ALL_MODES {
        let repo = work.path().join(format!("repo-{mode}"));
        setup.exercise(repo.to_str().unwrap(), mode);
    }
}

/// The only file in `dir`.
fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_files_go_where_borg_puts_them_and_both_tools_use_them() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    make_tree(work.path());
    let rsh = borg_rsh(&sshd);
    let keys = work.path().join("keys/not-yet");
    let keys_dir = keys.to_str().unwrap();
    let env = [("BORG_RSH", rsh.as_str()), ("BORG_KEYS_DIR", keys_dir)];
    let repo = work.path().join("repo");
    // A relative local path and an ssh:// URL: borg's key file name for each.
    let ssh_url = sshd.url(&repo);
    for location in ["repo", ssh_url.as_str()] {
        world
            .borg_env(
                &common::borg14(),
                work.path(),
                &["init", "-e", "keyfile", location],
                &env,
            )
            .expect(0, "borg init");
        let borg_name = only_file(&keys);
        std::fs::remove_file(&borg_name).unwrap();
        std::fs::remove_dir_all(&repo).unwrap();

        world
            .ours(
                work.path(),
                &["init", "-e", "keyfile-blake2", location],
                &env,
            )
            .expect(0, "our init");
        let ours_name = only_file(&keys);
        assert_eq!(ours_name, borg_name, "{location}: the key file's name");
        assert_eq!(mode_of(&ours_name), 0o600, "{location}: key file mode");
        assert_eq!(mode_of(&keys), 0o700, "{location}: keys dir mode");

        // Both tools find the key in the keys dir and work with it.
        let url = format!("{location}::a");
        world
            .borg_env(
                &common::borg14(),
                work.path(),
                &["create", &url, "tree"],
                &env,
            )
            .expect(0, "borg create with our key file");
        world
            .ours(work.path(), &["list", "--short", location], &env)
            .expect(0, "our list");
        world
            .borg_env(
                &common::borg14(),
                work.path(),
                &["check", "--verify-data", location],
                &env,
            )
            .expect(0, "borg check");
        std::fs::remove_file(&ours_name).unwrap();
        std::fs::remove_dir_all(&repo).unwrap();
    }

    // A name that is taken gets `.2`, as borg's does.
    std::fs::write(keys.join("repo"), "someone else's").unwrap();
    world
        .ours(work.path(), &["init", "-e", "keyfile", "repo"], &env)
        .expect(0, "our init beside a taken name");
    assert!(keys.join("repo.2").is_file());
    assert_eq!(
        std::fs::read_to_string(keys.join("repo")).unwrap(),
        "someone else's"
    );

    // BORG_KEY_FILE: the key goes exactly there, borg finds it there, and an existing file is
    // never replaced (nor is a repository made).
    let key_file = work.path().join("elsewhere/the.key");
    let key_file_text = key_file.to_str().unwrap();
    let with_key_file = [("BORG_RSH", rsh.as_str()), ("BORG_KEY_FILE", key_file_text)];
    world
        .ours(
            work.path(),
            &["init", "-e", "keyfile", "second"],
            &with_key_file,
        )
        .expect(0, "our init with BORG_KEY_FILE");
    let first_line = std::fs::read_to_string(&key_file).unwrap();
    assert!(first_line.starts_with("BORG_KEY "), "{first_line}");
    world
        .borg_env(
            &common::borg14(),
            work.path(),
            &["list", "second"],
            &with_key_file,
        )
        .expect(0, "borg list with BORG_KEY_FILE");
    let refused = world.ours(
        work.path(),
        &["init", "-e", "keyfile", "third"],
        &with_key_file,
    );
    assert_refused(
        refused,
        &["Aborting because key in", "already exists"],
        "BORG_KEY_FILE taken",
    );
    assert!(!work.path().join("third").exists());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), first_line);
}

/// The `[repository]` section of a repository's config as `key = value` pairs.
fn config(repo: &Path) -> String {
    std::fs::read_to_string(repo.join("config")).unwrap()
}

#[test]
fn append_only_and_storage_quota_reach_the_config() {
    require!(Borg14, Borg12, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    for (server, name) in [(common::borg14(), "14"), (common::borg12(), "12")] {
        let server = server.to_str().unwrap();
        let repo = work.path().join(format!("quota-{name}"));
        world
            .ours(
                work.path(),
                &[
                    "init",
                    "-e",
                    "repokey",
                    "--append-only",
                    "--storage-quota",
                    "1.5G",
                    &sshd.url(&repo),
                ],
                &[("BORG_REMOTE_PATH", server)],
            )
            .expect(0, "init --append-only --storage-quota over ssh");
        let text = config(&repo);
        assert!(text.contains("append_only = 1\n"), "{server}: {text}");
        assert!(
            text.contains("storage_quota = 1500000000\n"),
            "{server}: {text}"
        );
    }
    let local = work.path().join("plain");
    world
        .ours(
            work.path(),
            &["init", "-e", "none", local.to_str().unwrap()],
            &[],
        )
        .expect(0, "init without options");
    let text = config(&local);
    assert!(
        text.contains("append_only = 0\n") && text.contains("storage_quota = 0\n"),
        "{text}"
    );
    // A local `borg serve` gets the quota on its command line too.
    let local_quota = work.path().join("local-quota");
    world
        .ours(
            work.path(),
            &[
                "init",
                "-e",
                "none",
                "--storage-quota",
                "20M",
                local_quota.to_str().unwrap(),
            ],
            &[],
        )
        .expect(0, "init --storage-quota at a local path");
    assert!(config(&local_quota).contains("storage_quota = 20000000\n"));
}

#[test]
fn passphrases_come_from_borgs_sources_and_may_be_empty() {
    require!(Borg14);
    let world = World::new("old-one");
    let work = tempfile::tempdir().unwrap();
    let borg = common::borg14();
    let list = |repo: &str, passphrase: &str| {
        world.borg_env(
            &borg,
            work.path(),
            &["list", repo],
            &[("BORG_PASSPHRASE", passphrase)],
        )
    };
    world
        .ours(
            work.path(),
            &["init", "-e", "repokey", "new"],
            &[("BORG_NEW_PASSPHRASE", "new-one")],
        )
        .expect(0, "init with BORG_NEW_PASSPHRASE");
    list("new", "new-one").expect(0, "BORG_NEW_PASSPHRASE protects the key");
    list("new", "old-one").expect(2, "not BORG_PASSPHRASE");
    world
        .ours(work.path(), &["init", "-e", "keyfile", "old"], &[])
        .expect(0, "init with BORG_PASSPHRASE");
    list("old", "old-one").expect(0, "BORG_PASSPHRASE protects the key");
    // Borg treats a repokey with an empty passphrase as unencrypted: known at once all the same.
    world
        .ours(
            work.path(),
            &["init", "-e", "repokey-blake2", "empty"],
            &[("BORG_NEW_PASSPHRASE", "")],
        )
        .expect(0, "init with an empty passphrase");
    world
        .borg_env(
            &borg,
            work.path(),
            &["list", "empty"],
            &[("BORG_PASSPHRASE", ""), STRICT[1]],
        )
        .expect(0, "the empty passphrase unlocks");
}

/// Every file below `dir` with its content: to show that a refusal changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            all.push((path, Vec::new()));
        } else {
            all.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    all.sort();
    all
}

#[test]
fn refusals_change_nothing() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let existing = w.join("existing");
    world
        .ours(
            w,
            &["init", "-e", "repokey", existing.to_str().unwrap()],
            &[],
        )
        .expect(0, "the first init");
    std::fs::create_dir(w.join("full")).unwrap();
    std::fs::write(w.join("full/file"), "mine").unwrap();
    let before = snapshot(w);
    let base_before = snapshot(world.base.path());

    for (target, wanted) in [
        (existing.clone(), "A repository already exists at"),
        (w.join("full"), "There is already something at"),
        (
            w.join("missing/parent/repo"),
            "The parent path of the repo directory",
        ),
    ] {
        for location in [target.to_str().unwrap().to_string(), sshd.url(&target)] {
            let ran = world.ours(w, &["init", "-e", "keyfile", &location], &[]);
            assert_refused(ran, &[wanted], &location);
        }
    }
    let ran = world.ours(
        w,
        &["init", "-e", "none", "--storage-quota", "5M", "tiny"],
        &[],
    );
    assert_refused(
        ran,
        &["quota is too small (5M). At least 10M are required."],
        "tiny quota",
    );
    let ran = Ran::from(
        world
            .ours_command(w, &["init", "-e", "repokey", "unasked"], &[])
            .env_remove("BORG_PASSPHRASE")
            .output()
            .unwrap(),
    );
    assert_refused(
        ran,
        &["BORG_NEW_PASSPHRASE", "not a terminal"],
        "no passphrase",
    );
    assert_eq!(snapshot(w), before, "a refusal changed the work dir");
    assert_eq!(
        snapshot(world.base.path()),
        base_before,
        "a refusal changed the base dir"
    );

    // With --make-parent-dirs the missing parents are made.
    let deep = w.join("missing/parent/repo");
    world
        .ours(
            w,
            &["init", "-e", "none", "--make-parent-dirs", &sshd.url(&deep)],
            &[],
        )
        .expect(0, "init --make-parent-dirs");
    assert!(deep.join("config").is_file());
}

/// Runs argv[1:] on a new pseudo-terminal, answers the passphrase prompts from stdin's lines
/// (one per prompt, in order), and prints everything the terminal showed.
const ON_A_TERMINAL: &str = r#"
import os, pty, sys
answers = sys.stdin.read().splitlines()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
shown, seen = b"", 0
def read_more():
    global shown
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        chunk = b""
    shown += chunk
    return chunk
for answer in answers:
    while shown.count(b"passphrase") <= seen:
        if not read_more():
            break
    seen += 1
    os.write(fd, answer.encode() + b"\n")
while read_more():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[test]
fn on_a_terminal_the_passphrase_is_asked_twice_without_echo() {
    require!(Borg14);
    let world = World::new(PASSPHRASE);
    let work = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", ON_A_TERMINAL, env!("CARGO_BIN_EXE_mailcow-borg")])
        .args(["init", "-e", "repokey", "asked"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BORG_BASE_DIR", world.base.path())
        .env("HOME", world.base.path())
        .env("BORG_REMOTE_PATH", common::borg14())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    // A mismatch first: asked again.
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"typed-secret\ntyped-other\ntyped-secret\ntyped-secret\n",
    )
    .unwrap();
    let ran = Ran::from(child.wait_with_output().unwrap()).expect(0, "init on a terminal");
    let shown = ran.stdout_text();
    assert_eq!(
        shown.matches("Enter new passphrase: ").count(),
        2,
        "{shown}"
    );
    assert_eq!(
        shown.matches("Enter same passphrase again: ").count(),
        2,
        "{shown}"
    );
    assert!(shown.contains("Passphrases do not match"), "{shown}");
    assert!(
        !shown.contains("typed-"),
        "the passphrase was echoed: {shown}"
    );
    world
        .borg_env(
            &common::borg14(),
            work.path(),
            &["list", "asked"],
            &[("BORG_PASSPHRASE", "typed-secret")],
        )
        .expect(0, "borg unlocks with the passphrase typed");
}
