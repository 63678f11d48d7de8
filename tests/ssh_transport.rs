//! The SSH transport against a real OpenSSH server on loopback and real `borg serve` behind it:
//! every client key type, borg's location forms, host key verification (unknown, accepted,
//! changed, hashed, known only by another algorithm), and each way authentication can fail.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::sshd::{KEY_PASSPHRASE, Sshd};
use common::{DiskRepo, copy_tree};
use mailcow_borg::format::envelope::MANIFEST_ID;
use mailcow_borg::repo::location::{Location, Repo, SshTarget};
use mailcow_borg::repo::repository::{OpenOptions, RepoError, Repository};
use mailcow_borg::repo::serve::{ServeRepository, negotiate};
use mailcow_borg::repo::ssh::{self, SshError, SshOptions};
use mailcow_borg::repo::transport::Connection;

fn options(sshd: &Sshd, identity: &str, borg: &Path) -> SshOptions {
    let mut options = SshOptions::defaults(sshd.dir.path(), "root");
    options.known_hosts = sshd.known_hosts();
    options.identities = vec![sshd.path(identity)];
    options.remote_path = borg.display().to_string();
    options
}

fn target(url: &str) -> SshTarget {
    match Location::parse(url, None).unwrap().repo {
        Repo::Ssh(target) => target,
        other => panic!("{url} is not remote: {other:?}"),
    }
}

fn fixture_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    copy_tree(&DiskRepo::fixture(name).dir, &path);
    (dir, path)
}

async fn connect(target: &SshTarget, options: &SshOptions) -> Result<Connection, SshError> {
    let streams = ssh::connect(target, options).await?;
    Ok(Connection::new(streams, Arc::new(|_line| {}), None))
}

/// Opens the repository at the target's path and fetches its manifest; returns the repo id.
async fn open_and_read(connection: &Connection, path: &str) -> Result<[u8; 32], RepoError> {
    negotiate(&connection.rpc).await?;
    let repo = ServeRepository::open(connection.rpc.clone(), path, &OpenOptions::read()).await?;
    repo.get(&MANIFEST_ID).await?;
    Ok(*repo.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_logs_in_and_reads_a_repository() {
    require!(Borg14, Borg12, Sshd);
    let sshd = Sshd::start();
    let (_dir, path) = fixture_copy("borg14-repokey-blake2");
    let expected = DiskRepo::fixture("borg14-repokey-blake2").id;
    let url = sshd.url(&path);
    for (identity, borg) in [
        ("id_ed25519", common::borg14()),
        ("id_ecdsa", common::borg14()),
        ("id_rsa", common::borg14()),
        ("id_ed25519", common::borg12()),
    ] {
        let connection = connect(&target(&url), &options(&sshd, identity, &borg))
            .await
            .unwrap_or_else(|e| panic!("{identity}: {e}"));
        let id = open_and_read(&connection, &target(&url).path)
            .await
            .unwrap_or_else(|e| panic!("{identity} via {}: {e}", borg.display()));
        assert_eq!(id, expected);
        connection.close().await.unwrap();
    }

    let mut encrypted = options(&sshd, "id_encrypted", &common::borg14());
    let err = connect(&target(&url), &encrypted).await.err().unwrap();
    assert!(matches!(err, SshError::KeyEncrypted(_)), "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
    encrypted.key_passphrase = Some("wrong".into());
    let err = connect(&target(&url), &encrypted).await.err().unwrap();
    assert!(matches!(err, SshError::KeyUnusable { .. }), "{err}");
    encrypted.key_passphrase = Some(KEY_PASSPHRASE.into());
    let connection = connect(&target(&url), &encrypted).await.unwrap();
    assert_eq!(
        open_and_read(&connection, &target(&url).path)
            .await
            .unwrap(),
        expected
    );
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_and_cwd_relative_locations_are_resolved_by_the_server() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    // The session starts in the login's home, so `/~/x` and `/./x` both name $HOME/x.
    let home = PathBuf::from(std::env::var("HOME").unwrap());
    let dir = tempfile::tempdir_in(&home).unwrap();
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    copy_tree(
        &DiskRepo::fixture("borg12-repokey").dir,
        &dir.path().join("repo"),
    );
    let expected = DiskRepo::fixture("borg12-repokey").id;
    let port = sshd.port;
    for url in [
        format!("ssh://root@127.0.0.1:{port}/~/{name}/repo"),
        format!("ssh://root@127.0.0.1:{port}/./{name}/repo"),
        format!("ssh://root@127.0.0.1:{port}/{}/repo", dir.path().display()),
    ] {
        let target = target(&url);
        let connection = connect(&target, &options(&sshd, "id_ed25519", &common::borg14()))
            .await
            .unwrap();
        let id = open_and_read(&connection, &target.path)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(id, expected, "{url}");
        connection.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_verified_against_known_hosts() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let (_dir, path) = fixture_copy("borg14-none");
    let target = target(&sshd.url(&path));
    let mut opts = options(&sshd, "id_ed25519", &common::borg14());
    let fingerprint = sshd.host_fingerprint("ed25519");

    // Unknown: refused, with the fingerprint and the line that would trust it.
    let empty = sshd.path("known_hosts.empty");
    opts.known_hosts = empty.clone();
    let err = connect(&target, &opts).await.err().unwrap();
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&fingerprint), "{message}");
    assert!(
        message.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{message}"
    );
    assert!(!empty.exists(), "a refused key must not be recorded");

    // Opt-in: recorded, and from then on known without the opt-in.
    opts.accept_new_host_key = true;
    connect(&target, &opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    opts.accept_new_host_key = false;
    let connection = connect(&target, &opts).await.unwrap();
    open_and_read(&connection, &target.path).await.unwrap();
    connection.close().await.unwrap();

    // Hashed by ssh-keygen -H: still known.
    let status = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(std::fs::read_to_string(&empty).unwrap().starts_with("|1|"));
    connect(&target, &opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // Known only by its ECDSA key: the client asks for that algorithm and is satisfied.
    let ecdsa = std::fs::read_to_string(sshd.path("host_ecdsa.pub")).unwrap();
    let only_ecdsa = sshd.path("known_hosts.ecdsa");
    std::fs::write(&only_ecdsa, format!("[127.0.0.1]:{} {ecdsa}", sshd.port)).unwrap();
    opts.known_hosts = only_ecdsa;
    connect(&target, &opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // Changed: another key recorded for this host is refused, even with accept-new.
    let stranger = std::fs::read_to_string(sshd.path("id_stranger.pub")).unwrap();
    let changed = sshd.path("known_hosts.changed");
    std::fs::write(
        &changed,
        format!("# first line\n[127.0.0.1]:{} {stranger}", sshd.port),
    )
    .unwrap();
    opts.known_hosts = changed.clone();
    opts.accept_new_host_key = true;
    let err = connect(&target, &opts).await.err().unwrap();
    assert!(
        matches!(err, SshError::ChangedHostKey { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&fingerprint), "{err}");
    assert!(err.to_string().contains("sed -i '2d'"), "{err}");
}

/// The processes below `pid` (sshd's per-connection processes and the `borg serve` they run).
fn descendants(pid: u32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut parents = vec![pid as i32];
    while let Some(parent) = parents.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The parent pid is the second field after the parenthesised command name.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            if after_name.split(' ').nth(1).and_then(|p| p.parse().ok()) == Some(parent) {
                found.push(child);
                parents.push(child);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_link_is_detected_by_keepalives() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let (_dir, path) = fixture_copy("borg14-none");
    let target = target(&sshd.url(&path));
    let mut opts = options(&sshd, "id_ed25519", &common::borg14());
    opts.keepalive = std::time::Duration::from_secs(1);
    let connection = connect(&target, &opts).await.unwrap();
    let repo = {
        negotiate(&connection.rpc).await.unwrap();
        ServeRepository::open(connection.rpc.clone(), &target.path, &OpenOptions::read())
            .await
            .unwrap()
    };
    // Freeze the server side: the TCP connection stays up, nothing answers any more.
    let frozen = descendants(sshd.pid());
    assert!(!frozen.is_empty(), "no session processes found");
    for pid in &frozen {
        // SAFETY: kill only sends a signal; the pids are this test's own sshd's children.
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    let started = std::time::Instant::now();
    let result =
        tokio::time::timeout(std::time::Duration::from_secs(30), repo.get(&MANIFEST_ID)).await;
    for pid in &frozen {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    let err = result
        .expect("the dead link was not detected within 30 s")
        .unwrap_err();
    assert!(
        matches!(err, RepoError::Rpc(_)),
        "{err} after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_missing_pieces_are_explained() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let (_dir, path) = fixture_copy("borg14-none");
    let target = target(&sshd.url(&path));

    let err = connect(&target, &options(&sshd, "id_stranger", &common::borg14()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SshError::AuthRefused { .. }), "{err}");
    assert!(err.to_string().contains("as root"), "{err}");

    let err = connect(&target, &options(&sshd, "no_such_key", &common::borg14()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SshError::NoIdentity { .. }), "{err}");

    let mut closed_port = target.clone();
    closed_port.port = Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    let err = connect(
        &closed_port,
        &options(&sshd, "id_ed25519", &common::borg14()),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SshError::Connect { .. }), "{err}");

    // No borg at the remote path: the shell's complaint reaches the error.
    let connection = connect(
        &target,
        &options(&sshd, "id_ed25519", Path::new("/nonexistent/borg")),
    )
    .await
    .unwrap();
    let err = negotiate(&connection.rpc).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/borg"), "{err}");
    assert!(connection.close().await.is_err());

    // The server's own restrictions arrive as typed errors.
    let mut restricted = options(&sshd, "id_ed25519", &common::borg14());
    restricted.serve_args = vec!["--restrict-to-path".into(), "/nonexistent".into()];
    let connection = connect(&target, &restricted).await.unwrap();
    let err = open_and_read(&connection, &target.path).await.unwrap_err();
    assert!(matches!(err, RepoError::PathNotAllowed(_)), "{err}");
    connection.close().await.unwrap();
}
