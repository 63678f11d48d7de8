//! Faults and bad input for the read commands, with real parts: each must end with exit code 2
//! and one clear line on stderr, and an interrupted or failed restore must leave only complete
//! files behind.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::{Ran, World, assert_refused};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-fault-test";

struct Setup {
    sshd: Sshd,
    world: World,
    work: tempfile::TempDir,
    repo: PathBuf,
    source: PathBuf,
    url: String,
}

/// A repository by borg 1.4.5 with one archive `a` of `files` files of `size` random bytes.
fn setup(mode: &str, files: usize, size: usize) -> Setup {
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(source.join("data")).unwrap();
    for i in 0..files {
        std::fs::write(
            source.join(format!("data/file-{i:03}.bin")),
            common::noise(i as u64, size),
        )
        .unwrap();
    }
    let repo = work.path().join("repo");
    let borg = common::borg14();
    world.borg_repo(&borg, mode, &repo, &source, "a");
    let url = sshd.url(&repo);
    Setup {
        sshd,
        world,
        work,
        repo,
        source,
        url,
    }
}

fn empty_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn refusals_and_bad_input_exit_2_with_one_line() {
    require!(Borg14, Sshd);
    let s = setup("repokey-blake2", 2, 1000);
    let cwd = s.work.path();
    let port = s.sshd.port;
    let empty = empty_dir(cwd, "empty");
    let borg2 = cwd.join("borg2");
    common::copy_tree(&s.repo, &borg2);
    let config = std::fs::read_to_string(borg2.join("config")).unwrap();
    std::fs::write(
        borg2.join("config"),
        config.replace("version = 1", "version = 2"),
    )
    .unwrap();
    let unknown_hosts = cwd.join("known_hosts.none");
    std::fs::write(&unknown_hosts, "").unwrap();
    let changed_hosts = cwd.join("known_hosts.changed");
    std::fs::write(
        &changed_hosts,
        format!(
            "[127.0.0.1]:{port} {}",
            std::fs::read_to_string(s.sshd.path("id_stranger.pub")).unwrap()
        ),
    )
    .unwrap();
    let fingerprint = s.sshd.host_fingerprint("ed25519");
    let stranger = s.sshd.path("id_stranger");
    let restricted = s.sshd.path("id_restricted");
    let archive = format!("{}::a", s.url);

    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "wrong passphrase",
            vec![archive.clone()],
            vec![("BORG_PASSPHRASE", "wrong")],
            vec!["wrong passphrase"],
        ),
        (
            "not a repository",
            vec![s.sshd.url(&empty)],
            vec![],
            vec!["is not a borg repository"],
        ),
        (
            "missing repository",
            vec![s.sshd.url(&cwd.join("nowhere"))],
            vec![],
            vec!["does not exist"],
        ),
        (
            "borg 2 repository",
            vec![s.sshd.url(&borg2)],
            vec![],
            vec!["borg 2"],
        ),
        (
            "outside --restrict-to-path",
            vec![archive.clone()],
            vec![("MAILCOW_BORG_SSH_KEY", restricted.to_str().unwrap())],
            vec!["does not allow access"],
        ),
        (
            "unknown host key",
            vec![archive.clone()],
            vec![("MAILCOW_BORG_KNOWN_HOSTS", unknown_hosts.to_str().unwrap())],
            vec!["not known", &fingerprint, "--accept-new-host-key"],
        ),
        (
            "changed host key",
            vec![archive.clone()],
            vec![("MAILCOW_BORG_KNOWN_HOSTS", changed_hosts.to_str().unwrap())],
            vec!["CHANGED", &fingerprint],
        ),
        (
            "refused authentication",
            vec![archive.clone()],
            vec![("MAILCOW_BORG_SSH_KEY", stranger.to_str().unwrap())],
            vec!["refused authentication as root"],
        ),
        (
            "missing archive",
            vec![format!("{}::nope", s.url)],
            vec![],
            vec!["archive \"nope\" does not exist"],
        ),
        (
            "unknown pattern style",
            vec![archive.clone(), "zz:x".into()],
            vec![],
            vec!["unknown pattern style \"zz\""],
        ),
        (
            "no local borg",
            vec![s.repo.display().to_string()],
            vec![("BORG_REMOTE_PATH", "/nonexistent/borg")],
            vec!["install borg", "ssh://"],
        ),
        (
            "invalid location",
            vec!["ssh://host".into()],
            vec![],
            vec!["invalid repository location"],
        ),
        (
            "closed port",
            vec![format!(
                "ssh://root@127.0.0.1:{}/r::a",
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            )],
            vec![],
            vec!["cannot connect"],
        ),
    ];
    for (what, location, env, expected) in &cases {
        for command in ["list", "extract"] {
            let dest = empty_dir(cwd, &format!("dest-{}", what.replace(' ', "-")));
            let mut args = vec![command.to_string()];
            args.extend(location.iter().map(|l| match command {
                "extract" if !l.contains("::") => format!("{l}::a"),
                _ => l.clone(),
            }));
            let ran = s.world.ours(&dest, &args, env);
            assert_refused(ran, expected, &format!("{command}: {what}"));
            assert!(
                is_empty(&dest),
                "{command}: {what}: wrote into the destination"
            );
        }
    }

    // No passphrase at all: borg's sources are named.
    let ran = s
        .world
        .ours_command(cwd, &["list", &archive], &[])
        .env_remove("BORG_PASSPHRASE")
        .output()
        .unwrap();
    assert_refused(
        Ran::from(ran),
        &["BORG_PASSPHRASE", "BORG_PASSCOMMAND"],
        "no passphrase",
    );
}

#[test]
fn a_locked_repository_is_waited_for_then_reported_and_break_lock_frees_it() {
    require!(Borg14, Sshd);
    let s = setup("none", 1, 1000);
    let mut holder = std::process::Command::new(common::borg14())
        .args(["with-lock", s.repo.to_str().unwrap(), "sleep", "60"])
        .env("BORG_BASE_DIR", s.world.base.path())
        .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
        .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.repo.join("lock.exclusive").exists() {
        assert!(
            Instant::now() < deadline,
            "borg with-lock did not take the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let ran = s
        .world
        .ours(s.work.path(), &["list", "--lock-wait", "2", &s.url], &[]);
    let waited = started.elapsed();
    // The holder is still alive: break-lock removes its lock anyway, as borg's does.
    let broken = s.world.ours(s.work.path(), &["break-lock", &s.url], &[]);
    let listed = s
        .world
        .ours(s.work.path(), &["list", "--short", &s.url], &[]);
    let borg_listed = s.world.borg(
        &common::borg14(),
        s.work.path(),
        &["list", "--short", s.repo.to_str().unwrap()],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_refused(ran, &["locked", "lock"], "locked repository");
    assert!(waited >= Duration::from_secs(2), "gave up after {waited:?}");
    broken.expect(0, "break-lock");
    assert!(!s.repo.join("lock.exclusive").exists());
    assert_eq!(
        listed.expect(0, "list after break-lock").stdout_text(),
        "a\n"
    );
    assert_eq!(
        borg_listed
            .expect(0, "borg list after break-lock")
            .stdout_text(),
        "a\n"
    );
}

/// The content chunk ids of `path` in archive `a`, from our `debug dump-archive`, and how many
/// files come before it in the archive (borg archives a directory in inode order).
fn chunk_ids(s: &Setup, path: &str) -> (Vec<[u8; 32]>, usize) {
    let dump = s
        .world
        .ours(
            s.work.path(),
            &["debug", "dump-archive", &format!("{}::a", s.url)],
            &[],
        )
        .expect(0, "dump-archive");
    let dump: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let items = dump["_items"].as_array().unwrap();
    let position = items
        .iter()
        .filter(|item| item.get("chunks").is_some())
        .position(|item| item["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the archive"));
    let item = items.iter().find(|item| item["path"] == path).unwrap();
    let ids = item["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chunk| {
            let hex = chunk[0].as_str().unwrap().trim_start_matches('\u{7f}');
            common::unhex(hex).try_into().unwrap()
        })
        .collect();
    (ids, position)
}

/// Every regular file under `dest` is byte-identical to the one under `source`.
fn assert_only_complete_files(dest: &Path, source: &Path) -> usize {
    let mut complete = 0;
    for entry in std::fs::read_dir(dest.join("data")).into_iter().flatten() {
        let entry = entry.unwrap();
        let restored = std::fs::read(entry.path()).unwrap();
        let original = std::fs::read(source.join("data").join(entry.file_name())).unwrap();
        assert!(
            restored == original,
            "{} is incomplete or wrong ({} of {} bytes)",
            entry.path().display(),
            restored.len(),
            original.len()
        );
        complete += 1;
    }
    complete
}

#[test]
fn a_damaged_object_is_named_with_its_file_and_nothing_partial_remains() {
    require!(Borg14, Sshd);
    let s = setup("repokey", 6, 1 << 20);
    let victim = "data/file-003.bin";
    let (ids, files_before) = chunk_ids(&s, victim);
    common::corrupt_object(&s.repo, &ids[0]);
    let dest = empty_dir(s.work.path(), "dest");
    let ran = s
        .world
        .ours(&dest, &["extract", &format!("{}::a", s.url)], &[]);
    assert_refused(
        ran,
        &[victim, &common::hex(&ids[0]), "MAC", "incomplete"],
        "damaged object",
    );
    assert!(
        !dest.join(victim).exists(),
        "the damaged file was left behind"
    );
    let complete = assert_only_complete_files(&dest, &s.source);
    assert_eq!(
        complete, files_before,
        "the files before the damaged one are restored"
    );
}

/// Starts an extract of a large archive, lets it begin writing, then breaks the session with
/// `break_it`; the extract must fail cleanly.
fn interrupted_extract(
    s: &Setup,
    name: &str,
    env: &[(&str, &str)],
    break_it: impl FnOnce(),
) -> Ran {
    let dest = empty_dir(s.work.path(), name);
    let child = s
        .world
        .ours_command(&dest, &["extract", &format!("{}::a", s.url)], env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dest.join("data").exists() || is_empty(&dest.join("data")) {
        assert!(Instant::now() < deadline, "the extract wrote nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    break_it();
    let ran = Ran::from(child.wait_with_output().unwrap());
    let complete = assert_only_complete_files(&dest, &s.source);
    assert!(
        complete < 40,
        "the extract finished before it was interrupted"
    );
    ran
}

#[test]
fn a_killed_server_or_dropped_connection_leaves_only_complete_files() {
    require!(Borg14, Sshd);
    let s = setup("repokey-blake2", 40, 3 << 20);
    // A borg of its own name, so that exactly this test's server can be killed.
    let victim = s.work.path().join("borg-victim");
    std::os::unix::fs::symlink(common::borg14(), &victim).unwrap();
    let killed = interrupted_extract(
        &s,
        "killed",
        &[("BORG_REMOTE_PATH", victim.to_str().unwrap())],
        || {
            let status = std::process::Command::new("pkill")
                .args(["-KILL", "-f", victim.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "no borg serve to kill");
        },
    );
    assert_refused(killed, &["connection", "incomplete"], "server killed");

    let dropped = interrupted_extract(&s, "dropped", &[], || {
        // The per-connection sshd processes are the listener's children.
        let status = std::process::Command::new("pkill")
            .args(["-KILL", "-P", &s.sshd.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "no ssh session to drop");
    });
    assert_refused(dropped, &["connection", "incomplete"], "connection dropped");
}

#[test]
fn passphrase_sources_and_key_files_work_like_borgs() {
    require!(Borg14, Sshd);
    let s = setup("keyfile-blake2", 1, 1000);
    let cwd = s.work.path();
    let pass_file = cwd.join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let list = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        all.push(&s.url);
        let output = s
            .world
            .ours_command(cwd, &all, env)
            .env_remove("BORG_PASSPHRASE")
            .output()
            .unwrap();
        Ran::from(output)
    };
    list(&["--passphrase-file", pass_file.to_str().unwrap()], &[]).expect(0, "--passphrase-file");
    let command = format!("cat {}", pass_file.display());
    list(&[], &[("BORG_PASSCOMMAND", &command)]).expect(0, "BORG_PASSCOMMAND");
    assert_refused(
        list(&[], &[("BORG_PASSCOMMAND", "false")]),
        &["BORG_PASSCOMMAND failed"],
        "failing pass command",
    );

    // BORG_PASSPHRASE_FD: the descriptor is set up by a shell, as users do.
    let script = format!(
        "exec 3<{}; BORG_PASSPHRASE_FD=3 {} list {}",
        pass_file.display(),
        env!("CARGO_BIN_EXE_mailcow-borg"),
        s.url
    );
    let mut shell = s.world.ours_command(cwd, &["--version"], &[]);
    shell.env_remove("BORG_PASSPHRASE");
    let program = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .envs(shell.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("BORG_PASSPHRASE")
        .current_dir(cwd)
        .output()
        .unwrap();
    Ran::from(program).expect(0, "BORG_PASSPHRASE_FD");

    // The key's salt is remembered, so that the key is unlocked while connecting
    // (`ops::unlock_ahead`). A passphrase change gives the key a new salt: the guess is then
    // wrong, which costs only the time it was to save. The new passphrase works, the old one
    // no longer does, and the new salt is remembered.
    let memo = s.world.base.path().join(".cache/mailcow-borg/unlock");
    let remembered = || {
        let entry = std::fs::read_dir(&memo).unwrap().next().unwrap().unwrap();
        std::fs::read_to_string(entry.path()).unwrap()
    };
    let before = remembered();
    let change = |from: &str, to: &str| {
        let repo = s.repo.to_str().unwrap();
        s.world
            .borg_env(
                &common::borg14(),
                cwd,
                &["key", "change-passphrase", repo],
                &[("BORG_PASSPHRASE", from), ("BORG_NEW_PASSPHRASE", to)],
            )
            .expect(0, "borg key change-passphrase");
    };
    change(PASSPHRASE, "changed");
    assert_refused(
        s.world.ours(cwd, &["list", &s.url], &[]),
        &["passphrase"],
        "the old passphrase after a change",
    );
    for round in ["new salt", "new salt remembered"] {
        s.world
            .ours(cwd, &["list", &s.url], &[("BORG_PASSPHRASE", "changed")])
            .expect(0, round);
    }
    assert_ne!(remembered(), before, "the new salt was not remembered");
    change("changed", PASSPHRASE);

    // The key file is found in the keys dir by its header; BORG_KEY_FILE names it directly.
    let keys_dir = s.world.base.path().join(".config/borg/keys");
    let key_file = std::fs::read_dir(&keys_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let moved = cwd.join("exported.key");
    std::fs::rename(&key_file, &moved).unwrap();
    assert_refused(
        s.world.ours(cwd, &["list", &s.url], &[]),
        &["no key file", "BORG_KEY_FILE"],
        "key file missing",
    );
    s.world
        .ours(
            cwd,
            &["list", &s.url],
            &[("BORG_KEY_FILE", moved.to_str().unwrap())],
        )
        .expect(0, "BORG_KEY_FILE");
}

#[test]
fn a_rolled_back_repository_is_refused_by_us_and_by_borg() {
    require!(Borg14, Sshd);
    let s = setup("repokey", 1, 1000);
    let cwd = s.work.path();
    let borg = common::borg14();
    let backup = cwd.join("repo-backup");
    common::copy_tree(&s.repo, &backup);
    s.world
        .borg(
            &borg,
            &s.source,
            &["create", &format!("{}::b", s.repo.display()), "."],
        )
        .expect(0, "borg create b");
    // We see (and remember) the newer state...
    s.world.ours(cwd, &["list", &s.url], &[]).expect(0, "list");
    // ...then the server's repository is rolled back to the older one.
    std::fs::remove_dir_all(&s.repo).unwrap();
    common::copy_tree(&backup, &s.repo);
    assert_refused(
        s.world.ours(cwd, &["list", &s.url], &[]),
        &["rolled back"],
        "rolled back",
    );
    // borg reads the same security dir and refuses too: our record is borg's format.
    let theirs = s
        .world
        .borg(&borg, cwd, &["list", s.repo.to_str().unwrap()]);
    assert_eq!(
        theirs.code, 2,
        "borg accepted the rolled-back repository: {}",
        theirs.stderr
    );
    assert!(
        theirs.stderr.contains("newer than repository"),
        "{}",
        theirs.stderr
    );
}

/// Sets the mtime of every directory below `root` made in the last hour (the parents an extract
/// creates for items it restores without their directories) to the epoch, on both sides alike.
fn reset_recent_dir_times(root: &Path) {
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
                if meta.modified().unwrap() > hour_ago {
                    std::fs::File::open(entry.path())
                        .unwrap()
                        .set_modified(std::time::UNIX_EPOCH)
                        .unwrap();
                }
            }
        }
    }
}

#[test]
fn partial_dry_run_and_sparse_extracts_match_borg() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    common::cli::tricky_tree(&[OsStr::new("make"), tree.as_os_str()]).expect(0, "make tree");
    let repo = work.path().join("repo");
    let borg = common::borg14();
    world.borg_repo(&borg, "authenticated", &repo, &tree, "a");
    let ours_archive = format!("{}::a", sshd.url(&repo));
    let borg_archive = format!("{}::a", repo.display());
    for (i, options) in [
        vec!["--strip-components", "1", "{}", "hardlinks/b", "names"],
        vec!["{}", "hardlinks/c/sub", "acls"],
        vec!["--numeric-ids", "{}", "owners"],
        vec!["--sparse", "{}", "sparse"],
        vec!["{}", "sh:hardlinks/**/trio*", "fm:names/*space*"],
    ]
    .into_iter()
    .enumerate()
    {
        let ours_dir = empty_dir(work.path(), &format!("ours-{i}"));
        let borg_dir = empty_dir(work.path(), &format!("borg-{i}"));
        let with = |archive: &str| {
            let mut args = vec!["extract".to_string()];
            args.extend(options.iter().map(|o| o.replace("{}", archive)));
            args
        };
        world
            .ours(&ours_dir, &with(&ours_archive), &[])
            .expect(0, &format!("{options:?}"));
        world
            .borg(&borg, &borg_dir, &with(&borg_archive))
            .expect(0, &format!("{options:?}"));
        // Parents the selection left out are made at extraction time, with the time of then.
        for dir in [&ours_dir, &borg_dir] {
            reset_recent_dir_times(dir);
        }
        let diff = common::cli::tricky_tree(&[
            OsStr::new("diff"),
            OsStr::new("--holes"),
            borg_dir.as_os_str(),
            ours_dir.as_os_str(),
        ]);
        assert_eq!(diff.code, 0, "{options:?}:\n{}", diff.stdout_text());
        assert!(!is_empty(&ours_dir), "{options:?} extracted nothing");
    }

    let dry = empty_dir(work.path(), "dry");
    world
        .ours(&dry, &["extract", "--dry-run", &ours_archive], &[])
        .expect(0, "--dry-run");
    assert!(is_empty(&dry), "--dry-run wrote files");

    // A PATH that matches nothing is a warning, as in borg.
    let none = empty_dir(work.path(), "none");
    let ran = world
        .ours(&none, &["extract", &ours_archive, "no/such/path"], &[])
        .expect(1, "unmatched PATH");
    assert!(ran.stderr.contains("never matched"), "{}", ran.stderr);
}
