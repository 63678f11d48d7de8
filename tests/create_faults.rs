//! `create` interrupted, killed, or cut off from its server, over SSH to real `borg serve`: the
//! repository must stay consistent for real borg (`borg check` clean, no archive from the
//! interrupted run) and the next run must succeed. And the tree changing under a running
//! `create`.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::cli::World;
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-faults";

/// A tree that takes long enough to upload to be interrupted: incompressible content in
/// files of many sizes. Deterministic, so every run stores the same chunks.
fn make_data(dir: &Path, megabytes: usize) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    std::fs::create_dir_all(dir).unwrap();
    let mut written = 0;
    let mut n = 0;
    while written < megabytes << 20 {
        let size = [3_000, 40_000, 700_000, 5_000_000][n % 4];
        let data: Vec<u8> = (0..size / 8).flat_map(|_| next().to_le_bytes()).collect();
        std::fs::File::create(dir.join(format!("f{n:04}")))
            .unwrap()
            .write_all(&data)
            .unwrap();
        written += data.len();
        n += 1;
    }
}

/// A `borg` for the server that records its pid, so a test can kill exactly it.
fn recording_server(dir: &Path) -> (PathBuf, PathBuf) {
    let pid_file = dir.join("server.pid");
    let script = dir.join("borg-recording-pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec {} \"$@\"\n",
            pid_file.display(),
            common::borg14().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, pid_file)
}

fn borg_check(world: &World, cwd: &Path, repo: &Path, what: &str) {
    let ran = world
        .borg(
            &common::borg14(),
            cwd,
            &["check", "--lock-wait", "30", repo.to_str().unwrap()],
        )
        .expect(0, &format!("{what}: borg check"));
    assert!(!ran.stderr.contains("orphan"), "{what}: {}", ran.stderr);
}

fn archives(world: &World, cwd: &Path, repo: &Path) -> Vec<String> {
    let ran = world
        .borg(
            &common::borg14(),
            cwd,
            &[
                "list",
                "--short",
                "--lock-wait",
                "30",
                repo.to_str().unwrap(),
            ],
        )
        .expect(0, "borg list");
    ran.stdout_text().lines().map(str::to_string).collect()
}

fn kill(pid: u32, signal: &str) {
    std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
}

/// Starts our create of `data` into `url::name` with a checkpoint every `checkpoint` seconds;
/// returns the child.
fn spawn_create(
    world: &World,
    data: &Path,
    url: &str,
    name: &str,
    server: &Path,
    checkpoint: &str,
) -> std::process::Child {
    world
        .ours_command(
            data,
            &["create", "-c", checkpoint, &format!("{url}::{name}"), "."],
            &[("BORG_REMOTE_PATH", server.to_str().unwrap())],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn setup() -> (Sshd, World, tempfile::TempDir, PathBuf, PathBuf, String) {
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    make_data(&data, 120);
    let repo = work.path().join("repo");
    world.borg_init(&common::borg14(), work.path(), "repokey-blake2", &repo);
    let url = sshd.url(&repo);
    (sshd, world, work, data, repo, url)
}

#[test]
fn sigint_and_sigterm_roll_back_release_the_lock_and_exit_like_borg() {
    require!(Borg14, Sshd);
    let (_sshd, world, work, data, repo, url) = setup();
    let (server, _) = recording_server(work.path());
    // A 64 GiB sparse file keeps any machine busy long past the signal.
    let endless = data.join("endless");
    std::fs::File::create(&endless)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    for (signal, code, message) in [("INT", 2, "SIGINT"), ("TERM", 143, "SIGTERM")] {
        let child = spawn_create(&world, &data, &url, signal, &server, "1");
        std::thread::sleep(Duration::from_millis(1500));
        kill(child.id(), signal);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {stderr}");
        assert!(stderr.contains(message), "SIG{signal}: {stderr}");
        // No archive, no lock left: borg gets in at once and finds everything consistent.
        assert!(archives(&world, work.path(), &repo).is_empty());
        borg_check(&world, work.path(), &repo, &format!("after SIG{signal}"));
    }
    std::fs::remove_file(&endless).unwrap();
    world
        .ours(&data, &["create", &format!("{url}::complete"), "."], &[])
        .expect(0, "the run after the interruptions");
    assert_eq!(archives(&world, work.path(), &repo), ["complete"]);
}

#[test]
fn killed_client_server_or_connection_leaves_a_consistent_repository() {
    require!(Borg14, Sshd);
    let (sshd, world, work, data, repo, url) = setup();
    let (server, pid_file) = recording_server(work.path());
    let files = std::fs::read_dir(&data).unwrap().count();
    // Delays spread over the run, from the connection's start to the final commit.
    let delays = [150u64, 400, 650, 900, 1150, 1400, 1650, 1900, 2300, 2800];
    for iteration in 0..21 {
        let _ = std::fs::remove_file(&pid_file);
        let name = format!("run-{iteration}");
        let mut child = spawn_create(&world, &data, &url, &name, &server, "1");
        std::thread::sleep(Duration::from_millis(delays[iteration % delays.len()]));
        let victim = match iteration % 3 {
            0 => "client",
            1 => "server",
            _ => "connection",
        };
        let server_pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        match (victim, server_pid) {
            ("server", Some(pid)) => kill(pid, "KILL"),
            ("connection", Some(pid)) => {
                // The sshd process serving this session is the server's parent.
                let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        stat.rsplit(')')
                            .next()?
                            .split_whitespace()
                            .nth(1)?
                            .parse::<u32>()
                            .ok()
                    });
                if let Some(parent) = parent.filter(|p| *p != sshd.pid()) {
                    kill(parent, "KILL");
                }
            }
            _ => kill(child.id(), "KILL"),
        }
        let status = child.wait().unwrap();
        let what = format!("iteration {iteration}, {victim} killed");
        // No half archive: the run's archive is there only if it was committed whole (a
        // server killed right after the commit leaves the client with an error, and a
        // complete archive).
        if archives(&world, work.path(), &repo).contains(&name) {
            let listed = world
                .borg(
                    &common::borg14(),
                    work.path(),
                    &["list", "--short", &format!("{}::{name}", repo.display())],
                )
                .expect(0, &what);
            assert_eq!(
                listed.stdout_text().lines().count(),
                files + 1,
                "{what}: an incomplete archive (exit {status})"
            );
        }
        borg_check(&world, work.path(), &repo, &what);
        if iteration % 7 == 6 {
            world
                .ours(
                    &data,
                    &["create", &format!("{url}::after-{iteration}"), "."],
                    &[],
                )
                .expect(0, &format!("{what}: the next run"));
        }
    }
    let ran = world
        .borg(
            &common::borg14(),
            work.path(),
            &["check", "--verify-data", repo.to_str().unwrap()],
        )
        .expect(0, "borg check --verify-data at the end");
    assert!(!ran.stderr.contains("orphan"), "{}", ran.stderr);
}

/// The name of the repository's current index file (`index.N`): it changes with every commit.
fn index_file(repo: &Path) -> Option<String> {
    std::fs::read_dir(repo)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("index."))
}

#[test]
fn checkpoints_keep_an_interrupted_runs_uploads_and_vanish_when_it_completes() {
    require!(Borg14, Sshd);
    let (_sshd, world, work, data, repo, url) = setup();
    let list = |what: &str| {
        world
            .borg(
                &common::borg14(),
                work.path(),
                &[
                    "list",
                    "--short",
                    "--consider-checkpoints",
                    repo.to_str().unwrap(),
                ],
            )
            .expect(0, what)
            .stdout_text()
    };
    // Killed after some checkpoints were committed (each commit renames the index file).
    let mut last = index_file(&repo);
    // A checkpoint after every file, so the kill surely comes between two of them.
    let mut child = spawn_create(&world, &data, &url, "first", &common::borg14(), "0");
    let (mut commits, mut spins) = (0, 0);
    while commits < 8 {
        assert!(spins < 3000, "not enough checkpoints within a minute");
        std::thread::sleep(Duration::from_millis(20));
        spins += 1;
        let now = index_file(&repo);
        if now != last {
            commits += 1;
            last = now;
        }
    }
    kill(child.id(), "KILL");
    let _ = child.wait();
    assert_eq!(list("after the kill"), "first.checkpoint\n");
    borg_check(&world, work.path(), &repo, "after the kill");

    // The next run finds what the checkpoint holds and uploads only the rest.
    let resumed = world
        .ours(
            &data,
            &["create", "--json", &format!("{url}::second"), "."],
            &[],
        )
        .expect(0, "the run after the kill");
    let stats: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    let new = stats["archive"]["stats"]["deduplicated_size"]
        .as_u64()
        .unwrap();
    let all = stats["archive"]["stats"]["compressed_size"]
        .as_u64()
        .unwrap();
    assert!(
        new < all,
        "the checkpoint's data was uploaded again ({new} of {all})"
    );

    // A run that completes leaves no checkpoint of its own (borg keeps older ones, so do we).
    std::fs::write(data.join("one-more"), b"a change").unwrap();
    world
        .ours(
            &data,
            &["create", "-c", "0", &format!("{url}::third"), "."],
            &[],
        )
        .expect(0, "a run with a checkpoint after every batch");
    assert_eq!(
        list("after the complete runs"),
        "first.checkpoint\nsecond\nthird\n"
    );
    borg_check(&world, work.path(), &repo, "after the complete runs");
}

#[test]
fn vanished_unreadable_and_changing_files_are_warnings_and_the_archive_is_still_made() {
    require!(Borg14, Sshd);
    let (_sshd, world, work, data, repo, url) = setup();
    // A file whose ctime changes all the time while it is read: large, but sparse.
    let growing = data.join("growing");
    std::fs::File::create(&growing)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = {
        let (growing, stop) = (growing.clone(), stop.clone());
        std::thread::spawn(move || {
            let file = std::fs::File::options().write(true).open(&growing).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.set_modified(std::time::SystemTime::now()).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // A file that cannot be read: another process's memory at offset 0 gives EIO.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let unreadable = format!("/proc/{}/mem", sleeper.id());

    // A file that vanishes after the walk saw it: the walk runs ahead while the connection
    // and `borg serve` start (hundreds of milliseconds), and the file is gone by the time its
    // content is wanted.
    let vanishing = data.join("vanishing");
    std::fs::write(&vanishing, b"here and gone").unwrap();
    let run = world
        .ours_command(
            &data,
            &["create", "--list", &format!("{url}::a"), ".", &unreadable],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    std::fs::remove_file(&vanishing).unwrap();
    let ran = common::cli::Ran::from(run.wait_with_output().unwrap());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toucher.join().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let ran = ran.expect(1, "a run with source problems ends with a warning");
    assert!(
        ran.stderr
            .contains("growing: file changed while we backed it up"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("C growing"), "{}", ran.stderr);
    // EIO on read here; a kernel that restricts /proc/PID/mem refuses the open instead.
    assert!(
        ran.stderr.contains(&format!("{unreadable}: read:"))
            || ran.stderr.contains(&format!("{unreadable}: open:")),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("E {unreadable}")),
        "{}",
        ran.stderr
    );

    // The archive is there, with the changed file and without the unreadable one.
    let listed = world
        .borg(
            &common::borg14(),
            work.path(),
            &["list", "--short", &format!("{}::a", repo.display())],
        )
        .expect(0, "borg list")
        .stdout_text();
    assert!(listed.lines().any(|l| l == "growing"), "{listed}");
    assert!(
        !listed.contains("mem") && !listed.contains("vanishing"),
        "{listed}"
    );
    borg_check(&world, work.path(), &repo, "after the source problems");

    // A file that changed while read is not trusted next time: it is read again.
    let next = world
        .ours(&data, &["create", "--list", &format!("{url}::b"), "."], &[])
        .expect(0, "the next run");
    assert!(next.stderr.contains("A growing"), "{}", next.stderr);
}

#[test]
fn a_full_repository_is_reported_and_nothing_is_committed() {
    require!(Borg14, Sshd);
    let (_sshd, world, work, data, repo, url) = setup();
    let server = work.path().join("borg-with-quota");
    std::fs::write(
        &server,
        format!(
            "#!/bin/sh\nexec {} \"$@\" --storage-quota 30M\n",
            common::borg14().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&server, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ran = world
        .ours(
            &data,
            &["create", &format!("{url}::too-big"), "."],
            &[("BORG_REMOTE_PATH", server.to_str().unwrap())],
        )
        .expect(2, "a backup larger than the quota");
    assert!(
        ran.stderr.to_lowercase().contains("quota"),
        "{}",
        ran.stderr
    );
    assert_eq!(ran.stderr.trim().lines().count(), 1, "{}", ran.stderr);
    assert!(archives(&world, work.path(), &repo).is_empty());
    borg_check(&world, work.path(), &repo, "after the quota was hit");
}

/// A directory that a service's user swaps for a symlink while the walk is inside it cannot
/// lead the backup out of the tree. The walk is held inside `a/sub` at a deterministic moment:
/// with `--exclude-caches` it reads a directory's `CACHEDIR.TAG` following symlinks, as borg
/// does, and a fifo there blocks it until a writer comes — after the directory was opened and
/// before it is listed. Then `a/sub` becomes a symlink to a directory outside the tree whose
/// names are the same; the walk must go on listing and reading the directory it opened.
#[test]
fn a_directory_swapped_for_a_symlink_mid_walk_does_not_lead_the_backup_outside() {
    require!(Borg14);
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let world = World::new(PASSPHRASE);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let sub = data.join("a/sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("mail"), b"inside the tree").unwrap();
    let tag = sub.join("CACHEDIR.TAG");
    let tag_c = std::ffi::CString::new(tag.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives for the call.
    assert_eq!(unsafe { libc::mkfifo(tag_c.as_ptr(), 0o600) }, 0);
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("mail"), b"SECRET from outside").unwrap();
    std::fs::write(outside.join("secret"), b"SECRET from outside").unwrap();
    let repo = work.path().join("repo");
    world.borg_init(&common::borg14(), work.path(), "repokey-blake2", &repo);

    let run = world
        .ours_command(
            &data,
            &[
                "create",
                "--list",
                "--exclude-caches",
                &format!("{}::a", repo.display()),
                ".",
            ],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A writer can open the fifo without waiting only once a reader has it open: the walk,
    // now inside `a/sub`.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&tag)
        {
            Ok(writer) => break writer,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the walk never read a/sub/CACHEDIR.TAG"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("open the fifo: {e}"),
        }
    };
    std::fs::rename(&sub, work.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &sub).unwrap();
    // End of file for the tag's reader: not a cache directory, the walk goes on.
    drop(writer);
    let ran = common::cli::Ran::from(run.wait_with_output().unwrap());

    let listed = world
        .borg(
            &common::borg14(),
            work.path(),
            &["list", "--short", &format!("{}::a", repo.display())],
        )
        .expect(0, "borg list")
        .stdout_text();
    let below_sub: Vec<&str> = listed.lines().filter(|l| l.starts_with("a/sub")).collect();
    // The directory that was opened is what was listed (its fifo, not `secret`), and nothing
    // was read through the symlink. The mail's content is read after the walk, by opening it
    // again from the root without following symlinks: where its directory was is a symlink
    // now, so it is left out with a warning, like a file that vanished.
    assert_eq!(
        below_sub,
        ["a/sub", "a/sub/CACHEDIR.TAG"],
        "{listed}\n{}",
        ran.stderr
    );
    let ran = ran.expect(1, "a run with a file that went away");
    assert!(ran.stderr.contains("a/sub/mail: open: "), "{}", ran.stderr);
}
