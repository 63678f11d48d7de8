//! Property tests: round trips hold for arbitrary inputs, and every decoder that reads bytes from
//! the network or the repository returns an error — never panics — on arbitrary or mutated input.
//! (The cargo-fuzz targets in `fuzz/` push the same decoders much further; these run in CI.)

use mailcow_borg::format::archive::{ArchiveMeta, ItemStreamDecoder};
use mailcow_borg::format::chunker::{ChunkerParams, chunk_sizes};
use mailcow_borg::format::compress::{self, Compression};
use mailcow_borg::format::envelope::ObjectKey;
use mailcow_borg::format::item::Item;
use mailcow_borg::format::key::{EncryptedKey, KeyMaterial, KeyType, Keyfile};
use mailcow_borg::format::manifest::Manifest;
use mailcow_borg::format::msgpack::{self, StreamDecoder, Value};
use proptest::prelude::*;

fn key(key_type: KeyType) -> ObjectKey {
    if key_type == KeyType::Plaintext {
        return ObjectKey::plaintext();
    }
    ObjectKey::new(
        key_type,
        KeyMaterial::from_random(key_type, &[7; 100], &[8; 128], [9; 32]),
    )
}

fn key_types() -> impl Strategy<Value = KeyType> {
    prop::sample::select(vec![
        KeyType::Plaintext,
        KeyType::Authenticated,
        KeyType::Blake2Authenticated,
        KeyType::Repokey,
        KeyType::Blake2Repokey,
        KeyType::Keyfile,
        KeyType::Blake2Keyfile,
    ])
}

fn compressions() -> impl Strategy<Value = Compression> {
    prop::sample::select(vec![
        "none",
        "lz4",
        "zstd,1",
        "zstd,10",
        "zlib,0",
        "zlib,9",
        "auto,zstd",
        "auto,zlib",
    ])
    .prop_map(|s| s.parse().unwrap())
}

/// Arbitrary msgpack values of the kinds borg uses (no floats: NaN breaks equality).
fn values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Int(i as i128)),
        any::<u64>().prop_map(|i| Value::Int(i as i128)),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(Value::Raw),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
        ]
    })
}

/// Data that is sometimes compressible, sometimes not.
fn payloads() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..5000),
        (prop::collection::vec(any::<u8>(), 1..20), 0usize..400)
            .prop_map(|(unit, n)| unit.repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn msgpack_round_trips(v in values()) {
        prop_assert_eq!(msgpack::decode(&v.to_bytes()).unwrap(), v);
    }

    #[test]
    fn stream_decoder_is_split_independent(vs in prop::collection::vec(values(), 0..6), cut in any::<prop::sample::Index>()) {
        let bytes: Vec<u8> = vs.iter().flat_map(|v| v.to_bytes()).collect();
        let at = if bytes.is_empty() { 0 } else { cut.index(bytes.len() + 1) };
        let mut dec = StreamDecoder::new();
        let mut got = dec.feed(&bytes[..at]).unwrap();
        got.extend(dec.feed(&bytes[at..]).unwrap());
        dec.finish().unwrap();
        prop_assert_eq!(got, vs);
    }

    #[test]
    fn compression_round_trips(data in payloads(), c in compressions()) {
        let packed = c.compress(&data);
        prop_assert!(packed.len() <= data.len() + 2 || matches!(c, Compression::Zlib(_)));
        prop_assert_eq!(compress::decompress(&packed, None).unwrap(), data.clone());
        prop_assert_eq!(compress::decompress(&packed, Some(data.len())).unwrap(), data);
    }

    #[test]
    fn envelope_round_trips(data in payloads(), kt in key_types(), iv in any::<u64>(), c in compressions()) {
        let k = key(kt);
        let id = k.id_hash(&data);
        let sealed = k.seal(&c.compress(&data), iv);
        prop_assert_eq!(k.open(&id, &sealed, None).unwrap(), data);
    }

    #[test]
    fn chunks_cover_the_input_within_limits(data in prop::collection::vec(any::<u8>(), 0..40_000), seed in any::<i32>()) {
        let params: ChunkerParams = "buzhash,8,12,10,63".parse().unwrap();
        let sizes = chunk_sizes(params, seed, &data);
        prop_assert_eq!(sizes.iter().sum::<usize>(), data.len());
        prop_assert!(sizes.iter().all(|&s| s > 0 && s <= 4096));
        // All but the last chunk are at least the minimum size.
        prop_assert!(sizes.iter().rev().skip(1).all(|&s| s >= 256));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), kt in key_types()) {
        let k = key(kt);
        let _ = msgpack::decode(&bytes);
        let _ = StreamDecoder::new().feed(&bytes);
        let _ = ItemStreamDecoder::new().feed(&bytes);
        let _ = compress::decompress(&bytes, None);
        let _ = compress::decompress(&bytes, Some(100));
        let _ = k.open(&[0; 32], &bytes, None);
        let _ = k.open(&[1; 32], &bytes, None);
        let _ = Manifest::unpack(&k, &bytes);
        let _ = ArchiveMeta::unpack(&k, &bytes);
        let _ = EncryptedKey::from_msgpack(&bytes);
        let _ = Keyfile::parse(&String::from_utf8_lossy(&bytes));
        if let Ok(v) = msgpack::decode(&bytes) {
            let _ = Item::from_value(v);
        }
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_objects(
        kt in key_types(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        truncate in any::<prop::sample::Index>(),
    ) {
        let k = key(kt);
        let mut manifest = Manifest::new(true, b"2026-11-28T21:00:00.000000".to_vec());
        manifest.archives.push((b"a".to_vec(), mailcow_borg::format::manifest::ArchiveRef { id: [3; 32], time: b"t".to_vec() }));
        let plain = manifest.pack(&k, [1; 64]);
        let item = Item { path: b"p".to_vec(), mtime: 1, chunks: Some(vec![]), size: Some(0), ..Item::default() }.to_value().to_bytes();
        let sealed = k.seal(&Compression::Lz4.compress(&plain), 5);
        let blob = EncryptedKey::seal(k.material().unwrap_or(&KeyMaterial::from_random(KeyType::Repokey, &[1; 100], &[2; 128], [3; 32])), b"pw", [4; 32], 1).to_msgpack();
        for original in [plain, item, sealed, blob] {
            let mut bytes = original.clone();
            for (at, x) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x | 1;
            }
            bytes.truncate(truncate.index(bytes.len() + 1));
            let _ = Manifest::unpack(&k, &bytes);
            let _ = ArchiveMeta::unpack(&k, &bytes);
            let _ = k.open(&[0; 32], &bytes, None);
            let _ = EncryptedKey::from_msgpack(&bytes).map(|b| b.open(b"pw"));
            let _ = ItemStreamDecoder::new().feed(&bytes);
            if let Ok(v) = msgpack::decode(&bytes) {
                let _ = Item::from_value(v);
            }
        }
    }
}
