//! The binary must run on any Linux host and in a FROM-scratch image: no dynamic loader, no
//! shared libraries. Proven by `file` and by running it in an empty chroot (needs root, as CI is).

use std::path::Path;
use std::process::Command;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mailcow-borg"))
}

#[test]
fn file_says_static() {
    require!(FileTool);
    let out = Command::new("file")
        .arg(binary())
        .output()
        .expect("`file` is installed by scripts/setup-oracles.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("static"), "not a static binary: {text}");
    assert!(
        !text.contains("interpreter"),
        "has a dynamic loader: {text}"
    );
}

#[test]
fn runs_in_an_empty_chroot() {
    require!(Root);
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(binary(), root.path().join("mailcow-borg")).unwrap();
    let out = Command::new("chroot")
        .arg(root.path())
        .args(["/mailcow-borg", "--version"])
        .output()
        .expect("run chroot (the test suite runs as root)");
    assert!(
        out.status.success(),
        "failed in an empty chroot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("mailcow-borg {}", env!("CARGO_PKG_VERSION"))
    );
}
