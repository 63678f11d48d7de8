//! What we write, real borg 1.4.5 reads: key blobs we seal, objects we compress and encrypt, and
//! manifests and archives we authenticate, checked by borg's own code (`borg_oracle.py`), in
//! every key mode. And the other way: keys and objects borg makes right now, we open.

use crate::common;

use common::{ALL_MODES, Oracle, hex, unhex};
use mailcow_borg::format::archive::ArchiveMeta;
use mailcow_borg::format::compress::Compression;
use mailcow_borg::format::envelope::{MANIFEST_ID, ObjectKey, cipher_blocks};
use mailcow_borg::format::item::{ChunkRef, Item};
use mailcow_borg::format::key::{EncryptedKey, KeyMaterial, KeyType, Keyfile, PBKDF2_ITERATIONS};
use mailcow_borg::format::manifest::{ArchiveRef, Manifest};
use mailcow_borg::format::msgpack::Value;
use serde_json::{Value as Json, json};

const PASSPHRASE: &str = "ours, sealed for borg";

/// Deterministic "random" bytes for key material and salts (the tests must be reproducible).
fn bytes<const N: usize>(tag: u8) -> [u8; N] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
}

/// A key made and sealed by us; returns the unlocked key and the text borg will have to open.
fn our_key(mode: &str) -> (ObjectKey, String) {
    let key_type = KeyType::from_mode_name(mode).unwrap();
    if key_type == KeyType::Plaintext {
        return (ObjectKey::plaintext(), String::new());
    }
    let material = KeyMaterial::from_random(key_type, &bytes(1), &bytes(2), bytes(3));
    let sealed = EncryptedKey::seal(
        &material,
        PASSPHRASE.as_bytes(),
        bytes(4),
        PBKDF2_ITERATIONS,
    );
    let text = if key_type.storage() == mailcow_borg::format::key::KeyStorage::Keyfile {
        Keyfile {
            repository_id: material.repository_id,
            key: sealed,
        }
        .render()
    } else {
        sealed.to_text()
    };
    (ObjectKey::new(key_type, material), text)
}

fn verify_with_borg(
    oracle: Oracle,
    key: &ObjectKey,
    key_text: &str,
    objects: Vec<Json>,
) -> Vec<Json> {
    let request = json!({
        "key_text": key_text,
        "passphrase": PASSPHRASE,
        "key_type": key.key_type() as u8,
        "repository_id": hex(&key.material().map_or([0; 32], |m| m.repository_id)),
        "objects": objects,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.json");
    std::fs::write(&path, request.to_string()).unwrap();
    let out = oracle.run(&["verify-objects", path.to_str().unwrap()], b"");
    let reply: Json = serde_json::from_slice(&out).unwrap();
    reply["results"].as_array().unwrap().clone()
}

fn object(id: &[u8; 32], data: &[u8], kind: &str) -> Json {
    json!({"id": hex(id), "data": hex(data), "kind": kind})
}

#[test]
fn borg_opens_our_keys_objects_manifests_and_archives_in_every_mode() {
    require!(Borg14, Borg12);
    let text = b"From: alice@example.org\r\nSubject: hi\r\n\r\n".repeat(2000);
    let compressions = [
        "none",
        "lz4",
        "zstd,3",
        "zstd,22",
        "zlib,6",
        "auto,zstd,9",
        "auto,zlib",
    ];
    for mode in ALL_MODES {
        let (key, key_text) = our_key(mode);
        let mut iv = 1_000u64;
        let mut seal = |payload: &[u8]| {
            let sealed = key.seal(payload, iv);
            iv += cipher_blocks(payload.len());
            sealed
        };
        let mut objects = Vec::new();
        let mut plaintexts = Vec::new();
        for (n, spec) in compressions.iter().enumerate() {
            let plaintext = [format!("chunk {n} {spec}\n").into_bytes(), text.clone()].concat();
            let payload = spec.parse::<Compression>().unwrap().compress(&plaintext);
            let id = key.id_hash(&plaintext);
            objects.push(object(&id, &seal(&payload), "chunk"));
            plaintexts.push(plaintext);
        }
        // An item stream with one file, and the archive and manifest that point at it.
        let first = &plaintexts[0];
        let item = Item {
            path: b"vmail/example.org/alice/cur/1700000000.M1P2.mx,S=120:2,S".to_vec(),
            mode: Some(0o100640),
            uid: Some(5000),
            gid: Some(5000),
            user: Some(None),
            group: Some(Some(b"vmail".to_vec())),
            mtime: 1_700_000_000_123_456_789,
            ctime: Some(1_700_000_001_000_000_000),
            size: Some(first.len() as u64),
            chunks: Some(vec![ChunkRef {
                id: key.id_hash(first),
                size: first.len() as u64,
                csize: 0,
            }]),
            hardlink_master: Some(false),
            ..Item::default()
        };
        let stream = item.to_value().to_bytes();
        let stream_id = key.id_hash(&stream);
        objects.push(object(
            &stream_id,
            &seal(&Compression::Lz4.compress(&stream)),
            "chunk",
        ));
        let archive = ArchiveMeta {
            version: 1,
            name: b"mailcow-2026-11-28T21:00:00".to_vec(),
            items: vec![stream_id],
            cmdline: vec![b"mailcow-borg".to_vec(), b"create".to_vec()],
            hostname: Some(b"mx".to_vec()),
            username: Some(b"root".to_vec()),
            time: b"2026-11-28T21:00:00.000001".to_vec(),
            time_end: Some(b"2026-11-28T21:00:01.500000".to_vec()),
            comment: Some(Vec::new()),
            chunker_params: Some(Value::Array(vec![
                Value::raw("buzhash"),
                Value::Int(19),
                Value::Int(23),
                Value::Int(21),
                Value::Int(4095),
            ])),
            size: Some(first.len() as u64),
            csize: Some(0),
            nfiles: Some(1),
            size_parts: Some(0),
            csize_parts: Some(0),
            nfiles_parts: Some(0),
            cwd: Some(b"/".to_vec()),
            extra: Vec::new(),
        };
        let archive_plain = archive.pack(&key, bytes(5));
        let archive_id = key.id_hash(&archive_plain);
        objects.push(object(
            &archive_id,
            &seal(&Compression::Lz4.compress(&archive_plain)),
            "archive",
        ));
        let mut manifest = Manifest::new(
            key.material().is_some(),
            b"2026-11-28T21:00:02.000000".to_vec(),
        );
        manifest.archives.push((
            archive.name.clone(),
            ArchiveRef {
                id: archive_id,
                time: archive.time.clone(),
            },
        ));
        let manifest_plain = manifest.pack(&key, bytes(6));
        objects.push(object(
            &MANIFEST_ID,
            &seal(&Compression::Lz4.compress(&manifest_plain)),
            "manifest",
        ));

        for oracle in Oracle::BOTH {
            let results = verify_with_borg(oracle, &key, &key_text, objects.clone());
            for (n, result) in results.iter().enumerate() {
                assert!(
                    result.get("error").is_none(),
                    "{oracle:?} {mode}: object {n}: {result}"
                );
            }
            for (n, plaintext) in plaintexts.iter().enumerate() {
                let got = unhex(results[n]["plaintext"].as_str().unwrap());
                assert_eq!(got, *plaintext, "{oracle:?} {mode} {n}");
            }
            let archive_result = &results[compressions.len() + 1];
            assert_eq!(
                archive_result["tam_verified"], true,
                "{oracle:?} {mode}: archive TAM"
            );
            assert_eq!(archive_result["object"]["name"], hex(&archive.name));
            assert_eq!(archive_result["object"]["items"], json!([hex(&stream_id)]));
            let manifest_result = &results[compressions.len() + 2];
            assert_eq!(
                manifest_result["tam_verified"], true,
                "{oracle:?} {mode}: manifest TAM"
            );
            let item_keys = manifest_result["object"]["item_keys"].as_array().unwrap();
            assert_eq!(item_keys.len(), 23);
        }
    }
}

#[test]
fn borg_refuses_what_we_tampered_with() {
    require!(Borg14, Borg12);
    for mode in ["repokey", "authenticated-blake2", "none"] {
        let (key, key_text) = our_key(mode);
        let plaintext = b"some mail".repeat(100);
        let id = key.id_hash(&plaintext);
        let mut sealed = key.seal(&Compression::None.compress(&plaintext), 77);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let manifest_plain = Manifest::new(
            key.material().is_some(),
            b"2026-11-28T21:00:00.000000".to_vec(),
        )
        .pack(&key, bytes(7));
        let mut forged = manifest_plain.clone();
        let at = forged.windows(4).position(|w| w == b"2026").unwrap();
        forged[at] = b'3';
        let forged_object = key.seal(&Compression::None.compress(&forged), 200);
        for oracle in Oracle::BOTH {
            let results = verify_with_borg(
                oracle,
                &key,
                &key_text,
                vec![
                    object(&id, &sealed, "chunk"),
                    object(&MANIFEST_ID, &forged_object, "manifest"),
                ],
            );
            for r in &results {
                assert!(
                    r.get("error").is_some(),
                    "{oracle:?} {mode}: borg accepted a tampered object: {r}"
                );
            }
            assert!(
                results[1]["error"].as_str().unwrap().contains("TAM"),
                "{oracle:?} {mode}: {}",
                results[1]
            );
        }
    }
}

#[test]
fn we_open_keys_and_objects_borg_makes_now() {
    require!(Borg14, Borg12);
    let dir = tempfile::tempdir().unwrap();
    for (oracle, mode) in Oracle::BOTH
        .into_iter()
        .flat_map(|o| ALL_MODES.map(|m| (o, m)))
    {
        let out = oracle.run(&["make-key", mode, "borg's passphrase", "-"], b"");
        let made: Json = serde_json::from_slice(&out).unwrap();
        let key_type = KeyType::from_byte(made["key_type"].as_u64().unwrap() as u8).unwrap();
        assert_eq!(key_type.mode_name(), mode);
        let key = if key_type == KeyType::Plaintext {
            ObjectKey::plaintext()
        } else {
            let blob = match made["key_file_text"].as_str() {
                Some(file) => Keyfile::parse(file).unwrap().key,
                None => EncryptedKey::from_text(made["key_text"].as_str().unwrap()).unwrap(),
            };
            let material = blob.open(b"borg's passphrase").unwrap();
            assert_eq!(
                hex(&material.enc_key),
                made["enc_key"].as_str().unwrap(),
                "{mode}"
            );
            assert_eq!(
                hex(&material.enc_hmac_key),
                made["enc_hmac_key"].as_str().unwrap(),
                "{mode}"
            );
            assert_eq!(
                hex(&material.id_key),
                made["id_key"].as_str().unwrap(),
                "{mode}"
            );
            assert_eq!(
                material.chunk_seed as i64,
                made["chunk_seed"].as_i64().unwrap(),
                "{mode}"
            );
            ObjectKey::new(key_type, material)
        };
        for (n, compression) in [
            "lz4",
            "zstd,3",
            "zlib,6",
            "lzma,6",
            "obfuscate,110,zstd,3",
            "obfuscate,3,lz4",
        ]
        .iter()
        .enumerate()
        {
            let plaintext = format!("{mode} {compression} ")
                .repeat(300 + n)
                .into_bytes();
            let request = json!({
                "key_text": made["key_file_text"].as_str().or(made["key_text"].as_str()).unwrap(),
                "passphrase": "borg's passphrase",
                "key_type": key_type as u8,
                "repository_id": made["repository_id"],
                "compression": compression,
                "plaintext": hex(&plaintext),
                "iv": 12345 + n,
                "random_seed": n,
            });
            let path = dir.path().join("encrypt.json");
            std::fs::write(&path, request.to_string()).unwrap();
            let sealed: Json = serde_json::from_slice(
                &oracle.run(&["encrypt-object", path.to_str().unwrap()], b""),
            )
            .unwrap();
            let id: [u8; 32] = unhex(sealed["id"].as_str().unwrap()).try_into().unwrap();
            assert_eq!(id, key.id_hash(&plaintext), "{mode} {compression}: id");
            let data = unhex(sealed["data"].as_str().unwrap());
            assert_eq!(
                key.open(&id, &data, None).unwrap(),
                plaintext,
                "{mode} {compression}"
            );
            if key_type.is_encrypted() {
                assert_eq!(key.stored_iv(&data), Some(12345 + n as u64));
                // Byte-exact: our envelope over borg's compressed payload gives borg's object.
                let payload = key.unseal(&id, &data).unwrap();
                assert_eq!(
                    key.seal(&payload, 12345 + n as u64),
                    data,
                    "{mode} {compression}"
                );
            }
        }
    }
}
