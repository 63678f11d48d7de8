//! Our chunker must cut exactly where borg 1.4.5's C chunker cuts: same data, seed and params,
//! same chunk sizes. Expected sizes come from borg itself at test time (`borg_oracle.py chunk`).

use crate::common;

use common::Oracle;

use std::path::Path;
use std::process::Command;

use mailcow_borg::format::chunker::{ChunkerParams, chunk_sizes};

/// Deterministic pseudo-random bytes (xorshift64*), different per `seed`.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn borg_sizes(oracle: Oracle, file: &Path, seed: i32, params: &str) -> Vec<usize> {
    let out = oracle.run(
        &[
            "chunk",
            "--seed",
            &seed.to_string(),
            "--params",
            params,
            file.to_str().unwrap(),
        ],
        b"",
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

struct Case {
    name: String,
    data: Vec<u8>,
    seed: i32,
    params: &'static str,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, data: Vec<u8>, seed: i32, params: &'static str| {
        cases.push(Case {
            name: name.to_string(),
            data,
            seed,
            params,
        })
    };
    let small = "buzhash,10,16,12,4095"; // min 1024, max 65536, window 4095
    add("empty", Vec::new(), 0, "buzhash,19,23,21,4095");
    add("one byte", vec![42], 0, small);
    add("shorter than the window", random_bytes(100, 1), 0, small);
    for (label, len) in [
        ("min+window", 1024 + 4095),
        ("min+window+1", 1024 + 4096),
        ("min+window+2", 1024 + 4097),
        ("max-1", 65535),
        ("max", 65536),
        ("max+1", 65537),
        ("2*max", 131072),
    ] {
        add(label, random_bytes(len, len as u64), 7, small);
    }
    add("zeros", vec![0u8; 300_000], 0, small);
    add("zeros, seeded", vec![0u8; 300_000], -12345, small);
    let mut mixed = random_bytes(200_000, 3);
    mixed.extend(vec![0u8; 150_000]);
    mixed.extend(random_bytes(200_000, 4));
    mixed.extend(b"Received: from mx by mail\r\n".repeat(10_000));
    add("random, zeros, text", mixed, 1_314_442_734, small);
    for (seed, len) in [
        (0, 9 << 20),
        (-1_496_537_424, 12 << 20),
        (i32::MAX, 3 << 20),
    ] {
        add(
            &format!("default params, {len} bytes"),
            random_bytes(len, seed as u64),
            seed,
            "buzhash,19,23,21,4095",
        );
    }
    add(
        "items params",
        random_bytes(3 << 20, 11),
        99,
        "buzhash,15,19,17,4095",
    );
    add(
        "tiny params",
        random_bytes(20_000, 12),
        -5,
        "buzhash,6,8,7,31",
    );
    add(
        "legacy 4-number params",
        random_bytes(200_000, 13),
        5,
        "10,16,12,4095",
    );
    add("fixed", random_bytes(10_000, 14), 0, "fixed,4096");
    add(
        "fixed with header",
        random_bytes(10_000, 15),
        0,
        "fixed,4096,512",
    );
    cases
}

#[test]
fn cut_points_equal_borgs() {
    require!(Borg14, Borg12);
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let file = dir.path().join("data");
        std::fs::write(&file, &case.data).unwrap();
        let params: ChunkerParams = case.params.parse().unwrap();
        let ours = chunk_sizes(params, case.seed, &case.data);
        for oracle in Oracle::BOTH {
            let borgs = borg_sizes(oracle, &file, case.seed, case.params);
            let what = format!(
                "{} (seed {}, {}, {oracle:?})",
                case.name, case.seed, case.params
            );
            assert_eq!(ours, borgs, "{what}");
        }
        assert_eq!(ours.iter().sum::<usize>(), case.data.len(), "{}", case.name);
    }
}

#[test]
fn debug_chunk_command_prints_borgs_sizes() {
    require!(Borg14);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, random_bytes(5 << 20, 21)).unwrap();
    for (seed, params) in [
        (0, "buzhash,19,23,21,4095"),
        (-7, "buzhash,12,18,14,4095"),
        (0, "fixed,65536"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mailcow-borg"))
            .args([
                "debug",
                "chunk",
                "--seed",
                &seed.to_string(),
                "--params",
                params,
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: Vec<usize> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(
            ours,
            borg_sizes(Oracle::Borg14, &file, seed, params),
            "seed {seed}, {params}"
        );
    }
}

#[test]
fn debug_chunk_rejects_bad_params_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailcow-borg"))
        .args(["debug", "chunk", "--params", "buzhash,19,23,24,4095", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chunk_min <= chunk_mask <= chunk_max"));
    let missing = Command::new(env!("CARGO_BIN_EXE_mailcow-borg"))
        .args(["debug", "chunk", "/nonexistent/file"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "one-line error: {stderr}");
    assert!(stderr.contains("cannot open /nonexistent/file"), "{stderr}");
}
