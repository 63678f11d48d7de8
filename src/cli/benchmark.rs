//! `mailcow-borg benchmark cpu`: the throughput of each format primitive on this machine, like
//! borg 2's command of that name. Single-threaded figures, so they compare directly with borg's
//! (`scripts/bench-vs-borg.sh` runs borg's own primitives on the same data).

use std::hint::black_box;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::compress::{self, Compression};
use crate::format::envelope::ObjectKey;
use crate::format::key::{KeyMaterial, KeyType};

#[derive(Subcommand)]
pub enum BenchmarkCommand {
    /// Throughput of the chunker, id hashes, envelope encryption and compressors.
    Cpu {
        /// Seconds to spend on each measurement (more is steadier).
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
        /// Incompressible sample data (default: generated, 8 MiB).
        #[arg(long)]
        random: Option<PathBuf>,
        /// Compressible sample data, e.g. some of your own mail (default: generated, 8 MiB).
        #[arg(long)]
        text: Option<PathBuf>,
        /// Print one JSON object per measurement instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure only this section.
        #[arg(long, value_parser = SECTIONS)]
        only: Option<String>,
    },
}

/// The sections `benchmark cpu` measures, in order.
const SECTIONS: [&str; 6] = [
    "chunker",
    "id-hash",
    "encrypt",
    "decrypt",
    "compress",
    "decompress",
];

pub fn run(cmd: BenchmarkCommand) -> anyhow::Result<()> {
    let BenchmarkCommand::Cpu {
        seconds,
        random,
        text,
        json,
        only,
    } = cmd;
    if !(seconds > 0.0 && seconds <= 60.0) {
        anyhow::bail!("--seconds must be between 0 and 60");
    }
    let load = |path: Option<PathBuf>, generate: fn(usize) -> Vec<u8>| -> anyhow::Result<Vec<u8>> {
        match path {
            Some(p) => std::fs::read(&p).with_context(|| format!("cannot read {}", p.display())),
            None => Ok(generate(8 << 20)),
        }
    };
    let samples = Samples {
        random: load(random, noise)?,
        text: load(text, mail_text)?,
    };
    let mut out = io::stdout().lock();
    for m in measure(Duration::from_secs_f64(seconds), &samples, only.as_deref()) {
        if json {
            writeln!(
                out,
                r#"{{"section":"{}","name":"{}","mb_per_s":{:.1}}}"#,
                m.section, m.name, m.mb_per_s
            )?;
        } else {
            writeln!(
                out,
                "{:<12} {:<36} {:>7.0} MB/s",
                m.section, m.name, m.mb_per_s
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

struct Samples {
    random: Vec<u8>,
    text: Vec<u8>,
}

struct Measurement {
    section: &'static str,
    name: String,
    mb_per_s: f64,
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

/// Text that compresses about as well as mail headers do.
fn mail_text(len: usize) -> Vec<u8> {
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

fn key(key_type: KeyType) -> ObjectKey {
    let material = KeyMaterial::from_random(key_type, &[0x5a; 100], &[0xa5; 128], [1; 32]);
    ObjectKey::new(key_type, material)
}

/// Runs every measurement of the sections selected by `only` (all when `None`).
fn measure(budget: Duration, samples: &Samples, only: Option<&str>) -> Vec<Measurement> {
    let wanted = |section: &str| only.is_none_or(|o| o == section);
    let mut results = Vec::new();
    let mut record = |section, name: String, mb_per_s| {
        results.push(Measurement {
            section,
            name,
            mb_per_s,
        })
    };
    let (random, text) = (&samples.random[..], &samples.text[..]);

    for spec in ["buzhash,19,23,21,4095", "fixed,4194304"]
        .into_iter()
        .filter(|_| wanted("chunker"))
    {
        let params: ChunkerParams = spec.parse().expect("valid built-in params");
        let mut chunker = Chunker::new(params, 0);
        let mbs = throughput(budget, random.len(), || {
            chunker.reset();
            let mut reader = random;
            while let Some(c) = chunker.next_chunk(&mut reader).expect("in-memory read") {
                black_box(c);
            }
        });
        record("chunker", spec.to_string(), mbs);
    }

    let keys = [
        ("sha256", ObjectKey::plaintext()),
        ("hmac-sha256", key(KeyType::Repokey)),
        ("blake2b-256", key(KeyType::Blake2Repokey)),
    ];
    for (name, k) in keys.iter().filter(|_| wanted("id-hash")) {
        let mbs = throughput(budget, random.len(), || {
            black_box(k.id_hash(random));
        });
        record("id-hash", name.to_string(), mbs);
    }
    for (name, k) in &keys[1..] {
        if wanted("encrypt") {
            let mbs = throughput(budget, random.len(), || {
                black_box(k.seal(random, 1));
            });
            record("encrypt", format!("aes-256-ctr+{name}"), mbs);
        }
        if wanted("decrypt") {
            let sealed = k.seal(random, 1);
            let mbs = throughput(budget, random.len(), || {
                black_box(k.unseal(&[0; 32], &sealed).expect("own object"));
            });
            record("decrypt", format!("aes-256-ctr+{name}"), mbs);
        }
    }

    for spec in ["lz4", "zstd,1", "zstd,3", "zlib,6", "auto,zstd,3"]
        .into_iter()
        .filter(|_| wanted("compress"))
    {
        let c: Compression = spec.parse().expect("valid built-in spec");
        for (kind, data) in [("text", text), ("random", random)] {
            let mbs = throughput(budget, data.len(), || {
                black_box(c.compress(data));
            });
            record("compress", format!("{spec} {kind}"), mbs);
        }
    }
    for spec in ["lz4", "zstd,3", "zlib,6"]
        .into_iter()
        .filter(|_| wanted("decompress"))
    {
        let c: Compression = spec.parse().expect("valid built-in spec");
        let packed = c.compress(text);
        let mbs = throughput(budget, text.len(), || {
            black_box(compress::decompress(&packed, None).ok());
        });
        record("decompress", format!("{spec} text"), mbs);
    }
    results
}
