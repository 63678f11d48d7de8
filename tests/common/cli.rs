//! Running our binary and real borg side by side, in one environment: the same borg base dir
//! (so both find the same key files and share one security dir), the same passphrase, and our
//! SSH settings pointing at the test's sshd.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::sshd::Sshd;

/// What a finished command left.
pub struct Ran {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Ran {
    pub fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with both streams unless the command ended with `code`.
    pub fn expect(self, code: i32, what: &str) -> Ran {
        assert_eq!(
            self.code,
            code,
            "{what}: exit {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout_text(),
            self.stderr
        );
        self
    }
}

/// A shared environment for our binary and borg.
pub struct World {
    /// `BORG_BASE_DIR`: config (keys, security) and borg's cache live below it.
    pub base: tempfile::TempDir,
    pub passphrase: String,
    /// SSH settings for our binary, when the repository is reached over SSH.
    ssh: Option<(PathBuf, PathBuf)>,
}

impl World {
    pub fn new(passphrase: &str) -> World {
        World {
            base: tempfile::tempdir().unwrap(),
            passphrase: passphrase.to_string(),
            ssh: None,
        }
    }

    /// Our binary logs in to `sshd` with its ed25519 key and trusts its host key.
    pub fn with_ssh(mut self, sshd: &Sshd) -> World {
        self.ssh = Some((sshd.path("id_ed25519"), sshd.known_hosts()));
        self
    }

    fn prepare(&self, command: &mut Command, cwd: &Path) {
        command
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.base.path())
            .env("BORG_BASE_DIR", self.base.path())
            .env("BORG_PASSPHRASE", &self.passphrase)
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            // Borg records a local path, we an ssh:// URL, for the same repository.
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_REMOTE_PATH", super::borg14())
            .env("TZ", "UTC")
            .stdin(Stdio::null());
    }

    /// Runs our binary with `args` in `cwd`; `env` adds or overrides variables.
    pub fn ours<S: AsRef<OsStr>>(&self, cwd: &Path, args: &[S], env: &[(&str, &str)]) -> Ran {
        Ran::from(
            self.ours_command(cwd, args, env)
                .output()
                .expect("run mailcow-borg"),
        )
    }

    /// Our binary, ready to run or spawn; `env` adds or overrides variables.
    pub fn ours_command<S: AsRef<OsStr>>(
        &self,
        cwd: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailcow-borg"));
        self.prepare(&mut command, cwd);
        command.args(args);
        if let Some((key, known_hosts)) = &self.ssh {
            command
                .env("MAILCOW_BORG_SSH_KEY", key)
                .env("MAILCOW_BORG_KNOWN_HOSTS", known_hosts);
        }
        command.envs(env.iter().copied());
        command
    }

    /// A new, empty repository at `repo`, made by `borg` (run in `cwd`) in `mode`.
    pub fn borg_init(&self, borg: &Path, cwd: &Path, mode: &str, repo: &Path) {
        let repo_arg = repo.to_str().expect("UTF-8 test path");
        self.borg(borg, cwd, &["init", "-e", mode, repo_arg])
            .expect(0, "borg init");
    }

    /// A new repository at `repo`, made by `borg` in `mode`, with the archive `archive` of
    /// `source` (archived as `.`, so item paths are relative to it).
    pub fn borg_repo(&self, borg: &Path, mode: &str, repo: &Path, source: &Path, archive: &str) {
        self.borg_init(borg, source, mode, repo);
        let repo_arg = repo.to_str().expect("UTF-8 test path");
        self.borg(
            borg,
            source,
            &["create", &format!("{repo_arg}::{archive}"), "."],
        )
        .expect(0, "borg create");
    }

    /// Runs real borg (`borg` is its path) with `args` in `cwd`.
    pub fn borg<S: AsRef<OsStr>>(&self, borg: &Path, cwd: &Path, args: &[S]) -> Ran {
        self.borg_env(borg, cwd, args, &[])
    }

    /// [`World::borg`], with `env` added or overriding.
    pub fn borg_env<S: AsRef<OsStr>>(
        &self,
        borg: &Path,
        cwd: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Ran {
        Ran::from(
            self.borg_command(borg, cwd, args, env)
                .output()
                .expect("run borg"),
        )
    }

    /// Real borg, ready to run or spawn; `env` adds or overrides variables.
    pub fn borg_command<S: AsRef<OsStr>>(
        &self,
        borg: &Path,
        cwd: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Command {
        let mut command = Command::new(borg);
        self.prepare(&mut command, cwd);
        command.args(args).envs(env.iter().copied());
        command
    }
}

/// Runs `command` with `input` on its stdin (and no controlling terminal, so that nothing can
/// be asked there).
pub fn run_with_stdin(mut command: Command, input: &[u8]) -> Ran {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; it only detaches the child from our terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    Ran::from(output)
}

/// `tests/oracle/tricky_tree.py` with the given arguments; returns its stdout.
pub fn tricky_tree(args: &[&OsStr]) -> Ran {
    let output = Command::new("python3")
        .arg(super::repo_root().join("tests/oracle/tricky_tree.py"))
        .args(args)
        .output()
        .expect("python3");
    Ran::from(output)
}

/// Asserts that two trees are identical in everything `tricky_tree.py snapshot` records.
pub fn assert_same_tree(expected: &Path, actual: &Path, what: &str) {
    let diff = tricky_tree(&[OsStr::new("diff"), expected.as_os_str(), actual.as_os_str()]);
    assert_eq!(
        diff.code,
        0,
        "{what}: the trees differ\n{}{}",
        diff.stdout_text(),
        diff.stderr
    );
}

/// Exit 2 and a single `mailcow-borg: error:` line that contains every one of `expected`;
/// before it, at most the server's own messages (`Remote: ...`), as borg shows them.
pub fn assert_refused(ran: Ran, expected: &[&str], what: &str) {
    let ran = ran.expect(2, what);
    let lines: Vec<&str> = ran.stderr.lines().collect();
    let (error, before) = lines.split_last().expect("an error line");
    assert!(
        before.iter().all(|l| l.starts_with("Remote: ")),
        "{what}: more than one line of our own:\n{}",
        ran.stderr
    );
    assert!(
        error.starts_with("mailcow-borg: error: "),
        "{what}: {error}"
    );
    for text in expected {
        assert!(error.contains(text), "{what}: {text:?} missing in: {error}");
    }
    // Each cause is told once.
    let mut seen = std::collections::HashSet::new();
    for part in error.split(": ").filter(|part| part.len() > 20) {
        assert!(seen.insert(part), "{what}: {part:?} repeated in: {error}");
    }
}
