//! Criterion benchmarks of each format primitive: `cargo bench --bench primitives`.
//! For the comparison with real borg on the same data, see `scripts/bench-chunker.sh`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailcow_borg::format::chunker::{ChunkerParams, chunk_sizes};
use mailcow_borg::format::compress::{Compression, decompress};
use mailcow_borg::format::envelope::ObjectKey;
use mailcow_borg::format::key::{KeyMaterial, KeyType};

/// Incompressible data: SHA-256 in counter mode (the buffer recipe of `docs/borg-format.md` §5.5).
fn noise(len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<u8> = (0u64..)
        .take(len.div_ceil(32))
        .flat_map(|i| Sha256::digest(i.to_le_bytes()))
        .collect();
    out.truncate(len);
    out
}

fn key(key_type: KeyType) -> ObjectKey {
    ObjectKey::new(
        key_type,
        KeyMaterial::from_random(key_type, &[3; 100], &[4; 128], [5; 32]),
    )
}

fn primitives(c: &mut Criterion) {
    let data = noise(16 << 20);
    let block = &data[..4 << 20];
    let text: Vec<u8> = b"Subject: quarterly report for the mailbox migration\r\n"
        .iter()
        .cycle()
        .take(4 << 20)
        .copied()
        .collect();

    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("buzhash,19,23,21,4095", |b| {
        b.iter(|| chunk_sizes(ChunkerParams::DEFAULT, 0, black_box(&data)))
    });
    g.finish();

    let mut g = c.benchmark_group("id_hash");
    g.throughput(Throughput::Bytes(block.len() as u64));
    for (name, k) in [
        ("sha256", ObjectKey::plaintext()),
        ("hmac-sha256", key(KeyType::Repokey)),
        ("blake2b", key(KeyType::Blake2Repokey)),
    ] {
        g.bench_function(name, |b| b.iter(|| k.id_hash(black_box(block))));
    }
    g.finish();

    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(block.len() as u64));
    for (name, k) in [
        ("aes-ctr+hmac-sha256", key(KeyType::Repokey)),
        ("aes-ctr+blake2b", key(KeyType::Blake2Repokey)),
    ] {
        let id = k.id_hash(block);
        let sealed = k.seal(&Compression::None.compress(block), 1);
        g.bench_function(format!("seal {name}"), |b| {
            b.iter(|| k.seal(black_box(block), 1))
        });
        g.bench_function(format!("open {name}"), |b| {
            b.iter(|| k.open(&id, black_box(&sealed), None).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("compression");
    g.throughput(Throughput::Bytes(text.len() as u64));
    for spec in ["lz4", "zstd,3", "zlib,6"] {
        let comp: Compression = spec.parse().unwrap();
        let packed = comp.compress(&text);
        g.bench_function(format!("compress {spec}"), |b| {
            b.iter(|| comp.compress(black_box(&text)))
        });
        g.bench_function(format!("decompress {spec}"), |b| {
            b.iter(|| decompress(black_box(&packed), Some(text.len())).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, primitives);
criterion_main!(benches);
