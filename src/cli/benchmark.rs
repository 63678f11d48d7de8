//! `mailcow-borg benchmark cpu`: the throughput of each format primitive on this machine, like
//! borg 2's command of that name. Single-threaded figures, so they compare directly with borg's.

use std::hint::black_box;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::compress::Compression;
use crate::format::envelope::ObjectKey;
use crate::format::key::{KeyMaterial, KeyType};

#[derive(Subcommand)]
pub enum BenchmarkCommand {
    /// Throughput of the chunker, id hashes, envelope encryption and compressors.
    Cpu {
        /// Seconds to spend on each measurement (more is steadier).
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
    },
}

pub fn run(cmd: BenchmarkCommand) -> anyhow::Result<()> {
    match cmd {
        BenchmarkCommand::Cpu { seconds } => {
            if !(seconds > 0.0 && seconds <= 60.0) {
                anyhow::bail!("--seconds must be between 0 and 60");
            }
            cpu(Duration::from_secs_f64(seconds), &mut io::stdout().lock())?;
            Ok(())
        }
    }
}

/// Pseudo-random, incompressible test data (xorshift), the same on every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Text-like data that compresses about as well as mail does.
fn text(len: usize) -> Vec<u8> {
    let words = [
        "Received: ",
        "from ",
        "mail.example.org ",
        "by ",
        "mx ",
        "with ",
        "ESMTPS ",
        "id ",
        "4Xq7 ",
        "for ",
        "<user@example.org>; ",
        "Sat, 28 Nov 2026 ",
        "\r\n",
    ];
    let mut state = 7u32;
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(words[(state >> 16) as usize % words.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `f` over `bytes` bytes repeatedly for about `budget`; returns MB/s (10^6 bytes).
fn throughput(budget: Duration, bytes: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || start.elapsed() < budget {
        f();
        rounds += 1;
    }
    (bytes as f64 * rounds as f64) / start.elapsed().as_secs_f64() / 1e6
}

fn report(out: &mut impl Write, section: &str, rows: Vec<(String, f64)>) -> io::Result<()> {
    writeln!(out, "{section}")?;
    for (name, mbs) in rows {
        writeln!(out, "  {name:<40} {mbs:>7.0} MB/s")?;
    }
    out.flush()
}

fn cpu(budget: Duration, out: &mut impl Write) -> io::Result<()> {
    let random = noise(64 << 20);
    let block = &random[..8 << 20];
    let textual = text(8 << 20);

    let chunkers = ["buzhash,19,23,21,4095", "fixed,4194304"]
        .into_iter()
        .map(|spec| {
            let params: ChunkerParams = spec.parse().expect("valid built-in params");
            let mut chunker = Chunker::new(params, 0);
            let mbs = throughput(budget, random.len(), || {
                chunker.reset();
                let mut reader = &random[..];
                while let Some(c) = chunker.next_chunk(&mut reader).expect("in-memory read") {
                    black_box(c);
                }
            });
            (spec.to_string(), mbs)
        })
        .collect();
    report(out, "Chunkers", chunkers)?;

    let keys: Vec<(&str, ObjectKey)> = vec![
        ("none (sha256)", ObjectKey::plaintext()),
        ("repokey (hmac-sha256)", key(KeyType::Repokey)),
        ("repokey-blake2 (blake2b-256)", key(KeyType::Blake2Repokey)),
    ];
    let hashes = keys
        .iter()
        .map(|(name, k)| {
            let mbs = throughput(budget, block.len(), || {
                black_box(k.id_hash(block));
            });
            (format!("id hash {name}"), mbs)
        })
        .collect();
    report(out, "Id hashes", hashes)?;

    let envelopes = keys[1..]
        .iter()
        .map(|(name, k)| {
            let mbs = throughput(budget, block.len(), || {
                black_box(k.seal(block, 1));
            });
            (format!("encrypt {name}"), mbs)
        })
        .collect();
    report(out, "Encryption (AES-256-CTR + MAC)", envelopes)?;

    let mut compressors = Vec::new();
    for spec in ["lz4", "zstd,1", "zstd,3", "zlib,6", "auto,zstd,3"] {
        let c: Compression = spec.parse().expect("valid built-in spec");
        for (kind, data) in [("text", &textual[..]), ("random", block)] {
            let mbs = throughput(budget, data.len(), || {
                black_box(c.compress(data));
            });
            compressors.push((format!("compress {spec} ({kind})"), mbs));
        }
    }
    for spec in ["lz4", "zstd,3", "zlib,6"] {
        let c: Compression = spec.parse().expect("valid built-in spec");
        let packed = c.compress(&textual);
        let mbs = throughput(budget, textual.len(), || {
            black_box(crate::format::compress::decompress(&packed, Some(textual.len())).ok());
        });
        compressors.push((format!("decompress {spec} (text)"), mbs));
    }
    report(out, "Compression", compressors)
}

fn key(key_type: KeyType) -> ObjectKey {
    let material = KeyMaterial::from_random(key_type, &[0x5a; 100], &[0xa5; 128], [1; 32]);
    ObjectKey::new(key_type, material)
}
