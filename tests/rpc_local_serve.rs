//! The RPC client against real `borg serve` (1.4.5 and Debian's 1.2.x) as a local process, on
//! copies of the fixture repositories: negotiate, open, load the key, page through `list`, fetch
//! every object with pipelined `get`s and open each with the format core; and the server's
//! refusals arrive as typed errors.

use crate::common;

use std::path::{Path, PathBuf};

use common::{DiskRepo, copy_tree, hex};
use futures::future::join_all;
use mailcow_borg::format::envelope::{MANIFEST_ID, ObjectKey};
use mailcow_borg::format::key::{EncryptedKey, KeyType};
use mailcow_borg::format::manifest::Manifest;
use mailcow_borg::repo::local;
use mailcow_borg::repo::repository::{OpenOptions, RepoError, Repository};
use mailcow_borg::repo::serve::{ServeRepository, negotiate};
use mailcow_borg::repo::transport::Connection;

fn serve(borg: &Path, extra: &[&str]) -> Connection {
    let streams = local::spawn(borg, extra).expect("start borg serve");
    Connection::new(streams, std::sync::Arc::new(|_line| {}), None)
}

async fn read_whole_repository(borg: PathBuf, fixture: &str) {
    let disk = DiskRepo::fixture(fixture);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    copy_tree(&disk.dir, &path);

    let server = serve(&borg, &[]);
    let rpc = &server.rpc;
    let version = negotiate(rpc).await.unwrap();
    assert!(version >= (1, 2, 0), "{version:?}");
    let repo = ServeRepository::open(rpc.clone(), path.to_str().unwrap(), &OpenOptions::read())
        .await
        .unwrap();
    assert_eq!(repo.id(), &disk.id);

    let manifest_object = repo.get(&MANIFEST_ID).await.unwrap();
    let key_type = KeyType::identify(&manifest_object).unwrap();
    let key = match repo.load_key().await.unwrap() {
        Some(text) => {
            let material = EncryptedKey::from_text(&text)
                .unwrap()
                .open(disk.passphrase().as_bytes())
                .unwrap();
            ObjectKey::new(key_type, material)
        }
        None => disk.object_key(),
    };
    let manifest = Manifest::unpack(
        &key,
        &key.open(&MANIFEST_ID, &manifest_object, None).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest.archives.len(),
        disk.meta["archives"].as_array().unwrap().len()
    );

    // Page through the index in small pages, as borg pages in large ones.
    let mut ids = Vec::new();
    loop {
        let page = repo.list(7, ids.last()).await.unwrap();
        if page.is_empty() {
            break;
        }
        ids.extend(page);
    }
    let mut expected: Vec<_> = disk.objects.keys().copied().collect();
    expected.sort();
    let mut listed = ids.clone();
    listed.sort();
    assert_eq!(listed, expected, "{fixture}: list");

    // All gets at once: the client pipelines them (at most 100 in flight).
    let objects = join_all(ids.iter().map(|id| repo.get(id))).await;
    for (id, stored) in ids.iter().zip(objects) {
        let stored = stored.unwrap();
        assert_eq!(stored, disk.objects[id], "{fixture}: object {}", hex(id));
        key.open(id, &stored, None)
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    }
    let missing = repo.get(&[0x5a; 32]).await.unwrap_err();
    assert!(
        matches!(&missing, RepoError::ObjectNotFound { id } if *id == hex(&[0x5a; 32])),
        "{missing}"
    );
    server.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_fixture_object_through_borg_serve_14() {
    require!(Borg14);
    for fixture in ["borg14-repokey-blake2", "borg14-none", "borg12-keyfile"] {
        read_whole_repository(common::borg14(), fixture).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_fixture_object_through_borg_serve_12() {
    require!(Borg12);
    for fixture in ["borg12-repokey", "borg14-authenticated"] {
        read_whole_repository(common::borg12(), fixture).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors() {
    require!(Borg14, Borg12);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    type Expect = fn(&RepoError) -> bool;
    let cases: Vec<(Vec<&str>, String, Expect)> = vec![
        (
            vec![],
            dir.path().join("nowhere").display().to_string(),
            |e| matches!(e, RepoError::DoesNotExist(_)),
        ),
        (vec![], empty.display().to_string(), |e| {
            matches!(e, RepoError::NotARepository(_))
        }),
        (
            vec!["--restrict-to-path", "/nonexistent-restricted"],
            empty.display().to_string(),
            |e| matches!(e, RepoError::PathNotAllowed(_)),
        ),
    ];
    for borg in [common::borg14(), common::borg12()] {
        for (args, path, expected) in &cases {
            let server = serve(&borg, args);
            negotiate(&server.rpc).await.unwrap();
            let err =
                match ServeRepository::open(server.rpc.clone(), path, &OpenOptions::read()).await {
                    Err(e) => e,
                    Ok(_) => panic!("{} opened {path}", borg.display()),
                };
            assert!(expected(&err), "{}: {path}: {err}", borg.display());
            server.close().await.unwrap();
        }
    }
}
