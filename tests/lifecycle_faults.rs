//! Deleting, pruning and compacting cut off at random points: our process or its `borg serve` killed with
//! SIGKILL, 20 times. After each, real borg 1.4.5's `check` must find the repository clean (the
//! manifest never names an archive whose objects are gone), and the next run must finish the
//! job: the archives it should delete are gone, the others extract.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use common::cli::World;

const PASSPHRASE: &str = "mcb-lifecycle-faults";
const ROUNDS: u64 = 20;

/// Every process whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the command name may hold spaces, so split after it.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1).and_then(|p| p.parse().ok()) == Some(pid) {
            found.push(child);
        }
    }
    found
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
    unsafe { libc::kill(pid as i32, signal) };
}

/// A small deterministic generator (the rounds must be reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `job` (a subcommand) with its arguments.
fn command<'a>(job: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&[job], args].concat()
}

/// A fresh copy of `from` at `to` (the previous round's removed).
fn fresh_copy(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    common::copy_tree(from, to);
}

#[test]
fn killed_deletes_and_compactions_leave_a_clean_repository_and_the_next_run_finishes() {
    require!(Borg14);
    let borg = common::borg14();
    let world = World::new(PASSPHRASE);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let pristine = work.path().join("pristine");
    let pristine_arg = pristine.to_str().unwrap().to_string();
    world.borg_init(&borg, work.path(), "repokey-blake2", &pristine);
    // Eight archives, four to delete (`x*`); every archive has files of its own.
    for n in 0..8u64 {
        std::fs::create_dir_all(&source).unwrap();
        for i in 0..20u64 {
            std::fs::write(
                source.join(format!("f{i:02}")),
                common::noise(if i < 5 { n * 1000 + i } else { i }, 30_000),
            )
            .unwrap();
        }
        let name = if n % 2 == 0 {
            format!("x{n}")
        } else {
            format!("k{n}")
        };
        world
            .ours(
                &source,
                &["create", &format!("{pristine_arg}::{name}"), "."],
                &[],
            )
            .expect(0, "create");
    }
    let pristine_base = work.path().join("pristine-base");
    common::copy_tree(world.base.path(), &pristine_base);
    let repo = work.path().join("repo");
    let repo_arg = repo.to_str().unwrap().to_string();
    let reset = || {
        fresh_copy(&pristine, &repo);
        fresh_copy(&pristine_base, world.base.path());
    };
    let run = |args: &[&str], what: &str| {
        world.ours(work.path(), args, &[]).expect(0, what);
    };
    let lock_wait = ["--lock-wait", "30"];
    let delete = [&lock_wait[..], &[repo_arg.as_str(), "-a", "x*"]].concat();
    let prune = [
        &lock_wait[..],
        &[repo_arg.as_str(), "-a", "x*", "--keep-last", "1"],
    ]
    .concat();
    let compact = [&lock_wait[..], &["--threshold", "0", repo_arg.as_str()]].concat();
    // What is cut off; what runs first to completion; the archives left when it is done.
    let jobs: [(&str, &[&str], bool, &str); 3] = [
        ("delete", &delete, false, "k1\nk3\nk5\nk7\n"),
        ("prune", &prune, false, "k1\nk3\nk5\nx6\nk7\n"),
        ("compact", &compact, true, "k1\nk3\nk5\nk7\n"),
    ];

    // How long each uninterrupted run takes: the kills fall within it.
    let durations: Vec<_> = jobs
        .iter()
        .map(|(job, args, after_delete, _)| {
            reset();
            if *after_delete {
                run(&command("delete", &delete), "delete before compacting");
            }
            let started = Instant::now();
            run(&command(job, args), job);
            started.elapsed()
        })
        .collect();

    let mut rng = Rng(19);
    let mut cut_off = 0;
    for round in 0..ROUNDS {
        // Rounds go through the jobs, and alternate whether we or the server die.
        let (job, args, after_delete, left) = jobs[round as usize % jobs.len()];
        let kill_server = (round / jobs.len() as u64) % 2 == 1;
        reset();
        if after_delete {
            run(&command("delete", &delete), "delete before compacting");
        }
        let delay =
            durations[round as usize % jobs.len()].mul_f64((rng.next() % 1000) as f64 / 1000.0);
        // Now and then we are asked to stop (SIGTERM) rather than killed.
        let asked = !kill_server && round % 4 == 0;
        let child = world
            .ours_command(work.path(), &command(job, args), &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if kill_server {
            for server in children(child.id()) {
                signal(server, libc::SIGKILL);
            }
        } else {
            signal(
                child.id(),
                if asked { libc::SIGTERM } else { libc::SIGKILL },
            );
        }
        let ended = child.wait_with_output().unwrap();
        let status = ended.status;
        if !status.success() {
            cut_off += 1;
        }
        let what = format!(
            "round {round}: {} {} after {delay:?} of {job}",
            if kill_server {
                "borg serve"
            } else {
                "mailcow-borg"
            },
            if asked { "stopped (SIGTERM)" } else { "killed" },
        );
        if asked && !status.success() {
            // borg's code for SIGTERM, and one line that says what became of the run.
            let stderr = String::from_utf8_lossy(&ended.stderr);
            assert_eq!(status.code(), Some(143), "{what}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            assert!(stderr.contains("Received SIGTERM"), "{what}: {stderr}");
        }

        // Whatever the moment, borg finds the repository consistent (a dead server's lock is
        // stale: borg removes it, as it does its own).
        world
            .borg(
                &borg,
                work.path(),
                &["check", "--lock-wait", "30", &repo_arg],
            )
            .expect(0, &format!("borg check after {what} (exit {status:?})"));

        // The next run finishes the job.
        run(&command(job, args), &format!("{job} after {what}"));
        run(
            &command("compact", &compact),
            &format!("compact after {what}"),
        );
        let listed = world
            .borg(&borg, work.path(), &["list", "--short", &repo_arg])
            .expect(0, "borg list");
        assert_eq!(listed.stdout_text(), left, "{what}");
        world
            .borg(&borg, work.path(), &["check", "--verify-data", &repo_arg])
            .expect(0, &format!("borg check --verify-data at the end of {what}"));
    }
    // Most kills must land while the run is still going, or the loop proves little.
    assert!(
        cut_off >= ROUNDS / 2,
        "only {cut_off} of {ROUNDS} runs were cut off"
    );
    let target = work.path().join("extract");
    std::fs::create_dir_all(&target).unwrap();
    world
        .borg(&borg, &target, &["extract", &format!("{repo_arg}::k7")])
        .expect(0, "borg extract k7");
    for i in 0..20 {
        let file = format!("f{i:02}");
        assert!(
            std::fs::read(source.join(&file)).unwrap()
                == std::fs::read(target.join(&file)).unwrap(),
            "k7: {file} differs"
        );
    }
}
