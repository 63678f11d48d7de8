//! `--upload-ratelimit` and `backup`'s `retries`, against real parts: a real sshd and borg
//! serve on loopback, the bytes on the wire counted by a TCP relay between our client and the
//! sshd, and the server side killed mid-upload.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cli::World;
use crate::common::mailcow::Mailcow;
use crate::common::mailcow_repo::{Setup, no_helper_left};
use crate::common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-transport-test";

/// Incompressible bytes (xorshift), `len` of them.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A TCP relay on loopback to `port` that counts the bytes going to it, for every connection.
struct Relay {
    port: u16,
    sent: Arc<AtomicU64>,
}

impl Relay {
    fn start(port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            sent: Arc::default(),
        };
        let sent = relay.sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let counted = sent.clone();
                std::thread::spawn(move || pump(client, server, Some(counted)));
                std::thread::spawn(move || pump(server2, client2, None));
            }
        });
        relay
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(count) = &count {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// `create --upload-ratelimit 100` of ~1.3 MB that does not compress, over SSH through the
/// relay: sampled every 100 ms, every 5 s window from the first second after the first byte to
/// the last is within ±10 % of 100 kiB/s — and there are such windows, so the upload took as
/// long as the rate says (unlimited, it takes well under a second on loopback).
#[test]
fn create_sends_at_the_upload_ratelimit() {
    require!(Borg14, Sshd, Root);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    world.borg_init(&common::borg14(), work.path(), "repokey-blake2", &repo);
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..13 {
        std::fs::write(tree.join(format!("f{i}")), noise(2 * i + 1, 100_000)).unwrap();
    }
    let relay = Relay::start(sshd.port);
    // The relay is the host the client sees: the sshd's host key, under the relay's port.
    let known_hosts = work.path().join("known_hosts");
    let line = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    std::fs::write(
        &known_hosts,
        line.replace(&format!("]:{} ", sshd.port), &format!("]:{} ", relay.port)),
    )
    .unwrap();
    let location = format!(
        "ssh://root@127.0.0.1:{}{}::limited",
        relay.port,
        repo.display()
    );

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (sent, done) = (relay.sent.clone(), done.clone());
        std::thread::spawn(move || {
            let began = Instant::now();
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                samples.push((began.elapsed(), sent.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let known = known_hosts.to_str().unwrap();
    world
        .ours(
            &tree,
            &["create", "--upload-ratelimit", "100", &location, "."],
            &[("MAILCOW_BORG_KNOWN_HOSTS", known)],
        )
        .expect(0, "create --upload-ratelimit 100");
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();

    let rate = 100.0 * 1024.0;
    let first = samples.iter().find(|(_, n)| *n > 0).unwrap().0;
    let total = samples.last().unwrap().1;
    let last = samples.iter().find(|(_, n)| *n == total).unwrap().0;
    assert!(total > 1_300_000, "{total} bytes sent");
    let at = |t: Duration| {
        samples
            .iter()
            .take_while(|(when, _)| *when <= t)
            .last()
            .unwrap()
            .1
    };
    let mut windows = 0;
    let mut from = first + Duration::from_secs(1);
    while from + Duration::from_secs(5) <= last {
        let sent = (at(from + Duration::from_secs(5)) - at(from)) as f64;
        let expected = 5.0 * rate;
        assert!(
            (sent - expected).abs() <= expected * 0.1,
            "{sent} bytes in the 5 s from {from:?}, expected {expected} ± 10 %"
        );
        windows += 1;
        from += Duration::from_millis(500);
    }
    assert!(
        windows >= 8,
        "the upload took {:?}: the limit did not hold it back",
        last - first
    );
    world
        .borg(
            &common::borg14(),
            work.path(),
            &["check", repo.to_str().unwrap()],
        )
        .expect(0, "borg check after a limited create");
}

/// The `borg serve` processes below the sshd (one per session).
fn borg_serves(sshd: u32) -> Vec<i32> {
    let parent = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.split(|&b| b == 0).any(|arg| arg == b"serve") {
            continue;
        }
        let mut up = parent(pid);
        while let Some(p) = up {
            if p == sshd as i32 {
                found.push(pid);
                break;
            }
            up = (p > 1).then(|| parent(p)).flatten();
        }
    }
    found
}

/// When [`backup_killed`] kills the server side of the backup's session.
enum Kill {
    /// This long after its `borg serve` started.
    After(Duration),
    /// As soon as it committed a checkpoint: the repository's newest `index.N` is newer than
    /// when the backup started.
    AtCheckpoint,
}

/// The number of the repository's newest committed index (`index.N`).
fn committed(setup: &Setup) -> u64 {
    std::fs::read_dir(&setup.repo)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("index.")?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Starts `backup` with `args` and kills the server side of its session when `kill` says;
/// the run's output.
fn backup_killed(setup: &Setup, args: &[&str], kill: Kill) -> common::cli::Ran {
    let before = committed(setup);
    let child = setup
        .backup_command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::mailcow::wait_until("borg serve of the backup", || {
        !borg_serves(setup.sshd.pid()).is_empty()
    });
    match kill {
        Kill::After(after) => std::thread::sleep(after),
        Kill::AtCheckpoint => {
            common::mailcow::wait_until("a checkpoint of the backup", || committed(setup) > before)
        }
    }
    let serves = borg_serves(setup.sshd.pid());
    assert!(!serves.is_empty(), "the upload ended before it was killed");
    for pid in serves {
        // SAFETY: a process of the test's own sshd.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    common::cli::Ran::from(child.wait_with_output().unwrap())
}

fn archives(setup: &Setup) -> Vec<String> {
    setup
        .borg(&[
            "list",
            "--short",
            "--consider-checkpoints",
            setup.repo.to_str().unwrap(),
        ])
        .expect(0, "borg list")
        .stdout_text()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The server side killed mid-upload: with `--retries 0` the run exits 2, says the connection
/// failed and commits no archive but its checkpoint; with `retries = 2` (the config's) the
/// next try completes without sending again what that checkpoint holds, the summary says it
/// took two, and real `borg check` finds the repository clean.
#[test]
fn a_dropped_backup_is_tried_again_until_it_completes() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(5);
    mailcow.start();
    mailcow.fill_database();
    // 24 MB that do not compress, in 1 MB files: more than the 16 MiB a checkpoint waits to
    // see uploaded, so at 1 MiB/s the first checkpoint comes after ~17 s with a third still to
    // send.
    let extra = mailcow.volume_dir("vmail-vol-1").join("bulk");
    std::fs::create_dir_all(&extra).unwrap();
    let bulk = 24u64 << 20;
    for i in 0..24 {
        std::fs::write(extra.join(format!("m{i}")), noise(2 * i + 101, 1 << 20)).unwrap();
    }
    let setup = Setup::new(&mailcow);
    setup.add_to_config(
        "upload_ratelimit = 1024\ncheckpoint_interval = 1\nretries = 2\nretry_wait = 1\n",
    );

    let given_up = backup_killed(&setup, &["--retries", "0"], Kill::AtCheckpoint);
    assert_eq!(given_up.code, 2, "{}", given_up.stderr);
    for expected in [
        "the connection to the repository failed on each of 1 tries",
        "set retries in the config",
    ] {
        assert!(given_up.stderr.contains(expected), "{}", given_up.stderr);
    }
    no_helper_left(&mailcow);
    let after_drop = archives(&setup);
    assert!(
        !after_drop.is_empty() && after_drop.iter().all(|a| a.contains(".checkpoint")),
        "a dropped run commits its checkpoint and nothing else: {after_drop:?}"
    );

    let retried = backup_killed(&setup, &["--json"], Kill::After(Duration::from_secs(1)));
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert!(
        retried
            .stderr
            .contains("the connection to the repository failed (try 1 of 3); trying again in 1 s"),
        "{}",
        retried.stderr
    );
    let summary: serde_json::Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(summary["mailcow"]["tries"], 2, "{summary}");
    // What the checkpoint holds was not sent again: well over half of the bulk.
    let added = summary["archive"]["stats"]["deduplicated_size"]
        .as_u64()
        .unwrap();
    assert!(
        added < bulk / 2,
        "the checkpoint's data was sent again: {summary}"
    );
    no_helper_left(&mailcow);
    let name = summary["archive"]["name"].as_str().unwrap();
    assert!(archives(&setup).iter().any(|a| a == name));
    setup
        .borg(&["check", setup.repo.to_str().unwrap()])
        .expect(0, "borg check after the retried backup");
}
