//! The Docker layer against the real engine: the helper image made from our own executable (and
//! reused), a hardened helper container's life (stdin in, stdout out, exit code, removal), and
//! commands run in another container with their stdin, output and exit codes. `docker` (the
//! CLI) is only the test's witness. Needs the local test images (scripts/build-test-images.sh).

use crate::common;

use std::process::Command;

use mailcow_borg::docker::Engine;
use mailcow_borg::docker::helper::{HelperLimits, HelperMount, HelperSpec, StdoutTo};
use mailcow_borg::docker::image::ensure_helper_image;
use tokio::io::AsyncWriteExt;

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A busybox container that runs until the test ends.
struct Sleeper(String);

impl Sleeper {
    fn start() -> Sleeper {
        let (ok, id) = docker(&[
            "run",
            "-d",
            "--rm",
            common::mailcow::BUSYBOX_IMAGE,
            "sleep",
            "600",
        ]);
        assert!(ok, "docker run {}: {id}", common::mailcow::BUSYBOX_IMAGE);
        Sleeper(id)
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn the_helper_image_is_our_executable_and_the_helper_is_hardened_and_removed() {
    require!(Docker);
    runtime().block_on(async {
        let engine = Engine::connect().await.unwrap();
        let executable = std::fs::read(env!("CARGO_BIN_EXE_mailcow-borg")).unwrap();
        let (image, _) = ensure_helper_image(&engine, &executable, env!("CARGO_PKG_VERSION"))
            .await
            .unwrap();
        let (again, made) = ensure_helper_image(&engine, &executable, env!("CARGO_PKG_VERSION"))
            .await
            .unwrap();
        assert_eq!((again.as_str(), made), (image.as_str(), false), "reused");

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "not in the environment").unwrap();
        let spec = HelperSpec {
            image: image.clone(),
            args: vec!["--version".into()],
            working_dir: "/".into(),
            mounts: vec![HelperMount::Bind {
                source: secret.to_str().unwrap().into(),
                target: "/run/secrets/passphrase".into(),
                read_only: true,
            }],
            network: "none".into(),
            capabilities: vec!["DAC_OVERRIDE".into()],
            env: vec![],
            labels: vec![],
            limits: HelperLimits {
                memory_mib: 256,
                pids: 64,
            },
        };
        let mut helper = engine.start_helper(&spec).await.unwrap();
        let output = helper.relay_output(StdoutTo::Capture);
        assert_eq!(helper.wait().await.unwrap(), 0);
        let captured = String::from_utf8(output.await.unwrap().unwrap()).unwrap();
        assert!(captured.starts_with("mailcow-borg "), "{captured:?}");

        let (ok, hardening) = docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} {{.Config.Env}}",
            &helper.id,
        ]);
        assert!(ok);
        assert!(
            hardening.starts_with(
                "true [ALL] [DAC_OVERRIDE] [no-new-privileges] 268435456 268435456 64"
            ),
            "{hardening}"
        );
        assert!(!hardening.contains("not in the environment"));
        let id = helper.id.clone();
        helper.remove().await.unwrap();
        assert!(!docker(&["inspect", &id]).0, "the helper is gone");
    });
}

#[test]
fn a_helper_reads_its_stdin_and_its_exit_code_is_reported() {
    require!(Docker);
    runtime().block_on(async {
        let engine = Engine::connect().await.unwrap();
        // Our executable's stdin-reading path is `create -`; here busybox's `sh` stands in.
        let spec = HelperSpec {
            image: common::mailcow::BUSYBOX_IMAGE.into(),
            args: vec![
                "sh".into(),
                "-c".into(),
                "cat; echo to-stderr >&2; exit 7".into(),
            ],
            working_dir: "/".into(),
            mounts: vec![],
            network: "none".into(),
            capabilities: vec![],
            env: vec![],
            labels: vec![],
            limits: HelperLimits {
                memory_mib: 256,
                pids: 64,
            },
        };
        let mut helper = engine.start_helper(&spec).await.unwrap();
        let output = helper.relay_output(StdoutTo::Capture);
        let mut stdin = helper.take_stdin().unwrap();
        stdin.write_all(b"through stdin\n").await.unwrap();
        stdin.shutdown().await.unwrap();
        assert_eq!(helper.wait().await.unwrap(), 7);
        assert_eq!(output.await.unwrap().unwrap(), b"through stdin\n");
        helper.remove().await.unwrap();
    });
}

#[test]
fn commands_in_a_container_get_stdin_and_report_output_and_exit_codes() {
    require!(Docker);
    let sleeper = Sleeper::start();
    runtime().block_on(async {
        let engine = Engine::connect().await.unwrap();
        let (stdout, finished) = engine
            .exec_capture(&sleeper.0, &["cat"], b"secret on stdin")
            .await
            .unwrap();
        assert_eq!(
            (stdout.as_slice(), finished.exit_code),
            (&b"secret on stdin"[..], 0)
        );

        let (_, failed) = engine
            .exec_capture(
                &sleeper.0,
                &["sh", "-c", "echo first >&2; echo why >&2; exit 3"],
                b"",
            )
            .await
            .unwrap();
        assert_eq!(failed.exit_code, 3);
        assert_eq!(failed.last_error_line(), "why");

        // A large output arrives whole, piece by piece.
        let mut stream = engine
            .exec_stream(
                &sleeper.0,
                &[
                    "sh",
                    "-c",
                    "busybox yes 0123456789abcdef | busybox head -c 20000000",
                ],
                b"",
            )
            .await
            .unwrap();
        let (mut total, mut pieces) = (0, 0);
        while let Some(piece) = stream.next_stdout().await.unwrap() {
            total += piece.len();
            pieces += 1;
        }
        assert_eq!(total, 20_000_000);
        assert!(pieces > 1);
        assert_eq!(stream.finish().await.unwrap().exit_code, 0);

        let (_, missing) = engine
            .exec_capture(&sleeper.0, &["no-such-tool"], b"")
            .await
            .unwrap();
        assert_ne!(missing.exit_code, 0, "a missing executable is an exit code");
    });
}

/// The Dockerfile's `prebuilt` target makes a working helper image with nothing pulled.
#[test]
fn the_dockerfile_builds_the_helper_from_a_prebuilt_binary() {
    require!(Docker);
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::repo_root().join("Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_mailcow-borg"),
        context.path().join("mailcow-borg"),
    )
    .unwrap();
    let tag = format!("mcb-test/prebuilt-helper:{}", std::process::id());
    let (ok, _) = docker(&[
        "build",
        "-q",
        "--target",
        "prebuilt",
        "--build-arg",
        "BINARY=mailcow-borg",
        "-t",
        &tag,
        context.path().to_str().unwrap(),
    ]);
    assert!(ok, "docker build --target prebuilt");
    let (ok, version) = docker(&["run", "--rm", &tag, "--version"]);
    docker(&["rmi", &tag]);
    assert!(ok);
    assert!(version.starts_with("mailcow-borg "), "{version}");
}

/// The "Shocker" escape: `open_by_handle_at` opens any file of the host's file system by its
/// handle, and Docker's default seccomp profile allows it to holders of `DAC_READ_SEARCH`. Our
/// helpers never hold it: with their capabilities the call is denied before the kernel looks at
/// its arguments (EPERM), where with `DAC_READ_SEARCH` it gets as far as the bad address
/// (EFAULT) — the control that shows the probe tells the two apart.
#[test]
fn the_helpers_capabilities_keep_open_by_handle_at_out_of_reach() {
    require!(Docker);
    use mailcow_borg::mailcow::access::{READ_ANY_FILE, WRITE_ANY_FILE};
    const EPERM: &str = "1";
    const EFAULT: &str = "14";
    let probe = |capabilities: &[&str]| -> String {
        runtime().block_on(async {
            let engine = Engine::connect().await.unwrap();
            let spec = HelperSpec {
                image: common::mailcow::DB_IMAGE.into(),
                // open_by_handle_at(AT_FDCWD, NULL, 0) on x86_64: its errno.
                args: vec![
                    "perl".into(),
                    "-e".into(),
                    "syscall(304, -100, 0, 0); print $!+0".into(),
                ],
                working_dir: "/".into(),
                mounts: vec![],
                network: "none".into(),
                capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
                env: vec![],
                labels: vec![],
                limits: HelperLimits::default(),
            };
            let mut helper = engine.start_helper(&spec).await.unwrap();
            let output = helper.relay_output(StdoutTo::Capture);
            assert_eq!(helper.wait().await.unwrap(), 0);
            let errno = String::from_utf8(output.await.unwrap().unwrap()).unwrap();
            helper.remove().await.unwrap();
            errno
        })
    };
    assert_eq!(probe(&["DAC_READ_SEARCH"]), EFAULT, "the control");
    assert_eq!(probe(&READ_ANY_FILE), EPERM, "a backup's helper");
    assert_eq!(probe(&WRITE_ANY_FILE), EPERM, "a restore's helper");
}
