//! A repository host that attacks the client: real `borg serve` 1.4.5 behind
//! `tests/oracle/serve_proxy.py`, which changes the answers the test names. The host is not
//! trusted in borg's model; whatever it sends, the client must end with exit 2 and one clear
//! line, write nothing it should not, and stay within bounded time and memory.

use crate::common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{Ran, World, assert_refused};
use sha2::Digest;

const PASSPHRASE: &str = "mcb-hostile-test";

struct Setup {
    world: World,
    work: tempfile::TempDir,
    repo: PathBuf,
    /// The script that runs the proxy, to give as borg's path.
    proxy: PathBuf,
    /// What the proxy changed, a line per answer.
    proxy_log: PathBuf,
}

/// A repository by borg 1.4.5 in `mode` with one archive `a` of `files` (name, content).
fn setup(mode: &str, files: &[(&str, &[u8])]) -> Setup {
    let world = World::new(PASSPHRASE);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    for (name, content) in files {
        std::fs::write(source.join(name), content).unwrap();
    }
    let repo = work.path().join("repo");
    world.borg_repo(&common::borg14(), mode, &repo, &source, "a");
    let proxy = work.path().join("borg-behind-proxy");
    std::fs::write(
        &proxy,
        format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            common::borg14_python().display(),
            common::repo_root()
                .join("tests/oracle/serve_proxy.py")
                .display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&proxy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let proxy_log = work.path().join("proxy.log");
    Setup {
        world,
        work,
        repo,
        proxy,
        proxy_log,
    }
}

impl Setup {
    /// Our binary with `args`, talking to the proxy that applies `rules`.
    fn ours(&self, args: &[&str], rules: serde_json::Value) -> Command {
        let borg = common::borg14();
        let rules = rules.to_string();
        self.world.ours_command(
            self.work.path(),
            args,
            &[
                ("BORG_REMOTE_PATH", self.proxy.to_str().unwrap()),
                ("MCB_PROXY_BORG", borg.to_str().unwrap()),
                ("MCB_PROXY_RULES", &rules),
                ("MCB_PROXY_LOG", self.proxy_log.to_str().unwrap()),
            ],
        )
    }

    fn repo_arg(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// How many answers the proxy changed so far.
    fn changed_answers(&self) -> usize {
        std::fs::read_to_string(&self.proxy_log)
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }

    fn borg_archives(&self) -> String {
        self.world
            .borg(
                &common::borg14(),
                self.work.path(),
                &["list", "--short", self.repo_arg()],
            )
            .expect(0, "borg list")
            .stdout_text()
    }
}

/// Runs `command` to its end, killing it after `limit`; what it left, and its peak resident
/// memory in KiB (from the kernel's accounting of that one process).
fn run_bounded(mut command: Command, limit: Duration) -> (Ran, u64) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            all
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child, not waited for yet; the pointers are to live locals.
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break (status, usage);
        }
        assert!(
            started.elapsed() < limit,
            "still running after {limit:?}: killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The child is reaped; keep std from waiting for it again.
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    let ran = Ran {
        code,
        stdout: stdout.join().unwrap(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    };
    (ran, usage.ru_maxrss as u64)
}

/// A stalled run must not hang the test run: end the child if it outlives this.
const NO_HANG: Duration = Duration::from_secs(180);

#[test]
fn a_nonce_counter_pushed_to_its_end_is_refused_and_nothing_is_written() {
    require!(Borg14);
    let s = setup("repokey-blake2", &[("mail", b"some mail")]);
    let server_nonce = || std::fs::read_to_string(s.repo.join("nonce")).unwrap();
    let before = server_nonce();
    let target = format!("{}::b", s.repo_arg());
    // This machine's record of the counter, which borg's security dir shares with us.
    let repo_id = std::fs::read_to_string(s.repo.join("config"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("id = ").map(str::to_string))
        .unwrap();
    let local_record = s
        .world
        .base
        .path()
        .join(".config/borg/security")
        .join(repo_id.trim())
        .join("nonce");
    let recorded = std::fs::read_to_string(&local_record).unwrap();
    let near_ceiling = (1u64 << 63) - (1 << 20);
    for (answer, local, expected) in [
        // Near 2^64 the counter would wrap to IVs already used (the old client did just that);
        // so far beyond what this machine recorded, it is refused before that.
        (u64::MAX - 1000, None, "implausibly far ahead"),
        (1u64 << 62, None, "implausibly far ahead"),
        // Plausible for this machine, but too near the end of the counter for a reservation.
        (
            near_ceiling,
            Some(near_ceiling),
            "would pass the end of the counter space",
        ),
    ] {
        if let Some(local) = local {
            std::fs::write(&local_record, format!("{local:016x}")).unwrap();
        }
        // The server lies about its counter, and says yes to the reservation that follows
        // (real borg serve would refuse it, having another value on record).
        let rules = serde_json::json!([
            {"method": "get_free_nonce", "result": answer},
            {"method": "commit_nonce_reservation", "result": null},
        ]);
        let changed = s.changed_answers();
        let (ran, _) = run_bounded(s.ours(&["create", &target, "source"], rules), NO_HANG);
        assert_refused(
            ran,
            &["refusing to encrypt", "nonce counter", expected],
            &format!("nonce {answer:#x}"),
        );
        assert!(s.changed_answers() > changed, "the proxy's rule was used");
        // Nothing reserved, nothing written.
        assert_eq!(server_nonce(), before);
        assert_eq!(s.borg_archives(), "a\n");
        std::fs::write(&local_record, &recorded).unwrap();
    }
    // The repository is as it was, and an honest answer works.
    let honest = s
        .ours(&["create", &target, "source"], serde_json::json!([]))
        .output();
    Ran::from(honest.unwrap()).expect(0, "create without the proxy's rule");
    assert_eq!(s.borg_archives(), "a\nb\n");
    s.world
        .borg(
            &common::borg14(),
            s.work.path(),
            &["check", "--verify-data", s.repo_arg()],
        )
        .expect(0, "borg check");
}

#[test]
fn a_server_that_stops_answering_is_given_up() {
    require!(Borg14);
    let s = setup("repokey-blake2", &[("mail", b"some mail")]);
    let rules = serde_json::json!([{"method": "get", "stall": true}]);
    let target = format!("{}::a", s.repo_arg());
    let started = Instant::now();
    let (ran, _) = run_bounded(
        s.ours(&["list", "--server-timeout", "3", &target], rules),
        NO_HANG,
    );
    assert_refused(
        ran,
        &["sent nothing for 3 s", "--server-timeout"],
        "stalled get",
    );
    assert!(s.changed_answers() >= 1, "the proxy stalled");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A zlib stream of `size` zero bytes, made without holding them.
fn zlib_zeros(size: usize) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    let block = vec![0u8; 1 << 20];
    for _ in 0..size / block.len() {
        encoder.write_all(&block).unwrap();
    }
    encoder.finish().unwrap()
}

#[test]
fn decompression_bombs_from_the_server_are_refused_in_bounded_memory() {
    require!(Borg14);
    // In a `none` repository nothing is authenticated: the server may send any object, and it
    // is decompressed before its id can be checked.
    let content: &[u8] = b"an innocent mail\n";
    let s = setup("none", &[("mail", content)]);
    let id = common::hex(&sha2::Sha256::digest(content));
    let plaintext_key_type = 0x02u8;
    let xz = std::fs::read(common::repo_root().join("testdata/bombs/zeros-64MiB.xz")).unwrap();
    let bombs: [(&str, Vec<u8>, &str); 2] = [
        (
            "zlib, 1 GiB of zeros",
            zlib_zeros(1 << 30),
            "zlib data decompresses to more than",
        ),
        (
            "xz, 64 MiB of zeros",
            [&[2u8, 0][..], &xz].concat(),
            "lzma data decompresses to more than",
        ),
    ];
    for (what, payload, expected) in bombs {
        let bomb = s.work.path().join("bomb");
        std::fs::write(&bomb, [&[plaintext_key_type][..], &payload].concat()).unwrap();
        let rules = serde_json::json!([
            {"method": "get", "id": id, "result_file": bomb.to_str().unwrap()}
        ]);
        let into = s.work.path().join(format!("extract-{}", &what[..4]));
        std::fs::create_dir_all(&into).unwrap();
        let mut command = s.ours(&["extract", &format!("{}::a", s.repo_arg())], rules);
        command.current_dir(&into);
        let changed = s.changed_answers();
        let (ran, peak_kib) = run_bounded(command, NO_HANG);
        assert_refused(ran, &[expected], what);
        assert_eq!(
            s.changed_answers(),
            changed + 1,
            "{what}: the proxy's rule was used"
        );
        assert!(
            peak_kib < 400 << 10,
            "{what}: peak memory {} MiB",
            peak_kib >> 10
        );
        assert!(!into.join("mail").exists(), "{what}: a file was left");
    }
}

#[test]
fn an_answer_of_millions_of_tiny_elements_is_refused_early() {
    require!(Borg14);
    let s = setup("repokey-blake2", &[("mail", b"some mail")]);
    // 4 million nils, 4 MiB on the wire, handed over in 4 KiB pieces: built, they would take
    // 128 MiB; re-parsed on every piece, they would take hours.
    let rules = serde_json::json!([
        {"method": "get", "result_nils": 4_000_000, "pieces": 4096}
    ]);
    let target = format!("{}::a", s.repo_arg());
    let (ran, peak_kib) = run_bounded(s.ours(&["list", &target], rules), NO_HANG);
    assert_refused(ran, &["more than 1048576 elements"], "an answer of nils");
    assert!(peak_kib < 200 << 10, "peak memory {} MiB", peak_kib >> 10);
}

/// The proxy itself must pass everything through when no rule applies: otherwise the tests
/// above would prove nothing about the rules.
#[test]
fn the_proxy_without_rules_changes_nothing() {
    require!(Borg14);
    let s = setup("repokey-blake2", &[("mail", b"some mail")]);
    let into = s.work.path().join("out");
    std::fs::create_dir_all(&into).unwrap();
    let mut command = s.ours(
        &["extract", &format!("{}::a", s.repo_arg())],
        serde_json::json!([]),
    );
    command.current_dir(&into);
    Ran::from(command.output().unwrap()).expect(0, "extract through the proxy");
    assert_eq!(std::fs::read(into.join("mail")).unwrap(), b"some mail");
    assert_eq!(s.changed_answers(), 0);
}

/// Secrets in our memory must not reach a core file or another process of the same user: the
/// process is not dumpable, which the kernel shows by giving the files of its /proc directory to
/// root.
#[test]
fn the_process_is_not_dumpable() {
    require!(Root);
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    // A "borg" that never answers keeps our process waiting long enough to look at it.
    let silent = work.path().join("silent-borg");
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&silent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let nobody = 65534;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailcow-borg"))
        .args(["list", "/nonexistent/repo"])
        .env("BORG_REMOTE_PATH", &silent)
        .env("HOME", work.path())
        .env("BORG_BASE_DIR", work.path())
        .current_dir("/")
        .uid(nobody)
        .gid(nobody)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The /proc/<pid> directory itself always keeps the user; its files go to root.
    let environ = PathBuf::from(format!("/proc/{}/environ", child.id()));
    // Give it the moment to get past exec and its first line of main.
    let mut owner = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let status = std::fs::read_to_string(environ.with_file_name("status")).unwrap_or_default();
        if status.contains("Name:\tmailcow-borg") {
            owner = std::fs::metadata(&environ).ok().map(|m| m.uid());
            if owner == Some(0) {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        owner,
        Some(0),
        "/proc/<pid>/environ of a dumpable process belongs to its user"
    );
}
