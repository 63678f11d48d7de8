//! The write side of the repository client against real `borg serve` (1.4.5 and Debian's 1.2.x):
//! puts that a rollback drops and a commit keeps, deletes, and nonce reservations that real borg
//! honours afterwards — its next objects use IVs above ours, so no keystream is ever reused.

use crate::common;

use std::collections::HashSet;
use std::path::Path;

use common::{DiskRepo, access_options, copy_tree, hex};
use mailcow_borg::format::compress::Compression;
use mailcow_borg::format::envelope::{MANIFEST_ID, cipher_blocks};
use mailcow_borg::format::manifest::Operation;
use mailcow_borg::format::nonce::{RESERVATION_BLOCKS, parse_nonce_file};
use mailcow_borg::ops::nonces::NonceManager;
use mailcow_borg::ops::open::open;
use mailcow_borg::repo::location::Location;
use mailcow_borg::repo::repository::RepoError;

async fn write_session(borg: &Path, fixture: &str) {
    let disk = DiskRepo::fixture(fixture);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("repo");
    copy_tree(&disk.dir, &path);
    let location = Location::parse(path.to_str().unwrap(), None).unwrap();
    let mut options = access_options(borg, &disk.passphrase(), work.path());
    let key_file = disk.dir.with_extension("key");
    if key_file.exists() {
        options.key_file = Some(key_file.clone());
    }
    let opened = open(&location, &options, Operation::Write).await.unwrap();
    let repo = opened.repo.clone();
    let key = opened.key.clone();
    let nonces = NonceManager::new(
        repo.clone(),
        options.security_dir.join(hex(repo.id())),
        opened.manifest_nonce,
    );
    let plaintext = b"written by mailcow-borg".to_vec();
    let id = key.id_hash(&plaintext);
    let payload = "lz4".parse::<Compression>().unwrap().compress(&plaintext);
    let sealed = || async {
        let iv = nonces.allocate(cipher_blocks(payload.len())).await.unwrap();
        (iv, key.seal(&payload, iv))
    };

    // A rolled-back put leaves nothing behind.
    let (first_iv, stored) = sealed().await;
    repo.put(&id, stored).await.unwrap();
    repo.rollback().await.unwrap();
    assert!(matches!(
        repo.get(&id).await,
        Err(RepoError::ObjectNotFound { .. })
    ));

    // A committed one is there, and opens to what was put.
    let (second_iv, stored) = sealed().await;
    assert!(second_iv > first_iv, "an IV was handed out twice");
    repo.put(&id, stored.clone()).await.unwrap();
    repo.commit(false).await.unwrap();
    assert_eq!(repo.get(&id).await.unwrap(), stored);
    assert_eq!(key.open(&id, &stored, None).unwrap(), plaintext);

    // Both records of the reservation agree and cover what was used.
    let reserved_end = parse_nonce_file(&std::fs::read_to_string(path.join("nonce")).unwrap())
        .expect("the repository's nonce file");
    let local =
        std::fs::read_to_string(options.security_dir.join(hex(repo.id())).join("nonce")).unwrap();
    assert_eq!(parse_nonce_file(&local), Some(reserved_end));
    assert!(reserved_end >= second_iv + RESERVATION_BLOCKS, "{fixture}");

    // Deleted again, so the repository holds nothing borg would call an orphan.
    repo.delete(&id).await.unwrap();
    repo.commit(false).await.unwrap();
    drop(repo);
    opened.close().await.unwrap();

    // Real borg, with no local memory of this repository, writes after us: every object it adds
    // is encrypted with an IV above our reservation.
    let before: HashSet<[u8; 32]> = DiskRepo::open(&path).objects.keys().copied().collect();
    let borg_base = work.path().join("borg-base");
    let source = work.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("file"), b"new data from real borg").unwrap();
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(borg);
        if key_file.exists() {
            command.env("BORG_KEY_FILE", &key_file);
        }
        let output = command
            .args(args)
            .current_dir(&source)
            .env("BORG_PASSPHRASE", disk.passphrase())
            .env("BORG_BASE_DIR", &borg_base)
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{fixture}: borg {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&["create", &format!("{}::after-us", path.display()), "."]);
    let after = DiskRepo::open(&path);
    let new: Vec<_> = after
        .objects
        .iter()
        .filter(|(id, _)| !before.contains(*id) && **id != MANIFEST_ID)
        .collect();
    assert!(!new.is_empty());
    for (id, stored) in new {
        let iv = key.stored_iv(stored).unwrap();
        assert!(
            iv >= reserved_end,
            "{fixture}: borg used IV {iv} < our reservation end {reserved_end} for {}",
            hex(id)
        );
    }
    run(&["check", path.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_commits_and_nonce_reservations_with_borg_serve_14() {
    require!(Borg14);
    write_session(&common::borg14(), "borg14-repokey-blake2").await;
    write_session(&common::borg14(), "borg12-keyfile").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_commits_and_nonce_reservations_with_borg_serve_12() {
    require!(Borg12);
    write_session(&common::borg12(), "borg12-repokey").await;
}
