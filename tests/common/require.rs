//! What a test needs beyond Rust: the borg oracles, a real sshd, the Docker engine with the local
//! test images, root. Each is checked once per process; a test names its needs first thing with
//! `require!`:
//!
//! ```ignore
//! require!(Borg14, Sshd);
//! ```
//!
//! When one is missing, the test returns at once (it passes), and the process says once per
//! missing need, on stderr past the harness's capture, what was missing and how to get it: a
//! plain `cargo test` on a machine without them runs the pure tests and lists what it skipped.
//! With `MCB_TEST_STRICT=1` (set by `scripts/test.sh`, so by CI) a missing need fails the test
//! instead: the full suite can never skip silently.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The variable that turns every skip into a failure.
pub const STRICT: &str = "MCB_TEST_STRICT";

/// Something a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Real borg 1.4.5 (`MCB_BORG14`) and the python beside it.
    Borg14,
    /// Debian's borg 1.2.x (`MCB_BORG12`).
    Borg12,
    /// A real OpenSSH server and client, and root: `sshd.rs` runs sshd as root and tests log in as
    /// root.
    Sshd,
    /// A reachable Docker engine, the docker CLI and the local test images.
    Docker,
    /// Root: `chown` to other users, device nodes, `chroot`, `setuid`.
    Root,
    /// The `file` tool.
    FileTool,
    /// Debian's prometheus-node-exporter.
    NodeExporter,
    /// `systemd-analyze`, to verify unit files (no running systemd needed).
    SystemdAnalyze,
    /// aiosmtpd (PyPI) in the python beside borg 1.4.5: a real SMTP server.
    Aiosmtpd,
}

const ALL: [Need; 9] = [
    Need::Borg14,
    Need::Borg12,
    Need::Sshd,
    Need::Docker,
    Need::Root,
    Need::FileTool,
    Need::NodeExporter,
    Need::SystemdAnalyze,
    Need::Aiosmtpd,
];

impl Need {
    fn index(self) -> usize {
        ALL.iter().position(|n| *n == self).expect("listed")
    }

    /// The skipped group, as "tests needing …".
    fn what(self) -> &'static str {
        match self {
            Need::Borg14 => "borg 1.4.5",
            Need::Borg12 => "Debian's borg 1.2",
            Need::Sshd => "a real OpenSSH server",
            Need::Docker => "Docker",
            Need::Root => "root",
            Need::FileTool => "the file tool",
            Need::NodeExporter => "prometheus-node-exporter",
            Need::SystemdAnalyze => "systemd-analyze",
            Need::Aiosmtpd => "aiosmtpd",
        }
    }

    /// How to get it.
    fn how(self) -> &'static str {
        match self {
            Need::Borg14 => "run scripts/setup-oracles.sh, or set MCB_BORG14",
            Need::Borg12 => "run scripts/setup-oracles.sh, or set MCB_BORG12",
            Need::Sshd => "run scripts/setup-oracles.sh (openssh-server), as root",
            Need::Docker => {
                "start a Docker engine this user may use, then run scripts/build-test-images.sh"
            }
            Need::Root => "run the tests as root (scripts/test.sh does)",
            Need::FileTool => "run scripts/setup-oracles.sh (Debian package file)",
            Need::NodeExporter => {
                "run scripts/setup-oracles.sh (Debian package prometheus-node-exporter)"
            }
            Need::SystemdAnalyze => "run scripts/setup-oracles.sh (Debian package systemd)",
            Need::Aiosmtpd => "run scripts/setup-oracles.sh (aiosmtpd from PyPI)",
        }
    }

    /// `Err(what is missing)` unless the need is met.
    fn check(self) -> Result<(), String> {
        match self {
            Need::Borg14 => {
                let borg = super::borg14_path();
                exists(&borg)?;
                exists(&borg.with_file_name("python"))
            }
            Need::Borg12 => exists(&super::borg12_path()),
            Need::Sshd => {
                exists(Path::new("/usr/sbin/sshd"))?;
                on_path("ssh")?;
                on_path("ssh-keygen")?;
                root()
            }
            Need::Docker => docker(),
            Need::Root => root(),
            Need::FileTool => on_path("file"),
            Need::NodeExporter => exists(Path::new("/usr/bin/prometheus-node-exporter")),
            Need::SystemdAnalyze => on_path("systemd-analyze"),
            Need::Aiosmtpd => {
                let imported = Command::new(super::borg14_python())
                    .args(["-c", "import aiosmtpd"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if imported {
                    Ok(())
                } else {
                    Err("the python beside borg 1.4.5 cannot import aiosmtpd".into())
                }
            }
        }
    }

    /// The outcome of [`Need::check`], from the first call on.
    fn status(self) -> &'static Result<(), String> {
        static STATUS: [OnceLock<Result<(), String>>; ALL.len()] =
            [const { OnceLock::new() }; ALL.len()];
        STATUS[self.index()].get_or_init(|| self.check())
    }
}

fn exists(path: &Path) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!("{} does not exist", path.display()))
    }
}

fn on_path(name: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
        Ok(())
    } else {
        Err(format!("no {name} on PATH"))
    }
}

fn root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    match unsafe { libc::geteuid() } {
        0 => Ok(()),
        uid => Err(format!("running as uid {uid}, not root")),
    }
}

fn docker() -> Result<(), String> {
    let run = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("no docker CLI ({e})"))
    };
    let version = run(&["version", "--format", "{{.Server.Version}}"])?;
    if !version.status.success() {
        let err = String::from_utf8_lossy(&version.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        // The CLI's line goes on with the API request it tried; the reason comes before.
        let reason: String = first
            .split(": Get \"")
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        return Err(format!("no Docker engine reachable: {}", reason.trim()));
    }
    let missing: Vec<&str> = super::mailcow::TEST_IMAGES
        .into_iter()
        .filter(|image| {
            run(&["image", "inspect", "--format", "{{.Id}}", image])
                .is_ok_and(|out| !out.status.success())
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("test images missing: {}", missing.join(", ")))
    }
}

fn strict() -> bool {
    std::env::var_os(STRICT).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether every one of `needs` is met. If not: with [`STRICT`] set, panics with what is missing;
/// otherwise says so once per missing need (for the whole process) and returns false.
pub fn met(needs: &[Need]) -> bool {
    let missing: Vec<(Need, &String)> = needs
        .iter()
        .filter_map(|need| need.status().as_ref().err().map(|why| (*need, why)))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if strict() {
        let lines: Vec<String> = missing
            .iter()
            .map(|(need, why)| format!("needs {}: {why}; {}", need.what(), need.how()))
            .collect();
        panic!("{STRICT} is set and this test {}", lines.join("; and "));
    }
    static SAID: [OnceLock<()>; ALL.len()] = [const { OnceLock::new() }; ALL.len()];
    for (need, why) in missing {
        SAID[need.index()].get_or_init(|| {
            // Straight to the stderr file descriptor: the harness captures `eprintln!` of
            // passing tests, and these lines are meant to be seen.
            let line = format!(
                "skipped: tests needing {} ({why}; {}; {STRICT}=1 makes this a failure)\n",
                need.what(),
                need.how()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        });
    }
    false
}

/// Returns from the calling test (which passes) unless every named [`Need`] is met; with
/// `MCB_TEST_STRICT` set, fails it instead. (In scope in every test module: `#[macro_use]` on
/// `mod require` and `mod common`.)
macro_rules! require {
    ($($need:ident),+ $(,)?) => {
        if !$crate::common::require::met(&[$($crate::common::require::Need::$need),+]) {
            return;
        }
    };
}
