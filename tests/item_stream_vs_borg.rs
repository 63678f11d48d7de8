//! A multi-chunk item stream made by real borg 1.4.5 at test time: our encoder and items chunker,
//! fed borg's items, must reproduce borg's item-stream chunks exactly (so metadata dedups between
//! borg and us), and our decoder must read the stream across its chunk boundaries.

use crate::common;

use std::process::Command;

use common::DiskRepo;
use mailcow_borg::format::archive::{ArchiveMeta, ItemStreamDecoder, ItemStreamWriter};
use mailcow_borg::format::envelope::MANIFEST_ID;
use mailcow_borg::format::manifest::Manifest;

fn borg(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(common::borg14())
        .args(args)
        .current_dir(dir)
        .env("BORG_BASE_DIR", dir.join("base"))
        .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
        .env_remove("BORG_REPO")
        .output()
        .expect("run borg");
    assert!(
        out.status.success(),
        "borg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn borgs_multi_chunk_item_stream_is_reproduced_exactly() {
    require!(Borg14);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("mail");
    // 10,000 items of about 200 bytes: an item stream of some 2 MB, more than borg's item
    // chunker can put into two chunks (at most 512 KiB each), whatever the files' times make
    // of its cut points.
    for d in 0..100 {
        let folder = tree.join(format!("domain{}.test/user{d}/Maildir/cur", d % 7));
        std::fs::create_dir_all(&folder).unwrap();
        for f in 0..100 {
            let name = format!(
                "17000{d:02}{f:03}.M{f}P{d}.mail.domain.test,S={}:2,S",
                f * 37
            );
            std::fs::write(
                folder.join(name),
                format!("Subject: {d} {f}\r\n\r\nbody\r\n"),
            )
            .unwrap();
        }
    }
    borg(dir.path(), &["init", "--encryption=none", "repo"]);
    borg(dir.path(), &["create", "repo::a", "mail"]);

    let repo = DiskRepo::open(&dir.path().join("repo"));
    let key = repo.object_key();
    let manifest_plain = key
        .open(&MANIFEST_ID, repo.manifest_object(), None)
        .unwrap();
    let manifest = Manifest::unpack(&key, &manifest_plain).unwrap();
    let archive_id = manifest.archive(b"a").unwrap().id;
    let (meta, _) = ArchiveMeta::unpack(
        &key,
        &key.open(&archive_id, &repo.objects[&archive_id], None)
            .unwrap(),
    )
    .unwrap();
    assert!(
        meta.items.len() >= 3,
        "want several item-stream chunks, got {}",
        meta.items.len()
    );

    let mut decoder = ItemStreamDecoder::new();
    let mut items = Vec::new();
    for id in &meta.items {
        items.extend(
            decoder
                .feed(&key.open(id, &repo.objects[id], None).unwrap())
                .unwrap(),
        );
    }
    decoder.finish().unwrap();
    // mail/, 7 domains, 100 × (user, Maildir, cur), 10,000 files.
    assert_eq!(items.len(), 1 + 7 + 100 * 3 + 10_000);

    let mut writer = ItemStreamWriter::new(key.chunk_seed());
    let mut ids = Vec::new();
    for item in &items {
        ids.extend(writer.push(item).iter().map(|c| key.id_hash(c)));
    }
    ids.extend(writer.finish().iter().map(|c| key.id_hash(c)));
    assert_eq!(ids, meta.items);
}
