//! Shared harness for the integration tests: where the real borg oracles are, how to run the
//! Python oracle, and a reader for repositories real borg left on disk (`testdata/repos`; the
//! segment format itself is `mailcow_borg::format::segment`).
//!
//! The oracles are found through environment variables with defaults, the same ones
//! `scripts/setup-oracles.sh` documents:
//!   MCB_BORG14  borg 1.4.5 from PyPI  (default: .oracle/venv-borg-1.4.5/bin/borg)
//!   MCB_BORG12  Debian's borg 1.2.x   (default: /usr/bin/borg)
//! A test names what it needs with `require!` (`require.rs`): without it the test is skipped,
//! and the process says once what was missing; with `MCB_TEST_STRICT=1` (`scripts/test.sh`, CI)
//! it fails instead, so the full suite never skips silently.

#![allow(dead_code)] // each test binary uses its own subset of the harness

pub mod cli;
pub mod mailcow;
pub mod mailcow_repo;
#[macro_use]
pub mod require;
pub mod sshd;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailcow_borg::format::envelope::{MANIFEST_ID, ObjectId, ObjectKey};
use mailcow_borg::format::key::{EncryptedKey, KeyType, Keyfile, parse_hex32};
use mailcow_borg::format::segment::{self, Record, Replay};
use mailcow_borg::ops::open::AccessOptions;
use mailcow_borg::ops::passphrase::PassphraseSources;
use mailcow_borg::ops::security::SecurityConsent;
use mailcow_borg::repo::ssh::SshOptions;

/// What our library needs to open a repository with `borg` as the local `borg serve`: the
/// passphrase from the environment, keys, security dir and unlock memo below `base`.
pub fn access_options(borg: &Path, passphrase: &str, base: &Path) -> AccessOptions {
    AccessOptions {
        ssh: SshOptions::defaults(base, "root"),
        local_borg: borg.to_path_buf(),
        lock_wait: Duration::from_secs(5),
        bypass_lock: false,
        server_timeout: Duration::from_secs(60),
        upload_ratelimit: None,
        passphrase: PassphraseSources {
            env: Some(passphrase.to_string()),
            ..Default::default()
        },
        key_file: None,
        keys_dir: base.join("keys"),
        security_dir: base.join("security"),
        unlock_memo: Some(base.join("unlock")),
        consent: SecurityConsent {
            relocated_ok: true,
            unknown_unencrypted_ok: true,
        },
        server_log: Arc::new(|_line| {}),
    }
}

/// Every borg 1.x `--encryption` mode.
pub const ALL_MODES: [&str; 7] = [
    "none",
    "authenticated",
    "authenticated-blake2",
    "repokey",
    "repokey-blake2",
    "keyfile",
    "keyfile-blake2",
];

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `var` points, or `default`.
fn oracle_env(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

fn oracle_path(var: &str, path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{var}: {} does not exist; run scripts/setup-oracles.sh (or set {var})",
        path.display()
    );
    path
}

/// Where borg 1.4.5 should be, whether or not it is there.
fn borg14_path() -> PathBuf {
    oracle_env(
        "MCB_BORG14",
        repo_root().join(".oracle/venv-borg-1.4.5/bin/borg"),
    )
}

/// Where Debian's borg 1.2 should be, whether or not it is there.
fn borg12_path() -> PathBuf {
    oracle_env("MCB_BORG12", PathBuf::from("/usr/bin/borg"))
}

pub fn borg14() -> PathBuf {
    oracle_path("MCB_BORG14", borg14_path())
}

pub fn borg12() -> PathBuf {
    oracle_path("MCB_BORG12", borg12_path())
}

/// The Python interpreter that has borg 1.4.5's modules: the one beside `MCB_BORG14`.
pub fn borg14_python() -> PathBuf {
    let python = borg14().with_file_name("python");
    assert!(python.exists(), "no python beside {}", borg14().display());
    python
}

/// The Python interpreter that runs `MCB_BORG12`, read from its `#!` line (Debian's package
/// installs borg's modules for the system python3).
pub fn borg12_python() -> PathBuf {
    let script = std::fs::read_to_string(borg12()).expect("read the borg 1.2 launcher");
    let shebang = script.lines().next().unwrap_or_default();
    let python = shebang
        .trim_start_matches("#!")
        .split_whitespace()
        .next()
        .unwrap_or_default();
    assert!(!python.is_empty(), "{} has no #! line", borg12().display());
    PathBuf::from(python)
}

/// One of the real borgs whose Python code answers through `tests/oracle/borg_oracle.py`.
#[derive(Clone, Copy, Debug)]
pub enum Oracle {
    Borg14,
    Borg12,
}

impl Oracle {
    pub const BOTH: [Oracle; 2] = [Oracle::Borg14, Oracle::Borg12];

    /// Runs the oracle script; returns stdout, panics (with borg's message) on failure.
    pub fn run(self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let python = match self {
            Oracle::Borg14 => borg14_python(),
            Oracle::Borg12 => borg12_python(),
        };
        let script = repo_root().join("tests/oracle/borg_oracle.py");
        let mut child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the borg oracle");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin)
            .expect("feed the oracle");
        let out = child.wait_with_output().expect("oracle output");
        assert!(
            out.status.success(),
            "{self:?} oracle {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Runs the borg 1.4.5 oracle.
pub fn oracle(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    Oracle::Borg14.run(args, stdin)
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Copies a directory tree of plain files (a fixture repository) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    mailcow_borg::format::key::hex(bytes)
}

pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A repository made by real borg, read straight from its segment files.
pub struct DiskRepo {
    pub name: String,
    pub dir: PathBuf,
    pub id: [u8; 32],
    /// The repokey text from `config`, if any.
    pub config_key: Option<String>,
    /// Current objects: PUTs not superseded or deleted, in committed segments.
    pub objects: HashMap<ObjectId, Vec<u8>>,
    /// The fixture's metadata (`testdata/repos/<name>.json`).
    pub meta: serde_json::Value,
}

impl DiskRepo {
    pub fn fixture(name: &str) -> DiskRepo {
        let base = repo_root().join("testdata/repos");
        let meta_text = std::fs::read_to_string(base.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}; run testdata/gen-fixtures.sh"));
        let mut repo = DiskRepo::open(&base.join(name));
        repo.name = name.to_string();
        repo.meta = serde_json::from_str(&meta_text).expect("fixture json");
        repo
    }

    /// Every fixture repository name (`borg14-repokey`, ...), sorted.
    pub fn fixture_names() -> Vec<String> {
        let base = repo_root().join("testdata/repos");
        let mut names: Vec<String> = std::fs::read_dir(&base)
            .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    pub fn open(dir: &Path) -> DiskRepo {
        let config = std::fs::read_to_string(dir.join("config")).expect("repo config");
        let (id, config_key) = parse_config(&config);
        DiskRepo {
            name: dir.display().to_string(),
            dir: dir.to_path_buf(),
            id,
            config_key,
            objects: read_segments(&dir.join("data")),
            meta: serde_json::Value::Null,
        }
    }

    pub fn manifest_object(&self) -> &[u8] {
        self.objects
            .get(&MANIFEST_ID)
            .expect("repository has a manifest")
    }

    /// The key type, read (as borg does) from the manifest's first byte.
    pub fn key_type(&self) -> KeyType {
        KeyType::identify(self.manifest_object()).expect("known key type")
    }

    /// The encrypted key blob: from the repository config or the fixture's key file.
    pub fn encrypted_key(&self) -> Option<EncryptedKey> {
        if let Some(text) = &self.config_key {
            return Some(EncryptedKey::from_text(text).expect("config key parses"));
        }
        let keyfile = repo_root().join(format!("testdata/repos/{}.key", self.name));
        let content = std::fs::read_to_string(&keyfile).ok()?;
        let kf = Keyfile::parse(&content).expect("keyfile parses");
        kf.check_repository(&self.id)
            .expect("keyfile matches repository");
        Some(kf.key)
    }

    pub fn passphrase(&self) -> String {
        self.meta["passphrase"].as_str().unwrap_or("").to_string()
    }

    /// The unlocked key, with the fixture's passphrase.
    pub fn object_key(&self) -> ObjectKey {
        match self.encrypted_key() {
            None => ObjectKey::plaintext(),
            Some(blob) => {
                let material = blob
                    .open(self.passphrase().as_bytes())
                    .expect("fixture passphrase opens the key");
                ObjectKey::new(self.key_type(), material)
            }
        }
    }
}

/// `id` and the (tab-continued) `key` value of a repository config.
fn parse_config(config: &str) -> ([u8; 32], Option<String>) {
    let mut id = None;
    let mut key: Option<String> = None;
    let mut in_key = false;
    for line in config.lines() {
        if in_key && (line.starts_with('\t') || line.starts_with(' ')) {
            let k = key.as_mut().expect("key started");
            k.push('\n');
            k.push_str(line.trim());
            continue;
        }
        in_key = false;
        if let Some((name, value)) = line.split_once('=') {
            match name.trim() {
                "id" => id = parse_hex32(value.trim()),
                "key" => {
                    key = Some(value.trim().to_string());
                    in_key = true;
                }
                _ => {}
            }
        }
    }
    (id.expect("config has an id"), key.filter(|k| !k.is_empty()))
}

/// Flips a byte in the stored data of object `id` and fixes the segment entry's CRC, so the
/// server hands the damaged object out as if it were sound and only the client's MAC check can
/// notice (as after a bit flip in RAM or a malicious server).
pub fn corrupt_object(repo_dir: &Path, id: &ObjectId) {
    flip_object_byte(repo_dir, id, true);
}

/// Flips a byte in the middle of the stored data of object `id`; with `fix_crc` the segment
/// entry's CRC is made to match (only the MAC can tell), without it the server's own checks
/// notice.
pub fn flip_object_byte(repo_dir: &Path, id: &ObjectId, fix_crc: bool) {
    for path in segment_files(&repo_dir.join("data")) {
        let mut bytes = std::fs::read(&path).expect("segment");
        let found = segment::entries(&bytes)
            .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .find_map(|entry| match entry.record {
                Record::Put { id: put, .. } if put == *id => Some((entry.offset, entry.size)),
                _ => None,
            });
        if let Some((pos, size)) = found {
            let middle = pos + segment::ID_HEADER_SIZE + (size - segment::ID_HEADER_SIZE) / 2;
            bytes[middle] ^= 0x40;
            if fix_crc {
                let crc = crc32fast::hash(&bytes[pos + 4..pos + size]);
                bytes[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
            }
            std::fs::write(&path, bytes).expect("write segment");
            return;
        }
    }
    panic!("object {} is not in {}", hex(id), repo_dir.display());
}

/// A repository's segment files (`data/<n // 1000>/<n>`), in the order of their numbers.
pub fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    for dir in std::fs::read_dir(data_dir).expect("data dir") {
        for seg in std::fs::read_dir(dir.expect("entry").path()).expect("segment dir") {
            let path = seg.expect("entry").path();
            if let Some(n) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) {
                segments.push((n, path));
            }
        }
    }
    segments.sort();
    segments.into_iter().map(|(_, path)| path).collect()
}

/// Replays borg's segment files with the format layer's reader (`format::segment`, which checks
/// every size and CRC): the objects as of the last COMMIT.
fn read_segments(data_dir: &Path) -> HashMap<ObjectId, Vec<u8>> {
    let mut replay = Replay::new();
    for path in segment_files(data_dir) {
        let bytes = std::fs::read(&path).expect("segment");
        replay
            .segment(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    replay.committed()
}
