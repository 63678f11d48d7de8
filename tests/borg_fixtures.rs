//! Reads every repository real borg (1.4.5 and Debian's 1.2.x) wrote under `testdata/repos`, in all
//! seven key modes: unlocks the key, opens every object (MAC, decompression, id), verifies the
//! manifest and archive TAMs, decodes every item stream, and compares each item with what
//! `borg list` printed and with the source tree the fixture was made from.

use crate::common;

use std::collections::{BTreeSet, HashMap};

use common::{ALL_MODES, DiskRepo, hex, unhex};
use mailcow_borg::format::archive::{ArchiveMeta, ItemStreamDecoder, ItemStreamWriter};
use mailcow_borg::format::compress;
use mailcow_borg::format::envelope::{EnvelopeError, MANIFEST_ID, ObjectKey, cipher_blocks};
use mailcow_borg::format::item::{Item, ItemKind};
use mailcow_borg::format::key::{KeyError, KeyStorage, KeyType};
use mailcow_borg::format::manifest::{self, Manifest};
use mailcow_borg::format::nonce;
use mailcow_borg::format::tam::TamStatus;
use sha2::{Digest, Sha256};

#[test]
fn fixtures_cover_every_mode_for_both_borg_versions() {
    let names: BTreeSet<String> = DiskRepo::fixture_names().into_iter().collect();
    for version in ["borg14", "borg12"] {
        for mode in ALL_MODES {
            assert!(
                names.contains(&format!("{version}-{mode}")),
                "missing {version}-{mode}"
            );
        }
    }
}

#[test]
fn key_type_and_storage_match_the_mode_borg_was_told() {
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        let mode = repo.meta["mode"].as_str().unwrap();
        assert_eq!(repo.key_type().mode_name(), mode, "{name}");
        assert_eq!(KeyType::from_mode_name(mode), Some(repo.key_type()));
        match repo.key_type().storage() {
            KeyStorage::None => assert!(repo.encrypted_key().is_none(), "{name}"),
            KeyStorage::Repository => assert!(repo.config_key.is_some(), "{name}"),
            KeyStorage::Keyfile => {
                assert!(repo.config_key.is_none(), "{name}");
                assert!(repo.encrypted_key().is_some(), "{name}: key file");
            }
        }
    }
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        if let Some(blob) = repo.encrypted_key() {
            assert_eq!(blob.iterations, 100_000, "{name}");
            assert_eq!(
                blob.open(b"not the passphrase"),
                Err(KeyError::WrongPassphrase),
                "{name}"
            );
            let material = blob.open(repo.passphrase().as_bytes()).unwrap();
            assert_eq!(material.repository_id, repo.id, "{name}");
            assert_eq!(material.tam_required, Some(true), "{name}");
        }
    }
}

/// One archive, decoded: its metadata, TAM status, items, and each file's content by path.
struct DecodedArchive {
    meta: ArchiveMeta,
    status: TamStatus,
    items: Vec<Item>,
    contents: HashMap<Vec<u8>, Vec<u8>>,
}

/// What one fixture repository decoded to.
struct Decoded {
    compressors: BTreeSet<&'static str>,
    archives: Vec<DecodedArchive>,
}

/// Opens every object, the manifest, each archive and its items, and each file's content.
fn decode_repository(repo: &DiskRepo) -> Decoded {
    let key = repo.object_key();
    let mut compressors = BTreeSet::new();
    let mut plaintexts = HashMap::new();
    for (id, stored) in &repo.objects {
        let payload = key
            .unseal(id, stored)
            .unwrap_or_else(|e| panic!("{}: {e}", repo.name));
        compressors.insert(compress::detect(&payload).unwrap());
        let plaintext = key
            .open(id, stored, None)
            .unwrap_or_else(|e| panic!("{}: {e}", repo.name));
        plaintexts.insert(*id, plaintext);
    }
    let manifest = Manifest::unpack(&key, &plaintexts[&MANIFEST_ID])
        .unwrap_or_else(|e| panic!("{}: manifest: {e}", repo.name));
    assert_eq!(
        manifest.tam_required(),
        key.material().map(|_| true),
        "{}",
        repo.name
    );
    assert_eq!(manifest.item_keys.len(), 23, "{}", repo.name);

    let mut archives = Vec::new();
    for (name, entry) in &manifest.archives {
        let (meta, status) = ArchiveMeta::unpack(&key, &plaintexts[&entry.id])
            .unwrap_or_else(|e| panic!("{}: archive {name:?}: {e}", repo.name));
        assert_eq!(&meta.name, name);
        assert_eq!(meta.time, entry.time);
        let mut decoder = ItemStreamDecoder::new();
        let mut items = Vec::new();
        for id in &meta.items {
            items.extend(decoder.feed(&plaintexts[id]).unwrap());
        }
        decoder.finish().unwrap();
        let mut contents = HashMap::new();
        for item in &items {
            if let Some(chunks) = &item.chunks {
                let data: Vec<u8> = chunks
                    .iter()
                    .flat_map(|c| plaintexts[&c.id].clone())
                    .collect();
                assert_eq!(data.len() as u64, item.chunks_size());
                for c in chunks {
                    assert_eq!(plaintexts[&c.id].len() as u64, c.size);
                    assert_eq!(
                        repo.objects[&c.id].len() as u64,
                        c.csize,
                        "csize is the stored size"
                    );
                }
                contents.insert(item.path.clone(), data);
            }
        }
        archives.push(DecodedArchive {
            meta,
            status,
            items,
            contents,
        });
    }
    Decoded {
        compressors,
        archives,
    }
}

fn list_type(item: &Item) -> &'static str {
    match item.kind() {
        ItemKind::Regular => "-",
        ItemKind::Directory => "d",
        ItemKind::Symlink => "l",
        ItemKind::Fifo => "p",
        ItemKind::CharDevice => "c",
        ItemKind::BlockDevice => "b",
        ItemKind::Socket => "s",
        ItemKind::Unknown => "?",
    }
}

#[test]
fn every_object_archive_and_item_of_every_fixture_decodes_like_borg_lists_it() {
    let mut compressors_seen = BTreeSet::new();
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        let decoded = decode_repository(&repo);
        compressors_seen.extend(decoded.compressors.iter().copied());
        let expected_archives = repo.meta["archives"].as_array().unwrap();
        assert_eq!(decoded.archives.len(), expected_archives.len(), "{name}");
        let source_tree: HashMap<Vec<u8>, &serde_json::Value> = repo.meta["source_tree"]
            .as_array()
            .unwrap()
            .iter()
            .chain(
                expected_archives
                    .iter()
                    .flat_map(|a| a["unique_files"].as_array().unwrap()),
            )
            .map(|e| (unhex(e["path_hex"].as_str().unwrap()), e))
            .collect();

        for DecodedArchive {
            meta,
            status,
            items,
            contents,
        } in &decoded.archives
        {
            let archive_name = String::from_utf8(meta.name.clone()).unwrap();
            let expected = expected_archives
                .iter()
                .find(|a| a["name"] == archive_name.as_str())
                .unwrap_or_else(|| panic!("{name}: unexpected archive {archive_name}"));
            // Both versions write archive TAMs (1.2.4 writes them; 1.2.5 added checking them).
            assert_eq!(*status, TamStatus::Verified, "{name}/{archive_name}");
            let cp = meta.chunker_params.as_ref().unwrap();
            let cp_text: Vec<String> = cp
                .as_array()
                .unwrap()
                .iter()
                .map(|v| match v {
                    mailcow_borg::format::msgpack::Value::Raw(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    other => other.to_string(),
                })
                .collect();
            let expected_cp = expected["chunker_params"].as_str().unwrap();
            assert!(
                cp_text.join(",") == expected_cp
                    || format!("{},0", expected_cp) == cp_text.join(","),
                "{name}/{archive_name}: chunker params {cp_text:?} vs {expected_cp}"
            );

            let by_path: HashMap<&[u8], &Item> = items.iter().map(|i| (&i.path[..], i)).collect();
            let listed = expected["items"].as_array().unwrap();
            assert_eq!(
                items.len(),
                listed.len(),
                "{name}/{archive_name}: item count"
            );
            for entry in listed {
                let path = unhex(entry["path_hex"].as_str().unwrap());
                let item = by_path
                    .get(&path[..])
                    .unwrap_or_else(|| panic!("{name}/{archive_name}: no item {}", entry["path"]));
                let ctx = format!("{name}/{archive_name}/{}", entry["path"]);
                assert_eq!(list_type(item), entry["type"].as_str().unwrap(), "{ctx}");
                assert_eq!(item.uid.map(u64::from), entry["uid"].as_u64(), "{ctx}");
                assert_eq!(item.gid.map(u64::from), entry["gid"].as_u64(), "{ctx}");
                let user = item
                    .user
                    .clone()
                    .flatten()
                    .map(|u| String::from_utf8(u).unwrap());
                assert_eq!(user.as_deref(), entry["user"].as_str(), "{ctx}");
                if item.kind() == ItemKind::Symlink {
                    assert_eq!(
                        item.source.as_deref(),
                        Some(entry["linktarget"].as_str().unwrap().as_bytes()),
                        "{ctx}"
                    );
                }
                if item.is_hardlink_slave() {
                    let master = by_path[&item.source.as_ref().unwrap()[..]];
                    assert_eq!(master.hardlink_master, Some(true), "{ctx}");
                    assert!(item.chunks.is_none() && item.size.is_none(), "{ctx}");
                }
                if let Some(sha) = entry.get("sha256").and_then(|s| s.as_str()) {
                    let content_path = if item.is_hardlink_slave() {
                        item.source.clone().unwrap()
                    } else {
                        path.clone()
                    };
                    let content = &contents[&content_path];
                    assert_eq!(hex(&Sha256::digest(content)), sha, "{ctx}: content");
                    assert_eq!(
                        item.chunks.as_ref().map_or(0, Vec::len) as u64,
                        entry["num_chunks"].as_u64().unwrap(),
                        "{ctx}"
                    );
                    if !item.is_hardlink_slave() {
                        assert_eq!(item.size, Some(content.len() as u64), "{ctx}: size");
                    }
                }
                if let Some(src) = source_tree.get(&path) {
                    assert_eq!(
                        item.mtime,
                        src["mtime_ns"].as_i64().unwrap(),
                        "{ctx}: mtime ns"
                    );
                    assert_eq!(
                        item.mode,
                        Some(src["st_mode"].as_u64().unwrap() as u32),
                        "{ctx}: mode"
                    );
                    if let Some(xattrs) = src.get("xattrs_hex").and_then(|x| x.as_object()) {
                        let expected_x: Vec<(Vec<u8>, Vec<u8>)> = xattrs
                            .iter()
                            .map(|(k, v)| (k.as_bytes().to_vec(), unhex(v.as_str().unwrap())))
                            .collect();
                        assert_eq!(item.xattrs.as_ref(), Some(&expected_x), "{ctx}: xattrs");
                    }
                }
            }
        }
    }
    for c in ["none", "lz4", "zstd", "zlib", "lzma", "obfuscate"] {
        assert!(
            compressors_seen.contains(c),
            "no fixture object uses {c}: {compressors_seen:?}"
        );
    }
}

#[test]
fn corrupted_objects_are_named_and_refused() {
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        let key = repo.object_key();
        // Obfuscated objects end in padding that nothing covers in unencrypted modes (borg
        // ignores it too), so corrupt a byte in the middle of an object that is not obfuscated.
        let (id, stored) = repo
            .objects
            .iter()
            .find(|(id, data)| {
                **id != MANIFEST_ID
                    && data.len() > 100
                    && key
                        .unseal(id, data)
                        .is_ok_and(|p| compress::detect(&p) != Ok("obfuscate"))
            })
            .unwrap();
        let mut bad = stored.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x40;
        let err = match key.open(id, &bad, None) {
            Err(e) => e,
            Ok(_) => panic!("{name}: corrupted object {} was accepted", hex(id)),
        };
        if key.key_type().is_encrypted() {
            assert_eq!(err, EnvelopeError::MacMismatch { id: hex(id) }, "{name}");
        } else {
            // Unencrypted modes have no MAC: the id check (or decompression) catches it.
            assert!(
                matches!(
                    err,
                    EnvelopeError::IdMismatch { .. } | EnvelopeError::Compression { .. }
                ),
                "{name}: {err}"
            );
        }
        assert!(err.to_string().contains(&hex(id)), "{name}: {err}");
    }
}

#[test]
fn legacy_type_byte_0x01_reads_as_repokey() {
    let repo = DiskRepo::fixture("borg14-repokey");
    let key = repo.object_key();
    for (id, stored) in repo
        .objects
        .iter()
        .filter(|(id, _)| **id != MANIFEST_ID)
        .take(5)
    {
        let mut legacy = stored.clone();
        legacy[0] = 0x01;
        assert_eq!(
            key.open(id, &legacy, None).unwrap(),
            key.open(id, stored, None).unwrap()
        );
    }
    let legacy_key = ObjectKey::new(KeyType::LegacyPassphrase, key.material().unwrap().clone());
    assert_eq!(legacy_key.key_type(), KeyType::Repokey);
}

#[test]
fn every_iv_borg_used_lies_below_the_repository_nonce_reservation() {
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        let key = repo.object_key();
        if !key.key_type().is_encrypted() {
            continue;
        }
        let reserved = std::fs::read_to_string(repo.dir.join("nonce")).unwrap();
        let reserved =
            nonce::parse_nonce_file(&reserved).unwrap_or_else(|| panic!("{name}: nonce file"));
        let manifest = nonce::manifest_nonce(&key, repo.manifest_object()).unwrap();
        assert!(
            manifest <= reserved,
            "{name}: manifest nonce {manifest} > reserved {reserved}"
        );
        for (id, stored) in &repo.objects {
            let end = key.stored_iv(stored).unwrap() + cipher_blocks(stored.len() - 41);
            assert!(
                end <= reserved,
                "{name}: object {} ends at IV {end} > {reserved}",
                hex(id)
            );
        }
    }
}

#[test]
fn borgs_timestamps_parse_and_format_back_identically() {
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        let key = repo.object_key();
        let plaintext = key
            .open(&MANIFEST_ID, repo.manifest_object(), None)
            .unwrap();
        let manifest = Manifest::unpack(&key, &plaintext).unwrap();
        let times = std::iter::once(&manifest.timestamp)
            .chain(manifest.archives.iter().map(|(_, a)| &a.time));
        for time in times {
            let micros =
                manifest::parse_timestamp(time).unwrap_or_else(|| panic!("{name}: {time:?}"));
            assert_eq!(
                manifest::format_timestamp(micros).as_bytes(),
                &time[..],
                "{name}"
            );
            assert!(
                manifest::next_timestamp(Some(time), 0).as_bytes() > &time[..],
                "{name}"
            );
        }
    }
}

/// Re-packing borg's items with our encoder and items chunker gives borg's own item-stream
/// chunks, byte for byte: the item encoding (key order, integer widths, raw strings) is exact.
#[test]
fn our_item_stream_of_borgs_items_has_borgs_chunk_ids() {
    for name in DiskRepo::fixture_names() {
        let repo = DiskRepo::fixture(&name);
        let decoded = decode_repository(&repo);
        let key = repo.object_key();
        for archive in &decoded.archives {
            let mut writer = ItemStreamWriter::new(key.chunk_seed());
            let mut ids = Vec::new();
            for item in &archive.items {
                ids.extend(writer.push(item).iter().map(|c| key.id_hash(c)));
            }
            ids.extend(writer.finish().iter().map(|c| key.id_hash(c)));
            assert_eq!(
                ids,
                archive.meta.items,
                "{name}/{}",
                String::from_utf8_lossy(&archive.meta.name)
            );
        }
    }
}
